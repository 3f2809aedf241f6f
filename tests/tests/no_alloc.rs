//! A decode step allocates nothing: a counting global allocator watches `Context::eval` of
//! single tokens after warm-up. Only the test's own thread is counted (the harness allocates on
//! its threads, e.g. for its slow-test warning) and the context runs with one thread, so every
//! kernel of the step runs on the counted thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tessera_models::hparams::RopeOverrides;
use tessera_models::{Context, ContextParams, Model};
use tessera_tests::{GEMMA3, SMOLLM2, model};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted now.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.with(|c| c.get())
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counting touches only an atomic and a thread-local `Cell`, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract, passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn decode_allocations(file: &str) -> Option<usize> {
    let path = model(file)?;
    let m = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let mut ctx = Context::new(
        m,
        ContextParams {
            n_ctx: 256,
            n_threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    ctx.eval(&[10, 20, 30, 40, 50, 60, 70, 80], false).unwrap();
    // Warm-up: the single-token graph is planned and its buffers sized on first use.
    for t in 0..4 {
        ctx.eval(&[100 + t], false).unwrap();
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    for t in 0..16 {
        ctx.eval(&[200 + t], false).unwrap();
    }
    COUNTING.with(|c| c.set(false));
    Some(ALLOCATIONS.load(Ordering::SeqCst))
}

#[test]
fn decode_steps_allocate_nothing() {
    for file in [SMOLLM2, GEMMA3] {
        if let Some(n) = decode_allocations(file) {
            assert_eq!(n, 0, "{file}: 16 decode steps made {n} allocations");
        }
    }
}
