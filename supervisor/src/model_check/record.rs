//! This boot's at-rest verdict per model, and the gate a worker's model
//! directory passes: [`worker_model_dir`].
//!
//! The record is one file per model under [`RECORD_DIR`] (a tmpfs: it lasts
//! this boot only), holding one [`Line`] (`ok NAME VERSION BYTES MILLIS` or
//! `refused NAME VERSION REASON`), replaced atomically. The `model-check`
//! child writes it at boot; a console's `activate` or `rollback`, which
//! re-hash the version they make active, write it again. A model without a
//! file, or whose file names another version than the active one, is not
//! checked in this boot and no worker gets it.

use super::line::{self, Line, LineError};
use airlock_formats::custody;
use airlock_formats::escape;
use airlock_formats::fsutil::{self, FsError};
use airlock_formats::manifest::validate_name;
use airlock_formats::state::State;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where the appliance keeps the record (tmpfs, written by root only).
pub const RECORD_DIR: &str = "/run/airlock/model-check";
/// Largest record file read, in bytes.
pub const MAX_RECORD: u64 = line::MAX_LINE as u64 + 1;

/// Failing operation on the record.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("model-check record: a {0} line names no model")]
    NoModel(&'static str),
    #[error("model-check record: create {}: {source}", escape::path(path))]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model-check record: {0}")]
    Write(#[from] FsError),
    #[error("model-check record: read {}: {source}", escape::path(path))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model-check record {}: {source}", escape::path(path))]
    Parse { path: PathBuf, source: LineError },
}

/// Why a worker may not be given a model's directory.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("model {}: not a model name", escape::text(.0))]
    Name(String),
    #[error("model {name}: read the store's state: {reason}")]
    State { name: String, reason: String },
    #[error("model {name}: no active version")]
    NoActive { name: String },
    #[error(
        "model {name} version {version} is not checked at rest in this boot \
         (the boot check is still running or failed; `activate {name} {version}` checks it now)"
    )]
    NotChecked { name: String, version: u64 },
    #[error("model {name} version {version} REFUSED at rest: {reason}")]
    Refused {
        name: String,
        version: u64,
        reason: String,
    },
    #[error("model {name}: {reason}")]
    Record { name: String, reason: String },
}

/// Replaces the record of the model `l` is about with `l`.
pub fn write(dir: &Path, l: &Line) -> Result<(), RecordError> {
    let kind = match l {
        Line::Ok { .. } => "ok",
        Line::Refused { .. } => "refused",
        Line::Checking { .. } => "checking",
        Line::Recovered { .. } => "recovered",
        Line::Error { .. } => "error",
    };
    let Some((name, _)) = l.model() else {
        return Err(RecordError::NoModel(kind));
    };
    std::fs::create_dir_all(dir).map_err(|source| RecordError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    fsutil::write_atomic(dir, name, format!("{l}\n").as_bytes())?;
    Ok(())
}

/// The record of model `name`, if there is one.
pub fn read(dir: &Path, name: &str) -> Result<Option<Line>, RecordError> {
    let path = dir.join(name);
    let read_err = |source| RecordError::Read {
        path: path.clone(),
        source,
    };
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut text = String::new();
    f.take(MAX_RECORD + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    let first = text.lines().next().unwrap_or("");
    if text.len() as u64 > MAX_RECORD {
        return Err(RecordError::Parse {
            path,
            source: LineError::TooLong,
        });
    }
    line::parse(first)
        .map(Some)
        .map_err(|source| RecordError::Parse { path, source })
}

/// The active version's directory of model `name`, only if this boot's
/// at-rest check passed for that very version (at boot, or by a later
/// `activate`/`rollback` in this boot). The one way the job path gets a
/// model directory for a worker.
pub fn worker_model_dir(store: &Path, record: &Path, name: &str) -> Result<PathBuf, Refusal> {
    if validate_name(name).is_err() {
        return Err(Refusal::Name(name.to_owned()));
    }
    let state = State::load(store).map_err(|e| Refusal::State {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    let version = state
        .active_version(name)
        .ok_or_else(|| Refusal::NoActive {
            name: name.to_owned(),
        })?;
    let not_checked = || Refusal::NotChecked {
        name: name.to_owned(),
        version,
    };
    match read(record, name) {
        Ok(Some(Line::Ok { version: v, .. })) if v == version => {
            custody::model_dir(store, name, version).map_err(|e| Refusal::Record {
                name: name.to_owned(),
                reason: e.to_string(),
            })
        }
        Ok(Some(Line::Refused {
            version: v, reason, ..
        })) if v == version => Err(Refusal::Refused {
            name: name.to_owned(),
            version,
            reason,
        }),
        Ok(_) => Err(not_checked()),
        Err(e) => Err(Refusal::Record {
            name: name.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Records the outcome of an `activate` of model `name` to `version`
/// (`None` for a `rollback`, whose target is not known beforehand; both
/// re-hash the version they make active): passed → `ok`; refused by its
/// at-rest check while `version` is the active one (re-activating an
/// edited version) → `refused`; anything else leaves the record as it is.
pub fn after_activation(
    dir: &Path,
    store: &Path,
    name: &str,
    version: Option<u64>,
    result: &Result<custody::Activated, custody::CustodyError>,
    millis: u64,
) -> Result<(), RecordError> {
    match result {
        Ok(a) => {
            let bytes = custody::models(store)
                .ok()
                .and_then(|ms| ms.into_iter().find(|m| m.name == name))
                .and_then(|m| m.versions.into_iter().find(|v| v.version == a.version))
                .map(|v| v.size)
                .unwrap_or(0);
            write(
                dir,
                &Line::Ok {
                    name: name.to_owned(),
                    version: a.version,
                    bytes,
                    millis,
                },
            )
        }
        Err(custody::CustodyError::AtRest(e)) => {
            let active = State::load(store).ok().and_then(|s| s.active_version(name));
            match version {
                Some(v) if active == Some(v) => write(dir, &Line::refused(name, v, &e.to_string())),
                _ => Ok(()),
            }
        }
        Err(_) => Ok(()),
    }
}
