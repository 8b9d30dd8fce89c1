//! Pool of activation buffers: after the first calls, a matmul takes a buffer
//! big enough and gives it back, so the steady state allocates nothing.

use std::sync::Mutex;

/// Buffers kept for reuse (several matmuls can run at once).
const KEEP: usize = 8;

static POOL: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

/// A pooled buffer of at least `len` bytes starting at `align`; returned to
/// the pool on drop.
pub(super) struct ActBuffer {
    words: Vec<u64>,
    offset: usize,
    len: usize,
}

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u64>>> {
    // The pool holds plain vectors: a panic elsewhere cannot leave it torn.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

impl ActBuffer {
    /// `len` bytes aligned to `align` (a power of two).
    pub(super) fn take(len: usize, align: usize) -> Self {
        let need = (len + align).div_ceil(8);
        let mut words = {
            let mut p = pool();
            // The smallest buffer that fits, else the largest (grown below).
            let best = p
                .iter()
                .enumerate()
                .filter(|(_, w)| w.len() >= need)
                .min_by_key(|(_, w)| w.len())
                .map(|(i, _)| i)
                .or_else(|| {
                    p.iter()
                        .enumerate()
                        .max_by_key(|(_, w)| w.len())
                        .map(|(i, _)| i)
                });
            best.map(|i| p.swap_remove(i)).unwrap_or_default()
        };
        if words.len() < need {
            words.resize(need, 0);
        }
        let offset = words.as_ptr().cast::<u8>().align_offset(align);
        Self { words, offset, len }
    }

    /// The aligned bytes (contents left from earlier use).
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        let all = self.words.len() * 8;
        // SAFETY: the u64 allocation is viewed as `all` bytes; u8 has no
        // alignment or validity requirement and the borrow of `self` keeps
        // the vector alive and unaliased.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), all) };
        &mut bytes[self.offset..self.offset + self.len]
    }

    #[cfg(test)]
    pub(super) fn address(&self) -> usize {
        self.words.as_ptr() as usize
    }
}

impl Drop for ActBuffer {
    fn drop(&mut self) {
        let words = std::mem::take(&mut self.words);
        let mut p = pool();
        if p.len() < KEEP {
            p.push(words);
        } else if let Some(small) = p.iter_mut().min_by_key(|w| w.len()) {
            if small.len() < words.len() {
                *small = words;
            }
        }
    }
}
