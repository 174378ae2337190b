//! `Machine`: the calls [`LocalMachine`] and [`SshMachine`] share, as one public trait, so
//! a script is written once for any machine.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    future::Future,
    path::{Path, PathBuf},
};

#[cfg(feature = "ssh")]
use crate::SshMachine;
use crate::{ArgValue, Command, LocalMachine, MachinePath, Result, Socket, TempDir, Transfer};

/// A machine commands run on: [`LocalMachine`] or [`SshMachine`].
///
/// Every method means the same on both machines, so code written against `impl Machine`
/// (or `M: Machine`) runs wherever it is pointed: a deployment step tried locally, then
/// run on every host. Each method is the machine's own inherent method of the same name,
/// whose documentation gives the details and errors; the trait adds nothing else.
///
/// The trait is sealed: only leadpipe's machines implement it, so methods can be added
/// without breaking anyone.
///
/// # Async methods
///
/// The async methods are written `fn ... -> impl Future<Output = ...> + Send` rather than
/// `async fn`: their futures are `Send` whatever the caller's machine type, so generic code
/// can hand them to `tokio::spawn`. The trait is not object-safe (it has generic
/// arguments, returns `Self` from [`with_cwd`](Machine::with_cwd), and its futures are not
/// boxed, so a call costs no allocation); code that holds several machines holds them as
/// one type parameter (`Vec<M>`), or as an enum of its own for a mix.
///
/// # Example
/// ```no_run
/// use leadpipe::prelude::*;
///
/// /// One deployment step, for any machine.
/// async fn deploy(m: &impl Machine, release: &str) -> leadpipe::Result<()> {
///     let app = m.with_cwd("/srv/app").with_env("RELEASE", release);
///     app.path("releases").mkdir().await?;
///     app.cmd("tar").args(["-xzf", "release.tar.gz", "-C", "releases"]).run().await?;
///     println!("deployed {release} on {}", m.name());
///     Ok(())
/// }
///
/// /// The same step on several machines at once: the futures are `Send`.
/// async fn deploy_all<M: Machine>(machines: Vec<M>) -> leadpipe::Result<()> {
///     let mut tasks = tokio::task::JoinSet::new();
///     for m in machines {
///         tasks.spawn(async move { deploy(&m, "v42").await });
///     }
///     while let Some(done) = tasks.join_next().await {
///         done.expect("the task ran")?;
///     }
///     Ok(())
/// }
///
/// # async fn demo() -> leadpipe::Result<()> {
/// deploy(&local(), "v42").await?;
/// let web1 = SshMachine::connect("deploy@web1").await?;
/// deploy(&web1, "v42").await?;
/// deploy_all(vec![web1.clone(), SshMachine::connect("deploy@web2").await?]).await?;
/// # Ok(()) }
/// ```
pub trait Machine: Clone + fmt::Debug + Send + Sync + 'static + sealed::Sealed {
    /// How errors and logs name this machine: `local`, `deploy@web1`.
    fn name(&self) -> &str;

    /// A command that runs `program` on this machine. Nothing runs until one of the
    /// command's calls.
    fn cmd(&self, program: impl AsRef<OsStr>) -> Command;

    /// Where `program` would be found on this machine, as running it would look for it.
    ///
    /// # Errors
    /// [`Error::CommandNotFound`](crate::Error::CommandNotFound) naming the `PATH` searched.
    fn which(&self, program: impl AsRef<OsStr>) -> impl Future<Output = Result<PathBuf>> + Send;

    /// A view of this machine whose commands and relative paths start in `dir` (relative to
    /// this view's directory, as `cd` would). Nothing global changes.
    fn with_cwd(&self, dir: impl AsRef<Path>) -> Self;

    /// A view of this machine whose commands get `key=value` in their environment.
    fn with_env(&self, key: impl AsRef<OsStr>, value: impl ArgValue) -> Self;

    /// A view on which commands (and, on an SSH machine, file operations) run as root
    /// through `sudo`.
    fn sudo(&self) -> Self;

    /// A view on which commands (and, on an SSH machine, file operations) run as `user`
    /// through `sudo`.
    fn sudo_as(&self, user: &str) -> Self;

    /// A view whose commands print their command line to stderr before they run (`+
    /// line`, as `set -x`); see [`Command::echo`].
    fn echo(&self, echo: bool) -> Self;

    /// The directory this view's commands start in, when the view set one.
    fn get_cwd(&self) -> Option<&Path>;

    /// A path on this machine, a relative one taken in this view's directory.
    fn path(&self, path: impl AsRef<Path>) -> MachinePath;

    /// A new private directory on this machine, removed with its contents when dropped.
    ///
    /// # Errors
    /// [`Error::File`](crate::Error::File) when it cannot be created.
    fn tempdir(&self) -> impl Future<Output = Result<TempDir>> + Send;

    /// Copies a file or tree from this process's machine (`from`, relative to this
    /// process's directory) to this machine (`to`, in this view); see [`copy`](crate::copy).
    fn upload(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Transfer;

    /// Copies a file or tree from this machine (`from`, in this view) to this process's
    /// machine (`to`, relative to this process's directory): the mirror of
    /// [`upload`](Machine::upload).
    fn download(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Transfer;

    /// A TCP connection to `port` on this machine's loopback (`127.0.0.1`).
    ///
    /// # Errors
    /// When nothing accepts the connection there: see the machine's own method.
    fn connect_sock(&self, port: u16) -> impl Future<Output = Result<Socket>> + Send;

    /// A TCP connection to `host:port` as this machine resolves and reaches them.
    ///
    /// # Errors
    /// As [`connect_sock`](Machine::connect_sock).
    fn connect_sock_to(&self, host: &str, port: u16)
    -> impl Future<Output = Result<Socket>> + Send;

    /// A connection to the Unix socket at `path` on this machine.
    ///
    /// # Errors
    /// As [`connect_sock`](Machine::connect_sock).
    fn connect_unix(&self, path: impl AsRef<Path>) -> impl Future<Output = Result<Socket>> + Send;
}

pub(crate) mod sealed {
    use crate::observe::Observe;

    /// Only leadpipe's machines implement [`Machine`](super::Machine); what the crate
    /// itself needs of every machine, out of the public API.
    pub trait Sealed {
        /// A view whose commands are observed as `change` says (a fleet's prefix and log).
        fn observed(&self, change: &dyn Fn(&mut Observe)) -> Self;
    }
}

/// Implements [`Machine`] for a machine type by calling its inherent methods of the same
/// names: both machines do it alike, so it is written once.
///
/// The futures own what they need (the arguments are converted before the `async` block),
/// so they are `Send` whatever argument types the caller passes.
macro_rules! machine_by_inherent_methods {
    ($machine:ty) => {
        impl sealed::Sealed for $machine {
            fn observed(&self, change: &dyn Fn(&mut crate::observe::Observe)) -> Self {
                let mut view = self.clone();
                change(&mut view.scope.observe);
                view
            }
        }

        impl Machine for $machine {
            fn name(&self) -> &str {
                <$machine>::name(self)
            }

            fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
                <$machine>::cmd(self, program)
            }

            fn which(
                &self,
                program: impl AsRef<OsStr>,
            ) -> impl Future<Output = Result<PathBuf>> + Send {
                let program: OsString = program.as_ref().to_owned();
                async move { <$machine>::which(self, program).await }
            }

            fn with_cwd(&self, dir: impl AsRef<Path>) -> Self {
                <$machine>::with_cwd(self, dir)
            }

            fn with_env(&self, key: impl AsRef<OsStr>, value: impl ArgValue) -> Self {
                <$machine>::with_env(self, key, value)
            }

            fn sudo(&self) -> Self {
                <$machine>::sudo(self)
            }

            fn sudo_as(&self, user: &str) -> Self {
                <$machine>::sudo_as(self, user)
            }

            fn echo(&self, echo: bool) -> Self {
                <$machine>::echo(self, echo)
            }

            fn get_cwd(&self) -> Option<&Path> {
                <$machine>::get_cwd(self)
            }

            fn path(&self, path: impl AsRef<Path>) -> MachinePath {
                <$machine>::path(self, path)
            }

            fn tempdir(&self) -> impl Future<Output = Result<TempDir>> + Send {
                <$machine>::tempdir(self)
            }

            fn upload(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Transfer {
                <$machine>::upload(self, from, to)
            }

            fn download(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Transfer {
                <$machine>::download(self, from, to)
            }

            fn connect_sock(&self, port: u16) -> impl Future<Output = Result<Socket>> + Send {
                <$machine>::connect_sock(self, port)
            }

            fn connect_sock_to(
                &self,
                host: &str,
                port: u16,
            ) -> impl Future<Output = Result<Socket>> + Send {
                let host = host.to_owned();
                async move { <$machine>::connect_sock_to(self, &host, port).await }
            }

            fn connect_unix(
                &self,
                path: impl AsRef<Path>,
            ) -> impl Future<Output = Result<Socket>> + Send {
                let path: PathBuf = path.as_ref().to_owned();
                async move { <$machine>::connect_unix(self, path).await }
            }
        }
    };
}

machine_by_inherent_methods!(LocalMachine);
#[cfg(feature = "ssh")]
machine_by_inherent_methods!(SshMachine);
