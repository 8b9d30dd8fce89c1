//! What `usb` shows of a mounted stick: its top directory, each entry
//! classified, and one level into plain folders (what `batch DIR` would
//! take) and bundles. Bounded: at most `stickread::MAX_ENTRIES` entries
//! of a directory are read and `MAX_SHOWN` shown per stick, then `… and N
//! more`. Symbolic links are never followed. Names are shown through
//! `escape::bytes` (control characters, invalid UTF-8), never raw.

use crate::stickread::MAX_ENTRIES;
use crate::usb::human_size;
use airlock_formats::escape;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use thiserror::Error;

/// Most entries of one stick shown.
pub const MAX_SHOWN: usize = 40;

/// Failing operation of a listing.
#[derive(Debug, Error)]
pub enum StickListError {
    #[error("read the top directory of {dev}: {source}")]
    ReadDir { dev: String, source: std::io::Error },
}

/// What an entry is, in the order `usb` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// `*.gpg`, `*.asc`, `*.pgp` files: input for `run`.
    Document,
    /// A plain folder: input for `batch DIR`.
    Folder,
    /// `*.airlock` folders: model bundles for `import`.
    Bundle,
    /// `*.answer.gpg`, `*.answer.receipt`: our own output.
    Answer,
    Other,
}

impl Class {
    pub fn word(self) -> &'static str {
        match self {
            Class::Document => "document",
            Class::Folder => "folder",
            Class::Bundle => "bundle",
            Class::Answer => "answer",
            Class::Other => "other",
        }
    }
}

fn ends_with_ci(name: &[u8], suffix: &str) -> bool {
    name.len() > suffix.len()
        && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// The class of an entry by its raw name and kind (FAT shows 8.3 names
/// in capitals, so suffixes are matched without regard to ASCII case).
pub fn classify(name: &[u8], is_dir: bool) -> Class {
    if is_dir {
        if ends_with_ci(name, ".airlock") {
            Class::Bundle
        } else {
            Class::Folder
        }
    } else if ends_with_ci(name, ".answer.gpg") || ends_with_ci(name, ".answer.receipt") {
        Class::Answer
    } else if [".gpg", ".asc", ".pgp"]
        .iter()
        .any(|s| ends_with_ci(name, s))
    {
        Class::Document
    } else {
        Class::Other
    }
}

/// One entry of the top directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub class: Class,
    /// Escaped name (`/` appended for folders).
    pub shown: String,
    raw: Vec<u8>,
    /// Files: their size; folders: the summed size of their files.
    pub bytes: u64,
    /// Folders: (documents, other entries) one level down; `more` when
    /// the folder held more than could be read.
    pub inside: Option<(usize, usize, bool)>,
    pub symlink: bool,
}

/// The listing of one stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<Item>,
    /// The directory held more entries than were read.
    pub truncated: bool,
}

/// Lists `root` (the stick's mount point; tests use a plain directory).
pub fn list(root: &Path, dev: &str) -> Result<Listing, StickListError> {
    let rd = std::fs::read_dir(root).map_err(|source| StickListError::ReadDir {
        dev: dev.to_string(),
        source,
    })?;
    let mut items = Vec::new();
    let mut truncated = false;
    for (n, ent) in rd.enumerate() {
        if n >= MAX_ENTRIES {
            truncated = true;
            break;
        }
        let Ok(ent) = ent else { continue };
        let name = ent.file_name();
        let raw = name.as_encoded_bytes().to_vec();
        // lstat: a symbolic link is shown as one, never followed.
        let Ok(md) = std::fs::symlink_metadata(ent.path()) else {
            continue;
        };
        let symlink = md.file_type().is_symlink();
        let is_dir = md.is_dir();
        let class = if symlink {
            Class::Other
        } else {
            classify(&raw, is_dir)
        };
        let mut shown = escape::bytes(&raw);
        let (bytes, inside) = if is_dir {
            shown.push('/');
            let (b, i) = one_level(&ent.path());
            (b, Some(i))
        } else {
            (md.size(), None)
        };
        items.push(Item {
            class,
            shown,
            raw,
            bytes,
            inside,
            symlink,
        });
    }
    items.sort_by(|a, b| (a.class, &a.raw).cmp(&(b.class, &b.raw)));
    Ok(Listing { items, truncated })
}

/// Summed file size, and (documents, others, more) one level down.
fn one_level(dir: &Path) -> (u64, (usize, usize, bool)) {
    let (mut bytes, mut docs, mut others, mut more) = (0u64, 0usize, 0usize, false);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, (0, 0, false));
    };
    for (n, ent) in rd.enumerate() {
        if n >= MAX_ENTRIES {
            more = true;
            break;
        }
        let Ok(ent) = ent else { continue };
        let Ok(md) = std::fs::symlink_metadata(ent.path()) else {
            continue;
        };
        if md.is_file() {
            bytes = bytes.saturating_add(md.size());
        }
        let name = ent.file_name();
        if md.is_file() && classify(name.as_encoded_bytes(), false) == Class::Document {
            docs += 1;
        } else {
            others += 1;
        }
    }
    (bytes, (docs, others, more))
}

/// `512 B`, `12 KiB`, `3 MiB`.
pub fn size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else {
        human_size(bytes)
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The lines of one stick's listing under its heading.
pub fn render(l: &Listing) -> String {
    if l.items.is_empty() {
        return "  (empty)\n".to_string();
    }
    let mut out = String::new();
    for it in l.items.iter().take(MAX_SHOWN) {
        let what = match (&it.inside, it.symlink) {
            (_, true) => "symbolic link, not followed".to_string(),
            (Some((d, o, more)), _) => {
                let mut s = if it.class == Class::Bundle {
                    plural(d + o, "entry", "entries")
                } else {
                    format!(
                        "{}, {}",
                        plural(*d, "document", "documents"),
                        plural(*o, "other entry", "other entries")
                    )
                };
                if *more {
                    s.push_str(&format!(" (more than {MAX_ENTRIES}, not all read)"));
                }
                s.push_str(&format!(", {}", size(it.bytes)));
                s
            }
            (None, _) => size(it.bytes),
        };
        out.push_str(&format!(
            "  {:<8}  {}  {what}\n",
            it.class.word(),
            crate::screen::line(&it.shown)
        ));
    }
    let rest = l.items.len().saturating_sub(MAX_SHOWN);
    match (rest, l.truncated) {
        (0, false) => {}
        (n, false) => out.push_str(&format!("  … and {n} more\n")),
        (n, true) => out.push_str(&format!(
            "  … and {n} more (only the first {MAX_ENTRIES} entries were read)\n"
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn classes() {
        let cases: &[(&[u8], bool, Class)] = &[
            (b"report.txt.gpg", false, Class::Document),
            (b"REPORT.GPG", false, Class::Document),
            (b"a.asc", false, Class::Document),
            (b"a.pgp", false, Class::Document),
            (b"report.txt.answer.gpg", false, Class::Answer),
            (b"report.txt.answer.receipt", false, Class::Answer),
            (b"demo.airlock", true, Class::Bundle),
            (b"demo.airlock", false, Class::Other),
            (b"batch", true, Class::Folder),
            (b"x.gpg", true, Class::Folder),
            (b".gpg", false, Class::Other),
            (b"notes.txt", false, Class::Other),
            (b"a\xff.gpg", false, Class::Document),
        ];
        for (name, dir, want) in cases {
            assert_eq!(
                classify(name, *dir),
                *want,
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn listing_is_classified_sorted_escaped_and_bounded() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::write(p.join("b.txt.gpg"), vec![0u8; 2048]).unwrap();
        std::fs::write(p.join("a.asc"), b"x").unwrap();
        std::fs::write(p.join("a.answer.gpg"), b"x").unwrap();
        std::fs::write(p.join("notes.txt"), b"x").unwrap();
        std::fs::write(p.join(OsStr::from_bytes(b"evil\x1b[2J\xff.gpg")), b"x").unwrap();
        std::fs::create_dir(p.join("demo.airlock")).unwrap();
        std::fs::write(p.join("demo.airlock/manifest.json"), vec![0u8; 4096]).unwrap();
        std::fs::create_dir(p.join("monday")).unwrap();
        for f in ["1.gpg", "2.gpg", "readme"] {
            std::fs::write(p.join("monday").join(f), vec![0u8; 1024]).unwrap();
        }
        std::os::unix::fs::symlink("/etc/shadow", p.join("link.gpg")).unwrap();
        let l = list(p, "sdz").unwrap();
        let text = render(&l);
        let want = "  document  a.asc  1 B
  document  b.txt.gpg  2 KiB
  document  evil\\x1b[2J\\xff.gpg  1 B
  folder    monday/  2 documents, 1 other entry, 3 KiB
  bundle    demo.airlock/  1 entry, 4 KiB
  answer    a.answer.gpg  1 B
  other     link.gpg  symbolic link, not followed
  other     notes.txt  1 B
";
        assert_eq!(text, want);
        assert_eq!(escape::first_unsafe(&text.replace('\n', "")), None);

        // Over MAX_SHOWN: the rest is counted.
        let t2 = tempfile::tempdir().unwrap();
        for i in 0..MAX_SHOWN + 7 {
            std::fs::write(t2.path().join(format!("{i:03}.gpg")), b"x").unwrap();
        }
        let text = render(&list(t2.path(), "sdz").unwrap());
        assert_eq!(text.lines().count(), MAX_SHOWN + 1);
        assert!(text.ends_with("  … and 7 more\n"), "{text}");
        assert!(text.starts_with("  document  000.gpg"));

        let empty = tempfile::tempdir().unwrap();
        assert_eq!(render(&list(empty.path(), "sdz").unwrap()), "  (empty)\n");
        let e = list(&p.join("nope"), "sdz").unwrap_err().to_string();
        assert!(e.starts_with("read the top directory of sdz: "), "{e}");
    }
}
