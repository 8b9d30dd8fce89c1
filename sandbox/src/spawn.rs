//! The spawn path: validate a [`Spec`], prepare everything, raw `clone` into new namespaces,
//! let the child ([`crate::child`]) build the sandbox and `execveat` the program.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::child::{self, ChildStep, Plan};
use crate::landlock_policy::{self, LandlockError, LandlockMode};
use crate::rootmount::{self, RootMountError};
use crate::seccomp::{self, SeccompError};

/// Namespaces of the child: it is PID 1 of a new PID namespace, with its own mount table,
/// network (only a down `lo`), IPC and UTS. (No cgroup namespace: the appliance kernel is built
/// without cgroups and there is no /proc inside, so there is no cgroup path to hide.)
pub const NAMESPACES: libc::c_int = libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// The dedicated unprivileged id the program runs as by default.
pub const DEFAULT_ID: u32 = 60000;

/// Highest fd number that can be handed to the program.
pub const MAX_TARGET_FD: RawFd = 63;

/// Resource limits of the sandboxed process (RLIMIT_CORE is always 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_AS in bytes (virtual address space; bounds memory). `None`: unlimited.
    pub address_space: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// RLIMIT_NPROC (counts threads of the target uid, system-wide).
    pub processes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            address_space: Some(8 << 30),
            open_files: 256,
            processes: 256,
        }
    }
}

/// How long a program may take from exec to having installed its stage 2 by default: the
/// worker does it first thing in `main()` (milliseconds on a PC; generous for QEMU under TCG).
pub const STAGE2_DEADLINE: Duration = Duration::from_secs(30);

/// How often the spawner looks at `/proc/<pid>/status` while it waits for stage 2.
const STAGE2_POLL: Duration = Duration::from_millis(2);

/// What the spawner demands of the program's own seccomp stage 2 before [`spawn`] returns, i.e.
/// before the caller can hand the process any input (DESIGN.md: the spawner refuses a program
/// that does not run under both seccomp stages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage2 {
    /// The program must have installed exactly `filters` seccomp programs of its own on top of
    /// stage 1 within `within`, as the kernel counts them (`Seccomp_filters:` in
    /// `/proc/<pid>/status`); otherwise it is killed and the spawn refused.
    Required {
        /// Number of stage-2 programs (see [`seccomp::stage2_filter_count`]).
        filters: usize,
        /// Deadline from exec.
        within: Duration,
    },
    /// Stage 1 is enough: only for the probe's stage-1 pass and tests of the spawn path itself.
    NotRequired,
}

impl Stage2 {
    /// The worker's stage 2 ([`seccomp::install_worker_allowlist`]) within [`STAGE2_DEADLINE`].
    pub fn worker() -> Self {
        Stage2::Required {
            filters: seccomp::stage2_filter_count(),
            within: STAGE2_DEADLINE,
        }
    }
}

/// What to run and how to confine it.
#[derive(Debug)]
pub struct Spec {
    /// Program on the host. Opened before any namespace is entered and executed by fd, so it
    /// need not exist inside the new root. Must be a static executable (there is no loader
    /// inside the sandbox).
    pub program: PathBuf,
    /// argv[0].
    pub argv0: OsString,
    /// argv[1..].
    pub args: Vec<OsString>,
    /// Host directory bind-mounted read-only, nosuid, nodev, noexec at `/model`.
    pub model_dir: Option<PathBuf>,
    /// Size bound of the scratch tmpfs at `/scratch`, in bytes.
    pub scratch_size: u64,
    /// Uid to drop to (never 0).
    pub uid: u32,
    /// Gid to drop to (never 0).
    pub gid: u32,
    /// Resource limits.
    pub limits: Limits,
    /// fds handed to the program at the given numbers (0..=63); 0/1/2 not given are /dev/null,
    /// every other fd is closed.
    pub fds: Vec<(OwnedFd, RawFd)>,
    /// Extra environment on top of the clean one (`HOME=/scratch`, `TMPDIR=/scratch`).
    pub env: Vec<(OsString, OsString)>,
    /// Landlock enforcement.
    pub landlock: LandlockMode,
    /// The stage 2 the program must install before `spawn` returns (default: the worker's).
    pub stage2: Stage2,
}

impl Spec {
    /// A spec with the defaults: no model, 256 MiB scratch, uid/gid 60000, default limits.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        let program = program.into();
        let argv0 = program
            .file_name()
            .map(|s| s.to_os_string())
            .unwrap_or_else(|| OsString::from("program"));
        Spec {
            program,
            argv0,
            args: Vec::new(),
            model_dir: None,
            scratch_size: 256 << 20,
            uid: DEFAULT_ID,
            gid: DEFAULT_ID,
            limits: Limits::default(),
            fds: Vec::new(),
            env: Vec::new(),
            landlock: LandlockMode::Hard,
            stage2: Stage2::worker(),
        }
    }
}

/// Errors of the spawn path; each variant names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program could not be opened.
    #[error("spawn: opening program {path}: {source}")]
    OpenProgram {
        /// Program path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The program is not a regular executable file.
    #[error("spawn: program {0} is not an executable regular file")]
    ProgramNotExecutable(PathBuf),
    /// The model dir is missing or not a directory.
    #[error("spawn: model dir {path}: {reason}")]
    ModelDir {
        /// Model path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An argument contains a NUL byte.
    #[error("spawn: argument {0} contains a NUL byte")]
    ArgNul(usize),
    /// An environment entry is invalid.
    #[error(
        "spawn: environment variable {0:?} is invalid (empty, '=' or NUL in name, NUL in value)"
    )]
    Env(OsString),
    /// An fd target number is out of range or given twice.
    #[error("spawn: fd target {0} is out of 0..=63 or given twice")]
    FdTarget(RawFd),
    /// uid or gid 0 was asked for.
    #[error("spawn: refusing to run the sandboxed program as uid/gid 0")]
    RootId,
    /// The scratch size is zero.
    #[error("spawn: scratch size must be at least 4096 bytes")]
    ScratchSize,
    /// Opening /dev/null failed.
    #[error("spawn: opening /dev/null: {0}")]
    DevNull(std::io::Error),
    /// Creating a pipe failed.
    #[error("spawn: pipe2: {0}")]
    Pipe(std::io::Error),
    /// Landlock preparation failed.
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    /// seccomp compilation failed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// clone(2) failed.
    #[error("spawn: clone: {0}")]
    Clone(std::io::Error),
    /// A step in the child failed before exec.
    #[error("spawn: child step {step:?} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Child {
        /// The failing step.
        step: ChildStep,
        /// errno of the failing syscall.
        errno: i32,
    },
    /// Reading the child's status pipe failed.
    #[error("spawn: reading child status: {0}")]
    StatusPipe(std::io::Error),
    /// The spawner's root mount could not be examined.
    #[error(transparent)]
    RootMount(#[from] RootMountError),
    /// The spawner's root is the absolute root of its mount namespace (the initramfs rootfs).
    #[error(
        "spawn: refused: the spawner's root is the mount namespace's absolute root (initramfs \
         rootfs); pivot_root cannot detach the host tree from it (PID 1 must leave the initramfs first)"
    )]
    AbsoluteRoot,
    /// The program did not install its stage 2 in time.
    #[error(
        "spawn: refused: the program did not install its stage-2 seccomp filters within {}ms \
         (Seccomp_filters {seen}, want {want})", within.as_millis()
    )]
    Stage2Missing {
        /// Filters seen last.
        seen: usize,
        /// Filters required (stage 1 + stage 2).
        want: usize,
        /// The deadline.
        within: Duration,
    },
    /// The program installed more filters than stage 1 + stage 2.
    #[error("spawn: refused: the program installed more seccomp filters than expected (Seccomp_filters {seen}, want {want})")]
    Stage2Unexpected {
        /// Filters seen.
        seen: usize,
        /// Filters required.
        want: usize,
    },
    /// The program ended before it installed its stage 2.
    #[error("spawn: refused: the program ended ({status}) before installing its stage-2 seccomp filters (Seccomp_filters {seen}, want {want})")]
    Stage2Exited {
        /// How it ended.
        status: ExitStatus,
        /// Filters seen last.
        seen: usize,
        /// Filters required.
        want: usize,
    },
    /// `/proc/<pid>/status` could not be read to confirm stage 2.
    #[error("spawn: refused: cannot confirm stage 2 from /proc/{pid}/status: {reason}")]
    Stage2Unknown {
        /// Host pid.
        pid: i32,
        /// Why.
        reason: String,
    },
}

/// Errors of waiting for or signalling a sandboxed process.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// waitid(P_PIDFD) failed.
    #[error("wait: waitid: {0}")]
    Waitid(std::io::Error),
    /// poll on the pidfd failed.
    #[error("wait: poll: {0}")]
    Poll(std::io::Error),
    /// pidfd_send_signal failed.
    #[error("wait: pidfd_send_signal: {0}")]
    Kill(std::io::Error),
}

/// How a sandboxed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal (SIGSYS for a seccomp kill).
    Signaled(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit {c}"),
            ExitStatus::Signaled(s) => write!(f, "signal {}", crate::names::signal_name(*s)),
        }
    }
}

/// A running sandboxed process. Dropping it kills and reaps the process.
#[derive(Debug)]
pub struct Sandboxed {
    pid: i32,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

const P_PIDFD: libc::idtype_t = 3;

impl Sandboxed {
    /// Host pid of the process (it is PID 1 inside its namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd, e.g. to poll for exit in an event loop.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pidfd.as_fd()
    }

    /// Sends SIGKILL (via the pidfd, so never to a recycled pid). Killing PID 1 of the
    /// namespace kills everything in it.
    pub fn kill(&self) -> Result<(), WaitError> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal with an fd we own, no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(WaitError::Kill(e));
            }
        }
        Ok(())
    }

    fn waitid(&mut self, flags: libc::c_int) -> Result<Option<ExitStatus>, WaitError> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        loop {
            // SAFETY: siginfo_t is plain data; zeroed is a valid initial value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid with a valid pidfd and a valid siginfo pointer.
            let rc = unsafe {
                libc::waitid(
                    P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED | flags,
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(WaitError::Waitid(e));
            }
            // SAFETY: reading fields of a siginfo filled by waitid.
            let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
            if pid == 0 {
                return Ok(None); // WNOHANG and still running
            }
            let s = match code {
                libc::CLD_EXITED => ExitStatus::Exited(status),
                _ => ExitStatus::Signaled(status),
            };
            self.status = Some(s);
            return Ok(Some(s));
        }
    }

    /// Waits for the process to end and returns how it ended.
    pub fn wait(&mut self) -> Result<ExitStatus, WaitError> {
        loop {
            if let Some(s) = self.waitid(0)? {
                return Ok(s);
            }
        }
    }

    /// Returns the status if the process has ended, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, WaitError> {
        self.waitid(libc::WNOHANG)
    }

    /// Whether the process ended within `timeout`, without reaping it.
    pub fn ended_within(&self, timeout: Duration) -> Result<bool, WaitError> {
        if self.status.is_some() {
            return Ok(true);
        }
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(WaitError::Poll(e));
            }
            return Ok(n > 0);
        }
    }

    /// Waits at most `timeout`; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, WaitError> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        if self.ended_within(timeout)? {
            self.wait().map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Drop for Sandboxed {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}

fn cstring(bytes: &[u8]) -> Option<CString> {
    CString::new(bytes).ok()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SpawnError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two new fds we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_program(path: &Path) -> Result<OwnedFd, SpawnError> {
    let meta = std::fs::metadata(path).map_err(|source| SpawnError::OpenProgram {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(SpawnError::ProgramNotExecutable(path.to_path_buf()));
    }
    let c = cstring(path.as_os_str().as_bytes())
        .ok_or_else(|| SpawnError::ProgramNotExecutable(path.to_path_buf()))?;
    // SAFETY: valid path; returns a new fd.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SpawnError::OpenProgram {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn model_path(dir: &Path) -> Result<CString, SpawnError> {
    let bad = |reason: String| SpawnError::ModelDir {
        path: dir.to_path_buf(),
        reason,
    };
    let canon = dir.canonicalize().map_err(|e| bad(e.to_string()))?;
    if !canon.is_dir() {
        return Err(bad("not a directory".into()));
    }
    cstring(canon.as_os_str().as_bytes()).ok_or_else(|| bad("path contains a NUL byte".into()))
}

/// Spawns `spec.program` inside every sandbox layer and returns once it has been executed
/// (or with the step that failed).
///
/// Call it from a thread that outlives the child: the parent-death signal fires when the
/// *thread* that cloned the child exits. The caller reaps the child through [`Sandboxed`]
/// (a PID-1 reaper must not `waitpid(-1)` it away first).
pub fn spawn(spec: Spec) -> Result<Sandboxed, SpawnError> {
    if spec.uid == 0 || spec.gid == 0 {
        return Err(SpawnError::RootId);
    }
    if spec.scratch_size < 4096 {
        return Err(SpawnError::ScratchSize);
    }
    let mut seen = Vec::new();
    for (_, t) in &spec.fds {
        if !(0..=MAX_TARGET_FD).contains(t) || seen.contains(t) {
            return Err(SpawnError::FdTarget(*t));
        }
        seen.push(*t);
    }
    let program = open_program(&spec.program)?;
    let model = spec.model_dir.as_deref().map(model_path).transpose()?;
    // pivot_root cannot leave a root without a parent: refuse before cloning (fail closed).
    refuse_absolute_root(rootmount::root()?)?;

    let mut argv_store = Vec::with_capacity(spec.args.len() + 1);
    argv_store.push(cstring(spec.argv0.as_bytes()).ok_or(SpawnError::ArgNul(0))?);
    for (i, a) in spec.args.iter().enumerate() {
        argv_store.push(cstring(a.as_bytes()).ok_or(SpawnError::ArgNul(i + 1))?);
    }
    let mut env: Vec<(OsString, OsString)> = vec![
        ("HOME".into(), "/scratch".into()),
        ("TMPDIR".into(), "/scratch".into()),
    ];
    for (k, v) in &spec.env {
        let kb = k.as_bytes();
        if kb.is_empty() || kb.contains(&b'=') || kb.contains(&0) || v.as_bytes().contains(&0) {
            return Err(SpawnError::Env(k.clone()));
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let mut envp_store = Vec::with_capacity(env.len());
    for (k, v) in &env {
        let mut b = k.as_bytes().to_vec();
        b.push(b'=');
        b.extend_from_slice(v.as_bytes());
        envp_store.push(cstring(&b).ok_or_else(|| SpawnError::Env(k.clone()))?);
    }
    let mut argv: Vec<*const libc::c_char> = argv_store.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_store.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    // SAFETY: constant path; returns a new fd.
    let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if devnull < 0 {
        return Err(SpawnError::DevNull(std::io::Error::last_os_error()));
    }
    // SAFETY: new fd we own.
    let devnull = unsafe { OwnedFd::from_raw_fd(devnull) };

    let mut rlimits = vec![
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_NOFILE, spec.limits.open_files),
        (libc::RLIMIT_NPROC, spec.limits.processes),
    ];
    if let Some(a) = spec.limits.address_space {
        rlimits.push((libc::RLIMIT_AS, a));
    }

    let landlock = landlock_policy::prepare(spec.landlock)?;
    let seccomp = seccomp::stage1_programs()?;
    let stage1_filters = seccomp.len();
    let (err_r, err_w) = pipe()?;
    let (alive_r, alive_w) = pipe()?;

    let mut plan = Plan {
        program_fd: program.as_raw_fd(),
        model_path: model,
        scratch_opts: cstring(
            format!(
                "size={},mode=0700,uid={},gid={},nr_inodes=4096",
                spec.scratch_size, spec.uid, spec.gid
            )
            .as_bytes(),
        )
        .ok_or(SpawnError::ScratchSize)?,
        hostname: CString::from(c"airlock-sandbox"),
        argv,
        envp,
        _argv_store: argv_store,
        _envp_store: envp_store,
        fds: spec
            .fds
            .iter()
            .map(|(fd, t)| (fd.as_raw_fd(), *t))
            .collect(),
        devnull: devnull.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        alive_r: alive_r.as_raw_fd(),
        alive_w: alive_w.as_raw_fd(),
        uid: spec.uid,
        gid: spec.gid,
        rlimits,
        landlock,
        seccomp,
    };

    let mut pidfd: libc::c_int = -1;
    // SAFETY: a fork-like clone (no new stack: the child continues on a copy of ours). The
    // child only runs `child::run`, which uses raw syscalls on data prepared above and never
    // returns. CLONE_PIDFD stores the pidfd in `pidfd` (parent_tid argument on x86_64).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (NAMESPACES | libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            &mut pidfd as *mut libc::c_int,
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    if rc < 0 {
        return Err(SpawnError::Clone(std::io::Error::last_os_error()));
    }
    if rc == 0 {
        child::run(&mut plan);
    }
    // Parent.
    // SAFETY: CLONE_PIDFD gave us a new fd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut sandboxed = Sandboxed {
        pid: rc as i32,
        pidfd,
        status: None,
    };
    drop(err_w);
    drop(plan);
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of a valid buffer.
        let n = unsafe {
            libc::read(
                err_r.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(SpawnError::StatusPipe(e));
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    drop(alive_w);
    if got == 0 {
        // EOF: the close-on-exec pipe closed at a successful exec.
        if let Stage2::Required { filters, within } = spec.stage2 {
            confirm_stage2(&mut sandboxed, stage1_filters + filters, within)?;
        }
        return Ok(sandboxed);
    }
    let _ = sandboxed.wait();
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Err(SpawnError::Child {
        step: ChildStep::from_u32(step).unwrap_or(ChildStep::Exec),
        errno,
    })
}

/// Refuses to spawn from the absolute root of a mount namespace (the initramfs rootfs):
/// `pivot_root` cannot move it, so the host's tree could not be dropped from the sandbox.
fn refuse_absolute_root(root: rootmount::MountFacts) -> Result<(), SpawnError> {
    if root.is_absolute_root() {
        return Err(SpawnError::AbsoluteRoot);
    }
    Ok(())
}

/// The kernel's count of seccomp filters of `pid` (`Seccomp_filters:` in `/proc/<pid>/status`).
pub fn seccomp_filters(pid: i32) -> Result<usize, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    parse_seccomp_filters(&text)
}

/// Parses the `Seccomp_filters:` line of a `/proc/<pid>/status` text.
pub fn parse_seccomp_filters(status: &str) -> Result<usize, String> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .ok_or_else(|| "no Seccomp_filters line (kernel before 5.9?)".to_string())?;
    line.trim()
        .parse()
        .map_err(|_| format!("Seccomp_filters value {:?} is not a number", line.trim()))
}

/// Waits until the program has installed exactly `want` filters (stage 1 + its stage 2), and
/// refuses it (killed and reaped by the caller's drop) when it ends first, installs more, or
/// the deadline passes. The count comes from the kernel, not from the program.
fn confirm_stage2(child: &mut Sandboxed, want: usize, within: Duration) -> Result<(), SpawnError> {
    let deadline = std::time::Instant::now() + within;
    let pid = child.pid;
    let mut seen = 0;
    loop {
        match seccomp_filters(pid) {
            Ok(n) => seen = n,
            Err(reason) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(SpawnError::Stage2Exited { status, seen, want });
                }
                return Err(SpawnError::Stage2Unknown { pid, reason });
            }
        }
        if seen == want {
            return Ok(());
        }
        if seen > want {
            return Err(SpawnError::Stage2Unexpected { seen, want });
        }
        if std::time::Instant::now() >= deadline {
            return Err(SpawnError::Stage2Missing { seen, want, within });
        }
        let ended = child
            .ended_within(STAGE2_POLL)
            .map_err(|e| SpawnError::Stage2Unknown {
                pid,
                reason: e.to_string(),
            })?;
        if ended {
            // Not reaped yet: a zombie keeps its filter count until it is, so
            // a program that installed stage 2 and ended at once (a model it
            // refused) is told apart from one that never installed it.
            if seccomp_filters(pid) == Ok(want) {
                return Ok(());
            }
            let status =
                child
                    .wait_timeout(STAGE2_POLL)
                    .map_err(|e| SpawnError::Stage2Unknown {
                        pid,
                        reason: e.to_string(),
                    })?;
            if let Some(status) = status {
                return Err(SpawnError::Stage2Exited { status, seen, want });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_seccomp_filters, refuse_absolute_root};
    use crate::rootmount::MountFacts;

    #[test]
    fn an_absolute_root_is_refused_with_reason() {
        let facts = |mnt_id, parent_id| MountFacts {
            mnt_id,
            parent_id,
            sb_magic: 0,
        };
        assert!(refuse_absolute_root(facts(27, 1)).is_ok());
        let e = refuse_absolute_root(facts(1, 1))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "spawn: refused: the spawner's root is the mount namespace's absolute root \
                 (initramfs rootfs); pivot_root cannot detach the host tree from it (PID 1 must \
                 leave the initramfs first)"
            )
        );
    }

    #[test]
    fn seccomp_filters_line_is_parsed_or_refused_with_reason() {
        for (text, want) in [
            ("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t9\n", Ok(9)),
            ("Seccomp_filters:\t0\n", Ok(0)),
            (
                "Seccomp:\t2\n",
                Err("no Seccomp_filters line (kernel before 5.9?)".to_string()),
            ),
            (
                "Seccomp_filters:\tx\n",
                Err("Seccomp_filters value \"x\" is not a number".to_string()),
            ),
        ] {
            assert_eq!(parse_seccomp_filters(text), want, "{text:?}");
        }
    }
}
