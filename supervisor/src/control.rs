//! The control channel between PID 1 and a console child: one
//! `AF_UNIX`/`SOCK_SEQPACKET` socket pair per console, one message per
//! packet: a tag byte followed by UTF-8 text.
//!
//! console -> PID 1: `U` console is up (banner shown), `S` status request,
//! `P` poweroff, `R` reboot; audit requests (each answered by one `d`):
//! `A` + JSON draft (record this, `auditd::Draft`), `O` open the audit log
//! (just provisioned), `K` + `NAME ROLE SEEDHEX` (logged in: hold the audit
//! key, sign a checkpoint), `k` (logging out: sign a checkpoint, drop the
//! key when no console holds it), `C` sign a checkpoint now (export), `W`
//! is the log open and writable, `Q` a receipt for the last entry this
//! console recorded (`ok receipt SEQ checkpoint N` + `\n` + the receipt
//! text, `auditd::ReceiptAnswer`).
//! PID 1 -> console: `r` readiness line, `s` status text, `n` notice line
//! (asynchronous, e.g. `[usb] stick inserted: sdb (16 MiB)`), `d` answer to
//! an audit request: `ok[ DETAIL]` or `err REASON`.

use thiserror::Error;

/// Largest message either side sends.
pub const MAX_MSG: usize = 16 * 1024;

/// Messages from a console child to PID 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Up,
    Status,
    Poweroff,
    Reboot,
    /// Record this draft (JSON of `auditd::Draft`).
    Audit(String),
    /// Open (or create) the audit log: provisioning just wrote its key.
    AuditOpen,
    /// `NAME ROLE SEEDHEX`: an account logged in on this console.
    KeyHold(String),
    /// The login on this console ended.
    KeyDrop,
    /// Sign a checkpoint now.
    Checkpoint,
    /// Is the audit log open and healthy?
    AuditCheck,
    /// A receipt (entry, checkpoint signed after it, inclusion proof) for
    /// the last entry this console recorded with `A`.
    Receipt,
}

/// Messages from PID 1 to a console child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ready(String),
    Status(String),
    Notice(String),
    /// Answer to an audit request: `ok[ DETAIL]` or `err REASON`.
    Done(String),
}

/// Why a control message could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("empty control message")]
    Empty,
    #[error("unknown control message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("control message of {0} bytes exceeds {MAX_MSG}")]
    TooLong(usize),
    #[error("unexpected payload on a request")]
    Payload,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, text) = match self {
            Request::Up => (b'U', ""),
            Request::Status => (b'S', ""),
            Request::Poweroff => (b'P', ""),
            Request::Reboot => (b'R', ""),
            Request::Audit(t) => (b'A', t.as_str()),
            Request::AuditOpen => (b'O', ""),
            Request::KeyHold(t) => (b'K', t.as_str()),
            Request::KeyDrop => (b'k', ""),
            Request::Checkpoint => (b'C', ""),
            Request::AuditCheck => (b'W', ""),
            Request::Receipt => (b'Q', ""),
        };
        let mut v = Vec::with_capacity(text.len() + 1);
        v.push(tag);
        v.extend_from_slice(text.as_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Request, ControlError> {
        if b.len() > MAX_MSG {
            return Err(ControlError::TooLong(b.len()));
        }
        let (&tag, rest) = b.split_first().ok_or(ControlError::Empty)?;
        let text = || String::from_utf8(rest.to_vec()).map_err(|_| ControlError::Payload);
        let none = |r: Request| {
            if rest.is_empty() {
                Ok(r)
            } else {
                Err(ControlError::Payload)
            }
        };
        match tag {
            b'U' => none(Request::Up),
            b'S' => none(Request::Status),
            b'P' => none(Request::Poweroff),
            b'R' => none(Request::Reboot),
            b'O' => none(Request::AuditOpen),
            b'k' => none(Request::KeyDrop),
            b'C' => none(Request::Checkpoint),
            b'W' => none(Request::AuditCheck),
            b'Q' => none(Request::Receipt),
            b'A' => Ok(Request::Audit(text()?)),
            b'K' => Ok(Request::KeyHold(text()?)),
            t => Err(ControlError::UnknownTag(t)),
        }
    }
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, text) = match self {
            Reply::Ready(t) => (b'r', t),
            Reply::Status(t) => (b's', t),
            Reply::Notice(t) => (b'n', t),
            Reply::Done(t) => (b'd', t),
        };
        let mut v = Vec::with_capacity(text.len() + 1);
        v.push(tag);
        v.extend_from_slice(text.as_bytes());
        v.truncate(MAX_MSG);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Reply, ControlError> {
        if b.len() > MAX_MSG {
            return Err(ControlError::TooLong(b.len()));
        }
        let (&tag, rest) = b.split_first().ok_or(ControlError::Empty)?;
        let text = String::from_utf8_lossy(rest).into_owned();
        match tag {
            b'r' => Ok(Reply::Ready(text)),
            b's' => Ok(Reply::Status(text)),
            b'n' => Ok(Reply::Notice(text)),
            b'd' => Ok(Reply::Done(text)),
            t => Err(ControlError::UnknownTag(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for r in [
            Request::Up,
            Request::Status,
            Request::Poweroff,
            Request::Reboot,
            Request::Audit("{}".into()),
            Request::AuditOpen,
            Request::KeyHold("alice operator 00".into()),
            Request::KeyDrop,
            Request::Checkpoint,
            Request::AuditCheck,
            Request::Receipt,
        ] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        for r in [
            Reply::Ready("airlock: console ready".into()),
            Reply::Status("version: 0.1.0\n".into()),
            Reply::Notice("[usb] stick removed: sdb".into()),
            Reply::Done("ok 12".into()),
        ] {
            assert_eq!(Reply::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn bad_messages_are_refused() {
        assert_eq!(Request::decode(b""), Err(ControlError::Empty));
        assert_eq!(Request::decode(b"X"), Err(ControlError::UnknownTag(b'X')));
        assert_eq!(Request::decode(b"Sx"), Err(ControlError::Payload));
        assert_eq!(Request::decode(b"Q12"), Err(ControlError::Payload));
        assert_eq!(Request::decode(b"A\xff"), Err(ControlError::Payload));
        assert_eq!(Reply::decode(b"?hi"), Err(ControlError::UnknownTag(b'?')));
        let big = vec![b'n'; MAX_MSG + 1];
        assert_eq!(Reply::decode(&big), Err(ControlError::TooLong(MAX_MSG + 1)));
        assert_eq!(
            ControlError::UnknownTag(b'X').to_string(),
            "unknown control message tag 0x58"
        );
    }
}
