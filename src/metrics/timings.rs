//! The two histograms the query path records into (statement duration, checkout wait), kept by
//! shardgate itself and written into the exposition after the recorder's series.
//!
//! Why not the exporter's histograms: they keep every sample until upkeep folds them into
//! buckets, and each record also bumps a generation counter shared by both worker threads; the
//! two histograms per statement cost ~4% of shardgate's user CPU under pgbench. Here a record is
//! two relaxed atomic adds into fixed buckets.

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

/// One histogram: samples per bucket (the last is above every bound) and their sum.
#[derive(Default)]
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

    /// The series' lines; `labels` are `name="value"` pairs joined by commas.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match DURATION_BUCKETS.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// A histogram family: its name and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
}

/// Every histogram of one proxy, by family and labels. Registering a series again returns the
/// same histogram, so counts carry over a reload that rebuilds a database's handles.
#[derive(Default)]
pub struct Registry {
    series: Mutex<BTreeMap<(Family, String), Arc<Timings>>>,
}

impl Registry {
    /// The histogram of `family` with these labels (configured names only).
    pub fn register(&self, family: Family, labels: &[(&str, &str)]) -> Arc<Timings> {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.entry((family, labels)).or_default().clone()
    }

    /// The exposition text of every family, each with its HELP and TYPE lines.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut last: Option<Family> = None;
        for ((family, labels), timings) in series.iter() {
            if last != Some(*family) {
                if last.is_some() {
                    out.push('\n');
                }
                let name = family.name;
                let _ = writeln!(out, "# HELP {name} {}", family.help);
                let _ = writeln!(out, "# TYPE {name} histogram");
                last = Some(*family);
            }
            timings.write(out, family.name, labels);
        }
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
