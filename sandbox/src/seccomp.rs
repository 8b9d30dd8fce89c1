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
    /// The 32-bit argument `arg` is `value`.
    ArgEq {
        /// Argument index (0-based).
        arg: u8,
        /// Value compared with.
        value: u64,
    },
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
    /// The 32-bit argument `arg` is one of `values` (one rule per value).
    ArgIn {
        /// Argument index (0-based).
        arg: u8,
        /// Values compared with.
        values: &'static [u64],
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
    // socketpair: AF_UNIX only (the tokio signal driver's pair); other families as if absent.
    // (socket(2) itself is not in the worker's allow list at all.)
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

/// The worker's stage 2 allow list, measured with `strace -f` (docs/sandbox.md, "Measurement"):
/// every call the real worker made inside the sandbox after installing stage 2 — one-shot
/// generation ("W") and the socketpair protocol ("R"). A few unmeasured calls are kept for
/// crash and clock paths, each saying why. Everything else kills the process with `SIGSYS`.
/// ("P": the probe's allowed side makes the call too.) The probe's own extra calls are in
/// [`PROBE_ALLOW_EXTRA`], never here.
pub const STAGE2_ALLOW: &[Allow] = &[
    // --- memory ---
    // W P: heap growth (glibc malloc before mimalloc takes over, static TLS).
    allow!(SYS_brk),
    // W P: mimalloc segments, thread stacks, the model's tensors (PROT_EXEC refused by STAGE2_DENY).
    allow!(SYS_mmap),
    // W P: freeing mappings (thread exit, mimalloc).
    allow!(SYS_munmap),
    // W P: thread-stack guard pages (PROT_EXEC refused by STAGE2_DENY).
    allow!(SYS_mprotect),
    // W P: mimalloc purges, thread-stack cleanup (only the measured advices, see MADVISE_ADVICES).
    allow!(SYS_madvise),
    // --- threads and synchronisation ---
    // W P: thread creation (non-thread clones refused by STAGE2_DENY).
    allow!(SYS_clone),
    // W P: glibc tries clone3 first; STAGE2_DENY answers ENOSYS so it falls back to clone.
    allow!(SYS_clone3),
    // W P: mutexes, condition variables, parking, thread join (only the measured operations,
    // see FUTEX_OPS).
    allow!(SYS_futex),
    // W P: glibc thread start: robust mutex list.
    allow!(SYS_set_robust_list),
    // W P: glibc thread start: restartable sequences.
    allow!(SYS_rseq),
    // W P: thread exit.
    allow!(SYS_exit),
    // W P: process exit.
    allow!(SYS_exit_group),
    // W P: rayon/crossbeam spin-then-yield (W: thousands per generation).
    allow!(SYS_sched_yield),
    // W P: std::thread::available_parallelism, rayon pool size.
    allow!(SYS_sched_getaffinity),
    // W P: thread ids (std, tokio, glibc).
    allow!(SYS_gettid),
    // unmeasured: glibc's abort() raises SIGABRT with getpid + tgkill (P: std::process::id).
    allow!(SYS_getpid),
    // W: a mistral.rs background thread sleeps (5 s ticks).
    allow!(SYS_clock_nanosleep),
    // unmeasured: vDSO fallback on clocksources without vDSO support (e.g. some QEMU setups).
    allow!(SYS_clock_gettime),
    // W P: Rust thread names, mimalloc's mapping names (see WORKER_ONLY, PRCTL_OPTIONS).
    allow!(SYS_prctl),
    // --- signals ---
    // W P: thread start/exit masks.
    allow!(SYS_rt_sigprocmask),
    // W P: std's stack-overflow handler, restored to default on a crash.
    allow!(SYS_rt_sigaction),
    // unmeasured: return from std's SIGSEGV handler, so a crash ends as SIGSEGV, not SIGSYS.
    allow!(SYS_rt_sigreturn),
    // W P: per-thread alternate signal stacks (std).
    allow!(SYS_sigaltstack),
    // unmeasured: abort() raises SIGABRT with tgkill, so an abort reaches the worker's SIGABRT
    // handler (exit status 134; as PID 1 of its namespace it cannot die of its own SIGABRT).
    allow!(SYS_tgkill),
    // --- event loop ---
    // W P: tokio's reactor.
    allow!(SYS_epoll_create1),
    // W P: tokio's reactor.
    allow!(SYS_epoll_ctl),
    // W P: tokio's reactor.
    allow!(SYS_epoll_wait),
    // W P: tokio's waker.
    allow!(SYS_eventfd2),
    // W P: std's startup check of fds 0-2 (before stage 2) and readiness polls.
    allow!(SYS_poll),
    // --- files (only what Landlock lets open: /model read-only, /scratch, /dev/{u,}random) ---
    // W R P: the model file, the protocol socket, /dev/urandom.
    allow!(SYS_read),
    // W R P: the protocol socket, stdout/stderr.
    allow!(SYS_write),
    // W P: opening the model, scratch files, /dev/random.
    allow!(SYS_openat),
    // W P: closing.
    allow!(SYS_close),
    // W P: file metadata (std::fs::metadata, File::metadata).
    allow!(SYS_statx),
    // W P: glibc fstatat (std read_dir, canonicalize).
    allow!(SYS_newfstatat),
    // W: seeking in the GGUF file.
    allow!(SYS_lseek),
    // W P: directory listing (model dir, scratch).
    allow!(SYS_getdents64),
    // W P: fd flags (CLOEXEC, NONBLOCK on the protocol socket).
    allow!(SYS_fcntl),
    // W: std::fs::canonicalize of the model path.
    allow!(SYS_readlink),
    // W P: mimalloc's NUMA probe (/sys/devices/system/node/node1, absent: ENOENT).
    allow!(SYS_access),
    // W: mistral.rs creates $HOME/.cache/huggingface/hub (HOME=/scratch).
    allow!(SYS_mkdir),
    // --- AF_UNIX only ---
    // W P: tokio's signal/waker pair (AF_UNIX; other families refused by STAGE2_DENY).
    allow!(SYS_socketpair),
    // --- misc ---
    // W P: HashMap seeds, sampler seeds (std uses the syscall; the getrandom crate in a static
    // binary falls back to /dev/urandom).
    allow!(SYS_getrandom),
    // W P: std reads the stack limit.
    allow!(SYS_prlimit64),
    // W P: mimalloc sizes itself from the total RAM.
    allow!(SYS_sysinfo),
    // W: peak RSS for the stats frame.
    allow!(SYS_getrusage),
    // W: isatty(stderr) (TCGETS) by the logger; only this request (see WORKER_ONLY).
    allow!(SYS_ioctl),
];

/// The probe's additions to the worker's list, for its allowed side only (`airlock-probe
/// --stage2 allow`): its checks exercise std::fs and sockets more widely than the worker does.
/// Its forbidden acts run under the worker's exact list ([`Profile::Worker`]), so each call
/// here also has an act proving the worker is killed for it (docs/sandbox.md).
pub const PROBE_ALLOW_EXTRA: &[Allow] = &[
    // P: scratch_write renames a file (std::fs::rename).
    allow!(SYS_rename),
    // P: scratch_write removes a file (std::fs::remove_file).
    allow!(SYS_unlink),
    // P: scratch_write removes a directory (std::fs::remove_dir).
    allow!(SYS_rmdir),
    // P: tokio_threads writes to its UnixStream pair.
    allow!(SYS_sendto),
    // P: tokio_threads reads from its UnixStream pair.
    allow!(SYS_recvfrom),
    // P: the hostname check.
    allow!(SYS_uname),
    // P: the identity check.
    allow!(SYS_getuid),
    // P: the identity check.
    allow!(SYS_getgid),
];

/// The document opener's stage 2 allow list (`airlock-init` as `airlock-doc-open`, the
/// supervisor's `document` module): it reads a ciphertext and a session key from fd 0, writes
/// frames to fd 1 (and a line to fd 2 on failure), and computes. Measured with `strace -ff`
/// of `supervisor/tests/document_sandbox.rs` ("D"); the rest is kept for paths the
/// measurement did not take, each saying why. No file, socket, thread or clock calls.
pub const DOC_OPEN_ALLOW: &[Allow] = &[
    // D: heap growth (glibc malloc).
    allow!(SYS_brk),
    // D: large buffers (ciphertext, decrypted packet, text) above glibc's mmap threshold
    // (PROT_EXEC refused by STAGE2_DENY).
    allow!(SYS_mmap),
    // D: freeing them.
    allow!(SYS_munmap),
    // D: growing a large Vec in place (realloc of an mmapped chunk); the worker's list
    // does not have it, and a 24 MiB document was killed without it.
    allow!(SYS_mremap),
    // glibc malloc trimming; narrowed to the measured advices as in the worker's list.
    allow!(SYS_madvise),
    // D: the frames.
    allow!(SYS_read),
    // D: the frames, and the one-line error on fd 2.
    allow!(SYS_write),
    // D: std tears down the main thread's signal stack at exit.
    allow!(SYS_sigaltstack),
    // D: exit.
    allow!(SYS_exit_group),
    // std's panic path (a panic in rPGP is caught and refused): abort and backtrace paths.
    allow!(SYS_rt_sigprocmask),
    // std's panic path: the default handler may reset SIGABRT before abort.
    allow!(SYS_rt_sigaction),
    // std's panic path: raise(SIGABRT).
    allow!(SYS_gettid),
    // std's panic path: raise(SIGABRT).
    allow!(SYS_getpid),
    // std's panic path: raise(SIGABRT).
    allow!(SYS_tgkill),
    // std's HashMap seeds (RandomState) on first use inside rPGP.
    allow!(SYS_getrandom),
    // An uncontended std lock never calls it; a contended one (the stderr lock) does.
    allow!(SYS_futex),
];

/// A named stage-2 profile: which allow list and which argument narrowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The inference worker: exactly [`STAGE2_ALLOW`] with [`WORKER_ONLY`].
    Worker,
    /// The probe's allowed side: the worker's list plus [`PROBE_ALLOW_EXTRA`], and the prctl
    /// queries of [`PROBE_PRCTL_EXTRA`].
    ProbeAllowedSide,
    /// The OpenPGP document opener: [`DOC_OPEN_ALLOW`], with the worker's narrowing of the
    /// calls it shares ([`WORKER_ONLY`]).
    DocOpen,
}

impl Profile {
    /// The allow list of the profile.
    pub fn allow(self) -> Vec<Allow> {
        if self == Profile::DocOpen {
            return DOC_OPEN_ALLOW.to_vec();
        }
        let mut v = STAGE2_ALLOW.to_vec();
        if self == Profile::ProbeAllowedSide {
            v.extend_from_slice(PROBE_ALLOW_EXTRA);
        }
        v
    }

    /// The argument narrowing of allowed calls in the profile.
    pub fn only(self) -> Vec<(i64, When)> {
        match self {
            Profile::Worker | Profile::DocOpen => WORKER_ONLY.to_vec(),
            Profile::ProbeAllowedSide => WORKER_ONLY
                .iter()
                .map(|&(sys, when)| {
                    if sys == libc::SYS_prctl {
                        (sys, PROBE_PRCTL)
                    } else {
                        (sys, when)
                    }
                })
                .collect(),
        }
    }
}

/// Allowed calls narrowed further in the worker's profile: the allow list lets them through
/// only when the condition holds (otherwise the process is killed like any unlisted call).
pub const WORKER_ONLY: &[(i64, When)] = &[
    // ioctl only as TCGETS (isatty); no other request reaches any fd.
    (
        libc::SYS_ioctl,
        When::ArgEq {
            arg: 1,
            value: libc::TCGETS,
        },
    ),
    // prctl only with the options measured (strace of the worker): no PR_SET_SECCOMP (a filter
    // of the worker's own making would reach the BPF JIT), no PR_SET_DUMPABLE back to 1, no
    // PR_SET_MM, PR_SET_PTRACER, PR_CAPBSET_*, ...
    (
        libc::SYS_prctl,
        When::ArgIn {
            arg: 0,
            values: PRCTL_OPTIONS,
        },
    ),
    // futex only with the measured operations: no PI locks, no requeue, no wake-op.
    (
        libc::SYS_futex,
        When::ArgIn {
            arg: 1,
            values: FUTEX_OPS,
        },
    ),
    // madvise only with the measured advices.
    (
        libc::SYS_madvise,
        When::ArgIn {
            arg: 2,
            values: MADVISE_ADVICES,
        },
    ),
];

/// The `prctl` options the worker's stage 2 lets through.
pub const PRCTL_OPTIONS: &[u64] = &[
    // W P: std names every thread it starts (rayon, tokio, mistral.rs workers).
    libc::PR_SET_NAME as u64,
    // W: mimalloc names its arenas (PR_SET_VMA_ANON_NAME; EINVAL on kernels without it).
    libc::PR_SET_VMA as u64,
];

/// The probe's allowed side: [`PRCTL_OPTIONS`] plus the read-backs of its identity checks.
const PROBE_PRCTL: When = When::ArgIn {
    arg: 0,
    values: PROBE_PRCTL_EXTRA,
};

/// `prctl` options of the probe's allowed side (the worker's plus read-only queries).
pub const PROBE_PRCTL_EXTRA: &[u64] = &[
    libc::PR_SET_NAME as u64,
    libc::PR_SET_VMA as u64,
    // P: reads back no_new_privs, the seccomp mode and dumpable.
    libc::PR_GET_NO_NEW_PRIVS as u64,
    libc::PR_GET_SECCOMP as u64,
    libc::PR_GET_DUMPABLE as u64,
];

/// `futex` operations (argument 1, flags included) the worker's stage 2 lets through,
/// measured with `strace -f` on the sandboxed worker after its stage 2 (protocol mode, driven by
/// `airlock-bench-worker --sandboxed`) and on a one-shot run (docs/sandbox.md, "Measurement").
/// No PI locks, no requeue, no wake-op, no other shared-word waits.
pub const FUTEX_OPS: &[u64] = &[
    // W P: FUTEX_WAKE_PRIVATE (std's parking and condvars, glibc's unlock).
    (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64,
    // W P: FUTEX_WAIT_BITSET_PRIVATE (std's parking and condvars, rayon's sleep).
    (libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG) as u64,
    // W: FUTEX_WAIT_PRIVATE (glibc's contended-lock path, lll_lock_wait).
    (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64,
    // W P: FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME (glibc's pthread_join waits on the thread-id
    // word, which the kernel wakes as a shared futex).
    (libc::FUTEX_WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME) as u64,
];

/// `madvise` advices (argument 2) the worker's stage 2 lets through, measured with
/// `strace -f -e trace=madvise` on the worker.
pub const MADVISE_ADVICES: &[u64] = &[
    // W P: MADV_DONTNEED (mimalloc purges, glibc frees an exited thread's stack).
    libc::MADV_DONTNEED as u64,
    // W P, seen before stage 2 only: mimalloc marks the 1 GiB arena it reserves MADV_HUGEPAGE
    // on kernels with transparent huge pages (the appliance has CONFIG_TRANSPARENT_HUGEPAGE=y);
    // a model larger than the first arena (the real ones are GiBs; the test models are not)
    // makes it reserve more arenas after stage 2. Kept so that does not end in SIGSYS.
    libc::MADV_HUGEPAGE as u64,
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
        When::ArgEq { arg, value } => vec![one(cond(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            value,
            s,
        )?)?],
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
        When::ArgIn { arg, values } => values
            .iter()
            .map(|&v| one(cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v, s)?))
            .collect::<Result<_, _>>()?,
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

/// Compiles an allow table into one program: listed calls allowed (those in `only` when their
/// condition holds), everything else killed.
pub fn compile_allow(table: &[Allow], only: &[(i64, When)]) -> Result<BpfProgram, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in table {
        let narrowed = only.iter().find(|(sys, _)| *sys == a.syscall);
        let rules = match narrowed {
            Some(&(syscall, when)) => rules_for(&Deny {
                syscall,
                name: a.name,
                when,
                verdict: Verdict::Kill,
            })?,
            None => Vec::new(),
        };
        map.insert(a.syscall, rules);
    }
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

/// All programs of the worker's stage 2, in installation order.
pub fn stage2_programs() -> Result<Vec<BpfProgram>, SeccompError> {
    profile_programs(Profile::Worker)
}

/// All programs of a stage-2 profile, in installation order (same count for every profile).
pub fn profile_programs(profile: Profile) -> Result<Vec<BpfProgram>, SeccompError> {
    // The refinements first: once the allow list is in, seccomp(2) itself is no longer allowed.
    let mut v = compile_deny(STAGE2_DENY)?;
    v.push(compile_allow(&profile.allow(), &profile.only())?);
    Ok(v)
}

/// Number of programs stage 2 installs (one per distinct verdict of [`STAGE2_DENY`] plus the
/// allow list), without compiling them: what the spawner waits for ([`crate::Stage2`]).
pub fn stage2_filter_count() -> usize {
    let mut verdicts: Vec<Verdict> = Vec::new();
    for d in STAGE2_DENY {
        if !verdicts.contains(&d.verdict) {
            verdicts.push(d.verdict);
        }
    }
    verdicts.len() + 1
}

/// Installs the worker's strict stage-2 allow list on every thread of the calling process.
///
/// Call it in plain `main()` before any tokio or rayon thread exists and before reading any
/// request. It also sets `PR_SET_DUMPABLE 0` again, because `execve` resets the flag that the
/// spawner set. After it returns, `execve`, non-thread `clone`, non-`AF_UNIX` sockets and
/// `PROT_EXEC` mappings are refused (see [`STAGE2_ALLOW`] and [`STAGE2_DENY`]).
pub fn install_worker_allowlist() -> Result<(), SeccompError> {
    install(Profile::Worker)
}

/// Installs a stage-2 profile (see [`install_worker_allowlist`] for when to call it).
pub fn install(profile: Profile) -> Result<(), SeccompError> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(SeccompError::SetDumpable(std::io::Error::last_os_error()));
    }
    for prog in profile_programs(profile)? {
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
        for p in [Profile::Worker, Profile::ProbeAllowedSide, Profile::DocOpen] {
            assert_eq!(profile_programs(p).unwrap().len(), stage2_filter_count());
        }
    }

    #[test]
    fn worker_list_holds_none_of_the_probe_additions() {
        // The probe's additions must never leak into the worker's list (item: least privilege).
        for extra in PROBE_ALLOW_EXTRA {
            assert!(
                !STAGE2_ALLOW.iter().any(|a| a.syscall == extra.syscall),
                "{} is in the worker's list",
                extra.name
            );
        }
        for bad in [
            libc::SYS_socket,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_rename,
            libc::SYS_unlink,
            libc::SYS_rmdir,
            libc::SYS_uname,
            libc::SYS_getuid,
            libc::SYS_getgid,
        ] {
            assert!(!Profile::Worker.allow().iter().any(|a| a.syscall == bad));
        }
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
