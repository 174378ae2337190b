//! This machine's files, through `std::fs` on tokio's blocking threads.

use std::{
    ffi::OsString,
    fs, io,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::{FutureExt, future::BoxFuture};

use crate::{
    Error,
    files::{Files, FilesRef, Metadata, WriteMode, kind_of_mode},
    machine::{BoxRead, BoxWrite},
};

/// The one local file system every `LocalMachine` view shares.
pub(crate) static LOCAL_FILES: LazyLock<FilesRef> = LazyLock::new(|| Arc::new(LocalFiles));

pub(crate) struct LocalFiles;

/// Runs `work` on a blocking thread with its own copies of the paths.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

pub(crate) fn metadata_of(meta: &fs::Metadata) -> Metadata {
    Metadata {
        kind: kind_of_mode(meta.mode()),
        len: meta.len(),
        mode: meta.mode() & 0o7777,
        modified: meta.modified().ok(),
        owner: Some((meta.uid(), meta.gid())),
    }
}

impl Files for LocalFiles {
    fn machine(&self) -> &str {
        "local"
    }

    fn is_local(&self) -> bool {
        true
    }

    fn gone(&self) -> Option<Error> {
        None
    }

    fn metadata<'a>(&'a self, path: &'a Path, follow: bool) -> BoxFuture<'a, io::Result<Metadata>> {
        let path = path.to_owned();
        blocking(move || {
            let meta = if follow {
                fs::metadata(&path)?
            } else {
                fs::symlink_metadata(&path)?
            };
            Ok(metadata_of(&meta))
        })
        .boxed()
    }

    fn list<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<Vec<(OsString, Metadata)>>> {
        let dir = dir.to_owned();
        blocking(move || {
            let mut entries = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                entries.push((entry.file_name(), metadata_of(&meta)));
            }
            Ok(entries)
        })
        .boxed()
    }

    fn open_read<'a>(
        &'a self,
        path: &'a Path,
        _size: Option<u64>,
    ) -> BoxFuture<'a, io::Result<BoxRead>> {
        async move {
            let file = tokio::fs::File::open(path).await?;
            if file.metadata().await?.is_dir() {
                return Err(io::Error::from(io::ErrorKind::IsADirectory));
            }
            Ok(Box::new(file) as BoxRead)
        }
        .boxed()
    }

    fn open_write<'a>(
        &'a self,
        path: &'a Path,
        how: WriteMode,
        mode: Option<u32>,
    ) -> BoxFuture<'a, io::Result<BoxWrite>> {
        /// Raised when the open's future is gone (dropped, or done).
        struct Abandoned(Arc<AtomicBool>);
        impl Drop for Abandoned {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }

        let path = path.to_owned();
        let abandoned = Abandoned(Arc::new(AtomicBool::new(false)));
        let gone = abandoned.0.clone();
        async move {
            let file = blocking(move || {
                let mut options = fs::OpenOptions::new();
                options.write(true);
                match how {
                    WriteMode::Append => options.create(true).append(true),
                    WriteMode::CreateNew | WriteMode::CreateNewExact => options.create_new(true),
                };
                if let Some(mode) = mode {
                    options.mode(mode);
                }
                let file = options.open(&path)?;
                if let (WriteMode::CreateNewExact, Some(mode)) = (how, mode) {
                    use std::os::unix::fs::PermissionsExt;
                    let exact = file.set_permissions(fs::Permissions::from_mode(mode));
                    if let Err(error) = exact {
                        drop(file);
                        let _ = fs::remove_file(&path);
                        return Err(error);
                    }
                }
                // A new file whose caller dropped the open before it finished: nobody will
                // write it, or remove it (its removal may have run before it existed).
                if how != WriteMode::Append && gone.load(Ordering::SeqCst) {
                    drop(file);
                    let _ = fs::remove_file(&path);
                    return Err(io::Error::from(io::ErrorKind::Interrupted));
                }
                Ok(file)
            })
            .await?;
            drop(abandoned);
            Ok(Box::new(tokio::fs::File::from_std(file)) as BoxWrite)
        }
        .boxed()
    }

    fn mkdir<'a>(&'a self, path: &'a Path, mode: u32) -> BoxFuture<'a, io::Result<()>> {
        let path = path.to_owned();
        blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().mode(mode).create(&path)
        })
        .boxed()
    }

    fn rmdir<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        let path = path.to_owned();
        blocking(move || fs::remove_dir(&path)).boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        let path = path.to_owned();
        blocking(move || fs::remove_file(&path)).boxed()
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        let (from, to) = (from.to_owned(), to.to_owned());
        blocking(move || fs::rename(&from, &to)).boxed()
    }

    fn chmod<'a>(&'a self, path: &'a Path, mode: u32) -> BoxFuture<'a, io::Result<()>> {
        let path = path.to_owned();
        blocking(move || fs::set_permissions(&path, fs::Permissions::from_mode(mode))).boxed()
    }

    fn symlink<'a>(&'a self, target: &'a Path, link: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        let (target, link) = (target.to_owned(), link.to_owned());
        blocking(move || std::os::unix::fs::symlink(&target, &link)).boxed()
    }

    fn read_link<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<PathBuf>> {
        let path = path.to_owned();
        blocking(move || fs::read_link(&path)).boxed()
    }

    fn canonicalize<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<PathBuf>> {
        let path = path.to_owned();
        blocking(move || fs::canonicalize(&path)).boxed()
    }
}
