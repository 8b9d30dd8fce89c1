//! `airlock audit verify|compare` run as the real binary on logs
//! written by the appliance's writer code: one case per tampering the
//! verifier must refuse (exit 1, one line naming the place), and the
//! positive cases. Receipts: `receipt.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use airlock_formats::audit::entry::{Action, Role};
use airlock_formats::audit::writer::{AuditLog, Policy};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn fresh_export_verifies_with_summary() {
    let fx = Fx::new();
    let out = ok(fx.verify(&fx.export("x"), None));
    for want in [
        "audit log OK airlock.local/cli-test/audit",
        "entries      10 (seq 0..9)",
        ", 2 boots",
        "checkpoints  4, last: size 10",
        "accounts     3: ada (auditor), ivan (officer), olga (operator)",
        "jobs         2",
        "refusals     1 (failures 0)",
        "clock back   entry 6: ",
        "(1h59m back), explained: clock set by ivan",
        "clock back   entry 8: ",
        "explained: new boot 0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
    assert!(!out.contains("warning"), "{out}");
    // A replaced audit.pub in the export is pointed out; --key decides.
    let dir = fx.path("x");
    fs::write(dir.join("audit.pub"), format!("{}\n", signer(2).verifier())).unwrap();
    let out = ok(fx.verify(&dir, None));
    assert!(
        out.contains("warning: the export's audit.pub is not the --key given"),
        "{out}"
    );
}

#[test]
fn tampered_exports_are_refused_naming_the_place() {
    type Tamper = fn(&Path);
    let label = signer(1).verifier().label();
    // (case, tampering, what the one line must name)
    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "edited entry",
            |d| edit_lines(&segment(d, 3), |l| l[2] = l[2].replace("\"result\":\"ok\"", "\"result\":\"refused\"")),
            "checkpoint 2 (checkpoints/00000002.checkpoint, size 5): root does not match entries 2..4".into(),
        ),
        (
            "removed entry",
            |d| edit_lines(&segment(d, 3), |l| {
                l.remove(1);
            }),
            "entries/00000000000000000003.jsonl line 2: entry 4 found where entry 3 belongs".into(),
        ),
        (
            "swapped entries",
            |d| edit_lines(&segment(d, 3), |l| l.swap(1, 2)),
            "entries/00000000000000000003.jsonl line 2: entry 4 found where entry 3 belongs".into(),
        ),
        (
            "truncated tail",
            |d| edit_lines(&segment(d, 9), |l| {
                l.pop();
            }),
            "checkpoint 4 (checkpoints/00000004.checkpoint) covers 10 entries but the export holds 9: truncated tail (entries 9..9 missing)".into(),
        ),
        (
            "checkpoint signed by another key",
            |d| {
                let note = fs::read_to_string(checkpoint(d, 3)).unwrap();
                let body = note.split("\n\n").next().unwrap().to_owned() + "\n";
                fs::write(checkpoint(d, 3), signer(2).sign(&body).unwrap()).unwrap();
            },
            format!("checkpoint 3 (checkpoints/00000003.checkpoint): no signature by {label} (signed by: {})", signer(2).verifier().label()),
        ),
        (
            "older checkpoint replayed after later entries",
            |d| {
                fs::copy(checkpoint(d, 1), checkpoint(d, 5)).unwrap();
            },
            "checkpoint 5 (checkpoints/00000005.checkpoint): size 2 is below checkpoint 4's size 10: an older checkpoint replayed".into(),
        ),
        (
            "control characters from the log are escaped",
            |d| edit_lines(&segment(d, 0), |l| l[2] = l[2].replace("\"olga\"", "\"ol\\u001b[2Jga\"")),
            "entry 1 (entries/00000000000000000000.jsonl line 3): account name \"ol\\\\u{1b}[2Jga\"".into(),
        ),
        (
            "raw escape sequences in an unknown field name are escaped",
            |d| edit_lines(&segment(d, 0), |l| l[2] = l[2].replacen("{", "{\"x\\u001b[2J\":1,", 1)),
            "entry 1 (entries/00000000000000000000.jsonl line 3): parse entry: unknown field `x\\x1b[2J`".into(),
        ),
    ];
    for (case, tamper, want) in cases {
        let fx = Fx::new();
        let dir = fx.export("x");
        ok(fx.verify(&dir, None));
        tamper(&dir);
        refused(case, fx.verify(&dir, None), &want);
    }
}

#[test]
fn since_catches_truncation_and_replay_of_an_older_log() {
    let fx = Fx::new();
    let mut l = story(&fx.path("log"));
    let old = fx.path("old");
    l.log.export(&old, &signer(1).verifier()).unwrap();
    l.add("ada", Role::Auditor, Action::Logout, |_| {});
    l.checkpoint();
    let new = fx.path("new");
    l.log.export(&new, &signer(1).verifier()).unwrap();
    // The auditor kept checkpoint 2 of the old export: the new one is
    // consistent with it.
    let out = ok(fx.verify(&new, Some(&checkpoint(&old, 2))));
    assert!(
        out.contains("since        consistent with") && out.contains("recomputed from the entries"),
        "{out}"
    );
    // The old export (or a new one cut back to it) replayed to an auditor
    // who kept checkpoint 5 of the newer export.
    ok(fx.verify(&old, None));
    refused(
        "replayed older log",
        fx.verify(&old, Some(&checkpoint(&new, 5))),
        "--since checkpoint (size 11, root",
    );
    refused(
        "replayed older log",
        fx.verify(&old, Some(&checkpoint(&new, 5))),
        "is newer than this export's last checkpoint 4 (size 10): the log was truncated or an older log replayed",
    );
}

/// Two logs continued from copies of one log at its checkpoint 2.
fn fork(fx: &Fx) -> (PathBuf, PathBuf) {
    let mut l = Log::new(&fx.path("log-a"));
    l.add("system", Role::System, Action::Boot, |_| {});
    l.add("olga", Role::Operator, Action::Login, |_| {});
    l.checkpoint();
    l.add("olga", Role::Operator, Action::Logout, |_| {});
    l.checkpoint();
    let (wall, uptime) = (l.wall, l.uptime);
    drop(l);
    fs::create_dir_all(fx.path("log-b/entries")).unwrap();
    fs::create_dir_all(fx.path("log-b/checkpoints")).unwrap();
    for sub in ["entries", "checkpoints"] {
        for e in fs::read_dir(fx.path(&format!("log-a/{sub}"))).unwrap() {
            let e = e.unwrap();
            fs::copy(
                e.path(),
                fx.path(&format!("log-b/{sub}")).join(e.file_name()),
            )
            .unwrap();
        }
    }
    let mut outs = Vec::new();
    for (dir, who) in [("log-a", "ivan"), ("log-b", "mallory")] {
        let log = AuditLog::open(
            &fx.path(dir),
            &signer(1).verifier(),
            Policy { segment_entries: 3 },
        )
        .unwrap();
        let mut l = Log {
            log,
            boot: BOOT_A,
            wall,
            uptime,
        };
        l.add(who, Role::Officer, Action::Login, |_| {});
        l.add(who, Role::Officer, Action::SystemImport, |_| {});
        l.checkpoint();
        let out = fx.path(&format!("export-{dir}"));
        l.log.export(&out, &signer(1).verifier()).unwrap();
        outs.push(out);
    }
    (outs.remove(0), outs.remove(0))
}

#[test]
fn forked_exports_are_refused_by_compare_and_since() {
    let fx = Fx::new();
    let (a, b) = fork(&fx);
    ok(fx.verify(&a, None));
    ok(fx.verify(&b, None));
    refused(
        "compare",
        airlock(&["audit", "compare", p(&a), p(&b), "--key", p(&fx.key)]),
        "fork: A checkpoint 3 (size 5, root",
    );
    refused(
        "compare",
        airlock(&["audit", "compare", p(&a), p(&b), "--key", p(&fx.key)]),
        "last common checkpoint: A checkpoint 2 (size 3)",
    );
    refused(
        "since the other's checkpoint",
        fx.verify(&a, Some(&checkpoint(&b, 3))),
        "is not consistent with this log, whose root at size 5 is",
    );
    // An export compared with an older export of the same log: no fork.
    let out = ok(airlock(&[
        "audit",
        "compare",
        p(&a),
        p(&a),
        "--key",
        p(&fx.key),
    ]));
    assert!(
        out.starts_with("consistent: A (last checkpoint size 5) is a prefix of B"),
        "{out}"
    );
}

#[test]
fn unexplained_step_back_is_flagged_and_unsigned_tail_warned() {
    let fx = Fx::new();
    let mut l = Log::new(&fx.path("log"));
    l.add("system", Role::System, Action::Boot, |_| {});
    l.add("olga", Role::Operator, Action::Login, |e| e.wall -= 600);
    l.checkpoint();
    l.add("olga", Role::Operator, Action::Logout, |_| {});
    let out = fx.path("x");
    l.log.export(&out, &signer(1).verifier()).unwrap();
    let text = ok(fx.verify(&out, None));
    for want in [
        "clock back   entry 1: ",
        "UNEXPLAINED: no clock set, same boot",
        "warning: 1 entry after the last checkpoint (seq 2..2) are not protected by a signature",
        "warning: entry 1: the wall clock stepped back with no clock-set entry and no new boot",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

#[test]
fn bad_key_or_missing_export_is_one_line() {
    let fx = Fx::new();
    let dir = fx.export("x");
    refused(
        "missing export",
        fx.verify(&fx.path("nope"), None),
        "nope: No such file",
    );
    fs::write(&fx.key, "not a key\n").unwrap();
    refused("bad key", fx.verify(&dir, None), "audit key");
}

/// An export made by an independent implementation (Python: hashlib,
/// `cryptography`'s Ed25519, json; see docs/audit.md) verifies: leaf
/// encoding, RFC 6962 root, note signature and key id agree.
#[test]
fn independently_made_export_verifies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audit-example");
    let out = ok(airlock(&[
        "audit",
        "verify",
        p(&dir),
        "--key",
        p(&dir.join("audit.pub")),
    ]));
    for want in [
        "audit log OK airlock.local/5f2c9a1e/audit",
        "key          airlock.local/5f2c9a1e/audit+d0e23c9b",
        "entries      3 (seq 0..2)",
        "checkpoints  1, last: size 3, root B/KBJMS6qPNTeAkbVG/UsgK4epHG0wjXhe2W2KGpCIM=",
        "accounts     1: olga (operator)",
        "jobs         1",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
}
