//! Statements in flight: routed with one snapshot's map but not yet sent to their server.
//!
//! A resharding cutover holds the slice's new transactions, but a statement routed with the map
//! from before the hold may still be on its way to the old owner (waiting for a pooled
//! connection, or for the scheduler) when the owners' roles are switched: the old owner would
//! then refuse its write (40001). So a shardgate acknowledges a new epoch only once every
//! transaction's first statement routed before it has been sent — after which such a
//! transaction is under way on its server, where the cutover waits for it (`reshard::cutover`,
//! which first opens a connection of its own there: the statement has long arrived). Counting
//! up to the send, not the answer, keeps a long statement from holding up every cutover.
//!
//! Two counters, as in sleepable RCU: statements enter the current one; acknowledging an epoch
//! flips to the other and waits for the old one to drain. A statement that entered just as the
//! flip happened sees it and enters again with the newer map. Each worker ([`crate::workers`])
//! has a pair of its own, summed by the drainer: a pair every session wrote passed its cache line
//! between the cores twice per transaction.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

/// The counters; one per process (in the [`super::Store`]), one drainer at a time (the
/// heartbeat that acknowledges epochs).
pub struct Flights {
    /// The snapshot version the drainer waits past (times two), plus the counter statements
    /// enter now (the low bit).
    gate: AtomicU64,
    /// Per worker, its two counters.
    counts: Box<[[Counter; 2]]>,
}

/// A counter on cache lines of its own: only its worker's sessions write it.
#[derive(Default)]
#[repr(align(128))]
struct Counter(AtomicUsize);

/// A statement counted in flight: give it back with [`Flights::land`] (once: not `Copy`).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a flight never landed holds up every cutover"]
pub struct Flight {
    worker: usize,
    side: usize,
}

impl Flights {
    /// Counters for `workers` workers (at least one).
    pub fn new(workers: usize) -> Flights {
        Flights {
            gate: AtomicU64::new(0),
            counts: (0..workers.max(1)).map(|_| Default::default()).collect(),
        }
    }

    /// Counts a statement routed with the map of snapshot `version` in flight, on worker
    /// `worker`; `None` when that map is older than the one being acknowledged (route again with
    /// the newer one).
    pub fn enter(&self, version: u64, worker: usize) -> Option<Flight> {
        // Any pair is correct, since the drainer sums them all; a worker's own is cheap.
        let worker = worker.min(self.counts.len() - 1);
        let pair = &self.counts[worker];
        loop {
            let gate = self.gate.load(SeqCst);
            let side = (gate & 1) as usize;
            pair[side].0.fetch_add(1, SeqCst);
            // Unchanged after counting: the drainer, which flips before it looks, sees this one.
            if self.gate.load(SeqCst) != gate {
                pair[side].0.fetch_sub(1, SeqCst);
                continue;
            }
            if version < gate >> 1 {
                pair[side].0.fetch_sub(1, SeqCst);
                return None;
            }
            return Some(Flight { worker, side });
        }
    }

    /// The statement has been sent (or refused).
    pub fn land(&self, flight: Flight) {
        self.counts[flight.worker][flight.side]
            .0
            .fetch_sub(1, SeqCst);
    }

    /// Starts waiting past `version` (already swapped in): later statements need a map at least
    /// that new. The returned drain is over once [`Flights::drained`] says so.
    pub fn flip(&self, version: u64) -> Drain {
        let old = self.gate.load(SeqCst) & 1;
        self.gate.store((version << 1) | (old ^ 1), SeqCst);
        Drain(old as usize)
    }

    /// Whether every statement counted before `drain` began has been sent.
    pub fn drained(&self, drain: Drain) -> bool {
        self.counts
            .iter()
            .all(|pair| pair[drain.0].0.load(SeqCst) == 0)
    }
}

/// The counter a [`Flights::flip`] left to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain(usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_waits_for_the_statements_before_it_only() {
        let f = Flights::new(2);
        let early = f.enter(1, 0).unwrap();
        let drain = f.flip(2);
        assert!(!f.drained(drain));
        // Routed with the newer map (on the other worker): counted on the other side, not
        // waited for.
        let late = f.enter(2, 1).unwrap();
        assert!(!f.drained(drain));
        f.land(early);
        assert!(f.drained(drain));
        // The next flip waits for the later one.
        let next = f.flip(3);
        assert!(!f.drained(next));
        f.land(late);
        assert!(f.drained(next));
    }

    #[test]
    fn a_statement_routed_with_an_older_map_routes_again() {
        let f = Flights::new(1);
        let drain = f.flip(5);
        assert_eq!(f.enter(4, 0), None);
        assert!(f.drained(drain), "a refused entry leaves nothing counted");
        assert!(f.enter(5, 0).is_some() && f.enter(9, 0).is_some());
    }

    #[test]
    fn no_statement_of_an_older_map_is_in_flight_once_drained() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        // Three pairs for four threads: the last two share one, as workers beyond the count do.
        let f = Arc::new(Flights::new(3));
        let stop = Arc::new(AtomicBool::new(false));
        // The version statements are routed with, the one every older flight has landed before
        // (as the drainer says), and how many have flown.
        let version = Arc::new(AtomicU64::new(1));
        let drained_past = Arc::new(AtomicU64::new(0));
        let flown = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let (f, stop, flown) = (f.clone(), stop.clone(), flown.clone());
                let (version, drained_past) = (version.clone(), drained_past.clone());
                std::thread::spawn(move || {
                    let mut late = 0u64;
                    while !stop.load(SeqCst) {
                        let v = version.load(SeqCst);
                        if let Some(flight) = f.enter(v, worker) {
                            std::hint::spin_loop();
                            late += u64::from(drained_past.load(SeqCst) > v);
                            f.land(flight);
                            flown.fetch_add(1, SeqCst);
                        }
                    }
                    late
                })
            })
            .collect();
        for v in 2..120 {
            // Statements fly between any two flips, however busy the machine.
            let before = flown.load(SeqCst);
            while flown.load(SeqCst) == before {
                std::thread::yield_now();
            }
            version.store(v, SeqCst);
            let drain = f.flip(v);
            while !f.drained(drain) {
                std::thread::yield_now();
            }
            drained_past.store(v, SeqCst);
        }
        stop.store(true, SeqCst);
        let late: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(
            late, 0,
            "statements of an older map still in flight after a drain"
        );
    }
}
