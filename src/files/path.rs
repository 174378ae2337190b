//! `MachinePath`: a path together with the machine it names a file on.

use std::{
    ffi::OsStr,
    fmt, io,
    ops::Div,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::{TryStreamExt, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    FileError, FileKind, Files, FilesRef, Metadata, WriteMode, file_error, glob,
    replace::Replacement, transfer,
};
use crate::{Error, Result};

/// How many operations a tree walk (`remove_all`, listings for `glob`) keeps in flight:
/// over SFTP each is a round trip, and the server answers them in order.
pub(crate) const TREE_CONCURRENCY: usize = 16;

/// A path on a particular machine, from [`LocalMachine::path`](crate::LocalMachine::path)
/// or [`SshMachine::path`](crate::SshMachine::path).
///
/// Building and joining paths is pure (`/`, [`join`](MachinePath::join),
/// [`parent`](MachinePath::parent), ...); the async methods act on the file it names, on its
/// machine: through `std::fs` locally, through SFTP on a channel of the SSH connection
/// remotely. Every failure is an [`Error::File`] naming the operation, the machine and the
/// path (`cannot read deploy@web1:/etc/app.conf: no such file or directory`), or
/// [`Error::ConnectionLost`] when the SSH connection died.
///
/// A `MachinePath` is also a command argument (`AsRef<OsStr>`): passed to a command of its
/// own machine, it arrives as one argument, byte for byte, whatever it contains.
///
/// Remote paths must be UTF-8 (SFTP names are strings here); a remote name that is not
/// fails with `InvalidData`. A relative path is relative to the machine view's directory
/// ([`with_cwd`](crate::SshMachine::with_cwd)), else to where the machine starts: this
/// process's directory locally, the login directory remotely.
///
/// # Example
/// ```no_run
/// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
/// let conf = web1.path("/etc/app") / "app.conf";
/// let old = conf.read_to_string().await?;
/// conf.write(old.replace("workers = 2", "workers = 8")).await?; // atomic replace
/// web1.cmd("systemctl").args(["reload", "app"]).run().await?;
/// for log in web1.path("/var/log/app").glob("*.log").await? {
///     println!("{log}: {} bytes", log.metadata().await?.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MachinePath {
    files: FilesRef,
    path: PathBuf,
    /// The directory of the machine view the path came from (`with_cwd`), against which a
    /// relative destination of `rename` or `copy_to` is resolved; `None`: where the
    /// machine starts.
    cwd: Option<Arc<Path>>,
}

impl MachinePath {
    /// A path of a view with no directory of its own (relative paths are relative to where
    /// the machine starts).
    pub(crate) fn new(files: FilesRef, path: PathBuf) -> MachinePath {
        MachinePath {
            files,
            path,
            cwd: None,
        }
    }

    /// A path of a machine view whose directory is `cwd` (`path` already resolved
    /// against it).
    pub(crate) fn in_view(files: FilesRef, cwd: Option<&Path>, path: PathBuf) -> MachinePath {
        MachinePath {
            files,
            path,
            cwd: cwd.map(Arc::from),
        }
    }

    pub(crate) fn files(&self) -> &dyn Files {
        &*self.files
    }

    pub(crate) fn files_ref(&self) -> &FilesRef {
        &self.files
    }

    /// A path on the same machine, of the same view.
    pub(crate) fn sibling_path(&self, path: PathBuf) -> MachinePath {
        MachinePath {
            files: self.files.clone(),
            path,
            cwd: self.cwd.clone(),
        }
    }

    fn fail(&self, op: &'static str, error: io::Error) -> Error {
        file_error(&*self.files, op, &self.path, error)
    }

    /// The path itself, as the machine sees it.
    pub fn as_path(&self) -> &Path {
        &self.path
    }

    /// How errors name the machine (`local`, `deploy@web1`).
    pub fn machine(&self) -> &str {
        self.files.machine()
    }

    /// Whether the path is on the same machine as `other` (the same connection, for SSH).
    pub fn same_machine(&self, other: &MachinePath) -> bool {
        std::ptr::addr_eq(
            std::sync::Arc::as_ptr(&self.files),
            std::sync::Arc::as_ptr(&other.files),
        )
    }

    /// `self/child`, as [`Path::join`]: an absolute `child` replaces the path.
    pub fn join(&self, child: impl AsRef<Path>) -> MachinePath {
        self.sibling_path(self.path.join(child))
    }

    /// The path without its last component; `None` for `/` and for an empty path.
    pub fn parent(&self) -> Option<MachinePath> {
        let parent = self.path.parent()?;
        Some(self.sibling_path(parent.to_owned()))
    }

    /// The last component, unless it is `..`.
    pub fn file_name(&self) -> Option<&OsStr> {
        self.path.file_name()
    }

    /// The extension of the file name (after its last `.`), as [`Path::extension`].
    pub fn extension(&self) -> Option<&OsStr> {
        self.path.extension()
    }

    /// The path with its extension replaced (or added, or removed for an empty one).
    pub fn with_extension(&self, extension: impl AsRef<OsStr>) -> MachinePath {
        self.sibling_path(self.path.with_extension(extension))
    }

    /// The path with its file name replaced.
    pub fn with_file_name(&self, name: impl AsRef<OsStr>) -> MachinePath {
        self.sibling_path(self.path.with_file_name(name))
    }

    /// `to` as the machine view this path came from resolves it: a relative path against
    /// the view's directory ([`with_cwd`](crate::SshMachine::with_cwd)), else against where
    /// the machine starts, as a shell in that directory would.
    fn in_same_view(&self, to: &Path) -> MachinePath {
        match &self.cwd {
            Some(cwd) => self.sibling_path(cwd.join(to)),
            None => self.sibling_path(to.to_owned()),
        }
    }

    /// Whether something exists at the path (a symlink counts only if its target exists).
    ///
    /// # Errors
    /// Failures other than "not found" ([`Error::File`]: permission denied on a parent,
    /// a lost connection).
    pub async fn exists(&self) -> Result<bool> {
        Ok(self.kind().await?.is_some())
    }

    /// Whether the path is a regular file (following symlinks); `false` when it does not
    /// exist.
    ///
    /// # Errors
    /// As [`exists`](MachinePath::exists).
    pub async fn is_file(&self) -> Result<bool> {
        Ok(self.kind().await? == Some(FileKind::File))
    }

    /// Whether the path is a directory (following symlinks); `false` when it does not
    /// exist.
    ///
    /// # Errors
    /// As [`exists`](MachinePath::exists).
    pub async fn is_dir(&self) -> Result<bool> {
        Ok(self.kind().await? == Some(FileKind::Dir))
    }

    async fn kind(&self) -> Result<Option<FileKind>> {
        match self.files.metadata(&self.path, true).await {
            Ok(meta) => Ok(Some(meta.kind)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail("check", e)),
        }
    }

    /// Size, permissions, modification time and kind, following a final symlink.
    ///
    /// # Errors
    /// [`Error::File`] (not found, permission denied), [`Error::ConnectionLost`].
    pub async fn metadata(&self) -> Result<Metadata> {
        (self.files.metadata(&self.path, true).await).map_err(|e| self.fail("stat", e))
    }

    /// The metadata of the path itself, not of what a symlink points to.
    ///
    /// # Errors
    /// As [`metadata`](MachinePath::metadata).
    pub async fn symlink_metadata(&self) -> Result<Metadata> {
        (self.files.metadata(&self.path, false).await).map_err(|e| self.fail("stat", e))
    }

    /// The whole file.
    ///
    /// # Errors
    /// [`Error::File`] (not found, a directory, permission denied), [`Error::ConnectionLost`].
    pub async fn read(&self) -> Result<Vec<u8>> {
        let read = async {
            let mut file = self.files.open_read(&self.path, None).await?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).await?;
            Ok(bytes)
        };
        read.await.map_err(|e| self.fail("read", e))
    }

    /// The whole file as text.
    ///
    /// # Errors
    /// As [`read`](MachinePath::read); a file that is not UTF-8 is an [`Error::File`] of
    /// kind `InvalidData`.
    pub async fn read_to_string(&self) -> Result<String> {
        let bytes = self.read().await?;
        String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            self.fail(
                "read",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not UTF-8 (invalid byte at offset {offset}); use read() for bytes"),
                ),
            )
        })
    }

    /// Replaces the file's content with `content`, atomically: the bytes go to a temporary
    /// file beside it (`.NAME.leadpipe-UNIQUE.tmp`), which is then renamed over the path.
    /// Readers see the old content or the new, never a part; an interrupted write (an
    /// error, a lost connection, the future dropped) leaves the old file as it was, and the
    /// temporary file is removed (by a later transfer into the directory when the
    /// connection was cut: see [`copy`](crate::copy)). An existing file's permission bits
    /// are kept; a new file gets the machine's default (`0o666` less the umask).
    ///
    /// Over SFTP the rename is OpenSSH's `posix-rename@openssh.com`; a server without it
    /// gets a plain rename after removing the old file (a short window with no file).
    ///
    /// # Errors
    /// [`Error::File`] (the directory does not exist or is not writable, the disk is full),
    /// [`Error::ConnectionLost`].
    pub async fn write(&self, content: impl AsRef<[u8]>) -> Result<()> {
        let content = content.as_ref();
        let mut replacement =
            Replacement::new(self.files.clone(), &self.path).map_err(|e| self.fail("write", e))?;
        let mode = match self.files.metadata(&self.path, true).await {
            Ok(meta) => Some(meta.mode),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.fail("write", e)),
        };
        let written = async {
            let mut file = replacement.open(mode).await?;
            file.write_all(content).await?;
            file.shutdown().await
        }
        .await;
        let done = match written {
            Ok(()) => replacement.commit(mode).await,
            Err(error) => {
                replacement.abandon().await;
                Err(error)
            }
        };
        done.map_err(|e| self.fail("write", e))
    }

    /// Appends `content` to the file, creating it if needed.
    ///
    /// # Errors
    /// As [`write`](MachinePath::write).
    pub async fn append(&self, content: impl AsRef<[u8]>) -> Result<()> {
        let write = async {
            let mut file = self
                .files
                .open_write(&self.path, WriteMode::Append, None)
                .await?;
            file.write_all(content.as_ref()).await?;
            file.shutdown().await
        };
        write.await.map_err(|e| self.fail("append", e))
    }

    /// The entries of the directory, sorted by name, without `.` and `..`.
    ///
    /// # Errors
    /// [`Error::File`] (not found, not a directory, permission denied),
    /// [`Error::ConnectionLost`].
    pub async fn list(&self) -> Result<Vec<MachinePath>> {
        let mut entries = (self.files.list(&self.path).await).map_err(|e| self.fail("list", e))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries
            .into_iter()
            .map(|(name, _)| self.join(name))
            .collect())
    }

    /// The paths under this directory that match `pattern`, sorted.
    ///
    /// The pattern is relative to this path, with `/` between components: `*` matches any
    /// run of characters in a name, `?` one character, `[abc]`, `[a-z]` and `[!a-z]` (or
    /// `[^a-z]`) one character of a set, `\` escapes the next character, and a component
    /// `**` matches any number of directories, this one included. As in a shell, a name
    /// that starts with `.` is matched only by a pattern component that starts with `.`,
    /// and `**` does not descend into hidden directories or through symlinks. A pattern
    /// without wildcards lists what exists of that one path.
    ///
    /// # Errors
    /// [`Error::File`] for an unreadable directory on the way (a missing base directory
    /// gives an empty list), [`Error::ConnectionLost`].
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let sources = leadpipe::local().path("src").glob("**/*.rs").await?;
    /// # Ok(()) }
    /// ```
    pub async fn glob(&self, pattern: &str) -> Result<Vec<MachinePath>> {
        let pattern = glob::Pattern::parse(pattern).map_err(|reason| {
            self.fail("glob", io::Error::new(io::ErrorKind::InvalidInput, reason))
        })?;
        let mut found = glob::walk(self, &pattern).await?;
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found.dedup_by(|a, b| a.path == b.path);
        Ok(found)
    }

    /// Creates the directory and any missing parents (`mkdir -p`); a directory that already
    /// exists is fine, and so are `.` components (`x/sub/.` creates `x/sub`).
    ///
    /// # Errors
    /// [`Error::File`] (a parent is a file, permission denied), [`Error::ConnectionLost`].
    pub async fn mkdir(&self) -> Result<()> {
        mkdir_all(&*self.files, &self.path, 0o777)
            .await
            .map_err(|e| self.fail("create directory", e))
    }

    /// Removes a file or a symlink (not a directory: see
    /// [`remove_all`](MachinePath::remove_all)).
    ///
    /// # Errors
    /// [`Error::File`] (not found, a directory, permission denied), [`Error::ConnectionLost`].
    pub async fn remove(&self) -> Result<()> {
        let remove = async {
            if self.files.metadata(&self.path, false).await?.is_dir() {
                return Err(io::Error::from(io::ErrorKind::IsADirectory));
            }
            self.files.remove_file(&self.path).await
        };
        remove.await.map_err(|e| self.fail("remove", e))
    }

    /// Removes the path and, for a directory, everything under it (`rm -r`; symlinks are
    /// removed, never followed). Like [`std::fs::remove_dir_all`], a missing path is an
    /// error: check [`exists`](MachinePath::exists) first for "make sure it is gone".
    ///
    /// # Errors
    /// [`Error::File`] naming the first entry that could not be removed,
    /// [`Error::ConnectionLost`].
    pub async fn remove_all(&self) -> Result<()> {
        let meta =
            (self.files.metadata(&self.path, false).await).map_err(|e| self.fail("remove", e))?;
        remove_tree(self, meta).await
    }

    /// Renames (moves) the path on its machine, replacing what `to` names (POSIX
    /// `rename`, atomic). Returns the new path.
    ///
    /// `to` is a path of the same machine: a [`MachinePath`] of it, or a plain path
    /// resolved as the machine view this path came from resolves every path (a relative
    /// one against its [`with_cwd`](crate::SshMachine::with_cwd) directory, else where the
    /// machine starts), as `mv` in that directory would. Paths under a
    /// [`TempDir`](crate::TempDir) belong to no view: theirs is where the machine starts.
    /// To rename in place, give [`with_file_name`](MachinePath::with_file_name). A path on
    /// another machine is refused: a rename cannot cross machines; [`copy`](crate::copy)
    /// then [`remove_all`](MachinePath::remove_all) does that (not atomically).
    ///
    /// # Errors
    /// [`Error::File`] naming both paths (not found, `to` is on another file system or
    /// another machine, permission denied), [`Error::ConnectionLost`].
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// let log = web1.path("/var/log/app/app.log");
    /// log.rename(log.with_file_name("app.log.1")).await?;
    /// let logs = web1.with_cwd("/var/log/app");
    /// logs.path("app.log.1").rename("app.log.2").await?; // /var/log/app/app.log.2
    /// # Ok(()) }
    /// ```
    pub async fn rename(&self, to: impl IntoMachinePath) -> Result<MachinePath> {
        let to = to.into_machine_path(self);
        let refused = |error: io::Error| {
            if let Some(gone) = self.files.gone() {
                return gone;
            }
            Error::File(Box::new(FileError {
                op: "rename",
                machine: self.machine().to_owned(),
                path: self.path.clone(),
                to: Some(Box::new((to.machine().to_owned(), to.path.clone()))),
                source: error,
            }))
        };
        if !self.same_machine(&to) {
            return Err(refused(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the destination is on another machine (copy, then remove)",
            )));
        }
        (self.files.rename(&self.path, &to.path).await).map_err(refused)?;
        Ok(to)
    }

    /// Copies the file or tree to `to`: the same as [`copy`](crate::copy)`(self, to)`; see
    /// there for what happens when `to` is a directory, and for progress. `to` is resolved
    /// as [`rename`](MachinePath::rename) resolves it, except that it may be on another
    /// machine.
    pub fn copy_to(&self, to: impl IntoMachinePath) -> transfer::Transfer {
        transfer::copy(self, &to.into_machine_path(self))
    }

    /// Sets the permission bits (`0o644`, `0o755`, ...).
    ///
    /// # Errors
    /// [`Error::File`] (not found, not the owner), [`Error::ConnectionLost`].
    pub async fn chmod(&self, mode: u32) -> Result<()> {
        (self.files.chmod(&self.path, mode & 0o7777).await).map_err(|e| self.fail("chmod", e))
    }

    /// Creates this path as a symbolic link to `target` (stored as given: a relative target
    /// is relative to the link's directory, as `ln -s` does).
    ///
    /// # Errors
    /// [`Error::File`] (the path exists, permission denied), [`Error::ConnectionLost`].
    pub async fn symlink(&self, target: impl AsRef<Path>) -> Result<()> {
        (self.files.symlink(target.as_ref(), &self.path).await)
            .map_err(|e| self.fail("create symlink", e))
    }

    /// What the symbolic link at this path points to, as stored.
    ///
    /// # Errors
    /// [`Error::File`] (not found, not a symlink), [`Error::ConnectionLost`].
    pub async fn read_link(&self) -> Result<PathBuf> {
        (self.files.read_link(&self.path).await).map_err(|e| self.fail("read link", e))
    }

    /// The absolute path, with symlinks, `.` and `..` resolved (it must exist).
    ///
    /// # Errors
    /// [`Error::File`] (not found), [`Error::ConnectionLost`].
    pub async fn canonicalize(&self) -> Result<MachinePath> {
        let path = (self.files.canonicalize(&self.path).await)
            .map_err(|e| self.fail("canonicalize", e))?;
        Ok(self.sibling_path(path))
    }
}

/// `mkdir -p`: creates what is missing from the top down.
pub(crate) async fn mkdir_all(files: &dyn Files, path: &Path, mode: u32) -> io::Result<()> {
    // `x/sub/.` is `x/sub`: `components` drops every `.` but a leading one, which a
    // directory to create must not end in (`mkdir("x/sub/.")` fails while `sub` is missing).
    let path: PathBuf = path.components().collect();
    let mut missing = Vec::new();
    let mut next = Some(path.as_path());
    while let Some(dir) = next {
        if dir.as_os_str().is_empty() {
            break;
        }
        match files.metadata(dir, true).await {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(io::Error::from(io::ErrorKind::NotADirectory)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir),
            Err(e) => return Err(e),
        }
        next = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        mkdir_or_existing(files, dir, mode).await?;
    }
    Ok(())
}

/// Creates one directory; one that exists already is fine (another process may have made
/// it meanwhile): what counts is that it is a directory now. True when this call made it.
pub(crate) async fn mkdir_or_existing(
    files: &dyn Files,
    dir: &Path,
    mode: u32,
) -> io::Result<bool> {
    match files.mkdir(dir, mode).await {
        Ok(()) => Ok(true),
        Err(error) => match files.metadata(dir, true).await {
            Ok(meta) if meta.is_dir() => Ok(false),
            _ => Err(error),
        },
    }
}

/// Removes `path` (whose `lstat` is `meta`) and everything under it.
fn remove_tree(path: &MachinePath, meta: Metadata) -> futures::future::BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        if meta.kind != FileKind::Dir {
            return (path.files.remove_file(&path.path).await).map_err(|e| path.fail("remove", e));
        }
        let entries = (path.files.list(&path.path).await).map_err(|e| path.fail("remove", e))?;
        let children: Vec<(MachinePath, Metadata)> = entries
            .into_iter()
            .map(|(name, meta)| (path.join(name), meta))
            .collect();
        stream::iter(children.iter().map(Ok))
            .try_for_each_concurrent(TREE_CONCURRENCY, |(child, meta)| remove_tree(child, *meta))
            .await?;
        (path.files.rmdir(&path.path).await).map_err(|e| path.fail("remove", e))
    })
}

/// A name part no other writer picks at the same time: process id, a counter, the clock.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{count}-{nanos:08x}", std::process::id())
}

impl<P: AsRef<Path>> Div<P> for &MachinePath {
    type Output = MachinePath;

    /// `dir / "name"` is `dir.join("name")`.
    fn div(self, child: P) -> MachinePath {
        self.join(child)
    }
}

impl<P: AsRef<Path>> Div<P> for MachinePath {
    type Output = MachinePath;

    /// `dir / "name"` is `dir.join("name")`.
    fn div(self, child: P) -> MachinePath {
        self.join(child)
    }
}

impl AsRef<Path> for MachinePath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<OsStr> for MachinePath {
    fn as_ref(&self) -> &OsStr {
        self.path.as_os_str()
    }
}

/// The path alone, as `Path::display` shows it (the machine is in `Debug`).
impl fmt::Display for MachinePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.path.display(), f)
    }
}

/// `machine:path`, as `scp` writes a remote path.
impl fmt::Debug for MachinePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:?}", self.files.machine(), self.path)
    }
}

/// Paths are equal when they name the same path on the same machine (spelled the same:
/// no file system is consulted).
impl PartialEq for MachinePath {
    fn eq(&self, other: &MachinePath) -> bool {
        self.same_machine(other) && self.path == other.path
    }
}

impl Eq for MachinePath {}

/// Lists `dir` concurrently with others: used by glob's walk.
pub(crate) async fn list_with_meta(
    dir: &MachinePath,
) -> Result<Option<Vec<(std::ffi::OsString, Metadata)>>> {
    match dir.files.list(&dir.path).await {
        Ok(entries) => Ok(Some(entries)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(dir.fail("list", e)),
    }
}

/// A destination for [`MachinePath::rename`] and [`MachinePath::copy_to`]: a
/// [`MachinePath`], or a plain path (`&str`, `String`, `&Path`, `PathBuf`, `&OsStr`,
/// `OsString`) that the source's machine view resolves as it resolves every path.
///
/// # Example
/// ```no_run
/// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
/// let app = web1.with_cwd("/srv/app");
/// app.path("releases/42").rename("current").await?; // /srv/app/current
/// # Ok(()) }
/// ```
pub trait IntoMachinePath: into_machine_path::Sealed {}

mod into_machine_path {
    use std::{
        ffi::{OsStr, OsString},
        path::{Path, PathBuf},
    };

    use super::MachinePath;

    pub trait Sealed {
        /// The path this names, for a call on `source`.
        fn into_machine_path(self, source: &MachinePath) -> MachinePath;
    }

    impl Sealed for MachinePath {
        fn into_machine_path(self, _: &MachinePath) -> MachinePath {
            self
        }
    }

    impl Sealed for &MachinePath {
        fn into_machine_path(self, _: &MachinePath) -> MachinePath {
            self.clone()
        }
    }

    macro_rules! plain_paths {
        ($($ty:ty),*) => {$(
            impl Sealed for $ty {
                fn into_machine_path(self, source: &MachinePath) -> MachinePath {
                    source.in_same_view(AsRef::<Path>::as_ref(&self))
                }
            }
            impl super::IntoMachinePath for $ty {}
        )*};
    }

    plain_paths!(
        &str, String, &String, &Path, PathBuf, &PathBuf, &OsStr, OsString
    );
}

impl IntoMachinePath for MachinePath {}
impl IntoMachinePath for &MachinePath {}
