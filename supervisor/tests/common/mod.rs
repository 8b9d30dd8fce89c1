//! Scaffolding shared by the tests that run a mode of the real binary on a
//! loop device (`usb-label`, `gpt-parts`). Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_airlock-init");

/// `sgdisk` arguments for partition 1 as the image makes it: the ESP at
/// 1 MiB, 8 MiB here, with the image's partition GUID and name.
pub const SGDISK_ESP: &[&str] = &[
    "--clear",
    "-n",
    "1:2048:+8M",
    "-t",
    "1:EF00",
    "-u",
    "1:f6df8968-40d2-48cd-b61c-e838db0717f0",
    "-c",
    "1:airlock-esp",
];

/// A loop device, detached on drop.
pub struct Loop(pub String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Attaches `img` to a free loop device.
pub fn attach(img: &Path) -> Loop {
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(img)
        .output()
        .expect("losetup (needs root)");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
}

/// Runs `airlock-init MODE DISK` with an empty environment: (exit code,
/// stdout, stderr).
pub fn run_mode(mode: &str, disk: &str) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args([mode, disk])
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
