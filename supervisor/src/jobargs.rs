//! The arguments of `run FILE [--task NAME] [--question TEXT] [--language L]`
//! parsed into a typed request, checked against the task table. Pure:
//! nothing is opened here.
//!
//! Words are separated by spaces; a value with spaces is quoted with `"`
//! or `'` (no escapes inside; the other quote character may appear).
//! FILE names a file on a stick: `NAME`, `DIR/NAME` (one folder deep, as
//! `usb` lists them) or `sdb:NAME` to name the stick; `.`, `..`, empty
//! components and absolute paths are refused.

use airlock_formats::tasks::{Param, TaskTable, DEFAULT_TASK};
use thiserror::Error;

/// Longest question (bytes).
pub const MAX_QUESTION: usize = 200;
/// Longest language name (bytes).
pub const MAX_LANGUAGE: usize = 32;
/// Longest component of FILE (FAT's limit).
pub const MAX_NAME: usize = 255;

/// Why the arguments were refused (one line, with a hint).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RunArgError {
    #[error("run: a quote is not closed; see 'help run'")]
    Unclosed,
    #[error("run: name the file, e.g. 'run report.txt.gpg'; see 'help run'")]
    NoFile,
    #[error("run: only one FILE; '{0}' is a second one (quote a value with spaces)")]
    SecondFile(String),
    #[error("run: unknown option '{0}'; the options are --task, --question, --language, --model, --show")]
    UnknownOption(String),
    #[error("run: {0} is given twice")]
    Twice(&'static str),
    #[error("run: {0} needs a value")]
    NoValue(&'static str),
    #[error("run: unknown task '{task}'; the tasks are {known}")]
    UnknownTask { task: String, known: String },
    #[error("run: task '{task}' needs {option} (e.g. {example})")]
    Missing {
        task: String,
        option: &'static str,
        example: &'static str,
    },
    #[error("run: task '{task}' takes no {option}")]
    NotTaken { task: String, option: &'static str },
    #[error("run: {option} is 1-{max} characters without control characters")]
    BadValue { option: &'static str, max: usize },
    #[error("run: FILE '{0}' refused: {1}")]
    BadFile(String, &'static str),
}

/// Where the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// `sdb` when named (`sdb:NAME`).
    pub stick: Option<String>,
    /// `["batch", "report.gpg"]`: one or two components.
    pub path: Vec<String>,
}

/// A checked `run` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub file: FileRef,
    pub task: String,
    pub question: Option<String>,
    pub language: Option<String>,
    /// `--model NAME`: which active model, when several are active.
    pub model: Option<String>,
    /// `--show`: print the answer on the console too (policy permitting).
    pub show: bool,
}

/// Splits on spaces, honouring `"..."` and `'...'`.
pub fn words(s: &str) -> Result<Vec<String>, RunArgError> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.get_or_insert_with(String::new).push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.get_or_insert_with(String::new);
            }
            None if c == ' ' || c == '\t' => {
                if let Some(w) = cur.take() {
                    out.push(w);
                }
            }
            None => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(RunArgError::Unclosed);
    }
    out.extend(cur);
    Ok(out)
}

fn short(s: &str) -> String {
    crate::screen::line(s).chars().take(40).collect()
}

fn file_ref(s: &str) -> Result<FileRef, RunArgError> {
    let bad = |why| RunArgError::BadFile(short(s), why);
    let (stick, rest) = match s.split_once(':') {
        Some((d, r)) => {
            if d.is_empty() || !d.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad("the stick is named like sdb"));
            }
            (Some(d.to_string()), r)
        }
        None => (None, s),
    };
    if rest.starts_with('/') {
        return Err(bad("a path on the stick, not an absolute path"));
    }
    let path: Vec<String> = rest.split('/').map(str::to_string).collect();
    for c in &path {
        if c.is_empty() || c == "." || c == ".." {
            return Err(bad("empty, '.' and '..' components are refused"));
        }
        if c.len() > MAX_NAME || c.chars().any(char::is_control) {
            return Err(bad("a name is 1-255 bytes without control characters"));
        }
    }
    if path.len() > 2 {
        return Err(bad("at most one folder deep (DIR/NAME)"));
    }
    Ok(FileRef { stick, path })
}

fn value(option: &'static str, v: &str, max: usize) -> Result<String, RunArgError> {
    if v.trim().is_empty() || v.len() > max || airlock_formats::escape::first_unsafe(v).is_some() {
        return Err(RunArgError::BadValue { option, max });
    }
    Ok(v.to_string())
}

/// Parses the words after `run`.
pub fn parse_run(args: &str, tasks: &TaskTable) -> Result<RunRequest, RunArgError> {
    let ws = words(args)?;
    let mut file = None;
    let mut task: Option<String> = None;
    let mut question: Option<String> = None;
    let mut language: Option<String> = None;
    let mut model: Option<String> = None;
    let mut show = false;
    let mut it = ws.iter();
    while let Some(w) = it.next() {
        let (slot, name, max): (&mut Option<String>, &'static str, usize) = match w.as_str() {
            "--show" if show => return Err(RunArgError::Twice("--show")),
            "--show" => {
                show = true;
                continue;
            }
            "--model" => (&mut model, "--model", 64),
            "--task" => (&mut task, "--task", 32),
            "--question" => (&mut question, "--question", MAX_QUESTION),
            "--language" => (&mut language, "--language", MAX_LANGUAGE),
            o if o.starts_with("--") => return Err(RunArgError::UnknownOption(short(o))),
            f => {
                if file.is_some() {
                    return Err(RunArgError::SecondFile(short(f)));
                }
                file = Some(file_ref(f)?);
                continue;
            }
        };
        if slot.is_some() {
            return Err(RunArgError::Twice(name));
        }
        let v = it.next().ok_or(RunArgError::NoValue(name))?;
        *slot = Some(value(name, v, max)?);
    }
    let file = file.ok_or(RunArgError::NoFile)?;
    let task = task.unwrap_or_else(|| DEFAULT_TASK.to_string());
    let Some(t) = tasks.get(&task) else {
        return Err(RunArgError::UnknownTask {
            task: short(&task),
            known: tasks.names(),
        });
    };
    let needs = t.params();
    for (p, given, example) in [
        (
            Param::Question,
            &question,
            "--question \"Who signed the contract?\"",
        ),
        (Param::Language, &language, "--language German"),
    ] {
        match (needs.contains(&p), given.is_some()) {
            (true, false) => {
                return Err(RunArgError::Missing {
                    task,
                    option: p.option(),
                    example,
                })
            }
            (false, true) => {
                return Err(RunArgError::NotTaken {
                    task,
                    option: p.option(),
                })
            }
            _ => {}
        }
    }
    Ok(RunRequest {
        file,
        task,
        question,
        language,
        model,
        show,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TaskTable {
        TaskTable::parse(include_bytes!(
            "../../rootfs-overlay/etc/airlock/tasks.json"
        ))
        .unwrap()
    }

    fn f(stick: Option<&str>, path: &[&str]) -> FileRef {
        FileRef {
            stick: stick.map(str::to_string),
            path: path.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn requests() {
        let t = table();
        let s = |x: &str| Some(x.to_string());
        let cases: &[(&str, RunRequest)] = &[
            (
                "report.txt.gpg",
                RunRequest {
                    file: f(None, &["report.txt.gpg"]),
                    task: "summarize".into(),
                    question: None,
                    language: None,
                    model: None,
                    show: false,
                },
            ),
            (
                "sdb:batch/a.gpg --task extract",
                RunRequest {
                    file: f(Some("sdb"), &["batch", "a.gpg"]),
                    task: "extract".into(),
                    question: None,
                    language: None,
                    model: None,
                    show: false,
                },
            ),
            (
                "--question \"Who signed it?\" --task answer a.asc",
                RunRequest {
                    file: f(None, &["a.asc"]),
                    task: "answer".into(),
                    question: s("Who signed it?"),
                    language: None,
                    model: None,
                    show: false,
                },
            ),
            (
                "a.gpg --task translate --language 'Swiss German'",
                RunRequest {
                    file: f(None, &["a.gpg"]),
                    task: "translate".into(),
                    question: None,
                    language: s("Swiss German"),
                    model: None,
                    show: false,
                },
            ),
            (
                "'my report.gpg'  --task classify",
                RunRequest {
                    file: f(None, &["my report.gpg"]),
                    task: "classify".into(),
                    question: None,
                    language: None,
                    model: None,
                    show: false,
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_run(line, &t).as_ref(), Ok(want), "{line}");
        }
    }

    #[test]
    fn refusals() {
        let t = table();
        let cases: &[(&str, &str)] = &[
            ("", "run: name the file, e.g. 'run report.txt.gpg'; see 'help run'"),
            ("--task answer", "run: name the file, e.g. 'run report.txt.gpg'; see 'help run'"),
            ("a.gpg \"open", "run: a quote is not closed; see 'help run'"),
            ("a.gpg b.gpg", "run: only one FILE; 'b.gpg' is a second one (quote a value with spaces)"),
            ("a.gpg --force", "run: unknown option '--force'; the options are --task, --question, --language, --model, --show"),
            ("a.gpg --task", "run: --task needs a value"),
            ("a.gpg --task poem", "run: unknown task 'poem'; the tasks are summarize, extract, translate, answer, classify"),
            ("a.gpg --task answer", "run: task 'answer' needs --question (e.g. --question \"Who signed the contract?\")"),
            ("a.gpg --task translate", "run: task 'translate' needs --language (e.g. --language German)"),
            ("a.gpg --question why", "run: task 'summarize' takes no --question"),
            ("a.gpg --task answer --question x --task answer", "run: --task is given twice"),
            ("a.gpg --task answer --question ' '", "run: --question is 1-200 characters without control characters"),
            ("../a.gpg", "run: FILE '../a.gpg' refused: empty, '.' and '..' components are refused"),
            ("/etc/shadow", "run: FILE '/etc/shadow' refused: a path on the stick, not an absolute path"),
            ("a/b/c.gpg", "run: FILE 'a/b/c.gpg' refused: at most one folder deep (DIR/NAME)"),
            ("a//c.gpg", "run: FILE 'a//c.gpg' refused: empty, '.' and '..' components are refused"),
            ("s/db:x.gpg", "run: FILE 's/db:x.gpg' refused: the stick is named like sdb"),
            (":x.gpg", "run: FILE ':x.gpg' refused: the stick is named like sdb"),
        ];
        for (line, want) in cases {
            let got = parse_run(line, &t).unwrap_err().to_string();
            assert_eq!(got, *want, "{line}");
        }
        let long = format!("a.gpg --task answer --question '{}'", "x".repeat(201));
        assert_eq!(
            parse_run(&long, &t).unwrap_err(),
            RunArgError::BadValue {
                option: "--question",
                max: MAX_QUESTION
            }
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(
            words(r#"a "b c" 'd "e"' f""g"#).unwrap(),
            ["a", "b c", "d \"e\"", "fg"]
        );
        assert_eq!(words("''").unwrap(), [""]);
        assert!(words("   ").unwrap().is_empty());
    }
}
