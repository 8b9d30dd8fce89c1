//! Least privilege of a worker: the spec the job path builds
//! (`model_check::worker_spec`) on a store with two versions of a model and
//! a second model gives the sandbox only the active, checked version's
//! directory, read-only. A probe spawned through that very spec (worker
//! seccomp stage 2, Landlock, namespaces) reads the active model file and
//! fails, with the errno shown, to open the other version's file, the
//! other model, the store's state.json, and to write its own model dir.
//! Runs as root (the sandbox needs it) and uses the sandbox crate's
//! `airlock-probe`, built next to `airlock-init` by `cargo test --workspace`
//! (or `cargo build --release -p airlock-sandbox --bin airlock-probe`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_fixture;

use airlock_sandbox::names::errno_name;
use airlock_sandbox::{spawn, ExitStatus};
use airlock_supervisor::model_check::child::{self, Args};
use airlock_supervisor::model_check::record::Refusal;
use airlock_supervisor::model_check::worker_spec::worker_spec;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;
use store_fixture::Store;

fn probe() -> PathBuf {
    let p =
        std::path::Path::new(env!("CARGO_BIN_EXE_airlock-init")).with_file_name("airlock-probe");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build --release -p airlock-sandbox --bin airlock-probe` \
         (cargo test --workspace builds it)",
        p.display()
    );
    p
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid 2-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two new fds we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The boot check's run (writes this boot's record).
fn check(s: &Store) {
    let mut lines = Vec::new();
    child::run(
        &Args {
            store: s.store.clone(),
            trust: s.trust_file.clone(),
            record: s.record.clone(),
        },
        &mut |l| lines.push(l.to_string()),
    );
    assert!(!lines.is_empty());
}

/// Spawns the probe through the worker's spec for model `name` and has it
/// open `path` as `mode`; returns what it answered after `open PATH `.
fn probe_open(s: &Store, name: &str, path: &str, mode: &str) -> String {
    let mut spec = worker_spec(&probe(), &s.store, &s.record, name).unwrap();
    spec.args = ["--stage2", "open", path, mode]
        .iter()
        .map(Into::into)
        .collect();
    spec.scratch_size = 1 << 20;
    let (r, w) = pipe();
    let (stdin_r, stdin_w) = pipe();
    spec.fds.push((w.try_clone().unwrap(), 1));
    spec.fds.push((w, 2));
    spec.fds.push((stdin_r, 0));
    let mut child = spawn(spec).unwrap();
    // Stage 2 confirmed by spawn: let the probe act.
    drop(stdin_w);
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    let st = child.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(st, Some(ExitStatus::Exited(0)), "{out}");
    let prefix = format!("open {path} ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no answer for {path}: {out:?}"))
        .to_string()
}

#[test]
fn worker_sees_only_the_active_checked_model_read_only() {
    let s = Store::new();
    s.import("tiny", 1);
    s.import("tiny", 2);
    s.import("other", 1);
    s.activate("tiny", 2);
    s.activate("other", 1);
    check(&s);
    let spec = worker_spec(&probe(), &s.store, &s.record, "tiny").unwrap();
    assert_eq!(spec.model_dir, Some(s.vdir("tiny", 2)));
    let host = |p: PathBuf| p.display().to_string();
    let enoent = format!("errno {}", errno_name(libc::ENOENT));
    // (what, path as the worker names it, mode, expected answer)
    let cases: Vec<(&str, String, &str, String)> = vec![
        (
            "the active version's model file",
            "/model/model.gguf".into(),
            "read",
            format!("ok read {} bytes", store_fixture::payload("tiny", 2).len()),
        ),
        (
            "the other version's file (host path)",
            host(s.vdir("tiny", 1).join("model.gguf")),
            "read",
            enoent.clone(),
        ),
        (
            "the other version's file (beside /model)",
            "/model/../1/model.gguf".into(),
            "read",
            enoent.clone(),
        ),
        (
            "the other model's file",
            host(s.vdir("other", 1).join("model.gguf")),
            "read",
            enoent.clone(),
        ),
        (
            "the store's state.json",
            host(s.store.join("state.json")),
            "read",
            enoent.clone(),
        ),
        (
            "state.json above /model",
            "/model/../../../state.json".into(),
            "read",
            enoent.clone(),
        ),
        (
            "writing its model file",
            "/model/model.gguf".into(),
            "write",
            format!("errno {}", errno_name(libc::EACCES)),
        ),
        (
            "creating a file in its model dir",
            "/model/new.bin".into(),
            "create",
            format!("errno {}", errno_name(libc::EROFS)),
        ),
    ];
    let mut failed = Vec::new();
    for (what, path, mode, want) in &cases {
        let got = probe_open(&s, "tiny", path, mode);
        println!("{what}: open {path} {mode} → {got}");
        if &got != want {
            failed.push(format!(
                "{what}: open {path} {mode}: got {got:?}, want {want:?}"
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn no_spec_for_a_model_refused_at_rest() {
    let s = Store::new();
    s.import("tiny", 1);
    s.activate("tiny", 1);
    s.flip("tiny", 1, 10);
    check(&s);
    let e = worker_spec(&probe(), &s.store, &s.record, "tiny").unwrap_err();
    let Refusal::Refused {
        version: 1, reason, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert!(
        reason.contains("payload model.gguf: SHA-256 mismatch"),
        "{e}"
    );
}
