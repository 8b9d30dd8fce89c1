//! A/B system updates end to end, through OVMF and systemd-boot with its
//! boot counting, on a provisioned copy of the real image. Second image
//! versions are built by the test from this tree (`scripts/build-image
//! --uki-only --system-version N`, demo keys), packed with `airlock bundle
//! pack --kind system --from-build` and signed with the DEMO system key.
//! Each QEMU run is one boot (`-no-reboot`): a restart ends QEMU and the
//! test starts the next boot on the same disk.
//!
//! - `update_is_tried_blessed_and_committed`: the flashed system passes its
//!   health check and is committed; QEMU is killed while a new slot is being
//!   written (the old slot boots, no half slot is left); the stick is pulled
//!   in the middle of an import (nothing changes); another variant is
//!   refused; version 2 is installed into slot B, tried, blessed and
//!   committed; a lower version and the same version with another manifest
//!   are refused.
//! - `failed_updates_fall_back`: a system that panics at boot uses up its
//!   three tries and systemd-boot boots the old one, which says so; a system
//!   whose health check fails is marked bad at once and the PC restarts into
//!   the old one, which shows the reason; the committed version stays 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::bundles::{self, Packer, Signer};
use airlock_e2e::figures::{publish, Figure};
use airlock_e2e::session::{self, AUDITOR, OFFICER};
use airlock_e2e::{timeout, Artifacts, Must, Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Prints a measured duration (never asserted).
fn figure(name: &'static str, since: Instant, note: &str) {
    let f = Figure {
        name,
        value: format!("{:.1} s", since.elapsed().as_secs_f64()),
        note: note.into(),
    };
    publish(&[f], None).must();
}

/// The officer's prompt.
const PROMPT: &str = "airlock otto@officer> ";
/// Disk boot to console ready under TCG, and more for the health check.
const BOOT_SECS: u64 = 600;

/// `scripts/build-image --demo --skip-cargo --uki-only --system-version V
/// [--test-fault F]` (or the production variant with the demo keys) into
/// `work/NAME`.
fn build(work: &Path, name: &str, version: u64, extra: &[&str]) -> PathBuf {
    let out = work.join(name);
    let mut cmd = Command::new(bundles::repo_root().join("scripts/build-image"));
    if !extra.contains(&"--trust") {
        cmd.arg("--demo");
    }
    cmd.args(["--skip-cargo", "--uki-only", "--system-version"])
        .arg(version.to_string())
        .args(extra)
        .arg("--out")
        .arg(&out);
    bundles::run(&mut cmd).must();
    out
}

/// Packs the build in `dir` as a system bundle on a stick folder `stick`,
/// signed by the DEMO system key; renamed to `as_name` (the directory name
/// is free, the manifest's name is `airlock`).
fn pack(stick: &Path, dir: &Path, version: u64, created: &str, as_name: &str) -> PathBuf {
    let tmp = stick.join(format!(".pack-{as_name}"));
    let p = Packer::new(&tmp).must();
    let b = p
        .pack(
            "system",
            "airlock",
            version,
            &["--from-build", dir.to_str().unwrap(), "--created", created],
            &[],
            Signer::System,
        )
        .must();
    let dest = stick.join(as_name);
    std::fs::rename(&b, &dest).must();
    std::fs::remove_dir_all(&tmp).must();
    dest
}

/// A FAT stick image holding `bundles`.
fn stick(work: &Path, name: &str, bundles_: &[PathBuf]) -> PathBuf {
    let img = work.join(format!("{name}.img"));
    let mut cmd = Command::new(bundles::repo_root().join("scripts/make-stick"));
    cmd.args(["--superfloppy", "--label", "SYSTEM"]).arg(&img);
    bundles::run(cmd.args(bundles_)).must();
    img
}

fn disk_config(name: &str, disk: &Path) -> VmConfig {
    VmConfig::disk(name, &Artifacts::locate())
        .must()
        .with_writable_disk(disk)
}

/// Boots the disk to console ready; asserts the slot the banner names.
fn boot(name: &str, disk: &Path, slot: &str) -> Vm {
    let mut vm = Vm::boot(&disk_config(name, disk), timeout(BOOT_SECS)).must();
    let t = vm.console().transcript();
    assert!(
        t.contains(&format!("(slot {slot})")),
        "{name}: expected slot {slot}:\n{t}"
    );
    vm
}

/// Chooses the bundle whose listing line contains `needle` and confirms.
fn import(vm: &mut Vm, needle: &str) -> String {
    let mark = vm.console().mark();
    session::send(vm, "import").unwrap();
    vm.wait_for("Import which? (number, Enter to cancel): ", timeout(300))
        .must();
    let list = vm.console().text_since(mark).must();
    let n = list
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.trim().split(')').next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no bundle line with {needle:?} in:\n{list}"));
    session::send(vm, &n.to_string()).unwrap();
    list
}

/// Plugs `img`, imports the bundle whose line has `needle` into slot b;
/// returns how long the import took after the confirmation.
fn install(vm: &mut Vm, img: &Path, needle: &str) -> std::time::Duration {
    vm.plug_stick(img).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    import(vm, needle);
    session::answer(vm, "Type yes: ", "yes").must();
    let t = Instant::now();
    vm.wait_for("installed system version 2 into slot b", timeout(600))
        .must();
    let took = t.elapsed();
    vm.wait_for(PROMPT, timeout(30)).must();
    took
}

/// `system reboot-to-new`: this QEMU ends (`-no-reboot`).
fn reboot_to_new(mut vm: Vm) {
    session::send(&mut vm, "system reboot-to-new").must();
    vm.wait_exit(timeout(120)).must();
}

/// `system`, which must show each of `wants`; its text.
fn slots(vm: &mut Vm, wants: &[&str]) -> String {
    let s = system(vm);
    assert_has(&s, wants);
    s
}

fn system(vm: &mut Vm) -> String {
    vm.command("system").must()
}

fn assert_has(text: &str, wants: &[&str]) {
    for w in wants {
        assert!(text.contains(w), "{w:?} not in:\n{text}");
    }
}

#[test]
fn update_is_tried_blessed_and_committed() {
    let disk = session::provisioned_disk("system-update").must();
    let work = disk.path().with_extension("work");
    std::fs::create_dir_all(&work).must();
    let v2 = build(&work, "v2", 2, &[]);
    let keys =
        bundles::run(Command::new(bundles::repo_root().join("scripts/demo-keys")).arg("trust"))
            .must();
    let recips = bundles::run(
        Command::new(bundles::repo_root().join("scripts/demo-keys")).arg("recipients"),
    )
    .must();
    let prod = build(
        &work,
        "prod2",
        2,
        &["--trust", keys.trim(), "--recipients", recips.trim()],
    );
    let v1 = Artifacts::locate().dir;
    let folder = work.join("stick");
    std::fs::create_dir_all(&folder).must();
    let good = pack(&folder, &v2, 2, "2026-12-01T00:00:00Z", "airlock_2.airlock");
    let other = pack(
        &folder,
        &prod,
        2,
        "2026-12-01T00:00:00Z",
        "production_2.airlock",
    );
    let stick1 = stick(&work, "stick1", &[good.clone(), other]);
    let low = pack(&folder, &v1, 1, "2026-12-01T00:00:00Z", "airlock_1.airlock");
    let again = pack(&folder, &v2, 2, "2026-12-02T00:00:00Z", "again_2.airlock");
    let stick2 = stick(&work, "stick2", &[low, again]);

    // Boot 1: the flashed system is on trial, passes, is committed.
    let mut vm = boot("system-1", disk.path(), "a");
    vm.wait_for(
        "version 1 (slot a) passed its health check",
        timeout(BOOT_SECS),
    )
    .must();
    session::login(&mut vm, OFFICER).must();
    slots(
        &mut vm,
        &[
            "slot a: version 1, good, running",
            "slot b: empty",
            "committed version (anti-rollback floor): 1",
            "next boot: slot a (version 1)",
        ],
    );
    vm.plug_stick(&stick1).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    let list = import(&mut vm, "production_2.airlock");
    assert!(
        list.contains(
            "REFUSED: built for the 'production' variant; this appliance runs the 'demo' variant"
        ),
        "{list}"
    );
    vm.wait_for("import refused:", timeout(60)).must();
    vm.wait_for(PROMPT, timeout(30)).must();
    // Power cut while the new slot is written.
    let list = import(&mut vm, "airlock_2.airlock: system airlock version 2");
    assert!(list.contains("signed by demo-system"), "{list}");
    session::answer(&mut vm, "Type yes: ", "yes").must();
    vm.wait_for("writing the new system into slot b", timeout(300))
        .must();
    drop(vm);

    // Boot 2: the old slot boots; no half slot; nothing committed.
    let mut vm = boot("system-2", disk.path(), "a");
    session::login(&mut vm, OFFICER).must();
    let s = slots(
        &mut vm,
        &[
            "slot a: version 1, good, running",
            "committed version (anti-rollback floor): 1",
            "next boot: slot a (version 1)",
        ],
    );
    assert!(
        s.contains("slot b: empty") || s.contains("slot b: version 2, pending (3 tries left)"),
        "a half-written slot b:\n{s}"
    );
    // The stick pulled in the middle of the copy (reads throttled to
    // 1 MB/s: the 25 MiB bundle takes about 25 s).
    let slow = vm.plug_slow_stick(&stick1, 1_000_000).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    import(&mut vm, "airlock_2.airlock: system airlock version 2");
    session::answer(&mut vm, "Type yes: ", "yes").must();
    vm.wait_for(" MB/s ", timeout(120)).must();
    std::thread::sleep(std::time::Duration::from_secs(3));
    vm.unplug_stick(&slow).must();
    vm.wait_for(
        "the running system and its boot slot are unchanged",
        timeout(300),
    )
    .must();
    vm.wait_for(PROMPT, timeout(30)).must();
    let after = system(&mut vm);
    assert_eq!(
        after
            .lines()
            .filter(|l| l.starts_with("slot ") || l.starts_with("committed"))
            .collect::<Vec<_>>(),
        s.lines()
            .filter(|l| l.starts_with("slot ") || l.starts_with("committed"))
            .collect::<Vec<_>>(),
        "a pulled stick changed the slots"
    );
    // The real install.
    let took = install(
        &mut vm,
        &stick1,
        "airlock_2.airlock: system airlock version 2",
    );
    publish(
        &[Figure {
            name: "system update: import of the 25 MiB bundle into slot b",
            value: format!("{:.1} s", took.as_secs_f64()),
            note: "stick to store (verified), store to ESP (verified), TCG".into(),
        }],
        None,
    )
    .must();
    slots(
        &mut vm,
        &[
            "slot b: version 2, pending (3 tries left)",
            "committed version (anti-rollback floor): 1",
            "next boot: slot b (version 2), a new system on trial",
        ],
    );
    reboot_to_new(vm);

    // Boot 3: version 2 from slot B, tried, blessed, committed.
    let mut vm = boot("system-3", disk.path(), "b");
    vm.wait_for("version 2 (slot b) is on trial", timeout(BOOT_SECS))
        .must();
    let t = Instant::now();
    vm.wait_for(
        "version 2 (slot b) passed its health check",
        timeout(BOOT_SECS),
    )
    .must();
    figure(
        "system update: health check of the new system",
        t,
        "lockdown, network, probe suite, worker on the built-in model, audit; TCG",
    );
    session::login(&mut vm, OFFICER).must();
    slots(
        &mut vm,
        &[
            "slot a: version 1, good",
            "slot b: version 2, good, running",
            "committed version (anti-rollback floor): 2",
            "next boot: slot b (version 2)",
        ],
    );
    // Lower, and the same version with another manifest: refused.
    vm.plug_stick(&stick2).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    let list = import(&mut vm, "airlock_1.airlock");
    vm.wait_for("import refused:", timeout(60)).must();
    vm.wait_for(PROMPT, timeout(30)).must();
    let lines: Vec<&str> = list.lines().filter(|l| l.contains("REFUSED")).collect();
    assert_eq!(lines.len(), 2, "both refused:\n{list}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("airlock_1.airlock") || l.contains("version 1")),
        "{list}"
    );
    session::logout(&mut vm).must();
    session::login(&mut vm, AUDITOR).must();
    let log = vm.command("audit show 60").must();
    for want in ["system-commit", "system-import", "bundle-refused"] {
        assert!(log.contains(want), "audit show lacks {want}:\n{log}");
    }
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn failed_updates_fall_back() {
    let disk = session::provisioned_disk("system-fallback").must();
    let work = disk.path().with_extension("work");
    std::fs::create_dir_all(&work).must();
    let panics = build(&work, "panic2", 2, &["--test-fault", "panic"]);
    let unhealthy = build(&work, "health2", 2, &["--test-fault", "health"]);
    let folder = work.join("stick");
    std::fs::create_dir_all(&folder).must();
    let b1 = pack(
        &folder,
        &panics,
        2,
        "2026-12-01T00:00:00Z",
        "panics_2.airlock",
    );
    let b2 = pack(
        &folder,
        &unhealthy,
        2,
        "2026-12-02T00:00:00Z",
        "unhealthy_2.airlock",
    );
    let stick1 = stick(&work, "stick1", &[b1, b2]);

    let mut vm = boot("fallback-1", disk.path(), "a");
    vm.wait_for(
        "version 1 (slot a) passed its health check",
        timeout(BOOT_SECS),
    )
    .must();
    session::login(&mut vm, OFFICER).must();
    install(&mut vm, &stick1, "panics_2.airlock");
    reboot_to_new(vm);

    // Three tries of a system whose PID 1 dies at boot.
    let t = Instant::now();
    for i in 1..=3 {
        let mut vm = Vm::start(&disk_config(&format!("fallback-panic-{i}"), disk.path())).must();
        vm.wait_exit(timeout(BOOT_SECS)).must();
        let t = vm.console().transcript();
        assert!(
            t.contains("airlock.test.fault=panic") || t.contains("Attempted to kill init"),
            "try {i} did not die at boot:\n{t}"
        );
    }

    // systemd-boot falls back; the old system says what happened.
    let mut vm = boot("fallback-2", disk.path(), "a");
    vm.wait_for(
        "the update to version 2 in slot b failed after 3 tries",
        timeout(BOOT_SECS),
    )
    .must();
    figure(
        "system update: fallback after a panicking system",
        t,
        "three boots that panic (panic=10) and the old slot's boot, OVMF under TCG",
    );
    session::login(&mut vm, OFFICER).must();
    slots(
        &mut vm,
        &[
            "slot a: version 1, good, running",
            "slot b: version 2, FAILED after 3 tries",
            "committed version (anti-rollback floor): 1",
            "next boot: slot a (version 1)",
        ],
    );
    // A system whose health check fails replaces it.
    install(&mut vm, &stick1, "unhealthy_2.airlock");
    reboot_to_new(vm);

    let mut vm = Vm::start(&disk_config("fallback-health", disk.path())).must();
    vm.wait_for("FAILED its health check: worker:", timeout(BOOT_SECS))
        .must();
    vm.wait_for("restarting into the previous system", timeout(60))
        .must();
    vm.wait_exit(timeout(120)).must();
    let t = vm.console().transcript();
    assert!(t.contains("(slot b)"), "the trial ran in slot b:\n{t}");
    drop(vm);

    let mut vm = boot("fallback-3", disk.path(), "a");
    vm.wait_for(
        "the update to version 2 in slot b failed after 1 try: worker:",
        timeout(BOOT_SECS),
    )
    .must();
    session::login(&mut vm, OFFICER).must();
    slots(
        &mut vm,
        &[
            "slot b: version 2, FAILED after 1 try: worker:",
            "committed version (anti-rollback floor): 1",
            "next boot: slot a (version 1)",
        ],
    );
    let out = vm.command("system clear").must();
    assert!(out.contains("removed from slot b"), "{out}");
    let s = system(&mut vm);
    assert_has(&s, &["slot b: empty"]);
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
    let _ = std::fs::remove_dir_all(&work);
}
