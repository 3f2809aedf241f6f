//! The vocabulary: token texts in one contiguous buffer, scores, per-token attributes and an
//! open-addressing hash table from text to id that borrows its keys from that buffer, so loading
//! a 262k-token vocabulary costs one copy of the strings and no per-token allocation.

/// Token attribute bits (the meaning of GGUF `tokenizer.ggml.token_type`, as bit flags).
pub mod attr {
    /// Type 0 or unknown type numbers.
    pub const UNDEFINED: u8 = 0;
    /// Type 2: the unknown token.
    pub const UNKNOWN: u8 = 1 << 0;
    /// Type 5, or a control token whose text contains "unused".
    pub const UNUSED: u8 = 1 << 1;
    /// Type 1: an ordinary token.
    pub const NORMAL: u8 = 1 << 2;
    /// Type 3: a control token such as `<bos>` or `<|im_end|>`.
    pub const CONTROL: u8 = 1 << 3;
    /// Type 4: a user-defined token, always matched verbatim in text.
    pub const USER_DEFINED: u8 = 1 << 4;
    /// Type 6: a byte-fallback token `<0xNN>`.
    pub const BYTE: u8 = 1 << 5;
    /// Whitespace after the token in a text is dropped when the token is cut out (llama.cpp
    /// sets it per model family; GGUF files do not carry it).
    pub const RSTRIP: u8 = 1 << 6;
    /// Whitespace before the token in a text is dropped when the token is cut out.
    pub const LSTRIP: u8 = 1 << 7;

    /// The attribute bits of a GGUF token type number.
    pub fn from_token_type(t: i64) -> u8 {
        match t {
            1 => NORMAL,
            2 => UNKNOWN,
            3 => CONTROL,
            4 => USER_DEFINED,
            5 => UNUSED,
            6 => BYTE,
            _ => UNDEFINED,
        }
    }
}

/// An empty slot of the hash table.
const EMPTY: u64 = u64::MAX;

/// Token texts, scores and attributes with text → id lookup.
#[derive(Clone, Debug)]
pub(crate) struct Vocab {
    blob: String,
    offsets: Vec<u32>,
    scores: Vec<f32>,
    attrs: Vec<u8>,
    /// Linear-probing slots of `(hash as u32) << 32 | id`, each entry's home slot given by the
    /// top bits of its hash; the stored low hash bits let most probes skip the text comparison.
    table: Vec<u64>,
    /// `64 - log2(table.len())`: the shift that turns a hash into its home slot.
    shift: u32,
    max_len: usize,
}

/// A fast, non-cryptographic hash of a byte string (word-at-a-time multiply–rotate, then a
/// finalizer so that both the high and the low bits are well mixed).
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Vocab {
    /// Builds the vocabulary. Empty texts become `[EMPTY_<id>]`; when a text occurs twice, the
    /// later id wins the lookup. `scores` default to 0 and `types` to NORMAL.
    pub fn new<S: AsRef<str>>(
        tokens: &[S],
        scores: Option<Vec<f32>>,
        types: Option<&[i64]>,
    ) -> Vocab {
        let n = tokens.len();
        let total: usize = tokens.iter().map(|t| t.as_ref().len()).sum();
        let mut blob = String::with_capacity(total + 16);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        let mut max_len = 0;
        for (i, t) in tokens.iter().enumerate() {
            let t = t.as_ref();
            if t.is_empty() {
                blob.push_str(&format!("[EMPTY_{i}]"));
            } else {
                blob.push_str(t);
            }
            let end = u32::try_from(blob.len()).expect("vocabulary text under 4 GiB");
            max_len = max_len.max(end as usize - *offsets.last().unwrap() as usize);
            offsets.push(end);
        }
        let scores = scores.unwrap_or_else(|| vec![0.0; n]);
        let attrs = match types {
            Some(t) => t.iter().map(|&t| attr::from_token_type(t)).collect(),
            None => vec![attr::NORMAL; n],
        };
        let cap = (n * 2).next_power_of_two().max(16);
        let mut v = Vocab {
            blob,
            offsets,
            scores,
            attrs,
            table: Vec::new(),
            shift: 64 - cap.trailing_zeros(),
            max_len,
        };
        v.table = v.build_table(cap);
        v
    }

    /// Fills the hash table. Random-order insertion would cost a cache miss per token (tens of
    /// ms for 262k tokens), so entries are sorted by hash, which is also by home slot, and
    /// written in one sweep: each goes to the first free slot at or after its home, and the few
    /// that run past the end wrap to the first free slots at the start. Every slot between an
    /// entry's home and its position is then occupied, as linear-probing lookup requires.
    fn build_table(&self, cap: usize) -> Vec<u64> {
        let n = self.len() as u32;
        let mut entries: Vec<(u64, u32)> = (0..n)
            .map(|id| (hash_bytes(self.text(id).as_bytes()), id))
            .collect();
        entries.sort_unstable();
        let mut table = vec![EMPTY; cap];
        let mut cursor = 0;
        let mut wrapped = Vec::new();
        for (i, &(h, id)) in entries.iter().enumerate() {
            // Equal texts have equal hashes and sort by id: the last id wins. (Texts are only
            // read on a full hash match, so the sweep itself touches nothing but the table.)
            let shadowed = entries[i + 1..]
                .iter()
                .take_while(|&&(h2, _)| h2 == h)
                .any(|&(_, id2)| self.text(id2) == self.text(id));
            if shadowed {
                continue;
            }
            let entry = (h << 32) | u64::from(id);
            let pos = ((h >> self.shift) as usize).max(cursor);
            if pos < cap {
                table[pos] = entry;
                cursor = pos + 1;
            } else {
                wrapped.push(entry);
            }
        }
        let mut slot = 0;
        for entry in wrapped {
            while table[slot] != EMPTY {
                slot += 1;
            }
            table[slot] = entry;
        }
        table
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// The text of token `id` (panics when out of range).
    pub fn text(&self, id: u32) -> &str {
        let i = id as usize;
        &self.blob[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The score of token `id`.
    pub fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    /// The attribute bits of token `id`.
    pub fn attr(&self, id: u32) -> u8 {
        self.attrs[id as usize]
    }

    /// Adds attribute bits to token `id`.
    pub fn add_attr(&mut self, id: u32, bits: u8) {
        self.attrs[id as usize] |= bits;
    }

    /// Clears attribute `bits` of token `id`.
    pub fn clear_attr(&mut self, id: u32, bits: u8) {
        self.attrs[id as usize] &= !bits;
    }

    /// The id whose text is exactly `bytes`.
    pub fn lookup(&self, bytes: &[u8]) -> Option<u32> {
        if bytes.len() > self.max_len {
            return None;
        }
        let mask = self.table.len() - 1;
        let h = hash_bytes(bytes);
        let mut slot = (h >> self.shift) as usize;
        loop {
            let cur = self.table[slot];
            if cur == EMPTY {
                return None;
            }
            if (cur >> 32) as u32 == h as u32 && self.text(cur as u32).as_bytes() == bytes {
                return Some(cur as u32);
            }
            slot = (slot + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_duplicates() {
        let v = Vocab::new(&["a", "b", "", "ab", "b"], None, Some(&[1, 1, 1, 3, 1]));
        assert_eq!(v.len(), 5);
        assert_eq!(v.lookup(b"a"), Some(0));
        assert_eq!(v.lookup(b"b"), Some(4));
        assert_eq!(v.lookup(b"ab"), Some(3));
        assert_eq!(v.lookup(b"abc"), None);
        assert_eq!(v.lookup(b""), None);
        assert_eq!(v.text(2), "[EMPTY_2]");
        assert_eq!(v.attr(3), attr::CONTROL);
        assert_eq!(v.score(1), 0.0);
    }

    #[test]
    fn every_token_is_found_in_a_full_table() {
        // Enough tokens for clusters and for entries that wrap past the table's end.
        let tokens: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
        let v = Vocab::new(&tokens, None, None);
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(v.lookup(t.as_bytes()), Some(i as u32));
        }
        assert_eq!(v.lookup(b"t5000"), None);
        assert_eq!(v.lookup(b"x"), None);
    }
}
