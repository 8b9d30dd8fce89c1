//! The state partition grows to fill its disk: the image is 1 GiB, the
//! disk a security team flashes it to may hold 500 GB, and the model store
//! should have that space.
//!
//! PID 1 never touches disk bytes itself: once the state partition is
//! chosen and mounted it runs `airlock-init grow-state DISK PARTN GUID
//! MOUNTPOINT` (with a timeout), which does three idempotent steps, every
//! boot:
//!
//! 1. **Table.** Reads the primary GPT with our own reader (`gpt.rs`: both
//!    CRC32s, bounded sizes), then with the `gpt` crate. Refuses unless
//!    partition PARTN is named `airlock-state`, has the GUID PID 1 bound
//!    to, and lies after every other partition. When the disk is larger
//!    than the table (the backup header is not on the last LBA, or the
//!    partition could gain at least [`THRESHOLD`]), the crate computes the
//!    new table: backup header on the last LBA, the partition ending on the
//!    last usable LBA aligned down to 1 MiB, the protective MBR covering
//!    the disk. The crate writes into a staging layer, not the disk; its
//!    result is checked with our reader (every byte of the entry array
//!    equal except the partition's last LBA, both headers' CRCs and
//!    fields) and then written in a fixed order: the backup array and
//!    header at the new end of the disk, flushed; then the primary header,
//!    array and MBR in one write, flushed.
//! 2. **Kernel.** If the kernel still knows the partition at its old size,
//!    `BLKPG_RESIZE_PARTITION` on the whole disk tells it the new one
//!    (`BLKRRPART` would fail: the partition is mounted).
//! 3. **File system.** If the partition is at least [`THRESHOLD`] larger
//!    than the ext4 on it (superblock block count), `EXT4_IOC_RESIZE_FS`
//!    on the mount point grows it online to the partition's size.
//!
//! What a power cut leaves: before the backup is flushed, the old table
//! (the new backup sectors lie beyond the old end, which nothing reads);
//! between that flush and the primary write, the old primary with its old
//! backup, still consistent; after the primary write, the new table with
//! an ext4 not yet grown, which the next boot grows (steps 2 and 3 run
//! whenever the partition is larger than what the kernel or the file
//! system has). The one unsafe moment is inside the single write of the
//! primary header and its entry array (two sectors, milliseconds): a cut
//! there can leave a primary whose array CRC does not match. The firmware
//! then boots from the backup (valid, already at the end); Linux without
//! `gpt` on its command line refuses such a disk, so the state partition
//! is not found and `status` says so. An ext4 resize is journalled: a cut
//! during it leaves the old or the new size.
//!
//! Output: `partition BEFORE AFTER` and `filesystem BEFORE AFTER` lines
//! (bytes; equal when nothing changed; the file system's as statvfs counts
//! them), each printed as soon as its step is done; a failure is one line
//! on stderr per failed step, naming it, and exit status 1.

use crate::gpt as ours;
use crate::mounts::STATE_PARTNAME;
use nix::errno::Errno;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use thiserror::Error;

const MIB: u64 = 1 << 20;
/// Less than this to gain is not worth a table rewrite or a resize.
pub const THRESHOLD: u64 = 16 * MIB;
/// Partitions end on a 1 MiB boundary (like build-image lays them out).
pub const ALIGN: u64 = MIB;
/// Entries per table rewritten (sgdisk's and the spec's default).
pub const ENTRIES: u32 = 128;

/// Why a step did not happen; each names the step.
#[derive(Debug, Error)]
pub enum GrowError {
    #[error("usage: airlock-init grow-state DISK PARTN GUID MOUNTPOINT")]
    Usage,
    #[error("find partition {partn} of {disk}: {reason}")]
    FindPartition {
        disk: String,
        partn: u32,
        reason: String,
    },
    #[error("read the partition table of {disk}: {reason}")]
    ReadTable { disk: String, reason: String },
    #[error("partition table of {disk}: {reason}; not rewritten")]
    Refused { disk: String, reason: String },
    #[error("compute the new partition table: {0}")]
    Compute(String),
    #[error("check the new partition table: {0}; nothing written")]
    Verify(String),
    #[error("write the partition table ({step}): {source}")]
    WriteTable {
        step: &'static str,
        source: io::Error,
    },
    #[error("tell the kernel the new size of {dev} (BLKPG_RESIZE_PARTITION): {errno}")]
    Blkpg { dev: String, errno: Errno },
    #[error("read the file system of {dev}: {reason}")]
    Superblock { dev: String, reason: String },
    #[error("check the mount point {mount}: {reason}")]
    Mount { mount: String, reason: String },
    #[error("grow the file system (EXT4_IOC_RESIZE_FS to {blocks} blocks): {errno}")]
    Resize { blocks: u64, errno: Errno },
}

/// A table's geometry, in logical blocks of `lbs` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub lbs: u64,
    /// Logical blocks on the disk.
    pub disk_lbas: u64,
    /// Logical blocks of one entry array.
    pub array_lbas: u64,
    /// Where the primary header says its backup is.
    pub backup_lba: u64,
    /// The partition's first and last LBA (inclusive).
    pub part_first: u64,
    pub part_last: u64,
}

/// What the table step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablePlan {
    /// The table already fills the disk.
    Fills,
    /// Backup header to `backup_lba`, last usable LBA `last_usable`, the
    /// partition ending at `part_last`.
    Grow {
        backup_lba: u64,
        last_usable: u64,
        part_last: u64,
    },
}

/// The table step's decision (pure).
pub fn plan_table(g: &Geometry) -> Result<TablePlan, String> {
    if g.lbs == 0 || !ALIGN.is_multiple_of(g.lbs) {
        return Err(format!("logical block size {} not supported", g.lbs));
    }
    let Some(backup_lba) = g.disk_lbas.checked_sub(1) else {
        return Err("empty disk".into());
    };
    if g.backup_lba > backup_lba {
        return Err(format!(
            "the disk ({} sectors) is smaller than its table (backup header at LBA {})",
            g.disk_lbas, g.backup_lba
        ));
    }
    let last_usable = backup_lba
        .checked_sub(g.array_lbas + 1)
        .ok_or("disk too small for a backup table")?;
    if g.part_last > last_usable || g.part_first > g.part_last {
        return Err(format!(
            "the partition (LBA {}..{}) is not inside the usable area (up to LBA {last_usable})",
            g.part_first, g.part_last
        ));
    }
    let align = ALIGN / g.lbs;
    let part_last = ((last_usable + 1) / align * align)
        .saturating_sub(1)
        .max(g.part_last);
    let gain = (part_last - g.part_last).saturating_mul(g.lbs);
    if g.backup_lba == backup_lba && gain < THRESHOLD {
        return Ok(TablePlan::Fills);
    }
    Ok(TablePlan::Grow {
        backup_lba,
        last_usable,
        part_last,
    })
}

/// The file-system step's decision (pure): the new block count, when the
/// partition (`part_bytes`) is at least [`THRESHOLD`] larger than the file
/// system (`fs_blocks` of `bsize` bytes).
pub fn plan_fs(part_bytes: u64, fs_blocks: u64, bsize: u64) -> Option<u64> {
    if bsize == 0 {
        return None;
    }
    let want = part_bytes / bsize;
    (want > fs_blocks && (want - fs_blocks).saturating_mul(bsize) >= THRESHOLD).then_some(want)
}

/// Sizes before and after a step, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub before: u64,
    pub after: u64,
}

impl Change {
    pub fn grew(&self) -> bool {
        self.after > self.before
    }
}

/// A disk seen through the writes the `gpt` crate makes: reads come from
/// the disk with the staged writes laid over them, writes only go to
/// memory. Lets our checks see the crate's table before the disk does,
/// and lets us choose the order in which it reaches the disk.
struct Staged<'a> {
    disk: &'a File,
    len: u64,
    pos: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for Staged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Staged({} bytes, {} writes)",
            self.len,
            self.writes.len()
        )
    }
}

impl Staged<'_> {
    /// `len` bytes at `off` as they will be once the writes are applied.
    fn read_final(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let end = off.saturating_add(len as u64).min(self.len);
        let n = usize::try_from(end.saturating_sub(off)).unwrap_or(0);
        if let Some(b) = buf.get_mut(..n) {
            self.disk.read_exact_at(b, off)?;
        }
        for (w_off, data) in &self.writes {
            let w_end = w_off.saturating_add(data.len() as u64);
            let (from, to) = ((*w_off).max(off), w_end.min(off + len as u64));
            if from >= to {
                continue;
            }
            let (d0, d1) = ((from - w_off) as usize, (to - w_off) as usize);
            let (b0, b1) = ((from - off) as usize, (to - off) as usize);
            if let (Some(dst), Some(src)) = (buf.get_mut(b0..b1), data.get(d0..d1)) {
                dst.copy_from_slice(src);
            }
        }
        buf.truncate(n);
        Ok(buf)
    }
}

impl Read for Staged<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.read_final(self.pos, buf.len())?;
        if let Some(dst) = buf.get_mut(..got.len()) {
            dst.copy_from_slice(&got);
        }
        self.pos += got.len() as u64;
        Ok(got.len())
    }
}

impl Write for Staged<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.pos.saturating_add(buf.len() as u64);
        if end > self.len {
            return Err(io::Error::other("write beyond the end of the disk"));
        }
        self.writes.push((self.pos, buf.to_vec()));
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Staged<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The parts of a header sector the checks compare.
#[derive(Debug, PartialEq, Eq)]
struct HeaderFields {
    current: u64,
    backup: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Vec<u8>,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
}

/// Parses (with CRC) and reads out a header sector.
fn header_fields(sector: &[u8]) -> Result<HeaderFields, String> {
    ours::parse_header(sector).map_err(|e| e.to_string())?;
    let f = || -> Option<HeaderFields> {
        Some(HeaderFields {
            current: u64_at(sector, 24)?,
            backup: u64_at(sector, 32)?,
            first_usable: u64_at(sector, 40)?,
            last_usable: u64_at(sector, 48)?,
            disk_guid: sector.get(56..72)?.to_vec(),
            entries_lba: u64_at(sector, 72)?,
            count: u32_at(sector, 80)?,
            entry_size: u32_at(sector, 84)?,
        })
    };
    f().ok_or_else(|| "short header".into())
}

/// The table step. `dev` is the whole disk (or an image file), `lbs` its
/// logical block size, `partn`/`want_guid` the state partition PID 1
/// bound to.
pub fn grow_table(dev: &Path, lbs: u64, partn: u32, want_guid: &str) -> Result<Change, GrowError> {
    let disk = dev.display().to_string();
    let read_err = |reason: String| GrowError::ReadTable {
        disk: disk.clone(),
        reason,
    };
    let refuse = |reason: String| GrowError::Refused {
        disk: disk.clone(),
        reason,
    };
    // Our reader first: both CRCs and bounded sizes, before the crate sees
    // a byte (it asserts on an entry size other than 128 and allocates
    // whatever the header asks for).
    let entries = ours::read(dev, lbs).map_err(|e| read_err(e.to_string()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| read_err(format!("open: {e}")))?;
    let len = (&file)
        .seek(SeekFrom::End(0))
        .map_err(|e| read_err(format!("size: {e}")))?;
    if len % lbs != 0 {
        return Err(refuse(format!(
            "disk size {len} is not a multiple of {lbs}"
        )));
    }
    let lbs_usize = usize::try_from(lbs).map_err(|_| read_err("block size".into()))?;
    let mut sector = vec![0u8; lbs_usize];
    file.read_exact_at(&mut sector, lbs)
        .map_err(|e| read_err(format!("primary header: {e}")))?;
    let old = header_fields(&sector).map_err(read_err)?;
    if old.count != ENTRIES || old.entry_size != 128 || old.entries_lba != 2 || old.current != 1 {
        return Err(refuse(format!(
            "{} entries of {} bytes at LBA {} (only the usual 128 x 128 at LBA 2 are rewritten)",
            old.count, old.entry_size, old.entries_lba
        )));
    }
    let array_len = (ENTRIES * 128) as usize;
    let mut old_array = vec![0u8; array_len];
    file.read_exact_at(&mut old_array, 2 * lbs)
        .map_err(|e| read_err(format!("entry array: {e}")))?;

    let lb = gpt::disk::LogicalBlockSize::try_from(lbs)
        .map_err(|_| refuse(format!("logical block size {lbs} not supported")))?;
    let staged = Staged {
        disk: &file,
        len,
        pos: 0,
        writes: Vec::new(),
    };
    let mut table = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .open_from_device(staged)
        .map_err(|e| read_err(e.to_string()))?;
    let parts: BTreeMap<u32, gpt::partition::Partition> = table.partitions().clone();
    // The crate writes used entries packed from the start of the array:
    // only a table without holes keeps its numbering.
    let n = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    if !parts.keys().copied().eq(1..=n) || parts.values().any(|p| !p.is_used()) {
        return Err(refuse(
            "partition entries are not numbered 1..N without gaps".into(),
        ));
    }
    let Some(part) = parts.get(&partn) else {
        return Err(refuse(format!("no partition {partn}")));
    };
    if part.name != STATE_PARTNAME {
        return Err(refuse(format!(
            "partition {partn} is named {:?}, not {STATE_PARTNAME}",
            airlock_formats::escape::text(&part.name)
        )));
    }
    let ours_entry = entries.iter().find(|e| e.partn == partn);
    let guid = part.part_guid.to_string();
    if ours_entry.map(|e| e.guid.as_str()) != Some(guid.as_str())
        || ours_entry.map(|e| e.start) != Some(part.first_lba.saturating_mul(lbs / 512))
    {
        return Err(read_err(
            "the gpt crate and our reader disagree about the table".into(),
        ));
    }
    if guid != want_guid {
        return Err(refuse(format!(
            "partition {partn} has GUID {guid}, not the state partition's {want_guid}"
        )));
    }
    if let Some((k, _)) = parts
        .iter()
        .find(|(k, p)| **k != partn && p.last_lba >= part.first_lba)
    {
        return Err(refuse(format!(
            "partition {partn} is not the last partition (partition {k} lies after it)"
        )));
    }
    let before = part
        .bytes_len(lb)
        .map_err(|e| refuse(format!("partition {partn}: {e}")))?;
    let g = Geometry {
        lbs,
        disk_lbas: len / lbs,
        array_lbas: (array_len as u64).div_ceil(lbs),
        backup_lba: old.backup,
        part_first: part.first_lba,
        part_last: part.last_lba,
    };
    let (backup_lba, last_usable, part_last) = match plan_table(&g).map_err(refuse)? {
        TablePlan::Fills => {
            return Ok(Change {
                before,
                after: before,
            })
        }
        TablePlan::Grow {
            backup_lba,
            last_usable,
            part_last,
        } => (backup_lba, last_usable, part_last),
    };

    // The crate computes the new table (into the staging layer).
    let mut new_parts = parts.clone();
    if let Some(p) = new_parts.get_mut(&partn) {
        p.last_lba = part_last;
    }
    let after = new_parts
        .get(&partn)
        .and_then(|p| p.bytes_len(lb).ok())
        .unwrap_or(before);
    let compute = |e: gpt::GptError| GrowError::Compute(e.to_string());
    table.update_partitions(new_parts).map_err(compute)?;
    table.write_inplace().map_err(compute)?;
    let mut staged = table.take_device();
    if let Ok(mut mbr) = gpt::mbr::ProtectiveMBR::from_disk(&mut staged, lb) {
        if let Some(mut r) = mbr.partition(0) {
            let size = u32::try_from(backup_lba).unwrap_or(u32::MAX);
            if r.os_type == 0xEE && r.lb_start == 1 && r.lb_size != u32::MAX && r.lb_size != size {
                r.lb_size = size;
                mbr.set_partition(0, r);
                mbr.update_conservative(&mut staged)
                    .map_err(|e| GrowError::Compute(format!("protective MBR: {e}")))?;
            }
        }
    }

    // Our checks of what the crate staged.
    let verify = |s: String| GrowError::Verify(s);
    let head_len = usize::try_from(old.first_usable.saturating_mul(lbs))
        .map_err(|_| verify("first usable LBA".into()))?;
    let tail_off = (last_usable + 1) * lbs;
    for (off, data) in &staged.writes {
        let end = off + data.len() as u64;
        if !(end <= head_len as u64 || (*off >= tail_off && end <= len)) {
            return Err(verify(format!(
                "a write at byte {off} lies outside the table areas"
            )));
        }
    }
    let head = staged
        .read_final(0, head_len)
        .map_err(|e| verify(e.to_string()))?;
    let tail_len = usize::try_from(len - tail_off).map_err(|_| verify("tail".into()))?;
    let tail = staged
        .read_final(tail_off, tail_len)
        .map_err(|e| verify(e.to_string()))?;
    check_new_table(
        &sector,
        &old_array,
        &head,
        &tail,
        lbs,
        partn,
        (backup_lba, last_usable, part_last),
    )
    .map_err(verify)?;

    // To the disk: the backup first (nothing points at it yet), then the
    // primary and the MBR in one write.
    let write =
        |step, r: io::Result<()>| r.map_err(|source| GrowError::WriteTable { step, source });
    write("backup table", file.write_all_at(&tail, tail_off))?;
    write("flush the backup table", file.sync_data())?;
    write("primary table", file.write_all_at(&head, 0))?;
    write("flush the primary table", file.sync_data())?;
    Ok(Change { before, after })
}

/// Checks the staged table against the old one: only the partition's last
/// LBA changed in the entry array, the primary header points at the new
/// backup, the backup mirrors it, CRCs are right.
fn check_new_table(
    old_header: &[u8],
    old_array: &[u8],
    head: &[u8],
    tail: &[u8],
    lbs: u64,
    partn: u32,
    (backup_lba, last_usable, part_last): (u64, u64, u64),
) -> Result<(), String> {
    let lbs_u = lbs as usize;
    let old = header_fields(old_header)?;
    let primary = header_fields(head.get(lbs_u..2 * lbs_u).ok_or("short head")?)
        .map_err(|e| format!("new primary header: {e}"))?;
    let want_primary = HeaderFields {
        current: 1,
        backup: backup_lba,
        last_usable,
        disk_guid: old.disk_guid.clone(),
        ..old
    };
    if primary != want_primary {
        return Err(format!(
            "new primary header {primary:?} is not {want_primary:?}"
        ));
    }
    let mut want_array = old_array.to_vec();
    let at = (partn as usize - 1) * 128 + 40;
    want_array
        .get_mut(at..at + 8)
        .ok_or("entry out of range")?
        .copy_from_slice(&part_last.to_le_bytes());
    let array = head
        .get(2 * lbs_u..2 * lbs_u + want_array.len())
        .ok_or("short head")?;
    if array != want_array.as_slice() {
        return Err("the new entry array differs in more than the partition's end".into());
    }
    let ph = ours::parse_header(head.get(lbs_u..2 * lbs_u).ok_or("short head")?)
        .map_err(|e| e.to_string())?;
    ours::parse_entries(&ph, array, lbs).map_err(|e| format!("new primary: {e}"))?;
    // The tail: backup array then backup header on the last LBA.
    let bh_off = tail.len().checked_sub(lbs_u).ok_or("short tail")?;
    let bsector = tail.get(bh_off..).ok_or("short tail")?;
    let backup = header_fields(bsector).map_err(|e| format!("new backup header: {e}"))?;
    let want_backup = HeaderFields {
        current: backup_lba,
        backup: 1,
        entries_lba: last_usable + 1,
        disk_guid: want_primary.disk_guid.clone(),
        ..want_primary
    };
    if backup != want_backup {
        return Err(format!(
            "new backup header {backup:?} is not {want_backup:?}"
        ));
    }
    let barray = tail.get(..want_array.len()).ok_or("short tail")?;
    let bh = ours::parse_header(bsector).map_err(|e| e.to_string())?;
    ours::parse_entries(&bh, barray, lbs).map_err(|e| format!("new backup: {e}"))?;
    if barray != want_array.as_slice() {
        return Err("the backup entry array differs from the primary".into());
    }
    Ok(())
}

/// `/sys/block/DISK/NAME` of partition `partn` (`loop0p2`, `sda2`).
pub fn partition_name(sys_block: &Path, disk: &str, partn: u32) -> Result<String, String> {
    let dir = sys_block.join(disk);
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let Ok(n) = std::fs::read_to_string(e.path().join("partition")) else {
            continue;
        };
        if n.trim().parse() == Ok(partn) {
            return Ok(e.file_name().to_string_lossy().into_owned());
        }
    }
    Err(format!("the kernel knows no partition {partn} on {disk}"))
}

fn sysfs_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `struct blkpg_partition` (linux/blkpg.h); offsets and sizes in bytes.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg` (linux/blkpg.h).
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// The kernel step: tells the kernel partition `partn` of the disk open as
/// `disk` now spans `start..start+length` bytes.
pub fn resize_partition(
    disk: &File,
    dev: &str,
    partn: u32,
    start: u64,
    length: u64,
) -> Result<(), GrowError> {
    let err = |errno| GrowError::Blkpg {
        dev: dev.to_string(),
        errno,
    };
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(|_| err(Errno::EOVERFLOW))?,
        length: i64::try_from(length).map_err(|_| err(Errno::EOVERFLOW))?,
        pno: libc::c_int::try_from(partn).map_err(|_| err(Errno::EINVAL))?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&raw mut part).cast(),
    };
    // SAFETY: `disk` is an open block device; `arg` is a valid
    // blkpg_ioctl_arg whose `data` points at `part`, a blkpg_partition
    // that lives until the call returns; the kernel only reads both.
    unsafe { blkpg(disk.as_raw_fd(), &arg) }.map_err(err)?;
    Ok(())
}

/// Block count and block size from an ext4 superblock (the 1024 bytes at
/// offset 1024 of the partition).
pub fn superblock(sb: &[u8]) -> Result<(u64, u64), String> {
    if sb.get(0x38..0x3A) != Some(&[0x53, 0xEF][..]) {
        return Err("no ext4 superblock".into());
    }
    let lo = u32_at(sb, 0x04).ok_or("short superblock")?;
    let log = u32_at(sb, 0x18).ok_or("short superblock")?;
    if log > 6 {
        return Err(format!("block size 1024 << {log}"));
    }
    let incompat = u32_at(sb, 0x60).ok_or("short superblock")?;
    let hi = if incompat & 0x80 != 0 {
        u32_at(sb, 0x150).ok_or("short superblock")?
    } else {
        0
    };
    Ok(((u64::from(hi) << 32) | u64::from(lo), 1024 << log))
}

fn statvfs_total(mount: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(mount).ok()?;
    Some(st.blocks().saturating_mul(st.fragment_size()))
}

/// The file-system step: grows the ext4 on `part` (mounted at `mount`) to
/// the partition's size. Sizes are statvfs's (what `status` shows).
pub fn grow_fs(part: &Path, mount: &Path) -> Result<Change, GrowError> {
    let dev = part.display().to_string();
    let mnt_err = |reason: String| GrowError::Mount {
        mount: mount.display().to_string(),
        reason,
    };
    let sb_err = |reason: String| GrowError::Superblock {
        dev: dev.clone(),
        reason,
    };
    let pm = std::fs::metadata(part).map_err(|e| sb_err(e.to_string()))?;
    let mm = std::fs::metadata(mount).map_err(|e| mnt_err(e.to_string()))?;
    if mm.dev() != pm.rdev() {
        return Err(mnt_err(format!("not the file system of {dev}")));
    }
    let fs = nix::sys::statfs::statfs(mount).map_err(|e| mnt_err(e.to_string()))?;
    if fs.filesystem_type() != nix::sys::statfs::EXT4_SUPER_MAGIC {
        return Err(mnt_err("not ext4".into()));
    }
    let mut f = File::open(part).map_err(|e| sb_err(e.to_string()))?;
    let part_bytes = f
        .seek(SeekFrom::End(0))
        .map_err(|e| sb_err(e.to_string()))?;
    let mut sb = vec![0u8; 1024];
    f.read_exact_at(&mut sb, 1024)
        .map_err(|e| sb_err(e.to_string()))?;
    let (blocks, bsize) = superblock(&sb).map_err(sb_err)?;
    let before = statvfs_total(mount).unwrap_or(0);
    let Some(want) = plan_fs(part_bytes, blocks, bsize) else {
        return Ok(Change {
            before,
            after: before,
        });
    };
    let dir = File::open(mount).map_err(|e| mnt_err(e.to_string()))?;
    // SAFETY: `dir` is an open file on the mounted ext4; the argument is a
    // pointer to a u64 that outlives the call, which the kernel only reads.
    unsafe { ext4_resize_fs(dir.as_raw_fd(), &want) }.map_err(|errno| GrowError::Resize {
        blocks: want,
        errno,
    })?;
    Ok(Change {
        before,
        after: statvfs_total(mount).unwrap_or(before),
    })
}

/// What the child reported (stdout lines and, on failure, stderr).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub partition: Option<Change>,
    pub filesystem: Option<Change>,
    /// The failed steps' reasons, one line.
    pub error: Option<String>,
}

/// Parses the child's stdout (lines it did not write are skipped).
pub fn parse_output(text: &str) -> Report {
    let mut r = Report::default();
    for l in text.lines() {
        let w: Vec<&str> = l.split(' ').collect();
        let [key, b, a] = w.as_slice() else { continue };
        let (Ok(before), Ok(after)) = (b.parse(), a.parse()) else {
            continue;
        };
        match *key {
            "partition" => r.partition = Some(Change { before, after }),
            "filesystem" => r.filesystem = Some(Change { before, after }),
            _ => {}
        }
    }
    r
}

/// Human size as the console shows it (`767.0 MiB`, `1.62 GiB`).
pub fn human(bytes: u64) -> String {
    airlock_formats::import::human_bytes(bytes)
}

impl Report {
    /// Whether anything grew (worth an audit entry).
    pub fn grew(&self) -> bool {
        self.partition.is_some_and(|c| c.grew()) || self.filesystem.is_some_and(|c| c.grew())
    }

    /// One line for the kernel log and the audit entry's detail, `None`
    /// when nothing grew and nothing failed.
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(c) = self.partition.filter(Change::grew) {
            parts.push(format!(
                "partition grown from {} to {}",
                human(c.before),
                human(c.after)
            ));
        }
        if let Some(c) = self.filesystem.filter(Change::grew) {
            parts.push(format!(
                "file system grown from {} to {}",
                human(c.before),
                human(c.after)
            ));
        }
        if let Some(e) = &self.error {
            parts.push(format!("FAILED: {e}"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The `state space` status value: `FREE free of TOTAL`, then what the
/// grow step did this boot: ` (grown from OLD at boot)` or
/// ` (not grown: REASON)`.
pub fn space_value(free: u64, total: u64, report: Option<&Report>) -> String {
    let mut s = format!("{} free of {}", human(free), human(total));
    match report {
        Some(Report { error: Some(e), .. }) => s.push_str(&format!(" (not grown: {e})")),
        Some(Report {
            filesystem: Some(c),
            ..
        }) if c.grew() => s.push_str(&format!(" (grown from {} at boot)", human(c.before))),
        _ => {}
    }
    s
}

/// Entry point of `airlock-init grow-state DISK PARTN GUID MOUNTPOINT`.
pub fn main_from_args(args: &[String]) -> ExitCode {
    let usage = || {
        eprintln!("airlock-init: {}", GrowError::Usage);
        ExitCode::from(2)
    };
    let [disk, partn, guid, mount] = args else {
        return usage();
    };
    let (Ok(partn), Some(guid)) = (partn.parse::<u32>(), ours::parse_guid(guid)) else {
        return usage();
    };
    let mount = PathBuf::from(mount);
    if disk.is_empty() || !disk.chars().all(|c| c.is_ascii_alphanumeric()) || !mount.is_absolute() {
        return usage();
    }
    let mut errors: Vec<String> = Vec::new();
    match run(disk, partn, &guid, &mount, &mut errors) {
        () if errors.is_empty() => ExitCode::SUCCESS,
        () => {
            eprintln!("airlock-init: {}", errors.join("; "));
            ExitCode::from(1)
        }
    }
}

fn run(disk: &str, partn: u32, guid: &str, mount: &Path, errors: &mut Vec<String>) {
    let sys_block = Path::new("/sys/block");
    let part = match partition_name(sys_block, disk, partn) {
        Ok(p) => p,
        Err(reason) => {
            errors.push(
                GrowError::FindPartition {
                    disk: disk.into(),
                    partn,
                    reason,
                }
                .to_string(),
            );
            return;
        }
    };
    let lbs = sysfs_u64(&sys_block.join(disk).join("queue/logical_block_size")).unwrap_or(512);
    let disk_dev = Path::new("/dev").join(disk);
    match grow_table(&disk_dev, lbs, partn, guid) {
        Ok(c) => println!("partition {} {}", c.before, c.after),
        Err(e) => errors.push(e.to_string()),
    }
    // The kernel's view: whenever the table's partition is larger (also
    // after a power cut between the table write and this step).
    let sys_part = sys_block.join(disk).join(&part);
    if let Err(e) = kernel_step(&disk_dev, &sys_part, &part, lbs, partn) {
        errors.push(e.to_string());
    }
    match grow_fs(&Path::new("/dev").join(&part), mount) {
        Ok(c) => println!("filesystem {} {}", c.before, c.after),
        Err(e) => errors.push(e.to_string()),
    }
}

/// Resizes the kernel's partition to the table's when the table's is larger.
fn kernel_step(
    disk_dev: &Path,
    sys_part: &Path,
    part: &str,
    lbs: u64,
    partn: u32,
) -> Result<(), GrowError> {
    let Ok(entries) = ours::read(disk_dev, lbs) else {
        return Ok(()); // the table step said why
    };
    let Some(e) = entries.iter().find(|e| e.partn == partn) else {
        return Ok(());
    };
    let (Some(start), Some(size)) = (
        sysfs_u64(&sys_part.join("start")),
        sysfs_u64(&sys_part.join("size")),
    ) else {
        return Err(GrowError::Blkpg {
            dev: part.into(),
            errno: Errno::ENOENT,
        });
    };
    if start != e.start {
        return Err(GrowError::Blkpg {
            dev: part.into(),
            errno: Errno::EINVAL,
        });
    }
    let Some(table_sectors) = table_size_512(disk_dev, lbs, partn) else {
        return Ok(());
    };
    if table_sectors <= size {
        return Ok(());
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk_dev)
        .map_err(|e| GrowError::Blkpg {
            dev: part.into(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    resize_partition(&f, part, partn, start * 512, table_sectors * 512)
}

/// Partition `partn`'s size in the primary table, in 512-byte units.
fn table_size_512(disk_dev: &Path, lbs: u64, partn: u32) -> Option<u64> {
    let f = File::open(disk_dev).ok()?;
    let mut sector = vec![0u8; usize::try_from(lbs).ok()?];
    f.read_exact_at(&mut sector, lbs).ok()?;
    let h = ours::parse_header(&sector).ok()?;
    let off = h
        .entries_lba
        .checked_mul(lbs)?
        .checked_add(u64::from(partn.checked_sub(1)?) * u64::from(h.entry_size))?;
    let mut e = [0u8; 48];
    f.read_exact_at(&mut e, off).ok()?;
    let (first, last) = (u64_at(&e, 32)?, u64_at(&e, 40)?);
    last.checked_sub(first)?
        .checked_add(1)?
        .checked_mul(lbs / 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(disk_mib: u64, backup_lba: u64, part_last: u64) -> Geometry {
        Geometry {
            lbs: 512,
            disk_lbas: disk_mib * 2048,
            array_lbas: 32,
            backup_lba,
            part_first: 526_336,
            part_last,
        }
    }

    #[test]
    fn table_plans() {
        // The image as built: 1 GiB, state up to 1 MiB before the end.
        let img_backup = 1024 * 2048 - 1;
        let img_last = 1023 * 2048 - 1;
        let cases: &[(&str, Geometry, Result<TablePlan, &str>)] = &[
            ("image as built", g(1024, img_backup, img_last), Ok(TablePlan::Fills)),
            (
                "flashed to 2 GiB",
                g(2048, img_backup, img_last),
                Ok(TablePlan::Grow {
                    backup_lba: 2048 * 2048 - 1,
                    last_usable: 2048 * 2048 - 34,
                    part_last: 2047 * 2048 - 1,
                }),
            ),
            (
                // the backup moves; the partition gains the 1 MiB that
                // held the old backup, not the half MiB past it
                "disk 512 KiB larger",
                Geometry {
                    disk_lbas: 1024 * 2048 + 1024,
                    ..g(1024, img_backup, img_last)
                },
                Ok(TablePlan::Grow {
                    backup_lba: 1024 * 2048 + 1023,
                    last_usable: 1024 * 2048 + 1023 - 33,
                    part_last: 1024 * 2048 - 1,
                }),
            ),
            (
                "backup at the end, 15 MiB free after the partition",
                g(1024, img_backup, img_last - 15 * 2048),
                Ok(TablePlan::Fills),
            ),
            (
                "backup at the end, 16 MiB free after the partition",
                g(1024, img_backup, img_last - 16 * 2048),
                Ok(TablePlan::Grow {
                    backup_lba: img_backup,
                    last_usable: img_backup - 33,
                    part_last: img_last,
                }),
            ),
            (
                "disk smaller than the table",
                g(512, img_backup, img_last),
                Err("the disk (1048576 sectors) is smaller than its table (backup header at LBA 2097151)"),
            ),
            (
                "partition beyond the usable area",
                g(1024, img_backup, img_backup),
                Err("the partition (LBA 526336..2097151) is not inside the usable area (up to LBA 2097118)"),
            ),
            (
                "4 KiB sectors, flashed to 2 GiB",
                Geometry {
                    lbs: 4096,
                    disk_lbas: 2048 * 256,
                    array_lbas: 4,
                    backup_lba: 1024 * 256 - 1,
                    part_first: 257 * 256,
                    part_last: 1023 * 256 - 1,
                },
                Ok(TablePlan::Grow {
                    backup_lba: 2048 * 256 - 1,
                    last_usable: 2048 * 256 - 6,
                    part_last: 2047 * 256 - 1,
                }),
            ),
            (
                "odd block size",
                Geometry {
                    lbs: 520,
                    ..g(1024, img_backup, img_last)
                },
                Err("logical block size 520 not supported"),
            ),
        ];
        for (name, geo, want) in cases {
            let got = plan_table(geo);
            assert_eq!(got, (*want).map_err(str::to_string), "{name}");
        }
    }

    #[test]
    fn fs_plans() {
        let cases: &[(u64, u64, u64, Option<u64>)] = &[
            // partition bytes, fs blocks, block size, new block count
            (1 << 30, (1 << 30) / 4096, 4096, None),
            (2 << 30, (1 << 30) / 4096, 4096, Some((2 << 30) / 4096)),
            ((1 << 30) + 15 * MIB, (1 << 30) / 4096, 4096, None),
            ((1 << 30) + 16 * MIB, (1 << 30) / 4096, 4096, Some(266_240)),
            // a partial last block is not counted
            (
                (1 << 30) + 16 * MIB + 100,
                (1 << 30) / 4096,
                4096,
                Some(266_240),
            ),
            // a file system larger than its partition is left alone
            (1 << 30, (2 << 30) / 1024, 1024, None),
            (1 << 30, 0, 0, None),
        ];
        for &(part, blocks, bsize, want) in cases {
            assert_eq!(
                plan_fs(part, blocks, bsize),
                want,
                "{part} {blocks} {bsize}"
            );
        }
    }

    #[test]
    fn superblock_fields() {
        let mut sb = vec![0u8; 1024];
        assert!(superblock(&sb).is_err());
        sb[0x38..0x3A].copy_from_slice(&[0x53, 0xEF]);
        sb[0x04..0x08].copy_from_slice(&262_144u32.to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(superblock(&sb), Ok((262_144, 4096)));
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(superblock(&sb), Ok(((1 << 32) + 262_144, 4096)));
        sb[0x18..0x1C].copy_from_slice(&7u32.to_le_bytes());
        assert!(superblock(&sb).is_err());
    }

    #[test]
    fn output_and_status_values() {
        let r = parse_output(
            "partition 804257792 1878999040\nnoise\nfilesystem 790000000 1850000000\nfilesystem x 1\n",
        );
        assert_eq!(
            r.partition,
            Some(Change {
                before: 804_257_792,
                after: 1_878_999_040
            })
        );
        assert!(r.grew());
        assert_eq!(
            r.summary().unwrap(),
            "partition grown from 767.0 MiB to 1.75 GiB; file system grown from 753.4 MiB to 1.72 GiB"
        );
        assert_eq!(
            space_value(1_739_461_754, 1_879_048_192, Some(&r)),
            "1.62 GiB free of 1.75 GiB (grown from 753.4 MiB at boot)"
        );
        assert_eq!(space_value(MIB, 2 * MIB, None), "1.0 MiB free of 2.0 MiB");
        let failed = Report {
            error: Some("grow the file system (EXT4_IOC_RESIZE_FS to 9 blocks): EIO".into()),
            ..Report::default()
        };
        assert_eq!(
            space_value(MIB, 2 * MIB, Some(&failed)),
            "1.0 MiB free of 2.0 MiB (not grown: grow the file system (EXT4_IOC_RESIZE_FS to 9 blocks): EIO)"
        );
        let same = parse_output("partition 5 5\nfilesystem 4 4\n");
        assert!(!same.grew());
        assert_eq!(same.summary(), None);
    }
}
