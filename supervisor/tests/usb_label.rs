//! The label reader of the real binary (`airlock-init usb-label DISK`) on a
//! real block device: a FAT32 stick image made by scripts/make-stick,
//! attached as a loop device. Needs root. (Partitioned sticks are read via
//! their first partition, see `label_device`; this host kernel does not
//! scan partition tables of loop devices, so the image is a superfloppy.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

mod common;
use common::attach;

fn label_of(disk: &str) -> (Option<i32>, String, String) {
    common::run_mode("usb-label", disk)
}

#[test]
fn reads_the_fat_label_of_a_stick() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("stick.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-stick");
    let st = Command::new(script)
        .args(["--size", "40", "--label", "DEMO", "--superfloppy"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let lo = attach(&img);
    let disk = lo.0.trim_start_matches("/dev/").to_string();
    assert_eq!(
        label_of(&disk),
        (Some(0), "DEMO\n".to_string(), String::new())
    );
}

#[test]
fn bad_disk_names_are_refused_and_unreadable_disks_reported() {
    let (code, out, err) = label_of("../sda");
    assert_eq!((code, out.as_str()), (Some(2), ""));
    assert_eq!(err, "airlock-init: usage: airlock-init usb-label DISK\n");
    let (code, out, err) = label_of("nosuchdisk0");
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(
        err.starts_with("airlock-init: read /dev/nosuchdisk0: No such file or directory"),
        "{err}"
    );
}
