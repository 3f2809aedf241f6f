//! Computing an importance matrix over a calibration text, as llama-imatrix does: the tokens
//! are cut into chunks of `n_ctx`, each chunk starts afresh with BOS in its first place (where
//! the vocabulary adds one), every chunk is evaluated whole with all logits, and an
//! [`ImatrixCollector`] on the context sums the inputs of every layer weight. The perplexity of
//! each chunk's second half is reported along the way (llama-imatrix prints the same figure).

use std::sync::Arc;

use super::imatrix::{Imatrix, ImatrixCollector};
use crate::{Context, ContextParams, Device, Model, ModelError, Result};

/// How to compute.
#[derive(Clone, Debug)]
pub struct CalibrationParams {
    /// Tokens per chunk (llama-imatrix's `-c`, 512).
    pub n_ctx: usize,
    /// Evaluate at most this many chunks (`--chunks`; all by default).
    pub max_chunks: Option<usize>,
    /// CPU threads (0 = all cores).
    pub n_threads: usize,
    /// Also collect `output.weight` (`--process-output`).
    pub process_output: bool,
    /// The calibration text's name, recorded in the file (`imatrix.datasets`).
    pub dataset: String,
}

/// A computed importance matrix.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// The matrix.
    pub imatrix: Imatrix,
    /// Chunks evaluated.
    pub n_chunks: usize,
    /// Perplexity over the second half of every chunk.
    pub perplexity: f64,
}

/// Compute the importance matrix of `model` over `tokens` (the text tokenized with BOS as
/// the vocabulary wants it), calling `progress(done, total)` after each chunk.
pub fn compute(
    model: Arc<Model>,
    tokens: &[u32],
    p: &CalibrationParams,
    mut progress: impl FnMut(usize, usize),
) -> Result<Calibration> {
    let n_ctx = p.n_ctx;
    if n_ctx < 2 || tokens.len() < 2 * n_ctx {
        return Err(ModelError::InvalidInput(format!(
            "the text has {} tokens; an importance matrix over chunks of {n_ctx} needs at least \
             {} (two chunks)",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let n_chunks = (tokens.len() / n_ctx).min(p.max_chunks.unwrap_or(usize::MAX));
    let bos = model
        .tokenizer()
        .add_bos()
        .then(|| model.tokenizer().bos())
        .flatten();
    let collector = Arc::new(ImatrixCollector::new(p.process_output));
    let mut ctx = Context::new(
        model.clone(),
        ContextParams {
            n_ctx,
            n_batch: n_ctx,
            n_threads: p.n_threads,
            device: Device::Cpu,
            ..Default::default()
        },
    )?;
    ctx.set_mat_mul_tap(Some(collector.clone()))?;
    let (mut nll, mut count) = (0f64, 0usize);
    for c in 0..n_chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        ctx.reset();
        ctx.eval(&chunk, true)?;
        if let Some(w) = collector.non_finite() {
            return Err(ModelError::InvalidInput(format!(
                "the inputs of {w} became non-finite (NaN or infinity) in chunk {c}"
            )));
        }
        let orig = &tokens[c * n_ctx..(c + 1) * n_ctx];
        for j in n_ctx / 2..n_ctx - 1 {
            let row = ctx.logits_row(j);
            let lse = crate::log_softmax::log_partition(row);
            nll += lse - row[orig[j + 1] as usize] as f64;
            count += 1;
        }
        progress(c + 1, n_chunks);
    }
    ctx.set_mat_mul_tap(None)?;
    let mut imatrix = collector.snapshot(vec![p.dataset.clone()], n_chunks as u32, n_ctx as u32);
    name_fused_entries(&model, &mut imatrix);
    Ok(Calibration {
        imatrix,
        n_chunks,
        perplexity: (nll / count.max(1) as f64).exp(),
    })
}

/// Entries collected under the name of a view of a fused weight (Phi-3's `attn_q` of
/// `attn_qkv`, `ffn_gate` of a gate+up `ffn_up`) are stored under the fused tensor's name, as
/// llama.cpp (which multiplies by the fused tensor) names them: the views share one input.
fn name_fused_entries(model: &Model, m: &mut Imatrix) {
    let file = model.file();
    let names: Vec<String> = m.entries.keys().cloned().collect();
    for name in names {
        if file.tensor_info(&name).is_some() {
            continue;
        }
        let entry = m.entries.remove(&name).expect("listed");
        for (part, fused) in [
            ("attn_q.weight", "attn_qkv.weight"),
            ("attn_k.weight", "attn_qkv.weight"),
            ("attn_v.weight", "attn_qkv.weight"),
        ] {
            if let Some(prefix) = name.strip_suffix(part) {
                let f = format!("{prefix}{fused}");
                if file.tensor_info(&f).is_some() {
                    m.entries.entry(f).or_insert(entry.clone());
                }
            }
        }
        // A `ffn_gate` view of a fused `ffn_up` saw the same input as `ffn_up`, which is kept.
    }
}
