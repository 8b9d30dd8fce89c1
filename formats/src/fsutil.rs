//! Small durable-filesystem helpers: atomic replace of a file and fsync of
//! directories.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A filesystem operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", crate::escape::path(path))]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Result with [`FsError`].
pub type FsResult<T> = Result<T, FsError>;

/// fsync a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> FsResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("fsync directory", dir, e))
}

/// Replaces `dir/name` atomically: write `dir/.name.tmp`, fsync it, rename
/// over `dir/name`, fsync `dir`. A crash leaves either the old or the new
/// file, never a mix. The caller serialises writers (store lock).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> FsResult<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc_o_nofollow())
        .open(&tmp)
        .map_err(|e| FsError::new("create", &tmp, e))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| FsError::new("write", &tmp, e));
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &dst) {
        let _ = std::fs::remove_file(&tmp);
        return Err(FsError::new("rename into place", &dst, e));
    }
    sync_dir(dir)
}

/// `O_NOFOLLOW` as the `custom_flags` integer.
pub(crate) fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}
