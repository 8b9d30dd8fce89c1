//! The appliance has no network and its sandbox holds on its own kernel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::console::Pattern;
use airlock_e2e::session;
use airlock_e2e::{timeout, Artifacts, Must, Status, Vm, VmConfig};

const DIRECT_BOOT_SECS: u64 = 240;

fn direct(name: &str) -> VmConfig {
    VmConfig::direct(name, &Artifacts::locate()).must()
}

#[test]
fn no_network_with_nics() {
    let mut vm = Vm::boot(
        &direct("no-network-with-nics").with_nics(true),
        timeout(DIRECT_BOOT_SECS),
    )
    .must();
    // QEMU really attached both NICs (else the test proves nothing):
    // e1000 is 8086:100e, virtio-net 1af4:1000 (transitional) or 1af4:1041.
    let pci = vm.qmp().execute("query-pci", None).must();
    let ids: Vec<(u64, u64)> = pci
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|bus| bus["devices"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| Some((d["id"]["vendor"].as_u64()?, d["id"]["device"].as_u64()?)))
        .collect();
    assert!(
        ids.contains(&(0x8086, 0x100e)),
        "no e1000 on the PCI bus: {ids:x?}"
    );
    assert!(
        ids.contains(&(0x1af4, 0x1000)) || ids.contains(&(0x1af4, 0x1041)),
        "no virtio-net on the PCI bus: {ids:x?}"
    );

    let status = Status::parse(&vm.command("status").must());
    assert_eq!(status.require("interfaces").must(), "lo");
    assert_eq!(status.require("ready").must(), "yes");
    // The supervisor tries socket(AF_INET) itself: "refused (EAFNOSUPPORT)".
    let inet = status.require("inet sockets").must();
    assert!(
        inet.starts_with("refused"),
        "socket(AF_INET) must fail inside the appliance, status says {inet:?}"
    );
    // The same boot (q35 with an emulated Intel IOMMU, the harness default):
    // DMA goes through the IOMMU, interrupts are remapped, memfds never exec.
    let dma = status.require("dma protection").must();
    assert!(
        dma.starts_with("active (dmar0; ")
            && dma.contains(" all translated")
            && dma.ends_with("interrupt remapping on)"),
        "dma protection: {dma}"
    );
    assert_eq!(status.require("sysctl vm.memfd_noexec").must(), "2");
}

#[test]
fn without_an_iommu_the_appliance_is_not_ready() {
    // q35 without the emulated IOMMU: a PC with VT-d off. airlock.dma=require
    // (image/cmdline): the console comes up but says why it is not ready.
    let mut vm = Vm::start(&direct("without-iommu").with_iommu(false)).must();
    let outcomes = [
        Pattern::from("airlock: NOT READY — DMA protection absent: no IOMMU"),
        Pattern::from(airlock_e2e::CONSOLE_READY),
    ];
    let (which, m) = vm
        .console()
        .wait_for_any(&outcomes, timeout(DIRECT_BOOT_SECS))
        .must();
    if which != 0 {
        vm.dump();
        panic!("expected NOT READY for the missing IOMMU, got {:?}", m.text);
    }
    vm.console()
        .wait_for(airlock_e2e::PROMPT, timeout(30))
        .must();
    let status = Status::parse(&vm.command("status").must());
    let dma = status.require("dma protection").must();
    assert!(
        dma.starts_with("ABSENT — no IOMMU"),
        "dma protection: {dma}"
    );
    let ready = status.require("ready").must();
    assert!(
        ready.starts_with("no — DMA protection absent: no IOMMU"),
        "ready: {ready}"
    );
}

#[test]
fn sandbox_probe_in_appliance() {
    // `selftest` is for operators and officers: a provisioned disk, a login.
    let disk = session::provisioned_disk("sandbox-probe").must();
    let mut vm = Vm::boot(
        &direct("sandbox-probe").with_writable_disk(disk.path()),
        timeout(DIRECT_BOOT_SECS),
    )
    .must();
    session::login(&mut vm, session::OFFICER).must();
    let mark = vm.console().mark();
    vm.console().send_line("selftest").must();
    let m = vm
        .console()
        .wait_for(
            Pattern::regex(r"probe: (\d+)/(\d+) checks passed").must(),
            timeout(300),
        )
        .must();
    let output = vm.console().text_since(mark).must();
    let (passed, total): (u32, u32) = (m.group(1).parse().must(), m.group(2).parse().must());
    assert!(total > 0, "the probe ran no checks:\n{output}");
    assert_eq!(passed, total, "probe checks failed:\n{output}");
    assert!(
        !output.lines().any(|l| l.starts_with("FAIL")),
        "a probe check failed:\n{output}"
    );
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("PASS") && l.contains("Landlock")),
        "no passing Landlock check in the probe output:\n{output}"
    );
    vm.console()
        .wait_for("airlock otto@officer> ", timeout(30))
        .must();

    // Landlock is enforced by this kernel (the probe requires it hard).
    let status = Status::parse(&vm.command("status").must());
    // PID 1 left the initramfs rootfs at boot, so the spawn path's pivot_root drops the
    // whole host tree from each sandbox (docs/sandbox.md, "Mount namespace").
    assert_eq!(status.require("root").must(), "tmpfs over a parent mount");
    let lsm = status.require("lsm").must();
    assert!(lsm.split(',').any(|m| m == "landlock"), "lsm: {lsm}");
    let abi = status.number("landlock abi").must();
    assert!(abi >= 1.0, "landlock abi: {abi}");
}
