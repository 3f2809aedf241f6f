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
    /// Slots of `(hash >> 32) << 32 | id`: the high hash bits let most probes skip the text
    /// comparison (and the cache miss it costs).
    table: Vec<u64>,
    max_len: usize,
}

/// A fast, non-cryptographic hash of a byte string (word-at-a-time multiply–rotate, then a
/// finalizer so that the low bits used for the table index are well mixed).
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
            table: vec![EMPTY; cap],
            max_len,
        };
        let mask = cap - 1;
        for id in 0..n as u32 {
            let text = v.text(id).as_bytes();
            let h = hash_bytes(text);
            let entry = (h & !0xffff_ffff) | u64::from(id);
            let mut slot = h as usize & mask;
            loop {
                let cur = v.table[slot];
                if cur == EMPTY {
                    v.table[slot] = entry;
                    break;
                }
                if (cur ^ h) >> 32 == 0 && v.text(cur as u32).as_bytes() == text {
                    v.table[slot] = entry;
                    break;
                }
                slot = (slot + 1) & mask;
            }
        }
        v
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

    /// The id whose text is exactly `bytes`.
    pub fn lookup(&self, bytes: &[u8]) -> Option<u32> {
        if bytes.len() > self.max_len {
            return None;
        }
        let mask = self.table.len() - 1;
        let h = hash_bytes(bytes);
        let mut slot = h as usize & mask;
        loop {
            let cur = self.table[slot];
            if cur == EMPTY {
                return None;
            }
            if (cur ^ h) >> 32 == 0 && self.text(cur as u32).as_bytes() == bytes {
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
}
