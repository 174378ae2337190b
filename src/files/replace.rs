//! Replacing a file whole, on any machine: the bytes go to a temporary file beside the
//! target, which is renamed over it only once complete.
//!
//! Everything that writes a file whole goes through [`Replacement`]:
//! [`MachinePath::write`](super::MachinePath::write) and every file (and symlink) a
//! transfer writes. The rename is POSIX `rename` locally and `posix-rename@openssh.com`
//! over SFTP ([`Files::rename`]), so a reader sees the old file or the new one, never a
//! part, and an interrupted write leaves the old file as it was.
//!
//! The temporary file is named `.NAME.leadpipe-UNIQUE.tmp`, in the target's directory (a
//! rename cannot cross file systems, and the directory is where the caller may write). A
//! write that fails removes it before it returns; a write whose future is dropped removes
//! it in the background. Only when the machine is gone before that removal (the SSH
//! connection cut) does it stay behind: [`sweep`] removes such leftovers, older than
//! [`STALE_AFTER`] by the machine's own clock, from every directory a later transfer writes
//! into.

use std::{
    ffi::{OsStr, OsString},
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{Files, FilesRef, WriteMode, path::unique_suffix};
use crate::machine::BoxWrite;

/// How old (by the machine's clock) a temporary file must be before a transfer removes it
/// as left over: a live writer touches its file with every write, so one this quiet belongs
/// to a write that was cut off.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

const MARK: &str = ".leadpipe-";
const END: &str = ".tmp";

/// `.NAME.leadpipe-UNIQUE.tmp` beside `target`.
fn temp_path(target: &Path) -> io::Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(MARK);
    temp.push(unique_suffix());
    temp.push(END);
    Ok(target.with_file_name(temp))
}

/// Whether `name` is one [`temp_path`] makes.
pub(crate) fn is_temp_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.starts_with(b".")
        && bytes.ends_with(END.as_bytes())
        && bytes
            .windows(MARK.len())
            .any(|window| window == MARK.as_bytes())
}

/// A file being written under a temporary name beside its target.
///
/// Dropped before [`commit`](Replacement::commit), it removes the temporary file in the
/// background (the write failed or its future was dropped); [`abandon`](Replacement::abandon)
/// removes it before returning.
pub(crate) struct Replacement {
    files: FilesRef,
    target: PathBuf,
    temp: PathBuf,
    armed: bool,
    /// The mode the temporary file was opened with, set exactly.
    exact: Option<u32>,
}

impl Replacement {
    /// Picks the temporary name for `target`; nothing is created yet.
    pub(crate) fn new(files: FilesRef, target: &Path) -> io::Result<Replacement> {
        Ok(Replacement {
            temp: temp_path(target)?,
            target: target.to_owned(),
            files,
            armed: true,
            exact: None,
        })
    }

    /// The temporary file's path.
    pub(crate) fn temp(&self) -> &Path {
        &self.temp
    }

    /// Creates the temporary file (it must not exist) for writing; `mode`, when given, is
    /// its mode exactly (whatever the umask) once the writer is shut down, and
    /// [`commit`](Replacement::commit) with the same mode need not set it again.
    pub(crate) async fn open(&mut self, mode: Option<u32>) -> io::Result<BoxWrite> {
        let how = match mode {
            Some(_) => WriteMode::CreateNewExact,
            None => WriteMode::CreateNew,
        };
        let file = self.files.open_write(&self.temp, how, mode).await?;
        self.exact = mode;
        Ok(file)
    }

    /// Sets the temporary file's permission bits to `mode` (exactly, whatever the umask)
    /// and renames it over the target. The caller has written it whole and shut its writer
    /// down, so every write was acknowledged.
    pub(crate) async fn commit(mut self, mode: Option<u32>) -> io::Result<()> {
        let done = async {
            if let Some(mode) = mode
                && self.exact != Some(mode)
            {
                self.files.chmod(&self.temp, mode).await?;
            }
            self.files.rename(&self.temp, &self.target).await
        }
        .await;
        match done {
            Ok(()) => {
                self.armed = false;
                Ok(())
            }
            Err(error) => {
                self.abandon().await;
                Err(error)
            }
        }
    }

    /// Removes the temporary file now (what a failed write calls before returning).
    pub(crate) async fn abandon(mut self) {
        self.armed = false;
        // A machine that is gone cannot remove it: a later transfer's sweep will.
        let _ = self.files.remove_file(&self.temp).await;
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if self.armed {
            let (files, temp) = (self.files.clone(), std::mem::take(&mut self.temp));
            super::tempdir::spawn_cleanup(async move {
                let _ = files.remove_file(&temp).await;
            });
        }
    }
}

/// Removes temporary files that interrupted writes left in `dir`: those named as
/// [`Replacement`] names them and older than [`STALE_AFTER`] compared with `fresh`, an
/// entry of `dir` just written (its modification time is the machine's "now", so the
/// clocks of this machine and that one need not agree). Best effort: what cannot be
/// listed or removed stays.
pub(crate) async fn sweep(files: &dyn Files, dir: &Path, fresh: &OsStr) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = files.list(dir).await else {
        return;
    };
    let Some(now) = entries
        .iter()
        .find(|(name, _)| name == fresh)
        .and_then(|(_, meta)| meta.modified)
    else {
        return;
    };
    for (name, meta) in entries {
        let stale = meta
            .modified
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if stale && !meta.is_dir() && is_temp_name(&name) {
            let _ = files.remove_file(&dir.join(&name)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_sit_beside_the_target_and_are_recognised() {
        let temp = temp_path(Path::new("/srv/app/app.conf")).unwrap();
        assert_eq!(temp.parent(), Some(Path::new("/srv/app")));
        let name = temp.file_name().unwrap();
        assert!(name.to_str().unwrap().starts_with(".app.conf.leadpipe-"));
        assert!(is_temp_name(name));
        let relative = temp_path(Path::new("big.bin")).unwrap();
        assert_eq!(relative.parent(), Some(Path::new("")));
        for other in [
            ".app.conf",
            "app.conf.leadpipe-1.tmp",
            ".x.tmp",
            ".leadpipe-1",
        ] {
            assert!(!is_temp_name(OsStr::new(other)), "{other}");
        }
        assert!(temp_path(Path::new("/")).is_err());
    }
}
