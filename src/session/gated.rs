//! A future that is polled again only once it has woken its task.
//!
//! The session's loop waits for the client, its backend and shutdown in one `select!`, which
//! polls every branch each time any of them is ready: once per query. The shutdown wait takes
//! two locks per poll (a cancellation token's mutex, then its `Notify`'s); behind [`Gated`] it is
//! polled only when it has something to say.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

pub struct Gated<F> {
    inner: Pin<Box<F>>,
    signal: Arc<Signal>,
    /// The task waker the inner future was last polled for.
    task: Option<Waker>,
}

/// The waker the inner future gets: notes the wake, then wakes the task.
#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before the task is woken, so that the poll the wake causes sees it.
        self.woken.store(true, Ordering::SeqCst);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Gated<F> {
        Gated {
            inner: Box::pin(inner),
            signal: Arc::default(),
            task: None,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let same_task = this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        if same_task && !this.signal.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        if !same_task {
            // A new task waker (the first poll, or the future moved): the inner one must wake it.
            *this.signal.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            this.task = Some(cx.waker().clone());
            this.signal.woken.store(false, Ordering::SeqCst);
        }
        let waker = Waker::from(this.signal.clone());
        this.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Pending until `ready`; counts its polls and keeps the last waker.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    struct Probed(Arc<Probe>);

    impl Future for Probed {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if self.0.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_again_only_after_it_woke_the_task() {
        let probe = Arc::new(Probe::default());
        let mut gated = Gated::new(Probed(probe.clone()));
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut poll = || Pin::new(&mut gated).poll(&mut cx);

        assert!(poll().is_pending());
        assert!(poll().is_pending());
        assert!(poll().is_pending());
        assert_eq!(
            probe.polls.load(Ordering::SeqCst),
            1,
            "polled once, then gated"
        );

        probe.ready.store(true, Ordering::SeqCst);
        assert!(poll().is_pending(), "ready, but it has not said so yet");
        let inner_waker = probe.waker.lock().unwrap().take().expect("registered");
        inner_waker.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(poll().is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn another_task_waker_polls_the_inner_future_again() {
        let probe = Arc::new(Probe::default());
        let mut gated = Gated::new(Probed(probe.clone()));
        let (one, two) = (Arc::new(Task::default()), Arc::new(Task::default()));
        let (w1, w2) = (Waker::from(one.clone()), Waker::from(two.clone()));
        assert!(Pin::new(&mut gated)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        assert!(Pin::new(&mut gated)
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
        // The inner future's wake reaches the task that polled last.
        probe
            .waker
            .lock()
            .unwrap()
            .take()
            .expect("registered")
            .wake();
        assert_eq!(
            (one.0.load(Ordering::SeqCst), two.0.load(Ordering::SeqCst)),
            (0, 1)
        );
    }
}
