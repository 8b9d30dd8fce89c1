//! C2SP signed notes (<https://c2sp.org/signed-note>, Go's
//! `golang.org/x/mod/sumdb/note`) with Ed25519 signatures: what checkpoints
//! are wrapped in, so that standard transparency-log tooling reads them.
//!
//! A note is a UTF-8 text ending in `\n`, then a blank line, then one line
//! per signature: `— <key name> <base64(key id (4 bytes) || signature)>`.
//! The signature covers the text up to and including its last `\n`.
//! Key id = first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key)
//! (0x01: the Ed25519 algorithm byte). A verifier key is written
//! `<name>+<key id, 8 hex>+<base64(0x01 || public key)>`.
//!
//! Written here rather than taken from the `signed_note` crate: that crate
//! turns on `ed25519-dalek`'s `rand_core` feature, which would change an
//! already-compiled crate's feature set and rebuild the inference chain.

use base64::prelude::{Engine as _, BASE64_STANDARD};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Algorithm byte of Ed25519 in signed notes.
pub const ALG_ED25519: u8 = 0x01;
/// Most signature lines read from one note.
pub const MAX_SIGNATURES: usize = 100;
/// Largest note read.
pub const MAX_NOTE_LEN: usize = 1024 * 1024;
const SIG_PREFIX: &str = "\u{2014} ";

/// Errors of this module; each names the failing step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("key name {0:?} is empty or holds a space, `+` or a control character")]
    Name(String),
    #[error("verifier key is not name+hex8+base64(0x01||key): {0}")]
    VerifierKey(&'static str),
    #[error("verifier key's id {given} does not match its key (want {want})")]
    VerifierKeyId { given: String, want: String },
    #[error("note is larger than 1 MiB")]
    TooLarge,
    #[error("note is not UTF-8 text without control characters")]
    Text,
    #[error("note has no blank line before its signatures")]
    NoSignatures,
    #[error("signature line {0} is malformed")]
    SignatureLine(usize),
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    #[error("no signature by {want} (signed by: {found})")]
    NotSignedBy { want: String, found: String },
    #[error("random key: {0}")]
    Random(String),
}

type Result<T> = std::result::Result<T, NoteError>;

/// Key names: non-empty, no Unicode white space, no `+`, no control character.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(NoteError::Name(name.to_owned()))
    }
}

/// The 4-byte key id of an Ed25519 key under `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A public key that checks note signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self> {
        validate_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, key.as_bytes()),
            key,
        })
    }

    /// Parses `name+hex8+base64(0x01 || key)` (surrounding white space ignored).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        // Names never hold `+`; base64 may (as in Go's note.NewVerifier).
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::VerifierKey("not three `+`-separated parts"));
        };
        validate_name(name)?;
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::VerifierKey("key id is not 8 hex digits"));
        }
        let raw = BASE64_STANDARD
            .decode(key)
            .map_err(|_| NoteError::VerifierKey("key is not base64"))?;
        let [alg, rest @ ..] = raw.as_slice() else {
            return Err(NoteError::VerifierKey("key is empty"));
        };
        if *alg != ALG_ED25519 {
            return Err(NoteError::VerifierKey("algorithm is not Ed25519 (0x01)"));
        }
        let pk: [u8; 32] = rest
            .try_into()
            .map_err(|_| NoteError::VerifierKey("Ed25519 key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&pk)
            .map_err(|_| NoteError::VerifierKey("not an Ed25519 point"))?;
        let v = Self::new(name, key)?;
        let want = crate::audit::entry::hex(&v.id);
        if !id.eq_ignore_ascii_case(&want) {
            return Err(NoteError::VerifierKeyId {
                given: id.to_owned(),
                want,
            });
        }
        Ok(v)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name+hex8` as shown in messages.
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, crate::audit::entry::hex(&self.id))
    }

    /// Checks that `note` carries a valid signature by this key; returns
    /// the signed text. Signatures by other keys are ignored (a note may be
    /// cosigned), but at least this key's must be there and verify.
    pub fn open<'a>(&self, note: &'a [u8]) -> Result<&'a str> {
        let (text, sigs) = split(note)?;
        let mut found = Vec::new();
        for sig in sigs {
            if sig.name == self.name && sig.id == self.id {
                let s = ed25519_dalek::Signature::from_slice(&sig.sig)
                    .map_err(|_| NoteError::BadSignature(self.label()))?;
                return self
                    .key
                    .verify_strict(text.as_bytes(), &s)
                    .map(|()| text)
                    .map_err(|_| NoteError::BadSignature(self.label()));
            }
            found.push(format!(
                "{}+{}",
                sig.name,
                crate::audit::entry::hex(&sig.id)
            ));
        }
        Err(NoteError::NotSignedBy {
            want: self.label(),
            found: if found.is_empty() {
                "nobody".into()
            } else {
                found.join(", ")
            },
        })
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}", self.label(), BASE64_STANDARD.encode(raw))
    }
}

/// A secret key that signs notes (the appliance's audit key).
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    /// From a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self> {
        validate_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// A new random key.
    pub fn generate(name: &str) -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| NoteError::Random(e.to_string()))?;
        Self::from_seed(name, &seed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        let key = self.key.verifying_key();
        NoteVerifier {
            name: self.name.clone(),
            id: key_id(&self.name, key.as_bytes()),
            key,
        }
    }

    /// Signs `text` (must be a valid note text ending in `\n`): returns the
    /// whole note.
    pub fn sign(&self, text: &str) -> Result<String> {
        if !text.ends_with('\n') || !valid_text(text) {
            return Err(NoteError::Text);
        }
        let sig = self.key.sign(text.as_bytes());
        let mut raw = key_id(&self.name, self.key.verifying_key().as_bytes()).to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            BASE64_STANDARD.encode(raw)
        ))
    }
}

struct Sig<'a> {
    name: &'a str,
    id: [u8; 4],
    sig: Vec<u8>,
}

fn valid_text(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\n')
}

/// Splits a note into its text and its parsed signature lines.
fn split(note: &[u8]) -> Result<(&str, Vec<Sig<'_>>)> {
    if note.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLarge);
    }
    let s = std::str::from_utf8(note).map_err(|_| NoteError::Text)?;
    if !valid_text(s) || !s.ends_with('\n') {
        return Err(NoteError::Text);
    }
    let i = s.rfind("\n\n").ok_or(NoteError::NoSignatures)?;
    let (text, sig_block) = (&s[..=i], &s[i + 2..]);
    let mut sigs = Vec::new();
    for (n, line) in sig_block.lines().enumerate() {
        let bad = || NoteError::SignatureLine(n + 1);
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(bad)?;
        let (name, b64) = rest.split_once(' ').ok_or_else(bad)?;
        validate_name(name).map_err(|_| bad())?;
        let raw = BASE64_STANDARD.decode(b64).map_err(|_| bad())?;
        if raw.len() < 5 {
            return Err(bad());
        }
        sigs.push(Sig {
            name,
            id: [raw[0], raw[1], raw[2], raw[3]],
            sig: raw[4..].to_vec(),
        });
        if sigs.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
    }
    if sigs.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    Ok((text, sigs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    #[test]
    fn verifier_keys_with_plus_in_base64_round_trip() {
        // Seeds whose public key's base64 holds `+` (a third of all keys).
        let mut seen = 0;
        for b in 0u8..=255 {
            let signer = NoteSigner::from_seed("airlock-0123abcd", &[b; 32]).unwrap();
            let text = signer.verifier().to_string();
            if text.matches('+').count() > 2 {
                seen += 1;
                let back = NoteVerifier::parse(&text).unwrap();
                assert_eq!(back.to_string(), text);
            }
        }
        assert!(seen > 0, "no seed gave a `+` in base64");
    }

    use super::*;

    /// Go's note package test vector (golang.org/x/mod/sumdb/note,
    /// TestNewVerifier / TestOpen): key `PeterNeumann`, its verifier key
    /// string and a signed note.
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
then you don't know what your problem is.\n\
\n\
\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    /// `PRIVATE+KEY+PeterNeumann+c74f20a3+` followed by base64(0x01 || seed).
    const GO_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";

    #[test]
    fn reads_go_test_vector() {
        // Ed25519 is deterministic: our note is Go's, byte for byte.
        let raw = BASE64_STANDARD.decode(GO_SKEY_B64).unwrap();
        let signer = NoteSigner::from_seed("PeterNeumann", raw[1..].try_into().unwrap()).unwrap();
        let text = GO_NOTE.split("\n\n").next().unwrap().to_owned() + "\n";
        assert_eq!(signer.sign(&text).unwrap(), GO_NOTE);
        assert_eq!(signer.verifier().to_string(), GO_VKEY);
        let v = NoteVerifier::parse(GO_VKEY).unwrap();
        assert_eq!(v.to_string(), GO_VKEY);
        let text = v.open(GO_NOTE.as_bytes()).unwrap();
        assert!(text.starts_with("If you think"));
        let tampered = GO_NOTE.replace("answer", "Answer");
        assert_eq!(
            v.open(tampered.as_bytes()),
            Err(NoteError::BadSignature("PeterNeumann+c74f20a3".into()))
        );
    }

    #[test]
    fn signs_and_refuses_other_keys() {
        let a = NoteSigner::from_seed("airlock.local/x/audit", &[7; 32]).unwrap();
        let b = NoteSigner::from_seed("airlock.local/x/audit", &[8; 32]).unwrap();
        let note = a.sign("hello\n").unwrap();
        assert_eq!(a.verifier().open(note.as_bytes()).unwrap(), "hello\n");
        let err = b.verifier().open(note.as_bytes()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("no signature by {}", b.verifier().label())),
            "{err}"
        );
        assert!(err.contains(&a.verifier().label()), "{err}");
        let round = NoteVerifier::parse(&a.verifier().to_string()).unwrap();
        assert_eq!(round, a.verifier());
    }

    #[test]
    fn malformed_notes_and_keys_refused() {
        let a = NoteSigner::from_seed("n", &[7; 32]).unwrap();
        let v = a.verifier();
        let good = a.sign("x\n").unwrap();
        // (note, error)
        let cases: Vec<(String, NoteError)> = vec![
            ("x\n".into(), NoteError::NoSignatures),
            (good.trim_end().into(), NoteError::Text),
            (good.replace('x', "x\u{1b}"), NoteError::Text),
            (good.replace('\u{2014}', "-"), NoteError::SignatureLine(1)),
            (format!("{good}garbage\n"), NoteError::SignatureLine(2)),
        ];
        for (note, want) in cases {
            assert_eq!(v.open(note.as_bytes()), Err(want), "{note:?}");
        }
        let vk = v.to_string();
        assert!(NoteVerifier::parse(&vk.replacen('+', "+0", 1)).is_err());
        assert!(matches!(
            NoteVerifier::parse(&vk.replace(&vk[2..10], "00000000")),
            Err(NoteError::VerifierKeyId { .. })
        ));
        assert!(NoteSigner::from_seed("a b", &[0; 32]).is_err());
        assert!(a.sign("no newline").is_err());
    }
}
