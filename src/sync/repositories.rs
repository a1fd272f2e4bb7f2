//! Sync repositories as the admin API creates and changes them: names
//! checked (a client must be able to address them, and they must not hide
//! under an upstream's path prefix), schedules computed with jitter.

use std::sync::Arc;
use std::time::Duration;

use crate::metadata::{now_millis, Metadata, MetadataError, Millis, NewRepository, Repository, RepositoryPatch};
use crate::oci::RepositoryName;

/// Shortest interval between scheduled syncs.
pub(crate) const MIN_SYNC_INTERVAL: u64 = 60;
/// Longest: a year (a bound on a typo, not a policy).
pub(crate) const MAX_SYNC_INTERVAL: u64 = 366 * 24 * 3600;
/// Scheduled syncs start up to this fraction of their interval late, so
/// repositories set up together do not all sync at the same moment.
const JITTER: f64 = 0.1;
const MAX_DESCRIPTION: usize = 1024;

/// The sync repositories service. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SyncRepositories {
    metadata: Metadata,
    upstream_names: Arc<Vec<String>>,
}

impl SyncRepositories {
    pub(crate) fn new(metadata: Metadata, upstream_names: Vec<String>) -> SyncRepositories {
        SyncRepositories { metadata, upstream_names: Arc::new(upstream_names) }
    }

    /// Creates a sync repository; its first scheduled sync (if any) is
    /// computed here, whatever `new.next_sync_at` says.
    pub(crate) async fn create(&self, mut new: NewRepository) -> Result<Repository, MetadataError> {
        self.check_name(&new.name)?;
        check_settings(&new.description, new.retain_versions, new.sync_interval)?;
        if new.sync_interval.is_some() && new.remote.is_none() {
            return Err(MetadataError::Invalid("sync_interval needs a remote to sync from".into()));
        }
        self.check_remote(new.remote.clone()).await?;
        new.next_sync_at = new.sync_interval.map(|s| next_sync(now_millis(), s));
        self.metadata.run(move |s| s.create_repository(&new)).await
    }

    pub(crate) async fn update(&self, name: String, mut patch: RepositoryPatch) -> Result<Repository, MetadataError> {
        let description = patch.description.clone().flatten();
        check_settings(&description, patch.retain_versions.flatten(), patch.sync_interval.flatten())?;
        if let Some(Some(remote)) = &patch.remote {
            self.check_remote(Some(remote.clone())).await?;
        }
        let current = {
            let name = name.clone();
            self.metadata.run(move |s| s.repository(&name)).await?
        };
        let current = current.ok_or_else(|| MetadataError::NotFound(format!("repository {name:?} does not exist")))?;
        let interval = patch.sync_interval.unwrap_or(current.sync_interval);
        let remote = patch.remote.clone().unwrap_or(current.remote.clone());
        if interval.is_some() && remote.is_none() {
            return Err(MetadataError::Invalid("sync_interval needs a remote to sync from".into()));
        }
        // A new interval restarts the schedule from now.
        if let Some(changed) = patch.sync_interval {
            if changed != current.sync_interval {
                patch.next_sync_at = Some(changed.map(|s| next_sync(now_millis(), s)));
            }
        }
        self.metadata.run(move |s| s.update_repository(&name, &patch)).await
    }

    pub(crate) async fn delete(&self, name: String) -> Result<(), MetadataError> {
        self.metadata.run(move |s| s.delete_repository(&name)).await
    }

    /// Moves a repository's next scheduled sync one interval on.
    /// Claims the due run of `repo`'s schedule (as read: its
    /// `next_sync_at`), moving it on by its interval; false if another
    /// node claimed it first or the schedule changed meanwhile.
    pub(crate) async fn claim_schedule(&self, repo: &Repository) -> Result<bool, MetadataError> {
        let (Some(interval), Some(seen)) = (repo.sync_interval, repo.next_sync_at) else { return Ok(false) };
        let next = next_sync(now_millis(), interval);
        let name = repo.name.clone();
        self.metadata.run(move |s| s.claim_sync_schedule(&name, seen, next)).await
    }

    fn check_name(&self, name: &str) -> Result<(), MetadataError> {
        let parsed: RepositoryName = name
            .parse()
            .map_err(|e| MetadataError::Invalid(format!("repository name {name:?} is not valid: {e}")))?;
        let (first, rest) = parsed.split_first();
        if rest.is_some() && self.upstream_names.iter().any(|u| u == first) {
            return Err(MetadataError::Conflict(format!(
                "repository name {name:?} lies under upstream {first:?}, whose pull-through repositories use that prefix"
            )));
        }
        Ok(())
    }

    async fn check_remote(&self, remote: Option<String>) -> Result<(), MetadataError> {
        let Some(remote) = remote else { return Ok(()) };
        let found = {
            let remote = remote.clone();
            self.metadata.run(move |s| s.remote(&remote)).await?
        };
        match found {
            Some(_) => Ok(()),
            None => Err(MetadataError::Invalid(format!("remote {remote:?} does not exist"))),
        }
    }
}

fn check_settings(description: &Option<String>, retain: Option<u32>, interval: Option<u64>) -> Result<(), MetadataError> {
    if description.as_ref().is_some_and(|d| d.len() > MAX_DESCRIPTION) {
        return Err(MetadataError::Invalid(format!("description is longer than {MAX_DESCRIPTION} bytes")));
    }
    if retain == Some(0) {
        return Err(MetadataError::Invalid("retain_versions must be at least 1 (null keeps every version)".into()));
    }
    if let Some(s) = interval {
        if !(MIN_SYNC_INTERVAL..=MAX_SYNC_INTERVAL).contains(&s) {
            return Err(MetadataError::Invalid(format!(
                "sync_interval must be from {MIN_SYNC_INTERVAL} to {MAX_SYNC_INTERVAL} seconds, not {s}"
            )));
        }
    }
    Ok(())
}

/// When a sync every `interval` seconds is next due after `now`: one
/// interval on, plus up to a tenth of it at random.
pub(crate) fn next_sync(now: Millis, interval: u64) -> Millis {
    let mut b = [0u8; 4];
    let random = match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
        Ok(4) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        _ => 0.5,
    };
    let base = Duration::from_secs(interval).as_millis() as f64;
    now.saturating_add((base * (1.0 + JITTER * random)) as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_sync_is_one_interval_on_plus_at_most_a_tenth() {
        for _ in 0..100 {
            let at = next_sync(1_000, 3600);
            assert!((1_000 + 3_600_000..=1_000 + 3_960_000).contains(&at), "{at}");
        }
    }

    #[test]
    fn settings_are_bounded() {
        assert!(check_settings(&None, Some(0), None).is_err());
        assert!(check_settings(&None, None, Some(59)).is_err());
        assert!(check_settings(&None, None, Some(MAX_SYNC_INTERVAL + 1)).is_err());
        assert!(check_settings(&Some("x".repeat(2000)), None, None).is_err());
        assert!(check_settings(&Some("fine".into()), Some(3), Some(3600)).is_ok());
    }
}
