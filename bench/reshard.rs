//! `cargo bench --bench reshard`: online resharding measured (issue 6) on one Postgres cluster
//! holding two shard databases and the control database, with shardgate in-process.
//!
//! - backfill rows/s for a narrow table (`id bigint, v int`) and a wide one (~1 kB per row:
//!   text, jsonb, numeric, timestamptz), while 8 clients write through shardgate;
//! - client write latency (p50/p99) on moving keys and on other keys, before the move and during
//!   dual-write/backfill/verification;
//! - the hold at each cutover (as the driver measured it, and the slowest client write on a
//!   moving key around it), over several moves there and back.
//!
//! `BENCH_NARROW_ROWS` (default 400000) and `BENCH_MOVES` (default 6) size it. The result is
//! printed and written to `bench/results/latest-reshard.md`. One machine, shared and noisy: read
//! the figures as orders of magnitude, and compare within one run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use shardgate::cluster::{Cluster, ClusterOptions, PgBinaries, TempDir};
use shardgate::config::{Config, KeyType};
use shardgate::proxy::Proxy;
use shardgate::router::hash::{bucket_of, bucket_sql, hash_int};

const USER: &str = "bench";
const PASSWORD: &str = "bench";
const BUCKETS: u32 = 1024;
/// The moved slice: half of s0's buckets, a quarter of all keys.
const SLICE: (u32, u32) = (0, 255);
const SCHEMA: &str = "CREATE TABLE narrow (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0); \
    CREATE TABLE wide (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0, a text, b text, \
        doc jsonb, n numeric(20,6), at timestamptz);";

/// What the workload is doing now, to file its latencies.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const CUTOVER: u8 = 2;
const AFTER: u8 = 3;

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run() -> anyhow::Result<()> {
    let narrow_rows = env_number("BENCH_NARROW_ROWS", 400_000) as i64;
    let moves = env_number("BENCH_MOVES", 6) as usize;
    let bins = PgBinaries::find().map_err(anyhow::Error::msg)?;
    let dir = TempDir::new("sg-bench-reshard")?;
    let opts = ClusterOptions {
        name: "shards".into(),
        fast: true,
        max_connections: 200,
        extra_conf: vec![("shared_buffers".into(), "512MB".into())],
        ..ClusterOptions::default()
    };
    let pg = Cluster::start(&bins, dir.path(), opts)?;
    pg.create_user(USER, PASSWORD)?;
    for (i, db) in ["bench_s0", "bench_s1", "bench_control"].iter().enumerate() {
        pg.create_database(db)?;
        pg.grant_all(db, USER)?;
        let schema = if i < 2 { SCHEMA } else { "" };
        pg.psql(db, &format!("SET ROLE {USER}; {schema}"))?;
    }
    eprintln!(
        "bench: loading {narrow_rows} narrow and {} wide rows …",
        narrow_rows / 10
    );
    for (i, db) in ["bench_s0", "bench_s1"].iter().enumerate() {
        let owned = |col: &str| {
            let expr = bucket_sql(col, KeyType::Bigint, BUCKETS);
            let half = BUCKETS / 2;
            if i == 0 {
                format!("{expr} < {half}")
            } else {
                format!("{expr} >= {half}")
            }
        };
        let sql = format!(
            "SET ROLE {USER}; \
             INSERT INTO narrow SELECT g, 0 FROM generate_series(1, {narrow_rows}) g WHERE {}; \
             INSERT INTO wide SELECT g, 0, repeat(md5(g::text), 12), repeat('x', 300), \
                 jsonb_build_object('g', g, 'tags', ARRAY['a', 'b', md5(g::text)]), g * 1.000001, \
                 now() - g * interval '1 second' \
             FROM generate_series(1, {}) g WHERE {}; VACUUM ANALYZE",
            owned("g"),
            narrow_rows / 10,
            owned("g")
        );
        pg.psql(db, &sql)?;
    }
    let url = |db: &str| format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", pg.port());
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0, token: bench }}\n\
         users:\n  - {{ name: {USER}, password: {PASSWORD} }}\n\
         pool: {{ mode: transaction, size: 8, checkout_timeout_ms: 10000 }}\n\
         control: \"{}\"\n\
         databases:\n  bench:\n    shards:\n      s0: {{ primary: \"{}\" }}\n      s1: {{ primary: \"{}\" }}\n\
         \x20   sharding: {{ key_type: bigint, function: hash, buckets: {BUCKETS}, map: [{{ buckets: 0-511, shard: s0 }}, {{ buckets: 512-1023, shard: s1 }}] }}\n\
         \x20   tables: {{ narrow: id, wide: id }}\n",
        url("bench_control"),
        url("bench_s0"),
        url("bench_s1")
    );
    let config = Config::parse_with_env(&yaml, &|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let proxy = Proxy::start(config).await?;
    let client_url = format!("postgres://{USER}:{PASSWORD}@{}/bench", proxy.addr());
    let admin = Admin(proxy.admin_addr());

    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Samples>> = Arc::default();
    let mut clients = Vec::new();
    for n in 0..8 {
        let (url, phase, stop, samples) = (
            client_url.clone(),
            phase.clone(),
            stop.clone(),
            samples.clone(),
        );
        clients.push(tokio::spawn(writer(
            url,
            n,
            narrow_rows,
            phase,
            stop,
            samples,
        )));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut report = Report::default();
    let mut owner_is_s0 = true;
    for i in 0..moves {
        let to = if owner_is_s0 { "s1" } else { "s0" };
        phase.store(DURING, Ordering::Relaxed);
        let body = format!(
            r#"{{"database": "bench", "moves": [{{"buckets": "{}-{}", "to": "{to}"}}]}}"#,
            SLICE.0, SLICE.1
        );
        let id = admin.start(&body).await?;
        let job = admin.wait(id, "ready", Duration::from_secs(600)).await?;
        if i == 0 {
            report.backfill = backfill_rates(&job);
        }
        phase.store(CUTOVER, Ordering::Relaxed);
        admin.act(id, "cutover").await?;
        let job = admin
            .wait(id, "reverse_dual_write", Duration::from_secs(60))
            .await?;
        phase.store(AFTER, Ordering::Relaxed);
        report
            .holds
            .push(hold_ms(&job).context("no hold in the history")?);
        admin.act(id, "finish").await?;
        admin.wait(id, "finished", Duration::from_secs(600)).await?;
        owner_is_s0 = !owner_is_s0;
        eprintln!(
            "bench: move {} of {moves} done (hold {} ms)",
            i + 1,
            report.holds.last().unwrap()
        );
        if i == 0 {
            // Only the first move's dual-write counts as "during"; the later ones measure holds.
            phase.store(AFTER, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await??;
    }
    report.samples = std::mem::take(&mut *samples.lock().unwrap());
    let text = report.render(narrow_rows);
    println!("{text}");
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/latest-reshard.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    proxy.shutdown().await;
    Ok(())
}

/// Latencies per (phase, moving key?).
type Samples = BTreeMap<(u8, bool), Vec<Duration>>;

/// One client: `UPDATE narrow SET v = v + 1` on keys spread over all buckets, alternately a
/// moving key and another; each latency filed under the phase it started in.
async fn writer(
    url: String,
    n: i64,
    rows: i64,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Samples>>,
) -> anyhow::Result<()> {
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let moving = |k: i64| (SLICE.0..=SLICE.1).contains(&bucket_of(hash_int(k), BUCKETS));
    let mut k = 1 + n * 7919;
    let mut mine = Vec::new();
    let mut turn = false;
    while !stop.load(Ordering::Relaxed) {
        k = (k * 48271) % rows + 1;
        if moving(k) != turn {
            continue;
        }
        turn = !turn;
        let p = phase.load(Ordering::Relaxed);
        let started = Instant::now();
        c.execute("UPDATE narrow SET v = v + 1 WHERE id = $1", &[&k])
            .await?;
        mine.push(((p, moving(k)), started.elapsed()));
        if mine.len() >= 256 {
            let mut all = samples.lock().unwrap();
            for (key, d) in mine.drain(..) {
                all.entry(key).or_default().push(d);
            }
        }
    }
    let mut all = samples.lock().unwrap();
    for (key, d) in mine {
        all.entry(key).or_default().push(d);
    }
    Ok(())
}

struct Admin(std::net::SocketAddr);

impl Admin {
    async fn call(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, Value)> {
        use http_body_util::{BodyExt, Full};
        let stream = tokio::net::TcpStream::connect(self.0).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bench")
            .header("authorization", "Bearer bench")
            .body(Full::new(bytes::Bytes::from(body.to_string())))?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn start(&self, body: &str) -> anyhow::Result<i64> {
        let (status, answer) = self.call("POST", "/v1/reshard", body).await?;
        if status != 202 {
            bail!("starting the move: {status} {answer}");
        }
        answer["id"].as_i64().context("no job id")
    }

    async fn act(&self, id: i64, action: &str) -> anyhow::Result<()> {
        let (status, answer) = self
            .call("POST", &format!("/v1/reshard/{id}/{action}"), "")
            .await?;
        if status != 202 {
            bail!("{action}: {status} {answer}");
        }
        Ok(())
    }

    async fn wait(&self, id: i64, phase: &str, within: Duration) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let (_, job) = self.call("GET", &format!("/v1/reshard/{id}"), "").await?;
            if job["phase"] == phase {
                return Ok(job);
            }
            if started.elapsed() > within {
                bail!("job {id} not in phase {phase} after {within:?}: {job}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// (table, rows, rows/s) from the job's progress.
fn backfill_rates(job: &Value) -> Vec<(String, i64, f64)> {
    job["progress"]["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["table"].as_str().unwrap_or("?").to_string(),
                t["rows_copied"].as_i64().unwrap_or(0),
                t["rows_per_second"].as_f64().unwrap_or(0.0),
            )
        })
        .collect()
}

/// The hold the driver noted: "… (writers of them held N ms)".
fn hold_ms(job: &Value) -> Option<u64> {
    job["history"].as_array()?.iter().rev().find_map(|h| {
        let note = h["note"].as_str()?;
        let at = note.find("held ")? + 5;
        note[at..].split(' ').next()?.parse().ok()
    })
}

#[derive(Default)]
struct Report {
    backfill: Vec<(String, i64, f64)>,
    holds: Vec<u64>,
    samples: Samples,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

impl Report {
    fn render(&mut self, narrow_rows: i64) -> String {
        let mut t = String::from("# Online resharding (cargo bench --bench reshard)\n\n");
        let _ = writeln!(
            t,
            "One Postgres 15 cluster holding both shard databases and the control database, shardgate \
             in-process, 8 clients writing `UPDATE narrow SET v = v + 1 WHERE id = $1` through it the \
             whole time (half on moving keys). {narrow_rows} narrow rows, {} wide (~1 kB) rows; each move \
             hands buckets {}-{} of {BUCKETS} (a quarter of the keys) to the other shard. Shared 2-core \
             machine: compare within this table only.\n",
            narrow_rows / 10,
            SLICE.0,
            SLICE.1
        );
        t += "## Backfill (first move, while the clients write)\n\n| table | rows copied | rows/s |\n|---|---:|---:|\n";
        for (table, rows, rate) in &self.backfill {
            let _ = writeln!(t, "| {table} | {rows} | {rate:.0} |");
        }
        t += "\n## Client write latency (ms)\n\n| when | keys | writes | p50 | p99 | max |\n|---|---|---:|---:|---:|---:|\n";
        for ((phase, moving), lat) in &mut self.samples {
            lat.sort();
            let when = match *phase {
                BEFORE => "before the move",
                DURING => "dual-write, backfill, verify",
                CUTOVER => "around cutovers",
                _ => "between moves",
            };
            let keys = if *moving { "moving" } else { "other" };
            let _ = writeln!(
                t,
                "| {when} | {keys} | {} | {:.2} | {:.2} | {:.1} |",
                lat.len(),
                percentile(lat, 0.5),
                percentile(lat, 0.99),
                percentile(lat, 1.0)
            );
        }
        let mut holds = self.holds.clone();
        holds.sort();
        let _ = writeln!(
            t,
            "\n## Cutover holds (driver's measure, {} cutovers)\n\nms: {:?} · p50 {} · max {}\n",
            holds.len(),
            holds,
            holds.get(holds.len() / 2).copied().unwrap_or(0),
            holds.last().copied().unwrap_or(0)
        );
        t
    }
}
