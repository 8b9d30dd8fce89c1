//! Opening one document: the key holder's half of the `doc-open`
//! exchange (docs/documents.md). The ciphertext goes to a sandboxed
//! `airlock-init doc-open` child; this process sees only the session-key
//! packets it sends back, unwraps them with the operator session's
//! document keys (the active key first, then older ones, so a document
//! encrypted to a rotated-out key still opens) and hands the child the
//! session key; the child answers with the text or a one-line refusal.
//!
//! A watchdog kills the child when the exchange takes longer than
//! `within` (a child that hangs must not hang the console).

use crate::document::child;
use crate::document::frame::{
    read_frame, read_outcome, session_key_body, write_frame, Kind, Outcome,
};
use crate::document::open::Limits;
use crate::document::secret::Plaintext;
use crate::document::unwrap::{unwrap, UnwrapError, MAX_ESK_BYTES};
use airlock_sandbox::ExitStatus;
use pgp::composed::SignedSecretKey;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use thiserror::Error;

/// Why a document did not open.
#[derive(Debug, Error)]
pub enum OpenerError {
    /// The document was refused (its reason, one line, from the child or
    /// from unwrapping).
    #[error("{0}")]
    Refused(String),
    #[error("open the document: create a pipe: {0}")]
    Pipe(nix::Error),
    #[error("open the document: start the sandboxed opener: {0}")]
    Spawn(String),
    #[error("open the document: the sandboxed opener {0}")]
    Exchange(String),
    #[error("open the document: the sandboxed opener took longer than {0} s and was stopped")]
    Timeout(u64),
}

fn pipe() -> Result<(OwnedFd, OwnedFd), OpenerError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(OpenerError::Pipe(nix::Error::last()));
    }
    // SAFETY: two new descriptors this process owns and nothing else uses.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Unwraps `esk` with the first of `keys` that holds it; the error of the
/// first key when none does (it names the message's recipients).
pub fn unwrap_with(
    esk: &[u8],
    keys: &[SignedSecretKey],
) -> Result<crate::document::secret::SessionKey, UnwrapError> {
    let mut first: Option<UnwrapError> = None;
    for k in keys {
        match unwrap(esk, k) {
            Ok(sk) => return Ok(sk),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or(UnwrapError::NoDecryptionKey))
}

/// Opens `ciphertext` with `keys` in a sandboxed child of `program`.
pub fn open_document(
    program: &Path,
    ciphertext: &[u8],
    keys: &[SignedSecretKey],
    limits: Limits,
    within: Duration,
) -> Result<Plaintext, OpenerError> {
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let mut spec = child::spec(program, limits);
    spec.fds.push((in_r, 0));
    spec.fds.push((out_w, 1));
    let mut sandboxed =
        airlock_sandbox::spawn(spec).map_err(|e| OpenerError::Spawn(e.to_string()))?;
    // The watchdog: SIGKILL to the child (PID 1 of its namespace: the
    // whole namespace goes) unless the exchange ends in time. The child is
    // not reaped before the watchdog is told, so its pid stays its own.
    let pid = sandboxed.pid();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(within) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) on a pid that is still our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut to_child = File::from(in_w);
    let mut from_child = File::from(out_r);
    let result = exchange(&mut to_child, &mut from_child, ciphertext, keys, limits);
    drop(to_child);
    drop(from_child);
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let status = sandboxed
        .wait_timeout(Duration::from_secs(10))
        .ok()
        .flatten();
    if status.is_none() {
        let _ = sandboxed.kill();
        let _ = sandboxed.wait();
    }
    if timed_out {
        return Err(OpenerError::Timeout(within.as_secs()));
    }
    match (result, status) {
        (Ok(text), Some(ExitStatus::Exited(0))) => Ok(text),
        (Err(OpenerError::Refused(r)), _) => Err(OpenerError::Refused(r)),
        (Ok(_), st) | (Err(OpenerError::Exchange(_)), st) if st != Some(ExitStatus::Exited(0)) => {
            Err(OpenerError::Exchange(match st {
                Some(ExitStatus::Signaled(s)) => format!("was killed by signal {s}"),
                Some(ExitStatus::Exited(c)) => format!("exited with status {c}"),
                None => "did not exit".into(),
            }))
        }
        (r, _) => r,
    }
}

fn exchange(
    to_child: &mut File,
    from_child: &mut File,
    ciphertext: &[u8],
    keys: &[SignedSecretKey],
    limits: Limits,
) -> Result<Plaintext, OpenerError> {
    let broken = |e: crate::document::frame::FrameError| OpenerError::Exchange(e.to_string());
    write_frame(to_child, Kind::Ciphertext, ciphertext).map_err(broken)?;
    let (kind, body) = read_frame(from_child, MAX_ESK_BYTES.max(4096)).map_err(broken)?;
    match kind {
        Kind::Esk => {}
        Kind::Refused => {
            return Err(OpenerError::Refused(
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
        other => return Err(OpenerError::Exchange(format!("sent {other:?} first"))),
    }
    match unwrap_with(&body, keys) {
        Ok(sk) => {
            write_frame(to_child, Kind::SessionKey, &session_key_body(&sk)).map_err(broken)?
        }
        Err(e) => {
            let _ = write_frame(to_child, Kind::Abort, b"");
            return Err(OpenerError::Refused(e.to_string()));
        }
    }
    match read_outcome(from_child, limits.max_plaintext).map_err(broken)? {
        Outcome::Text(t) => Ok(t),
        Outcome::Refused(r) => Err(OpenerError::Refused(r)),
    }
}
