//! The admin API's /v1 routes over real HTTP (hyper's client), against a proxy in front of two
//! real shards: auth, each route's JSON, redaction, bad requests, reload and routing decisions.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, Request};
use serde_json::{json, Value};
use std::net::SocketAddr;

use crate::harness::{eventually_async, Env, PASSWORD};
use crate::shards::{Shards, ShardsOptions};
use std::time::Duration;

pub(crate) const TOKEN: &str = "tok-8c1f2e9a";

pub(crate) struct Answer {
    pub status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// One request on a fresh connection, as an operator's curl would make it.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin");
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, Method::GET, path, Some(TOKEN), "").await
}

pub(crate) async fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    call(addr, Method::POST, path, Some(TOKEN), body).await
}

/// `GET /v1/databases` once a round of health checks has found every server up, with the
/// parts that change from round to round (the round number, each server's WAL position)
/// checked for their form and replaced, so the rest can be compared exactly.
pub(crate) async fn databases_once_checked(admin: SocketAddr) -> Value {
    let all_up = |dbs: &Value| {
        dbs["databases"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|db| db["shards"].as_array().unwrap())
            .flat_map(|shard| shard["servers"].as_array().unwrap())
            .all(|server| server["health"] == "up")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut dbs = get(admin, "/v1/databases").await.json();
    while !all_up(&dbs) {
        assert!(
            std::time::Instant::now() < deadline,
            "servers not all up: {dbs:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        dbs = get(admin, "/v1/databases").await.json();
    }
    let object = dbs.as_object_mut().unwrap();
    assert!(object.remove("health_round").unwrap().as_u64().unwrap() >= 1);
    for db in object["databases"].as_array_mut().unwrap() {
        for shard in db["shards"].as_array_mut().unwrap() {
            for server in shard["servers"].as_array_mut().unwrap() {
                let lsn = server["lsn"].as_str().unwrap_or_default();
                assert!(lsn.contains('/'), "a WAL position, not {lsn:?}");
                server["lsn"] = json!("(checked below)");
            }
        }
    }
    dbs
}

async fn shop() -> Shards {
    Shards::start(
        ShardsOptions::new(2)
            .schema("CREATE TABLE users (id bigint PRIMARY KEY, name text); CREATE TABLE countries (code text PRIMARY KEY);")
            .table("users", "id")
            .reference_table("countries")
            .admin_token(TOKEN),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_wrong_and_right_token() {
    let shop = shop().await;
    let admin = shop.admin_addr();
    let none = call(admin, Method::GET, "/v1/databases", None, "").await;
    assert_eq!(none.status, 401, "{}", none.text);
    assert_eq!(
        none.headers.get(WWW_AUTHENTICATE),
        Some(&HeaderValue::from_static("Bearer realm=\"shardgate\""))
    );
    assert_eq!(none.json()["error"], "unauthorized");
    let wrong = call(admin, Method::GET, "/v1/config", Some("tok-8c1f2e9b"), "").await;
    assert_eq!(
        (wrong.status, wrong.json()),
        (
            403,
            json!({ "error": "forbidden", "detail": "the bearer token does not match admin.token" })
        )
    );
    for path in ["/v1/databases", "/v1/config", "/v1/databases/app/shard-map"] {
        assert_eq!(get(admin, path).await.status, 200, "{path}");
    }
    // Health checks need no token.
    let health = call(admin, Method::GET, "/health", None, "").await;
    assert_eq!(
        (health.status, health.text.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_the_v1_routes_are_closed() {
    let env = Env::start().await;
    let admin = env.proxy.admin_addr();
    let answer = call(admin, Method::GET, "/v1/config", Some("anything"), "").await;
    assert_eq!(answer.status, 403);
    let detail = answer.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("set admin.token in the config"), "{detail}");
    assert_eq!(
        call(admin, Method::GET, "/health", None, "").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_and_shard_map_show_the_topology() {
    let shop = shop().await;
    let admin = shop.admin_addr();
    let port = shop.server_port();
    let server = |db: &str| {
        json!({
            "role": "primary",
            "address": format!("127.0.0.1:{port}"),
            "user": "app",
            "database": db,
            "health": "up",
            "observed_role": "primary",
            "role_mismatch": false,
            "lsn": "(checked below)",
            "ban": null,
            "lag": null,
            // The health checks use their own connections, never the pool's.
            "pool": { "size": 2, "open": 0, "idle": 0, "in_use": 0 },
            "last_connect_error": null,
        })
    };
    let primary = json!(format!("127.0.0.1:{port}"));
    assert_eq!(
        databases_once_checked(admin).await,
        json!({
            "epoch": 1,
            "databases": [{
                "name": "app",
                "sharded": true,
                "default_shard": "s0",
                "shards": [
                    { "name": "s0", "current_primary": primary, "servers": [server("app_s0")] },
                    { "name": "s1", "current_primary": primary, "servers": [server("app_s1")] },
                ],
            }],
        })
    );
    // A query through the proxy opens a connection; it is idle again once the query is done.
    let c = shop.connect().await;
    c.execute("INSERT INTO users (id, name) VALUES (1, 'a')", &[])
        .await
        .unwrap();
    let owner = shop.owner(1);
    // The connection goes back to the pool just after the reply is relayed: poll briefly.
    eventually_async(
        "the connection back in the pool",
        Duration::from_secs(5),
        || async {
            let dbs = get(admin, "/v1/databases").await.json();
            dbs["databases"][0]["shards"][owner]["servers"][0]["pool"]
                == json!({ "size": 2, "open": 1, "idle": 1, "in_use": 0 })
        },
    )
    .await;
    assert_eq!(
        get(admin, "/v1/databases/app/shard-map").await.json(),
        json!({
            "database": "app",
            "epoch": 1,
            "map_epoch": null,
            "function": "hash",
            "key_type": "bigint",
            "buckets": 8,
            "shards": [
                { "name": "s0", "buckets": ["0-3"] },
                { "name": "s1", "buckets": ["4-7"] },
            ],
            "default_shard": "s0",
            "tables": [{ "table": "users", "key_column": "id" }],
            "reference_tables": ["countries"],
        })
    );
    let missing = get(admin, "/v1/databases/nope/shard-map").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "unknown_database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let shop = shop().await;
    let admin = shop.admin_addr();
    let bad = post(admin, "/v1/route", "{\"database\": \"app\", \"sql\": ").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.json()["error"], "bad_request");
    let missing_field = post(admin, "/v1/route", r#"{"sql": "SELECT 1"}"#).await;
    assert_eq!(missing_field.status, 400, "{}", missing_field.text);
    let unknown = get(admin, "/v1/nothing").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "not_found");
    let wrong_method = post(admin, "/v1/databases", "").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers.get(ALLOW).unwrap(), "GET");
    assert_eq!(wrong_method.json()["error"], "method_not_allowed");
    let huge = format!(r#"{{"database": "app", "sql": "{}"}}"#, "x".repeat(2 << 20));
    let too_large = post(admin, "/v1/route", &huge).await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json()["error"], "payload_too_large");
    // Still serving, and a client of the proxy never noticed.
    assert_eq!(get(admin, "/v1/config").await.status, 200);
    let c = shop.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_names_the_shard_or_the_refusal() {
    let shop = shop().await;
    let admin = shop.admin_addr();
    let route = |body: Value| async move { post(admin, "/v1/route", &body.to_string()).await };
    let owner = |k: i64| format!("s{}", shop.owner(k));
    let keyed =
        route(json!({ "database": "app", "sql": "SELECT * FROM users WHERE id = 5" })).await;
    assert_eq!(
        keyed.json(),
        json!({
            "database": "app",
            "epoch": 1,
            "decision": "single-shard",
            "detail": format!("single-shard: shard \"{}\"", owner(5)),
            "shards": [owner(5)],
        })
    );
    // A key in a bind parameter: unknown without params, the owner's shard with them.
    let sql = "SELECT * FROM users WHERE id = $1";
    let unbound = route(json!({ "database": "app", "sql": sql })).await.json();
    assert_eq!(unbound["shards"], Value::Null);
    assert_eq!(unbound["decision"], "single-shard");
    for key in [1, 2, 3, 4] {
        let bound = route(json!({ "database": "app", "sql": sql, "params": [key] }))
            .await
            .json();
        assert_eq!(bound["shards"], json!([owner(key)]), "key {key}");
        let text = route(json!({ "database": "app", "sql": sql, "params": [key.to_string()] }))
            .await
            .json();
        assert_eq!(text["shards"], json!([owner(key)]), "key {key} as text");
    }
    let scatter = route(json!({ "database": "app", "sql": "SELECT * FROM users" }))
        .await
        .json();
    assert_eq!(
        (&scatter["decision"], &scatter["shards"]),
        (&json!("multi-shard"), &json!(["s0", "s1"]))
    );
    let refused = route(json!({ "database": "app", "sql": "UPDATE users SET name = 'x'" })).await;
    assert_eq!(refused.status, 200);
    let refused = refused.json();
    assert_eq!(refused["decision"], "rejected");
    assert_eq!(refused["sqlstate"], "0A000");
    assert_eq!(refused["shards"], Value::Null);
    assert!(
        refused["detail"].as_str().unwrap().starts_with(
            "rejected: UPDATE on sharded table \"users\" must filter on its sharding key \"id\""
        ),
        "{refused}"
    );
    let unknown = route(json!({ "database": "nope", "sql": "SELECT 1" })).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "unknown_database");
    let bad_param = route(json!({ "database": "app", "sql": sql, "params": [[1]] })).await;
    assert_eq!(bad_param.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_valid_configs_and_refuses_the_rest() {
    let shop = shop().await;
    let admin = shop.admin_addr();
    let yaml = shop.config_yaml();
    let write = |text: &str| std::fs::write(shop.config_path(), text).unwrap();
    let epoch =
        || async { get(admin, "/v1/databases/app/shard-map").await.json()["epoch"].clone() };
    let reload = || async { post(admin, "/v1/config/reload", "").await };

    // A bigger pool: applied, epoch 2, visible in the config and the pools.
    assert!(yaml.contains("size: 2,"), "{yaml}");
    write(&yaml.replace("size: 2,", "size: 5,"));
    let ok = reload().await;
    assert_eq!(
        (ok.status, ok.json()),
        (200, json!({ "epoch": 2, "previous_epoch": 1 }))
    );
    assert_eq!(epoch().await, 2);
    assert_eq!(get(admin, "/v1/config").await.json()["pool"]["size"], 5);
    let dbs = get(admin, "/v1/databases").await.json();
    assert_eq!(
        dbs["databases"][0]["shards"][0]["servers"][0]["pool"]["size"],
        5
    );

    // Invalid: 422 with the YAML path of the problem; nothing changes.
    write(&yaml.replace("size: 2,", "size: 5, sise: 3,"));
    let invalid = reload().await;
    assert_eq!(invalid.status, 422, "{}", invalid.text);
    let invalid = invalid.json();
    assert_eq!(invalid["error"], "invalid_config");
    assert_eq!(invalid["issues"][0]["path"], "pool.sise");
    assert!(
        invalid["detail"]
            .as_str()
            .unwrap()
            .ends_with("epoch 2 stays in force"),
        "{invalid}"
    );
    assert_eq!(epoch().await, 2);

    // Moving bucket 4 from s1 to s0: refused, nothing changes.
    let moved = yaml
        .replace("size: 2,", "size: 5,")
        .replace("buckets: 0-3, shard: s0", "buckets: 0-4, shard: s0")
        .replace("buckets: 4-7, shard: s1", "buckets: 5-7, shard: s1");
    assert_ne!(moved, yaml.replace("size: 2,", "size: 5,"));
    write(&moved);
    let refused = reload().await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    let refused = refused.json();
    assert_eq!(refused["error"], "moves_keys");
    assert_eq!(
        refused["moves"],
        json!(["databases.app: bucket 4 would move from shard \"s1\" to \"s0\""])
    );
    assert_eq!(epoch().await, 2);
    assert_eq!(
        get(admin, "/v1/databases/app/shard-map").await.json()["shards"],
        json!([{ "name": "s0", "buckets": ["0-3"] }, { "name": "s1", "buckets": ["4-7"] }])
    );
    // The proxy still serves with the map in force.
    let c = shop.connect().await;
    let key = shop.keys_on(1).next().unwrap();
    c.execute("INSERT INTO users (id, name) VALUES ($1, 'b')", &[&key])
        .await
        .unwrap();
    assert_eq!(shop.ids_on(1, "SELECT id FROM users"), vec![key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_contains_a_configured_secret() {
    let shop = shop().await;
    let admin = shop.admin_addr();
    let mut bodies = Vec::new();
    for path in [
        "/health",
        "/ready",
        "/v1/databases",
        "/v1/databases/app/shard-map",
        "/v1/config",
        "/v1/nothing",
    ] {
        bodies.push(get(admin, path).await.text);
    }
    let route = json!({ "database": "app", "sql": "SELECT * FROM users WHERE id = 1" });
    bodies.push(post(admin, "/v1/route", &route.to_string()).await.text);
    bodies.push(post(admin, "/v1/config/reload", "").await.text);
    // A refused reload whose file has the password where a number belongs: the parser's
    // message quotes the value, and the API must not pass it on.
    let broken = shop
        .config_yaml()
        .replace("size: 2,", &format!("size: {PASSWORD},"));
    std::fs::write(shop.config_path(), broken).unwrap();
    let refused = post(admin, "/v1/config/reload", "").await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(
        refused.text.contains(r#"invalid type: string \"***\""#),
        "{}",
        refused.text
    );
    bodies.push(refused.text);
    let config = get(admin, "/v1/config").await.json();
    assert_eq!(config["admin"]["token"], "***");
    assert_eq!(config["users"][0]["password"], "***");
    let primary = config["databases"]["app"]["shards"]["s0"]["primary"]
        .as_str()
        .unwrap();
    assert_eq!(
        primary,
        format!("postgres://app:***@127.0.0.1:{}/app_s0", shop.server_port())
    );
    for body in &bodies {
        assert!(!body.contains(PASSWORD), "the password leaked: {body}");
        assert!(!body.contains(TOKEN), "the admin token leaked: {body}");
    }
}
