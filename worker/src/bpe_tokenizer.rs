//! The tokenizer of a GPT-2-style BPE GGUF, as llama.cpp builds it.
//!
//! mistral.rs 0.8.1 builds a BPE tokenizer from a GGUF's `tokenizer.ggml.*`
//! keys but ignores `tokenizer.ggml.pre` and always splits the text with a
//! Llama-3-like regex. For SmolLM2 (`pre = smollm`) that splits whitespace
//! before a line differently from llama.cpp and from the model's training
//! (`"\n\n Next"` gives `ĊĊ`, `Ġ`, `ĠNext` instead of `ĊĊĠ`, `ĠNext`), so
//! indented or multi-paragraph text reached the model as token sequences it
//! never saw. For the pre-tokenizers in [`PRE_TOKENIZERS`] the worker writes
//! a `tokenizer.json` (vocabulary, merges and special tokens from the GGUF,
//! llama.cpp's split regexes) and a `tokenizer_config.json` (the GGUF's chat
//! template and bos/eos/unk tokens) into a scratch directory, which mistral.rs
//! then loads instead of its own conversion. Any other GGUF is left to
//! mistral.rs. Checked against llama.cpp's ids by `tests/smollm2.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Map};

/// llama.cpp's split regexes by `tokenizer.ggml.pre` (llama-vocab.cpp), applied
/// in order, each piece kept (HF `Split`, `Isolated`). Add a row only with a
/// model whose ids were compared with llama.cpp's.
const PRE_TOKENIZERS: &[(&str, &[&str])] = &[
    // SmolLM/SmolLM2 (LLAMA_VOCAB_PRE_TYPE_SMOLLM): every digit alone, then GPT-2's split.
    ("smollm", &[r"\p{N}", GPT2_SPLIT]),
];

/// GPT-2's split (case-sensitive contractions, letters, digits, other runs, whitespace).
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// `tokenizer.ggml.token_type` of an ordinary token; every other type is special.
const TOKEN_TYPE_NORMAL: i32 = 1;

/// Errors of preparing the tokenizer files.
#[derive(Debug, thiserror::Error)]
pub enum BpeTokenizerError {
    /// The model file could not be opened.
    #[error("tokenizer: opening {path}: {source}")]
    Open {
        /// Model path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The GGUF metadata could not be read.
    #[error("tokenizer: reading the GGUF metadata: {0}")]
    Metadata(String),
    /// A `tokenizer.ggml.*` key is missing or has the wrong type.
    #[error("tokenizer: GGUF key {key}: {reason}")]
    Key {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Writing a file into the scratch directory failed.
    #[error("tokenizer: writing {path}: {source}")]
    Write {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn key<'a>(
    md: &'a HashMap<String, Value>,
    key: &'static str,
) -> Result<&'a Value, BpeTokenizerError> {
    md.get(key).ok_or(BpeTokenizerError::Key {
        key,
        reason: "missing".into(),
    })
}

fn bad(key: &'static str) -> impl Fn(candle_core::Error) -> BpeTokenizerError {
    move |e| BpeTokenizerError::Key {
        key,
        reason: e.to_string(),
    }
}

fn strings(md: &HashMap<String, Value>, k: &'static str) -> Result<Vec<String>, BpeTokenizerError> {
    key(md, k)?
        .to_vec()
        .map_err(bad(k))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(bad(k)))
        .collect()
}

fn token(
    md: &HashMap<String, Value>,
    tokens: &[String],
    k: &'static str,
) -> Result<Option<String>, BpeTokenizerError> {
    let Some(v) = md.get(k) else { return Ok(None) };
    let id = v.to_u32().map_err(bad(k))?;
    tokens
        .get(id as usize)
        .cloned()
        .map(Some)
        .ok_or(BpeTokenizerError::Key {
            key: k,
            reason: format!("id {id} is outside the vocabulary"),
        })
}

/// The split regexes for this GGUF if it is a BPE model whose pre-tokenizer
/// is in [`PRE_TOKENIZERS`]; `None` leaves the tokenizer to mistral.rs.
fn splits(md: &HashMap<String, Value>) -> Option<&'static [&'static str]> {
    let model = md.get("tokenizer.ggml.model")?.to_string().ok()?;
    let pre = md.get("tokenizer.ggml.pre")?.to_string().ok()?;
    if model != "gpt2" {
        return None;
    }
    PRE_TOKENIZERS
        .iter()
        .find(|(name, _)| name == pre)
        .map(|(_, re)| *re)
}

/// The two files' JSON for a GGUF's metadata, or `None` (see [`splits`]).
fn render(
    md: &HashMap<String, Value>,
) -> Result<Option<(serde_json::Value, serde_json::Value)>, BpeTokenizerError> {
    let Some(regexes) = splits(md) else {
        return Ok(None);
    };
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let merges = strings(md, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(bad("tokenizer.ggml.token_type"))?
            .iter()
            .map(|t| t.to_i32().map_err(bad("tokenizer.ggml.token_type")))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let eos = token(md, &tokens, "tokenizer.ggml.eos_token_id")?;
    let bos = token(md, &tokens, "tokenizer.ggml.bos_token_id")?;
    let unk = token(md, &tokens, "tokenizer.ggml.unknown_token_id")?;
    let template = match md.get("tokenizer.chat_template") {
        Some(v) => Some(
            v.to_string()
                .map_err(bad("tokenizer.chat_template"))?
                .clone(),
        ),
        None => None,
    };

    let mut vocab = Map::new();
    for (id, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), json!(id));
    }
    // Special: every token whose type is not "normal" (as mistral.rs and llama.cpp
    // treat them), so a control token written in a prompt is one token.
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| types.get(*id).is_some_and(|t| *t != TOKEN_TYPE_NORMAL))
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let mut pre: Vec<serde_json::Value> = regexes
        .iter()
        .map(|re| {
            json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false})
        })
        .collect();
    pre.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}));
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    let config = json!({
        "chat_template": template,
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
    });
    Ok(Some((tokenizer, config)))
}

/// Writes `tokenizer.json` and `tokenizer_config.json` for `model` into a new
/// directory under `scratch` and returns it, or `None` when mistral.rs's own
/// tokenizer is kept (not a BPE model, or a pre-tokenizer not in the table).
pub fn prepare(model: &Path, scratch: &Path) -> Result<Option<PathBuf>, BpeTokenizerError> {
    let mut f = File::open(model).map_err(|source| BpeTokenizerError::Open {
        path: model.to_path_buf(),
        source,
    })?;
    let content = Content::read(&mut f).map_err(|e| BpeTokenizerError::Metadata(e.to_string()))?;
    let Some((tokenizer, config)) = render(&content.metadata)? else {
        return Ok(None);
    };
    let dir = scratch.join(format!("airlock-tokenizer-{}", std::process::id()));
    let write = |name: &str, v: &serde_json::Value| {
        let path = dir.join(name);
        std::fs::write(&path, v.to_string())
            .map_err(|source| BpeTokenizerError::Write { path, source })
    };
    std::fs::create_dir_all(&dir).map_err(|source| BpeTokenizerError::Write {
        path: dir.clone(),
        source,
    })?;
    write("tokenizer.json", &tokenizer)?;
    write("tokenizer_config.json", &config)?;
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn only_listed_bpe_pre_tokenizers_are_replaced() {
        let s = |x: &str| Value::String(x.into());
        // (tokenizer.ggml.model, tokenizer.ggml.pre, replaced?)
        for (model, pre, want) in [
            ("gpt2", "smollm", true),
            ("gpt2", "llama-bpe", false),
            ("llama", "smollm", false),
            ("llama", "default", false),
        ] {
            let m = md(&[
                ("tokenizer.ggml.model", s(model)),
                ("tokenizer.ggml.pre", s(pre)),
            ]);
            assert_eq!(splits(&m).is_some(), want, "{model} {pre}");
        }
    }
}
