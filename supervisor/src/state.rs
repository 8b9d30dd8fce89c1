//! Which partition is the state partition (models, audit log, keys).
//!
//! Not simply "the partition named `airlock-state`": any disk can carry that
//! name (an eSATA disk, a second NVMe, a hot-plugged AHCI disk) and would
//! then become the state, or make the boot refuse two as ambiguous. A
//! partition is taken only if all of these hold:
//! 1. its GPT name is `airlock-state` and it is not on a USB device (a
//!    stick must never offer itself as our state);
//! 2. its unique partition GUID is the one this image was built with
//!    (`image/partitions.sh`), named on the command line inside the UKI as
//!    `airlock.state=PARTUUID=<GUID>` (direct kernel boots in tests name it
//!    the same way); without that key nothing is mounted;
//! 3. when the firmware booted through systemd-boot, it sits on the boot
//!    disk: the disk that holds the ESP whose GUID systemd-boot stored in
//!    the EFI variable `LoaderDevicePartUUID` (efivarfs, mounted read-only).
//!
//! Partition GUIDs are not in sysfs, so each candidate disk's GPT is read by
//! a child (`gpt.rs`), and an entry counts only where the kernel put the
//! partition (same start sector). Exactly one partition must qualify; two
//! are refused. Every partition named `airlock-state` that was not taken is
//! listed with its reason (`status`: `state ignored`).

use crate::gpt::{self, Entry};
use crate::mounts::{is_usb_path, uevent_value, STATE_PARTNAME};
use airlock_formats::escape;
use std::path::Path;
use thiserror::Error;

/// Where efivarfs is mounted (read-only).
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// systemd-boot's variable naming the ESP it was started from (vendor GUID
/// of the Boot Loader Interface).
pub const LOADER_DEVICE_PART_UUID: &str =
    "LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// systemd-boot's variable naming the entry it booted (its id: the UKI's
/// file name in `EFI/Linux`).
pub const LOADER_ENTRY_SELECTED: &str = "LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Failing operation of the selection.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StateError {
    #[error("read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("LoaderDevicePartUUID is not a GUID ({0}); refusing to guess the boot disk")]
    BadLoaderVar(String),
    #[error("two or more partitions qualify as the state partition: {0}; refusing to guess")]
    Ambiguous(String),
}

/// A partition named `airlock-state`, as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// `vda2`
    pub dev: String,
    /// The whole disk, `vda`.
    pub disk: String,
    /// Partition number (`PARTN`).
    pub partn: u32,
    /// First sector in 512-byte units (sysfs `start`).
    pub start: u64,
    /// Its device path runs through a USB bus.
    pub usb: bool,
}

/// A partition named `airlock-state` that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub dev: String,
    pub reason: String,
}

/// The outcome of a selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The state partition (`vda2`) and its disk (`vda`).
    pub chosen: Option<(String, String)>,
    pub ignored: Vec<Ignored>,
}

/// The partitions named `airlock-state` under `sys_class_block` (normally
/// /sys/class/block), sorted by device name.
pub fn named_partitions(sys_class_block: &Path) -> Result<Vec<Named>, StateError> {
    let rd = std::fs::read_dir(sys_class_block).map_err(|e| StateError::Read {
        path: sys_class_block.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let path = entry.path();
        let Ok(uevent) = std::fs::read_to_string(path.join("uevent")) else {
            continue;
        };
        if uevent_value(&uevent, "PARTNAME") != Some(STATE_PARTNAME) {
            continue;
        }
        let real = std::fs::canonicalize(&path).unwrap_or(path.clone());
        let disk = real
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dev = uevent_value(&uevent, "DEVNAME")
            .map(str::to_string)
            .unwrap_or_else(|| entry.file_name().to_string_lossy().into_owned());
        let partn = uevent_value(&uevent, "PARTN")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let start = std::fs::read_to_string(path.join("start"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u64::MAX);
        out.push(Named {
            dev,
            disk,
            partn,
            start,
            usb: is_usb_path(&real),
        });
    }
    out.sort_by(|a, b| a.dev.cmp(&b.dev));
    Ok(out)
}

/// A text variable of systemd-boot from efivarfs at `efivars`: `Ok(None)`
/// when it is not there (direct kernel boot, another boot loader). The
/// variable is 4 bytes of attributes, then NUL-terminated UTF-16LE text
/// (at most 64 characters are read).
pub fn loader_text(efivars: &Path, name: &str) -> Result<Option<String>, StateError> {
    let path = efivars.join(name);
    let raw = match std::fs::read(&path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let units: Vec<u16> = raw
        .get(4..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .take_while(|&u| u != 0)
        .take(64)
        .collect();
    Ok(Some(String::from_utf16_lossy(&units)))
}

/// The ESP systemd-boot was started from, from efivarfs at `efivars`:
/// `Ok(None)` when the variable is not there.
pub fn boot_esp(efivars: &Path) -> Result<Option<String>, StateError> {
    let Some(text) = loader_text(efivars, LOADER_DEVICE_PART_UUID)? else {
        return Ok(None);
    };
    gpt::parse_guid(&text)
        .map(Some)
        .ok_or_else(|| StateError::BadLoaderVar(escape::text(&text).into_owned()))
}

/// Chooses the state partition among `named`. `want` is the GUID from
/// `airlock.state=`, `esp` the boot ESP's GUID (if known), `table` reads a
/// disk's GPT (the `gpt-parts` child; a fake in tests).
pub fn select(
    named: &[Named],
    want: Option<&str>,
    esp: Option<&str>,
    table: &mut dyn FnMut(&str) -> Result<Vec<Entry>, String>,
) -> Result<Selection, StateError> {
    let mut sel = Selection::default();
    let mut taken: Vec<(String, String)> = Vec::new();
    for n in named {
        let ignore = |reason: String| Ignored {
            dev: n.dev.clone(),
            reason,
        };
        if n.usb {
            sel.ignored.push(ignore("on a USB device".into()));
            continue;
        }
        let Some(want) = want else {
            sel.ignored.push(ignore(
                "the command line names no state partition (airlock.state=PARTUUID=...)".into(),
            ));
            continue;
        };
        let entries = match table(&n.disk) {
            Ok(e) => e,
            Err(why) => {
                sel.ignored.push(ignore(format!(
                    "partition table of {} not readable: {}",
                    n.disk,
                    escape::text(&why)
                )));
                continue;
            }
        };
        let Some(entry) = entries
            .iter()
            .find(|e| e.partn == n.partn && e.start == n.start)
        else {
            sel.ignored.push(ignore(format!(
                "not in the primary GPT of {} where the kernel found it",
                n.disk
            )));
            continue;
        };
        if entry.guid != want {
            sel.ignored.push(ignore(format!(
                "partition GUID {} is not this image's ({want})",
                entry.guid
            )));
            continue;
        }
        if let Some(esp) = esp {
            if !entries.iter().any(|e| e.guid == esp) {
                sel.ignored.push(ignore(format!(
                    "not on the boot disk ({} holds no ESP with LoaderDevicePartUUID {esp})",
                    n.disk
                )));
                continue;
            }
        }
        taken.push((n.dev.clone(), n.disk.clone()));
    }
    match taken.len() {
        0 => Ok(sel),
        1 => {
            sel.chosen = taken.pop();
            Ok(sel)
        }
        _ => Err(StateError::Ambiguous(
            taken
                .iter()
                .map(|(d, _)| d.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// The `state ignored` status value: `vdb2 (reason), sdb1 (reason)`.
pub fn ignored_value(ignored: &[Ignored]) -> String {
    ignored
        .iter()
        .map(|i| format!("{} ({})", escape::text(&i.dev), i.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const STATE: &str = "0e16a44c-724c-40b1-bffd-7e46645b4527";
    const ESP: &str = "f6df8968-40d2-48cd-b61c-e838db0717f0";
    const OTHER: &str = "11111111-2222-4333-8444-555555555555";

    /// One partition in a fake /sys: (device path of its disk, name, PARTN, PARTNAME, start).
    fn part(root: &Path, disk_path: &str, name: &str, partn: u32, partname: &str, start: u64) {
        let dev = root.join("devices").join(disk_path).join(name);
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(
            dev.join("uevent"),
            format!("MAJOR=8\nMINOR=1\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={partn}\nPARTNAME={partname}\n"),
        )
        .unwrap();
        std::fs::write(dev.join("start"), format!("{start}\n")).unwrap();
        std::fs::create_dir_all(root.join("class/block")).unwrap();
        symlink(&dev, root.join("class/block").join(name)).unwrap();
    }

    const VDA: &str = "pci0000:00/0000:00:05.0/virtio2/block/vda";
    const VDB: &str = "pci0000:00/0000:00:06.0/virtio3/block/vdb";
    const NVME: &str = "pci0000:00/0000:00:07.0/nvme/nvme0/nvme0n1";
    const SDB: &str =
        "pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sdb";

    fn e(partn: u32, guid: &str, start: u64) -> Entry {
        Entry {
            partn,
            guid: guid.into(),
            start,
        }
    }

    /// The image's own disk: ESP at 2048, state at 526336.
    fn image_table() -> Vec<Entry> {
        vec![e(1, ESP, 2048), e(2, STATE, 526_336)]
    }

    #[test]
    fn selection_over_fake_sys_trees() {
        // (case, partitions [(disk path, name, partn, partname, start)],
        //  GPT of each disk, airlock.state, LoaderDevicePartUUID,
        //  chosen, ignored as shown in status, or the refusal)
        type Part<'a> = (&'a str, &'a str, u32, &'a str, u64);
        type Case<'a> = (
            &'a str,
            Vec<Part<'a>>,
            Vec<(&'a str, Result<Vec<Entry>, String>)>,
            Option<&'a str>,
            Option<&'a str>,
            Result<(Option<&'a str>, &'a str), &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "the image's disk alone, direct boot",
                vec![(VDA, "vda1", 1, "airlock-esp", 2048), (VDA, "vda2", 2, "airlock-state", 526_336)],
                vec![("vda", Ok(image_table()))],
                Some(STATE),
                None,
                Ok((Some("vda2"), "")),
            ),
            (
                "the image's disk alone, booted through systemd-boot",
                vec![(VDA, "vda2", 2, "airlock-state", 526_336)],
                vec![("vda", Ok(image_table()))],
                Some(STATE),
                Some(ESP),
                Ok((Some("vda2"), "")),
            ),
            (
                "a second disk with a partition named airlock-state (another GUID)",
                vec![(VDA, "vda2", 2, "airlock-state", 526_336), (VDB, "vdb1", 1, "airlock-state", 2048)],
                vec![("vda", Ok(image_table())), ("vdb", Ok(vec![e(1, OTHER, 2048)]))],
                Some(STATE),
                None,
                Ok((Some("vda2"), "vdb1 (partition GUID 11111111-2222-4333-8444-555555555555 is not this image's (0e16a44c-724c-40b1-bffd-7e46645b4527))")),
            ),
            (
                "a second disk copying the state GUID, but not the boot disk",
                vec![(NVME, "nvme0n1p1", 1, "airlock-state", 2048), (VDA, "vda2", 2, "airlock-state", 526_336)],
                vec![("vda", Ok(image_table())), ("nvme0n1", Ok(vec![e(1, STATE, 2048)]))],
                Some(STATE),
                Some(ESP),
                Ok((Some("vda2"), "nvme0n1p1 (not on the boot disk (nvme0n1 holds no ESP with LoaderDevicePartUUID f6df8968-40d2-48cd-b61c-e838db0717f0))")),
            ),
            (
                "a second disk copying the state GUID, direct boot: refused",
                vec![(NVME, "nvme0n1p1", 1, "airlock-state", 2048), (VDA, "vda2", 2, "airlock-state", 526_336)],
                vec![("vda", Ok(image_table())), ("nvme0n1", Ok(vec![e(1, STATE, 2048)]))],
                Some(STATE),
                None,
                Err("two or more partitions qualify as the state partition: nvme0n1p1, vda2; refusing to guess"),
            ),
            (
                "a copy of the whole disk (ESP and state GUIDs): refused",
                vec![(VDA, "vda2", 2, "airlock-state", 526_336), (VDB, "vdb2", 2, "airlock-state", 526_336)],
                vec![("vda", Ok(image_table())), ("vdb", Ok(image_table()))],
                Some(STATE),
                Some(ESP),
                Err("two or more partitions qualify as the state partition: vda2, vdb2; refusing to guess"),
            ),
            (
                "a stick named airlock-state",
                vec![(SDB, "sdb1", 1, "airlock-state", 2048)],
                vec![("sdb", Ok(vec![e(1, STATE, 2048)]))],
                Some(STATE),
                None,
                Ok((None, "sdb1 (on a USB device)")),
            ),
            (
                "no airlock.state= on the command line",
                vec![(VDA, "vda2", 2, "airlock-state", 526_336)],
                vec![("vda", Ok(image_table()))],
                None,
                None,
                Ok((None, "vda2 (the command line names no state partition (airlock.state=PARTUUID=...))")),
            ),
            (
                "the kernel used the backup GPT (start differs from the primary)",
                vec![(VDA, "vda2", 2, "airlock-state", 4096)],
                vec![("vda", Ok(image_table()))],
                Some(STATE),
                None,
                Ok((None, "vda2 (not in the primary GPT of vda where the kernel found it)")),
            ),
            (
                "an unreadable table",
                vec![(VDA, "vda2", 2, "airlock-state", 526_336)],
                vec![("vda", Err("GPT header CRC32 mismatch\x1b[2J".into()))],
                Some(STATE),
                None,
                Ok((None, "vda2 (partition table of vda not readable: GPT header CRC32 mismatch\\x1b[2J)")),
            ),
            (
                "nothing named airlock-state",
                vec![(VDA, "vda1", 1, "airlock-esp", 2048)],
                vec![("vda", Ok(image_table()))],
                Some(STATE),
                Some(ESP),
                Ok((None, "")),
            ),
        ];
        for (case, parts, tables, want, esp, expected) in cases {
            let t = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(t.path().join("class/block")).unwrap();
            for (path, name, partn, partname, start) in &parts {
                part(t.path(), path, name, *partn, partname, *start);
            }
            let named = named_partitions(&t.path().join("class/block")).unwrap();
            let mut read = |disk: &str| {
                tables
                    .iter()
                    .find(|(d, _)| *d == disk)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| Err(format!("no table for {disk}")))
            };
            let got = select(&named, want, esp, &mut read);
            match (got, expected) {
                (Ok(sel), Ok((chosen, ignored))) => {
                    assert_eq!(
                        sel.chosen.as_ref().map(|(d, _)| d.as_str()),
                        chosen,
                        "{case}"
                    );
                    assert_eq!(ignored_value(&sel.ignored), ignored, "{case}");
                }
                (Err(e), Err(reason)) => assert_eq!(e.to_string(), reason, "{case}"),
                (got, want) => {
                    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{case}")
                }
            }
        }
    }

    #[test]
    fn loader_device_part_uuid() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(boot_esp(t.path()), Ok(None), "absent on a direct boot");
        let var = |text: &str| {
            let mut raw = vec![0x06, 0, 0, 0];
            for u in text.encode_utf16().chain([0]) {
                raw.extend_from_slice(&u.to_le_bytes());
            }
            std::fs::write(t.path().join(LOADER_DEVICE_PART_UUID), raw).unwrap();
        };
        var("F6DF8968-40D2-48CD-B61C-E838DB0717F0");
        assert_eq!(boot_esp(t.path()), Ok(Some(ESP.into())));
        var("not-a-guid\x1b");
        assert_eq!(
            boot_esp(t.path()).unwrap_err().to_string(),
            "LoaderDevicePartUUID is not a GUID (not-a-guid\\x1b); refusing to guess the boot disk"
        );
    }
}
