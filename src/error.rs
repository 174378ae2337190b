//! The one error type, written for the person reading it.

use std::{fmt, io, time::Duration};

use crate::{files::FileError, status::ExitStatus};

/// `Result` with [`enum@Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when leadpipe runs something.
///
/// `Display` (and `Debug`, so `fn main() -> leadpipe::Result<()>` prints it well) says what
/// ran, where, and what it printed:
///
/// ```text
/// command failed with exit code 2 on local:
///   $ ls -la /nope
///   stderr: ls: cannot access '/nope': No such file or directory
/// ```
///
/// The enum is `#[non_exhaustive]`: new kinds of failure may join it.
#[non_exhaustive]
pub enum Error {
    /// The program was not found on the machine's `PATH` (or at the path given).
    CommandNotFound {
        /// The program as it was given.
        program: String,
        /// The machine it was looked for on (`local`, `deploy@web1`).
        machine: String,
        /// The `PATH` that was searched.
        searched: String,
    },
    /// The program exists but cannot be executed by this user: it lacks the execute
    /// permission (or is not a regular file). Told apart from [`Error::CommandNotFound`]
    /// on every machine.
    NotExecutable {
        /// The program as it was given.
        program: String,
        /// The machine it was looked for on.
        machine: String,
    },
    /// A command (or a stage of a pipeline) exited with a status outside its `ok_codes`.
    Exit(Box<ExitError>),
    /// The command ran past its [`timeout`](crate::Command::timeout) and was killed, with
    /// everything it started.
    Timeout {
        /// The command line.
        command: String,
        /// The machine it ran on.
        machine: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// `read()` or `lines()` met output that is not UTF-8; `read_bytes()` takes any bytes.
    InvalidUtf8 {
        /// The command line.
        command: String,
        /// The machine it ran on.
        machine: String,
        /// Where the first invalid byte is.
        valid_up_to: usize,
    },
    /// An I/O operation failed: starting a process, opening a redirect target, a pipe.
    Io {
        /// What was being done, naming the command or path.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A [`blocking`](crate::blocking) call was made from inside an async runtime, where it
    /// would block a worker thread (or deadlock); `.await` the call instead.
    BlockingInRuntime,
    /// No SSH connection could be made: the address did not answer, refused, or the
    /// handshake failed.
    Connect {
        /// `user@host[:port]`.
        destination: String,
        /// What went wrong.
        reason: String,
    },
    /// The server accepted none of the ways leadpipe tried to log in.
    Auth {
        /// `user@host[:port]`.
        destination: String,
        /// What was tried, in order (key files with why they could not be used, password).
        /// Never a secret.
        tried: Vec<String>,
        /// The methods the server said it accepts (`publickey`, `password`, ...).
        accepted: Vec<String>,
    },
    /// The server's host key was refused: unknown, changed, or revoked per known_hosts.
    HostKey {
        /// The host as known_hosts names it (`host` or `[host]:port`).
        host: String,
        /// Why, with the key's fingerprint (`SHA256:...`) and the file and line involved.
        reason: String,
    },
    /// The server refused to open a channel for a reason other than its channel limit
    /// (which leadpipe waits out).
    ChannelRefused {
        /// The machine.
        machine: String,
        /// The server's reason.
        reason: String,
    },
    /// The SSH connection died (TCP reset, keepalives unanswered) while a call was using it.
    /// The machine does not reconnect by itself: connect again.
    ConnectionLost {
        /// The machine.
        machine: String,
    },
    /// A file operation failed: which one, on which path of which machine, and why
    /// ([`FileError::kind`] tells `NotFound` from `PermissionDenied` and the rest).
    File(Box<FileError>),
}

/// The details of [`Error::Exit`]: which command failed, how, and the tails of its output.
pub struct ExitError {
    pub(crate) command: String,
    pub(crate) stage: Option<(usize, usize, String)>,
    pub(crate) machine: String,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) stderr_captured: bool,
}

impl ExitError {
    /// The whole command line (for a pipeline, every stage joined by `|`).
    pub fn command(&self) -> &str {
        &self.command
    }

    /// For a pipeline of several stages: the failing stage's index (from 0), the number of
    /// stages, and the stage's own command line.
    pub fn stage(&self) -> Option<(usize, usize, &str)> {
        self.stage
            .as_ref()
            .map(|(i, n, line)| (*i, *n, line.as_str()))
    }

    /// The machine the command ran on.
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// How the failing command ended.
    pub fn status(&self) -> ExitStatus {
        self.status
    }

    /// The end of the failing command's standard output (the last 16 KiB at most; empty
    /// when it was not captured).
    pub fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    /// The end of the failing command's own standard error (the last 16 KiB at most; empty
    /// when it went to a terminal or a file).
    pub fn stderr(&self) -> &[u8] {
        &self.stderr
    }
}

/// How much of a failed command's output an error keeps.
pub(crate) const TAIL_BYTES: usize = 16 * 1024;
/// How many lines of that tail `Display` shows.
const TAIL_LINES: usize = 20;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::CommandNotFound {
                program,
                machine,
                searched,
            } => {
                write!(f, "command not found on {machine}: {program}")?;
                if program.contains('/') {
                    Ok(())
                } else {
                    write!(f, "\n  searched PATH: {searched}")
                }
            }
            Error::NotExecutable { program, machine } => write!(
                f,
                "command not executable on {machine}: {program}\n  it exists, but this user \
                 may not execute it (permission denied)"
            ),
            Error::Exit(exit) => fmt::Display::fmt(exit, f),
            Error::Timeout {
                command,
                machine,
                timeout,
            } => write!(
                f,
                "command timed out after {timeout:?} on {machine} and was killed:\n  $ {command}"
            ),
            Error::InvalidUtf8 {
                command,
                machine,
                valid_up_to,
            } => write!(
                f,
                "command output is not UTF-8 (invalid byte at offset {valid_up_to}) on \
                 {machine}; use read_bytes() for binary output:\n  $ {command}"
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::BlockingInRuntime => f.write_str(
                "a leadpipe::blocking call was made inside an async runtime, where it would \
                 block the runtime; use .await instead",
            ),
            Error::Connect {
                destination,
                reason,
            } => write!(f, "cannot connect to {destination}: {reason}"),
            Error::Auth {
                destination,
                tried,
                accepted,
            } => {
                write!(f, "authentication failed for {destination}")?;
                let tried = if tried.is_empty() {
                    "nothing (no key file found, no password given)".to_owned()
                } else {
                    tried.join(", ")
                };
                write!(f, "\n  tried: {tried}")?;
                if !accepted.is_empty() {
                    write!(f, "\n  the server accepts: {}", accepted.join(", "))?;
                }
                Ok(())
            }
            Error::HostKey { host, reason } => write!(f, "host key of {host} refused: {reason}"),
            Error::ChannelRefused { machine, reason } => {
                write!(f, "{machine} refused to open a channel: {reason}")
            }
            Error::ConnectionLost { machine } => write!(f, "the connection to {machine} was lost"),
            Error::File(error) => fmt::Display::fmt(error, f),
        }
    }
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.status {
            ExitStatus::Code(code) => format!("failed with exit code {code}"),
            ExitStatus::Signal(signal) => format!("was killed by {signal}"),
        };
        match &self.stage {
            Some((index, count, _)) => {
                write!(f, "stage {} of {count} {how}", index + 1)?;
            }
            None => write!(f, "command {how}")?,
        }
        write!(f, " on {}:\n  $ {}", self.machine, self.command)?;
        if let Some((index, _, line)) = &self.stage {
            write!(f, "\n  stage {}: {line}", index + 1)?;
        }
        if !self.stderr.is_empty() {
            write_tail(f, "stderr", &self.stderr)?;
        } else if !self.stdout.is_empty() {
            write_tail(f, "stdout", &self.stdout)?;
        } else if !self.stderr_captured {
            f.write_str("\n  (stderr was not captured: see above or where it was redirected)")?;
        }
        Ok(())
    }
}

/// Writes the last lines of `bytes`, aligned under a `label: ` prefix.
fn write_tail(f: &mut fmt::Formatter<'_>, label: &str, bytes: &[u8]) -> fmt::Result {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
    let skipped = lines.len().saturating_sub(TAIL_LINES);
    let indent = " ".repeat(label.len() + 2);
    write!(f, "\n  {label}: ")?;
    if skipped > 0 {
        write!(f, "[{skipped} earlier lines]\n  {indent}")?;
    }
    for (i, line) in lines[skipped..].iter().enumerate() {
        if i > 0 {
            write!(f, "\n  {indent}")?;
        }
        f.write_str(line.trim_end_matches('\r'))?;
    }
    Ok(())
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::File(error) => Some(error.io_error()),
            _ => None,
        }
    }
}

impl std::error::Error for ExitError {}
