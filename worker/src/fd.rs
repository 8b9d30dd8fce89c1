//! Taking ownership of the protocol descriptor inherited from the spawner.

use std::fs::File;
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};

/// Errors of taking the inherited descriptor.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// The number is one of stdin/stdout/stderr or negative.
    #[error("protocol fd {0}: must be 3 or higher")]
    Reserved(RawFd),
    /// Nothing is open under that number.
    #[error("protocol fd {fd}: not open ({source})")]
    NotOpen {
        /// The number.
        fd: RawFd,
        /// Cause.
        #[source]
        source: rustix::io::Errno,
    },
    /// Setting close-on-exec failed.
    #[error("protocol fd {fd}: setting close-on-exec: {source}")]
    Cloexec {
        /// The number.
        fd: RawFd,
        /// Cause.
        #[source]
        source: rustix::io::Errno,
    },
}

/// Takes ownership of descriptor `fd` (a socketpair end) as a `File`.
///
/// Must be called once per number, before anything else in the process could
/// open a descriptor under it (i.e. first thing in `main`).
pub fn take_inherited(fd: RawFd) -> Result<File, FdError> {
    if fd < 3 {
        return Err(FdError::Reserved(fd));
    }
    // SAFETY: the borrow lives only for the fcntl calls below; if `fd` is not
    // open the calls fail with EBADF and nothing else happens.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags =
        rustix::io::fcntl_getfd(borrowed).map_err(|source| FdError::NotOpen { fd, source })?;
    rustix::io::fcntl_setfd(borrowed, flags | rustix::io::FdFlags::CLOEXEC)
        .map_err(|source| FdError::Cloexec { fd, source })?;
    // SAFETY: `fd` is open (checked above), was handed to this process by its
    // spawner for exactly this use, and this is the only owner created for it
    // (callers take it once, at the start of `main`).
    Ok(unsafe { File::from_raw_fd(fd) })
}
