//! PID 1's switch from the initramfs rootfs to a tmpfs root, end to end in a private mount
//! namespace (run as root): a scratch tmpfs stands in for the rootfs, the process chroots
//! into it and runs `rootfs::switch_root_from_here`, as PID 1 does at boot on the appliance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use airlock_supervisor::rootfs;
use nix::mount::MsFlags;

const SCENARIO: &str = "AIRLOCK_ROOTFS_SCENARIO";

/// Runs `switch_root_in_a_private_namespace` in a child process (it chroots and unshares).
#[test]
fn switch_root_leaves_a_tmpfs_root_with_a_parent_and_an_empty_old_root() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "switch_root_in_a_private_namespace",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(SCENARIO, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("scenario ok"), "{text}");
}

/// The scenario itself (ignored on its own: it changes the process's root).
#[test]
#[ignore]
fn switch_root_in_a_private_namespace() {
    if std::env::var_os(SCENARIO).is_none() {
        return;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare (needs root)");
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    let fake = std::env::temp_dir().join(format!("airlock-rootfs-{}", std::process::id()));
    std::fs::create_dir_all(&fake).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &fake,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    std::fs::write(fake.join("init"), b"\x7fELF init").unwrap();
    std::fs::set_permissions(fake.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(fake.join("bin/airlock-worker"), vec![1u8; 1 << 20]).unwrap();
    std::os::unix::fs::symlink("/init", fake.join("bin/init")).unwrap();
    let old_root = std::fs::File::open(&fake).unwrap();
    nix::unistd::chroot(&fake).unwrap();
    nix::unistd::chdir("/").unwrap();
    let before = airlock_sandbox::rootmount::root().unwrap();

    let moved = rootfs::switch_root_from_here().unwrap();

    assert_eq!(moved.entries, 4, "{moved:?}");
    assert_eq!(moved.bytes, (1 << 20) + 9);
    // The new root is a tmpfs whose parent is the old root's mount.
    let after = airlock_sandbox::rootmount::root().unwrap();
    assert_eq!(after.sb_magic, libc::TMPFS_MAGIC as u64);
    assert_ne!(after.mnt_id, before.mnt_id);
    assert_eq!(after.parent_id, before.mnt_id);
    assert!(!after.is_absolute_root());
    // Everything moved, with modes; the programs are executable there (no noexec).
    assert_eq!(std::fs::read("/init").unwrap(), b"\x7fELF init");
    let mode = std::fs::metadata("/init").unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    assert_eq!(std::fs::read("/bin/airlock-worker").unwrap().len(), 1 << 20);
    assert_eq!(std::fs::read_link("/bin/init").unwrap(), Path::new("/init"));
    let opts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(opts.is_empty(), "no /proc is reachable from the new root");
    // The old root holds only the (empty) mount point of the new root: nothing is doubled.
    nix::unistd::fchdir(&old_root).unwrap();
    let left: Vec<String> = std::fs::read_dir(".")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    nix::unistd::chdir("/").unwrap();
    assert_eq!(left, vec![".airlock-root".to_string()]);
    assert_eq!(std::fs::read_dir("/").unwrap().count(), 2, "init and bin");
    println!("scenario ok");
}
