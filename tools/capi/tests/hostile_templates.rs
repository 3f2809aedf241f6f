//! Hostile chat templates through the C API: a model file whose `tokenizer.chat_template`
//! builds huge strings or lists must make `tessera_chat_apply_template` return
//! `TESSERA_ERR_TEMPLATE` with a message, quickly, instead of exhausting memory and aborting
//! the process.

mod common;

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use tessera::*;
use tessera_engine::gguf::MetaValue;
use tessera_models::testing::{TinyLlama, set_kv};

/// The message of the last error on this thread.
fn last_error() -> String {
    // SAFETY: `tessera_last_error` never returns NULL, and its string lives until the next
    // API call on this thread.
    unsafe { CStr::from_ptr(tessera_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Load the tiny model with `template` as its chat template and apply it to one user
/// message; the status and the message of the call.
fn apply(dir: &common::TempDir, template: &str) -> (tessera_status, String) {
    let mut w = TinyLlama::default().writer();
    set_kv(
        &mut w,
        "tokenizer.chat_template",
        MetaValue::String(template.into()),
    );
    let path = dir.path().join("hostile.gguf");
    std::fs::write(&path, w.to_bytes()).unwrap();
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    // SAFETY: `c` is NUL-terminated and `m` is a live local.
    let st = unsafe { tessera_model_load(c.as_ptr(), ptr::null(), &mut m) };
    assert_eq!(st, tessera_status::TESSERA_OK, "{}", last_error());
    let role = CString::new("user").unwrap();
    let content = CString::new("Hello").unwrap();
    let roles: [*const c_char; 1] = [role.as_ptr()];
    let contents: [*const c_char; 1] = [content.as_ptr()];
    let mut buf = vec![0 as c_char; 4096];
    let mut needed = 0i32;
    // SAFETY: `m` is the live handle just loaded; the arrays hold one NUL-terminated string
    // each; `buf` has `buf.len()` writable bytes and `needed` is a live local.
    let st = unsafe {
        tessera_chat_apply_template(
            m,
            roles.as_ptr(),
            contents.as_ptr(),
            1,
            true,
            buf.as_mut_ptr(),
            buf.len() as i32,
            &mut needed,
        )
    };
    let msg = last_error();
    // SAFETY: `m` is the live handle loaded above, used by this thread only.
    assert_eq!(unsafe { tessera_model_free(m) }, tessera_status::TESSERA_OK);
    (st, msg)
}

#[test]
fn hostile_templates_are_refused_with_a_status() {
    let dir = common::TempDir::new("hostile-templates");
    // A normal template still renders.
    let (st, msg) = apply(
        &dir,
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    );
    assert_eq!(st, tessera_status::TESSERA_OK, "{msg}");
    for template in [
        // String doubling, list doubling, repetition in a loop, replace doubling.
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|join }}",
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + ['x' * 100000] %}{% endfor %}",
        "{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s|replace('x', 'xx') %}{% endfor %}",
        // A constant folded while compiling.
        "{{ ('x' * 99999999) ~ ('x' * 99999999) }}",
    ] {
        let start = std::time::Instant::now();
        let (st, msg) = apply(&dir, template);
        assert_eq!(
            st,
            tessera_status::TESSERA_ERR_TEMPLATE,
            "{template}: {msg}"
        );
        assert!(msg.contains("more than"), "{template}: {msg}");
        assert!(start.elapsed().as_secs() < 30, "{template}");
    }
}
