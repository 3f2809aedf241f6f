//! Context shifting as llama.cpp does it: when a session's context is full, keep the first
//! `n_keep` tokens, drop the oldest half of the tokens after them, and go on generating.
//!
//! llama.cpp rotates the kept keys to their new positions in place; here the tokens that stay
//! after the dropped ones are evaluated again at their new positions: a prefill of about half
//! the context per shift, slower than a rope shift but exactly the state a fresh evaluation of
//! the kept tokens gives (rotated keys still carry the dropped tokens past the first layer).
//! [`crate::Context::seq_discard`] is the rope shift, for callers that prefer speed.
//! Sliding-window layers kept as rings (Gemma 3) have overwritten the oldest positions once
//! the cache has grown past their window, so then the kept prefix is evaluated again as well.

use crate::error::{ModelError, Result};
use crate::kv_cache::KvPolicy;
use crate::session::Session;

/// What one context shift did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextShift {
    /// Tokens kept at the start of the context.
    pub kept: usize,
    /// Tokens dropped after the kept ones (the oldest of the rest).
    pub discarded: usize,
    /// Tokens evaluated again to rebuild the cache.
    pub reevaluated: usize,
}

/// How many tokens a shift of a cache holding `n_past` tokens drops after the first `n_keep`:
/// half of the rest, rounded down (llama.cpp's `n_discard = n_left / 2`).
pub fn discard_count(n_past: usize, n_keep: usize) -> usize {
    n_past.saturating_sub(n_keep) / 2
}

/// How many cached tokens can be kept when the cache holding `n_past` tokens is cut back to
/// `keep` tokens and evaluation resumes there: `keep`, unless a ring layer has already
/// overwritten positions that evaluating at `keep` attends to; then 0 (evaluate from the
/// start).
pub fn rollback_point(n_past: usize, keep: usize, policies: &[KvPolicy]) -> usize {
    let kept = policies.iter().all(|p| p.can_roll_back(n_past, keep));
    if kept { keep } else { 0 }
}

/// Tokens in common at the start of `a` and `b`.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Cached tokens to keep before evaluating `prompt` over a cache holding `cached` (prefix
/// reuse by a chat turn or a server slot): the common prefix, less one when the whole prompt
/// is cached (its last token is evaluated again for the logits), and 0 when a ring of
/// `policies` no longer holds what evaluating there attends to.
pub fn reuse_point(cached: &[u32], prompt: &[u32], policies: &[KvPolicy]) -> usize {
    let mut keep = common_prefix(cached, prompt);
    if keep == prompt.len() {
        keep = keep.saturating_sub(1);
    }
    rollback_point(cached.len(), keep, policies)
}

impl Session {
    /// Make room in a full (or any non-empty) context: keep the first `n_keep` cached tokens,
    /// drop half of the tokens after them (the oldest), and evaluate the remaining ones again
    /// at their new positions (see the module documentation: exact, where a rope shift of the
    /// cache is not). Afterwards [`Self::tokens`] is the kept tokens followed by the survivors and
    /// [`Self::logits`] are those of the last one. The sampler's history is left as it is.
    ///
    /// Fails, changing nothing, when nothing can be dropped (`n_keep` covers all but at most
    /// one cached token).
    pub fn shift_context(&mut self, n_keep: usize) -> Result<ContextShift> {
        let n_past = self.n_past();
        if self.tokens().len() != n_past {
            return Err(ModelError::InvalidInput(format!(
                "context shift: the session knows {} tokens but the cache holds {n_past}",
                self.tokens().len()
            )));
        }
        let n_keep = n_keep.min(n_past);
        let n_discard = discard_count(n_past, n_keep);
        if n_discard == 0 {
            return Err(ModelError::InvalidInput(format!(
                "context shift: nothing to drop ({n_keep} of the {n_past} cached tokens are \
                 kept); keep fewer tokens or use a larger -c"
            )));
        }
        let mut tokens = self.tokens().to_vec();
        tokens.drain(n_keep..n_keep + n_discard);
        let from = rollback_point(n_past, n_keep, self.context().kv_cache().policies());
        self.truncate(from);
        self.eval(&tokens[from..])?;
        Ok(ContextShift {
            kept: n_keep,
            discarded: n_discard,
            reevaluated: tokens.len() - from,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::context::ContextParams;
    use crate::sampler::SamplerParams;
    use crate::session::SessionParams;
    use crate::testing::{TinyLlama, load, set_kv};
    use tessera_engine::gguf::MetaValue;

    /// A session on the tiny llama; with `window`, its even layers attend through a sliding
    /// window of that many tokens (kept as rings when `kv_ring`).
    fn session_with(n_ctx: usize, window: Option<u32>, kv_ring: bool) -> Session {
        let mut w = TinyLlama::default().writer();
        if let Some(win) = window {
            set_kv(
                &mut w,
                "llama.attention.sliding_window",
                MetaValue::U32(win),
            );
            set_kv(
                &mut w,
                "llama.attention.sliding_window_pattern",
                MetaValue::U32(2),
            );
        }
        let model = Arc::new(load(&w).unwrap());
        let params = SessionParams {
            context: ContextParams {
                n_ctx,
                n_batch: 16,
                n_threads: 1,
                kv_ring,
                device: Default::default(),
                n_seq: 1,
                kv_pool: 0,
            },
            sampler: SamplerParams::greedy(),
            ..Default::default()
        };
        Session::new(model, &params).unwrap()
    }

    fn session(n_ctx: usize) -> Session {
        session_with(n_ctx, None, true)
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    fn ids(n: usize, vocab: usize) -> Vec<u32> {
        (0..n).map(|i| ((i * 7 + 3) % vocab) as u32).collect()
    }

    #[test]
    fn discards_half_of_the_rest() {
        assert_eq!(discard_count(1024, 1), 511);
        assert_eq!(discard_count(256, 0), 128);
        assert_eq!(discard_count(10, 9), 0);
        assert_eq!(discard_count(3, 9), 0);
    }

    #[test]
    fn rings_that_lost_the_prefix_roll_back_to_the_start() {
        let full = [KvPolicy::Full(1024)];
        assert_eq!(rollback_point(1024, 10, &full), 10);
        let tight = KvPolicy::Ring {
            window: 512,
            cells: 512,
        };
        let ring = [KvPolicy::Full(1024), tight];
        // Not wrapped yet: the prefix is still there.
        assert_eq!(rollback_point(512, 10, &ring), 10);
        // Wrapped: positions before n_past - 512 are gone.
        assert_eq!(rollback_point(1024, 10, &ring), 0);
        assert_eq!(rollback_point(1024, 1023, &ring), 1023);
        assert_eq!(rollback_point(1024, 0, &ring), 0);
        // 512 cells more: a 1500-token sequence (holding 476..1500) rolls back to 1000
        // (which attends to 489..1000), not to 980 (469..980).
        let roomy = [KvPolicy::Ring {
            window: 512,
            cells: 1024,
        }];
        assert_eq!(rollback_point(1024, 10, &roomy), 10);
        assert_eq!(rollback_point(1500, 1000, &roomy), 1000);
        assert_eq!(rollback_point(1500, 980, &roomy), 0);
    }

    #[test]
    fn reuse_keeps_the_common_prefix_the_rings_still_hold() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        // A full cache: the common prefix, but the last prompt token.
        assert_eq!(reuse_point(&[1, 2, 3], &[1, 2, 3, 4, 5], &[]), 3);
        assert_eq!(reuse_point(&[1, 2, 3, 9], &[1, 2, 4, 5], &[]), 2);
        assert_eq!(reuse_point(&[1, 2, 3], &[1, 2, 3], &[]), 2);
        assert_eq!(reuse_point(&[1, 2, 3, 4], &[1, 2, 3], &[]), 2);
        assert_eq!(reuse_point(&[], &[1], &[]), 0);
        assert_eq!(reuse_point(&[5], &[1, 2], &[]), 0);
        // 10 cached tokens in a ring of 4 for a window of 4: only the last can be dropped.
        let ring = |cells| [KvPolicy::Ring { window: 4, cells }];
        let cached: Vec<u32> = (0..10).collect();
        let mut prompt = [&cached[..], &[50, 51]].concat();
        assert_eq!(reuse_point(&cached, &prompt, &ring(4)), 10);
        prompt[9] = 99;
        assert_eq!(reuse_point(&cached, &prompt, &ring(4)), 9);
        prompt[8] = 99;
        assert_eq!(reuse_point(&cached, &prompt, &ring(4)), 0);
        // Two cells more: two tokens back; a ring that has not wrapped: any.
        assert_eq!(reuse_point(&cached, &prompt, &ring(6)), 8);
        assert_eq!(reuse_point(&cached, &prompt, &ring(16)), 8);
        assert_eq!(reuse_point(&cached, &cached[..5], &ring(6)), 0);
    }

    #[test]
    fn shift_keeps_the_prefix_and_matches_a_fresh_evaluation() {
        let mut s = session(32);
        let n_vocab = s.model().hparams().n_vocab;
        let all = ids(32, n_vocab);
        s.eval(&all).unwrap();
        let shift = s.shift_context(4).unwrap();
        assert_eq!(
            shift,
            ContextShift {
                kept: 4,
                discarded: 14,
                reevaluated: 14
            }
        );
        let expected: Vec<u32> = all[..4].iter().chain(&all[18..]).copied().collect();
        assert_eq!(s.tokens(), &expected[..]);
        assert_eq!(s.n_past(), 18);

        let mut fresh = session(32);
        fresh.eval(&expected).unwrap();
        assert_close(s.logits(), fresh.logits());
        // Generation goes on after a shift.
        let next = s.sample();
        s.eval(&[next]).unwrap();
        assert_eq!(s.n_past(), 19);
    }

    #[test]
    fn ring_layers_that_wrapped_are_rebuilt_from_the_start() {
        let mut s = session_with(32, Some(8), true);
        let policies = s.context().kv_cache().policies().to_vec();
        // Rings of the window plus the batch (16): room to roll back 16 tokens.
        assert_eq!(
            policies,
            [
                KvPolicy::Ring {
                    window: 8,
                    cells: 24
                },
                KvPolicy::Full(32)
            ]
        );
        let n_vocab = s.model().hparams().n_vocab;
        let all = ids(32, n_vocab);
        s.eval(&all).unwrap();
        let shift = s.shift_context(4).unwrap();
        assert_eq!(
            (shift.kept, shift.discarded, shift.reevaluated),
            (4, 14, 18)
        );
        let expected: Vec<u32> = all[..4].iter().chain(&all[18..]).copied().collect();
        assert_eq!(s.tokens(), &expected[..]);
        // The same as full caches with a sliding mask evaluating the kept tokens afresh.
        let mut fresh = session_with(32, Some(8), false);
        fresh.eval(&expected).unwrap();
        assert_close(s.logits(), fresh.logits());
        // And decoding goes on alike.
        let next = s.sample();
        s.eval(&[next]).unwrap();
        fresh.eval(&[next]).unwrap();
        assert_close(s.logits(), fresh.logits());
    }

    #[test]
    fn nothing_to_drop_is_an_error_and_changes_nothing() {
        let mut s = session(8);
        let n_vocab = s.model().hparams().n_vocab;
        let all = ids(8, n_vocab);
        s.eval(&all).unwrap();
        let err = s.shift_context(7).unwrap_err().to_string();
        assert!(err.contains("nothing to drop"), "{err}");
        assert_eq!(s.tokens(), &all[..]);
        // Keeping more than is cached keeps everything: nothing to drop either.
        assert!(s.shift_context(100).is_err());
        assert_eq!(s.shift_context(0).unwrap().discarded, 4);
    }
}
