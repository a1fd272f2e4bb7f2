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

/// How long a page a fill freed may stay resident unused. jemalloc's own
/// default, ten seconds, kept a burst's memory through the next burst when
/// they came a few seconds apart: herds of 50 clients one after another
/// then started each from the last one's high-water mark.
const DIRTY_DECAY_MS: isize = 1000;

/// Starts the allocator's background purging, with a short decay. Call
/// once, at start, before the runtime's threads exist. A failure leaves
/// jemalloc's defaults: logged, never fatal.
pub(crate) fn tune() {
    use tikv_jemalloc_ctl::{Access, AsName};
    // Arenas made from now on, then every arena made so far (4096 is
    // jemalloc's MALLCTL_ARENAS_ALL).
    for key in [&b"arenas.dirty_decay_ms\0"[..], &b"arena.4096.dirty_decay_ms\0"[..]] {
        if let Err(e) = key.name().write(DIRTY_DECAY_MS) {
            tracing::warn!(error = %e, "cannot shorten the allocator's decay time; unused memory stays longer");
        }
    }
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start the allocator's background thread; unused memory is returned only when the allocator runs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tune_starts_the_background_purge_with_a_short_decay() {
        use tikv_jemalloc_ctl::{Access, AsName};
        tune();
        assert_eq!(tikv_jemalloc_ctl::background_thread::read().ok(), Some(true));
        let decay: Result<isize, _> = b"arenas.dirty_decay_ms\0".name().read();
        assert_eq!(decay.ok(), Some(DIRTY_DECAY_MS));
        let first: Result<isize, _> = b"arena.0.dirty_decay_ms\0".name().read();
        assert_eq!(first.ok(), Some(DIRTY_DECAY_MS), "the arena made before tune ran too");
    }
}
