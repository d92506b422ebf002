//! Config reloads under load (issue 4): pgbench runs through shardgate while the config is
//! reloaded — pool sizes changed, an invalid file, a replica added and removed — and no client
//! sees an error; the new pool size is observably in force on the server.

use std::time::Duration;

use crate::harness::{eventually_async, run, Env, Options, PASSWORD, USER};

/// Server connections shardgate's pools hold, as the server counts them (not its own checks).
fn proxy_backends(env: &Env) -> u32 {
    env.direct(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{USER}' AND backend_type = 'client backend' AND application_name NOT LIKE 'shardgate-%'"
    ))
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_pgbench_cost_no_client_an_error() {
    let env = Env::start_with(Options {
        pool_size: 6,
        ..Default::default()
    })
    .await;
    let replica = env.pg.start_replica("replica").expect("start a replica");
    run(&mut env.pgbench(&["-i", "-s", "1", "-q"]));
    let mut load = env.pgbench(&["-c", "8", "-j", "2", "-T", "8", "-M", "extended", "-n"]);
    let load = tokio::task::spawn_blocking(move || run(&mut load));

    let path = env.dir.path().join("reload.yaml");
    let with = |yaml: &str| {
        std::fs::write(&path, yaml).unwrap();
        env.proxy.reload_from(&path)
    };
    let replica_line = format!(
        "      s0: {{ primary: \"postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app\", replicas: [\"postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app\"] }}",
        env.pg.port(),
        replica.port()
    );
    let base = env.config_yaml.clone();
    let sized = |n: u32| base.replace("size: 6,", &format!("size: {n},"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    with(&sized(3)).expect("smaller pool");
    eventually_async(
        "the pool to shrink to 3",
        Duration::from_secs(5),
        || async { proxy_backends(&env) <= 3 },
    )
    .await;
    assert!(
        with("listen: [not a config").is_err(),
        "invalid config refused"
    );
    let primary_line = base
        .lines()
        .find(|l| l.trim_start().starts_with("s0:"))
        .unwrap()
        .to_string();
    with(&sized(4).replace(&primary_line, &replica_line)).expect("a replica added");
    tokio::time::sleep(Duration::from_millis(500)).await;
    with(&sized(5)).expect("the replica removed, pool 5");
    let out = load.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("number of failed transactions: 0 (0.000%)"),
        "{stdout}"
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 0, "{stdout}");
    assert!(proxy_backends(&env) <= 5);
}
