//! Chat templates: rendering a conversation with the model's template
//! (`tessera_chat_apply_template`).

use std::ffi::c_char;

use tessera_models::chat::{ChatError, ChatMessage};

use crate::buffers::{cstr, slice, write_text};
use crate::error::{Error, Result, TESSERA_ERR_TEMPLATE, guard, tessera_status};
use crate::model::{model_ref, tessera_model};

/// Read message `i` from the two arrays.
///
/// # Safety
/// The pointers in the arrays must be NULL or NUL-terminated strings.
unsafe fn message(
    roles: &[*const c_char],
    contents: &[*const c_char],
    i: usize,
) -> Result<ChatMessage> {
    // SAFETY: the pointer is NULL or NUL-terminated (this fn's precondition), and `cstr`
    // refuses NULL before reading.
    let role = unsafe { cstr(roles[i], &format!("roles[{i}]"))? };
    // SAFETY: as for the role.
    let content = unsafe { cstr(contents[i], &format!("contents[{i}]"))? };
    Ok(ChatMessage::new(role, content))
}

/// Render the conversation `roles[i]`/`contents[i]` (`n_messages` >= 1 NUL-terminated UTF-8
/// strings each; roles are usually "system", "user", "assistant") with the model's chat
/// template, ending with the assistant's turn opener when `add_generation_prompt`, and write
/// the text into `buf` following the buffer convention (`*needed` = bytes including the NUL).
///
/// The result is meant to be tokenized with `parse_special = true`. When the tokenizer adds
/// BOS itself, a BOS text the template writes at the very start is removed so that the
/// prompt does not get two (as llama.cpp does). A model without a template uses a built-in
/// one (ChatML; Gemma's turn format for Gemma models).
///
/// The template comes from the model file and may be hostile: its work is bounded (10 million
/// template instructions, nesting depth 100) and so are its bytes: what it writes and every
/// string or list it builds count against 64 MiB per call, and a constant expression may
/// fold to at most 1 MiB. A template that goes past a bound fails with `TESSERA_ERR_TEMPLATE`
/// ("chat template built more than N bytes"), without exhausting memory.
///
/// Errors: `TESSERA_ERR_NULL_POINTER` (an array or one of its strings; the message names the
/// index), `TESSERA_ERR_INVALID_UTF8`, `TESSERA_ERR_TEMPLATE` (the template failed, e.g. the
/// roles do not alternate as it requires, or it went past a bound above),
/// `TESSERA_ERR_BUFFER_TOO_SMALL`.
///
/// Ownership: every argument belongs to the caller and is only used during the call.
///
/// # Safety
/// `model` a handle or NULL; `roles` and `contents` NULL or `n_messages` readable pointers,
/// each NULL or NUL-terminated; `buf` NULL or `capacity` writable bytes; `needed` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_chat_apply_template(
    model: *const tessera_model,
    roles: *const *const c_char,
    contents: *const *const c_char,
    n_messages: i32,
    add_generation_prompt: bool,
    buf: *mut c_char,
    capacity: i32,
    needed: *mut i32,
) -> tessera_status {
    // SAFETY: `model` is checked against the live-handle table; `slice` checks `roles` and
    // `contents` (`n_messages` readable pointers each, the caller's contract), whose strings
    // `message` reads only after a NULL check; `write_text` checks `buf` and `needed`.
    guard("tessera_chat_apply_template", || unsafe {
        let m = model_ref(model)?;
        let roles = slice(roles, n_messages, "roles", 1)?;
        let contents = slice(contents, n_messages, "contents", 1)?;
        let messages = (0..roles.len())
            .map(|i| message(roles, contents, i))
            .collect::<Result<Vec<_>>>()?;
        let text = m
            .model
            .chat_template()
            .render(&messages, add_generation_prompt)
            .map_err(|e: ChatError| Error::new(TESSERA_ERR_TEMPLATE, e.to_string()))?;
        write_text(text.as_bytes(), buf, capacity, needed, "the prompt")
    })
}
