//! Times as the report shows them: UTC `YYYY-MM-DD HH:MM:SS`, days, and
//! time since boot.
//!
//! The civil-from-days conversion is the one the manifests already use
//! (`airlock_formats::manifest::format_rfc3339`, Howard Hinnant's
//! algorithm), not a second copy; the tests here pin its output for the
//! report's own forms (leap days, century rules, the end of 9999).

use airlock_formats::manifest::format_rfc3339;

/// Seconds in a day (UNIX time has no leap seconds).
pub const DAY: u64 = 86_400;

/// `YYYY-MM-DD HH:MM:SS` (UTC) of UNIX seconds.
pub fn utc(unix: u64) -> String {
    // format_rfc3339 gives `YYYY-MM-DDTHH:MM:SSZ`.
    let s = format_rfc3339(unix);
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

/// `YYYY-MM-DD` (UTC) of a day number (UNIX seconds / [`DAY`]).
pub fn day(days: u64) -> String {
    let s = utc(days.saturating_mul(DAY));
    s.split(' ').next().unwrap_or_default().to_owned()
}

/// Time since boot from milliseconds: `1h02m03.456s`, `2m03.456s`, `3.456s`.
pub fn uptime(ms: u64) -> String {
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    match (h, m) {
        (0, 0) => format!("{s}.{frac:03}s"),
        (0, _) => format!("{m}m{s:02}.{frac:03}s"),
        _ => format!("{h}h{m:02}m{s:02}.{frac:03}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_forms() {
        // (UNIX seconds, expected; checked with `date -u -d @N`)
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01 00:00:00"),
            (951_782_400, "2000-02-29 00:00:00"),
            (951_868_799, "2000-02-29 23:59:59"),
            (1_735_689_599, "2024-12-31 23:59:59"),
            (4_107_542_400, "2100-03-01 00:00:00"),
            (1_796_357_711, "2026-12-04 04:15:11"),
            (253_402_300_799, "9999-12-31 23:59:59"),
        ];
        for &(unix, want) in cases {
            assert_eq!(utc(unix), want, "{unix}");
            assert_eq!(day(unix / DAY), want[..10], "{unix}");
        }
        // No panic at the end of the range (a corrupt clock).
        assert!(!utc(u64::MAX).is_empty());
        assert!(!day(u64::MAX).is_empty());
    }

    #[test]
    fn uptime_forms() {
        // (milliseconds, expected)
        let cases: &[(u64, &str)] = &[
            (0, "0.000s"),
            (8_412, "8.412s"),
            (209_118, "3m29.118s"),
            (3_723_004, "1h02m03.004s"),
            (90_000_000, "25h00m00.000s"),
        ];
        for &(ms, want) in cases {
            assert_eq!(uptime(ms), want, "{ms}");
        }
    }
}
