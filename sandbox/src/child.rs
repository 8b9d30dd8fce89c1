//! The steps run inside the cloned child, between `clone` and `execveat`.
//!
//! The child is a copy of a possibly multi-threaded parent, so it must not call the allocator
//! (another thread may have held its lock at clone time) nor glibc's set*id wrappers (they
//! signal the parent's threads). Everything it needs is prepared in [`Plan`] by the parent;
//! here only raw syscalls run, each step reporting `(ChildStep, errno)` on failure through a
//! close-on-exec pipe. Order matters and is documented in docs/sandbox.md.

use std::ffi::{c_char, CStr, CString};
use std::os::fd::{BorrowedFd, RawFd};

use crate::landlock_policy::{self, Prepared};
use seccompiler::BpfProgram;

/// Declares [`ChildStep`] (numbered from 1 in declaration order) together with the table
/// that decodes a step number read from the error pipe, so the two cannot drift apart.
macro_rules! child_steps {
    ($($(#[$doc:meta])* $step:ident,)+) => {
        /// One step of the child's setup; reported with the errno when it fails.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        pub enum ChildStep {
            $($(#[$doc])* $step,)+
        }

        impl ChildStep {
            /// Every step, in order (the number of a step is its index + 1).
            const ALL: &'static [ChildStep] = &[$(ChildStep::$step,)+];

            /// The step's number on the error pipe (1-based).
            pub fn number(self) -> u32 {
                self as u32 + 1
            }

            /// Decodes a step number read from the error pipe.
            pub fn from_u32(v: u32) -> Option<Self> {
                let i = usize::try_from(v.checked_sub(1)?).ok()?;
                Self::ALL.get(i).copied()
            }
        }
    };
}

child_steps! {
    /// Resetting signal dispositions and the signal mask inherited from the parent.
    ResetSignals,
    /// `mount("/", MS_REC|MS_PRIVATE)`.
    MountPrivate,
    /// `open_tree(model, OPEN_TREE_CLONE)`.
    OpenModelTree,
    /// Creating the new root tmpfs (fsopen/fsconfig/fsmount).
    NewRootCreate,
    /// Attaching the new root tmpfs on top of `/` and entering it (`fchdir`).
    NewRootMount,
    /// Attaching the model tree at `/model`.
    ModelMount,
    /// Remounting `/model` read-only, nosuid, nodev, noexec.
    ModelRemount,
    /// Mounting the scratch tmpfs.
    ScratchMount,
    /// Creating the minimal /dev (a tmpfs holding only `random` and `urandom`).
    DevUrandom,
    /// `pivot_root(".", ".")` into the new root (`EINVAL`: the old root has no parent).
    PivotRoot,
    /// Detaching the old root and every mount on it.
    DetachOldRoot,
    /// Remounting the new root read-only.
    RootReadOnly,
    /// `sethostname` in the new UTS namespace.
    Hostname,
    /// Dropping the capability bounding set.
    CapBounding,
    /// `setgroups(0, NULL)`.
    Setgroups,
    /// `setresgid`.
    Setresgid,
    /// `setresuid`.
    Setresuid,
    /// Clearing effective, permitted, inheritable and ambient capabilities.
    CapsClear,
    /// `PR_SET_PDEATHSIG`.
    ParentDeathSignal,
    /// The parent died before the parent-death signal was armed.
    ParentGone,
    /// `PR_SET_DUMPABLE 0`.
    Dumpable,
    /// `PR_SET_NO_NEW_PRIVS 1`.
    NoNewPrivs,
    /// Opening `/model` or `/scratch` for the Landlock rules.
    LandlockOpen,
    /// Adding the model rule.
    LandlockModelRule,
    /// Adding the scratch rule.
    LandlockScratchRule,
    /// Adding the program rule.
    LandlockProgramRule,
    /// `landlock_restrict_self` (or not fully enforced under `Hard`).
    LandlockRestrict,
    /// Arranging the handed-over fds and closing the rest.
    FdLayout,
    /// `setrlimit`.
    Rlimit,
    /// Installing the stage-1 seccomp filter.
    Seccomp,
    /// `execveat` of the program.
    Exec,
}

/// Everything the child needs, prepared by the parent.
pub struct Plan {
    /// `O_PATH` fd of the program, opened before clone.
    pub program_fd: RawFd,
    /// Canonical model dir on the host, if any.
    pub model_path: Option<CString>,
    /// tmpfs options of the scratch mount.
    pub scratch_opts: CString,
    /// Hostname in the UTS namespace.
    pub hostname: CString,
    /// NULL-terminated argv (pointers into `_argv_store`).
    pub argv: Vec<*const c_char>,
    /// NULL-terminated envp (pointers into `_envp_store`).
    pub envp: Vec<*const c_char>,
    /// Owners of argv strings.
    pub _argv_store: Vec<CString>,
    /// Owners of envp strings.
    pub _envp_store: Vec<CString>,
    /// (source fd, target number) pairs handed to the program.
    pub fds: Vec<(RawFd, RawFd)>,
    /// `/dev/null`, for 0/1/2 when not handed over.
    pub devnull: RawFd,
    /// Write end of the error pipe (close-on-exec).
    pub err_w: RawFd,
    /// Read end of the parent-alive pipe.
    pub alive_r: RawFd,
    /// Write end of the parent-alive pipe (the child closes its copy).
    pub alive_w: RawFd,
    /// Target ids.
    pub uid: u32,
    /// Target ids.
    pub gid: u32,
    /// (resource, limit) pairs.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// Landlock ruleset, created.
    pub landlock: Prepared,
    /// Stage-1 seccomp programs.
    pub seccomp: Vec<BpfProgram>,
}

type Fail = (ChildStep, i32);

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// One raw syscall; `Err((step, errno))` on failure.
///
/// Callers pass integers, fds, or pointers to NUL-terminated strings and buffers that live in
/// the [`Plan`] or on the stack for the duration of the call; the kernel validates the rest.
fn sys(step: ChildStep, nr: libc::c_long, a: [usize; 5]) -> Result<usize, Fail> {
    // SAFETY: see the function's contract; raw syscalls only touch the calling thread and
    // do not call the allocator or any libc state that the clone may have copied in a locked
    // state.
    let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
    if rc < 0 {
        Err((step, errno()))
    } else {
        Ok(rc as usize)
    }
}

fn s(c: &CStr) -> usize {
    c.as_ptr() as usize
}

const NULL: usize = 0;

/// Runs the child's steps and execs; never returns.
pub fn run(plan: &mut Plan) -> ! {
    let err = match setup_and_exec(plan) {
        Ok(()) => (ChildStep::Exec, libc::EIO),
        Err(e) => e,
    };
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&err.0.number().to_ne_bytes());
    buf[4..].copy_from_slice(&err.1.to_ne_bytes());
    let _ = sys(
        err.0,
        libc::SYS_write,
        [plan.err_w as usize, buf.as_ptr() as usize, buf.len(), 0, 0],
    );
    // SAFETY: leaves without running destructors or atexit handlers of the copied parent state.
    unsafe { libc::_exit(127) }
}

fn setup_and_exec(p: &mut Plan) -> Result<(), Fail> {
    reset_signals()?;
    // Our copy of the parent's end of the alive pipe.
    sys(
        ChildStep::ResetSignals,
        libc::SYS_close,
        [p.alive_w as usize, 0, 0, 0, 0],
    )?;
    mounts(p)?;
    sys(
        ChildStep::Hostname,
        libc::SYS_sethostname,
        [s(&p.hostname), p.hostname.as_bytes().len(), 0, 0, 0],
    )?;
    drop_privileges(p)?;
    landlock(p)?;
    fd_layout(p)?;
    for &(res, lim) in &p.rlimits {
        let r = libc::rlimit {
            rlim_cur: lim,
            rlim_max: lim,
        };
        sys(
            ChildStep::Rlimit,
            libc::SYS_prlimit64,
            [0, res as usize, &r as *const libc::rlimit as usize, NULL, 0],
        )?;
    }
    for prog in &p.seccomp {
        seccompiler::apply_filter(prog).map_err(|_| (ChildStep::Seccomp, errno()))?;
    }
    // argv/envp are NULL-terminated arrays owned by the plan; "" + AT_EMPTY_PATH runs the fd.
    sys(
        ChildStep::Exec,
        libc::SYS_execveat,
        [
            p.program_fd as usize,
            s(c""),
            p.argv.as_ptr() as usize,
            p.envp.as_ptr() as usize,
            libc::AT_EMPTY_PATH as usize,
        ],
    )?;
    Err((ChildStep::Exec, errno()))
}

fn reset_signals() -> Result<(), Fail> {
    // Handlers do not survive exec, but SIG_IGN does: restore every disposition to default.
    // SAFETY: sigaction is plain data; zeroed means SIG_DFL with an empty mask and no flags.
    let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    for sig in 1..=64usize {
        if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
            continue;
        }
        // Errors (none expected) are irrelevant: the mask reset below is what matters.
        let _ = sys(
            ChildStep::ResetSignals,
            libc::SYS_rt_sigaction,
            [sig, &dfl as *const libc::sigaction as usize, NULL, 8, 0],
        );
    }
    let empty: u64 = 0;
    sys(
        ChildStep::ResetSignals,
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as usize,
            &empty as *const u64 as usize,
            NULL,
            8,
            0,
        ],
    )?;
    Ok(())
}

fn mount(
    src: usize,
    target: &CStr,
    fstype: usize,
    flags: libc::c_ulong,
    data: usize,
    step: ChildStep,
) -> Result<(), Fail> {
    sys(
        step,
        libc::SYS_mount,
        [src, s(target), fstype, flags as usize, data],
    )
    .map(|_| ())
}

fn mounts(p: &Plan) -> Result<(), Fail> {
    use ChildStep::*;
    const HIDE: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    const AT_FDCWD: usize = libc::AT_FDCWD as usize;
    const OPEN_TREE_CLONE: usize = 1;
    const FSOPEN_CLOEXEC: usize = 1;
    const FSCONFIG_SET_STRING: usize = 1;
    const FSCONFIG_CMD_CREATE: usize = 6;
    const FSMOUNT_CLOEXEC: usize = 1;
    const MOUNT_ATTR_NOSUID_NODEV_NOEXEC: usize = 0x2 | 0x4 | 0x8;
    const MOVE_MOUNT_F_EMPTY_PATH: usize = 4;
    // 1. Nothing we do propagates back to the host namespace.
    mount(
        NULL,
        c"/",
        NULL,
        libc::MS_REC | libc::MS_PRIVATE,
        NULL,
        MountPrivate,
    )?;
    // 2. Clone the model dir (without its submounts) while host paths still resolve.
    let model_tree = match &p.model_path {
        Some(path) => Some(sys(
            OpenModelTree,
            libc::SYS_open_tree,
            [
                AT_FDCWD,
                s(path),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as usize,
                0,
                0,
            ],
        )?),
        None => None,
    };
    // 3. The new root: an empty tmpfs (64 KiB, 16 inodes, nosuid,nodev,noexec), attached on top
    //    of `/` (pivot_root needs an attached mount) and entered by fd. Path lookups from the
    //    process root do not see a mount stacked on it, so everything below is relative to the
    //    new root as the working directory.
    let fs = sys(
        NewRootCreate,
        libc::SYS_fsopen,
        [s(c"tmpfs"), FSOPEN_CLOEXEC, 0, 0, 0],
    )?;
    for (key, value) in [(c"size", c"64k"), (c"mode", c"0755"), (c"nr_inodes", c"16")] {
        sys(
            NewRootCreate,
            libc::SYS_fsconfig,
            [fs, FSCONFIG_SET_STRING, s(key), s(value), 0],
        )?;
    }
    sys(
        NewRootCreate,
        libc::SYS_fsconfig,
        [fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0],
    )?;
    let new_root = sys(
        NewRootCreate,
        libc::SYS_fsmount,
        [fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID_NODEV_NOEXEC, 0, 0],
    )?;
    sys(
        NewRootMount,
        libc::SYS_move_mount,
        [new_root, s(c""), AT_FDCWD, s(c"/"), MOVE_MOUNT_F_EMPTY_PATH],
    )?;
    sys(NewRootMount, libc::SYS_fchdir, [new_root, 0, 0, 0, 0])?;
    for fd in [fs, new_root] {
        let _ = sys(NewRootMount, libc::SYS_close, [fd, 0, 0, 0, 0]);
    }
    // 4. /model, /scratch and /dev inside it (relative paths: the cwd is the new root).
    if let Some(tree) = model_tree {
        sys(ModelMount, libc::SYS_mkdir, [s(c"model"), 0o755, 0, 0, 0])?;
        sys(
            ModelMount,
            libc::SYS_move_mount,
            [tree, s(c""), AT_FDCWD, s(c"model"), MOVE_MOUNT_F_EMPTY_PATH],
        )?;
        let _ = sys(ModelMount, libc::SYS_close, [tree, 0, 0, 0, 0]);
        mount(
            NULL,
            c"model",
            NULL,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | HIDE,
            NULL,
            ModelRemount,
        )?;
    }
    sys(
        ScratchMount,
        libc::SYS_mkdir,
        [s(c"scratch"), 0o755, 0, 0, 0],
    )?;
    mount(
        s(c"tmpfs"),
        c"scratch",
        s(c"tmpfs"),
        HIDE,
        s(&p.scratch_opts),
        ScratchMount,
    )?;
    // A minimal /dev holding only random (1,8) and urandom (1,9): the getrandom crate in a
    // static binary cannot find glibc's getrandom() by dlsym and falls back to polling
    // /dev/random, then reading /dev/urandom. The tmpfs allows device nodes (no nodev) but is
    // read-only after this, noexec and nosuid.
    sys(DevUrandom, libc::SYS_mkdir, [s(c"dev"), 0o755, 0, 0, 0])?;
    const DEV_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NOEXEC;
    mount(
        s(c"tmpfs"),
        c"dev",
        s(c"tmpfs"),
        DEV_FLAGS,
        s(c"size=4k,mode=0755,nr_inodes=4"),
        DevUrandom,
    )?;
    for (path, minor) in [(c"dev/random", 8), (c"dev/urandom", 9)] {
        let mode = (libc::S_IFCHR | 0o444) as usize;
        let dev = libc::makedev(1, minor) as usize;
        sys(DevUrandom, libc::SYS_mknod, [s(path), mode, dev, 0, 0])?;
    }
    mount(
        NULL,
        c"dev",
        NULL,
        libc::MS_REMOUNT | libc::MS_RDONLY | DEV_FLAGS,
        NULL,
        DevUrandom,
    )?;
    // 5. pivot_root(".", "."): the new root takes the old root's place and the old root (the
    //    host's `/`, with every mount on it: /dev, /proc, /sys, /run, the state partition, ...)
    //    ends up stacked on top of it; one lazy detach drops that whole tree from this namespace
    //    (pivot_root(2) NOTES). EINVAL here means the old root has no parent (the initramfs
    //    rootfs): there is no fallback, the spawn fails (spawn() checks this first).
    sys(PivotRoot, libc::SYS_pivot_root, [s(c"."), s(c"."), 0, 0, 0])?;
    sys(
        DetachOldRoot,
        libc::SYS_umount2,
        [s(c"."), libc::MNT_DETACH as usize, 0, 0, 0],
    )?;
    sys(DetachOldRoot, libc::SYS_chdir, [s(c"/"), 0, 0, 0, 0])?;
    // 6. The root itself becomes read-only.
    mount(
        NULL,
        c"/",
        NULL,
        libc::MS_REMOUNT | libc::MS_RDONLY | HIDE,
        NULL,
        RootReadOnly,
    )?;
    Ok(())
}

fn prctl(step: ChildStep, op: libc::c_int, arg: usize) -> Result<usize, Fail> {
    sys(step, libc::SYS_prctl, [op as usize, arg, 0, 0, 0])
}

fn drop_privileges(p: &Plan) -> Result<(), Fail> {
    // Bounding set: every capability number the kernel knows (loop until EINVAL), so a newer
    // kernel's capabilities are dropped too. Raw prctl: caps::clear(Bounding) allocates.
    for cap in 0..64 {
        match prctl(ChildStep::CapBounding, libc::PR_CAPBSET_DROP, cap) {
            Ok(_) => {}
            Err((_, libc::EINVAL)) => break,
            Err(e) => return Err(e),
        }
    }
    // Raw syscalls: glibc's set*id wrappers would try to signal the parent's threads.
    sys(
        ChildStep::Setgroups,
        libc::SYS_setgroups,
        [0, NULL, 0, 0, 0],
    )?;
    let (u, g) = (p.uid as usize, p.gid as usize);
    sys(ChildStep::Setresgid, libc::SYS_setresgid, [g, g, g, 0, 0])?;
    sys(ChildStep::Setresuid, libc::SYS_setresuid, [u, u, u, 0, 0])?;
    // The uid change already emptied permitted/effective/ambient; clear explicitly anyway
    // (these caps calls are capget/capset/prctl and do not allocate on success).
    for set in [
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Permitted,
        caps::CapSet::Effective,
    ] {
        caps::clear(None, set).map_err(|_| (ChildStep::CapsClear, errno()))?;
    }
    // Parent-death signal: after the uid change (which clears it), then check the parent is
    // still there (it holds the write end of the alive pipe until we have exec'd).
    prctl(
        ChildStep::ParentDeathSignal,
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as usize,
    )?;
    let mut pfd = libc::pollfd {
        fd: p.alive_r,
        events: libc::POLLIN,
        revents: 0,
    };
    let n = sys(
        ChildStep::ParentGone,
        libc::SYS_poll,
        [&mut pfd as *mut libc::pollfd as usize, 1, 0, 0, 0],
    )?;
    if n != 0 && (pfd.revents & libc::POLLHUP) != 0 {
        return Err((ChildStep::ParentGone, libc::ESRCH));
    }
    sys(
        ChildStep::ParentGone,
        libc::SYS_close,
        [p.alive_r as usize, 0, 0, 0, 0],
    )?;
    prctl(ChildStep::Dumpable, libc::PR_SET_DUMPABLE, 0)?;
    sys(
        ChildStep::NoNewPrivs,
        libc::SYS_prctl,
        [libc::PR_SET_NO_NEW_PRIVS as usize, 1, 0, 0, 0],
    )?;
    Ok(())
}

fn open_path(path: &CStr) -> Result<RawFd, Fail> {
    let flags = libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY;
    sys(
        ChildStep::LandlockOpen,
        libc::SYS_openat,
        [libc::AT_FDCWD as usize, s(path), flags as usize, 0, 0],
    )
    .map(|fd| fd as RawFd)
}

fn landlock(p: &mut Plan) -> Result<(), Fail> {
    let model = if p.model_path.is_some() {
        Some(open_path(c"/model")?)
    } else {
        None
    };
    let scratch = open_path(c"/scratch")?;
    let dev = open_path(c"/dev")?;
    // SAFETY: the fds are open and stay open for the duration of the call.
    let (m, sc, ur, prog) = unsafe {
        (
            model.map(|f| BorrowedFd::borrow_raw(f)),
            BorrowedFd::borrow_raw(scratch),
            BorrowedFd::borrow_raw(dev),
            BorrowedFd::borrow_raw(p.program_fd),
        )
    };
    let r = p.landlock.enforce(m, sc, ur, prog).map_err(|f| {
        let step = match f {
            landlock_policy::ChildFailure::ModelRule => ChildStep::LandlockModelRule,
            landlock_policy::ChildFailure::ScratchRule => ChildStep::LandlockScratchRule,
            landlock_policy::ChildFailure::ProgramRule => ChildStep::LandlockProgramRule,
            landlock_policy::ChildFailure::Restrict => ChildStep::LandlockRestrict,
        };
        (step, errno())
    });
    for fd in model.into_iter().chain([scratch, dev]) {
        let _ = sys(
            ChildStep::LandlockOpen,
            libc::SYS_close,
            [fd as usize, 0, 0, 0, 0],
        );
    }
    r
}

fn fd_layout(p: &mut Plan) -> Result<(), Fail> {
    let max_target = p.fds.iter().map(|f| f.1).max().unwrap_or(2).max(2);
    let high = |fd: RawFd| -> Result<RawFd, Fail> {
        let args = [
            fd as usize,
            libc::F_DUPFD_CLOEXEC as usize,
            (max_target + 1) as usize,
            0,
            0,
        ];
        sys(ChildStep::FdLayout, libc::SYS_fcntl, args).map(|f| f as RawFd)
    };
    // Internal fds first, so no dup2 below can clobber them.
    p.program_fd = high(p.program_fd)?;
    p.err_w = high(p.err_w)?;
    p.devnull = high(p.devnull)?;
    for i in 0..p.fds.len() {
        p.fds[i].0 = high(p.fds[i].0)?;
    }
    // dup3 without O_CLOEXEC: the targets survive exec.
    for &(src, target) in &p.fds {
        sys(
            ChildStep::FdLayout,
            libc::SYS_dup3,
            [src as usize, target as usize, 0, 0, 0],
        )?;
    }
    for fd in 0..=max_target {
        if p.fds.iter().any(|f| f.1 == fd) {
            continue;
        }
        if fd <= 2 {
            sys(
                ChildStep::FdLayout,
                libc::SYS_dup3,
                [p.devnull as usize, fd as usize, 0, 0, 0],
            )?;
        } else {
            // Whatever is there goes (EBADF is fine).
            let _ = sys(
                ChildStep::FdLayout,
                libc::SYS_close,
                [fd as usize, 0, 0, 0, 0],
            );
        }
    }
    // Everything above the targets closes at exec.
    let args = [
        (max_target + 1) as usize,
        u32::MAX as usize,
        libc::CLOSE_RANGE_CLOEXEC as usize,
        0,
        0,
    ];
    sys(ChildStep::FdLayout, libc::SYS_close_range, args)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ChildStep;

    #[test]
    fn step_numbers_round_trip_and_unknown_numbers_decode_to_none() {
        for (i, s) in ChildStep::ALL.iter().enumerate() {
            assert_eq!(s.number() as usize, i + 1);
            assert_eq!(ChildStep::from_u32(s.number()), Some(*s));
        }
        assert_eq!(ChildStep::from_u32(1), Some(ChildStep::ResetSignals));
        assert_eq!(ChildStep::from_u32(0), None);
        assert_eq!(ChildStep::from_u32(ChildStep::ALL.len() as u32 + 1), None);
        assert_eq!(ChildStep::from_u32(u32::MAX), None);
    }
}
