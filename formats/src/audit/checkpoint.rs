//! Checkpoints: the C2SP `tlog-checkpoint` body (origin, tree size, base64
//! root) with one extension line for the time, wrapped in a signed note.
//!
//! ```text
//! airlock.local/5f2c9a1e/audit
//! 42
//! 1r2Lqv6HkhyaXw8zXqM0EdFrUcWJlHEwxNs0VdWFLeA=
//! time 1796357711 0123456789abcdef0123456789abcdef 815042
//!
//! — airlock.local/5f2c9a1e/audit Az3grlz3b1xKcOYG...
//! ```
//!
//! The extension line is `time <wall UNIX seconds> <boot id> <uptime ms>`,
//! the same clocks as an entry's. Standard tooling ignores extension lines
//! and reads origin, size and root. The body is parsed with the
//! `tlog_tiles` crate's checkpoint parser; the note signature is checked by
//! [`crate::audit::note`].

use crate::audit::merkle::{hash_from_base64, hash_to_base64, Hash};
use crate::audit::note::{NoteError, NoteSigner, NoteVerifier};

/// Errors of this module; each names the failing step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("{0}")]
    Note(#[from] NoteError),
    #[error("checkpoint body is not a C2SP tlog-checkpoint")]
    Body,
    #[error("checkpoint root is not base64 of 32 bytes")]
    Root,
    #[error("checkpoint has no `time <wall> <boot id> <uptime ms>` line as its only extension")]
    Time,
    #[error("checkpoint origin {got:?} is not the key's name {want:?}")]
    Origin { got: String, want: String },
    #[error("origin {0:?} is not a valid key name")]
    OriginName(String),
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// The clocks at signing (as in an entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub wall: u64,
    pub boot: String,
    pub uptime_ms: u64,
}

/// A checkpoint body.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub time: Stamp,
}

impl Checkpoint {
    /// The body text (ends in `\n`).
    pub fn to_text(&self) -> Result<String> {
        let ext = format!(
            "time {} {} {}\n",
            self.time.wall, self.time.boot, self.time.uptime_ms
        );
        let c = tlog_tiles::Checkpoint::new(&self.origin, self.size, self.root, &ext)
            .map_err(|_| CheckpointError::Body)?;
        String::from_utf8(c.to_bytes()).map_err(|_| CheckpointError::Body)
    }

    /// Strict parse of a body text.
    pub fn parse(text: &str) -> Result<Self> {
        let c = tlog_tiles::Checkpoint::from_bytes(text.as_bytes())
            .map_err(|_| CheckpointError::Body)?;
        // The root line again, through our stricter base64 check.
        let root_line = text.lines().nth(2).ok_or(CheckpointError::Body)?;
        let root = hash_from_base64(root_line).map_err(|_| CheckpointError::Root)?;
        let time = parse_time(c.extension()).ok_or(CheckpointError::Time)?;
        crate::audit::note::validate_name(c.origin())
            .map_err(|_| CheckpointError::OriginName(c.origin().to_owned()))?;
        let cp = Self {
            origin: c.origin().to_owned(),
            size: c.size(),
            root,
            time,
        };
        // One spelling per checkpoint.
        if cp.to_text()? != text {
            return Err(CheckpointError::Body);
        }
        Ok(cp)
    }

    /// Signs the body: the whole signed note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String> {
        if self.origin != signer.name() {
            return Err(CheckpointError::Origin {
                got: self.origin.clone(),
                want: signer.name().to_owned(),
            });
        }
        Ok(signer.sign(&self.to_text()?)?)
    }

    /// Checks the note's signature by `key` and parses its body; the origin
    /// must be the key's name.
    pub fn open(note: &[u8], key: &NoteVerifier) -> Result<Self> {
        let text = key.open(note)?;
        let cp = Self::parse(text)?;
        if cp.origin != key.name() {
            return Err(CheckpointError::Origin {
                got: cp.origin,
                want: key.name().to_owned(),
            });
        }
        Ok(cp)
    }

    /// `size N, root B64, at RFC3339` for messages.
    pub fn describe(&self) -> String {
        format!(
            "size {}, root {}, {}",
            self.size,
            hash_to_base64(&self.root),
            crate::manifest::format_rfc3339(self.time.wall)
        )
    }
}

fn parse_time(ext: &str) -> Option<Stamp> {
    let line = ext.strip_suffix('\n')?;
    let mut f = line.split(' ');
    let (Some("time"), Some(w), Some(b), Some(u), None) =
        (f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return None;
    };
    let num = |s: &str| -> Option<u64> {
        let n: u64 = s.parse().ok()?;
        (n.to_string() == s).then_some(n)
    };
    let boot_ok = b.len() == 32
        && b.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if !boot_ok {
        return None;
    }
    Some(Stamp {
        wall: num(w)?,
        boot: b.to_owned(),
        uptime_ms: num(u)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::audit::merkle::EMPTY_ROOT;

    fn sample() -> Checkpoint {
        Checkpoint {
            origin: "airlock.local/test/audit".into(),
            size: 42,
            root: EMPTY_ROOT,
            time: Stamp {
                wall: 1_796_357_711,
                boot: "0123456789abcdef0123456789abcdef".into(),
                uptime_ms: 815_042,
            },
        }
    }

    #[test]
    fn text_round_trip_and_exact_form() {
        let t = sample().to_text().unwrap();
        assert_eq!(
            t,
            "airlock.local/test/audit\n42\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\
             time 1796357711 0123456789abcdef0123456789abcdef 815042\n"
        );
        assert_eq!(Checkpoint::parse(&t).unwrap(), sample());
        let signer = NoteSigner::from_seed("airlock.local/test/audit", &[3; 32]).unwrap();
        let note = sample().sign(&signer).unwrap();
        assert_eq!(
            Checkpoint::open(note.as_bytes(), &signer.verifier()).unwrap(),
            sample()
        );
    }

    #[test]
    fn malformed_bodies_refused() {
        let t = sample().to_text().unwrap();
        // (body, error)
        let cases: Vec<(String, CheckpointError)> = vec![
            (t.replace("\n42\n", "\n042\n"), CheckpointError::Body),
            (
                t.replace("time 1796357711 ", "time  1796357711 "),
                CheckpointError::Time,
            ),
            (t.replace(" 815042", ""), CheckpointError::Time),
            (
                t.replace(" 815042\n", " 815042\nextra\n"),
                CheckpointError::Time,
            ),
            (t.replace("=\n", "\n"), CheckpointError::Body),
            (t.trim_end().to_owned(), CheckpointError::Body),
        ];
        for (body, want) in cases {
            assert_eq!(Checkpoint::parse(&body), Err(want), "{body:?}");
        }
        let other = NoteSigner::from_seed("elsewhere", &[3; 32]).unwrap();
        assert!(matches!(
            sample().sign(&other),
            Err(CheckpointError::Origin { .. })
        ));
    }
}
