//! `airlock audit report`: an audit-log export as one self-contained HTML
//! page for the auditor: inline CSS and SVG, no script, no link or
//! resource outside the page (a Content-Security-Policy meta tag forbids
//! any fetch too).
//!
//! Order of the page: the verification verdict (green with origin, key,
//! entries, span and checkpoints, or red naming the first bad entry or
//! checkpoint), activity per day (bar chart and table), accounts and roles,
//! refusals and lockouts, imports and rollbacks, accounts/keys/clock/export
//! actions, every job with its hashes, the appliance's own events (boots,
//! shutdowns, selftests, sticks), and the full entry table.
//!
//! - [`html`]: escaping and the [`html::Html`] type every text goes through
//! - [`svg`]: the bar chart
//! - [`time`]: UTC times
//! - [`load`]: the entries read for the page, checked against the verifier
//! - [`sections`]: one function per part of the page
//!
//! Argument handling and verification stay in `audit_cmd.rs`.

pub mod html;
pub mod load;
mod sections;
mod svg;
mod time;

use airlock_formats::audit::entry::{Action, Entry, Outcome};
use airlock_formats::audit::verify::Summary;
use html::Html;

/// What verification said.
pub enum Verdict {
    Verified(Box<Good>),
    /// The first failure, as `airlock audit verify` names it.
    Refused {
        reason: String,
    },
}

/// A verified export.
pub struct Good {
    pub summary: Summary,
    /// The key's label `name+keyid` (its fingerprint).
    pub key_label: String,
    /// `--since`: what it was found consistent with, or None when not given.
    pub since: Option<String>,
    /// Further warnings (e.g. the export's own audit.pub is another key).
    pub warnings: Vec<String>,
}

/// Everything the page shows.
pub struct Report<'a> {
    /// The export directory as given (shown escaped).
    pub export: &'a str,
    /// The name of the auditor's key (the log's origin).
    pub origin: &'a str,
    pub key_label: &'a str,
    pub verdict: &'a Verdict,
    pub loaded: &'a load::Loaded,
}

/// Where an action is listed besides the full entry table. Exhaustive on
/// purpose: a new action does not compile until it is placed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Counted per account and day, not listed on their own.
    Sessions,
    /// Listed with the refusals whatever their result.
    Refusals,
    Imports,
    Admin,
    Jobs,
    System,
}

pub fn section(a: Action) -> Section {
    match a {
        // Logins and logouts: counted per account (refused ones are listed
        // with the refusals like every refused entry).
        Action::Login | Action::Logout => Section::Sessions,
        // A lockout refuses every further login of the account for a while.
        Action::Lockout => Section::Refusals,
        // A console command refused before it ran (role, not logged in).
        Action::Command => Section::Refusals,
        // What the appliance runs: models and system versions.
        Action::ModelImport
        | Action::ModelRemove
        | Action::ModelActivate
        | Action::ModelRollback
        | Action::ModelVerify
        | Action::SystemImport
        | Action::SystemRollback
        | Action::SystemCheck
        | Action::SystemCommit
        | Action::SystemFallback
        | Action::SystemSlot => Section::Imports,
        // Who may do what, with which keys, at which time; the log itself.
        Action::Provision
        | Action::AccountAdd
        | Action::AccountRemove
        | Action::PassphraseChange
        | Action::KeyRotate
        | Action::KeyGrant
        | Action::KeyExport
        | Action::ClockSet
        | Action::AuditExport
        | Action::AuditPrune => Section::Admin,
        // Analysis jobs, listed with their content hashes.
        Action::Job => Section::Jobs,
        // The appliance's own events.
        Action::Boot
        | Action::Shutdown
        | Action::Selftest
        | Action::StickInserted
        | Action::StickRemoved
        | Action::StateGrown => Section::System,
    }
}

/// Whether an entry is listed with the refusals.
pub fn is_refusal(e: &Entry) -> bool {
    e.result != Outcome::Ok || section(e.action) == Section::Refusals
}

/// The inline style sheet (no `url(`, no `@import`).
const CSS: &str = "
body{font:14px/1.4 system-ui,'DejaVu Sans',sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;color:#1b1b1b}
h1{font-size:22px;margin:20px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:16px 0 6px}
nav a{margin-right:12px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d4d4d4;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
td code,p code{font:12px/1.3 'DejaVu Sans Mono',monospace;word-break:break-all}
time,code.nw{white-space:nowrap;word-break:normal}
tr.refused td{background:#fdecea}tr.failed td{background:#fff4e0}
.verdict{border:3px solid;border-radius:6px;padding:8px 16px;margin:16px 0}
.verdict h2{border:0;margin:4px 0 8px;font-size:22px}
.verdict.ok{border-color:#2e7d32;background:#edf7ee}.verdict.ok h2{color:#1b5e20}
.verdict.bad{border-color:#c62828;background:#fdecea}.verdict.bad h2{color:#b71c1c}
.verdict table th{background:transparent;border:0;padding:2px 12px 2px 0}
.verdict table td{border:0;padding:2px 0}
.warn{color:#8a4b00;font-weight:bold}
.reason{font-size:15px;font-weight:bold}
.unverified{border:2px dashed #c62828;padding:6px 12px;font-weight:bold;color:#b71c1c}
.muted{color:#666}
.kind{display:inline-block;min-width:76px;color:#555}
svg.chart{max-width:100%;height:auto;display:block}
.bar-ok{fill:#4a78b0}.bar-bad{fill:#c62828}.grid{stroke:#ccc;stroke-width:1}.axis{font-size:10px;fill:#444}
@media print{nav{display:none}tr{break-inside:avoid}}
";

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut page = Html::raw(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
    );
    page.push_text(&format!("Airlock audit report: {}", r.origin));
    page.push_raw("</title>\n<style>");
    page.push_raw(CSS);
    page.push_raw("</style>\n</head>\n<body>\n<header>");
    page.push(Html::tag("h1", "", Html::raw("Airlock audit report")));
    let mut sub = Html::raw("Export ");
    sub.push(Html::tag("code", "", Html::text(r.export)));
    sub.push_raw(", log ");
    sub.push(Html::tag("code", "", Html::text(r.origin)));
    sub.push_raw(
        ". Times are UTC from the appliance's real-time clock; the order of events is by sequence number (seq).",
    );
    page.push(Html::tag("p", "muted", sub));
    page.push_raw("</header>\n");
    page.push(sections::nav());
    page.push(sections::verdict(r));
    page.push(sections::body(r));
    let mut foot = Html::raw("Made by airlock ");
    foot.push_text(env!("CARGO_PKG_VERSION"));
    foot.push_raw(" (<code>airlock audit report</code>). Check it again with <code>airlock audit verify</code>.");
    page.push(Html::tag("footer", "muted", foot));
    page.push_raw("\n</body>\n</html>\n");
    page.into_string()
}
