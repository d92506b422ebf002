//! The admin API's first routes, over real HTTP.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::Env;

/// A minimal HTTP/1.1 GET: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_unknown_routes() {
    let mut env = Env::start().await;
    let admin = env.proxy.admin_addr();
    assert_eq!(
        http_get(admin, "/health").await,
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    assert_eq!(
        http_get(admin, "/ready").await,
        (200, r#"{"epoch":1,"status":"ready"}"#.to_owned())
    );
    let (status, body) = http_get(admin, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains(r#""error":"not_found""#), "{body}");
    // With the shard's server down, /ready says so and names it.
    tokio::task::block_in_place(|| env.pg.stop(shardgate::cluster::StopMode::Fast).unwrap());
    let (status, body) = http_get(admin, "/ready").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("app: shard \\\"s0\\\" is unreachable"),
        "{body}"
    );
}
