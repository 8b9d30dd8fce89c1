//! Minimal QMP (QEMU Machine Protocol) client.
//!
//! QMP is newline-delimited JSON over a unix socket: a greeting, then
//! `qmp_capabilities`, then commands answered by `{"return": ...}` or
//! `{"error": {"class", "desc"}}`, with asynchronous `{"event": ...}`
//! messages interleaved anywhere. Events are queued so a test can wait for
//! e.g. `DEVICE_DELETED` after the command that triggers it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Failures of the QMP conversation.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connecting to the QMP socket {path} failed: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting the QMP socket timeout failed: {0}")]
    SetTimeout(#[source] std::io::Error),
    #[error("sending QMP command {command} failed: {source}")]
    Send {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading from QMP failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("QMP connection closed by QEMU")]
    Closed,
    #[error("QMP sent a line that is not JSON ({line:?}): {source}")]
    BadJson {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("QMP greeting missing: got {0}")]
    NoGreeting(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP sent an unexpected message: {0}")]
    Unexpected(String),
    #[error("timed out after {secs:.0} s waiting for QMP event {event}")]
    EventTimeout { event: String, secs: f64 },
}

/// One QMP session.
pub struct Qmp<S: std::io::Read + Write = UnixStream> {
    reader: BufReader<S>,
    writer: S,
    events: VecDeque<Value>,
}

impl Qmp<UnixStream> {
    /// Connects to QEMU's QMP socket, retrying until `timeout` (QEMU creates
    /// the socket shortly after it starts), and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        };
        // Bounded reads: a hung QEMU fails the test instead of blocking it.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(QmpError::SetTimeout)?;
        let writer = stream.try_clone().map_err(QmpError::Read)?;
        Qmp::handshake(stream, writer)
    }
}

impl<S: std::io::Read + Write> Qmp<S> {
    /// Reads the greeting and enters command mode.
    pub fn handshake(reader: S, writer: S) -> Result<Self, QmpError> {
        let mut qmp = Qmp {
            reader: BufReader::new(reader),
            writer,
            events: VecDeque::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::NoGreeting(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` with optional arguments and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|source| QmpError::Send {
                command: command.to_owned(),
                source,
            })?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                self.events.push_back(reply);
            } else if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            } else if let Some(err) = reply.get("error") {
                let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: field("class"),
                    desc: field("desc"),
                });
            } else {
                return Err(QmpError::Unexpected(reply.to_string()));
            }
        }
    }

    /// Waits for an event named `name` whose `data` satisfies `filter`;
    /// other events stay queued.
    pub fn wait_event(
        &mut self,
        name: &str,
        filter: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let matches = |ev: &Value| {
            ev.get("event").and_then(Value::as_str) == Some(name) && filter(&ev["data"])
        };
        if let Some(pos) = self.events.iter().position(matches) {
            return Ok(self.events.remove(pos).unwrap_or(Value::Null));
        }
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(QmpError::EventTimeout {
                    event: name.to_owned(),
                    secs: timeout.as_secs_f64(),
                });
            }
            match self.read_message() {
                Ok(ev) if matches(&ev) => return Ok(ev),
                Ok(ev) => self.events.push_back(ev),
                // Read timeout: loop and re-check the deadline.
                Err(QmpError::Read(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Events received so far and not yet consumed.
    pub fn pending_events(&self) -> impl Iterator<Item = &Value> {
        self.events.iter()
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).map_err(QmpError::Read)?;
            if n == 0 {
                return Err(QmpError::Closed);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(line.trim()).map_err(|source| QmpError::BadJson {
            line: line.trim().to_owned(),
            source,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Plays QEMU's side of a QMP session from a script of (expected command, replies).
    fn fake_qemu(
        script: Vec<(&'static str, Vec<&'static str>)>,
    ) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let handle = std::thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let mut r = BufReader::new(theirs);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            for (expect, replies) in script {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["execute"], expect, "{line}");
                for reply in replies {
                    w.write_all(reply.as_bytes()).unwrap();
                    w.write_all(b"\r\n").unwrap();
                }
            }
            // Drain until the client hangs up.
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        (ours, handle)
    }

    #[test]
    fn negotiates_then_returns_and_queues_events() {
        let (s, h) = fake_qemu(vec![
            ("qmp_capabilities", vec![r#"{"return": {}}"#]),
            (
                "device_del",
                vec![
                    r#"{"event": "DEVICE_DELETED", "data": {"device": "stick0", "path": "/x"}}"#,
                    r#"{"return": {}}"#,
                ],
            ),
        ]);
        let mut q = Qmp::handshake(s.try_clone().unwrap(), s).unwrap();
        q.execute("device_del", Some(json!({"id": "stick0"})))
            .unwrap();
        assert_eq!(q.pending_events().count(), 1);
        let ev = q
            .wait_event(
                "DEVICE_DELETED",
                |d| d["device"] == "stick0",
                Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!(ev["data"]["path"], "/x");
        drop(q);
        h.join().unwrap();
    }

    #[test]
    fn command_error_carries_class_and_desc() {
        let (s, h) = fake_qemu(vec![
            ("qmp_capabilities", vec![r#"{"return": {}}"#]),
            (
                "blockdev-del",
                vec![r#"{"error": {"class": "GenericError", "desc": "Node 'x' is busy"}}"#],
            ),
        ]);
        let mut q = Qmp::handshake(s.try_clone().unwrap(), s).unwrap();
        let err = q.execute("blockdev-del", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "QMP command blockdev-del failed: GenericError: Node 'x' is busy"
        );
        drop(q);
        h.join().unwrap();
    }

    #[test]
    fn garbage_and_eof_are_errors() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut w = theirs;
        w.write_all(b"not json\n").unwrap();
        let err = Qmp::handshake(ours.try_clone().unwrap(), ours)
            .err()
            .unwrap();
        assert!(matches!(err, QmpError::BadJson { .. }), "{err}");

        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let err = Qmp::handshake(ours.try_clone().unwrap(), ours)
            .err()
            .unwrap();
        assert!(matches!(err, QmpError::Closed), "{err}");
    }
}
