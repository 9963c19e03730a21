//! The tokio runtime the server runs on, sized to the CPUs the process may use.
//!
//! One CPU (a container limited to one core, `taskset -c 0`) gets a current-thread runtime: no
//! work-stealing queues, no cross-thread wake-ups. More CPUs get a multi-thread runtime with one
//! worker each, so the server uses every core it is given.
//!
//! Either way, a thread that runs out of work gives the memory it freed back to the OS before it
//! sleeps (see [`release_freed_memory`]).

use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// A runtime with `threads` workers, or one per CPU this process may run on (its affinity mask,
/// as `taskset` and container CPU sets limit it).
pub fn build(threads: Option<NonZeroUsize>) -> io::Result<Runtime> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let mut builder = if threads == 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .on_thread_park(release_freed_memory)
        .enable_all()
        .build()
}

/// Returns what this thread's allocator holds but no longer uses to the OS; runs each time a
/// runtime thread runs out of work and parks.
///
/// mimalloc (the binaries' allocator) keeps freed pages for reuse, and takes back blocks freed
/// by other threads only when their owner allocates again: after a burst of 10,000 calls in
/// flight an idle server kept 48 MiB RSS for good (idle 6 MiB). Collecting on park brings it back
/// to 8 MiB within a second, and costs nothing measurable: under full load threads rarely park,
/// and a small heap is quick to collect (h2load on one CPU, and at a fixed 2k and 20k calls/s:
/// req/s and CPU time per call within run-to-run noise; see CONTRIBUTING.md, "Performance").
fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions: it walks the calling thread's own heap and
    // mimalloc's shared, internally synchronised arenas. With another global allocator it finds
    // mimalloc's heap empty and does nothing.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
