//! Packing: build an (unsigned) bundle directory from payload files,
//! hashing each file while copying it, and write its manifest. A payload
//! larger than the split size is written as parts (`PATH.part000`, …) that
//! each fit a FAT32 file; the manifest lists the parts and the joined file.
//! A model's architecture, context length and chat template default to
//! what its GGUF header says ([`crate::gguf`]). A system bundle's fields
//! may come from a `scripts/build-image` output directory ([`read_build`]):
//! the UKI's own `.osrel` ([`crate::uki`]) and the trust file built into it
//! (carried, with its root signatures, when they are there: a rotation).

use crate::fsutil::{sync_dir, FsError};
use crate::gguf::{self, GgufError, GgufInfo};
use crate::manifest::{
    self, FileEntry, Kind, Manifest, ManifestError, ModelSection, Part, SystemSection,
};
use crate::stream::{self, StreamError};
use crate::uki::{self, UkiError};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
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
    #[error("split size {0}")]
    SplitSize(String),
    #[error(
        "input {path}: {size} bytes in parts of {split} would make {parts} parts (at most {max})",
        max = manifest::MAX_PARTS
    )]
    TooManyParts {
        path: String,
        size: u64,
        split: u64,
        parts: u64,
    },
    #[error("read GGUF metadata of {path}: {source}")]
    Gguf { path: String, source: GgufError },
    #[error("read .osrel of {path}: {source}")]
    Uki { path: String, source: UkiError },
    #[error("build output {path}: {why}")]
    Build { path: String, why: String },
    #[error("{path}: {source}")]
    Trust {
        path: String,
        source: crate::trust::TrustError,
    },
}

type Result<T> = std::result::Result<T, PackError>;

/// Largest file FAT32 can hold (4 GiB - 1): the largest split size.
pub const FAT32_MAX_FILE: u64 = (4 << 30) - 1;
/// Payload path of a chat template taken from the GGUF's metadata.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// Path of part `index` of the payload `path`: `PATH.part000`, `PATH.part001`, …
/// (three digits: [`manifest::MAX_PARTS`] is 1000). The parts sort in order
/// and name the file they belong to.
pub fn part_path(path: &str, index: u64) -> String {
    format!("{path}.part{index:03}")
}

/// Parses a split size: bytes, or a number with `K`/`M`/`G` (binary:
/// KiB, MiB, GiB; `KiB`/`MiB`/`GiB` also accepted) or `KB`/`MB`/`GB`
/// (decimal). At least 1 byte and at most [`FAT32_MAX_FILE`]; so `4G`
/// (4 GiB, one byte too many for FAT32) is refused, `4GB` or `4095M` fit.
pub fn parse_size(arg: &str) -> Result<u64> {
    let bad = |why: &str| PackError::SplitSize(format!("{}: {why}", crate::escape::text(arg)));
    let digits = arg.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = arg.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| bad("not a number of bytes (e.g. 3900M, 4GB, 1048576)"))?;
    // Unit suffixes (policy as data).
    let mult: u64 = match unit {
        "" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(bad(
                "unknown unit (K, M, G = KiB, MiB, GiB; KB, MB, GB decimal)",
            ))
        }
    };
    let size = n.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if size == 0 {
        return Err(bad("must be at least 1 byte"));
    }
    if size > FAT32_MAX_FILE {
        return Err(bad(&format!(
            "{size} bytes is more than a FAT32 file can hold ({FAT32_MAX_FILE} bytes, 4 GiB - 1); use e.g. 4095M or 4GB"
        )));
    }
    Ok(size)
}

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
        /// `None` = the GGUF's `general.architecture`.
        architecture: Option<String>,
        /// `None` = the GGUF's `<architecture>.context_length`.
        context_length: Option<u64>,
        /// Payload path of the chat template; `None` = the GGUF's
        /// `tokenizer.chat_template` written as [`CHAT_TEMPLATE_FILE`] when
        /// it has one (else no template).
        chat_template: Option<String>,
    },
    System {
        /// Payload path of the UKI; `None` = the only `*.efi` payload.
        uki: Option<String>,
        /// The image variant the UKI was built as (`demo`, `production`).
        variant: String,
        /// SHA-256 (lower-case hex) of the trust file built into the UKI
        /// ([`trust_sha256`]).
        trust_sha256: String,
        /// Payload path of the carried trust file (a rotation; its
        /// signatures are the payloads `<trust>.<signer>.minisig`).
        trust: Option<String>,
    },
}

/// Name of every system bundle (the store keeps one system, `airlock`).
pub const SYSTEM_BUNDLE_NAME: &str = "airlock";
/// File name of the UKI in a `scripts/build-image` output directory.
pub const BUILD_UKI: &str = "airlock.efi";
/// File name of the trust file built into the image, in that directory.
pub const BUILD_TRUST: &str = "trust.json";

/// What a `scripts/build-image` output directory says about its UKI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// `DIR/airlock.efi`.
    pub uki: PathBuf,
    /// The UKI's `AIRLOCK_SYSTEM_VERSION`.
    pub version: u64,
    /// The UKI's `VARIANT_ID`.
    pub variant: String,
    /// SHA-256 of `DIR/trust.json`.
    pub trust_sha256: String,
    /// `DIR/trust.json`.
    pub trust: PathBuf,
    /// The root signatures of the trust file beside it
    /// (`DIR/trust.json.SIGNER.minisig`, sorted): when there are any, the
    /// bundle carries the trust file and them (a trust-root rotation).
    pub trust_signatures: Vec<PathBuf>,
}

impl BuildInfo {
    /// The payload of the system bundle and its `system.trust`: the UKI;
    /// with trust signatures, also `trust.json` and the signatures (under
    /// their file names).
    pub fn payload(&self) -> (Vec<Input>, Option<String>) {
        let mut inputs = vec![Input {
            path: BUILD_UKI.into(),
            source: self.uki.clone(),
        }];
        if self.trust_signatures.is_empty() {
            return (inputs, None);
        }
        inputs.push(Input {
            path: BUILD_TRUST.into(),
            source: self.trust.clone(),
        });
        for sig in &self.trust_signatures {
            if let Some(name) = sig.file_name().and_then(|n| n.to_str()) {
                inputs.push(Input {
                    path: name.to_owned(),
                    source: sig.clone(),
                });
            }
        }
        (inputs, Some(BUILD_TRUST.into()))
    }
}

/// Reads a build output directory: the UKI's `.osrel` (system version and
/// variant, both required), the trust file's SHA-256 (it must be a valid
/// trust file) and the trust file's signatures beside it
/// (`trust.json.SIGNER.minisig`; not checked here: `airlock trust verify
/// --previous` does, and the appliance before it installs).
pub fn read_build(dir: &Path) -> Result<BuildInfo> {
    let uki_path = dir.join(BUILD_UKI);
    let shown = crate::escape::path(&uki_path);
    let mut f = File::open(&uki_path).map_err(|e| FsError::new("open", &uki_path, e))?;
    let osrel = uki::read_osrel(&mut f).map_err(|source| PackError::Uki {
        path: shown.clone(),
        source,
    })?;
    let missing = |key: &str| PackError::Build {
        path: shown.clone(),
        why: format!("its .osrel has no {key} (a UKI from an older scripts/build-image?)"),
    };
    let version = match osrel.get(uki::KEY_SYSTEM_VERSION) {
        None => return Err(missing(uki::KEY_SYSTEM_VERSION)),
        Some(v) => osrel
            .system_version()
            .filter(|&n| n >= 1)
            .ok_or_else(|| PackError::Build {
                path: shown.clone(),
                why: format!(
                    "{}={} in its .osrel is not a version (a number, at least 1)",
                    uki::KEY_SYSTEM_VERSION,
                    crate::escape::text(v)
                ),
            })?,
    };
    let variant = osrel
        .variant_id()
        .ok_or_else(|| missing(uki::KEY_VARIANT_ID))?
        .to_owned();
    manifest::validate_variant(&variant)?;
    let trust = dir.join(BUILD_TRUST);
    let trust_sha256 = trust_sha256(&trust)?;
    let trust_signatures = trust_signatures(dir)?;
    Ok(BuildInfo {
        uki: uki_path,
        version,
        variant,
        trust_sha256,
        trust,
        trust_signatures,
    })
}

/// `DIR/trust.json.SIGNER.minisig` (regular files, sorted); a name of that
/// form whose signer is not a valid key name is refused.
fn trust_signatures(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = fs::read_dir(dir).map_err(|e| FsError::new("read directory", dir, e))?;
    let prefix = format!("{BUILD_TRUST}.");
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| FsError::new("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(&prefix) && name.ends_with(".minisig")) {
            continue;
        }
        let path = entry.path();
        if !manifest::is_trust_signature_of(BUILD_TRUST, name) {
            return Err(PackError::Build {
                path: crate::escape::path(&path),
                why: "not named trust.json.SIGNER.minisig with a valid signer name (1-64 of A-Z a-z 0-9 . _ -)".into(),
            });
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| FsError::new("stat", &path, e))?;
        if !meta.is_file() {
            return Err(PackError::NotRegular(crate::escape::path(&path)));
        }
        out.push(path);
    }
    out.sort();
    Ok(out)
}

/// SHA-256 (lower-case hex) of a trust file, after checking that it is one.
pub fn trust_sha256(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| FsError::new("open", path, e))?;
    let mut bytes = Vec::new();
    (&mut f)
        .take(crate::trust::MAX_TRUST_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FsError::new("read", path, e))?;
    crate::trust::TrustFile::parse(&bytes).map_err(|source| PackError::Trust {
        path: crate::escape::path(path),
        source,
    })?;
    Ok(manifest::hex(&Sha256::digest(&bytes)))
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
    /// Largest payload file written; a larger input is written as parts
    /// ([`part_path`]). `None` = never split.
    pub split: Option<u64>,
}

/// Creates the bundle directory `out` (must not exist): copies each input
/// (read once, hashed while copied), writes `manifest.json`. Returns the
/// manifest. On failure the partly written directory is removed.
pub fn pack(spec: &PackSpec, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<Manifest> {
    let trust = match &spec.section {
        Section::System { trust, .. } => trust.as_deref(),
        Section::Model { .. } => None,
    };
    for i in &spec.inputs {
        manifest::validate_payload_path(&i.path, trust)?;
    }
    manifest::validate_name(&spec.name)?;
    if let Some(split) = spec.split {
        if split == 0 || split > FAT32_MAX_FILE {
            return Err(PackError::SplitSize(format!(
                "{split}: must be 1 to {FAT32_MAX_FILE} bytes"
            )));
        }
    }
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
    // The kind section first: it may read the GGUF's header and add the
    // chat template as a payload written from memory.
    let (kind, model, system, extra) = section(spec)?;
    let mut files = Vec::new();
    for i in &spec.inputs {
        files.push(copy_input(i, spec.split, out, progress)?);
    }
    if let Some((path, bytes)) = extra {
        let dst = out.join(&path);
        let mut f = create(&dst)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| FsError::new("write", &dst, e))?;
        files.push(FileEntry::whole(
            path,
            bytes.len() as u64,
            manifest::hex(&Sha256::digest(&bytes)),
        ));
    }
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
    let mut f = create(&mp)?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| FsError::new("write", &mp, e))?;
    sync_dir(out)?;
    Ok(m)
}

/// A payload written from memory: (path in the bundle, bytes).
type Extra = Option<(String, Vec<u8>)>;

/// The kind section, with model fields not given taken from the GGUF.
fn section(spec: &PackSpec) -> Result<(Kind, Option<ModelSection>, Option<SystemSection>, Extra)> {
    let only = |ext: &str, what: &str| -> Result<String> {
        let mut it = spec.inputs.iter().filter(|i| i.path.ends_with(ext));
        match (it.next(), it.next()) {
            (Some(one), None) => Ok(one.path.clone()),
            _ => Err(PackError::Section(format!(
                "cannot tell which payload is the {what}: give it explicitly"
            ))),
        }
    };
    match &spec.section {
        Section::Model {
            gguf,
            architecture,
            context_length,
            chat_template,
        } => {
            let gguf = match gguf {
                Some(g) => g.clone(),
                None => only(".gguf", "GGUF file (--gguf)")?,
            };
            let given = architecture.is_some() && context_length.is_some();
            let info = if given && chat_template.is_some() {
                None
            } else {
                let source = spec
                    .inputs
                    .iter()
                    .find(|i| i.path == gguf)
                    .map(|i| i.source.clone())
                    .ok_or_else(|| {
                        PackError::Section(format!(
                            "--gguf {} is not one of the input files",
                            crate::escape::text(&gguf)
                        ))
                    })?;
                match gguf::read_file(&source) {
                    Ok(info) => Some(info),
                    // Everything the manifest needs was given: a file the
                    // reader refuses only means no template is taken from it.
                    Err(_) if given => None,
                    Err(e) => {
                        return Err(PackError::Gguf {
                            path: crate::escape::path(&source),
                            source: e,
                        })
                    }
                }
            };
            let info: GgufInfo = info.unwrap_or_default();
            let architecture = match architecture {
                Some(a) => a.clone(),
                None => info.architecture.clone().ok_or_else(|| {
                    PackError::Section(format!(
                        "the GGUF has no {}: give --architecture",
                        gguf::KEY_ARCHITECTURE
                    ))
                })?,
            };
            let context_length = match context_length {
                Some(c) => *c,
                None => info.context_length.ok_or_else(|| {
                    PackError::Section(format!(
                        "the GGUF has no {architecture}{}: give --context-length",
                        gguf::CONTEXT_LENGTH_SUFFIX
                    ))
                })?,
            };
            let mut extra = None;
            let chat_template = match (chat_template, info.chat_template) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(text)) => {
                    if spec.inputs.iter().any(|i| i.path == CHAT_TEMPLATE_FILE) {
                        return Err(PackError::Section(format!(
                            "an input is named {CHAT_TEMPLATE_FILE}: give --chat-template"
                        )));
                    }
                    extra = Some((CHAT_TEMPLATE_FILE.to_owned(), text.into_bytes()));
                    Some(CHAT_TEMPLATE_FILE.to_owned())
                }
                (None, None) => None,
            };
            Ok((
                Kind::Model,
                Some(ModelSection {
                    gguf,
                    architecture,
                    context_length,
                    chat_template,
                }),
                None,
                extra,
            ))
        }
        Section::System {
            uki,
            variant,
            trust_sha256,
            trust,
        } => Ok((
            Kind::System,
            None,
            Some(SystemSection {
                uki: match uki {
                    Some(u) => u.clone(),
                    None => only(".efi", "UKI (--uki)")?,
                },
                variant: variant.clone(),
                trust_sha256: trust_sha256.clone(),
                trust: trust.clone(),
            }),
            None,
        )),
    }
}

/// Creates a new payload file (and its parent directories).
fn create(dst: &Path) -> Result<File> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| FsError::new("create", parent, e))?;
    }
    Ok(OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dst)
        .map_err(|e| FsError::new("create", dst, e))?)
}

/// Copies one input (read once, hashed while copied), as parts when it is
/// larger than `split`.
fn copy_input(
    i: &Input,
    split: Option<u64>,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<FileEntry> {
    let mut src = File::open(&i.source).map_err(|e| FsError::new("open", &i.source, e))?;
    let meta = src
        .metadata()
        .map_err(|e| FsError::new("stat", &i.source, e))?;
    if !meta.is_file() {
        return Err(PackError::NotRegular(crate::escape::path(&i.source)));
    }
    let size = meta.len();
    let stream_err = |source| PackError::Stream {
        path: crate::escape::path(&i.source),
        source,
    };
    let split = match split {
        Some(s) if size > s => s,
        _ => {
            let dst = out.join(&i.path);
            let mut sink = create(&dst)?;
            let digest =
                stream::stream(&mut src, size, Some(&mut sink), progress).map_err(stream_err)?;
            sink.sync_all()
                .map_err(|e| FsError::new("fsync", &dst, e))?;
            return Ok(FileEntry::whole(&i.path, size, manifest::hex(&digest)));
        }
    };
    let count = size.div_ceil(split);
    if count > manifest::MAX_PARTS as u64 {
        return Err(PackError::TooManyParts {
            path: crate::escape::path(&i.source),
            size,
            split,
            parts: count,
        });
    }
    let mut joined = Sha256::new();
    let mut parts = Vec::new();
    for n in 0..count {
        let path = part_path(&i.path, n);
        manifest::validate_path(&path)?;
        let len = split.min(size - n * split);
        let dst = out.join(&path);
        let mut sink = create(&dst)?;
        let digest = stream::stream_also(
            &mut (&mut src).take(len),
            len,
            Some(&mut sink),
            Some(&mut joined),
            progress,
        )
        .map_err(stream_err)?;
        sink.sync_all()
            .map_err(|e| FsError::new("fsync", &dst, e))?;
        parts.push(Part {
            path,
            size: len,
            sha256: manifest::hex(&digest),
        });
    }
    // The source must end where its size said.
    let mut one = [0u8; 1];
    match src.read(&mut one) {
        Ok(0) => {}
        Ok(_) => return Err(stream_err(StreamError::Grew { expected: size })),
        Err(e) => return Err(stream_err(StreamError::Read(e))),
    }
    Ok(FileEntry {
        path: i.path.clone(),
        size,
        sha256: manifest::hex(&joined.finalize()),
        parts: Some(parts),
    })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::gguf::tests::Writer;

    #[test]
    fn split_sizes() {
        for (arg, want) in [
            ("1048576", 1_048_576),
            ("1K", 1024),
            ("1KiB", 1024),
            ("3900M", 3900 << 20),
            ("4095M", 4095 << 20),
            ("4GB", 4_000_000_000),
            ("4294967295", FAT32_MAX_FILE),
        ] {
            assert_eq!(parse_size(arg).unwrap(), want, "{arg}");
        }
        for (arg, why) in [
            ("4G", "more than a FAT32 file can hold"),
            ("4294967296", "more than a FAT32 file can hold"),
            ("0", "at least 1 byte"),
            ("", "not a number"),
            ("-1", "not a number"),
            ("1T", "unknown unit"),
            ("1 M", "unknown unit"),
            ("99999999999999999999", "not a number"),
            ("99999999999G", "too large"),
        ] {
            let e = parse_size(arg).unwrap_err().to_string();
            assert!(e.contains(why), "{arg}: {e}");
        }
    }

    fn gguf_file(dir: &Path, w: &Writer) -> PathBuf {
        let p = dir.join("m.gguf");
        fs::write(&p, &w.0).unwrap();
        p
    }

    fn model_spec(source: PathBuf, section: Section) -> PackSpec {
        PackSpec {
            name: "m".into(),
            version: 1,
            description: String::new(),
            created: Some("2026-01-01T00:00:00Z".into()),
            inputs: vec![Input {
                path: "model.gguf".into(),
                source,
            }],
            section,
            split: None,
        }
    }

    fn none() -> Section {
        Section::Model {
            gguf: None,
            architecture: None,
            context_length: None,
            chat_template: None,
        }
    }

    #[test]
    fn model_fields_from_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(3, 0, 3);
        w.string("general.architecture", "llama")
            .u32("llama.context_length", 2048)
            .string("tokenizer.chat_template", "{{ m }}");
        let src = gguf_file(dir.path(), &w);
        // Nothing given: all three from the GGUF, the template as a payload.
        let out = dir.path().join("a");
        let m = pack(&model_spec(src.clone(), none()), &out, &mut |_| {}).unwrap();
        let md = m.model.unwrap();
        assert_eq!(
            (md.architecture.as_str(), md.context_length),
            ("llama", 2048)
        );
        assert_eq!(md.chat_template.as_deref(), Some(CHAT_TEMPLATE_FILE));
        assert_eq!(fs::read(out.join(CHAT_TEMPLATE_FILE)).unwrap(), b"{{ m }}");
        assert_eq!(m.files.len(), 2);
        // Given values win; a given template is not replaced.
        let out = dir.path().join("b");
        let section = Section::Model {
            gguf: None,
            architecture: Some("qwen2".into()),
            context_length: Some(512),
            chat_template: Some("model.gguf".into()),
        };
        let m = pack(&model_spec(src, section), &out, &mut |_| {}).unwrap();
        let md = m.model.unwrap();
        assert_eq!(
            (md.architecture.as_str(), md.context_length),
            ("qwen2", 512)
        );
        assert!(!out.join(CHAT_TEMPLATE_FILE).exists());
    }

    #[test]
    fn model_fields_missing_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut no_arch = Writer::new(3, 0, 1);
        no_arch.u32("llama.context_length", 2048);
        let mut no_ctx = Writer::new(3, 0, 1);
        no_ctx.string("general.architecture", "llama");
        let junk = Writer(b"not a gguf file".to_vec());
        for (what, w, want) in [
            (
                "no architecture",
                &no_arch,
                "the GGUF has no general.architecture: give --architecture",
            ),
            (
                "no context length",
                &no_ctx,
                "the GGUF has no llama.context_length: give --context-length",
            ),
            ("not a GGUF", &junk, "not a GGUF file"),
        ] {
            let src = gguf_file(dir.path(), w);
            let out = dir.path().join("out");
            let e = pack(&model_spec(src, none()), &out, &mut |_| {})
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{what}: {e}");
            assert!(!out.exists(), "{what}");
        }
        // Everything given: a file that is no GGUF still packs (no template).
        let src = gguf_file(dir.path(), &junk);
        let section = Section::Model {
            gguf: None,
            architecture: Some("llama".into()),
            context_length: Some(256),
            chat_template: None,
        };
        let m = pack(
            &model_spec(src, section),
            &dir.path().join("ok"),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(m.model.unwrap().chat_template, None);
    }

    /// A build output directory: `airlock.efi` (a synthetic PE whose
    /// `.osrel` is `osrel`) and `trust.json` (`trust`).
    fn build_dir(dir: &Path, osrel: &str, trust: &[u8]) -> PathBuf {
        let out = dir.join("out");
        let _ = fs::remove_dir_all(&out);
        fs::create_dir(&out).unwrap();
        let pe = crate::uki::tests::pe(&[(crate::uki::OSREL_SECTION, osrel.as_bytes())]);
        fs::write(out.join(BUILD_UKI), pe).unwrap();
        fs::write(out.join(BUILD_TRUST), trust).unwrap();
        out
    }

    fn trust_bytes() -> Vec<u8> {
        let root = crate::minisig::SecretKey::generate().unwrap();
        crate::trust::TrustFile::new(vec![("root".into(), root.public_key())], 1)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    #[test]
    fn build_output_read() {
        let dir = tempfile::tempdir().unwrap();
        let trust = trust_bytes();
        let good = "ID=airlock\nAIRLOCK_SYSTEM_VERSION=4\nVARIANT_ID=production\n";
        let out = build_dir(dir.path(), good, &trust);
        let info = read_build(&out).unwrap();
        assert_eq!(
            info,
            BuildInfo {
                uki: out.join(BUILD_UKI),
                version: 4,
                variant: "production".into(),
                trust_sha256: manifest::hex(&Sha256::digest(&trust)),
                trust: out.join(BUILD_TRUST),
                trust_signatures: vec![],
            }
        );
        assert_eq!(info.payload().1, None);
        // Packed as a system bundle: the section carries what was read.
        let spec = PackSpec {
            name: "airlock".into(),
            version: info.version,
            description: String::new(),
            created: Some("2026-01-01T00:00:00Z".into()),
            inputs: vec![Input {
                path: BUILD_UKI.into(),
                source: info.uki.clone(),
            }],
            section: Section::System {
                uki: None,
                variant: info.variant.clone(),
                trust_sha256: info.trust_sha256.clone(),
                trust: None,
            },
            split: None,
        };
        let m = pack(&spec, &dir.path().join("b"), &mut |_| {}).unwrap();
        let sys = m.system.unwrap();
        assert_eq!(sys.uki, BUILD_UKI);
        assert_eq!(sys.variant, "production");
        assert_eq!(sys.trust_sha256, info.trust_sha256);

        for (what, osrel, trust, want) in [
            (
                "no version",
                "VARIANT_ID=demo\n",
                &trust[..],
                "has no AIRLOCK_SYSTEM_VERSION",
            ),
            (
                "version 0",
                "AIRLOCK_SYSTEM_VERSION=0\nVARIANT_ID=demo\n",
                &trust[..],
                "AIRLOCK_SYSTEM_VERSION=0 in its .osrel is not a version",
            ),
            (
                "version not a number",
                "AIRLOCK_SYSTEM_VERSION=1.2\nVARIANT_ID=demo\n",
                &trust[..],
                "AIRLOCK_SYSTEM_VERSION=1.2 in its .osrel is not a version",
            ),
            (
                "no variant",
                "AIRLOCK_SYSTEM_VERSION=1\n",
                &trust[..],
                "has no VARIANT_ID",
            ),
            (
                "bad variant",
                "AIRLOCK_SYSTEM_VERSION=1\nVARIANT_ID=Demo_1\n",
                &trust[..],
                "system.variant \"Demo_1\"",
            ),
            (
                "bad os-release",
                "AIRLOCK_SYSTEM_VERSION=1\nVARIANT_ID=a b\n",
                &trust[..],
                "read .osrel of",
            ),
            ("not a trust file", good, b"{}\n", "trust file"),
        ] {
            let out = build_dir(dir.path(), osrel, trust);
            let e = read_build(&out).unwrap_err().to_string();
            assert!(e.contains(want), "{what}: {e}");
            assert_eq!(e.lines().count(), 1, "{what}: {e}");
        }
        // Missing files name themselves.
        let out = build_dir(dir.path(), good, &trust);
        fs::remove_file(out.join(BUILD_TRUST)).unwrap();
        let e = read_build(&out).unwrap_err().to_string();
        assert!(e.contains("trust.json"), "{e}");
        fs::remove_file(out.join(BUILD_UKI)).unwrap();
        let e = read_build(&out).unwrap_err().to_string();
        assert!(e.contains("airlock.efi"), "{e}");
        let e = read_build(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nowhere/airlock.efi"), "{e}");
    }

    /// Signatures beside `trust.json` make a rotation: the trust file and
    /// its signatures become payloads and `system.trust` names it.
    #[test]
    fn build_output_with_trust_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let trust = trust_bytes();
        let good = "AIRLOCK_SYSTEM_VERSION=5\nVARIANT_ID=demo\n";
        let out = build_dir(dir.path(), good, &trust);
        let key = crate::minisig::SecretKey::generate().unwrap();
        for signer in ["new-root", "old-root"] {
            write_signature(&out, BUILD_TRUST, signer, &key, &trust, "t").unwrap();
        }
        // Not signatures of trust.json: left alone.
        fs::write(out.join("trust.json.bak"), b"x").unwrap();
        fs::write(out.join("other.json.k.minisig"), b"x").unwrap();
        let info = read_build(&out).unwrap();
        assert_eq!(
            info.trust_signatures,
            vec![
                out.join("trust.json.new-root.minisig"),
                out.join("trust.json.old-root.minisig")
            ]
        );
        let (inputs, carried) = info.payload();
        assert_eq!(carried.as_deref(), Some(BUILD_TRUST));
        let paths: Vec<&str> = inputs.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                BUILD_UKI,
                BUILD_TRUST,
                "trust.json.new-root.minisig",
                "trust.json.old-root.minisig"
            ]
        );
        let spec = PackSpec {
            name: "airlock".into(),
            version: info.version,
            description: String::new(),
            created: Some("2026-01-01T00:00:00Z".into()),
            inputs,
            section: Section::System {
                uki: None,
                variant: info.variant.clone(),
                trust_sha256: info.trust_sha256.clone(),
                trust: carried,
            },
            split: None,
        };
        let b = dir.path().join("b");
        let m = pack(&spec, &b, &mut |_| {}).unwrap();
        assert_eq!(
            m.system.as_ref().unwrap().trust.as_deref(),
            Some(BUILD_TRUST)
        );
        assert_eq!(m.files.len(), 4);
        assert_eq!(fs::read(b.join(BUILD_TRUST)).unwrap(), trust);
        // The bundle opens (the signatures are payloads, not the manifest's).
        let opened = crate::bundle::open(&b).unwrap();
        assert!(opened.signatures.is_empty());
        opened.verify_payloads(&mut |_| {}).unwrap();
        // Without `system.trust` such payloads are refused.
        let mut plain = spec.clone();
        if let Section::System { trust, .. } = &mut plain.section {
            *trust = None;
        }
        let e = pack(&plain, &dir.path().join("c"), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("reserved for the manifest"), "{e}");
        // A signature-like name with an invalid signer is refused.
        fs::write(out.join("trust.json..x.minisig"), b"x").unwrap();
        let e = read_build(&out).unwrap_err().to_string();
        assert!(e.contains("trust.json..x.minisig: not named"), "{e}");
    }

    #[test]
    fn split_limits() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big.gguf");
        fs::write(&src, vec![7u8; 2001]).unwrap();
        let section = Section::Model {
            gguf: None,
            architecture: Some("llama".into()),
            context_length: Some(256),
            chat_template: None,
        };
        let mut spec = model_spec(src, section);
        spec.split = Some(2);
        let out = dir.path().join("out");
        let e = pack(&spec, &out, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("would make 1001 parts (at most 1000)"), "{e}");
        assert!(!out.exists());
        spec.split = Some(1000);
        let m = pack(&spec, &out, &mut |_| {}).unwrap();
        let sizes: Vec<u64> = m.files[0].parts().iter().map(|p| p.size).collect();
        assert_eq!(sizes, [1000, 1000, 1]);
        // The bundle on disk holds the parts, which `bundle::open` accepts.
        let b = crate::bundle::open(&out).unwrap();
        assert!(b.is_split(&b.manifest.files[0]));
        b.verify_payloads(&mut |_| {}).unwrap();
        spec.split = Some(FAT32_MAX_FILE + 1);
        let e = pack(&spec, &dir.path().join("x"), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be 1 to 4294967295 bytes"), "{e}");
    }
}
