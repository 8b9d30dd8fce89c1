//! Reaping: collect every exited child (ours, and orphans re-parented to
//! PID 1) without blocking. Called on each SIGCHLD, and on every loop turn
//! as a fallback (signals coalesce).

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// One reaped child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub pid: i32,
    /// `exit 0`, `exit 3`, `signal SIGSEGV`, ...
    pub status: String,
    /// Exit code when the child exited normally.
    pub code: Option<i32>,
}

/// Describes a wait status in words.
pub fn describe(ws: &WaitStatus) -> (String, Option<i32>) {
    match ws {
        WaitStatus::Exited(_, c) => (format!("exit {c}"), Some(*c)),
        WaitStatus::Signaled(_, s, core) => (
            format!(
                "signal {}{}",
                s.as_str(),
                if *core { " (core)" } else { "" }
            ),
            None,
        ),
        other => (format!("{other:?}"), None),
    }
}

/// Reaps every child that has exited, never blocking.
pub fn reap_all() -> Vec<Reaped> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break,
            Ok(ws) => {
                let Some(pid) = ws.pid() else { break };
                // Stopped/continued children are not exits; only exits count.
                if matches!(ws, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                    let (status, code) = describe(&ws);
                    out.push(Reaped {
                        pid: pid.as_raw(),
                        status,
                        code,
                    });
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(_) => break, // ECHILD: no children at all
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn descriptions() {
        let p = Pid::from_raw(5);
        assert_eq!(
            describe(&WaitStatus::Exited(p, 3)),
            ("exit 3".into(), Some(3))
        );
        assert_eq!(
            describe(&WaitStatus::Signaled(p, Signal::SIGSEGV, false)),
            ("signal SIGSEGV".into(), None)
        );
    }
}
