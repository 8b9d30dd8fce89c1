//! UEFI Secure Boot end to end: the image built with
//! `scripts/build-image --demo --sb-demo` (systemd-boot and the UKI signed
//! with sbsign by the DEMO db key of `scripts/demo-keys secureboot`) booted
//! by OVMF's Secure Boot build with the DEMO PK, KEK and db enrolled
//! (`scripts/lib/secureboot.sh ovmf-vars`, virt-fw-vars), against copies of
//! its disk whose ESP was tampered with as an evil maid would.
//!
//! - `secure_boot_boots_signed_and_refuses_tampered`: one build (into a
//!   temporary directory, from the prebuilt binaries), its signatures checked
//!   with sbverify, the signing shown deterministic (signing time = the
//!   build's epoch; re-signing the stripped UKI later gives the same bytes),
//!   the signed UKI packed as a system bundle; the keys enrolled the way
//!   docs/security-team.md tells a security team to (`.auth` files and
//!   systemd-boot's `secure-boot-enroll` in setup mode) give the same PK,
//!   KEK and db as the store the boots use; then a table of boots: the
//!   signed image boots to the console; an unsigned UKI, a UKI with one byte
//!   changed after signing, and an unsigned systemd-boot are refused (the
//!   refusal on the console, the firmware ends with no bootable option, the
//!   supervisor never starts); the changed UKI re-signed with the db key
//!   boots, and since its change removed `quiet` the EFI stub and the kernel
//!   say on the console that Secure Boot is enabled.
//! - `build_image_refuses_bad_secure_boot_input`: each bad `--sb-*` input
//!   stops `build-image` with its one-line reason, before any long step,
//!   leaving the output directory as it was; `secureboot.sh sign` refuses a
//!   signed input and signs deterministically.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_e2e::bundles::{self, release_bin, repo_root};
use airlock_e2e::figures::{publish, Figure};
use airlock_e2e::qemu::OVMF_VARS;
use airlock_e2e::{timeout, Boot, Must, Pattern, Vm, VmConfig, CONSOLE_READY};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// OVMF → systemd-boot → UKI → console under TCG (with SMM: slower).
const BOOT_SECS: u64 = 600;
/// Firmware start to "no bootable option" after a refusal.
const REFUSAL_SECS: u64 = 300;
/// The build's `SOURCE_DATE_EPOCH` (AIRLOCK_BUILD_EPOCH): 2026-01-01 00:00:00 UTC.
const EPOCH: u64 = 1_767_225_600;
/// `signingTime` of a signature made at [`EPOCH`], as `openssl pkcs7 -print` shows it.
const EPOCH_UTCTIME: &str = "UTCTIME:Jan  1 00:00:00 2026 GMT";
/// Offset of the ESP in the disk image (ESP_START_MIB of image/partitions.sh), for mtools.
const ESP_AT: &str = "@@1M";
/// The UKI of slot A on the ESP, with systemd-boot's boot counter.
const ESP_UKI: &str = "::/EFI/Linux/airlock-a+3.efi";
/// The two systemd-boot copies on the ESP (the firmware starts the first).
const ESP_BOOTLOADERS: [&str; 2] = [
    "::/EFI/BOOT/BOOTX64.EFI",
    "::/EFI/systemd/systemd-bootx64.efi",
];
/// Debian's unsigned systemd-boot, as build-image copies it without --sb-*.
const SDBOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// OVMF's last word after every boot option failed.
const NO_BOOTABLE: &str = "BdsDxe: No bootable option or device was found.";
/// The supervisor's banner line after `Airlock <version> (slot a)`.
const BANNER: &str = "Air-gapped LLM appliance.";

fn figure(name: &'static str, value: String, note: &str) -> Figure {
    Figure {
        name,
        value,
        note: note.into(),
    }
}

fn secs(since: Instant) -> String {
    format!("{:.1} s", since.elapsed().as_secs_f64())
}

fn script(path: &str) -> Command {
    Command::new(repo_root().join(path))
}

/// `scripts/lib/secureboot.sh sign KEY CERT IN OUT`; the caller adds an epoch.
fn sign_cmd(key: &Path, cert: &Path, input: &Path, output: &Path) -> Command {
    let mut c = script("scripts/lib/secureboot.sh");
    c.arg("sign").arg(key).arg(cert).arg(input).arg(output);
    c
}

/// The DEMO Secure Boot key directory (PK, KEK, db: `.key`, `.crt`).
fn demo_sb_keys() -> PathBuf {
    PathBuf::from(
        bundles::run(script("scripts/demo-keys").arg("secureboot"))
            .must()
            .trim(),
    )
}

/// `sbverify --cert CERT FILE` succeeds.
fn sbverify(cert: &Path, file: &Path) -> bool {
    Command::new("sbverify")
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .must()
        .status
        .success()
}

/// Copies `from` (an mtools path on the ESP of `disk`) to the file `to`.
fn esp_get(disk: &Path, from: &str, to: &Path) {
    let img = format!("{}{ESP_AT}", disk.display());
    bundles::run(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-n", "-i", &img, from])
            .arg(to),
    )
    .must();
}

/// Overwrites `to` (an mtools path on the ESP of `disk`) with the file `from`.
fn esp_put(disk: &Path, from: &Path, to: &str) {
    let img = format!("{}{ESP_AT}", disk.display());
    bundles::run(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i", &img])
            .arg(from)
            .arg(to),
    )
    .must();
}

/// A sparse copy of the disk image `from` at `to`.
fn copy_disk(from: &Path, to: &Path) {
    bundles::run(Command::new("cp").arg("--sparse=always").arg(from).arg(to)).must();
}

/// The `signingTime` of the Authenticode signature of `file`, as `openssl
/// pkcs7 -print` shows it (`UTCTIME:...`).
fn signing_time(file: &Path, work: &Path) -> String {
    let p7 = work.join("signature.p7");
    let _ = std::fs::remove_file(&p7);
    bundles::run(Command::new("sbattach").arg("--detach").arg(&p7).arg(file)).must();
    let text = bundles::run(
        Command::new("openssl")
            .args(["pkcs7", "-inform", "der", "-print", "-in"])
            .arg(&p7),
    )
    .must();
    let mut lines = text.lines().skip_while(|l| !l.contains("signingTime"));
    lines
        .find(|l| l.contains("UTCTIME:"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("no signingTime in the signature of {}", file.display()))
}

/// The owner GUID of the demo keys' lists (SECUREBOOT_DEMO_GUID of
/// scripts/lib/secureboot.sh, which `ovmf-vars` enrols them with).
const DEMO_GUID: &str = "a1e1ab0c-5ec0-4b00-8a1b-000000000001";

/// Enrols the DEMO PK, KEK and db as docs/security-team.md tells a security
/// team to: `cert-to-efi-sig-list` and `sign-efi-sig-list` (PK and KEK
/// signed by PK, db by KEK) make `NAME.esl` and `NAME.auth` in `work`; a FAT
/// stick holds systemd-boot as `EFI/BOOT/BOOTX64.EFI`, the `.auth` files in
/// `loader/keys/airlock/` and `secure-boot-enroll force`; OVMF's Secure Boot
/// build with an empty store (setup mode) boots it, systemd-boot enrols and
/// restarts (QEMU exits: `-no-reboot`). Returns a copy of the store.
fn enrol_with_systemd_boot(keys: &Path, work: &Path) -> PathBuf {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("EFI/BOOT/BOOTX64.EFI".into(), std::fs::read(SDBOOT).must()),
        (
            "loader/loader.conf".into(),
            b"secure-boot-enroll force\n".to_vec(),
        ),
    ];
    for (name, signer) in [("PK", "PK"), ("KEK", "PK"), ("db", "KEK")] {
        let esl = work.join(format!("{name}.esl"));
        let auth = work.join(format!("{name}.auth"));
        bundles::run(
            Command::new("cert-to-efi-sig-list")
                .args(["-g", DEMO_GUID])
                .arg(keys.join(format!("{name}.crt")))
                .arg(&esl),
        )
        .must();
        bundles::run(
            Command::new("sign-efi-sig-list")
                .args(["-g", DEMO_GUID, "-k"])
                .arg(keys.join(format!("{signer}.key")))
                .arg("-c")
                .arg(keys.join(format!("{signer}.crt")))
                .arg(name)
                .arg(&esl)
                .arg(&auth),
        )
        .must();
        files.push((
            format!("loader/keys/airlock/{name}.auth"),
            std::fs::read(&auth).must(),
        ));
    }
    let stick = work.join("enrol-stick.img");
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    airlock_e2e::stick::make_vfat_stick(&stick, "ENROL", 16, &refs).must();
    let config = VmConfig::new(
        "secureboot-enrol",
        Boot::Disk {
            image: stick.clone(),
        },
    )
    .with_secure_boot(Path::new(OVMF_VARS))
    .with_iommu(false);
    let mut vm = Vm::start(&config).must();
    let done = vm
        .wait_for(
            "Custom Secure Boot keys successfully enrolled",
            timeout(REFUSAL_SECS),
        )
        .and_then(|_| vm.wait_exit(timeout(120)));
    if let Err(e) = done {
        vm.dump();
        panic!("enrolment with systemd-boot: {e}");
    }
    let store = work.join("enrolled-vars.fd");
    std::fs::copy(vm.work_file("OVMF_VARS.fd"), &store).must();
    store
}

/// What a boot must show.
enum Want {
    /// The supervisor's console comes up; each line must be on the console.
    Boots(&'static [&'static str]),
    /// Refused: the regex matches the console, the firmware runs out of boot
    /// options, nothing of Linux or the supervisor appears.
    Refused(&'static str),
}

struct Case {
    name: &'static str,
    disk: PathBuf,
    want: Want,
}

#[test]
fn secure_boot_boots_signed_and_refuses_tampered() {
    let t_all = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("airlock-e2e-secureboot-")
        .tempdir()
        .must();
    let work = work.path();
    let keys = demo_sb_keys();
    let db = keys.join("db.crt");

    // ------------------------------------------------------------ build
    let t = Instant::now();
    let build = work.join("build");
    bundles::run(
        script("scripts/build-image")
            .args(["--demo", "--sb-demo", "--skip-cargo", "--out"])
            .arg(&build)
            .env("AIRLOCK_BUILD_EPOCH", EPOCH.to_string()),
    )
    .must();
    let build_time = secs(t);
    let uki = build.join("airlock.efi");
    let image = build.join("airlock.img");

    // Everything the firmware starts is signed by db (and only db's key
    // verifies it: sbverify can say no).
    assert!(sbverify(&db, &uki), "airlock.efi is not signed by db");
    assert!(
        !sbverify(&keys.join("KEK.crt"), &uki),
        "sbverify accepts airlock.efi with the KEK certificate"
    );
    let esp_uki = work.join("esp-uki.efi");
    esp_get(&image, ESP_UKI, &esp_uki);
    assert!(
        std::fs::read(&esp_uki).must() == std::fs::read(&uki).must(),
        "slot A on the ESP is not out/airlock.efi"
    );
    for (i, path) in ESP_BOOTLOADERS.iter().enumerate() {
        let f = work.join(format!("esp-boot{i}.efi"));
        esp_get(&image, path, &f);
        assert!(sbverify(&db, &f), "{path} on the ESP is not signed by db");
    }

    // Deterministic signatures: the signing time is the build's epoch, and
    // the UKI stripped of its signature and signed again now (another wall
    // clock time) is the same file, byte for byte.
    assert_eq!(signing_time(&uki, work), EPOCH_UTCTIME);
    let unsigned = work.join("unsigned.efi");
    std::fs::copy(&uki, &unsigned).must();
    bundles::run(Command::new("sbattach").arg("--remove").arg(&unsigned)).must();
    assert!(
        !sbverify(&db, &unsigned),
        "sbattach --remove left a signature"
    );
    let resigned = work.join("resigned.efi");
    bundles::run(sign_cmd(&keys.join("db.key"), &db, &unsigned, &resigned).arg(EPOCH.to_string()))
        .must();
    assert!(
        std::fs::read(&resigned).must() == std::fs::read(&uki).must(),
        "signing the same UKI again gave other bytes"
    );
    let (signed_len, unsigned_len) = (
        std::fs::metadata(&uki).must().len(),
        std::fs::metadata(&unsigned).must().len(),
    );

    // A system bundle carries the signed UKI; `pack` reads its .osrel
    // (version 1, variant demo) through the certificate table.
    let bundle = work.join("airlock_1.airlock");
    let said = bundles::run(
        Command::new(release_bin("airlock").must())
            .args(["bundle", "pack", "--kind", "system", "--name", "airlock"])
            .arg("--from-build")
            .arg(&build)
            .arg("-o")
            .arg(&bundle),
    )
    .must();
    assert!(
        said.contains("system airlock.efi version 1: variant demo"),
        "{said}"
    );
    assert!(
        std::fs::read(bundle.join("airlock.efi")).must() == std::fs::read(&uki).must(),
        "the bundle's airlock.efi is not the signed UKI"
    );

    // ---------------------------------------------------- tampered disks
    // An unsigned UKI in slot A.
    let unsigned_uki = work.join("unsigned-uki.img");
    copy_disk(&image, &unsigned_uki);
    esp_put(&unsigned_uki, &unsigned, ESP_UKI);
    // One byte of the signed UKI's command line changed: `quiet` → `Quiet`
    // (the kernel then logs to the console, and ignores the unknown word).
    let mut bytes = std::fs::read(&uki).must();
    let (at, len) = airlock_e2e::disk::pe_section(&bytes, b".cmdline");
    let quiet = bytes[at..at + len]
        .windows(6)
        .position(|w| w == b" quiet")
        .expect("no ` quiet` on the UKI's command line")
        + at
        + 1;
    bytes[quiet] = b'Q';
    let altered = work.join("altered.efi");
    std::fs::write(&altered, &bytes).must();
    assert!(!sbverify(&db, &altered), "sbverify accepts the altered UKI");
    let altered_uki = work.join("altered-uki.img");
    copy_disk(&image, &altered_uki);
    esp_put(&altered_uki, &altered, ESP_UKI);
    // The same change, signed with the db key (the key holder's own build).
    let altered_unsigned = work.join("altered-unsigned.efi");
    std::fs::copy(&altered, &altered_unsigned).must();
    bundles::run(
        Command::new("sbattach")
            .arg("--remove")
            .arg(&altered_unsigned),
    )
    .must();
    let altered_signed = work.join("altered-signed.efi");
    bundles::run(&mut sign_cmd(
        &keys.join("db.key"),
        &db,
        &altered_unsigned,
        &altered_signed,
    ))
    .must();
    let resigned_uki = work.join("altered-resigned-uki.img");
    copy_disk(&image, &resigned_uki);
    esp_put(&resigned_uki, &altered_signed, ESP_UKI);
    // Debian's unsigned systemd-boot in both places.
    let unsigned_loader = work.join("unsigned-loader.img");
    copy_disk(&image, &unsigned_loader);
    for path in ESP_BOOTLOADERS {
        esp_put(&unsigned_loader, Path::new(SDBOOT), path);
    }

    // ------------------------------------------------------------ boots
    let vars = work.join("sb-vars.fd");
    bundles::run(
        script("scripts/lib/secureboot.sh")
            .arg("ovmf-vars")
            .arg(keys.join("PK.crt"))
            .arg(keys.join("KEK.crt"))
            .arg(&db)
            .arg(&vars),
    )
    .must();
    // The manual's way (docs/security-team.md, "Secure Boot keys"): signed
    // EFI signature lists (.auth, efitools) on a stick with systemd-boot's
    // `secure-boot-enroll force`, booted by the firmware in setup mode (an
    // empty store), enrol exactly the lists the boots below run with.
    let t = Instant::now();
    let enrolled = enrol_with_systemd_boot(&keys, work);
    let lists = |store: &Path| {
        let json = work.join("store.json");
        bundles::run(
            Command::new("virt-fw-vars")
                .arg("--input")
                .arg(store)
                .arg("--output-json")
                .arg(&json),
        )
        .must();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).must()).must();
        ["PK", "KEK", "db"].map(|name| {
            v["variables"]
                .as_array()
                .and_then(|vs| vs.iter().find(|x| x["name"] == name))
                .and_then(|x| x["data"].as_str())
                .unwrap_or_else(|| panic!("no {name} in {}", store.display()))
                .to_owned()
        })
    };
    let esl_hex = |name: &str| {
        std::fs::read(work.join(format!("{name}.esl")))
            .must()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(lists(&enrolled), ["PK", "KEK", "db"].map(esl_hex));
    assert_eq!(lists(&enrolled), lists(&vars));
    let mut figures = vec![figure(
        "Secure Boot test: enrolment with systemd-boot",
        secs(t),
        "setup mode, .auth files, secure-boot-enroll force",
    )];
    // systemd-boot's line when the firmware's LoadImage() refuses the UKI
    // (the name shows boot counting's rename of airlock-a+3.efi).
    const UKI_REFUSED: &str = r"Error loading \\EFI\\Linux\\airlock-a\+\d-\d\.efi: Access denied";
    let cases = [
        Case {
            name: "signed",
            disk: image.clone(),
            want: Want::Boots(&[]),
        },
        Case {
            name: "unsigned-uki",
            disk: unsigned_uki,
            want: Want::Refused(UKI_REFUSED),
        },
        Case {
            name: "altered-uki",
            disk: altered_uki,
            want: Want::Refused(UKI_REFUSED),
        },
        Case {
            name: "unsigned-systemd-boot",
            disk: unsigned_loader,
            // The firmware itself refuses the boot loader.
            want: Want::Refused(
                r#"BdsDxe: failed to load Boot0001 "[^"]*" from [^\n]*: Access Denied"#,
            ),
        },
        Case {
            name: "altered-uki-resigned",
            disk: resigned_uki,
            // The EFI stub (x86-stub) and the kernel (setup_arch), no
            // longer quiet, read the firmware's SecureBoot variable.
            want: Want::Boots(&[
                "EFI stub: UEFI Secure Boot is enabled.",
                "secureboot: Secure boot enabled",
            ]),
        },
    ];
    figures.push(figure(
        "Secure Boot test: signed build",
        build_time,
        "build-image --demo --sb-demo --skip-cargo",
    ));
    for case in &cases {
        let t = Instant::now();
        let config = VmConfig::new(
            &format!("secureboot-{}", case.name),
            Boot::Disk {
                image: case.disk.clone(),
            },
        )
        .with_secure_boot(&vars);
        match case.want {
            Want::Boots(lines) => {
                let mut vm = Vm::boot(&config, timeout(BOOT_SECS)).must();
                let log = vm.console().transcript();
                let ok = log.contains("(slot a)")
                    && !log.contains("Access denied")
                    && !log.contains("Access Denied")
                    && lines.iter().all(|l| log.contains(l));
                if !ok {
                    vm.dump();
                    panic!(
                        "{}: expected slot a, no refusal and {lines:?} on the console",
                        case.name
                    );
                }
            }
            Want::Refused(re) => {
                let mut vm = Vm::start(&config).must();
                let outcomes = [Pattern::from(NO_BOOTABLE), Pattern::from(CONSOLE_READY)];
                let (which, _) = match vm.console().wait_for_any(&outcomes, timeout(REFUSAL_SECS)) {
                    Ok(r) => r,
                    Err(e) => {
                        vm.dump();
                        panic!("{}: {e}", case.name);
                    }
                };
                let log = vm.console().transcript();
                let refused = Pattern::regex(re).must().find(&log).is_some();
                let started = [
                    "EFI stub",
                    "Linux version",
                    "airlock-init",
                    BANNER,
                    CONSOLE_READY,
                ]
                .into_iter()
                .filter(|s| log.contains(s))
                .collect::<Vec<_>>();
                if which != 0 || !refused || !started.is_empty() {
                    vm.dump();
                    panic!(
                        "{}: expected the refusal /{re}/ and no boot, got refusal={refused}, \
                         Linux/supervisor output {started:?}",
                        case.name
                    );
                }
            }
        }
        figures.push(figure(
            "Secure Boot test: boot",
            secs(t),
            &format!("{} under OVMF secboot, TCG", case.name),
        ));
    }
    figures.push(figure(
        "Secure Boot signature",
        format!("{} bytes", signed_len - unsigned_len),
        &format!("signed UKI {signed_len} bytes, without its signature {unsigned_len}"),
    ));
    figures.push(figure(
        "Secure Boot test: total",
        secs(t_all),
        "build, checks, enrolment boot and 5 boots",
    ));
    publish(&figures, None).must();
}

/// Runs `cmd`, which must fail: its exit status and stderr.
fn refused(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().must();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Names and sizes of the files under `dir` (what "nothing changed" compares).
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .must()
        .map(|e| {
            let e = e.must();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().must().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn openssl(args: &[&str], work: &Path) {
    bundles::run(Command::new("openssl").args(args).current_dir(work)).must();
}

#[test]
fn build_image_refuses_bad_secure_boot_input() {
    let work = tempfile::Builder::new()
        .prefix("airlock-e2e-sb-input-")
        .tempdir()
        .must();
    let w = work.path();
    // Keys and certificates the security team could hand over by mistake.
    let req = |key: &str, crt: &str, newkey: &[&str]| {
        let mut args = vec![
            "req",
            "-new",
            "-x509",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=test/",
            "-keyout",
            key,
            "-out",
            crt,
            "-newkey",
        ];
        args.extend(newkey);
        openssl(&args, w)
    };
    req("good.key", "good.crt", &["rsa:2048"]);
    req("other.key", "other.crt", &["rsa:2048"]);
    req("small.key", "small.crt", &["rsa:1024"]);
    req(
        "ec.key",
        "ec.crt",
        &["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    );
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-aes256",
            "-pass",
            "pass:secret",
            "-out",
            "encrypted.key",
        ],
        w,
    );
    std::fs::write(w.join("junk.key"), "not a key\n").must();
    std::fs::create_dir(w.join("dir.key")).must();
    let trust = bundles::run(script("scripts/demo-keys").arg("trust")).must();
    let recipients = bundles::run(script("scripts/demo-keys").arg("recipients")).must();
    let p = |name: &str| w.join(name).display().to_string();
    let production = |key: &str, cert: &str| -> Vec<String> {
        let mut v = vec![
            "--trust".into(),
            trust.trim().into(),
            "--recipients".into(),
            recipients.trim().into(),
        ];
        if !key.is_empty() {
            v.extend(["--sb-key".into(), p(key)]);
        }
        if !cert.is_empty() {
            v.extend(["--sb-cert".into(), p(cert)]);
        }
        v
    };
    // Reasons naming a key or certificate file of the work directory.
    let key = |f: &str, why: &str| format!("Secure Boot key '{}' {why}", p(f));
    let cert = |f: &str, why: &str| format!("Secure Boot certificate '{}' {why}", p(f));
    let demo = |more: &[&str]| -> Vec<String> {
        let mut v = vec!["--demo".to_owned()];
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };
    let (good_key, good_crt) = (p("good.key"), p("good.crt"));
    let mut with_sb_demo = production("good.key", "good.crt");
    with_sb_demo.push("--sb-demo".into());
    let not_pem = "is not a PEM X.509 certificate";
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            production("good.key", ""),
            "--sb-key needs --sb-cert as well (the db certificate)".into(),
        ),
        (
            production("", "good.crt"),
            "--sb-cert needs --sb-key as well (the db signing key)".into(),
        ),
        (
            production("nope.key", "good.crt"),
            key("nope.key", "does not exist"),
        ),
        (
            production("good.key", "nope.crt"),
            cert("nope.crt", "does not exist"),
        ),
        (
            production("dir.key", "good.crt"),
            key("dir.key", "is not a regular file"),
        ),
        (
            production("junk.key", "good.crt"),
            key(
                "junk.key",
                "is not a PEM private key (openssl pkey cannot read it)",
            ),
        ),
        (
            production("encrypted.key", "good.crt"),
            key("encrypted.key", "is encrypted with a passphrase"),
        ),
        (
            production("ec.key", "ec.crt"),
            key("ec.key", "is not an RSA key"),
        ),
        (
            production("small.key", "small.crt"),
            key("small.key", "is RSA-1024 (at least 2048 bits)"),
        ),
        (
            production("good.key", "junk.key"),
            cert("junk.key", not_pem),
        ),
        (
            production("good.key", "good.key"),
            cert("good.key", not_pem),
        ),
        (
            production("good.key", "other.crt"),
            key(
                "good.key",
                &format!(
                    "does not belong to certificate '{}' (their public keys differ)",
                    p("other.crt")
                ),
            ),
        ),
        (with_sb_demo, "--sb-demo is only for --demo builds".into()),
        (
            demo(&["--sb-key", &good_key, "--sb-cert", &good_crt]),
            "--demo and --sb-key exclude each other".into(),
        ),
        (
            demo(&["--sb-demo", "--sb-key", &good_key, "--sb-cert", &good_crt]),
            "--sb-demo and --sb-key/--sb-cert exclude each other".into(),
        ),
        (demo(&["--sb-key"]), "--sb-key needs a KEY file".into()),
    ];
    // The output directory holds an old build: a refusal leaves it alone.
    let out = w.join("out");
    std::fs::create_dir(&out).must();
    std::fs::write(out.join("airlock.efi"), "old build").must();
    let before = listing(&out);
    for (args, want) in &cases {
        let t = Instant::now();
        let (code, err) = refused(
            script("scripts/build-image")
                .args(["--skip-cargo", "--out"])
                .arg(&out)
                .args(args),
        );
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            code == Some(1)
                && lines.len() == 1
                && lines[0].starts_with("build-image: ")
                && lines[0].contains(want.as_str()),
            "build-image {args:?}: expected exit 1 and one line with {want:?}, got {code:?}:\n{err}"
        );
        // Refused before the long steps (kernel, initramfs, UKI, disk).
        assert!(
            t.elapsed().as_secs() < 30,
            "{args:?} took {:?}",
            t.elapsed()
        );
        assert_eq!(
            listing(&out),
            before,
            "{args:?} changed the output directory"
        );
        assert_eq!(std::fs::read(out.join("airlock.efi")).must(), b"old build");
    }

    // secureboot.sh sign: deterministic for one epoch (two signatures made
    // over a second apart are the same bytes), another epoch gives another
    // signature, and an input that is already signed is refused.
    let sign = |input: &Path, output: &str, epoch: &str| {
        bundles::run(
            sign_cmd(
                &w.join("good.key"),
                &w.join("good.crt"),
                input,
                &w.join(output),
            )
            .arg(epoch),
        )
        .must();
        std::fs::read(w.join(output)).must()
    };
    let first = sign(Path::new(SDBOOT), "sd1.efi", "1767225600");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = sign(Path::new(SDBOOT), "sd2.efi", "1767225600");
    let other = sign(Path::new(SDBOOT), "sd3.efi", "1767225601");
    assert!(first == second, "two signatures at the same epoch differ");
    assert!(first != other, "the epoch does not reach the signature");
    assert!(sbverify(&w.join("good.crt"), &w.join("sd1.efi")));
    let (code, err) = refused(&mut sign_cmd(
        &w.join("good.key"),
        &w.join("good.crt"),
        &w.join("sd1.efi"),
        &w.join("sd4.efi"),
    ));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "secureboot: {} is already signed (remove the signature first: sbattach --remove)",
            w.join("sd1.efi").display()
        )
    );
    assert!(!w.join("sd4.efi").exists());
}
