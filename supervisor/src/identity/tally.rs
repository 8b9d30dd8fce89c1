//! Failed-login counters and account locks in `identity/tally.json`:
//! wall-clock based so a lock survives a reboot (pam_faillock keeps its
//! tally in /run). The rules are pure functions of the entry, the policy and
//! `now` (Unix seconds); `load`/`save` do the I/O.
//!
//! A clock that went backwards (dead CMOS battery, `clock set`) never ends a
//! lock early: a lock whose start lies in the future is restarted at `now`.

use super::policy::Policy;
use super::store::{self, StoreError};
use airlock_formats::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// The tally file in the identity directory.
pub const TALLY_FILE: &str = "tally.json";
const FORMAT_VERSION: u32 = 1;

/// What went wrong reading or writing the tally.
#[derive(Debug, Error)]
pub enum TallyError {
    #[error("tally: {0}")]
    Store(#[from] StoreError),
    #[error("tally file: {0}")]
    Json(String),
}

/// One account's failures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Failed logins in a row.
    pub failures: u64,
    /// Time of the last failure.
    pub last_failure: u64,
    /// `[start, end)` of the current lock, if any.
    pub locked: Option<(u64, u64)>,
}

/// The tally file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tally {
    pub format: u32,
    pub accounts: BTreeMap<String, Entry>,
}

/// May this account try a passphrase now?
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Open,
    Locked { until: u64, failures: u64 },
}

/// Outcome of one failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub failures: u64,
    /// Wait before the next attempt.
    pub delay: Duration,
    /// This failure locked the account until then.
    pub locked_until: Option<u64>,
}

/// Checks the lock at `now`, updating `entry` where time moved: an expired
/// lock is cleared with its failures; a lock that started after `now` (the
/// clock went back) is restarted at `now`. Returns whether `entry` changed.
pub fn check(entry: &mut Entry, policy: &Policy, now: u64) -> (Verdict, bool) {
    let Some((start, end)) = entry.locked else {
        return (Verdict::Open, false);
    };
    if now < start {
        let until = now.saturating_add(policy.lockout_s);
        entry.locked = Some((now, until));
        entry.last_failure = now;
        return (
            Verdict::Locked {
                until,
                failures: entry.failures,
            },
            true,
        );
    }
    if now < end {
        return (
            Verdict::Locked {
                until: end,
                failures: entry.failures,
            },
            false,
        );
    }
    *entry = Entry::default();
    (Verdict::Open, true)
}

/// Records one wrong passphrase at `now` (the caller checked the lock
/// first).
pub fn record_failure(entry: &mut Entry, policy: &Policy, now: u64) -> Failure {
    entry.failures = entry.failures.saturating_add(1);
    entry.last_failure = now;
    let mut locked_until = None;
    if entry.failures >= policy.lockout_failures {
        let until = now.saturating_add(policy.lockout_s);
        entry.locked = Some((now, until));
        locked_until = Some(until);
    }
    Failure {
        failures: entry.failures,
        delay: Duration::from_millis(policy.failure_delay_ms(entry.failures)),
        locked_until,
    }
}

/// Reads the tally; absent = empty. A damaged tally is an error (the login
/// is refused rather than the counters forgotten).
pub fn load(root: &Path) -> Result<Tally, TallyError> {
    let path = store::identity_dir(root).join(TALLY_FILE);
    match store::read_small(&path)? {
        None => Ok(Tally {
            format: FORMAT_VERSION,
            accounts: BTreeMap::new(),
        }),
        Some(bytes) => {
            let t: Tally =
                serde_json::from_slice(&bytes).map_err(|e| TallyError::Json(e.to_string()))?;
            if t.format != FORMAT_VERSION {
                return Err(TallyError::Json(format!("format {}", t.format)));
            }
            Ok(t)
        }
    }
}

/// Writes the tally atomically.
pub fn save(root: &Path, tally: &Tally) -> Result<(), TallyError> {
    let dir = store::identity_dir(root);
    store::ensure_dir(&dir)?;
    let mut text =
        serde_json::to_string_pretty(tally).map_err(|e| TallyError::Json(e.to_string()))?;
    text.push('\n');
    write_atomic(&dir, TALLY_FILE, text.as_bytes()).map_err(StoreError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::default() // 5 failures, 600 s, 1 s base
    }

    #[test]
    fn failures_grow_the_delay_then_lock() {
        let p = policy();
        let mut e = Entry::default();
        // (now, failures, delay ms, locked until)
        let steps: &[(u64, u64, u64, Option<u64>)] = &[
            (1000, 1, 1000, None),
            (1001, 2, 2000, None),
            (1003, 3, 4000, None),
            (1007, 4, 8000, None),
            (1015, 5, 16000, Some(1615)),
        ];
        for &(now, failures, ms, locked) in steps {
            assert_eq!(check(&mut e, &p, now).0, Verdict::Open, "at {now}");
            let f = record_failure(&mut e, &p, now);
            assert_eq!(
                (f.failures, f.delay, f.locked_until),
                (failures, Duration::from_millis(ms), locked),
                "at {now}"
            );
        }
        assert_eq!(e.locked, Some((1015, 1615)));
    }

    #[test]
    fn lock_verdicts_table() {
        let p = policy();
        let locked = Entry {
            failures: 5,
            last_failure: 1000,
            locked: Some((1000, 1600)),
        };
        // (entry, now, verdict, entry after)
        let cases: &[(Entry, u64, Verdict, Entry)] = &[
            (Entry::default(), 5, Verdict::Open, Entry::default()),
            (
                Entry {
                    failures: 3,
                    last_failure: 900,
                    locked: None,
                },
                5,
                Verdict::Open,
                Entry {
                    failures: 3,
                    last_failure: 900,
                    locked: None,
                },
            ),
            (
                locked.clone(),
                1000,
                Verdict::Locked {
                    until: 1600,
                    failures: 5,
                },
                locked.clone(),
            ),
            (
                locked.clone(),
                1599,
                Verdict::Locked {
                    until: 1600,
                    failures: 5,
                },
                locked.clone(),
            ),
            // expired: cleared, counting starts again
            (locked.clone(), 1600, Verdict::Open, Entry::default()),
            (locked.clone(), 99_999, Verdict::Open, Entry::default()),
            // clock went back before the lock began: the lock restarts at now
            (
                locked.clone(),
                10,
                Verdict::Locked {
                    until: 610,
                    failures: 5,
                },
                Entry {
                    failures: 5,
                    last_failure: 10,
                    locked: Some((10, 610)),
                },
            ),
            (
                locked.clone(),
                999,
                Verdict::Locked {
                    until: 1599,
                    failures: 5,
                },
                Entry {
                    failures: 5,
                    last_failure: 999,
                    locked: Some((999, 1599)),
                },
            ),
        ];
        for (before, now, verdict, after) in cases {
            let mut e = before.clone();
            let (v, changed) = check(&mut e, &p, *now);
            assert_eq!(&v, verdict, "{before:?} at {now}");
            assert_eq!(&e, after, "{before:?} at {now}");
            assert_eq!(changed, before != after, "{before:?} at {now}");
        }
    }

    #[test]
    fn a_clock_stepping_back_repeatedly_never_unlocks() {
        let p = policy();
        let mut e = Entry {
            failures: 5,
            last_failure: 1000,
            locked: Some((1000, 1600)),
        };
        // each boot the clock reads earlier: still locked each time
        for now in [900, 500, 100, 0] {
            assert!(
                matches!(check(&mut e, &p, now).0, Verdict::Locked { .. }),
                "{now}"
            );
        }
        // and it takes a full lockout_s of clock time from the last reading
        assert!(matches!(check(&mut e, &p, 599).0, Verdict::Locked { .. }));
        assert_eq!(check(&mut e, &p, 600).0, Verdict::Open);
    }

    #[test]
    fn tally_file_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let empty = load(dir.path()).unwrap();
        assert!(empty.accounts.is_empty());
        let mut t = empty.clone();
        t.accounts.insert(
            "alice".into(),
            Entry {
                failures: 2,
                last_failure: 7,
                locked: None,
            },
        );
        save(dir.path(), &t).unwrap();
        assert_eq!(load(dir.path()).unwrap(), t);
        let path = dir.path().join("identity").join(TALLY_FILE);
        std::fs::write(&path, br#"{"format":1,"accounts":{},"extra":1}"#).unwrap();
        assert!(load(dir.path()).is_err());
        std::fs::write(&path, br#"{"format":2,"accounts":{}}"#).unwrap();
        assert!(load(dir.path()).is_err());
    }
}
