//! Streaming import of a verified bundle into the store. The host CLI
//! (`airlock bundle install`) and the appliance call this same function.
//!
//! Store layout:
//! ```text
//! STORE/.lock                          flock()ed for the whole import
//! STORE/state.json                     anti-rollback state = the commit record
//! STORE/.staging/                      in-progress imports only
//! STORE/<kind>/<name>/<version>/       manifest.json, *.minisig, payload files
//! ```
//! Steps: lock; recover (remove leftover staging and version directories
//! that the state does not cover); verify manifest + signatures (read once,
//! into memory); anti-rollback check; write manifest and signatures from
//! memory into a staging directory; stream each payload once (read → SHA-256
//! → staging file), compare size and hash, fsync; fsync the staging
//! directories; rename the staging directory to its version directory;
//! fsync; record the version in `state.json` (atomic replace). The state
//! write is the commit: until it lands, the new version directory is
//! "uncommitted" and the next import removes it. On any error the staging
//! directory is removed and the state is untouched.

use crate::bundle::{self, BundleError};
use crate::fsutil::{sync_dir, FsError};
use crate::manifest::Kind;
use crate::state::{Decision, State, StateError};
use crate::trust::TrustFile;
use rustix::fs::FlockOperation;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Directory of in-progress imports inside the store.
pub const STAGING_DIR: &str = ".staging";
/// Lock file inside the store.
pub const LOCK_FILE: &str = ".lock";

/// Errors of this module; each names the failing step.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("prepare store: {0}")]
    Store(FsError),
    #[error("store {0} is locked by another import")]
    Locked(String),
    #[error("recover store: {0}")]
    Recover(FsError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("stage: {0}")]
    Stage(FsError),
    #[error("commit: {0}")]
    Commit(FsError),
}

type Result<T> = std::result::Result<T, ImportError>;

/// Progress reporting (the CLI draws a bar; the appliance writes its console).
pub trait Progress {
    /// Called once, before payloads are copied, with the total byte count.
    fn start(&mut self, _total: u64) {}
    /// Called with the number of bytes just copied.
    fn advance(&mut self, _bytes: u64) {}
    /// Called once at the end (success or failure).
    fn finish(&mut self) {}
}

/// No progress output.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Whether a successful import also records the version in `state.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Record now (model bundles; host installs).
    Now,
    /// Leave the state to the caller (system bundles are committed only after
    /// the new system booted and passed its health check; until then the
    /// version directory counts as uncommitted).
    Deferred,
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub kind: Kind,
    pub name: String,
    pub version: u64,
    pub manifest_sha256: String,
    pub signers: Vec<String>,
    pub decision: Decision,
    /// Payload bytes copied (0 when already installed).
    pub bytes: u64,
    pub destination: PathBuf,
    pub already_installed: bool,
    /// Leftovers of interrupted imports removed before this one.
    pub recovered: Vec<String>,
}

/// Imports the bundle at `src` into `store` (created if missing).
pub fn import(
    src: &Path,
    store: &Path,
    trust: &TrustFile,
    commit: Commit,
    progress: &mut dyn Progress,
) -> Result<ImportReport> {
    fs::create_dir_all(store).map_err(|e| ImportError::Store(FsError::new("create", store, e)))?;
    let _lock = lock(store)?;
    let mut state = State::load(store)?;
    let recovered = recover(store, &state)?;

    let b = bundle::open_verified(src, trust)?;
    let decision = b.check_state(&state)?;
    let m = &b.manifest;
    let kind_dir = store.join(m.kind.as_str());
    let name_dir = kind_dir.join(&m.name);
    let dest = name_dir.join(m.version.to_string());
    let mut report = ImportReport {
        kind: m.kind,
        name: m.name.clone(),
        version: m.version,
        manifest_sha256: b.manifest_sha256.clone(),
        signers: b.approval.signers.clone(),
        decision,
        bytes: 0,
        destination: dest.clone(),
        already_installed: false,
        recovered,
    };
    if decision == Decision::Same && dest.join(crate::manifest::MANIFEST_FILE).is_file() {
        report.already_installed = true;
        return Ok(report);
    }

    let staging_root = store.join(STAGING_DIR);
    fs::create_dir_all(&staging_root)
        .map_err(|e| ImportError::Stage(FsError::new("create", &staging_root, e)))?;
    let staging = staging_root.join(format!(
        "{}-{}-{}-{}",
        m.kind,
        m.name,
        m.version,
        std::process::id()
    ));
    let guard = Staging::create(staging)?;

    let stage = |e| ImportError::Stage(e);
    write_new(
        &guard.path,
        crate::manifest::MANIFEST_FILE,
        &b.manifest_bytes,
    )
    .map_err(stage)?;
    for (name, bytes) in &b.signatures {
        write_new(&guard.path, name, bytes).map_err(stage)?;
    }
    let mut dirs = vec![guard.path.clone()];
    progress.start(m.total_size());
    let copied = copy_payloads(&b, &guard.path, &mut dirs, progress);
    progress.finish();
    report.bytes = copied?;
    for d in dirs.iter().rev() {
        sync_dir(d).map_err(stage)?;
    }

    // Move into place. A same-version directory (damaged copy, uncommitted
    // leftover) is moved aside first; it is not the committed content.
    let c = |e| ImportError::Commit(e);
    create_dir_synced(&kind_dir, store).map_err(c)?;
    create_dir_synced(&name_dir, &kind_dir).map_err(c)?;
    if dest.exists() {
        let aside = staging_root.join(format!("replaced-{}-{}-{}", m.kind, m.name, m.version));
        let _ = fs::remove_dir_all(&aside);
        fs::rename(&dest, &aside).map_err(|e| c(FsError::new("move aside", &dest, e)))?;
    }
    fs::rename(&guard.path, &dest).map_err(|e| c(FsError::new("rename into place", &dest, e)))?;
    guard.disarm();
    sync_dir(&name_dir).map_err(c)?;
    sync_dir(&staging_root).map_err(c)?;

    if commit == Commit::Now {
        state.record(m.kind, &m.name, m.version, &b.manifest_sha256);
        state.save(store)?;
    }
    // Anything moved aside is garbage now; `.staging` goes when empty.
    let _ = fs::remove_dir_all(
        staging_root.join(format!("replaced-{}-{}-{}", m.kind, m.name, m.version)),
    );
    if fs::remove_dir(&staging_root).is_ok() {
        let _ = sync_dir(store);
    }
    Ok(report)
}

/// Lists committed versions: (kind, name, version, dir) for each version
/// directory not newer than the recorded one.
pub fn installed(store: &Path) -> Result<Vec<(Kind, String, u64, PathBuf)>> {
    let state = State::load(store)?;
    let mut out = Vec::new();
    for e in &state.entries {
        let name_dir = store.join(e.kind.as_str()).join(&e.name);
        let Ok(rd) = fs::read_dir(&name_dir) else {
            continue;
        };
        for v in rd.flatten() {
            if let Some(ver) = v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                if ver <= e.version {
                    out.push((e.kind, e.name.clone(), ver, v.path()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn copy_payloads(
    b: &bundle::Bundle,
    staging: &Path,
    dirs: &mut Vec<PathBuf>,
    progress: &mut dyn Progress,
) -> Result<u64> {
    let mut total = 0;
    for f in &b.manifest.files {
        let dst = staging.join(&f.path);
        if let Some(parent) = dst.parent() {
            if !parent.exists() {
                fs::create_dir_all(parent)
                    .map_err(|e| ImportError::Stage(FsError::new("create", parent, e)))?;
                let mut p = parent;
                while p != staging && !dirs.iter().any(|d| d == p) {
                    dirs.push(p.to_owned());
                    match p.parent() {
                        Some(q) => p = q,
                        None => break,
                    }
                }
            }
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&dst)
            .map_err(|e| ImportError::Stage(FsError::new("create", &dst, e)))?;
        b.stream_payload(f, Some(&mut out), &mut |n| progress.advance(n))?;
        out.sync_all()
            .map_err(|e| ImportError::Stage(FsError::new("fsync", &dst, e)))?;
        total += f.size;
    }
    Ok(total)
}

/// Takes the store lock (non-blocking: a second import is refused).
fn lock(store: &Path) -> Result<File> {
    let p = store.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(|e| ImportError::Store(FsError::new("open lock", &p, e)))?;
    match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(ImportError::Locked(store.display().to_string())),
        Err(e) => Err(ImportError::Store(FsError::new("lock", &p, e.into()))),
    }
}

/// Removes leftovers of interrupted imports: everything under `.staging/`,
/// and version directories the state does not cover (newer than the
/// recorded version, or of a (kind, name) never recorded). Returns what
/// was removed.
fn recover(store: &Path, state: &State) -> Result<Vec<String>> {
    let rec = |op, p: &Path, e| ImportError::Recover(FsError::new(op, p, e));
    let mut removed = Vec::new();
    let staging = store.join(STAGING_DIR);
    match fs::read_dir(&staging) {
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(|e| rec("read", &staging, e))?;
                let p = e.path();
                remove_any(&p).map_err(|e| rec("remove", &p, e))?;
                removed.push(p.display().to_string());
            }
            if !removed.is_empty() {
                sync_dir(&staging).map_err(ImportError::Recover)?;
            }
            // An empty `.staging` is not kept around.
            if fs::remove_dir(&staging).is_ok() {
                sync_dir(store).map_err(ImportError::Recover)?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(rec("read", &staging, e)),
    }
    for kind in [Kind::Model, Kind::System] {
        let kind_dir = store.join(kind.as_str());
        let Ok(names) = fs::read_dir(&kind_dir) else {
            continue;
        };
        for n in names.flatten() {
            let Some(name) = n.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let recorded = state.get(kind, &name).map(|e| e.version);
            let Ok(versions) = fs::read_dir(n.path()) else {
                continue;
            };
            let mut changed = false;
            for v in versions.flatten() {
                let Some(ver) = v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                if recorded.is_none_or(|r| ver > r) {
                    let p = v.path();
                    // Move out of sight first (atomic), then delete.
                    let aside = staging.join(format!("uncommitted-{kind}-{name}-{ver}"));
                    fs::create_dir_all(&staging).map_err(|e| rec("create", &staging, e))?;
                    fs::rename(&p, &aside).map_err(|e| rec("move aside", &p, e))?;
                    remove_any(&aside).map_err(|e| rec("remove", &aside, e))?;
                    removed.push(p.display().to_string());
                    changed = true;
                }
            }
            if changed {
                sync_dir(&n.path()).map_err(ImportError::Recover)?;
            }
        }
    }
    Ok(removed)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn create_dir_synced(dir: &Path, parent: &Path) -> std::result::Result<(), FsError> {
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(FsError::new("create", dir, e)),
    }
}

fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> std::result::Result<(), FsError> {
    let p = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&p)
        .map_err(|e| FsError::new("create", &p, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| FsError::new("write", &p, e))
}

/// The staging directory of one import; removed on drop unless disarmed.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Staging {
    fn create(path: PathBuf) -> Result<Self> {
        let _ = remove_any(&path);
        fs::create_dir(&path).map_err(|e| ImportError::Stage(FsError::new("create", &path, e)))?;
        Ok(Self { path, armed: true })
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
            if let Some(parent) = self.path.parent() {
                // `.staging` itself goes when empty: a failed import leaves the store as it was.
                if fs::remove_dir(parent).is_ok() {
                    if let Some(store) = parent.parent() {
                        let _ = sync_dir(store);
                    }
                } else {
                    let _ = sync_dir(parent);
                }
            }
        }
    }
}
