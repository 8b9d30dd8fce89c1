//! `scripts/sbom` (docs/image.md, "SBOM and licences"): the licence check of
//! every crate linked into a shipped binary, and the SBOM `scripts/build-image`
//! writes to out/sbom.cdx.json. No QEMU.
//!
//! The linked set is checked against cargo's own unit graph of the image's
//! build (`cargo build --release --workspace --bins --unit-graph`, which
//! needs `RUSTC_BOOTSTRAP=1`: it is unstable, so it is only this test's
//! oracle), computed here independently of the script's `cargo tree`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

type Key = (String, String); // crate name, version

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The repository of this test run (`repo_root` reads cargo's run-time
/// `CARGO_MANIFEST_DIR`: the shared target dir may hold the harness library
/// compiled from another checkout).
fn root() -> PathBuf {
    airlock_e2e::bundles::repo_root().canonicalize().unwrap()
}

fn sbom(args: &[&str]) -> Run {
    run(Command::new(root().join("scripts/sbom")).args(args))
}

fn cargo(dir: &Path, args: &[&str]) -> String {
    let r = run(Command::new("cargo")
        .args(args)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH"));
    assert!(r.ok, "cargo {args:?}: {}", r.stderr);
    r.stdout
}

fn sha256(path: &Path) -> String {
    let r = run(Command::new("sha256sum").arg(path));
    assert!(r.ok, "sha256sum {}: {}", path.display(), r.stderr);
    r.stdout.split(' ').next().unwrap().to_string()
}

/// The cargo binaries of the `bin` lines of image/initramfs.list.
fn shipped() -> Vec<String> {
    fs::read_to_string(root().join("image/initramfs.list"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            (f.len() >= 4 && f[0] == "bin").then(|| f[3].to_string())
        })
        .collect()
}

/// (name, version) of a unit graph `pkg_id` (`registry+...#name@1.0`,
/// `path+file:///x/name#1.0`).
fn pkg_key(id: &str) -> Key {
    let (url, frag) = id.rsplit_once('#').unwrap();
    match frag.split_once('@') {
        Some((n, v)) => (n.to_string(), v.to_string()),
        None => (
            url.rsplit('/').next().unwrap().to_string(),
            frag.to_string(),
        ),
    }
}

/// Crates linked into each shipped binary, from cargo's unit graph of the
/// image's build: reachable from the bin unit over compiled-and-linked
/// units (no build scripts, no proc-macros).
fn oracle() -> BTreeMap<String, BTreeSet<Key>> {
    let text = run(Command::new("cargo")
        .args([
            "build",
            "--release",
            "--workspace",
            "--bins",
            "--frozen",
            "--unit-graph",
            "-Z",
            "unstable-options",
        ])
        .current_dir(root())
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("SOURCE_DATE_EPOCH"));
    assert!(text.ok, "cargo --unit-graph: {}", text.stderr);
    let g: Value = serde_json::from_str(&text.stdout).unwrap();
    let units = g["units"].as_array().unwrap();
    let linked = |u: &Value| {
        u["mode"] == "build"
            && !u["target"]["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "custom-build" || k == "proc-macro")
    };
    let mut out = BTreeMap::new();
    for bin in shipped() {
        let start = g["roots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap() as usize)
            .find(|&r| units[r]["target"]["name"] == bin.as_str())
            .unwrap_or_else(|| panic!("no unit for binary {bin}"));
        let (mut seen, mut todo) = (BTreeSet::new(), vec![start]);
        while let Some(i) = todo.pop() {
            if seen.insert(i) {
                for d in units[i]["dependencies"].as_array().unwrap() {
                    let j = d["index"].as_u64().unwrap() as usize;
                    if linked(&units[j]) {
                        todo.push(j);
                    }
                }
            }
        }
        let keys = seen
            .iter()
            .map(|&i| pkg_key(units[i]["pkg_id"].as_str().unwrap()))
            .collect();
        out.insert(bin, keys);
    }
    out
}

/// crate -> "bin-a, bin-b" (sorted) for every linked crate of the oracle.
fn where_linked(oracle: &BTreeMap<String, BTreeSet<Key>>) -> BTreeMap<Key, String> {
    let mut by: BTreeMap<Key, BTreeSet<&str>> = BTreeMap::new();
    for (bin, keys) in oracle {
        for k in keys {
            by.entry(k.clone()).or_default().insert(bin);
        }
    }
    by.into_iter()
        .map(|(k, b)| (k, b.into_iter().collect::<Vec<_>>().join(", ")))
        .collect()
}

/// crate -> its `license` field (cargo metadata).
fn licences(dir: &Path) -> BTreeMap<Key, String> {
    let m: Value = serde_json::from_str(&cargo(
        dir,
        &["metadata", "--frozen", "--format-version", "1"],
    ))
    .unwrap();
    m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["version"].as_str().unwrap().to_string(),
                ),
                p["license"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn the_real_workspace_passes_the_licence_check() {
    let linked = where_linked(&oracle());
    let r = sbom(&["--prog", "build-image", "licence-check"]);
    assert!(r.ok, "refused:\n{}", r.stderr);
    let want = format!(
        "build-image: licence check: {} crates linked into {} binaries ({}), every licence allowed by image/licences.allow (",
        linked.len(),
        shipped().len(),
        shipped().join(", ")
    );
    assert!(r.stderr.starts_with(&want), "{}\nwanted: {want}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

/// The real workspace against allow-lists with lines taken out: each case
/// names a licence string some linked crate declares, whether that crate
/// must be refused, and with which reason.
#[test]
fn narrowed_allow_lists_refuse_with_one_line_per_crate() {
    let linked = where_linked(&oracle());
    let lic = licences(&root());
    let allow = fs::read_to_string(root().join("image/licences.allow")).unwrap();
    let cases: &[(&[&str], &str, Option<&str>)] = &[
        (&["MIT"], "MIT", Some("licence 'MIT' is not in ALLOW")),
        (&["MIT"], "MIT OR Apache-2.0", None),
        (&["MIT"], "Apache-2.0 OR MIT", None),
        (
            &["Unicode-3.0"],
            "(MIT OR Apache-2.0) AND Unicode-3.0",
            Some("licence '(MIT OR Apache-2.0) AND Unicode-3.0' is not satisfied by ALLOW (not in it: Unicode-3.0)"),
        ),
        (
            &["MIT", "Apache-2.0"],
            "MIT OR Apache-2.0",
            Some("licence 'MIT OR Apache-2.0' is not satisfied by ALLOW (not in it: Apache-2.0, MIT)"),
        ),
        (
            &["MIT", "Apache-2.0"],
            "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT",
            Some("licence 'Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT' is not satisfied by ALLOW (not in it: Apache-2.0, Apache-2.0 WITH LLVM-exception, MIT)"),
        ),
        // Cargo's deprecated "/" is an OR.
        (&["BSD-3-Clause"], "MIT/BSD-3-Clause", None),
        (
            &["BSD-3-Clause"],
            "(Apache-2.0 OR MIT) AND BSD-3-Clause",
            Some("licence '(Apache-2.0 OR MIT) AND BSD-3-Clause' is not satisfied by ALLOW (not in it: BSD-3-Clause)"),
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (removed, licence, reason)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("allow-{i}"));
        let narrowed: String = allow
            .lines()
            .filter(|l| !removed.contains(&l.split_whitespace().next().unwrap_or("")))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            allow.lines().count() - narrowed.lines().count(),
            removed.len()
        );
        fs::write(&path, narrowed).unwrap();
        let (key, bins) = linked
            .iter()
            .find(|(k, _)| lic.get(*k).map(String::as_str) == Some(*licence))
            .unwrap_or_else(|| panic!("no linked crate declares '{licence}': pick another"));
        let r = sbom(&[
            "--prog",
            "build-image",
            "licence-check",
            "--allow",
            path.to_str().unwrap(),
        ]);
        assert!(!r.ok, "without {removed:?}: passed");
        let prefix = format!(
            "build-image: licence check: crate {} {} (in {bins}): ",
            key.0, key.1
        );
        let line = r.stderr.lines().find(|l| l.starts_with(&prefix));
        match reason {
            Some(reason) => {
                let want = format!(
                    "{prefix}{}",
                    reason.replace("ALLOW", path.to_str().unwrap())
                );
                assert_eq!(line, Some(want.as_str()), "{}", r.stderr);
            }
            None => assert_eq!(line, None, "without {removed:?}"),
        }
        // Every line names one crate; every crate declaring exactly a
        // removed licence is among them.
        assert!(r
            .stderr
            .lines()
            .all(|l| l.starts_with("build-image: licence check: crate ")));
        for (k, b) in &linked {
            if removed.contains(&lic[k].as_str()) {
                let p = format!(
                    "build-image: licence check: crate {} {} (in {b}): ",
                    k.0, k.1
                );
                assert!(r.stderr.contains(&p), "{p} missing:\n{}", r.stderr);
            }
        }
    }
}

/// A scratch workspace (path crates only, nothing downloaded) with the
/// image's layout: two shipped binaries and crates reached every way.
struct Scratch {
    dir: tempfile::TempDir,
}

const SCRATCH_CRATES: &[(&str, &str, &str)] = &[
    // name, version, Cargo.toml licence line
    ("gpl", "1.2.3", "license = \"GPL-3.0\""),
    ("gpl-dev", "1.0.0", "license = \"GPL-3.0\""),
    ("gpl-build", "1.0.0", "license = \"GPL-3.0\""),
    ("gpl-macro", "1.0.0", "license = \"GPL-3.0\""),
    ("gpl-optional", "1.0.0", "license = \"GPL-3.0\""),
    ("gpl-windows", "1.0.0", "license = \"GPL-3.0\""),
    ("mid", "1.0.0", "license = \"MIT\""),
    ("deep", "1.0.0", "license = \"GPL-2.0-only\""),
    ("either", "1.0.0", "license = \"MIT OR GPL-3.0\""),
    ("both", "1.0.0", "license = \"MIT AND GPL-3.0\""),
    (
        "exc",
        "1.0.0",
        "license = \"Apache-2.0 WITH LLVM-exception\"",
    ),
    ("slash", "1.0.0", "license = \"GPL-3.0/Apache-2.0\""),
    ("broken", "1.0.0", "license = \"MIT OR\""),
    ("nolicence", "1.0.0", "license-file = \"LICENSE\""),
    ("decided", "1.0.0", "license-file = \"LICENSE\""),
    ("decided-gpl", "1.0.0", "license-file = \"LICENSE\""),
];

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |p: &str, s: &str| {
            let p = d.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, s).unwrap();
        };
        write(
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"worker\", \"init\"]\n",
        );
        write(
            ".cargo/config.toml",
            "[build]\ntarget = \"x86_64-unknown-linux-gnu\"\n",
        );
        for (name, version, licence) in SCRATCH_CRATES {
            let lib = if *name == "gpl-macro" {
                "\n[lib]\nproc-macro = true\n"
            } else {
                ""
            };
            let deps = if *name == "mid" {
                "\n[dependencies]\ndeep = { path = \"../deep\" }\n"
            } else {
                ""
            };
            write(
                &format!("deps/{name}/Cargo.toml"),
                &format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\n{licence}\n{lib}{deps}"),
            );
            write(&format!("deps/{name}/src/lib.rs"), "");
            write(&format!("deps/{name}/LICENSE"), "text\n");
        }
        let dep = |n: &str| format!("{n} = {{ path = \"../deps/{n}\" }}\n");
        let mut worker = String::from(
            "[package]\nname = \"airlock-worker\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"Apache-2.0\"\n\n[dependencies]\n",
        );
        for n in [
            "gpl",
            "mid",
            "either",
            "both",
            "exc",
            "slash",
            "broken",
            "nolicence",
            "decided",
            "decided-gpl",
            "gpl-macro",
        ] {
            worker += &dep(n);
        }
        worker += "gpl-optional = { path = \"../deps/gpl-optional\", optional = true }\n";
        worker += &format!("\n[dev-dependencies]\n{}", dep("gpl-dev"));
        worker += &format!("\n[build-dependencies]\n{}", dep("gpl-build"));
        worker += &format!(
            "\n[target.'cfg(windows)'.dependencies]\n{}",
            dep("gpl-windows")
        );
        write("worker/Cargo.toml", &worker);
        write("worker/src/main.rs", "fn main() {}\n");
        write(
            "init/Cargo.toml",
            &format!("[package]\nname = \"airlock-supervisor\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"Apache-2.0\"\n\n[[bin]]\nname = \"airlock-init\"\npath = \"src/main.rs\"\n\n[dependencies]\n{}", dep("gpl")),
        );
        write("init/src/main.rs", "fn main() {}\n");
        write(
            "image/initramfs.list",
            "# test\nbin /init 0755 airlock-init required\nbin /bin/airlock-worker 0755 airlock-worker required\n",
        );
        write(
            "image/licences.allow",
            "# test\nMIT  # test\nApache-2.0  # test\n",
        );
        write(
            "image/licences.crates",
            "# test\ndecided 1.0.0 MIT  # LICENSE read: MIT\ndecided-gpl 1.0.0 GPL-3.0  # LICENSE read: GPL\n",
        );
        cargo(d, &["generate-lockfile", "--offline"]);
        Scratch { dir }
    }

    fn check(&self) -> Run {
        sbom(&[
            "--prog",
            "build-image",
            "licence-check",
            "--root",
            self.dir.path().to_str().unwrap(),
        ])
    }

    fn write(&self, path: &str, text: &str) {
        fs::write(self.dir.path().join(path), text).unwrap();
    }
}

#[test]
fn only_linked_crates_are_checked_and_each_refusal_has_its_reason() {
    let s = Scratch::new();
    let r = s.check();
    assert!(!r.ok);
    let p = "build-image: licence check: crate";
    let want: BTreeSet<String> = [
        "gpl 1.2.3 (in airlock-init, airlock-worker): licence 'GPL-3.0' is not in image/licences.allow",
        "deep 1.0.0 (in airlock-worker): licence 'GPL-2.0-only' is not in image/licences.allow",
        "both 1.0.0 (in airlock-worker): licence 'MIT AND GPL-3.0' is not satisfied by image/licences.allow (not in it: GPL-3.0)",
        "broken 1.0.0 (in airlock-worker): licence 'MIT OR' is not an SPDX expression (unexpected end)",
        "nolicence 1.0.0 (in airlock-worker): no licence field (license-file 'LICENSE') and no decision in image/licences.crates",
        "decided-gpl 1.0.0 (in airlock-worker): licence 'GPL-3.0' (decided in image/licences.crates) is not in image/licences.allow",
    ]
    .iter()
    .map(|l| format!("{p} {l}"))
    .collect();
    let got: BTreeSet<String> = r.stderr.lines().map(str::to_string).collect();
    // Not refused: dev-, build-, proc-macro, disabled optional and other-target
    // dependencies (not linked), an OR with an allowed side, `X WITH E` with
    // X allowed, "/" as OR, and a licence-file crate with an allowed decision.
    assert_eq!(got, want);
}

#[test]
fn policy_files_are_checked() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "image/licences.allow",
            "# test\nApache-2.0  # ok\nMIT\n",
            "build-image: licence check: image/licences.allow line 3: 'MIT' has no comment saying why it is allowed",
        ),
        (
            "image/licences.allow",
            "MIT Apache-2.0  # two\n",
            "build-image: licence check: image/licences.allow line 1: 'MIT Apache-2.0' is not one SPDX licence id",
        ),
        (
            "image/licences.crates",
            "decided 1.0.0 MIT\n",
            "build-image: licence check: image/licences.crates line 1: the decision for decided 1.0.0 has no comment saying why",
        ),
        (
            "image/licences.crates",
            "decided 1.0.0 MIT OR  # x\n",
            "build-image: licence check: image/licences.crates line 1: 'MIT OR' is not an SPDX expression (unexpected end)",
        ),
        (
            "image/licences.crates",
            "decided 1.0.0 MIT  # x\ngpl-dev 1.0.0 MIT  # not linked\n",
            "build-image: licence check: image/licences.crates line 2: gpl-dev 1.0.0 is not linked into any shipped binary (remove the decision)",
        ),
        (
            "image/licences.crates",
            "decided 1.0.0 MIT  # x\nexc 1.0.0 MIT  # has one\n",
            "build-image: licence check: image/licences.crates line 2: exc 1.0.0 has a licence field ('Apache-2.0 WITH LLVM-exception'); remove the decision",
        ),
    ];
    let s = Scratch::new();
    for (file, text, reason) in cases {
        s.write("image/licences.allow", "MIT  # t\nApache-2.0  # t\n");
        s.write("image/licences.crates", "decided 1.0.0 MIT  # t\n");
        s.write(file, text);
        let r = s.check();
        assert!(!r.ok, "{file}: {text:?} accepted");
        assert!(
            r.stderr.lines().any(|l| l == *reason),
            "{file}: {text:?}:\n{}\nwanted: {reason}",
            r.stderr
        );
    }
}

/// A copy of the repository (tracked and new files, `build/` linked) whose
/// allow-list lacks MIT: build-image stops at the licence check and leaves
/// the output directory exactly as it was.
#[test]
fn build_image_stops_before_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("repo");
    fs::create_dir(&copy).unwrap();
    let r = run(Command::new("bash")
        .arg("-c")
        .arg("git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C \"$1\"")
        .arg("-")
        .arg(&copy)
        .current_dir(root()));
    assert!(r.ok, "copy: {}", r.stderr);
    std::os::unix::fs::symlink(
        root().join("build").canonicalize().unwrap(),
        copy.join("build"),
    )
    .unwrap();
    let allow = fs::read_to_string(root().join("image/licences.allow")).unwrap();
    let narrowed: String = allow
        .lines()
        .filter(|l| l.split_whitespace().next() != Some("MIT"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(copy.join("image/licences.allow"), narrowed).unwrap();
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("SHA256SUMS"), "earlier build\n").unwrap();
    let r = run(Command::new(copy.join("scripts/build-image"))
        .args(["--demo", "--skip-cargo", "--out"])
        .arg(&out));
    assert!(!r.ok, "build-image passed without MIT allowed");
    let linked = where_linked(&oracle());
    let lic = licences(&root());
    let (key, bins) = linked
        .iter()
        .find(|(k, _)| lic[*k] == "MIT")
        .expect("a linked MIT crate");
    let want = format!(
        "build-image: licence check: crate {} {} (in {bins}): licence 'MIT' is not in image/licences.allow",
        key.0, key.1
    );
    assert!(
        r.stderr.lines().any(|l| l == want),
        "{}\nwanted: {want}",
        r.stderr
    );
    assert!(
        r.stderr
            .lines()
            .all(|l| l.starts_with("build-image: licence check: crate ")),
        "build-image went on:\n{}",
        r.stderr
    );
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec!["SHA256SUMS"]);
    assert_eq!(
        fs::read_to_string(out.join("SHA256SUMS")).unwrap(),
        "earlier build\n"
    );
}

fn out_sbom() -> (PathBuf, Value) {
    let out = airlock_e2e::artifacts::out_dir();
    let path = out.join("sbom.cdx.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/build-image first (or point AIRLOCK_OUT at its outputs)",
            path.display()
        )
    });
    (out, serde_json::from_str(&text).unwrap())
}

fn prop<'a>(c: &'a Value, name: &str) -> Vec<&'a str> {
    c["properties"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["name"] == name)
                .map(|p| p["value"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn dpkg_version(pkg: &str) -> String {
    let r = run(Command::new("dpkg-query").args(["-W", "-f", "${Version}", pkg]));
    assert!(r.ok, "{pkg}: {}", r.stderr);
    r.stdout
}

#[test]
fn the_sbom_lists_every_linked_crate_and_the_image_parts() {
    let (out, doc) = out_sbom();
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(doc["specVersion"], "1.5");
    let serial = doc["serialNumber"].as_str().unwrap();
    assert!(
        serial.starts_with("urn:uuid:") && serial.as_bytes()[23] == b'5',
        "{serial} is not a UUID v5"
    );
    let comps = doc["components"].as_array().unwrap();
    let by_ref: BTreeMap<&str, &Value> = comps
        .iter()
        .map(|c| (c["bom-ref"].as_str().unwrap(), c))
        .collect();
    assert_eq!(by_ref.len(), comps.len(), "bom-refs are not unique");

    // (c) Rust crates: exactly the oracle's set per binary.
    let oracle = oracle();
    for (bin, want) in &oracle {
        let got: BTreeSet<Key> = comps
            .iter()
            .filter(|c| {
                prop(c, "airlock:linked-into")
                    .first()
                    .is_some_and(|v| v.split(' ').any(|b| b == bin))
            })
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{bin}: missing {missing:?}, not linked {extra:?}"
        );
        // The brief's cross-check: cargo tree of the binary's package alone
        // (fewer features than the workspace build) is a subset.
        let pkg = if bin == "airlock-init" {
            "airlock-supervisor"
        } else if bin == "airlock-probe" {
            "airlock-sandbox"
        } else {
            bin.as_str()
        };
        let tree = cargo(
            &root(),
            &[
                "tree",
                "--frozen",
                "-p",
                pkg,
                "-e",
                "normal,no-proc-macro",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--prefix",
                "none",
                "-f",
                "{p}",
            ],
        );
        for line in tree.lines() {
            let f: Vec<_> = line.split_whitespace().collect();
            if f.len() >= 2 {
                let key = (f[0].to_string(), f[1].trim_start_matches('v').to_string());
                assert!(got.contains(&key), "{bin}: cargo tree -p {pkg} has {key:?}");
            }
        }
    }

    // Checksums: registry crates as in Cargo.lock, patched ones as in
    // patches/crates.lock, with each patch file and its SHA-256.
    let lock = fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let mut lock_sums = BTreeMap::new();
    for block in lock.split("[[package]]") {
        let field = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        if let (Some(n), Some(v), Some(c)) = (field("name"), field("version"), field("checksum")) {
            lock_sums.insert((n, v), c);
        }
    }
    let patched: Vec<(String, String, String)> =
        fs::read_to_string(root().join("patches/crates.lock"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                (f[0].to_string(), f[1].to_string(), f[2].to_string())
            })
            .collect();
    let hash = |c: &Value| c["hashes"][0]["content"].as_str().map(str::to_string);
    for c in comps
        .iter()
        .filter(|c| !prop(c, "airlock:linked-into").is_empty())
    {
        let key = (
            c["name"].as_str().unwrap().to_string(),
            c["version"].as_str().unwrap().to_string(),
        );
        match prop(c, "airlock:source")[0] {
            "registry" => assert_eq!(hash(c), lock_sums.get(&key).cloned(), "{key:?}"),
            "workspace" => assert!(key.0.starts_with("airlock-") && hash(c).is_none()),
            "patched" => {}
            other => panic!("{key:?}: source {other}"),
        }
        assert!(
            c["licenses"][0]["expression"].is_string(),
            "{key:?} has no licence"
        );
    }
    for (name, version, sum) in &patched {
        let c = by_ref[format!("pkg:cargo/{name}@{version}").as_str()];
        assert_eq!(prop(c, "airlock:source"), ["patched"]);
        assert_eq!(hash(c).as_deref(), Some(sum.as_str()), "{name}");
        let dir = root().join(format!("patches/{name}-{version}"));
        let mut want: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "patch"))
            .map(|p| {
                format!(
                    "patches/{name}-{version}/{} sha256:{}",
                    p.file_name().unwrap().to_str().unwrap(),
                    sha256(&p)
                )
            })
            .collect();
        want.sort();
        assert!(!want.is_empty());
        assert_eq!(prop(c, "airlock:patch"), want, "{name}");
    }

    // Binaries as stripped in the initramfs.
    let files = fs::read_to_string(out.join("initramfs.files")).unwrap();
    for bin in shipped() {
        let c = by_ref[format!("binary:{bin}").as_str()];
        let path = prop(c, "airlock:initramfs-path")[0];
        let line = files
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap();
        assert_eq!(hash(c).as_deref(), line.split_whitespace().nth(3), "{bin}");
    }

    // Kernel, its Debian source package, systemd-boot, the C runtime.
    let kernel = by_ref["linux-kernel"];
    assert_eq!(hash(kernel), Some(sha256(&out.join("bzImage"))));
    let version = fs::read_to_string(root().join("kernel-config/VERSION")).unwrap();
    let pinned = version
        .lines()
        .find_map(|l| l.strip_prefix("version="))
        .unwrap();
    assert_eq!(kernel["version"], pinned.split('-').next().unwrap());
    assert_eq!(prop(kernel, "airlock:kernel-cache-key")[0].len(), 16);
    assert_eq!(
        prop(kernel, "airlock:kernel-config-fragment-sha256"),
        [sha256(&root().join("kernel-config/airlock.config"))]
    );
    assert_eq!(prop(kernel, "airlock:kernel-config-sha256")[0].len(), 64);
    let deb = |pkg: &str| -> &Value {
        comps
            .iter()
            .find(|c| c["name"] == pkg && prop(c, "airlock:source") == ["debian"])
            .unwrap_or_else(|| panic!("no Debian package {pkg}"))
    };
    for pkg in ["linux-source-6.12", "systemd-boot-efi", "libc6-dev"] {
        assert_eq!(deb(pkg)["version"], dpkg_version(pkg).as_str(), "{pkg}");
    }
    let sd: BTreeMap<&str, &str> = deb("systemd-boot-efi")["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap(),
                f["hashes"][0]["content"].as_str().unwrap(),
            )
        })
        .collect();
    let mut want = vec!["/usr/lib/systemd/boot/efi/linuxx64.efi.stub"];
    if out.join("airlock.img").exists() {
        want.push("/usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    }
    assert_eq!(sd.keys().copied().collect::<Vec<_>>(), want);
    for f in want {
        assert_eq!(sd[f], sha256(Path::new(f)), "{f}");
    }
    let libc = deb("libc6-dev");
    assert!(libc["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "/usr/lib/x86_64-linux-gnu/libc.a"));
    let deps: BTreeMap<&str, Vec<&str>> = doc["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["ref"].as_str().unwrap(),
                d["dependsOn"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert!(deps["airlock-image"].contains(&"linux-kernel"));
    assert!(deps["linux-kernel"].contains(&deb("linux-source-6.12")["bom-ref"].as_str().unwrap()));
    for bin in shipped() {
        assert!(deps[format!("binary:{bin}").as_str()].contains(&libc["bom-ref"].as_str().unwrap()));
    }
}

/// Same inputs, same bytes; another SOURCE_DATE_EPOCH changes the timestamp
/// and with it the content-derived serial number.
#[test]
fn the_sbom_is_deterministic() {
    let (out, _) = out_sbom();
    let bz = out.join("bzImage");
    let gen = |epoch: &str| {
        let r = run(Command::new(root().join("scripts/sbom"))
            .args(["image", "--out"])
            .arg(&out)
            .arg("--bzimage")
            .arg(&bz)
            .env("SOURCE_DATE_EPOCH", epoch));
        assert!(r.ok, "{}", r.stderr);
        r.stdout
    };
    let (a, b, c) = (gen("1700000000"), gen("1700000000"), gen("1700000001"));
    assert_eq!(a, b);
    let (a, c): (Value, Value) = (
        serde_json::from_str(&a).unwrap(),
        serde_json::from_str(&c).unwrap(),
    );
    assert_eq!(a["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    assert_ne!(a["serialNumber"], c["serialNumber"]);
}

/// `scripts/sbom stick`: each bundle with its manifest's SHA-256 and
/// payload hashes; a payload pinned in the models lock names its wheel.
#[test]
fn the_stick_sbom_names_pinned_wheels() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("m_2.airlock");
    fs::create_dir(&b).unwrap();
    let manifest = r#"{"schema":"airlock-bundle/1","kind":"model","name":"m","version":2,"description":"d","files":[{"path":"a.gguf","size":1,"sha256":"aa"},{"path":"b.jinja","size":1,"sha256":"bb"}]}"#;
    fs::write(b.join("manifest.json"), manifest).unwrap();
    fs::write(b.join("manifest.json.k.minisig"), "sig").unwrap();
    let lock = tmp.path().join("models.lock");
    fs::write(
        &lock,
        "# x\nm1 pkg==1.0 pkg-1.0-py3-none-any.whl ww m/a.gguf aa\n",
    )
    .unwrap();
    let r = sbom(&[
        "stick",
        "--models-lock",
        lock.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(r.ok, "{}", r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    let c = &doc["components"][0];
    assert_eq!(c["bom-ref"], "bundle:model/m@2");
    assert_eq!(c["type"], "machine-learning-model");
    assert_eq!(
        prop(c, "airlock:manifest-sha256"),
        [sha256(&b.join("manifest.json"))]
    );
    assert_eq!(prop(c, "airlock:signature"), ["manifest.json.k.minisig"]);
    let files = c["components"].as_array().unwrap();
    assert_eq!(files[0]["hashes"][0]["content"], "aa");
    let wheel = &files[0]["pedigree"]["ancestors"][0];
    assert_eq!(wheel["purl"], "pkg:pypi/pkg@1.0");
    assert_eq!(wheel["hashes"][0]["content"], "ww");
    assert!(files[1].get("pedigree").is_none());
    assert_eq!(prop(&files[1], "airlock:origin").len(), 1);
    let r = sbom(&["stick", tmp.path().join("nope").to_str().unwrap()]);
    assert!(!r.ok);
    assert!(
        r.stderr.trim_end()
            == format!(
                "sbom: stick SBOM: reading {}/nope/manifest.json: No such file or directory",
                tmp.path().display()
            ),
        "{}",
        r.stderr
    );
}
