//! The admin HTTP API (DESIGN §2.6) on its own port. So far: `GET /health` and `GET /ready`;
//! the rest of the API (metrics, shard maps, reload, routing, hotspots) builds on this server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::topology::Store;

/// How long `/ready` waits for each shard primary.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn serve(listener: TcpListener, store: Arc<Store>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::error!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let store = store.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, store.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    store: Arc<Store>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/ready") => ready(&store).await,
        (&Method::GET, "/metrics") => prometheus(store.render_metrics()),
        (method, path) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "not_found", "detail": format!("no route {method} {path}; available: GET /health, GET /ready") }),
        ),
    };
    Ok(reply)
}

/// 200 once every shard primary answers, else 503 naming the ones that do not.
async fn ready(store: &Store) -> Response<Full<Bytes>> {
    let snapshot = store.load();
    let mut problems = Vec::new();
    for db in snapshot.databases.values() {
        for shard in &db.shards {
            match tokio::time::timeout(READY_TIMEOUT, shard.primary.checkout()).await {
                Ok(Ok(_conn)) => {}
                Ok(Err(e)) => problems.push(format!("{}: {e}", db.name)),
                Err(_) => problems.push(format!(
                    "{}: shard \"{}\" did not answer within {READY_TIMEOUT:?}",
                    db.name, shard.name
                )),
            }
        }
    }
    if problems.is_empty() {
        json(
            StatusCode::OK,
            serde_json::json!({ "status": "ready", "epoch": snapshot.epoch }),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "not_ready", "detail": problems.join("; ") }),
        )
    }
}

/// The Prometheus text exposition format, version 0.0.4.
fn prometheus(text: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
