//! Models: load parameters, loading and freeing, and what a model tells about itself
//! (architecture, sizes, special tokens, chat template, GGUF metadata).

use std::ffi::{OsStr, c_char};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use tessera_engine::gguf::MetaValue;
use tessera_models::hparams::{RopeOverrides, RopeScalingType};
use tessera_models::{Device, Model, ModelError};

use crate::buffers::{cbytes, cstr, out_ptr, put, write_text};
use crate::error::{
    Error, Result, TESSERA_ERR_INVALID_ARGUMENT, TESSERA_ERR_LOAD_FAILED, TESSERA_ERR_NOT_FOUND,
    TESSERA_ERR_UNSUPPORTED, guard, tessera_status,
};
use crate::handles::{self, Handle, Kind};

/// `rope_scaling_type`: keep what the model file says.
pub const TESSERA_ROPE_SCALING_UNSPECIFIED: i32 = -1;
/// `rope_scaling_type`: no RoPE scaling.
pub const TESSERA_ROPE_SCALING_NONE: i32 = 0;
/// `rope_scaling_type`: linear position interpolation (`rope_freq_scale`).
pub const TESSERA_ROPE_SCALING_LINEAR: i32 = 1;
/// `rope_scaling_type`: YaRN.
pub const TESSERA_ROPE_SCALING_YARN: i32 = 2;

/// How to load a model and the defaults of its contexts. Get the defaults from
/// `tessera_model_default_params()` and change what you need; zero (or the documented
/// "unspecified" value) means "from the model file" for every RoPE/YaRN field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tessera_model_params {
    /// Where its contexts run by default: NULL (the `TESSERA_DEVICE` environment variable,
    /// else the CPU), "cpu", "gpu" or "gpu:N" (adapter N of `tessera info --devices`); anything
    /// else, or a GPU that cannot be opened (no such adapter, a build without GPU support), is
    /// `TESSERA_ERR_UNSUPPORTED`. A context's own `device` parameter overrides it.
    /// Only read during `tessera_model_load`.
    pub device: *const c_char,
    /// Threads per context; 0 = one per CPU core. Default 0.
    pub n_threads: i32,
    /// Context length (tokens) of contexts created with default parameters; 0 = the model's
    /// training context. Default 4096.
    pub n_ctx: i32,
    /// Largest batch evaluated at once by `tessera_decode` (longer batches are split).
    /// Default 512.
    pub n_batch: i32,
    /// One of `TESSERA_ROPE_SCALING_*`. Default `TESSERA_ROPE_SCALING_UNSPECIFIED`.
    pub rope_scaling_type: i32,
    /// RoPE base frequency; 0 = from the model. Default 0.
    pub rope_freq_base: f32,
    /// RoPE frequency scale (1 / context extension factor); 0 = from the model. Default 0.
    pub rope_freq_scale: f32,
    /// YaRN: the model's original training context; 0 = from the model. Default 0.
    pub yarn_orig_ctx: i32,
    /// YaRN extrapolation mix; negative = from the model (1 for YaRN). Default -1.
    pub yarn_ext_factor: f32,
    /// YaRN attention magnitude factor; 0 = from the model. Default 0.
    pub yarn_attn_factor: f32,
    /// YaRN high-frequency boundary in rotations; 0 = from the model. Default 0.
    pub yarn_beta_fast: f32,
    /// YaRN low-frequency boundary in rotations; 0 = from the model. Default 0.
    pub yarn_beta_slow: f32,
}

/// Context settings a model hands to its contexts by default.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ContextDefaults {
    /// Context length (resolved: never 0).
    pub(crate) n_ctx: usize,
    /// Largest batch.
    pub(crate) n_batch: usize,
    /// Threads (0 = one per core).
    pub(crate) n_threads: usize,
    /// The device named in the load parameters (`None`: `TESSERA_DEVICE`, else the CPU).
    pub(crate) device: Option<Device>,
}

/// A loaded model (opaque). Immutable: usable from several threads at once. Contexts keep
/// it alive, so it may be freed before them.
pub struct tessera_model {
    /// `MAGIC` while alive.
    magic: u64,
    /// The model, shared with its contexts.
    pub(crate) model: Arc<Model>,
    /// What contexts get when their parameters say 0.
    pub(crate) defaults: ContextDefaults,
}

impl Handle for tessera_model {
    const KIND: Kind = Kind::Model;
    const MAGIC: u64 = 0x7465_7373_6d6f_646c; // "tessmodl"
    const NAME: &'static str = "tessera_model";
    fn magic(&self) -> u64 {
        self.magic
    }
    fn set_magic(&mut self, value: u64) {
        self.magic = value;
    }
}

const DEFAULT_PARAMS: tessera_model_params = tessera_model_params {
    device: std::ptr::null(),
    n_threads: 0,
    n_ctx: 4096,
    n_batch: 512,
    rope_scaling_type: TESSERA_ROPE_SCALING_UNSPECIFIED,
    rope_freq_base: 0.0,
    rope_freq_scale: 0.0,
    yarn_orig_ctx: 0,
    yarn_ext_factor: -1.0,
    yarn_attn_factor: 0.0,
    yarn_beta_fast: 0.0,
    yarn_beta_slow: 0.0,
};

/// The default model parameters (see each field). Cannot fail.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_model_default_params() -> tessera_model_params {
    DEFAULT_PARAMS
}

/// A float parameter: 0 = unspecified, otherwise finite and > 0.
fn positive(v: f32, name: &str) -> Result<Option<f32>> {
    if v == 0.0 {
        Ok(None)
    } else if v.is_finite() && v > 0.0 {
        Ok(Some(v))
    } else {
        Err(Error::invalid(format!(
            "{name} is {v}, must be > 0 (or 0 = from the model)"
        )))
    }
}

/// Check `p` and turn it into RoPE overrides and context defaults.
///
/// # Safety
/// `p.device`, when non-NULL, must be a NUL-terminated string.
unsafe fn parse_params(p: &tessera_model_params) -> Result<(RopeOverrides, ContextDefaults, i32)> {
    let device = if p.device.is_null() {
        None
    } else {
        // SAFETY: documented as a NUL-terminated string.
        let name = unsafe { cstr(p.device, "params->device")? };
        let device = Device::parse(name).map_err(|_| {
            Error::new(
                TESSERA_ERR_UNSUPPORTED,
                format!("device {name:?} is not available (use \"cpu\", \"gpu\" or \"gpu:N\")"),
            )
        })?;
        // Opened now (once per process, then shared), so that a GPU that is not there is
        // refused at load rather than at the first context.
        tessera_engine::backend::describe(device).map_err(|e| {
            Error::new(
                TESSERA_ERR_UNSUPPORTED,
                format!("device {name:?} is not available: {e}"),
            )
        })?;
        Some(device)
    };
    let nonneg = |v: i32, name: &str| -> Result<usize> {
        if v < 0 {
            Err(Error::invalid(format!(
                "params->{name} is {v}, must be >= 0"
            )))
        } else {
            Ok(v as usize)
        }
    };
    let n_threads = nonneg(p.n_threads, "n_threads")?;
    let n_ctx = p.n_ctx;
    nonneg(n_ctx, "n_ctx")?;
    let n_batch = nonneg(p.n_batch, "n_batch")?;
    if n_batch == 0 {
        return Err(Error::invalid("params->n_batch must be >= 1"));
    }
    let kind = match p.rope_scaling_type {
        TESSERA_ROPE_SCALING_UNSPECIFIED => None,
        TESSERA_ROPE_SCALING_NONE => Some(RopeScalingType::None),
        TESSERA_ROPE_SCALING_LINEAR => Some(RopeScalingType::Linear),
        TESSERA_ROPE_SCALING_YARN => Some(RopeScalingType::Yarn),
        other => {
            return Err(Error::invalid(format!(
                "params->rope_scaling_type is {other}, not one of TESSERA_ROPE_SCALING_*"
            )));
        }
    };
    let ext_factor = if p.yarn_ext_factor.is_nan() || p.yarn_ext_factor.is_infinite() {
        return Err(Error::invalid("params->yarn_ext_factor must be finite"));
    } else if p.yarn_ext_factor < 0.0 {
        None
    } else {
        Some(p.yarn_ext_factor)
    };
    let rope = RopeOverrides {
        kind,
        factor: match positive(p.rope_freq_scale, "params->rope_freq_scale")? {
            Some(s) if !(1.0 / s).is_normal() => {
                return Err(Error::invalid(format!(
                    "params->rope_freq_scale is {s}, which has no finite inverse"
                )));
            }
            s => s.map(|s| 1.0 / s),
        },
        freq_base: positive(p.rope_freq_base, "params->rope_freq_base")?,
        orig_ctx: Some(nonneg(p.yarn_orig_ctx, "yarn_orig_ctx")? as u32).filter(|&n| n > 0),
        ext_factor,
        attn_factor: positive(p.yarn_attn_factor, "params->yarn_attn_factor")?,
        beta_fast: positive(p.yarn_beta_fast, "params->yarn_beta_fast")?,
        beta_slow: positive(p.yarn_beta_slow, "params->yarn_beta_slow")?,
    };
    let defaults = ContextDefaults {
        n_ctx: 0,
        n_batch,
        n_threads,
        device,
    };
    Ok((rope, defaults, n_ctx))
}

/// Load the GGUF model at `path` (a NUL-terminated file path) with `params` (NULL = the
/// defaults) and store a new handle in `*out_model`.
///
/// Ownership: the caller owns the returned model and frees it with `tessera_model_free`.
/// `path` and `params` are only read during the call. On error `*out_model` is set to NULL
/// (when `out_model` itself is not NULL).
///
/// Errors: `TESSERA_ERR_NULL_POINTER` (path or out_model), `TESSERA_ERR_INVALID_ARGUMENT`
/// (a parameter), `TESSERA_ERR_UNSUPPORTED` (device), `TESSERA_ERR_LOAD_FAILED` (missing,
/// unreadable, corrupt or unsupported file).
///
/// # Safety
/// `path` must be NULL or NUL-terminated; `params` NULL or valid; `out_model` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_load(
    path: *const c_char,
    params: *const tessera_model_params,
    out_model: *mut *mut tessera_model,
) -> tessera_status {
    // SAFETY: the caller meets this fn's `# Safety` contract; `out_model` and `params` are
    // checked non-NULL and aligned by `out_ptr` before they are written or read, and `cbytes`
    // reads `path` only after its NULL check.
    guard("tessera_model_load", || unsafe {
        out_ptr(out_model, "out_model")?;
        out_model.write(std::ptr::null_mut());
        let path = OsStr::from_bytes(cbytes(path, "path")?);
        let params = if params.is_null() {
            DEFAULT_PARAMS
        } else {
            out_ptr(params.cast_mut(), "params")?;
            *params
        };
        let (rope, mut defaults, n_ctx) = parse_params(&params)?;
        let model = Model::load(path, &rope).map_err(|e| {
            // The file is fine; the parameters, taken with what it says, are not.
            let status = match e {
                ModelError::InvalidInput(_) => TESSERA_ERR_INVALID_ARGUMENT,
                _ => TESSERA_ERR_LOAD_FAILED,
            };
            Error::new(
                status,
                format!("cannot load {}: {e}", path.to_string_lossy()),
            )
        })?;
        defaults.n_ctx = if n_ctx == 0 {
            (model.hparams().n_ctx_train as usize).max(1)
        } else {
            n_ctx as usize
        };
        let handle = handles::publish(tessera_model {
            magic: tessera_model::MAGIC,
            model: Arc::new(model),
            defaults,
        });
        out_model.write(handle);
        Ok(())
    })
}

/// Free a model handle. Contexts created from it stay valid (they hold their own reference;
/// the weights are released when the last of them is freed). NULL does nothing.
///
/// Errors: `TESSERA_ERR_INVALID_HANDLE` for a pointer that is not a live model (e.g. a double
/// free: detected as long as the address was not reused).
///
/// # Safety
/// No other thread may be using `model` during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_free(model: *mut tessera_model) -> tessera_status {
    // SAFETY: `release` checks `model` against the live-handle table before freeing it, and the
    // caller guarantees no other thread is using it.
    guard("tessera_model_free", || unsafe { handles::release(model) })
}

/// The checked model behind a handle.
///
/// # Safety
/// See [`handles::get`].
pub(crate) unsafe fn model_ref<'a>(model: *const tessera_model) -> Result<&'a tessera_model> {
    // SAFETY: the caller's promise that `model` is not freed while the reference is used is
    // `handles::get`'s precondition.
    unsafe { handles::get(model) }
}

/// Shared body of the integer getters.
///
/// # Safety
/// `model` a handle or NULL; `out` NULL or writable.
unsafe fn get_int(
    name: &str,
    model: *const tessera_model,
    out: *mut i32,
    f: impl FnOnce(&Model) -> i64,
) -> tessera_status {
    // SAFETY: `model` is looked up in the live-handle table before it is read, and `out` is
    // checked non-NULL and aligned by `out_ptr` before `put` writes it.
    guard(name, || unsafe {
        let m = model_ref(model)?;
        out_ptr(out, "the out-parameter")?;
        let v = f(&m.model);
        let v = i32::try_from(v).map_err(|_| Error::range(format!("{v} exceeds int32_t")))?;
        put(out, v, "the out-parameter")
    })
}

/// Store the vocabulary size in `*n_vocab`.
///
/// # Safety
/// `model` a handle or NULL; `n_vocab` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_n_vocab(
    model: *const tessera_model,
    n_vocab: *mut i32,
) -> tessera_status {
    // SAFETY: `get_int` checks both pointers; their validity is this fn's own contract.
    unsafe {
        get_int("tessera_model_n_vocab", model, n_vocab, |m| {
            m.hparams().n_vocab as i64
        })
    }
}

/// Store the context length the model was trained with in `*n_ctx_train`.
///
/// # Safety
/// `model` a handle or NULL; `n_ctx_train` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_n_ctx_train(
    model: *const tessera_model,
    n_ctx_train: *mut i32,
) -> tessera_status {
    // SAFETY: `get_int` checks both pointers; their validity is this fn's own contract.
    unsafe {
        get_int("tessera_model_n_ctx_train", model, n_ctx_train, |m| {
            m.hparams().n_ctx_train as i64
        })
    }
}

/// Store the number of transformer layers in `*n_layer`.
///
/// # Safety
/// `model` a handle or NULL; `n_layer` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_n_layer(
    model: *const tessera_model,
    n_layer: *mut i32,
) -> tessera_status {
    // SAFETY: `get_int` checks both pointers; their validity is this fn's own contract.
    unsafe {
        get_int("tessera_model_n_layer", model, n_layer, |m| {
            m.hparams().n_layer as i64
        })
    }
}

/// Store the embedding width in `*n_embd`.
///
/// # Safety
/// `model` a handle or NULL; `n_embd` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_n_embd(
    model: *const tessera_model,
    n_embd: *mut i32,
) -> tessera_status {
    // SAFETY: `get_int` checks both pointers; their validity is this fn's own contract.
    unsafe {
        get_int("tessera_model_n_embd", model, n_embd, |m| {
            m.hparams().n_embd as i64
        })
    }
}

/// Store the beginning-of-sequence token id in `*token`, or -1 when the model has none.
///
/// # Safety
/// `model` a handle or NULL; `token` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_token_bos(
    model: *const tessera_model,
    token: *mut i32,
) -> tessera_status {
    // SAFETY: `get_int` checks both pointers; their validity is this fn's own contract.
    unsafe {
        get_int("tessera_model_token_bos", model, token, |m| {
            m.tokenizer().bos().map_or(-1, i64::from)
        })
    }
}

/// Store the end-of-sequence token id in `*token`, or -1 when the model has none.
///
/// # Safety
/// `model` a handle or NULL; `token` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_token_eos(
    model: *const tessera_model,
    token: *mut i32,
) -> tessera_status {
    // SAFETY: `get_int` checks both pointers; their validity is this fn's own contract.
    unsafe {
        get_int("tessera_model_token_eos", model, token, |m| {
            m.tokenizer().eos().map_or(-1, i64::from)
        })
    }
}

/// Write the architecture name (`general.architecture`, e.g. "llama") into `buf` following
/// the buffer convention (`*needed` = bytes including the NUL).
///
/// Ownership: `buf` and `needed` belong to the caller.
///
/// # Safety
/// `model` a handle or NULL; `buf` NULL or `capacity` writable bytes; `needed` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_arch(
    model: *const tessera_model,
    buf: *mut c_char,
    capacity: i32,
    needed: *mut i32,
) -> tessera_status {
    // SAFETY: `model` is checked against the live-handle table; `write_text` checks `buf`
    // (NULL only with capacity 0) and `needed`, whose room is this fn's contract.
    guard("tessera_model_arch", || unsafe {
        let m = model_ref(model)?;
        let name = m.model.hparams().arch.name();
        write_text(name.as_bytes(), buf, capacity, needed, "the architecture")
    })
}

/// Write the chat template's source text (the file's `tokenizer.chat_template`, or the
/// built-in fallback when the file has none) into `buf` following the buffer convention.
///
/// Ownership: `buf` and `needed` belong to the caller.
///
/// # Safety
/// As for `tessera_model_arch`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_chat_template(
    model: *const tessera_model,
    buf: *mut c_char,
    capacity: i32,
    needed: *mut i32,
) -> tessera_status {
    // SAFETY: `model` is checked against the live-handle table; `write_text` checks `buf`
    // (NULL only with capacity 0) and `needed`, whose room is this fn's contract.
    guard("tessera_model_chat_template", || unsafe {
        let m = model_ref(model)?;
        let src = m.model.chat_template().source();
        write_text(src.as_bytes(), buf, capacity, needed, "the chat template")
    })
}

/// A metadata value as text: strings as they are, numbers and booleans in decimal,
/// arrays of scalars as `[a, b, …]` (strings quoted), nested arrays summarised.
fn meta_text(v: &MetaValue) -> String {
    use tessera_engine::gguf::MetaArray as A;
    fn join<T: std::fmt::Display>(v: &[T]) -> String {
        let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        format!("[{}]", items.join(", "))
    }
    match v {
        MetaValue::String(s) => s.clone(),
        MetaValue::Array(a) => match a {
            A::U8(v) => join(v),
            A::I8(v) => join(v),
            A::U16(v) => join(v),
            A::I16(v) => join(v),
            A::U32(v) => join(v),
            A::I32(v) => join(v),
            A::F32(v) => join(v),
            A::Bool(v) => join(v),
            A::U64(v) => join(v),
            A::I64(v) => join(v),
            A::F64(v) => join(v),
            A::String(v) => {
                let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
                format!("[{}]", items.join(", "))
            }
            A::Array(v) => format!("[{} arrays]", v.len()),
        },
        other => other.to_string(),
    }
}

/// Write the GGUF metadata value of `key` (NUL-terminated, e.g. "general.name") as text into
/// `buf` following the buffer convention. Strings come out as they are; numbers and booleans
/// in decimal; arrays as `[a, b, ...]` with strings quoted (the tokenizer's vocabulary is
/// an array: expect megabytes).
///
/// Errors: `TESSERA_ERR_NOT_FOUND` when the file has no such key.
///
/// # Safety
/// `model` a handle or NULL; `key` NULL or NUL-terminated; `buf` NULL or `capacity` writable
/// bytes; `needed` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_meta_val_str(
    model: *const tessera_model,
    key: *const c_char,
    buf: *mut c_char,
    capacity: i32,
    needed: *mut i32,
) -> tessera_status {
    // SAFETY: `model` is checked against the live-handle table, `key` NULL-checked by `cstr`
    // (its NUL is the caller's contract); `write_text` checks `buf` and `needed`.
    guard("tessera_model_meta_val_str", || unsafe {
        let m = model_ref(model)?;
        let key = cstr(key, "key")?;
        let value =
            m.model.file().metadata().get(key).ok_or_else(|| {
                Error::new(TESSERA_ERR_NOT_FOUND, format!("no metadata key {key:?}"))
            })?;
        write_text(
            meta_text(value).as_bytes(),
            buf,
            capacity,
            needed,
            "the value",
        )
    })
}

/// Store the number of GGUF metadata entries in `*count`.
///
/// # Safety
/// `model` a handle or NULL; `count` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_meta_count(
    model: *const tessera_model,
    count: *mut i32,
) -> tessera_status {
    // SAFETY: `get_int` checks both pointers; their validity is this fn's own contract.
    unsafe {
        get_int("tessera_model_meta_count", model, count, |m| {
            m.file().metadata().len() as i64
        })
    }
}

/// Write the key of metadata entry `i` (file order, `0 <= i < count`) into `buf` following
/// the buffer convention.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` for a bad index.
///
/// # Safety
/// As for `tessera_model_arch`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_model_meta_key_by_index(
    model: *const tessera_model,
    i: i32,
    buf: *mut c_char,
    capacity: i32,
    needed: *mut i32,
) -> tessera_status {
    // SAFETY: `model` is checked against the live-handle table; `write_text` checks `buf`
    // (NULL only with capacity 0) and `needed`, whose room is this fn's contract.
    guard("tessera_model_meta_key_by_index", || unsafe {
        let m = model_ref(model)?;
        let entries = m.model.file().metadata().entries();
        let (key, _) = usize::try_from(i)
            .ok()
            .and_then(|i| entries.get(i))
            .ok_or_else(|| {
                Error::range(format!(
                    "index {i} is outside [0, {}) metadata entries",
                    entries.len()
                ))
            })?;
        write_text(key.as_bytes(), buf, capacity, needed, "the key")
    })
}
