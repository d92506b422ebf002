//! Starting real PostgreSQL servers: throwaway clusters for the integration tests and for
//! `shardgate demo`.
//!
//! Everything here is synchronous (`std::process`) and depends on no other shardgate module, so the
//! test harness and the demo command can both use it without a runtime.
//!
//! - [`PgBinaries`] finds `initdb`, `pg_ctl`, `postgres` and `pg_basebackup`.
//! - [`Cluster`] is one running server in its own directory, on its own loopback port, with its own
//!   unix socket directory; [`Cluster::start_replica`] adds a streaming standby. Dropping a `Cluster`
//!   stops the server and deletes its directory.
//! - [`TempDir`] is a base directory that is removed when dropped.
//!
//! Postgres refuses to run as root. When we are root, directories are handed to the `postgres` user
//! and the server tools run through `runuser` (or `su`); see `runner.rs`.
//!
//! Layout of one cluster under the base directory:
//!
//! ```text
//! <base>/<name>/            owned by the server's user, also the unix socket directory
//! <base>/<name>/data/       PGDATA; our settings live in data/shardgate.conf
//! <base>/<name>/server.log  the server's log (pg_ctl -l)
//! ```

mod binaries;
mod format;
mod instance;
mod runner;
#[cfg(test)]
mod tests;

pub use binaries::PgBinaries;
pub use instance::{Cluster, ClusterOptions, StopMode};

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use rand::distr::Alphanumeric;
use rand::Rng;

/// How to get server binaries, shown whenever they cannot be found.
const INSTALL_HINT: &str = "install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; \
Fedora/RHEL: `dnf install postgresql-server`; macOS: `brew install postgresql@16`) \
or set SHARDGATE_PG_BINDIR to the directory that holds initdb, pg_ctl, postgres and pg_basebackup";

/// Everything that can go wrong while finding, starting, querying or stopping a server.
///
/// All faults are local (binaries, file system, the server process); none comes from a client.
/// [`ClusterError::is_port_conflict`] tells when starting again on another port may help.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL server binaries not found (looked in: {searched}); {INSTALL_HINT}")]
    BinariesNotFound { searched: String },

    #[error(
        "SHARDGATE_PG_BINDIR={dir} does not contain {missing}; point it at the directory that \
holds initdb, pg_ctl, postgres and pg_basebackup (`pg_config --bindir` prints it), or unset it"
    )]
    BadBindir { dir: PathBuf, missing: String },

    #[error(
        "running as root, which PostgreSQL refuses, and there is no `postgres` user to run it \
as; create one (`useradd --system --create-home postgres`) or run as an ordinary user"
    )]
    NoPostgresUser,

    #[error("the `postgres` user cannot enter {dir}; make it and every parent directory \
traversable (`chmod o+x`), or use a base directory under {tmp}", tmp = std::env::temp_dir().display())]
    Unreachable { dir: PathBuf },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    /// A server tool exited unsuccessfully. `log` is the server log's tail (may be empty).
    #[error("`{command}` failed ({status}){hint}\n{stderr}{log}")]
    Command {
        command: String,
        status: String,
        stderr: String,
        log: String,
        hint: String,
    },

    #[error("the server on 127.0.0.1:{port} did not {what} within {secs}s\n{log}")]
    Timeout {
        port: u16,
        what: &'static str,
        secs: u64,
        log: String,
    },

    #[error("SQL failed on database `{db}` at 127.0.0.1:{port}: {stderr}\nSQL was: {sql}")]
    Sql {
        port: u16,
        db: String,
        sql: String,
        stderr: String,
    },
}

impl ClusterError {
    /// True when the server could not listen because its port was taken, e.g. by a parallel test
    /// that picked the same free port; starting again on another port may succeed.
    pub fn is_port_conflict(&self) -> bool {
        match self {
            ClusterError::Command { stderr, log, .. } => {
                let text = format!("{stderr}{log}");
                text.contains("could not bind") || text.contains("Address already in use")
            }
            _ => false,
        }
    }

    fn io(what: impl Into<String>, source: io::Error) -> ClusterError {
        ClusterError::Io {
            what: what.into(),
            source,
        }
    }
}

/// A loopback port that was free a moment ago. Another process may take it before we bind it;
/// [`Cluster::start`] retries on another port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 failed: is the loopback interface up?")
}

/// A directory under the system temp dir, removed with everything in it when dropped.
///
/// Hand-written instead of the `tempfile` crate to keep the dependency list short. Drop the
/// clusters that live in it first (declare the `TempDir` before them).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `<temp>/<prefix>-<random>` with mode 0755, so that the `postgres` user can traverse
    /// it when we run as root.
    pub fn new(prefix: &str) -> Result<TempDir, ClusterError> {
        let parent = std::env::temp_dir();
        let path = create_unique_dir(&parent, prefix)?;
        Ok(TempDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when dropped, e.g. to read a failed test's logs.
    pub fn set_keep(&mut self, keep: bool) {
        self.keep = keep;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Creates `<parent>/<prefix>-<random>` (0755); a collision just draws another name.
fn create_unique_dir(parent: &Path, prefix: &str) -> Result<PathBuf, ClusterError> {
    let mut last_err = None;
    for _ in 0..16 {
        let path = parent.join(format!("{prefix}-{}", random_suffix(8)));
        match std::fs::create_dir(&path) {
            Ok(()) => {
                set_mode(&path, 0o755)?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(ClusterError::io(format!("creating {}", path.display()), e)),
        }
    }
    let e = last_err.unwrap_or_else(|| io::Error::other("no name left"));
    Err(ClusterError::io(
        format!("creating a directory in {}", parent.display()),
        e,
    ))
}

fn random_suffix(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ClusterError::io(format!("chmod {mode:o} {}", path.display()), e))
}
