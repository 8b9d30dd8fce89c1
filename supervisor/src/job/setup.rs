//! What a job needs before it reads a byte of a document, each refused
//! with its own one-line reason: the task table, the model (an active
//! version this boot's at-rest check passed), the operator session's
//! document keys, the admin recipients the answer is sealed to.

use crate::document::recipients;
use crate::identity::pgpkey;
use crate::identity::vault::DocumentSecret;
use airlock_formats::custody;
use airlock_formats::escape;
use airlock_formats::manifest::{Manifest, MANIFEST_FILE};
use airlock_formats::tasks::{TaskTable, BUNDLE_TASKS, IMAGE_TASKS};
use pgp::composed::{SignedPublicKey, SignedSecretKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Failing step of preparing a job.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SetupError {
    #[error("the task table {IMAGE_TASKS} is unusable: {0}")]
    Tasks(String),
    #[error("no active model: an officer imports and activates one (see 'models')")]
    NoModel,
    #[error("{0} models are active ({1}); choose one with --model NAME")]
    SeveralModels(usize, String),
    #[error("model {0} has no active version; see 'models'")]
    NotActive(String),
    #[error("{0}")]
    NotChecked(String),
    #[error("model {name}: read {MANIFEST_FILE}: {reason}")]
    Manifest { name: String, reason: String },
    #[error("model {0}: its manifest names no GGUF file (not a model bundle)")]
    NotAModel(String),
    #[error("model {name}: its task table is unusable: {reason}")]
    BundleTasks { name: String, reason: String },
    #[error("this session holds no document key (log in as an operator)")]
    NoKey,
    #[error("the document key does not load: {0}")]
    Key(String),
    #[error("answers cannot be sealed: {0}")]
    Recipients(String),
}

/// The model a job runs on.
#[derive(Clone, Debug)]
pub struct ModelChoice {
    pub name: String,
    pub version: u64,
    /// The version's directory (bound read-only at `/model` in the worker).
    pub dir: PathBuf,
    /// The GGUF, relative to `dir`.
    pub gguf: String,
    /// SHA-256 of the version's manifest.json.
    pub manifest_sha256: String,
    /// The model's context length (tokens).
    pub context_length: u64,
}

/// The image's task table, merged with the model bundle's own when it
/// brings one (signed with the model, checked at rest with it).
pub fn tasks(image: &Path, model: Option<&ModelChoice>) -> Result<TaskTable, SetupError> {
    let bytes = std::fs::read(image).map_err(|e| SetupError::Tasks(e.to_string()))?;
    let table = TaskTable::parse(&bytes).map_err(|e| SetupError::Tasks(e.to_string()))?;
    let Some(m) = model else {
        return Ok(table);
    };
    match std::fs::read(m.dir.join(BUNDLE_TASKS)) {
        Ok(b) => {
            let bundle = TaskTable::parse(&b).map_err(|e| SetupError::BundleTasks {
                name: m.name.clone(),
                reason: e.to_string(),
            })?;
            table
                .with_bundle(&bundle)
                .map_err(|e| SetupError::BundleTasks {
                    name: m.name.clone(),
                    reason: e.to_string(),
                })
        }
        Err(_) => Ok(table),
    }
}

/// The active model to run on: `want`, or the only active one.
pub fn model(store: &Path, record: &Path, want: Option<&str>) -> Result<ModelChoice, SetupError> {
    let installed = if store.join("state.json").is_file() {
        custody::models(store).map_err(|e| SetupError::NotChecked(e.to_string()))?
    } else {
        Vec::new()
    };
    let active: Vec<&custody::InstalledModel> =
        installed.iter().filter(|m| m.active.is_some()).collect();
    let name = match want {
        Some(w) => {
            if !active.iter().any(|m| m.name == w) {
                return Err(SetupError::NotActive(escape::text(w).into_owned()));
            }
            w.to_string()
        }
        None => match active.as_slice() {
            [] => return Err(SetupError::NoModel),
            [one] => one.name.clone(),
            many => {
                return Err(SetupError::SeveralModels(
                    many.len(),
                    many.iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                ))
            }
        },
    };
    let version = active
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.active)
        .ok_or_else(|| SetupError::NotActive(name.clone()))?;
    let dir = crate::model_check::record::worker_model_dir(store, record, &name)
        .map_err(|e| SetupError::NotChecked(e.to_string()))?;
    let bytes = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| SetupError::Manifest {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    let manifest = Manifest::parse(&bytes).map_err(|e| SetupError::Manifest {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    let section = manifest
        .model
        .ok_or_else(|| SetupError::NotAModel(name.clone()))?;
    Ok(ModelChoice {
        name,
        version,
        dir,
        gguf: section.gguf,
        manifest_sha256: crate::job::input::hex(&Sha256::digest(&bytes)),
        context_length: section.context_length,
    })
}

/// The session's document keys, the active one first.
pub fn keys(docs: &[DocumentSecret]) -> Result<Vec<SignedSecretKey>, SetupError> {
    if docs.is_empty() {
        return Err(SetupError::NoKey);
    }
    let mut ordered: Vec<&DocumentSecret> = docs.iter().filter(|d| d.active).collect();
    ordered.extend(docs.iter().filter(|d| !d.active));
    ordered
        .into_iter()
        .map(|d| pgpkey::parse_secret(&d.secret).map_err(|e| SetupError::Key(e.to_string())))
        .collect()
}

/// The image's admin recipients.
pub fn recipients(dir: &Path, now: u32) -> Result<Vec<SignedPublicKey>, SetupError> {
    recipients::load_image_dir(dir, now).map_err(|e| SetupError::Recipients(e.to_string()))
}
