//! One constrained generation: the parser state and the mask of tokens allowed next.

use llguidance::Matcher;
use llguidance::toktrie::SimpleVob;

use std::sync::Arc;

use super::ConstraintError;
use super::digits::DigitTable;

/// The set of token ids allowed at one step (a bit per vocabulary entry).
#[derive(Clone, Debug)]
pub struct TokenMask {
    bits: SimpleVob,
}

impl TokenMask {
    /// A mask over `n_vocab` tokens allowing `ids` (ids out of range are ignored).
    pub fn from_ids(n_vocab: usize, ids: &[u32]) -> TokenMask {
        let mut bits = SimpleVob::alloc(n_vocab);
        for &id in ids {
            if (id as usize) < n_vocab {
                bits.allow_token(id);
            }
        }
        TokenMask { bits }
    }

    /// Whether token `id` may be sampled (ids beyond the vocabulary may not).
    #[inline]
    pub fn allows(&self, id: u32) -> bool {
        (id as usize) < self.bits.len() && self.bits.is_allowed(id)
    }

    /// How many tokens are allowed.
    pub fn count(&self) -> usize {
        self.bits.num_set()
    }

    /// The allowed ids, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.bits.to_list()
    }
}

/// The state of one constrained output: ask [`Self::allowed`] before each sample and report the
/// chosen token with [`Self::advance`]. Cloning gives an independent copy of the state (e.g. a
/// fresh constraint per chat turn, cloned from one compiled at the start).
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    n_vocab: usize,
    /// The mask of the current step, computed at most once per step.
    mask: Option<TokenMask>,
    /// Whether an end-of-generation token has been accepted.
    ended: bool,
    /// JSON grammars: the digit table that bounds runs of digits, and the current run.
    digits: Option<Arc<DigitTable>>,
    digit_run: u32,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("n_vocab", &self.n_vocab)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Constraint {
    pub(super) fn new(
        matcher: Matcher,
        n_vocab: usize,
        digits: Option<Arc<DigitTable>>,
    ) -> Constraint {
        Constraint {
            matcher,
            n_vocab,
            mask: None,
            ended: false,
            digits,
            digit_run: 0,
        }
    }

    /// The tokens that may come next: those that keep the output a prefix of the grammar's
    /// language, plus the end-of-generation tokens where the output can end here. When the
    /// grammar is complete and cannot go on, only end-of-generation tokens.
    pub fn allowed(&mut self) -> Result<&TokenMask, ConstraintError> {
        if self.mask.is_none() {
            let mut bits = self
                .matcher
                .compute_mask_or_eos()
                .map_err(|e| ConstraintError::Runtime(e.to_string()))?;
            if let Some(e) = self.matcher.get_error() {
                return Err(ConstraintError::Runtime(e));
            }
            if bits.len() > self.n_vocab {
                bits.resize(self.n_vocab);
            }
            if bits.is_zero() {
                return Err(ConstraintError::Runtime(
                    "no token can continue the output (the grammar cannot be satisfied)".into(),
                ));
            }
            if let Some(d) = &self.digits {
                d.cap(self.digit_run, &mut bits);
            }
            self.mask = Some(TokenMask { bits });
        }
        Ok(self.mask.as_ref().expect("set above"))
    }

    /// Record the sampled `token`. A token outside [`Self::allowed`] is an error (the state
    /// is then unusable); an end-of-generation token ends the output.
    pub fn advance(&mut self, token: u32) -> Result<(), ConstraintError> {
        if self.ended {
            return Err(ConstraintError::Runtime(
                "a token after the end of the constrained output".into(),
            ));
        }
        let allowed = self.allowed()?.allows(token);
        if !allowed {
            return Err(ConstraintError::Runtime(format!(
                "token {token} is not allowed by the grammar here"
            )));
        }
        self.mask = None;
        if let Some(d) = &self.digits {
            self.digit_run = d.next_run(self.digit_run, token);
        }
        if self.matcher.is_stopped() {
            // Stopped grammars only allow end-of-generation: this was one.
            self.ended = true;
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstraintError::Runtime(e.to_string()))?;
        if let Some(e) = self.matcher.get_error() {
            return Err(ConstraintError::Runtime(e));
        }
        if self.matcher.is_stopped() && self.is_end_token(token) {
            self.ended = true;
        }
        Ok(())
    }

    /// Whether the output so far is a complete sentence of the grammar (it may end here).
    pub fn can_end(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }

    /// Whether an end-of-generation token was accepted.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn is_end_token(&self, token: u32) -> bool {
        self.matcher
            .tok_env()
            .map(|env| env.tok_trie().eos_token_set().is_allowed(token))
            .unwrap_or(false)
    }
}
