//! Bucket placement against a real PostgreSQL: for thousands of keys of each key type, the bucket
//! shardgate computes must be the remainder the server's own hash partitioning chooses
//! (DESIGN.md §2.3).
//!
//! No partitions are needed: `satisfies_hash_partition(parent, modulus, remainder, key)` is the
//! check a hash partition's constraint runs, so one query per modulus asks the server about every
//! (key, our remainder) pair at once. A bare cluster is enough; the proxy is not involved.

use shardgate::cluster::{Cluster, ClusterOptions, TempDir};
use shardgate::config::KeyType;
use shardgate::router::hash::{bucket_of, bucket_sql, hash_int, hash_text};
use shardgate::router::key::KeyValue;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::harness::{binaries, connect};

/// Keys per type; the brief asks for at least 3,000.
const KEYS: usize = 4000;
/// A power of two (a typical bucket count) and an odd modulus, which uses the hash's high bits.
const MODULI: [u32; 2] = [1024, 7];
/// What `bucket_sql` is checked with besides: one bucket, a large power of two, and the largest
/// count its bigint arithmetic takes (its products must stay below 2^63).
const SQL_MODULI: [u32; 3] = [1, 65536, i32::MAX as u32];

/// A bare server and a superuser connection to it, with one empty hash-partitioned table per
/// key type.
struct Server {
    client: Client,
    _pg: Cluster,
    // Declared last: dropped after the cluster that lives in it.
    _dir: TempDir,
}

impl Server {
    async fn start() -> Server {
        let (dir, pg) = tokio::task::spawn_blocking(|| {
            let bins = binaries();
            let dir = TempDir::new("sg-hash").expect("temp dir");
            let pg = Cluster::start(&bins, dir.path(), ClusterOptions::default())
                .expect("start postgres");
            (dir, pg)
        })
        .await
        .expect("cluster setup");
        let client = connect(&pg.url("postgres")).await;
        client
            .batch_execute(
                "CREATE TABLE hk_int8 (k bigint) PARTITION BY HASH (k);
                 CREATE TABLE hk_int4 (k integer) PARTITION BY HASH (k);
                 CREATE TABLE hk_int2 (k smallint) PARTITION BY HASH (k);
                 CREATE TABLE hk_text (k text) PARTITION BY HASH (k);
                 CREATE TABLE hk_uuid (k uuid) PARTITION BY HASH (k);",
            )
            .await
            .expect("create tables");
        Server {
            client,
            _pg: pg,
            _dir: dir,
        }
    }

    /// Checks, for both moduli, that the server accepts our bucket for every key, and that it
    /// refuses a bucket one off for every key (so the check itself can fail).
    ///
    /// `array` is the SQL that turns `$1` into an array of the table's key type.
    async fn assert_placement<T: ToSql + Sync>(
        &self,
        table: &str,
        array: &str,
        keys: &[T],
        hashes: &[u64],
    ) {
        assert_eq!(keys.len(), hashes.len());
        for modulus in MODULI {
            let ours: Vec<i32> = hashes.iter().map(|&h| remainder(h, modulus)).collect();
            let (total, refused, sample) = self.refused(table, array, keys, &ours, modulus).await;
            assert_eq!(total, keys.len() as i64, "{table}: rows checked");
            assert_eq!(
                refused, 0,
                "{table}: PostgreSQL puts {refused} of {total} keys in another partition than \
                 shardgate for MODULUS {modulus}; first ones: {sample:?}"
            );
            let off: Vec<i32> = ours.iter().map(|r| (r + 1) % modulus as i32).collect();
            let (_, refused, _) = self.refused(table, array, keys, &off, modulus).await;
            assert_eq!(
                refused, total,
                "{table}: a wrong remainder must be refused for every key (MODULUS {modulus})"
            );
        }
    }

    /// The server computes, with [`bucket_sql`], the same bucket as shardgate for every key.
    async fn assert_sql_buckets<T: ToSql + Sync>(
        &self,
        array: &str,
        key_type: KeyType,
        keys: &[T],
        hashes: &[u64],
    ) {
        for modulus in MODULI.into_iter().chain(SQL_MODULI) {
            let expr = bucket_sql("k", key_type, modulus);
            let sql = format!(
                "SELECT array_agg({expr} ORDER BY n) FROM unnest({array}) WITH ORDINALITY AS t(k, n)"
            );
            let keys: Vec<&T> = keys.iter().collect();
            let theirs: Vec<i32> = self
                .client
                .query_one(&sql, &[&keys])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0);
            let ours: Vec<i32> = hashes.iter().map(|&h| remainder(h, modulus)).collect();
            let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ, 0,
                "{key_type:?}: SQL buckets differ for {differ} keys (MODULUS {modulus})"
            );
            assert_eq!(theirs.len(), keys.len());
        }
    }

    /// How many (key, remainder) pairs the server checked, how many it refused, and up to ten
    /// of the refused keys.
    async fn refused<T: ToSql + Sync>(
        &self,
        table: &str,
        array: &str,
        keys: &[T],
        remainders: &[i32],
        modulus: u32,
    ) -> (i64, i64, Option<Vec<String>>) {
        let sql = format!(
            "SELECT count(*), count(*) FILTER (WHERE NOT ok), \
                    (array_agg(k::text) FILTER (WHERE NOT ok))[1:10] \
             FROM (SELECT k, satisfies_hash_partition('{table}'::regclass, $3, r, k) AS ok \
                   FROM unnest({array}, $2::int4[]) AS t(k, r)) s"
        );
        let keys: Vec<&T> = keys.iter().collect();
        let modulus = modulus as i32;
        let row = self
            .client
            .query_one(&sql, &[&keys, &remainders, &modulus])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        (row.get(0), row.get(1), row.get(2))
    }
}

/// Our bucket, as the int4 remainder `satisfies_hash_partition` takes.
fn remainder(hash: u64, modulus: u32) -> i32 {
    bucket_of(hash, modulus) as i32
}

/// splitmix64: a fixed stream of pseudo-random numbers, so that a failure reproduces with the same
/// keys on every run.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Extremes, the edges of every narrower integer type, powers of two either side of zero, a dense
/// run around zero, then random values both small and across the full range.
fn bigint_keys() -> Vec<i64> {
    let mut keys = vec![i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1];
    for edge in [
        i64::from(i32::MIN),
        i64::from(i32::MAX),
        i64::from(i16::MIN),
        i64::from(i16::MAX),
    ] {
        keys.extend([edge - 1, edge, edge + 1]);
    }
    for shift in 0..63 {
        let p = 1i64 << shift;
        keys.extend([p, p - 1, -p, -p - 1]);
    }
    keys.extend(-300..=300);
    let mut s = Stream(1);
    while keys.len() < KEYS {
        keys.push(s.next() as i64);
        keys.push(s.below(2_000_000) as i64 - 1_000_000);
    }
    keys
}

fn integer_keys() -> Vec<i32> {
    let mut keys = vec![i32::MIN, i32::MIN + 1, i32::MAX, i32::MAX - 1, 0, 1, -1];
    keys.extend((0..31).flat_map(|shift| [1 << shift, -(1 << shift)]));
    let mut s = Stream(2);
    while keys.len() < KEYS {
        keys.push(s.next() as i32);
        keys.push(s.below(20_000) as i32 - 10_000);
    }
    keys
}

/// Every length 0..=40 in ASCII (each lookup3 tail after up to three whole chunks), then random
/// strings up to 100 characters mixing ASCII with 2-, 3- and 4-byte UTF-8.
fn text_keys() -> Vec<String> {
    const ALPHABET: &[char] = &[
        'a',
        'b',
        'z',
        'A',
        'Z',
        '0',
        '9',
        ' ',
        '-',
        '_',
        '\'',
        '"',
        '\\',
        '%',
        'é',
        'ß',
        'ж',
        'λ',
        '日',
        '本',
        '語',
        '€',
        '🦀',
        '😀',
        '\u{10FFFF}',
    ];
    let ascii = "abcdefghijklmnopqrstuvwxyz0123456789ABCD";
    let mut keys: Vec<String> = (0..=40).map(|n| ascii[..n].to_string()).collect();
    keys.extend(["user-42", "日本語", "Grüße, Jürgen", "ключ"].map(String::from));
    let mut s = Stream(3);
    while keys.len() < KEYS {
        let len = s.below(101) as usize;
        let key = (0..len)
            .map(|_| ALPHABET[s.below(ALPHABET.len() as u64) as usize])
            .collect();
        keys.push(key);
    }
    keys
}

/// Random uuids, each spelled in one of the forms uuid_in accepts; the server reads the spelling
/// with uuid_in and we read it with `KeyValue::from_text`.
fn uuid_spellings() -> Vec<String> {
    let mut s = Stream(4);
    let mut keys = vec![
        "00000000-0000-0000-0000-000000000000".to_string(),
        "ffffffff-ffff-ffff-ffff-ffffffffffff".to_string(),
    ];
    while keys.len() < KEYS {
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&s.next().to_le_bytes());
        u[8..].copy_from_slice(&s.next().to_le_bytes());
        let canonical = KeyValue::Uuid(u).to_string();
        keys.push(match keys.len() % 4 {
            0 => canonical,
            1 => canonical.to_uppercase(),
            2 => format!("{{{canonical}}}"),
            _ => canonical.replace('-', ""),
        });
    }
    keys
}

fn parsed_hash(key_type: KeyType, text: &str) -> u64 {
    KeyValue::from_text(key_type, text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .hash()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigint_keys_land_in_the_partition_postgres_picks() {
    let server = Server::start().await;
    let keys = bigint_keys();
    let hashes: Vec<u64> = keys.iter().map(|&k| hash_int(k)).collect();
    server
        .assert_placement("hk_int8", "$1::int8[]", &keys, &hashes)
        .await;
    server
        .assert_sql_buckets("$1::int8[]", KeyType::Bigint, &keys, &hashes)
        .await;
}

/// Integer keys arrive as text, as int4 and as int2 (binary): every width lands alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_keys_of_every_width_land_in_the_partition_postgres_picks() {
    let server = Server::start().await;
    let keys = integer_keys();
    let hashes: Vec<u64> = keys
        .iter()
        .map(|k| parsed_hash(KeyType::Integer, &k.to_string()))
        .collect();
    server
        .assert_placement("hk_int4", "$1::int4[]", &keys, &hashes)
        .await;
    server
        .assert_sql_buckets("$1::int4[]", KeyType::Integer, &keys, &hashes)
        .await;

    let small: Vec<i16> = keys.iter().filter_map(|&k| i16::try_from(k).ok()).collect();
    assert!(small.len() > 1000, "enough int2 keys: {}", small.len());
    let hashes: Vec<u64> = small
        .iter()
        .map(|k| {
            KeyValue::from_binary(KeyType::Integer, &k.to_be_bytes())
                .expect("int2 parameter")
                .hash()
        })
        .collect();
    server
        .assert_placement("hk_int2", "$1::int2[]", &small, &hashes)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_land_in_the_partition_postgres_picks() {
    let server = Server::start().await;
    let keys = text_keys();
    let hashes: Vec<u64> = keys.iter().map(|k| hash_text(k.as_bytes())).collect();
    server
        .assert_placement("hk_text", "$1::text[]", &keys, &hashes)
        .await;
    server
        .assert_sql_buckets("$1::text[]", KeyType::Text, &keys, &hashes)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_keys_land_in_the_partition_postgres_picks() {
    let server = Server::start().await;
    let keys = uuid_spellings();
    let hashes: Vec<u64> = keys.iter().map(|k| parsed_hash(KeyType::Uuid, k)).collect();
    server
        .assert_placement("hk_uuid", "$1::text[]::uuid[]", &keys, &hashes)
        .await;
    server
        .assert_sql_buckets("$1::text[]::uuid[]", KeyType::Uuid, &keys, &hashes)
        .await;
}

/// Spellings at the edges of int8in, int4in and uuid_in: we accept exactly what the server
/// accepts, as the same value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_spellings_parse_as_the_server_reads_them() {
    let server = Server::start().await;
    let ints = [
        "42",
        " 42 ",
        "\x0b42\x0b",
        "\x0c-7\r\n\t",
        "+0",
        "-0",
        "00042",
        "",
        " ",
        "-",
        "+",
        "1e3",
        "0x10",
        "1_000",
        "- 1",
        "+-1",
        "4 2",
        "42\u{a0}",
        "١٢",
        "2147483647",
        "-2147483648",
        "2147483648",
        "-2147483649",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999x",
    ];
    let uuids = [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
        "a0e-ebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ];
    let cases = ints
        .iter()
        .flat_map(|s| {
            [
                (KeyType::Bigint, "int8", *s),
                (KeyType::Integer, "int4", *s),
            ]
        })
        .chain(uuids.iter().map(|s| (KeyType::Uuid, "uuid", *s)));
    for (key_type, sql_type, text) in cases {
        let sql = format!("SELECT $1::text::{sql_type}::text");
        let server_reads = server
            .client
            .query_one(&sql, &[&text])
            .await
            .map(|row| row.get::<_, String>(0));
        let we_read = KeyValue::from_text(key_type, text).map(|v| v.to_string());
        assert_eq!(
            we_read.as_ref().ok(),
            server_reads.as_ref().ok(),
            "{text:?} as {sql_type}: we say {we_read:?}, the server says {server_reads:?}"
        );
    }
}
