//! Faults provoked for real: a backend killed mid-query, a client gone mid-transaction, an
//! exhausted pool, too many clients, garbage and oversized messages, bad logins.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::one;
use crate::harness::{connect, db_error, Env, Options, PASSWORD, USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_query_gives_08006_and_the_next_query_works() {
    let env = Env::start().await;
    let c = env.connect().await;
    let pid: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let killer = {
        let url = env.pg.url("app");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let admin = connect(&url).await;
            // The pool may have moved the client: kill whichever backend runs pg_sleep.
            admin
                .execute("select pg_terminate_backend(pid) from pg_stat_activity where query like 'select pg_sleep(30)%'", &[])
                .await
                .unwrap()
        })
    };
    let e = c.simple_query("select pg_sleep(30)").await.unwrap_err();
    assert_eq!(killer.await.unwrap(), 1);
    let (code, message) = db_error(&e);
    assert_eq!(code, "08006");
    assert!(message.starts_with("connection to shard \"s0\" was lost: terminating connection due to administrator command"), "{message}");
    let pid2: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(pid2 != 0);
    let _ = pid;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_inside_a_transaction_refuses_the_rest_of_it() {
    let env = Env::start().await;
    let c = env.connect().await;
    c.batch_execute("create table t (id int)").await.unwrap();
    c.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();
    let admin = connect(&env.pg.url("app")).await;
    let killed: i64 = admin
        .query_one("select count(pg_terminate_backend(pid)) from pg_stat_activity where state = 'idle in transaction'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next statement was meant for the dead transaction: it must not run outside it.
    let e = c
        .batch_execute("insert into t values (2); commit")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "08006");
    assert_eq!(one::<i64>(&c, "select count(*) from t").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_transaction_leaves_no_lock() {
    let env = Env::start().await;
    let setup = env.connect().await;
    setup
        .batch_execute("create table t (id int primary key, n int); insert into t values (1, 0)")
        .await
        .unwrap();
    {
        let c = env.connect().await;
        c.batch_execute("begin; select * from t where id = 1 for update")
            .await
            .unwrap();
        // Dropping the client closes its socket mid-transaction.
    }
    let other = env.connect().await;
    other
        .batch_execute("set statement_timeout = '5s'")
        .await
        .unwrap();
    let updated = other
        .execute("update t set n = n + 1 where id = 1", &[])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    let open: i64 = connect(&env.pg.url("app"))
        .await
        .query_one(
            "select count(*) from pg_stat_activity where state like 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_gives_53300_after_the_checkout_timeout() {
    waiter_gets_53300(
        1,
        |_| (),
        "shardgate: no connection to shard \"s0\" became free within 300ms (pool size 1)",
    )
    .await;
}

/// A server that stops accepting connections (its postmaster is stopped; the backends it already
/// forked go on serving) fails a checkout that needs a new connection with 53300 saying so, not
/// with the busy pool's message; once it accepts again, the client's next query works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slow_to_accept_fails_the_checkout_with_53300_naming_the_new_connection() {
    waiter_gets_53300(
        2,
        |env| StoppedPostmaster::stop(&env.pg),
        "shardgate: no new connection to shard \"s0\" opened within 300ms",
    )
    .await;
}

/// A waiter and a holder on a pool of `pool_size` with a checkout timeout of 300 ms. Logging in
/// checks the client's startup settings on a backend, so both logins use the one connection
/// opened for the first, and the holder keeps it in an open transaction. `stall` runs before the
/// waiter's query, and what it returns is dropped after: the query fails with 53300 and
/// `message`, and once the holder commits, the waiter's next query works.
async fn waiter_gets_53300<G>(pool_size: u32, stall: impl FnOnce(&Env) -> G, message: &str) {
    let env = Env::start_with(Options {
        pool_size,
        checkout_timeout_ms: 300,
        ..Default::default()
    })
    .await;
    let waiter = env.connect().await;
    let holder = env.connect().await;
    holder.batch_execute("begin; select 1").await.unwrap();
    let stalled = stall(&env);
    let e = waiter.simple_query("select 1").await.unwrap_err();
    assert_eq!(db_error(&e), ("53300".to_owned(), message.to_owned()));
    drop(stalled);
    holder.batch_execute("commit").await.unwrap();
    assert_eq!(one::<i32>(&waiter, "select 1").await, 1);
}

/// A cluster's postmaster stopped with SIGSTOP until dropped: connections wait in its listen
/// queue, unanswered.
struct StoppedPostmaster(String);

impl StoppedPostmaster {
    fn stop(pg: &shardgate::cluster::Cluster) -> StoppedPostmaster {
        let pid = std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let stopped = signal("-STOP", &pid);
        assert!(
            matches!(stopped, Ok(s) if s.success()),
            "kill -STOP {pid}: {stopped:?}"
        );
        StoppedPostmaster(pid)
    }
}

impl Drop for StoppedPostmaster {
    fn drop(&mut self) {
        // No assertion here: a panic while a failed assertion unwinds would abort the tests.
        let _ = signal("-CONT", &self.0);
    }
}

fn signal(sig: &str, pid: &str) -> std::io::Result<std::process::ExitStatus> {
    std::process::Command::new("kill").args([sig, pid]).status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_is_enforced_with_a_clear_error() {
    let env = Env::start_with(Options {
        max_clients: 2,
        ..Default::default()
    })
    .await;
    let _a = env.connect().await;
    let _b = env.connect().await;
    let e = tokio_postgres::connect(&env.url(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("third client refused");
    assert_eq!(
        db_error(&e),
        (
            "53300".to_owned(),
            "sorry, too many clients already".to_owned()
        )
    );
    drop(_a);
    crate::harness::eventually_async("a free client slot", Duration::from_secs(5), || async {
        tokio_postgres::connect(&env.url(), tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_unknown_database() {
    let env = Env::start().await;
    let url = |user: &str, pw: &str, db: &str| {
        format!("postgres://{user}:{pw}@127.0.0.1:{}/{db}", env.port())
    };
    let e = tokio_postgres::connect(&url(USER, "nope", "app"), tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(
        db_error(&e),
        (
            "28P01".to_owned(),
            format!("password authentication failed for user \"{USER}\"")
        )
    );
    let e = tokio_postgres::connect(&url("mallory", "x", "app"), tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(
        db_error(&e),
        (
            "28P01".to_owned(),
            "password authentication failed for user \"mallory\"".to_owned()
        )
    );
    let e = tokio_postgres::connect(&url(USER, PASSWORD, "nosuchdb"), tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(
        db_error(&e),
        (
            "3D000".to_owned(),
            "database \"nosuchdb\" does not exist".to_owned()
        )
    );
    // The proxy is unharmed.
    assert_eq!(one::<i32>(&env.connect().await, "select 1").await, 1);
}

/// Logs in with a raw socket (tokio-postgres would refuse to send garbage) and returns it ready.
async fn raw_session(env: &Env) -> TcpStream {
    crate::wire::Raw::login(env.port()).await.into_stream()
}

/// Reads until the server closes; returns everything it sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_messages_close_only_that_connection() {
    let env = Env::start().await;
    // An unknown message type after login.
    let mut s = raw_session(&env).await;
    s.write_all(b"\x01\x00\x00\x00\x08garbage!").await.unwrap();
    let reply = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(
        reply.contains("08P01")
            && reply.contains("unexpected message '\u{1}' from a client after startup"),
        "{reply}"
    );
    // A length far beyond the limit: refused before anything is buffered.
    let mut s = raw_session(&env).await;
    s.write_all(b"Q\x7f\xff\xff\xff").await.unwrap();
    let reply = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(
        reply.contains("08P01")
            && reply
                .contains("message 'Q' of 2147483647 bytes exceeds the limit of 67108864 bytes"),
        "{reply}"
    );
    // Garbage instead of a startup packet.
    let mut s = TcpStream::connect(env.proxy.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let reply = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(reply.contains("08P01"), "{reply}");
    // The process lives on and serves everyone else.
    assert_eq!(one::<i32>(&env.connect().await, "select 1").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_invisible_between_transactions() {
    let mut env = Env::start_with(Options {
        pool_size: 3,
        ..Default::default()
    })
    .await;
    let clients = [
        env.connect().await,
        env.connect().await,
        env.connect().await,
    ];
    // Fill the pool with idle connections, which the restart will close under it.
    let _ = futures_util::future::join_all(
        clients
            .iter()
            .map(|c| c.query_one("select pg_sleep(0.1)", &[])),
    )
    .await;
    tokio::task::block_in_place(|| env.pg.restart().unwrap());
    for c in &clients {
        assert_eq!(one::<i32>(c, "select 1").await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_server_answers_08006_at_once_not_after_the_checkout_timeout() {
    let mut env = Env::start_with(Options {
        checkout_timeout_ms: 10_000,
        ..Default::default()
    })
    .await;
    let c = env.connect().await;
    tokio::task::block_in_place(|| env.pg.stop(shardgate::cluster::StopMode::Fast).unwrap());
    let started = std::time::Instant::now();
    let e = c.simple_query("select 1").await.unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "08006");
    assert!(
        message.starts_with(
            "shardgate: shard \"s0\" is unreachable: cannot connect to app@127.0.0.1:"
        ),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
