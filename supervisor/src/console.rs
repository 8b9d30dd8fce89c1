//! The console service: one child process per console
//! (`airlock-init console TTY --ctl-fd N`), so that a failure while parsing
//! a line cannot touch PID 1. It owns the tty, prints the banner, reads
//! lines, runs the grammar and asks PID 1 (over the control socket) for
//! what only PID 1 knows or may do: status, poweroff, reboot.

use crate::auditd::Draft;
use crate::commands::{self, Command};
use crate::control::{Reply, Request, MAX_MSG};
use crate::identity::policy::Policy;
use crate::services::EXIT_UNAVAILABLE;
use crate::session::Login;
use airlock_formats::audit::entry::{Action, Outcome, Role, SYSTEM_ACCOUNT};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use nix::sys::termios::{
    self, FlushArg, InputFlags, LocalFlags, OutputFlags, SetArg, SpecialCharacterIndices,
};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The prompt (stable string, see docs/supervisor.md).
pub const PROMPT: &str = "airlock> ";
/// Exit status when the tty hung up.
pub const EXIT_HANGUP: u8 = 4;
/// Exit status for a bad invocation.
pub const EXIT_USAGE: u8 = 2;

/// Failing operation of the console service.
#[derive(Debug, Error)]
pub enum ConsoleError {
    #[error("usage: airlock-init console TTY --ctl-fd N")]
    Usage,
    #[error("control fd {0} is not an open socket")]
    CtlFd(i32),
    #[error("open /dev/{tty}: {source}")]
    Open { tty: String, source: std::io::Error },
    #[error("/dev/{tty} is not a terminal: {errno}")]
    NotATty { tty: String, errno: nix::Error },
    #[error("set up /dev/{tty}: {errno}")]
    Termios { tty: String, errno: nix::Error },
    #[error("control socket: {0}")]
    Ctl(nix::Error),
}

/// Banner lines: first starts with `Airlock <version>`.
pub fn banner(version: &str, slot: Option<&str>, demo: bool) -> String {
    format!(
        "Airlock {version} (slot {}){}\nAir-gapped LLM appliance. Type 'help' for the list of commands.\n",
        slot.unwrap_or("unknown"),
        if demo { " DEMO" } else { "" }
    )
}

/// `VARIANT_ID=demo` in an os-release text (quotes allowed).
pub fn is_demo(os_release: &str) -> bool {
    os_release
        .lines()
        .filter_map(|l| l.strip_prefix("VARIANT_ID="))
        .any(|v| v.trim().trim_matches(|c| c == '"' || c == '\'') == "demo")
}

/// Parses `TTY --ctl-fd N`.
pub fn parse_args(args: &[String]) -> Result<(String, i32), ConsoleError> {
    match args {
        [tty, flag, n] if flag == "--ctl-fd" => {
            let fd: i32 = n.parse().map_err(|_| ConsoleError::Usage)?;
            if fd < 3 || !tty.chars().all(|c| c.is_ascii_alphanumeric()) || tty.is_empty() {
                return Err(ConsoleError::Usage);
            }
            Ok((tty.clone(), fd))
        }
        _ => Err(ConsoleError::Usage),
    }
}

/// Entry point of `airlock-init console ...`.
pub fn main_from_args(args: &[String]) -> ExitCode {
    crate::klog::init();
    crate::klog::attach_kmsg();
    let (tty, fd) = match parse_args(args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("airlock-init: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let ctl = match take_ctl_fd(fd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlock-init: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match Console::open(&tty, ctl) {
        Ok(mut c) => ExitCode::from(c.run()),
        Err(e) => {
            log::warn!("console {tty}: {e}");
            ExitCode::from(EXIT_UNAVAILABLE as u8)
        }
    }
}

fn take_ctl_fd(fd: i32) -> Result<OwnedFd, ConsoleError> {
    // SAFETY: F_GETFD on a descriptor number touches no memory; a closed
    // number fails with EBADF.
    let st = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if st < 0 {
        return Err(ConsoleError::CtlFd(fd));
    }
    // SAFETY: the descriptor is open (checked above); the supervisor passed
    // this number for us alone and nothing else in this process uses it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match nix::sys::socket::getsockopt(&owned, nix::sys::socket::sockopt::SockType) {
        Ok(_) => Ok(owned),
        Err(_) => Err(ConsoleError::CtlFd(fd)),
    }
}

/// A running console.
pub struct Console {
    pub(crate) tty_name: String,
    pub(crate) tty: File,
    ctl: OwnedFd,
    pending: Vec<u8>,
    /// The state partition's mount point (identity, audit log).
    pub(crate) state_root: PathBuf,
    /// The state root must be a mount point of its own (false in tests).
    require_mount: bool,
    pub(crate) policy: Policy,
    pub(crate) login: Option<Login>,
    /// Sticks held mounted read-only between commands (`usb`, `eject`).
    pub(crate) sticks: crate::stickhold::Holder,
    last_input: Instant,
}

impl Console {
    /// Opens `/dev/TTY` and sets the line discipline: canonical input with
    /// echo, CR read as NL, NL written as CR NL, no signals from keys, no
    /// end-of-file character (^D is an ordinary, refused character).
    pub fn open(tty_name: &str, ctl: OwnedFd) -> Result<Console, ConsoleError> {
        use std::os::unix::fs::OpenOptionsExt;
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(format!("/dev/{tty_name}"))
            .map_err(|source| ConsoleError::Open {
                tty: tty_name.into(),
                source,
            })?;
        let mut c = Console::attach(tty_name, tty, ctl)?;
        c.require_mount = true;
        c.policy = load_policy();
        // Panics and stray prints of this process land on its tty.
        let _ = nix::unistd::dup2_stdout(&c.tty);
        let _ = nix::unistd::dup2_stderr(&c.tty);
        Ok(c)
    }

    /// Sets up an open terminal (also used by tests with a pty).
    pub fn attach(tty_name: &str, tty: File, ctl: OwnedFd) -> Result<Console, ConsoleError> {
        let mut t = termios::tcgetattr(&tty).map_err(|errno| ConsoleError::NotATty {
            tty: tty_name.into(),
            errno,
        })?;
        t.local_flags |=
            LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ECHOE | LocalFlags::ECHOK;
        t.local_flags &= !(LocalFlags::ISIG | LocalFlags::IEXTEN);
        t.input_flags |= InputFlags::ICRNL;
        t.input_flags &= !(InputFlags::INLCR | InputFlags::IGNCR);
        t.output_flags |= OutputFlags::OPOST | OutputFlags::ONLCR;
        t.control_chars[SpecialCharacterIndices::VEOF as usize] = 0;
        termios::tcsetattr(&tty, SetArg::TCSANOW, &t).map_err(|errno| ConsoleError::Termios {
            tty: tty_name.into(),
            errno,
        })?;
        // Whatever was typed before we were ready is discarded.
        let _ = termios::tcflush(&tty, FlushArg::TCIFLUSH);
        Ok(Console {
            tty_name: tty_name.into(),
            tty,
            ctl,
            pending: Vec::new(),
            state_root: PathBuf::from(crate::mounts::STATE_MOUNT),
            require_mount: false,
            policy: Policy::default(),
            login: None,
            sticks: crate::stickhold::Holder::new(tty_name),
            last_input: Instant::now(),
        })
    }

    /// Uses `root` as the state partition and `policy` (tests).
    pub fn with_state(mut self, root: &std::path::Path, policy: Policy) -> Console {
        self.state_root = root.to_path_buf();
        self.policy = policy;
        self
    }

    /// The prompt: `airlock> `, or `airlock alice@operator> ` when logged in.
    pub fn prompt(&self) -> String {
        match &self.login {
            Some(l) => format!("airlock {}@{}> ", l.session.name(), l.session.role()),
            None => PROMPT.to_string(),
        }
    }

    /// The state partition is there (mounted on its own when required).
    pub(crate) fn state_ready(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let here = std::fs::metadata(&self.state_root).map_err(|e| {
            format!(
                "no state partition ({}: {e}); see 'status'",
                self.state_root.display()
            )
        })?;
        if self.require_mount {
            let root = std::fs::metadata("/").map_err(|e| format!("stat /: {e}"))?;
            if here.dev() == root.dev() {
                return Err("no state partition is mounted; see 'status'".into());
            }
        }
        Ok(())
    }

    /// Whether the appliance is provisioned (a damaged identity counts as
    /// provisioned, so provisioning is never offered over it).
    pub(crate) fn provisioned(&self) -> bool {
        if self.state_ready().is_err() {
            return false;
        }
        crate::identity::vault::is_provisioned(&self.state_root).unwrap_or(true)
    }

    /// The logged-in account, or `system`.
    pub(crate) fn who(&self) -> (String, Role) {
        match &self.login {
            Some(l) => (l.session.name().to_string(), l.session.role()),
            None => (SYSTEM_ACCOUNT.to_string(), Role::System),
        }
    }

    /// Sends an audit request and waits for PID 1's answer.
    pub(crate) fn request_done(&mut self, r: Request) -> Result<String, String> {
        self.send(r)
            .map_err(|e| format!("the supervisor is not reachable: {e}"))?;
        match self.wait_reply(Duration::from_secs(15), |r| matches!(r, Reply::Done(_))) {
            Some(Reply::Done(t)) => match t.strip_prefix("err ") {
                Some(why) => Err(why.to_string()),
                None => Ok(t),
            },
            _ => Err("the supervisor did not answer within 15 s".into()),
        }
    }

    /// Records a draft (fsynced by PID 1 before this returns Ok).
    pub(crate) fn audit(&mut self, d: Draft) -> Result<(), String> {
        self.request_done(Request::Audit(d.encode())).map(|_| ())
    }

    /// Whether audited actions may run now (the log is open and healthy).
    pub(crate) fn audit_writable(&mut self) -> Result<(), String> {
        self.request_done(Request::AuditCheck)
            .map(|_| ())
            .map_err(|e| {
                format!("the audit log cannot be written ({e}); audited actions are refused")
            })
    }

    /// Records `d`, then shows `message`; says so plainly when the record
    /// failed after the action was done.
    pub(crate) fn audited(&mut self, d: Draft, message: &str) {
        match self.audit(d) {
            Ok(()) => self.out(&format!("{message}\n")),
            Err(e) => self.out(&format!(
                "{message}\nBUT NOT RECORDED: the audit log failed ({e}); further audited actions are refused\n"
            )),
        }
    }

    /// Asks PID 1 to restart the PC (it says so on every console);
    /// `false` when PID 1 is not reachable.
    pub(crate) fn request_reboot(&mut self) -> bool {
        if self.send(Request::Reboot).is_err() {
            self.out("reboot: the supervisor is not reachable\n");
            return false;
        }
        true
    }

    pub(crate) fn out(&mut self, text: &str) {
        let _ = self.tty.write_all(text.as_bytes());
    }

    fn send(&self, r: Request) -> Result<(), ConsoleError> {
        send(self.ctl.as_raw_fd(), &r.encode(), MsgFlags::MSG_NOSIGNAL)
            .map(|_| ())
            .map_err(ConsoleError::Ctl)
    }

    /// Waits for a reply matching `want` for at most `timeout`; notices
    /// that arrive meanwhile are printed first. `None` on timeout or EOF.
    fn wait_reply(&mut self, timeout: Duration, want: fn(&Reply) -> bool) -> Option<Reply> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(_) => return None,
            }
            match self.recv_reply() {
                RecvResult::Reply(r) if want(&r) => return Some(r),
                RecvResult::Reply(Reply::Notice(n)) => {
                    self.out(&format!("{}\n", crate::screen::line(&n)))
                }
                RecvResult::Reply(_) | RecvResult::Nothing => {}
                RecvResult::Closed => return None,
            }
        }
    }

    fn recv_reply(&mut self) -> RecvResult {
        let mut buf = vec![0u8; MAX_MSG + 1];
        match recv(self.ctl.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => RecvResult::Closed,
            Ok(n) => match Reply::decode(buf.get(..n).unwrap_or(&[])) {
                Ok(r) => RecvResult::Reply(r),
                Err(e) => {
                    log::warn!("console {}: {e}", self.tty_name);
                    RecvResult::Nothing
                }
            },
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => RecvResult::Nothing,
            Err(_) => RecvResult::Closed,
        }
    }

    /// The console's main loop; returns the exit status.
    pub fn run(&mut self) -> u8 {
        let slot = Some(crate::system::slot_label());
        let demo = std::fs::read_to_string("/etc/os-release")
            .map(|s| is_demo(&s))
            .unwrap_or(false);
        self.out(&format!(
            "\n{}",
            banner(crate::VERSION, slot.as_deref(), demo)
        ));
        if self.send(Request::Up).is_err() {
            return 0;
        }
        match self.wait_reply(Duration::from_secs(10), |r| matches!(r, Reply::Ready(_))) {
            Some(Reply::Ready(text)) => self.out(&format!("{}\n", crate::screen::lines(&text))),
            _ => self.out("airlock: the supervisor did not answer; commands may not work\n"),
        }
        if !self.provisioned() {
            self.out("not provisioned: type 'provision' to create the accounts and keys\n");
        }
        let p = self.prompt();
        self.out(&p);
        loop {
            let idle = Duration::from_secs(self.policy.idle_logout_s);
            let timeout = match &self.login {
                Some(_) => {
                    let left = idle.saturating_sub(self.last_input.elapsed());
                    if left.is_zero() {
                        self.end_login(Some("idle"));
                        let p = self.prompt();
                        self.out(&p);
                        continue;
                    }
                    PollTimeout::from(
                        u16::try_from(left.as_millis().min(60_000))
                            .unwrap_or(60_000)
                            .max(1),
                    )
                }
                None => PollTimeout::NONE,
            };
            let (tty_ev, ctl_ev) = {
                let mut fds = [
                    PollFd::new(self.tty.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(_) => return 1,
                }
                (
                    fds[0].revents().unwrap_or(PollFlags::empty()),
                    fds[1].revents().unwrap_or(PollFlags::empty()),
                )
            };
            if !ctl_ev.is_empty() {
                match self.recv_reply() {
                    RecvResult::Reply(Reply::Notice(n)) => {
                        let p = self.prompt();
                        self.out(&format!("\n{}\n{p}", crate::screen::line(&n)));
                    }
                    RecvResult::Reply(Reply::Ready(n)) => {
                        let p = self.prompt();
                        self.out(&format!("\n{}\n{p}", crate::screen::lines(&n)));
                    }
                    RecvResult::Reply(Reply::Status(_) | Reply::Done(_)) | RecvResult::Nothing => {}
                    RecvResult::Closed => return 0,
                }
            }
            if !tty_ev.is_empty() {
                self.last_input = Instant::now();
                let mut buf = [0u8; 4096];
                match self.tty.read(&mut buf) {
                    Ok(0) => return EXIT_HANGUP,
                    Ok(n) => self.pending.extend_from_slice(buf.get(..n).unwrap_or(&[])),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::Interrupted
                            || e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return EXIT_HANGUP,
                }
                while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(line.get(..pos).unwrap_or(&[])).into_owned();
                    // No prompt once a shutdown was asked for and accepted.
                    if self.handle_line(&text) {
                        self.last_input = Instant::now();
                        let p = self.prompt();
                        self.out(&p);
                    }
                }
                if self.pending.len() > commands::MAX_LINE * 16 {
                    self.pending.clear();
                    let p = self.prompt();
                    self.out(&format!("\n{}\n{p}", commands::GrammarError::TooLong));
                }
            }
        }
    }

    /// Handles one line; false when no prompt should follow (shutting down).
    fn handle_line(&mut self, line: &str) -> bool {
        match commands::parse(line) {
            Ok(None) => true,
            Ok(Some(cmd)) => self.execute(cmd),
            Err(e) => {
                self.out(&format!("{e}\n"));
                true
            }
        }
    }

    fn execute(&mut self, cmd: Command) -> bool {
        let provisioned = self.provisioned();
        let who = self
            .login
            .as_ref()
            .map(|l| (l.session.name().to_string(), l.session.role()));
        if let Err(refusal) = crate::roles::check(
            cmd.name(),
            provisioned,
            who.as_ref().map(|(n, r)| (n.as_str(), *r)),
        ) {
            self.out(&format!("{refusal}\n"));
            let (account, role) = self.who();
            let d = if account == SYSTEM_ACCOUNT {
                Draft::system(Action::Command, Outcome::Refused, None)
            } else {
                Draft::by(&account, role, Action::Command, Outcome::Refused)
            }
            .reason(&refusal.code())
            .detail(format!("{}: {}", self.tty_name, cmd.name()));
            if let Err(e) = self.audit(d) {
                self.out(&format!(
                    "(the audit log could not record this refusal: {e})\n"
                ));
            }
            return true;
        }
        match cmd {
            Command::Help(None) if !provisioned => self.out(&commands::help_unprovisioned()),
            Command::Help(None) => self.out(&commands::help_all()),
            Command::Help(Some(c)) => self.out(&commands::help_one(c)),
            Command::Status => {
                if self.send(Request::Status).is_err() {
                    self.out("status: the supervisor is not reachable\n");
                    return true;
                }
                match self.wait_reply(Duration::from_secs(5), |r| matches!(r, Reply::Status(_))) {
                    Some(Reply::Status(text)) => self.out(&crate::screen::lines(&text)),
                    _ => self.out("status: the supervisor did not answer within 5 s\n"),
                }
            }
            Command::Selftest => {
                self.out("selftest: running the sandbox probe suite, this takes a while...\n");
                let text = crate::selftest::run(std::path::Path::new(crate::selftest::PROBE));
                self.out(&crate::screen::lines(&text));
                let (account, role) = self.who();
                let failed = !text.contains(" 0 failed");
                let mut d = Draft::by(
                    &account,
                    role,
                    Action::Selftest,
                    if failed { Outcome::Failed } else { Outcome::Ok },
                );
                if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                    d = d.detail(
                        crate::screen::line(last)
                            .chars()
                            .take(200)
                            .collect::<String>(),
                    );
                }
                if let Err(e) = self.audit(d) {
                    self.out(&format!(
                        "(the audit log could not record the selftest: {e})\n"
                    ));
                }
            }
            Command::Provision => self.cmd_provision(),
            Command::Login(name) => self.cmd_login(&name),
            Command::Logout => self.end_login(None),
            Command::Whoami => self.cmd_whoami(),
            Command::Accounts => self.cmd_accounts(),
            Command::AccountAdd { name, role } => self.cmd_account_add(&name, &role),
            Command::AccountRemove(name) => self.cmd_account_remove(&name),
            Command::Passwd => self.cmd_passwd(),
            Command::KeysShow => self.cmd_keys_show(),
            Command::KeysExport(stick) => self.cmd_keys_export(stick.as_deref()),
            Command::KeysRotate(algo) => self.cmd_keys_rotate(algo.as_deref()),
            Command::ClockSet(t) => self.cmd_clock_set(&t),
            Command::AuditShow(n) => self.cmd_audit_show(n.unwrap_or(20)),
            Command::AuditExport(stick) => self.cmd_audit_export(stick.as_deref()),
            Command::Import => self.cmd_import(),
            Command::Models => self.cmd_models(),
            Command::Activate { name, version } => self.cmd_activate(&name, version),
            Command::Rollback(name) => self.cmd_rollback(&name),
            Command::Remove { name, version } => self.cmd_remove(&name, version),
            Command::Usb => self.cmd_usb(),
            Command::Eject(stick) => self.cmd_eject(stick.as_deref()),
            Command::Run(rest) => self.cmd_run(&rest),
            Command::Batch(rest) => self.cmd_batch(&rest),
            Command::SystemShow => self.cmd_system_show(),
            Command::SystemRebootToNew => {
                if self.cmd_system_reboot_to_new() {
                    return false;
                }
            }
            Command::SystemRetry => self.cmd_system_retry(),
            Command::SystemClear => self.cmd_system_clear(),
            Command::Poweroff => {
                // PID 1 writes "airlock: powering off" on every console itself.
                if self.send(Request::Poweroff).is_err() {
                    self.out("poweroff: the supervisor is not reachable\n");
                    return true;
                }
                return false;
            }
            Command::Reboot => {
                // PID 1 writes "airlock: rebooting" on every console itself.
                if self.send(Request::Reboot).is_err() {
                    self.out("reboot: the supervisor is not reachable\n");
                    return true;
                }
                return false;
            }
        }
        true
    }
}

/// The image's policy file, tightened by the kernel command line; the
/// compiled-in defaults (and a log line) when the file is unreadable.
fn load_policy() -> Policy {
    use crate::identity::policy::POLICY_PATH;
    let mut p = match Policy::from_file(std::path::Path::new(POLICY_PATH)) {
        Ok(p) => p,
        Err(e) => {
            log::error!("policy: {e}; using the compiled-in defaults");
            Policy::default()
        }
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for e in p.tighten(cmdline.split_ascii_whitespace()) {
        log::warn!("policy: {e}");
    }
    p
}

enum RecvResult {
    Reply(Reply),
    Nothing,
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_format() {
        let b = banner("0.1.0", Some("a"), true);
        assert!(b.starts_with("Airlock 0.1.0 (slot a) DEMO\n"), "{b}");
        assert!(banner("0.1.0", None, false).starts_with("Airlock 0.1.0 (slot unknown)\n"));
    }

    #[test]
    fn demo_variant() {
        assert!(is_demo("NAME=Airlock\nVARIANT_ID=demo\n"));
        assert!(is_demo("VARIANT_ID=\"demo\"\n"));
        assert!(!is_demo("NAME=Airlock\nVARIANT_ID=production\n"));
        assert!(!is_demo(""));
    }

    #[test]
    fn console_args() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&a(&["ttyS0", "--ctl-fd", "5"])).unwrap_or_default(),
            ("ttyS0".into(), 5)
        );
        assert!(parse_args(&a(&["../mem", "--ctl-fd", "5"])).is_err());
        assert!(parse_args(&a(&["ttyS0", "--ctl-fd", "1"])).is_err());
        assert!(parse_args(&a(&["ttyS0"])).is_err());
    }
}
