//! The sandboxed half of opening a document: the whole ciphertext and the
//! session key in, the document's UTF-8 text out. Never holds the secret
//! key. Accepts SEIPD v1 with its MDC and GnuPG's OCB packet (type 20,
//! authenticated); refuses everything else with a one-line reason.

use pgp::composed::{DecryptionOptions, Edata, Message, TheRing};
use pgp::types::{Seipdv1ReadMode, Tag};
use thiserror::Error;
use zeroize::Zeroizing;

use super::guard::no_panic;
use super::packets::one_line;
use super::secret::{Plaintext, SessionKey};

/// Size bounds of one job (policy values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest ciphertext read.
    pub max_ciphertext: usize,
    /// Largest plaintext accepted after decompression.
    pub max_plaintext: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ciphertext: super::DEFAULT_MAX_CIPHERTEXT,
            max_plaintext: super::DEFAULT_MAX_PLAINTEXT,
        }
    }
}

/// Why a document was not opened.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("refused: the file is larger than {0} bytes")]
    TooLarge(usize),
    #[error("refused: not an OpenPGP message ({0})")]
    Parse(String),
    #[error("refused: signed but not encrypted (a signed-only message)")]
    SignedOnly,
    #[error("refused: not encrypted (a plain OpenPGP message)")]
    NotEncrypted,
    #[error("refused: no integrity protection (MDC)")]
    NoMdc,
    #[error("refused: SEIPD v2 is not accepted (v1 with MDC, or GnuPG OCB)")]
    SeipdV2,
    #[error("refused: integrity check failed: the ciphertext was modified or truncated")]
    Integrity,
    #[error("refused: decryption failed ({0})")]
    Decrypt(String),
    #[error("refused: compressed more than once")]
    NestedCompression,
    #[error("refused: unsupported compression ({0})")]
    Compression(String),
    #[error("refused: the message does not end in a literal data packet ({0})")]
    NotLiteral(String),
    #[error("refused: decompressed size exceeds {0} bytes")]
    Bomb(usize),
    #[error("refused: the document is not UTF-8 text (binary data at byte {0})")]
    NotText(usize),
    #[error("refused: the OpenPGP parser failed on this message")]
    Panic,
}

/// Decrypts `ciphertext` (binary or armored) with `session_key` and returns
/// its literal data, which must be UTF-8 text without NUL bytes.
pub fn open(
    ciphertext: &[u8],
    session_key: &SessionKey,
    limits: Limits,
) -> Result<Plaintext, OpenError> {
    if ciphertext.len() > limits.max_ciphertext {
        return Err(OpenError::TooLarge(limits.max_ciphertext));
    }
    let text = no_panic(
        || decrypt(ciphertext, session_key, limits),
        || OpenError::Panic,
    )?;
    check_text(text.as_bytes())?;
    Ok(text)
}

/// UTF-8 and no NUL: the first offending byte offset otherwise.
pub fn check_text(bytes: &[u8]) -> Result<(), OpenError> {
    let utf8_end = match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) => e.valid_up_to(),
    };
    let nul = bytes[..utf8_end].iter().position(|&b| b == 0);
    match nul {
        Some(n) => Err(OpenError::NotText(n)),
        None if utf8_end < bytes.len() => Err(OpenError::NotText(utf8_end)),
        None => Ok(()),
    }
}

/// Names an rPGP error after decryption started.
fn classify(e: impl std::fmt::Display) -> OpenError {
    let s = e.to_string();
    let l = s.to_ascii_lowercase();
    if l.contains("seipd v2") {
        OpenError::SeipdV2
    } else if l.contains("mdc")
        || l.contains("modification")
        || l.contains("authenticat")
        || l.contains("eof")
        || l.contains("fill whole buffer")
        || l.contains("truncat")
        || l.contains("too short")
        || l.contains("shorter than expected")
        || l.contains("decryption failed")
    {
        OpenError::Integrity
    } else if l.contains("compression") {
        OpenError::Compression(one_line(&s))
    } else {
        OpenError::Decrypt(one_line(&s))
    }
}

fn unencrypted(msg: Message<'_>) -> OpenError {
    match msg {
        Message::Signed { .. } => OpenError::SignedOnly,
        Message::Compressed { .. } => match msg.decompress() {
            Ok(inner) if inner.is_signed() => OpenError::SignedOnly,
            _ => OpenError::NotEncrypted,
        },
        _ => OpenError::NotEncrypted,
    }
}

fn decrypt(ciphertext: &[u8], sk: &SessionKey, limits: Limits) -> Result<Plaintext, OpenError> {
    let (msg, _) =
        Message::from_reader(ciphertext).map_err(|e| OpenError::Parse(one_line(&e.to_string())))?;
    let Message::Encrypted { edata, .. } = &msg else {
        return Err(unencrypted(msg));
    };
    match edata {
        Edata::SymEncryptedData { .. } => return Err(OpenError::NoMdc),
        Edata::SymEncryptedProtectedData { .. } | Edata::GnupgAeadData { .. } => {}
    }
    let ring = TheRing {
        session_keys: vec![sk.to_plain()],
        decrypt_options: DecryptionOptions::new()
            .enable_gnupg_aead()
            .set_seipdv1_read_mode(Seipdv1ReadMode::CheckFirst {
                max_message_size: limits.max_ciphertext,
            }),
        ..Default::default()
    };
    let (mut msg, _) = msg.decrypt_the_ring(ring, true).map_err(classify)?;
    if msg.is_compressed() {
        msg = msg.decompress().map_err(classify)?;
        if msg.is_compressed() {
            return Err(OpenError::NestedCompression);
        }
    }
    if msg.literal_data_header().is_none() {
        let what = match &msg {
            Message::Encrypted { edata, .. } => format!("{:?} inside", edata.tag()),
            Message::Compressed { .. } => format!("{:?}", Tag::CompressedData),
            _ => "no literal data".to_string(),
        };
        return Err(OpenError::NotLiteral(what));
    }
    read_bounded(&mut msg, limits.max_plaintext)
}

/// Reads the literal data, refusing more than `max` bytes.
fn read_bounded(r: &mut impl std::io::Read, max: usize) -> Result<Plaintext, OpenError> {
    let mut out = Plaintext::with_capacity(64 << 10);
    let mut chunk = Zeroizing::new(vec![0u8; 64 << 10]);
    loop {
        let n = r.read(&mut chunk).map_err(classify)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > max {
            return Err(OpenError::Bomb(max));
        }
        out.extend(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_check_table() {
        let cases: &[(&[u8], Result<(), OpenError>)] = &[
            (b"plain text\n", Ok(())),
            ("Grüße, 日本\n".as_bytes(), Ok(())),
            (b"", Ok(())),
            (b"abc\xffdef", Err(OpenError::NotText(3))),
            (b"ab\0c", Err(OpenError::NotText(2))),
            (b"\x89PNG\r\n", Err(OpenError::NotText(0))),
            ("é".as_bytes().split_at(1).0, Err(OpenError::NotText(0))),
        ];
        for (bytes, want) in cases {
            assert_eq!(&check_text(bytes), want, "{bytes:?}");
        }
    }
}
