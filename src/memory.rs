//! Keeps the memory a burst of blob fills uses from staying resident.
//!
//! The binary runs on jemalloc (`src/main.rs`). A fill receives its
//! upstream body in buffers of a few hundred KiB; jemalloc serves the next
//! fill's buffers from the pages the last one freed, without the `mmap`,
//! page faults and `munmap` per buffer that glibc's malloc needed to keep a
//! burst's memory from staying behind (docs/BENCHMARKS.md). Pages nobody
//! uses go back to the kernel after jemalloc's decay time; [`tune`] starts
//! jemalloc's background thread, so that happens on an idle server too,
//! not only when the next allocation looks.
//!
//! Nothing on a request's path waits for either.

/// Starts the allocator's background purging. Call once, at start, before
/// the runtime's threads exist. A failure leaves jemalloc purging only on
/// allocator calls: logged, never fatal.
pub(crate) fn tune() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start the allocator's background thread; unused memory is returned only when the allocator runs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tune_starts_the_background_purge() {
        tune();
        assert_eq!(tikv_jemalloc_ctl::background_thread::read().ok(), Some(true));
    }
}
