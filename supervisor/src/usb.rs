//! USB sticks: whole block devices under /sys/block whose device path runs
//! through a USB bus and that hold a medium (size > 0). Polled once a
//! second; every change becomes an `[usb] stick inserted/removed` notice.
//!
//! The `removable` attribute is not used: many sticks (and QEMU's
//! usb-storage) report 0. Disks named in `exclude` (the disk holding the
//! state partition, when the appliance itself runs from USB) are skipped.

use crate::mounts::is_usb_path;
use crate::screen;
use airlock_formats::escape;
use std::path::Path;
use thiserror::Error;

/// Failing operation of this module.
#[derive(Debug, Error)]
pub enum UsbError {
    #[error("list {path}: {source}")]
    List {
        path: String,
        source: std::io::Error,
    },
}

/// A stick that is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stick {
    pub name: String,
    pub bytes: u64,
    /// Volume label, once the label reader has reported it.
    pub label: Option<String>,
}

/// A change between two scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Inserted(Stick),
    Removed(String),
}

/// `16 MiB`, `1.5 GiB`, `512 KiB`.
pub fn human_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    if bytes >= GIB {
        let tenths = u128::from(bytes) * 10 / u128::from(GIB);
        format!("{}.{} GiB", tenths / 10, tenths % 10)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / KIB)
    }
}

impl Stick {
    /// `sdb 16 MiB "DEMO"` (without the label until it is known). The label
    /// arrives escaped from the label reader (`usb_label::shown`); the
    /// kernel's device name is escaped here all the same: everything shown
    /// about a stick goes through `escape`.
    pub fn describe(&self) -> String {
        let name = escape::text(&self.name);
        match &self.label {
            Some(l) => format!("{name} {} \"{}\"", human_size(self.bytes), screen::line(l)),
            None => format!("{name} {}", human_size(self.bytes)),
        }
    }
}

/// `[usb] stick inserted: sdb (16 MiB) "DEMO"`: sent once the label reader
/// is done (or gave up), so the notice can name the label.
pub fn inserted_notice(s: &Stick) -> String {
    let name = escape::text(&s.name);
    match &s.label {
        Some(l) => format!(
            "[usb] stick inserted: {name} ({}) \"{}\"",
            human_size(s.bytes),
            screen::line(l)
        ),
        None => format!("[usb] stick inserted: {name} ({})", human_size(s.bytes)),
    }
}

/// `sdb 16 MiB label=STICK` for the audit log (label escaped, bounded).
pub fn audit_detail(s: &Stick) -> String {
    let mut d = format!("{} {}", escape::text(&s.name), human_size(s.bytes));
    if let Some(l) = &s.label {
        d.push_str(" label=");
        d.push_str(&screen::line(l));
    }
    d.chars().take(200).collect()
}

/// `[usb] stick removed: sdb`.
pub fn removed_notice(name: &str) -> String {
    format!("[usb] stick removed: {}", escape::text(name))
}

/// The notice line for a change (stable strings, see docs/supervisor.md).
pub fn notice(c: &Change) -> String {
    match c {
        Change::Inserted(s) => inserted_notice(s),
        Change::Removed(n) => removed_notice(n),
    }
}

/// Scans `sys_block` (normally /sys/block), sorted by name.
pub fn scan(sys_block: &Path, exclude: &[String]) -> Result<Vec<Stick>, UsbError> {
    let rd = std::fs::read_dir(sys_block).map_err(|source| UsbError::List {
        path: sys_block.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if exclude.contains(&name) {
            continue;
        }
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !is_usb_path(&target) {
            continue;
        }
        let sectors: u64 = std::fs::read_to_string(e.path().join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue; // card reader without a card, or a medium being probed
        }
        out.push(Stick {
            name,
            bytes: sectors.saturating_mul(512),
            label: None,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Changes from `old` to `new` (removals first, then insertions); labels
/// are not compared (a fresh scan does not know them).
pub fn diff(old: &[Stick], new: &[Stick]) -> Vec<Change> {
    let mut out: Vec<Change> = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.name == o.name && n.bytes == o.bytes))
        .map(|o| Change::Removed(o.name.clone()))
        .collect();
    out.extend(
        new.iter()
            .filter(|n| !old.iter().any(|o| o.name == n.name && o.bytes == n.bytes))
            .cloned()
            .map(Change::Inserted),
    );
    out
}

/// The `usb sticks:` status value.
pub fn status_value(sticks: &[Stick]) -> String {
    if sticks.is_empty() {
        "none".to_string()
    } else {
        sticks
            .iter()
            .map(Stick::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake /sys: devices/... trees and block/NAME symlinks.
    struct FakeSys(tempfile::TempDir);

    impl FakeSys {
        fn new() -> FakeSys {
            let t = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(t.path().join("block")).unwrap();
            FakeSys(t)
        }
        fn disk(&self, devpath: &str, name: &str, sectors: u64) {
            let dev = self
                .0
                .path()
                .join("devices")
                .join(devpath)
                .join("block")
                .join(name);
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join("size"), format!("{sectors}\n")).unwrap();
            std::fs::write(dev.join("removable"), "0\n").unwrap();
            symlink(
                format!("../devices/{devpath}/block/{name}"),
                self.0.path().join("block").join(name),
            )
            .unwrap();
        }
        fn remove(&self, name: &str) {
            std::fs::remove_file(self.0.path().join("block").join(name)).unwrap();
        }
        fn block(&self) -> std::path::PathBuf {
            self.0.path().join("block")
        }
    }

    const USB: &str = "pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0";

    #[test]
    fn sizes() {
        assert_eq!(human_size(16 * 1024 * 1024), "16 MiB");
        assert_eq!(human_size(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_size(64 * 1024), "64 KiB");
        assert_eq!(human_size(u64::MAX), "17179869183.9 GiB");
    }

    #[test]
    fn finds_usb_disks_only() {
        let f = FakeSys::new();
        f.disk("pci0000:00/0000:00:05.0/virtio2", "vda", 2_097_152);
        f.disk(USB, "sdb", 32_768);
        f.disk(
            "pci0000:00/0000:00:04.0/usb2/2-2/2-2:1.0/host1/target1:0:0/1:0:0:0",
            "sdc",
            0,
        );
        f.disk("virtual", "loop0", 100);
        let s = scan(&f.block(), &[]).unwrap();
        assert_eq!(
            s,
            vec![Stick {
                name: "sdb".into(),
                bytes: 16 * 1024 * 1024,
                label: None,
            }]
        );
        assert_eq!(status_value(&s), "sdb 16 MiB");
        let mut labelled = s.clone();
        labelled[0].label = Some("DEMO".into());
        assert_eq!(status_value(&labelled), "sdb 16 MiB \"DEMO\"");
        assert!(
            diff(&labelled, &s).is_empty(),
            "labels do not count as changes"
        );
        assert_eq!(scan(&f.block(), &["sdb".into()]).unwrap(), vec![]);
    }

    #[test]
    fn insert_and_remove_produce_notices() {
        let f = FakeSys::new();
        let before = scan(&f.block(), &[]).unwrap();
        assert_eq!(status_value(&before), "none");
        f.disk(USB, "sdb", 32_768);
        let after = scan(&f.block(), &[]).unwrap();
        let d = diff(&before, &after);
        assert_eq!(
            d.iter().map(notice).collect::<Vec<_>>(),
            vec!["[usb] stick inserted: sdb (16 MiB)"]
        );
        assert!(diff(&after, &after).is_empty());
        f.remove("sdb");
        let gone = scan(&f.block(), &[]).unwrap();
        assert_eq!(
            diff(&after, &gone).iter().map(notice).collect::<Vec<_>>(),
            vec!["[usb] stick removed: sdb"]
        );
    }

    #[test]
    fn hostile_labels_show_escaped_in_status_and_notice() {
        // (raw label field of a FAT32 stick, `usb sticks:` value, insert notice)
        let cases: &[(&[u8], &str, &str)] = &[
            (
                b"DEMO",
                r#"sdb 16 MiB "DEMO""#,
                r#"[usb] stick inserted: sdb (16 MiB) "DEMO""#,
            ),
            (
                b"A\x1b[2JB",
                r#"sdb 16 MiB "A\x1b[2JB""#,
                r#"[usb] stick inserted: sdb (16 MiB) "A\x1b[2JB""#,
            ),
            (
                b"X\x9b31mY",
                r#"sdb 16 MiB "X\x9b31mY""#,
                r#"[usb] stick inserted: sdb (16 MiB) "X\x9b31mY""#,
            ),
            (
                b"a\", sdc 9",
                r#"sdb 16 MiB "a\x22, sdc 9""#,
                r#"[usb] stick inserted: sdb (16 MiB) "a\x22, sdc 9""#,
            ),
        ];
        for (raw, status, notice_line) in cases {
            let mut sector = vec![0u8; 512];
            sector[71..82].fill(b' ');
            sector[71..71 + raw.len()].copy_from_slice(raw);
            sector[82..87].copy_from_slice(b"FAT32");
            sector[510] = 0x55;
            sector[511] = 0xAA;
            let stick = Stick {
                name: "sdb".into(),
                bytes: 16 << 20,
                label: crate::usb_label::parse_label(&sector),
            };
            assert_eq!(status_value(std::slice::from_ref(&stick)), *status);
            assert_eq!(inserted_notice(&stick), *notice_line);
            assert_eq!(escape::first_unsafe(&inserted_notice(&stick)), None);
        }
        // A label that reached PID 1 unescaped (a reader bug) is still caught.
        let raw = Stick {
            name: "sdb".into(),
            bytes: 16 << 20,
            label: Some("\x1b[2J".into()),
        };
        assert_eq!(
            inserted_notice(&raw),
            r#"[usb] stick inserted: sdb (16 MiB) "\x1b[2J""#
        );
        assert_eq!(removed_notice("sd\x1bb"), r"[usb] stick removed: sd\x1bb");
    }

    #[test]
    fn missing_sysfs_is_an_error() {
        let e = scan(Path::new("/nonexistent/block"), &[]).unwrap_err();
        assert!(e.to_string().starts_with("list /nonexistent/block: "));
    }
}
