//! Trust-root rotation through a system update.
//!
//! A system bundle names the trust file built into its UKI by SHA-256
//! (`system.trust_sha256`). When that is this appliance's trust file,
//! nothing rotates. Otherwise the bundle must carry the new trust file
//! (`system.trust`, a payload whose SHA-256 is `trust_sha256`) and its root
//! signatures (the payloads `<trust>.<signer>.minisig`), and the new file
//! must pass TUF's rule ([`TrustFile::accept_rotation`]): version exactly
//! one higher, signed by the root thresholds of both the old and the new
//! file. The payloads read are those of the verified bundle in the store.

use airlock_formats::escape;
use airlock_formats::manifest::{self, Manifest, ManifestError};
use airlock_formats::minisig;
use airlock_formats::trust::{Candidate, TrustError, TrustFile, MAX_TRUST_LEN};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use thiserror::Error;

/// Most root signatures of a carried trust file read (as many as a bundle
/// may carry for its manifest).
pub const MAX_TRUST_SIGNATURES: usize = airlock_formats::bundle::MAX_SIGNATURES;

/// What a system update does to the trust roots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The update's UKI carries this appliance's trust file.
    Same,
    /// The update's UKI carries a new trust file, a valid rotation.
    Rotated { from: u64, to: u64 },
}

/// Failing step of the rotation check; each message is one line.
#[derive(Debug, Error)]
pub enum RotationError {
    #[error("not a system bundle (no system section)")]
    NotSystem,
    #[error("the stored manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error(
        "the update carries other trust roots but no signed rotation (trust.json and its root signatures)"
    )]
    NoRotation,
    #[error("read {}: {source}", escape::text(path))]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the carried trust file {} is larger than {MAX_TRUST_LEN} bytes", escape::text(.0))]
    TooLarge(String),
    #[error(
        "the carried trust file {} has SHA-256 {actual}, the manifest's trust_sha256 is {}",
        escape::text(path),
        escape::text(expected)
    )]
    Hash {
        path: String,
        actual: String,
        expected: String,
    },
    #[error("the carried trust file has more than {MAX_TRUST_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("{0}")]
    Refused(#[from] TrustError),
}

/// Checks what the system bundle `m` (its verified payloads in
/// `version_dir`) does to the trust roots of this appliance (`current`,
/// parsed from `current_bytes`): [`Rotation::Same`], or a rotation that
/// [`TrustFile::accept_rotation`] accepts, else the failing step.
pub fn check(
    current: &TrustFile,
    current_bytes: &[u8],
    m: &Manifest,
    version_dir: &Path,
) -> Result<Rotation, RotationError> {
    let s = m.system.as_ref().ok_or(RotationError::NotSystem)?;
    // Paths below are joined to `version_dir`: only a valid manifest's.
    m.validate()?;
    let current_sha = manifest::hex(&Sha256::digest(current_bytes));
    let same = s.trust_sha256 == current_sha;
    let Some(trust) = s.trust.as_deref() else {
        return if same {
            Ok(Rotation::Same)
        } else {
            Err(RotationError::NoRotation)
        };
    };
    // Carried: it must be the file the UKI was built with (for `Same`,
    // then, this appliance's own).
    let bytes = read_limited(version_dir, trust, MAX_TRUST_LEN)?
        .ok_or_else(|| RotationError::TooLarge(trust.to_owned()))?;
    let actual = manifest::hex(&Sha256::digest(&bytes));
    if actual != s.trust_sha256 {
        return Err(RotationError::Hash {
            path: trust.to_owned(),
            actual,
            expected: s.trust_sha256.clone(),
        });
    }
    if same {
        return Ok(Rotation::Same);
    }
    let sigs = signatures(m, version_dir)?;
    let new = current.accept_rotation(&bytes, &sigs)?;
    Ok(Rotation::Rotated {
        from: current.version,
        to: new.version,
    })
}

/// The root signatures of the carried trust file: the payloads
/// `<trust>.<signer>.minisig`, in manifest order. An unparsable one is
/// kept with its reason (ignored when counting, never fatal).
fn signatures(m: &Manifest, version_dir: &Path) -> Result<Vec<Candidate>, RotationError> {
    let Some(s) = m.system.as_ref() else {
        return Err(RotationError::NotSystem);
    };
    let mut out = Vec::new();
    for f in m.files.iter().filter(|f| s.is_trust_signature(&f.path)) {
        if out.len() == MAX_TRUST_SIGNATURES {
            return Err(RotationError::TooManySignatures);
        }
        let sig = match read_limited(version_dir, &f.path, minisig::MAX_FILE_LEN)? {
            Some(bytes) => minisig::parse_signature_bytes(&bytes),
            None => Err(minisig::MinisigError::TooLarge { what: "signature" }),
        };
        out.push(Candidate {
            file: f.path.clone(),
            sig,
        });
    }
    Ok(out)
}

/// At most `max` bytes of the regular file `dir/rel` (no symlink followed
/// at its last component); `None` when it is larger.
fn read_limited(dir: &Path, rel: &str, max: usize) -> Result<Option<Vec<u8>>, RotationError> {
    let read_err = |source| RotationError::Read {
        path: rel.to_owned(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(rel))
        .map_err(read_err)?;
    if !f.metadata().map_err(read_err)?.is_file() {
        return Err(read_err(std::io::Error::other("not a regular file")));
    }
    let mut bytes = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok((bytes.len() <= max).then_some(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use airlock_formats::manifest::{FileEntry, Kind, SystemSection};
    use airlock_formats::minisig::SecretKey;
    use airlock_formats::trust::{KeyEntry, Role};
    use std::collections::{BTreeMap, BTreeSet};

    fn sha(b: &[u8]) -> String {
        manifest::hex(&Sha256::digest(b))
    }

    /// The keys: the old root, the new root, a system key (in both files).
    struct Keys {
        old_root: SecretKey,
        new_root: SecretKey,
        system: SecretKey,
    }

    impl Keys {
        fn new() -> Self {
            Self {
                old_root: SecretKey::generate().unwrap(),
                new_root: SecretKey::generate().unwrap(),
                system: SecretKey::generate().unwrap(),
            }
        }

        fn by_name(&self, name: &str) -> &SecretKey {
            match name {
                "old-root" => &self.old_root,
                "new-root" => &self.new_root,
                _ => &self.system,
            }
        }

        /// A trust file of `version` whose root is `root`.
        fn trust(&self, version: u64, root: &str) -> Vec<u8> {
            let entry = |name: &str, role| KeyEntry {
                name: name.into(),
                public_key: self.by_name(name).public_key().to_base64(),
                roles: BTreeSet::from([role]),
            };
            TrustFile {
                schema: airlock_formats::trust::SCHEMA.into(),
                version,
                keys: vec![entry(root, Role::Root), entry("system", Role::System)],
                thresholds: BTreeMap::from([(Role::Root, 1), (Role::System, 1)]),
            }
            .to_bytes()
            .unwrap()
        }
    }

    /// What a case's bundle holds; the default is a valid rotation 1 → 2
    /// signed by both roots.
    struct Fx {
        /// The carried trust file (`None` = not carried).
        carried: Option<Vec<u8>>,
        /// Its signature payloads: (signer, bytes).
        sigs: Vec<(String, Vec<u8>)>,
        /// `system.trust_sha256` (`None` = that of the carried file).
        trust_sha256: Option<String>,
    }

    impl Fx {
        fn rotation(k: &Keys, version: u64, signers: &[&str]) -> Self {
            let bytes = k.trust(version, "new-root");
            let sigs = signers
                .iter()
                .map(|s| {
                    let sig = k.by_name(s).sign(&bytes, "t").unwrap();
                    (s.to_string(), sig.to_file().into_bytes())
                })
                .collect();
            Self {
                carried: Some(bytes),
                sigs,
                trust_sha256: None,
            }
        }

        /// Writes the payloads into `dir`; returns the manifest.
        fn write(&self, dir: &Path) -> Manifest {
            let mut files = vec![];
            let mut put = |path: &str, bytes: &[u8]| {
                std::fs::write(dir.join(path), bytes).unwrap();
                files.push(FileEntry::whole(path, bytes.len() as u64, sha(bytes)));
            };
            put("airlock.efi", b"uki");
            if let Some(b) = &self.carried {
                put("trust.json", b);
            }
            for (signer, b) in &self.sigs {
                put(&format!("trust.json.{signer}.minisig"), b);
            }
            let m = Manifest {
                schema: manifest::SCHEMA.into(),
                kind: Kind::System,
                name: "airlock".into(),
                version: 2,
                created: "2026-01-01T00:00:00Z".into(),
                description: String::new(),
                files,
                model: None,
                system: Some(SystemSection {
                    uki: "airlock.efi".into(),
                    variant: "demo".into(),
                    trust_sha256: self
                        .trust_sha256
                        .clone()
                        .or_else(|| self.carried.as_deref().map(sha))
                        .unwrap(),
                    trust: self.carried.as_ref().map(|_| "trust.json".into()),
                }),
            };
            m.validate().unwrap();
            m
        }
    }

    #[test]
    fn rotation_rules() {
        let k = Keys::new();
        let current_bytes = k.trust(1, "old-root");
        let current = TrustFile::parse(&current_bytes).unwrap();
        let both = ["old-root", "new-root"];
        let rotated = Ok(Rotation::Rotated { from: 1, to: 2 });
        let other = "f".repeat(64);
        // (what, bundle, Ok(outcome) or Err(part of the one-line reason))
        let cases: Vec<(&str, Fx, Result<Rotation, String>)> = vec![
            (
                "same trust, not carried",
                Fx {
                    carried: None,
                    sigs: vec![],
                    trust_sha256: Some(sha(&current_bytes)),
                },
                Ok(Rotation::Same),
            ),
            (
                "same trust, carried",
                Fx {
                    carried: Some(current_bytes.clone()),
                    sigs: vec![],
                    trust_sha256: None,
                },
                Ok(Rotation::Same),
            ),
            (
                "rotation signed by both roots",
                Fx::rotation(&k, 2, &both),
                rotated.clone(),
            ),
            (
                "rotation, a junk signature besides is ignored",
                {
                    let mut fx = Fx::rotation(&k, 2, &both);
                    fx.sigs.push(("junk".into(), b"junk\n".to_vec()));
                    fx
                },
                rotated.clone(),
            ),
            (
                "only the old root signed",
                Fx::rotation(&k, 2, &["old-root"]),
                Err("trust rotation refused: new root: below threshold: 0 of 1".into()),
            ),
            (
                "only the new root signed",
                Fx::rotation(&k, 2, &["new-root"]),
                Err("trust rotation refused: old root: below threshold: 0 of 1".into()),
            ),
            (
                "signed by the system key only",
                Fx::rotation(&k, 2, &["system"]),
                Err("trust rotation refused: old root: trust.json.system.minisig: signed by key \"system\", which does not hold role root".into()),
            ),
            (
                "no signatures",
                Fx::rotation(&k, 2, &[]),
                Err("trust rotation refused: old root: below threshold: 0 of 1 required root signatures (no valid signature by a trusted key)".into()),
            ),
            (
                "carried file is not the UKI's",
                Fx {
                    trust_sha256: Some(other.clone()),
                    ..Fx::rotation(&k, 2, &both)
                },
                Err(format!(
                    "the carried trust file trust.json has SHA-256 {}, the manifest's trust_sha256 is {other}",
                    sha(&k.trust(2, "new-root"))
                )),
            ),
            (
                "same trust claimed, other file carried",
                Fx {
                    trust_sha256: Some(sha(&current_bytes)),
                    ..Fx::rotation(&k, 2, &both)
                },
                Err(format!(
                    "has SHA-256 {}, the manifest's trust_sha256 is {}",
                    sha(&k.trust(2, "new-root")),
                    sha(&current_bytes)
                )),
            ),
            (
                "other trust, nothing carried",
                Fx {
                    carried: None,
                    sigs: vec![],
                    trust_sha256: Some(sha(&k.trust(2, "new-root"))),
                },
                Err("the update carries other trust roots but no signed rotation (trust.json and its root signatures)".into()),
            ),
            (
                "version jump 1 -> 3",
                Fx::rotation(&k, 3, &both),
                Err("trust rotation refused: new version 3 is not old version 1 + 1".into()),
            ),
            (
                "same version again",
                Fx::rotation(&k, 1, &both),
                Err("trust rotation refused: new version 1 is not old version 1 + 1".into()),
            ),
            (
                "carried file is no trust file",
                Fx {
                    carried: Some(b"{}\n".to_vec()),
                    sigs: vec![],
                    trust_sha256: None,
                },
                Err("trust file: missing field `schema`".into()),
            ),
            (
                "carried file too large",
                Fx {
                    carried: Some(vec![b' '; MAX_TRUST_LEN + 1]),
                    sigs: vec![],
                    trust_sha256: None,
                },
                Err(format!(
                    "the carried trust file trust.json is larger than {MAX_TRUST_LEN} bytes"
                )),
            ),
        ];
        for (what, fx, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let m = fx.write(dir.path());
            let got = check(&current, &current_bytes, &m, dir.path()).map_err(|e| e.to_string());
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{what}"),
                (Err(g), Err(w)) => {
                    assert!(g.contains(w.as_str()), "{what}: {g}");
                    assert_eq!(g.lines().count(), 1, "{what}: {g}");
                }
                _ => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// The payloads must be in the store: a missing one names itself; a
    /// symlink is not followed; a non-system manifest is refused.
    #[test]
    fn store_contents() {
        let k = Keys::new();
        let current_bytes = k.trust(1, "old-root");
        let current = TrustFile::parse(&current_bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = Fx::rotation(&k, 2, &["old-root", "new-root"]).write(dir.path());
        let run = || check(&current, &current_bytes, &m, dir.path()).map_err(|e| e.to_string());
        assert_eq!(run(), Ok(Rotation::Rotated { from: 1, to: 2 }));
        let sig = dir.path().join("trust.json.new-root.minisig");
        std::fs::remove_file(&sig).unwrap();
        let e = run().unwrap_err();
        assert!(e.starts_with("read trust.json.new-root.minisig: "), "{e}");
        let trust = dir.path().join("trust.json");
        let real = dir.path().join("real.json");
        std::fs::rename(&trust, &real).unwrap();
        std::os::unix::fs::symlink(&real, &trust).unwrap();
        let e = run().unwrap_err();
        assert!(e.starts_with("read trust.json: "), "{e}");
        let mut model = m.clone();
        model.system = None;
        let e = check(&current, &current_bytes, &model, dir.path()).unwrap_err();
        assert_eq!(e.to_string(), "not a system bundle (no system section)");
    }
}
