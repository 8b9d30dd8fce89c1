//! Bundle manifest (`manifest.json`): strict parse and path rules.
//!
//! Unknown fields are refused at every level, the file is at most
//! [`MAX_MANIFEST_LEN`] bytes, payload paths are relative, `/`-separated, with
//! no empty, `.` or `..` component, and unique. The kind section must match
//! `kind` and name files that are listed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;

/// Largest manifest accepted (1 MiB).
pub const MAX_MANIFEST_LEN: usize = 1024 * 1024;
/// Schema string of this format.
pub const SCHEMA: &str = "airlock-bundle/1";
/// File name of the manifest inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Most payload files one bundle may list.
pub const MAX_FILES: usize = 10_000;
/// Longest payload path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Deepest payload path (number of components).
pub const MAX_PATH_DEPTH: usize = 8;
/// Longest bundle name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 4096;
/// Most parts one split payload may have (`.part000` … `.part999`).
pub const MAX_PARTS: usize = 1000;
/// Longest image variant name (`system.variant`).
pub const MAX_VARIANT_LEN: usize = 32;

/// Errors of this module; each names the failing check.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest.json is larger than 1 MiB ({0} bytes)")]
    TooLarge(usize),
    #[error("manifest.json: {}", crate::escape::text(.0))]
    Json(String),
    #[error("manifest.json: schema \"{}\" is not {SCHEMA:?}", crate::escape::text(.0))]
    Schema(String),
    #[error("manifest.json: invalid bundle name \"{}\" (1-64 of a-z 0-9 . _ -, starting with a letter or digit)", crate::escape::text(.0))]
    Name(String),
    #[error("manifest.json: version 0 is not allowed")]
    VersionZero,
    #[error("manifest.json: created \"{}\" is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)", crate::escape::text(.0))]
    Created(String),
    #[error("manifest.json: description longer than {MAX_DESCRIPTION_LEN} bytes")]
    Description,
    #[error("manifest.json: no payload files listed")]
    NoFiles,
    #[error("manifest.json: more than {MAX_FILES} payload files")]
    TooManyFiles,
    #[error(
        "manifest.json: payload path \"{}\" refused: {why}",
        crate::escape::text(path)
    )]
    Path { path: String, why: &'static str },
    #[error("manifest.json: duplicate payload path \"{}\"", crate::escape::text(.0))]
    DuplicatePath(String),
    #[error(
        "manifest.json: payload \"{}\" sha256 is not 64 lower-case hex digits",
        crate::escape::text(path)
    )]
    Sha256 { path: String },
    #[error("manifest.json: kind is {kind} but the `{kind}` section is missing")]
    MissingSection { kind: Kind },
    #[error("manifest.json: kind is {kind} but a `{other}` section is present")]
    ForeignSection { kind: Kind, other: &'static str },
    #[error(
        "manifest.json: {field} names \"{}\", which is not a listed payload file",
        crate::escape::text(path)
    )]
    SectionFile { field: &'static str, path: String },
    #[error("manifest.json: model.context_length must be at least 1")]
    ContextLength,
    #[error("manifest.json: model.architecture must be 1-64 printable ASCII characters")]
    Architecture,
    #[error("manifest.json: path \"{}\" is a prefix directory of another payload", crate::escape::text(.0))]
    PathPrefix(String),
    #[error(
        "manifest.json: payload \"{}\" is split into {count} parts (2-{MAX_PARTS} allowed)",
        crate::escape::text(path)
    )]
    PartCount { path: String, count: usize },
    #[error(
        "manifest.json: parts of payload \"{}\" add up to {sum} bytes, the payload is {size}",
        crate::escape::text(path)
    )]
    PartSizes { path: String, sum: u64, size: u64 },
    #[error(
        "manifest.json: part \"{}\" is empty (0 bytes)",
        crate::escape::text(.0)
    )]
    EmptyPart(String),
    #[error(
        "manifest.json: system.variant \"{}\" is not 1-{MAX_VARIANT_LEN} of a-z 0-9 -",
        crate::escape::text(.0)
    )]
    Variant(String),
    #[error(
        "manifest.json: system.trust_sha256 \"{}\" is not 64 lower-case hex digits",
        crate::escape::text(.0)
    )]
    TrustSha256(String),
}

type Result<T> = std::result::Result<T, ManifestError>;

/// What a bundle carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Model,
    System,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::System => "system",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "model" => Ok(Kind::Model),
            "system" => Ok(Kind::System),
            _ => Err(format!("unknown kind {s:?} (model | system)")),
        }
    }
}

/// One payload file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path inside the bundle, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// When present, the payload travels as these parts (in order, each a
    /// file of the bundle directory) and is joined into `path` on import;
    /// `size` and `sha256` are then those of the joined file. Absent in
    /// unsplit entries (omitted on output, so older manifests are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<Part>>,
}

impl FileEntry {
    /// An unsplit entry.
    pub fn whole(path: impl Into<String>, size: u64, sha256: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            size,
            sha256: sha256.into(),
            parts: None,
        }
    }

    /// The parts this entry travels as (empty when it is not split).
    pub fn parts(&self) -> &[Part] {
        self.parts.as_deref().unwrap_or_default()
    }
}

/// One part of a split payload (a file of the bundle directory on the stick).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Relative path inside the bundle, `/`-separated.
    pub path: String,
    /// Size in bytes (at least 1).
    pub size: u64,
    /// SHA-256 of this part alone, lower-case hex.
    pub sha256: String,
}

/// Kind section of a model bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The GGUF weights file (a listed payload path).
    pub gguf: String,
    /// Model architecture, e.g. `llama`.
    pub architecture: String,
    /// Context length in tokens.
    pub context_length: u64,
    /// Optional chat template file (a listed payload path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
}

/// Kind section of a system bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSection {
    /// The unified kernel image (a listed payload path).
    pub uki: String,
    /// The image variant the UKI was built as (its os-release `VARIANT_ID`,
    /// e.g. `demo` or `production`): 1-32 of `a-z 0-9 -`.
    pub variant: String,
    /// SHA-256 (lower-case hex) of the trust roots file
    /// `/etc/airlock/trust.json` built into the UKI.
    pub trust_sha256: String,
    /// A trust-root rotation: the payload path of the new trust file (the
    /// one built into the UKI, whose SHA-256 is `trust_sha256`). Its root
    /// signatures travel as the payloads `<trust>.<signer>.minisig`.
    /// Absent when the update keeps the trust roots (omitted on output, so
    /// older manifests are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
}

impl SystemSection {
    /// Whether `path` is a root signature of the carried trust file
    /// (`<trust>.<signer>.minisig`, the signer a valid key name).
    pub fn is_trust_signature(&self, path: &str) -> bool {
        self.trust
            .as_deref()
            .is_some_and(|t| is_trust_signature_of(t, path))
    }
}

/// Whether `path` is `<trust>.<signer>.minisig` with `signer` a valid key
/// name ([`crate::trust::validate_key_name`]): a signature of the trust
/// file `trust`, written by `airlock trust sign`. Never a name of the
/// manifest's own signatures (`manifest.json.*`).
pub fn is_trust_signature_of(trust: &str, path: &str) -> bool {
    !path.starts_with("manifest.json.")
        && path
            .strip_prefix(trust)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_suffix(".minisig"))
            .is_some_and(|signer| crate::trust::validate_key_name(signer).is_ok())
}

/// The bundle manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub kind: Kind,
    pub name: String,
    pub version: u64,
    /// RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
    #[serde(default)]
    pub description: String,
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemSection>,
}

impl Manifest {
    /// Strictly parses and validates manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Serialises (pretty, trailing newline) after validating.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut v =
            serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Json(e.to_string()))?;
        v.push(b'\n');
        if v.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge(v.len()));
        }
        Ok(v)
    }

    /// Checks every rule that serde's structure alone does not.
    pub fn validate(&self) -> Result<()> {
        if self.schema != SCHEMA {
            return Err(ManifestError::Schema(self.schema.clone()));
        }
        validate_name(&self.name)?;
        if self.version == 0 {
            return Err(ManifestError::VersionZero);
        }
        validate_created(&self.created)?;
        if self.description.len() > MAX_DESCRIPTION_LEN {
            return Err(ManifestError::Description);
        }
        if self.files.is_empty() {
            return Err(ManifestError::NoFiles);
        }
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles);
        }
        // `seen`: the payload paths (what the kind section may name);
        // `all`: those and every part path (one namespace: a part is a file
        // of the bundle directory next to the others).
        let mut seen = BTreeSet::new();
        let mut all = BTreeSet::new();
        // A system bundle carrying a trust file may list its signatures
        // (`<trust>.<signer>.minisig`), top-level `*.minisig` otherwise
        // being reserved for the manifest's own.
        let trust = match (self.kind, &self.system) {
            (Kind::System, Some(s)) => s.trust.as_deref(),
            _ => None,
        };
        let part_count: usize = self.files.iter().map(|f| f.parts().len()).sum();
        if self.files.len() + part_count > MAX_FILES {
            return Err(ManifestError::TooManyFiles);
        }
        for f in &self.files {
            validate_entry(&f.path, &f.sha256, trust, &mut all)?;
            seen.insert(f.path.as_str());
            if let Some(parts) = &f.parts {
                if !(2..=MAX_PARTS).contains(&parts.len()) {
                    return Err(ManifestError::PartCount {
                        path: f.path.clone(),
                        count: parts.len(),
                    });
                }
                let mut sum: u64 = 0;
                for p in parts {
                    validate_entry(&p.path, &p.sha256, None, &mut all)?;
                    if p.size == 0 {
                        return Err(ManifestError::EmptyPart(p.path.clone()));
                    }
                    sum = sum.saturating_add(p.size);
                }
                if sum != f.size {
                    return Err(ManifestError::PartSizes {
                        path: f.path.clone(),
                        sum,
                        size: f.size,
                    });
                }
            }
        }
        // A path may not also be a directory of another path ("a" and "a/b").
        for p in &all {
            let dir = format!("{p}/");
            if all
                .range(dir.as_str()..)
                .next()
                .is_some_and(|q| q.starts_with(&dir))
            {
                return Err(ManifestError::PathPrefix((*p).to_owned()));
            }
        }
        let listed = |field: &'static str, p: &str| -> Result<()> {
            if seen.contains(p) {
                Ok(())
            } else {
                Err(ManifestError::SectionFile {
                    field,
                    path: p.to_owned(),
                })
            }
        };
        match self.kind {
            Kind::Model => {
                if self.system.is_some() {
                    return Err(ManifestError::ForeignSection {
                        kind: self.kind,
                        other: "system",
                    });
                }
                let m = self
                    .model
                    .as_ref()
                    .ok_or(ManifestError::MissingSection { kind: self.kind })?;
                listed("model.gguf", &m.gguf)?;
                if let Some(t) = &m.chat_template {
                    listed("model.chat_template", t)?;
                }
                if m.context_length == 0 {
                    return Err(ManifestError::ContextLength);
                }
                if m.architecture.is_empty()
                    || m.architecture.len() > 64
                    || !m.architecture.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(ManifestError::Architecture);
                }
            }
            Kind::System => {
                if self.model.is_some() {
                    return Err(ManifestError::ForeignSection {
                        kind: self.kind,
                        other: "model",
                    });
                }
                let s = self
                    .system
                    .as_ref()
                    .ok_or(ManifestError::MissingSection { kind: self.kind })?;
                listed("system.uki", &s.uki)?;
                if let Some(t) = &s.trust {
                    listed("system.trust", t)?;
                }
                validate_variant(&s.variant)?;
                if !is_sha256_hex(&s.trust_sha256) {
                    return Err(ManifestError::TrustSha256(s.trust_sha256.clone()));
                }
            }
        }
        Ok(())
    }

    /// Total payload size in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Path rules, uniqueness (in `all`) and hash syntax of one payload or part;
/// `trust`: the carried trust file, whose signatures may be payloads.
fn validate_entry<'a>(
    path: &'a str,
    sha256: &str,
    trust: Option<&str>,
    all: &mut BTreeSet<&'a str>,
) -> Result<()> {
    validate_payload_path(path, trust)?;
    if !all.insert(path) {
        return Err(ManifestError::DuplicatePath(path.to_owned()));
    }
    if !is_sha256_hex(sha256) {
        return Err(ManifestError::Sha256 {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// 64 lower-case hex digits (a SHA-256 as the manifest writes it).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An image variant (`system.variant`, os-release `VARIANT_ID`): 1-32 of
/// `a-z 0-9 -`.
pub fn validate_variant(v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= MAX_VARIANT_LEN
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Variant(v.to_owned()))
    }
}

/// SHA-256 of the manifest bytes, lower-case hex (the manifest's identity).
pub fn manifest_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bundle names become directory names in the store: `[a-z0-9][a-z0-9._-]*`, ≤ 64.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Name(name.to_owned()))
    }
}

/// Payload path rules. `manifest.json` and `*.minisig` at the top level are
/// reserved for the manifest and its signatures.
pub fn validate_path(path: &str) -> Result<()> {
    validate_payload_path(path, None)
}

/// [`validate_path`], except that the signatures of the carried trust file
/// `trust` (`<trust>.<signer>.minisig`, see [`is_trust_signature_of`]) are
/// allowed at the top level.
pub fn validate_payload_path(path: &str, trust: Option<&str>) -> Result<()> {
    let refuse = |why| {
        Err(ManifestError::Path {
            path: path.to_owned(),
            why,
        })
    };
    if path.is_empty() {
        return refuse("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return refuse("too long");
    }
    if path.starts_with('/') {
        return refuse("absolute path");
    }
    if path.contains('\\') {
        return refuse("backslash");
    }
    // C0, DEL, C1 and bidi controls: a name must not be able to drive or
    // reorder the terminal that shows it (see `escape`).
    match crate::escape::first_unsafe(path) {
        Some(c) if c.is_control() => return refuse("control character"),
        Some(_) => return refuse("bidi or line-separator character"),
        None => {}
    }
    let comps: Vec<&str> = path.split('/').collect();
    if comps.len() > MAX_PATH_DEPTH {
        return refuse("too deep");
    }
    for c in &comps {
        match *c {
            "" => return refuse("empty component"),
            "." => return refuse("`.` component"),
            ".." => return refuse("`..` component"),
            _ if c.len() > 255 => return refuse("component too long"),
            _ => {}
        }
    }
    let trust_sig = trust.is_some_and(|t| is_trust_signature_of(t, path));
    if comps.len() == 1 && (path == MANIFEST_FILE || (path.ends_with(".minisig") && !trust_sig)) {
        return refuse("reserved for the manifest and its signatures");
    }
    Ok(())
}

fn validate_created(s: &str) -> Result<()> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(99);
    let ok = b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
        && (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10))
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) < 61;
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Created(s.to_owned()))
    }
}

/// Formats a UNIX time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            schema: SCHEMA.into(),
            kind: Kind::Model,
            name: "tiny-llama".into(),
            version: 3,
            created: "2026-11-22T03:00:00Z".into(),
            description: "test".into(),
            files: vec![FileEntry::whole("model.gguf", 1, "0".repeat(64))],
            model: Some(ModelSection {
                gguf: "model.gguf".into(),
                architecture: "llama".into(),
                context_length: 512,
                chat_template: None,
            }),
            system: None,
        }
    }

    fn err_of(m: &Manifest) -> String {
        let bytes = serde_json::to_vec(m).unwrap();
        Manifest::parse(&bytes).unwrap_err().to_string()
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_bytes().unwrap()).unwrap(), m);
    }

    #[test]
    fn unknown_field_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["extra"] = serde_json::json!(1);
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        let mut v = serde_json::to_value(sample()).unwrap();
        v["files"][0]["mode"] = serde_json::json!(1);
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("unknown field `mode`"), "{e}");
    }

    #[test]
    fn duplicate_json_key_refused() {
        let text = String::from_utf8(sample().to_bytes().unwrap()).unwrap();
        let text = text.replacen("\"version\": 3,", "\"version\": 3, \"version\": 4,", 1);
        let e = Manifest::parse(text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("duplicate field `version`"), "{e}");
    }

    #[test]
    fn oversized_refused() {
        let mut m = sample();
        m.description = "x".repeat(MAX_MANIFEST_LEN);
        let mut bytes = serde_json::to_vec(&m).unwrap();
        bytes.truncate(MAX_MANIFEST_LEN + 1);
        let e = Manifest::parse(&bytes).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
    }

    #[test]
    fn path_rules() {
        for (p, why) in [
            ("../x", "`..` component"),
            ("a/../../x", "`..` component"),
            ("/etc/passwd", "absolute path"),
            ("a//b", "empty component"),
            ("./a", "`.` component"),
            ("a\\b", "backslash"),
            ("manifest.json", "reserved"),
            ("x.minisig", "reserved"),
            ("a\nb", "control character"),
            ("a\u{1b}[2Kb", "control character"),
            ("csi\u{9b}x", "control character"),
            ("x\u{202e}fdp.gguf", "bidi or line-separator character"),
            ("x\u{2066}y", "bidi or line-separator character"),
        ] {
            let mut m = sample();
            m.files[0].path = p.into();
            m.model.as_mut().unwrap().gguf = p.into();
            let e = err_of(&m);
            assert!(e.contains("refused") && e.contains(why), "{p}: {e}");
        }
        assert!(validate_path("sub/dir/model.gguf").is_ok());
    }

    #[test]
    fn duplicate_path_refused() {
        let mut m = sample();
        m.files.push(m.files[0].clone());
        assert!(err_of(&m).contains("duplicate payload path \"model.gguf\""));
    }

    #[test]
    fn prefix_path_refused() {
        let mut m = sample();
        let mut f = m.files[0].clone();
        f.path = "model.gguf/x".into();
        m.files.push(f);
        assert!(err_of(&m).contains("prefix directory"));
    }

    #[test]
    fn field_checks() {
        let mut m = sample();
        m.name = "../evil".into();
        assert!(err_of(&m).contains("invalid bundle name"));
        let mut m = sample();
        m.version = 0;
        assert!(err_of(&m).contains("version 0"));
        let mut m = sample();
        m.created = "yesterday".into();
        assert!(err_of(&m).contains("RFC 3339"));
        let mut m = sample();
        m.files[0].sha256 = "Z".repeat(64);
        assert!(err_of(&m).contains("64 lower-case hex"));
        let mut m = sample();
        m.model = None;
        assert!(err_of(&m).contains("section is missing"));
        let mut m = sample();
        m.system = Some(system_section("model.gguf"));
        assert!(err_of(&m).contains("`system` section is present"));
        let mut m = sample();
        m.model.as_mut().unwrap().chat_template = Some("t.jinja".into());
        assert!(err_of(&m).contains("not a listed payload file"));
        let mut m = sample();
        m.schema = "v0".into();
        assert!(err_of(&m).contains("schema"));
    }

    /// A model payload of 5 bytes split into parts of 3 and 2 bytes.
    fn split_sample() -> Manifest {
        let mut m = sample();
        m.files[0].size = 5;
        m.files[0].parts = Some(vec![
            Part {
                path: "model.gguf.part000".into(),
                size: 3,
                sha256: "1".repeat(64),
            },
            Part {
                path: "model.gguf.part001".into(),
                size: 2,
                sha256: "2".repeat(64),
            },
        ]);
        m
    }

    /// A manifest written before parts existed parses and re-serialises to
    /// the same bytes (no `parts` key appears).
    #[test]
    fn unsplit_manifest_bytes_unchanged() {
        let old = concat!(
            "{\n",
            "  \"schema\": \"airlock-bundle/1\",\n",
            "  \"kind\": \"model\",\n",
            "  \"name\": \"tiny-llama\",\n",
            "  \"version\": 3,\n",
            "  \"created\": \"2026-11-22T03:00:00Z\",\n",
            "  \"description\": \"test\",\n",
            "  \"files\": [\n",
            "    {\n",
            "      \"path\": \"model.gguf\",\n",
            "      \"size\": 1,\n",
            "      \"sha256\": \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
            "    }\n",
            "  ],\n",
            "  \"model\": {\n",
            "    \"gguf\": \"model.gguf\",\n",
            "    \"architecture\": \"llama\",\n",
            "    \"context_length\": 512\n",
            "  }\n",
            "}\n"
        );
        let m = Manifest::parse(old.as_bytes()).unwrap();
        assert_eq!(m, sample());
        assert_eq!(m.to_bytes().unwrap(), old.as_bytes());
    }

    #[test]
    fn split_roundtrip() {
        let m = split_sample();
        let bytes = m.to_bytes().unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"parts\": ["));
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        assert_eq!(m.total_size(), 5);
    }

    #[test]
    fn split_rules() {
        type Edit = fn(&mut FileEntry);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "one part",
                |f| {
                    f.parts.as_mut().unwrap().truncate(1);
                    f.size = 3;
                },
                "split into 1 parts",
            ),
            ("no parts", |f| f.parts = Some(vec![]), "split into 0 parts"),
            (
                "sizes do not add up",
                |f| f.size = 6,
                "add up to 5 bytes, the payload is 6",
            ),
            (
                "empty part",
                |f| {
                    let p = f.parts.as_mut().unwrap();
                    p[1].size = 0;
                    f.size = 3;
                },
                "part \"model.gguf.part001\" is empty",
            ),
            (
                "part named like the payload",
                |f| f.parts.as_mut().unwrap()[0].path = "model.gguf".into(),
                "duplicate payload path \"model.gguf\"",
            ),
            (
                "two parts with one name",
                |f| f.parts.as_mut().unwrap()[1].path = "model.gguf.part000".into(),
                "duplicate payload path \"model.gguf.part000\"",
            ),
            (
                "part hash not hex",
                |f| f.parts.as_mut().unwrap()[1].sha256 = "X".repeat(64),
                "\"model.gguf.part001\" sha256 is not 64",
            ),
            (
                "part path escapes",
                |f| f.parts.as_mut().unwrap()[1].path = "../p1".into(),
                "`..` component",
            ),
            (
                "part is a directory of the payload",
                |f| f.parts.as_mut().unwrap()[1].path = "model.gguf/p1".into(),
                "prefix directory",
            ),
        ];
        for (what, edit, want) in cases {
            let mut m = split_sample();
            edit(&mut m.files[0]);
            let e = err_of(&m);
            assert!(e.contains(want), "{what}: {e}");
        }
        // Unknown fields are refused inside a part too.
        let mut v = serde_json::to_value(split_sample()).unwrap();
        v["files"][0]["parts"][0]["offset"] = serde_json::json!(0);
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("unknown field `offset`"), "{e}");
        // A part is not a payload the model section may name.
        let mut m = split_sample();
        m.model.as_mut().unwrap().gguf = "model.gguf.part000".into();
        assert!(err_of(&m).contains("not a listed payload file"));
    }

    fn system_section(uki: &str) -> SystemSection {
        SystemSection {
            uki: uki.into(),
            variant: "production".into(),
            trust_sha256: "a".repeat(64),
            trust: None,
        }
    }

    fn system_sample() -> Manifest {
        let mut m = sample();
        m.kind = Kind::System;
        m.name = "airlock".into();
        m.files = vec![FileEntry::whole("airlock.efi", 1, "0".repeat(64))];
        m.model = None;
        m.system = Some(system_section("airlock.efi"));
        m
    }

    #[test]
    fn system_roundtrip() {
        let m = system_sample();
        let bytes = m.to_bytes().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("\"variant\": \"production\""), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn system_rules() {
        type Edit = fn(&mut SystemSection);
        let ok: &[Edit] = &[
            |s| s.variant = "demo".into(),
            |s| s.variant = "x".into(),
            |s| s.variant = "a-1".into(),
            |s| s.variant = "v".repeat(MAX_VARIANT_LEN),
            |s| s.trust_sha256 = "0123456789abcdef".repeat(4),
        ];
        for edit in ok {
            let mut m = system_sample();
            edit(m.system.as_mut().unwrap());
            Manifest::parse(&serde_json::to_vec(&m).unwrap()).unwrap();
        }
        let cases: &[(&str, Edit, &str)] = &[
            (
                "uki not listed",
                |s| s.uki = "x.efi".into(),
                "system.uki names \"x.efi\"",
            ),
            (
                "empty variant",
                |s| s.variant.clear(),
                "system.variant \"\" is not 1-32",
            ),
            (
                "variant too long",
                |s| s.variant = "v".repeat(MAX_VARIANT_LEN + 1),
                "is not 1-32 of a-z 0-9 -",
            ),
            (
                "upper-case variant",
                |s| s.variant = "Demo".into(),
                "system.variant \"Demo\"",
            ),
            (
                "variant with _",
                |s| s.variant = "a_b".into(),
                "system.variant",
            ),
            (
                "variant with /",
                |s| s.variant = "../x".into(),
                "system.variant",
            ),
            (
                "variant with a control",
                |s| s.variant = "a\u{1b}[2K".into(),
                "system.variant \"a\\x1b[2K\"",
            ),
            (
                "empty trust hash",
                |s| s.trust_sha256.clear(),
                "system.trust_sha256",
            ),
            (
                "short trust hash",
                |s| s.trust_sha256 = "a".repeat(63),
                "not 64 lower-case hex",
            ),
            (
                "upper-case trust hash",
                |s| s.trust_sha256 = "A".repeat(64),
                "system.trust_sha256",
            ),
        ];
        for (what, edit, want) in cases {
            let mut m = system_sample();
            edit(m.system.as_mut().unwrap());
            let e = err_of(&m);
            assert!(e.contains(want), "{what}: {e}");
            assert_eq!(e.lines().count(), 1, "{what}: {e}");
        }
        // Both fields are required; unknown fields are refused.
        for field in ["variant", "trust_sha256"] {
            let mut v = serde_json::to_value(system_sample()).unwrap();
            v["system"].as_object_mut().unwrap().remove(field);
            let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(
                e.to_string().contains(&format!("missing field `{field}`")),
                "{e}"
            );
        }
        let mut v = serde_json::to_value(system_sample()).unwrap();
        v["system"]["slot"] = serde_json::json!("b");
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("unknown field `slot`"), "{e}");
    }

    /// A system bundle carrying its trust file and two root signatures.
    fn rotation_sample() -> Manifest {
        let mut m = system_sample();
        for p in [
            "trust.json",
            "trust.json.old-root.minisig",
            "trust.json.new-root.minisig",
        ] {
            m.files.push(FileEntry::whole(p, 1, "0".repeat(64)));
        }
        m.system.as_mut().unwrap().trust = Some("trust.json".into());
        m
    }

    #[test]
    fn system_trust_roundtrip() {
        let m = rotation_sample();
        let bytes = m.to_bytes().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("\"trust\": \"trust.json\""), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        // Absent: no `trust` key is written.
        let bytes = system_sample().to_bytes().unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("\"trust\""));
    }

    /// `system.trust`: present and listed (with or without signatures),
    /// absent, unlisted; and which `*.minisig` payloads it allows.
    #[test]
    fn system_trust_rules() {
        type Edit = fn(&mut Manifest);
        // (what, edit of rotation_sample(), None = accepted / Some(refusal))
        let cases: &[(&str, Edit, Option<&str>)] = &[
            ("present, listed, two signatures", |_| {}, None),
            (
                "present, no signatures",
                |m| m.files.retain(|f| !f.path.ends_with(".minisig")),
                None,
            ),
            (
                "in a directory",
                |m| {
                    for f in &mut m.files[1..] {
                        f.path = format!("roots/{}", f.path);
                    }
                    m.system.as_mut().unwrap().trust = Some("roots/trust.json".into());
                },
                None,
            ),
            (
                "absent, no trust payloads",
                |m| {
                    m.files.truncate(1);
                    m.system.as_mut().unwrap().trust = None;
                },
                None,
            ),
            (
                "absent, trust.json an ordinary payload",
                |m| {
                    m.files.truncate(2);
                    m.system.as_mut().unwrap().trust = None;
                },
                None,
            ),
            (
                "unlisted",
                |m| {
                    m.files.truncate(2);
                    m.system.as_mut().unwrap().trust = Some("new-trust.json".into());
                },
                Some("system.trust names \"new-trust.json\", which is not a listed payload file"),
            ),
            (
                "other file named, signatures of trust.json listed",
                |m| m.system.as_mut().unwrap().trust = Some("airlock.efi".into()),
                Some("\"trust.json.old-root.minisig\" refused: reserved"),
            ),
            (
                "absent, signatures listed",
                |m| m.system.as_mut().unwrap().trust = None,
                Some("\"trust.json.old-root.minisig\" refused: reserved"),
            ),
            (
                "signature of another file",
                |m| {
                    m.files
                        .push(FileEntry::whole("other.json.x.minisig", 1, "0".repeat(64)))
                },
                Some("\"other.json.x.minisig\" refused: reserved"),
            ),
            (
                "signature with an invalid signer name",
                |m| {
                    m.files
                        .push(FileEntry::whole("trust.json..x.minisig", 1, "0".repeat(64)))
                },
                Some("\"trust.json..x.minisig\" refused: reserved"),
            ),
            (
                "signature without a signer",
                |m| {
                    m.files
                        .push(FileEntry::whole("trust.json.minisig", 1, "0".repeat(64)))
                },
                Some("\"trust.json.minisig\" refused: reserved"),
            ),
            (
                "the manifest named as trust file",
                |m| {
                    m.files.truncate(1);
                    m.system.as_mut().unwrap().trust = Some(MANIFEST_FILE.into());
                },
                Some("system.trust names \"manifest.json\""),
            ),
        ];
        for (what, edit, want) in cases {
            let mut m = rotation_sample();
            edit(&mut m);
            let r = Manifest::parse(&serde_json::to_vec(&m).unwrap());
            match want {
                None => assert_eq!(r.unwrap(), m, "{what}"),
                Some(want) => {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains(want), "{what}: {e}");
                    assert_eq!(e.lines().count(), 1, "{what}: {e}");
                }
            }
        }
        // A model bundle cannot use a system section to list signatures.
        let mut m = sample();
        m.files.push(FileEntry::whole("t.json", 1, "0".repeat(64)));
        m.files
            .push(FileEntry::whole("t.json.k.minisig", 1, "0".repeat(64)));
        let mut s = system_section("model.gguf");
        s.trust = Some("t.json".into());
        m.system = Some(s);
        assert!(err_of(&m).contains("\"t.json.k.minisig\" refused: reserved"));
        assert!(is_trust_signature_of(
            "trust.json",
            "trust.json.a_b-1.minisig"
        ));
        assert!(!is_trust_signature_of(
            "trust.json",
            "trust.json.a/b.minisig"
        ));
        assert!(!is_trust_signature_of(
            "trust.json",
            "trust.jsonx.a.minisig"
        ));
        assert!(!is_trust_signature_of(
            "manifest.json.t",
            "manifest.json.t.a.minisig"
        ));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert!(validate_created(&format_rfc3339(1_951_000_000)).is_ok());
    }
}
