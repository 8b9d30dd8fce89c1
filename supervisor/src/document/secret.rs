//! The two secrets a job handles outside the key: the session key and the
//! plaintext. Both live in [`Zeroizing`] buffers, so they are wiped when
//! dropped, and neither prints its bytes in `Debug`.

use pgp::composed::PlainSessionKey;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use zeroize::Zeroizing;

/// A v3 PKESK's session key: the symmetric algorithm id and the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey {
    /// OpenPGP symmetric algorithm id (RFC 9580 §9.3), e.g. 9 = AES-256.
    pub algo: u8,
    /// The key, wiped on drop.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("algo", &self.algo)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SessionKey {
    /// rPGP's form, for decryption.
    pub fn to_plain(&self) -> PlainSessionKey {
        PlainSessionKey::V3_4 {
            sym_alg: SymmetricKeyAlgorithm::from(self.algo),
            key: self.key.as_slice().into(),
        }
    }
}

/// Decrypted document text, wiped on drop. Grows by copying into a fresh
/// zeroizing buffer, so no stale copy of the text is left in freed memory
/// by our own reads.
#[derive(Default)]
pub struct Plaintext {
    buf: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext({} bytes)", self.buf.len())
    }
}

impl Plaintext {
    /// Empty, with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: Zeroizing::new(Vec::with_capacity(cap)),
        }
    }

    /// Appends `bytes`; when the buffer must grow, the old one is wiped.
    pub fn extend(&mut self, bytes: &[u8]) {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(self.buf.capacity() * 2)));
            bigger.extend_from_slice(&self.buf);
            self.buf = bigger; // the old buffer is zeroized as it drops
        }
        self.buf.extend_from_slice(bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The text, once [`crate::document::open`] has checked it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.buf).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroize;

    /// A wrapper whose drop records what the zeroizing buffer held just
    /// after it was wiped: the test reads the bytes through a raw pointer
    /// into memory that is still allocated (the vector inside is cleared,
    /// not freed, before we look).
    #[test]
    fn session_key_and_plaintext_are_wiped() {
        let mut k = SessionKey {
            algo: 9,
            key: Zeroizing::new(vec![0xAA; 32]),
        };
        let p = k.key.as_ptr();
        k.key.zeroize();
        // SAFETY: `zeroize` on a Vec wipes and clears it but keeps its
        // allocation (capacity 32), so `p` still points at 32 owned bytes.
        let after = unsafe { std::slice::from_raw_parts(p, 32) };
        assert!(after.iter().all(|&b| b == 0));
        assert!(!format!("{k:?}").contains("170"), "{k:?}");

        let mut t = Plaintext::with_capacity(4);
        t.extend(b"secret");
        t.extend(b" more secret text");
        assert_eq!(t.as_str(), Some("secret more secret text"));
        assert_eq!(format!("{t:?}"), "Plaintext(23 bytes)");
        let p = t.buf.as_ptr();
        let n = t.buf.len();
        t.buf.zeroize();
        // SAFETY: as above, the allocation of `t.buf` is still alive.
        let after = unsafe { std::slice::from_raw_parts(p, n) };
        assert!(after.iter().all(|&b| b == 0));
    }

    /// The types hold their secrets in `Zeroizing`, whose `Drop` calls the
    /// same `zeroize` as above: checked here at the type level.
    #[test]
    fn the_buffers_are_zeroizing_types() {
        fn is_zeroizing<T: Zeroize>(_: &Zeroizing<T>) {}
        let k = SessionKey {
            algo: 9,
            key: Zeroizing::new(vec![1; 32]),
        };
        is_zeroizing(&k.key);
        is_zeroizing(&Plaintext::default().buf);
    }
}
