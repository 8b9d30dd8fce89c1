//! Escaping of untrusted text before it reaches a terminal.
//!
//! Every string that comes from a stick (file names, labels), a manifest, a
//! document or the model passes through here before it is printed, on the
//! host CLI and on the appliance console alike. A crafted name must not be
//! able to move the cursor, repaint a line (`bundle OK` over a failure),
//! switch the terminal's character set or reorder what is shown.
//!
//! What is escaped (the policy, one rule per line in [`UNSAFE_RANGES`]):
//! C0 controls, DEL, C1 controls (U+009B is CSI on the Linux console), the
//! Unicode bidi controls and the line/paragraph separators. Escapes are
//! `\xNN` for code points below U+0100 and `\u{NNNN}` above; names also get
//! `\\` for a backslash so the shown form is unambiguous, and invalid UTF-8
//! bytes of a name are shown as `\xNN` too.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

/// Code point ranges (inclusive) that never reach a terminal raw.
pub const UNSAFE_RANGES: &[(char, char)] = &[
    // C0 controls: ESC starts every terminal escape sequence; CR, BS and the
    // others move the cursor or change modes.
    ('\u{0}', '\u{1f}'),
    // DEL.
    ('\u{7f}', '\u{7f}'),
    // C1 controls: U+009B (CSI) and U+009D (OSC) start sequences on the
    // Linux console and on terminals in 8-bit mode.
    ('\u{80}', '\u{9f}'),
    // ARABIC LETTER MARK: an invisible bidi control.
    ('\u{61c}', '\u{61c}'),
    // LEFT-TO-RIGHT / RIGHT-TO-LEFT MARK.
    ('\u{200e}', '\u{200f}'),
    // LINE SEPARATOR, PARAGRAPH SEPARATOR: line breaks some terminals honour.
    ('\u{2028}', '\u{2029}'),
    // Bidi embeddings and overrides (LRE, RLE, PDF, LRO, RLO): reorder text.
    ('\u{202a}', '\u{202e}'),
    // Bidi isolates (LRI, RLI, FSI, PDI).
    ('\u{2066}', '\u{2069}'),
];

/// True when `c` must not reach a terminal raw.
pub fn is_unsafe(c: char) -> bool {
    UNSAFE_RANGES.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// The first character of `s` that must not reach a terminal raw.
pub fn first_unsafe(s: &str) -> Option<char> {
    s.chars().find(|&c| is_unsafe(c))
}

fn push_escape(out: &mut String, c: char) {
    let cp = u32::from(c);
    // Writing to a String cannot fail.
    let _ = if cp < 0x100 {
        write!(out, "\\x{cp:02x}")
    } else {
        write!(out, "\\u{{{cp:04x}}}")
    };
}

/// A name or other one-line text from an untrusted source: every unsafe
/// character (newline and tab included) and the backslash are escaped.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    push_text(&mut out, s);
    Cow::Owned(out)
}

fn push_text(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_unsafe(c) {
            push_escape(out, c);
        } else {
            out.push(c);
        }
    }
}

/// Running text (a model's answer, a document excerpt): newlines and tabs
/// stay, every other unsafe character is escaped; backslashes stay as they
/// are (code in an answer is common and a literal `\x1b` there is harmless).
pub fn multiline(s: &str) -> Cow<'_, str> {
    let bad = |c: char| is_unsafe(c) && c != '\n' && c != '\t';
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Raw bytes of a name (a file name from a stick, a volume label): valid
/// UTF-8 runs as in [`text`], every invalid byte as `\xNN`.
pub fn bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        push_text(&mut out, chunk.valid());
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A file name or path as the OS gave it.
pub fn os(s: &OsStr) -> String {
    bytes(s.as_bytes())
}

/// A path as the OS gave it.
pub fn path(p: &std::path::Path) -> String {
    os(p.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_expected() {
        // (input, text(), multiline())
        let cases: &[(&str, &str, &str)] = &[
            ("model.gguf", "model.gguf", "model.gguf"),
            ("é ü 日本", "é ü 日本", "é ü 日本"),
            (
                "a\x1b[2Kbundle OK",
                "a\\x1b[2Kbundle OK",
                "a\\x1b[2Kbundle OK",
            ),
            ("csi\u{9b}31m", "csi\\x9b31m", "csi\\x9b31m"),
            ("osc\u{9d}", "osc\\x9d", "osc\\x9d"),
            ("cr\rover", "cr\\x0dover", "cr\\x0dover"),
            (
                "line\nnext\tcol",
                "line\\x0anext\\x09col",
                "line\nnext\tcol",
            ),
            ("del\x7f", "del\\x7f", "del\\x7f"),
            (
                "rlo\u{202e}fdp.exe",
                "rlo\\u{202e}fdp.exe",
                "rlo\\u{202e}fdp.exe",
            ),
            (
                "iso\u{2066}x\u{2069}",
                "iso\\u{2066}x\\u{2069}",
                "iso\\u{2066}x\\u{2069}",
            ),
            (
                "mark\u{200f}\u{61c}",
                "mark\\u{200f}\\u{061c}",
                "mark\\u{200f}\\u{061c}",
            ),
            ("ls\u{2028}", "ls\\u{2028}", "ls\\u{2028}"),
            ("back\\x1b", "back\\\\x1b", "back\\x1b"),
        ];
        for (input, t, m) in cases {
            assert_eq!(text(input), *t, "text({input:?})");
            assert_eq!(multiline(input), *m, "multiline({input:?})");
        }
    }

    #[test]
    fn bytes_shows_invalid_utf8() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain", "plain"),
            (b"bad\xffname", "bad\\xffname"),
            (b"\xc2\x9b2J", "\\x9b2J"), // C1 CSI encoded in UTF-8
            (b"\x9b2J", "\\x9b2J"),     // raw byte 0x9b (invalid UTF-8)
            (b"esc\x1b]0;t\x07", "esc\\x1b]0;t\\x07"),
        ];
        for (input, want) in cases {
            assert_eq!(bytes(input), *want, "bytes({input:?})");
        }
    }

    #[test]
    fn nothing_unsafe_survives() {
        for cp in 0..0x3000u32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let s = c.to_string();
            let shown = text(&s);
            assert!(first_unsafe(&shown).is_none(), "U+{cp:04X} survived");
            let shown = multiline(&s);
            assert!(
                shown
                    .chars()
                    .all(|c| c == '\n' || c == '\t' || !is_unsafe(c)),
                "U+{cp:04X} survived multiline"
            );
        }
    }
}
