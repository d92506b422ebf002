//! Tests against real PostgreSQL servers. Missing binaries fail these tests with the install
//! message: they never pass silently.

use std::time::{Duration, Instant};

use super::*;

fn binaries() -> PgBinaries {
    PgBinaries::find().unwrap_or_else(|e| panic!("{e}"))
}

fn start(base: &TempDir, opts: ClusterOptions) -> Cluster {
    let t = Instant::now();
    let cluster = Cluster::start(&binaries(), base.path(), opts).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("cluster started in {:?}", t.elapsed());
    cluster
}

#[tokio::test]
async fn primary_accepts_psql_and_scram_over_tcp() {
    let base = TempDir::new("sg-test").unwrap();
    let pg = start(&base, ClusterOptions::default());
    assert_eq!(pg.psql("postgres", "select 1").unwrap(), "1");

    let (client, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .expect("superuser over TCP with SCRAM");
    tokio::spawn(conn);
    let row = client.query_one("select 1::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    pg.create_database("app").unwrap();
    pg.create_user("alice", "s3cr'et").unwrap();
    pg.grant_all("app", "alice").unwrap();
    let verifier = pg
        .psql(
            "postgres",
            "select rolpassword from pg_authid where rolname = 'alice'",
        )
        .unwrap();
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");

    let url = format!("postgres://alice:s3cr%27et@127.0.0.1:{}/app", pg.port());
    let (alice, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("alice over TCP with SCRAM");
    tokio::spawn(conn);
    alice
        .batch_execute("create table t (id int); insert into t values (7)")
        .await
        .unwrap();
    let row = alice
        .query_one(
            "select current_user::text, current_database()::text, id from t",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");
    assert_eq!(row.get::<_, String>(1), "app");
    assert_eq!(row.get::<_, i32>(2), 7);

    let bad = format!("postgres://alice:wrong@127.0.0.1:{}/app", pg.port());
    let err = tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .err()
        .expect("wrong password must be refused");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD)
    );
}

#[test]
fn replica_streams_from_primary() {
    let base = TempDir::new("sg-test").unwrap();
    let primary = start(&base, ClusterOptions::default());
    let t = Instant::now();
    let replica = primary
        .start_replica("replica")
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("replica started in {:?}", t.elapsed());
    assert_ne!(replica.port(), primary.port());
    assert_eq!(
        replica
            .psql("postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    assert_eq!(
        primary
            .psql("postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "f"
    );

    primary
        .psql(
            "postgres",
            "create table r (v text); insert into r values ('hello')",
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match replica.psql("postgres", "select v from r") {
            Ok(v) if v == "hello" => break,
            other if Instant::now() > deadline => {
                panic!("row never reached the replica: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let err = replica
        .psql("postgres", "insert into r values ('x')")
        .unwrap_err();
    assert!(err.to_string().contains("read-only transaction"), "{err}");
}

#[test]
fn stop_restart_promote_and_drop_cleanup() {
    let base = TempDir::new("sg-test").unwrap();
    let mut primary = start(&base, ClusterOptions::default());
    let replica = primary
        .start_replica("replica")
        .unwrap_or_else(|e| panic!("{e}"));

    primary.psql("postgres", "create table k (v int)").unwrap();
    primary.restart().unwrap();
    assert_eq!(
        primary.psql("postgres", "select count(*) from k").unwrap(),
        "0"
    );
    primary.stop(StopMode::Fast).unwrap();
    assert!(!primary.is_running());
    let err = primary.psql("postgres", "select 1").unwrap_err();
    assert!(matches!(err, ClusterError::Sql { .. }), "{err}");

    replica.promote().unwrap();
    replica
        .psql("postgres", "insert into k values (1)")
        .unwrap();

    let replica_dir = replica.data_dir().to_path_buf();
    drop(replica);
    assert!(
        !replica_dir.exists(),
        "drop must remove {}",
        replica_dir.display()
    );
}

#[test]
fn taken_port_is_an_error_naming_the_cause() {
    let base = TempDir::new("sg-test").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let opts = ClusterOptions {
        port: Some(port),
        ..ClusterOptions::default()
    };
    let err = Cluster::start(&binaries(), base.path(), opts).unwrap_err();
    assert!(err.is_port_conflict(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("pg_ctl start"), "{msg}");
    assert!(msg.contains("hint: the port is taken"), "{msg}");
    assert!(msg.contains("server log (last lines)"), "{msg}");
}

#[test]
fn temp_dir_is_removed_on_drop() {
    let dir = TempDir::new("sg-tempdir").unwrap();
    let path = dir.path().to_path_buf();
    std::fs::write(path.join("f"), "x").unwrap();
    drop(dir);
    assert!(!path.exists());
}

/// Parallel tests start many clusters at once; each must get its own port and socket, even when a
/// base dir is too long for a unix socket path.
#[test]
fn parallel_starts_in_a_long_base_dir() {
    let base = TempDir::new(&format!("sg-test-{}", "x".repeat(90))).unwrap();
    let bins = binaries();
    let clusters: Vec<Cluster> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Cluster::start(&bins, base.path(), ClusterOptions::default())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("{e}")))
            .collect()
    });
    let mut ports: Vec<u16> = clusters.iter().map(Cluster::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "ports must differ: {ports:?}");
    for c in &clusters {
        let socket = c.socket_dir().join(format!(".s.PGSQL.{}", c.port()));
        assert!(socket.as_os_str().len() < 100, "{}", socket.display());
        assert!(socket.exists(), "no socket at {}", socket.display());
        assert_eq!(c.psql("postgres", "select 1").unwrap(), "1");
    }
    let socket_dirs: Vec<_> = clusters
        .iter()
        .map(|c| c.socket_dir().to_path_buf())
        .collect();
    drop(clusters);
    for d in socket_dirs {
        assert!(!d.exists(), "socket dir {} must be removed", d.display());
    }
}

/// Declaring the TempDir after the cluster drops it first, deleting the data dir under the running
/// server; dropping the cluster must still stop the server.
#[test]
fn drop_stops_the_server_even_if_its_dir_is_gone() {
    let base = TempDir::new("sg-test").unwrap();
    let pg = start(&base, ClusterOptions::default());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], pg.port()));
    drop(base);
    drop(pg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "server on {addr} still accepts connections"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
