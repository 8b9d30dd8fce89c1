//! The document opener's stage 2 (`seccomp::Profile::DocOpen`), proved through the real spawn
//! path (run as root; skipped with a reason otherwise): `airlock-probe --stage2-profile
//! doc-open act NAME` for every act of `probe_suite::DOC_OPEN_ACTS`, one test per act. What the
//! opener never needs ends in `SIGSYS` (or the exact errno the table names), what it needs
//! works.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::OnceLock;

use airlock_sandbox::probe_suite::{self, Expect, Report, DOC_OPEN_ACTS};
use airlock_sandbox::LandlockMode;

fn probe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_airlock-probe"))
}

/// False (with the reason printed) when the spawn path cannot run here.
fn can_spawn() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the sandbox's spawn path needs root (namespaces, mounts, setuid)");
        return false;
    }
    true
}

fn report() -> &'static Report {
    static R: OnceLock<Report> = OnceLock::new();
    R.get_or_init(|| {
        let r = probe_suite::run_doc_open(probe(), LandlockMode::Hard).expect("d2 pass runs");
        eprintln!("{r}");
        r
    })
}

fn assert_act(name: &str) {
    if !can_spawn() {
        return;
    }
    let want = DOC_OPEN_ACTS
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no act named {name} in DOC_OPEN_ACTS"));
    let c = report()
        .get(&format!("d2.{name}"))
        .unwrap_or_else(|| panic!("no check d2.{name}"));
    assert!(
        c.pass,
        "{}: expected {}; observed {}",
        c.name, c.expected, c.observed
    );
    // The exact outcome, restated from the table (the suite's verdict is not taken on trust).
    match want.expect {
        Expect::Signal(s) => {
            assert_eq!(s, libc::SIGSYS, "{name}: the table expects a seccomp kill");
            assert_eq!(c.observed, "signal SIGSYS", "{name}");
        }
        Expect::Errno(e) => assert_eq!(
            c.observed,
            format!("errno {}", airlock_sandbox::names::errno_name(e)),
            "{name}"
        ),
        Expect::Allowed(d) => assert!(
            c.observed.starts_with("ok ") && c.observed.contains(d),
            "{name}: {}",
            c.observed
        ),
    }
}

macro_rules! acts {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                assert_act($name);
            }
        )*
        const NAMED: &[&str] = &[$($name),*];
    };
}

#[test]
fn every_doc_open_act_has_a_test() {
    let mut table: Vec<&str> = DOC_OPEN_ACTS.iter().map(|a| a.name).collect();
    let mut named = NAMED.to_vec();
    table.sort_unstable();
    named.sort_unstable();
    assert_eq!(
        table, named,
        "DOC_OPEN_ACTS and the tests of this file differ"
    );
}

#[test]
fn doc_open_refuses_most_by_kill() {
    // The table's shape: every refused act but two is a seccomp kill; the two exceptions are
    // answered by a layer that is not the allow list, each named in the table.
    let not_killed: Vec<&str> = DOC_OPEN_ACTS
        .iter()
        .filter(|a| matches!(a.expect, Expect::Errno(_)))
        .map(|a| a.name)
        .collect();
    assert_eq!(not_killed, ["mmap_exec", "tgkill_parent"]);
}

#[test]
fn doc_open_full_pass() {
    if !can_spawn() {
        return;
    }
    let r = report();
    println!("{r}");
    assert!(r.all_passed(), "{r}");
    assert_eq!(r.checks.len(), DOC_OPEN_ACTS.len());
}

// One test per act of DOC_OPEN_ACTS (`every_doc_open_act_has_a_test` keeps the list complete).
acts! {
    d2_open_urandom => "open_urandom",
    d2_open_outside => "open_outside",
    d2_create_in_root => "create_in_root",
    d2_getdents_stdin => "getdents_stdin",
    d2_mkdir_scratch => "mkdir_scratch",
    d2_unlink_missing => "unlink_missing",
    d2_close_stdin => "close_stdin",
    d2_fcntl_getfd => "fcntl_getfd",
    d2_poll_stdin => "poll_stdin",
    d2_socket_unix => "socket_unix",
    d2_socket_inet => "socket_inet",
    d2_socketpair_unix => "socketpair_unix",
    d2_clone_thread => "clone_thread",
    d2_fork => "fork",
    d2_clone3 => "clone3",
    d2_execve_missing => "execve_missing",
    d2_mprotect_exec => "mprotect_exec",
    d2_mmap_exec => "mmap_exec",
    d2_prctl_set_name => "prctl_set_name",
    d2_prctl_set_dumpable => "prctl_set_dumpable",
    d2_ioctl_tcgets => "ioctl_tcgets",
    d2_ioctl_fionbio => "ioctl_fionbio",
    d2_kill_parent => "kill_parent",
    d2_tgkill_parent => "tgkill_parent",
    d2_ptrace_parent => "ptrace_parent",
    d2_madvise_dontfork => "madvise_dontfork",
    d2_futex_lock_pi => "futex_lock_pi",
    d2_futex_cmp_requeue => "futex_cmp_requeue",
    d2_clock_gettime => "clock_gettime",
    d2_sched_yield => "sched_yield",
    d2_unshare_user => "unshare_user",
    d2_bpf => "bpf",
    d2_io_uring_setup => "io_uring_setup",
    d2_read_stdin => "read_stdin",
    d2_write_stdout => "write_stdout",
    d2_mmap_anon_rw => "mmap_anon_rw",
    d2_madvise_dontneed => "madvise_dontneed",
    d2_brk_query => "brk_query",
    d2_getrandom => "getrandom",
    d2_futex_wake => "futex_wake",
    d2_tgkill_self => "tgkill_self",
}
