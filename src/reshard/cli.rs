//! `shardgate reshard start|status|pause|resume|cutover|rollback|abort|finish`: the admin API's
//! resharding routes from the command line, for the operator at the proxy's host.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::{json, Value};

/// Where the admin API is and the token it wants.
pub struct AdminClient {
    /// `host:port`.
    pub address: String,
    pub token: Option<String>,
}

impl AdminClient {
    /// From `http://host:port` (or `host:port`).
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<AdminClient> {
        let address = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        if address.contains('/') || !address.contains(':') || url.starts_with("https://") {
            bail!("--admin must look like http://127.0.0.1:6480 (plain HTTP, host and port), not {url:?}");
        }
        Ok(AdminClient {
            address: address.to_string(),
            token,
        })
    }

    /// One request; the status and the JSON answer.
    async fn call(&self, method: Method, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.address))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.address)
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_string())))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// The answer, or its `{error, detail}` as the error.
    async fn expect(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if !(200..300).contains(&status) {
            let problems = value["problems"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(Value::as_str)
                        .map(|s| format!("\n  - {s}"))
                        .collect::<String>()
                })
                .unwrap_or_default();
            bail!(
                "{status} {}: {}{problems}",
                value["error"].as_str().unwrap_or("error"),
                value["detail"].as_str().unwrap_or("(no detail)")
            );
        }
        Ok(value)
    }
}

/// `start --database D --move a-b:shard … [--rows-per-second N]`: the new job's id.
pub async fn start(
    client: &AdminClient,
    database: &str,
    moves: &[String],
    rows_per_second: Option<u64>,
) -> anyhow::Result<i64> {
    let moves = moves
        .iter()
        .map(|m| move_request(m))
        .collect::<anyhow::Result<Vec<Value>>>()?;
    let mut body = json!({ "database": database, "moves": moves });
    if let Some(rps) = rows_per_second {
        body["rows_per_second"] = json!(rps);
    }
    let answer = client.expect(Method::POST, "/v1/reshard", body).await?;
    let id = answer["id"].as_i64().context("the answer has no job id")?;
    println!(
        "job {id} started: phase {}",
        answer["phase"].as_str().unwrap_or("?")
    );
    Ok(id)
}

/// `status ID`: the job, once; with `watch`, a line refreshed every second until the job ends.
pub async fn status(client: &AdminClient, id: i64, watch: bool) -> anyhow::Result<()> {
    let path = format!("/v1/reshard/{id}");
    let job = client.expect(Method::GET, &path, Value::Null).await?;
    print!("{}", describe(&job));
    if !watch {
        return Ok(());
    }
    let mut last = (Instant::now(), copied(&job));
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let job = client.expect(Method::GET, &path, Value::Null).await?;
        let (rows, at) = (copied(&job), Instant::now());
        let rate = (rows - last.1) as f64 / at.duration_since(last.0).as_secs_f64();
        last = (at, rows);
        let phase = job["phase"].as_str().unwrap_or("?");
        print!("\r{}", progress_line(&job, rows, rate));
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if matches!(phase, "finished" | "rolled_back" | "aborted" | "failed") {
            println!();
            return Ok(());
        }
    }
}

/// `pause|resume|cutover|rollback|abort|finish ID`.
pub async fn act(client: &AdminClient, id: i64, action: &str) -> anyhow::Result<()> {
    let path = format!("/v1/reshard/{id}/{action}");
    let answer = client.expect(Method::POST, &path, json!({})).await?;
    println!(
        "job {id}: {action} accepted, phase {}",
        answer["phase"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `phase [#####.....] 52% 1200/2300 rows 850 rows/s ETA 2s · verify: 0 differ`.
fn progress_line(job: &Value, rows: i64, rate: f64) -> String {
    let phase = job["phase"].as_str().unwrap_or("?");
    let total: i64 = job["progress"]["tables"].as_array().map_or(0, |t| {
        t.iter().filter_map(|t| t["rows_total"].as_i64()).sum()
    });
    let share = if total > 0 {
        (rows as f64 / total as f64).min(1.0)
    } else {
        0.0
    };
    let filled = (share * 20.0).round() as usize;
    let bar = format!("{}{}", "#".repeat(filled), ".".repeat(20 - filled));
    let eta = if rate > 0.0 && rows < total {
        format!("ETA {:.0}s", (total - rows) as f64 / rate)
    } else {
        "ETA -".to_string()
    };
    let verified = match &job["verification"] {
        Value::Null => String::new(),
        v => format!(
            " · verification run {}: {} still differ",
            v["run"], v["remaining"]
        ),
    };
    format!(
        "{phase:<18} [{bar}] {:>3.0}% {rows}/{total} rows {rate:>8.0} rows/s {eta}{verified}   ",
        share * 100.0
    )
}

fn copied(job: &Value) -> i64 {
    job["progress"]["tables"].as_array().map_or(0, |t| {
        t.iter().filter_map(|t| t["rows_copied"].as_i64()).sum()
    })
}

/// One `--move` as the API's move: `512-767:s2`, `range=1000..2000:s2`, `values=eu,us:s2`.
fn move_request(text: &str) -> anyhow::Result<Value> {
    let (what, to) = text.rsplit_once(':').with_context(|| {
        format!("--move {text:?}: write BUCKETS:SHARD (512-767:s2), range=FROM..TO:SHARD or values=A,B:SHARD")
    })?;
    if let Some(range) = what.strip_prefix("range=") {
        let (from, until) = range.split_once("..").with_context(|| {
            format!("--move {text:?}: write range=FROM..TO:SHARD, e.g. range=1000..2000:s2")
        })?;
        let bound = |b: &str| if b.is_empty() { Value::Null } else { scalar(b) };
        return Ok(json!({ "range": { "from": bound(from), "to": bound(until) }, "to": to }));
    }
    if let Some(values) = what.strip_prefix("values=") {
        let values: Vec<Value> = values.split(',').map(scalar).collect();
        return Ok(json!({ "values": values, "to": to }));
    }
    Ok(json!({ "buckets": what, "to": to }))
}

/// A key on the command line: a whole number, or text (in double quotes if it looks like one).
fn scalar(text: &str) -> Value {
    if let Some(quoted) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return json!(quoted);
    }
    text.parse::<i64>()
        .map_or_else(|_| json!(text), |n| json!(n))
}

/// The job as a few lines of text.
pub fn describe(job: &Value) -> String {
    let mut out = format!(
        "job {} · database {} · phase {}{}\n",
        job["id"],
        job["database"].as_str().unwrap_or("?"),
        job["phase"].as_str().unwrap_or("?"),
        if job["paused"] == json!(true) {
            " (paused)"
        } else {
            ""
        }
    );
    for m in job["moves"].as_array().into_iter().flatten() {
        let what = serde_json::from_value::<crate::reshard::Move>(m.clone())
            .map_or_else(|_| "?".into(), |m| m.what());
        out += &format!(
            "  {what} : {} → {}\n",
            m["from"].as_str().unwrap_or("?"),
            m["to"].as_str().unwrap_or("?")
        );
    }
    for t in job["progress"]["tables"].as_array().into_iter().flatten() {
        let done = if t["done"] == json!(true) {
            " (done)"
        } else {
            ""
        };
        out += &format!(
            "  {}: {} rows copied{done}\n",
            t["table"].as_str().unwrap_or("?"),
            t["rows_copied"]
        );
    }
    for h in job["history"].as_array().into_iter().flatten() {
        out += &format!(
            "  {} {}: {}\n",
            h["at"].as_str().unwrap_or("?"),
            h["phase"].as_str().unwrap_or("?"),
            h["note"].as_str().unwrap_or("")
        );
    }
    if let Some(error) = job["error"].as_str() {
        out += &format!("  the last step failed (retried every 2 s): {error}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_on_the_command_line_become_the_apis_moves() {
        let cases = [
            ("512-767:s2", json!({ "buckets": "512-767", "to": "s2" })),
            (
                "range=1000..2000:s2",
                json!({ "range": { "from": 1000, "to": 2000 }, "to": "s2" }),
            ),
            (
                "range=..m:s1",
                json!({ "range": { "from": null, "to": "m" }, "to": "s1" }),
            ),
            (
                "values=eu,\"7\",9:s3",
                json!({ "values": ["eu", "7", 9], "to": "s3" }),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(move_request(text).unwrap(), want, "{text}");
        }
        assert!(move_request("0-9").is_err());
        assert!(move_request("range=5:s1").is_err());
    }
}
