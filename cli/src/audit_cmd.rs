//! `airlock audit verify|compare|verify-receipt|report`: the auditor's checks of
//! an audit-log export, offline on the connected machine (format and rules:
//! docs/audit.md; the checks themselves: `airlock_formats::audit::verify`;
//! the HTML page of `report`: `crate::report`; receipts:
//! `crate::receipt_cmd`).
//!
//! Every string that came from the log is shown through
//! `airlock_formats::escape::text`.

use crate::report;
use airlock_formats::audit::compare::{compare, Comparison};
use airlock_formats::audit::entry::Role;
use airlock_formats::audit::merkle::hash_to_base64;
use airlock_formats::audit::note::{NoteError, NoteVerifier};
use airlock_formats::audit::verify::{verify, SinceMatch, StepWhy, Summary, Verified, VerifyError};
use airlock_formats::escape;
use airlock_formats::fsutil::{write_atomic, FsError};
use airlock_formats::manifest::format_rfc3339;
use clap::Subcommand;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest key, checkpoint or receipt file read.
const MAX_SMALL_FILE: u64 = 1024 * 1024;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Verify an audit-log export: every entry against the Merkle tree,
    /// every checkpoint's signature, sequence and time order, and with
    /// --since consistency with an older checkpoint you kept. Prints a
    /// summary, or one line naming the first bad entry or checkpoint and
    /// exits 1.
    Verify {
        export_dir: PathBuf,
        /// The audit public key recorded at provisioning
        /// (`name+keyid+base64`, one line): not the export's own audit.pub.
        #[arg(long, value_name = "AUDIT_PUB")]
        key: PathBuf,
        /// A checkpoint file kept from an earlier export: this export must
        /// be consistent with it (catches truncation, replay and forks).
        #[arg(long, value_name = "OLD_CHECKPOINT")]
        since: Option<PathBuf>,
    },
    /// Verify two exports of the same appliance and show whether one
    /// extends the other or they fork from a common checkpoint (exit 1).
    Compare {
        export_a: PathBuf,
        export_b: PathBuf,
        #[arg(long, value_name = "AUDIT_PUB")]
        key: PathBuf,
    },
    /// Check a receipt (`NAME.answer.receipt`: entry, checkpoint,
    /// inclusion proof) on its own and print what its entry says; with
    /// --answer also that the answer file is the output ciphertext the
    /// entry names. Exit 1 with one line naming what failed.
    #[command(name = "verify-receipt", alias = "receipt")]
    VerifyReceipt {
        /// The receipt file (C2SP tlog-proof shape, see docs/audit.md).
        receipt: PathBuf,
        /// The audit public key recorded at provisioning (verifier key
        /// `name+keyid+base64`, one line; its name is the log's origin).
        #[arg(long, value_name = "AUDIT_PUB")]
        key: PathBuf,
        /// The answer file (`NAME.answer.gpg`) the receipt came with.
        #[arg(long, value_name = "FILE")]
        answer: Option<PathBuf>,
    },
    /// Verify an export exactly like `verify` and write one self-contained
    /// HTML page for the auditor (inline CSS and SVG, no script, nothing
    /// fetched): the verdict first, activity per day, accounts and roles,
    /// refusals and lockouts, imports, jobs with their hashes, boots, every
    /// entry. A refused export still gets its page, with a red verdict
    /// naming the first bad entry or checkpoint; the command then exits 1.
    Report {
        export_dir: PathBuf,
        /// The audit public key recorded at provisioning, as for `verify`.
        #[arg(long, value_name = "AUDIT_PUB")]
        key: PathBuf,
        /// A checkpoint file kept from an earlier export, as for `verify`.
        #[arg(long, value_name = "OLD_CHECKPOINT")]
        since: Option<PathBuf>,
        /// The HTML file to write (replaced atomically if it exists).
        #[arg(short = 'o', long = "out", value_name = "REPORT_HTML")]
        out: PathBuf,
    },
}

/// Errors of the audit commands; each names the failing step.
#[derive(Debug, thiserror::Error)]
pub enum AuditCmdError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: larger than 1 MiB")]
    TooLarge { path: String },
    #[error("audit key {path}: {source}")]
    Key { path: String, source: NoteError },
    #[error("audit log refused: {0}")]
    Refused(VerifyError),
    #[error("export {which} refused: {source}")]
    CompareRefused {
        which: &'static str,
        source: VerifyError,
    },
    #[error("fork: {0}")]
    Fork(String),
    #[error("{0}")]
    Receipt(#[from] crate::receipt_cmd::ReceiptCmdError),
    #[error("report {path}: the file name is not UTF-8")]
    ReportName { path: String },
    #[error("write report: {0}")]
    WriteReport(FsError),
    #[error("audit log refused: {reason} (the report with this verdict is in {path})")]
    ReportRefused { reason: String, path: String },
}

type Result<T> = std::result::Result<T, AuditCmdError>;

pub fn run(cmd: AuditCmd) -> std::result::Result<(), String> {
    let r = match cmd {
        AuditCmd::Verify {
            export_dir,
            key,
            since,
        } => run_verify(&export_dir, &key, since.as_deref()),
        AuditCmd::Compare {
            export_a,
            export_b,
            key,
        } => run_compare(&export_a, &export_b, &key),
        AuditCmd::VerifyReceipt {
            receipt,
            key,
            answer,
        } => run_receipt(&receipt, &key, answer.as_deref()),
        AuditCmd::Report {
            export_dir,
            key,
            since,
            out,
        } => run_report(&export_dir, &key, since.as_deref(), &out),
    };
    // Messages quote the log (origins, accounts, parse errors): escaped.
    r.map_err(|e| escape::text(&e.to_string()).into_owned())
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let shown = escape::path(path);
    let f = std::fs::File::open(path).map_err(|source| AuditCmdError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(MAX_SMALL_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| AuditCmdError::Read {
            path: shown.clone(),
            source,
        })?;
    if buf.len() as u64 > MAX_SMALL_FILE {
        return Err(AuditCmdError::TooLarge { path: shown });
    }
    Ok(buf)
}

fn load_key(path: &Path) -> Result<NoteVerifier> {
    let bytes = read_small(path)?;
    let bad = |source| AuditCmdError::Key {
        path: escape::path(path),
        source,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad(NoteError::Text))?;
    NoteVerifier::parse(text).map_err(bad)
}

/// An export directory must exist (a missing one would read as empty).
fn export_dir(dir: &Path) -> Result<&Path> {
    std::fs::read_dir(dir)
        .map(|_| dir)
        .map_err(|source| AuditCmdError::Read {
            path: escape::path(dir),
            source,
        })
}

/// What `verify` found beyond the summary.
struct Checked {
    v: Verified,
    /// `--since`: "consistent with FILE (how)".
    since: Option<String>,
    /// The export's own audit.pub is not the key given.
    own_key_differs: bool,
}

/// The checks of `verify` (and `report`): the export against the key,
/// then `--since`.
fn check(dir: &Path, key: &NoteVerifier, since: Option<(&Path, &[u8])>) -> Result<Checked> {
    let v = verify(dir, key).map_err(AuditCmdError::Refused)?;
    let since = match since {
        None => None,
        Some((p, note)) => {
            let how = match v.check_since(note, key).map_err(AuditCmdError::Refused)? {
                SinceMatch::Entries => "recomputed from the entries".to_owned(),
                SinceMatch::Checkpoint(i) => {
                    format!("equal to checkpoint {i}, chained by consistency proofs")
                }
            };
            Some(format!("consistent with {} ({how})", escape::path(p)))
        }
    };
    // The export's own copy of the key is only a convenience; say so when
    // it is not the key the auditor trusts.
    let own = dir.join(airlock_formats::audit::layout::PUBKEY_FILE);
    let own_key_differs = read_small(&own).is_ok_and(|bytes| {
        !std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| NoteVerifier::parse(t).ok())
            .is_some_and(|k| &k == key)
    });
    Ok(Checked {
        v,
        since,
        own_key_differs,
    })
}

const OWN_KEY_WARNING: &str =
    "the export's audit.pub is not the --key given (checked against --key)";

/// Reads the `--since` checkpoint file, if given.
fn read_since(since: Option<&Path>) -> Result<Option<(&Path, Vec<u8>)>> {
    since.map(|p| read_small(p).map(|n| (p, n))).transpose()
}

fn print_checked(c: &Checked, key: &NoteVerifier) {
    print!("{}", summary_text(&c.v, key));
    if c.own_key_differs {
        println!("warning: {OWN_KEY_WARNING}");
    }
    if let Some(s) = &c.since {
        println!("since        {s}");
    }
}

fn run_verify(dir: &Path, key: &Path, since: Option<&Path>) -> Result<()> {
    let dir = export_dir(dir)?;
    let key = load_key(key)?;
    let since = read_since(since)?;
    let c = check(dir, &key, since.as_ref().map(|(p, n)| (*p, &n[..])))?;
    print_checked(&c, &key);
    Ok(())
}

/// `report`: verify, then write the page whatever the verdict; exit 1
/// after writing it when the export was refused. Problems with the
/// arguments themselves (key, export directory, `--since` file, output)
/// write no page.
fn run_report(dir: &Path, key: &Path, since: Option<&Path>, out: &Path) -> Result<()> {
    let dir = export_dir(dir)?;
    let key = load_key(key)?;
    let since = read_since(since)?;
    let shown_out = escape::path(out);
    let (parent, name) = match (out.parent(), out.file_name().map(|n| n.to_str())) {
        (Some(p), Some(Some(n))) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            n,
        ),
        _ => return Err(AuditCmdError::ReportName { path: shown_out }),
    };
    let loaded = report::load::Loaded::read(dir);
    let checked = match check(dir, &key, since.as_ref().map(|(p, n)| (*p, &n[..]))) {
        Ok(c) => match loaded.check_against(&c.v.summary) {
            Ok(()) => Ok(c),
            Err(e) => Err(e.to_string()),
        },
        Err(AuditCmdError::Refused(e)) => Err(e.to_string()),
        Err(e) => return Err(e),
    };
    let verdict = match &checked {
        Ok(c) => report::Verdict::Verified(Box::new(report::Good {
            summary: c.v.summary.clone(),
            key_label: key.label(),
            since: c.since.clone(),
            warnings: if c.own_key_differs {
                vec![OWN_KEY_WARNING.to_owned()]
            } else {
                Vec::new()
            },
        })),
        Err(reason) => report::Verdict::Refused {
            reason: reason.clone(),
        },
    };
    let page = report::render(&report::Report {
        export: &escape::path(dir),
        origin: key.name(),
        key_label: &key.label(),
        verdict: &verdict,
        loaded: &loaded,
    });
    write_atomic(parent, name, page.as_bytes()).map_err(AuditCmdError::WriteReport)?;
    match checked {
        Ok(c) => {
            print_checked(&c, &key);
            println!("report       {shown_out}");
            Ok(())
        }
        Err(reason) => Err(AuditCmdError::ReportRefused {
            reason,
            path: shown_out,
        }),
    }
}

fn role_name(r: Role) -> String {
    r.to_string()
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// The summary printed on success.
fn summary_text(v: &Verified, key: &NoteVerifier) -> String {
    let s: &Summary = &v.summary;
    let t = |x: &str| escape::text(x).into_owned();
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<12} {val}\n"));
    line("audit log OK", t(&s.origin));
    line("key", t(&key.label()));
    let last = &s.last_checkpoint;
    let kept = if s.size == s.first_seq {
        "none kept".to_owned()
    } else {
        format!("seq {}..{}", s.first_seq, s.size - 1)
    };
    let pruned = if s.first_seq > 0 {
        format!(", {} older pruned", s.first_seq)
    } else {
        String::new()
    };
    line(
        "entries",
        format!("{} ({kept}{pruned})", s.size - s.first_seq),
    );
    let span = match (s.first_wall, s.last_wall) {
        (Some(a), Some(b)) => format!(
            "first entry {}, last {}",
            format_rfc3339(a),
            format_rfc3339(b)
        ),
        _ => "-".to_owned(),
    };
    line(
        "span",
        format!(
            "{span} (wall clock; order is by seq), {} boot{}",
            s.boots.len(),
            if s.boots.len() == 1 { "" } else { "s" }
        ),
    );
    line(
        "checkpoints",
        format!(
            "{}, last: size {}, root {}, {}",
            s.checkpoints,
            last.size,
            hash_to_base64(&last.root),
            format_rfc3339(last.time.wall)
        ),
    );
    let accounts: Vec<String> = s
        .accounts
        .iter()
        .map(|(a, roles)| {
            let r: Vec<String> = roles.iter().copied().map(role_name).collect();
            format!("{} ({})", t(a), r.join(", "))
        })
        .collect();
    line(
        "accounts",
        if accounts.is_empty() {
            "-".into()
        } else {
            format!("{}: {}", accounts.len(), accounts.join(", "))
        },
    );
    let roles: Vec<String> = s
        .roles
        .iter()
        .map(|(r, n)| format!("{} {n}", role_name(*r)))
        .collect();
    line("roles", format!("entries by {}", roles.join(", ")));
    line("jobs", s.jobs.len().to_string());
    line(
        "refusals",
        format!("{} (failures {})", s.refusals, s.failures),
    );
    let mut unexplained = Vec::new();
    for b in &s.steps_back {
        let why = match &b.why {
            StepWhy::ClockSet { account } => format!("explained: clock set by {}", t(account)),
            StepWhy::NewBoot { boot } => format!("explained: new boot {}", t(boot)),
            StepWhy::Unexplained => {
                unexplained.push(b.seq);
                "UNEXPLAINED: no clock set, same boot".to_owned()
            }
        };
        line(
            "clock back",
            format!(
                "entry {}: {} -> {} ({} back), {why}",
                b.seq,
                format_rfc3339(b.from),
                format_rfc3339(b.to),
                duration(b.from - b.to)
            ),
        );
    }
    if s.unprotected > 0 {
        out.push_str(&format!(
            "warning: {} entr{} after the last checkpoint (seq {}..{}) are not protected by a signature\n",
            s.unprotected,
            if s.unprotected == 1 { "y" } else { "ies" },
            last.size,
            s.size - 1
        ));
    }
    for seq in unexplained {
        out.push_str(&format!(
            "warning: entry {seq}: the wall clock stepped back with no clock-set entry and no new boot\n"
        ));
    }
    out
}

fn run_compare(a: &Path, b: &Path, key: &Path) -> Result<()> {
    let (a, b) = (export_dir(a)?, export_dir(b)?);
    let key = load_key(key)?;
    let va =
        verify(a, &key).map_err(|source| AuditCmdError::CompareRefused { which: "A", source })?;
    let vb =
        verify(b, &key).map_err(|source| AuditCmdError::CompareRefused { which: "B", source })?;
    match compare(&va, &vb) {
        Comparison::Consistent { shorter, size } => {
            let longer = if shorter == "A" { "B" } else { "A" };
            println!(
                "consistent: {shorter} (last checkpoint size {size}) is a prefix of {longer}; no fork"
            );
            println!("A            {}", escape::path(a));
            println!("B            {}", escape::path(b));
            Ok(())
        }
        Comparison::Fork {
            side,
            index,
            desc,
            reason,
            last_common,
        } => {
            let other = if side == "A" { "B" } else { "A" };
            let common = match last_common {
                Some((i, size)) => {
                    format!("last common checkpoint: {side} checkpoint {i} (size {size})")
                }
                None => "no common checkpoint".to_owned(),
            };
            Err(AuditCmdError::Fork(format!(
                "{side} checkpoint {index} ({desc}) does not fit {other}: {reason}; {common}"
            )))
        }
    }
}

fn run_receipt(file: &Path, key: &Path, answer: Option<&Path>) -> Result<()> {
    let key = load_key(key)?;
    let bytes = read_small(file)?;
    print!("{}", crate::receipt_cmd::run(file, &bytes, &key, answer)?);
    Ok(())
}
