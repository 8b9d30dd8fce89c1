//! Strict reader of a GGUF file's header: only what a model bundle's
//! manifest needs (`general.architecture`, `<arch>.context_length`,
//! `tokenizer.chat_template`). Every other metadata value is skipped by its
//! type, with bounds checks; the tensor infos and data are never read.
//!
//! Layout (GGUF v2 and v3, little-endian): magic `GGUF`, u32 version, u64
//! tensor count, u64 metadata key/value count, then per key a string
//! (u64 length + UTF-8 bytes), a u32 value type and the value. Any input
//! gives a value or an error, never a panic, and at most
//! [`MAX_METADATA_BYTES`] are read.

use crate::escape;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// The file's first four bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";

// Limits (policy as data): far above any real model, low enough that a
// hostile header cannot make the reader allocate or loop without end.
/// Most tensors a header may declare (real models: a few thousand).
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata keys (real models: under 100).
pub const MAX_KEYS: u64 = 1 << 16;
/// Longest key, in bytes (keys are dotted ASCII names).
pub const MAX_KEY_LEN: u64 = 1 << 16;
/// Longest string value, in bytes (a chat template is a few KiB).
pub const MAX_STRING_LEN: u64 = 16 << 20;
/// Most elements of one array (vocabularies: up to ~256k tokens).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Most bytes of metadata read before giving up (real: a few MiB).
pub const MAX_METADATA_BYTES: u64 = 256 << 20;
/// Most `*.context_length` keys remembered until the architecture is known.
pub const MAX_CONTEXT_KEYS: usize = 16;

/// Key naming the architecture.
pub const KEY_ARCHITECTURE: &str = "general.architecture";
/// Suffix of the context length key (`<arch>.context_length`).
pub const CONTEXT_LENGTH_SUFFIX: &str = ".context_length";
/// Key of the chat template (Jinja text).
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Errors of this module; each names what was being read. Keys come from
/// the file and are escaped when shown.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("open GGUF file {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("read GGUF header: {0}")]
    Read(#[source] io::Error),
    #[error("GGUF header ends early (reading {what} at byte {at})")]
    Truncated { what: &'static str, at: u64 },
    #[error("not a GGUF file (it does not start with `GGUF`)")]
    Magic,
    #[error("GGUF version {0} is not supported (2 or 3)")]
    Version(u32),
    #[error("GGUF {what} count {count} is over the limit {max}")]
    Count {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("GGUF {what} length {len} is over the limit {max}")]
    Length {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("GGUF metadata is larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge,
    #[error("GGUF key at byte {at} is not UTF-8")]
    KeyEncoding { at: u64 },
    #[error("GGUF key {}: unknown value type {ty}", escape::text(key))]
    Type { key: String, ty: u32 },
    #[error("GGUF key {}: arrays of arrays are not supported", escape::text(key))]
    NestedArray { key: String },
    #[error("GGUF key {}: value is not {want}", escape::text(key))]
    Value { key: String, want: &'static str },
    #[error("GGUF key {} appears twice", escape::text(.0))]
    Duplicate(String),
    #[error("GGUF has more than {MAX_CONTEXT_KEYS} `*.context_length` keys")]
    ContextKeys,
}

type Result<T> = std::result::Result<T, GgufError>;

/// What the header says (each `None` when the key is absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GgufInfo {
    pub version: u32,
    pub tensor_count: u64,
    pub key_count: u64,
    pub architecture: Option<String>,
    /// `<architecture>.context_length`.
    pub context_length: Option<u64>,
    pub chat_template: Option<String>,
}

/// Value types of GGUF metadata.
mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Size in bytes of a fixed-size value type; `None` for string and array.
fn fixed_size(t: u32) -> Option<u64> {
    match t {
        ty::U8 | ty::I8 | ty::BOOL => Some(1),
        ty::U16 | ty::I16 => Some(2),
        ty::U32 | ty::I32 | ty::F32 => Some(4),
        ty::U64 | ty::I64 | ty::F64 => Some(8),
        _ => None,
    }
}

/// Reads the header of the GGUF file at `path`.
pub fn read_file(path: &Path) -> Result<GgufInfo> {
    let f = File::open(path).map_err(|source| GgufError::Open {
        path: escape::path(path),
        source,
    })?;
    read_header(BufReader::with_capacity(64 << 10, f))
}

/// Reads a GGUF header from `r` (which is read no further than the end of
/// the metadata).
pub fn read_header<R: Read>(r: R) -> Result<GgufInfo> {
    let mut s = Src { r, pos: 0 };
    let mut magic = [0u8; 4];
    s.exact(&mut magic, "magic")?;
    if &magic != MAGIC {
        return Err(GgufError::Magic);
    }
    let version = s.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = s.u64("tensor count")?;
    limit_count("tensor", tensor_count, MAX_TENSORS)?;
    let key_count = s.u64("key count")?;
    limit_count("metadata key", key_count, MAX_KEYS)?;
    let mut info = GgufInfo {
        version,
        tensor_count,
        key_count,
        ..GgufInfo::default()
    };
    let mut contexts: Vec<(String, u64)> = Vec::new();
    for _ in 0..key_count {
        let key = s.key()?;
        let t = s.u32("value type")?;
        if key == KEY_ARCHITECTURE || key == KEY_CHAT_TEMPLATE {
            if t != ty::STRING {
                return Err(GgufError::Value {
                    key,
                    want: "a string",
                });
            }
            let v = s.string_value(&key)?;
            let slot = if key == KEY_ARCHITECTURE {
                &mut info.architecture
            } else {
                &mut info.chat_template
            };
            if slot.replace(v).is_some() {
                return Err(GgufError::Duplicate(key));
            }
        } else if let Some(arch) = key.strip_suffix(CONTEXT_LENGTH_SUFFIX) {
            let v = s.unsigned(&key, t)?;
            if contexts.iter().any(|(a, _)| a == arch) {
                return Err(GgufError::Duplicate(key));
            }
            if contexts.len() >= MAX_CONTEXT_KEYS {
                return Err(GgufError::ContextKeys);
            }
            contexts.push((arch.to_owned(), v));
        } else {
            s.skip_value(&key, t)?;
        }
    }
    if let Some(arch) = &info.architecture {
        info.context_length = contexts
            .into_iter()
            .find(|(a, _)| a == arch)
            .map(|(_, v)| v);
    }
    Ok(info)
}

fn limit_count(what: &'static str, count: u64, max: u64) -> Result<()> {
    if count > max {
        Err(GgufError::Count { what, count, max })
    } else {
        Ok(())
    }
}

fn limit_len(what: &'static str, len: u64, max: u64) -> Result<()> {
    if len > max {
        Err(GgufError::Length { what, len, max })
    } else {
        Ok(())
    }
}

/// A reader that counts its position and stops at [`MAX_METADATA_BYTES`].
struct Src<R> {
    r: R,
    pos: u64,
}

impl<R: Read> Src<R> {
    /// Accounts for `n` more bytes about to be read.
    fn budget(&mut self, n: u64) -> Result<()> {
        match self.pos.checked_add(n) {
            Some(end) if end <= MAX_METADATA_BYTES => Ok(()),
            _ => Err(GgufError::TooLarge),
        }
    }

    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<()> {
        self.budget(buf.len() as u64)?;
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(GgufError::Truncated { what, at: self.pos })
            }
            Err(e) => Err(GgufError::Read(e)),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `len` bytes into a vector grown as data arrives (a claimed
    /// length is never allocated up front).
    fn bytes(&mut self, len: u64, what: &'static str) -> Result<Vec<u8>> {
        self.budget(len)?;
        let mut v = Vec::new();
        let got = (&mut self.r)
            .take(len)
            .read_to_end(&mut v)
            .map_err(GgufError::Read)?;
        self.pos += got as u64;
        if (got as u64) < len {
            return Err(GgufError::Truncated { what, at: self.pos });
        }
        Ok(v)
    }

    /// Reads and discards `len` bytes.
    fn skip(&mut self, len: u64, what: &'static str) -> Result<()> {
        self.budget(len)?;
        let got =
            io::copy(&mut (&mut self.r).take(len), &mut io::sink()).map_err(GgufError::Read)?;
        self.pos += got;
        if got < len {
            return Err(GgufError::Truncated { what, at: self.pos });
        }
        Ok(())
    }

    fn key(&mut self) -> Result<String> {
        let at = self.pos;
        let len = self.u64("key length")?;
        limit_len("key", len, MAX_KEY_LEN)?;
        let b = self.bytes(len, "key")?;
        String::from_utf8(b).map_err(|_| GgufError::KeyEncoding { at })
    }

    fn string_value(&mut self, key: &str) -> Result<String> {
        let len = self.u64("string length")?;
        limit_len("string", len, MAX_STRING_LEN)?;
        let b = self.bytes(len, "string")?;
        String::from_utf8(b).map_err(|_| GgufError::Value {
            key: key.to_owned(),
            want: "UTF-8 text",
        })
    }

    /// An integer value of any width that is not negative.
    fn unsigned(&mut self, key: &str, t: u32) -> Result<u64> {
        let bad = || GgufError::Value {
            key: key.to_owned(),
            want: "a non-negative integer",
        };
        let n = match t {
            ty::U8 | ty::I8 | ty::U16 | ty::I16 | ty::U32 | ty::I32 | ty::U64 | ty::I64 => {
                fixed_size(t).ok_or_else(bad)?
            }
            _ => return Err(bad()),
        };
        let mut b = [0u8; 8];
        let width = usize::try_from(n).map_err(|_| bad())?;
        self.exact(&mut b[..width], "integer")?;
        let v = u64::from_le_bytes(b);
        let signed = matches!(t, ty::I8 | ty::I16 | ty::I32 | ty::I64);
        // The sign bit of the value's own width.
        if signed && b[width - 1] & 0x80 != 0 {
            return Err(bad());
        }
        Ok(v)
    }

    fn skip_value(&mut self, key: &str, t: u32) -> Result<()> {
        if let Some(n) = fixed_size(t) {
            return self.skip(n, "value");
        }
        match t {
            ty::STRING => {
                let len = self.u64("string length")?;
                limit_len("string", len, MAX_STRING_LEN)?;
                self.skip(len, "string")
            }
            ty::ARRAY => {
                let et = self.u32("array element type")?;
                let count = self.u64("array length")?;
                limit_len("array", count, MAX_ARRAY_LEN)?;
                if let Some(n) = fixed_size(et) {
                    // count ≤ 2^24 and n ≤ 8: no overflow.
                    return self.skip(count * n, "array");
                }
                match et {
                    ty::STRING => {
                        for _ in 0..count {
                            let len = self.u64("string length")?;
                            limit_len("string", len, MAX_STRING_LEN)?;
                            self.skip(len, "string")?;
                        }
                        Ok(())
                    }
                    ty::ARRAY => Err(GgufError::NestedArray {
                        key: key.to_owned(),
                    }),
                    other => Err(GgufError::Type {
                        key: key.to_owned(),
                        ty: other,
                    }),
                }
            }
            other => Err(GgufError::Type {
                key: key.to_owned(),
                ty: other,
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A tiny GGUF writer for tests: header and metadata only.
    pub(crate) struct Writer(pub Vec<u8>);

    impl Writer {
        pub fn new(version: u32, tensors: u64, keys: u64) -> Self {
            let mut v = MAGIC.to_vec();
            v.extend(version.to_le_bytes());
            v.extend(tensors.to_le_bytes());
            v.extend(keys.to_le_bytes());
            Self(v)
        }
        pub fn str_raw(&mut self, s: &[u8]) -> &mut Self {
            self.0.extend((s.len() as u64).to_le_bytes());
            self.0.extend(s);
            self
        }
        pub fn key(&mut self, k: &str, t: u32) -> &mut Self {
            self.str_raw(k.as_bytes());
            self.0.extend(t.to_le_bytes());
            self
        }
        pub fn string(&mut self, k: &str, v: &str) -> &mut Self {
            self.key(k, ty::STRING).str_raw(v.as_bytes())
        }
        pub fn u32(&mut self, k: &str, v: u32) -> &mut Self {
            self.key(k, ty::U32);
            self.0.extend(v.to_le_bytes());
            self
        }
        pub fn raw(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend(b);
            self
        }
    }

    /// A header like a real llama GGUF: the keys we read among others,
    /// including string and number arrays.
    fn llama() -> Vec<u8> {
        let mut w = Writer::new(3, 2, 7);
        w.string("general.architecture", "llama")
            .string("general.name", "tiny")
            .u32("llama.context_length", 2048)
            .u32("qwen2.context_length", 99)
            .key("tokenizer.ggml.tokens", ty::ARRAY)
            .raw(&ty::STRING.to_le_bytes())
            .raw(&3u64.to_le_bytes())
            .str_raw(b"<s>")
            .str_raw(b"</s>")
            .str_raw(b"a");
        w.key("tokenizer.ggml.scores", ty::ARRAY)
            .raw(&ty::F32.to_le_bytes())
            .raw(&3u64.to_le_bytes())
            .raw(&[0u8; 12]);
        w.string("tokenizer.chat_template", "{{ messages }}");
        // Tensor infos follow; never read.
        w.raw(b"tensor infos and data");
        w.0
    }

    #[test]
    fn reads_what_is_needed() {
        let info = read_header(llama().as_slice()).unwrap();
        assert_eq!(
            info,
            GgufInfo {
                version: 3,
                tensor_count: 2,
                key_count: 7,
                architecture: Some("llama".into()),
                context_length: Some(2048),
                chat_template: Some("{{ messages }}".into()),
            }
        );
        // Version 2 has the same layout; absent keys are None.
        let mut w = Writer::new(2, 0, 1);
        w.u32("general.alignment", 32);
        let info = read_header(w.0.as_slice()).unwrap();
        assert_eq!(info.architecture, None);
        assert_eq!(info.context_length, None);
        assert_eq!(info.chat_template, None);
    }

    #[test]
    fn refusals() {
        fn with(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
            let mut w = Writer::new(3, 0, 1);
            f(&mut w);
            w.0
        }
        let big = |n: u64| n.to_le_bytes();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "ends early (reading magic at byte 0)"),
            ("not gguf", b"GGML\x03\0\0\0".to_vec(), "not a GGUF file"),
            (
                "version 1",
                Writer::new(1, 0, 0).0,
                "version 1 is not supported",
            ),
            (
                "version 4",
                Writer::new(4, 0, 0).0,
                "version 4 is not supported",
            ),
            (
                "absurd tensor count",
                Writer::new(3, u64::MAX, 0).0,
                "tensor count 18446744073709551615 is over the limit",
            ),
            (
                "absurd key count",
                Writer::new(3, 0, 1 << 40).0,
                "metadata key count 1099511627776 is over the limit",
            ),
            (
                "keys missing",
                Writer::new(3, 0, 1).0,
                "ends early (reading key length",
            ),
            (
                "absurd key length",
                with(|w| {
                    w.raw(&big(u64::MAX));
                }),
                "key length 18446744073709551615 is over the limit",
            ),
            (
                "key not utf-8",
                with(|w| {
                    w.str_raw(b"\xff\xfe").raw(&ty::U8.to_le_bytes()).raw(&[0]);
                }),
                "key at byte 24 is not UTF-8",
            ),
            (
                "absurd string length",
                with(|w| {
                    w.key("general.name", ty::STRING).raw(&big(1 << 40));
                }),
                "string length 1099511627776 is over the limit",
            ),
            (
                "string cut short",
                with(|w| {
                    w.key("general.name", ty::STRING).raw(&big(100)).raw(b"abc");
                }),
                "ends early (reading string at byte",
            ),
            (
                "absurd array length",
                with(|w| {
                    w.key("a", ty::ARRAY)
                        .raw(&ty::U8.to_le_bytes())
                        .raw(&big(u64::MAX));
                }),
                "array length 18446744073709551615 is over the limit",
            ),
            (
                "nested array",
                with(|w| {
                    w.key("a", ty::ARRAY)
                        .raw(&ty::ARRAY.to_le_bytes())
                        .raw(&big(1));
                }),
                "key a: arrays of arrays are not supported",
            ),
            (
                "unknown type",
                with(|w| {
                    w.key("a\x1b[2K", 13);
                }),
                "key a\\x1b[2K: unknown value type 13",
            ),
            (
                "architecture not a string",
                with(|w| {
                    w.u32("general.architecture", 1);
                }),
                "general.architecture: value is not a string",
            ),
            (
                "negative context length",
                with(|w| {
                    w.key("llama.context_length", ty::I32)
                        .raw(&(-1i32).to_le_bytes());
                }),
                "value is not a non-negative integer",
            ),
            (
                "context length a float",
                with(|w| {
                    w.key("llama.context_length", ty::F32).raw(&[0; 4]);
                }),
                "value is not a non-negative integer",
            ),
            (
                "template not utf-8",
                with(|w| {
                    w.key("tokenizer.chat_template", ty::STRING)
                        .str_raw(b"\xff");
                }),
                "value is not UTF-8 text",
            ),
            (
                "duplicate architecture",
                {
                    let mut w = Writer::new(3, 0, 2);
                    w.string("general.architecture", "llama")
                        .string("general.architecture", "qwen2");
                    w.0
                },
                "general.architecture appears twice",
            ),
        ];
        for (what, bytes, want) in cases {
            let e = read_header(bytes.as_slice()).unwrap_err().to_string();
            assert!(e.contains(want), "{what}: {e}");
        }
    }

    /// No prefix of a valid header and no single-byte edit panics.
    #[test]
    fn prefixes_and_edits_never_panic() {
        let full = llama();
        for n in 0..full.len() {
            let _ = read_header(&full[..n]);
        }
        for i in 0..full.len() {
            for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut v = full.clone();
                v[i] = b;
                let _ = read_header(v.as_slice());
            }
        }
    }

    /// A real GGUF in the local cache, when there is one (e.g. the model
    /// generator's output): its header reads and names an architecture.
    #[test]
    fn cached_models_if_any() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let dir = Path::new(&home).join(".cache/airlock/models");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "gguf") {
                let info = read_file(&p)
                    .map_err(|e| format!("{}: {e}", p.display()))
                    .unwrap();
                assert!(info.architecture.is_some(), "{}: {info:?}", p.display());
                assert!(info.context_length.is_some(), "{}: {info:?}", p.display());
            }
        }
    }
}
