//! Unicode helpers for the pre-tokenizers: the general-category class of a code point, the
//! White_Space property, and GPT-2's reversible byte ↔ printable-character mapping.

use super::unicode_tables::CATEGORY_RANGES;

/// The major class of a code point's Unicode general category (`\p{L}`, `\p{N}`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    /// Cn: not assigned.
    Undefined,
    /// L*: letters.
    Letter,
    /// N*: numbers.
    Number,
    /// P*: punctuation.
    Punctuation,
    /// S*: symbols.
    Symbol,
    /// M*: combining marks.
    Mark,
    /// Z*: separators.
    Separator,
    /// C* except Cn: control, format, surrogate, private use.
    Control,
}

/// The category class of `c`.
pub(crate) fn category(c: char) -> Category {
    let cp = c as u32;
    let i = CATEGORY_RANGES.partition_point(|&(_, last, _)| last < cp);
    match CATEGORY_RANGES.get(i) {
        Some(&(first, _, cat)) if first <= cp => cat,
        _ => Category::Undefined,
    }
}

/// Unicode's White_Space property (what `\s` matches in the reference pre-tokenizers).
pub(crate) fn is_whitespace(c: char) -> bool {
    matches!(
        c as u32,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// Pre-computed properties of one code point, as the splitters test them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags {
    /// The category class.
    pub cat: Category,
    /// White_Space.
    pub ws: bool,
}

impl Flags {
    /// The flags of `c`.
    pub fn of(c: char) -> Flags {
        Flags {
            cat: category(c),
            ws: is_whitespace(c),
        }
    }
    /// `\p{L}`.
    pub fn letter(self) -> bool {
        self.cat == Category::Letter
    }
    /// `\p{N}`.
    pub fn number(self) -> bool {
        self.cat == Category::Number
    }
}

/// GPT-2's byte → character table: printable Latin-1 bytes map to themselves, the other 68 bytes
/// to U+0100 upwards in byte order, so every byte string becomes printable text.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            b as u32
        } else {
            let cp = next;
            next += 1;
            cp
        };
        *slot = char::from_u32(cp).expect("below U+0200");
    }
    table
}

/// The 68 bytes GPT-2 maps to U+0100…U+0143, in increasing order.
const UNPRINTABLE_BYTES: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        if !printable {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

/// The inverse of [`byte_to_char_table`]: the byte a mapped character stands for.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x143 => Some(UNPRINTABLE_BYTES[(cp - 0x100) as usize]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(category('a'), Category::Letter);
        assert_eq!(category('中'), Category::Letter);
        assert_eq!(category('7'), Category::Number);
        assert_eq!(category('²'), Category::Number);
        assert_eq!(category('!'), Category::Punctuation);
        assert_eq!(category('$'), Category::Symbol);
        assert_eq!(category('\u{301}'), Category::Mark);
        assert_eq!(category('\u{378}'), Category::Undefined);
        assert_eq!(category('🚀'), Category::Symbol);
        // Assigned after Unicode 14 (Kannada U+0CF3, CJK stroke U+31EF, Nag Mundari U+1E4D0):
        // llama.cpp classifies them, so must we.
        assert_eq!(category('\u{cf3}'), Category::Mark);
        assert_eq!(category('\u{31ef}'), Category::Symbol);
        assert_eq!(category('\u{1e4d0}'), Category::Letter);
        assert!(is_whitespace('\u{a0}') && is_whitespace('\n') && !is_whitespace('\u{1c}'));
    }

    #[test]
    fn byte_mapping_round_trips() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(t[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('中'), None);
    }
}
