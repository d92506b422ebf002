//! Several workers (`--threads`): each pool is cut into a slice per worker, and the slices
//! together keep to `pool.size`.

use std::time::Duration;

use crate::harness::{db_error, eventually_async, one, Env, Options};
use crate::metrics::Scraped;

/// The pool's connections to the server right now (not the health checker's).
fn server_connections(env: &Env) -> String {
    env.direct(
        "select count(*) from pg_stat_activity \
         where usename = 'app' and application_name <> 'shardgate-health'",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_lend_a_free_place_and_keep_to_the_pool_size() {
    let env = Env::start_with(Options {
        workers: 2,
        pool_size: 2,
        checkout_timeout_ms: 300,
        ..Default::default()
    })
    .await;
    // Dealt in turn: a and c on worker 0, b on worker 1; one place in each worker's slice.
    let a = env.connect().await;
    let b = env.connect().await;
    let c = env.connect().await;
    a.batch_execute("begin; select 1").await.unwrap();
    // Worker 0's slice is taken by a: c borrows worker 1's free place instead of waiting.
    c.batch_execute("begin; select 1").await.unwrap();
    assert_eq!(server_connections(&env), "2");
    // Both places are held now: b waits its checkout timeout, as with one worker.
    let e = b.simple_query("select 1").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "53300".to_owned(),
            "shardgate: no connection to shard \"s0\" became free within 300ms (pool size 2)"
                .to_owned()
        )
    );
    c.batch_execute("commit").await.unwrap();
    assert_eq!(one::<i32>(&b, "select 2").await, 2);
    a.batch_execute("commit").await.unwrap();
    assert_eq!(one::<i32>(&a, "select 3").await, 3);
    assert_eq!(server_connections(&env), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_for_a_borrowed_place_is_closed_after_its_transaction() {
    let env = Env::start_with(Options {
        workers: 2,
        pool_size: 2,
        ..Default::default()
    })
    .await;
    let a = env.connect().await;
    // Worker 1's client: it never logs in, so worker 1's slice opens nothing.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", env.port()))
        .await
        .unwrap();
    let c = env.connect().await;
    a.batch_execute("begin; select 1").await.unwrap();
    // Worker 0's slice is taken by a: c borrows worker 1's place and opens a connection for
    // it on worker 0, which worker 1's slice must not keep.
    c.batch_execute("begin; select 1").await.unwrap();
    assert_eq!(server_connections(&env), "2");
    c.batch_execute("commit").await.unwrap();
    eventually_async(
        "the borrowed connection closed",
        Duration::from_secs(5),
        || async { server_connections(&env) == "1" },
    )
    .await;
    a.batch_execute("commit").await.unwrap();
    assert_eq!(one::<i32>(&c, "select 1").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_on_both_workers_add_up_in_one_series() {
    let env = Env::start_with(Options {
        workers: 2,
        ..Default::default()
    })
    .await;
    // Dealt in turn: one client per worker.
    let (a, b) = (env.connect().await, env.connect().await);
    let selects = || async {
        Scraped::at(env.proxy.admin_addr()).await.value(
            "shardgate_queries_total",
            &[("shard", "s0"), ("role", "primary"), ("kind", "select")],
        )
    };
    let before = selects().await;
    for i in 0..5 {
        assert_eq!(one::<i32>(&a, &format!("select {i}")).await, i);
        assert_eq!(one::<i32>(&b, &format!("select {i}")).await, i);
    }
    assert_eq!(selects().await - before, 10.0);
}
