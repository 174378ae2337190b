//! `SshMachine`: commands on a remote machine, over one SSH connection.
//!
//! One TCP connection and one SSH session per `SshMachine` (clones share it; with
//! `SshBuilder::connections(n)`, commands spread over `n`); every started pipeline gets a
//! `session` channel of its own, so many run at once. This file
//! holds [`SshMachine`] and the SSH backend; the pieces, one concept per file:
//! [`builder`] settles how to connect (the builder's values, then ssh_config read by
//! [`config`], then defaults; `user@host:port`; `ProxyJump` hops);
//! [`connection`] connects, checks the host key ([`known_hosts`]) and authenticates;
//! [`remote_line`] writes a pipeline as one line of `/bin/sh`, sent with a fixed exec string
//! that every login shell reads alike, and reads the reports that line writes back;
//! [`process`] runs it on a channel and drains that channel; [`channel`] turns a channel
//! into a pumped byte stream, which [`forward`] makes sockets and tunnels of (the ports of
//! reverse tunnels live in [`reverse_forwards`]) and on which [`sftp`] serves the
//! machine's files.

mod agent_forward;
mod algorithms;
mod builder;
mod certificates;
pub(crate) mod channel;
mod config;
mod connection;
mod forward;
mod known_hosts;
mod process;
mod proxy;
mod remote_line;
mod reverse_forwards;
pub(crate) mod sftp;
mod slots;
mod spill;
pub(crate) mod sudo;

use std::{
    ffi::OsStr,
    fmt,
    os::unix::ffi::OsStringExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::future::BoxFuture;

pub(crate) use self::builder::parse_destination;
pub(crate) use self::channel::ChannelSocket;
use self::connection::Connection;
pub use self::{
    builder::{SshBuilder, SshSettings},
    connection::HostKeyPolicy,
    forward::{ReverseTunnel, Tunnel},
};
use crate::{
    ArgValue, Command, Error, MachinePath, Result, Secret, Socket, TempDir, Transfer,
    command::Scope,
    files::FilesRef,
    machine::{Backend, MachineRef, Plan, Running},
    sudo::{Runas, SudoPassword},
};

/// A remote machine reached over SSH: the same calls as [`LocalMachine`](crate::LocalMachine).
///
/// Commands made by an `SshMachine` run on the remote host. A pipeline whose stages are all
/// on it runs as one remote `sh` command line (arguments quoted so each arrives byte for
/// byte), so its data flows between the remote processes. Redirect paths are remote paths.
///
/// Every command runs under the remote `/bin/sh`, **whatever the user's login shell** (bash,
/// dash, zsh, tcsh, fish...): sshd hands leadpipe's fixed exec string to the login shell,
/// which only starts `/bin/sh` (once the first command has shown that the login shell is
/// itself a POSIX shell — sh, dash, bash, ksh, mksh, ash — it reads the same POSIX line
/// directly, saving a process per command); the pipeline itself arrives on the channel's stdin, so
/// neither its words nor its environment values appear in the remote process list, and
/// the exec string stays far below what sshd accepts. The login shell's rc files still run
/// as sshd starts it (as with `ssh host cmd`).
///
/// The next command's shell is started ahead of need: while the machine is connected, one
/// session channel of it holds a shell that waits for a command line on stdin (visible in
/// the remote process list as the login shell running leadpipe's exec string). A command
/// that starts on it costs one round trip instead of two, and the login's rc files are
/// read before it is needed. Commands that need a pty, files, sudo and kills take channels
/// of their own. A waiting shell killed from outside is not used; in the moment between its
/// death and the client learning of it, a command can fail with an error saying nothing of
/// it ran. It ends (end of file) with the connection.
///
/// What no remote program could receive is refused before anything is sent, with an error
/// of kind [`InvalidInput`](std::io::ErrorKind::InvalidInput) naming the part: a NUL byte
/// in the program, an argument, an environment name or value, the directory or a redirect
/// path; an environment name that is empty or contains `=`; an argument or `NAME=value`
/// over 131 071 bytes (Linux's limit per argument), or a stage over 1 MiB in all. Names
/// that start with `-` are never read as options. The connection and other calls are not
/// affected.
///
/// Clones share the connection; [`with_cwd`](SshMachine::with_cwd) and
/// [`with_env`](SshMachine::with_env) return views, as on the local machine.
///
/// Differences from the local machine, each a property of running through a remote shell:
/// - the stages of a remote pipeline share one stderr stream, as they would in a terminal
///   on that host, so an error shows that stream whichever stage failed;
/// - a remote stage's status is what the shell saw, as bash's `PIPESTATUS` shows it: death
///   by signal N reads as the signal for N up to 31 (the shell's `$?` of 128 + N), so a
///   stage that exits with 130 reads as killed by SIGINT (a single command's status comes
///   from sshd and is exact);
/// - stdin that is not set is empty on the remote side even for `run()` (as `ssh -n`): feed
///   input with `<<` or [`Command::stdin`];
/// - `Child::id()` is `None`.
///
/// Timeouts, `kill()` and dropping a `Child` kill the remote pipeline's whole process
/// group, also for logins where sshd refuses `signal` requests (root).
///
/// When the connection dies (the TCP connection is cut, or the server stops answering
/// keepalives), every call in flight fails with [`Error::ConnectionLost`], and so does
/// every later call on this machine and its clones: it does not reconnect behind the
/// script's back (a half-done deployment step should not be retried silently). Check
/// [`is_closed`](SshMachine::is_closed) and connect again where retrying is safe.
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
    files: FilesRef,
    backend: MachineRef,
    /// The view's cwd, env and what it shows of its commands.
    pub(crate) scope: Scope,
    /// sudo's password, shared by this machine and the views made from it.
    sudo_password: Arc<SudoPassword>,
    /// The user this view runs everything as, through sudo.
    sudo_user: Option<String>,
}

impl SshMachine {
    /// Connects to `destination`, written as `ssh` takes it: `host`, `user@host`,
    /// `user@host:port` (`[::1]:2222` for IPv6), with everything else at the
    /// [`builder`](SshMachine::builder)'s defaults.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::HostKey`], [`Error::Auth`].
    pub async fn connect(destination: &str) -> Result<SshMachine> {
        SshBuilder::from_destination(destination, "the port is not a number")?
            .connect()
            .await
    }

    /// Settings for a connection to `host`, before connecting. `host` may be an alias of
    /// `~/.ssh/config`.
    pub fn builder(host: impl Into<String>) -> SshBuilder {
        SshBuilder::new(host.into())
    }

    /// A command that runs `program` on the remote machine (found on the remote `PATH`).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        Command::new(self.backend.clone(), &self.scope, program.as_ref())
    }

    /// Where the remote shell finds `program` (`command -v`), as a remote path.
    ///
    /// # Errors
    /// [`Error::CommandNotFound`] with the remote `PATH`.
    pub async fn which(&self, program: impl AsRef<OsStr>) -> Result<PathBuf> {
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
        let mut stdout = output.stdout;
        if output.status.success() {
            if stdout.last() == Some(&b'\n') {
                stdout.pop();
            }
            Ok(PathBuf::from(std::ffi::OsString::from_vec(stdout)))
        } else {
            Err(Error::CommandNotFound {
                program: program.as_ref().to_string_lossy().into_owned(),
                machine: self.connection.name.clone(),
                searched: String::from_utf8_lossy(&stdout).into_owned(),
            })
        }
    }

    /// A connection to `port` on the remote machine's loopback (`127.0.0.1`), over a
    /// `direct-tcpip` channel: reach a database, a Redis, an admin HTTP port that listens
    /// only there, with no port opened.
    ///
    /// # Errors
    /// [`Error::ChannelRefused`] naming the target and the server's reason (nothing
    /// listens there, or forwarding is not allowed), [`Error::ConnectionLost`].
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(remote: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// let mut redis = remote.connect_sock(6379).await?;
    /// redis.write_all(b"PING\r\n").await.unwrap();
    /// # Ok(()) }
    /// ```
    pub async fn connect_sock(&self, port: u16) -> Result<Socket> {
        forward::connect_tcp(&self.connection, "127.0.0.1", port).await
    }

    /// A connection to `host:port` as the remote machine resolves and reaches them.
    ///
    /// # Errors
    /// As [`connect_sock`](SshMachine::connect_sock).
    pub async fn connect_sock_to(&self, host: &str, port: u16) -> Result<Socket> {
        forward::connect_tcp(&self.connection, host, port).await
    }

    /// A connection to the Unix socket at `path` on the remote machine
    /// (`direct-streamlocal@openssh.com`, OpenSSH's Unix-socket forwarding): a
    /// `docker.sock`, a PostgreSQL socket.
    ///
    /// # Errors
    /// As [`connect_sock`](SshMachine::connect_sock).
    pub async fn connect_unix(&self, path: impl AsRef<Path>) -> Result<Socket> {
        let path = path.as_ref().to_string_lossy();
        forward::connect_unix(&self.connection, &path).await
    }

    /// Listens on `127.0.0.1:local_port` (0: any free port, see
    /// [`Tunnel::local_addr`]) and forwards each connection to `remote_port` on the remote
    /// machine's loopback, until the [`Tunnel`] is dropped: for clients that only know
    /// `host:port`.
    ///
    /// # Errors
    /// [`Error::Io`] when the local port cannot be bound.
    pub async fn tunnel(&self, local_port: u16, remote_port: u16) -> Result<Tunnel> {
        forward::tunnel(
            self.connection.clone(),
            local_port,
            "127.0.0.1".to_owned(),
            remote_port,
        )
        .await
    }

    /// Asks the remote machine to listen on its `127.0.0.1:remote_port` (0: a port it
    /// chooses, see [`ReverseTunnel::remote_port`]) and forwards each connection to
    /// `local` here, until the [`ReverseTunnel`] is dropped.
    ///
    /// # Errors
    /// [`Error::ChannelRefused`] when the server will not listen there.
    pub async fn reverse_tunnel(
        &self,
        remote_port: u16,
        local: std::net::SocketAddr,
    ) -> Result<ReverseTunnel> {
        forward::reverse_tunnel(self.connection.clone(), remote_port, local).await
    }

    /// A path on the remote machine; a relative one is taken in this view's directory
    /// ([`with_cwd`](SshMachine::with_cwd)), else in the login directory. Its file calls
    /// go over SFTP on a channel of this machine's connection (opened on first use, shared
    /// by every clone, holding one of the connection's channels from then on). See
    /// [`MachinePath`].
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// let release = web1.path("/srv/app/current").read_link().await?;
    /// # Ok(()) }
    /// ```
    pub fn path(&self, path: impl AsRef<Path>) -> MachinePath {
        let path = self.scope.resolve(path.as_ref());
        MachinePath::in_view(self.files.clone(), self.scope.cwd.as_deref(), path)
    }

    /// A new private (`0o700`) directory under the remote `/tmp`, removed with its contents
    /// when dropped (in the background) or [`close`](TempDir::close)d.
    ///
    /// # Errors
    /// [`Error::File`] when it cannot be created, [`Error::ConnectionLost`].
    pub async fn tempdir(&self) -> Result<TempDir> {
        TempDir::create(self.files.clone()).await
    }

    /// Copies a local file or tree to this machine, keeping permission bits, as
    /// [`copy`](crate::copy)`(&local().path(from), &self.path(to))`: into `to` when it is an
    /// existing directory, else as `to`. Await the [`Transfer`] for the bytes copied; call
    /// [`progress`](Transfer::progress) first to watch it.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// web1.upload("target/release/app", "/srv/app/bin/app")
    ///     .progress(|done, total| eprint!("\r{done} of {total} bytes"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn upload(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Transfer {
        crate::files::copy(&crate::local().path(from), &self.path(to))
    }

    /// Copies a file or tree from this machine to a local path, keeping permission bits:
    /// the mirror of [`upload`](SshMachine::upload).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// let bytes = web1.download("/var/log/app", "logs/web1").await?;
    /// println!("{bytes} bytes of logs");
    /// # Ok(()) }
    /// ```
    pub fn download(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Transfer {
        crate::files::copy(&self.path(from), &crate::local().path(to))
    }

    /// A view whose commands start in `dir` (a remote path, relative to this view's).
    pub fn with_cwd(&self, dir: impl AsRef<Path>) -> SshMachine {
        SshMachine {
            scope: self.scope.with_cwd(dir.as_ref()),
            ..self.clone()
        }
    }

    /// A view whose commands get `key=value` in their environment (the value may be a
    /// [`Secret`]; no environment value is in a remote command line).
    pub fn with_env(&self, key: impl AsRef<OsStr>, value: impl ArgValue) -> SshMachine {
        let (value, _) = value.into_value();
        SshMachine {
            scope: self.scope.with_env(key.as_ref(), Some(&value)),
            ..self.clone()
        }
    }

    /// A view whose commands print their command line to stderr before they run, as `+
    /// line` (`set -x`); see [`Command::echo`](crate::Command::echo).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let web1 = leadpipe::SshMachine::connect("deploy@web1").await?.echo(true);
    /// web1.cmd("systemctl").args(["restart", "app"]).run().await?; // + systemctl restart app
    /// # Ok(()) }
    /// ```
    pub fn echo(&self, echo: bool) -> SshMachine {
        SshMachine {
            scope: self.scope.with_echo(echo),
            ..self.clone()
        }
    }

    /// The directory this view's commands start in, when the view set one.
    pub fn get_cwd(&self) -> Option<&Path> {
        self.scope.cwd.as_deref()
    }

    /// A view on which every command **and every file operation** runs as root, through
    /// `sudo`: as [`sudo_as`](SshMachine::sudo_as)`("root")`.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// use leadpipe::Secret;
    /// let root = web1.sudo_password(Secret::new("s3cret")).sudo();
    /// root.path("/etc/app/app.toml").write("port = 8080\n").await?;
    /// root.cmd("systemctl").args(["restart", "app"]).run().await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo(&self) -> SshMachine {
        self.sudo_as("root")
    }

    /// A view on which every command and every file operation runs as `user`, through
    /// `sudo -u USER` (Ansible's `become`): commands, pipelines, [`which`](SshMachine::which),
    /// [`path`](SshMachine::path)'s reads, writes and modes, [`upload`](SshMachine::upload),
    /// [`download`](SshMachine::download), [`tempdir`](SshMachine::tempdir). Sockets and
    /// tunnels are the connection's, as before. The view's cwd and environment are kept.
    ///
    /// **The password** is the one given to
    /// [`SshBuilder::sudo_password`](crate::SshBuilder::sudo_password) (or
    /// [`sudo_password`](SshMachine::sudo_password) on a view), else
    /// [`SshBuilder::sudo_password_with`](crate::SshBuilder::sudo_password_with)'s callback,
    /// asked only when sudo asks, at most once per machine. It goes to sudo's stdin only,
    /// never echoed, never in any output, error or log. sudo runs with `-S` and a prompt of
    /// leadpipe's (`-p`), so a lecture or a customised prompt text changes nothing; a
    /// `NOPASSWD` rule just never asks.
    ///
    /// **How a command starts**: the channel runs `sudo -S -p PROMPT -u USER -- /bin/sh -c
    /// ...`; until that shell says it runs, leadpipe reads what sudo prints: at the prompt it
    /// sends the password; at a second prompt (the password was refused) it ends the
    /// channel and fails with [`Error::Sudo`] at once (about 2 s: PAM's delay after a
    /// failed password), never waiting for sudo's three tries. sudo exiting first, or
    /// printing nothing for 10 s, is an [`Error::Sudo`] too, with what sudo printed.
    /// `Defaults requiretty`: a start that sudo refuses without a terminal, before asking
    /// anything, is retried on a pty (and the view then always uses one): stdout and stderr
    /// then arrive as one stream, as with [`Command::pty`].
    ///
    /// **Files** go over SFTP to the server's `sftp-server` started by
    /// `sudo -u USER` in place of the `sftp` subsystem, found at
    /// `/usr/lib/openssh/sftp-server` (Debian, Ubuntu), `/usr/libexec/openssh/sftp-server`
    /// (Red Hat, SUSE), `/usr/lib/ssh/sftp-server` (Arch), `/usr/libexec/sftp-server`
    /// (BSDs, macOS), `/usr/lib/sftp-server` or `/usr/local/libexec/sftp-server`. Written
    /// files belong to `user` and keep the modes asked for.
    ///
    /// **What the server needs**: `sudo`; a sudoers rule letting the login run `/bin/sh`
    /// (commands) and `sftp-server` (files) as `user` (the usual `ALL` does); for files,
    /// no `requiretty` for that rule (`Defaults!/usr/lib/openssh/sftp-server !requiretty`),
    /// since the SFTP protocol cannot go through a terminal. The login's `kill` cannot
    /// reach another user's processes, so timeouts and dropped children kill through
    /// `sudo` too (with the password, when one was needed).
    ///
    /// sudo starts in the login's directory, as `sudo` typed in a shell does: relative
    /// paths of a view without [`with_cwd`](SshMachine::with_cwd) are taken there, which
    /// `user` may not be allowed to enter; give absolute paths or a directory.
    ///
    /// A `user` that is not a plain name or `#UID` is refused with [`Error::Sudo`] before
    /// anything is sent.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(db1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// let postgres = db1.sudo_as("postgres");
    /// let size = postgres.cmd("psql").args(["-tAc", "select pg_database_size('app')"]).read().await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo_as(&self, user: &str) -> SshMachine {
        self.view(Some(user.to_owned()), self.sudo_password.clone())
    }

    /// A view (and the sudo views made from it) whose sudo password is `password`. Clones
    /// share it; the machine it was made from keeps its own.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// use leadpipe::Secret;
    /// let root = web1.sudo_password(Secret::new("s3cret")).sudo();
    /// root.upload("dist/app.toml", "/etc/app/app.toml").await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo_password(&self, password: Secret) -> SshMachine {
        self.view(self.sudo_user.clone(), SudoPassword::given(password))
    }

    /// This machine as `user` (none: the login) with `password` for sudo.
    fn view(&self, user: Option<String>, password: Arc<SudoPassword>) -> SshMachine {
        let connection = self.connection.clone();
        let (backend, files): (MachineRef, FilesRef) = match &user {
            None => (
                Arc::new(SshBackend {
                    name: connection.name.clone(),
                    connection: connection.clone(),
                    runas: None,
                }),
                Arc::new(sftp::SftpFiles::new(connection.clone())),
            ),
            Some(user) => {
                let runas = Runas::new(user, password.clone());
                (
                    Arc::new(SshBackend {
                        name: runas.view_name(&connection.name),
                        connection: connection.clone(),
                        runas: Some(runas.clone()),
                    }),
                    Arc::new(sftp::SftpFiles::new_as(connection.clone(), Some(runas))),
                )
            }
        };
        SshMachine {
            connection,
            files,
            backend,
            scope: self.scope.clone(),
            sudo_password: password,
            sudo_user: user,
        }
    }

    /// How errors and logs name this machine: `user@host` as dialled (with `:port` when not
    /// 22), after the host the script wrote when that was another name, such as an
    /// ssh_config alias: `web1 (deploy@10.0.0.5)`.
    pub fn name(&self) -> &str {
        &self.connection.name
    }

    /// Whether the connection has ended (the server went away, or keepalives failed).
    pub fn is_closed(&self) -> bool {
        self.connection.is_closed()
    }
}

impl fmt::Debug for SshMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("SshMachine");
        debug
            .field("name", &self.connection.name)
            .field("cwd", &self.scope.cwd);
        if let Some(user) = &self.sudo_user {
            debug.field("sudo_user", user);
        }
        debug.finish_non_exhaustive()
    }
}

pub(crate) struct SshBackend {
    pub(crate) connection: Arc<Connection>,
    /// How errors name the machine: the connection's name, with the sudo user in a view.
    pub(crate) name: String,
    /// The user every command runs as, through sudo.
    pub(crate) runas: Option<Runas>,
}

impl Backend for SshBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, plan: Plan) -> BoxFuture<'_, Result<Box<dyn Running>>> {
        Box::pin(async move {
            let running =
                process::start(self.connection.clone(), plan, self.runas.as_ref()).await?;
            Ok(Box::new(running) as Box<dyn Running>)
        })
    }

    /// One remote shell runs the whole pipeline, and the channel has one stderr stream.
    fn shares_stderr(&self) -> bool {
        true
    }
}
