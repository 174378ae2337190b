//! `SshMachine`: commands on a remote machine, over one SSH connection.
//!
//! One TCP connection and one SSH session per `SshMachine` (clones share it); every
//! started pipeline gets a `session` channel of its own, so many run at once. The pieces:
//! [`session`] connects, checks the host key ([`known_hosts`]) and authenticates;
//! [`command_line`] writes a pipeline as one remote `sh` command line; [`process`] runs it on
//! a channel and drains that channel; [`markers`] reads the status lines the command line
//! adds.

mod command_line;
mod known_hosts;
mod markers;
mod process;
mod session;

use std::{
    ffi::OsStr,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;

pub use self::session::HostKeyPolicy;
use self::session::{Connection, Settings};
use crate::{
    Command, Error, Result,
    command::Scope,
    machine::{Backend, MachineRef, Plan, Running},
};

/// A remote machine reached over SSH: the same calls as [`LocalMachine`](crate::LocalMachine).
///
/// Commands made by an `SshMachine` run on the remote host. A pipeline whose stages are all
/// on it runs as one remote `sh` command line (arguments quoted so each arrives byte for
/// byte), so its data flows between the remote processes. Redirect paths are remote paths.
///
/// Clones share the connection; [`with_cwd`](SshMachine::with_cwd) and
/// [`with_env`](SshMachine::with_env) return views, as on the local machine.
///
/// Differences from the local machine, each a property of running through a remote shell:
/// - the stages of a remote pipeline share one stderr stream, as they would in a terminal
///   on that host, so an error shows that stream whichever stage failed;
/// - a remote stage's status is what the shell saw: death by signal N reads as the signal
///   for N up to 31 (the shell's `$?` of 128 + N);
/// - stdin that is not set is empty on the remote side even for `run()` (as `ssh -n`): feed
///   input with `<<` or [`Command::stdin`];
/// - `Child::id()` is `None`.
///
/// Timeouts, `kill()` and dropping a `Child` kill the remote pipeline's whole process
/// group, also for logins where sshd refuses `signal` requests (root).
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::SshMachine;
/// let web1 = SshMachine::builder("web1.example.com").user("deploy").connect().await?;
/// let kernel = web1.cmd("uname").arg("-r").read().await?;
/// let errors = (web1.cmd("journalctl").args(["-u", "app", "-n", "500"])
///     | web1.cmd("grep").arg("ERROR")).unchecked().read().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SshMachine {
    connection: Arc<Connection>,
    backend: MachineRef,
    scope: Scope,
}

impl SshMachine {
    /// Connects to `destination`, written as `ssh` takes it: `host`, `user@host`,
    /// `user@host:port` (`[::1]:2222` for IPv6), with everything else at the
    /// [`builder`](SshMachine::builder)'s defaults.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::HostKey`], [`Error::Auth`].
    pub async fn connect(destination: &str) -> Result<SshMachine> {
        let (user, rest) = match destination.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, destination),
        };
        let (host, port) = split_port(rest).ok_or_else(|| Error::Connect {
            destination: destination.to_owned(),
            reason: "the port is not a number".to_owned(),
        })?;
        let mut builder = SshMachine::builder(host);
        if let Some(user) = user {
            builder = builder.user(user);
        }
        if let Some(port) = port {
            builder = builder.port(port);
        }
        builder.connect().await
    }

    /// Settings for a connection to `host`, before connecting.
    pub fn builder(host: impl Into<String>) -> SshBuilder {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        SshBuilder {
            settings: Settings {
                host: host.into(),
                port: 22,
                user: std::env::var("USER").unwrap_or_else(|_| "root".to_owned()),
                identity_files: Vec::new(),
                password: None,
                passphrase: None,
                known_hosts: vec![home.join(".ssh/known_hosts")],
                host_key_policy: HostKeyPolicy::Strict,
                connect_timeout: Duration::from_secs(15),
                keepalive_interval: Duration::from_secs(10),
                keepalive_max: 3,
                max_channels: 10,
            },
        }
    }

    /// A command that runs `program` on the remote machine (found on the remote `PATH`).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        Command::new(self.backend.clone(), &self.scope, program.as_ref())
    }

    /// Where the remote shell finds `program` (`command -v`).
    ///
    /// # Errors
    /// [`Error::CommandNotFound`] with the remote `PATH`.
    pub async fn which(&self, program: impl AsRef<OsStr>) -> Result<String> {
        let script = "command -v -- \"$1\" || { printf '%s' \"$PATH\"; exit 127; }";
        let output = self
            .cmd("sh")
            .args([
                "-c".as_ref(),
                script.as_ref(),
                "sh".as_ref(),
                program.as_ref(),
            ])
            .unchecked()
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(Error::CommandNotFound {
                program: program.as_ref().to_string_lossy().into_owned(),
                machine: self.connection.name.clone(),
                searched: stdout,
            })
        }
    }

    /// A view whose commands start in `dir` (a remote path, relative to this view's).
    pub fn with_cwd(&self, dir: impl AsRef<Path>) -> SshMachine {
        SshMachine {
            scope: self.scope.with_cwd(dir.as_ref()),
            ..self.clone()
        }
    }

    /// A view whose commands get `key=value` in their environment.
    pub fn with_env(&self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> SshMachine {
        SshMachine {
            scope: self.scope.with_env(key.as_ref(), Some(value.as_ref())),
            ..self.clone()
        }
    }

    /// The directory this view's commands start in, when the view set one.
    pub fn get_cwd(&self) -> Option<&Path> {
        self.scope.cwd.as_deref()
    }

    /// `user@host` (with `:port` when not 22): how errors and logs name this machine.
    pub fn name(&self) -> &str {
        &self.connection.name
    }

    /// Whether the connection has ended (the server went away, or keepalives failed).
    pub fn is_closed(&self) -> bool {
        self.connection.is_closed()
    }
}

/// `host`, `host:port`, `[v6]:port`, `[v6]`.
fn split_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => Some((host, Some(port.parse().ok()?))),
        _ => Some((text, None)),
    }
}

impl fmt::Debug for SshMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshMachine")
            .field("name", &self.connection.name)
            .field("cwd", &self.scope.cwd)
            .finish_non_exhaustive()
    }
}

/// How to connect: user, port, keys, host-key policy, timeouts. From
/// [`SshMachine::builder`].
///
/// Authentication tries, in order: the identity files given (or, when none were,
/// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` where they exist; encrypted ones with the
/// [`passphrase`](SshBuilder::passphrase)), then the [`password`](SshBuilder::password).
/// RSA keys sign with rsa-sha2. Host keys are checked against `~/.ssh/known_hosts` (or the
/// files given) under [`HostKeyPolicy::Strict`] unless another policy is chosen.
#[derive(Clone)]
pub struct SshBuilder {
    settings: Settings,
}

impl SshBuilder {
    /// The user to log in as (default: `$USER`).
    pub fn user(mut self, user: impl Into<String>) -> SshBuilder {
        self.settings.user = user.into();
        self
    }

    /// The port (default 22).
    pub fn port(mut self, port: u16) -> SshBuilder {
        self.settings.port = port;
        self
    }

    /// A private key file to log in with (OpenSSH or PEM format); may be given several
    /// times. Giving one turns off the default `~/.ssh/id_*` files.
    pub fn identity_file(mut self, path: impl AsRef<Path>) -> SshBuilder {
        self.settings
            .identity_files
            .push(expand_home(path.as_ref()));
        self
    }

    /// A password to log in with, tried after the keys. Never shown by `Debug` or errors.
    pub fn password(mut self, password: impl Into<String>) -> SshBuilder {
        self.settings.password = Some(password.into());
        self
    }

    /// The passphrase of encrypted identity files. Never shown by `Debug` or errors.
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> SshBuilder {
        self.settings.passphrase = Some(passphrase.into());
        self
    }

    /// Checks host keys against this known_hosts file instead of `~/.ssh/known_hosts` (call
    /// again to add more files; `AcceptNew` appends to the first).
    pub fn known_hosts(mut self, path: impl AsRef<Path>) -> SshBuilder {
        if self
            .settings
            .known_hosts
            .first()
            .is_some_and(|p| p.ends_with(".ssh/known_hosts"))
        {
            self.settings.known_hosts.clear();
        }
        self.settings.known_hosts.push(expand_home(path.as_ref()));
        self
    }

    /// What to do with host keys known_hosts does not vouch for (default
    /// [`HostKeyPolicy::Strict`]).
    pub fn host_key_policy(mut self, policy: HostKeyPolicy) -> SshBuilder {
        self.settings.host_key_policy = policy;
        self
    }

    /// How long connecting and the handshake may take (default 15 s).
    pub fn connect_timeout(mut self, limit: Duration) -> SshBuilder {
        self.settings.connect_timeout = limit;
        self
    }

    /// Sends a keepalive after `interval` of silence from the server and gives the
    /// connection up after `max` unanswered ones (default 10 s and 3): then every call in
    /// flight fails with [`Error::ConnectionLost`].
    pub fn keepalive(mut self, interval: Duration, max: usize) -> SshBuilder {
        self.settings.keepalive_interval = interval;
        self.settings.keepalive_max = max;
        self
    }

    /// How many channels the server allows on one connection (OpenSSH's `MaxSessions`,
    /// default 10). One is kept free for stopping processes; when the others are busy, new
    /// commands wait for a free one instead of failing.
    pub fn max_channels(mut self, channels: usize) -> SshBuilder {
        self.settings.max_channels = channels.max(2);
        self
    }

    /// Connects and authenticates.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::HostKey`], [`Error::Auth`].
    pub async fn connect(self) -> Result<SshMachine> {
        let connection = Arc::new(Connection::open(&self.settings).await?);
        Ok(SshMachine {
            backend: Arc::new(SshBackend {
                connection: connection.clone(),
            }),
            connection,
            scope: Scope::default(),
        })
    }
}

impl fmt::Debug for SshBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("SshBuilder")
            .field("destination", &s.destination())
            .field("identity_files", &s.identity_files)
            .field("password", &s.password.as_ref().map(|_| "<hidden>"))
            .field("known_hosts", &s.known_hosts)
            .field("host_key_policy", &s.host_key_policy)
            .finish_non_exhaustive()
    }
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

struct SshBackend {
    connection: Arc<Connection>,
}

impl Backend for SshBackend {
    fn name(&self) -> &str {
        &self.connection.name
    }

    fn start(&self, plan: Plan) -> BoxFuture<'_, Result<Box<dyn Running>>> {
        Box::pin(async move {
            let running = process::start(self.connection.clone(), plan).await?;
            Ok(Box::new(running) as Box<dyn Running>)
        })
    }
}
