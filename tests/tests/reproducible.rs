//! The parts of `scripts/build-image --check-reproducible` that need no
//! build (docs/image.md "Reproducibility"):
//! - `scripts/compare-builds` says identical only when every file is, names
//!   each file that differs or is missing, and keeps the second build;
//! - scripts/lib/env.sh's remapping flags name the cargo home and the target
//!   dir, never the checkout, and are the same however often env.sh is read;
//! - scripts/lib/repro.sh's `repro_checkout` copies a checkout with its
//!   uncommitted changes and leaves unchanged files alone on the next run;
//!   `repro_embedded_paths` finds and counts build paths in an initramfs.
//!
//! The whole check (two image builds) runs in scripts/test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use airlock_e2e::bundles::repo_root;

use airlock_e2e::output_text as text;

fn compare(a: &Path, b: &Path, files: &[&str]) -> (i32, String) {
    let out = Command::new(repo_root().join("scripts/compare-builds"))
        .arg(a)
        .arg(b)
        .args(files)
        .output()
        .unwrap();
    (out.status.code().unwrap(), text(&out))
}

/// Two output dirs with the same files.
fn twins(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (a, b) = (dir.join("a"), dir.join("b"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("airlock.efi"), b"MZ uki").unwrap();
        fs::write(d.join("airlock.img"), vec![0u8; 4096]).unwrap();
        fs::write(d.join("cmdline"), "console=ttyS0\n").unwrap();
        fs::write(
            d.join("initramfs.files"),
            "# type mode size sha256 path\nfile 0755 2 aa /bin/airlock-worker\nfile 0755 2 bb /init\n",
        )
        .unwrap();
    }
    (a, b)
}

#[test]
fn identical_builds_are_reported_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = twins(tmp.path());
    let (code, out) = compare(
        &a,
        &b,
        &["airlock.img", "airlock.efi", "cmdline", "sbom.cdx.json?"],
    );
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("REPRODUCIBLE: all 3 files identical (airlock.img sha256 "),
        "{out}"
    );
    // Side by side: one line per file with both hashes.
    let efi = out
        .lines()
        .find(|l| l.trim_start().starts_with("airlock.efi"))
        .unwrap();
    let words: Vec<&str> = efi.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{efi}");
    assert_eq!(words[1], words[2]);
    assert_eq!(words[3], "identical");
    assert!(out.contains("absent from both (optional)"), "{out}");
}

#[test]
fn every_difference_is_named_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = twins(tmp.path());
    // One byte changed, one binary of the initramfs changed, one file only
    // in the second build, one in neither.
    fs::write(b.join("airlock.efi"), b"MZ uk1").unwrap();
    fs::write(b.join("sbom.cdx.json"), "{}").unwrap();
    fs::write(
        b.join("initramfs.files"),
        "# type mode size sha256 path\nfile 0755 2 ab /bin/airlock-worker\nfile 0755 2 bb /init\n",
    )
    .unwrap();
    let (code, out) = compare(
        &a,
        &b,
        &[
            "airlock.img",
            "airlock.efi",
            "cmdline",
            "initramfs.files",
            "sbom.cdx.json?",
            "SHA256SUMS",
        ],
    );
    assert_eq!(code, 1, "{out}");
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with(
            "NOT REPRODUCIBLE: 4 of 6 files differ: airlock.efi initramfs.files sbom.cdx.json SHA256SUMS (second build kept in "
        ),
        "{out}"
    );
    assert!(
        last.contains(&format!(
            "diffoscope {}/airlock.efi {}/airlock.efi",
            a.display(),
            b.display()
        )),
        "{last}"
    );
    // Which binaries: the initramfs entries whose line differs.
    assert!(
        out.lines()
            .any(|l| l == "  initramfs entries that differ: /bin/airlock-worker"),
        "{out}"
    );
    for (file, verdict) in [
        ("airlock.img", "identical"),
        ("airlock.efi", "DIFFERS"),
        ("sbom.cdx.json", "DIFFERS"),
        ("SHA256SUMS", "MISSING from both"),
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(file))
            .unwrap();
        assert!(line.ends_with(verdict), "{file}: {line}");
    }
    // The second build is left for inspection.
    assert!(b.join("airlock.efi").exists());
    // Usage errors are not verdicts.
    let (code, _) = compare(&a, &tmp.path().join("nope"), &["cmdline"]);
    assert_eq!(code, 2);
}

/// `CARGO_TARGET_<triple>_RUSTFLAGS` as scripts read env.sh, from `cwd`.
fn rustflags(cwd: &Path, cargo_home: &str, target: &str, twice: bool) -> (String, String) {
    let env_sh = repo_root().join("scripts/lib/env.sh");
    let script = format!(
        ". '{0}'; {1} printf '%s\\n' \"$CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS\" \"$(airlock_rustflags)\"",
        env_sh.display(),
        if twice { format!(". '{}';", env_sh.display()) } else { String::new() }
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(cwd)
        .env("CARGO_HOME", cargo_home)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let exported = lines.next().unwrap().to_string();
    assert_eq!(
        lines.next().unwrap(),
        exported,
        "cargo_env would pass other flags"
    );
    (exported, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn remap_flags_name_cargo_home_and_target_dir_never_the_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let t = fs::canonicalize(tmp.path()).unwrap().display().to_string();
    let (flags, _) = rustflags(
        &repo_root(),
        &format!("{t}/home/.cargo"),
        &format!("{t}/target"),
        false,
    );
    assert_eq!(
        flags,
        // Shorter prefix first.
        format!(
            "--remap-path-prefix={t}/target=/target --remap-path-prefix={t}/home/.cargo=/cargo"
        )
    );
    let root = fs::canonicalize(repo_root()).unwrap();
    assert!(!flags.contains(&root.display().to_string()), "{flags}");
    // The same from another directory and when env.sh is read twice (a
    // script calling a script): one target dir always sees one value.
    assert_eq!(
        rustflags(
            tmp.path(),
            &format!("{t}/home/.cargo"),
            &format!("{t}/target"),
            true
        )
        .0,
        flags
    );
    // A target dir inside the cargo home: the longer prefix last (rustc
    // applies the last match), and a symlinked cargo home under both names.
    fs::create_dir_all(tmp.path().join("real")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
    let (flags, _) = rustflags(tmp.path(), "link", &format!("{t}/link/t"), false);
    assert_eq!(
        flags,
        format!(
            "--remap-path-prefix={t}/link=/cargo --remap-path-prefix={t}/real=/cargo \
             --remap-path-prefix={t}/link/t=/target --remap-path-prefix={t}/real/t=/target"
        )
    );
    // A blank cannot be passed through the environment: said, left out.
    let (flags, err) = rustflags(
        tmp.path(),
        &format!("{t}/my home"),
        &format!("{t}/target"),
        false,
    );
    assert_eq!(flags, format!("--remap-path-prefix={t}/target=/target"));
    assert!(err.contains("holds a blank"), "{err}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

fn repro_sh(call: &str) -> Output {
    let lib = repo_root().join("scripts/lib/repro.sh");
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("set -euo pipefail; . '{}'; {call}", lib.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{call}: {}", text(&out));
    out
}

/// Relative path -> content of every file under `dir` but .git.
fn files(dir: &Path) -> Vec<(String, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap() == ".git" {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.push((rel, fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn the_second_checkout_is_the_first_with_its_uncommitted_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (
        tmp.path().join("src"),
        tmp.path().join("elsewhere/checkout"),
    );
    fs::create_dir_all(src.join("d")).unwrap();
    git(&src, &["init", "-q"]);
    for (f, c) in [
        ("a", "a\n"),
        ("b", "b\n"),
        ("d/c", "c\n"),
        ("u", "unchanged\n"),
        (".gitignore", "/out/\n/build/\n"),
    ] {
        fs::write(src.join(f), c).unwrap();
    }
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "one"]);
    // Uncommitted: modified, deleted, renamed (staged), untracked; ignored
    // files and the first checkout's build/ stay behind.
    fs::write(src.join("a"), "a changed\n").unwrap();
    fs::remove_file(src.join("b")).unwrap();
    git(&src, &["mv", "d/c", "d/c2"]);
    fs::write(src.join("d/new"), "new\n").unwrap();
    fs::create_dir_all(src.join("out")).unwrap();
    fs::write(src.join("out/airlock.img"), "ignored\n").unwrap();
    fs::create_dir_all(src.join("build")).unwrap();
    fs::write(src.join("build/x"), "src build\n").unwrap();
    let call = format!("repro_checkout '{}' '{}'", src.display(), dest.display());
    repro_sh(&call);
    let want: Vec<(String, String)> = files(&src)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("out/") && !p.starts_with("build/"))
        .collect();
    assert_eq!(files(&dest), want);

    // Next run: the second checkout's own build/ stays, stale files go,
    // unchanged files are not rewritten (cargo would rebuild them).
    fs::create_dir_all(dest.join("build")).unwrap();
    fs::write(dest.join("build/patched"), "kept\n").unwrap();
    fs::write(dest.join("stale"), "stale\n").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    for f in ["u", "d/new"] {
        fs::File::options()
            .write(true)
            .open(dest.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "two"]);
    fs::write(src.join("d/new"), "newer\n").unwrap();
    repro_sh(&call);
    assert_eq!(
        fs::read_to_string(dest.join("build/patched")).unwrap(),
        "kept\n"
    );
    assert!(!dest.join("stale").exists());
    assert_eq!(fs::read_to_string(dest.join("d/new")).unwrap(), "newer\n");
    assert_eq!(
        fs::metadata(dest.join("u")).unwrap().modified().unwrap(),
        old,
        "rewritten"
    );
    assert_ne!(
        fs::metadata(dest.join("d/new"))
            .unwrap()
            .modified()
            .unwrap(),
        old
    );
}

#[test]
fn embedded_build_paths_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let cpio = tmp.path().join("initramfs.cpio");
    let mut data = b"\x7fELF...".to_vec();
    for _ in 0..2 {
        data.extend_from_slice(b"/home/builder/.cargo/registry/src/x-1.0/src/lib.rs\0");
    }
    data.extend_from_slice(b"/cargo/registry/src/y-1.0/src/lib.rs\0");
    fs::write(&cpio, data).unwrap();
    let ok = Command::new("zstd")
        .args(["-q", "-f"])
        .arg(&cpio)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = repro_sh(&format!(
        "repro_embedded_paths '{}.zst' /home/builder/.cargo /work/checkout",
        cpio.display()
    ));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "2× /home/builder/.cargo\n"
    );
}
