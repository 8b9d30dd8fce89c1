//! `scripts/patch-crates` (the build-time patch of registry crates): a
//! .crate that does not match its pinned checksum, or a patch that does not
//! apply exactly, stops the build with a one-line reason and leaves no
//! patched tree; a current tree is left untouched (no rebuild by cargo).
//!
//! Runs the real script in a scratch copy of its layout, on a small .crate
//! made here (nothing is downloaded).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::Command;

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
