//! A model store built through the real import path with test keys: the
//! fixture of the at-rest and least-privilege tests.
#![allow(dead_code)]

use airlock_formats::custody;
use airlock_formats::import::{self, Commit, Importer};
use airlock_formats::manifest::MANIFEST_FILE;
use airlock_formats::minisig::SecretKey;
use airlock_formats::pack::{self, Input, PackSpec, Section};
use airlock_formats::store;
use airlock_formats::trust::{Role, TrustFile};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub struct Store {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    models: SecretKey,
    pub trust: TrustFile,
    /// The trust file on disk.
    pub trust_file: PathBuf,
    pub store: PathBuf,
    /// The per-boot record directory.
    pub record: PathBuf,
}

/// Payload of model `name` version `v` (deterministic, `v * 1000 + 7` bytes).
pub fn payload(name: &str, v: u64) -> Vec<u8> {
    let salt = name.bytes().map(u64::from).sum::<u64>();
    (0..v * 1000 + 7)
        .map(|i| (i * 7 + v + salt) as u8)
        .collect()
}

impl Store {
    /// An initialised, empty store and a trust file with a models key.
    pub fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let root = SecretKey::generate().unwrap();
        let models = SecretKey::generate().unwrap();
        let mut trust = TrustFile::new(vec![("root".into(), root.public_key())], 1).unwrap();
        trust
            .add_key("alice", &models.public_key(), Role::Models)
            .unwrap();
        let trust_file = dir.path().join("trust.json");
        fs::write(&trust_file, trust.to_bytes().unwrap()).unwrap();
        let store = dir.path().join("store");
        store::init(&store).unwrap();
        Store {
            dir: dir.path().to_owned(),
            record: dir.path().join("run/model-check"),
            _dir: dir,
            models,
            trust,
            trust_file,
            store,
        }
    }

    /// Packs, signs and imports model `name` version `v`.
    pub fn import(&self, name: &str, v: u64) {
        let src = self.dir.join(format!("{name}-{v}.gguf"));
        fs::write(&src, payload(name, v)).unwrap();
        let out = self.dir.join(format!("{name}_{v}.airlock"));
        let spec = PackSpec {
            name: name.into(),
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
            account: "olga".into(),
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

    pub fn activate(&self, name: &str, v: u64) {
        custody::activate(&self.store, &self.trust, name, v).unwrap();
    }

    /// The directory of `name` version `v`.
    pub fn vdir(&self, name: &str, v: u64) -> PathBuf {
        custody::model_dir(&self.store, name, v).unwrap()
    }

    /// Flips one bit of byte `at` of `name` version `v`'s model file, size
    /// unchanged (an edit made offline with the disk in another machine).
    pub fn flip(&self, name: &str, v: u64, at: u64) {
        let file = self.vdir(name, v).join("model.gguf");
        let mut b = [0u8; 1];
        fs::File::open(&file).unwrap().read_at(&mut b, at).unwrap();
        let h = fs::OpenOptions::new().write(true).open(&file).unwrap();
        h.write_at(&[b[0] ^ 1], at).unwrap();
    }
}

/// Copies a directory tree (files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), dst).unwrap();
        }
    }
}
