//! The host verifier: checks an export (or the log directory itself) and
//! returns a summary, or the first failure with its place: the checkpoint
//! by index and file, the entry by seq and by file and line.
//!
//! What is checked, in this order:
//! 1. every checkpoint: signature by the auditor's key, body, origin = key
//!    name; sizes never shrink; each is consistent with the one before it
//!    (the stored consistency proof); uptime order within a boot;
//! 2. every segment: header, origin, no missing segment, frontier; every
//!    entry: strict canonical form, seq without gap, boot and uptime order;
//!    the recomputed root at each checkpoint's size equals the signed root;
//!    each checkpoint was signed in the boot of its last entry, after it;
//! 3. no checkpoint covers more entries than the export holds; every later
//!    segment header's frontier matches the entries before it;
//! 4. with `--since`, the auditor's older checkpoint is consistent with
//!    this log ([`Verified::check_since`]); [`crate::audit::compare`] does
//!    the same between two exports.
//!
//! A wall-clock step back is reported, not refused: with the entry that
//! explains it (a `clock-set` entry or the first entry of a new boot), or
//! as unexplained. An unexplained step back is flagged in the summary, not
//! refused: the entries are still the ones the appliance signed, and
//! refusing would make every later export of that log unverifiable; the
//! auditor decides what it means.

use crate::audit::checkpoint::{Checkpoint, CheckpointError};
use crate::audit::entry::{Action, Entry, EntryError, Outcome, Role};
use crate::audit::layout::{self, LayoutError};
use crate::audit::merkle::{hash_to_base64, verify_consistency, MerkleError, Tree};
use crate::audit::note::NoteVerifier;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Errors of the verifier; each names the place (checkpoint index and
/// file, or entry seq, file and line) and what failed there.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("no checkpoint in this export: nothing in it is signed")]
    NoCheckpoint,
    #[error("no segment file in this export")]
    NoSegments,
    #[error("checkpoint {index} ({path}): {source}")]
    Checkpoint {
        index: u64,
        path: String,
        source: CheckpointError,
    },
    #[error("checkpoint {index} ({path}): size {size} is below checkpoint {prev}'s size {prev_size}: an older checkpoint replayed")]
    SizeBack {
        index: u64,
        path: String,
        size: u64,
        prev: u64,
        prev_size: u64,
    },
    #[error("checkpoint {index} ({path}): no consistency proof from checkpoint {prev}")]
    MissingProof { index: u64, path: String, prev: u64 },
    #[error("checkpoint {index} ({path}): has a proof file, but nothing is before it")]
    UnexpectedProof { index: u64, path: String },
    #[error("checkpoint {index} ({path}): not consistent with checkpoint {prev} ({prev_desc}): the log was forked or rewritten")]
    Inconsistent {
        index: u64,
        path: String,
        prev: u64,
        prev_desc: String,
    },
    #[error("checkpoint {index} ({path}): signed at uptime {uptime_ms} ms, before checkpoint {prev} of the same boot")]
    CheckpointTimeBack {
        index: u64,
        path: String,
        prev: u64,
        uptime_ms: u64,
    },
    #[error("{path}: origin {got:?} is not the key's name {want:?}")]
    Origin {
        path: String,
        want: String,
        got: String,
    },
    #[error("{path}: header frontier: {source}")]
    Frontier { path: String, source: MerkleError },
    #[error("{path}: header frontier differs from the entries before it")]
    FrontierMismatch { path: String },
    #[error("{path}: header says the first entry is {header}, the file name says {name}")]
    SegmentName {
        path: String,
        header: u64,
        name: u64,
    },
    #[error("{path}: starts at entry {got}, but the entries before end at {want}: a segment is missing or misplaced")]
    SegmentStart { path: String, want: u64, got: u64 },
    #[error("entry {seq} ({path} line {line}): {source}")]
    Entry {
        seq: u64,
        path: String,
        line: usize,
        source: EntryError,
    },
    #[error("{path} line {line}: entry {got} found where entry {want} belongs: an entry was removed or entries reordered")]
    Sequence {
        path: String,
        line: usize,
        want: u64,
        got: u64,
    },
    #[error("{path} line {line}: incomplete last line")]
    Torn { path: String, line: usize },
    #[error("entry {seq} ({path} line {line}): uptime {got} ms is before entry {prev}'s {prev_ms} ms in the same boot")]
    UptimeBack {
        seq: u64,
        path: String,
        line: usize,
        got: u64,
        prev: u64,
        prev_ms: u64,
    },
    #[error("entry {seq} ({path} line {line}): new boot id {boot} without a boot entry")]
    BootWithoutBootEntry {
        seq: u64,
        path: String,
        line: usize,
        boot: String,
    },
    #[error("entry {seq} ({path} line {line}): boot id {boot} seen again after another boot")]
    BootReused {
        seq: u64,
        path: String,
        line: usize,
        boot: String,
    },
    #[error("checkpoint {index} ({path}, size {size}): root does not match {range}: an entry there was edited, removed, inserted or reordered")]
    RootMismatch {
        index: u64,
        path: String,
        size: u64,
        range: String,
    },
    #[error("checkpoint {index} ({path}): signed in boot {cp_boot} at uptime {cp_ms} ms, not after its last entry {seq} (boot {boot}, {ms} ms)")]
    CheckpointStamp {
        index: u64,
        path: String,
        seq: u64,
        cp_boot: String,
        cp_ms: u64,
        boot: String,
        ms: u64,
    },
    #[error("checkpoint {index} ({path}) covers {size} entries but the export holds {have}: truncated tail (entries {have}..{last} missing)", last = size - 1)]
    Truncated {
        index: u64,
        path: String,
        size: u64,
        have: u64,
    },
    #[error("checkpoint {index} ({path}, size {size}) is the last, and it is older than the oldest kept entry {start}: nothing kept is signed")]
    NotCovered {
        index: u64,
        path: String,
        size: u64,
        start: u64,
    },
    #[error("--since checkpoint: {0}")]
    SinceCheckpoint(CheckpointError),
    #[error("--since checkpoint ({desc}) is newer than this export's last checkpoint {index} (size {last}): the log was truncated or an older log replayed")]
    SinceBeyond { desc: String, index: u64, last: u64 },
    #[error("--since checkpoint ({desc}) is not consistent with this log, whose root at size {size} is {ours}: a fork or a rewritten log")]
    SinceFork {
        desc: String,
        size: u64,
        ours: String,
    },
    #[error("--since checkpoint ({desc}) predates the oldest kept entry {start} and matches no kept checkpoint's size: cannot check it")]
    SinceUncheckable { desc: String, start: u64 },
    #[error("{0}")]
    Merkle(#[from] MerkleError),
}

type Result<T> = std::result::Result<T, VerifyError>;

/// Why the wall clock went back at an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepWhy {
    /// The entry is a clock-set by this account.
    ClockSet { account: String },
    /// The entry starts a new boot (e.g. a dead CMOS battery).
    NewBoot { boot: String },
    /// Nothing in the log explains it.
    Unexplained,
}

/// A wall-clock step back at entry `seq`: from the previous entry's `from`
/// to this entry's `to` (UNIX seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepBack {
    pub seq: u64,
    pub from: u64,
    pub to: u64,
    pub why: StepWhy,
}

/// What a verified export holds.
#[derive(Clone, Debug)]
pub struct Summary {
    pub origin: String,
    /// Entries ever written (the tree size).
    pub size: u64,
    /// Oldest kept entry (older segments were pruned).
    pub first_seq: u64,
    pub checkpoints: u64,
    pub last_checkpoint: Checkpoint,
    /// Entries after the last checkpoint: not protected by a signature.
    pub unprotected: u64,
    /// Wall-clock time of the first and last kept entry.
    pub first_wall: Option<u64>,
    pub last_wall: Option<u64>,
    /// Boot ids in order of appearance.
    pub boots: Vec<String>,
    /// Accounts and their roles (`system` not included).
    pub accounts: BTreeMap<String, BTreeSet<Role>>,
    /// Entries per role.
    pub roles: BTreeMap<Role, u64>,
    pub jobs: BTreeSet<u64>,
    pub refusals: u64,
    pub failures: u64,
    pub steps_back: Vec<StepBack>,
}

/// A verified export: its summary, tree and checkpoints.
pub struct Verified {
    pub summary: Summary,
    tree: Tree,
    checkpoints: Vec<(String, Checkpoint)>,
}

/// Where an older checkpoint was found consistent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinceMatch {
    /// Recomputed from the kept entries.
    Entries,
    /// Equal to this kept checkpoint (index), chained by consistency proofs.
    Checkpoint(u64),
}

struct Prev {
    seq: u64,
    boot: String,
    wall: u64,
    uptime_ms: u64,
}

/// Verifies the export in `dir` against the auditor's `key`.
pub fn verify(dir: &Path, key: &NoteVerifier) -> Result<Verified> {
    let checkpoints = verify_checkpoints(dir, key)?;
    let Some(last) = checkpoints.last().cloned() else {
        return Err(VerifyError::NoCheckpoint);
    };
    let segments = layout::list_segments(dir)?;
    if segments.is_empty() {
        return Err(VerifyError::NoSegments);
    }
    let mut s = Summary {
        origin: key.name().to_owned(),
        size: 0,
        first_seq: 0,
        checkpoints: checkpoints.len() as u64,
        last_checkpoint: last.1.clone(),
        unprotected: 0,
        first_wall: None,
        last_wall: None,
        boots: Vec::new(),
        accounts: BTreeMap::new(),
        roles: BTreeMap::new(),
        jobs: BTreeSet::new(),
        refusals: 0,
        failures: 0,
        steps_back: Vec::new(),
    };
    let mut tree: Option<Tree> = None;
    // Next checkpoint to meet, and the size of the last one met.
    let mut next = 0usize;
    let mut good_size = 0u64;
    let mut prev: Option<Prev> = None;
    let mut frontier_mismatch = None;
    for (seq0, path) in &segments {
        let seg = layout::read_segment(path)?;
        if seg.header.origin != key.name() {
            return Err(VerifyError::Origin {
                path: seg.path,
                want: key.name().to_owned(),
                got: seg.header.origin,
            });
        }
        let frontier = seg
            .header
            .frontier_hashes()
            .map_err(|source| VerifyError::Frontier {
                path: seg.path.clone(),
                source,
            })?;
        if seg.header.first_seq != *seq0 {
            return Err(VerifyError::SegmentName {
                path: seg.path,
                header: seg.header.first_seq,
                name: *seq0,
            });
        }
        let t = match tree.as_mut() {
            Some(t) => {
                if seg.header.first_seq != t.size() {
                    return Err(VerifyError::SegmentStart {
                        path: seg.path,
                        want: t.size(),
                        got: seg.header.first_seq,
                    });
                }
                // Reported last: an edited entry before it also changes
                // the frontier, and the root check names the entries.
                if t.frontier()? != frontier && frontier_mismatch.is_none() {
                    frontier_mismatch = Some(seg.path.clone());
                }
                t
            }
            None => {
                let start = seg.header.first_seq;
                let t = tree.insert(Tree::from_frontier(start, &frontier).map_err(|source| {
                    VerifyError::Frontier {
                        path: seg.path.clone(),
                        source,
                    }
                })?);
                s.first_seq = start;
                // Checkpoints below the kept entries are vouched for by
                // the chain of consistency proofs alone.
                while next < checkpoints.len() && checkpoints[next].1.size < start {
                    next += 1;
                }
                if next == checkpoints.len() {
                    return Err(VerifyError::NotCovered {
                        index: checkpoints.len() as u64,
                        path: last.0.clone(),
                        size: last.1.size,
                        start,
                    });
                }
                good_size = start;
                check_reached(t, &checkpoints, &mut next, &mut good_size, None)?;
                t
            }
        };
        for (line, bytes) in &seg.lines {
            let want = t.size();
            let e = Entry::parse(bytes).map_err(|source| VerifyError::Entry {
                seq: want,
                path: seg.path.clone(),
                line: *line,
                source,
            })?;
            if e.seq != want {
                return Err(VerifyError::Sequence {
                    path: seg.path.clone(),
                    line: *line,
                    want,
                    got: e.seq,
                });
            }
            check_time(&e, prev.as_ref(), &mut s, &seg.path, *line)?;
            t.push(bytes)?;
            tally(&e, &mut s);
            let p = Prev {
                seq: e.seq,
                boot: e.boot,
                wall: e.wall,
                uptime_ms: e.uptime_ms,
            };
            check_reached(t, &checkpoints, &mut next, &mut good_size, Some(&p))?;
            prev = Some(p);
        }
        if let Some(line) = seg.torn {
            return Err(VerifyError::Torn {
                path: seg.path,
                line,
            });
        }
    }
    let Some(tree) = tree else {
        return Err(VerifyError::NoSegments);
    };
    if let Some((path, cp)) = checkpoints.get(next) {
        return Err(VerifyError::Truncated {
            index: next as u64 + 1,
            path: path.clone(),
            size: cp.size,
            have: tree.size(),
        });
    }
    if let Some(path) = frontier_mismatch {
        return Err(VerifyError::FrontierMismatch { path });
    }
    s.size = tree.size();
    s.unprotected = tree.size().saturating_sub(last.1.size);
    Ok(Verified {
        summary: s,
        tree,
        checkpoints,
    })
}

/// Phase 1: every checkpoint's signature, body, size order, consistency
/// proof and uptime order.
fn verify_checkpoints(dir: &Path, key: &NoteVerifier) -> Result<Vec<(String, Checkpoint)>> {
    let mut out: Vec<(String, Checkpoint)> = Vec::new();
    for st in layout::list_checkpoints(dir)? {
        let index = st.index;
        let path = st.path.clone();
        let cp = Checkpoint::open(&st.note, key).map_err(|source| VerifyError::Checkpoint {
            index,
            path: path.clone(),
            source,
        })?;
        match out.last() {
            None => {
                if st.proof.is_some() {
                    return Err(VerifyError::UnexpectedProof { index, path });
                }
            }
            Some((_, p)) => {
                let prev = index - 1;
                if cp.size < p.size {
                    return Err(VerifyError::SizeBack {
                        index,
                        path,
                        size: cp.size,
                        prev,
                        prev_size: p.size,
                    });
                }
                let Some(proof) = &st.proof else {
                    return Err(VerifyError::MissingProof { index, path, prev });
                };
                if !verify_consistency(proof, p.size, p.root, cp.size, cp.root) {
                    return Err(VerifyError::Inconsistent {
                        index,
                        path,
                        prev,
                        prev_desc: p.describe(),
                    });
                }
                if p.time.boot == cp.time.boot && cp.time.uptime_ms < p.time.uptime_ms {
                    return Err(VerifyError::CheckpointTimeBack {
                        index,
                        path,
                        prev,
                        uptime_ms: cp.time.uptime_ms,
                    });
                }
            }
        }
        out.push((path, cp));
    }
    Ok(out)
}

/// Compares the tree with every checkpoint of exactly its size.
fn check_reached(
    t: &Tree,
    checkpoints: &[(String, Checkpoint)],
    next: &mut usize,
    good_size: &mut u64,
    last_entry: Option<&Prev>,
) -> Result<()> {
    while let Some((path, cp)) = checkpoints.get(*next) {
        if cp.size != t.size() {
            break;
        }
        let index = *next as u64 + 1;
        if t.root_at(cp.size)? != cp.root {
            let range = if cp.size == *good_size {
                if cp.size == t.start() && cp.size > 0 {
                    "the frontier in the first segment's header".to_owned()
                } else {
                    format!("the {} entries before it", cp.size)
                }
            } else {
                format!("entries {}..{}", *good_size, cp.size - 1)
            };
            return Err(VerifyError::RootMismatch {
                index,
                path: path.clone(),
                size: cp.size,
                range,
            });
        }
        if let Some(e) = last_entry {
            if cp.time.boot != e.boot || cp.time.uptime_ms < e.uptime_ms {
                return Err(VerifyError::CheckpointStamp {
                    index,
                    path: path.clone(),
                    seq: e.seq,
                    cp_boot: cp.time.boot.clone(),
                    cp_ms: cp.time.uptime_ms,
                    boot: e.boot.clone(),
                    ms: e.uptime_ms,
                });
            }
        }
        *good_size = cp.size;
        *next += 1;
    }
    Ok(())
}

/// Boot and uptime order (refused when broken) and wall-clock steps back
/// (reported).
fn check_time(
    e: &Entry,
    prev: Option<&Prev>,
    s: &mut Summary,
    path: &str,
    line: usize,
) -> Result<()> {
    let Some(p) = prev else {
        s.boots.push(e.boot.clone());
        return Ok(());
    };
    let why = if p.boot != e.boot {
        if e.action != Action::Boot {
            return Err(VerifyError::BootWithoutBootEntry {
                seq: e.seq,
                path: path.to_owned(),
                line,
                boot: e.boot.clone(),
            });
        }
        if s.boots.contains(&e.boot) {
            return Err(VerifyError::BootReused {
                seq: e.seq,
                path: path.to_owned(),
                line,
                boot: e.boot.clone(),
            });
        }
        s.boots.push(e.boot.clone());
        StepWhy::NewBoot {
            boot: e.boot.clone(),
        }
    } else {
        if e.uptime_ms < p.uptime_ms {
            return Err(VerifyError::UptimeBack {
                seq: e.seq,
                path: path.to_owned(),
                line,
                got: e.uptime_ms,
                prev: p.seq,
                prev_ms: p.uptime_ms,
            });
        }
        if e.action == Action::ClockSet {
            StepWhy::ClockSet {
                account: e.account.clone(),
            }
        } else {
            StepWhy::Unexplained
        }
    };
    if e.wall < p.wall {
        s.steps_back.push(StepBack {
            seq: e.seq,
            from: p.wall,
            to: e.wall,
            why,
        });
    }
    Ok(())
}

fn tally(e: &Entry, s: &mut Summary) {
    s.first_wall.get_or_insert(e.wall);
    s.last_wall = Some(e.wall);
    if e.role != Role::System {
        s.accounts
            .entry(e.account.clone())
            .or_default()
            .insert(e.role);
    }
    *s.roles.entry(e.role).or_default() += 1;
    if let Some(j) = e.job {
        s.jobs.insert(j);
    }
    match e.result {
        Outcome::Refused => s.refusals += 1,
        Outcome::Failed => s.failures += 1,
        Outcome::Ok => {}
    }
}

impl Verified {
    /// Demands that `old` (an older checkpoint the auditor kept, signed by
    /// `key`) is consistent with this log.
    pub fn check_since(&self, note: &[u8], key: &NoteVerifier) -> Result<SinceMatch> {
        let old = Checkpoint::open(note, key).map_err(VerifyError::SinceCheckpoint)?;
        self.consistent_with(&old)
    }

    /// Whether a checkpoint (already known signed) fits this log.
    pub fn consistent_with(&self, old: &Checkpoint) -> Result<SinceMatch> {
        let n = self.checkpoints.len() as u64;
        let last = &self.summary.last_checkpoint;
        if old.size > last.size {
            return Err(VerifyError::SinceBeyond {
                desc: old.describe(),
                index: n,
                last: last.size,
            });
        }
        if old.size >= self.tree.start() {
            let ours = self.tree.root_at(old.size)?;
            if ours != old.root {
                return Err(VerifyError::SinceFork {
                    desc: old.describe(),
                    size: old.size,
                    ours: hash_to_base64(&ours),
                });
            }
            return Ok(SinceMatch::Entries);
        }
        match self
            .checkpoints
            .iter()
            .position(|(_, c)| c.size == old.size)
        {
            Some(i) if self.checkpoints[i].1.root == old.root => {
                Ok(SinceMatch::Checkpoint(i as u64 + 1))
            }
            Some(i) => Err(VerifyError::SinceFork {
                desc: old.describe(),
                size: old.size,
                ours: hash_to_base64(&self.checkpoints[i].1.root),
            }),
            None => Err(VerifyError::SinceUncheckable {
                desc: old.describe(),
                start: self.tree.start(),
            }),
        }
    }

    /// The kept checkpoints, in order.
    pub fn checkpoints(&self) -> impl Iterator<Item = &Checkpoint> {
        self.checkpoints.iter().map(|(_, c)| c)
    }
}
