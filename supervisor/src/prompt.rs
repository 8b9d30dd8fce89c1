//! Reading one answer at a console prompt outside the line discipline:
//! passphrases without echo, names and choices with echo.
//!
//! The tty is switched to non-canonical mode for the answer (restored on
//! every path), so ^C cancels at once instead of waiting for Enter, and
//! what was typed is checked here: any printable character (UTF-8) is
//! accepted; a control character, invalid UTF-8 or a line longer than the
//! limit is refused with its reason once Enter is pressed, and nothing of
//! the answer is kept.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use thiserror::Error;
use zeroize::Zeroizing;

/// Why no answer was taken.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PromptError {
    #[error("cancelled (^C)")]
    Cancelled,
    #[error("refused: longer than {0} bytes; nothing was kept")]
    TooLong(usize),
    #[error("refused: the answer contains a control character; nothing was kept")]
    ControlChar,
    #[error("refused: the answer is not valid UTF-8; nothing was kept")]
    NotUtf8,
    #[error("cancelled: no input for {0} s")]
    Timeout(u64),
    #[error("the terminal hung up")]
    Hangup,
    #[error("terminal settings: {0}")]
    Termios(nix::Error),
}

/// Restores the saved terminal settings when dropped.
struct Restore<'a> {
    tty: &'a File,
    saved: Termios,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, SetArg::TCSANOW, &self.saved);
    }
}

/// Asks `question` and reads one answer of at most `max` bytes; `echo`
/// shows what is typed (never for passphrases).
pub fn ask(
    tty: &mut File,
    question: &str,
    echo: bool,
    max: usize,
    timeout: Duration,
) -> Result<Zeroizing<String>, PromptError> {
    let saved = termios::tcgetattr(&*tty).map_err(PromptError::Termios)?;
    let mut raw = saved.clone();
    raw.local_flags &=
        !(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ECHOE | LocalFlags::ISIG);
    raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    termios::tcsetattr(&*tty, SetArg::TCSANOW, &raw).map_err(PromptError::Termios)?;
    let guard = Restore { tty: &*tty, saved };
    let mut out = guard.tty;
    let _ = out.write_all(question.as_bytes());
    let mut buf: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(64));
    let mut control = false;
    let mut too_long = false;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = out.write_all(b"\n");
            return Err(PromptError::Timeout(timeout.as_secs()));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(guard.tty.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => return Err(PromptError::Hangup),
        }
        let mut chunk = Zeroizing::new([0u8; 512]);
        let n = match (&*guard.tty).read(chunk.as_mut()) {
            Ok(0) => return Err(PromptError::Hangup),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(PromptError::Hangup),
        };
        for &b in chunk.iter().take(n) {
            match b {
                b'\n' | b'\r' => {
                    let _ = out.write_all(b"\n");
                    if too_long {
                        return Err(PromptError::TooLong(max));
                    }
                    if control {
                        return Err(PromptError::ControlChar);
                    }
                    let text = String::from_utf8(std::mem::take(&mut *buf))
                        .map_err(|_| PromptError::NotUtf8)?;
                    return Ok(Zeroizing::new(text));
                }
                0x03 => {
                    let _ = out.write_all(b"^C\n");
                    return Err(PromptError::Cancelled);
                }
                // Backspace / DEL: drop the last character (UTF-8 aware).
                0x7f | 0x08 => {
                    while let Some(last) = buf.pop() {
                        if last & 0xc0 != 0x80 {
                            break;
                        }
                    }
                    if echo {
                        let _ = out.write_all(b"\x08 \x08");
                    }
                }
                // ^U: start again.
                0x15 => {
                    buf.clear();
                    control = false;
                    too_long = false;
                }
                b if b < 0x20 => control = true,
                b => {
                    if buf.len() >= max {
                        too_long = true;
                    } else {
                        buf.push(b);
                        if echo && b.is_ascii() {
                            let _ = out.write_all(&[b]);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], echo: bool, max: usize) -> (Result<String, PromptError>, String) {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut master = File::from(pty.master);
        let mut slave = File::from(pty.slave);
        // Raw mode first (as `ask` sets it), so a long input is not cut by the
        // canonical line limit before `ask` runs; written from a thread since
        // the pty buffer is smaller than the longest case.
        let mut t = termios::tcgetattr(&slave).unwrap();
        t.local_flags &= !(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        termios::tcsetattr(&slave, SetArg::TCSANOW, &t).unwrap();
        let mut w = master.try_clone().unwrap();
        let data = input.to_vec();
        let writer = std::thread::spawn(move || w.write_all(&data));
        let r = ask(&mut slave, "Q: ", echo, max, Duration::from_secs(2)).map(|z| z.to_string());
        let _ = writer.join();
        let mut shown = Vec::new();
        let reader = master.try_clone().unwrap();
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        while poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) > 0 {
            let mut b = [0u8; 4096];
            match master.read(&mut b) {
                Ok(n) if n > 0 => shown.extend_from_slice(&b[..n]),
                _ => break,
            }
        }
        (r, String::from_utf8_lossy(&shown).into_owned())
    }

    #[test]
    fn answers_and_refusals() {
        let long = vec![b'a'; 10_000];
        let mut long_line = long.clone();
        long_line.push(b'\r');
        // (input, echo, max, expected answer or error)
        type Case<'a> = (&'a [u8], bool, usize, Result<&'a str, PromptError>);
        let cases: Vec<Case> = vec![
            (
                b"correct horse battery\r",
                false,
                64,
                Ok("correct horse battery"),
            ),
            (
                "pässwörd ünïcode ok\r".as_bytes(),
                false,
                64,
                Ok("pässwörd ünïcode ok"),
            ),
            (b"abcd\x7f\x7fxy\r", true, 64, Ok("abxy")),
            (b"junk\x15fresh\r", false, 64, Ok("fresh")),
            (b"secret\x03", false, 64, Err(PromptError::Cancelled)),
            (b"sec\x1b[Aret\r", false, 64, Err(PromptError::ControlChar)),
            (b"bad\xff\xfe\r", false, 64, Err(PromptError::NotUtf8)),
            (&long_line, false, 1024, Err(PromptError::TooLong(1024))),
            (b"no enter", false, 64, Err(PromptError::Timeout(2))),
        ];
        for (input, echo, max, want) in cases {
            let (got, shown) = run(input, echo, max);
            let want = want.map(str::to_string);
            assert_eq!(
                got,
                want,
                "{:?}",
                String::from_utf8_lossy(&input[..input.len().min(40)])
            );
            if !echo {
                assert!(
                    !shown.contains("secret") && !shown.contains("horse"),
                    "echoed: {shown}"
                );
            }
        }
        let (_, shown) = run(b"alice\r", true, 64);
        assert!(shown.contains("Q: alice"), "{shown}");
    }
}
