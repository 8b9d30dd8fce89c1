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
//! Steps: refuse a store without `state.json` (see [`crate::store`] for
//! creating or recovering one); lock; clean up (remove leftover staging and
//! the version directory of an interrupted import, recorded as a
//! non-deferred pending intent in the state); verify manifest + signatures
//! (read once, into memory); anti-rollback check; write manifest and
//! counted signatures from memory into a staging directory; stream each
//! payload once (read → SHA-256 → staging file), compare size and hash,
//! fsync; fsync the staging directories; record the intent (pending) in
//! `state.json`; rename the staging directory to its version directory;
//! fsync; record the version in `state.json` (atomic replace). The state
//! write is the commit. On any error the staging directory is removed and
//! the state is untouched. No import deletes a version directory the state
//! does not mention: only its own recorded intents are undone, so a
//! deferred system version and anything the state does not know survive.

use crate::bundle::{self, BundleError};
use crate::escape;
use crate::fsutil::{sync_dir, FsError};
use crate::manifest::Kind;
use crate::state::{Decision, Pending, Signer, State, StateError, Version, STATE_FILE};
use crate::store::{self, StoreError};
use crate::trust::{Ignored, TrustFile};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Directory of in-progress imports inside the store.
pub const STAGING_DIR: &str = ".staging";
/// Lock file inside the store.
pub const LOCK_FILE: &str = store::LOCK_FILE;

/// Errors of this module; each names the failing step.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("recover store: {0}")]
    Recover(FsError),
    #[error("commit {kind} {name} version {version}: no such deferred import is pending")]
    NotPending {
        kind: Kind,
        name: String,
        version: u64,
    },
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("stage: {0}")]
    Stage(FsError),
    #[error("commit: {0}")]
    Commit(FsError),
    /// Checked after the bundle is verified and before a byte is copied.
    #[error("not enough space: needs {}, {} free", human_bytes(*.needs), human_bytes(*.free))]
    NoSpace { needs: u64, free: u64 },
}

/// A size as the console and the CLI show it: `767.0 MiB`, `1.62 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.2} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// Bytes an unprivileged writer may still use on the file system holding
/// `path` (statvfs `f_bavail`); `None` when it cannot be asked.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses a payload of `needs` bytes when only `free` are left.
pub fn check_space(needs: u64, free: Option<u64>) -> Result<()> {
    match free {
        Some(free) if needs > free => Err(ImportError::NoSpace { needs, free }),
        _ => Ok(()),
    }
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
    /// Signature files not counted, with the reason (names escaped when shown).
    pub ignored: Vec<Ignored>,
    pub decision: Decision,
    /// Payload bytes copied (0 when already installed).
    pub bytes: u64,
    pub destination: PathBuf,
    pub already_installed: bool,
    /// Leftovers of interrupted imports removed before this one (escaped paths).
    pub recovered: Vec<String>,
}

/// Who imports, and when: recorded in the version's custody record
/// (`state.json` `versions`, see [`crate::custody`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Importer {
    /// Account name (the appliance passes the logged-in officer).
    pub account: String,
    /// Unix time of the import (seconds).
    pub at: u64,
}

impl Importer {
    /// `account`, importing now (wall clock; not `SOURCE_DATE_EPOCH`).
    pub fn now(account: &str) -> Self {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            account: account.to_owned(),
            at,
        }
    }
}

/// Imports the bundle at `src` into `store`, which must have its
/// `state.json` ([`store::init`] creates a new store). The custody record
/// names the importer `unknown`: the appliance calls [`import_by`].
pub fn import(
    src: &Path,
    store: &Path,
    trust: &TrustFile,
    commit: Commit,
    progress: &mut dyn Progress,
) -> Result<ImportReport> {
    import_by(
        src,
        store,
        trust,
        commit,
        &Importer::now("unknown"),
        progress,
    )
}

/// [`import`], recording `by` (account and time) in the custody record.
pub fn import_by(
    src: &Path,
    store: &Path,
    trust: &TrustFile,
    commit: Commit,
    by: &Importer,
    progress: &mut dyn Progress,
) -> Result<ImportReport> {
    // Before anything is created (not even the lock file): a store without
    // its state is refused.
    if !store.join(STATE_FILE).is_file() {
        return Err(StateError::Missing {
            path: escape::path(store),
        }
        .into());
    }
    let _lock = store::lock(store)?;
    let mut state = State::load(store)?;
    let recovered = clean_leftovers(store, &mut state)?;

    let (b, tally) = bundle::open_verified(src, trust)?;
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
        signers: tally.signers.clone(),
        ignored: tally.ignored.clone(),
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

    // Before anything is staged: a bundle that does not fit is refused
    // here, not by ENOSPC half-way through the copy.
    check_space(m.total_size(), free_bytes(store))?;

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
    // Only the signatures that counted are kept in the store.
    for (name, bytes) in &b.signatures {
        if tally.counted_files.contains(name) {
            write_new(&guard.path, name, bytes).map_err(stage)?;
        }
    }
    let mut dirs = vec![guard.path.clone()];
    progress.start(m.total_size());
    let copied = copy_payloads(&b, &guard.path, &mut dirs, progress);
    progress.finish();
    report.bytes = copied?;
    for d in dirs.iter().rev() {
        sync_dir(d).map_err(stage)?;
    }

    // Record the intent first: if this process dies after the rename, the
    // next import knows the directory is its own uncommitted leftover.
    state.add_pending(Pending {
        kind: m.kind,
        name: m.name.clone(),
        version: m.version,
        manifest_sha256: b.manifest_sha256.clone(),
        deferred: commit == Commit::Deferred,
    });
    // The custody record goes with the intent, so a deferred commit keeps
    // it and a withdrawn intent drops it.
    state.put_version(Version {
        kind: m.kind,
        name: m.name.clone(),
        version: m.version,
        manifest_sha256: b.manifest_sha256.clone(),
        size: m.total_size(),
        signers: signers(trust, &tally.signers),
        imported_at: crate::manifest::format_rfc3339(by.at),
        imported_by: by.account.clone(),
        used: false,
    });
    state.save(store)?;

    // Move into place. A same-version directory (damaged copy, uncommitted
    // leftover) is moved aside first; it is not the committed content.
    let c = |e| ImportError::Commit(e);
    create_dir_synced(&kind_dir, store).map_err(c)?;
    create_dir_synced(&name_dir, &kind_dir).map_err(c)?;
    let moved = (|| {
        if dest.exists() {
            let aside = staging_root.join(format!("replaced-{}-{}-{}", m.kind, m.name, m.version));
            let _ = fs::remove_dir_all(&aside);
            fs::rename(&dest, &aside).map_err(|e| FsError::new("move aside", &dest, e))?;
        }
        fs::rename(&guard.path, &dest).map_err(|e| FsError::new("rename into place", &dest, e))
    })();
    if let Err(e) = moved {
        // Nothing moved into place: withdraw the intent (best effort; the
        // next import would withdraw it otherwise).
        state.remove_pending(m.kind, &m.name, m.version);
        state.remove_version(m.kind, &m.name, m.version);
        let _ = state.save(store);
        return Err(c(e));
    }
    guard.disarm();
    sync_dir(&name_dir).map_err(c)?;
    sync_dir(&staging_root).map_err(c)?;

    if commit == Commit::Now {
        state.record(m.kind, &m.name, m.version, &b.manifest_sha256);
        state.remove_pending(m.kind, &m.name, m.version);
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

/// Commits a version imported with [`Commit::Deferred`] (after the new
/// system booted and passed its health check): the anti-rollback check is
/// applied again, then the version is recorded in `state.json`.
pub fn commit_deferred(store: &Path, kind: Kind, name: &str, version: u64) -> Result<()> {
    let _lock = store::lock(store)?;
    let mut state = State::load(store)?;
    let not_pending = || ImportError::NotPending {
        kind,
        name: name.to_owned(),
        version,
    };
    let p = state
        .pending
        .iter()
        .find(|p| p.kind == kind && p.name == name && p.version == version && p.deferred)
        .cloned()
        .ok_or_else(not_pending)?;
    state.check(kind, name, version, &p.manifest_sha256)?;
    state.record(kind, name, version, &p.manifest_sha256);
    state.remove_pending(kind, name, version);
    state.save(store)?;
    Ok(())
}

/// Commits the version of a system that was not imported as a bundle (the
/// image flashed at the factory) once it has booted and passed its health
/// check: `manifest_sha256` stands for it (the SHA-256 of its UKI). Lower
/// or equal versions leave the record alone (`Ok(false)`); a version
/// imported with [`Commit::Deferred`] is committed with
/// [`commit_deferred`] instead.
pub fn commit_running(
    store: &Path,
    kind: Kind,
    name: &str,
    version: u64,
    manifest_sha256: &str,
) -> Result<bool> {
    let _lock = store::lock(store)?;
    let mut state = State::load(store)?;
    if state.covers(kind, name, version) {
        return Ok(false);
    }
    state.check(kind, name, version, manifest_sha256)?;
    state.record(kind, name, version, manifest_sha256);
    state.save(store)?;
    Ok(true)
}

/// Whether (kind, name, version) waits for a deferred commit.
pub fn is_deferred(store: &Path, kind: Kind, name: &str, version: u64) -> Result<bool> {
    let state = State::load(store)?;
    Ok(state
        .pending
        .iter()
        .any(|p| p.kind == kind && p.name == name && p.version == version && p.deferred))
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
                if state.is_installed(e.kind, &e.name, ver) {
                    out.push((e.kind, e.name.clone(), ver, v.path()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The counted signers with their key ids (from the trust file).
fn signers(trust: &TrustFile, names: &[String]) -> Vec<Signer> {
    let keys = trust.public_keys().unwrap_or_default();
    names
        .iter()
        .map(|n| Signer {
            name: n.clone(),
            key_id: keys
                .iter()
                .find(|(k, _)| &k.name == n)
                .map(|(_, pk)| pk.key_id.to_string())
                .unwrap_or_default(),
        })
        .collect()
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

/// Removes leftovers of interrupted imports and removals: everything under
/// `.staging/`, the version directory of each non-deferred pending intent
/// that the committed record does not cover (the import died between its
/// rename and its commit), and the directory of each committed removal
/// (`removing`, see [`crate::custody::remove`]). Never removes a version
/// directory the state does not mention, nor a deferred one. Returns what
/// was removed (escaped paths). The caller holds the store lock.
pub(crate) fn clean_leftovers(store: &Path, state: &mut State) -> Result<Vec<String>> {
    let rec = |op, p: &Path, e| ImportError::Recover(FsError::new(op, p, e));
    let mut removed = Vec::new();
    let staging = store.join(STAGING_DIR);
    match fs::read_dir(&staging) {
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(|e| rec("read", &staging, e))?;
                let p = e.path();
                remove_any(&p).map_err(|e| rec("remove", &p, e))?;
                removed.push(escape::path(&p));
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
    let interrupted: Vec<Pending> = state
        .pending
        .iter()
        .filter(|p| !p.deferred)
        .cloned()
        .collect();
    for p in &interrupted {
        if !state.covers(p.kind, &p.name, p.version) {
            if remove_version_dir(store, p.kind, &p.name, p.version, "uncommitted")? {
                removed.push(escape::path(&version_dir(
                    store, p.kind, &p.name, p.version,
                )));
            }
            state.remove_version(p.kind, &p.name, p.version);
        }
        state.remove_pending(p.kind, &p.name, p.version);
    }
    let removals = std::mem::take(&mut state.removing);
    for r in &removals {
        if remove_version_dir(store, r.kind, &r.name, r.version, "removed")? {
            removed.push(escape::path(&version_dir(
                store, r.kind, &r.name, r.version,
            )));
        }
    }
    if !interrupted.is_empty() || !removals.is_empty() {
        state.save(store)?;
    }
    if fs::remove_dir(&staging).is_ok() {
        sync_dir(store).map_err(ImportError::Recover)?;
    }
    Ok(removed)
}

/// `STORE/<kind>/<name>/<version>`.
pub(crate) fn version_dir(store: &Path, kind: Kind, name: &str, version: u64) -> PathBuf {
    store
        .join(kind.as_str())
        .join(name)
        .join(version.to_string())
}

/// Deletes a version directory the state no longer lists: moved out of
/// sight into `.staging/` first (one atomic rename, made durable), then
/// deleted. Returns whether there was one.
pub(crate) fn remove_version_dir(
    store: &Path,
    kind: Kind,
    name: &str,
    version: u64,
    why: &str,
) -> Result<bool> {
    let rec = |op, p: &Path, e| ImportError::Recover(FsError::new(op, p, e));
    let dir = version_dir(store, kind, name, version);
    if fs::symlink_metadata(&dir).is_err() {
        return Ok(false);
    }
    let staging = store.join(STAGING_DIR);
    let aside = staging.join(format!("{why}-{kind}-{name}-{version}"));
    fs::create_dir_all(&staging).map_err(|e| rec("create", &staging, e))?;
    remove_any(&aside).map_err(|e| rec("remove", &aside, e))?;
    fs::rename(&dir, &aside).map_err(|e| rec("move aside", &dir, e))?;
    if let Some(name_dir) = dir.parent() {
        sync_dir(name_dir).map_err(ImportError::Recover)?;
    }
    remove_any(&aside).map_err(|e| rec("remove", &aside, e))?;
    sync_dir(&staging).map_err(ImportError::Recover)?;
    Ok(true)
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

#[cfg(test)]
mod space_tests {
    use super::*;

    #[test]
    fn refuses_what_does_not_fit_with_both_sizes() {
        let cases: &[(u64, Option<u64>, Option<&str>)] = &[
            (10, Some(10), None),
            (10, None, None),
            (
                3 << 30,
                Some(800 << 20),
                Some("not enough space: needs 3.00 GiB, 800.0 MiB free"),
            ),
            (
                1 << 20,
                Some(0),
                Some("not enough space: needs 1.0 MiB, 0.0 MiB free"),
            ),
        ];
        for (needs, free, want) in cases {
            let got = check_space(*needs, *free).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), *want, "{needs} {free:?}");
        }
        assert!(free_bytes(Path::new("/")).is_some());
    }
}
