//! One audit-log entry: its fields, the strict parse and the canonical
//! one-line JSON that is both the line in a segment file and the Merkle leaf.
//!
//! Leaf encoding (decided here, documented in docs/audit.md): the leaf bytes
//! of an entry are exactly its line in the segment file without the final
//! `\n`, i.e. `serde_json::to_string(&entry)` of [`Entry`]: UTF-8, fields in
//! the declared order, no whitespace, optional fields omitted when absent
//! (never `null`), integers in decimal, strings escaped the way serde_json
//! escapes them (validation below keeps control characters out of every
//! string, so only `"` and `\` can ever be escaped). A line is accepted only
//! if re-encoding its parsed entry gives the same bytes, so exactly one byte
//! string stands for each entry and an edit of any byte changes the leaf.
//!
//! What an entry may hold: sequence number, times, account and role, action,
//! result, a refusal reason code, a job number, and hashes of content with
//! sanitised file names. No field can carry a plaintext, a prompt or an
//! answer: the only free-form text is a file name (checked sanitised and
//! bounded) and every other string has a closed vocabulary or charset.

use crate::escape;
use serde::{Deserialize, Serialize};

/// Longest line (entry) accepted, in bytes.
pub const MAX_LINE_LEN: usize = 16 * 1024;
/// Most content hashes one entry may carry.
pub const MAX_SUBJECTS: usize = 64;
/// Longest sanitised file name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest `detail` text, in bytes.
pub const MAX_DETAIL_LEN: usize = 256;
/// The account (and role) of entries written by the appliance itself.
pub const SYSTEM_ACCOUNT: &str = "system";

/// Errors of this module; each names the failing check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("line longer than {MAX_LINE_LEN} bytes")]
    TooLong,
    #[error("parse entry: {0}")]
    Parse(String),
    #[error("entry is not in canonical form (re-encoding differs)")]
    NotCanonical,
    #[error("boot id {0:?} is not 32 lower-case hex digits")]
    BootId(String),
    #[error("account name {0:?} is not 1-32 of a-z 0-9 . _ -")]
    Account(String),
    #[error("account {account:?} with role {role}: `system` goes with `system` only")]
    SystemRole { account: String, role: Role },
    #[error("reason {0:?} is not 1-64 of a-z 0-9 -")]
    Reason(String),
    #[error("more than {MAX_SUBJECTS} subjects")]
    TooManySubjects,
    #[error("subject {index}: {why}")]
    Subject { index: usize, why: &'static str },
    #[error("clock_from is set on a {0} entry (only clock-set carries it)")]
    ClockFrom(Action),
    #[error("clock-set entry without clock_from")]
    ClockSetWithoutFrom,
    #[error("detail is empty, longer than {MAX_DETAIL_LEN} bytes or holds an unsafe character")]
    Detail,
    #[error("encode entry: {0}")]
    Encode(String),
}

type Result<T> = std::result::Result<T, EntryError>;

/// Who acted: the account's role, or the appliance itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Operator,
    Officer,
    Auditor,
    System,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Operator => "operator",
            Role::Officer => "officer",
            Role::Auditor => "auditor",
            Role::System => "system",
        })
    }
}

/// What happened. A closed vocabulary: the host verifier and the appliance
/// are built from the same source, so a new action is added here first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// First entry of every boot (a new boot id starts here).
    Boot,
    /// Clean shutdown or reboot.
    Shutdown,
    /// First-boot provisioning (accounts, keys).
    Provision,
    Login,
    Logout,
    /// An account locked after repeated failures.
    Lockout,
    /// The officer set the real-time clock; `clock_from` holds the old time.
    ClockSet,
    AccountAdd,
    AccountRemove,
    PassphraseChange,
    /// An analysis job on an encrypted document.
    Job,
    ModelImport,
    ModelRemove,
    /// A model version made the active one.
    ModelActivate,
    /// The active model set back to the previous installed version.
    ModelRollback,
    /// The boot's at-rest check of an active model version against its
    /// signed manifest (ok, refused with the reason, or failed to run).
    ModelVerify,
    /// A system bundle written into the inactive boot slot (officer).
    SystemImport,
    SystemRollback,
    /// A new system's health check at its first boot failed (`reason`
    /// `health-check-failed`), or its blessing did.
    SystemCheck,
    /// A new system passed its health check: its boot blessed and its
    /// version committed as the anti-rollback floor.
    SystemCommit,
    /// The running system found a failed update in the other slot (its
    /// tries used up); `detail` has version, tries and reason.
    SystemFallback,
    /// The officer retried or cleared a failed slot.
    SystemSlot,
    /// The audit log exported to a stick.
    AuditExport,
    /// Old segments removed under the retention policy.
    AuditPrune,
    /// Public keys exported to a stick.
    KeyExport,
    /// A new document key made the active one (the old ones are kept).
    KeyRotate,
    /// A document key or the per-appliance tag secret granted to an
    /// account that lacked it (an operator added after the key existed).
    KeyGrant,
    /// The sandbox probe suite was run (`selftest`).
    Selftest,
    /// A USB stick appeared; `detail` names device, size and label.
    StickInserted,
    StickRemoved,
    /// The state partition or its file system grown to fill the disk (first
    /// boot on a disk larger than the image), or a step of it failed;
    /// `detail` says from which size to which, or why.
    StateGrown,
    /// A console command refused before it ran (role, not logged in);
    /// `detail` names the command, `reason` the role it needs.
    Command,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The serde name is the one shown everywhere.
        let s = serde_json::to_string(self).unwrap_or_default();
        f.write_str(s.trim_matches('"'))
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// Refused by policy (role, passphrase, signature, audit log unwritable).
    Refused,
    /// Tried and failed (I/O, parse, worker).
    Failed,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        })
    }
}

/// Which content a hash stands for, and so which hash it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectKind {
    /// SHA-256 of a ciphertext file as it was on the stick (`sha256sum`).
    Ciphertext,
    /// Keyed BLAKE2b-256 of a plaintext under the per-appliance secret
    /// ([`plaintext_tag`]): equal plaintexts can be matched on the
    /// appliance, nobody without the secret can test a guess.
    Plaintext,
    /// SHA-256 of a model bundle's manifest.json.
    Model,
    /// SHA-256 of a system bundle's manifest.json.
    System,
}

/// A content hash with, for files, its sanitised name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub kind: SubjectKind,
    /// Sanitised file name ([`sanitise_name`]), when the content was a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 64 lower-case hex digits.
    pub hash: String,
}

/// One entry. Field order is the canonical order (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 0, 1, 2, ... without gaps; also the leaf index in the tree.
    pub seq: u64,
    /// Wall-clock time from the PC's real-time clock, UNIX seconds.
    pub wall: u64,
    /// Kernel boot id (`/proc/sys/kernel/random/boot_id` without dashes).
    pub boot: String,
    /// Time since boot (CLOCK_BOOTTIME), milliseconds.
    pub uptime_ms: u64,
    /// Account name, or `system`.
    pub account: String,
    pub role: Role,
    pub action: Action,
    pub result: Outcome,
    /// Why a refusal or failure happened: a code such as `wrong-passphrase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Job number (per appliance), for job entries and what they touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    /// clock-set only: the wall-clock time before it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_from: Option<u64>,
    /// Short facts of the event (`slot=a version=0.1.0`, a command's name,
    /// a stick's escaped label): printable text, never content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<Subject>,
}

impl Entry {
    /// Checks every field rule (charsets, lengths, which fields go together).
    pub fn validate(&self) -> Result<()> {
        if self.boot.len() != 32 || !self.boot.bytes().all(is_lower_hex) {
            return Err(EntryError::BootId(self.boot.clone()));
        }
        validate_account(&self.account)?;
        if (self.account == SYSTEM_ACCOUNT) != (self.role == Role::System) {
            return Err(EntryError::SystemRole {
                account: self.account.clone(),
                role: self.role,
            });
        }
        if let Some(r) = &self.reason {
            let ok = (1..=64).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(EntryError::Reason(r.clone()));
            }
        }
        match (self.action, self.clock_from) {
            (Action::ClockSet, None) => return Err(EntryError::ClockSetWithoutFrom),
            (Action::ClockSet, Some(_)) | (_, None) => {}
            (a, Some(_)) => return Err(EntryError::ClockFrom(a)),
        }
        if let Some(d) = &self.detail {
            if d.is_empty() || d.len() > MAX_DETAIL_LEN || escape::first_unsafe(d).is_some() {
                return Err(EntryError::Detail);
            }
        }
        if self.subjects.len() > MAX_SUBJECTS {
            return Err(EntryError::TooManySubjects);
        }
        for (index, s) in self.subjects.iter().enumerate() {
            let bad = |why| EntryError::Subject { index, why };
            if s.hash.len() != 64 || !s.hash.bytes().all(is_lower_hex) {
                return Err(bad("hash is not 64 lower-case hex digits"));
            }
            if let Some(n) = &s.name {
                if n.is_empty() || n.len() > MAX_NAME_LEN {
                    return Err(bad("name empty or longer than 255 bytes"));
                }
                if escape::first_unsafe(n).is_some() || n.contains('/') {
                    return Err(bad("name is not sanitised"));
                }
            }
        }
        Ok(())
    }

    /// The canonical line (without `\n`): the leaf bytes. Validates first.
    pub fn encode(&self) -> Result<String> {
        self.validate()?;
        serde_json::to_string(self).map_err(|e| EntryError::Encode(e.to_string()))
    }

    /// Strict parse of one line (without `\n`): known fields only, every
    /// rule of [`Entry::validate`], and canonical form.
    pub fn parse(line: &[u8]) -> Result<Self> {
        if line.len() > MAX_LINE_LEN {
            return Err(EntryError::TooLong);
        }
        let e: Entry =
            serde_json::from_slice(line).map_err(|err| EntryError::Parse(err.to_string()))?;
        let again = e.encode()?;
        if again.as_bytes() != line {
            return Err(EntryError::NotCanonical);
        }
        Ok(e)
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Account names: 1-32 of `a-z 0-9 . _ -` (so never a path or an escape).
pub fn validate_account(name: &str) -> Result<()> {
    let ok = (1..=32).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(EntryError::Account(name.to_owned()))
    }
}

/// A file name from a stick made fit for the log: the last path component,
/// `\` shown as `_`, unsafe characters and invalid UTF-8 escaped as `\xNN`
/// ([`escape::bytes`]), cut to [`MAX_NAME_LEN`] bytes on a character
/// boundary.
pub fn sanitise_name(raw: &[u8]) -> String {
    let last = raw.rsplit(|&b| b == b'/').next().unwrap_or(raw);
    let last: Vec<u8> = last
        .iter()
        .map(|&b| if b == b'\\' { b'_' } else { b })
        .collect();
    let shown = escape::bytes(&last);
    let mut cut = shown.len().min(MAX_NAME_LEN);
    while !shown.is_char_boundary(cut) {
        cut -= 1;
    }
    let s = &shown[..cut];
    if s.is_empty() {
        "_".to_owned()
    } else {
        s.to_owned()
    }
}

/// Keyed hash of a plaintext under the per-appliance secret: BLAKE2b-256
/// in keyed mode (RFC 7693), lower-case hex.
pub fn plaintext_tag(secret: &[u8; 32], plaintext: &[u8]) -> String {
    use blake2::digest::{consts::U32, FixedOutput, KeyInit, Update};
    // A 32-byte key is always a valid BLAKE2b key (1..=64 bytes).
    let mut mac = match blake2::Blake2bMac::<U32>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(plaintext);
    hex(&mac.finalize_fixed())
}

/// SHA-256 of bytes, lower-case hex (ciphertexts, manifests).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// SHA-256 of everything `r` yields, lower-case hex (an answer file
/// checked against its receipt, read in chunks).
pub fn sha256_hex_of_reader(mut r: impl std::io::Read) -> std::io::Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(hex(&h.finalize())),
            n => h.update(buf.get(..n).unwrap_or_default()),
        }
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    pub(crate) fn sample(seq: u64) -> Entry {
        Entry {
            seq,
            wall: 1_796_357_711 + seq,
            boot: "0123456789abcdef0123456789abcdef".into(),
            uptime_ms: 1000 + seq,
            account: "alice".into(),
            role: Role::Operator,
            action: Action::Job,
            result: Outcome::Ok,
            reason: None,
            job: Some(7),
            clock_from: None,
            detail: None,
            subjects: vec![Subject {
                kind: SubjectKind::Ciphertext,
                name: Some("report.pdf.gpg".into()),
                hash: sha256_hex(b"ciphertext"),
            }],
        }
    }

    #[test]
    fn canonical_line_is_exact() {
        let mut e = sample(3);
        e.subjects.clear();
        e.job = None;
        assert_eq!(
            e.encode().unwrap(),
            r#"{"seq":3,"wall":1796357714,"boot":"0123456789abcdef0123456789abcdef","uptime_ms":1003,"account":"alice","role":"operator","action":"job","result":"ok"}"#
        );
        let line = sample(3).encode().unwrap();
        assert_eq!(Entry::parse(line.as_bytes()).unwrap(), sample(3));
    }

    #[test]
    fn strict_parse_refuses() {
        let good = sample(1).encode().unwrap();
        // (input, expected error prefix)
        let cases: Vec<(String, &str)> = vec![
            (
                good.replace("{\"seq\"", "{ \"seq\""),
                "entry is not in canonical",
            ),
            (
                good.replace(",\"job\":7", ",\"job\":null"),
                "entry is not in canonical",
            ),
            (good.replace("\"seq\":1", "\"seq\":01"), "parse entry"),
            (
                good.replace("}]}", "}],\"prompt\":\"x\"}"),
                "parse entry: unknown field `prompt`",
            ),
            (good.replace("\"operator\"", "\"root\""), "parse entry"),
            (good.replace("\"alice\"", "\"Alice\""), "account name"),
            (
                good.replace("\"alice\"", "\"system\""),
                "account \"system\" with role operator",
            ),
            (
                good.replace("0123456789abcdef0123", "0123456789ABCDEF0123"),
                "boot id",
            ),
            (
                good.replace("report.pdf.gpg", "a\\u001b[2Jb"),
                "subject 0: name is not sanitised",
            ),
            (
                good.replace("\"result\":\"ok\"", "\"result\":\"ok\",\"clock_from\":5"),
                "clock_from is set on a job",
            ),
            (
                good.replace("\"job\":7", "\"job\":7,\"detail\":\"a\\u001b[2J\""),
                "detail is empty",
            ),
            (
                good.replace("\"job\":7", "\"job\":7,\"detail\":\"\""),
                "detail is empty",
            ),
            ("x".repeat(MAX_LINE_LEN + 1), "line longer"),
        ];
        for (line, want) in cases {
            let err = Entry::parse(line.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with(want), "{line}: {err} (want {want})");
        }
        // Fields swapped into another order are not canonical either.
        let swapped = good.replace(
            "\"action\":\"job\",\"result\":\"ok\"",
            "\"result\":\"ok\",\"action\":\"job\"",
        );
        assert_eq!(
            Entry::parse(swapped.as_bytes()),
            Err(EntryError::NotCanonical)
        );
    }

    #[test]
    fn names_are_sanitised() {
        let cases: &[(&[u8], &str)] = &[
            (b"/media/stick/report.pdf.gpg", "report.pdf.gpg"),
            (b"a\x1b[2Jb", "a\\x1b[2Jb"),
            (b"back\\slash", "back_slash"),
            (b"bad\xff", "bad\\xff"),
            (b"", "_"),
        ];
        for (raw, want) in cases {
            let s = sanitise_name(raw);
            assert_eq!(s, *want);
            let mut e = sample(0);
            e.subjects[0].name = Some(s);
            e.validate().unwrap();
        }
        assert_eq!(sanitise_name(&[b'x'; 600]).len(), MAX_NAME_LEN);
    }

    #[test]
    fn reader_hash_is_the_bytes_hash() {
        let data = vec![7u8; 200_000];
        assert_eq!(sha256_hex_of_reader(&data[..]).unwrap(), sha256_hex(&data));
    }

    #[test]
    fn plaintext_tag_is_keyed() {
        let a = plaintext_tag(&[1; 32], b"secret text");
        assert_eq!(a.len(), 64);
        assert_ne!(a, plaintext_tag(&[2; 32], b"secret text"));
        assert_ne!(a, sha256_hex(b"secret text"));
    }
}
