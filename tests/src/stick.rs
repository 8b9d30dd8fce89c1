//! USB stick images for hot-plug tests: small FAT images made with the
//! stock tools (`mkfs.vfat -C`, `mcopy`), like a stick prepared on a PC,
//! and read back with `mcopy` after the appliance wrote to them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Failures of making a stick image.
#[derive(Debug, thiserror::Error)]
pub enum StickError {
    #[error("running {tool} failed (install dosfstools/mtools with scripts/setup-host): {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} {args} exited with {status}: {stderr}")]
    Tool {
        tool: &'static str,
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("writing {path} failed: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading back {path} (copied off the stick) failed: {source}")]
    ReadBack {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn run(tool: &'static str, args: &[&str]) -> Result<(), StickError> {
    let out = Command::new(tool)
        .args(args)
        // mtools: do not refuse an image whose geometry looks odd (harmless
        // for the other tools).
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|source| StickError::Spawn { tool, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(StickError::Tool {
            tool,
            args: args.join(" "),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Makes a FAT stick image of `size_mib` MiB at `path` labelled `label`,
/// holding `files` (name, contents). A name may hold `/`: `batch/a.gpg`
/// lands in the directory `batch` (made once, with its parents).
pub fn make_vfat_stick(
    path: &Path,
    label: &str,
    size_mib: u32,
    files: &[(&str, &[u8])],
) -> Result<(), StickError> {
    if path.exists() {
        std::fs::remove_file(path).map_err(|source| StickError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    let p = path.display().to_string();
    let kib = (size_mib * 1024).to_string();
    // mkfs.vfat lives in /usr/sbin, which a non-login PATH may lack.
    let mkfs = if Path::new("/usr/sbin/mkfs.vfat").is_file() {
        "/usr/sbin/mkfs.vfat"
    } else {
        "mkfs.vfat"
    };
    run(mkfs, &["-C", "-n", label, &p, &kib])?;
    let mut made = BTreeSet::new();
    for (name, contents) in files {
        let name = name.trim_start_matches('/');
        let mut parent = String::new();
        for part in name
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent = if parent.is_empty() {
                part.to_owned()
            } else {
                format!("{parent}/{part}")
            };
            if made.insert(parent.clone()) {
                run("mmd", &["-i", &p, &format!("::/{parent}")])?;
            }
        }
        let staged = path.with_extension(format!("file-{}", name.replace('/', "_")));
        std::fs::write(&staged, contents).map_err(|source| StickError::Write {
            path: staged.clone(),
            source,
        })?;
        let dest = format!("::/{name}");
        let result = run("mcopy", &["-i", &p, &staged.display().to_string(), &dest]);
        let _ = std::fs::remove_file(&staged);
        result?;
    }
    Ok(())
}

/// Everything on a FAT stick image, read back on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StickContents {
    /// Every file: its path from the root (`/`-separated, as the long
    /// name), and its bytes.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Every directory, also empty ones (e.g. a half-written export the
    /// appliance must not leave).
    pub dirs: BTreeSet<String>,
}

/// Reads back every file and directory of the FAT image `image` (a
/// superfloppy as [`make_vfat_stick`] makes it) with `mcopy -s`, no root
/// and no loop device needed. Call it once the stick is pulled
/// ([`Vm::unplug_stick`](crate::Vm::unplug_stick)) or QEMU has exited, so
/// the guest's writes are all in the file. Uses (and removes) the scratch
/// directory `<image>.contents`.
pub fn read_vfat_stick(image: &Path) -> Result<StickContents, StickError> {
    let scratch = image.with_extension("contents");
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| StickError::ReadBack { path, source }
    };
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(read_err(&scratch))?;
    }
    std::fs::create_dir_all(&scratch).map_err(read_err(&scratch))?;
    let result = run(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &image.display().to_string(),
            "::/",
            &scratch.display().to_string(),
        ],
    )
    .and_then(|()| {
        let mut contents = StickContents::default();
        collect(&scratch, "", &mut contents)?;
        Ok(contents)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// One file of the FAT image `image`, by its path from the root
/// (`batch/a.answer.gpg`), read with `mcopy` to stdout; `None` when there
/// is no such file.
pub fn read_vfat_file(image: &Path, name: &str) -> Result<Option<Vec<u8>>, StickError> {
    let tool = "mcopy";
    let src = format!("::/{}", name.trim_start_matches('/'));
    let args = ["-n", "-i", &image.display().to_string(), &src, "-"];
    let out = Command::new(tool)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|source| StickError::Spawn { tool, source })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if out.status.success() {
        Ok(Some(out.stdout))
    } else if stderr.contains("not found") {
        Ok(None)
    } else {
        Err(StickError::Tool {
            tool,
            args: args.join(" "),
            status: out.status,
            stderr,
        })
    }
}

/// The paths of every file and directory (directories end in `/`) on the
/// FAT image `image`, from the root, sorted, without reading the files
/// (`mdir -/ -b`).
pub fn list_vfat_stick(image: &Path) -> Result<Vec<String>, StickError> {
    let tool = "mdir";
    let args = ["-/", "-b", "-i", &image.display().to_string(), "::/"];
    let out = Command::new(tool)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|source| StickError::Spawn { tool, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        // An empty root: mdir -b says `File "::/" not found` and fails.
        if stderr.contains("\"::/\" not found") {
            return Ok(Vec::new());
        }
        return Err(StickError::Tool {
            tool,
            args: args.join(" "),
            status: out.status,
            stderr,
        });
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("::/"))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    names.sort();
    Ok(names)
}

/// Adds the files and directories under `dir` (shown as `prefix`).
fn collect(dir: &Path, prefix: &str, into: &mut StickContents) -> Result<(), StickError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| StickError::ReadBack { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        let path = entry.path();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().map_err(read_err(&path))?.is_dir() {
            collect(&path, &format!("{name}/"), into)?;
            into.dirs.insert(name);
        } else {
            let bytes = std::fs::read(&path).map_err(read_err(&path))?;
            into.files.insert(name, bytes);
        }
    }
    Ok(())
}

/// Overwrites the volume label in the FAT boot sector of a stick image
/// with raw bytes (space-padded to 11), e.g. an ESC sequence mkfs.vfat
/// would refuse: what a hostile stick prepared by hand carries.
pub fn set_fat_boot_label(path: &Path, label: &[u8]) -> Result<(), StickError> {
    use std::os::unix::fs::FileExt;
    let write = |source| StickError::Write {
        path: path.to_owned(),
        source,
    };
    if label.len() > 11 {
        return Err(write(std::io::Error::other(
            "a FAT label has at most 11 bytes",
        )));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(write)?;
    let mut sector = [0u8; 512];
    f.read_exact_at(&mut sector, 0).map_err(write)?;
    // FAT32 keeps the label at 71, FAT12/16 at 43 (the type string follows it).
    let at = if &sector[82..87] == b"FAT32" { 71 } else { 43 };
    let mut field = [b' '; 11];
    field[..label.len()].copy_from_slice(label);
    f.write_all_at(&field, at).map_err(write)?;
    f.sync_all().map_err(write)
}

/// Makes a raw GPT disk image of `size_mib` MiB with `sgdisk`: one
/// partition per (name, type code as sgdisk takes it, unique GUID), each
/// 4 MiB, in order.
pub fn make_gpt_disk(
    path: &Path,
    size_mib: u64,
    partitions: &[(&str, &str, &str)],
) -> Result<(), StickError> {
    let f = std::fs::File::create(path).map_err(|source| StickError::Write {
        path: path.to_owned(),
        source,
    })?;
    f.set_len(size_mib << 20)
        .map_err(|source| StickError::Write {
            path: path.to_owned(),
            source,
        })?;
    let mut args: Vec<String> = vec!["--clear".into()];
    for (i, (name, code, guid)) in partitions.iter().enumerate() {
        let n = i + 1;
        args.extend([
            "-n".into(),
            format!("{n}:0:+4M"),
            "-t".into(),
            format!("{n}:{code}"),
            "-u".into(),
            format!("{n}:{guid}"),
            "-c".into(),
            format!("{n}:{name}"),
        ]);
    }
    args.push(path.display().to_string());
    // sgdisk lives in /usr/sbin, which a non-login PATH may lack.
    let sgdisk = if Path::new("/usr/sbin/sgdisk").is_file() {
        "/usr/sbin/sgdisk"
    } else {
        "sgdisk"
    };
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(sgdisk, &refs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_labelled_fat_image_with_files() {
        let dir = std::env::temp_dir().join(format!("airlock-e2e-stick-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("stick.img");
        make_vfat_stick(&img, "TESTSTICK", 16, &[("hello.txt", b"hi\n")]).unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 16 * 1024 * 1024);
        let out = Command::new("mdir")
            .args(["-i", &img.display().to_string(), "::/"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("TESTSTICK"), "{listing}");
        assert!(listing.to_lowercase().contains("hello"), "{listing}");
        // A bad label is refused by mkfs.vfat and reported with its reason.
        let err = make_vfat_stick(&dir.join("bad.img"), "WAY_TOO_LONG_LABEL", 16, &[]).unwrap_err();
        assert!(matches!(err, StickError::Tool { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_and_directories_are_read_back() {
        let dir = std::env::temp_dir().join(format!("airlock-e2e-readback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("stick.img");
        make_vfat_stick(&img, "BACK", 16, &[("Airlock-Key.asc", b"-----BEGIN PGP")]).unwrap();
        let p = img.display().to_string();
        for d in ["::/audit-export-1", "::/audit-export-1/sub", "::/empty"] {
            run("mmd", &["-i", &p, d]).unwrap();
        }
        let staged = dir.join("entries");
        std::fs::write(&staged, b"{\"seq\":1}\n").unwrap();
        run(
            "mcopy",
            &[
                "-i",
                &p,
                &staged.display().to_string(),
                "::/audit-export-1/sub/entries.jsonl",
            ],
        )
        .unwrap();
        let got = read_vfat_stick(&img).unwrap();
        let files: Vec<(&str, &[u8])> = got
            .files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            files,
            [
                ("Airlock-Key.asc", &b"-----BEGIN PGP"[..]),
                ("audit-export-1/sub/entries.jsonl", &b"{\"seq\":1}\n"[..]),
            ]
        );
        let dirs: Vec<&str> = got.dirs.iter().map(String::as_str).collect();
        assert_eq!(dirs, ["audit-export-1", "audit-export-1/sub", "empty"]);
        assert!(
            !img.with_extension("contents").exists(),
            "scratch left behind"
        );
        // An empty stick reads back as nothing; a non-FAT file is an error.
        make_vfat_stick(&img, "EMPTY", 16, &[]).unwrap();
        assert_eq!(read_vfat_stick(&img).unwrap(), StickContents::default());
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let err = read_vfat_stick(&img).unwrap_err();
        assert!(matches!(err, StickError::Tool { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn raw_label_bytes_land_in_the_boot_sector() {
        let dir = std::env::temp_dir().join(format!("airlock-e2e-label-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("stick.img");
        make_vfat_stick(&img, "PLAIN", 16, &[]).unwrap();
        set_fat_boot_label(&img, b"T\x1b[2JEST").unwrap();
        let b = std::fs::read(&img).unwrap();
        let at = if &b[82..87] == b"FAT32" { 71 } else { 43 };
        assert_eq!(&b[at..at + 11], b"T\x1b[2JEST   ");
        assert!(set_fat_boot_label(&img, b"TWELVE BYTES").is_err());
        let disk = dir.join("disk.img");
        make_gpt_disk(
            &disk,
            16,
            &[(
                "airlock-state",
                "8300",
                "11111111-2222-4333-8444-555555555555",
            )],
        )
        .unwrap();
        let out = Command::new(if Path::new("/usr/sbin/sgdisk").is_file() {
            "/usr/sbin/sgdisk"
        } else {
            "sgdisk"
        })
        .args(["-i", "1", &disk.display().to_string()])
        .output()
        .unwrap();
        let info = String::from_utf8_lossy(&out.stdout);
        assert!(
            info.contains("11111111-2222-4333-8444-555555555555")
                && info.contains("'airlock-state'"),
            "{info}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_go_into_subdirectories_and_are_read_one_by_one() {
        let dir = std::env::temp_dir().join(format!("airlock-e2e-subdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("stick.img");
        let bin: &[u8] = b"\x85\x01\x0c\x03\x00\xff binary";
        make_vfat_stick(
            &img,
            "JOBS",
            16,
            &[
                ("Quarterly Report.gpg", bin),
                ("batch/a.gpg", b"A"),
                ("batch/b.gpg", b"B"),
                ("batch/deeper/c.gpg", b"C"),
            ],
        )
        .unwrap();
        assert_eq!(
            list_vfat_stick(&img).unwrap(),
            [
                "Quarterly Report.gpg",
                "batch/",
                "batch/a.gpg",
                "batch/b.gpg",
                "batch/deeper/",
                "batch/deeper/c.gpg",
            ]
        );
        // (name on the stick, what read_vfat_file gives)
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("Quarterly Report.gpg", Some(bin)),
            ("batch/b.gpg", Some(b"B")),
            ("/batch/deeper/c.gpg", Some(b"C")),
            ("batch/absent.gpg", None),
            ("absent/x", None),
        ];
        for (name, want) in cases {
            assert_eq!(
                read_vfat_file(&img, name).unwrap().as_deref(),
                *want,
                "{name}"
            );
        }
        assert_eq!(read_vfat_stick(&img).unwrap().files.len(), 4);
        make_vfat_stick(&img, "EMPTY", 16, &[]).unwrap();
        assert!(list_vfat_stick(&img).unwrap().is_empty());
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        assert!(list_vfat_stick(&img).is_err());
        assert!(read_vfat_file(&img, "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
