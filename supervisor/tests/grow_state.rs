//! The state partition grows to fill a larger disk (`airlock-init
//! grow-state`), on the real kernel: a 64 MiB disk image laid out like
//! build-image's (sgdisk, ESP then airlock-state holding ext4), enlarged to
//! 160 MiB as if flashed onto a larger disk, attached as a loop device with
//! the state partition mounted. Needs root, sgdisk, mkfs.ext4, e2fsck.
//!
//! This host's kernel may lack a GPT parser (CONFIG_EFI_PARTITION): the
//! partitions are then added from user space (`partx -a`, BLKPG), which is
//! the same kernel state the appliance's kernel makes from the table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_supervisor::grow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_airlock-init");
const STATE_GUID: &str = "0e16a44c-724c-40b1-bffd-7e46645b4527";
const MIB: u64 = 1 << 20;
/// Loop devices are a shared resource: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    name.to_string()
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool(cmd)).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(cmd: &str, args: &[&str]) -> String {
    let (ok, text) = run(cmd, args);
    assert!(ok, "{cmd} {args:?}: {text}");
    text
}

/// A disk image of `mib` MiB: partition 1 an 8 MiB ESP at 1 MiB, then the
/// given partitions (sgdisk `-n/-c/-u/-t` arguments); `state_fs` puts an
/// ext4 into partition 2.
fn image(dir: &Path, mib: u64, parts: &[&str], state_fs: bool) -> PathBuf {
    let img = dir.join("disk.img");
    let _ = std::fs::remove_file(&img);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(mib * MIB)
        .unwrap();
    let mut args = common::SGDISK_ESP.to_vec();
    args.extend_from_slice(parts);
    let img_s = img.display().to_string();
    args.push(&img_s);
    must("sgdisk", &args);
    if state_fs {
        let (first, last) = part_span(&img, 2);
        let fs = dir.join("state.fs");
        let _ = std::fs::remove_file(&fs);
        std::fs::File::create(&fs)
            .unwrap()
            .set_len((last - first + 1) * 512)
            .unwrap();
        let fs_s = fs.display().to_string();
        must(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                "airlock-state",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                &fs_s,
            ],
        );
        let bytes = std::fs::read(&fs).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&bytes, first * 512).unwrap();
        f.sync_all().unwrap();
    }
    img
}

/// The standard layout: state fills the rest of the disk.
const STATE: &[&str] = &[
    "-n",
    "2:0:0",
    "-t",
    "2:8300",
    "-u",
    "2:0e16a44c-724c-40b1-bffd-7e46645b4527",
    "-c",
    "2:airlock-state",
];

/// First and last LBA of partition `n`, from `sgdisk -i`.
fn part_span(img: &Path, n: u32) -> (u64, u64) {
    let text = must(
        "sgdisk",
        &["-i", &n.to_string(), &img.display().to_string()],
    );
    let field = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("First sector: "), field("Last sector: "))
}

/// An image enlarged as if flashed onto a larger disk.
fn enlarge(img: &Path, mib: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .set_len(mib * MIB)
        .unwrap();
}

/// The image attached, its partitions known to the kernel, partition 2
/// mounted; undone in reverse order on drop (also when a test fails).
struct Attached {
    lo: Option<common::Loop>,
    disk: String,
    mnt: PathBuf,
    mounted: bool,
}

impl Attached {
    fn new(img: &Path, mnt: &Path) -> Attached {
        let lo = common::attach(img);
        let disk = lo.0.trim_start_matches("/dev/").to_string();
        let mut a = Attached {
            lo: Some(lo),
            disk,
            mnt: mnt.to_owned(),
            mounted: false,
        };
        // Partitions a kernel GPT parser made, or stale ones of an
        // earlier user of this loop device: dropped, then added from the
        // table as it is now.
        let _ = run("partx", &["-d", &a.dev()]);
        must("partx", &["-a", &a.dev()]);
        for _ in 0..100 {
            if Path::new(&a.part_dev()).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::create_dir_all(mnt).unwrap();
        must(
            "mount",
            &["-t", "ext4", &a.part_dev(), &mnt.display().to_string()],
        );
        a.mounted = true;
        a
    }
    fn dev(&self) -> String {
        format!("/dev/{}", self.disk)
    }
    fn part_name(&self) -> String {
        grow::partition_name(Path::new("/sys/block"), &self.disk, 2).unwrap()
    }
    fn part_dev(&self) -> String {
        format!("/dev/{}p2", self.disk)
    }
    fn sys_part(&self) -> PathBuf {
        Path::new("/sys/block")
            .join(&self.disk)
            .join(format!("{}p2", self.disk))
    }
    /// The kernel's idea of partition 2's size, 512-byte sectors.
    fn kernel_sectors(&self) -> u64 {
        std::fs::read_to_string(self.sys_part().join("size"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
    fn umount(&mut self) {
        if self.mounted {
            let _ = run("umount", &[&self.mnt.display().to_string()]);
            self.mounted = false;
        }
    }
    /// `airlock-init grow-state DISK 2 GUID MNT`: (exit code, stdout, stderr).
    fn grow(&self, guid: &str) -> (Option<i32>, String, String) {
        let out = Command::new(BIN)
            .args(["grow-state", &self.disk, "2", guid])
            .arg(&self.mnt)
            .env_clear()
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.umount();
        let _ = run("partx", &["-d", &self.dev()]);
        drop(self.lo.take());
    }
}

/// Online ext4 resize needs CAP_SYS_RESOURCE (PID 1 has it); a container
/// may withhold it even from root. Without it the tests check that the
/// step fails with its one-line reason and leaves the rest done.
fn can_resize() -> bool {
    let ok = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    if !ok {
        eprintln!("note: no CAP_SYS_RESOURCE here: the online ext4 resize is checked to fail with its reason");
    }
    ok
}

fn statvfs_total(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).unwrap();
    st.blocks() * st.fragment_size()
}

/// The backup header's own LBA (field at offset 24 of the last sector),
/// or `None` when the last sector holds no GPT header.
fn backup_header_lba(img: &Path) -> Option<u64> {
    let f = std::fs::File::open(img).unwrap();
    let len = f.metadata().unwrap().len();
    let mut s = [0u8; 512];
    f.read_exact_at(&mut s, len - 512).unwrap();
    (&s[..8] == b"EFI PART").then(|| u64::from_le_bytes(s[24..32].try_into().unwrap()))
}

#[test]
fn grows_table_kernel_view_and_mounted_ext4_then_does_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), 64, STATE, true);
    let (first, old_last) = part_span(&img, 2);
    enlarge(&img, 160);
    let mut a = Attached::new(&img, &t.path().join("mnt"));
    assert_eq!(a.part_name(), format!("{}p2", a.disk));
    std::fs::write(a.mnt.join("keep"), b"models live here").unwrap();
    let fs_before = statvfs_total(&a.mnt);
    assert_eq!(a.kernel_sectors(), old_last - first + 1);

    let resize = can_resize();
    let (code, out, err) = a.grow(STATE_GUID);
    let r = grow::parse_output(&out);
    let new_last = 159 * 2048 - 1; // last usable LBA aligned down to 1 MiB
    let p = r.partition.unwrap();
    assert_eq!(p.before, (old_last - first + 1) * 512);
    assert_eq!(p.after, (new_last - first + 1) * 512);
    let fs_after = if resize {
        assert_eq!(code, Some(0), "stdout {out} stderr {err}");
        let f = r.filesystem.unwrap();
        assert_eq!(f.before, fs_before);
        assert!(f.after > fs_before + 80 * MIB, "{f:?}");
        f.after
    } else {
        assert_eq!(code, Some(1), "stdout {out} stderr {err}");
        let blocks = (new_last - first + 1) * 512 / 4096;
        assert_eq!(
            err,
            format!("airlock-init: grow the file system (EXT4_IOC_RESIZE_FS to {blocks} blocks): EPERM: Operation not permitted\n")
        );
        assert_eq!(r.filesystem, None);
        fs_before
    };

    // The table: partition 2 ends on the last MiB, backup on the last LBA.
    let v = must("sgdisk", &["-v", &img.display().to_string()]);
    assert!(v.contains("No problems found"), "{v}");
    assert_eq!(part_span(&img, 2), (first, new_last));
    assert_eq!(backup_header_lba(&img), Some(160 * 2048 - 1));
    // The kernel knows the new size without a re-read...
    assert_eq!(a.kernel_sectors(), new_last - first + 1);
    // ...and the mounted file system has the space.
    assert_eq!(statvfs_total(&a.mnt), fs_after);
    assert_eq!(
        std::fs::read(a.mnt.join("keep")).unwrap(),
        b"models live here"
    );

    // The next boot: the table and the kernel have nothing to do; the file
    // system has nothing to do (or is tried again).
    let (code, out2, err) = a.grow(STATE_GUID);
    assert_eq!(code, Some(if resize { 0 } else { 1 }), "{err}");
    let r2 = grow::parse_output(&out2);
    assert!(!r2.grew(), "{out2}");
    assert_eq!(r2.partition.unwrap().after, p.after);
    if resize {
        assert_eq!(r2.filesystem.unwrap().after, fs_after);
    }
    assert_eq!(a.kernel_sectors(), new_last - first + 1);

    a.umount();
    let (ok, fsck) = run("e2fsck", &["-fn", &a.part_dev()]);
    assert!(ok, "e2fsck: {fsck}");
}

#[test]
fn a_table_written_before_a_power_cut_is_finished_on_the_next_boot() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), 64, STATE, true);
    let (first, _) = part_span(&img, 2);
    enlarge(&img, 160);
    // Boot 1 wrote the table and lost power before the kernel and the
    // file system heard of it.
    let c = grow::grow_table(&img, 512, 2, STATE_GUID).unwrap();
    assert!(c.grew());
    // Boot 2: the kernel reads the new table; the ext4 is still small.
    let a = Attached::new(&img, &t.path().join("mnt"));
    let new_last = 159 * 2048 - 1;
    assert_eq!(a.kernel_sectors(), new_last - first + 1);
    let before = statvfs_total(&a.mnt);
    let resize = can_resize();
    let (code, out, err) = a.grow(STATE_GUID);
    let r = grow::parse_output(&out);
    assert!(!r.partition.unwrap().grew(), "{out}");
    if resize {
        assert_eq!(code, Some(0), "{err}");
        let f = r.filesystem.unwrap();
        assert_eq!(f.before, before);
        assert!(f.after > before + 80 * MIB, "{f:?}");
    } else {
        assert_eq!(code, Some(1));
        assert!(
            err.contains("grow the file system (EXT4_IOC_RESIZE_FS to "),
            "{err}"
        );
        assert_eq!(statvfs_total(&a.mnt), before);
    }
}

#[test]
fn refusals_leave_the_table_untouched_and_say_why() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let other_guid = "11111111-2222-4333-8444-555555555555";
    // (case, partitions, byte to flip in the primary, GUID asked for, reason)
    let not_last: &[&str] = &[
        "-n",
        "2:0:+16M",
        "-u",
        "2:0e16a44c-724c-40b1-bffd-7e46645b4527",
        "-c",
        "2:airlock-state",
        "-n",
        "3:0:+4M",
        "-c",
        "3:spare",
    ];
    let other_name: &[&str] = &[
        "-n",
        "2:0:0",
        "-u",
        "2:0e16a44c-724c-40b1-bffd-7e46645b4527",
        "-c",
        "2:data",
    ];
    let gap: &[&str] = &[
        "-n",
        "3:0:0",
        "-u",
        "3:0e16a44c-724c-40b1-bffd-7e46645b4527",
        "-c",
        "3:airlock-state",
    ];
    type Case<'a> = (&'a str, &'a [&'a str], Option<u64>, u32, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "not the last partition",
            not_last,
            None,
            2,
            STATE_GUID,
            "is not the last partition (partition 3 lies after it); not rewritten",
        ),
        (
            "named otherwise",
            other_name,
            None,
            2,
            STATE_GUID,
            "partition 2 is named \"data\", not airlock-state; not rewritten",
        ),
        (
            "another GUID",
            STATE,
            None,
            2,
            other_guid,
            "partition 2 has GUID 0e16a44c-724c-40b1-bffd-7e46645b4527, not the state partition's 11111111-2222-4333-8444-555555555555; not rewritten",
        ),
        (
            "entry array damaged",
            STATE,
            Some(1024 + 200),
            2,
            STATE_GUID,
            "GPT partition entry array CRC32 mismatch",
        ),
        (
            "header damaged",
            STATE,
            Some(512 + 40),
            2,
            STATE_GUID,
            "GPT header CRC32 mismatch",
        ),
        (
            "entries with a gap",
            gap,
            None,
            3,
            STATE_GUID,
            "partition entries are not numbered 1..N without gaps; not rewritten",
        ),
    ];
    for (name, parts, flip, partn, guid, reason) in cases {
        let img = image(t.path(), 64, parts, false);
        if let Some(off) = flip {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&img)
                .unwrap();
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, *off).unwrap();
            f.write_all_at(&[b[0] ^ 0xff], *off).unwrap();
        }
        enlarge(&img, 160);
        let before = std::fs::read(&img).unwrap();
        let e = grow::grow_table(&img, 512, *partn, guid).unwrap_err();
        assert!(e.to_string().ends_with(reason), "{name}: {e}");
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{name}: the image changed"
        );
    }
    // A disk that did not grow: nothing written, sizes unchanged.
    let img = image(t.path(), 64, STATE, false);
    let before = std::fs::read(&img).unwrap();
    let c = grow::grow_table(&img, 512, 2, STATE_GUID).unwrap();
    assert!(!c.grew(), "{c:?}");
    assert!(std::fs::read(&img).unwrap() == before);
}

#[test]
fn the_binary_reports_each_failed_step_on_one_line() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), 64, STATE, true);
    enlarge(&img, 160);
    let a = Attached::new(&img, &t.path().join("mnt"));
    let sectors = a.kernel_sectors();
    // Another GUID: the table is refused; the kernel and file system steps
    // find nothing to do (the partition did not grow).
    let (code, out, err) = a.grow("11111111-2222-4333-8444-555555555555");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("airlock-init: partition table of /dev/")
            && err.contains("not the state partition's"),
        "{err}"
    );
    assert!(!grow::parse_output(&out).grew(), "{out}");
    assert_eq!(a.kernel_sectors(), sectors);
    // A mount point that is not the partition's file system.
    let (code, _, err) = Command::new(BIN)
        .args(["grow-state", &a.disk, "2", STATE_GUID, "/"])
        .env_clear()
        .output()
        .map(|o| {
            (
                o.status.code(),
                o.stdout,
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, Some(1));
    assert!(
        err.contains("check the mount point /: not the file system of"),
        "{err}"
    );
    // Bad arguments.
    for args in [
        &["grow-state"][..],
        &["grow-state", "../x", "2", STATE_GUID, "/mnt"],
        &["grow-state", "loop0", "two", STATE_GUID, "/mnt"],
        &["grow-state", "loop0", "2", "not-a-guid", "/mnt"],
        &["grow-state", "loop0", "2", STATE_GUID, "relative"],
    ] {
        let o = Command::new(BIN).args(args).env_clear().output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}
