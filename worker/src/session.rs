//! The request loop: reads frames from the supervisor, answers each with
//! streamed tokens and stats, a token count, or an error reply; never panics on input.

use std::io::{Read, Write};

use airlock_formats::protocol::{
    decode_request, read_frame, send, ErrorKind, FrameError, Request, Response, MAX_FRAME_LEN,
};

use crate::engine::{Engine, EngineError};

/// Errors that end a session (the worker then exits).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The connection broke mid-frame or could not be read.
    #[error("reading request: {0}")]
    Read(#[source] FrameError),
    /// A reply could not be written (the supervisor is gone).
    #[error("writing reply: {0}")]
    Write(#[source] FrameError),
}

/// How a session ended normally.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The peer closed the connection between frames.
    Eof,
    /// The peer asked for shutdown.
    Shutdown,
}

/// The reply to `Count`: the number of tokens of `text`, or an inference error.
fn count(engine: &Engine, text: &str) -> Response {
    match engine.tokenize(text) {
        Ok(ids) => Response::Count {
            tokens: u64::try_from(ids.len()).unwrap_or(u64::MAX),
        },
        Err(e) => Response::Error {
            kind: ErrorKind::Inference,
            reason: e.to_string(),
        },
    }
}

/// Serves requests on `conn` until end of stream or `Shutdown`.
pub fn serve<S: Read + Write>(conn: &mut S, engine: &Engine) -> Result<SessionEnd, SessionError> {
    loop {
        let payload = match read_frame(conn, MAX_FRAME_LEN) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(SessionEnd::Eof),
            Err(e) => match e.reply() {
                // The frame was skipped; the stream is still in sync.
                Some(reply) => {
                    send(conn, &reply).map_err(SessionError::Write)?;
                    continue;
                }
                None => return Err(SessionError::Read(e)),
            },
        };
        let req = match decode_request(&payload) {
            Ok(Request::Shutdown) => return Ok(SessionEnd::Shutdown),
            Ok(Request::Generate(g)) => g,
            Ok(Request::Count { text }) => {
                drop(payload);
                send(conn, &count(engine, &text)).map_err(SessionError::Write)?;
                continue;
            }
            Err(e) => {
                send(conn, &e.reply()).map_err(SessionError::Write)?;
                continue;
            }
        };
        drop(payload);
        let mut write_err = None;
        let result = engine.generate(&req, |text| {
            match send(
                conn,
                &Response::Token {
                    text: text.to_string(),
                },
            ) {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        });
        if let Some(e) = write_err {
            return Err(SessionError::Write(e));
        }
        let reply = match result {
            Ok(stats) => Response::Done(stats),
            Err(EngineError::OutputClosed) => continue,
            Err(e) => Response::Error {
                kind: ErrorKind::Inference,
                reason: e.to_string(),
            },
        };
        send(conn, &reply).map_err(SessionError::Write)?;
    }
}
