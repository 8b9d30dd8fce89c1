//! PID 1's side of the boot check: starts `airlock-init model-check STORE`
//! once the state partition is mounted, reads its lines without blocking
//! (the event loop drains the pipe each turn and reaps the child like the
//! label readers), and keeps the verdicts for `status`, the audit log and
//! the console notices. No timeout: an 8 GB model takes tens of seconds on
//! a slow disk, and a check still running only means no worker gets the
//! model yet ([`super::record::worker_model_dir`]).

use super::line::{self, Line, MAX_LINE};
use crate::auditd::Draft;
use crate::linepipe::{LinePipe, Lines};
use airlock_formats::audit::entry::{Action, Outcome, MAX_DETAIL_LEN};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Most bytes of output read from the child; the rest is read and dropped
/// (so the child never blocks on a full pipe).
pub const MAX_OUTPUT: usize = 256 * 1024;

/// Where the check is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// No state partition mounted yet.
    Idle,
    Running,
    Done {
        took: Duration,
    },
    /// The child could not run or did not end cleanly.
    Failed(String),
}

/// The boot check as PID 1 sees it.
#[derive(Debug)]
pub struct Job {
    phase: Phase,
    pid: Option<i32>,
    /// The child's output.
    pipe: LinePipe,
    started: Duration,
    /// The model being checked (name, version, bytes).
    checking: Option<(String, u64, u64)>,
    /// Verdicts, recoveries and errors, in order.
    facts: Vec<Line>,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            phase: Phase::Idle,
            pid: None,
            pipe: LinePipe::new(MAX_LINE, MAX_OUTPUT),
            started: Duration::ZERO,
            checking: None,
            facts: Vec::new(),
        }
    }
}

impl Job {
    /// Starts the child for `store`; returns the facts to act on (an
    /// `error` line when it cannot start). Started once per boot.
    pub fn start(&mut self, exe: &Path, store: &Path, now: Duration) -> Vec<Line> {
        if self.phase != Phase::Idle {
            return Vec::new();
        }
        self.started = now;
        let child = Command::new(exe)
            .arg("model-check")
            .arg(store)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut c = match child {
            Ok(c) => c,
            Err(e) => return self.fail(format!("start the model check: {e}")),
        };
        let pid = i32::try_from(c.id()).unwrap_or(0);
        // The handle is dropped without waiting: the reaper collects it.
        let Some(stdout) = c.stdout.take() else {
            return self.fail("start the model check: no pipe".into());
        };
        if let Err(e) = self.pipe.attach(stdout) {
            // Blocking reads would stall PID 1: kill it and say so.
            let _ = c.kill();
            return self.fail(format!("start the model check: {e}"));
        }
        self.pid = Some(pid);
        self.phase = Phase::Running;
        Vec::new()
    }

    /// Whether `pid` is the check's child.
    pub fn owns(&self, pid: i32) -> bool {
        self.pid == Some(pid)
    }

    /// Reads what the child has written so far; returns the new facts.
    pub fn drain(&mut self) -> Vec<Line> {
        let got = self.pipe.drain();
        self.take_lines(got)
    }

    /// The child exited (`status` as the reaper describes it): reads the
    /// rest of its output and closes the check.
    pub fn exited(&mut self, status: &str, code: Option<i32>, now: Duration) -> Vec<Line> {
        let got = self.pipe.finish();
        let mut facts = self.take_lines(got);
        self.pid = None;
        self.checking = None;
        if code == Some(0) {
            self.phase = Phase::Done {
                took: now.saturating_sub(self.started),
            };
        } else {
            facts.extend(self.fail(format!("the model check ended: {status}")));
        }
        facts
    }

    fn fail(&mut self, why: String) -> Vec<Line> {
        log::error!("model check: {why}");
        self.phase = Phase::Failed(why.clone());
        let l = Line::error(&why);
        self.facts.push(l.clone());
        vec![l]
    }

    /// Splits `bytes` into lines (keeping an incomplete one) and parses them.
    #[cfg(test)]
    fn take(&mut self, bytes: &[u8]) -> Vec<Line> {
        let got = self.pipe.split(bytes);
        self.take_lines(got)
    }

    fn take_lines(&mut self, got: Lines) -> Vec<Line> {
        if got.dropped > 0 {
            log::warn!(
                "model check: {} line(s) longer than {MAX_LINE} bytes dropped",
                got.dropped
            );
        }
        got.lines.iter().filter_map(|l| self.take_line(l)).collect()
    }

    fn take_line(&mut self, raw: &[u8]) -> Option<Line> {
        let text = String::from_utf8_lossy(raw);
        if text.trim().is_empty() {
            return None;
        }
        let l = match line::parse(&text) {
            Ok(l) => l,
            Err(e) => {
                log::warn!("model check: {e}");
                return None;
            }
        };
        match &l {
            Line::Checking {
                name,
                version,
                bytes,
            } => {
                self.checking = Some((name.clone(), *version, *bytes));
                return None;
            }
            Line::Ok { .. } | Line::Refused { .. } => {
                self.checking = None;
                // One verdict per model: a later one replaces an earlier one.
                let m = l.model();
                self.facts
                    .retain(|f| f.model().map(|(n, _)| n) != m.map(|(n, _)| n));
            }
            Line::Recovered { .. } | Line::Error { .. } => {}
        }
        self.facts.push(l.clone());
        Some(l)
    }

    /// The `models at rest` value of `status`.
    pub fn status_value(&self, now: Duration) -> String {
        let mut parts: Vec<String> = self.facts.iter().map(describe).collect();
        match &self.phase {
            Phase::Idle => return "not checked (no state partition mounted)".into(),
            Phase::Running => {
                let so_far = now.saturating_sub(self.started).as_secs();
                parts.push(match &self.checking {
                    Some((n, v, b)) => format!(
                        "checking… {n} v{v} ({}), {so_far} s so far",
                        crate::models::human(*b)
                    ),
                    None => format!("checking…, {so_far} s so far"),
                });
            }
            Phase::Done { took } if parts.is_empty() => {
                return format!(
                    "nothing to check (no active model), {:.1} s",
                    took.as_secs_f64()
                )
            }
            Phase::Done { .. } => {}
            Phase::Failed(_) => {} // its error line is among the facts
        }
        parts.join("; ")
    }

    /// Whether the check has ended (done or failed) this boot.
    pub fn ended(&self) -> bool {
        matches!(self.phase, Phase::Done { .. } | Phase::Failed(_))
    }

    /// The console notices of this check so far (refusals and failures),
    /// also shown to a console that comes up after they were broadcast.
    pub fn notices(&self) -> Vec<String> {
        self.facts.iter().filter_map(notice).collect()
    }
}

/// How `status` shows one fact.
fn describe(l: &Line) -> String {
    match l {
        Line::Ok {
            name,
            version,
            bytes,
            millis,
        } => format!(
            "{name} v{version} verified ({}, {:.1} s)",
            crate::models::human(*bytes),
            *millis as f64 / 1000.0
        ),
        Line::Refused {
            name,
            version,
            reason,
        } => format!("REFUSED {name} v{version}: {reason}"),
        Line::Recovered { path } => format!("recovered {path}"),
        Line::Error { reason } => format!("check FAILED: {reason}"),
        Line::Checking { name, version, .. } => format!("checking {name} v{version}"),
    }
}

/// The console notice of a fact, if it warrants one.
pub fn notice(l: &Line) -> Option<String> {
    match l {
        Line::Refused {
            name,
            version,
            reason,
        } => Some(format!(
            "[models] {name} v{version} REFUSED at boot: {reason}"
        )),
        Line::Error { reason } => Some(format!(
            "[models] the at-rest check of the models failed: {reason}; no worker gets a model until one is activated"
        )),
        _ => None,
    }
}

/// The audit entry of a fact, if it has one (`model-verify`).
pub fn draft(l: &Line) -> Option<Draft> {
    let d = match l {
        Line::Checking { .. } => return None,
        Line::Ok {
            name,
            version,
            bytes,
            millis,
        } => Draft::system(
            Action::ModelVerify,
            Outcome::Ok,
            Some(format!(
                "{name} version {version} bytes={bytes} ms={millis}"
            )),
        ),
        Line::Refused {
            name,
            version,
            reason,
        } => Draft::system(
            Action::ModelVerify,
            Outcome::Refused,
            Some(detail(&format!("{name} version {version}: {reason}"))),
        )
        .reason("at-rest-check-failed"),
        Line::Recovered { path } => Draft::system(
            Action::ModelVerify,
            Outcome::Ok,
            Some(detail(&format!("store recovery removed {path}"))),
        ),
        Line::Error { reason } => {
            Draft::system(Action::ModelVerify, Outcome::Failed, Some(detail(reason)))
                .reason("model-check-failed")
        }
    };
    Some(d)
}

/// `s` safe and short enough for an entry's `detail`.
fn detail(s: &str) -> String {
    let s = crate::screen::line(s);
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > MAX_DETAIL_LEN {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Job {
        Job {
            phase: Phase::Running,
            started: Duration::from_secs(2),
            ..Job::default()
        }
    }

    #[test]
    fn lines_split_across_reads_and_verdicts() {
        let mut j = running();
        assert!(j.take(b"checking tiny 1 1048576\nok ti").is_empty());
        assert_eq!(
            j.status_value(Duration::from_secs(5)),
            "checking… tiny v1 (1.0 MiB), 3 s so far"
        );
        let f = j.take(b"ny 1 1048576 2300\nrefused big 2 payload x: SHA-256 mismatch\n");
        assert_eq!(f.len(), 2);
        let f = j.exited("exit 0", Some(0), Duration::from_secs(6));
        assert!(f.is_empty());
        assert_eq!(
            j.status_value(Duration::from_secs(9)),
            "tiny v1 verified (1.0 MiB, 2.3 s); REFUSED big v2: payload x: SHA-256 mismatch"
        );
        assert_eq!(
            j.notices(),
            vec!["[models] big v2 REFUSED at boot: payload x: SHA-256 mismatch".to_string()]
        );
    }

    #[test]
    fn bad_and_overlong_lines_are_dropped() {
        let mut j = running();
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        assert!(j.take(&long).is_empty());
        assert!(j.take(b"ok Tiny 1 2 3\nnonsense\n").is_empty());
        assert_eq!(j.take(b"ok tiny 1 2 3\n").len(), 1);
        // A last line without newline still counts at exit.
        j.take(b"recovered /s/.staging/x");
        let f = j.exited("exit 0", Some(0), Duration::from_secs(3));
        assert_eq!(f, vec![Line::recovered("/s/.staging/x")]);
    }

    #[test]
    fn a_failed_child_is_a_failed_check() {
        let mut j = running();
        let f = j.exited("killed by SIGKILL", None, Duration::from_secs(3));
        assert_eq!(
            f,
            vec![Line::error("the model check ended: killed by SIGKILL")]
        );
        assert_eq!(
            j.status_value(Duration::from_secs(3)),
            "check FAILED: the model check ended: killed by SIGKILL"
        );
        let d = draft(&f[0]).unwrap();
        assert_eq!(
            (d.action, d.result, d.reason.as_deref()),
            (
                Action::ModelVerify,
                Outcome::Failed,
                Some("model-check-failed")
            )
        );
    }

    #[test]
    fn status_before_and_without_models() {
        let j = Job::default();
        assert_eq!(
            j.status_value(Duration::ZERO),
            "not checked (no state partition mounted)"
        );
        let mut j = running();
        j.exited("exit 0", Some(0), Duration::from_millis(2500));
        assert_eq!(
            j.status_value(Duration::from_secs(9)),
            "nothing to check (no active model), 0.5 s"
        );
    }

    /// Result, reason code and detail of an expected draft.
    type Want<'a> = Option<(Outcome, Option<&'a str>, String)>;

    #[test]
    fn audit_drafts_per_fact() {
        let long = "r".repeat(400);
        let cases: Vec<(Line, Want)> = vec![
            (
                Line::Checking {
                    name: "t".into(),
                    version: 1,
                    bytes: 2,
                },
                None,
            ),
            (
                Line::Ok {
                    name: "t".into(),
                    version: 1,
                    bytes: 2,
                    millis: 3,
                },
                Some((Outcome::Ok, None, "t version 1 bytes=2 ms=3".into())),
            ),
            (
                Line::refused("t", 1, "payload m: SHA-256 mismatch"),
                Some((
                    Outcome::Refused,
                    Some("at-rest-check-failed"),
                    "t version 1: payload m: SHA-256 mismatch".into(),
                )),
            ),
            (
                Line::recovered("/s/.staging/x"),
                Some((
                    Outcome::Ok,
                    None,
                    "store recovery removed /s/.staging/x".into(),
                )),
            ),
            (
                Line::error(&long),
                Some((
                    Outcome::Failed,
                    Some("model-check-failed"),
                    "r".repeat(MAX_DETAIL_LEN),
                )),
            ),
        ];
        for (l, want) in cases {
            let got = draft(&l).map(|d| {
                assert_eq!(d.action, Action::ModelVerify);
                (d.result, d.reason.clone(), d.detail.unwrap_or_default())
            });
            let want = want.map(|(o, r, d)| (o, r.map(String::from), d));
            assert_eq!(got, want, "{l}");
        }
    }
}
