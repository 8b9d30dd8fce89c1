//! Bounded reading of a worker's replies (the supervisor's side of [`crate::protocol`]).
//!
//! The worker is the least trusted process on the appliance: once compromised it may stall
//! mid-frame, never finish a job, or stream tokens forever. [`Job`] reads its reply frames
//! with three bounds (policy as data, [`REPLY_LIMITS`]): a deadline per frame (from its first
//! byte to its last), a deadline per job (from the request to the last frame), and a bound on
//! the bytes of all frames of the job. Each breach is a one-line error naming the limit.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::protocol::{read_frame, FrameError, MAX_FRAME_LEN};

/// What the supervisor accepts from a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Longest one frame may take from its first byte to its last.
    pub frame: Duration,
    /// Longest a job may take until its last frame (a generation, or the model load).
    pub job: Duration,
    /// Most bytes (length prefixes and payloads) of all frames of one job.
    pub job_bytes: usize,
}

/// The limits used by the worker client (`airlock_worker::client`) and the supervisor's driver
/// (`airlock_supervisor::infer`, which replaces `job` by its caller's deadline for the model
/// load). A `count` reply is one small frame; tokenizing a prompt-sized text (3 MiB) takes
/// seconds, far inside the job limit.
pub const REPLY_LIMITS: ReplyLimits = ReplyLimits {
    // A frame is one write of at most MAX_FRAME_LEN bytes on a local socketpair: it arrives in
    // microseconds; 10 s leaves room for a loaded 2-core machine and QEMU under TCG.
    frame: Duration::from_secs(10),
    // A document job: loading a model and prefilling a 3 MiB prompt at the measured ~0.16x of
    // llama.cpp on 2 cores takes minutes, not hours; one hour bounds a stalled worker.
    job: Duration::from_secs(60 * 60),
    // MAX_NEW_TOKENS (32,768) token frames of ~40 bytes of JSON and a few bytes of text each
    // are ~2 MiB; 16 MiB leaves room for long token pieces and still bounds memory.
    job_bytes: 16 << 20,
};

/// Errors of reading a job's replies; each names the limit or the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// A frame started but did not complete in time.
    #[error("worker reply: a frame did not complete within the per-frame limit of {}s", limit.as_secs_f64())]
    FrameTimeout {
        /// The per-frame limit.
        limit: Duration,
    },
    /// The job did not complete in time.
    #[error("worker reply: the job did not complete within the per-job limit of {}s", limit.as_secs_f64())]
    JobTimeout {
        /// The per-job limit.
        limit: Duration,
    },
    /// The job's frames exceed the byte bound.
    #[error("worker reply: the answer exceeds the limit of {limit} bytes per job")]
    TooLong {
        /// The byte bound.
        limit: usize,
    },
    /// Setting the socket's read timeout failed.
    #[error("worker reply: setting the read timeout: {0}")]
    SetTimeout(#[source] io::Error),
    /// The frame itself was bad or the connection broke.
    #[error("worker reply: {0}")]
    Frame(#[source] FrameError),
}

/// Which deadline a read ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Frame,
    Job,
}

/// A reader that enforces the current frame's and the job's deadlines on every `read`.
struct Deadlines<'a> {
    conn: &'a UnixStream,
    job_end: Instant,
    frame_limit: Duration,
    frame_end: Option<Instant>,
    bytes: usize,
    expired: Option<Expired>,
    timeout_error: Option<io::Error>,
}

impl Read for Deadlines<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (end, which) = match self.frame_end {
            Some(f) if f < self.job_end => (f, Expired::Frame),
            _ => (self.job_end, Expired::Job),
        };
        let now = Instant::now();
        if now >= end {
            self.expired = Some(which);
            return Err(io::ErrorKind::TimedOut.into());
        }
        if let Err(e) = self.conn.set_read_timeout(Some(end - now)) {
            let kind = e.kind();
            self.timeout_error = Some(e);
            return Err(kind.into());
        }
        match (&mut &*self.conn).read(buf) {
            Ok(n) => {
                if n > 0 && self.frame_end.is_none() {
                    self.frame_end = Some(Instant::now() + self.frame_limit);
                }
                self.bytes += n;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.expired = Some(which);
                Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => Err(e),
        }
    }
}

/// The replies of one job on `conn`, read under [`ReplyLimits`].
pub struct Job<'a> {
    conn: &'a UnixStream,
    limits: ReplyLimits,
    job_end: Instant,
    bytes: usize,
}

impl<'a> Job<'a> {
    /// Starts a job now (call it right after sending the request).
    pub fn new(conn: &'a UnixStream, limits: ReplyLimits) -> Self {
        Job {
            conn,
            limits,
            job_end: Instant::now() + limits.job,
            bytes: 0,
        }
    }

    /// The next frame's payload; `None` at a clean end of stream between frames.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ReplyError> {
        let mut r = Deadlines {
            conn: self.conn,
            job_end: self.job_end,
            frame_limit: self.limits.frame,
            frame_end: None,
            bytes: 0,
            expired: None,
            timeout_error: None,
        };
        // Never allocate or drain more than what is left of the job's byte bound.
        let left = self.limits.job_bytes.saturating_sub(self.bytes);
        let max = u32::try_from(left.saturating_sub(4))
            .unwrap_or(u32::MAX)
            .min(MAX_FRAME_LEN);
        let got = read_frame(&mut r, max);
        let (read, expired, timeout_error) = (r.bytes, r.expired, r.timeout_error);
        // Back to blocking reads for any other user of the connection.
        self.conn
            .set_read_timeout(None)
            .map_err(ReplyError::SetTimeout)?;
        self.bytes += read;
        if let Some(e) = timeout_error {
            return Err(ReplyError::SetTimeout(e));
        }
        match (got, expired) {
            (Err(_), Some(Expired::Frame)) => Err(ReplyError::FrameTimeout {
                limit: self.limits.frame,
            }),
            (Err(_), Some(Expired::Job)) => Err(ReplyError::JobTimeout {
                limit: self.limits.job,
            }),
            (Err(FrameError::TooLarge { .. }), None) if max < MAX_FRAME_LEN => {
                Err(ReplyError::TooLong {
                    limit: self.limits.job_bytes,
                })
            }
            (Err(e), _) => Err(ReplyError::Frame(e)),
            (Ok(p), _) => Ok(p),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::Write;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    const TOKEN: &[u8] = br#"{"v":1,"msg":{"token":{"text":"ab"}}}"#;

    /// How the fake worker behaves on its end of the socketpair.
    enum Peer {
        /// Sends one whole frame, then nothing more (keeps the socket open).
        OneFrameThenSilence,
        /// Sends a whole length prefix and half the payload, then stalls.
        StallMidFrame,
        /// Sends token frames as fast as it can, forever.
        EndlessTokens,
    }

    fn run(peer: Peer, limits: ReplyLimits, frames_wanted: usize) -> Result<usize, String> {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let worker = std::thread::spawn(move || {
            let _ = match peer {
                Peer::OneFrameThenSilence => theirs.write_all(&frame(TOKEN)),
                Peer::StallMidFrame => {
                    let f = frame(TOKEN);
                    theirs.write_all(&f[..f.len() / 2])
                }
                Peer::EndlessTokens => loop {
                    if theirs.write_all(&frame(TOKEN)).is_err() {
                        break Ok(());
                    }
                },
            };
            // Hold the socket open (a stalled worker) until the reader gives up and closes.
            let _ = std::io::Read::read(&mut theirs, &mut [0u8; 1]);
        });
        let mut job = Job::new(&ours, limits);
        let mut n = 0;
        let r = loop {
            match job.next_frame() {
                Ok(Some(p)) => {
                    assert_eq!(p, TOKEN);
                    n += 1;
                    if n == frames_wanted {
                        break Ok(n);
                    }
                }
                Ok(None) => break Ok(n),
                Err(e) => break Err(e.to_string()),
            }
        };
        drop(ours);
        worker.join().unwrap();
        r
    }

    const FAST: ReplyLimits = ReplyLimits {
        frame: Duration::from_millis(200),
        job: Duration::from_millis(600),
        job_bytes: 4096,
    };

    #[test]
    fn each_limit_ends_the_job_with_a_one_line_reason() {
        for (peer, frames_wanted, want) in [
            (
                Peer::StallMidFrame,
                1,
                Err("worker reply: a frame did not complete within the per-frame limit of 0.2s"),
            ),
            (
                Peer::OneFrameThenSilence,
                2,
                Err("worker reply: the job did not complete within the per-job limit of 0.6s"),
            ),
            (
                Peer::EndlessTokens,
                usize::MAX,
                Err("worker reply: the answer exceeds the limit of 4096 bytes per job"),
            ),
            (Peer::OneFrameThenSilence, 1, Ok(1)),
        ] {
            let t0 = Instant::now();
            let got = run(peer, FAST, frames_wanted);
            assert_eq!(got, want.map_err(str::to_string));
            assert!(t0.elapsed() < Duration::from_secs(5));
        }
    }

    #[test]
    fn the_job_bound_counts_every_byte_of_the_job() {
        let per = 4 + TOKEN.len();
        for (job_bytes, want) in [
            (per * 3, Ok(3)),
            (
                per * 3 - 1,
                Err(format!(
                    "worker reply: the answer exceeds the limit of {} bytes per job",
                    per * 3 - 1
                )),
            ),
        ] {
            let limits = ReplyLimits { job_bytes, ..FAST };
            assert_eq!(run(Peer::EndlessTokens, limits, 3), want, "{job_bytes}");
        }
    }

    #[test]
    fn the_connection_is_blocking_again_after_a_job() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(&frame(TOKEN)).unwrap();
        let mut job = Job::new(&ours, FAST);
        assert_eq!(job.next_frame().unwrap().unwrap(), TOKEN);
        assert_eq!(ours.read_timeout().unwrap(), None);
    }
}
