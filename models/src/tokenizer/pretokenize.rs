//! Pre-tokenizers for byte-level BPE: split text into words before merges run, by hand-written
//! scanners equivalent to the regular expressions llama.cpp uses for each `tokenizer.ggml.pre`.
//!
//! A pre-tokenizer is a sequence of stages; each stage splits every current piece further, and the
//! text between two matches stays a piece of its own (as a regex "split keeping delimiters"). The
//! stages work on code point indices and the final pieces are returned as byte ranges.
//!
//! | `pre` | stages |
//! |---|---|
//! | `gpt2` family | `'s\|'t\|'re\|'ve\|'m\|'ll\|'d\| ?\p{L}+\| ?\p{N}+\| ?[^\s\p{L}\p{N}]+\|\s+(?!\S)` |
//! | `smollm`, `starcoder` family | `\p{N}`, then the gpt2 expression |
//! | `llama-bpe` (llama3) family | `(?i:'s\|'t\|'re\|'ve\|'m\|'ll\|'d)\|[^\r\n\p{L}\p{N}]?\p{L}+\|\p{N}{1,3}\| ?[^\s\p{L}\p{N}]+[\r\n]*\|\s*[\r\n]+\|\s+(?!\S)\|\s+` |
//! | `qwen2` family | as llama3 with `\p{N}` instead of `\p{N}{1,3}` |
//! | `default` / missing | `[\p{P}$+<=>^~\|]+`, the gpt2 expression, `\p{N}+`, `[0-9][0-9][0-9]` |
//!
//! Unknown names fall back to the gpt2 expression with a warning on stderr (llama.cpp refuses
//! them; a slightly different split is more useful than no tokenizer at all).

use super::unicode::Flags;
use std::ops::Range;

/// Which splitting rules a byte-level BPE vocabulary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's expression.
    Gpt2,
    /// Every digit alone, then GPT-2's expression (StarCoder, SmolLM, Command-R, …).
    Digits1Gpt2,
    /// Llama 3's expression (numbers in groups of up to three digits).
    Llama3,
    /// Qwen2's expression (llama3's with single digits).
    Qwen2,
    /// llama.cpp's default four-stage split for unnamed BPE pre-tokenizers.
    Default,
}

/// Per-`pre` settings besides the split rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PreConfig {
    /// The split rules.
    pub pre: PreTokenizer,
    /// A word that is already a token is emitted without merges (llama3).
    pub ignore_merges: bool,
    /// Whether BOS is added by default (before `tokenizer.ggml.add_bos_token` overrides it).
    pub add_bos: bool,
    /// Whether the name was recognised.
    pub known: bool,
}

impl PreTokenizer {
    /// The settings for a `tokenizer.ggml.pre` value (`None` when the key is absent).
    pub(crate) fn config(name: Option<&str>) -> PreConfig {
        use PreTokenizer::*;
        let cfg = |pre, ignore_merges, add_bos| PreConfig {
            pre,
            ignore_merges,
            add_bos,
            known: true,
        };
        match name.unwrap_or("default") {
            "" | "default" => cfg(Default, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => cfg(Llama3, true, true),
            "dbrx" | "smaug-bpe" | "chatglm-bpe" | "glm4" => cfg(Llama3, false, false),
            "gpt2" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "jina-v1-en" | "jina-v2-code"
            | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion" | "exaone4"
            | "granite-docling" => cfg(Gpt2, false, false),
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => cfg(Digits1Gpt2, false, false),
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" => {
                cfg(Qwen2, false, false)
            }
            _ => PreConfig {
                pre: Gpt2,
                ignore_merges: false,
                add_bos: false,
                known: false,
            },
        }
    }

    /// Splits `text` into words, returned as byte ranges that cover `text` in order.
    pub fn split(self, text: &str) -> Vec<Range<usize>> {
        if text.is_empty() {
            return Vec::new();
        }
        let cps = CodePoints::new(text);
        let mut offsets = vec![cps.len()];
        let stages: &[Stage] = match self {
            PreTokenizer::Gpt2 => &[Stage::Gpt2],
            PreTokenizer::Digits1Gpt2 => &[Stage::EachNumber, Stage::Gpt2],
            PreTokenizer::Llama3 => &[Stage::Llama3 { max_digits: 3 }],
            PreTokenizer::Qwen2 => &[Stage::Llama3 { max_digits: 1 }],
            PreTokenizer::Default => &[
                Stage::PunctRuns,
                Stage::Gpt2,
                Stage::NumberRuns,
                Stage::AsciiDigitTriples,
            ],
        };
        for stage in stages {
            let mut out = Vec::with_capacity(offsets.len() * 2);
            let mut start = 0;
            for &len in &offsets {
                let mut pieces = Pieces {
                    out: &mut out,
                    prev: start,
                };
                stage.run(&cps, start, start + len, &mut pieces);
                pieces.close(start + len);
                start += len;
            }
            offsets = out;
        }
        let mut ranges = Vec::with_capacity(offsets.len());
        let mut start = 0;
        for len in offsets {
            ranges.push(cps.byte_pos[start]..cps.byte_pos[start + len]);
            start += len;
        }
        ranges
    }
}

/// The text as code points with their flags and byte positions.
struct CodePoints {
    chars: Vec<char>,
    flags: Vec<Flags>,
    /// Byte offset of each code point, plus the text length at the end.
    byte_pos: Vec<usize>,
}

impl CodePoints {
    fn new(text: &str) -> CodePoints {
        let mut chars = Vec::with_capacity(text.len());
        let mut flags = Vec::with_capacity(text.len());
        let mut byte_pos = Vec::with_capacity(text.len() + 1);
        for (i, c) in text.char_indices() {
            chars.push(c);
            flags.push(Flags::of(c));
            byte_pos.push(i);
        }
        byte_pos.push(text.len());
        CodePoints {
            chars,
            flags,
            byte_pos,
        }
    }
    fn len(&self) -> usize {
        self.chars.len()
    }
}

/// Collects piece lengths for one input piece; `prev` is where the next piece starts.
struct Pieces<'a> {
    out: &'a mut Vec<usize>,
    prev: usize,
}

impl Pieces<'_> {
    /// Ends a piece at `end` (nothing when empty).
    fn cut(&mut self, end: usize) {
        if end > self.prev {
            self.out.push(end - self.prev);
            self.prev = end;
        }
    }
    /// Ends the input piece: whatever is left becomes the last piece.
    fn close(&mut self, end: usize) {
        self.cut(end);
    }
    /// A regex match at `s..e`: the gap before it and the match become pieces.
    fn matched(&mut self, s: usize, e: usize) {
        self.cut(s);
        self.cut(e);
    }
}

/// One splitting stage.
#[derive(Clone, Copy)]
enum Stage {
    /// GPT-2's expression.
    Gpt2,
    /// Llama 3's expression with `\p{N}{1,max_digits}`.
    Llama3 { max_digits: usize },
    /// `\p{N}`.
    EachNumber,
    /// `\p{N}+`.
    NumberRuns,
    /// `[\p{P}$+<=>^~|]+`.
    PunctRuns,
    /// `[0-9][0-9][0-9]`.
    AsciiDigitTriples,
}

impl Stage {
    fn run(self, cps: &CodePoints, ini: usize, end: usize, p: &mut Pieces) {
        match self {
            Stage::Gpt2 => gpt2(cps, ini, end, p),
            Stage::Llama3 { max_digits } => llama3(cps, ini, end, max_digits, p),
            Stage::EachNumber => {
                for i in ini..end {
                    if cps.flags[i].number() {
                        p.matched(i, i + 1);
                    }
                }
            }
            Stage::NumberRuns => runs(ini, end, p, |i| cps.flags[i].number()),
            Stage::PunctRuns => runs(ini, end, p, |i| {
                cps.flags[i].cat == super::unicode::Category::Punctuation
                    || matches!(cps.chars[i], '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
            }),
            Stage::AsciiDigitTriples => {
                let mut i = ini;
                while i + 3 <= end {
                    if cps.chars[i..i + 3].iter().all(char::is_ascii_digit) {
                        p.matched(i, i + 3);
                        i += 3;
                    } else {
                        i += 1;
                    }
                }
            }
        }
    }
}

/// Maximal runs of code points satisfying `pred` are matches.
fn runs(ini: usize, end: usize, p: &mut Pieces, pred: impl Fn(usize) -> bool) {
    let mut i = ini;
    while i < end {
        if pred(i) {
            let s = i;
            while i < end && pred(i) {
                i += 1;
            }
            p.matched(s, i);
        } else {
            i += 1;
        }
    }
}

/// Flags of code point `i` when it lies inside the piece `ini..end`.
#[inline]
fn flags_at(cps: &CodePoints, ini: usize, end: usize, i: usize) -> Option<Flags> {
    (ini <= i && i < end).then(|| cps.flags[i])
}

/// `[^\s\p{L}\p{N}]` for a code point inside the piece.
#[inline]
fn is_other(f: Option<Flags>) -> bool {
    matches!(f, Some(f) if !(f.ws || f.letter() || f.number()))
}

/// Length of the contraction (`'s`, `'re`, …) starting at `pos`, if any.
fn contraction(cps: &CodePoints, pos: usize, end: usize, ignore_case: bool) -> Option<usize> {
    if cps.chars[pos] != '\'' || pos + 1 >= end {
        return None;
    }
    let low = |c: char| {
        if ignore_case {
            c.to_ascii_lowercase()
        } else {
            c
        }
    };
    let c1 = low(cps.chars[pos + 1]);
    if matches!(c1, 's' | 't' | 'm' | 'd') {
        return Some(2);
    }
    if pos + 2 < end {
        let c2 = low(cps.chars[pos + 2]);
        if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
            return Some(3);
        }
    }
    None
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` and whatever
/// no alternative matches as single code points.
fn gpt2(cps: &CodePoints, ini: usize, end: usize, p: &mut Pieces) {
    let at = |i| flags_at(cps, ini, end, i);
    let mut pos = ini;
    while pos < end {
        if let Some(n) = contraction(cps, pos, end, false) {
            pos += n;
            p.cut(pos);
            continue;
        }
        let space = cps.chars[pos] == ' ';
        let f2 = if space { at(pos + 1) } else { at(pos) };
        let class: Option<fn(Option<Flags>) -> bool> = match f2 {
            Some(f) if f.letter() => Some(|f| f.is_some_and(Flags::letter)),
            Some(f) if f.number() => Some(|f| f.is_some_and(Flags::number)),
            f if is_other(f) => Some(is_other),
            _ => None,
        };
        if let Some(class) = class {
            pos += usize::from(space);
            while class(at(pos)) {
                pos += 1;
            }
            p.cut(pos);
            continue;
        }
        let mut n_ws = 0;
        while at(pos + n_ws).is_some_and(|f| f.ws) {
            n_ws += 1;
        }
        if n_ws > 1 && pos + n_ws < end {
            // \s+(?!\S): leave the last space for the word that follows.
            pos += n_ws - 1;
        } else if n_ws > 0 {
            pos += n_ws;
        } else {
            pos += 1;
        }
        p.cut(pos);
    }
}

/// Llama 3 / Qwen2: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,k}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
fn llama3(cps: &CodePoints, ini: usize, end: usize, max_digits: usize, p: &mut Pieces) {
    let at = |i| flags_at(cps, ini, end, i);
    let is_nl = |i: usize| i < end && matches!(cps.chars[i], '\r' | '\n');
    let mut pos = ini;
    while pos < end {
        if let Some(n) = contraction(cps, pos, end, true) {
            pos += n;
            p.cut(pos);
            continue;
        }
        let c = cps.chars[pos];
        let f = cps.flags[pos];
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(c == '\r' || c == '\n' || f.number())
            && (f.letter() || at(pos + 1).is_some_and(Flags::letter))
        {
            pos += 1;
            while at(pos).is_some_and(Flags::letter) {
                pos += 1;
            }
            p.cut(pos);
            continue;
        }
        // \p{N}{1,k}
        if f.number() {
            let mut group = pos;
            while at(pos).is_some_and(Flags::number) {
                pos += 1;
                if pos - group >= max_digits {
                    p.cut(pos);
                    group = pos;
                }
            }
            p.cut(pos);
            continue;
        }
        // ' '?[^\s\p{L}\p{N}]+[\r\n]*
        let f2 = if c == ' ' { at(pos + 1) } else { Some(f) };
        if f2.is_none_or(|f2| !(f2.ws || f2.letter() || f2.number())) {
            pos += usize::from(c == ' ');
            while is_other(at(pos)) {
                pos += 1;
            }
            while is_nl(pos) {
                pos += 1;
            }
            p.cut(pos);
            continue;
        }
        let mut n_ws = 0;
        let mut last_nl_end = None;
        while at(pos + n_ws).is_some_and(|f| f.ws) {
            if is_nl(pos + n_ws) {
                last_nl_end = Some(pos + n_ws + 1);
            }
            n_ws += 1;
        }
        if let Some(e) = last_nl_end {
            // \s*[\r\n]+
            pos = e;
        } else if n_ws > 1 && pos + n_ws < end {
            // \s+(?!\S)
            pos += n_ws - 1;
        } else if n_ws > 0 {
            pos += n_ws;
        } else {
            pos += 1;
        }
        p.cut(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        pre.split(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn gpt2_words() {
        let w = words(PreTokenizer::Gpt2, "Hello  world, it's 2024!\n\n  ok ");
        assert_eq!(
            w,
            [
                "Hello", " ", " world", ",", " it", "'s", " 2024", "!", "\n\n ", " ok", " "
            ]
        );
    }

    #[test]
    fn smollm_splits_digits() {
        let w = words(PreTokenizer::Digits1Gpt2, "v 123 x");
        assert_eq!(w, ["v", " ", "1", "2", "3", " x"]);
    }

    #[test]
    fn llama3_words() {
        let w = words(PreTokenizer::Llama3, "I'M  12345 hello\r\n\nworld ...\n");
        assert_eq!(
            w,
            [
                "I", "'M", " ", " ", "123", "45", " hello", "\r\n\n", "world", " ...\n"
            ]
        );
        let w = words(PreTokenizer::Qwen2, "a 12");
        assert_eq!(w, ["a", " ", "1", "2"]);
    }

    #[test]
    fn default_stages() {
        let w = words(PreTokenizer::Default, "x+=12345;");
        assert_eq!(w, ["x", "+=", "123", "45", ";"]);
    }

    #[test]
    fn pieces_cover_text() {
        let text = "  Ünïcödé 中文 🚀\t\n x  ";
        for pre in [
            PreTokenizer::Gpt2,
            PreTokenizer::Digits1Gpt2,
            PreTokenizer::Llama3,
            PreTokenizer::Qwen2,
            PreTokenizer::Default,
        ] {
            assert_eq!(words(pre, text).concat(), text);
        }
    }
}
