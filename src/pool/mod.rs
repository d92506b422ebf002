//! bb8 pools of backend connections, one per server.
//!
//! bb8's per-checkout test query is off: a transaction-pooling proxy checks out a connection per
//! transaction, and a round trip per checkout would double the latency of short transactions.
//! A connection whose protocol state is unknown is marked broken by the session and dropped on return.

mod queue;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{BackendError, Connection, Target};

/// Boxed: a connection is handed from the pool to a session and back on every transaction,
/// through several moves each way, and unboxed each move copied its whole ~300 bytes (about a
/// tenth of the instructions shardgate spent on a pgbench `-S` query, counted by callgrind).
type Bb8Connection = Box<bb8::PooledConnection<'static, Manager>>;
type Place = queue::Place<Bb8Connection>;

/// A checked-out connection. Dropping it hands the connection to the next checkout in line
/// (or puts it on the idle stack) with its place; a broken one goes to bb8 to be closed first,
/// and the place on its own, so the next checkout opens a new connection.
pub struct PooledConnection {
    conn: Option<Bb8Connection>,
    place: Option<Place>,
    /// Closed on return rather than kept: opened by one worker for a place borrowed from
    /// another's slice, its socket is driven by the wrong thread for that slice.
    for_once: bool,
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let (Some(mut conn), Some(place)) = (self.conn.take(), self.place.take()) else {
            return;
        };
        if self.for_once {
            conn.mark_broken();
        }
        if conn.is_broken() {
            drop(conn); // bb8 sees `has_broken` and closes it
            drop(place);
        } else {
            place.give_back(conn);
        }
    }
}

impl std::ops::Deref for PooledConnection {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("present until dropped")
    }
}

/// Pool settings that come from the config's `pool` section, and the number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub size: u32,
    pub checkout_timeout: Duration,
    pub connect_timeout: Duration,
    /// How many workers ([`crate::workers`]) check out from the pool: one slice each, as long as
    /// `size` allows.
    pub workers: u32,
}

pub struct Manager {
    target: Target,
    shard: Arc<str>,
    connect_timeout: Duration,
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = BackendError;

    async fn connect(&self) -> Result<Connection, BackendError> {
        Connection::connect(&self.target, self.shard.clone(), self.connect_timeout).await
    }

    async fn is_valid(&self, _conn: &mut Connection) -> Result<(), BackendError> {
        Ok(())
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.is_broken()
    }
}

/// The last connect error of a pool: bb8 retries failed connects in the background and only
/// reports them to an error sink, so this is how a checkout learns that the server is down.
#[derive(Clone, Default, Debug)]
struct LastError {
    last: Arc<Mutex<Option<(Instant, String)>>>,
    /// Wakes checkouts waiting for a connection that will not come.
    failed: Arc<tokio::sync::Notify>,
}

impl bb8::ErrorSink<BackendError> for LastError {
    fn sink(&self, error: BackendError) {
        tracing::warn!(%error, "backend connection failed");
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), error.to_string()));
        self.failed.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<BackendError>> {
        Box::new(self.clone())
    }
}

impl LastError {
    fn since(&self, t: Instant) -> Option<String> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| *at >= t)
            .map(|(_, e)| e.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("no connection to shard \"{shard}\" became free within {waited:?} (pool size {size})")]
    Exhausted {
        shard: String,
        waited: Duration,
        size: u32,
    },
    /// A place was free, but the new connection for it did not open in time.
    #[error("no new connection to shard \"{shard}\" opened within {waited:?}")]
    Connecting { shard: String, waited: Duration },
    #[error("shard \"{shard}\" is unreachable: {reason}")]
    Unreachable { shard: String, reason: String },
}

/// A pool of connections to one server of one shard.
///
/// Checkout is first come, first served ([`queue`]): bb8 alone hands an idle connection to
/// whoever asks next, so a client that just returned one takes it straight back while others
/// wait (and time out). bb8 opens connections, bounds their number and closes idle ones; the
/// queue's idle stack is the hot path (connections on it count as in use as far as bb8 knows;
/// entries idle longer than [`queue::IDLE_RETURN`] are handed back to it). bb8's own `get()`
/// builds a timeout and reads the clock on every call, about a tenth of shardgate's CPU per
/// query when measured under pgbench.
///
/// With several workers the pool is cut into a slice per worker (`size` shared out, each slice
/// its own queue and bb8 pool), so that a connection is opened, and its socket driven, by the
/// runtime of the sessions that use it: a socket registered with another worker's driver would
/// route every reply through that thread. A worker whose slice is full takes a free place in
/// another slice before it waits in line (and closes a connection it opened for that place when
/// the transaction ends). A pool smaller than the number of workers has `size`
/// slices, shared by the workers in turn.
#[derive(Clone)]
pub struct Pool {
    slices: Arc<[Slice]>,
    shard: Arc<str>,
    target: Target,
    settings: PoolSettings,
    last_error: LastError,
    warnings: Arc<Warnings>,
}

/// Warnings about checkouts that timed out, at most one a second per pool: when a pool runs
/// dry every waiter times out, and one line with the pool's state says what a thousand would.
#[derive(Default)]
struct Warnings {
    /// When the last warning was logged, and how many were held back since.
    last: Mutex<Option<(Instant, u32)>>,
}

impl Warnings {
    const EVERY: Duration = Duration::from_secs(1);

    /// Calls `log` with the number of warnings held back since the last one, unless one was
    /// logged less than [`Self::EVERY`] ago.
    fn warn(&self, log: impl FnOnce(u32)) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *last {
            Some((at, held_back)) if now.duration_since(*at) < Self::EVERY => *held_back += 1,
            _ => {
                let held_back = last.map_or(0, |(_, n)| n);
                *last = Some((now, 0));
                drop(last);
                log(held_back);
            }
        }
    }
}

/// One worker's share of a pool.
struct Slice {
    inner: bb8::Pool<Manager>,
    queue: Arc<queue::Queue<Bb8Connection>>,
    size: u32,
}

impl Slice {
    fn new(
        size: u32,
        pool: (&Target, &Arc<str>),
        settings: PoolSettings,
        errors: &LastError,
    ) -> Slice {
        let (target, shard) = pool;
        let manager = Manager {
            target: target.clone(),
            shard: shard.clone(),
            connect_timeout: settings.connect_timeout,
        };
        let inner = bb8::Pool::builder()
            .max_size(size)
            .test_on_check_out(false)
            .connection_timeout(settings.checkout_timeout)
            .idle_timeout(Some(Duration::from_secs(600)))
            .error_sink(Box::new(errors.clone()))
            .build_unchecked(manager);
        Slice {
            inner,
            queue: queue::Queue::new(size, settings.checkout_timeout),
            size,
        }
    }

    /// Places held: connections checked out (or being opened for their holders).
    fn in_use(&self) -> u32 {
        self.size.saturating_sub(self.queue.free())
    }
}

/// The sizes of a pool's slices: `size` shared out as evenly as it goes, one slice per worker,
/// none empty.
fn slice_sizes(size: u32, workers: u32) -> impl Iterator<Item = u32> {
    let n = workers.clamp(1, size.max(1));
    (0..n).map(move |i| size / n + u32::from(i < size % n))
}

impl Pool {
    /// Builds the pool without connecting: connections are opened on first use.
    pub fn new(shard: &str, target: Target, settings: PoolSettings) -> Pool {
        let last_error = LastError::default();
        let shard: Arc<str> = shard.into();
        let slices = slice_sizes(settings.size, settings.workers)
            .map(|size| Slice::new(size, (&target, &shard), settings, &last_error))
            .collect();
        Pool {
            slices,
            shard,
            target,
            settings,
            last_error,
            warnings: Arc::default(),
        }
    }

    /// A connection for a session on `worker`, waiting in line up to the checkout timeout
    /// counted from `started` (when the caller began to ask: it reads the clock for its own
    /// timing anyway).
    pub async fn checkout(
        &self,
        worker: usize,
        started: Instant,
    ) -> Result<PooledConnection, CheckoutError> {
        let home = self.home(worker);
        // Not a nested `async fn`: a level of those costs its entry on every poll of a wait.
        let (slice, grant) = match self.spare_place(worker) {
            Some(spare) => spare,
            None => match home.queue.checkout(started).await {
                Ok(grant) => (home, grant),
                Err(_) => return Err(self.timed_out(started)),
            },
        };
        let borrowed = !std::ptr::eq(slice, home);
        let mut conn = grant.conn;
        // A few stale idle connections (a restarted server) are replaced; more would mean the
        // server is down, which the connect error reports.
        for _ in 0..=self.settings.size {
            let (mut c, opened) = match conn.take() {
                Some(c) => (c, false),
                None => (self.open(slice, started).await?, true),
            };
            if !c.is_stale() {
                return Ok(PooledConnection {
                    conn: Some(c),
                    place: Some(grant.place),
                    for_once: opened && borrowed,
                });
            }
            tracing::info!(shard = %self.shard, "dropping a server connection the server has closed");
            c.mark_broken();
        }
        Err(self.unreachable("every pooled connection had been closed by the server".into()))
    }

    /// With a place held and no idle connection: one idle in bb8, or a new one. A failed
    /// connect wakes the wait at once, so a down server answers with 08006 instead of after the
    /// whole timeout.
    async fn open(&self, slice: &Slice, started: Instant) -> Result<Bb8Connection, CheckoutError> {
        // Returned to the idle stack since the place was granted.
        if let Some(conn) = slice.queue.pop_idle() {
            return Ok(conn);
        }
        let deadline = tokio::time::Instant::from_std(started + self.settings.checkout_timeout);
        // Registered before looking, so a failure in between is not missed.
        let failed = self.last_error.failed.notified();
        tokio::pin!(failed);
        failed.as_mut().enable();
        if let Some(reason) = self.last_error.since(started) {
            return Err(self.unreachable(reason));
        }
        tokio::select! {
            got = tokio::time::timeout_at(deadline, slice.inner.get_owned()) => match got {
                Ok(Ok(conn)) => Ok(Box::new(conn)),
                Ok(Err(bb8::RunError::User(e))) => Err(self.unreachable(e.to_string())),
                Ok(Err(bb8::RunError::TimedOut)) | Err(_) => Err(self.not_opened(started)),
            },
            _ = failed => Err(self.unreachable(self.last_error.since(started).unwrap_or_default())),
        }
    }

    /// With several slices: a free place in `worker`'s slice, or else in another. `None`: wait
    /// in line in `worker`'s slice (one slice: always). A place freed in another slice later
    /// does not end that wait: that would need the slices to share a line, which is what
    /// slicing avoids.
    fn spare_place(&self, worker: usize) -> Option<(&Slice, queue::Grant<Bb8Connection>)> {
        if self.slices.len() == 1 {
            return None;
        }
        let home = self.home(worker);
        if let Some(grant) = home.queue.try_take() {
            return Some((home, grant));
        }
        // `free` is read without the lock first: when every slice is busy (when waits happen
        // at all) the other workers' locks are not touched.
        self.slices
            .iter()
            .filter(|s| s.queue.free() > 0)
            .find_map(|s| Some((s, s.queue.try_take()?)))
    }

    fn home(&self, worker: usize) -> &Slice {
        &self.slices[worker % self.slices.len()]
    }

    /// A checkout that waited in line too long: the server is down if connecting failed
    /// meanwhile, else every connection was busy.
    fn timed_out(&self, started: Instant) -> CheckoutError {
        if let Some(reason) = self.last_error.since(started) {
            return self.unreachable(reason);
        }
        self.warnings.warn(|repeats| {
            let (open, held, waiting) = self.gauges();
            tracing::warn!(
                shard = %self.shard,
                size = self.settings.size,
                held,
                open,
                waiting,
                repeats,
                "checkouts time out: every connection stayed busy for {:?} (pool.checkout_timeout_ms); \
                 look for long transactions in pg_stat_activity, or raise pool.size",
                self.settings.checkout_timeout,
            );
        });
        CheckoutError::Exhausted {
            shard: self.shard.to_string(),
            waited: self.settings.checkout_timeout,
            size: self.settings.size,
        }
    }

    /// A checkout that held a place but whose new connection did not open in time: the server
    /// is down if connecting failed meanwhile, else slow to accept.
    fn not_opened(&self, started: Instant) -> CheckoutError {
        if let Some(reason) = self.last_error.since(started) {
            return self.unreachable(reason);
        }
        self.warnings.warn(|repeats| {
            tracing::warn!(
                shard = %self.shard,
                server = %self.target,
                repeats,
                "a new server connection did not open within {:?} (pool.checkout_timeout_ms): \
                 the server is slow to accept connections",
                self.settings.checkout_timeout,
            );
        });
        CheckoutError::Connecting {
            shard: self.shard.to_string(),
            waited: self.settings.checkout_timeout,
        }
    }

    fn unreachable(&self, reason: String) -> CheckoutError {
        CheckoutError::Unreachable {
            shard: self.shard.to_string(),
            reason,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// The pool's state for the metrics: connections open, checked out, and checkouts waiting.
    pub fn gauges(&self) -> (u32, u32, u32) {
        self.slices
            .iter()
            .fold((0, 0, 0), |(open, in_use, waiting), s| {
                (
                    open + s.inner.state().connections,
                    in_use + s.in_use(),
                    waiting + s.queue.waiting(),
                )
            })
    }

    /// Transactions on this server now or waiting for it: what replicas are balanced by. Asked
    /// per read, so from the queues' lock-free counts only, not bb8's locked state.
    pub fn outstanding(&self) -> u32 {
        self.slices
            .iter()
            .map(|s| s.in_use() + s.queue.waiting())
            .sum()
    }

    /// Whether two handles share one pool (a reload kept it).
    pub fn same_pool(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.slices, &other.slices)
    }

    /// Connections open, idle and in use right now, and the last connect error, for the admin
    /// API. A snapshot of counters read one after another: close enough to read, not to assert
    /// invariants on under load.
    pub fn usage(&self) -> PoolUsage {
        let (open, idle) = self.slices.iter().fold((0, 0), |(open, idle), s| {
            let state = s.inner.state();
            // Connections on our idle stack are checked out as far as bb8 knows.
            (
                open + state.connections,
                idle + state.idle_connections + s.queue.idle(),
            )
        });
        let last_error = self
            .last_error
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        PoolUsage {
            size: self.settings.size,
            open,
            idle: idle.min(open),
            in_use: open.saturating_sub(idle),
            last_connect_error: last_error.as_ref().map(|(at, e)| (at.elapsed(), e.clone())),
        }
    }
}

/// See [`Pool::usage`].
#[derive(Debug, Clone)]
pub struct PoolUsage {
    /// The configured maximum (`pool.size`).
    pub size: u32,
    pub open: u32,
    pub idle: u32,
    pub in_use: u32,
    /// How long ago connecting last failed, and why (never cleared by a later success).
    pub last_connect_error: Option<(Duration, String)>,
}

#[cfg(test)]
mod tests {
    use super::{slice_sizes, Warnings};
    use std::time::Duration;

    #[test]
    fn warnings_come_at_most_once_a_second_and_count_those_held_back() {
        let warnings = Warnings::default();
        let mut logged = Vec::new();
        for _ in 0..3 {
            warnings.warn(|held_back| logged.push(held_back));
        }
        assert_eq!(
            logged,
            [0],
            "the first is logged, the next two are held back"
        );
        // A second later (the clock is not mocked: the last warning is moved back instead).
        if let Some((at, _)) = warnings.last.lock().unwrap().as_mut() {
            *at -= Duration::from_millis(1001);
        }
        warnings.warn(|held_back| logged.push(held_back));
        assert_eq!(logged, [0, 2]);
        warnings.warn(|held_back| logged.push(held_back));
        assert_eq!(logged, [0, 2], "held back: one was logged just now");
    }

    #[test]
    fn the_pool_size_is_shared_out_over_the_workers_and_no_slice_is_empty() {
        let sizes = |size, workers| slice_sizes(size, workers).collect::<Vec<_>>();
        assert_eq!(sizes(10, 2), [5, 5]);
        assert_eq!(sizes(3, 2), [2, 1]);
        assert_eq!(sizes(10, 4), [3, 3, 2, 2]);
        assert_eq!(sizes(7, 1), [7]);
        // Fewer connections than workers: one slice per connection, shared by the workers.
        assert_eq!(sizes(2, 4), [1, 1]);
        assert_eq!(sizes(1, 4), [1]);
    }
}
