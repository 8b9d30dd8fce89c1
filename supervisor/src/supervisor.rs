//! PID 1: the boot sequence and the event loop.
//!
//! Boot: block signals (signalfd) and disable ctrl-alt-del → mount /dev,
//! /proc, /sys, securityfs, /run, /tmp → kmsg logging → command line →
//! sysctls → network lockdown → state partition (then the `model-check`
//! child, reaped by the loop) → consoles. Then one
//! single-threaded loop: signals, control sockets of the consoles, a 1 s
//! tick (USB sticks, new network interfaces, late state partition), due
//! service restarts. Every turn runs under `catch_unwind`: a bug is logged
//! and the loop goes on; PID 1 never exits.

use crate::auditd::{Auditd, Draft};
use crate::clock::{boottime, secs3};
use crate::cmdline::{self, Cmdline};
use crate::control::{Reply, Request, MAX_MSG};
use crate::events::{EventKind, EventLog};
use crate::mounts::{self, MountTable};
use crate::netlock::{self, NetReport};
use crate::reaper;
use crate::services::{Service, State};
use crate::shutdown::{self, Mode};
use crate::signals::{self, Action};
use crate::status::{self, Report};
use crate::sysctl;
use crate::usb::{self, Stick};
use airlock_formats::audit::entry::{Action as AuditAction, Outcome, Role};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use thiserror::Error;

/// How often sticks, interfaces and the state partition are looked at.
pub const TICK: Duration = Duration::from_secs(1);
/// The state partition is looked for until this much time after boot
/// (disks behind slow controllers appear after init starts).
pub const STATE_WAIT: Duration = Duration::from_secs(30);
/// Notice printed on a console when it is up and the appliance is ready.
pub const READY_LINE: &str = "airlock: console ready";

/// Failing operation of the supervisor's own steps.
#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error("socketpair for {tty}: {0}", tty = .1)]
    Socketpair(nix::Error, String),
    #[error("clear close-on-exec for {tty}: {0}", tty = .1)]
    Cloexec(nix::Error, String),
    #[error("spawn {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
}

/// One console service and its control socket.
struct Console {
    tty: String,
    service: Service,
    ctl: Option<OwnedFd>,
    /// The account logged in on it (it handed over the audit key).
    login: Option<(String, Role)>,
}

/// A running label reader (`airlock-init usb-label DISK`).
struct LabelJob {
    pid: i32,
    disk: String,
    stdout: std::process::ChildStdout,
    started: Duration,
}

/// Everything PID 1 knows.
pub struct Supervisor {
    cmdline: Cmdline,
    mounts: MountTable,
    boot_problems: Vec<String>,
    sysctls: Vec<sysctl::Applied>,
    net: NetReport,
    interfaces_seen: Vec<String>,
    state_partition: String,
    state_found: bool,
    /// How the state partition was bound (`state binding`).
    state_binding: String,
    /// Partitions named airlock-state that were not taken (`state ignored`).
    state_ignored: Vec<crate::state::Ignored>,
    /// The boot ESP from LoaderDevicePartUUID, read once.
    boot_esp: Option<Result<Option<String>, crate::state::StateError>>,
    /// What the `grow-state` child did this boot (`state space`).
    state_grow: Option<crate::grow::Report>,
    /// GPTs read by `gpt-parts` children, per disk (read once per boot).
    gpt_cache: Vec<(String, Result<Vec<crate::gpt::Entry>, String>)>,
    dma: crate::dma::Report,
    consoles: Vec<Console>,
    sticks: Vec<Stick>,
    label_jobs: Vec<LabelJob>,
    /// Inserted sticks whose notice waits for their label.
    unannounced: Vec<String>,
    state_disk: Vec<String>,
    events: EventLog,
    console_ready_at: Option<Duration>,
    sigfd: Option<SignalFd>,
    self_exe: PathBuf,
    last_tick: Duration,
    /// The audit writer (the only one).
    audit: Auditd,
    /// The boot's at-rest check of the models (`model-check` child).
    model_check: crate::model_check::job::Job,
    /// The boot slots' check (`system-boot` child).
    system: crate::system::job::Job,
    /// A restart asked for by the system check: when, and why.
    reboot_at: Option<(Duration, String)>,
}

/// Runs PID 1. Never returns.
pub fn run_pid1() -> ! {
    crate::klog::init();
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error (contained): {info}");
    }));
    // A bug in the boot sequence must not become a kernel panic (and with
    // panic=10 a reboot loop): say so and halt.
    let mut sv = match std::panic::catch_unwind(Supervisor::boot) {
        Ok(sv) => sv,
        Err(_) => halt("airlock: internal error during boot (details in the kernel log); halted, you can switch the PC off"),
    };
    let mut recent_panics: Vec<Duration> = Vec::new();
    loop {
        let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sv.turn()));
        match turn {
            Ok(None) => {}
            Ok(Some((mode, cause))) => {
                // `shutdown` does not return; if it panics half-way, still
                // sync and make the final call.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    sv.shutdown(mode, &cause)
                }));
                nix::unistd::sync();
                let e = shutdown::finish(mode);
                halt(&format!(
                    "airlock: reboot(2) failed ({e}); you can switch the PC off"
                ));
            }
            Err(_) => {
                let now = boottime();
                recent_panics.retain(|t| now.saturating_sub(*t) < Duration::from_secs(10));
                recent_panics.push(now);
                if recent_panics.len() > 5 {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Test-only (`scripts/build-image --demo --test-fault panic`): a system
/// that dies at boot, to prove the fallback of A/B updates. Honoured only
/// by demo images; PID 1 exits, so the kernel panics and (panic=10)
/// restarts, using up a boot try.
fn test_fault_panic() {
    let fault = crate::cmdline::read_raw_value("airlock.test.fault");
    if fault.as_deref() == Some("panic") && crate::system::running_variant() == "demo" {
        log::error!("airlock.test.fault=panic: PID 1 exits at boot (test fault)");
        std::process::exit(1);
    }
}

/// The audit writer's segment size from the image's policy file (the
/// compiled-in default when the file is unreadable; the console says why).
fn audit_policy() -> airlock_formats::audit::writer::Policy {
    use crate::identity::policy::{Policy, POLICY_PATH};
    let p = Policy::from_file(Path::new(POLICY_PATH)).unwrap_or_default();
    airlock_formats::audit::writer::Policy {
        segment_entries: p.audit_segment_entries.max(1),
    }
}

/// Says `line` on the console and in the kernel log, then sleeps forever
/// (pid 1 must never exit).
fn halt(line: &str) -> ! {
    use std::io::Write;
    log::error!("{line}");
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// How long a `gpt-parts` child may take (a disk that hangs I/O).
pub const GPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `airlock-init gpt-parts DISK` and parses its output. Waits at most
/// [`GPT_TIMEOUT`]; a child still running then is killed (and later reaped
/// by the event loop's reaper).
fn run_gpt_child(exe: &Path, disk: &str) -> Result<Vec<crate::gpt::Entry>, String> {
    let (ok, out, err) = run_child(exe, &["gpt-parts", disk], GPT_TIMEOUT)?;
    if !ok {
        return Err(err);
    }
    Ok(crate::gpt::parse_output(&String::from_utf8_lossy(&out)))
}

/// How long a `grow-state` child may take: growing the ext4 of a large disk
/// online adds thousands of block groups. A child still running then is
/// killed; the kernel finishes a resize it started, and the next boot
/// carries on where this one stopped.
pub const GROW_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `airlock-init grow-state DISK PARTN GUID MOUNTPOINT` (grow.rs).
fn run_grow_child(exe: &Path, disk: &str, partn: u32, guid: &str) -> crate::grow::Report {
    let partn = partn.to_string();
    let args = ["grow-state", disk, &partn, guid, mounts::STATE_MOUNT];
    match run_child(exe, &args, GROW_TIMEOUT) {
        Ok((ok, out, err)) => {
            let mut r = crate::grow::parse_output(&String::from_utf8_lossy(&out));
            if !ok {
                r.error = Some(err);
            }
            r
        }
        Err(e) => crate::grow::Report {
            error: Some(e),
            ..Default::default()
        },
    }
}

/// Runs `airlock-init ARGS...` with an empty environment and collects its
/// stdout (at most 64 KiB) and the first 512 bytes of its stderr (without
/// the `airlock-init: ` prefix). Waits at most `timeout`; a child still
/// running then is killed (and later reaped by the event loop's reaper).
fn run_child(
    exe: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(bool, Vec<u8>, String), String> {
    use std::io::Read;
    let name = args.first().copied().unwrap_or("child");
    let what = args.get(..2).unwrap_or(args).join(" ");
    let mut child = Command::new(exe)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {name}: {e}"))?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(format!("{name}: no pipes"));
    };
    let deadline = boottime() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_sub(boottime());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        let ready = matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0);
        if !ready && boottime() < deadline {
            continue; // a poll shorter than the time left (u16 ms)
        }
        if !ready || out.len() > 64 * 1024 {
            let _ = child.kill();
            return Err(format!("{what}: no answer within {} s", timeout.as_secs()));
        }
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = child.kill();
                return Err(format!("{what}: {e}"));
            }
        }
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    let mut err = Vec::new();
    if !status.success() {
        let _ = (&mut stderr).take(512).read_to_end(&mut err);
    }
    let err = String::from_utf8_lossy(&err);
    let msg = err.trim().trim_start_matches("airlock-init: ").to_string();
    Ok((status.success(), out, msg))
}

impl Supervisor {
    /// The boot sequence.
    pub fn boot() -> Supervisor {
        let mut boot_problems = Vec::new();
        // First of all, before any mount: leave the initramfs rootfs for a tmpfs root, so the
        // sandbox's pivot_root can drop the whole host tree (docs/supervisor.md, "Boot").
        match crate::rootfs::leave_initramfs() {
            Ok(crate::rootfs::Outcome::NotNeeded) => {}
            Ok(crate::rootfs::Outcome::Switched(moved)) => {
                // Run from the moved /init (frees the rootfs copy); returns only on failure.
                let e = crate::rootfs::reexec();
                boot_problems.push(format!(
                    "rootfs: moved {} entries ({} bytes) to a tmpfs root, but re-executing /init failed: {e}",
                    moved.entries, moved.bytes
                ));
            }
            // Sandboxed spawns refuse an absolute root (fail closed); the rest still boots.
            Err(e) => boot_problems.push(e.to_string()),
        }
        let sigfd = match signals::signalfd() {
            Ok(fd) => Some(fd),
            Err(e) => {
                boot_problems.push(e.to_string());
                None
            }
        };
        if let Err(e) = signals::disable_cad() {
            boot_problems.push(e.to_string());
        }
        let mut mounts = MountTable::default();
        for m in mounts::EARLY {
            if let Err(e) = mounts.mount(m) {
                boot_problems.push(e.to_string());
            }
            if m.target == "/dev" {
                crate::klog::attach_kmsg();
            }
        }
        log::info!(
            "airlock-init {} starting at {}",
            crate::VERSION,
            secs3(boottime())
        );
        let cmdline = cmdline::read();
        // /proc is mounted now: the test fault can be read.
        test_fault_panic();
        for p in &cmdline.problems {
            log::warn!("{p}");
            boot_problems.push(p.to_string());
        }
        let sysctls = sysctl::apply(Path::new("/proc/sys"), sysctl::POLICY);
        for f in sysctl::failures(&sysctls) {
            log::error!("lockdown: {f}");
        }
        let net = netlock::lockdown(Path::new("/sys/class/net"));
        for o in &net.outcomes {
            log::warn!(
                "network lockdown: {}: {}{}",
                o.name,
                o.steps.join(", "),
                if o.errors.is_empty() {
                    String::new()
                } else {
                    format!("; {}", o.errors.join("; "))
                }
            );
        }
        if let Err(why) = net.verdict() {
            log::error!("NOT READY: {why}");
        }
        let interfaces_seen =
            netlock::list_interfaces(Path::new("/sys/class/net")).unwrap_or_default();
        let consoles = cmdline
            .consoles
            .iter()
            .map(|t| Console {
                tty: t.clone(),
                service: Service::new(format!("console:{t}")),
                ctl: None,
                login: None,
            })
            .collect();
        let mut sv = Supervisor {
            cmdline,
            mounts,
            boot_problems,
            sysctls,
            net,
            interfaces_seen,
            state_partition: "none".into(),
            state_found: false,
            state_binding: "none".into(),
            state_ignored: Vec::new(),
            boot_esp: None,
            state_grow: None,
            gpt_cache: Vec::new(),
            dma: crate::dma::probe_system(),
            consoles,
            sticks: Vec::new(),
            label_jobs: Vec::new(),
            unannounced: Vec::new(),
            state_disk: Vec::new(),
            events: EventLog::default(),
            console_ready_at: None,
            sigfd,
            // "/init (deleted)" if the rootfs copy still runs (re-exec failed): use the live file.
            self_exe: std::env::current_exe()
                .ok()
                .filter(|p| !p.to_string_lossy().ends_with(" (deleted)"))
                .unwrap_or_else(|| PathBuf::from("/init")),
            last_tick: Duration::ZERO,
            model_check: Default::default(),
            system: Default::default(),
            reboot_at: None,
            audit: Auditd::new(
                Path::new(crate::auditd::AUDIT_DIR),
                crate::auditd::boot_id(Path::new("/proc/sys")),
                audit_policy(),
            )
            .with_retention(
                crate::identity::policy::Policy::from_file(Path::new(
                    crate::identity::policy::POLICY_PATH,
                ))
                .map(|p| p.audit_keep_segments)
                .unwrap_or(0),
            ),
        };
        // The first entry of every boot (queued until the log is open);
        // efivarfs first, so that it names the slot systemd-boot booted.
        let _ = sv.boot_esp();
        let boot = sv.boot_detail();
        sv.record(Draft::system(
            AuditAction::Boot,
            if sv.verdict().is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            Some(boot),
        ));
        sv.look_for_state_partition();
        sv.sticks = usb::scan(Path::new("/sys/block"), &sv.state_disk).unwrap_or_default();
        for d in sv.sticks.iter().map(|s| s.name.clone()).collect::<Vec<_>>() {
            sv.start_label_job(&d);
        }
        sv.start_due_services();
        sv
    }

    /// `slot=a version=0.1.0 ready=yes lockdown=17-set-4-absent-0-failed`.
    fn boot_detail(&self) -> String {
        let (set, absent, failed) = sysctl::counts(&self.sysctls);
        format!(
            "slot={} version={} ready={} lockdown={set}-set-{absent}-absent-{failed}-failed",
            crate::system::slot_label(),
            crate::VERSION,
            if self.verdict().is_ok() { "yes" } else { "no" },
        )
    }

    /// Records a draft of PID 1 itself; a failure is logged (the writer
    /// then refuses every audited action of the consoles).
    fn record(&mut self, d: Draft) {
        if let Err(e) = self.audit.record(d) {
            log::error!("audit: {e}");
        }
    }

    fn open_audit(&mut self) {
        match self.audit.open() {
            Ok(true) => log::info!("audit log: {}", self.audit.status_value()),
            Ok(false) => log::info!("audit log: not provisioned yet"),
            Err(e) => log::error!("audit log: {e}"),
        }
    }

    /// Answers an audit request of console `i` (`auditd::Auditd::handle`)
    /// and keeps track of who is logged in where.
    fn on_audit_request(&mut self, i: usize, req: Request) -> String {
        let (answer, change) = self.audit.handle(i, &req);
        if let (Some(change), Some(c)) = (change, self.consoles.get_mut(i)) {
            c.login = change;
        }
        answer
    }

    /// Readiness: every lockdown step held.
    pub fn verdict(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if let Err(e) = self.net.verdict() {
            why.push(e);
        }
        let f = sysctl::failures(&self.sysctls);
        if !f.is_empty() {
            why.push(format!("sysctl lockdown failed: {}", f.join("; ")));
        }
        if let Err(e) = self.dma.readiness(self.cmdline.dma) {
            why.push(e);
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    /// The boot ESP's GUID (efivarfs mounted read-only on first use).
    fn boot_esp(&mut self) -> Result<Option<String>, crate::state::StateError> {
        if let Some(r) = &self.boot_esp {
            return r.clone();
        }
        if Path::new("/sys/firmware/efi").is_dir() {
            if let Err(e) = self.mounts.mount(&mounts::EFIVARS) {
                log::warn!("state partition: {e}");
            }
        }
        let r = crate::state::boot_esp(Path::new(crate::state::EFIVARS));
        self.boot_esp = Some(r.clone());
        r
    }

    /// A disk's GPT, read by an `airlock-init gpt-parts DISK` child (once).
    fn gpt_of(&mut self, disk: &str) -> Result<Vec<crate::gpt::Entry>, String> {
        if let Some((_, r)) = self.gpt_cache.iter().find(|(d, _)| d == disk) {
            return r.clone();
        }
        let r = run_gpt_child(&self.self_exe, disk);
        self.gpt_cache.push((disk.to_string(), r.clone()));
        r
    }

    fn look_for_state_partition(&mut self) {
        let named = match crate::state::named_partitions(Path::new("/sys/class/block")) {
            Ok(n) => n,
            Err(e) => {
                self.state_partition = format!("none ({e})");
                return;
            }
        };
        if named.is_empty() {
            return;
        }
        let esp = match self.boot_esp() {
            Ok(esp) => esp,
            Err(e) => {
                self.state_found = true;
                self.state_partition = format!("refused: {e}");
                log::error!("state partition: {e}");
                return;
            }
        };
        let want = self.cmdline.state.clone();
        let mut table = |disk: &str| self.gpt_of(disk);
        let picked = crate::state::select(&named, want.as_deref(), esp.as_deref(), &mut table);
        match picked {
            Ok(sel) => {
                if sel.ignored != self.state_ignored && !sel.ignored.is_empty() {
                    log::warn!(
                        "state partition: ignored {}",
                        crate::state::ignored_value(&sel.ignored)
                    );
                }
                self.state_ignored = sel.ignored;
                let Some((dev, disk)) = sel.chosen else {
                    return;
                };
                self.state_found = true;
                self.state_binding = match (&want, &esp) {
                    (Some(w), Some(e)) => {
                        format!("PARTUUID {w} on the boot disk {disk} (LoaderDevicePartUUID {e})")
                    }
                    (Some(w), None) => format!(
                        "PARTUUID {w} on {disk} (no LoaderDevicePartUUID: boot disk not checked)"
                    ),
                    (None, _) => "none".into(),
                };
                match mounts::mount_state(&mut self.mounts, &dev) {
                    Ok(()) => {
                        self.open_audit();
                        self.state_partition =
                            format!("/dev/{dev} mounted at {}", mounts::STATE_MOUNT);
                        log::info!("state partition: {}", self.state_partition);
                        let partn = named.iter().find(|n| n.dev == dev).map(|n| n.partn);
                        if let (Some(partn), Some(guid)) = (partn, want.as_deref()) {
                            self.grow_state(&disk, partn, guid);
                        }
                        let store = Path::new(mounts::STATE_MOUNT).join(crate::models::STORE_DIR);
                        let facts = self.model_check.start(&self.self_exe, &store, boottime());
                        self.on_model_check(facts);
                    }
                    Err(e) => {
                        self.state_partition = format!("/dev/{dev} found, NOT mounted: {e}");
                        log::error!("state partition: {}", self.state_partition);
                    }
                }
                // The disk holding it is never offered as a stick.
                self.state_disk = vec![disk];
            }
            Err(e) => {
                self.state_found = true;
                self.state_partition = format!("refused: {e}");
                log::error!("state partition: {e}");
            }
        }
    }

    /// Grows the state partition and its ext4 to fill the disk (a child,
    /// grow.rs), once the state is mounted; audited when something grew or
    /// a step failed. Never stops the boot: the state stays mounted at the
    /// size it has.
    fn grow_state(&mut self, disk: &str, partn: u32, guid: &str) {
        let r = run_grow_child(&self.self_exe, disk, partn, guid);
        if let Some(line) = r.summary() {
            let outcome = if r.error.is_some() {
                log::error!("state space: {line}");
                Outcome::Failed
            } else {
                log::info!("state space: {line}");
                Outcome::Ok
            };
            let detail = crate::screen::line(&line).chars().take(250).collect();
            self.record(Draft::system(
                AuditAction::StateGrown,
                outcome,
                Some(detail),
            ));
        }
        self.state_grow = Some(r);
    }

    /// The `state space` status value (statvfs of the mount).
    fn state_space(&self) -> String {
        let mounted = self
            .mounts
            .mounted
            .iter()
            .any(|m| m.target == Path::new(mounts::STATE_MOUNT));
        if !mounted {
            return "unknown (state partition not mounted)".into();
        }
        match nix::sys::statvfs::statvfs(mounts::STATE_MOUNT) {
            Ok(st) => crate::grow::space_value(
                st.blocks_available().saturating_mul(st.fragment_size()),
                st.blocks().saturating_mul(st.fragment_size()),
                self.state_grow.as_ref(),
            ),
            Err(e) => format!("unknown (statvfs {}: {e})", mounts::STATE_MOUNT),
        }
    }

    fn spawn_console(&self, tty: &str) -> Result<(i32, OwnedFd), SupervisorError> {
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| SupervisorError::Socketpair(e, tty.into()))?;
        // The child's end must survive exec: clear close-on-exec on it only.
        // PID 1 is single-threaded, so no other spawn can inherit it.
        nix::fcntl::fcntl(
            &theirs,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|e| SupervisorError::Cloexec(e, tty.into()))?;
        let child = Command::new(&self.self_exe)
            .arg("console")
            .arg(tty)
            .arg("--ctl-fd")
            .arg(theirs.as_raw_fd().to_string())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| SupervisorError::Spawn {
                exe: self.self_exe.display().to_string(),
                source,
            })?;
        drop(theirs);
        let pid = i32::try_from(child.id()).unwrap_or(0);
        // The handle is dropped without waiting: the reaper collects it.
        drop(child);
        Ok((pid, ours))
    }

    /// Starts the label reader for a disk (failures only cost the label).
    fn start_label_job(&mut self, disk: &str) {
        let child = Command::new(&self.self_exe)
            .arg("usb-label")
            .arg(disk)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(mut c) => {
                let pid = i32::try_from(c.id()).unwrap_or(0);
                if let Some(stdout) = c.stdout.take() {
                    self.label_jobs.push(LabelJob {
                        pid,
                        disk: disk.to_string(),
                        stdout,
                        started: boottime(),
                    });
                }
            }
            Err(e) => {
                log::warn!("usb-label {disk}: {e}");
                self.announce_insert(disk);
            }
        }
    }

    /// A label reader exited: its output (already complete) is the label.
    fn on_label_done(&mut self, i: usize) {
        use std::io::Read;
        let mut job = self.label_jobs.swap_remove(i);
        let mut out = String::new();
        let _ = (&mut job.stdout).take(256).read_to_string(&mut out);
        // The reader prints the label already escaped (`usb_label::shown`);
        // `screen::line` catches a reader that did not.
        let label = out
            .lines()
            .next()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| crate::screen::line(l).into_owned());
        if let Some(s) = self.sticks.iter_mut().find(|s| s.name == job.disk) {
            s.label = label;
        }
        self.announce_insert(&job.disk);
    }

    /// Sends the deferred `[usb] stick inserted` notice of `disk` (once its
    /// label is known or its reader gave up), if the stick is still there.
    fn announce_insert(&mut self, disk: &str) {
        let Some(i) = self.unannounced.iter().position(|d| d == disk) else {
            return;
        };
        self.unannounced.swap_remove(i);
        if let Some(s) = self.sticks.iter().find(|s| s.name == disk) {
            let line = usb::inserted_notice(s);
            log::info!("{line}");
            self.broadcast(&line);
            let detail = usb::audit_detail(s);
            self.record(Draft::system(
                AuditAction::StickInserted,
                Outcome::Ok,
                Some(detail),
            ));
        }
    }

    fn start_due_services(&mut self) {
        let now = boottime();
        for i in 0..self.consoles.len() {
            if !self.consoles[i].service.due(now) {
                continue;
            }
            let tty = self.consoles[i].tty.clone();
            match self.spawn_console(&tty) {
                Ok((pid, ctl)) => {
                    let c = &mut self.consoles[i];
                    c.service.started(pid, now);
                    c.ctl = Some(ctl);
                    self.events.push(
                        now,
                        EventKind::ServiceStarted {
                            service: c.service.name.clone(),
                            pid,
                        },
                    );
                }
                Err(e) => {
                    let c = &mut self.consoles[i];
                    let d = c.service.spawn_failed(now, e.to_string());
                    log::error!(
                        "{}: {e}; retrying in {} s",
                        c.service.name,
                        d.restart_in.as_secs()
                    );
                }
            }
        }
    }

    fn broadcast(&self, line: &str) {
        let msg = Reply::Notice(crate::screen::line(line).into_owned()).encode();
        for c in &self.consoles {
            if let Some(fd) = &c.ctl {
                let _ = socket::send(
                    fd.as_raw_fd(),
                    &msg,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                );
            }
        }
    }

    /// Audits and announces what the model check reported.
    fn on_model_check(&mut self, facts: Vec<crate::model_check::line::Line>) {
        use crate::model_check::job;
        for f in facts {
            log::info!("model check: {f}");
            if let Some(n) = job::notice(&f) {
                self.broadcast(&n);
            }
            if let Some(d) = job::draft(&f) {
                self.record(d);
            }
        }
    }

    /// Starts the system check once the model check has ended and the
    /// audit log is open (or has failed): before provisioning it waits.
    fn maybe_start_system_check(&mut self) {
        if self.system.started() || !self.model_check.ended() {
            return;
        }
        let Some(audit) = self.audit.health() else {
            return;
        };
        if let Err(e) = self.system.start(&self.self_exe, &audit, boottime()) {
            log::error!("system: {e}");
            self.system.status = Some(e);
        }
    }

    /// Relays what the system check said.
    fn on_system(&mut self, msgs: Vec<crate::system::job::Msg>) {
        use crate::system::job::{Msg, REBOOT_DELAY};
        for m in msgs {
            match m {
                Msg::Notice(n) => {
                    log::info!("{n}");
                    self.broadcast(&n);
                }
                Msg::Audit(d) => self.record(d),
                Msg::Status(s) => log::info!("system: {s}"),
                Msg::Log(l) => log::info!("system: {l}"),
                Msg::Reboot(cause) => {
                    if self.reboot_at.is_none() {
                        self.broadcast(&format!(
                            "airlock: restarting in {} s: {cause}",
                            REBOOT_DELAY.as_secs()
                        ));
                        self.reboot_at = Some((boottime() + REBOOT_DELAY, cause));
                    }
                }
            }
        }
    }

    fn on_reaped(&mut self, r: reaper::Reaped) {
        let now = boottime();
        if let Some(i) = self.label_jobs.iter().position(|j| j.pid == r.pid) {
            self.on_label_done(i);
            return;
        }
        if self.model_check.owns(r.pid) {
            let facts = self.model_check.exited(&r.status, r.code, now);
            return self.on_model_check(facts);
        }
        if self.system.owns(r.pid) {
            let msgs = self.system.exited(&r.status, r.code);
            return self.on_system(msgs);
        }
        let Some(i) = self
            .consoles
            .iter()
            .position(|c| c.service.pid() == Some(r.pid))
        else {
            return; // an orphan re-parented to us: reaped, nothing to restart
        };
        if let Some((name, role)) = self.consoles[i].login.take() {
            let tty = self.consoles[i].tty.clone();
            self.record(
                Draft::by(&name, role, AuditAction::Logout, Outcome::Ok)
                    .reason("console-exited")
                    .detail(tty),
            );
            if self.audit.key_held() {
                if let Err(e) = self.audit.checkpoint() {
                    log::error!("audit: {e}");
                }
            }
            self.audit.release_key(i);
        }
        let c = &mut self.consoles[i];
        c.ctl = None;
        let d = c.service.exited(now, r.status.clone(), r.code);
        let name = c.service.name.clone();
        if r.code == Some(crate::services::EXIT_UNAVAILABLE) {
            if d.report {
                log::warn!(
                    "{name}: device unavailable; retrying every {} s",
                    d.restart_in.as_secs()
                );
                self.events
                    .push(now, EventKind::ServiceUnavailable { service: name });
            }
            return;
        }
        let line = format!(
            "[supervisor] {name} exited ({}); restarting in {} s",
            r.status,
            d.restart_in.as_secs()
        );
        log::warn!("{line}");
        self.events.push(
            now,
            EventKind::ServiceExited {
                service: name,
                status: r.status,
                restart_in: d.restart_in,
            },
        );
        self.broadcast(&line);
    }

    fn status_report(&self) -> Report {
        let mut r = Report::default();
        let now = boottime();
        r.push("version", crate::VERSION);
        r.push("slot", crate::system::slot_label());
        r.push(
            "system",
            self.system
                .status
                .clone()
                .unwrap_or_else(|| "not checked yet".into()),
        );
        r.push(
            "uptime",
            format!("{}.{} s", now.as_secs(), now.subsec_millis() / 100),
        );
        r.push("ready", status::ready_value(&self.verdict()));
        r.push(
            "console ready after",
            self.console_ready_at
                .map(secs3)
                .unwrap_or_else(|| "not yet".into()),
        );
        r.push("cpu", crate::cpu::status_line());
        r.push(
            "interfaces",
            netlock::list_interfaces(Path::new("/sys/class/net"))
                .map(|v| v.join(","))
                .unwrap_or_else(|e| format!("unknown ({e})")),
        );
        r.push("inet sockets", netlock::inet_sockets());
        r.push("lsm", status::lsm(Path::new("/sys/kernel/security")));
        r.push("landlock abi", status::landlock_abi());
        r.push("seccomp", status::seccomp(Path::new("/proc")));
        for (k, v) in sysctl::status_lines(&self.sysctls) {
            r.push(k, v);
        }
        for o in &self.net.outcomes {
            r.push(
                format!("network {}", o.name),
                if o.errors.is_empty() {
                    o.steps.join(", ")
                } else {
                    format!("{}; FAILED: {}", o.steps.join(", "), o.errors.join("; "))
                },
            );
        }
        r.push("dma protection", self.dma.status_value(self.cmdline.dma));
        r.push("state partition", self.state_partition.clone());
        r.push("state space", self.state_space());
        r.push("root", crate::rootfs::status_value());
        r.push("state binding", self.state_binding.clone());
        r.push("models at rest", self.model_check.status_value(now));
        if !self.state_ignored.is_empty() {
            r.push(
                "state ignored",
                crate::state::ignored_value(&self.state_ignored),
            );
        }
        r.push("usb sticks", usb::status_value(&self.sticks));
        r.push("audit log", self.audit.status_value());
        r.push(
            "recipients",
            status::recipients(Path::new(crate::document::recipients::IMAGE_DIR)),
        );
        r.push(
            "supervisor rss",
            status::self_rss_kib()
                .map(|k| format!("{k} KiB"))
                .unwrap_or_else(|| "unknown".into()),
        );
        for c in &self.consoles {
            r.push(format!("service {}", c.service.name), c.service.describe());
        }
        if !self.boot_problems.is_empty() {
            r.push("boot problems", self.boot_problems.join("; "));
        }
        r
    }

    /// ` by alice` when an account is logged in on console `i`.
    fn by(&self, i: usize) -> String {
        match self.consoles.get(i).and_then(|c| c.login.as_ref()) {
            Some((n, _)) => format!(" by {n}"),
            None => String::new(),
        }
    }

    fn on_request(&mut self, i: usize, req: Request) -> Option<(Mode, String)> {
        let tty = self
            .consoles
            .get(i)
            .map(|c| c.tty.clone())
            .unwrap_or_default();
        let reply = match req {
            Request::Up => {
                let now = boottime();
                let verdict = self.verdict();
                if self.console_ready_at.is_none() {
                    self.console_ready_at = Some(now);
                    log::info!("console ready after {}", secs3(now));
                }
                let mut ready = match (verdict, self.dma.warning(self.cmdline.dma)) {
                    (Ok(()), None) => READY_LINE.to_string(),
                    (Ok(()), Some(w)) => format!("{READY_LINE}\n{w}"),
                    (Err(why), _) => format!("airlock: NOT READY — {why}"),
                };
                for n in self.model_check.notices() {
                    ready.push('\n');
                    ready.push_str(&n);
                }
                for n in &self.system.notices {
                    ready.push('\n');
                    ready.push_str(n);
                }
                Reply::Ready(ready)
            }
            Request::Status => Reply::Status(self.status_report().render()),
            Request::Poweroff => {
                return Some((Mode::Poweroff, format!("poweroff on {tty}{}", self.by(i))))
            }
            Request::Reboot => {
                return Some((Mode::Reboot, format!("reboot on {tty}{}", self.by(i))))
            }
            r @ (Request::Audit(_)
            | Request::AuditOpen
            | Request::KeyHold(_)
            | Request::KeyDrop
            | Request::Checkpoint
            | Request::AuditCheck
            | Request::Receipt) => Reply::Done(self.on_audit_request(i, r)),
        };
        if let Some(fd) = self.consoles.get(i).and_then(|c| c.ctl.as_ref()) {
            let _ = socket::send(
                fd.as_raw_fd(),
                &reply.encode(),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
        }
        None
    }

    fn tick(&mut self) {
        let now = boottime();
        self.maybe_start_system_check();
        let overdue = self.system.overdue(now);
        self.on_system(overdue);
        if !self.state_found && now < STATE_WAIT {
            self.look_for_state_partition();
        }
        // Label readers that hang (a bad stick) are killed.
        for j in &self.label_jobs {
            if now.saturating_sub(j.started) > crate::usb_label::TIMEOUT {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(j.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Ok(mut new) = usb::scan(Path::new("/sys/block"), &self.state_disk) {
            // Keep the labels already known.
            for n in new.iter_mut() {
                if let Some(o) = self
                    .sticks
                    .iter()
                    .find(|o| o.name == n.name && o.bytes == n.bytes)
                {
                    n.label = o.label.clone();
                }
            }
            let changes = usb::diff(&self.sticks, &new);
            self.sticks = new;
            for ch in changes {
                self.events.push(
                    now,
                    match &ch {
                        usb::Change::Inserted(s) => EventKind::UsbInserted {
                            name: s.name.clone(),
                            bytes: s.bytes,
                        },
                        usb::Change::Removed(n) => EventKind::UsbRemoved { name: n.clone() },
                    },
                );
                match &ch {
                    // Announced when the label reader is done (announce_insert).
                    usb::Change::Inserted(s) => {
                        self.unannounced.push(s.name.clone());
                        self.start_label_job(&s.name);
                    }
                    usb::Change::Removed(n) => {
                        self.unannounced.retain(|d| d != n);
                        let line = usb::removed_notice(n);
                        log::info!("{line}");
                        self.broadcast(&line);
                        self.record(Draft::system(
                            AuditAction::StickRemoved,
                            Outcome::Ok,
                            Some(n.clone()),
                        ));
                    }
                }
            }
        }
        // A network interface that appears later (hot-plugged NIC with a
        // distro kernel) gets the same treatment, and readiness follows.
        let ifs = netlock::list_interfaces(Path::new("/sys/class/net")).unwrap_or_default();
        if ifs != self.interfaces_seen {
            if ifs.iter().any(|n| n != "lo") {
                let was_ready = self.verdict().is_ok();
                self.net = netlock::lockdown(Path::new("/sys/class/net"));
                if let Err(why) = self.verdict() {
                    log::error!("NOT READY: {why}");
                    self.events.push(
                        now,
                        EventKind::LockdownFailed {
                            step: "network".into(),
                            reason: why.clone(),
                        },
                    );
                    if was_ready {
                        self.broadcast(&format!("airlock: NOT READY — {why}"));
                    }
                }
            }
            self.interfaces_seen =
                netlock::list_interfaces(Path::new("/sys/class/net")).unwrap_or_default();
        }
    }

    /// One turn of the event loop; `Some` when a shutdown was requested.
    pub fn turn(&mut self) -> Option<(Mode, String)> {
        let now = boottime();
        let mut timeout = TICK.saturating_sub(now.saturating_sub(self.last_tick));
        for c in &self.consoles {
            if let Some(w) = c.service.wait_left(now) {
                timeout = timeout.min(w);
            }
        }
        let ms = u16::try_from(timeout.as_millis())
            .unwrap_or(u16::MAX)
            .max(1);
        let mut signals_ready = false;
        let mut ctl_ready: Vec<usize> = Vec::new();
        {
            let mut fds: Vec<PollFd> = Vec::new();
            let mut owners: Vec<Option<usize>> = Vec::new();
            if let Some(sfd) = &self.sigfd {
                fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
                owners.push(None);
            }
            for (i, c) in self.consoles.iter().enumerate() {
                if let Some(fd) = &c.ctl {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    owners.push(Some(i));
                }
            }
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => {
                    log::error!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            for (fd, owner) in fds.iter().zip(owners) {
                if fd.revents().is_some_and(|r| !r.is_empty()) {
                    match owner {
                        None => signals_ready = true,
                        Some(i) => ctl_ready.push(i),
                    }
                }
            }
        }
        if signals_ready {
            if let Some(sfd) = self.sigfd.as_mut() {
                for (signo, action) in signals::drain(sfd) {
                    match action {
                        Action::Poweroff => {
                            return Some((Mode::Poweroff, format!("signal {signo}")))
                        }
                        Action::Reboot => return Some((Mode::Reboot, format!("signal {signo}"))),
                        Action::Reap | Action::Ignore => {}
                    }
                }
            }
        }
        // Reap every turn: SIGCHLDs coalesce, and this is cheap.
        for r in reaper::reap_all() {
            self.on_reaped(r);
        }
        let facts = self.model_check.drain();
        self.on_model_check(facts);
        let msgs = self.system.drain();
        self.on_system(msgs);
        if let Some((at, cause)) = &self.reboot_at {
            if boottime() >= *at {
                return Some((Mode::Reboot, cause.clone()));
            }
        }
        for i in ctl_ready {
            let mut buf = vec![0u8; MAX_MSG];
            while let Some(fd) = self.consoles.get(i).and_then(|c| c.ctl.as_ref()) {
                match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(0) => {
                        // The console closed its end (it is exiting).
                        if let Some(c) = self.consoles.get_mut(i) {
                            c.ctl = None;
                        }
                        break;
                    }
                    Ok(n) => match Request::decode(buf.get(..n).unwrap_or(&[])) {
                        Ok(req) => {
                            if let Some(s) = self.on_request(i, req) {
                                return Some(s);
                            }
                        }
                        Err(e) => log::warn!("console {i}: {e}"),
                    },
                    Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => break,
                    Err(e) => {
                        log::warn!("console {i}: control socket: {e}");
                        if let Some(c) = self.consoles.get_mut(i) {
                            c.ctl = None;
                        }
                        break;
                    }
                }
            }
        }
        let now = boottime();
        if now.saturating_sub(self.last_tick) >= TICK {
            self.last_tick = now;
            self.tick();
        }
        self.start_due_services();
        None
    }

    /// Stops everything and calls reboot(2); if that fails, halts forever.
    pub fn shutdown(&mut self, mode: Mode, cause: &str) -> ! {
        let now = boottime();
        log::warn!("shutting down ({cause}): {}", mode.message());
        self.events.push(
            now,
            EventKind::Shutdown {
                action: format!("{mode:?}"),
                cause: cause.into(),
            },
        );
        let action = match mode {
            Mode::Poweroff => "poweroff",
            Mode::Reboot => "reboot",
        };
        let detail = crate::screen::line(&format!("{action}: {cause}"))
            .chars()
            .take(airlock_formats::audit::entry::MAX_DETAIL_LEN)
            .collect::<String>();
        self.record(Draft::system(
            AuditAction::Shutdown,
            Outcome::Ok,
            Some(detail),
        ));
        if self.audit.key_held() {
            if let Err(e) = self.audit.checkpoint() {
                log::error!("audit: shutdown checkpoint: {e}");
            }
        }
        let ttys: Vec<String> = self.consoles.iter().map(|c| c.tty.clone()).collect();
        shutdown::tell_consoles(&ttys, mode.message());
        let pids: Vec<i32> = self
            .consoles
            .iter()
            .filter_map(|c| c.service.pid())
            .collect();
        for c in &mut self.consoles {
            c.service.state = State::Stopped;
            c.ctl = None;
        }
        for p in shutdown::stop_everything(&pids, &mut self.mounts) {
            log::warn!("shutdown: {p}");
        }
        let e = shutdown::finish(mode);
        log::error!("reboot(2) failed: {e}; halting");
        shutdown::tell_consoles(
            &ttys,
            &format!("airlock: reboot(2) failed ({e}); it is safe to switch the PC off"),
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
