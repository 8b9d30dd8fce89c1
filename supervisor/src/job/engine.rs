//! The sandboxed inference worker (`infer::Worker`) as the model of
//! [`super::parts`]: greedy decoding (temperature 0, fixed seed), so the
//! same document, task and model give the same answer. The prompt copies
//! in the request are wiped after each generation.

use super::parts::{Engine, Generated};
use crate::infer::Worker;
use airlock_formats::protocol::{GenerateRequest, Message, Role};
use std::time::Duration;
use zeroize::Zeroize;

/// A started worker.
pub struct WorkerEngine {
    worker: Worker,
}

impl WorkerEngine {
    /// Starts the worker of `spec` on `gguf` (relative to its model
    /// directory) and waits until the model is loaded.
    pub fn start(
        spec: airlock_sandbox::Spec,
        gguf: &str,
        within: Duration,
    ) -> Result<WorkerEngine, String> {
        Worker::start(spec, gguf, &[], within)
            .map(|worker| WorkerEngine { worker })
            .map_err(|e| e.to_string())
    }

    /// The model's context length, when the worker reported it.
    pub fn context_length(&self) -> Option<u64> {
        self.worker.context_length()
    }

    /// Stops the worker; the reason when it had died (out of memory, a
    /// crash).
    pub fn finish(self) -> Result<(), String> {
        self.worker.finish().map_err(|e| e.to_string())
    }
}

impl Engine for WorkerEngine {
    fn count(&mut self, text: &str) -> Result<usize, String> {
        self.worker.count(text).map_err(|e| e.to_string())
    }

    fn generate(
        &mut self,
        system: &str,
        user: &str,
        max_tokens: u32,
        on_token: &mut dyn FnMut(),
    ) -> Result<Generated, String> {
        let mut req = GenerateRequest {
            messages: vec![
                Message {
                    role: Role::System,
                    content: system.to_string(),
                },
                Message {
                    role: Role::User,
                    content: user.to_string(),
                },
            ],
            max_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        };
        let r = self.worker.generate(&req, &mut |_| on_token());
        for m in &mut req.messages {
            m.content.zeroize();
        }
        let (text, stats) = r.map_err(|e| e.to_string())?;
        Ok(Generated {
            text,
            prompt_tokens: stats.prompt_tokens,
            output_tokens: stats.decode_tokens,
        })
    }
}
