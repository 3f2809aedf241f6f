//! A bound on runs of digits in JSON output: at most [`MAX_DIGIT_RUN`] ASCII digits in a row.
//!
//! llguidance's JSON numbers have no length bound (a `"type": "number"` with a range still
//! allows `25.5000000…` forever), and small models do loop on digits until `max_tokens` cuts
//! the JSON off: 4 of 50 Gemma 3 answers to a weather schema did. llama.cpp's schema
//! converter bounds integral and fractional parts to 16 digits each; this does the same at
//! the token level: a token whose leading digits would make the current run longer than 16
//! is masked out — unless the grammar allows nothing else (a pattern that demands digits),
//! so no output the grammar requires is ever blocked, and every output stays valid.

use llguidance::toktrie::SimpleVob;

/// The longest run of consecutive digits JSON output may have (llama.cpp's bound per part of
/// a number; beyond it an f64 holds no more precision anyway).
pub const MAX_DIGIT_RUN: u32 = 16;

/// Per token: how many ASCII digits it starts with, whether it is all digits, how many it
/// ends with. Tokens that start with a digit are listed for the mask filter.
#[derive(Debug)]
pub struct DigitTable {
    lead: Vec<u8>,
    trail: Vec<u8>,
    all_digits: Vec<bool>,
    /// Ids of tokens that start with a digit.
    digit_led: Vec<u32>,
}

impl DigitTable {
    /// The table of `words` (each token's bytes).
    pub fn new(words: &[Vec<u8>]) -> DigitTable {
        let count = |it: &mut dyn Iterator<Item = &u8>| {
            it.take_while(|b| b.is_ascii_digit()).count().min(255) as u8
        };
        let lead: Vec<u8> = words.iter().map(|w| count(&mut w.iter())).collect();
        let trail: Vec<u8> = words.iter().map(|w| count(&mut w.iter().rev())).collect();
        let all_digits = words
            .iter()
            .map(|w| !w.is_empty() && w.iter().all(u8::is_ascii_digit))
            .collect();
        let digit_led = (0..words.len() as u32)
            .filter(|&i| lead[i as usize] > 0)
            .collect();
        DigitTable {
            lead,
            trail,
            all_digits,
            digit_led,
        }
    }

    /// The digit run after `run` digits are followed by `token`.
    pub fn next_run(&self, run: u32, token: u32) -> u32 {
        let t = token as usize;
        if t >= self.lead.len() {
            return 0;
        }
        if self.all_digits[t] {
            run + self.lead[t] as u32
        } else {
            self.trail[t] as u32
        }
    }

    /// Clear from `mask` the tokens that would make a run of `run` digits longer than
    /// [`MAX_DIGIT_RUN`], unless that would leave nothing allowed (then `mask` is unchanged).
    pub fn cap(&self, run: u32, mask: &mut SimpleVob) {
        let over = |i: u32| run + self.lead[i as usize] as u32 > MAX_DIGIT_RUN;
        let mut cleared = Vec::new();
        for &i in &self.digit_led {
            if (i as usize) < mask.len() && over(i) && mask.is_allowed(i) {
                mask.disallow_token(i);
                cleared.push(i);
            }
        }
        if !cleared.is_empty() && mask.is_zero() {
            for i in cleared {
                mask.allow_token(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DigitTable {
        let words: Vec<Vec<u8>> = ["0", "12", "345", "a1", "7b", ".", "\u{ff}<x>"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        DigitTable::new(&words)
    }

    #[test]
    fn runs_follow_the_tokens() {
        let t = table();
        assert_eq!(t.next_run(0, 1), 2); // "12"
        assert_eq!(t.next_run(2, 2), 5); // "345" continues the run
        assert_eq!(t.next_run(5, 3), 1); // "a1": a new run of 1
        assert_eq!(t.next_run(5, 4), 0); // "7b" ends it
        assert_eq!(t.next_run(5, 5), 0);
        assert_eq!(t.next_run(5, 99), 0);
    }

    #[test]
    fn long_runs_are_cut_unless_nothing_else_is_allowed() {
        let t = table();
        let mut mask = SimpleVob::alloc(7);
        for i in 0..7 {
            mask.allow_token(i);
        }
        // 14 digits so far: "0" (15), "12" (16) and "7b" (15) may follow, "345" (17) may not…
        t.cap(14, &mut mask);
        let allowed: Vec<u32> = (0..7).filter(|&i| mask.is_allowed(i)).collect();
        assert_eq!(allowed, vec![0, 1, 3, 4, 5, 6]);
        // …and at 16 no digit may follow. Unless only digits are allowed: then all stay.
        let mut digits_only = SimpleVob::alloc(7);
        digits_only.allow_token(2);
        t.cap(16, &mut digits_only);
        assert!(digits_only.is_allowed(2));
    }
}
