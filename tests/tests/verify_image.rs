//! `scripts/verify-image` (docs/security-team.md, "Verifying an image"): a
//! demo image built here from a clean checkout of HEAD is VERIFIED; the same
//! image with one byte of the UKI's `.osrel` changed on the ESP is NOT
//! VERIFIED, naming the artefacts that differ; bad input is refused with its
//! one-line reason, exit status 2, and nothing left behind. No QEMU.
//!
//! The image is built once (`scripts/build-image --demo --skip-cargo`, in a
//! detached worktree of HEAD, so uncommitted changes of this checkout do not
//! make BUILD_ID lie); each verification rebuilds it once more.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The byte offset of the ESP in the image (image/partitions.sh: 1 MiB).
const ESP: &str = "@@1048576";
const UKI: &str = "::/EFI/Linux/airlock-a+3.efi";

/// The repository of this test's source.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn must(cmd: &mut Command) -> String {
    let r = run(cmd);
    assert_eq!(r.code, Some(0), "{cmd:?}:\n{}{}", r.stdout, r.stderr);
    r.stdout
}

/// A detached worktree of HEAD, removed on drop.
struct Worktree(PathBuf);

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = Command::new("git")
            .arg("-C")
            .arg(root())
            .args(["worktree", "remove", "--force"])
            .arg(&self.0)
            .output();
        let _ = Command::new("git")
            .arg("-C")
            .arg(root())
            .args(["worktree", "prune"])
            .output();
    }
}

/// verify-image of this checkout on `image`, temporary files under `tmp`.
fn verify(image: &Path, tmp: &Path, cache: Option<&Path>) -> Run {
    let mut cmd = Command::new(root().join("scripts/verify-image"));
    cmd.arg("--skip-cargo").arg(image).env("TMPDIR", tmp);
    if let Some(c) = cache {
        cmd.env("AIRLOCK_CACHE", c);
    }
    run(&mut cmd)
}

fn copy_disk(from: &Path, to: &Path) {
    must(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
}

fn esp(image: &Path) -> String {
    format!("{}{ESP}", image.display())
}

/// A copy of `image` at `to` whose UKI's `.osrel` has `from` replaced by
/// `with` (same length), written back onto the ESP.
fn with_osrel(image: &Path, to: &Path, from: &[u8], with: &[u8]) {
    assert_eq!(from.len(), with.len());
    copy_disk(image, to);
    let uki = to.with_extension("efi");
    let _ = fs::remove_file(&uki);
    must(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-n", "-i", &esp(to), UKI])
            .arg(&uki),
    );
    let mut pe = fs::read(&uki).unwrap();
    let (at, size) = airlock_e2e::disk::pe_section(&pe, b".osrel");
    let i = pe[at..at + size]
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{} not in .osrel", String::from_utf8_lossy(from)));
    pe[at + i..at + i + with.len()].copy_from_slice(with);
    fs::write(&uki, &pe).unwrap();
    must(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i", &esp(to)])
            .arg(&uki)
            .arg(UKI),
    );
    fs::remove_file(&uki).unwrap();
}

/// Table rows of a verify-image report: (artefact, result).
fn rows(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|l| l.ends_with(" same") || l.ends_with(" DIFFERENT"))
        .map(|l| {
            let words: Vec<_> = l.split_whitespace().collect();
            let n = words.len();
            assert!(n >= 4, "{l}");
            (words[..n - 3].join(" "), words[n - 1].to_string())
        })
        .collect()
}

#[test]
fn verifies_a_rebuilt_image_and_refuses_others() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let head =
        must(
            Command::new("git")
                .arg("-C")
                .arg(root())
                .args(["rev-parse", "--short=12", "HEAD"]),
        )
        .trim()
        .to_string();

    // The image, from a clean checkout of HEAD. Its files get an old mtime:
    // scripts/demo-keys rebuilds the CLI when a source is newer than it.
    let src = tmp.join("src");
    must(
        Command::new("git")
            .arg("-C")
            .arg(root())
            .args(["worktree", "add", "-q", "--detach"])
            .arg(&src)
            .arg("HEAD"),
    );
    let _wt = Worktree(src.clone());
    must(
        Command::new("sh")
            .args(["-c", "git ls-files -z | xargs -0 touch -h -d @0"])
            .current_dir(&src),
    );
    let out = tmp.join("out");
    must(
        Command::new(src.join("scripts/build-image"))
            .args(["--demo", "--skip-cargo", "--out"])
            .arg(&out),
    );
    let image = out.join("airlock.img");
    eprintln!("build-image: {:.0?}", t0.elapsed());
    let scratch = tmp.join("scratch");
    fs::create_dir_all(&scratch).unwrap();

    // VERIFIED: every artefact the same, the whole disk included.
    let t = Instant::now();
    let r = verify(&image, &scratch, None);
    eprintln!("verify-image (VERIFIED): {:.0?}", t.elapsed());
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let want = format!(
        "verify-image: VERIFIED: {} was built from commit {head} (9 artefacts identical)",
        image.display()
    );
    assert_eq!(r.stdout.lines().last(), Some(want.as_str()), "{}", r.stdout);
    let table = rows(&r.stdout);
    assert_eq!(table.len(), 9, "{}", r.stdout);
    assert!(table.iter().all(|(_, res)| res == "same"), "{}", r.stdout);
    assert!(
        table.iter().any(|(n, _)| n == "airlock.img (whole disk)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("DEMO image: rebuilt with this machine's"));

    // One byte of .osrel changed on the ESP (not a field verify-image
    // reads): the UKI, its .osrel and the disk differ, nothing else.
    let bad = tmp.join("tampered.img");
    with_osrel(
        &image,
        &bad,
        b"PRETTY_NAME=\"Airlock",
        b"PRETTY_NAME=\"Airlocc",
    );
    let t = Instant::now();
    let r = verify(&bad, &scratch, None);
    eprintln!("verify-image (NOT VERIFIED): {:.0?}", t.elapsed());
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let last = r.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "verify-image: NOT VERIFIED: 3 of 9 artefacts differ (airlock.efi, .osrel, airlock.img) from a rebuild of commit "
        ),
        "{}",
        r.stdout
    );
    for (name, res) in rows(&r.stdout) {
        let differs =
            name.starts_with("airlock.efi") || name == ".osrel" || name.starts_with("airlock.img");
        assert_eq!(res == "DIFFERENT", differs, "{name}: {res}\n{}", r.stdout);
    }
    fs::remove_file(&bad).unwrap();

    // Refusals: one line, exit status 2, no rebuild, nothing left behind.
    let dir = tmp.join("a-directory");
    fs::create_dir_all(&dir).unwrap();
    let text = tmp.join("notes.txt");
    fs::write(&text, "not a disk\n").unwrap();
    let cut = tmp.join("cut.img");
    must(Command::new("sh").arg("-c").arg(format!(
        "head -c 4194304 '{}' > '{}'",
        image.display(),
        cut.display()
    )));
    let no_esp = tmp.join("no-esp.img");
    copy_disk(&image, &no_esp);
    must(Command::new("sgdisk").args(["-t", "1:8300"]).arg(&no_esp));
    let no_uki = tmp.join("no-uki.img");
    copy_disk(&image, &no_uki);
    must(
        Command::new("mdel")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &esp(&no_uki), UKI]),
    );
    let no_id = tmp.join("no-build-id.img");
    with_osrel(&image, &no_id, b"BUILD_ID=", b"XUILD_ID=");
    let unknown = tmp.join("unknown-commit.img");
    let id = format!("BUILD_ID={head}");
    with_osrel(&image, &unknown, id.as_bytes(), b"BUILD_ID=000000000000");
    let escape = tmp.join("escape.img");
    with_osrel(&image, &escape, b"VARIANT_ID=demo", b"VARIANT_ID=\x1b[2J");
    let empty_cache = tmp.join("other-machine");
    fs::create_dir_all(&empty_cache).unwrap();
    let missing = tmp.join("missing.img");

    let p = |f: &Path| f.display().to_string();
    let cases: Vec<(&str, &Path, Option<&Path>, String)> = vec![
        ("missing", &missing, None, format!("{} does not exist", p(&missing))),
        ("directory", &dir, None, format!("{} is not a regular file", p(&dir))),
        (
            "not an image",
            &text,
            None,
            format!("{} is not a disk image (no partition table)", p(&text)),
        ),
        (
            "truncated",
            &cut,
            None,
            format!(
                "{} is a damaged or truncated GPT disk image (a protective MBR, but no readable GPT)",
                p(&cut)
            ),
        ),
        (
            "no ESP",
            &no_esp,
            None,
            format!("{} has no EFI system partition", p(&no_esp)),
        ),
        (
            "no UKI",
            &no_uki,
            None,
            format!(
                "{}: no UKI of slot a (EFI/Linux/airlock-a[+N[-M]].efi) on the EFI system partition",
                p(&no_uki)
            ),
        ),
        (
            "no BUILD_ID",
            &no_id,
            None,
            format!(
                "{}: the UKI's .osrel has no BUILD_ID (the commit it was built from)",
                p(&no_id)
            ),
        ),
        (
            "unknown commit",
            &unknown,
            None,
            "commit 000000000000 is not in this repository: fetch it first".to_string(),
        ),
        (
            "control characters from the image",
            &escape,
            None,
            format!(
                "{}: VARIANT_ID '[2J' is neither demo nor production",
                p(&escape)
            ),
        ),
        (
            "demo image of another machine",
            &image,
            Some(&empty_cache),
            format!(
                "{} is a DEMO image whose throwaway keys are not this machine's ({}/demo-keys/trust.json): a demo image can only be verified on the machine that built it",
                p(&image),
                p(&empty_cache)
            ),
        ),
    ];
    for (case, file, cache, reason) in cases {
        let r = verify(file, &scratch, cache);
        let want = format!("verify-image: {reason}");
        assert_eq!(r.code, Some(2), "{case}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stderr.trim_end(), want, "{case}");
        assert!(r.stdout.is_empty(), "{case}: {}", r.stdout);
        let left: Vec<_> = fs::read_dir(&scratch).unwrap().collect();
        assert!(left.is_empty(), "{case}: left behind {left:?}");
    }
    let worktrees = must(
        Command::new("git")
            .arg("-C")
            .arg(root())
            .args(["worktree", "list"]),
    );
    assert!(
        !worktrees.contains("verify-image."),
        "a rebuild worktree was left: {worktrees}"
    );
    eprintln!("total: {:.0?}", t0.elapsed());
}
