//! Operator jobs on encrypted documents (`run`, `batch`; docs/operator.md).
//!
//! - `opener`: the key holder's half of opening a document (the OpenPGP
//!   parsing happens in the sandboxed `doc-open` child)
//! - `parts`: one task over one document: split to fit the context,
//!   answer each part, combine
//! - `engine`: the sandboxed inference worker as the model of `parts`
//! - `input`: reading the document from a stick (size cap, regular file)
//! - `setup`: what a job needs before it reads a byte: task table, model,
//!   keys, recipients
//! - `answer`: the answer file's text and the audit record
//! - `counter`: the appliance's job numbers
//! - `batch`: the signed summary of a batch

pub mod answer;
pub mod batch;
pub mod counter;
pub mod engine;
pub mod input;
pub mod opener;
pub mod parts;
pub mod setup;

/// The answer's file name for document `name`: its `.gpg`, `.pgp` or
/// `.asc` extension replaced by `.answer.gpg` (`report.txt.gpg` →
/// `report.txt.answer.gpg`); other names get `.answer.gpg` appended.
pub fn answer_name(name: &str) -> String {
    format!("{}.answer.gpg", stem(name))
}

/// The receipt's file name for document `name`.
pub fn receipt_name(name: &str) -> String {
    format!("{}.answer.receipt", stem(name))
}

fn stem(name: &str) -> &str {
    for ext in [".gpg", ".pgp", ".asc", ".GPG", ".PGP", ".ASC"] {
        if let Some(s) = name.strip_suffix(ext) {
            if !s.is_empty() {
                return s;
            }
        }
    }
    name
}

/// Whether `name` is a document a batch takes (`*.gpg`, `*.pgp`, `*.asc`,
/// not an answer, not hidden).
pub fn is_batch_input(name: &str) -> bool {
    !name.starts_with('.')
        && stem(name) != name
        && !stem(name).ends_with(".answer")
        && !name.ends_with(".summary.json.asc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases = [
            ("report.txt.gpg", "report.txt.answer.gpg", true),
            ("memo.asc", "memo.answer.gpg", true),
            ("notes", "notes.answer.gpg", false),
            (".gpg", ".gpg.answer.gpg", false),
            ("a.answer.gpg", "a.answer.answer.gpg", false),
            (".hidden.gpg", ".hidden.answer.gpg", false),
            (
                "batch-1.summary.json.asc",
                "batch-1.summary.json.answer.gpg",
                false,
            ),
        ];
        for (input, answer, batch) in cases {
            assert_eq!(answer_name(input), answer, "{input}");
            assert_eq!(is_batch_input(input), batch, "{input}");
        }
        assert_eq!(receipt_name("report.txt.gpg"), "report.txt.answer.receipt");
    }
}
