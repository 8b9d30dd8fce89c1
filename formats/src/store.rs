//! The store's explicit life-cycle operations: creating a new, empty store
//! ([`init`]) and rebuilding the anti-rollback state of a store that lost
//! its `state.json` ([`recover`]). Imports never do either implicitly: a
//! store without its state is refused (an empty state would accept a
//! rollback, see [`crate::state::State::load`]). Both are officer actions;
//! the caller records them in its audit log.

use crate::bundle::{self, BundleError};
use crate::escape;
use crate::fsutil::FsError;
use crate::manifest::Kind;
use crate::state::{State, StateError, STATE_FILE};
use crate::trust::TrustFile;
use rustix::fs::FlockOperation;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Lock file inside the store.
pub const LOCK_FILE: &str = ".lock";

/// Errors of this module; each names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("init store {}: {source}", escape::path(path))]
    Create { path: PathBuf, source: io::Error },
    #[error("init store {}: already initialised (it has a {STATE_FILE})", escape::path(.0))]
    AlreadyInitialised(PathBuf),
    #[error("init store {}: not empty (holds {}); a store that lost its state is recovered, not initialised", escape::path(path), escape::os(entry))]
    NotEmpty {
        path: PathBuf,
        entry: std::ffi::OsString,
    },
    #[error("recover store {}: it has a {STATE_FILE}; recovery only rebuilds a missing state", escape::path(.0))]
    HasState(PathBuf),
    #[error("recover store {}: {source}", escape::path(path))]
    Read { path: PathBuf, source: io::Error },
    #[error("lock store: {0}")]
    Lock(FsError),
    #[error("store {} is locked by another import", escape::path(.0))]
    Locked(PathBuf),
    #[error("{0}")]
    State(#[from] StateError),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Takes the store lock (non-blocking: a second import is refused). The
/// store directory must exist.
pub fn lock(store: &Path) -> Result<File> {
    let p = store.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(|e| StoreError::Lock(FsError::new("open lock", &p, e)))?;
    // A lock belongs to the open file description, which a child forked by
    // another thread of this process shares until its exec closes it: such a
    // copy holds a just-released lock for a moment. Retry briefly; a real
    // concurrent import holds it far longer and is refused.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(StoreError::Locked(store.to_owned())),
            Err(e) => return Err(StoreError::Lock(FsError::new("lock", &p, e.into()))),
        }
    }
}

/// How long [`lock`] waits for a lock held elsewhere before refusing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Creates a new store: the directory (absent or empty) with an empty
/// `state.json`. Refuses a directory that already holds anything, so an
/// existing store that lost its state cannot be re-initialised by mistake
/// (that would accept rollbacks): use [`recover`] for that.
pub fn init(store: &Path) -> Result<()> {
    let create = |source| StoreError::Create {
        path: store.to_owned(),
        source,
    };
    fs::create_dir_all(store).map_err(create)?;
    let _lock = lock(store)?;
    if store.join(STATE_FILE).exists() {
        return Err(StoreError::AlreadyInitialised(store.to_owned()));
    }
    for e in fs::read_dir(store).map_err(create)? {
        let e = e.map_err(create)?;
        if e.file_name() != LOCK_FILE {
            return Err(StoreError::NotEmpty {
                path: store.to_owned(),
                entry: e.file_name(),
            });
        }
    }
    State::default().save(store)?;
    Ok(())
}

/// What [`recover`] found.
#[derive(Debug, Default)]
pub struct RecoverReport {
    /// (kind, name, version, manifest SHA-256) recorded in the new state:
    /// the highest verified version of each (kind, name).
    pub recorded: Vec<(Kind, String, u64, String)>,
    /// Version directories not used, each with its one-line reason
    /// (names escaped). Nothing is deleted.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Rebuilds `state.json` of a store that lost it, from the installed
/// version directories: each must be a bundle that verifies against
/// `trust` (signatures with threshold, listing, every payload's SHA-256)
/// and whose manifest names the kind, name and version of its location.
/// The highest such version per (kind, name) is recorded. Refuses a store
/// that has a state. Deletes nothing; directories that do not verify are
/// reported and left as they are (uncommitted, so never used).
///
/// A system version imported with `Commit::Deferred` that never passed its
/// health check looks like any other installed version here: the officer
/// checks the report (the caller shows it) before relying on it.
pub fn recover(store: &Path, trust: &TrustFile) -> Result<RecoverReport> {
    let read = |path: &Path, source| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    if !store.is_dir() {
        return Err(read(store, io::Error::from(io::ErrorKind::NotFound)));
    }
    let _lock = lock(store)?;
    if store.join(STATE_FILE).exists() {
        return Err(StoreError::HasState(store.to_owned()));
    }
    let mut state = State::default();
    let mut report = RecoverReport::default();
    for kind in [Kind::Model, Kind::System] {
        let kind_dir = store.join(kind.as_str());
        let names = match fs::read_dir(&kind_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read(&kind_dir, e)),
        };
        let mut names: Vec<_> = names
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| read(&kind_dir, e))?;
        names.sort_by_key(|e| e.file_name());
        for n in names {
            let name_dir = n.path();
            let Some(name) = n.file_name().to_str().map(str::to_owned) else {
                report.skipped.push((name_dir, "name is not UTF-8".into()));
                continue;
            };
            let mut versions: Vec<(u64, PathBuf)> = Vec::new();
            let rd = fs::read_dir(&name_dir).map_err(|e| read(&name_dir, e))?;
            for v in rd {
                let v = v.map_err(|e| read(&name_dir, e))?;
                match v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                    Some(ver) => versions.push((ver, v.path())),
                    None => report
                        .skipped
                        .push((v.path(), "not a version directory".into())),
                }
            }
            // Highest first: the first that verifies is recorded.
            versions.sort_by_key(|v| std::cmp::Reverse(v.0));
            for (ver, dir) in versions {
                if state.get(kind, &name).is_some() {
                    break;
                }
                match verify_installed(&dir, trust, kind, &name, ver) {
                    Ok(sha) => {
                        state.record(kind, &name, ver, &sha);
                        report.recorded.push((kind, name.clone(), ver, sha));
                    }
                    Err(why) => report.skipped.push((dir, why)),
                }
            }
        }
    }
    // Atomic replace with fsync of the file and the directory.
    state.save(store)?;
    Ok(report)
}

/// Verifies one installed version directory completely; returns its
/// manifest SHA-256 or the one-line reason it does not qualify.
fn verify_installed(
    dir: &Path,
    trust: &TrustFile,
    kind: Kind,
    name: &str,
    version: u64,
) -> std::result::Result<String, String> {
    let (b, _tally) = bundle::open_verified(dir, trust).map_err(|e| e.to_string())?;
    let m = &b.manifest;
    if m.kind != kind || m.name != name || m.version != version {
        return Err(format!(
            "manifest says {} {} version {}, not its location",
            m.kind, m.name, m.version
        ));
    }
    b.verify_payloads(&mut |_| {})
        .map_err(|e: BundleError| e.to_string())?;
    Ok(b.manifest_sha256)
}
