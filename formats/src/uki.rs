//! The `.osrel` section of a unified kernel image (UKI): which system
//! version and image variant a UKI was built as.
//!
//! Only what finding one section needs is parsed: the DOS header's
//! `e_lfanew`, the PE signature, the COFF header (number of sections, size of
//! the optional header) and the section table. The section is read with a
//! bound ([`MAX_OSREL_LEN`]), so hostile input never makes a large
//! allocation. Its text is os-release (`KEY=VALUE` lines, values optionally
//! quoted), parsed strictly: a malformed line or a key given twice is refused.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};

/// Largest `.osrel` section read (64 KiB).
pub const MAX_OSREL_LEN: u64 = 64 * 1024;
/// Most sections a PE image may have (the PE loader's limit).
pub const MAX_SECTIONS: u16 = 96;
/// Name of the section, as it is in the section table (NUL-padded).
pub const OSREL_SECTION: &[u8; 8] = b".osrel\0\0";
/// os-release key of the system version anti-rollback compares.
pub const KEY_SYSTEM_VERSION: &str = "AIRLOCK_SYSTEM_VERSION";
/// os-release key of the image variant (`demo`, `production`).
pub const KEY_VARIANT_ID: &str = "VARIANT_ID";

/// Offset of `e_lfanew` in the DOS header.
const E_LFANEW: u64 = 0x3c;
/// PE signature (4) + COFF header (20).
const PE_HEADERS_LEN: usize = 24;
/// One section table entry.
const SECTION_LEN: usize = 40;

/// Errors of this module; each names the failing step.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("not a PE file: {0}")]
    NotPe(&'static str),
    #[error("UKI truncated: the {0} ends past the end of the file")]
    Truncated(&'static str),
    #[error("read the UKI's {what}: {source}")]
    Read {
        what: &'static str,
        source: io::Error,
    },
    #[error("UKI has {0} sections (at most {MAX_SECTIONS})")]
    TooManySections(u16),
    #[error("UKI has no .osrel section")]
    NoOsrel,
    #[error("UKI .osrel section is {0} bytes (at most {MAX_OSREL_LEN})")]
    OsrelTooLarge(u64),
    #[error("UKI .osrel section is not UTF-8")]
    NotUtf8,
    #[error("UKI .osrel line {line}: {why}")]
    Line { line: usize, why: &'static str },
}

type Result<T> = std::result::Result<T, UkiError>;

/// The key-value pairs of an os-release text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    pairs: BTreeMap<String, String>,
}

impl OsRelease {
    /// Parses os-release text: `KEY=VALUE` lines (KEY of `A-Z a-z 0-9 _`,
    /// not starting with a digit), blank lines and `#` comments ignored. A
    /// value may be quoted (`"…"` with backslash escapes, `'…'` literal) or
    /// bare (backslash escapes, no blanks). A key given twice is refused.
    pub fn parse(text: &str) -> Result<Self> {
        let mut pairs = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |why| UkiError::Line { line, why };
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (key, value) = l.split_once('=').ok_or(bad("no `=`"))?;
            let key_ok = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok {
                return Err(bad("key is not A-Z a-z 0-9 _"));
            }
            let value = unquote(value).map_err(bad)?;
            if pairs.insert(key.to_owned(), value).is_some() {
                return Err(bad("key given twice"));
            }
        }
        Ok(Self { pairs })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// `AIRLOCK_SYSTEM_VERSION` as a number (`None`: absent, or not a
    /// decimal `u64`).
    pub fn system_version(&self) -> Option<u64> {
        let v = self.get(KEY_SYSTEM_VERSION)?;
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }

    /// `VARIANT_ID` (`demo`, `production`), if present.
    pub fn variant_id(&self) -> Option<&str> {
        self.get(KEY_VARIANT_ID)
    }
}

/// A value with shell-like quoting: `"…"` (backslash escapes), `'…'`
/// (literal) and bare runs (backslash escapes, no blanks), concatenated.
fn unquote(v: &str) -> std::result::Result<String, &'static str> {
    #[derive(PartialEq)]
    enum Q {
        None,
        Single,
        Double,
    }
    let mut out = String::with_capacity(v.len());
    let mut q = Q::None;
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match (&q, c) {
            (Q::Single, '\'') | (Q::Double, '"') => q = Q::None,
            (Q::Single, c) => out.push(c),
            (Q::None, '\'') => q = Q::Single,
            (Q::None, '"') => q = Q::Double,
            (Q::None | Q::Double, '\\') => {
                out.push(chars.next().ok_or("value ends in a backslash")?)
            }
            (Q::None, c) if c.is_whitespace() => return Err("unquoted blank in the value"),
            (_, c) => out.push(c),
        }
    }
    if q != Q::None {
        return Err("unterminated quote");
    }
    Ok(out)
}

/// Reads exactly `buf.len()` bytes at `offset`; a short file is
/// [`UkiError::Truncated`] naming `what`.
fn read_at<R: Read + Seek>(
    file: &mut R,
    offset: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<()> {
    let read_err = |source| UkiError::Read { what, source };
    file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
    file.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => UkiError::Truncated(what),
        _ => read_err(e),
    })
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the `.osrel` section of the UKI `file` (at most [`MAX_OSREL_LEN`]
/// bytes; trailing NUL padding ignored) and parses it.
pub fn read_osrel<R: Read + Seek>(file: &mut R) -> Result<OsRelease> {
    let mut mz = [0u8; 2];
    read_at(file, 0, &mut mz, "DOS header")?;
    if &mz != b"MZ" {
        return Err(UkiError::NotPe("no MZ signature"));
    }
    let mut lfanew = [0u8; 4];
    read_at(file, E_LFANEW, &mut lfanew, "DOS header")?;
    let pe_at = u64::from(u32::from_le_bytes(lfanew));
    let mut hdr = [0u8; PE_HEADERS_LEN];
    read_at(file, pe_at, &mut hdr, "PE/COFF header")?;
    if &hdr[..4] != b"PE\0\0" {
        return Err(UkiError::NotPe("no PE signature at e_lfanew"));
    }
    // COFF header after the signature: Machine (2), NumberOfSections (2),
    // TimeDateStamp (4), PointerToSymbolTable (4), NumberOfSymbols (4),
    // SizeOfOptionalHeader (2), Characteristics (2).
    let sections = u16_at(&hdr, 6);
    let optional_len = u16_at(&hdr, 20);
    if sections > MAX_SECTIONS {
        return Err(UkiError::TooManySections(sections));
    }
    let table_at = pe_at + PE_HEADERS_LEN as u64 + u64::from(optional_len);
    let mut table = vec![0u8; usize::from(sections) * SECTION_LEN];
    read_at(file, table_at, &mut table, "section table")?;
    // Entry: Name (8), VirtualSize (4), VirtualAddress (4), SizeOfRawData
    // (4), PointerToRawData (4), …
    let entry = table
        .chunks_exact(SECTION_LEN)
        .find(|e| &e[..8] == OSREL_SECTION)
        .ok_or(UkiError::NoOsrel)?;
    let virtual_size = u64::from(u32_at(entry, 8));
    let raw_size = u64::from(u32_at(entry, 16));
    let raw_at = u64::from(u32_at(entry, 20));
    // The file holds SizeOfRawData bytes (padded to the file alignment);
    // VirtualSize, when set, is the content's own length.
    let len = match virtual_size {
        0 => raw_size,
        v => v.min(raw_size),
    };
    if len > MAX_OSREL_LEN {
        return Err(UkiError::OsrelTooLarge(len));
    }
    let mut data = vec![0u8; len as usize];
    read_at(file, raw_at, &mut data, ".osrel section")?;
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    data.truncate(end);
    let text = std::str::from_utf8(&data).map_err(|_| UkiError::NotUtf8)?;
    OsRelease::parse(text)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::Cursor;

    /// A minimal PE image: DOS header, PE signature, COFF header, a zeroed
    /// PE32+ optional header, the section table, then the sections' data.
    pub(crate) fn pe(sections: &[(&[u8; 8], &[u8])]) -> Vec<u8> {
        const OPT: usize = 240;
        let mut b = vec![0u8; 0x40];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b.extend_from_slice(b"PE\0\0");
        b.extend_from_slice(&0x8664u16.to_le_bytes());
        b.extend_from_slice(&(sections.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0u8; 12]);
        b.extend_from_slice(&(OPT as u16).to_le_bytes());
        b.extend_from_slice(&0x22u16.to_le_bytes());
        b.extend_from_slice(&[0u8; OPT]);
        let mut at = b.len() + sections.len() * SECTION_LEN;
        for (i, (name, data)) in sections.iter().enumerate() {
            let mut e = [0u8; SECTION_LEN];
            e[..8].copy_from_slice(&name[..]);
            e[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
            e[12..16].copy_from_slice(&(0x1000 * (i as u32 + 1)).to_le_bytes());
            e[16..20].copy_from_slice(&(data.len() as u32).to_le_bytes());
            e[20..24].copy_from_slice(&(at as u32).to_le_bytes());
            b.extend_from_slice(&e);
            at += data.len();
        }
        for (_, data) in sections {
            b.extend_from_slice(data);
        }
        b
    }

    const OSREL: &str = "NAME=\"Airlock\"\nID=airlock\n# comment\n\nVERSION_ID=0.1.0\n\
        IMAGE_VERSION=7\nAIRLOCK_SYSTEM_VERSION=7\nVARIANT=\"DEMO — throwaway keys\"\nVARIANT_ID=demo\n";

    fn read(b: &[u8]) -> Result<OsRelease> {
        read_osrel(&mut Cursor::new(b))
    }

    #[test]
    fn synthetic_pe() {
        let b = pe(&[(b".text\0\0\0", b"code"), (OSREL_SECTION, OSREL.as_bytes())]);
        let o = read(&b).unwrap();
        assert_eq!(o.system_version(), Some(7));
        assert_eq!(o.variant_id(), Some("demo"));
        assert_eq!(o.get("NAME"), Some("Airlock"));
        assert_eq!(o.get("VARIANT"), Some("DEMO — throwaway keys"));
        assert_eq!(o.get("comment"), None);
        // NUL padding after the text (SizeOfRawData without VirtualSize).
        let mut padded = OSREL.as_bytes().to_vec();
        padded.resize(512, 0);
        let mut b = pe(&[(OSREL_SECTION, &padded)]);
        let table = 0x40 + PE_HEADERS_LEN + 240;
        b[table + 8..table + 12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(read(&b).unwrap().system_version(), Some(7));
    }

    #[test]
    fn refusals() {
        type Edit = fn(&mut Vec<u8>);
        const TABLE: usize = 0x40 + PE_HEADERS_LEN + 240;
        let cases: &[(&str, Edit, &str)] = &[
            ("empty", |b| b.clear(), "truncated: the DOS header"),
            ("no MZ", |b| b[0] = b'Z', "no MZ signature"),
            (
                "e_lfanew past the end",
                |b| b[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes()),
                "truncated: the PE/COFF header",
            ),
            ("no PE signature", |b| b[0x41] = b'X', "no PE signature"),
            (
                "too many sections",
                |b| b[0x46..0x48].copy_from_slice(&97u16.to_le_bytes()),
                "97 sections (at most 96)",
            ),
            (
                "section table past the end",
                |b| b[0x46..0x48].copy_from_slice(&96u16.to_le_bytes()),
                "truncated: the section table",
            ),
            (
                "huge optional header",
                |b| b[0x54..0x56].copy_from_slice(&u16::MAX.to_le_bytes()),
                "truncated: the section table",
            ),
            ("no .osrel", |b| b[TABLE + 1] = b'O', "no .osrel section"),
            (
                "section too large",
                |b| {
                    let big = (MAX_OSREL_LEN as u32 + 1).to_le_bytes();
                    b[TABLE + 8..TABLE + 12].copy_from_slice(&big);
                    b[TABLE + 16..TABLE + 20].copy_from_slice(&big);
                },
                "65537 bytes (at most 65536)",
            ),
            (
                "section data past the end",
                |b| b[TABLE + 20..TABLE + 24].copy_from_slice(&u32::MAX.to_le_bytes()),
                "truncated: the .osrel section",
            ),
            (
                "not UTF-8",
                |b| {
                    let n = b.len();
                    b[n - 2] = 0xff;
                },
                "not UTF-8",
            ),
        ];
        for (what, edit, want) in cases {
            let mut b = pe(&[(OSREL_SECTION, OSREL.as_bytes())]);
            edit(&mut b);
            let e = read(&b).unwrap_err().to_string();
            assert!(e.contains(want), "{what}: {e}");
            assert_eq!(e.lines().count(), 1, "{what}: {e}");
        }
    }

    #[test]
    fn os_release_values() {
        for (line, want) in [
            ("K=v", "v"),
            ("K=", ""),
            ("K=\"a b\"", "a b"),
            ("K='a b'", "a b"),
            ("K=\"a \\\"q\\\" \\\\ \\$x\"", "a \"q\" \\ $x"),
            ("K='a\\b'", "a\\b"),
            ("K=a\\ b", "a b"),
            ("K=\"a\"'b'c", "abc"),
            ("  K=v  ", "v"),
        ] {
            let o = OsRelease::parse(line).unwrap();
            assert_eq!(o.get("K"), Some(want), "{line}");
        }
        for (text, want) in [
            ("K", "line 1: no `=`"),
            ("=v", "line 1: key is not"),
            ("1K=v", "key is not"),
            ("K-X=v", "key is not"),
            ("K=a b", "unquoted blank"),
            ("K=\"a", "unterminated quote"),
            ("K='a", "unterminated quote"),
            ("K=a\\", "ends in a backslash"),
            ("# x\nK=1\nK=2", "line 3: key given twice"),
        ] {
            let e = OsRelease::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        for (v, want) in [
            ("1", Some(1)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("+1", None),
            ("", None),
            ("1.0", None),
        ] {
            let o = OsRelease::parse(&format!("AIRLOCK_SYSTEM_VERSION='{v}'")).unwrap();
            assert_eq!(o.system_version(), want, "{v:?}");
        }
        assert_eq!(OsRelease::default().system_version(), None);
        assert_eq!(OsRelease::default().variant_id(), None);
    }

    /// A real UKI layout: systemd's EFI stub with an `.osrel` section added
    /// by objcopy, as scripts/build-image does. The stub and objcopy are
    /// host requirements (scripts/setup-host), so their absence fails.
    #[test]
    fn real_stub() {
        let stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
        assert!(
            std::path::Path::new(stub).is_file(),
            "{stub} missing: run scripts/setup-host (systemd-boot-efi)"
        );
        let dir = tempfile::tempdir().unwrap();
        let osrel = dir.path().join("os-release");
        std::fs::write(&osrel, OSREL).unwrap();
        let uki = dir.path().join("uki.efi");
        let out = std::process::Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".osrel={}", osrel.display()))
            .args(["--change-section-vma", ".osrel=0x20000000", stub])
            .arg(&uki)
            .output()
            .expect("run objcopy (binutils)");
        assert!(
            out.status.success(),
            "objcopy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let o = read_osrel(&mut std::fs::File::open(&uki).unwrap()).unwrap();
        assert_eq!(o.system_version(), Some(7));
        assert_eq!(o.variant_id(), Some("demo"));
        // The stub alone has no .osrel.
        let e = read_osrel(&mut std::fs::File::open(stub).unwrap()).unwrap_err();
        assert!(matches!(e, UkiError::NoOsrel), "{e}");
    }
}
