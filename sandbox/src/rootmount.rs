//! Is the caller's root the absolute root of its mount namespace?
//!
//! `pivot_root(2)` fails with `EINVAL` when the current root mount has no parent: that is the
//! initramfs `rootfs` of a machine whose PID 1 never switched root. On such a root the old tree
//! cannot be detached, so the spawner refuses (fail closed) and PID 1 leaves the initramfs at
//! boot (`airlock_supervisor::rootfs`). Both ask this module, which reads the kernel's own
//! account: `statx(STATX_MNT_ID_UNIQUE)` names the root's mount, `statmount(2)` (Linux 6.8)
//! gives that mount's parent, and the namespace's absolute root is its own parent.

use std::ffi::CStr;

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8): `stx_mnt_id` holds the 64-bit unique mount id.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
/// Offset of `stx_mnt_id` in `struct statx` (uapi/linux/stat.h).
const STX_MNT_ID_OFFSET: usize = 144;
/// `statmount(2)` on x86_64.
const SYS_STATMOUNT: libc::c_long = 457;
/// `STATMOUNT_SB_BASIC`: superblock magic, device, flags.
const STATMOUNT_SB_BASIC: u64 = 0x1;
/// `STATMOUNT_MNT_BASIC`: mount id and parent id.
const STATMOUNT_MNT_BASIC: u64 = 0x2;
/// Size of `struct mnt_id_req` version 0.
const MNT_ID_REQ_SIZE_VER0: u32 = 24;
/// Offsets in `struct statmount` (uapi/linux/mount.h).
const SM_MASK: usize = 8;
const SM_SB_MAGIC: usize = 24;
const SM_MNT_ID: usize = 40;
const SM_MNT_PARENT_ID: usize = 48;

/// Errors of this module; each variant names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum RootMountError {
    /// `statx` of the path failed or gave no unique mount id.
    #[error("root mount: statx({path}, STATX_MNT_ID_UNIQUE): {source}")]
    Statx {
        /// Path asked about.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// `statmount` of the mount failed (ENOSYS before Linux 6.8).
    #[error("root mount: statmount(mount {mnt_id}): {source}")]
    Statmount {
        /// Unique mount id.
        mnt_id: u64,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// What the kernel says about the mount a path is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountFacts {
    /// Unique id of the mount.
    pub mnt_id: u64,
    /// Unique id of its parent (equal to `mnt_id` for the namespace's absolute root).
    pub parent_id: u64,
    /// Superblock magic (`TMPFS_MAGIC`, `RAMFS_MAGIC`, `EXT4_SUPER_MAGIC`, ...).
    pub sb_magic: u64,
}

impl MountFacts {
    /// True when the mount is the absolute root of its namespace (it has no parent), where
    /// `pivot_root` answers `EINVAL`.
    pub fn is_absolute_root(&self) -> bool {
        self.mnt_id == self.parent_id
    }
}

fn read_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_ne_bytes(b)
}

/// The mount facts of `path` (the mount the path's final component is on).
pub fn facts(path: &CStr) -> Result<MountFacts, RootMountError> {
    let name = path.to_string_lossy().into_owned();
    let mut stx = [0u8; 256];
    // SAFETY: statx writes at most sizeof(struct statx) (256 bytes) into the buffer; the path
    // is NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            path.as_ptr(),
            0,
            STATX_MNT_ID_UNIQUE,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(RootMountError::Statx {
            path: name,
            source: std::io::Error::last_os_error(),
        });
    }
    let mask = u32::from_ne_bytes([stx[0], stx[1], stx[2], stx[3]]);
    if mask & STATX_MNT_ID_UNIQUE == 0 {
        return Err(RootMountError::Statx {
            path: name,
            source: std::io::Error::other("kernel gave no unique mount id (before Linux 6.8)"),
        });
    }
    let mnt_id = read_u64(&stx, STX_MNT_ID_OFFSET);
    // struct mnt_id_req { u32 size; u32 spare; u64 mnt_id; u64 param; }
    let mut req = [0u8; MNT_ID_REQ_SIZE_VER0 as usize];
    req[..4].copy_from_slice(&MNT_ID_REQ_SIZE_VER0.to_ne_bytes());
    req[8..16].copy_from_slice(&mnt_id.to_ne_bytes());
    req[16..24].copy_from_slice(&(STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC).to_ne_bytes());
    let mut sm = [0u64; 64]; // 512 bytes, 8-aligned; no strings are asked for
                             // SAFETY: req is a valid mnt_id_req of the declared size; sm is a writable buffer of the
                             // size passed; flags 0.
    let rc = unsafe {
        libc::syscall(
            SYS_STATMOUNT,
            req.as_ptr(),
            sm.as_mut_ptr(),
            std::mem::size_of_val(&sm),
            0,
        )
    };
    if rc != 0 {
        return Err(RootMountError::Statmount {
            mnt_id,
            source: std::io::Error::last_os_error(),
        });
    }
    let bytes: Vec<u8> = sm.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let got = read_u64(&bytes, SM_MASK);
    if got & STATMOUNT_MNT_BASIC == 0 {
        return Err(RootMountError::Statmount {
            mnt_id,
            source: std::io::Error::other("kernel returned no STATMOUNT_MNT_BASIC"),
        });
    }
    Ok(MountFacts {
        mnt_id: read_u64(&bytes, SM_MNT_ID),
        parent_id: read_u64(&bytes, SM_MNT_PARENT_ID),
        sb_magic: if got & STATMOUNT_SB_BASIC != 0 {
            read_u64(&bytes, SM_SB_MAGIC)
        } else {
            0
        },
    })
}

/// The facts of the caller's root mount.
pub fn root() -> Result<MountFacts, RootMountError> {
    facts(c"/")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn absolute_root_is_its_own_parent() {
        for (id, parent, want) in [(1, 1, true), (27, 1, false), (5, 4, false)] {
            let f = MountFacts {
                mnt_id: id,
                parent_id: parent,
                sb_magic: 0,
            };
            assert_eq!(f.is_absolute_root(), want, "{f:?}");
        }
    }

    #[test]
    fn a_disk_rooted_host_root_has_a_parent() {
        // Every host this runs on booted with a root mounted over the initramfs rootfs.
        let f = root().unwrap();
        assert!(!f.is_absolute_root(), "{f:?}");
        assert_ne!(f.mnt_id, 0);
    }
}
