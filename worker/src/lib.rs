//! The sandboxed inference worker: mistral.rs on a local GGUF model, spoken
//! to over the versioned frame protocol of `airlock_formats::protocol`.

pub mod bpe_tokenizer;
pub mod cli;
pub mod client;
pub mod engine;
pub mod fd;
pub mod kernels_glue;
pub mod model_file;
pub mod modelgen;
pub mod sampler;
pub mod session;
