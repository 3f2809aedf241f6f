//! Special-token partitioning: before the model's algorithm runs, the text is cut around
//! occurrences of control, unknown and user-defined tokens, each of which becomes its id.
//!
//! The rule is llama.cpp's: take the candidate tokens longest first (ties: lower id first); for
//! each, cut every text fragment at its leftmost non-overlapping occurrences. Control and unknown
//! tokens are candidates only when `parse_special` is set; user-defined tokens always are.
//!
//! Running that rule over thousands of candidates (Gemma has 6400) for every call would be slow,
//! so a cheap scan first finds which candidates occur in the text at all (a walk over the
//! lexicographically sorted candidate texts from every position whose byte can start one), and
//! only those are applied in priority order, which gives the same fragments.

use super::vocab::{Vocab, attr};
use std::ops::Range;

/// A piece of the input: raw text still to tokenize, or a special token already recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// A byte range of the input text.
    Text(Range<usize>),
    /// A special token id.
    Token(u32),
}

/// The candidate special tokens of a vocabulary.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpecialTokens {
    /// Candidate ids sorted by their texts, for the presence scan.
    lex: Vec<u32>,
    /// Bytes that start at least one candidate.
    first_byte: Vec<bool>,
}

impl SpecialTokens {
    /// Collects the tokens with CONTROL, USER_DEFINED or UNKNOWN attributes.
    pub fn new(vocab: &Vocab) -> SpecialTokens {
        let mut lex: Vec<u32> = (0..vocab.len() as u32)
            .filter(|&id| {
                vocab.attr(id) & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        lex.sort_by(|&a, &b| vocab.text(a).cmp(vocab.text(b)).then(a.cmp(&b)));
        let mut first_byte = vec![false; 256];
        for &id in &lex {
            first_byte[vocab.text(id).as_bytes()[0] as usize] = true;
        }
        SpecialTokens { lex, first_byte }
    }

    /// Number of candidate tokens.
    pub fn len(&self) -> usize {
        self.lex.len()
    }

    /// Whether candidate `id` may be matched under `parse_special`.
    fn allowed(vocab: &Vocab, id: u32, parse_special: bool) -> bool {
        parse_special || vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) == 0
    }

    /// The candidates occurring somewhere in `text`, in priority order.
    fn present(&self, vocab: &Vocab, text: &[u8], parse_special: bool) -> Vec<u32> {
        let mut found: Vec<u32> = Vec::new();
        for start in 0..text.len() {
            if !self.first_byte[text[start] as usize] {
                continue;
            }
            let (mut lo, mut hi) = (0, self.lex.len());
            for (depth, &b) in text[start..].iter().enumerate() {
                let key = |id: &u32| vocab.text(*id).as_bytes().get(depth).copied();
                // Within lo..hi every text shares the first `depth` bytes; shorter ones sort first.
                let range = &self.lex[lo..hi];
                let new_lo = lo + range.partition_point(|id| key(id).is_none_or(|c| c < b));
                let new_hi = lo + range.partition_point(|id| key(id).is_none_or(|c| c <= b));
                (lo, hi) = (new_lo, new_hi);
                if lo >= hi {
                    break;
                }
                // Equal texts with different ids can only come from a vocabulary with
                // duplicates; all of them are candidates.
                let mut i = lo;
                while i < hi && vocab.text(self.lex[i]).len() == depth + 1 {
                    found.push(self.lex[i]);
                    i += 1;
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found.retain(|&id| Self::allowed(vocab, id, parse_special));
        found.sort_by(|&a, &b| {
            let (la, lb) = (vocab.text(a).len(), vocab.text(b).len());
            lb.cmp(&la).then(a.cmp(&b))
        });
        found
    }

    /// Cuts `text` into raw-text fragments and special tokens.
    pub fn partition(&self, vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(0..text.len())];
        for id in self.present(vocab, text.as_bytes(), parse_special) {
            let needle = vocab.text(id);
            let mut next = Vec::with_capacity(frags.len() + 4);
            for frag in frags {
                let Fragment::Text(r) = frag else {
                    next.push(frag);
                    continue;
                };
                let mut pos = r.start;
                while let Some(off) = text[pos..r.end].find(needle) {
                    let m = pos + off;
                    if m > pos {
                        next.push(Fragment::Text(pos..m));
                    }
                    next.push(Fragment::Token(id));
                    pos = m + needle.len();
                }
                if pos < r.end {
                    next.push(Fragment::Text(pos..r.end));
                }
            }
            frags = next;
        }
        frags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        // 0 <s> control, 1 bcd user-defined, 2 ab user-defined, 3 a normal, 4 <|x|> control
        Vocab::new(
            &["<s>", "bcd", "ab", "a", "<|x|>"],
            None,
            Some(&[3, 4, 4, 1, 3]),
        )
    }

    #[test]
    fn longer_tokens_take_priority() {
        let v = vocab();
        let s = SpecialTokens::new(&v);
        assert_eq!(s.len(), 4);
        // "bcd" (longer) is cut first, so "ab" cannot match across it.
        let f = s.partition(&v, "abcd ab", false);
        assert_eq!(
            f,
            [
                Fragment::Text(0..1),
                Fragment::Token(1),
                Fragment::Text(4..5),
                Fragment::Token(2)
            ]
        );
    }

    #[test]
    fn control_tokens_only_with_parse_special() {
        let v = vocab();
        let s = SpecialTokens::new(&v);
        let t = "<s>hi<|x|>";
        assert_eq!(s.partition(&v, t, false), [Fragment::Text(0..t.len())]);
        assert_eq!(
            s.partition(&v, t, true),
            [Fragment::Token(0), Fragment::Text(3..5), Fragment::Token(4)]
        );
        assert!(s.partition(&v, "", true).is_empty());
    }
}
