//! Packing: build an (unsigned) bundle directory from payload files,
//! hashing each file while copying it, and write its manifest.

use crate::fsutil::{sync_dir, FsError};
use crate::manifest::{
    self, FileEntry, Kind, Manifest, ManifestError, ModelSection, SystemSection,
};
use crate::stream::{self, StreamError};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors of this module; each names the failing step.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("output {0} already exists")]
    Exists(String),
    #[error("{0}")]
    Fs(#[from] FsError),
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("input {path}: {source}")]
    Stream { path: String, source: StreamError },
    #[error("input {0} is not a regular file")]
    NotRegular(String),
    #[error("input {0} has no usable file name; give it as PATH_IN_BUNDLE=FILE")]
    NoName(String),
    #[error("{0}")]
    Section(String),
}

type Result<T> = std::result::Result<T, PackError>;

/// One payload to pack: where it goes in the bundle, where it comes from.
#[derive(Clone, Debug)]
pub struct Input {
    pub path: String,
    pub source: PathBuf,
}

impl Input {
    /// `FILE` (payload named after its file name) or `PATH_IN_BUNDLE=FILE`.
    pub fn parse(arg: &str) -> Result<Self> {
        if let Some((dst, src)) = arg.split_once('=') {
            return Ok(Self {
                path: dst.to_owned(),
                source: PathBuf::from(src),
            });
        }
        let source = PathBuf::from(arg);
        let path = source
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PackError::NoName(arg.to_owned()))?
            .to_owned();
        Ok(Self { path, source })
    }
}

/// Kind-specific options.
#[derive(Clone, Debug)]
pub enum Section {
    Model {
        /// Payload path of the GGUF file; `None` = the only `*.gguf` payload.
        gguf: Option<String>,
        architecture: String,
        context_length: u64,
        chat_template: Option<String>,
    },
    System {
        /// Payload path of the UKI; `None` = the only `*.efi` payload.
        uki: Option<String>,
    },
}

/// What to pack.
#[derive(Clone, Debug)]
pub struct PackSpec {
    pub name: String,
    pub version: u64,
    pub description: String,
    /// RFC 3339 UTC; `None` = now (or `SOURCE_DATE_EPOCH`).
    pub created: Option<String>,
    pub inputs: Vec<Input>,
    pub section: Section,
}

/// Creates the bundle directory `out` (must not exist): copies each input
/// (read once, hashed while copied), writes `manifest.json`. Returns the
/// manifest. On failure the partly written directory is removed.
pub fn pack(spec: &PackSpec, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<Manifest> {
    for i in &spec.inputs {
        manifest::validate_path(&i.path)?;
    }
    manifest::validate_name(&spec.name)?;
    if out.exists() {
        return Err(PackError::Exists(crate::escape::path(out)));
    }
    fs::create_dir_all(out).map_err(|e| FsError::new("create", out, e))?;
    let r = pack_into(spec, out, progress);
    if r.is_err() {
        let _ = fs::remove_dir_all(out);
    }
    r
}

fn pack_into(spec: &PackSpec, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<Manifest> {
    let mut files = Vec::new();
    for i in &spec.inputs {
        let mut src = File::open(&i.source).map_err(|e| FsError::new("open", &i.source, e))?;
        let meta = src
            .metadata()
            .map_err(|e| FsError::new("stat", &i.source, e))?;
        if !meta.is_file() {
            return Err(PackError::NotRegular(crate::escape::path(&i.source)));
        }
        let dst = out.join(&i.path);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| FsError::new("create", parent, e))?;
        }
        let mut sink = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&dst)
            .map_err(|e| FsError::new("create", &dst, e))?;
        let digest =
            stream::stream(&mut src, meta.len(), Some(&mut sink), progress).map_err(|source| {
                PackError::Stream {
                    path: crate::escape::path(&i.source),
                    source,
                }
            })?;
        sink.sync_all()
            .map_err(|e| FsError::new("fsync", &dst, e))?;
        files.push(FileEntry {
            path: i.path.clone(),
            size: meta.len(),
            sha256: manifest::hex(&digest),
        });
    }
    let only = |ext: &str, what: &str| -> Result<String> {
        let mut it = spec.inputs.iter().filter(|i| i.path.ends_with(ext));
        match (it.next(), it.next()) {
            (Some(one), None) => Ok(one.path.clone()),
            _ => Err(PackError::Section(format!(
                "cannot tell which payload is the {what}: give it explicitly"
            ))),
        }
    };
    let (kind, model, system) = match &spec.section {
        Section::Model {
            gguf,
            architecture,
            context_length,
            chat_template,
        } => (
            Kind::Model,
            Some(ModelSection {
                gguf: match gguf {
                    Some(g) => g.clone(),
                    None => only(".gguf", "GGUF file (--gguf)")?,
                },
                architecture: architecture.clone(),
                context_length: *context_length,
                chat_template: chat_template.clone(),
            }),
            None,
        ),
        Section::System { uki } => (
            Kind::System,
            None,
            Some(SystemSection {
                uki: match uki {
                    Some(u) => u.clone(),
                    None => only(".efi", "UKI (--uki)")?,
                },
            }),
        ),
    };
    let m = Manifest {
        schema: manifest::SCHEMA.into(),
        kind,
        name: spec.name.clone(),
        version: spec.version,
        created: spec.created.clone().unwrap_or_else(now_rfc3339),
        description: spec.description.clone(),
        files,
        model,
        system,
    };
    let bytes = m.to_bytes()?;
    let mp = out.join(manifest::MANIFEST_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&mp)
        .map_err(|e| FsError::new("create", &mp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| FsError::new("write", &mp, e))?;
    sync_dir(out)?;
    Ok(m)
}

/// Current time (or `SOURCE_DATE_EPOCH` when set, for reproducible packs).
pub fn now_rfc3339() -> String {
    manifest::format_rfc3339(unix_now())
}

/// Seconds since the epoch (or `SOURCE_DATE_EPOCH`).
pub fn unix_now() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
}

/// Signs `data` with `key` and writes `dir/<file_stem>.<signer>.minisig`
/// (replacing an older signature by the same signer). Returns the path.
pub fn write_signature(
    dir: &Path,
    file_stem: &str,
    signer: &str,
    key: &crate::minisig::SecretKey,
    data: &[u8],
    trusted_comment: &str,
) -> std::result::Result<PathBuf, PackSignError> {
    crate::trust::validate_key_name(signer).map_err(|e| PackSignError::Signer(e.to_string()))?;
    let sig = key.sign(data, trusted_comment)?;
    let name = format!("{file_stem}.{signer}.minisig");
    crate::fsutil::write_atomic(dir, &name, sig.to_file().as_bytes())?;
    Ok(dir.join(name))
}

/// Errors of [`write_signature`].
#[derive(Debug, thiserror::Error)]
pub enum PackSignError {
    #[error("signer name: {0}")]
    Signer(String),
    #[error("sign: {0}")]
    Sign(#[from] crate::minisig::MinisigError),
    #[error("write signature: {0}")]
    Write(#[from] FsError),
}
