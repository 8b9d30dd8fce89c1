//! USB sticks hot-plugged and pulled through QMP are seen and forgotten;
//! what a stick says about itself (its label) reaches the console escaped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::console::Pattern;
use airlock_e2e::stick::{make_vfat_stick, set_fat_boot_label};
use airlock_e2e::{timeout, Artifacts, Must, Status, Vm, VmConfig};

#[test]
fn usb_hotplug() {
    let config = VmConfig::direct("usb-hotplug", &Artifacts::locate()).must();
    let mut vm = Vm::boot(&config, timeout(240)).must();
    let before = Status::parse(&vm.command("status").must());
    let none = before.require("usb sticks").must().to_owned();

    let img = vm.work_file("stick.img");
    make_vfat_stick(
        &img,
        "TESTSTICK",
        16,
        &[("README.txt", b"airlock e2e stick\n")],
    )
    .must();
    // A hostile label: ESC [2J (clear the screen) written into the boot
    // sector by hand (mkfs.vfat would refuse it).
    set_fat_boot_label(&img, b"T\x1b[2JEST").must();
    let stick = vm.plug_stick(&img).must();
    // The insert notice waits for the label and shows it escaped: a
    // literal backslash-x-1-b, never the ESC byte.
    let inserted = vm
        .wait_for(
            Pattern::regex(r#"\[usb\] stick inserted: (\w+) \((\d+) MiB\) "T\\x1b\[2JEST""#).must(),
            timeout(120),
        )
        .must();
    let dev = inserted.group(1).to_owned();
    assert_eq!(inserted.group(2), "16", "stick size: {}", inserted.text);

    let with = Status::parse(&vm.command("status").must());
    let listed = with.require("usb sticks").must();
    assert!(
        listed.contains(&format!(r#"{dev} 16 MiB "T\x1b[2JEST""#)),
        "status should list {dev} with its label escaped: usb sticks: {listed}"
    );
    // The raw serial bytes never carried the sequence itself.
    let raw = std::fs::read(vm.work_file("console.log")).must();
    assert!(
        !raw.windows(4).any(|w| w == b"\x1b[2J"),
        "an ESC [2J reached the console raw"
    );

    vm.unplug_stick(&stick).must();
    vm.wait_for(format!("[usb] stick removed: {dev}"), timeout(120))
        .must();
    let after = Status::parse(&vm.command("status").must());
    let listed = after.require("usb sticks").must();
    assert!(
        !listed.contains(&dev),
        "{dev} still listed after removal: {listed}"
    );
    assert_eq!(
        listed, none,
        "status after removal should match status before"
    );
}
