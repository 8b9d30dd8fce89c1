//! The on-disk layout shared by the appliance's log directory and an
//! export: segment files of entries, checkpoint notes with their
//! consistency proofs, and for exports the public key and VERIFY.txt.
//!
//! ```text
//! entries/00000000000000000000.jsonl     segment: header line, then entries
//! entries/00000000000000004096.jsonl     named by the seq of its first entry
//! checkpoints/00000001.checkpoint        signed note (C2SP tlog-checkpoint)
//! checkpoints/00000002.checkpoint
//! checkpoints/00000002.proof             consistency proof from checkpoint 1
//! audit.pub                              verifier key (exports only)
//! VERIFY.txt                             how to verify (exports only)
//! ```
//!
//! A segment's header line is canonical JSON:
//! `{"schema":"airlock-audit/1","origin":"…","first_seq":N,"frontier":["<b64>",…]}`,
//! where `frontier` is the tree's frontier at size N (see
//! [`crate::audit::merkle`]): what later roots and proofs need once the
//! segments before it are removed. A proof file holds one base64 hash per
//! line.

use crate::audit::merkle::{hash_from_base64, hash_to_base64, Hash, MerkleError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Schema string of segment headers.
pub const SCHEMA: &str = "airlock-audit/1";
pub const ENTRIES_DIR: &str = "entries";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const PUBKEY_FILE: &str = "audit.pub";
pub const VERIFY_FILE: &str = "VERIFY.txt";
/// Largest segment file read.
pub const MAX_SEGMENT_LEN: u64 = 256 * 1024 * 1024;
/// Largest proof file read (64 hashes and some).
pub const MAX_PROOF_LEN: u64 = 8 * 1024;

/// Errors of this module; each names the failing operation and file.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("{path}: unexpected file name (want {want})")]
    Name { path: String, want: &'static str },
    #[error("{path} line 1: segment header: {msg}")]
    Header { path: String, msg: String },
    #[error("{path} line {line}: incomplete last line (no newline)")]
    Torn { path: String, line: usize },
    #[error("{path}: empty file (no header line)")]
    Empty { path: String },
    #[error("{path} line {line}: {source}")]
    ProofHash {
        path: String,
        line: usize,
        source: MerkleError,
    },
    #[error("{path}: checkpoints are not numbered 1, 2, 3, ... (missing {missing:08})")]
    Numbering { path: String, missing: u64 },
    #[error("{path}: proof file without its checkpoint")]
    StrayProof { path: String },
}

type Result<T> = std::result::Result<T, LayoutError>;

/// First line of a segment file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentHeader {
    pub schema: String,
    pub origin: String,
    pub first_seq: u64,
    /// Base64 hashes: the tree's frontier at `first_seq`.
    pub frontier: Vec<String>,
}

impl SegmentHeader {
    pub fn new(origin: &str, first_seq: u64, frontier: &[Hash]) -> Self {
        Self {
            schema: SCHEMA.into(),
            origin: origin.into(),
            first_seq,
            frontier: frontier.iter().map(hash_to_base64).collect(),
        }
    }

    /// Strict parse (canonical JSON, known schema) of the header line.
    pub fn parse(line: &[u8]) -> std::result::Result<Self, String> {
        let h: Self = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        if h.schema != SCHEMA {
            return Err(format!("schema {:?} is not {SCHEMA}", h.schema));
        }
        if h.encode().as_bytes() != line {
            return Err("not in canonical form".into());
        }
        Ok(h)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The frontier as hashes.
    pub fn frontier_hashes(&self) -> std::result::Result<Vec<Hash>, MerkleError> {
        self.frontier.iter().map(|s| hash_from_base64(s)).collect()
    }
}

/// File name of the segment whose first entry is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jsonl")
}

/// File name of checkpoint `index` (1-based).
pub fn checkpoint_name(index: u64) -> String {
    format!("{index:08}.checkpoint")
}

/// File name of the consistency proof of checkpoint `index` from `index - 1`.
pub fn proof_name(index: u64) -> String {
    format!("{index:08}.proof")
}

/// A path shown relative to the log or export directory.
pub fn shown(dir: &str, name: &str) -> String {
    format!("{dir}/{name}")
}

fn read_bounded(path: &Path, shown_path: &str, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|source| LayoutError::Read {
        path: shown_path.to_owned(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| LayoutError::Read {
            path: shown_path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(LayoutError::TooLarge {
            path: shown_path.to_owned(),
            limit,
        });
    }
    Ok(buf)
}

fn list(dir: &Path, shown_dir: &str) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LayoutError::Read {
                path: shown_dir.to_owned(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|source| LayoutError::Read {
            path: shown_dir.to_owned(),
            source,
        })?;
        names.push(crate::escape::os(&ent.file_name()));
    }
    names.sort();
    Ok(names)
}

/// The segment files of a log directory, in order: (first seq, path).
pub fn list_segments(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for name in list(&root.join(ENTRIES_DIR), ENTRIES_DIR)? {
        let seq = name
            .strip_suffix(".jsonl")
            .filter(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| LayoutError::Name {
                path: shown(ENTRIES_DIR, &name),
                want: "<20-digit first seq>.jsonl",
            })?;
        out.push((seq, root.join(ENTRIES_DIR).join(&name)));
    }
    Ok(out)
}

/// A segment file read into lines.
pub struct SegmentFile {
    /// Shown path, e.g. `entries/00000000000000000000.jsonl`.
    pub path: String,
    pub header: SegmentHeader,
    /// (1-based line number, line without `\n`) of every entry line.
    pub lines: Vec<(usize, Vec<u8>)>,
    /// Bytes of complete lines (where a torn tail begins).
    pub complete_len: u64,
    /// Line number of an incomplete last line, if any.
    pub torn: Option<usize>,
}

/// Reads a segment file. An incomplete last line is reported in `torn`,
/// not as an error: the writer cuts it off, the verifier refuses it.
pub fn read_segment(path: &Path) -> Result<SegmentFile> {
    let name = path.file_name().map(crate::escape::os).unwrap_or_default();
    let shown_path = shown(ENTRIES_DIR, &name);
    let buf = read_bounded(path, &shown_path, MAX_SEGMENT_LEN)?;
    let mut lines = Vec::new();
    let mut complete_len = 0u64;
    let mut torn = None;
    let mut rest = &buf[..];
    let mut n = 0usize;
    while !rest.is_empty() {
        n += 1;
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                lines.push((n, rest[..i].to_vec()));
                complete_len += i as u64 + 1;
                rest = &rest[i + 1..];
            }
            None => {
                torn = Some(n);
                break;
            }
        }
    }
    if lines.is_empty() {
        return Err(LayoutError::Empty { path: shown_path });
    }
    let (_, head) = lines.remove(0);
    let header = SegmentHeader::parse(&head).map_err(|msg| LayoutError::Header {
        path: shown_path.clone(),
        msg,
    })?;
    Ok(SegmentFile {
        path: shown_path,
        header,
        lines,
        complete_len,
        torn,
    })
}

/// One checkpoint as stored: its note and the consistency proof from the
/// checkpoint before it (none for checkpoint 1).
pub struct StoredCheckpoint {
    pub index: u64,
    /// Shown path of the note.
    pub path: String,
    pub note: Vec<u8>,
    pub proof: Option<Vec<Hash>>,
}

/// The checkpoints of a log directory, numbered 1, 2, 3, ... without gaps.
pub fn list_checkpoints(root: &Path) -> Result<Vec<StoredCheckpoint>> {
    let dir = root.join(CHECKPOINTS_DIR);
    let names = list(&dir, CHECKPOINTS_DIR)?;
    let mut notes = Vec::new();
    let mut proofs = std::collections::BTreeSet::new();
    for name in &names {
        let parsed = name.split_once('.').and_then(|(num, ext)| {
            let ok = num.len() == 8 && num.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| num.parse::<u64>().ok().map(|n| (n, ext)))
                .flatten()
        });
        match parsed {
            Some((n, "checkpoint")) => notes.push(n),
            Some((n, "proof")) => {
                proofs.insert(n);
            }
            _ => {
                return Err(LayoutError::Name {
                    path: shown(CHECKPOINTS_DIR, name),
                    want: "<8-digit index>.checkpoint or .proof",
                })
            }
        }
    }
    let mut out = Vec::new();
    for (i, &n) in notes.iter().enumerate() {
        let want = i as u64 + 1;
        if n != want {
            return Err(LayoutError::Numbering {
                path: CHECKPOINTS_DIR.into(),
                missing: want,
            });
        }
        let path = shown(CHECKPOINTS_DIR, &checkpoint_name(n));
        let note = read_bounded(
            &dir.join(checkpoint_name(n)),
            &path,
            crate::audit::note::MAX_NOTE_LEN as u64,
        )?;
        let proof = if proofs.remove(&n) {
            Some(read_proof(
                &dir.join(proof_name(n)),
                &shown(CHECKPOINTS_DIR, &proof_name(n)),
            )?)
        } else {
            None
        };
        out.push(StoredCheckpoint {
            index: n,
            path,
            note,
            proof,
        });
    }
    if let Some(n) = proofs.into_iter().next() {
        return Err(LayoutError::StrayProof {
            path: shown(CHECKPOINTS_DIR, &proof_name(n)),
        });
    }
    Ok(out)
}

fn read_proof(path: &Path, shown_path: &str) -> Result<Vec<Hash>> {
    let buf = read_bounded(path, shown_path, MAX_PROOF_LEN)?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            hash_from_base64(l).map_err(|source| LayoutError::ProofHash {
                path: shown_path.to_owned(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// The text of a proof file.
pub fn proof_text(proof: &[Hash]) -> String {
    proof.iter().map(|h| hash_to_base64(h) + "\n").collect()
}
