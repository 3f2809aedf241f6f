//! llama.cpp's GBNF grammars, converted to llguidance's Lark dialect.
//!
//! GBNF (`grammars/README.md` in llama.cpp): rules `name ::= alternatives`, one per line unless
//! inside parentheses; `#` comments; string literals `"..."`; character classes `[a-z]`,
//! `[^"\\]`; `.` for any character; groups; `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`; escapes
//! `\n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH`; special tokens `<|...|>` or `<[id]>`. The
//! start rule is `root`.
//!
//! The conversion keeps the language: rules become Lark rules, and a rule built only from
//! literals, classes and other such rules (no recursion) becomes a Lark *terminal* (upper
//! case), which llguidance matches with its lexer instead of its Earley parser. This is the
//! conversion llguidance's own `gbnf_to_lark` performs; it is written here from the syntax.
//!
//! Errors give the line and column (1-based, in characters) and what was expected.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// A syntax or reference error in a GBNF grammar, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct GbnfError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// One element of a GBNF sequence.
#[derive(Debug, Clone)]
enum Node {
    /// A string literal (already unescaped).
    Literal(String),
    /// A character class: negated?, ranges of characters (inclusive).
    Class(bool, Vec<(char, char)>),
    /// `.`: any one character.
    Any,
    /// A reference to a rule, with where it was written (for "undefined rule" errors).
    Ref(String, usize),
    /// A special token, written as in the grammar (`<|im_end|>` or `<[128009]>`).
    Token(String),
    /// Alternatives of sequences (a parenthesised group, or a rule body).
    Alt(Vec<Vec<Node>>),
    /// `node{min,max}` (`max` None: unbounded).
    Repeat(Box<Node>, u32, Option<u32>),
}

/// A parsed rule.
#[derive(Debug)]
struct Rule {
    name: String,
    body: Vec<Vec<Node>>,
}

/// Convert GBNF `text` into an equivalent Lark grammar for llguidance.
pub fn to_lark(text: &str) -> Result<String, GbnfError> {
    let rules = Parser::new(text).parse()?;
    Converter::new(text, &rules)?.emit()
}

/// A recursive-descent parser over the characters of the grammar.
struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            chars: text.char_indices().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).map(|&(_, c)| c)
    }

    fn byte_pos(&self) -> usize {
        self.chars
            .get(self.pos)
            .map(|&(b, _)| b)
            .unwrap_or(self.text.len())
    }

    fn error(&self, message: impl Into<String>) -> GbnfError {
        error_at(self.text, self.byte_pos(), message)
    }

    /// Skip blanks and comments; newlines too when `newlines`.
    fn skip_space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\r' || c == '\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn is_word_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-' || c == '_'
    }

    fn parse_name(&mut self) -> Result<String, GbnfError> {
        let start = self.pos;
        while self.peek().is_some_and(Self::is_word_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected a rule name"));
        }
        Ok(self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect())
    }

    fn parse(mut self) -> Result<Vec<Rule>, GbnfError> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        self.skip_space(true);
        while self.peek().is_some() {
            let at = self.byte_pos();
            let name = self.parse_name()?;
            self.skip_space(false);
            if !(self.peek() == Some(':')
                && self.peek_at(1) == Some(':')
                && self.peek_at(2) == Some('='))
            {
                return Err(self.error(format!("expected `::=` after rule name `{name}`")));
            }
            self.pos += 3;
            self.skip_space(true);
            let body = self.parse_alternatives(false)?;
            match self.peek() {
                None | Some('\r') | Some('\n') => {}
                Some(c) => return Err(self.error(format!("unexpected `{c}`"))),
            }
            if seen.contains_key(&name) {
                // llama.cpp lets a later definition of a rule replace the earlier one: refuse
                // instead, a duplicate is almost always a mistake.
                return Err(error_at(
                    self.text,
                    at,
                    format!("rule `{name}` is defined twice"),
                ));
            }
            seen.insert(name.clone(), rules.len());
            rules.push(Rule { name, body });
            self.skip_space(true);
        }
        if rules.is_empty() {
            return Err(self.error("the grammar has no rules"));
        }
        Ok(rules)
    }

    fn parse_alternatives(&mut self, nested: bool) -> Result<Vec<Vec<Node>>, GbnfError> {
        let mut alts = vec![self.parse_sequence(nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.skip_space(true);
            alts.push(self.parse_sequence(nested)?);
        }
        Ok(alts)
    }

    fn parse_sequence(&mut self, nested: bool) -> Result<Vec<Node>, GbnfError> {
        let mut seq = Vec::new();
        while let Some(c) = self.peek() {
            let node = match c {
                '"' => {
                    self.pos += 1;
                    let mut s = String::new();
                    loop {
                        match self.peek() {
                            None => return Err(self.error("unterminated string literal")),
                            Some('"') => {
                                self.pos += 1;
                                break;
                            }
                            Some('\r') | Some('\n') => {
                                return Err(self.error("newline inside a string literal"));
                            }
                            _ => s.push(self.parse_char()?),
                        }
                    }
                    Node::Literal(s)
                }
                '[' => self.parse_class()?,
                '.' => {
                    self.pos += 1;
                    Node::Any
                }
                '(' => {
                    self.pos += 1;
                    self.skip_space(true);
                    let alts = self.parse_alternatives(true)?;
                    if self.peek() != Some(')') {
                        return Err(self.error("expected `)`"));
                    }
                    self.pos += 1;
                    Node::Alt(alts)
                }
                '<' => self.parse_token()?,
                '!' => {
                    return Err(self.error("negated token references (`!<...>`) are not supported"));
                }
                c if Self::is_word_char(c) => {
                    let at = self.byte_pos();
                    Node::Ref(self.parse_name()?, at)
                }
                _ => break,
            };
            seq.push(node);
            self.skip_space(nested);
            self.parse_repetition(&mut seq)?;
            self.skip_space(nested);
        }
        Ok(seq)
    }

    fn parse_repetition(&mut self, seq: &mut Vec<Node>) -> Result<(), GbnfError> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.pos += 1;
                self.skip_space(true);
                let min = self.parse_int()?;
                self.skip_space(true);
                let max = match self.peek() {
                    Some('}') => Some(min),
                    Some(',') => {
                        self.pos += 1;
                        self.skip_space(true);
                        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                            let m = self.parse_int()?;
                            self.skip_space(true);
                            Some(m)
                        } else {
                            None
                        }
                    }
                    _ => return Err(self.error("expected `,` or `}` in a repetition")),
                };
                if self.peek() != Some('}') {
                    return Err(self.error("expected `}`"));
                }
                if max.is_some_and(|m| m < min) {
                    return Err(self.error(format!(
                        "repetition maximum {} is below its minimum {min}",
                        max.unwrap_or(0)
                    )));
                }
                (min, max)
            }
            _ => return Ok(()),
        };
        // `{` consumed its own digits; every form ends on one more character.
        self.pos += 1;
        let Some(last) = seq.pop() else {
            return Err(self.error("a repetition operator with nothing before it"));
        };
        seq.push(Node::Repeat(Box::new(last), min, max));
        Ok(())
    }

    fn parse_int(&mut self) -> Result<u32, GbnfError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error("expected a number"));
        }
        let s: String = self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect();
        s.parse::<u32>()
            .ok()
            .filter(|&n| n <= 100_000)
            .ok_or_else(|| self.error(format!("repetition count {s} is too large")))
    }

    /// One character of a literal or class, with its escape decoded.
    fn parse_char(&mut self) -> Result<char, GbnfError> {
        let Some(c) = self.peek() else {
            return Err(self.error("unexpected end of grammar"));
        };
        self.pos += 1;
        if c != '\\' {
            return Ok(c);
        }
        let Some(e) = self.peek() else {
            return Err(self.error("unexpected end of grammar after `\\`"));
        };
        self.pos += 1;
        let digits = match e {
            'n' => return Ok('\n'),
            'r' => return Ok('\r'),
            't' => return Ok('\t'),
            '\\' | '"' | '[' | ']' | '-' | '^' | '\'' => return Ok(e),
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => {
                self.pos -= 1;
                return Err(self.error(format!("unknown escape `\\{e}`")));
            }
        };
        let start = self.pos;
        for _ in 0..digits {
            if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                return Err(self.error(format!("expected {digits} hex digits after `\\{e}`")));
            }
            self.pos += 1;
        }
        let hex: String = self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect();
        let v = u32::from_str_radix(&hex, 16).expect("hex digits");
        char::from_u32(v).ok_or_else(|| self.error(format!("`\\{e}{hex}` is not a character")))
    }

    fn parse_class(&mut self) -> Result<Node, GbnfError> {
        let open = self.byte_pos();
        self.pos += 1; // '['
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            match self.peek() {
                None => {
                    // Reported where the class opens: a class may hold newlines, so the end
                    // of the text says nothing about where the `]` is missing.
                    return Err(error_at(
                        self.text,
                        open,
                        "unterminated character class (no `]` before the end of the grammar)",
                    ));
                }
                Some(']') => {
                    self.pos += 1;
                    break;
                }
                _ => {}
            }
            let lo = self.parse_char()?;
            let hi = if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                let hi = self.parse_char()?;
                if hi < lo {
                    return Err(self.error(format!(
                        "character range `{}-{}` is reversed",
                        lo.escape_debug(),
                        hi.escape_debug()
                    )));
                }
                hi
            } else {
                lo
            };
            ranges.push((lo, hi));
        }
        if ranges.is_empty() && !negated {
            return Err(self.error("empty character class"));
        }
        Ok(Node::Class(negated, ranges))
    }

    /// `<|...|>`, `<...>` or `<[id]>`: a special token, passed through to Lark as written.
    fn parse_token(&mut self) -> Result<Node, GbnfError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == '>' {
                let s: String = self.chars[start..self.pos]
                    .iter()
                    .map(|&(_, c)| c)
                    .collect();
                return Ok(Node::Token(s));
            }
            if c == '\n' || c == '\r' {
                break;
            }
        }
        self.pos = start;
        Err(self.error("unterminated token reference `<...>`"))
    }
}

fn error_at(text: &str, byte: usize, message: impl Into<String>) -> GbnfError {
    let before = &text[..byte.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    GbnfError {
        line,
        column: before[line_start..].chars().count() + 1,
        message: message.into(),
    }
}

/// Names, terminal-ness and the Lark text of the parsed rules.
struct Converter<'a> {
    rules: &'a [Rule],
    /// GBNF name → Lark name.
    names: HashMap<&'a str, String>,
}

impl<'a> Converter<'a> {
    fn new(text: &str, rules: &'a [Rule]) -> Result<Self, GbnfError> {
        let defined: HashMap<&str, &Rule> = rules.iter().map(|r| (r.name.as_str(), r)).collect();
        if !defined.contains_key("root") {
            return Err(GbnfError {
                line: 1,
                column: 1,
                message: "the grammar has no `root` rule".into(),
            });
        }
        for r in rules {
            for_each_ref(&r.body, &mut |name, at| {
                if defined.contains_key(name) {
                    Ok(())
                } else {
                    Err(error_at(text, at, format!("undefined rule `{name}`")))
                }
            })?;
        }
        // Terminal rules: only literals, classes, `.` and other terminal rules, found by
        // fixed point (a recursive rule never qualifies). `root` stays a rule.
        let mut terminal: HashSet<&str> = HashSet::new();
        loop {
            let mut changed = false;
            for r in rules {
                if r.name == "root" || terminal.contains(r.name.as_str()) {
                    continue;
                }
                if r.body.iter().flatten().all(|n| is_terminal(n, &terminal)) {
                    terminal.insert(r.name.as_str());
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut names = HashMap::new();
        let mut taken: HashSet<String> = HashSet::new();
        names.insert("root", "start".to_string());
        taken.insert("start".into());
        for r in rules {
            if r.name == "root" {
                continue;
            }
            let mut base: String = r
                .name
                .chars()
                .map(|c| {
                    if c == '-' {
                        '_'
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect();
            if base.starts_with(|c: char| c.is_ascii_digit() || c == '_') {
                base.insert(0, 'r');
            }
            if terminal.contains(r.name.as_str()) {
                base = base.to_ascii_uppercase();
            }
            let mut name = base.clone();
            let mut k = 2;
            while taken.contains(&name.to_ascii_lowercase()) {
                name = format!("{base}_{k}");
                k += 1;
            }
            taken.insert(name.to_ascii_lowercase());
            names.insert(r.name.as_str(), name);
        }
        Ok(Converter { rules, names })
    }

    fn emit(&self) -> Result<String, GbnfError> {
        let mut out = String::from("%llguidance {}\n\n");
        for r in self.rules {
            let name = &self.names[r.name.as_str()];
            let _ = writeln!(out, "{name}: {}", self.alts(&r.body));
        }
        Ok(out)
    }

    fn alts(&self, alts: &[Vec<Node>]) -> String {
        alts.iter()
            .map(|seq| self.seq(seq))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn seq(&self, seq: &[Node]) -> String {
        if seq.is_empty() {
            return "\"\"".into();
        }
        seq.iter()
            .map(|n| self.node(n))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn node(&self, n: &Node) -> String {
        match n {
            Node::Literal(s) => serde_json::to_string(s).expect("strings serialize"),
            Node::Class(neg, ranges) => {
                let mut rx = String::from("/[");
                if *neg {
                    rx.push('^');
                }
                for &(lo, hi) in ranges {
                    push_class_char(&mut rx, lo);
                    if hi != lo {
                        rx.push('-');
                        push_class_char(&mut rx, hi);
                    }
                }
                rx.push_str("]/");
                rx
            }
            Node::Any => "/(?s:.)/".into(),
            Node::Ref(name, _) => self.names[name.as_str()].clone(),
            Node::Token(t) => t.clone(),
            Node::Alt(alts) => format!("({})", self.alts(alts)),
            Node::Repeat(inner, min, max) => {
                let s = match inner.as_ref() {
                    Node::Alt(_)
                    | Node::Literal(_)
                    | Node::Class(..)
                    | Node::Any
                    | Node::Ref(..) => self.node(inner),
                    _ => format!("({})", self.node(inner)),
                };
                match (min, max) {
                    (0, None) => format!("{s}*"),
                    (1, None) => format!("{s}+"),
                    (0, Some(1)) => format!("{s}?"),
                    (m, None) => format!("{s}{{{m},}}"),
                    (m, Some(x)) => format!("{s}{{{m},{x}}}"),
                }
            }
        }
    }
}

/// A character inside a regex class: alphanumerics as themselves, everything else as a hex
/// escape (no `/`, `]`, `\` or `-` can end the class or the Lark regex early).
fn push_class_char(rx: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        rx.push(c);
    } else {
        let _ = write!(rx, "\\x{{{:X}}}", c as u32);
    }
}

fn is_terminal(n: &Node, terminal: &HashSet<&str>) -> bool {
    match n {
        Node::Literal(_) | Node::Class(..) | Node::Any => true,
        Node::Ref(name, _) => terminal.contains(name.as_str()),
        Node::Token(_) => false,
        Node::Alt(alts) => alts.iter().flatten().all(|n| is_terminal(n, terminal)),
        Node::Repeat(inner, ..) => is_terminal(inner, terminal),
    }
}

fn for_each_ref<'n>(
    alts: &'n [Vec<Node>],
    f: &mut impl FnMut(&'n str, usize) -> Result<(), GbnfError>,
) -> Result<(), GbnfError> {
    for n in alts.iter().flatten() {
        visit_refs(n, f)?;
    }
    Ok(())
}

fn visit_refs<'n>(
    n: &'n Node,
    f: &mut impl FnMut(&'n str, usize) -> Result<(), GbnfError>,
) -> Result<(), GbnfError> {
    match n {
        Node::Ref(name, at) => f(name, *at),
        Node::Alt(alts) => for_each_ref(alts, f),
        Node::Repeat(inner, ..) => visit_refs(inner, f),
        _ => Ok(()),
    }
}
