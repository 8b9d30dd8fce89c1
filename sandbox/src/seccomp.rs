//! seccomp policies of the worker sandbox, kept as data (one comment per rule).
//!
//! Two stages (DESIGN.md, "Sandbox of the worker", layer 5):
//!
//! * **Stage 1** ([`STAGE1_DENY`]) is installed by the spawner right before it
//!   executes the program. It is a deny list: everything not named is allowed
//!   (the program still has to start, so `execve` stays allowed), the dangerous
//!   families are answered with an errno.
//! * **Stage 2** ([`STAGE2_ALLOW`] + [`STAGE2_DENY`]) is installed by the worker
//!   itself, in plain `main()`, before any thread exists and before it reads a
//!   request ([`install_worker_allowlist`]). It is an allow list measured with
//!   `strace -f` on the worker and on the probe; anything else kills the process
//!   with `SIGSYS`. A few allowed calls are narrowed by [`STAGE2_DENY`] (socket
//!   only `AF_UNIX`, clone only `CLONE_THREAD`, clone3 → `ENOSYS`, no `PROT_EXEC`).
//!
//! Several filters are stacked. The kernel runs every installed filter and the
//! most restrictive verdict wins (KILL > ERRNO > ALLOW), so an errno refinement
//! takes effect as long as the allow list lets the call through, and a call
//! missing from the allow list is killed whatever the other filters say.
//!
//! Every filter also starts with seccompiler's architecture check (a foreign
//! audit arch kills the process), and [`X32_GUARD`] kills any x32-ABI syscall
//! number (bit 30 set), which would otherwise slip past rules keyed by the
//! x86_64 numbers on a kernel built with `CONFIG_X86_X32_ABI`.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Errors of this module; each variant names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A rule of the policy table could not be turned into a seccompiler rule.
    #[error("seccomp: building rule for syscall {syscall} failed: {source}")]
    BuildRule {
        /// Syscall number of the rule.
        syscall: i64,
        /// Underlying error.
        source: seccompiler::BackendError,
    },
    /// The filter could not be assembled.
    #[error("seccomp: building filter failed: {0}")]
    BuildFilter(seccompiler::BackendError),
    /// The filter could not be compiled to BPF.
    #[error("seccomp: compiling filter to BPF failed: {0}")]
    Compile(seccompiler::BackendError),
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` (or the `no_new_privs` prctl before it) failed.
    #[error("seccomp: installing filter failed: {0}")]
    Install(seccompiler::Error),
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("seccomp: prctl(PR_SET_DUMPABLE, 0) failed: {0}")]
    SetDumpable(std::io::Error),
}

/// When a rule applies, judged on the syscall's arguments.
#[derive(Debug, Clone, Copy)]
pub enum When {
    /// Always.
    Always,
    /// The 32-bit argument `arg` is not `value`.
    ArgNe {
        /// Argument index (0-based).
        arg: u8,
        /// Value compared with.
        value: u64,
    },
    /// The 64-bit argument `arg` has at least one of `bits` set (one rule per bit).
    ArgAnyBit {
        /// Argument index (0-based).
        arg: u8,
        /// Bits tested one by one.
        bits: &'static [u64],
    },
    /// The 64-bit argument `arg` has `bit` clear.
    ArgBitClear {
        /// Argument index (0-based).
        arg: u8,
        /// Bit tested.
        bit: u64,
    },
    /// The 32-bit argument `arg` has `bit` set.
    ArgBitSet {
        /// Argument index (0-based).
        arg: u8,
        /// Bit tested.
        bit: u64,
    },
}

/// What a matching deny rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fail the call with this errno.
    Errno(i32),
    /// Kill the whole process with `SIGSYS`.
    Kill,
}

/// One deny rule: a syscall, when it matches, the verdict and why.
#[derive(Debug, Clone, Copy)]
pub struct Deny {
    /// Syscall number (x86_64).
    pub syscall: i64,
    /// Syscall name, for reports.
    pub name: &'static str,
    /// Condition on the arguments.
    pub when: When,
    /// What happens on a match.
    pub verdict: Verdict,
}

/// One allow rule of the stage-2 allow list.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    /// Syscall number (x86_64).
    pub syscall: i64,
    /// Syscall name, for reports.
    pub name: &'static str,
}

const EPERM: Verdict = Verdict::Errno(libc::EPERM);
/// The errno of a kernel built without the address family.
const NO_FAMILY: Verdict = Verdict::Errno(libc::EAFNOSUPPORT);
/// First argument (the address family) is not AF_UNIX.
const NOT_UNIX: When = When::ArgNe {
    arg: 0,
    value: libc::AF_UNIX as u64,
};
/// Third argument (prot) has PROT_EXEC.
const PROT_EXEC: When = When::ArgBitSet {
    arg: 2,
    bit: libc::PROT_EXEC as u64,
};
/// First argument (clone flags) lacks CLONE_THREAD.
const NOT_A_THREAD: When = When::ArgBitClear {
    arg: 0,
    bit: libc::CLONE_THREAD as u64,
};
/// First argument (clone flags) has a namespace flag.
const NEW_NAMESPACE: When = When::ArgAnyBit {
    arg: 0,
    bits: NAMESPACE_FLAGS,
};

/// Namespace flags of clone(2)/unshare(2).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    // CLONE_NEWTIME (only valid for clone3/unshare, listed for completeness).
    0x80,
];

macro_rules! deny {
    ($sys:ident, $when:expr, $verdict:expr) => {
        Deny {
            syscall: libc::$sys,
            name: stringify!($sys),
            when: $when,
            verdict: $verdict,
        }
    };
}

macro_rules! allow {
    ($sys:ident) => {
        Allow {
            syscall: libc::$sys,
            name: stringify!($sys),
        }
    };
}

/// Stage 1: the spawner's deny list (everything else allowed, `execve` included).
pub const STAGE1_DENY: &[Deny] = &[
    // Network: only AF_UNIX sockets; any other family looks like a kernel without it.
    deny!(SYS_socket, NOT_UNIX, NO_FAMILY),
    // socketpair exists only for AF_UNIX anyway; refuse the rest the same way.
    deny!(SYS_socketpair, NOT_UNIX, NO_FAMILY),
    // Debugging other processes (and reading/writing their memory).
    deny!(SYS_ptrace, When::Always, EPERM),
    // Cross-process memory access without ptrace.
    deny!(SYS_process_vm_readv, When::Always, EPERM),
    // Cross-process memory writes without ptrace.
    deny!(SYS_process_vm_writev, When::Always, EPERM),
    // Mount table changes (old API).
    deny!(SYS_mount, When::Always, EPERM),
    // Unmounting (could uncover what the root tmpfs hides).
    deny!(SYS_umount2, When::Always, EPERM),
    // Root switching.
    deny!(SYS_pivot_root, When::Always, EPERM),
    // chroot (needs CAP_SYS_CHROOT, refused here as well).
    deny!(SYS_chroot, When::Always, EPERM),
    // New mount API: moving mounts.
    deny!(SYS_move_mount, When::Always, EPERM),
    // New mount API: cloning mount trees.
    deny!(SYS_open_tree, When::Always, EPERM),
    // New mount API: creating filesystem contexts.
    deny!(SYS_fsopen, When::Always, EPERM),
    // New mount API: configuring filesystem contexts.
    deny!(SYS_fsconfig, When::Always, EPERM),
    // New mount API: creating mounts.
    deny!(SYS_fsmount, When::Always, EPERM),
    // New mount API: picking existing superblocks.
    deny!(SYS_fspick, When::Always, EPERM),
    // New mount API: changing mount attributes (e.g. dropping read-only).
    deny!(SYS_mount_setattr, When::Always, EPERM),
    // Handle-based opens bypass path checks (classic container escape).
    deny!(SYS_open_by_handle_at, When::Always, EPERM),
    // eBPF programs and maps.
    deny!(SYS_bpf, When::Always, EPERM),
    // Loading a new kernel.
    deny!(SYS_kexec_load, When::Always, EPERM),
    // Loading a new kernel from a file.
    deny!(SYS_kexec_file_load, When::Always, EPERM),
    // Kernel modules from memory.
    deny!(SYS_init_module, When::Always, EPERM),
    // Kernel modules from a file.
    deny!(SYS_finit_module, When::Always, EPERM),
    // Removing kernel modules.
    deny!(SYS_delete_module, When::Always, EPERM),
    // Kernel keyrings: operations.
    deny!(SYS_keyctl, When::Always, EPERM),
    // Kernel keyrings: adding keys.
    deny!(SYS_add_key, When::Always, EPERM),
    // Kernel keyrings: requesting keys (may call out to user space helpers).
    deny!(SYS_request_key, When::Always, EPERM),
    // userfaultfd makes kernel races easy to win.
    deny!(SYS_userfaultfd, When::Always, EPERM),
    // io_uring bypasses seccomp for the operations it performs: setup.
    deny!(SYS_io_uring_setup, When::Always, EPERM),
    // io_uring: submission.
    deny!(SYS_io_uring_enter, When::Always, EPERM),
    // io_uring: registration.
    deny!(SYS_io_uring_register, When::Always, EPERM),
    // Performance counters (side channels, large kernel surface).
    deny!(SYS_perf_event_open, When::Always, EPERM),
    // New namespaces for the caller (user namespaces give back "root").
    deny!(SYS_unshare, When::Always, EPERM),
    // Joining other namespaces.
    deny!(SYS_setns, When::Always, EPERM),
    // clone with any namespace flag.
    deny!(SYS_clone, NEW_NAMESPACE, EPERM),
    // clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc fall back to clone.
    deny!(SYS_clone3, When::Always, Verdict::Errno(libc::ENOSYS)),
];

/// Stage 2 refinements of calls that [`STAGE2_ALLOW`] lets through.
pub const STAGE2_DENY: &[Deny] = &[
    // Sockets: AF_UNIX only (the tokio signal driver uses a socketpair); others as if absent.
    deny!(SYS_socket, NOT_UNIX, NO_FAMILY),
    // socketpair: same.
    deny!(SYS_socketpair, NOT_UNIX, NO_FAMILY),
    // clone only creates threads: fork/vfork-style clones fail (std's Command then reports an error).
    deny!(SYS_clone, NOT_A_THREAD, EPERM),
    // clone3: its flags are not visible to seccomp; ENOSYS makes glibc and std fall back to clone.
    deny!(SYS_clone3, When::Always, Verdict::Errno(libc::ENOSYS)),
    // No new executable mappings (no JIT, no loading code at run time).
    deny!(SYS_mmap, PROT_EXEC, Verdict::Errno(libc::EACCES)),
    // No turning existing memory executable.
    deny!(SYS_mprotect, PROT_EXEC, Verdict::Errno(libc::EACCES)),
];

/// Stage 2 allow list, measured with `strace -f` (see docs/sandbox.md for the runs).
/// Everything not listed kills the process with `SIGSYS`.
pub const STAGE2_ALLOW: &[Allow] = &[
    // --- memory ---
    // heap growth by glibc malloc.
    allow!(SYS_brk),
    // allocations, thread stacks, file mappings (PROT_EXEC refused by STAGE2_DENY).
    allow!(SYS_mmap),
    // freeing mappings.
    allow!(SYS_munmap),
    // guard pages, RELRO (PROT_EXEC refused by STAGE2_DENY).
    allow!(SYS_mprotect),
    // Vec growth of large buffers.
    allow!(SYS_mremap),
    // allocator hints (MADV_DONTNEED/FREE) and thread-stack cleanup.
    allow!(SYS_madvise),
    // --- threads and synchronisation ---
    // thread creation (non-thread clones refused by STAGE2_DENY).
    allow!(SYS_clone),
    // answered ENOSYS by STAGE2_DENY so glibc falls back to clone.
    allow!(SYS_clone3),
    // mutexes, condition variables, thread join.
    allow!(SYS_futex),
    // glibc thread start: robust mutex list.
    allow!(SYS_set_robust_list),
    // glibc thread start: restartable sequences.
    allow!(SYS_rseq),
    // thread exit.
    allow!(SYS_exit),
    // process exit.
    allow!(SYS_exit_group),
    // rayon/crossbeam spin-then-yield.
    allow!(SYS_sched_yield),
    // std::thread::available_parallelism, rayon pool size.
    allow!(SYS_sched_getaffinity),
    // thread ids (tokio, log, glibc).
    allow!(SYS_gettid),
    // process id (glibc abort, std).
    allow!(SYS_getpid),
    // sleeping (tokio timer fallback, std::thread::sleep).
    allow!(SYS_clock_nanosleep),
    // std::thread::sleep on older glibc paths.
    allow!(SYS_nanosleep),
    // clock reads that fall out of the vDSO.
    allow!(SYS_clock_gettime),
    // clock resolution.
    allow!(SYS_clock_getres),
    // Rust thread names.
    allow!(SYS_prctl),
    // --- signals ---
    // signal masks (thread start, std, tokio).
    allow!(SYS_rt_sigprocmask),
    // handlers (std stack-overflow handler, tokio signal driver).
    allow!(SYS_rt_sigaction),
    // return from a signal handler.
    allow!(SYS_rt_sigreturn),
    // alternate signal stacks for each Rust thread.
    allow!(SYS_sigaltstack),
    // abort() and thread-directed signals inside the process.
    allow!(SYS_tgkill),
    // --- event loop ---
    // tokio's reactor.
    allow!(SYS_epoll_create1),
    // tokio's reactor.
    allow!(SYS_epoll_ctl),
    // tokio's reactor.
    allow!(SYS_epoll_wait),
    // tokio's reactor (newer mio).
    allow!(SYS_epoll_pwait),
    // tokio's reactor (newest mio).
    allow!(SYS_epoll_pwait2),
    // tokio's waker.
    allow!(SYS_eventfd2),
    // std/tokio readiness polling.
    allow!(SYS_poll),
    // std/tokio readiness polling.
    allow!(SYS_ppoll),
    // --- file descriptors (only what Landlock lets open: /model read-only, /scratch) ---
    // reading the protocol pipe, the model, scratch files.
    allow!(SYS_read),
    // writing the protocol pipe and scratch files.
    allow!(SYS_write),
    // positioned reads of model files.
    allow!(SYS_pread64),
    // positioned writes of scratch files.
    allow!(SYS_pwrite64),
    // vectored reads.
    allow!(SYS_readv),
    // vectored writes (stdio, log).
    allow!(SYS_writev),
    // opening model and scratch files.
    allow!(SYS_openat),
    // closing.
    allow!(SYS_close),
    // file sizes and types.
    allow!(SYS_fstat),
    // file metadata (std::fs::metadata).
    allow!(SYS_statx),
    // file metadata (glibc stat/fstatat).
    allow!(SYS_newfstatat),
    // seeking in model files.
    allow!(SYS_lseek),
    // directory listing of the model dir.
    allow!(SYS_getdents64),
    // fd flags (CLOEXEC, NONBLOCK).
    allow!(SYS_fcntl),
    // FIONBIO and terminal checks by std/tokio on inherited fds.
    allow!(SYS_ioctl),
    // std::fs::canonicalize.
    allow!(SYS_readlink),
    // path checks.
    allow!(SYS_access),
    // path checks.
    allow!(SYS_faccessat2),
    // scratch housekeeping: unlink.
    allow!(SYS_unlinkat),
    // scratch housekeeping: mkdir.
    allow!(SYS_mkdirat),
    // scratch housekeeping: rename.
    allow!(SYS_renameat2),
    // std::fs::create_dir (measured: std uses the non-at variant).
    allow!(SYS_mkdir),
    // std::fs::rename (measured).
    allow!(SYS_rename),
    // std::fs::remove_file (measured).
    allow!(SYS_unlink),
    // std::fs::remove_dir (measured).
    allow!(SYS_rmdir),
    // scratch files: truncate.
    allow!(SYS_ftruncate),
    // scratch files: fsync.
    allow!(SYS_fsync),
    // std::env::current_dir.
    allow!(SYS_getcwd),
    // pipes inside the process (tokio, std).
    allow!(SYS_pipe2),
    // duplicated fds.
    allow!(SYS_dup),
    // duplicated fds.
    allow!(SYS_dup3),
    // --- AF_UNIX only (STAGE2_DENY refuses other families) ---
    // tokio signal driver, protocol socket.
    allow!(SYS_socket),
    // tokio signal driver's socketpair.
    allow!(SYS_socketpair),
    // messages on the inherited socketpair.
    allow!(SYS_sendmsg),
    // messages on the inherited socketpair.
    allow!(SYS_recvmsg),
    // messages on the inherited socketpair.
    allow!(SYS_sendto),
    // messages on the inherited socketpair.
    allow!(SYS_recvfrom),
    // closing one direction of the protocol socket.
    allow!(SYS_shutdown),
    // --- misc ---
    // randomness (HashMap seeds, sampling seeds) without /dev/urandom.
    allow!(SYS_getrandom),
    // resource limits (std reads the stack limit).
    allow!(SYS_prlimit64),
    // uname (glibc, sysinfo-like crates).
    allow!(SYS_uname),
    // ids (glibc, std).
    allow!(SYS_getuid),
    // ids.
    allow!(SYS_geteuid),
    // ids.
    allow!(SYS_getgid),
    // ids.
    allow!(SYS_getegid),
    // memory totals (some crates size caches from it).
    allow!(SYS_sysinfo),
    // CPU number for per-CPU caches (mimalloc, crossbeam).
    allow!(SYS_getcpu),
    // rusage for peak RSS reports.
    allow!(SYS_getrusage),
];

/// The x32-ABI guard: kill any syscall number with bit 30 (`__X32_SYSCALL_BIT`) set.
/// Raw BPF because seccompiler keys rules by exact syscall numbers.
pub const X32_GUARD: &[(u16, u8, u8, u32)] = &[
    // A = seccomp_data.arch
    (0x20, 0, 0, 4),
    // if A == AUDIT_ARCH_X86_64 skip 1 else kill
    (0x15, 1, 0, 0xC000_003E),
    (0x06, 0, 0, 0x8000_0000),
    // A = seccomp_data.nr
    (0x20, 0, 0, 0),
    // if A >= 0x40000000 kill else allow
    (0x35, 0, 1, 0x4000_0000),
    (0x06, 0, 0, 0x8000_0000),
    (0x06, 0, 0, 0x7fff_0000),
];

fn x32_guard() -> BpfProgram {
    X32_GUARD
        .iter()
        .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
        .collect()
}

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
    syscall: i64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, op, value)
        .map_err(|source| SeccompError::BuildRule { syscall, source })
}

fn rules_for(d: &Deny) -> Result<Vec<SeccompRule>, SeccompError> {
    let s = d.syscall;
    let one = |c: SeccompCondition| {
        SeccompRule::new(vec![c]).map_err(|source| SeccompError::BuildRule { syscall: s, source })
    };
    Ok(match d.when {
        When::Always => Vec::new(),
        When::ArgNe { arg, value } => vec![one(cond(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            value,
            s,
        )?)?],
        When::ArgAnyBit { arg, bits } => bits
            .iter()
            .map(|&b| {
                one(cond(
                    arg,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(b),
                    b,
                    s,
                )?)
            })
            .collect::<Result<_, _>>()?,
        When::ArgBitClear { arg, bit } => vec![one(cond(
            arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(bit),
            0,
            s,
        )?)?],
        When::ArgBitSet { arg, bit } => vec![one(cond(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(bit),
            bit,
            s,
        )?)?],
    })
}

fn action(v: Verdict) -> SeccompAction {
    match v {
        Verdict::Errno(e) => SeccompAction::Errno(e.unsigned_abs()),
        Verdict::Kill => SeccompAction::KillProcess,
    }
}

/// Compiles a deny table: one BPF program per distinct verdict (a filter has one match action).
pub fn compile_deny(table: &[Deny]) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut verdicts: Vec<Verdict> = Vec::new();
    for d in table {
        if !verdicts.contains(&d.verdict) {
            verdicts.push(d.verdict);
        }
    }
    let mut out = Vec::new();
    for v in verdicts {
        let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        let mut unconditional: Vec<i64> = Vec::new();
        for d in table.iter().filter(|d| d.verdict == v) {
            let rules = rules_for(d)?;
            if rules.is_empty() {
                unconditional.push(d.syscall);
            }
            map.entry(d.syscall).or_default().extend(rules);
        }
        // An unconditional entry wins over conditional ones for the same syscall.
        for s in unconditional {
            map.insert(s, Vec::new());
        }
        let filter = SeccompFilter::new(map, SeccompAction::Allow, action(v), TargetArch::x86_64)
            .map_err(SeccompError::BuildFilter)?;
        out.push(BpfProgram::try_from(filter).map_err(SeccompError::Compile)?);
    }
    Ok(out)
}

/// Compiles an allow table into one program: listed calls allowed, everything else killed.
pub fn compile_allow(table: &[Allow]) -> Result<BpfProgram, SeccompError> {
    let map: BTreeMap<i64, Vec<SeccompRule>> =
        table.iter().map(|a| (a.syscall, Vec::new())).collect();
    let filter = SeccompFilter::new(
        map,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::BuildFilter)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Compile)
}

/// All programs of stage 1, in installation order.
pub fn stage1_programs() -> Result<Vec<BpfProgram>, SeccompError> {
    let mut v = vec![x32_guard()];
    v.extend(compile_deny(STAGE1_DENY)?);
    Ok(v)
}

/// All programs of stage 2, in installation order.
pub fn stage2_programs() -> Result<Vec<BpfProgram>, SeccompError> {
    // The refinements first: once the allow list is in, seccomp(2) itself is no longer allowed.
    let mut v = compile_deny(STAGE2_DENY)?;
    v.push(compile_allow(STAGE2_ALLOW)?);
    Ok(v)
}

/// Installs the worker's strict stage-2 allow list on every thread of the calling process.
///
/// Call it in plain `main()` before any tokio or rayon thread exists and before reading any
/// request. It also sets `PR_SET_DUMPABLE 0` again, because `execve` resets the flag that the
/// spawner set. After it returns, `execve`, non-thread `clone`, non-`AF_UNIX` sockets and
/// `PROT_EXEC` mappings are refused (see [`STAGE2_ALLOW`] and [`STAGE2_DENY`]).
pub fn install_worker_allowlist() -> Result<(), SeccompError> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(SeccompError::SetDumpable(std::io::Error::last_os_error()));
    }
    for prog in stage2_programs()? {
        seccompiler::apply_filter_all_threads(&prog).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tables_compile() {
        assert_eq!(stage1_programs().unwrap().len(), 1 + 3);
        assert_eq!(stage2_programs().unwrap().len(), 1 + 4);
    }

    #[test]
    fn stage2_refinements_are_allowed_first() {
        // A refinement of a call missing from the allow list would be dead: the kill wins.
        for d in STAGE2_DENY {
            assert!(
                STAGE2_ALLOW.iter().any(|a| a.syscall == d.syscall),
                "{} refined but not allowed",
                d.name
            );
        }
    }

    #[test]
    fn stage2_never_allows_exec_or_namespaces() {
        for bad in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
            libc::SYS_bpf,
            libc::SYS_kill,
        ] {
            assert!(
                !STAGE2_ALLOW.iter().any(|a| a.syscall == bad),
                "syscall {bad} allowed"
            );
        }
    }
}
