//! `airlock-probe`: runs inside the worker sandbox (spawned through the very same path as the
//! worker) and tries forbidden and allowed acts, reporting what the kernel answered.
//!
//! ```text
//! airlock-probe [--stage2] [--parent-pid PID] allow      # allowed side, then waits for EOF on stdin
//! airlock-probe [--stage2 | --stage2-profile P] [--parent-pid PID] act NAME   # EOF on stdin, then one act
//! airlock-probe [--stage2 | --stage2-profile P] open PATH (read|write|create)  # EOF on stdin, then one open
//! airlock-probe list                                      # names of the acts
//! ```
//! With `--stage2` (the same as `--stage2-profile worker`), `act` installs the worker's exact
//! stage-2 allow list ([`Profile::Worker`]) first thing in `main`, as the worker does, so each
//! act proves the worker's list; `allow` installs the probe's own profile
//! ([`Profile::ProbeAllowedSide`]: the worker's list plus the probe's additions) after its
//! first checks. With `--stage2-profile doc-open`, `act` and `open` install the document
//! opener's list ([`Profile::DocOpen`]) first thing instead, as `airlock-init doc-open` does,
//! and `act` prints `check act_reached ok NAME` right before the act, so a `SIGSYS` after that
//! line comes from the act and not from the probe's own path up to it (`allow` has no
//! doc-open side). `act` waits for EOF on stdin before acting, so the spawner can confirm
//! stage 2 before an act kills the probe (it may end in `SIGSYS`).
//! Output: one line per result,
//! `act NAME errno ENAME` | `act NAME ok DETAIL` | `check NAME ok DETAIL` | `check NAME fail DETAIL`
//! | `open PATH errno ENAME` | `open PATH ok DETAIL`. `open` is for tests of what a sandbox with
//! a given model dir can reach: `read` opens read-only and reads the whole file, `write` opens
//! write-only, `create` creates.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::ffi::CStr;
use std::io::{Read, Write};

use airlock_sandbox::names::errno_name;
use airlock_sandbox::seccomp::Profile;

/// The worker's allocator, so the probe meets the same allocator syscalls under stage 2.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

enum Outcome {
    /// The act succeeded (for a forbidden act: the sandbox failed).
    Ok(String),
    /// The act failed with this errno.
    Errno(i32),
}

fn last() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn rc(r: libc::c_long) -> Outcome {
    if r < 0 {
        Outcome::Errno(last())
    } else {
        Outcome::Ok(format!("returned {r}"))
    }
}

/// A raw syscall whose arguments are integers, NULL, or pointers to live constants/buffers.
fn raw(nr: libc::c_long, a: [usize; 5]) -> Outcome {
    // SAFETY: the kernel validates integer arguments; pointers passed by callers point to
    // constant strings or live stack buffers; the probe only reports the result.
    rc(unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) })
}

fn cs(c: &CStr) -> usize {
    c.as_ptr() as usize
}

fn open(path: &CStr, flags: libc::c_int) -> Outcome {
    // SAFETY: valid path; the fd is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Outcome::Errno(last());
    }
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    Outcome::Ok(format!("opened {}", path.to_string_lossy()))
}

/// Opens `path` as `mode` says (`read`: and reads it to the end).
fn open_path(path: &str, mode: &str) -> Option<Outcome> {
    let flags = match mode {
        "read" => libc::O_RDONLY,
        "write" => libc::O_WRONLY,
        "create" => libc::O_CREAT | libc::O_WRONLY,
        _ => return None,
    };
    let Ok(c) = std::ffi::CString::new(path) else {
        return Some(Outcome::Errno(libc::EINVAL));
    };
    // SAFETY: valid NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Some(Outcome::Errno(last()));
    }
    let mut total = 0usize;
    let mut result = Outcome::Ok(format!("opened for {mode}"));
    if mode == "read" {
        let mut buf = [0u8; 65536];
        loop {
            // SAFETY: reading into a live buffer of its length from our fd.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                result = Outcome::Errno(last());
                break;
            }
            if n == 0 {
                result = Outcome::Ok(format!("read {total} bytes"));
                break;
            }
            total += n as usize;
        }
    }
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    Some(result)
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> Outcome {
    // SAFETY: integer arguments.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Outcome::Errno(last());
    }
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    Outcome::Ok("socket created".into())
}

/// Writes an executable file into scratch and tries to execve it.
fn exec_from_scratch(mode: libc::mode_t) -> Outcome {
    let path = c"/scratch/probe-exec";
    // A minimal ELF header: enough for the kernel to try it if the mount allowed exec.
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    if let Err(e) = std::fs::write("/scratch/probe-exec", &elf) {
        return Outcome::Ok(format!("setup failed: {e}"));
    }
    // SAFETY: valid path.
    if unsafe { libc::chmod(path.as_ptr(), mode) } != 0 {
        return Outcome::Ok(format!("chmod failed: {}", errno_name(last())));
    }
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: NULL-terminated arrays of valid strings.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Outcome::Errno(last())
}

fn raw_clone(flags: libc::c_ulong) -> Outcome {
    // SAFETY: fork-like clone; the child exits immediately without touching shared state.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        return Outcome::Errno(last());
    }
    if r == 0 {
        // SAFETY: child of the clone: leave at once.
        unsafe { libc::_exit(0) };
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(r as i32, &mut st, 0) };
    Outcome::Ok(format!("child {r} created"))
}

fn map_anon(prot: libc::c_int) -> *mut libc::c_void {
    // SAFETY: anonymous private mapping of one page.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }
}

/// A file (or directory) created in scratch for an act that removes or renames it.
fn scratch_entry(path: &CStr, dir: bool) -> Result<(), Outcome> {
    // SAFETY: valid paths; the fd is closed right away.
    let r = unsafe {
        if dir {
            libc::mkdir(path.as_ptr(), 0o700)
        } else {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o600,
            );
            if fd >= 0 {
                libc::close(fd);
                0
            } else {
                -1
            }
        }
    };
    if r != 0 {
        return Err(Outcome::Ok(format!("setup failed: {}", errno_name(last()))));
    }
    Ok(())
}

/// A connected AF_UNIX pair for the send/receive acts (socketpair is in the worker's list).
fn unix_pair() -> Result<[libc::c_int; 2], Outcome> {
    let mut fds = [0; 2];
    // SAFETY: valid 2-element array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(Outcome::Ok(format!("setup failed: {}", errno_name(last()))));
    }
    Ok(fds)
}

/// futex(2) with all six arguments (`val3` matters for the compare-and-requeue act).
fn futex(
    word: &mut u32,
    op: libc::c_int,
    val: u32,
    val2: usize,
    other: usize,
    val3: u32,
) -> Outcome {
    // SAFETY: `word` and `other` point to live u32s on the caller's stack; the other
    // arguments are integers.
    rc(unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *mut u32,
            op,
            val,
            val2,
            other,
            val3,
        )
    })
}

fn act(name: &str, parent: i32) -> Option<Outcome> {
    Some(match name {
        "open_outside" => open(c"/etc/passwd", libc::O_RDONLY),
        "open_dotdot" => open(c"/../../../etc/passwd", libc::O_RDONLY),
        "list_root" => open(c"/", libc::O_RDONLY | libc::O_DIRECTORY),
        "list_dev" => open(c"/dev", libc::O_RDONLY | libc::O_DIRECTORY),
        "create_in_root" => open(c"/probe-file", libc::O_CREAT | libc::O_WRONLY),
        "write_model" => open(c"/model/weights.bin", libc::O_WRONLY),
        "create_in_model" => open(c"/model/probe-file", libc::O_CREAT | libc::O_WRONLY),
        "proc_environ" => open(c"/proc/1/environ", libc::O_RDONLY),
        "socket_inet" => socket(libc::AF_INET, libc::SOCK_STREAM, 0),
        "socket_inet6" => socket(libc::AF_INET6, libc::SOCK_DGRAM, 0),
        "socket_netlink" => socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        "socket_packet" => socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
        "tcp_connect" => match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => Outcome::Ok("connected".into()),
            Err(e) => Outcome::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
        },
        "execve" => exec_from_scratch(0o755),
        "setuid_scratch" => exec_from_scratch(0o4755),
        "ptrace_parent" => raw(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as usize, parent as usize, 0, 0, 0],
        ),
        "mount" => raw(
            libc::SYS_mount,
            [cs(c"none"), cs(c"/scratch"), cs(c"tmpfs"), 0, 0],
        ),
        "unshare_user" => raw(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as usize, 0, 0, 0, 0],
        ),
        "clone_newns" => raw_clone(libc::CLONE_NEWNS as libc::c_ulong),
        "fork" => raw_clone(0),
        "clone3" => {
            let mut args = [0u64; 11];
            args[4] = libc::SIGCHLD as u64; // exit_signal
            let r = raw(libc::SYS_clone3, [args.as_mut_ptr() as usize, 88, 0, 0, 0]);
            if let Outcome::Ok(ref d) = r {
                if d == "returned 0" {
                    // SAFETY: the clone3 child leaves at once.
                    unsafe { libc::_exit(0) };
                }
            }
            r
        }
        "kill_pid1" => match raw(libc::SYS_kill, [1, libc::SIGKILL as usize, 0, 0, 0]) {
            Outcome::Ok(_) => {
                // SAFETY: getpid has no arguments.
                let me = unsafe { libc::getpid() };
                Outcome::Ok(format!("kill(1) returned 0, getpid()={me}, still alive"))
            }
            e => e,
        },
        "kill_parent" => raw(
            libc::SYS_kill,
            [parent as usize, libc::SIGKILL as usize, 0, 0, 0],
        ),
        "init_module" => raw(libc::SYS_init_module, [0, 0, cs(c""), 0, 0]),
        "bpf" => raw(libc::SYS_bpf, [5 /* BPF_PROG_LOAD */, 0, 0, 0, 0]),
        "perf_event_open" => raw(libc::SYS_perf_event_open, [0, 0, usize::MAX, usize::MAX, 0]),
        "userfaultfd" => raw(libc::SYS_userfaultfd, [0, 0, 0, 0, 0]),
        "io_uring_setup" => raw(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0]),
        "keyctl" => raw(
            libc::SYS_keyctl,
            [
                0,                  /* GET_KEYRING_ID */
                (-4isize) as usize, /* SESSION */
                1,
                0,
                0,
            ],
        ),
        "kexec_load" => raw(libc::SYS_kexec_load, [0, 0, 0, 0, 0]),
        "setns" => raw(libc::SYS_setns, [0, 0, 0, 0, 0]),
        "chroot" => raw(libc::SYS_chroot, [cs(c"/scratch"), 0, 0, 0, 0]),
        "ioctl_fionbio" => {
            let mut on: libc::c_int = 0;
            raw(
                libc::SYS_ioctl,
                [
                    1,
                    libc::FIONBIO as usize,
                    &mut on as *mut libc::c_int as usize,
                    0,
                    0,
                ],
            )
        }
        "setuid_root" => raw(libc::SYS_setresuid, [0, 0, 0, 0, 0]),
        // A filter of our own (NULL program: stage 1 lets it reach the kernel, EFAULT).
        "prctl_set_seccomp" => raw(
            libc::SYS_prctl,
            [
                libc::PR_SET_SECCOMP as usize,
                libc::SECCOMP_MODE_FILTER as usize,
                0,
                0,
                0,
            ],
        ),
        "prctl_set_dumpable" => raw(
            libc::SYS_prctl,
            [libc::PR_SET_DUMPABLE as usize, 1, 0, 0, 0],
        ),
        "mprotect_exec" => {
            let p = map_anon(libc::PROT_READ | libc::PROT_WRITE);
            if p == libc::MAP_FAILED {
                return Some(Outcome::Ok(format!(
                    "setup mmap failed: {}",
                    errno_name(last())
                )));
            }
            // SAFETY: see above; p is our page.
            rc(
                unsafe { libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) }
                    as libc::c_long,
            )
        }
        "mmap_exec" => {
            let p = map_anon(libc::PROT_READ | libc::PROT_EXEC);
            if p == libc::MAP_FAILED {
                Outcome::Errno(last())
            } else {
                Outcome::Ok("mapped".into())
            }
        }
        // Calls the worker's stage 2 no longer allows (they were shared with the probe).
        "socket_unix" => socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
        "sendto" => match unix_pair() {
            Ok(fds) => raw(libc::SYS_sendto, [fds[0] as usize, cs(c"x"), 1, 0, 0]),
            Err(o) => o,
        },
        "recvfrom" => match unix_pair() {
            Ok(fds) => {
                // SAFETY: writing one byte from a constant to our own socket.
                unsafe { libc::write(fds[0], c"x".as_ptr().cast(), 1) };
                let mut b = [0u8; 1];
                raw(
                    libc::SYS_recvfrom,
                    [fds[1] as usize, b.as_mut_ptr() as usize, 1, 0, 0],
                )
            }
            Err(o) => o,
        },
        "rename" => match scratch_entry(c"/scratch/probe-a", false) {
            Ok(()) => raw(
                libc::SYS_rename,
                [cs(c"/scratch/probe-a"), cs(c"/scratch/probe-b"), 0, 0, 0],
            ),
            Err(o) => o,
        },
        "unlink" => match scratch_entry(c"/scratch/probe-u", false) {
            Ok(()) => raw(libc::SYS_unlink, [cs(c"/scratch/probe-u"), 0, 0, 0, 0]),
            Err(o) => o,
        },
        "rmdir" => match scratch_entry(c"/scratch/probe-d", true) {
            Ok(()) => raw(libc::SYS_rmdir, [cs(c"/scratch/probe-d"), 0, 0, 0, 0]),
            Err(o) => o,
        },
        "uname" => {
            // SAFETY: utsname is plain data.
            let mut u: libc::utsname = unsafe { std::mem::zeroed() };
            raw(
                libc::SYS_uname,
                [&mut u as *mut libc::utsname as usize, 0, 0, 0, 0],
            )
        }
        "getuid" => raw(libc::SYS_getuid, [0; 5]),
        "getgid" => raw(libc::SYS_getgid, [0; 5]),
        // A priority-inheritance lock on a free word: taken at once (returns 0) if allowed.
        "futex_lock_pi" => {
            let mut w = 0u32;
            futex(
                &mut w,
                libc::FUTEX_LOCK_PI | libc::FUTEX_PRIVATE_FLAG,
                0,
                0,
                0,
                0,
            )
        }
        // Requeue from a word nobody waits on (expected value 0 matches): returns 0.
        "futex_cmp_requeue" => {
            let mut w = 0u32;
            let mut other = 0u32;
            let other_ptr = &mut other as *mut u32 as usize;
            futex(
                &mut w,
                libc::FUTEX_CMP_REQUEUE | libc::FUTEX_PRIVATE_FLAG,
                1,
                1,
                other_ptr,
                0,
            )
        }
        // An advice the worker never gives (MADV_DONTFORK on one of our pages): returns 0.
        "madvise_dontfork" => {
            let p = map_anon(libc::PROT_READ | libc::PROT_WRITE);
            if p == libc::MAP_FAILED {
                return Some(Outcome::Ok(format!(
                    "setup mmap failed: {}",
                    errno_name(last())
                )));
            }
            raw(
                libc::SYS_madvise,
                [p as usize, 4096, libc::MADV_DONTFORK as usize, 0, 0],
            )
        }
        // --- acts of the document opener's profile (`--stage2-profile doc-open`) ---
        // Opening a file every other layer lets through (Landlock's ReadFile on /dev/urandom).
        "open_urandom" => open(c"/dev/urandom", libc::O_RDONLY),
        // An AF_UNIX pair (the worker's list has socketpair; the opener's does not).
        "socketpair_unix" => {
            let mut fds = [0 as libc::c_int; 2];
            raw(
                libc::SYS_socketpair,
                [
                    libc::AF_UNIX as usize,
                    (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as usize,
                    0,
                    fds.as_mut_ptr() as usize,
                    0,
                ],
            )
        }
        // A thread-style clone with CLONE_THREAD but without CLONE_SIGHAND/CLONE_VM: seccomp
        // judges the flags before the kernel does, and where clone is allowed the kernel
        // answers EINVAL, so no thread is ever created on a shared stack.
        "clone_thread" => raw(libc::SYS_clone, [libc::CLONE_THREAD as usize, 0, 0, 0, 0]),
        // execve without any setup (no file written first): ENOENT where execve is allowed.
        "execve_missing" => {
            let argv = [c"/scratch/none".as_ptr(), std::ptr::null()];
            let envp: [*const libc::c_char; 1] = [std::ptr::null()];
            raw(
                libc::SYS_execve,
                [
                    cs(c"/scratch/none"),
                    argv.as_ptr() as usize,
                    envp.as_ptr() as usize,
                    0,
                    0,
                ],
            )
        }
        // Thread naming, the one prctl option std itself uses.
        "prctl_set_name" => raw(
            libc::SYS_prctl,
            [libc::PR_SET_NAME as usize, cs(c"probe"), 0, 0, 0],
        ),
        // isatty(stdout): the one ioctl request the worker's list lets through.
        "ioctl_tcgets" => {
            // SAFETY: termios is plain data, filled by the kernel if the call is allowed.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            raw(
                libc::SYS_ioctl,
                [
                    1,
                    libc::TCGETS as usize,
                    &mut t as *mut libc::termios as usize,
                    0,
                    0,
                ],
            )
        }
        // A signal to the spawner through tgkill (which the opener's list keeps for abort).
        "tgkill_parent" => raw(
            libc::SYS_tgkill,
            [
                parent as usize,
                parent as usize,
                libc::SIGKILL as usize,
                0,
                0,
            ],
        ),
        // Listing a directory without opening one: getdents64 on fd 0 (ENOTDIR if allowed).
        "getdents_stdin" => {
            let mut buf = [0u8; 256];
            raw(
                libc::SYS_getdents64,
                [0, buf.as_mut_ptr() as usize, buf.len(), 0, 0],
            )
        }
        "mkdir_scratch" => raw(libc::SYS_mkdir, [cs(c"/scratch/probe-m"), 0o700, 0, 0, 0]),
        // unlink without setup: ENOENT where unlink is allowed.
        "unlink_missing" => raw(libc::SYS_unlink, [cs(c"/scratch/none"), 0, 0, 0, 0]),
        "close_stdin" => raw(libc::SYS_close, [0, 0, 0, 0, 0]),
        "fcntl_getfd" => raw(libc::SYS_fcntl, [0, libc::F_GETFD as usize, 0, 0, 0]),
        "poll_stdin" => {
            let mut pfd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            raw(
                libc::SYS_poll,
                [&mut pfd as *mut libc::pollfd as usize, 1, 0, 0, 0],
            )
        }
        // The clock without the vDSO.
        "clock_gettime" => {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            raw(
                libc::SYS_clock_gettime,
                [
                    libc::CLOCK_MONOTONIC as usize,
                    &mut ts as *mut libc::timespec as usize,
                    0,
                    0,
                    0,
                ],
            )
        }
        "sched_yield" => raw(libc::SYS_sched_yield, [0; 5]),
        // Allowed side: reading the (drained) stdin pipe returns 0 at EOF.
        "read_stdin" => {
            let mut b = [0u8; 16];
            raw(libc::SYS_read, [0, b.as_mut_ptr() as usize, b.len(), 0, 0])
        }
        // Allowed side: one byte (a newline) to stdout.
        "write_stdout" => raw(libc::SYS_write, [1, cs(c"\n"), 1, 0, 0]),
        // Allowed side: anonymous read-write memory, written, grown in place or moved, freed.
        "mmap_anon_rw" => {
            let p = map_anon(libc::PROT_READ | libc::PROT_WRITE);
            if p == libc::MAP_FAILED {
                return Some(Outcome::Errno(last()));
            }
            // SAFETY: p is our fresh read-write page.
            unsafe { std::ptr::write_volatile(p.cast::<u64>(), 0x5a5a) };
            // SAFETY: growing our own mapping; the kernel may move it (MREMAP_MAYMOVE).
            let q = unsafe { libc::mremap(p, 4096, 8192, libc::MREMAP_MAYMOVE) };
            if q == libc::MAP_FAILED {
                return Some(Outcome::Errno(last()));
            }
            // SAFETY: q is the grown mapping; its first page holds what was written.
            let back = unsafe { std::ptr::read_volatile(q.cast::<u64>()) };
            // SAFETY: unmapping our own mapping.
            if unsafe { libc::munmap(q, 8192) } != 0 {
                return Some(Outcome::Errno(last()));
            }
            Outcome::Ok(format!(
                "mapped, written, remapped, read back {back:#x}, unmapped"
            ))
        }
        // Allowed side: the advice malloc trimming gives.
        "madvise_dontneed" => {
            let p = map_anon(libc::PROT_READ | libc::PROT_WRITE);
            if p == libc::MAP_FAILED {
                return Some(Outcome::Errno(last()));
            }
            raw(
                libc::SYS_madvise,
                [p as usize, 4096, libc::MADV_DONTNEED as usize, 0, 0],
            )
        }
        "brk_query" => raw(libc::SYS_brk, [0; 5]),
        "getrandom" => {
            let mut b = [0u8; 32];
            raw(
                libc::SYS_getrandom,
                [b.as_mut_ptr() as usize, b.len(), 0, 0, 0],
            )
        }
        // Allowed side: a wake on a word nobody waits on (std's uncontended unlock path).
        "futex_wake" => {
            let mut w = 0u32;
            futex(
                &mut w,
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
                0,
                0,
                0,
            )
        }
        // Allowed side: std's panic path (getpid + gettid + tgkill, here with signal 0).
        "tgkill_self" => {
            // SAFETY: getpid and gettid have no arguments.
            let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
            raw(libc::SYS_tgkill, [pid as usize, tid as usize, 0, 0, 0])
        }
        "alloc_big" => {
            let mut v: Vec<u8> = Vec::new();
            match v.try_reserve_exact(2 << 30) {
                Ok(()) => Outcome::Ok("2 GiB reserved".into()),
                Err(_) => Outcome::Errno(libc::ENOMEM),
            }
        }
        "crash_segv" => {
            // SAFETY: deliberately not safe: the probe must die of SIGSEGV here.
            unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) };
            Outcome::Ok("survived a null write".into())
        }
        _ => return None,
    })
}

/// Names of every act, in report order.
const ACTS: &[&str] = &[
    "open_outside",
    "open_dotdot",
    "list_root",
    "list_dev",
    "create_in_root",
    "write_model",
    "create_in_model",
    "proc_environ",
    "socket_inet",
    "socket_inet6",
    "socket_netlink",
    "socket_packet",
    "tcp_connect",
    "execve",
    "setuid_scratch",
    "ptrace_parent",
    "mount",
    "unshare_user",
    "clone_newns",
    "fork",
    "clone3",
    "kill_pid1",
    "kill_parent",
    "init_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "keyctl",
    "kexec_load",
    "setns",
    "chroot",
    "setuid_root",
    "prctl_set_seccomp",
    "prctl_set_dumpable",
    "ioctl_fionbio",
    "mprotect_exec",
    "mmap_exec",
    "socket_unix",
    "sendto",
    "recvfrom",
    "rename",
    "unlink",
    "rmdir",
    "uname",
    "getuid",
    "getgid",
    "futex_lock_pi",
    "futex_cmp_requeue",
    "madvise_dontfork",
    "open_urandom",
    "socketpair_unix",
    "clone_thread",
    "execve_missing",
    "prctl_set_name",
    "ioctl_tcgets",
    "tgkill_parent",
    "getdents_stdin",
    "mkdir_scratch",
    "unlink_missing",
    "close_stdin",
    "fcntl_getfd",
    "poll_stdin",
    "clock_gettime",
    "sched_yield",
    "read_stdin",
    "write_stdout",
    "mmap_anon_rw",
    "madvise_dontneed",
    "brk_query",
    "getrandom",
    "futex_wake",
    "tgkill_self",
    "alloc_big",
    "crash_segv",
];

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn check(out: &mut impl Write, name: &str, r: Result<String, String>) {
    let _ = match r {
        Ok(d) => writeln!(out, "check {name} ok {d}"),
        Err(d) => writeln!(out, "check {name} fail {d}"),
    };
    let _ = out.flush();
}

fn identity() -> Result<String, String> {
    let mut caps_held = 0usize;
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
        caps::CapSet::Ambient,
    ] {
        caps_held += caps::read(None, set)
            .map_err(|e| format!("capget: {e}"))?
            .len();
    }
    // SAFETY: getters without arguments / prctl queries.
    let (pid, uid, gid, nnp, sec, dump) = unsafe {
        (
            libc::getpid(),
            libc::getuid(),
            libc::getgid(),
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0),
            libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0),
        )
    };
    let caps = caps_held;
    Ok(format!("pid={pid} uid={uid} gid={gid} no_new_privs={nnp} seccomp={sec} dumpable={dump} caps={caps:#x}"))
}

fn model_read() -> Result<String, String> {
    let mut names: Vec<String> = std::fs::read_dir("/model")
        .map_err(|e| format!("read_dir: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let data = std::fs::read("/model/weights.bin").map_err(|e| format!("read: {e}"))?;
    Ok(format!(
        "entries={} len={} fnv={:016x}",
        names.join(","),
        data.len(),
        fnv(&data)
    ))
}

fn scratch_write() -> Result<String, String> {
    let e = |what: &str, err: std::io::Error| format!("{what}: {err}");
    std::fs::create_dir_all("/scratch/d").map_err(|x| e("mkdir", x))?;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write("/scratch/d/a", &data).map_err(|x| e("write", x))?;
    std::fs::rename("/scratch/d/a", "/scratch/b").map_err(|x| e("rename", x))?;
    let back = std::fs::read("/scratch/b").map_err(|x| e("read", x))?;
    std::fs::remove_file("/scratch/b").map_err(|x| e("unlink", x))?;
    std::fs::remove_dir("/scratch/d").map_err(|x| e("rmdir", x))?;
    if back != data {
        return Err("read back differs".into());
    }
    Ok(format!(
        "wrote, renamed, read back and removed {} bytes",
        data.len()
    ))
}

fn getrandom() -> Result<String, String> {
    let mut buf = [0u8; 32];
    // SAFETY: valid buffer and length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(errno_name(last()));
    }
    Ok("32 bytes".into())
}

fn tokio_threads() -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let (mut a, mut b) = tokio::net::UnixStream::pair().map_err(|e| format!("pair: {e}"))?;
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 5];
            b.read_exact(&mut buf).await.map(|_| buf)
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let mut sum = 0u64;
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            tasks.push(tokio::spawn(async move { i * i }));
        }
        for t in tasks {
            sum += t.await.map_err(|e| format!("task: {e}"))?;
        }
        a.write_all(b"hello")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let got = echo
            .await
            .map_err(|e| format!("join: {e}"))?
            .map_err(|e| format!("read: {e}"))?;
        if &got != b"hello" || sum != 1240 {
            return Err("wrong results".to_string());
        }
        Ok("2 workers, 16 tasks, timer, UnixStream pair".to_string())
    })
}

fn rayon_threads() -> Result<String, String> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .map_err(|e| format!("pool: {e}"))?;
    let sum: u64 = pool.install(|| (0..1_000_000u64).into_par_iter().map(|x| x % 7).sum());
    let want: u64 = (0..1_000_000u64).map(|x| x % 7).sum();
    if sum != want {
        return Err(format!("sum {sum} != {want}"));
    }
    Ok(format!("2 threads, par_iter sum {sum}"))
}

/// Open fds, probed with fcntl(F_GETFD) (there is no /proc inside).
fn open_fds() -> String {
    let fds: Vec<String> = (0..4096)
        // SAFETY: F_GETFD only queries the fd table.
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .map(|fd: i32| fd.to_string())
        .collect();
    fds.join(",")
}

fn environment() -> String {
    let mut env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    env.sort();
    env.join(" ")
}

fn hostname() -> Result<String, String> {
    // SAFETY: utsname is plain data, filled by uname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(errno_name(last()));
    }
    // SAFETY: uname NUL-terminates nodename.
    let n = unsafe { CStr::from_ptr(u.nodename.as_ptr()) };
    Ok(n.to_string_lossy().into_owned())
}

fn allow(stage2: bool, fds_at_start: String) -> i32 {
    let mut out = std::io::stdout().lock();
    check(&mut out, "inherited_fds", Ok(fds_at_start));
    check(&mut out, "environment", Ok(environment()));
    check(&mut out, "hostname", hostname());
    check(&mut out, "identity", identity());
    if stage2 {
        check(
            &mut out,
            "stage2_installed",
            airlock_sandbox::seccomp::install(Profile::ProbeAllowedSide)
                .map(|_| "allow list installed (probe profile)".into())
                .map_err(|e| e.to_string()),
        );
        // SAFETY: prctl query without memory arguments.
        let d = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        check(
            &mut out,
            "dumpable_after_stage2",
            Ok(format!("dumpable={d}")),
        );
    }
    check(&mut out, "model_read", model_read());
    check(&mut out, "scratch_write", scratch_write());
    check(&mut out, "getrandom", getrandom());
    check(
        &mut out,
        "dev_urandom",
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut [0u8; 16]))
            .map(|_| "16 bytes".to_string())
            .map_err(|e| e.to_string()),
    );
    check(&mut out, "tokio_threads", tokio_threads());
    check(&mut out, "rayon_threads", rayon_threads());
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    // Stay alive until the suite has looked at /proc/<pid>/status and closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    0
}

fn main() {
    // First thing, before the runtime or tokio open anything of their own.
    let fds_at_start = open_fds();
    let mut args = std::env::args().skip(1).peekable();
    let mut stage2: Option<Profile> = None;
    let mut parent: i32 = 0;
    loop {
        match args.peek().map(String::as_str) {
            Some("--stage2") => {
                stage2 = Some(Profile::Worker);
                args.next();
            }
            Some("--stage2-profile") => {
                args.next();
                stage2 = match args.next().as_deref() {
                    Some("worker") => Some(Profile::Worker),
                    Some("doc-open") => Some(Profile::DocOpen),
                    other => {
                        eprintln!("airlock-probe: unknown stage-2 profile {other:?}");
                        std::process::exit(2);
                    }
                };
            }
            Some("--parent-pid") => {
                args.next();
                parent = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            }
            _ => break,
        }
    }
    let code = match (args.next().as_deref(), args.next()) {
        (Some("list"), None) => {
            for a in ACTS {
                println!("{a}");
            }
            0
        }
        (Some("allow"), None) => match stage2 {
            None => allow(false, fds_at_start),
            Some(Profile::Worker) => allow(true, fds_at_start),
            Some(p) => {
                eprintln!("airlock-probe: allow has no side for the {p:?} profile");
                2
            }
        },
        (Some("act"), Some(name)) => {
            if let Some(profile) = stage2 {
                // The exact list of the profile (the worker's or the opener's): each act proves
                // what that program may not do.
                if let Err(e) = airlock_sandbox::seccomp::install(profile) {
                    println!("check stage2_installed fail {e}");
                    std::process::exit(2);
                }
            }
            // Wait until the spawner has confirmed stage 2 and closes our stdin.
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            if stage2 == Some(Profile::DocOpen) {
                // Everything up to here ran under the opener's list: a SIGSYS after this line
                // is the act's.
                println!("check act_reached ok {name}");
            }
            match act(&name, parent) {
                Some(Outcome::Ok(d)) => println!("act {name} ok {d}"),
                Some(Outcome::Errno(e)) => println!("act {name} errno {}", errno_name(e)),
                None => {
                    eprintln!("airlock-probe: unknown act {name:?}");
                    std::process::exit(2);
                }
            }
            0
        }
        (Some("open"), Some(path)) => {
            let mode = args.next().unwrap_or_default();
            if let Some(profile) = stage2 {
                // The profile's exact list, as for `act`.
                if let Err(e) = airlock_sandbox::seccomp::install(profile) {
                    println!("check stage2_installed fail {e}");
                    std::process::exit(2);
                }
            }
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            match open_path(&path, &mode) {
                Some(Outcome::Ok(d)) => println!("open {path} ok {d}"),
                Some(Outcome::Errno(e)) => println!("open {path} errno {}", errno_name(e)),
                None => {
                    eprintln!("airlock-probe: unknown open mode {mode:?}");
                    std::process::exit(2);
                }
            }
            0
        }
        _ => {
            eprintln!(
                "usage: airlock-probe [--stage2 | --stage2-profile worker|doc-open] [--parent-pid PID] \
                 (allow | act NAME | open PATH MODE | list)"
            );
            2
        }
    };
    std::process::exit(code);
}
