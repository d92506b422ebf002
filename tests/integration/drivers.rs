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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, Options};

const INSTALL: &str = "run `bash .ci/install-drivers.sh` (as root) to install the drivers";
/// A driver program that takes longer than this has hung; it is killed and the test fails.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

fn python() -> String {
    std::env::var("DRIVERS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fails the test, with how to install it, unless `cmd` runs and exits 0.
fn require(what: &str, cmd: &mut Command, how: &str) {
    let ok = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{what} is required for this test but is missing: {how}; or {INSTALL}");
}

fn require_python_module(module: &str, pip: &str) {
    require(
        &format!("Python module `{module}` (for `{}`)", python()),
        Command::new(python()).args(["-c", &format!("import {module}")]),
        &format!("`{} -m pip install \"{pip}\"`", python()),
    );
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `program` with `args`, output to files in `dir`, killing it after [`PROGRAM_TIMEOUT`].
fn run_program(dir: &Path, tag: &str, program: &str, args: &[String], cwd: &Path) -> Ran {
    let out_path = dir.join(format!("{tag}.stdout"));
    let err_path = dir.join(format!("{tag}.stderr"));
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {INSTALL}"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for driver program") {
            break Some(status);
        }
        if start.elapsed() > PROGRAM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n[killed after {PROGRAM_TIMEOUT:?}: the program hung]"));
    }
    Ran {
        ok: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr,
        elapsed: start.elapsed(),
    }
}

/// Runs a driver program against the proxy (its URL or port substituted for `{url}`/`{port}` in
/// `args`), requires exit 0 and every line of `expected` in its output, in order. On failure it
/// reruns the program directly against Postgres to tell which side is broken.
async fn run_driver(
    env: &Env,
    name: &str,
    program: &str,
    args: &[&str],
    cwd: PathBuf,
    expected: &[&str],
) -> String {
    let dir = env.dir.path().to_owned();
    let fill = |url: &str, port: u16| -> Vec<String> {
        args.iter()
            .map(|a| a.replace("{url}", url).replace("{port}", &port.to_string()))
            .collect()
    };
    let proxy_args = fill(&env.url(), env.port());
    let direct_args = fill(&env.pg.url("app"), env.pg.port());
    let (program, name_owned) = (program.to_owned(), name.to_owned());
    let (d, p, c) = (dir.clone(), program.clone(), cwd.clone());
    let ran = tokio::task::spawn_blocking(move || run_program(&d, &name_owned, &p, &proxy_args, &c))
        .await
        .unwrap();
    eprintln!(
        "{name}: {:.1}s through shardgate\n--- stdout\n{}--- stderr\n{}",
        ran.elapsed.as_secs_f64(),
        ran.stdout,
        ran.stderr
    );
    let missing: Vec<&str> = missing_lines(&ran.stdout, expected);
    if ran.ok && missing.is_empty() {
        return ran.stdout;
    }
    let tag = format!("{name}-direct");
    let direct = tokio::task::spawn_blocking(move || run_program(&dir, &tag, &program, &direct_args, &cwd))
        .await
        .unwrap();
    let verdict = if direct.ok {
        "It PASSES directly against Postgres (same program, superuser URL): a shardgate bug."
    } else {
        "It FAILS directly against Postgres too: the driver or its install is broken, not (only) shardgate."
    };
    panic!(
        "{name} through shardgate: exit {}, missing lines {missing:?}.\n{verdict}\n\
         --- through shardgate, stdout:\n{}\n--- stderr:\n{}\n\
         --- directly, stdout:\n{}\n--- stderr:\n{}",
        if ran.ok { "0" } else { "non-zero" },
        ran.stdout,
        ran.stderr,
        direct.stdout,
        direct.stderr
    );
}

/// Lines of `expected` not found in `out`, in order.
fn missing_lines<'a>(out: &str, expected: &[&'a str]) -> Vec<&'a str> {
    let mut lines = out.lines();
    let mut missing = Vec::new();
    for want in expected {
        if !lines.by_ref().any(|l| l == *want) {
            missing.push(*want);
            lines = out.lines();
        }
    }
    missing
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
        env.direct("select count(*), count(distinct conn) from pg_items; select count(*) from pg_pipe"),
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
        &[script.to_str().unwrap(), "{url}"],
        drivers_dir(),
        &[
            "cached statements: 8 connections x 50 runs ok",
            "explicit prepare: 8 connections x 20 transactions ok, 22003 then 25P02",
            "introspection: enum, composite and arrays ok on 8 connections",
            "copy_records_to_table and executemany: 800 rows",
            "statement_cache_size=0: 8 connections ok",
            "unnamed statement across a Flush: 8 connections ok",
            "moved: True",
            "OK",
        ],
    )
    .await;
    assert_eq!(
        env.direct("select count(*) from ap_items; select count(*), count(distinct conn) from ap_copy"),
        "80\n800|8"
    );
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
