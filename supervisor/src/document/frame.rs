//! Bytes in and out over a pipe between the job orchestrator and the
//! sandboxed `open` child. One frame: a kind byte, a 4-byte big-endian
//! length, the body. The exchange (child side in [`serve_open`]):
//!
//! ```text
//! parent → child  Ciphertext(message bytes)
//! child  → parent Esk(PKESK packets)        | Refused(one line)
//! parent → child  SessionKey(algo, key)     | Abort
//! child  → parent Plaintext(UTF-8 text)     | Refused(one line)
//! ```
//!
//! The parent hands the Esk frame to the key holder's
//! [`super::unwrap::unwrap`] and passes only its session key back.

use std::io::{Read, Write};

use thiserror::Error;
use zeroize::Zeroizing;

use super::open::{open, Limits};
use super::packets::split;
use super::secret::{Plaintext, SessionKey};

/// Frame kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Ciphertext = 1,
    Esk = 2,
    SessionKey = 3,
    Abort = 4,
    Plaintext = 5,
    Refused = 6,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Ciphertext,
            2 => Kind::Esk,
            3 => Kind::SessionKey,
            4 => Kind::Abort,
            5 => Kind::Plaintext,
            6 => Kind::Refused,
            _ => return None,
        })
    }
}

/// What went wrong on the pipe.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("read frame: {0}")]
    Read(std::io::Error),
    #[error("write frame: {0}")]
    Write(std::io::Error),
    #[error("read frame: unknown kind {0}")]
    Kind(u8),
    #[error("read frame: {0} bytes is over the limit of {1}")]
    TooLong(u64, usize),
    #[error("read frame: expected {0:?}, got {1:?}")]
    Unexpected(&'static str, Kind),
    #[error("read frame: bad session key frame")]
    SessionKey,
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: Kind, body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(body.len())
        .map_err(|_| FrameError::Write(std::io::Error::other("frame too long")))?;
    let mut head = [0u8; 5];
    head[0] = kind as u8;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head).map_err(FrameError::Write)?;
    w.write_all(body).map_err(FrameError::Write)?;
    w.flush().map_err(FrameError::Write)
}

/// Reads one frame whose body is at most `max` bytes, into a zeroizing
/// buffer (frames carry keys and plaintext).
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<(Kind, Zeroizing<Vec<u8>>), FrameError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).map_err(FrameError::Read)?;
    let kind = Kind::from_byte(head[0]).ok_or(FrameError::Kind(head[0]))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if u64::from(len) > max as u64 {
        return Err(FrameError::TooLong(u64::from(len), max));
    }
    let mut body = Zeroizing::new(vec![0u8; len as usize]);
    r.read_exact(&mut body).map_err(FrameError::Read)?;
    Ok((kind, body))
}

/// Session key frame body: algorithm byte, then the key.
pub fn session_key_body(sk: &SessionKey) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(1 + sk.key.len()));
    v.push(sk.algo);
    v.extend_from_slice(&sk.key);
    v
}

fn session_key_from(body: &[u8]) -> Result<SessionKey, FrameError> {
    match body.split_first() {
        Some((&algo, key)) if !key.is_empty() && key.len() <= 64 => Ok(SessionKey {
            algo,
            key: Zeroizing::new(key.to_vec()),
        }),
        _ => Err(FrameError::SessionKey),
    }
}

/// How one `serve_open` exchange ended (for the child's exit status).
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// Plaintext was sent.
    Opened,
    /// A refusal line was sent.
    Refused,
    /// The parent aborted after the Esk frame.
    Aborted,
}

/// The child's side of the exchange above, on `r`/`w` (its stdin and
/// stdout in the sandbox).
pub fn serve_open(
    r: &mut impl Read,
    w: &mut impl Write,
    limits: Limits,
) -> Result<Served, FrameError> {
    let (kind, ciphertext) = read_frame(r, limits.max_ciphertext)?;
    if kind != Kind::Ciphertext {
        return Err(FrameError::Unexpected("Ciphertext", kind));
    }
    let esk = match split(&ciphertext, limits.max_ciphertext) {
        Ok(esk) => esk,
        Err(e) => {
            write_frame(w, Kind::Refused, e.to_string().as_bytes())?;
            return Ok(Served::Refused);
        }
    };
    write_frame(w, Kind::Esk, &esk)?;
    let (kind, body) = read_frame(r, 65)?;
    let sk = match kind {
        Kind::SessionKey => session_key_from(&body)?,
        Kind::Abort => return Ok(Served::Aborted),
        other => return Err(FrameError::Unexpected("SessionKey", other)),
    };
    match open(&ciphertext, &sk, limits) {
        Ok(text) => {
            write_frame(w, Kind::Plaintext, text.as_bytes())?;
            Ok(Served::Opened)
        }
        Err(e) => {
            write_frame(w, Kind::Refused, e.to_string().as_bytes())?;
            Ok(Served::Refused)
        }
    }
}

/// What the parent gets back from the child for one document.
#[derive(Debug)]
pub enum Outcome {
    Text(Plaintext),
    Refused(String),
}

/// Reads the child's final answer (after the session key was sent).
pub fn read_outcome(r: &mut impl Read, max_plaintext: usize) -> Result<Outcome, FrameError> {
    let (kind, body) = read_frame(r, max_plaintext.max(4096))?;
    match kind {
        Kind::Plaintext => {
            let mut t = Plaintext::with_capacity(body.len());
            t.extend(&body);
            Ok(Outcome::Text(t))
        }
        Kind::Refused => Ok(Outcome::Refused(
            String::from_utf8_lossy(&body).into_owned(),
        )),
        other => Err(FrameError::Unexpected("Plaintext or Refused", other)),
    }
}
