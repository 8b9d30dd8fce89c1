//! The physical console as an operator meets it: tty1 on the framebuffer
//! (OVMF's GOP → the kernel's efifb + fbcon), typed on through an emulated
//! USB keyboard (QMP `input-send-event`), photographed with QMP
//! `screendump`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use airlock_e2e::session;
use airlock_e2e::{timeout, Artifacts, Must, Status, Vm, VmConfig};

const ALICE: session::Account<'static> = ("alice", "operator", "alice types on the keyboard 1");
const BOB: session::Account<'static> = ("bob", "officer", "bob minds the models on it 2");
const CAROL: session::Account<'static> = ("carol", "auditor", "carol audits the console 3");

/// OVMF → systemd-boot → UKI under TCG.
const OVMF_BOOT_SECS: u64 = 600;
/// Where the operator manual takes its tty1 screenshot from.
const MANUAL_SCREENSHOT: &str = "docs/img/tty1-console.png";

/// Waits until `status` on the serial console says tty1's console service runs.
fn wait_tty1_service(vm: &mut Vm) {
    let deadline = Instant::now() + timeout(60);
    loop {
        let status = Status::parse(&vm.command("status").must());
        let service = status.require("service console:tty1").must().to_owned();
        if service.starts_with("running") {
            return;
        }
        if Instant::now() >= deadline {
            vm.dump();
            panic!("tty1's console service is not running: {service}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn tty1_typed_on_a_usb_keyboard() {
    let config = VmConfig::disk("tty1-keyboard", &Artifacts::locate())
        .must()
        .with_usb_keyboard();
    let mut vm = Vm::boot(&config, timeout(OVMF_BOOT_SECS)).must();
    wait_tty1_service(&mut vm);

    // tty1 shows its banner and prompt, and nothing moves but the cursor.
    let before = vm
        .wait_screen_settled(Duration::from_secs(2), timeout(120))
        .must();
    assert!(
        before.width > 600 && before.height > 400,
        "framebuffer console is {}x{}: efifb missing?",
        before.width,
        before.height
    );
    assert!(before.ink() > 0, "tty1 is blank");

    // `status` typed on the USB keyboard runs on tty1, not on the serial console.
    let mark = vm.console().mark();
    vm.type_text("status\n").must();
    let after = vm
        .wait_screen_settled(Duration::from_secs(2), timeout(60))
        .must();
    assert!(
        after.ink() > 2 * before.ink(),
        "typing `status` on tty1 should fill the screen: ink {} before, {} after",
        before.ink(),
        after.ink()
    );
    let serial = vm.console().text_since(mark).must();
    assert!(
        !serial.contains("version: "),
        "the keyboard's `status` reached the serial console:\n{serial}"
    );

    // A login typed on tty1's USB keyboard; its audit entry names tty1.
    session::provision(&mut vm, &[ALICE, BOB, CAROL]).must();
    vm.type_text(&format!("login {}\n", ALICE.0)).must();
    std::thread::sleep(Duration::from_secs(2));
    vm.type_text(&format!("{}\n", ALICE.2)).must();
    std::thread::sleep(Duration::from_secs(20));
    vm.type_text("whoami\n").must();
    let after = vm
        .wait_screen_settled(Duration::from_secs(2), timeout(60))
        .must();
    session::login(&mut vm, CAROL).must();
    let log = vm.command("audit show 10").must();
    assert!(
        log.lines().any(|l| l.contains("alice")
            && l.contains(" login ")
            && l.contains(" ok ")
            && l.contains("tty1")),
        "no login of alice on tty1 in the audit log:\n{log}"
    );
    session::logout(&mut vm).must();

    // The screenshot for the manual: a real PNG of the whole screen.
    let png = vm.work_file("tty1-console.png");
    let (w, h) = vm.screendump(&png).must();
    assert_eq!(
        (w, h),
        (after.width, after.height),
        "PNG and PPM dumps disagree on the screen size"
    );
    if std::env::var_os("AIRLOCK_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        let dest = airlock_e2e::bundles::repo_root().join(MANUAL_SCREENSHOT);
        std::fs::create_dir_all(dest.parent().unwrap()).must();
        std::fs::copy(&png, &dest).must();
        eprintln!("screenshot updated: {}", dest.display());
    }

    // `poweroff` typed on tty1 powers the PC off.
    vm.type_text("logout\n").must();
    std::thread::sleep(Duration::from_secs(3));
    vm.type_text("poweroff\n").must();
    vm.wait_for("airlock: powering off", timeout(60)).must();
    let status = vm.wait_exit(timeout(120)).must();
    assert!(
        status.success(),
        "QEMU should exit 0 after poweroff on tty1, got {status}"
    );
}
