//! Several sequences in one context: `tessera_decode_batch` evaluates tokens of many
//! sequences in one step (each weight read once; each sequence's logits bit-identical to
//! decoding it alone), and `tessera_seq_*` clear, truncate, fork and measure a sequence.
//! A context holds `tessera_context_params.n_seq` sequences, numbered from 0.

use tessera_models::batch::Batch;

use crate::buffers::{out_ptr, put, slice};
use crate::context::{LastBatch, context_ref, tessera_context};
use crate::error::{Error, Result, TESSERA_ERR_CONTEXT_FULL, guard, tessera_status};
use crate::handles::lock;
use crate::tokenize::token_ids;

/// A sequence id from C, checked against the context's `n_seq`.
fn seq_id(seq: i32, n_seq: usize, what: &str) -> Result<u32> {
    if seq < 0 || seq as usize >= n_seq {
        return Err(Error::range(format!(
            "{what} is {seq}, outside the context's sequences [0, {n_seq})"
        )));
    }
    Ok(seq as u32)
}

/// Evaluate `n_tokens` (>= 1) tokens of one or several sequences in one call, like
/// llama.cpp's `llama_decode` with a `llama_batch`: token `i` is `tokens[i]` at position
/// `pos[i]` of sequence `seq_ids[i]`, and its logits are kept when `logits[i]`.
///
/// - `pos` NULL: each token continues its sequence (`tessera_seq_len`, then one more per
///   earlier token of the same sequence in the batch). Given, each sequence's positions
///   must continue it exactly the same way.
/// - `seq_ids` NULL: every token is in sequence 0.
/// - `logits` NULL: the last token of each sequence in the batch keeps its logits.
///
/// Afterwards `tessera_get_logits_ith(ctx, i, ..)` gives the logits of batch token `i` (one
/// that kept them). Each sequence's logits are bit-identical to decoding its tokens alone.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` (an id outside `[0, n_vocab)` or a sequence outside
/// `[0, n_seq)`), `TESSERA_ERR_INVALID_ARGUMENT` (a position that does not continue its
/// sequence), `TESSERA_ERR_CONTEXT_FULL` (a sequence would hold more than `n_ctx` tokens, or
/// the batch needs more KV cells than the pool the sequences share has free: free some with
/// `tessera_seq_clear`); in these cases nothing is evaluated. `TESSERA_ERR_DECODE_FAILED`: the engine failed; the
/// logits are gone and sequences may hold part of the batch (clear them). The arrays are
/// only read during the call.
///
/// # Safety
/// `ctx` a handle or NULL; `tokens` NULL or `n_tokens` readable ids; `pos`, `seq_ids` and
/// `logits` each NULL or `n_tokens` readable elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_decode_batch(
    ctx: *mut tessera_context,
    tokens: *const i32,
    pos: *const i32,
    seq_ids: *const i32,
    logits: *const bool,
    n_tokens: i32,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read; `slice` checks
    // `tokens` (non-NULL, aligned, `n_tokens >= 1`) and the optional arrays (non-NULL was
    // tested first, then aligned) before reading the `n_tokens` elements the caller vouches
    // for.
    guard("tessera_decode_batch", || unsafe {
        let c = context_ref(ctx)?;
        let tokens = slice(tokens, n_tokens, "tokens", 1)?;
        let n = tokens.len();
        let pos = if pos.is_null() {
            None
        } else {
            Some(slice(pos, n_tokens, "pos", 1)?)
        };
        let seq_ids = if seq_ids.is_null() {
            None
        } else {
            Some(slice(seq_ids, n_tokens, "seq_ids", 1)?)
        };
        let logits = if logits.is_null() {
            None
        } else {
            Some(slice(logits, n_tokens, "logits", 1)?)
        };
        let mut st = lock(&c.state, "context")?;
        let st = &mut *st;
        token_ids(&c.model, tokens, &mut st.ids)?;
        let (n_seq, n_ctx) = (st.ctx.n_seq(), st.ctx.n_ctx());
        let mut seqs = Vec::with_capacity(n);
        for i in 0..n {
            let s = seq_ids.map_or(0, |s| s[i]);
            seqs.push(seq_id(s, n_seq, &format!("seq_ids[{i}]"))?);
        }
        // Where each sequence continues, and which token is its last in the batch.
        let mut next: Vec<usize> = (0..n_seq as u32).map(|s| st.ctx.seq_len(s)).collect();
        let mut last_of_seq = vec![usize::MAX; n_seq];
        let mut at_pos = Vec::with_capacity(n);
        for i in 0..n {
            let s = seqs[i] as usize;
            let at = next[s];
            if let Some(p) = pos
                && (p[i] < 0 || p[i] as usize != at)
            {
                return Err(Error::invalid(format!(
                    "pos[{i}] is {}, but sequence {s} continues at {at}",
                    p[i]
                )));
            }
            if at >= n_ctx {
                return Err(Error::new(
                    TESSERA_ERR_CONTEXT_FULL,
                    format!(
                        "token {i} does not fit: sequence {s} already holds {at} of the \
                         context's {n_ctx} tokens"
                    ),
                ));
            }
            next[s] = at + 1;
            last_of_seq[s] = i;
            at_pos.push(at);
        }
        // The batch, and the rank of each kept row among the kept ones.
        let mut batch = Batch::new();
        let mut rows = Vec::with_capacity(n);
        let mut rank = 0;
        for i in 0..n {
            let want = logits.map_or(last_of_seq[seqs[i] as usize] == i, |l| l[i]);
            batch.push(st.ids[i], at_pos[i], seqs[i], want);
            rows.push(want.then(|| {
                rank += 1;
                rank - 1
            }));
        }
        st.last = LastBatch::default();
        st.ctx.decode(&batch).map_err(Error::decode)?;
        st.last = LastBatch {
            n_tokens: n,
            all: false,
            rows: Some(rows),
        };
        Ok(())
    })
}

/// Forget every token of sequence `seq` (its logits from the last batch stay readable).
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` for a sequence outside `[0, n_seq)`.
///
/// # Safety
/// `ctx` a handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_seq_clear(ctx: *mut tessera_context, seq: i32) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read.
    guard("tessera_seq_clear", || unsafe {
        let c = context_ref(ctx)?;
        let mut st = lock(&c.state, "context")?;
        let s = seq_id(seq, st.ctx.n_seq(), "seq")?;
        st.ctx.seq_clear(s).map_err(Error::decode)
    })
}

/// Keep the first `n` (>= 0) tokens of sequence `seq` and forget the rest; nothing happens
/// when it holds `n` or fewer.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` (a sequence outside `[0, n_seq)`),
/// `TESSERA_ERR_INVALID_ARGUMENT` (`n` negative, or a model with sliding-window layers whose
/// rings no longer hold what evaluating at `n` needs: evaluate those tokens again instead).
///
/// # Safety
/// `ctx` a handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_seq_truncate(
    ctx: *mut tessera_context,
    seq: i32,
    n: i32,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read.
    guard("tessera_seq_truncate", || unsafe {
        let c = context_ref(ctx)?;
        let mut st = lock(&c.state, "context")?;
        let s = seq_id(seq, st.ctx.n_seq(), "seq")?;
        if n < 0 {
            return Err(Error::invalid(format!("n is {n}, must be >= 0")));
        }
        st.ctx
            .seq_truncate(s, n as usize)
            .map_err(|e| Error::invalid(e.to_string()))
    })
}

/// Make sequence `dst` hold the first `n` (>= 0) tokens of sequence `src` (at most what
/// `src` holds) and nothing else: a shared prefix (a system prompt, an earlier turn) forked
/// without evaluating it again. `src` is unchanged.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` (a sequence outside `[0, n_seq)`),
/// `TESSERA_ERR_INVALID_ARGUMENT` (`n` negative, or sliding-window rings of `src` that no
/// longer hold what evaluating at `n` needs).
///
/// # Safety
/// `ctx` a handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_seq_copy(
    ctx: *mut tessera_context,
    src: i32,
    dst: i32,
    n: i32,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read.
    guard("tessera_seq_copy", || unsafe {
        let c = context_ref(ctx)?;
        let mut st = lock(&c.state, "context")?;
        let n_seq = st.ctx.n_seq();
        let (s, d) = (seq_id(src, n_seq, "src")?, seq_id(dst, n_seq, "dst")?);
        if n < 0 {
            return Err(Error::invalid(format!("n is {n}, must be >= 0")));
        }
        st.ctx
            .seq_copy(s, d, n as usize)
            .map_err(|e| Error::invalid(e.to_string()))
    })
}

/// Store the number of tokens sequence `seq` holds (the position its next token gets) in
/// `*n`.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` for a sequence outside `[0, n_seq)`.
///
/// # Safety
/// `ctx` a handle or NULL; `n` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_seq_len(
    ctx: *mut tessera_context,
    seq: i32,
    n: *mut i32,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read, and `n` is
    // checked non-NULL and aligned by `out_ptr` before `put` writes it.
    guard("tessera_seq_len", || unsafe {
        let c = context_ref(ctx)?;
        out_ptr(n, "n")?;
        let st = lock(&c.state, "context")?;
        let s = seq_id(seq, st.ctx.n_seq(), "seq")?;
        put(n, st.ctx.seq_len(s) as i32, "n")
    })
}
