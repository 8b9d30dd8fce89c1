//! The appliance side: the one writer of the log directory.
//!
//! - [`AuditLog::append`] writes one entry line and fsyncs it before it
//!   returns; the caller shows the action's result only after `Ok`. Any
//!   error (state partition full, I/O error) is returned and the log stops
//!   taking entries until it is opened again: the caller refuses every
//!   action that must be audited (fail closed).
//! - [`AuditLog::checkpoint`] signs a checkpoint of the whole tree, only
//!   after checking it is consistent with the previous checkpoint, and
//!   stores the consistency proof beside it.
//! - [`AuditLog::prune`] removes whole segments that lie below the last
//!   checkpoint; the next segment's header keeps the frontier, so every
//!   later root and proof can still be made (see [`crate::audit::merkle`]).
//! - [`AuditLog::export`] copies the log with the public key and VERIFY.txt.
//! - [`AuditLog::receipt`] gives an entry, the last checkpoint and the
//!   inclusion proof (a receipt per answer); [`AuditLog::receipt_at`] the
//!   same for any kept entry under any stored checkpoint, from the files.

use crate::audit::checkpoint::{Checkpoint, CheckpointError, Stamp};
use crate::audit::entry::{Action, Entry, EntryError};
use crate::audit::layout::{self, LayoutError, SegmentHeader};
use crate::audit::merkle::{verify_consistency, MerkleError, Tree};
use crate::audit::note::{NoteSigner, NoteVerifier};
use crate::audit::receipt::{Receipt, ReceiptError};
use crate::fsutil::{sync_dir, write_atomic, FsError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Retention and segmenting policy (data from the image's policy file).
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// A new segment file starts after this many entries.
    pub segment_entries: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            segment_entries: 4096,
        }
    }
}

/// Errors of the writer; each names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("audit log is not writable after an earlier failure ({0}); actions that must be audited are refused")]
    Broken(String),
    #[error("{0}")]
    Fs(#[from] FsError),
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("entry {seq}: {source}")]
    Entry { seq: u64, source: EntryError },
    #[error("{path} line {line}: {source}")]
    Stored {
        path: String,
        line: usize,
        source: EntryError,
    },
    #[error("entry has seq {got}, the next is {want}")]
    Sequence { want: u64, got: u64 },
    #[error(
        "entry {seq}: uptime {got} ms is before the previous entry's {prev} ms in the same boot"
    )]
    UptimeBack { seq: u64, got: u64, prev: u64 },
    #[error("entry {seq}: a new boot id must start with a boot entry")]
    BootWithoutBootEntry { seq: u64 },
    #[error("{path}: starts at seq {got}, expected {want}")]
    SegmentStart { path: String, want: u64, got: u64 },
    #[error("{path}: origin {got:?} is not {want:?}")]
    Origin {
        path: String,
        want: String,
        got: String,
    },
    #[error("{path}: header frontier: {source}")]
    Frontier { path: String, source: MerkleError },
    #[error("{path}: header frontier differs from the entries before it")]
    FrontierMismatch { path: String },
    #[error("torn line in {path} line {line}, which is not the last segment")]
    TornInside { path: String, line: usize },
    #[error("{0}")]
    Merkle(#[from] MerkleError),
    #[error("checkpoint {index} ({path}): {source}")]
    Checkpoint {
        index: u64,
        path: String,
        source: CheckpointError,
    },
    #[error(
        "log on disk (size {size}) disagrees with its last checkpoint {index}: refusing to write"
    )]
    Disagrees { index: u64, size: u64 },
    #[error("refusing to sign: tree of size {size} is not consistent with checkpoint {index} (size {old})")]
    Inconsistent { index: u64, old: u64, size: u64 },
    #[error(
        "refusing to sign: checkpoint time ({boot}, {uptime_ms} ms) is not after the last entry's"
    )]
    StampBack { boot: String, uptime_ms: u64 },
    #[error("{0} already holds an audit log")]
    Exists(String),
    #[error("no audit log in {0}")]
    Missing(String),
    #[error("no checkpoint covers entry {0} yet")]
    NotCovered(u64),
    #[error("no stored checkpoint has size {0}")]
    NoCheckpointOfSize(u64),
    #[error("entry {0} is not kept in the log (pruned or not written)")]
    NotKept(u64),
    #[error("receipt for entry {seq} does not verify against the log's own key: {source}")]
    Receipt { seq: u64, source: ReceiptError },
    #[error("export to {path}: {source}")]
    Export {
        path: String,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, WriterError>;

/// Clocks of the last entry (for the order rules).
#[derive(Clone, Debug)]
struct Last {
    boot: String,
    uptime_ms: u64,
}

/// The open log directory.
pub struct AuditLog {
    dir: PathBuf,
    origin: String,
    /// The key the checkpoints are checked against (its name is the origin).
    key: NoteVerifier,
    policy: Policy,
    tree: Tree,
    segment: File,
    segment_first: u64,
    segment_len: u64,
    last: Option<Last>,
    /// (index, checkpoint, note text) of the newest checkpoint.
    last_checkpoint: Option<(u64, Checkpoint, String)>,
    broken: Option<String>,
}

fn open_append(path: &Path) -> std::result::Result<File, FsError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| FsError::new("open for append", path, e))
}

impl AuditLog {
    /// Creates an empty log in `dir` for the key's name as origin.
    pub fn create(dir: &Path, key: &NoteVerifier, policy: Policy) -> Result<Self> {
        let entries = dir.join(layout::ENTRIES_DIR);
        if entries.exists() {
            return Err(WriterError::Exists(dir.display().to_string()));
        }
        for d in [
            dir.to_path_buf(),
            entries,
            dir.join(layout::CHECKPOINTS_DIR),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| FsError::new("create directory", &d, e))?;
        }
        let tree = Tree::new();
        let segment = create_segment(dir, key.name(), &tree)?;
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            origin: key.name().to_owned(),
            key: key.clone(),
            policy,
            tree,
            segment,
            segment_first: 0,
            segment_len: 0,
            last: None,
            last_checkpoint: None,
            broken: None,
        })
    }

    /// Opens an existing log: reads every segment strictly, cuts off an
    /// incomplete last line (an entry whose fsync never returned), and
    /// checks the tree against the last checkpoint (signed by `key`).
    pub fn open(dir: &Path, key: &NoteVerifier, policy: Policy) -> Result<Self> {
        let mut segments = layout::list_segments(dir)?;
        // A segment whose header never reached the disk (power cut while
        // it was created) holds no entry: remove it.
        if segments.len() > 1 {
            if let Some((_, last)) = segments.last() {
                if let Err(LayoutError::Empty { .. }) = layout::read_segment(last) {
                    std::fs::remove_file(last)
                        .map_err(|e| FsError::new("remove empty segment", last, e))?;
                    sync_dir(&dir.join(layout::ENTRIES_DIR))?;
                    segments.pop();
                }
            }
        }
        let Some((&(first, _), _)) = segments.split_first() else {
            return Err(WriterError::Missing(dir.display().to_string()));
        };
        let mut tree = None;
        let mut last = None;
        let mut segment_len = 0;
        let mut frontier_mismatch = None;
        let count = segments.len();
        for (i, (seq, path)) in segments.iter().enumerate() {
            let seg = layout::read_segment(path)?;
            let h = &seg.header;
            if h.origin != key.name() {
                return Err(WriterError::Origin {
                    path: seg.path,
                    want: key.name().into(),
                    got: h.origin.clone(),
                });
            }
            let frontier = h
                .frontier_hashes()
                .map_err(|source| WriterError::Frontier {
                    path: seg.path.clone(),
                    source,
                })?;
            let t = match tree.as_mut() {
                None => tree.insert(Tree::from_frontier(first, &frontier).map_err(|source| {
                    WriterError::Frontier {
                        path: seg.path.clone(),
                        source,
                    }
                })?),
                Some(t) => {
                    // Checked after the last checkpoint's root, which
                    // catches an edited entry first.
                    if t.frontier()? != frontier && frontier_mismatch.is_none() {
                        frontier_mismatch = Some(seg.path.clone());
                    }
                    t
                }
            };
            if h.first_seq != *seq || h.first_seq != t.size() {
                return Err(WriterError::SegmentStart {
                    path: seg.path,
                    want: t.size(),
                    got: h.first_seq,
                });
            }
            for (line, bytes) in &seg.lines {
                let e = Entry::parse(bytes).map_err(|source| WriterError::Stored {
                    path: seg.path.clone(),
                    line: *line,
                    source,
                })?;
                if e.seq != t.size() {
                    return Err(WriterError::Sequence {
                        want: t.size(),
                        got: e.seq,
                    });
                }
                t.push(bytes)?;
                last = Some(Last {
                    boot: e.boot,
                    uptime_ms: e.uptime_ms,
                });
            }
            segment_len = seg.lines.len() as u64;
            if let Some(line) = seg.torn {
                if i + 1 != count {
                    return Err(WriterError::TornInside {
                        path: seg.path,
                        line,
                    });
                }
                let f = open_append(path)?;
                f.set_len(seg.complete_len)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| FsError::new("cut torn line of", path, e))?;
            }
        }
        let Some(tree) = tree else {
            return Err(WriterError::Missing(dir.display().to_string()));
        };
        remove_temp_files(&dir.join(layout::CHECKPOINTS_DIR))?;
        let stored = layout::list_checkpoints(dir)?;
        let last_checkpoint = match stored.last() {
            None => None,
            Some(s) => {
                let bad = |source| WriterError::Checkpoint {
                    index: s.index,
                    path: s.path.clone(),
                    source,
                };
                let cp = Checkpoint::open(&s.note, key).map_err(bad)?;
                let disagrees = WriterError::Disagrees {
                    index: s.index,
                    size: tree.size(),
                };
                if cp.size > tree.size() || cp.size < tree.start() {
                    return Err(disagrees);
                }
                if tree.root_at(cp.size)? != cp.root {
                    return Err(disagrees);
                }
                let text = String::from_utf8_lossy(&s.note).into_owned();
                Some((s.index, cp, text))
            }
        };
        if let Some(path) = frontier_mismatch {
            return Err(WriterError::FrontierMismatch { path });
        }
        let (seq, path) = segments
            .last()
            .cloned()
            .ok_or_else(|| WriterError::Missing(dir.display().to_string()))?;
        Ok(Self {
            dir: dir.to_owned(),
            origin: key.name().to_owned(),
            key: key.clone(),
            policy,
            tree,
            segment: open_append(&path)?,
            segment_first: seq,
            segment_len,
            last,
            last_checkpoint,
            broken: None,
        })
    }

    /// The seq the next entry must carry.
    pub fn next_seq(&self) -> u64 {
        self.tree.size()
    }

    /// The log's origin (the audit key's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The newest checkpoint, if any: (index, body).
    pub fn last_checkpoint(&self) -> Option<(u64, &Checkpoint)> {
        self.last_checkpoint.as_ref().map(|(i, c, _)| (*i, c))
    }

    fn new_segment(&mut self) -> Result<()> {
        self.segment = create_segment(&self.dir, &self.origin, &self.tree)?;
        self.segment_first = self.tree.size();
        self.segment_len = 0;
        Ok(())
    }

    /// Appends one entry and fsyncs it. `entry.seq` must be
    /// [`AuditLog::next_seq`]. After an error the log refuses every
    /// further append until it is opened again.
    pub fn append(&mut self, entry: &Entry) -> Result<()> {
        if let Some(why) = &self.broken {
            return Err(WriterError::Broken(why.clone()));
        }
        let want = self.tree.size();
        if entry.seq != want {
            return Err(WriterError::Sequence {
                want,
                got: entry.seq,
            });
        }
        match &self.last {
            Some(l) if l.boot == entry.boot && entry.uptime_ms < l.uptime_ms => {
                return Err(WriterError::UptimeBack {
                    seq: entry.seq,
                    got: entry.uptime_ms,
                    prev: l.uptime_ms,
                })
            }
            Some(l) if l.boot != entry.boot && entry.action != Action::Boot => {
                return Err(WriterError::BootWithoutBootEntry { seq: entry.seq })
            }
            _ => {}
        }
        let line = entry.encode().map_err(|source| WriterError::Entry {
            seq: entry.seq,
            source,
        })?;
        let r = self.write_line(&line);
        if let Err(e) = &r {
            self.broken = Some(e.to_string());
        }
        r?;
        self.tree.push(line.as_bytes())?;
        self.segment_len += 1;
        self.last = Some(Last {
            boot: entry.boot.clone(),
            uptime_ms: entry.uptime_ms,
        });
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        if self.segment_len >= self.policy.segment_entries.max(1) {
            self.new_segment()?;
        }
        let path = self
            .dir
            .join(layout::ENTRIES_DIR)
            .join(layout::segment_name(self.segment_first));
        let before = self
            .segment
            .metadata()
            .map_err(|e| FsError::new("stat segment", &path, e))?
            .len();
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let w = self
            .segment
            .write_all(&buf)
            .and_then(|()| self.segment.sync_data());
        if let Err(e) = w {
            // Best effort: take the unacknowledged line back out.
            let _ = self
                .segment
                .set_len(before)
                .and_then(|()| self.segment.sync_data());
            return Err(FsError::new("write entry to", &path, e).into());
        }
        Ok(())
    }

    /// Signs a checkpoint of the whole tree with `signer` at `time`, after
    /// checking it is consistent with the previous checkpoint; stores it
    /// (and the consistency proof) durably. Returns its index.
    pub fn checkpoint(&mut self, signer: &NoteSigner, time: Stamp) -> Result<u64> {
        if let Some(why) = &self.broken {
            return Err(WriterError::Broken(why.clone()));
        }
        if let Some(l) = &self.last {
            if l.boot != time.boot || time.uptime_ms < l.uptime_ms {
                return Err(WriterError::StampBack {
                    boot: time.boot,
                    uptime_ms: time.uptime_ms,
                });
            }
        }
        let size = self.tree.size();
        let root = self.tree.root()?;
        let (index, proof) = match &self.last_checkpoint {
            None => (1, None),
            Some((i, old, _)) => {
                let proof = if old.size == 0 {
                    Vec::new()
                } else {
                    self.tree.consistency_proof(old.size, size)?
                };
                if !verify_consistency(&proof, old.size, old.root, size, root) {
                    return Err(WriterError::Inconsistent {
                        index: *i,
                        old: old.size,
                        size,
                    });
                }
                (i + 1, Some(proof))
            }
        };
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            time,
        };
        let path = layout::shown(layout::CHECKPOINTS_DIR, &layout::checkpoint_name(index));
        let note = cp.sign(signer).map_err(|source| WriterError::Checkpoint {
            index,
            path,
            source,
        })?;
        let dir = self.dir.join(layout::CHECKPOINTS_DIR);
        let r = (|| {
            if let Some(p) = &proof {
                write_atomic(
                    &dir,
                    &layout::proof_name(index),
                    layout::proof_text(p).as_bytes(),
                )?;
            }
            write_atomic(&dir, &layout::checkpoint_name(index), note.as_bytes())
        })();
        if let Err(e) = r {
            self.broken = Some(e.to_string());
            return Err(e.into());
        }
        self.last_checkpoint = Some((index, cp, note));
        Ok(index)
    }

    /// Removes whole segments holding only entries below `below_seq` and
    /// below the last checkpoint's size; never the segment being written.
    /// Returns the number of segment files removed.
    pub fn prune(&mut self, below_seq: u64) -> Result<usize> {
        let limit = match &self.last_checkpoint {
            Some((_, cp, _)) => below_seq.min(cp.size),
            None => return Ok(0),
        };
        let segments = layout::list_segments(&self.dir)?;
        let mut removed = 0;
        for pair in segments.windows(2) {
            let [(_, path), (next_first, _)] = pair else {
                continue;
            };
            if *next_first > limit {
                break;
            }
            std::fs::remove_file(path).map_err(|e| FsError::new("remove segment", path, e))?;
            removed += 1;
        }
        sync_dir(&self.dir.join(layout::ENTRIES_DIR))?;
        Ok(removed)
    }

    /// Copies the log to the new directory `dst` with the public key and
    /// VERIFY.txt. Sign a checkpoint first: entries after the last
    /// checkpoint are not protected.
    pub fn export(&self, dst: &Path, key: &NoteVerifier) -> Result<()> {
        let err = |p: &Path| {
            let path = p.display().to_string();
            move |source| WriterError::Export { path, source }
        };
        std::fs::create_dir(dst).map_err(err(dst))?;
        for sub in [layout::ENTRIES_DIR, layout::CHECKPOINTS_DIR] {
            let to = dst.join(sub);
            std::fs::create_dir(&to).map_err(err(&to))?;
        }
        for (_, path) in layout::list_segments(&self.dir)? {
            let name = path.file_name().unwrap_or_default();
            let to = dst.join(layout::ENTRIES_DIR).join(name);
            std::fs::copy(&path, &to).map_err(err(&to))?;
        }
        for c in layout::list_checkpoints(&self.dir)? {
            let cdir = dst.join(layout::CHECKPOINTS_DIR);
            write_atomic(&cdir, &layout::checkpoint_name(c.index), &c.note)?;
            if let Some(p) = &c.proof {
                write_atomic(
                    &cdir,
                    &layout::proof_name(c.index),
                    layout::proof_text(p).as_bytes(),
                )?;
            }
        }
        write_atomic(dst, layout::PUBKEY_FILE, format!("{key}\n").as_bytes())?;
        let verify = verify_text(
            key,
            self.last_checkpoint
                .as_ref()
                .map(|(_, c, n)| (c, n.as_str())),
        );
        write_atomic(dst, layout::VERIFY_FILE, verify.as_bytes())?;
        for sub in [layout::ENTRIES_DIR, layout::CHECKPOINTS_DIR] {
            let d = dst.join(sub);
            for ent in std::fs::read_dir(&d).map_err(err(&d))? {
                let p = ent.map_err(err(&d))?.path();
                File::open(&p).and_then(|f| f.sync_all()).map_err(err(&p))?;
            }
            sync_dir(&d)?;
        }
        sync_dir(dst)?;
        Ok(())
    }

    /// A receipt for `entry` (already appended): the entry, the newest
    /// checkpoint and the inclusion proof of the entry in it. Built from
    /// memory only (the entry as given, the tree, the note this writer
    /// signed or checked on open) and verified before it is returned.
    pub fn receipt(&self, entry: &Entry) -> Result<Receipt> {
        let Some((_, cp, note)) = &self.last_checkpoint else {
            return Err(WriterError::NotCovered(entry.seq));
        };
        if entry.seq >= cp.size {
            return Err(WriterError::NotCovered(entry.seq));
        }
        let line = entry.encode().map_err(|source| WriterError::Entry {
            seq: entry.seq,
            source,
        })?;
        self.build_receipt(entry.seq, line, cp.size, note.clone())
    }

    /// A receipt for the stored entry `index` under the stored checkpoint
    /// of tree size `size` (the newest one of that size): the entry line
    /// from its segment file, the note from the checkpoints directory,
    /// the inclusion proof from the tree. Verified before it is returned.
    pub fn receipt_at(&self, index: u64, size: u64) -> Result<Receipt> {
        if index >= size {
            return Err(WriterError::NotCovered(index));
        }
        let note = layout::list_checkpoints(&self.dir)?
            .into_iter()
            .rev()
            .find(|s| Checkpoint::open(&s.note, &self.key).is_ok_and(|c| c.size == size))
            .ok_or(WriterError::NoCheckpointOfSize(size))?;
        let note =
            String::from_utf8(note.note).map_err(|_| WriterError::NoCheckpointOfSize(size))?;
        let line = self.stored_line(index)?;
        self.build_receipt(index, line, size, note)
    }

    /// The line of stored entry `index`, strictly parsed.
    fn stored_line(&self, index: u64) -> Result<String> {
        let segments = layout::list_segments(&self.dir)?;
        let (first, path) = segments
            .iter()
            .rev()
            .find(|(first, _)| *first <= index)
            .ok_or(WriterError::NotKept(index))?;
        let seg = layout::read_segment(path)?;
        let at = usize::try_from(index - first).map_err(|_| WriterError::NotKept(index))?;
        let (line_no, bytes) = seg.lines.get(at).ok_or(WriterError::NotKept(index))?;
        let e = Entry::parse(bytes).map_err(|source| WriterError::Stored {
            path: seg.path.clone(),
            line: *line_no,
            source,
        })?;
        if e.seq != index {
            return Err(WriterError::Sequence {
                want: index,
                got: e.seq,
            });
        }
        String::from_utf8(bytes.clone()).map_err(|_| WriterError::NotKept(index))
    }

    fn build_receipt(
        &self,
        index: u64,
        entry: String,
        size: u64,
        checkpoint: String,
    ) -> Result<Receipt> {
        let proof = self.tree.inclusion_proof(index, size)?;
        let r = Receipt {
            index,
            entry,
            proof,
            checkpoint,
        };
        r.verify(&self.key)
            .map_err(|source| WriterError::Receipt { seq: index, source })?;
        Ok(r)
    }
}

/// Creates the segment file that starts at the tree's current size, with
/// its header (the frontier) fsynced, and fsyncs the directory.
fn create_segment(dir: &Path, origin: &str, tree: &Tree) -> Result<File> {
    let first = tree.size();
    let header = SegmentHeader::new(origin, first, &tree.frontier()?);
    let dir = dir.join(layout::ENTRIES_DIR);
    let path = dir.join(layout::segment_name(first));
    let mut f = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| FsError::new("create segment", &path, e))?;
    f.write_all(format!("{}\n", header.encode()).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| FsError::new("write segment header", &path, e))?;
    sync_dir(&dir)?;
    Ok(f)
}

fn remove_temp_files(dir: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let s = name.to_string_lossy();
        if s.starts_with('.') && s.ends_with(".tmp") {
            let p = ent.path();
            std::fs::remove_file(&p).map_err(|e| FsError::new("remove", &p, e))?;
        }
    }
    Ok(())
}

/// The text of VERIFY.txt.
pub fn verify_text(key: &NoteVerifier, last: Option<(&Checkpoint, &str)>) -> String {
    let mut s = String::new();
    s.push_str(
        "Airlock audit log export\n\
         ========================\n\n\
         Verify it offline on the connected machine with the host CLI:\n\n\
         \x20   airlock audit verify THIS_DIR --key AUDIT_PUB [--since OLD_CHECKPOINT]\n\n\
         AUDIT_PUB is the audit public key you recorded when the appliance was\n\
         provisioned, NOT the audit.pub in this directory (a forger would replace\n\
         both). Compare them: ",
    );
    s.push_str(&format!("this export says {key}\n\n"));
    s.push_str(
        "OLD_CHECKPOINT is the newest checkpoint file you kept from an earlier\n\
         export (checkpoints/NNNNNNNN.checkpoint). Only against it are a truncated\n\
         log or a replayed older log caught. Keep the newest checkpoint of this\n\
         export for next time, and compare exports of the same appliance with\n\
         `airlock audit compare A B` to see a fork.\n\n\
         Entries after the last checkpoint are not protected by any signature.\n\n",
    );
    match last {
        Some((cp, note)) => {
            s.push_str(&format!("Last checkpoint: {}\n\n{note}", cp.describe()));
        }
        None => s.push_str("This export holds no checkpoint: nothing in it is signed.\n"),
    }
    s
}
