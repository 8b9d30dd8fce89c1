//! Splitting a document that is longer than the model's context into
//! parts, each within a token budget (context length minus the prompt and
//! the answer reserve), on paragraph boundaries where it can.
//!
//! Levels, coarsest first: paragraphs (a run of lines ended by one or more
//! blank lines, the blank lines included), lines, sentences (ended by `.`,
//! `!`, `?` or `。` and the whitespace after it), and last single
//! characters. A piece larger than the budget is split at the next level;
//! pieces are packed greedily into parts. Parts are contiguous slices of
//! the input: nothing is removed or added, so the parts joined equal the
//! input byte for byte (separators stay at the end of the part before the
//! boundary). Slices are cut only at UTF-8 character boundaries.
//!
//! Token counts need not add up (a real tokenizer merges across a
//! boundary): packing uses the sum of the pieces' counts to find where a
//! part ends, then counts the part itself and gives back pieces until it
//! fits. Every part returned has `count(part) <= budget`.

use thiserror::Error;

/// Failing operation of a split.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("split the document: the token budget is 0 (the prompt and answer reserve fill the model's context)")]
    NoBudget,
    #[error("split the document: the character at byte {at} alone counts {tokens} tokens, over the budget of {budget}")]
    CharOverBudget {
        at: usize,
        tokens: usize,
        budget: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Paragraph,
    Line,
    Sentence,
    Char,
}

impl Level {
    fn finer(self) -> Level {
        match self {
            Level::Paragraph => Level::Line,
            Level::Line => Level::Sentence,
            Level::Sentence | Level::Char => Level::Char,
        }
    }
}

/// Splits `text` into parts of at most `budget` tokens as counted by
/// `count`. An empty text gives no parts.
pub fn split<F: Fn(&str) -> usize>(
    text: &str,
    budget: usize,
    count: F,
) -> Result<Vec<&str>, SplitError> {
    if budget == 0 {
        return Err(SplitError::NoBudget);
    }
    let mut out = Vec::new();
    if text.is_empty() {
        return Ok(out);
    }
    if count(text) <= budget {
        out.push(text);
        return Ok(out);
    }
    pack(text, 0, Level::Paragraph, budget, &count, &mut out)?;
    Ok(out)
}

/// The end offsets (exclusive) of the pieces of `s` at `level`; the last
/// is always `s.len()`.
fn piece_ends(s: &str, level: Level) -> Vec<usize> {
    let mut ends = Vec::new();
    match level {
        Level::Paragraph => {
            // A paragraph ends after the blank lines that follow a
            // non-blank line; leading blank lines stay with the first.
            let mut pos = 0;
            let mut seen_text = false;
            let mut in_blank_run = false;
            for line in s.split_inclusive('\n') {
                let blank = line.trim().is_empty();
                if !blank && in_blank_run && seen_text {
                    ends.push(pos);
                }
                if blank {
                    in_blank_run = true;
                } else {
                    in_blank_run = false;
                    seen_text = true;
                }
                pos += line.len();
            }
        }
        Level::Line => {
            let mut pos = 0;
            for line in s.split_inclusive('\n') {
                pos += line.len();
                ends.push(pos);
            }
            ends.pop();
        }
        Level::Sentence => {
            // `.`, `!`, `?` end a sentence when whitespace follows (not
            // in `3.14`); the CJK stops end one at once. The whitespace
            // after the stop stays with the sentence.
            let mut stop: Option<bool> = None; // Some(cjk)
            let mut in_space = false;
            for (i, c) in s.char_indices() {
                let ws = c.is_whitespace();
                if (in_space || stop == Some(true)) && !ws {
                    ends.push(i);
                    in_space = false;
                    stop = None;
                }
                if ws {
                    in_space = stop.is_some();
                } else {
                    stop = match c {
                        '.' | '!' | '?' => Some(false),
                        '。' | '！' | '？' => Some(true),
                        _ => None,
                    };
                }
            }
        }
        Level::Char => {
            ends.extend(s.char_indices().skip(1).map(|(i, _)| i));
        }
    }
    ends.push(s.len());
    ends
}

/// Packs `s` (at byte `base` of the document) into parts at `level`,
/// splitting over-budget pieces at the finer levels.
fn pack<'a, F: Fn(&str) -> usize>(
    s: &'a str,
    base: usize,
    level: Level,
    budget: usize,
    count: &F,
    out: &mut Vec<&'a str>,
) -> Result<(), SplitError> {
    if level == Level::Char {
        return pack_chars(s, base, budget, count, out);
    }
    let ends = piece_ends(s, level);
    // (start, end, tokens) of each piece.
    let mut pieces = Vec::with_capacity(ends.len());
    let mut start = 0;
    for end in ends {
        let p = s.get(start..end).unwrap_or("");
        pieces.push((start, end, count(p)));
        start = end;
    }
    let mut i = 0;
    while i < pieces.len() {
        let (p_start, p_end, p_tokens) = pieces[i];
        if p_tokens > budget {
            let p = s.get(p_start..p_end).unwrap_or("");
            pack(p, base + p_start, level.finer(), budget, count, out)?;
            i += 1;
            continue;
        }
        // Take pieces while their summed count fits.
        let mut j = i + 1;
        let mut sum = p_tokens;
        while let Some(&(_, _, t)) = pieces.get(j) {
            if t > budget || sum + t > budget {
                break;
            }
            sum += t;
            j += 1;
        }
        // The part's own count decides; give pieces back until it fits
        // (one piece alone fits: its count was checked).
        loop {
            let end = pieces[j - 1].1;
            let part = s.get(p_start..end).unwrap_or("");
            if j == i + 1 || count(part) <= budget {
                out.push(part);
                break;
            }
            j -= 1;
        }
        i = j;
    }
    Ok(())
}

/// Longest prefixes that fit, cut at character boundaries (binary search
/// on the count of a prefix, then checked).
fn pack_chars<'a, F: Fn(&str) -> usize>(
    s: &'a str,
    base: usize,
    budget: usize,
    count: &F,
    out: &mut Vec<&'a str>,
) -> Result<(), SplitError> {
    let mut rest = s;
    let mut at = base;
    while !rest.is_empty() {
        let bounds: Vec<usize> = rest
            .char_indices()
            .skip(1)
            .map(|(i, _)| i)
            .chain(std::iter::once(rest.len()))
            .collect();
        let first = bounds[0];
        let one = rest.get(..first).unwrap_or("");
        let tokens = count(one);
        if tokens > budget {
            return Err(SplitError::CharOverBudget { at, tokens, budget });
        }
        // Largest k with count(rest[..bounds[k]]) <= budget.
        let (mut lo, mut hi) = (0usize, bounds.len() - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if count(rest.get(..bounds[mid]).unwrap_or("")) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let cut = bounds[lo];
        let (part, tail) = rest.split_at(cut);
        out.push(part);
        at += cut;
        rest = tail;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// One token per started group of 4 bytes (additive enough to read).
    fn bytes4(s: &str) -> usize {
        s.len().div_ceil(4)
    }

    /// Words, and one more per newline: sums to more than the whole.
    fn words(s: &str) -> usize {
        s.split_whitespace().count() + s.matches('\n').count()
    }

    #[test]
    fn table() {
        // (text, budget, expected parts) with one token per character.
        let chars = |s: &str| s.chars().count();
        let cases: &[(&str, usize, &[&str])] = &[
            ("", 5, &[]),
            ("short", 5, &["short"]),
            ("aa\n\nbb\n\ncc", 8, &["aa\n\nbb\n\n", "cc"]),
            ("aa\n\nbb\n\ncc", 6, &["aa\n\n", "bb\n\ncc"]),
            ("aa\n\nbb\n\ncc", 4, &["aa\n\n", "bb\n\n", "cc"]),
            ("\n\naa\n\nbb", 7, &["\n\naa\n\n", "bb"]),
            // A paragraph too big for the budget falls back to lines.
            ("l1\nl2\nl3\n\nx", 6, &["l1\nl2\n", "l3\n\n", "x"]),
            // A line too big falls back to sentences.
            ("One. Two. Three.", 10, &["One. Two. ", "Three."]),
            // A sentence too big falls back to characters.
            ("abcdefgh", 3, &["abc", "def", "gh"]),
            // Multi-byte characters are never cut.
            ("äöüßé", 2, &["äö", "üß", "é"]),
            ("日本語。次の文。", 4, &["日本語。", "次の文。"]),
            // Blank lines holding spaces count as blank; CRLF works.
            ("a\r\n \r\nb\r\n", 6, &["a\r\n \r\n", "b\r\n"]),
        ];
        for (text, budget, want) in cases {
            let got = split(text, *budget, chars).unwrap();
            assert_eq!(&got, want, "{text:?} budget {budget}");
        }
    }

    #[test]
    fn errors_are_one_line() {
        assert_eq!(split("x", 0, |_| 1), Err(SplitError::NoBudget));
        let e = split("ab\u{1F600}", 2, |s| {
            if s.contains('\u{1F600}') {
                3
            } else {
                s.len()
            }
        })
        .unwrap_err();
        assert_eq!(
            e,
            SplitError::CharOverBudget {
                at: 2,
                tokens: 3,
                budget: 2
            }
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn non_additive_counts_are_checked_per_part() {
        // Each paragraph alone is 2 "tokens", any two together 5.
        let count = |s: &str| {
            let n = s.matches("p").count();
            if n <= 1 {
                2
            } else {
                5 * (n - 1)
            }
        };
        let got = split("p\n\np\n\np", 4, count).unwrap();
        assert_eq!(got, ["p\n\n", "p\n\n", "p"]);
    }

    fn random_doc(rng: &mut rand::rngs::StdRng) -> String {
        const ALPHABET: &[&str] = &[
            "a",
            "b",
            "word",
            " ",
            " ",
            "\n",
            "\n\n",
            "\n \n",
            ". ",
            "! ",
            "?",
            "ä",
            "日",
            "。",
            "\u{1F600}",
            "\r\n",
            "\t",
        ];
        let n = rng.gen_range(0..400);
        (0..n)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
            .collect()
    }

    /// Byte offsets where the paragraph level would cut `text`.
    fn paragraph_bounds(text: &str) -> Vec<usize> {
        piece_ends(text, Level::Paragraph)
    }

    #[test]
    fn property_parts_join_to_the_input_within_budget() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0011);
        type Count = (&'static str, fn(&str) -> usize);
        let counts: [Count; 3] = [
            ("bytes4", bytes4),
            ("words", words),
            ("chars", |s| s.chars().count()),
        ];
        for round in 0..3000 {
            let doc = random_doc(&mut rng);
            let budget = rng.gen_range(1..60);
            let (name, count) = counts[round % counts.len()];
            let parts = match split(&doc, budget, count) {
                Ok(p) => p,
                Err(SplitError::CharOverBudget { .. }) => {
                    // Only possible when some character alone is over.
                    assert!(doc
                        .chars()
                        .any(|c| count(c.encode_utf8(&mut [0; 4])) > budget));
                    continue;
                }
                Err(e) => unreachable!("{e}"),
            };
            assert_eq!(parts.concat(), doc, "{name} budget {budget}");
            let mut at = 0;
            let para = paragraph_bounds(&doc);
            for (k, p) in parts.iter().enumerate() {
                assert!(!p.is_empty(), "empty part in {doc:?}");
                assert!(count(p) <= budget, "{name}: part {p:?} over {budget}");
                at += p.len();
                assert!(doc.is_char_boundary(at));
                // A cut inside a paragraph only when that paragraph is
                // over budget on its own.
                if k + 1 < parts.len() && !para.contains(&at) {
                    let start = para.iter().rev().find(|&&e| e < at).copied().unwrap_or(0);
                    let end = para.iter().find(|&&e| e > at).copied().unwrap_or(doc.len());
                    assert!(
                        count(&doc[start..end]) > budget,
                        "{name}: cut at {at} inside a paragraph that fits, doc {doc:?}"
                    );
                }
            }
        }
    }
}
