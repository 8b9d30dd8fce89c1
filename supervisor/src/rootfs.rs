//! PID 1 leaves the initramfs rootfs for a tmpfs root, first thing at boot (like util-linux
//! `switch_root`, without a real root file system to switch to).
//!
//! Why: the kernel's rootfs is the absolute root of the initial mount namespace; it has no
//! parent mount, so `pivot_root(2)` refuses to move it (`EINVAL`). The sandbox's spawn path
//! (airlock-sandbox, `child.rs`) drops the host's whole tree from a sandbox's mount namespace
//! with a plain `pivot_root` and one lazy detach, which needs a root mount *with* a parent;
//! it refuses to spawn from an absolute root. After this step "/" is a tmpfs mounted on the
//! (then empty) rootfs, and every later mount (/dev, /proc, /sys, /run, the state partition)
//! lies on that tmpfs, so a sandbox's detach takes all of them.
//!
//! How: mount a tmpfs at [`NEW_ROOT_DIR`], move every entry of the rootfs into it (copy, then
//! unlink the original at once, so RAM holds each file once), `chdir` into it,
//! `mount(".", "/", MS_MOVE)`, `chroot(".")`, `chdir("/")`. The running `/init` is copied like
//! any file; its old inode stays pinned by PID 1's mapping until PID 1 re-executes `/init`
//! from the new root ([`reexec`]), which frees it and makes `/proc/self/exe` name the live file.
//!
//! The tmpfs is `nosuid,nodev`, mode 0755, and keeps `exec`: the image's programs (`/init`,
//! `/bin/airlock-*`) run from it. Device nodes of the initramfs are recreated (inert under
//! nodev; devtmpfs is mounted on /dev right after), sockets are dropped.
//!
//! It runs only when the root mount has no parent (statmount, `airlock_sandbox::rootmount`):
//! a PID 1 in a namespace on a disk root (the supervisor's own host tests) is left alone.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_sandbox::rootmount::{self, RootMountError};
use nix::mount::MsFlags;

/// Where the new root tmpfs is mounted inside the rootfs before it is moved onto `/`.
pub const NEW_ROOT_DIR: &str = "/.airlock-root";

/// Mount flags of the new root: no setuid programs, no device nodes; exec stays (our binaries).
const NEW_ROOT_FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// tmpfs options of the new root.
const NEW_ROOT_DATA: &str = "mode=0755";

/// Errors of this module; each variant names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The root mount could not be examined.
    #[error("rootfs: {0}")]
    Facts(#[from] RootMountError),
    /// Creating a directory failed.
    #[error("rootfs: mkdir {path}: {source}")]
    Mkdir {
        /// Path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Mounting the new root tmpfs failed.
    #[error("rootfs: mount tmpfs on {NEW_ROOT_DIR}: {0}")]
    Mount(nix::Error),
    /// Reading the old root failed.
    #[error("rootfs: reading {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Copying an entry into the new root failed.
    #[error("rootfs: copying {path}: {source}")]
    Copy {
        /// Path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Removing the original of a moved entry failed.
    #[error("rootfs: removing {path}: {source}")]
    Remove {
        /// Path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// `chdir` into the new root failed.
    #[error("rootfs: chdir {path}: {errno}")]
    Chdir {
        /// Path.
        path: PathBuf,
        /// errno.
        errno: nix::Error,
    },
    /// `mount(".", "/", MS_MOVE)` failed.
    #[error("rootfs: moving the new root onto /: {0}")]
    MoveMount(nix::Error),
    /// `chroot(".")` failed.
    #[error("rootfs: chroot into the new root: {0}")]
    Chroot(nix::Error),
}

/// What [`leave_initramfs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The root already has a parent mount (disk root, or a second boot pass): nothing to do.
    NotNeeded,
    /// The root was switched to a tmpfs.
    Switched(Moved),
}

/// What moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Entries recreated in the new root (files, dirs, links, nodes).
    pub entries: usize,
    /// Bytes of regular files copied.
    pub bytes: u64,
    /// Sockets dropped.
    pub skipped: usize,
}

/// Leaves the initramfs rootfs for a tmpfs root when the root mount has no parent.
pub fn leave_initramfs() -> Result<Outcome, RootfsError> {
    if !rootmount::root()?.is_absolute_root() {
        return Ok(Outcome::NotNeeded);
    }
    switch_root_from_here().map(Outcome::Switched)
}

/// Mounts the tmpfs, moves the current root's content into it and makes it the root.
/// Callers check first that the root is the initramfs (see [`leave_initramfs`]); tests call it
/// in a private mount namespace chrooted into a scratch tmpfs.
pub fn switch_root_from_here() -> Result<Moved, RootfsError> {
    let new_root = Path::new(NEW_ROOT_DIR);
    std::fs::create_dir_all(new_root).map_err(|source| RootfsError::Mkdir {
        path: new_root.into(),
        source,
    })?;
    nix::mount::mount(
        Some("tmpfs"),
        new_root,
        Some("tmpfs"),
        NEW_ROOT_FLAGS,
        Some(NEW_ROOT_DATA),
    )
    .map_err(RootfsError::Mount)?;
    let root_dev = std::fs::symlink_metadata("/")
        .map_err(|source| RootfsError::Read {
            path: "/".into(),
            source,
        })?
        .dev();
    let mut moved = Moved::default();
    move_tree(
        Path::new("/"),
        new_root,
        root_dev,
        Some(new_root),
        &mut moved,
    )?;
    nix::unistd::chdir(new_root).map_err(|errno| RootfsError::Chdir {
        path: new_root.into(),
        errno,
    })?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(RootfsError::MoveMount)?;
    nix::unistd::chroot(".").map_err(RootfsError::Chroot)?;
    nix::unistd::chdir("/").map_err(|errno| RootfsError::Chdir {
        path: "/".into(),
        errno,
    })?;
    Ok(moved)
}

fn cpath(p: &Path) -> Result<CString, std::io::Error> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))
}

/// Owner of the moved entry as in the initramfs (never follows a symlink).
fn lchown(p: &Path, uid: u32, gid: u32) -> Result<(), std::io::Error> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
}

/// Moves the content of `src` into `dst` (both directories): each entry is recreated in `dst`
/// with its mode and owner, then the original is removed, depth first. Entries on another
/// device than `dev` (mount points) and `skip` (the new root itself) are left alone.
pub fn move_tree(
    src: &Path,
    dst: &Path,
    dev: u64,
    skip: Option<&Path>,
    moved: &mut Moved,
) -> Result<(), RootfsError> {
    let rd = |source| RootfsError::Read {
        path: src.into(),
        source,
    };
    let mut names: Vec<_> = std::fs::read_dir(src)
        .map_err(rd)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(rd)?;
    names.sort();
    for name in names {
        let from = src.join(&name);
        let to = dst.join(&name);
        if skip == Some(from.as_path()) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&from).map_err(|source| RootfsError::Read {
            path: from.clone(),
            source,
        })?;
        if meta.dev() != dev {
            continue; // something mounted here: not ours to move
        }
        let copy = |source| RootfsError::Copy {
            path: from.clone(),
            source,
        };
        let remove = |source| RootfsError::Remove {
            path: from.clone(),
            source,
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(copy)?;
            move_tree(&from, &to, dev, skip, moved)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(copy)?;
            lchown(&to, meta.uid(), meta.gid()).map_err(copy)?;
            std::fs::remove_dir(&from).map_err(remove)?;
        } else if ft.is_file() {
            let mut r = std::fs::File::open(&from).map_err(copy)?;
            let mut w = std::fs::File::create_new(&to).map_err(copy)?;
            moved.bytes += std::io::copy(&mut r, &mut w).map_err(copy)?;
            w.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(copy)?;
            lchown(&to, meta.uid(), meta.gid()).map_err(copy)?;
            drop(w);
            std::fs::remove_file(&from).map_err(remove)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(copy)?;
            std::os::unix::fs::symlink(&target, &to).map_err(copy)?;
            lchown(&to, meta.uid(), meta.gid()).map_err(copy)?;
            std::fs::remove_file(&from).map_err(remove)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let c = cpath(&to).map_err(copy)?;
            // SAFETY: valid NUL-terminated path; mode and device number from lstat.
            let rc = unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) };
            if rc != 0 {
                return Err(copy(std::io::Error::last_os_error()));
            }
            lchown(&to, meta.uid(), meta.gid()).map_err(copy)?;
            std::fs::remove_file(&from).map_err(remove)?;
        } else {
            // Sockets: nothing listens on them any more.
            moved.skipped += 1;
            std::fs::remove_file(&from).map_err(remove)?;
            continue;
        }
        moved.entries += 1;
    }
    Ok(())
}

/// The `status` value of the root: what it is and whether a sandbox can leave it.
pub fn status_value() -> String {
    match rootmount::root() {
        Ok(f) => describe(f),
        Err(e) => format!("unknown ({e})"),
    }
}

fn describe(f: rootmount::MountFacts) -> String {
    if f.is_absolute_root() {
        return "initramfs rootfs, no parent mount: sandboxed spawns are refused".into();
    }
    let fs = match f.sb_magic {
        m if m == libc::TMPFS_MAGIC as u64 => "tmpfs".to_string(),
        m if m == libc::EXT4_SUPER_MAGIC as u64 => "ext4".to_string(),
        m => format!("fs magic {m:#x}"),
    };
    format!("{fs} over a parent mount")
}

/// Re-executes `/init` (now on the tmpfs root) with the same arguments and environment, so
/// PID 1 runs from the live file and the rootfs copy of the binary is freed. Returns only if
/// the exec failed.
pub fn reexec() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("/init")
        .args(std::env::args_os().skip(1))
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_tree_moves_files_dirs_links_with_modes_and_removes_the_originals() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        std::fs::create_dir_all(src.join("bin/deep")).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("init"), b"\x7fELF program").unwrap();
        std::fs::set_permissions(src.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(src.join("bin/deep/data"), vec![7u8; 100_000]).unwrap();
        std::fs::set_permissions(src.join("bin/deep"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::symlink("../init", src.join("bin/init-link")).unwrap();
        let dev = std::fs::metadata(&src).unwrap().dev();
        let mut moved = Moved::default();
        move_tree(&src, &dst, dev, None, &mut moved).unwrap();
        assert_eq!(
            moved,
            Moved {
                entries: 5,
                bytes: 100_000 + 12,
                skipped: 0
            }
        );
        assert_eq!(std::fs::read(dst.join("init")).unwrap(), b"\x7fELF program");
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dst.join("init")), 0o755);
        assert_eq!(mode(&dst.join("bin/deep")), 0o700);
        assert_eq!(
            std::fs::read(dst.join("bin/deep/data")).unwrap().len(),
            100_000
        );
        assert_eq!(
            std::fs::read_link(dst.join("bin/init-link")).unwrap(),
            Path::new("../init")
        );
        // Nothing is left behind: the source is empty (RAM holds each file once).
        assert_eq!(std::fs::read_dir(&src).unwrap().count(), 0);
    }

    #[test]
    fn move_tree_skips_the_new_root_itself() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("newroot")).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        let dev = std::fs::metadata(&src).unwrap().dev();
        let mut moved = Moved::default();
        let newroot = src.join("newroot");
        move_tree(&src, &newroot, dev, Some(&newroot), &mut moved).unwrap();
        assert_eq!(std::fs::read(newroot.join("f")).unwrap(), b"x");
        let left: Vec<_> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("newroot")]);
    }

    #[test]
    fn status_value_says_whether_a_sandbox_can_leave_the_root() {
        let f = |mnt_id, parent_id, sb_magic| rootmount::MountFacts {
            mnt_id,
            parent_id,
            sb_magic,
        };
        for (facts, want) in [
            (
                f(1, 1, 0x8584_58f6),
                "initramfs rootfs, no parent mount: sandboxed spawns are refused",
            ),
            (
                f(30, 1, libc::TMPFS_MAGIC as u64),
                "tmpfs over a parent mount",
            ),
            (
                f(27, 1, libc::EXT4_SUPER_MAGIC as u64),
                "ext4 over a parent mount",
            ),
            (f(27, 1, 0x1234), "fs magic 0x1234 over a parent mount"),
        ] {
            assert_eq!(describe(facts), want);
        }
    }

    #[test]
    fn a_disk_rooted_host_needs_no_switch() {
        // The supervisor's host tests run PID 1 in namespaces on a disk root: left alone.
        assert_eq!(leave_initramfs().unwrap(), Outcome::NotNeeded);
    }
}
