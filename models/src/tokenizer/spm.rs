//! SentencePiece-style tokenization (`tokenizer.ggml.model = llama`), as llama.cpp does it:
//! spaces become '▁', the text starts as one symbol per UTF-8 character, and the adjacent pair
//! whose concatenation is the highest-scoring token is merged repeatedly (ties: leftmost first).
//! A final symbol that is not a token is emitted as `<0xNN>` byte tokens.
//!
//! Symbols are a linked list over the text and candidate pairs sit in a binary heap, so a text of
//! n characters costs O(n log n); stale heap entries are detected by their length.

use super::vocab::Vocab;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The SentencePiece word-boundary marker that stands for a space.
pub(crate) const SPACE_MARK: &str = "\u{2581}";

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

const NIL: u32 = u32::MAX;

/// A candidate merge of two adjacent symbols.
#[derive(Clone, Copy, Debug)]
struct Pair {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// Higher score first; on equal scores the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Reusable buffers for encoding.
#[derive(Default)]
pub(crate) struct SpmScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Pair>,
}

/// Replaces every ASCII space with '▁' (and prepends one when `prefix` is set).
pub(crate) fn escape_whitespace(text: &str, prefix: bool) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2 + 3);
    if prefix {
        out.push_str(SPACE_MARK);
    }
    for (i, part) in text.split(' ').enumerate() {
        if i > 0 {
            out.push_str(SPACE_MARK);
        }
        out.push_str(part);
    }
    out
}

/// Appends the tokens of `text` (already escaped). `byte_tokens[b]` is the token for byte `b`.
pub(crate) fn encode(
    vocab: &Vocab,
    byte_tokens: &[Option<u32>; 256],
    text: &str,
    s: &mut SpmScratch,
    out: &mut Vec<u32>,
) {
    let bytes = text.as_bytes();
    s.symbols.clear();
    s.heap.clear();
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let idx = s.symbols.len() as u32;
        s.symbols.push(Symbol {
            start: i as u32,
            len: c.len_utf8() as u32,
            prev: if idx == 0 { NIL } else { idx - 1 },
            next: if it.peek().is_some() { idx + 1 } else { NIL },
        });
    }
    let try_pair = |syms: &[Symbol], heap: &mut BinaryHeap<Pair>, left: u32, right: u32| {
        let (l, r) = (&syms[left as usize], &syms[right as usize]);
        let size = l.len + r.len;
        let start = l.start as usize;
        if let Some(id) = vocab.lookup(&bytes[start..start + size as usize]) {
            heap.push(Pair {
                score: vocab.score(id),
                left,
                right,
                size,
            });
        }
    };
    for i in 1..s.symbols.len() as u32 {
        try_pair(&s.symbols, &mut s.heap, i - 1, i);
    }
    while let Some(p) = s.heap.pop() {
        let (l, r) = (s.symbols[p.left as usize], s.symbols[p.right as usize]);
        if l.len == 0 || r.len == 0 || l.len + r.len != p.size {
            continue;
        }
        s.symbols[p.left as usize].len = p.size;
        s.symbols[p.left as usize].next = r.next;
        s.symbols[p.right as usize].len = 0;
        if r.next != NIL {
            s.symbols[r.next as usize].prev = p.left;
        }
        if l.prev != NIL {
            try_pair(&s.symbols, &mut s.heap, l.prev, p.left);
        }
        if r.next != NIL {
            try_pair(&s.symbols, &mut s.heap, p.left, r.next);
        }
    }
    let mut i = if s.symbols.is_empty() { NIL } else { 0 };
    while i != NIL {
        let sym = s.symbols[i as usize];
        let piece = &bytes[sym.start as usize..(sym.start + sym.len) as usize];
        match vocab.lookup(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.iter().filter_map(|&b| byte_tokens[b as usize])),
        }
        i = sym.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Vocab, [Option<u32>; 256]) {
        let tokens = [
            "<unk>", "<0x41>", "<0xC3>", "<0xA9>", "▁", "a", "b", "c", "ab", "bc", "▁a", "▁ab",
        ];
        let scores = vec![
            0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -2.0, -2.0, -3.0, -1.5, -0.5, -0.1,
        ];
        let types = [2, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1];
        let v = Vocab::new(&tokens, Some(scores), Some(&types));
        let mut bt = [None; 256];
        bt[0x41] = Some(1);
        bt[0xC3] = Some(2);
        bt[0xA9] = Some(3);
        (v, bt)
    }

    fn enc(v: &Vocab, bt: &[Option<u32>; 256], text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        encode(
            v,
            bt,
            &escape_whitespace(text, false),
            &mut SpmScratch::default(),
            &mut out,
        );
        out
    }

    #[test]
    fn merges_by_score() {
        let (v, bt) = tiny();
        // "bc" (-1.5) beats "ab" (-3.0).
        assert_eq!(enc(&v, &bt, "abc"), [5, 9]);
        // "▁a" (-0.5) first, then "▁ab" (-0.1).
        assert_eq!(enc(&v, &bt, " ab"), [11]);
        assert_eq!(escape_whitespace("a b", true), "▁a▁b");
    }

    #[test]
    fn equal_scores_merge_leftmost_first() {
        let tokens = ["a", "aa"];
        let v = Vocab::new(&tokens, Some(vec![0.0, 1.0]), None);
        let bt = [None; 256];
        // "aaa": both pairs score 1; the left one merges, leaving "aa" "a".
        assert_eq!(enc(&v, &bt, "aaa"), [1, 0]);
    }

    #[test]
    fn byte_fallback() {
        let (v, bt) = tiny();
        // 'A' is not a token: its byte token; 'é' (C3 A9) likewise, byte by byte.
        assert_eq!(enc(&v, &bt, "Aé"), [1, 2, 3]);
        assert!(enc(&v, &bt, "").is_empty());
    }
}
