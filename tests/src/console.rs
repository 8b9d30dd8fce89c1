//! Serial console as an expect-style stream.
//!
//! A reader thread appends everything the guest prints to a shared,
//! normalised text buffer (UTF-8 decoded across read boundaries, `\r` and
//! ANSI CSI sequences removed) and to a raw log file. The test side keeps a
//! cursor into that text: [`Console::wait_for`] searches from the cursor and
//! moves it past the match, so every expected line is consumed once and in
//! order, while the whole transcript stays available for failure dumps.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use regex::Regex;

/// The appliance's console prompt, as the supervisor prints it.
pub const PROMPT: &str = "airlock> ";

/// How many characters of the transcript an error message carries.
const ERROR_TAIL_CHARS: usize = 3000;

/// Failures of the console stream.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("timed out after {secs:.0} s waiting for {pattern} on the serial console; last output:\n{tail}")]
    Timeout {
        pattern: String,
        secs: f64,
        tail: String,
    },
    #[error(
        "serial console closed (QEMU exited) while waiting for {pattern}; last output:\n{tail}"
    )]
    Closed { pattern: String, tail: String },
    #[error("writing to the serial console failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("invalid pattern {pattern:?}: {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("console state lock poisoned (the reader thread panicked)")]
    Poisoned,
}

/// What to wait for: a literal string or a regular expression.
#[derive(Debug, Clone)]
pub enum Pattern {
    Literal(String),
    Regex(Regex),
}

impl Pattern {
    /// A regular expression pattern.
    pub fn regex(re: &str) -> Result<Self, ConsoleError> {
        Regex::new(re)
            .map(Pattern::Regex)
            .map_err(|source| ConsoleError::BadPattern {
                pattern: re.to_owned(),
                source,
            })
    }

    /// Finds the first match in `hay`: (start, end, capture groups).
    pub fn find(&self, hay: &str) -> Option<Match> {
        match self {
            Pattern::Literal(lit) => hay.find(lit.as_str()).map(|start| Match {
                start,
                end: start + lit.len(),
                text: lit.clone(),
                groups: Vec::new(),
            }),
            Pattern::Regex(re) => re.captures(hay).and_then(|caps| {
                let whole = caps.get(0)?;
                Some(Match {
                    start: whole.start(),
                    end: whole.end(),
                    text: whole.as_str().to_owned(),
                    groups: caps
                        .iter()
                        .skip(1)
                        .map(|g| g.map(|m| m.as_str().to_owned()))
                        .collect(),
                })
            }),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pattern::Literal(lit) => format!("{lit:?}"),
            Pattern::Regex(re) => format!("/{}/", re.as_str()),
        }
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Self {
        Pattern::Literal(s.to_owned())
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Self {
        Pattern::Literal(s)
    }
}

/// One match of a pattern in the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Offset of the match, relative to the searched text.
    pub start: usize,
    /// Offset just past the match, relative to the searched text.
    pub end: usize,
    /// The matched text.
    pub text: String,
    /// Capture groups (regex patterns only), without group 0.
    pub groups: Vec<Option<String>>,
}

impl Match {
    /// Capture group `i` (1-based, like regex), or "" when it did not take part.
    pub fn group(&self, i: usize) -> &str {
        self.groups
            .get(i.wrapping_sub(1))
            .and_then(|g| g.as_deref())
            .unwrap_or("")
    }
}

/// Incremental decoder: bytes from the serial line → normalised text.
///
/// Keeps an incomplete UTF-8 sequence or escape sequence that a read split
/// in two until the next chunk arrives.
#[derive(Debug, Default)]
pub struct Normaliser {
    pending: Vec<u8>,
    in_escape: EscapeState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum EscapeState {
    #[default]
    None,
    /// Saw ESC.
    Esc,
    /// Inside `ESC [ ...` until a final byte 0x40..=0x7e.
    Csi,
}

impl Normaliser {
    /// Feeds raw bytes, returns the text they complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut decoded = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    decoded.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    decoded.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(n) => {
                            decoded.push('\u{fffd}');
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        self.filter(&decoded)
    }

    /// Drops `\r`, NUL and ANSI escape sequences.
    fn filter(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match self.in_escape {
                EscapeState::None => match c {
                    '\u{1b}' => self.in_escape = EscapeState::Esc,
                    '\r' | '\0' => {}
                    c => out.push(c),
                },
                EscapeState::Esc => {
                    self.in_escape = if c == '[' {
                        EscapeState::Csi
                    } else {
                        EscapeState::None
                    };
                }
                EscapeState::Csi => {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        self.in_escape = EscapeState::None;
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Default)]
struct Transcript {
    text: String,
    closed: bool,
}

type SharedTranscript = Arc<(Mutex<Transcript>, Condvar)>;

/// The test side of a serial console.
pub struct Console {
    shared: SharedTranscript,
    cursor: usize,
    input: Box<dyn Write + Send>,
    reader: Option<JoinHandle<()>>,
    line_ending: &'static str,
}

impl Console {
    /// Starts reading `output` on a thread (copying raw bytes to `log` if
    /// given); `input` is where typed lines go.
    pub fn start(
        output: impl Read + Send + 'static,
        input: impl Write + Send + 'static,
        log: Option<File>,
    ) -> Self {
        let shared: SharedTranscript = Arc::default();
        let thread_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("serial-reader".into())
            .spawn(move || read_loop(output, log, &thread_shared))
            .ok();
        Console {
            shared,
            cursor: 0,
            input: Box::new(input),
            reader,
            // A terminal sends CR for Enter; the tty's ICRNL turns it into NL.
            line_ending: "\r",
        }
    }

    /// Waits until `pattern` appears after the cursor; moves the cursor past it.
    pub fn wait_for(
        &mut self,
        pattern: impl Into<Pattern>,
        timeout: Duration,
    ) -> Result<Match, ConsoleError> {
        let pattern = pattern.into();
        let (idx, m) = self.wait_for_any(std::slice::from_ref(&pattern), timeout)?;
        debug_assert_eq!(idx, 0);
        Ok(m)
    }

    /// Waits for the first of several patterns (earliest in the text wins);
    /// returns its index and the match, and moves the cursor past it.
    pub fn wait_for_any(
        &mut self,
        patterns: &[Pattern],
        timeout: Duration,
    ) -> Result<(usize, Match), ConsoleError> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.shared;
        let mut guard = lock.lock().map_err(|_| ConsoleError::Poisoned)?;
        loop {
            let hay = guard.text.get(self.cursor..).unwrap_or("");
            let best = patterns
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.find(hay).map(|m| (i, m)))
                .min_by_key(|(_, m)| m.start);
            if let Some((i, m)) = best {
                self.cursor += m.end;
                return Ok((i, m));
            }
            let describe = || {
                patterns
                    .iter()
                    .map(Pattern::describe)
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            if guard.closed {
                return Err(ConsoleError::Closed {
                    pattern: describe(),
                    tail: tail(&guard.text),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ConsoleError::Timeout {
                    pattern: describe(),
                    secs: timeout.as_secs_f64(),
                    tail: tail(&guard.text),
                });
            }
            guard = cond
                .wait_timeout(guard, deadline - now)
                .map_err(|_| ConsoleError::Poisoned)?
                .0;
        }
    }

    /// Types `line` followed by Enter.
    pub fn send_line(&mut self, line: &str) -> Result<(), ConsoleError> {
        self.input
            .write_all(line.as_bytes())
            .and_then(|()| self.input.write_all(self.line_ending.as_bytes()))
            .and_then(|()| self.input.flush())
            .map_err(ConsoleError::Write)
    }

    /// Types `cmd`, waits for its echo and the next prompt, and returns
    /// what was printed in between.
    ///
    /// Waiting for the echo first (the console's tty echoes typed lines)
    /// skips a prompt that an asynchronous notice may have re-printed just
    /// before the command was typed.
    pub fn command(&mut self, cmd: &str, timeout: Duration) -> Result<String, ConsoleError> {
        self.send_line(cmd)?;
        self.wait_for(format!("{cmd}\n"), timeout)?;
        let start = self.cursor;
        let prompt = Pattern::Regex(prompt_at_line_start());
        let m = self.wait_for(prompt, timeout)?;
        self.text_between(start, self.cursor - m.text.len())
    }

    /// Current cursor position (use with [`Console::text_since`]).
    pub fn mark(&self) -> usize {
        self.cursor
    }

    /// Everything printed from `mark` up to now.
    pub fn text_since(&self, mark: usize) -> Result<String, ConsoleError> {
        let (lock, _) = &*self.shared;
        let guard = lock.lock().map_err(|_| ConsoleError::Poisoned)?;
        Ok(guard.text.get(mark..).unwrap_or("").to_owned())
    }

    /// The whole transcript so far.
    pub fn transcript(&self) -> String {
        self.lock()
            .map(|g| g.text.clone())
            .unwrap_or_else(|_| "<console lock poisoned>".into())
    }

    /// Whether the guest side has closed (QEMU exited).
    pub fn is_closed(&self) -> bool {
        self.lock().map(|g| g.closed).unwrap_or(true)
    }

    fn text_between(&self, from: usize, to: usize) -> Result<String, ConsoleError> {
        let guard = self.lock()?;
        Ok(guard.text.get(from..to).unwrap_or("").to_owned())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Transcript>, ConsoleError> {
        self.shared.0.lock().map_err(|_| ConsoleError::Poisoned)
    }

    /// Waits for the reader thread to finish (after QEMU has exited).
    pub fn join_reader(&mut self) {
        if let Some(handle) = self.reader.take() {
            let _ = handle.join();
        }
    }
}

/// The prompt at the start of a line.
fn prompt_at_line_start() -> Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        // A constant pattern: `airlock> ` or, logged in, `airlock alice@operator> `.
        Regex::new(r"(?m)^airlock(?: [a-z0-9._-]+@[a-z]+)?> ").unwrap_or_else(|_| unreachable!())
    })
    .clone()
}

/// The last [`ERROR_TAIL_CHARS`] characters of `text`.
pub fn tail(text: &str) -> String {
    let skip = text.chars().count().saturating_sub(ERROR_TAIL_CHARS);
    text.chars().skip(skip).collect()
}

fn read_loop(mut output: impl Read, mut log: Option<File>, shared: &SharedTranscript) {
    let (lock, cond) = &**shared;
    let mut normaliser = Normaliser::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = match output.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if let Some(f) = log.as_mut() {
            // The log is a convenience copy; the in-memory transcript is authoritative.
            let _ = f.write_all(chunk);
        }
        let text = normaliser.push(chunk);
        if let Ok(mut g) = lock.lock() {
            g.text.push_str(&text);
        }
        cond.notify_all();
    }
    if let Ok(mut g) = lock.lock() {
        g.closed = true;
    }
    cond.notify_all();
}

/// Opens (truncating) the raw console log file.
pub fn open_log(path: &Path) -> Option<File> {
    File::create(path).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn normaliser_joins_utf8_split_across_reads() {
        let mut n = Normaliser::default();
        let bytes = "größe µ".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&n.push(std::slice::from_ref(b)));
        }
        assert_eq!(out, "größe µ");
    }

    #[test]
    fn normaliser_replaces_invalid_bytes_and_strips_cr_and_csi() {
        let mut n = Normaliser::default();
        let out = n.push(b"a\xffb\r\n\x1b[1;32mgreen\x1b[0m\x1b[");
        assert_eq!(out, "a\u{fffd}b\ngreen");
        // The CSI split across reads is still removed.
        assert_eq!(n.push(b"2Jdone"), "done");
    }

    #[test]
    fn regex_match_returns_groups() {
        let p = Pattern::regex(r"stick inserted: (\w+) \((\d+) MiB\)").unwrap();
        let m = p.find("x\n[usb] stick inserted: sdb (16 MiB)\n").unwrap();
        assert_eq!(m.group(1), "sdb");
        assert_eq!(m.group(2), "16");
        assert_eq!(m.group(3), "");
    }

    #[test]
    fn bad_regex_is_reported() {
        let err = Pattern::regex("(unclosed").unwrap_err();
        assert!(err.to_string().contains("invalid pattern"), "{err}");
    }

    /// Drives a Console over a socket pair: one end plays the guest.
    fn console_pair() -> (Console, UnixStream) {
        let (ours, guest) = UnixStream::pair().unwrap();
        let reader = ours.try_clone().unwrap();
        (Console::start(reader, ours, None), guest)
    }

    #[test]
    fn wait_for_consumes_in_order_and_times_out() {
        let (mut con, mut guest) = console_pair();
        guest
            .write_all(b"booting\r\nairlock: console ready\r\n")
            .unwrap();
        let t = Duration::from_secs(5);
        con.wait_for("console ready", t).unwrap();
        // Already consumed: a second wait for the same text times out.
        let err = con
            .wait_for("console ready", Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, ConsoleError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("booting"), "tail in error: {err}");
    }

    #[test]
    fn wait_for_any_picks_the_earliest_match() {
        let (mut con, mut guest) = console_pair();
        guest
            .write_all(b"Kernel panic later; refusal first? no: AVX2 missing\n")
            .unwrap();
        let pats = [Pattern::from("AVX2"), Pattern::from("Kernel panic")];
        let (i, _) = con.wait_for_any(&pats, Duration::from_secs(5)).unwrap();
        assert_eq!(i, 1);
    }

    #[test]
    fn command_returns_output_until_the_next_prompt() {
        let (mut con, guest) = console_pair();
        let mut guest_w = guest.try_clone().unwrap();
        let echo = std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            let mut g = guest;
            while g.read(&mut byte).unwrap() == 1 && byte[0] != b'\r' {
                line.push(byte[0]);
            }
            line
        });
        guest_w
            .write_all(b"airlock> \r\n[usb] stick inserted: sdb (16 MiB)\r\n")
            .unwrap();
        con.wait_for("stick inserted", Duration::from_secs(5))
            .unwrap();
        // The notice re-prints the prompt; command() must not stop at it.
        guest_w.write_all(b"airlock> ").unwrap();
        let handle = std::thread::spawn(move || {
            let out = con.command("status", Duration::from_secs(5));
            (con, out)
        });
        let typed = echo.join().unwrap();
        assert_eq!(typed, b"status");
        guest_w
            .write_all(b"status\r\nversion: 0.1.0\r\nready: yes\r\nairlock> ")
            .unwrap();
        let (mut con, out) = handle.join().unwrap();
        assert_eq!(out.unwrap(), "version: 0.1.0\nready: yes\n");
        // A command with no output.
        let handle = std::thread::spawn(move || {
            let out = con.command("", Duration::from_secs(5));
            (con, out)
        });
        guest_w.write_all(b"\r\nairlock> ").unwrap();
        let (_con, out) = handle.join().unwrap();
        assert_eq!(out.unwrap(), "");
    }

    #[test]
    fn closed_stream_fails_fast() {
        let (mut con, guest) = console_pair();
        drop(guest);
        let err = con.wait_for("never", Duration::from_secs(30)).unwrap_err();
        assert!(matches!(err, ConsoleError::Closed { .. }), "{err}");
    }
}
