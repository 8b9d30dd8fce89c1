//! Filesystems PID 1 mounts (policy as data), the state partition, and the
//! record of what to unmount at shutdown.

use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where the state partition is mounted.
pub const STATE_MOUNT: &str = "/var/lib/airlock";
/// GPT partition name of the state partition.
pub const STATE_PARTNAME: &str = "airlock-state";

/// Failing operation of this module.
#[derive(Debug, Error)]
pub enum MountError {
    #[error("mkdir {path}: {source}")]
    Mkdir {
        path: String,
        source: std::io::Error,
    },
    #[error("mount {fstype} on {target}: {errno}")]
    Mount {
        fstype: String,
        target: String,
        errno: nix::Error,
    },
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// One mount of the boot sequence.
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Early mounts, in order (unmounted in reverse at shutdown).
pub const EARLY: &[MountSpec] = &[
    // Device nodes (consoles, kmsg, block devices); no exec, no setuid.
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0755"),
    },
    // Processes and sysctls.
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    // Devices, network interfaces, block devices (read by lockdown and USB scan).
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    // The list of active LSMs (/sys/kernel/security/lsm) for `status`.
    MountSpec {
        source: "securityfs",
        target: "/sys/kernel/security",
        fstype: "securityfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    // Runtime state: RAM only, nothing executable.
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("mode=0755,size=16m"),
    },
    // Scratch space: RAM only (no swap exists), nothing executable.
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("mode=1777"),
    },
];

/// efivarfs, read-only, only when the firmware booted us through EFI
/// (`/sys/firmware/efi` exists): the state partition is bound to the disk
/// systemd-boot names in `LoaderDevicePartUUID` (`state.rs`). Read-only: no
/// process here may change boot entries or firmware settings.
pub const EFIVARS: MountSpec = MountSpec {
    source: "efivarfs",
    target: crate::state::EFIVARS,
    fstype: "efivarfs",
    flags: NOSUID_NODEV_NOEXEC.union(MsFlags::MS_RDONLY),
    data: None,
};

/// Outcome of one mount, for `status`/kmsg.
#[derive(Debug)]
pub struct Mounted {
    pub target: PathBuf,
}

/// What PID 1 mounted, in order.
#[derive(Debug, Default)]
pub struct MountTable {
    pub mounted: Vec<Mounted>,
}

impl MountTable {
    /// Mounts one spec (creating the target directory); EBUSY (already
    /// mounted, e.g. devtmpfs by the kernel) counts as done but is not
    /// recorded for unmounting.
    pub fn mount(&mut self, m: &MountSpec) -> Result<(), MountError> {
        std::fs::create_dir_all(m.target).map_err(|source| MountError::Mkdir {
            path: m.target.into(),
            source,
        })?;
        match nix::mount::mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) => {
                self.mounted.push(Mounted {
                    target: m.target.into(),
                });
                Ok(())
            }
            Err(nix::Error::EBUSY) => Ok(()),
            Err(errno) => Err(MountError::Mount {
                fstype: m.fstype.into(),
                target: m.target.into(),
                errno,
            }),
        }
    }

    /// Unmounts everything in reverse order; lazily where a plain unmount
    /// fails. Returns one line per mount that could not be unmounted.
    pub fn unmount_all(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        while let Some(m) = self.mounted.pop() {
            if let Err(e) = nix::mount::umount2(&m.target, MntFlags::empty()) {
                if let Err(e2) = nix::mount::umount2(&m.target, MntFlags::MNT_DETACH) {
                    problems.push(format!("{}: {e}, lazy: {e2}", m.target.display()));
                }
            }
        }
        problems
    }
}

/// Parses a sysfs `uevent` file (`KEY=VALUE` lines).
pub fn uevent_value<'a>(uevent: &'a str, key: &str) -> Option<&'a str> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Whether a sysfs device path runs through a USB bus (`.../usb1/1-1/...`).
pub fn is_usb_path(p: &Path) -> bool {
    p.components().any(|c| {
        let s = c.as_os_str().to_string_lossy();
        s.strip_prefix("usb")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Mounts the state partition `/dev/NAME` (ext4, nosuid,nodev,noexec).
pub fn mount_state(table: &mut MountTable, devname: &str) -> Result<(), MountError> {
    let source = format!("/dev/{devname}");
    std::fs::create_dir_all(STATE_MOUNT).map_err(|source| MountError::Mkdir {
        path: STATE_MOUNT.into(),
        source,
    })?;
    nix::mount::mount(
        Some(source.as_str()),
        STATE_MOUNT,
        Some("ext4"),
        NOSUID_NODEV_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| MountError::Mount {
        fstype: "ext4".into(),
        target: STATE_MOUNT.into(),
        errno,
    })?;
    table.mounted.push(Mounted {
        target: STATE_MOUNT.into(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn uevent_parsing() {
        let u = "MAJOR=254\nDEVNAME=vda2\nPARTNAME=airlock-state\n";
        assert_eq!(uevent_value(u, "DEVNAME"), Some("vda2"));
        assert_eq!(uevent_value(u, "PARTNAME"), Some("airlock-state"));
        assert_eq!(uevent_value(u, "PARTN"), None);
    }

    #[test]
    fn usb_paths() {
        assert!(is_usb_path(Path::new(
            "/sys/devices/pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0/host0"
        )));
        assert!(!is_usb_path(Path::new(
            "/sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vda"
        )));
        assert!(!is_usb_path(Path::new("/sys/devices/platform/usbfoo/x")));
    }
}
