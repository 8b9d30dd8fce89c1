//! Writable copies of disk images, for tests whose writes must persist
//! across a reboot (a second [`Vm`](crate::Vm) booting the same file).
//!
//! `out/airlock.img` itself is only ever opened with `snapshot=on`; a test
//! that needs persistence boots a sparse copy ([`DiskCopy`]) with
//! [`VmConfig::with_writable_disk`](crate::VmConfig::with_writable_disk).
//! A provisioned image can be made once and copied per test the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Failures of copying a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("creating the directory {path} for disk copies failed: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running cp to copy {from} failed: {source}")]
    Spawn {
        from: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cp --sparse=always {from} {to} exited with {status}: {stderr}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Copies `from` to `to` keeping holes as holes (`cp --sparse=always`): a
/// 1 GiB image with ~35 MiB of data costs ~35 MiB and a fraction of a
/// second.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), DiskError> {
    let out = Command::new("cp")
        .arg("--sparse=always")
        .arg("--")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|source| DiskError::Spawn {
            from: from.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DiskError::Copy {
            from: from.to_owned(),
            to: to.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A test's own sparse copy of a disk image, in
/// `$TMPDIR/airlock-e2e/disks/<name>-<pid>.img`. Outlives the VMs that boot
/// it; removed on drop, except when the test is failing (or
/// `AIRLOCK_E2E_SHOW=1`), then kept for a post-mortem and its path printed.
#[derive(Debug)]
pub struct DiskCopy {
    path: PathBuf,
}

impl DiskCopy {
    /// Copies `image` (e.g. `Artifacts::disk_image()`, or a provisioned
    /// copy made earlier) for the test `name`.
    pub fn new(image: &Path, name: &str) -> Result<Self, DiskError> {
        let dir = std::env::temp_dir().join("airlock-e2e").join("disks");
        std::fs::create_dir_all(&dir).map_err(|source| DiskError::Dir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{name}-{}.img", std::process::id()));
        // A leftover of an earlier run with the same pid: cp overwrites it.
        copy_sparse(image, &path)?;
        Ok(DiskCopy { path })
    }

    /// Where the copy is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DiskCopy {
    fn drop(&mut self) {
        let show = std::env::var_os("AIRLOCK_E2E_SHOW").is_some_and(|v| v == "1");
        if std::thread::panicking() || show {
            eprintln!("disk copy kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn copies_are_sparse_equal_and_removed_on_drop() {
        let dir = std::env::temp_dir().join(format!("airlock-e2e-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.img");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"GPT header", 512).unwrap();
        f.write_all_at(b"state", 40 << 20).unwrap();
        drop(f);
        let copy = DiskCopy::new(&src, "unit").unwrap();
        let path = copy.path().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&src).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "copy allocates {} bytes",
            meta.blocks() * 512
        );
        drop(copy);
        assert!(!path.exists(), "copy not removed");
        let err = copy_sparse(&dir.join("absent.img"), &dir.join("x.img")).unwrap_err();
        assert!(
            err.to_string().contains("absent.img"),
            "error names the file: {err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
