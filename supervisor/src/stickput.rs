//! Putting files beside a document on a stick, all or nothing: a job's
//! `NAME.answer.gpg` and `NAME.answer.receipt`.
//!
//! [`RwStick::open`] mounts the stick read-write (nosuid, nodev, noexec)
//! on a mount point of this process, after the read-only mounts of it are
//! taken off (the kernel refuses a read-write mount beside them) and the
//! stick is marked busy (`eject` refuses meanwhile). [`RwStick::stage`]
//! writes each file under a hidden temporary name (`.NAME.partial`) and
//! fsyncs it; [`RwStick::commit`] renames every staged file to its name,
//! fsyncs the folder and unmounts (which flushes the stick). Dropped
//! without a commit, or on any failure, the staged files are removed and
//! the stick unmounted: a pulled or full stick keeps no half-written
//! answer (at worst a `.partial` file when the stick went away mid-write
//! and could not be cleaned, which the error then says).

use crate::stickwrite::StickWriteError;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Base of this process's read-write mount point.
pub const MOUNT_BASE: &str = "/run/airlock/stick-put";
/// Filesystems tried, in order.
const FILESYSTEMS: &[&str] = &["vfat", "exfat", "ext4"];

/// A stick mounted read-write for a job's files.
pub struct RwStick {
    dev: String,
    mount_point: PathBuf,
    /// The folder the files go to (the document's folder).
    dir: PathBuf,
    /// (temporary path, final path) of staged files.
    staged: Vec<(PathBuf, PathBuf)>,
    mounted: bool,
    _busy: crate::stickhold::Busy,
}

impl RwStick {
    /// Mounts `disk` read-write; the files will go to `folder` (empty: the
    /// stick's root; else one folder, as `run DIR/NAME` names it).
    pub fn open(disk: &str, folder: &[String], what: &str) -> Result<RwStick, StickWriteError> {
        let dev = crate::stickwrite::device_of(disk);
        let busy = crate::stickhold::Busy::claim(disk, what)?;
        crate::stickhold::unmount_ours(disk)?;
        let mount_point = PathBuf::from(format!("{MOUNT_BASE}.{}", std::process::id()));
        let _ = std::fs::create_dir_all(&mount_point);
        let flags =
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME;
        let src = format!("/dev/{dev}");
        let mut last = nix::Error::EINVAL;
        let mut mounted = false;
        for fs in crate::usb_label::mount_candidates(&dev, FILESYSTEMS) {
            match mount(
                Some(src.as_str()),
                &mount_point,
                Some(fs),
                flags,
                None::<&str>,
            ) {
                Ok(()) => {
                    mounted = true;
                    break;
                }
                Err(e) => last = e,
            }
        }
        if !mounted {
            return Err(StickWriteError::Mount { dev, errno: last });
        }
        let dir = folder.iter().fold(mount_point.clone(), |p, c| p.join(c));
        Ok(RwStick {
            dev,
            mount_point,
            dir,
            staged: Vec::new(),
            mounted: true,
            _busy: busy,
        })
    }

    /// A plain directory as the stick (tests).
    pub fn in_dir(dir: &Path, disk: &str) -> Result<RwStick, StickWriteError> {
        let busy = crate::stickhold::Busy::claim_in(&dir.join(".busy"), disk, "test")?;
        Ok(RwStick {
            dev: disk.into(),
            mount_point: dir.to_path_buf(),
            dir: dir.to_path_buf(),
            staged: Vec::new(),
            mounted: false,
            _busy: busy,
        })
    }

    /// `sdb1`
    pub fn device(&self) -> &str {
        &self.dev
    }

    /// The folder the files go to, as mounted here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `name` already exists in the folder.
    pub fn exists(&self, name: &str) -> bool {
        self.dir.join(name).symlink_metadata().is_ok()
    }

    /// Writes `bytes` as `.NAME.partial` in the folder and fsyncs it.
    pub fn stage(&mut self, name: &str, bytes: &[u8]) -> Result<(), StickWriteError> {
        let tmp = self.dir.join(format!(".{name}.partial"));
        let fin = self.dir.join(name);
        let _ = std::fs::remove_file(&tmp);
        let r = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| ("create", e))?;
            f.write_all(bytes).map_err(|e| ("write", e))?;
            f.sync_all().map_err(|e| ("fsync", e))
        })();
        match r {
            Ok(()) => {
                self.staged.push((tmp, fin));
                Ok(())
            }
            Err((op, source)) => {
                let left = std::fs::remove_file(&tmp).is_err() && tmp.exists();
                Err(self.failure(op, &tmp, source, left))
            }
        }
    }

    fn failure(
        &self,
        op: &'static str,
        path: &Path,
        source: std::io::Error,
        left: bool,
    ) -> StickWriteError {
        let shown = path
            .strip_prefix(&self.mount_point)
            .unwrap_or(path)
            .display()
            .to_string();
        if left {
            StickWriteError::WriteLeft {
                op,
                path: shown.clone(),
                dev: self.dev.clone(),
                name: shown,
                source,
            }
        } else {
            StickWriteError::Write {
                op,
                path: shown,
                dev: self.dev.clone(),
                source,
            }
        }
    }

    /// Renames every staged file to its name (an existing file of that
    /// name is refused, never replaced), fsyncs the folder and unmounts.
    pub fn commit(mut self) -> Result<(), StickWriteError> {
        for (_, fin) in &self.staged {
            if fin.symlink_metadata().is_ok() {
                let name = fin
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(StickWriteError::Exists {
                    dev: self.dev.clone(),
                    name,
                });
            }
        }
        let staged = std::mem::take(&mut self.staged);
        let mut done: Vec<PathBuf> = Vec::new();
        for (i, (tmp, fin)) in staged.iter().enumerate() {
            if let Err(e) = std::fs::rename(tmp, fin) {
                // Take back what was renamed, so no answer stands without
                // its receipt; the rest is removed on drop.
                for d in &done {
                    let _ = std::fs::remove_file(d);
                }
                self.staged = staged.get(i..).map(<[_]>::to_vec).unwrap_or_default();
                return Err(self.failure("rename", fin, e, false));
            }
            done.push(fin.clone());
        }
        if let Err(e) = std::fs::File::open(&self.dir).and_then(|d| d.sync_all()) {
            let dir = self.dir.clone();
            return Err(self.failure("fsync", &dir, e, false));
        }
        if self.mounted {
            self.mounted = false;
            umount2(&self.mount_point, MntFlags::empty()).map_err(|errno| {
                StickWriteError::Unmount {
                    dev: self.dev.clone(),
                    errno,
                }
            })?;
            nix::unistd::sync();
        }
        Ok(())
    }
}

impl Drop for RwStick {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            let _ = std::fs::remove_file(tmp);
        }
        if self.mounted && umount2(&self.mount_point, MntFlags::empty()).is_err() {
            let _ = umount2(&self.mount_point, MntFlags::MNT_DETACH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_appear_only_on_commit() {
        let t = tempfile::tempdir().unwrap();
        let mut s = RwStick::in_dir(t.path(), "sdz").unwrap();
        s.stage("a.answer.gpg", b"one").unwrap();
        s.stage("a.answer.receipt", b"two").unwrap();
        assert!(!t.path().join("a.answer.gpg").exists());
        assert!(t.path().join(".a.answer.gpg.partial").exists());
        s.commit().unwrap();
        assert_eq!(
            std::fs::read(t.path().join("a.answer.gpg")).unwrap(),
            b"one"
        );
        assert_eq!(
            std::fs::read(t.path().join("a.answer.receipt")).unwrap(),
            b"two"
        );
        assert!(!t.path().join(".a.answer.gpg.partial").exists());
    }

    #[test]
    fn dropped_without_commit_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        {
            let mut s = RwStick::in_dir(t.path(), "sdz").unwrap();
            s.stage("a.answer.gpg", b"one").unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".busy")
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn an_existing_answer_is_never_replaced() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.answer.gpg"), b"old").unwrap();
        let mut s = RwStick::in_dir(t.path(), "sdz").unwrap();
        assert!(s.exists("a.answer.gpg"));
        s.stage("a.answer.receipt", b"r").unwrap();
        s.stage("a.answer.gpg", b"new").unwrap();
        let e = s.commit().unwrap_err().to_string();
        assert_eq!(e, "sdz already holds a.answer.gpg; nothing was written");
        assert_eq!(
            std::fs::read(t.path().join("a.answer.gpg")).unwrap(),
            b"old"
        );
        assert!(!t.path().join("a.answer.receipt").exists());
        assert!(!t.path().join(".a.answer.gpg.partial").exists());
    }
}
