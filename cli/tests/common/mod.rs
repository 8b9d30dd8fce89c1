//! Scaffolding shared by the audit tests (`audit.rs`, `report.rs`): the
//! real `airlock` binary, a log written by the appliance's writer code with
//! its clocks, the story export, and file edits for tampering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use airlock_formats::audit::checkpoint::Stamp;
use airlock_formats::audit::entry::{
    sha256_hex, Action, Entry, Outcome, Role, Subject, SubjectKind,
};
use airlock_formats::audit::note::NoteSigner;
use airlock_formats::audit::writer::{AuditLog, Policy};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");
pub const ORIGIN: &str = "airlock.local/cli-test/audit";
pub const BOOT_A: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
pub const BOOT_B: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";

pub fn airlock(args: &[&str]) -> Output {
    Command::new(AIRLOCK)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Exit 1 and exactly one stderr line containing `reason`.
pub fn refused(case: &str, out: Output, reason: &str) {
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{case}: expected refusal, got {:?}: {err}",
        out.status
    );
    assert_eq!(
        err.lines().count(),
        1,
        "{case}: exactly one reason line: {err:?}"
    );
    assert!(
        err.starts_with("airlock: ") && err.contains(reason),
        "{case}: reason {reason:?} not in {err:?}"
    );
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn signer(seed: u8) -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[seed; 32]).unwrap()
}

/// A log being written by the appliance's writer code, with its clocks.
pub struct Log {
    pub log: AuditLog,
    pub boot: &'static str,
    pub wall: u64,
    pub uptime: u64,
}

impl Log {
    pub fn new(dir: &Path) -> Self {
        let policy = Policy { segment_entries: 3 };
        Self {
            log: AuditLog::create(dir, &signer(1).verifier(), policy).unwrap(),
            boot: BOOT_A,
            wall: 1_796_357_711,
            uptime: 2_000,
        }
    }

    pub fn add(&mut self, account: &str, role: Role, action: Action, f: impl FnOnce(&mut Entry)) {
        self.wall += 30;
        self.uptime += 30_000;
        let mut e = Entry {
            seq: self.log.next_seq(),
            wall: self.wall,
            boot: self.boot.into(),
            uptime_ms: self.uptime,
            account: account.into(),
            role,
            action,
            result: Outcome::Ok,
            reason: None,
            job: None,
            clock_from: None,
            detail: None,
            subjects: Vec::new(),
        };
        f(&mut e);
        self.wall = e.wall;
        self.log.append(&e).unwrap();
    }

    pub fn checkpoint(&mut self) {
        let t = Stamp {
            wall: self.wall,
            boot: self.boot.into(),
            uptime_ms: self.uptime + 1,
        };
        self.log.checkpoint(&signer(1), t).unwrap();
    }
}

/// Boot A: olga logs in, runs jobs 1 and 2 (2 refused), logs out; the
/// officer ivan sets the clock back 2 h; shutdown. Boot B with the clock a
/// day behind: the auditor exports. Checkpoints at sizes 2, 5, 8, 10.
pub fn story(dir: &Path) -> Log {
    let mut l = Log::new(dir);
    l.add("system", Role::System, Action::Boot, |_| {}); // 0
    l.add("olga", Role::Operator, Action::Login, |_| {}); // 1
    l.checkpoint(); // 1: size 2
    for job in [1u64, 2] {
        l.add("olga", Role::Operator, Action::Job, |e| {
            e.job = Some(job);
            e.subjects = vec![Subject {
                kind: SubjectKind::Ciphertext,
                name: Some(format!("q{job}.txt.gpg")),
                hash: sha256_hex(&job.to_be_bytes()),
            }];
            if job == 2 {
                e.result = Outcome::Refused;
                e.reason = Some("no-mdc".into());
            }
        }); // 2, 3
    }
    l.add("olga", Role::Operator, Action::Logout, |_| {}); // 4
    l.checkpoint(); // 2: size 5
    l.add("ivan", Role::Officer, Action::Login, |_| {}); // 5
    l.add("ivan", Role::Officer, Action::ClockSet, |e| {
        e.clock_from = Some(e.wall);
        e.wall -= 7200;
    }); // 6
    l.add("system", Role::System, Action::Shutdown, |_| {}); // 7
    l.checkpoint(); // 3: size 8
    l.boot = BOOT_B;
    l.wall -= 86_400;
    l.uptime = 0;
    l.add("system", Role::System, Action::Boot, |_| {}); // 8
    l.add("ada", Role::Auditor, Action::AuditExport, |_| {}); // 9
    l.checkpoint(); // 4: size 10
    l
}

pub struct Fx {
    pub tmp: tempfile::TempDir,
    pub key: PathBuf,
}

impl Fx {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("audit.pub");
        fs::write(&key, format!("{}\n", signer(1).verifier())).unwrap();
        Self { tmp, key }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The story written into `log` and exported to `name`.
    pub fn export(&self, name: &str) -> PathBuf {
        let l = story(&self.path("log"));
        let out = self.path(name);
        l.log.export(&out, &signer(1).verifier()).unwrap();
        out
    }

    /// A log written by `write` into `log-NAME` and exported to `NAME`.
    pub fn export_of(&self, name: &str, write: impl FnOnce(&Path) -> Log) -> PathBuf {
        let l = write(&self.path(&format!("log-{name}")));
        let out = self.path(name);
        l.log.export(&out, &signer(1).verifier()).unwrap();
        out
    }

    pub fn verify(&self, dir: &Path, since: Option<&Path>) -> Output {
        let mut args = vec!["audit", "verify", p(dir), "--key", p(&self.key)];
        if let Some(s) = since {
            args.extend(["--since", p(s)]);
        }
        airlock(&args)
    }
}

pub fn segment(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("entries/{first:020}.jsonl"))
}

pub fn checkpoint(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("checkpoints/{index:08}.checkpoint"))
}

pub fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    fs::write(path, lines.join("\n") + "\n").unwrap();
}
