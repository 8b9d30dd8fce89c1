//! Locating the build outputs of `scripts/build-image` (the `out/` directory).
//!
//! The end-to-end tests never build the image themselves and never skip:
//! when an artefact is missing they fail with a reason naming the command
//! that makes it.

use std::path::{Path, PathBuf};

/// Failures to find the image artefacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{what} not found at {path}: run scripts/build-image first (or point AIRLOCK_OUT at a directory holding its outputs)")]
    Missing { what: &'static str, path: PathBuf },
    #[error("no initramfs (initramfs.cpio*) in {dir}: run scripts/build-image first (or point AIRLOCK_OUT at a directory holding its outputs)")]
    NoInitramfs { dir: PathBuf },
    #[error("reading {path} failed: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty: rebuild with scripts/build-image")]
    EmptyCmdline { path: PathBuf },
}

/// Preferred initramfs names, best first.
const INITRAMFS_NAMES: &[&str] = &[
    "initramfs.cpio.zst",
    "initramfs.cpio.xz",
    "initramfs.cpio.gz",
    "initramfs.cpio.lz4",
    "initramfs.cpio",
    "initramfs.img",
];

/// The `out/` directory: `$AIRLOCK_OUT`, else `<workspace>/out`.
pub fn out_dir() -> PathBuf {
    match std::env::var_os("AIRLOCK_OUT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::bundles::manifest_dir()
            .parent()
            .unwrap_or(Path::new("."))
            .join("out"),
    }
}

/// Paths of the image artefacts a test needs.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub dir: PathBuf,
}

impl Artifacts {
    /// The artefacts in [`out_dir`].
    pub fn locate() -> Self {
        Artifacts { dir: out_dir() }
    }

    fn require(&self, name: &str, what: &'static str) -> Result<PathBuf, ArtifactError> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(ArtifactError::Missing { what, path })
        }
    }

    /// The kernel (`out/bzImage`).
    pub fn kernel(&self) -> Result<PathBuf, ArtifactError> {
        self.require("bzImage", "kernel image (bzImage)")
    }

    /// The initramfs (`out/initramfs.cpio*`).
    pub fn initramfs(&self) -> Result<PathBuf, ArtifactError> {
        INITRAMFS_NAMES
            .iter()
            .map(|n| self.dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| ArtifactError::NoInitramfs {
                dir: self.dir.clone(),
            })
    }

    /// The kernel command line of the UKI (`out/cmdline`), trimmed.
    pub fn cmdline(&self) -> Result<String, ArtifactError> {
        let path = self.require("cmdline", "kernel command line (cmdline)")?;
        let text = std::fs::read_to_string(&path).map_err(|source| ArtifactError::Read {
            path: path.clone(),
            source,
        })?;
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            return Err(ArtifactError::EmptyCmdline { path });
        }
        Ok(line)
    }

    /// The GPT disk image (`out/airlock.img`).
    pub fn disk_image(&self) -> Result<PathBuf, ArtifactError> {
        self.require("airlock.img", "disk image (airlock.img)")
    }

    /// The unified kernel image (`out/airlock.efi`).
    pub fn uki(&self) -> Result<PathBuf, ArtifactError> {
        self.require("airlock.efi", "unified kernel image (airlock.efi)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_artifacts_name_the_build_command() {
        let dir = std::env::temp_dir().join(format!("airlock-e2e-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Artifacts { dir: dir.clone() };
        let err = a.kernel().unwrap_err().to_string();
        assert!(err.contains("run scripts/build-image first"), "{err}");
        assert!(err.contains("bzImage"), "{err}");
        let err = a.initramfs().unwrap_err().to_string();
        assert!(err.contains("run scripts/build-image first"), "{err}");

        std::fs::write(dir.join("cmdline"), "  \n").unwrap();
        let err = a.cmdline().unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(dir.join("cmdline"), "console=ttyS0\n  init_on_free=1\n").unwrap();
        assert_eq!(a.cmdline().unwrap(), "console=ttyS0 init_on_free=1");

        std::fs::write(dir.join("initramfs.cpio"), b"x").unwrap();
        std::fs::write(dir.join("initramfs.cpio.zst"), b"x").unwrap();
        assert!(a.initramfs().unwrap().ends_with("initramfs.cpio.zst"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
