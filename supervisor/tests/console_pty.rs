//! The console service end to end on a pseudo-terminal: banner, readiness
//! line, prompt, the grammar's refusals, a status round trip over the
//! control socket, an asynchronous notice and poweroff. The test plays
//! PID 1's side of the control socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_supervisor::console::{Console, PROMPT};
use airlock_supervisor::control::{Reply, Request};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

struct Term {
    master: File,
    seen: String,
}

impl Term {
    /// Reads until `pat` appears; returns everything read up to and including it.
    fn until(&mut self, pat: &str) -> String {
        let end = Instant::now() + Duration::from_secs(20);
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
                let mut b = [0u8; 4096];
                let n = self.master.read(&mut b).unwrap();
                self.seen.push_str(&String::from_utf8_lossy(&b[..n]));
            }
        }
    }

    fn line(&mut self, text: &str) {
        self.master
            .write_all(format!("{text}\r").as_bytes())
            .unwrap();
    }
}

fn request(ctl: &OwnedFd) -> Request {
    let mut fds = [PollFd::new(ctl.as_fd(), PollFlags::POLLIN)];
    assert_eq!(
        poll(&mut fds, PollTimeout::from(10_000u16)).unwrap(),
        1,
        "no request from the console"
    );
    let mut b = [0u8; 64];
    let n = recv(ctl.as_raw_fd(), &mut b, MsgFlags::empty()).unwrap();
    Request::decode(&b[..n]).unwrap()
}

fn reply(ctl: &OwnedFd, r: Reply) {
    send(ctl.as_raw_fd(), &r.encode(), MsgFlags::empty()).unwrap();
}

#[test]
fn console_session_on_a_pty() {
    let pty = nix::pty::openpty(None, None).unwrap();
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let slave = File::from(pty.slave);
    let console = std::thread::spawn(move || Console::attach("pty", slave, theirs).unwrap().run());
    let mut t = Term {
        master: File::from(pty.master),
        seen: String::new(),
    };

    assert_eq!(request(&ours), Request::Up);
    // Readiness may carry a second line (the airlock.dma=warn warning); each
    // line passes screen::line: the newline stays, an ESC in a line does not.
    reply(
        &ours,
        Reply::Ready(
            "airlock: console ready\nairlock: WARNING — no DMA protection: x\x1b[2J".into(),
        ),
    );
    let start = t.until(PROMPT);
    let banner = start.trim_start();
    assert!(
        banner.starts_with(&format!("Airlock {} (slot ", airlock_supervisor::VERSION)),
        "{start:?}"
    );
    assert!(
        start.contains(
            "\r\nairlock: console ready\r\nairlock: WARNING — no DMA protection: x\\x1b[2J\r\n"
        ),
        "{start:?}"
    );

    // Unknown command: one line with the reason and the hint.
    t.line("frobnicate now");
    let out = t.until(PROMPT);
    assert_eq!(out, "frobnicate now\r\nunknown command 'frobnicate'; type 'help' for the list of commands\r\nairlock> ");
    t.line("status please");
    assert!(t
        .until(PROMPT)
        .contains("'status' takes no arguments; see 'help status'"));
    t.line("help");
    let help = t.until(PROMPT);
    // No state partition here: not provisioned, so only what may run now.
    assert!(help.contains("Not provisioned."), "{help}");
    for c in ["help [COMMAND]", "status", "provision", "poweroff"] {
        assert!(help.contains(c), "{help}");
    }
    // Control characters (here ^D, which is not end-of-file) are refused.
    t.line("stat\u{4}us");
    assert!(t
        .until(PROMPT)
        .contains("the line contains a control or non-ASCII character"));
    // A blank line gives just a new prompt.
    t.line("");
    assert_eq!(t.until(PROMPT), "\r\nairlock> ");

    // status: asked of PID 1, printed as received.
    t.line("status");
    assert_eq!(request(&ours), Request::Status);
    reply(
        &ours,
        Reply::Status("version: 9.9.9\nready: yes\nusb sticks: sdb \"\x1b]0;x\x07\"\n".into()),
    );
    assert_eq!(
        t.until(PROMPT),
        "status\r\nversion: 9.9.9\r\nready: yes\r\nusb sticks: sdb \"\\x1b]0;x\\x07\"\r\nairlock> "
    );

    // An asynchronous notice, then the prompt again; a notice is one line,
    // so a newline in it is shown escaped rather than starting a new line.
    reply(
        &ours,
        Reply::Notice("[usb] stick inserted: sdb (16 MiB)\nairlock: console ready".into()),
    );
    assert_eq!(
        t.until(PROMPT),
        "\r\n[usb] stick inserted: sdb (16 MiB)\\x0aairlock: console ready\r\nairlock> "
    );

    // No line of its own: PID 1 announces the power-off on every console
    // (the console used to print it too, so the operator saw it twice).
    t.line("poweroff");
    assert_eq!(request(&ours), Request::Poweroff);
    assert_eq!(t.until("\r\n"), "poweroff\r\n");

    // PID 1 going away closes the control socket: the console ends.
    drop(ours);
    assert_eq!(console.join().unwrap(), 0);
}
