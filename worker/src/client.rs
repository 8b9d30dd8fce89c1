//! The supervisor's side of the protocol, for tests and the benchmark:
//! spawning an unsandboxed worker with a socketpair on fd 3, and running a
//! request to completion.
//!
//! Every reply is read under `airlock_formats::bounded::REPLY_LIMITS` (a
//! deadline per frame and per job, a byte bound per job), so a compromised
//! worker can neither stall its caller nor make it gather text without end.
//! Worker-supplied strings in errors are escaped for a terminal.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use airlock_formats::bounded::{Job, ReplyError, ReplyLimits, REPLY_LIMITS};
use airlock_formats::protocol::{
    decode_response, send, DecodeError, FrameError, GenerateRequest, Request, Response, Stats,
};

/// Descriptor number the worker finds its socketpair end under.
pub const WORKER_FD: i32 = 3;

/// A worker process and the supervisor's end of its socketpair.
pub struct WorkerProcess {
    /// The process.
    pub child: Child,
    /// Supervisor's end of the protocol connection.
    pub conn: UnixStream,
}

/// Errors of talking to a worker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Creating the socketpair or spawning failed.
    #[error("spawning worker: {0}")]
    Spawn(#[source] io::Error),
    /// Sending a frame failed.
    #[error("sending: {0}")]
    Send(#[source] FrameError),
    /// Reading a frame failed.
    #[error("receiving: {0}")]
    Receive(#[source] FrameError),
    /// A reply limit was reached (per-frame or per-job deadline, per-job byte bound).
    #[error(transparent)]
    Limit(ReplyError),
    /// The worker closed the connection.
    #[error("worker closed the connection")]
    Closed,
    /// The worker sent an undecodable frame.
    #[error("decoding reply: {0}")]
    Decode(#[source] DecodeError),
    /// The worker answered with an error reply (its reason escaped for a terminal).
    #[error("worker error ({kind:?}): {}", airlock_formats::escape::text(reason))]
    Worker {
        /// Class of error.
        kind: airlock_formats::protocol::ErrorKind,
        /// Reason given.
        reason: String,
    },
    /// The worker sent a reply that does not belong at this point.
    #[error("unexpected reply: {0:?}")]
    Unexpected(Box<Response>),
}

/// Spawns `bin` with `args` (plus `--fd 3`), its socketpair end on fd 3.
/// `rlimit_as`, if given, bounds the child's address space.
pub fn spawn_local<I, S>(
    bin: &Path,
    args: I,
    rlimit_as: Option<u64>,
) -> Result<WorkerProcess, ClientError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (ours, theirs) = UnixStream::pair().map_err(ClientError::Spawn)?;
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .arg("--fd")
        .arg(WORKER_FD.to_string())
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (dup2, setrlimit) on plain integers; it
    // allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 clears close-on-exec on the new descriptor.
            if libc::dup2(child_fd, WORKER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(limit) = rlimit_as {
                let r = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(ClientError::Spawn)?;
    drop(theirs);
    Ok(WorkerProcess { child, conn: ours })
}

fn reply_error(e: ReplyError) -> ClientError {
    match e {
        ReplyError::Frame(f) => ClientError::Receive(f),
        other => ClientError::Limit(other),
    }
}

/// Reads the next reply of `job`.
fn next(job: &mut Job<'_>) -> Result<Response, ClientError> {
    match job.next_frame().map_err(reply_error)? {
        Some(p) => decode_response(&p).map_err(ClientError::Decode),
        None => Err(ClientError::Closed),
    }
}

/// Reads the next reply (one frame, under [`REPLY_LIMITS`]).
pub fn receive(conn: &mut UnixStream) -> Result<Response, ClientError> {
    next(&mut Job::new(conn, REPLY_LIMITS))
}

/// Waits for `Ready`; returns the model load time (ms).
pub fn wait_ready(conn: &mut UnixStream) -> Result<u64, ClientError> {
    wait_ready_info(conn).map(|(load_ms, _)| load_ms)
}

/// Waits for `Ready`; returns the model load time (ms) and the context length it reported.
pub fn wait_ready_info(conn: &mut UnixStream) -> Result<(u64, Option<u64>), ClientError> {
    match receive(conn)? {
        Response::Ready {
            load_ms,
            context_length,
            ..
        } => Ok((load_ms, context_length)),
        Response::Error { kind, reason } => Err(ClientError::Worker { kind, reason }),
        other => Err(ClientError::Unexpected(Box::new(other))),
    }
}

/// Sends `Count` and returns the number of tokens of `text` (under [`REPLY_LIMITS`]).
pub fn count(conn: &mut UnixStream, text: &str) -> Result<u64, ClientError> {
    send(
        conn,
        &Request::Count {
            text: text.to_string(),
        },
    )
    .map_err(ClientError::Send)?;
    match receive(conn)? {
        Response::Count { tokens } => Ok(tokens),
        Response::Error { kind, reason } => Err(ClientError::Worker { kind, reason }),
        other => Err(ClientError::Unexpected(Box::new(other))),
    }
}

/// Sends `req` and collects the streamed text and the final stats, under [`REPLY_LIMITS`].
pub fn generate(
    conn: &mut UnixStream,
    req: &GenerateRequest,
) -> Result<(String, Stats), ClientError> {
    generate_with(conn, req, REPLY_LIMITS)
}

/// [`generate`] under the given limits.
pub fn generate_with(
    conn: &mut UnixStream,
    req: &GenerateRequest,
    limits: ReplyLimits,
) -> Result<(String, Stats), ClientError> {
    send(conn, &Request::Generate(req.clone())).map_err(ClientError::Send)?;
    let conn: &UnixStream = conn;
    let mut job = Job::new(conn, limits);
    let mut text = String::new();
    loop {
        match next(&mut job)? {
            Response::Token { text: t } => text.push_str(&t),
            Response::Done(stats) => return Ok((text, stats)),
            Response::Error { kind, reason } => return Err(ClientError::Worker { kind, reason }),
            other => return Err(ClientError::Unexpected(Box::new(other))),
        }
    }
}

/// A worker inside every sandbox layer and the supervisor's end of its socketpair.
pub struct SandboxedWorker {
    /// The sandboxed process (PID 1 of its namespace).
    pub process: airlock_sandbox::Sandboxed,
    /// Supervisor's end of the protocol connection.
    pub conn: UnixStream,
}

/// Spawns `bin` through the sandbox's spawn path: the model's directory at
/// `/model` (read-only), scratch at `/scratch` (`HOME`), the socketpair end on
/// fd 3, `--sandboxed` so the worker installs its seccomp allowlist. The spawn
/// path refuses the worker unless the kernel shows that stage 2 is in
/// (`Spec::stage2`, the worker's filter count) before this returns.
pub fn spawn_sandboxed(
    bin: &Path,
    model: &Path,
    extra_args: &[String],
    limits: airlock_sandbox::Limits,
) -> Result<SandboxedWorker, SandboxClientError> {
    let (spec, conn) = sandboxed_spec(bin, model, extra_args, limits)?;
    let process = airlock_sandbox::spawn(spec)?;
    Ok(SandboxedWorker { process, conn })
}

/// The spec [`spawn_sandboxed`] runs, and the supervisor's end of the socketpair.
pub fn sandboxed_spec(
    bin: &Path,
    model: &Path,
    extra_args: &[String],
    limits: airlock_sandbox::Limits,
) -> Result<(airlock_sandbox::Spec, UnixStream), SandboxClientError> {
    let canon = std::fs::canonicalize(model).map_err(|e| SandboxClientError::Model {
        path: model.to_path_buf(),
        reason: e.to_string(),
    })?;
    let (Some(dir), Some(name)) = (canon.parent(), canon.file_name()) else {
        return Err(SandboxClientError::Model {
            path: model.to_path_buf(),
            reason: "no parent directory".into(),
        });
    };
    let (ours, theirs) = UnixStream::pair().map_err(ClientError::Spawn)?;
    let mut spec = airlock_sandbox::Spec::new(bin);
    spec.model_dir = Some(dir.to_path_buf());
    spec.limits = limits;
    spec.stage2 = airlock_sandbox::Stage2::worker();
    spec.fds
        .push((std::os::fd::OwnedFd::from(theirs), WORKER_FD));
    let inner = Path::new("/model").join(name);
    spec.args = ["--model".into(), inner.into_os_string()]
        .into_iter()
        .chain(
            ["--sandboxed", "--fd", "3"]
                .iter()
                .map(std::ffi::OsString::from),
        )
        .chain(extra_args.iter().map(std::ffi::OsString::from))
        .collect();
    Ok((spec, ours))
}

/// Errors of spawning a sandboxed worker.
#[derive(Debug, thiserror::Error)]
pub enum SandboxClientError {
    /// The model path cannot be mounted.
    #[error("model {path}: {reason}")]
    Model {
        /// Path as given.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The socketpair could not be created.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The sandbox spawn path failed.
    #[error(transparent)]
    Spawn(#[from] airlock_sandbox::SpawnError),
}
