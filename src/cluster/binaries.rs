//! Finding the PostgreSQL server binaries.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ClusterError;

/// The tools a cluster needs; a directory missing any of them is not a server bindir.
const REQUIRED: [&str; 4] = ["initdb", "pg_ctl", "postgres", "pg_basebackup"];

/// Where Debian and Ubuntu install each major version side by side.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// A directory holding the server tools, and their major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub bindir: PathBuf,
    /// Major version, e.g. 15.
    pub version: u32,
}

/// The places [`PgBinaries::find`] looks, as inputs so that tests need not touch the environment.
struct Search {
    env_bindir: Option<OsString>,
    path_var: Option<OsString>,
    pg_config: bool,
    debian_root: PathBuf,
}

impl PgBinaries {
    /// Finds initdb/pg_ctl/postgres/pg_basebackup: `$SHARDGATE_PG_BINDIR`, then `PATH` (where
    /// `initdb` is), then `pg_config --bindir`, then the highest `/usr/lib/postgresql/*/bin`.
    ///
    /// A set but wrong `SHARDGATE_PG_BINDIR` is an error rather than skipped, so that a typo does
    /// not silently test against another version.
    pub fn find() -> Result<PgBinaries, ClusterError> {
        find_with(&Search {
            env_bindir: std::env::var_os("SHARDGATE_PG_BINDIR").filter(|v| !v.is_empty()),
            path_var: std::env::var_os("PATH"),
            pg_config: true,
            debian_root: PathBuf::from(DEBIAN_ROOT),
        })
    }

    /// Uses `bindir` as is, checking that it holds the server tools.
    pub fn at(bindir: impl Into<PathBuf>) -> Result<PgBinaries, ClusterError> {
        let bindir = bindir.into();
        if let Some(missing) = missing_tools(&bindir) {
            return Err(ClusterError::BadBindir {
                dir: bindir,
                missing,
            });
        }
        let version = server_version(&bindir)?;
        Ok(PgBinaries { bindir, version })
    }

    /// `bindir/name`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The client `psql` matching the server if it is installed next to it, else the one on PATH.
    pub fn psql(&self) -> PathBuf {
        let own = self.tool("psql");
        if own.is_file() {
            own
        } else {
            PathBuf::from("psql")
        }
    }
}

fn find_with(search: &Search) -> Result<PgBinaries, ClusterError> {
    if let Some(dir) = &search.env_bindir {
        return PgBinaries::at(PathBuf::from(dir));
    }
    let mut searched = Vec::new();
    let candidates = path_candidate(search.path_var.as_ref())
        .into_iter()
        .chain(search.pg_config.then(pg_config_bindir).flatten())
        .chain(debian_candidate(&search.debian_root));
    for dir in candidates {
        if missing_tools(&dir).is_none() {
            return PgBinaries::at(dir);
        }
        searched.push(dir.display().to_string());
    }
    searched.insert(0, "PATH".to_string());
    searched.push(format!("{}/*/bin", search.debian_root.display()));
    searched.dedup();
    Err(ClusterError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

/// Names of required tools that `dir` lacks, or None if it has them all.
fn missing_tools(dir: &Path) -> Option<String> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|t| !dir.join(t).is_file())
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The PATH entry holding `initdb`. Only `initdb` counts: Debian puts wrapper scripts for `psql` and
/// `pg_ctl`-like tools on PATH that are not a server bindir.
fn path_candidate(path_var: Option<&OsString>) -> Option<PathBuf> {
    std::env::split_paths(path_var?).find(|d| d.join("initdb").is_file())
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let dir = text.trim();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The highest-numbered `<root>/<major>/bin` (numerically, so 16 beats 9.6).
fn debian_candidate(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let major: f64 = name.parse().ok()?;
            let bin = e.path().join("bin");
            missing_tools(&bin).is_none().then_some((major, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// Major version from `postgres --version` ("postgres (PostgreSQL) 15.8 (Debian 15.8-1)").
/// `--version` is answered before the root check, so this works as root too.
fn server_version(bindir: &Path) -> Result<u32, ClusterError> {
    let postgres = bindir.join("postgres");
    let out = Command::new(&postgres)
        .arg("--version")
        .output()
        .map_err(|e| ClusterError::io(format!("running {} --version", postgres.display()), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_major(&text).ok_or_else(|| ClusterError::Command {
        command: format!("{} --version", postgres.display()),
        status: out.status.to_string(),
        stderr: format!(
            "unexpected output: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        log: String::new(),
        hint: String::new(),
    })
}

fn parse_major(version_output: &str) -> Option<u32> {
    let after = version_output.split(')').nth(1)?.trim_start();
    let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24\n"), Some(9));
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1\n"), Some(17));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn nothing_found_says_how_to_install() {
        let search = Search {
            env_bindir: None,
            path_var: Some(OsString::from("/nonexistent-a:/nonexistent-b")),
            pg_config: false,
            debian_root: PathBuf::from("/nonexistent-root"),
        };
        let msg = find_with(&search).unwrap_err().to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("SHARDGATE_PG_BINDIR"), "{msg}");
        assert!(msg.contains("/nonexistent-root/*/bin"), "{msg}");
    }

    #[test]
    fn wrong_env_bindir_is_an_error_not_skipped() {
        let search = Search {
            env_bindir: Some(OsString::from("/nonexistent-bindir")),
            path_var: None,
            pg_config: false,
            debian_root: PathBuf::from(DEBIAN_ROOT),
        };
        let msg = find_with(&search).unwrap_err().to_string();
        assert!(
            msg.starts_with("SHARDGATE_PG_BINDIR=/nonexistent-bindir does not contain initdb"),
            "{msg}"
        );
    }
}
