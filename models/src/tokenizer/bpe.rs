//! Byte-level BPE (`tokenizer.ggml.model = gpt2`): each pre-tokenized word is turned into one
//! symbol per byte (in GPT-2's byte → character mapping), then the adjacent pair with the lowest
//! merge rank is merged repeatedly (ties: leftmost first) until no ranked pair remains.
//!
//! Symbols are identified by integer ids instead of strings: vocabulary texts use their token id,
//! and strings that appear in merges without being tokens get ids past the vocabulary. A merge
//! is then one hash lookup on an id pair, and the merge loop allocates nothing per step.

use super::pretokenize::PreTokenizer;
use super::unicode::byte_to_char_table;
use super::vocab::{Vocab, hash_bytes};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for the integer keys of the merge table.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = (self.0.rotate_left(5) ^ hash_bytes(bytes)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(v)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A symbol id that is neither a token nor part of any merge.
const NO_SYMBOL: u32 = u32::MAX;

/// The merge table and byte mapping of a byte-level BPE vocabulary.
#[derive(Clone, Debug)]
pub(crate) struct Bpe {
    /// (left, right) symbol → (rank, merged symbol).
    merges: IdMap<(u32, u32), (u32, u32)>,
    /// The symbol of each byte's mapped character.
    byte_symbol: [u32; 256],
    /// The mapped character of each byte.
    byte_char: [char; 256],
    /// Token id of each single-byte string (used when a symbol is not a token).
    single_byte_token: [Option<u32>; 256],
    n_vocab: u32,
    /// How words are split.
    pub pre: PreTokenizer,
    /// Emit a word that is a whole token without merging (llama3).
    pub ignore_merges: bool,
    /// Strings of the merges that are not tokens, with their symbol ids (past the vocabulary).
    extra: HashMap<String, u32>,
    /// `Some` for a vocabulary on raw UTF-8 (Gemma 4) instead of GPT-2's byte mapping: symbols
    /// start as whole characters, a word made only of newlines that is a token is taken whole,
    /// and bytes left without a token become these `<0xNN>` tokens.
    raw_utf8: Option<Box<[Option<u32>; 256]>>,
}

/// Reusable buffers for encoding.
#[derive(Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<(u32, u32, u32, u32)>>,
    mapped: String,
}

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u32,
    len: u32,
    id: u32,
    prev: u32,
    next: u32,
}

const NIL: u32 = u32::MAX;

impl Bpe {
    /// Builds the merge table from `tokenizer.ggml.merges` entries ("left right", split at the
    /// first space after the first byte). When a pair is listed twice, the first rank counts.
    pub fn new<S: AsRef<str>>(
        vocab: &Vocab,
        merges: &[S],
        pre: PreTokenizer,
        ignore_merges: bool,
    ) -> Bpe {
        let n_vocab = vocab.len() as u32;
        let mut extra: HashMap<String, u32> = HashMap::new();
        let mut intern = |s: &str| -> u32 {
            if let Some(id) = vocab.lookup(s.as_bytes()) {
                return id;
            }
            let next = n_vocab + extra.len() as u32;
            *extra.entry(s.to_owned()).or_insert(next)
        };
        let mut table: IdMap<(u32, u32), (u32, u32)> = IdMap::default();
        table.reserve(merges.len());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            let m = m.as_ref();
            // Byte search from offset 1, so that a merge whose left side is a space still splits.
            let bytes = m.as_bytes();
            let Some(pos) = bytes.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (left, right) = (&m[..pos], &m[pos + 1..]);
            if right.is_empty() {
                continue;
            }
            let l = intern(left);
            let r = intern(right);
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = intern(&joined);
            table.entry((l, r)).or_insert((rank as u32, merged));
        }
        let byte_char = byte_to_char_table();
        let mut byte_symbol = [NO_SYMBOL; 256];
        let mut single_byte_token = [None; 256];
        let mut buf = [0u8; 4];
        for b in 0..256 {
            let s = byte_char[b].encode_utf8(&mut buf);
            byte_symbol[b] = vocab
                .lookup(s.as_bytes())
                .or_else(|| extra.get(&*s).copied())
                .unwrap_or(NO_SYMBOL);
            if b < 0x80 {
                single_byte_token[b] = vocab.lookup(&[b as u8]);
            }
        }
        Bpe {
            merges: table,
            byte_symbol,
            byte_char,
            single_byte_token,
            n_vocab,
            pre,
            ignore_merges,
            extra,
            raw_utf8: None,
        }
    }

    /// Switches to raw UTF-8 symbols (llama.cpp's `byte_encode = false`, Gemma 4's BPE).
    pub fn use_raw_utf8(&mut self, vocab: &Vocab) {
        let mut hex = Box::new([None; 256]);
        for (b, slot) in hex.iter_mut().enumerate() {
            *slot = vocab.lookup(format!("<0x{b:02X}>").as_bytes());
        }
        self.raw_utf8 = Some(hex);
    }

    /// Whether symbols are raw UTF-8 characters rather than GPT-2's byte mapping.
    pub fn is_raw_utf8(&self) -> bool {
        self.raw_utf8.is_some()
    }

    /// The symbol of one character in raw UTF-8 mode.
    fn char_symbol(&self, vocab: &Vocab, c: &str) -> u32 {
        vocab
            .lookup(c.as_bytes())
            .or_else(|| self.extra.get(c).copied())
            .unwrap_or(NO_SYMBOL)
    }

    /// The text of a word in GPT-2's byte mapping.
    fn map_bytes(&self, word: &[u8], out: &mut String) {
        out.clear();
        out.extend(word.iter().map(|&b| self.byte_char[b as usize]));
    }

    /// Appends the tokens of raw text (already cut around special tokens).
    pub fn encode(&self, vocab: &Vocab, text: &str, scratch: &mut BpeScratch, out: &mut Vec<u32>) {
        for range in self.pre.split(text) {
            self.encode_word(vocab, &text.as_bytes()[range], scratch, out);
        }
    }

    /// Appends the tokens of one pre-tokenized word.
    pub fn encode_word(&self, vocab: &Vocab, word: &[u8], s: &mut BpeScratch, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            let mut mapped = std::mem::take(&mut s.mapped);
            self.map_bytes(word, &mut mapped);
            let whole = vocab.lookup(mapped.as_bytes());
            s.mapped = mapped;
            if let Some(id) = whole {
                out.push(id);
                return;
            }
        }
        s.symbols.clear();
        if self.raw_utf8.is_some() {
            if word.iter().all(|&b| b == b'\n')
                && let Some(id) = vocab.lookup(word)
            {
                out.push(id);
                return;
            }
            // Pieces are cut from valid UTF-8 text at character boundaries.
            let text = std::str::from_utf8(word).expect("a word is valid UTF-8");
            s.symbols.extend(text.char_indices().map(|(i, c)| Symbol {
                start: i as u32,
                len: c.len_utf8() as u32,
                id: self.char_symbol(vocab, &text[i..i + c.len_utf8()]),
                prev: NIL,
                next: NIL,
            }));
        } else {
            s.symbols
                .extend(word.iter().enumerate().map(|(i, &b)| Symbol {
                    start: i as u32,
                    len: 1,
                    id: self.byte_symbol[b as usize],
                    prev: NIL,
                    next: NIL,
                }));
        }
        let n = s.symbols.len() as u32;
        for (i, sym) in s.symbols.iter_mut().enumerate() {
            sym.prev = if i == 0 { NIL } else { i as u32 - 1 };
            sym.next = if i as u32 + 1 == n { NIL } else { i as u32 + 1 };
        }
        s.heap.clear();
        for i in 1..n {
            self.push_pair(&s.symbols, &mut s.heap, i - 1, i);
        }
        while let Some(Reverse((_rank, left, right, size))) = s.heap.pop() {
            let (l, r) = (s.symbols[left as usize], s.symbols[right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue; // stale: one side has changed since the pair was queued
            }
            let merged = self.merges[&(l.id, r.id)].1;
            let sym = &mut s.symbols[left as usize];
            sym.len += r.len;
            sym.id = merged;
            sym.next = r.next;
            s.symbols[right as usize].len = 0;
            if r.next != NIL {
                s.symbols[r.next as usize].prev = left;
            }
            if l.prev != NIL {
                self.push_pair(&s.symbols, &mut s.heap, l.prev, left);
            }
            if r.next != NIL {
                self.push_pair(&s.symbols, &mut s.heap, left, r.next);
            }
        }
        let mut i = 0;
        while i != NIL {
            let sym = s.symbols[i as usize];
            if sym.id < self.n_vocab {
                out.push(sym.id);
            } else {
                // Not a token: emit the single-byte tokens its mapped text contains.
                let bytes = &word[sym.start as usize..(sym.start + sym.len) as usize];
                for &b in bytes {
                    if let Some(hex) = &self.raw_utf8 {
                        out.extend(hex[b as usize]);
                    } else if self.byte_char[b as usize].is_ascii()
                        && let Some(id) = self.single_byte_token[b as usize]
                    {
                        out.push(id);
                    }
                }
            }
            i = sym.next;
        }
    }

    fn push_pair(
        &self,
        syms: &[Symbol],
        heap: &mut BinaryHeap<Reverse<(u32, u32, u32, u32)>>,
        left: u32,
        right: u32,
    ) {
        let (l, r) = (&syms[left as usize], &syms[right as usize]);
        if l.id == NO_SYMBOL || r.id == NO_SYMBOL {
            return;
        }
        if let Some(&(rank, _)) = self.merges.get(&(l.id, r.id)) {
            heap.push(Reverse((rank, left, right, l.len + r.len)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny byte-level vocabulary: single characters plus merged tokens.
    fn tiny() -> (Vocab, Bpe) {
        let tokens = ["a", "b", "c", "Ġ", "ab", "bc", "abc", "Ġa", "Ġab"];
        let merges = ["a b", "b c", "ab c", "Ġ a", "Ġa b"];
        let v = Vocab::new(&tokens, None, None);
        let bpe = Bpe::new(&v, &merges, PreTokenizer::Gpt2, false);
        (v, bpe)
    }

    fn enc(v: &Vocab, bpe: &Bpe, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        bpe.encode(v, text, &mut BpeScratch::default(), &mut out);
        out
    }

    #[test]
    fn merges_by_rank() {
        let (v, bpe) = tiny();
        // "a b" (rank 0) beats "b c" (rank 1); then "ab c" merges to "abc".
        assert_eq!(enc(&v, &bpe, "abc"), [6]);
        // "bc" then nothing joins "a"+"bc": no such merge.
        assert_eq!(enc(&v, &bpe, "bca"), [5, 0]);
        // " ab" is one word; "a b" outranks "Ġ a", so Ġ stays alone.
        assert_eq!(enc(&v, &bpe, "ab ab"), [4, 3, 4]);
        // " ac": Ġ a → Ġa (rank 3); "Ġa c" is not a merge.
        assert_eq!(enc(&v, &bpe, " ac"), [7, 2]);
    }

    #[test]
    fn ties_merge_leftmost_first() {
        let (v, bpe) = tiny();
        // "abab": both "a b" pairs rank 0; leftmost first, result ab ab either way.
        assert_eq!(enc(&v, &bpe, "abab"), [4, 4]);
        // "abcbc": a b (0) first, then b c at 3..5 (1), then ab c (2).
        assert_eq!(enc(&v, &bpe, "abcbc"), [6, 5]);
    }

    #[test]
    fn unknown_bytes_are_dropped_like_llama_cpp() {
        let (v, bpe) = tiny();
        // 'd' has no token and no single-byte token: nothing is emitted for it.
        assert_eq!(enc(&v, &bpe, "adb"), [0, 1]);
    }

    #[test]
    fn raw_utf8_merges_characters_and_falls_back_to_hex_bytes() {
        let tokens = ["<0x0A>", "<0xC3>", "<0xA9>", "▁", "a", "▁a", "\n\n", "é"];
        let v = Vocab::new(&tokens, None, None);
        let mut bpe = Bpe::new(&v, &["▁ a"], PreTokenizer::Newlines, false);
        bpe.use_raw_utf8(&v);
        // '▁' is one 3-byte symbol; "▁ a" merges; 'é' is a token; 'ü' is not: byte tokens for
        // the bytes that have one (0xC3), nothing for the others.
        assert_eq!(enc(&v, &bpe, "▁aé"), [5, 7]);
        assert_eq!(enc(&v, &bpe, "ü"), [1]);
        // A run of newlines that is a token is taken whole; one that is not falls back to bytes.
        assert_eq!(enc(&v, &bpe, "\n\n"), [6]);
        assert_eq!(enc(&v, &bpe, "\n"), [0]);
    }

    #[test]
    fn ignore_merges_takes_whole_word() {
        let tokens = ["a", "b", "ab", "x"];
        let v = Vocab::new(&tokens, None, None);
        // No merges at all, but "ab" is a token.
        let bpe = Bpe::new(&v, &[] as &[&str], PreTokenizer::Gpt2, true);
        assert_eq!(enc(&v, &bpe, "ab"), [2]);
        let bpe = Bpe::new(&v, &[] as &[&str], PreTokenizer::Gpt2, false);
        assert_eq!(enc(&v, &bpe, "ab"), [0, 1]);
    }
}
