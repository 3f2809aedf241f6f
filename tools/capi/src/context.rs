//! Contexts: a model's running state (KV cache, threads, logits). Created from a model,
//! fed batches of tokens with `tessera_decode` (one sequence) or `tessera_decode_batch`
//! (several, in `batch.rs`), read with `tessera_get_logits*`.

use std::sync::{Arc, Mutex};

use tessera_models::{Context, ContextParams, Device, Model};

use crate::buffers::{out_ptr, put, slice};
use crate::error::{
    Error, Result, TESSERA_ERR_CONTEXT_FULL, TESSERA_ERR_NO_LOGITS, guard, tessera_status,
};
use crate::handles::{self, Handle, Kind, lock};
use crate::model::{model_ref, tessera_model};
use crate::tokenize::token_ids;

/// Settings of one context; 0 in a field means "the value in the model's load parameters".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tessera_context_params {
    /// Context length in tokens (0 = the model's `n_ctx`).
    pub n_ctx: i32,
    /// Largest batch evaluated at once (0 = the model's `n_batch`).
    pub n_batch: i32,
    /// Threads (0 = the model's `n_threads`, where 0 means one per core).
    pub n_threads: i32,
    /// Where to compute: `TESSERA_DEVICE_DEFAULT` (0: the model's `device` load parameter,
    /// else the `TESSERA_DEVICE` environment variable, else the CPU), `TESSERA_DEVICE_CPU` or
    /// `TESSERA_DEVICE_GPU`.
    pub device: i32,
    /// With `TESSERA_DEVICE_GPU`: which adapter (0 = the best; `tessera info --devices`).
    pub gpu_index: i32,
    /// Sequences the context holds at once (0 = 1), each up to `n_ctx` tokens;
    /// `tessera_decode_batch` evaluates tokens of several in one step.
    pub n_seq: i32,
    /// KV cells the sequences share on the CPU (0 = `n_ctx × n_seq`: room for every sequence
    /// at full length). A smaller pool holds more sequences in less memory; a decode that
    /// does not fit it is `TESSERA_ERR_CONTEXT_FULL` and evaluates nothing. Sliding-window
    /// layers keep a ring per sequence, and the GPU `n_ctx` cells per sequence, whatever it says.
    pub kv_cells: i32,
}

/// `tessera_context_params.device`: the model's `device` load parameter, else the
/// environment's choice (`TESSERA_DEVICE`), else the CPU.
pub const TESSERA_DEVICE_DEFAULT: i32 = 0;
/// `tessera_context_params.device`: the CPU.
pub const TESSERA_DEVICE_CPU: i32 = 1;
/// `tessera_context_params.device`: a GPU through wgpu (Vulkan, Metal, DX12).
pub const TESSERA_DEVICE_GPU: i32 = 2;

/// The default context parameters: all 0, i.e. the model's settings. Cannot fail.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_context_default_params() -> tessera_context_params {
    tessera_context_params::default()
}

/// What the last decode left in the logits buffer.
#[derive(Clone, Debug, Default)]
pub(crate) struct LastBatch {
    /// Tokens in the batch; 0 = no logits.
    pub(crate) n_tokens: usize,
    /// Whether every token's row was kept.
    pub(crate) all: bool,
    /// After `tessera_decode_batch`: for each token of the batch, the rank of its row among
    /// the kept ones (`None`: its logits were not asked for).
    pub(crate) rows: Option<Vec<Option<usize>>>,
}

/// The mutable part of a context, behind the handle's mutex.
pub(crate) struct ContextState {
    /// The model side's context.
    pub(crate) ctx: Context,
    /// Scratch: the ids of the batch being decoded, checked and converted.
    pub(crate) ids: Vec<u32>,
    /// What the logits buffer holds.
    pub(crate) last: LastBatch,
}

impl ContextState {
    /// The logits row of the last batch's token `i` (negative: from the end), checked.
    fn logits_row(&self, i: i32) -> Result<&[f32]> {
        let n = self.last.n_tokens;
        if n == 0 {
            return Err(Error::new(
                TESSERA_ERR_NO_LOGITS,
                "no logits: nothing was decoded since the context was created or cleared",
            ));
        }
        let idx = if i < 0 { n as i64 + i as i64 } else { i as i64 };
        if idx < 0 || idx >= n as i64 {
            return Err(Error::range(format!(
                "index {i} is outside the last batch of {n} tokens ([-{n}, {n}))"
            )));
        }
        let idx = idx as usize;
        if let Some(rows) = &self.last.rows {
            return match rows[idx] {
                Some(r) => Ok(self.ctx.batch_logits(r)),
                None => Err(Error::range(format!(
                    "index {i}: token {idx} of the last batch did not ask for logits"
                ))),
            };
        }
        if self.last.all {
            Ok(self.ctx.logits_row(idx))
        } else if idx == n - 1 {
            Ok(self.ctx.logits())
        } else {
            Err(Error::range(format!(
                "index {i}: the last batch was decoded with all_logits = false, so only the \
                 last token's logits (index {} or -1) were kept",
                n - 1
            )))
        }
    }

    /// The logits of the last decoded token, checked.
    pub(crate) fn last_logits(&self) -> Result<&[f32]> {
        self.logits_row(-1)
    }
}

/// A model's running state (opaque): KV cache, threads and logits. Use it from one thread at
/// a time.
pub struct tessera_context {
    /// `MAGIC` while alive.
    magic: u64,
    /// The model (also inside the context; kept here to check ids without the lock).
    pub(crate) model: Arc<Model>,
    /// Everything mutable, `try_lock`ed by every call.
    pub(crate) state: Mutex<ContextState>,
}

impl Handle for tessera_context {
    const KIND: Kind = Kind::Context;
    const MAGIC: u64 = 0x7465_7373_6374_7874; // "tessctxt"
    const NAME: &'static str = "tessera_context";
    fn magic(&self) -> u64 {
        self.magic
    }
    fn set_magic(&mut self, value: u64) {
        self.magic = value;
    }
}

/// The checked context behind a handle, with its state locked.
///
/// # Safety
/// See [`handles::get`].
pub(crate) unsafe fn context_ref<'a>(ctx: *const tessera_context) -> Result<&'a tessera_context> {
    // SAFETY: the caller's promise that `ctx` is not freed while the reference is used is
    // `handles::get`'s precondition.
    unsafe { handles::get(ctx) }
}

/// Create a context for `model` with `params` (NULL = the model's settings) and store it in
/// `*out_ctx`. A model can have any number of contexts; each allocates its own KV cache
/// (`tessera_kv_bytes` tells how much).
///
/// Ownership: the caller owns the context and frees it with `tessera_context_free`. The
/// context holds a reference to the model, so the model may be freed first; its memory is
/// released when its last context is freed. On error `*out_ctx` is set to NULL.
///
/// Errors: `TESSERA_ERR_INVALID_ARGUMENT` for a negative field, or a context whose whole
/// footprint (KV cache, compute scratch, logits) is more than the memory left under the
/// tightest limit that applies (`ulimit -v`, a cgroup's memory limit, `MemAvailable`); the
/// message gives the numbers. Nothing is allocated then.
///
/// # Safety
/// `model` a handle or NULL; `params` NULL or valid; `out_ctx` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_context_new(
    model: *const tessera_model,
    params: *const tessera_context_params,
    out_ctx: *mut *mut tessera_context,
) -> tessera_status {
    // SAFETY: the caller meets this fn's `# Safety` contract; `out_ctx` and `params` are
    // checked non-NULL and aligned by `out_ptr` before they are written or read, and `model`
    // is looked up in the live-handle table before it is read.
    guard("tessera_context_new", || unsafe {
        out_ptr(out_ctx, "out_ctx")?;
        out_ctx.write(std::ptr::null_mut());
        let m = model_ref(model)?;
        let p = if params.is_null() {
            tessera_context_params::default()
        } else {
            out_ptr(params.cast_mut(), "params")?;
            *params
        };
        let pick = |v: i32, default: usize, name: &str| -> Result<usize> {
            match v {
                0 => Ok(default),
                v if v > 0 => Ok(v as usize),
                v => Err(Error::invalid(format!(
                    "params->{name} is {v}, must be >= 0"
                ))),
            }
        };
        let d = m.defaults;
        let n_ctx = pick(p.n_ctx, d.n_ctx, "n_ctx")?;
        if p.gpu_index < 0 {
            return Err(Error::invalid(format!(
                "params->gpu_index is {}, must be >= 0",
                p.gpu_index
            )));
        }
        let device = match p.device {
            TESSERA_DEVICE_DEFAULT => match d.device {
                Some(dev) => dev,
                None => Device::from_env()
                    .map_err(|e| Error::invalid(format!("TESSERA_DEVICE: {e}")))?
                    .unwrap_or(Device::Cpu),
            },
            TESSERA_DEVICE_CPU => Device::Cpu,
            TESSERA_DEVICE_GPU => Device::Gpu(p.gpu_index as usize),
            v => {
                return Err(Error::invalid(format!(
                    "params->device is {v}: use TESSERA_DEVICE_DEFAULT (0), TESSERA_DEVICE_CPU (1) \
                     or TESSERA_DEVICE_GPU (2)"
                )));
            }
        };
        let cp = ContextParams {
            n_ctx,
            // A batch never holds more than the context.
            n_batch: pick(p.n_batch, d.n_batch, "n_batch")?.min(n_ctx),
            n_threads: pick(p.n_threads, d.n_threads, "n_threads")?,
            device,
            n_seq: pick(p.n_seq, 1, "n_seq")?,
            kv_pool: pick(p.kv_cells, 0, "kv_cells")?,
            ..ContextParams::default()
        };
        let ctx =
            Context::new(Arc::clone(&m.model), cp).map_err(|e| Error::invalid(e.to_string()))?;
        let handle = handles::publish(tessera_context {
            magic: tessera_context::MAGIC,
            model: Arc::clone(&m.model),
            state: Mutex::new(ContextState {
                ctx,
                ids: Vec::new(),
                last: LastBatch::default(),
            }),
        });
        out_ctx.write(handle);
        Ok(())
    })
}

/// Free a context (its KV cache and threads). NULL does nothing. Pointers from
/// `tessera_get_logits*` become invalid.
///
/// Errors: `TESSERA_ERR_INVALID_HANDLE` for a pointer that is not a live context.
///
/// # Safety
/// No other thread may be using `ctx` during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_context_free(ctx: *mut tessera_context) -> tessera_status {
    // SAFETY: `release` checks `ctx` against the live-handle table before freeing it, and the
    // caller guarantees no other thread is using it.
    guard("tessera_context_free", || unsafe { handles::release(ctx) })
}

/// Evaluate a batch of `n_tokens` (>= 1) token ids after those already in sequence 0 of the
/// context (positions `n_past` to `n_past + n_tokens - 1`). Batches longer than `n_batch` are split
/// internally. Afterwards the logits of the batch's last token are available from
/// `tessera_get_logits`; with `all_logits`, those of every token of the batch from
/// `tessera_get_logits_ith`.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` (an id outside `[0, n_vocab)`; nothing is evaluated),
/// `TESSERA_ERR_CONTEXT_FULL` (`n_past + n_tokens > n_ctx`; nothing is evaluated: clear the
/// KV cache or use a larger context), `TESSERA_ERR_DECODE_FAILED` (the engine failed; the
/// logits are gone and the cache may hold part of the batch: clear it). `tokens` is only
/// read during the call.
///
/// # Safety
/// `ctx` a handle or NULL; `tokens` NULL or `n_tokens` readable ids.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_decode(
    ctx: *mut tessera_context,
    tokens: *const i32,
    n_tokens: i32,
    all_logits: bool,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read, and `slice`
    // checks `tokens` (non-NULL, aligned, `n_tokens >= 1`) before reading the `n_tokens` ids
    // the caller vouches for.
    guard("tessera_decode", || unsafe {
        let c = context_ref(ctx)?;
        let tokens = slice(tokens, n_tokens, "tokens", 1)?;
        let mut st = lock(&c.state, "context")?;
        let st = &mut *st;
        token_ids(&c.model, tokens, &mut st.ids)?;
        let (n_past, n_ctx) = (st.ctx.n_past(), st.ctx.n_ctx());
        if n_past + tokens.len() > n_ctx {
            return Err(Error::new(
                TESSERA_ERR_CONTEXT_FULL,
                format!(
                    "{} tokens do not fit: {n_past} of the context's {n_ctx} are used",
                    tokens.len()
                ),
            ));
        }
        st.last = LastBatch::default();
        st.ctx.eval(&st.ids, all_logits).map_err(Error::decode)?;
        st.last = LastBatch {
            n_tokens: tokens.len(),
            all: all_logits,
            rows: None,
        };
        Ok(())
    })
}

/// Store in `*logits` a pointer to the `n_vocab` logits of the last token of the last
/// decoded batch.
///
/// Ownership: the array belongs to the context and stays valid until the next
/// `tessera_decode`, `tessera_kv_clear` or `tessera_context_free` on it; do not free it.
///
/// Errors: `TESSERA_ERR_NO_LOGITS` when nothing was decoded since the context was created or
/// cleared (or the last decode failed).
///
/// # Safety
/// `ctx` a handle or NULL; `logits` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_get_logits(
    ctx: *mut tessera_context,
    logits: *mut *const f32,
) -> tessera_status {
    // SAFETY: `logits_ith` checks both pointers; their validity is this fn's own contract.
    unsafe { logits_ith("tessera_get_logits", ctx, -1, logits) }
}

/// Store in `*logits` a pointer to the `n_vocab` logits of token `i` of the last decoded
/// batch: `0 <= i < n_tokens`, or negative to count from the end (-1 = the last token). When
/// that batch was decoded with `all_logits = false`, only the last token's row exists and
/// any other index is `TESSERA_ERR_OUT_OF_RANGE`; after `tessera_decode_batch`, only the
/// tokens that asked for logits have a row.
///
/// Ownership: as for `tessera_get_logits`.
///
/// # Safety
/// `ctx` a handle or NULL; `logits` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_get_logits_ith(
    ctx: *mut tessera_context,
    i: i32,
    logits: *mut *const f32,
) -> tessera_status {
    // SAFETY: `logits_ith` checks both pointers; their validity is this fn's own contract.
    unsafe { logits_ith("tessera_get_logits_ith", ctx, i, logits) }
}

/// Shared body of the two logits getters.
///
/// # Safety
/// As for `tessera_get_logits_ith`.
unsafe fn logits_ith(
    name: &str,
    ctx: *mut tessera_context,
    i: i32,
    logits: *mut *const f32,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read, and `logits`
    // is checked non-NULL and aligned by `out_ptr` before `put` writes it.
    guard(name, || unsafe {
        let c = context_ref(ctx)?;
        out_ptr(logits, "logits")?;
        let st = lock(&c.state, "context")?;
        let row = st.logits_row(i)?;
        put(logits, row.as_ptr(), "logits")
    })
}

/// Forget every token of every sequence: clear the KV cache, set `n_past` to 0 and drop the
/// logits.
///
/// # Safety
/// `ctx` a handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_kv_clear(ctx: *mut tessera_context) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read.
    guard("tessera_kv_clear", || unsafe {
        let c = context_ref(ctx)?;
        let mut st = lock(&c.state, "context")?;
        for seq in 0..st.ctx.n_seq() as u32 {
            st.ctx.seq_clear(seq).map_err(Error::decode)?;
        }
        st.last = LastBatch::default();
        Ok(())
    })
}

/// Store the KV cache's size in bytes: `*used` holds tokens now, `*total` is allocated.
///
/// # Safety
/// `ctx` a handle or NULL; `used` and `total` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_kv_bytes(
    ctx: *mut tessera_context,
    used: *mut u64,
    total: *mut u64,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read, and `used` and
    // `total` are checked non-NULL and aligned by `out_ptr` before `put` writes them.
    guard("tessera_kv_bytes", || unsafe {
        let c = context_ref(ctx)?;
        out_ptr(used, "used")?;
        out_ptr(total, "total")?;
        let st = lock(&c.state, "context")?;
        put(used, st.ctx.kv_used_bytes() as u64, "used")?;
        put(total, st.ctx.kv_bytes() as u64, "total")
    })
}

/// Store the number of tokens in sequence 0 of the context (the position its next token
/// gets) in `*n_past`; `tessera_seq_len` tells it for any sequence.
///
/// # Safety
/// `ctx` a handle or NULL; `n_past` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_n_past(
    ctx: *mut tessera_context,
    n_past: *mut i32,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read, and `n_past`
    // is checked non-NULL and aligned by `out_ptr` before `put` writes it.
    guard("tessera_n_past", || unsafe {
        let c = context_ref(ctx)?;
        out_ptr(n_past, "n_past")?;
        let st = lock(&c.state, "context")?;
        put(n_past, st.ctx.n_past() as i32, "n_past")
    })
}

/// Store the context length in tokens in `*n_ctx`.
///
/// # Safety
/// `ctx` a handle or NULL; `n_ctx` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_n_ctx(
    ctx: *mut tessera_context,
    n_ctx: *mut i32,
) -> tessera_status {
    // SAFETY: `ctx` is looked up in the live-handle table before it is read, and `n_ctx`
    // is checked non-NULL and aligned by `out_ptr` before `put` writes it.
    guard("tessera_n_ctx", || unsafe {
        let c = context_ref(ctx)?;
        out_ptr(n_ctx, "n_ctx")?;
        let st = lock(&c.state, "context")?;
        let n = i32::try_from(st.ctx.n_ctx()).unwrap_or(i32::MAX);
        put(n_ctx, n, "n_ctx")
    })
}
