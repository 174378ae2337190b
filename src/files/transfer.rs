//! Copying files and trees between any two machines (or within one), with progress.
//!
//! Bytes stream through this process: read from the source machine, written to the
//! destination, 255 KiB at a time, with no whole file in memory. Over SFTP a single file
//! is already pipelined (many reads or writes in flight per file); a tree adds concurrency
//! across files, which is what makes many small files fast: each file costs three round
//! trips over SFTP (open; the writes, mode and close together; rename), and
//! [`SMALL_FILE_CONCURRENCY`] small files are in flight at once ([`FILE_CONCURRENCY`] of
//! the larger ones, whose many requests in flight each already fill the link). A tree's
//! directories are created a level at a time (a round trip per level, not per directory),
//! and their modes set the same way, deepest level first.
//!
//! Every file is written as [`Replacement`] writes one: under a temporary name beside its
//! target, renamed over it once whole, so an interrupted transfer destroys nothing.

use std::{
    ffi::OsString,
    fmt,
    future::Future,
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use futures::{StreamExt, TryStreamExt, future::BoxFuture, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    FileKind, MachinePath, Metadata, file_error,
    path::mkdir_or_existing,
    replace::{self, Replacement},
};
use crate::{Error, Result, local::files::blocking};

/// How many files of a tree are copied at once between two machines: as many as an SFTP
/// session holds handles open (`ssh/sftp.rs`), so that each round trip of the one
/// connection serves that many files.
const SMALL_FILE_CONCURRENCY: usize = 128;
/// How many within one machine: each file then holds two of the session's handles, and
/// locally each is a blocking thread.
const SAME_MACHINE_CONCURRENCY: usize = 64;
/// How many of them may be larger than [`SMALL_FILE`] (each holds up to 64 requests of
/// 255 KiB in flight over SFTP).
const FILE_CONCURRENCY: usize = 16;
/// Copies whose source and destination are both over SFTP hold a handle of each (one
/// session or two) and wait for the second while holding the first. A session holds at
/// most 128 handles open (`ssh/sftp.rs`), so copies running at once (two within one
/// machine, or A to B beside B to A) could each hold every handle of a session and wait
/// forever for the other's. At most half that many of them run at once, in the whole
/// process: every session then keeps handles that no such copy waits on, and whatever
/// holds those (an upload, a download) finishes without waiting on a copy.
static TWO_HANDLE_COPIES: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(SAME_MACHINE_CONCURRENCY);
/// How many directories of a tree are created (or have their modes set) at once.
const DIRS_AT_ONCE: usize = 64;
/// The size up to which a file is small: a few requests.
const SMALL_FILE: u64 = 1 << 20;
/// How much is read before it is written: OpenSSH's largest SFTP write (255 KiB), so a
/// chunk goes out as one write request rather than as 255 KiB and 1 KiB.
const CHUNK: usize = 255 * 1024;
/// How much a copy on this machine moves (with `copy_file_range`) between two looks at
/// whether it was cancelled, and between two progress reports.
const LOCAL_CHUNK: u64 = 8 << 20;

type ProgressFn = Box<dyn FnMut(u64, u64) + Send>;

/// Copies a file or a directory tree from `src` to `dst`, on the same machine or between
/// any two (local to remote, remote to local, remote to remote through this process).
///
/// As `cp -r`: when `dst` is an existing directory, the copy goes inside it under the
/// source's name; otherwise `dst` is the name of the copy (its parent must exist).
/// Permission bits are kept (exactly, whatever the destination's umask); symlinks inside a
/// tree are copied as symlinks with the same target, while a symlink given as `src` is
/// followed. An existing file at the destination is replaced; an existing directory is
/// merged into. Modification times are not kept.
///
/// Each file (and symlink) is replaced atomically: it is written to a temporary file
/// beside its target, `.NAME.leadpipe-UNIQUE.tmp`, which gets its permission bits and is
/// renamed over the target only once complete (over SFTP: after every write was
/// acknowledged, with `posix-rename@openssh.com`). An interrupted transfer (an error, the
/// connection cut, this future dropped) leaves every file it had not finished as it was,
/// byte for byte, and removes its temporary file: before returning the error, or in the
/// background when the future is dropped. Only a machine that is gone (its SSH connection
/// cut) keeps the temporary file it was writing; a later transfer that writes into that
/// directory removes such leftovers once they are ten minutes old by that machine's clock
/// (a live writer keeps its own file fresher than that).
///
/// Being a new file, a replaced file is owned by the user the transfer runs as, it needs
/// write permission on its directory, and a symlink or hard link at the destination is
/// replaced, not written through (as [`MachinePath::write`] does).
///
/// The returned [`Transfer`] is a future of the number of bytes copied; before awaiting it,
/// [`progress`](Transfer::progress) can watch it.
///
/// # Errors
/// [`Error::File`] naming the path (source or destination) and what failed,
/// [`Error::ConnectionLost`]. A tree copy stops at the first error; what was copied stays.
///
/// # Example
/// ```no_run
/// # async fn demo(web1: leadpipe::SshMachine, web2: leadpipe::SshMachine) -> leadpipe::Result<()> {
/// // From one host to another, through this process.
/// let bytes = leadpipe::copy(&web1.path("/srv/app/releases/42"), &web2.path("/srv/app/releases"))
///     .progress(|done, total| eprint!("\r{done}/{total} bytes"))
///     .await?;
/// # Ok(()) }
/// ```
pub fn copy(src: &MachinePath, dst: &MachinePath) -> Transfer {
    Transfer {
        state: State::Ready {
            src: src.clone(),
            dst: dst.clone(),
            progress: None,
        },
    }
}

/// A copy that has not finished: a future of the number of bytes copied. From
/// [`copy`], [`SshMachine::upload`](crate::SshMachine::upload),
/// [`SshMachine::download`](crate::SshMachine::download) and
/// [`MachinePath::copy_to`]. It starts when first polled.
#[must_use = "a Transfer does nothing until awaited"]
pub struct Transfer {
    state: State,
}

enum State {
    Ready {
        src: MachinePath,
        dst: MachinePath,
        progress: Option<ProgressFn>,
    },
    Running(BoxFuture<'static, Result<u64>>),
    Done,
}

impl Transfer {
    /// Calls `report(done, total)` with bytes copied so far and bytes to copy in all, after
    /// every chunk (255 KiB at most; 8 MiB for a copy within this machine) and once at the
    /// start. The total is known before the first byte moves (a tree is listed first).
    pub fn progress(mut self, report: impl FnMut(u64, u64) + Send + 'static) -> Transfer {
        if let State::Ready { progress, .. } = &mut self.state {
            *progress = Some(Box::new(report));
        }
        self
    }

    /// Shows the progress on an [`indicatif::ProgressBar`] (its length is set to the
    /// total; the bar is finished at the end).
    #[cfg(feature = "progress-bar")]
    pub fn progress_bar(self, bar: indicatif::ProgressBar) -> Transfer {
        self.progress(move |done, total| {
            bar.set_length(total);
            bar.set_position(done);
            if done == total {
                bar.finish();
            }
        })
    }
}

impl Future for Transfer {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        if let State::Ready { .. } = self.state {
            let State::Ready { src, dst, progress } =
                std::mem::replace(&mut self.state, State::Done)
            else {
                unreachable!("checked just above")
            };
            self.state = State::Running(Box::pin(run(src, dst, progress)));
        }
        match &mut self.state {
            State::Running(running) => {
                let result = std::task::ready!(running.as_mut().poll(cx));
                self.state = State::Done;
                Poll::Ready(result)
            }
            _ => Poll::Ready(Err(Error::io(
                "a Transfer",
                io::Error::other("polled after it finished"),
            ))),
        }
    }
}

impl fmt::Debug for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Ready { src, dst, .. } => f
                .debug_struct("Transfer")
                .field("src", src)
                .field("dst", dst)
                .finish(),
            State::Running(_) => f.write_str("Transfer(running)"),
            State::Done => f.write_str("Transfer(done)"),
        }
    }
}

/// Bytes done and the callback, shared by the files in flight.
struct Progress {
    total: u64,
    state: Mutex<(u64, Option<ProgressFn>)>,
}

impl Progress {
    fn add(&self, bytes: u64) {
        if let Ok(mut state) = self.state.lock() {
            let (done, report) = &mut *state;
            *done += bytes;
            if let Some(report) = report {
                report(*done, self.total);
            }
        }
    }
}

/// One entry of a tree to copy, relative to its top.
struct Entry {
    relative: PathBuf,
    meta: Metadata,
}

async fn run(src: MachinePath, dst: MachinePath, progress: Option<ProgressFn>) -> Result<u64> {
    let top = src.metadata().await?;
    let dst = match dst.files().metadata(dst.as_path(), true).await {
        Ok(meta) if meta.is_dir() => match src.file_name() {
            Some(name) => dst.join(name),
            None => dst,
        },
        Ok(_) if top.is_dir() => {
            return Err(file_error(
                dst.files(),
                "copy a directory to",
                dst.as_path(),
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        _ => dst,
    };
    if src.same_machine(&dst) && src.as_path() == dst.as_path() {
        return Err(file_error(
            dst.files(),
            "copy onto itself",
            dst.as_path(),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "source and destination are the same",
            ),
        ));
    }
    let mut entries = vec![Entry {
        relative: PathBuf::new(),
        meta: top,
    }];
    if top.is_dir() {
        list_tree(&src, &mut entries).await?;
    }
    let total = entries
        .iter()
        .filter(|entry| entry.meta.is_file())
        .map(|entry| entry.meta.len)
        .sum();
    let progress = Progress {
        total,
        state: Mutex::new((0, progress)),
    };
    progress.add(0);

    // Directories first, parents before children, writable by us until the files are in.
    // Those that existed may hold what earlier interrupted transfers left.
    let mut existed = Vec::new();
    if !top.is_dir()
        && let Some(parent) = dst.as_path().parent()
    {
        existed.push(parent.to_owned());
    }
    let levels = dir_levels(&entries);
    for level in &levels {
        // A level's directories at once: their parents exist.
        let mkdirs: Vec<_> = level
            .iter()
            .map(|&(relative, _)| {
                let target = under(&dst, relative);
                async move {
                    let files = target.files();
                    match mkdir_or_existing(files, target.as_path(), 0o700).await {
                        Ok(made) => Ok((target, made)),
                        Err(e) => Err(file_error(files, "create directory", target.as_path(), e)),
                    }
                }
            })
            .collect();
        for (target, made) in all_at_once(mkdirs).await? {
            if !made {
                existed.push(target.as_path().to_owned());
            }
        }
    }
    let progress = Arc::new(progress);
    let large = tokio::sync::Semaphore::new(FILE_CONCURRENCY);
    let at_once = if src.same_machine(&dst) || (src.files().is_local() && dst.files().is_local()) {
        SAME_MACHINE_CONCURRENCY
    } else {
        SMALL_FILE_CONCURRENCY
    };
    stream::iter(entries.iter().filter(|entry| !entry.meta.is_dir()).map(Ok))
        .try_for_each_concurrent(at_once, |entry| {
            let (from, to) = (under(&src, &entry.relative), under(&dst, &entry.relative));
            let (progress, large) = (progress.clone(), &large);
            async move {
                let _lane = if entry.meta.len > SMALL_FILE {
                    large.acquire().await.ok()
                } else {
                    None
                };
                match entry.meta.kind {
                    FileKind::Symlink => copy_symlink(&from, &to).await,
                    FileKind::File => copy_file(&from, &to, entry.meta, &progress).await,
                    _ => Err(file_error(
                        from.files(),
                        "copy",
                        from.as_path(),
                        io::Error::new(
                            io::ErrorKind::Unsupported,
                            "not a regular file, directory or symlink",
                        ),
                    )),
                }
            }
        })
        .await?;
    sweep_leftovers(&dst, &entries, existed).await;
    // Directory modes last, children before parents (a parent that can no longer be
    // searched is set after), a level at once.
    for level in levels.iter().rev() {
        let chmods: Vec<_> = level
            .iter()
            .map(|&(relative, mode)| {
                let target = under(&dst, relative);
                async move {
                    let files = target.files();
                    (files.chmod(target.as_path(), mode).await)
                        .map_err(|e| file_error(files, "chmod", target.as_path(), e))
                }
            })
            .collect();
        all_at_once(chmods).await?;
    }
    Ok(total)
}

/// Removes what interrupted transfers left in the directories of `existed` (all under
/// `dst`, or its parent) that this transfer wrote a file or symlink into.
async fn sweep_leftovers(dst: &MachinePath, entries: &[Entry], existed: Vec<PathBuf>) {
    // Each such directory, with the name of one file written into it.
    let mut dirs: std::collections::HashMap<PathBuf, Option<OsString>> =
        existed.into_iter().map(|dir| (dir, None)).collect();
    for entry in entries.iter().filter(|entry| !entry.meta.is_dir()) {
        let target = under(dst, &entry.relative);
        if let (Some(parent), Some(name)) = (target.as_path().parent(), target.file_name())
            && let Some(written @ None) = dirs.get_mut(parent)
        {
            *written = Some(name.to_owned());
        }
    }
    let dirs = dirs
        .into_iter()
        .filter_map(|(dir, written)| Some((dir, written?)));
    stream::iter(dirs)
        .for_each_concurrent(super::path::TREE_CONCURRENCY, |(dir, written)| async move {
            replace::sweep(dst.files(), &dir, &written).await;
        })
        .await;
}

/// Runs `jobs`, [`DIRS_AT_ONCE`] at a time: their results in order, or the first error.
async fn all_at_once<T>(jobs: Vec<impl Future<Output = Result<T>>>) -> Result<Vec<T>> {
    let done: Vec<Result<T>> = stream::iter(jobs).buffered(DIRS_AT_ONCE).collect().await;
    done.into_iter().collect()
}

/// The directories of a tree (relative, with their modes) by depth: the top, then its
/// subdirectories, then theirs.
fn dir_levels(entries: &[Entry]) -> Vec<Vec<(&Path, u32)>> {
    let mut levels: Vec<Vec<(&Path, u32)>> = Vec::new();
    for entry in entries.iter().filter(|entry| entry.meta.is_dir()) {
        let depth = entry.relative.components().count();
        if levels.len() <= depth {
            levels.resize_with(depth + 1, Vec::new);
        }
        levels[depth].push((entry.relative.as_path(), entry.meta.mode));
    }
    levels
}

/// A directory (relative to the top of a tree) and its entries.
type Listing = (PathBuf, Vec<(std::ffi::OsString, Metadata)>);

/// `top/relative`, where an empty `relative` is `top` itself (not `top/`).
fn under(top: &MachinePath, relative: &Path) -> MachinePath {
    if relative.as_os_str().is_empty() {
        top.clone()
    } else {
        top.join(relative)
    }
}

/// Appends every entry under `top` (a directory), parents before children.
async fn list_tree(top: &MachinePath, entries: &mut Vec<Entry>) -> Result<()> {
    let mut level = vec![PathBuf::new()];
    while !level.is_empty() {
        let listings: Vec<Result<Listing>> = stream::iter(level.drain(..))
            .map(|relative| async move {
                let dir = under(top, &relative);
                let listed = dir.files().list(dir.as_path()).await;
                let listed =
                    listed.map_err(|e| file_error(dir.files(), "list", dir.as_path(), e))?;
                Ok((relative, listed))
            })
            .buffered(super::path::TREE_CONCURRENCY)
            .collect()
            .await;
        for listing in listings {
            let (relative, mut listed) = listing?;
            listed.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, meta) in listed {
                let relative = relative.join(name);
                if meta.is_dir() {
                    level.push(relative.clone());
                }
                entries.push(Entry { relative, meta });
            }
        }
    }
    Ok(())
}

/// Replaces `to` with a symlink like `from`.
async fn copy_symlink(from: &MachinePath, to: &MachinePath) -> Result<()> {
    let target = from.read_link().await?;
    let write_error = |e| file_error(to.files(), "create symlink", to.as_path(), e);
    let replacement =
        Replacement::new(to.files_ref().clone(), to.as_path()).map_err(write_error)?;
    match to.files().symlink(&target, replacement.temp()).await {
        Ok(()) => replacement.commit(None).await.map_err(write_error),
        Err(error) => {
            replacement.abandon().await;
            Err(write_error(error))
        }
    }
}

/// Copies one regular file with its mode, replacing `to` only once complete.
async fn copy_file(
    from: &MachinePath,
    to: &MachinePath,
    meta: Metadata,
    progress: &Arc<Progress>,
) -> Result<()> {
    if from.files().is_local() && to.files().is_local() {
        return copy_local_file(from, to, meta, progress).await;
    }
    // Never closed.
    let _two_handles = if from.files().is_local() || to.files().is_local() {
        None
    } else {
        TWO_HANDLE_COPIES.acquire().await.ok()
    };
    let read_error = |e| file_error(from.files(), "read", from.as_path(), e);
    let write_error = |e| file_error(to.files(), "write", to.as_path(), e);
    let mut reader =
        (from.files().open_read(from.as_path(), Some(meta.len)).await).map_err(read_error)?;
    let mut replacement =
        Replacement::new(to.files_ref().clone(), to.as_path()).map_err(write_error)?;
    let copied = async {
        let mut writer = (replacement.open(Some(meta.mode)).await).map_err(write_error)?;
        // A small file gets a buffer of its size (one more byte sees the end at once).
        let size = usize::try_from(meta.len).unwrap_or(CHUNK);
        let mut buffer = vec![0; CHUNK.min(size.saturating_add(1))];
        loop {
            let n = reader.read(&mut buffer).await.map_err(read_error)?;
            if n == 0 {
                break;
            }
            writer.write_all(&buffer[..n]).await.map_err(write_error)?;
            progress.add(n as u64);
        }
        // Every write acknowledged, the file closed, before it may replace the target.
        writer.shutdown().await.map_err(write_error)
    }
    .await;
    match copied {
        Ok(()) => (replacement.commit(Some(meta.mode)).await).map_err(write_error),
        Err(error) => {
            replacement.abandon().await;
            Err(error)
        }
    }
}

/// A local copy: `copy_file_range` on a blocking thread, a chunk at a time. A blocking
/// thread cannot be cancelled, so dropping the transfer raises `cancelled`, which the
/// thread checks between chunks: it then removes the temporary file and stops, and the
/// rename (done here, after it) never happens.
async fn copy_local_file(
    from: &MachinePath,
    to: &MachinePath,
    meta: Metadata,
    progress: &Arc<Progress>,
) -> Result<()> {
    /// Raises the flag when dropped: when the copy ends, and when its future is dropped.
    struct Cancel(Arc<AtomicBool>);
    impl Drop for Cancel {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    let write_error = |e| file_error(to.files(), "copy to", to.as_path(), e);
    let replacement =
        Replacement::new(to.files_ref().clone(), to.as_path()).map_err(write_error)?;
    let cancel = Cancel(Arc::new(AtomicBool::new(false)));
    let (source, temp) = (from.as_path().to_owned(), replacement.temp().to_owned());
    let (cancelled, progress) = (cancel.0.clone(), progress.clone());
    let copied = blocking(move || {
        let copied = copy_in_chunks(&source, &temp, meta.mode, &cancelled, &progress);
        if copied.is_err() {
            // Also when the future was dropped before this thread created the file.
            let _ = std::fs::remove_file(&temp);
        }
        copied
    })
    .await;
    drop(cancel);
    match copied {
        Ok(()) => (replacement.commit(Some(meta.mode)).await).map_err(write_error),
        Err(error) => {
            replacement.abandon().await;
            Err(write_error(error))
        }
    }
}

fn copy_in_chunks(
    source: &Path,
    temp: &Path,
    mode: u32,
    cancelled: &AtomicBool,
    progress: &Progress,
) -> io::Result<()> {
    use std::io::Read;
    let source = std::fs::File::open(source)?;
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp)?;
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the copy was cancelled",
            ));
        }
        // `io::copy` between files uses `copy_file_range` (through `Take` too).
        let n = io::copy(&mut (&source).take(LOCAL_CHUNK), &mut target)?;
        if n == 0 {
            return Ok(());
        }
        progress.add(n);
    }
}
