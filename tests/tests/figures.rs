//! Printed figures of the appliance (issue 4, "Done when"): measured, never
//! asserted. They appear on the uncaptured stderr of the test run as
//! `FIGURE: ...` lines and in `$CARGO_TARGET_DIR/tmp/e2e-figures.txt`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use airlock_e2e::figures::{publish, size_figure, Figure};
use airlock_e2e::{timeout, Artifacts, Must, Status, Vm, VmConfig};

#[test]
fn figures() {
    let artifacts = Artifacts::locate();
    let config = VmConfig::direct("figures", &artifacts).must();
    let uki = artifacts.uki().must();
    let initramfs = artifacts.initramfs().must();

    let mut vm = Vm::boot(&config, timeout(240)).must();
    let host_wall = vm.elapsed();
    // Idle: nothing typed for a few seconds after the console came up.
    std::thread::sleep(Duration::from_secs(5));
    let status = Status::parse(&vm.command("status").must());
    let ready_after = status.number("console ready after").must();
    let rss_kib = status.number("supervisor rss").must();

    let len = |p: &Path| std::fs::metadata(p).must().len();
    let figures = [
        Figure {
            name: "kernel start to console ready",
            value: format!("{ready_after:.3} s"),
            note: "status `console ready after:`, the supervisor's own clock since kernel start, QEMU TCG".into(),
        },
        Figure {
            name: "supervisor RSS at idle",
            value: format!("{rss_kib:.0} KiB"),
            note: "status, 5 s after console ready".into(),
        },
        size_figure("UKI size (airlock.efi)", len(&uki)),
        size_figure("initramfs size", len(&initramfs)),
        Figure {
            name: "boot wall time seen by the host",
            value: format!("{:.1} s", host_wall.as_secs_f64()),
            note: "QEMU start to console ready, direct boot, TCG".into(),
        },
    ];
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-figures.txt");
    publish(&figures, Some(&file)).must();
}
