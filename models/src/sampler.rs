//! Samplers: greedy, temperature, top-k, top-p, min-p, repetition/frequency/presence penalties
//! and a seeded RNG, applied as one chain in llama.cpp's default order:
//!
//! penalties → top-k → top-p → min-p → temperature → draw
//!
//! With a temperature of 0 (or less) the chain is penalties → argmax. Top-p and min-p look at
//! the probabilities before the temperature is applied, as llama.cpp's chain does.
//!
//! The sampler keeps its scratch buffers, so after the first call for a vocabulary size
//! [`Sampler::sample`] allocates nothing. The caller tells it which tokens were chosen (or fed
//! as the prompt) with [`Sampler::accept`]; the penalties look at the last `penalty_last_n`.

use std::collections::VecDeque;

use crate::constraint::TokenMask;

/// Sampling settings. The defaults are llama.cpp's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerParams {
    /// Temperature; `0` (or less, refused by [`validate`](Self::validate)) means greedy.
    pub temp: f32,
    /// Keep the `top_k` most likely tokens; `0` disables.
    pub top_k: i32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; `1`
    /// disables.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` × the most likely one's; `0` disables.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this; `1` disables.
    pub repeat_penalty: f32,
    /// Subtract `frequency_penalty × count` from the logit of each recent token.
    pub frequency_penalty: f32,
    /// Subtract `presence_penalty` from the logit of each token seen recently.
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at; `0` disables them, `-1` means every token
    /// accepted since the last [`Sampler::reset`] (the whole context).
    pub penalty_last_n: i32,
    /// RNG seed; `u64::MAX` picks a random one ([`Sampler::seed`] tells which).
    pub seed: u64,
}

/// The seed value that asks for a random seed.
pub const RANDOM_SEED: u64 = u64::MAX;

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: RANDOM_SEED,
        }
    }
}

impl SamplerParams {
    /// Greedy decoding (argmax), no penalties.
    pub fn greedy() -> Self {
        SamplerParams {
            temp: 0.0,
            ..Default::default()
        }
    }

    /// Check every value is in range; the message names the option as the CLI spells it.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("--{name} {v} must be a finite number"))
            }
        };
        finite("temp", self.temp)?;
        if self.temp < 0.0 {
            return Err(format!("--temp {} must be >= 0 (0 = greedy)", self.temp));
        }
        if self.top_k < 0 {
            return Err(format!(
                "--top-k {} must be >= 0 (0 = disabled)",
                self.top_k
            ));
        }
        finite("top-p", self.top_p)?;
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!(
                "--top-p {} must be in [0, 1] (1 = disabled)",
                self.top_p
            ));
        }
        finite("min-p", self.min_p)?;
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!(
                "--min-p {} must be in [0, 1] (0 = disabled)",
                self.min_p
            ));
        }
        finite("repeat-penalty", self.repeat_penalty)?;
        if self.repeat_penalty <= 0.0 {
            return Err(format!(
                "--repeat-penalty {} must be > 0 (1 = disabled)",
                self.repeat_penalty
            ));
        }
        for (name, v) in [
            ("frequency-penalty", self.frequency_penalty),
            ("presence-penalty", self.presence_penalty),
        ] {
            finite(name, v)?;
            if !(-2.0..=2.0).contains(&v) {
                return Err(format!("--{name} {v} must be in [-2, 2] (0 = disabled)"));
            }
        }
        if self.penalty_last_n < -1 {
            return Err(format!(
                "--repeat-last-n {} must be >= -1 (-1 = whole context, 0 = disabled)",
                self.penalty_last_n
            ));
        }
        Ok(())
    }

    fn penalties_active(&self) -> bool {
        self.penalty_last_n != 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and plenty for sampling.
#[derive(Clone, Debug)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed from the clock and the process's hash randomness (no dependency needed).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let s = h.finish();
    if s == RANDOM_SEED { 0 } else { s }
}

/// One candidate token: id and its current logit.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    id: u32,
    logit: f32,
}

/// The sampler chain with its state: recent tokens, RNG and scratch buffers.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplerParams,
    seed: u64,
    rng: Rng,
    /// Accepted tokens the penalties look at (the last `penalty_last_n`).
    history: VecDeque<u32>,
    /// Scratch: candidates of the current call.
    cand: Vec<Candidate>,
    /// Scratch: per-token counts over the history, all zero between calls.
    counts: Vec<u32>,
    /// Token ids that are never sampled (their logits count as -inf), e.g. the
    /// end-of-generation ids under `--ignore-eos`.
    banned: Vec<u32>,
}

impl Sampler {
    /// A sampler with `params` (check them with [`SamplerParams::validate`] first; values out
    /// of range are treated as disabled rather than trusted).
    pub fn new(params: SamplerParams) -> Sampler {
        let seed = if params.seed == RANDOM_SEED {
            random_seed()
        } else {
            params.seed
        };
        let cap = params.penalty_last_n.clamp(0, 4096) as usize;
        Sampler {
            params,
            seed,
            rng: Rng::new(seed),
            history: VecDeque::with_capacity(cap),
            cand: Vec::new(),
            counts: Vec::new(),
            banned: Vec::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// The seed in use (the random one picked when the parameters asked for one).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Record a token that is now part of the context (a sampled one, or a prompt token when
    /// the penalties should see the prompt, as llama.cpp does).
    pub fn accept(&mut self, token: u32) {
        let n = self.params.penalty_last_n;
        if n == 0 {
            return;
        }
        if n > 0 && self.history.len() == n as usize {
            self.history.pop_front();
        }
        self.history.push_back(token);
    }

    /// Never sample the tokens `ids` from now on (replaces an earlier list; ids beyond the
    /// vocabulary are ignored). This is llama.cpp's `--ignore-eos` when `ids` are the
    /// end-of-generation tokens: a logit bias of minus infinity.
    pub fn ban(&mut self, ids: &[u32]) {
        self.banned.clear();
        self.banned.extend_from_slice(ids);
    }

    /// The tokens [`Self::ban`] excluded.
    pub fn banned(&self) -> &[u32] {
        &self.banned
    }

    /// Forget the accepted tokens and restart the RNG from the same seed.
    pub fn reset(&mut self) {
        self.history.clear();
        self.rng = Rng::new(self.seed);
    }

    /// Pick the next token from `logits` (one per vocabulary entry).
    ///
    /// # Panics
    /// When `logits` is empty.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_masked(logits, None)
    }

    /// [`Self::sample`] among the tokens `mask` allows only (a grammar's next tokens; see
    /// [`crate::constraint`]): the mask applies before every other stage, so penalties, top-k,
    /// top-p and min-p see only allowed tokens. If the mask allows nothing that is also not
    /// banned, the most likely allowed token is returned.
    ///
    /// # Panics
    /// When `logits` is empty.
    pub fn sample_masked(&mut self, logits: &[f32], mask: Option<&TokenMask>) -> u32 {
        assert!(!logits.is_empty(), "sample: no logits");
        let p = self.params;
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| Candidate {
                id: i as u32,
                // NaN never wins.
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
            }));
        for &b in &self.banned {
            if let Some(c) = self.cand.get_mut(b as usize) {
                c.logit = f32::NEG_INFINITY;
            }
        }
        if p.penalties_active() {
            self.apply_penalties();
        }
        if let Some(mask) = mask {
            // Penalties index candidates by id, so the mask filters after them; the order of
            // the two does not change which tokens remain or their logits.
            self.cand
                .retain(|c| mask.allows(c.id) && c.logit > f32::NEG_INFINITY);
            if self.cand.is_empty() {
                return most_likely_allowed(logits, mask);
            }
        }
        if p.temp.is_nan() || p.temp <= 0.0 {
            return argmax(&self.cand);
        }

        let n = self.cand.len();
        let mut sorted = false;
        if p.top_k > 0 && (p.top_k as usize) < n {
            let k = p.top_k as usize;
            self.cand.select_nth_unstable_by(k - 1, by_logit_desc);
            self.cand.truncate(k);
            self.cand.sort_unstable_by(by_logit_desc);
            sorted = true;
        }
        if p.top_p < 1.0 {
            if !sorted {
                self.cand.sort_unstable_by(by_logit_desc);
            }
            self.top_p(p.top_p);
        }
        if p.min_p > 0.0 {
            self.min_p(p.min_p);
        }
        for c in &mut self.cand {
            c.logit /= p.temp;
        }
        self.draw()
    }

    /// llama.cpp's penalties over the history: repeat (divide positive logits, multiply
    /// negative ones), then frequency × count and presence.
    fn apply_penalties(&mut self) {
        let p = self.params;
        let n_vocab = self.cand.len();
        if self.counts.len() < n_vocab {
            self.counts.resize(n_vocab, 0);
        }
        for &t in &self.history {
            if let Some(c) = self.counts.get_mut(t as usize) {
                *c += 1;
            }
        }
        for &t in &self.history {
            let t = t as usize;
            if t >= n_vocab || self.counts[t] == 0 {
                continue; // out of range, or already penalised
            }
            let count = self.counts[t];
            self.counts[t] = 0;
            let l = &mut self.cand[t].logit;
            if *l <= 0.0 {
                *l *= p.repeat_penalty;
            } else {
                *l /= p.repeat_penalty;
            }
            *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }

    /// Keep the shortest prefix (of candidates sorted by logit) whose probability reaches `top_p`.
    fn top_p(&mut self, top_p: f32) {
        let max = self.cand[0].logit;
        let total: f64 = self
            .cand
            .iter()
            .map(|c| ((c.logit - max) as f64).exp())
            .sum();
        let mut cum = 0.0;
        let mut keep = self.cand.len();
        for (i, c) in self.cand.iter().enumerate() {
            cum += ((c.logit - max) as f64).exp() / total;
            if cum >= top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        self.cand.truncate(keep.max(1));
    }

    /// Keep candidates whose probability is at least `min_p` times the largest.
    fn min_p(&mut self, min_p: f32) {
        let max = self
            .cand
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        let threshold = max + min_p.ln();
        // Keeps order; the most likely token always passes (ln(min_p) <= 0).
        self.cand.retain(|c| c.logit >= threshold);
    }

    /// Softmax over the candidates and one draw from the RNG.
    fn draw(&mut self) -> u32 {
        let max = self
            .cand
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return self.cand[0].id;
        }
        let total: f64 = self
            .cand
            .iter()
            .map(|c| ((c.logit - max) as f64).exp())
            .sum();
        let target = self.rng.next_f64() * total;
        let mut cum = 0.0;
        let mut last = self.cand[0].id;
        for c in &self.cand {
            let w = ((c.logit - max) as f64).exp();
            if w == 0.0 {
                continue;
            }
            cum += w;
            last = c.id;
            if target < cum {
                return c.id;
            }
        }
        last
    }
}

fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// The allowed token with the largest logit (the lowest id among equals; NaN counts as minus
/// infinity), or the first allowed one.
fn most_likely_allowed(logits: &[f32], mask: &TokenMask) -> u32 {
    let mut best: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        let l = if l.is_nan() { f32::NEG_INFINITY } else { l };
        if mask.allows(i as u32) && best.is_none_or(|(_, b)| l > b) {
            best = Some((i as u32, l));
        }
    }
    best.map(|(i, _)| i).unwrap_or(0)
}

/// Index of the largest logit (the lowest id among equals).
fn argmax(cand: &[Candidate]) -> u32 {
    let mut best = cand[0];
    for &c in &cand[1..] {
        if c.logit > best.logit {
            best = c;
        }
    }
    best.id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temp: f32, top_k: i32, top_p: f32, min_p: f32) -> SamplerParams {
        SamplerParams {
            temp,
            top_k,
            top_p,
            min_p,
            seed: 1234,
            ..Default::default()
        }
    }

    /// Logits whose softmax is exactly `probs`.
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn a_mask_applies_before_every_other_stage() {
        // Token 0 holds almost all the mass; the mask allows 2 and 3 only.
        let logits = logits_of(&[0.90, 0.05, 0.03, 0.02]);
        let mask = TokenMask::from_ids(4, &[2, 3]);
        let mut greedy = Sampler::new(SamplerParams::greedy());
        assert_eq!(greedy.sample_masked(&logits, Some(&mask)), 2);
        // top-k 1 and min-p 0.5 look at allowed tokens only: 2 always wins, never 0.
        let mut s = Sampler::new(params(1.0, 1, 1.0, 0.0));
        for _ in 0..50 {
            assert_eq!(s.sample_masked(&logits, Some(&mask)), 2);
        }
        // At temperature 1 both allowed tokens come out, nothing else.
        let mut s = Sampler::new(params(1.0, 0, 1.0, 0.0));
        let mut seen = [false; 4];
        for _ in 0..400 {
            seen[s.sample_masked(&logits, Some(&mask)) as usize] = true;
        }
        assert_eq!(seen, [false, false, true, true]);
        // Allowed but banned (minus infinity) everywhere: the most likely allowed token.
        let mut banned = Sampler::new(params(1.0, 0, 1.0, 0.0));
        banned.ban(&[2, 3]);
        assert_eq!(banned.sample_masked(&logits, Some(&mask)), 2);
        // Without the mask, token 0 wins greedily: the mask is what changed it.
        assert_eq!(greedy.sample(&logits), 0);
    }

    /// Which tokens come out of `n` draws.
    fn support(p: SamplerParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p);
        let mut seen = vec![false; logits.len()];
        for _ in 0..n {
            seen[s.sample(logits) as usize] = true;
        }
        (0..logits.len() as u32)
            .filter(|&i| seen[i as usize])
            .collect()
    }

    /// Frequencies of each token over `n` draws.
    fn freqs(p: SamplerParams, logits: &[f32], n: usize) -> Vec<f64> {
        let mut s = Sampler::new(p);
        let mut c = vec![0usize; logits.len()];
        for _ in 0..n {
            c[s.sample(logits) as usize] += 1;
        }
        c.iter().map(|&x| x as f64 / n as f64).collect()
    }

    #[test]
    fn defaults_are_llama_cpp_s() {
        let d = SamplerParams::default();
        assert_eq!(
            (
                d.temp,
                d.top_k,
                d.top_p,
                d.min_p,
                d.repeat_penalty,
                d.penalty_last_n
            ),
            (0.8, 40, 0.95, 0.05, 1.0, 64)
        );
        assert_eq!(d.seed, u64::MAX);
        assert!(d.validate().is_ok());
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
        assert_eq!(s.sample(&[-5.0, -4.0, -4.5]), 1);
        // Ties go to the lowest id; NaN never wins.
        assert_eq!(s.sample(&[1.0, 2.0, 2.0]), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.5, 0.2]), 1);
        // A big random vector.
        let mut rng = Rng::new(7);
        let v: Vec<f32> = (0..50_000).map(|_| rng.next_f64() as f32).collect();
        let best = (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        assert_eq!(s.sample(&v), best as u32);
    }

    #[test]
    fn nan_and_infinite_logits_never_panic() {
        // Mutated or broken weights give such logits: every sampler setting must still return
        // an id of the vocabulary, and an infinite logit is the most likely token.
        let configs = [
            SamplerParams::greedy(),
            params(0.8, 40, 0.95, 0.05),
            params(1.0, 1, 1.0, 0.0),
            params(0.01, 0, 0.5, 0.0),
            params(2.0, 0, 1.0, 0.9),
            SamplerParams {
                repeat_penalty: 1.3,
                frequency_penalty: 0.5,
                presence_penalty: 0.5,
                ..params(0.8, 40, 0.95, 0.05)
            },
        ];
        let (inf, nan) = (f32::INFINITY, f32::NAN);
        let cases: [(&[f32], Option<u32>); 7] = [
            (&[1.0, inf, nan, -inf], Some(1)),
            (&[nan, nan, nan], None),
            (&[inf, inf, 0.0], None),
            (&[-inf, -inf], None),
            (&[f32::MAX, -f32::MAX, 0.0], Some(0)),
            (&[nan, -inf, 3.0], Some(2)),
            (&[0.5], Some(0)),
        ];
        for p in configs {
            for (logits, want) in cases {
                let mut s = Sampler::new(p);
                for t in [0, 1, 1, 2] {
                    s.accept(t);
                }
                for _ in 0..20 {
                    let id = s.sample(logits);
                    assert!((id as usize) < logits.len(), "{p:?} {logits:?}: {id}");
                    if let Some(w) = want {
                        assert_eq!(id, w, "{p:?} {logits:?}");
                    }
                    if logits.iter().filter(|l| **l == inf).count() > 0 {
                        assert_eq!(logits[id as usize], inf, "{p:?} {logits:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn banned_tokens_are_never_sampled() {
        // Token 3 dominates; once banned, greedy picks the runner-up and sampling never
        // returns it, whatever the chain.
        let logits = [0.0, 1.0, 2.0, 50.0, 0.5];
        let configs = [
            SamplerParams::greedy(),
            params(1.0, 0, 1.0, 0.0),
            params(0.8, 40, 0.95, 0.05),
        ];
        for p in configs {
            let mut s = Sampler::new(p);
            s.ban(&[3, 99]);
            assert_eq!(s.banned(), &[3, 99]);
            for _ in 0..50 {
                assert_ne!(s.sample(&logits), 3, "{p:?}");
            }
            s.ban(&[]);
            assert_eq!(s.sample(&logits), 3, "{p:?}: the ban is lifted");
        }
        let mut g = Sampler::new(SamplerParams::greedy());
        g.ban(&[3]);
        assert_eq!(g.sample(&logits), 2);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = params(1.0, 0, 1.0, 0.0);
        let run = || {
            let mut s = Sampler::new(p);
            (0..200).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
        };
        let a = run();
        assert_eq!(a, run());
        let mut other = p;
        other.seed = 99;
        let mut s = Sampler::new(other);
        let b: Vec<u32> = (0..200).map(|_| s.sample(&logits)).collect();
        assert_ne!(a, b);
        // reset restarts the sequence.
        let mut s = Sampler::new(p);
        let first: Vec<u32> = (0..20).map(|_| s.sample(&logits)).collect();
        s.reset();
        let again: Vec<u32> = (0..20).map(|_| s.sample(&logits)).collect();
        assert_eq!(first, again);
        // A random seed is reported and is not the sentinel.
        let r = Sampler::new(SamplerParams::default());
        assert_ne!(r.seed(), RANDOM_SEED);
    }

    #[test]
    fn draws_follow_the_distribution() {
        let probs = [0.5, 0.3, 0.2];
        let f = freqs(params(1.0, 0, 1.0, 0.0), &logits_of(&probs), 20_000);
        for (a, b) in f.iter().zip(probs) {
            assert!((a - b as f64).abs() < 0.02, "{f:?}");
        }
        // Temperature 0.5 squares the odds: 25:9:4.
        let f = freqs(params(0.5, 0, 1.0, 0.0), &logits_of(&probs), 20_000);
        let want = [25.0 / 38.0, 9.0 / 38.0, 4.0 / 38.0];
        for (a, b) in f.iter().zip(want) {
            assert!((a - b).abs() < 0.02, "{f:?}");
        }
    }

    #[test]
    fn top_k_keeps_the_k_best() {
        let probs = [0.1, 0.4, 0.05, 0.3, 0.15];
        let l = logits_of(&probs);
        assert_eq!(support(params(1.0, 2, 1.0, 0.0), &l, 2000), [1, 3]);
        assert_eq!(support(params(1.0, 1, 1.0, 0.0), &l, 200), [1]);
        // 0 disables, and k >= n keeps everything.
        assert_eq!(support(params(1.0, 0, 1.0, 0.0), &l, 5000), [0, 1, 2, 3, 4]);
        assert_eq!(support(params(1.0, 9, 1.0, 0.0), &l, 5000), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Sorted: 0.4 (1), 0.3 (3), 0.15 (4), 0.1 (0), 0.05 (2).
        let l = logits_of(&[0.1, 0.4, 0.05, 0.3, 0.15]);
        // 0.4 + 0.3 = 0.7 >= 0.69: two tokens.
        assert_eq!(support(params(1.0, 0, 0.69, 0.0), &l, 2000), [1, 3]);
        // 0.71 needs the third.
        assert_eq!(support(params(1.0, 0, 0.71, 0.0), &l, 4000), [1, 3, 4]);
        // Tiny p keeps the best one.
        assert_eq!(support(params(1.0, 0, 0.01, 0.0), &l, 200), [1]);
        // Kept tokens are renormalised: 0.4/0.7 and 0.3/0.7.
        let f = freqs(params(1.0, 0, 0.69, 0.0), &l, 20_000);
        assert!((f[1] - 4.0 / 7.0).abs() < 0.02, "{f:?}");
        // After top-k: top-k 3 then top-p 0.8 of the renormalised (0.47, 0.35, 0.18).
        assert_eq!(support(params(1.0, 3, 0.8, 0.0), &l, 4000), [1, 3]);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let l = logits_of(&[0.1, 0.4, 0.05, 0.3, 0.15]);
        // Threshold 0.5 × 0.4 = 0.2: keeps 0.4 and 0.3.
        assert_eq!(support(params(1.0, 0, 1.0, 0.5), &l, 2000), [1, 3]);
        // Threshold 0.24 × 0.4 = 0.096: keeps 0.1 as well.
        assert_eq!(support(params(1.0, 0, 1.0, 0.24), &l, 5000), [0, 1, 3, 4]);
        assert_eq!(support(params(1.0, 0, 1.0, 1.0), &l, 200), [1]);
    }

    #[test]
    fn truncation_ignores_temperature() {
        // min-p sees the untempered probabilities, so a high temperature does not widen it.
        let l = logits_of(&[0.1, 0.4, 0.05, 0.3, 0.15]);
        assert_eq!(support(params(5.0, 0, 1.0, 0.5), &l, 4000), [1, 3]);
    }

    #[test]
    fn repeat_penalty() {
        let p = SamplerParams {
            repeat_penalty: 2.0,
            ..SamplerParams::greedy()
        };
        let mut s = Sampler::new(p);
        let l = [3.0, 2.0, -1.0, -1.5];
        assert_eq!(s.sample(&l), 0);
        s.accept(0); // 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&l), 1);
        s.accept(1); // 2.0 / 2 = 1.0 < 1.5
        assert_eq!(s.sample(&l), 0);
        // Negative logits are multiplied: -1.0 × 2 = -2.0 < -1.5.
        let mut s = Sampler::new(p);
        s.accept(2);
        assert_eq!(s.sample(&[-1.0, -9.0, -1.0, -1.5]), 0);
        assert_eq!(s.sample(&[-9.0, -9.0, -1.0, -1.5]), 3);
    }

    #[test]
    fn frequency_and_presence_penalties() {
        let p = SamplerParams {
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..SamplerParams::greedy()
        };
        let mut s = Sampler::new(p);
        for t in [0, 0, 0, 1] {
            s.accept(t);
        }
        // 0: 3.0 - 3×0.5 - 0.25 = 1.25; 1: 2.0 - 0.5 - 0.25 = 1.25; 2: 1.3.
        assert_eq!(s.sample(&[3.0, 2.0, 1.3]), 2);
        assert_eq!(s.sample(&[3.0, 2.0, 1.2]), 0);
    }

    #[test]
    fn penalties_only_see_the_last_n() {
        let p = SamplerParams {
            repeat_penalty: 10.0,
            penalty_last_n: 2,
            ..SamplerParams::greedy()
        };
        let mut s = Sampler::new(p);
        let l = [3.0, 2.0, 1.0];
        s.accept(0);
        assert_eq!(s.sample(&l), 1);
        s.accept(2);
        s.accept(2); // token 0 has left the window
        assert_eq!(s.sample(&l), 0);
        s.reset();
        assert_eq!(s.sample(&l), 0);
        // -1: everything since reset; 0: disabled.
        let mut s = Sampler::new(SamplerParams {
            penalty_last_n: -1,
            ..p
        });
        s.accept(0);
        for _ in 0..500 {
            s.accept(2);
        }
        assert_eq!(s.sample(&l), 1);
        let mut s = Sampler::new(SamplerParams {
            penalty_last_n: 0,
            ..p
        });
        s.accept(0);
        assert_eq!(s.sample(&l), 0);
    }

    #[test]
    fn penalties_come_before_truncation() {
        // Token 0 dominates until penalised; then top-k 1 must pick token 1.
        let p = SamplerParams {
            repeat_penalty: 4.0,
            ..params(1.0, 1, 1.0, 0.0)
        };
        let mut s = Sampler::new(p);
        s.accept(0);
        assert_eq!(s.sample(&[4.0, 2.0, 0.0]), 1);
    }

    #[test]
    fn validation_names_the_option() {
        let bad = |f: fn(&mut SamplerParams)| {
            let mut p = SamplerParams::default();
            f(&mut p);
            p.validate().unwrap_err()
        };
        assert!(bad(|p| p.temp = -0.1).contains("--temp"));
        assert!(bad(|p| p.top_p = 7.0).contains("--top-p 7"));
        assert!(bad(|p| p.top_k = -3).contains("--top-k -3"));
        assert!(bad(|p| p.min_p = 1.5).contains("--min-p"));
        assert!(bad(|p| p.repeat_penalty = 0.0).contains("--repeat-penalty"));
        assert!(bad(|p| p.frequency_penalty = 3.0).contains("--frequency-penalty"));
        assert!(bad(|p| p.presence_penalty = f32::NAN).contains("--presence-penalty"));
        assert!(bad(|p| p.penalty_last_n = -2).contains("--repeat-last-n"));
        let ok = SamplerParams {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            temp: 0.0,
            penalty_last_n: -1,
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn no_allocation_after_the_first_call() {
        let logits: Vec<f32> = (0..1000).map(|i| (i % 17) as f32 * 0.1).collect();
        let mut s = Sampler::new(SamplerParams {
            repeat_penalty: 1.1,
            top_k: 0,
            seed: 5,
            ..Default::default()
        });
        s.sample(&logits);
        let (cand, counts) = (s.cand.as_ptr(), s.counts.as_ptr());
        for i in 0..100 {
            let t = s.sample(&logits);
            s.accept(t + i % 3);
        }
        assert_eq!(cand, s.cand.as_ptr());
        assert_eq!(counts, s.counts.as_ptr());
        assert!(s.counts.iter().all(|&c| c == 0));
    }
}
