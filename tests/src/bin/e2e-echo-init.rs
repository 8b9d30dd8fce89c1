//! A tiny PID 1 for the harness self-test (not part of the image).
//!
//! It speaks just enough of the appliance console's shape (a ready line,
//! the `airlock> ` prompt, one reply per line) to exercise the harness's
//! serial, QMP and USB plumbing on the appliance kernel without the
//! supervisor: `blocks` lists /sys/block, `net` lists /sys/class/net,
//! `poweroff` powers the VM off, anything else is echoed back.

use std::io::{BufRead, Write};

fn list(dir: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.join(" ")
}

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = rustix::mount::mount(
        src,
        target,
        fstype,
        rustix::mount::MountFlags::empty(),
        None,
    ) {
        println!("echo-init: mount {target} failed: {e}");
    }
}

fn main() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "echo-init: console ready");
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        let _ = write!(out, "airlock> ");
        let _ = out.flush();
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
            Ok(_) => {}
        }
        let reply = match line.trim() {
            "" => continue,
            "blocks" => format!("blocks: {}", list("/sys/block")),
            "net" => format!("net: {}", list("/sys/class/net")),
            "poweroff" => {
                rustix::fs::sync();
                let r = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
                format!("poweroff failed: {r:?}")
            }
            other => format!("echo: {other}"),
        };
        let _ = writeln!(out, "{reply}");
    }
}
