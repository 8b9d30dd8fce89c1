//! A terminal driven from the master side of a pty, for the tests that
//! run a console service on the slave side and play PID 1 on its control
//! socket.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use airlock_supervisor::control::{Reply, Request};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub struct Term {
    pub master: File,
    pub seen: String,
    /// How long `until` waits.
    pub patience: Duration,
}

impl Term {
    pub fn new(master: File, patience: Duration) -> Term {
        Term {
            master,
            seen: String::new(),
            patience,
        }
    }

    /// Reads until `pat` appears; returns everything read up to and including it.
    pub fn until(&mut self, pat: &str) -> String {
        let end = Instant::now() + self.patience;
        loop {
            if let Some(i) = self.seen.find(pat) {
                let out = self.seen[..i + pat.len()].to_string();
                self.seen.drain(..i + pat.len());
                return out;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {pat:?}; got {:?}",
                self.seen
            );
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(200u16)).unwrap() > 0 {
                let mut b = [0u8; 8192];
                let n = self.master.read(&mut b).unwrap();
                self.seen.push_str(&String::from_utf8_lossy(&b[..n]));
            }
        }
    }

    /// Types `text` and Enter (CR, as a terminal sends it).
    pub fn line(&mut self, text: &str) {
        self.master
            .write_all(format!("{text}\r").as_bytes())
            .unwrap();
    }

    /// Answers a prompt that ends in `q`.
    pub fn answer(&mut self, q: &str, text: &str) {
        self.until(q);
        self.line(text);
    }
}

/// The next request of the console (10 s at most).
pub fn request(ctl: &OwnedFd) -> Request {
    let mut fds = [PollFd::new(ctl.as_fd(), PollFlags::POLLIN)];
    assert_eq!(
        poll(&mut fds, PollTimeout::from(10_000u16)).unwrap(),
        1,
        "no request from the console"
    );
    let mut b = vec![0u8; 70_000];
    let n = recv(ctl.as_raw_fd(), &mut b, MsgFlags::empty()).unwrap();
    Request::decode(&b[..n]).unwrap()
}

pub fn reply(ctl: &OwnedFd, r: Reply) {
    send(ctl.as_raw_fd(), &r.encode(), MsgFlags::empty()).unwrap();
}
