//! The update officer's model import at the console, end to end on the
//! real image: a tiny generated model packed and signed on the host with
//! the DEMO models key (the demo image trusts it), on a FAT stick with a
//! second, unsigned bundle; the officer sees both, the unsigned one
//! refused with its reason; imports the signed one with a progress line,
//! activates it, and cannot remove the active version; an operator cannot
//! import.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::session::{self, OFFICER, OPERATOR};
use airlock_e2e::{timeout, Artifacts, Must, Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The officer's prompt.
const PROMPT: &str = "airlock otto@officer> ";

fn release_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().must();
    let release = exe.parent().and_then(Path::parent).unwrap();
    let bin = release.join(name);
    assert!(bin.exists(), "not built: {}", bin.display());
    bin
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().must();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A FAT stick with `tiny_1.airlock` (signed by the DEMO models key) and
/// `unsigned_1.airlock` (no signature).
fn bundle_stick(work: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let keys = run(Command::new(root.join("scripts/demo-keys")).arg("dir"));
    let keys = PathBuf::from(keys.trim());
    let airlock = release_bin("airlock");
    let files = work.join("files");
    let stick = work.join("stick");
    let _ = std::fs::remove_dir_all(&stick);
    std::fs::create_dir_all(&files).must();
    std::fs::create_dir_all(&stick).must();
    let gguf = files.join("model.gguf");
    run(Command::new(release_bin("airlock-modelgen"))
        .args(["--preset", "tiny", "--seed", "7", "--out"])
        .arg(&gguf));
    for (name, sign) in [("tiny", true), ("unsigned", false)] {
        let bundle = stick.join(format!("{name}_1.airlock"));
        run(Command::new(&airlock)
            .args([
                "bundle",
                "pack",
                "--kind",
                "model",
                "--name",
                name,
                "--version",
                "1",
                "-o",
            ])
            .arg(&bundle)
            .arg(&gguf));
        if sign {
            run(Command::new(&airlock)
                .args(["bundle", "sign"])
                .arg(&bundle)
                .arg("--key")
                .arg(keys.join("demo-models.key")));
        }
    }
    let img = work.join("bundles.img");
    run(Command::new(root.join("scripts/make-stick"))
        .args(["--superfloppy", "--label", "BUNDLES"])
        .arg(&img)
        .arg(stick.join("tiny_1.airlock"))
        .arg(stick.join("unsigned_1.airlock")));
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
