//! Two exports of the same log compared: one extends the other, or they
//! fork from a common checkpoint (which no single export can show).

use crate::audit::verify::{Verified, VerifyError};

/// Result of comparing two verified exports of the same log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// The shorter one's checkpoints all fit the longer one: one is a
    /// prefix of the other. `shorter` is "A" or "B" (or "A" when equal).
    Consistent { shorter: &'static str, size: u64 },
    /// The first checkpoint of `side` that does not fit the other export,
    /// and the last one that did.
    Fork {
        side: &'static str,
        index: u64,
        desc: String,
        reason: String,
        last_common: Option<(u64, u64)>,
    },
}

/// Compares two verified exports of the same log: the checkpoints of the
/// one with the smaller last checkpoint must all fit the other.
pub fn compare(a: &Verified, b: &Verified) -> Comparison {
    let (side, small, large) = if a.summary.last_checkpoint.size <= b.summary.last_checkpoint.size {
        ("A", a, b)
    } else {
        ("B", b, a)
    };
    let mut last_common = None;
    for (i, cp) in small.checkpoints().enumerate() {
        let index = i as u64 + 1;
        match large.consistent_with(cp) {
            Ok(_) => last_common = Some((index, cp.size)),
            // Too old to check against the other's kept entries: skip.
            Err(VerifyError::SinceUncheckable { .. }) => {}
            Err(e) => {
                return Comparison::Fork {
                    side,
                    index,
                    desc: cp.describe(),
                    reason: e.to_string().replace("--since checkpoint", "it"),
                    last_common,
                }
            }
        }
    }
    Comparison::Consistent {
        shorter: side,
        size: small.summary.last_checkpoint.size,
    }
}
