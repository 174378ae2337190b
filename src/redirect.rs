//! Where a command's standard streams come from and go to.

use std::{path::PathBuf, sync::Arc};

/// Where a command's standard input comes from.
///
/// Set with [`Command::stdin`](crate::Command::stdin); the `<<` operator is the short form
/// of [`Input::Bytes`]. When a command sets none, the call decides: `run()` inherits this
/// process's stdin, `spawn()` gives a pipe ([`Child::stdin`](crate::Child)), the capturing
/// calls (`read`, `output`, `status`, ...) give `/dev/null`.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::{local, Input};
/// let sorted = local().cmd("sort").stdin(Input::File("names.txt".into())).read().await?;
/// let upper = (local().cmd("tr").args(["a-z", "A-Z"]) << "shout").read().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// This process's own standard input.
    Inherit,
    /// `/dev/null`: reads see end of file at once.
    Null,
    /// A file, opened for reading on the command's machine (`< path`).
    File(PathBuf),
    /// These bytes, exactly, then end of file (a here-string). They are written by a
    /// separate task, so a command that never reads its input cannot stall the caller, and
    /// a command that exits before reading it all is not an error.
    Bytes(Arc<[u8]>),
}

impl Input {
    /// [`Input::Bytes`] from anything that converts to bytes.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Input {
        Input::Bytes(bytes.into().into())
    }
}

impl From<Vec<u8>> for Input {
    fn from(bytes: Vec<u8>) -> Input {
        Input::Bytes(bytes.into())
    }
}

/// Where a command's standard output or standard error goes.
///
/// Set with [`Command::stdout`](crate::Command::stdout) and
/// [`Command::stderr`](crate::Command::stderr); `>>` is the short form of
/// [`Redirect::Append`] for stdout, and [`Command::stderr_to_stdout`](crate::Command::stderr_to_stdout)
/// is `2>&1`. Setting the same stream twice keeps the last setting, so a builder can
/// override what it was given. When a command sets none, the call decides: `run()` inherits
/// this process's streams, the other calls capture them.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::{local, Redirect};
/// local().cmd("date").stdout(Redirect::File("now.txt".into())).run().await?;
/// (local().cmd("date") >> "log.txt").run().await?;
/// local().cmd("make").stderr(Redirect::Null).run().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Redirect {
    /// This process's own stream.
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe to this process: the stream on [`Child`](crate::Child) after `spawn()`, or
    /// the captured bytes of `read()`/`output()`. For stderr after `spawn()` it hands the
    /// stream to you, instead of leadpipe keeping it for errors and `wait_with_output`.
    Pipe,
    /// A file on the command's machine, created or truncated (`> path`).
    File(PathBuf),
    /// A file on the command's machine, created or appended to (`>> path`).
    Append(PathBuf),
}
