//! `airlock audit report` run as the real binary: the page of the
//! independently made example export and of a log with refusals, lockouts,
//! jobs, imports and sticks written by the appliance's writer code; red
//! verdicts for refused exports (page written, exit 1); that the page is
//! self-contained (no script, nothing fetched, log text escaped); and the
//! page rendered by headless Chromium (Debian's `chromium`, installed by
//! scripts/setup-host; like `/usr/bin/minisign` in cli.rs, a missing one
//! fails the test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use airlock_formats::audit::entry::{
    plaintext_tag, sha256_hex, Action, Outcome, Role, Subject, SubjectKind,
};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest a Chromium run may take before it is killed (`timeout`).
const CHROMIUM_TIMEOUT_S: &str = "120";

/// Text put into log fields that accept it, to show it stays text.
const EVIL_DETAIL: &str = "sdb 8 GB label <script>alert(\"x\")</script> & 'q'";
const EVIL_NAME: &str = "<img src=x onerror=alert(1)>.gpg";

fn report(dir: &Path, key: &Path, since: Option<&Path>, out: &Path) -> Output {
    let mut args = vec!["audit", "report", p(dir), "--key", p(key), "-o", p(out)];
    if let Some(s) = since {
        args.extend(["--since", p(s)]);
    }
    airlock(&args)
}

/// The part of the page in `<section id="ID">`.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let open = format!("<section id=\"{id}\"");
    let start = html
        .find(&open)
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = html[start..].find("</section>").unwrap() + start;
    &html[start..end]
}

/// Tags (and attributes) the page may use; nothing in it loads anything.
const TAGS: &[&str] = &[
    "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "header", "nav", "section",
    "footer", "h1", "h2", "h3", "p", "a", "code", "span", "br", "table", "thead", "tbody", "tr",
    "th", "td", "time", "svg", "g", "rect", "line", "text",
];

/// No script, no resource or link outside the page, only known tags, and
/// every `href` a fragment within the page.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script",
        "http://",
        "https://",
        "url(",
        "@import",
        "javascript:",
    ] {
        assert!(!lower.contains(bad), "{bad:?} in the page");
    }
    // Every tag outside the style sheet.
    let style_end = html.find("</style>").unwrap();
    let mut rest = &html[style_end..];
    let mut tags = 0;
    while let Some(i) = rest.find('<') {
        let end = rest[i..].find('>').unwrap() + i;
        let tag = &rest[i + 1..end];
        let name = tag
            .trim_start_matches('/')
            .split([' ', '\n'])
            .next()
            .unwrap();
        assert!(TAGS.contains(&name), "tag <{tag}> not allowed");
        for (j, _) in tag.match_indices("href=") {
            assert!(
                tag[j..].starts_with("href=\"#"),
                "link outside the page: <{tag}>"
            );
        }
        for attr in [" on", "src=", "style=", "xlink"] {
            assert!(!tag.contains(attr), "{attr:?} in <{tag}>");
        }
        tags += 1;
        rest = &rest[end + 1..];
    }
    assert!(tags > 50, "{tags} tags");
}

/// Appliance day in the life: a boot with its facts, selftest, a stick;
/// eve fails her passphrase 5 times and is locked out; olga runs job 1
/// (hashes of both ciphertexts, plaintext tag, model) and job 2 (failed),
/// and a refused officer command; ivan imports a model, a system import is
/// refused, rolls the system back, rotates the document key, sets the
/// clock back; shutdown. Next day (boot B): ada logs in and exports.
fn day_in_the_life(dir: &Path) -> Log {
    let mut l = Log::new(dir);
    let sys = |l: &mut Log, a: Action, detail: &str| {
        let d = detail.to_owned();
        l.add("system", Role::System, a, move |e| e.detail = Some(d));
    };
    sys(&mut l, Action::Boot, "slot=a version=0.1.0 lockdown=ok"); // 0
    sys(&mut l, Action::Selftest, "42 probes passed"); // 1
    sys(&mut l, Action::StickInserted, EVIL_DETAIL); // 2
    for _ in 0..5 {
        l.add("eve", Role::Operator, Action::Login, |e| {
            e.result = Outcome::Refused;
            e.reason = Some("wrong-passphrase".into());
        }); // 3..7
    }
    l.add("eve", Role::Operator, Action::Lockout, |e| {
        e.detail = Some("locked for 600 s after 5 failures".into());
    }); // 8
    l.add("olga", Role::Operator, Action::Login, |_| {}); // 9
    l.checkpoint();
    let secret = [7u8; 32];
    l.add("olga", Role::Operator, Action::Job, |e| {
        e.job = Some(1);
        e.subjects = vec![
            Subject {
                kind: SubjectKind::Ciphertext,
                name: Some(EVIL_NAME.into()),
                hash: sha256_hex(b"in 1"),
            },
            Subject {
                kind: SubjectKind::Plaintext,
                name: None,
                hash: plaintext_tag(&secret, b"question 1"),
            },
            Subject {
                kind: SubjectKind::Model,
                name: None,
                hash: sha256_hex(b"manifest tiny-llama 3"),
            },
            Subject {
                kind: SubjectKind::Ciphertext,
                name: Some("q1.answer.gpg".into()),
                hash: sha256_hex(b"out 1"),
            },
        ];
    }); // 10
    l.add("olga", Role::Operator, Action::Job, |e| {
        e.job = Some(2);
        e.result = Outcome::Failed;
        e.reason = Some("worker-crashed".into());
        e.subjects = vec![Subject {
            kind: SubjectKind::Ciphertext,
            name: Some("q2.txt.gpg".into()),
            hash: sha256_hex(b"in 2"),
        }];
    }); // 11
    l.add("olga", Role::Operator, Action::Command, |e| {
        e.result = Outcome::Refused;
        e.reason = Some("needs-officer".into());
        e.detail = Some("model import".into());
    }); // 12
    l.add("olga", Role::Operator, Action::Logout, |_| {}); // 13
    l.checkpoint();
    l.add("ivan", Role::Officer, Action::Login, |_| {}); // 14
    l.add("ivan", Role::Officer, Action::ModelImport, |e| {
        e.detail = Some("tiny-llama version 3".into());
        e.subjects = vec![Subject {
            kind: SubjectKind::Model,
            name: Some("tiny-llama_3.airlock".into()),
            hash: sha256_hex(b"manifest tiny-llama 3"),
        }];
    }); // 15
    l.add("ivan", Role::Officer, Action::SystemImport, |e| {
        e.result = Outcome::Refused;
        e.reason = Some("rollback-refused".into());
        e.subjects = vec![Subject {
            kind: SubjectKind::System,
            name: Some("airlock_1.airlock".into()),
            hash: sha256_hex(b"manifest system 1"),
        }];
    }); // 16
    l.add("ivan", Role::Officer, Action::SystemRollback, |e| {
        e.detail = Some("slot=b version=0.0.9".into());
    }); // 17
    l.add("ivan", Role::Officer, Action::KeyRotate, |e| {
        e.detail = Some("document key 1a2b3c4d".into());
    }); // 18
    l.add("ivan", Role::Officer, Action::ClockSet, |e| {
        e.clock_from = Some(e.wall);
        e.wall -= 7200;
    }); // 19
    l.add("ivan", Role::Officer, Action::Logout, |_| {}); // 20
    l.checkpoint();
    sys(&mut l, Action::StickRemoved, "sdb"); // 21
    sys(&mut l, Action::Shutdown, "poweroff"); // 22
    l.checkpoint();
    l.boot = BOOT_B;
    l.wall += 86_400;
    l.uptime = 0;
    sys(&mut l, Action::Boot, "slot=b version=0.0.9 lockdown=ok"); // 23
    l.add("ada", Role::Auditor, Action::Login, |_| {}); // 24
    l.add("ada", Role::Auditor, Action::AuditExport, |_| {}); // 25
    l.checkpoint();
    l
}

fn rich_report(fx: &Fx) -> (PathBuf, String) {
    let dir = fx.export_of("rich", day_in_the_life);
    let out = fx.path("rich.html");
    let stdout = ok(report(&dir, &fx.key, None, &out));
    assert!(
        stdout.starts_with("audit log OK airlock.local/cli-test/audit\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("report       {}\n", p(&out))),
        "{stdout}"
    );
    (out.clone(), fs::read_to_string(&out).unwrap())
}

fn assert_all_in(html: &str, wants: &[&str]) {
    for want in wants {
        assert!(html.contains(want), "{want:?} not in\n{html}");
    }
}

#[test]
fn example_export_report() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audit-example");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.html");
    ok(report(&dir, &dir.join("audit.pub"), None, &out));
    let html = fs::read_to_string(&out).unwrap();
    assert_self_contained(&html);
    assert!(html.find("id=\"verdict\"").unwrap() < html.find("id=\"days\"").unwrap());
    assert_all_in(
        section(&html, "verdict"),
        &[
            "class=\"verdict ok\"",
            "Audit log verified",
            "<code>airlock.local/5f2c9a1e/audit</code>",
            "<code>airlock.local/5f2c9a1e/audit+d0e23c9b</code>",
            "<td>3 (seq 0..2)</td>",
            "first entry 2026-12-04 04:15:11, last 2026-12-04 04:18:32 UTC, 1 boot",
            "1, last: size 3, signed ",
            "<code>B/KBJMS6qPNTeAkbVG/UsgK4epHG0wjXhe2W2KGpCIM=</code>",
            "not checked: give --since",
        ],
    );
    assert_all_in(
        section(&html, "days"),
        &[
            "<svg class=\"chart\"",
            "<td>2026-12-04</td><td>3</td><td>1</td><td>1</td><td>0</td>",
        ],
    );
    assert_all_in(
        section(&html, "accounts"),
        &["<tr><td><code>olga</code></td><td>operator</td><td>2</td><td>1</td><td>0</td><td>0</td><td>1</td><td>0</td><td>0</td>"],
    );
    assert_all_in(
        section(&html, "jobs"),
        &[
            "<td>1</td><td><a href=\"#e2\">2</a></td><td><time>2026-12-04 04:18:32</time></td><td><code>olga</code></td><td>ok</td>",
            "q1.txt.gpg <code>2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6</code><br>q1.answer.gpg <code>ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb</code>",
            "<td><code>ceda5737bc21ae033226bbd8dd65c4dd7128225c7ba91c16b9b145a38e819a0f</code></td>",
            "<td><code>62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a</code></td>",
        ],
    );
    assert_all_in(section(&html, "refusals"), &["<p>None.</p>"]);
    assert_all_in(
        section(&html, "system"),
        &["<td><time>2026-12-04 04:15:11</time></td><td><code class=\"nw\">3f6e1c0a</code></td><td>8.412s</td><td>boot</td><td>ok</td>"],
    );
    let all = section(&html, "entries");
    assert_eq!(all.matches("<tr id=\"e").count(), 3, "{all}");
    assert_all_in(
        all,
        &["<tr id=\"e1\"><td>1</td><td><time>2026-12-04 04:16:30</time></td><td><code class=\"nw\">3f6e1c0a</code></td><td>1m27.233s</td><td><code>olga</code></td><td>operator</td><td>login</td><td>ok</td>"],
    );
}

#[test]
fn report_lists_refusals_lockouts_imports_and_jobs() {
    let fx = Fx::new();
    let (_, html) = rich_report(&fx);
    assert_self_contained(&html);
    assert_all_in(
        section(&html, "verdict"),
        &[
            "Audit log verified",
            &format!("<code>{}</code>", signer(1).verifier().label()),
            "<td>26 (seq 0..25)</td>",
            ", 2 boots",
            "5, last: size 26",
            "<td>4; 2 jobs; 7 refusals, 1 failures</td>",
            "<a href=\"#e19\">entry 19</a>: 2026-12-04 04:24:41 \u{2192} 2026-12-04 02:25:11 UTC, explained: clock set by ivan",
        ],
    );
    let days = section(&html, "days");
    assert_all_in(
        days,
        &[
            "<tr class=\"refused\"><td>2026-12-04</td><td>23</td><td>2</td><td>2</td><td>8</td></tr>",
            "<tr><td>2026-12-05</td><td>3</td><td>1</td><td>0</td><td>0</td></tr>",
            "<title>2026-12-04: 23 entries, 8 refused or failed</title>",
        ],
    );
    assert_all_in(
        section(&html, "accounts"),
        &[
            // eve: 6 entries, 0 logins, 5 refused, 1 lockout.
            "<tr class=\"refused\"><td><code>eve</code></td><td>operator</td><td>6</td><td>0</td><td>5</td><td>1</td><td>0</td><td>5</td><td>0</td>",
            "<tr class=\"refused\"><td><code>olga</code></td><td>operator</td><td>5</td><td>1</td><td>0</td><td>0</td><td>2</td><td>1</td><td>1</td>",
            "<tr><td><code>ada</code></td><td>auditor</td><td>2</td><td>1</td>",
            "<td>operator</td><td>2: eve, olga</td><td>11</td>",
        ],
    );
    let refusals = section(&html, "refusals");
    assert_eq!(refusals.matches("<tr class=").count(), 9, "{refusals}");
    assert_all_in(
        refusals,
        &[
            "<tr class=\"refused\"><td><a href=\"#e3\">3</a></td><td><time>2026-12-04 04:17:11</time></td><td><code>eve</code></td><td>operator</td><td>login</td><td>refused</td><td>wrong-passphrase</td><td></td></tr>",
            "<td><code>eve</code></td><td>operator</td><td>lockout</td><td>ok</td><td></td><td>locked for 600 s after 5 failures</td>",
            "<tr class=\"failed\"><td><a href=\"#e11\">11</a></td>",
            "<td>job</td><td>failed</td><td>worker-crashed</td>",
            "<td>command</td><td>refused</td><td>needs-officer</td><td>model import</td>",
            "<td>system-import</td><td>refused</td><td>rollback-refused</td>",
        ],
    );
    assert_all_in(
        section(&html, "imports"),
        &[
            &format!(
                "<td>model-import</td><td>ok</td><td></td><td>tiny-llama version 3</td><td><span class=\"kind\">model</span> tiny-llama_3.airlock <code>{}</code></td>",
                sha256_hex(b"manifest tiny-llama 3")
            ),
            &format!(
                "<span class=\"kind\">system</span> airlock_1.airlock <code>{}</code>",
                sha256_hex(b"manifest system 1")
            ),
            "<td>system-rollback</td><td>ok</td><td></td><td>slot=b version=0.0.9</td>",
        ],
    );
    assert_all_in(
        section(&html, "admin"),
        &[
            "<td>key-rotate</td><td>ok</td><td></td><td>document key 1a2b3c4d</td>",
            "<td>clock-set</td><td>ok</td><td></td><td>clock was 2026-12-04 04:25:11 UTC</td>",
            "<td><code>ada</code></td><td>auditor</td><td>audit-export</td>",
        ],
    );
    let jobs = section(&html, "jobs");
    assert_all_in(
        jobs,
        &[
            &format!(
                "<td>1</td><td><a href=\"#e10\">10</a></td><td><time>2026-12-04 04:20:41</time></td><td><code>olga</code></td><td>ok</td><td></td><td>&lt;img src=x onerror=alert(1)&gt;.gpg <code>{}</code><br>q1.answer.gpg <code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td>",
                sha256_hex(b"in 1"),
                sha256_hex(b"out 1"),
                plaintext_tag(&[7; 32], b"question 1"),
                sha256_hex(b"manifest tiny-llama 3"),
            ),
            "<td>2</td><td><a href=\"#e11\">11</a></td>",
        ],
    );
    assert_all_in(
        section(&html, "system"),
        &[
            "<td>boot</td><td>ok</td><td></td><td>slot=a version=0.1.0 lockdown=ok</td>",
            "<td>selftest</td><td>ok</td><td></td><td>42 probes passed</td>",
            "<td>stick-inserted</td><td>ok</td><td></td><td>sdb 8 GB label &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;</td>",
            "<td>stick-removed</td>",
            "<td>shutdown</td>",
            "<td><code class=\"nw\">0b0b0b0b</code></td><td>30.000s</td><td>boot</td>",
        ],
    );
    assert_eq!(section(&html, "entries").matches("<tr ").count(), 26);
}

#[test]
fn refused_exports_get_a_red_page_and_exit_1() {
    type Tamper = fn(&Fx, &Path) -> Option<PathBuf>;
    // (case, tampering returning a --since file, reason in the page and on stderr)
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "edited entry",
            |_, d| {
                edit_lines(&segment(d, 3), |l| {
                    l[2] = l[2].replace("\"result\":\"ok\"", "\"result\":\"refused\"")
                });
                None
            },
            "checkpoint 2 (checkpoints/00000002.checkpoint, size 5): root does not match entries 2..4",
        ),
        (
            "removed entry",
            |_, d| {
                edit_lines(&segment(d, 3), |l| {
                    l.remove(1);
                });
                None
            },
            "entries/00000000000000000003.jsonl line 2: entry 4 found where entry 3 belongs",
        ),
        (
            "checkpoint of another log given as --since",
            |fx, _| {
                let other = fx.export_of("other", |dir| {
                    let mut l = Log::new(dir);
                    l.add("system", Role::System, Action::Boot, |_| {});
                    l.add("mallory", Role::Officer, Action::Login, |_| {});
                    l.checkpoint();
                    l
                });
                Some(checkpoint(&other, 1))
            },
            "--since checkpoint (size 2, root",
        ),
    ];
    for (case, tamper, reason) in cases {
        let fx = Fx::new();
        let dir = fx.export("x");
        let since = tamper(&fx, &dir);
        let out = fx.path("report.html");
        let run = report(&dir, &fx.key, since.as_deref(), &out);
        refused(case, run, reason);
        let html = fs::read_to_string(&out).unwrap();
        assert_self_contained(&html);
        let verdict = section(&html, "verdict");
        assert_all_in(
            verdict,
            &[
                "class=\"verdict bad\"",
                "NOT VERIFIED: audit log refused",
                reason,
                "<td><code>airlock.local/cli-test/audit</code></td>",
                "class=\"unverified\"",
            ],
        );
        assert!(!html.contains("Audit log verified"), "{case}");
        // What could be read is still listed, marked unverified.
        assert!(
            section(&html, "entries").contains("<code>olga</code>"),
            "{case}"
        );
    }
    // The exit-1 line says where the page is.
    let fx = Fx::new();
    let dir = fx.export("x");
    edit_lines(&segment(&dir, 3), |l| {
        l.remove(1);
    });
    let out = fx.path("r.html");
    refused(
        "page named",
        report(&dir, &fx.key, None, &out),
        &format!("(the report with this verdict is in {})", p(&out)),
    );
}

/// A pruned export: the page lists the kept entries only, and the root
/// check of what it lists starts from the first segment's frontier.
#[test]
fn pruned_export_report() {
    let fx = Fx::new();
    let dir = fx.export_of("pruned", |d| {
        let mut l = story(d);
        assert_eq!(l.log.prune(6).unwrap(), 2);
        l
    });
    let out = fx.path("r.html");
    ok(report(&dir, &fx.key, None, &out));
    let html = fs::read_to_string(&out).unwrap();
    assert_all_in(
        section(&html, "verdict"),
        &[
            "Audit log verified",
            "<td>4 (seq 6..9), 6 older pruned</td>",
        ],
    );
    let all = section(&html, "entries");
    assert_eq!(all.matches("<tr id=\"e").count(), 4, "{all}");
    assert!(all.contains("<tr id=\"e6\">") && !all.contains("<tr id=\"e5\">"));
}

#[test]
fn since_and_argument_errors() {
    let fx = Fx::new();
    let dir = fx.export("x");
    let out = fx.path("r.html");
    let stdout = ok(report(&dir, &fx.key, Some(&checkpoint(&dir, 2)), &out));
    assert!(stdout.contains("since        consistent with"), "{stdout}");
    let html = fs::read_to_string(&out).unwrap();
    assert_all_in(
        section(&html, "verdict"),
        &[
            "consistent with ",
            "00000002.checkpoint (recomputed from the entries)",
        ],
    );
    // Argument problems write no page.
    let none = fx.path("none.html");
    refused(
        "missing export",
        report(&fx.path("nope"), &fx.key, None, &none),
        "nope: No such file",
    );
    refused(
        "missing --since file",
        report(&dir, &fx.key, Some(&fx.path("nope.checkpoint")), &none),
        "nope.checkpoint: No such file",
    );
    refused(
        "output in a missing directory",
        report(&dir, &fx.key, None, &fx.path("no/dir/r.html")),
        "write report: create ",
    );
    assert!(!none.exists());
}

fn chromium(args: &[&str], url: &str, profile: &Path) -> Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} missing: scripts/setup-host installs Debian's chromium"
    );
    let out = Command::new("timeout")
        .args(["-k", "10", CHROMIUM_TIMEOUT_S, CHROMIUM])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", p(profile)))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn report_renders_in_headless_chromium() {
    let fx = Fx::new();
    let (page, _) = rich_report(&fx);
    let url = format!("file://{}", p(&page));
    let dom = chromium(&["--dump-dom"], &url, &fx.path("profile-dom"));
    let dom = String::from_utf8(dom.stdout).unwrap();
    assert_all_in(
        &dom,
        &[
            "Audit log verified",
            "<code>olga</code>",
            "<code>eve</code>",
            "<td>wrong-passphrase</td>",
            "<td>needs-officer</td>",
            // The crafted texts are text nodes in the parsed DOM.
            "label &lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; 'q'",
            "&lt;img src=x onerror=alert(1)&gt;.gpg",
            "<rect class=\"bar-bad\"",
        ],
    );
    assert_eq!(
        dom.matches("<script").count(),
        0,
        "script element in the DOM"
    );
    assert_eq!(dom.matches("<img").count(), 0, "img element in the DOM");
    let png = fx.path("report.png");
    chromium(
        &[
            "--window-size=1280,2000",
            &format!("--screenshot={}", p(&png)),
        ],
        &url,
        &fx.path("profile-png"),
    );
    let bytes = fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "screenshot of {} bytes", bytes.len());
}
