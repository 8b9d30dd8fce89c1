//! Supervised services: state, restart backoff, restart bookkeeping.
//! Spawning itself is done by the supervisor (it knows what each needs).
//!
//! Backoff: 1 s after the first crash, doubling up to 60 s; a service that
//! ran for 60 s or more counts as healthy again and restarts after 1 s.
//! A service that exits with [`EXIT_UNAVAILABLE`] (e.g. a console whose tty
//! does not exist on this PC) is retried every 60 s, logged once.

use std::time::Duration;

pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff.
pub const STABLE_RUN: Duration = Duration::from_secs(60);
/// Exit status of a service whose device is not there.
pub const EXIT_UNAVAILABLE: i32 = 3;

/// Exponential restart delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    /// Delay before the next start, given how long the last run lasted.
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= STABLE_RUN {
            self.next = BACKOFF_INITIAL;
        }
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
}

/// Where a service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running {
        pid: i32,
        since: Duration,
    },
    /// Waiting to be (re)started at this boot time.
    Waiting {
        until: Duration,
    },
    /// Stopped for shutdown.
    Stopped,
}

/// A supervised service.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub state: State,
    pub backoff: Backoff,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub unavailable: bool,
}

/// What the supervisor should report about an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitDecision {
    pub restart_in: Duration,
    /// False when the same "unavailable" exit was already reported.
    pub report: bool,
}

impl Service {
    pub fn new(name: impl Into<String>) -> Service {
        Service {
            name: name.into(),
            state: State::Waiting {
                until: Duration::ZERO,
            },
            backoff: Backoff::default(),
            restarts: 0,
            last_exit: None,
            unavailable: false,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    pub fn started(&mut self, pid: i32, now: Duration) {
        self.state = State::Running { pid, since: now };
    }

    /// Records a failed spawn (treated like an immediate exit).
    pub fn spawn_failed(&mut self, now: Duration, reason: String) -> ExitDecision {
        self.state = State::Running { pid: 0, since: now };
        self.exited(now, reason, None)
    }

    /// Records an exit and schedules the restart.
    pub fn exited(&mut self, now: Duration, status: String, code: Option<i32>) -> ExitDecision {
        let since = match self.state {
            State::Running { since, .. } => since,
            _ => now,
        };
        if self.state == State::Stopped {
            return ExitDecision {
                restart_in: Duration::ZERO,
                report: false,
            };
        }
        let ran_for = now.saturating_sub(since);
        let was_unavailable = self.unavailable;
        let (restart_in, report) = if code == Some(EXIT_UNAVAILABLE) {
            self.unavailable = true;
            (BACKOFF_MAX, !was_unavailable)
        } else {
            self.unavailable = false;
            (self.backoff.after_exit(ran_for), true)
        };
        self.restarts += 1;
        self.last_exit = Some(status);
        self.state = State::Waiting {
            until: now + restart_in,
        };
        ExitDecision { restart_in, report }
    }

    /// Whether the service should be started now.
    pub fn due(&self, now: Duration) -> bool {
        matches!(self.state, State::Waiting { until } if until <= now)
    }

    /// Time until the next start, if waiting.
    pub fn wait_left(&self, now: Duration) -> Option<Duration> {
        match self.state {
            State::Waiting { until } => Some(until.saturating_sub(now)),
            _ => None,
        }
    }

    /// `running (pid 42, 3 restarts)` for `status`.
    pub fn describe(&self) -> String {
        let tail = match &self.last_exit {
            Some(s) if self.restarts > 0 => format!(", {} restart(s), last {s}", self.restarts),
            _ => String::new(),
        };
        match self.state {
            State::Running { pid, .. } => format!("running (pid {pid}{tail})"),
            State::Waiting { .. } if self.unavailable => {
                "device unavailable, retrying every 60 s".to_string()
            }
            State::Waiting { .. } => format!(
                "restarting{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", &tail[2..])
                }
            ),
            State::Stopped => "stopped".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let seq: Vec<u64> = (0..8).map(|_| b.after_exit(s(0)).as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.after_exit(s(61)), s(1));
        assert_eq!(b.after_exit(s(1)), s(2));
    }

    #[test]
    fn crash_schedules_restart() {
        let mut sv = Service::new("console:ttyS0");
        assert!(sv.due(s(0)));
        sv.started(42, s(1));
        assert_eq!(sv.pid(), Some(42));
        let d = sv.exited(s(2), "signal SIGSEGV".into(), None);
        assert_eq!(
            d,
            ExitDecision {
                restart_in: s(1),
                report: true
            }
        );
        assert!(!sv.due(s(2)));
        assert!(sv.due(s(3)));
        assert_eq!(sv.restarts, 1);
        assert_eq!(
            sv.describe(),
            "restarting (1 restart(s), last signal SIGSEGV)"
        );
        sv.started(43, s(3));
        assert_eq!(
            sv.exited(s(3), "exit 101".into(), Some(101)).restart_in,
            s(2)
        );
        assert_eq!(sv.describe(), "restarting (2 restart(s), last exit 101)");
    }

    #[test]
    fn unavailable_device_is_retried_slowly_and_reported_once() {
        let mut sv = Service::new("console:tty1");
        sv.started(7, s(0));
        assert_eq!(
            sv.exited(s(0), "exit 3".into(), Some(EXIT_UNAVAILABLE)),
            ExitDecision {
                restart_in: BACKOFF_MAX,
                report: true
            }
        );
        sv.started(8, s(60));
        assert_eq!(
            sv.exited(s(60), "exit 3".into(), Some(EXIT_UNAVAILABLE)),
            ExitDecision {
                restart_in: BACKOFF_MAX,
                report: false
            }
        );
        assert_eq!(sv.describe(), "device unavailable, retrying every 60 s");
    }

    #[test]
    fn stopped_services_stay_stopped() {
        let mut sv = Service::new("x");
        sv.started(9, s(0));
        sv.state = State::Stopped;
        assert!(!sv.exited(s(1), "exit 0".into(), Some(0)).report);
        assert_eq!(sv.state, State::Stopped);
        assert!(!sv.due(s(100)));
    }
}
