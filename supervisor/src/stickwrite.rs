//! Writing a new directory of files to a USB stick, all or nothing.
//!
//! The stick is chosen among the inserted ones (named, or the only one),
//! its filesystem (FAT, exFAT or ext4: the first partition, else the whole
//! device) is mounted read-write with nosuid, nodev, noexec on a private
//! mount point, the files are written under `NAME.partial`, each fsynced,
//! the directory is renamed to `NAME` and fsynced, and the stick is
//! unmounted (which flushes it). A full or pulled stick fails at one of
//! these steps: the partial directory is removed when the stick is still
//! there, and the error says what happened. Nothing of the stick is read
//! except what the kernel's filesystem needs to mount it.

use crate::usb;
use airlock_formats::audit::layout;
use airlock_formats::audit::note::NoteVerifier;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where sticks are mounted for writing.
pub const MOUNT_POINT: &str = "/run/airlock/stick-write";
/// Filesystems tried, in order.
const FILESYSTEMS: &[&str] = &["vfat", "exfat", "ext4"];

/// Failing operation of a write to a stick.
#[derive(Debug, Error)]
pub enum StickWriteError {
    #[error("no USB stick is inserted")]
    NoStick,
    #[error("{0} sticks are inserted ({1}); name one, e.g. 'sdb'")]
    Several(usize, String),
    #[error("no inserted stick is called '{0}'")]
    Unknown(String),
    #[error("mount {dev}: not a FAT, exFAT or ext4 filesystem, or unreadable ({errno})")]
    Mount { dev: String, errno: nix::Error },
    #[error("{dev} already holds {name}; nothing was written")]
    Exists { dev: String, name: String },
    #[error("{op} {path} on {dev}: {source} (stick full or pulled?); nothing was left on it")]
    Write {
        op: &'static str,
        path: String,
        dev: String,
        source: std::io::Error,
    },
    #[error("{op} {path} on {dev}: {source}; the stick may hold an incomplete {name}.partial")]
    WriteLeft {
        op: &'static str,
        path: String,
        dev: String,
        name: String,
        source: std::io::Error,
    },
    #[error("unmount {dev}: {errno}; do not pull the stick yet")]
    Unmount { dev: String, errno: nix::Error },
    #[error("{0}")]
    Hold(#[from] crate::stickhold::StickHoldError),
    #[error("read the audit log {path}: {reason}")]
    Source { path: String, reason: String },
}

/// Where the files went.
#[derive(Debug)]
pub struct Written {
    /// `sdb1`
    pub device: String,
}

/// The block device to mount for stick `disk`: its first partition if it
/// has one, else the whole device.
pub(crate) fn device_of(disk: &str) -> String {
    let sys = Path::new("/sys/block").join(disk);
    let first = format!("{disk}1");
    if sys.join(&first).exists() {
        first
    } else {
        disk.to_string()
    }
}

pub(crate) fn choose(want: Option<&str>) -> Result<String, StickWriteError> {
    let sticks = usb::scan(Path::new("/sys/block"), &[]).unwrap_or_default();
    match want {
        Some(w) => sticks
            .iter()
            .find(|s| s.name == w)
            .map(|s| s.name.clone())
            .ok_or_else(|| StickWriteError::Unknown(crate::screen::line(w).into_owned())),
        None => match sticks.as_slice() {
            [] => Err(StickWriteError::NoStick),
            [one] => Ok(one.name.clone()),
            many => Err(StickWriteError::Several(
                many.len(),
                many.iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        },
    }
}

/// Writes `files` (flat names) into the new directory `name` on a stick.
pub fn write_new_dir(
    want: Option<&str>,
    name: &str,
    files: &[(String, Vec<u8>)],
) -> Result<Written, StickWriteError> {
    let disk = choose(want)?;
    let dev = device_of(&disk);
    // Marked busy while written ('eject' refuses meanwhile). The read-only
    // mounts of the stick (consoles' `usb`, an import) go first: the
    // kernel refuses a read-write mount beside a read-only one (EBUSY).
    let _busy = crate::stickhold::Busy::claim(&disk, name)?;
    crate::stickhold::unmount_ours(&disk)?;
    let mp = PathBuf::from(MOUNT_POINT);
    let _ = std::fs::create_dir_all(&mp);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME;
    let src = format!("/dev/{dev}");
    let mut last = nix::Error::EINVAL;
    let mut mounted = false;
    for fs in crate::usb_label::mount_candidates(&dev, FILESYSTEMS) {
        match mount(Some(src.as_str()), &mp, Some(fs), flags, None::<&str>) {
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
    let r = write_into(&mp, &dev, name, files);
    // Unmount in every case; it flushes what was written.
    let um = umount2(&mp, MntFlags::empty());
    r?;
    um.map_err(|errno| StickWriteError::Unmount {
        dev: dev.clone(),
        errno,
    })?;
    Ok(Written { device: dev })
}

/// The write itself, on a mounted filesystem at `root` (tests use a
/// plain directory).
pub fn write_into(
    root: &Path,
    dev: &str,
    name: &str,
    files: &[(String, Vec<u8>)],
) -> Result<(), StickWriteError> {
    let fin = root.join(name);
    if fin.exists() {
        return Err(StickWriteError::Exists {
            dev: dev.into(),
            name: name.into(),
        });
    }
    let partial = root.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let fail = |op: &'static str, path: &Path, source: std::io::Error| {
        let cleaned = std::fs::remove_dir_all(&partial).is_ok() || !partial.exists();
        if cleaned {
            StickWriteError::Write {
                op,
                path: path.display().to_string(),
                dev: dev.into(),
                source,
            }
        } else {
            StickWriteError::WriteLeft {
                op,
                path: path.display().to_string(),
                dev: dev.into(),
                name: name.into(),
                source,
            }
        }
    };
    std::fs::create_dir(&partial).map_err(|e| fail("create", &partial, e))?;
    for (f, bytes) in files {
        let p = partial.join(f);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail("create", parent, e))?;
        }
        let mut file = std::fs::File::create(&p).map_err(|e| fail("create", &p, e))?;
        file.write_all(bytes).map_err(|e| fail("write", &p, e))?;
        file.sync_all().map_err(|e| fail("fsync", &p, e))?;
    }
    for d in dirs_of(&partial, files) {
        sync_path(&d).map_err(|e| fail("fsync", &d, e))?;
    }
    std::fs::rename(&partial, &fin).map_err(|e| fail("rename", &fin, e))?;
    sync_path(root).map_err(|source| StickWriteError::WriteLeft {
        op: "fsync",
        path: root.display().to_string(),
        dev: dev.into(),
        name: name.into(),
        source,
    })?;
    Ok(())
}

fn dirs_of(base: &Path, files: &[(String, Vec<u8>)]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = files
        .iter()
        .filter_map(|(f, _)| base.join(f).parent().map(Path::to_path_buf))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn sync_path(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p)?.sync_all()
}

/// The files of an export of the log in `src` (entries, checkpoints with
/// proofs, audit.pub, VERIFY.txt), as (relative name, bytes). Each
/// segment is cut after its last complete line (the writer may be
/// appending while this reads).
pub fn log_files(src: &Path) -> Result<Vec<(String, Vec<u8>)>, StickWriteError> {
    let err = |path: &Path, reason: String| StickWriteError::Source {
        path: path.display().to_string(),
        reason,
    };
    let mut out = Vec::new();
    for (_, path) in layout::list_segments(src).map_err(|e| err(src, e.to_string()))? {
        let bytes = std::fs::read(&path).map_err(|e| err(&path, e.to_string()))?;
        let cut = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((
            format!("{}/{name}", layout::ENTRIES_DIR),
            bytes.get(..cut).unwrap_or(&[]).to_vec(),
        ));
    }
    let cps = layout::list_checkpoints(src).map_err(|e| err(src, e.to_string()))?;
    let pub_path = src.join(layout::PUBKEY_FILE);
    let pub_text = std::fs::read_to_string(&pub_path).map_err(|e| err(&pub_path, e.to_string()))?;
    let key = NoteVerifier::parse(pub_text.trim()).map_err(|e| err(&pub_path, e.to_string()))?;
    let mut last = None;
    for c in &cps {
        out.push((
            format!(
                "{}/{}",
                layout::CHECKPOINTS_DIR,
                layout::checkpoint_name(c.index)
            ),
            c.note.clone(),
        ));
        if let Some(p) = &c.proof {
            out.push((
                format!(
                    "{}/{}",
                    layout::CHECKPOINTS_DIR,
                    layout::proof_name(c.index)
                ),
                layout::proof_text(p).into_bytes(),
            ));
        }
        last = Some(c);
    }
    let last = match last {
        Some(c) => {
            let note = String::from_utf8_lossy(&c.note).into_owned();
            let cp = airlock_formats::audit::checkpoint::Checkpoint::open(&c.note, &key)
                .map_err(|e| err(src, e.to_string()))?;
            Some((cp, note))
        }
        None => None,
    };
    out.push((layout::PUBKEY_FILE.into(), format!("{key}\n").into_bytes()));
    let verify = airlock_formats::audit::writer::verify_text(
        &key,
        last.as_ref().map(|(c, n)| (c, n.as_str())),
    );
    out.push((layout::VERIFY_FILE.into(), verify.into_bytes()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directory_appears_whole_or_not_at_all() {
        let t = tempfile::tempdir().unwrap();
        let files = vec![
            ("a.txt".to_string(), b"one".to_vec()),
            ("sub/b.txt".to_string(), b"two".to_vec()),
        ];
        write_into(t.path(), "sdz1", "export-1", &files).unwrap();
        assert_eq!(
            std::fs::read(t.path().join("export-1/sub/b.txt")).unwrap(),
            b"two"
        );
        assert!(!t.path().join("export-1.partial").exists());
        // The same name again is refused and changes nothing.
        let e = write_into(t.path(), "sdz1", "export-1", &files).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sdz1 already holds export-1; nothing was written"
        );
        // A file that cannot be created (a name that is a directory
        // already in the set) fails and leaves no partial directory.
        let bad = vec![
            ("x".to_string(), b"1".to_vec()),
            ("x/y".to_string(), b"2".to_vec()),
        ];
        let e = write_into(t.path(), "sdz1", "export-2", &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing was left on it"), "{e}");
        assert!(!t.path().join("export-2.partial").exists());
        assert!(!t.path().join("export-2").exists());
    }
}
