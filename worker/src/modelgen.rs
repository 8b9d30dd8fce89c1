//! Test-model generator: a llama-architecture GGUF with random weights from a
//! fixed seed, a small SentencePiece-style vocabulary (byte tokens, scores,
//! token types) and a chat template, written with candle's GGUF writer.
//!
//! The same preset, quantisation and seed always give a bit-identical file:
//! weights come from ChaCha8 (pinned crate versions), metadata and tensors are
//! written in a fixed order, and candle's writer adds no timestamps.

use std::io::{Seek, Write};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shape of a generated model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Vocabulary size (3 control + 256 byte tokens + text pieces).
    pub vocab: usize,
    /// Embedding width.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Context length written into the metadata.
    pub context: usize,
}

impl Shape {
    /// Width of the key and value projections (`kv_heads` heads of `dim / heads`).
    pub fn kv_dim(self) -> usize {
        self.dim / self.heads * self.kv_heads
    }

    /// Checks that the heads divide and the matrices fit `quant`'s blocks
    /// (the shape arithmetic of [`write_model`], without drawing a weight).
    pub fn check(self, quant: Quant) -> Result<(), ModelGenError> {
        let shape = self;
        let block = quant.ggml().block_size();
        if shape.heads == 0
            || !shape.dim.is_multiple_of(shape.heads)
            || shape.kv_heads == 0
            || !shape.heads.is_multiple_of(shape.kv_heads)
        {
            return Err(ModelGenError::Shape(format!(
                "dim {} / heads {} / kv_heads {} do not divide",
                shape.dim, shape.heads, shape.kv_heads
            )));
        }
        if !shape.dim.is_multiple_of(block) || !shape.ffn.is_multiple_of(block) {
            return Err(ModelGenError::Shape(format!(
                "dim {} and ffn {} must be multiples of the {quant:?} block size {block}",
                shape.dim, shape.ffn
            )));
        }
        Ok(())
    }
}

/// Named model shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// ~0.2M parameters: loads and generates in well under a second (tests, demo stick).
    Tiny,
    /// ~112M parameters: the benchmark model.
    Bench,
    /// ~1.1B parameters, shaped like TinyLlama-1.1B (the large benchmark model).
    #[value(name = "1b")]
    B1,
}

impl Preset {
    /// The name on the command line (`tiny`, `bench`, `1b`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Bench => "bench",
            Preset::B1 => "1b",
        }
    }

    /// The shape of this preset.
    pub fn shape(self) -> Shape {
        match self {
            Preset::Tiny => Shape {
                vocab: 1024,
                dim: 64,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                ffn: 256,
                context: 2048,
            },
            Preset::Bench => Shape {
                vocab: 32_000,
                dim: 768,
                layers: 10,
                heads: 12,
                kv_heads: 4,
                ffn: 2048,
                context: 4096,
            },
            // TinyLlama-1.1B: 22 blocks of width 2048, 32 heads of 64 over 4
            // key/value heads, SwiGLU width 5632; its 32,000-token vocabulary
            // size with our generated pieces (as the bench preset).
            Preset::B1 => Shape {
                vocab: 32_000,
                dim: 2048,
                layers: 22,
                heads: 32,
                kv_heads: 4,
                ffn: 5632,
                context: 2048,
            },
        }
    }
}

/// Storage type of the weight matrices (norms always stay F32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quant {
    /// 8-bit blocks of 32 (llama.cpp `Q8_0`).
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit k-quant super-blocks of 256 (llama.cpp `Q4_K`).
    #[value(name = "q4_k")]
    Q4K,
    /// Unquantised.
    #[value(name = "f32")]
    F32,
}

impl Quant {
    fn ggml(self) -> GgmlDType {
        match self {
            Quant::Q8_0 => GgmlDType::Q8_0,
            Quant::Q4K => GgmlDType::Q4K,
            Quant::F32 => GgmlDType::F32,
        }
    }

    /// llama.cpp's `general.file_type` value.
    fn file_type(self) -> u32 {
        match self {
            Quant::F32 => 0,
            Quant::Q8_0 => 7,
            Quant::Q4K => 15,
        }
    }
}

/// Errors of generating a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelGenError {
    /// The shape does not fit the quantisation's block size or the head layout.
    #[error("invalid shape: {0}")]
    Shape(String),
    /// Building or quantising a tensor failed.
    #[error("building tensor {name}: {source}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// Cause.
        #[source]
        source: candle_core::Error,
    },
    /// Writing the GGUF file failed.
    #[error("writing GGUF: {0}")]
    Write(#[source] candle_core::Error),
}

/// Chat template stored in the model (Llama-2 style, Jinja as used by
/// mistral.rs and llama.cpp).
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{% if message['role'] == 'system' %}<<SYS>>\n{{ message['content'] }}\n<</SYS>>\n\n\
{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]\
{% else %} {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}";

const UNK: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;
/// SentencePiece token types.
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_BYTE: i32 = 6;

/// The vocabulary: control tokens, the 256 byte-fallback tokens, then text
/// pieces from short to long (so that every ASCII text is covered).
fn vocabulary(size: usize) -> Vec<(String, f32, i32)> {
    let mut v: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, TYPE_UNKNOWN),
        ("<s>".into(), 0.0, TYPE_CONTROL),
        ("</s>".into(), 0.0, TYPE_CONTROL),
    ];
    for b in 0..=255u8 {
        v.push((format!("<0x{b:02X}>"), 0.0, TYPE_BYTE));
    }
    let lower: Vec<char> = ('a'..='z').collect();
    let mut pieces: Vec<String> = Vec::new();
    pieces.push("\u{2581}".into());
    for c in (0x21u8..0x7f).map(char::from) {
        pieces.push(c.to_string());
        pieces.push(format!("\u{2581}{c}"));
    }
    for a in &lower {
        for b in &lower {
            pieces.push(format!("\u{2581}{a}{b}"));
            pieces.push(format!("{a}{b}"));
        }
    }
    'outer: for a in &lower {
        for b in &lower {
            for c in &lower {
                if pieces.len() + v.len() >= size {
                    break 'outer;
                }
                pieces.push(format!("\u{2581}{a}{b}{c}"));
                pieces.push(format!("{a}{b}{c}"));
            }
        }
    }
    for (i, p) in pieces.into_iter().enumerate() {
        if v.len() >= size {
            break;
        }
        // Log-probability-like scores: every piece costs about the same, so a
        // unigram (Viterbi) tokenizer prefers the fewest, longest pieces, and
        // llama.cpp's SPM merges (highest score first) build the longest too.
        let chars = p.chars().count() as f32;
        v.push((p, -10.0 + chars - (i as f32) * 1e-5, TYPE_NORMAL));
    }
    v
}

struct Builder {
    rng: ChaCha8Rng,
    quant: Quant,
    tensors: Vec<(String, QTensor)>,
}

impl Builder {
    /// A (rows × cols) matrix, uniform in ±sqrt(3/cols) (unit variance of the output).
    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<(), ModelGenError> {
        let a = (3.0 / cols as f32).sqrt();
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| self.rng.random_range(-a..a))
            .collect();
        self.push(name, data, &[rows, cols], self.quant.ggml())
    }

    fn ones(&mut self, name: &str, len: usize) -> Result<(), ModelGenError> {
        self.push(name, vec![1.0; len], &[len], GgmlDType::F32)
    }

    fn push(
        &mut self,
        name: &str,
        data: Vec<f32>,
        shape: &[usize],
        dtype: GgmlDType,
    ) -> Result<(), ModelGenError> {
        let err = |source| ModelGenError::Tensor {
            name: name.to_string(),
            source,
        };
        let t = Tensor::from_vec(data, shape, &Device::Cpu).map_err(err)?;
        let q = QTensor::quantize(&t, dtype).map_err(err)?;
        self.tensors.push((name.to_string(), q));
        Ok(())
    }
}

/// Writes a model of `shape` with weights in `quant`, drawn from `seed`.
pub fn write_model<W: Write + Seek>(
    w: &mut W,
    name: &str,
    shape: Shape,
    quant: Quant,
    seed: u64,
) -> Result<(), ModelGenError> {
    shape.check(quant)?;
    let kv_dim = shape.kv_dim();
    let vocab = vocabulary(shape.vocab);
    if vocab.len() != shape.vocab {
        return Err(ModelGenError::Shape(format!(
            "vocabulary generator yields {} tokens, {} asked for",
            vocab.len(),
            shape.vocab
        )));
    }

    let mut b = Builder {
        rng: ChaCha8Rng::seed_from_u64(seed),
        quant,
        tensors: Vec::new(),
    };
    b.matrix("token_embd.weight", shape.vocab, shape.dim)?;
    for l in 0..shape.layers {
        let p = format!("blk.{l}");
        b.ones(&format!("{p}.attn_norm.weight"), shape.dim)?;
        b.matrix(&format!("{p}.attn_q.weight"), shape.dim, shape.dim)?;
        b.matrix(&format!("{p}.attn_k.weight"), kv_dim, shape.dim)?;
        b.matrix(&format!("{p}.attn_v.weight"), kv_dim, shape.dim)?;
        b.matrix(&format!("{p}.attn_output.weight"), shape.dim, shape.dim)?;
        b.ones(&format!("{p}.ffn_norm.weight"), shape.dim)?;
        b.matrix(&format!("{p}.ffn_gate.weight"), shape.ffn, shape.dim)?;
        b.matrix(&format!("{p}.ffn_down.weight"), shape.dim, shape.ffn)?;
        b.matrix(&format!("{p}.ffn_up.weight"), shape.ffn, shape.dim)?;
    }
    b.ones("output_norm.weight", shape.dim)?;
    b.matrix("output.weight", shape.vocab, shape.dim)?;

    use gguf_file::Value;
    let u32v = |x: usize| Value::U32(u32::try_from(x).unwrap_or(u32::MAX));
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String(name.into())),
        ("general.file_type", Value::U32(quant.file_type())),
        ("llama.context_length", u32v(shape.context)),
        ("llama.embedding_length", u32v(shape.dim)),
        ("llama.block_count", u32v(shape.layers)),
        ("llama.feed_forward_length", u32v(shape.ffn)),
        ("llama.rope.dimension_count", u32v(shape.dim / shape.heads)),
        ("llama.attention.head_count", u32v(shape.heads)),
        ("llama.attention.head_count_kv", u32v(shape.kv_heads)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.vocab_size", u32v(shape.vocab)),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(vocab.iter().map(|t| Value::String(t.0.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(vocab.iter().map(|t| Value::F32(t.1)).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(vocab.iter().map(|t| Value::I32(t.2)).collect()),
        ),
        ("tokenizer.ggml.unknown_token_id", Value::U32(UNK)),
        ("tokenizer.ggml.bos_token_id", Value::U32(BOS)),
        ("tokenizer.ggml.eos_token_id", Value::U32(EOS)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        (
            "tokenizer.chat_template",
            Value::String(CHAT_TEMPLATE.into()),
        ),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = b.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(w, &md, &ts).map_err(ModelGenError::Write)
}

/// Number of parameters of a model of `shape`.
pub fn parameter_count(shape: Shape) -> usize {
    let kv_dim = shape.kv_dim();
    let per_layer = 2 * shape.dim
        + 2 * shape.dim * shape.dim
        + 2 * kv_dim * shape.dim
        + 3 * shape.ffn * shape.dim;
    2 * shape.vocab * shape.dim + shape.layers * per_layer + shape.dim
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_has_the_asked_size_and_every_byte() {
        for size in [1024, 32_000] {
            let v = vocabulary(size);
            assert_eq!(v.len(), size);
            assert_eq!(v[259].0, "\u{2581}");
            assert_eq!(v[3 + 0x0A].0, "<0x0A>");
            let mut names: Vec<&str> = v.iter().map(|t| t.0.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), size, "duplicate token");
        }
    }

    #[test]
    fn same_seed_gives_identical_bytes_other_seed_differs() {
        let gen = |seed| {
            let mut c = std::io::Cursor::new(Vec::new());
            write_model(&mut c, "t", Preset::Tiny.shape(), Quant::Q8_0, seed).unwrap();
            c.into_inner()
        };
        let a = gen(7);
        assert_eq!(&a[..4], b"GGUF");
        assert_eq!(a, gen(7));
        assert_ne!(a, gen(8));
    }

    #[test]
    fn shape_not_matching_the_block_size_is_refused() {
        let mut c = std::io::Cursor::new(Vec::new());
        let err = write_model(&mut c, "t", Preset::Tiny.shape(), Quant::Q4K, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid shape: dim 64 and ffn 256 must be multiples of the Q4K block size 256"
        );
    }

    #[test]
    fn presets_have_their_size_and_fit_their_quantisations() {
        // (preset, parameter range, quantisations its shape must fit)
        let table: [(Preset, std::ops::Range<usize>, &[Quant]); 3] = [
            (Preset::Tiny, 150_000..300_000, &[Quant::Q8_0, Quant::F32]),
            (
                Preset::Bench,
                90_000_000..130_000_000,
                &[Quant::Q4K, Quant::Q8_0, Quant::F32],
            ),
            (
                Preset::B1,
                1_000_000_000..1_200_000_000,
                &[Quant::Q4K, Quant::Q8_0, Quant::F32],
            ),
        ];
        for (preset, range, quants) in table {
            let shape = preset.shape();
            let n = parameter_count(shape);
            assert!(range.contains(&n), "{preset:?}: {n}");
            for &q in quants {
                shape
                    .check(q)
                    .unwrap_or_else(|e| panic!("{preset:?} {q:?}: {e}"));
            }
            assert_eq!(vocabulary(shape.vocab).len(), shape.vocab, "{preset:?}");
        }
        // TinyLlama-1.1B's count exactly (its vocabulary, untied output).
        assert_eq!(parameter_count(Preset::B1.shape()), 1_100_048_384);
        assert_eq!(Preset::B1.shape().kv_dim(), 256);
        assert_eq!(Preset::B1.name(), "1b");
    }
}
