//! The one internal interface every machine plugs in behind.
//!
//! The command model ([`Command`], [`Pipeline`](crate::Pipeline), [`Input`](crate::Input),
//! [`Redirect`](crate::Redirect)) knows nothing of how or where processes start. Running a
//! pipeline turns it into a [`Plan`]: every stage with each of its streams resolved to a
//! concrete target ([`exec`](crate::exec) decides the defaults of each call). A [`Backend`]
//! starts a plan and hands back a [`Running`]: the pipes that lead to this process and a
//! way to wait for and signal what was started. Everything above that (capturing output,
//! here-strings, timeouts, exit checking, error text) is written once, in `exec` and
//! `child`, for every machine.

use std::{ffi::OsStr, path::PathBuf, sync::Arc};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Command, ExitStatus, Result, Signal};

/// A stream from a started process to this one.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// A stream from this process to a started process.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A machine that can start pipelines: the local one, or an SSH connection.
pub(crate) trait Backend: Send + Sync + 'static {
    /// How errors and logs name this machine (`local`, `deploy@web1`).
    fn name(&self) -> &str;

    /// Starts every stage of `plan`, connected as the plan says.
    ///
    /// On error nothing of the plan is left running.
    fn start(&self, plan: Plan) -> BoxFuture<'_, Result<Box<dyn Running>>>;

    /// Finds `program` the way starting it would, with the command's `PATH` (`path`) and
    /// working directory.
    fn which<'a>(
        &'a self,
        program: &'a OsStr,
        path: Option<&'a OsStr>,
        cwd: Option<&'a std::path::Path>,
    ) -> BoxFuture<'a, Result<PathBuf>>;
}

/// A shared handle to a machine's backend, carried by every command it makes.
pub(crate) type MachineRef = Arc<dyn Backend>;

/// A pipeline with every stream of every stage resolved.
pub(crate) struct Plan {
    pub(crate) stages: Vec<StagePlan>,
    /// The whole command line, for logs.
    pub(crate) display: String,
}

/// One process of a [`Plan`].
pub(crate) struct StagePlan {
    /// Program, arguments, env and cwd (its stream settings are already resolved below).
    pub(crate) command: Command,
    pub(crate) stdin: StdinPlan,
    pub(crate) stdout: StdoutPlan,
    pub(crate) stderr: StderrPlan,
}

/// Where a stage reads its standard input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StdinPlan {
    Inherit,
    Null,
    File(PathBuf),
    /// A pipe from this process ([`Running::take_stdin`]).
    Pipe,
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
    /// The pipe into stage `stage`'s stdin, for a stage planned with [`StdinPlan::Pipe`].
    fn take_stdin(&mut self, stage: usize) -> Option<BoxWrite>;
    /// The pipe from the last stage's stdout, when planned with [`StdoutPlan::Pipe`].
    fn take_stdout(&mut self) -> Option<BoxRead>;
    /// The pipe from stage `stage`'s stderr, when planned with [`StderrPlan::Pipe`].
    fn take_stderr(&mut self, stage: usize) -> Option<BoxRead>;
    /// Waits until every stage has ended; their statuses in stage order. Cancel-safe, and
    /// returns the same statuses when called again.
    fn wait(&mut self) -> BoxFuture<'_, Result<Vec<ExitStatus>>>;
    /// Sends `signal` to everything still running; nothing happens once all have ended.
    fn signal(&mut self, signal: Signal) -> Result<()>;
    /// The first stage's process id, where the machine has one to give.
    fn id(&self) -> Option<u32>;
}
