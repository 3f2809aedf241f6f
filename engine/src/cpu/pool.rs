//! A small fork-join thread pool for graph execution: `n - 1` workers plus the calling thread
//! run one closure over a fixed number of tasks, each task told its index. Tasks are claimed
//! dynamically, so when a worker is not scheduled (a busy or oversubscribed machine) the caller
//! simply runs its tasks instead of waiting for it. Dispatch allocates nothing and workers spin
//! briefly before sleeping, so the ~200 small ops of a decode step cost microseconds each.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The job: `f(task_index, n_tasks)`.
type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Incremented for every new job; workers run a job when they see it change.
    generation: AtomicUsize,
    /// Next task index to claim.
    next_task: AtomicUsize,
    /// Tasks finished.
    done_tasks: AtomicUsize,
    /// Tasks of the current job.
    n_tasks: AtomicUsize,
    /// The current job (a pointer to a closure on the caller's stack, valid until `pending`
    /// reaches zero).
    job: Mutex<Option<*const Job>>,
    wake: Condvar,
    sleepers: Mutex<usize>,
    stop: AtomicBool,
    /// Workers that have started running (the pool is ready when all have).
    started: AtomicUsize,
    n_threads: usize,
}

// SAFETY: the raw job pointer is only dereferenced while the caller of `run` keeps the closure
// alive (it waits for all workers); the closure itself is `Sync`.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`: the job pointer is only read while `run` keeps the closure,
// which is `Sync`, alive; every other field is `Sync` itself.
unsafe impl Sync for Shared {}

/// A fixed set of threads that run closures together.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// Busy-spin iterations before a waiting thread starts yielding its core.
const SPIN_BEFORE_YIELD: usize = 2_000;
/// Spin-or-yield iterations before a worker sleeps (roughly a few hundred µs).
const SPIN_LIMIT: usize = 20_000;

/// One step of a wait loop: spin at first, then give the core away so an oversubscribed
/// machine (more runnable threads than cores) still makes progress.
#[inline]
fn backoff(spins: usize) {
    if spins < SPIN_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl ThreadPool {
    /// A pool of `n_threads` threads in total (the caller counts as one). `0` means the number
    /// of physical cores as far as std can tell (available parallelism). Panics where the
    /// system refuses a thread; [`Self::try_new`] returns the error instead.
    pub fn new(n_threads: usize) -> ThreadPool {
        Self::try_new(n_threads).expect("spawn worker thread")
    }

    /// A pool of `n_threads` threads in total, or the system's reason for refusing one; the
    /// workers already started are then stopped and joined, so nothing is left running.
    pub fn try_new(n_threads: usize) -> std::io::Result<ThreadPool> {
        let n = if n_threads == 0 {
            default_threads()
        } else {
            n_threads
        };
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            next_task: AtomicUsize::new(usize::MAX / 2),
            done_tasks: AtomicUsize::new(0),
            n_tasks: AtomicUsize::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            sleepers: Mutex::new(0),
            stop: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            n_threads: n,
        });
        // Built before the workers, so that a failed spawn drops it: Drop stops and joins the
        // workers spawned so far.
        let mut pool = ThreadPool {
            shared: shared.clone(),
            workers: Vec::with_capacity(n - 1),
        };
        for idx in 1..n {
            let s = shared.clone();
            let worker = std::thread::Builder::new()
                .name(format!("tessera-{idx}"))
                .spawn(move || worker(s))?;
            pool.workers.push(worker);
        }
        // Wait until every worker runs, so thread start-up (and its allocations) is over before
        // the first job.
        let mut spins = 0;
        while shared.started.load(Ordering::Acquire) < n - 1 {
            backoff(spins);
            spins += 1;
        }
        Ok(pool)
    }

    /// Number of threads, the caller included.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Tasks a job is cut into: a few per thread, so work moves to whichever thread runs.
    pub fn n_tasks(&self) -> usize {
        let n = self.shared.n_threads;
        if n == 1 { 1 } else { n * TASKS_PER_THREAD }
    }

    /// Run `f(i, n)` for every task `i` in `0..n` (`n` = [`Self::n_tasks`]) on whichever
    /// threads are free, and return when all are done. Tasks must be independent.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.n_tasks();
        if n == 1 {
            f(0, 1);
            return;
        }
        let s = &*self.shared;
        // SAFETY: the pointer's lifetime is erased; we do not return until every task is done,
        // and a worker only dereferences it after claiming a task of this job.
        let ptr: *const Job = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize, usize) + Sync + '_), *const Job>(f)
        };
        *s.job.lock().unwrap() = Some(ptr);
        s.n_tasks.store(n, Ordering::SeqCst);
        s.done_tasks.store(0, Ordering::SeqCst);
        s.next_task.store(0, Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if *s.sleepers.lock().unwrap() > 0 {
            s.wake.notify_all();
        }
        loop {
            let i = s.next_task.fetch_add(1, Ordering::AcqRel);
            if i >= n {
                break;
            }
            f(i, n);
            s.done_tasks.fetch_add(1, Ordering::AcqRel);
        }
        let mut spins = 0;
        while s.done_tasks.load(Ordering::Acquire) != n {
            backoff(spins);
            spins += 1;
        }
        // No more claims for this job.
        s.next_task.store(usize::MAX / 2, Ordering::SeqCst);
    }
}

/// Tasks per thread in a job.
const TASKS_PER_THREAD: usize = 4;

fn worker(s: Arc<Shared>) {
    let mut seen = 0usize;
    s.started.fetch_add(1, Ordering::Release);
    loop {
        let mut spins = 0;
        let gen_now = loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen || s.stop.load(Ordering::Acquire) {
                break g;
            }
            spins += 1;
            if spins < SPIN_LIMIT {
                backoff(spins);
                continue;
            }
            let mut sleepers = s.sleepers.lock().unwrap();
            *sleepers += 1;
            // Re-check under the lock so a wake-up between the load and the wait is not lost.
            while s.generation.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                sleepers = s.wake.wait(sleepers).unwrap();
            }
            *sleepers -= 1;
            spins = 0;
        };
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        seen = gen_now;
        loop {
            let i = s.next_task.fetch_add(1, Ordering::AcqRel);
            let n = s.n_tasks.load(Ordering::Acquire);
            if i >= n {
                break;
            }
            let job = s
                .job
                .lock()
                .unwrap()
                .expect("a job is set before tasks are claimable");
            // SAFETY: see `run`: the closure lives until every task is done.
            unsafe { (*job)(i, n) };
            s.done_tasks.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _g = self.shared.sleepers.lock().unwrap();
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The most threads a pool takes (the command line and the C ABI refuse more).
pub const MAX_THREADS: usize = 1024;

/// The default thread count: available parallelism (physical cores on most machines here).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The half-open range of `0..len` that thread `i` of `n` owns, in chunks aligned to `align`.
pub fn split_range(len: usize, i: usize, n: usize, align: usize) -> std::ops::Range<usize> {
    let align = align.max(1);
    let units = len.div_ceil(align);
    let per = units.div_ceil(n.max(1));
    let start = (i * per * align).min(len);
    let end = ((i + 1) * per * align).min(len);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_once_per_job() {
        for n in [1, 2, 3, 4] {
            let pool = ThreadPool::new(n);
            for round in 0..200u64 {
                let sum = AtomicU64::new(0);
                let tasks = pool.n_tasks();
                pool.run(&|i, nth| {
                    assert_eq!(nth, tasks);
                    sum.fetch_add(i as u64 + round, Ordering::Relaxed);
                });
                let want: u64 = (0..tasks as u64).map(|i| i + round).sum();
                assert_eq!(sum.load(Ordering::Relaxed), want);
            }
        }
    }

    #[test]
    fn wakes_after_sleeping() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let hits = AtomicU64::new(0);
        pool.run(&|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), pool.n_tasks() as u64);
    }

    #[test]
    fn ranges_cover_everything_once() {
        for len in [0, 1, 7, 64, 1000] {
            for n in 1..5 {
                let mut covered = vec![0; len];
                for i in 0..n {
                    for j in split_range(len, i, n, 4) {
                        covered[j] += 1;
                    }
                }
                assert!(covered.iter().all(|&c| c == 1));
            }
        }
    }
}
