//! Running real driver programs (Python, Node, Java) from Rust tests: requiring the tools with
//! install instructions (a missing driver fails its test, never skips it), running a program
//! with a timeout, and checking the exact lines it printed.
//!
//! A program that fails through the proxy is run again against a plain Postgres database, and the
//! failure says whether it passes there, which tells a shardgate bug from a broken driver install.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const INSTALL: &str = "run `bash .ci/install-drivers.sh` (as root) to install the drivers";
/// A driver program that takes longer than this has hung; it is killed and the test fails.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);
/// The PostgreSQL JDBC driver, as Debian's libpostgresql-jdbc-java installs it.
pub const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

pub fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

pub fn python() -> String {
    std::env::var("DRIVERS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fails the test, with how to install it, unless `cmd` runs and exits 0.
pub fn require(what: &str, cmd: &mut Command, how: &str) {
    let ok = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{what} is required for this test but is missing: {how}; or {INSTALL}"
    );
}

pub fn require_python_module(module: &str, pip: &str) {
    require(
        &format!("Python module `{module}` (for `{}`)", python()),
        Command::new(python()).args(["-c", &format!("import {module}")]),
        &format!("`{} -m pip install \"{pip}\"`", python()),
    );
}

/// Requires a JDK and the JDBC driver, compiles `source` into `classes`, and returns the class
/// path to run it with.
pub async fn compile_java(source: PathBuf, classes: PathBuf) -> String {
    let how = "`apt-get install -y default-jdk-headless libpostgresql-jdbc-java`";
    require(
        "A JDK (`javac`)",
        Command::new("javac").arg("-version"),
        how,
    );
    require("Java (`java`)", Command::new("java").arg("-version"), how);
    assert!(
        Path::new(JDBC_JAR).is_file(),
        "the PostgreSQL JDBC driver ({JDBC_JAR}) is required for this test but is missing: {how}; or {INSTALL}"
    );
    let (c2, s2) = (classes.clone(), source.clone());
    let javac = tokio::task::spawn_blocking(move || {
        Command::new("javac")
            .args(["-cp", JDBC_JAR, "-d"])
            .arg(&c2)
            .arg(&s2)
            .output()
            .expect("run javac")
    })
    .await
    .unwrap();
    assert!(
        javac.status.success(),
        "javac {}: {}",
        source.display(),
        String::from_utf8_lossy(&javac.stderr)
    );
    format!("{}:{JDBC_JAR}", classes.display())
}

pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `program` with `args`, output to files in `dir`, killing it after [`PROGRAM_TIMEOUT`].
pub fn run_program(dir: &Path, tag: &str, program: &str, args: &[String], cwd: &Path) -> Ran {
    let out_path = dir.join(format!("{tag}.stdout"));
    let err_path = dir.join(format!("{tag}.stderr"));
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {INSTALL}"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for driver program") {
            break Some(status);
        }
        if start.elapsed() > PROGRAM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!(
            "\n[killed after {PROGRAM_TIMEOUT:?}: the program hung]"
        ));
    }
    Ran {
        ok: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr,
        elapsed: start.elapsed(),
    }
}

/// One driver program to run through the proxy, and how to run it directly for comparison.
pub struct Program<'a> {
    /// Names the output files and the failure.
    pub name: &'a str,
    pub program: &'a str,
    pub cwd: PathBuf,
    /// Where the output files go.
    pub dir: PathBuf,
    /// Arguments that point the program at the proxy.
    pub through_proxy: Vec<String>,
    /// Arguments that point it at a plain Postgres database instead.
    pub direct: Vec<String>,
}

impl Program<'_> {
    /// Runs the program through the proxy and requires exit 0 and every line of `expected` in its
    /// output, in order; returns its stdout. On failure it reruns the program directly to tell
    /// which side is broken.
    pub async fn run(self, expected: &[&str]) -> String {
        let (dir, name, program, cwd) = (
            self.dir.clone(),
            self.name.to_owned(),
            self.program.to_owned(),
            self.cwd.clone(),
        );
        let (d, n, p, c, args) = (
            dir.clone(),
            name.clone(),
            program.clone(),
            cwd.clone(),
            self.through_proxy,
        );
        let ran = tokio::task::spawn_blocking(move || run_program(&d, &n, &p, &args, &c))
            .await
            .unwrap();
        eprintln!(
            "{name}: {:.1}s through shardgate\n--- stdout\n{}--- stderr\n{}",
            ran.elapsed.as_secs_f64(),
            ran.stdout,
            ran.stderr
        );
        let missing: Vec<&str> = missing_lines(&ran.stdout, expected);
        if ran.ok && missing.is_empty() {
            return ran.stdout;
        }
        let tag = format!("{name}-direct");
        let args = self.direct;
        let direct =
            tokio::task::spawn_blocking(move || run_program(&dir, &tag, &program, &args, &cwd))
                .await
                .unwrap();
        let verdict = if direct.ok {
            "It PASSES directly against Postgres (same program, plain database): a shardgate bug."
        } else {
            "It FAILS directly against Postgres too: the driver or its install is broken, not (only) shardgate."
        };
        panic!(
            "{name} through shardgate: exit {}, missing lines {missing:?}.\n{verdict}\n\
             --- through shardgate, stdout:\n{}\n--- stderr:\n{}\n\
             --- directly, stdout:\n{}\n--- stderr:\n{}",
            if ran.ok { "0" } else { "non-zero" },
            ran.stdout,
            ran.stderr,
            direct.stdout,
            direct.stderr
        );
    }
}

/// Lines of `expected` not found in `out`, in order.
fn missing_lines<'a>(out: &str, expected: &[&'a str]) -> Vec<&'a str> {
    let mut lines = out.lines();
    let mut missing = Vec::new();
    for want in expected {
        if !lines.by_ref().any(|l| l == *want) {
            missing.push(*want);
            lines = out.lines();
        }
    }
    missing
}
