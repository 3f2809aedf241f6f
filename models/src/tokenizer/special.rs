//! Special-token partitioning: before the model's algorithm runs, the text is cut around
//! occurrences of control, unknown and user-defined tokens, each of which becomes its id.
//!
//! The rule is llama.cpp's: take the candidate tokens longest first (ties: lower id first); for
//! each, cut every text fragment at its leftmost non-overlapping occurrences. Control and unknown
//! tokens are candidates only when `parse_special` is set; user-defined tokens always are.
//!
//! Running that rule over thousands of candidates (Gemma has 6400) for every call would be slow,
//! so an Aho–Corasick automaton over all candidate texts first finds, in one linear pass, which
//! candidates occur in the text at all; only those are applied in priority order, which gives the
//! same fragments.
//!
//! A token with the `RSTRIP` (`LSTRIP`) attribute also drops the whitespace after (before) each
//! occurrence, as llama.cpp does for the families it marks (see `strip_attributes`).

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

/// No node / no token.
const NONE: u32 = u32::MAX;

/// The candidate special tokens of a vocabulary, as an Aho–Corasick automaton over their bytes.
///
/// Node 0 is the root. Transitions are stored per node, sorted by byte, in one flat array (the
/// root's also in a dense table); `fail` is the longest proper suffix that is also a trie node,
/// `out` the candidate ending exactly at a node and `dict` the nearest node on the fail chain
/// that has one.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpecialTokens {
    n_candidates: usize,
    root_next: Vec<u32>,
    trans_start: Vec<u32>,
    trans: Vec<(u8, u32)>,
    fail: Vec<u32>,
    out: Vec<u32>,
    dict: Vec<u32>,
}

impl SpecialTokens {
    /// Collects the tokens with CONTROL, USER_DEFINED or UNKNOWN attributes.
    pub fn new(vocab: &Vocab) -> SpecialTokens {
        let special = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut out = vec![NONE];
        let mut n_candidates = 0;
        for id in 0..vocab.len() as u32 {
            if vocab.attr(id) & special == 0 {
                continue;
            }
            n_candidates += 1;
            let mut node = 0usize;
            for &b in vocab.text(id).as_bytes() {
                node = match children[node].iter().find(|&&(c, _)| c == b) {
                    Some(&(_, next)) => next as usize,
                    None => {
                        let next = children.len();
                        children[node].push((b, next as u32));
                        children.push(Vec::new());
                        out.push(NONE);
                        next
                    }
                };
            }
            // Equal texts: the lower id has priority and claims every occurrence.
            out[node] = out[node].min(id);
        }
        let n = children.len();
        let mut trans_start = Vec::with_capacity(n + 1);
        let mut trans = Vec::new();
        for c in &mut children {
            c.sort_unstable();
            trans_start.push(trans.len() as u32);
            trans.extend_from_slice(c);
        }
        trans_start.push(trans.len() as u32);
        let mut root_next = vec![NONE; 256];
        for &(b, next) in &children[0] {
            root_next[b as usize] = next;
        }
        let mut st = SpecialTokens {
            n_candidates,
            root_next,
            trans_start,
            trans,
            fail: vec![0; n],
            out,
            dict: vec![NONE; n],
        };
        // Breadth-first, so that every node's fail target is final before its children need it.
        let mut queue = std::collections::VecDeque::from([0u32]);
        while let Some(u) = queue.pop_front() {
            for &(b, v) in &children[u as usize] {
                let f = if u == 0 {
                    0
                } else {
                    let mut f = st.fail[u as usize];
                    loop {
                        if let Some(w) = st.next(f, b) {
                            break w;
                        }
                        if f == 0 {
                            break 0;
                        }
                        f = st.fail[f as usize];
                    }
                };
                st.fail[v as usize] = f;
                st.dict[v as usize] = if st.out[f as usize] != NONE {
                    f
                } else {
                    st.dict[f as usize]
                };
                queue.push_back(v);
            }
        }
        st
    }

    /// The goto transition of `node` on byte `b`.
    #[inline]
    fn next(&self, node: u32, b: u8) -> Option<u32> {
        if node == 0 {
            let n = self.root_next[b as usize];
            return (n != NONE).then_some(n);
        }
        let (s, e) = (
            self.trans_start[node as usize] as usize,
            self.trans_start[node as usize + 1] as usize,
        );
        let t = &self.trans[s..e];
        t.binary_search_by_key(&b, |&(c, _)| c).ok().map(|i| t[i].1)
    }

    /// Number of candidate tokens.
    pub fn len(&self) -> usize {
        self.n_candidates
    }

    /// Whether candidate `id` may be matched under `parse_special`.
    fn allowed(vocab: &Vocab, id: u32, parse_special: bool) -> bool {
        parse_special || vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) == 0
    }

    /// The candidates occurring somewhere in `text`, in priority order (longest first, then
    /// lowest id).
    fn present(&self, vocab: &Vocab, text: &[u8], parse_special: bool) -> Vec<u32> {
        let mut found: Vec<u32> = Vec::new();
        if self.n_candidates == 0 {
            return found;
        }
        let mut seen = vec![false; self.out.len()];
        let mut state = 0u32;
        for &b in text {
            state = loop {
                if let Some(n) = self.next(state, b) {
                    break n;
                }
                if state == 0 {
                    break 0;
                }
                state = self.fail[state as usize];
            };
            let mut n = if self.out[state as usize] != NONE {
                state
            } else {
                self.dict[state as usize]
            };
            // A node already reported had its whole dictionary chain reported with it.
            while n != NONE && !seen[n as usize] {
                seen[n as usize] = true;
                found.push(self.out[n as usize]);
                n = self.dict[n as usize];
            }
        }
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
                let (lstrip, rstrip) = (
                    vocab.attr(id) & attr::LSTRIP != 0,
                    vocab.attr(id) & attr::RSTRIP != 0,
                );
                let bytes = text.as_bytes();
                let mut pos = r.start;
                while let Some(off) = text[pos..r.end].find(needle) {
                    let m = pos + off;
                    let mut left_end = m;
                    if lstrip {
                        while left_end > pos && is_c_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > pos {
                        next.push(Fragment::Text(pos..left_end));
                    }
                    next.push(Fragment::Token(id));
                    pos = m + needle.len();
                    if rstrip {
                        while pos < r.end && is_c_space(bytes[pos]) {
                            pos += 1;
                        }
                    }
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

/// C's `isspace` in the "C" locale (what llama.cpp strips around tokens).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
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
    fn strip_attributes_drop_whitespace_beside_the_token() {
        let mut v = vocab();
        v.add_attr(4, attr::RSTRIP);
        v.add_attr(0, attr::LSTRIP);
        let s = SpecialTokens::new(&v);
        // "<|x|>" drops the spaces and newline after it; "<s>" the tab and space before it.
        let text = "q <|x|> \n r\t <s> z<|x|> ";
        let f = s.partition(&v, text, true);
        assert_eq!(
            f,
            [
                Fragment::Text(0..2),
                Fragment::Token(4),
                Fragment::Text(10..11),
                Fragment::Token(0),
                Fragment::Text(16..18),
                Fragment::Token(4),
            ]
        );
        assert_eq!(&text[10..11], "r");
        assert_eq!(&text[16..18], " z");
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
    fn presence_scan_agrees_with_naive_search() {
        let texts = [
            "ab", "abc", "b", "bab", "cab", "abab", "<x>", "x>", "aaa", "ca",
        ];
        let types = vec![4; texts.len()];
        let v = Vocab::new(&texts, None, Some(&types));
        let s = SpecialTokens::new(&v);
        // A small deterministic generator over an alphabet that makes many overlaps.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let len = (seed % 24) as usize;
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"abc<x>"[(seed % 6) as usize] as char
                })
                .collect();
            let mut want: Vec<u32> = (0..texts.len() as u32)
                .filter(|&id| text.contains(v.text(id)))
                .collect();
            want.sort_by(|&a, &b| v.text(b).len().cmp(&v.text(a).len()).then(a.cmp(&b)));
            assert_eq!(s.present(&v, text.as_bytes(), true), want, "{text:?}");
        }
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
