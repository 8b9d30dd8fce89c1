//! A receipt per answer: one entry, a signed checkpoint and the inclusion
//! proof of the entry in that checkpoint's tree, in the C2SP
//! [tlog-proof](https://c2sp.org/tlog-proof) text shape. Whoever holds the
//! audit public key can check it alone, without the log.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the entry's canonical line (the leaf bytes)>
//! index <leaf index, decimal>
//! <base64 hash>            one line per inclusion-proof hash, leaf to root
//!                          (empty line)
//! <signed checkpoint note, verbatim>
//! ```
//!
//! tlog-proof leaves the record itself to the application; the log's leaf
//! is the entry's line, so the receipt carries it in the `extra` line
//! (required here). The format, field by field: docs/audit.md (Receipts).

use crate::audit::checkpoint::{Checkpoint, CheckpointError};
use crate::audit::entry::{Entry, EntryError, MAX_LINE_LEN};
use crate::audit::merkle::{hash_from_base64, hash_to_base64, leaf_hash, verify_inclusion, Hash};
use crate::audit::note::NoteVerifier;
use base64::prelude::{Engine as _, BASE64_STANDARD};

/// The first line of every receipt.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Most proof hashes (a tree of at most 2^63 leaves).
pub const MAX_PROOF_HASHES: usize = 63;
/// Largest receipt read, in bytes.
pub const MAX_RECEIPT_LEN: usize = 64 * 1024;
/// Largest checkpoint note inside a receipt, in bytes.
pub const MAX_CHECKPOINT_LEN: usize = 16 * 1024;

/// Errors of this module; each names the failing step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("parse receipt: larger than {MAX_RECEIPT_LEN} bytes")]
    TooLarge,
    #[error("parse receipt: not UTF-8 text")]
    NotText,
    #[error("parse receipt: first line is not `{HEADER}`")]
    Header,
    #[error("parse receipt: no `extra <base64 entry line>` line")]
    NoExtra,
    #[error("parse receipt: the extra line is not canonical base64 of a UTF-8 line of at most {MAX_LINE_LEN} bytes")]
    Extra,
    #[error("parse receipt: no `index <decimal>` line")]
    NoIndex,
    #[error("parse receipt: index {0:?} is not a decimal number without leading zeros")]
    Index(String),
    #[error("parse receipt: proof hash {0} is not base64 of 32 bytes")]
    ProofHash(usize),
    #[error("parse receipt: more than {MAX_PROOF_HASHES} proof hashes")]
    TooManyHashes,
    #[error("parse receipt: no empty line before the checkpoint (truncated?)")]
    NoCheckpoint,
    #[error("parse receipt: checkpoint is empty or larger than {MAX_CHECKPOINT_LEN} bytes")]
    CheckpointSize,
    #[error("receipt checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("receipt entry: {0}")]
    Entry(#[from] EntryError),
    #[error("receipt index {index} is not the entry's seq {seq}")]
    IndexMismatch { index: u64, seq: u64 },
    #[error("receipt checkpoint of size {size} does not cover entry {index} (signed before it)")]
    NotCovered { index: u64, size: u64 },
    #[error("entry {index} is not in the checkpoint's tree of size {size}: the inclusion proof does not lead to the signed root")]
    NotIncluded { index: u64, size: u64 },
}

type Result<T> = std::result::Result<T, ReceiptError>;

/// A receipt as carried: nothing in it is checked until [`Receipt::verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    /// Leaf index claimed for the entry.
    pub index: u64,
    /// The entry's canonical line (the leaf bytes, no `\n`).
    pub entry: String,
    /// Inclusion proof, leaf to root.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note (ends in `\n`).
    pub checkpoint: String,
}

/// What a receipt proves once verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub entry: Entry,
    pub checkpoint: Checkpoint,
}

impl Receipt {
    /// The receipt text (tlog-proof shape).
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{HEADER}\nextra {}\nindex {}\n",
            BASE64_STANDARD.encode(self.entry.as_bytes()),
            self.index
        );
        for h in &self.proof {
            s.push_str(&hash_to_base64(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Strict parse of a receipt text: exactly the shape [`Receipt::to_text`]
    /// writes, bounded in every part. Checks no signature or proof.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_RECEIPT_LEN {
            return Err(ReceiptError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ReceiptError::NotText)?;
        let rest = text
            .strip_prefix(HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or(ReceiptError::Header)?;
        let (head, checkpoint) = rest.split_once("\n\n").ok_or(ReceiptError::NoCheckpoint)?;
        if checkpoint.is_empty() || checkpoint.len() > MAX_CHECKPOINT_LEN {
            return Err(ReceiptError::CheckpointSize);
        }
        let mut lines = head.split('\n');
        let extra = lines
            .next()
            .and_then(|l| l.strip_prefix("extra "))
            .ok_or(ReceiptError::NoExtra)?;
        let entry = decode_entry(extra)?;
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or(ReceiptError::NoIndex)?;
        let index = decimal(index).ok_or_else(|| ReceiptError::Index(index.to_owned()))?;
        let mut proof = Vec::new();
        for (i, line) in lines.enumerate() {
            if i >= MAX_PROOF_HASHES {
                return Err(ReceiptError::TooManyHashes);
            }
            proof.push(hash_from_base64(line).map_err(|_| ReceiptError::ProofHash(i))?);
        }
        Ok(Self {
            index,
            entry,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Checks, in order: the checkpoint's note signature by `key` and its
    /// body (origin = the key's name), the entry's strict form, that the
    /// index is the entry's seq and lies below the checkpoint's size, and
    /// the inclusion proof from the entry's leaf hash to the signed root.
    pub fn verify(&self, key: &NoteVerifier) -> Result<Verified> {
        let checkpoint = Checkpoint::open(self.checkpoint.as_bytes(), key)?;
        let entry = Entry::parse(self.entry.as_bytes())?;
        if entry.seq != self.index {
            return Err(ReceiptError::IndexMismatch {
                index: self.index,
                seq: entry.seq,
            });
        }
        if self.index >= checkpoint.size {
            return Err(ReceiptError::NotCovered {
                index: self.index,
                size: checkpoint.size,
            });
        }
        let leaf = leaf_hash(self.entry.as_bytes());
        if !verify_inclusion(
            &self.proof,
            checkpoint.size,
            checkpoint.root,
            self.index,
            leaf,
        ) {
            return Err(ReceiptError::NotIncluded {
                index: self.index,
                size: checkpoint.size,
            });
        }
        Ok(Verified { entry, checkpoint })
    }
}

/// The entry line from the extra line's canonical base64.
fn decode_entry(b64: &str) -> Result<String> {
    // Base64 of MAX_LINE_LEN bytes is at most 4/3 of it plus padding.
    if b64.is_empty() || b64.len() > MAX_LINE_LEN / 3 * 4 + 8 {
        return Err(ReceiptError::Extra);
    }
    let raw = BASE64_STANDARD
        .decode(b64)
        .map_err(|_| ReceiptError::Extra)?;
    if raw.len() > MAX_LINE_LEN || BASE64_STANDARD.encode(&raw) != b64 {
        return Err(ReceiptError::Extra);
    }
    let line = String::from_utf8(raw).map_err(|_| ReceiptError::Extra)?;
    if line.contains('\n') {
        return Err(ReceiptError::Extra);
    }
    Ok(line)
}

/// A decimal u64 in its one spelling.
fn decimal(s: &str) -> Option<u64> {
    let n: u64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}
