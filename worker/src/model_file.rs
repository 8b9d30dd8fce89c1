//! Resolving and checking the model file before mistral.rs sees it.
//!
//! mistral.rs treats a model id that is not an existing local path as a
//! Hugging Face Hub repository and tries to download it. The worker therefore
//! canonicalises the path, requires a regular file that starts with the GGUF
//! magic, and refuses a file larger than the process's memory limit (the GGUF
//! is read into heap), all before building anything.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A local GGUF file, checked.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// Canonical path of the file.
    pub path: PathBuf,
    /// Canonical directory holding it (mistral.rs's "model id").
    pub dir: String,
    /// File name inside `dir`.
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
}

/// Errors of resolving the model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The path cannot be canonicalised (usually: it does not exist).
    #[error("model {path}: cannot resolve path: {source}")]
    Canonicalize {
        /// Path as given.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The path names a directory, device or other non-regular file.
    #[error("model {0}: not a regular file")]
    NotAFile(PathBuf),
    /// The path is not valid UTF-8 or has no parent directory.
    #[error("model {0}: path must be valid UTF-8 with a parent directory")]
    BadPath(PathBuf),
    /// Opening the file failed.
    #[error("model {path}: cannot open: {source}")]
    Open {
        /// Canonical path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading the first bytes failed.
    #[error("model {path}: cannot read header: {source}")]
    ReadHeader {
        /// Canonical path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("model {0}: not a GGUF file (bad magic)")]
    NotGguf(PathBuf),
    /// The file is larger than the address-space/data limit of this process.
    #[error("model {path}: file is {size} bytes, larger than the worker's memory limit of {limit} bytes")]
    TooLarge {
        /// Canonical path.
        path: PathBuf,
        /// File size.
        size: u64,
        /// Smallest of RLIMIT_AS and RLIMIT_DATA.
        limit: u64,
    },
}

/// Resolves `path` to a checked local GGUF file.
pub fn resolve(path: &Path) -> Result<ModelFile, ModelFileError> {
    let canon = std::fs::canonicalize(path).map_err(|source| ModelFileError::Canonicalize {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = File::open(&canon).map_err(|source| ModelFileError::Open {
        path: canon.clone(),
        source,
    })?;
    let meta = f.metadata().map_err(|source| ModelFileError::Open {
        path: canon.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ModelFileError::NotAFile(canon));
    }
    let mut magic = [0u8; 4];
    if let Err(source) = f.read_exact(&mut magic) {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            return Err(ModelFileError::NotGguf(canon));
        }
        return Err(ModelFileError::ReadHeader {
            path: canon,
            source,
        });
    }
    if &magic != b"GGUF" {
        return Err(ModelFileError::NotGguf(canon));
    }
    let size = meta.len();
    if let Some(limit) = memory_limit() {
        if size >= limit {
            return Err(ModelFileError::TooLarge {
                path: canon,
                size,
                limit,
            });
        }
    }
    let (Some(dir), Some(file_name)) = (
        canon.parent().and_then(Path::to_str),
        canon.file_name().and_then(|n| n.to_str()),
    ) else {
        return Err(ModelFileError::BadPath(canon));
    };
    Ok(ModelFile {
        dir: dir.to_string(),
        file_name: file_name.to_string(),
        size,
        path: canon.clone(),
    })
}

/// The smallest finite soft limit of RLIMIT_AS and RLIMIT_DATA, if any.
fn memory_limit() -> Option<u64> {
    use rustix::process::{getrlimit, Resource};
    [Resource::As, Resource::Data]
        .into_iter()
        .filter_map(|r| getrlimit(r).current)
        .min()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_is_refused_with_reason() {
        let err = resolve(Path::new("/nonexistent/org/model.gguf")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model /nonexistent/org/model.gguf: cannot resolve path: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let err = resolve(d.path()).unwrap_err();
        assert!(err.to_string().ends_with(": not a regular file"), "{err}");
    }

    #[test]
    fn non_gguf_and_short_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in [("a.gguf", &b"PK\x03\x04 zip"[..]), ("b.gguf", b"GG")] {
            let p = d.path().join(name);
            std::fs::write(&p, body).unwrap();
            let err = resolve(&p).unwrap_err();
            assert!(
                err.to_string().ends_with(": not a GGUF file (bad magic)"),
                "{err}"
            );
        }
    }

    #[test]
    fn good_file_resolves_to_canonical_dir_and_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("m.gguf"), b"GGUF\x03\0\0\0").unwrap();
        let m = resolve(&d.path().join("sub/../m.gguf")).unwrap();
        assert_eq!(m.file_name, "m.gguf");
        assert_eq!(Path::new(&m.dir), std::fs::canonicalize(d.path()).unwrap());
        assert_eq!(m.size, 8);
    }
}
