//! The console service end to end on a pseudo-terminal: banner, readiness
//! line, prompt, the grammar's refusals, a status round trip over the
//! control socket, an asynchronous notice and poweroff. The test plays
//! PID 1's side of the control socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pty;

use airlock_supervisor::console::{Console, PROMPT};
use airlock_supervisor::control::{Reply, Request};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use pty::{reply, request, Term};
use std::fs::File;
use std::time::Duration;

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
    let mut t = Term::new(File::from(pty.master), Duration::from_secs(20));

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
