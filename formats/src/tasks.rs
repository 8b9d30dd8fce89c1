//! Job templates ("tasks") as data: what `run --task NAME` asks the model.
//!
//! The image carries `/etc/airlock/tasks.json` (schema
//! `airlock-tasks/1`); a model bundle may bring its own table as the
//! payload `tasks.json`, listed in its manifest and so signed with it
//! ([`TaskTable::with_bundle`] merges it; the import side is not wired
//! yet). Parsing is strict: unknown fields, unknown placeholders, a
//! prompt without `{document}`, a duplicate name are refused, each with a
//! one-line reason naming the task.
//!
//! Prompts hold placeholders `{document}` (user prompt only, exactly
//! once), `{question}`, `{language}`, `{labels}` (the template's labels,
//! comma-separated) and, in the combine prompt only, `{answers}` (the
//! partial answers of a split document, numbered). `{{` and `}}` are
//! literal braces. A task needs `--question` when one of its prompts
//! uses `{question}`, `--language` when one uses `{language}`.
//! Substitution is one pass: a document holding `{question}` stays as it is.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use thiserror::Error;

/// Schema string of a task table.
pub const SCHEMA: &str = "airlock-tasks/1";
/// Where the image keeps its table.
pub const IMAGE_TASKS: &str = "/etc/airlock/tasks.json";
/// The payload name of a bundle's own table.
pub const BUNDLE_TASKS: &str = "tasks.json";
/// Largest table file accepted.
pub const MAX_TABLE_LEN: usize = 256 * 1024;
/// Most tasks one table may hold.
pub const MAX_TASKS: usize = 64;
/// Longest prompt (bytes).
pub const MAX_PROMPT: usize = 8 * 1024;
/// Longest description (bytes).
pub const MAX_DESCRIPTION: usize = 200;
/// Most labels of a classify task, and the longest label.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL: usize = 40;
/// Highest `max_answer_tokens`.
pub const MAX_ANSWER_TOKENS: u32 = 8192;
/// The task `run` uses without `--task`.
pub const DEFAULT_TASK: &str = "summarize";

/// Why a table was refused (one line each).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TaskError {
    #[error("tasks: the table is {0} bytes, more than {MAX_TABLE_LEN}")]
    TooLarge(usize),
    #[error("tasks: parse the table: {0}")]
    Parse(String),
    #[error("tasks: schema is \"{0}\", expected \"{SCHEMA}\"")]
    Schema(String),
    #[error("tasks: the table lists no task")]
    Empty,
    #[error("tasks: more than {MAX_TASKS} tasks")]
    TooMany,
    #[error("tasks: task name \"{0}\" refused: 1-32 of a-z 0-9 -, starting with a letter")]
    BadName(String),
    #[error("tasks: task \"{0}\" is listed twice")]
    Duplicate(String),
    #[error("tasks: task \"{task}\": {why}")]
    Task { task: String, why: String },
}

/// The parameters a task takes from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Param {
    Question,
    Language,
}

impl Param {
    /// The command-line option (`--question`).
    pub fn option(self) -> &'static str {
        match self {
            Param::Question => "--question",
            Param::Language => "--language",
        }
    }
    fn placeholder(self) -> &'static str {
        match self {
            Param::Question => "question",
            Param::Language => "language",
        }
    }
}

/// One template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// `summarize`: what `--task` names.
    pub name: String,
    /// One line for `help run` and the task list.
    pub description: String,
    /// The system prompt.
    pub system: String,
    /// The user prompt; holds `{document}` once.
    pub user: String,
    /// How partial answers of a split document are combined into one:
    /// a user prompt holding `{answers}`.
    pub combine: String,
    /// The answer is cut after this many tokens.
    pub max_answer_tokens: u32,
    /// Labels a classify task chooses from (`{labels}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    schema: String,
    tasks: Vec<Task>,
}

/// A validated table, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTable {
    tasks: Vec<Task>,
}

/// Values put into a prompt.
#[derive(Debug, Default, Clone, Copy)]
pub struct Values<'a> {
    pub document: &'a str,
    pub question: Option<&'a str>,
    pub language: Option<&'a str>,
    pub answers: &'a str,
}

/// A piece of a template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Brace(char),
    Slot(&'a str),
}

/// Splits a template into text, literal braces and `{name}` slots.
fn pieces(t: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        let (text, tail) = rest.split_at(i);
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        if let Some(t2) = tail.strip_prefix("{{") {
            out.push(Piece::Brace('{'));
            rest = t2;
        } else if let Some(t2) = tail.strip_prefix("}}") {
            out.push(Piece::Brace('}'));
            rest = t2;
        } else if let Some(t2) = tail.strip_prefix('{') {
            let Some(end) = t2.find('}') else {
                return Err("a '{' without its '}' (write {{ for a literal brace)".into());
            };
            let (name, t3) = t2.split_at(end);
            out.push(Piece::Slot(name));
            rest = t3.get(1..).unwrap_or("");
        } else {
            return Err("a '}' without its '{' (write }} for a literal brace)".into());
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

fn check_prompt(field: &str, t: &str, allowed: &[&str]) -> Result<BTreeSet<String>, String> {
    if t.trim().is_empty() {
        return Err(format!("{field} prompt is empty"));
    }
    if t.len() > MAX_PROMPT {
        return Err(format!("{field} prompt is over {MAX_PROMPT} bytes"));
    }
    if let Some(c) = t
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(format!(
            "{field} prompt holds the control character U+{:04X}",
            u32::from(c)
        ));
    }
    let mut used = BTreeSet::new();
    for p in pieces(t).map_err(|e| format!("{field} prompt: {e}"))? {
        if let Piece::Slot(name) = p {
            if !allowed.contains(&name) {
                return Err(format!(
                    "{field} prompt: unknown placeholder {{{}}} (allowed: {})",
                    crate::escape::text(name),
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
            if name == "document" && used.contains(name) {
                return Err(format!("{field} prompt holds {{document}} twice"));
            }
            used.insert(name.to_string());
        }
    }
    Ok(used)
}

impl Task {
    fn check(&self) -> Result<(), String> {
        if self.description.is_empty() || self.description.len() > MAX_DESCRIPTION {
            return Err(format!("description is 1-{MAX_DESCRIPTION} bytes"));
        }
        if crate::escape::first_unsafe(&self.description).is_some() {
            return Err("description holds a control character".into());
        }
        check_prompt("system", &self.system, &["question", "language", "labels"])?;
        let user = check_prompt(
            "user",
            &self.user,
            &["document", "question", "language", "labels"],
        )?;
        if !user.contains("document") {
            return Err("user prompt has no {document}".into());
        }
        let combine = check_prompt(
            "combine",
            &self.combine,
            &["answers", "question", "language", "labels"],
        )?;
        if !combine.contains("answers") {
            return Err("combine prompt has no {answers}".into());
        }
        if !(1..=MAX_ANSWER_TOKENS).contains(&self.max_answer_tokens) {
            return Err(format!("max_answer_tokens is 1-{MAX_ANSWER_TOKENS}"));
        }
        let uses_labels = [&self.system, &self.user, &self.combine]
            .iter()
            .any(|t| t.contains("{labels}"));
        if self.labels.len() > MAX_LABELS {
            return Err(format!("more than {MAX_LABELS} labels"));
        }
        for l in &self.labels {
            let ok = !l.is_empty()
                && l.len() <= MAX_LABEL
                && l.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '/' | '.'));
            if !ok {
                return Err(format!(
                    "label \"{}\" refused: 1-{MAX_LABEL} letters, digits, space - _ / .",
                    crate::escape::text(l)
                ));
            }
        }
        let distinct: BTreeSet<&String> = self.labels.iter().collect();
        if distinct.len() != self.labels.len() {
            return Err("a label is listed twice".into());
        }
        match (uses_labels, self.labels.is_empty()) {
            (true, true) => Err("a prompt uses {labels} but the task lists none".into()),
            (false, false) => Err("labels are listed but no prompt uses {labels}".into()),
            _ => Ok(()),
        }
    }

    /// The parameters this task needs (`--question`, `--language`).
    pub fn params(&self) -> Vec<Param> {
        [Param::Question, Param::Language]
            .into_iter()
            .filter(|p| {
                let slot = format!("{{{}}}", p.placeholder());
                [&self.system, &self.user, &self.combine]
                    .iter()
                    .any(|t| t.contains(&slot))
            })
            .collect()
    }

    /// The system prompt with its values.
    pub fn system_prompt(&self, v: &Values) -> String {
        self.render(&self.system, v)
    }

    /// The user prompt for (a part of) the document.
    pub fn user_prompt(&self, v: &Values) -> String {
        self.render(&self.user, v)
    }

    /// The prompt that combines the partial answers.
    pub fn combine_prompt(&self, v: &Values) -> String {
        self.render(&self.combine, v)
    }

    /// One pass over the template: values are never scanned again.
    fn render(&self, t: &str, v: &Values) -> String {
        let labels = self.labels.join(", ");
        let mut out = String::with_capacity(t.len() + v.document.len());
        // Templates were checked at load; a bad one renders as it is.
        let Ok(ps) = pieces(t) else {
            return t.to_string();
        };
        for p in ps {
            match p {
                Piece::Text(s) => out.push_str(s),
                Piece::Brace(c) => out.push(c),
                Piece::Slot("document") => out.push_str(v.document),
                Piece::Slot("question") => out.push_str(v.question.unwrap_or("")),
                Piece::Slot("language") => out.push_str(v.language.unwrap_or("")),
                Piece::Slot("labels") => out.push_str(&labels),
                Piece::Slot("answers") => out.push_str(v.answers),
                Piece::Slot(_) => {}
            }
        }
        out
    }
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl TaskTable {
    /// Parses and checks a table file.
    pub fn parse(bytes: &[u8]) -> Result<TaskTable, TaskError> {
        if bytes.len() > MAX_TABLE_LEN {
            return Err(TaskError::TooLarge(bytes.len()));
        }
        let f: TableFile = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's message is one line; keep it short.
            TaskError::Parse(
                crate::escape::text(&e.to_string())
                    .chars()
                    .take(200)
                    .collect(),
            )
        })?;
        if f.schema != SCHEMA {
            return Err(TaskError::Schema(
                crate::escape::text(&f.schema).chars().take(64).collect(),
            ));
        }
        TaskTable::from_tasks(f.tasks)
    }

    fn from_tasks(tasks: Vec<Task>) -> Result<TaskTable, TaskError> {
        if tasks.is_empty() {
            return Err(TaskError::Empty);
        }
        if tasks.len() > MAX_TASKS {
            return Err(TaskError::TooMany);
        }
        let mut seen = BTreeSet::new();
        for t in &tasks {
            if !valid_name(&t.name) {
                return Err(TaskError::BadName(
                    crate::escape::text(&t.name).chars().take(40).collect(),
                ));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(TaskError::Duplicate(t.name.clone()));
            }
            t.check().map_err(|why| TaskError::Task {
                task: t.name.clone(),
                why,
            })?;
        }
        Ok(TaskTable { tasks })
    }

    /// The table as a file (for tests and `bundle pack`).
    pub fn to_json(&self) -> String {
        let f = TableFile {
            schema: SCHEMA.into(),
            tasks: self.tasks.clone(),
        };
        serde_json::to_string_pretty(&f).unwrap_or_default()
    }

    /// The task named `name`.
    pub fn get(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// Every task, in file order.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// `summarize, extract, ...`
    pub fn names(&self) -> String {
        self.tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The image's table with a model bundle's own tasks added (the
    /// bundle's table is a signed payload of the active model). A bundle
    /// adds tasks; it never replaces one of the image's (the security
    /// team's wording stays what it reviewed): a name clash is refused.
    pub fn with_bundle(&self, bundle: &TaskTable) -> Result<TaskTable, TaskError> {
        let mut all = self.tasks.clone();
        for t in &bundle.tasks {
            if self.get(&t.name).is_some() {
                return Err(TaskError::Task {
                    task: t.name.clone(),
                    why: "the model bundle's tasks.json redefines a task of the image".into(),
                });
            }
            all.push(t.clone());
        }
        TaskTable::from_tasks(all)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The image's table, as shipped in rootfs-overlay.
    const IMAGE: &str = include_str!("../../rootfs-overlay/etc/airlock/tasks.json");

    fn table() -> TaskTable {
        TaskTable::parse(IMAGE.as_bytes()).unwrap()
    }

    #[test]
    fn the_image_table_parses_with_the_required_tasks() {
        let t = table();
        for name in ["summarize", "extract", "translate", "answer", "classify"] {
            assert!(t.get(name).is_some(), "{name} missing");
        }
        assert!(t.get(DEFAULT_TASK).is_some());
        assert_eq!(t.get("answer").unwrap().params(), [Param::Question]);
        assert_eq!(t.get("translate").unwrap().params(), [Param::Language]);
        assert!(t.get("summarize").unwrap().params().is_empty());
        assert!(!t.get("classify").unwrap().labels.is_empty());
        // Round trip through the writer.
        assert_eq!(TaskTable::parse(t.to_json().as_bytes()).unwrap(), t);
    }

    #[test]
    fn rendering_is_one_pass() {
        let t = table();
        let a = t.get("answer").unwrap();
        let v = Values {
            document: "text with {question} and {{ inside",
            question: Some("Who {signed}?"),
            ..Values::default()
        };
        let p = a.user_prompt(&v);
        assert!(p.contains("text with {question} and {{ inside"), "{p}");
        assert!(p.contains("Who {signed}?"), "{p}");
        let c = t.get("classify").unwrap();
        assert!(c.system_prompt(&v).contains(&c.labels.join(", ")));
        let comb = t.get("summarize").unwrap().combine_prompt(&Values {
            answers: "1. x\n2. y",
            ..Values::default()
        });
        assert!(comb.contains("1. x\n2. y"));
    }

    fn one(task: serde_json::Value) -> String {
        let f = serde_json::json!({ "schema": SCHEMA, "tasks": [task] });
        match TaskTable::parse(f.to_string().as_bytes()) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn refusals_are_one_line_and_name_the_task() {
        let base = || {
            serde_json::json!({
                "name": "t", "description": "d", "system": "s",
                "user": "{document}", "combine": "{answers}", "max_answer_tokens": 100
            })
        };
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (base(), "ok"),
            (
                with("user", "no doc".into()),
                "tasks: task \"t\": user prompt has no {document}",
            ),
            (
                with("user", "{document}{document}".into()),
                "tasks: task \"t\": user prompt holds {document} twice",
            ),
            (
                with("user", "{document} {foo}".into()),
                "tasks: task \"t\": user prompt: unknown placeholder {foo} (allowed: {document} {question} {language} {labels})",
            ),
            (
                with("system", "{document}".into()),
                "tasks: task \"t\": system prompt: unknown placeholder {document} (allowed: {question} {language} {labels})",
            ),
            (
                with("user", "{document} {".into()),
                "tasks: task \"t\": user prompt: a '{' without its '}' (write {{ for a literal brace)",
            ),
            (with("user", "{document} {{json}}".into()), "ok"),
            (
                with("combine", "merge".into()),
                "tasks: task \"t\": combine prompt has no {answers}",
            ),
            (
                with("max_answer_tokens", 0.into()),
                "tasks: task \"t\": max_answer_tokens is 1-8192",
            ),
            (
                with("system", "{labels}".into()),
                "tasks: task \"t\": a prompt uses {labels} but the task lists none",
            ),
            (
                with("labels", serde_json::json!(["a"])),
                "tasks: task \"t\": labels are listed but no prompt uses {labels}",
            ),
            (
                with("name", "Sum".into()),
                "tasks: task name \"Sum\" refused: 1-32 of a-z 0-9 -, starting with a letter",
            ),
            (
                with("description", "a\u{1b}[2J".into()),
                "tasks: task \"t\": description holds a control character",
            ),
            (
                with("system", "x\u{7}".into()),
                "tasks: task \"t\": system prompt holds the control character U+0007",
            ),
        ];
        for (task, want) in cases {
            let got = one(task.clone());
            assert_eq!(got, want, "{task}");
            assert!(!got.contains('\n'));
        }
        let mut extra = base();
        extra["temperature"] = 0.7.into();
        assert!(one(extra).starts_with("tasks: parse the table: unknown field `temperature`"));
        let dup = serde_json::json!({ "schema": SCHEMA, "tasks": [base(), base()] });
        assert_eq!(
            TaskTable::parse(dup.to_string().as_bytes()).unwrap_err(),
            TaskError::Duplicate("t".into())
        );
        assert_eq!(
            TaskTable::parse(br#"{"schema":"airlock-tasks/2","tasks":[]}"#).unwrap_err(),
            TaskError::Schema("airlock-tasks/2".into())
        );
    }

    #[test]
    fn a_bundle_adds_tasks_but_never_replaces_the_images() {
        let image = table();
        let mk = |name: &str| {
            let f = serde_json::json!({ "schema": SCHEMA, "tasks": [{
                "name": name, "description": "d", "system": "s",
                "user": "{document}", "combine": "{answers}", "max_answer_tokens": 10
            }]});
            TaskTable::parse(f.to_string().as_bytes()).unwrap()
        };
        let merged = image.with_bundle(&mk("redact")).unwrap();
        assert!(merged.get("redact").is_some() && merged.get("summarize").is_some());
        assert_eq!(
            image.with_bundle(&mk("summarize")).unwrap_err().to_string(),
            "tasks: task \"summarize\": the model bundle's tasks.json redefines a task of the image"
        );
    }
}
