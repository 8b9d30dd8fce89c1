//! The GPT reader of the real binary (`airlock-init gpt-parts DISK`) on a
//! real block device: a disk image laid out like build-image's (sgdisk,
//! the image's fixed GUIDs) attached as a loop device, then the same disk
//! with its primary header damaged. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

mod common;
use common::attach;

fn gpt_parts(disk: &str) -> (Option<i32>, String, String) {
    common::run_mode("gpt-parts", disk)
}

#[test]
fn reads_the_partition_guids_of_a_disk() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let sgdisk = if Path::new("/usr/sbin/sgdisk").is_file() {
        "/usr/sbin/sgdisk"
    } else {
        "sgdisk"
    };
    let st = Command::new(sgdisk)
        .args(common::SGDISK_ESP)
        .args([
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
            "-u",
            "2:0e16a44c-724c-40b1-bffd-7e46645b4527",
            "-c",
            "2:airlock-state",
        ])
        .arg(&img)
        .output()
        .unwrap();
    assert!(st.status.success());
    let lo = attach(&img);
    let name = lo.0.trim_start_matches("/dev/").to_string();
    let (code, out, err) = gpt_parts(&name);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(
        out,
        "1 f6df8968-40d2-48cd-b61c-e838db0717f0 2048\n\
         2 0e16a44c-724c-40b1-bffd-7e46645b4527 18432\n"
    );
    drop(lo);

    // A damaged primary header: refused with its reason, nothing printed.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(b"X", 512 + 40).unwrap();
    drop(f);
    let lo = attach(&img);
    let name = lo.0.trim_start_matches("/dev/").to_string();
    let (code, out, err) = gpt_parts(&name);
    assert_eq!(code, Some(1));
    assert_eq!(out, "");
    assert_eq!(err.trim(), "airlock-init: GPT header CRC32 mismatch");

    // Bad disk names never reach /dev.
    for bad in ["", "../sda", "loop0 x"] {
        let (code, _, err) = gpt_parts(bad);
        assert_eq!(code, Some(2), "{bad:?}");
        assert_eq!(
            err.trim(),
            "airlock-init: usage: airlock-init gpt-parts DISK"
        );
    }
}
