//! Writer and verifier together: a story log, every tampering case the
//! verifier must refuse (naming the place), and the positive cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::checkpoint::Stamp;
use super::compare::{compare, Comparison};
use super::entry::{sha256_hex, Action, Entry, Outcome, Role, Subject, SubjectKind};
use super::layout;
use super::note::{NoteSigner, NoteVerifier};
use super::verify::{verify, SinceMatch, StepWhy, VerifyError};
use super::writer::{AuditLog, Policy, WriterError};
use std::fs;
use std::path::{Path, PathBuf};

const ORIGIN: &str = "airlock.local/test/audit";
const BOOT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BOOT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const T0: u64 = 1_796_357_711;

fn key() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[1; 32]).unwrap()
}

fn other_key() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[2; 32]).unwrap()
}

/// A log being written, with its own clocks.
struct Story {
    log: AuditLog,
    boot: &'static str,
    wall: u64,
    uptime: u64,
}

impl Story {
    fn new(dir: &Path) -> Self {
        let log = AuditLog::create(dir, &key().verifier(), Policy { segment_entries: 4 }).unwrap();
        Self {
            log,
            boot: BOOT_A,
            wall: T0,
            uptime: 1000,
        }
    }

    fn open(dir: &Path, boot: &'static str, wall: u64, uptime: u64) -> Self {
        let log = AuditLog::open(dir, &key().verifier(), Policy { segment_entries: 4 }).unwrap();
        Self {
            log,
            boot,
            wall,
            uptime,
        }
    }

    fn entry(&mut self, account: &str, role: Role, action: Action, result: Outcome) -> Entry {
        self.wall += 60;
        self.uptime += 60_000;
        Entry {
            seq: self.log.next_seq(),
            wall: self.wall,
            boot: self.boot.into(),
            uptime_ms: self.uptime,
            account: account.into(),
            role,
            action,
            result,
            reason: None,
            job: None,
            clock_from: None,
            detail: None,
            subjects: Vec::new(),
        }
    }

    fn add(&mut self, account: &str, role: Role, action: Action) -> Entry {
        let e = self.entry(account, role, action, Outcome::Ok);
        self.log.append(&e).unwrap();
        e
    }

    fn job(&mut self, account: &str, job: u64, result: Outcome) {
        let mut e = self.entry(account, Role::Operator, Action::Job, result);
        e.job = Some(job);
        if result == Outcome::Refused {
            e.reason = Some("wrong-recipient".into());
        }
        e.subjects = vec![Subject {
            kind: SubjectKind::Ciphertext,
            name: Some(format!("doc{job}.gpg")),
            hash: sha256_hex(format!("cipher {job}").as_bytes()),
        }];
        self.log.append(&e).unwrap();
    }

    fn clock_set(&mut self, account: &str, back: u64) {
        let from = self.wall + 60;
        self.wall = from - back - 60;
        let mut e = self.entry(account, Role::Officer, Action::ClockSet, Outcome::Ok);
        e.clock_from = Some(from);
        self.log.append(&e).unwrap();
    }

    fn reboot(&mut self, boot: &'static str, back: u64) {
        self.boot = boot;
        self.wall -= back;
        self.uptime = 500;
        self.add("system", Role::System, Action::Boot);
    }

    fn checkpoint(&mut self) -> u64 {
        let t = Stamp {
            wall: self.wall,
            boot: self.boot.into(),
            uptime_ms: self.uptime + 1,
        };
        self.log.checkpoint(&key(), t).unwrap()
    }
}

/// The story: boot A, alice runs two jobs (one refused), bob sets the
/// clock back an hour and imports a model, shutdown; boot B with the clock
/// a day behind (dead CMOS battery), carol exports. Checkpoints at sizes
/// 2, 5, 9, 10, 13; segments of 4 entries.
fn story(dir: &Path) -> Story {
    let mut s = Story::new(dir);
    s.add("system", Role::System, Action::Boot); // 0
    s.add("alice", Role::Operator, Action::Login); // 1
    assert_eq!(s.checkpoint(), 1);
    s.job("alice", 1, Outcome::Ok); // 2
    s.job("alice", 2, Outcome::Refused); // 3
    s.add("alice", Role::Operator, Action::Logout); // 4
    assert_eq!(s.checkpoint(), 2);
    s.add("bob", Role::Officer, Action::Login); // 5
    s.clock_set("bob", 3600); // 6
    s.add("bob", Role::Officer, Action::ModelImport); // 7
    s.add("bob", Role::Officer, Action::Logout); // 8
    assert_eq!(s.checkpoint(), 3);
    s.add("system", Role::System, Action::Shutdown); // 9
    assert_eq!(s.checkpoint(), 4);
    s.reboot(BOOT_B, 86_400); // 10
    s.add("carol", Role::Auditor, Action::Login); // 11
    s.add("carol", Role::Auditor, Action::AuditExport); // 12
    assert_eq!(s.checkpoint(), 5);
    s
}

fn exported(tmp: &Path) -> PathBuf {
    let s = story(&tmp.join("log"));
    let out = tmp.join("export");
    s.log.export(&out, &key().verifier()).unwrap();
    out
}

fn seg(dir: &Path, first: u64) -> PathBuf {
    dir.join(layout::ENTRIES_DIR)
        .join(layout::segment_name(first))
}

fn cp_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(layout::CHECKPOINTS_DIR)
        .join(layout::checkpoint_name(index))
}

/// Rewrites the lines of a segment file.
fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn verify_err(dir: &Path) -> String {
    match verify(dir, &key().verifier()) {
        Ok(_) => panic!("{}: verified, expected a refusal", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn story_verifies_with_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = exported(tmp.path());
    let v = verify(&out, &key().verifier()).unwrap();
    let s = &v.summary;
    assert_eq!(
        (s.size, s.first_seq, s.checkpoints, s.unprotected),
        (13, 0, 5, 0)
    );
    assert_eq!(s.boots, vec![BOOT_A.to_owned(), BOOT_B.to_owned()]);
    let accounts: Vec<(&str, Vec<Role>)> = s
        .accounts
        .iter()
        .map(|(a, r)| (a.as_str(), r.iter().copied().collect()))
        .collect();
    assert_eq!(
        accounts,
        vec![
            ("alice", vec![Role::Operator]),
            ("bob", vec![Role::Officer]),
            ("carol", vec![Role::Auditor])
        ]
    );
    assert_eq!(s.jobs.iter().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!((s.refusals, s.failures), (1, 0));
    let steps: Vec<(u64, StepWhy)> = s
        .steps_back
        .iter()
        .map(|b| (b.seq, b.why.clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (
                6,
                StepWhy::ClockSet {
                    account: "bob".into()
                }
            ),
            (
                10,
                StepWhy::NewBoot {
                    boot: BOOT_B.into()
                }
            )
        ]
    );
    assert_eq!(s.steps_back[0].from - s.steps_back[0].to, 3600 - 60);
    // VERIFY.txt and the public key come with the export.
    let pubkey = fs::read_to_string(out.join(layout::PUBKEY_FILE)).unwrap();
    assert_eq!(NoteVerifier::parse(&pubkey).unwrap(), key().verifier());
    let howto = fs::read_to_string(out.join(layout::VERIFY_FILE)).unwrap();
    assert!(
        howto.contains("airlock audit verify") && howto.contains("size 13"),
        "{howto}"
    );
}

#[test]
fn tampering_is_refused_naming_the_place() {
    let label = key().verifier().label();
    let other_label = other_key().verifier().label();
    type Tamper = fn(&Path);
    // (case, tampering, the place and reason the message must name)
    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "edited entry",
            |d| edit_lines(&seg(d, 4), |l| l[2] = l[2].replace("\"bob\"", "\"eve\"")),
            "checkpoint 3 (checkpoints/00000003.checkpoint, size 9): root does not match entries 5..8".into(),
        ),
        (
            "removed entry",
            |d| edit_lines(&seg(d, 4), |l| {
                l.remove(3);
            }),
            "entries/00000000000000000004.jsonl line 4: entry 7 found where entry 6 belongs".into(),
        ),
        (
            "swapped entries",
            |d| edit_lines(&seg(d, 4), |l| l.swap(2, 3)),
            "entries/00000000000000000004.jsonl line 3: entry 6 found where entry 5 belongs".into(),
        ),
        (
            "truncated tail",
            |d| fs::remove_file(seg(d, 12)).unwrap(),
            "checkpoint 5 (checkpoints/00000005.checkpoint) covers 13 entries but the export holds 12: truncated tail".into(),
        ),
        (
            "truncated tail inside a segment",
            |d| {
                fs::remove_file(seg(d, 12)).unwrap();
                edit_lines(&seg(d, 8), |l| {
                    l.pop();
                });
            },
            "checkpoint 5 (checkpoints/00000005.checkpoint) covers 13 entries but the export holds 11: truncated tail (entries 11..12 missing)".into(),
        ),
        (
            "checkpoint signed by another key",
            |d| {
                let note = fs::read_to_string(cp_path(d, 2)).unwrap();
                let body = note.split("\n\n").next().unwrap().to_owned() + "\n";
                fs::write(cp_path(d, 2), other_key().sign(&body).unwrap()).unwrap();
            },
            format!("checkpoint 2 (checkpoints/00000002.checkpoint): no signature by {label} (signed by: {other_label})"),
        ),
        (
            "older checkpoint replayed after later entries",
            |d| {
                fs::copy(cp_path(d, 2), cp_path(d, 6)).unwrap();
            },
            "checkpoint 6 (checkpoints/00000006.checkpoint): size 5 is below checkpoint 5's size 13: an older checkpoint replayed".into(),
        ),
        (
            "uptime going back in one boot",
            |d| edit_lines(&seg(d, 0), |l| l[4] = l[4].replace("\"uptime_ms\":241000", "\"uptime_ms\":1")),
            "entry 3 (entries/00000000000000000000.jsonl line 5): uptime 1 ms is before entry 2's 181000 ms".into(),
        ),
        (
            "entry not canonical",
            |d| edit_lines(&seg(d, 0), |l| l[1] = l[1].replacen("{\"seq\"", "{ \"seq\"", 1)),
            "entry 0 (entries/00000000000000000000.jsonl line 2): entry is not in canonical form".into(),
        ),
        (
            "missing segment",
            |d| fs::remove_file(seg(d, 4)).unwrap(),
            "entries/00000000000000000008.jsonl: starts at entry 8, but the entries before end at 4".into(),
        ),
        (
            "checkpoint proof removed",
            |d| fs::remove_file(d.join("checkpoints/00000003.proof")).unwrap(),
            "checkpoint 3 (checkpoints/00000003.checkpoint): no consistency proof from checkpoint 2".into(),
        ),
    ];
    for (case, tamper, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let out = exported(tmp.path());
        verify(&out, &key().verifier()).unwrap();
        tamper(&out);
        let err = match verify(&out, &key().verifier()) {
            Ok(_) => panic!("{case}: verified, expected a refusal"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&want), "{case}:\n got  {err}\n want {want}");
    }
}

#[test]
fn replayed_older_log_is_caught_only_with_since() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = story(&tmp.path().join("log"));
    let old = tmp.path().join("old");
    s.log.export(&old, &key().verifier()).unwrap();
    s.add("carol", Role::Auditor, Action::Logout);
    s.checkpoint();
    let new = tmp.path().join("new");
    s.log.export(&new, &key().verifier()).unwrap();
    let kept = fs::read(cp_path(&new, 6)).unwrap();
    // The older export verifies on its own: truncation and replay are
    // caught only against a newer checkpoint the auditor kept.
    let v = verify(&old, &key().verifier()).unwrap();
    let err = v
        .check_since(&kept, &key().verifier())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is newer than this export's last checkpoint 5 (size 13): the log was truncated or an older log replayed"),
        "{err}"
    );
    // The newer one against the older one's checkpoint: consistent.
    let v = verify(&new, &key().verifier()).unwrap();
    let older = fs::read(cp_path(&old, 2)).unwrap();
    assert_eq!(
        v.check_since(&older, &key().verifier()).unwrap(),
        SinceMatch::Entries
    );
    // A --since checkpoint by another key is refused too.
    let body = String::from_utf8(older.clone()).unwrap();
    let body = body.split("\n\n").next().unwrap().to_owned() + "\n";
    let forged = other_key().sign(&body).unwrap();
    let err = v
        .check_since(forged.as_bytes(), &key().verifier())
        .unwrap_err();
    assert!(matches!(err, VerifyError::SinceCheckpoint(_)), "{err}");
}

/// Two logs continued from a copy taken at checkpoint 2.
fn forked(tmp: &Path) -> (PathBuf, PathBuf) {
    let mut s = Story::new(&tmp.join("log"));
    s.add("system", Role::System, Action::Boot);
    s.add("alice", Role::Operator, Action::Login);
    s.checkpoint();
    s.add("alice", Role::Operator, Action::Logout);
    s.checkpoint();
    let (wall, uptime) = (s.wall, s.uptime);
    drop(s);
    copy_dir(&tmp.join("log"), &tmp.join("log2"));
    let mut outs = Vec::new();
    for (dir, who) in [("log", "bob"), ("log2", "mallory")] {
        let mut s = Story::open(&tmp.join(dir), BOOT_A, wall, uptime);
        s.add(who, Role::Officer, Action::Login);
        s.add(who, Role::Officer, Action::ModelImport);
        s.checkpoint();
        let out = tmp.join(format!("export-{dir}"));
        s.log.export(&out, &key().verifier()).unwrap();
        outs.push(out);
    }
    (outs.remove(0), outs.remove(0))
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn forks_show_when_exports_are_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = forked(tmp.path());
    let va = verify(&a, &key().verifier()).unwrap();
    let vb = verify(&b, &key().verifier()).unwrap();
    match compare(&va, &vb) {
        Comparison::Fork {
            side,
            index,
            reason,
            last_common,
            ..
        } => {
            assert_eq!((side, index, last_common), ("A", 3, Some((2, 3))));
            assert!(reason.contains("not consistent with this log"), "{reason}");
        }
        other => panic!("no fork found: {other:?}"),
    }
    let theirs = fs::read(cp_path(&b, 3)).unwrap();
    let err = va
        .check_since(&theirs, &key().verifier())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(size 5, root") && err.contains("a fork or a rewritten log"),
        "{err}"
    );
    // A log compared with itself (or its older export) is consistent.
    assert_eq!(
        compare(&va, &va),
        Comparison::Consistent {
            shorter: "A",
            size: 5
        }
    );
}

#[test]
fn pruned_log_still_verifies_and_chains_old_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = story(&tmp.path().join("log"));
    let full = tmp.path().join("full");
    s.log.export(&full, &key().verifier()).unwrap();
    // Segments 0 and 4 hold entries 0..7, all below checkpoint 5 (size 13).
    assert_eq!(s.log.prune(9).unwrap(), 2);
    s.add("carol", Role::Auditor, Action::Logout);
    s.checkpoint();
    let out = tmp.path().join("pruned");
    s.log.export(&out, &key().verifier()).unwrap();
    let v = verify(&out, &key().verifier()).unwrap();
    assert_eq!((v.summary.first_seq, v.summary.size), (8, 14));
    // Checkpoint 2 (size 5) predates the kept entries: vouched for by the
    // chain of consistency proofs.
    let old = fs::read(cp_path(&full, 2)).unwrap();
    assert_eq!(
        v.check_since(&old, &key().verifier()).unwrap(),
        SinceMatch::Checkpoint(2)
    );
    // Reopening the pruned log works from the frontier in the header.
    drop(s);
    let mut s = Story::open(&tmp.path().join("log"), BOOT_B, T0 + 10_000, 10_000_000);
    s.add("carol", Role::Auditor, Action::Login);
    s.checkpoint();
    // An edited frontier in the first kept segment is caught at the first
    // checkpoint that covers it.
    edit_lines(&seg(&out, 8), |l| {
        let mut h = layout::SegmentHeader::parse(l[0].as_bytes()).unwrap();
        h.frontier[0] = super::merkle::hash_to_base64(&super::merkle::EMPTY_ROOT);
        l[0] = h.encode();
    });
    let err = verify_err(&out);
    assert!(err.contains("checkpoint 3 (checkpoints/00000003.checkpoint, size 9): root does not match entries 8..8"), "{err}");
}

#[test]
fn unexplained_step_back_is_flagged_not_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Story::new(&tmp.path().join("log"));
    s.add("system", Role::System, Action::Boot);
    s.wall -= 7200; // the clock jumps back with no clock-set and no new boot
    s.add("alice", Role::Operator, Action::Login);
    s.checkpoint();
    let out = tmp.path().join("export");
    s.log.export(&out, &key().verifier()).unwrap();
    let v = verify(&out, &key().verifier()).unwrap();
    assert_eq!(v.summary.steps_back.len(), 1);
    assert_eq!(v.summary.steps_back[0].why, StepWhy::Unexplained);
    assert_eq!(v.summary.steps_back[0].seq, 1);
}

#[test]
fn writer_keeps_order_and_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut s = story(&dir);
    // Wrong seq, uptime back, a new boot id without a boot entry.
    let mut e = s.entry("alice", Role::Operator, Action::Login, Outcome::Ok);
    e.seq += 1;
    assert!(matches!(
        s.log.append(&e),
        Err(WriterError::Sequence { want: 13, got: 14 })
    ));
    e.seq -= 1;
    e.uptime_ms = 1;
    assert!(matches!(
        s.log.append(&e),
        Err(WriterError::UptimeBack { .. })
    ));
    e.boot = BOOT_A.into();
    assert!(matches!(
        s.log.append(&e),
        Err(WriterError::BootWithoutBootEntry { .. })
    ));
    // A checkpoint stamped in another boot is not signed.
    let t = Stamp {
        wall: T0,
        boot: BOOT_A.into(),
        uptime_ms: 99_999_999,
    };
    assert!(matches!(
        s.log.checkpoint(&key(), t),
        Err(WriterError::StampBack { .. })
    ));
    // A receipt per answer: entry 2 (job 1) in checkpoint 5.
    let job = fs::read_to_string(seg(&dir, 0)).unwrap();
    let line = job.lines().nth(3).unwrap();
    let entry = Entry::parse(line.as_bytes()).unwrap();
    let r = s.log.receipt(&entry).unwrap();
    let r = super::receipt::Receipt::parse(r.to_text().as_bytes()).unwrap();
    let v = r.verify(&key().verifier()).unwrap();
    assert_eq!(
        (v.entry.seq, v.entry.job, v.checkpoint.size),
        (2, Some(1), 13)
    );
    let mut bad = r.clone();
    bad.entry = bad.entry.replace("\"job\":1", "\"job\":9");
    assert!(bad.verify(&key().verifier()).is_err());
    assert!(r.verify(&other_key().verifier()).is_err());
    drop(s);
    // A torn last line (an append whose fsync never returned) is cut off
    // on open.
    let last = seg(&dir, 12);
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(b"{\"seq\":13,\"wa");
    fs::write(&last, &bytes).unwrap();
    let s = Story::open(&dir, BOOT_B, T0, 99_000_000);
    assert_eq!(s.log.next_seq(), 13);
    drop(s);
    // A log edited on the state partition is not written to (fail closed).
    edit_lines(&seg(&dir, 4), |l| l[2] = l[2].replace("\"bob\"", "\"eve\""));
    let err = AuditLog::open(&dir, &key().verifier(), Policy::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, WriterError::Disagrees { index: 5, size: 13 }),
        "{err}"
    );
}

#[test]
fn unwritable_log_fails_closed_until_reopened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let policy = Policy { segment_entries: 1 };
    let mut s = Story {
        log: AuditLog::create(&dir, &key().verifier(), policy).unwrap(),
        boot: BOOT_A,
        wall: T0,
        uptime: 1000,
    };
    s.add("system", Role::System, Action::Boot);
    // The next entry needs a new segment file, and it cannot be created.
    let blocker = seg(&dir, 1);
    fs::create_dir(&blocker).unwrap();
    let e = s.entry("alice", Role::Operator, Action::Login, Outcome::Ok);
    let err = s.log.append(&e).unwrap_err();
    assert!(matches!(err, WriterError::Fs(_)), "{err}");
    // Every later append and checkpoint is refused, said plainly.
    let err = s.log.append(&e).unwrap_err().to_string();
    assert!(
        err.starts_with("audit log is not writable after an earlier failure (create segment"),
        "{err}"
    );
    assert!(
        err.ends_with("actions that must be audited are refused"),
        "{err}"
    );
    let t = Stamp {
        wall: T0,
        boot: BOOT_A.into(),
        uptime_ms: 99_999_999,
    };
    assert!(matches!(
        s.log.checkpoint(&key(), t),
        Err(WriterError::Broken(_))
    ));
    drop(s);
    fs::remove_dir(&blocker).unwrap();
    // A segment file whose header never reached the disk is dropped.
    fs::write(&blocker, b"{\"schema\":").unwrap();
    let log = AuditLog::open(&dir, &key().verifier(), policy).unwrap();
    assert_eq!(log.next_seq(), 1);
    assert!(!blocker.exists());
}
