//! The boot's at-rest check as PID 1 runs it: the real `airlock-init
//! model-check STORE` child on stores built through the import path with
//! test keys, table-driven: a clean store, a byte edited offline in the
//! active model file, the leftovers of an interrupted import, no store, no
//! trust file. Each case checks the child's lines, the per-boot record and
//! what `worker_model_dir` then gives a worker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_fixture;

use airlock_formats::custody;
use airlock_formats::state::{Pending, State};
use airlock_supervisor::model_check::line::{self, Line};
use airlock_supervisor::model_check::record::{self, worker_model_dir, Refusal};
use std::fs;
use std::process::Command;
use store_fixture::{copy_dir, Store};

const BIN: &str = env!("CARGO_BIN_EXE_airlock-init");

/// Runs the child; returns its lines with the MILLIS of `ok` lines as `MS`.
fn run_child(s: &Store) -> Vec<String> {
    let out = Command::new(BIN)
        .arg("model-check")
        .arg(&s.store)
        .arg("--trust")
        .arg(&s.trust_file)
        .arg("--record")
        .arg(&s.record)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|l| match line::parse(l).unwrap() {
            Line::Ok {
                name,
                version,
                bytes,
                ..
            } => format!("ok {name} {version} {bytes} MS"),
            _ => l.to_string(),
        })
        .collect()
}

/// tiny 1, tiny 2 (active), other 1 (active).
fn base() -> Store {
    let s = Store::new();
    s.import("tiny", 1);
    s.import("tiny", 2);
    s.import("other", 1);
    s.activate("tiny", 2);
    s.activate("other", 1);
    s
}

const CLEAN: &[&str] = &[
    "checking other 1 1007",
    "ok other 1 1007 MS",
    "checking tiny 2 2007",
    "ok tiny 2 2007 MS",
];

struct Case {
    name: &'static str,
    setup: fn(&Store),
    /// Expected lines; `{store}` stands for the store's path; a line
    /// ending in `…` is a prefix.
    want: &'static [&'static str],
    /// Checks after the run (record, store).
    then: fn(&Store),
}

fn ok_dir(s: &Store, name: &str, v: u64) {
    assert_eq!(
        worker_model_dir(&s.store, &s.record, name).unwrap(),
        s.vdir(name, v),
        "{name}"
    );
}

const CASES: &[Case] = &[
    Case {
        name: "clean store",
        setup: |_| {},
        want: CLEAN,
        then: |s| {
            ok_dir(s, "tiny", 2);
            ok_dir(s, "other", 1);
            let r = record::read(&s.record, "tiny").unwrap().unwrap();
            assert!(matches!(r, Line::Ok { version: 2, bytes: 2007, .. }), "{r:?}");
        },
    },
    Case {
        name: "byte flipped in the active model file",
        setup: |s| s.flip("tiny", 2, 500),
        want: &[
            "checking other 1 1007",
            "ok other 1 1007 MS",
            "checking tiny 2 2007",
            "refused tiny 2 model tiny version 2 fails its at-rest check: payload model.gguf: SHA-256 mismatch…",
        ],
        then: |s| {
            ok_dir(s, "other", 1);
            let e = worker_model_dir(&s.store, &s.record, "tiny").unwrap_err();
            let Refusal::Refused { version: 2, reason, .. } = &e else {
                panic!("{e:?}")
            };
            assert!(reason.contains("payload model.gguf: SHA-256 mismatch"), "{e}");
            assert!(
                e.to_string()
                    .starts_with("model tiny version 2 REFUSED at rest: model tiny version 2"),
                "{e}"
            );
            // Re-activating the edited version re-hashes it and fails; the
            // record keeps the refusal.
            let r = custody::activate(&s.store, &s.trust, "tiny", 2);
            let msg = r.as_ref().unwrap_err().to_string();
            assert!(msg.contains("payload model.gguf: SHA-256 mismatch"), "{msg}");
            record::after_activation(&s.record, &s.store, "tiny", Some(2), &r, 5).unwrap();
            assert!(worker_model_dir(&s.store, &s.record, "tiny").is_err());
            // Activating the intact version 1 checks it: a worker gets it.
            let r = custody::activate(&s.store, &s.trust, "tiny", 1);
            assert!(r.is_ok());
            record::after_activation(&s.record, &s.store, "tiny", Some(1), &r, 5).unwrap();
            ok_dir(s, "tiny", 1);
        },
    },
    Case {
        name: "leftovers of an interrupted import",
        setup: |s| {
            // Killed while streaming version 3 into staging.
            let staging = s.store.join(".staging/model-tiny-3-4242");
            fs::create_dir_all(&staging).unwrap();
            fs::write(staging.join("model.gguf"), b"partial").unwrap();
            // Killed between the rename and the commit of version 4: its
            // directory is in place, its intent pending.
            copy_dir(&s.vdir("tiny", 2), &s.store.join("model/tiny/4"));
            let mut st = State::load(&s.store).unwrap();
            st.pending.push(Pending {
                kind: airlock_formats::manifest::Kind::Model,
                name: "tiny".into(),
                version: 4,
                manifest_sha256: "0".repeat(64),
                deferred: false,
            });
            st.save(&s.store).unwrap();
        },
        want: &[
            "recovered {store}/.staging/model-tiny-3-4242",
            "recovered {store}/model/tiny/4",
            "checking other 1 1007",
            "ok other 1 1007 MS",
            "checking tiny 2 2007",
            "ok tiny 2 2007 MS",
        ],
        then: |s| {
            assert!(!s.store.join(".staging").exists());
            assert!(!s.store.join("model/tiny/4").exists());
            let st = State::load(&s.store).unwrap();
            assert!(st.pending.is_empty());
            let m = custody::models(&s.store).unwrap();
            let tiny: Vec<u64> = m
                .iter()
                .find(|m| m.name == "tiny")
                .unwrap()
                .versions
                .iter()
                .map(|v| v.version)
                .collect();
            assert_eq!(tiny, vec![1, 2]);
            ok_dir(s, "tiny", 2);
        },
    },
    Case {
        name: "no store (not provisioned, nothing imported)",
        setup: |s| fs::remove_dir_all(&s.store).unwrap(),
        want: &[],
        then: |s| {
            assert!(!s.record.exists());
            assert!(!s.store.exists());
        },
    },
    Case {
        name: "store directory without state",
        setup: |s| fs::remove_file(s.store.join("state.json")).unwrap(),
        want: &[],
        then: |s| assert!(!s.record.exists()),
    },
    Case {
        name: "no trust file",
        setup: |s| fs::remove_file(&s.trust_file).unwrap(),
        want: &[
            "checking other 1 1007",
            "refused other 1 read the trust file {dir}/trust.json: No such file…",
            "checking tiny 2 2007",
            "refused tiny 2 read the trust file {dir}/trust.json: No such file…",
        ],
        then: |s| {
            for name in ["tiny", "other"] {
                let e = worker_model_dir(&s.store, &s.record, name).unwrap_err();
                assert!(matches!(e, Refusal::Refused { .. }), "{e:?}");
            }
        },
    },
];

#[test]
fn model_check_child_cases() {
    for c in CASES {
        let s = base();
        (c.setup)(&s);
        let got = run_child(&s);
        let store = s.store.display().to_string();
        let dir = s.dir.display().to_string();
        assert_eq!(got.len(), c.want.len(), "{}: {got:#?}", c.name);
        for (g, w) in got.iter().zip(c.want) {
            let w = w.replace("{store}", &store).replace("{dir}", &dir);
            match w.strip_suffix('…') {
                Some(prefix) => assert!(g.starts_with(prefix), "{}: {g:?} !~ {w:?}", c.name),
                None => assert_eq!(g, &w, "{}", c.name),
            }
        }
        (c.then)(&s);
    }
}

#[test]
fn a_model_not_checked_in_this_boot_is_refused() {
    let s = base();
    // No record yet (the check has not run or is still running).
    let e = worker_model_dir(&s.store, &s.record, "tiny").unwrap_err();
    assert_eq!(
        e,
        Refusal::NotChecked {
            name: "tiny".into(),
            version: 2
        }
    );
    run_child(&s);
    ok_dir(&s, "tiny", 2);
    // A rollback made later in this boot without a record update: the
    // record names version 2, version 1 was not checked.
    let mut st = State::load(&s.store).unwrap();
    st.active
        .iter_mut()
        .find(|a| a.name == "tiny")
        .unwrap()
        .version = 1;
    st.save(&s.store).unwrap();
    let e = worker_model_dir(&s.store, &s.record, "tiny").unwrap_err();
    assert_eq!(
        e,
        Refusal::NotChecked {
            name: "tiny".into(),
            version: 1
        }
    );
    // A model never activated, a name that is not one.
    s.import("third", 1);
    let e = worker_model_dir(&s.store, &s.record, "third").unwrap_err();
    assert_eq!(
        e,
        Refusal::NoActive {
            name: "third".into()
        }
    );
    let e = worker_model_dir(&s.store, &s.record, "../tiny").unwrap_err();
    assert_eq!(e, Refusal::Name("../tiny".into()));
    // A record file that is not a record line is refused, not trusted.
    fs::write(s.record.join("other"), "ok other 1 x y\n").unwrap();
    let e = worker_model_dir(&s.store, &s.record, "other").unwrap_err();
    assert!(matches!(e, Refusal::Record { .. }), "{e:?}");
}
