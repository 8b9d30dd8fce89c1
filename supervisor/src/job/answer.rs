//! The answer that goes back: its text (a short header naming the job,
//! then the model's answer), sealed to the admin recipients and signed
//! with the appliance's key, and the facts the audit entry records.

use crate::document::seal::{seal, Form, SealError};
use crate::job::setup::ModelChoice;
use airlock_formats::audit::entry::plaintext_tag;
use airlock_formats::audit::job::JobRecord;
use pgp::composed::{SignedPublicKey, SignedSecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What the header names.
pub struct Header<'a> {
    pub job: u64,
    pub appliance: &'a str,
    pub document: &'a str,
    pub input_sha256: &'a str,
    pub task: &'a str,
    pub question: Option<&'a str>,
    pub language: Option<&'a str>,
    pub model: &'a ModelChoice,
    pub operator: &'a str,
    pub when_utc: &'a str,
    pub parts: usize,
}

/// The plaintext of the answer file.
pub fn text(h: &Header, answer: &str) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(answer.len() + 512));
    s.push_str(&format!(
        "Airlock answer (job {} on {})\n\
         Document: {} (SHA-256 {})\n\
         Task: {}\n",
        h.job, h.appliance, h.document, h.input_sha256, h.task
    ));
    if let Some(q) = h.question {
        s.push_str(&format!("Question: {q}\n"));
    }
    if let Some(l) = h.language {
        s.push_str(&format!("Language: {l}\n"));
    }
    s.push_str(&format!(
        "Model: {} version {} (manifest SHA-256 {})\n\
         Operator: {}\nDate: {} UTC\nParts: {}\n\n",
        h.model.name, h.model.version, h.model.manifest_sha256, h.operator, h.when_utc, h.parts
    ));
    s.push_str(answer.trim_end());
    s.push('\n');
    s
}

/// The sealed answer and its hashes.
pub struct Sealed {
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// Keyed tag of the answer plaintext.
    pub tag: Option<String>,
}

/// Seals `plain` for `recipients`, signed by `key`.
pub fn seal_answer(
    plain: &str,
    key: &SignedSecretKey,
    recipients: &[SignedPublicKey],
    now: u32,
    tag_key: Option<&[u8; 32]>,
) -> Result<Sealed, SealError> {
    let bytes = seal(plain, key, recipients, now, Form::Binary)?;
    let sha256 = crate::job::input::hex(&Sha256::digest(&bytes));
    Ok(Sealed {
        bytes,
        sha256,
        tag: tag_key.map(|k| plaintext_tag(k, plain.as_bytes())),
    })
}

/// The audit record of a job so far.
pub fn record(
    task: &str,
    input: Option<(&str, &str)>,
    input_tag: Option<String>,
    model: Option<&ModelChoice>,
) -> JobRecord {
    JobRecord {
        task: Some(task.to_string()),
        input: input.map(|(n, h)| {
            (
                airlock_formats::audit::entry::sanitise_name(n.as_bytes()),
                h.to_string(),
            )
        }),
        input_tag,
        model: model.map(|m| m.manifest_sha256.clone()),
        output: None,
        output_tag: None,
        tokens: None,
    }
}
