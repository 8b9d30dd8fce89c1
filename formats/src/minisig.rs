//! minisign key and signature files: parse, write, sign, verify.
//!
//! Formats (as written by the stock `minisign` 0.11 tool):
//! - public key: `untrusted comment: ...` line, then base64 of
//!   `"Ed" || key_id[8] || ed25519_public_key[32]`;
//! - secret key: `untrusted comment: ...` line, then base64 of
//!   `"Ed" || kdf[2] || "B2" || salt[32] || opslimit[8 LE] || memlimit[8 LE] ||
//!    (key_id[8] || seed+public[64] || blake2b-256 checksum[32])`, the last
//!   104 bytes XORed with scrypt(passphrase) when kdf is `"Sc"`, plain when
//!   kdf is two zero bytes (`minisign -W`);
//! - signature: `untrusted comment: ...`, base64 of `"ED" || key_id[8] ||
//!   sig[64]` where `sig` signs BLAKE2b-512(data), `trusted comment: ...`,
//!   base64 of the global signature over `sig || trusted_comment`.
//!
//! Only prehashed (`ED`) signatures are accepted. Legacy `Ed` signatures (over
//! the raw data) are refused with their own reason. Verification uses
//! ed25519-dalek's `verify_strict`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ed25519_dalek::{Signature as EdSignature, Signer as _, SigningKey, VerifyingKey};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Largest key or signature file we read (minisign's own are < 1 KiB).
pub const MAX_FILE_LEN: usize = 8 * 1024;
/// Longest trusted comment accepted (minisign's limit is 1024 bytes).
pub const MAX_TRUSTED_COMMENT_LEN: usize = 1024;

const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
const ALG_ED: [u8; 2] = *b"Ed";
const ALG_PREHASHED: [u8; 2] = *b"ED";
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHK_BLAKE2B: [u8; 2] = *b"B2";
/// libsodium's `crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_SENSITIVE`, minisign's default.
const OPSLIMIT_SENSITIVE: u64 = 33_554_432;
/// libsodium's `crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_SENSITIVE`, minisign's default.
const MEMLIMIT_SENSITIVE: u64 = 1_073_741_824;
/// Refuse secret keys whose scrypt parameters would need more memory than this.
const MAX_MEMLIMIT: u64 = 4 * MEMLIMIT_SENSITIVE;

const PK_LEN: usize = 2 + 8 + 32;
const SIG_LEN: usize = 2 + 8 + 64;
const KEYNUM_SK_LEN: usize = 8 + 64 + 32;
const SK_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + KEYNUM_SK_LEN;

/// Errors of this module; each names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum MinisigError {
    #[error("{what} is larger than {MAX_FILE_LEN} bytes")]
    TooLarge { what: &'static str },
    #[error("{what} is not UTF-8 text")]
    NotText { what: &'static str },
    #[error("{what}: line {line} missing")]
    MissingLine { what: &'static str, line: usize },
    #[error("{what}: first line does not start with `untrusted comment: `")]
    MissingUntrustedComment { what: &'static str },
    #[error("{what}: third line does not start with `trusted comment: `")]
    MissingTrustedComment { what: &'static str },
    #[error("{what}: trusted comment longer than {MAX_TRUSTED_COMMENT_LEN} bytes")]
    TrustedCommentTooLong { what: &'static str },
    #[error("{what}: trusted comment contains a line break")]
    TrustedCommentNewline { what: &'static str },
    #[error("{what}: unexpected text after the last line")]
    TrailingData { what: &'static str },
    #[error("{what}: invalid base64")]
    Base64 { what: &'static str },
    #[error("{what}: decoded length {len}, expected {expected}")]
    Length {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("{what}: unsupported algorithm \"{}\"", crate::escape::text(alg))]
    Algorithm { what: &'static str, alg: String },
    #[error("legacy `Ed` signature (not prehashed) refused; sign with prehashing (minisign 0.11 default, or -H)")]
    LegacySignature,
    #[error("public key: not a valid Ed25519 point")]
    PublicKeyPoint,
    #[error("secret key: unsupported key derivation \"{}\"", crate::escape::text(.0))]
    Kdf(String),
    #[error("secret key: unsupported checksum algorithm \"{}\"", crate::escape::text(.0))]
    ChecksumAlgorithm(String),
    #[error(
        "secret key: scrypt parameters out of range (opslimit {opslimit}, memlimit {memlimit})"
    )]
    KdfParams { opslimit: u64, memlimit: u64 },
    #[error("secret key: scrypt failed: {0}")]
    Scrypt(String),
    #[error("secret key: wrong passphrase or corrupt key (checksum mismatch)")]
    Checksum,
    #[error("secret key: public half does not match the seed")]
    KeyPair,
    #[error("secret key is encrypted: a passphrase is needed")]
    PassphraseNeeded,
    #[error("signature key id {sig} does not match public key id {key}")]
    KeyIdMismatch { sig: KeyId, key: KeyId },
    #[error("signature does not verify (data changed or wrong key)")]
    BadSignature,
    #[error("trusted comment signature does not verify (comment edited)")]
    BadGlobalSignature,
    #[error("random number generator failed: {0}")]
    Random(String),
}

type Result<T> = std::result::Result<T, MinisigError>;

/// minisign key id: 8 random bytes, shown like minisign does (hex of the
/// little-endian u64, upper case).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A minisign public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: KeyId,
    pub key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.key_id, self.to_base64())
    }
}

impl PublicKey {
    /// Parses a public key file, or a bare base64 key line (as `minisign -P`).
    pub fn parse(text: &str) -> Result<Self> {
        const WHAT: &str = "public key";
        check_len(text, WHAT)?;
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let first = lines.next().ok_or(MinisigError::MissingLine {
            what: WHAT,
            line: 1,
        })?;
        let b64 = if first.starts_with(UNTRUSTED_PREFIX) {
            lines.next().ok_or(MinisigError::MissingLine {
                what: WHAT,
                line: 2,
            })?
        } else {
            first
        };
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(MinisigError::TrailingData { what: WHAT });
        }
        Self::from_base64(b64.trim())
    }

    /// Parses the base64 line of a public key.
    pub fn from_base64(b64: &str) -> Result<Self> {
        const WHAT: &str = "public key";
        let raw = decode_exact::<PK_LEN>(b64, WHAT)?;
        if raw[..2] != ALG_ED {
            return Err(alg_error(WHAT, &raw[..2]));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&raw[2..10]);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&raw[10..42]);
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| MinisigError::PublicKeyPoint)?;
        Ok(Self {
            key_id: KeyId(key_id),
            key,
        })
    }

    /// The base64 line (`RW...`).
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(PK_LEN);
        raw.extend_from_slice(&ALG_ED);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(self.key.as_bytes());
        B64.encode(raw)
    }

    /// The public key file as minisign writes it.
    pub fn to_file(&self) -> String {
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
            self.key_id,
            self.to_base64()
        )
    }

    /// The raw 32 bytes of the Ed25519 key (the identity used for thresholds).
    pub fn key_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Verifies a parsed signature over `data`: key id, prehashed signature
    /// and the global signature over the trusted comment.
    pub fn verify(&self, sig: &SignatureFile, data: &[u8]) -> Result<()> {
        if sig.key_id != self.key_id {
            return Err(MinisigError::KeyIdMismatch {
                sig: sig.key_id,
                key: self.key_id,
            });
        }
        let prehash = Blake2b512::digest(data);
        self.key
            .verify_strict(&prehash, &EdSignature::from_bytes(&sig.signature))
            .map_err(|_| MinisigError::BadSignature)?;
        let mut global = Vec::with_capacity(64 + sig.trusted_comment.len());
        global.extend_from_slice(&sig.signature);
        global.extend_from_slice(sig.trusted_comment.as_bytes());
        self.key
            .verify_strict(&global, &EdSignature::from_bytes(&sig.global_signature))
            .map_err(|_| MinisigError::BadGlobalSignature)
    }
}

/// A parsed minisign signature file (always prehashed `ED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureFile {
    pub untrusted_comment: String,
    pub key_id: KeyId,
    pub signature: [u8; 64],
    pub trusted_comment: String,
    pub global_signature: [u8; 64],
}

impl SignatureFile {
    /// Parses a `.minisig` file. Legacy `Ed` signatures are refused.
    pub fn parse(text: &str) -> Result<Self> {
        const WHAT: &str = "signature";
        check_len(text, WHAT)?;
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let mut next = |line| {
            lines
                .next()
                .ok_or(MinisigError::MissingLine { what: WHAT, line })
        };
        let l1 = next(1)?;
        let untrusted_comment = l1
            .strip_prefix(UNTRUSTED_PREFIX)
            .ok_or(MinisigError::MissingUntrustedComment { what: WHAT })?
            .to_owned();
        let raw = decode_exact::<SIG_LEN>(next(2)?.trim(), WHAT)?;
        match [raw[0], raw[1]] {
            ALG_PREHASHED => {}
            ALG_ED => return Err(MinisigError::LegacySignature),
            _ => return Err(alg_error(WHAT, &raw[..2])),
        }
        let trusted_comment = next(3)?
            .strip_prefix(TRUSTED_PREFIX)
            .ok_or(MinisigError::MissingTrustedComment { what: WHAT })?
            .to_owned();
        if trusted_comment.len() > MAX_TRUSTED_COMMENT_LEN {
            return Err(MinisigError::TrustedCommentTooLong { what: WHAT });
        }
        let global_signature = decode_exact::<64>(next(4)?.trim(), "global signature")?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(MinisigError::TrailingData { what: WHAT });
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&raw[2..10]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&raw[10..74]);
        Ok(Self {
            untrusted_comment,
            key_id: KeyId(key_id),
            signature,
            trusted_comment,
            global_signature,
        })
    }

    /// The file text, as minisign writes it.
    pub fn to_file(&self) -> String {
        let mut raw = Vec::with_capacity(SIG_LEN);
        raw.extend_from_slice(&ALG_PREHASHED);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            B64.encode(raw),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }
}

/// How a secret key file is protected on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// scrypt-derived keystream (minisign's default), with minisign's default cost.
    Scrypt,
    /// Unencrypted (like `minisign -W`): anyone who reads the file can sign.
    Unencrypted,
}

/// A decrypted minisign secret key.
pub struct SecretKey {
    pub key_id: KeyId,
    signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.key_id)
    }
}

impl SecretKey {
    /// Generates a fresh key pair with a random key id.
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        random(seed.as_mut_slice())?;
        let mut key_id = [0u8; 8];
        random(&mut key_id)?;
        Ok(Self {
            key_id: KeyId(key_id),
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// True when the secret key file needs a passphrase to open.
    pub fn is_encrypted(text: &str) -> Result<bool> {
        let raw = Self::decode_file(text)?;
        Ok(raw[2..4] == KDF_SCRYPT)
    }

    fn decode_file(text: &str) -> Result<Zeroizing<[u8; SK_LEN]>> {
        const WHAT: &str = "secret key";
        check_len(text, WHAT)?;
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let first = lines.next().ok_or(MinisigError::MissingLine {
            what: WHAT,
            line: 1,
        })?;
        if !first.starts_with(UNTRUSTED_PREFIX) {
            return Err(MinisigError::MissingUntrustedComment { what: WHAT });
        }
        let b64 = lines.next().ok_or(MinisigError::MissingLine {
            what: WHAT,
            line: 2,
        })?;
        let raw = Zeroizing::new(decode_exact::<SK_LEN>(b64.trim(), WHAT)?);
        if raw[..2] != ALG_ED {
            return Err(alg_error(WHAT, &raw[..2]));
        }
        let kdf = [raw[2], raw[3]];
        if kdf != KDF_SCRYPT && kdf != KDF_NONE {
            return Err(MinisigError::Kdf(
                String::from_utf8_lossy(&kdf).into_owned(),
            ));
        }
        if raw[4..6] != CHK_BLAKE2B {
            return Err(MinisigError::ChecksumAlgorithm(
                String::from_utf8_lossy(&raw[4..6]).into_owned(),
            ));
        }
        Ok(raw)
    }

    /// Parses and, if encrypted, decrypts a secret key file. `passphrase` is
    /// called only for encrypted keys.
    pub fn parse(
        text: &str,
        passphrase: impl FnOnce() -> Option<Zeroizing<String>>,
    ) -> Result<Self> {
        let raw = Self::decode_file(text)?;
        let mut keynum = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
        keynum.copy_from_slice(&raw[SK_LEN - KEYNUM_SK_LEN..]);
        if raw[2..4] == KDF_SCRYPT {
            let pass = passphrase().ok_or(MinisigError::PassphraseNeeded)?;
            let mut salt = [0u8; 32];
            salt.copy_from_slice(&raw[6..38]);
            let ops =
                u64::from_le_bytes(raw[38..46].try_into().map_err(|_| MinisigError::Checksum)?);
            let mem =
                u64::from_le_bytes(raw[46..54].try_into().map_err(|_| MinisigError::Checksum)?);
            let stream = scrypt_stream(pass.as_bytes(), &salt, ops, mem)?;
            for (b, s) in keynum.iter_mut().zip(stream.iter()) {
                *b ^= s;
            }
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&keynum[..8]);
        let mut pair = Zeroizing::new([0u8; 64]);
        pair.copy_from_slice(&keynum[8..72]);
        let expected = checksum(&key_id, &pair);
        // `minisign -W` leaves the checksum of unencrypted keys zeroed; the
        // seed/public-key consistency check below still applies.
        let unchecked = raw[2..4] == KDF_NONE && keynum[72..].iter().all(|&b| b == 0);
        if !unchecked && expected[..] != keynum[72..] {
            return Err(MinisigError::Checksum);
        }
        let signing = SigningKey::from_keypair_bytes(&pair).map_err(|_| MinisigError::KeyPair)?;
        Ok(Self {
            key_id: KeyId(key_id),
            signing,
        })
    }

    /// Writes the secret key file (minisign format). With
    /// [`Protection::Scrypt`] the passphrase encrypts it with minisign's
    /// default scrypt cost (about 1 GiB of memory, as minisign itself).
    pub fn to_file(&self, protection: Protection, passphrase: &[u8]) -> Result<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(SK_LEN));
        raw.extend_from_slice(&ALG_ED);
        let mut salt = [0u8; 32];
        random(&mut salt)?;
        let (kdf, ops, mem) = match protection {
            Protection::Scrypt => (KDF_SCRYPT, OPSLIMIT_SENSITIVE, MEMLIMIT_SENSITIVE),
            Protection::Unencrypted => (KDF_NONE, 0, 0),
        };
        raw.extend_from_slice(&kdf);
        raw.extend_from_slice(&CHK_BLAKE2B);
        raw.extend_from_slice(&salt);
        raw.extend_from_slice(&ops.to_le_bytes());
        raw.extend_from_slice(&mem.to_le_bytes());
        let pair = Zeroizing::new(self.signing.to_keypair_bytes());
        let mut keynum = Zeroizing::new(Vec::with_capacity(KEYNUM_SK_LEN));
        keynum.extend_from_slice(&self.key_id.0);
        keynum.extend_from_slice(pair.as_slice());
        keynum.extend_from_slice(&checksum(&self.key_id.0, &pair));
        if protection == Protection::Scrypt {
            let stream = scrypt_stream(passphrase, &salt, ops, mem)?;
            for (b, s) in keynum.iter_mut().zip(stream.iter()) {
                *b ^= s;
            }
        }
        raw.extend_from_slice(&keynum);
        let comment = match protection {
            Protection::Scrypt => "minisign encrypted secret key",
            Protection::Unencrypted => "minisign secret key (unencrypted)",
        };
        Ok(format!(
            "{UNTRUSTED_PREFIX}{comment}\n{}\n",
            B64.encode(raw.as_slice())
        ))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.signing.verifying_key(),
        }
    }

    /// Signs `data` (prehashed) with the given trusted comment.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<SignatureFile> {
        if trusted_comment.len() > MAX_TRUSTED_COMMENT_LEN {
            return Err(MinisigError::TrustedCommentTooLong { what: "signature" });
        }
        if trusted_comment.contains(['\n', '\r']) {
            return Err(MinisigError::TrustedCommentNewline { what: "signature" });
        }
        let prehash = Blake2b512::digest(data);
        let signature = self.signing.sign(&prehash).to_bytes();
        let mut global = Vec::with_capacity(64 + trusted_comment.len());
        global.extend_from_slice(&signature);
        global.extend_from_slice(trusted_comment.as_bytes());
        let global_signature = self.signing.sign(&global).to_bytes();
        Ok(SignatureFile {
            untrusted_comment: "signature from minisign secret key".to_owned(),
            key_id: self.key_id,
            signature,
            trusted_comment: trusted_comment.to_owned(),
            global_signature,
        })
    }
}

/// BLAKE2b-256 over `"Ed" || key_id || seed+public`, minisign's key checksum.
fn checksum(key_id: &[u8; 8], pair: &[u8; 64]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(ALG_ED);
    h.update(key_id);
    h.update(pair);
    h.finalize().into()
}

/// libsodium's `crypto_pwhash_scryptsalsa208sha256` (opslimit/memlimit →
/// N, r, p as its `pickparams`), producing the 104-byte keystream.
fn scrypt_stream(
    pass: &[u8],
    salt: &[u8; 32],
    opslimit: u64,
    memlimit: u64,
) -> Result<Zeroizing<[u8; KEYNUM_SK_LEN]>> {
    let bad = MinisigError::KdfParams { opslimit, memlimit };
    if memlimit > MAX_MEMLIMIT {
        return Err(bad);
    }
    let ops = opslimit.max(32_768);
    let r: u64 = 8;
    let (log_n, p) = if ops < memlimit / 32 {
        let max_n = ops / (r * 4);
        (log2_below(max_n), 1)
    } else {
        let max_n = memlimit / (r * 128);
        let log_n = log2_below(max_n);
        let max_rp = ((ops / 4) >> log_n).min(0x3fff_ffff);
        (log_n, max_rp / r)
    };
    let p = u32::try_from(p.max(1)).map_err(|_| MinisigError::KdfParams { opslimit, memlimit })?;
    let params =
        scrypt::Params::new(log_n, 8, p, 32).map_err(|e| MinisigError::Scrypt(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
    scrypt::scrypt(pass, salt, &params, out.as_mut_slice())
        .map_err(|e| MinisigError::Scrypt(e.to_string()))?;
    Ok(out)
}

/// Smallest `n ≥ 1` with `2^n > max_n / 2` (libsodium's loop), capped at 62.
fn log2_below(max_n: u64) -> u8 {
    let mut n: u8 = 1;
    while n < 63 {
        if (1u64 << n) > max_n / 2 {
            break;
        }
        n += 1;
    }
    n
}

fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| MinisigError::Random(e.to_string()))
}

fn check_len(text: &str, what: &'static str) -> Result<()> {
    if text.len() > MAX_FILE_LEN {
        return Err(MinisigError::TooLarge { what });
    }
    Ok(())
}

fn decode_exact<const N: usize>(b64: &str, what: &'static str) -> Result<[u8; N]> {
    let mut v = B64.decode(b64).map_err(|_| MinisigError::Base64 { what })?;
    let out: std::result::Result<[u8; N], _> = v.as_slice().try_into();
    let len = v.len();
    v.zeroize();
    out.map_err(|_| MinisigError::Length {
        what,
        len,
        expected: N,
    })
}

fn alg_error(what: &'static str, alg: &[u8]) -> MinisigError {
    MinisigError::Algorithm {
        what,
        alg: String::from_utf8_lossy(alg).into_owned(),
    }
}

/// Parses a signature file from raw bytes (must be UTF-8).
pub fn parse_signature_bytes(bytes: &[u8]) -> Result<SignatureFile> {
    if bytes.len() > MAX_FILE_LEN {
        return Err(MinisigError::TooLarge { what: "signature" });
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| MinisigError::NotText { what: "signature" })?;
    SignatureFile::parse(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn sign_verify_roundtrip() {
        let sk = SecretKey::generate().unwrap();
        let pk = sk.public_key();
        let sig = sk.sign(b"hello", "timestamp:1\tfile:x").unwrap();
        let parsed = SignatureFile::parse(&sig.to_file()).unwrap();
        assert_eq!(parsed, sig);
        pk.verify(&parsed, b"hello").unwrap();
        assert!(matches!(
            pk.verify(&parsed, b"hellO"),
            Err(MinisigError::BadSignature)
        ));
        let mut edited = parsed.clone();
        edited.trusted_comment.push('!');
        assert!(matches!(
            pk.verify(&edited, b"hello"),
            Err(MinisigError::BadGlobalSignature)
        ));
        let other = SecretKey::generate().unwrap().public_key();
        assert!(matches!(
            other.verify(&parsed, b"hello"),
            Err(MinisigError::KeyIdMismatch { .. })
        ));
        let same_id = PublicKey {
            key_id: pk.key_id,
            key: other.key,
        };
        assert!(matches!(
            same_id.verify(&parsed, b"hello"),
            Err(MinisigError::BadSignature)
        ));
    }

    #[test]
    fn public_key_roundtrip() {
        let pk = SecretKey::generate().unwrap().public_key();
        assert_eq!(PublicKey::parse(&pk.to_file()).unwrap(), pk);
        assert_eq!(PublicKey::parse(&pk.to_base64()).unwrap(), pk);
        assert!(matches!(
            PublicKey::parse("untrusted comment: x\nRWQ"),
            Err(MinisigError::Base64 { .. } | MinisigError::Length { .. })
        ));
    }

    #[test]
    fn legacy_signature_refused() {
        let sk = SecretKey::generate().unwrap();
        let sig = sk.sign(b"x", "c").unwrap();
        let text = sig.to_file();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut raw = B64.decode(&lines[1]).unwrap();
        raw[1] = b'd';
        lines[1] = B64.encode(raw);
        let err = SignatureFile::parse(&lines.join("\n")).unwrap_err();
        assert!(matches!(err, MinisigError::LegacySignature));
        assert!(err.to_string().contains("legacy `Ed` signature"));
    }

    #[test]
    fn secret_key_unencrypted_roundtrip() {
        let sk = SecretKey::generate().unwrap();
        let file = sk.to_file(Protection::Unencrypted, b"").unwrap();
        assert!(!SecretKey::is_encrypted(&file).unwrap());
        let back = SecretKey::parse(&file, || None).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
    }

    #[test]
    fn scrypt_params_match_libsodium() {
        // minisign's defaults → N = 2^20, r = 8, p = 1 (1 GiB).
        let ops = OPSLIMIT_SENSITIVE;
        let mem = MEMLIMIT_SENSITIVE;
        assert!(ops >= mem / 32);
        let log_n = log2_below(mem / (8 * 128));
        assert_eq!(log_n, 20);
        assert_eq!(((ops / 4) >> log_n) / 8, 1);
    }

    #[test]
    fn truncated_and_garbage_inputs_fail_cleanly() {
        for t in [
            "",
            "untrusted comment: a",
            "x\ny\nz\nw",
            "untrusted comment: a\n!!!\n",
        ] {
            assert!(SignatureFile::parse(t).is_err());
            assert!(PublicKey::parse(t).is_err());
            assert!(SecretKey::parse(t, || None).is_err());
        }
    }
}
