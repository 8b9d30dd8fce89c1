//! `identity/identity.json` on the state partition (format version 1):
//! accounts, public keys, wrapped and sealed secrets. Written atomically;
//! read-modify-write under an exclusive lock (`identity/.lock`) because the
//! consoles on ttyS0 and tty1 share it. `audit/audit.pub` holds the audit
//! key as a C2SP note verifier key string.

use super::kdf;
use super::pgpkey::KeyAlgo;
use airlock_formats::audit::entry::{validate_account, Role};
use airlock_formats::fsutil::{write_atomic, FsError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::Read as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Version written and the only one read.
pub const FORMAT_VERSION: u32 = 1;
/// Directory of the identity files under the state root.
pub const IDENTITY_DIR: &str = "identity";
/// The identity file in [`IDENTITY_DIR`].
pub const IDENTITY_FILE: &str = "identity.json";
/// Directory of the audit log under the state root.
pub const AUDIT_DIR: &str = "audit";
/// The audit verifier key in [`AUDIT_DIR`].
pub const AUDIT_PUB_FILE: &str = "audit.pub";
const LOCK_FILE: &str = ".lock";
/// Largest identity file read (RSA keys and many accounts stay far below).
pub const MAX_FILE_LEN: u64 = 4 << 20;

/// What went wrong reading or writing the identity.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}")]
    Fs(#[from] FsError),
    #[error("identity file: {0}")]
    Json(String),
    #[error("identity file: {0}")]
    Invalid(String),
}

/// The whole identity file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub format: u32,
    /// 8 lower-case hex digits; names the audit log (`airlock-ID`) and the
    /// OpenPGP user id.
    pub appliance_id: String,
    /// Provisioning time, Unix seconds.
    pub created: u64,
    pub accounts: Vec<Account>,
    pub audit_key: AuditKey,
    pub document_keys: Vec<DocumentKey>,
    pub grants: Vec<Grant>,
}

/// One account: its X25519 key pair, the private half wrapped under the
/// key derived from its passphrase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    pub role: Role,
    /// argon2id PHC string without hash (parameters and salt).
    pub kdf: String,
    /// X25519 public key, 64 hex digits.
    pub x25519_public: String,
    /// XChaCha20-Poly1305 blob (base64) of the X25519 private key.
    pub wrapped_private: String,
}

/// The audit key's public half.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditKey {
    /// C2SP note verifier key string (`airlock-ID+hex8+base64`).
    pub verifier: String,
    /// SHA-256 of the 32-byte Ed25519 public key, 64 upper-case hex digits.
    pub fingerprint: String,
}

/// One OpenPGP document key; its secret lives only in grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentKey {
    /// v4 fingerprint, 40 upper-case hex digits.
    pub fingerprint: String,
    pub algorithm: KeyAlgo,
    pub created: u64,
    pub public_armored: String,
    /// The key documents are encrypted to now; older ones only decrypt.
    pub active: bool,
}

/// A secret sealed to one account's X25519 key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `audit`, `tag` or `document:FINGERPRINT`.
    pub purpose: String,
    pub account: String,
    /// Sealed blob, base64.
    pub sealed: String,
}

/// Grant purpose of the audit key's Ed25519 seed.
pub const PURPOSE_AUDIT: &str = "audit";
/// Grant purpose of the keyed-hash secret.
pub const PURPOSE_TAG: &str = "tag";
/// Grant purpose prefix of document keys.
pub const PURPOSE_DOCUMENT: &str = "document:";

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses exactly 32 bytes of hex.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(s: &str) -> Result<Vec<u8>, StoreError> {
    STANDARD
        .decode(s)
        .map_err(|_| StoreError::Invalid("a blob is not base64".into()))
}

impl Account {
    pub fn public_key(&self) -> Result<[u8; 32], StoreError> {
        unhex32(&self.x25519_public).ok_or_else(|| {
            StoreError::Invalid(format!("account {}: bad X25519 public key", self.name))
        })
    }
}

impl Identity {
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    pub fn grant(&self, account: &str, purpose: &str) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| g.account == account && g.purpose == purpose)
    }

    pub fn count_role(&self, role: Role) -> usize {
        self.accounts.iter().filter(|a| a.role == role).count()
    }

    /// Structural checks beyond the JSON shape.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: String| Err(StoreError::Invalid(m));
        if self.format != FORMAT_VERSION {
            return bad(format!(
                "format {} (this build reads {FORMAT_VERSION})",
                self.format
            ));
        }
        if self.appliance_id.len() != 8
            || !self
                .appliance_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad("appliance id is not 8 lower-case hex digits".into());
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if validate_account(&a.name).is_err() {
                return bad(format!("account {}: bad name", i + 1));
            }
            if self.accounts[..i].iter().any(|b| b.name == a.name) {
                return bad(format!("account {} given twice", a.name));
            }
            if a.role == Role::System {
                return bad(format!("account {}: role system", a.name));
            }
            kdf::parse_phc(&a.kdf)
                .map_err(|e| StoreError::Invalid(format!("account {}: {e}", a.name)))?;
            a.public_key()?;
            unb64(&a.wrapped_private)?;
        }
        if self.document_keys.iter().filter(|k| k.active).count() > 1 {
            return bad("more than one active document key".into());
        }
        for g in &self.grants {
            if self.account(&g.account).is_none() {
                return bad(format!(
                    "grant {} to unknown account {}",
                    g.purpose, g.account
                ));
            }
            unb64(&g.sealed)?;
        }
        Ok(())
    }
}

/// `ROOT/identity`.
pub fn identity_dir(root: &Path) -> PathBuf {
    root.join(IDENTITY_DIR)
}

/// `ROOT/audit`.
pub fn audit_dir(root: &Path) -> PathBuf {
    root.join(AUDIT_DIR)
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| FsError::new("create directory", dir, e).into())
}

/// Reads a file of at most [`MAX_FILE_LEN`] bytes; `None` when absent.
pub fn read_small(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::new("open", path, e).into()),
    };
    let mut buf = Vec::new();
    f.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FsError::new("read", path, e))?;
    if buf.len() as u64 > MAX_FILE_LEN {
        return Err(StoreError::Invalid(format!(
            "{} is larger than {MAX_FILE_LEN} bytes",
            path.display()
        )));
    }
    Ok(Some(buf))
}

/// The identity, or `None` when not provisioned.
pub fn load(root: &Path) -> Result<Option<Identity>, StoreError> {
    let Some(bytes) = read_small(&identity_dir(root).join(IDENTITY_FILE))? else {
        return Ok(None);
    };
    let id: Identity =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Json(e.to_string()))?;
    id.validate()?;
    Ok(Some(id))
}

/// Writes the identity atomically.
pub fn save(root: &Path, id: &Identity) -> Result<(), StoreError> {
    id.validate()?;
    let dir = identity_dir(root);
    ensure_dir(&dir)?;
    let mut text = serde_json::to_string_pretty(id).map_err(|e| StoreError::Json(e.to_string()))?;
    text.push('\n');
    write_atomic(&dir, IDENTITY_FILE, text.as_bytes())?;
    Ok(())
}

/// Writes `audit/audit.pub` (the verifier key string and a newline).
pub fn write_audit_pub(root: &Path, verifier: &str) -> Result<(), StoreError> {
    let dir = audit_dir(root);
    ensure_dir(&dir)?;
    write_atomic(&dir, AUDIT_PUB_FILE, format!("{verifier}\n").as_bytes())?;
    Ok(())
}

/// An exclusive lock on the identity files, released on drop.
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl Lock {
    /// Blocks until this process holds the lock.
    pub fn acquire(root: &Path) -> Result<Self, StoreError> {
        let dir = identity_dir(root);
        ensure_dir(&dir)?;
        let path = dir.join(LOCK_FILE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| FsError::new("open", &path, e))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map(Lock)
            .map_err(|(_, e)| FsError::new("lock", &path, e.into()).into())
    }
}
