//! Network lockdown on real interfaces, in a throwaway network namespace
//! (with its own mount namespace and a fresh sysfs, so /sys/class/net shows
//! that namespace). Needs root, as CI has. Never touches the host's links.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_supervisor::netlock::{self, NetReport};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::Path;
use std::process::Command;

/// Runs `f` on a thread that has its own network and mount namespaces.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
            .expect("unshare net+mount namespaces (these tests need root)");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private");
        mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .expect("fresh sysfs");
        f()
    })
    .join()
    .expect("namespace thread")
}

fn ip(args: &str) -> bool {
    Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("run ip (iproute2)")
        .success()
}

fn ip_must(args: &str) {
    assert!(ip(args), "ip {args} failed");
}

fn names() -> Vec<String> {
    netlock::list_interfaces(Path::new("/sys/class/net")).unwrap()
}

#[test]
fn every_interface_but_lo_is_removed_and_the_appliance_is_ready() {
    let (before, report, after): (Vec<String>, NetReport, Vec<String>) = in_netns(|| {
        ip_must("link add veth0 type veth peer name veth1");
        ip_must("link set veth0 up");
        ip_must("link add br0 type bridge");
        ip_must("link set br0 up");
        ip_must("link add ifb7 type ifb");
        ip_must("tuntap add tun7 mode tun");
        // dummy is the classic test device; this host kernel lacks it, the
        // appliance kernel too. Use it where it exists.
        if !ip("link add dummy0 type dummy") {
            eprintln!("note: no dummy driver on this kernel; veth, bridge and ifb are used");
        }
        let before = names();
        let report = netlock::lockdown(Path::new("/sys/class/net"));
        (before, report, names())
    });
    for n in ["veth0", "veth1", "br0", "ifb7", "tun7"] {
        assert!(
            before.contains(&n.to_string()),
            "{n} was not created: {before:?}"
        );
    }
    assert_eq!(after, vec!["lo".to_string()], "report: {report:?}");
    assert_eq!(report.verdict(), Ok(()));
    assert!(report.remaining.is_empty());
    // Each interface was set down and deleted (or vanished with its peer).
    let br = report.outcomes.iter().find(|o| o.name == "br0").unwrap();
    assert_eq!(br.steps, vec!["down", "deleted"]);
    assert!(!br.physical);
    let veth_steps: Vec<&Vec<String>> = report
        .outcomes
        .iter()
        .filter(|o| o.name.starts_with("veth"))
        .map(|o| &o.steps)
        .collect();
    assert!(
        veth_steps
            .iter()
            .any(|s| s.contains(&"deleted".to_string())),
        "{veth_steps:?}"
    );
}

#[test]
fn interfaces_that_cannot_be_removed_make_the_appliance_not_ready() {
    // Without CAP_NET_ADMIN (capabilities are per thread) the kernel
    // refuses both steps: the interfaces stay, so the lockdown must fail
    // closed and name each one with its reason.
    let (report, after) = in_netns(|| {
        ip_must("link add br9 type bridge");
        ip_must("link add veth8 type veth peer name veth9");
        caps::drop(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_NET_ADMIN,
        )
        .unwrap();
        let report = netlock::lockdown(Path::new("/sys/class/net"));
        (report, names())
    });
    assert_eq!(after, vec!["br9", "lo", "veth8", "veth9"]);
    assert_eq!(report.remaining, vec!["br9", "veth8", "veth9"]);
    let why = report.verdict().unwrap_err();
    assert_eq!(
        why,
        "network interface(s) remain: \
         br9 (set br9 down: EPERM: Operation not permitted, delete br9: EPERM: Operation not permitted); \
         veth8 (set veth8 down: EPERM: Operation not permitted, delete veth8: EPERM: Operation not permitted); \
         veth9 (set veth9 down: EPERM: Operation not permitted, delete veth9: EPERM: Operation not permitted)"
    );
}

#[test]
fn a_namespace_with_only_lo_is_ready_without_doing_anything() {
    let report = in_netns(|| netlock::lockdown(Path::new("/sys/class/net")));
    assert!(report.outcomes.is_empty());
    assert_eq!(report.verdict(), Ok(()));
}

#[test]
fn inet_socket_check_reports_both_ways() {
    // This host kernel has an IP stack: the check must say so.
    assert_eq!(netlock::inet_sockets(), "AVAILABLE — NOT SAFE");
    // A thread whose seccomp filter answers socket(AF_INET) with
    // EAFNOSUPPORT sees what the appliance kernel (CONFIG_INET=n) answers.
    let refused = std::thread::spawn(|| {
        use seccompiler::{
            BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
            SeccompFilter, SeccompRule,
        };
        let rule = SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::AF_INET as u64,
        )
        .unwrap()])
        .unwrap();
        let filter = SeccompFilter::new(
            [(libc::SYS_socket, vec![rule])].into_iter().collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
            std::env::consts::ARCH.try_into().unwrap(),
        )
        .unwrap();
        let prog: BpfProgram = filter.try_into().unwrap();
        seccompiler::apply_filter(&prog).unwrap();
        netlock::inet_sockets()
    })
    .join()
    .unwrap();
    assert_eq!(refused, "refused (EAFNOSUPPORT)");
}
