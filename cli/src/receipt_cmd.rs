//! `airlock audit verify-receipt RECEIPT --key AUDIT_PUB [--answer FILE]`:
//! checks a receipt (`NAME.answer.receipt`, C2SP tlog-proof shape) on its
//! own, prints what its entry says (escaped), and with `--answer` that the
//! answer file is the output ciphertext the entry names. Format and
//! checks: docs/audit.md (Receipts); the checks themselves:
//! `airlock_formats::audit::receipt`.

use airlock_formats::audit::entry::{sha256_hex_of_reader, Entry};
use airlock_formats::audit::job::JobFacts;
use airlock_formats::audit::note::NoteVerifier;
use airlock_formats::audit::receipt::{Receipt, ReceiptError, Verified};
use airlock_formats::escape;
use airlock_formats::manifest::format_rfc3339;
use std::path::Path;

/// Errors of `verify-receipt`; each names the failing check.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptCmdError {
    #[error("receipt {path} refused: {source}")]
    Refused { path: String, source: ReceiptError },
    #[error("read answer {path}: {source}")]
    ReadAnswer {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "answer {path}: entry {seq} names no output ciphertext (a {action} entry, result {result})"
    )]
    NoOutput {
        path: String,
        seq: u64,
        action: String,
        result: String,
    },
    #[error("answer {path} does not match the receipt: its SHA-256 is {got}, entry {seq} names output {want}")]
    AnswerMismatch {
        path: String,
        seq: u64,
        got: String,
        want: String,
    },
}

type Result<T> = std::result::Result<T, ReceiptCmdError>;

/// Verifies the receipt bytes read from `path` against `key`, and the
/// answer file if given; the text to print.
pub fn run(path: &Path, bytes: &[u8], key: &NoteVerifier, answer: Option<&Path>) -> Result<String> {
    let refused = |source| ReceiptCmdError::Refused {
        path: escape::path(path),
        source,
    };
    let v = Receipt::parse(bytes)
        .and_then(|r| r.verify(key))
        .map_err(refused)?;
    let answer_line = answer.map(|a| check_answer(a, &v.entry)).transpose()?;
    let mut out = describe(&v, key);
    if let Some(l) = answer_line {
        out.push_str(&l);
    }
    Ok(out)
}

/// The answer file's SHA-256 against the entry's output ciphertext.
fn check_answer(path: &Path, e: &Entry) -> Result<String> {
    let shown = escape::path(path);
    let want = JobFacts::of(e)
        .ok()
        .and_then(|f| f.output_sha256())
        .ok_or_else(|| ReceiptCmdError::NoOutput {
            path: shown.clone(),
            seq: e.seq,
            action: e.action.to_string(),
            result: e.result.to_string(),
        })?;
    let got = std::fs::File::open(path)
        .and_then(sha256_hex_of_reader)
        .map_err(|source| ReceiptCmdError::ReadAnswer {
            path: shown.clone(),
            source,
        })?;
    if got != want {
        return Err(ReceiptCmdError::AnswerMismatch {
            path: shown,
            seq: e.seq,
            got,
            want: want.to_owned(),
        });
    }
    Ok(line(
        "answer",
        format!("{shown} matches the output ciphertext's SHA-256"),
    ))
}

fn line(k: &str, v: String) -> String {
    format!("{k:<12} {v}\n")
}

/// What the verified receipt says, every log string escaped.
fn describe(v: &Verified, key: &NoteVerifier) -> String {
    let t = |s: &str| escape::text(s).into_owned();
    let e = &v.entry;
    let cp = &v.checkpoint;
    let mut out = format!(
        "receipt OK: entry {} is in the checkpoint of {}\n",
        e.seq,
        cp.describe()
    );
    out.push_str(&line("key", t(&key.label())));
    out.push_str(&line(
        "time",
        format!(
            "{} (boot {}, {} ms since boot)",
            format_rfc3339(e.wall),
            t(&e.boot),
            e.uptime_ms
        ),
    ));
    out.push_str(&line("account", format!("{} ({})", t(&e.account), e.role)));
    let job = e.job.map(|j| format!(" {j}")).unwrap_or_default();
    out.push_str(&line("action", format!("{}{job}", e.action)));
    let reason = e
        .reason
        .as_deref()
        .map(|r| format!(" ({})", t(r)))
        .unwrap_or_default();
    out.push_str(&line("result", format!("{}{reason}", e.result)));
    if let Ok(f) = JobFacts::of(e) {
        let file = |s: Option<&airlock_formats::audit::entry::Subject>| match s {
            Some(s) => format!(
                "{} sha256 {}",
                t(s.name.as_deref().unwrap_or("-")),
                t(&s.hash)
            ),
            None => "-".to_owned(),
        };
        let or_dash = |s: Option<&str>| s.map(t).unwrap_or_else(|| "-".to_owned());
        out.push_str(&line("task", or_dash(f.task)));
        out.push_str(&line("model", or_dash(f.model)));
        out.push_str(&line("input", file(f.input)));
        out.push_str(&line("output", file(f.output)));
        out.push_str(&line("input tag", or_dash(f.input_tag)));
        out.push_str(&line("output tag", or_dash(f.output_tag)));
    } else {
        for s in &e.subjects {
            let name = s.name.as_deref().map(|n| format!("{} ", t(n)));
            out.push_str(&line(
                "subject",
                format!(
                    "{} {}{}",
                    serde_kind(s.kind),
                    name.unwrap_or_default(),
                    t(&s.hash)
                ),
            ));
        }
    }
    if let Some(d) = &e.detail {
        out.push_str(&line("detail", t(d)));
    }
    out
}

fn serde_kind(k: airlock_formats::audit::entry::SubjectKind) -> &'static str {
    use airlock_formats::audit::entry::SubjectKind as K;
    match k {
        K::Ciphertext => "ciphertext",
        K::Plaintext => "plaintext",
        K::Model => "model",
        K::System => "system",
    }
}
