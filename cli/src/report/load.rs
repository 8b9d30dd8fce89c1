//! The entries of an export as the report lists them.
//!
//! The verifier checks an export but does not hand its entries back, so
//! the report reads the segment files a second time. Reading never fails:
//! for a refused export the report still lists what could be read (marked
//! unverified), and each line or file that could not be read is noted.
//! For a verified export [`Loaded::check_against`] recomputes the Merkle
//! root of exactly the lines read and demands the verified size and the
//! last checkpoint's signed root, so the page never lists entries other
//! than the ones verified (an export changed in between is refused).

use airlock_formats::audit::entry::Entry;
use airlock_formats::audit::layout;
use airlock_formats::audit::merkle::{hash_to_base64, Tree};
use airlock_formats::audit::verify::Summary;
use std::path::Path;

/// Errors of the check against the verifier's result.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the export changed while the report was made: {0}")]
    Changed(String),
}

/// What the report read from an export.
#[derive(Default)]
pub struct Loaded {
    pub entries: Vec<Entry>,
    /// A line per file or line that could not be read (escaped later).
    pub unreadable: Vec<String>,
    tree: Option<Tree>,
}

impl Loaded {
    /// Reads every segment of `dir`; problems are noted, never fatal.
    pub fn read(dir: &Path) -> Self {
        let mut out = Loaded::default();
        let segments = match layout::list_segments(dir) {
            Ok(s) => s,
            Err(e) => {
                out.unreadable.push(e.to_string());
                return out;
            }
        };
        for (_, path) in segments {
            let seg = match layout::read_segment(&path) {
                Ok(s) => s,
                Err(e) => {
                    out.unreadable.push(e.to_string());
                    out.tree = None;
                    continue;
                }
            };
            out.add_to_tree(&seg);
            for (line, bytes) in &seg.lines {
                match Entry::parse(bytes) {
                    Ok(e) => out.entries.push(e),
                    Err(e) => out
                        .unreadable
                        .push(format!("{} line {line}: {e}", seg.path)),
                }
            }
            if let Some(line) = seg.torn {
                out.unreadable
                    .push(format!("{} line {line}: incomplete last line", seg.path));
            }
        }
        out
    }

    /// Extends the tree of the lines read; a gap or a bad frontier drops
    /// it (only a refused export can have either).
    fn add_to_tree(&mut self, seg: &layout::SegmentFile) {
        let first = seg.header.first_seq;
        let tree = match self.tree.take() {
            Some(t) if t.size() == first => Some(t),
            Some(_) => None,
            None if self.entries.is_empty() && self.unreadable.is_empty() => seg
                .header
                .frontier_hashes()
                .ok()
                .and_then(|f| Tree::from_frontier(first, &f).ok()),
            None => None,
        };
        self.tree = tree.and_then(|mut t| {
            for (_, bytes) in &seg.lines {
                t.push(bytes).ok()?;
            }
            Some(t)
        });
    }

    /// Demands that the lines read are the ones the verifier accepted:
    /// the same number of entries and, at the last checkpoint's size, its
    /// signed root.
    pub fn check_against(&self, s: &Summary) -> Result<(), LoadError> {
        let changed = |why: String| Err(LoadError::Changed(why));
        if !self.unreadable.is_empty() {
            return changed(self.unreadable.join("; "));
        }
        let Some(tree) = &self.tree else {
            return changed("segments no longer form one tree".into());
        };
        if tree.size() != s.size || self.entries.len() as u64 != s.size - s.first_seq {
            return changed(format!(
                "{} entries read, {} verified",
                self.entries.len(),
                s.size - s.first_seq
            ));
        }
        let last = &s.last_checkpoint;
        match tree.root_at(last.size) {
            Ok(root) if root == last.root => Ok(()),
            Ok(root) => changed(format!(
                "root at size {} is now {}, the checkpoint says {}",
                last.size,
                hash_to_base64(&root),
                hash_to_base64(&last.root)
            )),
            Err(e) => changed(e.to_string()),
        }
    }
}
