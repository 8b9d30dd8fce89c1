//! Structured supervisor events, kept in memory (bounded) for the audit
//! module that comes later, and mirrored to kmsg as log lines.

use std::collections::VecDeque;
use std::time::Duration;

/// Number of events kept.
pub const CAPACITY: usize = 256;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    ServiceStarted {
        service: String,
        pid: i32,
    },
    ServiceExited {
        service: String,
        status: String,
        restart_in: Duration,
    },
    ServiceUnavailable {
        service: String,
    },
    LockdownFailed {
        step: String,
        reason: String,
    },
    UsbInserted {
        name: String,
        bytes: u64,
    },
    UsbRemoved {
        name: String,
    },
    Shutdown {
        action: String,
        cause: String,
    },
}

/// One event with the boot time at which it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub kind: EventKind,
}

/// Ring buffer of the last `CAPACITY` events.
#[derive(Debug, Default)]
pub struct EventLog {
    events: VecDeque<Event>,
    dropped: u64,
}

impl EventLog {
    pub fn push(&mut self, at: Duration, kind: EventKind) {
        if self.events.len() == CAPACITY {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(Event { at, kind });
    }

    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded() {
        let mut l = EventLog::default();
        for i in 0..(CAPACITY + 3) {
            l.push(
                Duration::from_secs(i as u64),
                EventKind::UsbRemoved {
                    name: format!("sd{i}"),
                },
            );
        }
        assert_eq!(l.iter().count(), CAPACITY);
        assert_eq!(l.dropped(), 3);
        assert_eq!(l.iter().next().map(|e| e.at), Some(Duration::from_secs(3)));
    }
}
