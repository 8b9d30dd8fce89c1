//! The Airlock PID-1 supervisor (`/init`).
//!
//! One module per job; see docs/supervisor.md for the boot sequence, the
//! lockdown steps and the console grammar.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod auditd;
pub mod clock;
pub mod cmdline;
pub mod commands;
pub mod console;
pub mod control;
pub mod cpu;
pub mod dma;
pub mod docsplit;
pub mod document;
pub mod events;
pub mod gpt;
pub mod grow;
pub mod identity;
pub mod infer;
pub mod job;
pub mod jobargs;
pub mod jobcmd;
pub mod klog;
pub mod linepipe;
pub mod model_check;
pub mod models;
pub mod mounts;
pub mod netlock;
pub mod prompt;
pub mod reaper;
pub mod roles;
pub mod rootfs;
pub mod rtc;
pub mod rtnl;
pub mod screen;
pub mod selftest;
pub mod services;
pub mod session;
pub mod shutdown;
pub mod signals;
pub mod state;
pub mod status;
pub mod stickcmd;
pub mod stickhold;
pub mod sticklist;
pub mod stickput;
pub mod stickread;
pub mod stickwrite;
pub mod supervisor;
pub mod sysctl;
pub mod system;
pub mod usb;
pub mod usb_label;

/// Version printed on the banner and in `status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entry point shared by every mode of the binary. PID 1 never returns.
pub fn entry() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The sandboxed document opener is PID 1 of its own PID namespace: it
    // is told apart by its argv[0], which the kernel sets to "/init" for the
    // real PID 1 whatever the kernel command line says.
    if std::env::args_os()
        .next()
        .is_some_and(|a| a == document::child::ARGV0)
    {
        return document::child::main_from_args(&args);
    }
    if nix::unistd::getpid().as_raw() == 1 {
        supervisor::run_pid1();
    }
    match args.first().map(String::as_str) {
        Some("console") => console::main_from_args(&args[1..]),
        Some("usb-label") => usb_label::main_from_args(&args[1..]),
        Some("gpt-parts") => gpt::main_from_args(&args[1..]),
        Some("model-check") => model_check::child::main_from_args(&args[1..]),
        Some("grow-state") => grow::main_from_args(&args[1..]),
        Some("doc-open") => document::child::main_from_args(&args[1..]),
        Some("system-boot") => system::boot::main_from_args(&args[1..]),
        Some("--version") => {
            println!("airlock-init {VERSION}");
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "airlock-init: this is the appliance's PID 1 (/init); the only other mode is \
                 'airlock-init console TTY --ctl-fd N', 'airlock-init usb-label DISK', \
                 'airlock-init gpt-parts DISK', 'airlock-init model-check STORE', \
                 'airlock-init grow-state DISK PARTN GUID MOUNTPOINT', 'airlock-init system-boot' \
                 and 'airlock-init doc-open', \
                 started by the supervisor itself"
            );
            std::process::ExitCode::from(2)
        }
    }
}
