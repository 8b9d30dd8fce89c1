//! The real model of the demo and the end-to-end tests, SmolLM2-135M-Instruct
//! (GGUF Q4_1, GPT-2 style BPE tokenizer), in the real worker: it loads and
//! answers inside every sandbox layer, and mistral.rs's token ids equal
//! llama.cpp's for the same file (recorded once in
//! `tests/data/smollm2-llama-cpp-tokens.json`; nothing is downloaded here).
//!
//! The model comes from `scripts/fetch-model smollm2` (run by `scripts/test`
//! after `scripts/setup-host`): `$AIRLOCK_CACHE/models/` (default
//! `~/.cache/airlock/models/`), or the file named by `AIRLOCK_SMOLLM2_GGUF`.
//! Needs root for the sandbox (CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_formats::protocol::{send, FinishReason, GenerateRequest, Message, Request, Role};
use airlock_sandbox::{ExitStatus, Limits};
use airlock_worker::client::{generate, spawn_sandboxed, wait_ready};

const WORKER: &str = env!("CARGO_BIN_EXE_airlock-worker");
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The GGUF fetched at set-up time; a missing file fails with the step that makes it.
fn smollm2() -> PathBuf {
    let path = match std::env::var_os("AIRLOCK_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = std::env::var_os("AIRLOCK_CACHE")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/airlock")))
                .expect("neither AIRLOCK_CACHE nor HOME is set");
            cache.join("models").join(GGUF)
        }
    };
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-model smollm2 (scripts/test does) before the tests",
        path.display()
    );
    path
}

/// The model alone in a directory of its own (the sandbox mounts the model's
/// directory at /model): a hard link, or a copy across file systems.
fn model_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(GGUF);
    let src = smollm2();
    if std::fs::hard_link(&src, &p).is_err() {
        std::fs::copy(&src, &p).unwrap();
    }
    (dir, p)
}

const DOCUMENT: &str = "The city council met on Tuesday to discuss the new bridge. \
    Engineers said the old bridge is no longer safe for heavy trucks. \
    The council voted to start building the new bridge next spring.";

#[test]
fn smollm2_summarises_a_text_inside_the_sandbox() {
    let (_d, model) = model_dir();
    let args = vec!["--threads".to_string(), "2".to_string()];
    let mut sb = spawn_sandboxed(Path::new(WORKER), &model, &args, Limits::default()).unwrap();
    wait_ready(&mut sb.conn).unwrap();
    let req = GenerateRequest {
        messages: vec![
            Message {
                role: Role::System,
                content: "You are a helpful assistant.".into(),
            },
            Message {
                role: Role::User,
                content: format!("Summarise in one sentence: {DOCUMENT}"),
            },
        ],
        max_tokens: 80,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
    };
    let (answer, stats) = generate(&mut sb.conn, &req).unwrap();
    send(&mut sb.conn, &Request::Shutdown).unwrap();
    match sb.process.wait_timeout(Duration::from_secs(60)).unwrap() {
        Some(st) => assert_eq!(st, ExitStatus::Exited(0)),
        None => panic!("sandboxed worker did not exit within 60 s"),
    }
    eprintln!("SmolLM2 answer: {answer:?} ({stats:?})");
    // A sensible answer: it ends by itself (end-of-turn token) and is about the text.
    assert_eq!(stats.finish_reason, FinishReason::Stop, "{answer:?}");
    let lower = answer.to_lowercase();
    for word in ["council", "bridge"] {
        assert!(lower.contains(word), "no {word:?} in {answer:?}");
    }
    assert!(!answer.contains("<|im_end|>"), "{answer:?}");
}

/// The samples and llama.cpp's ids for them, in the order of the data file.
fn recorded() -> Vec<(String, Vec<u32>)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2-llama-cpp-tokens.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    data["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let text = s["text"].as_str().unwrap().to_string();
            let ids = s["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| u32::try_from(i.as_u64().unwrap()).unwrap())
                .collect();
            (text, ids)
        })
        .collect()
}

/// mistral.rs builds the tokenizer from the GGUF itself and ignores
/// `tokenizer.ggml.pre` (here `smollm`); llama.cpp honours it. Same ids for
/// prose with punctuation, digits, non-ASCII text, code and whitespace runs.
#[test]
fn smollm2_token_ids_equal_llama_cpp() {
    let model = smollm2();
    let mut mismatches = Vec::new();
    let samples = recorded();
    assert!(samples.len() >= 5);
    for (text, want) in &samples {
        let out = Command::new(WORKER)
            .args(["--threads", "1", "--model"])
            .arg(&model)
            .arg("--tokenize")
            .arg(text)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
        if &got != want {
            mismatches.push(format!(
                "{text:?}\n  mistral.rs {got:?}\n  llama.cpp  {want:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
