//! A batch's signed summary (`batch-TIME.summary.json` and its detached
//! OpenPGP signature `….json.asc`, by the appliance's document key), and
//! the check that lets a second run skip a document whose answer is
//! already there and valid: the answer's receipt verifies under the
//! appliance's audit key, names a successful job on this very input
//! (SHA-256 of the file as it is now) and this answer (SHA-256 of the
//! answer file as it is now).

use airlock_formats::audit::entry::{Action, Outcome};
use airlock_formats::audit::job::JobFacts;
use airlock_formats::audit::note::NoteVerifier;
use airlock_formats::audit::receipt::Receipt;
use pgp::composed::{ArmorOptions, DetachedSignature, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::Password;
use serde::Serialize;

/// Schema string of a summary.
pub const SCHEMA: &str = "airlock-batch/1";

/// The summary of one batch.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub schema: &'static str,
    pub appliance: String,
    pub operator: String,
    /// The folder on the stick (escaped).
    pub folder: String,
    pub task: String,
    pub model: ModelFacts,
    /// RFC 3339 UTC.
    pub started: String,
    pub finished: String,
    pub items: Vec<Item>,
}

/// The model a batch ran on.
#[derive(Debug, Serialize)]
pub struct ModelFacts {
    pub name: String,
    pub version: u64,
    pub manifest_sha256: String,
}

/// One document of a batch.
#[derive(Debug, Serialize)]
pub struct Item {
    /// File name (escaped).
    pub input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    /// `ok`, `skipped` (a valid answer was there), `refused`, `failed`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
}

/// The summary as JSON (pretty, trailing newline).
pub fn to_json(s: &Summary) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(s).unwrap_or_default();
    v.push(b'\n');
    v
}

/// A detached, armored signature over `data` by `key`'s primary key.
pub fn sign(data: &[u8], key: &SignedSecretKey) -> Result<Vec<u8>, String> {
    let sig = DetachedSignature::sign_binary_data(
        rand::rngs::OsRng,
        &key.primary_key,
        &Password::empty(),
        HashAlgorithm::Sha512,
        data,
    )
    .map_err(|e| format!("sign the batch summary: {e}"))?;
    sig.to_armored_bytes(ArmorOptions::default())
        .map_err(|e| format!("sign the batch summary: {e}"))
}

/// Whether `answer` (bytes of the answer file) with `receipt` (bytes of
/// the receipt file) is a valid answer to the input with SHA-256
/// `input_sha256`: the reason when not.
pub fn answer_valid(
    input_sha256: &str,
    answer: &[u8],
    receipt: &[u8],
    audit_key: &NoteVerifier,
) -> Result<(), String> {
    let r = Receipt::parse(receipt).map_err(|e| format!("receipt: {e}"))?;
    let v = r.verify(audit_key).map_err(|e| format!("receipt: {e}"))?;
    if v.entry.action != Action::Job || v.entry.result != Outcome::Ok {
        return Err("the receipt does not record a finished job".into());
    }
    let facts = JobFacts::of(&v.entry).map_err(|e| e.to_string())?;
    if facts.input.map(|s| s.hash.as_str()) != Some(input_sha256) {
        return Err("the receipt names another input".into());
    }
    let sha = crate::job::input::hex(&<sha2::Sha256 as sha2::Digest>::digest(answer));
    if facts.output_sha256() != Some(sha.as_str()) {
        return Err("the answer file is not the one the receipt names".into());
    }
    Ok(())
}
