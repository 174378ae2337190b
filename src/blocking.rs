//! The same calls for a plain `fn main`, with no runtime to set up.
//!
//! Every call in leadpipe is async. A script that has no runtime of its own imports
//! [`Wait`] and ends each call with `.wait()` where an async program writes `.await`:
//!
//! ```no_run
//! use leadpipe::blocking::Wait;
//! use leadpipe::prelude::*;
//!
//! fn main() -> Result<()> {
//!     let sh = local();
//!     sh.cmd("cargo").args(["build", "--release"]).run().wait()?;
//!     let rev = sh.cmd("git").args(["rev-parse", "--short", "HEAD"]).read().wait()?;
//!     println!("built {rev}");
//!     Ok(())
//! }
//! ```
//!
//! The calls run on the runtime that leadpipe starts on first use and keeps for the rest
//! of the process (its worker threads also drain the pipes of spawned children between
//! calls, and carry the SSH connections and every clean-up). Calling `.wait()` from inside
//! an async runtime would block that runtime's thread, or deadlock it; it returns
//! [`Error::BlockingInRuntime`] instead.

use std::future::Future;

use futures::{Stream, StreamExt};
use tokio::runtime::Handle;

use crate::{Error, Result, lifecycle::runtime};

/// Runs `future` to completion on leadpipe's own runtime, blocking this thread.
///
/// # Errors
/// The future's own error, or [`Error::BlockingInRuntime`] when called from a thread that
/// belongs to an async runtime.
pub fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    if Handle::try_current().is_ok() {
        return Err(Error::BlockingInRuntime);
    }
    runtime()?.block_on(future)
}

/// `.wait()`: finish a leadpipe call by blocking, in a program without a runtime.
pub trait Wait<T>: Future<Output = Result<T>> + Sized {
    /// Blocks until the call is done, as [`block_on`].
    ///
    /// # Errors
    /// The call's own error, or [`Error::BlockingInRuntime`] inside an async runtime.
    fn wait(self) -> Result<T> {
        block_on(self)
    }
}

impl<T, F: Future<Output = Result<T>>> Wait<T> for F {}

/// `.wait_iter()`: a stream of results (such as [`Lines`](crate::Lines)) as a blocking
/// iterator.
pub trait WaitIter<T>: Stream<Item = Result<T>> + Unpin + Sized {
    /// The stream as an iterator whose `next()` blocks until the next item.
    fn wait_iter(self) -> Iter<Self> {
        Iter(Some(self))
    }
}

impl<T, S: Stream<Item = Result<T>> + Unpin> WaitIter<T> for S {}

/// The iterator of [`WaitIter::wait_iter`].
#[derive(Debug)]
pub struct Iter<S>(Option<S>);

impl<T, S: Stream<Item = Result<T>> + Unpin> Iterator for Iter<S> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        let stream = self.0.as_mut()?;
        let next = block_on(async { Ok(stream.next().await) });
        match next {
            Ok(Some(item)) => Some(item),
            Ok(None) => {
                self.0 = None;
                None
            }
            Err(error) => {
                self.0 = None;
                Some(Err(error))
            }
        }
    }
}
