//! Seeded temperature / top-p sampling.
//!
//! mistral.rs 0.8.1 seeds its sampler once per engine with a constant, so a
//! request's seed cannot reach it. The worker therefore samples itself, in a
//! logits processor: it draws the next token from the temperature-scaled,
//! nucleus-filtered distribution with a ChaCha8 generator seeded from the
//! request, and hands mistral.rs logits in which only that token is finite;
//! mistral.rs's greedy (argmax) sampler then picks exactly it.

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor};
use mistralrs::CustomLogitsProcessor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Per-request sampler; one instance per generation.
pub struct SeededSampler {
    temperature: f32,
    top_p: f32,
    rng: Mutex<ChaCha8Rng>,
}

impl SeededSampler {
    /// A sampler for `temperature` (> 0) and `top_p` in (0, 1].
    pub fn new(seed: u64, temperature: f32, top_p: f32) -> Self {
        Self {
            temperature,
            top_p,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// Draws a token index from `logits`.
    pub fn choose(&self, logits: &[f32]) -> Option<usize> {
        let max = logits
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return None;
        }
        let mut probs: Vec<(usize, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let p = if l.is_finite() {
                    ((l - max) / self.temperature).exp()
                } else {
                    0.0
                };
                (i, p)
            })
            .filter(|&(_, p)| p > 0.0)
            .collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        if self.top_p < 1.0 {
            // Highest first; ties broken by index so the order is total.
            probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, p) in probs.iter().enumerate() {
                acc += p.1 / total;
                if acc >= self.top_p {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let mass: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.random::<f32>() * mass
        };
        for &(i, p) in &probs {
            if r < p {
                return Some(i);
            }
            r -= p;
        }
        probs.last().map(|p| p.0)
    }
}

impl CustomLogitsProcessor for SeededSampler {
    fn apply(&self, logits: &Tensor, _context: &[u32]) -> Result<Tensor> {
        let values: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        let Some(token) = self.choose(&values) else {
            return Err(candle_core::Error::Msg(
                "model produced no finite logit".into(),
            ));
        };
        let mut out = vec![f32::NEG_INFINITY; values.len()];
        out[token] = 0.0;
        Tensor::from_vec(out, values.len(), logits.device())?.to_dtype(logits.dtype())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn draws(seed: u64, t: f32, p: f32, logits: &[f32]) -> Vec<usize> {
        let s = SeededSampler::new(seed, t, p);
        (0..64).map(|_| s.choose(logits).unwrap()).collect()
    }

    #[test]
    fn same_seed_same_draws_other_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        assert_eq!(draws(1, 1.0, 1.0, &logits), draws(1, 1.0, 1.0, &logits));
        assert_ne!(draws(1, 1.0, 1.0, &logits), draws(2, 1.0, 1.0, &logits));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 3 holds almost all the mass: top_p 0.5 must always pick it.
        let logits = [0.0, 0.0, 0.0, 20.0, 0.0];
        assert!(draws(9, 1.0, 0.5, &logits).iter().all(|&t| t == 3));
        // With top_p 1 and a high temperature the others appear.
        assert!(draws(9, 100.0, 1.0, &logits).iter().any(|&t| t != 3));
    }

    #[test]
    fn non_finite_logits_are_never_chosen() {
        let logits = [f32::NEG_INFINITY, 1.0, f32::NAN, 1.0];
        assert!(draws(3, 1.0, 1.0, &logits)
            .iter()
            .all(|&t| t == 1 || t == 3));
        assert!(SeededSampler::new(0, 1.0, 1.0)
            .choose(&[f32::NEG_INFINITY])
            .is_none());
    }

    #[test]
    fn processor_leaves_exactly_one_finite_logit() {
        let s = SeededSampler::new(5, 0.8, 0.9);
        let t = Tensor::new(&[0.1f32, 0.5, 0.2, 0.9], &candle_core::Device::Cpu).unwrap();
        let out: Vec<f32> = s.apply(&t, &[]).unwrap().to_vec1().unwrap();
        assert_eq!(out.iter().filter(|x| x.is_finite()).count(), 1);
    }
}
