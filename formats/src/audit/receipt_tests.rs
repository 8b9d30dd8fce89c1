//! Receipts made by the writer from a real log: round trips over every
//! tree size and index, and one table of refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::checkpoint::{Checkpoint, CheckpointError, Stamp};
use super::entry::{sha256_hex, Action, Entry, Outcome, Role, Subject, SubjectKind};
use super::note::{NoteError, NoteSigner};
use super::receipt::{Receipt, ReceiptError, MAX_RECEIPT_LEN};
use super::writer::{AuditLog, Policy, WriterError};
use base64::prelude::{Engine as _, BASE64_STANDARD};

const ORIGIN: &str = "airlock.local/receipt-test/audit";
const BOOT: &str = "cccccccccccccccccccccccccccccccc";

fn key() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[1; 32]).unwrap()
}

/// A log of `n` entries written through the writer, with a checkpoint
/// signed after every entry (checkpoint sizes 1..=n), segments of 7.
fn log_with_checkpoints(dir: &std::path::Path, n: u64) -> AuditLog {
    let mut log = AuditLog::create(dir, &key().verifier(), Policy { segment_entries: 7 }).unwrap();
    for seq in 0..n {
        let (account, role, action) = match seq {
            0 => ("system", Role::System, Action::Boot),
            s if s % 3 == 1 => ("olga", Role::Operator, Action::Login),
            _ => ("olga", Role::Operator, Action::Job),
        };
        let e = Entry {
            seq,
            wall: 1_796_357_711 + seq * 60,
            boot: BOOT.into(),
            uptime_ms: 1000 + seq * 60_000,
            account: account.into(),
            role,
            action,
            result: Outcome::Ok,
            reason: None,
            job: (action == Action::Job).then_some(seq),
            clock_from: None,
            detail: (action == Action::Job).then(|| "task=summarize".to_owned()),
            subjects: if action == Action::Job {
                vec![Subject {
                    kind: SubjectKind::Ciphertext,
                    name: Some(format!("doc{seq}.txt.gpg")),
                    hash: sha256_hex(&seq.to_be_bytes()),
                }]
            } else {
                Vec::new()
            },
        };
        log.append(&e).unwrap();
        let t = Stamp {
            wall: e.wall,
            boot: BOOT.into(),
            uptime_ms: e.uptime_ms + 1,
        };
        log.checkpoint(&key(), t).unwrap();
    }
    log
}

#[test]
fn build_and_verify_round_trip_for_every_size_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_with_checkpoints(&tmp.path().join("log"), 40);
    let verifier = key().verifier();
    let mut checked = 0;
    for size in 1..=40u64 {
        for index in 0..size {
            let r = log.receipt_at(index, size).unwrap();
            let text = r.to_text();
            let back = Receipt::parse(text.as_bytes()).unwrap();
            assert_eq!(back, r, "size {size} index {index}");
            assert_eq!(back.to_text(), text);
            let v = back.verify(&verifier).unwrap();
            assert_eq!((v.entry.seq, v.checkpoint.size), (index, size));
            checked += 1;
        }
    }
    assert_eq!(checked, 40 * 41 / 2);
    // The writer refuses what no checkpoint covers.
    assert!(matches!(
        log.receipt_at(5, 5),
        Err(WriterError::NotCovered(5))
    ));
    assert!(matches!(
        log.receipt_at(5, 41),
        Err(WriterError::NoCheckpointOfSize(41))
    ));
}

#[test]
fn receipt_from_memory_matches_the_stored_one() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_with_checkpoints(&tmp.path().join("log"), 9);
    let stored = log.receipt_at(8, 9).unwrap();
    let entry = Entry::parse(stored.entry.as_bytes()).unwrap();
    assert_eq!(log.receipt(&entry).unwrap(), stored);
}

/// Replaces line `n` (0-based) of the receipt's head.
fn edit_line(text: &str, n: usize, f: impl FnOnce(&str) -> String) -> String {
    let (head, note) = text.split_once("\n\n").unwrap();
    let mut lines: Vec<String> = head.split('\n').map(str::to_owned).collect();
    lines[n] = f(&lines[n]);
    format!("{}\n\n{note}", lines.join("\n"))
}

fn with_entry(r: &Receipt, f: impl FnOnce(&str) -> String) -> String {
    Receipt {
        entry: f(&r.entry),
        ..r.clone()
    }
    .to_text()
}

fn with_checkpoint(r: &Receipt, note: String) -> String {
    Receipt {
        checkpoint: note,
        ..r.clone()
    }
    .to_text()
}

#[test]
fn tampered_receipts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_with_checkpoints(&tmp.path().join("log"), 12);
    // Entry 5 (a job) under the checkpoint of size 12: four proof hashes.
    let r = log.receipt_at(5, 12).unwrap();
    assert_eq!(r.proof.len(), 4);
    let good = r.to_text();
    let older = log.receipt_at(2, 3).unwrap().checkpoint;
    let at_index = log.receipt_at(2, 5).unwrap().checkpoint;
    let body = key()
        .verifier()
        .open(r.checkpoint.as_bytes())
        .unwrap()
        .to_owned();
    let other = NoteSigner::from_seed(ORIGIN, &[2; 32]).unwrap();
    let foreign_origin = {
        let mut cp = Checkpoint::parse(&body).unwrap();
        cp.origin = "airlock.local/elsewhere/audit".into();
        key().sign(&cp.to_text().unwrap()).unwrap()
    };
    let flipped_root = {
        let cp = Checkpoint::parse(&body).unwrap();
        let mut root = cp.root;
        root.0[0] ^= 1;
        let edited = body.replace(
            &super::merkle::hash_to_base64(&cp.root),
            &super::merkle::hash_to_base64(&root),
        );
        r.checkpoint.replace(&body, &edited)
    };
    let label = key().verifier().label();
    // (case, receipt text, the error's message must start with)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "entry edited (still canonical)",
            with_entry(&r, |e| e.replace("doc5.txt.gpg", "doc6.txt.gpg")),
            "entry 5 is not in the checkpoint's tree of size 12".into(),
        ),
        (
            "entry edited (not canonical)",
            with_entry(&r, |e| e.replace("{\"seq\"", "{ \"seq\"")),
            "receipt entry: entry is not in canonical form".into(),
        ),
        (
            "entry seq and index edited together",
            edit_line(
                &with_entry(&r, |e| e.replace("\"seq\":5", "\"seq\":6")),
                2,
                |_| "index 6".into(),
            ),
            "entry 6 is not in the checkpoint's tree of size 12".into(),
        ),
        (
            "proof hash flipped",
            {
                let mut bad = r.clone();
                bad.proof[1].0[7] ^= 0x80;
                bad.to_text()
            },
            "entry 5 is not in the checkpoint's tree".into(),
        ),
        (
            "proof hash removed",
            {
                let mut bad = r.clone();
                bad.proof.pop();
                bad.to_text()
            },
            "entry 5 is not in the checkpoint's tree".into(),
        ),
        (
            "index changed",
            edit_line(&good, 2, |_| "index 4".into()),
            "receipt index 4 is not the entry's seq 5".into(),
        ),
        (
            "checkpoint signed by another key",
            with_checkpoint(&r, other.sign(&body).unwrap()),
            format!("receipt checkpoint: no signature by {label}"),
        ),
        (
            "checkpoint root edited (bad signature)",
            with_checkpoint(&r, flipped_root),
            format!("receipt checkpoint: signature by {label} does not verify"),
        ),
        (
            "checkpoint older than the entry",
            with_checkpoint(&r, older),
            "receipt checkpoint of size 3 does not cover entry 5".into(),
        ),
        (
            "checkpoint of size = index",
            with_checkpoint(&r, at_index),
            "receipt checkpoint of size 5 does not cover entry 5".into(),
        ),
        (
            "wrong origin",
            with_checkpoint(&r, foreign_origin),
            "receipt checkpoint: checkpoint origin \"airlock.local/elsewhere/audit\"".into(),
        ),
        (
            "truncated inside the checkpoint",
            good[..good.len() - 30].to_owned(),
            "receipt checkpoint: ".into(),
        ),
        (
            "truncated before the checkpoint",
            good[..good.find("\n\n").unwrap()].to_owned(),
            "parse receipt: no empty line before the checkpoint".into(),
        ),
        (
            "empty",
            String::new(),
            "parse receipt: first line is not".into(),
        ),
        (
            "garbage",
            "GET / HTTP/1.1\r\n\r\n".into(),
            "parse receipt: first line is not".into(),
        ),
        (
            "JSON receipt of old",
            "{\"entry\":\"x\"}\n\n— x y\n".into(),
            "parse receipt: first line is not".into(),
        ),
        (
            "CRLF line ends",
            good.replace('\n', "\r\n"),
            "parse receipt: first line is not".into(),
        ),
        (
            "no extra line",
            edit_line(&good, 1, |_| "extras".into()),
            "parse receipt: no `extra".into(),
        ),
        (
            "extra not canonical base64",
            edit_line(&good, 1, |l| l.replacen("extra ", "extra  ", 1)),
            "parse receipt: the extra line is not canonical base64".into(),
        ),
        (
            "extra holds two lines",
            edit_line(&good, 1, |_| {
                format!(
                    "extra {}",
                    BASE64_STANDARD.encode(format!("{}\n{}", r.entry, r.entry))
                )
            }),
            "parse receipt: the extra line".into(),
        ),
        (
            "index with a leading zero",
            edit_line(&good, 2, |_| "index 05".into()),
            "parse receipt: index \"05\"".into(),
        ),
        (
            "index missing",
            edit_line(&good, 2, |_| "indx 5".into()),
            "parse receipt: no `index".into(),
        ),
        (
            "proof hash not base64",
            edit_line(&good, 3, |l| format!("{l}x")),
            "parse receipt: proof hash 0 is not base64".into(),
        ),
        (
            "too many proof hashes",
            edit_line(&good, 3, |l| vec![l; 64].join("\n")),
            "parse receipt: more than 63 proof hashes".into(),
        ),
        (
            "too large",
            format!("{good}{}", "x".repeat(MAX_RECEIPT_LEN)),
            "parse receipt: larger than".into(),
        ),
    ];
    let verifier = key().verifier();
    for (case, text, want) in cases {
        let err = Receipt::parse(text.as_bytes())
            .and_then(|r| r.verify(&verifier))
            .expect_err(case)
            .to_string();
        assert!(err.starts_with(&want), "{case}: {err:?} (want {want:?})");
        assert_eq!(err.lines().count(), 1, "{case}: one line: {err:?}");
    }
    assert_eq!(
        Receipt::parse(b"c2sp.org/tlog-proof@v1\n\xff\n\nx"),
        Err(ReceiptError::NotText)
    );
    // The same receipt against a key of another name: not signed by it.
    let elsewhere = NoteSigner::from_seed("airlock.local/other/audit", &[1; 32]).unwrap();
    assert!(matches!(
        r.verify(&elsewhere.verifier()),
        Err(ReceiptError::Checkpoint(CheckpointError::Note(
            NoteError::NotSignedBy { .. }
        )))
    ));
    r.verify(&verifier).unwrap();
}
