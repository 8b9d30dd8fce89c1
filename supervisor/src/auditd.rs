//! PID 1's audit writer: the one process that appends to the audit log.
//!
//! Console services and PID 1's own steps hand it [`Draft`]s (who, what,
//! result, content hashes); it adds the sequence number and the clocks
//! (RTC wall time, boot id, time since boot), appends the entry with fsync
//! (`formats::audit::writer`) and only then answers, so a console shows a
//! result only once it is recorded. If the log cannot be written, the
//! answer is an error and the console refuses the action (fail closed).
//!
//! Before provisioning there is no audit key and so no log: drafts (the
//! boot, sticks, the provisioning itself) wait in a bounded queue and are
//! appended when provisioning creates the log. The audit key's private
//! half is held here only while at least one console has an account logged
//! in (the console hands over the seed after login and takes it back at
//! logout); checkpoints are signed at each login, logout, export request
//! and shutdown while the key is held.
//!
//! Receipts: after an audited job a console asks (`Q`) for a receipt of
//! the last entry it recorded. PID 1 makes it only from its own state: the
//! entry it appended (kept in memory per console), the tree and a
//! checkpoint it signs then if none covers the entry yet; nothing the
//! console sends is parsed.

use airlock_formats::audit::checkpoint::Stamp;
use airlock_formats::audit::entry::{Action, Entry, Outcome, Role, Subject, SYSTEM_ACCOUNT};
use airlock_formats::audit::layout;
use airlock_formats::audit::note::{NoteSigner, NoteVerifier};
use airlock_formats::audit::writer::{AuditLog, Policy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// The log's directory on the state partition.
pub const AUDIT_DIR: &str = "/var/lib/airlock/audit";
/// Drafts kept while no log is open (first boot before provisioning).
pub const QUEUE_MAX: usize = 128;

/// Failing operation of the audit writer.
#[derive(Debug, Error)]
pub enum AuditdError {
    #[error("the appliance is not provisioned yet: there is no audit log")]
    NoLog,
    #[error("the audit log failed earlier and is closed: {0}")]
    Failed(String),
    #[error("read the audit key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("open the audit log: {0}")]
    Open(String),
    #[error("append to the audit log: {0}")]
    Append(String),
    #[error("sign a checkpoint: {0}")]
    Checkpoint(String),
    #[error("no account is logged in, so the audit key is locked: no checkpoint signed")]
    KeyLocked,
    #[error("the audit key handed over does not match audit.pub")]
    WrongKey,
    #[error("audit event: {0}")]
    Draft(String),
    #[error("no entry recorded on this console since its login: nothing to give a receipt for")]
    NothingToReceipt,
    #[error("make a receipt for entry {seq}: {reason}")]
    Receipt { seq: u64, reason: String },
    #[error("the receipt for entry {seq} is {len} bytes, more than a control message holds")]
    ReceiptTooLarge { seq: u64, len: usize },
}

/// The answer to a receipt request: `ok receipt SEQ checkpoint N`, a
/// newline, then the receipt text (C2SP tlog-proof shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptAnswer {
    /// The entry's seq.
    pub seq: u64,
    /// Index of the checkpoint the receipt is under.
    pub checkpoint: u64,
    /// The receipt text, to be written as `NAME.answer.receipt`.
    pub text: String,
}

impl ReceiptAnswer {
    pub fn encode(&self) -> String {
        format!(
            "ok receipt {} checkpoint {}\n{}",
            self.seq, self.checkpoint, self.text
        )
    }

    /// Reads an answer (the console side; PID 1 never parses one).
    pub fn decode(answer: &str) -> Option<ReceiptAnswer> {
        let (first, text) = answer.split_once('\n')?;
        let mut w = first.split(' ');
        let (Some("ok"), Some("receipt"), Some(seq), Some("checkpoint"), Some(cp), None) =
            (w.next(), w.next(), w.next(), w.next(), w.next(), w.next())
        else {
            return None;
        };
        Some(ReceiptAnswer {
            seq: seq.parse().ok()?,
            checkpoint: cp.parse().ok()?,
            text: text.to_owned(),
        })
    }
}

/// What is to be recorded; PID 1 adds seq and clocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    pub account: String,
    pub role: Role,
    pub action: Action,
    pub result: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<Subject>,
}

impl Draft {
    /// An entry of the appliance itself.
    pub fn system(action: Action, result: Outcome, detail: Option<String>) -> Draft {
        Draft {
            account: SYSTEM_ACCOUNT.into(),
            role: Role::System,
            action,
            result,
            reason: None,
            job: None,
            clock_from: None,
            detail,
            subjects: Vec::new(),
        }
    }

    /// An account's entry.
    pub fn by(account: &str, role: Role, action: Action, result: Outcome) -> Draft {
        Draft {
            account: account.into(),
            role,
            action,
            result,
            reason: None,
            job: None,
            clock_from: None,
            detail: None,
            subjects: Vec::new(),
        }
    }

    pub fn reason(mut self, r: &str) -> Draft {
        self.reason = Some(r.into());
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Draft {
        self.detail = Some(d.into());
        self
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(s: &str) -> Result<Draft, AuditdError> {
        serde_json::from_str(s).map_err(|e| AuditdError::Draft(e.to_string()))
    }
}

/// The clocks of one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clocks {
    pub wall: u64,
    pub boot: String,
    pub uptime_ms: u64,
}

impl Clocks {
    /// Now, from the real-time clock and CLOCK_BOOTTIME.
    pub fn now(boot: &str) -> Clocks {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let up = crate::clock::boottime();
        Clocks {
            wall,
            boot: boot.to_owned(),
            uptime_ms: u64::try_from(up.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The kernel's boot id without dashes (32 hex digits); zeros if unreadable.
pub fn boot_id(proc_sys: &Path) -> String {
    let raw = std::fs::read_to_string(proc_sys.join("kernel/random/boot_id")).unwrap_or_default();
    let id: String = raw
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id
    } else {
        "0".repeat(32)
    }
}

/// Where the writer is.
enum LogState {
    /// No log yet (no state partition, or not provisioned).
    Absent,
    Open(Box<AuditLog>),
    /// Opening or appending failed: nothing more is written this boot.
    Failed(String),
}

/// The audit writer of PID 1.
pub struct Auditd {
    dir: PathBuf,
    boot: String,
    state: LogState,
    verifier: Option<NoteVerifier>,
    queue: Vec<Draft>,
    dropped: u64,
    signer: Option<NoteSigner>,
    /// Consoles (by index) that handed over the key and still hold a login.
    holders: BTreeSet<usize>,
    policy: Policy,
    /// Segments kept (0: all); see [`Auditd::with_retention`].
    keep_segments: u64,
    /// The last entry each console (by index) recorded since its login.
    recorded: BTreeMap<usize, Entry>,
}

impl Auditd {
    pub fn new(dir: &Path, boot: String, policy: Policy) -> Auditd {
        Auditd {
            dir: dir.to_owned(),
            boot,
            state: LogState::Absent,
            verifier: None,
            queue: Vec::new(),
            dropped: 0,
            signer: None,
            holders: BTreeSet::new(),
            policy,
            keep_segments: 0,
            recorded: BTreeMap::new(),
        }
    }

    /// Keeps only the newest `keep` segments (0: all), pruned at checkpoints.
    pub fn with_retention(mut self, keep: u64) -> Auditd {
        self.keep_segments = keep;
        self
    }

    /// The public key file of the log (written by provisioning).
    pub fn pub_path(&self) -> PathBuf {
        self.dir.join(layout::PUBKEY_FILE)
    }

    /// Opens the log if its key exists (state partition mounted and the
    /// appliance provisioned), creating it on the first call after
    /// provisioning, then appends the queued drafts. `Ok(false)`: not
    /// provisioned yet.
    pub fn open(&mut self) -> Result<bool, AuditdError> {
        if matches!(self.state, LogState::Open(_)) {
            return Ok(true);
        }
        if let LogState::Failed(why) = &self.state {
            return Err(AuditdError::Failed(why.clone()));
        }
        let path = self.pub_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(self.fail(AuditdError::Key {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }))
            }
        };
        let key = match NoteVerifier::parse(text.trim()) {
            Ok(k) => k,
            Err(e) => {
                return Err(self.fail(AuditdError::Key {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }))
            }
        };
        let exists = self.dir.join(layout::ENTRIES_DIR).exists();
        let log = if exists {
            AuditLog::open(&self.dir, &key, self.policy)
        } else {
            AuditLog::create(&self.dir, &key, self.policy)
        };
        match log {
            Ok(l) => {
                self.state = LogState::Open(Box::new(l));
                self.verifier = Some(key);
            }
            Err(e) => return Err(self.fail(AuditdError::Open(e.to_string()))),
        }
        let queued = std::mem::take(&mut self.queue);
        if self.dropped > 0 {
            log::warn!(
                "audit: {} event(s) before the log existed were dropped (queue full)",
                self.dropped
            );
        }
        for d in queued {
            self.record(d)?;
        }
        Ok(true)
    }

    fn fail(&mut self, e: AuditdError) -> AuditdError {
        log::error!("audit: {e}");
        self.state = LogState::Failed(e.to_string());
        e
    }

    /// Records a draft now; `Ok(None)` when it was queued (no log yet).
    pub fn record(&mut self, d: Draft) -> Result<Option<u64>, AuditdError> {
        self.append(d).map(|e| e.map(|e| e.seq))
    }

    /// Records a draft for console `console`, which may then ask for its
    /// receipt.
    pub fn record_for(&mut self, console: usize, d: Draft) -> Result<Option<u64>, AuditdError> {
        let e = self.append(d)?;
        Ok(e.map(|e| {
            let seq = e.seq;
            self.recorded.insert(console, e);
            seq
        }))
    }

    /// Appends a draft (or queues it): the entry as appended.
    fn append(&mut self, d: Draft) -> Result<Option<Entry>, AuditdError> {
        match &mut self.state {
            LogState::Absent => {
                if self.queue.len() < QUEUE_MAX {
                    self.queue.push(d);
                } else {
                    self.dropped += 1;
                }
                Ok(None)
            }
            LogState::Failed(why) => Err(AuditdError::Failed(why.clone())),
            LogState::Open(log) => {
                let c = Clocks::now(&self.boot);
                let seq = log.next_seq();
                let e = Entry {
                    seq,
                    wall: c.wall,
                    boot: c.boot,
                    uptime_ms: c.uptime_ms,
                    account: d.account,
                    role: d.role,
                    action: d.action,
                    result: d.result,
                    reason: d.reason,
                    job: d.job,
                    clock_from: d.clock_from,
                    detail: d.detail,
                    subjects: d.subjects,
                };
                match log.append(&e) {
                    Ok(()) => Ok(Some(e)),
                    // A refused draft (bad field) is the sender's bug: the log stays open.
                    Err(airlock_formats::audit::writer::WriterError::Entry { source, .. }) => {
                        Err(AuditdError::Draft(source.to_string()))
                    }
                    Err(err) => Err(self.fail(AuditdError::Append(err.to_string()))),
                }
            }
        }
    }

    /// The log's health for the system check: `Some(Ok)` open (its tail
    /// verified when it was opened), `Some(Err)` failed, `None` not open yet
    /// (not provisioned).
    pub fn health(&self) -> Option<Result<(), String>> {
        match &self.state {
            LogState::Open(_) => Some(Ok(())),
            LogState::Failed(why) => Some(Err(format!("the audit log failed: {why}"))),
            LogState::Absent => None,
        }
    }

    /// Whether a record would be written now (or queued before provisioning).
    pub fn writable(&self) -> Result<(), AuditdError> {
        match &self.state {
            LogState::Failed(why) => Err(AuditdError::Failed(why.clone())),
            _ => Ok(()),
        }
    }

    /// A console logged in and handed over the audit key's seed.
    pub fn hold_key(&mut self, console: usize, seed: &[u8; 32]) -> Result<(), AuditdError> {
        let verifier = self.verifier.as_ref().ok_or(AuditdError::NoLog)?;
        let signer = NoteSigner::from_seed(verifier.name(), seed)
            .map_err(|e| AuditdError::Checkpoint(e.to_string()))?;
        if signer.verifier().to_string() != verifier.to_string() {
            return Err(AuditdError::WrongKey);
        }
        self.signer = Some(signer);
        self.holders.insert(console);
        Ok(())
    }

    /// A console's login ended (or the console went away): the key is
    /// dropped when no console holds a login any more.
    pub fn release_key(&mut self, console: usize) {
        self.holders.remove(&console);
        self.recorded.remove(&console);
        if self.holders.is_empty() {
            // NoteSigner's key zeroizes on drop (ed25519-dalek "zeroize").
            self.signer = None;
        }
    }

    pub fn key_held(&self) -> bool {
        self.signer.is_some()
    }

    /// Signs a checkpoint of the whole log now; its index.
    pub fn checkpoint(&mut self) -> Result<u64, AuditdError> {
        let signer = self.signer.as_ref().ok_or(AuditdError::KeyLocked)?;
        let LogState::Open(log) = &mut self.state else {
            return Err(match &self.state {
                LogState::Failed(w) => AuditdError::Failed(w.clone()),
                _ => AuditdError::NoLog,
            });
        };
        let c = Clocks::now(&self.boot);
        let stamp = Stamp {
            wall: c.wall,
            boot: c.boot,
            uptime_ms: c.uptime_ms,
        };
        match log.checkpoint(signer, stamp) {
            Ok(i) => {
                self.retain();
                Ok(i)
            }
            Err(e) => {
                let e = AuditdError::Checkpoint(e.to_string());
                log::error!("audit: {e}");
                Err(e)
            }
        }
    }

    /// A receipt for the last entry console `console` recorded: under the
    /// newest checkpoint if it covers the entry, else under one signed now.
    /// Built from memory and verified against the log's key by the writer.
    pub fn receipt(&mut self, console: usize) -> Result<ReceiptAnswer, AuditdError> {
        let entry = self
            .recorded
            .get(&console)
            .cloned()
            .ok_or(AuditdError::NothingToReceipt)?;
        let covered = match &self.state {
            LogState::Open(log) => log
                .last_checkpoint()
                .is_some_and(|(_, cp)| cp.size > entry.seq),
            LogState::Failed(w) => return Err(AuditdError::Failed(w.clone())),
            LogState::Absent => return Err(AuditdError::NoLog),
        };
        if !covered {
            self.checkpoint()?;
        }
        let LogState::Open(log) = &self.state else {
            return Err(AuditdError::NoLog);
        };
        let bad = |reason: String| AuditdError::Receipt {
            seq: entry.seq,
            reason,
        };
        let r = log.receipt(&entry).map_err(|e| bad(e.to_string()))?;
        let (checkpoint, _) = log
            .last_checkpoint()
            .ok_or_else(|| bad("no checkpoint".into()))?;
        let answer = ReceiptAnswer {
            seq: entry.seq,
            checkpoint,
            text: r.to_text(),
        };
        let len = answer.encode().len() + 1;
        if len > crate::control::MAX_MSG {
            return Err(AuditdError::ReceiptTooLarge {
                seq: entry.seq,
                len,
            });
        }
        Ok(answer)
    }

    /// Removes the segments older than the newest `keep_segments` (all
    /// covered by the checkpoint just signed) and records it.
    fn retain(&mut self) {
        let keep = usize::try_from(self.keep_segments).unwrap_or(usize::MAX);
        if keep == 0 {
            return;
        }
        let LogState::Open(log) = &mut self.state else {
            return;
        };
        let segs = match layout::list_segments(&self.dir) {
            Ok(s) => s,
            Err(e) => return log::warn!("audit retention: {e}"),
        };
        if segs.len() <= keep {
            return;
        }
        let below = segs
            .get(segs.len() - keep)
            .map(|(first, _)| *first)
            .unwrap_or(0);
        match log.prune(below) {
            Ok(0) => {}
            Ok(n) => {
                let d = Draft::system(
                    Action::AuditPrune,
                    Outcome::Ok,
                    Some(format!(
                        "{n} segment(s) below seq {below} removed, {keep} kept"
                    )),
                );
                if let Err(e) = self.record(d) {
                    log::error!("audit retention: {e}");
                }
            }
            Err(e) => log::warn!("audit retention: {e}"),
        }
    }

    /// `audit log` line of `status`.
    pub fn status_value(&self) -> String {
        match &self.state {
            LogState::Absent => format!(
                "not open (not provisioned or no state partition; {} event(s) waiting)",
                self.queue.len()
            ),
            LogState::Failed(w) => format!("FAILED, audited actions are refused: {w}"),
            LogState::Open(log) => {
                let cp = match log.last_checkpoint() {
                    Some((i, c)) => format!("checkpoint {i} at size {}", c.size),
                    None => "no checkpoint yet".into(),
                };
                format!(
                    "{} entries, {cp}, key {}",
                    log.next_seq(),
                    if self.key_held() { "held" } else { "locked" }
                )
            }
        }
    }
}

impl Auditd {
    /// Answers an audit request of console `i`: `ok[ DETAIL]` or
    /// `err REASON`, and the change of who is logged in there (`Some(None)`:
    /// logged out) for PID 1's bookkeeping.
    pub fn handle(
        &mut self,
        i: usize,
        req: &crate::control::Request,
    ) -> (String, Option<Option<(String, Role)>>) {
        use crate::control::Request;
        let mut change = None;
        let r = match req {
            Request::Audit(json) => {
                Draft::decode(json)
                    .and_then(|d| self.record_for(i, d))
                    .map(|seq| match seq {
                        Some(n) => format!("ok {n}"),
                        None => "ok queued".into(),
                    })
            }
            Request::AuditOpen => match self.open() {
                Ok(true) => Ok("ok".into()),
                Ok(false) => Err(AuditdError::NoLog),
                Err(e) => Err(e),
            },
            Request::AuditCheck => match self.open() {
                Ok(true) => self.writable().map(|()| "ok".into()),
                Ok(false) => Err(AuditdError::NoLog),
                Err(e) => Err(e),
            },
            Request::KeyHold(text) => {
                let mut w = text.split(' ');
                let (name, role, seed) = (w.next(), w.next(), w.next());
                let role = match role {
                    Some("operator") => Some(Role::Operator),
                    Some("officer") => Some(Role::Officer),
                    Some("auditor") => Some(Role::Auditor),
                    _ => None,
                };
                self.recorded.remove(&i);
                match (name, role, seed.and_then(seed_from_hex)) {
                    (Some(n), Some(role), Some(seed)) => self.hold_key(i, &seed).and_then(|()| {
                        change = Some(Some((n.to_string(), role)));
                        self.checkpoint().map(|n| format!("ok checkpoint {n}"))
                    }),
                    _ => Err(AuditdError::Draft(
                        "key hand-over is not NAME ROLE SEEDHEX".into(),
                    )),
                }
            }
            Request::KeyDrop => {
                let r = if self.key_held() {
                    self.checkpoint().map(|n| format!("ok checkpoint {n}"))
                } else {
                    Ok("ok".into())
                };
                self.release_key(i);
                change = Some(None);
                r
            }
            Request::Receipt => self.receipt(i).map(|a| a.encode()),
            Request::Checkpoint => self.checkpoint().map(|n| format!("ok checkpoint {n}")),
            _ => Ok("ok".into()),
        };
        (
            match r {
                Ok(s) => s,
                Err(e) => format!("err {e}"),
            },
            change,
        )
    }
}

/// A 32-byte seed from 64 hex digits (control message), zeroized on drop.
pub fn seed_from_hex(s: &str) -> Option<Zeroizing<[u8; 32]>> {
    let s = s.trim().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, pair) in s.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// 64 lower-case hex digits of a seed (zeroized on drop).
pub fn seed_to_hex(seed: &[u8; 32]) -> Zeroizing<String> {
    use std::fmt::Write;
    let mut s = Zeroizing::new(String::with_capacity(64));
    for b in seed {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_formats::audit::verify::verify;

    fn setup(dir: &Path) -> (NoteSigner, [u8; 32]) {
        let seed = [7u8; 32];
        let signer = NoteSigner::from_seed("airlock-0badcafe", &seed).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join(layout::PUBKEY_FILE),
            format!("{}\n", signer.verifier()),
        )
        .unwrap();
        (signer, seed)
    }

    #[test]
    fn queue_until_provisioned_then_append_and_sign() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("audit");
        let boot = "0123456789abcdef0123456789abcdef".to_string();
        let mut a = Auditd::new(&dir, boot, Policy::default());
        // Not provisioned: drafts wait.
        assert!(!a.open().unwrap());
        let boot_draft = Draft::system(Action::Boot, Outcome::Ok, Some("slot=a".into()));
        assert_eq!(a.record(boot_draft).unwrap(), None);
        assert!(matches!(a.checkpoint(), Err(AuditdError::KeyLocked)));
        let (signer, seed) = setup(&dir);
        assert!(a.open().unwrap());
        let seq = a
            .record(Draft::by(
                "alice",
                Role::Operator,
                Action::Login,
                Outcome::Ok,
            ))
            .unwrap();
        assert_eq!(seq, Some(1));
        // A wrong seed is refused; the right one signs.
        assert!(matches!(
            a.hold_key(0, &[8u8; 32]),
            Err(AuditdError::WrongKey)
        ));
        a.hold_key(0, &seed).unwrap();
        assert_eq!(a.checkpoint().unwrap(), 1);
        assert!(a
            .status_value()
            .starts_with("2 entries, checkpoint 1 at size 2, key held"));
        a.release_key(0);
        assert!(!a.key_held());
        // The directory is an export-shaped log: the host verifier reads it.
        let v = verify(&dir, &signer.verifier()).unwrap();
        assert_eq!(v.summary.size, 2);
    }

    #[test]
    fn bad_draft_is_refused_and_log_stays_open() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("audit");
        setup(&dir);
        let mut a = Auditd::new(&dir, "0".repeat(32), Policy::default());
        assert!(a.open().unwrap());
        let bad = Draft::by("Bad Name", Role::Operator, Action::Login, Outcome::Ok);
        assert!(matches!(a.record(bad), Err(AuditdError::Draft(_))));
        assert!(a.writable().is_ok());
        let ok = Draft::system(Action::Boot, Outcome::Ok, None);
        assert_eq!(a.record(ok).unwrap(), Some(0));
    }

    #[test]
    fn unwritable_log_fails_closed() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("audit");
        setup(&dir);
        let mut a = Auditd::new(&dir, "0".repeat(32), Policy::default());
        assert!(a.open().unwrap());
        a.record(Draft::system(Action::Boot, Outcome::Ok, None))
            .unwrap();
        // The segment disappears under the writer: appends keep going to the
        // unlinked file, so simulate an I/O failure by making the writer's
        // directory unusable instead: a second writer on a broken key file.
        std::fs::write(dir.join(layout::PUBKEY_FILE), "garbage\n").unwrap();
        let mut b = Auditd::new(&dir, "0".repeat(32), Policy::default());
        let e = b.open().unwrap_err().to_string();
        assert!(e.starts_with("read the audit key"), "{e}");
        let e = b
            .record(Draft::system(Action::Boot, Outcome::Ok, None))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the audit log failed earlier"), "{e}");
        assert!(b.writable().is_err());
    }

    #[test]
    fn retention_keeps_the_newest_segments_and_the_log_verifies() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("audit");
        let (signer, seed) = setup(&dir);
        let mut a =
            Auditd::new(&dir, "0".repeat(32), Policy { segment_entries: 4 }).with_retention(2);
        assert!(a.open().unwrap());
        a.record(Draft::system(Action::Boot, Outcome::Ok, None))
            .unwrap();
        a.hold_key(0, &seed).unwrap();
        for _ in 0..20 {
            a.record(Draft::by(
                "alice",
                Role::Operator,
                Action::Login,
                Outcome::Ok,
            ))
            .unwrap();
            a.checkpoint().unwrap();
        }
        let segs = layout::list_segments(&dir).unwrap();
        assert!(segs.len() <= 3, "{} segments kept", segs.len());
        let v = verify(&dir, &signer.verifier()).unwrap();
        assert!(v.summary.first_seq > 0, "nothing was pruned");
        let last = last_actions(&dir);
        assert!(last.contains(&Action::AuditPrune), "{last:?}");
    }

    #[test]
    fn receipt_for_the_entry_a_console_just_recorded() {
        use crate::control::Request;
        use airlock_formats::audit::receipt::Receipt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("audit");
        let (signer, seed) = setup(&dir);
        let mut a = Auditd::new(&dir, "0".repeat(32), Policy::default());
        assert!(a.open().unwrap());
        a.record(Draft::system(Action::Boot, Outcome::Ok, None))
            .unwrap();
        let hold = format!("olga operator {}", &*seed_to_hex(&seed));
        assert_eq!(a.handle(0, &Request::KeyHold(hold)).0, "ok checkpoint 1");
        // Nothing recorded by this console yet.
        let (answer, _) = a.handle(0, &Request::Receipt);
        assert!(answer.starts_with("err no entry recorded"), "{answer}");
        let mut job = Draft::by("olga", Role::Operator, Action::Job, Outcome::Ok);
        job.job = Some(1);
        job.detail = Some("task=summarize".into());
        assert_eq!(a.handle(0, &Request::Audit(job.encode())).0, "ok 1");
        // Another console has no receipt for it.
        assert!(a.handle(1, &Request::Receipt).0.starts_with("err no entry"));
        let (answer, _) = a.handle(0, &Request::Receipt);
        let got = ReceiptAnswer::decode(&answer).expect(&answer);
        assert_eq!((got.seq, got.checkpoint), (1, 2));
        let v = Receipt::parse(got.text.as_bytes())
            .unwrap()
            .verify(&signer.verifier())
            .unwrap();
        assert_eq!(v.entry.seq, 1);
        assert_eq!(v.entry.detail.as_deref(), Some("task=summarize"));
        assert_eq!(v.checkpoint.size, 2);
        // Asked again: the checkpoint that covers it is reused.
        let again = ReceiptAnswer::decode(&a.handle(0, &Request::Receipt).0).unwrap();
        assert_eq!(again, got);
        // With the key locked an uncovered entry gets no receipt.
        a.record_for(
            2,
            Draft::by("ada", Role::Auditor, Action::Login, Outcome::Ok),
        )
        .unwrap();
        assert_eq!(a.handle(0, &Request::KeyDrop).0, "ok checkpoint 3");
        assert!(a.handle(0, &Request::Receipt).0.starts_with("err no entry"));
        a.record_for(
            2,
            Draft::by("ada", Role::Auditor, Action::Logout, Outcome::Ok),
        )
        .unwrap();
        let (answer, _) = a.handle(2, &Request::Receipt);
        assert!(
            answer.starts_with("err no account is logged in"),
            "{answer}"
        );
    }

    fn last_actions(dir: &Path) -> Vec<Action> {
        crate::session::last_entries(dir, 50)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    #[test]
    fn seeds_round_trip_through_hex() {
        let s = [0xabu8; 32];
        let h = seed_to_hex(&s);
        assert_eq!(h.len(), 64);
        assert_eq!(*seed_from_hex(&h).unwrap(), s);
        for bad in ["", "zz", &"a".repeat(63), &"g".repeat(64)] {
            assert!(seed_from_hex(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn boot_id_from_proc() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("kernel/random")).unwrap();
        std::fs::write(
            t.path().join("kernel/random/boot_id"),
            "0A1B2C3D-4e5f-6071-8293-a4b5c6d7e8f9\n",
        )
        .unwrap();
        assert_eq!(boot_id(t.path()), "0a1b2c3d4e5f60718293a4b5c6d7e8f9");
        assert_eq!(boot_id(Path::new("/nonexistent")), "0".repeat(32));
    }
}
