//! Self-test of the harness on the appliance kernel, without the supervisor.
//!
//! Boots out/bzImage with a throwaway initramfs whose /init is the tiny
//! `e2e-echo-init` of this crate, then exercises every harness path the
//! appliance tests rely on: serial in both directions, `command()` framing,
//! QMP hot-plug and unplug of a USB stick (seen by the guest kernel in
//! /sys/block), and QEMU exiting on power-off. When an appliance test fails
//! and this one passes, the fault is in the appliance, not in the harness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_e2e::stick::make_vfat_stick;
use airlock_e2e::{timeout, Artifacts, Boot, Must, Vm, VmConfig};

/// Packs a newc initramfs holding /init (the echo init) and /dev/console.
fn echo_initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).must();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_e2e-echo-init"), root.join("init")).must();
    // The kernel opens /dev/console for init's stdio; without it init is mute.
    let st = Command::new("mknod")
        .args(["-m", "600"])
        .arg(root.join("dev/console"))
        .args(["c", "5", "1"])
        .status()
        .must();
    assert!(
        st.success(),
        "mknod /dev/console failed (the e2e tests run as root)"
    );
    let cpio_path = dir.join("echo-initramfs.cpio");
    let mut cpio = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "--owner=0:0"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&cpio_path).must())
        .spawn()
        .expect("cpio is missing: run scripts/setup-host");
    {
        use std::io::Write;
        let list = "init\ndev\ndev/console\nproc\nsys\n";
        cpio.stdin.take().unwrap().write_all(list.as_bytes()).must();
    }
    assert!(cpio.wait().must().success(), "cpio failed");
    cpio_path
}

/// Polls `command` until its output satisfies `done`.
fn poll(vm: &mut Vm, command: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = vm.command(command).must();
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "gave up polling {command:?}; last output {out:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn harness_drives_serial_qmp_and_usb_on_the_appliance_kernel() {
    let kernel = match std::env::var_os("AIRLOCK_E2E_KERNEL") {
        Some(k) => PathBuf::from(k),
        None => Artifacts::locate().kernel().must(),
    };
    let scratch = std::env::temp_dir().join(format!("airlock-e2e-selftest-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).must();
    let initrd = echo_initramfs(&scratch);
    let config = VmConfig::new(
        "harness-selftest",
        Boot::Direct {
            kernel,
            initrd,
            append: "console=ttyS0 panic=-1 rdinit=/init".into(),
            disk: None,
        },
    );

    let mut vm = Vm::start(&config).must();
    vm.wait_for("echo-init: console ready", timeout(180)).must();
    vm.wait_for(airlock_e2e::PROMPT, timeout(30)).must();

    // Serial both ways, with command() stripping the echo and the prompt.
    assert_eq!(vm.command("hello there").must(), "echo: hello there\n");
    assert_eq!(vm.command("ünïcode").must(), "echo: ünïcode\n");

    // QMP hot-plug: the guest kernel sees a new SCSI disk, then loses it.
    let before = vm.command("blocks").must();
    assert!(!before.contains("sd"), "no stick yet: {before}");
    let img = vm.work_file("stick.img");
    make_vfat_stick(&img, "TESTSTICK", 16, &[("hello.txt", b"hi\n")]).must();
    let stick = vm.plug_stick(&img).must();
    poll(&mut vm, "blocks", timeout(90), |o| o.contains("sda"));
    vm.unplug_stick(&stick).must();
    poll(&mut vm, "blocks", timeout(90), |o| !o.contains("sda"));

    // Power-off ends QEMU with status 0.
    vm.console().send_line("poweroff").must();
    let status = vm.wait_exit(timeout(60)).must();
    assert!(status.success(), "QEMU exit status {status}");
    std::fs::remove_dir_all(&scratch).must();
}
