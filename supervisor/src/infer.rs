//! Driving one sandboxed inference worker (`airlock-worker`) for a document job: start it on
//! a checked model, wait for `Ready`, count tokens, stream a generation, shut it down.
//!
//! The supervisor must not link mistral.rs, so this module speaks the protocol of
//! `airlock_formats::protocol` itself; every reply is read under
//! `airlock_formats::bounded` ([`REPLY_LIMITS`], the `Ready` wait under the caller's
//! deadline). When the worker dies during a call its exit status is read and the failure
//! says why: out of memory (SIGKILL, SIGABRT or the worker's abort status 134, or an error
//! reply about memory, while an address-space limit was set) or a crash with its signal or
//! exit status.
//!
//! The document is secret: the request frames are built in buffers that are wiped when
//! freed ([`Zeroizing`], exact capacity so no reallocation leaves a copy behind), and so are
//! the reply payloads and the collected answer. Worker-supplied text in errors is escaped.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use airlock_formats::bounded::{Job, ReplyError, ReplyLimits, REPLY_LIMITS};
use airlock_formats::escape;
use airlock_formats::protocol::{
    decode_response, DecodeError, ErrorKind, FrameError, GenerateRequest, Message, Response, Role,
    Stats, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use airlock_sandbox::{ExitStatus, Sandboxed, SpawnError, Spec, Stage2, WaitError};
use serde::Serialize;
use zeroize::Zeroizing;

/// Descriptor number the worker finds its socketpair end under.
pub const WORKER_FD: i32 = 3;

/// How long a worker may take to exit after `Shutdown` before it is killed.
pub const FINISH_WAIT: Duration = Duration::from_secs(5);

/// The worker's exit status after `abort()` (`airlock_worker::cli::EXIT_ABORT`: its SIGABRT
/// handler, since a PID 1 cannot deliver SIGABRT to itself), chiefly an allocation failure.
pub const WORKER_EXIT_ABORT: i32 = 134;

/// How long the exit status of a worker whose connection broke is waited for.
const DEATH_WAIT: Duration = Duration::from_secs(5);

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

/// A system message (if not empty) and the user's message.
pub fn chat_messages(system: &str, user: &str) -> Vec<Message> {
    let mut v = Vec::with_capacity(2);
    if !system.is_empty() {
        v.push(Message {
            role: Role::System,
            content: system.to_string(),
        });
    }
    v.push(Message {
        role: Role::User,
        content: user.to_string(),
    });
    v
}

/// The requests this driver sends, borrowing their contents (no copy of the document);
/// the wire shape is `airlock_formats::protocol::Request`'s (a test compares the bytes).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum OutRequest<'a> {
    Generate(&'a GenerateRequest),
    Count { text: &'a str },
    Shutdown,
}

#[derive(Serialize)]
struct OutFrame<'a> {
    v: u32,
    msg: &'a OutRequest<'a>,
}

/// Counts the bytes written to it.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The whole frame (length prefix and payload) of `req` in a buffer of exact capacity that is
/// wiped when freed.
fn frame(req: &OutRequest<'_>) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let out = OutFrame {
        v: PROTOCOL_VERSION,
        msg: req,
    };
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, &out).map_err(Failure::Encode)?;
    let len = u32::try_from(counter.0)
        .ok()
        .filter(|&l| l <= MAX_FRAME_LEN)
        .ok_or(Failure::TooLarge { len: counter.0 })?;
    let mut buf = Zeroizing::new(Vec::with_capacity(4 + counter.0));
    buf.extend_from_slice(&len.to_le_bytes());
    serde_json::to_writer(&mut *buf, &out).map_err(Failure::Encode)?;
    Ok(buf)
}

/// Appends `s` to `out`; when it must grow, the old buffer is wiped (never reallocated in
/// place).
fn push_wiped(out: &mut Zeroizing<String>, s: &str) {
    let need = out.len() + s.len();
    if need > out.capacity() {
        let mut grown = Zeroizing::new(String::with_capacity(need.max(out.capacity() * 2)));
        grown.push_str(out);
        *out = grown;
    }
    out.push_str(s);
}

/// A sandboxed worker with a loaded model and the supervisor's end of its socketpair.
pub struct Worker {
    process: Sandboxed,
    conn: UnixStream,
    address_space: Option<u64>,
    model: String,
    load_ms: u64,
    context_length: Option<u64>,
    /// Set once the worker was killed or reaped, or `Shutdown` was sent.
    gone: bool,
}

impl Worker {
    /// Spawns the worker of `spec` (from `model_check::worker_spec`: `model_dir` set, the
    /// caller's limits) on `/model/<model_file>` with `--sandboxed --fd 3` and `extra`, its
    /// stage 2 required, and waits at most `ready_within` for `Ready`.
    pub fn start(
        mut spec: Spec,
        model_file: &str,
        extra: &[String],
        ready_within: Duration,
    ) -> Result<Worker, InferError> {
        let plain = !model_file.is_empty()
            && model_file != "."
            && model_file != ".."
            && !model_file.contains(['/', '\0']);
        if !plain {
            return Err(InferError::Spawn(Failure::ModelFile(
                escape::text(model_file).into_owned(),
            )));
        }
        if spec.model_dir.is_none() {
            return Err(InferError::Spawn(Failure::NoModelDir));
        }
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| InferError::Spawn(Failure::Socket(e)))?;
        spec.stage2 = Stage2::worker();
        spec.fds.push((OwnedFd::from(theirs), WORKER_FD));
        let fd = WORKER_FD.to_string();
        spec.args = [
            "--model".into(),
            Path::new("/model").join(model_file).into_os_string(),
        ]
        .into_iter()
        .chain(["--sandboxed", "--fd", &fd].iter().map(Into::into))
        .chain(extra.iter().map(Into::into))
        .collect();
        let address_space = spec.limits.address_space;
        let process =
            airlock_sandbox::spawn(spec).map_err(|e| InferError::Spawn(Failure::Spawn(e)))?;
        let mut w = Worker {
            process,
            conn: ours,
            address_space,
            model: String::new(),
            load_ms: 0,
            context_length: None,
            gone: false,
        };
        let limits = ReplyLimits {
            job: ready_within,
            ..REPLY_LIMITS
        };
        let reply = {
            let mut job = Job::new(&w.conn, limits);
            next(&mut job)
        };
        match reply {
            Ok(Response::Ready {
                model,
                load_ms,
                context_length,
            }) => {
                w.model = model;
                w.load_ms = load_ms;
                w.context_length = context_length;
                Ok(w)
            }
            // The worker exits after a load failure: its status and the reason tell why.
            Ok(Response::Error { kind, reason }) => Err(InferError::Ready(w.ended(kind, reason))),
            Ok(other) => Err(InferError::Ready(
                w.broken(Failure::Unexpected(name(&other))),
            )),
            Err(f) => Err(InferError::Ready(w.broken(f))),
        }
    }

    /// File name of the loaded model, as the worker reported it.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Time the worker took to load the model (ms).
    pub fn load_ms(&self) -> u64 {
        self.load_ms
    }

    /// The model's context length (tokens), when the worker reported it.
    pub fn context_length(&self) -> Option<u64> {
        self.context_length
    }

    /// Host pid of the worker (PID 1 of its namespace).
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Tokens of `text` under the model's tokenizer (no chat template, no BOS).
    pub fn count(&mut self, text: &str) -> Result<usize, InferError> {
        self.send(&OutRequest::Count { text })
            .map_err(InferError::Count)?;
        let reply = {
            let mut job = Job::new(&self.conn, REPLY_LIMITS);
            next(&mut job)
        };
        match reply {
            Ok(Response::Count { tokens }) => Ok(usize::try_from(tokens).unwrap_or(usize::MAX)),
            Ok(Response::Error { kind, reason }) => {
                Err(InferError::Count(Failure::Refused { kind, reason }))
            }
            Ok(other) => Err(InferError::Count(
                self.broken(Failure::Unexpected(name(&other))),
            )),
            Err(f) => Err(InferError::Count(self.broken(f))),
        }
    }

    /// Runs `req`, calling `on_token` with the text of every `Token` frame (for progress);
    /// returns the whole answer (wiped when freed) and the worker's figures.
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<(Zeroizing<String>, Stats), InferError> {
        self.send(&OutRequest::Generate(req))
            .map_err(InferError::Generate)?;
        let mut text = Zeroizing::new(String::new());
        let failure = {
            let mut job = Job::new(&self.conn, REPLY_LIMITS);
            loop {
                match next(&mut job) {
                    Ok(Response::Token { text: t }) => {
                        let t = Zeroizing::new(t);
                        on_token(&t);
                        push_wiped(&mut text, &t);
                    }
                    Ok(Response::Done(stats)) => return Ok((text, stats)),
                    Ok(Response::Error { kind, reason }) => {
                        return Err(InferError::Generate(Failure::Refused { kind, reason }))
                    }
                    Ok(other) => break Failure::Unexpected(name(&other)),
                    Err(f) => break f,
                }
            }
        };
        Err(InferError::Generate(self.broken(failure)))
    }

    /// Sends `Shutdown`, waits at most [`FINISH_WAIT`] for the exit, kills the worker if it
    /// is still running, and reaps it.
    pub fn finish(mut self) -> Result<(), InferError> {
        self.stop().map_err(InferError::Finish)
    }

    fn stop(&mut self) -> Result<(), Failure> {
        if self.gone {
            return Ok(());
        }
        self.gone = true;
        // A worker that cannot read it sees the end of the stream after the shutdown below.
        let _ = frame(&OutRequest::Shutdown).map(|f| (&self.conn).write_all(&f));
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
        match self
            .process
            .wait_timeout(FINISH_WAIT)
            .map_err(Failure::Wait)?
        {
            Some(ExitStatus::Exited(0)) => Ok(()),
            Some(st) => Err(classify(st, self.address_space, None)),
            None => {
                self.process.kill().map_err(Failure::Wait)?;
                self.process.wait().map_err(Failure::Wait)?;
                Err(Failure::NoExit)
            }
        }
    }

    /// Writes one request frame.
    fn send(&mut self, req: &OutRequest<'_>) -> Result<(), Failure> {
        if self.gone {
            return Err(Failure::Gone);
        }
        let f = frame(req)?;
        match (&self.conn).write_all(&f) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.broken(Failure::Send(e))),
        }
    }

    /// The worker answered `Error` and exits (a failed model load): wait for its status.
    fn ended(&mut self, kind: ErrorKind, reason: String) -> Failure {
        match self.process.wait_timeout(DEATH_WAIT) {
            Ok(Some(st)) => {
                self.gone = true;
                match classify(st, self.address_space, Some(&reason)) {
                    oom @ Failure::OutOfMemory { .. } => oom,
                    _ => Failure::Refused { kind, reason },
                }
            }
            _ => self.kill(Failure::Refused { kind, reason }),
        }
    }

    /// An operation broke off with `f`. When the connection was lost, the worker's exit
    /// status says why (out of memory, crash); otherwise the worker misbehaved (a limit, a
    /// bad frame) or did not exit: it is killed and `f` stands.
    fn broken(&mut self, f: Failure) -> Failure {
        let lost = matches!(
            f,
            Failure::Closed
                | Failure::Send(_)
                | Failure::Reply(ReplyError::Frame(
                    FrameError::Read(_) | FrameError::Truncated { .. }
                ))
        );
        if lost {
            if let Ok(Some(st)) = self.process.wait_timeout(DEATH_WAIT) {
                self.gone = true;
                return classify(st, self.address_space, None);
            }
        }
        self.kill(f)
    }

    /// Kills and reaps the worker; returns `f`.
    fn kill(&mut self, f: Failure) -> Failure {
        self.gone = true;
        let _ = self.process.kill();
        let _ = self.process.wait();
        f
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Also reaps: `Sandboxed`'s own drop kills and reaps whatever is left.
        let _ = self.stop();
    }
}

/// The next reply of `job`, decoded.
fn next(job: &mut Job<'_>) -> Result<Response, Failure> {
    let payload = match job.next_frame() {
        Ok(Some(p)) => Zeroizing::new(p),
        Ok(None) => return Err(Failure::Closed),
        Err(e) => return Err(Failure::Reply(e)),
    };
    decode_response(&payload).map_err(Failure::Decode)
}

/// The name of a reply, for errors (its contents are the worker's and are not shown).
fn name(r: &Response) -> &'static str {
    match r {
        Response::Ready { .. } => "ready",
        Response::Count { .. } => "count",
        Response::Token { .. } => "token",
        Response::Done(_) => "done",
        Response::Error { .. } => "error",
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use airlock_formats::protocol::{encode_payload, Request};

    fn req() -> GenerateRequest {
        GenerateRequest {
            messages: chat_messages("Be brief.", "Summarise:\n\u{0}\u{202e}\"x\""),
            max_tokens: 16,
            temperature: 0.5,
            top_p: 0.9,
            seed: 3,
            stop: vec!["\n\n".into()],
        }
    }

    #[test]
    fn frames_are_the_protocols_bytes() {
        let g = req();
        for (ours, theirs) in [
            (OutRequest::Generate(&g), Request::Generate(g.clone())),
            (
                OutRequest::Count { text: "a\u{1}b" },
                Request::Count {
                    text: "a\u{1}b".into(),
                },
            ),
            (
                OutRequest::Count { text: "" },
                Request::Count {
                    text: String::new(),
                },
            ),
            (OutRequest::Shutdown, Request::Shutdown),
        ] {
            let f = frame(&ours).unwrap();
            let p = encode_payload(&theirs).unwrap();
            assert_eq!(f.len(), 4 + p.len());
            assert_eq!(f.capacity(), f.len(), "exact capacity: no reallocated copy");
            assert_eq!(&f[..4], &(p.len() as u32).to_le_bytes());
            assert_eq!(&f[4..], &p[..]);
        }
    }

    #[test]
    fn a_request_over_the_frame_limit_is_refused() {
        let text = "a".repeat(MAX_FRAME_LEN as usize);
        let e = frame(&OutRequest::Count { text: &text }).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the request of {} bytes exceeds the frame limit {MAX_FRAME_LEN}",
                MAX_FRAME_LEN as usize + 35
            )
        );
    }

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

    #[test]
    fn growing_the_answer_keeps_its_text() {
        let mut out = Zeroizing::new(String::new());
        for piece in ["a", "bc", "", "def", &"x".repeat(100)] {
            push_wiped(&mut out, piece);
        }
        assert_eq!(out.as_str(), format!("abcdef{}", "x".repeat(100)));
    }

    #[test]
    fn bad_model_file_names_are_refused_before_spawning() {
        for bad in ["", "..", "a/b", "/etc/passwd"] {
            let mut spec = Spec::new("/nonexistent");
            spec.model_dir = Some("/tmp".into());
            match Worker::start(spec, bad, &[], Duration::from_secs(1)) {
                Err(InferError::Spawn(Failure::ModelFile(_))) => {}
                Err(e) => panic!("{bad:?}: {e}"),
                Ok(_) => panic!("{bad:?} spawned"),
            }
        }
        match Worker::start(
            Spec::new("/nonexistent"),
            "m.gguf",
            &[],
            Duration::from_secs(1),
        ) {
            Err(e) => assert_eq!(
                e.to_string(),
                "spawning the worker: the sandbox spec has no model directory"
            ),
            Ok(_) => panic!("spawned"),
        }
    }
}
