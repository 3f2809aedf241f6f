//! Context handling: how much of the KV cache a new prompt can reuse, and what to do when the
//! conversation no longer fits.
//!
//! Every turn renders the whole conversation with the chat template and tokenizes it. The
//! tokens it shares with the start of the KV cache are kept (the cache is truncated to the
//! common prefix) and only the rest is evaluated, so a turn normally costs just its own tokens.
//!
//! Sliding-window layers kept as rings (Gemma 3) overwrite old positions, so after the cache
//! has grown past the window it cannot be rolled back by more than one token: then the whole
//! prompt is evaluated again, which is always correct.

use clap::ValueEnum;
use tessera_models::Session;
use tessera_models::kv_cache::KvPolicy;

/// What `tessera chat` does when the conversation outgrows the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ContextFull {
    /// Refuse the turn (or cut the reply) and say so; `/reset` starts over.
    Stop,
    /// Drop the oldest turns (the system prompt stays) and evaluate the rest again.
    DropOldest,
}

/// Tokens in common at the start of `a` and `b`.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The smallest ring among the session's KV layers, if it has ring layers.
pub fn smallest_ring(session: &Session) -> Option<usize> {
    session
        .context()
        .kv_cache()
        .policies()
        .iter()
        .filter_map(|p| match p {
            KvPolicy::Ring(w) => Some(*w),
            KvPolicy::Full(_) => None,
        })
        .min()
}

/// How many cached tokens to keep before evaluating `prompt`: the common prefix, less one when
/// the whole prompt is cached (the last token must be evaluated to get logits), and 0 when a
/// ring layer of `ring` cells could not be rolled back that far.
pub fn reuse_point(cached: &[u32], prompt: &[u32], ring: Option<usize>) -> usize {
    let mut keep = common_prefix(cached, prompt);
    if keep == prompt.len() {
        keep = keep.saturating_sub(1);
    }
    if let Some(w) = ring {
        // The ring holds positions [n - w, n); evaluating at `keep` needs [keep - w + 1, keep).
        let n = cached.len();
        if n > w && keep + 1 < n {
            keep = 0;
        }
    }
    keep
}

/// Room to leave for the reply when deciding whether old turns must go: a quarter of the
/// context, at most `n_predict` (when replies are capped) and at most 512 tokens.
pub fn reply_reserve(n_ctx: usize, n_predict: Option<usize>) -> usize {
    let mut r = (n_ctx / 4).min(512);
    if let Some(n) = n_predict {
        r = r.min(n);
    }
    r.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }

    #[test]
    fn reuse_full_cache() {
        // New turn appended: everything cached is kept.
        assert_eq!(reuse_point(&[1, 2, 3], &[1, 2, 3, 4, 5], None), 3);
        // Diverges after two tokens.
        assert_eq!(reuse_point(&[1, 2, 3, 9], &[1, 2, 4, 5], None), 2);
        // Identical prompt: the last token is evaluated again.
        assert_eq!(reuse_point(&[1, 2, 3], &[1, 2, 3], None), 2);
        assert_eq!(reuse_point(&[], &[1], None), 0);
    }

    #[test]
    fn reuse_with_ring() {
        let cached: Vec<u32> = (0..10).collect();
        let mut prompt = cached.clone();
        prompt.extend([50, 51]);
        // Appending is fine whatever the ring.
        assert_eq!(reuse_point(&cached, &prompt, Some(4)), 10);
        // Rolling back one token is fine.
        prompt[9] = 99;
        assert_eq!(reuse_point(&cached, &prompt, Some(4)), 9);
        // Rolling back two is not once the ring has wrapped…
        prompt[8] = 99;
        assert_eq!(reuse_point(&cached, &prompt, Some(4)), 0);
        // …and is when it has not.
        assert_eq!(reuse_point(&cached, &prompt, Some(16)), 8);
    }

    #[test]
    fn reserve() {
        assert_eq!(reply_reserve(4096, None), 512);
        assert_eq!(reply_reserve(400, None), 100);
        assert_eq!(reply_reserve(4096, Some(64)), 64);
        assert_eq!(reply_reserve(2, None), 1);
    }
}
