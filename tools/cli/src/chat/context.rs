//! Context handling: how much of the KV cache a new prompt can reuse, and what to do when the
//! conversation no longer fits.
//!
//! Every turn renders the whole conversation with the chat template and tokenizes it. The
//! tokens it shares with the start of the KV cache are kept (the cache is truncated to the
//! common prefix) and only the rest is evaluated, so a turn normally costs just its own tokens.
//!
//! Sliding-window layers kept as rings (Gemma 3) overwrite old positions: a ring keeps its
//! window plus `n_batch` cells, so once the cache has grown past that it can be rolled back by
//! at most `n_batch` tokens (`context_shift::reuse_point`); further back, the whole prompt is
//! evaluated again, which is always correct.

use clap::ValueEnum;

/// What `tessera chat` does when the conversation outgrows the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ContextFull {
    /// Refuse the turn (or cut the reply) and say so; `/reset` starts over.
    Stop,
    /// Drop the oldest turns (the system prompt stays) and evaluate the rest again.
    DropOldest,
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
    fn reserve() {
        assert_eq!(reply_reserve(4096, None), 512);
        assert_eq!(reply_reserve(400, None), 100);
        assert_eq!(reply_reserve(4096, Some(64)), 64);
        assert_eq!(reply_reserve(2, None), 1);
    }
}
