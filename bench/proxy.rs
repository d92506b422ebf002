//! `cargo bench --bench proxy`: pgbench `-S` directly against Postgres, through pgbouncer
//! (Debian's package, transaction mode, when installed) and through shardgate, in one run, with
//! the same pool size, printed side by side with ratios to direct. `BENCH_SCENARIO=routed` runs
//! the same point read from a script file and adds shardgate routing it across two shards. See
//! bench/README.md.
//!
//! Layout: `pgbench.rs` runs pgbench and reads its report, `targets.rs` starts the proxies and
//! reads their CPU time, `routed.rs` sets up the shards of the routed scenario, `report.rs` takes
//! medians and writes the table. This file sets up, interleaves the runs and writes
//! `bench/results/latest.md` (`latest-routed.md`).

#[path = "proxy/pgbench.rs"]
mod pgbench;
#[path = "proxy/report.rs"]
mod report;
#[path = "proxy/routed.rs"]
mod routed;
#[path = "proxy/targets.rs"]
mod targets;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use shardgate::cluster::{Cluster, ClusterOptions, PgBinaries, TempDir};

use pgbench::{Login, Mode, Pgbench, Workload};
use report::{Cell, Sample};
use targets::{Shardgate, Target};

const USER: &str = "bench";
const PASSWORD: &str = "bench";
const DB: &str = "bench";

/// Which comparison to run (`BENCH_SCENARIO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `pgbench -S` against direct, pgbouncer and shardgate with one shard (pass-through).
    Foundation,
    /// The same point read as a script file, plus shardgate routing it across two shards.
    Routed,
}

impl Scenario {
    fn parse(s: &str) -> Option<Scenario> {
        match s {
            "foundation" => Some(Scenario::Foundation),
            "routed" => Some(Scenario::Routed),
            _ => None,
        }
    }
}

/// The knobs, from `BENCH_*` environment variables.
#[derive(Debug, Clone)]
struct Settings {
    scenario: Scenario,
    secs: u64,
    reps: usize,
    warmup_secs: u64,
    scale: u32,
    pool_size: u32,
    clients: Vec<u32>,
    modes: Vec<Mode>,
    /// Also run each shardgate with per-statement metrics and hotspots off (`BENCH_UNOBSERVED=1`).
    unobserved: bool,
    /// Also run each shardgate on one thread, `--threads 1` (`BENCH_ONE_THREAD=1`).
    one_thread: bool,
    /// Also run each shardgate from this binary (`BENCH_BASELINE`): two builds side by side.
    baseline: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let modes = env_list("BENCH_MODES", "simple,extended,prepared")?
            .iter()
            .map(|m| Mode::parse(m).with_context(|| format!("BENCH_MODES: unknown mode {m:?}")))
            .collect::<anyhow::Result<_>>()?;
        let clients = env_list("BENCH_CLIENTS", "8,32")?
            .iter()
            .map(|c| {
                c.parse()
                    .with_context(|| format!("BENCH_CLIENTS: bad count {c:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let scenario = env_list("BENCH_SCENARIO", "foundation")?.join(",");
        let scenario = Scenario::parse(&scenario)
            .with_context(|| format!("BENCH_SCENARIO: {scenario:?} is not foundation or routed"))?;
        Ok(Settings {
            scenario,
            secs: env_num("BENCH_SECS", 10)?,
            reps: env_num("BENCH_REPS", 3)?,
            warmup_secs: env_num("BENCH_WARMUP_SECS", 3)?,
            scale: env_num("BENCH_SCALE", 10)?,
            pool_size: env_num("BENCH_POOL", 10)?,
            clients,
            modes,
            unobserved: env_num("BENCH_UNOBSERVED", 0u8)? != 0,
            one_thread: env_num("BENCH_ONE_THREAD", 0u8)? != 0,
            baseline: baseline_binary()?,
        })
    }
}

fn baseline_binary() -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = std::env::var_os("BENCH_BASELINE").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!("BENCH_BASELINE={}: no such file (a shardgate binary, e.g. a copy of target/release/shardgate built from another commit)", path.display());
    }
    Ok(Some(path))
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

fn env_list(name: &str, default: &str) -> anyhow::Result<Vec<String>> {
    let v = std::env::var(name).unwrap_or_else(|_| default.to_string());
    let items: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        bail!("{name} is empty");
    }
    Ok(items)
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a plain main has no harness flags to honour.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What every run of one benchmark shares.
struct Bench<'a> {
    pgbench: &'a Pgbench,
    workload: Workload,
    settings: &'a Settings,
}

fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let bins = PgBinaries::find()?;
    // Drop order is the reverse of declaration: proxies, then shards, then Postgres, then the
    // directory.
    let tmp = TempDir::new("shardgate-bench")?;
    let pg = start_postgres(&bins, tmp.path(), "pg")?;
    let direct = login(&pg);
    let pgbench = Pgbench {
        program: tool_or_path(&bins, "pgbench"),
        scratch: tmp.path().to_path_buf(),
    };
    eprintln!("bench: pgbench -i -s {} …", settings.scale);
    pgbench
        .initialize(&direct, settings.scale)
        .map_err(anyhow::Error::msg)?;
    let (workload, shards) = set_up_scenario(&bins, tmp.path(), &pgbench, &settings)?;
    let shard_logins: Vec<Login> = shards.iter().map(|(_, l)| l.clone()).collect();
    let mut notes = Vec::new();
    let targets = start_targets(
        &bins,
        tmp.path(),
        &direct,
        &shard_logins,
        &settings,
        &mut notes,
    )?;
    let header = header(&bins, &settings, &notes);
    eprint!("{header}");
    let bench = Bench {
        pgbench: &pgbench,
        workload,
        settings: &settings,
    };
    let cells = run_matrix(&bench, &targets)?;
    report_proxy_logs(&targets);
    let text = format!("{header}\n{}", report::table(&cells));
    println!("\n{text}");
    let path = write_results(settings.scenario, &text)?;
    eprintln!("bench: written to {}", path.display());
    Ok(())
}

/// The scenario's workload and, for the routed one, its loaded shard clusters.
fn set_up_scenario(
    bins: &PgBinaries,
    base: &Path,
    pgbench: &Pgbench,
    settings: &Settings,
) -> anyhow::Result<(Workload, Vec<(Cluster, Login)>)> {
    Ok(match settings.scenario {
        Scenario::Foundation => (Workload::SelectOnly, Vec::new()),
        Scenario::Routed => (
            Workload::Script {
                path: routed::write_script(base)?,
                scale: settings.scale,
            },
            routed::start_shards(bins, base, pgbench, settings.scale)?,
        ),
    })
}

/// One cluster with the bench user and database. fsync is off (`fast`): harmless for a read-only
/// benchmark, and said so in the output.
fn start_postgres(bins: &PgBinaries, base: &Path, name: &str) -> anyhow::Result<Cluster> {
    let opts = ClusterOptions {
        name: name.into(),
        fast: true,
        max_connections: 200,
        // Scale 10 is about 160 MB; keep it all in shared buffers.
        extra_conf: vec![("shared_buffers".into(), "256MB".into())],
        ..ClusterOptions::default()
    };
    let pg = Cluster::start(bins, base, opts)?;
    pg.create_user(USER, PASSWORD)?;
    pg.create_database(DB)?;
    pg.grant_all(DB, USER)?;
    Ok(pg)
}

/// How pgbench logs in to a cluster from [`start_postgres`].
fn login(pg: &Cluster) -> Login {
    Login {
        port: pg.port(),
        user: USER.into(),
        password: PASSWORD.into(),
        db: DB.into(),
    }
}

/// direct, then pgbouncer (if installed), then shardgate with one shard in front of direct, then
/// (given shards) shardgate routing across them.
fn start_targets(
    bins: &PgBinaries,
    base: &Path,
    direct: &Login,
    shards: &[Login],
    settings: &Settings,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Target>> {
    let psql = bins.psql();
    let mut targets = vec![Target {
        name: "direct",
        login: direct.clone(),
        process: None,
    }];
    match targets::find_pgbouncer() {
        Some(program) => {
            notes.push(format!("pgbouncer: {}", version(&program, "--version")));
            let dir = base.join("pgbouncer");
            targets.push(targets::start_pgbouncer(
                &program,
                &dir,
                direct,
                settings.pool_size,
                &psql,
            )?);
        }
        None => {
            let msg = "pgbouncer: not installed (apt-get install pgbouncer)";
            eprintln!("bench: {msg}");
            notes.push(msg.to_string());
        }
    }
    let sharding = routed::sharding_yaml();
    let mut specs = vec![(
        Shardgate {
            name: "shardgate",
            sharding: "",
            observed: true,
            threads: None,
            program: None,
        },
        std::slice::from_ref(direct),
    )];
    if !shards.is_empty() {
        let spec = Shardgate {
            name: "shardgate-routed",
            sharding: &sharding,
            observed: true,
            threads: None,
            program: None,
        };
        specs.push((spec, shards));
    }
    let originals = specs.len();
    if settings.unobserved {
        let twins: Vec<_> = specs[..originals]
            .iter()
            .map(|(s, l)| (unobserved(s), *l))
            .collect();
        specs.extend(twins);
    }
    if settings.one_thread {
        let twins: Vec<_> = specs[..originals]
            .iter()
            .map(|(s, l)| (one_thread(s), *l))
            .collect();
        specs.extend(twins);
    }
    if let Some(program) = &settings.baseline {
        notes.push(format!("shardgate-baseline: {}", program.display()));
        let twins: Vec<_> = specs[..originals]
            .iter()
            .map(|(s, l)| (baseline(s, program), *l))
            .collect();
        specs.extend(twins);
    }
    for (spec, logins) in &specs {
        let dir = base.join(spec.name);
        let target = targets::start_shardgate(spec, &dir, logins, settings.pool_size, &psql)?;
        targets.push(target);
    }
    Ok(targets)
}

/// `spec` with per-statement metrics and hotspot tracking off (`BENCH_UNOBSERVED=1`).
fn unobserved<'a>(spec: &Shardgate<'a>) -> Shardgate<'a> {
    let names = ["shardgate-unobserved", "shardgate-routed-unobserved"];
    Shardgate {
        observed: false,
        ..renamed(spec, names)
    }
}

/// `spec` on one thread (`BENCH_ONE_THREAD=1`).
fn one_thread<'a>(spec: &Shardgate<'a>) -> Shardgate<'a> {
    let names = ["shardgate-1thread", "shardgate-routed-1thread"];
    Shardgate {
        threads: Some(1),
        ..renamed(spec, names)
    }
}

/// `spec` run from another build (`BENCH_BASELINE`).
fn baseline<'a>(spec: &Shardgate<'a>, program: &'a Path) -> Shardgate<'a> {
    let names = ["shardgate-baseline", "shardgate-routed-baseline"];
    Shardgate {
        program: Some(program),
        ..renamed(spec, names)
    }
}

/// A twin of `spec` named `[pass-through twin, routed twin]`.
fn renamed<'a>(spec: &Shardgate<'a>, [plain, routed]: [&'static str; 2]) -> Shardgate<'a> {
    let name = if spec.name == "shardgate" {
        plain
    } else {
        routed
    };
    Shardgate { name, ..*spec }
}

/// Runs every combination `reps` times. Within a repetition the targets take turns on each
/// (clients, mode), starting with a different one each time, so that drift on a shared machine
/// hits them all alike.
fn run_matrix(bench: &Bench, targets: &[Target]) -> anyhow::Result<Vec<Cell>> {
    let settings = bench.settings;
    let tick = targets::clock_ticks_per_sec()?;
    warm_up(bench, targets);
    let mut cells = Vec::new();
    for &clients in &settings.clients {
        for &mode in &settings.modes {
            for t in targets {
                cells.push(Cell {
                    target: t.name,
                    mode,
                    clients,
                    runs: Vec::new(),
                });
            }
        }
    }
    for rep in 0..settings.reps {
        for group in cells.chunks_mut(targets.len()) {
            for i in 0..targets.len() {
                let k = (i + rep) % targets.len();
                let (cell, target) = (&mut group[k], &targets[k]);
                eprintln!(
                    "bench: rep {}/{} {} {} -c {}",
                    rep + 1,
                    settings.reps,
                    target.name,
                    cell.mode.as_str(),
                    cell.clients
                );
                let sample = measure(bench, target, cell.mode, cell.clients, tick);
                if let Err(e) = &sample {
                    eprintln!("bench:   failed: {e}");
                }
                cell.runs.push(sample);
            }
        }
    }
    Ok(cells)
}

/// Warnings and errors the proxies logged during the run, on stderr.
fn report_proxy_logs(targets: &[Target]) {
    for t in targets {
        let Some(p) = &t.process else { continue };
        let lines = p.log_problems();
        if !lines.is_empty() {
            eprintln!(
                "bench: {} logged {} warning/error lines; last ones:",
                t.name,
                lines.len()
            );
            for l in &lines[lines.len().saturating_sub(10)..] {
                eprintln!("  {l}");
            }
        }
    }
}

/// A short unmeasured run per target, so that caches, pools and JIT-free plans are warm.
fn warm_up(bench: &Bench, targets: &[Target]) {
    let settings = bench.settings;
    if settings.warmup_secs == 0 {
        return;
    }
    for t in targets {
        eprintln!("bench: warm-up {} ({}s)", t.name, settings.warmup_secs);
        let clients = settings.clients.iter().copied().max().unwrap_or(8);
        let secs = settings.warmup_secs;
        let _ = (bench.pgbench).bench(&bench.workload, &t.login, Mode::Simple, clients, secs);
    }
}

/// One pgbench run, with the proxy's CPU time over it divided by the queries it relayed.
fn measure(
    bench: &Bench,
    target: &Target,
    mode: Mode,
    clients: u32,
    ticks_per_sec: u64,
) -> Result<Sample, String> {
    let cpu = || -> Result<Option<targets::CpuTicks>, String> {
        target
            .process
            .as_ref()
            .map(|p| targets::cpu_ticks(p.pid()).map_err(|e| format!("{e:#}")))
            .transpose()
    };
    let before = cpu()?;
    let secs = bench.settings.secs;
    let summary = (bench.pgbench).bench(&bench.workload, &target.login, mode, clients, secs)?;
    let after = cpu()?;
    let per_query =
        |ticks: u64| ticks as f64 * 1e6 / ticks_per_sec as f64 / summary.transactions.max(1) as f64;
    let cpu = before.zip(after).map(|(b, a)| report::Cpu {
        user_us: per_query(a.user - b.user),
        system_us: per_query(a.system - b.system),
    });
    Ok(Sample {
        tps: summary.tps,
        latency_ms: summary.latency_ms,
        cpu,
    })
}

/// What was measured, on what, with which caveats.
fn header(bins: &PgBinaries, s: &Settings, notes: &[String]) -> String {
    let title = match s.scenario {
        Scenario::Foundation => "proxy",
        Scenario::Routed => "routed",
    };
    let mut h = format!("# shardgate {title} benchmark\n\n");
    let mut line = |k: &str, v: String| {
        let _ = writeln!(h, "- {k}: {v}");
    };
    line("date", shell("date -u '+%Y-%m-%d %H:%M UTC'"));
    line(
        "shardgate",
        shell("git rev-parse --short HEAD 2>/dev/null || echo unknown"),
    );
    line(
        "machine",
        format!(
            "{} cores ({}), load average at start {}",
            shell("nproc"),
            shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
            shell("cut -d' ' -f1-3 /proc/loadavg")
        ),
    );
    line("postgres", version(&bins.tool("postgres"), "--version"));
    for n in notes {
        let (k, v) = n.split_once(": ").unwrap_or(("note", n));
        line(k, v.to_string());
    }
    for (k, v) in workload_lines(s) {
        line(k, v);
    }
    line(
        "caveats",
        "Postgres (fsync off: harmless for a read-only workload), pgbench and the proxy all share \
         this machine's cores, so a proxy competes with its own load generator; CPU µs/query is \
         the proxy process's utime+stime from /proc over the run, divided by transactions \
         (one query each), counted in clock ticks (1/CLK_TCK s, usually 10 ms)"
            .to_string(),
    );
    h
}

/// The header lines that say what ran, and where.
fn workload_lines(s: &Settings) -> Vec<(&'static str, String)> {
    let runs = format!(
        "-n -T {} -j 2 -M <mode>, scale {}, median of {} runs, targets interleaved",
        s.secs, s.scale, s.reps
    );
    let pools = format!(
        "pgbouncer and shardgate in transaction mode, {} server connections each",
        s.pool_size
    );
    let mut lines = match s.scenario {
        Scenario::Foundation => vec![("workload", format!("pgbench -S {runs}")), ("pools", pools)],
        Scenario::Routed => vec![
            (
                "workload",
                format!(
                    "pgbench -f routed.sql -s {} {runs}; {}",
                    s.scale,
                    routed::describe_script()
                ),
            ),
            (
                "pools",
                format!("{pools} (shardgate-routed: to each shard)"),
            ),
            ("targets", routed::describe_targets()),
        ],
    };
    if s.one_thread {
        lines.push((
            "1thread",
            "each shardgate-…-1thread is the shardgate above it with --threads 1 (all on one \
             thread instead of one worker thread per core)"
                .to_string(),
        ));
    }
    if s.unobserved {
        lines.push((
            "unobserved",
            "each shardgate-…-unobserved is the shardgate above it with `metrics: { statements: \
             false, hotspots: false }`: no per-statement series, no hot-key tracking"
                .to_string(),
        ));
    }
    lines
}

fn write_results(scenario: Scenario, text: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(match scenario {
        Scenario::Foundation => "latest.md",
        Scenario::Routed => "latest-routed.md",
    });
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `bindir/name` if the server's bindir has it, else `name` from PATH.
fn tool_or_path(bins: &PgBinaries, name: &str) -> PathBuf {
    let own = bins.tool(name);
    if own.is_file() {
        own
    } else {
        PathBuf::from(name)
    }
}

fn version(program: &Path, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// First line of a shell one-liner's output, for the header only.
fn shell(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
