//! The Postgres protocol through shardgate: simple and extended queries, pipelining, COPY,
//! notices, errors and transaction states, exactly as Postgres itself answers them.

use futures_util::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::SimpleQueryMessage;

use crate::harness::one;
use crate::harness::{db_error, Env};

async fn setting(c: &tokio_postgres::Client, name: &str) -> String {
    c.query_one("select current_setting($1)", &[&name])
        .await
        .unwrap()
        .get(0)
}

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

fn completions(msgs: &[SimpleQueryMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_multi_statement_and_empty() {
    let env = Env::start().await;
    let c = env.connect().await;
    let msgs = c
        .simple_query("create table t (id int primary key, v text); insert into t values (1,'a'),(2,'b'); select v from t order by id")
        .await
        .unwrap();
    assert_eq!(
        rows(&msgs),
        vec![vec![Some("a".to_owned())], vec![Some("b".to_owned())]]
    );
    assert_eq!(completions(&msgs), vec![0, 2, 2]);
    // An empty query and bare semicolons: EmptyQueryResponse, no rows, no error.
    // Empty queries and bare semicolons answer as Postgres answers them directly.
    let direct = crate::harness::connect(&env.pg.url("app")).await;
    for empty in ["", ";", " ; ;", "select 1;;select 2"] {
        let via_proxy = c.simple_query(empty).await.unwrap();
        let via_direct = direct.simple_query(empty).await.unwrap();
        assert_eq!(rows(&via_proxy), rows(&via_direct), "{empty:?}");
        assert_eq!(
            completions(&via_proxy),
            completions(&via_direct),
            "{empty:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_failed_transaction_state_are_exactly_postgres() {
    let env = Env::start().await;
    let c = env.connect().await;
    c.batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    let e = c
        .simple_query("insert into t values (1); insert into t values (1)")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "23505");
    // The implicit transaction rolled back both inserts.
    assert_eq!(
        rows(&c.simple_query("select count(*) from t").await.unwrap()),
        vec![vec![Some("0".into())]]
    );
    c.batch_execute("begin").await.unwrap();
    let e = c.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        ("22012".to_owned(), "division by zero".to_owned())
    );
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "25P02".to_owned(),
            "current transaction is aborted, commands ignored until end of transaction block"
                .to_owned()
        )
    );
    let msgs = c.simple_query("rollback").await.unwrap();
    assert_eq!(completions(&msgs), vec![0]);
    assert_eq!(
        rows(&c.simple_query("select 2").await.unwrap()),
        vec![vec![Some("2".into())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_pass_through() {
    let env = Env::start().await;
    let (c, mut conn) = tokio_postgres::connect(&env.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        pin_mut!(stream);
        while let Some(Ok(tokio_postgres::AsyncMessage::Notice(n))) = stream.next().await {
            let _ = tx.send(n.message().to_owned());
        }
    });
    c.batch_execute("do $$ begin raise notice 'hello from %', 'plpgsql'; end $$")
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), "hello from plpgsql");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_move_between_backends_and_pipeline() {
    // Six clients on a pool of two: every client's statements must follow it to whichever
    // backend serves its next transaction.
    let env = Env::start().await;
    let setup = env.connect().await;
    setup.batch_execute("create table kv (k int primary key, v int); insert into kv select g, g * 10 from generate_series(1, 100) g").await.unwrap();
    let mut tasks = Vec::new();
    let all_ready = std::sync::Arc::new(tokio::sync::Barrier::new(6));
    for client_no in 0..6 {
        let url = env.url();
        let all_ready = all_ready.clone();
        tasks.push(tokio::spawn(async move {
            let c = crate::harness::connect(&url).await;
            let get = c.prepare("select v from kv where k = $1").await.unwrap();
            let pid = c.prepare("select pg_backend_pid()").await.unwrap();
            let mut pids = std::collections::HashSet::new();
            all_ready.wait().await;
            for round in 0..100 {
                let k = 1 + (client_no * 7 + round) % 100;
                // Pipelined: both queries are in flight before either answer is read.
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&k];
                let (a, b) = tokio::join!(c.query_one(&get, &params), c.query_one(&pid, &[]));
                assert_eq!(a.unwrap().get::<_, i32>(0), k * 10);
                pids.insert(b.unwrap().get::<_, i32>(0));
            }
            pids.len()
        }));
    }
    // Concurrency here is the stress; that statements really move is proven deterministically
    // in `a_statement_is_prepared_again_on_the_backend_a_client_moves_to`.
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_transaction_holds_one_backend_until_commit() {
    let env = Env::start().await;
    let mut c = env.connect().await;
    let other = env.connect().await;
    c.batch_execute("create table t (id int)").await.unwrap();
    let tx = c.transaction().await.unwrap();
    let pid1: i32 = tx
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Another client's traffic in between must not take this backend.
    for _ in 0..10 {
        other.query_one("select 1", &[]).await.unwrap();
    }
    tx.execute("insert into t values (1)", &[]).await.unwrap();
    let pid2: i32 = tx
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid1, pid2);
    tx.commit().await.unwrap();
    assert_eq!(one::<i64>(&other, "select count(*) from t").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let env = Env::start().await;
    let c = env.connect().await;
    c.batch_execute("create table t (id int, name text)")
        .await
        .unwrap();
    let sink = c.copy_in("copy t from stdin (format csv)").await.unwrap();
    pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1,one\n2,two\n"))
        .await
        .unwrap();
    sink.send(bytes::Bytes::from_static(b"3,\"th,ree\"\n"))
        .await
        .unwrap();
    assert_eq!(sink.as_mut().finish().await.unwrap(), 3);
    let out: Vec<bytes::Bytes> = c
        .copy_out("copy (select * from t order by id) to stdout")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.concat(), b"1\tone\n2\ttwo\n3\tth,ree\n");
    // A failing COPY leaves the connection usable.
    let sink = c.copy_in("copy t from stdin").await.unwrap();
    pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not a number\tx\n"))
        .await
        .unwrap();
    let e = sink.as_mut().finish().await.unwrap_err();
    assert_eq!(db_error(&e).0, "22P02");
    assert_eq!(one::<i64>(&c, "select count(*) from t").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_and_never_leak() {
    let env = Env::start_with(crate::harness::Options {
        pool_size: 1,
        ..Default::default()
    })
    .await;
    let url = format!(
        "{}?application_name=alpha&options=-c%20search_path%3Dalpha_schema,public",
        env.url()
    );
    let a = crate::harness::connect(&url).await;
    let b = env.connect().await;
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'; SET extra_float_digits = 3")
        .await
        .unwrap();
    let show = "select current_setting('TimeZone'), current_setting('application_name'), current_setting('search_path'), current_setting('extra_float_digits')";
    for _ in 0..3 {
        // One backend only: every query alternates between the two clients' settings.
        let ra = a.query_one(show, &[]).await.unwrap();
        let rb = b.query_one(show, &[]).await.unwrap();
        let get =
            |r: &tokio_postgres::Row| (0..4).map(|i| r.get::<_, String>(i)).collect::<Vec<_>>();
        assert_eq!(
            get(&ra),
            vec!["Asia/Tokyo", "alpha", "alpha_schema,public", "3"]
        );
        assert_eq!(
            get(&rb),
            vec!["Etc/UTC", "shardgate", "\"$user\", public", "1"]
        );
    }
    // A SET in a rolled-back transaction does not stick; RESET falls back to the startup value.
    a.batch_execute("begin; set application_name = 'beta'; rollback")
        .await
        .unwrap();
    assert_eq!(setting(&a, "application_name").await, "alpha");
    a.batch_execute("set application_name = 'beta'")
        .await
        .unwrap();
    assert_eq!(setting(&a, "application_name").await, "beta");
    a.batch_execute("reset application_name").await.unwrap();
    assert_eq!(setting(&a, "application_name").await, "alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_sql_prepare_are_refused_in_transaction_mode() {
    let env = Env::start().await;
    let c = env.connect().await;
    let e = c.batch_execute("LISTEN jobs").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "0A000".to_owned(),
            "LISTEN is not supported in transaction pooling mode".to_owned()
        )
    );
    let e = c.batch_execute("PREPARE q AS SELECT 1").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "0A000".to_owned(),
            "PREPARE is not supported in transaction pooling mode".to_owned()
        )
    );
    assert_eq!(one::<i32>(&c, "select 1").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_listen_and_sql_prepare() {
    let env = Env::start_with(crate::harness::Options {
        mode: "session",
        ..Default::default()
    })
    .await;
    let c = env.connect().await;
    c.batch_execute("LISTEN jobs; PREPARE q AS SELECT 41 + 1")
        .await
        .unwrap();
    assert_eq!(
        rows(&c.simple_query("EXECUTE q").await.unwrap()),
        vec![vec![Some("42".into())]]
    );
    let pid1: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let pid2: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid1, pid2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_and_close_are_honoured() {
    let env = Env::start().await;
    let c = env.connect().await;
    let s = c.prepare("select 7").await.unwrap();
    assert_eq!(c.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 7);
    drop(s); // tokio-postgres sends Close for the statement
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    let e = c.batch_execute("DEALLOCATE nosuch").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "26000".to_owned(),
            "prepared statement \"nosuch\" does not exist".to_owned()
        )
    );
    // The same text prepared again after DEALLOCATE ALL must run: had DEALLOCATE ALL reached the
    // server, its copy of the statement would be gone while shardgate still counted on it.
    for _ in 0..3 {
        let s = c.prepare("select 7").await.unwrap();
        assert_eq!(c.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_running_query() {
    let env = Env::start().await;
    let c = env.connect().await;
    let token = c.cancel_token();
    let started = std::time::Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let e = c.simple_query("select pg_sleep(20)").await.unwrap_err();
    canceller.await.unwrap();
    assert_eq!(
        db_error(&e),
        (
            "57014".to_owned(),
            "canceling statement due to user request".to_owned()
        )
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // tokio-postgres returns at the ErrorResponse, before the ReadyForQuery (Postgres flushes an
    // error on its own): until that arrives the query is still running and a cancel would be
    // forwarded, as Postgres itself would take it. A finished query makes the client idle.
    assert_eq!(one::<i32>(&c, "select 1").await, 1);
    // A cancel while idle is ignored safely.
    c.cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap();
    assert_eq!(one::<i32>(&c, "select 1").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrackable_session_state_never_reaches_another_client() {
    let env = Env::start_with(crate::harness::Options {
        pool_size: 1,
        ..Default::default()
    })
    .await;
    let a = env.connect().await;
    let b = env.connect().await;
    // set_config is not followed, but it must not leak: the next client gets a reset backend.
    a.query_one(
        "select set_config('application_name', 'leaked', false)",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(setting(&b, "application_name").await, "shardgate");
    // Session-level state that cannot follow a client is refused, in both protocols.
    for sql in ["select pg_advisory_lock(1)", "create temp table t (id int)"] {
        let e = a.simple_query(sql).await.unwrap_err();
        assert_eq!(db_error(&e).0, "0A000", "{sql} (simple)");
        let e = a.query(sql, &[]).await.unwrap_err();
        assert_eq!(db_error(&e).0, "0A000", "{sql} (extended)");
    }
    let e = a
        .query("select pg_advisory_lock(1)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e).1,
        "a session-level advisory lock is not supported in transaction pooling mode"
    );
    // What ends with the transaction is fine.
    a.batch_execute("begin; select pg_advisory_xact_lock(1); create temp table t (id int) on commit drop; commit")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_startup_setting_fails_the_login_and_leaves_no_trace() {
    let env = Env::start_with(crate::harness::Options {
        pool_size: 1,
        ..Default::default()
    })
    .await;
    let bad = format!("{}?options=-c%20TimeZone%3DNowhere%2FNope", env.url());
    let e = tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let (code, message) = db_error(&e);
    assert_eq!(code, "08P01");
    assert!(
        message.starts_with("invalid startup parameter: invalid value for parameter \"TimeZone\""),
        "{message}"
    );
    // The same (only) server connection then serves a good client with exactly its settings.
    let good = crate::harness::connect(&format!(
        "{}?options=-c%20TimeZone%3DAsia%2FTokyo",
        env.url()
    ))
    .await;
    assert_eq!(setting(&good, "TimeZone").await, "Asia/Tokyo");
    let plain = env.connect().await;
    assert_eq!(setting(&plain, "TimeZone").await, "Etc/UTC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_prepared_again_on_the_backend_a_client_moves_to() {
    let env = Env::start_with(crate::harness::Options {
        pool_size: 2,
        ..Default::default()
    })
    .await;
    let a = env.connect().await;
    let other = env.connect().await;
    // Prepared (and run) on the backend A gets first; A then gives it back.
    let stmt = a.prepare("select pg_backend_pid()").await.unwrap();
    let first: i32 = a.query_one(&stmt, &[]).await.unwrap().get(0);
    let mut seen = std::collections::HashSet::from([first]);
    for _ in 0..5 {
        // Another client's open transaction takes a backend — the one A just gave back, which
        // is the most recently used — so A's statement must run on the other one.
        other.batch_execute("begin; select 1").await.unwrap();
        seen.insert(a.query_one(&stmt, &[]).await.unwrap().get(0));
        other.batch_execute("commit").await.unwrap();
    }
    assert!(
        seen.len() > 1,
        "A always ran on backend {seen:?}: the statement never had to move"
    );
}
