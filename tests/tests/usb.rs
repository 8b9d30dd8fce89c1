//! USB sticks hot-plugged and pulled through QMP are seen and forgotten.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::console::Pattern;
use airlock_e2e::stick::make_vfat_stick;
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
    let stick = vm.plug_stick(&img).must();
    let inserted = vm
        .wait_for(
            Pattern::regex(r"\[usb\] stick inserted: (\w+) \((\d+) MiB\)").must(),
            timeout(120),
        )
        .must();
    let dev = inserted.group(1).to_owned();
    assert_eq!(inserted.group(2), "16", "stick size: {}", inserted.text);

    let with = Status::parse(&vm.command("status").must());
    let listed = with.require("usb sticks").must();
    assert!(
        listed.contains(&dev),
        "status should list {dev}: usb sticks: {listed}"
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
