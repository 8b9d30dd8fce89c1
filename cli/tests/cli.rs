//! End-to-end tests of the `airlock` binary with the real `minisign` tool:
//! interop both ways, one test per rejection reason (asserting the one-line
//! reason), and an import killed at varying points then run again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");
const MINISIGN: &str = "/usr/bin/minisign";

fn airlock(args: &[&str]) -> Output {
    Command::new(AIRLOCK)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Exit 1 and exactly one stderr line containing `reason`.
fn refused(out: Output, reason: &str) {
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected refusal, got {:?}: {err}",
        out.status
    );
    assert_eq!(err.lines().count(), 1, "exactly one reason line: {err:?}");
    assert!(
        err.starts_with("airlock: ") && err.contains(reason),
        "reason {reason:?} not in {err:?}"
    );
}

fn minisign(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(MINISIGN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    c.wait_with_output().unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Keys made with stock `minisign -G -W`, a trust file: root; models m1 m2
/// m3 (2 of 3); system s1.
struct Fx {
    dir: tempfile::TempDir,
    trust: PathBuf,
}

impl Fx {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("keys");
        fs::create_dir(&k).unwrap();
        for name in ["root", "m1", "m2", "m3", "s1", "stranger"] {
            ok(minisign(
                &[
                    "-G",
                    "-W",
                    "-p",
                    p(&k.join(format!("{name}.pub"))),
                    "-s",
                    p(&k.join(format!("{name}.key"))),
                ],
                None,
            ));
        }
        let trust = dir.path().join("trust.json");
        ok(airlock(&[
            "trust",
            "init",
            "--root-key",
            p(&k.join("root.pub")),
            "-o",
            p(&trust),
        ]));
        for m in ["m1", "m2", "m3"] {
            ok(airlock(&[
                "trust",
                "add-key",
                p(&trust),
                "--role",
                "models",
                "--key",
                p(&k.join(format!("{m}.pub"))),
            ]));
        }
        ok(airlock(&[
            "trust",
            "add-key",
            p(&trust),
            "--role",
            "system",
            "--key",
            p(&k.join("s1.pub")),
        ]));
        ok(airlock(&[
            "trust",
            "set-threshold",
            p(&trust),
            "--role",
            "models",
            "2",
        ]));
        Self { dir, trust }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn key(&self, name: &str) -> PathBuf {
        self.path(&format!("keys/{name}.key"))
    }

    /// Packs an unsigned model bundle `tiny` of the given version.
    fn pack(&self, version: u64, size: usize) -> PathBuf {
        let src = self.path(&format!("src{version}"));
        fs::create_dir_all(&src).unwrap();
        let data: Vec<u8> = (0..size)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
            .collect();
        fs::write(src.join("model.gguf"), &data).unwrap();
        fs::write(src.join("chat.jinja"), b"{{ messages }}").unwrap();
        let out = self.path(&format!("tiny_{version}.airlock"));
        ok(airlock(&[
            "bundle",
            "pack",
            "--kind",
            "model",
            "--name",
            "tiny",
            "--version",
            &version.to_string(),
            "--architecture",
            "llama",
            "--context-length",
            "512",
            "--chat-template",
            "chat.jinja",
            "--description",
            "test model",
            p(&src.join("model.gguf")),
            p(&src.join("chat.jinja")),
            "-o",
            p(&out),
        ]));
        out
    }

    /// Signs with stock minisign (prehashed, the 0.11 default).
    fn sign(&self, bundle: &Path, signer: &str, extra: &[&str]) {
        let m = bundle.join("manifest.json");
        let x = bundle.join(format!("manifest.json.{signer}.minisig"));
        let mut args = vec![
            "-S",
            "-s",
            p_owned(&self.key(signer)),
            "-m",
            p_owned(&m),
            "-x",
            p_owned(&x),
        ];
        args.extend_from_slice(extra);
        ok(minisign(&args, None));
    }

    fn signed(&self, version: u64) -> PathBuf {
        let b = self.pack(version, 100_000);
        // minisign 0.11 prehashes by default; -H asks for it explicitly.
        self.sign(&b, "m1", &[]);
        self.sign(&b, "m2", &["-H"]);
        b
    }

    /// A new, empty store initialised with `airlock store init`.
    fn new_store(&self) -> PathBuf {
        let store = self.path("store");
        ok(airlock(&["store", "init", p(&store)]));
        store
    }

    fn install(&self, bundle: &Path, store: &Path) -> Output {
        airlock(&[
            "bundle",
            "install",
            p(bundle),
            "--trust",
            p(&self.trust),
            "--store",
            p(store),
        ])
    }

    fn verify(&self, bundle: &Path) -> Output {
        airlock(&["bundle", "verify", p(bundle), "--trust", p(&self.trust)])
    }

    /// Rewrites the manifest through `edit` and re-signs it with m1 and m2.
    fn edit_manifest(&self, b: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = b.join("manifest.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        edit(&mut v);
        fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        self.sign(b, "m1", &[]);
        self.sign(b, "m2", &[]);
    }
}

fn p_owned(path: &Path) -> &'static str {
    Box::leak(path.to_str().unwrap().to_owned().into_boxed_str())
}

#[test]
fn stock_minisign_threshold_bundle_accepted_with_summary() {
    let fx = Fx::new();
    let b = fx.signed(2);
    let out = ok(fx.verify(&b));
    assert!(out.contains("bundle OK: model tiny version 2"), "{out}");
    assert!(
        out.contains("2 (2 of 2 required models signatures): m1, m2"),
        "{out}"
    );
    assert!(
        out.contains("100000")
            && out.contains("model.gguf")
            && out.contains("2 files, 100014 bytes"),
        "{out}"
    );
    // A signature by a key outside the trust file is ignored, not fatal.
    fx.sign(&b, "stranger", &[]);
    let out = ok(fx.verify(&b));
    assert!(
        out.contains("ignored     manifest.json.stranger.minisig"),
        "{out}"
    );
}

#[test]
fn our_signatures_verify_with_stock_minisign() {
    let fx = Fx::new();
    let b = fx.pack(2, 1000);
    // A minisign-generated unencrypted key used by our CLI.
    ok(airlock(&[
        "bundle",
        "sign",
        p(&b),
        "--key",
        p(&fx.key("m3")),
    ]));
    let sig = b.join("manifest.json.m3.minisig");
    let out = minisign(
        &[
            "-V",
            "-p",
            p(&fx.path("keys/m3.pub")),
            "-m",
            p(&b.join("manifest.json")),
            "-x",
            p(&sig),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Signature and comment signature verified")
    );
    // minisign -H insists on a prehashed signature.
    ok(minisign(
        &[
            "-V",
            "-H",
            "-p",
            p(&fx.path("keys/m3.pub")),
            "-m",
            p(&b.join("manifest.json")),
            "-x",
            p(&sig),
        ],
        None,
    ));
    // And a trust file signature.
    ok(airlock(&[
        "trust",
        "sign",
        p(&fx.trust),
        "--key",
        p(&fx.key("root")),
    ]));
    ok(minisign(
        &[
            "-V",
            "-p",
            p(&fx.path("keys/root.pub")),
            "-m",
            p(&fx.trust),
            "-x",
            p(&fx.path("trust.json.root.minisig")),
        ],
        None,
    ));
}

#[test]
fn encrypted_keys_interoperate_both_ways() {
    let fx = Fx::new();
    let pass = fx.path("pass");
    fs::write(&pass, "correct horse\n").unwrap();
    // Our passphrase-protected key, used by stock minisign (passphrase on stdin).
    ok(airlock(&[
        "key",
        "generate",
        "--name",
        "ours",
        "-o",
        p(&fx.path("k2")),
        "--passphrase-file",
        p(&pass),
    ]));
    let data = fx.path("data.txt");
    fs::write(&data, b"payload").unwrap();
    ok(minisign(
        &["-S", "-s", p(&fx.path("k2/ours.key")), "-m", p(&data)],
        Some("correct horse\n"),
    ));
    ok(minisign(
        &["-V", "-p", p(&fx.path("k2/ours.pub")), "-m", p(&data)],
        None,
    ));
    // minisign's passphrase-protected key, used by our CLI.
    ok(minisign(
        &[
            "-G",
            "-p",
            p(&fx.path("k2/theirs.pub")),
            "-s",
            p(&fx.path("k2/theirs.key")),
        ],
        Some("correct horse\ncorrect horse\n"),
    ));
    let b = fx.pack(2, 1000);
    ok(airlock(&[
        "bundle",
        "sign",
        p(&b),
        "--key",
        p(&fx.path("k2/theirs.key")),
        "--passphrase-file",
        p(&pass),
    ]));
    ok(minisign(
        &[
            "-V",
            "-p",
            p(&fx.path("k2/theirs.pub")),
            "-m",
            p(&b.join("manifest.json")),
            "-x",
            p(&b.join("manifest.json.theirs.minisig")),
        ],
        None,
    ));
    // Wrong passphrase: one clear reason.
    fs::write(&pass, "wrong\n").unwrap();
    refused(
        airlock(&[
            "bundle",
            "sign",
            p(&b),
            "--key",
            p(&fx.path("k2/theirs.key")),
            "--passphrase-file",
            p(&pass),
        ]),
        "wrong passphrase or corrupt key",
    );
    // No terminal and no passphrase file.
    refused(
        airlock(&[
            "bundle",
            "sign",
            p(&b),
            "--key",
            p(&fx.path("k2/theirs.key")),
        ]),
        "use --passphrase-file",
    );
}

#[test]
fn rejects_payload_byte_flipped() {
    let fx = Fx::new();
    let b = fx.signed(2);
    let f = b.join("model.gguf");
    let mut d = fs::read(&f).unwrap();
    d[5000] ^= 1;
    fs::write(&f, d).unwrap();
    refused(fx.verify(&b), "payload model.gguf: SHA-256 mismatch");
}

#[test]
fn rejects_file_added() {
    let fx = Fx::new();
    let b = fx.signed(2);
    fs::write(b.join("extra.bin"), b"x").unwrap();
    refused(fx.verify(&b), "unlisted file extra.bin in bundle");
    fs::remove_file(b.join("extra.bin")).unwrap();
    fs::create_dir(b.join("sub")).unwrap();
    refused(fx.verify(&b), "unlisted directory sub in bundle");
}

#[test]
fn rejects_file_removed() {
    let fx = Fx::new();
    let b = fx.signed(2);
    fs::remove_file(b.join("chat.jinja")).unwrap();
    refused(
        fx.verify(&b),
        "payload chat.jinja listed in manifest.json is missing",
    );
}

#[test]
fn rejects_truncated_or_grown_payload() {
    let fx = Fx::new();
    let b = fx.signed(2);
    let f = b.join("model.gguf");
    let d = fs::read(&f).unwrap();
    fs::write(&f, &d[..d.len() - 1]).unwrap();
    refused(
        fx.verify(&b),
        "payload model.gguf is 99999 bytes, manifest.json says 100000",
    );
    let mut g = d.clone();
    g.push(0);
    fs::write(&f, &g).unwrap();
    refused(
        fx.verify(&b),
        "payload model.gguf is 100001 bytes, manifest.json says 100000",
    );
}

#[test]
fn rejects_manifest_edited() {
    let fx = Fx::new();
    let b = fx.signed(2);
    let m = b.join("manifest.json");
    let text = fs::read_to_string(&m)
        .unwrap()
        .replace("test model", "evil model");
    fs::write(&m, text).unwrap();
    refused(
        fx.verify(&b),
        "manifest.json.m1.minisig: signature by key \"m1\" does not verify",
    );
}

#[test]
fn rejects_trusted_comment_edited() {
    let fx = Fx::new();
    let b = fx.signed(2);
    let s = b.join("manifest.json.m1.minisig");
    let text = fs::read_to_string(&s)
        .unwrap()
        .replace("trusted comment: ", "trusted comment: x");
    fs::write(&s, text).unwrap();
    refused(fx.verify(&b), "trusted comment signature does not verify");
}

#[test]
fn rejects_signer_of_wrong_role() {
    let fx = Fx::new();
    let b = fx.pack(2, 1000);
    fx.sign(&b, "m1", &[]);
    fx.sign(&b, "s1", &[]);
    refused(
        fx.verify(&b),
        "manifest.json.s1.minisig: signed by key \"s1\", which does not hold role models",
    );
}

#[test]
fn rejects_below_threshold() {
    let fx = Fx::new();
    let b = fx.pack(2, 1000);
    fx.sign(&b, "m1", &[]);
    refused(
        fx.verify(&b),
        "below threshold: 1 of 2 required models signatures (signed by m1)",
    );
    // The same key under two file names counts once.
    fs::copy(
        b.join("manifest.json.m1.minisig"),
        b.join("manifest.json.again.minisig"),
    )
    .unwrap();
    refused(
        fx.verify(&b),
        "below threshold: 1 of 2 required models signatures",
    );
}

#[test]
fn rejects_unsigned_and_strangers() {
    let fx = Fx::new();
    let b = fx.pack(2, 1000);
    refused(
        fx.verify(&b),
        "below threshold: 0 of 2 required models signatures (no valid signature by a trusted key)",
    );
    fx.sign(&b, "stranger", &[]);
    refused(fx.verify(&b), "no valid signature by a trusted key");
}

#[test]
fn rejects_legacy_ed_signature() {
    let fx = Fx::new();
    let b = fx.pack(2, 1000);
    fx.sign(&b, "m1", &[]);
    fx.sign(&b, "m2", &["-l"]);
    refused(
        fx.verify(&b),
        "manifest.json.m2.minisig: legacy `Ed` signature (not prehashed) refused",
    );
}

#[test]
fn rejects_lower_version_and_changed_same_version() {
    let fx = Fx::new();
    let store = fx.new_store();
    let v3 = fx.signed(3);
    ok(airlock(&[
        "bundle",
        "install",
        p(&v3),
        "--trust",
        p(&fx.trust),
        "--store",
        p(&store),
    ]));
    let v2 = fx.signed(2);
    ok(fx.verify(&v2)); // fine on its own
    let state = [
        "bundle",
        "verify",
        p(&v2),
        "--trust",
        p(&fx.trust),
        "--state",
        p(&store),
    ];
    refused(
        airlock(&state),
        "rollback refused: model tiny version 2 is lower than installed version 3",
    );
    refused(
        airlock(&[
            "bundle",
            "install",
            p(&v2),
            "--trust",
            p(&fx.trust),
            "--store",
            p(&store),
        ]),
        "rollback refused: model tiny version 2 is lower than installed version 3",
    );
    // Same version, different manifest.
    fx.edit_manifest(&v3, |v| v["description"] = "changed".into());
    refused(
        airlock(&[
            "bundle",
            "install",
            p(&v3),
            "--trust",
            p(&fx.trust),
            "--store",
            p(&store),
        ]),
        "model tiny version 3 is already installed with a different manifest",
    );
}

#[test]
fn rejects_unknown_field() {
    let fx = Fx::new();
    let b = fx.signed(2);
    fx.edit_manifest(&b, |v| v["model"]["rope_scaling"] = 2.into());
    refused(fx.verify(&b), "manifest.json: unknown field `rope_scaling`");
}

#[test]
fn rejects_oversized_manifest() {
    let fx = Fx::new();
    let b = fx.signed(2);
    fx.edit_manifest(&b, |v| v["description"] = "x".repeat(1024 * 1024).into());
    refused(fx.verify(&b), "manifest.json is larger than 1 MiB");
}

#[test]
fn rejects_dotdot_and_absolute_paths() {
    let fx = Fx::new();
    for (path, why) in [
        ("../outside", "`..` component"),
        ("/etc/passwd", "absolute path"),
    ] {
        let b = fx.signed(2);
        fx.edit_manifest(&b, |v| v["files"][1]["path"] = path.into());
        refused(
            fx.verify(&b),
            &format!("manifest.json: payload path {path:?} refused: {why}"),
        );
        fs::remove_dir_all(&b).unwrap();
    }
}

#[test]
fn rejects_duplicate_path() {
    let fx = Fx::new();
    let b = fx.signed(2);
    fx.edit_manifest(&b, |v| {
        let f = v["files"][0].clone();
        v["files"].as_array_mut().unwrap().push(f);
    });
    refused(fx.verify(&b), "manifest.json: duplicate payload path");
}

#[test]
fn rejects_symlink_and_fifo() {
    let fx = Fx::new();
    let b = fx.signed(2);
    fs::remove_file(b.join("chat.jinja")).unwrap();
    symlink("/etc/passwd", b.join("chat.jinja")).unwrap();
    refused(
        fx.verify(&b),
        "bundle entry chat.jinja is a symlink (refused)",
    );
    fs::remove_file(b.join("chat.jinja")).unwrap();
    let st = Command::new("mkfifo")
        .arg(b.join("chat.jinja"))
        .status()
        .unwrap();
    assert!(st.success());
    refused(fx.verify(&b), "bundle entry chat.jinja is a FIFO (refused)");
}

#[test]
fn rejects_missing_manifest_and_bad_trust_file() {
    let fx = Fx::new();
    let b = fx.signed(2);
    fs::remove_file(b.join("manifest.json")).unwrap();
    refused(fx.verify(&b), "bundle has no manifest.json");
    let bad = fx.path("bad-trust.json");
    fs::write(&bad, b"{\"schema\":\"airlock-trust/1\"}").unwrap();
    refused(
        airlock(&["bundle", "verify", p(&b), "--trust", p(&bad)]),
        "missing field `version`",
    );
}

/// Keeps the fixture's trust file as old-trust.json, then makes it version
/// 2 with m3 added to the root role; returns the old file's path.
fn rotate_to_m3(fx: &Fx) -> PathBuf {
    let old = fx.path("old-trust.json");
    fs::copy(&fx.trust, &old).unwrap();
    ok(airlock(&[
        "trust",
        "add-key",
        p(&fx.trust),
        "--role",
        "root",
        "--key",
        p(&fx.path("keys/m3.pub")),
    ]));
    ok(airlock(&["trust", "bump", p(&fx.trust)]));
    old
}

#[test]
fn trust_rotation_rules() {
    let fx = Fx::new();
    // New trust: version 2, root moves to m3 (threshold 1).
    let old = rotate_to_m3(&fx);
    let verify = || airlock(&["trust", "verify", p(&fx.trust), "--previous", p(&old)]);
    refused(
        verify(),
        "trust rotation refused: old root: below threshold: 0 of 1 required root signatures",
    );
    // Only the new root key (m3) signed: old root threshold missing.
    ok(airlock(&[
        "trust",
        "sign",
        p(&fx.trust),
        "--key",
        p(&fx.key("m3")),
    ]));
    refused(
        verify(),
        "trust rotation refused: old root: trust.json.m3.minisig: signed by key \"m3\", which does not hold role root",
    );
    // Old root (root) also signed: accepted.
    ok(airlock(&[
        "trust",
        "sign",
        p(&fx.trust),
        "--key",
        p(&fx.key("root")),
    ]));
    let out = ok(verify());
    assert!(out.contains("rotation OK: version 1 -> 2"), "{out}");
    // Raising the new root threshold to 2 without the second signature: new root below threshold.
    ok(airlock(&[
        "trust",
        "set-threshold",
        p(&fx.trust),
        "--role",
        "root",
        "2",
    ]));
    ok(airlock(&[
        "trust",
        "sign",
        p(&fx.trust),
        "--key",
        p(&fx.key("root")),
    ]));
    refused(
        verify(),
        "trust rotation refused: new root: below threshold: 1 of 2 required root signatures",
    );
    // Version jump: 1 -> 3.
    ok(airlock(&["trust", "bump", p(&fx.trust)]));
    ok(airlock(&[
        "trust",
        "sign",
        p(&fx.trust),
        "--key",
        p(&fx.key("root")),
    ]));
    ok(airlock(&[
        "trust",
        "sign",
        p(&fx.trust),
        "--key",
        p(&fx.key("m3")),
    ]));
    refused(
        verify(),
        "trust rotation refused: new version 3 is not old version 1 + 1",
    );
    // Threshold above the key count is refused when editing.
    refused(
        airlock(&[
            "trust",
            "set-threshold",
            p(&fx.trust),
            "--role",
            "system",
            "2",
        ]),
        "threshold of role system is 2, must be 1..=1",
    );
}

#[test]
fn install_is_the_verified_content_and_idempotent() {
    let fx = Fx::new();
    let store = fx.new_store();
    let b = fx.signed(2);
    let out = ok(airlock(&[
        "bundle",
        "install",
        p(&b),
        "--trust",
        p(&fx.trust),
        "--store",
        p(&store),
    ]));
    assert!(out.contains("installed model tiny version 2 (new"), "{out}");
    // The installed version directory is itself a valid bundle.
    ok(fx.verify(&store.join("model/tiny/2")));
    let out = ok(airlock(&[
        "bundle",
        "install",
        p(&b),
        "--trust",
        p(&fx.trust),
        "--store",
        p(&store),
    ]));
    assert!(out.contains("already installed"), "{out}");
    // Tampered bundle: refused, store unchanged.
    let before = fs::read(store.join("state.json")).unwrap();
    let b3 = fx.signed(3);
    fs::write(b3.join("extra"), b"x").unwrap();
    refused(
        airlock(&[
            "bundle",
            "install",
            p(&b3),
            "--trust",
            p(&fx.trust),
            "--store",
            p(&store),
        ]),
        "unlisted file extra in bundle",
    );
    assert_eq!(fs::read(store.join("state.json")).unwrap(), before);
    assert!(!store.join("model/tiny/3").exists());
}

/// Kills `airlock bundle install` at increasing delays. After every kill
/// the store is either unchanged (state.json as before, version 3 not
/// committed) or fully updated (state.json names version 3 and its directory
/// verifies); the next install then succeeds and cleans leftovers.
#[test]
fn killed_mid_import_then_run_again() {
    let fx = Fx::new();
    let store = fx.new_store();
    let v2 = fx.signed(2);
    ok(airlock(&[
        "bundle",
        "install",
        p(&v2),
        "--trust",
        p(&fx.trust),
        "--store",
        p(&store),
    ]));
    let v3 = fx.pack(3, 256 << 20);
    fx.sign(&v3, "m1", &[]);
    fx.sign(&v3, "m2", &[]);
    let args = [
        "bundle",
        "install",
        p(&v3),
        "--trust",
        p(&fx.trust),
        "--store",
        p(&store),
    ];
    let mut killed_mid_copy = 0;
    let mut delay = Duration::from_millis(0);
    let mut completed = false;
    for _ in 0..40 {
        let mut child = Command::new(AIRLOCK)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let staging_had_data = staged_bytes(&store.join(".staging")) > 0;
        let _ = child.kill();
        let status = child.wait().unwrap();
        // The commit record: version 2 (unchanged; a pending intent for 3
        // may be recorded and is undone by the next install) or 3.
        let state = fs::read(store.join("state.json")).unwrap();
        let state = airlock_formats::state::State::parse(&state).unwrap();
        let recorded = state
            .get(airlock_formats::manifest::Kind::Model, "tiny")
            .unwrap()
            .version;
        if recorded == 2 {
            let committed: Vec<u64> = airlock_formats::import::installed(&store)
                .unwrap()
                .into_iter()
                .map(|x| x.2)
                .collect();
            assert_eq!(
                committed,
                vec![2],
                "store unchanged after kill at {delay:?}"
            );
            if staging_had_data {
                killed_mid_copy += 1;
            }
        } else {
            assert_eq!(recorded, 3);
            ok(fx.verify(&store.join("model/tiny/3")));
            completed = true;
            let _ = status;
            break;
        }
        delay += Duration::from_millis(if killed_mid_copy == 0 { 10 } else { 40 });
    }
    assert!(killed_mid_copy >= 1, "no kill landed during the copy");
    // Run again: completes (or is already complete) and leaves no staging.
    let out = ok(airlock(&args));
    assert!(
        out.contains(if completed {
            "already installed"
        } else {
            "installed model tiny version 3"
        }),
        "{out}"
    );
    assert!(!store.join(".staging").exists(), "staging cleaned");
    ok(fx.verify(&store.join("model/tiny/3")));
    ok(fx.verify(&store.join("model/tiny/2")));
}

fn staged_bytes(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                staged_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Exit 1, one reason line; returns stdout.
fn refused_with_stdout(out: Output, reason: &str) -> String {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    refused(out, reason);
    stdout
}

/// Co-signing is not blind: `sign` hashes every payload first and shows
/// what it signs; a payload swapped for other bytes of the same size is
/// refused with the file named and nothing is written.
#[test]
fn sign_checks_every_payload_and_shows_what_is_signed() {
    let fx = Fx::new();
    let b = fx.pack(2, 1000);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("manifest.json")).unwrap()).unwrap();
    let out = ok(airlock(&[
        "bundle",
        "sign",
        p(&b),
        "--key",
        p(&fx.key("m1")),
    ]));
    assert!(
        out.contains("signing model tiny version 2 (payloads OK)"),
        "{out}"
    );
    for f in m["files"].as_array().unwrap() {
        let line = format!(
            "{:>14}  {}  {}",
            f["size"].as_u64().unwrap(),
            f["sha256"].as_str().unwrap(),
            f["path"].as_str().unwrap()
        );
        assert!(out.contains(&line), "{line:?} not in {out}");
    }
    // The insider's swap: same size, other bytes.
    let f = b.join("model.gguf");
    fs::write(&f, vec![0x55u8; 1000]).unwrap();
    refused(
        airlock(&["bundle", "sign", p(&b), "--key", p(&fx.key("m2"))]),
        "payload model.gguf: SHA-256 mismatch (manifest ",
    );
    assert!(!b.join("manifest.json.m2.minisig").exists());
}

/// `verify` hashes the payloads even below the threshold and says how many
/// signatures are missing; exit 1 unless --allow-missing-signatures.
#[test]
fn verify_checks_payloads_while_signatures_are_missing() {
    let fx = Fx::new();
    let b = fx.pack(2, 1000);
    fx.sign(&b, "m1", &[]);
    let missing = "payloads OK; signatures: 1 of 2 required for role models (missing 1)";
    let out = refused_with_stdout(
        fx.verify(&b),
        "below threshold: 1 of 2 required models signatures (signed by m1)",
    );
    assert!(out.contains(missing), "{out}");
    assert!(
        out.contains("payloads OK, signatures missing: model tiny version 2"),
        "{out}"
    );
    let cosign = [
        "bundle",
        "verify",
        p(&b),
        "--trust",
        p(&fx.trust),
        "--allow-missing-signatures",
    ];
    let out = ok(airlock(&cosign));
    assert!(out.contains(missing), "{out}");
    // Payloads are checked in this mode too.
    let f = b.join("chat.jinja");
    let mut d = fs::read(&f).unwrap();
    d[0] ^= 1;
    fs::write(&f, d).unwrap();
    refused(airlock(&cosign), "payload chat.jinja: SHA-256 mismatch");
    // With the threshold met, the flag changes nothing.
    d = fs::read(&f).unwrap();
    d[0] ^= 1;
    fs::write(&f, d).unwrap();
    fx.sign(&b, "m2", &[]);
    let out = ok(airlock(&cosign));
    assert!(out.contains("bundle OK: model tiny version 2"), "{out}");
    assert!(!out.contains("payloads OK;"), "{out}");
}

/// A junk signature file and a well-formed signature under a trusted key
/// id over other bytes do not veto a 2-of-3 bundle: they are named with
/// their reason, by verify and by install, and not copied into the store.
#[test]
fn bad_signature_files_are_reported_not_fatal() {
    let fx = Fx::new();
    let b = fx.signed(2);
    fs::write(b.join("manifest.json.x.minisig"), b"junk\n").unwrap();
    let other = fx.path("other.txt");
    fs::write(&other, b"other bytes").unwrap();
    ok(minisign(
        &[
            "-S",
            "-s",
            p(&fx.key("m3")),
            "-m",
            p(&other),
            "-x",
            p(&b.join("manifest.json.m3.minisig")),
        ],
        None,
    ));
    let want = [
        "ignored     manifest.json.m3.minisig: signature by key \"m3\" does not verify: signature does not verify (data changed or wrong key)",
        "ignored     manifest.json.x.minisig: signature: first line does not start with `untrusted comment: `",
    ];
    let out = ok(fx.verify(&b));
    assert!(out.contains("bundle OK: model tiny version 2"), "{out}");
    for w in want {
        assert!(out.contains(w), "{w:?} not in {out}");
    }
    let store = fx.new_store();
    let out = ok(fx.install(&b, &store));
    assert!(
        out.contains("ignored signature manifest.json.x.minisig: ")
            && out.contains("ignored signature manifest.json.m3.minisig: "),
        "{out}"
    );
    let installed = store.join("model/tiny/2");
    assert!(installed.join("manifest.json.m1.minisig").exists());
    assert!(!installed.join("manifest.json.x.minisig").exists());
    assert!(!installed.join("manifest.json.m3.minisig").exists());
}

/// Stores are created and recovered explicitly; an install into a store
/// without its state is refused with the reason and changes nothing.
#[test]
fn store_without_state_is_refused_then_recovered_explicitly() {
    let fx = Fx::new();
    let v3 = fx.signed(3);
    // No store: refused, nothing created.
    let absent = fx.path("absent");
    refused(
        fx.install(&v3, &absent),
        &format!(
            "store {} has no state.json (anti-rollback state missing): refused",
            absent.display()
        ),
    );
    assert!(!absent.exists());
    let store = fx.new_store();
    ok(fx.install(&v3, &store));
    fs::remove_file(store.join("state.json")).unwrap();
    let v2 = fx.signed(2);
    refused(
        fx.install(&v2, &store),
        "has no state.json (anti-rollback state missing): refused",
    );
    assert!(store.join("model/tiny/3/model.gguf").exists());
    assert!(!store.join("model/tiny/2").exists());
    refused(
        airlock(&[
            "bundle",
            "verify",
            p(&v2),
            "--trust",
            p(&fx.trust),
            "--state",
            p(&store),
        ]),
        "has no state.json",
    );
    refused(
        airlock(&["store", "init", p(&store)]),
        "not empty (holds model); a store that lost its state is recovered, not initialised",
    );
    let out = ok(airlock(&[
        "store",
        "recover",
        p(&store),
        "--trust",
        p(&fx.trust),
    ]));
    assert!(
        out.contains("recorded model tiny version 3 (manifest sha256 "),
        "{out}"
    );
    assert!(out.contains(": 1 recorded, 0 skipped"), "{out}");
    refused(
        fx.install(&v2, &store),
        "rollback refused: model tiny version 2 is lower than installed version 3",
    );
    refused(
        airlock(&["store", "recover", p(&store), "--trust", p(&fx.trust)]),
        "it has a state.json; recovery only rebuilds a missing state",
    );
}

/// No raw ESC, C1 CSI (U+009B or a raw 0x9b byte) or bidi override reaches
/// the terminal.
fn assert_no_raw_controls(what: &str, out: &Output) {
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!stream.contains(&0x1b), "{what}: raw ESC on {name}");
        assert!(
            !stream.contains(&0x9b),
            "{what}: raw 0x9b / U+009B on {name}"
        );
        assert!(
            !stream.windows(3).any(|w| w == "\u{202e}".as_bytes()),
            "{what}: raw U+202E on {name}"
        );
    }
}

/// For each message kind that shows a name from a stick or a manifest: the
/// crafted name is created on disk, the real binary runs, the output holds
/// the escaped form and no raw control.
#[test]
fn crafted_names_are_escaped_in_every_message() {
    use std::os::unix::ffi::OsStrExt;
    const EVIL: &str = "e\x1b[2K\rbundle OK\u{9b}31m\u{202e}";
    const SHOWN: &str = "e\\x1b[2K\\x0dbundle OK\\x9b31m\\u{202e}";
    let fx = Fx::new();
    let store = fx.new_store();
    type Setup<'a> = Box<dyn Fn(&Path) -> Output + 'a>;
    let cases: Vec<(&str, Setup, bool, String)> = vec![
        (
            "unlisted file",
            Box::new(|b: &Path| {
                fs::write(b.join(EVIL), b"x").unwrap();
                fx.verify(b)
            }),
            false,
            format!("unlisted file {SHOWN} in bundle"),
        ),
        (
            "ignored signature file (verify)",
            Box::new(|b: &Path| {
                fs::write(b.join(format!("manifest.json.{EVIL}.minisig")), b"junk").unwrap();
                fx.verify(b)
            }),
            true,
            format!("ignored     manifest.json.{SHOWN}.minisig: signature: "),
        ),
        (
            "ignored signature file (install)",
            Box::new(|b: &Path| {
                fs::write(b.join(format!("manifest.json.{EVIL}.minisig")), b"junk").unwrap();
                fx.install(b, &store)
            }),
            true,
            format!("ignored signature manifest.json.{SHOWN}.minisig: signature: "),
        ),
        (
            "symlink",
            Box::new(|b: &Path| {
                symlink("/etc/passwd", b.join(EVIL)).unwrap();
                fx.verify(b)
            }),
            false,
            format!("bundle entry {SHOWN} is a symlink (refused)"),
        ),
        (
            "fifo",
            Box::new(|b: &Path| {
                let st = Command::new("mkfifo").arg(b.join(EVIL)).status().unwrap();
                assert!(st.success());
                fx.verify(b)
            }),
            false,
            format!("bundle entry {SHOWN} is a FIFO (refused)"),
        ),
        (
            "invalid UTF-8 name",
            Box::new(|b: &Path| {
                let name = std::ffi::OsStr::from_bytes(b"bad\xff\x9b\x1b[2J");
                fs::write(b.join(name), b"x").unwrap();
                fx.verify(b)
            }),
            false,
            "bundle entry name bad\\xff\\x9b\\x1b[2J is not UTF-8".into(),
        ),
        (
            "manifest description (verify)",
            Box::new(|b: &Path| {
                fx.edit_manifest(b, |v| v["description"] = EVIL.into());
                fx.verify(b)
            }),
            true,
            format!("  description {SHOWN}"),
        ),
        (
            "manifest description (sign)",
            Box::new(|b: &Path| {
                fx.edit_manifest(b, |v| v["description"] = EVIL.into());
                airlock(&["bundle", "sign", p(b), "--key", p(&fx.key("m3"))])
            }),
            true,
            format!("  description {SHOWN}"),
        ),
        (
            "manifest payload path",
            Box::new(|b: &Path| {
                fx.edit_manifest(b, |v| v["files"][1]["path"] = EVIL.into());
                fx.verify(b)
            }),
            false,
            format!("manifest.json: payload path \"{SHOWN}\" refused: control character"),
        ),
        (
            "manifest name",
            Box::new(|b: &Path| {
                fx.edit_manifest(b, |v| v["name"] = EVIL.into());
                fx.verify(b)
            }),
            false,
            format!("manifest.json: invalid bundle name \"{SHOWN}\""),
        ),
        (
            "manifest created",
            Box::new(|b: &Path| {
                fx.edit_manifest(b, |v| v["created"] = EVIL.into());
                fx.verify(b)
            }),
            false,
            format!("manifest.json: created \"{SHOWN}\" is not an RFC 3339 UTC time"),
        ),
        (
            "manifest unknown field name",
            Box::new(|b: &Path| {
                fx.edit_manifest(b, |v| v[EVIL] = 1.into());
                fx.verify(b)
            }),
            false,
            format!("manifest.json: unknown field `{SHOWN}`"),
        ),
    ];
    for (i, (what, run, success, want)) in cases.into_iter().enumerate() {
        let b = fx.signed(10 + i as u64);
        let out = run(&b);
        assert_no_raw_controls(what, &out);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), success, "{what}: {text}");
        if !success {
            assert_eq!(out.status.code(), Some(1), "{what}");
            assert_eq!(
                String::from_utf8_lossy(&out.stderr).lines().count(),
                1,
                "{what}: one reason line"
            );
        }
        assert!(text.contains(&want), "{what}: {want:?} not in {text:?}");
    }
}

/// A GGUF header (magic, v3, 0 tensors, 3 keys) followed by filler bytes.
fn gguf_bytes(filler: usize) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend(3u64.to_le_bytes());
    let s = |v: &mut Vec<u8>, x: &str| {
        v.extend((x.len() as u64).to_le_bytes());
        v.extend(x.as_bytes());
    };
    s(&mut v, "general.architecture");
    v.extend(8u32.to_le_bytes());
    s(&mut v, "llama");
    s(&mut v, "llama.context_length");
    v.extend(4u32.to_le_bytes());
    v.extend(4096u32.to_le_bytes());
    s(&mut v, "tokenizer.chat_template");
    v.extend(8u32.to_le_bytes());
    s(&mut v, "{{ messages }}");
    v.extend((0..filler).map(|i| (i % 251) as u8));
    v
}

/// `bundle pack` without model options reads them from the GGUF; with
/// `--split` the model travels as parts, `verify` lists them, and
/// `install` joins them into one file.
#[test]
fn pack_split_gguf_defaults_install_joined() {
    let fx = Fx::new();
    let model = fx.path("model.gguf");
    let bytes = gguf_bytes(2_500_000);
    fs::write(&model, &bytes).unwrap();
    let out = fx.path("tiny_2.airlock");
    let shown = ok(airlock(&[
        "bundle",
        "pack",
        "--kind",
        "model",
        "--name",
        "tiny",
        "--version",
        "2",
        "--split",
        "1M",
        p(&model),
        "-o",
        p(&out),
    ]));
    assert!(
        shown.contains("architecture llama, context 4096, chat template chat_template.jinja"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "split model.gguf ({} bytes) into 3 parts: model.gguf.part000, model.gguf.part001, model.gguf.part002",
            bytes.len()
        )),
        "{shown}"
    );
    assert!(!out.join("model.gguf").exists());
    fx.sign(&out, "m1", &[]);
    fx.sign(&out, "m2", &[]);
    let v = ok(fx.verify(&out));
    assert!(v.contains("part model.gguf.part002"), "{v}");
    let store = fx.path("store");
    ok(airlock(&["store", "init", p(&store)]));
    ok(fx.install(&out, &store));
    assert_eq!(
        fs::read(store.join("model/tiny/2/model.gguf")).unwrap(),
        bytes
    );
    assert!(!store.join("model/tiny/2/model.gguf.part000").exists());
    // Refusals of the option itself.
    for (size, why) in [
        ("4G", "more than a FAT32 file can hold"),
        ("0", "at least 1 byte"),
    ] {
        let o = airlock(&[
            "bundle",
            "pack",
            "--kind",
            "model",
            "--name",
            "x",
            "--version",
            "1",
            "--split",
            size,
            p(&model),
            "-o",
            p(&fx.path("x")),
        ]);
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(why), "{size}: {e}");
    }
}

/// Every `bundle pack` option has a help text.
#[test]
fn pack_options_have_help() {
    let help = ok(airlock(&["bundle", "pack", "-h"]));
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.trim_start().starts_with('-') {
            continue;
        }
        // Help on the same line, or on the next, indented deeper.
        let same = line.trim().split_once("  ").is_some();
        let next = lines
            .get(i + 1)
            .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
        assert!(same || next, "{line} has no help: {help}");
    }
    assert!(help.contains("--split <SIZE>"), "{help}");
}

/// A `scripts/build-image` output directory in `dir`: `airlock.efi` made
/// like build-image makes the UKI (systemd's EFI stub with an `.osrel`
/// section added by objcopy; stub and objcopy are host requirements of
/// scripts/setup-host) and `trust.json`. `osrel: None` = no `.osrel`.
fn build_dir(dir: &Path, osrel: Option<&str>, trust: &Path) -> PathBuf {
    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    assert!(
        Path::new(STUB).is_file(),
        "{STUB} missing: run scripts/setup-host"
    );
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let uki = dir.join("airlock.efi");
    match osrel {
        Some(text) => {
            let f = dir.join("os-release");
            fs::write(&f, text).unwrap();
            let out = Command::new("objcopy")
                .arg("--add-section")
                .arg(format!(".osrel={}", p(&f)))
                .args(["--change-section-vma", ".osrel=0x20000000", STUB, p(&uki)])
                .output()
                .unwrap();
            assert!(out.status.success(), "objcopy: {out:?}");
        }
        None => {
            fs::copy(STUB, &uki).unwrap();
        }
    }
    fs::copy(trust, dir.join("trust.json")).unwrap();
    dir.to_owned()
}

fn sha256_file(path: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(path).output().unwrap());
    out.split_whitespace().next().unwrap().to_owned()
}

/// A trust-root rotation through an update, as docs/security-team.md
/// describes it: the new trust file (version 2, root m3 added) is built
/// into the image, signed in the build directory by the old root (root)
/// and the new (m3); `--from-build` carries it and its signatures, the
/// bundle verifies against the old trust file, and the carried trust file
/// passes `trust verify --previous` inside the bundle.
#[test]
fn pack_system_rotation_from_build() {
    let fx = Fx::new();
    let old = rotate_to_m3(&fx);
    let osrel = "ID=airlock\nAIRLOCK_SYSTEM_VERSION=4\nVARIANT_ID=production\n";
    let build = build_dir(&fx.path("build"), Some(osrel), &fx.trust);
    let trust_sha = sha256_file(&fx.trust);
    for signer in ["root", "m3"] {
        ok(airlock(&[
            "trust",
            "sign",
            p(&build.join("trust.json")),
            "--key",
            p(&fx.key(signer)),
        ]));
    }
    let out = fx.path("airlock_4.airlock");
    let stdout = ok(airlock(&[
        "bundle",
        "pack",
        "--kind",
        "system",
        "--name",
        "airlock",
        "--from-build",
        p(&build),
        "-o",
        p(&out),
    ]));
    assert!(
        stdout.contains(
            "carries the trust file trust.json with 2 root signatures (trust-root rotation)"
        ),
        "{stdout}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        m["system"],
        serde_json::json!({
            "uki": "airlock.efi",
            "variant": "production",
            "trust_sha256": trust_sha,
            "trust": "trust.json",
        })
    );
    let files: Vec<(&str, &str)> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["sha256"].as_str().unwrap()))
        .collect();
    let sig_sha = |s: &str| sha256_file(&build.join(format!("trust.json.{s}.minisig")));
    assert_eq!(
        files,
        [
            (
                "airlock.efi",
                sha256_file(&build.join("airlock.efi")).as_str()
            ),
            ("trust.json", trust_sha.as_str()),
            ("trust.json.m3.minisig", sig_sha("m3").as_str()),
            ("trust.json.root.minisig", sig_sha("root").as_str()),
        ]
    );
    // Signed by the (old) system key, it verifies against the old trust file.
    fx.sign(&out, "s1", &[]);
    let v = ok(airlock(&["bundle", "verify", p(&out), "--trust", p(&old)]));
    assert!(v.contains("bundle OK: system airlock version 4"), "{v}");
    assert!(
        v.contains("carries trust file trust.json (rotation)"),
        "{v}"
    );
    assert!(v.contains("trust.json.root.minisig"), "{v}");
    // The carried trust file and its signatures are a valid rotation.
    let r = ok(airlock(&[
        "trust",
        "verify",
        p(&out.join("trust.json")),
        "--previous",
        p(&old),
    ]));
    assert!(r.contains("rotation OK: version 1 -> 2"), "{r}");
    // A signature-like name with an invalid signer is refused at pack time.
    fs::write(build.join("trust.json..x.minisig"), b"x").unwrap();
    let dst = fx.path("refused");
    refused(
        airlock(&[
            "bundle",
            "pack",
            "--kind",
            "system",
            "--name",
            "airlock",
            "--from-build",
            p(&build),
            "-o",
            p(&dst),
        ]),
        "trust.json..x.minisig: not named trust.json.SIGNER.minisig",
    );
    assert!(!dst.exists());
}

/// `bundle pack --kind system --from-build DIR`: the UKI, its version and
/// variant from its .osrel, the trust file's SHA-256; signed with stock
/// minisign it verifies. Options given must agree; one-line refusals.
#[test]
fn pack_system_from_build() {
    let fx = Fx::new();
    let osrel = "NAME=\"Airlock\"\nID=airlock\nVERSION_ID=0.1.0\nIMAGE_VERSION=3\n\
        AIRLOCK_SYSTEM_VERSION=3\nVARIANT=\"production\"\nVARIANT_ID=production\n";
    let build = build_dir(&fx.path("build"), Some(osrel), &fx.trust);
    let trust_sha = sha256_file(&fx.trust);
    let out = fx.path("airlock_3.airlock");
    let pack = |extra: &[&str], out: &Path| {
        let mut args = vec!["bundle", "pack", "--kind", "system", "--name", "airlock"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", p_owned(out)]);
        airlock(&args)
    };
    let stdout = ok(pack(&["--from-build", p(&build)], &out));
    assert!(
        stdout.contains(&format!(
            "system airlock.efi version 3: variant production, trust file sha256 {trust_sha}"
        )),
        "{stdout}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["version"], 3);
    assert_eq!(
        m["system"],
        serde_json::json!({
            "uki": "airlock.efi",
            "variant": "production",
            "trust_sha256": trust_sha,
        })
    );
    assert_eq!(
        m["files"][0]["sha256"],
        sha256_file(&build.join("airlock.efi"))
    );
    // No trust signatures in the build directory: trust.json is no payload.
    assert_eq!(m["files"].as_array().unwrap().len(), 1);
    fx.sign(&out, "s1", &[]);
    let v = ok(fx.verify(&out));
    assert!(v.contains("bundle OK: system airlock version 3"), "{v}");
    assert!(v.contains("variant production"), "{v}");

    // Agreeing options are accepted; the explicit form gives the same section.
    ok(pack(
        &[
            "--from-build",
            p(&build),
            "--version",
            "3",
            "--variant",
            "production",
            "--trust",
            p(&fx.trust),
        ],
        &fx.path("agree"),
    ));
    ok(pack(
        &[
            "--version",
            "3",
            "--variant",
            "production",
            "--trust",
            p(&fx.trust),
            p(&build.join("airlock.efi")),
        ],
        &fx.path("explicit"),
    ));
    let e: serde_json::Value =
        serde_json::from_slice(&fs::read(fx.path("explicit/manifest.json")).unwrap()).unwrap();
    assert_eq!(e["system"], m["system"]);

    // Another (valid) trust file.
    let other = fx.path("other-trust.json");
    ok(airlock(&[
        "trust",
        "init",
        "--root-key",
        p(&fx.path("keys/stranger.pub")),
        "-o",
        p(&other),
    ]));
    let b = p_owned(&build);
    let refusals: &[(&str, Vec<&str>, &str)] = &[
        (
            "version differs",
            vec!["--from-build", b, "--version", "4"],
            "--version 4 differs from the UKI's AIRLOCK_SYSTEM_VERSION=3",
        ),
        (
            "variant differs",
            vec!["--from-build", b, "--variant", "demo"],
            "--variant demo differs from the UKI's VARIANT_ID=production",
        ),
        (
            "trust file differs",
            vec!["--from-build", b, "--trust", p_owned(&other)],
            "is not the trust file built into the UKI",
        ),
        (
            "not a trust file",
            vec![
                "--from-build",
                b,
                "--trust",
                p_owned(&build.join("os-release")),
            ],
            "os-release: trust file",
        ),
        (
            "payload given",
            vec!["--from-build", b, p_owned(&fx.trust)],
            "give no FILE",
        ),
        (
            "--uki given",
            vec!["--from-build", b, "--uki", "x.efi"],
            "--uki and --from-build exclude each other",
        ),
        (
            "explicit without variant",
            vec![
                "--version",
                "3",
                "--trust",
                p_owned(&fx.trust),
                p_owned(&build.join("airlock.efi")),
            ],
            "needs --variant V and --trust FILE",
        ),
        (
            "explicit bad variant",
            vec![
                "--version",
                "3",
                "--variant",
                "Prod",
                "--trust",
                p_owned(&fx.trust),
                p_owned(&build.join("airlock.efi")),
            ],
            "system.variant \"Prod\" is not 1-32 of a-z 0-9 -",
        ),
        (
            "no build dir",
            vec!["--from-build", p_owned(&fx.path("nowhere"))],
            "nowhere/airlock.efi",
        ),
    ];
    for (what, extra, want) in refusals {
        let dst = fx.path("refused");
        let out = pack(extra, &dst);
        assert!(!dst.exists(), "{what}");
        eprintln!("{what}");
        refused(out, want);
    }
    // Name and kind.
    let dst = fx.path("refused");
    refused(
        airlock(&[
            "bundle",
            "pack",
            "--kind",
            "system",
            "--name",
            "os",
            "--from-build",
            b,
            "-o",
            p(&dst),
        ]),
        "a system bundle is named airlock (--name airlock), not os",
    );
    refused(
        airlock(&[
            "bundle",
            "pack",
            "--kind",
            "model",
            "--name",
            "m",
            "--from-build",
            b,
            "-o",
            p(&dst),
        ]),
        "system options (--uki, --variant, --trust, --from-build) given for a model bundle",
    );
    // A UKI without .osrel, or whose .osrel lacks the keys.
    for (osrel, want) in [
        (None, "airlock.efi: UKI has no .osrel section"),
        (
            Some("ID=airlock\nVARIANT_ID=demo\n"),
            "has no AIRLOCK_SYSTEM_VERSION",
        ),
        (Some("AIRLOCK_SYSTEM_VERSION=2\n"), "has no VARIANT_ID"),
        (
            Some("AIRLOCK_SYSTEM_VERSION=x\nVARIANT_ID=demo\n"),
            "AIRLOCK_SYSTEM_VERSION=x in its .osrel is not a version",
        ),
        (
            Some("AIRLOCK_SYSTEM_VERSION=2\nVARIANT_ID=a b\n"),
            "UKI .osrel line 2: unquoted blank",
        ),
    ] {
        let bad = build_dir(&fx.path("bad"), osrel, &fx.trust);
        refused(pack(&["--from-build", p(&bad)], &dst), want);
        assert!(!dst.exists());
    }
}
