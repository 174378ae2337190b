//! Files on any machine: paths bound to the machine they name, and the one internal
//! interface each machine's file system plugs in behind.
//!
//! [`MachinePath`] is what scripts hold. Everything it does is written once, here and in
//! [`transfer`], [`glob`] and [`tempdir`], against [`Files`]: a handful of primitive
//! operations (stat, list, open for reading or writing, mkdir, remove, rename, chmod,
//! links). This machine implements them with `std::fs` (`local/files.rs`); the SSH machine
//! with SFTP on a channel of its connection (`ssh/sftp.rs`); a local `sudo` view with the
//! same SFTP client on a local `sftp-server` run through sudo (`local/sudo_files.rs`).
//! Primitive operations report
//! `io::Error`; [`MachinePath`] turns each into an [`Error::File`] naming the operation,
//! the machine and the path, so no backend has to.

mod glob;
mod path;
mod replace;
mod tempdir;
mod transfer;

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use futures::future::BoxFuture;

#[cfg(feature = "ssh")]
pub(crate) use self::tempdir::spawn_cleanup;
pub use self::{
    path::{IntoMachinePath, MachinePath},
    tempdir::TempDir,
    transfer::{Transfer, copy},
};
use crate::{
    Error,
    machine::{BoxRead, BoxWrite},
};

/// A machine's file system, as [`MachinePath`] uses it.
///
/// Paths handed in are already resolved against the machine view's directory; relative
/// ones are relative to where the machine starts (this process's directory locally, the
/// login directory remotely).
pub(crate) trait Files: Send + Sync + 'static {
    /// How errors name this machine (`local`, `deploy@web1`).
    fn machine(&self) -> &str;

    /// Whether the files are this process's own (so `std::fs` can reach them directly).
    fn is_local(&self) -> bool;

    /// The error to report instead of a file error when the machine itself is gone (the
    /// SSH connection died): every file error on a dead connection is that one error.
    fn gone(&self) -> Option<Error>;

    /// `stat` (following a final symlink) or `lstat`.
    fn metadata<'a>(&'a self, path: &'a Path, follow: bool) -> BoxFuture<'a, io::Result<Metadata>>;

    /// The entries of a directory (without `.` and `..`), each with its `lstat` metadata.
    fn list<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<Vec<(OsString, Metadata)>>>;

    /// Opens a file for reading from its start. `size` is what a listing said the file
    /// holds, when known: a hint to read ahead by (the whole file is still read, to its
    /// real end).
    fn open_read<'a>(
        &'a self,
        path: &'a Path,
        size: Option<u64>,
    ) -> BoxFuture<'a, io::Result<BoxRead>>;

    /// Opens a file for writing. `mode` applies when the file is created (before the
    /// umask); the write is complete, with every error reported, only after `shutdown`.
    fn open_write<'a>(
        &'a self,
        path: &'a Path,
        how: WriteMode,
        mode: Option<u32>,
    ) -> BoxFuture<'a, io::Result<BoxWrite>>;

    /// Creates one directory (its parent must exist).
    fn mkdir<'a>(&'a self, path: &'a Path, mode: u32) -> BoxFuture<'a, io::Result<()>>;

    /// Removes an empty directory.
    fn rmdir<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>>;

    /// Removes a file or a symlink.
    fn remove_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>>;

    /// Renames, replacing `to` if it exists (POSIX `rename`).
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, io::Result<()>>;

    /// Sets the permission bits (`0o7777`).
    fn chmod<'a>(&'a self, path: &'a Path, mode: u32) -> BoxFuture<'a, io::Result<()>>;

    /// Creates `link` as a symlink whose content is `target`.
    fn symlink<'a>(&'a self, target: &'a Path, link: &'a Path) -> BoxFuture<'a, io::Result<()>>;

    /// The content of a symlink.
    fn read_link<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<PathBuf>>;

    /// The absolute path with every symlink, `.` and `..` resolved.
    fn canonicalize<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<PathBuf>>;
}

/// A shared handle on a machine's file system.
pub(crate) type FilesRef = Arc<dyn Files>;

/// How [`Files::open_write`] opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Create or append.
    Append,
    /// Create; fail if it exists.
    CreateNew,
    /// Create; fail if it exists; the mode given is set exactly (whatever the umask) by the
    /// time `shutdown` returns (over SFTP with the last writes and the close, not a round
    /// trip of its own).
    CreateNewExact,
}

/// What kind of file a path names.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::FileKind;
/// let link = leadpipe::local().path("/srv/app/current");
/// if link.symlink_metadata().await?.kind() == FileKind::Symlink {
///     println!("current -> {}", link.read_link().await?.display());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (only from [`MachinePath::symlink_metadata`] and listings).
    Symlink,
    /// Anything else: a socket, a FIFO, a device.
    Other,
}

/// Size, permissions, modification time and kind of a file, on any machine.
///
/// # Example
/// ```no_run
/// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
/// let meta = web1.path("/srv/app/bin/app").metadata().await?;
/// assert!(meta.is_file() && meta.mode() & 0o111 != 0, "not an executable");
/// println!("{} bytes, changed {:?}", meta.len(), meta.modified());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub(crate) kind: FileKind,
    pub(crate) len: u64,
    pub(crate) mode: u32,
    pub(crate) modified: Option<SystemTime>,
    pub(crate) owner: Option<(u32, u32)>,
}

impl Metadata {
    /// What kind of file it is.
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.kind == FileKind::File
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }

    /// Whether it is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.kind == FileKind::Symlink
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the size is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The permission bits, as `chmod` takes them (`0o755`; setuid, setgid and sticky
    /// included, the file type not).
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// The last modification time, when the machine reports one (SFTP: whole seconds).
    pub fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    /// The numeric user id of the owner, when the machine reports one (local files and
    /// OpenSSH's SFTP server always do).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// let meta = web1.path("/srv/app/current").metadata().await?;
    /// if meta.uid() != Some(0) {
    ///     web1.sudo().cmd("chown").args(["root:", "/srv/app/current"]).run().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn uid(&self) -> Option<u32> {
        self.owner.map(|(uid, _)| uid)
    }

    /// The numeric group id of the file, when the machine reports one.
    pub fn gid(&self) -> Option<u32> {
        self.owner.map(|(_, gid)| gid)
    }
}

/// The kind of a file from the `st_mode` bits.
pub(crate) fn kind_of_mode(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// The details of [`Error::File`]: which operation failed on which path of which machine.
///
/// # Example
/// ```no_run
/// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
/// use leadpipe::Error;
/// let conf = match web1.path("/etc/app/local.conf").read_to_string().await {
///     Ok(text) => text,
///     Err(Error::File(e)) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
///     Err(other) => return Err(other),
/// };
/// # Ok(()) }
/// ```
pub struct FileError {
    pub(crate) op: &'static str,
    pub(crate) machine: String,
    pub(crate) path: PathBuf,
    /// The other path of a two-path operation (`rename`): its machine and path.
    pub(crate) to: Option<Box<(String, PathBuf)>>,
    pub(crate) source: io::Error,
}

impl FileError {
    /// The operation, as a verb (`read`, `write`, `list`, `upload`).
    pub fn op(&self) -> &str {
        self.op
    }

    /// The machine the path is on.
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// The path the operation failed on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The destination of an operation with two paths (`rename`), if this was one.
    pub fn destination(&self) -> Option<&Path> {
        self.to.as_ref().map(|to| to.1.as_path())
    }

    /// What kind of failure it was (`NotFound`, `PermissionDenied`, `AlreadyExists`, ...),
    /// as the machine reported it.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The underlying error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.source.kind() {
            io::ErrorKind::NotFound => "no such file or directory".to_owned(),
            io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            io::ErrorKind::AlreadyExists => "already exists".to_owned(),
            io::ErrorKind::NotADirectory => "not a directory".to_owned(),
            io::ErrorKind::IsADirectory => "is a directory".to_owned(),
            io::ErrorKind::DirectoryNotEmpty => "directory not empty".to_owned(),
            _ => self.source.to_string(),
        };
        write!(
            f,
            "cannot {} {}:{}",
            self.op,
            self.machine,
            self.path.display()
        )?;
        if let Some(to) = &self.to {
            write!(f, " to {}:{}", to.0, to.1.display())?;
        }
        write!(f, ": {what}")
    }
}

impl std::fmt::Debug for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `error` from `op` on `path` of `files`, as the script should see it.
pub(crate) fn file_error(
    files: &dyn Files,
    op: &'static str,
    path: &Path,
    error: io::Error,
) -> Error {
    if let Some(gone) = files.gone() {
        return gone;
    }
    Error::File(Box::new(FileError {
        op,
        machine: files.machine().to_owned(),
        path: path.to_owned(),
        to: None,
        source: error,
    }))
}
