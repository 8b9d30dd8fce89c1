//! Text → key strokes of a US-layout keyboard, as QEMU's `input-send-event`
//! names keys (QAPI `QKeyCode`).
//!
//! Pure data and a lookup: [`Vm::type_text`](crate::Vm::type_text) sends the
//! strokes through QMP to the emulated USB keyboard. The guest's console
//! uses the kernel's default (US) keymap, so the table is the US layout.

/// One key press: the key's QEMU qcode, with or without Shift held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stroke {
    pub qcode: &'static str,
    pub shift: bool,
}

/// A character that has no key on the emulated keyboard.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyboardError {
    #[error("cannot type {ch:?} (character {index} of the text): only printable ASCII, '\\n' and '\\t' have keys")]
    NoKey { ch: char, index: usize },
}

/// Characters typed without Shift that are not letters or digits, and the
/// key that types them (US layout).
const PLAIN: &[(char, &str)] = &[
    (' ', "spc"),
    ('\n', "ret"),
    ('\t', "tab"),
    ('-', "minus"),
    ('=', "equal"),
    ('[', "bracket_left"),
    (']', "bracket_right"),
    ('\\', "backslash"),
    (';', "semicolon"),
    ('\'', "apostrophe"),
    ('`', "grave_accent"),
    (',', "comma"),
    ('.', "dot"),
    ('/', "slash"),
];

/// Characters typed with Shift (US layout): the character and the key
/// under it.
const SHIFTED: &[(char, &str)] = &[
    ('!', "1"),
    ('@', "2"),
    ('#', "3"),
    ('$', "4"),
    ('%', "5"),
    ('^', "6"),
    ('&', "7"),
    ('*', "8"),
    ('(', "9"),
    (')', "0"),
    ('_', "minus"),
    ('+', "equal"),
    ('{', "bracket_left"),
    ('}', "bracket_right"),
    ('|', "backslash"),
    (':', "semicolon"),
    ('"', "apostrophe"),
    ('~', "grave_accent"),
    ('<', "comma"),
    ('>', "dot"),
    ('?', "slash"),
];

/// The qcodes of the letters and digits are the lower-case character
/// itself; these are the `'static` names.
const LETTERS: [&str; 26] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];
const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The qcode of the Shift key held for [`Stroke::shift`].
pub const SHIFT: &str = "shift";

/// The stroke that types `ch`, if the keyboard has one.
pub fn stroke(ch: char) -> Option<Stroke> {
    let plain = |qcode| {
        Some(Stroke {
            qcode,
            shift: false,
        })
    };
    let shifted = |qcode| Some(Stroke { qcode, shift: true });
    match ch {
        'a'..='z' => plain(LETTERS[usize::from(ch as u8 - b'a')]),
        'A'..='Z' => shifted(LETTERS[usize::from(ch as u8 - b'A')]),
        '0'..='9' => plain(DIGITS[usize::from(ch as u8 - b'0')]),
        _ => {
            if let Some((_, q)) = PLAIN.iter().find(|(c, _)| *c == ch) {
                plain(q)
            } else if let Some((_, q)) = SHIFTED.iter().find(|(c, _)| *c == ch) {
                shifted(q)
            } else {
                None
            }
        }
    }
}

/// The strokes that type `text`; the first character without a key is an
/// error (nothing is typed then).
pub fn strokes(text: &str) -> Result<Vec<Stroke>, KeyboardError> {
    text.chars()
        .enumerate()
        .map(|(index, ch)| stroke(ch).ok_or(KeyboardError::NoKey { ch, index }))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn characters_map_to_us_layout_keys() {
        // (character, qcode, shift held)
        let cases: &[(char, &str, bool)] = &[
            ('a', "a", false),
            ('z', "z", false),
            ('A', "a", true),
            ('Q', "q", true),
            ('0', "0", false),
            ('9', "9", false),
            (' ', "spc", false),
            ('\n', "ret", false),
            ('\t', "tab", false),
            ('-', "minus", false),
            ('_', "minus", true),
            ('=', "equal", false),
            ('+', "equal", true),
            ('[', "bracket_left", false),
            ('{', "bracket_left", true),
            (']', "bracket_right", false),
            ('}', "bracket_right", true),
            ('\\', "backslash", false),
            ('|', "backslash", true),
            (';', "semicolon", false),
            (':', "semicolon", true),
            ('\'', "apostrophe", false),
            ('"', "apostrophe", true),
            ('`', "grave_accent", false),
            ('~', "grave_accent", true),
            (',', "comma", false),
            ('<', "comma", true),
            ('.', "dot", false),
            ('>', "dot", true),
            ('/', "slash", false),
            ('?', "slash", true),
            ('!', "1", true),
            ('@', "2", true),
            ('#', "3", true),
            ('$', "4", true),
            ('%', "5", true),
            ('^', "6", true),
            ('&', "7", true),
            ('*', "8", true),
            ('(', "9", true),
            (')', "0", true),
        ];
        for &(ch, qcode, shift) in cases {
            assert_eq!(stroke(ch), Some(Stroke { qcode, shift }), "{ch:?}");
        }
    }

    #[test]
    fn every_printable_ascii_character_has_a_key() {
        for b in 0x20u8..0x7f {
            assert!(stroke(char::from(b)).is_some(), "{:?}", char::from(b));
        }
    }

    #[test]
    fn text_without_a_key_is_refused_naming_the_character() {
        // (text, refused character, its index)
        let cases: &[(&str, char, usize)] = &[
            ("größe", 'ö', 2),
            ("a\rb", '\r', 1),
            ("\u{1b}[2J", '\u{1b}', 0),
            ("ok\u{7f}", '\u{7f}', 2),
        ];
        for &(text, ch, index) in cases {
            assert_eq!(
                strokes(text),
                Err(KeyboardError::NoKey { ch, index }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_command_line_becomes_its_strokes() {
        let s = strokes("login Al\n").unwrap();
        let names: Vec<(&str, bool)> = s.iter().map(|s| (s.qcode, s.shift)).collect();
        assert_eq!(
            names,
            [
                ("l", false),
                ("o", false),
                ("g", false),
                ("i", false),
                ("n", false),
                ("spc", false),
                ("a", true),
                ("l", false),
                ("ret", false),
            ]
        );
    }
}
