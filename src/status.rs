//! How a process ended, and what a finished command produced.

use std::fmt;

/// A Unix signal, by number, with its conventional name.
///
/// Used to send signals ([`Child::signal`](crate::Child::signal)) and to report how a
/// process ended ([`ExitStatus::Signal`]). The constants use the Linux numbering, which
/// every machine leadpipe talks to shares for these names.
///
/// # Example
/// ```
/// use leadpipe::Signal;
/// assert_eq!(Signal::TERM.to_string(), "SIGTERM");
/// assert_eq!(Signal::from_name("KILL"), Some(Signal::KILL));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// SIGHUP: the terminal went away; daemons often reload on it.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// SIGINT: what Ctrl-C sends.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// SIGQUIT: quit with a core dump.
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// SIGABRT: `abort()`.
    pub const ABRT: Signal = Signal(libc::SIGABRT);
    /// SIGKILL: cannot be caught; what `kill()`, timeouts and drops send.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// SIGSEGV: invalid memory access.
    pub const SEGV: Signal = Signal(libc::SIGSEGV);
    /// SIGPIPE: wrote to a pipe nobody reads.
    pub const PIPE: Signal = Signal(libc::SIGPIPE);
    /// SIGALRM: a timer expired.
    pub const ALRM: Signal = Signal(libc::SIGALRM);
    /// SIGTERM: the polite request to stop.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// SIGUSR1: user-defined.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// SIGUSR2: user-defined.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// SIGCONT: continue a stopped process.
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// SIGSTOP: stop; cannot be caught.
    pub const STOP: Signal = Signal(libc::SIGSTOP);

    const NAMED: [(Signal, &'static str); 13] = [
        (Signal::HUP, "HUP"),
        (Signal::INT, "INT"),
        (Signal::QUIT, "QUIT"),
        (Signal::ABRT, "ABRT"),
        (Signal::KILL, "KILL"),
        (Signal::SEGV, "SEGV"),
        (Signal::PIPE, "PIPE"),
        (Signal::ALRM, "ALRM"),
        (Signal::TERM, "TERM"),
        (Signal::USR1, "USR1"),
        (Signal::USR2, "USR2"),
        (Signal::CONT, "CONT"),
        (Signal::STOP, "STOP"),
    ];

    /// The signal with this number.
    pub const fn from_raw(number: i32) -> Signal {
        Signal(number)
    }

    /// The signal's number.
    pub const fn as_raw(self) -> i32 {
        self.0
    }

    /// The signal named `name`, with or without the `SIG` prefix (`"TERM"`, `"SIGTERM"`),
    /// as SSH servers report them. `None` for names outside the constants above.
    pub fn from_name(name: &str) -> Option<Signal> {
        let bare = name.strip_prefix("SIG").unwrap_or(name);
        Signal::NAMED
            .iter()
            .find(|(_, n)| *n == bare)
            .map(|(signal, _)| *signal)
    }

    /// The name without the `SIG` prefix (`"TERM"`), if this is one of the constants.
    pub fn name(self) -> Option<&'static str> {
        Signal::NAMED
            .iter()
            .find(|(signal, _)| *signal == self)
            .map(|(_, n)| *n)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "SIG{name}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a process (or a pipeline) ended: an exit code or a signal.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::{ExitStatus, Signal};
/// let status = leadpipe::local().cmd("false").status().await?;
/// assert_eq!(status, ExitStatus::Code(1));
/// assert!(!status.success());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ExitStatus {
    /// The process exited with this code.
    Code(i32),
    /// The process was killed by this signal.
    Signal(Signal),
}

impl ExitStatus {
    /// Whether the process exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The exit code, if the process exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(code) => Some(code),
            ExitStatus::Signal(_) => None,
        }
    }

    /// The signal that killed the process, if one did.
    pub fn signal(self) -> Option<Signal> {
        match self {
            ExitStatus::Signal(signal) => Some(signal),
            ExitStatus::Code(_) => None,
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(status: std::process::ExitStatus) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(signal)) => ExitStatus::Signal(Signal(signal)),
            // Stopped/continued statuses never reach a finished wait().
            (None, None) => ExitStatus::Code(-1),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// What a finished command or pipeline produced, from
/// [`Command::output`](crate::Command::output).
///
/// For a pipeline, `stdout` is the last stage's standard output, `stderr` holds every
/// stage's standard error (each stage's in full, in stage order), and `statuses` has one
/// entry per stage.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Output {
    /// The status of the whole, as bash's `pipefail` gives it: the last stage that did not
    /// exit with 0, even one whose status is not checked (`unchecked()`, `ok_codes`), or
    /// the last stage's status when all did. A stage killed by SIGPIPE because a later one
    /// stopped reading did not fail.
    pub status: ExitStatus,
    /// Standard output, byte for byte.
    pub stdout: Vec<u8>,
    /// Standard error, byte for byte (empty where it was redirected).
    pub stderr: Vec<u8>,
    /// Every stage's own status, in pipeline order.
    pub statuses: Vec<ExitStatus>,
}
