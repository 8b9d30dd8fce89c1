//! The mistral.rs engine: loading a checked local GGUF on the CPU and running
//! one generation with streamed text and speed figures.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use airlock_formats::protocol::{FinishReason, GenerateRequest, Role, Stats};
use either::Either;
use mistralrs::{
    CustomLogitsProcessor, DeviceMapSetting, GgufModelBuilder, Model, PagedAttentionMetaBuilder,
    RequestBuilder, Response, StopTokens, TextMessageRole, TokenSource,
};

use crate::model_file::ModelFile;
use crate::sampler::SeededSampler;

/// Engine settings (the speed levers measured in `docs/worker.md`).
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Keep mistral.rs's prefix cache (useless for one job per process).
    pub prefix_cache: bool,
    /// Most sequences the scheduler runs at once.
    pub max_seqs: usize,
    /// Use paged attention (CPU KV cache in blocks).
    pub paged_attn: bool,
    /// Threads of the tokio runtime that drives the engine.
    pub tokio_threads: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            prefix_cache: false,
            max_seqs: 1,
            paged_attn: false,
            tokio_threads: 1,
        }
    }
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Creating the tokio runtime failed.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Configuring paged attention failed.
    #[error("configuring paged attention: {0}")]
    PagedAttention(String),
    /// mistral.rs failed to load the model.
    #[error("loading model {file}: {reason}")]
    Load {
        /// Model file name.
        file: String,
        /// mistral.rs's message (first line).
        reason: String,
    },
    /// Submitting the request failed.
    #[error("submitting request: {0}")]
    Submit(String),
    /// The model failed during generation.
    #[error("generation failed: {0}")]
    Generate(String),
    /// The stream ended without a final chunk.
    #[error("generation ended without a result")]
    NoResult,
    /// The consumer of the tokens went away.
    #[error("output closed by the peer")]
    OutputClosed,
    /// The model's tokenizer failed on a text.
    #[error("tokenizing: {0}")]
    Tokenize(String),
}

/// A loaded model ready to generate.
pub struct Engine {
    rt: tokio::runtime::Runtime,
    model: Model,
}

fn first_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().to_string()
}

impl Engine {
    /// Loads `file` on the CPU; never contacts the Hub (the path is local and checked).
    /// `tokenizer_dir`: a local directory with `tokenizer.json` and
    /// `tokenizer_config.json` used instead of mistral.rs's conversion of the
    /// GGUF's tokenizer (see `bpe_tokenizer`).
    pub fn load(
        file: &ModelFile,
        opts: &EngineOptions,
        tokenizer_dir: Option<&Path>,
    ) -> Result<Self, EngineError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.tokio_threads.max(1))
            .enable_all()
            .build()
            .map_err(EngineError::Runtime)?;
        let mut builder = GgufModelBuilder::new(&file.dir, vec![file.file_name.clone()])
            .with_token_source(TokenSource::None)
            .with_device_mapping(DeviceMapSetting::dummy())
            .with_force_cpu()
            .with_max_num_seqs(opts.max_seqs.max(1))
            .with_prefix_cache_n(opts.prefix_cache.then_some(16));
        if let Some(dir) = tokenizer_dir {
            builder = builder.with_tok_model_id(dir.display());
        }
        if opts.paged_attn {
            let cfg = PagedAttentionMetaBuilder::default()
                .build()
                .map_err(|e| EngineError::PagedAttention(first_line(e)))?;
            builder = builder.with_paged_attn(cfg);
        }
        let model = rt
            .block_on(builder.build())
            .map_err(|e| EngineError::Load {
                file: file.file_name.clone(),
                reason: first_line(e),
            })?;
        Ok(Self { rt, model })
    }

    /// Token ids of `text` as the model's tokenizer (built by mistral.rs from
    /// the GGUF) encodes it for a prompt: no chat template, no BOS added.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.rt
            .block_on(self.model.tokenize(
                Either::Right(text.to_string()),
                None,
                false,
                false,
                None,
            ))
            .map_err(|e| EngineError::Tokenize(first_line(e)))
    }

    /// The model's context length (tokens) as mistral.rs read it from the GGUF, if it has one.
    pub fn context_length(&self) -> Option<u64> {
        self.model
            .max_sequence_length()
            .ok()
            .flatten()
            .and_then(|n| u64::try_from(n).ok())
    }

    /// Runs one generation; `on_text` gets each piece of text and returns
    /// `false` when its consumer is gone (the generation is then abandoned).
    pub fn generate(
        &self,
        req: &GenerateRequest,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Stats, EngineError> {
        self.generate_observed(req, None, on_text)
    }

    /// [`Engine::generate`] with `observer` applied to the logits of every
    /// step before sampling (tests record logits and ban tokens with it).
    pub fn generate_observed(
        &self,
        req: &GenerateRequest,
        observer: Option<Arc<dyn CustomLogitsProcessor>>,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Stats, EngineError> {
        let mut rb = RequestBuilder::new();
        for m in &req.messages {
            let role = match m.role {
                Role::System => TextMessageRole::System,
                Role::User => TextMessageRole::User,
                Role::Assistant => TextMessageRole::Assistant,
            };
            rb = rb.add_message(role, &m.content);
        }
        rb = rb
            .set_deterministic_sampler()
            .set_sampler_max_len(req.max_tokens as usize);
        if !req.stop.is_empty() {
            rb = rb.set_sampler_stop_toks(StopTokens::Seqs(req.stop.clone()));
        }
        if let Some(observer) = observer {
            rb = rb.add_logits_processor(observer);
        }
        if req.temperature > 0.0 {
            rb = rb.add_logits_processor(Arc::new(SeededSampler::new(
                req.seed,
                req.temperature,
                req.top_p,
            )));
        }
        self.rt.block_on(async {
            let mut stream = self
                .model
                .stream_chat_request(rb)
                .await
                .map_err(|e| EngineError::Submit(first_line(e)))?;
            let started = Instant::now();
            let mut first: Option<Instant> = None;
            let mut decode_tokens = 0u64;
            while let Some(resp) = stream.next().await {
                match resp {
                    Response::Chunk(chunk) => {
                        first.get_or_insert_with(Instant::now);
                        for choice in &chunk.choices {
                            if let Some(text) = &choice.delta.content {
                                if !text.is_empty() && !on_text(text) {
                                    return Err(EngineError::OutputClosed);
                                }
                            }
                        }
                        decode_tokens += 1;
                        if let Some(usage) = chunk.usage {
                            let finish = chunk
                                .choices
                                .iter()
                                .find_map(|c| c.finish_reason.as_deref())
                                .unwrap_or("stop");
                            return Ok(stats(&usage, finish, started, first));
                        }
                    }
                    Response::ModelError(msg, _) => return Err(EngineError::Generate(msg)),
                    Response::InternalError(e) | Response::ValidationError(e) => {
                        return Err(EngineError::Generate(first_line(e)))
                    }
                    Response::Done(done) => {
                        let finish = done
                            .choices
                            .first()
                            .map(|c| c.finish_reason.clone())
                            .unwrap_or_else(|| "stop".into());
                        return Ok(stats(&done.usage, &finish, started, first));
                    }
                    _ => {
                        return Err(EngineError::Generate(
                            "unexpected response kind from the engine".into(),
                        ))
                    }
                }
            }
            let _ = decode_tokens;
            Err(EngineError::NoResult)
        })
    }
}

/// The speeds by our own clock, as mistral.rs defines them: prompt tokens
/// over submission → first token, generated tokens over first token → end.
/// (mistral.rs's own figures count whole milliseconds: a prefill or a short
/// generation under 1 ms reads 0 tok/s.)
fn stats(u: &mistralrs::Usage, finish: &str, started: Instant, first: Option<Instant>) -> Stats {
    let end = Instant::now();
    let first = first.unwrap_or(end);
    let rate = |n: usize, from: Instant, to: Instant| {
        let secs = to.saturating_duration_since(from).as_secs_f64().max(1e-6);
        if n == 0 {
            0.0
        } else {
            n as f64 / secs
        }
    };
    Stats {
        prompt_tokens: u.prompt_tokens as u64,
        prompt_tok_per_s: rate(u.prompt_tokens, started, first),
        decode_tokens: u.completion_tokens as u64,
        decode_tok_per_s: rate(u.completion_tokens, first, end),
        finish_reason: if finish == "length" {
            FinishReason::Length
        } else {
            FinishReason::Stop
        },
        peak_rss_kib: peak_rss_kib(),
    }
}

/// Peak resident set size of this process (KiB), from getrusage.
pub fn peak_rss_kib() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` into the valid, writable,
    // properly aligned buffer we pass and touches nothing else.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: getrusage returned 0, so it initialised the whole struct (and
    // it was zeroed before in any case; all-zero is a valid `rusage`).
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_maxrss).unwrap_or(0)
}
