//! The tokio runtimes of the two binaries, sized to the CPUs the process may use.
//!
//! One CPU (a container limited to one core, `taskset -c 0`) gets a current-thread runtime: no
//! work-stealing queues, no cross-thread wake-ups. More CPUs get a multi-thread runtime with one
//! worker each, so a binary uses every core it is given.
//!
//! The server's also keeps its memory small between bursts: a thread that runs out of work gives
//! the memory it freed back to the OS before it sleeps (see `release_freed_memory`), and
//! [`sweep_workers`] makes every thread do so once the server falls idle. The client, short-lived
//! or (`client bench`) busy throughout, has no use for that.

use std::cell::Cell;
use std::io;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle, Runtime};

/// The server's runtime: `threads` workers, or one per CPU this process may run on (its
/// affinity mask, as `taskset` and container CPU sets limit it), giving freed memory back as
/// they park.
pub fn server(threads: Option<NonZeroUsize>) -> io::Result<Runtime> {
    sized(threads)
        .on_thread_park(release_freed_memory)
        .enable_all()
        .build()
}

/// The client's runtime: one worker per CPU.
pub fn client() -> io::Result<Runtime> {
    sized(None).enable_all().build()
}

fn sized(threads: Option<NonZeroUsize>) -> Builder {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    if threads == 1 {
        return Builder::new_current_thread();
    }
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(threads);
    builder
}

/// Returns what this thread's allocator holds but no longer uses to the OS; runs each time a
/// runtime thread runs out of work and parks.
///
/// mimalloc (the binaries' allocator) keeps freed pages for reuse, and takes back blocks freed
/// by other threads only when their owner allocates again: after a burst of 10,000 calls in
/// flight an idle server kept 48 MiB RSS for good (idle 6 MiB). Collecting on park brings it back
/// to 8 MiB within a second.
///
/// Only a park 10 ms or more after the last forced one forces the pages out at once. A thread
/// serving one call at a time parks after every call; forcing each time handed a page back to
/// the OS per call whenever the call's headers made it span one more page, and the next call
/// faulted it in again: +10 us per call for a client sending one header more than h2load (one
/// page fault per call, `perf stat -e page-faults`). The parks in between collect without
/// forcing: mimalloc then returns a page once it has stayed free past its purge delay. Forcing
/// only once a second was too seldom: under a burst of large messages freed as fast as they came
/// (`tests/reliability/attacks/memory.rs`) the peak doubled, 54 -> 112 MiB; at 50 ms it was 72,
/// past the test's bound; at 10 ms it is 57.
fn release_freed_memory() {
    const FORCE_EVERY: Duration = Duration::from_millis(10);
    thread_local! {
        static LAST_FORCED: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let force = LAST_FORCED
        .get()
        .is_none_or(|at| now.duration_since(at) >= FORCE_EVERY);
    if force {
        LAST_FORCED.set(Some(now));
    }
    collect(force);
}

fn collect(force: bool) {
    // SAFETY: mi_collect has no preconditions: it walks the calling thread's own heap and
    // mimalloc's shared, internally synchronised arenas. With another global allocator it finds
    // mimalloc's heap empty and does nothing.
    unsafe { libmimalloc_sys::mi_collect(force) }
}

/// How long the server waits after its last connection closed before [`sweep_workers`]: the
/// connections' tasks (each polls its own calls) finish and free their memory meanwhile.
const SWEEP_DELAY: Duration = Duration::from_millis(200);

/// Has every runtime thread return its freed memory to the OS at once (see
/// `release_freed_memory`), a moment from now. For when the server falls idle.
///
/// Needed because a block one thread frees for another goes back to the other's heap only when
/// that one next runs: a thread already asleep when the last connection's memory was freed on
/// its neighbour would keep those pages (a debug build after 10,000 calls in flight: 27 MiB
/// instead of 15). Each thread gets a task that holds it for a moment, so the next task cannot
/// wait for it and wakes another thread.
pub fn sweep_workers() {
    let handle = Handle::current();
    let workers = handle.metrics().num_workers();
    handle.spawn(async move {
        tokio::time::sleep(SWEEP_DELAY).await;
        for _ in 0..workers {
            tokio::spawn(async {
                std::thread::sleep(Duration::from_micros(500));
                collect(true);
            });
        }
    });
}
