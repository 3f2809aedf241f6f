//! A batch of tokens of several sequences for [`crate::Context::decode`], like llama.cpp's
//! `llama_batch`: each token with its position, its sequence and whether its logits are
//! wanted. The context groups the tokens by sequence and splits them into steps.

/// Tokens of one or several sequences to evaluate together.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    tokens: Vec<u32>,
    positions: Vec<i32>,
    seqs: Vec<u32>,
    logits: Vec<bool>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Add `token` at position `pos` of sequence `seq`; `logits`: return its logits (its
    /// index among the batch's wanted tokens names them in [`crate::Context::batch_logits`]).
    pub fn push(&mut self, token: u32, pos: usize, seq: u32, logits: bool) {
        self.tokens.push(token);
        self.positions.push(pos.min(i32::MAX as usize) as i32);
        self.seqs.push(seq);
        self.logits.push(logits);
    }

    /// Add `tokens` to sequence `seq` from position `pos0` on, wanting the last one's logits
    /// when `last_logits` (a prompt).
    pub fn push_seq(&mut self, tokens: &[u32], pos0: usize, seq: u32, last_logits: bool) {
        for (i, &t) in tokens.iter().enumerate() {
            self.push(t, pos0 + i, seq, last_logits && i + 1 == tokens.len());
        }
    }

    /// Forget every token (the memory is kept).
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.positions.clear();
        self.seqs.clear();
        self.logits.clear();
    }

    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the batch has no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokens whose logits are wanted.
    pub fn n_logits(&self) -> usize {
        self.logits.iter().filter(|&&l| l).count()
    }

    /// Token ids.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Positions.
    pub fn positions(&self) -> &[i32] {
        &self.positions
    }

    /// Sequence of each token.
    pub fn seqs(&self) -> &[u32] {
        &self.seqs
    }

    /// Whether each token's logits are wanted.
    pub fn logits_wanted(&self) -> &[bool] {
        &self.logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_seq_wants_the_last_row() {
        let mut b = Batch::new();
        b.push_seq(&[5, 6, 7], 2, 1, true);
        b.push(9, 0, 0, false);
        assert_eq!(b.len(), 4);
        assert_eq!(b.positions(), &[2, 3, 4, 0]);
        assert_eq!(b.seqs(), &[1, 1, 1, 0]);
        assert_eq!(b.logits_wanted(), &[false, false, true, false]);
        assert_eq!(b.n_logits(), 1);
        b.clear();
        assert!(b.is_empty());
    }
}
