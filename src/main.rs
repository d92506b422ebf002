//! The `shardgate` command line (DESIGN §2.1).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shardgate::config::Config;
use shardgate::proxy::Proxy;
use shardgate::shutdown::{Signal, Signals};
use shardgate::workers::Workers;

#[derive(Parser)]
#[command(name = "shardgate", version, about = "A PostgreSQL sharding proxy")]
struct Cli {
    /// Run the proxy with this config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG overrides it.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    /// Log one JSON object per line.
    #[arg(long, global = true)]
    log_json: bool,
    /// Threads serving clients, each with its own share of every pool. Clients are dealt to them
    /// in turn. 1 uses the least CPU per query; one per core (the default) gives the most
    /// throughput.
    #[arg(long, global = true, env = "SHARDGATE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start two PostgreSQL clusters, a replica, sample data and the proxy; Ctrl-C stops it all.
    Demo {
        /// Where the clusters live (wiped at start); default: shardgate-demo in the temp directory,
        /// which the `postgres` user can reach when shardgate runs as root.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The proxy's port.
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// The admin API's port.
        #[arg(long, default_value_t = 6480)]
        admin_port: u16,
    },
    /// Validate a config file and print its shard map.
    CheckConfig { file: PathBuf },
    /// Print the routing decision for one statement.
    Route {
        #[arg(long)]
        config: PathBuf,
        /// The database (default: the config's only one).
        #[arg(long)]
        database: Option<String>,
        sql: String,
    },
    /// Resharding jobs, through the admin API of a running shardgate.
    Reshard {
        /// The admin API.
        #[arg(long, env = "SHARDGATE_ADMIN", default_value = "http://127.0.0.1:6480")]
        admin: String,
        /// The admin API's bearer token (`admin.token` in its config).
        #[arg(long, env = "SHARDGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        action: ReshardAction,
    },
    /// Classify every statement in a file (e.g. a pg_stat_statements export) as single-shard,
    /// multi-shard or rejected, with reasons.
    CheckQueries {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        database: Option<String>,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ReshardAction {
    /// Check the moves, run pre-flight and record the job.
    Start {
        #[arg(long)]
        database: String,
        /// What moves and where: BUCKETS:SHARD for a hash map (512-767:s2), range=FROM..TO:SHARD
        /// for a range map (range=1000..2000:s2; leave a side empty for unbounded),
        /// values=A,B:SHARD for a list map (values=eu,us:s2; "quote" a number-like text value).
        /// Repeat for several.
        #[arg(long = "move", required = true)]
        moves: Vec<String>,
        /// Throttle the backfill to about this many rows per second (default: as fast as it goes).
        #[arg(long)]
        rows_per_second: Option<u64>,
    },
    /// Show a job; with --watch, follow it until it ends.
    Status {
        id: i64,
        #[arg(long)]
        watch: bool,
    },
    /// Stop copying (backfill, verification) where it is; dual-write goes on.
    Pause { id: i64 },
    /// Go on from where the job was paused.
    Resume { id: i64 },
    /// Hand the moved buckets to the new owner (phase ready); writers of them wait briefly.
    Cutover { id: i64 },
    /// Give the moved buckets back to the old owner (after cutover, before finish).
    Rollback { id: i64 },
    /// Give the job up before cutover: the data stays where it was, the copies are deleted.
    Abort { id: i64 },
    /// After cutover: stop dual-write and delete the moved rows from the old owner.
    Finish { id: i64 },
    /// Run verification again: in phase ready, after cutover, or after finish.
    Verify { id: i64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_json);
    let threads = cli.threads.map_or_else(cores, usize::from);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shardgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli, threads)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Worker 0 (`shardgate::workers`): the other workers are current-thread runtimes it starts
/// when the proxy starts.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn dispatch(cli: Cli, threads: usize) -> anyhow::Result<()> {
    match (cli.command, cli.config) {
        (Some(Command::Demo { dir, port, admin_port }), _) => {
            let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("shardgate-demo"));
            let dir = std::path::absolute(&dir).with_context(|| format!("bad --dir {}", dir.display()))?;
            shardgate::demo::run(shardgate::demo::DemoOptions { dir, port, admin_port, threads }).await
        }
        (Some(Command::CheckConfig { file }), _) => check_config(&file),
        (Some(Command::Route { config, database, sql }), _) => {
            let router = router_for(&config, database.as_deref())?;
            println!("{}", shardgate::router::report::decide(&router, &sql));
            Ok(())
        }
        (Some(Command::CheckQueries { config, database, file }), _) => {
            check_queries(&config, database.as_deref(), &file)
        }
        (Some(Command::Reshard { admin, token, action }), _) => reshard(&admin, token, action).await,
        (None, Some(config)) => run(config, threads).await,
        (None, None) => anyhow::bail!("nothing to do: pass --config FILE to run the proxy, or try `shardgate demo` (see --help)"),
    }
}

async fn reshard(admin: &str, token: Option<String>, action: ReshardAction) -> anyhow::Result<()> {
    use shardgate::reshard::cli;
    let client = cli::AdminClient::new(admin, token)?;
    let (id, name) = match action {
        ReshardAction::Start {
            database,
            moves,
            rows_per_second,
        } => {
            return cli::start(&client, &database, &moves, rows_per_second)
                .await
                .map(drop)
        }
        ReshardAction::Status { id, watch } => return cli::status(&client, id, watch).await,
        ReshardAction::Pause { id } => (id, "pause"),
        ReshardAction::Resume { id } => (id, "resume"),
        ReshardAction::Cutover { id } => (id, "cutover"),
        ReshardAction::Rollback { id } => (id, "rollback"),
        ReshardAction::Abort { id } => (id, "abort"),
        ReshardAction::Finish { id } => (id, "finish"),
        ReshardAction::Verify { id } => (id, "verify"),
    };
    cli::act(&client, id, name).await
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config =
        Config::load(file).map_err(|e| anyhow::anyhow!("{} is invalid:\n{e}", file.display()))?;
    config
        .check_files()
        .map_err(|e| anyhow::anyhow!("{} is invalid:\n{e}", file.display()))?;
    let summary = config.summary();
    // The same checks the proxy makes when it starts (no connections are opened).
    shardgate::topology::Snapshot::build(std::sync::Arc::new(config), None, 1)
        .map_err(|e| anyhow::anyhow!("{} cannot be served: {e}", file.display()))?;
    println!("{} is valid.\n", file.display());
    print!("{summary}");
    Ok(())
}

/// The router of one database of a config file (no connections are opened).
fn router_for(
    file: &std::path::Path,
    database: Option<&str>,
) -> anyhow::Result<std::sync::Arc<shardgate::router::Router>> {
    let config =
        Config::load(file).map_err(|e| anyhow::anyhow!("{} is invalid:\n{e}", file.display()))?;
    let names: Vec<String> = config.databases.keys().cloned().collect();
    let name = match (database, names.as_slice()) {
        (Some(d), _) => d.to_string(),
        (None, [only]) => only.clone(),
        (None, _) => {
            anyhow::bail!("the config has databases {names:?}: choose one with --database")
        }
    };
    let snapshot = shardgate::topology::Snapshot::build(std::sync::Arc::new(config), None, 1)
        .map_err(|e| anyhow::anyhow!("{} cannot be served: {e}", file.display()))?;
    shardgate::router::Routers::default()
        .get(&snapshot, &name, 0)
        .with_context(|| format!("no database \"{name}\" in {}", file.display()))
}

fn check_queries(
    config: &std::path::Path,
    database: Option<&str>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    use shardgate::router::report::{decide, statements_of};
    let router = router_for(config, database)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for sql in statements_of(&text) {
        let decision = decide(&router, &sql);
        *counts.entry(decision.kind()).or_default() += 1;
        println!("{}\n  -> {decision}\n", sql.replace('\n', " "));
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("{}", summary.join(", "));
    Ok(())
}

async fn run(path: PathBuf, threads: usize) -> anyhow::Result<()> {
    let config =
        Config::load(&path).map_err(|e| anyhow::anyhow!("{} is invalid:\n{e}", path.display()))?;
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    let workers = Workers::start(threads).context("cannot start the worker threads")?;
    let proxy = Proxy::start_from(config, &path, workers).await?;
    loop {
        match signals.next().await {
            Signal::Stop => break,
            Signal::Reload => match proxy.reload_from(&path) {
                Ok(epoch) => tracing::info!(epoch, "config reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "config reload refused; the previous config stays in force")
                }
            },
        }
    }
    tracing::info!("draining: no new connections; open transactions may finish");
    proxy.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only on a terminal: a log file or journald must get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
