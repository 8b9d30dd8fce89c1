//! `airlock audit verify-receipt` run as the real binary on receipts made
//! by the appliance's writer code from a real log: the positive case with
//! the entry's fields and `--answer`, and one table of refusals (exit 1,
//! one line naming what failed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use airlock_formats::audit::entry::{sha256_hex, Action, Entry, Role};
use airlock_formats::audit::job::JobRecord;
use airlock_formats::audit::receipt::Receipt;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

const ANSWER: &[u8] = b"-----BEGIN PGP MESSAGE-----\nnot really\n-----END PGP MESSAGE-----\n";

/// A log with a job (entry 2) whose answer is [`ANSWER`], a refused job
/// (entry 3), more entries and checkpoints at sizes 2, 3, 5, 6.
fn job_log(dir: &Path) -> Log {
    let mut l = Log::new(dir);
    l.add("system", Role::System, Action::Boot, |_| {}); // 0
    l.add("olga", Role::Operator, Action::Login, |_| {}); // 1
    l.checkpoint(); // 1: size 2
    let rec = JobRecord {
        task: Some("summarize".into()),
        input: Some(("q1.txt.gpg".into(), sha256_hex(b"input"))),
        input_tag: Some(sha256_hex(b"input tag")),
        model: Some(sha256_hex(b"manifest.json")),
        output: Some(("q1.answer.gpg".into(), sha256_hex(ANSWER))),
        output_tag: Some(sha256_hex(b"output tag")),
        tokens: Some((812, 95)),
    };
    l.add("olga", Role::Operator, Action::Job, |e| {
        e.job = Some(1);
        e.subjects = rec.subjects();
        e.detail = rec.detail();
    }); // 2
    l.checkpoint(); // 2: size 3
    l.add("olga", Role::Operator, Action::Job, |e| {
        e.job = Some(2);
        e.result = airlock_formats::audit::entry::Outcome::Refused;
        e.reason = Some("no-mdc".into());
        e.subjects = JobRecord {
            output: None,
            output_tag: None,
            input_tag: None,
            ..rec.clone()
        }
        .subjects();
        e.detail = rec.detail();
    }); // 3
    l.add("olga", Role::Operator, Action::Logout, |_| {}); // 4
    l.checkpoint(); // 3: size 5
    l.add("ivan", Role::Officer, Action::Login, |e| {
        e.detail = Some("tty1".into());
    }); // 5
    l.checkpoint(); // 4: size 6
    l
}

struct Case {
    fx: Fx,
    log: Log,
    answer: PathBuf,
}

impl Case {
    fn new() -> Self {
        let fx = Fx::new();
        let log = job_log(&fx.path("log"));
        let answer = fx.path("q1.answer.gpg");
        fs::write(&answer, ANSWER).unwrap();
        Self { fx, log, answer }
    }

    fn receipt(&self, index: u64, size: u64) -> Receipt {
        self.log.log.receipt_at(index, size).unwrap()
    }

    /// Writes `text` as a receipt file and runs verify-receipt on it.
    fn run(&self, text: &str, answer: Option<&Path>) -> std::process::Output {
        let file = self.fx.path("q1.answer.receipt");
        fs::write(&file, text).unwrap();
        let mut args = vec![
            "audit",
            "verify-receipt",
            p(&file),
            "--key",
            p(&self.fx.key),
        ];
        if let Some(a) = answer {
            args.extend(["--answer", p(a)]);
        }
        airlock(&args)
    }
}

#[test]
fn receipt_verifies_and_shows_the_job() {
    let c = Case::new();
    let text = c.receipt(2, 6).to_text();
    let out = ok(c.run(&text, Some(&c.answer)));
    for want in [
        "receipt OK: entry 2 is in the checkpoint of size 6, root ",
        "key          airlock.local/cli-test/audit+",
        "time         2026-",
        "(boot 0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a, 92000 ms since boot)",
        "account      olga (operator)",
        "action       job 1",
        "result       ok",
        "task         summarize",
        &format!("model        {}", sha256_hex(b"manifest.json")),
        &format!("input        q1.txt.gpg sha256 {}", sha256_hex(b"input")),
        &format!("output       q1.answer.gpg sha256 {}", sha256_hex(ANSWER)),
        "detail       task=summarize tokens_in=812 tokens_out=95",
        "matches the output ciphertext's SHA-256",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
    // The old subcommand name still works; without --answer no answer line.
    let file = c.fx.path("r");
    fs::write(&file, &text).unwrap();
    let out = ok(airlock(&[
        "audit",
        "receipt",
        p(&file),
        "--key",
        p(&c.fx.key),
    ]));
    assert!(out.starts_with("receipt OK: entry 2"), "{out}");
    assert!(!out.contains("\nanswer "), "{out}");
    // A non-job entry: its fields, no job lines.
    let out = ok(c.run(&c.receipt(5, 6).to_text(), None));
    assert!(
        out.contains("account      ivan (officer)\naction       login\n"),
        "{out}"
    );
    assert!(out.contains("detail       tty1"), "{out}");
    assert!(!out.contains("task"), "{out}");
}

#[test]
fn bad_receipts_and_answers_are_refused_with_one_line() {
    let c = Case::new();
    let r = c.receipt(2, 6);
    let good = r.to_text();
    let other_answer = c.fx.path("other.answer.gpg");
    fs::write(&other_answer, b"another answer").unwrap();
    let label = signer(1).verifier().label();
    let body = signer(1)
        .verifier()
        .open(r.checkpoint.as_bytes())
        .unwrap()
        .to_owned();
    let edit_head = |n: usize, f: &dyn Fn(&str) -> String| {
        let (head, note) = good.split_once("\n\n").unwrap();
        let mut lines: Vec<String> = head.split('\n').map(str::to_owned).collect();
        lines[n] = f(&lines[n]);
        format!("{}\n\n{note}", lines.join("\n"))
    };
    let with = |f: &dyn Fn(&mut Receipt)| {
        let mut x = r.clone();
        f(&mut x);
        x.to_text()
    };
    let missing = c.fx.path("missing.answer.gpg");
    // (case, receipt text, --answer, what the line must name)
    let cases: Vec<(&str, String, Option<&Path>, String)> = vec![
        (
            "entry edited",
            with(&|x| x.entry = x.entry.replace("\"job\":1", "\"job\":3")),
            None,
            "entry 2 is not in the checkpoint's tree of size 6".into(),
        ),
        (
            "output hash in the entry edited",
            with(&|x| x.entry = x.entry.replace(&sha256_hex(ANSWER), &sha256_hex(b"x"))),
            None,
            "entry 2 is not in the checkpoint's tree of size 6".into(),
        ),
        (
            "proof hash flipped",
            with(&|x| x.proof[0].0[31] ^= 1),
            None,
            "entry 2 is not in the checkpoint's tree".into(),
        ),
        (
            "index changed",
            edit_head(2, &|_| "index 3".into()),
            None,
            "receipt index 3 is not the entry's seq 2".into(),
        ),
        (
            "checkpoint from another key",
            with(&|x| x.checkpoint = signer(2).sign(&body).unwrap()),
            None,
            format!("receipt checkpoint: no signature by {label}"),
        ),
        (
            "checkpoint root edited",
            with(&|x| {
                let root = body.lines().nth(2).unwrap();
                let flipped = if root.starts_with('A') { "B" } else { "A" };
                x.checkpoint = x.checkpoint.replacen(root, &format!("{flipped}{}", &root[1..]), 1);
            }),
            None,
            format!("signature by {label} does not verify"),
        ),
        (
            "checkpoint older than the entry",
            with(&|x| x.checkpoint = c.receipt(0, 2).checkpoint),
            None,
            "receipt checkpoint of size 2 does not cover entry 2".into(),
        ),
        (
            "wrong origin",
            with(&|x| {
                let other = body.replacen(ORIGIN, "airlock.local/elsewhere/audit", 1);
                x.checkpoint = signer(1).sign(&other).unwrap();
            }),
            None,
            "checkpoint origin \"airlock.local/elsewhere/audit\" is not the key's name".into(),
        ),
        (
            "answer that does not match",
            good.clone(),
            Some(&other_answer),
            format!(
                "other.answer.gpg does not match the receipt: its SHA-256 is {}, entry 2 names output {}",
                sha256_hex(b"another answer"),
                sha256_hex(ANSWER)
            ),
        ),
        (
            "answer missing",
            good.clone(),
            Some(&missing),
            "read answer".into(),
        ),
        (
            "answer to a job that wrote none",
            c.receipt(3, 6).to_text(),
            Some(&c.answer),
            "entry 3 names no output ciphertext (a job entry, result refused)".into(),
        ),
        (
            "truncated",
            good[..good.len() / 2].to_owned(),
            None,
            "refused: parse receipt:".into(),
        ),
        (
            "truncated in the signature",
            good[..good.len() - 20].to_owned(),
            None,
            "refused: receipt checkpoint:".into(),
        ),
        (
            "garbage",
            "\u{1b}[2J\u{0}garbage\n".into(),
            None,
            "parse receipt: first line is not `c2sp.org/tlog-proof@v1`".into(),
        ),
        (
            "old JSON receipt",
            format!("{{\"entry\":{:?}}}", r.entry),
            None,
            "parse receipt: first line is not".into(),
        ),
        (
            "extra with control characters in the entry",
            with(&|x| x.entry = x.entry.replace("olga", "ol\\u001b[2Jga")),
            None,
            "receipt entry: account name \"ol\\\\u{1b}[2Jga\"".into(),
        ),
    ];
    for (case, text, answer, want) in cases {
        refused(case, c.run(&text, answer), &want);
    }
    // A receipt checked against the key of another appliance.
    let file = c.fx.path("r");
    fs::write(&file, &good).unwrap();
    let other_key = c.fx.path("other.pub");
    fs::write(&other_key, format!("{}\n", signer(2).verifier())).unwrap();
    refused(
        "other appliance's key",
        airlock(&["audit", "verify-receipt", p(&file), "--key", p(&other_key)]),
        "receipt checkpoint: no signature by",
    );
    // The good one still passes with its answer.
    ok(c.run(&good, Some(&c.answer)));
    let _ = Entry::parse(r.entry.as_bytes()).unwrap();
}

/// The example in docs/audit.md (Receipts), kept in
/// `tests/data/receipt-example/`: it verifies with its answer. Its
/// inclusion proof was also checked with an independent RFC 9162
/// verifier (Python hashlib).
#[test]
fn documented_example_verifies() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/receipt-example");
    let out = ok(airlock(&[
        "audit",
        "verify-receipt",
        p(&d.join("q1.answer.receipt")),
        "--key",
        p(&d.join("audit.pub")),
        "--answer",
        p(&d.join("q1.answer.gpg")),
    ]));
    assert!(
        out.starts_with("receipt OK: entry 2 is in the checkpoint of size 6, root yI+WLWdD7N8ugWL5TjXlO8fZpXAy+P09h3QXS5CgxZY="),
        "{out}"
    );
    assert!(
        out.contains("matches the output ciphertext's SHA-256"),
        "{out}"
    );
}
