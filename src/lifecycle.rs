//! Nothing left behind: leadpipe's own runtime, the clean-ups a `Drop` starts, the registry
//! of what is still running, and the flush at process exit.
//!
//! Invariant: **no clean-up depends on the caller's runtime.** Every SSH connection (the
//! russh session task), every channel's pump and every clean-up a `Drop` starts (a remote
//! kill, a stdin's end of file, a temp dir's removal, a reverse tunnel's cancel) run on
//! leadpipe's own runtime, started on first use and kept for the rest of the process. So a
//! `Drop` always has somewhere to send its work: from async code, from a plain `fn main`,
//! while the caller's runtime shuts down, and when `main` returns or unwinds.
//!
//! - [`spawn`] runs a task there; [`run`] runs a future there and awaits it from anywhere
//!   (tokio I/O objects belong to the runtime that created them, so a connection is opened
//!   inside [`run`]).
//! - [`cleanup`] is [`spawn`] for work a `Drop` started: it counts as pending until done.
//! - [`register`] lists what is alive (local process groups, remote pipelines, temp dirs),
//!   with how to stop it; [`stop_all`] stops them, processes first. The signal handler
//!   ([`crate::signals`]) and the exit hook use it.
//! - At process exit (`main` returning, `std::process::exit`), a `libc::atexit` hook stops
//!   what is still registered and waits for the pending clean-ups, at most [`EXIT_LIMIT`].

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Condvar, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tokio::runtime::{Builder, Runtime};

use crate::{Error, Result};

/// How long the exit hook waits, at most, for clean-ups to reach the other side.
pub(crate) const EXIT_LIMIT: Duration = Duration::from_secs(2);

/// leadpipe's runtime: two worker threads, for the SSH connections, their pumps, clean-ups
/// and the blocking API's spawned work. Started on first use; the exit hook is registered
/// with it.
pub(crate) fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::io::Result<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("leadpipe")
                .enable_all()
                .build();
            if runtime.is_ok() {
                // SAFETY: registers a plain `extern "C"` function that never unwinds.
                unsafe { libc::atexit(at_exit) };
            }
            runtime
        })
        .as_ref()
        .map_err(|e| {
            Error::io(
                "starting leadpipe's runtime",
                std::io::Error::new(e.kind(), e.to_string()),
            )
        })
}

/// Runs `task` on leadpipe's runtime (on the current one if leadpipe's cannot start).
pub(crate) fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    let _ = spawn_handle(task);
}

/// Runs `task` on leadpipe's runtime (on the current one if leadpipe's cannot start), and
/// returns its handle; `None` when there is no runtime to run it on.
pub(crate) fn spawn_handle(
    task: impl Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    match runtime() {
        Ok(runtime) => Some(runtime.spawn(task)),
        Err(_) => tokio::runtime::Handle::try_current()
            .ok()
            .map(|current| current.spawn(task)),
    }
}

/// Runs `future` on leadpipe's runtime and waits for it, from any runtime or none; dropping
/// the returned future cancels it. For work that creates I/O objects or tasks that must
/// outlive the caller's runtime (a connection, an SFTP session).
///
/// `future` is boxed at once, before the returned future exists: an `async fn` would keep
/// its argument inline in its own state, and so would every future awaiting it, in turn.
/// A connection's handshake future is ~18 KiB; inline, each host a fleet connects at once
/// carried it two or three times over (~60 KiB per host in flight), memory the allocator
/// kept after the connects ended.
#[cfg_attr(not(feature = "ssh"), allow(dead_code))] // only the SSH machine uses it
pub(crate) fn run<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = T> + Send {
    let future: BoxFuture<'static, T> = Box::pin(future);
    async move {
        let Ok(runtime) = runtime() else {
            return future.await;
        };
        struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
        impl<T> Drop for AbortOnDrop<T> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = AbortOnDrop(runtime.spawn(future));
        match (&mut task.0).await {
            Ok(output) => output,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: only by `AbortOnDrop`, when nobody awaits this any more (leadpipe's
            // runtime is never shut down).
            Err(_) => std::future::pending().await,
        }
    }
}

/// Clean-ups started and not finished yet, and a condition signalled when one finishes.
static PENDING: Mutex<usize> = Mutex::new(0);
static SETTLED: Condvar = Condvar::new();

/// Counts one clean-up as pending while it lives.
struct Pending;

impl Pending {
    fn new() -> Pending {
        if let Ok(mut pending) = PENDING.lock() {
            *pending += 1;
        }
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut pending) = PENDING.lock() {
            *pending = pending.saturating_sub(1);
        }
        SETTLED.notify_all();
    }
}

/// Runs a clean-up that a `Drop` cannot await, on leadpipe's runtime; the exit hook waits
/// for it (bounded).
pub(crate) fn cleanup(task: impl Future<Output = ()> + Send + 'static) {
    let pending = Pending::new();
    spawn(async move {
        task.await;
        drop(pending);
    });
}

/// Waits until no clean-up is pending, or until `deadline`.
fn flush(deadline: Instant) {
    let Ok(mut pending) = PENDING.lock() else {
        return;
    };
    while *pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match SETTLED.wait_timeout(pending, left) {
            Ok((guard, _)) => pending = guard,
            Err(_) => return,
        }
    }
}

/// What a registered thing is: processes are stopped before directories are removed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Process,
    Dir,
}

/// How to stop a registered thing: the synchronous part runs in the call (a `killpg`, a
/// local removal), the future (remote work) on leadpipe's runtime.
pub(crate) type Stop = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

static LIVE: Mutex<BTreeMap<u64, (Kind, Stop)>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Keeps a thing in the registry until dropped.
#[derive(Debug)]
pub(crate) struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut live) = LIVE.lock() {
            live.remove(&self.0);
        }
    }
}

/// Lists a live thing and how to stop it, and makes sure the signal handlers are in place
/// (unless the script opted out).
pub(crate) fn register(
    kind: Kind,
    stop: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
) -> Registration {
    crate::signals::ensure();
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut live) = LIVE.lock() {
        live.insert(id, (kind, Arc::new(stop)));
    }
    Registration(id)
}

/// Stops every registered process (local groups by SIGKILL, remote pipelines by their
/// kill), then removes every registered temp dir, waiting until `deadline` at most.
pub(crate) fn stop_all(deadline: Instant) {
    let live: Vec<(Kind, Stop)> = match LIVE.lock() {
        Ok(live) => live.values().cloned().collect(),
        Err(_) => return,
    };
    if live.is_empty() {
        return;
    }
    let stops = |kind: Kind| -> Vec<Stop> {
        live.iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, stop)| stop.clone())
            .collect()
    };
    let (processes, dirs) = (stops(Kind::Process), stops(Kind::Dir));
    // The synchronous parts of the kills now; the remote ones on the runtime.
    let kills: Vec<_> = processes.iter().map(|stop| stop()).collect();
    let Ok(runtime) = runtime() else {
        return;
    };
    let (done, finished) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        futures::future::join_all(kills).await;
        // Directories after the processes that may be writing in them.
        let removals: Vec<_> = dirs.iter().map(|stop| stop()).collect();
        futures::future::join_all(removals).await;
        let _ = done.send(());
    });
    let _ = finished.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

/// Stops what is registered, then waits for pending clean-ups; both bounded by
/// `limit` in all.
pub(crate) fn stop_and_flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    stop_all(deadline);
    flush(deadline);
}

/// The exit hook: what no `Drop` stopped (a `std::process::exit`, a handle held by another
/// thread or leaked) is stopped, and clean-ups started by drops get to finish.
extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| stop_and_flush(EXIT_LIMIT));
}

#[cfg(test)]
mod tests {
    /// What awaits `run` holds a pointer to the future it runs, not the future: a fleet
    /// awaits one connection per host at once.
    #[test]
    fn run_keeps_the_future_it_runs_out_of_its_own_state() {
        let big = [7_u8; 16 << 10];
        let running = super::run(async move { big.iter().map(|b| usize::from(*b)).sum::<usize>() });
        let size = std::mem::size_of_val(&running);
        assert!(size < 1024, "the future of `run` is {size} bytes");
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(caller.block_on(running), 7 * (16 << 10));
    }
}
