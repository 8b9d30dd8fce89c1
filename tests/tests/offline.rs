//! The offline build's inputs (docs/image.md "Offline build"):
//! - `scripts/vendor OUT` makes a vendored set that `scripts/vendor verify`
//!   accepts, and refuses a directory that is not one;
//! - every kind of tampering or mismatch is refused with its one line: a
//!   changed, added, missing or unlisted file, a broken Debian signature, a
//!   `.deb` the signed list does not name, another `Cargo.lock` or toolchain,
//!   another installed package version, a changed wheel;
//! - `scripts/vendor seed` fills only a cargo home of its own, with exactly
//!   the set's crates;
//! - `scripts/build-image --offline` cuts its network (and says when it is
//!   not cut) and stops before writing anything on a bad set.
//!
//! The offline build itself (the second build of `build-image
//! --check-offline`, compared with the online one) runs in scripts/test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_e2e::bundles::repo_root;

use airlock_e2e::output_text as text;

fn cache_dir() -> PathBuf {
    std::env::var_os("AIRLOCK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/airlock"))
}

/// The vendored set of this checkout, made (or refreshed) once per test
/// process: `scripts/vendor $AIRLOCK_CACHE/vendor` (what scripts/test uses).
fn vendored() -> PathBuf {
    static SET: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let dir = cache_dir().join("vendor");
        let out = Command::new(repo_root().join("scripts/vendor"))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/vendor: {}", text(&out));
        dir
    })
    .clone()
}

/// A copy of the set made of hard links: a mutation must replace a file,
/// never write into it.
fn copy_of(set: &Path, into: &Path) -> PathBuf {
    let dest = into.join("set");
    let st = Command::new("cp")
        .arg("-al")
        .arg(set)
        .arg(&dest)
        .status()
        .unwrap();
    assert!(st.success());
    dest
}

fn replace(path: &Path, bytes: &[u8]) {
    fs::remove_file(path).unwrap();
    fs::write(path, bytes).unwrap();
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// MANIFEST's line of `rel` rewritten to the file's new hash (as if the
/// tamperer also edited the manifest).
fn relist(set: &Path, rel: &str) {
    let m = set.join("MANIFEST");
    let body = fs::read_to_string(&m).unwrap();
    let sha = sha256(&set.join(rel));
    let new: Vec<String> = body
        .lines()
        .map(|l| {
            if l.ends_with(&format!("  {rel}")) {
                format!("{sha}  {rel}")
            } else {
                l.to_string()
            }
        })
        .collect();
    replace(&m, (new.join("\n") + "\n").as_bytes());
}

fn unlist(set: &Path, rel: &str) {
    let m = set.join("MANIFEST");
    let body = fs::read_to_string(&m).unwrap();
    let new: Vec<&str> = body
        .lines()
        .filter(|l| !l.ends_with(&format!("  {rel}")))
        .collect();
    replace(&m, (new.join("\n") + "\n").as_bytes());
}

/// The first file under `dir` of the set whose name ends with `suffix`.
fn first(set: &Path, dir: &str, suffix: &str) -> String {
    let mut names: Vec<String> = fs::read_dir(set.join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    format!("{dir}/{}", names.first().expect("a file"))
}

/// Extra environment variables of one case.
type Envs<'a> = Vec<(&'a str, &'a str)>;

/// How many .crate files the set holds.
fn crate_files(set: &Path) -> usize {
    fs::read_dir(set.join("crates"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".crate")
        })
        .count()
}

fn verify(set: &Path, envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(repo_root().join("scripts/vendor"))
        .arg("verify")
        .arg(set)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn edit_text(path: &Path, from: &str, to: &str) {
    let body = fs::read_to_string(path).unwrap();
    assert!(body.contains(from), "{} lacks {from:?}", path.display());
    replace(path, body.replacen(from, to, 1).as_bytes());
}

#[test]
fn the_vendored_set_verifies_and_each_mismatch_is_refused() {
    let set = vendored();
    let (code, out, err) = verify(&set, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let listed = fs::read_to_string(set.join("MANIFEST"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let crates = crate_files(&set);
    let lock = fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let registry = lock.matches("source = \"registry+").count();
    let patched = fs::read_to_string(repo_root().join("patches/crates.lock"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(
        crates,
        registry + patched,
        "one .crate per crates.io package of Cargo.lock and per patched crate"
    );
    let packages = fs::read_to_string(repo_root().join("image/build-packages"))
        .unwrap()
        .lines()
        .filter(|l| !l.split('#').next().unwrap().trim().is_empty())
        .count();
    assert!(
        out.contains(&format!(
            "verified: {listed} files as listed; {crates} crates; {packages} Debian packages vouched for by Debian's signed lists and installed at these versions; 1 model wheels"
        )),
        "{out}"
    );

    // An installed package at another version than the set's: a dpkg
    // status copy (dpkg-query --admindir) with xz-utils downgraded.
    let tmp = tempfile::tempdir().unwrap();
    let admin = tmp.path().join("dpkg");
    fs::create_dir(&admin).unwrap();
    let status = fs::read_to_string("/var/lib/dpkg/status").unwrap();
    let mut other = String::new();
    let mut in_xz = false;
    for line in status.lines() {
        if line.starts_with("Package: ") {
            in_xz = line == "Package: xz-utils";
        }
        if in_xz && line.starts_with("Version: ") {
            other.push_str("Version: 5.4.0-0.1\n");
        } else {
            other.push_str(line);
            other.push('\n');
        }
    }
    fs::write(admin.join("status"), other).unwrap();
    let admin_s = admin.to_str().unwrap().to_string();

    // (what, the mutation of the copy, extra environment, the reason expected)
    type Mutation = fn(&Path);
    type Case<'a> = (&'a str, Mutation, Envs<'a>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "a .crate with one byte changed",
            |s| {
                let rel = first(s, "crates", ".crate");
                let mut b = fs::read(s.join(&rel)).unwrap();
                b[100] ^= 1;
                replace(&s.join(&rel), &b);
            },
            vec![],
            "is not MANIFEST's",
        ),
        (
            "a file added",
            |s| fs::write(s.join("crates/evil-1.0.0.crate"), b"x").unwrap(),
            vec![],
            "crates/evil-1.0.0.crate: not in MANIFEST (added after vendoring?)",
        ),
        (
            "a listed .crate removed",
            |s| fs::remove_file(s.join(first(s, "crates", ".crate"))).unwrap(),
            vec![],
            "listed in MANIFEST but missing",
        ),
        (
            "a .crate and its MANIFEST line removed",
            |s| {
                let rel = first(s, "crates", ".crate");
                fs::remove_file(s.join(&rel)).unwrap();
                unlist(s, &rel);
            },
            vec![],
            "is in this checkout's lock files)",
        ),
        (
            "the MANIFEST removed",
            |s| fs::remove_file(s.join("MANIFEST")).unwrap(),
            vec![],
            "not a vendored set: make one with scripts/vendor",
        ),
        (
            "a symbolic link",
            |s| std::os::unix::fs::symlink("/etc/passwd", s.join("wheels/link")).unwrap(),
            vec![],
            "wheels/link: a symbolic link",
        ),
        (
            "an InRelease whose signed text was changed (MANIFEST updated)",
            |s| {
                let rel = first(s, "debian/lists", "_InRelease");
                edit_text(&s.join(&rel), "Codename: ", "Codename: x");
                relist(s, &rel);
            },
            vec![],
            "Debian's archive signature does not verify",
        ),
        (
            "a .deb changed (MANIFEST and packages.txt updated)",
            |s| {
                let rel = "debian/pool/".to_string()
                    + fs::read_to_string(s.join("debian/packages.txt"))
                        .unwrap()
                        .lines()
                        .find(|l| l.starts_with("faketime "))
                        .unwrap()
                        .split_whitespace()
                        .nth(4)
                        .unwrap();
                let old = sha256(&s.join(&rel));
                let mut b = fs::read(s.join(&rel)).unwrap();
                let n = b.len();
                b[n - 10] ^= 1;
                replace(&s.join(&rel), &b);
                let new = sha256(&s.join(&rel));
                edit_text(&s.join("debian/packages.txt"), &old, &new);
                relist(s, &rel);
                relist(s, "debian/packages.txt");
            },
            vec![],
            "its signed list does not name faketime_",
        ),
        (
            "a set made for another Cargo.lock (MANIFEST updated)",
            |s| {
                let body = fs::read_to_string(s.join("inputs.txt")).unwrap();
                let line = body.lines().find(|l| l.ends_with(" Cargo.lock")).unwrap();
                edit_text(
                    &s.join("inputs.txt"),
                    line,
                    &format!("file {} Cargo.lock", "0".repeat(64)),
                );
                relist(s, "inputs.txt");
            },
            vec![],
            "made for another Cargo.lock than this checkout's (run scripts/vendor again)",
        ),
        (
            "a set made with another toolchain (MANIFEST updated)",
            |s| {
                edit_text(
                    &s.join("inputs.txt"),
                    "rustc release: ",
                    "rustc release: 0.",
                );
                relist(s, "inputs.txt");
            },
            vec![],
            "made with another Rust toolchain (release: 0.",
        ),
        (
            "a wheel changed (MANIFEST updated)",
            |s| {
                let rel = first(s, "wheels", ".whl");
                let mut b = fs::read(s.join(&rel)).unwrap();
                b[0] ^= 1;
                replace(&s.join(&rel), &b);
                relist(s, &rel);
            },
            vec![],
            "not the SHA-256 scripts/models.lock pins",
        ),
        (
            "another version of a package installed",
            |_| {},
            vec![("AIRLOCK_DPKG_ADMINDIR", admin_s.as_str())],
            "xz-utils 5.4.0-0.1 is installed, the vendored set holds ",
        ),
    ];
    for (what, mutate, envs, reason) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let copy = copy_of(&set, tmp.path());
        mutate(&copy);
        let (code, out, err) = verify(&copy, &envs);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(out.is_empty(), "{what}: stdout {out}");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
        assert!(err.starts_with("vendor: "), "{what}: {err}");
        assert!(err.contains(reason), "{what}: expected {reason:?} in {err}");
    }
    // The set itself was not touched by any of it.
    assert_eq!(verify(&set, &[]).0, 0);
}

#[test]
fn vendor_refuses_a_directory_that_is_not_a_set() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("notes");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("todo.txt"), "mine\n").unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    for (out_dir, reason) in [
        (
            &dir,
            "holds files but is not a vendored set (no MANIFEST): choose an empty or new directory",
        ),
        (&file, "is not a directory"),
    ] {
        let out = Command::new(repo_root().join("scripts/vendor"))
            .arg(out_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(reason), "{err}");
    }
    assert_eq!(fs::read_to_string(dir.join("todo.txt")).unwrap(), "mine\n");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    // Nothing left beside them either (the set is written next to OUT).
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
}

#[test]
fn seed_fills_only_a_cargo_home_of_its_own() {
    let set = vendored();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("cargo");
    let seed = |home: &Path| {
        Command::new(repo_root().join("scripts/vendor"))
            .arg("seed")
            .arg(&set)
            .arg(home)
            .output()
            .unwrap()
    };
    let out = seed(&home);
    assert!(out.status.success(), "{}", text(&out));
    let crates = crate_files(&set);
    let cache: Vec<_> = fs::read_dir(home.join("registry/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cache.len(), 1);
    assert_eq!(fs::read_dir(&cache[0]).unwrap().count(), crates);
    // A stale download from before is gone on the next seed.
    fs::write(cache[0].join("stale-0.1.0.crate"), b"x").unwrap();
    assert!(seed(&home).status.success());
    assert_eq!(fs::read_dir(&cache[0]).unwrap().count(), crates);
    // Somebody's own cargo home is refused and left alone.
    let theirs = tmp.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::write(theirs.join("config.toml"), "[net]\n").unwrap();
    let out = seed(&theirs);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("holds other things: --offline fills a cargo home of its own"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&theirs).unwrap().count(), 1);
}

/// `build-image --offline` on bad input: one line, the output directory as
/// it was. The network probe fails when the namespace was not cut.
#[test]
fn build_image_offline_refuses_before_writing() {
    let set = vendored();
    let tmp = tempfile::tempdir().unwrap();
    let bad = copy_of(&set, tmp.path());
    let rel = first(&bad, "crates", ".crate");
    replace(&bad.join(&rel), b"not a crate");
    let foreign = tmp.path().join("foreign-cargo");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("credentials.toml"), "").unwrap();
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    fs::write(out_dir.join("keep"), "earlier build\n").unwrap();
    let set_s = set.to_str().unwrap();
    let bad_s = bad.to_str().unwrap();
    let foreign_s = foreign.to_str().unwrap();
    let missing = tmp.path().join("nope");
    let missing_s = missing.to_str().unwrap();
    // (what, arguments, extra environment, the reason expected last, whether
    // the network was cut before it)
    type Refusal<'a> = (&'a str, Vec<&'a str>, Envs<'a>, &'a str, bool);
    let cases: Vec<Refusal> = vec![
        (
            "a tampered set",
            vec!["--offline", bad_s],
            vec![],
            "is not MANIFEST's",
            true,
        ),
        (
            "a missing set",
            vec!["--offline", missing_s],
            vec![],
            "is not a directory",
            true,
        ),
        (
            "somebody's cargo home",
            vec!["--offline", set_s],
            vec![("CARGO_HOME", foreign_s)],
            "holds other things",
            true,
        ),
        (
            "the network not cut (the re-execution under unshare skipped)",
            vec!["--offline", set_s],
            vec![("AIRLOCK_OFFLINE_NETNS", "1")],
            "--offline: the network is not cut (interfaces: ",
            false,
        ),
        (
            "--offline with --check-offline",
            vec!["--offline", set_s, "--check-offline", set_s],
            vec![],
            "--offline and --check-offline exclude each other",
            false,
        ),
        (
            "--check-offline without a set",
            vec!["--check-offline", missing_s],
            vec![],
            "--check-offline: ",
            false,
        ),
    ];
    for (what, args, envs, reason, cut) in cases {
        let out = Command::new(repo_root().join("scripts/build-image"))
            .arg("--demo")
            .arg("--out")
            .arg(&out_dir)
            .args(&args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        let last = err.lines().last().unwrap_or("");
        assert!(last.starts_with("build-image: "), "{what}: {err}");
        assert!(
            last.contains(reason),
            "{what}: expected {reason:?} last in {err}"
        );
        assert_eq!(
            err.contains("offline: network cut (a network namespace with only lo"),
            cut,
            "{what}: {err}"
        );
        let names: Vec<_> = fs::read_dir(&out_dir).unwrap().collect();
        assert_eq!(names.len(), 1, "{what}: the output directory changed");
        assert_eq!(
            fs::read_to_string(out_dir.join("keep")).unwrap(),
            "earlier build\n"
        );
    }
    assert!(!missing.exists());
}
