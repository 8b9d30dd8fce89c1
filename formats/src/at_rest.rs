//! Integrity at rest: an installed model version is checked against its
//! signed manifest before a worker is given its files (at boot and at
//! activation). The check is a full re-hash (see docs/bundles.md, "At-rest
//! check", for the measured cost and why not fs-verity or a sealed
//! record): the only root of trust available at boot, before anyone logs
//! in, is the trust file in the image, so every byte is compared with the
//! SHA-256 its signed manifest lists. Nothing is written.

use crate::bundle::{self, BundleError};
use crate::escape;
use crate::import::version_dir;
use crate::manifest::{validate_name, Kind, ManifestError};
use crate::state::{State, StateError};
use crate::trust::TrustFile;
use std::path::Path;

/// Errors of the at-rest check; each names the model version and what failed.
#[derive(Debug, thiserror::Error)]
pub enum AtRestError {
    #[error("check model at rest: {0}")]
    Name(#[from] ManifestError),
    #[error("check model at rest: {0}")]
    State(#[from] StateError),
    #[error(
        "check model {} version {version} at rest: not installed",
        escape::text(name)
    )]
    NotInstalled { name: String, version: u64 },
    #[error(
        "model {} version {version} fails its at-rest check: {source}",
        escape::text(name)
    )]
    Bundle {
        name: String,
        version: u64,
        // Boxed: BundleError is large and every Result here carries it.
        source: Box<BundleError>,
    },
    #[error("model {} version {version} fails its at-rest check: its manifest says {} {} version {found}", escape::text(name), kind, escape::text(found_name))]
    Location {
        name: String,
        version: u64,
        kind: Kind,
        found_name: String,
        found: u64,
    },
    #[error("model {} version {version} fails its at-rest check: manifest.json is not the one imported (sha256 {found}, recorded {recorded})", escape::text(name))]
    ManifestChanged {
        name: String,
        version: u64,
        found: String,
        recorded: String,
    },
}

/// Checks model `name` version `version` in `store` against its signed
/// manifest: layout (nothing added, removed, no symlink), signatures with
/// threshold against `trust` (the image's trust file), the manifest is the
/// one recorded at import, and every payload's size and SHA-256 (each file
/// read once). A file edited in place is named in the error. `progress`
/// gets byte counts (the console shows a bar for large models).
pub fn verify_at_rest(
    store: &Path,
    trust: &TrustFile,
    name: &str,
    version: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), AtRestError> {
    validate_name(name)?;
    let state = State::load(store)?;
    verify_loaded(store, &state, trust, name, version, progress)
}

/// [`verify_at_rest`] with the state already loaded (under the store lock).
pub(crate) fn verify_loaded(
    store: &Path,
    state: &State,
    trust: &TrustFile,
    name: &str,
    version: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), AtRestError> {
    let not_installed = || AtRestError::NotInstalled {
        name: name.to_owned(),
        version,
    };
    if !state.is_installed(Kind::Model, name, version) {
        return Err(not_installed());
    }
    let fail = |source| AtRestError::Bundle {
        name: name.to_owned(),
        version,
        source: Box::new(source),
    };
    let dir = version_dir(store, Kind::Model, name, version);
    let (b, _tally) = bundle::open_verified(&dir, trust).map_err(fail)?;
    let m = &b.manifest;
    if m.kind != Kind::Model || m.name != name || m.version != version {
        return Err(AtRestError::Location {
            name: name.to_owned(),
            version,
            kind: m.kind,
            found_name: m.name.clone(),
            found: m.version,
        });
    }
    // The manifest recorded at import (custody record, or the anti-rollback
    // record for the newest version of a store older than custody records).
    let recorded = state
        .versions
        .iter()
        .find(|v| v.kind == Kind::Model && v.name == name && v.version == version)
        .map(|v| v.manifest_sha256.clone())
        .or_else(|| {
            state
                .get(Kind::Model, name)
                .filter(|e| e.version == version)
                .map(|e| e.manifest_sha256.clone())
        });
    if let Some(recorded) = recorded {
        if recorded != b.manifest_sha256 {
            return Err(AtRestError::ManifestChanged {
                name: name.to_owned(),
                version,
                found: b.manifest_sha256.clone(),
                recorded,
            });
        }
    }
    b.verify_payloads(progress).map_err(fail)
}
