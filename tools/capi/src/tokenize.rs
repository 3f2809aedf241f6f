//! Text to tokens and back: `tessera_tokenize`, `tessera_token_to_piece`,
//! `tessera_detokenize`, and `tessera_token_is_eog`.

use std::ffi::c_char;

use tessera_models::Model;

use crate::buffers::{out_ptr, put, slice, utf8, write_items, write_text};
use crate::error::{Error, Result, guard, tessera_status};
use crate::model::{model_ref, tessera_model};

/// A token id from C, checked against the vocabulary.
pub(crate) fn token_id(model: &Model, t: i32) -> Result<u32> {
    let n_vocab = model.hparams().n_vocab;
    if t < 0 || t as usize >= n_vocab {
        return Err(Error::range(format!(
            "token id {t} is outside [0, {n_vocab})"
        )));
    }
    Ok(t as u32)
}

/// Check every id of `tokens` and convert them (reusing `out`).
pub(crate) fn token_ids(model: &Model, tokens: &[i32], out: &mut Vec<u32>) -> Result<()> {
    out.clear();
    out.reserve(tokens.len());
    for (i, &t) in tokens.iter().enumerate() {
        out.push(token_id(model, t).map_err(|e| Error::range(format!("tokens[{i}]: {}", e.msg)))?);
    }
    Ok(())
}

/// Tokenize `text_len` bytes of UTF-8 `text` (need not be NUL-terminated; `text` may be NULL
/// when `text_len` is 0) into `tokens_out`, which has room for `capacity` ids; the number of
/// tokens is stored in `*n_out`.
///
/// `add_special`: add the BOS (and EOS) tokens the model's metadata asks for.
/// `parse_special`: recognise special/control tokens written in the text (e.g.
/// "<|im_start|>"); otherwise they are tokenized as plain text.
///
/// When `capacity` is too small, `*n_out` receives the number of tokens needed, nothing is
/// written to `tokens_out`, and the result is `TESSERA_ERR_BUFFER_TOO_SMALL` (`capacity` 0
/// with `tokens_out` NULL asks for the count).
///
/// Errors: `TESSERA_ERR_INVALID_UTF8`, `TESSERA_ERR_INVALID_ARGUMENT` (negative length or
/// capacity), `TESSERA_ERR_NULL_POINTER`, `TESSERA_ERR_BUFFER_TOO_SMALL`.
///
/// Ownership: all buffers belong to the caller and are only used during the call.
///
/// # Safety
/// `model` a handle or NULL; `text` NULL or `text_len` readable bytes; `tokens_out` NULL or
/// `capacity` writable ids; `n_out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_tokenize(
    model: *const tessera_model,
    text: *const c_char,
    text_len: i32,
    add_special: bool,
    parse_special: bool,
    tokens_out: *mut i32,
    capacity: i32,
    n_out: *mut i32,
) -> tessera_status {
    // SAFETY: `model` is looked up in the live-handle table before it is read; `n_out` is
    // checked by `out_ptr`, `text` by `slice` (`text_len` readable bytes, the caller's contract)
    // and `tokens_out` by `write_items` (room for `capacity` ids, the caller's contract).
    guard("tessera_tokenize", || unsafe {
        let m = model_ref(model)?;
        out_ptr(n_out, "n_out")?;
        let bytes = slice(text.cast::<u8>(), text_len, "text", 0)?;
        let text = utf8(bytes, "text")?;
        let ids = m.model.tokenizer().encode(text, add_special, parse_special);
        // Ids are < n_vocab, which the loader keeps far below i32::MAX.
        let ids: Vec<i32> = ids.into_iter().map(|t| t as i32).collect();
        write_items(&ids, tokens_out, capacity, n_out, "the tokens")
    })
}

/// Write the text piece of `token` into `buf` following the buffer convention (`*needed` =
/// bytes including the NUL). The piece is raw bytes: it may be an incomplete UTF-8 sequence
/// (byte-fallback tokens) or contain a NUL byte, so use `*needed - 1` as its length, and
/// concatenate the bytes of consecutive pieces before decoding them as UTF-8. Control and
/// user-defined tokens render their text (e.g. "<|im_end|>"), as llama.cpp's
/// `llama_token_to_piece` with `special = true`; unused tokens give an empty piece.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` for an id outside `[0, n_vocab)`.
///
/// # Safety
/// `model` a handle or NULL; `buf` NULL or `capacity` writable bytes; `needed` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_token_to_piece(
    model: *const tessera_model,
    token: i32,
    buf: *mut c_char,
    capacity: i32,
    needed: *mut i32,
) -> tessera_status {
    // SAFETY: `model` is checked against the live-handle table; `write_text` checks `buf`
    // (NULL only with capacity 0) and `needed`, whose room is this fn's contract.
    guard("tessera_token_to_piece", || unsafe {
        let m = model_ref(model)?;
        let id = token_id(&m.model, token)?;
        let piece = m.model.tokenizer().token_to_piece(id);
        write_text(&piece, buf, capacity, needed, "the piece")
    })
}

/// Write the text of `n_tokens` (>= 1) tokens into `buf` following the buffer convention.
/// The pieces are concatenated and decoded as UTF-8 with invalid sequences replaced by
/// U+FFFD, so the result is always valid UTF-8.
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` for a bad id (the message names its index),
/// `TESSERA_ERR_INVALID_ARGUMENT` for `n_tokens < 1`.
///
/// # Safety
/// `model` a handle or NULL; `tokens` NULL or `n_tokens` readable ids; `buf` NULL or
/// `capacity` writable bytes; `needed` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_detokenize(
    model: *const tessera_model,
    tokens: *const i32,
    n_tokens: i32,
    buf: *mut c_char,
    capacity: i32,
    needed: *mut i32,
) -> tessera_status {
    // SAFETY: `model` is checked against the live-handle table, `slice` checks `tokens`
    // (`n_tokens` readable ids, the caller's contract); `write_text` checks `buf` and `needed`.
    guard("tessera_detokenize", || unsafe {
        let m = model_ref(model)?;
        let tokens = slice(tokens, n_tokens, "tokens", 1)?;
        let mut ids = Vec::new();
        token_ids(&m.model, tokens, &mut ids)?;
        let text = m.model.tokenizer().decode(&ids);
        write_text(text.as_bytes(), buf, capacity, needed, "the text")
    })
}

/// Store in `*is_eog` whether `token` ends a generation (EOS, EOT, `<|im_end|>`, ...).
///
/// Errors: `TESSERA_ERR_OUT_OF_RANGE` for an id outside `[0, n_vocab)`.
///
/// # Safety
/// `model` a handle or NULL; `is_eog` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_token_is_eog(
    model: *const tessera_model,
    token: i32,
    is_eog: *mut bool,
) -> tessera_status {
    // SAFETY: `model` is looked up in the live-handle table before it is read, and `is_eog`
    // is checked non-NULL and aligned by `out_ptr` before `put` writes it.
    guard("tessera_token_is_eog", || unsafe {
        let m = model_ref(model)?;
        out_ptr(is_eog, "is_eog")?;
        let id = token_id(&m.model, token)?;
        put(is_eog, m.model.tokenizer().is_eog(id), "is_eog")
    })
}
