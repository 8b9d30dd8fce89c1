//! Request frames built from borrowed contents in buffers that are wiped when freed.

use std::io::{self, Write};

use airlock_formats::protocol::{GenerateRequest, MAX_FRAME_LEN, PROTOCOL_VERSION};
use serde::Serialize;
use zeroize::Zeroizing;

use super::Failure;

/// The requests this driver sends, borrowing their contents (no copy of the document);
/// the wire shape is `airlock_formats::protocol::Request`'s (a test compares the bytes).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum OutRequest<'a> {
    Generate(&'a GenerateRequest),
    Count { text: &'a str },
    Shutdown,
}

#[derive(Serialize)]
struct OutFrame<'a> {
    v: u32,
    msg: &'a OutRequest<'a>,
}

/// Counts the bytes written to it.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The whole frame (length prefix and payload) of `req` in a buffer of exact capacity that is
/// wiped when freed.
pub(super) fn frame(req: &OutRequest<'_>) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let out = OutFrame {
        v: PROTOCOL_VERSION,
        msg: req,
    };
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, &out).map_err(Failure::Encode)?;
    let len = u32::try_from(counter.0)
        .ok()
        .filter(|&l| l <= MAX_FRAME_LEN)
        .ok_or(Failure::TooLarge { len: counter.0 })?;
    let mut buf = Zeroizing::new(Vec::with_capacity(4 + counter.0));
    buf.extend_from_slice(&len.to_le_bytes());
    serde_json::to_writer(&mut *buf, &out).map_err(Failure::Encode)?;
    Ok(buf)
}

/// Appends `s` to `out`; when it must grow, the old buffer is wiped (never reallocated in
/// place).
pub(super) fn push_wiped(out: &mut Zeroizing<String>, s: &str) {
    let need = out.len() + s.len();
    if need > out.capacity() {
        let mut grown = Zeroizing::new(String::with_capacity(need.max(out.capacity() * 2)));
        grown.push_str(out);
        *out = grown;
    }
    out.push_str(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::chat_messages;
    use airlock_formats::protocol::{encode_payload, Request};

    fn req() -> GenerateRequest {
        GenerateRequest {
            messages: chat_messages("Be brief.", "Summarise:\n\u{0}\u{202e}\"x\""),
            max_tokens: 16,
            temperature: 0.5,
            top_p: 0.9,
            seed: 3,
            stop: vec!["\n\n".into()],
        }
    }

    #[test]
    fn frames_are_the_protocols_bytes() {
        let g = req();
        for (ours, theirs) in [
            (OutRequest::Generate(&g), Request::Generate(g.clone())),
            (
                OutRequest::Count { text: "a\u{1}b" },
                Request::Count {
                    text: "a\u{1}b".into(),
                },
            ),
            (
                OutRequest::Count { text: "" },
                Request::Count {
                    text: String::new(),
                },
            ),
            (OutRequest::Shutdown, Request::Shutdown),
        ] {
            let f = frame(&ours).unwrap();
            let p = encode_payload(&theirs).unwrap();
            assert_eq!(f.len(), 4 + p.len());
            assert_eq!(f.capacity(), f.len(), "exact capacity: no reallocated copy");
            assert_eq!(&f[..4], &(p.len() as u32).to_le_bytes());
            assert_eq!(&f[4..], &p[..]);
        }
    }

    #[test]
    fn a_request_over_the_frame_limit_is_refused() {
        let text = "a".repeat(MAX_FRAME_LEN as usize);
        let e = frame(&OutRequest::Count { text: &text }).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the request of {} bytes exceeds the frame limit {MAX_FRAME_LEN}",
                MAX_FRAME_LEN as usize + 35
            )
        );
    }

    #[test]
    fn growing_the_answer_keeps_its_text() {
        let mut out = Zeroizing::new(String::new());
        for piece in ["a", "bc", "", "def", &"x".repeat(100)] {
            push_wiped(&mut out, piece);
        }
        assert_eq!(out.as_str(), format!("abcdef{}", "x".repeat(100)));
    }
}
