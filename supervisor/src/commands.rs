//! The console grammar: one command per line, words separated by spaces,
//! printable ASCII only. Every refusal is one line ending in a hint.
//!
//! The command table is data: name, arguments, one-line summary, help text.

use thiserror::Error;

/// Longest accepted line (bytes, without the newline).
pub const MAX_LINE: usize = 256;

/// A parsed console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help` or `help COMMAND`
    Help(Option<&'static CommandSpec>),
    Status,
    Selftest,
    Poweroff,
    Reboot,
    Provision,
    Login(String),
    Logout,
    Whoami,
    Accounts,
    AccountAdd {
        name: String,
        role: String,
    },
    AccountRemove(String),
    Passwd,
    KeysShow,
    KeysExport(Option<String>),
    KeysRotate(Option<String>),
    ClockSet(String),
    AuditShow(Option<usize>),
    AuditExport(Option<String>),
    Import,
    Models,
    Activate {
        name: String,
        version: Option<u64>,
    },
    Rollback(String),
    Remove {
        name: String,
        version: u64,
    },
    Usb,
    Eject(Option<String>),
    /// `run FILE [options]`: the rest of the line, parsed by `jobargs`.
    Run(String),
    /// `batch DIR [options]`: the rest of the line, parsed by `jobargs`.
    Batch(String),
    /// `system` or `system show`: both boot slots and what boots next.
    SystemShow,
    /// `system reboot-to-new`: restart into the pending new system.
    SystemRebootToNew,
    /// `system retry`: give a failed slot its tries again.
    SystemRetry,
    /// `system clear`: remove a failed slot's system.
    SystemClear,
}

/// Why a line was refused. Each message is one line with a hint.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GrammarError {
    #[error("unknown command '{0}'; type 'help' for the list of commands")]
    Unknown(String),
    #[error("'{cmd}' takes no arguments; see 'help {cmd}'")]
    NoArguments { cmd: &'static str },
    #[error("'{cmd}' takes at most {max} argument(s); see 'help {cmd}'")]
    TooManyArguments { cmd: &'static str, max: usize },
    #[error("'{cmd}' needs {min} argument(s): {usage}; see 'help {cmd}'")]
    TooFewArguments {
        cmd: &'static str,
        min: usize,
        usage: &'static str,
    },
    #[error("'{group}' needs one of: {subs}; see 'help {group}'")]
    Subcommand { group: String, subs: String },
    #[error("'{cmd}': {why}; see 'help {cmd}'")]
    BadArgument {
        cmd: &'static str,
        why: &'static str,
    },
    #[error("no command '{0}' to explain; type 'help' for the list of commands")]
    HelpUnknown(String),
    #[error(
        "the line contains a control or non-ASCII character; type 'help' for the list of commands"
    )]
    NotPrintable,
    #[error(
        "line too long (more than {MAX_LINE} characters); type 'help' for the list of commands"
    )]
    TooLong,
}

/// One entry of the command table.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// One word, or a group and a word (`keys show`).
    pub name: &'static str,
    /// Usage shown in help, e.g. `help [COMMAND]`.
    pub usage: &'static str,
    /// Fewest and most arguments after the name.
    pub min_args: usize,
    pub max_args: usize,
    pub summary: &'static str,
    pub help: &'static str,
}

/// The commands, in the order `help` lists them. Who may run each is in
/// `roles::RULES`.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        usage: "help [COMMAND]",
        min_args: 0,
        max_args: 2,
        summary: "list the commands, or explain one",
        help: "Without an argument lists every command; 'help COMMAND' explains one.",
    },
    CommandSpec {
        name: "status",
        usage: "status",
        min_args: 0,
        max_args: 0,
        summary: "show version, readiness, lockdown, devices and services",
        help: "Prints one 'key: value' line per fact: version, boot slot, uptime, readiness, \
               network interfaces, whether network sockets can be opened, security modules, \
               Landlock ABI, seccomp, sysctl lockdown, state partition, USB sticks, audit log, \
               answer recipients, services.",
    },
    CommandSpec {
        name: "provision",
        usage: "provision",
        min_args: 0,
        max_args: 0,
        summary: "first boot: create the accounts and the appliance's keys",
        help: "Asks for the accounts (a name and one role each: at least one operator, one \
               officer and one auditor), each passphrase twice without echo, and the document \
               key's algorithm (ed25519 or rsa4096); then generates the OpenPGP document key and \
               the audit key, wrapped at rest under the accounts' passphrases.",
    },
    CommandSpec {
        name: "login",
        usage: "login NAME",
        min_args: 1,
        max_args: 1,
        summary: "log in to an account (passphrase not shown)",
        help: "Asks for NAME's passphrase without echo. Wrong passphrases cost a growing delay; \
               after too many the account is locked for a while (see the security team's \
               policy). Idle sessions are logged out.",
    },
    CommandSpec {
        name: "logout",
        usage: "logout",
        min_args: 0,
        max_args: 0,
        summary: "end the session",
        help: "Ends the session, locks the keys it unwrapped and signs an audit checkpoint.",
    },
    CommandSpec {
        name: "whoami",
        usage: "whoami",
        min_args: 0,
        max_args: 0,
        summary: "show the account and role logged in here",
        help: "Prints the account and role logged in on this console, and since when.",
    },
    CommandSpec {
        name: "selftest",
        usage: "selftest",
        min_args: 0,
        max_args: 0,
        summary: "run the sandbox probe suite",
        help: "Spawns the probe through the worker's sandbox path and checks that every \
               forbidden act (network sockets, exec, ptrace, mount, writing the model, ...) \
               is refused and every allowed one works. Prints one line per check.",
    },
    CommandSpec {
        name: "accounts",
        usage: "accounts",
        min_args: 0,
        max_args: 0,
        summary: "list the accounts, their roles and locks",
        help: "One line per account: name, role, whether it is locked, keys granted.",
    },
    CommandSpec {
        name: "account add",
        usage: "account add NAME ROLE",
        min_args: 2,
        max_args: 2,
        summary: "add an account (its passphrase typed here)",
        help: "ROLE is operator, officer or auditor. The new account's passphrase is typed \
               twice at this console without echo. An operator added later receives the \
               document key at the next login of an existing operator.",
    },
    CommandSpec {
        name: "account remove",
        usage: "account remove NAME",
        min_args: 1,
        max_args: 1,
        summary: "remove an account",
        help: "Removes NAME and its wrapped keys. The last account of a role and your own \
               account cannot be removed.",
    },
    CommandSpec {
        name: "passwd",
        usage: "passwd",
        min_args: 0,
        max_args: 0,
        summary: "change your own passphrase",
        help: "Asks for the current passphrase, then the new one twice, all without echo.",
    },
    CommandSpec {
        name: "keys show",
        usage: "keys show",
        min_args: 0,
        max_args: 0,
        summary: "show the appliance's key fingerprints",
        help: "Prints the OpenPGP document keys (the active one marked) and the audit key, \
               with fingerprints grouped for reading aloud.",
    },
    CommandSpec {
        name: "keys export",
        usage: "keys export [STICK]",
        min_args: 0,
        max_args: 1,
        summary: "write the public keys to a USB stick",
        help: "Writes a new directory airlock-keys-<time> on the stick (STICK names it when \
               several are inserted, e.g. sdb): the OpenPGP public key armored (for \
               'gpg --import'), the audit public key and FINGERPRINTS.txt.",
    },
    CommandSpec {
        name: "keys rotate",
        usage: "keys rotate [ed25519|rsa4096]",
        min_args: 0,
        max_args: 1,
        summary: "make a new document key the active one",
        help: "Generates a new OpenPGP document key for every operator. The old keys stay, \
               so documents encrypted to them can still be read.",
    },
    CommandSpec {
        name: "clock set",
        usage: "clock set YYYY-MM-DDTHH:MM:SSZ",
        min_args: 1,
        max_args: 1,
        summary: "set the real-time clock (UTC)",
        help: "Sets the system clock and the PC's real-time clock. The old time is recorded \
               in the audit log.",
    },
    CommandSpec {
        name: "audit show",
        usage: "audit show [N]",
        min_args: 0,
        max_args: 1,
        summary: "show the last N audit entries (default 20)",
        help: "A table of the newest entries: sequence, time (UTC), account, role, action, \
               result, reason and detail.",
    },
    CommandSpec {
        name: "audit export",
        usage: "audit export [STICK]",
        min_args: 0,
        max_args: 1,
        summary: "write the audit log to a USB stick",
        help: "Signs a checkpoint, then writes a new directory airlock-audit-<time> on the \
               stick: entries, every checkpoint, the audit public key and VERIFY.txt. Verify \
               it on a connected machine with 'airlock audit verify'.",
    },
    CommandSpec {
        name: "import",
        usage: "import",
        min_args: 0,
        max_args: 0,
        summary: "import a signed model bundle from a USB stick",
        help: "Lists the bundles (NAME.airlock directories) on the inserted sticks: kind, name, \
               version, signers, size and what it would replace, or why it would be refused. \
               Asks which one and for confirmation, then verifies it while copying it into the \
               store, with a progress line. A refused or failed import changes nothing.",
    },
    CommandSpec {
        name: "models",
        usage: "models",
        min_args: 0,
        max_args: 0,
        summary: "list the installed models and which is active",
        help: "Per model: the active version, and per installed version its size, signers, \
               when and by whom it was imported, and why it is kept.",
    },
    CommandSpec {
        name: "activate",
        usage: "activate NAME [VERSION]",
        min_args: 1,
        max_args: 2,
        summary: "make an installed model version the active one",
        help: "Checks the version's files against its signed manifest first. Without VERSION \
               the highest installed version is activated.",
    },
    CommandSpec {
        name: "rollback",
        usage: "rollback NAME",
        min_args: 1,
        max_args: 1,
        summary: "activate the previous installed version",
        help: "Activates the highest installed version below the active one.",
    },
    CommandSpec {
        name: "remove",
        usage: "remove NAME VERSION",
        min_args: 2,
        max_args: 2,
        summary: "remove an installed model version (never the active one)",
        help: "Removes the version and reclaims its space. The active version and the \
               rollback target (until the active one has run a job) are refused.",
    },
    CommandSpec {
        name: "usb",
        usage: "usb",
        min_args: 0,
        max_args: 0,
        summary: "list the USB sticks and the files on them",
        help: "Per inserted stick: device, size, label, then its top-level entries classified: \
               document (*.gpg, *.asc, *.pgp), folder (with the documents one level down, for \
               'batch DIR'), bundle (*.airlock), answer (*.answer.gpg, *.answer.receipt), other; \
               with sizes, at most 40 per stick. Names are shown escaped. The sticks stay \
               mounted read-only until a result is written or they are ejected.",
    },
    CommandSpec {
        name: "eject",
        usage: "eject [STICK]",
        min_args: 0,
        max_args: 1,
        summary: "sync and unmount a stick so it can be pulled",
        help: "Syncs and unmounts every mount of the stick (STICK names it when several are \
               inserted, e.g. sdb), then says it can be pulled. Refused while something writes \
               to it or another console reads from it.",
    },
    CommandSpec {
        name: "run",
        usage: "run FILE [--task T] [--question Q] [--language L]",
        min_args: 1,
        max_args: 64,
        summary: "analyse an encrypted document on a stick; the answer goes back encrypted",
        help: "FILE is a document on a stick encrypted to this appliance's key (NAME, DIR/NAME, \
               or sdb:NAME when several sticks are in). Tasks: summarize (default), extract, \
               translate --language L, answer --question \"...\", classify; quote values with \
               spaces. --model NAME picks the model when several are active. The document is \
               opened in a sandbox, answered by a fresh sandboxed worker (long documents in \
               parts), and the answer, signed by the appliance and encrypted to the admin \
               recipients, is written beside it as NAME.answer.gpg with its audit receipt \
               NAME.answer.receipt. The console shows progress and a summary, not the answer \
               (--show prints it where the policy allows).",
    },
    CommandSpec {
        name: "batch",
        usage: "batch DIR [--task T] [--question Q] [--language L]",
        min_args: 1,
        max_args: 64,
        summary: "run every document in a folder of a stick, with a signed summary",
        help: "Every *.gpg, *.pgp and *.asc document in the folder DIR of a stick, one fresh \
               worker per document, as 'run' does. A failure does not stop the batch; a \
               document whose answer is already there and whose receipt verifies is skipped, \
               so a batch can be run again after a fault. At the end a summary \
               batch-TIME.summary.json and its OpenPGP signature (.asc) list each input's \
               SHA-256, result and answer.",
    },
    CommandSpec {
        name: "system show",
        usage: "system [show]",
        min_args: 0,
        max_args: 0,
        summary: "show the two system slots, the committed version and what boots next",
        help: "Per boot slot: the system version its UKI carries and its state (running, good, \
               pending with the tries left, FAILED with the tries used and the reason its boot \
               recorded); the committed (anti-rollback) version; which slot the next boot \
               tries. System bundles are installed with 'import'.",
    },
    CommandSpec {
        name: "system reboot-to-new",
        usage: "system reboot-to-new",
        min_args: 0,
        max_args: 0,
        summary: "restart into the newly installed system to try it",
        help: "Refused unless the next boot tries a pending new system. That boot runs the \
               health check; passed, the new system is blessed and its version committed; \
               failed (or it does not boot within its tries), the PC comes back to this one.",
    },
    CommandSpec {
        name: "system retry",
        usage: "system retry",
        min_args: 0,
        max_args: 0,
        summary: "give a failed new system its tries again",
        help: "The failed slot gets 3 tries again (refused when its version is below the \
               committed one). 'system reboot-to-new' then tries it.",
    },
    CommandSpec {
        name: "system clear",
        usage: "system clear",
        min_args: 0,
        max_args: 0,
        summary: "remove a failed new system from its slot",
        help: "Removes the failed slot's UKI from the ESP; the running system is untouched.",
    },
    CommandSpec {
        name: "poweroff",
        usage: "poweroff",
        min_args: 0,
        max_args: 0,
        summary: "stop everything cleanly and switch off",
        help: "Stops the services, syncs and unmounts the filesystems, then powers the PC off.",
    },
    CommandSpec {
        name: "reboot",
        usage: "reboot",
        min_args: 0,
        max_args: 0,
        summary: "stop everything cleanly and restart",
        help: "Stops the services, syncs and unmounts the filesystems, then restarts the PC.",
    },
];

/// Two-word command groups.
const GROUPS: &[&str] = &["account", "keys", "clock", "audit", "system"];
/// A group alone means this subcommand.
const GROUP_DEFAULTS: &[(&str, &str)] = &[("system", "system show")];

/// The table entry named `name`.
pub fn spec(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name)
}

fn subcommands(group: &str) -> String {
    COMMANDS
        .iter()
        .filter_map(|c| c.name.strip_prefix(group)?.strip_prefix(' '))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses one line (without its newline). `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command>, GrammarError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(GrammarError::TooLong);
    }
    if !line
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(GrammarError::NotPrintable);
    }
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let Some(first) = words.first() else {
        return Ok(None);
    };
    let short = |w: &str| w.chars().take(32).collect::<String>();
    let default = GROUP_DEFAULTS
        .iter()
        .find(|(g, _)| g == first)
        .and_then(|(_, d)| spec(d));
    let (s, args) = if let (Some(d), 1) = (default, words.len()) {
        (d, &words[1..])
    } else if GROUPS.contains(first) {
        match words.get(1).and_then(|w| spec(&format!("{first} {w}"))) {
            Some(s) => (s, &words[2..]),
            None => {
                return Err(GrammarError::Subcommand {
                    group: short(first),
                    subs: subcommands(first),
                })
            }
        }
    } else {
        match spec(first) {
            Some(s) => (s, &words[1..]),
            None => return Err(GrammarError::Unknown(short(first))),
        }
    };
    if args.len() > s.max_args {
        return Err(if s.max_args == 0 {
            GrammarError::NoArguments { cmd: s.name }
        } else {
            GrammarError::TooManyArguments {
                cmd: s.name,
                max: s.max_args,
            }
        });
    }
    if args.len() < s.min_args {
        return Err(GrammarError::TooFewArguments {
            cmd: s.name,
            min: s.min_args,
            usage: s.usage,
        });
    }
    let arg = |i: usize| args.get(i).map(|a| a.to_string());
    Ok(Some(match s.name {
        "help" => match args.len() {
            0 => Command::Help(None),
            _ => {
                let topic = args.join(" ");
                match spec(&topic) {
                    Some(t) => Command::Help(Some(t)),
                    None if GROUPS.contains(&topic.as_str()) => {
                        return Err(GrammarError::Subcommand {
                            group: topic.clone(),
                            subs: subcommands(&topic),
                        })
                    }
                    None => return Err(GrammarError::HelpUnknown(short(&topic))),
                }
            }
        },
        "status" => Command::Status,
        "selftest" => Command::Selftest,
        "poweroff" => Command::Poweroff,
        "reboot" => Command::Reboot,
        "provision" => Command::Provision,
        "login" => Command::Login(arg(0).unwrap_or_default()),
        "logout" => Command::Logout,
        "whoami" => Command::Whoami,
        "accounts" => Command::Accounts,
        "account add" => Command::AccountAdd {
            name: arg(0).unwrap_or_default(),
            role: arg(1).unwrap_or_default(),
        },
        "account remove" => Command::AccountRemove(arg(0).unwrap_or_default()),
        "passwd" => Command::Passwd,
        "keys show" => Command::KeysShow,
        "keys export" => Command::KeysExport(arg(0)),
        "keys rotate" => Command::KeysRotate(arg(0)),
        "clock set" => Command::ClockSet(arg(0).unwrap_or_default()),
        "audit show" => match args.first() {
            None => Command::AuditShow(None),
            Some(n) => match n.parse::<usize>() {
                Ok(v) if (1..=10_000).contains(&v) => Command::AuditShow(Some(v)),
                _ => {
                    return Err(GrammarError::BadArgument {
                        cmd: s.name,
                        why: "N is a number from 1 to 10000",
                    })
                }
            },
        },
        "audit export" => Command::AuditExport(arg(0)),
        "import" => Command::Import,
        "models" => Command::Models,
        "activate" => Command::Activate {
            name: arg(0).unwrap_or_default(),
            version: match args.get(1) {
                None => None,
                Some(v) => Some(v.parse::<u64>().map_err(|_| GrammarError::BadArgument {
                    cmd: s.name,
                    why: "VERSION is a whole number",
                })?),
            },
        },
        "rollback" => Command::Rollback(arg(0).unwrap_or_default()),
        "remove" => Command::Remove {
            name: arg(0).unwrap_or_default(),
            version: args.get(1).and_then(|v| v.parse::<u64>().ok()).ok_or(
                GrammarError::BadArgument {
                    cmd: s.name,
                    why: "VERSION is a whole number",
                },
            )?,
        },
        "usb" => Command::Usb,
        "eject" => Command::Eject(arg(0)),
        "run" | "batch" => {
            // The raw rest of the line: values may be quoted.
            let rest = line
                .trim_start()
                .get(s.name.len()..)
                .unwrap_or("")
                .trim()
                .to_string();
            if s.name == "run" {
                Command::Run(rest)
            } else {
                Command::Batch(rest)
            }
        }
        "system show" => Command::SystemShow,
        "system reboot-to-new" => Command::SystemRebootToNew,
        "system retry" => Command::SystemRetry,
        "system clear" => Command::SystemClear,
        _ => return Err(GrammarError::Unknown(short(first))),
    }))
}

impl Command {
    /// The table name of the command (`keys show`), for the role check.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help(_) => "help",
            Command::Status => "status",
            Command::Selftest => "selftest",
            Command::Poweroff => "poweroff",
            Command::Reboot => "reboot",
            Command::Provision => "provision",
            Command::Login(_) => "login",
            Command::Logout => "logout",
            Command::Whoami => "whoami",
            Command::Accounts => "accounts",
            Command::AccountAdd { .. } => "account add",
            Command::AccountRemove(_) => "account remove",
            Command::Passwd => "passwd",
            Command::KeysShow => "keys show",
            Command::KeysExport(_) => "keys export",
            Command::KeysRotate(_) => "keys rotate",
            Command::ClockSet(_) => "clock set",
            Command::AuditShow(_) => "audit show",
            Command::AuditExport(_) => "audit export",
            Command::Import => "import",
            Command::Models => "models",
            Command::Activate { .. } => "activate",
            Command::Rollback(_) => "rollback",
            Command::Remove { .. } => "remove",
            Command::Usb => "usb",
            Command::Eject(_) => "eject",
            Command::Run(_) => "run",
            Command::Batch(_) => "batch",
            Command::SystemShow => "system show",
            Command::SystemRebootToNew => "system reboot-to-new",
            Command::SystemRetry => "system retry",
            Command::SystemClear => "system clear",
        }
    }
}

/// The text of `help` (no argument): one line per command.
pub fn help_all() -> String {
    let mut out = String::from("Commands:\n");
    for c in COMMANDS {
        out.push_str(&format!("  {:<32} {}\n", c.usage, c.summary));
    }
    out.push_str("Type 'help COMMAND' for details.\n");
    out
}

/// `help` before provisioning: only what is offered then.
pub fn help_unprovisioned() -> String {
    let mut out = String::from("Not provisioned. Commands:\n");
    for c in COMMANDS
        .iter()
        .filter(|c| matches!(c.name, "provision" | "status" | "help" | "poweroff"))
    {
        out.push_str(&format!("  {:<32} {}\n", c.usage, c.summary));
    }
    out.push_str("Type 'help COMMAND' for details.\n");
    out
}

/// The text of `help COMMAND`.
pub fn help_one(c: &CommandSpec) -> String {
    format!("usage: {}\n{}\n", c.usage, c.help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses() {
        assert_eq!(parse("status"), Ok(Some(Command::Status)));
        assert_eq!(parse("  selftest  "), Ok(Some(Command::Selftest)));
        assert_eq!(parse("poweroff\r"), Ok(Some(Command::Poweroff)));
        assert_eq!(parse("reboot"), Ok(Some(Command::Reboot)));
        assert_eq!(parse("help"), Ok(Some(Command::Help(None))));
        assert_eq!(
            parse("help\tstatus"),
            Ok(Some(Command::Help(Some(&COMMANDS[1]))))
        );
    }

    #[test]
    fn session_commands_parse() {
        let s = |x: &str| Some(x.to_string());
        let cases: &[(&str, Command)] = &[
            ("provision", Command::Provision),
            ("login alice", Command::Login("alice".into())),
            ("logout", Command::Logout),
            ("whoami", Command::Whoami),
            ("accounts", Command::Accounts),
            (
                "account add dave operator",
                Command::AccountAdd {
                    name: "dave".into(),
                    role: "operator".into(),
                },
            ),
            ("account remove dave", Command::AccountRemove("dave".into())),
            ("passwd", Command::Passwd),
            ("keys show", Command::KeysShow),
            ("keys export", Command::KeysExport(None)),
            ("keys export sdb", Command::KeysExport(s("sdb"))),
            ("keys rotate rsa4096", Command::KeysRotate(s("rsa4096"))),
            (
                "clock set 2026-12-04T10:00:00Z",
                Command::ClockSet("2026-12-04T10:00:00Z".into()),
            ),
            ("audit show", Command::AuditShow(None)),
            ("audit show 5", Command::AuditShow(Some(5))),
            ("audit export sdc", Command::AuditExport(s("sdc"))),
            ("help keys show", Command::Help(spec("keys show"))),
            ("import", Command::Import),
            ("models", Command::Models),
            (
                "activate tiny",
                Command::Activate {
                    name: "tiny".into(),
                    version: None,
                },
            ),
            (
                "activate tiny 2",
                Command::Activate {
                    name: "tiny".into(),
                    version: Some(2),
                },
            ),
            ("rollback tiny", Command::Rollback("tiny".into())),
            ("usb", Command::Usb),
            (
                "run  a.gpg --question \"why   not\"",
                Command::Run("a.gpg --question \"why   not\"".into()),
            ),
            ("batch inbox", Command::Batch("inbox".into())),
            ("eject", Command::Eject(None)),
            ("eject sdb", Command::Eject(s("sdb"))),
            (
                "remove tiny 1",
                Command::Remove {
                    name: "tiny".into(),
                    version: 1,
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).as_ref(), Ok(&Some(want.clone())), "{line}");
            assert_eq!(spec(want.name()).map(|c| c.name), Some(want.name()));
        }
    }

    #[test]
    fn session_command_refusals() {
        let cases: &[(&str, &str)] = &[
            (
                "login",
                "'login' needs 1 argument(s): login NAME; see 'help login'",
            ),
            (
                "keys",
                "'keys' needs one of: show, export, rotate; see 'help keys'",
            ),
            (
                "keys delete",
                "'keys' needs one of: show, export, rotate; see 'help keys'",
            ),
            (
                "help audit",
                "'audit' needs one of: show, export; see 'help audit'",
            ),
            (
                "audit show lots",
                "'audit show': N is a number from 1 to 10000; see 'help audit show'",
            ),
            (
                "audit show 0",
                "'audit show': N is a number from 1 to 10000; see 'help audit show'",
            ),
            (
                "remove tiny latest",
                "'remove': VERSION is a whole number; see 'help remove'",
            ),
            (
                "account add dave",
                "'account add' needs 2 argument(s): account add NAME ROLE; see 'help account add'",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).unwrap_err().to_string(), *want, "{line}");
        }
    }

    #[test]
    fn blank_line_is_nothing() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   \t "), Ok(None));
    }

    #[test]
    fn unknown_command_has_reason_and_hint() {
        let e = parse("rm -rf /").unwrap_err();
        assert_eq!(e, GrammarError::Unknown("rm".into()));
        assert_eq!(
            e.to_string(),
            "unknown command 'rm'; type 'help' for the list of commands"
        );
        // Case matters: commands are lower case.
        assert_eq!(parse("STATUS"), Err(GrammarError::Unknown("STATUS".into())));
    }

    #[test]
    fn arguments_are_checked() {
        let e = parse("status now").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'status' takes no arguments; see 'help status'"
        );
        let e = parse("poweroff -f").unwrap_err();
        assert_eq!(e, GrammarError::NoArguments { cmd: "poweroff" });
        let e = parse("help status reboot now").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'help' takes at most 2 argument(s); see 'help help'"
        );
    }

    #[test]
    fn help_for_unknown_topic() {
        let e = parse("help shell").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no command 'shell' to explain; type 'help' for the list of commands"
        );
    }

    #[test]
    fn control_and_non_ascii_are_refused() {
        assert_eq!(parse("status\x1b[A"), Err(GrammarError::NotPrintable));
        assert_eq!(parse("st\u{e4}tus"), Err(GrammarError::NotPrintable));
        assert_eq!(parse("\x04"), Err(GrammarError::NotPrintable));
    }

    #[test]
    fn long_lines_are_refused() {
        let line = "a".repeat(MAX_LINE + 1);
        assert_eq!(parse(&line), Err(GrammarError::TooLong));
        assert!(GrammarError::TooLong.to_string().contains("type 'help'"));
    }

    #[test]
    fn help_lists_every_command() {
        let h = help_all();
        for c in COMMANDS {
            assert!(h.contains(c.usage), "{} missing from help", c.name);
        }
        assert!(help_one(&COMMANDS[1]).starts_with("usage: status\n"));
    }
}
