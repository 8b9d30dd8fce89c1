//! The GUID partition table of a disk, read by a child process: the
//! partition GUIDs the kernel does not export (sysfs has PARTNAME, not
//! PARTUUID), needed to bind the state partition to this image and to the
//! boot disk (`state.rs`).
//!
//! A disk can hang I/O and its table is bytes an attacker may have written
//! (a second disk plugged into the PC), so PID 1 never reads it: it starts
//! `airlock-init gpt-parts DISK`, which reads the primary header and entry
//! array, checks both CRC32s, and prints one line per used entry:
//! `PARTN GUID START` (partition number as the kernel counts it, the
//! partition's unique GUID in lower case, its first sector in 512-byte
//! units, like sysfs's `start`). PID 1 checks `START` against sysfs, so a
//! table the kernel did not use (it falls back to the backup GPT when the
//! primary is damaged) is never believed.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use thiserror::Error;

/// Most entries read (the GPT default is 128).
pub const MAX_ENTRIES: u32 = 256;
/// Largest accepted entry size (the spec's is 128; larger must be a multiple of 128).
pub const MAX_ENTRY_SIZE: u32 = 512;

/// Why a table was not read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GptError {
    #[error("usage: airlock-init gpt-parts DISK")]
    Usage,
    #[error("read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("no GPT header (signature 'EFI PART' missing)")]
    NoHeader,
    #[error("GPT header CRC32 mismatch")]
    HeaderCrc,
    #[error("GPT header field out of range: {0}")]
    Field(&'static str),
    #[error("GPT partition entry array CRC32 mismatch")]
    EntriesCrc,
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based, as the kernel numbers GPT partitions (entry index + 1).
    pub partn: u32,
    /// Unique partition GUID, lower case `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub guid: String,
    /// First sector in 512-byte units (sysfs `start`).
    pub start: u64,
}

/// CRC32 (IEEE 802.3, reflected, as the UEFI spec uses).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// A GUID in its on-disk mixed-endian form as text.
pub fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// A well-formed GUID text (any case), returned in lower case.
pub fn parse_guid(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if groups.len() != lens.len()
        || groups
            .iter()
            .zip(lens)
            .any(|(g, l)| g.len() != l || !g.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Where the entry array is and how big, from the header sector.
pub struct Header {
    pub entries_lba: u64,
    pub count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

/// Parses and checks the primary header (the sector at LBA 1).
pub fn parse_header(sector: &[u8]) -> Result<Header, GptError> {
    if sector.get(0..8) != Some(b"EFI PART") {
        return Err(GptError::NoHeader);
    }
    let size = u32_at(sector, 12).ok_or(GptError::NoHeader)?;
    let size = usize::try_from(size).map_err(|_| GptError::Field("header size"))?;
    if !(92..=sector.len()).contains(&size) {
        return Err(GptError::Field("header size"));
    }
    let want = u32_at(sector, 16).ok_or(GptError::NoHeader)?;
    let mut h = sector.get(..size).ok_or(GptError::NoHeader)?.to_vec();
    h.get_mut(16..20)
        .ok_or(GptError::NoHeader)?
        .copy_from_slice(&[0; 4]);
    if crc32(&h) != want {
        return Err(GptError::HeaderCrc);
    }
    let header = Header {
        entries_lba: u64_at(sector, 72).ok_or(GptError::NoHeader)?,
        count: u32_at(sector, 80).ok_or(GptError::NoHeader)?,
        entry_size: u32_at(sector, 84).ok_or(GptError::NoHeader)?,
        entries_crc: u32_at(sector, 88).ok_or(GptError::NoHeader)?,
    };
    if header.count == 0 || header.count > MAX_ENTRIES {
        return Err(GptError::Field("number of entries"));
    }
    if header.entry_size < 128
        || header.entry_size > MAX_ENTRY_SIZE
        || !header.entry_size.is_multiple_of(128)
    {
        return Err(GptError::Field("entry size"));
    }
    if header.entries_lba < 2 {
        return Err(GptError::Field("entry array LBA"));
    }
    Ok(header)
}

/// Parses the entry array (checked against the header's CRC); `lbs` is the
/// disk's logical block size in bytes.
pub fn parse_entries(h: &Header, array: &[u8], lbs: u64) -> Result<Vec<Entry>, GptError> {
    let len = (h.count as usize) * (h.entry_size as usize);
    let array = array
        .get(..len)
        .ok_or(GptError::Field("entry array length"))?;
    if crc32(array) != h.entries_crc {
        return Err(GptError::EntriesCrc);
    }
    let mut out = Vec::new();
    for (i, e) in array.chunks_exact(h.entry_size as usize).enumerate() {
        let Some(type_guid) = e.get(0..16) else {
            continue;
        };
        if type_guid.iter().all(|&b| b == 0) {
            continue; // unused entry
        }
        let Some(guid) = e.get(16..32).and_then(|g| <&[u8; 16]>::try_from(g).ok()) else {
            continue;
        };
        let first = u64_at(e, 32).unwrap_or(0);
        out.push(Entry {
            partn: u32::try_from(i + 1).unwrap_or(u32::MAX),
            guid: guid_text(guid),
            start: first.saturating_mul(lbs / 512),
        });
    }
    Ok(out)
}

/// The child's output line for an entry.
pub fn line(e: &Entry) -> String {
    format!("{} {} {}", e.partn, e.guid, e.start)
}

/// Parses the child's output (lines it did not write are skipped).
pub fn parse_output(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let partn = w.next()?.parse().ok()?;
            let guid = parse_guid(w.next()?)?;
            let start = w.next()?.parse().ok()?;
            w.next().is_none().then_some(Entry { partn, guid, start })
        })
        .collect()
}

/// Up to `len` bytes of `f` from `off` (fewer at its end).
pub(crate) fn read_at(f: &mut std::fs::File, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(off))?;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read(buf.get_mut(n..).unwrap_or(&mut [])) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Reads and parses the GPT of the block device (or image file) `dev`.
pub fn read(dev: &Path, lbs: u64) -> Result<Vec<Entry>, GptError> {
    let rd = |e: std::io::Error| GptError::Read {
        path: dev.display().to_string(),
        reason: e.to_string(),
    };
    let lbs = if [512, 1024, 2048, 4096].contains(&lbs) {
        lbs
    } else {
        return Err(GptError::Field("logical block size"));
    };
    let mut f = std::fs::File::open(dev).map_err(rd)?;
    let sector = read_at(&mut f, lbs, lbs as usize).map_err(rd)?;
    let h = parse_header(&sector)?;
    let len = (h.count as usize) * (h.entry_size as usize);
    let off = h
        .entries_lba
        .checked_mul(lbs)
        .ok_or(GptError::Field("entry array LBA"))?;
    let array = read_at(&mut f, off, len).map_err(rd)?;
    parse_entries(&h, &array, lbs)
}

/// Entry point of `airlock-init gpt-parts DISK`.
pub fn main_from_args(args: &[String]) -> ExitCode {
    let [disk] = args else {
        eprintln!("airlock-init: {}", GptError::Usage);
        return ExitCode::from(2);
    };
    if disk.is_empty() || !disk.chars().all(|c| c.is_ascii_alphanumeric()) {
        eprintln!("airlock-init: {}", GptError::Usage);
        return ExitCode::from(2);
    }
    let lbs = std::fs::read_to_string(
        Path::new("/sys/block")
            .join(disk)
            .join("queue/logical_block_size"),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(512);
    match read(&Path::new("/dev").join(disk), lbs) {
        Ok(entries) => {
            for e in &entries {
                println!("{}", line(e));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlock-init: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_known_input() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guids() {
        let b = [
            0x4c, 0xa4, 0x16, 0x0e, 0x4c, 0x72, 0xb1, 0x40, 0xbf, 0xfd, 0x7e, 0x46, 0x64, 0x5b,
            0x45, 0x27,
        ];
        assert_eq!(guid_text(&b), "0e16a44c-724c-40b1-bffd-7e46645b4527");
        assert_eq!(
            parse_guid("0E16A44C-724C-40B1-BFFD-7E46645B4527").as_deref(),
            Some("0e16a44c-724c-40b1-bffd-7e46645b4527")
        );
        for bad in [
            "",
            "0e16a44c724c40b1bffd7e46645b4527",
            "0e16a44c-724c-40b1-bffd-7e46645b452g",
            "0e16a44c-724c-40b1-bffd-7e46645b45270",
        ] {
            assert_eq!(parse_guid(bad), None, "{bad}");
        }
    }

    #[test]
    fn output_round_trip_and_garbage() {
        let e = Entry {
            partn: 2,
            guid: "0e16a44c-724c-40b1-bffd-7e46645b4527".into(),
            start: 526_336,
        };
        let text = format!("{}\nnot a line\n3 nope 9\n4 {} 1 extra\n", line(&e), e.guid);
        assert_eq!(parse_output(&text), vec![e]);
    }

    /// A disk image made by sgdisk, like build-image's.
    fn sgdisk_image(dir: &Path) -> std::path::PathBuf {
        let img = dir.join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        // sgdisk lives in /usr/sbin, which a non-login PATH may lack.
        let sgdisk = if Path::new("/usr/sbin/sgdisk").is_file() {
            "/usr/sbin/sgdisk"
        } else {
            "sgdisk"
        };
        let out = std::process::Command::new(sgdisk)
            .args([
                "--clear",
                "-n",
                "1:2048:+8M",
                "-t",
                "1:EF00",
                "-u",
                "1:f6df8968-40d2-48cd-b61c-e838db0717f0",
                "-c",
                "1:airlock-esp",
                "-n",
                "2:0:0",
                "-u",
                "2:0E16A44C-724C-40B1-BFFD-7E46645B4527",
                "-c",
                "2:airlock-state",
            ])
            .arg(&img)
            .output()
            .expect("sgdisk (gdisk package, scripts/setup-host)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        img
    }

    #[test]
    fn reads_a_table_made_by_sgdisk() {
        let t = tempfile::tempdir().unwrap();
        let img = sgdisk_image(t.path());
        let entries = read(&img, 512).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    partn: 1,
                    guid: "f6df8968-40d2-48cd-b61c-e838db0717f0".into(),
                    start: 2048
                },
                Entry {
                    partn: 2,
                    guid: "0e16a44c-724c-40b1-bffd-7e46645b4527".into(),
                    start: 2048 + 16384
                },
            ]
        );
    }

    #[test]
    fn damaged_tables_are_refused_with_reason() {
        use std::os::unix::fs::FileExt;
        let t = tempfile::tempdir().unwrap();
        // (byte offset to flip, reason)
        let cases: &[(u64, &str)] = &[
            (512, "no GPT header (signature 'EFI PART' missing)"),
            (512 + 40, "GPT header CRC32 mismatch"),
            (1024 + 60, "GPT partition entry array CRC32 mismatch"),
        ];
        for (off, reason) in cases {
            let img = sgdisk_image(t.path());
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&img)
                .unwrap();
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, *off).unwrap();
            f.write_all_at(&[b[0] ^ 0xff], *off).unwrap();
            let e = read(&img, 512).unwrap_err();
            assert_eq!(e.to_string(), *reason, "flip at {off}");
        }
        let e = read(Path::new("/nonexistent/disk"), 512).unwrap_err();
        assert!(e.to_string().starts_with("read /nonexistent/disk: "), "{e}");
        assert_eq!(
            read(Path::new("/dev/null"), 3).unwrap_err().to_string(),
            "GPT header field out of range: logical block size"
        );
    }
}
