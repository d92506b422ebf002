//! The admin HTTP API (DESIGN §2.6) on its own port: the server, the route table and the checks
//! every request goes through (method, auth, body size). One file per group of routes:
//! [`databases`] (topology and shard maps), [`config`] (the redacted config and reload), [`route`]
//! (routing decisions). Every failure is JSON `{error, detail}` (see [`json`]).

mod auth;
mod config;
mod databases;
mod json;
mod promote;
mod reshard;
mod route;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::control::ControlDb;
use crate::health::Monitor;
use crate::hotspots::Registry as Hotspots;
use crate::router::Routers;
use crate::topology::Store;
use json::{ApiError, Reply};

/// How long `/ready` waits for each shard primary.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request body accepted; a routing request or an empty reload is far smaller.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Keys and buckets `GET /v1/hotspots` lists per database.
const HOTSPOTS_TOP: usize = 10;
/// A client that has not sent its request headers by then is dropped (slow-loris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share. Lives as long as the server.
pub struct Admin {
    store: Arc<Store>,
    /// The background health checks' reports, shown by `GET /v1/databases`.
    health: Arc<Monitor>,
    /// The sessions' hot keys and shard load, shown by `GET /v1/hotspots`.
    hotspots: Arc<Hotspots>,
    /// The admin API's own routers (plan caches), rebuilt per epoch like the sessions' ones.
    routers: Routers,
    /// shardgate's own database (`control:`), where resharding jobs live; `None` without one.
    control: Option<Arc<ControlDb>>,
    /// The file `POST /v1/config/reload` re-reads; `None` when the proxy was started from a
    /// config in memory (tests), which cannot be reloaded this way.
    config_path: Option<PathBuf>,
}

impl Admin {
    pub fn new(
        store: Arc<Store>,
        health: Arc<Monitor>,
        hotspots: Arc<Hotspots>,
        control: Option<Arc<ControlDb>>,
        config_path: Option<PathBuf>,
    ) -> Admin {
        Admin {
            store,
            health,
            hotspots,
            control,
            routers: Routers::default(),
            config_path,
        }
    }
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
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
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, admin.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// The routes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Health,
    Ready,
    Metrics,
    Databases,
    ShardMap(String),
    Config,
    Reload,
    Route,
    Hotspots,
    Promote(String, String),
    ReshardStart,
    ReshardJob(String),
    ReshardAction(String, String),
}

impl Endpoint {
    fn find(path: &str) -> Option<Endpoint> {
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        Some(match segments.as_slice() {
            ["health"] => Endpoint::Health,
            ["ready"] => Endpoint::Ready,
            ["metrics"] => Endpoint::Metrics,
            ["v1", "databases"] => Endpoint::Databases,
            ["v1", "databases", db, "shard-map"] if !db.is_empty() => {
                Endpoint::ShardMap(db.to_string())
            }
            ["v1", "config"] => Endpoint::Config,
            ["v1", "config", "reload"] => Endpoint::Reload,
            ["v1", "route"] => Endpoint::Route,
            ["v1", "hotspots"] => Endpoint::Hotspots,
            ["v1", "reshard"] => Endpoint::ReshardStart,
            ["v1", "reshard", id] if !id.is_empty() => Endpoint::ReshardJob(id.to_string()),
            ["v1", "reshard", id, action] if reshard::ACTIONS.contains(action) => {
                Endpoint::ReshardAction(id.to_string(), action.to_string())
            }
            ["v1", "databases", db, "shards", shard, "promote"]
                if !db.is_empty() && !shard.is_empty() =>
            {
                Endpoint::Promote(db.to_string(), shard.to_string())
            }
            _ => return None,
        })
    }

    fn method(&self) -> Method {
        match self {
            Endpoint::Reload
            | Endpoint::Route
            | Endpoint::Promote(..)
            | Endpoint::ReshardStart
            | Endpoint::ReshardAction(..) => Method::POST,
            _ => Method::GET,
        }
    }

    /// Health checks and metrics stay open so load balancers, orchestrators and Prometheus
    /// need no secret (metrics carry no key values or SQL text).
    fn needs_token(&self) -> bool {
        !matches!(self, Endpoint::Health | Endpoint::Ready | Endpoint::Metrics)
    }
}

const ROUTES: &str =
    "GET /health, GET /ready, GET /metrics, GET /v1/databases, GET /v1/databases/{db}/shard-map, \
                      GET /v1/config, POST /v1/config/reload, POST /v1/route, GET /v1/hotspots, \
                      POST /v1/databases/{db}/shards/{shard}/promote, POST /v1/reshard, \
                      GET /v1/reshard/{id}, POST /v1/reshard/{id}/{pause|resume|cutover|rollback|abort|finish}";

async fn handle(req: Request<Incoming>, admin: Arc<Admin>) -> Result<Reply, Infallible> {
    let reply = match dispatch(req, &admin).await {
        Ok(reply) => reply,
        Err(e) => e.into_reply(),
    };
    Ok(reply)
}

async fn dispatch(req: Request<Incoming>, admin: &Admin) -> Result<Reply, ApiError> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let endpoint = Endpoint::find(&path).ok_or_else(|| {
        ApiError::not_found(
            "not_found",
            format!("no route {method} {path}; available: {ROUTES}"),
        )
    })?;
    let allowed = endpoint.method();
    if method != allowed {
        let allow = if allowed == Method::POST {
            "POST"
        } else {
            "GET"
        };
        return Err(ApiError::method_not_allowed(
            allow,
            format!("{path} takes {allow}, not {method}"),
        ));
    }
    if endpoint.needs_token() {
        let snapshot = admin.store.load();
        auth::check(req.headers(), snapshot.config.admin.token.as_deref())?;
    }
    let body = if allowed == Method::POST {
        read_body(req).await?
    } else {
        Bytes::new()
    };
    match endpoint {
        Endpoint::Health => Ok(json::ok(serde_json::json!({ "status": "ok" }))),
        Endpoint::Ready => Ok(ready(&admin.store).await),
        Endpoint::Metrics => Ok(json::prometheus(scrape(admin))),
        Endpoint::Databases => Ok(databases::list(&admin.store.load(), &admin.health.report())),
        Endpoint::ShardMap(db) => {
            let epochs = admin.store.persisted_epochs();
            databases::shard_map(&admin.store.load(), &epochs, &db)
        }
        Endpoint::Config => Ok(config::show(&admin.store.load())),
        Endpoint::Reload => config::reload(&admin.store, admin.config_path.as_deref()),
        Endpoint::Route => route::decide(admin, &body),
        Endpoint::Hotspots => Ok(hotspots(admin)),
        Endpoint::Promote(db, shard) => promote::promote(admin, &db, &shard, &body).await,
        Endpoint::ReshardStart => reshard::start(admin, &body).await,
        Endpoint::ReshardJob(id) => reshard::show(admin, &id).await,
        Endpoint::ReshardAction(id, action) => reshard::act(admin, &id, &action).await,
    }
}

/// `GET /v1/hotspots`: per database, the top keys and buckets of the last one to two minutes
/// and the skew across shards (see `crate::hotspots`).
fn hotspots(admin: &Admin) -> Reply {
    let reports = admin.hotspots.reports(&admin.store.load(), HOTSPOTS_TOP);
    json::ok(serde_json::json!({ "databases": reports }))
}

/// `GET /metrics`: the recorder's text, with what other layers know set first as gauges
/// (each database's shard skew; each server's health and a replica's lag).
fn scrape(admin: &Admin) -> String {
    let snapshot = admin.store.load();
    let metrics = admin.store.metrics();
    for db in snapshot.databases.keys() {
        if let Some(h) = admin.hotspots.get(&snapshot, db) {
            metrics.scrape_gauge("shardgate_shard_skew", &[("database", db)], h.skew());
        }
    }
    for (db, shard, server) in admin.health.report().servers() {
        let address = format!("{}:{}", server.key.host, server.key.port);
        let labels = [("database", db), ("shard", shard), ("server", &address)];
        let up = matches!(server.state, crate::health::ServerState::Up { .. });
        metrics.scrape_gauge("shardgate_server_up", &labels, f64::from(u8::from(up)));
        if let Some(lag) = &server.lag {
            metrics.scrape_gauge("shardgate_replica_lag_bytes", &labels, lag.bytes as f64);
            metrics.scrape_gauge(
                "shardgate_replica_lag_seconds",
                &labels,
                lag.ms as f64 / 1000.0,
            );
        }
    }
    admin.store.render_metrics()
}

/// The whole body, refused with 413 past [`MAX_BODY_BYTES`] (before reading it when the
/// client announces its length).
async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    };
    let announced = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// 200 once every shard primary answers, else 503 naming the ones that do not.
async fn ready(store: &Store) -> Reply {
    let snapshot = store.load();
    let mut problems = Vec::new();
    for db in snapshot.databases.values() {
        for shard in &db.shards {
            match tokio::time::timeout(
                READY_TIMEOUT,
                // The admin API runs on worker 0.
                shard.primary.checkout(0, std::time::Instant::now()),
            )
            .await
            {
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
        json::ok(serde_json::json!({ "status": "ready", "epoch": snapshot.epoch }))
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            problems.join("; "),
        )
        .into_reply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_routes_and_nothing_else() {
        assert_eq!(Endpoint::find("/health"), Some(Endpoint::Health));
        assert_eq!(
            Endpoint::find("/v1/databases/app/shard-map"),
            Some(Endpoint::ShardMap("app".into()))
        );
        for bad in [
            "",
            "/",
            "/v1",
            "/v1/databases/",
            "/v1/databases//shard-map",
            "/health/",
            "/v1/config/reload/now",
        ] {
            assert_eq!(Endpoint::find(bad), None, "{bad:?}");
        }
        assert_eq!(Endpoint::Reload.method(), Method::POST);
        assert!(!Endpoint::Ready.needs_token() && Endpoint::Config.needs_token());
    }
}
