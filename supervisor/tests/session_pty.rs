//! A console session on a pseudo-terminal against the real identity vault
//! and the real audit writer (this test plays the rest of PID 1): first
//! boot offers only provisioning, provisioning at the prompts, each role
//! logs in and is refused another role's command with the role named,
//! five wrong passphrases lock an account, the lock holds for the right
//! passphrase, idle logout, and the log verifies with the host verifier.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pty;

use airlock_formats::audit::layout;
use airlock_formats::audit::note::NoteVerifier;
use airlock_formats::audit::verify::verify;
use airlock_supervisor::auditd::Auditd;
use airlock_supervisor::console::Console;
use airlock_supervisor::control::{Reply, Request};
use airlock_supervisor::identity::policy::Policy;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use pty::Term;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// PID 1's side: readiness, status and every audit request, answered by a
/// real `Auditd` on `root/audit`.
fn pid1(ctl: OwnedFd, audit_dir: PathBuf, stop: Arc<AtomicBool>) {
    let mut a = Auditd::new(
        &audit_dir,
        "0123456789abcdef0123456789abcdef".into(),
        Default::default(),
    );
    let mut buf = vec![0u8; 70_000];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(ctl.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) == 0 {
            continue;
        }
        let n = match recv(ctl.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let req = Request::decode(&buf[..n]).unwrap();
        let reply = match req {
            Request::Up => Reply::Ready("airlock: console ready".into()),
            Request::Status => Reply::Status("version: test\n".into()),
            Request::Poweroff | Request::Reboot => return,
            r => Reply::Done(a.handle(0, &r).0),
        };
        let _ = send(ctl.as_raw_fd(), &reply.encode(), MsgFlags::empty());
    }
}

const PASS_A: &str = "alice has a long passphrase 1";
const PASS_B: &str = "bob's passphrase is long too";
const PASS_C: &str = "carol keeps the log safe 42";

#[test]
fn provisioning_logins_roles_lockout_and_idle_on_a_pty() {
    let root = tempfile::tempdir().unwrap();
    let policy = Policy {
        // Cheap derivations for a host test; the image's values are in
        // rootfs-overlay/etc/airlock/policy.conf.
        argon2_m_kib: 8 * 1024,
        argon2_t: 1,
        argon2_p: 1,
        failure_delay_base_ms: 10,
        idle_logout_s: 3,
        ..Policy::default()
    };
    let pty = nix::pty::openpty(None, None).unwrap();
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let slave = File::from(pty.slave);
    let state = root.path().to_path_buf();
    let console = std::thread::spawn(move || {
        Console::attach("pty0", slave, theirs)
            .unwrap()
            .with_state(&state, policy)
            .run()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let audit_dir = root.path().join("audit");
    let pid1 = {
        let stop = stop.clone();
        std::thread::spawn(move || pid1(ours, audit_dir, stop))
    };
    let mut t = Term::new(File::from(pty.master), Duration::from_secs(60));

    // First boot: only provisioning is offered.
    t.until("not provisioned: type 'provision'");
    t.until("airlock> ");
    t.line("login alice");
    t.until("not provisioned: only provision, status, help and poweroff are offered");
    t.line("help");
    let help = t.until("Type 'help COMMAND'");
    assert!(
        help.contains("provision") && !help.contains("audit export"),
        "{help}"
    );

    // Provisioning at the prompts: a too short passphrase, a mismatch.
    t.line("provision");
    t.answer("[ed25519]: ", "");
    t.answer("when done): ", "");
    t.until("still needed: an account of each role: operator, officer, auditor");
    t.answer("when done): ", "alice");
    t.answer("(operator, officer, auditor): ", "operator");
    t.answer("not shown): ", "short");
    t.until("passphrase too short");
    t.answer("not shown): ", PASS_A);
    t.answer("Repeat the passphrase: ", "something else entirely 12345");
    t.until("the two passphrases differ");
    t.answer("not shown): ", PASS_A);
    t.answer("Repeat the passphrase: ", PASS_A);
    for (name, role, pass) in [("bob", "officer", PASS_B), ("carol", "auditor", PASS_C)] {
        t.answer("when done): ", name);
        t.answer("(operator, officer, auditor): ", role);
        t.answer("not shown): ", pass);
        t.answer("Repeat the passphrase: ", pass);
    }
    t.answer("when done): ", "");
    t.answer("Type yes to go on: ", "yes");
    let out = t.until("Log in with 'login NAME'.");
    assert!(out.contains("Provisioned appliance"), "{out}");
    assert!(!out.contains(PASS_A), "a passphrase was echoed: {out}");
    t.until("airlock> ");
    t.line("provision");
    t.until("'provision' is for first boot only");
    t.line("usb");
    t.until("'usb' needs a login; log in first with 'login NAME'");

    // Each role logs in; another role's command is refused with the role named.
    let cases = [
        (
            "alice",
            PASS_A,
            "operator",
            "audit show",
            "'audit show' needs the auditor role; you are logged in as alice (operator)",
        ),
        (
            "bob",
            PASS_B,
            "officer",
            "audit export",
            "'audit export' needs the auditor role; you are logged in as bob (officer)",
        ),
        (
            "carol",
            PASS_C,
            "auditor",
            "keys rotate",
            "'keys rotate' needs the officer role; you are logged in as carol (auditor)",
        ),
    ];
    for (name, pass, role, other, refusal) in cases {
        t.line(&format!("login {name}"));
        t.answer(&format!("Passphrase for {name}: "), pass);
        t.until(&format!("logged in as {name} ({role})"));
        t.until(&format!("airlock {name}@{role}> "));
        t.line("whoami");
        t.until(&format!("{name} ({role}) on pty0"));
        t.line(other);
        t.until(refusal);
        t.line("keys show");
        t.until("audit key:");
        // Every role may list and eject sticks; an unknown one is named.
        // (No `usb` here: it would mount the host's own USB disks.)
        t.line("eject sdzz");
        t.until("eject refused: no inserted stick is called 'sdzz'; see 'usb'");
        t.line("logout");
        t.until(&format!("{name} logged out"));
        t.until("airlock> ");
    }

    // The officer adds an operator; the document key follows at the next
    // login of an existing operator; the last officer cannot be removed.
    t.line("login bob");
    t.answer("Passphrase for bob: ", PASS_B);
    t.until("airlock bob@officer> ");
    t.line("account add dave operator");
    t.answer("not shown): ", "dave's passphrase is long enough");
    t.answer(
        "Repeat the passphrase: ",
        "dave's passphrase is long enough",
    );
    t.until("account dave (operator) added");
    t.until("pending for dave:");
    t.line("accounts");
    t.until("document key pending");
    t.line("account remove bob");
    t.until("account remove refused:");
    t.line("clock set 2026-13-01T00:00:00Z");
    t.until("clock set: give the time as YYYY-MM-DDTHH:MM:SSZ (UTC)");
    t.line("logout");
    t.until("bob logged out");
    t.line("login alice");
    t.answer("Passphrase for alice: ", PASS_A);
    t.until("granted document:");
    t.until("to dave");
    t.line("logout");
    t.until("alice logged out");

    // Five wrong passphrases lock bob; the right one is then refused too.
    for i in 1..=5 {
        t.line("login bob");
        t.answer(
            "Passphrase for bob: ",
            &format!("wrong passphrase number {i} xx"),
        );
        if i < 5 {
            t.until("login refused: wrong name or passphrase (wait");
        } else {
            t.until("bob is now locked for 10 minutes");
        }
        t.until("airlock> ");
    }
    t.line("login bob");
    t.answer("Passphrase for bob: ", PASS_B);
    t.until("login refused: bob is locked until");
    // An unknown account gets the same answer as a wrong passphrase.
    t.line("login mallory");
    t.answer("Passphrase for mallory: ", "whatever it is, it is wrong");
    t.until("login refused: wrong name or passphrase");
    // ^C at the passphrase prompt cancels and leaves no session.
    t.line("login alice");
    t.until("Passphrase for alice: ");
    t.master.write_all(b"half typed\x03").unwrap();
    t.until("login cancelled (^C)");
    t.line("whoami");
    t.until("'whoami' needs a login");

    // Idle logout (3 s in this test's policy).
    t.line("login carol");
    t.answer("Passphrase for carol: ", PASS_C);
    t.until("airlock carol@auditor> ");
    t.line("audit show 50");
    let table = t.until("airlock carol@auditor> ");
    for want in [
        "provision",
        "lockout",
        "role-auditor-required",
        "wrong-passphrase",
        "unknown-account",
    ] {
        assert!(table.contains(want), "audit show lacks {want}: {table}");
    }
    t.until("carol logged out after 0 minutes without input");
    t.line("poweroff");
    console.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    pid1.join().unwrap();

    // The log verifies with the host verifier and the key from provisioning.
    let dir = root.path().join("audit");
    let key = std::fs::read_to_string(dir.join(layout::PUBKEY_FILE)).unwrap();
    let key = NoteVerifier::parse(key.trim()).unwrap();
    let v = verify(&dir, &key).unwrap();
    assert!(v.summary.refusals >= 8, "{:?}", v.summary);
    assert!(v.summary.accounts.contains_key("bob"));
    assert!(v.summary.checkpoints >= 7, "{:?}", v.summary);
    // No passphrase reached the log.
    for seg in std::fs::read_dir(dir.join("entries")).unwrap() {
        let text = std::fs::read_to_string(seg.unwrap().path()).unwrap();
        for p in [PASS_A, PASS_B, PASS_C] {
            assert!(!text.contains(p));
        }
    }
}
