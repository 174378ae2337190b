//! The one internal interface every machine plugs in behind.
//!
//! The command model ([`Command`](crate::Command), [`Pipeline`](crate::Pipeline),
//! [`Input`](crate::Input), [`Redirect`](crate::Redirect)) knows nothing of how or where
//! processes start. Running a pipeline turns it into a [`Plan`]: every stage's process
//! ([`Process`]) with each of its streams resolved to a concrete target
//! ([`exec`](crate::exec) decides the defaults of each call, and is the only reader of the
//! command model). The plan is closed: a [`Backend`] starts it from what it holds alone,
//! and hands back a [`Running`]: the pipes that lead to this process and a way to wait for
//! and signal what was started. Everything above that (capturing output, here-strings,
//! timeouts, exit checking, error text) is written once, in `exec` and `child`, for every
//! machine.

use std::{
    ffi::OsString,
    io,
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::future::BoxFuture;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    task::JoinHandle,
};

use crate::{ExitStatus, Result, Signal};

/// A stream from a started process to this one, as async code reads it.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// The end of a pipe from a started process, as a backend hands it over.
///
/// The local backend gives the OS pipe itself: a call that only wants all the bytes
/// (`read`, `output`) then drains it on a blocking thread, which moves bulk output at
/// about twice the rate of readiness-driven async reads (a child writing 8 KiB at a time
/// wakes a fast reader once per write; a blocking read makes that wakeup cheap). Streams
/// that are not OS pipes (an SSH channel) are read asynchronously.
pub(crate) enum ReadEnd {
    Fd(OwnedFd),
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))] // only the SSH machine uses it
    Async(BoxRead),
}

impl ReadEnd {
    /// Reads the pipe to its end: an OS pipe on a blocking thread, where setting `cancel`
    /// stops the read within 100 ms (a grandchild that escaped its process group may hold
    /// a pipe open for ever); an async stream in a task.
    pub(crate) fn read_to_end(self, cancel: Arc<AtomicBool>) -> JoinHandle<io::Result<Vec<u8>>> {
        match self {
            ReadEnd::Fd(fd) => tokio::task::spawn_blocking(move || read_fd_to_end(&fd, &cancel)),
            ReadEnd::Async(mut read) => tokio::spawn(async move {
                let mut buffer = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut read, &mut buffer).await?;
                Ok(buffer)
            }),
        }
    }

    /// The end as an async stream.
    pub(crate) fn into_async(self) -> std::io::Result<BoxRead> {
        match self {
            ReadEnd::Async(read) => Ok(read),
            ReadEnd::Fd(fd) => Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
                fd,
            )?)),
        }
    }
}

/// A stream from this process to a started process.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

fn read_fd_to_end(fd: &OwnedFd, cancel: &AtomicBool) -> io::Result<Vec<u8>> {
    const CHUNK: usize = 1 << 20;
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "reading was cancelled",
            ));
        }
        let mut ready = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length we pass.
        let polled = unsafe { libc::poll(&mut ready, 1, 100) };
        if polled == 0 {
            continue;
        }
        if buffer.capacity() - buffer.len() < CHUNK {
            buffer.reserve(buffer.len().max(CHUNK));
        }
        let spare = buffer.spare_capacity_mut();
        let read = if polled < 0 {
            -1
        } else {
            // SAFETY: read writes at most `spare.len()` bytes into the Vec's spare capacity;
            // only what it wrote is exposed by `set_len` below.
            unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) }
        };
        match read {
            0 => return Ok(buffer),
            // SAFETY: `read` bytes after the old length were just written.
            n if n > 0 => unsafe { buffer.set_len(buffer.len() + n as usize) },
            _ => {
                let error = io::Error::last_os_error();
                if !matches!(
                    error.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    return Err(error);
                }
            }
        }
    }
}

/// A machine that can start pipelines: the local one, or an SSH connection.
pub(crate) trait Backend: Send + Sync + 'static {
    /// How errors and logs name this machine (`local`, `deploy@web1`).
    fn name(&self) -> &str;

    /// Starts every stage of `plan`, connected as the plan says.
    ///
    /// On error nothing of the plan is left running.
    fn start(&self, plan: Plan) -> BoxFuture<'_, Result<Box<dyn Running>>>;

    /// Whether every stage of a plan started here writes one shared stderr stream (a
    /// remote shell's), handed out for the first stage planned with [`StderrPlan::Pipe`]:
    /// then an error shows that stream, whichever stage failed.
    fn shares_stderr(&self) -> bool {
        false
    }
}

/// A shared handle to a machine's backend, carried by every command it makes.
pub(crate) type MachineRef = Arc<dyn Backend>;

/// A pipeline with every stream of every stage resolved.
pub(crate) struct Plan {
    pub(crate) stages: Vec<StagePlan>,
    /// Started to outlive this process (`spawn_detached`): every stage in a session of its
    /// own, no stream leading here, and [`Running::wait`] returns once they have started
    /// (with what started them); [`Running::detached_pid`] then names the first stage.
    pub(crate) detached: bool,
}

/// One process of a [`Plan`].
pub(crate) struct StagePlan {
    /// What it runs, where and how (its streams are resolved below).
    pub(crate) process: Process,
    pub(crate) stdin: StdinPlan,
    pub(crate) stdout: StdoutPlan,
    pub(crate) stderr: StderrPlan,
}

/// What one stage runs: everything of its command a machine needs to start it.
#[derive(Clone)]
pub(crate) struct Process {
    /// The machine it runs on (a pipeline across machines is cut where this changes).
    pub(crate) machine: MachineRef,
    /// As the command names it: a path, or a name looked up in `PATH`.
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    /// Indexes of the arguments that are secrets: no message shows them.
    pub(crate) secret_args: Vec<usize>,
    /// Start from an empty environment, before `env` is applied.
    pub(crate) env_clear: bool,
    /// Applied in order; `None` removes the variable.
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    /// Relative to the machine's own directory when relative; `None`: that directory.
    pub(crate) cwd: Option<PathBuf>,
    /// Run on a pseudo-terminal (SSH machines only; the local backend refuses it).
    pub(crate) pty: bool,
    /// The command line with its redirects, quoted as a shell reads it: how errors name
    /// the stage.
    pub(crate) line: Line,
}

/// A stage's command line, rendered the first time it is asked for: most starts never
/// need it (only errors and enabled log events do), and quoting every word of every stage
/// on every start would be work on the hot path. Clones share the rendering.
#[derive(Clone)]
pub(crate) struct Line(Arc<LazyLine>);

struct LazyLine {
    render: Box<dyn Fn() -> String + Send + Sync>,
    text: OnceLock<String>,
}

impl Line {
    pub(crate) fn new(render: impl Fn() -> String + Send + Sync + 'static) -> Line {
        Line(Arc::new(LazyLine {
            render: Box::new(render),
            text: OnceLock::new(),
        }))
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.text.get_or_init(|| (self.0.render)())
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a stage reads its standard input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StdinPlan {
    Inherit,
    Null,
    File(PathBuf),
    /// A pipe from this process ([`Running::take_stdin`]): the caller's (`spawn`), or the
    /// copy of another machine's output (a pipeline across machines).
    Pipe,
    /// A pipe from this process ([`Running::take_stdin`]) that `exec` fills with these
    /// bytes and closes (a here-string).
    Bytes(Arc<[u8]>),
    /// The terminal of the stage's pty (pty set, stdin left unset).
    Terminal,
    /// The previous stage's stdout; end of file at once when that went elsewhere.
    Previous,
}

/// Where a stage writes its standard output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StdoutPlan {
    Inherit,
    Null,
    File(PathBuf),
    Append(PathBuf),
    /// A pipe to this process ([`Running::take_stdout`]); only the last stage has one.
    Pipe,
    /// The next stage's stdin.
    Next,
}

/// Where a stage writes its standard error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StderrPlan {
    Inherit,
    Null,
    File(PathBuf),
    Append(PathBuf),
    /// A pipe of its own to this process ([`Running::take_stderr`]).
    Pipe,
    /// Wherever this stage's stdout goes (`2>&1`).
    Stdout,
    /// Wherever the last stage's stdout goes (`(a | b) 2>&1`).
    PipelineStdout,
}

/// A started plan.
///
/// Dropping it before [`Running::wait`] has returned kills everything it started: that is
/// how timeouts, `Child::kill` and dropped children stop processes on every machine.
pub(crate) trait Running: Send {
    /// The pipe into stage `stage`'s stdin, for a stage planned with [`StdinPlan::Pipe`]
    /// or [`StdinPlan::Bytes`].
    fn take_stdin(&mut self, stage: usize) -> Option<BoxWrite>;
    /// The pipe from the last stage's stdout, when planned with [`StdoutPlan::Pipe`].
    fn take_stdout(&mut self) -> Option<ReadEnd>;
    /// The pipe from stage `stage`'s stderr, when planned with [`StderrPlan::Pipe`].
    fn take_stderr(&mut self, stage: usize) -> Option<ReadEnd>;
    /// Waits until every stage has ended; their statuses in stage order. Cancel-safe, and
    /// returns the same statuses when called again.
    fn wait(&mut self) -> BoxFuture<'_, Result<Vec<ExitStatus>>>;
    /// Sends `signal` to everything still running; nothing happens once all have ended.
    fn signal(&mut self, signal: Signal) -> Result<()>;
    /// The first stage's process id, where the machine has one to give.
    fn id(&self) -> Option<u32>;
    /// The pid logs and tracing show: the first stage's, or on a remote machine the pid of
    /// the remote shell that leads the pipeline's process group, once known.
    fn logged_pid(&self) -> Option<u32> {
        self.id()
    }
    /// For a detached plan, once [`Running::wait`] has returned: the pid of the process
    /// that leads the detached session.
    fn detached_pid(&self) -> Option<u32> {
        None
    }
}
