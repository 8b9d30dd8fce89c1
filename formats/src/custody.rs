//! Model custody on the store: which versions are installed (with who
//! imported them, when, signed by whom), which one is active, activation,
//! rollback, removal and clean-up. The records live in `state.json` next to
//! the anti-rollback record (see [`crate::state`]): the import writes a
//! version's custody record with its intent, so there is one record of
//! what is installed. Every change is one atomic replace of `state.json`
//! under the store lock; a version's files are deleted only after a state
//! that no longer lists it (with a `removing` tombstone) is durable, and
//! [`recover`] (at boot) or the next import finishes such a deletion.
//!
//! "Kept" (what [`remove`] refuses and [`prune`] leaves): [`keep`] and the
//! rules in `KEEP_RULES`.

use crate::at_rest::{self, AtRestError};
use crate::bundle;
use crate::escape;
use crate::import::{self, version_dir, ImportError};
use crate::manifest::{validate_name, Kind, ManifestError};
use crate::state::{Active, Removing, Signer, State, StateError, Version};
use crate::store::{self, StoreError};
use crate::trust::TrustFile;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Errors of custody operations; each names the operation and the model.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("{op}: {source}")]
    Name {
        op: &'static str,
        source: ManifestError,
    },
    #[error("{0}")]
    Lock(#[from] StoreError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("clean up store: {0}")]
    Clean(ImportError),
    #[error("list models {}: {source}", escape::path(path))]
    List { path: PathBuf, source: io::Error },
    #[error("{op} model {} version {version}: not installed", escape::text(name))]
    NotInstalled {
        op: &'static str,
        name: String,
        version: u64,
    },
    #[error("{op} model {}: no active version", escape::text(name))]
    NoActive { op: &'static str, name: String },
    #[error(
        "rollback model {}: no installed version below the active version {active}",
        escape::text(name)
    )]
    NoPrevious { name: String, active: u64 },
    #[error("remove model {} version {version}: {why}", escape::text(name))]
    Kept {
        name: String,
        version: u64,
        why: String,
    },
    #[error("activate refused: {0}")]
    // Boxed: AtRestError carries a BundleError and is large.
    AtRest(Box<AtRestError>),
    #[error("remove model {} version {version}: {source}", escape::text(name))]
    Remove {
        name: String,
        version: u64,
        // Boxed: ImportError is large.
        source: Box<ImportError>,
    },
}

type Result<T> = std::result::Result<T, CustodyError>;

impl From<AtRestError> for CustodyError {
    fn from(e: AtRestError) -> Self {
        CustodyError::AtRest(Box::new(e))
    }
}

/// One installed model name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledModel {
    pub name: String,
    /// The active version, if one was activated.
    pub active: Option<u64>,
    /// Installed versions, lowest first.
    pub versions: Vec<InstalledVersion>,
}

/// One installed version of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledVersion {
    pub version: u64,
    /// Payload bytes.
    pub size: u64,
    /// Signers counted at import (empty for a version imported before
    /// custody records existed).
    pub signers: Vec<Signer>,
    /// RFC 3339 UTC; `None` for a version without a custody record.
    pub imported_at: Option<String>,
    /// Importing account; `None` without a custody record.
    pub imported_by: Option<String>,
    pub manifest_sha256: String,
    pub active: bool,
    /// A job has run on it.
    pub used: bool,
    /// Why it is kept, if it is ([`keep`]; shown as one line).
    pub kept: Option<String>,
}

/// Result of [`activate`] and [`rollback`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activated {
    pub name: String,
    pub version: u64,
    /// The version active before (None when none was).
    pub previous: Option<u64>,
}

/// The directory of model `name` version `version`: what the sandbox binds
/// read-only for a worker (only the active version's; nothing else of the
/// store). The name is validated (it becomes a path component).
pub fn model_dir(store: &Path, name: &str, version: u64) -> Result<PathBuf> {
    validate_name(name).map_err(|source| CustodyError::Name {
        op: "model directory",
        source,
    })?;
    Ok(version_dir(store, Kind::Model, name, version))
}

/// The active version's directory of model `name`, after an at-rest check
/// against `trust` run now. Refused when no version is active or the check
/// fails. (The appliance checks at boot in a child and keeps the verdict
/// for the boot: the supervisor's `model_check::record::worker_model_dir`.)
pub fn active_model_dir(
    store: &Path,
    trust: &TrustFile,
    name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<PathBuf> {
    check_name("check model", name)?;
    let state = State::load(store)?;
    let version = state
        .active_version(name)
        .ok_or_else(|| CustodyError::NoActive {
            op: "check",
            name: name.to_owned(),
        })?;
    at_rest::verify_loaded(store, &state, trust, name, version, progress)?;
    model_dir(store, name, version)
}

/// Lists the installed models (committed version directories only).
pub fn models(store: &Path) -> Result<Vec<InstalledModel>> {
    let state = State::load(store)?;
    let kind_dir = store.join(Kind::Model.as_str());
    let list = |path: &Path, source| CustodyError::List {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for e in state.entries.iter().filter(|e| e.kind == Kind::Model) {
        let name_dir = kind_dir.join(&e.name);
        let rd = match fs::read_dir(&name_dir) {
            Ok(rd) => rd,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(list(&name_dir, err)),
        };
        let mut versions = Vec::new();
        for v in rd {
            let v = v.map_err(|err| list(&name_dir, err))?;
            let Some(ver) = v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if state.is_installed(Kind::Model, &e.name, ver) {
                versions.push(ver);
            }
        }
        if versions.is_empty() {
            continue;
        }
        versions.sort_unstable();
        let active = state.active_version(&e.name);
        let versions = versions
            .iter()
            .map(|&ver| describe(&state, store, &e.name, ver, active))
            .collect();
        out.push(InstalledModel {
            name: e.name.clone(),
            active,
            versions,
        });
    }
    Ok(out)
}

/// Makes `version` the active version of model `name`, after its at-rest
/// check against `trust`. Activating the active version re-checks it.
pub fn activate(store: &Path, trust: &TrustFile, name: &str, version: u64) -> Result<Activated> {
    check_name("activate model", name)?;
    let _lock = store::lock(store)?;
    let mut state = locked_state(store)?;
    activate_locked(store, &mut state, trust, "activate", name, version)
}

/// Activates the highest installed version below the active one.
pub fn rollback(store: &Path, trust: &TrustFile, name: &str) -> Result<Activated> {
    check_name("rollback model", name)?;
    let _lock = store::lock(store)?;
    let mut state = locked_state(store)?;
    let active = state
        .active_version(name)
        .ok_or_else(|| CustodyError::NoActive {
            op: "rollback",
            name: name.to_owned(),
        })?;
    let target = installed_versions(store, &state, name)?
        .into_iter()
        .filter(|&v| v < active)
        .max()
        .ok_or_else(|| CustodyError::NoPrevious {
            name: name.to_owned(),
            active,
        })?;
    activate_locked(store, &mut state, trust, "rollback", name, target)
}

/// Records that a job has run on model `name` version `version` (the job
/// path calls it after the first successful job): from then on the version
/// below it is no longer kept for a rollback. Idempotent.
pub fn mark_used(store: &Path, name: &str, version: u64) -> Result<()> {
    check_name("mark model used", name)?;
    let _lock = store::lock(store)?;
    let mut state = locked_state(store)?;
    require_installed(store, &state, "mark used", name, version)?;
    let existing = state
        .versions
        .iter_mut()
        .find(|v| v.kind == Kind::Model && v.name == name && v.version == version);
    match existing {
        Some(v) if v.used => return Ok(()),
        Some(v) => v.used = true,
        None => {
            // A version imported before custody records: record what the
            // directory says, importer unknown.
            let mut v = legacy_record(store, &state, name, version);
            v.used = true;
            state.put_version(v);
        }
    }
    state.save(store)?;
    Ok(())
}

/// Removes model `name` version `version` and reclaims its space; returns
/// the payload bytes freed. Refused (one line, nothing changed) for the
/// active version and for a version kept as the rollback target.
pub fn remove(store: &Path, name: &str, version: u64) -> Result<u64> {
    check_name("remove model", name)?;
    let _lock = store::lock(store)?;
    let mut state = locked_state(store)?;
    require_installed(store, &state, "remove", name, version)?;
    let installed = installed_versions(store, &state, name)?;
    if let Some(k) = keep(&state, name, version, &installed).filter(|&k| refuses_remove(k)) {
        return Err(CustodyError::Kept {
            name: name.to_owned(),
            version,
            why: k.to_string(),
        });
    }
    let size = describe(&state, store, name, version, None).size;
    remove_locked(store, &mut state, name, &[version])?;
    Ok(size)
}

/// Automatic clean-up of model `name`: removes every installed version
/// that is not kept ([`keep`], [`survives_prune`]); returns the versions removed.
pub fn prune(store: &Path, name: &str) -> Result<Vec<u64>> {
    check_name("prune model", name)?;
    let _lock = store::lock(store)?;
    let mut state = locked_state(store)?;
    let installed = installed_versions(store, &state, name)?;
    let gone: Vec<u64> = installed
        .iter()
        .copied()
        .filter(|&v| !keep(&state, name, v, &installed).is_some_and(survives_prune))
        .collect();
    if !gone.is_empty() {
        remove_locked(store, &mut state, name, &gone)?;
    }
    Ok(gone)
}

/// Startup clean-up: finishes interrupted removals and removes leftovers
/// of interrupted imports (as the next import would). Returns what was
/// removed (escaped paths). A store without `state.json` is refused.
pub fn recover(store: &Path) -> Result<Vec<String>> {
    if !store.join(crate::state::STATE_FILE).is_file() {
        return Err(StateError::Missing {
            path: escape::path(store),
        }
        .into());
    }
    let _lock = store::lock(store)?;
    let mut state = State::load(store)?;
    import::clean_leftovers(store, &mut state).map_err(CustodyError::Clean)
}

/// Why an installed version is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// No version of the name is active yet.
    NothingActive,
    /// The active version.
    Active,
    /// Newer than the active version (not activated yet, or rolled back from).
    Newer,
    /// The highest version below the active one, while the active one has
    /// not run a job.
    RollbackTarget { active: u64 },
}

/// What a [`Keep`] reason means for [`remove`] and [`prune`].
struct KeepRule {
    keep: fn(Keep) -> bool,
    /// `remove` refuses the version.
    refuses_remove: bool,
    /// `prune` leaves the version.
    survives_prune: bool,
}

/// The custody policy (data; one rule per reason).
const KEEP_RULES: &[KeepRule] = &[
    // A worker may be using the active version: never removed.
    KeepRule {
        keep: |k| k == Keep::Active,
        refuses_remove: true,
        survives_prune: true,
    },
    // The way back until the new version has proven itself by running a job.
    KeepRule {
        keep: |k| matches!(k, Keep::RollbackTarget { .. }),
        refuses_remove: true,
        survives_prune: true,
    },
    // A newer import not yet activated (or one rolled back from): the
    // officer's decision, so only an explicit removal takes it.
    KeepRule {
        keep: |k| k == Keep::Newer,
        refuses_remove: false,
        survives_prune: true,
    },
    // Nothing active: nothing is known to work; only explicit removals.
    KeepRule {
        keep: |k| k == Keep::NothingActive,
        refuses_remove: false,
        survives_prune: true,
    },
];

/// Why version `version` of model `name` is kept, if it is; `installed`
/// lists the installed versions of the name.
pub fn keep(state: &State, name: &str, version: u64, installed: &[u64]) -> Option<Keep> {
    let Some(active) = state.active_version(name) else {
        return Some(Keep::NothingActive);
    };
    if version == active {
        return Some(Keep::Active);
    }
    if version > active {
        return Some(Keep::Newer);
    }
    let previous = installed.iter().copied().filter(|&v| v < active).max();
    let active_used = state
        .versions
        .iter()
        .any(|v| v.kind == Kind::Model && v.name == name && v.version == active && v.used);
    (Some(version) == previous && !active_used).then_some(Keep::RollbackTarget { active })
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::NothingActive => write!(f, "no version is active yet"),
            Keep::Active => write!(f, "it is the active version; activate another first"),
            Keep::Newer => write!(f, "newer than the active version"),
            Keep::RollbackTarget { active } => write!(
                f,
                "kept as the rollback target until version {active} has run a job"
            ),
        }
    }
}

fn rule(k: Keep) -> Option<&'static KeepRule> {
    KEEP_RULES.iter().find(|r| (r.keep)(k))
}

/// Whether `remove` refuses a version kept for `k`.
pub fn refuses_remove(k: Keep) -> bool {
    rule(k).is_some_and(|r| r.refuses_remove)
}

/// Whether `prune` leaves a version kept for `k`.
pub fn survives_prune(k: Keep) -> bool {
    rule(k).is_some_and(|r| r.survives_prune)
}

fn check_name(op: &'static str, name: &str) -> Result<()> {
    validate_name(name).map_err(|source| CustodyError::Name { op, source })
}

/// Loads the state under the lock and finishes any leftover work first.
fn locked_state(store: &Path) -> Result<State> {
    let mut state = State::load(store)?;
    import::clean_leftovers(store, &mut state).map_err(CustodyError::Clean)?;
    Ok(state)
}

fn require_installed(
    store: &Path,
    state: &State,
    op: &'static str,
    name: &str,
    version: u64,
) -> Result<()> {
    let dir = version_dir(store, Kind::Model, name, version);
    if state.is_installed(Kind::Model, name, version) && dir.is_dir() {
        Ok(())
    } else {
        Err(CustodyError::NotInstalled {
            op,
            name: name.to_owned(),
            version,
        })
    }
}

/// Installed versions of model `name` (directories the state lists).
fn installed_versions(store: &Path, state: &State, name: &str) -> Result<Vec<u64>> {
    let name_dir = store.join(Kind::Model.as_str()).join(name);
    let rd = match fs::read_dir(&name_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CustodyError::List {
                path: name_dir,
                source,
            })
        }
    };
    let mut out = Vec::new();
    for v in rd {
        let v = v.map_err(|source| CustodyError::List {
            path: name_dir.clone(),
            source,
        })?;
        if let Some(ver) = v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
            if state.is_installed(Kind::Model, name, ver) {
                out.push(ver);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn activate_locked(
    store: &Path,
    state: &mut State,
    trust: &TrustFile,
    op: &'static str,
    name: &str,
    version: u64,
) -> Result<Activated> {
    require_installed(store, state, op, name, version)?;
    at_rest::verify_loaded(store, state, trust, name, version, &mut |_| {})?;
    let previous = state.active_version(name);
    if previous != Some(version) {
        state.active.retain(|a| a.name != name);
        state.active.push(Active {
            name: name.to_owned(),
            version,
        });
        state.active.sort_by(|a, b| a.name.cmp(&b.name));
        state.save(store)?;
    }
    Ok(Activated {
        name: name.to_owned(),
        version,
        previous,
    })
}

/// Removes versions of `name`: (1) one atomic state write drops their
/// records and adds `removing` tombstones (the commit point: from here they
/// are not installed); (2) their directories are moved aside and deleted;
/// (3) the tombstones are dropped. A crash after (1) is finished by
/// [`recover`] or the next import.
fn remove_locked(store: &Path, state: &mut State, name: &str, versions: &[u64]) -> Result<()> {
    for &v in versions {
        state.remove_version(Kind::Model, name, v);
        state.removing.push(Removing {
            kind: Kind::Model,
            name: name.to_owned(),
            version: v,
        });
    }
    state.save(store)?;
    import::clean_leftovers(store, state).map_err(|source| CustodyError::Remove {
        name: name.to_owned(),
        version: versions.first().copied().unwrap_or_default(),
        source: Box::new(source),
    })?;
    Ok(())
}

/// What the listing shows for one installed version.
fn describe(
    state: &State,
    store: &Path,
    name: &str,
    version: u64,
    active: Option<u64>,
) -> InstalledVersion {
    let installed = installed_versions(store, state, name).unwrap_or_default();
    let kept = keep(state, name, version, &installed).map(|k| k.to_string());
    let rec = state
        .versions
        .iter()
        .find(|v| v.kind == Kind::Model && v.name == name && v.version == version);
    let (rec, known) = match rec {
        Some(r) => (r.clone(), true),
        None => (legacy_record(store, state, name, version), false),
    };
    InstalledVersion {
        version,
        size: rec.size,
        signers: rec.signers,
        imported_at: known.then_some(rec.imported_at),
        imported_by: known.then_some(rec.imported_by),
        manifest_sha256: rec.manifest_sha256,
        active: active == Some(version),
        used: rec.used,
        kept,
    }
}

/// A custody record for a version installed before custody records: size
/// and manifest hash from its directory (not verified), importer unknown.
fn legacy_record(store: &Path, state: &State, name: &str, version: u64) -> Version {
    let dir = version_dir(store, Kind::Model, name, version);
    let (size, sha) = match bundle::open(&dir) {
        Ok(b) => (b.manifest.total_size(), b.manifest_sha256),
        Err(_) => (
            0,
            state
                .get(Kind::Model, name)
                .filter(|e| e.version == version)
                .map(|e| e.manifest_sha256.clone())
                .unwrap_or_default(),
        ),
    };
    Version {
        kind: Kind::Model,
        name: name.to_owned(),
        version,
        manifest_sha256: sha,
        size,
        signers: Vec::new(),
        imported_at: "unknown".into(),
        imported_by: "unknown".into(),
        used: false,
    }
}
