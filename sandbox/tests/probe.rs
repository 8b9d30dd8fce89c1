//! Host tests of the sandbox (run as root): the probe suite, one test per check, plus the
//! spawn path's rejection paths, crash/hang handling and the socket audit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

#[test]
fn full_suite() {
    let r = report();
    println!("{r}");
    assert!(r.all_passed(), "{r}");
}

/// Runs the probe's allowed side once (stage 1 only unless AIRLOCK_PROBE_STAGE2 is set) and
/// every socket act; used under strace by `no_inet_socket_ever_opened` and for measuring the
/// stage-2 allow list (`strace -f -ff`). Ignored in normal runs.
#[test]
#[ignore]
fn workload_for_strace() {
    let stage2 = std::env::var_os("AIRLOCK_PROBE_STAGE2").is_some();
    let dir = std::env::temp_dir().join(format!("airlock-workload-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("model")).unwrap();
    std::fs::write(dir.join("model/weights.bin"), probe_suite::model_bytes()).unwrap();
    std::fs::write(dir.join("model/config.json"), b"{}").unwrap();
    for mode in [
        vec!["allow"],
        vec!["act", "socket_inet"],
        vec!["act", "socket_inet6"],
        vec!["act", "socket_netlink"],
        vec!["act", "socket_packet"],
        vec!["act", "tcp_connect"],
    ] {
        let mut spec = airlock_sandbox::Spec::new(probe());
        if stage2 {
            spec.args.push("--stage2".into());
        }
        spec.args.extend(mode.iter().map(Into::into));
        spec.model_dir = Some(dir.join("model"));
        let mut child = airlock_sandbox::spawn(spec).unwrap();
        let st = child
            .wait_timeout(std::time::Duration::from_secs(60))
            .unwrap();
        eprintln!("{mode:?}: {st:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
