//! First come, first served hand-off of a pool's places and idle connections.
//!
//! A place is the right to one of the pool's connections: there are `size` of them. A checkout
//! takes a free place (and the most recently returned idle connection, if any), or queues. A
//! return hands its place, and its connection if it is still good, straight to the oldest
//! waiter, so a client that just gave a connection back cannot take it again while others wait.
//!
//! Why not a semaphore, a `Notify` and a timeout per wait (what this replaced): under pgbench
//! with more clients than connections almost every checkout waits, and the timer registered and
//! cleared per wait, the semaphore's lock, the idle stack's lock and the wake-ups were about a
//! tenth of shardgate's CPU per query. Here a return takes one lock and a waiter is woken once,
//! with its connection in hand. Waiters time out by one sweeper task per pool that sleeps until
//! the oldest waiter's deadline (waiters of one pool share a timeout, so the oldest is always the
//! first due); it runs only while somebody waits.

use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slot::{Outcome, Slot};

/// How long a connection may sit on the idle stack before it is handed back to be closed by
/// whoever opened it (bb8's idle reaping).
pub const IDLE_RETURN: Duration = Duration::from_secs(30);

pub struct Queue<C: Send + 'static> {
    state: Mutex<State<C>>,
    timeout: Duration,
    /// Copies of the state's counts, written under the lock, read without it (gauges, replica
    /// balancing, and other workers' checkouts looking for a free place: on a cache line of its
    /// own, so that reading it does not pull in the line this worker's lock keeps writing).
    free: CacheLine<AtomicU32>,
    waiting: AtomicU32,
}

#[repr(align(64))]
struct CacheLine<T>(T);

struct State<C: Send + 'static> {
    /// Connections given back and not handed out again, most recently used last.
    idle: Vec<(C, Instant)>,
    /// Places nobody holds. Never above zero while anybody waits.
    free: u32,
    /// Oldest first; deadlines in the same order.
    waiters: VecDeque<Waiter<C>>,
    /// Slots of waits that were granted, for the next waits once their waiters let go of them.
    spare: Vec<Arc<Slot<C>>>,
    /// The sweeper task is running.
    sweeping: bool,
}

struct Waiter<C: Send + 'static> {
    deadline: Instant,
    slot: Arc<Slot<C>>,
}

/// How many granted slots a queue keeps for reuse: about as many as wait at once.
const SPARE_SLOTS: usize = 64;

/// A place in the pool, and the idle connection that came with it (`None`: open one).
pub struct Grant<C: Send + 'static> {
    pub conn: Option<C>,
    pub place: Place<C>,
}

/// A held place. Dropping it frees the place (for the oldest waiter first).
pub struct Place<C: Send + 'static> {
    queue: Option<Arc<Queue<C>>>,
}

/// A checkout waiting in line. Dropped before its grant came (its client left), it takes itself
/// out of the line at once: the `waiting` gauge and replica balancing would otherwise count it
/// until a return or the sweeper passed it, up to the checkout timeout later.
struct InLine<'a, C: Send + 'static> {
    queue: &'a Queue<C>,
    slot: Option<Arc<Slot<C>>>,
}

impl<C: Send + 'static> Drop for InLine<'_, C> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // Its waiter now reads as gone; a grant that came meanwhile returns its place.
            drop(slot.close());
            self.queue.forget_gone_waiters();
        }
    }
}

/// No place became free within the pool's checkout timeout.
#[derive(Debug, PartialEq, Eq)]
pub struct TimedOut;

impl<C: Send + 'static> Queue<C> {
    pub fn new(size: u32, timeout: Duration) -> Arc<Queue<C>> {
        Arc::new(Queue {
            state: Mutex::new(State {
                idle: Vec::new(),
                free: size,
                waiters: VecDeque::new(),
                spare: Vec::new(),
                sweeping: false,
            }),
            timeout,
            free: CacheLine(AtomicU32::new(size)),
            waiting: AtomicU32::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock()
    }

    /// A place, with an idle connection if there is one; waits in line until the pool's checkout
    /// timeout after `started` (the caller's clock read, so the pool and its caller time the
    /// same wait). Must run inside a tokio runtime (the sweeper is a task).
    pub async fn checkout(self: &Arc<Self>, started: Instant) -> Result<Grant<C>, TimedOut> {
        let waiting = {
            let mut st = self.lock();
            if let Some(grant) = self.take(&mut st) {
                return Ok(grant);
            }
            // The oldest granted slots first: their waiters have most likely taken their grants.
            let slot = match st.spare.iter().position(Slot::unused) {
                Some(i) => Slot::reset(st.spare.remove(i)),
                None => Slot::new(),
            };
            let deadline = started + self.timeout;
            st.waiters.push_back(Waiter {
                deadline,
                slot: slot.clone(),
            });
            self.waiting
                .store(st.waiters.len() as u32, Ordering::Relaxed);
            if !st.sweeping {
                st.sweeping = true;
                tokio::spawn(self.clone().sweep());
            }
            slot
        };
        // Dropped (the client left) after being granted: the grant's place and connection go
        // back through `Place`'s drop, not lost with the slot.
        let mut line = InLine {
            queue: self,
            slot: Some(waiting),
        };
        let outcome =
            std::future::poll_fn(|cx| line.slot.as_ref().expect("set above").poll(cx)).await;
        line.slot = None;
        match outcome {
            Outcome::Granted(grant) => Ok(grant),
            Outcome::TimedOut => Err(TimedOut),
        }
    }

    /// A free place (with an idle connection if there is one), without waiting.
    pub fn try_take(self: &Arc<Self>) -> Option<Grant<C>> {
        let mut st = self.lock();
        self.take(&mut st)
    }

    fn take(self: &Arc<Self>, st: &mut State<C>) -> Option<Grant<C>> {
        if st.free == 0 {
            return None;
        }
        st.free -= 1;
        self.free.0.store(st.free, Ordering::Relaxed);
        let conn = st.idle.pop().map(|(c, _)| c);
        Some(Grant {
            conn,
            place: Place::held(self),
        })
    }

    /// Drops the waiters whose checkout has gone, so that `waiting` counts only live ones.
    fn forget_gone_waiters(&self) {
        let mut st = self.lock();
        st.waiters.retain(|w| !w.slot.is_closed());
        self.waiting
            .store(st.waiters.len() as u32, Ordering::Relaxed);
    }

    /// Gives a place back with the connection it held, if that is still good to use.
    fn give_back(self: &Arc<Self>, mut conn: Option<C>) {
        let mut st = self.lock();
        while let Some(waiter) = st.waiters.pop_front() {
            let grant = Grant {
                conn,
                place: Place::held(self),
            };
            match waiter.slot.send(grant) {
                Ok(()) => {
                    self.waiting
                        .store(st.waiters.len() as u32, Ordering::Relaxed);
                    if st.spare.len() < SPARE_SLOTS {
                        st.spare.push(waiter.slot);
                    }
                    return;
                }
                // That waiter has gone (timed out or left): the next one.
                Err(mut back) => {
                    conn = back.conn.take();
                    back.place.queue = None;
                }
            }
        }
        self.waiting.store(0, Ordering::Relaxed);
        st.free += 1;
        self.free.0.store(st.free, Ordering::Relaxed);
        let Some(conn) = conn else { return };
        let now = Instant::now();
        let stale = st
            .idle
            .first()
            .is_some_and(|(_, since)| now.duration_since(*since) > IDLE_RETURN);
        let oldest = stale.then(|| st.idle.remove(0));
        st.idle.push((conn, now));
        drop(st);
        drop(oldest); // closed by its owner, outside the lock
    }

    /// Takes an idle connection for a place already held (one that found none when it came).
    pub fn pop_idle(&self) -> Option<C> {
        self.lock().idle.pop().map(|(c, _)| c)
    }

    /// Times out waiters whose deadline has passed, oldest first, until none is left.
    async fn sweep(self: Arc<Self>) {
        loop {
            let next = {
                let mut st = self.lock();
                let now = Instant::now();
                while st
                    .waiters
                    .front()
                    .is_some_and(|w| w.deadline <= now || w.slot.is_closed())
                {
                    if let Some(w) = st.waiters.pop_front() {
                        w.slot.time_out();
                    }
                }
                self.waiting
                    .store(st.waiters.len() as u32, Ordering::Relaxed);
                match st.waiters.front() {
                    Some(w) => w.deadline,
                    None => {
                        st.sweeping = false;
                        return;
                    }
                }
            };
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// Places nobody holds.
    pub fn free(&self) -> u32 {
        self.free.0.load(Ordering::Relaxed)
    }

    /// Checkouts in line for a place.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Connections on the idle stack.
    pub fn idle(&self) -> u32 {
        self.lock().idle.len() as u32
    }
}

impl<C: Send + 'static> Place<C> {
    fn held(queue: &Arc<Queue<C>>) -> Place<C> {
        Place {
            queue: Some(queue.clone()),
        }
    }

    /// Frees the place and puts `conn` on the idle stack (or in the next waiter's hands).
    pub fn give_back(mut self, conn: C) {
        if let Some(queue) = self.queue.take() {
            queue.give_back(Some(conn));
        }
    }
}

impl<C: Send + 'static> Drop for Place<C> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.give_back(None);
        }
    }
}

mod slot;
#[cfg(test)]
mod tests;
