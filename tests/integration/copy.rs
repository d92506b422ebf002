//! COPY FROM STDIN into a sharded table, split row by row: each row lands only on the shard that
//! owns its key, the client gets one `COPY n`, and any failure (a bad key, a constraint on one
//! shard, the client's CopyFail) leaves nothing on any shard and the connection usable.

use std::process::Command;

use futures_util::{pin_mut, SinkExt};

use crate::harness::{binaries, db_error, one, PASSWORD, USER};
use crate::shards::{Shards, ShardsOptions};

async fn three_shards() -> Shards {
    Shards::start(
        ShardsOptions::new(3)
            .buckets(12)
            .schema("CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, note text);")
            .table("users", "id"),
    )
    .await
}

/// The ids on each shard, read directly.
fn placement(shop: &Shards) -> Vec<Vec<i64>> {
    (0..3)
        .map(|s| shop.ids_on(s, "SELECT id FROM users ORDER BY id"))
        .collect()
}

/// The ids `ids` should put on each shard.
fn expected(shop: &Shards, ids: impl Iterator<Item = i64>) -> Vec<Vec<i64>> {
    let mut out = vec![Vec::new(); 3];
    for id in ids {
        out[shop.owner(id)].push(id);
    }
    for v in &mut out {
        v.sort_unstable();
    }
    out
}

/// Sends `chunks` through `copy_in` and finishes: the `COPY n` count, or the error.
pub async fn copy_in(
    c: &tokio_postgres::Client,
    sql: &str,
    chunks: Vec<Vec<u8>>,
) -> Result<u64, tokio_postgres::Error> {
    let sink = c.copy_in(sql).await?;
    pin_mut!(sink);
    for chunk in chunks {
        sink.send(bytes::Bytes::from(chunk)).await?;
    }
    sink.as_mut().finish().await
}

/// Runs one psql command through shardgate (stopping at the first error).
async fn psql(shop: &Shards, command: &str) -> std::process::Output {
    let port = shop.port().to_string();
    let command = command.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(binaries().psql())
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
            ])
            .args(["-U", USER, "-d", "app", "-c", &command])
            .env("PGPASSWORD", PASSWORD)
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `data` cut into pieces of `size` bytes, wherever rows happen to end.
fn pieces(data: &[u8], size: usize) -> Vec<Vec<u8>> {
    data.chunks(size).map(<[u8]>::to_vec).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_csv_rows_land_on_their_owners() {
    let shop = three_shards().await;
    let c = shop.connect().await;
    // Text: 3000 rows with escapes (a tab and a newline inside values), cut every 1000 bytes.
    let mut text = Vec::new();
    for id in 1..=3000i64 {
        text.extend_from_slice(format!("{id}\tname\\t{id}\tline\\nbreak\n").as_bytes());
    }
    let n = copy_in(
        &c,
        "COPY users (id, name, note) FROM STDIN",
        pieces(&text, 1000),
    )
    .await
    .unwrap();
    assert_eq!(n, 3000);
    assert_eq!(placement(&shop), expected(&shop, 1..=3000));
    for s in 0..3 {
        assert_eq!(
            shop.direct(
                s,
                "SELECT count(*) FROM users WHERE name LIKE E'name\\t%' AND note = E'line\\nbreak'"
            ),
            shop.direct(s, "SELECT count(*) FROM users"),
            "shard {s} stores the values de-escaped"
        );
    }
    // CSV with a header, the key in the second column, quoted newlines, quotes and delimiters,
    // cut every 777 bytes.
    let mut csv = b"name,id,note\n".to_vec();
    for id in 3001..=6000i64 {
        csv.extend_from_slice(format!("\"n, \"\"{id}\"\"\",{id},\"multi\nline\"\n").as_bytes());
    }
    let n = copy_in(
        &c,
        "COPY users (name, id, note) FROM STDIN WITH (FORMAT csv, HEADER true)",
        pieces(&csv, 777),
    )
    .await
    .unwrap();
    assert_eq!(n, 3000);
    assert_eq!(placement(&shop), expected(&shop, 1..=6000));
    assert_eq!(
        shop.direct(
            shop.owner(4242),
            "SELECT name || '|' || note FROM users WHERE id = 4242"
        ),
        "n, \"4242\"|multi\nline"
    );
    // The old syntax, a custom delimiter and NULL, the end marker (what follows is ignored).
    let n = copy_in(
        &c,
        "COPY users (id, name, note) FROM STDIN WITH DELIMITER '|' NULL 'nil'",
        vec![b"6001|a|nil\n6002|b|x\n\\.\n6003|c|ignored\n".to_vec()],
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        shop.direct(
            shop.owner(6001),
            "SELECT note IS NULL FROM users WHERE id = 6001"
        ),
        "t"
    );
    let total: i64 = one(&c, "SELECT count(*) FROM users").await;
    assert_eq!(total, 6002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_through_the_simple_protocol() {
    let shop = three_shards().await;
    let file = shop.dir().join("users.csv");
    let mut csv = String::from("id,name\n");
    for id in 1..=2500i64 {
        csv.push_str(&format!("{id},\"user {id}\"\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let copy = format!(
        "\\copy users (id, name) from '{}' with (format csv, header)",
        file.display()
    );
    let out = psql(&shop, &copy).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "COPY 2500\n");
    assert_eq!(placement(&shop), expected(&shop, 1..=2500));
    // The simple protocol too: a bad row is refused with its line, nothing is left anywhere.
    let c = shop.connect().await;
    let err = copy_in(
        &c,
        "COPY users (id, name) FROM STDIN",
        vec![b"9001\ta\n9002\tb\nnope\tc\n9003\td\n".to_vec()],
    )
    .await
    .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22P02");
    assert_eq!(
        db.message(),
        "invalid input for a bigint sharding key: \"nope\" (expected a whole number)"
    );
    assert_eq!(db.where_(), Some("COPY users, line 3, column id: \"nope\""));
    assert_eq!(
        db.detail(),
        Some("No rows were copied. No shard applied the COPY: it was rolled back on \"s0\", \"s1\", \"s2\".")
    );
    assert_eq!(placement(&shop), expected(&shop, 1..=2500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_copy_leaves_nothing_anywhere() {
    let shop = three_shards().await;
    let c = shop.connect().await;
    let rows = |ids: std::ops::RangeInclusive<i64>| {
        let mut v = Vec::new();
        for id in ids {
            v.extend_from_slice(format!("{id}\tx\n").as_bytes());
        }
        v
    };
    // A unique violation on one shard only: every shard rolls back.
    let dup = shop.keys_on(1).nth(500).unwrap();
    shop.direct(1, &format!("INSERT INTO users VALUES ({dup}, 'already')"));
    let err = copy_in(
        &c,
        "COPY users (id, name) FROM STDIN",
        pieces(&rows(1..=3000), 4096),
    )
    .await
    .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "23505");
    assert!(
        db.message()
            .starts_with("shard \"s1\": duplicate key value violates unique constraint"),
        "{}",
        db.message()
    );
    assert_eq!(placement(&shop), vec![vec![], vec![dup], vec![]]);
    shop.direct(1, "DELETE FROM users");
    // A NULL key: refused as the NOT NULL key column would be.
    let err = copy_in(
        &c,
        "COPY users (id, name) FROM STDIN WITH (FORMAT csv)",
        vec![b"1,a\n,b\n".to_vec()],
    )
    .await
    .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "23502");
    assert_eq!(
        db.message(),
        "null value in column \"id\" of relation \"users\" violates not-null constraint"
    );
    assert_eq!(db.where_(), Some("COPY users, line 2"));
    // Mixed line endings, as PostgreSQL refuses them (else shards could read rows differently).
    let err = copy_in(
        &c,
        "COPY users (id, name) FROM STDIN",
        vec![b"1\ta\r\n2\tb\n".to_vec()],
    )
    .await
    .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22P04");
    assert_eq!(db.message(), "literal newline found in data");
    assert_eq!(db.where_(), Some("COPY users, line 2"));
    // The client gives up (the sink dropped unfinished sends CopyFail).
    {
        let sink = c.copy_in("COPY users (id, name) FROM STDIN").await.unwrap();
        pin_mut!(sink);
        sink.send(bytes::Bytes::from(rows(1..=100))).await.unwrap();
    }
    // The connection stays usable after each, and nothing was copied.
    let n = copy_in(&c, "COPY users (id, name) FROM STDIN", vec![rows(1..=10)])
        .await
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(placement(&shop), expected(&shop, 1..=10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_any_data() {
    let shop = three_shards().await;
    let c = shop.connect().await;
    let err = c.simple_query("COPY users FROM STDIN").await.unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "0A000");
    assert_eq!(message, "COPY into sharded table \"users\" must list its columns, so shardgate can find the sharding key \"id\" in each row");
    let err = c
        .simple_query("COPY users (id, name) FROM STDIN (FORMAT binary)")
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "0A000");
    // Inside a transaction: refused, and the transaction fails as Postgres's would.
    c.batch_execute("BEGIN").await.unwrap();
    let err = c
        .simple_query("COPY users (id, name) FROM STDIN")
        .await
        .unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "0A000");
    assert_eq!(message, "COPY into sharded table \"users\" sends its rows to several shards, so it runs only outside transaction blocks (and outside an extended-protocol batch already running on one shard)");
    let err = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&err).0, "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = one(&c, "SELECT count(*) FROM users").await;
    assert_eq!(n, 0);
    // The extended protocol gets the same refusal. (tokio-postgres's copy_in cannot use its
    // connection after a COPY that fails before it starts, against PostgreSQL itself too: its
    // CopyFail + Sync gets a ReadyForQuery it does not expect. So a connection of its own.)
    let other = shop.connect().await;
    other.batch_execute("BEGIN").await.unwrap();
    let err = other
        .copy_in::<_, bytes::Bytes>("COPY users (id, name) FROM STDIN")
        .await
        .err()
        .expect("refused");
    assert_eq!(db_error(&err).0, "0A000");
}

#[tokio::test]
async fn the_shards_notices_reach_the_client() {
    let shop = three_shards().await;
    for s in 0..3 {
        shop.direct(
            s,
            "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE NOTICE 'copied on %', current_database(); RETURN NULL; END $$; \
             CREATE TRIGGER note AFTER INSERT ON users FOR EACH STATEMENT EXECUTE FUNCTION note();",
        );
    }
    let file = shop.dir().join("few.csv");
    std::fs::write(&file, "1,a\n2,b\n3,c\n4,d\n5,e\n6,f\n7,g\n8,h\n9,i\n").unwrap();
    let copy = format!("\\copy users (id, name) from '{}' csv", file.display());
    let out = psql(&shop, &copy).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "COPY 9\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut notices: Vec<&str> = stderr.lines().collect();
    notices.sort_unstable();
    assert_eq!(
        notices,
        [
            "NOTICE:  copied on app_s0",
            "NOTICE:  copied on app_s1",
            "NOTICE:  copied on app_s2"
        ],
        "one per shard the rows reached"
    );
}
