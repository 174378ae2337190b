//! `TempDir`: a directory on any machine that is removed when dropped.

use std::{fmt, future::Future, io, ops::Deref};

use super::{FilesRef, MachinePath, file_error, path::unique_suffix};
use crate::{
    Result,
    lifecycle::{Kind, Registration},
};

/// A new, private (`0o700`) directory on a machine, removed with everything in it when
/// dropped; from [`LocalMachine::tempdir`](crate::LocalMachine::tempdir) or
/// [`SshMachine::tempdir`](crate::SshMachine::tempdir).
///
/// It dereferences to its [`MachinePath`], so `dir.join("x")`, `dir / "x"` and
/// `cmd.arg(&*dir)` work. Locally it is a [`tempfile::TempDir`] (under `$TMPDIR`),
/// removed on drop before `drop` returns. Remotely it is created over SFTP under `/tmp` as
/// `mktemp -d` would (the remote `$TMPDIR` is not visible to SFTP); dropping it starts the
/// removal in the background, on the SSH connection, which it keeps open until done (a
/// script that ends right after waits for it, at most two seconds). Call
/// [`close`](TempDir::close) to remove it and know it went; [`keep`](TempDir::keep) to
/// keep it. One still alive when the script gets SIGINT, SIGTERM or SIGHUP, or calls
/// `std::process::exit`, is removed too, on either machine (see
/// [`signals`](crate::signals)).
///
/// # Example
/// ```no_run
/// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
/// let work = web1.tempdir().await?;
/// web1.upload("target/release/app", work.join("app")).await?;
/// web1.cmd(work.join("app")).arg("--self-test").run().await?;
/// work.close().await?;
/// # Ok(()) }
/// ```
pub struct TempDir {
    path: MachinePath,
    local: Option<tempfile::TempDir>,
    armed: bool,
    /// Listed while armed, so that a signal or `std::process::exit` removes it too.
    live: Option<Registration>,
}

impl TempDir {
    pub(crate) async fn create(files: FilesRef) -> Result<TempDir> {
        if files.is_local() {
            let local = tempfile::Builder::new()
                .prefix("leadpipe-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()
                .map_err(|e| file_error(&*files, "create", &std::env::temp_dir(), e))?;
            let path = MachinePath::new(files, local.path().to_owned());
            let live = register_dir(&path);
            return Ok(TempDir {
                path,
                local: Some(local),
                armed: true,
                live: Some(live),
            });
        }
        let mut attempts = 0;
        loop {
            let path = std::path::PathBuf::from(format!("/tmp/leadpipe-{}", unique_suffix()));
            match files.mkdir(&path, 0o700).await {
                Ok(()) => {
                    let path = MachinePath::new(files, path);
                    let live = register_dir(&path);
                    return Ok(TempDir {
                        path,
                        local: None,
                        armed: true,
                        live: Some(live),
                    });
                }
                // A name taken (SFTP reports it as a generic failure): try another.
                Err(e) if attempts < 8 && e.kind() != io::ErrorKind::PermissionDenied => {
                    if files.gone().is_some() {
                        return Err(file_error(&*files, "create", &path, e));
                    }
                    attempts += 1;
                }
                Err(e) => return Err(file_error(&*files, "create", &path, e)),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &MachinePath {
        &self.path
    }

    /// Removes the directory and its contents now.
    ///
    /// # Errors
    /// [`Error::File`](crate::Error::File) naming what could not be removed,
    /// [`Error::ConnectionLost`](crate::Error::ConnectionLost).
    pub async fn close(mut self) -> Result<()> {
        self.armed = false;
        self.live = None;
        match self.local.take() {
            Some(local) => local
                .close()
                .map_err(|e| file_error(self.path.files(), "remove", self.path.as_path(), e)),
            None => self.path.remove_all().await,
        }
    }

    /// Keeps the directory: it is no longer removed. Returns its path.
    pub fn keep(mut self) -> MachinePath {
        self.armed = false;
        self.live = None;
        if let Some(local) = self.local.take() {
            let _ = local.keep();
        }
        self.path.clone()
    }
}

/// Lists a new temp dir for `lifecycle::stop_all`: a local one is removed in the call, a
/// remote one over its connection.
fn register_dir(path: &MachinePath) -> Registration {
    let path = path.clone();
    crate::lifecycle::register(Kind::Dir, move || {
        if path.files().is_local() {
            let _ = std::fs::remove_dir_all(path.as_path());
            return Box::pin(async {});
        }
        let path = path.clone();
        Box::pin(async move {
            let _ = path.remove_all().await;
        })
    })
}

impl Deref for TempDir {
    type Target = MachinePath;

    fn deref(&self) -> &MachinePath {
        &self.path
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        self.path.as_path()
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_path().as_os_str()
    }
}

impl fmt::Debug for TempDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TempDir").field(&self.path).finish()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A local directory goes with `self.local`'s own drop.
        if self.armed && self.local.is_none() {
            let path = self.path.clone();
            spawn_cleanup(async move {
                if let Err(error) = path.remove_all().await {
                    tracing::debug!(%error, "removing a dropped remote TempDir");
                }
            });
        }
    }
}

/// Runs a cleanup that a `Drop` cannot await, on leadpipe's own runtime: it reaches the
/// other side whatever becomes of the caller's runtime (see `lifecycle`).
pub(crate) fn spawn_cleanup(cleanup: impl Future<Output = ()> + Send + 'static) {
    crate::lifecycle::cleanup(cleanup);
}
