//! Trust file: public keys with roles and an m-of-n threshold per role.
//!
//! Signatures are counted by distinct Ed25519 public key, never by key id
//! (ids are attacker-chosen labels). A new trust file replaces the old one
//! only when its version is exactly one higher and it is signed by a
//! threshold of the old root keys and a threshold of the new root keys
//! (TUF's root rotation rule).

use crate::escape;
use crate::manifest::Kind;
use crate::minisig::{MinisigError, PublicKey, SignatureFile};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Schema string of the trust file.
pub const SCHEMA: &str = "airlock-trust/1";
/// Largest trust file accepted.
pub const MAX_TRUST_LEN: usize = 256 * 1024;
/// Most keys one trust file may hold.
pub const MAX_KEYS: usize = 256;

/// Roles a key may hold. Policy as data: which role may sign what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Signs trust files (rotations): the only role that can change who is trusted.
    Root,
    /// Signs model bundles (`kind: model`).
    Models,
    /// Signs system bundles (`kind: system`): new kernels/initramfs, so kept apart from models.
    System,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Root, Role::Models, Role::System];

    /// The role whose threshold must sign a bundle of `kind`.
    pub fn for_kind(kind: Kind) -> Role {
        match kind {
            Kind::Model => Role::Models,
            Kind::System => Role::System,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Models => "models",
            Role::System => "system",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "root" => Ok(Role::Root),
            "models" => Ok(Role::Models),
            "system" => Ok(Role::System),
            _ => Err(format!("unknown role {s:?} (root | models | system)")),
        }
    }
}

/// Errors of this module; each names the failing check.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("trust file is larger than {MAX_TRUST_LEN} bytes")]
    TooLarge,
    #[error("trust file: {}", escape::text(.0))]
    Json(String),
    #[error("trust file: schema \"{}\" is not {SCHEMA:?}", escape::text(.0))]
    Schema(String),
    #[error("trust file: version 0 is not allowed")]
    VersionZero,
    #[error("trust file: more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("trust file: invalid key name \"{}\" (1-64 of A-Z a-z 0-9 . _ -)", escape::text(.0))]
    KeyName(String),
    #[error("trust file: key \"{}\": {source}", escape::text(name))]
    PublicKey { name: String, source: MinisigError },
    #[error("trust file: key name \"{}\" appears twice", escape::text(.0))]
    DuplicateName(String),
    #[error("trust file: public key of \"{}\" appears twice (each key once, with all its roles)", escape::text(.0))]
    DuplicateKey(String),
    #[error("trust file: key \"{}\" has no role", escape::text(.0))]
    NoRole(String),
    #[error("trust file: threshold of role {role} is {threshold}, must be 1..={keys} (keys holding the role)")]
    Threshold {
        role: Role,
        threshold: u32,
        keys: usize,
    },
    #[error("trust file: no root key")]
    NoRoot,
    #[error(
        "{}: signed by key {key:?}, which does not hold role {role}",
        escape::text(file)
    )]
    WrongRole {
        file: String,
        key: String,
        role: Role,
    },
    #[error("below threshold: {have} of {need} required {role} signatures ({signers}{ignored})")]
    BelowThreshold {
        role: Role,
        have: usize,
        need: u32,
        signers: String,
        /// `; ignored FILE: REASON` per ignored signature (names escaped).
        ignored: String,
    },
    #[error("trust rotation refused: new version {new} is not old version {old} + 1")]
    RotationVersion { old: u64, new: u64 },
    #[error("trust rotation refused: old root: {0}")]
    RotationOldRoot(Box<TrustError>),
    #[error("trust rotation refused: new root: {0}")]
    RotationNewRoot(Box<TrustError>),
    #[error("trust file: key \"{}\" not found", escape::text(.0))]
    UnknownKey(String),
}

type Result<T> = std::result::Result<T, TrustError>;

/// One trusted key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Human name; also names the key's signature files (`*.NAME.minisig`).
    pub name: String,
    /// minisign public key line (`RW...`).
    pub public_key: String,
    pub roles: BTreeSet<Role>,
}

/// The trust file as stored (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    pub schema: String,
    pub version: u64,
    pub keys: Vec<KeyEntry>,
    /// m of n per role; a role missing here needs 1.
    pub thresholds: BTreeMap<Role, u32>,
}

/// A signature file read from disk, with its file name for messages: the
/// parsed signature, or why it could not be parsed (then it is ignored).
#[derive(Debug)]
pub struct Candidate {
    pub file: String,
    pub sig: std::result::Result<SignatureFile, MinisigError>,
}

/// A signature that was not counted, and why (one line, shown to officers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub file: String,
    pub reason: String,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The file name comes from a stick: escaped.
        write!(f, "{}: {}", escape::text(&self.file), self.reason)
    }
}

/// Outcome of counting signatures for one role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    pub role: Role,
    /// The role's threshold.
    pub need: u32,
    /// Names of the distinct keys holding `role` whose signatures verified (sorted).
    pub signers: Vec<String>,
    /// The signature file counted for each signer (same order as `signers`).
    pub counted_files: Vec<String>,
    /// Signature files not counted, with the reason: unparsable, key not in
    /// the trust file, does not verify, signer lacks the role, duplicate key.
    pub ignored: Vec<Ignored>,
    /// (file, key) of verified signatures by keys lacking the role.
    pub wrong_role: Vec<(String, String)>,
}

impl Tally {
    /// Whether the threshold is met.
    pub fn met(&self) -> bool {
        self.signers.len() >= self.need as usize
    }

    /// Signatures still needed (0 when met).
    pub fn missing(&self) -> usize {
        (self.need as usize).saturating_sub(self.signers.len())
    }

    /// The threshold rule: enough distinct keys of the role verified.
    pub fn check(&self) -> Result<()> {
        if self.met() {
            return Ok(());
        }
        if let Some((file, key)) = self.wrong_role.first() {
            return Err(TrustError::WrongRole {
                file: file.clone(),
                key: key.clone(),
                role: self.role,
            });
        }
        Err(TrustError::BelowThreshold {
            role: self.role,
            have: self.signers.len(),
            need: self.need,
            signers: if self.signers.is_empty() {
                "no valid signature by a trusted key".into()
            } else {
                format!("signed by {}", self.signers.join(", "))
            },
            ignored: self
                .ignored
                .iter()
                .map(|i| format!("; ignored {i}"))
                .collect(),
        })
    }
}

impl TrustFile {
    /// A new version-1 trust file holding root keys only.
    pub fn new(root_keys: Vec<(String, PublicKey)>, root_threshold: u32) -> Result<Self> {
        let t = TrustFile {
            schema: SCHEMA.into(),
            version: 1,
            keys: root_keys
                .into_iter()
                .map(|(name, pk)| KeyEntry {
                    name,
                    public_key: pk.to_base64(),
                    roles: BTreeSet::from([Role::Root]),
                })
                .collect(),
            thresholds: BTreeMap::from([(Role::Root, root_threshold)]),
        };
        t.validate()?;
        Ok(t)
    }

    /// Strictly parses and validates a trust file.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_TRUST_LEN {
            return Err(TrustError::TooLarge);
        }
        let t: TrustFile =
            serde_json::from_slice(bytes).map_err(|e| TrustError::Json(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    /// Pretty JSON with a trailing newline, after validation.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut v = serde_json::to_vec_pretty(self).map_err(|e| TrustError::Json(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Threshold of `role` (1 when unset).
    pub fn threshold(&self, role: Role) -> u32 {
        self.thresholds.get(&role).copied().unwrap_or(1)
    }

    /// Parsed keys, in file order.
    pub fn public_keys(&self) -> Result<Vec<(&KeyEntry, PublicKey)>> {
        self.keys
            .iter()
            .map(|k| {
                PublicKey::from_base64(&k.public_key)
                    .map(|pk| (k, pk))
                    .map_err(|source| TrustError::PublicKey {
                        name: k.name.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// Checks names, keys, roles and thresholds.
    pub fn validate(&self) -> Result<()> {
        if self.schema != SCHEMA {
            return Err(TrustError::Schema(self.schema.clone()));
        }
        if self.version == 0 {
            return Err(TrustError::VersionZero);
        }
        if self.keys.len() > MAX_KEYS {
            return Err(TrustError::TooManyKeys);
        }
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for (k, pk) in self.public_keys()? {
            validate_key_name(&k.name)?;
            if !names.insert(k.name.as_str()) {
                return Err(TrustError::DuplicateName(k.name.clone()));
            }
            if !keys.insert(pk.key_bytes()) {
                return Err(TrustError::DuplicateKey(k.name.clone()));
            }
            if k.roles.is_empty() {
                return Err(TrustError::NoRole(k.name.clone()));
            }
        }
        for role in Role::ALL {
            let n = self.keys.iter().filter(|k| k.roles.contains(&role)).count();
            let t = self.threshold(role);
            // A role without keys can sign nothing yet; its threshold still must be ≥ 1.
            if t == 0 || (n > 0 && t as usize > n) {
                return Err(TrustError::Threshold {
                    role,
                    threshold: t,
                    keys: n,
                });
            }
        }
        if !self.keys.iter().any(|k| k.roles.contains(&Role::Root)) {
            return Err(TrustError::NoRoot);
        }
        Ok(())
    }

    /// Counts distinct keys of `role` that verifiably signed `data`; never
    /// fails on one bad signature: those are listed in
    /// [`Tally::ignored`] with their reason. [`Tally::check`] then applies
    /// the threshold.
    pub fn count(&self, role: Role, data: &[u8], sigs: &[Candidate]) -> Result<Tally> {
        let keys = self.public_keys()?;
        let mut with_role: BTreeMap<[u8; 32], (String, String)> = BTreeMap::new();
        let mut wrong_role: Vec<(String, String)> = Vec::new();
        let mut ignored = Vec::new();
        for c in sigs {
            let s = match &c.sig {
                Ok(s) => s,
                Err(e) => {
                    ignored.push(Ignored {
                        file: c.file.clone(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let candidates: Vec<_> = keys
                .iter()
                .filter(|(_, pk)| pk.key_id == s.key_id)
                .collect();
            if candidates.is_empty() {
                ignored.push(Ignored {
                    file: c.file.clone(),
                    reason: format!("key id {} is not in the trust file", s.key_id),
                });
                continue;
            }
            let mut last_err = None;
            let mut signer = None;
            for (entry, pk) in &candidates {
                match pk.verify(s, data) {
                    Ok(()) => {
                        signer = Some((*entry, pk));
                        break;
                    }
                    Err(e) => last_err = Some((entry.name.clone(), e)),
                }
            }
            match (signer, last_err) {
                (Some((entry, pk)), _) if entry.roles.contains(&role) => {
                    // The same key under two file names counts once (first file kept).
                    match with_role.entry(pk.key_bytes()) {
                        std::collections::btree_map::Entry::Occupied(_) => ignored.push(Ignored {
                            file: c.file.clone(),
                            reason: format!("key {:?} is already counted", entry.name),
                        }),
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert((entry.name.clone(), c.file.clone()));
                        }
                    }
                }
                (Some((entry, _)), _) => {
                    ignored.push(Ignored {
                        file: c.file.clone(),
                        reason: format!("key {:?} does not hold role {role}", entry.name),
                    });
                    wrong_role.push((c.file.clone(), entry.name.clone()));
                }
                (None, Some((key, source))) => ignored.push(Ignored {
                    file: c.file.clone(),
                    reason: format!("signature by key {key:?} does not verify: {source}"),
                }),
                (None, None) => ignored.push(Ignored {
                    file: c.file.clone(),
                    reason: "no trusted key to check it".into(),
                }),
            }
        }
        let mut signers: Vec<(String, String)> = with_role.into_values().collect();
        signers.sort();
        Ok(Tally {
            role,
            need: self.threshold(role),
            signers: signers.iter().map(|(n, _)| n.clone()).collect(),
            counted_files: signers.into_iter().map(|(_, f)| f).collect(),
            ignored,
            wrong_role,
        })
    }

    /// [`TrustFile::count`] then [`Tally::check`]: succeeds only when the
    /// role's threshold is met.
    pub fn approve(&self, role: Role, data: &[u8], sigs: &[Candidate]) -> Result<Tally> {
        let t = self.count(role, data, sigs)?;
        t.check()?;
        Ok(t)
    }

    /// TUF-style rotation: `new_bytes` (signed by `sigs`) replaces `self`
    /// when its version is exactly `self.version + 1` and both the old and
    /// the new root thresholds signed those exact bytes.
    pub fn accept_rotation(&self, new_bytes: &[u8], sigs: &[Candidate]) -> Result<TrustFile> {
        let new = TrustFile::parse(new_bytes)?;
        if Some(new.version) != self.version.checked_add(1) {
            return Err(TrustError::RotationVersion {
                old: self.version,
                new: new.version,
            });
        }
        self.approve(Role::Root, new_bytes, sigs)
            .map_err(|e| TrustError::RotationOldRoot(Box::new(e)))?;
        new.approve(Role::Root, new_bytes, sigs)
            .map_err(|e| TrustError::RotationNewRoot(Box::new(e)))?;
        Ok(new)
    }

    /// Adds a key (or roles to an existing identical key), then validates.
    pub fn add_key(&mut self, name: &str, pk: &PublicKey, role: Role) -> Result<()> {
        let b64 = pk.to_base64();
        let existing = self
            .public_keys()?
            .iter()
            .position(|(_, k)| k.key_bytes() == pk.key_bytes());
        match existing {
            Some(i) => {
                if let Some(k) = self.keys.get_mut(i) {
                    k.roles.insert(role);
                }
            }
            None => self.keys.push(KeyEntry {
                name: name.to_owned(),
                public_key: b64,
                roles: BTreeSet::from([role]),
            }),
        }
        self.validate()
    }

    /// Sets a role's threshold, then validates.
    pub fn set_threshold(&mut self, role: Role, n: u32) -> Result<()> {
        self.thresholds.insert(role, n);
        self.validate()
    }
}

/// Key names name signature files: `[A-Za-z0-9._-]{1,64}`, not starting with `.`.
pub fn validate_key_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TrustError::KeyName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::minisig::SecretKey;

    fn keys(n: usize) -> Vec<SecretKey> {
        (0..n).map(|_| SecretKey::generate().unwrap()).collect()
    }

    fn sign(k: &SecretKey, name: &str, data: &[u8]) -> Candidate {
        Candidate {
            file: format!("x.{name}.minisig"),
            sig: Ok(k.sign(data, "c").unwrap()),
        }
    }

    fn trust(root: &[SecretKey], t: u32, models: &[SecretKey], mt: u32) -> TrustFile {
        let mut tf = TrustFile::new(
            root.iter()
                .enumerate()
                .map(|(i, k)| (format!("root{i}"), k.public_key()))
                .collect(),
            t,
        )
        .unwrap();
        for (i, k) in models.iter().enumerate() {
            tf.add_key(&format!("m{i}"), &k.public_key(), Role::Models)
                .unwrap();
        }
        tf.set_threshold(Role::Models, mt).unwrap();
        tf
    }

    #[test]
    fn threshold_counts_distinct_keys() {
        let r = keys(1);
        let m = keys(3);
        let tf = trust(&r, 1, &m, 2);
        let data = b"manifest";
        let ok = tf
            .approve(
                Role::Models,
                data,
                &[sign(&m[0], "a", data), sign(&m[2], "b", data)],
            )
            .unwrap();
        assert_eq!(ok.signers, vec!["m0", "m2"]);
        // The same key twice (two files) counts once.
        let e = tf
            .approve(
                Role::Models,
                data,
                &[sign(&m[0], "a", data), sign(&m[0], "b", data)],
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("below threshold: 1 of 2 required models"),
            "{e}"
        );
    }

    /// One bad signature never vetoes: each case lists the signatures, the
    /// expected refusal (None = accepted with signers m0, m1) and the
    /// ignored (file, reason) pairs.
    #[test]
    fn bad_signatures_are_ignored_not_fatal() {
        let r = keys(1);
        let m = keys(3);
        let tf = trust(&r, 1, &m, 2);
        let data = b"manifest";
        let mut evil = SecretKey::generate().unwrap();
        evil.key_id = m[2].key_id;
        let stranger = SecretKey::generate().unwrap();
        let junk = || Candidate {
            file: "x.junk.minisig".into(),
            sig: crate::minisig::parse_signature_bytes(b"junk\x1b[2K"),
        };
        let no_verify = "signature by key \"m2\" does not verify: signature does not verify (data changed or wrong key)";
        let good = || vec![sign(&m[0], "a", data), sign(&m[1], "b", data)];
        let with = |extra: Candidate| {
            let mut v = good();
            v.push(extra);
            v
        };
        // (what, signatures, refusal, ignored (file, reason))
        type Case<'a> = (
            &'a str,
            Vec<Candidate>,
            Option<String>,
            Vec<(&'a str, String)>,
        );
        let cases: Vec<Case> = vec![
            (
                "junk file",
                with(junk()),
                None,
                vec![(
                    "x.junk.minisig",
                    "signature: first line does not start with `untrusted comment: `".into(),
                )],
            ),
            (
                "trusted key id, other key",
                with(sign(&evil, "c", data)),
                None,
                vec![("x.c.minisig", no_verify.into())],
            ),
            (
                "trusted key over other bytes",
                with(sign(&m[2], "c", b"other bytes")),
                None,
                vec![("x.c.minisig", no_verify.into())],
            ),
            (
                "stranger",
                with(sign(&stranger, "s", data)),
                None,
                vec![(
                    "x.s.minisig",
                    format!("key id {} is not in the trust file", stranger.key_id),
                )],
            ),
            (
                "signer without the role",
                with(sign(&r[0], "r", data)),
                None,
                vec![("x.r.minisig", "key \"root0\" does not hold role models".into())],
            ),
            (
                "below threshold lists the ignored",
                vec![sign(&m[0], "a", data), sign(&m[2], "c", b"other bytes")],
                Some(format!(
                    "below threshold: 1 of 2 required models signatures (signed by m0; ignored x.c.minisig: {no_verify})"
                )),
                vec![("x.c.minisig", no_verify.into())],
            ),
            (
                "same key twice counts once",
                vec![sign(&m[0], "a", data), sign(&m[0], "b", data)],
                Some(
                    "below threshold: 1 of 2 required models signatures (signed by m0; ignored x.b.minisig: key \"m0\" is already counted)"
                        .into(),
                ),
                vec![("x.b.minisig", "key \"m0\" is already counted".into())],
            ),
        ];
        for (what, sigs, refusal, ignored) in cases {
            let t = tf.count(Role::Models, data, &sigs).unwrap();
            let got: Vec<(&str, String)> = t
                .ignored
                .iter()
                .map(|i| (i.file.as_str(), i.reason.clone()))
                .collect();
            assert_eq!(got, ignored, "{what}: ignored");
            match refusal {
                None => {
                    t.check().unwrap();
                    assert_eq!(t.signers, vec!["m0", "m1"], "{what}");
                    assert_eq!(
                        t.counted_files,
                        vec!["x.a.minisig", "x.b.minisig"],
                        "{what}"
                    );
                }
                Some(reason) => {
                    assert_eq!(t.check().unwrap_err().to_string(), reason, "{what}");
                    assert_eq!(t.missing(), 1, "{what}");
                }
            }
        }
    }

    #[test]
    fn ignored_file_names_are_escaped() {
        let i = Ignored {
            file: "manifest.json.\u{1b}[2Kok\u{9b}\u{202e}.minisig".into(),
            reason: "r".into(),
        };
        assert_eq!(
            i.to_string(),
            "manifest.json.\\x1b[2Kok\\x9b\\u{202e}.minisig: r"
        );
    }

    #[test]
    fn validation() {
        let r = keys(2);
        let e = TrustFile::new(vec![("a".into(), r[0].public_key())], 2).unwrap_err();
        assert!(e.to_string().contains("threshold of role root is 2"), "{e}");
        let e = TrustFile::new(
            vec![
                ("a".into(), r[0].public_key()),
                ("b".into(), r[0].public_key()),
            ],
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        let e = TrustFile::new(vec![("a/b".into(), r[0].public_key())], 1).unwrap_err();
        assert!(e.to_string().contains("invalid key name"), "{e}");
        let tf = TrustFile::new(vec![("a".into(), r[0].public_key())], 1).unwrap();
        let mut v = serde_json::to_value(&tf).unwrap();
        v["extra"] = 1.into();
        let e = TrustFile::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        assert_eq!(TrustFile::parse(&tf.to_bytes().unwrap()).unwrap(), tf);
    }

    #[test]
    fn rotation() {
        let old_root = keys(2);
        let new_root = keys(2);
        let old = trust(&old_root, 2, &[], 1);
        let mut new = old.clone();
        new.version = 2;
        new.keys.clear();
        for (i, k) in new_root.iter().enumerate() {
            new.keys.push(KeyEntry {
                name: format!("new{i}"),
                public_key: k.public_key().to_base64(),
                roles: BTreeSet::from([Role::Root]),
            });
        }
        let bytes = new.to_bytes().unwrap();
        let all: Vec<_> = old_root
            .iter()
            .chain(&new_root)
            .enumerate()
            .map(|(i, k)| sign(k, &i.to_string(), &bytes))
            .collect();
        assert_eq!(old.accept_rotation(&bytes, &all).unwrap(), new);
        // Only the old root signed.
        let e = old.accept_rotation(&bytes, &all[..2]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("trust rotation refused: new root: below threshold"),
            "{e}"
        );
        // Only the new root signed.
        let e = old.accept_rotation(&bytes, &all[2..]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("trust rotation refused: old root: below threshold"),
            "{e}"
        );
        // Version jump.
        let mut jump = new.clone();
        jump.version = 3;
        let jb = jump.to_bytes().unwrap();
        let sigs: Vec<_> = old_root
            .iter()
            .chain(&new_root)
            .enumerate()
            .map(|(i, k)| sign(k, &i.to_string(), &jb))
            .collect();
        let e = old.accept_rotation(&jb, &sigs).unwrap_err();
        assert!(
            e.to_string()
                .contains("new version 3 is not old version 1 + 1"),
            "{e}"
        );
    }
}
