//! Model custody: custody records written by the import, listing,
//! activate / rollback / remove / prune with their refusals, crash points
//! of a removal, and the at-rest check catching a file edited in place.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_formats::at_rest;
use airlock_formats::custody::{self, CustodyError};
use airlock_formats::import::{self, Commit, Importer};
use airlock_formats::manifest::{Kind, MANIFEST_FILE};
use airlock_formats::minisig::SecretKey;
use airlock_formats::pack::{self, Input, PackSpec, Section};
use airlock_formats::state::{Removing, State};
use airlock_formats::store;
use airlock_formats::trust::{Role, TrustFile};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    models: SecretKey,
    trust: TrustFile,
    store: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = SecretKey::generate().unwrap();
    let models = SecretKey::generate().unwrap();
    let mut trust = TrustFile::new(vec![("root".into(), root.public_key())], 1).unwrap();
    trust
        .add_key("alice", &models.public_key(), Role::Models)
        .unwrap();
    let store = dir.path().join("store");
    store::init(&store).unwrap();
    Fixture {
        dir: dir.path().to_owned(),
        _dir: dir,
        models,
        trust,
        store,
    }
}

impl Fixture {
    /// Packs, signs and imports model `tiny` version `v` (payload of
    /// `v * 1000` bytes) as `by`, at unix time `1_800_000_000 + v`.
    fn import(&self, v: u64, by: &str) {
        let src = self.dir.join(format!("m{v}.gguf"));
        let data: Vec<u8> = (0..v * 1000).map(|i| (i * 7 + v) as u8).collect();
        fs::write(&src, data).unwrap();
        let out = self.dir.join(format!("tiny_{v}.airlock"));
        let spec = PackSpec {
            name: "tiny".into(),
            version: v,
            description: String::new(),
            created: Some("2026-11-22T00:00:00Z".into()),
            inputs: vec![Input {
                path: "model.gguf".into(),
                source: src,
            }],
            section: Section::Model {
                gguf: None,
                architecture: Some("llama".into()),
                context_length: Some(256),
                chat_template: None,
            },
            split: None,
        };
        pack::pack(&spec, &out, &mut |_| {}).unwrap();
        let bytes = fs::read(out.join(MANIFEST_FILE)).unwrap();
        pack::write_signature(&out, MANIFEST_FILE, "alice", &self.models, &bytes, "t").unwrap();
        let by = Importer {
            account: by.into(),
            at: 1_800_000_000 + v,
        };
        import::import_by(
            &out,
            &self.store,
            &self.trust,
            Commit::Now,
            &by,
            &mut import::NoProgress,
        )
        .unwrap();
    }

    fn installed(&self) -> Vec<u64> {
        let m = custody::models(&self.store).unwrap();
        m.iter()
            .flat_map(|m| m.versions.iter().map(|v| v.version))
            .collect()
    }

    fn active(&self) -> Option<u64> {
        State::load(&self.store).unwrap().active_version("tiny")
    }

    fn vdir(&self, v: u64) -> PathBuf {
        custody::model_dir(&self.store, "tiny", v).unwrap()
    }
}

#[test]
fn import_records_custody_and_models_lists_it() {
    let f = fixture();
    f.import(1, "olga");
    f.import(2, "oscar");
    let models = custody::models(&f.store).unwrap();
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!((m.name.as_str(), m.active), ("tiny", None));
    let v2 = &m.versions[1];
    assert_eq!(v2.version, 2);
    assert_eq!(v2.size, 2000);
    assert_eq!(v2.imported_by.as_deref(), Some("oscar"));
    assert_eq!(v2.imported_at.as_deref(), Some("2027-01-15T08:00:02Z"));
    assert_eq!(v2.signers.len(), 1);
    assert_eq!(v2.signers[0].name, "alice");
    assert_eq!(
        v2.signers[0].key_id,
        f.models.public_key().key_id.to_string()
    );
    let st = State::load(&f.store).unwrap();
    assert_eq!(
        v2.manifest_sha256,
        st.get(Kind::Model, "tiny").unwrap().manifest_sha256
    );
    assert_eq!(m.versions[0].imported_by.as_deref(), Some("olga"));
    // The exact JSON of a custody record.
    let json = fs::read_to_string(f.store.join("state.json")).unwrap();
    let want = format!(
        r#""versions": [
    {{
      "kind": "model",
      "name": "tiny",
      "version": 1,
      "manifest_sha256": "{}",
      "size": 1000,
      "signers": [
        {{
          "name": "alice",
          "key_id": "{}"
        }}
      ],
      "imported_at": "2027-01-15T08:00:01Z",
      "imported_by": "olga",
      "used": false
    }},"#,
        m.versions[0].manifest_sha256,
        f.models.public_key().key_id
    );
    assert!(json.contains(&want), "{json}");
}

#[test]
fn activate_rollback_remove_life_cycle() {
    let f = fixture();
    f.import(1, "o");
    f.import(2, "o");
    let a = custody::activate(&f.store, &f.trust, "tiny", 2).unwrap();
    assert_eq!((a.version, a.previous), (2, None));
    // Table: (operation, expected one-line refusal); nothing changes.
    let before = fs::read(f.store.join("state.json")).unwrap();
    type Refusal<'a> = (Box<dyn Fn() -> CustodyError + 'a>, &'static str);
    let refusals: Vec<Refusal> = vec![
        (
            Box::new(|| custody::remove(&f.store, "tiny", 2).unwrap_err()),
            "remove model tiny version 2: it is the active version; activate another first",
        ),
        (
            Box::new(|| custody::remove(&f.store, "tiny", 1).unwrap_err()),
            "remove model tiny version 1: kept as the rollback target until version 2 has run a job",
        ),
        (
            Box::new(|| custody::remove(&f.store, "tiny", 7).unwrap_err()),
            "remove model tiny version 7: not installed",
        ),
        (
            Box::new(|| custody::activate(&f.store, &f.trust, "tiny", 9).unwrap_err()),
            "activate model tiny version 9: not installed",
        ),
        (
            Box::new(|| custody::rollback(&f.store, &f.trust, "other").unwrap_err()),
            "rollback model other: no active version",
        ),
        (
            Box::new(|| custody::mark_used(&f.store, "../x", 1).unwrap_err()),
            "mark model used: name \"../x\" must match [a-z0-9][a-z0-9._-]{0,63}",
        ),
    ];
    for (op, want) in &refusals {
        let e = op();
        if want.starts_with("mark model used") {
            assert!(e.to_string().starts_with("mark model used: "), "{e}");
        } else {
            assert_eq!(e.to_string(), *want);
        }
    }
    assert_eq!(fs::read(f.store.join("state.json")).unwrap(), before);

    let r = custody::rollback(&f.store, &f.trust, "tiny").unwrap();
    assert_eq!((r.version, r.previous), (1, Some(2)));
    let e = custody::rollback(&f.store, &f.trust, "tiny").unwrap_err();
    assert_eq!(
        e.to_string(),
        "rollback model tiny: no installed version below the active version 1"
    );
    custody::activate(&f.store, &f.trust, "tiny", 2).unwrap();
    custody::mark_used(&f.store, "tiny", 2).unwrap();
    custody::mark_used(&f.store, "tiny", 2).unwrap();
    assert_eq!(custody::remove(&f.store, "tiny", 1).unwrap(), 1000);
    assert!(!f.vdir(1).exists(), "space reclaimed");
    assert_eq!(f.installed(), vec![2]);
    assert!(State::load(&f.store).unwrap().removing.is_empty());
    assert!(!f.store.join(import::STAGING_DIR).exists());
}

#[test]
fn prune_keeps_per_policy() {
    // (versions, active, active used, versions left after prune)
    type Case = (&'static [u64], Option<u64>, bool, &'static [u64]);
    let cases: &[Case] = &[
        (&[1, 2, 3], None, false, &[1, 2, 3]),
        (&[1, 2, 3], Some(3), false, &[2, 3]),
        (&[1, 2, 3], Some(3), true, &[3]),
        (&[1, 2, 3], Some(2), false, &[1, 2, 3]),
        (&[1, 2, 3], Some(2), true, &[2, 3]),
        (&[1, 2, 3], Some(1), true, &[1, 2, 3]),
    ];
    for (versions, active, used, left) in cases {
        let f = fixture();
        for &v in *versions {
            f.import(v, "o");
        }
        if let Some(a) = active {
            custody::activate(&f.store, &f.trust, "tiny", *a).unwrap();
            if *used {
                custody::mark_used(&f.store, "tiny", *a).unwrap();
            }
        }
        custody::prune(&f.store, "tiny").unwrap();
        assert_eq!(
            f.installed(),
            left.to_vec(),
            "{versions:?} {active:?} {used}"
        );
        for v in *versions {
            assert_eq!(f.vdir(*v).exists(), left.contains(v), "{v}");
        }
        assert_eq!(f.active(), *active);
    }
}

#[test]
fn removal_interrupted_after_its_commit_is_finished_by_recover() {
    let f = fixture();
    f.import(1, "o");
    f.import(2, "o");
    custody::activate(&f.store, &f.trust, "tiny", 2).unwrap();
    custody::mark_used(&f.store, "tiny", 2).unwrap();
    // Power cut before the commit: the old state, the version still listed.
    assert_eq!(f.installed(), vec![1, 2]);
    // Power cut right after the commit (tombstone written, files not yet
    // deleted): the version is no longer listed nor activatable.
    let mut st = State::load(&f.store).unwrap();
    st.remove_version(Kind::Model, "tiny", 1);
    st.removing.push(Removing {
        kind: Kind::Model,
        name: "tiny".into(),
        version: 1,
    });
    st.save(&f.store).unwrap();
    assert_eq!(f.installed(), vec![2]);
    let e = custody::rollback(&f.store, &f.trust, "tiny").unwrap_err();
    assert!(e.to_string().contains("no installed version below"), "{e}");
    // (rollback took the lock and finished the removal already; redo the
    // crash state to test the boot path)
    fs::create_dir_all(f.vdir(1)).unwrap();
    let mut st = State::load(&f.store).unwrap();
    st.removing.push(Removing {
        kind: Kind::Model,
        name: "tiny".into(),
        version: 1,
    });
    st.save(&f.store).unwrap();
    // Power cut while the directory was moved aside into `.staging`.
    fs::create_dir_all(f.store.join(".staging/removed-model-tiny-1/x")).unwrap();
    let removed = custody::recover(&f.store).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(!f.vdir(1).exists());
    assert!(!f.store.join(import::STAGING_DIR).exists());
    let st = State::load(&f.store).unwrap();
    assert!(st.removing.is_empty());
    assert_eq!(st.active_version("tiny"), Some(2));
    // Nothing left to do.
    assert!(custody::recover(&f.store).unwrap().is_empty());
}

#[test]
fn model_file_edited_in_place_is_caught() {
    let f = fixture();
    f.import(1, "o");
    f.import(2, "o");
    custody::activate(&f.store, &f.trust, "tiny", 1).unwrap();
    at_rest::verify_at_rest(&f.store, &f.trust, "tiny", 2, &mut |_| {}).unwrap();
    // One byte changed, same size, offline.
    let file = f.vdir(2).join("model.gguf");
    let len = fs::metadata(&file).unwrap().len();
    let h = fs::OpenOptions::new().write(true).open(&file).unwrap();
    let mut b = [0u8; 1];
    fs::File::open(&file).unwrap().read_at(&mut b, 500).unwrap();
    h.write_at(&[b[0] ^ 1], 500).unwrap();
    drop(h);
    assert_eq!(fs::metadata(&file).unwrap().len(), len);
    let e = at_rest::verify_at_rest(&f.store, &f.trust, "tiny", 2, &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "model tiny version 2 fails its at-rest check: payload model.gguf: SHA-256 mismatch"
        ),
        "{msg}"
    );
    // Activation refuses it and changes nothing.
    let before = fs::read(f.store.join("state.json")).unwrap();
    let e = custody::activate(&f.store, &f.trust, "tiny", 2).unwrap_err();
    assert_eq!(e.to_string(), format!("activate refused: {msg}"));
    assert_eq!(fs::read(f.store.join("state.json")).unwrap(), before);
    assert_eq!(f.active(), Some(1));
    // At boot: the active version's directory only after its check.
    let d = custody::active_model_dir(&f.store, &f.trust, "tiny", &mut |_| {}).unwrap();
    assert_eq!(d, f.store.join("model/tiny/1"));
    custody::activate(&f.store, &f.trust, "tiny", 1).unwrap();
    let st = State::load(&f.store).unwrap();
    let mut st2 = st.clone();
    st2.active[0].version = 2;
    st2.save(&f.store).unwrap();
    let e = custody::active_model_dir(&f.store, &f.trust, "tiny", &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("payload model.gguf"), "{e}");
}

#[test]
fn at_rest_refusals_name_what_failed() {
    let f = fixture();
    f.import(1, "o");
    // (how the version directory is damaged, expected message tail)
    type Damage = fn(&Path);
    let cases: &[(Damage, &str)] = &[
        (
            |d| fs::write(d.join("extra.bin"), b"x").unwrap(),
            "unlisted file extra.bin in bundle (not in manifest.json)",
        ),
        (
            |d| fs::remove_file(d.join("model.gguf")).unwrap(),
            "payload model.gguf listed in manifest.json is missing",
        ),
        (
            |d| {
                let m = fs::read(d.join("model.gguf")).unwrap();
                fs::write(d.join("model.gguf"), &m[..m.len() - 1]).unwrap();
            },
            "payload model.gguf is 999 bytes, manifest.json says 1000",
        ),
        (
            |d| {
                for e in fs::read_dir(d).unwrap() {
                    let p = e.unwrap().path();
                    if p.extension().is_some_and(|x| x == "minisig") {
                        fs::remove_file(p).unwrap();
                    }
                }
            },
            "below threshold",
        ),
    ];
    for (damage, want) in cases {
        let copy = f.dir.join("saved");
        let _ = fs::remove_dir_all(&copy);
        copy_dir(&f.vdir(1), &copy);
        damage(&f.vdir(1));
        let e = at_rest::verify_at_rest(&f.store, &f.trust, "tiny", 1, &mut |_| {}).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("model tiny version 1 fails its at-rest check: ") && msg.contains(want),
            "{msg}"
        );
        fs::remove_dir_all(f.vdir(1)).unwrap();
        copy_dir(&copy, &f.vdir(1));
        at_rest::verify_at_rest(&f.store, &f.trust, "tiny", 1, &mut |_| {}).unwrap();
    }
    let e = at_rest::verify_at_rest(&f.store, &f.trust, "tiny", 3, &mut |_| {}).unwrap_err();
    assert_eq!(
        e.to_string(),
        "check model tiny version 3 at rest: not installed"
    );
}

#[test]
fn state_without_custody_fields_still_lists_versions() {
    let f = fixture();
    f.import(1, "o");
    // A store from before custody records: only entries.
    let mut st = State::load(&f.store).unwrap();
    st.versions.clear();
    st.save(&f.store).unwrap();
    let json = fs::read_to_string(f.store.join("state.json")).unwrap();
    assert!(!json.contains("versions"), "{json}");
    let m = custody::models(&f.store).unwrap();
    let v = &m[0].versions[0];
    assert_eq!((v.version, v.size, v.imported_by.clone()), (1, 1000, None));
    assert!(!v.manifest_sha256.is_empty());
    custody::activate(&f.store, &f.trust, "tiny", 1).unwrap();
    custody::mark_used(&f.store, "tiny", 1).unwrap();
    let st = State::load(&f.store).unwrap();
    assert!(st.versions[0].used);
    assert_eq!(st.versions[0].imported_by, "unknown");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
