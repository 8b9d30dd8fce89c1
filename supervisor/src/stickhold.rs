//! The sticks a console holds mounted read-only between commands, so that
//! `usb`, a later `run` and `eject` share one mount per stick instead of
//! mounting per command; and `eject`, which syncs and unmounts every mount
//! of a stick that Airlock made (any console's: they share the mount
//! namespace), then says the stick can be pulled.
//!
//! - Per console: `HOLD_BASE/<tty>/<dev>`, so one console's unmount never
//!   hits another's mount point. A held mount is checked before each use:
//!   still a mount point of that device, and the same stick (the inode of
//!   `/sys/block/<disk>` changes when a stick is pulled and another gets
//!   the same name); otherwise it is dropped and mounted again.
//! - Writing needs the read-only mounts gone (the kernel refuses a
//!   read-write mount of a filesystem mounted read-only elsewhere, EBUSY):
//!   `stickwrite` calls [`unmount_ours`] first; the holders notice.
//! - A writer marks the stick busy ([`Busy`], a file in `BUSY_DIR` naming
//!   its pid and what it writes); `eject` refuses while the mark stands.
//!   Jobs writing answers take the same mark (the hook for issue 11's `run`).

use crate::stickread::{self, Mounted, StickReadError};
use nix::mount::{umount2, MntFlags};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Per-console read-only mounts of held sticks.
pub const HOLD_BASE: &str = "/run/airlock/stick-hold";
/// Busy marks of sticks being written.
pub const BUSY_DIR: &str = "/run/airlock/stick-busy";
/// Every mount point Airlock makes for sticks is under this directory.
pub const OURS: &str = "/run/airlock/stick-";

/// Failing operation of holding or ejecting a stick.
#[derive(Debug, Error)]
pub enum StickHoldError {
    #[error("{0}")]
    Mount(#[from] StickReadError),
    #[error("{disk} is being written ({what}); wait for it to finish")]
    Busy { disk: String, what: String },
    #[error("mark {disk} busy: {source}")]
    Mark {
        disk: String,
        source: std::io::Error,
    },
    #[error("read /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
    #[error("unmount {path}: in use (an import or a job on another console is reading it); try again when it is done")]
    InUse { path: String },
    #[error("unmount {path}: {errno}")]
    Unmount { path: String, errno: nix::Error },
}

/// One held mount and the stick it belongs to.
struct Held {
    mounted: Mounted,
    /// `/sys/block/<disk>` inode when it was mounted.
    sys_ino: u64,
}

/// A console's held sticks, by disk name (`sdb`).
pub struct Holder {
    base: PathBuf,
    sys_block: PathBuf,
    held: BTreeMap<String, Held>,
}

fn sys_ino(sys_block: &Path, disk: &str) -> Option<u64> {
    std::fs::metadata(sys_block.join(disk))
        .ok()
        .map(|m| m.ino())
}

/// Whether `root` is still the mount of `/dev/DEV`.
fn still_mounted(root: &Path, dev: &str) -> bool {
    let Ok(here) = std::fs::metadata(root) else {
        return false;
    };
    let Ok(node) = std::fs::metadata(Path::new("/dev").join(dev)) else {
        return false;
    };
    here.dev() == node.rdev()
}

/// Whether `p` is a mount point (its device differs from its parent's).
fn is_mount_point(p: &Path) -> bool {
    let (Ok(here), Some(Ok(up))) = (std::fs::metadata(p), p.parent().map(std::fs::metadata)) else {
        return false;
    };
    here.dev() != up.dev()
}

impl Holder {
    /// The holder of console `tty`.
    pub fn new(tty: &str) -> Holder {
        Holder {
            base: Path::new(HOLD_BASE).join(tty),
            sys_block: PathBuf::from("/sys/block"),
            held: BTreeMap::new(),
        }
    }

    /// The root of `disk`'s read-only mount (the filesystem on `dev`, its
    /// first partition or the disk), mounted now unless held and sound.
    pub fn root(&mut self, disk: &str, dev: &str) -> Result<PathBuf, StickHoldError> {
        let ino = sys_ino(&self.sys_block, disk);
        if let Some(h) = self.held.get(disk) {
            if h.mounted.device == dev
                && Some(h.sys_ino) == ino
                && still_mounted(&h.mounted.root, dev)
            {
                return Ok(h.mounted.root.clone());
            }
            self.release(disk);
        }
        // A mount left there by this console's previous run (a crash) is
        // taken off first, so mounts never stack up on one point.
        let point = self.base.join(dev);
        while is_mount_point(&point) {
            if umount2(&point, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let mounted = stickread::mount_ro_at(dev, &point)?;
        let root = mounted.root.clone();
        self.held.insert(
            disk.to_string(),
            Held {
                mounted,
                sys_ino: ino.unwrap_or(0),
            },
        );
        Ok(root)
    }

    /// Drops the held mount of `disk` (lazy unmount); true if one was held.
    pub fn release(&mut self, disk: &str) -> bool {
        self.held.remove(disk).is_some()
    }

    /// Forgets sticks that are gone (`present`: the disks inserted now).
    pub fn prune(&mut self, present: &[String]) {
        let gone: Vec<String> = self
            .held
            .keys()
            .filter(|d| !present.contains(d))
            .cloned()
            .collect();
        for d in gone {
            self.release(&d);
        }
    }

    /// The disks held now.
    pub fn held(&self) -> Vec<String> {
        self.held.keys().cloned().collect()
    }
}

/// A stick marked busy while something writes to it; unmarked on drop.
pub struct Busy {
    path: PathBuf,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Busy {
    /// Marks `disk` busy with `what` (`keys export on ttyS0`).
    pub fn claim(disk: &str, what: &str) -> Result<Busy, StickHoldError> {
        Busy::claim_in(Path::new(BUSY_DIR), disk, what)
    }

    pub(crate) fn claim_in(dir: &Path, disk: &str, what: &str) -> Result<Busy, StickHoldError> {
        if let Some(other) = busy_in(dir, disk) {
            return Err(StickHoldError::Busy {
                disk: disk.into(),
                what: other,
            });
        }
        let mark = |source| StickHoldError::Mark {
            disk: disk.into(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(mark)?;
        let path = dir.join(disk);
        std::fs::write(&path, format!("{} {what}", std::process::id())).map_err(mark)?;
        Ok(Busy { path })
    }
}

/// What is writing to `disk`, if anything (a mark whose process is gone
/// does not count).
pub fn busy(disk: &str) -> Option<String> {
    busy_in(Path::new(BUSY_DIR), disk)
}

fn busy_in(dir: &Path, disk: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(disk)).ok()?;
    let (pid, what) = text.split_once(' ')?;
    let alive = pid
        .parse::<u32>()
        .is_ok_and(|p| p == std::process::id() || Path::new("/proc").join(p.to_string()).exists());
    alive.then(|| crate::screen::line(what).into_owned())
}

/// Whether the device named in a mount's source (`/dev/sdb1`) is `disk`
/// or one of its partitions (`sdb1`, `mmcblk0p1`).
fn is_on(source: &str, disk: &str) -> bool {
    let Some(name) = source.strip_prefix("/dev/") else {
        return false;
    };
    let Some(rest) = name.strip_prefix(disk) else {
        return false;
    };
    rest.is_empty() || is_partition_suffix(disk, rest)
}

/// Whether `rest` after a disk's name names one of its partitions: `1`
/// after `sdb`, `p1` after a name ending in a digit (`mmcblk0p1`,
/// `loop0p1`; `loop10` is not a partition of `loop1`).
pub fn is_partition_suffix(disk: &str, rest: &str) -> bool {
    let digits = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        match rest.strip_prefix('p') {
            Some(d) => d,
            None => return false,
        }
    } else {
        rest
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `\040` and the like in a mountinfo field.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(o) => {
                let v = o.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points under [`OURS`] of `disk` in a mountinfo text, deepest
/// (latest) first.
pub fn mounts_of(mountinfo: &str, disk: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let point = left.split(' ').nth(4).map(unescape);
        let source = right.split(' ').nth(1).map(unescape);
        if let (Some(point), Some(source)) = (point, source) {
            if point.starts_with(OURS) && is_on(&source, disk) {
                out.push(PathBuf::from(point));
            }
        }
    }
    out.reverse();
    out
}

/// Syncs and unmounts every mount of `disk` Airlock made; the mount
/// points unmounted. A mount in use is left and named in the error.
pub fn unmount_ours(disk: &str) -> Result<Vec<PathBuf>, StickHoldError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(StickHoldError::MountInfo)?;
    let mut done = Vec::new();
    for point in mounts_of(&info, disk) {
        // Flush what a writer left (read-only mounts have nothing).
        if let Ok(f) = std::fs::File::open(&point) {
            let _ = nix::unistd::syncfs(&f);
        }
        match umount2(&point, MntFlags::empty()) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {
                let _ = std::fs::remove_dir(&point);
                done.push(point);
            }
            Err(nix::Error::EBUSY) => {
                return Err(StickHoldError::InUse {
                    path: point.display().to_string(),
                })
            }
            Err(errno) => {
                return Err(StickHoldError::Unmount {
                    path: point.display().to_string(),
                    errno,
                })
            }
        }
    }
    nix::unistd::sync();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:21 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
40 22 8:17 / /run/airlock/stick-hold/ttyS0/sdb1 ro,nosuid,nodev,noexec,noatime shared:20 - vfat /dev/sdb1 ro
41 22 8:17 / /run/airlock/stick-read/sdb1 ro,nosuid shared:21 - vfat /dev/sdb1 ro
42 22 8:33 / /run/airlock/stick-hold/tty1/sdc ro shared:22 - ext4 /dev/sdc ro
43 22 8:17 / /mnt/elsewhere ro shared:23 - vfat /dev/sdb1 ro
44 22 8:18 / /run/airlock/stick-hold/with\\040space/sdb10 ro - vfat /dev/sdb10 ro
45 22 179:1 / /run/airlock/stick-write rw - vfat /dev/mmcblk0p1 rw
";

    #[test]
    fn finds_only_our_mounts_of_the_disk() {
        // (disk, mount points found, latest first)
        let cases: &[(&str, &[&str])] = &[
            (
                "sdb",
                &[
                    "/run/airlock/stick-hold/with space/sdb10",
                    "/run/airlock/stick-read/sdb1",
                    "/run/airlock/stick-hold/ttyS0/sdb1",
                ],
            ),
            ("sdc", &["/run/airlock/stick-hold/tty1/sdc"]),
            ("sd", &[]),
            ("mmcblk0", &["/run/airlock/stick-write"]),
        ];
        for (disk, want) in cases {
            let got = mounts_of(INFO, disk);
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "{disk}");
        }
        assert!(is_on("/dev/sdb", "sdb"));
        assert!(!is_on("/dev/sdbx", "sdb"));
        assert!(!is_on("sdb1", "sdb"));
        assert!(is_on("/dev/mmcblk0p2", "mmcblk0"));
        assert!(!is_on("/dev/loop10", "loop1"));
        assert!(!is_on("/dev/sdbp1", "sdb"));
    }

    #[test]
    fn busy_marks_refuse_a_second_writer_and_go_with_their_guard() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("busy");
        assert_eq!(busy_in(&dir, "sdb"), None);
        let g = Busy::claim_in(&dir, "sdb", "keys export on ttyS0").unwrap();
        assert_eq!(
            busy_in(&dir, "sdb").as_deref(),
            Some("keys export on ttyS0")
        );
        let e = Busy::claim_in(&dir, "sdb", "run")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "sdb is being written (keys export on ttyS0); wait for it to finish"
        );
        assert_eq!(busy_in(&dir, "sdc"), None);
        drop(g);
        assert_eq!(busy_in(&dir, "sdb"), None);
        // A mark left by a process that is gone does not count.
        std::fs::write(dir.join("sdb"), "999999999 run").unwrap();
        assert_eq!(busy_in(&dir, "sdb"), None);
    }

    #[test]
    fn mount_points() {
        assert!(is_mount_point(Path::new("/proc")));
        let t = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(t.path()));
        assert!(!is_mount_point(&t.path().join("missing")));
    }

    #[test]
    fn holder_prunes_sticks_that_are_gone() {
        let mut h = Holder::new("ttyS0");
        assert!(h.held().is_empty());
        h.prune(&["sdb".to_string()]);
        assert!(!h.release("sdb"));
    }
}
