//! Medians over repetitions and the Markdown table.

use std::fmt::Write as _;

use crate::pgbench::Mode;

/// One pgbench run's numbers, with the proxy's CPU cost where there is a proxy.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub tps: f64,
    pub latency_ms: f64,
    pub cpu: Option<Cpu>,
}

/// The proxy's CPU time per query, split as the kernel accounts it: user (the proxy's own code)
/// and system (the kernel's socket work on its behalf, much the same for every proxy). The split
/// says which of the two a difference between proxies comes from.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub user_us: f64,
    pub system_us: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.user_us + self.system_us
    }
}

/// All repetitions of one (target, mode, clients) combination.
#[derive(Debug, Clone)]
pub struct Cell {
    pub target: &'static str,
    pub mode: Mode,
    pub clients: u32,
    pub runs: Vec<Result<Sample, String>>,
}

/// Medians of a cell's successful runs.
#[derive(Debug, Clone, Copy)]
struct Medians {
    tps: f64,
    latency_ms: f64,
    /// The run with the median total CPU (the lower middle one of an even count), its user and
    /// system parts kept as a pair.
    cpu: Option<Cpu>,
}

impl Cell {
    fn medians(&self) -> Option<Medians> {
        let ok: Vec<&Sample> = self.runs.iter().filter_map(|r| r.as_ref().ok()).collect();
        if ok.is_empty() {
            return None;
        }
        let mut cpu: Vec<Cpu> = ok.iter().filter_map(|s| s.cpu).collect();
        cpu.sort_by(|a, b| a.total().total_cmp(&b.total()));
        Some(Medians {
            tps: median(ok.iter().map(|s| s.tps).collect()),
            latency_ms: median(ok.iter().map(|s| s.latency_ms).collect()),
            cpu: cpu.get(cpu.len().saturating_sub(1) / 2).copied(),
        })
    }

    /// Each distinct error of this cell's failed runs, with how many runs it hit. Errors that
    /// differ only in numbers ("client 7" vs "client 2") count as one.
    fn errors(&self) -> Vec<(usize, &str)> {
        let shape = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "");
        let mut out: Vec<(usize, &str)> = Vec::new();
        for e in self.runs.iter().filter_map(|r| r.as_ref().err()) {
            match out.iter_mut().find(|(_, text)| shape(text) == shape(e)) {
                Some((n, _)) => *n += 1,
                None => out.push((1, e)),
            }
        }
        out
    }
}

/// The median; the mean of the middle two for an even count.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The results table, one row per cell in the given order, then the errors of failed runs.
pub fn table(cells: &[Cell]) -> String {
    let mut out = String::new();
    out.push_str(
        "| clients | mode | target | TPS | TPS vs direct | avg latency ms | latency vs direct \
         | proxy CPU µs/query | user + sys | runs ok |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut notes = String::new();
    for cell in cells {
        let direct = cells
            .iter()
            .find(|c| c.target == "direct" && c.mode == cell.mode && c.clients == cell.clients)
            .and_then(Cell::medians);
        let _ = writeln!(out, "{}", row(cell, direct));
        for (n, err) in cell.errors() {
            let _ = writeln!(
                notes,
                "- {} / {} / {} clients, {n} of {} runs failed, e.g.:\n\n```\n{err}\n```\n",
                cell.target,
                cell.mode.as_str(),
                cell.clients,
                cell.runs.len()
            );
        }
    }
    if !notes.is_empty() {
        let _ = write!(
            out,
            "\nFailed runs (pgbench's error lines, verbatim):\n\n{notes}"
        );
    }
    out
}

fn row(cell: &Cell, direct: Option<Medians>) -> String {
    let ok = cell.runs.iter().filter(|r| r.is_ok()).count();
    let head = format!(
        "| {} | {} | {} ",
        cell.clients,
        cell.mode.as_str(),
        cell.target
    );
    let runs = format!("{ok}/{}", cell.runs.len());
    let Some(m) = cell.medians() else {
        return format!("{head}| error | | | | | | {runs} |");
    };
    let ratio = |v: f64, d: Option<f64>| d.map_or(String::new(), |d| format!("{:.2}×", v / d));
    let (cpu, split) = m.cpu.map_or(("—".to_string(), String::new()), |c| {
        (
            format!("{:.1}", c.total()),
            format!("{:.1} + {:.1}", c.user_us, c.system_us),
        )
    });
    format!(
        "{head}| {:.0} | {} | {:.3} | {} | {cpu} | {split} | {runs} |",
        m.tps,
        ratio(m.tps, direct.map(|d| d.tps)),
        m.latency_ms,
        ratio(m.latency_ms, direct.map(|d| d.latency_ms)),
    )
}
