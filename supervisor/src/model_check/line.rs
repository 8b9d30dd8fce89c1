//! The `model-check` child's output: one line per fact, PID 1's only input
//! from it (and the content of the per-boot record files).
//!
//! ```text
//! checking NAME VERSION BYTES        a model's check starts (for `status`)
//! ok NAME VERSION BYTES MILLIS       its files match the signed manifest
//! refused NAME VERSION REASON        they do not (or could not be read)
//! recovered PATH                     a leftover removed by the store's recovery
//! error REASON                       a step of the check itself failed
//! ```
//! NAME is a model name (`manifest::validate_name`: a-z 0-9 . _ -, so it
//! never holds a space); VERSION, BYTES and MILLIS are decimal u64. REASON
//! and PATH are the rest of the line, escaped with `escape::text` (no
//! control character, no newline). A line longer than [`MAX_LINE`] bytes,
//! an unknown word or a field that does not parse is refused.

use airlock_formats::escape;
use airlock_formats::manifest::validate_name;
use std::fmt;
use thiserror::Error;

/// Longest line accepted, in bytes (without the newline).
pub const MAX_LINE: usize = 4096;

/// One fact of the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Checking {
        name: String,
        version: u64,
        bytes: u64,
    },
    Ok {
        name: String,
        version: u64,
        bytes: u64,
        millis: u64,
    },
    Refused {
        name: String,
        version: u64,
        reason: String,
    },
    Recovered {
        path: String,
    },
    Error {
        reason: String,
    },
}

/// Why a line was refused; each names the failing check.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LineError {
    #[error("model-check line: longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("model-check line: unknown kind {0:?}")]
    Kind(String),
    #[error("model-check line: {kind} without {field}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("model-check line: {kind}: {field} {value:?} is not a decimal number")]
    Number {
        kind: &'static str,
        field: &'static str,
        value: String,
    },
    #[error("model-check line: {kind}: {value:?} is not a model name")]
    Name { kind: &'static str, value: String },
    #[error("model-check line: {kind}: more fields than expected")]
    Extra { kind: &'static str },
    #[error("model-check line: {kind}: text holds an unescaped character")]
    Unescaped { kind: &'static str },
}

impl Line {
    /// The refused line for `name` `version` with `reason` (escaped here).
    pub fn refused(name: &str, version: u64, reason: &str) -> Line {
        Line::Refused {
            name: name.to_owned(),
            version,
            reason: one_line(reason),
        }
    }

    /// The error line for `reason` (escaped here).
    pub fn error(reason: &str) -> Line {
        Line::Error {
            reason: one_line(reason),
        }
    }

    /// The recovered line for `path` (escaped here).
    pub fn recovered(path: &str) -> Line {
        Line::Recovered {
            path: one_line(path),
        }
    }

    /// The model this line is about, if any.
    pub fn model(&self) -> Option<(&str, u64)> {
        match self {
            Line::Checking { name, version, .. }
            | Line::Ok { name, version, .. }
            | Line::Refused { name, version, .. } => Some((name, *version)),
            Line::Recovered { .. } | Line::Error { .. } => None,
        }
    }
}

/// `s` as one escaped line (never empty): raw text from an error message.
pub fn one_line(s: &str) -> String {
    let t = escape::text(s.trim()).into_owned();
    if t.is_empty() {
        "unknown".into()
    } else {
        t
    }
}

/// Text held in a [`Line`] as written: already escaped (constructors,
/// parser), so only a string that still holds an unsafe character is
/// escaped again; never empty.
fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    if s.trim().is_empty() {
        "unknown".into()
    } else if escape::first_unsafe(s).is_some() {
        escape::text(s)
    } else {
        s.into()
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Checking {
                name,
                version,
                bytes,
            } => write!(f, "checking {} {version} {bytes}", escape::text(name)),
            Line::Ok {
                name,
                version,
                bytes,
                millis,
            } => write!(f, "ok {} {version} {bytes} {millis}", escape::text(name)),
            Line::Refused {
                name,
                version,
                reason,
            } => write!(
                f,
                "refused {} {version} {}",
                escape::text(name),
                shown(reason)
            ),
            Line::Recovered { path } => write!(f, "recovered {}", shown(path)),
            Line::Error { reason } => write!(f, "error {}", shown(reason)),
        }
    }
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Result<Line, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    match kind {
        "checking" => {
            let k = "checking";
            let [name, version, bytes] = fields(k, rest, ["NAME", "VERSION", "BYTES"])?;
            Ok(Line::Checking {
                name: model_name(k, name)?,
                version: number(k, "VERSION", version)?,
                bytes: number(k, "BYTES", bytes)?,
            })
        }
        "ok" => {
            let k = "ok";
            let [name, version, bytes, millis] =
                fields(k, rest, ["NAME", "VERSION", "BYTES", "MILLIS"])?;
            Ok(Line::Ok {
                name: model_name(k, name)?,
                version: number(k, "VERSION", version)?,
                bytes: number(k, "BYTES", bytes)?,
                millis: number(k, "MILLIS", millis)?,
            })
        }
        "refused" => {
            let k = "refused";
            let mut it = rest.splitn(3, ' ');
            let mut next = |field| {
                it.next()
                    .filter(|s| !s.is_empty())
                    .ok_or(LineError::Missing { kind: k, field })
            };
            let name = model_name(k, next("NAME")?)?;
            let version = number(k, "VERSION", next("VERSION")?)?;
            let reason = text(k, next("REASON")?)?;
            Ok(Line::Refused {
                name,
                version,
                reason,
            })
        }
        "recovered" => Ok(Line::Recovered {
            path: text("recovered", nonempty("recovered", "PATH", rest)?)?,
        }),
        "error" => Ok(Line::Error {
            reason: text("error", nonempty("error", "REASON", rest)?)?,
        }),
        other => Err(LineError::Kind(escape::text(other).into_owned())),
    }
}

/// Parses every complete line of `out`; lines that do not parse are
/// returned as errors in order (PID 1 logs them).
pub fn parse_all(out: &str) -> Vec<Result<Line, LineError>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse)
        .collect()
}

fn fields<'a, const N: usize>(
    kind: &'static str,
    rest: &'a str,
    names: [&'static str; N],
) -> Result<[&'a str; N], LineError> {
    let mut it = rest.split(' ');
    let mut out = [""; N];
    for (slot, field) in out.iter_mut().zip(names) {
        *slot = it
            .next()
            .filter(|s| !s.is_empty())
            .ok_or(LineError::Missing { kind, field })?;
    }
    if it.next().is_some() {
        return Err(LineError::Extra { kind });
    }
    Ok(out)
}

fn nonempty<'a>(kind: &'static str, field: &'static str, s: &'a str) -> Result<&'a str, LineError> {
    if s.is_empty() {
        Err(LineError::Missing { kind, field })
    } else {
        Ok(s)
    }
}

fn number(kind: &'static str, field: &'static str, s: &str) -> Result<u64, LineError> {
    // `u64::from_str` takes a leading `+`; the format does not.
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::Number {
            kind,
            field,
            value: one_line(s),
        });
    }
    s.parse().map_err(|_| LineError::Number {
        kind,
        field,
        value: one_line(s),
    })
}

fn model_name(kind: &'static str, s: &str) -> Result<String, LineError> {
    validate_name(s).map_err(|_| LineError::Name {
        kind,
        value: one_line(s),
    })?;
    Ok(s.to_owned())
}

fn text(kind: &'static str, s: &str) -> Result<String, LineError> {
    if escape::first_unsafe(s).is_some() {
        return Err(LineError::Unescaped { kind });
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str, version: u64, bytes: u64, millis: u64) -> Line {
        Line::Ok {
            name: name.into(),
            version,
            bytes,
            millis,
        }
    }

    #[test]
    fn lines_round_trip() {
        let cases = [
            Line::Checking {
                name: "smollm2-135m-instruct".into(),
                version: 1,
                bytes: 102_760_448,
            },
            ok("smollm2-135m-instruct", 1, 102_760_448, 2312),
            ok("a", u64::MAX, 0, 0),
            Line::refused(
                "tiny",
                2,
                "model tiny version 2 fails its at-rest check: payload model.gguf: SHA-256 mismatch",
            ),
            Line::Recovered {
                path: "/var/lib/airlock/store/.staging/import-1234".into(),
            },
            Line::Error {
                reason: "list models: permission denied".into(),
            },
        ];
        for l in cases {
            let s = l.to_string();
            assert!(!s.contains('\n'), "{s:?}");
            assert_eq!(parse(&s), Ok(l), "{s}");
        }
    }

    #[test]
    fn parses_documented_lines() {
        let cases: &[(&str, Line)] = &[
            ("ok tiny 3 3000 12", ok("tiny", 3, 3000, 12)),
            (
                "refused tiny 3 a reason with  two spaces",
                Line::Refused {
                    name: "tiny".into(),
                    version: 3,
                    reason: "a reason with  two spaces".into(),
                },
            ),
            (
                "checking m.v_1-x 9 0",
                Line::Checking {
                    name: "m.v_1-x".into(),
                    version: 9,
                    bytes: 0,
                },
            ),
            (
                "recovered store/.staging/x y",
                Line::Recovered {
                    path: "store/.staging/x y".into(),
                },
            ),
            (
                "error recover: store locked",
                Line::Error {
                    reason: "recover: store locked".into(),
                },
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s).as_ref(), Ok(want), "{s}");
        }
    }

    #[test]
    fn refuses_malformed_lines() {
        let long = format!("error {}", "x".repeat(MAX_LINE));
        let cases: &[(&str, &str)] = &[
            ("", "unknown kind \"\""),
            ("OK tiny 1 2 3", "unknown kind \"OK\""),
            ("verified tiny 1", "unknown kind \"verified\""),
            ("ok tiny 1 2", "ok without MILLIS"),
            ("ok tiny 1 2 3 4", "ok: more fields than expected"),
            ("ok tiny  1 2 3", "ok without VERSION"),
            (
                "ok tiny 1 2 +3",
                "ok: MILLIS \"+3\" is not a decimal number",
            ),
            (
                "ok tiny -1 2 3",
                "ok: VERSION \"-1\" is not a decimal number",
            ),
            (
                "ok tiny 18446744073709551616 2 3",
                "ok: VERSION \"18446744073709551616\" is not a decimal number",
            ),
            ("ok Tiny 1 2 3", "ok: \"Tiny\" is not a model name"),
            ("ok ../x 1 2 3", "ok: \"../x\" is not a model name"),
            ("checking tiny 1", "checking without BYTES"),
            ("refused tiny 1", "refused without REASON"),
            ("refused tiny 1 ", "refused without REASON"),
            (
                "refused tiny x why",
                "refused: VERSION \"x\" is not a decimal number",
            ),
            (
                "refused tiny 1 bad\x1b[2Kok",
                "refused: text holds an unescaped character",
            ),
            ("recovered", "recovered without PATH"),
            ("error", "error without REASON"),
            (
                "error \u{202e}gnol",
                "error: text holds an unescaped character",
            ),
            (&long, "longer than 4096 bytes"),
        ];
        for (s, want) in cases {
            let e = parse(s).expect_err(s);
            let msg = e.to_string();
            assert!(
                msg.starts_with("model-check line: ") && msg.ends_with(want),
                "{s:?}: {msg}"
            );
        }
    }

    #[test]
    fn rendering_escapes_reasons_into_one_line() {
        let l = Line::refused("tiny", 1, "two\nlines \x1b[31mred");
        let s = l.to_string();
        assert_eq!(s, "refused tiny 1 two\\x0alines \\x1b[31mred");
        assert!(parse(&s).is_ok());
        assert_eq!(
            Line::refused("tiny", 1, "  ").to_string(),
            "refused tiny 1 unknown"
        );
        // Text already escaped is not escaped twice; raw text in a field is.
        let l = Line::refused("tiny", 1, "a\\b");
        assert_eq!(parse(&l.to_string()), Ok(l));
        let raw = Line::Error {
            reason: "x\ny".into(),
        };
        assert_eq!(raw.to_string(), "error x\\x0ay");
    }
}
