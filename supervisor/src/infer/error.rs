//! Failures of the worker driver, and how a dead worker's exit status is read.

use std::io;
use std::time::Duration;

use airlock_formats::bounded::ReplyError;
use airlock_formats::escape;
use airlock_formats::protocol::{DecodeError, ErrorKind, MAX_FRAME_LEN};
use airlock_sandbox::{ExitStatus, SpawnError, WaitError};

/// The worker's exit status after `abort()` (`airlock_worker::cli::EXIT_ABORT`: its SIGABRT
/// handler, since a PID 1 cannot deliver SIGABRT to itself), chiefly an allocation failure.
pub const WORKER_EXIT_ABORT: i32 = 134;

/// How long a worker may take to exit after `Shutdown` before it is killed.
pub const FINISH_WAIT: Duration = Duration::from_secs(5);

/// Why an operation on the worker failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The model file name is not a plain file name inside the model directory.
    #[error("model file name {0:?} is not a plain file name")]
    ModelFile(String),
    /// The spec has no model directory to bind at `/model`.
    #[error("the sandbox spec has no model directory")]
    NoModelDir,
    /// The socketpair could not be created.
    #[error("socketpair: {0}")]
    Socket(#[source] io::Error),
    /// The sandbox's spawn path failed.
    #[error("{0}")]
    Spawn(#[source] SpawnError),
    /// The worker died while an address-space limit was set, of SIGKILL/SIGABRT or after an
    /// error reply about memory.
    #[error("the worker ran out of memory (address-space limit {limit_mib} MiB)")]
    OutOfMemory {
        /// The limit, MiB.
        limit_mib: u64,
    },
    /// The worker died otherwise.
    #[error("the worker crashed ({})", describe(*.0))]
    Crashed(ExitStatus),
    /// The worker answered with an error reply.
    #[error("the worker refused: {} ({kind:?})", escape::text(reason))]
    Refused {
        /// Class of the error.
        kind: ErrorKind,
        /// Its reason.
        reason: String,
    },
    /// A reply limit was reached or a frame was bad (the worker has been killed).
    #[error("{0}")]
    Reply(#[source] ReplyError),
    /// The worker closed the connection and did not exit.
    #[error("the worker closed the connection")]
    Closed,
    /// A reply could not be decoded (the worker has been killed).
    #[error("decoding the worker's reply: {}", escape::text(&.0.to_string()))]
    Decode(#[source] DecodeError),
    /// A reply that does not belong at this point (the worker has been killed).
    #[error("the worker sent an unexpected {0} reply")]
    Unexpected(&'static str),
    /// Encoding or sending the request failed.
    #[error("sending the request: {0}")]
    Send(#[source] io::Error),
    /// The request does not fit in a frame.
    #[error("the request of {len} bytes exceeds the frame limit {MAX_FRAME_LEN}")]
    TooLarge {
        /// Encoded length.
        len: usize,
    },
    /// Encoding the request failed.
    #[error("encoding the request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The worker did not exit after `Shutdown` within [`FINISH_WAIT`] and was killed.
    #[error("the worker did not exit within {}s of the shutdown request and was killed", FINISH_WAIT.as_secs())]
    NoExit,
    /// Waiting for or signalling the process failed.
    #[error("{0}")]
    Wait(#[source] WaitError),
    /// The worker is no longer running (an earlier operation failed).
    #[error("the worker is no longer running")]
    Gone,
}

/// Errors of the worker driver; each names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// Spawning the sandboxed worker failed.
    #[error("spawning the worker: {0}")]
    Spawn(#[source] Failure),
    /// The worker did not become ready (the model did not load).
    #[error("loading the model: {0}")]
    Ready(#[source] Failure),
    /// Counting tokens failed.
    #[error("counting tokens: {0}")]
    Count(#[source] Failure),
    /// Generating failed.
    #[error("generating: {0}")]
    Generate(#[source] Failure),
    /// Stopping the worker failed.
    #[error("stopping the worker: {0}")]
    Finish(#[source] Failure),
}

impl InferError {
    /// Why the operation failed.
    pub fn failure(&self) -> &Failure {
        match self {
            InferError::Spawn(f)
            | InferError::Ready(f)
            | InferError::Count(f)
            | InferError::Generate(f)
            | InferError::Finish(f) => f,
        }
    }
}

/// "signal 9, SIGKILL" or "exit status 2".
fn describe(s: ExitStatus) -> String {
    match s {
        ExitStatus::Signaled(n) => {
            format!("signal {n}, {}", airlock_sandbox::names::signal_name(n))
        }
        ExitStatus::Exited(WORKER_EXIT_ABORT) => format!("exit status {WORKER_EXIT_ABORT}, abort"),
        ExitStatus::Exited(c) => format!("exit status {c}"),
    }
}

/// Whether a worker's error reason says an allocation failed.
fn mentions_memory(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "memory allocation",
        "cannot allocate memory",
        "out of memory",
        "os error 12",
        "failed to allocate",
    ]
    .iter()
    .any(|n| r.contains(n))
}

/// How a dead worker's end is reported: out of memory when an address-space limit was set
/// and it died of SIGKILL (the kernel's way), SIGABRT or [`WORKER_EXIT_ABORT`] (the
/// allocator's) or its last error reply was about memory; a crash otherwise. (A stack that
/// cannot grow under the limit ends in SIGSEGV, reported as a crash: it cannot be told
/// from a real fault.)
pub fn classify(
    status: ExitStatus,
    address_space: Option<u64>,
    last_error: Option<&str>,
) -> Failure {
    let oom_signal = matches!(
        status,
        ExitStatus::Signaled(libc::SIGKILL)
            | ExitStatus::Signaled(libc::SIGABRT)
            | ExitStatus::Exited(WORKER_EXIT_ABORT)
    );
    match address_space {
        Some(limit) if oom_signal || last_error.is_some_and(mentions_memory) => {
            Failure::OutOfMemory {
                limit_mib: limit >> 20,
            }
        }
        _ => Failure::Crashed(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_classified() {
        const G: u64 = 1 << 30;
        for (status, limit, last, want) in [
            (
                ExitStatus::Signaled(libc::SIGABRT),
                Some(G),
                None,
                "the worker ran out of memory (address-space limit 1024 MiB)",
            ),
            (
                ExitStatus::Signaled(libc::SIGKILL),
                Some(512 << 20),
                None,
                "the worker ran out of memory (address-space limit 512 MiB)",
            ),
            (
                ExitStatus::Exited(2),
                Some(G),
                Some("loading model m.gguf: Cannot allocate memory (os error 12)"),
                "the worker ran out of memory (address-space limit 1024 MiB)",
            ),
            (
                ExitStatus::Exited(WORKER_EXIT_ABORT),
                Some(G),
                None,
                "the worker ran out of memory (address-space limit 1024 MiB)",
            ),
            (
                ExitStatus::Exited(WORKER_EXIT_ABORT),
                None,
                None,
                "the worker crashed (exit status 134, abort)",
            ),
            (
                ExitStatus::Signaled(libc::SIGKILL),
                None,
                None,
                "the worker crashed (signal 9, SIGKILL)",
            ),
            (
                ExitStatus::Signaled(libc::SIGSYS),
                Some(G),
                None,
                "the worker crashed (signal 31, SIGSYS)",
            ),
            (
                ExitStatus::Exited(3),
                Some(G),
                Some("bad magic"),
                "the worker crashed (exit status 3)",
            ),
        ] {
            assert_eq!(classify(status, limit, last).to_string(), want);
        }
    }

    #[test]
    fn errors_are_one_line_and_escape_the_workers_text() {
        let e = InferError::Generate(Failure::Refused {
            kind: ErrorKind::Inference,
            reason: "bad\n\u{1b}[2Jthing".into(),
        });
        let s = e.to_string();
        assert!(!s.contains('\n') && !s.contains('\u{1b}'), "{s}");
        assert!(s.starts_with("generating: the worker refused: bad"), "{s}");
    }
}
