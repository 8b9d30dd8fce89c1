//! The admin recipients: OpenPGP public keys (armored or binary, one per
//! file) in a directory the security team fills. Each must be currently
//! usable for encryption: bindings verify, not revoked, not expired, and an
//! encryption-capable subkey (chosen by key flags) that is itself bound,
//! unrevoked and unexpired.
//!
//! The image's recipients are in [`IMAGE_DIR`], one `<FINGERPRINT>.asc`
//! per key: `scripts/build-image --recipients DIR` checked each with gpg on
//! the build host and named it by its fingerprint, so PID 1 can list them
//! (`status`) from the names alone, without parsing OpenPGP; only the
//! sandboxed key holder parses them ([`load_image_dir`]).

use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable as _, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::KeyDetails as _;
use thiserror::Error;

use super::guard::no_panic;
use super::packets::one_line;

/// Largest public key file read.
pub const MAX_KEY_FILE: u64 = 1 << 20;

/// The image's admin recipients (`scripts/build-image --recipients`).
pub const IMAGE_DIR: &str = "/etc/airlock/recipients";

/// The fingerprint a recipient file of the image is named by:
/// `<40 upper-case hex>.asc`, or None for any other name.
pub fn named_fingerprint(file_name: &str) -> Option<&str> {
    let fpr = file_name.strip_suffix(".asc")?;
    let hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    (fpr.len() == 40 && fpr.bytes().all(hex)).then_some(fpr)
}

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
    #[error("recipient file {0}: not named <FINGERPRINT>.asc (40 upper-case hex)")]
    NotNamed(PathBuf),
    #[error("recipient file {0}: not a regular file")]
    NotAFile(PathBuf),
    #[error("recipient file {0}: names {1} but holds key {2}")]
    Mismatch(PathBuf, String, String),
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
        keys.push(read_key(&path, now)?);
    }
    if keys.is_empty() {
        return Err(RecipientError::Empty(dir.to_owned()));
    }
    Ok(keys)
}

/// Reads and parses one key file (at most [`MAX_KEY_FILE`] bytes).
fn read_key(path: &Path, now: u32) -> Result<SignedPublicKey, RecipientError> {
    let rf = |e: std::io::Error| RecipientError::ReadFile(path.to_owned(), e.to_string());
    if std::fs::metadata(path).map_err(rf)?.len() > MAX_KEY_FILE {
        return Err(RecipientError::TooLarge(path.to_owned()));
    }
    let bytes = std::fs::read(path).map_err(rf)?;
    parse(path, &bytes, now)
}

/// The image's recipients ([`IMAGE_DIR`] in the appliance): every entry
/// must be a regular file `<FINGERPRINT>.asc` holding a usable key with that
/// fingerprint; sorted by fingerprint. Any other entry, a key whose
/// fingerprint is not its name, or an unusable key refuses the whole set
/// (the image was not built by `scripts/build-image`, or was altered). A
/// missing or empty directory is `no recipients in DIR`.
pub fn load_image_dir(dir: &Path, now: u32) -> Result<Vec<SignedPublicKey>, RecipientError> {
    let rd = |e: std::io::Error| RecipientError::ReadDir(dir.to_owned(), e.to_string());
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RecipientError::Empty(dir.to_owned()))
        }
        r => r.map_err(rd)?,
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(rd)?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(fpr) = name.to_str().and_then(named_fingerprint) else {
            return Err(RecipientError::NotNamed(path));
        };
        if !entry.file_type().map_err(rd)?.is_file() {
            return Err(RecipientError::NotAFile(path));
        }
        files.push((fpr.to_string(), path));
    }
    files.sort();
    let mut keys = Vec::new();
    for (named, path) in files {
        let key = read_key(&path, now)?;
        let holds = fingerprint(&key);
        if holds != named {
            return Err(RecipientError::Mismatch(path, named, holds));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(RecipientError::Empty(dir.to_owned()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::process::Command;

    /// Makes an Ed25519 + Curve25519 key with gpg in the temporary home
    /// `home`; returns (fingerprint, armored, binary).
    fn gpg_key(home: &Path, uid: &str) -> (String, Vec<u8>, Vec<u8>) {
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
                .arg("--homedir")
                .arg(home)
                .args(["--batch", "--no-tty", "--yes", "--passphrase", ""])
                .args(["--pinentry-mode", "loopback"])
                .args(args)
                .output()
                .expect("run gpg");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        gpg(&["--quick-gen-key", uid, "ed25519", "sign,cert", "never"]);
        let colons = String::from_utf8(gpg(&["--with-colons", "--list-keys", uid])).unwrap();
        let fpr = colons
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        gpg(&["--quick-add-key", &fpr, "cv25519", "encr", "never"]);
        let armored = gpg(&["--armor", "--export", &fpr]);
        let binary = gpg(&["--export", &fpr]);
        (fpr, armored, binary)
    }

    fn now() -> u32 {
        u32::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    }

    #[test]
    fn file_names_that_are_fingerprints() {
        let f = "0ED596949EA0F9A4EB49E806F2704D18E5C4E7AC";
        // (file name, fingerprint it names)
        let cases: &[(&str, Option<&str>)] = &[
            ("0ED596949EA0F9A4EB49E806F2704D18E5C4E7AC.asc", Some(f)),
            ("0ed596949ea0f9a4eb49e806f2704d18e5c4e7ac.asc", None),
            ("0ED596949EA0F9A4EB49E806F2704D18E5C4E7AC", None),
            ("0ED596949EA0F9A4EB49E806F2704D18E5C4E7AC.gpg", None),
            ("0ED596949EA0F9A4EB49E806F2704D18E5C4E7A.asc", None),
            ("0ED596949EA0F9A4EB49E806F2704D18E5C4E7ACD.asc", None),
            ("0ED596949EA0F9A4EB49E806F2704D18E5C4E7AG.asc", None),
            ("admin.asc", None),
            (".asc", None),
        ];
        for (name, want) in cases {
            assert_eq!(named_fingerprint(name), *want, "{name}");
        }
    }

    #[test]
    fn image_dir_keys_are_named_by_their_fingerprints() {
        let home = tempfile::tempdir().unwrap();
        let (a, a_asc, a_bin) = gpg_key(home.path(), "Admin A <a@example.org>");
        let (b, b_asc, _) = gpg_key(home.path(), "Admin B <b@example.org>");
        let mut sorted = vec![a.clone(), b.clone()];
        sorted.sort();

        enum Entry<'a> {
            File(String, &'a [u8]),
            Dir(String),
        }
        use Entry::{Dir, File};
        let asc = |f: &str| format!("{f}.asc");
        // (entries, fingerprints loaded or the error; {D} is the directory,
        // an error ending in `(` is followed by rPGP's own words)
        type Case<'a> = (Vec<Entry<'a>>, Result<Vec<String>, String>);
        let cases: Vec<Case> = vec![
            (vec![File(asc(&a), &a_asc)], Ok(vec![a.clone()])),
            (vec![File(asc(&a), &a_bin)], Ok(vec![a.clone()])),
            (
                vec![File(asc(&b), &b_asc), File(asc(&a), &a_bin)],
                Ok(sorted.clone()),
            ),
            (
                vec![File(asc(&b), &a_asc)],
                Err(format!(
                    "recipient file {{D}}/{b}.asc: names {b} but holds key {a}"
                )),
            ),
            (
                vec![File(asc(&a), &a_asc), File("readme.txt".into(), b"hi")],
                Err(
                    "recipient file {D}/readme.txt: not named <FINGERPRINT>.asc (40 upper-case hex)"
                        .into(),
                ),
            ),
            (
                vec![File(asc(&a.to_lowercase()), &a_asc)],
                Err(format!(
                    "recipient file {{D}}/{}.asc: not named <FINGERPRINT>.asc (40 upper-case hex)",
                    a.to_lowercase()
                )),
            ),
            (
                vec![Dir(asc(&a))],
                Err(format!("recipient file {{D}}/{a}.asc: not a regular file")),
            ),
            (
                vec![File(asc(&a), b"not a key")],
                Err(format!(
                    "recipient file {{D}}/{a}.asc: not an OpenPGP public key ("
                )),
            ),
            (vec![], Err("no recipients in {D}".into())),
        ];
        for (i, (entries, want)) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            for e in entries {
                match e {
                    File(name, bytes) => std::fs::write(dir.path().join(name), bytes).unwrap(),
                    Dir(name) => std::fs::create_dir(dir.path().join(name)).unwrap(),
                }
            }
            let got = load_image_dir(dir.path(), now())
                .map(|keys| keys.iter().map(fingerprint).collect::<Vec<_>>())
                .map_err(|e| e.to_string());
            let d = dir.path().display().to_string();
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "case {i}"),
                (Err(got), Err(want)) if want.ends_with('(') => {
                    assert!(got.starts_with(&want.replace("{D}", &d)), "case {i}: {got}")
                }
                (Err(got), Err(want)) => assert_eq!(got, want.replace("{D}", &d), "case {i}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
        let gone = home.path().join("no-such-dir");
        assert_eq!(
            load_image_dir(&gone, now()),
            Err(RecipientError::Empty(gone.clone()))
        );
    }
}
