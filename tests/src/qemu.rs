//! Launching QEMU (TCG) and owning its process.
//!
//! [`VmConfig`] turns a boot mode and a few switches into QEMU's argument
//! list (a pure function, unit-tested); [`Vm`] runs it with the serial
//! console on stdin/stdout, QMP on a unix socket, and kills QEMU when
//! dropped, dumping the console transcript if the test is failing.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::artifacts::{self, ArtifactError, Artifacts};
use crate::console::{self, Console, ConsoleError, Match, Pattern, PROMPT};
use crate::keyboard::{self, KeyboardError};
use crate::qmp::{Qmp, QmpError};
use crate::screenshot::{self, Frame, ScreenshotError};

/// OVMF firmware of Debian's `ovmf` package (4 MiB flash layout).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Template of the writable UEFI variable store; each VM gets its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF's Secure Boot build (same package): it needs SMM (`smm=on`) and a
/// flash that only SMM code may write (`cfi.pflash01` `secure=on`), so the
/// guest cannot change the enrolled keys behind the firmware's back.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";

/// The line the supervisor prints when its console accepts commands.
pub const CONSOLE_READY: &str = "airlock: console ready";

/// QEMU id of the display (std VGA) that [`VmConfig::with_usb_keyboard`]
/// adds: OVMF's GOP drives it, the kernel's efifb + fbcon show tty1 on it,
/// and `input-send-event` names it to reach the keyboard bound to it.
pub const DISPLAY_ID: &str = "video0";
/// QEMU id of the emulated USB keyboard.
pub const KEYBOARD_ID: &str = "kbd0";
/// Pause after each key event (down or up): the guest polls the USB HID
/// keyboard every few ms and QEMU queues at most 16 key codes, so typed
/// text is never dropped even under a slow TCG guest; 40 ms a key event
/// types ~12 characters a second.
const KEY_EVENT_PAUSE: Duration = Duration::from_millis(40);
/// Pixels of one character cell of the console font (fbcon's 8x16 font
/// here; up to 16x32 allowed): a blinking cursor changes at most this many.
const CURSOR_CELL_PIXELS: usize = 16 * 32;

/// Failures of starting, driving or stopping a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{what} not found at {path}: install it with scripts/setup-host")]
    HostFile { what: &'static str, path: PathBuf },
    #[error("preparing the work directory {path} failed: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying the OVMF variable store to {path} failed: {source}")]
    CopyVars {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "starting {qemu} failed (is qemu-system-x86 installed? run scripts/setup-host): {source}"
    )]
    Spawn {
        qemu: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited during start-up with {status}; its stderr:\n{stderr}")]
    EarlyExit { status: ExitStatus, stderr: String },
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("waiting for QEMU to exit failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error("typing needs the USB keyboard: configure the VM with VmConfig::with_usb_keyboard()")]
    NoKeyboard,
    #[error(transparent)]
    Keyboard(#[from] KeyboardError),
    #[error("{path} is a build output: boot a copy (disk::DiskCopy) with with_writable_disk, never the file in out/")]
    WritableArtifact { path: PathBuf },
    #[error("reading the screendump {path} failed: {source}")]
    ReadScreendump {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the screendump {path} is not usable: {source}")]
    Screendump {
        path: PathBuf,
        #[source]
        source: ScreenshotError,
    },
    #[error("the screen did not settle within {secs:.0} s (still changing, or blank)")]
    ScreenNotSettled { secs: f64 },
    #[error(
        "QEMU still running {secs:.0} s after it should have exited; last console output:\n{tail}"
    )]
    NoExit { secs: f64, tail: String },
}

/// How the guest is booted.
#[derive(Debug, Clone)]
pub enum Boot {
    /// Kernel + initramfs handed to QEMU directly (fast: no firmware);
    /// the disk image, if any, is attached as on a real machine.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
        disk: Option<PathBuf>,
    },
    /// The whole GPT disk image through OVMF and systemd-boot. The disk is
    /// opened with `snapshot=on`: the test's writes (boot counting) never
    /// reach the file in out/.
    Disk { image: PathBuf },
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Test name: names the work directory and the console log.
    pub name: String,
    pub boot: Boot,
    /// `-cpu` model: `max` (x86-64-v3 capable) unless a test wants an old CPU.
    pub cpu: String,
    pub memory_mib: u32,
    pub smp: u32,
    /// Attach an e1000 and a virtio-net NIC (user-mode, restricted).
    pub nics: bool,
    /// Emulate an Intel IOMMU with interrupt remapping (`-device
    /// intel-iommu,intremap=on`, `kernel-irqchip=split`), as a current PC
    /// with VT-d on has. On by default: the appliance refuses "ready"
    /// without DMA protection (`airlock.dma=require`).
    pub iommu: bool,
    /// More raw disk images, attached (snapshot=on) as further virtio disks
    /// after the boot disk (`vdb`, `vdc`, ...).
    pub extra_disks: Vec<PathBuf>,
    /// Open the boot disk without `snapshot=on`: the guest's writes reach
    /// the file and persist for the next VM booting it. Only for a copy
    /// ([`crate::disk::DiskCopy`]); [`Vm::start`] refuses a file in out/.
    pub writable_disk: bool,
    /// A USB keyboard on the xHCI controller, bound to a named std VGA
    /// display ([`DISPLAY_ID`]), for typing on tty1 ([`Vm::type_text`]).
    pub usb_keyboard: bool,
    /// UEFI Secure Boot (disk boots): OVMF's Secure Boot build
    /// ([`OVMF_CODE_SECBOOT`]) with a copy of this variable store, which
    /// holds the enrolled PK, KEK and db (e.g. made by `scripts/lib/secureboot.sh
    /// ovmf-vars`), instead of [`OVMF_VARS`].
    pub secure_boot_vars: Option<PathBuf>,
}

/// Kernel parameters added to direct boots under TCG (never to the
/// image's own command line): on a loaded host the emulated CPU can be too
/// slow for the kernel's check that the timer interrupt arrives through
/// the interrupt-remapped IO-APIC, and the kernel then panics ("timer
/// doesn't work through Interrupt-remapped IO-APIC"); the check guards
/// against broken chipsets, which QEMU's is not.
pub const TCG_APPEND: &str = "no_timer_check";

impl VmConfig {
    /// Direct boot of out/bzImage + out/initramfs with out/cmdline, plus
    /// [`TCG_APPEND`].
    pub fn direct(name: &str, artifacts: &Artifacts) -> Result<Self, VmError> {
        Ok(Self::new(
            name,
            Boot::Direct {
                kernel: artifacts.kernel()?,
                initrd: artifacts.initramfs()?,
                append: format!("{} {TCG_APPEND}", artifacts.cmdline()?),
                disk: Some(artifacts.disk_image()?),
            },
        ))
    }

    /// Full boot of out/airlock.img through OVMF.
    pub fn disk(name: &str, artifacts: &Artifacts) -> Result<Self, VmError> {
        Ok(Self::new(
            name,
            Boot::Disk {
                image: artifacts.disk_image()?,
            },
        ))
    }

    /// A config with the suite's defaults.
    pub fn new(name: &str, boot: Boot) -> Self {
        VmConfig {
            name: name.to_owned(),
            boot,
            cpu: "max".into(),
            memory_mib: 2048,
            smp: 2,
            nics: false,
            iommu: true,
            extra_disks: Vec::new(),
            writable_disk: false,
            usb_keyboard: false,
            secure_boot_vars: None,
        }
    }

    /// Boots with Secure Boot, the firmware's keys from the variable store
    /// template `vars` (see [`VmConfig::secure_boot_vars`]); no effect on a
    /// direct boot, which has no firmware that could check a signature.
    pub fn with_secure_boot(mut self, vars: &Path) -> Self {
        self.secure_boot_vars = Some(vars.to_owned());
        self
    }

    /// Secure Boot is on: a disk boot with a variable store template.
    fn secure_boot(&self) -> bool {
        self.secure_boot_vars.is_some() && matches!(self.boot, Boot::Disk { .. })
    }

    /// The firmware image and the variable store template a disk boot uses.
    pub fn firmware(&self) -> (&Path, &Path) {
        match &self.secure_boot_vars {
            Some(vars) if self.secure_boot() => (Path::new(OVMF_CODE_SECBOOT), vars),
            _ => (Path::new(OVMF_CODE), Path::new(OVMF_VARS)),
        }
    }

    /// Boots `image` (a copy, e.g. [`crate::disk::DiskCopy::path`]) instead
    /// of the configured boot disk, opened writable: what the guest writes
    /// (state partition, boot counting) persists across VMs.
    pub fn with_writable_disk(mut self, image: &Path) -> Self {
        match &mut self.boot {
            Boot::Direct { disk, .. } => *disk = Some(image.to_owned()),
            Boot::Disk { image: i } => *i = image.to_owned(),
        }
        self.writable_disk = true;
        self
    }

    /// Appends `extra` to a direct boot's kernel command line (e.g. a
    /// policy value the image allows to be tightened); no effect on a disk
    /// boot, whose command line is inside the signed UKI.
    pub fn with_append(mut self, extra: &str) -> Self {
        if let Boot::Direct { append, .. } = &mut self.boot {
            append.push(' ');
            append.push_str(extra);
        }
        self
    }

    /// Adds the USB keyboard (and the display it is bound to).
    pub fn with_usb_keyboard(mut self) -> Self {
        self.usb_keyboard = true;
        self
    }

    /// The boot disk image, if any.
    pub fn boot_disk(&self) -> Option<&Path> {
        match &self.boot {
            Boot::Direct { disk, .. } => disk.as_deref(),
            Boot::Disk { image } => Some(image),
        }
    }

    /// With or without the emulated Intel IOMMU.
    pub fn with_iommu(mut self, iommu: bool) -> Self {
        self.iommu = iommu;
        self
    }

    /// Attaches one more disk image (after the boot disk).
    pub fn with_extra_disk(mut self, image: &Path) -> Self {
        self.extra_disks.push(image.to_owned());
        self
    }

    /// Uses another `-cpu` model.
    pub fn with_cpu(mut self, cpu: &str) -> Self {
        self.cpu = cpu.to_owned();
        self
    }

    /// Attaches (or not) the two NICs.
    pub fn with_nics(mut self, nics: bool) -> Self {
        self.nics = nics;
        self
    }

    /// QEMU's arguments; `qmp` is the QMP socket, `vars` the VM's own copy
    /// of the OVMF variable store (disk boot only).
    pub fn args(&self, qmp: &Path, vars: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        // q35 + virtio-rng + UTC clock, as scripts/run-qemu boots it.
        // Secure Boot: OVMF's Secure Boot build keeps its variables in SMM.
        let smm = if self.secure_boot() { ",smm=on" } else { "" };
        if self.iommu {
            // Interrupt remapping needs the split irqchip (a no-op under TCG,
            // required under KVM); the IOMMU comes before every PCI device.
            let machine = format!("q35,kernel-irqchip=split{smm}");
            push(&["-machine", &machine, "-accel", "tcg", "-cpu", &self.cpu]);
            push(&["-device", "intel-iommu,intremap=on"]);
        } else {
            let machine = format!("q35{smm}");
            push(&["-machine", &machine, "-accel", "tcg", "-cpu", &self.cpu]);
        }
        push(&[
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            &self.smp.to_string(),
        ]);
        push(&[
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
            "-parallel",
            "none",
        ]);
        // ttyS0 is the test's console, on QEMU's stdin/stdout.
        push(&["-serial", "stdio"]);
        let qmp_arg = format!("unix:{},server=on,wait=off", qmp.display());
        push(&["-qmp", &qmp_arg]);
        if self.nics {
            // Both NIC models the kernel config must not drive. restrict=on:
            // even if a guest drove them, user networking reaches nothing.
            push(&["-nic", "user,model=e1000,restrict=on"]);
            push(&["-nic", "user,model=virtio-net-pci,restrict=on"]);
        } else {
            // Also stops OVMF from trying PXE/HTTP boot for minutes.
            push(&["-nic", "none"]);
        }
        push(&["-rtc", "base=utc", "-device", "virtio-rng-pci"]);
        // USB sticks are hot-plugged onto this controller through QMP.
        push(&["-device", "qemu-xhci,id=xhci"]);
        if self.usb_keyboard {
            // The same std VGA q35 adds by default, but named, so the
            // keyboard can be bound to it: `input-send-event` takes a
            // display (not an input device) and delivers to the keyboard
            // bound to that display's console; unbound, the events could go
            // to the PS/2 keyboard instead.
            let vga = format!("VGA,id={DISPLAY_ID}");
            let kbd = format!("usb-kbd,bus=xhci.0,id={KEYBOARD_ID},display={DISPLAY_ID}");
            push(&["-vga", "none", "-device", &vga, "-device", &kbd]);
        }
        let disk = match &self.boot {
            Boot::Direct {
                kernel,
                initrd,
                append,
                disk,
            } => {
                a.push("-kernel".into());
                a.push(kernel.into());
                a.push("-initrd".into());
                a.push(initrd.into());
                a.push("-append".into());
                a.push(append.into());
                disk.as_ref()
            }
            Boot::Disk { image } => {
                if self.secure_boot() {
                    // Only SMM code may write the variable flash.
                    for x in ["-global", "driver=cfi.pflash01,property=secure,value=on"] {
                        a.push(x.into());
                    }
                }
                let mut code = OsString::from("if=pflash,format=raw,unit=0,readonly=on,file=");
                code.push(self.firmware().0);
                let mut vars_arg = OsString::from("if=pflash,format=raw,unit=1,file=");
                vars_arg.push(vars);
                for d in [code, vars_arg] {
                    a.push("-drive".into());
                    a.push(d);
                }
                Some(image)
            }
        };
        // With -kernel QEMU's own linuxboot ROM holds boot index 0.
        let bootindex = if matches!(self.boot, Boot::Disk { .. }) {
            ",bootindex=0"
        } else {
            ""
        };
        if let Some(image) = disk {
            // snapshot=on: the guest's writes (boot counting, state) go to a
            // temporary overlay, so out/airlock.img keeps matching SHA256SUMS.
            // A writable copy drops it.
            let snapshot = if self.writable_disk {
                ""
            } else {
                "snapshot=on,"
            };
            let mut drive = OsString::from(format!("if=none,id=disk0,format=raw,{snapshot}file="));
            drive.push(image);
            a.push("-drive".into());
            a.push(drive);
            a.push("-device".into());
            a.push(format!("virtio-blk-pci,drive=disk0{bootindex}").into());
        }
        for (i, image) in self.extra_disks.iter().enumerate() {
            let id = format!("disk{}", i + 1);
            let mut drive = OsString::from(format!("if=none,id={id},format=raw,snapshot=on,file="));
            drive.push(image);
            a.push("-drive".into());
            a.push(drive);
            a.push("-device".into());
            a.push(format!("virtio-blk-pci,drive={id}").into());
        }
        a
    }
}

/// Scales a timeout by `AIRLOCK_E2E_TIMEOUT_SCALE` (default 1; e.g. 3 on a
/// very busy machine).
pub fn timeout(secs: u64) -> Duration {
    let scale = std::env::var("AIRLOCK_E2E_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs as f64 * scale)
}

/// A hot-plugged USB stick.
#[derive(Debug, Clone)]
pub struct UsbStick {
    /// QEMU device id (for `device_del`).
    pub device: String,
    /// Block node name (for `blockdev-del`).
    pub node: String,
}

/// A running QEMU. Killed on drop.
pub struct Vm {
    name: String,
    child: Child,
    console: Console,
    qmp: Qmp,
    work: PathBuf,
    started: Instant,
    exit: Option<ExitStatus>,
    sticks: u32,
    /// Keep the work directory (a failure was reported).
    keep: bool,
    /// The USB keyboard is attached.
    keyboard: bool,
}

impl Vm {
    /// Starts QEMU for `config` and connects to its QMP socket.
    pub fn start(config: &VmConfig) -> Result<Self, VmError> {
        if config.writable_disk {
            if let Some(disk) = config.boot_disk() {
                refuse_build_output(disk)?;
            }
        }
        let work = std::env::temp_dir().join("airlock-e2e").join(format!(
            "{}-{}",
            config.name,
            std::process::id()
        ));
        let workdir_err = |source| VmError::WorkDir {
            path: work.clone(),
            source,
        };
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(workdir_err)?;
        }
        std::fs::create_dir_all(&work).map_err(workdir_err)?;
        let qmp_path = work.join("qmp.sock");
        let vars = work.join("OVMF_VARS.fd");
        if let Boot::Disk { .. } = config.boot {
            let (code, template) = config.firmware();
            for (what, p) in [("OVMF firmware", code), ("OVMF variable store", template)] {
                if !p.is_file() {
                    return Err(VmError::HostFile {
                        what,
                        path: p.into(),
                    });
                }
            }
            std::fs::copy(template, &vars).map_err(|source| VmError::CopyVars {
                path: vars.clone(),
                source,
            })?;
        }
        let qemu = std::env::var("AIRLOCK_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let stderr = File::create(work.join("qemu.stderr")).map_err(workdir_err)?;
        let mut cmd = Command::new(&qemu);
        cmd.args(config.args(&qmp_path, &vars))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        kill_with_parent(&mut cmd);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| VmError::Spawn {
            qemu: qemu.clone(),
            source,
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VmError::WorkDir {
                path: work,
                source: std::io::Error::other("QEMU's stdio pipes are missing"),
            });
        };
        let log = console::open_log(&work.join("console.log"));
        let console = Console::start(stdout, stdin, log);
        let qmp = match Qmp::connect(&qmp_path, timeout(30)) {
            Ok(q) => q,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().map_err(VmError::Wait)?;
                let stderr = std::fs::read_to_string(work.join("qemu.stderr")).unwrap_or_default();
                return Err(if stderr.is_empty() {
                    e.into()
                } else {
                    VmError::EarlyExit { status, stderr }
                });
            }
        };
        Ok(Vm {
            name: config.name.clone(),
            child,
            console,
            qmp,
            work,
            started,
            exit: None,
            sticks: 0,
            keep: false,
            keyboard: config.usb_keyboard,
        })
    }

    /// Starts QEMU and waits (up to `within`) for the supervisor's console.
    /// On failure the whole console transcript is printed (libtest shows it
    /// with the failing test) and the work directory is kept.
    pub fn boot(config: &VmConfig, within: Duration) -> Result<Self, VmError> {
        let mut vm = Vm::start(config)?;
        match vm.wait_console_ready(within) {
            Ok(()) => Ok(vm),
            Err(e) => {
                vm.dump();
                Err(e)
            }
        }
    }

    /// Prints the console transcript and QEMU's stderr (captured by libtest
    /// and shown for failing tests) and keeps the work directory.
    pub fn dump(&mut self) {
        self.keep = true;
        let stderr = std::fs::read_to_string(self.work.join("qemu.stderr")).unwrap_or_default();
        eprintln!(
            "===== serial console of {} ({:.1} s) =====\n{}\n===== QEMU stderr =====\n{}\n===== end (files kept in {}) =====",
            self.name,
            self.started.elapsed().as_secs_f64(),
            self.console.transcript(),
            stderr,
            self.work.display(),
        );
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial console.
    pub fn console(&mut self) -> &mut Console {
        &mut self.console
    }

    /// The QMP session.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// Waits for `pattern` on the console.
    pub fn wait_for(
        &mut self,
        pattern: impl Into<Pattern>,
        within: Duration,
    ) -> Result<Match, VmError> {
        Ok(self.console.wait_for(pattern, within)?)
    }

    /// Waits for the supervisor's "console ready" line and the first prompt.
    pub fn wait_console_ready(&mut self, within: Duration) -> Result<(), VmError> {
        self.console.wait_for(CONSOLE_READY, within)?;
        self.console.wait_for(PROMPT, timeout(30))?;
        Ok(())
    }

    /// Types `cmd` and returns its output up to the next prompt.
    pub fn command(&mut self, cmd: &str) -> Result<String, VmError> {
        Ok(self.console.command(cmd, timeout(60))?)
    }

    /// Hot-plugs `image` (a raw stick image) as a USB mass-storage device.
    pub fn plug_stick(&mut self, image: &Path) -> Result<UsbStick, VmError> {
        self.plug(image, None)
    }

    /// Hot-plugs `image` like [`Vm::plug_stick`], its reads throttled to
    /// `bytes_per_sec` (a QEMU throttle group): a copy from it takes long
    /// enough for a test to pull the stick in the middle of it.
    pub fn plug_slow_stick(
        &mut self,
        image: &Path,
        bytes_per_sec: u64,
    ) -> Result<UsbStick, VmError> {
        self.plug(image, Some(bytes_per_sec))
    }

    fn plug(&mut self, image: &Path, throttle: Option<u64>) -> Result<UsbStick, VmError> {
        self.sticks += 1;
        let stick = UsbStick {
            device: format!("stick{}", self.sticks),
            node: format!("stick{}-blk", self.sticks),
        };
        let file = json!({ "driver": "file", "filename": image.display().to_string() });
        let node = match throttle {
            None => json!({ "driver": "raw", "node-name": stick.node, "file": file }),
            Some(bps) => {
                let group = format!("stick{}-tg", self.sticks);
                self.qmp.execute(
                    "object-add",
                    Some(json!({
                        "qom-type": "throttle-group",
                        "id": group,
                        "limits": { "bps-read": bps },
                    })),
                )?;
                json!({
                    "driver": "throttle",
                    "node-name": stick.node,
                    "throttle-group": group,
                    "file": { "driver": "raw", "file": file },
                })
            }
        };
        self.qmp.execute("blockdev-add", Some(node))?;
        self.qmp.execute(
            "device_add",
            Some(json!({
                "driver": "usb-storage",
                "bus": "xhci.0",
                "drive": stick.node,
                "id": stick.device,
                "removable": true,
            })),
        )?;
        Ok(stick)
    }

    /// Pulls a stick: `device_del`, wait until QEMU has removed the device,
    /// then `blockdev-del` its node.
    pub fn unplug_stick(&mut self, stick: &UsbStick) -> Result<(), VmError> {
        self.qmp
            .execute("device_del", Some(json!({ "id": stick.device })))?;
        let id = stick.device.clone();
        self.qmp.wait_event(
            "DEVICE_DELETED",
            |d| d["device"] == id.as_str(),
            timeout(60),
        )?;
        self.qmp
            .execute("blockdev-del", Some(json!({ "node-name": stick.node })))?;
        Ok(())
    }

    /// Types `text` on the USB keyboard (tty1, the screen's console): each
    /// character as key down + key up (with Shift around it for upper case
    /// and shifted punctuation), `'\n'` as Enter, 40 ms after each event.
    /// A character without a key is refused before anything is typed.
    pub fn type_text(&mut self, text: &str) -> Result<(), VmError> {
        if !self.keyboard {
            return Err(VmError::NoKeyboard);
        }
        for s in keyboard::strokes(text)? {
            let mut events = Vec::with_capacity(4);
            if s.shift {
                events.push((keyboard::SHIFT, true));
            }
            events.extend([(s.qcode, true), (s.qcode, false)]);
            if s.shift {
                events.push((keyboard::SHIFT, false));
            }
            for (qcode, down) in events {
                self.qmp.execute(
                    "input-send-event",
                    Some(json!({
                        "device": DISPLAY_ID,
                        "events": [{
                            "type": "key",
                            "data": { "down": down, "key": { "type": "qcode", "data": qcode } },
                        }],
                    })),
                )?;
                std::thread::sleep(KEY_EVENT_PAUSE);
            }
        }
        Ok(())
    }

    /// Saves the screen (tty1 on the framebuffer) as a PNG at `path`
    /// (QMP `screendump`, `format: png`), checks the file is a PNG and
    /// returns its width and height.
    pub fn screendump(&mut self, path: &Path) -> Result<(u32, u32), VmError> {
        self.qmp.execute(
            "screendump",
            Some(json!({ "filename": path.display().to_string(), "format": "png" })),
        )?;
        let bytes = std::fs::read(path).map_err(|source| VmError::ReadScreendump {
            path: path.to_owned(),
            source,
        })?;
        screenshot::png_size(&bytes).map_err(|source| VmError::Screendump {
            path: path.to_owned(),
            source,
        })
    }

    /// The screen's pixels now (a PPM screendump to `screen.ppm` in the
    /// work directory, decoded), for checks such as "text appeared".
    pub fn screen(&mut self) -> Result<Frame, VmError> {
        let path = self.work.join("screen.ppm");
        self.qmp.execute(
            "screendump",
            Some(json!({ "filename": path.display().to_string() })),
        )?;
        let bytes = std::fs::read(&path).map_err(|source| VmError::ReadScreendump {
            path: path.clone(),
            source,
        })?;
        Frame::from_ppm(&bytes).map_err(|source| VmError::Screendump { path, source })
    }

    /// Waits (up to `within`) until the screen shows something and has not
    /// changed for `still` (apart from the blinking cursor: changes of at
    /// most one character cell are ignored); returns the latest frame.
    pub fn wait_screen_settled(
        &mut self,
        still: Duration,
        within: Duration,
    ) -> Result<Frame, VmError> {
        let deadline = Instant::now() + within;
        let mut reference = self.screen()?;
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let now = self.screen()?;
            if now.changed_from(&reference) > CURSOR_CELL_PIXELS {
                reference = now;
                since = Instant::now();
            } else if now.ink() > 0 && since.elapsed() >= still {
                return Ok(now);
            }
            if Instant::now() >= deadline {
                return Err(VmError::ScreenNotSettled {
                    secs: within.as_secs_f64(),
                });
            }
        }
    }

    /// Waits until QEMU exits by itself; returns its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, VmError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().map_err(VmError::Wait)? {
                self.exit = Some(status);
                self.console.join_reader();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(VmError::NoExit {
                    secs: within.as_secs_f64(),
                    tail: console::tail(&self.console.transcript()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The work directory (console.log, qemu.stderr, QMP socket, copies).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// A file path inside the work directory (e.g. for stick images).
    pub fn work_file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.console.join_reader();
        let show = std::env::var_os("AIRLOCK_E2E_SHOW").is_some_and(|v| v == "1");
        if (std::thread::panicking() || show) && !self.keep {
            self.dump();
        } else if !self.keep {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

/// A writable boot disk must not be a build output: the guest's writes
/// would make out/airlock.img differ from SHA256SUMS.
fn refuse_build_output(disk: &Path) -> Result<(), VmError> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let out = canon(&artifacts::out_dir());
    if canon(disk).starts_with(&out) {
        return Err(VmError::WritableArtifact {
            path: disk.to_owned(),
        });
    }
    Ok(())
}

/// QEMU gets SIGKILL if the test process dies without running destructors
/// (e.g. killed by a CI timeout): no orphaned QEMU keeps a core busy.
fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(PR_SET_PDEATHSIG), which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn joined(c: &VmConfig) -> String {
        c.args(Path::new("/w/qmp.sock"), Path::new("/w/VARS.fd"))
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn direct() -> VmConfig {
        VmConfig::new(
            "t",
            Boot::Direct {
                kernel: "/o/bzImage".into(),
                initrd: "/o/initramfs.cpio".into(),
                append: "console=ttyS0 init_on_free=1".into(),
                disk: None,
            },
        )
    }

    #[test]
    fn direct_boot_args() {
        let a = joined(&direct());
        assert!(
            a.starts_with(
                "-machine q35,kernel-irqchip=split -accel tcg -cpu max \
                 -device intel-iommu,intremap=on -m 2048 -smp 2 -display none -no-reboot"
            ),
            "{a}"
        );
        assert!(a.contains("-serial stdio"), "{a}");
        assert!(
            a.contains("-qmp unix:/w/qmp.sock,server=on,wait=off"),
            "{a}"
        );
        assert!(a.contains("-nic none"), "{a}");
        assert!(a.contains("-device qemu-xhci,id=xhci"), "{a}");
        assert!(
            a.contains("-kernel /o/bzImage -initrd /o/initramfs.cpio"),
            "{a}"
        );
        // The command line stays one argument.
        let args = direct().args(Path::new("q"), Path::new("v"));
        assert!(args.iter().any(|s| s == "console=ttyS0 init_on_free=1"));
        assert!(!a.contains("pflash"), "{a}");
        assert!(!a.contains("disk0"), "{a}");
        let mut with_disk = direct();
        if let Boot::Direct { disk, .. } = &mut with_disk.boot {
            *disk = Some("/o/airlock.img".into());
        }
        let a = joined(&with_disk);
        assert!(a.ends_with("-device virtio-blk-pci,drive=disk0"), "{a}");
        assert!(!a.contains("bootindex"), "{a}");
    }

    #[test]
    fn iommu_and_extra_disks() {
        let a = joined(&direct().with_iommu(false));
        assert!(
            a.starts_with("-machine q35 -accel tcg -cpu max -m 2048"),
            "{a}"
        );
        assert!(!a.contains("intel-iommu"), "{a}");
        let a = joined(&direct().with_extra_disk(Path::new("/w/other.img")));
        assert!(
            a.ends_with(
                "-drive if=none,id=disk1,format=raw,snapshot=on,file=/w/other.img \
                 -device virtio-blk-pci,drive=disk1"
            ),
            "{a}"
        );
    }

    #[test]
    fn nics_and_cpu_switches() {
        let a = joined(&direct().with_nics(true).with_cpu("qemu64"));
        assert!(a.contains("-cpu qemu64"), "{a}");
        assert!(a.contains("-nic user,model=e1000,restrict=on"), "{a}");
        assert!(
            a.contains("-nic user,model=virtio-net-pci,restrict=on"),
            "{a}"
        );
        assert!(!a.contains("-nic none"), "{a}");
    }

    #[test]
    fn disk_boot_uses_ovmf_and_a_snapshot() {
        let a = joined(&VmConfig::new(
            "t",
            Boot::Disk {
                image: "/o/airlock.img".into(),
            },
        ));
        assert!(
            a.contains(&format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            )),
            "{a}"
        );
        assert!(
            a.contains("if=pflash,format=raw,unit=1,file=/w/VARS.fd"),
            "{a}"
        );
        assert!(
            a.contains("-drive if=none,id=disk0,format=raw,snapshot=on,file=/o/airlock.img -device virtio-blk-pci,drive=disk0,bootindex=0"),
            "{a}"
        );
        assert!(!a.contains("-kernel"), "{a}");
        assert!(!a.contains("usb-kbd"), "{a}");
        assert!(!a.contains("-vga"), "{a}");
    }

    #[test]
    fn secure_boot_uses_the_secboot_firmware_with_smm() {
        let disk = VmConfig::new(
            "t",
            Boot::Disk {
                image: "/o/airlock.img".into(),
            },
        );
        let sb = disk.clone().with_secure_boot(Path::new("/w/sb-vars.fd"));
        assert_eq!(
            sb.firmware(),
            (Path::new(OVMF_CODE_SECBOOT), Path::new("/w/sb-vars.fd"))
        );
        let a = joined(&sb);
        assert!(
            a.starts_with("-machine q35,kernel-irqchip=split,smm=on -accel tcg"),
            "{a}"
        );
        assert!(
            a.contains(&format!(
                "-global driver=cfi.pflash01,property=secure,value=on \
                 -drive if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECBOOT} \
                 -drive if=pflash,format=raw,unit=1,file=/w/VARS.fd"
            )),
            "{a}"
        );
        let a = joined(&sb.with_iommu(false));
        assert!(a.starts_with("-machine q35,smm=on -accel tcg"), "{a}");
        // Without it: the plain firmware, no SMM, no secure flash.
        assert_eq!(
            disk.firmware(),
            (Path::new(OVMF_CODE), Path::new(OVMF_VARS))
        );
        let a = joined(&disk);
        assert!(!a.contains("smm=on"), "{a}");
        assert!(!a.contains("cfi.pflash01"), "{a}");
        // A direct boot has no firmware to check signatures: unchanged.
        let a = joined(&direct().with_secure_boot(Path::new("/w/sb-vars.fd")));
        assert_eq!(a, joined(&direct()));
    }

    #[test]
    fn writable_disk_drops_the_snapshot_of_the_boot_disk_only() {
        let c = VmConfig::new(
            "t",
            Boot::Disk {
                image: "/o/airlock.img".into(),
            },
        )
        .with_writable_disk(Path::new("/w/copy.img"))
        .with_extra_disk(Path::new("/w/other.img"));
        assert_eq!(c.boot_disk(), Some(Path::new("/w/copy.img")));
        let a = joined(&c);
        assert!(
            a.contains("-drive if=none,id=disk0,format=raw,file=/w/copy.img -device virtio-blk-pci,drive=disk0,bootindex=0"),
            "{a}"
        );
        assert!(
            a.contains("-drive if=none,id=disk1,format=raw,snapshot=on,file=/w/other.img"),
            "{a}"
        );
        assert!(!a.contains("airlock.img"), "{a}");
        let a = joined(&direct().with_writable_disk(Path::new("/w/copy.img")));
        assert!(
            a.ends_with("-drive if=none,id=disk0,format=raw,file=/w/copy.img -device virtio-blk-pci,drive=disk0"),
            "{a}"
        );
    }

    #[test]
    fn writable_build_output_is_refused() {
        let image = artifacts::out_dir().join("airlock.img");
        let err = refuse_build_output(&image).unwrap_err();
        assert!(matches!(err, VmError::WritableArtifact { .. }), "{err}");
        assert!(refuse_build_output(Path::new("/tmp/airlock-e2e/disks/x.img")).is_ok());
    }

    #[test]
    fn usb_keyboard_is_bound_to_a_named_display() {
        let a = joined(&direct().with_usb_keyboard());
        assert!(
            a.contains(
                "-device qemu-xhci,id=xhci -vga none -device VGA,id=video0 \
                 -device usb-kbd,bus=xhci.0,id=kbd0,display=video0"
            ),
            "{a}"
        );
    }
}
