//! What a console session does for the identity commands: provisioning,
//! login and logout (with the idle timer), accounts, keys, the clock and
//! the auditor's view of the log. Every outcome is audited through PID 1
//! (`Console::audit`) before it is shown; the identity itself is in
//! `identity::vault`, the export to a stick in `stickwrite`.

use crate::auditd::Draft;
use crate::console::Console;
use crate::identity::pgpkey::{self, KeyAlgo};
use crate::identity::store;
use crate::identity::tally;
use crate::identity::vault::{self, LoginError, NewAccount, Session};
use crate::prompt::{self, PromptError};
use airlock_formats::audit::entry::{validate_account, Action, Entry, Outcome, Role};
use airlock_formats::audit::layout;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long a prompt inside a command waits for an answer.
pub const PROMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest name or choice typed at a prompt.
pub const MAX_ANSWER: usize = 64;

/// The account logged in on a console.
pub struct Login {
    pub session: Session,
    pub since: Instant,
}

/// Wall-clock now, UNIX seconds.
pub fn wall_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-12-04 09:12:00` (UTC) of UNIX seconds.
pub fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SSZ` to UNIX seconds (years 2000-2199).
pub fn parse_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(2000..2200).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let dim = match mo {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d == 0 || d > dim {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + se)).ok()
}

fn parse_role(s: &str) -> Option<Role> {
    match s {
        "operator" => Some(Role::Operator),
        "officer" => Some(Role::Officer),
        "auditor" => Some(Role::Auditor),
        _ => None,
    }
}

impl Console {
    /// Asks with echo (names, choices).
    fn ask(&mut self, q: &str) -> Result<String, PromptError> {
        prompt::ask(&mut self.tty, q, true, MAX_ANSWER, PROMPT_TIMEOUT).map(|z| z.to_string())
    }

    /// Asks for a passphrase (no echo).
    fn ask_secret(&mut self, q: &str) -> Result<Zeroizing<String>, PromptError> {
        prompt::ask(
            &mut self.tty,
            q,
            false,
            vault::MAX_PASSPHRASE_BYTES,
            PROMPT_TIMEOUT,
        )
    }

    /// A new passphrase for `name`, typed twice and checked against the
    /// policy; three tries. `Err` when cancelled or the tries ran out.
    fn new_passphrase(&mut self, name: &str) -> Result<Zeroizing<String>, String> {
        let min = self.policy.passphrase_min_chars;
        let first_q = format!("Passphrase for {name} (at least {min} characters, not shown): ");
        for _ in 0..3 {
            let Some(first) = self.ask_secret_retry(&first_q)? else {
                continue;
            };
            if let Err(e) = vault::check_passphrase(&self.policy, &first) {
                self.out(&format!("{e}; try again\n"));
                continue;
            }
            let Some(again) = self.ask_secret_retry("Repeat the passphrase: ")? else {
                continue;
            };
            if *first != *again {
                self.out("the two passphrases differ; try again\n");
                continue;
            }
            return Ok(first);
        }
        Err("three tries without a valid passphrase".into())
    }

    /// A passphrase answer: `Ok(None)` after a refused answer (said on the
    /// console; ask again), `Err` when cancelled, timed out or hung up.
    fn ask_secret_retry(&mut self, q: &str) -> Result<Option<Zeroizing<String>>, String> {
        match self.ask_secret(q) {
            Ok(p) => Ok(Some(p)),
            Err(
                e @ (PromptError::TooLong(_) | PromptError::ControlChar | PromptError::NotUtf8),
            ) => {
                self.out(&format!("{e}\n"));
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// `provision`: accounts, keys, then the audit log is opened.
    pub(crate) fn cmd_provision(&mut self) {
        if let Err(why) = self.state_ready() {
            self.out(&format!("provision: {why}\n"));
            return;
        }
        self.out(
            "Provisioning creates the accounts (a name and one role each: at least one operator,\n\
             one officer and one auditor) and the appliance's keys. ^C cancels; nothing is\n\
             written before the final confirmation.\n",
        );
        let default = self.policy.document_key;
        let algo = loop {
            match self.ask(&format!(
                "Document key algorithm, ed25519 or rsa4096 [{default}]: "
            )) {
                Ok(a) if a.is_empty() => break default,
                Ok(a) => match a.parse::<KeyAlgo>() {
                    Ok(k) => break k,
                    Err(_) => self.out("type ed25519 or rsa4096\n"),
                },
                Err(e) => return self.out(&format!("provisioning {e}; nothing was written\n")),
            }
        };
        let mut accounts: Vec<NewAccount> = Vec::new();
        loop {
            let missing: Vec<String> = vault::ROLES
                .iter()
                .filter(|r| !accounts.iter().any(|a| a.role == **r))
                .map(|r| r.to_string())
                .collect();
            let name = match self.ask("Account name (Enter alone when done): ") {
                Ok(n) => n,
                Err(e) => return self.out(&format!("provisioning {e}; nothing was written\n")),
            };
            if name.is_empty() {
                if missing.is_empty() {
                    break;
                }
                self.out(&format!(
                    "still needed: an account of each role: {}\n",
                    missing.join(", ")
                ));
                continue;
            }
            if validate_account(&name).is_err() {
                self.out("a name is 1-32 of a-z 0-9 . _ -\n");
                continue;
            }
            if accounts.iter().any(|a| a.name == name) || name == "system" {
                self.out(&format!("{name} is taken\n"));
                continue;
            }
            let role = loop {
                match self.ask(&format!("Role of {name} (operator, officer, auditor): ")) {
                    Ok(r) => match parse_role(&r) {
                        Some(role) => break role,
                        None => self.out("type operator, officer or auditor\n"),
                    },
                    Err(e) => return self.out(&format!("provisioning {e}; nothing was written\n")),
                }
            };
            let passphrase = match self.new_passphrase(&name) {
                Ok(p) => p,
                Err(why) => {
                    return self.out(&format!(
                        "provisioning cancelled ({why}); nothing was written\n"
                    ))
                }
            };
            accounts.push(NewAccount {
                name,
                role,
                passphrase,
            });
        }
        let list = accounts
            .iter()
            .map(|a| format!("{} ({})", a.name, a.role))
            .collect::<Vec<_>>()
            .join(", ");
        match self.ask(&format!(
            "Create {list} and a {algo} document key? Type yes to go on: "
        )) {
            Ok(a) if a == "yes" => {}
            Ok(_) => return self.out("provisioning cancelled; nothing was written\n"),
            Err(e) => return self.out(&format!("provisioning {e}; nothing was written\n")),
        }
        self.out("Generating the keys...\n");
        let root = self.state_root.clone();
        match vault::provision(&root, &self.policy, &accounts, algo, wall_now()) {
            Ok(p) => {
                drop(accounts);
                if let Err(e) = self.request_done(crate::control::Request::AuditOpen) {
                    self.out(&format!(
                        "WARNING: the audit log could not be opened: {e}\n"
                    ));
                }
                let detail = format!(
                    "accounts={} document={algo}:{}",
                    p.accounts
                        .iter()
                        .map(|(n, r)| format!("{n}:{r}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    p.document_fingerprint
                );
                let _ = self.audit(Draft::system(
                    Action::Provision,
                    Outcome::Ok,
                    Some(detail.chars().take(256).collect()),
                ));
                self.out(&format!(
                    "Provisioned appliance {}.\ndocument key ({algo}): {}\naudit key:            {}\n\
                     Log in with 'login NAME'.\n",
                    p.appliance_id,
                    pgpkey::grouped(&p.document_fingerprint),
                    p.audit_fingerprint
                ));
            }
            Err(e) => {
                let _ = self.audit(
                    Draft::system(Action::Provision, Outcome::Failed, None)
                        .reason("provision-failed"),
                );
                self.out(&format!("provisioning failed: {e}; nothing was kept\n"));
            }
        }
    }

    /// `login NAME`.
    pub(crate) fn cmd_login(&mut self, name: &str) {
        if let Some(l) = &self.login {
            let who = l.session.name().to_string();
            self.out(&format!("already logged in as {who}; 'logout' first\n"));
            return;
        }
        if let Err(why) = self.audit_writable() {
            self.out(&format!("login refused: {why}\n"));
            return;
        }
        // Unknown or malformed names are recorded under `system`.
        let known = validate_account(name).is_ok();
        let attempt = |role: Role| {
            if known && role != Role::System {
                Draft::by(name, role, Action::Login, Outcome::Refused)
            } else {
                Draft::system(Action::Login, Outcome::Refused, None)
            }
        };
        let tty = self.tty_name.clone();
        let role_of = store::load(&self.state_root)
            .ok()
            .flatten()
            .and_then(|id| id.account(name).map(|a| a.role))
            .unwrap_or(Role::System);
        let pass = match self.ask_secret(&format!("Passphrase for {name}: ")) {
            Ok(p) => p,
            Err(e) => {
                let code = match e {
                    PromptError::Cancelled => "cancelled",
                    PromptError::Timeout(_) => "prompt-timeout",
                    _ => "bad-input",
                };
                let _ = self.audit(attempt(role_of).reason(code).detail(tty));
                self.out(&format!("login {e}\n"));
                return;
            }
        };
        let root = self.state_root.clone();
        match vault::unlock(&root, &self.policy, name, &pass, wall_now()) {
            Ok(session) => {
                drop(pass);
                let role = session.role();
                let d = Draft::by(name, role, Action::Login, Outcome::Ok).detail(tty.clone());
                if let Err(e) = self.audit(d) {
                    self.out(&format!(
                        "login refused: the audit log cannot record it: {e}\n"
                    ));
                    return;
                }
                let hold = format!(
                    "{name} {role} {}",
                    crate::auditd::seed_to_hex(session.audit_seed()).as_str()
                );
                if let Err(e) = self.request_done(crate::control::Request::KeyHold(hold)) {
                    self.out(&format!("warning: no audit checkpoint signed: {e}\n"));
                }
                self.out(&format!("logged in as {name} ({role})\n"));
                if role == Role::Operator {
                    match vault::grant_pending(&root, &session) {
                        Ok(granted) => {
                            for (account, purpose) in granted {
                                let _ = self.audit(
                                    Draft::by(name, role, Action::KeyGrant, Outcome::Ok)
                                        .detail(format!("{purpose} to {account}")),
                                );
                                self.out(&format!("granted {purpose} to {account}\n"));
                            }
                        }
                        Err(e) => self.out(&format!("warning: pending key grants: {e}\n")),
                    }
                }
                self.login = Some(Login {
                    session,
                    since: Instant::now(),
                });
            }
            Err(LoginError::WrongPassphrase {
                failures,
                delay,
                locked_now,
            }) => {
                drop(pass);
                let _ = self.audit(
                    attempt(role_of)
                        .reason("wrong-passphrase")
                        .detail(tty.clone()),
                );
                if locked_now {
                    let _ = self.audit(
                        Draft::by(name, role_of, Action::Lockout, Outcome::Ok)
                            .reason("too-many-failures")
                            .detail(format!("{failures} failures, {} s", self.policy.lockout_s)),
                    );
                    self.out(&format!(
                        "login refused: wrong name or passphrase; {name} is now locked for {} minutes\n",
                        self.policy.lockout_s / 60
                    ));
                } else {
                    self.out(&format!(
                        "login refused: wrong name or passphrase (wait {} s)\n",
                        delay.as_secs()
                    ));
                }
                std::thread::sleep(delay);
            }
            Err(LoginError::UnknownAccount) => {
                drop(pass);
                let _ = self.audit(
                    Draft::system(Action::Login, Outcome::Refused, None)
                        .reason("unknown-account")
                        .detail(tty),
                );
                let d = Duration::from_millis(self.policy.failure_delay_ms(1));
                self.out(&format!(
                    "login refused: wrong name or passphrase (wait {} s)\n",
                    d.as_secs()
                ));
                std::thread::sleep(d);
            }
            Err(LoginError::Locked { until, failures }) => {
                let _ = self.audit(attempt(role_of).reason("locked").detail(tty));
                self.out(&format!(
                    "login refused: {name} is locked until {} UTC ({failures} failed logins)\n",
                    utc(until)
                ));
            }
            Err(e) => {
                let _ = self.audit(attempt(role_of).reason("login-error").detail(tty));
                self.out(&format!("login failed: {e}\n"));
            }
        }
    }

    /// Ends the login (`why`: None for `logout`, `idle` for the timer).
    pub(crate) fn end_login(&mut self, why: Option<&str>) {
        let Some(l) = self.login.take() else {
            return;
        };
        let mut d = Draft::by(
            l.session.name(),
            l.session.role(),
            Action::Logout,
            Outcome::Ok,
        )
        .detail(self.tty_name.clone());
        if let Some(w) = why {
            d = d.reason(w);
        }
        if let Err(e) = self.audit(d) {
            self.out(&format!("warning: the logout was not recorded: {e}\n"));
        }
        if let Err(e) = self.request_done(crate::control::Request::KeyDrop) {
            self.out(&format!("warning: no audit checkpoint signed: {e}\n"));
        }
        let name = l.session.name().to_string();
        drop(l); // zeroizes the session's secrets
        match why {
            Some("idle") => self.out(&format!(
                "\n{name} logged out after {} minutes without input\n",
                self.policy.idle_logout_s / 60
            )),
            _ => self.out(&format!("{name} logged out\n")),
        }
    }

    pub(crate) fn cmd_whoami(&mut self) {
        if let Some(l) = &self.login {
            let text = format!(
                "{} ({}) on {}, logged in for {} min\n",
                l.session.name(),
                l.session.role(),
                self.tty_name,
                l.since.elapsed().as_secs() / 60
            );
            self.out(&text);
        }
    }

    pub(crate) fn cmd_accounts(&mut self) {
        let id = match store::load(&self.state_root) {
            Ok(Some(id)) => id,
            Ok(None) => return self.out("accounts: not provisioned\n"),
            Err(e) => return self.out(&format!("accounts: {e}\n")),
        };
        let mut t = tally::load(&self.state_root).unwrap_or_default();
        let now = wall_now();
        let mut text = String::new();
        for a in &id.accounts {
            let lock = match t.accounts.get_mut(&a.name) {
                Some(e) => match tally::check(e, &self.policy, now).0 {
                    tally::Verdict::Locked { until, .. } => {
                        format!("locked until {} UTC", utc(until))
                    }
                    tally::Verdict::Open if e.failures > 0 => {
                        format!("{} failed login(s)", e.failures)
                    }
                    tally::Verdict::Open => "ok".into(),
                },
                None => "ok".into(),
            };
            let pending = a.role == Role::Operator
                && id.document_keys.iter().any(|k| {
                    id.grant(&a.name, &vault::document_purpose(&k.fingerprint))
                        .is_none()
                });
            text.push_str(&format!(
                "{:<20} {:<9} {}{}\n",
                a.name,
                a.role,
                lock,
                if pending {
                    ", document key pending (granted at the next login of another operator)"
                } else {
                    ""
                }
            ));
        }
        self.out(&text);
    }

    pub(crate) fn cmd_account_add(&mut self, name: &str, role: &str) {
        let Some(role) = parse_role(role) else {
            return self.out("account add: ROLE is operator, officer or auditor\n");
        };
        if validate_account(name).is_err() || name == "system" {
            return self.out("account add: a name is 1-32 of a-z 0-9 . _ - (not 'system')\n");
        }
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("account add refused: {why}\n"));
        }
        let passphrase = match self.new_passphrase(name) {
            Ok(p) => p,
            Err(why) => {
                return self.out(&format!("account add cancelled ({why}); nothing changed\n"))
            }
        };
        let Some(l) = &self.login else { return };
        let (me, my_role) = (l.session.name().to_string(), l.session.role());
        let r = vault::add_account(
            &self.state_root,
            &self.policy,
            &l.session,
            NewAccount {
                name: name.into(),
                role,
                passphrase,
            },
        );
        match r {
            Ok(pending) => {
                self.audited(
                    Draft::by(&me, my_role, Action::AccountAdd, Outcome::Ok)
                        .detail(format!("{name} {role}")),
                    &format!("account {name} ({role}) added"),
                );
                if !pending.is_empty() {
                    self.out(&format!(
                        "pending for {name}: {} (granted at the next login of another operator)\n",
                        pending.join(", ")
                    ));
                }
            }
            Err(e) => {
                let _ = self.audit(
                    Draft::by(&me, my_role, Action::AccountAdd, Outcome::Refused)
                        .reason("account-add-refused")
                        .detail(format!("{name} {role}")),
                );
                self.out(&format!("account add refused: {e}\n"));
            }
        }
    }

    pub(crate) fn cmd_account_remove(&mut self, name: &str) {
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("account remove refused: {why}\n"));
        }
        let Some(l) = &self.login else { return };
        let (me, my_role) = (l.session.name().to_string(), l.session.role());
        let shown = crate::screen::line(name).into_owned();
        match vault::remove_account(&self.state_root, &l.session, name) {
            Ok(()) => self.audited(
                Draft::by(&me, my_role, Action::AccountRemove, Outcome::Ok).detail(shown.clone()),
                &format!("account {shown} removed"),
            ),
            Err(e) => {
                let _ = self.audit(
                    Draft::by(&me, my_role, Action::AccountRemove, Outcome::Refused)
                        .reason("account-remove-refused")
                        .detail(shown),
                );
                self.out(&format!("account remove refused: {e}\n"));
            }
        }
    }

    pub(crate) fn cmd_passwd(&mut self) {
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("passwd refused: {why}\n"));
        }
        let Some(name) = self.login.as_ref().map(|l| l.session.name().to_string()) else {
            return;
        };
        let new = match self.new_passphrase(&name) {
            Ok(p) => p,
            Err(why) => return self.out(&format!("passwd cancelled ({why}); nothing changed\n")),
        };
        let Some(l) = &self.login else { return };
        let role = l.session.role();
        match vault::change_passphrase(&self.state_root, &self.policy, &l.session, &new) {
            Ok(()) => self.audited(
                Draft::by(&name, role, Action::PassphraseChange, Outcome::Ok),
                "passphrase changed",
            ),
            Err(e) => {
                let _ = self.audit(
                    Draft::by(&name, role, Action::PassphraseChange, Outcome::Failed)
                        .reason("passwd-failed"),
                );
                self.out(&format!("passwd failed: {e}\n"));
            }
        }
    }

    pub(crate) fn cmd_keys_show(&mut self) {
        match vault::public_keys(&self.state_root) {
            Ok(k) => {
                let mut t = format!("appliance: {}\n", k.appliance_id);
                for d in k.document_keys.iter().rev() {
                    t.push_str(&format!(
                        "document key {} ({}, created {} UTC{}):\n  {}\n",
                        if d.active { "ACTIVE" } else { "old" },
                        d.algorithm,
                        utc(d.created),
                        if d.active {
                            ""
                        } else {
                            ", kept for old documents"
                        },
                        pgpkey::grouped(&d.fingerprint)
                    ));
                }
                t.push_str(&format!(
                    "audit key:\n  {}\n  {}\n",
                    k.audit_fingerprint, k.audit_verifier
                ));
                self.out(&t);
            }
            Err(e) => self.out(&format!("keys show: {e}\n")),
        }
    }

    pub(crate) fn cmd_keys_rotate(&mut self, algo: Option<&str>) {
        let algo = match algo.map(str::parse::<KeyAlgo>) {
            None => self.policy.document_key,
            Some(Ok(a)) => a,
            Some(Err(_)) => return self.out("keys rotate: the algorithm is ed25519 or rsa4096\n"),
        };
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("keys rotate refused: {why}\n"));
        }
        let Some(l) = &self.login else { return };
        let (me, role) = (l.session.name().to_string(), l.session.role());
        self.out("Generating the new document key...\n");
        let Some(l) = &self.login else { return };
        match vault::rotate_document_key(&self.state_root, &l.session, algo, wall_now()) {
            Ok(fpr) => self.audited(
                Draft::by(&me, role, Action::KeyRotate, Outcome::Ok).detail(format!("{algo}:{fpr}")),
                &format!(
                    "new active document key ({algo}):\n  {}\nthe old keys stay for old documents; export the new public key with 'keys export'",
                    pgpkey::grouped(&fpr)
                ),
            ),
            Err(e) => {
                let _ = self.audit(
                    Draft::by(&me, role, Action::KeyRotate, Outcome::Failed).reason("rotate-failed"),
                );
                self.out(&format!("keys rotate failed: {e}\n"));
            }
        }
    }

    pub(crate) fn cmd_keys_export(&mut self, stick: Option<&str>) {
        let keys = match vault::public_keys(&self.state_root) {
            Ok(k) => k,
            Err(e) => return self.out(&format!("keys export: {e}\n")),
        };
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("keys export refused: {why}\n"));
        }
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut fps = String::from("Airlock appliance public keys\n\n");
        for d in &keys.document_keys {
            let name = if d.active {
                "document-key.asc".to_string()
            } else {
                format!("document-key-old-{}.asc", &d.fingerprint)
            };
            fps.push_str(&format!(
                "{} document key ({}): {}\n",
                if d.active { "active" } else { "old" },
                d.algorithm,
                pgpkey::grouped(&d.fingerprint)
            ));
            files.push((name, d.public_armored.clone().into_bytes()));
        }
        fps.push_str(&format!("audit key: {}\n", keys.audit_fingerprint));
        files.push((
            layout::PUBKEY_FILE.into(),
            format!("{}\n", keys.audit_verifier).into_bytes(),
        ));
        fps.push_str(
            "\nImport the document key with: gpg --import document-key.asc\n\
             Compare the fingerprints aloud with the appliance's 'keys show'.\n",
        );
        files.push(("FINGERPRINTS.txt".into(), fps.into_bytes()));
        let dir = format!("airlock-keys-{}", utc(wall_now()).replace([' ', ':'], "-"));
        let (me, role) = self.who();
        match crate::stickwrite::write_new_dir(stick, &dir, &files) {
            Ok(w) => self.audited(
                Draft::by(&me, role, Action::KeyExport, Outcome::Ok)
                    .detail(format!("{} {dir}", w.device)),
                &format!(
                    "public keys written to {}: {dir}/ (stick can be pulled)",
                    w.device
                ),
            ),
            Err(e) => {
                let _ = self.audit(
                    Draft::by(&me, role, Action::KeyExport, Outcome::Failed)
                        .reason("export-failed"),
                );
                self.out(&format!("keys export failed: {e}\n"));
            }
        }
    }

    pub(crate) fn cmd_clock_set(&mut self, when: &str) {
        let Some(new) = parse_utc(when) else {
            return self.out("clock set: give the time as YYYY-MM-DDTHH:MM:SSZ (UTC)\n");
        };
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("clock set refused: {why}\n"));
        }
        let old = wall_now();
        let (me, role) = self.who();
        let ts = nix::sys::time::TimeSpec::new(i64::try_from(new).unwrap_or(0), 0);
        match nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
            Ok(()) => {
                let rtc = crate::rtc::write(std::path::Path::new("/dev/rtc0"), new);
                let mut d = Draft::by(&me, role, Action::ClockSet, Outcome::Ok);
                d.clock_from = Some(old);
                if let Err(e) = &rtc {
                    d = d.detail(format!("rtc not written: {e}"));
                }
                self.audited(
                    d,
                    &format!(
                        "clock set to {} UTC (was {} UTC){}",
                        utc(new),
                        utc(old),
                        match rtc {
                            Ok(()) => String::new(),
                            Err(e) => format!("; the real-time clock was not written: {e}"),
                        }
                    ),
                );
            }
            Err(e) => {
                let mut d = Draft::by(&me, role, Action::ClockSet, Outcome::Failed)
                    .reason("settime-failed");
                d.clock_from = Some(old);
                let _ = self.audit(d);
                self.out(&format!("clock set failed: {e}\n"));
            }
        }
    }

    pub(crate) fn cmd_audit_show(&mut self, n: usize) {
        let dir = store::audit_dir(&self.state_root);
        match last_entries(&dir, n) {
            Ok(entries) if entries.is_empty() => self.out("the audit log is empty\n"),
            Ok(entries) => {
                let mut t = format!(
                    "{:>6}  {:<19}  {:<12} {:<8} {:<15} {:<8} {}\n",
                    "seq", "time (UTC)", "account", "role", "action", "result", "reason / detail"
                );
                for e in entries {
                    let extra = [e.reason.clone(), e.detail.clone()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ");
                    t.push_str(&format!(
                        "{:>6}  {:<19}  {:<12} {:<8} {:<15} {:<8} {}\n",
                        e.seq,
                        utc(e.wall),
                        e.account,
                        e.role.to_string(),
                        e.action.to_string(),
                        e.result.to_string(),
                        crate::screen::line(&extra)
                    ));
                }
                self.out(&t);
            }
            Err(e) => self.out(&format!("audit show: {e}\n")),
        }
    }

    pub(crate) fn cmd_audit_export(&mut self, stick: Option<&str>) {
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("audit export refused: {why}\n"));
        }
        // A fresh checkpoint first, so every entry so far is protected.
        if let Err(e) = self.request_done(crate::control::Request::Checkpoint) {
            return self.out(&format!(
                "audit export refused: no checkpoint could be signed: {e}\n"
            ));
        }
        let src = store::audit_dir(&self.state_root);
        let files = match crate::stickwrite::log_files(&src) {
            Ok(f) => f,
            Err(e) => return self.out(&format!("audit export failed: {e}\n")),
        };
        let dir = format!("airlock-audit-{}", utc(wall_now()).replace([' ', ':'], "-"));
        let (me, role) = self.who();
        match crate::stickwrite::write_new_dir(stick, &dir, &files) {
            Ok(w) => self.audited(
                Draft::by(&me, role, Action::AuditExport, Outcome::Ok).detail(format!("{} {dir}", w.device)),
                &format!(
                    "audit log written to {}: {dir}/ ({} files); verify it on a connected machine with\n  airlock audit verify {dir} --key {dir}/audit.pub",
                    w.device,
                    files.len()
                ),
            ),
            Err(e) => {
                let _ = self.audit(
                    Draft::by(&me, role, Action::AuditExport, Outcome::Failed).reason("export-failed"),
                );
                self.out(&format!("audit export failed: {e}\n"));
            }
        }
    }
}

/// The newest `n` entries of the log in `dir` (read-only, strict parse).
pub fn last_entries(dir: &std::path::Path, n: usize) -> Result<Vec<Entry>, String> {
    let segs = layout::list_segments(dir).map_err(|e| e.to_string())?;
    let mut out: Vec<Entry> = Vec::new();
    for (_, path) in segs.iter().rev() {
        let seg = layout::read_segment(path).map_err(|e| e.to_string())?;
        let mut these: Vec<Entry> = Vec::new();
        for (_, line) in seg.lines.iter() {
            these.push(Entry::parse(line).map_err(|e| e.to_string())?);
        }
        these.append(&mut out);
        out = these;
        if out.len() >= n {
            break;
        }
    }
    let skip = out.len().saturating_sub(n);
    Ok(out.split_off(skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_round_trip() {
        let cases: &[(&str, u64)] = &[
            ("2000-01-01T00:00:00Z", 946_684_800),
            ("2026-12-04T09:12:00Z", 1_796_375_520),
            ("2024-02-29T23:59:59Z", 1_709_251_199),
        ];
        for (s, secs) in cases {
            assert_eq!(parse_utc(s), Some(*secs), "{s}");
            assert_eq!(utc(*secs), s.replace('T', " ").replace('Z', ""));
        }
        for bad in [
            "2026-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-12-04 09:12:00",
            "1999-12-31T23:59:59Z",
            "2026-13-01T00:00:00Z",
            "2026-12-04T24:00:00Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
