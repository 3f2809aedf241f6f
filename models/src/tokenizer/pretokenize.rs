//! Pre-tokenizers for byte-level BPE: split text into words before merges run, by hand-written
//! scanners equivalent to the regular expressions llama.cpp uses for each `tokenizer.ggml.pre`.
//!
//! A pre-tokenizer is a sequence of stages; each stage splits every current piece further, and the
//! text between two matches stays a piece of its own (as a regex "split keeping delimiters"). The
//! stages work on code point indices and the final pieces are returned as byte ranges.
//!
//! | `pre` | stages |
//! |---|---|
//! | `gpt2` family (`gpt-2`, `mpt`, `olmo`, `phi-2`, …) | `'s\|'t\|'re\|'ve\|'m\|'ll\|'d\| ?\p{L}+\| ?\p{N}+\| ?[^\s\p{L}\p{N}]+\|\s+(?!\S)` |
//! | `starcoder`, `refact`, `command-r`, `smollm` family | `\p{N}`, then the gpt2 expression |
//! | `llama-bpe` (llama3) family | `(?i:'s\|'t\|'re\|'ve\|'m\|'ll\|'d)\|[^\r\n\p{L}\p{N}]?\p{L}+\|\p{N}{1,3}\| ?[^\s\p{L}\p{N}]+[\r\n]*\|\s*[\r\n]+\|\s+(?!\S)\|\s+` |
//! | `qwen2` family | as llama3 with `\p{N}` instead of `\p{N}{1,3}` |
//! | `qwen35` | as qwen2 with `[\p{L}\p{M}]` for `\p{L}` (and `\p{M}` out of the punctuation class) |
//! | `gpt-4o` (o200k: gpt-oss, `llama4`, `minimax-m2`, …) | `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s\|…)?\|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s\|…)?\|\p{N}{1,3}\| ?[^\s\p{L}\p{N}]+[\r\n/]*\|\s*[\r\n]+\|\s+(?!\S)\|\s+`, as llama.cpp evaluates it (see `gpt4o`) |
//! | `falcon` | `` [\p{P}$+<=>^~\|`]+ ``, the gpt2 expression, `[0-9][0-9][0-9]` |
//! | `deepseek-llm` | `[\r\n]`, `\s?[A-Za-zµÀ-Ö…]+` (Latin, Greek, Cyrillic, … ranges), `\s?[!-/:-~！-／：-～‘-‟　-。]+`, `\s+$`, `[一-龥ࠀ-一가-퟿]+`, `\p{N}+` |
//! | `deepseek-coder` | `[\r\n]`, `\s?\p{L}+`, `\s?\p{P}+`, `[一-龥ࠀ-一가-퟿]+`, `\p{N}` |
//! | `default` / missing | `[\p{P}$+<=>^~\|]+`, the gpt2 expression, `\p{N}+`, `[0-9][0-9][0-9]` |
//!
//! The full list of accepted names is in `PreTokenizer::config`. An unknown name is an error
//! (`TokenizerError::UnknownPreTokenizer`), as in llama.cpp: splitting by guessed rules would
//! give ids the model was not trained on, silently.
//!
//! As in llama.cpp, `\s` is Unicode's White_Space, and the explicit ranges of the DeepSeek
//! expressions never match white space (llama.cpp turns non-ASCII white space into U+000B
//! before matching them).

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
    /// Qwen3.5's expression (Qwen2's with combining marks counted as letters).
    Qwen35,
    /// GPT-4o's o200k expression (gpt-oss, Llama 4, MiniMax-M2), as llama.cpp evaluates it:
    /// upper case means "a letter other than `a-z`", lower case "a letter other than `A-Z`"
    /// (so every non-ASCII letter is both), and combining marks are not letters.
    Gpt4o,
    /// Falcon's: punctuation runs, GPT-2's expression, then ASCII digits in threes.
    Falcon,
    /// DeepSeek LLM's six stages (newlines, Latin/Greek/Cyrillic/… words, ASCII and fullwidth
    /// punctuation, trailing spaces, CJK runs, number runs).
    DeepseekLlm,
    /// DeepSeek Coder's five stages (newlines, words, punctuation, CJK runs, single digits).
    DeepseekCoder,
    /// llama.cpp's default four-stage split for unnamed BPE pre-tokenizers.
    Default,
    /// Runs of newlines and runs of anything else (Gemma 4, whose BPE runs on whole lines).
    Newlines,
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
}

impl PreTokenizer {
    /// The `tokenizer.ggml.pre` values recognised, as documented (aliases included).
    pub const SUPPORTED: &'static [&'static str] = &[
        "default",
        "gpt2",
        "gpt-2",
        "llama3",
        "llama-bpe",
        "qwen2",
        "qwen35",
        "gpt-4o",
        "llama4",
        "minimax-m2",
        "deepseek-llm",
        "deepseek-coder",
        "falcon",
        "starcoder",
        "refact",
        "command-r",
        "smollm",
        "mpt",
        "…",
    ];

    /// The settings for a `tokenizer.ggml.pre` value (`name` is `None` when the key is absent:
    /// llama.cpp's `default` split); `None` for a name that is not recognised.
    pub(crate) fn config(name: Option<&str>) -> Option<PreConfig> {
        use PreTokenizer::*;
        let cfg = |pre, ignore_merges, add_bos| {
            Some(PreConfig {
                pre,
                ignore_merges,
                add_bos,
            })
        };
        match name.unwrap_or("default") {
            "" | "default" => cfg(Default, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => cfg(Llama3, true, true),
            "dbrx" | "smaug-bpe" | "chatglm-bpe" | "glm4" => cfg(Llama3, false, false),
            "gpt2" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en"
            | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion" | "exaone4"
            | "granite-docling" => cfg(Gpt2, false, false),
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => cfg(Digits1Gpt2, false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "megrez"
            | "hunyuan" => cfg(Qwen2, false, false),
            "qwen35" => cfg(Qwen35, false, false),
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => cfg(Gpt4o, false, false),
            "falcon" => cfg(Falcon, false, false),
            "deepseek-llm" => cfg(DeepseekLlm, false, false),
            "deepseek-coder" => cfg(DeepseekCoder, false, false),
            _ => None,
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
            PreTokenizer::Llama3 => &[Stage::Llama3 {
                max_digits: 3,
                marks: false,
            }],
            PreTokenizer::Qwen2 => &[Stage::Llama3 {
                max_digits: 1,
                marks: false,
            }],
            PreTokenizer::Qwen35 => &[Stage::Llama3 {
                max_digits: 1,
                marks: true,
            }],
            PreTokenizer::Gpt4o => &[Stage::Gpt4o],
            PreTokenizer::Falcon => &[
                Stage::PunctRuns { backtick: true },
                Stage::Gpt2,
                Stage::AsciiDigitTriples,
            ],
            PreTokenizer::DeepseekLlm => &[
                Stage::Newline,
                Stage::SpaceThenRun(Class::DeepseekLetter),
                Stage::SpaceThenRun(Class::DeepseekPunct),
                Stage::TrailingSpaces,
                Stage::Run(Class::Cjk),
                Stage::NumberRuns,
            ],
            PreTokenizer::DeepseekCoder => &[
                Stage::Newline,
                Stage::SpaceThenRun(Class::Letter),
                Stage::SpaceThenRun(Class::Punctuation),
                Stage::Run(Class::Cjk),
                Stage::EachNumber,
            ],
            PreTokenizer::Newlines => &[Stage::NewlineRuns],
            PreTokenizer::Default => &[
                Stage::PunctRuns { backtick: false },
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
    /// Llama 3's expression with `\p{N}{1,max_digits}`; with `marks`, Qwen3.5's, where `\p{M}`
    /// joins `\p{L}` in words and leaves the punctuation class.
    Llama3 { max_digits: usize, marks: bool },
    /// GPT-4o's o200k expression.
    Gpt4o,
    /// `\p{N}`.
    EachNumber,
    /// `\p{N}+`.
    NumberRuns,
    /// `[\p{P}$+<=>^~|]+`, with `` ` `` too when `backtick` (Falcon).
    PunctRuns { backtick: bool },
    /// `[0-9][0-9][0-9]`.
    AsciiDigitTriples,
    /// `[\r\n]`.
    Newline,
    /// `\s?C+` for the class `C`.
    SpaceThenRun(Class),
    /// `C+` for the class `C`.
    Run(Class),
    /// `\s+$`: the spaces that end a piece.
    TrailingSpaces,
    /// `[^\n]+|[\n]+`: the runs of newlines (the text between them stays whole).
    NewlineRuns,
}

/// A character class of the DeepSeek stages. None contains a white-space character: llama.cpp
/// replaces non-ASCII white space by U+000B before running these expressions.
#[derive(Clone, Copy)]
enum Class {
    /// `\p{L}`.
    Letter,
    /// `\p{P}`.
    Punctuation,
    /// DeepSeek LLM's explicit letter ranges (Latin, Greek, Cyrillic, Armenian, Georgian, …).
    DeepseekLetter,
    /// `[!-/:-~！-／：-～‘-‟　-。]`.
    DeepseekPunct,
    /// `[一-龥ࠀ-一가-퟿]`.
    Cjk,
}

/// The letter ranges of DeepSeek LLM's second expression, as written in llama.cpp.
#[rustfmt::skip]
const DEEPSEEK_LETTERS: &[(u32, u32)] = &[
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA),
    (0x1BC, 0x1BF), (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x377),
    (0x37B, 0x37D), (0x37F, 0x37F), (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C),
    (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481), (0x48A, 0x52F), (0x531, 0x556),
    (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD), (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF),
    (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE),
    (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC),
    (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113),
    (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126), (0x2128, 0x2128),
    (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149),
    (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF3), (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787),
    (0xA78B, 0xA78E), (0xAB70, 0xABBF), (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A),
    (0xFF41, 0xFF5A), (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
];

/// DeepSeek LLM's punctuation ranges (ASCII `!-/` and `:-~`, their fullwidth forms, quotes,
/// CJK punctuation).
const DEEPSEEK_PUNCT: &[(u32, u32)] = &[
    (0x21, 0x2F),
    (0x3A, 0x7E),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF5E),
    (0x2018, 0x201F),
    (0x3000, 0x3002),
];

/// The CJK ranges of both DeepSeek expressions.
const CJK: &[(u32, u32)] = &[(0x4E00, 0x9FA5), (0x800, 0x4E00), (0xAC00, 0xD7FF)];

fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    ranges.iter().any(|&(a, b)| a <= c && c <= b)
}

impl Class {
    /// Whether code point `i` belongs to the class.
    fn contains(self, cps: &CodePoints, i: usize) -> bool {
        let (c, f) = (cps.chars[i], cps.flags[i]);
        if f.ws {
            return false;
        }
        match self {
            Class::Letter => f.letter(),
            Class::Punctuation => f.cat == super::unicode::Category::Punctuation,
            Class::DeepseekLetter => in_ranges(DEEPSEEK_LETTERS, c),
            Class::DeepseekPunct => in_ranges(DEEPSEEK_PUNCT, c),
            Class::Cjk => in_ranges(CJK, c),
        }
    }
}

impl Stage {
    fn run(self, cps: &CodePoints, ini: usize, end: usize, p: &mut Pieces) {
        match self {
            Stage::Gpt2 => gpt2(cps, ini, end, p),
            Stage::Llama3 { max_digits, marks } => llama3(cps, ini, end, max_digits, marks, p),
            Stage::Gpt4o => gpt4o(cps, ini, end, p),
            Stage::EachNumber => {
                for i in ini..end {
                    if cps.flags[i].number() {
                        p.matched(i, i + 1);
                    }
                }
            }
            Stage::NumberRuns => runs(ini, end, p, |i| cps.flags[i].number()),
            Stage::PunctRuns { backtick } => runs(ini, end, p, |i| {
                cps.flags[i].cat == super::unicode::Category::Punctuation
                    || matches!(cps.chars[i], '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
                    || (backtick && cps.chars[i] == '`')
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
            Stage::Newline => {
                for i in ini..end {
                    if matches!(cps.chars[i], '\r' | '\n') {
                        p.matched(i, i + 1);
                    }
                }
            }
            Stage::SpaceThenRun(class) => {
                let mut i = ini;
                while i < end {
                    let start = i;
                    if cps.flags[i].ws && i + 1 < end && class.contains(cps, i + 1) {
                        i += 1;
                    } else if !class.contains(cps, i) {
                        i += 1;
                        continue;
                    }
                    while i < end && class.contains(cps, i) {
                        i += 1;
                    }
                    p.matched(start, i);
                }
            }
            Stage::Run(class) => runs(ini, end, p, |i| class.contains(cps, i)),
            Stage::NewlineRuns => runs(ini, end, p, |i| cps.chars[i] == '\n'),
            Stage::TrailingSpaces => {
                let mut s = end;
                while s > ini && cps.flags[s - 1].ws {
                    s -= 1;
                }
                if s < end {
                    p.matched(s, end);
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
fn llama3(
    cps: &CodePoints,
    ini: usize,
    end: usize,
    max_digits: usize,
    marks: bool,
    p: &mut Pieces,
) {
    let at = |i| flags_at(cps, ini, end, i);
    // \p{L}, or [\p{L}\p{M}] with `marks`.
    let wordy = |f: Flags| f.letter() || (marks && f.cat == super::unicode::Category::Mark);
    // [^\s\p{L}\p{N}] (also without \p{M} with `marks`) for a code point inside the piece.
    let other = |f: Option<Flags>| matches!(f, Some(f) if !(f.ws || f.number() || wordy(f)));
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
        if !(c == '\r' || c == '\n' || f.number()) && (wordy(f) || at(pos + 1).is_some_and(wordy)) {
            pos += 1;
            while at(pos).is_some_and(wordy) {
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
        if f2.is_none_or(|f2| !(f2.ws || wordy(f2) || f2.number())) {
            pos += usize::from(c == ' ');
            while other(at(pos)) {
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

/// GPT-4o (o200k), as llama.cpp evaluates it: with no custom splitter for this expression,
/// llama.cpp runs it through `std::regex` (ECMAScript, backtracking) on a text collapsed to one
/// byte per code point (ASCII as is, white space as U+000B, other code points as one byte per
/// category), with the lookahead form
/// `[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|…|'[dD])?|
/// [^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|…)?|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`. So "upper" is a letter other than
/// `a-z` and "lower" a letter other than `A-Z` (a non-ASCII letter is both, whatever its case),
/// `\p{M}` is not a letter (marks fall in the punctuation class), and `\s` is ASCII's six
/// white-space characters plus Unicode's White_Space above U+007F.
fn gpt4o(cps: &CodePoints, ini: usize, end: usize, p: &mut Pieces) {
    let inside = |i: usize| ini <= i && i < end;
    let ws = |i: usize| {
        inside(i) && {
            let c = cps.chars[i];
            if c.is_ascii() {
                matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
            } else {
                cps.flags[i].ws
            }
        }
    };
    let letter = |i: usize| inside(i) && !ws(i) && cps.flags[i].letter();
    let number = |i: usize| inside(i) && !ws(i) && cps.flags[i].number();
    let upper = |i: usize| letter(i) && !cps.chars[i].is_ascii_lowercase();
    let lower = |i: usize| letter(i) && !cps.chars[i].is_ascii_uppercase();
    // [^\s\p{L}\p{N}]
    let other = |i: usize| inside(i) && !ws(i) && !letter(i) && !number(i);
    // [^\r\n\p{L}\p{N}]
    let prefix =
        |i: usize| inside(i) && !matches!(cps.chars[i], '\r' | '\n') && !letter(i) && !number(i);
    let run = |mut i: usize, class: &dyn Fn(usize) -> bool| {
        while class(i) {
            i += 1;
        }
        i
    };
    // The optional contraction after a word ending at `i`.
    let contraction_end = |i: usize| {
        if i < end {
            i + contraction(cps, i, end, true).unwrap_or(0)
        } else {
            i
        }
    };
    // upper*lower+: the greedy upper run backs off to the last code point that is also lower.
    let first_alt = |s: usize| -> Option<usize> {
        let u_end = run(s, &upper);
        let l_start = if lower(u_end) {
            u_end
        } else {
            (s..u_end).rev().find(|&j| lower(j))?
        };
        Some(contraction_end(run(l_start, &lower)))
    };
    // upper+lower*
    let second_alt = |s: usize| -> Option<usize> {
        upper(s).then(|| contraction_end(run(run(s, &upper), &lower)))
    };
    let mut pos = ini;
    while pos < end {
        let with_prefix = prefix(pos);
        let word = (with_prefix.then(|| first_alt(pos + 1)).flatten())
            .or_else(|| first_alt(pos))
            .or_else(|| with_prefix.then(|| second_alt(pos + 1)).flatten())
            .or_else(|| second_alt(pos));
        if let Some(e) = word {
            pos = e;
        } else if number(pos) {
            // \p{N}{1,3}
            let mut e = pos;
            while e < pos + 3 && number(e) {
                e += 1;
            }
            pos = e;
        } else if other(pos) || (cps.chars[pos] == ' ' && other(pos + 1)) {
            // ' '?[^\s\p{L}\p{N}]+[\r\n/]*
            let s = if other(pos) { pos } else { pos + 1 };
            pos = run(run(s, &other), &|i| {
                inside(i) && matches!(cps.chars[i], '\r' | '\n' | '/')
            });
        } else {
            let ws_end = run(pos, &ws);
            let last_nl = (pos..ws_end)
                .rev()
                .find(|&i| matches!(cps.chars[i], '\r' | '\n'));
            pos = if let Some(nl) = last_nl {
                // \s*[\r\n]+
                nl + 1
            } else if ws_end - pos > 1 && ws_end < end {
                // \s+(?!\S)
                ws_end - 1
            } else {
                // \s+
                ws_end.max(pos + 1)
            };
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
    fn gpt4o_words() {
        let w = words(
            PreTokenizer::Gpt4o,
            "HeLLo I'M  Éric ÉCOLE e\u{301}x 12345\r\n\n!!/\n/x ",
        );
        assert_eq!(
            w,
            [
                "He", "LLo", " I'M", " ", " Éric", " É", "COLE", " e", "\u{301}x", " ", "123",
                "45", "\r\n\n", "!!/\n/", "x", " "
            ]
        );
    }

    #[test]
    fn falcon_splits_punctuation_then_digit_triples() {
        let w = words(PreTokenizer::Falcon, "x=3333`y\n =");
        assert_eq!(w, ["x", "=", "333", "3", "`", "y", "\n ", "="]);
    }

    #[test]
    fn qwen35_keeps_marks_in_words() {
        assert_eq!(
            words(PreTokenizer::Qwen35, "e\u{301}x y'all"),
            ["e\u{301}x", " y", "'all"]
        );
        assert_eq!(words(PreTokenizer::Qwen2, "e\u{301}x"), ["e", "\u{301}x"]);
    }

    #[test]
    fn deepseek_stages() {
        let w = words(PreTokenizer::DeepseekLlm, "Hi  12½\n");
        assert_eq!(w, ["Hi", "  ", "12½", "\n"]);
        let w = words(PreTokenizer::DeepseekLlm, "a 中文! ok  ");
        assert_eq!(w, ["a", " ", "中文", "!", " ok", "  "]);
        let w = words(PreTokenizer::DeepseekCoder, "Hi  12½\n");
        assert_eq!(w, ["Hi", "  ", "1", "2", "½", "\n"]);
        let w = words(PreTokenizer::DeepseekCoder, "x, 中文");
        assert_eq!(w, ["x", ",", " ", "中文"]);
    }

    #[test]
    fn newline_runs() {
        let w = words(PreTokenizer::Newlines, "a b\n\nc\n");
        assert_eq!(w, ["a b", "\n\n", "c", "\n"]);
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
            PreTokenizer::Qwen35,
            PreTokenizer::Gpt4o,
            PreTokenizer::Falcon,
            PreTokenizer::DeepseekLlm,
            PreTokenizer::DeepseekCoder,
            PreTokenizer::Default,
            PreTokenizer::Newlines,
        ] {
            assert_eq!(words(pre, text).concat(), text);
        }
    }
}
