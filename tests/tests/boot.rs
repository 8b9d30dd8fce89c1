//! Boot paths of the appliance: direct boot to the console, power-off,
//! the whole disk through OVMF + systemd-boot, and a CPU without AVX2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::console::Pattern;
use airlock_e2e::figures::{publish, Figure};
use airlock_e2e::stick::make_gpt_disk;
use airlock_e2e::{timeout, Artifacts, Must, Status, Vm, VmConfig};

/// Direct boot (kernel + initramfs): generous for TCG on a busy 2-core host.
const DIRECT_BOOT_SECS: u64 = 240;
/// OVMF → systemd-boot → UKI under TCG.
const OVMF_BOOT_SECS: u64 = 600;

fn direct(name: &str) -> VmConfig {
    VmConfig::direct(name, &Artifacts::locate()).must()
}

/// The state partition's unique GUID in image/partitions.sh (STATE_GUID).
const STATE_GUID: &str = "0e16a44c-724c-40b1-bffd-7e46645b4527";
/// A GUID no image uses.
const OTHER_GUID: &str = "11111111-2222-4333-8444-555555555555";

#[test]
fn boot_to_console() {
    // A second disk with a partition named airlock-state (Linux data type,
    // like ours, but another GUID): it must be ignored, with its reason.
    let probe = direct("boot-to-console");
    let intruder =
        std::env::temp_dir().join(format!("airlock-e2e-intruder-{}.img", std::process::id()));
    make_gpt_disk(&intruder, 16, &[("airlock-state", "8300", OTHER_GUID)]).must();
    let mut vm = Vm::boot(&probe.with_extra_disk(&intruder), timeout(DIRECT_BOOT_SECS)).must();
    let _ = std::fs::remove_file(&intruder);
    let banner = vm.console().transcript();
    assert!(
        banner.contains("Airlock"),
        "no Airlock banner before the prompt"
    );

    // Not provisioned: help offers only what may run now.
    let help = vm.command("help").must();
    assert!(help.starts_with("Not provisioned."), "{help}");
    for cmd in ["help", "status", "provision", "poweroff"] {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(cmd)),
            "`help` does not list {cmd}:\n{help}"
        );
    }

    // Bad input: a one-line reason naming the command, and nothing else.
    let reply = vm.command("frobnicate now").must();
    let lines: Vec<&str> = reply.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "unknown command should get one line:\n{reply}"
    );
    assert!(
        lines[0].contains("frobnicate"),
        "reason should name the command: {reply}"
    );
    assert!(
        lines[0].to_lowercase().contains("unknown"),
        "reason should say unknown: {reply}"
    );

    // A known command with a surplus argument: one line with a hint.
    let reply = vm.command("status now").must();
    assert_eq!(
        reply.trim(),
        "'status' takes no arguments; see 'help status'",
        "reply to a surplus argument"
    );

    // The console still works after the rejections.
    let status = Status::parse(&vm.command("status").must());
    assert_eq!(status.require("ready").must(), "yes");

    // The image's own state partition is mounted, the intruder ignored.
    assert_eq!(
        status.require("state partition").must(),
        "/dev/vda2 mounted at /var/lib/airlock"
    );
    assert_eq!(
        status.require("state binding").must(),
        format!("PARTUUID {STATE_GUID} on vda (no LoaderDevicePartUUID: boot disk not checked)")
    );
    assert_eq!(
        status.require("state ignored").must(),
        format!("vdb1 (partition GUID {OTHER_GUID} is not this image's ({STATE_GUID}))")
    );
}

#[test]
fn poweroff_ends_qemu() {
    let mut vm = Vm::boot(&direct("poweroff"), timeout(DIRECT_BOOT_SECS)).must();
    vm.console().send_line("poweroff").must();
    let status = vm.wait_exit(timeout(120)).must();
    assert!(
        status.success(),
        "QEMU should exit 0 after poweroff, got {status}"
    );
    let log = vm.console().transcript();
    assert!(
        !log.contains("Kernel panic"),
        "poweroff went through a panic"
    );
}

#[test]
fn ovmf_disk_boot() {
    // A second disk whose partition copies the state partition's name, type
    // and GUID, but holds no ESP: not the disk systemd-boot started from.
    let intruder =
        std::env::temp_dir().join(format!("airlock-e2e-copycat-{}.img", std::process::id()));
    make_gpt_disk(&intruder, 16, &[("airlock-state", "8300", STATE_GUID)]).must();
    let config = VmConfig::disk("ovmf-disk-boot", &Artifacts::locate())
        .must()
        .with_extra_disk(&intruder);
    let mut vm = Vm::boot(&config, timeout(OVMF_BOOT_SECS)).must();
    let _ = std::fs::remove_file(&intruder);
    let wall = vm.elapsed();
    // The firmware really booted it: OVMF's boot manager line precedes the banner.
    let log = vm.console().transcript();
    let (firmware, banner) = (log.find("BdsDxe: starting"), log.find("Airlock "));
    assert!(
        matches!((firmware, banner), (Some(f), Some(b)) if f < b),
        "no OVMF boot line before the banner"
    );
    let status = Status::parse(&vm.command("status").must());
    assert_eq!(status.require("slot").must(), "a", "booted slot");
    assert_eq!(status.require("ready").must(), "yes");
    // Bound to the boot disk through systemd-boot's LoaderDevicePartUUID
    // (the ESP's GUID, ESP_GUID in image/partitions.sh).
    assert_eq!(
        status.require("state partition").must(),
        "/dev/vda2 mounted at /var/lib/airlock"
    );
    assert_eq!(
        status.require("state binding").must(),
        format!(
            "PARTUUID {STATE_GUID} on the boot disk vda \
             (LoaderDevicePartUUID f6df8968-40d2-48cd-b61c-e838db0717f0)"
        )
    );
    assert_eq!(
        status.require("state ignored").must(),
        "vdb1 (not on the boot disk (vdb holds no ESP with LoaderDevicePartUUID \
         f6df8968-40d2-48cd-b61c-e838db0717f0))"
    );
    let figure = Figure {
        name: "OVMF disk boot wall time seen by the host",
        value: format!("{:.1} s", wall.as_secs_f64()),
        note: "QEMU start to console ready: OVMF, systemd-boot, UKI, TCG".into(),
    };
    publish(&[figure], None).must();
}

#[test]
fn cpu_without_avx2_refused() {
    let mut vm = Vm::start(&direct("cpu-without-avx2").with_cpu("qemu64")).must();
    let outcomes = [
        // The supervisor's CPU gate: "airlock: this PC's CPU lacks AVX2; ...".
        Pattern::regex(r"airlock:[^\n]*\bAVX2\b[^\n]*").must(),
        Pattern::from("Illegal instruction"),
        Pattern::from("Kernel panic"),
        Pattern::from(airlock_e2e::CONSOLE_READY),
    ];
    let (which, m) = vm
        .console()
        .wait_for_any(&outcomes, timeout(DIRECT_BOOT_SECS))
        .must();
    if which != 0 {
        vm.dump();
        panic!("expected a plain AVX2 refusal, got {:?} first", m.text);
    }
    // The refusal is the end of the story: no crash follows it.
    std::thread::sleep(std::time::Duration::from_secs(10));
    let log = vm.console().transcript();
    for bad in [
        "Illegal instruction",
        "Kernel panic",
        "traps:",
        "invalid opcode",
    ] {
        if log.contains(bad) {
            vm.dump();
            panic!("{bad:?} on the console after the refusal");
        }
    }
    assert!(
        !log.contains(airlock_e2e::CONSOLE_READY),
        "console must not come up"
    );
}
