//! Read a file exactly once, hash it with SHA-256 and (optionally) write it
//! to a sink, with reading+writing and hashing overlapped on two threads.
//!
//! The source is read only up to its expected size, then probed for one more
//! byte: a source that ends early is "truncated", one that has more is
//! "grown". sha2 picks the SHA-NI / AVX2 code path at run time.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes per read/write.
pub const CHUNK: usize = 256 << 10;
/// Chunks in flight between the reader and the writer.
pub const DEPTH: usize = 8;

/// Errors of this module; each names the failing side.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("read source: {0}")]
    Read(#[source] io::Error),
    #[error("write staging copy: {0}")]
    Write(#[source] io::Error),
    #[error("truncated: source ended after {got} of {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    #[error("source is longer than the listed {expected} bytes")]
    Grew { expected: u64 },
    #[error("reader thread failed")]
    Thread,
}

/// Reads `expected` bytes from `src` once; returns their SHA-256. With a
/// sink, every byte is also written to it. `progress` gets byte counts.
pub fn stream<R: Read>(
    src: &mut R,
    expected: u64,
    sink: Option<&mut File>,
    progress: &mut dyn FnMut(u64),
) -> Result<[u8; 32], StreamError> {
    stream_also(src, expected, sink, None, progress)
}

/// [`stream`], also feeding every byte read to `also` (the SHA-256 of a
/// file joined from parts, computed across the parts' streams). With a
/// sink, `also` is updated on the reading thread while the other thread
/// hashes the part, so the two hashes run in parallel.
pub fn stream_also<R: Read>(
    src: &mut R,
    expected: u64,
    sink: Option<&mut File>,
    mut also: Option<&mut Sha256>,
    progress: &mut dyn FnMut(u64),
) -> Result<[u8; 32], StreamError> {
    match sink {
        None => {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; CHUNK];
            let mut remaining = expected;
            while remaining > 0 {
                let n = fill(src, &mut buf, remaining, expected)?;
                hasher.update(&buf[..n]);
                if let Some(a) = also.as_deref_mut() {
                    a.update(&buf[..n]);
                }
                remaining -= n as u64;
                progress(n as u64);
            }
            probe_end(src, expected)?;
            Ok(hasher.finalize().into())
        }
        Some(sink) => stream_to(src, expected, sink, also, progress),
    }
}

fn stream_to<R: Read>(
    src: &mut R,
    expected: u64,
    sink: &mut File,
    also: Option<&mut Sha256>,
    progress: &mut dyn FnMut(u64),
) -> Result<[u8; 32], StreamError> {
    // This thread reads and writes each chunk; a second thread hashes it.
    // Both halves cost about the same, so on two cores the import runs at
    // about the speed of hashing alone.
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(DEPTH);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(DEPTH + 1);
    let chunks = usize::try_from(expected.div_ceil(CHUNK as u64)).unwrap_or(DEPTH);
    for _ in 0..chunks.clamp(1, DEPTH + 1) {
        if free_tx.send(vec![0u8; CHUNK]).is_err() {
            return Err(StreamError::Thread);
        }
    }
    std::thread::scope(|s| {
        let hasher = s.spawn(move || hash_side(full_rx, free_tx));
        let copied = copy_side(src, expected, sink, also, &full_tx, &free_rx, progress);
        drop(full_tx);
        let digest = hasher.join().map_err(|_| StreamError::Thread)?;
        copied?;
        Ok(digest)
    })
}

fn hash_side(full_rx: Receiver<(Vec<u8>, usize)>, free_tx: SyncSender<Vec<u8>>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (buf, n) in full_rx.iter() {
        hasher.update(&buf[..n]);
        // The copier may already be done with all its chunks.
        let _ = free_tx.send(buf);
    }
    hasher.finalize().into()
}

fn copy_side<R: Read>(
    src: &mut R,
    expected: u64,
    sink: &mut File,
    mut also: Option<&mut Sha256>,
    full_tx: &SyncSender<(Vec<u8>, usize)>,
    free_rx: &Receiver<Vec<u8>>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), StreamError> {
    let mut remaining = expected;
    while remaining > 0 {
        let mut buf = free_rx.recv().map_err(|_| StreamError::Thread)?;
        let n = fill(src, &mut buf, remaining, expected)?;
        sink.write_all(&buf[..n]).map_err(StreamError::Write)?;
        if let Some(a) = also.as_deref_mut() {
            a.update(&buf[..n]);
        }
        remaining -= n as u64;
        progress(n as u64);
        full_tx.send((buf, n)).map_err(|_| StreamError::Thread)?;
    }
    probe_end(src, expected)
}

/// Fills `buf` with up to `min(buf.len(), remaining)` bytes; fewer only at EOF (→ truncated).
fn fill<R: Read>(
    src: &mut R,
    buf: &mut [u8],
    remaining: u64,
    expected: u64,
) -> Result<usize, StreamError> {
    let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
    let mut filled = 0;
    while filled < want {
        match src.read(&mut buf[filled..want]) {
            Ok(0) => {
                return Err(StreamError::Truncated {
                    expected,
                    got: expected - remaining + filled as u64,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StreamError::Read(e)),
        }
    }
    Ok(filled)
}

/// After the listed size, the source must be at its end.
fn probe_end<R: Read>(src: &mut R, expected: u64) -> Result<(), StreamError> {
    let mut one = [0u8; 1];
    loop {
        match src.read(&mut one) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(StreamError::Grew { expected }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StreamError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn file_with(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4099) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        (f, data)
    }

    #[test]
    fn copies_and_hashes() {
        for len in [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 5] {
            let (f, data) = file_with(len);
            let mut src = File::open(f.path()).unwrap();
            let mut out = tempfile::tempfile().unwrap();
            let mut seen = 0;
            let h = stream(&mut src, len as u64, Some(&mut out), &mut |n| seen += n).unwrap();
            assert_eq!(h, <[u8; 32]>::from(Sha256::digest(&data)));
            assert_eq!(seen, len as u64);
            let mut back = Vec::new();
            use std::io::Seek;
            out.rewind().unwrap();
            out.read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
            let mut src = File::open(f.path()).unwrap();
            assert_eq!(stream(&mut src, len as u64, None, &mut |_| {}).unwrap(), h);
        }
    }

    #[test]
    fn truncated_and_grown() {
        let (f, _) = file_with(CHUNK + 10);
        for sink in [false, true] {
            let mut out = tempfile::tempfile().unwrap();
            let mut src = File::open(f.path()).unwrap();
            let e = stream(
                &mut src,
                CHUNK as u64 + 11,
                sink.then_some(&mut out),
                &mut |_| {},
            )
            .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "truncated: source ended after {} of {} bytes",
                    CHUNK + 10,
                    CHUNK + 11
                )
            );
            let mut src = File::open(f.path()).unwrap();
            let e = stream(
                &mut src,
                CHUNK as u64 + 9,
                sink.then_some(&mut out),
                &mut |_| {},
            )
            .unwrap_err();
            assert!(matches!(e, StreamError::Grew { .. }), "{e}");
        }
    }
}
