//! Samplers: the parameters of the chain (llama.cpp's defaults), and sampling from a
//! context's last logits.
//!
//! The chain is penalties → top-k → top-p → min-p → temperature → seeded draw, or penalties
//! → argmax when `greedy` is set or `temp` is 0.

use std::sync::Mutex;

use tessera_models::sampler::{RANDOM_SEED, Sampler, SamplerParams};

use crate::buffers::{out_ptr, put};
use crate::context::{context_ref, tessera_context};
use crate::error::{Error, Result, guard, tessera_status};
use crate::grammar::GrammarState;
use crate::handles::{self, Handle, Kind, lock};
use crate::model::{model_ref, tessera_model};
use crate::tokenize::token_id;

/// `seed` value asking for a random seed.
pub const TESSERA_SEED_RANDOM: u64 = u64::MAX;

/// Sampler settings. `tessera_sampler_default_params()` gives llama.cpp's defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tessera_sampler_params {
    /// Always pick the most likely token (after penalties), ignoring the other fields except
    /// the penalties. Default false.
    pub greedy: bool,
    /// Temperature; 0 = greedy. Default 0.8.
    pub temp: f32,
    /// Keep the `top_k` most likely tokens; 0 disables. Default 40.
    pub top_k: i32,
    /// Nucleus: keep the most likely tokens up to this total probability, in [0, 1]; 1
    /// disables. Default 0.95.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` x the most likely one's, in [0, 1]; 0 disables.
    /// Default 0.05.
    pub min_p: f32,
    /// Repetition penalty (> 0): divides positive and multiplies negative logits of recent
    /// tokens; 1 disables. Default 1.
    pub repeat_penalty: f32,
    /// Subtracted `count` times from the logit of each recent token, in [-2, 2]. Default 0.
    pub frequency_penalty: f32,
    /// Subtracted once from the logit of each recent token, in [-2, 2]. Default 0.
    pub presence_penalty: f32,
    /// How many accepted tokens the penalties look at; 0 disables them, -1 = all since the
    /// last reset. Default 64.
    pub penalty_last_n: i32,
    /// RNG seed; `TESSERA_SEED_RANDOM` picks one at random. Default `TESSERA_SEED_RANDOM`.
    pub seed: u64,
}

/// A sampler chain with its state (opaque): accepted tokens for the penalties, RNG, and the
/// grammar constraint if one is set. Use it from one thread at a time.
pub struct tessera_sampler {
    /// `MAGIC` while alive.
    magic: u64,
    /// The chain and its state, `try_lock`ed by every call.
    pub(crate) state: Mutex<SamplerState>,
}

/// What a sampler handle holds: the chain and the optional grammar.
pub(crate) struct SamplerState {
    /// The sampler chain (penalties, RNG).
    pub(crate) sampler: Sampler,
    /// The grammar set with `tessera_sampler_set_grammar`, if any.
    pub(crate) grammar: Option<GrammarState>,
}

impl Handle for tessera_sampler {
    const KIND: Kind = Kind::Sampler;
    const MAGIC: u64 = 0x7465_7373_736d_706c; // "tesssmpl"
    const NAME: &'static str = "tessera_sampler";
    fn magic(&self) -> u64 {
        self.magic
    }
    fn set_magic(&mut self, value: u64) {
        self.magic = value;
    }
}

/// llama.cpp's default sampler parameters (see each field). Cannot fail.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_sampler_default_params() -> tessera_sampler_params {
    let d = SamplerParams::default();
    tessera_sampler_params {
        greedy: false,
        temp: d.temp,
        top_k: d.top_k,
        top_p: d.top_p,
        min_p: d.min_p,
        repeat_penalty: d.repeat_penalty,
        frequency_penalty: d.frequency_penalty,
        presence_penalty: d.presence_penalty,
        penalty_last_n: d.penalty_last_n,
        seed: RANDOM_SEED,
    }
}

/// `p` as the model side's parameters, validated; messages name the C fields.
fn to_params(p: &tessera_sampler_params) -> Result<SamplerParams> {
    let mut sp = SamplerParams {
        temp: p.temp,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
        frequency_penalty: p.frequency_penalty,
        presence_penalty: p.presence_penalty,
        penalty_last_n: p.penalty_last_n,
        seed: p.seed,
    };
    // Every field is checked as given, `temp` too when `greedy` makes it unused.
    sp.validate()
        .map_err(|msg| Error::invalid(c_field_names(&msg)))?;
    if p.greedy {
        sp.temp = 0.0;
    }
    Ok(sp)
}

/// Rewrite the CLI option named at the start of a validation message (`--top-p 2 must …`) as
/// the C field (`params->top_p 2 must …`).
fn c_field_names(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("--") else {
        return msg.to_string();
    };
    let (opt, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    let field = match opt {
        "repeat-last-n" => "penalty_last_n".to_string(),
        o => o.replace('-', "_"),
    };
    format!("params->{field} {tail}")
}

/// Copy the caller's parameters field by field, reading `greedy` as a byte so that a value
/// other than 0 or 1 (possible from C) cannot form an invalid Rust `bool`.
///
/// # Safety
/// `p` must be non-NULL, aligned and point to a `tessera_sampler_params`.
unsafe fn read_params(p: *const tessera_sampler_params) -> tessera_sampler_params {
    use std::ptr::addr_of;
    // SAFETY: `p` is non-NULL, aligned and points to a `tessera_sampler_params`
    // (precondition); each field is read through a raw place, `greedy` as a byte.
    unsafe {
        tessera_sampler_params {
            greedy: addr_of!((*p).greedy).cast::<u8>().read() != 0,
            temp: addr_of!((*p).temp).read(),
            top_k: addr_of!((*p).top_k).read(),
            top_p: addr_of!((*p).top_p).read(),
            min_p: addr_of!((*p).min_p).read(),
            repeat_penalty: addr_of!((*p).repeat_penalty).read(),
            frequency_penalty: addr_of!((*p).frequency_penalty).read(),
            presence_penalty: addr_of!((*p).presence_penalty).read(),
            penalty_last_n: addr_of!((*p).penalty_last_n).read(),
            seed: addr_of!((*p).seed).read(),
        }
    }
}

/// Create a sampler with `params` (NULL = the defaults) and store it in `*out_sampler`.
///
/// Ownership: the caller owns the sampler and frees it with `tessera_sampler_free`. A
/// sampler is independent of models and contexts. On error `*out_sampler` is set to NULL.
///
/// Errors: `TESSERA_ERR_INVALID_ARGUMENT` for a value out of range (the message names it).
///
/// # Safety
/// `params` NULL or valid; `out_sampler` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_sampler_new(
    params: *const tessera_sampler_params,
    out_sampler: *mut *mut tessera_sampler,
) -> tessera_status {
    // SAFETY: `out_sampler` and `params` are checked non-NULL and aligned by `out_ptr`
    // before they are written or read; their validity is this fn's contract.
    guard("tessera_sampler_new", || unsafe {
        out_ptr(out_sampler, "out_sampler")?;
        out_sampler.write(std::ptr::null_mut());
        let p = if params.is_null() {
            tessera_sampler_default_params()
        } else {
            out_ptr(params.cast_mut(), "params")?;
            read_params(params)
        };
        let sp = to_params(&p)?;
        let handle = handles::publish(tessera_sampler {
            magic: tessera_sampler::MAGIC,
            state: Mutex::new(SamplerState {
                sampler: Sampler::new(sp),
                grammar: None,
            }),
        });
        out_sampler.write(handle);
        Ok(())
    })
}

/// Free a sampler. NULL does nothing.
///
/// Errors: `TESSERA_ERR_INVALID_HANDLE` for a pointer that is not a live sampler.
///
/// # Safety
/// No other thread may be using `sampler` during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_sampler_free(sampler: *mut tessera_sampler) -> tessera_status {
    // SAFETY: `release` checks `sampler` against the live-handle table before freeing it,
    // and the caller guarantees no other thread is using it.
    guard("tessera_sampler_free", || unsafe {
        handles::release(sampler)
    })
}

/// Pick a token from the logits of the last token `ctx` decoded and store it in `*token`.
/// The token is not accepted automatically: call `tessera_sampler_accept` with the token you
/// keep (and with prompt tokens, if the penalties should see them).
///
/// With a grammar set (`tessera_sampler_set_grammar`) only tokens the grammar allows next are
/// candidates (before every other stage of the chain); end-of-generation tokens are allowed
/// only where the grammar can end, and are the only ones allowed once it is complete. The
/// grammar advances when this token is then passed to `tessera_sampler_accept`.
///
/// Errors: `TESSERA_ERR_NO_LOGITS` when nothing was decoded, `TESSERA_ERR_BUSY` when the
/// sampler or the context is in use by another thread, `TESSERA_ERR_INVALID_ARGUMENT` when the
/// grammar was compiled for a model whose vocabulary size differs from the context's,
/// `TESSERA_ERR_GRAMMAR` when no token can continue the grammar.
///
/// # Safety
/// `sampler` and `ctx` handles or NULL; `token` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_sampler_sample(
    sampler: *mut tessera_sampler,
    ctx: *mut tessera_context,
    token: *mut i32,
) -> tessera_status {
    // SAFETY: both handles are looked up in the live-handle table before they are read, and
    // `token` is checked non-NULL and aligned by `out_ptr` before `put` writes it.
    guard("tessera_sampler_sample", || unsafe {
        let s = handles::get(sampler)?;
        let c = context_ref(ctx)?;
        out_ptr(token, "token")?;
        let mut smp = lock(&s.state, "sampler")?;
        let st = lock(&c.state, "context")?;
        let logits = st.last_logits()?;
        let SamplerState { sampler, grammar } = &mut *smp;
        let id = match grammar {
            Some(g) => g.sample(sampler, logits)?,
            None => sampler.sample(logits),
        };
        put(token, id as i32, "token")
    })
}

/// Tell the sampler that `token` is now part of the text (for the penalties). `model` is
/// used to check that `token` is in `[0, n_vocab)`.
///
/// The grammar (if one is set) advances only when `token` is the token the latest
/// `tessera_sampler_sample` call returned and it has not been accepted yet: prompt tokens fed
/// here for the penalties never advance it, and neither does a sampled token the caller
/// replaced with another one. When the grammar refuses the token (it ended already), nothing
/// is recorded.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` for a bad id, `TESSERA_ERR_GRAMMAR` when the grammar
/// cannot take the token.
///
/// # Safety
/// `sampler` and `model` handles or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_sampler_accept(
    sampler: *mut tessera_sampler,
    model: *const tessera_model,
    token: i32,
) -> tessera_status {
    // SAFETY: both handles are looked up in the live-handle table before they are read.
    guard("tessera_sampler_accept", || unsafe {
        let s = handles::get(sampler)?;
        let m = model_ref(model)?;
        let id = token_id(&m.model, token)?;
        let mut st = lock(&s.state, "sampler")?;
        if let Some(g) = st.grammar.as_mut() {
            g.accept(id)?;
        }
        st.sampler.accept(id);
        Ok(())
    })
}

/// Forget the accepted tokens, restart the random sequence from the same seed, and restart
/// the grammar (if one is set) at the beginning of the output.
///
/// # Safety
/// `sampler` a handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_sampler_reset(sampler: *mut tessera_sampler) -> tessera_status {
    // SAFETY: `sampler` is looked up in the live-handle table before it is read.
    guard("tessera_sampler_reset", || unsafe {
        let s = handles::get(sampler)?;
        let mut st = lock(&s.state, "sampler")?;
        st.sampler.reset();
        if let Some(g) = st.grammar.as_mut() {
            g.restart();
        }
        Ok(())
    })
}

/// Store the seed the sampler uses in `*seed` (the one picked at random when the
/// parameters asked for `TESSERA_SEED_RANDOM`).
///
/// # Safety
/// `sampler` a handle or NULL; `seed` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_sampler_seed(
    sampler: *mut tessera_sampler,
    seed: *mut u64,
) -> tessera_status {
    // SAFETY: `sampler` is looked up in the live-handle table before it is read, and `seed`
    // is checked non-NULL and aligned by `out_ptr` before `put` writes it.
    guard("tessera_sampler_seed", || unsafe {
        let s = handles::get(sampler)?;
        out_ptr(seed, "seed")?;
        let v = lock(&s.state, "sampler")?.sampler.seed();
        put(seed, v, "seed")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_c_fields() {
        let mut p = tessera_sampler_default_params();
        p.top_p = 2.0;
        let e = to_params(&p).unwrap_err();
        assert!(e.msg.starts_with("params->top_p 2 must"), "{}", e.msg);
        p.top_p = 0.9;
        p.penalty_last_n = -5;
        let e = to_params(&p).unwrap_err();
        assert!(e.msg.starts_with("params->penalty_last_n -5"), "{}", e.msg);
    }

    #[test]
    fn defaults_are_llama_cpp_s() {
        let p = tessera_sampler_default_params();
        assert_eq!((p.temp, p.top_k, p.top_p, p.min_p), (0.8, 40, 0.95, 0.05));
        assert_eq!(p.seed, TESSERA_SEED_RANDOM);
        assert!(!p.greedy);
    }
}
