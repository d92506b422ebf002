//! Hotspots and skew (issue 4, DESIGN §2.6 `GET /v1/hotspots`): which sharding keys and buckets
//! take the traffic of a database, and how unevenly its shards are loaded. Pure counting: no I/O.
//!
//! Per recorded query:
//! - one relaxed atomic increment: the key's bucket counter (hash maps), else the shard's
//!   counter (range and list maps, and statements without a key). A shard's load is its own
//!   counter plus the buckets it owns, summed when a report is made;
//! - one query in [`Settings::sample_every`] also puts its key into a Space-Saving sketch of
//!   its table ([`sketch`]). The sketch sits behind a mutex, so only sampled queries take one,
//!   and each table has several sketches ("stripes") to take it: a busy stripe is passed over
//!   for a free one. Stripes are merged when a report is made.
//!
//! Whether a query is sampled is decided from the value its counter had (mixed, so a client
//! cycling through a few keys is not sampled in step with them): no clock, no RNG, no extra
//! atomic on the query path.
//!
//! "Hot now", not "hot since start": counters live in two generations, the current window and
//! the one before; every [`Settings::window`] the older is cleared and becomes current. A report
//! sums both. The rotation is checked by every report and by one sampled query in 16 (the
//! clock is not free); without either for a while, the current window runs long, and the
//! report's `covered_seconds` says so.
//!
//! Memory is fixed when a database's counters are made: 2 generations × (buckets + shards
//! counters + tables × stripes sketches of [`Settings::capacity`] keys of at most
//! [`KEY_BYTES`] bytes).

mod layout;
mod registry;
pub mod report;
pub mod sketch;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

pub use layout::Layout;
pub use registry::Registry;
pub use report::{HotspotReport, ShardLoad, TopBucket, TopKey};

use crate::router::KeyValue;
use sketch::SpaceSaving;

/// Keys are shown (and told apart) by at most this many bytes of their text form.
pub const KEY_BYTES: usize = 64;

/// One sample in `2^CLOCK_BITS` looks at the clock to see whether the window is over.
const CLOCK_BITS: u32 = 4;

/// How much is kept and how often keys are sampled. The same for every database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Keys monitored per table and stripe.
    pub capacity: usize,
    /// One query in this many puts its key into the sketch (1: every query).
    pub sample_every: u64,
    /// Sketches per table per generation.
    pub stripes: usize,
    /// How long a generation is current.
    pub window: Duration,
}

impl Default for Settings {
    /// 1 in 16: about 15 ns per query for the sketch on top of the counter, and a hot key's
    /// count still within a few percent (bench/README.md, `hotspots`).
    fn default() -> Settings {
        Settings {
            capacity: 256,
            sample_every: 16,
            stripes: 4,
            window: Duration::from_secs(60),
        }
    }
}

/// A counter alone on its cache line: the shards' counters are few and all written often.
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A sketch and its lock alone on their cache lines, so threads taking neighbouring stripes do
/// not contend.
#[repr(align(128))]
struct Stripe(Mutex<SpaceSaving>);

/// The counters of one window.
struct Generation {
    /// When it became current, in ms since [`Hotspots::clock`].
    started_ms: AtomicU64,
    buckets: Box<[AtomicU64]>,
    /// Queries of each shard not counted by a bucket.
    shards: Box<[Padded]>,
    /// `tables × stripes` sketches; table `t`'s are `t * stripes ..`.
    sketches: Box<[Stripe]>,
}

impl Generation {
    fn new(layout: &Layout, settings: &Settings) -> Generation {
        let sketches = layout.tables.len() * settings.stripes;
        Generation {
            started_ms: AtomicU64::new(0),
            buckets: layout.owner.iter().map(|_| AtomicU64::new(0)).collect(),
            shards: layout.shards.iter().map(|_| Padded::default()).collect(),
            sketches: (0..sketches)
                .map(|_| Stripe(Mutex::new(SpaceSaving::new(settings.capacity))))
                .collect(),
        }
    }

    /// Empties it; `now_ms` becomes its start. Queries recorded meanwhile may survive: a
    /// handful, against the whole window the generation is current for.
    fn clear(&self, now_ms: u64) {
        self.buckets.iter().for_each(|c| c.store(0, Relaxed));
        self.shards.iter().for_each(|c| c.0.store(0, Relaxed));
        self.sketches.iter().for_each(|s| lock(&s.0).clear());
        self.started_ms.store(now_ms, Relaxed);
    }
}

/// The hotspot counters of one database (one per layout: see [`Registry`]).
pub struct Hotspots {
    database: String,
    layout: Layout,
    settings: Settings,
    generations: [Generation; 2],
    /// Which generation is written to. Changed only by a rotation, under `rotation`.
    current: AtomicUsize,
    /// `sample_every` as a threshold on a mixed counter value: below it, sampled.
    threshold: u64,
    /// Time zero of the `_ms` fields.
    clock: Instant,
    /// When the current generation ends, in ms since `clock`.
    rotate_at: AtomicU64,
    /// Taken to rotate and to report, so a report never sees a generation half cleared.
    rotation: Mutex<()>,
}

impl Hotspots {
    pub fn new(database: &str, layout: Layout, settings: Settings) -> Hotspots {
        let settings = Settings {
            capacity: settings.capacity.max(1),
            sample_every: settings.sample_every.max(1),
            stripes: settings.stripes.max(1),
            window: settings.window.max(Duration::from_millis(1)),
        };
        Hotspots {
            database: database.to_string(),
            generations: [0, 1].map(|_| Generation::new(&layout, &settings)),
            layout,
            current: AtomicUsize::new(0),
            threshold: u64::MAX / settings.sample_every,
            clock: Instant::now(),
            rotate_at: AtomicU64::new(window_ms(&settings)),
            rotation: Mutex::new(()),
            settings,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A query on sharded `table` for `key`, sent to `shard` (an index into the layout's shards);
    /// `bucket` is the key's bucket under a hash map ([`crate::router::Router::bucket`]).
    /// A table or shard not in the layout (a statement planned on an older snapshot) counts
    /// what it can.
    pub fn record(&self, table: &str, key: &KeyValue, bucket: Option<u32>, shard: usize) {
        let g = &self.generations[self.current.load(Relaxed)];
        let (counter, salt) = match bucket.and_then(|b| g.buckets.get(b as usize)) {
            Some(c) => (c, bucket.unwrap_or(0) as u64),
            None => match g.shards.get(shard) {
                Some(c) => (&c.0, 1 << 32 | shard as u64),
                None => return,
            },
        };
        let seen = counter.fetch_add(1, Relaxed);
        let mixed = mix(seen ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if mixed <= self.threshold {
            self.sample(g, table, key, mixed);
        }
    }

    /// A query without a sharding key sent to `shard` (e.g. a hint, or the default shard). A
    /// statement sent to several shards is one query on each.
    pub fn record_shard(&self, shard: usize) {
        let g = &self.generations[self.current.load(Relaxed)];
        if let Some(c) = g.shards.get(shard) {
            c.0.fetch_add(1, Relaxed);
        }
    }

    /// The sampled path: the key into one of its table's sketches, then a look at the clock.
    #[cold]
    #[inline(never)]
    fn sample(&self, g: &Generation, table: &str, key: &KeyValue, mixed: u64) {
        let Some(t) = self.layout.table_index(table) else {
            return;
        };
        let mut buf = [0u8; sketch::SLOT_BYTES];
        let shown = shown_key(key, &mut buf);
        let stripes = self.settings.stripes;
        let first = (mixed >> CLOCK_BITS) as usize % stripes;
        let mine = &g.sketches[t * stripes..(t + 1) * stripes];
        free_stripe(mine, first).offer(shown, 1);
        // The clock cost ~7% of a sample (perf on bench/hotspots.rs): read it on one sample in
        // 2^CLOCK_BITS. A report rotates first, so it never reads a window that is merely late.
        if mixed & ((1 << CLOCK_BITS) - 1) != 0 {
            return;
        }
        let now = self.now_ms();
        if now >= self.rotate_at.load(Relaxed) {
            if let Ok(_guard) = self.rotation.try_lock() {
                self.rotate_if_due(now);
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Makes the older generation current (cleared) once the current one's window is over.
    /// A late rotation (sparse traffic, no report) leaves the current generation covering more
    /// than a window: it is kept, not dropped, since its latest figures are as recent as any,
    /// and the report's `covered_seconds` says how long it covers. Called under `rotation`.
    fn rotate_if_due(&self, now_ms: u64) {
        let due = self.rotate_at.load(Relaxed);
        if now_ms < due {
            return;
        }
        let old = self.current.load(Relaxed);
        let new = 1 - old;
        self.generations[new].clear(now_ms);
        self.current.store(new, Relaxed);
        self.rotate_at
            .store(now_ms + window_ms(&self.settings), Relaxed);
    }

    /// The report of the current and previous windows: shard loads, skew, and the `top`
    /// busiest keys of each table and the `top` busiest buckets.
    pub fn report(&self, top: usize) -> HotspotReport {
        let _guard = lock(&self.rotation);
        let now = self.now_ms();
        self.rotate_if_due(now);
        let buckets = self.bucket_totals();
        let loads = self.shard_loads(&buckets);
        let since = self
            .generations
            .iter()
            .map(|g| g.started_ms.load(Relaxed))
            .min()
            .unwrap_or(0);
        HotspotReport {
            database: self.database.clone(),
            window_seconds: self.settings.window.as_secs(),
            covered_seconds: now.saturating_sub(since) as f64 / 1000.0,
            sample_every: self.settings.sample_every,
            queries: loads.iter().sum(),
            skew: report::skew(&loads, &self.layout.owns),
            shards: self.shard_list(&loads),
            top_keys: self.top_keys(top),
            top_buckets: self.top_buckets(&buckets, top),
        }
    }

    /// The report's skew alone, from the counters only (no sketch is locked): for a metrics
    /// scrape. It does not rotate the windows; a report does.
    pub fn skew(&self) -> f64 {
        let loads = self.shard_loads(&self.bucket_totals());
        report::skew(&loads, &self.layout.owns)
    }

    fn bucket_totals(&self) -> Vec<u64> {
        let [a, b] = &self.generations;
        a.buckets
            .iter()
            .zip(b.buckets.iter())
            .map(|(x, y)| x.load(Relaxed) + y.load(Relaxed))
            .collect()
    }

    /// Each shard's own counter plus the buckets it owns.
    fn shard_loads(&self, buckets: &[u64]) -> Vec<u64> {
        let mut loads: Vec<u64> = (0..self.layout.shards.len())
            .map(|s| {
                let own = |g: &Generation| g.shards[s].0.load(Relaxed);
                self.generations.iter().map(own).sum()
            })
            .collect();
        for (&owner, &n) in self.layout.owner.iter().zip(buckets) {
            loads[owner] += n;
        }
        loads
    }

    fn shard_list(&self, loads: &[u64]) -> Vec<ShardLoad> {
        self.layout
            .shards
            .iter()
            .zip(loads)
            .map(|(name, &queries)| ShardLoad {
                name: name.to_string(),
                queries,
            })
            .collect()
    }

    /// Every table's sketches (both generations, all stripes) merged, its `top` keys scaled up by
    /// the sampling; then all tables' together, busiest first.
    fn top_keys(&self, top: usize) -> Vec<TopKey> {
        let stripes = self.settings.stripes;
        let scale = self.settings.sample_every;
        let mut keys = Vec::new();
        for (t, table) in self.layout.tables.iter().enumerate() {
            let mut merged = SpaceSaving::new(self.settings.capacity);
            for g in &self.generations {
                for s in &g.sketches[t * stripes..(t + 1) * stripes] {
                    merged.merge(&lock(&s.0));
                }
            }
            keys.extend(merged.top(top).into_iter().map(|c| TopKey {
                table: table.to_string(),
                key: c.key.into(),
                count: c.count * scale,
                error: c.error * scale,
            }));
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.count));
        keys
    }

    fn top_buckets(&self, buckets: &[u64], top: usize) -> Vec<TopBucket> {
        let mut busy: Vec<(usize, u64)> = buckets
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .collect();
        busy.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        busy.truncate(top);
        busy.into_iter()
            .map(|(b, queries)| TopBucket {
                bucket: b as u32,
                shard: self.layout.shards[self.layout.owner[b]].to_string(),
                queries,
            })
            .collect()
    }

    /// Keys held by all sketches now (bounded by tables × stripes × capacity × 2).
    #[cfg(test)]
    fn monitored(&self) -> usize {
        let gens = self.generations.iter();
        gens.flat_map(|g| g.sketches.iter())
            .map(|s| lock(&s.0).len())
            .sum()
    }
}

fn window_ms(settings: &Settings) -> u64 {
    settings.window.as_millis() as u64
}

/// A poisoned sketch is still a valid sketch (every offer leaves it consistent before it can
/// panic): keep counting.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first stripe from `first` on that no one holds; if all are held, waits for `first`.
fn free_stripe(stripes: &[Stripe], first: usize) -> MutexGuard<'_, SpaceSaving> {
    for i in 0..stripes.len() {
        match stripes[(first + i) % stripes.len()].0.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(TryLockError::WouldBlock) => {}
        }
    }
    lock(&stripes[first].0)
}

/// splitmix64's finalizer: consecutive counter values become unrelated ones.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `key`'s text form in `buf`, cut to [`KEY_BYTES`] (at a character boundary, then `…`), with
/// no allocation: only a key the sketch does not hold yet is copied to the heap.
fn shown_key<'b>(key: &KeyValue, buf: &'b mut [u8; sketch::SLOT_BYTES]) -> &'b str {
    use std::io::Write;
    let len = match key {
        KeyValue::Text(s) if s.len() > KEY_BYTES => {
            let mut end = KEY_BYTES;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            buf[..end].copy_from_slice(&s.as_bytes()[..end]);
            buf[end..end + 3].copy_from_slice("…".as_bytes());
            end + 3
        }
        KeyValue::Text(s) => {
            buf[..s.len()].copy_from_slice(s.as_bytes());
            s.len()
        }
        // `Display` goes through the formatting machinery: a tenth of the sample's cost.
        KeyValue::Int(v) => int_text(*v, buf),
        // At most 36 bytes, so the write cannot run out of room.
        KeyValue::Uuid(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{key}");
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or("?")
}

/// `v` in decimal at the start of `buf`; its length (at most 20 bytes).
fn int_text(v: i64, buf: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let sign = usize::from(v < 0);
    buf[0] = b'-';
    let len = digits.len() - at;
    buf[sign..sign + len].copy_from_slice(&digits[at..]);
    sign + len
}
