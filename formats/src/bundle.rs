//! Bundle directory: scan, read the manifest and signatures once, verify
//! them against the trust file, check the listing, stream payloads.
//!
//! Layout: `NAME_VERSION.airlock/` holding `manifest.json`, one
//! `manifest.json.SIGNER.minisig` per signer, and the payload files (nested
//! directories allowed). Every payload is listed, nothing unlisted exists,
//! and no entry is a symlink, device, FIFO or socket. Everything below the
//! bundle directory is opened relative to its directory fd with
//! `O_NOFOLLOW`, so a symlink swapped in after the scan is not followed.

use crate::escape;
use crate::manifest::{self, FileEntry, Manifest, ManifestError, MANIFEST_FILE, MAX_MANIFEST_LEN};
use crate::minisig;
use crate::state::{Decision, State, StateError};
use crate::stream::{self, StreamError};
use crate::trust::{Candidate, Role, Tally, TrustError, TrustFile};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Suffix of signature files.
pub const SIG_SUFFIX: &str = ".minisig";
/// Most signature files a bundle may carry.
pub const MAX_SIGNATURES: usize = 64;
/// Most directory entries scanned.
pub const MAX_ENTRIES: usize = manifest::MAX_FILES + MAX_SIGNATURES + 1024;

/// Errors of this module; each names the failing check or operation.
/// Every name shown comes from a stick or a manifest and is escaped
/// ([`escape`]) when the error is formatted.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("open bundle directory {}: {source}", escape::path(path))]
    OpenDir { path: PathBuf, source: io::Error },
    #[error("read directory {}: {source}", escape::text(path))]
    ReadDir { path: String, source: io::Error },
    #[error("stat {}: {source}", escape::text(path))]
    Stat { path: String, source: io::Error },
    #[error("bundle entry {} is a symlink (refused)", escape::text(.0))]
    Symlink(String),
    #[error("bundle entry {} is a {what} (refused)", escape::text(path))]
    Special { path: String, what: &'static str },
    #[error("bundle entry name {} is not UTF-8", escape::bytes(.0))]
    NameEncoding(Vec<u8>),
    #[error("bundle has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error(
        "bundle is nested deeper than {} directories",
        manifest::MAX_PATH_DEPTH
    )]
    TooDeep,
    #[error("bundle has no manifest.json")]
    MissingManifest,
    #[error("read manifest.json: {0}")]
    ReadManifest(io::Error),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("bundle has more than {MAX_SIGNATURES} signature files")]
    TooManySignatures,
    #[error("read {}: {source}", escape::text(file))]
    ReadSignature { file: String, source: io::Error },
    #[error("{0}")]
    Trust(#[from] TrustError),
    #[error("unlisted file {} in bundle (not in manifest.json)", escape::text(.0))]
    Unlisted(String),
    #[error("unlisted directory {} in bundle (holds no listed payload)", escape::text(.0))]
    UnlistedDir(String),
    #[error("payload {} listed in manifest.json is missing", escape::text(.0))]
    Missing(String),
    #[error(
        "payload {} is {actual} bytes, manifest.json says {expected}",
        escape::text(path)
    )]
    Size {
        path: String,
        actual: u64,
        expected: u64,
    },
    #[error("open payload {}: {source}", escape::text(path))]
    OpenPayload { path: String, source: io::Error },
    #[error("payload {} is not a regular file", escape::text(path))]
    NotRegular { path: String },
    #[error("payload {}: {source}", escape::text(path))]
    Stream { path: String, source: StreamError },
    #[error(
        "payload {}: SHA-256 mismatch (manifest {expected}, read {actual})",
        escape::text(path)
    )]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error(
        "part {} of payload {}: SHA-256 mismatch (manifest {expected}, read {actual})",
        escape::text(part),
        escape::text(path)
    )]
    PartHashMismatch {
        path: String,
        part: String,
        expected: String,
        actual: String,
    },
    #[error(
        "payload {} joined from {parts} parts: SHA-256 mismatch (manifest {expected}, read {actual})",
        escape::text(path)
    )]
    JoinedHashMismatch {
        path: String,
        parts: usize,
        expected: String,
        actual: String,
    },
    #[error(
        "payload {} is present both joined and as parts (refused)",
        escape::text(.0)
    )]
    BothForms(String),
    #[error("{0}")]
    State(#[from] StateError),
}

type Result<T> = std::result::Result<T, BundleError>;

/// What the scan found: payload candidates with sizes, signature file names,
/// directories.
#[derive(Debug, Default)]
struct Scan {
    files: BTreeMap<String, u64>,
    signatures: Vec<String>,
    dirs: BTreeSet<String>,
    manifest: bool,
    entries: usize,
}

/// A bundle whose layout, manifest and listing (names and sizes) were
/// checked, and whose manifest and signature files were read once into
/// memory. Signatures are counted with [`Bundle::count_signatures`] (or by
/// [`open_verified`]); payload bytes are checked as they are streamed
/// ([`Bundle::stream_payload`]).
#[derive(Debug)]
pub struct Bundle {
    root: OwnedFd,
    pub path: PathBuf,
    pub manifest: Manifest,
    /// The exact manifest bytes that were verified (never re-read).
    pub manifest_bytes: Vec<u8>,
    pub manifest_sha256: String,
    /// Signature files (name, bytes) as read.
    pub signatures: Vec<(String, Vec<u8>)>,
    /// Split payloads present as their parts (a bundle on a stick); a split
    /// payload not in here is present joined (a version in the store).
    split_on_disk: BTreeSet<String>,
}

/// Opens `path` and checks everything except signatures and payload
/// contents: layout, manifest, listing and sizes. Used by the signing tool
/// (which then hashes every payload) and by [`open_verified`].
pub fn open(path: &Path) -> Result<Bundle> {
    let root = open_root(path)?;
    let scan = scan(&root)?;
    let manifest_bytes = read_manifest_at(&root, &scan)?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    let mut signatures = Vec::new();
    for file in &scan.signatures {
        let bytes = read_small(&root, file, minisig::MAX_FILE_LEN)?;
        signatures.push((file.clone(), bytes));
    }
    let split_on_disk = check_listing(&scan, &manifest)?;
    let manifest_sha256 = manifest::manifest_hash(&manifest_bytes);
    Ok(Bundle {
        root,
        path: path.to_owned(),
        manifest,
        manifest_bytes,
        manifest_sha256,
        signatures,
        split_on_disk,
    })
}

/// [`open`], then counts the signatures against `trust` and requires the
/// threshold of the role for the bundle's kind. Signatures that do not
/// count (junk, unknown key, not verifying, wrong role) are listed in the
/// tally's `ignored`, never fatal on their own.
pub fn open_verified(path: &Path, trust: &TrustFile) -> Result<(Bundle, Tally)> {
    let b = open(path)?;
    let tally = b.count_signatures(trust)?;
    tally.check()?;
    Ok((b, tally))
}

impl Bundle {
    /// Counts the signatures that verify against `trust` for the role of
    /// the bundle's kind; does not apply the threshold ([`Tally::check`]).
    pub fn count_signatures(&self, trust: &TrustFile) -> Result<Tally> {
        let candidates: Vec<Candidate> = self
            .signatures
            .iter()
            .map(|(file, bytes)| Candidate {
                file: file.clone(),
                sig: minisig::parse_signature_bytes(bytes),
            })
            .collect();
        Ok(trust.count(
            Role::for_kind(self.manifest.kind),
            &self.manifest_bytes,
            &candidates,
        )?)
    }

    /// Anti-rollback check against `state`.
    pub fn check_state(&self, state: &State) -> Result<Decision> {
        let m = &self.manifest;
        Ok(state.check(m.kind, &m.name, m.version, &self.manifest_sha256)?)
    }

    /// Opens a listed payload (no symlink followed at any level) and checks
    /// that it is a regular file of the listed size.
    pub fn open_payload(&self, entry: &FileEntry) -> Result<File> {
        let err = |source: io::Error| BundleError::OpenPayload {
            path: entry.path.clone(),
            source,
        };
        let mut comps: Vec<&str> = entry.path.split('/').collect();
        let last = comps
            .pop()
            .ok_or_else(|| BundleError::Missing(entry.path.clone()))?;
        let mut dir: Option<OwnedFd> = None;
        for c in comps {
            let parent = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
            let next = rustix::fs::openat(
                parent,
                c,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| err(e.into()))?;
            dir = Some(next);
        }
        let parent = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
        // O_NONBLOCK: a FIFO swapped in after the scan must not block the open.
        let fd = rustix::fs::openat(
            parent,
            last,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| err(e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| err(e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(BundleError::NotRegular {
                path: entry.path.clone(),
            });
        }
        let actual = u64::try_from(st.st_size).unwrap_or(0);
        if actual != entry.size {
            return Err(BundleError::Size {
                path: entry.path.clone(),
                actual,
                expected: entry.size,
            });
        }
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| err(e.into()))?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| err(e.into()))?;
        Ok(File::from(fd))
    }

    /// Whether `entry` is present as its parts (to be joined) rather than
    /// as one file.
    pub fn is_split(&self, entry: &FileEntry) -> bool {
        self.split_on_disk.contains(&entry.path)
    }

    /// Reads one payload exactly once, hashing it (and writing it to `sink`
    /// if given); fails on any size or hash difference. A payload present
    /// as parts is read part by part, each part's hash checked when it
    /// ends, and written joined to `sink`; the joined hash is checked last.
    pub fn stream_payload(
        &self,
        entry: &FileEntry,
        mut sink: Option<&mut File>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        if self.is_split(entry) {
            let mut joined = Sha256::new();
            for p in entry.parts() {
                let as_file = FileEntry::whole(&p.path, p.size, &p.sha256);
                let mut src = self.open_payload(&as_file)?;
                let digest = stream::stream_also(
                    &mut src,
                    p.size,
                    sink.as_deref_mut(),
                    Some(&mut joined),
                    progress,
                )
                .map_err(|source| BundleError::Stream {
                    path: p.path.clone(),
                    source,
                })?;
                let actual = manifest::hex(&digest);
                if actual != p.sha256 {
                    return Err(BundleError::PartHashMismatch {
                        path: entry.path.clone(),
                        part: p.path.clone(),
                        expected: p.sha256.clone(),
                        actual,
                    });
                }
            }
            let actual = manifest::hex(&joined.finalize());
            if actual != entry.sha256 {
                return Err(BundleError::JoinedHashMismatch {
                    path: entry.path.clone(),
                    parts: entry.parts().len(),
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
            return Ok(());
        }
        let mut src = self.open_payload(entry)?;
        let digest = stream::stream(&mut src, entry.size, sink, progress).map_err(|source| {
            BundleError::Stream {
                path: entry.path.clone(),
                source,
            }
        })?;
        let actual = manifest::hex(&digest);
        if actual != entry.sha256 {
            return Err(BundleError::HashMismatch {
                path: entry.path.clone(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Hashes every payload (read once each) without copying.
    pub fn verify_payloads(&self, progress: &mut dyn FnMut(u64)) -> Result<()> {
        for f in &self.manifest.files {
            self.stream_payload(f, None, progress)?;
        }
        Ok(())
    }
}

fn open_root(path: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(
        rustix::fs::CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BundleError::OpenDir {
        path: path.to_owned(),
        source: e.into(),
    })
}

fn scan(root: &OwnedFd) -> Result<Scan> {
    let mut s = Scan::default();
    scan_dir(root, "", 0, &mut s)?;
    Ok(s)
}

fn scan_dir(dir: &OwnedFd, prefix: &str, depth: usize, s: &mut Scan) -> Result<()> {
    if depth >= manifest::MAX_PATH_DEPTH {
        return Err(BundleError::TooDeep);
    }
    let shown = if prefix.is_empty() { "." } else { prefix };
    let rd = |source: rustix::io::Errno| BundleError::ReadDir {
        path: shown.to_owned(),
        source: source.into(),
    };
    let mut names = Vec::new();
    for entry in Dir::read_from(dir).map_err(rd)? {
        let entry = entry.map_err(rd)?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        s.entries += 1;
        if s.entries > MAX_ENTRIES {
            return Err(BundleError::TooManyEntries);
        }
        let name = std::str::from_utf8(raw)
            .map_err(|_| BundleError::NameEncoding(name_bytes(prefix, raw)))?;
        names.push(name.to_owned());
    }
    names.sort();
    for name in names {
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let st =
            rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                BundleError::Stat {
                    path: rel.clone(),
                    source: e.into(),
                }
            })?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {
                let size = u64::try_from(st.st_size).unwrap_or(0);
                if depth == 0 && name == MANIFEST_FILE {
                    s.manifest = true;
                } else if depth == 0 && is_signature_name(&name) {
                    s.signatures.push(name);
                    if s.signatures.len() > MAX_SIGNATURES {
                        return Err(BundleError::TooManySignatures);
                    }
                } else {
                    s.files.insert(rel, size);
                }
            }
            FileType::Directory => {
                let sub = rustix::fs::openat(
                    dir,
                    name.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| BundleError::OpenDir {
                    path: PathBuf::from(&rel),
                    source: e.into(),
                })?;
                s.dirs.insert(rel.clone());
                scan_dir(&sub, &rel, depth + 1, s)?;
            }
            FileType::Symlink => return Err(BundleError::Symlink(rel)),
            other => {
                let what = match other {
                    FileType::Fifo => "FIFO",
                    FileType::Socket => "socket",
                    FileType::CharacterDevice => "character device",
                    FileType::BlockDevice => "block device",
                    _ => "special file",
                };
                return Err(BundleError::Special { path: rel, what });
            }
        }
    }
    Ok(())
}

/// The raw bytes of `prefix/raw` (for a name that is not UTF-8).
fn name_bytes(prefix: &str, raw: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(prefix.len() + 1 + raw.len());
    if !prefix.is_empty() {
        v.extend_from_slice(prefix.as_bytes());
        v.push(b'/');
    }
    v.extend_from_slice(raw);
    v
}

/// `manifest.json.SIGNER.minisig` at the top level.
fn is_signature_name(name: &str) -> bool {
    name.strip_prefix("manifest.json.")
        .and_then(|r| r.strip_suffix(SIG_SUFFIX))
        .is_some_and(|signer| !signer.is_empty())
}

fn read_manifest_at(root: &OwnedFd, scan: &Scan) -> Result<Vec<u8>> {
    if !scan.manifest {
        return Err(BundleError::MissingManifest);
    }
    let bytes =
        read_limited(root, MANIFEST_FILE, MAX_MANIFEST_LEN).map_err(BundleError::ReadManifest)?;
    if bytes.len() > MAX_MANIFEST_LEN {
        return Err(ManifestError::TooLarge(bytes.len()).into());
    }
    Ok(bytes)
}

fn read_small(root: &OwnedFd, name: &str, max: usize) -> Result<Vec<u8>> {
    read_limited(root, name, max).map_err(|source| BundleError::ReadSignature {
        file: name.to_owned(),
        source,
    })
}

/// Reads at most `max + 1` bytes of a top-level regular file (no symlink).
fn read_limited(root: &OwnedFd, name: &str, max: usize) -> io::Result<Vec<u8>> {
    let fd = rustix::fs::openat(
        root,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    let mut out = Vec::new();
    File::from(fd).take(max as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// Checks that the files found are exactly those listed, with their sizes.
/// A split payload may be present joined (one file, as in the store) or as
/// all its parts (as on a stick), not both. Returns the payloads present as
/// parts.
fn check_listing(scan: &Scan, m: &Manifest) -> Result<BTreeSet<String>> {
    // In manifest order, so the first missing file reported is the first listed.
    let mut expected: Vec<(&str, u64)> = Vec::new();
    let mut split = BTreeSet::new();
    for f in &m.files {
        let joined = scan.files.contains_key(&f.path);
        if f.parts().is_empty() || joined {
            if f.parts().iter().any(|p| scan.files.contains_key(&p.path)) {
                return Err(BundleError::BothForms(f.path.clone()));
            }
            expected.push((&f.path, f.size));
        } else {
            split.insert(f.path.clone());
            for p in f.parts() {
                expected.push((&p.path, p.size));
            }
        }
    }
    let names: BTreeSet<&str> = expected.iter().map(|(p, _)| *p).collect();
    if let Some(extra) = scan.files.keys().find(|p| !names.contains(p.as_str())) {
        return Err(BundleError::Unlisted(extra.clone()));
    }
    for &(path, size) in &expected {
        match scan.files.get(path) {
            None => return Err(BundleError::Missing(path.to_owned())),
            Some(&actual) if actual != size => {
                return Err(BundleError::Size {
                    path: path.to_owned(),
                    actual,
                    expected: size,
                })
            }
            Some(_) => {}
        }
    }
    // Every directory must lead to a listed file.
    for d in &scan.dirs {
        let prefix = format!("{d}/");
        if !names.iter().any(|f| f.starts_with(&prefix)) {
            return Err(BundleError::UnlistedDir(d.clone()));
        }
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error that shows a name from a stick escapes it when
    /// formatted (the appliance console prints these as they are).
    #[test]
    fn names_in_errors_are_escaped() {
        const EVIL: &str = "e\x1b[2K\rOK\u{9b}31m\u{202e}";
        const SHOWN: &str = "e\\x1b[2K\\x0dOK\\x9b31m\\u{202e}";
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let cases: Vec<(BundleError, String)> = vec![
            (
                BundleError::Symlink(EVIL.into()),
                format!("bundle entry {SHOWN} is a symlink (refused)"),
            ),
            (
                BundleError::Special {
                    path: EVIL.into(),
                    what: "FIFO",
                },
                format!("bundle entry {SHOWN} is a FIFO (refused)"),
            ),
            (
                BundleError::NameEncoding(b"d/bad\xff\x9b\x1b".to_vec()),
                "bundle entry name d/bad\\xff\\x9b\\x1b is not UTF-8".into(),
            ),
            (
                BundleError::Unlisted(EVIL.into()),
                format!("unlisted file {SHOWN} in bundle (not in manifest.json)"),
            ),
            (
                BundleError::UnlistedDir(EVIL.into()),
                format!("unlisted directory {SHOWN} in bundle (holds no listed payload)"),
            ),
            (
                BundleError::Missing(EVIL.into()),
                format!("payload {SHOWN} listed in manifest.json is missing"),
            ),
            (
                BundleError::Size {
                    path: EVIL.into(),
                    actual: 1,
                    expected: 2,
                },
                format!("payload {SHOWN} is 1 bytes, manifest.json says 2"),
            ),
            (
                BundleError::OpenDir {
                    path: PathBuf::from(EVIL),
                    source: io(),
                },
                format!("open bundle directory {SHOWN}: entity not found"),
            ),
            (
                BundleError::Stat {
                    path: EVIL.into(),
                    source: io(),
                },
                format!("stat {SHOWN}: entity not found"),
            ),
            (
                BundleError::ReadSignature {
                    file: EVIL.into(),
                    source: io(),
                },
                format!("read {SHOWN}: entity not found"),
            ),
            (
                BundleError::NotRegular { path: EVIL.into() },
                format!("payload {SHOWN} is not a regular file"),
            ),
            (
                BundleError::HashMismatch {
                    path: EVIL.into(),
                    expected: "aa".into(),
                    actual: "bb".into(),
                },
                format!("payload {SHOWN}: SHA-256 mismatch (manifest aa, read bb)"),
            ),
            (
                ManifestError::Json(format!("unknown field `{EVIL}`")).into(),
                format!("manifest.json: unknown field `{SHOWN}`"),
            ),
        ];
        for (e, want) in cases {
            let shown = e.to_string();
            assert_eq!(shown, want);
            assert!(escape::first_unsafe(&shown).is_none(), "{shown:?}");
        }
    }
}
