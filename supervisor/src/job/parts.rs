//! One task over one document: the document is split into parts that fit
//! the model's context (`docsplit`, counted with the model's own
//! tokenizer), each part is answered, and the partial answers are
//! combined with the task's combine prompt until one answer is left.
//!
//! The model is behind [`Engine`] (the sandboxed worker on the appliance,
//! `infer::Worker`); progress goes to a callback as [`Event`]s. Every
//! string here that holds document text is zeroized when dropped.

use crate::docsplit;
use airlock_formats::tasks::{Task, Values};
use std::cell::RefCell;
use std::time::Instant;
use thiserror::Error;
use zeroize::Zeroizing;

/// Tokens kept free for the chat template's own markup (role headers,
/// separators), over what the system and user prompts count.
pub const TEMPLATE_SLACK: usize = 48;

/// How often a long generation reports its progress.
pub const WRITING_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// What a job asks of its model.
pub trait Engine {
    /// Tokens of `text` (no chat template).
    fn count(&mut self, text: &str) -> Result<usize, String>;
    /// Answers `user` under `system`, at most `max_tokens`; `on_token` is
    /// called per generated piece. Returns the text, prompt tokens and
    /// generated tokens.
    fn generate(
        &mut self,
        system: &str,
        user: &str,
        max_tokens: u32,
        on_token: &mut dyn FnMut(),
    ) -> Result<Generated, String>;
}

/// One generation's result.
pub struct Generated {
    pub text: Zeroizing<String>,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
}

/// Progress of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The document was split into `n` parts.
    Split { n: usize, budget: usize },
    /// Part `i` (1-based) of `n` is being read: `tokens` in.
    PartStart { i: usize, n: usize, tokens: usize },
    /// Part `i` of `n` is being written: `tokens` so far (at most every
    /// [`WRITING_EVERY`]).
    Writing {
        i: usize,
        n: usize,
        tokens: u64,
        tok_per_s: f64,
    },
    /// Part `i` of `n` is answered.
    PartDone {
        i: usize,
        n: usize,
        tokens_out: u64,
        tok_per_s: f64,
        left_s: Option<u64>,
    },
    /// The partial answers are being combined (`answers` into `groups`).
    Combine { answers: usize, groups: usize },
}

/// The task's answer and its figures.
pub struct Answer {
    pub text: Zeroizing<String>,
    pub parts: usize,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// Failing step of a task run.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PartsError {
    #[error("the document is empty")]
    Empty,
    #[error("count tokens: {0}")]
    Count(String),
    #[error("the task's prompts alone fill the model's context of {context} tokens")]
    NoRoom { context: usize },
    #[error("{0}")]
    Split(#[from] docsplit::SplitError),
    #[error("part {i} of {n}: {reason}")]
    Generate { i: usize, n: usize, reason: String },
    #[error("combine the answers: {0}")]
    Combine(String),
}

/// The values of one run (the document comes per part).
pub struct Params<'a> {
    pub question: Option<&'a str>,
    pub language: Option<&'a str>,
    /// Context tokens the job may use.
    pub context: usize,
    /// Most tokens per answer.
    pub answer_tokens: u32,
}

fn values<'a>(p: &'a Params, document: &'a str, answers: &'a str) -> Values<'a> {
    Values {
        document,
        question: p.question,
        language: p.language,
        answers,
    }
}

/// Runs `task` over `text`.
pub fn run(
    engine: &mut dyn Engine,
    task: &Task,
    p: &Params,
    text: &str,
    progress: &mut dyn FnMut(Event),
) -> Result<Answer, PartsError> {
    if text.trim().is_empty() {
        return Err(PartsError::Empty);
    }
    let answer_tokens = p.answer_tokens.min(task.max_answer_tokens).max(1);
    let system = task.system_prompt(&values(p, "", ""));
    let overhead = engine.count(&system).map_err(PartsError::Count)?
        + engine
            .count(&task.user_prompt(&values(p, "", "")))
            .map_err(PartsError::Count)?
        + TEMPLATE_SLACK
        + answer_tokens as usize;
    let budget = p
        .context
        .checked_sub(overhead)
        .filter(|b| *b >= 16)
        .ok_or(PartsError::NoRoom { context: p.context })?;
    let failure: RefCell<Option<String>> = RefCell::new(None);
    let engine = RefCell::new(engine);
    let count = |s: &str| -> usize {
        match engine.borrow_mut().count(s) {
            Ok(n) => n,
            Err(e) => {
                failure.borrow_mut().get_or_insert(e);
                0
            }
        }
    };
    let parts = docsplit::split(text, budget, count)?;
    if let Some(e) = failure.borrow_mut().take() {
        return Err(PartsError::Count(e));
    }
    let engine = engine.into_inner();
    let n = parts.len();
    progress(Event::Split { n, budget });
    let started = Instant::now();
    let (mut tokens_in, mut tokens_out) = (0u64, 0u64);
    let mut answers: Vec<Zeroizing<String>> = Vec::with_capacity(n);
    for (idx, part) in parts.iter().enumerate() {
        let i = idx + 1;
        let tokens = engine
            .count(part)
            .map_err(|reason| PartsError::Generate { i, n, reason })?;
        progress(Event::PartStart { i, n, tokens });
        let user = Zeroizing::new(task.user_prompt(&values(p, part, "")));
        let t0 = Instant::now();
        let mut written = 0u64;
        let mut last = Instant::now();
        let g = engine
            .generate(&system, &user, answer_tokens, &mut || {
                written += 1;
                if last.elapsed() >= WRITING_EVERY {
                    last = Instant::now();
                    let secs = t0.elapsed().as_secs_f64().max(0.001);
                    progress(Event::Writing {
                        i,
                        n,
                        tokens: written,
                        tok_per_s: written as f64 / secs,
                    });
                }
            })
            .map_err(|reason| PartsError::Generate { i, n, reason })?;
        let secs = t0.elapsed().as_secs_f64().max(0.001);
        tokens_in += g.prompt_tokens;
        tokens_out += g.output_tokens;
        let per_part = started.elapsed().as_secs_f64() / i as f64;
        progress(Event::PartDone {
            i,
            n,
            tokens_out: g.output_tokens,
            tok_per_s: (g.prompt_tokens + g.output_tokens) as f64 / secs,
            left_s: (i < n).then(|| (per_part * (n - i) as f64).round() as u64),
        });
        answers.push(Zeroizing::new(g.text.trim().to_string()));
    }
    while answers.len() > 1 {
        let groups = group(&mut *engine, task, p, &answers, budget)?;
        progress(Event::Combine {
            answers: answers.len(),
            groups: groups.len(),
        });
        if groups.len() == answers.len() {
            // No two answers fit one prompt: give them in order as they are.
            let joined = numbered(&answers);
            answers = vec![joined];
            break;
        }
        let mut next = Vec::with_capacity(groups.len());
        for g in groups {
            let slice = answers.get(g.0..g.1).unwrap_or(&[]);
            if slice.len() == 1 {
                next.extend(slice.iter().cloned());
                continue;
            }
            let joined = numbered(slice);
            let user = Zeroizing::new(task.combine_prompt(&values(p, "", &joined)));
            let r = engine
                .generate(&system, &user, answer_tokens, &mut || {})
                .map_err(PartsError::Combine)?;
            tokens_in += r.prompt_tokens;
            tokens_out += r.output_tokens;
            next.push(Zeroizing::new(r.text.trim().to_string()));
        }
        answers = next;
    }
    let text = answers.pop().unwrap_or_default();
    Ok(Answer {
        text,
        parts: n,
        tokens_in,
        tokens_out,
    })
}

/// `Part 1:\n…\n\nPart 2:\n…`
fn numbered(answers: &[Zeroizing<String>]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::new());
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            s.push_str("\n\n");
        }
        s.push_str(&format!("Part {}:\n", i + 1));
        s.push_str(a);
    }
    s
}

/// Consecutive ranges of `answers` whose combine prompt fits `budget`.
fn group(
    engine: &mut dyn Engine,
    task: &Task,
    p: &Params,
    answers: &[Zeroizing<String>],
    budget: usize,
) -> Result<Vec<(usize, usize)>, PartsError> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < answers.len() {
        let mut end = start + 1;
        while end < answers.len() {
            let joined = numbered(answers.get(start..=end).unwrap_or(&[]));
            let prompt = Zeroizing::new(task.combine_prompt(&values(p, "", &joined)));
            let user_empty = task.user_prompt(&values(p, "", ""));
            let n = engine.count(&prompt).map_err(PartsError::Combine)?;
            let base = engine.count(&user_empty).map_err(PartsError::Combine)?;
            if n.saturating_sub(base) > budget {
                break;
            }
            end += 1;
        }
        out.push((start, end));
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_formats::tasks::TaskTable;

    /// A stand-in model for the splitting and combining logic only: one
    /// token per word; answers "A<n>" naming how many words it read. The
    /// real worker is exercised in tests/tests/jobs.rs.
    struct Words {
        prompts: Vec<String>,
    }

    impl Engine for Words {
        fn count(&mut self, text: &str) -> Result<usize, String> {
            Ok(text.split_whitespace().count())
        }
        fn generate(
            &mut self,
            _system: &str,
            user: &str,
            _max: u32,
            _on: &mut dyn FnMut(),
        ) -> Result<Generated, String> {
            self.prompts.push(user.to_string());
            let n = user.split_whitespace().count() as u64;
            Ok(Generated {
                text: Zeroizing::new(format!("A{n}")),
                prompt_tokens: n,
                output_tokens: 1,
            })
        }
    }

    fn summarize() -> Task {
        let t = TaskTable::parse(include_bytes!(
            "../../../rootfs-overlay/etc/airlock/tasks.json"
        ))
        .unwrap();
        t.get("summarize").unwrap().clone()
    }

    #[test]
    fn short_and_long_documents() {
        let para = "word ".repeat(50) + "\n\n";
        // (paragraphs, context) -> (parts, combine prompts)
        let cases: &[(usize, usize, usize, usize)] = &[(1, 2048, 1, 0), (12, 456, 3, 1)];
        for &(paras, context, parts, combines) in cases {
            let mut m = Words { prompts: vec![] };
            let p = Params {
                question: None,
                language: None,
                context,
                answer_tokens: 100,
            };
            let mut events = Vec::new();
            let a = run(&mut m, &summarize(), &p, &para.repeat(paras), &mut |e| {
                events.push(e)
            })
            .unwrap();
            assert_eq!(a.parts, parts, "{events:?}");
            assert_eq!(m.prompts.len(), parts + combines, "{events:?}");
            assert!(a.text.starts_with('A'), "{}", a.text.as_str());
        }
    }

    #[test]
    fn refusals() {
        let mut m = Words { prompts: vec![] };
        let p = |context| Params {
            question: None,
            language: None,
            context,
            answer_tokens: 100,
        };
        let e = |r: Result<Answer, PartsError>| r.err().map(|e| e.to_string());
        assert_eq!(
            e(run(&mut m, &summarize(), &p(2048), " \n", &mut |_| {})),
            Some("the document is empty".into())
        );
        assert_eq!(
            e(run(&mut m, &summarize(), &p(120), "some text", &mut |_| {})),
            Some("the task's prompts alone fill the model's context of 120 tokens".into())
        );
    }
}
