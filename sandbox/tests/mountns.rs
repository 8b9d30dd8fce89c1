//! The sandbox's mount namespace holds only its own mounts (run as root; needs mkfs.ext4 and
//! losetup): nothing of the host's tree stays alive under the new root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_sandbox::{spawn, Sandboxed, Spec};

fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_airlock-probe"))
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid 2-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two new fds we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A long-lived sandboxed probe (it waits for EOF on stdin) with its stage 2 confirmed.
fn long_lived(model: &Path) -> (Sandboxed, OwnedFd) {
    let (stdin_r, stdin_w) = pipe();
    let mut s = Spec::new(probe());
    s.args = vec!["--stage2".into(), "allow".into()];
    s.model_dir = Some(model.to_path_buf());
    s.fds.push((stdin_r, 0));
    (spawn(s).unwrap(), stdin_w)
}

/// Mount points and filesystem types of a mountinfo text (fields 5 and after " - ").
fn mounts(mountinfo: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .take_while(|l| *l != "== all mounts ==")
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?.to_string();
            let fstype = right.split_whitespace().next()?.to_string();
            Some((point, fstype))
        })
        .collect()
}

/// An ext4 file system on a loop device, mounted on the host.
struct Ext4 {
    dir: PathBuf,
    loopdev: String,
    mnt: PathBuf,
    mounted: bool,
}

impl Ext4 {
    fn new(tag: &str) -> Ext4 {
        let dir =
            std::env::temp_dir().join(format!("airlock-mountns-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("fs.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(8 << 20).unwrap();
        drop(f);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        let loopdev = run(Command::new("losetup").args(["--find", "--show"]).arg(&img))
            .trim()
            .to_string();
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        run(Command::new("mount")
            .args(["-t", "ext4"])
            .arg(&loopdev)
            .arg(&mnt));
        Ext4 {
            dir,
            loopdev,
            mnt,
            mounted: true,
        }
    }

    /// `/proc/fs/ext4/<dev>`: present while the superblock is alive.
    fn proc_entry(&self) -> PathBuf {
        let name = Path::new(&self.loopdev).file_name().unwrap();
        Path::new("/proc/fs/ext4").join(name)
    }

    fn unmount(&mut self) {
        run(Command::new("umount").arg(&self.mnt));
        self.mounted = false;
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An ext4 file system mounted on the host before a spawn keeps no reference in the sandbox:
/// its superblock (`/proc/fs/ext4/<loop>`) goes away as soon as the host unmounts it, while
/// the sandboxed program still runs. (Before the fix the host's whole tree stayed in the
/// sandbox's namespace, hidden under the new root, and the entry lived until the probe ended.)
#[test]
fn host_unmount_releases_the_superblock_while_the_sandbox_runs() {
    let mut fs = Ext4::new("sb");
    std::fs::create_dir_all(fs.dir.join("model")).unwrap();
    assert!(
        fs.proc_entry().exists(),
        "{} missing",
        fs.proc_entry().display()
    );
    let (mut child, stdin_w) = long_lived(&fs.dir.join("model"));
    fs.unmount();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs.proc_entry().exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(child.try_wait().unwrap(), None, "the probe must still run");
    assert!(
        !fs.proc_entry().exists(),
        "{} still exists: the sandbox's mount namespace keeps the host's ext4 mount alive",
        fs.proc_entry().display()
    );
    drop(stdin_w);
    child.wait_timeout(Duration::from_secs(30)).unwrap();
}

/// The mount table seen from inside the sandbox's namespace lists only the sandbox's own
/// mounts: `/` (tmpfs), `/model` (the host's model dir), `/scratch` and `/dev` (tmpfs). Nothing
/// of the host: no /proc, /sys, host /dev, cgroups, not the ext4 file system the host mounted.
/// (Joining the namespace makes its root the top of the stack at "/", so the namespace's
/// absolute root — the kernel's rootfs, below the sandbox's root — is not listed; the parent id
/// of the sandbox's "/" names it.)
#[test]
fn mount_table_inside_holds_only_the_sandbox_mounts() {
    let fs = Ext4::new("table");
    std::fs::create_dir_all(fs.dir.join("model")).unwrap();
    let (mut child, stdin_w) = long_lived(&fs.dir.join("model"));
    let text =
        run(Command::new(env!("CARGO_BIN_EXE_airlock-mountinfo")).arg(child.pid().to_string()));
    let mut got = mounts(&text);
    got.sort();
    let want: Vec<(String, String)> = [
        ("/", "tmpfs"),
        ("/dev", "tmpfs"),
        ("/model", "ext4"),
        ("/scratch", "tmpfs"),
    ]
    .iter()
    .map(|(p, t)| (p.to_string(), t.to_string()))
    .collect();
    // /model is the host's model dir; its file system is whatever holds $TMPDIR.
    let model_fs = got
        .iter()
        .find(|(p, _)| p == "/model")
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let want: Vec<(String, String)> = want
        .into_iter()
        .map(|(p, t)| {
            if p == "/model" {
                (p, model_fs.clone())
            } else {
                (p, t)
            }
        })
        .collect();
    assert_eq!(got, want, "mount table inside the sandbox:\n{text}");
    assert!(!text.contains(&fs.loopdev), "{text}");
    // Every mount of the namespace, hidden under the root or not (listmount from the
    // namespace's absolute root): that root (the kernel's rootfs) and the sandbox's four.
    let all: Vec<(String, String)> = text
        .lines()
        .skip_while(|l| *l != "== all mounts ==")
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            (
                f.get(2).unwrap_or(&"").to_string(),
                f.get(3).unwrap_or(&"").to_string(),
            )
        })
        .collect();
    let mut all_sorted = all.clone();
    all_sorted.sort();
    let mut want_all: Vec<(String, String)> = vec![
        ("rootfs".into(), String::new()),
        ("tmpfs".into(), "/".into()),
        ("tmpfs".into(), "/dev".into()),
        ("tmpfs".into(), "/scratch".into()),
        (model_fs.clone(), "/model".into()),
    ];
    want_all.sort();
    assert_eq!(
        all_sorted, want_all,
        "every mount of the namespace:\n{text}"
    );
    drop(stdin_w);
    child.wait_timeout(Duration::from_secs(30)).unwrap();
}
