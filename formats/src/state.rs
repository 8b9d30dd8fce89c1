//! Anti-rollback state: per (kind, name) the highest accepted version and
//! the SHA-256 of its manifest. A lower version is refused; an equal version
//! only with the identical manifest. Stored as `state.json`, replaced
//! atomically (temp file, fsync, rename, fsync of the directory).

use crate::fsutil::{write_atomic, FsError};
use crate::manifest::{validate_name, Kind};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// Schema string of the state file.
pub const SCHEMA: &str = "airlock-state/1";
/// File name of the state inside the store directory.
pub const STATE_FILE: &str = "state.json";
/// Largest state file read.
pub const MAX_STATE_LEN: u64 = 16 * 1024 * 1024;

/// Errors of this module; each names the failing operation or check.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("read state {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("store {path} has no {STATE_FILE} (anti-rollback state missing): refused; a new store is initialised, a store that lost its state is recovered, each explicitly")]
    Missing { path: String },
    #[error("state file {0} is larger than 16 MiB")]
    TooLarge(String),
    #[error("state file {path}: {}", crate::escape::text(msg))]
    Parse { path: String, msg: String },
    #[error("rollback refused: {kind} {name} version {version} is lower than installed version {installed}")]
    Rollback {
        kind: Kind,
        name: String,
        version: u64,
        installed: u64,
    },
    #[error("{kind} {name} version {version} is already installed with a different manifest")]
    SameVersionDifferentManifest {
        kind: Kind,
        name: String,
        version: u64,
    },
    #[error("write state: {0}")]
    Write(#[from] FsError),
    #[error("serialise state: {0}")]
    Serialise(String),
}

type Result<T> = std::result::Result<T, StateError>;

/// One (kind, name) record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub kind: Kind,
    pub name: String,
    pub version: u64,
    /// SHA-256 (hex) of the accepted manifest bytes.
    pub manifest_sha256: String,
}

/// A version directory moved into place but not (yet) committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub kind: Kind,
    pub name: String,
    pub version: u64,
    pub manifest_sha256: String,
    /// `true`: left for the caller to commit (a system bundle waiting for
    /// its boot and health check), kept by later imports. `false`: the
    /// intent of an import in progress; if still present at the next
    /// import, that import was interrupted and its directory is removed.
    pub deferred: bool,
}

/// A key whose signature counted at import.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signer {
    /// Key name in the trust file at import time.
    pub name: String,
    /// minisign key id (16 upper-case hex digits).
    pub key_id: String,
}

/// Custody record of one installed version directory, written by the
/// import together with its intent (see [`crate::custody`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub kind: Kind,
    pub name: String,
    pub version: u64,
    pub manifest_sha256: String,
    /// Payload bytes (sum of the manifest's file sizes).
    pub size: u64,
    pub signers: Vec<Signer>,
    /// RFC 3339 UTC time of the import.
    pub imported_at: String,
    /// Account that imported it (given by the caller).
    pub imported_by: String,
    /// Whether a job has run on it ([`crate::custody::mark_used`]).
    #[serde(default)]
    pub used: bool,
}

/// The active version of a model name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Active {
    pub name: String,
    pub version: u64,
}

/// A version whose removal was committed (no longer listed) but whose
/// directory may still exist; deleted by the next clean-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removing {
    pub kind: Kind,
    pub name: String,
    pub version: u64,
}

/// The whole state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub schema: String,
    pub entries: Vec<Entry>,
    /// Version directories in place but not committed (absent when empty,
    /// so older state files parse unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
    /// Custody records of installed versions (absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<Version>,
    /// Active version per model name (absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<Active>,
    /// Removals committed, directories not yet deleted (absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<Removing>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            schema: SCHEMA.into(),
            entries: Vec::new(),
            pending: Vec::new(),
            versions: Vec::new(),
            active: Vec::new(),
            removing: Vec::new(),
        }
    }
}

/// What accepting a (kind, name, version) would mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing of this (kind, name) accepted yet.
    New,
    /// Higher than the installed version.
    Upgrade { from: u64 },
    /// Same version, identical manifest.
    Same,
}

impl State {
    /// Loads `dir/state.json`. A missing file is an error, never the empty
    /// state: an empty state would accept any version (rollback) and let
    /// the next import treat every installed version as unknown. A new
    /// store gets its empty state from [`crate::store::init`].
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let shown = crate::escape::path(&path);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::Missing {
                    path: crate::escape::path(dir),
                })
            }
            Err(source) => {
                return Err(StateError::Read {
                    path: shown,
                    source,
                })
            }
        };
        let mut bytes = Vec::new();
        f.take(MAX_STATE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| StateError::Read {
                path: shown.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_STATE_LEN {
            return Err(StateError::TooLarge(shown));
        }
        Self::parse(&bytes).map_err(|msg| StateError::Parse { path: shown, msg })
    }

    /// Parses and validates state bytes.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let s: State = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.schema != SCHEMA {
            return Err(format!("schema {:?} is not {SCHEMA:?}", s.schema.as_str()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for e in &s.entries {
            validate_name(&e.name).map_err(|e| e.to_string())?;
            if !seen.insert((e.kind, e.name.as_str())) {
                return Err(format!("{} {} recorded twice", e.kind, e.name));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &s.pending {
            validate_name(&p.name).map_err(|e| e.to_string())?;
            if !seen.insert((p.kind, p.name.as_str(), p.version)) {
                return Err(format!(
                    "{} {} version {} pending twice",
                    p.kind, p.name, p.version
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &s.versions {
            validate_name(&v.name).map_err(|e| e.to_string())?;
            if !seen.insert((v.kind, v.name.as_str(), v.version)) {
                return Err(format!(
                    "{} {} version {} has two custody records",
                    v.kind, v.name, v.version
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &s.active {
            validate_name(&a.name).map_err(|e| e.to_string())?;
            if !seen.insert(a.name.as_str()) {
                return Err(format!("model {} has two active versions", a.name));
            }
        }
        for r in &s.removing {
            validate_name(&r.name).map_err(|e| e.to_string())?;
        }
        Ok(s)
    }

    /// The record of (kind, name), if any.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.kind == kind && e.name == name)
    }

    /// Anti-rollback check of a candidate.
    pub fn check(
        &self,
        kind: Kind,
        name: &str,
        version: u64,
        manifest_sha256: &str,
    ) -> Result<Decision> {
        match self.get(kind, name) {
            None => Ok(Decision::New),
            Some(e) if version > e.version => Ok(Decision::Upgrade { from: e.version }),
            Some(e) if version == e.version && e.manifest_sha256 == manifest_sha256 => {
                Ok(Decision::Same)
            }
            Some(e) if version == e.version => Err(StateError::SameVersionDifferentManifest {
                kind,
                name: name.to_owned(),
                version,
            }),
            Some(e) => Err(StateError::Rollback {
                kind,
                name: name.to_owned(),
                version,
                installed: e.version,
            }),
        }
    }

    /// Records an accepted version (after [`State::check`]).
    pub fn record(&mut self, kind: Kind, name: &str, version: u64, manifest_sha256: &str) {
        let entry = Entry {
            kind,
            name: name.to_owned(),
            version,
            manifest_sha256: manifest_sha256.to_owned(),
        };
        match self
            .entries
            .iter_mut()
            .find(|e| e.kind == kind && e.name == name)
        {
            Some(e) => *e = entry,
            None => self.entries.push(entry),
        }
        self.entries
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    }

    /// Adds (or replaces) the pending record of (kind, name, version).
    pub fn add_pending(&mut self, p: Pending) {
        self.remove_pending(p.kind, &p.name, p.version);
        self.pending.push(p);
        self.pending
            .sort_by(|a, b| (a.kind, &a.name, a.version).cmp(&(b.kind, &b.name, b.version)));
    }

    /// Removes the pending record of (kind, name, version); returns it.
    pub fn remove_pending(&mut self, kind: Kind, name: &str, version: u64) -> Option<Pending> {
        let i = self
            .pending
            .iter()
            .position(|p| p.kind == kind && p.name == name && p.version == version)?;
        Some(self.pending.remove(i))
    }

    /// Whether (kind, name, version) is covered by the committed record
    /// (at or below the recorded version).
    pub fn covers(&self, kind: Kind, name: &str, version: u64) -> bool {
        self.get(kind, name).is_some_and(|e| version <= e.version)
    }

    /// Adds (or replaces) the custody record of (kind, name, version).
    pub fn put_version(&mut self, v: Version) {
        self.remove_version(v.kind, &v.name, v.version);
        self.versions.push(v);
        self.versions
            .sort_by(|a, b| (a.kind, &a.name, a.version).cmp(&(b.kind, &b.name, b.version)));
    }

    /// Removes the custody record of (kind, name, version); returns it.
    pub fn remove_version(&mut self, kind: Kind, name: &str, version: u64) -> Option<Version> {
        let i = self
            .versions
            .iter()
            .position(|v| v.kind == kind && v.name == name && v.version == version)?;
        Some(self.versions.remove(i))
    }

    /// The active version of model `name`, if any.
    pub fn active_version(&self, name: &str) -> Option<u64> {
        self.active
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.version)
    }

    /// Whether the version directory of (kind, name, version) is
    /// committed and listed: covered by the record, not an uncommitted
    /// intent, not being removed.
    pub fn is_installed(&self, kind: Kind, name: &str, version: u64) -> bool {
        let same = |k: Kind, n: &str, v: u64| k == kind && n == name && v == version;
        self.covers(kind, name, version)
            && !self
                .pending
                .iter()
                .any(|p| same(p.kind, &p.name, p.version))
            && !self
                .removing
                .iter()
                .any(|r| same(r.kind, &r.name, r.version))
    }

    /// Writes `dir/state.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StateError::Serialise(e.to_string()))?;
        bytes.push(b'\n');
        write_atomic(dir, STATE_FILE, &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rollback_rules() {
        let mut s = State::default();
        assert_eq!(s.check(Kind::Model, "m", 5, "aa").unwrap(), Decision::New);
        s.record(Kind::Model, "m", 5, "aa");
        assert_eq!(
            s.check(Kind::Model, "m", 6, "bb").unwrap(),
            Decision::Upgrade { from: 5 }
        );
        assert_eq!(s.check(Kind::Model, "m", 5, "aa").unwrap(), Decision::Same);
        let e = s.check(Kind::Model, "m", 5, "bb").unwrap_err();
        assert!(
            e.to_string()
                .contains("already installed with a different manifest"),
            "{e}"
        );
        let e = s.check(Kind::Model, "m", 4, "aa").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rollback refused: model m version 4 is lower than installed version 5"
        );
        // Kinds are separate namespaces.
        assert_eq!(s.check(Kind::System, "m", 1, "aa").unwrap(), Decision::New);
    }

    #[test]
    fn save_load_atomic() {
        let d = tempfile::tempdir().unwrap();
        let e = State::load(d.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "store {} has no state.json (anti-rollback state missing): refused; a new store is initialised, a store that lost its state is recovered, each explicitly",
                d.path().display()
            )
        );
        let mut s = State::default();
        s.record(Kind::System, "airlock", 2, "cc");
        s.record(Kind::Model, "m", 1, "aa");
        s.save(d.path()).unwrap();
        assert_eq!(State::load(d.path()).unwrap(), s);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        std::fs::write(
            d.path().join(STATE_FILE),
            b"{\"schema\":\"airlock-state/1\",\"entries\":[],\"x\":1}",
        )
        .unwrap();
        let e = State::load(d.path()).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
    }
}
