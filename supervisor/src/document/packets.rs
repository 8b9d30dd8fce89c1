//! Cuts the session-key packets off the front of a message, for the
//! key-holding process. Runs where the document is parsed (the `open`
//! sandbox): it dearmors and reads packet headers with rPGP, so the key
//! holder receives only re-serialised PKESK packets, never the body.

use pgp::composed::{Esk, Message};
use pgp::ser::Serialize as _;
use thiserror::Error;

use super::guard::no_panic;

/// Why a message's session-key packets could not be taken out.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("refused: the file is larger than {0} bytes")]
    TooLarge(usize),
    #[error("refused: not an OpenPGP message ({0})")]
    Parse(String),
    #[error("refused: signed but not encrypted (a signed-only message)")]
    SignedOnly,
    #[error("refused: not encrypted (a plain OpenPGP message)")]
    NotEncrypted,
    #[error("refused: the message is not encrypted to any public key (password-only)")]
    NoPkesk,
    #[error("refused: the OpenPGP parser failed on this message")]
    Panic,
}

/// The leading session-key packets of an encrypted message, binary, each
/// with its packet header.
pub fn split(ciphertext: &[u8], max: usize) -> Result<Vec<u8>, SplitError> {
    if ciphertext.len() > max {
        return Err(SplitError::TooLarge(max));
    }
    no_panic(|| split_inner(ciphertext), || SplitError::Panic)
}

fn parse_err(e: impl std::fmt::Display) -> SplitError {
    SplitError::Parse(one_line(&e.to_string()))
}

/// The first line of `s`, at most 120 characters: reasons stay one line.
pub(crate) fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

fn split_inner(ciphertext: &[u8]) -> Result<Vec<u8>, SplitError> {
    let (msg, _) = Message::from_reader(ciphertext).map_err(parse_err)?;
    match msg {
        Message::Encrypted { esk, .. } => {
            let mut out = Vec::new();
            for e in esk
                .iter()
                .filter(|e| matches!(e, Esk::PublicKeyEncryptedSessionKey(_)))
            {
                e.to_writer(&mut out).map_err(parse_err)?;
            }
            if out.is_empty() {
                return Err(SplitError::NoPkesk);
            }
            Ok(out)
        }
        Message::Signed { .. } => Err(SplitError::SignedOnly),
        Message::Compressed { .. } => {
            // gpg --sign compresses first: look one layer in (headers
            // only, a few bytes of output) to name a signed-only message.
            let inner = msg.decompress().map_err(parse_err)?;
            if inner.is_signed() {
                Err(SplitError::SignedOnly)
            } else {
                Err(SplitError::NotEncrypted)
            }
        }
        Message::Literal { .. } => Err(SplitError::NotEncrypted),
    }
}
