//! `airlock-mountinfo PID`: prints the mount table of PID's mount namespace, seen from inside
//! it. Used only by tests (sandbox/tests/mountns.rs); not part of the image.
//!
//! `nsenter -t PID -m cat /proc/self/mountinfo` cannot do this for a sandboxed process: nsenter
//! execs its program *inside* the target namespace, where nothing executable exists (the
//! sandbox's root holds only /model, /scratch and /dev, all noexec) and no /proc is mounted.
//! So this program opens the host's `/proc` (a dirfd) and `/proc/PID/ns/mnt` first, joins the
//! namespace with `setns(CLONE_NEWNS)` (allowed because it is single-threaded; root and cwd
//! become the namespace's absolute root), then reads `thread-self/mountinfo` through the dirfd
//! it opened before: the kernel answers with the mounts of the namespace it now belongs to.
//!
//! mountinfo lists only mounts reachable from the reader's root, and joining a namespace makes
//! its root the *top* of the stack at "/": mounts hidden under the sandbox's root would not be
//! listed. So it also prints every mount of the namespace, hidden or not: `statmount(2)` names
//! the parent of the root mount (the namespace's absolute root), `listmount(2)` (Linux 6.8)
//! lists every mount below that, and `statmount` gives each one's file system type and mount
//! point (empty when not reachable from the root).
//!
//! Output: the mountinfo lines, a line `== all mounts ==`, then `ID PARENT FSTYPE POINT` per
//! mount of the namespace (the absolute root first).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

fn fail(what: &str) -> ! {
    eprintln!(
        "airlock-mountinfo: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1)
}

fn open_at(dir: RawFd, path: &str, flags: libc::c_int) -> OwnedFd {
    let Ok(c) = CString::new(path) else {
        eprintln!("airlock-mountinfo: path {path:?} contains a NUL byte");
        std::process::exit(2)
    };
    // SAFETY: valid NUL-terminated path; returns a new fd or -1.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        fail(&format!("open {path}"));
    }
    // SAFETY: a new fd we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn main() {
    let pid: u32 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: airlock-mountinfo PID");
            std::process::exit(2)
        }
    };
    use std::os::fd::AsRawFd;
    let proc_dir = open_at(libc::AT_FDCWD, "/proc", libc::O_PATH | libc::O_DIRECTORY);
    let ns = open_at(
        proc_dir.as_raw_fd(),
        &format!("{pid}/ns/mnt"),
        libc::O_RDONLY,
    );
    // SAFETY: setns with an fd we own and a constant namespace type.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        fail("setns(CLONE_NEWNS)");
    }
    let info = open_at(
        proc_dir.as_raw_fd(),
        "thread-self/mountinfo",
        libc::O_RDONLY,
    );
    let mut text = String::new();
    if std::fs::File::from(info).read_to_string(&mut text).is_err() {
        fail("read thread-self/mountinfo");
    }
    let mut out = text;
    out.push_str("== all mounts ==\n");
    let root = match airlock_sandbox::rootmount::root() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("airlock-mountinfo: {e}");
            std::process::exit(1)
        }
    };
    let mut ids = vec![root.parent_id];
    ids.extend(listmount(root.parent_id));
    for id in ids {
        let (parent, fstype, point) = statmount(id);
        out.push_str(&format!("{id} {parent} {fstype} {point}\n"));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
}

/// `listmount(2)` on x86_64.
const SYS_LISTMOUNT: libc::c_long = 458;
/// `statmount(2)` on x86_64.
const SYS_STATMOUNT: libc::c_long = 457;
/// statmount: mount basics, mount point, file system type.
const STATMOUNT_MASK: u64 = 0x2 | 0x10 | 0x20;
/// Offset of `str[]` in `struct statmount` (its fixed part is 512 bytes).
const SM_STR: usize = 512;

/// `struct mnt_id_req` version 0 for `id` with `param`.
fn req(id: u64, param: u64) -> [u64; 3] {
    [24, id, param]
}

/// Every mount below `id` in the caller's namespace.
fn listmount(id: u64) -> Vec<u64> {
    let r = req(id, 0);
    let mut ids = vec![0u64; 4096];
    // SAFETY: r is a valid mnt_id_req (size 24); ids is writable for ids.len() entries.
    let n = unsafe { libc::syscall(SYS_LISTMOUNT, r.as_ptr(), ids.as_mut_ptr(), ids.len(), 0) };
    if n < 0 {
        fail("listmount");
    }
    ids.truncate(usize::try_from(n).unwrap_or(0));
    ids
}

/// (parent id, file system type, mount point) of mount `id`.
fn statmount(id: u64) -> (u64, String, String) {
    let r = req(id, STATMOUNT_MASK);
    let mut buf = vec![0u64; 1024]; // 8 KiB, 8-aligned
    let size = buf.len() * 8;
    // SAFETY: r is a valid mnt_id_req; buf is writable for `size` bytes.
    if unsafe { libc::syscall(SYS_STATMOUNT, r.as_ptr(), buf.as_mut_ptr(), size, 0) } != 0 {
        fail(&format!("statmount({id})"));
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let u32_at =
        |o: usize| u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_ne_bytes(b)
    };
    let string = |off: u32| {
        let start = SM_STR + off as usize;
        let end = bytes[start..]
            .iter()
            .position(|&b| b == 0)
            .map_or(bytes.len(), |e| start + e);
        String::from_utf8_lossy(&bytes[start..end]).into_owned()
    };
    let mask = u64_at(8);
    let fstype = if mask & 0x20 != 0 {
        string(u32_at(36))
    } else {
        "?".into()
    };
    let point = if mask & 0x10 != 0 {
        string(u32_at(108))
    } else {
        String::new()
    };
    (u64_at(48), fstype, point)
}
