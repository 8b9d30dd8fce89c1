//! PID 1's side of `airlock-init system-boot`: started once per boot when
//! the state partition is mounted, the model check has ended and the audit
//! log is open (or failed); its output lines are read without blocking each
//! turn. PID 1 only relays: it audits the drafts, broadcasts the notices
//! (also to consoles that come up later), keeps the status line, and
//! restarts the PC when the child asks (a failed health check with a
//! previous system to fall back to).

use crate::auditd::Draft;
use crate::linepipe::{LinePipe, Lines};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Longest line taken from the child.
pub const MAX_LINE: usize = 4096;
/// Most output bytes taken from the child.
pub const MAX_OUTPUT: usize = 256 * 1024;
/// How long a console shows the restart notice before the restart.
pub const REBOOT_DELAY: Duration = Duration::from_secs(10);
/// Longest the check may run (model load and probe suite on a slow PC
/// take minutes); then it is killed and the boot stays unblessed.
pub const DEADLINE: Duration = Duration::from_secs(30 * 60);

/// One line of the child's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// Shown on every console (`notice TEXT`).
    Notice(String),
    /// Recorded in the audit log (`audit JSON`).
    Audit(Draft),
    /// The `system` value of `status` (`status TEXT`).
    Status(String),
    /// Restart now into the previous system (`reboot CAUSE`).
    Reboot(String),
    /// Kernel log only (`log TEXT`).
    Log(String),
}

impl Msg {
    /// One line, without the newline; texts are made screen-safe.
    pub fn encode(&self) -> String {
        let safe = |s: &str| crate::screen::line(s).into_owned();
        match self {
            Msg::Notice(t) => format!("notice {}", safe(t)),
            Msg::Audit(d) => format!("audit {}", d.encode()),
            Msg::Status(t) => format!("status {}", safe(t)),
            Msg::Reboot(t) => format!("reboot {}", safe(t)),
            Msg::Log(t) => format!("log {}", safe(t)),
        }
    }

    pub fn parse(line: &str) -> Option<Msg> {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        let text = || crate::screen::line(rest).into_owned();
        Some(match tag {
            "notice" => Msg::Notice(text()),
            "audit" => Msg::Audit(Draft::decode(rest).ok()?),
            "status" => Msg::Status(text()),
            "reboot" => Msg::Reboot(text()),
            "log" => Msg::Log(text()),
            _ => return None,
        })
    }
}

/// The child as PID 1 sees it.
#[derive(Debug)]
pub struct Job {
    started: bool,
    /// When it was started (boot time).
    since: Duration,
    pid: Option<i32>,
    /// The child's output.
    pipe: LinePipe,
    /// The `system` status value.
    pub status: Option<String>,
    /// Notices so far (for consoles that come up later).
    pub notices: Vec<String>,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            started: false,
            since: Duration::ZERO,
            pid: None,
            pipe: LinePipe::new(MAX_LINE, MAX_OUTPUT),
            status: None,
            notices: Vec::new(),
        }
    }
}

impl Job {
    /// Whether it was started this boot.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Starts the child once; `audit` is PID 1's verdict on the audit log.
    pub fn start(
        &mut self,
        exe: &Path,
        audit: &Result<(), String>,
        now: Duration,
    ) -> Result<(), String> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        self.since = now;
        let verdict = match audit {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        };
        let mut c = Command::new(exe)
            .arg("system-boot")
            .arg("--audit")
            .arg(verdict)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start the system check: {e}"))?;
        let pid = i32::try_from(c.id()).unwrap_or(0);
        let stdout = c.stdout.take().ok_or("start the system check: no pipe")?;
        if let Err(e) = self.pipe.attach(stdout) {
            // Blocking reads would stall PID 1: kill it and say so.
            let _ = c.kill();
            return Err(format!("start the system check: {e}"));
        }
        // The handle is dropped without waiting: the reaper collects it.
        self.pid = Some(pid);
        self.status = Some("checking…".into());
        Ok(())
    }

    /// Kills a child that ran past [`DEADLINE`]; the message to relay.
    pub fn overdue(&mut self, now: Duration) -> Vec<Msg> {
        let Some(pid) = self.pid else {
            return Vec::new();
        };
        if now.saturating_sub(self.since) < DEADLINE {
            return Vec::new();
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.pid = None;
        self.pipe.close();
        let why = format!(
            "system: the check of this boot did not end within {} min and was stopped; \
             this boot is NOT blessed (its remaining tries will be used)",
            DEADLINE.as_secs() / 60
        );
        self.status = Some("check stopped after its deadline: NOT blessed".into());
        self.notices.push(why.clone());
        let d = Draft::system(
            airlock_formats::audit::entry::Action::SystemCheck,
            airlock_formats::audit::entry::Outcome::Failed,
            Some(why.clone()),
        )
        .reason("health-check-timeout");
        vec![Msg::Notice(why), Msg::Audit(d)]
    }

    pub fn owns(&self, pid: i32) -> bool {
        self.pid == Some(pid)
    }

    /// The messages written so far.
    pub fn drain(&mut self) -> Vec<Msg> {
        let got = self.pipe.drain();
        self.take_lines(got)
    }

    fn take_lines(&mut self, got: Lines) -> Vec<Msg> {
        got.lines.iter().filter_map(|l| self.take(l)).collect()
    }

    fn take(&mut self, raw: &[u8]) -> Option<Msg> {
        let m = Msg::parse(&String::from_utf8_lossy(raw))?;
        match &m {
            Msg::Status(s) => self.status = Some(s.clone()),
            Msg::Notice(n) => self.notices.push(n.clone()),
            _ => {}
        }
        Some(m)
    }

    /// The child exited: the rest of its output.
    pub fn exited(&mut self, status: &str, code: Option<i32>) -> Vec<Msg> {
        let got = self.pipe.finish();
        let mut msgs = self.take_lines(got);
        self.pid = None;
        if code != Some(0) {
            let why = format!("the system check ended: {status}");
            self.status = Some(why.clone());
            msgs.push(Msg::Log(why));
        }
        msgs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_formats::audit::entry::{Action, Outcome};

    #[test]
    fn messages_round_trip_and_are_screen_safe() {
        let d = Draft::system(Action::SystemCommit, Outcome::Ok, Some("version 2".into()));
        let table = [
            Msg::Notice("system: ok".into()),
            Msg::Audit(d),
            Msg::Status("version 2, slot b, good".into()),
            Msg::Reboot("health".into()),
            Msg::Log("x".into()),
        ];
        for m in table {
            assert_eq!(Msg::parse(&m.encode()), Some(m.clone()), "{m:?}");
        }
        let evil = Msg::Notice("a\u{1b}[2Jb".into()).encode();
        assert!(!evil.contains('\u{1b}'), "{evil:?}");
        assert_eq!(Msg::parse("bogus x"), None);
        assert_eq!(Msg::parse("audit {not json"), None);
    }
}
