//! Running server tools as a user PostgreSQL accepts.
//!
//! `initdb`, `pg_ctl` and `postgres` refuse to run as root. When we are root the cluster's
//! directory is chowned to `postgres` and the tools run through `runuser` (util-linux), or `su`
//! where `runuser` is missing. Clients (`psql`) run as we are: they have no such rule.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::ClusterError;

/// The account the server runs under.
const SERVER_USER: &str = "postgres";

/// How server tools are launched. Detected once per [`super::Cluster::start`] and shared with its
/// replicas; there is no process-wide cache.
#[derive(Debug, Clone)]
pub(super) enum Runner {
    /// We are not root: run tools directly.
    Direct,
    /// We are root: switch to `postgres` with `runuser -u postgres --`.
    Runuser(PathBuf),
    /// We are root and there is no runuser: `su -s /bin/sh -c 'exec "$0" "$@"' -- postgres`.
    Su,
}

impl Runner {
    pub(super) fn detect() -> Result<Runner, ClusterError> {
        if !is_root() {
            return Ok(Runner::Direct);
        }
        let has_user = Command::new("id")
            .arg(SERVER_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_user {
            return Err(ClusterError::NoPostgresUser);
        }
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        Ok(runuser.map_or(Runner::Su, Runner::Runuser))
    }

    /// A command that runs `program args...` as the server user, in `cwd`. The cwd matters when we
    /// switch user: the tools warn or fail if they cannot enter the inherited one (e.g. /root).
    pub(super) fn command<I, S>(&self, program: &Path, args: I, cwd: &Path) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = match self {
            Runner::Direct => Command::new(program),
            Runner::Runuser(runuser) => {
                let mut c = Command::new(runuser);
                c.args(["-u", SERVER_USER, "--"]).arg(program);
                c
            }
            Runner::Su => {
                // `--` ends su's options; without it su would parse the tool's own options.
                let mut c = Command::new("su");
                c.args([
                    "-s",
                    "/bin/sh",
                    "-c",
                    r#"exec "$0" "$@""#,
                    "--",
                    SERVER_USER,
                ])
                .arg(program);
                c
            }
        };
        cmd.args(args).current_dir(cwd).stdin(Stdio::null());
        cmd
    }

    /// Gives `dir` (recursively) to the server user. A no-op unless we are root.
    pub(super) fn hand_over(&self, dir: &Path) -> Result<(), ClusterError> {
        if matches!(self, Runner::Direct) {
            return Ok(());
        }
        let mut chown = Command::new("chown");
        chown
            .arg("-R")
            .arg(format!("{SERVER_USER}:{SERVER_USER}"))
            .arg(dir);
        run(&mut chown).map(drop)
    }

    /// Fails with [`ClusterError::Unreachable`] if the server user cannot enter `dir`, which
    /// otherwise shows up later as a confusing initdb or pg_ctl error.
    pub(super) fn check_reachable(&self, dir: &Path) -> Result<(), ClusterError> {
        if matches!(self, Runner::Direct) {
            return Ok(());
        }
        let ok = self
            .command(
                Path::new("/bin/sh"),
                ["-c", "cd \"$0\"", &dir.to_string_lossy()],
                Path::new("/"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Ok(())
        } else {
            Err(ClusterError::Unreachable {
                dir: dir.to_path_buf(),
            })
        }
    }
}

/// Runs `cmd` to completion and returns its output, or a [`ClusterError::Command`] with the
/// command line and its stderr (the caller adds the server log where there is one).
pub(super) fn run(cmd: &mut Command) -> Result<Output, ClusterError> {
    let shown = show(cmd);
    let out = cmd
        .output()
        .map_err(|e| ClusterError::io(format!("starting `{shown}`"), e))?;
    if out.status.success() {
        return Ok(out);
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // pg_ctl reports some failures on stdout.
    stderr.push_str(&String::from_utf8_lossy(&out.stdout));
    Err(ClusterError::Command {
        command: shown,
        status: out.status.to_string(),
        stderr,
        log: String::new(),
        hint: String::new(),
    })
}

/// Adds the server log tail and a hint for well-known causes to a failed command's error.
pub(super) fn with_log(err: ClusterError, log_tail: String) -> ClusterError {
    match err {
        ClusterError::Command {
            command,
            status,
            stderr,
            ..
        } => {
            let log = if log_tail.is_empty() {
                String::new()
            } else {
                format!("server log (last lines):\n{log_tail}")
            };
            let hint = hint_for(&format!("{stderr}{log}"));
            ClusterError::Command {
                command,
                status,
                stderr,
                log,
                hint,
            }
        }
        other => other,
    }
}

/// One-line advice for failures whose fix is not obvious from Postgres's own message.
fn hint_for(text: &str) -> String {
    let advice = if text.contains("could not bind") || text.contains("Address already in use") {
        "the port is taken by another process; let the cluster pick its port (port: None)"
    } else if text.contains("shared memory") || text.contains("semget") {
        "the kernel refused shared memory: lower max_connections or shared_buffers, \
or raise the shm limits (/dev/shm size in containers)"
    } else if text.contains("Permission denied") {
        "a file or directory is not accessible to the server's user; \
use a base directory under the temp dir"
    } else if text.contains("cannot be run as root") || text.contains("as \"root\"") {
        "PostgreSQL refuses to run as root; this module switches to the `postgres` user when root"
    } else {
        return String::new();
    };
    let mut hint = String::new();
    let _ = write!(hint, "; hint: {advice}");
    hint
}

/// Shell-like rendering of a command for error messages.
fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether we run as uid 0. Asked of `id -u` because the std library does not expose the uid and
/// `libc` is not a dependency; $USER is not trusted (sudo and containers set it inconsistently).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The last `lines` lines of the file at `path`, or a note saying why there are none.
pub(super) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_cause() {
        let h = hint_for("LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use");
        assert!(h.contains("port is taken"), "{h}");
        assert_eq!(hint_for("FATAL:  something new"), "");
    }

    #[test]
    fn runuser_command_line() {
        let r = Runner::Runuser(PathBuf::from("/usr/sbin/runuser"));
        let cmd = r.command(Path::new("/bin/initdb"), ["-D", "x"], Path::new("/"));
        assert_eq!(
            show(&cmd),
            "/usr/sbin/runuser -u postgres -- /bin/initdb -D x"
        );
    }

    /// Runs only where su works without a password (root); elsewhere there is nothing to check.
    #[test]
    fn su_passes_arguments_and_environment() {
        if !is_root() {
            return;
        }
        let script = ["-c", "echo \"$SG_X\" \"$1\"", "sh", "-u"];
        let out = Runner::Su
            .command(Path::new("/bin/sh"), script, Path::new("/"))
            .env("SG_X", "kept")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "kept -u\n");
    }
}
