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

//!
//! Split: [`error`] (the failures and how a dead worker is read), [`frame`] (request frames in
//! wiped buffers), this file (the driver).

pub mod error;
mod frame;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use airlock_formats::bounded::{Job, ReplyError, ReplyLimits, REPLY_LIMITS};
use airlock_formats::escape;
use airlock_formats::protocol::{
    decode_response, ErrorKind, FrameError, GenerateRequest, Message, Response, Role, Stats,
};
use airlock_sandbox::{ExitStatus, Sandboxed, Spec, Stage2};
use zeroize::Zeroizing;

pub use error::{classify, Failure, InferError, FINISH_WAIT, WORKER_EXIT_ABORT};
use frame::{frame, push_wiped, OutRequest};

/// Descriptor number the worker finds its socketpair end under.
pub const WORKER_FD: i32 = 3;

/// How long the exit status of a worker whose connection broke is waited for.
const DEATH_WAIT: Duration = Duration::from_secs(5);

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
