//! Running pgbench (`-S`, or a script file) against one endpoint and reading its summary.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Extra seconds a run may take beyond `-T` (connection setup, a slow machine) before we kill it.
const GRACE_SECS: u64 = 30;
/// pgbench error lines quoted when a run fails.
const ERROR_LINES: usize = 3;

/// pgbench's `-M`: how each query is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One `Query` message per statement.
    Simple,
    /// Parse/Bind/Execute/Sync with the unnamed statement, every time.
    Extended,
    /// Named statements parsed once per connection, then Bind/Execute/Sync.
    Prepared,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Simple, Mode::Extended, Mode::Prepared];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Extended => "extended",
            Mode::Prepared => "prepared",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Where pgbench connects and how it logs in.
#[derive(Debug, Clone)]
pub struct Login {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: String,
}

/// What one pgbench run reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// "tps = … (without initial connection time)".
    pub tps: f64,
    /// "latency average = … ms".
    pub latency_ms: f64,
    /// "number of transactions actually processed: …"; one query each in both workloads.
    pub transactions: u64,
}

/// How to run pgbench; `scratch` holds its output files.
pub struct Pgbench {
    pub program: PathBuf,
    pub scratch: PathBuf,
}

/// What each pgbench transaction runs.
#[derive(Debug, Clone)]
pub enum Workload {
    /// The built-in `-S` (select-only) script.
    SelectOnly,
    /// A script file (`-f`); `-s scale` sets its `:scale`, which pgbench otherwise leaves at 1
    /// for custom scripts.
    Script { path: PathBuf, scale: u32 },
}

impl Workload {
    /// The pgbench arguments that choose this workload.
    fn args(&self) -> Vec<String> {
        match self {
            Workload::SelectOnly => vec!["-S".into()],
            Workload::Script { path, scale } => vec![
                "-f".into(),
                path.display().to_string(),
                "-s".into(),
                scale.to_string(),
            ],
        }
    }
}

impl Pgbench {
    /// `pgbench <workload> -n -T secs -c clients -j 2 -M mode`. A failed or unparsable run
    /// returns the error lines pgbench printed, verbatim.
    ///
    /// A run during which the server sent any error counts as failed even if pgbench exits 0: e.g.
    /// through pgbouncer in transaction mode, `-M prepared` gets "prepared statement already
    /// exists" on Parse and then runs only because an earlier client left the same statement on
    /// every pooled server connection — numbers that measure luck, not the proxy.
    pub fn bench(
        &self,
        workload: &Workload,
        login: &Login,
        mode: Mode,
        clients: u32,
        secs: u64,
    ) -> Result<Summary, String> {
        let mut args = workload.args();
        args.extend([
            "-n".to_string(),
            "-T".into(),
            secs.to_string(),
            "-c".into(),
            clients.to_string(),
            "-j".into(),
            "2".into(),
            "-M".into(),
            mode.as_str().into(),
        ]);
        let (ok, stdout, stderr) = self.run(login, &args, secs + GRACE_SECS)?;
        match (ok, parse_summary(&stdout)) {
            (true, Some(summary)) if !stderr.contains("ERROR:") => Ok(summary),
            _ => Err(error_text(&stderr, &stdout)),
        }
    }

    /// `pgbench -i -s scale -q`: creates and fills the pgbench tables.
    pub fn initialize(&self, login: &Login, scale: u32) -> Result<(), String> {
        let args = [
            "-i".to_string(),
            "-q".into(),
            "-s".into(),
            scale.to_string(),
        ];
        let (ok, stdout, stderr) = self.run(login, &args, 600)?;
        if ok {
            Ok(())
        } else {
            Err(format!("pgbench -i failed:\n{stderr}{stdout}"))
        }
    }

    /// Runs pgbench with `args` to completion or until `limit_secs`, returning (success, stdout,
    /// stderr). Output goes to files rather than pipes so that a chatty failure cannot block it.
    fn run(
        &self,
        login: &Login,
        args: &[String],
        limit_secs: u64,
    ) -> Result<(bool, String, String), String> {
        let out_path = self.scratch.join("pgbench.out");
        let err_path = self.scratch.join("pgbench.err");
        let file = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut child = Command::new(&self.program)
            .args(["-h", "127.0.0.1", "-p", &login.port.to_string()])
            .args(["-U", &login.user])
            .args(args)
            .arg(&login.db)
            .env("PGPASSWORD", &login.password)
            .env("PGSSLMODE", "disable")
            .stdin(Stdio::null())
            .stdout(file(&out_path)?)
            .stderr(file(&err_path)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        let deadline = Instant::now() + Duration::from_secs(limit_secs);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "pgbench did not finish within {limit_secs}s; killed"
                    ));
                }
                Err(e) => return Err(format!("waiting for pgbench: {e}")),
            }
        };
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Ok((status.success(), read(&out_path), read(&err_path)))
    }
}

/// Reads TPS, average latency and the transaction count from pgbench's report (PostgreSQL 13+).
pub fn parse_summary(stdout: &str) -> Option<Summary> {
    let mut tps = None;
    let mut latency_ms = None;
    let mut transactions = None;
    for line in stdout.lines() {
        if let Some(v) = line.strip_prefix("tps = ") {
            tps = first_number(v);
        } else if let Some(v) = line.strip_prefix("latency average = ") {
            latency_ms = first_number(v);
        } else if let Some(v) = line.strip_prefix("number of transactions actually processed: ") {
            transactions = first_number(v).map(|n| n as u64);
        }
    }
    Some(Summary {
        tps: tps?,
        latency_ms: latency_ms?,
        transactions: transactions?,
    })
}

/// The number at the start of `s` ("1234.5 (without …)", "42/100").
fn first_number(s: &str) -> Option<f64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

/// The first distinct error lines pgbench printed, verbatim; the whole output if there are none.
fn error_text(stderr: &str, stdout: &str) -> String {
    // Clients fail alike: quote each server message once, whichever client hit it.
    let message = |line: &str| line.find("ERROR:").map_or(line, |i| &line[i..]).to_string();
    let mut lines: Vec<&str> = Vec::new();
    for line in stderr
        .lines()
        .filter(|l| l.contains("error") || l.contains("ERROR"))
    {
        if !lines.iter().any(|l| message(l) == message(line)) {
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return format!("{}\n{}", stderr.trim(), stdout.trim())
            .trim()
            .to_string();
    }
    lines.truncate(ERROR_LINES);
    lines.join("\n")
}
