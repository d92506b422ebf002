//! One PostgreSQL server: create, start, query, stop, replicate, clean up.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::format::{percent_encode, quote_ident, quote_literal, settings};
use super::runner::{self, Runner};
use super::{create_unique_dir, free_port, ClusterError, PgBinaries};

/// The superuser initdb creates; also the OS user the server runs as when we are root.
const SUPERUSER: &str = "postgres";
/// How long pg_ctl may wait for a start, stop or promote, in seconds.
const PG_CTL_WAIT_SECS: u64 = 60;
/// How many free ports to try before giving up when parallel starts keep colliding.
const PORT_ATTEMPTS: usize = 5;
/// Lines of server log quoted in error messages.
const LOG_LINES: usize = 30;
/// sun_path holds 108 bytes on Linux (104 on macOS); stay well below.
const MAX_SOCKET_PATH: usize = 100;
/// Settings file we own inside PGDATA, included from postgresql.conf and rewritten on each start.
const CONF_FILE: &str = "shardgate.conf";

/// What to create. `Default` gives a fast throwaway test server.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Directory name under the base dir (a random suffix is added if it is taken).
    pub name: String,
    /// None picks a free loopback port, and another one if a parallel start takes it first.
    pub port: Option<u16>,
    pub superuser_password: String,
    /// Extra postgresql.conf settings. Values are quoted unless already quoted or a plain word or
    /// number (`on`, `64MB`, `0.5`), so pass them unquoted.
    pub extra_conf: Vec<(String, String)>,
    /// fsync, synchronous_commit and full_page_writes off: much faster, unsafe on a crash.
    pub fast: bool,
    pub max_connections: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            name: "pg".to_string(),
            port: None,
            superuser_password: "postgres".to_string(),
            extra_conf: Vec::new(),
            fast: true,
            max_connections: 200,
        }
    }
}

/// `pg_ctl stop -m <mode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Roll back sessions, checkpoint, exit cleanly.
    Fast,
    /// Exit at once; the next start does crash recovery.
    Immediate,
}

/// Whether the server process is up, as far as this handle knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Stopped,
    /// Running with this postmaster pid (0 if postmaster.pid could not be read). The pid lets
    /// Drop kill the server even if its data dir has already been deleted.
    Running {
        pid: u32,
    },
}

/// A PostgreSQL server in its own directory on its own loopback port.
///
/// Dropping it stops the server (`-m immediate`) and removes its directory unless
/// [`Cluster::set_keep_on_drop`] was called.
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    runner: Runner,
    /// `<base>/<name>`, owned by the server's user; everything below is ours.
    dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    /// Holds the unix socket: `dir`, or a short dir under /tmp when `dir` is too long.
    socket_dir: PathBuf,
    /// Set when `socket_dir` is that separate short dir, which Drop must remove too.
    own_socket_dir: bool,
    /// Changes only while starting, when a port conflict makes us pick another.
    port: u16,
    opts: ClusterOptions,
    state: State,
    keep_on_drop: bool,
}

impl Cluster {
    /// Creates a new cluster with initdb under `base_dir` and starts it.
    ///
    /// Auth: scram-sha-256 over TCP, trust on the unix socket. The server listens on 127.0.0.1 only,
    /// with wal_level=replica so that [`Cluster::start_replica`] works.
    pub fn start(
        bins: &PgBinaries,
        base_dir: &Path,
        opts: ClusterOptions,
    ) -> Result<Cluster, ClusterError> {
        let runner = Runner::detect()?;
        std::fs::create_dir_all(base_dir)
            .map_err(|e| ClusterError::io(format!("creating {}", base_dir.display()), e))?;
        if !matches!(runner, Runner::Direct) {
            // The server user must be able to enter the base dir to reach its own subdir.
            super::set_mode(base_dir, 0o755)?;
        }
        let mut cluster = Cluster::prepare(bins.clone(), runner, base_dir, opts)?;
        // From here on, an early return drops `cluster`, which removes what was created.
        cluster.init_db()?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// A streaming replica of this server: `pg_basebackup -R -X stream` into a new directory next
    /// to this one, started on its own port. Returns once it is in recovery and accepts queries.
    pub fn start_replica(&self, name: &str) -> Result<Cluster, ClusterError> {
        let base = self.dir.parent().unwrap_or(Path::new("/"));
        let opts = ClusterOptions {
            name: name.to_string(),
            port: None,
            ..self.opts.clone()
        };
        let mut replica = Cluster::prepare(self.bins.clone(), self.runner.clone(), base, opts)?;
        replica.base_backup_of(self)?;
        replica.start_on_free_port()?;
        replica.wait_until("be in recovery", "select pg_is_in_recovery()", "t")?;
        Ok(replica)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the unix socket (`psql -h <socket_dir>` connects with trust auth).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    pub fn password(&self) -> &str {
        &self.opts.superuser_password
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<db>`, password percent-encoded.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{}",
            percent_encode(&self.opts.superuser_password),
            self.port,
            percent_encode(db)
        )
    }

    /// Runs `sql` with psql over TCP as the superuser, statement by statement, stopping at the
    /// first error. Returns stdout (unaligned, tuples only, no command tags) without the final
    /// newline, so `select 1` gives `"1"`.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, ClusterError> {
        let sql_error = |stderr: String| ClusterError::Sql {
            port: self.port,
            db: db.to_string(),
            sql: sql.to_string(),
            stderr,
        };
        let mut child = self
            .psql_command(db)
            .spawn()
            .map_err(|e| ClusterError::io(format!("starting {}", self.bins.psql().display()), e))?;
        // A write error means psql exited early; its stderr below says why.
        let _ = child.stdin.take().map(|mut s| s.write_all(sql.as_bytes()));
        let out = child
            .wait_with_output()
            .map_err(|e| ClusterError::io("waiting for psql", e))?;
        if !out.status.success() {
            return Err(sql_error(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if stdout.ends_with('\n') {
            stdout.pop();
        }
        Ok(stdout)
    }

    pub fn create_database(&self, db: &str) -> Result<(), ClusterError> {
        self.psql("postgres", &format!("CREATE DATABASE {}", quote_ident(db)))
            .map(drop)
    }

    /// Creates a login role whose password is stored as a SCRAM verifier. It can connect to any
    /// database (PUBLIC has CONNECT); use [`Cluster::grant_all`] to let it create and use tables.
    pub fn create_user(&self, user: &str, password: &str) -> Result<(), ClusterError> {
        let sql = format!(
            "SET password_encryption = 'scram-sha-256';\nCREATE ROLE {} LOGIN PASSWORD {};",
            quote_ident(user),
            quote_literal(password)
        );
        self.psql("postgres", &sql).map(drop)
    }

    /// Gives `user` everything on database `db` and its `public` schema, including tables and
    /// sequences the superuser creates there later. Needed since PostgreSQL 15, where ordinary
    /// roles can no longer create tables in `public`.
    pub fn grant_all(&self, db: &str, user: &str) -> Result<(), ClusterError> {
        let (db_q, user_q) = (quote_ident(db), quote_ident(user));
        self.psql(
            "postgres",
            &format!("GRANT ALL ON DATABASE {db_q} TO {user_q}"),
        )?;
        let mut sql = String::new();
        for stmt in [
            "GRANT ALL ON SCHEMA public TO",
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO",
            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO",
        ] {
            let _ = writeln!(sql, "{stmt} {user_q};");
        }
        self.psql(db, &sql).map(drop)
    }

    /// Stops the server; a no-op if it is not running.
    pub fn stop(&mut self, mode: StopMode) -> Result<(), ClusterError> {
        if !self.is_running() {
            return Ok(());
        }
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        self.pg_ctl(&["stop", "-m", mode])?;
        self.state = State::Stopped;
        Ok(())
    }

    /// Stops the server (fast) and starts it again on the same port.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        self.stop(StopMode::Fast)?;
        self.start_server()
    }

    /// Promotes a replica to a primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["promote"])?;
        self.wait_until(
            "leave recovery after promote",
            "select pg_is_in_recovery()",
            "f",
        )
    }

    /// The last `lines` lines of the server log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        runner::tail(&self.log_file, lines)
    }

    /// Keeps the directory (data and log) when dropped; the server is still stopped.
    pub fn set_keep_on_drop(&mut self, keep: bool) {
        self.keep_on_drop = keep;
    }

    /// Creates the cluster's directory (and a short socket dir if needed), not yet handed over.
    fn prepare(
        bins: PgBinaries,
        runner: Runner,
        base_dir: &Path,
        opts: ClusterOptions,
    ) -> Result<Cluster, ClusterError> {
        let dir = cluster_dir(base_dir, &opts.name)?;
        let socket_path_len = dir.as_os_str().len() + "/.s.PGSQL.65535".len();
        let own_socket_dir = socket_path_len > MAX_SOCKET_PATH;
        let socket_dir = if own_socket_dir {
            match create_unique_dir(Path::new("/tmp"), "sgsock") {
                Ok(d) => d,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        } else {
            dir.clone()
        };
        let cluster = Cluster {
            data_dir: dir.join("data"),
            log_file: dir.join("server.log"),
            port: opts.port.unwrap_or_else(free_port),
            bins,
            runner,
            dir,
            socket_dir,
            own_socket_dir,
            opts,
            state: State::Stopped,
            keep_on_drop: false,
        };
        cluster.runner.check_reachable(&cluster.dir)?;
        Ok(cluster)
    }

    /// Runs initdb and makes postgresql.conf include our settings file.
    fn init_db(&mut self) -> Result<(), ClusterError> {
        // initdb reads the superuser password from a file; it lives in our dir only during initdb.
        let pwfile = self.dir.join("pwfile");
        write_secret(&pwfile, &format!("{}\n", self.opts.superuser_password))?;
        self.hand_over_all()?;
        let result = runner::run(&mut self.runner.command(
            &self.bins.tool("initdb"),
            [
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                format!("--pwfile={}", pwfile.display()).as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "-N".as_ref(),
            ],
            &self.dir,
        ));
        let _ = std::fs::remove_file(&pwfile);
        result?;
        let conf = self.data_dir.join("postgresql.conf");
        append_file(&conf, &format!("\ninclude '{CONF_FILE}'\n"))
    }

    /// Fills our (empty) data dir with a base backup of `primary`, configured to stream from it.
    fn base_backup_of(&mut self, primary: &Cluster) -> Result<(), ClusterError> {
        self.hand_over_all()?;
        let port = primary.port.to_string();
        let mut cmd = self.runner.command(
            &self.bins.tool("pg_basebackup"),
            [
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "-R".as_ref(),
                "-X".as_ref(),
                "stream".as_ref(),
                // Checkpoint at once instead of waiting for a spread one: seconds saved per replica.
                "--checkpoint=fast".as_ref(),
                "--no-sync".as_ref(),
            ],
            &self.dir,
        );
        // -R records this password in primary_conninfo, so the replica can authenticate too.
        cmd.env("PGPASSWORD", &primary.opts.superuser_password);
        runner::run(&mut cmd)
            .map(drop)
            .map_err(|e| runner::with_log(e, primary.log_tail(LOG_LINES)))
    }

    /// Starts the server; if the port was picked for us and a parallel start took it first,
    /// picks another and tries again.
    fn start_on_free_port(&mut self) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            match self.start_server() {
                Err(e)
                    if e.is_port_conflict()
                        && self.opts.port.is_none()
                        && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                    self.port = free_port();
                }
                other => return other,
            }
        }
    }

    /// Writes our settings for the current port and runs `pg_ctl start -w`.
    fn start_server(&mut self) -> Result<(), ClusterError> {
        let conf = self.data_dir.join(CONF_FILE);
        write_file(&conf, &settings(self.port, &self.socket_dir, &self.opts))?;
        self.runner.hand_over(&conf)?;
        // Only log lines from this attempt count when deciding whether the port was taken.
        let log_start = std::fs::metadata(&self.log_file).map_or(0, |m| m.len());
        let log = self.log_file.clone();
        let started = runner::run(&mut self.runner.command(
            &self.bins.tool("pg_ctl"),
            [
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                PG_CTL_WAIT_SECS.to_string().as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
            ],
            &self.dir,
        ));
        if let Err(e) = started {
            return Err(runner::with_log(e, self.log_since(log_start)));
        }
        self.state = State::Running {
            pid: self.postmaster_pid(),
        };
        self.wait_until("accept connections", "select 1", "1")
    }

    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bins.psql());
        let port = self.port.to_string();
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-h",
            "127.0.0.1",
        ])
        .args(["-p", &port, "-U", SUPERUSER, "-d", db, "-f", "-"])
        .env("PGPASSWORD", &self.opts.superuser_password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd
    }

    /// Runs `pg_ctl <args> -w -D <data>`, adding the log tail to any error.
    fn pg_ctl(&self, args: &[&str]) -> Result<(), ClusterError> {
        let wait = PG_CTL_WAIT_SECS.to_string();
        let data = self.data_dir.to_string_lossy();
        let all = args.iter().copied().chain(["-w", "-t", &wait, "-D", &data]);
        let mut cmd = self
            .runner
            .command(&self.bins.tool("pg_ctl"), all, &self.dir);
        runner::run(&mut cmd)
            .map(drop)
            .map_err(|e| runner::with_log(e, self.log_tail(LOG_LINES)))
    }

    /// Polls `sql` on database postgres every 50 ms until it returns `expected`, for up to
    /// `PG_CTL_WAIT_SECS`. SQL errors (not up yet, still in recovery) mean "not yet"; any other
    /// error, such as psql missing, fails at once instead of after the timeout.
    fn wait_until(
        &self,
        what: &'static str,
        sql: &str,
        expected: &str,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(PG_CTL_WAIT_SECS);
        loop {
            let last = match self.psql("postgres", sql) {
                Ok(v) if v == expected => return Ok(()),
                Ok(v) => format!("`{sql}` returned {v:?}"),
                Err(e @ ClusterError::Sql { .. }) => e.to_string(),
                Err(e) => return Err(e),
            };
            if Instant::now() > deadline {
                let log = format!(
                    "last check: {last}\nserver log:\n{}",
                    self.log_tail(LOG_LINES)
                );
                return Err(ClusterError::Timeout {
                    port: self.port,
                    what,
                    secs: PG_CTL_WAIT_SECS,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn hand_over_all(&self) -> Result<(), ClusterError> {
        self.runner.hand_over(&self.dir)?;
        if self.own_socket_dir {
            self.runner.hand_over(&self.socket_dir)?;
        }
        Ok(())
    }

    /// The last log lines written after byte `start` (the log of the current start attempt).
    fn log_since(&self, start: u64) -> String {
        let bytes = std::fs::read(&self.log_file).unwrap_or_default();
        let new = bytes.get(start as usize..).unwrap_or_default();
        let text = String::from_utf8_lossy(new);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
    }

    /// The first line of postmaster.pid, or 0 if unreadable.
    fn postmaster_pid(&self) -> u32 {
        std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let State::Running { pid } = self.state {
            if self.stop(StopMode::Immediate).is_err() && pid != 0 {
                // pg_ctl failed (e.g. the data dir is already gone): SIGQUIT is what
                // `-m immediate` sends, so the server still exits.
                let _ = Command::new("kill")
                    .args(["-QUIT", &pid.to_string()])
                    .status();
            }
        }
        if self.keep_on_drop {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.own_socket_dir {
            let _ = std::fs::remove_dir_all(&self.socket_dir);
        }
    }
}

/// `<base>/<name>`, or `<base>/<name>-<random>` if that exists (e.g. two tests naming theirs "pg").
fn cluster_dir(base: &Path, name: &str) -> Result<PathBuf, ClusterError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        let e = std::io::Error::other("use a plain directory name");
        return Err(ClusterError::io(format!("bad cluster name {name:?}"), e));
    }
    let dir = base.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => create_unique_dir(base, name),
        Err(e) => Err(ClusterError::io(format!("creating {}", dir.display()), e)),
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), ClusterError> {
    std::fs::write(path, contents)
        .map_err(|e| ClusterError::io(format!("writing {}", path.display()), e))
}

/// Writes a file only its owner can read: the cluster dir is world-readable (the socket lives
/// there), a password must not be. Created with 0600 rather than chmod-ed, leaving no window.
fn write_secret(path: &Path, contents: &str) -> Result<(), ClusterError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| ClusterError::io(format!("writing {}", path.display()), e))
}

fn append_file(path: &Path, contents: &str) -> Result<(), ClusterError> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| ClusterError::io(format!("appending to {}", path.display()), e))
}
