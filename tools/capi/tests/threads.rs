//! The C API driven from Rust through the rlib: one model shared by contexts on several
//! threads (each must produce llama.cpp's greedy tokens), the model freed before its
//! contexts, and a context refused with `TESSERA_ERR_BUSY` while another thread holds it.

mod common;

use std::ffi::CString;
use std::ptr;

use tessera::*;

/// A raw handle that may cross threads (the header documents which handles may).
struct Shared<T>(*mut T);
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}
// SAFETY: the header's thread rules allow it: a model may be used from any number of threads,
// and a context may move between threads (a concurrent call gets `TESSERA_ERR_BUSY` from its
// `try_lock` instead of racing).
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as for `Send`: the API checks and locks every handle itself.
unsafe impl<T> Sync for Shared<T> {}

/// Held by every test of this file while it runs: the thread-count test counts the process's
/// threads, which the other tests' threads would change under it.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T> Shared<T> {
    /// The pointer (a method, so closures capture the whole `Shared`, not its field).
    fn get(self) -> *mut T {
        self.0
    }
}

fn ok(st: tessera_status) {
    // SAFETY: `tessera_last_error` never returns NULL, and its string lives until the next
    // API call on this thread.
    assert_eq!(st, tessera_status::TESSERA_OK, "{:?}", unsafe {
        std::ffi::CStr::from_ptr(tessera_last_error())
    });
}

/// Greedy-decode `n` tokens after `prompt` in a fresh context of `model`.
fn greedy(model: *const tessera_model, prompt: &[i32], n: usize) -> Vec<i32> {
    // SAFETY: `model` is a live handle that outlives this call; every other pointer is a
    // local that lives through the calls using it, and the handles made here are freed once.
    unsafe {
        let mut ctx = ptr::null_mut();
        ok(tessera_context_new(model, ptr::null(), &mut ctx));
        let mut params = tessera_sampler_default_params();
        params.greedy = true;
        let mut smp = ptr::null_mut();
        ok(tessera_sampler_new(&params, &mut smp));
        ok(tessera_decode(
            ctx,
            prompt.as_ptr(),
            prompt.len() as i32,
            false,
        ));
        let mut out = Vec::new();
        for _ in 0..n {
            let mut t = -1;
            ok(tessera_sampler_sample(smp, ctx, &mut t));
            out.push(t);
            ok(tessera_decode(ctx, &t, 1, false));
        }
        ok(tessera_sampler_free(smp));
        ok(tessera_context_free(ctx));
        out
    }
}

fn load(path: &std::path::Path) -> *mut tessera_model {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut params = tessera_model_default_params();
    params.n_ctx = 64;
    params.n_threads = 1;
    let mut m = ptr::null_mut();
    // SAFETY: `c` is NUL-terminated, `params` and `m` are live locals.
    ok(unsafe { tessera_model_load(c.as_ptr(), &params, &mut m) });
    m
}

#[test]
fn one_model_many_threads() {
    let _serial = one_at_a_time();
    let Some(path) = common::smollm2() else {
        return;
    };
    let model = Shared(load(&path));
    let prompt = [504, 3575, 282, 4649, 314]; // "The capital of France is"
    let expected = [7042, 30, 198]; // " Paris", ".", "\n" (llama.cpp's greedy fixture)
    let handles: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || greedy(model.get(), &prompt, 3)))
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected);
    }
    // SAFETY: every thread using the model has been joined, so none uses it any more.
    ok(unsafe { tessera_model_free(model.0) });
}

#[test]
fn contexts_outlive_their_model_and_refuse_concurrent_use() {
    let _serial = one_at_a_time();
    let Some(path) = common::smollm2() else {
        return;
    };
    let model = load(&path);
    let mut ctx = ptr::null_mut();
    // SAFETY: `model` is a live handle and `ctx` a live local.
    ok(unsafe { tessera_context_new(model, ptr::null(), &mut ctx) });
    // SAFETY: `model` is live and no other thread uses it; the context holds its own reference.
    ok(unsafe { tessera_model_free(model) });
    let ctx = Shared(ctx);

    // Hold the context busy in one thread (a long decode) while another pokes at it.
    let tokens: Vec<i32> = (0..48).map(|i| 100 + i).collect();
    // The worker retries while refused: the poking thread may hold the context for an instant
    // just as the worker starts, and then it is the worker that is told `TESSERA_ERR_BUSY`.
    let worker = std::thread::spawn(move || {
        loop {
            // SAFETY: `ctx` is live until it is freed after this thread is joined; `tokens` moves
            // into the closure and outlives the call.
            let st =
                unsafe { tessera_decode(ctx.get(), tokens.as_ptr(), tokens.len() as i32, true) };
            if st != tessera_status::TESSERA_ERR_BUSY {
                return st;
            }
            std::thread::yield_now();
        }
    });
    let mut saw_busy = false;
    while !worker.is_finished() {
        let mut n = 0;
        // SAFETY: `ctx` is live (freed only at the end); concurrent use is refused with
        // `TESSERA_ERR_BUSY`, not raced.
        match unsafe { tessera_n_past(ctx.0, &mut n) } {
            tessera_status::TESSERA_ERR_BUSY => {
                // SAFETY: `tessera_last_error` never returns NULL, and its string lives until the next
                // API call on this thread.
                let msg = unsafe { std::ffi::CStr::from_ptr(tessera_last_error()) };
                assert!(msg.to_str().unwrap().contains("another thread"), "{msg:?}");
                saw_busy = true;
            }
            st => assert_eq!(st, tessera_status::TESSERA_OK),
        }
        std::thread::yield_now();
    }
    ok(worker.join().unwrap());
    assert!(
        saw_busy,
        "the decode finished before the other thread could see it busy"
    );
    let mut row = ptr::null();
    // SAFETY: `ctx` is live and the worker is joined; `row` is a live local.
    ok(unsafe { tessera_get_logits_ith(ctx.0, 0, &mut row) });
    // SAFETY: `ctx` is live, and the only other thread that used it has been joined.
    ok(unsafe { tessera_context_free(ctx.0) });
}

/// Threads running in this process, from `/proc/self/status`.
#[cfg(target_os = "linux")]
fn process_threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line[8..].trim().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn absurd_thread_counts_are_refused_and_leave_no_threads_behind() {
    let _serial = one_at_a_time();
    let Some(path) = common::smollm2() else {
        return;
    };
    let model = load(&path);
    let before = process_threads();
    let mut params = tessera_context_default_params();
    params.n_threads = 100_000;
    let mut ctx = ptr::null_mut();
    // SAFETY: `model` is a live handle from `load`, `params` and `ctx` are valid locals.
    let st = unsafe { tessera_context_new(model, &params, &mut ctx) };
    assert_eq!(st, tessera_status::TESSERA_ERR_INVALID_ARGUMENT);
    // SAFETY: tessera_last_error never returns NULL; its string lives until the next call.
    let msg = unsafe { std::ffi::CStr::from_ptr(tessera_last_error()) };
    assert!(msg.to_str().unwrap().contains("at most 1024"), "{msg:?}");
    assert!(ctx.is_null());
    assert_eq!(process_threads(), before, "threads left running");
    // SAFETY: `model` is live and freed once; no context was made from it.
    ok(unsafe { tessera_model_free(model) });
}
