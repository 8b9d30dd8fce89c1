//! Reading a USB stick: mounted read-only, nosuid, nodev, noexec on a
//! private mount point for as long as the guard lives, in the console's
//! process (never in PID 1). Only the top directory is walked, for bundle
//! directories (`*.airlock`); names are escaped before they are shown.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where sticks are mounted for reading (one directory per device).
pub const MOUNT_BASE: &str = "/run/airlock/stick-read";
/// Filesystems a stick may carry; the one its first bytes name is mounted
/// (`usb_label::fs_type`), all in turn only when they name none.
const FILESYSTEMS: &[&str] = &["vfat", "exfat", "ext4"];
/// Most entries of a stick's top directory looked at.
pub const MAX_ENTRIES: usize = 4096;

/// Failing operation of a stick read.
#[derive(Debug, Error)]
pub enum StickReadError {
    #[error("create the mount point {0}: {1}")]
    MountPoint(String, std::io::Error),
    #[error("mount {dev} read-only: not a FAT, exFAT or ext4 filesystem, or unreadable ({errno})")]
    Mount { dev: String, errno: nix::Error },
    #[error("read the top directory of {dev}: {source}")]
    ReadDir { dev: String, source: std::io::Error },
}

/// A stick mounted read-only; unmounted on drop.
pub struct Mounted {
    pub device: String,
    pub root: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.root, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// Mounts `/dev/DEV` read-only on `MOUNT_BASE/DEV`.
pub fn mount_ro(dev: &str) -> Result<Mounted, StickReadError> {
    mount_ro_at(dev, &Path::new(MOUNT_BASE).join(dev))
}

/// Mounts `/dev/DEV` read-only on `root` (created if missing); the same
/// flags and filesystem choice as [`mount_ro`] (`stickhold` keeps one per
/// console).
pub fn mount_ro_at(dev: &str, root: &Path) -> Result<Mounted, StickReadError> {
    let root = root.to_path_buf();
    std::fs::create_dir_all(&root)
        .map_err(|e| StickReadError::MountPoint(root.display().to_string(), e))?;
    let flags = MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NOATIME;
    let src = format!("/dev/{dev}");
    let mut last = nix::Error::EINVAL;
    for fs in crate::usb_label::mount_candidates(dev, FILESYSTEMS) {
        match mount(Some(src.as_str()), &root, Some(fs), flags, None::<&str>) {
            Ok(()) => {
                return Ok(Mounted {
                    device: dev.to_string(),
                    root,
                })
            }
            Err(e) => last = e,
        }
    }
    let _ = std::fs::remove_dir(&root);
    Err(StickReadError::Mount {
        dev: dev.to_string(),
        errno: last,
    })
}

/// The bundle directories (`NAME.airlock`) at the top of `root`, sorted
/// by name so that the same stick always lists the same way.
pub fn bundle_dirs(root: &Path, dev: &str) -> Result<Vec<PathBuf>, StickReadError> {
    let rd = std::fs::read_dir(root).map_err(|source| StickReadError::ReadDir {
        dev: dev.to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for ent in rd.take(MAX_ENTRIES).flatten() {
        let name = ent.file_name();
        let is_bundle = name.to_str().is_some_and(|n| n.ends_with(".airlock"));
        if is_bundle && ent.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(ent.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_dirs_are_listed_sorted_and_filtered() {
        let t = tempfile::tempdir().unwrap();
        for d in ["b_2.airlock", "a_1.airlock", "notes", "x.airlock.txt"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("c_3.airlock"), b"a file, not a bundle").unwrap();
        let got: Vec<String> = bundle_dirs(t.path(), "sdz")
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["a_1.airlock", "b_2.airlock"]);
    }
}
