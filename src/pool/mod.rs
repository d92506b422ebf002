//! bb8 pools of backend connections, one per server.
//!
//! bb8's per-checkout test query is off: a transaction-pooling proxy checks out a connection per
//! transaction, and a round trip per checkout would double the latency of short transactions.
//! A connection whose protocol state is unknown is marked broken by the session and dropped on return.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::{BackendError, Connection, Target};

type Bb8Connection = bb8::PooledConnection<'static, Manager>;

/// Connections given back and not yet handed out again, most recently used last.
///
/// Why not just bb8: its `get()` builds a timeout and reads the clock on every call, about a tenth
/// of shardgate's CPU per query when measured under pgbench. This stack is the hot path: a
/// checkout pops, a return pushes, under one short lock. bb8 still opens connections, enforces the
/// pool size (connections on the stack count as in use there) and closes idle ones: entries idle
/// longer than [`IDLE_RETURN`] are handed back to it.
type IdleStack = Arc<Idle>;

#[derive(Default)]
struct Idle {
    conns: Mutex<Vec<(Bb8Connection, Instant)>>,
    /// Wakes a checkout waiting for a connection: one was put back on the stack.
    returned: tokio::sync::Notify,
}

/// How long a connection may sit on the idle stack before bb8's idle reaping takes it over.
const IDLE_RETURN: Duration = Duration::from_secs(30);

/// A checked-out connection. Dropping it puts the connection on the idle stack (or, if broken,
/// gives it to bb8 to discard) before the place in the checkout queue is freed, so the next
/// waiter finds it.
pub struct PooledConnection {
    conn: Option<Bb8Connection>,
    idle: IdleStack,
    _place: OwnedSemaphorePermit,
}

impl PooledConnection {
    fn new(conn: Bb8Connection, idle: &IdleStack, place: OwnedSemaphorePermit) -> Self {
        PooledConnection {
            conn: Some(conn),
            idle: idle.clone(),
            _place: place,
        }
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if conn.is_broken() {
            return; // bb8 sees `has_broken` and closes it
        }
        let now = Instant::now();
        let mut idle = self.idle.conns.lock().unwrap_or_else(|p| p.into_inner());
        let stale = idle
            .first()
            .is_some_and(|(_, since)| now.duration_since(*since) > IDLE_RETURN);
        let oldest = stale.then(|| idle.remove(0));
        idle.push((conn, now));
        drop(idle);
        self.idle.returned.notify_one();
        drop(oldest); // back to bb8, outside the lock
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

/// Pool settings that come from the config's `pool` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub size: u32,
    pub checkout_timeout: Duration,
    pub connect_timeout: Duration,
}

pub struct Manager {
    target: Target,
    connect_timeout: Duration,
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = BackendError;

    async fn connect(&self) -> Result<Connection, BackendError> {
        Connection::connect(&self.target, self.connect_timeout).await
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
    #[error("shard \"{shard}\" is unreachable: {reason}")]
    Unreachable { shard: String, reason: String },
}

/// A pool of connections to one server of one shard.
///
/// Checkout is first come, first served: bb8 alone hands an idle connection to whoever asks
/// next, so a client that just returned one takes it straight back while others wait (and time
/// out). A FIFO semaphore with one permit per connection queues the askers fairly; holding a
/// permit guarantees bb8 has a connection idle or may open one.
#[derive(Clone)]
pub struct Pool {
    inner: bb8::Pool<Manager>,
    queue: Arc<Semaphore>,
    idle: IdleStack,
    shard: Arc<str>,
    target: Target,
    settings: PoolSettings,
    last_error: LastError,
    /// Checkouts waiting for a connection now (the metrics' pool gauge; only the slow path
    /// touches it).
    waiting: Arc<AtomicU32>,
}

impl Pool {
    /// Builds the pool without connecting: connections are opened on first use.
    pub fn new(shard: &str, target: Target, settings: PoolSettings) -> Pool {
        let last_error = LastError::default();
        let manager = Manager {
            target: target.clone(),
            connect_timeout: settings.connect_timeout,
        };
        let inner = bb8::Pool::builder()
            .max_size(settings.size)
            .test_on_check_out(false)
            .connection_timeout(settings.checkout_timeout)
            .idle_timeout(Some(Duration::from_secs(600)))
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(manager);
        let queue = Arc::new(Semaphore::new(settings.size as usize));
        Pool {
            inner,
            queue,
            idle: IdleStack::default(),
            shard: shard.into(),
            target,
            settings,
            last_error,
            waiting: Arc::default(),
        }
    }

    pub async fn checkout(&self) -> Result<PooledConnection, CheckoutError> {
        if let Some(conn) = self.checkout_now() {
            return Ok(conn);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let result = self.checkout_waiting().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// The common case, with no timer, clock read or waiter registration: a place in the queue is
    /// free and bb8 has an idle connection that the server has not closed.
    fn checkout_now(&self) -> Option<PooledConnection> {
        use futures_util::FutureExt;
        let place = self.queue.clone().try_acquire_owned().ok()?;
        let mut conn = match self.pop_idle() {
            Some(conn) => conn,
            None => self.inner.get_owned().now_or_never()?.ok()?,
        };
        if conn.is_stale() {
            tracing::info!(shard = %self.shard, "dropping a server connection the server has closed");
            conn.mark_broken();
            return None;
        }
        Some(PooledConnection::new(conn, &self.idle, place))
    }

    fn pop_idle(&self) -> Option<Bb8Connection> {
        self.idle
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .map(|(conn, _)| conn)
    }

    async fn checkout_waiting(&self) -> Result<PooledConnection, CheckoutError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.settings.checkout_timeout);
        let place =
            match tokio::time::timeout_at(deadline, self.queue.clone().acquire_owned()).await {
                Ok(Ok(place)) => place,
                _ => return Err(self.timed_out(started)),
            };
        // A few stale idle connections (a restarted server) are replaced; more would mean the
        // server is down, which the connect error reports.
        for _ in 0..=self.settings.size {
            let mut conn = self.wait_for_connection(started, deadline).await?;
            if !conn.is_stale() {
                return Ok(PooledConnection::new(conn, &self.idle, place));
            }
            tracing::info!(shard = %self.shard, "dropping a server connection the server has closed");
            conn.mark_broken();
        }
        Err(self.unreachable("every pooled connection had been closed by the server".into()))
    }

    /// With a place held, a connection is on the idle stack, idle in bb8, or about to be opened
    /// or put back: take the first that comes. A failed connect wakes the wait at once, so a
    /// down server answers with 08006 instead of after the whole timeout.
    async fn wait_for_connection(
        &self,
        started: Instant,
        deadline: tokio::time::Instant,
    ) -> Result<Bb8Connection, CheckoutError> {
        // Usually the connection whose return freed the place is on the stack already: taken
        // without registering for (and then dropping) the two wake-ups below.
        if let Some(conn) = self.pop_idle() {
            return Ok(conn);
        }
        loop {
            // Registered before looking, so a connection put back in between is not missed.
            let returned = self.idle.returned.notified();
            let failed = self.last_error.failed.notified();
            tokio::pin!(returned, failed);
            returned.as_mut().enable();
            failed.as_mut().enable();
            if let Some(conn) = self.pop_idle() {
                return Ok(conn);
            }
            if let Some(reason) = self.last_error.since(started) {
                return Err(self.unreachable(reason));
            }
            tokio::select! {
                got = tokio::time::timeout_at(deadline, self.inner.get_owned()) => return match got {
                    Ok(Ok(conn)) => Ok(conn),
                    Ok(Err(bb8::RunError::User(e))) => Err(self.unreachable(e.to_string())),
                    Ok(Err(bb8::RunError::TimedOut)) | Err(_) => Err(self.timed_out(started)),
                },
                _ = returned => continue,
                _ = failed => return Err(self.unreachable(self.last_error.since(started).unwrap_or_default())),
            }
        }
    }

    /// A checkout that waited too long: the server is down if connecting failed meanwhile,
    /// else every connection was busy.
    fn timed_out(&self, started: Instant) -> CheckoutError {
        match self.last_error.since(started) {
            Some(reason) => self.unreachable(reason),
            None => CheckoutError::Exhausted {
                shard: self.shard.to_string(),
                waited: self.settings.checkout_timeout,
                size: self.settings.size,
            },
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
        let open = self.inner.state().connections;
        let free = u32::try_from(self.queue.available_permits()).unwrap_or(u32::MAX);
        // A place in the queue is a connection checked out (or being opened for its holder).
        let in_use = self.settings.size.saturating_sub(free);
        (open, in_use, self.waiting.load(Ordering::Relaxed))
    }

    /// Transactions on this server now or waiting for it: what replicas are balanced by.
    pub fn outstanding(&self) -> u32 {
        let free = u32::try_from(self.queue.available_permits()).unwrap_or(u32::MAX);
        self.settings.size.saturating_sub(free) + self.waiting.load(Ordering::Relaxed)
    }

    /// Whether two handles share one pool (a reload kept it).
    pub fn same_pool(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.queue, &other.queue)
    }

    /// Connections open, idle and in use right now, and the last connect error, for the admin
    /// API. A snapshot of counters read one after another: close enough to read, not to assert
    /// invariants on under load.
    pub fn usage(&self) -> PoolUsage {
        let state = self.inner.state();
        // Connections on our idle stack are checked out as far as bb8 knows.
        let stacked = self
            .idle
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u32;
        let idle = state.idle_connections + stacked;
        let last_error = self
            .last_error
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        PoolUsage {
            size: self.settings.size,
            open: state.connections,
            idle: idle.min(state.connections),
            in_use: state.connections.saturating_sub(idle),
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
