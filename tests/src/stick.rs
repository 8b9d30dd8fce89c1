//! USB stick images for hot-plug tests: small FAT images made with the
//! stock tools (`mkfs.vfat -C`, `mcopy`), like a stick prepared on a PC.

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
}

fn run(tool: &'static str, args: &[&str]) -> Result<(), StickError> {
    let out = Command::new(tool)
        .args(args)
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
/// holding `files` (name, contents) in its root directory.
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
    for (name, contents) in files {
        let staged = path.with_extension(format!("file-{name}"));
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
}
