//! The appliance's job numbers: one counter file on the state partition,
//! raised before a job starts (temp file, fsync, rename), so a number is
//! never given twice, even across a power cut.

use airlock_formats::fsutil;
use std::path::Path;

/// The counter's file under the state root.
pub const COUNTER_FILE: &str = "jobs.next";

/// Takes the next job number (1, 2, ...).
pub fn next(state_root: &Path) -> Result<u64, String> {
    let path = state_root.join(COUNTER_FILE);
    let n = match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("job counter {}: not a number", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
        Err(e) => return Err(format!("job counter {}: {e}", path.display())),
    };
    fsutil::write_atomic(state_root, COUNTER_FILE, format!("{}\n", n + 1).as_bytes())
        .map_err(|e| format!("job counter: {e}"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_rise() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(super::next(t.path()), Ok(1));
        assert_eq!(super::next(t.path()), Ok(2));
        std::fs::write(t.path().join(super::COUNTER_FILE), "x").unwrap();
        assert!(super::next(t.path()).is_err());
    }
}
