//! The EFI system partition: found, mounted (read-write only while a slot
//! changes, one user at a time), its slot entries listed, and the file
//! operations of an update, each followed by a `syncfs` so that a power
//! cut leaves either the old or the new name, never a half file under a
//! name systemd-boot boots.
//!
//! Which partition: the one named `airlock-esp` on the disk that holds the
//! mounted state partition, and, when systemd-boot said which ESP it was
//! started from (`LoaderDevicePartUUID`), that one by GUID. Used from the
//! console's process and the `system-boot` child, never from PID 1.

use super::slots::{EntryName, Known, Slot};
use crate::mounts::{uevent_value, STATE_MOUNT};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// GPT name of the ESP (image/partitions.sh `ESP_NAME`).
pub const ESP_PARTNAME: &str = "airlock-esp";
/// Where the ESP is mounted while in use.
pub const MOUNT_POINT: &str = "/run/airlock/esp";
/// The lock that serialises users of the ESP (tmpfs).
pub const LOCK_FILE: &str = "/run/airlock/esp.lock";
/// The slots' directory on the ESP.
pub const LINUX_DIR: &str = "EFI/Linux";

/// Failing operation on the ESP.
#[derive(Debug, Error)]
pub enum EspError {
    #[error("the state partition is not mounted; the boot disk is unknown")]
    NoState,
    #[error("no partition named {ESP_PARTNAME} on the boot disk {0}")]
    NotFound(String),
    #[error("read the partition table of {disk}: {reason}")]
    Table { disk: String, reason: String },
    #[error("{dev} is not the ESP the PC booted from (LoaderDevicePartUUID {want}); refusing to write it")]
    NotBootEsp { dev: String, want: String },
    #[error("another console is changing the boot slots; try again when it is done")]
    Busy,
    #[error("lock {LOCK_FILE}: {0}")]
    Lock(std::io::Error),
    #[error("mount the ESP {dev}: {errno}")]
    Mount { dev: String, errno: nix::Error },
    #[error("{op} {path} on the ESP: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("flush the ESP: {0}")]
    Sync(nix::Error),
}

/// The device of the filesystem mounted at `target`, from a
/// `/proc/self/mountinfo` text: `vda2` for `/dev/vda2`.
pub fn device_of_mount(mountinfo: &str, target: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let mut f = l.split(' ');
        let point = f.nth(4)?;
        if point != target {
            return None;
        }
        // After the optional fields: " - FSTYPE SOURCE OPTIONS".
        let (_, tail) = l.split_once(" - ")?;
        let source = tail.split(' ').nth(1)?;
        source.strip_prefix("/dev/").map(str::to_string)
    })
}

/// The partition named [`ESP_PARTNAME`] beside `state_dev` (same disk),
/// from sysfs under `sys_class_block`: (partition, disk, first sector).
pub fn find_beside(
    sys_class_block: &Path,
    state_dev: &str,
) -> Result<(String, String, u64), EspError> {
    let real = std::fs::canonicalize(sys_class_block.join(state_dev))
        .map_err(|_| EspError::NotFound(state_dev.to_string()))?;
    let disk_dir = real
        .parent()
        .ok_or_else(|| EspError::NotFound(state_dev.to_string()))?;
    let disk = disk_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rd = std::fs::read_dir(disk_dir).map_err(|_| EspError::NotFound(disk.clone()))?;
    let mut found = Vec::new();
    for e in rd.flatten() {
        let Ok(uevent) = std::fs::read_to_string(e.path().join("uevent")) else {
            continue;
        };
        if uevent_value(&uevent, "DEVTYPE") != Some("partition")
            || uevent_value(&uevent, "PARTNAME") != Some(ESP_PARTNAME)
        {
            continue;
        }
        let dev = uevent_value(&uevent, "DEVNAME")
            .map(str::to_string)
            .unwrap_or_else(|| e.file_name().to_string_lossy().into_owned());
        let start = std::fs::read_to_string(e.path().join("start"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u64::MAX);
        found.push((dev, start));
    }
    found.sort();
    match found.as_slice() {
        [(dev, start)] => Ok((dev.clone(), disk, *start)),
        _ => Err(EspError::NotFound(disk)),
    }
}

/// The ESP's device on this appliance (`vda1`), checked against
/// `LoaderDevicePartUUID` when systemd-boot set it.
pub fn locate() -> Result<String, EspError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let state = device_of_mount(&mountinfo, STATE_MOUNT).ok_or(EspError::NoState)?;
    let (dev, disk, start) = find_beside(Path::new("/sys/class/block"), &state)?;
    let want = crate::state::boot_esp(Path::new(crate::state::EFIVARS))
        .ok()
        .flatten();
    if let Some(want) = want {
        let lbs = std::fs::read_to_string(format!("/sys/block/{disk}/queue/logical_block_size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(512);
        let table =
            crate::gpt::read(&Path::new("/dev").join(&disk), lbs).map_err(|e| EspError::Table {
                disk: disk.clone(),
                reason: e.to_string(),
            })?;
        let ok = table.iter().any(|e| e.start == start && e.guid == want);
        if !ok {
            return Err(EspError::NotBootEsp { dev, want });
        }
    }
    Ok(dev)
}

/// The ESP mounted at [`MOUNT_POINT`] under the exclusive lock; synced and
/// unmounted on drop.
pub struct Mounted {
    pub root: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl Mounted {
    /// `EFI/Linux` on the ESP.
    pub fn linux_dir(&self) -> PathBuf {
        self.root.join(LINUX_DIR)
    }

    /// Flushes the whole filesystem (data and directory entries).
    pub fn sync(&self) -> Result<(), EspError> {
        let d = File::open(&self.root).map_err(|source| EspError::Io {
            op: "open",
            path: self.root.display().to_string(),
            source,
        })?;
        nix::unistd::syncfs(d.as_fd()).map_err(EspError::Sync)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.sync();
        let _ = umount2(&self.root, MntFlags::empty())
            .or_else(|_| umount2(&self.root, MntFlags::MNT_DETACH));
    }
}

/// Mounts the ESP `dev` (read-write when `write`), after taking the lock;
/// [`EspError::Busy`] when another process holds it.
pub fn mount_esp(dev: &str, write: bool) -> Result<Mounted, EspError> {
    if let Some(dir) = Path::new(LOCK_FILE).parent() {
        std::fs::create_dir_all(dir).map_err(EspError::Lock)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(EspError::Lock)?;
    // A lock belongs to the open file description; it goes when the
    // descriptor closes (the process exits or the guard drops).
    match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => mount_locked(dev, write, held),
        Err((_, nix::Error::EWOULDBLOCK)) => Err(EspError::Busy),
        Err((_, e)) => Err(EspError::Lock(e.into())),
    }
}

fn mount_locked(
    dev: &str,
    write: bool,
    lock: nix::fcntl::Flock<File>,
) -> Result<Mounted, EspError> {
    let root = PathBuf::from(MOUNT_POINT);
    std::fs::create_dir_all(&root).map_err(|source| EspError::Io {
        op: "create",
        path: MOUNT_POINT.into(),
        source,
    })?;
    // A leftover mount of a killed process goes first.
    let _ = umount2(&root, MntFlags::MNT_DETACH);
    let mut flags =
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME;
    if !write {
        flags |= MsFlags::MS_RDONLY;
    }
    let src = format!("/dev/{dev}");
    mount(
        Some(src.as_str()),
        &root,
        Some("vfat"),
        flags,
        Some("umask=0077"),
    )
    .map_err(|errno| EspError::Mount {
        dev: dev.to_string(),
        errno,
    })?;
    Ok(Mounted { root, _lock: lock })
}

/// The slot entries in `linux_dir` with their paths, sorted by slot; any
/// other file is ignored.
pub fn entries(linux_dir: &Path) -> Result<Vec<(EntryName, PathBuf)>, EspError> {
    let rd = std::fs::read_dir(linux_dir).map_err(|source| EspError::Io {
        op: "read",
        path: linux_dir.display().to_string(),
        source,
    })?;
    let mut out: Vec<(EntryName, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name();
            EntryName::parse(n.to_str()?).map(|p| (p, e.path()))
        })
        .collect();
    out.sort_by_key(|(n, _)| (n.slot, n.file_name()));
    Ok(out)
}

/// The system version an entry's UKI carries (its `.osrel`), `None` when
/// unreadable.
pub fn version_of(path: &Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    airlock_formats::uki::read_osrel(&mut f)
        .ok()?
        .system_version()
}

/// The entries with their versions (for [`super::slots::boot_order`]).
pub fn known(entries: &[(EntryName, PathBuf)]) -> Vec<Known> {
    entries
        .iter()
        .map(|(name, path)| Known {
            name: *name,
            version: version_of(path),
        })
        .collect()
}

/// Renames `from` to `to` inside `dir`, then flushes the filesystem.
pub fn rename(esp: &Mounted, dir: &Path, from: &str, to: &str) -> Result<(), EspError> {
    std::fs::rename(dir.join(from), dir.join(to)).map_err(|source| EspError::Io {
        op: "rename",
        path: format!("{from} to {to}"),
        source,
    })?;
    esp.sync()
}

/// Removes `name` from `dir` (absent is fine), then flushes.
pub fn remove(esp: &Mounted, dir: &Path, name: &str) -> Result<bool, EspError> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => {
            esp.sync()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(EspError::Io {
            op: "remove",
            path: name.to_string(),
            source,
        }),
    }
}

/// Removes the temporary files of interrupted installs (`.airlock-X.new`);
/// returns their names.
pub fn clean_temp(esp: &Mounted) -> Result<Vec<String>, EspError> {
    let dir = esp.linux_dir();
    let mut removed = Vec::new();
    for slot in Slot::ALL {
        let n = slot.temp_name();
        if remove(esp, &dir, &n)? {
            removed.push(n);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_source_from_mountinfo() {
        let info = "22 1 0:20 / / rw - rootfs rootfs rw\n\
                    35 22 254:2 / /var/lib/airlock rw,nosuid,nodev,noexec shared:5 - ext4 /dev/vda2 rw\n\
                    36 22 8:17 / /run/airlock/stick-read/sdb rw - vfat /dev/sdb1 ro\n";
        assert_eq!(
            device_of_mount(info, "/var/lib/airlock").as_deref(),
            Some("vda2")
        );
        assert_eq!(
            device_of_mount(info, "/run/airlock/stick-read/sdb").as_deref(),
            Some("sdb1")
        );
        assert_eq!(device_of_mount(info, "/mnt"), None);
        assert_eq!(
            device_of_mount(info, "/"),
            None,
            "rootfs has no /dev source"
        );
    }

    fn fake_disk(root: &Path, parts: &[(&str, &str, u64)]) {
        let disk = root.join("devices/vda");
        for (dev, name, start) in parts {
            let p = disk.join(dev);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(
                p.join("uevent"),
                format!("DEVTYPE=partition\nPARTNAME={name}\nDEVNAME={dev}\n"),
            )
            .unwrap();
            std::fs::write(p.join("start"), format!("{start}\n")).unwrap();
            std::os::unix::fs::symlink(&p, root.join("class").join(dev)).unwrap();
        }
    }

    #[test]
    fn esp_is_found_beside_the_state() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("class")).unwrap();
        fake_disk(
            t.path(),
            &[
                ("vda1", "airlock-esp", 2048),
                ("vda2", "airlock-state", 526336),
            ],
        );
        let (dev, disk, start) = find_beside(&t.path().join("class"), "vda2").unwrap();
        assert_eq!((dev.as_str(), disk.as_str(), start), ("vda1", "vda", 2048));
        let t2 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t2.path().join("class")).unwrap();
        fake_disk(t2.path(), &[("vda2", "airlock-state", 526336)]);
        let e = find_beside(&t2.path().join("class"), "vda2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no partition named airlock-esp on the boot disk vda"
        );
    }

    #[test]
    fn entries_lists_slot_files_only() {
        let t = tempfile::tempdir().unwrap();
        for n in [
            "airlock-a.efi",
            "airlock-b+2-1.efi",
            ".airlock-b.new",
            "x.efi",
        ] {
            std::fs::write(t.path().join(n), b"x").unwrap();
        }
        let names: Vec<String> = entries(t.path())
            .unwrap()
            .iter()
            .map(|(n, _)| n.file_name())
            .collect();
        assert_eq!(names, ["airlock-a.efi", "airlock-b+2-1.efi"]);
    }
}
