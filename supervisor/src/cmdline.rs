//! The kernel command line: which consoles to serve and which boot slot
//! this is.
//!
//! Keys (last occurrence wins, as for the kernel's own parameters):
//! - `airlock.console=NAME[,NAME...]` ttys to serve (default `ttyS0,tty1`)
//! - `airlock.slot=NAME` the boot slot (`a`/`b`) the UKI was installed in
//! - `airlock.state=PARTUUID=GUID` the unique GUID of the state partition
//!   this image was built with (`image/partitions.sh`); without it no state
//!   partition is mounted (`state.rs`)
//! - `airlock.dma=require|warn` what to do without DMA protection (`dma.rs`;
//!   default `require`)
//!
//! A bad value is reported with a one-line reason and the default is used.

use crate::dma;
use thiserror::Error;

/// Consoles served when the command line names none.
pub const DEFAULT_CONSOLES: &[&str] = &["ttyS0", "tty1"];
/// At most this many consoles are served.
pub const MAX_CONSOLES: usize = 4;
/// Longest accepted tty or slot name.
pub const MAX_NAME: usize = 16;

/// What was wrong with a value on the command line.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("airlock.console: '{0}' is not a tty name (letters and digits, starting with a letter, at most 16); using {default}", default = DEFAULT_CONSOLES.join(","))]
    BadConsole(String),
    #[error("airlock.console: empty list; using {default}", default = DEFAULT_CONSOLES.join(","))]
    NoConsole,
    #[error("airlock.console: more than {MAX_CONSOLES} consoles named; using {default}", default = DEFAULT_CONSOLES.join(","))]
    TooManyConsoles,
    #[error("airlock.slot: '{0}' is not a slot name (letters, digits, '-' or '_', at most 16); slot unknown")]
    BadSlot(String),
    #[error("airlock.state: '{0}' is not PARTUUID=<GUID>; no state partition will be mounted")]
    BadState(String),
    #[error("airlock.dma: '{0}' is not 'require' or 'warn'; using require")]
    BadDma(String),
    #[error("cannot read /proc/cmdline: {0}")]
    Read(String),
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// tty names under /dev, deduplicated, in the order given.
    pub consoles: Vec<String>,
    /// Boot slot, if given and well-formed.
    pub slot: Option<String>,
    /// Unique partition GUID of the state partition (lower case), if given.
    pub state: Option<String>,
    /// What to do without DMA protection.
    pub dma: dma::Policy,
    /// One line per rejected value (reported on the consoles and in kmsg).
    pub problems: Vec<CmdlineError>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            consoles: DEFAULT_CONSOLES.iter().map(|s| s.to_string()).collect(),
            slot: None,
            state: None,
            dma: dma::DEFAULT_POLICY,
            problems: Vec::new(),
        }
    }
}

/// Reads and parses /proc/cmdline; on a read error, the defaults plus the reason.
pub fn read() -> Cmdline {
    match std::fs::read("/proc/cmdline") {
        Ok(bytes) => parse(&String::from_utf8_lossy(&bytes)),
        Err(e) => Cmdline {
            problems: vec![CmdlineError::Read(e.to_string())],
            ..Cmdline::default()
        },
    }
}

/// The value of the last `KEY=value` word of the running kernel's command
/// line (keys this module does not parse, e.g. `airlock.test.fault`).
pub fn read_raw_value(key: &str) -> Option<String> {
    let text = std::fs::read("/proc/cmdline").ok()?;
    raw_value(&String::from_utf8_lossy(&text), key)
}

/// [`read_raw_value`] of a given command line.
pub fn raw_value(text: &str, key: &str) -> Option<String> {
    words(text)
        .into_iter()
        .rev()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// Splits a command line into words the way the kernel does: whitespace
/// separates, double quotes group (and are removed).
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

fn is_tty_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_slot_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_consoles(value: &str) -> Result<Vec<String>, CmdlineError> {
    let mut out: Vec<String> = Vec::new();
    for name in value.split(',').filter(|s| !s.is_empty()) {
        if !is_tty_name(name) {
            return Err(CmdlineError::BadConsole(name.chars().take(40).collect()));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    if out.is_empty() {
        return Err(CmdlineError::NoConsole);
    }
    if out.len() > MAX_CONSOLES {
        return Err(CmdlineError::TooManyConsoles);
    }
    Ok(out)
}

/// Parses the text of /proc/cmdline.
pub fn parse(text: &str) -> Cmdline {
    let mut console_value: Option<String> = None;
    let mut slot_value: Option<String> = None;
    let mut state_value: Option<String> = None;
    let mut dma_value: Option<String> = None;
    for w in words(text) {
        if let Some(v) = w.strip_prefix("airlock.console=") {
            console_value = Some(v.to_string());
        } else if let Some(v) = w.strip_prefix("airlock.slot=") {
            slot_value = Some(v.to_string());
        } else if let Some(v) = w.strip_prefix("airlock.state=") {
            state_value = Some(v.to_string());
        } else if let Some(v) = w.strip_prefix("airlock.dma=") {
            dma_value = Some(v.to_string());
        }
    }
    let mut c = Cmdline::default();
    if let Some(v) = console_value {
        match parse_consoles(&v) {
            Ok(list) => c.consoles = list,
            Err(e) => c.problems.push(e),
        }
    }
    if let Some(v) = slot_value {
        if is_slot_name(&v) {
            c.slot = Some(v);
        } else {
            c.problems
                .push(CmdlineError::BadSlot(v.chars().take(40).collect()));
        }
    }
    if let Some(v) = state_value {
        match v.strip_prefix("PARTUUID=").and_then(crate::gpt::parse_guid) {
            Some(g) => c.state = Some(g),
            None => c
                .problems
                .push(CmdlineError::BadState(v.chars().take(60).collect())),
        }
    }
    if let Some(v) = dma_value {
        match dma::POLICY_WORDS.iter().find(|(w, _)| *w == v) {
            Some((_, p)) => c.dma = *p,
            None => c
                .problems
                .push(CmdlineError::BadDma(v.chars().take(40).collect())),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_keys() {
        let c = parse("BOOT_IMAGE=/vmlinuz console=ttyS0 quiet\n");
        assert_eq!(c.consoles, vec!["ttyS0", "tty1"]);
        assert_eq!(c.slot, None);
        assert!(c.problems.is_empty());
    }

    #[test]
    fn consoles_and_slot() {
        let c =
            parse("console=tty1 airlock.console=ttyS1,hvc0,ttyS1 airlock.slot=b init_on_free=1");
        assert_eq!(c.consoles, vec!["ttyS1", "hvc0"]);
        assert_eq!(c.slot.as_deref(), Some("b"));
        assert!(c.problems.is_empty());
    }

    #[test]
    fn last_occurrence_wins() {
        let c = parse("airlock.slot=a airlock.slot=b airlock.console=tty1 airlock.console=ttyS0");
        assert_eq!(c.slot.as_deref(), Some("b"));
        assert_eq!(c.consoles, vec!["ttyS0"]);
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(words(r#"a "b c" d="e f" "#), vec!["a", "b c", "d=e f"]);
        let c = parse(r#"airlock.slot="a""#);
        assert_eq!(c.slot.as_deref(), Some("a"));
    }

    #[test]
    fn path_in_console_is_refused_with_reason() {
        let c = parse("airlock.console=../mem,ttyS0");
        assert_eq!(c.consoles, vec!["ttyS0", "tty1"], "defaults kept");
        assert_eq!(c.problems, vec![CmdlineError::BadConsole("../mem".into())]);
        assert!(c.problems[0].to_string().contains("is not a tty name"));
    }

    #[test]
    fn empty_and_too_many_consoles_are_refused() {
        let c = parse("airlock.console=");
        assert_eq!(c.problems, vec![CmdlineError::NoConsole]);
        assert_eq!(c.consoles, vec!["ttyS0", "tty1"]);
        let c = parse("airlock.console=tty1,tty2,tty3,tty4,tty5");
        assert_eq!(c.problems, vec![CmdlineError::TooManyConsoles]);
        assert!(c.problems[0].to_string().contains("more than 4"));
    }

    #[test]
    fn state_and_dma() {
        let c =
            parse("airlock.state=PARTUUID=0E16A44C-724C-40B1-BFFD-7E46645B4527 airlock.dma=warn");
        assert_eq!(
            c.state.as_deref(),
            Some("0e16a44c-724c-40b1-bffd-7e46645b4527")
        );
        assert_eq!(c.dma, dma::Policy::Warn);
        assert!(c.problems.is_empty());
        let c = parse("quiet");
        assert_eq!((c.state, c.dma), (None, dma::Policy::Require));
    }

    #[test]
    fn bad_state_and_dma_are_refused_with_reason() {
        // (command line, its one problem); state and dma keep their defaults
        let cases: &[(&str, &str)] = &[
            (
                "airlock.state=/dev/sdb2",
                "airlock.state: '/dev/sdb2' is not PARTUUID=<GUID>; no state partition will be mounted",
            ),
            (
                "airlock.state=PARTUUID=0e16a44c-724c-40b1-bffd",
                "airlock.state: 'PARTUUID=0e16a44c-724c-40b1-bffd' is not PARTUUID=<GUID>; no state partition will be mounted",
            ),
            (
                "airlock.state=PARTLABEL=airlock-state",
                "airlock.state: 'PARTLABEL=airlock-state' is not PARTUUID=<GUID>; no state partition will be mounted",
            ),
            (
                "airlock.dma=off",
                "airlock.dma: 'off' is not 'require' or 'warn'; using require",
            ),
        ];
        for (line, reason) in cases {
            let c = parse(line);
            assert_eq!(c.state, None, "{line}");
            assert_eq!(c.dma, dma::Policy::Require, "{line}");
            let p: Vec<String> = c.problems.iter().map(|p| p.to_string()).collect();
            assert_eq!(p, vec![reason.to_string()], "{line}");
        }
    }

    #[test]
    fn raw_values_take_the_last_word() {
        let t =
            "quiet airlock.test.fault=panic x=1 airlock.test.fault=health airlock.test.faultx=1";
        assert_eq!(
            raw_value(t, "airlock.test.fault").as_deref(),
            Some("health")
        );
        assert_eq!(raw_value(t, "x").as_deref(), Some("1"));
        assert_eq!(raw_value(t, "quiet"), None);
        assert_eq!(raw_value(t, "y"), None);
    }

    #[test]
    fn bad_slot_is_refused_with_reason() {
        let c = parse("airlock.slot=a/../../b");
        assert_eq!(c.slot, None);
        assert_eq!(c.problems, vec![CmdlineError::BadSlot("a/../../b".into())]);
        assert!(c.problems[0]
            .to_string()
            .starts_with("airlock.slot: 'a/../../b' is not a slot name"));
    }
}
