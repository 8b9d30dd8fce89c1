//! A console's held read-only mount of a stick, on a real filesystem
//! (scripts/make-stick, a loop device; needs root; ext4, which every host
//! kernel here has, where vfat may be missing; the read-only/read-write
//! rule is the kernel's for every block filesystem): `usb`'s
//! listing reads it, a second use shares the mount, a read-write mount
//! beside it is refused by the kernel (EBUSY) until `unmount_ours` (what
//! `eject` and every write do) took it off, the holder then mounts again
//! by itself, and a busy mark is seen by `eject`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_supervisor::stickhold::{self, Busy, Holder};
use airlock_supervisor::sticklist;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;
use std::process::Command;

mod common;
use common::attach;

fn ours(disk: &str) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    stickhold::mounts_of(&info, disk).len()
}

#[test]
fn held_mount_is_shared_released_for_writes_and_remounted() {
    let t = tempfile::tempdir().unwrap();
    let content = t.path().join("content");
    std::fs::create_dir_all(content.join("monday")).unwrap();
    std::fs::write(content.join("report.txt.gpg"), vec![7u8; 3000]).unwrap();
    std::fs::write(content.join("monday/1.gpg"), b"x").unwrap();
    let img = t.path().join("stick.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-stick");
    let st = Command::new(script)
        .args([
            "--size",
            "40",
            "--label",
            "HOLD",
            "--fs",
            "ext4",
            "--superfloppy",
        ])
        .arg(&img)
        .arg(content.join("report.txt.gpg"))
        .arg(content.join("monday"))
        .status()
        .unwrap();
    assert!(st.success());
    let lo = attach(&img);
    let disk = lo.0.trim_start_matches("/dev/").to_string();

    let tty = format!("test{}", std::process::id());
    let mut h = Holder::new(&tty);
    let root = h.root(&disk, &disk).unwrap();
    let text = sticklist::render(&sticklist::list(&root, &disk).unwrap());
    assert!(text.contains("document  report.txt.gpg  2 KiB"), "{text}");
    assert!(
        text.contains("folder    monday/  1 document, 0 other entries"),
        "{text}"
    );
    // A second use shares the mount.
    assert_eq!(h.root(&disk, &disk).unwrap(), root);
    assert_eq!(ours(&disk), 1);

    // The kernel refuses a read-write mount beside the read-only one.
    let rw = t.path().join("rw");
    std::fs::create_dir(&rw).unwrap();
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let src = format!("/dev/{disk}");
    let e = mount(Some(src.as_str()), &rw, Some("ext4"), flags, None::<&str>).unwrap_err();
    assert_eq!(e, nix::Error::EBUSY);

    // A writer marks the stick busy and takes the read-only mounts off.
    let busy = Busy::claim(&disk, "test export").unwrap();
    assert_eq!(stickhold::busy(&disk).as_deref(), Some("test export"));
    assert_eq!(stickhold::unmount_ours(&disk).unwrap().len(), 1);
    assert_eq!(ours(&disk), 0);
    mount(Some(src.as_str()), &rw, Some("ext4"), flags, None::<&str>).unwrap();
    airlock_supervisor::stickwrite::write_into(
        &rw,
        &disk,
        "airlock-test",
        &[("a.txt".into(), b"a".to_vec())],
    )
    .unwrap();
    umount2(&rw, MntFlags::empty()).unwrap();
    drop(busy);
    assert_eq!(stickhold::busy(&disk), None);

    // The holder sees its mount is gone and mounts again.
    let root2 = h.root(&disk, &disk).unwrap();
    assert_eq!(root2, root);
    assert_eq!(ours(&disk), 1);
    let text = sticklist::render(&sticklist::list(&root2, &disk).unwrap());
    assert!(text.contains("folder    airlock-test/"), "{text}");

    // Eject's unmount; dropping the holder leaves nothing mounted.
    assert_eq!(stickhold::unmount_ours(&disk).unwrap().len(), 1);
    h.release(&disk);
    drop(h);
    assert_eq!(ours(&disk), 0);
    // Leave the host's /run as it was (empty directories only).
    let _ = std::fs::remove_dir(Path::new(stickhold::HOLD_BASE).join(&tty));
    let _ = std::fs::remove_dir(stickhold::HOLD_BASE);
    let _ = std::fs::remove_dir(stickhold::BUSY_DIR);
    let _ = std::fs::remove_dir("/run/airlock");
}
