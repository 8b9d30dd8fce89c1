//! The probe suite: spawns `airlock-probe` through the very same [`crate::spawn`] path as the
//! worker and checks that each forbidden act fails the expected way and each allowed one works.
//!
//! Two passes: `s1.*` with only what the spawner installs (namespaces, mounts, ids, caps,
//! Landlock, stage-1 seccomp), and `s2.*` where every act runs under the worker's exact
//! stage-2 allow list (installed as the worker does) and the allowed side under the probe's
//! profile (the worker's list plus the probe's additions, `seccomp::PROBE_ALLOW_EXTRA`). In
//! the `s2` pass the spawner must confirm stage 2 before it hands the probe over, as for the
//! worker. Acts that may end in `SIGSYS` run one per probe process.
//!
//! A third pass, `d2.*` ([`run_doc_open`], table [`DOC_OPEN_ACTS`]), runs acts under the
//! document opener's stage 2 ([`crate::seccomp::Profile::DocOpen`]) with the opener's spec
//! (no model dir, 1 MiB scratch): what the opener never needs is killed, what it needs works.
//! Used by `cargo test -p airlock-sandbox` and by the supervisor's `selftest` command.

use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::landlock_policy::LandlockMode;
use crate::names::{errno_name, signal_name};
use crate::spawn::{spawn, ExitStatus, Limits, SpawnError, Spec, Stage2, DEFAULT_ID};

/// Address-space bound of probe runs (the `alloc_big` act asks for twice as much).
pub const PROBE_ADDRESS_SPACE: u64 = 1 << 30;

/// Longest a single probe run may take before it is killed and reported as a hang.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the suite itself (not failed checks).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Creating the work directory (model dir) failed.
    #[error("probe: preparing work dir {path}: {source}")]
    Workdir {
        /// Path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Creating a pipe failed.
    #[error("probe: pipe2: {0}")]
    Pipe(std::io::Error),
    /// The sandbox could not be built for an act.
    #[error("probe: spawning {what}: {source}")]
    Spawn {
        /// Which run.
        what: String,
        /// Underlying error.
        source: SpawnError,
    },
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `s1.NAME`, `s2.NAME` or `d2.NAME`.
    pub name: String,
    /// What the sandbox must produce.
    pub expected: String,
    /// What was observed.
    pub observed: String,
    /// Whether they agree.
    pub pass: bool,
}

/// All checks of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Checks in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Number of passed checks.
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.pass).count()
    }
    /// True if every check passed.
    pub fn all_passed(&self) -> bool {
        self.passed() == self.checks.len()
    }
    /// The check called `name`.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "{} {}: expected {}; observed {}",
                if c.pass { "PASS" } else { "FAIL" },
                c.name,
                c.expected,
                c.observed
            )?;
        }
        write!(
            f,
            "probe: {}/{} checks passed",
            self.passed(),
            self.checks.len()
        )
    }
}

/// What an act must produce.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// The call fails with this errno (and the probe exits 0).
    Errno(i32),
    /// The probe is killed by this signal.
    Signal(i32),
    /// The act is allowed at this stage; the detail must contain this text.
    Allowed(&'static str),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Errno(e) => write!(f, "errno {}", errno_name(*e)),
            Expect::Signal(s) => write!(f, "signal {}", signal_name(*s)),
            Expect::Allowed(d) => write!(f, "ok ({d})"),
        }
    }
}

/// One forbidden (or stage-dependent) act with its expected outcome per stage and the layer
/// that answers it.
#[derive(Debug, Clone, Copy)]
pub struct Act {
    /// Act name understood by `airlock-probe act NAME`.
    pub name: &'static str,
    /// Under stage 1 only.
    pub stage1: Expect,
    /// Under stage 1 + the worker's stage 2.
    pub stage2: Expect,
    /// Which layer answers (documentation).
    pub layer: &'static str,
}

use Expect::{Allowed, Errno, Signal};
const SYS: Expect = Signal(libc::SIGSYS);

macro_rules! act {
    ($n:literal, $s1:expr, $s2:expr, $layer:literal) => {
        Act {
            name: $n,
            stage1: $s1,
            stage2: $s2,
            layer: $layer,
        }
    };
}

/// The act table (policy as data: one line per act).
#[rustfmt::skip]
pub const ACTS: &[Act] = &[
    act!(
        "open_outside",
        Errno(libc::ENOENT),
        Errno(libc::ENOENT),
        "pivot_root: /etc does not exist in the new root"
    ),
    act!(
        "open_dotdot",
        Errno(libc::ENOENT),
        Errno(libc::ENOENT),
        "pivot_root: .. of / is /"
    ),
    act!(
        "list_root",
        Errno(libc::EACCES),
        Errno(libc::EACCES),
        "Landlock: no ReadDir on /"
    ),
    act!(
        "list_dev",
        Errno(libc::EACCES),
        Errno(libc::EACCES),
        "Landlock: no ReadDir on /dev (only ReadFile of random, urandom)"
    ),
    act!(
        "create_in_root",
        Errno(libc::EROFS),
        Errno(libc::EROFS),
        "read-only root tmpfs (checked before Landlock's MakeReg)"
    ),
    act!(
        "write_model",
        Errno(libc::EACCES),
        Errno(libc::EACCES),
        "file mode first (root-owned 0644), behind it the ro mount (EROFS) and Landlock (no WriteFile)"
    ),
    act!(
        "create_in_model",
        Errno(libc::EROFS),
        Errno(libc::EROFS),
        "read-only bind mount (checked before DAC and Landlock's MakeReg)"
    ),
    act!(
        "proc_environ",
        Errno(libc::ENOENT),
        Errno(libc::ENOENT),
        "no /proc in the new root"
    ),
    act!(
        "socket_inet",
        Errno(libc::EAFNOSUPPORT),
        SYS,
        "s1: seccomp socket non-AF_UNIX; s2: socket not allowed at all"
    ),
    act!(
        "socket_inet6",
        Errno(libc::EAFNOSUPPORT),
        SYS,
        "s1: seccomp socket non-AF_UNIX; s2: socket not allowed at all"
    ),
    act!(
        "socket_netlink",
        Errno(libc::EAFNOSUPPORT),
        SYS,
        "s1: seccomp socket non-AF_UNIX; s2: socket not allowed at all"
    ),
    act!(
        "socket_packet",
        Errno(libc::EAFNOSUPPORT),
        SYS,
        "s1: seccomp socket non-AF_UNIX; s2: socket not allowed at all"
    ),
    act!(
        "tcp_connect",
        Errno(libc::EAFNOSUPPORT),
        SYS,
        "s1: seccomp socket non-AF_UNIX (std TcpStream); s2: socket not allowed at all"
    ),
    act!(
        "execve",
        Errno(libc::EACCES),
        SYS,
        "s1: noexec scratch + Landlock Execute; s2: execve not allowed"
    ),
    act!(
        "setuid_scratch",
        Errno(libc::EACCES),
        SYS,
        "s1: noexec/nosuid scratch + Landlock + no_new_privs; s2: execve not allowed"
    ),
    act!("ptrace_parent", Errno(libc::EPERM), SYS, "seccomp: ptrace"),
    act!("mount", Errno(libc::EPERM), SYS, "seccomp: mount"),
    act!("unshare_user", Errno(libc::EPERM), SYS, "seccomp: unshare"),
    act!(
        "clone_newns",
        Errno(libc::EPERM),
        Errno(libc::EPERM),
        "seccomp: clone with namespace flags"
    ),
    act!(
        "fork",
        Allowed("created"),
        Errno(libc::EPERM),
        "s1 allows fork; s2: clone only with CLONE_THREAD"
    ),
    act!(
        "clone3",
        Errno(libc::ENOSYS),
        Errno(libc::ENOSYS),
        "seccomp: clone3 → ENOSYS"
    ),
    act!(
        "kill_pid1",
        Allowed("getpid()=1, still alive"),
        SYS,
        "pid namespace: pid 1 is the probe itself (signal ignored); s2: kill not allowed"
    ),
    act!(
        "kill_parent",
        Errno(libc::ESRCH),
        SYS,
        "pid namespace: the spawner's pid does not exist inside; s2: kill not allowed"
    ),
    act!(
        "init_module",
        Errno(libc::EPERM),
        SYS,
        "seccomp: module calls"
    ),
    act!("bpf", Errno(libc::EPERM), SYS, "seccomp: bpf"),
    act!(
        "perf_event_open",
        Errno(libc::EPERM),
        SYS,
        "seccomp: perf_event_open"
    ),
    act!(
        "userfaultfd",
        Errno(libc::EPERM),
        SYS,
        "seccomp: userfaultfd"
    ),
    act!(
        "io_uring_setup",
        Errno(libc::EPERM),
        SYS,
        "seccomp: io_uring"
    ),
    act!("keyctl", Errno(libc::EPERM), SYS, "seccomp: keyctl"),
    act!("kexec_load", Errno(libc::EPERM), SYS, "seccomp: kexec"),
    act!("setns", Errno(libc::EPERM), SYS, "seccomp: setns"),
    act!(
        "chroot",
        Errno(libc::EPERM),
        SYS,
        "seccomp: chroot (capabilities are gone too)"
    ),
    act!(
        "setuid_root",
        Errno(libc::EPERM),
        SYS,
        "capabilities cleared; s2: setresuid not allowed"
    ),
    act!(
        "prctl_set_seccomp",
        Errno(libc::EFAULT),
        SYS,
        "s2: prctl only with measured options (no filter of the worker's making reaches the BPF JIT)"
    ),
    act!(
        "prctl_set_dumpable",
        Allowed("returned 0"),
        SYS,
        "s2: prctl only with measured options (dumpable stays 0)"
    ),
    act!("ioctl_fionbio", Allowed("returned 0"), SYS, "s2: ioctl only as TCGETS"),
    act!(
        "mprotect_exec",
        Allowed("returned 0"),
        Errno(libc::EACCES),
        "s2: no PROT_EXEC"
    ),
    act!(
        "mmap_exec",
        Allowed("mapped"),
        Errno(libc::EACCES),
        "s2: no PROT_EXEC"
    ),
    // Calls only the probe's allowed side may make (seccomp::PROBE_ALLOW_EXTRA) or operations
    // outside the worker's measured futex/madvise lists: allowed by stage 1, killed by the
    // worker's stage 2.
    act!("socket_unix", Allowed("socket created"), SYS, "s2: socket not in the worker's list"),
    act!("sendto", Allowed("returned 1"), SYS, "s2: sendto not in the worker's list"),
    act!("recvfrom", Allowed("returned 1"), SYS, "s2: recvfrom not in the worker's list"),
    act!("rename", Allowed("returned 0"), SYS, "s2: rename not in the worker's list"),
    act!("unlink", Allowed("returned 0"), SYS, "s2: unlink not in the worker's list"),
    act!("rmdir", Allowed("returned 0"), SYS, "s2: rmdir not in the worker's list"),
    act!("uname", Allowed("returned 0"), SYS, "s2: uname not in the worker's list"),
    act!("getuid", Allowed("returned 60000"), SYS, "s2: getuid not in the worker's list"),
    act!("getgid", Allowed("returned 60000"), SYS, "s2: getgid not in the worker's list"),
    act!(
        "futex_lock_pi",
        Allowed("returned 0"),
        SYS,
        "s2: futex only with the measured operations (no PI)"
    ),
    act!(
        "futex_cmp_requeue",
        Allowed("returned 0"),
        SYS,
        "s2: futex only with the measured operations (no requeue)"
    ),
    act!(
        "madvise_dontfork",
        Allowed("returned 0"),
        SYS,
        "s2: madvise only with the measured advices"
    ),
    act!(
        "alloc_big",
        Errno(libc::ENOMEM),
        Errno(libc::ENOMEM),
        "RLIMIT_AS: a 2 GiB reservation fails cleanly"
    ),
    act!(
        "crash_segv",
        Signal(libc::SIGSEGV),
        Signal(libc::SIGSEGV),
        "a crash reaches the spawner as a clean exit status"
    ),
];

/// One act under the document opener's stage 2: its expected outcome and what answers it.
#[derive(Debug, Clone, Copy)]
pub struct DocOpenAct {
    /// Act name understood by `airlock-probe --stage2-profile doc-open act NAME`.
    pub name: &'static str,
    /// Under stage 1 + the opener's stage 2 ([`crate::seccomp::Profile::DocOpen`]).
    pub expect: Expect,
    /// Which layer answers (documentation).
    pub layer: &'static str,
}

macro_rules! doc_act {
    ($n:literal, $e:expr, $layer:literal) => {
        DocOpenAct {
            name: $n,
            expect: $e,
            layer: $layer,
        }
    };
}

/// The acts of the `d2` pass (policy as data: one line per act, its comment says why). The
/// probe prints `check act_reached ok NAME` before each act, and a `SIGSYS` expectation is met
/// only after that line, so the kill is the act's own. `DOC_OPEN_ALLOW` has 16 calls (brk,
/// mmap, munmap, mremap, madvise, read, write, sigaltstack, exit_group, rt_sigprocmask,
/// rt_sigaction, gettid, getpid, tgkill, getrandom, futex); everything else is killed.
#[rustfmt::skip]
pub const DOC_OPEN_ACTS: &[DocOpenAct] = &[
    // --- refused: the opener opens nothing, not even what Landlock would let through ---
    // openat of a path Landlock allows (ReadFile on /dev/urandom): only seccomp refuses it.
    doc_act!("open_urandom", SYS, "openat not in DOC_OPEN_ALLOW (Landlock would allow it)"),
    // openat of a path outside the new root.
    doc_act!("open_outside", SYS, "openat not in DOC_OPEN_ALLOW"),
    // openat with O_CREAT in the opener's scratch.
    doc_act!("create_in_root", SYS, "openat not in DOC_OPEN_ALLOW"),
    // Directory listing without an open (getdents64 on fd 0).
    doc_act!("getdents_stdin", SYS, "getdents64 not in DOC_OPEN_ALLOW"),
    // mkdir in scratch (the worker's list has it).
    doc_act!("mkdir_scratch", SYS, "mkdir not in DOC_OPEN_ALLOW"),
    // unlink of a missing file (ENOENT where allowed).
    doc_act!("unlink_missing", SYS, "unlink not in DOC_OPEN_ALLOW"),
    // Closing an fd: the opener never closes one (its fds live as long as it).
    doc_act!("close_stdin", SYS, "close not in DOC_OPEN_ALLOW"),
    // fd flags (the worker's list has fcntl).
    doc_act!("fcntl_getfd", SYS, "fcntl not in DOC_OPEN_ALLOW"),
    // Readiness polling (the opener blocks in read).
    doc_act!("poll_stdin", SYS, "poll not in DOC_OPEN_ALLOW"),
    // --- refused: no sockets at all ---
    // socket(AF_UNIX): stage 1 lets AF_UNIX through.
    doc_act!("socket_unix", SYS, "socket not in DOC_OPEN_ALLOW"),
    // socket(AF_INET): stage 1 answers EAFNOSUPPORT, the allow list's kill wins.
    doc_act!("socket_inet", SYS, "socket not in DOC_OPEN_ALLOW (kill wins over stage 1's errno)"),
    // socketpair(AF_UNIX) (the worker's list has it for tokio).
    doc_act!("socketpair_unix", SYS, "socketpair not in DOC_OPEN_ALLOW"),
    // --- refused: no threads, no processes, no exec ---
    // clone with CLONE_THREAD (EINVAL where allowed: no thread is created).
    doc_act!("clone_thread", SYS, "clone not in DOC_OPEN_ALLOW (STAGE2_DENY's thread-only rule is moot)"),
    // fork-style clone.
    doc_act!("fork", SYS, "clone not in DOC_OPEN_ALLOW"),
    // clone3 (STAGE2_DENY's ENOSYS loses to the kill).
    doc_act!("clone3", SYS, "clone3 not in DOC_OPEN_ALLOW"),
    // execve of a missing file (ENOENT where allowed).
    doc_act!("execve_missing", SYS, "execve not in DOC_OPEN_ALLOW"),
    // --- refused: no code at run time ---
    // mprotect of an anonymous page to PROT_EXEC.
    doc_act!("mprotect_exec", SYS, "mprotect not in DOC_OPEN_ALLOW (at all)"),
    // mmap(PROT_EXEC): mmap itself is allowed, so STAGE2_DENY's errno answers, not a kill.
    doc_act!("mmap_exec", Errno(libc::EACCES), "STAGE2_DENY (every profile): no PROT_EXEC on mmap"),
    // --- refused: process attributes, devices, other processes ---
    // prctl(PR_SET_NAME): the one option std uses for its threads.
    doc_act!("prctl_set_name", SYS, "prctl not in DOC_OPEN_ALLOW"),
    // prctl(PR_SET_DUMPABLE, 1).
    doc_act!("prctl_set_dumpable", SYS, "prctl not in DOC_OPEN_ALLOW"),
    // ioctl(TCGETS): isatty, the one request the worker may make.
    doc_act!("ioctl_tcgets", SYS, "ioctl not in DOC_OPEN_ALLOW"),
    // ioctl(FIONBIO).
    doc_act!("ioctl_fionbio", SYS, "ioctl not in DOC_OPEN_ALLOW"),
    // kill(spawner's pid, SIGKILL).
    doc_act!("kill_parent", SYS, "kill not in DOC_OPEN_ALLOW"),
    // tgkill(spawner's pid, SIGKILL): tgkill stays for abort(), so the PID namespace answers.
    doc_act!("tgkill_parent", Errno(libc::ESRCH), "tgkill allowed (abort path); pid namespace: the spawner's pid does not exist inside"),
    // ptrace(ATTACH) of the spawner.
    doc_act!("ptrace_parent", SYS, "ptrace not in DOC_OPEN_ALLOW"),
    // madvise(MADV_DONTFORK): madvise is narrowed to the measured advices.
    doc_act!("madvise_dontfork", SYS, "madvise only with MADVISE_ADVICES"),
    // futex(FUTEX_LOCK_PI): futex is narrowed to the measured operations.
    doc_act!("futex_lock_pi", SYS, "futex only with FUTEX_OPS (no PI)"),
    // futex(FUTEX_CMP_REQUEUE).
    doc_act!("futex_cmp_requeue", SYS, "futex only with FUTEX_OPS (no requeue)"),
    // The clock without the vDSO (the opener reads no clock).
    doc_act!("clock_gettime", SYS, "clock_gettime not in DOC_OPEN_ALLOW"),
    // Yielding (the opener has one thread).
    doc_act!("sched_yield", SYS, "sched_yield not in DOC_OPEN_ALLOW"),
    // A new user namespace.
    doc_act!("unshare_user", SYS, "unshare not in DOC_OPEN_ALLOW"),
    // bpf(BPF_PROG_LOAD).
    doc_act!("bpf", SYS, "bpf not in DOC_OPEN_ALLOW"),
    // io_uring (would bypass seccomp for its operations).
    doc_act!("io_uring_setup", SYS, "io_uring_setup not in DOC_OPEN_ALLOW"),
    // --- allowed: what the opener needs ---
    // read on its stdin pipe (drained: 0 at EOF).
    doc_act!("read_stdin", Allowed("returned 0"), "read in DOC_OPEN_ALLOW (the frames)"),
    // write on its stdout pipe.
    doc_act!("write_stdout", Allowed("returned 1"), "write in DOC_OPEN_ALLOW (the frames)"),
    // Anonymous read-write memory: mmap, mremap, munmap.
    doc_act!("mmap_anon_rw", Allowed("read back 0x5a5a, unmapped"), "mmap/mremap/munmap in DOC_OPEN_ALLOW (large buffers)"),
    // madvise(MADV_DONTNEED): malloc trimming.
    doc_act!("madvise_dontneed", Allowed("returned 0"), "madvise with MADV_DONTNEED (MADVISE_ADVICES)"),
    // brk (heap growth).
    doc_act!("brk_query", Allowed("returned "), "brk in DOC_OPEN_ALLOW (glibc malloc)"),
    // getrandom (std's HashMap seeds).
    doc_act!("getrandom", Allowed("returned 32"), "getrandom in DOC_OPEN_ALLOW"),
    // futex(FUTEX_WAKE_PRIVATE) (a contended std lock).
    doc_act!("futex_wake", Allowed("returned 0"), "futex with FUTEX_WAKE_PRIVATE (FUTEX_OPS)"),
    // getpid + gettid + tgkill(self, 0) (std's panic path, raise(SIGABRT)).
    doc_act!("tgkill_self", Allowed("returned 0"), "getpid, gettid, tgkill in DOC_OPEN_ALLOW (abort path)"),
];

/// Content of the probe's model file (deterministic).
pub fn model_bytes() -> Vec<u8> {
    (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ProbeError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ProbeError::Pipe(std::io::Error::last_os_error()));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: two new fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads from `fd` until EOF, `stop` appears as a full line, or the deadline passes.
fn read_until(fd: &OwnedFd, stop: Option<&str>, deadline: Instant) -> (String, bool) {
    let mut out = Vec::new();
    loop {
        if let Some(s) = stop {
            if String::from_utf8_lossy(&out).lines().any(|l| l == s) {
                return (String::from_utf8_lossy(&out).into_owned(), true);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a valid buffer.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            let text = String::from_utf8_lossy(&out).into_owned();
            let seen = stop.is_none_or(|s| text.lines().any(|l| l == s));
            return (text, seen);
        }
        out.extend_from_slice(&buf[..r as usize]);
    }
}

/// Which stage 2 a probe run installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Stage 1 only (`s1`).
    Stage1,
    /// The worker's stage 2 (`s2`).
    Worker,
    /// The document opener's stage 2 (`d2`).
    DocOpen,
}

impl Pass {
    fn of(stage2: bool) -> Self {
        if stage2 {
            Pass::Worker
        } else {
            Pass::Stage1
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Pass::Stage1 => "s1",
            Pass::Worker => "s2",
            Pass::DocOpen => "d2",
        }
    }
}

struct Ctx<'a> {
    probe: &'a Path,
    landlock: LandlockMode,
    model: PathBuf,
}

impl Ctx<'_> {
    fn spec(
        &self,
        pass: Pass,
        mode: &[&str],
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
    ) -> Result<Spec, ProbeError> {
        let mut spec = Spec::new(self.probe);
        match pass {
            Pass::Stage1 => {}
            Pass::Worker => spec.args.push("--stage2".into()),
            Pass::DocOpen => {
                spec.args.push("--stage2-profile".into());
                spec.args.push("doc-open".into());
            }
        }
        let stage2 = pass != Pass::Stage1;
        spec.args.push("--parent-pid".into());
        spec.args.push(std::process::id().to_string().into());
        spec.args.extend(mode.iter().map(Into::into));
        if pass == Pass::DocOpen {
            // The opener's spec (supervisor/src/document/child.rs): no model, 1 MiB scratch.
            spec.scratch_size = 1 << 20;
        } else {
            spec.model_dir = Some(self.model.clone());
            spec.scratch_size = 16 << 20;
        }
        spec.limits = Limits {
            address_space: Some(PROBE_ADDRESS_SPACE),
            ..Limits::default()
        };
        spec.landlock = self.landlock;
        // The s2 and d2 passes are refused unless the probe has installed its stage 2, like
        // the worker and the opener (every profile installs the same number of programs).
        spec.stage2 = if stage2 {
            Stage2::Required {
                filters: crate::seccomp::stage2_filter_count(),
                within: PROBE_TIMEOUT,
            }
        } else {
            Stage2::NotRequired
        };
        let err = stdout.try_clone().map_err(ProbeError::Pipe)?;
        spec.fds.push((stdout, 1));
        spec.fds.push((err, 2));
        if let Some(i) = stdin {
            spec.fds.push((i, 0));
        }
        Ok(spec)
    }

    fn run_act(&self, act: &Act, stage2: bool) -> Result<Check, ProbeError> {
        let expect = if stage2 { act.stage2 } else { act.stage1 };
        self.run_named(Pass::of(stage2), act.name, expect, act.layer)
    }

    fn run_named(
        &self,
        pass: Pass,
        name: &str,
        expect: Expect,
        layer: &str,
    ) -> Result<Check, ProbeError> {
        let prefix = pass.prefix();
        let (r, w) = pipe()?;
        let (stdin_r, stdin_w) = pipe()?;
        let spec = self.spec(pass, &["act", name], Some(stdin_r), w)?;
        let mut child = spawn(spec).map_err(|source| ProbeError::Spawn {
            what: format!("{prefix}.{name}"),
            source,
        })?;
        // Stage 2 confirmed by spawn (s2, d2): let the probe act.
        drop(stdin_w);
        let (text, _) = read_until(&r, None, Instant::now() + PROBE_TIMEOUT);
        let status = match child.wait_timeout(PROBE_TIMEOUT) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                let _ = child.kill();
                Err("hang: killed after the timeout".to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("act {name} ")).map(str::to_string));
        // Under the opener's profile the probe says when it reaches the act: a kill before
        // that line would be the probe's own path, not the act.
        let reached = pass != Pass::DocOpen
            || text
                .lines()
                .any(|l| l == format!("check act_reached ok {name}"));
        let observed = match (&status, &line) {
            (Err(e), _) => e.clone(),
            (Ok(ExitStatus::Signaled(s)), _) => format!("signal {}", signal_name(*s)),
            (Ok(ExitStatus::Exited(0)), Some(l)) => l.clone(),
            (Ok(st), _) => format!("{st}; output {:?}", text.trim()),
        };
        let pass = match expect {
            Expect::Errno(e) => {
                matches!(status, Ok(ExitStatus::Exited(0)))
                    && observed == format!("errno {}", errno_name(e))
            }
            Expect::Signal(s) => reached && matches!(status, Ok(ExitStatus::Signaled(x)) if x == s),
            Expect::Allowed(d) => {
                matches!(status, Ok(ExitStatus::Exited(0)))
                    && observed.starts_with("ok ")
                    && observed.contains(d)
            }
        };
        let observed = if reached {
            observed
        } else {
            format!("{observed} (before reaching the act)")
        };
        Ok(Check {
            name: format!("{prefix}.{name}"),
            expected: format!("{expect} [{layer}]"),
            observed,
            pass,
        })
    }

    fn run_allow(&self, stage2: bool, out: &mut Vec<Check>) -> Result<(), ProbeError> {
        let prefix = Pass::of(stage2).prefix();
        let (r, w) = pipe()?;
        let (stdin_r, stdin_w) = pipe()?;
        let spec = self.spec(Pass::of(stage2), &["allow"], Some(stdin_r), w)?;
        let mut child = spawn(spec).map_err(|source| ProbeError::Spawn {
            what: format!("{prefix}.allow"),
            source,
        })?;
        let (text, ready) = read_until(&r, Some("ready"), Instant::now() + PROBE_TIMEOUT);
        let mut add = |name: &str, expected: String, observed: String, pass: bool| {
            out.push(Check {
                name: format!("{prefix}.{name}"),
                expected,
                observed,
                pass,
            });
        };
        let line = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("check {name} "))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "no report".to_string())
        };
        let model = model_bytes();
        let model_expect = format!(
            "ok entries=config.json,weights.bin len={} fnv={:016x}",
            model.len(),
            fnv(&model)
        );
        let id_expect = format!("ok pid=1 uid={DEFAULT_ID} gid={DEFAULT_ID} no_new_privs=1 seccomp=2 dumpable=1 caps=0x0");
        for (name, want) in [
            ("inherited_fds", "ok 0,1,2"),
            ("environment", "ok HOME=/scratch TMPDIR=/scratch"),
            ("hostname", "ok airlock-sandbox"),
        ] {
            let got = line(name);
            add(name, want.into(), got.clone(), got == want);
        }
        let id = line("identity");
        add("identity", id_expect.clone(), id.clone(), id == id_expect);
        if stage2 {
            let s = line("stage2_installed");
            add(
                "stage2_installed",
                "ok".into(),
                s.clone(),
                s.starts_with("ok"),
            );
            let d = line("dumpable_after_stage2");
            add(
                "dumpable_after_stage2",
                "ok dumpable=0".into(),
                d.clone(),
                d == "ok dumpable=0",
            );
        }
        let m = line("model_read");
        add(
            "model_read",
            model_expect.clone(),
            m.clone(),
            m == model_expect,
        );
        for name in [
            "scratch_write",
            "getrandom",
            "dev_urandom",
            "tokio_threads",
            "rayon_threads",
        ] {
            let s = line(name);
            add(name, "ok".into(), s.clone(), s.starts_with("ok "));
        }
        // Seen from outside, while the probe waits: the kernel's own account of its state.
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.pid())).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{k}:"))
                        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                })
                .unwrap_or_else(|| "missing".into())
        };
        let want: &[(&str, String)] = &[
            ("Seccomp", "2".into()),
            ("NoNewPrivs", "1".into()),
            ("CapEff", "0000000000000000".into()),
            ("CapPrm", "0000000000000000".into()),
            ("CapInh", "0000000000000000".into()),
            ("CapBnd", "0000000000000000".into()),
            ("CapAmb", "0000000000000000".into()),
            (
                "Uid",
                format!("{DEFAULT_ID} {DEFAULT_ID} {DEFAULT_ID} {DEFAULT_ID}"),
            ),
            (
                "Gid",
                format!("{DEFAULT_ID} {DEFAULT_ID} {DEFAULT_ID} {DEFAULT_ID}"),
            ),
            ("Groups", "".into()),
            ("NSpid", format!("{} 1", child.pid())),
        ];
        for (k, v) in want {
            let got = field(k);
            add(
                &format!("status_{k}"),
                format!("{k}: {v}"),
                format!("{k}: {got}"),
                &got == v,
            );
        }
        let filters = field("Seccomp_filters");
        let want_filters = crate::seccomp::stage1_programs()
            .map(|p| p.len())
            .unwrap_or(0)
            + if stage2 {
                crate::seccomp::stage2_programs()
                    .map(|p| p.len())
                    .unwrap_or(0)
            } else {
                0
            };
        add(
            "status_Seccomp_filters",
            format!("Seccomp_filters: {want_filters}"),
            format!("Seccomp_filters: {filters}"),
            filters == want_filters.to_string(),
        );
        // Namespaces differ from ours.
        let mut same = Vec::new();
        for ns in ["pid", "mnt", "net", "ipc", "uts"] {
            let theirs = std::fs::read_link(format!("/proc/{}/ns/{ns}", child.pid())).ok();
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
            if theirs.is_none() || theirs == ours {
                same.push(ns);
            }
        }
        add(
            "namespaces",
            "pid mnt net ipc uts all new".into(),
            if same.is_empty() {
                "all new".into()
            } else {
                format!("shared or unreadable: {}", same.join(" "))
            },
            same.is_empty(),
        );
        // Open sockets: only AF_UNIX (inode listed in its net namespace's unix table).
        let unix =
            std::fs::read_to_string(format!("/proc/{}/net/unix", child.pid())).unwrap_or_default();
        let unix_inodes: Vec<&str> = unix
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(6))
            .collect();
        let mut sockets = 0;
        let mut foreign = Vec::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", child.pid())) {
            for e in dir.flatten() {
                let target = std::fs::read_link(e.path())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Some(ino) = target
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                {
                    sockets += 1;
                    if !unix_inodes.contains(&ino) {
                        foreign.push(ino.to_string());
                    }
                }
            }
        }
        add(
            "sockets_unix_only",
            "every open socket is AF_UNIX".into(),
            format!("{sockets} sockets open, non-unix: {foreign:?}"),
            foreign.is_empty(),
        );
        // Let it finish.
        drop(stdin_w);
        let st = match child.wait_timeout(PROBE_TIMEOUT) {
            Ok(Some(s)) => s.to_string(),
            Ok(None) => {
                let _ = child.kill();
                "hang: killed after the timeout".into()
            }
            Err(e) => e.to_string(),
        };
        add(
            "allow_exit",
            "ready, then exit 0".into(),
            format!("ready={ready}, {st}"),
            ready && st == "exit 0",
        );
        Ok(())
    }
}

/// Runs the whole suite with a work dir under the system temp dir (`$TMPDIR`, else `/tmp`, else
/// `/run` when the image has no `/tmp`).
pub fn run(probe: &Path, landlock: LandlockMode) -> Result<Report, ProbeError> {
    let tmp = std::env::temp_dir();
    let dir = if tmp.is_dir() {
        tmp
    } else {
        PathBuf::from("/run")
    };
    run_in(probe, landlock, &dir)
}

/// Runs the whole suite with its model dir created under `workdir` (removed afterwards).
pub fn run_in(probe: &Path, landlock: LandlockMode, workdir: &Path) -> Result<Report, ProbeError> {
    let base = workdir.join(
        format!(
            "airlock-probe-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    let model = base.join("model");
    let werr = |source| ProbeError::Workdir {
        path: model.clone(),
        source,
    };
    std::fs::create_dir_all(&model).map_err(werr)?;
    std::fs::write(model.join("weights.bin"), model_bytes()).map_err(werr)?;
    std::fs::File::create(model.join("config.json"))
        .and_then(|mut f| f.write_all(b"{\"probe\":true}\n"))
        .map_err(werr)?;
    let ctx = Ctx {
        probe,
        landlock,
        model,
    };
    let result = (|| {
        let mut report = Report::default();
        for stage2 in [false, true] {
            ctx.run_allow(stage2, &mut report.checks)?;
            for act in ACTS {
                report.checks.push(ctx.run_act(act, stage2)?);
            }
        }
        Ok(report)
    })();
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// Runs a single act (for tests that assert one layer at a time).
pub fn run_one(
    probe: &Path,
    landlock: LandlockMode,
    act: &str,
    stage2: bool,
    workdir: &Path,
) -> Result<Check, ProbeError> {
    let base = workdir.join(format!(
        "airlock-probe1-{}-{act}-{stage2}",
        std::process::id()
    ));
    let model = base.join("model");
    let werr = |source| ProbeError::Workdir {
        path: model.clone(),
        source,
    };
    std::fs::create_dir_all(&model).map_err(werr)?;
    std::fs::write(model.join("weights.bin"), model_bytes()).map_err(werr)?;
    let ctx = Ctx {
        probe,
        landlock,
        model,
    };
    let a = ACTS.iter().find(|a| a.name == act).copied().unwrap_or(Act {
        name: "unknown",
        stage1: Errno(0),
        stage2: Errno(0),
        layer: "",
    });
    let r = ctx.run_act(&a, stage2);
    let _ = std::fs::remove_dir_all(&base);
    r
}

/// Runs the `d2` pass: every act of [`DOC_OPEN_ACTS`] under the document opener's stage 2,
/// one probe process each, spawned with the opener's spec (no model dir, 1 MiB scratch).
pub fn run_doc_open(probe: &Path, landlock: LandlockMode) -> Result<Report, ProbeError> {
    let ctx = Ctx {
        probe,
        landlock,
        // Not mounted in this pass.
        model: PathBuf::new(),
    };
    let mut report = Report::default();
    for act in DOC_OPEN_ACTS {
        report
            .checks
            .push(ctx.run_named(Pass::DocOpen, act.name, act.expect, act.layer)?);
    }
    Ok(report)
}
