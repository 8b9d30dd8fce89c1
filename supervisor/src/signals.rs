//! Signals of PID 1, read synchronously through a signalfd so the event
//! loop handles them like any other input.
//!
//! Policy: SIGCHLD reap; SIGTERM and SIGUSR2 power off; SIGINT (which the
//! kernel sends for ctrl-alt-del once `reboot(RB_DISABLE_CAD)` is set) and
//! SIGUSR1 reboot; SIGHUP and SIGPIPE ignored.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use thiserror::Error;

/// Failing operation of this module.
#[derive(Debug, Error)]
pub enum SignalsError {
    #[error("block signals: {0}")]
    Block(nix::Error),
    #[error("signalfd: {0}")]
    SignalFd(nix::Error),
    #[error("disable ctrl-alt-del: {0}")]
    Cad(nix::Error),
}

/// What a signal asks PID 1 to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reap,
    Poweroff,
    Reboot,
    Ignore,
}

/// The signals PID 1 handles and what each means (policy as data).
pub const POLICY: &[(Signal, Action)] = &[
    // A child exited: reap it.
    (Signal::SIGCHLD, Action::Reap),
    // Polite stop request (e.g. from a future service or the kernel's orderly_poweroff path).
    (Signal::SIGTERM, Action::Poweroff),
    // ctrl-alt-del: restart, as a person pressing it expects.
    (Signal::SIGINT, Action::Reboot),
    (Signal::SIGUSR1, Action::Reboot),
    (Signal::SIGUSR2, Action::Poweroff),
    // No terminal session to hang up; writes to closed pipes are errors, not deaths.
    (Signal::SIGHUP, Action::Ignore),
    (Signal::SIGPIPE, Action::Ignore),
];

/// Maps a signal number to its action.
pub fn classify(signo: i32) -> Action {
    POLICY
        .iter()
        .find(|(s, _)| *s as i32 == signo)
        .map(|(_, a)| *a)
        .unwrap_or(Action::Ignore)
}

/// Blocks the policy's signals and returns a non-blocking signalfd for them.
pub fn signalfd() -> Result<SignalFd, SignalsError> {
    let mut set = SigSet::empty();
    for (s, _) in POLICY {
        set.add(*s);
    }
    set.thread_block().map_err(SignalsError::Block)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(SignalsError::SignalFd)
}

/// Makes ctrl-alt-del send SIGINT to PID 1 instead of rebooting at once.
pub fn disable_cad() -> Result<(), SignalsError> {
    nix::sys::reboot::set_cad_enabled(false).map_err(SignalsError::Cad)
}

/// Drains the signalfd: the actions of all pending signals.
pub fn drain(fd: &mut SignalFd) -> Vec<(i32, Action)> {
    let mut out = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        let signo = info.ssi_signo as i32;
        out.push((signo, classify(signo)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert_eq!(classify(libc::SIGCHLD), Action::Reap);
        assert_eq!(classify(libc::SIGTERM), Action::Poweroff);
        assert_eq!(classify(libc::SIGINT), Action::Reboot);
        assert_eq!(classify(libc::SIGHUP), Action::Ignore);
        assert_eq!(classify(libc::SIGWINCH), Action::Ignore);
    }
}
