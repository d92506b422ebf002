//! Where a checkout waiting in line receives its grant: a one-shot channel that the queue
//! keeps and reuses.
//!
//! Why not `tokio::sync::oneshot`: with more clients than connections almost every checkout
//! waits, and a new channel per wait is an allocation and a free per transaction (about 200 of
//! the 8,800 instructions shardgate spent on a pgbench `-S` query, counted by callgrind). A slot
//! is allocated once and handed to the next waiter once its last one has let go of it.

use parking_lot::{Mutex, MutexGuard};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::Grant;

pub struct Slot<C: Send + 'static> {
    state: Mutex<State<C>>,
}

enum State<C: Send + 'static> {
    /// In line; the waker of the task waiting, once it has polled.
    Waiting(Option<Waker>),
    Granted(Grant<C>),
    /// The queue let the wait go without a grant: its deadline passed.
    TimedOut,
    /// The waiter left, or took its grant.
    Done,
}

/// What a poll of the waiting side found.
pub enum Outcome<C: Send + 'static> {
    Granted(Grant<C>),
    TimedOut,
}

impl<C: Send + 'static> Slot<C> {
    pub fn new() -> Arc<Slot<C>> {
        Arc::new(Slot {
            state: Mutex::new(State::Waiting(None)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock()
    }

    /// The queue alone holds it: its last waiter has let go of it, so it may serve a new wait.
    pub fn unused(slot: &Arc<Slot<C>>) -> bool {
        Arc::strong_count(slot) == 1
    }

    /// An [`unused`](Slot::unused) slot, ready for a new wait. Nobody else can reach it: only
    /// the queue hands out clones, under its lock.
    pub fn reset(slot: Arc<Slot<C>>) -> Arc<Slot<C>> {
        let old = std::mem::replace(&mut *slot.lock(), State::Waiting(None));
        // A waiter takes its grant or returns it when it leaves; dropped here, under the queue's
        // lock, a grant's place would deadlock going back to that queue.
        debug_assert!(
            !matches!(old, State::Granted(_)),
            "a grant left in a spare slot"
        );
        slot
    }

    /// Hands `grant` to the waiter; gives it back if the waiter has left.
    pub fn send(&self, grant: Grant<C>) -> Result<(), Grant<C>> {
        let waker = {
            let mut state = self.lock();
            let State::Waiting(waker) = &mut *state else {
                return Err(grant);
            };
            let waker = waker.take();
            *state = State::Granted(grant);
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Ends the wait without a grant.
    pub fn time_out(&self) {
        let waker = {
            let mut state = self.lock();
            match &mut *state {
                State::Waiting(waker) => {
                    let waker = waker.take();
                    *state = State::TimedOut;
                    waker
                }
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The waiter has left: the queue may pass its turn on.
    pub fn is_closed(&self) -> bool {
        matches!(*self.lock(), State::Done)
    }

    /// The grant, once it has come.
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<Outcome<C>> {
        let mut state = self.lock();
        // The waker is updated in place: taking the state out and putting it back would drop
        // (through a call, for the grant it may hold) what was just moved out.
        if let State::Waiting(waker) = &mut *state {
            match waker {
                Some(w) => w.clone_from(cx.waker()),
                None => *waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        match std::mem::replace(&mut *state, State::Done) {
            State::Granted(grant) => Poll::Ready(Outcome::Granted(grant)),
            // Timed out, or polled again after its outcome was taken.
            _ => Poll::Ready(Outcome::TimedOut),
        }
    }

    /// The waiter leaves before its wait ended: a grant that came meanwhile is returned (its
    /// place goes back through `Place`'s drop, outside this lock).
    pub fn close(&self) -> Option<Grant<C>> {
        match std::mem::replace(&mut *self.lock(), State::Done) {
            State::Granted(grant) => Some(grant),
            _ => None,
        }
    }
}
