//! `LocalMachine`: this machine, its processes and its files.
//!
//! The API lives here; `process` starts a plan's processes (process groups, OS pipes,
//! `PATH` lookup, detached starts) and `files` reaches the file system with `std::fs`.

pub(crate) mod files;
mod process;
mod sudo;
#[cfg(feature = "ssh")]
mod sudo_files;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use self::{
    files::LOCAL_FILES,
    process::{LocalBackend, which},
};
use crate::{
    ArgValue, Command, Error, MachinePath, Result, Secret, Socket, TempDir, Transfer,
    command::Scope,
    files::FilesRef,
    machine::MachineRef,
    sudo::{Runas, SudoPassword},
};

/// This machine: commands run as child processes of this one.
///
/// `LocalMachine` is a cheap, cloneable value. [`with_cwd`](LocalMachine::with_cwd) and
/// [`with_env`](LocalMachine::with_env) return *views* whose commands start in another
/// directory or with more variables; the process's own directory and environment are
/// never changed, so concurrent tasks cannot step on each other.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::LocalMachine;
/// let sh = LocalMachine::new();
/// let repo = sh.with_cwd("/srv/app").with_env("GIT_PAGER", "");
/// let head = repo.cmd("git").args(["rev-parse", "HEAD"]).read().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LocalMachine {
    backend: MachineRef,
    /// The view's cwd, env and what it shows of its commands.
    pub(crate) scope: Scope,
    /// sudo's password, shared by this machine and the views made from it.
    sudo_password: Arc<SudoPassword>,
    /// The user this view's commands run as, through sudo.
    sudo_user: Option<String>,
    /// This view's files: `std::fs`, or SFTP through sudo as `sudo_user`.
    files: FilesRef,
}

/// Every `LocalMachine` shares one backend, so commands from different views (or from
/// separate `local()` calls) can join one pipeline.
static LOCAL: LazyLock<MachineRef> = LazyLock::new(|| Arc::new(LocalBackend));

impl Default for LocalMachine {
    fn default() -> LocalMachine {
        LocalMachine::new()
    }
}

impl LocalMachine {
    /// This machine, in this process's working directory and environment.
    pub fn new() -> LocalMachine {
        LocalMachine {
            backend: LOCAL.clone(),
            scope: Scope::default(),
            sudo_password: Arc::default(),
            sudo_user: None,
            files: LOCAL_FILES.clone(),
        }
    }

    /// A command that runs `program` here. Nothing runs until one of the command's calls.
    ///
    /// A `program` without a `/` is looked up on `PATH` (the command's own, if it sets
    /// one) when the command runs; one with a `/` is taken from the working directory.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        Command::new(self.backend.clone(), &self.scope, program.as_ref())
    }

    /// Where `program` would be found, as running it would look for it.
    ///
    /// # Errors
    /// [`Error::CommandNotFound`] naming the `PATH` searched.
    pub async fn which(&self, program: impl AsRef<OsStr>) -> Result<PathBuf> {
        let path = self
            .scope
            .env
            .iter()
            .rev()
            .find(|(key, _)| key == "PATH")
            .and_then(|(_, value)| value.clone());
        which(program.as_ref(), path.as_deref(), self.scope.cwd.as_deref())
    }

    /// A view of this machine whose commands start in `dir` (relative to this view's
    /// directory, as `cd` would). The process's own directory is not changed.
    #[doc(alias = "pushd")]
    #[doc(alias = "cd")]
    pub fn with_cwd(&self, dir: impl AsRef<Path>) -> LocalMachine {
        LocalMachine {
            scope: self.scope.with_cwd(dir.as_ref()),
            ..self.clone()
        }
    }

    /// A view of this machine whose commands get `key=value` in their environment (the
    /// value may be a [`Secret`](crate::Secret)). The process's own environment is not
    /// changed.
    #[doc(alias = "pushenv")]
    pub fn with_env(&self, key: impl AsRef<OsStr>, value: impl ArgValue) -> LocalMachine {
        let (value, _) = value.into_value();
        LocalMachine {
            scope: self.scope.with_env(key.as_ref(), Some(&value)),
            ..self.clone()
        }
    }

    /// A view whose commands print their command line to stderr before they run, as `+
    /// line` (`set -x`); see [`Command::echo`].
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let sh = leadpipe::local().echo(true);
    /// sh.cmd("make").arg("release").run().await?; // + make release
    /// # Ok(()) }
    /// ```
    pub fn echo(&self, echo: bool) -> LocalMachine {
        LocalMachine {
            scope: self.scope.with_echo(echo),
            ..self.clone()
        }
    }

    /// The directory this view's commands start in, when the view set one.
    pub fn get_cwd(&self) -> Option<&Path> {
        self.scope.cwd.as_deref()
    }

    /// A view whose commands and file operations run as root through `sudo`: as
    /// [`sudo_as`](LocalMachine::sudo_as)`("root")`.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let root = leadpipe::local().sudo();
    /// root.path("/etc/app.conf").write("level = info\n").await?;   // written as root
    /// root.cmd("systemctl").args(["reload", "app"]).run().await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo(&self) -> LocalMachine {
        self.sudo_as("root")
    }

    /// A view whose commands and file operations run as `user`; each stage of a command
    /// as `sudo -n -u USER -- PROGRAM ARGS` (stages still joined by OS pipes, without a
    /// shell). With a password
    /// ([`sudo_password`](LocalMachine::sudo_password)), the view's first command first
    /// runs `sudo -S -v` with it, counting prompts as on an SSH machine (a refused password
    /// is [`Error::Sudo`]); sudo's credential cache then serves the stages, which never
    /// prompt. Without one, sudo must not need a password (root, `NOPASSWD`, a cache).
    ///
    /// **Files**: the view's file operations ([`path`](LocalMachine::path) reads, writes,
    /// `mkdir`, `chmod`, metadata, [`tempdir`](LocalMachine::tempdir),
    /// [`upload`](LocalMachine::upload)/[`download`](LocalMachine::download) and every
    /// transfer to or from its paths) run as `user` too, as on an SSH machine: over SFTP to
    /// a local `sftp-server` (OpenSSH's, at `/usr/lib/openssh/sftp-server`,
    /// `/usr/libexec/openssh/sftp-server`, `/usr/lib/ssh/sftp-server`,
    /// `/usr/libexec/sftp-server`, `/usr/lib/sftp-server` or
    /// `/usr/local/libexec/sftp-server`) started as `sudo -S -p PROMPT -u USER -- /bin/sh
    /// -c ...`, without a terminal, on first use. Its password is handled as a command's
    /// (written once to sudo's stdin at leadpipe's prompt; a second prompt is
    /// [`Error::Sudo`]'s reason in the file error). Written files belong to `user` and keep
    /// the modes asked for; a directory `user` may not write into refuses, as it would
    /// refuse `user`. One `sftp-server` serves the view and every path and temp dir made
    /// from it; it ends, and is reaped, when the last of them is dropped. A temp dir of
    /// the view is made in `/tmp` (not `$TMPDIR`, which may be this user's own). Needed:
    /// `sftp-server` (Debian: `openssh-sftp-server`), and a sudoers rule letting this
    /// process's user run `/bin/sh` as `user` without `requiretty` (the usual `ALL`
    /// does). Without the `ssh` feature (which brings the SFTP client), file operations
    /// of a sudo view run as this process's user.
    ///
    /// Differences from an SSH machine's [`sudo_as`](crate::SshMachine::sudo_as):
    /// - the program is looked up by sudo (its `secure_path`): one it cannot find is sudo's
    ///   exit 1 ([`Error::Exit`]), not [`Error::CommandNotFound`];
    /// - variables the command sets reach it through `--preserve-env=NAMES`, which sudo
    ///   allows root and rules with `SETENV`; `env_clear` leaves sudo's reset environment.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let me = leadpipe::local().sudo_as("nobody").cmd("id").arg("-un").read().await?;
    /// assert_eq!(me, "nobody");
    /// // Written by root, in a directory only root may write into.
    /// leadpipe::local().sudo().path("/etc/app.conf").write("port = 8080\n").await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo_as(&self, user: &str) -> LocalMachine {
        self.view(Some(user.to_owned()), self.sudo_password.clone())
    }

    /// A view (and the sudo views made from it) whose sudo password is `password`.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::Secret;
    /// let password = Secret::new(std::env::var("SUDO_PASSWORD").unwrap_or_default());
    /// let root = leadpipe::local().sudo_password(password).sudo();
    /// root.cmd("apt-get").arg("update").run().await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo_password(&self, password: Secret) -> LocalMachine {
        self.view(self.sudo_user.clone(), SudoPassword::given(password))
    }

    /// A view (and the sudo views made from it) that asks `ask` for sudo's password the
    /// first time one is needed, and reuses the answer. Called on a blocking thread, so it
    /// may read a terminal; `None`: there is none.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::Secret;
    /// // Asked once, with the machine's name.
    /// let local = leadpipe::local().sudo_password_with(|machine| {
    ///     eprint!("sudo password for {machine}: ");
    ///     let mut line = String::new();
    ///     std::io::stdin().read_line(&mut line).ok()?;
    ///     Some(Secret::new(line.trim_end()))
    /// });
    /// local.sudo().cmd("id").run().await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo_password_with(
        &self,
        ask: impl Fn(&str) -> Option<Secret> + Send + Sync + 'static,
    ) -> LocalMachine {
        self.view(
            self.sudo_user.clone(),
            SudoPassword::asked(std::sync::Arc::new(ask)),
        )
    }

    fn view(&self, user: Option<String>, password: Arc<SudoPassword>) -> LocalMachine {
        let (backend, files): (MachineRef, FilesRef) = match &user {
            None => (LOCAL.clone(), LOCAL_FILES.clone()),
            Some(user) => {
                let runas = Runas::new(user, password.clone());
                #[cfg(feature = "ssh")]
                let files = sudo_files::files(runas.clone());
                #[cfg(not(feature = "ssh"))]
                let files = LOCAL_FILES.clone();
                (Arc::new(sudo::SudoBackend::new(runas)), files)
            }
        };
        LocalMachine {
            backend,
            scope: self.scope.clone(),
            sudo_password: password,
            sudo_user: user,
            files,
        }
    }

    /// `local`: how errors and logs name this machine, as
    /// [`SshMachine::name`](crate::SshMachine::name) names a remote one.
    pub fn name(&self) -> &str {
        self.backend.name()
    }

    /// A path on this machine; a relative one is taken in this view's directory
    /// ([`with_cwd`](LocalMachine::with_cwd)), else in the process's. See [`MachinePath`]
    /// for what it can do.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let sh = leadpipe::local();
    /// let version = sh.path("Cargo.toml").read_to_string().await?;
    /// # Ok(()) }
    /// ```
    pub fn path(&self, path: impl AsRef<Path>) -> MachinePath {
        let path = self.scope.resolve(path.as_ref());
        MachinePath::in_view(self.files.clone(), self.scope.cwd.as_deref(), path)
    }

    /// A new private directory under `$TMPDIR`, removed with its contents when dropped.
    ///
    /// # Errors
    /// [`Error::File`] when the directory cannot be created.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let sh = leadpipe::local();
    /// let build = sh.tempdir().await?;
    /// sh.cmd("git").args(["clone", "--depth=1", "https://example.com/app.git"]).arg(&*build)
    ///     .run()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn tempdir(&self) -> Result<TempDir> {
        TempDir::create(self.files.clone()).await
    }

    /// Copies a file or tree to this machine, with the meaning of
    /// [`SshMachine::upload`](crate::SshMachine::upload), so a script can be pointed at
    /// either machine: `from` is taken in this process's directory (as
    /// [`local()`](crate::local)`.path(from)`), `to` in this view's
    /// ([`path`](LocalMachine::path)). See [`copy`](crate::copy) for the rules.
    pub fn upload(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Transfer {
        crate::files::copy(&local().path(from), &self.path(to))
    }

    /// Copies a file or tree from this machine, with the meaning of
    /// [`SshMachine::download`](crate::SshMachine::download): `from` is taken in this
    /// view's directory, `to` in this process's. The mirror of
    /// [`upload`](LocalMachine::upload).
    pub fn download(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Transfer {
        crate::files::copy(&self.path(from), &local().path(to))
    }

    /// A TCP connection to `port` on this machine's loopback: the same call as
    /// [`SshMachine::connect_sock`](crate::SshMachine::connect_sock), so code that talks
    /// to "the service on that machine" is written once.
    ///
    /// # Errors
    /// [`Error::Io`] naming the address.
    pub async fn connect_sock(&self, port: u16) -> Result<Socket> {
        self.connect_sock_to("127.0.0.1", port).await
    }

    /// A TCP connection to `host:port`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the address.
    pub async fn connect_sock_to(&self, host: &str, port: u16) -> Result<Socket> {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| Error::io(format!("cannot connect to {host}:{port} on local"), e))?;
        let _ = stream.set_nodelay(true);
        Ok(Socket::tcp(stream))
    }

    /// A connection to the Unix socket at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub async fn connect_unix(&self, path: impl AsRef<Path>) -> Result<Socket> {
        let path = path.as_ref();
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| Error::io(format!("cannot connect to {} on local", path.display()), e))?;
        Ok(Socket::unix(stream))
    }
}

impl std::fmt::Debug for LocalMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("LocalMachine");
        debug.field("cwd", &self.scope.cwd);
        if let Some(user) = &self.sudo_user {
            debug.field("sudo_user", user);
        }
        debug.finish_non_exhaustive()
    }
}

/// This machine, [`LocalMachine::new`].
pub fn local() -> LocalMachine {
    LocalMachine::new()
}
