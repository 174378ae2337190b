//! The one error type, written for the person reading it.

use std::{fmt, io, net::SocketAddr, time::Duration};

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
/// The enum is `#[non_exhaustive]`: new kinds of failure may join it. So are its variants
/// with fields: match them with `..` (`Error::Connect { destination, .. }`), as fields may
/// be added.
///
/// `Error` is `Send + Sync + 'static` and implements [`std::error::Error`] with its causes
/// as [`source`](std::error::Error::source), so `?` turns it into a
/// `Box<dyn std::error::Error + Send + Sync>` or an `anyhow::Error`, and reporters that walk
/// sources show what lies underneath. [`io_kind`](Error::io_kind) tells failures apart in
/// code, without reading text.
///
/// # Example
/// ```no_run
/// use std::{error::Error as _, io::ErrorKind};
///
/// use leadpipe::{Error, SshMachine, local};
///
/// async fn release() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let version = local().cmd("git").args(["describe", "--tags"]).read().await?;
///     let web1 = match SshMachine::connect("deploy@web1").await {
///         Ok(web1) => web1,
///         // Nothing answered in time: maybe later. Refused, unknown host key...: stop.
///         Err(e) if e.io_kind() == Some(ErrorKind::TimedOut) => {
///             eprintln!("web1 is not answering; skipping it");
///             return Ok(());
///         }
///         Err(Error::HostKey { problem, fingerprint, .. }) => {
///             return Err(format!("web1's host key: {problem:?} ({fingerprint:?})").into());
///         }
///         Err(e) => return Err(e.into()),
///     };
///     web1.cmd("deploy").arg(version.trim()).run().await?;
///     Ok(())
/// }
///
/// # async fn demo() {
/// if let Err(error) = release().await {
///     eprintln!("{error}");
///     let mut cause = error.source();
///     while let Some(inner) = cause {
///         eprintln!("  caused by: {inner}");
///         cause = inner.source();
///     }
/// }
/// # }
/// ```
#[non_exhaustive]
pub enum Error {
    /// The program was not found on the machine's `PATH` (or at the path given).
    #[non_exhaustive]
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
    #[non_exhaustive]
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
    #[non_exhaustive]
    Timeout {
        /// The command line.
        command: String,
        /// The machine it ran on.
        machine: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// `read()` or `lines()` met output that is not UTF-8; `read_bytes()` takes any bytes.
    #[non_exhaustive]
    InvalidUtf8 {
        /// The command line.
        command: String,
        /// The machine it ran on.
        machine: String,
        /// Where the first invalid byte is.
        valid_up_to: usize,
    },
    /// An I/O operation failed: starting a process, opening a redirect target, a pipe.
    #[non_exhaustive]
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
    ///
    /// [`Error::io_kind`] tells the cases apart: `ConnectionRefused` (nothing listens on
    /// the port), `TimedOut` (no answer, or no handshake, within the connect timeout),
    /// `ConnectionReset`, and the rest of what the system reports.
    #[non_exhaustive]
    Connect {
        /// `user@host[:port]` as dialled, after ssh_config (`HostName`, `User`, `Port`).
        destination: String,
        /// The destination as the script wrote it: the string given to
        /// [`SshMachine::connect`](crate::SshMachine::connect) (`deploy@web1:2222`), or the
        /// host given to [`SshMachine::builder`](crate::SshMachine::builder) (an
        /// ssh_config alias, a name, an address).
        given: String,
        /// The network address the name resolved to, when it got that far (the last one
        /// tried, when it has several). `None` through a jump host.
        address: Option<SocketAddr>,
        /// What went wrong.
        reason: String,
        /// The I/O error underneath, when there is one (also the `TimedOut` of the connect
        /// timeout).
        source: Option<io::Error>,
    },
    /// The server accepted none of the ways leadpipe tried to log in.
    #[non_exhaustive]
    Auth {
        /// `user@host[:port]` as dialled, after ssh_config.
        destination: String,
        /// The destination as the script wrote it (see [`Error::Connect`]).
        given: String,
        /// What was tried, in order (key files with why they could not be used, password).
        /// Never a secret.
        tried: Vec<String>,
        /// The methods the server said it accepts (`publickey`, `password`, ...).
        accepted: Vec<String>,
    },
    /// The server's host key was refused: unknown, changed, or revoked per known_hosts.
    #[non_exhaustive]
    HostKey {
        /// The host as known_hosts names it (`host` or `[host]:port`).
        host: String,
        /// The destination as the script wrote it (see [`Error::Connect`]).
        given: String,
        /// Which case: unknown, changed, revoked, ...
        problem: HostKeyProblem,
        /// The fingerprint of the key the server presented (`SHA256:...`, as
        /// `ssh-keygen -l` prints it; for a host certificate, of the key inside it).
        fingerprint: Option<String>,
        /// Why, with the key's fingerprint (`SHA256:...`) and the file and line involved.
        reason: String,
    },
    /// The server refused to open a channel for a reason other than its channel limit
    /// (which leadpipe waits out), or to listen for a reverse tunnel.
    #[non_exhaustive]
    ChannelRefused {
        /// The machine.
        machine: String,
        /// What could not be reached (`127.0.0.1:6379`, a socket path), when the channel
        /// was for a socket.
        target: Option<String>,
        /// The SSH reason code the server gave; `None` for a refused reverse tunnel (a
        /// request without one).
        refusal: Option<ChannelRefusal>,
        /// The whole story as a sentence: what, and why.
        reason: String,
    },
    /// The SSH connection died (TCP reset, keepalives unanswered) while a call was using it.
    /// The machine does not reconnect by itself: connect again.
    #[non_exhaustive]
    ConnectionLost {
        /// The machine.
        machine: String,
    },
    /// A file operation failed: which one, on which path of which machine, and why
    /// ([`FileError::kind`] tells `NotFound` from `PermissionDenied` and the rest).
    File(Box<FileError>),
    /// A [`Fleet`](crate::Fleet) did not run this host's work: earlier failures went over
    /// its failure budget (`max_failures`, `fail_fast`), so no further host started.
    #[non_exhaustive]
    NotRun {
        /// The host, as the fleet names it.
        host: String,
        /// Why: the failures that stopped the fleet.
        reason: String,
    },
    /// `sudo` did not run the command as another user
    /// ([`sudo`](crate::SshMachine::sudo) / [`sudo_as`](crate::SshMachine::sudo_as) views):
    /// the password was refused (sudo asked for it a second time), none was given, or sudo
    /// ended before starting the command (the user may not use sudo, requiretty without a
    /// terminal, no `sudo` on the machine). Decided by sudo's prompts and exit, never by
    /// its wording; nothing of the password is in it.
    #[non_exhaustive]
    Sudo {
        /// The machine.
        machine: String,
        /// The user the command was to run as.
        user: String,
        /// What happened, with what sudo printed (its prompts taken out).
        reason: String,
    },
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

/// Which host-key check failed: the data of [`Error::HostKey`] (whose `reason` names the
/// known_hosts file and line involved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostKeyProblem {
    /// known_hosts has no key of this type for the host, and the policy accepts no new
    /// one ([`HostKeyPolicy::Strict`](crate::HostKeyPolicy::Strict)).
    Unknown,
    /// known_hosts lists another key of this type for the host: the host was reinstalled,
    /// or someone is intercepting the connection.
    Changed,
    /// known_hosts marks this key `@revoked`.
    Revoked,
    /// [`HostKeyPolicy::AcceptNew`](crate::HostKeyPolicy::AcceptNew) could not add the new
    /// key to known_hosts (the file cannot be written, or the name not written plainly).
    NotRecorded,
    /// The known_hosts files cannot be read.
    Unreadable,
    /// The server presented a host certificate that is not to be trusted: signed by a CA
    /// no `@cert-authority` line names for the host, a signature that does not verify, a
    /// user certificate, or critical options.
    Certificate,
    /// The server's host certificate is expired, or not yet valid.
    CertificateExpired,
    /// The server's host certificate does not name the host (or its `HostKeyAlias`) among
    /// its principals.
    CertificatePrincipal,
}

/// Why an SSH server refused to open a channel: the reason code of RFC 4254 (section 5.1),
/// the data of [`Error::ChannelRefused`]. `Display` says it as a sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelRefusal {
    /// 1, `SSH_OPEN_ADMINISTRATIVELY_PROHIBITED`: the server's configuration forbids it
    /// (OpenSSH: `AllowTcpForwarding`, `AllowStreamLocalForwarding`, `PermitOpen`).
    Prohibited,
    /// 2, `SSH_OPEN_CONNECT_FAILED`: the server could not connect to the target (nothing
    /// listens there, or it is unreachable from the server).
    ConnectFailed,
    /// 3, `SSH_OPEN_UNKNOWN_CHANNEL_TYPE`: the server does not know this kind of channel.
    UnknownChannelType,
    /// 4, `SSH_OPEN_RESOURCE_SHORTAGE`: the server is out of resources.
    ResourceShortage,
    /// A code outside RFC 4254.
    Other(u32),
}

impl ChannelRefusal {
    /// The reason code as sent on the wire (1 to 4 for RFC 4254's).
    pub fn code(self) -> u32 {
        match self {
            ChannelRefusal::Prohibited => 1,
            ChannelRefusal::ConnectFailed => 2,
            ChannelRefusal::UnknownChannelType => 3,
            ChannelRefusal::ResourceShortage => 4,
            ChannelRefusal::Other(code) => code,
        }
    }
}

impl fmt::Display for ChannelRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelRefusal::Prohibited => f.write_str(
                "the server does not allow it (administratively prohibited: see its \
                 AllowTcpForwarding, AllowStreamLocalForwarding or PermitOpen)",
            ),
            ChannelRefusal::ConnectFailed => f.write_str(
                "the server could not connect to it (nothing listens there, or it is \
                 unreachable from the server)",
            ),
            ChannelRefusal::UnknownChannelType => {
                f.write_str("the server does not support this kind of channel")
            }
            ChannelRefusal::ResourceShortage => f.write_str("the server is out of resources"),
            ChannelRefusal::Other(code) => {
                write!(f, "the server refused it with reason code {code}")
            }
        }
    }
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
    /// The kind of the I/O error underneath, when there is one: for [`Error::Io`],
    /// [`Error::File`], and [`Error::Connect`] (`ConnectionRefused` from `TimedOut`, ...).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use std::io::ErrorKind;
    /// match leadpipe::SshMachine::connect("deploy@web1").await {
    ///     Err(e) if e.io_kind() == Some(ErrorKind::ConnectionRefused) => {
    ///         eprintln!("no sshd listens on web1 yet");
    ///     }
    ///     other => other.map(drop)?,
    /// }
    /// # Ok(()) }
    /// ```
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            Error::File(error) => Some(error.kind()),
            Error::Connect {
                source: Some(source),
                ..
            } => Some(source.kind()),
            _ => None,
        }
    }

    /// A [`Error::Connect`] that names no address yet names `address`.
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))] // only the SSH machine uses it
    pub(crate) fn at_address(mut self, at: SocketAddr) -> Error {
        if let Error::Connect { address, .. } = &mut self {
            address.get_or_insert(at);
        }
        self
    }

    /// An [`Error::Io`]: `source` while doing `context` (name the command or path), for a
    /// script's own I/O in a function that returns [`leadpipe::Result`](Result).
    ///
    /// # Example
    /// ```
    /// # fn demo() -> leadpipe::Result<()> {
    /// let config = std::fs::read_to_string("deploy.toml")
    ///     .map_err(|e| leadpipe::Error::io("reading deploy.toml", e));
    /// # Ok(()) }
    /// ```
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
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
                given,
                address,
                reason,
                ..
            } => {
                f.write_str("cannot connect to ")?;
                write_destination(f, given, destination, *address)?;
                write!(f, ": {reason}")
            }
            Error::Auth {
                destination,
                given,
                tried,
                accepted,
            } => {
                f.write_str("authentication failed for ")?;
                write_destination(f, given, destination, None)?;
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
            Error::HostKey {
                host,
                given,
                reason,
                ..
            } => {
                if given.is_empty() || host_part(host) == host_part(given) {
                    write!(f, "host key of {host} refused: {reason}")
                } else {
                    write!(f, "host key of {given} ({host}) refused: {reason}")
                }
            }
            Error::ChannelRefused {
                machine, reason, ..
            } => {
                write!(f, "{machine} refused to open a channel: {reason}")
            }
            Error::ConnectionLost { machine } => write!(f, "the connection to {machine} was lost"),
            Error::File(error) => fmt::Display::fmt(error, f),
            Error::NotRun { host, reason } => write!(f, "not run on {host}: {reason}"),
            Error::Sudo {
                machine,
                user,
                reason,
            } => write!(f, "sudo as {user} failed on {machine}: {reason}"),
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

/// `destination`, with the name the script gave first when its host is another (an
/// ssh_config alias: `web1 (deploy@10.0.0.5:2222)`), and the address it resolved to when
/// that is not already in it.
fn write_destination(
    f: &mut fmt::Formatter<'_>,
    given: &str,
    destination: &str,
    address: Option<SocketAddr>,
) -> fmt::Result {
    let address = address.filter(|a| !destination.contains(&a.ip().to_string()));
    let same = given.is_empty() || host_part(destination) == host_part(given);
    match (same, address) {
        (true, None) => f.write_str(destination),
        (true, Some(address)) => write!(f, "{destination} ({address})"),
        (false, None) => write!(f, "{given} ({destination})"),
        (false, Some(address)) => write!(f, "{given} ({destination}, {address})"),
    }
}

/// The host in a destination as `ssh` takes it: `user@host:port` and `[v6]:port` give
/// `host` and `v6`.
fn host_part(given: &str) -> &str {
    let host = given.rsplit_once('@').map_or(given, |(_, host)| host);
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed
            .split_once(']')
            .map_or(bracketed, |(inside, _)| inside);
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
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
            Error::Connect {
                source: Some(source),
                ..
            } => Some(source),
            _ => None,
        }
    }
}

impl std::error::Error for ExitError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// `?` into `Box<dyn Error + Send + Sync>` or `anyhow::Error` needs all of these.
    #[test]
    fn the_error_is_send_sync_static_and_an_std_error() {
        fn takes<T: std::error::Error + Send + Sync + 'static>() {}
        takes::<Error>();
        takes::<ExitError>();
        fn boxed() -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err(Error::BlockingInRuntime)?
        }
        assert!(boxed().unwrap_err().downcast_ref::<Error>().is_some());
    }

    #[test]
    fn a_connect_error_keeps_its_kind_and_source() {
        let error = Error::Connect {
            destination: "deploy@10.0.0.5:2222".to_owned(),
            given: "web1".to_owned(),
            address: Some("10.0.0.5:2222".parse().unwrap()),
            reason: "Connection refused (os error 111)".to_owned(),
            source: Some(io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(error.io_kind(), Some(io::ErrorKind::ConnectionRefused));
        let source = std::error::Error::source(&error).expect("a source");
        let source = source.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            error.to_string(),
            "cannot connect to web1 (deploy@10.0.0.5:2222): Connection refused (os error 111)"
        );
    }

    #[test]
    fn destinations_name_what_the_script_wrote_and_where_it_led() {
        let show = |given: &str, destination: &str, address: Option<&str>| {
            Error::Connect {
                destination: destination.to_owned(),
                given: given.to_owned(),
                address: address.map(|a| a.parse().unwrap()),
                reason: "x".to_owned(),
                source: None,
            }
            .to_string()
        };
        assert_eq!(
            show("deploy@10.0.0.5", "deploy@10.0.0.5", Some("10.0.0.5:22")),
            "cannot connect to deploy@10.0.0.5: x"
        );
        assert_eq!(
            show("10.0.0.5:2222", "root@10.0.0.5:2222", Some("10.0.0.5:2222")),
            "cannot connect to root@10.0.0.5:2222: x"
        );
        assert_eq!(
            show("harness", "me@127.0.0.1:2222", Some("127.0.0.1:2222")),
            "cannot connect to harness (me@127.0.0.1:2222): x"
        );
        assert_eq!(
            show("web1", "deploy@web1.example.com", Some("10.0.0.5:22")),
            "cannot connect to web1 (deploy@web1.example.com, 10.0.0.5:22): x"
        );
        assert_eq!(
            show(
                "deploy@web1.example.com",
                "deploy@web1.example.com",
                Some("[::1]:22")
            ),
            "cannot connect to deploy@web1.example.com ([::1]:22): x"
        );
    }

    #[test]
    fn channel_refusals_are_sentences_with_their_code() {
        assert_eq!(ChannelRefusal::ConnectFailed.code(), 2);
        assert_eq!(ChannelRefusal::Other(77).code(), 77);
        let text = ChannelRefusal::ConnectFailed.to_string();
        assert!(text.contains("nothing listens there"), "{text}");
        assert!(!text.contains("ConnectFailed"), "{text}");
    }
}
