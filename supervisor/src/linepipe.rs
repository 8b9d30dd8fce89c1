//! A child's stdout as PID 1 reads it: non-blocking, split into lines,
//! bounded (a line longer than its limit is dropped up to its newline; past
//! the output limit bytes are read and thrown away, so the child never
//! blocks on a full pipe). Shared by the boot's `model-check` and
//! `system-boot` children.

use std::io::Read;
use std::os::fd::AsFd;
use std::process::ChildStdout;

/// Lines read from a child.
#[derive(Debug, Default)]
pub struct LinePipe {
    stdout: Option<ChildStdout>,
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// Dropping a line that grew past `max_line` until its newline.
    skipping: bool,
    /// Output bytes read so far.
    read: usize,
    max_line: usize,
    max_output: usize,
}

/// What a read produced: complete lines, and how many were dropped as too long.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lines {
    pub lines: Vec<Vec<u8>>,
    pub dropped: usize,
}

impl LinePipe {
    /// Limits for the lines and the whole output; no pipe yet.
    pub fn new(max_line: usize, max_output: usize) -> Self {
        LinePipe {
            max_line,
            max_output,
            ..LinePipe::default()
        }
    }

    /// Takes the child's stdout, made non-blocking.
    pub fn attach(&mut self, out: ChildStdout) -> Result<(), nix::Error> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(out.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(out.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        self.stdout = Some(out);
        Ok(())
    }

    /// Closes the pipe (the child is gone or was killed).
    pub fn close(&mut self) {
        self.stdout = None;
    }

    /// Reads what is there now; returns the complete lines.
    pub fn drain(&mut self) -> Lines {
        let mut buf = [0u8; 4096];
        let mut bytes = Vec::new();
        if let Some(out) = self.stdout.as_mut() {
            loop {
                match out.read(&mut buf) {
                    Ok(0) => {
                        self.stdout = None;
                        break;
                    }
                    Ok(n) => {
                        let room = self.max_output.saturating_sub(self.read);
                        bytes.extend_from_slice(buf.get(..n.min(room)).unwrap_or(&[]));
                        self.read = self.read.saturating_add(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break, // EAGAIN: nothing more for now
                }
            }
        }
        self.split(&bytes)
    }

    /// The rest after the child exited: drained, and a last line without
    /// its newline taken as well.
    pub fn finish(&mut self) -> Lines {
        let mut out = self.drain();
        if !self.pending.is_empty() && !self.skipping {
            out.lines.push(std::mem::take(&mut self.pending));
        }
        self.pending.clear();
        self.skipping = false;
        self.stdout = None;
        out
    }

    /// Splits `bytes` into lines, keeping an incomplete one.
    pub fn split(&mut self, bytes: &[u8]) -> Lines {
        let mut out = Lines::default();
        for &b in bytes {
            if b == b'\n' {
                let l = std::mem::take(&mut self.pending);
                if std::mem::take(&mut self.skipping) {
                    out.dropped += 1;
                } else {
                    out.lines.push(l);
                }
            } else if !self.skipping {
                self.pending.push(b);
                if self.pending.len() > self.max_line {
                    self.pending.clear();
                    self.skipping = true;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_bounded_and_finished() {
        let mut p = LinePipe::new(8, 1024);
        assert_eq!(p.split(b"ab").lines, Vec::<Vec<u8>>::new());
        let l = p.split(b"c\nlonger than eight\nx\ny");
        assert_eq!(l.lines, vec![b"abc".to_vec(), b"x".to_vec()]);
        assert_eq!(l.dropped, 1);
        assert_eq!(p.finish().lines, vec![b"y".to_vec()]);
        assert_eq!(p.finish(), Lines::default());
    }
}
