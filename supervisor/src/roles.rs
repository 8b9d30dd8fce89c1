//! Separation of duties: which session may run which console command.
//!
//! The table is data, one line per command with who may run it and why
//! (docs/roles.md prints it). An operator runs jobs and cannot change what
//! runs; an officer changes what runs (models, system, accounts, keys) and
//! cannot run jobs or read the audit log; an auditor only reads, exports
//! and verifies the audit log. Before provisioning only `provision`,
//! `status`, `help` and `poweroff` are offered.

use crate::commands::COMMANDS;
use airlock_formats::audit::entry::Role;
use thiserror::Error;

/// Who may run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Anyone at the console, logged in or not, provisioned or not.
    Anyone,
    /// Anyone, once the appliance is provisioned.
    AnyoneProvisioned,
    /// Only before provisioning.
    Unprovisioned,
    /// Any logged-in account.
    AnyAccount,
    /// A logged-in account of one of these roles.
    Roles(&'static [Role]),
}

/// One line of the table.
#[derive(Debug)]
pub struct Rule {
    pub command: &'static str,
    pub who: Who,
    pub why: &'static str,
}

const OPERATOR: &[Role] = &[Role::Operator];
const OFFICER: &[Role] = &[Role::Officer];
const AUDITOR: &[Role] = &[Role::Auditor];

/// The table (every command of `commands::COMMANDS` has exactly one line;
/// a test checks it).
pub const RULES: &[Rule] = &[
    Rule {
        command: "help",
        who: Who::Anyone,
        why: "explains the commands, reveals nothing",
    },
    Rule {
        command: "status",
        who: Who::Anyone,
        why: "lockdown and readiness must be checkable by whoever stands at the PC",
    },
    Rule {
        command: "poweroff",
        who: Who::Anyone,
        why: "whoever stands at the PC can pull the plug; a clean stop is better (audited)",
    },
    Rule {
        command: "provision",
        who: Who::Unprovisioned,
        why: "first boot only: creates the accounts and keys",
    },
    Rule {
        command: "reboot",
        who: Who::AnyoneProvisioned,
        why: "as poweroff; offered once provisioned",
    },
    Rule {
        command: "login",
        who: Who::AnyoneProvisioned,
        why: "the way in; failures are delayed, counted and audited",
    },
    Rule {
        command: "logout",
        who: Who::AnyAccount,
        why: "ends your own session",
    },
    Rule {
        command: "whoami",
        who: Who::AnyAccount,
        why: "shows your own session",
    },
    Rule {
        command: "passwd",
        who: Who::AnyAccount,
        why: "your own passphrase only",
    },
    Rule {
        command: "keys show",
        who: Who::AnyAccount,
        why: "fingerprints are public; every role compares them",
    },
    Rule {
        command: "usb",
        who: Who::AnyAccount,
        why: "every role brings or takes sticks; names only, shown escaped",
    },
    Rule {
        command: "eject",
        who: Who::AnyAccount,
        why: "whoever wrote to a stick or listed it releases it before pulling it",
    },
    Rule {
        command: "run",
        who: Who::Roles(OPERATOR),
        why: "jobs are the operator's: the operator's session holds the document key",
    },
    Rule {
        command: "batch",
        who: Who::Roles(OPERATOR),
        why: "jobs are the operator's: the operator's session holds the document key",
    },
    Rule {
        command: "selftest",
        who: Who::Roles(&[Role::Operator, Role::Officer]),
        why: "runs the sandbox probe: operators before jobs, officers after changes",
    },
    Rule {
        command: "accounts",
        who: Who::Roles(OFFICER),
        why: "account management is the officer's",
    },
    Rule {
        command: "account add",
        who: Who::Roles(OFFICER),
        why: "account management is the officer's",
    },
    Rule {
        command: "account remove",
        who: Who::Roles(OFFICER),
        why: "account management is the officer's",
    },
    Rule {
        command: "keys export",
        who: Who::Roles(OFFICER),
        why: "the officer hands the public keys to the people who encrypt to it",
    },
    Rule {
        command: "keys rotate",
        who: Who::Roles(OFFICER),
        why: "key changes are the officer's; operators only use the key",
    },
    Rule {
        command: "clock set",
        who: Who::Roles(OFFICER),
        why: "time stamps the evidence: changed only by the officer, audited with the old time",
    },
    Rule {
        command: "system show",
        who: Who::AnyAccount,
        why: "which system runs and what boots next is a fact every role may check",
    },
    Rule {
        command: "system reboot-to-new",
        who: Who::Roles(OFFICER),
        why: "trying a new system changes what runs",
    },
    Rule {
        command: "system retry",
        who: Who::Roles(OFFICER),
        why: "changes what the next boots try",
    },
    Rule {
        command: "system clear",
        who: Who::Roles(OFFICER),
        why: "removes an installed system",
    },
    Rule {
        command: "import",
        who: Who::Roles(OFFICER),
        why: "changing what runs is the officer's; operators only use the active model",
    },
    Rule {
        command: "models",
        who: Who::Roles(&[Role::Operator, Role::Officer]),
        why: "operators see what they run, officers what they manage",
    },
    Rule {
        command: "activate",
        who: Who::Roles(OFFICER),
        why: "changing what runs is the officer's",
    },
    Rule {
        command: "rollback",
        who: Who::Roles(OFFICER),
        why: "changing what runs is the officer's",
    },
    Rule {
        command: "remove",
        who: Who::Roles(OFFICER),
        why: "changing what runs is the officer's",
    },
    Rule {
        command: "audit show",
        who: Who::Roles(AUDITOR),
        why: "the log is read by the auditor, not by those it records",
    },
    Rule {
        command: "audit export",
        who: Who::Roles(AUDITOR),
        why: "the log is read by the auditor, not by those it records",
    },
];

/// Keeps the operator role referenced until jobs arrive (issue 11 adds
/// `run` and `batch` with `Who::Roles(OPERATOR)`).
pub const JOB_ROLES: &[Role] = OPERATOR;

/// Why a command was refused before it ran.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("not provisioned: only provision, status, help and poweroff are offered")]
    NotProvisioned,
    #[error("'{0}' is for first boot only; the appliance is already provisioned")]
    AlreadyProvisioned(&'static str),
    #[error("'{0}' needs a login; log in first with 'login NAME'")]
    NotLoggedIn(&'static str),
    #[error("'{command}' needs the {need} role; you are logged in as {account} ({role})")]
    WrongRole {
        command: &'static str,
        need: String,
        account: String,
        role: Role,
    },
    #[error("no rule for '{0}' (refused)")]
    NoRule(&'static str),
}

impl Refusal {
    /// The reason code for the audit entry (`role-officer-required`, ...).
    pub fn code(&self) -> String {
        match self {
            Refusal::NotProvisioned => "not-provisioned".into(),
            Refusal::AlreadyProvisioned(_) => "already-provisioned".into(),
            Refusal::NotLoggedIn(_) => "not-logged-in".into(),
            Refusal::WrongRole { need, .. } => {
                format!("role-{}-required", need.replace(" or ", "-or-"))
            }
            Refusal::NoRule(_) => "no-rule".into(),
        }
    }
}

/// The rule of a command.
pub fn rule(command: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.command == command)
}

/// Whether `command` may run now. `session` is the logged-in account.
pub fn check(
    command: &'static str,
    provisioned: bool,
    session: Option<(&str, Role)>,
) -> Result<(), Refusal> {
    let Some(r) = rule(command) else {
        return Err(Refusal::NoRule(command));
    };
    match (r.who, provisioned, session) {
        (Who::Anyone, _, _) => Ok(()),
        (Who::Unprovisioned, false, _) => Ok(()),
        (Who::Unprovisioned, true, _) => Err(Refusal::AlreadyProvisioned(command)),
        (_, false, _) => Err(Refusal::NotProvisioned),
        (Who::AnyoneProvisioned, true, _) => Ok(()),
        (_, true, None) => Err(Refusal::NotLoggedIn(command)),
        (Who::AnyAccount, true, Some(_)) => Ok(()),
        (Who::Roles(roles), true, Some((account, role))) => {
            if roles.contains(&role) {
                Ok(())
            } else {
                Err(Refusal::WrongRole {
                    command,
                    need: roles
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    account: account.to_string(),
                    role,
                })
            }
        }
    }
}

/// The table as text (docs and `help`).
pub fn table() -> String {
    let mut out = String::new();
    for r in RULES {
        let who = match r.who {
            Who::Anyone => "anyone".to_string(),
            Who::AnyoneProvisioned => "anyone (provisioned)".to_string(),
            Who::Unprovisioned => "anyone (not provisioned)".to_string(),
            Who::AnyAccount => "any account".to_string(),
            Who::Roles(rs) => rs
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        out.push_str(&format!("{:<16} {:<26} {}\n", r.command, who, r.why));
    }
    out
}

/// Every command has exactly one rule and every rule a command.
pub fn complete() -> Result<(), String> {
    for c in COMMANDS {
        let n = RULES.iter().filter(|r| r.command == c.name).count();
        if n != 1 {
            return Err(format!("command '{}' has {n} rules", c.name));
        }
    }
    for r in RULES {
        if !COMMANDS.iter().any(|c| c.name == r.command) {
            return Err(format!("rule for unknown command '{}'", r.command));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_command_once() {
        complete().unwrap();
        assert!(JOB_ROLES.contains(&Role::Operator));
    }

    #[test]
    fn separation_of_duties() {
        let op = Some(("alice", Role::Operator));
        let off = Some(("bob", Role::Officer));
        let aud = Some(("carol", Role::Auditor));
        // (command, provisioned, session, expected refusal code or "ok")
        type Case<'a> = (&'static str, bool, Option<(&'a str, Role)>, &'a str);
        let cases: &[Case] = &[
            ("provision", false, None, "ok"),
            ("status", false, None, "ok"),
            ("help", false, None, "ok"),
            ("poweroff", false, None, "ok"),
            ("login", false, None, "not-provisioned"),
            ("reboot", false, None, "not-provisioned"),
            ("provision", true, None, "already-provisioned"),
            ("login", true, None, "ok"),
            ("whoami", true, None, "not-logged-in"),
            ("audit show", true, None, "not-logged-in"),
            ("audit show", true, aud, "ok"),
            ("audit export", true, aud, "ok"),
            ("audit show", true, op, "role-auditor-required"),
            ("audit export", true, off, "role-auditor-required"),
            ("keys rotate", true, off, "ok"),
            ("keys rotate", true, op, "role-officer-required"),
            ("keys rotate", true, aud, "role-officer-required"),
            ("account add", true, off, "ok"),
            ("account add", true, op, "role-officer-required"),
            ("clock set", true, aud, "role-officer-required"),
            ("keys show", true, aud, "ok"),
            ("selftest", true, op, "ok"),
            ("selftest", true, aud, "role-operator-or-officer-required"),
            ("passwd", true, aud, "ok"),
            ("import", true, op, "role-officer-required"),
            ("import", true, off, "ok"),
            ("models", true, op, "ok"),
            ("activate", true, aud, "role-officer-required"),
            ("usb", true, op, "ok"),
            ("run", true, op, "ok"),
            ("run", true, off, "role-operator-required"),
            ("batch", true, aud, "role-operator-required"),
            ("batch", true, None, "not-logged-in"),
            ("usb", true, off, "ok"),
            ("usb", true, aud, "ok"),
            ("usb", true, None, "not-logged-in"),
            ("eject", true, op, "ok"),
            ("eject", false, None, "not-provisioned"),
        ];
        for (cmd, prov, sess, want) in cases {
            let got = match check(cmd, *prov, *sess) {
                Ok(()) => "ok".to_string(),
                Err(r) => r.code(),
            };
            assert_eq!(got, *want, "{cmd} provisioned={prov} session={sess:?}");
        }
        let e = check("audit show", true, op).unwrap_err().to_string();
        assert_eq!(
            e,
            "'audit show' needs the auditor role; you are logged in as alice (operator)"
        );
    }
}
