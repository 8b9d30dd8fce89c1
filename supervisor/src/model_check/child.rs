//! `airlock-init model-check STORE [--trust FILE] [--record DIR]`: the
//! boot's store recovery and at-rest check, in a child of PID 1 (several
//! GB of hashing; PID 1 never reads store bytes itself).
//!
//! Steps: lower its CPU and I/O priority; if STORE has no `state.json` (not
//! provisioned, nothing imported) print nothing and exit 0; run
//! `custody::recover` (finish interrupted removals, remove leftovers of
//! interrupted imports) and print a `recovered` line per path; then for
//! every model with an active version print `checking`, run
//! `at_rest::verify_at_rest` against the trust file and print `ok` or
//! `refused` (format: [`super::line`]), and write the same line to the
//! per-boot record ([`super::record`]). Exit 0 whatever the verdicts; 2 on
//! a usage error. The defaults are the appliance's paths; the options
//! exist for host tests.

use super::line::Line;
use super::record::{self, RECORD_DIR};
use crate::models::TRUST_FILE;
use airlock_formats::at_rest;
use airlock_formats::custody;
use airlock_formats::state::STATE_FILE;
use airlock_formats::trust::TrustFile;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use thiserror::Error;

/// Failing operation of the child's own set-up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChildError {
    #[error("usage: airlock-init model-check STORE [--trust FILE] [--record DIR] (got {0:?})")]
    Usage(Vec<String>),
}

/// What to check and where to write.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub store: PathBuf,
    pub trust: PathBuf,
    pub record: PathBuf,
}

/// Parses the arguments after `model-check`.
pub fn parse_args(args: &[String]) -> Result<Args, ChildError> {
    let usage = || ChildError::Usage(args.to_vec());
    let mut it = args.iter();
    let store = it
        .next()
        .filter(|s| !s.starts_with("--"))
        .ok_or_else(usage)?;
    let mut out = Args {
        store: PathBuf::from(store),
        trust: PathBuf::from(TRUST_FILE),
        record: PathBuf::from(RECORD_DIR),
    };
    while let Some(opt) = it.next() {
        let value = it.next().ok_or_else(usage)?;
        match opt.as_str() {
            "--trust" => out.trust = PathBuf::from(value),
            "--record" => out.record = PathBuf::from(value),
            _ => return Err(usage()),
        }
    }
    Ok(out)
}

/// Entry point of `airlock-init model-check …`.
pub fn main_from_args(args: &[String]) -> ExitCode {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("airlock-init: {e}");
            return ExitCode::from(2);
        }
    };
    lower_priority();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run(&a, &mut |l| {
        // PID 1 reads line by line; a closed pipe only loses the output.
        let _ = writeln!(out, "{l}");
        let _ = out.flush();
    });
    ExitCode::SUCCESS
}

/// Runs the recovery and the check, handing each line to `emit`.
pub fn run(a: &Args, emit: &mut dyn FnMut(&Line)) {
    if !a.store.join(STATE_FILE).is_file() {
        return;
    }
    match custody::recover(&a.store) {
        Ok(paths) => {
            for path in paths {
                // Already escaped by `recover`.
                emit(&Line::Recovered { path });
            }
        }
        Err(e) => emit(&Line::error(&format!("recover the store: {e}"))),
    }
    let models = match custody::models(&a.store) {
        Ok(m) => m,
        Err(e) => return emit(&Line::error(&format!("list models: {e}"))),
    };
    let trust = load_trust(&a.trust);
    for m in models {
        let Some(version) = m.active else { continue };
        let bytes = m
            .versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.size)
            .unwrap_or(0);
        emit(&Line::Checking {
            name: m.name.clone(),
            version,
            bytes,
        });
        let started = Instant::now();
        let verdict = match &trust {
            Ok(t) => at_rest::verify_at_rest(&a.store, t, &m.name, version, &mut |_| {})
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        let l = match verdict {
            Ok(()) => Line::Ok {
                name: m.name.clone(),
                version,
                bytes,
                millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            },
            Err(why) => Line::refused(&m.name, version, &why),
        };
        if let Err(e) = record::write(&a.record, &l) {
            // Without a record no worker gets the model: say why.
            emit(&Line::error(&e.to_string()));
        }
        emit(&l);
    }
}

fn load_trust(path: &Path) -> Result<TrustFile, String> {
    let shown = airlock_formats::escape::path(path);
    let bytes = std::fs::read(path).map_err(|e| format!("read the trust file {shown}: {e}"))?;
    TrustFile::parse(&bytes).map_err(|e| format!("trust file {shown}: {e}"))
}

/// Nice 10 and the lowest best-effort I/O priority: the consoles stay
/// responsive while gigabytes are hashed.
fn lower_priority() {
    // SAFETY: setpriority on our own process with integer arguments.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_BE: libc::c_long = 2;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    let prio = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7;
    // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, 0 = self, prio): integers only.
    let _ = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = parse_args(&v(&["/s"])).unwrap();
        assert_eq!(a.store, PathBuf::from("/s"));
        assert_eq!(a.trust, PathBuf::from(TRUST_FILE));
        assert_eq!(a.record, PathBuf::from(RECORD_DIR));
        let a = parse_args(&v(&["/s", "--record", "/r", "--trust", "/t"])).unwrap();
        assert_eq!((a.trust, a.record), ("/t".into(), "/r".into()));
        for bad in [
            &[][..],
            &["--trust", "/t"][..],
            &["/s", "--trust"][..],
            &["/s", "--other", "x"][..],
        ] {
            assert!(parse_args(&v(bad)).is_err(), "{bad:?}");
        }
    }
}
