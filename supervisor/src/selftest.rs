//! `selftest`: the sandbox probe suite of airlock-sandbox, run from the
//! console child (never from PID 1), with any panic contained.

use airlock_sandbox::probe_suite;
use airlock_sandbox::LandlockMode;
use std::path::Path;

/// The probe binary in the image.
pub const PROBE: &str = "/bin/airlock-probe";

/// Runs the suite with Landlock as a hard requirement; returns the text to
/// print (one line per check and the `probe: N/N checks passed` summary).
pub fn run(probe: &Path) -> String {
    if !probe.exists() {
        return format!(
            "selftest: not available: {} is missing from this image\n",
            probe.display()
        );
    }
    match std::panic::catch_unwind(|| probe_suite::run(probe, LandlockMode::Hard)) {
        Ok(Ok(report)) => {
            let verdict = if report.all_passed() {
                "selftest: passed"
            } else {
                "selftest: FAILED"
            };
            format!("{report}\n{verdict}\n")
        }
        Ok(Err(e)) => format!("selftest: could not run: {e}\n"),
        Err(_) => "selftest: internal error in the probe suite (contained)\n".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_probe_is_reported() {
        let t = super::run(std::path::Path::new("/nonexistent/airlock-probe"));
        assert_eq!(
            t,
            "selftest: not available: /nonexistent/airlock-probe is missing from this image\n"
        );
    }
}
