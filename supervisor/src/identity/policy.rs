//! The security policy of accounts and keys as data: compiled-in defaults,
//! the image's `/etc/airlock/policy.conf` (`key = value` lines, `#`
//! comments), and the kernel command line, which may only tighten a value
//! (`airlock.policy.idle_logout_s=60`), so a test image can shorten the idle
//! timeout but a typed boot entry cannot weaken the image.

use super::pgpkey::KeyAlgo;
use std::path::Path;
use thiserror::Error;

/// Where the image keeps the policy.
pub const POLICY_PATH: &str = "/etc/airlock/policy.conf";
/// Prefix of policy values on the kernel command line.
pub const CMDLINE_PREFIX: &str = "airlock.policy.";
/// Longest delay after a failed login, whatever the base (ms).
pub const MAX_FAILURE_DELAY_MS: u64 = 16_000;

/// What went wrong reading or tightening the policy.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("read policy {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("policy line {line}: expected `key = value`")]
    Syntax { line: usize },
    #[error("policy line {line}: unknown key `{key}`")]
    UnknownKey { line: usize, key: String },
    #[error("policy line {line}: `{key}` given twice")]
    Duplicate { line: usize, key: String },
    #[error("policy line {line}: {key} = `{value}`: {reason}")]
    BadValue {
        line: usize,
        key: String,
        value: String,
        reason: String,
    },
    #[error("kernel command line: unknown policy key `{0}`")]
    CmdlineUnknownKey(String),
    #[error("kernel command line: {key}={value}: {reason}")]
    CmdlineBadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "kernel command line: {key}={value} would weaken the image's {key}={current}; ignored"
    )]
    CmdlineLooser {
        key: String,
        value: String,
        current: String,
    },
    #[error("kernel command line: {0} cannot be set on the kernel command line; ignored")]
    CmdlineNotAdjustable(String),
}

/// The policy values. Every value has one line of documentation here and
/// in `rootfs-overlay/etc/airlock/policy.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Shortest passphrase, in Unicode characters (seed 000: 20).
    pub passphrase_min_chars: u64,
    /// argon2id memory per derivation, KiB (RFC 9106 second option: 64 MiB).
    pub argon2_m_kib: u64,
    /// argon2id passes over the memory.
    pub argon2_t: u64,
    /// argon2id lanes (parallelism).
    pub argon2_p: u64,
    /// Failed logins in a row after which the account is locked.
    pub lockout_failures: u64,
    /// How long a locked account stays locked, seconds.
    pub lockout_s: u64,
    /// Delay after the first failure, ms; doubles with each further
    /// failure, at most [`MAX_FAILURE_DELAY_MS`].
    pub failure_delay_base_ms: u64,
    /// A console without input this long logs its account out, seconds.
    pub idle_logout_s: u64,
    /// Entries per audit-log segment (the unit of retention).
    pub audit_segment_entries: u64,
    /// Segments kept on the appliance; older ones, once a signed checkpoint
    /// covers them, are removed at the next checkpoint (0: keep all).
    pub audit_keep_segments: u64,
    /// Algorithm of the document key made at provisioning and rotation.
    pub document_key: KeyAlgo,
    /// Largest encrypted document a job reads from a stick, bytes.
    pub job_max_input_bytes: u64,
    /// Largest plaintext a document may decompress to, bytes.
    pub job_max_plaintext_bytes: u64,
    /// Address-space limit of a job's inference worker, MiB.
    pub job_memory_mib: u64,
    /// Tokens of the model's context a job uses (at most the model's own).
    pub job_context_tokens: u64,
    /// Most tokens generated per part and for the combined answer.
    pub job_answer_tokens: u64,
    /// 1: `run --show` may print the answer on the console; 0: never.
    pub job_allow_show: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            passphrase_min_chars: 20,
            argon2_m_kib: 65_536,
            argon2_t: 3,
            argon2_p: 4,
            lockout_failures: 5,
            lockout_s: 600,
            failure_delay_base_ms: 1_000,
            idle_logout_s: 600,
            audit_segment_entries: 4_096,
            audit_keep_segments: 0,
            document_key: KeyAlgo::Ed25519,
            job_max_input_bytes: 64 << 20,
            job_max_plaintext_bytes: 64 << 20,
            job_memory_mib: 4_096,
            job_context_tokens: 2_048,
            job_answer_tokens: 256,
            job_allow_show: 0,
        }
    }
}

/// Which way a value may move on the kernel command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tighten {
    /// A higher value is stricter (longer passphrases, costlier KDF).
    Up,
    /// A lower value is stricter (fewer failures, shorter idle time).
    Down,
    /// No value is stricter than another: image only.
    Never,
}

/// One numeric policy value: name, accepted range, which way is stricter,
/// and where it lives in [`Policy`].
struct Rule {
    key: &'static str,
    min: u64,
    max: u64,
    tighten: Tighten,
    field: fn(&mut Policy) -> &mut u64,
}

/// The numeric values (`document_key` is handled apart).
const RULES: &[Rule] = &[
    // below 12 characters no passphrase resists an offline guess for long
    Rule {
        key: "passphrase_min_chars",
        min: 12,
        max: 256,
        tighten: Tighten::Up,
        field: |p| &mut p.passphrase_min_chars,
    },
    // 8 MiB .. 1 GiB: the bound the KDF parser enforces too
    Rule {
        key: "argon2_m_kib",
        min: 8_192,
        max: 1_048_576,
        tighten: Tighten::Up,
        field: |p| &mut p.argon2_m_kib,
    },
    Rule {
        key: "argon2_t",
        min: 1,
        max: 16,
        tighten: Tighten::Up,
        field: |p| &mut p.argon2_t,
    },
    // lanes do not make a guess costlier for an attacker with many cores
    Rule {
        key: "argon2_p",
        min: 1,
        max: 16,
        tighten: Tighten::Never,
        field: |p| &mut p.argon2_p,
    },
    Rule {
        key: "lockout_failures",
        min: 1,
        max: 100,
        tighten: Tighten::Down,
        field: |p| &mut p.lockout_failures,
    },
    Rule {
        key: "lockout_s",
        min: 60,
        max: 604_800,
        tighten: Tighten::Up,
        field: |p| &mut p.lockout_s,
    },
    Rule {
        key: "failure_delay_base_ms",
        min: 0,
        max: MAX_FAILURE_DELAY_MS,
        tighten: Tighten::Up,
        field: |p| &mut p.failure_delay_base_ms,
    },
    Rule {
        key: "idle_logout_s",
        min: 10,
        max: 86_400,
        tighten: Tighten::Down,
        field: |p| &mut p.idle_logout_s,
    },
    Rule {
        key: "audit_segment_entries",
        min: 16,
        max: 1_048_576,
        tighten: Tighten::Never,
        field: |p| &mut p.audit_segment_entries,
    },
    // 0 keeps everything; removing evidence is the security team's choice,
    // never the command line's
    Rule {
        key: "audit_keep_segments",
        min: 0,
        max: 1_000_000,
        tighten: Tighten::Never,
        field: |p| &mut p.audit_keep_segments,
    },
    // the ciphertext is read whole into RAM: 64 MiB by default
    Rule {
        key: "job_max_input_bytes",
        min: 1_024,
        max: 1 << 30,
        tighten: Tighten::Down,
        field: |p| &mut p.job_max_input_bytes,
    },
    // bounds a compression bomb; the plaintext lives in RAM only
    Rule {
        key: "job_max_plaintext_bytes",
        min: 1_024,
        max: 1 << 30,
        tighten: Tighten::Down,
        field: |p| &mut p.job_max_plaintext_bytes,
    },
    // RLIMIT_AS of the worker: a model too big for it fails to load with a
    // clear reason instead of pushing the appliance into the OOM killer
    Rule {
        key: "job_memory_mib",
        min: 16,
        max: 1 << 20,
        tighten: Tighten::Down,
        field: |p| &mut p.job_memory_mib,
    },
    // a shorter context splits documents into more parts; the model's own
    // context length caps it
    Rule {
        key: "job_context_tokens",
        min: 256,
        max: 1 << 20,
        tighten: Tighten::Down,
        field: |p| &mut p.job_context_tokens,
    },
    Rule {
        key: "job_answer_tokens",
        min: 16,
        max: 4_096,
        tighten: Tighten::Down,
        field: |p| &mut p.job_answer_tokens,
    },
    // the answer on the screen is readable by whoever stands behind the
    // operator: off unless the site decides otherwise
    Rule {
        key: "job_allow_show",
        min: 0,
        max: 1,
        tighten: Tighten::Down,
        field: |p| &mut p.job_allow_show,
    },
];

const DOCUMENT_KEY: &str = "document_key";

fn rule(key: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.key == key)
}

fn parse_number(rule: &Rule, value: &str) -> Result<u64, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| "not a whole number".to_string())?;
    if n < rule.min || n > rule.max {
        return Err(format!("outside {}..={}", rule.min, rule.max));
    }
    Ok(n)
}

impl Policy {
    /// Reads the image's policy file; a missing file is an error (the image
    /// always ships one).
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parses `key = value` lines over the defaults. Blank lines and `#`
    /// comments (whole-line or trailing) are skipped; an unknown key, a key
    /// given twice or a bad value is an error naming the line.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut policy = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                return Err(PolicyError::Syntax { line });
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || value.is_empty() {
                return Err(PolicyError::Syntax { line });
            }
            if seen.contains(&key) {
                return Err(PolicyError::Duplicate {
                    line,
                    key: key.into(),
                });
            }
            let bad = |reason: String| PolicyError::BadValue {
                line,
                key: key.into(),
                value: value.into(),
                reason,
            };
            if key == DOCUMENT_KEY {
                policy.document_key = value.parse().map_err(bad)?;
            } else if let Some(r) = rule(key) {
                *(r.field)(&mut policy) = parse_number(r, value).map_err(bad)?;
            } else {
                return Err(PolicyError::UnknownKey {
                    line,
                    key: key.into(),
                });
            }
            seen.push(key);
        }
        policy
            .check_consistent()
            .map_err(|reason| PolicyError::BadValue {
                line: 0,
                key: "argon2_m_kib".into(),
                value: policy.argon2_m_kib.to_string(),
                reason,
            })?;
        Ok(policy)
    }

    /// argon2 needs at least 8 KiB of memory per lane.
    fn check_consistent(&self) -> Result<(), String> {
        if self.argon2_m_kib < 8 * self.argon2_p {
            return Err(format!(
                "below 8 KiB per lane (argon2_p = {})",
                self.argon2_p
            ));
        }
        Ok(())
    }

    /// Applies the `airlock.policy.KEY=VALUE` words of the kernel command
    /// line (other words are ignored) where they make the policy stricter;
    /// returns one error per word refused (the rest still apply).
    pub fn tighten<'a>(&mut self, words: impl IntoIterator<Item = &'a str>) -> Vec<PolicyError> {
        let mut refused = Vec::new();
        for word in words {
            let Some(pair) = word.strip_prefix(CMDLINE_PREFIX) else {
                continue;
            };
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if let Err(e) = self.tighten_one(key, value) {
                refused.push(e);
            }
        }
        refused
    }

    fn tighten_one(&mut self, key: &str, value: &str) -> Result<(), PolicyError> {
        let bad = |reason: String| PolicyError::CmdlineBadValue {
            key: key.into(),
            value: value.into(),
            reason,
        };
        if key == DOCUMENT_KEY {
            return Err(PolicyError::CmdlineNotAdjustable(key.into()));
        }
        let Some(r) = rule(key) else {
            return Err(PolicyError::CmdlineUnknownKey(key.into()));
        };
        let n = parse_number(r, value).map_err(bad)?;
        let current = *(r.field)(self);
        let stricter = match r.tighten {
            Tighten::Up => n >= current,
            Tighten::Down => n <= current,
            Tighten::Never => return Err(PolicyError::CmdlineNotAdjustable(key.into())),
        };
        if !stricter {
            return Err(PolicyError::CmdlineLooser {
                key: key.into(),
                value: value.into(),
                current: current.to_string(),
            });
        }
        let mut next = self.clone();
        *(r.field)(&mut next) = n;
        next.check_consistent().map_err(bad)?;
        *self = next;
        Ok(())
    }

    /// Delay before the next attempt after `failures` failures in a row:
    /// base * 2^(failures-1), at most [`MAX_FAILURE_DELAY_MS`]; none before
    /// the first failure.
    pub fn failure_delay_ms(&self, failures: u64) -> u64 {
        if failures == 0 {
            return 0;
        }
        let shift = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(20);
        self.failure_delay_base_ms
            .saturating_mul(1u64 << shift)
            .min(MAX_FAILURE_DELAY_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses_to_the_defaults() {
        let text = include_str!("../../../rootfs-overlay/etc/airlock/policy.conf");
        assert_eq!(Policy::parse(text), Ok(Policy::default()));
        // and names every value
        for r in RULES {
            assert!(text.contains(&format!("\n{} = ", r.key)), "{}", r.key);
        }
        assert!(text.contains("\ndocument_key = "));
    }

    #[test]
    fn parse_table() {
        let d = Policy::default();
        let ok: &[(&str, Policy)] = &[
            ("", d.clone()),
            ("# only a comment\n\n   \n", d.clone()),
            (
                "idle_logout_s = 60",
                Policy {
                    idle_logout_s: 60,
                    ..d.clone()
                },
            ),
            (
                "idle_logout_s=60 # trailing comment",
                Policy {
                    idle_logout_s: 60,
                    ..d.clone()
                },
            ),
            (
                "document_key = rsa4096",
                Policy {
                    document_key: KeyAlgo::Rsa4096,
                    ..d.clone()
                },
            ),
            (
                "passphrase_min_chars = 24\nlockout_failures = 3",
                Policy {
                    passphrase_min_chars: 24,
                    lockout_failures: 3,
                    ..d.clone()
                },
            ),
            (
                "argon2_m_kib = 19456\nargon2_t = 2\nargon2_p = 1",
                Policy {
                    argon2_m_kib: 19_456,
                    argon2_t: 2,
                    argon2_p: 1,
                    ..d.clone()
                },
            ),
        ];
        for (text, want) in ok {
            assert_eq!(Policy::parse(text).as_ref(), Ok(want), "{text:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("idle_logout_s", "policy line 1: expected `key = value`"),
            ("\n= 5", "policy line 2: expected `key = value`"),
            ("idle_logout_s =", "policy line 1: expected `key = value`"),
            (
                "idle_logout = 5",
                "policy line 1: unknown key `idle_logout`",
            ),
            (
                "lockout_s = 600\nlockout_s = 900",
                "policy line 2: `lockout_s` given twice",
            ),
            (
                "lockout_s = ten",
                "policy line 1: lockout_s = `ten`: not a whole number",
            ),
            (
                "lockout_s = -1",
                "policy line 1: lockout_s = `-1`: not a whole number",
            ),
            (
                "lockout_s = 5",
                "policy line 1: lockout_s = `5`: outside 60..=604800",
            ),
            (
                "passphrase_min_chars = 8",
                "policy line 1: passphrase_min_chars = `8`: outside 12..=256",
            ),
            (
                "argon2_m_kib = 2000000",
                "policy line 1: argon2_m_kib = `2000000`: outside 8192..=1048576",
            ),
            (
                "document_key = dsa",
                "policy line 1: document_key = `dsa`: expected ed25519 or rsa4096",
            ),
        ];
        for (text, want) in bad {
            let got = Policy::parse(text).map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_string()), "{text:?}");
        }
    }

    #[test]
    fn tighten_table() {
        let d = Policy::default();
        // (words, policy after, refusals)
        let cases: &[(&[&str], Policy, &[&str])] = &[
            (&["quiet", "airlock.console=ttyS0"], d.clone(), &[]),
            (&["airlock.policy.idle_logout_s=60"], Policy { idle_logout_s: 60, ..d.clone() }, &[]),
            (&["airlock.policy.idle_logout_s=600"], d.clone(), &[]),
            (&["airlock.policy.idle_logout_s=900"], d.clone(),
                &["kernel command line: idle_logout_s=900 would weaken the image's idle_logout_s=600; ignored"]),
            (&["airlock.policy.lockout_failures=3", "airlock.policy.lockout_s=1200"],
                Policy { lockout_failures: 3, lockout_s: 1200, ..d.clone() }, &[]),
            (&["airlock.policy.lockout_failures=10"], d.clone(),
                &["kernel command line: lockout_failures=10 would weaken the image's lockout_failures=5; ignored"]),
            (&["airlock.policy.passphrase_min_chars=19"], d.clone(),
                &["kernel command line: passphrase_min_chars=19 would weaken the image's passphrase_min_chars=20; ignored"]),
            (&["airlock.policy.passphrase_min_chars=30"], Policy { passphrase_min_chars: 30, ..d.clone() }, &[]),
            (&["airlock.policy.argon2_m_kib=19456"], d.clone(),
                &["kernel command line: argon2_m_kib=19456 would weaken the image's argon2_m_kib=65536; ignored"]),
            (&["airlock.policy.idle_logout_s=1"], d.clone(),
                &["kernel command line: idle_logout_s=1: outside 10..=86400"]),
            (&["airlock.policy.idle_logout_s"], d.clone(),
                &["kernel command line: idle_logout_s=: not a whole number"]),
            (&["airlock.policy.document_key=rsa4096"], d.clone(),
                &["kernel command line: document_key cannot be set on the kernel command line; ignored"]),
            (&["airlock.policy.argon2_p=1"], d.clone(),
                &["kernel command line: argon2_p cannot be set on the kernel command line; ignored"]),
            (&["airlock.policy.nope=1", "airlock.policy.idle_logout_s=30"], Policy { idle_logout_s: 30, ..d.clone() },
                &["kernel command line: unknown policy key `nope`"]),
        ];
        for (words, want, refusals) in cases {
            let mut p = d.clone();
            let got: Vec<String> = p
                .tighten(words.iter().copied())
                .iter()
                .map(|e| e.to_string())
                .collect();
            assert_eq!(&p, want, "{words:?}");
            assert_eq!(got, *refusals, "{words:?}");
        }
    }

    #[test]
    fn failure_delay_table() {
        let p = Policy::default();
        for (failures, ms) in [
            (0, 0),
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (5, 16_000),
            (6, 16_000),
            (u64::MAX, 16_000),
        ] {
            assert_eq!(p.failure_delay_ms(failures), ms, "{failures}");
        }
        let zero = Policy {
            failure_delay_base_ms: 0,
            ..Policy::default()
        };
        assert_eq!(zero.failure_delay_ms(3), 0);
    }
}
