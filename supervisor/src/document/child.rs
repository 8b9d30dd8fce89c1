//! `airlock-init doc-open`: the sandboxed child that opens one document.
//! On the sandbox's spawn path it is PID 1 of its PID namespace, so it is
//! started with argv[0] = [`ARGV0`] (args: the options below), which
//! `entry()` checks before its PID-1 test. Stdin and stdout are the pipe
//! of [`super::frame`]; it installs its own stage-2 seccomp profile
//! (`seccomp::Profile::DocOpen`) first thing (before any document byte is
//! read; the spawner waits for it), then runs one
//! [`super::frame::serve_open`] exchange.
//! It holds no key: the parent sends only the session key.
//!
//! Exit status: 0 when the exchange completed (text or refusal sent, or
//! aborted by the parent), 2 on a usage error, 3 when the pipe broke or
//! stage 2 could not be installed.

use std::fs::File;
use std::os::fd::FromRawFd as _;
use std::path::Path;
use std::process::ExitCode;

use airlock_sandbox::Spec;

use super::frame::serve_open;
use super::open::Limits;

/// argv[0] that selects this mode (the kernel gives the real PID 1 "/init").
pub const ARGV0: &str = "airlock-doc-open";

/// The sandbox spec of a `doc-open` child of `program` (the running
/// `airlock-init`): argv[0] [`ARGV0`], the limits as arguments, no model
/// directory, a 1 MiB scratch (it writes nothing), the spawner's default
/// stage-2 count (every profile installs the same number of programs).
/// The caller adds fds 0 and 1 (the pipe) and 2.
pub fn spec(program: &Path, limits: Limits) -> Spec {
    let mut spec = Spec::new(program);
    spec.argv0 = ARGV0.into();
    spec.args = vec![
        "--max-ciphertext".into(),
        limits.max_ciphertext.to_string().into(),
        "--max-plaintext".into(),
        limits.max_plaintext.to_string().into(),
    ];
    spec.scratch_size = 1 << 20;
    spec
}

/// Parses `[--max-ciphertext N] [--max-plaintext N]`.
fn parse_args(args: &[String]) -> Option<Limits> {
    let mut limits = Limits::default();
    let mut it = args.iter();
    while let Some(opt) = it.next() {
        let n: usize = it.next()?.parse().ok()?;
        match opt.as_str() {
            "--max-ciphertext" => limits.max_ciphertext = n,
            "--max-plaintext" => limits.max_plaintext = n,
            _ => return None,
        }
    }
    Some(limits)
}

/// Entry point of `airlock-init doc-open …`.
pub fn main_from_args(args: &[String]) -> ExitCode {
    let Some(limits) = parse_args(args) else {
        eprintln!(
            "airlock-init: usage: airlock-init doc-open [--max-ciphertext N] [--max-plaintext N] \
             (got {args:?})"
        );
        return ExitCode::from(2);
    };
    if let Err(e) = airlock_sandbox::seccomp::install(airlock_sandbox::seccomp::Profile::DocOpen) {
        eprintln!("airlock-init doc-open: install stage 2: {e}");
        return ExitCode::from(3);
    }
    // Unbuffered: std's stdin/stdout buffers would keep copies of the
    // session key and the text in memory that is never wiped.
    // SAFETY: fds 0 and 1 are open for the whole life of the process (the
    // spawner hands them over); ManuallyDrop keeps these handles from
    // closing them.
    let mut input = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    // SAFETY: as above, for fd 1.
    let mut output = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    match serve_open(&mut *input, &mut *output, limits) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock-init doc-open: {e}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_table() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&[]), Some(Limits::default()));
        assert_eq!(
            parse_args(&s(&["--max-ciphertext", "10", "--max-plaintext", "20"])),
            Some(Limits {
                max_ciphertext: 10,
                max_plaintext: 20
            })
        );
        assert_eq!(parse_args(&s(&["--max-ciphertext"])), None);
        assert_eq!(parse_args(&s(&["--bogus", "1"])), None);
        assert_eq!(parse_args(&s(&["--max-plaintext", "x"])), None);
    }
}
