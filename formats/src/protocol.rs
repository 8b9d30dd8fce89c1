//! Worker protocol: versioned, length-prefixed serde frames between the
//! supervisor and the sandboxed inference worker.
//!
//! Wire format (documented in `docs/worker.md`):
//!
//! ```text
//! frame   = length payload
//! length  = u32, little-endian, 1 ..= MAX_FRAME_LEN bytes
//! payload = UTF-8 JSON object {"v": PROTOCOL_VERSION, "msg": <message>}
//! ```
//!
//! The length is checked against the limit *before* any buffer is allocated;
//! an oversized frame is skipped (drained without being stored) so that the
//! connection stays in sync and the peer gets an error reply. A payload is
//! decoded in two steps: first only `v` is read, so that a frame from a newer
//! peer is answered with "unsupported protocol version" rather than a
//! confusing field error; then the whole frame is parsed with unknown fields
//! rejected, then the request is validated against the limits below.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame payload accepted in either direction (bytes).
pub const MAX_FRAME_LEN: u32 = 4 * 1024 * 1024;
/// Largest total size of all message contents of one request (bytes).
pub const MAX_PROMPT_BYTES: usize = 3 * 1024 * 1024;
/// Most messages in one request.
pub const MAX_MESSAGES: usize = 64;
/// Largest `max_tokens` a request may ask for.
pub const MAX_NEW_TOKENS: u32 = 32_768;
/// Most stop strings in one request.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string (bytes).
pub const MAX_STOP_LEN: usize = 256;
/// Largest accepted temperature.
pub const MAX_TEMPERATURE: f32 = 10.0;

/// Who wrote a message of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The operator's text (the document and the question).
    User,
    /// An earlier answer of the model.
    Assistant,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Author of the message.
    pub role: Role,
    /// Text of the message.
    pub content: String,
}

/// Generate a completion for a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Conversation, rendered with the model's chat template; the last one is the user's.
    pub messages: Vec<Message>,
    /// Most tokens to generate (1 ..= MAX_NEW_TOKENS).
    pub max_tokens: u32,
    /// Sampling temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Seed of the sampler: the same seed, model and request give the same tokens.
    pub seed: u64,
    /// Generation stops when one of these strings is produced.
    #[serde(default)]
    pub stop: Vec<String>,
}

/// Messages from the supervisor to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Run one generation; the worker answers with tokens then `Done`, or `Error`.
    Generate(GenerateRequest),
    /// Count the tokens of `text` with the model's tokenizer (no chat template, no BOS);
    /// the worker answers with `Count`, or `Error`.
    Count {
        /// The text (at most [`MAX_PROMPT_BYTES`]).
        text: String,
    },
    /// Exit cleanly.
    Shutdown,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced its end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` (or the context length) was reached.
    Length,
}

/// Figures of one finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Tokens of the rendered prompt.
    pub prompt_tokens: u64,
    /// Prompt processing (prefill) speed.
    pub prompt_tok_per_s: f64,
    /// Generated tokens.
    pub decode_tokens: u64,
    /// Generation (decode) speed.
    pub decode_tok_per_s: f64,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Peak resident memory of the worker process so far (KiB).
    pub peak_rss_kib: u64,
}

/// Class of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The frame's `v` is not [`PROTOCOL_VERSION`].
    UnsupportedVersion,
    /// The frame is not a valid message (bad length, not JSON, unknown fields, ...).
    MalformedFrame,
    /// The frame is longer than [`MAX_FRAME_LEN`].
    FrameTooLarge,
    /// The request is well-formed but outside the limits.
    InvalidRequest,
    /// The model failed while generating.
    Inference,
    /// The model could not be loaded; the worker exits after this reply.
    ModelLoad,
}

/// Messages from the worker to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The model is loaded; requests are accepted from now on.
    Ready {
        /// File name of the model that was loaded.
        model: String,
        /// Time taken to load it (ms).
        load_ms: u64,
        /// The model's context length (tokens), when the engine reports one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_length: Option<u64>,
    },
    /// The answer to `Count`: tokens of the text.
    Count {
        /// Number of tokens.
        tokens: u64,
    },
    /// A piece of generated text (one or more tokens).
    Token {
        /// The text.
        text: String,
    },
    /// Generation finished.
    Done(Stats),
    /// The request (or frame) was refused or failed; the worker keeps serving.
    Error {
        /// Class of the error.
        kind: ErrorKind,
        /// One-line reason for a human.
        reason: String,
    },
}

/// Errors of reading and writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame length prefix is zero.
    #[error("malformed frame: length is zero")]
    Empty,
    /// The frame is longer than allowed; its payload was skipped.
    #[error("frame too large: {len} bytes, limit {max}")]
    TooLarge {
        /// Length announced by the prefix.
        len: u32,
        /// Limit in force.
        max: u32,
    },
    /// The stream ended in the middle of a frame.
    #[error("truncated frame: stream ended after {got} of {want} bytes")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        want: usize,
    },
    /// Reading the stream failed.
    #[error("reading frame: {0}")]
    Read(#[source] io::Error),
    /// Writing the stream failed.
    #[error("writing frame: {0}")]
    Write(#[source] io::Error),
    /// The message to send does not fit in a frame.
    #[error("outgoing message of {len} bytes exceeds the frame limit {max}")]
    OutgoingTooLarge {
        /// Encoded length.
        len: usize,
        /// Limit in force.
        max: u32,
    },
    /// Encoding the message failed.
    #[error("encoding message: {0}")]
    Encode(#[source] serde_json::Error),
}

impl FrameError {
    /// The error reply a peer gets for this frame error, if the connection can carry one.
    pub fn reply(&self) -> Option<Response> {
        let kind = match self {
            FrameError::Empty => ErrorKind::MalformedFrame,
            FrameError::TooLarge { .. } => ErrorKind::FrameTooLarge,
            _ => return None,
        };
        Some(Response::Error {
            kind,
            reason: self.to_string(),
        })
    }
}

/// Errors of decoding and validating a frame payload.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The payload is not a JSON object with an unsigned integer `v`.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The payload's version is not the one this build speaks.
    #[error("unsupported protocol version {got} (this worker speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// Version found in the frame.
        got: u64,
    },
    /// The request is well-formed but outside the limits.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// The error reply a peer gets for this decode error.
    pub fn reply(&self) -> Response {
        let kind = match self {
            DecodeError::Malformed(_) => ErrorKind::MalformedFrame,
            DecodeError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            DecodeError::Invalid(_) => ErrorKind::InvalidRequest,
        };
        Response::Error {
            kind,
            reason: self.to_string(),
        }
    }
}

#[derive(Serialize)]
struct OutFrame<'a, T> {
    v: u32,
    msg: &'a T,
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InFrame<T> {
    #[allow(dead_code)]
    v: u64,
    msg: T,
}

/// Reads one frame payload of at most `max` bytes.
///
/// Returns `Ok(None)` on a clean end of stream between frames. An oversized
/// frame is drained (never stored) and reported as [`FrameError::TooLarge`],
/// after which the stream is positioned at the next frame.
pub fn read_frame<R: Read>(r: &mut R, max: u32) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len_buf = [0u8; 4];
    let got = read_full(r, &mut len_buf)?;
    if got == 0 {
        return Ok(None);
    }
    if got < len_buf.len() {
        return Err(FrameError::Truncated { got, want: 4 });
    }
    let len = u32::from_le_bytes(len_buf);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        let skipped = io::copy(&mut r.by_ref().take(u64::from(len)), &mut io::sink())
            .map_err(FrameError::Read)?;
        if skipped < u64::from(len) {
            return Err(FrameError::Truncated {
                got: usize::try_from(skipped).unwrap_or(usize::MAX),
                want: len as usize,
            });
        }
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len as usize];
    let got = read_full(r, &mut payload)?;
    if got < payload.len() {
        return Err(FrameError::Truncated {
            got,
            want: payload.len(),
        });
    }
    Ok(Some(payload))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Read(e)),
        }
    }
    Ok(filled)
}

/// Encodes `msg` as one frame payload (without the length prefix).
pub fn encode_payload<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    serde_json::to_vec(&OutFrame {
        v: PROTOCOL_VERSION,
        msg,
    })
    .map_err(FrameError::Encode)
}

/// Writes one raw frame (length prefix + payload) and flushes.
pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME_LEN)
        .ok_or(FrameError::OutgoingTooLarge {
            len: payload.len(),
            max: MAX_FRAME_LEN,
        })?;
    let mut buf = Vec::with_capacity(payload.len() + 4);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf).map_err(FrameError::Write)?;
    w.flush().map_err(FrameError::Write)
}

/// Encodes and writes one message.
pub fn send<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    write_frame(w, &encode_payload(msg)?)
}

/// Decodes a payload: version first, then the message with unknown fields refused.
pub fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, DecodeError> {
    let probe: VersionProbe = serde_json::from_slice(payload).map_err(|e| {
        DecodeError::Malformed(format!(
            "not a JSON object with an unsigned integer \"v\" ({e})"
        ))
    })?;
    if probe.v != u64::from(PROTOCOL_VERSION) {
        return Err(DecodeError::UnsupportedVersion { got: probe.v });
    }
    let frame: InFrame<T> =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(frame.msg)
}

/// Decodes and validates a request payload.
pub fn decode_request(payload: &[u8]) -> Result<Request, DecodeError> {
    let req: Request = decode(payload)?;
    match &req {
        Request::Generate(g) => g.validate().map_err(DecodeError::Invalid)?,
        Request::Count { text } if text.len() > MAX_PROMPT_BYTES => {
            return Err(DecodeError::Invalid(format!(
                "text of {} bytes to count, limit {MAX_PROMPT_BYTES}",
                text.len()
            )))
        }
        Request::Count { .. } | Request::Shutdown => {}
    }
    Ok(req)
}

/// Decodes a response payload (supervisor side).
pub fn decode_response(payload: &[u8]) -> Result<Response, DecodeError> {
    decode(payload)
}

impl GenerateRequest {
    /// Checks the request against the protocol limits; the error is a one-line reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.messages.is_empty() {
            return Err("no messages".into());
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(format!(
                "{} messages, limit {MAX_MESSAGES}",
                self.messages.len()
            ));
        }
        if self.messages.last().map(|m| m.role) != Some(Role::User) {
            return Err("the last message must be the user's".into());
        }
        let total: usize = self.messages.iter().map(|m| m.content.len()).sum();
        if total > MAX_PROMPT_BYTES {
            return Err(format!(
                "messages hold {total} bytes, limit {MAX_PROMPT_BYTES}"
            ));
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_NEW_TOKENS {
            return Err(format!(
                "max_tokens {} is outside 1..={MAX_NEW_TOKENS}",
                self.max_tokens
            ));
        }
        if !self.temperature.is_finite() || !(0.0..=MAX_TEMPERATURE).contains(&self.temperature) {
            return Err(format!(
                "temperature {} is outside 0..={MAX_TEMPERATURE}",
                self.temperature
            ));
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(format!("top_p {} is outside (0, 1]", self.top_p));
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(format!(
                "{} stop strings, limit {MAX_STOP_STRINGS}",
                self.stop.len()
            ));
        }
        for s in &self.stop {
            if s.is_empty() {
                return Err("empty stop string".into());
            }
            if s.len() > MAX_STOP_LEN {
                return Err(format!(
                    "stop string of {} bytes, limit {MAX_STOP_LEN}",
                    s.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn req() -> GenerateRequest {
        GenerateRequest {
            messages: vec![
                Message {
                    role: Role::System,
                    content: "Be brief.".into(),
                },
                Message {
                    role: Role::User,
                    content: "Summarise.".into(),
                },
            ],
            max_tokens: 16,
            temperature: 0.7,
            top_p: 0.9,
            seed: 42,
            stop: vec!["\n\n".into()],
        }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn invalid_reason(f: impl FnOnce(&mut GenerateRequest)) -> String {
        let mut r = req();
        f(&mut r);
        let payload = encode_payload(&Request::Generate(r)).unwrap();
        match decode_request(&payload) {
            Err(e @ DecodeError::Invalid(_)) => e.to_string(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn request_round_trips_through_a_frame() {
        let mut wire = Vec::new();
        send(&mut wire, &Request::Generate(req())).unwrap();
        let mut cur = io::Cursor::new(wire);
        let payload = read_frame(&mut cur, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(decode_request(&payload).unwrap(), Request::Generate(req()));
        assert!(read_frame(&mut cur, MAX_FRAME_LEN).unwrap().is_none());
    }

    #[test]
    fn responses_round_trip() {
        let msgs = [
            Response::Ready {
                model: "m.gguf".into(),
                load_ms: 3,
                context_length: None,
            },
            Response::Ready {
                model: "m.gguf".into(),
                load_ms: 3,
                context_length: Some(8192),
            },
            Response::Count { tokens: 0 },
            Response::Count { tokens: u64::MAX },
            Response::Token { text: "hi".into() },
            Response::Done(Stats {
                prompt_tokens: 5,
                prompt_tok_per_s: 10.5,
                decode_tokens: 3,
                decode_tok_per_s: 2.0,
                finish_reason: FinishReason::Length,
                peak_rss_kib: 1024,
            }),
            Response::Error {
                kind: ErrorKind::Inference,
                reason: "x".into(),
            },
        ];
        for m in msgs {
            let p = encode_payload(&m).unwrap();
            assert_eq!(decode_response(&p).unwrap(), m);
        }
    }

    #[test]
    fn requests_round_trip() {
        let msgs = [
            Request::Generate(req()),
            Request::Count {
                text: String::new(),
            },
            Request::Count {
                text: "a document\n\u{0}\u{202e}".into(),
            },
            Request::Shutdown,
        ];
        for m in msgs {
            let p = encode_payload(&m).unwrap();
            assert_eq!(decode_request(&p).unwrap(), m);
        }
    }

    #[test]
    fn wire_shape_is_documented_json() {
        let cases: [(&dyn erased::Encode, &str); 5] = [
            (&Request::Shutdown, r#"{"v":1,"msg":"shutdown"}"#),
            (
                &Request::Count { text: "hi".into() },
                r#"{"v":1,"msg":{"count":{"text":"hi"}}}"#,
            ),
            (
                &Response::Count { tokens: 7 },
                r#"{"v":1,"msg":{"count":{"tokens":7}}}"#,
            ),
            (
                &Response::Ready {
                    model: "m.gguf".into(),
                    load_ms: 3,
                    context_length: Some(2048),
                },
                r#"{"v":1,"msg":{"ready":{"model":"m.gguf","load_ms":3,"context_length":2048}}}"#,
            ),
            (
                &Response::Ready {
                    model: "m.gguf".into(),
                    load_ms: 3,
                    context_length: None,
                },
                r#"{"v":1,"msg":{"ready":{"model":"m.gguf","load_ms":3}}}"#,
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(msg.encode(), want);
        }
        // A Ready without the field (an older worker) still decodes.
        assert_eq!(
            decode_response(br#"{"v":1,"msg":{"ready":{"model":"m","load_ms":1}}}"#).unwrap(),
            Response::Ready {
                model: "m".into(),
                load_ms: 1,
                context_length: None
            }
        );
    }

    /// Encoding requests and responses through one table.
    mod erased {
        pub trait Encode {
            fn encode(&self) -> String;
        }
        impl<T: serde::Serialize> Encode for T {
            fn encode(&self) -> String {
                String::from_utf8(super::encode_payload(self).unwrap()).unwrap()
            }
        }
    }

    #[test]
    fn count_text_over_the_limit_is_invalid() {
        let ok = Request::Count {
            text: "a".repeat(MAX_PROMPT_BYTES),
        };
        assert_eq!(decode_request(&encode_payload(&ok).unwrap()).unwrap(), ok);
        let big = Request::Count {
            text: "a".repeat(MAX_PROMPT_BYTES + 1),
        };
        let err = decode_request(&encode_payload(&big).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request: text of 3145729 bytes to count, limit 3145728"
        );
        assert!(matches!(
            err.reply(),
            Response::Error {
                kind: ErrorKind::InvalidRequest,
                ..
            }
        ));
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation_and_skipped() {
        // Announces 4 GiB - 1: must be refused from the prefix alone.
        let mut wire = u32::MAX.to_le_bytes().to_vec();
        wire.extend_from_slice(&[0u8; 8]);
        let err = read_frame(&mut io::Cursor::new(wire), MAX_FRAME_LEN).unwrap_err();
        // Stream ended while skipping: reported as truncated, no allocation happened.
        assert_eq!(
            err.to_string(),
            "truncated frame: stream ended after 8 of 4294967295 bytes"
        );

        // An oversized frame followed by a good one: the good one is still read.
        let mut wire = framed(&[b'x'; 100]);
        wire.extend(framed(&encode_payload(&Request::Shutdown).unwrap()));
        let mut cur = io::Cursor::new(wire);
        let err = read_frame(&mut cur, 50).unwrap_err();
        assert_eq!(err.to_string(), "frame too large: 100 bytes, limit 50");
        let reply = err.reply().unwrap();
        assert!(matches!(
            reply,
            Response::Error {
                kind: ErrorKind::FrameTooLarge,
                ..
            }
        ));
        let next = read_frame(&mut cur, 50).unwrap().unwrap();
        assert_eq!(decode_request(&next).unwrap(), Request::Shutdown);
    }

    #[test]
    fn zero_length_frame_is_malformed() {
        let err = read_frame(&mut io::Cursor::new(vec![0, 0, 0, 0]), MAX_FRAME_LEN).unwrap_err();
        assert_eq!(err.to_string(), "malformed frame: length is zero");
        assert!(matches!(
            err.reply(),
            Some(Response::Error {
                kind: ErrorKind::MalformedFrame,
                ..
            })
        ));
    }

    #[test]
    fn truncated_prefix_and_payload_are_reported() {
        let err = read_frame(&mut io::Cursor::new(vec![5, 0]), MAX_FRAME_LEN).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated frame: stream ended after 2 of 4 bytes"
        );
        let err =
            read_frame(&mut io::Cursor::new(vec![5, 0, 0, 0, b'{']), MAX_FRAME_LEN).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated frame: stream ended after 1 of 5 bytes"
        );
        assert!(err.reply().is_none());
    }

    #[test]
    fn unknown_version_is_refused_with_its_number() {
        let err = decode_request(br#"{"v":2,"msg":"shutdown"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported protocol version 2 (this worker speaks 1)"
        );
        assert!(matches!(
            err.reply(),
            Response::Error {
                kind: ErrorKind::UnsupportedVersion,
                ..
            }
        ));
    }

    #[test]
    fn malformed_payloads_are_refused_with_reasons() {
        let cases: [(&[u8], &str); 6] = [
            (b"\xff\xfe", "malformed frame: not a JSON object"),
            (b"[1,2]", "malformed frame: not a JSON object"),
            (br#"{"msg":"shutdown"}"#, "missing field `v`"),
            (br#"{"v":1,"msg":"reboot"}"#, "unknown variant `reboot`"),
            (br#"{"v":1,"msg":"shutdown","x":1}"#, "unknown field `x`"),
            (
                br#"{"v":1,"msg":{"generate":{"messages":[],"max_tokens":1}}}"#,
                "missing field `temperature`",
            ),
        ];
        for (payload, want) in cases {
            let err = decode_request(payload).unwrap_err();
            assert!(
                matches!(err, DecodeError::Malformed(_)),
                "{payload:?}: {err:?}"
            );
            assert!(err.to_string().contains(want), "{payload:?}: {err}");
            assert!(matches!(
                err.reply(),
                Response::Error {
                    kind: ErrorKind::MalformedFrame,
                    ..
                }
            ));
        }
    }

    #[test]
    fn unknown_request_field_is_refused() {
        let p = br#"{"v":1,"msg":{"generate":{"messages":[{"role":"user","content":"x"}],"max_tokens":1,"temperature":0,"top_p":1,"seed":0,"tools":[]}}}"#;
        let err = decode_request(p).unwrap_err();
        assert!(err.to_string().contains("unknown field `tools`"), "{err}");
    }

    #[test]
    fn every_limit_is_enforced_with_its_reason() {
        assert_eq!(
            invalid_reason(|r| r.messages.clear()),
            "invalid request: no messages"
        );
        assert_eq!(
            invalid_reason(|r| r.messages = vec![r.messages[1].clone(); MAX_MESSAGES + 1]),
            "invalid request: 65 messages, limit 64"
        );
        assert_eq!(
            invalid_reason(|r| {
                r.messages.pop();
            }),
            "invalid request: the last message must be the user's"
        );
        assert_eq!(
            invalid_reason(|r| r.messages[1].content = "a".repeat(MAX_PROMPT_BYTES)),
            format!(
                "invalid request: messages hold {} bytes, limit {MAX_PROMPT_BYTES}",
                MAX_PROMPT_BYTES + 9
            )
        );
        assert_eq!(
            invalid_reason(|r| r.max_tokens = 0),
            "invalid request: max_tokens 0 is outside 1..=32768"
        );
        assert_eq!(
            invalid_reason(|r| r.max_tokens = MAX_NEW_TOKENS + 1),
            "invalid request: max_tokens 32769 is outside 1..=32768"
        );
        assert_eq!(
            invalid_reason(|r| r.temperature = -0.5),
            "invalid request: temperature -0.5 is outside 0..=10"
        );
        assert_eq!(
            invalid_reason(|r| r.top_p = 0.0),
            "invalid request: top_p 0 is outside (0, 1]"
        );
        assert_eq!(
            invalid_reason(|r| r.top_p = 1.5),
            "invalid request: top_p 1.5 is outside (0, 1]"
        );
        assert_eq!(
            invalid_reason(|r| r.stop = vec!["x".into(); MAX_STOP_STRINGS + 1]),
            "invalid request: 17 stop strings, limit 16"
        );
        assert_eq!(
            invalid_reason(|r| r.stop = vec![String::new()]),
            "invalid request: empty stop string"
        );
        assert_eq!(
            invalid_reason(|r| r.stop = vec!["s".repeat(MAX_STOP_LEN + 1)]),
            "invalid request: stop string of 257 bytes, limit 256"
        );
        // NaN cannot be written in JSON, so it can only arrive as a malformed frame.
        let mut r = req();
        r.temperature = f32::NAN;
        assert!(r.validate().unwrap_err().contains("temperature NaN"));
    }

    #[test]
    fn outgoing_message_over_the_limit_is_refused() {
        let big = Response::Token {
            text: "a".repeat(MAX_FRAME_LEN as usize),
        };
        let err = send(&mut Vec::new(), &big).unwrap_err();
        assert!(err.to_string().starts_with("outgoing message of"), "{err}");
    }
}
