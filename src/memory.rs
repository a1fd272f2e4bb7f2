//! Keeps the memory a burst of blob fills uses from staying resident.
//!
//! A fill receives its upstream body in buffers of a few hundred KiB.
//! glibc's malloc serves the first of them by `mmap`, then raises its mmap
//! threshold past their size, so later ones come from its heaps, between
//! small allocations that outlive the burst; once a herd of fills has ended
//! those heaps are mostly free but cannot shrink, and each burst starts
//! from the last one's high-water mark. Two measures, both glibc's own
//! knobs:
//!
//! - [`tune`], at start, pins the mmap threshold at glibc's initial 128
//!   KiB, so large buffers always come from `mmap` and go back to the
//!   kernel when freed.
//! - [`release_after_fills`]: once no fill is in flight (checked every
//!   [`CHECK_EVERY`], and only after a fill has ended since the last
//!   release), free heap memory is handed back with `malloc_trim`.
//!
//! Nothing on a request's path waits for either.

use std::time::Duration;

/// How often to look whether fills have ended and none is in flight.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs forever: after fills have ended and none is in flight, releases
/// the allocator's free memory. `activity` says how many fills have ended
/// so far, or None while one is in flight.
pub(crate) async fn release_after_fills(activity: impl Fn() -> Option<u64>) {
    watch(activity, release).await
}

async fn watch(activity: impl Fn() -> Option<u64>, release: impl Fn() -> bool + Clone + Send + 'static) {
    let mut released_at = 0;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match activity() {
            Some(ended) if ended != released_at => {
                released_at = ended;
                // It walks every arena, under each one's lock: not on a
                // runtime thread.
                let _ = tokio::task::spawn_blocking(release.clone()).await;
            }
            _ => {}
        }
    }
}

/// Large allocations from `mmap` always: glibc's initial threshold, fixed
/// (setting it turns off the dynamic raise). Call once, at start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // A call into glibc's allocator; see Cargo.toml.
pub(crate) fn tune() {
    // SAFETY: mallopt takes two integers and changes only the allocator's
    // own parameters, under its lock; glibc documents it as MT-Safe. It
    // returns 0 on failure, which leaves glibc's default behaviour.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
}

/// Other allocators decide for themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune() {}

/// glibc's own initial mmap threshold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Returns free heap memory to the kernel; whether any was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // A call into glibc's allocator; see Cargo.toml.
pub(crate) fn release() -> bool {
    // SAFETY: malloc_trim takes no pointers and touches only the
    // allocator's own state, locking each arena in turn; glibc documents it
    // as thread-safe (MT-Safe), so any thread may call it at any time.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Other allocators return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn tune_and_release_can_be_called_any_time() {
        tune();
        let big: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 300 << 10]).collect();
        drop(big);
        // Whether anything was free depends on the allocator's state; it
        // must simply be callable, from any thread, repeatedly.
        let _ = release();
        let _ = std::thread::spawn(release).join();
    }

    /// One release per burst: not while a fill runs, not again until
    /// another fill has ended.
    #[tokio::test(start_paused = true)]
    async fn releases_once_a_burst_of_fills_has_ended() {
        let ended = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicU64::new(0));
        let releases = Arc::new(AtomicU64::new(0));
        let (e, f, r) = (ended.clone(), in_flight.clone(), releases.clone());
        let activity = move || (f.load(Ordering::SeqCst) == 0).then(|| e.load(Ordering::SeqCst));
        tokio::spawn(watch(activity, move || r.fetch_add(1, Ordering::SeqCst) < u64::MAX));
        let released_after = |secs| {
            let releases = releases.clone();
            async move {
                // spawn_blocking runs on a real thread: let it finish.
                for _ in 0..secs * 10 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    tokio::task::yield_now().await;
                }
                std::thread::sleep(Duration::from_millis(20));
                tokio::time::sleep(Duration::from_millis(1)).await;
                releases.load(Ordering::SeqCst)
            }
        };
        assert_eq!(released_after(3).await, 0, "nothing ended yet");
        in_flight.store(1, Ordering::SeqCst);
        ended.store(1, Ordering::SeqCst);
        assert_eq!(released_after(3).await, 0, "a fill is still in flight");
        in_flight.store(0, Ordering::SeqCst);
        assert_eq!(released_after(3).await, 1, "idle after a fill ended");
        assert_eq!(released_after(3).await, 1, "no fill ended since");
        ended.store(5, Ordering::SeqCst);
        assert_eq!(released_after(3).await, 2, "more fills ended");
    }
}
