//! Fault tests of the streaming import: the source changes or vanishes
//! mid-copy, the disk fills up, leftovers of a crash. After each failure the
//! store is byte-for-byte as before and no staging is left. Also the
//! store's life cycle: a store without its state is refused, stores are
//! initialised and recovered explicitly, and no import deletes versions the
//! state does not list. Needs root (tmpfs and loop mounts), as CI runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_formats::import::{self, Commit, ImportError, Progress};
use airlock_formats::manifest::{Kind, MANIFEST_FILE};
use airlock_formats::minisig::SecretKey;
use airlock_formats::pack::{self, Input, PackSpec, Section};
use airlock_formats::state::{Pending, State};
use airlock_formats::store;
use airlock_formats::trust::{Role, TrustFile};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Keys {
    models: SecretKey,
    system: SecretKey,
    trust: TrustFile,
}

fn keys() -> Keys {
    let root = SecretKey::generate().unwrap();
    let models = SecretKey::generate().unwrap();
    let system = SecretKey::generate().unwrap();
    let mut trust = TrustFile::new(vec![("root".into(), root.public_key())], 1).unwrap();
    trust
        .add_key("models", &models.public_key(), Role::Models)
        .unwrap();
    trust
        .add_key("system", &system.public_key(), Role::System)
        .unwrap();
    Keys {
        models,
        system,
        trust,
    }
}

/// Writes a deterministic payload of `len` bytes.
fn payload(path: &Path, len: usize, seed: u8) {
    let mut f = fs::File::create(path).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    let mut i: u32 = seed as u32;
    while left > 0 {
        for b in block.iter_mut() {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (i >> 16) as u8;
        }
        let n = left.min(block.len());
        f.write_all(&block[..n]).unwrap();
        left -= n;
    }
}

/// Packs and signs a model bundle `out` from `src_file`.
fn bundle(k: &Keys, src_file: &Path, out: &Path, version: u64) {
    bundle_split(k, src_file, out, version, None);
}

/// Signs (again) the manifest of the model bundle `out`.
fn sign_model(k: &Keys, out: &Path) {
    let bytes = fs::read(out.join(MANIFEST_FILE)).unwrap();
    pack::write_signature(out, MANIFEST_FILE, "models", &k.models, &bytes, "t").unwrap();
}

/// [`bundle`] with payloads larger than `split` written as parts.
fn bundle_split(k: &Keys, src_file: &Path, out: &Path, version: u64, split: Option<u64>) {
    let spec = PackSpec {
        name: "tiny".into(),
        version,
        description: String::new(),
        created: Some("2026-11-22T00:00:00Z".into()),
        inputs: vec![Input {
            path: "model.gguf".into(),
            source: src_file.to_owned(),
        }],
        section: Section::Model {
            gguf: None,
            architecture: Some("llama".into()),
            context_length: Some(256),
            chat_template: None,
        },
        split,
    };
    pack::pack(&spec, out, &mut |_| {}).unwrap();
    sign_model(k, out);
}

/// Packs and signs a system bundle `airlock` version `version` in `dir`.
fn system_bundle(k: &Keys, dir: &Path, version: u64) -> PathBuf {
    let src = dir.join(format!("airlock-{version}.efi"));
    payload(&src, 64 << 10, version as u8);
    let out = dir.join(format!("airlock_{version}.airlock"));
    let spec = PackSpec {
        name: "airlock".into(),
        version,
        description: String::new(),
        created: Some("2026-11-22T00:00:00Z".into()),
        inputs: vec![Input {
            path: "airlock.efi".into(),
            source: src,
        }],
        section: Section::System {
            uki: None,
            variant: "demo".into(),
            trust_sha256: "0".repeat(64),
            trust: None,
        },
        split: None,
    };
    pack::pack(&spec, &out, &mut |_| {}).unwrap();
    let bytes = fs::read(out.join(MANIFEST_FILE)).unwrap();
    pack::write_signature(&out, MANIFEST_FILE, "system", &k.system, &bytes, "t").unwrap();
    out
}

/// Every path below `store` (except the lock file) with the SHA-256 of files.
fn snapshot(store: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if rel == import::LOCK_FILE {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                out.insert(rel.clone(), "dir".into());
                walk(base, &p, out);
            } else {
                out.insert(rel, format!("{:x}", Sha256::digest(fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(store, store, &mut out);
    out
}

/// The store has no staging leftovers.
fn staging_empty(store: &Path) -> bool {
    fs::read_dir(store.join(import::STAGING_DIR)).map_or(true, |mut d| d.next().is_none())
}

/// Runs `f` once, after the first `after` bytes were copied.
struct Hook<F: FnMut()> {
    seen: u64,
    after: u64,
    f: Option<F>,
}

impl<F: FnMut()> Progress for Hook<F> {
    fn advance(&mut self, n: u64) {
        self.seen += n;
        if self.seen >= self.after {
            if let Some(mut f) = self.f.take() {
                f();
            }
        }
    }
}

fn hook<F: FnMut()>(after: u64, f: F) -> Hook<F> {
    Hook {
        seen: 0,
        after,
        f: Some(f),
    }
}

fn sh(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?} failed");
}

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "fault tests mount tmpfs/loop filesystems and need root"
    );
}

/// A store holding version 1, plus a prepared version-2 bundle.
struct Setup {
    _dir: tempfile::TempDir,
    k: Keys,
    store: PathBuf,
    v2: PathBuf,
    src2: PathBuf,
}

fn setup(v2_len: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let store = dir.path().join("store");
    let src1 = dir.path().join("m1.gguf");
    payload(&src1, 1 << 20, 1);
    let v1 = dir.path().join("tiny_1.airlock");
    bundle(&k, &src1, &v1, 1);
    store::init(&store).unwrap();
    import::import(&v1, &store, &k.trust, Commit::Now, &mut import::NoProgress).unwrap();
    let src2 = dir.path().join("m2.gguf");
    payload(&src2, v2_len, 2);
    let v2 = dir.path().join("tiny_2.airlock");
    bundle(&k, &src2, &v2, 2);
    Setup {
        _dir: dir,
        k,
        store,
        v2,
        src2,
    }
}

/// A change made to the source file after the first chunk was copied.
type Mutation = fn(&Path);

#[test]
fn source_changed_mid_copy_is_refused_and_changes_nothing() {
    let rows: &[(&str, Mutation, &str)] = &[
        (
            "truncated",
            |victim| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(victim)
                    .unwrap()
                    .set_len(5 << 20)
                    .unwrap()
            },
            "payload model.gguf: truncated: source ended after",
        ),
        (
            "grown",
            |victim| {
                let mut f = fs::OpenOptions::new().append(true).open(victim).unwrap();
                f.write_all(b"more").unwrap();
            },
            "source is longer than the listed",
        ),
        (
            "overwritten",
            |victim| {
                let f = fs::OpenOptions::new().write(true).open(victim).unwrap();
                f.write_all_at(b"X", (24 << 20) - 1).unwrap();
            },
            "payload model.gguf: SHA-256 mismatch",
        ),
    ];
    for (what, mutate, want) in rows {
        let s = setup(24 << 20);
        let before = snapshot(&s.store);
        let victim = s.v2.join("model.gguf");
        let mut h = hook(1, || mutate(&victim));
        let e = import::import(&s.v2, &s.store, &s.k.trust, Commit::Now, &mut h).unwrap_err();
        assert!(e.to_string().contains(want), "{what}: {e}");
        assert_eq!(snapshot(&s.store), before, "{what}");
        assert!(staging_empty(&s.store), "{what}");
    }
}

#[test]
fn source_removed_mid_copy_is_read_consistently_or_refused() {
    // Unlinking the bundle while it is copied: the open file is read to the
    // end (the inode lives on), and the import completes with verified bytes.
    let s = setup(24 << 20);
    let dir = s.v2.clone();
    let mut h = hook(1, || fs::remove_dir_all(&dir).unwrap());
    let r = import::import(&s.v2, &s.store, &s.k.trust, Commit::Now, &mut h).unwrap();
    assert_eq!(r.version, 2);
    let installed = s.store.join("model/tiny/2/model.gguf");
    assert_eq!(fs::read(installed).unwrap(), fs::read(&s.src2).unwrap());
}

/// Unmounts and removes a mount point on drop.
struct Mount(PathBuf, Option<String>);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        if let Some(dev) = &self.1 {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

#[test]
fn disk_full_on_store() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    sh(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=6m",
            "tmpfs",
            store.to_str().unwrap(),
        ],
    );
    let _m = Mount(store.clone(), None);
    let src1 = dir.path().join("m1.gguf");
    payload(&src1, 1 << 20, 1);
    let v1 = dir.path().join("tiny_1.airlock");
    bundle(&k, &src1, &v1, 1);
    store::init(&store).unwrap();
    import::import(&v1, &store, &k.trust, Commit::Now, &mut import::NoProgress).unwrap();
    let before = snapshot(&store);
    // A bundle larger than the free space: refused before staging.
    let src2 = dir.path().join("m2.gguf");
    payload(&src2, 8 << 20, 2);
    let v2 = dir.path().join("tiny_2.airlock");
    bundle(&k, &src2, &v2, 2);
    let free = import::free_bytes(&store).unwrap();
    let e =
        import::import(&v2, &store, &k.trust, Commit::Now, &mut import::NoProgress).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "not enough space: needs 8.0 MiB, {} free",
            import::human_bytes(free)
        )
    );
    assert_eq!(snapshot(&store), before);
    assert!(staging_empty(&store));
    // A payload that just fits the check: the manifest and signature files
    // staged beside it take the last pages, the copy hits ENOSPC and is
    // cleaned up.
    let src2 = dir.path().join("m2b.gguf");
    payload(&src2, (free - 4096) as usize, 2);
    let v2 = dir.path().join("tiny_2b.airlock");
    bundle(&k, &src2, &v2, 2);
    let e =
        import::import(&v2, &store, &k.trust, Commit::Now, &mut import::NoProgress).unwrap_err();
    assert!(
        e.to_string()
            .contains("write staging copy: No space left on device"),
        "{e}"
    );
    assert_eq!(snapshot(&store), before);
    assert!(staging_empty(&store));
    // Space is back after the cleanup: a small bundle still imports.
    let src3 = dir.path().join("m3.gguf");
    payload(&src3, 1 << 20, 3);
    let v3 = dir.path().join("tiny_3.airlock");
    bundle(&k, &src3, &v3, 3);
    import::import(&v3, &store, &k.trust, Commit::Now, &mut import::NoProgress).unwrap();
}

#[test]
fn stick_pulled_mid_copy_gives_eio() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let store = dir.path().join("store");
    let img = dir.path().join("stick.img");
    fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    sh("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
    let out = Command::new("losetup")
        .args(["--find", "--show", img.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mnt = dir.path().join("stick");
    fs::create_dir(&mnt).unwrap();
    sh("mount", &[&dev, mnt.to_str().unwrap()]);
    let m = Mount(mnt.clone(), Some(dev.clone()));
    let src = dir.path().join("m.gguf");
    payload(&src, 40 << 20, 4);
    let b = mnt.join("tiny_2.airlock");
    bundle(&k, &src, &b, 2);
    // Remount so that nothing of the bundle is in the page cache.
    sh("umount", &[mnt.to_str().unwrap()]);
    sh("blockdev", &["--flushbufs", &dev]);
    sh("mount", &["-o", "ro", &dev, mnt.to_str().unwrap()]);
    store::init(&store).unwrap();
    let before = snapshot(&store);
    let img2 = img.clone();
    let dev2 = dev.clone();
    let mut h = hook(1, move || {
        // The stick "goes away": the device shrinks to 1 MiB, reads fail.
        fs::OpenOptions::new()
            .write(true)
            .open(&img2)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        sh("losetup", &["-c", &dev2]);
    });
    let e = import::import(&b, &store, &k.trust, Commit::Now, &mut h).unwrap_err();
    assert!(
        matches!(e, ImportError::Bundle(_))
            && e.to_string().contains("read source: Input/output error"),
        "{e}"
    );
    assert_eq!(snapshot(&store), before);
    assert!(staging_empty(&store));
    drop(m);
}

#[test]
fn crash_leftovers_removed_by_next_import() {
    let s = setup(1 << 20);
    // A crash left a staging directory, and an uncommitted version directory
    // renamed into place with its intent recorded but not committed.
    let stale = s.store.join(import::STAGING_DIR).join("model-tiny-2-999");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("model.gguf"), b"partial").unwrap();
    let uncommitted = s.store.join("model/tiny/7");
    fs::create_dir_all(&uncommitted).unwrap();
    fs::write(uncommitted.join("manifest.json"), b"{}").unwrap();
    let mut state = State::load(&s.store).unwrap();
    state.add_pending(Pending {
        kind: Kind::Model,
        name: "tiny".into(),
        version: 7,
        manifest_sha256: "00".repeat(32),
        deferred: false,
    });
    state.save(&s.store).unwrap();
    // A directory the state does not mention at all is not the import's to delete.
    let unknown = s.store.join("model/other/3");
    fs::create_dir_all(&unknown).unwrap();
    fs::write(unknown.join("manifest.json"), b"{}").unwrap();
    let before = snapshot(&s.store);
    let committed: Vec<_> = import::installed(&s.store)
        .unwrap()
        .into_iter()
        .map(|x| x.2)
        .collect();
    assert_eq!(committed, vec![1], "uncommitted directory is not installed");
    let r = import::import(
        &s.v2,
        &s.store,
        &s.k.trust,
        Commit::Now,
        &mut import::NoProgress,
    )
    .unwrap();
    assert_eq!(r.recovered.len(), 2, "{:?}", r.recovered);
    assert!(!uncommitted.exists());
    assert!(
        unknown.join("manifest.json").exists(),
        "unknown directory kept"
    );
    assert!(staging_empty(&s.store));
    let after = snapshot(&s.store);
    let old: Vec<_> = before
        .iter()
        .filter(|(k, _)| k.starts_with("model/tiny/1"))
        .collect();
    assert!(
        !old.is_empty() && old.iter().all(|(k, v)| after.get(*k) == Some(v)),
        "old version untouched"
    );
    let committed: Vec<_> = import::installed(&s.store)
        .unwrap()
        .into_iter()
        .map(|x| x.2)
        .collect();
    assert_eq!(committed, vec![1, 2]);
    assert!(State::load(&s.store).unwrap().pending.is_empty());
}

const MISSING_STATE: &str = "has no state.json (anti-rollback state missing): refused; a new store is initialised, a store that lost its state is recovered, each explicitly";

#[test]
fn missing_state_refuses_import_and_changes_nothing() {
    let s = setup(1 << 20);
    fs::remove_file(s.store.join("state.json")).unwrap();
    let before = snapshot(&s.store);
    let e = import::import(
        &s.v2,
        &s.store,
        &s.k.trust,
        Commit::Now,
        &mut import::NoProgress,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("store {} {MISSING_STATE}", s.store.display())
    );
    assert_eq!(snapshot(&s.store), before, "nothing changed on disk");
    assert!(s.store.join("model/tiny/1/model.gguf").exists());
    let e = import::installed(&s.store).unwrap_err();
    assert!(e.to_string().ends_with(MISSING_STATE), "{e}");
}

#[test]
fn fresh_store_must_be_initialised_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let src = dir.path().join("m.gguf");
    payload(&src, 4096, 1);
    let b = dir.path().join("tiny_1.airlock");
    bundle(&k, &src, &b, 1);
    let store = dir.path().join("store");
    let import =
        |store: &Path| import::import(&b, store, &k.trust, Commit::Now, &mut import::NoProgress);
    // Absent directory: refused, not created.
    let e = import(&store).unwrap_err();
    assert!(e.to_string().ends_with(MISSING_STATE), "{e}");
    assert!(!store.exists());
    // Empty directory: refused, left empty.
    fs::create_dir(&store).unwrap();
    let e = import(&store).unwrap_err();
    assert!(e.to_string().ends_with(MISSING_STATE), "{e}");
    assert_eq!(fs::read_dir(&store).unwrap().count(), 0);
    store::init(&store).unwrap();
    import(&store).unwrap();
    // Init refuses an initialised store and a non-empty directory (a store
    // that lost its state must be recovered, not re-initialised).
    let cases: &[(&str, &dyn Fn(), String)] = &[
        (
            "initialised",
            &|| {},
            format!(
                "init store {}: already initialised (it has a state.json)",
                store.display()
            ),
        ),
        (
            "lost its state",
            &|| fs::remove_file(store.join("state.json")).unwrap(),
            format!(
                "init store {}: not empty (holds model); a store that lost its state is recovered, not initialised",
                store.display()
            ),
        ),
    ];
    for (what, prepare, want) in cases {
        prepare();
        let e = store::init(&store).unwrap_err();
        assert_eq!(e.to_string(), *want, "{what}");
    }
}

#[test]
fn deferred_system_version_survives_model_import_until_committed() {
    let s = setup(1 << 20);
    let sys = system_bundle(&s.k, s._dir.path(), 5);
    import::import(
        &sys,
        &s.store,
        &s.k.trust,
        Commit::Deferred,
        &mut import::NoProgress,
    )
    .unwrap();
    let deferred = s.store.join("system/airlock/5");
    assert!(deferred.join("airlock.efi").exists());
    let r = import::import(
        &s.v2,
        &s.store,
        &s.k.trust,
        Commit::Now,
        &mut import::NoProgress,
    )
    .unwrap();
    assert!(r.recovered.is_empty(), "{:?}", r.recovered);
    assert!(
        deferred.join("airlock.efi").exists(),
        "deferred version kept"
    );
    let installed = |store: &Path| -> Vec<(Kind, u64)> {
        import::installed(store)
            .unwrap()
            .into_iter()
            .map(|x| (x.0, x.2))
            .collect()
    };
    assert_eq!(
        installed(&s.store),
        vec![(Kind::Model, 1), (Kind::Model, 2)],
        "not committed yet"
    );
    import::commit_deferred(&s.store, Kind::System, "airlock", 5).unwrap();
    assert_eq!(
        installed(&s.store),
        vec![(Kind::Model, 1), (Kind::Model, 2), (Kind::System, 5)]
    );
    let e = import::commit_deferred(&s.store, Kind::System, "airlock", 5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "commit system airlock version 5: no such deferred import is pending"
    );
}

#[test]
fn recover_rebuilds_state_only_when_asked() {
    let s = setup(1 << 20);
    import::import(
        &s.v2,
        &s.store,
        &s.k.trust,
        Commit::Now,
        &mut import::NoProgress,
    )
    .unwrap();
    let state = fs::read(s.store.join("state.json")).unwrap();
    let e = store::recover(&s.store, &s.k.trust).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "recover store {}: it has a state.json; recovery only rebuilds a missing state",
            s.store.display()
        )
    );
    fs::remove_file(s.store.join("state.json")).unwrap();
    // A tampered version directory is skipped (reported), never deleted.
    let bad = s.store.join("model/tiny/9");
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("manifest.json"), b"{}").unwrap();
    let r = store::recover(&s.store, &s.k.trust).unwrap();
    let recorded: Vec<_> = r
        .recorded
        .iter()
        .map(|x| (x.0, x.1.as_str(), x.2))
        .collect();
    assert_eq!(recorded, vec![(Kind::Model, "tiny", 2)]);
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert_eq!(r.skipped[0].0, bad);
    assert!(
        r.skipped[0].1.starts_with("manifest.json: "),
        "{:?}",
        r.skipped
    );
    assert!(bad.exists());
    // Same anti-rollback record as before the loss (custody records are
    // not rebuilt: the listing shows those versions with importer unknown).
    let before = State::parse(&state).unwrap();
    let after = State::load(&s.store).unwrap();
    assert_eq!(after.entries, before.entries);
    assert!(after.versions.is_empty() && after.active.is_empty());
}

#[test]
fn second_concurrent_import_is_refused() {
    let s = setup(8 << 20);
    let store = s.store.clone();
    let trust = s.k.trust.clone();
    let v2 = s.v2.clone();
    let mut h = hook(1, move || {
        let e =
            import::import(&v2, &store, &trust, Commit::Now, &mut import::NoProgress).unwrap_err();
        assert!(e.to_string().contains("is locked by another import"), "{e}");
    });
    import::import(&s.v2, &s.store, &s.k.trust, Commit::Now, &mut h).unwrap();
    assert!(h.f.is_none(), "hook ran");
}

#[test]
fn reimport_same_is_noop() {
    let s = setup(1 << 20);
    import::import(
        &s.v2,
        &s.store,
        &s.k.trust,
        Commit::Now,
        &mut import::NoProgress,
    )
    .unwrap();
    let before = snapshot(&s.store);
    let r = import::import(
        &s.v2,
        &s.store,
        &s.k.trust,
        Commit::Now,
        &mut import::NoProgress,
    )
    .unwrap();
    assert!(r.already_installed);
    assert_eq!(snapshot(&s.store), before);
}

// Split payloads (a model larger than a FAT32 file travels as parts).

const MIB: u64 = 1 << 20;

/// A store holding version 1, and a version-2 bundle of a 3.5 MiB model
/// packed in 1 MiB parts.
fn split_setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let store = dir.path().join("store");
    let src1 = dir.path().join("m1.gguf");
    payload(&src1, 1 << 20, 1);
    let v1 = dir.path().join("tiny_1.airlock");
    bundle(&k, &src1, &v1, 1);
    store::init(&store).unwrap();
    import::import(&v1, &store, &k.trust, Commit::Now, &mut import::NoProgress).unwrap();
    let src2 = dir.path().join("m2.gguf");
    payload(&src2, (7 * MIB / 2) as usize, 2);
    let v2 = dir.path().join("tiny_2.airlock");
    bundle_split(&k, &src2, &v2, 2, Some(MIB));
    Setup {
        _dir: dir,
        k,
        store,
        v2,
        src2,
    }
}

fn part(s: &Setup, n: u64) -> PathBuf {
    s.v2.join(pack::part_path("model.gguf", n))
}

#[test]
fn split_round_trip() {
    let s = split_setup();
    // On the stick: four parts (1, 1, 1, 0.5 MiB), no joined file.
    let m =
        airlock_formats::manifest::Manifest::parse(&fs::read(s.v2.join(MANIFEST_FILE)).unwrap())
            .unwrap();
    let f = &m.files[0];
    assert_eq!(f.path, "model.gguf");
    assert_eq!(f.size, 7 * MIB / 2);
    assert_eq!(
        f.sha256,
        format!("{:x}", Sha256::digest(fs::read(&s.src2).unwrap()))
    );
    let sizes: Vec<u64> = f.parts().iter().map(|p| p.size).collect();
    assert_eq!(sizes, [MIB, MIB, MIB, MIB / 2]);
    for (n, p) in f.parts().iter().enumerate() {
        assert_eq!(p.path, format!("model.gguf.part{n:03}"));
        let bytes = fs::read(part(&s, n as u64)).unwrap();
        assert_eq!(p.sha256, format!("{:x}", Sha256::digest(&bytes)));
    }
    assert!(!s.v2.join("model.gguf").exists());
    // Import joins them; progress counts every byte once.
    struct Count(u64);
    impl Progress for Count {
        fn advance(&mut self, n: u64) {
            self.0 += n;
        }
    }
    let mut count = Count(0);
    let r = import::import(&s.v2, &s.store, &s.k.trust, Commit::Now, &mut count).unwrap();
    assert_eq!((r.bytes, count.0), (7 * MIB / 2, 7 * MIB / 2));
    let dest = s.store.join("model/tiny/2");
    assert_eq!(
        fs::read(dest.join("model.gguf")).unwrap(),
        fs::read(&s.src2).unwrap()
    );
    let mut names: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "manifest.json",
            "manifest.json.models.minisig",
            "model.gguf"
        ]
    );
    assert!(staging_empty(&s.store));
    // The version in the store (joined form) verifies against the same
    // signed manifest.
    let (b, _) = airlock_formats::bundle::open_verified(&dest, &s.k.trust).unwrap();
    assert!(!b.is_split(&b.manifest.files[0]));
    b.verify_payloads(&mut |_| {}).unwrap();
}

#[test]
fn unsplit_bundle_imports_as_before() {
    let s = setup(3 * MIB as usize);
    let text = fs::read_to_string(s.v2.join(MANIFEST_FILE)).unwrap();
    assert!(!text.contains("parts"), "{text}");
    // A split size above the file's size does not split either.
    let out = s._dir.path().join("tiny_3.airlock");
    bundle_split(&s.k, &s.src2, &out, 3, Some(4 * MIB));
    let text3 = fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
    assert!(!text3.contains("parts"), "{text3}");
    import::import(
        &s.v2,
        &s.store,
        &s.k.trust,
        Commit::Now,
        &mut import::NoProgress,
    )
    .unwrap();
    assert_eq!(
        fs::read(s.store.join("model/tiny/2/model.gguf")).unwrap(),
        fs::read(&s.src2).unwrap()
    );
}

/// Each broken split bundle is refused with a one-line reason naming the
/// part (or the joined file), and the store is exactly as before.
#[test]
fn split_refusals_leave_store_unchanged() {
    type Break = fn(&Setup);
    let cases: &[(&str, Break, &str)] = &[
        (
            "part missing",
            |s| fs::remove_file(part(s, 2)).unwrap(),
            "payload model.gguf.part002 listed in manifest.json is missing",
        ),
        (
            "part too short",
            |s| {
                let f = fs::OpenOptions::new().write(true).open(part(s, 1)).unwrap();
                f.set_len(MIB - 1).unwrap();
            },
            "payload model.gguf.part001 is 1048575 bytes, manifest.json says 1048576",
        ),
        (
            "part too long",
            |s| {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(part(s, 3))
                    .unwrap();
                f.write_all(b"x").unwrap();
            },
            "payload model.gguf.part003 is 524289 bytes, manifest.json says 524288",
        ),
        (
            "part edited",
            |s| {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(part(s, 1))
                    .unwrap();
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, 4242).unwrap();
                f.write_all_at(&[b[0] ^ 1], 4242).unwrap();
            },
            "part model.gguf.part001 of payload model.gguf: SHA-256 mismatch",
        ),
        (
            "parts swapped",
            |s| {
                let tmp = s.v2.with_extension("tmp");
                fs::rename(part(s, 0), &tmp).unwrap();
                fs::rename(part(s, 1), part(s, 0)).unwrap();
                fs::rename(&tmp, part(s, 1)).unwrap();
            },
            "part model.gguf.part000 of payload model.gguf: SHA-256 mismatch",
        ),
        (
            "joined hash differs (parts as listed, signed)",
            |s| {
                let p = s.v2.join(MANIFEST_FILE);
                let text = fs::read_to_string(&p).unwrap();
                let whole = format!("{:x}", Sha256::digest(fs::read(&s.src2).unwrap()));
                let text = text.replace(&whole, &"0".repeat(64));
                fs::write(&p, text).unwrap();
                sign_model(&s.k, &s.v2);
            },
            "payload model.gguf joined from 4 parts: SHA-256 mismatch (manifest 0000",
        ),
        (
            "joined file next to its parts",
            |s| {
                fs::copy(&s.src2, s.v2.join("model.gguf")).unwrap();
            },
            "payload model.gguf is present both joined and as parts (refused)",
        ),
    ];
    for (what, break_it, want) in cases {
        let s = split_setup();
        break_it(&s);
        let before = snapshot(&s.store);
        let e = import::import(
            &s.v2,
            &s.store,
            &s.k.trust,
            Commit::Now,
            &mut import::NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{what}: {e}");
        assert!(!e.contains('\n'), "{what}: one line: {e}");
        assert_eq!(snapshot(&s.store), before, "{what}: store changed");
        assert!(staging_empty(&s.store), "{what}");
    }
}

#[test]
fn split_part_overwritten_mid_copy_refused() {
    let s = split_setup();
    let before = snapshot(&s.store);
    let p2 = part(&s, 2);
    let mut h = hook(MIB + 1, move || {
        let f = fs::OpenOptions::new().write(true).open(&p2).unwrap();
        f.write_all_at(b"changed after the scan", 100).unwrap();
    });
    let e = import::import(&s.v2, &s.store, &s.k.trust, Commit::Now, &mut h)
        .unwrap_err()
        .to_string();
    assert!(h.f.is_none(), "hook ran");
    assert!(
        e.contains("part model.gguf.part002 of payload model.gguf: SHA-256 mismatch"),
        "{e}"
    );
    assert_eq!(snapshot(&s.store), before);
    assert!(staging_empty(&s.store));
}
