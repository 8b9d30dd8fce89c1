//! Our CPU kernels (`airlock-kernels`) wired into the patched candle-core and
//! mistralrs-core through their hooks (`patches/`, `scripts/patch-crates`).
//!
//! [`install`] sets the hooks once, before the model loads. A hook declines
//! (and the original candle/mistral.rs code runs) for anything its kernel
//! does not cover: other dtypes, masks other than causal, bf16. `AIRLOCK_KERNELS=off` in the
//! worker's environment leaves the hooks unset: the benchmark's "unpatched"
//! mode and the token-equality tests run the original code paths with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use airlock_kernels::attention::{self, Attn, Elem, Mask};
use airlock_kernels::qmatmul::{self, QMatMul};
use candle_core::airlock_hooks::{self, QMatMulCall};
use candle_core::{DType, Device, Storage, Tensor, WithDType};

// The build fails here if a crate is unpatched (a patch not applied or not used).
const _CANDLE_PATCHED: &str = airlock_hooks::PATCHED;
const _MISTRALRS_PATCHED: &str = mistralrs_core::AIRLOCK_PATCHED;

/// Environment variable that turns our kernels off (`off`); default on.
pub const ENV: &str = "AIRLOCK_KERNELS";

/// Which kernels a setting of [`ENV`] enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// The attention kernels.
    pub attention: bool,
    /// The quantised matmul driver and micro-kernels.
    pub qmatmul: bool,
}

impl Selection {
    /// Parses `off`, `on`/unset, or a comma list of `attention`, `qmatmul`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        let all = Self {
            attention: true,
            qmatmul: true,
        };
        let Some(value) = value else { return Ok(all) };
        match value {
            "" | "on" => return Ok(all),
            "off" => {
                return Ok(Self {
                    attention: false,
                    qmatmul: false,
                })
            }
            _ => {}
        }
        let mut s = Self {
            attention: false,
            qmatmul: false,
        };
        for part in value.split(',') {
            match part {
                "attention" => s.attention = true,
                "qmatmul" => s.qmatmul = true,
                other => {
                    return Err(format!(
                        "{ENV}: unknown kernel {other:?} (attention, qmatmul, on, off)"
                    ))
                }
            }
        }
        Ok(s)
    }
}

/// Whether the installed hooks take calls (tests compare both ways in one process).
static ATTENTION_ACTIVE: AtomicBool = AtomicBool::new(false);
static QMATMUL_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Sets the hooks the selection enables (a kernel left out is never hooked:
/// the original code runs exactly as unpatched).
pub fn install(sel: Selection) {
    set_active(sel);
    if sel.attention {
        airlock_hooks::set_attention(attention_hook);
    }
    if sel.qmatmul {
        airlock_hooks::set_qmatmul(qmatmul_hook);
    }
}

/// Lets installed hooks take calls, or decline them so the original code
/// runs (for tests that compare both in one process).
pub fn set_active(sel: Selection) {
    ATTENTION_ACTIVE.store(sel.attention, Ordering::Relaxed);
    QMATMUL_ACTIVE.store(sel.qmatmul, Ordering::Relaxed);
}

/// How often each hook ran: (attention, quantised matmul).
pub fn calls() -> (u64, u64) {
    (
        airlock_hooks::ATTENTION_CALLS.load(Ordering::Relaxed),
        airlock_hooks::QMATMUL_CALLS.load(Ordering::Relaxed),
    )
}

fn qmatmul_hook(c: &QMatMulCall<'_>, dst: &mut [f32]) -> bool {
    if !QMATMUL_ACTIVE.load(Ordering::Relaxed) {
        return false;
    }
    let a = QMatMul {
        wtype: c.wtype,
        m: c.m,
        k: c.k,
        n: c.n,
        lhs: c.lhs,
        rhs: c.rhs,
        rhs_row_bytes: c.rhs_row_bytes,
        act_row_bytes: c.act_row_bytes,
        act_align: c.act_align,
        quantize_row: c.quantize_row,
        dot: c.dot,
    };
    qmatmul::matmul(&a, dst).is_ok()
}

fn attention_hook(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    softcap: Option<f32>,
) -> Option<candle_core::Result<Tensor>> {
    if !ATTENTION_ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    match q.dtype() {
        DType::F32 => run_attention::<f32>(q, k, v, mask, scale, softcap),
        DType::F16 => run_attention::<half::f16>(q, k, v, mask, scale, softcap),
        _ => None,
    }
}

/// The last mask tensor found to be the plain causal mask (masks are shared
/// by every layer of one forward pass: checked once, not per layer).
static CAUSAL_MASK: Mutex<Option<candle_core::TensorId>> = Mutex::new(None);

/// The kernel's mask for mistral.rs's additive mask, or `None` (declined) if
/// it is not exactly "0 up to the causal bound, -inf (or below -1e4) after".
fn causal_mask(mask: &Tensor, q_len: usize, kv_len: usize) -> Option<Mask> {
    let dims = mask.dims();
    if dims.len() < 2
        || dims[dims.len() - 2..] != [q_len, kv_len]
        || mask.elem_count() != q_len * kv_len
    {
        return None;
    }
    if let Ok(last) = CAUSAL_MASK.lock() {
        if *last == Some(mask.id()) {
            return Some(Mask::Causal);
        }
    }
    let values = mask
        .flatten_all()
        .ok()?
        .to_dtype(DType::F32)
        .ok()?
        .to_vec1::<f32>()
        .ok()?;
    let offset = kv_len.checked_sub(q_len)?;
    for (i, row) in values.chunks_exact(kv_len).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            let visible = j <= offset + i;
            if (visible && x != 0.0) || (!visible && x > -1e4) {
                return None;
            }
        }
    }
    if let Ok(mut last) = CAUSAL_MASK.lock() {
        *last = Some(mask.id());
    }
    Some(Mask::Causal)
}

/// A CPU tensor's elements from its start offset, with its strides.
fn cpu_slice<T: WithDType>(storage: &Storage, offset: usize) -> Option<&[T]> {
    match storage {
        Storage::Cpu(cpu) => cpu.as_slice::<T>().ok()?.get(offset..),
        _ => None,
    }
}

fn run_attention<T: WithDType + Elem>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    softcap: Option<f32>,
) -> Option<candle_core::Result<Tensor>> {
    let (batch, n_heads, q_len, head_dim) = q.dims4().ok()?;
    let (kb, n_kv_heads, kv_len, kd) = k.dims4().ok()?;
    if v.dims4().ok()? != (kb, n_kv_heads, kv_len, kd) || kb != batch || kd != head_dim {
        return None;
    }
    let mask = match mask {
        None => Mask::None,
        Some(m) => causal_mask(m, q_len, kv_len)?,
    };
    // (b, heads, pos, d) tensors; the kernel takes strides of (b, pos, head).
    let strides = |t: &Tensor| -> Option<[usize; 3]> {
        let s = t.stride();
        (s.len() == 4 && (s[3] == 1 || head_dim == 1)).then(|| [s[0], s[2], s[1]])
    };
    let (qs, ks, vs) = (strides(q)?, strides(k)?, strides(v)?);
    let (q_guard, q_layout) = q.storage_and_layout();
    let (k_guard, k_layout) = k.storage_and_layout();
    let (v_guard, v_layout) = v.storage_and_layout();
    let a = Attn {
        q: cpu_slice::<T>(&q_guard, q_layout.start_offset())?,
        q_strides: qs,
        k: cpu_slice::<T>(&k_guard, k_layout.start_offset())?,
        k_strides: ks,
        v: cpu_slice::<T>(&v_guard, v_layout.start_offset())?,
        v_strides: vs,
        batch,
        q_len,
        kv_len,
        n_heads,
        n_kv_heads,
        head_dim,
        scale,
        softcap,
        mask,
    };
    let mut out = vec![T::from_f64(0.0); batch * n_heads * q_len * head_dim];
    attention::attention(&a, &mut out).ok()?;
    Some(Tensor::from_vec(
        out,
        (batch, n_heads, q_len, head_dim),
        &Device::Cpu,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn selection_parses_the_environment() {
        let on = Selection {
            attention: true,
            qmatmul: true,
        };
        let off = Selection {
            attention: false,
            qmatmul: false,
        };
        for (value, want) in [
            (None, Ok(on)),
            (Some("on"), Ok(on)),
            (Some("off"), Ok(off)),
            (
                Some("attention"),
                Ok(Selection {
                    attention: true,
                    qmatmul: false,
                }),
            ),
            (
                Some("qmatmul"),
                Ok(Selection {
                    attention: false,
                    qmatmul: true,
                }),
            ),
            (Some("attention,qmatmul"), Ok(on)),
        ] {
            assert_eq!(Selection::parse(value), want, "{value:?}");
        }
        let e = Selection::parse(Some("attn")).unwrap_err();
        assert!(e.contains("unknown kernel \"attn\""), "{e}");
    }
}
