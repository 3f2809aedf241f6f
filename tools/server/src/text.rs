//! Text out of generated tokens: an incremental UTF-8 decoder that never emits half a
//! character, and a stop-string matcher that holds text back while it may still be the start
//! of a stop string.

/// Turns the byte pieces of tokens into text, keeping an incomplete UTF-8 sequence at the end
/// until its next bytes arrive. Invalid sequences become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Append `bytes`; returns the text now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The first `valid` bytes were just checked to be UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// The text of the bytes still held (an incomplete sequence becomes U+FFFD); empties it.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// Finds stop strings in streamed text. Text that could be the start of a stop string is held
/// back until it is known not to be one.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] lets through.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Text safe to send.
    pub text: String,
    /// A stop string was found: `text` ends right before it and generation should end.
    pub stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Add generated text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Released {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return Released {
                text: std::mem::take(&mut self.held),
                stopped: false,
            };
        }
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s)).min() {
            let mut text = std::mem::take(&mut self.held);
            text.truncate(at);
            return Released {
                text,
                stopped: true,
            };
        }
        let keep = self.partial_suffix();
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        Released {
            text,
            stopped: false,
        }
    }

    /// The text held back (generation ended without a stop string).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of the held text that starts some stop string.
    fn partial_suffix(&self) -> usize {
        let held = &self.held;
        let mut best = 0;
        for stop in &self.stops {
            let longest = stop.len().saturating_sub(1).min(held.len());
            for n in (best + 1..=longest).rev() {
                let start = held.len() - n;
                if held.is_char_boundary(start) && stop.starts_with(&held[start..]) {
                    best = n;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_waits_for_the_rest_of_a_character() {
        let mut u = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(u.push(b"a"), "a");
        assert_eq!(u.push(&e[..1]), "");
        assert_eq!(u.push(&e[1..]), "é");
        assert_eq!(u.push(&[0xff, b'b']), "\u{fffd}b");
        assert_eq!(u.push(&[0xe2, 0x82]), "");
        assert_eq!(u.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_strings_are_held_back_then_cut() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E").text, "hello ");
        let r = m.push("N");
        assert_eq!((r.text.as_str(), r.stopped), ("", false));
        let r = m.push("Dless");
        assert_eq!((r.text.as_str(), r.stopped), ("", true));
    }

    #[test]
    fn a_false_start_is_released() {
        let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(m.push("EN").text, "");
        assert_eq!(m.push("d").text, "ENd");
        assert_eq!(m.push("x\n").text, "x");
        let r = m.push("\nmore");
        assert!(r.stopped);
        assert_eq!(r.text, "");
        let mut m = StopMatcher::new(vec!["stop".into()]);
        assert_eq!(m.push("a st").text, "a ");
        assert_eq!(m.flush(), "st");
    }

    #[test]
    fn the_earliest_stop_wins() {
        let mut m = StopMatcher::new(vec!["cd".into(), "b".into(), String::new()]);
        let r = m.push("abcd");
        assert_eq!((r.text.as_str(), r.stopped), ("a", true));
    }
}
