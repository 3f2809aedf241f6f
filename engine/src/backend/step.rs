//! One step of a backend: the tokens it evaluates, each with its position and the sequence
//! (KV slot) it belongs to, and the rows of the output a graph that selects rows returns. The
//! rules every backend relies on are checked once here ([`Step::validate`]).

use super::BackendError;

/// The inputs of one [`super::Backend::run`]: token `i` is `tokens[i]` at `positions[i]` of
/// sequence `seqs[i]` (`seqs` empty: every token is of sequence 0). A sequence's tokens are contiguous in the step, at increasing
/// positions; `out_rows` (increasing, each `< tokens.len()`) names the rows a graph built with
/// [`crate::graph::OutputRows::Rows`] returns (other graphs ignore it).
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// Token ids.
    pub tokens: &'a [u32],
    /// Position of each token in its sequence.
    pub positions: &'a [i32],
    /// Sequence (KV slot) of each token; empty for sequence 0 alone.
    pub seqs: &'a [u32],
    /// Rows of the step the output keeps, for graphs that select rows.
    pub out_rows: &'a [u32],
}

impl<'a> Step<'a> {
    /// A step of sequence 0 alone (every caller before sequences existed): `tokens` at
    /// `positions`, no rows selected.
    pub fn single(tokens: &'a [u32], positions: &'a [i32]) -> Step<'a> {
        Step {
            tokens,
            positions,
            seqs: &[],
            out_rows: &[],
        }
    }

    /// Tokens in the step.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The one sequence every token belongs to, or `None` when the step mixes sequences (or
    /// is empty).
    pub fn only_seq(&self) -> Option<u32> {
        if self.seqs.is_empty() {
            return (!self.tokens.is_empty()).then_some(0);
        }
        let first = *self.seqs.first()?;
        self.seqs.iter().all(|&s| s == first).then_some(first)
    }

    /// The step's sequence groups in order: `(sequence, token range)` for each run of
    /// tokens of one sequence.
    pub fn groups(&self) -> impl Iterator<Item = (u32, std::ops::Range<usize>)> + '_ {
        let mut start = 0;
        let n = self.tokens.len();
        std::iter::from_fn(move || {
            if self.seqs.is_empty() {
                let r = start..n;
                start = n;
                return (!r.is_empty()).then_some((0, r));
            }
            let s = *self.seqs.get(start)?;
            let len = self.seqs[start..].iter().take_while(|&&x| x == s).count();
            let r = start..start + len;
            start += len;
            Some((s, r))
        })
    }

    /// Fails with [`BackendError::InvalidStep`] unless the step keeps the rules: as many
    /// positions and sequences as tokens, every sequence `< n_seq`, each sequence's tokens
    /// contiguous at non-negative increasing positions, `out_rows` increasing and inside the
    /// step.
    pub fn validate(&self, n_seq: usize) -> Result<(), BackendError> {
        let n = self.tokens.len();
        let bad = |m: String| Err(BackendError::InvalidStep(m));
        if self.positions.len() != n || !(self.seqs.is_empty() || self.seqs.len() == n) {
            return bad(format!(
                "a step of {n} tokens has {} positions and {} sequence ids",
                self.positions.len(),
                self.seqs.len()
            ));
        }
        if let Some(&s) = self.seqs.iter().find(|&&s| s as usize >= n_seq) {
            return bad(format!(
                "sequence {s} is out of range (the backend has {n_seq} sequence slots)"
            ));
        }
        if let Some(&p) = self.positions.iter().find(|&&p| p < 0) {
            return bad(format!("position {p} is negative"));
        }
        // (Checked without allocating: decode steps run this on every token.)
        for (s, r) in self.groups() {
            if self.seqs[..r.start].contains(&s) {
                return bad(format!(
                    "the tokens of sequence {s} are not contiguous in the step"
                ));
            }
            if let Some(w) = self.positions[r].windows(2).find(|w| w[1] <= w[0]) {
                return bad(format!(
                    "positions of sequence {s} must increase ({} then {})",
                    w[0], w[1]
                ));
            }
        }
        if let Some(w) = self.out_rows.windows(2).find(|w| w[1] <= w[0]) {
            return bad(format!(
                "output rows must increase ({} then {})",
                w[0], w[1]
            ));
        }
        if let Some(&r) = self.out_rows.iter().find(|&&r| r as usize >= n) {
            return bad(format!("output row {r} is outside the step of {n} tokens"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step<'a>(t: &'a [u32], p: &'a [i32], s: &'a [u32], o: &'a [u32]) -> Step<'a> {
        Step {
            tokens: t,
            positions: p,
            seqs: s,
            out_rows: o,
        }
    }

    #[test]
    fn groups_follow_the_sequences() {
        let s = step(&[1, 2, 3, 4], &[5, 6, 0, 9], &[1, 1, 0, 2], &[1, 3]);
        let g: Vec<_> = s.groups().collect();
        assert_eq!(g, vec![(1, 0..2), (0, 2..3), (2, 3..4)]);
        assert!(s.validate(3).is_ok());
        assert_eq!(s.only_seq(), None);
        assert_eq!(step(&[1, 2], &[0, 1], &[2, 2], &[]).only_seq(), Some(2));
        let single = Step::single(&[1, 2], &[0, 1]);
        assert_eq!(single.groups().collect::<Vec<_>>(), vec![(0, 0..2)]);
        assert_eq!(single.only_seq(), Some(0));
    }

    #[test]
    fn broken_rules_are_invalid_steps() {
        let msg = |s: Step<'_>, n_seq: usize| match s.validate(n_seq) {
            Err(BackendError::InvalidStep(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = msg(step(&[1], &[0], &[2], &[]), 2);
        assert!(m.contains("sequence 2 is out of range"), "{m}");
        let m = msg(step(&[1, 2], &[3, 3], &[0, 0], &[]), 1);
        assert!(m.contains("must increase"), "{m}");
        let m = msg(step(&[1, 2, 3], &[0, 0, 1], &[0, 1, 0], &[]), 2);
        assert!(m.contains("not contiguous"), "{m}");
        let m = msg(step(&[1, 2], &[0, 1], &[0, 0], &[1, 1]), 1);
        assert!(m.contains("output rows must increase"), "{m}");
        let m = msg(step(&[1, 2], &[0, 1], &[0, 0], &[2]), 1);
        assert!(m.contains("outside the step"), "{m}");
        let m = msg(step(&[1, 2], &[0], &[0, 0], &[]), 1);
        assert!(m.contains("1 positions"), "{m}");
        let m = msg(step(&[1], &[-1], &[0], &[]), 1);
        assert!(m.contains("negative"), "{m}");
        // Different sequences may restart positions.
        assert!(step(&[1, 2], &[4, 0], &[0, 1], &[]).validate(2).is_ok());
    }
}
