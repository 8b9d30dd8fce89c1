//! The layout of a `job` entry: which of its subjects is the input, the
//! model and the answer, and where the task is named. The job path fills
//! an entry with [`JobRecord::subjects`] and [`JobRecord::detail`]; the
//! host (receipts, reports) reads it back with [`JobFacts::of`].
//!
//! Subjects, in this order (a refused or failed job stops at what existed):
//! 1. `ciphertext` with the input file's sanitised name: SHA-256 of the
//!    input as it was on the stick;
//! 2. `plaintext`: keyed tag of the input plaintext;
//! 3. `model`: SHA-256 of the active model's manifest.json;
//! 4. `ciphertext` named `NAME.answer.gpg`: SHA-256 of the answer file as
//!    written (the output ciphertext, `output_sha256`);
//! 5. `plaintext`: keyed tag of the answer plaintext.
//!
//! `detail`: `task=<name>` first, then `tokens_in=<n> tokens_out=<n>`
//! when known. Read back by kind, not position: the first ciphertext is
//! the input, the second the output; likewise for plaintext tags.

use crate::audit::entry::{Action, Entry, Subject, SubjectKind};

/// Errors of this module; each names the failing step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("read job facts: entry {seq} is a {action} entry, not a job")]
    NotJob { seq: u64, action: Action },
}

/// The hashes and names of one job, as the job path records them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRecord {
    /// Task template name (`summarize`, `extract`, …): `a-z 0-9 -`.
    pub task: Option<String>,
    /// (sanitised name, SHA-256 hex) of the input ciphertext.
    pub input: Option<(String, String)>,
    /// Keyed tag of the input plaintext.
    pub input_tag: Option<String>,
    /// SHA-256 hex of the model's manifest.json.
    pub model: Option<String>,
    /// (sanitised name, SHA-256 hex) of the answer file.
    pub output: Option<(String, String)>,
    /// Keyed tag of the answer plaintext.
    pub output_tag: Option<String>,
    /// (prompt tokens, generated tokens).
    pub tokens: Option<(u64, u64)>,
}

impl JobRecord {
    /// The subjects in the documented order.
    pub fn subjects(&self) -> Vec<Subject> {
        let file = |(n, h): &(String, String)| Subject {
            kind: SubjectKind::Ciphertext,
            name: Some(n.clone()),
            hash: h.clone(),
        };
        let plain = |kind, h: &String| Subject {
            kind,
            name: None,
            hash: h.clone(),
        };
        let mut v = Vec::new();
        v.extend(self.input.as_ref().map(file));
        v.extend(
            self.input_tag
                .as_ref()
                .map(|h| plain(SubjectKind::Plaintext, h)),
        );
        v.extend(self.model.as_ref().map(|h| plain(SubjectKind::Model, h)));
        v.extend(self.output.as_ref().map(file));
        v.extend(
            self.output_tag
                .as_ref()
                .map(|h| plain(SubjectKind::Plaintext, h)),
        );
        v
    }

    /// The detail text (`task=… tokens_in=… tokens_out=…`), if any.
    pub fn detail(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(t) = &self.task {
            parts.push(format!("task={t}"));
        }
        if let Some((i, o)) = self.tokens {
            parts.push(format!("tokens_in={i} tokens_out={o}"));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// A job entry read back (borrowed from the entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFacts<'a> {
    pub task: Option<&'a str>,
    pub input: Option<&'a Subject>,
    pub input_tag: Option<&'a str>,
    pub model: Option<&'a str>,
    pub output: Option<&'a Subject>,
    pub output_tag: Option<&'a str>,
}

impl<'a> JobFacts<'a> {
    /// Reads a `job` entry by the layout above.
    pub fn of(e: &'a Entry) -> Result<Self, JobError> {
        if e.action != Action::Job {
            return Err(JobError::NotJob {
                seq: e.seq,
                action: e.action,
            });
        }
        let of_kind = |k: SubjectKind| e.subjects.iter().filter(move |s| s.kind == k);
        let mut cipher = of_kind(SubjectKind::Ciphertext);
        let mut plain = of_kind(SubjectKind::Plaintext);
        let task = e
            .detail
            .as_deref()
            .and_then(|d| d.split(' ').find_map(|w| w.strip_prefix("task=")));
        Ok(Self {
            task,
            input: cipher.next(),
            input_tag: plain.next().map(|s| s.hash.as_str()),
            model: of_kind(SubjectKind::Model).next().map(|s| s.hash.as_str()),
            output: cipher.next(),
            output_tag: plain.next().map(|s| s.hash.as_str()),
        })
    }

    /// SHA-256 hex of the answer file, if the job wrote one.
    pub fn output_sha256(&self) -> Option<&'a str> {
        self.output.map(|s| s.hash.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::audit::entry::{sha256_hex, tests::sample};

    #[test]
    fn record_and_read_back() {
        let rec = JobRecord {
            task: Some("summarize".into()),
            input: Some(("q1.txt.gpg".into(), sha256_hex(b"in"))),
            input_tag: Some(sha256_hex(b"tag-in")),
            model: Some(sha256_hex(b"manifest")),
            output: Some(("q1.answer.gpg".into(), sha256_hex(b"out"))),
            output_tag: Some(sha256_hex(b"tag-out")),
            tokens: Some((812, 95)),
        };
        let mut e = sample(4);
        e.subjects = rec.subjects();
        e.detail = rec.detail();
        e.validate().unwrap();
        assert_eq!(
            e.detail.as_deref(),
            Some("task=summarize tokens_in=812 tokens_out=95")
        );
        let f = JobFacts::of(&e).unwrap();
        assert_eq!(f.task, Some("summarize"));
        assert_eq!(f.input.unwrap().name.as_deref(), Some("q1.txt.gpg"));
        assert_eq!(f.model, Some(sha256_hex(b"manifest").as_str()));
        assert_eq!(f.output_sha256(), Some(sha256_hex(b"out").as_str()));
        assert_eq!(f.output_tag, Some(sha256_hex(b"tag-out").as_str()));
        // A refused job has no output.
        let refused = JobRecord {
            output: None,
            output_tag: None,
            ..rec
        };
        e.subjects = refused.subjects();
        assert_eq!(JobFacts::of(&e).unwrap().output_sha256(), None);
        e.action = Action::Login;
        assert!(JobFacts::of(&e).is_err());
    }
}
