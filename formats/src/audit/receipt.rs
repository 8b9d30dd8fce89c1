//! A receipt per answer: the entry's line, a signed checkpoint and the
//! inclusion proof of the entry in that checkpoint's tree. Whoever holds
//! the audit public key can check it alone, without the log.
//!
//! Text form (JSON, one object):
//! `{"entry":"<entry line>","checkpoint":"<signed note>","proof":["<b64>",…]}`.

use crate::audit::checkpoint::{Checkpoint, CheckpointError};
use crate::audit::entry::{Entry, EntryError};
use crate::audit::merkle::{hash_from_base64, hash_to_base64, leaf_hash, verify_inclusion, Hash};
use crate::audit::note::NoteVerifier;
use serde::{Deserialize, Serialize};

/// Errors of this module; each names the failing check.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReceiptError {
    #[error("receipt is not JSON of entry, checkpoint, proof: {0}")]
    Parse(String),
    #[error("receipt checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("receipt entry: {0}")]
    Entry(#[from] EntryError),
    #[error("receipt proof hash {0}: not base64 of 32 bytes")]
    ProofHash(usize),
    #[error("entry {seq} is not in the checkpoint's tree of size {size}")]
    NotIncluded { seq: u64, size: u64 },
}

/// An entry, a checkpoint and the inclusion proof.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    /// The entry's canonical line (the leaf bytes).
    pub entry: String,
    /// The signed checkpoint note.
    pub checkpoint: String,
    pub proof: Vec<Hash>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    entry: String,
    checkpoint: String,
    proof: Vec<String>,
}

impl Receipt {
    pub fn to_json(&self) -> String {
        let w = Wire {
            entry: self.entry.clone(),
            checkpoint: self.checkpoint.clone(),
            proof: self.proof.iter().map(hash_to_base64).collect(),
        };
        serde_json::to_string(&w).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<Self, ReceiptError> {
        let w: Wire = serde_json::from_str(s).map_err(|e| ReceiptError::Parse(e.to_string()))?;
        let proof = w
            .proof
            .iter()
            .enumerate()
            .map(|(i, h)| hash_from_base64(h).map_err(|_| ReceiptError::ProofHash(i)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            entry: w.entry,
            checkpoint: w.checkpoint,
            proof,
        })
    }

    /// Checks the checkpoint's signature by `key`, the entry's form and its
    /// inclusion in the checkpoint's tree.
    pub fn verify(&self, key: &NoteVerifier) -> Result<(Entry, Checkpoint), ReceiptError> {
        let cp = Checkpoint::open(self.checkpoint.as_bytes(), key)?;
        let e = Entry::parse(self.entry.as_bytes())?;
        let leaf = leaf_hash(self.entry.as_bytes());
        if e.seq >= cp.size || !verify_inclusion(&self.proof, cp.size, cp.root, e.seq, leaf) {
            return Err(ReceiptError::NotIncluded {
                seq: e.seq,
                size: cp.size,
            });
        }
        Ok((e, cp))
    }
}
