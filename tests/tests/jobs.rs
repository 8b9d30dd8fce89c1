//! Operator jobs end to end on the real image with the host's real gpg
//! (issue: operator jobs on GnuPG-encrypted documents). Three groups, each
//! on its own copy of the shared provisioned disk:
//!
//! - `documents_batch_faults_and_nothing_left_behind` (the tiny generated
//!   model): the officer exports the appliance's public keys; the host's
//!   gpg encrypts documents to it (plain, signed, armored); the operator
//!   runs them, every bad input of the issue is refused with its reason, a
//!   batch of 5 runs and runs again (skipped), a stick pulled mid-job
//!   leaves nothing and the next job works. On the host each answer
//!   decrypts with both admin recipients' keys (RSA-4096 and Curve25519)
//!   with a good signature by the appliance key, each receipt verifies with
//!   `airlock audit verify-receipt`, the batch summary's signature
//!   verifies, and a marker string of the documents is in neither the
//!   state partition, the stick image nor the console transcript.
//! - `no_model_and_worker_out_of_memory`: a job before any model is
//!   refused; under a worker memory limit too small for SmolLM2 the job
//!   fails with the out-of-memory reason, and the next job (on the tiny
//!   model, a document longer than the 512-token context the policy
//!   leaves) is split into parts whose answers are combined.
//! - `smollm2_summary_names_the_subject`: the real SmolLM2 summarizes a
//!   memo on a distinctive subject; the decrypted summary names it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::bundles::{self, make_stick, tiny_gguf, Packer, Signer};
use airlock_e2e::disk::find_marker;
use airlock_e2e::gpg::{self, GpgHome, Kind};
use airlock_e2e::session::{self, AUDITOR, OFFICER, OPERATOR};
use airlock_e2e::stick::{make_vfat_stick, read_vfat_stick};
use airlock_e2e::{timeout, Artifacts, Must, Pattern, Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

const SMOL: &str = "smollm2-135m-instruct";
const OPERATOR_PROMPT: &str = "airlock olga@operator> ";
const OFFICER_PROMPT: &str = "airlock otto@officer> ";
/// In every document of the first group; must never appear in clear.
const MARKER: &str = "QUARTZ-HERON-7731-CONFIDENTIAL";

/// A scratch directory for stick images (outside the VM's work
/// directory); removed when dropped unless the test failed.
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
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn smollm2_gguf() -> PathBuf {
    let out =
        bundles::run(Command::new(bundles::repo_root().join("scripts/fetch-model")).arg("smollm2"))
            .must();
    PathBuf::from(out.trim())
}

fn demo_keys(args: &[&str]) -> PathBuf {
    let out = bundles::run(Command::new(bundles::repo_root().join("scripts/demo-keys")).args(args))
        .must();
    PathBuf::from(out.trim())
}

/// A stick of model bundles: `models` as (name, gguf).
fn model_stick(scratch: &Scratch, file: &str, models: &[(&str, &Path)]) -> PathBuf {
    let packer = Packer::new(&scratch.path(&format!("{file}-bundles"))).must();
    let bundles: Vec<PathBuf> = models
        .iter()
        .map(|(name, gguf)| {
            packer
                .pack("model", name, 1, &[], &[gguf], Signer::Models)
                .must()
        })
        .collect();
    let img = scratch.path(file);
    make_stick(&img, "vfat", "MODELS", None, &bundles).must();
    img
}

/// The officer imports every bundle of the stick in `sda`, activates
/// `activate`, exports the public keys to the stick `keys_dev` and logs
/// out.
fn officer_setup(vm: &mut Vm, bundles: &[&str], activate: &[&str], keys_dev: &str) {
    session::login(vm, OFFICER).must();
    for name in bundles {
        let mark = vm.console().mark();
        session::send(vm, "import").must();
        vm.wait_for("Import which? (number, Enter to cancel): ", timeout(180))
            .must();
        let listing = vm.console().text_since(mark).must();
        let line = listing
            .lines()
            .find(|l| l.contains(&format!("model {name} version 1")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
        let n = line.trim_start().split(')').next().unwrap().to_string();
        session::send(vm, &n).must();
        session::answer(vm, "Type yes: ", "yes").must();
        vm.wait_for(format!("imported model {name} version 1"), timeout(900))
            .must();
        vm.wait_for(OFFICER_PROMPT, timeout(60)).must();
    }
    for name in activate {
        let out = vm
            .console()
            .command(&format!("activate {name}"), timeout(900))
            .must();
        assert!(
            out.contains(&format!("{name} version 1 is active")),
            "{out}"
        );
    }
    let out = vm.command(&format!("keys export {keys_dev}")).must();
    assert!(out.contains("public keys written to"), "{out}");
    session::logout(vm).must();
}

/// (document-key.asc, audit.pub) from a stick the keys were exported to.
fn exported_keys(image: &Path) -> (Vec<u8>, Vec<u8>) {
    let c = read_vfat_stick(image).must();
    let find = |suffix: &str| {
        c.files
            .iter()
            .find(|(n, _)| n.starts_with("airlock-keys-") && n.ends_with(suffix))
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no {suffix} on the keys stick: {:?}", c.files.keys()))
    };
    (find("/document-key.asc"), find("/audit.pub"))
}

/// Runs a job command; returns its output up to the prompt.
fn job(vm: &mut Vm, line: &str, secs: u64) -> String {
    vm.console().command(line, timeout(secs)).must()
}

/// The admin recipients' homes (RSA-4096 and Curve25519 demo keys).
fn admin_homes() -> Vec<(&'static str, PathBuf)> {
    ["admin-rsa", "admin-25519"]
        .into_iter()
        .map(|k| (k, demo_keys(&["gnupghome", k])))
        .collect()
}

/// Decrypts and verifies `answer` with every admin home; its plaintext.
fn open_answer(answer: &[u8], appliance_key: &[u8]) -> String {
    let mut text = None;
    for (name, dir) in admin_homes() {
        // A copy: gpg writes into its home (trustdb, the imported key).
        let copy = std::env::temp_dir()
            .join("airlock-e2e")
            .join(format!("gnupg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&copy);
        bundles::run(Command::new("cp").arg("-a").arg(&dir).arg(&copy)).must();
        let home = GpgHome::new(&copy).must();
        let v = home.decrypt_verify(answer, appliance_key).must();
        assert!(v.good_sig && v.good_mdc, "{name}: {:?}", v.status);
        assert!(
            v.packets.pkesk.iter().all(|p| p.version == 3),
            "{name}: {:?}",
            v.packets.pkesk
        );
        let t = String::from_utf8(v.plaintext.clone()).must();
        if let Some(prev) = &text {
            assert_eq!(prev, &t, "{name} decrypts to another text");
        }
        text = Some(t);
        drop(home);
        let _ = std::fs::remove_dir_all(&copy);
    }
    text.unwrap()
}

/// `airlock audit verify-receipt` on the host.
fn verify_receipt(scratch: &Scratch, receipt: &[u8], answer: &[u8], audit_pub: &[u8]) -> String {
    let r = scratch.path("receipt");
    let a = scratch.path("answer.gpg");
    let k = scratch.path("audit.pub");
    std::fs::write(&r, receipt).must();
    std::fs::write(&a, answer).must();
    std::fs::write(&k, audit_pub).must();
    bundles::run(
        Command::new(bundles::release_bin("airlock").must())
            .args(["audit", "verify-receipt"])
            .arg(&r)
            .arg("--key")
            .arg(&k)
            .arg("--answer")
            .arg(&a),
    )
    .must()
}

#[test]
fn documents_batch_faults_and_nothing_left_behind() {
    let scratch = Scratch::new("jobs-docs");
    let gguf = scratch.path("tiny.gguf");
    tiny_gguf(&gguf, 21).must();
    let models = model_stick(&scratch, "models.img", &[("tiny", &gguf)]);
    let keys = scratch.path("keys.img");
    make_vfat_stick(&keys, "KEYS", 16, &[]).must();

    let disk = session::provisioned_disk("jobs-docs").must();
    let cfg = VmConfig::direct("jobs-docs", &Artifacts::locate())
        .must()
        .with_writable_disk(disk.path());
    let mut vm = Vm::boot(&cfg, timeout(240)).must();
    let models_stick = vm.plug_stick(&models).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    let keys_stick = vm.plug_stick(&keys).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    officer_setup(&mut vm, &["tiny"], &["tiny"], "sdb");
    vm.unplug_stick(&keys_stick).must();
    vm.unplug_stick(&models_stick).must();
    let (appliance_key, audit_pub) = exported_keys(&keys);

    // The host: documents encrypted to the appliance's key by stock gpg.
    let host = GpgHome::temp().must();
    let fpr = host.import_bytes(&appliance_key).must().remove(0);
    let sender = host
        .generate(Kind::Curve25519, "Sender <s@example.org>")
        .must();
    let doc = |n: usize| {
        format!(
            "Report {n} of the harbour office.\n\nReference {MARKER}.\n\n\
             The crane on pier {n} needs new cables before winter.\n"
        )
        .into_bytes()
    };
    let (other_msg, _) = host.encrypt_to_other_key(&doc(0)).must();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("report.txt.gpg".into(), host.encrypt(&doc(1), &fpr).must()),
        (
            "signed.txt.gpg".into(),
            host.sign_encrypt(&doc(2), &fpr, &sender).must(),
        ),
        (
            "armored.txt.asc".into(),
            host.encrypt_armored(&doc(3), &fpr).must(),
        ),
        ("pulled.txt.gpg".into(), host.encrypt(&doc(4), &fpr).must()),
        ("next.txt.gpg".into(), host.encrypt(&doc(5), &fpr).must()),
        ("garbage.gpg".into(), gpg::garbage(4096)),
        (
            "nomdc.gpg".into(),
            host.encrypt_no_mdc(&doc(6), &fpr).must(),
        ),
        ("other.gpg".into(), other_msg),
        (
            "signonly.gpg".into(),
            host.sign_only(&doc(7), &sender).must(),
        ),
        ("bomb.gpg".into(), host.compression_bomb(&fpr).must()),
        ("binary.gpg".into(), host.encrypt_binary(&fpr).must()),
        // Read while the stick is pulled (a valid size; garbage if read whole).
        ("huge.gpg".into(), gpg::garbage(60 << 20)),
        (
            "big.gpg".into(),
            host.encrypt_oversized(&fpr, (gpg::MAX_DOCUMENT + (1 << 20)) as usize)
                .must(),
        ),
    ];
    for (i, n) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let body = if *n == "c" {
            gpg::garbage(1000)
        } else {
            host.encrypt(&doc(10 + i), &fpr).must()
        };
        files.push((format!("inbox/{n}.gpg"), body));
    }
    let docs = scratch.path("docs.img");
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    make_vfat_stick(&docs, "DOCS", 256, &refs).must();
    let docs_stick = vm.plug_stick(&docs).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();

    session::login(&mut vm, OPERATOR).must();
    let out = vm.command("status").must();
    assert!(out.contains("recipients: "), "{out}");
    // Good documents: plain, signed+encrypted, armored.
    for name in ["report.txt.gpg", "signed.txt.gpg", "armored.txt.asc"] {
        let out = job(&mut vm, &format!("run {name}"), 900);
        assert!(
            out.contains(" done: ") && out.contains("input SHA-256 "),
            "{name}:\n{out}"
        );
        assert!(
            out.contains("task summarize, model tiny version 1"),
            "{out}"
        );
        assert!(!out.contains(MARKER), "{out}");
    }
    // Every bad input: its reason, nothing written.
    let refusals: &[(&str, &str)] = &[
        ("garbage.gpg", "refused: not an OpenPGP message"),
        ("nomdc.gpg", "refused: no integrity protection (MDC)"),
        (
            "other.gpg",
            "not encrypted to this appliance's key (recipients: ",
        ),
        (
            "signonly.gpg",
            "refused: signed but not encrypted (a signed-only message)",
        ),
        (
            "bomb.gpg",
            "refused: decompressed size exceeds 67108864 bytes",
        ),
        ("binary.gpg", "refused: the document is not UTF-8 text"),
        ("big.gpg", "more than the limit of 67108864 bytes"),
        (
            "report.txt.gpg",
            "report.txt.answer.gpg already exists on sd",
        ),
        ("missing.gpg", "no file missing.gpg on the stick"),
    ];
    for (name, why) in refusals {
        let out = job(&mut vm, &format!("run {name}"), 600);
        assert!(
            out.contains(why) && out.contains("refused: ") && out.contains("nothing was written"),
            "{name}: want …{why}…:\n{out}"
        );
    }
    // A batch of 5 (one of them garbage), then again: all skipped.
    let out = job(&mut vm, "batch inbox", 1800);
    assert!(out.contains("batch: document 5 of 5: e.gpg"), "{out}");
    assert!(
        out.contains("batch done: 5 document(s): 4 done, 0 skipped (answer already there and valid), 1 refused, 0 failed"),
        "{out}"
    );
    let out = job(&mut vm, "batch inbox", 600);
    assert!(
        out.contains("batch done: 5 document(s): 0 done, 4 skipped (answer already there and valid), 1 refused, 0 failed"),
        "{out}"
    );
    // The stick pulled while the document is read: the read fails (or, if
    // the 60 MiB were read before the pull took effect, the garbage is
    // refused); nothing written either way.
    session::send(&mut vm, "run huge.gpg").must();
    vm.wait_for("huge.gpg on sd", timeout(60)).must();
    vm.unplug_stick(&docs_stick).must();
    let m = vm
        .wait_for(
            Pattern::regex(r"job \d+ (refused|failed): [^\n]*nothing was written").must(),
            timeout(300),
        )
        .must();
    eprintln!("stick pulled mid-read: {}", m.text);
    assert!(
        m.text.contains("(stick pulled?)") || m.text.contains("not an OpenPGP message"),
        "{}",
        m.text
    );
    vm.wait_for(OPERATOR_PROMPT, timeout(60)).must();
    let docs_stick = vm.plug_stick(&docs).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    // The stick pulled mid-job (before the answer is written): nothing
    // written, the next job works.
    session::send(&mut vm, "run pulled.txt.gpg").must();
    vm.wait_for(
        "loading the model in a fresh sandboxed worker",
        timeout(300),
    )
    .must();
    vm.unplug_stick(&docs_stick).must();
    let m = vm
        .wait_for(
            Pattern::regex(r"job \d+ failed: [^\n]*nothing was written").must(),
            timeout(600),
        )
        .must();
    vm.wait_for(OPERATOR_PROMPT, timeout(60)).must();
    let docs_stick = vm.plug_stick(&docs).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    let out = job(&mut vm, "run next.txt.gpg", 900);
    assert!(out.contains(" done: "), "after {:?}:\n{out}", m.text);
    // The stick by name: the pulled one may still be listed until its dead
    // mount is let go (see docs/operator.md).
    let dev = Pattern::regex(r"written to (sd[a-z]+)").must();
    let dev = dev
        .find(&out)
        .unwrap_or_else(|| panic!("no device:\n{out}"));
    let out = job(&mut vm, &format!("eject {}", dev.group(1)), 60);
    assert!(out.contains("can be pulled now"), "{out}");
    session::logout(&mut vm).must();
    vm.unplug_stick(&docs_stick).must();
    // Every job, refused or failed too, is in the audit log with its reason.
    session::login(&mut vm, AUDITOR).must();
    let log = job(&mut vm, "audit show 80", 60);
    for (result, code, at_least) in [
        ("ok", "task=summarize", 8),
        ("refused", "document-refused", 6),
        ("refused", "input-refused", 2),
        ("refused", "answer-exists", 1),
        ("failed", "stick-write-failed", 1),
    ] {
        let re = Pattern::regex(&format!(r"olga +operator +job +{result} +{code}")).must();
        let n = log.lines().filter(|l| re.find(l).is_some()).count();
        assert!(
            n >= at_least,
            "{n} job {result} {code} entries, want {at_least}:\n{log}"
        );
    }
    assert!(!log.contains(MARKER), "the marker reached the audit log");
    session::logout(&mut vm).must();
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
    let transcript = vm.console().transcript();
    drop(vm);

    // On the host: answers, receipts, the batch summary.
    let c = read_vfat_stick(&docs).must();
    let names: Vec<&String> = c.files.keys().collect();
    assert!(
        !names.iter().any(|n| n.contains(".partial")),
        "half-written files: {names:?}"
    );
    for bad in [
        "garbage", "nomdc", "other", "signonly", "bomb", "binary", "big", "huge", "pulled",
    ] {
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with(&format!("{bad}.answer"))),
            "{bad} has an answer: {names:?}"
        );
    }
    for (stem, input) in [
        ("report.txt", "report.txt.gpg"),
        ("signed.txt", "signed.txt.gpg"),
        ("armored.txt", "armored.txt.asc"),
        ("next.txt", "next.txt.gpg"),
        ("inbox/a", "inbox/a.gpg"),
        ("inbox/e", "inbox/e.gpg"),
    ] {
        let answer = &c.files[&format!("{stem}.answer.gpg")];
        let receipt = &c.files[&format!("{stem}.answer.receipt")];
        let text = open_answer(answer, &appliance_key);
        assert!(
            text.starts_with("Airlock answer (job ") && text.contains("Task: summarize"),
            "{stem}: {text}"
        );
        assert!(text.contains("Model: tiny version 1"), "{text}");
        let v = verify_receipt(&scratch, receipt, answer, &audit_pub);
        assert!(v.contains("summarize"), "{stem}: {v}");
        // The receipt names this input, as it is on the stick.
        let inp = scratch.path("input");
        std::fs::write(&inp, &c.files[input]).must();
        let sum = bundles::run(Command::new("sha256sum").arg(&inp)).must();
        let sha = sum.split_whitespace().next().unwrap();
        assert!(v.contains(&format!("sha256 {sha}")), "{stem}: {v}");
        assert!(v.contains("matches the output ciphertext's SHA-256"), "{v}");
    }
    assert!(!c.files.contains_key("inbox/c.answer.gpg"));
    let (summary_name, summary) = c
        .files
        .iter()
        .find(|(n, _)| n.starts_with("inbox/batch-") && n.ends_with(".summary.json"))
        .map(|(n, b)| (n.clone(), b.clone()))
        .expect("no batch summary");
    let sig = &c.files[&format!("{summary_name}.asc")];
    let sig_path = scratch.path("summary.json.asc");
    let data_path = scratch.path("summary.json");
    std::fs::write(&sig_path, sig).must();
    std::fs::write(&data_path, &summary).must();
    let st = host
        .command()
        .args(["--status-fd", "1", "--verify"])
        .arg(&sig_path)
        .arg(&data_path)
        .output()
        .must();
    let status = String::from_utf8_lossy(&st.stdout);
    assert!(
        status.contains("[GNUPG:] GOODSIG") && status.contains(&fpr),
        "batch summary signature: {status}"
    );
    let json: serde_json::Value = serde_json::from_slice(&summary).must();
    assert_eq!(json["schema"], "airlock-batch/1");
    assert_eq!(json["items"].as_array().map(Vec::len), Some(5), "{json}");

    // Nothing left behind: the marker is nowhere in clear.
    assert_eq!(find_marker(disk.path(), MARKER.as_bytes()).must(), None);
    assert_eq!(find_marker(&docs, MARKER.as_bytes()).must(), None);
    assert!(
        !transcript.contains(MARKER),
        "the marker reached the console"
    );
}

#[test]
fn no_model_and_worker_out_of_memory() {
    let scratch = Scratch::new("jobs-oom");
    let gguf = scratch.path("tiny.gguf");
    tiny_gguf(&gguf, 22).must();
    let smol = smollm2_gguf();
    let models = model_stick(&scratch, "models.img", &[("tiny", &gguf), (SMOL, &smol)]);
    let keys = scratch.path("keys.img");
    make_vfat_stick(&keys, "KEYS", 16, &[]).must();

    let disk = session::provisioned_disk("jobs-oom").must();
    // A worker memory limit the tiny model fits in and SmolLM2 does not.
    let cfg = VmConfig::direct("jobs-oom", &Artifacts::locate())
        .must()
        .with_writable_disk(disk.path())
        .with_append(&format!(
            "airlock.policy.job_memory_mib={OOM_LIMIT_MIB} \
             airlock.policy.job_context_tokens=512 airlock.policy.job_answer_tokens=32"
        ));
    let mut vm = Vm::boot(&cfg, timeout(240)).must();
    // No model yet: refused before anything is read.
    session::login(&mut vm, OPERATOR).must();
    let out = job(&mut vm, "run report.txt.gpg", 120);
    assert!(
        out.contains("run refused: no active model: an officer imports and activates one"),
        "{out}"
    );
    session::logout(&mut vm).must();

    let models_stick = vm.plug_stick(&models).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    let keys_stick = vm.plug_stick(&keys).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    officer_setup(&mut vm, &["tiny", SMOL], &["tiny", SMOL], "sdb");
    vm.unplug_stick(&keys_stick).must();
    vm.unplug_stick(&models_stick).must();
    let (appliance_key, _) = exported_keys(&keys);
    let host = GpgHome::temp().must();
    let fpr = host.import_bytes(&appliance_key).must().remove(0);
    let docs = scratch.path("docs.img");
    let one = host
        .encrypt(b"A short note about the weather.\n", &fpr)
        .must();
    // Longer than the 512-token context the policy leaves: split in parts.
    let long: String = (1..=12)
        .map(|i| {
            format!(
                "Paragraph {i}. The tide tables of the harbour were checked on day {i}; \
                 the pilots report that the channel is deep enough for the ferries, \
                 and the buoys are in place.\n\n"
            )
        })
        .collect();
    let two = host.encrypt(long.as_bytes(), &fpr).must();
    make_vfat_stick(&docs, "DOCS", 16, &[("one.gpg", &one), ("two.gpg", &two)]).must();
    vm.plug_stick(&docs).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();

    session::login(&mut vm, OPERATOR).must();
    let out = job(&mut vm, "run one.gpg", 120);
    assert!(out.contains("2 models are active"), "{out}");
    let out = job(&mut vm, &format!("run one.gpg --model {SMOL}"), 900);
    assert!(
        out.contains("failed: ")
            && out.contains(&format!(
                "the worker ran out of memory (address-space limit {OOM_LIMIT_MIB} MiB)"
            ))
            && out.contains("nothing was written"),
        "{out}"
    );
    let out = job(&mut vm, "run two.gpg --model tiny", 900);
    assert!(out.contains(" done: "), "{out}");
    let parts = Pattern::regex(r"split into (\d+) parts of at most \d+ tokens").must();
    let m = parts
        .find(&out)
        .unwrap_or_else(|| panic!("not split:\n{out}"));
    let n: usize = m.group(1).parse().unwrap();
    assert!(n >= 2, "{out}");
    assert!(out.contains(&format!("part {n} of {n} done: ")), "{out}");
    assert!(
        out.contains(&format!("combining {n} partial answers")),
        "{out}"
    );
    session::logout(&mut vm).must();
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
    drop(vm);
    let names = airlock_e2e::stick::list_vfat_stick(&docs).must();
    assert!(names.contains(&"two.answer.gpg".to_string()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("one.answer") || n.contains("partial")),
        "{names:?}"
    );
}

/// Between what the tiny model's worker needs and what SmolLM2's needs
/// (measured on the host: the tiny model runs under 256 MiB, SmolLM2
/// aborts on allocation under 512 MiB and runs under 768 MiB).
const OOM_LIMIT_MIB: u64 = 448;

#[test]
fn smollm2_summary_names_the_subject() {
    let scratch = Scratch::new("jobs-smol");
    let smol = smollm2_gguf();
    let models = model_stick(&scratch, "models.img", &[(SMOL, &smol)]);
    let keys = scratch.path("keys.img");
    make_vfat_stick(&keys, "KEYS", 16, &[]).must();
    let disk = session::provisioned_disk("jobs-smol").must();
    // A short answer keeps the job to a few minutes under TCG (~0.3-0.8
    // tokens/s); the subject is named at its start.
    let cfg = VmConfig::direct("jobs-smol", &Artifacts::locate())
        .must()
        .with_writable_disk(disk.path())
        .with_append("airlock.policy.job_answer_tokens=48");
    let mut vm = Vm::boot(&cfg, timeout(240)).must();
    let models_stick = vm.plug_stick(&models).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    let keys_stick = vm.plug_stick(&keys).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    officer_setup(&mut vm, &[SMOL], &[SMOL], "sdb");
    vm.unplug_stick(&keys_stick).must();
    vm.unplug_stick(&models_stick).must();
    let (appliance_key, _) = exported_keys(&keys);
    let host = GpgHome::temp().must();
    let fpr = host.import_bytes(&appliance_key).must().remove(0);
    let memo = std::fs::read(bundles::repo_root().join("docs/examples/demo-document.txt")).must();
    let docs = scratch.path("docs.img");
    let msg = host.encrypt(&memo, &fpr).must();
    make_vfat_stick(&docs, "DOCS", 16, &[("memo.txt.gpg", &msg)]).must();
    vm.plug_stick(&docs).must();
    vm.wait_for("[usb] stick inserted", timeout(60)).must();
    session::login(&mut vm, OPERATOR).must();
    let started = std::time::Instant::now();
    let out = job(&mut vm, "run memo.txt.gpg", 3600);
    assert!(out.contains(" done: "), "{out}");
    eprintln!(
        "figure: smollm2 summary job under TCG: {:.0} s\n{out}",
        started.elapsed().as_secs_f64()
    );
    session::logout(&mut vm).must();
    session::send(&mut vm, "poweroff").must();
    vm.wait_exit(timeout(120)).must();
    drop(vm);
    let answer = airlock_e2e::stick::read_vfat_file(&docs, "memo.txt.answer.gpg")
        .must()
        .expect("no answer on the stick");
    let text = open_answer(&answer, &appliance_key);
    eprintln!("SmolLM2's answer:\n{text}");
    let body = text.split("\n\n").skip(1).collect::<Vec<_>>().join("\n\n");
    assert!(
        body.to_lowercase().contains("lighthouse"),
        "the summary does not name the subject (lighthouse):\n{text}"
    );
}
