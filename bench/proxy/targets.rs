//! The three things pgbench talks to: Postgres itself, pgbouncer and shardgate, and the guards that
//! stop the two proxies when the benchmark ends, also on a panic.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shardgate::cluster::free_port;

use crate::pgbench::Login;

/// How long a proxy may take to accept its first query.
const READY_SECS: u64 = 15;
/// Lines of a proxy's log quoted when it fails to start.
const LOG_LINES: usize = 20;
/// Where Debian's package puts pgbouncer; PATH is searched too.
const PGBOUNCER_PATHS: [&str; 2] = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"];

/// One endpoint of the comparison.
pub struct Target {
    pub name: &'static str,
    pub login: Login,
    /// The proxy process whose CPU time is measured; None for direct Postgres.
    pub process: Option<Proxy>,
}

/// A proxy process we started. Dropping it kills it and waits for it.
pub struct Proxy {
    child: Child,
    log: PathBuf,
}

impl Proxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line of the proxy's log that reports a warning or an error.
    pub fn log_problems(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("FATAL"))
            .map(str::to_string)
            .collect()
    }

    /// The last lines of the proxy's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pgbouncer binary from Debian's package (or PATH), if installed.
pub fn find_pgbouncer() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pgbouncer"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    PGBOUNCER_PATHS
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|p| p.is_file())
}

/// Starts pgbouncer in transaction mode with `pool_size` server connections, in front of `pg`.
/// pgbouncer refuses to run as root, so as root it runs as the `postgres` user.
pub fn start_pgbouncer(
    program: &Path,
    dir: &Path,
    pg: &Login,
    pool_size: u32,
    psql: &Path,
) -> anyhow::Result<Target> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let ini = dir.join("pgbouncer.ini");
    let userlist = dir.join("userlist.txt");
    std::fs::write(&userlist, format!("\"{}\" \"{}\"\n", pg.user, pg.password))?;
    std::fs::write(&ini, pgbouncer_ini(dir, port, pg, pool_size, &userlist))?;
    let log = dir.join("pgbouncer.stderr");
    let mut cmd = Command::new(program);
    cmd.arg(&ini).current_dir(dir);
    if let Some((uid, gid)) = postgres_ids_if_root()? {
        chown_r(dir)?;
        cmd.uid(uid).gid(gid);
    }
    let proxy = spawn(cmd, &log)?;
    let login = Login { port, ..pg.clone() };
    wait_ready("pgbouncer", &proxy, &login, psql)?;
    Ok(Target {
        name: "pgbouncer",
        login,
        process: Some(proxy),
    })
}

fn pgbouncer_ini(dir: &Path, port: u16, pg: &Login, pool_size: u32, userlist: &Path) -> String {
    format!(
        "; Written by shardgate's bench/proxy.rs.\n\
         [databases]\n\
         {db} = host=127.0.0.1 port={pg_port} dbname={db}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = {userlist}\n\
         pool_mode = transaction\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = 500\n\
         logfile = {log}\n\
         log_connections = 0\n\
         log_disconnections = 0\n",
        db = pg.db,
        pg_port = pg.port,
        userlist = userlist.display(),
        log = dir.join("pgbouncer.log").display(),
    )
}

/// One shardgate the bench starts.
pub struct Shardgate<'a> {
    pub name: &'static str,
    /// YAML lines under the database, indented four spaces (`sharding:`, `tables:`); empty for
    /// one shard.
    pub sharding: &'a str,
    /// Per-statement metrics and hotspot tracking on (shardgate's default) or off (`metrics:
    /// { statements: false, hotspots: false }`), to measure what they cost.
    pub observed: bool,
    /// `--threads`; `None`: the default, one worker thread per core.
    pub threads: Option<u32>,
    /// The binary; `None`: the one cargo built alongside this bench.
    pub program: Option<&'a Path>,
}

/// Starts the shardgate binary built alongside this bench as `spec` says, in front of `shards`
/// (one database of that name on each, same user).
pub fn start_shardgate(
    spec: &Shardgate<'_>,
    dir: &Path,
    shards: &[Login],
    pool_size: u32,
    psql: &Path,
) -> anyhow::Result<Target> {
    let first = shards.first().context("shardgate needs a shard")?;
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let config = dir.join("shardgate.yaml");
    std::fs::write(&config, shardgate_yaml(port, shards, spec, pool_size))?;
    let program = spec
        .program
        .unwrap_or(Path::new(env!("CARGO_BIN_EXE_shardgate")));
    let mut cmd = Command::new(program);
    // warn: no per-connection log lines, like pgbouncer's log_connections = 0.
    cmd.arg("--config")
        .arg(&config)
        .args(["--log-level", "warn"]);
    if let Some(n) = spec.threads {
        cmd.args(["--threads", &n.to_string()]);
    }
    let proxy = spawn(cmd, &dir.join("shardgate.log"))?;
    let login = Login {
        port,
        ..first.clone()
    };
    wait_ready(spec.name, &proxy, &login, psql)?;
    Ok(Target {
        name: spec.name,
        login,
        process: Some(proxy),
    })
}

/// The admin API listens on a port of the kernel's choosing: several instances run at once.
fn shardgate_yaml(port: u16, shards: &[Login], spec: &Shardgate<'_>, pool_size: u32) -> String {
    let pg = &shards[0];
    let metrics = if spec.observed {
        ""
    } else {
        "metrics: { statements: false, hotspots: false }\n"
    };
    let mut yaml = format!(
        "# Written by shardgate's bench/proxy.rs.\n\
         listen: 127.0.0.1:{port}\n\
         admin: {{ listen: \"127.0.0.1:0\" }}\n\
         users:\n  - {{ name: {user}, password: {pw} }}\n\
         pool: {{ mode: transaction, size: {pool_size} }}\n\
         {metrics}\
         databases:\n  {db}:\n    shards:\n",
        user = pg.user,
        pw = pg.password,
        db = pg.db,
    );
    for (i, s) in shards.iter().enumerate() {
        yaml += &format!(
            "      s{i}: {{ primary: \"postgres://{}:{}@127.0.0.1:{}/{}\" }}\n",
            s.user, s.password, s.port, s.db
        );
    }
    yaml + spec.sharding
}

fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Proxy> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(Proxy {
        child,
        log: log.to_path_buf(),
    })
}

/// Polls with psql until `select 1` succeeds through the proxy (which also checks the login).
fn wait_ready(name: &str, proxy: &Proxy, login: &Login, psql: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(READY_SECS);
    loop {
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &login.port.to_string(),
                "-U",
                &login.user,
            ])
            .args(["-d", &login.db, "-XtAc", "select 1"])
            .env("PGPASSWORD", &login.password)
            .env("PGSSLMODE", "disable")
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not answer `select 1` within {READY_SECS}s: {}\n{name} log:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                proxy.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `postgres` user's uid and gid when we run as root, else None.
fn postgres_ids_if_root() -> anyhow::Result<Option<(u32, u32)>> {
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    let ids = (id(&["-u", "postgres"]), id(&["-g", "postgres"]));
    match ids {
        (Ok(uid), Ok(gid)) => Ok(Some((uid, gid))),
        _ => bail!("running as root, which pgbouncer refuses, and there is no `postgres` user"),
    }
}

fn id(args: &[&str]) -> anyhow::Result<u32> {
    let out = Command::new("id").args(args).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("`id {}` printed {text:?}", args.join(" ")))
}

fn chown_r(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("chown -R postgres {} failed", dir.display());
    }
    Ok(())
}

/// CPU time (user + system, all threads) a process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<CpuTicks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name in parentheses may hold spaces; the fields we want follow the last ')'.
    // After it come state (field 3) … utime (14) and stime (15).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        let f = fields.get(n - 3).context("short /proc/pid/stat")?;
        Ok(f.parse()?)
    };
    Ok(CpuTicks {
        user: field(14)?,
        system: field(15)?,
    })
}

/// A process's CPU time so far, in clock ticks: in its own code (user) and in the kernel on its
/// behalf (system: for a proxy mostly the socket reads and writes, which every proxy pays alike).
#[derive(Debug, Clone, Copy)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

/// Clock ticks per second (`getconf CLK_TCK`, almost always 100).
pub fn clock_ticks_per_sec() -> anyhow::Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("`getconf CLK_TCK` printed {text:?}"))
}
