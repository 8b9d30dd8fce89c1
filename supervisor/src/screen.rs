//! The last check before text reaches a terminal (a console tty, a status
//! line, a notice).
//!
//! Text from a stick, a disk, a manifest, a document or the model is
//! escaped where it enters (`airlock_formats::escape`), so what arrives
//! here is normally clean and passes unchanged. This is the safety net for
//! a source someone forgot: a line that still holds a character that must
//! not reach a terminal raw (ESC, CSI 0x9b, a newline that would forge a
//! second status line, a bidi override) is escaped as a whole with
//! `escape::text`. Clean lines are never touched, so an already escaped
//! `\x1b` is not escaped twice.

use airlock_formats::escape;
use std::borrow::Cow;

/// One line (no newline allowed) made safe for a terminal.
pub fn line(s: &str) -> Cow<'_, str> {
    if escape::first_unsafe(s).is_some() {
        escape::text(s)
    } else {
        Cow::Borrowed(s)
    }
}

/// Several lines (`\n`-separated, e.g. the `status` text): each line made
/// safe on its own, newlines kept.
pub fn lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, l) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&line(l));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_escaped_only_when_needed() {
        // (input, shown): clean text (even an escape someone already made)
        // passes unchanged; anything unsafe escapes the whole line.
        let cases: &[(&str, &str)] = &[
            (
                "[usb] stick inserted: sdb (16 MiB)",
                "[usb] stick inserted: sdb (16 MiB)",
            ),
            ("airlock: NOT READY — why", "airlock: NOT READY — why"),
            (r#"sdb 16 MiB "A\x1bB""#, r#"sdb 16 MiB "A\x1bB""#),
            ("A\x1b[2JB", r"A\x1b[2JB"),
            ("a\u{9b}31mb", r"a\x9b31mb"),
            ("x\nready: yes", r"x\x0aready: yes"),
            ("evil\u{202e}txt.exe", r"evil\u{202e}txt.exe"),
            (r"c:\dir \x1b", r"c:\dir \x1b"),
            ("c:\\dir \x07", r"c:\\dir \x07"),
        ];
        for (input, shown) in cases {
            assert_eq!(line(input), *shown, "input {input:?}");
        }
    }

    #[test]
    fn multi_line_text_keeps_its_newlines() {
        assert_eq!(
            lines("version: 1\nusb sticks: sdb 16 MiB \"\x1b]0;x\x07\"\n"),
            "version: 1\nusb sticks: sdb 16 MiB \"\\x1b]0;x\\x07\"\n"
        );
    }
}
