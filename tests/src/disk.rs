//! Writable copies of disk images, for tests whose writes must persist
//! across a reboot (a second [`Vm`](crate::Vm) booting the same file).
//!
//! `out/airlock.img` itself is only ever opened with `snapshot=on`; a test
//! that needs persistence boots a sparse copy ([`DiskCopy`]) with
//! [`VmConfig::with_writable_disk`](crate::VmConfig::with_writable_disk).
//! A provisioned image can be made once and copied per test the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Failures of copying a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("creating the directory {path} for disk copies failed: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running cp to copy {from} failed: {source}")]
    Spawn {
        from: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cp --sparse=always {from} {to} exited with {status}: {stderr}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("searching {path} for a marker failed: {source}")]
    Scan {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Size of the windows [`find_marker`] reads.
pub const SCAN_CHUNK: usize = 8 << 20;

/// The offset of the first `marker` in the (raw, possibly multi-GiB and
/// sparse) image `path`, or `None`. Reads [`SCAN_CHUNK`] windows that
/// overlap by `marker.len() - 1` bytes, so a marker across two windows is
/// found; skips holes (`SEEK_DATA`/`SEEK_HOLE`) unless the marker holds a
/// zero byte (a hole reads as zeros), and reads everything where the file
/// system cannot tell holes.
pub fn find_marker(path: &Path, marker: &[u8]) -> Result<Option<u64>, DiskError> {
    use rustix::fs::SeekFrom;
    use std::os::unix::fs::FileExt as _;
    let err = |source| DiskError::Scan {
        path: path.to_owned(),
        source,
    };
    if marker.is_empty() {
        return Err(err(std::io::Error::other("empty marker")));
    }
    let pattern: String = marker.iter().map(|b| format!("\\x{b:02x}")).collect();
    let re = regex::bytes::RegexBuilder::new(&format!("(?-u){pattern}"))
        .unicode(false)
        .build()
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let f = std::fs::File::open(path).map_err(err)?;
    let len = f.metadata().map_err(err)?.len();
    let skip_holes = !marker.contains(&0);
    let overlap = marker.len() - 1;
    let mut buf = vec![0u8; SCAN_CHUNK + overlap];
    let mut pos = 0u64;
    while pos < len {
        // The next data region [start, end).
        let (start, end) = if skip_holes {
            match rustix::fs::seek(&f, SeekFrom::Data(pos)) {
                Ok(start) => {
                    let end = rustix::fs::seek(&f, SeekFrom::Hole(start)).unwrap_or(len);
                    (start, end.min(len))
                }
                // No data after pos.
                Err(rustix::io::Errno::NXIO) => break,
                // No hole support here: read it all.
                Err(_) => (pos, len),
            }
        } else {
            (pos, len)
        };
        let mut at = start;
        while at < end {
            let want = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
            let window = &mut buf[..want];
            f.read_exact_at(window, at).map_err(err)?;
            if let Some(m) = re.find(window) {
                return Ok(Some(at + m.start() as u64));
            }
            if at + want as u64 >= end {
                break;
            }
            at += SCAN_CHUNK as u64;
        }
        pos = end;
    }
    Ok(None)
}

/// Copies `from` to `to` keeping holes as holes (`cp --sparse=always`): a
/// 1 GiB image with ~35 MiB of data costs ~35 MiB and a fraction of a
/// second.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), DiskError> {
    let out = Command::new("cp")
        .arg("--sparse=always")
        .arg("--")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|source| DiskError::Spawn {
            from: from.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DiskError::Copy {
            from: from.to_owned(),
            to: to.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A test's own sparse copy of a disk image, in
/// `$TMPDIR/airlock-e2e/disks/<name>-<pid>.img`. Outlives the VMs that boot
/// it; removed on drop, except when the test is failing (or
/// `AIRLOCK_E2E_SHOW=1`), then kept for a post-mortem and its path printed.
#[derive(Debug)]
pub struct DiskCopy {
    path: PathBuf,
}

impl DiskCopy {
    /// Copies `image` (e.g. `Artifacts::disk_image()`, or a provisioned
    /// copy made earlier) for the test `name`.
    pub fn new(image: &Path, name: &str) -> Result<Self, DiskError> {
        let dir = std::env::temp_dir().join("airlock-e2e").join("disks");
        std::fs::create_dir_all(&dir).map_err(|source| DiskError::Dir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{name}-{}.img", std::process::id()));
        // A leftover of an earlier run with the same pid: cp overwrites it.
        copy_sparse(image, &path)?;
        Ok(DiskCopy { path })
    }

    /// Where the copy is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DiskCopy {
    fn drop(&mut self) {
        let show = std::env::var_os("AIRLOCK_E2E_SHOW").is_some_and(|v| v == "1");
        if std::thread::panicking() || show {
            eprintln!("disk copy kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// (file offset, raw size) of section `name` of the PE file `pe` (a UKI or
/// boot loader the test built; panics on anything else).
#[allow(clippy::panic)]
pub fn pe_section(pe: &[u8], name: &[u8]) -> (usize, usize) {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([pe[at], pe[at + 1]]));
    let u32_at =
        |at: usize| u32::from_le_bytes([pe[at], pe[at + 1], pe[at + 2], pe[at + 3]]) as usize;
    let coff = u32_at(0x3c) + 4;
    let table = coff + 20 + u16_at(coff + 16);
    (0..u16_at(coff + 2))
        .map(|i| table + 40 * i)
        .find(|e| pe[*e..*e + 8].split(|b| *b == 0).next() == Some(name))
        .map(|e| (u32_at(e + 20), u32_at(e + 16)))
        .unwrap_or_else(|| panic!("no {} section", String::from_utf8_lossy(name)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn copies_are_sparse_equal_and_removed_on_drop() {
        let dir = std::env::temp_dir().join(format!("airlock-e2e-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.img");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"GPT header", 512).unwrap();
        f.write_all_at(b"state", 40 << 20).unwrap();
        drop(f);
        let copy = DiskCopy::new(&src, "unit").unwrap();
        let path = copy.path().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&src).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "copy allocates {} bytes",
            meta.blocks() * 512
        );
        drop(copy);
        assert!(!path.exists(), "copy not removed");
        let err = copy_sparse(&dir.join("absent.img"), &dir.join("x.img")).unwrap_err();
        assert!(
            err.to_string().contains("absent.img"),
            "error names the file: {err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn markers_are_found_across_windows_and_in_sparse_files() {
        let dir = std::env::temp_dir().join(format!("airlock-e2e-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("img");
        let marker = b"AIRLOCK-MARKER-7f3a";
        let chunk = SCAN_CHUNK as u64;
        let m = marker.len() as u64;
        let g = 1u64 << 30;
        // (file size, data written from, marker at = what find_marker says;
        // the data region runs from `from` to the marker's end)
        let cases: &[(u64, u64, Option<u64>)] = &[
            // across the first and the second window boundary (windows
            // start at multiples of SCAN_CHUNK from the region's start)
            (3 * chunk, 0, Some(chunk - 7)),
            (3 * chunk, 0, Some(2 * chunk - 1)),
            // ends right at a boundary; starts right at one
            (3 * chunk, 0, Some(chunk - m)),
            (3 * chunk, 0, Some(2 * chunk)),
            // the very end of the file
            (3 * chunk, 0, Some(3 * chunk - m)),
            // a sparse 4 GiB file: an 8 MiB data region after a 3 GiB hole,
            // the marker across its first window boundary
            (4 * g, 3 * g, Some(3 * g + chunk - 3)),
            // two data regions, the marker in the second
            (4 * g, 2 * g, Some(3 * g + 5)),
            // nothing to find
            (4 * g, 0, None),
            (0, 0, None),
        ];
        for &(len, from, at) in cases {
            let f = std::fs::File::create(&img).unwrap();
            f.set_len(len).unwrap();
            if let Some(at) = at {
                let data = vec![0x5a; 1 << 20];
                let end = (at + m).min(from + (20 << 20));
                let mut o = from;
                while o < end {
                    let k = (end - o).min(1 << 20) as usize;
                    f.write_all_at(&data[..k], o).unwrap();
                    o += k as u64;
                }
                if at > end {
                    // the second region
                    f.write_all_at(&data, at & !4095).unwrap();
                }
                f.write_all_at(marker, at).unwrap();
            }
            // a decoy: the marker's first half only
            if len > 1 << 20 {
                f.write_all_at(&marker[..8], 4096).unwrap();
            }
            drop(f);
            let t = std::time::Instant::now();
            assert_eq!(find_marker(&img, marker).unwrap(), at, "{len} {at:?}");
            println!(
                "find_marker in {len} bytes ({} allocated): {} ms",
                std::fs::metadata(&img).unwrap().blocks() * 512,
                t.elapsed().as_millis()
            );
        }
        // a marker with a zero byte is also found in a hole-spanning spot
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"END", (32 << 20) - 3).unwrap();
        drop(f);
        assert_eq!(find_marker(&img, b"END\0\0").unwrap(), Some((32 << 20) - 3));
        assert!(find_marker(&img, b"").is_err());
        let err = find_marker(&dir.join("absent"), marker).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
