//! The real supervisor as PID 1, on the host, boxed in: new user namespace
//! whose root is the unprivileged host uid 65534, plus new pid, mount, net,
//! ipc and uts namespaces. Its console ttyS0 is a pseudo-terminal that the
//! test drives.
//!
//! Why this is safe on a host: as host uid 65534 it cannot write any global
//! sysctl (the /proc/sys files belong to host root; every write fails, so
//! the lockdown reports failures and the appliance says NOT READY), it
//! cannot mount devtmpfs or securityfs, its rtnetlink requests act on its
//! own network namespace (only `lo`), sysfs writes are refused to it, and
//! reboot(2) in a pid namespace only ends that namespace. The wrapper
//! script refuses to start it unless the uid map is exactly `0 65534 1`.
//!
//! What it shows: PID 1 boots, serves the console, reports a failed
//! lockdown as not ready, restarts a crashed (SIGABRT) console service
//! after the 1 s backoff and records the crash, treats a missing tty as
//! unavailable, and `poweroff` runs the shutdown through to reboot(2).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROMPT: &str = "airlock> ";

struct Term {
    master: File,
    seen: String,
}

impl Term {
    fn until(&mut self, pat: &str, secs: u64) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
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
                match self.master.read(&mut b) {
                    Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&b[..n])),
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => panic!("read pty: {e}"),
                }
            }
        }
    }

    fn line(&mut self, text: &str) {
        self.master
            .write_all(format!("{text}\r").as_bytes())
            .unwrap();
    }
}

/// Host pid of the console service for ttyS0 started from `exe`.
fn console_pid(exe: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.len() >= 3
            && args[0] == exe.as_bytes()
            && args[1] == b"console"
            && args[2] == b"ttyS0"
        {
            return Some(pid);
        }
    }
    None
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

#[test]
fn pid1_in_namespaces_serves_restarts_and_powers_off() {
    // Not under /tmp or /run: PID 1 mounts fresh tmpfs there.
    let dir = tempfile::Builder::new()
        .prefix("airlock-pid1-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A copy of the binary the unprivileged uid can reach (the target dir
    // may be under /root, mode 0700).
    let exe = dir.path().join("airlock-init");
    std::fs::copy(env!("CARGO_BIN_EXE_airlock-init"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let devdir = dir.path().join("dev");
    std::fs::create_dir(&devdir).unwrap();
    std::fs::set_permissions(&devdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("stderr.log");

    let pty = nix::pty::openpty(None, None).unwrap();
    nix::sys::stat::fchmod(&pty.slave, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    // The slave must survive exec into the wrapper, which bind-mounts it.
    nix::fcntl::fcntl(
        &pty.slave,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let slave_fd = pty.slave.as_raw_fd();

    let script = format!(
        r#"set -e
grep -qx ' *0 *65534 *1' /proc/self/uid_map || {{ echo "uid map is not 0 -> 65534: refusing" >&2; exit 99; }}
mount -t tmpfs -o mode=0755 tmpfs {dev}
touch {dev}/ttyS0 {dev}/null
mount --bind /proc/self/fd/{slave_fd} {dev}/ttyS0
mount --bind /dev/null {dev}/null
mount --rbind {dev} /dev

exec {exe}"#,
        dev = devdir.display(),
        exe = exe.display()
    );

    // The user namespace is made in the child before exec (so the wrapper
    // runs as its root with capabilities); the map is written from here.
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let (ready_w_raw, go_r_raw) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let mapper = std::thread::spawn(move || {
        let mut b = [0u8; 4];
        File::from(ready_r).read_exact(&mut b).unwrap();
        let pid = i32::from_ne_bytes(b);
        std::fs::write(format!("/proc/{pid}/uid_map"), "0 65534 1").unwrap();
        std::fs::write(format!("/proc/{pid}/gid_map"), "0 65534 1").unwrap();
        File::from(go_w).write_all(b"g").unwrap();
    });
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--net",
        "--ipc",
        "--uts",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .stdin(Stdio::null())
    .stdout(File::create(&log).unwrap())
    .stderr(File::create(dir.path().join("stderr2.log")).unwrap());
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (getpid, unshare, write, read,
    // setgroups, setresgid, setresuid, _exit) on descriptors it owns.
    unsafe {
        cmd.pre_exec(move || {
            let fail = |step: i32| -> ! { libc::_exit(100 + step) };
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                fail(1);
            }
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(ready_w_raw, pid.as_ptr().cast(), 4) != 4 {
                fail(2);
            }
            let mut g = [0u8; 1];
            if libc::read(go_r_raw, g.as_mut_ptr().cast(), 1) != 1 {
                fail(3);
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(0, 0, 0) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                fail(4);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn unshare (util-linux)");
    mapper.join().unwrap();
    drop(pty.slave);
    let mut t = Term {
        master: File::from(pty.master),
        seen: String::new(),
    };

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let boot = t.until(PROMPT, 60);
        assert!(
            boot.contains(&format!("Airlock {} (slot ", airlock_supervisor::VERSION)),
            "{boot}"
        );
        assert!(boot.contains("airlock: NOT READY — sysctl lockdown failed: write kernel.kptr_restrict: Permission denied"), "{boot}");

        t.line("status");
        let status = t.until(PROMPT, 30);
        assert!(
            status.contains("\r\nready: no — sysctl lockdown failed: "),
            "{status}"
        );
        assert!(
            status.contains("\r\nservice console:ttyS0: running (pid "),
            "{status}"
        );
        assert!(status.contains("mount devtmpfs on /dev: EPERM"), "{status}");

        // Crash the console service: PID 1 restarts it after 1 s.
        let pid = console_pid(&exe.display().to_string()).expect("console service process");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGABRT,
        )
        .unwrap();
        let again = t.until(PROMPT, 30);
        assert!(
            again.contains(&format!("Airlock {} (slot ", airlock_supervisor::VERSION)),
            "{again}"
        );
        let new_pid = console_pid(&exe.display().to_string()).expect("restarted console service");
        assert_ne!(new_pid, pid);
        t.line("status");
        let status = t.until(PROMPT, 30);
        assert!(
            status.contains(", 1 restart(s), last signal SIGABRT)\r\n"),
            "{status}"
        );
        // There is no tty1 in this box: tried, found missing, retried slowly.
        assert!(
            status
                .contains("\r\nservice console:tty1: device unavailable, retrying every 60 s\r\n"),
            "{status}"
        );

        t.line("poweroff");
        t.until("airlock: powering off", 30);
    }));
    if let Err(e) = outcome {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "stderr of PID 1:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        eprintln!(
            "stderr of the wrapper:\n{}",
            std::fs::read_to_string(dir.path().join("stderr2.log")).unwrap_or_default()
        );
        std::panic::resume_unwind(e);
    }
    // reboot(2) in a pid namespace ends the namespace: unshare returns.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            // reboot(RB_POWER_OFF) from the init of a pid namespace kills
            // that init with SIGINT; unshare passes the signal on. So PID 1
            // went all the way through the shutdown to reboot(2).
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?}");
            break;
        }
        assert!(Instant::now() < end, "PID 1 did not end after poweroff");
        std::thread::sleep(Duration::from_millis(100));
    }
}
