//! `scripts/patch-crates` (the build-time patch of registry crates): a
//! .crate that does not match its pinned checksum, or a patch that does not
//! apply exactly, stops the build with a one-line reason and leaves no
//! patched tree; a current tree is left untouched (no rebuild by cargo); a
//! fresh checkout's tree keeps a target dir built from the same patched
//! source fresh, and only that one.
//!
//! Runs the real script in a scratch copy of its layout, on a small .crate
//! made here (nothing is downloaded).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use airlock_e2e::bundles::repo_root;

const GOOD: &str = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1,2 @@\n pub fn f() {}\n+pub const PATCHED: bool = true;\n";
const BAD: &str = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1,2 @@\n pub fn g() {}\n+pub const PATCHED: bool = true;\n";

/// A scratch tree with the script, one .crate (demo 0.1.0) and its sha256.
fn layout(dir: &Path) -> String {
    fs::create_dir_all(dir.join("scripts")).unwrap();
    fs::copy(
        repo_root().join("scripts/patch-crates"),
        dir.join("scripts/patch-crates"),
    )
    .unwrap();
    let src = dir.join("src-crate/demo-0.1.0/src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("lib.rs"), "pub fn f() {}\n").unwrap();
    fs::create_dir_all(dir.join("crates")).unwrap();
    let ok = Command::new("tar")
        .args(["-czf", "../crates/demo-0.1.0.crate", "demo-0.1.0"])
        .current_dir(dir.join("src-crate"))
        .status()
        .unwrap();
    assert!(ok.success());
    let out = Command::new("sha256sum")
        .arg(dir.join("crates/demo-0.1.0.crate"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

fn run(dir: &Path, sum: &str, patch: &str) -> (bool, String) {
    run_in(dir, sum, patch, &dir.join("target"))
}

/// patch-crates with CARGO_TARGET_DIR=target (never the real one).
fn run_in(dir: &Path, sum: &str, patch: &str, target: &Path) -> (bool, String) {
    fs::create_dir_all(dir.join("patches/demo-0.1.0")).unwrap();
    fs::write(
        dir.join("patches/crates.lock"),
        format!("# test\ndemo 0.1.0 {sum}\n"),
    )
    .unwrap();
    fs::write(dir.join("patches/demo-0.1.0/0001-test.patch"), patch).unwrap();
    let out = Command::new("bash")
        .arg(dir.join("scripts/patch-crates"))
        .env("AIRLOCK_CRATES_DIR", dir.join("crates"))
        .env("CARGO_HOME", dir.join("no-cargo-home"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.success(), msg)
}

#[test]
fn refusals_leave_no_patched_tree() {
    let zeros = "0".repeat(64);
    for (case, use_real_sum, patch, reason) in [
        (
            "checksum",
            false,
            GOOD,
            "patch-crates: demo 0.1.0: checksum ",
        ),
        (
            "patch",
            true,
            BAD,
            "patch-crates: patches/demo-0.1.0/0001-test.patch does not apply to demo 0.1.0",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let sum = layout(tmp.path());
        let (ok, msg) = run(tmp.path(), if use_real_sum { &sum } else { &zeros }, patch);
        assert!(!ok, "{case}: accepted");
        let last = msg.lines().last().unwrap_or_default();
        assert!(last.starts_with(reason), "{case}: {msg}");
        if case == "checksum" {
            assert!(
                last.ends_with(&format!("is not the pinned {zeros}")),
                "{case}: {last}"
            );
        }
        let left: Vec<_> = fs::read_dir(tmp.path().join("build/crates"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{case}: left behind {left:?}");
    }
}

#[test]
fn a_current_tree_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let sum = layout(tmp.path());
    let (ok, msg) = run(tmp.path(), &sum, GOOD);
    assert!(ok, "{msg}");
    let lib = tmp.path().join("build/crates/demo-0.1.0/src/lib.rs");
    assert!(fs::read_to_string(&lib).unwrap().contains("PATCHED"));
    let mtime = fs::metadata(&lib).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (ok, msg) = run(tmp.path(), &sum, GOOD);
    assert!(ok && msg.is_empty(), "second run: {msg}");
    assert_eq!(
        fs::metadata(&lib).unwrap().modified().unwrap(),
        mtime,
        "re-extracted"
    );
    // A changed patch set re-patches.
    let changed = GOOD.replace("true", "false");
    let (ok, _) = run(tmp.path(), &sum, &changed);
    assert!(ok);
    assert!(fs::read_to_string(&lib)
        .unwrap()
        .contains("PATCHED: bool = false"));
}

fn mtimes(dir: &Path) -> Vec<(std::path::PathBuf, SystemTime)> {
    let mut out = vec![(
        dir.to_path_buf(),
        fs::symlink_metadata(dir).unwrap().modified().unwrap(),
    )];
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(mtimes(&p));
        } else {
            out.push((
                p.clone(),
                fs::symlink_metadata(&p).unwrap().modified().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

fn modified(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

/// cargo rebuilds a path dependency when a source file is newer than the
/// unit's output. A fresh checkout's newly patched tree gets the mtime of
/// the target dir's record when that target dir last saw the same stamp
/// (outputs compiled since stay fresh), and never an old mtime for a target
/// dir that saw another stamp (a new patch, another target dir, going back
/// to an old patch).
#[test]
fn a_fresh_checkout_keeps_only_its_own_target_dir_fresh() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let sum = layout(s);
    let tree = s.join("build/crates/demo-0.1.0");
    let (t1, t2) = (s.join("target1"), s.join("target2"));
    let record = t1.join(".airlock-patched/demo-0.1.0");
    let pause = || std::thread::sleep(std::time::Duration::from_millis(20));

    // First run: unpacked and patched, target1's record written.
    assert!(run_in(s, &sum, GOOD, &t1).0);
    let stamp = fs::read_to_string(tree.join(".airlock-patched")).unwrap();
    assert_eq!(fs::read_to_string(&record).unwrap(), stamp);
    let rec_time = modified(&record);

    // A fresh checkout (no build/): every file and directory of the new
    // tree gets the record's mtime.
    pause();
    fs::remove_dir_all(s.join("build")).unwrap();
    assert!(run_in(s, &sum, GOOD, &t1).0);
    let m = mtimes(&tree);
    assert!(m.len() >= 4, "{m:?}");
    assert!(m.iter().all(|(_, t)| *t == rec_time), "{m:?}");
    // A current tree, the same target dir: nothing touched.
    assert!(run_in(s, &sum, GOOD, &t1).0);
    assert_eq!(mtimes(&tree), m);

    // Another target dir, which never saw this stamp: the current tree is
    // touched (newer than anything compiled before), its record written.
    pause();
    assert!(run_in(s, &sum, GOOD, &t2).0);
    assert!(mtimes(&tree).iter().all(|(_, t)| *t > rec_time));
    assert_eq!(
        fs::read_to_string(t2.join(".airlock-patched/demo-0.1.0")).unwrap(),
        stamp
    );

    // A new patch: the record follows, the patched file is newer than it was.
    let changed = GOOD.replace("true", "false");
    pause();
    assert!(run_in(s, &sum, &changed, &t1).0);
    let stamp2 = fs::read_to_string(tree.join(".airlock-patched")).unwrap();
    assert_ne!(stamp2, stamp);
    assert_eq!(fs::read_to_string(&record).unwrap(), stamp2);
    assert!(modified(&tree.join("src/lib.rs")) > rec_time);

    // Back to the old patch in a fresh checkout: target1 last saw the new
    // one, so the old tree is not given an old mtime.
    let rec2 = modified(&record);
    fs::remove_dir_all(s.join("build")).unwrap();
    pause();
    assert!(run_in(s, &sum, GOOD, &t1).0);
    assert_eq!(fs::read_to_string(&record).unwrap(), stamp);
    assert!(modified(&tree.join("src/lib.rs")) > rec2);
}
