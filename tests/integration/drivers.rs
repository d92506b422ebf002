//! Real drivers through shardgate with a pool (2) smaller than their number of connections (6-8),
//! so the statements they prepare really do move between backends: psycopg 3, asyncpg, node-postgres
//! and JDBC. Each driver program lives in `tests/drivers/`, takes the proxy's URL, checks exact
//! values itself, prints exact lines that are asserted here, and exits non-zero on any mismatch.
//!
//! The drivers are installed by `.ci/install-drivers.sh`. A missing one fails its test with the
//! install instructions: these tests never pass by skipping.
//!
//! When a program fails through the proxy, the test runs it again directly against Postgres and
//! says in the failure whether the driver works there, which tells a shardgate bug from a broken
//! driver install.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::one;
use crate::harness::{Env, Options, PASSWORD, USER};
use crate::programs::{compile_java, drivers_dir, python, require, require_python_module, Program};

/// Runs a driver program against the proxy (its URL, port, user and password substituted for
/// `{url}`, `{port}`, `{user}`, `{password}` in `args`), requires exit 0 and every line of
/// `expected` in its output, in order. On failure it reruns the program directly against Postgres
/// to tell which side is broken.
async fn run_driver(
    env: &Env,
    name: &str,
    program: &str,
    args: &[&str],
    cwd: PathBuf,
    expected: &[&str],
) -> String {
    let fill = |url: &str, port: u16, user: &str, password: &str| -> Vec<String> {
        args.iter()
            .map(|a| {
                a.replace("{url}", url)
                    .replace("{port}", &port.to_string())
                    .replace("{user}", user)
                    .replace("{password}", password)
            })
            .collect()
    };
    Program {
        name,
        program,
        cwd,
        dir: env.dir.path().to_owned(),
        through_proxy: fill(&env.url(), env.port(), USER, PASSWORD),
        direct: fill(
            &env.pg.url("app"),
            env.pg.port(),
            env.pg.superuser(),
            env.pg.password(),
        ),
    }
    .run(expected)
    .await
}

fn options() -> Options {
    Options {
        pool_size: 2,
        // Six to eight clients share two backends on a 2-core machine: a client may wait a while.
        checkout_timeout_ms: 30_000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_psycopg3() {
    require_python_module("psycopg", "psycopg[binary]==3.3.9");
    let env = Env::start_with(options()).await;
    let script = drivers_dir().join("python/psycopg_test.py");
    run_driver(
        &env,
        "psycopg",
        &python(),
        &[script.to_str().unwrap(), "{url}"],
        drivers_dir(),
        &[
            "autoprepare: 6 connections x 20 runs ok, 1 prepared statement each",
            "pipeline: 6 connections x 50 statements ok",
            "executemany: 200 rows",
            "rollback: 200 rows after rollback",
            "failed transaction: 22012 then 25P02, rollback ok",
            "moved: True",
            "OK",
        ],
    )
    .await;
    // What the program left behind, read directly on the server.
    assert_eq!(
        env.direct(
            "select count(*), count(distinct conn) from pg_items; select count(*) from pg_pipe"
        ),
        "200|6\n300"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_asyncpg() {
    require_python_module("asyncpg", "asyncpg==0.32.0");
    let env = Env::start_with(options()).await;
    let script = drivers_dir().join("python/asyncpg_test.py");
    run_driver(
        &env,
        "asyncpg",
        &python(),
        &[
            script.to_str().unwrap(),
            "{url}",
            "cached",
            "prepare",
            "introspection",
            "copy",
            "nocache",
        ],
        drivers_dir(),
        &[
            "cached statements: 8 connections x 50 runs ok",
            "explicit prepare: 8 connections x 20 transactions ok, 22003 then 25P02",
            "introspection: enum, composite and arrays ok on 8 connections",
            "copy_records_to_table and executemany: 800 rows",
            "statement_cache_size=0: 8 connections ok",
            "moved: True",
            "OK",
        ],
    )
    .await;
    assert_eq!(
        env.direct(
            "select count(*) from ap_items; select count(*), count(distinct conn) from ap_copy"
        ),
        "80\n800|8"
    );
}

/// asyncpg's unnamed statement across a Sync (a bug found here, now fixed). For a query it
/// does not cache (longer than 15 KiB) asyncpg sends Parse("")/Describe/Flush; when the statement
/// has types the connection has not seen, it runs its introspection query (which ends with a
/// Sync, so shardgate gives the backend back), then sends Bind("")/Execute/Sync. That Bind lands
/// on whatever backend is free, whose unnamed statement is someone else's: asyncpg gets
/// `incorrect binary data format in bind parameter 1` (08P01/22P03) or
/// `unnamed prepared statement does not exist` (26000), or, when the parameter types happen to
/// fit, silently runs another client's SQL. Directly against Postgres the program passes. Now
/// shardgate carries each client's unnamed statement with it. Minimal reproduction:
/// [`drivers_repro_unnamed_statement_is_the_clients_own`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_asyncpg_unnamed_statement_across_sync() {
    require_python_module("asyncpg", "asyncpg==0.32.0");
    let env = Env::start_with(options()).await;
    let script = drivers_dir().join("python/asyncpg_test.py");
    run_driver(
        &env,
        "asyncpg-unnamed",
        &python(),
        &[script.to_str().unwrap(), "{url}", "unnamed"],
        drivers_dir(),
        &["unnamed statement across a Flush: 8 connections ok", "OK"],
    )
    .await;
}

/// Minimal reproduction of what asyncpg hit (`prepared statement "__sg_N" does not exist`): a
/// Parse that Postgres refuses (here because the transaction is aborted) left shardgate believing
/// the backend had the statement, so the next Parse of that text on that backend was answered
/// with a synthetic ParseComplete and the Describe that followed failed with 26000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_repro_refused_parse_is_not_prepared_on_the_backend() {
    let env = Env::start_with(Options {
        pool_size: 1,
        ..Default::default()
    })
    .await;
    let c = env.connect().await;
    c.batch_execute("begin").await.unwrap();
    let e = c.batch_execute("select 1/0").await.unwrap_err();
    assert_eq!(crate::harness::db_error(&e).0, "22012");
    let e = c.prepare("select 42").await.unwrap_err();
    assert_eq!(
        crate::harness::db_error(&e).0,
        "25P02",
        "Parse in an aborted transaction"
    );
    c.batch_execute("rollback").await.unwrap();
    // Same (only) backend, transaction over: Postgres prepares the statement now.
    let s = c
        .prepare("select 42")
        .await
        .unwrap_or_else(|e| panic!("prepare after rollback: {e:?}"));
    assert_eq!(c.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 42);
}

/// Minimal reproduction of the asyncpg failure above, with the raw protocol. In Postgres the
/// unnamed statement lives until the next Parse("") or simple Query *of that session*, across
/// Syncs. Through shardgate (pool of 1), client A's Parse("")+Sync is followed by client B's
/// Parse("")+Sync on the same backend, and A's later Bind("") runs B's statement.
/// Before the fix A got `B-secret:x`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_repro_unnamed_statement_is_the_clients_own() {
    use postgres_protocol::message::frontend;
    let env = Env::start_with(Options {
        pool_size: 1,
        ..Default::default()
    })
    .await;
    let mut a = raw::session(&env).await;
    let mut b = raw::session(&env).await;
    let parse = |sql: &str| {
        let mut out = bytes::BytesMut::new();
        frontend::parse("", sql, [25u32], &mut out).unwrap();
        frontend::sync(&mut out);
        out
    };
    assert_eq!(
        raw::exchange(&mut a, &parse("select 'A:' || $1")).await,
        "1 Z"
    );
    assert_eq!(
        raw::exchange(&mut b, &parse("select 'B-secret:' || $1")).await,
        "1 Z"
    );
    let mut out = bytes::BytesMut::new();
    frontend::bind(
        "",
        "",
        [0i16],
        [Some("x")],
        |v, buf| {
            buf.extend_from_slice(v.unwrap().as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        [0i16],
        &mut out,
    )
    .map_err(|_| ())
    .unwrap();
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(
        raw::exchange(&mut a, &out).await,
        "2 D(A:x) C Z",
        "client A's Bind(\"\") must run A's own unnamed statement, as it does in Postgres"
    );
}

/// Minimal reproduction of the psycopg pipeline failure (`cannot exit pipeline mode while busy`):
/// a pipelining client gets an error back before its Sync has reached shardgate. The backend then
/// ignores everything up to that Sync; shardgate expected replies to the messages sent in between,
/// took the Sync's ReadyForQuery for a desync and closed the client with XX000. Fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_repro_error_before_the_sync_was_sent() {
    use postgres_protocol::message::frontend;
    let env = Env::start_with(Options {
        pool_size: 1,
        ..Default::default()
    })
    .await;
    let mut a = raw::session(&env).await;
    let unnamed = |sql: &str, out: &mut bytes::BytesMut| {
        frontend::parse("", sql, [], out).unwrap();
        frontend::bind(
            "",
            "",
            [],
            [] as [Option<&str>; 0],
            |_, _| Ok(postgres_protocol::IsNull::No),
            [],
            out,
        )
        .map_err(|_| ())
        .unwrap();
        frontend::execute("", 0, out).unwrap();
    };
    for _ in 0..3 {
        let mut out = bytes::BytesMut::new();
        unnamed("select 1/0", &mut out);
        frontend::flush(&mut out);
        assert_eq!(
            raw::exchange_until(&mut a, &out, true).await,
            "1 E(22012 division by zero)"
        );
        let mut out = bytes::BytesMut::new();
        unnamed("select 2", &mut out);
        frontend::sync(&mut out);
        assert_eq!(
            raw::exchange(&mut a, &out).await,
            "Z",
            "Postgres skips to the Sync and answers it alone"
        );
        // The backend is usable afterwards, for this client and another one.
        let mut out = bytes::BytesMut::new();
        unnamed("select 3", &mut out);
        frontend::sync(&mut out);
        assert_eq!(raw::exchange(&mut a, &out).await, "1 2 D(3) C Z");
        let b = env.connect().await;
        assert_eq!(one::<i32>(&b, "select 4").await, 4);
    }
}

/// Just enough of a raw protocol client for the reproductions above.
mod raw {
    use bytes::BytesMut;
    use postgres_protocol::message::backend::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::harness::Env;

    /// A logged-in raw connection through the proxy (the same login as the wire oracle's).
    pub async fn session(env: &Env) -> TcpStream {
        crate::wire::Raw::login(env.port()).await.into_stream()
    }

    pub async fn exchange(s: &mut TcpStream, msgs: &[u8]) -> String {
        exchange_until(s, msgs, false).await
    }

    /// As [`exchange`], also stopping after an ErrorResponse when `stop_at_error`.
    pub async fn exchange_until(s: &mut TcpStream, msgs: &[u8], stop_at_error: bool) -> String {
        use fallible_iterator::FallibleIterator;
        s.write_all(msgs).await.unwrap();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        loop {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_buf(&mut buf))
                .await
                .expect("reply within 10s")
                .unwrap();
            assert!(n > 0, "connection closed; got so far: {got:?}");
            while let Some(msg) = Message::parse(&mut buf).unwrap() {
                got.push(match msg {
                    Message::ParseComplete => "1".to_string(),
                    Message::BindComplete => "2".to_string(),
                    Message::DataRow(row) => {
                        let buf = row.buffer();
                        let cols: Vec<String> = row
                            .ranges()
                            .map(|r| {
                                Ok(r.map_or("NULL".into(), |r| {
                                    String::from_utf8_lossy(&buf[r]).into_owned()
                                }))
                            })
                            .collect()
                            .unwrap();
                        format!("D({})", cols.join(","))
                    }
                    Message::CommandComplete(_) => "C".to_string(),
                    Message::ErrorResponse(e) => {
                        let mut fields = e.fields();
                        let (mut code, mut text) = (String::new(), String::new());
                        while let Some(f) = fields.next().unwrap() {
                            match f.type_() {
                                b'C' => {
                                    code = String::from_utf8_lossy(f.value_bytes()).into_owned()
                                }
                                b'M' => {
                                    text = String::from_utf8_lossy(f.value_bytes()).into_owned()
                                }
                                _ => {}
                            }
                        }
                        if stop_at_error {
                            got.push(format!("E({code} {text})"));
                            return got.join(" ");
                        }
                        format!("E({code} {text})")
                    }
                    Message::ReadyForQuery(_) => {
                        got.push("Z".to_string());
                        return got.join(" ");
                    }
                    other => format!("?{}", msg_name(&other)),
                });
            }
        }
    }

    fn msg_name(m: &Message) -> &'static str {
        match m {
            Message::NoData => "NoData",
            Message::RowDescription(_) => "RowDescription",
            Message::ParameterDescription(_) => "ParameterDescription",
            Message::NoticeResponse(_) => "Notice",
            Message::ParameterStatus(_) => "ParameterStatus",
            _ => "other",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_node_pg() {
    let node_dir = drivers_dir().join("node");
    require(
        "Node.js (`node`)",
        Command::new("node").arg("--version"),
        "`apt-get install -y nodejs npm`",
    );
    require(
        "the npm package `pg` in tests/drivers/node/node_modules",
        Command::new("node")
            .args(["-e", "require('pg')"])
            .current_dir(&node_dir),
        "`npm ci` in tests/drivers/node",
    );
    let env = Env::start_with(options()).await;
    run_driver(
        &env,
        "node-pg",
        "node",
        &["pg_test.js", "{url}"],
        node_dir,
        &[
            "named statements: 8 clients x 50 runs ok",
            "transactions: 8 clients commit and rollback ok",
            "errors: 23505 node_items_pkey, 22012, 25P02, 42P01",
            "pool.query: 200 concurrent ok, 400 rows",
            "moved: true",
            "OK",
        ],
    )
    .await;
    assert_eq!(
        env.direct("select count(*), count(distinct client), count(*) filter (where name like 'tx%') from node_items"),
        "400|8|40"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_jdbc() {
    let env = Env::start_with(options()).await;
    let classes = env.dir.path().join("jdbc-classes");
    let cp = compile_java(drivers_dir().join("java/PgJdbcTest.java"), classes).await;
    run_driver(
        &env,
        "jdbc",
        "java",
        &[
            "-cp",
            &cp,
            "PgJdbcTest",
            "127.0.0.1",
            "{port}",
            "{user}",
            "{password}",
        ],
        drivers_dir(),
        &[
            "prepared: 8 connections x 50 runs, server-prepared",
            "batch: 8 connections x 500 rows",
            "transactions: commit, rollback, failed batch 23505 then 25P02, 22012",
            "counts: 4000 rows, 80 updated",
            "moved: true",
            "OK",
        ],
    )
    .await;
    assert_eq!(
        env.direct("select count(*), count(distinct thread) from jdbc_items"),
        "4000|8"
    );
}
