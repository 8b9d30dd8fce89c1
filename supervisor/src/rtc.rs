//! Writing the PC's real-time clock (`clock set`): the only time source
//! of an appliance without network. RTC_SET_TIME on /dev/rtc0 in UTC.

use thiserror::Error;

/// Failing operation of an RTC write.
#[derive(Debug, Error)]
pub enum RtcError {
    #[error("open {0}: {1}")]
    Open(String, std::io::Error),
    #[error("RTC_SET_TIME: {0}")]
    Set(nix::Error),
}

// struct rtc_time from <linux/rtc.h>: nine ints, the same as struct tm's
// first nine fields.
#[repr(C)]
#[derive(Default)]
struct RtcTime {
    tm_sec: libc::c_int,
    tm_min: libc::c_int,
    tm_hour: libc::c_int,
    tm_mday: libc::c_int,
    tm_mon: libc::c_int,
    tm_year: libc::c_int,
    tm_wday: libc::c_int,
    tm_yday: libc::c_int,
    tm_isdst: libc::c_int,
}

// RTC_SET_TIME = _IOW('p', 0x0a, struct rtc_time)
nix::ioctl_write_ptr!(rtc_set_time, b'p', 0x0a, RtcTime);

/// Sets the RTC at `path` to `secs` (UNIX seconds, UTC).
pub fn write(path: &std::path::Path, secs: u64) -> Result<(), RtcError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| RtcError::Open(path.display().to_string(), e))?;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = crate::session::civil_from_days(days);
    let c = |v: i64| libc::c_int::try_from(v).unwrap_or(0);
    let t = RtcTime {
        tm_sec: c(i64::try_from(rem % 60).unwrap_or(0)),
        tm_min: c(i64::try_from((rem / 60) % 60).unwrap_or(0)),
        tm_hour: c(i64::try_from(rem / 3600).unwrap_or(0)),
        tm_mday: c(i64::from(d)),
        tm_mon: c(i64::from(m) - 1),
        tm_year: c(y - 1900),
        ..RtcTime::default()
    };
    // SAFETY: the fd is an open RTC device; `t` is a valid rtc_time that
    // the kernel only reads for the duration of the call.
    unsafe { rtc_set_time(f.as_raw_fd(), &t) }
        .map(|_| ())
        .map_err(RtcError::Set)
}
