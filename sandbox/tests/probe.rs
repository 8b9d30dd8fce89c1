//! Host tests of the sandbox (run as root): the probe suite, one test per check, plus the
//! spawn path's rejection paths, crash/hang handling and the socket audit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::OnceLock;

use airlock_sandbox::probe_suite::{self, Report};
use airlock_sandbox::LandlockMode;

fn probe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_airlock-probe"))
}

fn report() -> &'static Report {
    static R: OnceLock<Report> = OnceLock::new();
    R.get_or_init(|| {
        let r = probe_suite::run(probe(), LandlockMode::Hard).expect("probe suite runs");
        eprintln!("{r}");
        r
    })
}

fn assert_check(name: &str) {
    let c = report()
        .get(name)
        .unwrap_or_else(|| panic!("no check named {name}"));
    assert!(
        c.pass,
        "{}: expected {}; observed {}",
        c.name, c.expected, c.observed
    );
}

macro_rules! checks {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                assert_check($name);
            }
        )*
        const NAMED: &[&str] = &[$($name),*];
    };
}

#[test]
fn every_check_has_a_test() {
    let mut names: Vec<&str> = report().checks.iter().map(|c| c.name.as_str()).collect();
    let mut named = NAMED.to_vec();
    names.sort_unstable();
    named.sort_unstable();
    assert_eq!(
        names, named,
        "checks of the suite and tests of this file differ"
    );
}

#[test]
fn report_format() {
    let text = report().to_string();
    let last = text.lines().last().unwrap();
    let n = report().checks.len();
    assert_eq!(text.lines().count(), n + 1);
    assert_eq!(
        last,
        format!("probe: {}/{n} checks passed", report().passed())
    );
}

#[test]
fn full_suite() {
    let r = report();
    println!("{r}");
    assert!(r.all_passed(), "{r}");
}

// One test per check of the probe suite (generated list; `every_check_has_a_test` keeps it complete).
checks! {
    s1_inherited_fds => "s1.inherited_fds",
    s1_environment => "s1.environment",
    s1_hostname => "s1.hostname",
    s1_identity => "s1.identity",
    s1_model_read => "s1.model_read",
    s1_scratch_write => "s1.scratch_write",
    s1_getrandom => "s1.getrandom",
    s1_dev_urandom => "s1.dev_urandom",
    s1_tokio_threads => "s1.tokio_threads",
    s1_rayon_threads => "s1.rayon_threads",
    s1_status_seccomp => "s1.status_Seccomp",
    s1_status_nonewprivs => "s1.status_NoNewPrivs",
    s1_status_capeff => "s1.status_CapEff",
    s1_status_capprm => "s1.status_CapPrm",
    s1_status_capinh => "s1.status_CapInh",
    s1_status_capbnd => "s1.status_CapBnd",
    s1_status_capamb => "s1.status_CapAmb",
    s1_status_uid => "s1.status_Uid",
    s1_status_gid => "s1.status_Gid",
    s1_status_groups => "s1.status_Groups",
    s1_status_nspid => "s1.status_NSpid",
    s1_status_seccomp_filters => "s1.status_Seccomp_filters",
    s1_namespaces => "s1.namespaces",
    s1_sockets_unix_only => "s1.sockets_unix_only",
    s1_allow_exit => "s1.allow_exit",
    s1_open_outside => "s1.open_outside",
    s1_open_dotdot => "s1.open_dotdot",
    s1_list_root => "s1.list_root",
    s1_list_dev => "s1.list_dev",
    s1_create_in_root => "s1.create_in_root",
    s1_write_model => "s1.write_model",
    s1_create_in_model => "s1.create_in_model",
    s1_proc_environ => "s1.proc_environ",
    s1_socket_inet => "s1.socket_inet",
    s1_socket_inet6 => "s1.socket_inet6",
    s1_socket_netlink => "s1.socket_netlink",
    s1_socket_packet => "s1.socket_packet",
    s1_tcp_connect => "s1.tcp_connect",
    s1_execve => "s1.execve",
    s1_setuid_scratch => "s1.setuid_scratch",
    s1_ptrace_parent => "s1.ptrace_parent",
    s1_mount => "s1.mount",
    s1_unshare_user => "s1.unshare_user",
    s1_clone_newns => "s1.clone_newns",
    s1_fork => "s1.fork",
    s1_clone3 => "s1.clone3",
    s1_kill_pid1 => "s1.kill_pid1",
    s1_kill_parent => "s1.kill_parent",
    s1_init_module => "s1.init_module",
    s1_bpf => "s1.bpf",
    s1_perf_event_open => "s1.perf_event_open",
    s1_userfaultfd => "s1.userfaultfd",
    s1_io_uring_setup => "s1.io_uring_setup",
    s1_keyctl => "s1.keyctl",
    s1_kexec_load => "s1.kexec_load",
    s1_setns => "s1.setns",
    s1_chroot => "s1.chroot",
    s1_setuid_root => "s1.setuid_root",
    s1_prctl_set_seccomp => "s1.prctl_set_seccomp",
    s1_prctl_set_dumpable => "s1.prctl_set_dumpable",
    s1_ioctl_fionbio => "s1.ioctl_fionbio",
    s1_mprotect_exec => "s1.mprotect_exec",
    s1_mmap_exec => "s1.mmap_exec",
    s1_socket_unix => "s1.socket_unix",
    s1_sendto => "s1.sendto",
    s1_recvfrom => "s1.recvfrom",
    s1_rename => "s1.rename",
    s1_unlink => "s1.unlink",
    s1_rmdir => "s1.rmdir",
    s1_uname => "s1.uname",
    s1_getuid => "s1.getuid",
    s1_getgid => "s1.getgid",
    s1_futex_lock_pi => "s1.futex_lock_pi",
    s1_futex_cmp_requeue => "s1.futex_cmp_requeue",
    s1_madvise_dontfork => "s1.madvise_dontfork",
    s1_alloc_big => "s1.alloc_big",
    s1_crash_segv => "s1.crash_segv",
    s2_inherited_fds => "s2.inherited_fds",
    s2_environment => "s2.environment",
    s2_hostname => "s2.hostname",
    s2_identity => "s2.identity",
    s2_model_read => "s2.model_read",
    s2_scratch_write => "s2.scratch_write",
    s2_getrandom => "s2.getrandom",
    s2_dev_urandom => "s2.dev_urandom",
    s2_tokio_threads => "s2.tokio_threads",
    s2_rayon_threads => "s2.rayon_threads",
    s2_status_seccomp => "s2.status_Seccomp",
    s2_status_nonewprivs => "s2.status_NoNewPrivs",
    s2_status_capeff => "s2.status_CapEff",
    s2_status_capprm => "s2.status_CapPrm",
    s2_status_capinh => "s2.status_CapInh",
    s2_status_capbnd => "s2.status_CapBnd",
    s2_status_capamb => "s2.status_CapAmb",
    s2_status_uid => "s2.status_Uid",
    s2_status_gid => "s2.status_Gid",
    s2_status_groups => "s2.status_Groups",
    s2_status_nspid => "s2.status_NSpid",
    s2_status_seccomp_filters => "s2.status_Seccomp_filters",
    s2_namespaces => "s2.namespaces",
    s2_sockets_unix_only => "s2.sockets_unix_only",
    s2_allow_exit => "s2.allow_exit",
    s2_stage2_installed => "s2.stage2_installed",
    s2_dumpable_after_stage2 => "s2.dumpable_after_stage2",
    s2_open_outside => "s2.open_outside",
    s2_open_dotdot => "s2.open_dotdot",
    s2_list_root => "s2.list_root",
    s2_list_dev => "s2.list_dev",
    s2_create_in_root => "s2.create_in_root",
    s2_write_model => "s2.write_model",
    s2_create_in_model => "s2.create_in_model",
    s2_proc_environ => "s2.proc_environ",
    s2_socket_inet => "s2.socket_inet",
    s2_socket_inet6 => "s2.socket_inet6",
    s2_socket_netlink => "s2.socket_netlink",
    s2_socket_packet => "s2.socket_packet",
    s2_tcp_connect => "s2.tcp_connect",
    s2_execve => "s2.execve",
    s2_setuid_scratch => "s2.setuid_scratch",
    s2_ptrace_parent => "s2.ptrace_parent",
    s2_mount => "s2.mount",
    s2_unshare_user => "s2.unshare_user",
    s2_clone_newns => "s2.clone_newns",
    s2_fork => "s2.fork",
    s2_clone3 => "s2.clone3",
    s2_kill_pid1 => "s2.kill_pid1",
    s2_kill_parent => "s2.kill_parent",
    s2_init_module => "s2.init_module",
    s2_bpf => "s2.bpf",
    s2_perf_event_open => "s2.perf_event_open",
    s2_userfaultfd => "s2.userfaultfd",
    s2_io_uring_setup => "s2.io_uring_setup",
    s2_keyctl => "s2.keyctl",
    s2_kexec_load => "s2.kexec_load",
    s2_setns => "s2.setns",
    s2_chroot => "s2.chroot",
    s2_setuid_root => "s2.setuid_root",
    s2_prctl_set_seccomp => "s2.prctl_set_seccomp",
    s2_prctl_set_dumpable => "s2.prctl_set_dumpable",
    s2_ioctl_fionbio => "s2.ioctl_fionbio",
    s2_mprotect_exec => "s2.mprotect_exec",
    s2_mmap_exec => "s2.mmap_exec",
    s2_socket_unix => "s2.socket_unix",
    s2_sendto => "s2.sendto",
    s2_recvfrom => "s2.recvfrom",
    s2_rename => "s2.rename",
    s2_unlink => "s2.unlink",
    s2_rmdir => "s2.rmdir",
    s2_uname => "s2.uname",
    s2_getuid => "s2.getuid",
    s2_getgid => "s2.getgid",
    s2_futex_lock_pi => "s2.futex_lock_pi",
    s2_futex_cmp_requeue => "s2.futex_cmp_requeue",
    s2_madvise_dontfork => "s2.madvise_dontfork",
    s2_alloc_big => "s2.alloc_big",
    s2_crash_segv => "s2.crash_segv",
}
