//! Tessera's C ABI: a static (`libtessera.a`) and shared (`libtessera.so`) library behind the
//! header `include/tessera.h`, which cbindgen generates from this crate (a test keeps the
//! checked-in header identical to what the sources produce).
//!
//! The shape follows llama.h: load a model, create contexts from it, tokenize, decode batches,
//! read logits, sample, render chat templates. What differs is the boundary discipline:
//!
//! - every function returns a [`tessera_status`] (or a value that cannot fail), and stores a
//!   message for [`tessera_last_error`] on the calling thread;
//! - every body runs under `catch_unwind` (`error::guard`): no panic reaches C;
//! - handles are checked against a table of live handles and a magic number before use
//!   ([`handles`]), and contexts/samplers are `try_lock`ed, so misuse from C is reported
//!   instead of crashing (see the header's preamble for the exact limits);
//! - buffers follow one "needed size" convention ([`buffers`]).
//!
//! Modules: [`error`] (status codes, last error), [`handles`], [`buffers`], [`model`],
//! [`context`], [`tokenize`], [`sampler`], [`grammar`], [`chat`].

#![allow(non_camel_case_types)]
#![warn(missing_docs)]

use std::ffi::c_char;

// Internal plumbing.
pub mod buffers;
pub mod handles;

// The API, in the order the header presents it.
pub mod error;

pub mod model;

pub mod tokenize;

pub mod context;

pub mod batch;

pub mod sampler;

pub mod grammar;

pub mod chat;

pub use batch::*;
pub use chat::*;
pub use context::*;
pub use error::{tessera_last_error, tessera_status, tessera_status_str};
pub use grammar::*;
pub use model::*;
pub use sampler::*;
pub use tokenize::*;

/// The library's version, "MAJOR.MINOR.PATCH". Never NULL.
///
/// Ownership: a static string; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    error::guard_value(c"?".as_ptr(), || VERSION.as_ptr().cast())
}

/// A model is shared by contexts across threads: it must stay `Send + Sync`, and contexts and
/// samplers must be movable between threads. Checked at compile time.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    const fn movable<T: Send>() {}
    shareable::<tessera_models::Model>();
    movable::<tessera_models::Context>();
    movable::<tessera_models::sampler::Sampler>();
    shareable::<model::tessera_model>();
    shareable::<context::tessera_context>();
    shareable::<sampler::tessera_sampler>();
};
