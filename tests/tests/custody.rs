//! Model custody end to end on the real image (issue: models at the
//! console). Two groups, each on its own copy of the shared provisioned
//! disk:
//!
//! - `real_model_on_exfat_and_ext4_sticks`: the real SmolLM2-135M-Instruct
//!   as version 1 (one file) and version 2 (split into parts) on an exFAT
//!   stick, a table of bundles that must be refused on an ext4 stick, both
//!   sticks inserted at once; the officer sees every refusal with its
//!   reason, imports, activates, rolls back and removes.
//! - `import_faults_and_offline_edit`: on a disk larger than the image
//!   (the state partition grows to fill it), a stick pulled mid-import, QEMU
//!   killed mid-import (a power cut) and booted again, then a model file
//!   edited offline in the disk image and caught at the next boot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::bundles::{self, flip_byte_in_ext4_file, make_stick, tiny_gguf, Packer, Signer};
use airlock_e2e::session::{self, AUDITOR, OFFICER};
use airlock_e2e::{timeout, Artifacts, Must, Pattern, Vm, VmConfig};
use std::path::PathBuf;
use std::process::Command;

/// The officer's prompt.
const PROMPT: &str = "airlock otto@officer> ";
const SMOL: &str = "smollm2-135m-instruct";

/// A scratch directory for stick images (outside the VM's work directory,
/// which is removed when a VM is dropped); removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir()
            .join("airlock-e2e")
            .join(format!("{name}-sticks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).must();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The number the `import` list gives the line containing `needle`.
fn number_of(listing: &str, needle: &str) -> String {
    let line = listing
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in the list:\n{listing}"));
    line.trim_start()
        .split(')')
        .next()
        .unwrap_or_else(|| panic!("no number on {line:?}"))
        .to_string()
}

/// Runs `import`, returns the listed bundles (up to the question).
fn import_list(vm: &mut Vm) -> String {
    let mark = vm.console().mark();
    session::send(vm, "import").must();
    vm.wait_for("Import which? (number, Enter to cancel): ", timeout(180))
        .must();
    vm.console().text_since(mark).must()
}

/// `import`, choose the line with `needle`, confirm; waits for the result
/// line and the prompt. Returns what was printed.
fn import_one(vm: &mut Vm, needle: &str, done: &str) -> String {
    vm.wait_for(PROMPT, timeout(30)).ok();
    let listing = import_list(vm);
    let mark = vm.console().mark();
    session::send(vm, &number_of(&listing, needle)).must();
    session::answer(vm, "Type yes: ", "yes").must();
    vm.wait_for(done, timeout(900)).must();
    vm.wait_for(PROMPT, timeout(60)).must();
    vm.console().text_since(mark).must()
}

fn smollm2_gguf() -> PathBuf {
    let out =
        bundles::run(Command::new(bundles::repo_root().join("scripts/fetch-model")).arg("smollm2"))
            .must();
    PathBuf::from(out.trim())
}

#[test]
fn real_model_on_exfat_and_ext4_sticks() {
    let scratch = Scratch::new("custody-real");
    let files = scratch.0.join("files");
    std::fs::create_dir_all(&files).must();

    // exFAT stick: SmolLM2 version 1 as one file, version 2 split in parts.
    let smol = smollm2_gguf();
    let models = Packer::new(&scratch.0.join("models")).must();
    let smol1 = models
        .pack("model", SMOL, 1, &[], &[&smol], Signer::Models)
        .must();
    let smol2 = models
        .pack(
            "model",
            SMOL,
            2,
            &["--split", "40M"],
            &[&smol],
            Signer::Models,
        )
        .must();
    let parts = std::fs::read_dir(&smol2)
        .must()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .count();
    assert!(parts >= 2, "version 2 was not split: {parts} parts");
    let exfat = scratch.0.join("models-exfat.img");
    make_stick(&exfat, "exfat", "MODELS", None, &[smol1, smol2]).must();

    // ext4 stick: what must be refused, and two versions of a tiny model.
    let gguf = files.join("tiny.gguf");
    tiny_gguf(&gguf, 11).must();
    let bad = Packer::new(&scratch.0.join("refusals")).must();
    let mut on_ext4 = Vec::new();
    on_ext4.push(
        bad.pack("model", "tiny", 2, &[], &[&gguf], Signer::Models)
            .must(),
    );
    on_ext4.push(
        bad.pack("model", "tiny", 1, &[], &[&gguf], Signer::Models)
            .must(),
    );
    // Signed by the system key: a signer of the wrong role for a model.
    on_ext4.push(
        bad.pack("model", "wrongrole", 1, &[], &[&gguf], Signer::System)
            .must(),
    );
    // A system bundle on a direct kernel boot: no boot slots to write.
    let efi = files.join("airlock.efi");
    std::fs::write(&efi, b"MZ not really a UKI").must();
    let trust =
        bundles::run(Command::new(bundles::repo_root().join("scripts/demo-keys")).arg("trust"))
            .must();
    on_ext4.push(
        bad.pack(
            "system",
            "airlock",
            1,
            &["--variant", "demo", "--trust", trust.trim()],
            &[&efi],
            Signer::System,
        )
        .must(),
    );
    // Signed, then its manifest edited: the signature no longer verifies.
    let tampered = bad
        .pack(
            "model",
            "tampered",
            1,
            &["--description", "as signed"],
            &[&gguf],
            Signer::Models,
        )
        .must();
    let mf = tampered.join("manifest.json");
    let text = std::fs::read_to_string(&mf).must();
    std::fs::write(&mf, text.replace("as signed", "as edited")).must();
    on_ext4.push(tampered);
    // Larger than the state partition's free space (a sparse filler).
    let filler = files.join("weights.bin");
    let f = std::fs::File::create(&filler).must();
    f.set_len(900 << 20).must();
    drop(f);
    on_ext4.push(
        bad.pack(
            "model",
            "huge",
            1,
            &["--gguf", "tiny.gguf"],
            &[&gguf, &filler],
            Signer::Models,
        )
        .must(),
    );
    let ext4 = scratch.0.join("refusals-ext4.img");
    make_stick(&ext4, "ext4", "REFUSALS", Some(1024), &on_ext4).must();

    let disk = session::provisioned_disk("custody-real").must();
    let cfg = VmConfig::direct("custody-real", &Artifacts::locate())
        .must()
        .with_writable_disk(disk.path());
    let mut vm = Vm::boot(&cfg, timeout(240)).must();
    // Both sticks at once: the exFAT one is sda, the ext4 one sdb.
    vm.plug_stick(&exfat).must();
    vm.plug_stick(&ext4).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    session::login(&mut vm, OFFICER).must();

    // The first list: every bundle of both sticks, in device order, the
    // refused ones with their reasons.
    let listing = import_list(&mut vm);
    let refusals: &[(&str, &str)] = &[
        (
            "wrongrole_1.airlock",
            "signed by key \"demo-system\", which does not hold role models",
        ),
        ("airlock_1.airlock", "did not come through systemd-boot"),
        (
            "tampered_1.airlock",
            "below threshold: 0 of 1 required models signatures",
        ),
        ("huge version 1", "not enough space: needs "),
    ];
    for (needle, why) in refusals {
        let line = listing
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not listed:\n{listing}"));
        assert!(
            line.contains("REFUSED: ") && line.contains(why),
            "{needle}: want REFUSED: …{why}…, got {line:?}"
        );
    }
    let smol_line = listing
        .lines()
        .find(|l| l.contains(&format!("model {SMOL} version 1")))
        .unwrap();
    assert!(
        smol_line.contains("sda") && smol_line.contains("signed by demo-models"),
        "{smol_line}"
    );
    let sda = listing.find(&format!("{SMOL} version 1")).unwrap();
    let sdb = listing.find("model tiny version 2").unwrap();
    assert!(sda < sdb, "sticks not listed in device order:\n{listing}");
    // Choosing a refused bundle: one line, nothing changes.
    session::send(&mut vm, &number_of(&listing, "huge version 1")).must();
    vm.wait_for("import refused: not enough space: needs ", timeout(60))
        .must();
    vm.wait_for("; nothing changed", timeout(10)).must();
    vm.wait_for(PROMPT, timeout(30)).must();
    let out = vm.command("models").must();
    assert!(!out.contains("huge"), "{out}");

    // Lower version: after tiny 2, tiny 1 is refused.
    import_one(
        &mut vm,
        "model tiny version 2",
        "imported model tiny version 2",
    );
    let listing = import_list(&mut vm);
    let line = listing
        .lines()
        .find(|l| l.contains("model tiny version 1"))
        .unwrap();
    assert!(
        line.contains(
            "REFUSED: rollback refused: model tiny version 1 is lower than installed version 2"
        ),
        "{line}"
    );
    session::send(&mut vm, "").must();
    vm.wait_for("import cancelled", timeout(30)).must();

    // The real model: version 1 (with the progress line), then version 2
    // joined from its parts.
    let out = import_one(
        &mut vm,
        &format!("model {SMOL} version 1"),
        &format!("imported model {SMOL} version 1"),
    );
    assert!(out.contains("MB/s") && out.contains("s left"), "{out}");
    let out = vm.command(&format!("activate {SMOL}")).must();
    assert!(
        out.contains(&format!("{SMOL} version 1 is active")),
        "{out}"
    );
    let listing = import_list(&mut vm);
    let v2 = listing
        .lines()
        .find(|l| l.contains(&format!("model {SMOL} version 2")))
        .unwrap();
    assert!(v2.contains("replaces version 1"), "{v2}");
    session::send(&mut vm, "").must();
    vm.wait_for(PROMPT, timeout(30)).must();
    import_one(
        &mut vm,
        &format!("model {SMOL} version 2"),
        &format!("imported model {SMOL} version 2"),
    );
    let out = vm.command(&format!("activate {SMOL} 2")).must();
    assert!(
        out.contains(&format!("{SMOL} version 2 is active")),
        "{out}"
    );
    let out = vm.command("models").must();
    assert!(out.contains(&format!("{SMOL} (active: 2)")), "{out}");
    assert!(
        out.contains("by otto") && out.contains("demo-models"),
        "{out}"
    );

    // Rollback to the previous installed version; remove the newer one.
    let out = vm.command(&format!("rollback {SMOL}")).must();
    assert!(
        out.contains(&format!("{SMOL} rolled back to version 1 (was 2)")),
        "{out}"
    );
    let out = vm.command(&format!("remove {SMOL} 1")).must();
    assert!(out.contains("remove refused:"), "{out}");
    let out = vm.command(&format!("remove {SMOL} 2")).must();
    assert!(
        out.contains(&format!("{SMOL} version 2 removed (")),
        "{out}"
    );
    let out = vm.command("models").must();
    assert!(out.contains(&format!("{SMOL} (active: 1)")), "{out}");
    let versions: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with(SMOL))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim_start().trim_start_matches('*'))
        .collect();
    assert!(
        versions.len() == 1 && versions[0].starts_with("1 "),
        "{out}"
    );
    session::logout(&mut vm).must();

    session::login(&mut vm, AUDITOR).must();
    let log = vm.command("audit show 40").must();
    for want in [
        "model-import",
        "model-activate",
        "model-rollback",
        "model-remove",
        "bundle-refused",
    ] {
        assert!(log.contains(want), "audit show lacks {want}:\n{log}");
    }
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
}

/// The import's progress line once bytes are flowing (a non-zero rate).
fn copying() -> Pattern {
    Pattern::regex(r"[1-9][0-9]*\.[0-9] MiB / [0-9.]+ MiB +[0-9.]+ MB/s").must()
}

#[test]
fn import_faults_and_offline_edit() {
    let scratch = Scratch::new("custody-faults");
    let files = scratch.0.join("files");
    std::fs::create_dir_all(&files).must();
    let gguf = files.join("tiny.gguf");
    tiny_gguf(&gguf, 12).must();
    // A bundle large enough that its import takes a while under TCG.
    let filler = files.join("weights.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).must();
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..400 {
            f.write_all(&chunk).must();
        }
    }
    let p = Packer::new(&scratch.0.join("stick")).must();
    let big = p
        .pack(
            "model",
            "big",
            1,
            &["--gguf", "tiny.gguf"],
            &[&gguf, &filler],
            Signer::Models,
        )
        .must();
    std::fs::remove_file(&filler).must();
    let stick = scratch.0.join("big-fat.img");
    make_stick(&stick, "vfat", "BIG", None, &[big]).must();

    let disk = session::provisioned_disk("custody-faults").must();
    // As if flashed onto a larger disk: 1 GiB image, 2 GiB disk.
    std::fs::OpenOptions::new()
        .write(true)
        .open(disk.path())
        .and_then(|f| f.set_len(2 << 30))
        .must();
    let cfg = VmConfig::direct("custody-faults", &Artifacts::locate())
        .must()
        .with_writable_disk(disk.path());

    // 0. The state partition has grown to fill the disk (first boot).
    let mut vm = Vm::boot(&cfg, timeout(240)).must();
    let status = vm.command("status").must();
    let space = status
        .lines()
        .find(|l| l.starts_with("state space: "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        space.contains(" GiB free of 1.7")
            && space.contains("(grown from 7")
            && space.ends_with(" MiB at boot)"),
        "{space}"
    );

    // 1. The stick pulled mid-import: one line, nothing installed, PID 1 fine.
    let s = vm.plug_stick(&stick).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    session::login(&mut vm, OFFICER).must();
    let listing = import_list(&mut vm);
    session::send(&mut vm, &number_of(&listing, "model big version 1")).must();
    session::answer(&mut vm, "Type yes: ", "yes").must();
    vm.wait_for(copying(), timeout(120)).must();
    vm.unplug_stick(&s).must();
    vm.wait_for("import failed: ", timeout(300)).must();
    vm.wait_for("; nothing changed", timeout(10)).must();
    vm.wait_for(PROMPT, timeout(60)).must();
    let out = vm.command("models").must();
    assert!(!out.contains("big"), "{out}");
    // The supervisor notices the pull within its next scans.
    let mut out = String::new();
    for _ in 0..30 {
        out = vm.command("status").must();
        if out.contains("usb sticks: none") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    assert!(out.contains("usb sticks: none"), "{out}");

    // 2. A power cut mid-import (QEMU killed), then a boot.
    vm.plug_stick(&stick).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    vm.wait_for(PROMPT, timeout(30)).ok();
    let listing = import_list(&mut vm);
    session::send(&mut vm, &number_of(&listing, "model big version 1")).must();
    session::answer(&mut vm, "Type yes: ", "yes").must();
    vm.wait_for(copying(), timeout(120)).must();
    drop(vm);

    let mut vm = Vm::boot(&cfg, timeout(240)).must();
    let status = vm.command("status").must();
    assert!(status.contains("models at rest: "), "{status}");
    assert!(status.contains(" GiB free of 1.7"), "still grown: {status}");
    vm.plug_stick(&stick).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    session::login(&mut vm, OFFICER).must();
    let out = vm.command("models").must();
    assert!(!out.contains("big"), "nothing half-installed: {out}");
    // The recorded version was not raised: the same version imports now.
    import_one(
        &mut vm,
        "model big version 1",
        "imported model big version 1",
    );
    let out = vm.command("activate big").must();
    assert!(out.contains("big version 1 is active"), "{out}");
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
    drop(vm);

    // 3. One byte of the active model edited offline, in the middle of its
    //    largest file: caught at boot.
    flip_byte_in_ext4_file(
        disk.path(),
        "airlock-state",
        "/store/model/big/1/weights.bin",
        200 << 20,
    )
    .must();
    let mut vm = Vm::boot(&cfg, timeout(240)).must();
    vm.wait_for("REFUSED", timeout(600)).must();
    vm.wait_for(PROMPT, timeout(30)).ok();
    let status = vm.command("status").must();
    let line = status
        .lines()
        .find(|l| l.starts_with("models at rest: "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        line.contains("REFUSED") && line.contains("big") && line.contains("weights.bin"),
        "{line}"
    );
    session::login(&mut vm, OFFICER).must();
    let out = vm.command("models").must();
    assert!(out.contains("REFUSED"), "{out}");
    let out = vm.command("activate big 1").must();
    assert!(
        out.contains("refused") && out.contains("weights.bin"),
        "{out}"
    );
    session::logout(&mut vm).must();
    session::login(&mut vm, AUDITOR).must();
    let log = vm.command("audit show 20").must();
    assert!(
        log.lines()
            .any(|l| l.contains("model-verify") && l.contains("refused")),
        "{log}"
    );
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
}
