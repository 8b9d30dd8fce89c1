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
    pub name: &'static str,
    /// Usage shown in help, e.g. `help [COMMAND]`.
    pub usage: &'static str,
    /// Maximum number of arguments.
    pub max_args: usize,
    pub summary: &'static str,
    pub help: &'static str,
}

/// The commands of this stage, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        usage: "help [COMMAND]",
        max_args: 1,
        summary: "list the commands, or explain one",
        help: "Without an argument lists every command; 'help COMMAND' explains one.",
    },
    CommandSpec {
        name: "status",
        usage: "status",
        max_args: 0,
        summary: "show version, readiness, lockdown, devices and services",
        help: "Prints one 'key: value' line per fact: version, boot slot, uptime, readiness, \
               network interfaces, whether network sockets can be opened, security modules, \
               Landlock ABI, seccomp, sysctl lockdown, state partition, USB sticks, services.",
    },
    CommandSpec {
        name: "selftest",
        usage: "selftest",
        max_args: 0,
        summary: "run the sandbox probe suite",
        help: "Spawns the probe through the worker's sandbox path and checks that every \
               forbidden act (network sockets, exec, ptrace, mount, writing the model, ...) \
               is refused and every allowed one works. Prints one line per check.",
    },
    CommandSpec {
        name: "poweroff",
        usage: "poweroff",
        max_args: 0,
        summary: "stop everything cleanly and switch off",
        help: "Stops the services, syncs and unmounts the filesystems, then powers the PC off.",
    },
    CommandSpec {
        name: "reboot",
        usage: "reboot",
        max_args: 0,
        summary: "stop everything cleanly and restart",
        help: "Stops the services, syncs and unmounts the filesystems, then restarts the PC.",
    },
];

fn spec(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name)
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
    let mut words = line.split_ascii_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let args: Vec<&str> = words.collect();
    let Some(s) = spec(name) else {
        return Err(GrammarError::Unknown(name.chars().take(32).collect()));
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
    Ok(Some(match s.name {
        "help" => match args.first() {
            None => Command::Help(None),
            Some(topic) => match spec(topic) {
                Some(t) => Command::Help(Some(t)),
                None => return Err(GrammarError::HelpUnknown(topic.chars().take(32).collect())),
            },
        },
        "status" => Command::Status,
        "selftest" => Command::Selftest,
        "poweroff" => Command::Poweroff,
        _ => Command::Reboot,
    }))
}

/// The text of `help` (no argument): one line per command.
pub fn help_all() -> String {
    let mut out = String::from("Commands:\n");
    for c in COMMANDS {
        out.push_str(&format!("  {:<16} {}\n", c.usage, c.summary));
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
        let e = parse("help status reboot").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'help' takes at most 1 argument(s); see 'help help'"
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
