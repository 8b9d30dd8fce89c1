//! The Merkle tree over the entries: RFC 6962 / RFC 9162 hashing
//! (leaf `SHA-256(0x00 || leaf)`, node `SHA-256(0x01 || left || right)`,
//! empty tree `SHA-256("")`), roots, inclusion and consistency proofs.
//!
//! The hashing and proof algorithms are the `tlog_tiles` crate's (a port of
//! Go's `golang.org/x/mod/sumdb/tlog`); this module keeps the hashes a
//! proof needs ("stored hashes" in tlog's numbering) and supports a tree
//! whose oldest leaves were pruned: such a tree starts from the *frontier*
//! of the pruned prefix, the roots of its maximal complete subtrees, left to
//! right (the "compact range" [0, N)). Every root, inclusion proof of a kept
//! leaf and consistency proof from a size >= N needs no other hash of the
//! pruned part.

use std::collections::BTreeMap;
pub use tlog_tiles::Hash;
use tlog_tiles::HashReader;

/// Errors of this module; each names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum MerkleError {
    #[error("compute hashes for leaf {index}: {source}")]
    Append {
        index: u64,
        source: tlog_tiles::Error,
    },
    #[error("tree root at size {size}: {source}")]
    Root {
        size: u64,
        source: tlog_tiles::Error,
    },
    #[error("inclusion proof of leaf {index} in size {size}: {source}")]
    ProveInclusion {
        index: u64,
        size: u64,
        source: tlog_tiles::Error,
    },
    #[error("consistency proof from size {old} to {new}: {source}")]
    ProveConsistency {
        old: u64,
        new: u64,
        source: tlog_tiles::Error,
    },
    #[error("size {size} is outside the tree's kept range {start}..={end}")]
    OutOfRange { size: u64, start: u64, end: u64 },
    #[error("frontier of size {size} needs {want} hashes, got {got}")]
    FrontierLength { size: u64, want: usize, got: usize },
    #[error("hash {0:?} is not base64 of 32 bytes")]
    HashText(String),
}

type Result<T> = std::result::Result<T, MerkleError>;

/// RFC 6962 leaf hash of the leaf bytes.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    tlog_tiles::record_hash(leaf)
}

/// RFC 6962 interior node hash.
pub fn node_hash(left: Hash, right: Hash) -> Hash {
    tlog_tiles::node_hash(left, right)
}

/// Hash of the empty tree.
pub const EMPTY_ROOT: Hash = tlog_tiles::EMPTY_HASH;

/// Base64 (standard, padded) as in checkpoints.
pub fn hash_to_base64(h: &Hash) -> String {
    h.to_string()
}

/// Parses base64 (standard, padded) of exactly 32 bytes.
pub fn hash_from_base64(s: &str) -> Result<Hash> {
    let h = Hash::parse_hash(s).map_err(|_| MerkleError::HashText(s.to_owned()))?;
    // Re-encode: refuses other spellings of the same bytes.
    if h.to_string() != s {
        return Err(MerkleError::HashText(s.to_owned()));
    }
    Ok(h)
}

/// The maximal complete subtrees of [0, size), left to right, as
/// (level, index at that level).
fn frontier_nodes(size: u64) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64u8).rev() {
        let width = 1u64 << level;
        if size & width != 0 {
            out.push((level, start >> level));
            start += width;
        }
    }
    out
}

/// Root of a tree from its frontier (as [`Tree::frontier`] gives it).
pub fn root_from_frontier(frontier: &[Hash]) -> Hash {
    let mut it = frontier.iter().rev();
    let Some(mut acc) = it.next().copied() else {
        return EMPTY_ROOT;
    };
    for h in it {
        acc = node_hash(*h, acc);
    }
    acc
}

/// An append-only tree, possibly starting after a pruned prefix.
#[derive(Clone, Debug)]
pub struct Tree {
    /// Leaves pruned before this tree's first kept leaf.
    start: u64,
    /// Stored hashes of the pruned prefix's frontier, by tlog index.
    pruned: BTreeMap<u64, Hash>,
    /// tlog index of `stored[0]`.
    base: u64,
    /// Every stored hash from leaf `start` on.
    stored: Vec<Hash>,
    size: u64,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                if i >= self.base {
                    usize::try_from(i - self.base)
                        .ok()
                        .and_then(|k| self.stored.get(k).copied())
                } else {
                    self.pruned.get(&i).copied()
                }
                .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            start: 0,
            pruned: BTreeMap::new(),
            base: 0,
            stored: Vec::new(),
            size: 0,
        }
    }

    /// A tree of `size` leaves of which only the frontier is known.
    pub fn from_frontier(size: u64, frontier: &[Hash]) -> Result<Self> {
        let nodes = frontier_nodes(size);
        if nodes.len() != frontier.len() {
            return Err(MerkleError::FrontierLength {
                size,
                want: nodes.len(),
                got: frontier.len(),
            });
        }
        let pruned = nodes
            .iter()
            .zip(frontier)
            .map(|(&(level, n), h)| (tlog_tiles::stored_hash_index(level, n), *h))
            .collect();
        Ok(Self {
            start: size,
            pruned,
            base: tlog_tiles::stored_hash_count(size),
            stored: Vec::new(),
            size,
        })
    }

    /// Number of leaves (pruned ones included).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// First leaf whose hash is kept.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Appends a leaf (its bytes); returns its leaf hash.
    pub fn push(&mut self, leaf: &[u8]) -> Result<Hash> {
        let h = leaf_hash(leaf);
        let index = self.size;
        let new = tlog_tiles::stored_hashes_for_record_hash(index, h, self)
            .map_err(|source| MerkleError::Append { index, source })?;
        self.stored.extend(new);
        self.size += 1;
        Ok(h)
    }

    fn check_range(&self, size: u64) -> Result<()> {
        if size < self.start || size > self.size {
            return Err(MerkleError::OutOfRange {
                size,
                start: self.start,
                end: self.size,
            });
        }
        Ok(())
    }

    /// Root of the tree of the first `size` leaves (start <= size <= size()).
    pub fn root_at(&self, size: u64) -> Result<Hash> {
        self.check_range(size)?;
        tlog_tiles::tree_hash(size, self).map_err(|source| MerkleError::Root { size, source })
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Result<Hash> {
        self.root_at(self.size)
    }

    /// Frontier of the whole tree (for a segment header).
    pub fn frontier(&self) -> Result<Vec<Hash>> {
        let idx: Vec<u64> = frontier_nodes(self.size)
            .into_iter()
            .map(|(l, n)| tlog_tiles::stored_hash_index(l, n))
            .collect();
        self.read_hashes(&idx).map_err(|source| MerkleError::Root {
            size: self.size,
            source,
        })
    }

    /// Inclusion proof (RFC 6962 audit path) of leaf `index` in the tree of
    /// `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_range(size)?;
        tlog_tiles::prove_record(size, index, self).map_err(|source| MerkleError::ProveInclusion {
            index,
            size,
            source,
        })
    }

    /// Consistency proof from the tree of `old` leaves to the one of `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.check_range(old)?;
        self.check_range(new)?;
        tlog_tiles::prove_tree(new, old, self).map_err(|source| MerkleError::ProveConsistency {
            old,
            new,
            source,
        })
    }
}

/// Verifies that leaf `index` with leaf hash `leaf` is in the tree of
/// `size` leaves with root `root`.
pub fn verify_inclusion(proof: &[Hash], size: u64, root: Hash, index: u64, leaf: Hash) -> bool {
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf).is_ok()
}

/// Verifies that the tree of `old` leaves with root `old_root` is a prefix
/// of the tree of `new` leaves with root `new_root`. Size 0 is a prefix of
/// everything (its root must be the empty root).
pub fn verify_consistency(
    proof: &[Hash],
    old: u64,
    old_root: Hash,
    new: u64,
    new_root: Hash,
) -> bool {
    if old == 0 {
        return old_root == EMPTY_ROOT && proof.is_empty();
    }
    if old > new {
        return false;
    }
    tlog_tiles::check_tree(&proof.to_vec(), new, new_root, old, old_root).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hex(h: &Hash) -> String {
        crate::audit::entry::hex(&h.0)
    }

    fn unhex(s: &str) -> Hash {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        Hash(v.try_into().unwrap())
    }

    /// The eight leaves of the RFC 6962 test vectors (certificate-transparency
    /// and Trillian's merkle tests).
    const LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn tree8() -> Tree {
        let mut t = Tree::new();
        for l in LEAVES {
            t.push(l).unwrap();
        }
        t
    }

    #[test]
    fn roots_match_rfc6962_vectors() {
        assert_eq!(
            hex(&Tree::new().root().unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let t = tree8();
        for (i, want) in ROOTS.iter().enumerate() {
            assert_eq!(
                hex(&t.root_at(i as u64 + 1).unwrap()),
                *want,
                "size {}",
                i + 1
            );
        }
    }

    #[test]
    fn proofs_match_rfc6962_vectors() {
        let t = tree8();
        // (leaf index, tree size, audit path)
        let inclusion: &[(u64, u64, &[&str])] = &[
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, want) in inclusion {
            let p = t.inclusion_proof(*index, *size).unwrap();
            let got: Vec<String> = p.iter().map(hex).collect();
            assert_eq!(got, *want, "inclusion {index} in {size}");
            let root = t.root_at(*size).unwrap();
            let leaf = leaf_hash(LEAVES[*index as usize]);
            assert!(verify_inclusion(&p, *size, root, *index, leaf));
            assert!(!verify_inclusion(
                &p,
                *size,
                root,
                *index,
                leaf_hash(b"other")
            ));
        }
        // (old size, new size, consistency proof)
        let consistency: &[(u64, u64, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in consistency {
            let p = t.consistency_proof(*old, *new).unwrap();
            let got: Vec<String> = p.iter().map(hex).collect();
            assert_eq!(got, *want, "consistency {old} to {new}");
            let (ro, rn) = (t.root_at(*old).unwrap(), t.root_at(*new).unwrap());
            assert!(verify_consistency(&p, *old, ro, *new, rn));
            assert!(!verify_consistency(&p, *old, rn, *new, ro) || old == new);
        }
        assert_eq!(
            unhex(ROOTS[7]),
            t.root().unwrap(),
            "hex round trip of the test helper"
        );
    }

    #[test]
    fn pruned_tree_gives_the_same_roots_and_proofs() {
        let full = {
            let mut t = Tree::new();
            for i in 0..45u32 {
                t.push(&i.to_be_bytes()).unwrap();
            }
            t
        };
        for start in [0u64, 1, 5, 8, 13, 32, 44] {
            let mut head = Tree::new();
            for i in 0..start as u32 {
                head.push(&i.to_be_bytes()).unwrap();
            }
            let mut t = Tree::from_frontier(start, &head.frontier().unwrap()).unwrap();
            assert_eq!(
                root_from_frontier(&head.frontier().unwrap()),
                head.root().unwrap()
            );
            for i in start as u32..45 {
                t.push(&i.to_be_bytes()).unwrap();
            }
            for size in start.max(1)..=45 {
                assert_eq!(t.root_at(size).unwrap(), full.root_at(size).unwrap());
                for old in start.max(1)..=size {
                    assert_eq!(
                        t.consistency_proof(old, size).unwrap(),
                        full.consistency_proof(old, size).unwrap()
                    );
                }
                for index in start..size {
                    assert_eq!(
                        t.inclusion_proof(index, size).unwrap(),
                        full.inclusion_proof(index, size).unwrap()
                    );
                }
            }
            assert!(t.root_at(start.saturating_sub(1)).is_err() || start == 0);
        }
    }

    #[test]
    fn frontier_length_is_checked() {
        assert!(Tree::from_frontier(5, &[EMPTY_ROOT]).is_err());
        assert!(Tree::from_frontier(5, &[EMPTY_ROOT, EMPTY_ROOT]).is_ok());
        assert!(hash_from_base64("AAAA").is_err());
    }
}
