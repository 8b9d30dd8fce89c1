//! HTML fragments that are safe by construction: text enters only through
//! [`Html::text`] (escaped), markup only from string literals of this
//! program ([`Html::raw`] takes `&'static str`), so nothing read from a log
//! can open a tag, an attribute or an entity.

use airlock_formats::escape;
use std::fmt::Write as _;

/// The five characters HTML gives a meaning in text and in quoted
/// attribute values, with their replacements (one rule per line).
const ESCAPES: &[(char, &str)] = &[
    // Starts entities and character references.
    ('&', "&amp;"),
    // Opens a tag (`<script>`, `<img src=…>`).
    ('<', "&lt;"),
    // Closes a tag; escaped so text never looks like markup when read raw.
    ('>', "&gt;"),
    // Ends a double-quoted attribute value.
    ('"', "&quot;"),
    // Ends a single-quoted attribute value.
    ('\'', "&#39;"),
];

/// `s` with every character of [`ESCAPES`] replaced.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match ESCAPES.iter().find(|(k, _)| *k == c) {
            Some((_, rep)) => out.push_str(rep),
            None => out.push(c),
        }
    }
    out
}

/// A piece of HTML.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Html(String);

impl Html {
    /// Text from anywhere (the log, a path, an error message): control,
    /// bidi and line-separator characters shown as `\xNN` / `\u{NNNN}`
    /// (as on the terminal, `airlock_formats::escape::text`), then
    /// HTML-escaped.
    pub fn text(s: &str) -> Self {
        Self(escape(&escape::text(s)))
    }

    /// Markup written in this program.
    pub fn raw(s: &'static str) -> Self {
        Self(s.to_owned())
    }

    /// A number (nothing to escape).
    pub fn num(n: u64) -> Self {
        Self(n.to_string())
    }

    /// `<tag class="class">inner</tag>` (no class attribute when empty).
    pub fn tag(tag: &'static str, class: &'static str, inner: Html) -> Self {
        let mut s = String::with_capacity(inner.0.len() + 32);
        if class.is_empty() {
            let _ = write!(s, "<{tag}>");
        } else {
            let _ = write!(s, "<{tag} class=\"{class}\">");
        }
        s.push_str(&inner.0);
        let _ = write!(s, "</{tag}>");
        Self(s)
    }

    /// A link within the page: `<a href="#id">inner</a>`; `id` is made of
    /// this program's prefixes and numbers.
    pub fn anchor_link(id: &str, inner: Html) -> Self {
        Self(format!("<a href=\"#{}\">{}</a>", escape(id), inner.0))
    }

    /// Markup assembled elsewhere in this module tree from escaped parts
    /// and numbers (the SVG chart).
    pub(super) fn trusted(s: String) -> Self {
        Self(s)
    }

    pub fn push(&mut self, other: Html) {
        self.0.push_str(&other.0);
    }

    pub fn push_raw(&mut self, s: &'static str) {
        self.0.push_str(s);
    }

    pub fn push_text(&mut self, s: &str) {
        self.0.push_str(&Html::text(s).0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_string(self) -> String {
        self.0
    }

    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromIterator<Html> for Html {
    fn from_iter<I: IntoIterator<Item = Html>>(iter: I) -> Self {
        let mut out = Html::default();
        for h in iter {
            out.push(h);
        }
        out
    }
}

/// A table: header cells and rows of cells; `row_class` marks rows (e.g.
/// refused ones) and `row_id` gives a row an anchor.
pub struct Table {
    head: Html,
    body: Html,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        let head = headers
            .iter()
            .map(|h| Html::tag("th", "", Html::raw(h)))
            .collect();
        Self {
            head,
            body: Html::default(),
        }
    }

    pub fn row(&mut self, class: &'static str, id: Option<&str>, cells: Vec<Html>) {
        let mut open = String::from("<tr");
        if !class.is_empty() {
            let _ = write!(open, " class=\"{class}\"");
        }
        if let Some(id) = id {
            let _ = write!(open, " id=\"{}\"", escape(id));
        }
        open.push('>');
        self.body.push(Html(open));
        for c in cells {
            self.body.push(Html::tag("td", "", c));
        }
        self.body.push_raw("</tr>\n");
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    pub fn finish(self) -> Html {
        let mut t = Html::raw("<table>\n<thead><tr>");
        t.push(self.head);
        t.push_raw("</tr></thead>\n<tbody>\n");
        t.push(self.body);
        t.push_raw("</tbody>\n</table>\n");
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        // (input, escaped)
        let cases: &[(&str, &str)] = &[
            ("olga", "olga"),
            ("", ""),
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            ("a & b", "a &amp; b"),
            ("&amp;", "&amp;amp;"),
            ("\"quoted\"", "&quot;quoted&quot;"),
            ("it's", "it&#39;s"),
            (
                "<img src=x onerror='alert(\"x\")'>",
                "&lt;img src=x onerror=&#39;alert(&quot;x&quot;)&#39;&gt;",
            ),
            ("é ü 漢", "é ü 漢"),
        ];
        for &(input, want) in cases {
            assert_eq!(escape(input), want, "{input:?}");
        }
    }

    #[test]
    fn text_also_escapes_terminal_controls() {
        // (input, shown)
        let cases: &[(&str, &str)] = &[
            ("a\u{1b}[2Jb", "a\\x1b[2Jb"),
            ("x\u{202e}y<", "x\\u{202e}y&lt;"),
            ("back\\slash", "back\\\\slash"),
        ];
        for &(input, want) in cases {
            assert_eq!(Html::text(input).as_str(), want, "{input:?}");
        }
    }

    #[test]
    fn table_rows_escape_their_ids_and_cells() {
        let mut t = Table::new(&["a"]);
        t.row("bad", Some("e\"1"), vec![Html::text("<b>")]);
        let s = t.finish().into_string();
        assert!(
            s.contains("<tr class=\"bad\" id=\"e&quot;1\"><td>&lt;b&gt;</td></tr>"),
            "{s}"
        );
    }
}
