//! The parts of the page, one function each, in page order.

use super::html::{Html, Table};
use super::svg::{bar_chart, Bar};
use super::time::{self, DAY};
use super::{is_refusal, section, Report, Section, Verdict};
use airlock_formats::audit::entry::{Action, Entry, Outcome, Role, SubjectKind};
use airlock_formats::audit::merkle::hash_to_base64;
use airlock_formats::audit::verify::StepWhy;
use std::collections::BTreeMap;

/// The sections below the verdict: (anchor, title).
const PARTS: &[(&str, &str)] = &[
    ("verdict", "Verdict"),
    ("days", "Activity per day"),
    ("accounts", "Accounts and roles"),
    ("refusals", "Refusals and lockouts"),
    ("imports", "Imports and rollbacks"),
    ("admin", "Accounts, keys, clock, exports"),
    ("jobs", "Jobs"),
    ("system", "Boots, shutdowns, sticks"),
    ("entries", "All entries"),
];

pub fn nav() -> Html {
    let links: Html = PARTS
        .iter()
        .map(|(id, title)| Html::anchor_link(id, Html::text(title)))
        .collect();
    let mut n = Html::raw("<nav>");
    n.push(links);
    n.push_raw("</nav>\n");
    n
}

fn section_open(id: &'static str, title: &'static str) -> Html {
    let mut s = Html::raw("<section id=\"");
    s.push_raw(id);
    s.push_raw("\">\n");
    s.push(Html::tag("h2", "", Html::raw(title)));
    s
}

fn section_close(mut s: Html) -> Html {
    s.push_raw("</section>\n");
    s
}

fn code(s: &str) -> Html {
    Html::tag("code", "", Html::text(s))
}

/// A time in a table cell: `<time>` is kept on one line.
fn utc_cell(unix: u64) -> Html {
    Html::tag("time", "", Html::text(&time::utc(unix)))
}

fn plural(n: u64, one: &'static str, many: &'static str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn verdict(r: &Report) -> Html {
    match r.verdict {
        Verdict::Verified(g) => verified(g),
        Verdict::Refused { reason } => refused(r, reason),
    }
}

/// Key/value rows of a verdict table (`th` key, `td` value).
struct Kv(Html);

impl Kv {
    fn new() -> Self {
        Kv(Html::raw("<table>\n"))
    }
    fn row(&mut self, key: &'static str, val: Html) {
        self.0.push_raw("<tr>");
        self.0.push(Html::tag("th", "", Html::raw(key)));
        self.0.push(Html::tag("td", "", val));
        self.0.push_raw("</tr>\n");
    }
    fn finish(mut self) -> Html {
        self.0.push_raw("</table>\n");
        self.0
    }
}

fn verified(g: &super::Good) -> Html {
    let s = &g.summary;
    let mut out = Html::raw("<section id=\"verdict\" class=\"verdict ok\">\n");
    out.push(Html::tag(
        "h2",
        "",
        Html::raw("\u{2714} Audit log verified"),
    ));
    out.push(Html::tag(
        "p",
        "",
        Html::raw("Every entry matches the signed Merkle tree; every checkpoint is signed by the key below, in order and consistent with the one before it."),
    ));
    let mut t = Kv::new();
    t.row("origin", code(&s.origin));
    t.row("key", code(&g.key_label));
    let kept = s.size - s.first_seq;
    let mut entries = Html::text(&kept.to_string());
    if kept > 0 {
        entries.push_text(&format!(" (seq {}..{})", s.first_seq, s.size - 1));
    }
    if s.first_seq > 0 {
        entries.push_text(&format!(", {} older pruned", s.first_seq));
    }
    t.row("entries", entries);
    let span = match (s.first_wall, s.last_wall) {
        (Some(a), Some(b)) => format!("first entry {}, last {}", time::utc(a), time::utc(b)),
        _ => "-".into(),
    };
    t.row(
        "span",
        Html::text(&format!(
            "{span} UTC, {}",
            plural(s.boots.len() as u64, "boot", "boots")
        )),
    );
    let last = &s.last_checkpoint;
    let mut cps = Html::text(&format!(
        "{}, last: size {}, signed {} UTC, root ",
        s.checkpoints,
        last.size,
        time::utc(last.time.wall)
    ));
    cps.push(code(&hash_to_base64(&last.root)));
    t.row("checkpoints", cps);
    t.row(
        "accounts",
        Html::text(&format!(
            "{}; {} jobs; {} refusals, {} failures",
            s.accounts.len(),
            s.jobs.len(),
            s.refusals,
            s.failures
        )),
    );
    t.row(
        "since",
        match &g.since {
            Some(text) => Html::text(text),
            None => Html::tag(
                "span",
                "warn",
                Html::raw("not checked: give --since the newest checkpoint you kept from the previous export"),
            ),
        },
    );
    for b in &s.steps_back {
        let why = match &b.why {
            StepWhy::ClockSet { account } => {
                Html::text(&format!("explained: clock set by {account}"))
            }
            StepWhy::NewBoot { boot } => Html::text(&format!("explained: new boot {boot}")),
            StepWhy::Unexplained => Html::tag(
                "span",
                "warn",
                Html::raw("UNEXPLAINED: no clock set, same boot"),
            ),
        };
        let mut v = Html::anchor_link(
            &format!("e{}", b.seq),
            Html::text(&format!("entry {}", b.seq)),
        );
        v.push_text(&format!(
            ": {} \u{2192} {} UTC, ",
            time::utc(b.from),
            time::utc(b.to)
        ));
        v.push(why);
        t.row("clock back", v);
    }
    out.push(t.finish());
    let mut warnings: Vec<String> = g.warnings.clone();
    if s.unprotected > 0 {
        warnings.push(format!(
            "{} after the last checkpoint (seq {}..{}) not protected by a signature",
            plural(s.unprotected, "entry", "entries"),
            last.size,
            s.size - 1
        ));
    }
    for w in warnings {
        out.push(Html::tag("p", "warn", Html::text(&format!("warning: {w}"))));
    }
    section_close(out)
}

fn refused(r: &Report, reason: &str) -> Html {
    let mut out = Html::raw("<section id=\"verdict\" class=\"verdict bad\">\n");
    out.push(Html::tag(
        "h2",
        "",
        Html::raw("\u{2718} NOT VERIFIED: audit log refused"),
    ));
    out.push(Html::tag("p", "reason", Html::text(reason)));
    let mut t = Kv::new();
    t.row("origin", code(r.origin));
    t.row("key", code(r.key_label));
    t.row(
        "entries read",
        Html::text(&r.loaded.entries.len().to_string()),
    );
    for u in &r.loaded.unreadable {
        t.row("unreadable", code(u));
    }
    out.push(t.finish());
    out.push(Html::tag(
        "p",
        "unverified",
        Html::raw("Everything below was read from the export as it is, without verification: it is not evidence. Find out first why verification failed (docs/auditor.md)."),
    ));
    section_close(out)
}

/// Everything below the verdict.
pub fn body(r: &Report) -> Html {
    let entries = &r.loaded.entries;
    [
        days(entries),
        accounts(entries),
        listing(
            "refusals",
            "Refusals and lockouts",
            "Every refused or failed entry, every lockout and refused console command.",
            entries.iter().filter(|e| is_refusal(e)),
            Columns::Refusal,
        ),
        listing(
            "imports",
            "Imports and rollbacks",
            "Models and system versions imported, removed or rolled back, with the SHA-256 of the bundle's manifest.json.",
            entries.iter().filter(|e| section(e.action) == Section::Imports),
            Columns::Import,
        ),
        listing(
            "admin",
            "Accounts, keys, clock, exports",
            "Provisioning, accounts added or removed, passphrase changes, key rotations, grants and exports, clock settings, audit exports and pruning.",
            entries.iter().filter(|e| section(e.action) == Section::Admin),
            Columns::Admin,
        ),
        listing(
            "jobs",
            "Jobs",
            "Every job entry with its content hashes: SHA-256 of each ciphertext file as it was on the stick (compare with sha256sum), the keyed tag of the plaintext (matches equal documents, reveals nothing), the SHA-256 of the model's manifest.json.",
            entries.iter().filter(|e| section(e.action) == Section::Jobs),
            Columns::Job,
        ),
        listing(
            "system",
            "Boots, shutdowns, sticks",
            "The appliance's own events: boots (slot, version, lockdown), shutdowns, selftests, sticks inserted and removed.",
            entries.iter().filter(|e| section(e.action) == Section::System),
            Columns::System,
        ),
        listing(
            "entries",
            "All entries",
            "Every entry in order of seq.",
            entries.iter(),
            Columns::Full,
        ),
    ]
    .into_iter()
    .collect()
}

fn days(entries: &[Entry]) -> Html {
    #[derive(Default)]
    struct Day {
        all: u64,
        bad: u64,
        logins: u64,
        jobs: u64,
    }
    let mut per: BTreeMap<u64, Day> = BTreeMap::new();
    for e in entries {
        let d = per.entry(e.wall / DAY).or_default();
        d.all += 1;
        d.bad += u64::from(e.result != Outcome::Ok);
        d.logins += u64::from(e.action == Action::Login && e.result == Outcome::Ok);
        d.jobs += u64::from(e.action == Action::Job);
    }
    let mut s = section_open("days", "Activity per day");
    s.push(Html::tag(
        "p",
        "muted",
        Html::raw("Entries per UTC day of the appliance's wall clock (only days with entries); refused or failed entries in red. A clock set or a dead CMOS battery can put entries on a wrong day: see \u{201c}clock back\u{201d} in the verdict."),
    ));
    let bars: Vec<Bar> = per
        .iter()
        .map(|(day, d)| Bar {
            label: time::day(*day),
            ok: d.all - d.bad,
            bad: d.bad,
        })
        .collect();
    s.push(bar_chart(&bars, "Entries per day"));
    let mut t = Table::new(&[
        "day (UTC)",
        "entries",
        "logins",
        "jobs",
        "refused or failed",
    ]);
    for (day, d) in &per {
        t.row(
            if d.bad > 0 { "refused" } else { "" },
            None,
            vec![
                Html::text(&time::day(*day)),
                Html::num(d.all),
                Html::num(d.logins),
                Html::num(d.jobs),
                Html::num(d.bad),
            ],
        );
    }
    s.push(t.finish());
    section_close(s)
}

#[derive(Default)]
struct Tally {
    entries: u64,
    logins: u64,
    login_refused: u64,
    lockouts: u64,
    jobs: u64,
    refused: u64,
    failed: u64,
    first: Option<u64>,
    last: Option<u64>,
}

impl Tally {
    fn add(&mut self, e: &Entry) {
        self.entries += 1;
        let ok = e.result == Outcome::Ok;
        match e.action {
            Action::Login if ok => self.logins += 1,
            Action::Login => self.login_refused += 1,
            Action::Lockout => self.lockouts += 1,
            Action::Job => self.jobs += 1,
            _ => {}
        }
        self.refused += u64::from(e.result == Outcome::Refused);
        self.failed += u64::from(e.result == Outcome::Failed);
        self.first.get_or_insert(e.wall);
        self.last = Some(e.wall);
    }

    fn cells(&self) -> Vec<Html> {
        let t = |w: Option<u64>| w.map(utc_cell).unwrap_or_default();
        vec![
            Html::num(self.entries),
            Html::num(self.logins),
            Html::num(self.login_refused),
            Html::num(self.lockouts),
            Html::num(self.jobs),
            Html::num(self.refused),
            Html::num(self.failed),
            t(self.first),
            t(self.last),
        ]
    }

    fn class(&self) -> &'static str {
        if self.refused + self.failed + self.lockouts > 0 {
            "refused"
        } else {
            ""
        }
    }
}

fn accounts(entries: &[Entry]) -> Html {
    let mut per: BTreeMap<(&str, Role), Tally> = BTreeMap::new();
    let mut roles: BTreeMap<Role, (Tally, std::collections::BTreeSet<&str>)> = BTreeMap::new();
    for e in entries {
        per.entry((e.account.as_str(), e.role)).or_default().add(e);
        let r = roles.entry(e.role).or_default();
        r.0.add(e);
        r.1.insert(e.account.as_str());
    }
    let head = [
        "entries",
        "logins",
        "logins refused",
        "lockouts",
        "jobs",
        "refused",
        "failed",
        "first (UTC)",
        "last (UTC)",
    ];
    let mut s = section_open("accounts", "Accounts and roles");
    s.push(Html::tag(
        "p",
        "muted",
        Html::raw("Per account: its entries, logins (and refused logins: wrong passphrase, locked), lockouts, job entries, refused and failed entries, first and last entry. <code>system</code> is the appliance itself."),
    ));
    let mut t = Table::new(&[&["account", "role"][..], &head[..]].concat());
    for ((account, role), tally) in &per {
        let mut cells = vec![code(account), Html::text(&role.to_string())];
        cells.extend(tally.cells());
        t.row(tally.class(), None, cells);
    }
    s.push(t.finish());
    s.push(Html::tag("h3", "", Html::raw("Per role")));
    let mut t = Table::new(&[&["role", "accounts"][..], &head[..]].concat());
    for (role, (tally, names)) in &roles {
        let names: Vec<&str> = names.iter().copied().collect();
        let mut cells = vec![
            Html::text(&role.to_string()),
            Html::text(&format!("{}: {}", names.len(), names.join(", "))),
        ];
        cells.extend(tally.cells());
        t.row(tally.class(), None, cells);
    }
    s.push(t.finish());
    section_close(s)
}

/// Which columns a listing shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Columns {
    Refusal,
    Import,
    Admin,
    Job,
    System,
    Full,
}

impl Columns {
    fn headers(self) -> &'static [&'static str] {
        match self {
            Columns::Refusal => &[
                "seq",
                "time (UTC)",
                "account",
                "role",
                "action",
                "result",
                "reason",
                "detail",
            ],
            Columns::Import | Columns::Admin => &[
                "seq",
                "time (UTC)",
                "account",
                "role",
                "action",
                "result",
                "reason",
                "detail",
                "content hashes",
            ],
            Columns::Job => &[
                "job",
                "seq",
                "time (UTC)",
                "account",
                "result",
                "reason",
                "ciphertext SHA-256",
                "plaintext tag",
                "model manifest SHA-256",
            ],
            Columns::System => &[
                "seq",
                "time (UTC)",
                "boot",
                "uptime",
                "action",
                "result",
                "reason",
                "detail",
            ],
            Columns::Full => &[
                "seq",
                "time (UTC)",
                "boot",
                "uptime",
                "account",
                "role",
                "action",
                "result",
                "reason",
                "job",
                "detail",
                "content hashes",
            ],
        }
    }
}

fn row_class(e: &Entry) -> &'static str {
    match e.result {
        Outcome::Refused => "refused",
        Outcome::Failed => "failed",
        Outcome::Ok if e.action == Action::Lockout => "refused",
        Outcome::Ok => "",
    }
}

/// The detail text, with a clock-set's old time.
fn detail(e: &Entry) -> Html {
    let mut h = Html::text(e.detail.as_deref().unwrap_or(""));
    if let Some(from) = e.clock_from {
        if !h.is_empty() {
            h.push_raw("; ");
        }
        h.push_text(&format!("clock was {} UTC", time::utc(from)));
    }
    h
}

fn kind_name(k: SubjectKind) -> &'static str {
    match k {
        SubjectKind::Ciphertext => "ciphertext",
        SubjectKind::Plaintext => "plaintext",
        SubjectKind::Model => "model",
        SubjectKind::System => "system",
    }
}

/// Content hashes of the kinds in `kinds` (all when None), one per line:
/// kind (when mixed), sanitised name, hash.
fn subjects(e: &Entry, kinds: Option<&[SubjectKind]>, with_kind: bool) -> Html {
    let mut h = Html::default();
    for s in e
        .subjects
        .iter()
        .filter(|s| kinds.is_none_or(|k| k.contains(&s.kind)))
    {
        if !h.is_empty() {
            h.push_raw("<br>");
        }
        if with_kind {
            h.push(Html::tag("span", "kind", Html::raw(kind_name(s.kind))));
            h.push_raw(" ");
        }
        if let Some(n) = &s.name {
            h.push_text(n);
            h.push_raw(" ");
        }
        h.push(code(&s.hash));
    }
    h
}

fn opt(s: &Option<String>) -> Html {
    Html::text(s.as_deref().unwrap_or(""))
}

fn seq_link(e: &Entry) -> Html {
    Html::anchor_link(&format!("e{}", e.seq), Html::num(e.seq))
}

fn cells(e: &Entry, cols: Columns) -> Vec<Html> {
    let t = utc_cell(e.wall);
    let seq = if cols == Columns::Full {
        Html::num(e.seq)
    } else {
        seq_link(e)
    };
    let account = code(&e.account);
    let role = Html::text(&e.role.to_string());
    let action = Html::text(&e.action.to_string());
    let result = Html::text(&e.result.to_string());
    let boot = || Html::tag("code", "nw", Html::text(e.boot.get(..8).unwrap_or(&e.boot)));
    let uptime = || Html::text(&time::uptime(e.uptime_ms));
    match cols {
        Columns::Refusal => vec![
            seq,
            t,
            account,
            role,
            action,
            result,
            opt(&e.reason),
            detail(e),
        ],
        Columns::Import | Columns::Admin => vec![
            seq,
            t,
            account,
            role,
            action,
            result,
            opt(&e.reason),
            detail(e),
            subjects(e, None, true),
        ],
        Columns::Job => vec![
            Html::text(&e.job.map(|j| j.to_string()).unwrap_or_default()),
            seq,
            t,
            account,
            result,
            opt(&e.reason),
            subjects(e, Some(&[SubjectKind::Ciphertext]), false),
            subjects(e, Some(&[SubjectKind::Plaintext]), false),
            subjects(e, Some(&[SubjectKind::Model, SubjectKind::System]), false),
        ],
        Columns::System => vec![
            seq,
            t,
            boot(),
            uptime(),
            action,
            result,
            opt(&e.reason),
            detail(e),
        ],
        Columns::Full => vec![
            seq,
            t,
            boot(),
            uptime(),
            account,
            role,
            action,
            result,
            opt(&e.reason),
            Html::text(&e.job.map(|j| j.to_string()).unwrap_or_default()),
            detail(e),
            subjects(e, None, true),
        ],
    }
}

fn listing<'a>(
    id: &'static str,
    title: &'static str,
    about: &'static str,
    entries: impl Iterator<Item = &'a Entry>,
    cols: Columns,
) -> Html {
    let mut s = section_open(id, title);
    s.push(Html::tag("p", "muted", Html::raw(about)));
    let mut t = Table::new(cols.headers());
    let mut n = 0u64;
    for e in entries {
        n += 1;
        let anchor = (cols == Columns::Full).then(|| format!("e{}", e.seq));
        t.row(row_class(e), anchor.as_deref(), cells(e, cols));
    }
    if t.is_empty() {
        s.push(Html::tag("p", "", Html::raw("None.")));
    } else {
        s.push(Html::tag(
            "p",
            "",
            Html::text(&plural(n, "entry", "entries")),
        ));
        s.push(t.finish());
    }
    section_close(s)
}
