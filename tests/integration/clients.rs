//! Real client programs through shardgate: psql, pgbench (TPC-B in all three query modes), TLS,
//! MD5 logins, and the binary's signals.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{binaries, connect, db_error, one, run, Env, Options, PASSWORD, USER};

fn psql(env: &Env, extra: &[&str], script: &str) -> Command {
    let mut cmd = Command::new(env.bins.psql());
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-At",
        "-h",
        "127.0.0.1",
        "-p",
        &env.port().to_string(),
        "-U",
        USER,
        "-d",
        "app",
    ])
    .args(extra)
    .args(["-c", script])
    .env("PGPASSWORD", PASSWORD)
    .env("PGSSLMODE", "disable");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_with_copy_and_transactions() {
    let env = Env::start().await;
    let dir = env.dir.path().to_owned();
    let port = env.port();
    let script = dir.join("script.sql");
    std::fs::write(
        &script,
        "create table t (id int primary key, name text);\n\
         \\copy t from stdin with (format csv)\n1,one\n2,two\n\\.\n\
         begin;\ninsert into t values (3, 'three');\nselect count(*) from t \\gset\ncommit;\n\
         \\echo rows=:count\n\
         select string_agg(name, ',' order by id) from t;\n\
         \\copy (select id from t order by id) to stdout\n",
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(binaries().psql());
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            USER,
            "-d",
            "app",
            "-f",
        ])
        .arg(&script)
        .env("PGPASSWORD", PASSWORD);
        run(&mut cmd)
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "rows=3\none,two,three\n1\n2\n3\n"
    );
}

fn pgbench(env: &Env, args: &[&str]) -> Output {
    run(&mut env.pgbench(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_16_clients_on_4_connections_books_balance_in_every_mode() {
    let env = Env::start_with(Options {
        pool_size: 4,
        ..Default::default()
    })
    .await;
    let env = std::sync::Arc::new(env);
    let e = env.clone();
    tokio::task::spawn_blocking(move || {
        pgbench(&e, &["-i", "-s", "1", "-q"]);
        for mode in ["simple", "extended", "prepared"] {
            let out = pgbench(&e, &["-c", "16", "-j", "2", "-t", "60", "-M", mode, "-n"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("number of transactions actually processed: 960/960"),
                "{mode}:\n{text}"
            );
            assert!(
                text.contains("number of failed transactions: 0 (0.000%)"),
                "{mode}:\n{text}"
            );
        }
    })
    .await
    .unwrap();
    let c = env.connect().await;
    let row = c
        .query_one(
            "select (select sum(abalance) from pgbench_accounts)::bigint, (select sum(tbalance) from pgbench_tellers)::bigint, \
             (select sum(bbalance) from pgbench_branches)::bigint, (select sum(delta) from pgbench_history)::bigint, \
             (select count(*) from pgbench_history)",
            &[],
        )
        .await
        .unwrap();
    let (a, t, b, h, n): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(
        n,
        3 * 960,
        "every transaction of every mode left its history row"
    );
    assert_eq!((a, t, b), (h, h, h), "the books must balance");
}

fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_configured_plain_n_otherwise() {
    let certs = shardgate::cluster::TempDir::new("sg-tls").unwrap();
    let (cert, key) = self_signed(certs.path());
    let extra = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}\n",
        cert.display(),
        key.display()
    );
    let env = Env::start_with(Options {
        extra,
        ..Default::default()
    })
    .await;
    let mut cmd = psql(&env, &[], "select 'over tls'");
    cmd.env("PGSSLMODE", "require");
    let out = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    // Without a tls section, sslmode=require is refused because shardgate answers 'N'.
    let plain = Env::start().await;
    let mut cmd = psql(&plain, &[], "select 1");
    cmd.env("PGSSLMODE", "require");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server does not support SSL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_users_log_in_with_md5() {
    let extra_users = "  - { name: legacy, password: \"old secret\", auth: md5 }\n".to_owned();
    let env = Env::start_with(Options {
        extra_users,
        ..Default::default()
    })
    .await;
    let url = |pw: &str| {
        format!(
            "postgres://legacy:{}@127.0.0.1:{}/app",
            pw.replace(' ', "%20"),
            env.port()
        )
    };
    let c = connect(&url("old secret")).await;
    assert_eq!(one::<String>(&c, "select current_user::text").await, USER);
    let e = tokio_postgres::connect(&url("wrong"), tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(
        db_error(&e),
        (
            "28P01".to_owned(),
            "password authentication failed for user \"legacy\"".to_owned()
        )
    );
}

/// The real binary, with its config in a file, for signal tests.
struct Binary {
    child: std::process::Child,
    port: u16,
    config: std::path::PathBuf,
}

impl Binary {
    async fn start(env: &Env) -> Binary {
        Binary::start_with(env, "", std::process::Stdio::null(), &[]).await
    }

    /// With `extra` YAML appended to the config, its log lines (stderr) sent to `log`, and
    /// `args` on its command line.
    async fn start_with(env: &Env, extra: &str, log: std::process::Stdio, args: &[&str]) -> Binary {
        let port = shardgate::cluster::free_port();
        let config = env.dir.path().join("shardgate.yaml");
        // Only the client listener gets the fixed port; the admin API keeps port 0.
        let yaml = env.config_yaml.replacen(
            "listen: 127.0.0.1:0\n",
            &format!("listen: 127.0.0.1:{port}\n"),
            1,
        );
        std::fs::write(&config, format!("{yaml}{extra}")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .stderr(log)
            .spawn()
            .unwrap();
        let b = Binary {
            child,
            port,
            config,
        };
        crate::harness::eventually_async(
            "the binary to listen",
            Duration::from_secs(10),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
        b
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    fn signal(&self, sig: &str) {
        run(Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]));
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_transactions_then_exits_0() {
    let env = Env::start().await;
    // Two workers whatever the machine's cores: one open transaction on each.
    let path = env.dir.path().join("shardgate.log");
    let file = std::fs::File::create(&path).unwrap();
    let mut bin = Binary::start_with(&env, "", file.into(), &["--threads", "2"]).await;
    let c = connect(&bin.url("app")).await;
    let d = connect(&bin.url("app")).await;
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("shardgate is listening") && l.contains("threads=2")),
        "{log}"
    );
    c.batch_execute("create table t (id int)").await.unwrap();
    c.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();
    d.batch_execute("begin; insert into t values (10)")
        .await
        .unwrap();
    bin.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio_postgres::connect(&bin.url("app"), tokio_postgres::NoTls)
            .await
            .is_err(),
        "no new connections while draining"
    );
    // The open transactions finish normally, on both workers.
    c.batch_execute("insert into t values (2); commit")
        .await
        .unwrap();
    d.batch_execute("insert into t values (20); commit")
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || bin.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(env.direct("select count(*) from t"), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_sessions_at_once_with_57p01() {
    let env = Env::start().await;
    let mut bin = Binary::start(&env).await;
    // Raw protocol, to read the FATAL the idle session is sent.
    let mut raw = crate::wire::Raw::login(bin.port).await;
    let mut query = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("select 1", &mut query).unwrap();
    raw.send(&query).await;
    raw.replies(1, 0).await;
    let started = std::time::Instant::now();
    bin.signal("TERM");
    let fatal = raw.replies(0, 1).await.remove(0);
    // Fields: a code byte, then a NUL-terminated value; a lone NUL ends them.
    let field = |code: u8| {
        let mut rest = &fatal.1[..];
        while let [c, tail @ ..] = rest {
            let end = tail.iter().position(|&b| b == 0).expect("NUL");
            if *c == code {
                return String::from_utf8_lossy(&tail[..end]).into_owned();
            }
            rest = &tail[end + 1..];
        }
        panic!("no field {}", code as char)
    };
    assert_eq!(fatal.0, 'E');
    assert_eq!(
        (field(b'V'), field(b'C'), field(b'M')),
        (
            "FATAL".into(),
            "57P01".into(),
            "shardgate is shutting down".into()
        )
    );
    let status = tokio::task::spawn_blocking(move || bin.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // Nothing was left to drain: well inside the 30 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_and_keeps_the_old_one_when_invalid() {
    let env = Env::start().await;
    let bin = Binary::start(&env).await;
    let c = connect(&bin.url("app")).await;
    assert!(
        tokio_postgres::connect(&bin.url("app2"), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    let yaml = std::fs::read_to_string(&bin.config).unwrap();
    let app2 = format!("  app2:\n    shards:\n      s0: {{ primary: \"postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app\" }}\n", env.pg.port());
    std::fs::write(&bin.config, format!("{yaml}{app2}")).unwrap();
    bin.signal("HUP");
    crate::harness::eventually_async("app2 to appear", Duration::from_secs(5), || async {
        tokio_postgres::connect(&bin.url("app2"), tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;
    std::fs::write(&bin.config, "listen: [this is not a config").unwrap();
    bin.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(one::<i32>(&c, "select 1").await, 1);
    assert!(
        tokio_postgres::connect(&bin.url("app2"), tokio_postgres::NoTls)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_everything_serves_queries_and_ctrl_c_stops_it() {
    use std::io::BufRead;
    let dir = shardgate::cluster::TempDir::new("sg-demo").unwrap();
    let state = dir.path().join("demo");
    let (port, admin_port) = (
        shardgate::cluster::free_port(),
        shardgate::cluster::free_port(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
            "--dir",
        ])
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Press Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines.join("\n")
    });
    let printed = tokio::time::timeout(Duration::from_secs(60), printed)
        .await
        .expect("demo ready within 60 s")
        .unwrap();
    assert!(
        printed.contains(&format!(
            "psql \"postgres://app:demo@127.0.0.1:{port}/app\""
        )),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("admin API:      http://127.0.0.1:{admin_port}")),
        "{printed}"
    );
    // The printed resharding command works as printed: its pre-flight passes, a job starts.
    let line = printed
        .lines()
        .find(|l| l.trim_start().starts_with("resharding: "))
        .unwrap_or_else(|| panic!("{printed}"));
    let args: Vec<&str> = line.split_whitespace().skip(2).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("job 1 started: phase preflight"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = connect(&format!("postgres://app:demo@127.0.0.1:{port}/app")).await;
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // Loaded through shardgate, merged across the shards, placed on both.
    assert_eq!(count("SELECT count(*) FROM users").await, 2000);
    assert_eq!(count("SELECT count(*) FROM orders").await, 5000);
    let on_s0 = count("/* shardgate: shard=s0 */ SELECT count(*) FROM users").await;
    let on_s1 = count("/* shardgate: shard=s1 */ SELECT count(*) FROM users").await;
    assert_eq!(on_s0 + on_s1, 2000);
    assert!(on_s0 > 800 && on_s1 > 800, "{on_s0} + {on_s1}");
    let name: String = c
        .query_one("SELECT name FROM users WHERE id = $1", &[&42i64])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "user 42");
    let (status, _) =
        crate::admin::http_get(format!("127.0.0.1:{admin_port}").parse().unwrap(), "/ready").await;
    assert_eq!(status, 200);
    drop(c);
    run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    for cluster in ["pg-s0", "pg-s1", "pg-s0-replica"] {
        assert!(!state.join(cluster).exists(), "{cluster} was not removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_are_logged_with_their_shard_and_text() {
    let env = Env::start().await;
    let path = env.dir.path().join("shardgate.log");
    let file = std::fs::File::create(&path).unwrap();
    let bin = Binary::start_with(&env, "log: { slow_query_ms: 200 }\n", file.into(), &[]).await;
    let c = connect(&bin.url("app")).await;
    c.batch_execute("SELECT pg_sleep(0.3) /* simple */")
        .await
        .unwrap();
    c.query("SELECT pg_sleep($1) /* prepared */", &[&0.3f64])
        .await
        .unwrap();
    c.batch_execute("SELECT 1 /* fast */").await.unwrap();
    let log = std::fs::read_to_string(&path).unwrap();
    let slow: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("slow statement"))
        .collect();
    assert_eq!(slow.len(), 2, "{log}");
    for (line, text) in slow.iter().zip(["/* simple */", "/* prepared */"]) {
        for part in ["shardgate::slow", "database=app", "shard=s0", text] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }
}
