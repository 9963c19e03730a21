//! The tokio runtime the server runs on, sized to the CPUs the process may use.
//!
//! One CPU (a container limited to one core, `taskset -c 0`) gets a current-thread runtime: no
//! work-stealing queues, no cross-thread wake-ups. More CPUs get a multi-thread runtime with one
//! worker each, so the server uses every core it is given.

use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// A runtime with `threads` workers, or one per CPU this process may run on (its affinity mask,
/// as `taskset` and container CPU sets limit it).
pub fn build(threads: Option<NonZeroUsize>) -> io::Result<Runtime> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    if threads == 1 {
        Builder::new_current_thread().enable_all().build()
    } else {
        Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}
