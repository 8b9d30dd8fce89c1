//! PID-1-style reaping: as a child subreaper, orphaned grandchildren are
//! re-parented to this process and `reap_all` must collect them all, with
//! their statuses. One test in this binary, so no other test's children
//! are reaped from under it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_supervisor::reaper::{reap_all, Reaped};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn children_and_orphans_are_reaped() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    // sh exits at once, leaving two background sleeps orphaned: they are
    // re-parented to us (the subreaper), as they would be to PID 1.
    let sh = Command::new("sh")
        .args(["-c", "sleep 0.3 & sleep 0.2 & exit 7"])
        .spawn()
        .unwrap();
    let sh_pid = sh.id() as i32;
    drop(sh);
    let segv = Command::new("sh")
        .args(["-c", "kill -SEGV $$"])
        .spawn()
        .unwrap();
    let segv_pid = segv.id() as i32;
    drop(segv);
    let mut got: Vec<Reaped> = Vec::new();
    let start = Instant::now();
    while got.len() < 4 && start.elapsed() < Duration::from_secs(20) {
        got.extend(reap_all());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got.len(), 4, "reaped: {got:?}");
    let sh = got.iter().find(|r| r.pid == sh_pid).unwrap();
    assert_eq!((sh.status.as_str(), sh.code), ("exit 7", Some(7)));
    let segv = got.iter().find(|r| r.pid == segv_pid).unwrap();
    assert_eq!(segv.status, "signal SIGSEGV");
    let orphans: Vec<&Reaped> = got
        .iter()
        .filter(|r| r.pid != sh_pid && r.pid != segv_pid)
        .collect();
    assert_eq!(orphans.len(), 2);
    assert!(orphans.iter().all(|r| r.status == "exit 0"), "{orphans:?}");
    // Nothing left: reaping again finds nothing and does not block.
    assert!(reap_all().is_empty());
}
