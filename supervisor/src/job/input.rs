//! Reading a document from a (read-only mounted) stick: a regular file,
//! not a symlink, at most the policy's size, read whole into memory with
//! its SHA-256.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use thiserror::Error;

/// Failing step of reading a document.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InputError {
    #[error("no file {0} on the stick; see 'usb'")]
    Missing(String),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("refused: {name} is {size} bytes, more than the limit of {max} bytes (policy job_max_input_bytes)")]
    TooLarge { name: String, size: u64, max: u64 },
    #[error("refused: {0} is empty")]
    Empty(String),
    #[error("read {name}: {reason} (stick pulled?)")]
    Read { name: String, reason: String },
}

/// A document as read.
pub struct Input {
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes, lower-case hex.
    pub sha256: String,
}

/// Reads `path` (shown as `shown`), at most `max` bytes.
pub fn read(path: &Path, shown: &str, max: u64) -> Result<Input, InputError> {
    let read_err = |e: std::io::Error| InputError::Read {
        name: shown.into(),
        reason: e.to_string(),
    };
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(InputError::Missing(shown.into()))
        }
        Err(e) => return Err(read_err(e)),
    };
    if !meta.file_type().is_file() {
        return Err(InputError::NotAFile(shown.into()));
    }
    if meta.len() > max {
        return Err(InputError::TooLarge {
            name: shown.into(),
            size: meta.len(),
            max,
        });
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(read_err)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.take(max + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > max {
        return Err(InputError::TooLarge {
            name: shown.into(),
            size: bytes.len() as u64,
            max,
        });
    }
    if bytes.is_empty() {
        return Err(InputError::Empty(shown.into()));
    }
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok(Input { bytes, sha256 })
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("big.gpg"), vec![1u8; 2000]).unwrap();
        std::fs::write(t.path().join("empty.gpg"), b"").unwrap();
        std::fs::create_dir(t.path().join("dir.gpg")).unwrap();
        std::os::unix::fs::symlink("big.gpg", t.path().join("link.gpg")).unwrap();
        let cases = [
            ("nope.gpg", "no file nope.gpg on the stick; see 'usb'"),
            ("big.gpg", "refused: big.gpg is 2000 bytes, more than the limit of 1024 bytes (policy job_max_input_bytes)"),
            ("empty.gpg", "refused: empty.gpg is empty"),
            ("dir.gpg", "dir.gpg is not a regular file"),
            ("link.gpg", "link.gpg is not a regular file"),
        ];
        for (name, want) in cases {
            let e = read(&t.path().join(name), name, 1024)
                .err()
                .map(|e| e.to_string());
            assert_eq!(e.as_deref(), Some(want), "{name}");
        }
        let ok = read(&t.path().join("big.gpg"), "big.gpg", 4096).unwrap();
        assert_eq!(ok.bytes.len(), 2000);
        assert_eq!(ok.sha256.len(), 64);
    }
}
