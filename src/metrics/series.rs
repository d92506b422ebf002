//! The series the query path records into (statement counts, bytes, routing decisions, backend
//! errors, statement duration and checkout wait), kept by shardgate itself and written into the
//! exposition after the recorder's series.
//!
//! Why not the exporter's counters and histograms: every worker would add into the same atomics,
//! so an add often has to take the cache line from the other worker's core first. A query records
//! into five lines or more (bytes in and out, its statement, its duration, its checkout's wait);
//! on two threads with about half a microsecond of other work between queries that cost 940–975
//! ns per query against 555–577 with cells per worker (`cargo bench --bench metrics`, "a query on
//! each of 2 workers"). Under pgbench the difference is within the noise of this 2-core machine
//! (bench/README.md, eighth session); it grows with the number of cores. So each series has a cell
//! per worker ([`crate::workers`]) on cache lines of its own, and the scrape sums the cells. The
//! exporter's histograms also keep every sample until upkeep folds them into buckets; here a
//! record is two relaxed atomic adds into fixed buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::DURATION_BUCKETS;

const BUCKETS: usize = DURATION_BUCKETS.len();

/// Upper bounds in nanoseconds, inclusive as Prometheus' `le`.
const BOUNDS_NS: [u64; BUCKETS] = {
    let mut ns = [0u64; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        // The bounds are whole numbers of 50 µs, exact in f64.
        ns[i] = (DURATION_BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    ns
};

/// A kind of series: how its cells are written into the exposition.
pub trait Series: Default {
    /// The `# TYPE` of its family.
    const TYPE: &'static str;

    /// The series' lines, from the cells of all workers; `labels` are `name="value"` pairs
    /// joined by commas.
    fn write(cells: &[Arc<Self>], out: &mut String, name: &str, labels: &str);
}

/// One worker's count of a counter. Aligned to two cache lines (the pair the CPU may fetch
/// together), so no other worker's cell shares them.
#[derive(Default)]
#[repr(align(128))]
pub struct Tally(AtomicU64);

impl Tally {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

impl Series for Tally {
    const TYPE: &'static str = "counter";

    fn write(cells: &[Arc<Self>], out: &mut String, name: &str, labels: &str) {
        let total: u64 = cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
        match labels {
            "" => {
                let _ = writeln!(out, "{name} {total}");
            }
            _ => {
                let _ = writeln!(out, "{name}{{{labels}}} {total}");
            }
        }
    }
}

/// One worker's share of a histogram: samples per bucket (the last is above every bound) and
/// their sum.
#[derive(Default)]
#[repr(align(128))]
pub struct Timings {
    buckets: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Timings {
    pub fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Series for Timings {
    const TYPE: &'static str = "histogram";

    fn write(cells: &[Arc<Self>], out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for i in 0..=BUCKETS {
            cumulative += cells
                .iter()
                .map(|c| c.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            let le = match DURATION_BUCKETS.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum_ns: u64 = cells.iter().map(|c| c.sum_ns.load(Ordering::Relaxed)).sum();
        let sum = sum_ns as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// A family of series: its name and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
}

impl Family {
    pub const fn new(name: &'static str, help: &'static str) -> Family {
        Family { name, help }
    }
}

/// Every series of one kind of one proxy, by family and labels, with a cell per worker.
/// Registering a series again returns the same cell, so counts carry over a reload that rebuilds
/// a database's handles.
pub struct Registry<T> {
    series: Mutex<BTreeMap<(Family, String), Cells<T>>>,
}

/// A series' cells, indexed by worker.
type Cells<T> = Vec<Arc<T>>;

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            series: Mutex::default(),
        }
    }
}

impl<T: Series> Registry<T> {
    /// Worker `worker`'s cell of the series of `family` with these labels (configured names
    /// only).
    pub fn register(&self, family: Family, labels: &[(&str, &str)], worker: usize) -> Arc<T> {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let cells = series.entry((family, labels)).or_default();
        while cells.len() <= worker {
            cells.push(Arc::default());
        }
        cells[worker].clone()
    }

    /// The exposition text of every family, each with its HELP and TYPE lines and a blank line
    /// after it.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut last: Option<Family> = None;
        for ((family, labels), cells) in series.iter() {
            if last != Some(*family) {
                if last.is_some() {
                    out.push('\n');
                }
                let name = family.name;
                let _ = writeln!(out, "# HELP {name} {}", family.help);
                let _ = writeln!(out, "# TYPE {name} {}", T::TYPE);
                last = Some(*family);
            }
            T::write(cells, out, family.name, labels);
        }
        if last.is_some() {
            out.push('\n');
        }
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
