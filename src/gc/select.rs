//! Which objects eviction and gc may take, and in what order: pure
//! functions of what is on disk, what references it and when it was used.

use std::collections::HashMap;

use crate::metadata::{Millis, StorageReferences};
use crate::storage::ObjectEntry;

/// When an object was last used: its recorded last use, else its commit.
fn last_use(object: &ObjectEntry, uses: &HashMap<String, Millis>) -> Millis {
    uses.get(&object.digest.to_string()).copied().unwrap_or_else(|| i64::try_from(object.modified).unwrap_or(i64::MAX))
}

/// Used since the oldest running sync started: possibly fetched by it and
/// not recorded yet.
fn maybe_syncing(last: Millis, refs: &StorageReferences) -> bool {
    refs.sync_running_since.is_some_and(|since| last >= since)
}

/// The objects eviction may take, least recently used first (ties by
/// digest, so the order is stable): blobs a repository version records,
/// so they can be fetched again; not manifests, not protected content.
/// An object no version records yet (a pull the recorder has not written)
/// waits for a later pass; orphans are gc's. Pins are checked at removal.
pub(crate) fn eviction_order(
    objects: Vec<ObjectEntry>,
    refs: &StorageReferences,
    uses: &HashMap<String, Millis>,
) -> Vec<ObjectEntry> {
    let mut candidates: Vec<(Millis, ObjectEntry)> = objects
        .into_iter()
        .filter_map(|o| {
            let digest = o.digest.to_string();
            if !refs.referenced.contains(&digest) || refs.protected.contains(&digest) || refs.manifests.contains(&digest) {
                return None;
            }
            let last = last_use(&o, uses);
            (!maybe_syncing(last, refs)).then_some((last, o))
        })
        .collect();
    candidates.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.digest.to_string().cmp(&y.digest.to_string())));
    candidates.into_iter().map(|(_, o)| o).collect()
}

/// Whether gc may remove `object`: referenced by nothing, and not used
/// since `cutoff` nor since the oldest running sync started.
pub(crate) fn is_orphan(object: &ObjectEntry, refs: &StorageReferences, uses: &HashMap<String, Millis>, cutoff: Millis) -> bool {
    let last = last_use(object, uses);
    !refs.referenced.contains(&object.digest.to_string()) && last < cutoff && !maybe_syncing(last, refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Algorithm, Digest};

    fn object(name: &str, size: u64, modified: u64) -> ObjectEntry {
        ObjectEntry { digest: Digest::of(Algorithm::Sha256, name.as_bytes()), size, modified }
    }

    fn d(name: &str) -> String {
        Digest::of(Algorithm::Sha256, name.as_bytes()).to_string()
    }

    fn names(order: &[ObjectEntry], all: &[&str]) -> Vec<String> {
        order.iter().map(|o| all.iter().find(|n| d(n) == o.digest.to_string()).map_or("?".into(), |n| (*n).to_owned())).collect()
    }

    #[test]
    fn eviction_takes_least_recently_used_first_and_a_recorded_use_beats_the_commit_time() {
        let all = ["old", "mid", "new", "committed-long-ago-used-now"];
        let objects = vec![object("new", 1, 300), object("old", 1, 100), object("mid", 1, 200), object(all[3], 1, 50)];
        let uses = HashMap::from([(d(all[3]), 1_000), (d("mid"), 250)]);
        let refs = StorageReferences { referenced: all.iter().map(|n| d(n)).collect(), ..StorageReferences::default() };
        let order = eviction_order(objects, &refs, &uses);
        assert_eq!(names(&order, &all), ["old", "mid", "new", all[3]]);
    }

    #[test]
    fn eviction_never_takes_protected_content_or_manifests() {
        let all = ["pushed", "pinned-manifest", "cached"];
        let objects = vec![object("pushed", 1, 1), object("pinned-manifest", 1, 2), object("cached", 1, 3)];
        let refs = StorageReferences {
            referenced: all.iter().map(|n| d(n)).collect(),
            protected: [d("pushed")].into(),
            manifests: [d("pinned-manifest")].into(),
            ..StorageReferences::default()
        };
        assert_eq!(names(&eviction_order(objects, &refs, &HashMap::new()), &all), ["cached"]);
    }

    #[test]
    fn eviction_waits_for_an_object_to_be_recorded() {
        let all = ["recorded", "unrecorded"];
        let objects = vec![object("unrecorded", 1, 1), object("recorded", 1, 2)];
        let refs = StorageReferences { referenced: [d("recorded")].into(), ..StorageReferences::default() };
        assert_eq!(names(&eviction_order(objects, &refs, &HashMap::new()), &all), ["recorded"]);
    }

    #[test]
    fn nothing_used_since_a_running_sync_started_is_evicted_or_collected() {
        let all = ["before", "during"];
        let objects = vec![object("before", 1, 10), object("during", 1, 20)];
        let refs = StorageReferences {
            referenced: all.iter().map(|n| d(n)).collect(),
            sync_running_since: Some(15),
            ..StorageReferences::default()
        };
        assert_eq!(names(&eviction_order(objects.clone(), &refs, &HashMap::new()), &all), ["before"]);
        let unreferenced = StorageReferences { sync_running_since: Some(15), ..StorageReferences::default() };
        assert!(is_orphan(&objects[0], &unreferenced, &HashMap::new(), 100));
        assert!(!is_orphan(&objects[1], &unreferenced, &HashMap::new(), 100), "may be the sync's, unrecorded yet");
    }

    #[test]
    fn an_orphan_is_unreferenced_and_unused_since_the_cutoff() {
        let referenced = object("referenced", 1, 10);
        let young = object("young", 1, 500);
        let recently_used = object("recently-used", 1, 10);
        let old = object("old", 1, 10);
        let refs = StorageReferences { referenced: [d("referenced")].into(), ..StorageReferences::default() };
        let uses = HashMap::from([(d("recently-used"), 900)]);
        assert!(!is_orphan(&referenced, &refs, &uses, 100));
        assert!(!is_orphan(&young, &refs, &uses, 100));
        assert!(!is_orphan(&recently_used, &refs, &uses, 100));
        assert!(is_orphan(&old, &refs, &uses, 100));
    }
}
