//! The proxy's threads. Each worker is a tokio current-thread runtime on a thread of its own,
//! with its own run queue, timers and I/O driver; clients are dealt to the workers in turn, and
//! a client stays on its worker for its whole connection.
//!
//! Why not tokio's multi-thread scheduler: there every socket's readiness goes through one shared
//! driver, tasks move between threads, and wake-ups cross threads. Side by side under pgbench on
//! 2 cores (bench/README.md, 2026-12-06 sixth session) it cost about 25% more CPU per query than
//! one current-thread runtime. And why not one current-thread runtime: the proxy is on the path of
//! every query, so while its one thread waits for a core nothing moves (the machine sat idle
//! 12–16% of the time). One runtime per core does neither. For a backend socket to be driven by
//! the runtime of the session using it, each pool is cut into a slice per worker
//! ([`crate::pool::Pool`]).

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The runtimes serving clients. Worker 0 is the runtime that started the others, which also runs
/// everything that is not a client session (admin API, health checks, resharding jobs).
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropped with `Workers`: each extra worker's thread then drops its runtime and ends.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// The calling runtime alone.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn this_runtime() -> Workers {
        Workers {
            handles: vec![Handle::current()],
            _stop: Vec::new(),
        }
    }

    /// The calling runtime and `count - 1` more current-thread runtimes on threads of their own.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut workers = Workers::this_runtime();
        for index in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("shardgate-worker-{index}"))
                .spawn(move || {
                    // Either a stop or the sender's drop ends the wait.
                    let _ = runtime.block_on(stopped);
                })?;
            workers._stop.push(stop);
        }
        Ok(workers)
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: there is always the calling runtime.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Runs `task` on worker `index`.
    pub fn spawn<F>(&self, index: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handles[index].spawn(task));
    }
}
