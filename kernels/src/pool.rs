//! The kernels' fork/join pool: the calling thread works too, and the
//! helpers spin for a short while before they park.
//!
//! Decode runs ~100 small parallel regions per token, each a few tens of
//! microseconds of work, from mistral.rs's engine thread, which is not a
//! rayon worker: handing such a region to rayon means injecting a job,
//! waking a sleeping worker and blocking the caller on a latch, several
//! microseconds each way, and idle rayon workers yield in a loop. Here a
//! region costs a store, a few atomic increments and (when the helpers are
//! still spinning) no system call at all; the caller takes its share of the
//! tasks instead of sleeping.
//!
//! Helpers are started on first use, never before: the worker installs its
//! seccomp filters first, and threads created later inherit them.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// One parallel region: tasks `0..tasks` of `f`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Takes and runs tasks until none is left.
    fn work(&self) {
        loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= self.tasks {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.f)(t))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }
}

struct Helper {
    thread: Thread,
    parked: AtomicBool,
}

struct Pool {
    /// The running job (type-erased `Job`), null between regions.
    current: AtomicPtr<()>,
    /// Bumped once per region; helpers wait for it to change.
    epoch: AtomicU64,
    /// Helpers that may be looking at `current`.
    in_job: AtomicUsize,
    /// One region at a time; a second submitter runs its tasks inline.
    submit: Mutex<()>,
    helpers: Vec<Helper>,
}

thread_local! {
    /// Set on the pool's own threads: a region inside a task runs inline.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Threads (caller included) the kernels use: see `configured_threads`
/// (`RAYON_NUM_THREADS`, which the worker sets from `--threads`).
pub fn threads() -> usize {
    pool().helpers.len() + 1
}

/// The thread count the way rayon's global pool reads it: a positive
/// `RAYON_NUM_THREADS`, else the available parallelism. Not
/// `rayon::current_num_threads()`: mistral.rs's engine thread runs inside a
/// one-thread rayon pool of its own (patches/mistralrs-core-0.8.1/0005).
fn configured_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let n = configured_threads();
        let mut helpers = Vec::new();
        for i in 1..n {
            let spawned = std::thread::Builder::new()
                .name(format!("airlock-kernels-{i}"))
                .spawn(helper_loop);
            // Without a helper the caller simply does all the work.
            if let Ok(h) = spawned {
                helpers.push(Helper {
                    thread: h.thread().clone(),
                    parked: AtomicBool::new(false),
                });
            }
        }
        Pool {
            current: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicU64::new(0),
            in_job: AtomicUsize::new(0),
            submit: Mutex::new(()),
            helpers,
        }
    })
}

fn helper_loop() {
    IN_POOL.with(|p| p.set(true));
    // The pool is being initialised by the thread that spawned us.
    let pool = loop {
        if let Some(p) = POOL.get() {
            break p;
        }
        std::thread::sleep(Duration::from_micros(50));
    };
    let me = std::thread::current().id();
    let Some(slot) = pool.helpers.iter().find(|h| h.thread.id() == me) else {
        return;
    };
    let mut seen = pool.epoch.load(Ordering::SeqCst);
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        while pool.epoch.load(Ordering::SeqCst) == seen {
            spins += 1;
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            if since.elapsed() < SPIN {
                continue;
            }
            // Park; `run` unparks a helper it sees parked after its bump,
            // and a bump before our check is seen by the check.
            slot.parked.store(true, Ordering::SeqCst);
            if pool.epoch.load(Ordering::SeqCst) == seen {
                std::thread::park();
            }
            slot.parked.store(false, Ordering::SeqCst);
            since = Instant::now();
        }
        seen = pool.epoch.load(Ordering::SeqCst);
        pool.in_job.fetch_add(1, Ordering::SeqCst);
        let p = pool.current.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `run` keeps the job alive until `in_job` is back to
            // zero after it cleared `current`; we counted ourselves in before
            // loading `current`, so a non-null value is still alive.
            let job = unsafe { &*(p as *const Job<'_>) };
            job.work();
        }
        pool.in_job.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `f(0)`, …, `f(tasks - 1)` across the caller and the pool's helpers
/// and returns when all are done. Tasks must be independent. A panic in a
/// task is re-raised here, after every task has finished.
pub fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    if tasks <= 1 || IN_POOL.with(|p| p.get()) {
        (0..tasks).for_each(f);
        return;
    }
    let pool = pool();
    let guard = match pool.submit.try_lock() {
        Ok(g) => g,
        // Another thread's region is running: do ours inline.
        Err(_) => {
            (0..tasks).for_each(f);
            return;
        }
    };
    if pool.helpers.is_empty() {
        drop(guard);
        (0..tasks).for_each(f);
        return;
    }
    let job = Job {
        f,
        tasks,
        next: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    };
    pool.current
        .store(&job as *const Job<'_> as *mut (), Ordering::SeqCst);
    pool.epoch.fetch_add(1, Ordering::SeqCst);
    for h in &pool.helpers {
        if h.parked.load(Ordering::SeqCst) {
            h.thread.unpark();
        }
    }
    IN_POOL.with(|p| p.set(true));
    job.work();
    IN_POOL.with(|p| p.set(false));
    pool.current.store(std::ptr::null_mut(), Ordering::SeqCst);
    while pool.in_job.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
    drop(guard);
    if job.panicked.load(Ordering::Relaxed) {
        // Same as rayon: a task's panic surfaces in the caller.
        std::panic::resume_unwind(Box::new("a kernel task panicked"));
    }
}

/// Runs `f(i, chunk_i)` for the consecutive `chunk`-long pieces of `buf`
/// (the last may be shorter) across the pool, like `run`.
pub fn run_chunks_mut<T: Send>(buf: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    if chunk == 0 || buf.is_empty() {
        return;
    }
    let len = buf.len();
    let tasks = len.div_ceil(chunk);
    let base = SendPtr(buf.as_mut_ptr());
    run(tasks, &|i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        // SAFETY: `start + n <= len` for every task i < tasks, the pieces of
        // distinct tasks are disjoint, each task runs once, and `buf` stays
        // mutably borrowed until `run` has returned.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(i, piece);
    });
}

/// A raw pointer the tasks of one region share (they touch disjoint parts).
struct SendPtr<T>(*mut T);

// SAFETY: used only by `run_chunks_mut`, whose tasks write disjoint pieces
// of one `&mut [T]` with `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_once_across_many_regions() {
        for tasks in [0usize, 1, 2, 3, 17, 1000] {
            for _ in 0..200 {
                let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                run(tasks, &|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{tasks}"
                );
            }
        }
    }

    #[test]
    fn regions_from_several_threads_and_nested_regions_complete() {
        let total = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..100 {
                        run(8, &|_| {
                            run(4, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 100 * 8 * 4);
    }

    #[test]
    fn chunks_are_disjoint_and_complete() {
        for (len, chunk) in [(0usize, 3usize), (1, 3), (10, 3), (12, 3), (1000, 7)] {
            let mut v = vec![0u32; len];
            run_chunks_mut(&mut v, chunk, &|i, piece| {
                for x in piece.iter_mut() {
                    *x += 1 + i as u32;
                }
            });
            for (j, x) in v.iter().enumerate() {
                assert_eq!(*x, 1 + (j / chunk) as u32, "{len}/{chunk} at {j}");
            }
        }
    }

    #[test]
    fn a_parked_helper_wakes_up() {
        run(4, &|_| {});
        std::thread::sleep(SPIN * 4);
        let n = AtomicU32::new(0);
        run(64, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_after_the_others() {
        let done = AtomicU32::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            run(16, &|t| {
                if t == 5 {
                    panic!("task 5");
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(r.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 15);
        // The pool still works.
        let n = AtomicU32::new(0);
        run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
