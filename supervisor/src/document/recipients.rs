//! The admin recipients: OpenPGP public keys (armored or binary, one per
//! file) in a directory the security team fills. Each must be currently
//! usable for encryption: bindings verify, not revoked, not expired, and an
//! encryption-capable subkey (chosen by key flags) that is itself bound,
//! unrevoked and unexpired.

use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable as _, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::KeyDetails as _;
use thiserror::Error;

use super::guard::no_panic;
use super::packets::one_line;

/// Largest public key file read.
pub const MAX_KEY_FILE: u64 = 1 << 20;

/// Why a recipient is not used.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RecipientError {
    #[error("read recipients directory {0}: {1}")]
    ReadDir(PathBuf, String),
    #[error("read recipient file {0}: {1}")]
    ReadFile(PathBuf, String),
    #[error("recipient file {0} is larger than {MAX_KEY_FILE} bytes")]
    TooLarge(PathBuf),
    #[error("recipient file {0}: not an OpenPGP public key ({1})")]
    Parse(PathBuf, String),
    #[error("recipient {0}: self-signatures do not verify ({1})")]
    Bindings(String, String),
    #[error("recipient {0}: the key is revoked")]
    Revoked(String),
    #[error("recipient {0}: the key expired")]
    Expired(String),
    #[error("recipient {0}: no usable encryption subkey")]
    NoEncryptionSubkey(String),
    #[error("no recipients in {0}")]
    Empty(PathBuf),
}

/// Upper-case hex v4 fingerprint.
pub fn fingerprint(key: &SignedPublicKey) -> String {
    format!("{:X}", key.fingerprint())
}

fn newest(sigs: &[Signature], typ: SignatureType) -> Option<&Signature> {
    sigs.iter()
        .filter(|s| s.typ() == Some(typ))
        .max_by_key(|s| s.created().map(|t| t.as_secs()))
}

fn expired(created: u32, sig: &Signature, now: u32) -> bool {
    sig.key_expiration_time().is_some_and(|d| {
        d.as_secs() != 0 && u64::from(created) + u64::from(d.as_secs()) <= u64::from(now)
    })
}

/// The subkey of `key` that encryption goes to: newest binding signature
/// says encrypt, not revoked, not expired at `now` (Unix seconds); the
/// newest such subkey if there are several.
pub fn encryption_subkey(
    key: &SignedPublicKey,
    now: u32,
) -> Result<&SignedPublicSubKey, RecipientError> {
    let fpr = fingerprint(key);
    check_primary(key, now)?;
    key.public_subkeys
        .iter()
        .filter(|s| s.key.algorithm().can_encrypt())
        .filter(|s| newest(&s.signatures, SignatureType::SubkeyRevocation).is_none())
        .filter(|s| {
            newest(&s.signatures, SignatureType::SubkeyBinding).is_some_and(|b| {
                let f = b.key_flags();
                (f.encrypt_comms() || f.encrypt_storage())
                    && !expired(s.key.created_at().as_secs(), b, now)
            })
        })
        .max_by_key(|s| s.key.created_at().as_secs())
        .ok_or(RecipientError::NoEncryptionSubkey(fpr))
}

fn check_primary(key: &SignedPublicKey, now: u32) -> Result<(), RecipientError> {
    let fpr = fingerprint(key);
    if !key.details.revocation_signatures.is_empty() {
        return Err(RecipientError::Revoked(fpr));
    }
    let created = key.primary_key.created_at().as_secs();
    let self_sigs: Vec<&Signature> = key
        .details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(key.details.direct_signatures.iter())
        .collect();
    let newest_self = self_sigs
        .iter()
        .max_by_key(|s| s.created().map(|t| t.as_secs()));
    if newest_self.is_some_and(|s| expired(created, s, now)) {
        return Err(RecipientError::Expired(fpr));
    }
    Ok(())
}

/// Parses one public key file and checks it is usable at `now`.
pub fn parse(path: &Path, bytes: &[u8], now: u32) -> Result<SignedPublicKey, RecipientError> {
    let parse_err = |e: &dyn std::fmt::Display| {
        RecipientError::Parse(path.to_owned(), one_line(&e.to_string()))
    };
    let key = no_panic(
        || {
            SignedPublicKey::from_reader_single(bytes)
                .map(|(k, _)| k)
                .map_err(|e| parse_err(&e))
        },
        || parse_err(&"parser panic"),
    )?;
    no_panic(
        || {
            key.verify_bindings().map_err(|e| {
                RecipientError::Bindings(fingerprint(&key), one_line(&e.to_string()))
            })?;
            encryption_subkey(&key, now).map(|_| ())
        },
        || parse_err(&"parser panic"),
    )?;
    Ok(key)
}

/// Every regular file in `dir`, sorted by name, as a usable recipient;
/// the first unusable one refuses the whole set (a team that meant five
/// recipients should not silently get four).
pub fn load_dir(dir: &Path, now: u32) -> Result<Vec<SignedPublicKey>, RecipientError> {
    let rd = |e: std::io::Error| RecipientError::ReadDir(dir.to_owned(), e.to_string());
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(rd)? {
        let entry = entry.map_err(rd)?;
        if entry.file_type().map_err(rd)?.is_file() {
            paths.push(entry.path());
        }
    }
    paths.sort();
    let mut keys = Vec::new();
    for path in paths {
        let rf = |e: std::io::Error| RecipientError::ReadFile(path.clone(), e.to_string());
        if std::fs::metadata(&path).map_err(rf)?.len() > MAX_KEY_FILE {
            return Err(RecipientError::TooLarge(path));
        }
        let bytes = std::fs::read(&path).map_err(rf)?;
        keys.push(parse(&path, &bytes, now)?);
    }
    if keys.is_empty() {
        return Err(RecipientError::Empty(dir.to_owned()));
    }
    Ok(keys)
}
