//! Resharding jobs (issue 6), the part that exists so far: moves checked against the map,
//! pre-flight against the real shards, jobs in the control database shown and aborted through
//! the admin API.

use serde_json::{json, Value};

use crate::admin_api::{get, post, TOKEN};
use crate::shards::{Shards, ShardsOptions};

const SCHEMA: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text);\
    CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL, total int);";

async fn shop() -> Shards {
    Shards::start(
        ShardsOptions::new(2)
            .schema(SCHEMA)
            .table("users", "id")
            .table("orders", "user_id")
            .two_phase()
            .admin_token(TOKEN),
    )
    .await
}

/// Buckets 0-1 (s0's) to s1.
const MOVE: &str = r#"{"database": "app", "moves": [{"buckets": "0-1", "to": "s1"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_says_what_is_missing_and_starts_nothing() {
    let shop = shop().await;
    // No job yet (this also creates shardgate's tables in the control database).
    assert_eq!(get(shop.admin_addr(), "/v1/reshard/1").await.status, 404);
    shop.direct(
        1,
        "ALTER TABLE users DROP COLUMN name; ALTER TABLE orders DROP CONSTRAINT orders_pkey",
    );
    // Row security, which hides a move's copies, must be shardgate's alone, and apply.
    shop.direct(
        0,
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY; ALTER ROLE app BYPASSRLS",
    );
    // A move installs a trigger and row security: the role shardgate connects as must own it.
    shop.direct(1, "ALTER TABLE users OWNER TO postgres");
    let bypasses = |shard: &str| {
        format!(
            "shard \"{shard}\" is reached as role \"app\", which bypasses row-level security \
             (superuser or BYPASSRLS): during a move, statements sent to every shard would see \
             the target's copies of the moved rows too; connect as a role without it (the tables' \
             owner will do), or set routing.cross_shard_reads and cross_shard_writes to reject"
        )
    };
    let answer = post(shop.admin_addr(), "/v1/reshard", MOVE).await;
    assert_eq!(answer.status, 409);
    let body = answer.json();
    assert_eq!(body["error"], "preflight_failed");
    assert_eq!(
        body["problems"],
        json!([
            bypasses("s0"),
            "table \"orders\" on \"s0\" uses row-level security already; shardgate hides \
             a move's copies with it and cannot share it: move this table another way",
            bypasses("s1"),
            "table \"users\" on \"s1\" is owned by \"postgres\", and shardgate connects as \"app\": \
             a move installs a trigger and row security on it, which needs its owner \
             (ALTER TABLE users OWNER TO app)",
            "table \"orders\" has no primary key on \"s1\"",
            "table \"users\" has other columns on \"s1\" (id bigint) than on \"s0\" (id bigint, \
             name text): create it on \"s1\" with the same columns in the same order",
        ])
    );
    assert_eq!(
        shop.control("SELECT count(*) FROM shardgate.reshard_jobs"),
        "0"
    );
    // A move the map does not allow never reaches the shards.
    let split = r#"{"database": "app", "moves": [{"buckets": "0-5", "to": "s1"}]}"#;
    let answer = post(shop.admin_addr(), "/v1/reshard", split).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json()["detail"],
        "buckets 0-5: owned by \"s0\" (bucket 0) and \"s1\" (bucket 4); move one shard's keys per move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_recorded_shown_and_aborted() {
    let shop = shop().await;
    let admin = shop.admin_addr();
    let started = post(admin, "/v1/reshard", MOVE).await;
    assert_eq!(started.status, 202, "{}", started.json());
    let id = started.json()["id"].as_i64().unwrap();
    assert_eq!(started.json()["phase"], "preflight");
    // The job's driver (this proxy's) moves it on from here; what it found is kept.
    let job = get(admin, &format!("/v1/reshard/{id}")).await.json();
    assert_eq!(
        job["moves"],
        json!([{"slice": {"buckets": {"first": 0, "last": 1}}, "from": "s0", "to": "s1"}])
    );
    let tables = job["preflight"]["tables"].as_array().unwrap();
    let table = |name: &str| -> &Value { tables.iter().find(|t| t["table"] == name).unwrap() };
    assert_eq!(table("users")["primary_key"], json!(["id"]));
    assert_eq!(table("users")["columns"], json!(["id bigint", "name text"]));
    assert_eq!(table("orders")["sequences"][0][0], "orders_id_seq");
    assert!(job["history"][0]["note"]
        .as_str()
        .unwrap()
        .starts_with("pre-flight passed"));
    // This proxy's heartbeat, with its listen address.
    let proxies = job["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 1, "{job}");
    let proxy = proxies[0]["proxy_id"].as_str().unwrap();
    let ours = format!("127.0.0.1:{}/", shop.port());
    assert!(proxy.starts_with(&ours), "{proxy}");
    assert!(proxies[0]["seen_ms_ago"].as_i64().unwrap() < 10_000);
    // Backfill's checkpoints are kept with the job and shown as its progress.
    let db = shardgate::control::ControlDb::new(&shop.config().control.unwrap()).unwrap();
    let at = shardgate::reshard::backfill::Checkpoint {
        last_key: Some(vec!["42".into()]),
        end_key: Some(vec!["1000".into()]),
        rows: 100,
        done: false,
    };
    let jobs = shardgate::reshard::jobs::save_checkpoint(&db, id, "items", &at);
    jobs.await.unwrap();
    let saved = shardgate::reshard::jobs::checkpoints(&db, id)
        .await
        .unwrap();
    assert!(saved.contains(&("items".to_string(), at)), "{saved:?}");
    let job = get(admin, &format!("/v1/reshard/{id}")).await.json();
    let progress = job["progress"]["tables"].as_array().unwrap();
    let items = progress
        .iter()
        .find(|t| t["table"] == "items")
        .expect("items");
    assert_eq!(
        (items["rows_copied"].clone(), items["done"].clone()),
        (json!(100), json!(false))
    );
    // One job per database at a time; actions need their phase.
    let again = post(admin, "/v1/reshard", MOVE).await;
    assert_eq!(
        (again.status, again.json()["error"].clone()),
        (409, json!("job_in_progress"))
    );
    let finish = post(admin, &format!("/v1/reshard/{id}/finish"), "").await;
    assert_eq!(finish.status, 409);
    let detail = finish.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.starts_with(&format!("job {id} is in phase "))
            && detail.ends_with(": finish needs every slice cut over (phase reverse_dual_write)"),
        "{detail}"
    );
    let aborted = post(admin, &format!("/v1/reshard/{id}/abort"), "").await;
    assert_eq!(
        (aborted.status, aborted.json()["phase"].clone()),
        (202, json!("aborted"))
    );
    let job = get(admin, &format!("/v1/reshard/{id}")).await.json();
    let notes: Vec<&str> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["note"].as_str().unwrap())
        .collect();
    assert!(notes.contains(&"abort asked by the operator"), "{notes:?}");
    assert_eq!(
        post(admin, &format!("/v1/reshard/{id}/abort"), "")
            .await
            .status,
        409
    );
    // The database is free again; every migration is recorded once.
    assert_eq!(post(admin, "/v1/reshard", MOVE).await.status, 202);
    assert_eq!(
        shop.control(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM shardgate.migrations"
        ),
        "1,2,3,4"
    );
    assert_eq!(get(admin, "/v1/reshard/999999").await.status, 404);
}

/// Proxies starting together against one control database apply each migration once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proxies_apply_each_migration_once() {
    let shop = shop().await;
    let url = shop.config().control.unwrap();
    let dbs: Vec<shardgate::control::ControlDb> = (0..4)
        .map(|_| shardgate::control::ControlDb::new(&url).unwrap())
        .collect();
    let clients = futures_util::future::join_all(dbs.iter().map(|db| db.client())).await;
    assert!(clients.iter().all(Result::is_ok));
    assert_eq!(
        shop.control(
            "SELECT string_agg(version::text || ' ' || name, ', ' ORDER BY version) \
             FROM shardgate.migrations"
        ),
        "1 0001_decided_transactions, 2 0002_resharding, 3 0003_reshard_driving, 4 0004_backfill_bound"
    );
}

/// Backfill and verification on their own (no client traffic yet): the moved buckets' rows,
/// every type intact (newlines, tabs and backslashes in text, generated and identity columns
/// included), copied in batches; a copy interrupted and resumed from its checkpoint, or
/// run again from the start, ends with the target holding exactly the source's rows of those
/// buckets; verification then finds exactly the keys damaged on the target and repairs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_and_verification_leave_exactly_the_moved_rows() {
    use shardgate::config::KeyType;
    use shardgate::reshard::backfill::{copy_batch, Checkpoint, TableCopy};
    let shop = Shards::start(
        ShardsOptions::new(2)
            .schema(
                "CREATE TABLE items (id bigint, line int, name text, n numeric(12,3), \
                 f float8, at timestamptz DEFAULT now(), doc jsonb, raw bytea, tags text[], \
                 memo text, span interval, twice numeric GENERATED ALWAYS AS (n * 2) STORED, \
                 seq bigint GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (id, line));",
            )
            .table("items", "id"),
    )
    .await;
    // Rows of every bucket, loaded straight into s0: the copy must pick buckets 0-1 only.
    shop.direct(
        0,
        "INSERT INTO items (id, line, name, n, f, at, doc, raw, tags, memo, span) \
         SELECT i, j, 'it''s ' || i, i * 1.5, 1.0 / (i + j), \
             now() - i * interval '1 minute', jsonb_build_object('i', i), \
             decode(md5(i::text), 'hex'), ARRAY[i::text, 'x'], \
             E'a line\\nand a tab\\t, a backslash \\\\ and \\\\N ' || i, \
             i * interval '1 day 2 hours -3 minutes' \
         FROM generate_series(1, 600) i, generate_series(1, 3) j; \
         UPDATE items SET f = 'NaN' WHERE id = 7; UPDATE items SET name = NULL WHERE id = 9",
    );
    let table = TableCopy {
        table: "items".into(),
        key_column: "id".into(),
        primary_key: vec!["id".into(), "line".into()],
        key_type: KeyType::Bigint,
        buckets: 8,
        slice: shardgate::config::Slice::Buckets { first: 0, last: 1 },
    };
    let in_range = format!(
        "{} BETWEEN 0 AND 1",
        shardgate::router::hash::bucket_sql("id", KeyType::Bigint, 8)
    );
    let digest = format!(
        "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY id, line)) FROM items t WHERE {in_range}"
    );
    let copy = |from: Checkpoint, batches: usize| {
        let (s, t, table) = (shop.shard_url(0), shop.shard_url(1), table.clone());
        async move {
            let mut source = crate::harness::connect(&s).await;
            let mut target = crate::harness::connect(&t).await;
            let mut at = from;
            for _ in 0..batches {
                at = copy_batch(&mut source, &mut target, &table, &at, 100)
                    .await
                    .unwrap();
                if at.done {
                    break;
                }
            }
            at
        }
    };
    // Three batches, then the copier is gone; a new one resumes from the checkpoint.
    let halfway = copy(Checkpoint::default(), 3).await;
    assert_eq!(halfway.rows, 300);
    assert!(!halfway.done);
    let done = copy(halfway, usize::MAX).await;
    assert!(done.done);
    let expected = shop.direct(0, &digest);
    assert_eq!(shop.direct(1, &digest), expected);
    assert_eq!(done.rows.to_string(), expected.split(' ').next().unwrap());
    assert_eq!(
        shop.direct(
            1,
            &format!("SELECT count(*) FROM items WHERE NOT ({in_range})")
        ),
        "0",
        "nothing outside the moved buckets"
    );
    // Run again from the start after changes on the source: the target follows them.
    shop.direct(
        0,
        &format!(
            "DELETE FROM items WHERE line = 2 AND {in_range}; UPDATE items SET n = -1 WHERE {in_range}"
        ),
    );
    copy(Checkpoint::default(), usize::MAX).await;
    assert_eq!(shop.direct(1, &digest), shop.direct(0, &digest));

    // Verification: equal now; after the target is damaged, the damaged keys are found,
    // repaired, and the buckets compare equal again.
    use shardgate::reshard::verify::{compare, differing_keys, repair_all};
    let mut source = crate::harness::connect(&shop.shard_url(0)).await;
    let mut target = crate::harness::connect(&shop.shard_url(1)).await;
    assert_eq!(compare(&source, &target, &table).await.unwrap(), vec![]);
    let keys: Vec<String> = shop
        .direct(
            0,
            &format!("SELECT DISTINCT id FROM items WHERE {in_range} ORDER BY id LIMIT 3"),
        )
        .lines()
        .map(str::to_string)
        .collect();
    shop.direct(
        1,
        &format!(
            "UPDATE items SET name = 'changed' WHERE id = {0} AND line = 1;              DELETE FROM items WHERE id = {1} AND line = 3;              INSERT INTO items (id, line, name) VALUES ({2}, 99, 'extra')",
            keys[0], keys[1], keys[2]
        ),
    );
    let diffs = compare(&source, &target, &table).await.unwrap();
    assert!(!diffs.is_empty() && diffs.len() <= 3, "{diffs:?}");
    let buckets: Vec<u32> = diffs.iter().map(|d| d.bucket).collect();
    let by_bucket = differing_keys(&source, &target, &table, &buckets)
        .await
        .unwrap();
    assert_eq!(
        by_bucket.keys().copied().collect::<Vec<_>>(),
        buckets,
        "every differing bucket has its keys"
    );
    let mut found: Vec<String> = by_bucket.into_values().flatten().collect();
    found.sort_by_key(|k| k.parse::<i64>().unwrap());
    assert_eq!(found, keys, "exactly the damaged keys");
    let left = repair_all(&mut source, &mut target, &table, &found).await;
    assert_eq!(
        left.unwrap(),
        Vec::<String>::new(),
        "equal after the repair"
    );
    assert_eq!(compare(&source, &target, &table).await.unwrap(), vec![]);
    assert_eq!(shop.direct(1, &digest), shop.direct(0, &digest));
}

/// `shardgate reshard …` drives the same routes from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reshard_command_starts_shows_and_aborts_a_job() {
    let shop = shop().await;
    let admin = format!("http://{}", shop.admin_addr());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["reshard", "--admin", &admin, "--token", TOKEN])
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, out, err) = run(&["start", "--database", "app", "--move", "0-1:s1"]);
    assert!(ok, "{err}");
    let id: i64 = out
        .strip_prefix("job ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(out, format!("job {id} started: phase preflight\n"));
    let (ok, out, _) = run(&["status", &id.to_string()]);
    assert!(ok);
    assert!(
        out.starts_with(&format!(
            "job {id} · database app · phase preflight\n  buckets 0-1 : s0 → s1\n"
        )),
        "{out}"
    );
    let (ok, _, err) = run(&["cutover", &id.to_string()]);
    assert!(!ok);
    assert!(err.contains("409 wrong_phase: job"), "{err}");
    let (ok, out, _) = run(&["abort", &id.to_string()]);
    assert!(ok);
    assert_eq!(out, format!("job {id}: abort accepted, phase aborted\n"));
    let (ok, _, err) = run(&["start", "--database", "app", "--move", "0-5:s1"]);
    assert!(!ok);
    assert!(
        err.contains("400 bad_request: buckets 0-5: owned by"),
        "{err}"
    );
}

/// Dual-write's capture and copy: the rows of the moved buckets a committed transaction changed
/// (insert, update, delete), and only those, are marked on the source in that transaction and
/// copied to the target as their current images; nothing from a rolled-back transaction; a key
/// a writer holds waits for the next batch; a shadow side refuses clients' writes of the moved
/// buckets with 40001 but takes shardgate's copies; nothing once removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_marks_exactly_the_changed_rows_and_the_copy_brings_them_over() {
    use shardgate::config::KeyType;
    use shardgate::reshard::backfill::TableCopy;
    use shardgate::reshard::capture::{install_sql, remove_sql, role_sql, Role, SETUP_SQL};
    use shardgate::reshard::sync::{copy_changes, Batch};
    use shardgate::router::hash::{bucket_of, hash_int};
    let shop = shop().await;
    let moved = |k: &i64| bucket_of(hash_int(*k), 8) <= 1;
    let ins: Vec<i64> = (1..).filter(moved).take(4).collect();
    let out: i64 = (1..).find(|k| !moved(k)).unwrap();
    let users = TableCopy {
        table: "users".into(),
        key_column: "id".into(),
        primary_key: vec!["id".into()],
        key_type: KeyType::Bigint,
        buckets: 8,
        slice: shardgate::config::Slice::Buckets { first: 0, last: 1 },
    };
    let tables = [users.clone()];
    let mut s0 = crate::harness::connect(&shop.shard_url(0)).await;
    let mut s1 = crate::harness::connect(&shop.shard_url(1)).await;
    let seed = format!(
        "INSERT INTO users VALUES ({}, 'a'), ({}, 'b');",
        ins[1], ins[2]
    );
    s1.batch_execute(&format!("{seed} {SETUP_SQL}"))
        .await
        .unwrap();
    s0.batch_execute(&format!(
        "{seed} {SETUP_SQL}; {}; {}",
        role_sql(1, Role::Authoritative),
        install_sql(1, &users, "s1")
    ))
    .await
    .unwrap();
    s0.batch_execute(&format!(
        "BEGIN; INSERT INTO users VALUES ({0}, 'new'), ({out}, 'other'); \
         UPDATE users SET name = 'x' WHERE id = {1}; DELETE FROM users WHERE id = {2}; COMMIT; \
         BEGIN; INSERT INTO users VALUES ({3}, 'r'); ROLLBACK",
        ins[0], ins[1], ins[2], ins[3]
    ))
    .await
    .unwrap();
    let marks = "SELECT string_agg(sharding_key || ' ' || pk::text, ', ' ORDER BY id) \
                 FROM shardgate.reshard_changes";
    assert_eq!(
        shop.direct(0, marks),
        format!(
            "{0} {{\"id\": {0}}}, {1} {{\"id\": {1}}}, {1} {{\"id\": {1}}}, {2} {{\"id\": {2}}}",
            ins[0], ins[1], ins[2]
        ),
        "old and new row of the update; nothing of the other bucket or the rollback"
    );
    let copied = copy_changes(&mut s0, &mut s1, 1, &tables, 100);
    assert_eq!(
        copied.await.unwrap(),
        Batch {
            copied: 4,
            deferred: 0
        }
    );
    let rows = "SELECT string_agg(id || ' ' || name, ', ' ORDER BY id) FROM users";
    assert_eq!(
        shop.direct(1, rows),
        format!("{} new, {} x", ins[0], ins[1]),
        "exactly the moved rows"
    );
    assert_eq!(
        shop.direct(0, "SELECT count(*) FROM shardgate.reshard_changes"),
        "0"
    );

    // A key a writer holds is left for the next batch.
    let writer = crate::harness::connect(&shop.shard_url(0)).await;
    writer
        .batch_execute(&format!(
            "BEGIN; UPDATE users SET name = 'held' WHERE id = {}",
            ins[0]
        ))
        .await
        .unwrap();
    shop.direct(
        0,
        &format!("UPDATE users SET name = 'y' WHERE id = {}", ins[1]),
    );
    let copied = copy_changes(&mut s0, &mut s1, 1, &tables, 100).await;
    assert_eq!(
        copied.unwrap(),
        Batch {
            copied: 2,
            deferred: 0
        },
        "the writer's marks are not visible yet"
    );
    writer.batch_execute("COMMIT").await.unwrap();
    let copied = copy_changes(&mut s0, &mut s1, 1, &tables, 100).await;
    assert_eq!(
        copied.unwrap(),
        Batch {
            copied: 2,
            deferred: 0
        }
    );
    assert_eq!(
        shop.direct(1, rows),
        format!("{} held, {} y", ins[0], ins[1])
    );

    // A shadow side refuses a client's write of the moved buckets, takes shardgate's.
    s0.batch_execute(&role_sql(1, Role::Shadow)).await.unwrap();
    let refused = s0
        .batch_execute(&format!(
            "UPDATE users SET name = 'z' WHERE id = {}",
            ins[0]
        ))
        .await
        .unwrap_err();
    let db = refused.as_db_error().unwrap();
    assert_eq!(db.code().code(), "40001");
    assert_eq!(
        db.message(),
        "buckets 0-1 of table users moved to shard \"s1\" while this transaction was writing them"
    );
    s0.batch_execute(&format!("UPDATE users SET name = 'o' WHERE id = {out}"))
        .await
        .unwrap();
    s0.batch_execute(&format!(
        "BEGIN; SET LOCAL shardgate.syncing = 'on'; UPDATE users SET name = 'z' WHERE id = {}; COMMIT",
        ins[0]
    ))
    .await
    .unwrap();
    s0.batch_execute(&remove_sql("users")).await.unwrap();
    s0.batch_execute(&format!("INSERT INTO users VALUES ({}, 'after')", ins[3]))
        .await
        .unwrap();
    assert_eq!(
        shop.direct(0, "SELECT count(*) FROM shardgate.reshard_changes"),
        "0",
        "nothing marked by shardgate's own writes, nor once removed"
    );
}

/// A shard map persisted in the control database (what a cutover writes) is taken by every
/// shardgate sharing it — the running one within a second, a new one before it serves — a
/// config reload does not undo it, and a map that does not fit the config is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_map_is_taken_by_every_proxy_and_a_reload_keeps_it() {
    use shardgate::router::hash::{bucket_of, hash_int};
    let shop = shop().await;
    let admin = shop.admin_addr();
    let in_bucket_0: Vec<i64> = (1..)
        .filter(|k| bucket_of(hash_int(*k), 8) == 0)
        .take(3)
        .collect();
    shop.control(
        "INSERT INTO shardgate.epochs (database, epoch, map) VALUES ('app', 1, \
         '[{\"buckets\": \"0-1\", \"shard\": \"s1\"}, {\"buckets\": \"2-3\", \"shard\": \"s0\"}, \
           {\"buckets\": \"4-7\", \"shard\": \"s1\"}]')",
    );
    let map_epoch = || async { get(admin, "/v1/databases/app/shard-map").await.json() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while map_epoch().await["map_epoch"] != json!(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the map was never taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let shards = &map_epoch().await["shards"];
    assert_eq!(
        shards[1],
        json!({ "name": "s1", "buckets": ["0-1", "4-7"] })
    );
    let insert = |url: String, k: i64| async move {
        let c = crate::harness::connect(&url).await;
        c.execute("INSERT INTO users (id, name) VALUES ($1, 'moved')", &[&k])
            .await
            .unwrap();
    };
    let on = |shard: usize, k: i64| {
        shop.direct(shard, &format!("SELECT count(*) FROM users WHERE id = {k}"))
    };
    insert(shop.url(), in_bucket_0[0]).await;
    assert_eq!(
        (on(0, in_bucket_0[0]), on(1, in_bucket_0[0])),
        ("0".into(), "1".into())
    );
    // A reload of the file (which still has the old map) keeps the persisted one.
    shop.reload();
    insert(shop.url(), in_bucket_0[1]).await;
    assert_eq!(on(1, in_bucket_0[1]), "1");
    // A second shardgate takes it before it serves.
    let second = shardgate::proxy::Proxy::start(shop.config()).await.unwrap();
    let url = format!(
        "postgres://{}:{}@{}/app",
        crate::harness::USER,
        crate::harness::PASSWORD,
        second.addr()
    );
    insert(url, in_bucket_0[2]).await;
    assert_eq!(on(1, in_bucket_0[2]), "1");
    // A map naming a shard the config does not have is refused: the epoch-1 map stays.
    shop.control(
        "UPDATE shardgate.epochs SET epoch = 2, map = '[{\"buckets\": \"0-7\", \"shard\": \"s9\"}]'",
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(map_epoch().await["map_epoch"], json!(1));
    second.shutdown().await;
}

/// Cutover advances the new owner's sequences past the old owner's values in their own stride:
/// odd ids on one shard and even on the other stay so; a sequence already past is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_advance_past_the_old_owner_in_their_own_stride() {
    let shop = shop().await;
    shop.direct(
        0,
        "SET ROLE app; CREATE SEQUENCE odd INCREMENT BY 2 START 1; CREATE SEQUENCE one; \
         CREATE SEQUENCE past; SELECT nextval('odd') FROM generate_series(1, 5); \
         SELECT nextval('one') FROM generate_series(1, 7); SELECT nextval('past')",
    );
    shop.direct(
        1,
        "SET ROLE app; CREATE SEQUENCE odd INCREMENT BY 2 START 2; CREATE SEQUENCE one; \
         CREATE SEQUENCE past; SELECT setval('past', 100)",
    );
    let from = crate::harness::connect(&shop.shard_url(0)).await;
    let to = crate::harness::connect(&shop.shard_url(1)).await;
    for seq in ["odd", "one", "past"] {
        shardgate::reshard::cutover::advance_sequence(&from, &to, seq)
            .await
            .unwrap();
    }
    assert_eq!(
        shop.direct(
            1,
            "SELECT nextval('odd') || ' ' || nextval('one') || ' ' || nextval('past')"
        ),
        "10 8 101"
    );
}

/// Primary keys that are not unique across shards (`orders.id` is a sequence of each shard's
/// own): a copy would replace the target's row of another user with the same id. Backfill
/// refuses instead — the job waits in backfill, saying which key and why — and the target's
/// row stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_never_replaces_a_row_of_another_key() {
    let shop = shop().await;
    let moving = (1..).find(|k| crate::resharding::moved(*k)).unwrap();
    let staying = shop.keys_on(1).next().unwrap();
    let insert = |shard: usize, user: i64, total: i32| {
        shop.direct(
            shard,
            &format!("INSERT INTO orders (id, user_id, total) VALUES (5, {user}, {total})"),
        )
    };
    insert(0, moving, 1);
    insert(1, staying, 2);
    let started = post(shop.admin_addr(), "/v1/reshard", MOVE).await;
    assert_eq!(started.status, 202, "{}", started.json());
    let id = started.json()["id"].as_i64().unwrap();
    let since = std::time::Instant::now();
    let job = loop {
        let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
            .await
            .json();
        if job["error"].as_str().is_some_and(|e| e.contains("(5)")) {
            break job;
        }
        assert!(since.elapsed().as_secs() < 30, "no refusal: {job:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(job["phase"], "backfill", "{job:#}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("table orders: the receiving shard already has a row with primary key (5) whose sharding key is not moving"),
        "{job:#}"
    );
    let row = "SELECT user_id || ' ' || total FROM orders WHERE id = 5";
    assert_eq!(shop.direct(1, row), format!("{staying} 2"));
    let aborted = post(shop.admin_addr(), &format!("/v1/reshard/{id}/abort"), "").await;
    assert_eq!(aborted.status, 202, "{}", aborted.json());
}
