//! KL divergence for `tessera perplexity`.
//!
//! `--kl-divergence-base FILE` alone saves the log-probabilities of every scored position to
//! FILE. With `--kl-divergence` as well, FILE is read instead and this run is compared with it
//! (the tokens come from FILE, so `-f` is optional): mean KL(base ‖ this) ± its standard error,
//! median/99th percentile/maximum, top-1 agreement and both perplexities — as llama.cpp's KL
//! mode reports them.
//!
//! The base file (all integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `TSKLD001` |
//! | 4 × u32 | `n_vocab`, `n_ctx`, `n_chunks`, `first` (= `n_ctx/2`) |
//! | `n_chunks·n_ctx` × u32 | the tokens of the chunks, as in the text (before BOS replacement) |
//! | per chunk, per scored position (`n_ctx − 1 − first` of them): | |
//! | u32 | argmax of the logits |
//! | f32 | negative log-likelihood of the next token (from f64) |
//! | `n_vocab` × f16 | log-softmax of the logits |
//!
//! Log-probabilities rather than raw logits: f16 is most precise near 0, where the likely
//! tokens — the ones that matter to the divergence — are. A SmolLM2 run at `-c 512` takes
//! 25 MB per chunk, a Gemma 3 one 134 MB.
//!
//! `--kl-divergence` also reads the base files llama.cpp's `llama-perplexity
//! --kl-divergence-base` writes (magic `_logits_`, u32 `n_ctx`, i32 `n_vocab`, i32 `n_chunk`,
//! i32 tokens, then per scored position `2·⌈n_vocab/2⌉ + 4` u16: f32 scale and f32 minimum
//! log-prob, then each token's log-prob quantized as `min + scale·q`), so Tessera can be
//! compared with llama.cpp directly on any model.
//!
//! Either way the divergence is llama.cpp's: `Σ p_base·(log p_base − log p)` over the tokens
//! whose base log-prob is above −16 (the rest are ignored, as llama.cpp does).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use half::f16;
use serde_json::json;

use crate::CliResult;

/// Magic bytes of a KL-divergence base file.
const KLD_MAGIC: &[u8; 8] = b"TSKLD001";
/// Magic bytes of llama.cpp's base file.
const LLAMA_MAGIC: &[u8; 8] = b"_logits_";
/// Base log-probs at or below this are left out of the divergence, as llama.cpp does.
const KL_MIN_LOG_PROB: f64 = -16.0;

/// Which program wrote a base file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseFormat {
    /// Tessera (`TSKLD001`).
    Tessera,
    /// llama.cpp's `llama-perplexity` (`_logits_`).
    Llama,
}

/// Header of a KL-divergence base file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KldHeader {
    /// Vocabulary size of the model that wrote it.
    pub n_vocab: usize,
    /// Context size (tokens per chunk).
    pub n_ctx: usize,
    /// Chunks stored.
    pub n_chunks: usize,
    /// First scored position of a chunk (`n_ctx / 2`).
    pub first: usize,
    /// Who wrote it.
    pub format: BaseFormat,
}

/// Write `v` as a little-endian u32.
fn write_u32(w: &mut impl Write, v: usize) -> std::io::Result<()> {
    w.write_all(&u32::try_from(v).expect("fits in u32").to_le_bytes())
}

/// Read a little-endian u32.
fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Read the header and tokens of a base file (Tessera's or llama.cpp's).
fn read_kld_header(r: &mut impl Read, path: &Path) -> CliResult<(KldHeader, Vec<u32>)> {
    let bad = |what: &str| format!("--kl-divergence-base {}: {what}", path.display());
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| bad("too short to be a base file"))?;
    let hdr = if &magic == KLD_MAGIC {
        let mut h = [0usize; 4];
        for v in &mut h {
            *v = read_u32(r).map_err(|_| bad("truncated header"))? as usize;
        }
        KldHeader {
            n_vocab: h[0],
            n_ctx: h[1],
            n_chunks: h[2],
            first: h[3],
            format: BaseFormat::Tessera,
        }
    } else if &magic == LLAMA_MAGIC {
        let mut h = [0usize; 3];
        for v in &mut h {
            let x = read_u32(r).map_err(|_| bad("truncated header"))?;
            *v = i32::try_from(x).map_err(|_| bad("negative size in the header"))? as usize;
        }
        KldHeader {
            n_ctx: h[0],
            n_vocab: h[1],
            n_chunks: h[2],
            first: h[0] / 2,
            format: BaseFormat::Llama,
        }
    } else {
        return Err(
            bad("neither a tessera nor a llama.cpp KL-divergence base file (bad magic)").into(),
        );
    };
    if hdr.n_ctx < 2 || hdr.first != hdr.n_ctx / 2 || hdr.n_vocab == 0 {
        return Err(bad("inconsistent header").into());
    }
    let n = hdr
        .n_chunks
        .checked_mul(hdr.n_ctx)
        .filter(|&n| n <= 1 << 32)
        .ok_or_else(|| bad("inconsistent header"))?;
    let mut tokens = Vec::new();
    tokens
        .try_reserve_exact(n)
        .map_err(|_| bad("token list too large"))?;
    for _ in 0..n {
        let t = read_u32(r).map_err(|_| bad("truncated token list"))?;
        if t as usize >= hdr.n_vocab {
            return Err(bad(&format!("token {t} is outside the vocabulary")).into());
        }
        tokens.push(t);
    }
    Ok((hdr, tokens))
}

/// What is done with the scored logits besides the perplexity.
pub enum KlMode {
    /// Nothing.
    Off,
    /// Write them to a base file.
    Save(BufWriter<File>),
    /// Compare them with a base file.
    Compare {
        reader: BufReader<File>,
        format: BaseFormat,
        stats: KlStats,
        row: Vec<u8>,
    },
}

/// Running statistics of a KL comparison.
#[derive(Default)]
pub struct KlStats {
    /// KL(base ‖ new) per scored token.
    kld: Vec<f64>,
    /// Scored tokens whose argmax is the same in both runs.
    same_top1: usize,
    /// Sum of the base run's negative log-likelihoods.
    base_nll: f64,
}

/// Save one scored row: argmax, nll, then the log-softmax in f16.
fn save_row(w: &mut impl Write, logits: &[f32], nll: f64, arg: u32, log_z: f64) -> CliResult {
    write_u32(w, arg as usize)?;
    w.write_all(&(nll as f32).to_le_bytes())?;
    let mut buf = Vec::with_capacity(logits.len() * 2);
    for &l in logits {
        buf.extend_from_slice(&f16::from_f64(l as f64 - log_z).to_le_bytes());
    }
    w.write_all(&buf)?;
    Ok(())
}

/// This run's log-prob of each token (`logits[i] − log_z`) against the base's `lp_base(i)`:
/// llama.cpp's divergence over the base log-probs above [`KL_MIN_LOG_PROB`].
fn divergence(logits: &[f32], log_z: f64, lp_base: impl Fn(usize) -> f64) -> f64 {
    let mut kl = 0.0f64;
    for (i, &l) in logits.iter().enumerate() {
        let lp = lp_base(i);
        if lp > KL_MIN_LOG_PROB {
            kl += lp.exp() * (lp - (l as f64 - log_z));
        }
    }
    kl
}

/// Compare one scored row (predicting `next`) with the next row of the base file.
#[allow(clippy::too_many_arguments)]
fn compare_row(
    r: &mut impl Read,
    format: BaseFormat,
    row: &mut Vec<u8>,
    stats: &mut KlStats,
    logits: &[f32],
    arg: u32,
    log_z: f64,
    next: u32,
) -> CliResult {
    let n_vocab = logits.len();
    let (kl, base_arg, base_nll) = match format {
        BaseFormat::Tessera => {
            row.resize(8 + 2 * n_vocab, 0);
            r.read_exact(row)
                .map_err(|e| format!("--kl-divergence-base: file ends early ({e})"))?;
            let base_arg = u32::from_le_bytes(row[0..4].try_into().expect("4 bytes"));
            let base_nll = f32::from_le_bytes(row[4..8].try_into().expect("4 bytes")) as f64;
            let lps = &row[8..];
            let raw = |i: usize| f16::from_le_bytes([lps[2 * i], lps[2 * i + 1]]).to_f64();
            // Renormalise the stored distribution (f16 rounding leaves its sum slightly off 1),
            // so the divergence is that of two true distributions: ≈ 0 for the same run.
            let log_z_base = (0..n_vocab).map(|i| raw(i).exp()).sum::<f64>().ln();
            let lp = |i: usize| raw(i) - log_z_base;
            (divergence(logits, log_z, lp), base_arg, base_nll)
        }
        BaseFormat::Llama => {
            let nv = 2 * n_vocab.div_ceil(2) + 4;
            row.resize(2 * nv, 0);
            r.read_exact(row)
                .map_err(|e| format!("--kl-divergence-base: file ends early ({e})"))?;
            let scale = f32::from_le_bytes(row[0..4].try_into().expect("4 bytes")) as f64;
            let min = f32::from_le_bytes(row[4..8].try_into().expect("4 bytes")) as f64;
            let qs = &row[8..];
            // As llama.cpp dequantizes: in f32.
            let lp = |i: usize| {
                let q = u16::from_le_bytes([qs[2 * i], qs[2 * i + 1]]) as f32;
                (scale as f32 * q + min as f32) as f64
            };
            let mut base_arg = 0;
            for i in 1..n_vocab {
                if lp(i) > lp(base_arg) {
                    base_arg = i;
                }
            }
            let kl = divergence(logits, log_z, lp);
            (kl, base_arg as u32, -lp(next as usize))
        }
    };
    stats.kld.push(kl);
    stats.same_top1 += usize::from(base_arg == arg);
    stats.base_nll += base_nll;
    Ok(())
}

/// A base file opened for a comparison: its header and tokens read, the reader at the first
/// row.
pub struct KlBase {
    /// The header.
    pub header: KldHeader,
    /// The tokens of its chunks.
    pub tokens: Vec<u32>,
    /// The rest of the file: the scored rows.
    reader: BufReader<File>,
}

impl KlBase {
    /// Open `path` (`--kl-divergence-base` with `--kl-divergence`) and read its header and
    /// tokens; it must have been made with the same context size `n_ctx`.
    pub fn open(path: &Path, n_ctx: usize) -> CliResult<KlBase> {
        let f = File::open(path)
            .map_err(|e| format!("--kl-divergence-base {}: cannot open: {e}", path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 20, f);
        let (header, tokens) = read_kld_header(&mut reader, path)?;
        if header.n_ctx != n_ctx {
            return Err(format!(
                "--kl-divergence-base {} was made with -c {}, this run has -c {n_ctx}",
                path.display(),
                header.n_ctx
            )
            .into());
        }
        Ok(KlBase {
            header,
            tokens,
            reader,
        })
    }

    /// Split into its tokens and the comparison that reads its rows.
    pub fn into_comparison(self) -> (Vec<u32>, KlMode) {
        let mode = KlMode::Compare {
            reader: self.reader,
            format: self.header.format,
            stats: KlStats::default(),
            row: Vec::new(),
        };
        (self.tokens, mode)
    }
}

/// Create base file `path` and write its header and the tokens of the `n_chunk` chunks
/// (`tokens` holds at least `n_chunk · n_ctx`); the scored rows follow as they are computed.
pub fn create_base(path: &Path, header: KldHeader, tokens: &[u32]) -> CliResult<BufWriter<File>> {
    let f = File::create(path).map_err(|e| {
        format!(
            "--kl-divergence-base {}: cannot create: {e}",
            path.display()
        )
    })?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(KLD_MAGIC)?;
    for v in [header.n_vocab, header.n_ctx, header.n_chunks, header.first] {
        write_u32(&mut w, v)?;
    }
    for &t in &tokens[..header.n_chunks * header.n_ctx] {
        write_u32(&mut w, t as usize)?;
    }
    Ok(w)
}

impl KlMode {
    /// Save or compare one scored row, which predicts token `next` (nothing when off).
    pub fn record(
        &mut self,
        logits: &[f32],
        nll: f64,
        arg: u32,
        log_z: f64,
        next: u32,
    ) -> CliResult {
        match self {
            KlMode::Off => {}
            KlMode::Save(w) => save_row(w, logits, nll, arg, log_z)?,
            KlMode::Compare {
                reader,
                format,
                stats,
                row,
            } => compare_row(reader, *format, row, stats, logits, arg, log_z, next)?,
        }
        Ok(())
    }

    /// Finish: flush a saved file; a comparison's summary as JSON.
    pub fn finish(self) -> CliResult<Option<serde_json::Value>> {
        Ok(match self {
            KlMode::Save(mut w) => {
                w.flush()?;
                None
            }
            KlMode::Compare { stats, .. } => Some(kl_report(&stats)),
            KlMode::Off => None,
        })
    }
}

/// Summary of a KL comparison as JSON (also the source of the text report).
fn kl_report(stats: &KlStats) -> serde_json::Value {
    let n = stats.kld.len();
    if n == 0 {
        return json!({ "tokens": 0 });
    }
    let nf = n as f64;
    let mean = stats.kld.iter().sum::<f64>() / nf;
    let var = stats.kld.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / nf;
    let mean_err = if n > 1 {
        (var / (nf - 1.0)).sqrt()
    } else {
        0.0
    };
    let mut sorted = stats.kld.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |q: f64| sorted[((q * (nf - 1.0)).round() as usize).min(n - 1)];
    let p = stats.same_top1 as f64 / nf;
    let p_err = if n > 1 {
        (p * (1.0 - p) / (nf - 1.0)).sqrt()
    } else {
        0.0
    };
    json!({
        "tokens": n,
        "mean": mean,
        "mean_err": mean_err,
        "median": pct(0.5),
        "p99": pct(0.99),
        "max": sorted[n - 1],
        "top1_agreement_percent": 100.0 * p,
        "top1_agreement_err": 100.0 * p_err,
        "ppl_base": (stats.base_nll / nf).exp(),
    })
}
