//! INSERT without a column list into a sharded table: shardgate reads the table's columns from
//! the shards, routes by the value in the key's position, and lists the columns in the text the
//! shards get, so a table changed behind its back gives an error, never a misplaced row.

use std::time::{Duration, Instant};

use crate::harness::db_error;
use crate::shards::{Shards, ShardsOptions};

/// The key is the second column, so a router that took the first would misplace every row.
async fn shards() -> Shards {
    Shards::start(
        ShardsOptions::new(2)
            .schema("CREATE TABLE users (tenant int, id bigint PRIMARY KEY, name text);")
            .table("users", "id"),
    )
    .await
}

/// Where each stored id is, as `(shard, id)`, with the shard that owns it.
fn placement(s: &Shards) -> Vec<(usize, i64, usize)> {
    (0..2)
        .flat_map(|shard| {
            s.ids_on(shard, "SELECT id FROM users ORDER BY id")
                .into_iter()
                .map(move |id| (shard, id))
        })
        .map(|(shard, id)| (shard, id, s.owner(id)))
        .collect()
}

fn assert_placed(s: &Shards, ids: &[i64]) {
    let found = placement(s);
    let mut stored: Vec<i64> = found.iter().map(|&(_, id, _)| id).collect();
    stored.sort_unstable();
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    assert_eq!(stored, ids, "every row stored once");
    for (shard, id, owner) in found {
        assert_eq!(
            shard, owner,
            "id {id} sits on shard {shard}, its owner is {owner}"
        );
    }
}

#[tokio::test]
async fn inserts_without_a_column_list_land_on_the_owner_of_their_key() {
    let s = shards().await;
    let c = s.connect().await;
    let (a, b) = (s.keys_on(0).next().unwrap(), s.keys_on(1).next().unwrap());
    c.simple_query(&format!("INSERT INTO users VALUES (7, {a}, 'simple')"))
        .await
        .expect("simple insert");
    let typed = "INSERT INTO users VALUES ($1::int, $2::bigint, $3::text)";
    c.execute(typed, &[&7i32, &b, &"extended"])
        .await
        .expect("extended insert");
    let (a2, b2) = (s.keys_on(0).nth(1).unwrap(), s.keys_on(1).nth(1).unwrap());
    let rows = c
        .query(
            &format!("INSERT INTO users VALUES (1, {a2}, 'x'), (1, {b2}, 'y') RETURNING id"),
            &[],
        )
        .await
        .expect("split insert");
    assert_eq!(rows.len(), 2);
    assert_placed(&s, &[a, b, a2, b2]);
    assert_eq!(
        s.direct(
            s.owner(b),
            &format!("SELECT tenant, name FROM users WHERE id = {b}")
        ),
        "7|extended"
    );
}

#[tokio::test]
async fn a_table_changed_through_shardgate_is_read_again_and_one_changed_behind_its_back_errs() {
    let s = shards().await;
    let c = s.connect().await;
    c.simple_query("ALTER TABLE users DROP COLUMN tenant")
        .await
        .expect("DDL through shardgate");
    // The columns are read again in the background after the DDL.
    let k = s.keys_on(1).next().unwrap();
    insert_eventually(&c, &format!("INSERT INTO users VALUES ({k}, 'after')")).await;
    assert_placed(&s, &[k]);

    // Renamed on the shards directly: shardgate still lists `name`, and Postgres says so.
    for shard in 0..2 {
        s.direct(shard, "ALTER TABLE users RENAME COLUMN name TO label");
    }
    let k2 = s.keys_on(0).next().unwrap();
    let sql = format!("INSERT INTO users VALUES ({k2}, 'stale')");
    let err = c
        .simple_query(&sql)
        .await
        .expect_err("outdated column list");
    assert_eq!(
        db_error(&err),
        (
            "42703".into(),
            "column \"name\" of relation \"users\" does not exist".into()
        )
    );
    // A reload reads them again.
    s.reload();
    insert_eventually(&c, &sql).await;
    assert_placed(&s, &[k, k2]);
}

/// Runs `sql` until it succeeds (columns are read in the background), for up to ten seconds.
async fn insert_eventually(c: &tokio_postgres::Client, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.simple_query(sql).await {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{sql}: {:?}", db_error(&e)),
        }
    }
}
