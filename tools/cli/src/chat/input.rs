//! Multi-line input: a line ending with `\` goes on on the next line, and `"""` opens a block
//! that a line ending with `"""` closes. Lines go in one at a time; a whole message comes out.

/// Where the assembler is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum State {
    /// Between messages.
    #[default]
    Idle,
    /// After a line ending with `\`.
    Continued(String),
    /// Inside a `"""` block.
    Block(String),
}

/// Joins input lines into messages.
#[derive(Clone, Debug, Default)]
pub struct LineAssembler {
    state: State,
}

const FENCE: &str = "\"\"\"";

impl LineAssembler {
    /// A fresh assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a message is half-way (the prompt should say "go on").
    pub fn pending(&self) -> bool {
        self.state != State::Idle
    }

    /// Drop a half-typed message (Ctrl-C).
    pub fn clear(&mut self) {
        self.state = State::Idle;
    }

    /// Add one line (without its newline); returns the message when it is complete.
    pub fn push(&mut self, line: &str) -> Option<String> {
        match std::mem::take(&mut self.state) {
            State::Idle => {
                if let Some(rest) = line.trim_start().strip_prefix(FENCE) {
                    if let Some(body) = rest.trim_end().strip_suffix(FENCE) {
                        return Some(body.to_string());
                    }
                    self.state = State::Block(rest.to_string());
                    return None;
                }
                self.continued(String::new(), line)
            }
            State::Continued(mut acc) => {
                acc.push('\n');
                self.continued(acc, line)
            }
            State::Block(mut acc) => {
                if let Some(body) = line.trim_end().strip_suffix(FENCE) {
                    if !acc.is_empty() || !body.is_empty() {
                        acc.push('\n');
                    }
                    acc.push_str(body);
                    Some(trim_newlines(acc))
                } else {
                    acc.push('\n');
                    acc.push_str(line);
                    self.state = State::Block(acc);
                    None
                }
            }
        }
    }

    /// At the end of input: the half-typed message (after a trailing `\` or inside an
    /// unclosed `"""` block), if any, and what left it unfinished.
    pub fn finish(&mut self) -> Option<(String, &'static str)> {
        match std::mem::take(&mut self.state) {
            State::Idle => None,
            State::Continued(acc) => Some((acc, "a line ending with \\")),
            State::Block(acc) => Some((trim_newlines(acc), "an unclosed \"\"\" block")),
        }
    }

    fn continued(&mut self, mut acc: String, line: &str) -> Option<String> {
        match line.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                self.state = State::Continued(acc);
                None
            }
            None => {
                acc.push_str(line);
                Some(acc)
            }
        }
    }
}

/// A block's text without the newlines next to its fences.
fn trim_newlines(s: String) -> String {
    s.trim_matches(|c| c == '\n' || c == '\r').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &[&str]) -> Vec<String> {
        let mut a = LineAssembler::new();
        lines.iter().filter_map(|l| a.push(l)).collect()
    }

    #[test]
    fn single_lines() {
        assert_eq!(feed(&["hello", "world"]), ["hello", "world"]);
    }

    #[test]
    fn backslash_continues() {
        assert_eq!(
            feed(&["one \\", "two\\", "three", "x"]),
            ["one \ntwo\nthree", "x"]
        );
    }

    #[test]
    fn blocks() {
        assert_eq!(
            feed(&["\"\"\"", "a \\", "", "b", "\"\"\"", "next"]),
            ["a \\\n\nb", "next"]
        );
        assert_eq!(feed(&["\"\"\"first", "last\"\"\""]), ["first\nlast"]);
        assert_eq!(feed(&["\"\"\"one line\"\"\""]), ["one line"]);
    }

    #[test]
    fn finish_returns_what_is_pending() {
        let mut a = LineAssembler::new();
        assert_eq!(a.finish(), None);
        assert_eq!(a.push("\"\"\"open"), None);
        assert_eq!(a.push("more"), None);
        assert_eq!(
            a.finish(),
            Some(("open\nmore".into(), "an unclosed \"\"\" block"))
        );
        assert!(!a.pending());
        assert_eq!(a.push("tail\\"), None);
        assert_eq!(a.finish(), Some(("tail".into(), "a line ending with \\")));
    }

    #[test]
    fn clear_drops_pending() {
        let mut a = LineAssembler::new();
        assert_eq!(a.push("abc\\"), None);
        assert!(a.pending());
        a.clear();
        assert!(!a.pending());
        assert_eq!(a.push("new").as_deref(), Some("new"));
    }
}
