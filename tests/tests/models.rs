//! The update officer's model import at the console, end to end on the
//! real image: a tiny generated model packed and signed on the host with
//! the DEMO models key (the demo image trusts it), on a FAT stick with a
//! second, unsigned bundle; the officer sees both, the unsigned one
//! refused with its reason; imports the signed one with a progress line,
//! activates it, and cannot remove the active version; an operator cannot
//! import.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::bundles::{self, tiny_gguf, Packer, Signer};
use airlock_e2e::session::{self, OFFICER, OPERATOR};
use airlock_e2e::{timeout, Artifacts, Must, Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The officer's prompt.
const PROMPT: &str = "airlock otto@officer> ";

/// A FAT stick with `tiny_1.airlock` (signed by the DEMO models key) and
/// `unsigned_1.airlock` (no signature).
fn bundle_stick(work: &Path) -> PathBuf {
    let gguf = work.join("model.gguf");
    tiny_gguf(&gguf, 7).must();
    let p = Packer::new(&work.join("stick")).must();
    let bundles = [("tiny", Signer::Models), ("unsigned", Signer::Unsigned)]
        .map(|(name, signer)| p.pack("model", name, 1, &[], &[&gguf], signer).must());
    let img = work.join("bundles.img");
    let mut cmd = Command::new(bundles::repo_root().join("scripts/make-stick"));
    cmd.args(["--superfloppy", "--label", "BUNDLES"]).arg(&img);
    bundles::run(cmd.args(&bundles)).must();
    img
}

#[test]
fn officer_imports_activates_and_custody_refusals() {
    let disk = session::provisioned_disk("models").must();
    let cfg = VmConfig::direct("models", &Artifacts::locate())
        .must()
        .with_writable_disk(disk.path());
    let mut vm = Vm::boot(&cfg, timeout(240)).must();
    let work = vm.work_dir().to_path_buf();
    let img = bundle_stick(&work);
    vm.plug_stick(&img).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();

    // An operator may not import; the role is named.
    session::login(&mut vm, OPERATOR).must();
    let out = vm.command("import").must();
    assert!(
        out.contains("'import' needs the officer role; you are logged in as olga (operator)"),
        "{out}"
    );
    session::logout(&mut vm).must();

    session::login(&mut vm, OFFICER).must();
    session::send(&mut vm, "import").must();
    let list = vm
        .wait_for("Import which? (number, Enter to cancel): ", timeout(120))
        .must();
    let text = vm.console().transcript();
    assert!(
        text.contains("model tiny version 1 — signed by demo-models"),
        "{text}"
    );
    assert!(text.contains("unsigned_1.airlock — REFUSED:"), "{text}");
    drop(list);
    // Choosing the refused one: one line, nothing changes.
    session::send(&mut vm, "2").must();
    vm.wait_for("import refused:", timeout(60)).must();
    // Each next command only at the prompt (what is typed earlier is echoed
    // before the prompt and `command` would read the wrong answer).
    vm.wait_for(PROMPT, timeout(30)).must();
    session::send(&mut vm, "import").must();
    session::answer(&mut vm, "Import which? (number, Enter to cancel): ", "1").must();
    session::answer(&mut vm, "Type yes: ", "yes").must();
    vm.wait_for("imported model tiny version 1", timeout(300))
        .must();
    vm.wait_for(PROMPT, timeout(30)).must();
    let models = vm.command("models").must();
    assert!(models.contains("tiny (active: none)"), "{models}");
    assert!(models.contains("by otto"), "{models}");
    let out = vm.command("activate tiny").must();
    assert!(out.contains("tiny version 1 is active"), "{out}");
    let out = vm.command("remove tiny 1").must();
    assert!(out.contains("remove refused:"), "{out}");
    let models = vm.command("models").must();
    assert!(models.contains("tiny (active: 1)"), "{models}");
    session::logout(&mut vm).must();

    // The auditor sees every step.
    session::login(&mut vm, session::AUDITOR).must();
    let log = vm.command("audit show 30").must();
    for want in [
        "model-import",
        "model-activate",
        "model-remove",
        "bundle-refused",
    ] {
        assert!(log.contains(want), "audit show lacks {want}:\n{log}");
    }
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
}
