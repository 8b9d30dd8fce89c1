//! Who is at the console, end to end on the real image: a fresh disk is
//! provisioned at the serial console, the officer exports the public keys
//! to a stick and the host's stock `gpg --import` takes the document key,
//! each role is refused another role's command with the role named, five
//! wrong passphrases lock an account and the lock holds after a reboot,
//! an idle session is logged out, and the auditor's export verifies with
//! the host CLI and renders as a report in headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::session::{self, Account};
use airlock_e2e::stick::{make_vfat_stick, read_vfat_stick};
use airlock_e2e::{timeout, Artifacts, Boot, DiskCopy, Must, Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ALICE: (&str, &str, &str) = ("alice", "operator", "alice reads documents daily 7");
const BOB: (&str, &str, &str) = ("bob", "officer", "bob imports the models 2026");
const CAROL: (&str, &str, &str) = ("carol", "auditor", "carol checks everything twice");
/// The image's 600 s idle logout, tightened for this test on the kernel
/// command line (only a stricter value is accepted).
const IDLE_S: u64 = 40;

fn config(disk: &Path) -> VmConfig {
    let mut c = VmConfig::direct("identity", &Artifacts::locate())
        .must()
        .with_writable_disk(disk);
    if let Boot::Direct { append, .. } = &mut c.boot {
        append.push_str(&format!(" airlock.policy.idle_logout_s={IDLE_S}"));
    }
    c
}

fn send(vm: &mut Vm, line: &str) {
    session::send(vm, line).must();
}

fn answer(vm: &mut Vm, question: &str, line: &str) {
    session::answer(vm, question, line).must();
}

fn login(vm: &mut Vm, who: Account<'_>) {
    session::login(vm, who).must();
}

fn logout(vm: &mut Vm, name: &str) {
    let out = session::logout(vm).must();
    assert!(out.contains(&format!("{name} logged out")), "{out}");
}

/// `YYYY-MM-DDTHH:MM:SSZ` of UNIX seconds.
fn utc_iso(secs: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .must();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host CLI built with this workspace (target/<triple>/release/airlock).
fn airlock_cli() -> PathBuf {
    let exe = std::env::current_exe().must();
    let release = exe.parent().and_then(Path::parent).must_some();
    let cli = release.join("airlock");
    assert!(cli.exists(), "host CLI not built: {}", cli.display());
    cli
}

trait MustSome<T> {
    fn must_some(self) -> T;
}
impl<T> MustSome<T> for Option<T> {
    fn must_some(self) -> T {
        self.unwrap()
    }
}

/// Plugs a fresh FAT stick, runs `cmd` logged in as `who`, unplugs it and
/// returns its files under the one new directory starting with `prefix`.
fn stick_export(
    vm: &mut Vm,
    who: Account<'_>,
    cmd: &str,
    prefix: &str,
    host_dir: &Path,
) -> PathBuf {
    let img = vm.work_file(&format!("{prefix}.img"));
    make_vfat_stick(&img, "EXPORT", 32, &[]).must();
    let stick = vm.plug_stick(&img).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    login(vm, who);
    let out = vm.command(cmd).must();
    assert!(out.contains("written to"), "{cmd}: {out}");
    assert!(
        out.contains("(stick can be pulled)") || out.contains("verify it"),
        "{out}"
    );
    logout(vm, who.0);
    vm.unplug_stick(&stick).must();
    vm.wait_for("[usb] stick removed", timeout(60)).must();
    let contents = read_vfat_stick(&img).must();
    assert!(
        !contents.dirs.iter().any(|d| d.ends_with(".partial")),
        "a partial directory was left: {:?}",
        contents.dirs
    );
    let _ = std::fs::remove_dir_all(host_dir);
    std::fs::create_dir_all(host_dir).must();
    let mut top: Option<String> = None;
    for (path, bytes) in &contents.files {
        let (dir, rest) = path.split_once('/').must_some();
        assert!(
            dir.starts_with(prefix),
            "unexpected file {path} on the stick"
        );
        top = Some(dir.to_owned());
        let to = host_dir.join(rest);
        std::fs::create_dir_all(to.parent().must_some()).must();
        std::fs::write(&to, bytes).must();
    }
    assert!(top.is_some(), "nothing written under {prefix}*");
    host_dir.to_path_buf()
}

#[test]
fn provision_roles_lockout_idle_and_audit_export() {
    let disk = DiskCopy::new(&Artifacts::locate().disk_image().must(), "identity").must();
    let cfg = config(disk.path());
    let mut vm = Vm::boot(&cfg, timeout(120)).must();
    let banner = vm.console().transcript();
    assert!(
        banner.contains("not provisioned: type 'provision'"),
        "{banner}"
    );

    // Before provisioning only provision, status, help and poweroff.
    let out = vm.command("audit show").must();
    assert!(
        out.contains("not provisioned: only provision, status, help and poweroff"),
        "{out}"
    );

    // Provisioning at the console.
    session::provision(&mut vm, &[ALICE, BOB, CAROL]).must();
    let transcript = vm.console().transcript();
    for (_, _, pass) in [ALICE, BOB, CAROL] {
        assert!(!transcript.contains(pass), "a passphrase was echoed");
    }

    // The officer exports the public keys; stock gpg imports the document key.
    let work = vm.work_dir().to_path_buf();
    let keys = stick_export(
        &mut vm,
        BOB,
        "keys export",
        "airlock-keys-",
        &work.join("keys"),
    );
    let gnupg = work.join("gnupg");
    std::fs::create_dir_all(&gnupg).must();
    let imp = Command::new("gpg")
        .arg("--homedir")
        .arg(&gnupg)
        .args(["--batch", "--import"])
        .arg(keys.join("document-key.asc"))
        .output()
        .must();
    let gpg_says = String::from_utf8_lossy(&imp.stderr).to_string();
    assert!(
        imp.status.success(),
        "gpg --import refused the key: {gpg_says}"
    );
    assert!(gpg_says.contains("imported: 1"), "{gpg_says}");
    let fprs = std::fs::read_to_string(keys.join("FINGERPRINTS.txt")).must();
    assert!(fprs.contains("active document key (ed25519)"), "{fprs}");
    let audit_pub = keys.join("audit.pub");

    // The officer sets the clock (2 minutes ahead): system clock and RTC.
    login(&mut vm, BOB);
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .must()
        .as_secs()
        + 120;
    let out = vm.command(&format!("clock set {}", utc_iso(ahead))).must();
    assert!(out.contains("clock set to"), "{out}");
    assert!(
        !out.contains("was not written"),
        "the RTC was not written: {out}"
    );
    logout(&mut vm, BOB.0);

    // Each role is refused another role's command, with the role named.
    let refusals = [
        (
            ALICE,
            "audit show",
            "'audit show' needs the auditor role; you are logged in as alice (operator)",
        ),
        (
            BOB,
            "audit export",
            "'audit export' needs the auditor role; you are logged in as bob (officer)",
        ),
        (
            CAROL,
            "keys rotate",
            "'keys rotate' needs the officer role; you are logged in as carol (auditor)",
        ),
    ];
    for (who, cmd, want) in refusals {
        login(&mut vm, who);
        let out = vm.command(cmd).must();
        assert!(out.contains(want), "{cmd} as {}: {out}", who.0);
        logout(&mut vm, who.0);
    }

    // Five wrong passphrases lock alice.
    for i in 1..=5 {
        send(&mut vm, "login alice");
        answer(
            &mut vm,
            "Passphrase for alice: ",
            &format!("not alice's passphrase, try {i}"),
        );
        let want = if i < 5 {
            "login refused: wrong name or passphrase (wait"
        } else {
            "alice is now locked for 10 minutes"
        };
        vm.wait_for(want, timeout(120)).must();
    }
    vm.wait_for("airlock> ", timeout(60)).must();

    // An idle session is logged out.
    login(&mut vm, CAROL);
    vm.wait_for(
        "carol logged out after 0 minutes without input",
        Duration::from_secs(IDLE_S) + timeout(90),
    )
    .must();

    // The auditor's export verifies on the host and renders as a report.
    let export = stick_export(
        &mut vm,
        CAROL,
        "audit export",
        "airlock-audit-",
        &work.join("export"),
    );
    let cli = airlock_cli();
    let v = Command::new(&cli)
        .args(["audit", "verify"])
        .arg(&export)
        .arg("--key")
        .arg(&audit_pub)
        .output()
        .must();
    let verdict =
        String::from_utf8_lossy(&v.stdout).to_string() + &String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success(), "audit verify failed: {verdict}");
    for want in ["alice", "bob", "carol"] {
        assert!(verdict.contains(want), "summary lacks {want}: {verdict}");
    }
    let report = work.join("report.html");
    let r = Command::new(&cli)
        .args(["audit", "report"])
        .arg(&export)
        .arg("--key")
        .arg(&audit_pub)
        .arg("-o")
        .arg(&report)
        .output()
        .must();
    assert!(
        r.status.success(),
        "audit report: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let dom = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!(
            "--user-data-dir={}",
            work.join("chromium").display()
        ))
        .arg(format!("file://{}", report.display()))
        .output()
        .must();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for want in [
        "lockout",
        "wrong-passphrase",
        "role-auditor-required",
        "key-export",
        "alice",
    ] {
        assert!(dom.contains(want), "the rendered report lacks {want}");
    }

    // The lock survives a reboot.
    send(&mut vm, "reboot");
    vm.wait_exit(timeout(120)).must();
    drop(vm);
    let mut vm = Vm::boot(&cfg, timeout(120)).must();
    send(&mut vm, "login alice");
    answer(&mut vm, "Passphrase for alice: ", ALICE.2);
    vm.wait_for("login refused: alice is locked until", timeout(120))
        .must();
    send(&mut vm, "poweroff");
    vm.wait_exit(timeout(120)).must();
}
