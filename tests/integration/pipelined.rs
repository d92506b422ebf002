//! Pipelined batches on different shards, as drivers send them (tokio-postgres' concurrent
//! queries, psycopg's pipeline mode): a batch that needs another shard than the one still
//! answering the client's earlier batches waits for them to end, then runs on its own shard.
//! Replies come back in the order the batches were sent; a transaction still keeps its shard.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::shards::{Shards, ShardsOptions};
use crate::wire::Raw;

async fn two_shards() -> Shards {
    Shards::start(
        ShardsOptions::new(2)
            .schema("CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);")
            .table("users", "id")
            .pool_size(1),
    )
    .await
}

/// Parse (unnamed), Bind, Execute and Sync of one statement with text parameters.
fn batch(out: &mut BytesMut, sql: &str, params: &[&str]) {
    frontend::parse("", sql, [], out).unwrap();
    frontend::bind(
        "",
        "",
        [0i16],
        params.iter(),
        |p, buf| {
            buf.extend_from_slice(p.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        [0i16],
        out,
    )
    .map_err(|_| "bind")
    .unwrap();
    frontend::execute("", 0, out).unwrap();
    frontend::sync(out);
}

/// Replies as a compact string: tags, `D(values)`, `E(sqlstate)`, `Z(status)`; ` |` after each Z.
fn show(replies: &[(char, Vec<u8>)]) -> String {
    let mut out = Vec::new();
    for (tag, body) in replies {
        out.push(match tag {
            'D' => format!("D({})", columns(body).join(",")),
            'E' => {
                let code = body
                    .split(|&b| b == 0)
                    .find(|f| f.first() == Some(&b'C'))
                    .map(|f| String::from_utf8_lossy(&f[1..]).into_owned());
                format!("E({})", code.unwrap_or_default())
            }
            'Z' => format!("Z({}) |", body[0] as char),
            'T' => "T".into(),
            other => other.to_string(),
        });
    }
    out.join(" ")
}

fn columns(body: &[u8]) -> Vec<String> {
    let n = i16::from_be_bytes([body[0], body[1]]);
    let (mut at, mut cols) = (2, Vec::new());
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            cols.push("NULL".into());
            continue;
        }
        let len = len as usize;
        cols.push(String::from_utf8_lossy(&body[at..at + len]).into_owned());
        at += len;
    }
    cols
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_run_on_their_own_shards_in_order() {
    let shop = two_shards().await;
    let (a, b) = (
        shop.keys_on(0).next().unwrap(),
        shop.keys_on(1).next().unwrap(),
    );
    let (a, b) = (a.to_string(), b.to_string());
    let insert = "INSERT INTO users (id, name) VALUES ($1, $2)";
    let select = "SELECT name FROM users WHERE id = $1";
    let mut out = BytesMut::new();
    batch(&mut out, insert, &[&a, "first"]);
    batch(&mut out, insert, &[&b, "second"]);
    batch(&mut out, select, &[&a]);
    frontend::query(&format!("SELECT name FROM users WHERE id = {b}"), &mut out).unwrap();
    frontend::query("SELECT count(*) FROM users", &mut out).unwrap();
    batch(&mut out, select, &[&b]);
    // Everything in one write: each batch reaches shardgate before the one before it is answered.
    let mut c = Raw::login(shop.port()).await;
    c.send(&out).await;
    assert_eq!(
        show(&c.replies(6, 0).await),
        "1 2 C Z(I) | 1 2 C Z(I) | 1 2 D(first) C Z(I) | T D(second) C Z(I) | T D(2) C Z(I) | 1 2 D(second) C Z(I) |"
    );
    assert_eq!(
        shop.ids_on(0, "SELECT id FROM users"),
        [a.parse::<i64>().unwrap()]
    );
    assert_eq!(
        shop.ids_on(1, "SELECT id FROM users"),
        [b.parse::<i64>().unwrap()]
    );
}

/// Earlier batches that leave a transaction open keep their shard: the batch that needs the
/// other shard is refused (0A000) once they have ended, and the transaction fails as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_transaction_keeps_its_shard() {
    let shop = two_shards().await;
    let (a, b) = (
        shop.keys_on(0).next().unwrap(),
        shop.keys_on(1).next().unwrap(),
    );
    let (a, b) = (a.to_string(), b.to_string());
    let insert = "INSERT INTO users (id, name) VALUES ($1, $2)";
    let mut out = BytesMut::new();
    batch(&mut out, "BEGIN", &[]);
    batch(&mut out, insert, &[&a, "in tx"]);
    batch(&mut out, insert, &[&b, "other shard"]);
    batch(&mut out, "COMMIT", &[]);
    frontend::query(
        &format!("SELECT count(*) FROM users WHERE id = {a}"),
        &mut out,
    )
    .unwrap();
    let mut c = Raw::login(shop.port()).await;
    c.send(&out).await;
    assert_eq!(
        show(&c.replies(5, 0).await),
        "1 2 C Z(T) | 1 2 C Z(T) | 1 E(0A000) Z(E) | 1 2 C Z(I) | T D(0) C Z(I) |"
    );
    for s in 0..2 {
        assert_eq!(
            shop.direct(s, "SELECT count(*) FROM users"),
            "0",
            "shard {s}"
        );
    }
}

/// One batch (one Sync) whose first statement fails on its shard and whose next one needs the
/// other shard: Postgres skips everything after the error up to the Sync, and so must shardgate —
/// the batch answers the first error only, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_failed_skips_its_statement_for_another_shard() {
    let shop = two_shards().await;
    let (a, b) = (
        shop.keys_on(0).next().unwrap(),
        shop.keys_on(1).next().unwrap(),
    );
    let (a, b) = (a.to_string(), b.to_string());
    let insert = "INSERT INTO users (id, name) VALUES ($1, $2)";
    let mut out = BytesMut::new();
    batch(&mut out, insert, &[&a, "first"]);
    // Both statements in one batch: the first one's Sync (its last 5 bytes) is dropped.
    let mut first = BytesMut::new();
    batch(&mut first, insert, &[&a, "duplicate"]);
    out.extend_from_slice(&first[..first.len() - 5]);
    batch(&mut out, insert, &[&b, "never"]);
    frontend::query("SELECT count(*) FROM users", &mut out).unwrap();
    let mut c = Raw::login(shop.port()).await;
    c.send(&out).await;
    let replies = tokio::time::timeout(std::time::Duration::from_secs(20), c.replies(3, 0))
        .await
        .expect("shardgate answered the batch");
    assert_eq!(
        show(&replies),
        "1 2 C Z(I) | 1 2 E(23505) Z(I) | T D(1) C Z(I) |"
    );
    assert_eq!(shop.direct(1, "SELECT count(*) FROM users"), "0");
}
