//! The hot tier's bookkeeping, with the S3 backend: which objects have a
//! local copy under `objects/`, how large, and which was used least
//! recently. The bucket holds every object; a local copy is only ever a
//! second one, so evicting it loses nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::oci::Digest;

use super::ObjectEntry;

/// Eviction frees down to this fraction of the bound, so that it runs once
/// per many inserts rather than on each.
const LOW_WATER: f64 = 0.9;

pub(crate) struct HotTier {
    max: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// digest → (size, last use as a tick of `clock`)
    entries: HashMap<Digest, (u64, u64)>,
    bytes: u64,
    clock: u64,
}

impl HotTier {
    /// A tier bounded by `max` bytes (0: none), holding `found` (the local
    /// copies at start, oldest modification first in LRU order).
    pub(crate) fn new(max: u64, mut found: Vec<ObjectEntry>) -> HotTier {
        found.sort_by_key(|o| o.modified);
        let mut state = State::default();
        for o in found {
            state.clock += 1;
            state.bytes += o.size;
            state.entries.insert(o.digest, (o.size, state.clock));
        }
        HotTier { max, state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Single map operations: a poisoned map is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a copy of `size` bytes may be kept at all.
    pub(crate) fn admits(&self, size: u64) -> bool {
        self.max > 0 && size <= self.max
    }

    /// Bytes and count of local copies.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let s = self.lock();
        (s.bytes, s.entries.len() as u64)
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// Notes a use of the local copy of `digest`.
    pub(crate) fn touch(&self, digest: &Digest) {
        let mut s = self.lock();
        s.clock += 1;
        let tick = s.clock;
        if let Some(e) = s.entries.get_mut(digest) {
            e.1 = tick;
        }
    }

    /// Notes a new local copy; the copies to delete to stay under the
    /// bound, least recently used first (already forgotten here).
    #[must_use]
    pub(crate) fn inserted(&self, digest: &Digest, size: u64) -> Vec<(Digest, u64)> {
        let mut s = self.lock();
        s.clock += 1;
        let tick = s.clock;
        if let Some(old) = s.entries.insert(digest.clone(), (size, tick)) {
            s.bytes -= old.0;
        }
        s.bytes += size;
        if s.bytes <= self.max {
            return Vec::new();
        }
        let target = (self.max as f64 * LOW_WATER) as u64;
        let mut by_age: Vec<(u64, Digest, u64)> =
            s.entries.iter().filter(|(d, _)| *d != digest).map(|(d, (size, t))| (*t, d.clone(), *size)).collect();
        by_age.sort_unstable_by_key(|e| e.0);
        let mut victims = Vec::new();
        for (_, d, size) in by_age {
            if s.bytes <= target {
                break;
            }
            s.entries.remove(&d);
            s.bytes -= size;
            victims.push((d, size));
        }
        victims
    }

    /// Forgets the local copy of `digest` (deleted, or found missing).
    pub(crate) fn removed(&self, digest: &Digest) {
        let mut s = self.lock();
        if let Some((size, _)) = s.entries.remove(digest) {
            s.bytes -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    fn d(n: u8) -> Digest {
        Digest::of(Algorithm::Sha256, &[n])
    }

    #[test]
    fn least_recently_used_copies_go_first_down_to_the_low_water_mark() {
        let found = vec![
            ObjectEntry { digest: d(2), size: 30, modified: 200 },
            ObjectEntry { digest: d(1), size: 30, modified: 100 },
        ];
        let hot = HotTier::new(100, found);
        assert_eq!(hot.usage(), (60, 2));
        hot.touch(&d(1)); // now d(2) is the least recently used
        assert!(hot.inserted(&d(3), 30).is_empty(), "90 of 100");
        let victims = hot.inserted(&d(4), 30);
        assert_eq!(victims, vec![(d(2), 30)], "down to 90% of the bound, the least recently used first");
        assert_eq!(hot.usage(), (90, 3));
        let victims = hot.inserted(&d(5), 50);
        assert_eq!(victims, vec![(d(1), 30), (d(3), 30)], "never the copy just inserted");
        assert_eq!(hot.usage(), (80, 2));
        assert!(hot.admits(100) && !hot.admits(101));
        hot.removed(&d(4));
        hot.removed(&d(4));
        assert_eq!(hot.usage(), (50, 1));
    }

    #[test]
    fn a_tier_of_zero_keeps_nothing() {
        let hot = HotTier::new(0, Vec::new());
        assert!(!hot.admits(1));
        assert!(!hot.admits(0));
    }
}
