//! Clean shutdown of PID 1: tell the consoles, stop the services (SIGTERM,
//! then SIGKILL after a grace period, then every other process), sync,
//! unmount in reverse order (lazily where busy), sync, reboot(2).

use crate::mounts::MountTable;
use crate::reaper;
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::time::{Duration, Instant};
use thiserror::Error;

/// A step of the shutdown that did not go as planned (logged; the shutdown
/// goes on).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShutdownError {
    #[error("processes still running {0} s after SIGTERM: killed")]
    StillRunning(u64),
    #[error("unmount {0}")]
    Unmount(String),
}

/// Time services get to exit after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(3);

/// What to do at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Poweroff,
    Reboot,
}

impl Mode {
    /// The line written on every console.
    pub fn message(self) -> &'static str {
        match self {
            Mode::Poweroff => "airlock: powering off",
            Mode::Reboot => "airlock: rebooting",
        }
    }
}

/// Writes a line directly to each console tty (non-blocking: a stuck
/// serial line must not stop the shutdown).
pub fn tell_consoles(ttys: &[String], line: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    for t in ttys {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(format!("/dev/{t}"))
        {
            let _ = f.write_all(format!("\r\n{line}\r\n").as_bytes());
        }
    }
}

/// Waits until no child is left or `limit` passed; reaps on the way.
fn wait_children(limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        reaper::reap_all();
        // ECHILD from a WNOHANG probe means nothing is left.
        if let Err(nix::Error::ECHILD) = nix::sys::wait::waitpid(
            Pid::from_raw(-1),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops every process (services first), syncs and unmounts. Returns the
/// problems met (logged by the caller).
pub fn stop_everything(service_pids: &[i32], mounts: &mut MountTable) -> Vec<ShutdownError> {
    let mut problems = Vec::new();
    for &pid in service_pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    // Everyone else (orphans of services) too; -1 never includes PID 1.
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    if !wait_children(GRACE) {
        problems.push(ShutdownError::StillRunning(GRACE.as_secs()));
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        wait_children(Duration::from_secs(1));
    }
    nix::unistd::sync();
    problems.extend(mounts.unmount_all().into_iter().map(ShutdownError::Unmount));
    nix::unistd::sync();
    problems
}

/// The final system call. Only returns (with the reason) if it failed.
pub fn finish(mode: Mode) -> nix::Error {
    let r = match mode {
        Mode::Poweroff => reboot(RebootMode::RB_POWER_OFF),
        Mode::Reboot => reboot(RebootMode::RB_AUTOBOOT),
    };
    match r {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn problem_lines() {
        assert_eq!(
            super::ShutdownError::StillRunning(3).to_string(),
            "processes still running 3 s after SIGTERM: killed"
        );
        assert_eq!(
            super::ShutdownError::Unmount("/tmp: EBUSY, lazy: EINVAL".into()).to_string(),
            "unmount /tmp: EBUSY, lazy: EINVAL"
        );
    }

    #[test]
    fn messages() {
        assert_eq!(super::Mode::Poweroff.message(), "airlock: powering off");
        assert_eq!(super::Mode::Reboot.message(), "airlock: rebooting");
    }
}
