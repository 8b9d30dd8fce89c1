//! The volume label of a stick, for `status` (`sdb 16 MiB "DEMO"`).
//!
//! Reading a stick is reading untrusted bytes from a device that may hang,
//! so PID 1 never does it: it starts `airlock-init usb-label sdb` (a child,
//! killed after [`TIMEOUT`]) which reads the first 4 KiB of the first
//! partition (or of the whole disk when it has none) and prints the label.
//! The parser only looks at fixed offsets of a fixed-size buffer.
//!
//! Recognised: FAT12/16/32 (boot sector label) and ext2/3/4 (superblock
//! label). Anything else (exFAT keeps its label in the root directory,
//! NTFS, no file system) has no label here.

use airlock_formats::escape;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use thiserror::Error;

/// How long a label child may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the device.
pub const READ_LEN: usize = 4096;

/// Failing operation of the label reader.
#[derive(Debug, Error)]
pub enum LabelError {
    #[error("usage: airlock-init usb-label DISK")]
    Usage,
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The label as it may be shown (in double quotes) on a terminal: cut at
/// the first NUL, spaces trimmed, then escaped with `escape::bytes` (ESC,
/// C1 controls such as CSI 0x9b, bidi controls and invalid UTF-8 become
/// `\xNN` / `\u{NNNN}`, a backslash `\\`), and `"` shown as `\x22` so a
/// label cannot close its quotes and forge a second stick in
/// `usb sticks: sdb 16 MiB "LABEL"`. `NO NAME` (FAT's "no label") and an
/// empty field are no label.
pub fn shown(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let raw = raw.get(..end).unwrap_or(&[]).trim_ascii();
    if raw.is_empty() || raw == b"NO NAME" {
        return None;
    }
    Some(escape::bytes(raw).replace('"', "\\x22"))
}

/// The label in the first bytes of a file system, if recognised.
pub fn parse_label(buf: &[u8]) -> Option<String> {
    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56, label at +120 (16 bytes).
    if buf.get(1024 + 56..1024 + 58) == Some(&[0x53, 0xEF]) {
        return buf.get(1024 + 120..1024 + 136).and_then(shown);
    }
    // FAT: boot sector signature 0x55AA at 510.
    if buf.get(510..512) != Some(&[0x55, 0xAA]) {
        return None;
    }
    if buf.get(82..87) == Some(b"FAT32") {
        return buf.get(71..82).and_then(shown);
    }
    if buf.get(54..57) == Some(b"FAT") {
        return buf.get(43..54).and_then(shown);
    }
    None
}

/// The file system type (as `mount(2)` names it) in the first bytes of a
/// device, if it is one a stick may carry: ext2/3/4 (superblock magic),
/// exFAT (`EXFAT   ` OEM name) or FAT (boot signature with a FAT type
/// field). Trying each type in turn would make the kernel log a complaint
/// about every wrong guess on the console.
pub fn fs_type(buf: &[u8]) -> Option<&'static str> {
    if buf.get(1024 + 56..1024 + 58) == Some(&[0x53, 0xEF]) {
        return Some("ext4");
    }
    if buf.get(510..512) != Some(&[0x55, 0xAA]) {
        return None;
    }
    if buf.get(3..11) == Some(b"EXFAT   ") {
        return Some("exfat");
    }
    if buf.get(82..87) == Some(b"FAT32") || buf.get(54..57) == Some(b"FAT") {
        return Some("vfat");
    }
    None
}

/// The first [`READ_LEN`] bytes of `/dev/DEV` (fewer if it is shorter).
pub fn read_head(dev: &str) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(format!("/dev/{dev}"))?;
    crate::gpt::read_at(&mut f, 0, READ_LEN)
}

/// The file system types to try on `/dev/DEV`: the recognised one alone,
/// or every one of `all` when the first bytes say nothing (unreadable).
pub fn mount_candidates(dev: &str, all: &'static [&'static str]) -> Vec<&'static str> {
    match read_head(dev).ok().as_deref().and_then(fs_type) {
        Some(t) => vec![t],
        None => all.to_vec(),
    }
}

/// The device to read for disk `name`: its first partition if the kernel
/// found partitions, else the whole disk.
pub fn label_device(sys_block: &Path, name: &str) -> String {
    let first = format!("{name}1");
    let alt = format!("{name}p1");
    for p in [first, alt] {
        if sys_block.join(name).join(&p).exists() {
            return p;
        }
    }
    name.to_string()
}

/// Entry point of `airlock-init usb-label DISK`: prints the label (or
/// nothing) on stdout.
pub fn main_from_args(args: &[String]) -> ExitCode {
    let [disk] = args else {
        eprintln!("airlock-init: {}", LabelError::Usage);
        return ExitCode::from(2);
    };
    if disk.is_empty() || !disk.chars().all(|c| c.is_ascii_alphanumeric()) {
        eprintln!("airlock-init: {}", LabelError::Usage);
        return ExitCode::from(2);
    }
    let dev = label_device(Path::new("/sys/block"), disk);
    match read_head(&dev) {
        Ok(buf) => {
            if let Some(l) = parse_label(&buf) {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(source) => {
            let path = format!("/dev/{dev}");
            eprintln!("airlock-init: {}", LabelError::Read { path, source });
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT32 boot sector whose label field holds `label` (space-padded to 11).
    fn fat32(label: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; READ_LEN];
        b[71..82].fill(b' ');
        b[71..71 + label.len()].copy_from_slice(label);
        b[82..90].copy_from_slice(b"FAT32   ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn file_system_types() {
        let mut ext4 = vec![0u8; READ_LEN];
        ext4[1024 + 56] = 0x53;
        ext4[1024 + 57] = 0xEF;
        let mut exfat = vec![0u8; READ_LEN];
        exfat[3..11].copy_from_slice(b"EXFAT   ");
        exfat[510] = 0x55;
        exfat[511] = 0xAA;
        let mut fat16 = vec![0u8; READ_LEN];
        fat16[54..62].copy_from_slice(b"FAT16   ");
        fat16[510] = 0x55;
        fat16[511] = 0xAA;
        let mut ntfs = exfat.clone();
        ntfs[3..11].copy_from_slice(b"NTFS    ");
        let rows: &[(&str, Vec<u8>, Option<&str>)] = &[
            ("ext4 superblock magic", ext4, Some("ext4")),
            ("exFAT OEM name", exfat, Some("exfat")),
            ("FAT32 type field", fat32(b"STICK"), Some("vfat")),
            ("FAT16 type field", fat16, Some("vfat")),
            ("NTFS: not a stick file system", ntfs, None),
            ("zeros", vec![0u8; READ_LEN], None),
            ("short read", vec![0x55; 100], None),
        ];
        for (what, buf, want) in rows {
            assert_eq!(fs_type(buf), *want, "{what}");
        }
    }

    #[test]
    fn fat32_label() {
        assert_eq!(parse_label(&fat32(b"DEMO       ")), Some("DEMO".into()));
        assert_eq!(parse_label(&fat32(b"NO NAME    ")), None);
    }

    #[test]
    fn hostile_labels_are_escaped() {
        // (raw FAT32 label field, shown label): nothing that steers a
        // terminal survives, and the quotes around the label cannot be closed.
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"A\x1b[2JB   ", Some(r"A\x1b[2JB")),
            (b"X\x9b31mY   ", Some(r"X\x9b31mY")),
            (b"\xc2\x9b1m     ", Some(r"\x9b1m")),
            (b"A\"B\x01       ", Some(r"A\x22B\x01")),
            (b"a\\b\x7f      ", Some(r"a\\b\x7f")),
            (b"SAFE\x00\x1b[2J  ", Some("SAFE")),
            (b"\xe2\x80\xaeGPJ.EXE  ", Some(r"\u{202e}GPJ.EXE")),
            (
                b"\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b",
                Some(r"\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b"),
            ),
            (b"           ", None),
        ];
        for (raw, want) in cases {
            let got = parse_label(&fat32(raw));
            assert_eq!(got.as_deref(), *want, "label field {raw:?}");
            if let Some(g) = &got {
                assert_eq!(escape::first_unsafe(g), None, "{g:?}");
                assert!(!g.contains('"'), "{g:?}");
            }
        }
    }

    #[test]
    fn fat16_label() {
        let mut b = vec![0u8; 512];
        b[43..54].copy_from_slice(b"AIRLOCK-USB");
        b[54..62].copy_from_slice(b"FAT16   ");
        b[510] = 0x55;
        b[511] = 0xAA;
        assert_eq!(parse_label(&b), Some("AIRLOCK-USB".into()));
    }

    #[test]
    fn ext4_label() {
        let mut b = vec![0u8; READ_LEN];
        b[1024 + 56] = 0x53;
        b[1024 + 57] = 0xEF;
        b[1024 + 120..1024 + 126].copy_from_slice(b"models");
        assert_eq!(parse_label(&b), Some("models".into()));
    }

    #[test]
    fn unknown_short_or_garbage_has_no_label() {
        assert_eq!(parse_label(&[]), None);
        assert_eq!(parse_label(&[0xAA; 100]), None);
        assert_eq!(parse_label(&vec![0u8; READ_LEN]), None);
        let mut b = fat32(b"DEMO       ");
        b.truncate(80); // cut inside the label field, before the signature
        assert_eq!(parse_label(&b), None);
    }

    #[test]
    fn partition_or_whole_disk() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sdb/sdb1")).unwrap();
        std::fs::create_dir_all(t.path().join("sdc")).unwrap();
        std::fs::create_dir_all(t.path().join("mmcblk0/mmcblk0p1")).unwrap();
        assert_eq!(label_device(t.path(), "sdb"), "sdb1");
        assert_eq!(label_device(t.path(), "sdc"), "sdc");
        assert_eq!(label_device(t.path(), "mmcblk0"), "mmcblk0p1");
    }
}
