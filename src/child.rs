//! `Child`: a started command or pipeline, and its streams.

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    ExitStatus, Output, Result, Signal,
    exec::Started,
    machine::{BoxRead, BoxWrite, ReadEnd},
};

/// A running command or pipeline, from [`Command::spawn`](crate::Command::spawn).
///
/// `stdin` is a pipe into the first stage and `stdout` a pipe from the last, unless the
/// command redirected them; take them to talk to the process. Stderr is drained by
/// leadpipe in the background (so the process never blocks on it) and kept for the error
/// and for [`wait_with_output`](Child::wait_with_output); set
/// [`Redirect::Pipe`](crate::Redirect::Pipe) on the last stage's stderr to get it as
/// `stderr` instead.
///
/// Dropping a `Child` that has not been waited for kills everything it started: on the
/// local machine the whole process group of the pipeline, grandchildren included.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let mut child = leadpipe::local().cmd("tr").args(["a-z", "A-Z"]).spawn().await?;
/// let mut stdin = child.stdin.take().unwrap();
/// stdin.write_all(b"hello").await.unwrap();
/// drop(stdin); // end of input
/// let mut upper = String::new();
/// child.stdout.take().unwrap().read_to_string(&mut upper).await.unwrap();
/// child.wait().await?;
/// assert_eq!(upper, "HELLO");
/// # Ok(()) }
/// ```
pub struct Child {
    /// The pipe into the first stage's stdin (unless it was redirected or fed bytes).
    pub stdin: Option<ChildStdin>,
    /// The pipe from the last stage's stdout (unless it was redirected).
    pub stdout: Option<ChildStdout>,
    /// The pipe from the last stage's stderr, when it was set to
    /// [`Redirect::Pipe`](crate::Redirect::Pipe).
    pub stderr: Option<ChildStderr>,
    started: Started,
}

impl Child {
    pub(crate) fn new(mut started: Started) -> Result<Child> {
        let pipe_error = |e| crate::Error::io("setting up a pipe", e);
        let last = started.job().stage_count() - 1;
        let wants_stderr = started.job().pipes_last_stderr();
        // A first stage planned with a pipe for the caller (stdin left unset); a here-string's
        // pipe was taken by its writer.
        let stdin = started.take_stdin(0).map(ChildStdin);
        let stdout = started
            .take_stdout()
            .map(ReadEnd::into_async)
            .transpose()
            .map_err(pipe_error)?
            .map(ChildStdout);
        let stderr = wants_stderr
            .then(|| started.give_stderr(last))
            .flatten()
            .map(ReadEnd::into_async)
            .transpose()
            .map_err(pipe_error)?
            .map(ChildStderr);
        started.drain_stderr(false)?;
        Ok(Child {
            stdin,
            stdout,
            stderr,
            started,
        })
    }

    /// The process id of the first stage, on machines that have one to give (the local
    /// one). On the local machine it is also the process group id of the pipeline.
    pub fn id(&self) -> Option<u32> {
        self.started.id()
    }

    /// Sends `signal` to everything the child started (on the local machine, its process
    /// group). Nothing happens once it has ended.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the machine refuses to deliver it.
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        self.started.signal(signal)
    }

    /// Kills everything the child started (SIGKILL) and waits until it is gone. A later
    /// [`wait`](Child::wait) reports the death by SIGKILL as the failure it is.
    ///
    /// # Errors
    /// As [`signal`](Child::signal).
    pub async fn kill(&mut self) -> Result<()> {
        self.started.signal(Signal::KILL)?;
        self.finish(None).await.map(|_| ())
    }

    /// Waits for the child to end and checks its status. Closes our end of `stdin` if it
    /// was not taken (so the child sees end of input) and discards stdout that was not
    /// taken; take the streams you need before calling it. Cancel-safe.
    ///
    /// With a [`timeout`](crate::Command::timeout), the wait ends at the limit (counted
    /// from the spawn): everything is killed and the call returns at most half a second
    /// later, even when the machine stopped answering.
    ///
    /// # Errors
    /// [`Error::Exit`](crate::Error::Exit) for a failing status (with the stderr leadpipe
    /// kept), [`Error::Timeout`](crate::Error::Timeout) when the command's timeout passed.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        let statuses = self.finish(None).await?;
        self.started.check(&statuses, &[])?;
        Ok(self.started.job().status_of(&statuses))
    }

    /// Waits for the child to end, collecting the stdout that was not taken and the
    /// stderr leadpipe kept, and checks its status.
    ///
    /// # Errors
    /// As [`wait`](Child::wait); with `unchecked()` a failing status is in the [`Output`].
    pub async fn wait_with_output(mut self) -> Result<Output> {
        let mut stdout = Vec::new();
        let statuses = self.finish(Some(&mut stdout)).await?;
        self.started.check(&statuses, &stdout)?;
        Ok(Output {
            status: self.started.job().status_of(&statuses),
            stdout,
            stderr: self.started.take_stderr_kept(),
            statuses,
        })
    }

    /// Waits for every stage and every kept stderr, reading or discarding the stdout
    /// that was not taken, within the deadline.
    async fn finish(&mut self, sink: Option<&mut Vec<u8>>) -> Result<Vec<ExitStatus>> {
        if let Some(statuses) = self.started.statuses() {
            return Ok(statuses.to_vec());
        }
        self.stdin = None;
        let stdout = self.stdout.take();
        let read_stdout = async {
            match (stdout, sink) {
                (Some(mut pipe), Some(sink)) => {
                    tokio::io::AsyncReadExt::read_to_end(&mut pipe, sink).await?;
                }
                (Some(mut pipe), None) => {
                    tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await?;
                }
                (None, _) => {}
            }
            Ok(())
        };
        self.started.finish(read_stdout).await
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("command", &self.started.job().display())
            .field("id", &self.id())
            .field("statuses", &self.started.statuses())
            .finish_non_exhaustive()
    }
}

/// The pipe into a child's stdin: a tokio [`AsyncWrite`]. Drop it (or `shutdown`) to send
/// end of input.
pub struct ChildStdin(BoxWrite);

impl AsyncWrite for ChildStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl fmt::Debug for ChildStdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChildStdin")
    }
}

macro_rules! read_stream {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The pipe from a child's ", $what, ": a tokio [`AsyncRead`].")]
        pub struct $name(BoxRead);

        impl AsyncRead for $name {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut *self.0).poll_read(cx, buf)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}

read_stream!(ChildStdout, "stdout");
read_stream!(ChildStderr, "stderr");
