//! Time since kernel start (CLOCK_BOOTTIME), the supervisor's own clock.

use std::time::Duration;

/// Time since the kernel started, including suspend. Zero if the clock
/// cannot be read (it always can on Linux).
pub fn boottime() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => Duration::new(
            u64::try_from(ts.tv_sec()).unwrap_or(0),
            u32::try_from(ts.tv_nsec()).unwrap_or(0),
        ),
        Err(_) => Duration::ZERO,
    }
}

/// `12.345 s`
pub fn secs3(d: Duration) -> String {
    format!("{}.{:03} s", d.as_secs(), d.subsec_millis())
}
