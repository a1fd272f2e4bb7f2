use super::push::numbered;
use super::SqlStore;
use crate::metadata::db::postgres::Target;
use crate::metadata::*;
use crate::oci::{Algorithm, Digest};

pub(crate) fn digest(seed: &str) -> Digest {
    Digest::of(Algorithm::Sha256, seed.as_bytes())
}

pub(crate) fn blob(seed: &str) -> Descriptor {
    Descriptor { digest: digest(seed), media_type: Some("application/octet-stream".into()), size: Some(seed.len() as u64) }
}

/// An image manifest named `seed` with a config and the given layers.
pub(crate) fn image(seed: &str, layers: &[&str]) -> ManifestFacts {
    ManifestFacts {
        digest: digest(seed),
        media_type: crate::oci::media::OCI_MANIFEST.into(),
        size: 100,
        artifact_type: None,
        subject: None,
        config: Some(blob(&format!("{seed}-config"))),
        layers: layers.iter().map(|l| blob(l)).collect(),
        children: Vec::new(),
        annotations: None,
    }
}

fn origin() -> Origin {
    Origin { upstream: "up".into(), remote_name: "app".into(), retain_versions: None }
}

pub(crate) fn pulled(facts: ManifestFacts, tag: Option<&str>) -> Recording {
    Recording {
        repository: "up/app".into(),
        origin: origin(),
        change: Change::Manifest { facts, tag: tag.map(str::to_owned) },
    }
}

/// Creates a sync repository (no remote, additive, unscheduled).
pub(super) fn sync_repository(s: &SqlStore, name: &str) {
    let new = NewRepository {
        name: name.into(),
        description: None,
        retain_versions: None,
        remote: None,
        sync_mirror: false,
        sync_interval: None,
        next_sync_at: None,
    };
    s.create_repository(&new).unwrap();
}

/// Where a test's store lives: a temporary SQLite file, or, when
/// `WHARF_TEST_POSTGRES` names a PostgreSQL database (a URL or libpq
/// key=value string), a schema of its own there, dropped at the end.
pub(crate) struct TestDb {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub(crate) fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.db");
        let postgres = std::env::var("WHARF_TEST_POSTGRES").ok().filter(|u| !u.is_empty()).map(|url| {
            let schema = format!("test_{}", rand::random::<u64>());
            let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect to WHARF_TEST_POSTGRES");
            admin.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
            (url, schema)
        });
        TestDb { _dir: dir, path, postgres }
    }

    /// Opens the store (again: its data stays between opens).
    pub(crate) fn open(&self) -> SqlStore {
        match &self.postgres {
            None => SqlStore::open_sqlite(&self.path).unwrap(),
            Some((url, schema)) => {
                let mut target = Target::parse(url, None, 4, None).unwrap();
                target.config.options(&format!("-c search_path={schema}"));
                SqlStore::open_postgres(target).unwrap()
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((url, schema)) = &self.postgres {
            if let Ok(mut admin) = postgres::Client::connect(url, postgres::NoTls) {
                let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
            }
        }
    }
}

pub(crate) fn open() -> (TestDb, SqlStore) {
    let db = TestDb::new();
    let store = db.open();
    (db, store)
}

pub(super) fn counts(tags: u64, manifests: u64, blobs: u64) -> Counts {
    Counts { tags, manifests, blobs, signatures: 0 }
}

fn tag_of(s: &SqlStore, v: VersionRef, tag: &str) -> Option<Digest> {
    s.resolve_tag("up/app", v, tag).unwrap().map(|t| t.digest)
}

#[test]
fn pulls_make_versions_with_summaries_and_a_moved_tag_keeps_old_versions() {
    let (_d, s) = open();
    let created = s.record(&[pulled(image("m1", &["l1", "shared"]), Some("1"))]).unwrap();
    assert_eq!(created, vec![Created { repository: "up/app".into(), number: 1 }]);
    s.record(&[pulled(image("m2", &["l2", "shared"]), Some("2"))]).unwrap();
    s.record(&[pulled(image("m3", &["l3"]), Some("1"))]).unwrap();

    let v1 = s.version("up/app", Some(1)).unwrap();
    assert_eq!(v1.base_version, Some(0));
    assert_eq!(v1.summary.added, counts(1, 1, 3));
    assert_eq!(v1.summary.present, counts(1, 1, 3));
    let v2 = s.version("up/app", Some(2)).unwrap();
    assert_eq!(v2.summary.added, counts(1, 1, 2), "the shared layer is already present");
    assert_eq!(v2.summary.present, counts(2, 2, 5));
    let v3 = s.version("up/app", None).unwrap();
    assert_eq!(v3.number, 3);
    assert_eq!(v3.summary.added, counts(1, 1, 2));
    assert_eq!(v3.summary.removed, counts(1, 0, 0), "only the old tag leaves; its manifest stays");
    assert_eq!(v3.summary.present, counts(2, 3, 7));

    assert_eq!(tag_of(&s, Some(1), "1"), Some(digest("m1")));
    assert_eq!(tag_of(&s, Some(2), "1"), Some(digest("m1")));
    assert_eq!(tag_of(&s, None, "1"), Some(digest("m3")));
    assert_eq!(tag_of(&s, Some(1), "2"), None);
    assert_eq!(s.tag_names("up/app", None).unwrap(), vec!["1", "2"]);
    assert_eq!(s.versions("up/app", PageRequest::default()).unwrap().total, 4, "versions 0 to 3");
    let repo = s.repository("up/app").unwrap().unwrap();
    assert_eq!((repo.kind, repo.latest_version, repo.upstream.as_deref()), (RepositoryKind::PullThrough, 3, Some("up")));
}

#[test]
fn recording_what_is_already_there_makes_no_version() {
    let (_d, s) = open();
    s.record(&[pulled(image("m1", &["l1"]), Some("1"))]).unwrap();
    assert!(s.record(&[pulled(image("m1", &["l1"]), Some("1"))]).unwrap().is_empty());
    assert!(s.record(&[pulled(image("m1", &["l1"]), None)]).unwrap().is_empty());
    assert_eq!(s.repository("up/app").unwrap().unwrap().latest_version, 1);
}

#[test]
fn one_batch_is_one_version_even_when_a_tag_moves_twice() {
    let (_d, s) = open();
    s.record(&[pulled(image("m1", &["l1"]), Some("t"))]).unwrap();
    let created = s
        .record(&[pulled(image("m2", &["l2"]), Some("t")), pulled(image("m3", &["l3"]), Some("t"))])
        .unwrap();
    assert_eq!(created.len(), 1);
    let v2 = s.version("up/app", None).unwrap();
    assert_eq!(v2.summary.added.tags, 1);
    assert_eq!(v2.summary.removed.tags, 1);
    assert_eq!(tag_of(&s, None, "t"), Some(digest("m3")));
}

#[test]
fn a_removed_tag_leaves_the_next_version() {
    let (_d, s) = open();
    s.record(&[pulled(image("m1", &["l1"]), Some("t"))]).unwrap();
    let gone = Recording { repository: "up/app".into(), origin: origin(), change: Change::TagRemoved { tag: "t".into() } };
    assert_eq!(s.record(std::slice::from_ref(&gone)).unwrap().len(), 1);
    assert_eq!(tag_of(&s, None, "t"), None);
    assert_eq!(tag_of(&s, Some(1), "t"), Some(digest("m1")));
    assert!(s.record(&[gone]).unwrap().is_empty(), "removing what is gone changes nothing");
}

#[test]
fn deleting_a_version_keeps_every_other_version_exact() {
    let (_d, s) = open();
    s.record(&[pulled(image("m1", &["l1"]), Some("a"))]).unwrap(); // v1
    s.record(&[pulled(image("m2", &["l2"]), Some("a"))]).unwrap(); // v2: a -> m2
    s.record(&[pulled(image("m1", &["l1"]), Some("a"))]).unwrap(); // v3: a -> m1 again
    let before: Vec<_> = [Some(1), Some(3)].iter().map(|v| (tag_of(&s, *v, "a"), s.version("up/app", *v).unwrap().summary.present)).collect();
    s.delete_version("up/app", 2).unwrap();
    let after: Vec<_> = [Some(1), Some(3)].iter().map(|v| (tag_of(&s, *v, "a"), s.version("up/app", *v).unwrap().summary.present)).collect();
    assert_eq!(before, after);
    assert!(matches!(s.version("up/app", Some(2)), Err(MetadataError::NotFound(_))));
    let v3 = s.version("up/app", Some(3)).unwrap();
    assert_eq!(v3.base_version, Some(1));
    assert_eq!(v3.summary.added, counts(0, 1, 2), "m2 arrived after v1 and is still present");
    assert_eq!(v3.summary.removed, counts(0, 0, 0), "tag a is back where it was in v1");

    assert!(matches!(s.delete_version("up/app", 3), Err(MetadataError::Conflict(_))), "latest");
    assert!(matches!(s.delete_version("up/app", 9), Err(MetadataError::NotFound(_))));
}

#[test]
fn retention_keeps_the_newest_versions_and_pinned_ones() {
    let (_d, s) = open();
    let keep2 = Origin { retain_versions: Some(2), ..origin() };
    let rec = |seed: &str, tag: &str| Recording {
        repository: "up/app".into(),
        origin: keep2.clone(),
        change: Change::Manifest { facts: image(seed, &[seed]), tag: Some(tag.into()) },
    };
    s.record(&[rec("m1", "1")]).unwrap();
    s.create_distribution(&NewDistribution {
        name: "pinned".into(),
        base_path: "pinned/app".into(),
        repository: "up/app".into(),
        version: Some(1),
        private: false,
        description: None,
    })
    .unwrap();
    for (i, m) in ["m2", "m3", "m4"].iter().enumerate() {
        s.record(&[rec(m, &format!("{}", i + 2))]).unwrap();
    }
    let numbers: Vec<u64> =
        s.versions("up/app", PageRequest::default()).unwrap().items.iter().map(|v| v.number).collect();
    assert_eq!(numbers, vec![4, 3, 1], "2 kept newest plus the pinned one");
    assert_eq!(s.version("up/app", None).unwrap().summary.present, counts(4, 4, 8));
    assert_eq!(tag_of(&s, Some(1), "1"), Some(digest("m1")));
}

#[test]
fn content_listings_filter_and_page() {
    let (_d, s) = open();
    let mut index = image("idx", &[]);
    index.media_type = crate::oci::media::OCI_INDEX.into();
    index.config = None;
    index.children = vec![IndexChild {
        descriptor: Descriptor { digest: digest("m1"), media_type: Some(crate::oci::media::OCI_MANIFEST.into()), size: Some(100) },
        platform: Some(Platform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) }),
    }];
    s.record(&[pulled(index, Some("multi")), pulled(image("m1", &["l1", "l2"]), None)]).unwrap();
    let page = PageRequest { limit: 1, offset: 0 };
    let all = ContentFilter::default();
    let blobs = s.blobs("up/app", None, &all, page).unwrap();
    assert_eq!((blobs.total, blobs.items.len()), (3, 1));
    let one = ContentFilter { digest: Some(digest("l2")), tag: None };
    assert_eq!(s.blobs("up/app", None, &one, PageRequest::default()).unwrap().items[0].digest, digest("l2"));
    let manifests = s.manifests("up/app", Some(1), &all, PageRequest::default()).unwrap();
    assert_eq!(manifests.total, 2);
    let idx = manifests.items.iter().find(|m| m.facts.digest == digest("idx")).unwrap();
    assert_eq!(idx.facts.children.len(), 1);
    let child = manifests.items.iter().find(|m| m.facts.digest == digest("m1")).unwrap();
    assert_eq!(child.platform.as_ref().map(|p| p.architecture.as_str()), Some("arm64"));
    assert_eq!(child.facts.layers.len(), 2);
    let tags = s.tags("up/app", None, &ContentFilter { digest: None, tag: Some("multi".into()) }, page).unwrap();
    assert_eq!(tags.items[0].digest, digest("idx"));
    assert!(matches!(s.tags("up/app", Some(7), &all, page), Err(MetadataError::NotFound(_))));
    assert!(matches!(s.tags("no/such", None, &all, page), Err(MetadataError::NotFound(_))));
}

#[test]
fn a_version_contains_what_its_manifests_point_at() {
    let (_d, s) = open();
    let mut index = image("idx", &[]);
    index.config = None;
    index.children = vec![IndexChild { descriptor: blob("other-platform"), platform: None }];
    s.record(&[pulled(index, Some("t")), pulled(image("m1", &["l1"]), None)]).unwrap();
    let has = |k, seed: &str| s.contains("up/app", None, k, &digest(seed)).unwrap();
    assert!(has(ContentType::Manifest, "idx"));
    assert!(has(ContentType::Manifest, "other-platform"), "listed by the index");
    assert!(has(ContentType::Blob, "l1"));
    assert!(!has(ContentType::Blob, "nope"));
    assert!(!has(ContentType::Manifest, "l1"));
}

#[test]
fn distributions_check_their_target_and_base_path() {
    let (_d, s) = open();
    s.record(&[pulled(image("m1", &["l1"]), Some("1"))]).unwrap();
    let new = NewDistribution {
        name: "d1".into(),
        base_path: "apps/one".into(),
        repository: "up/app".into(),
        version: None,
        private: false,
        description: Some("first".into()),
    };
    let d = s.create_distribution(&new).unwrap();
    assert_eq!((d.repository.as_str(), d.version), ("up/app", None));
    assert!(matches!(s.create_distribution(&new), Err(MetadataError::Conflict(_))), "same name");
    let same_path = NewDistribution { name: "d2".into(), ..new.clone() };
    assert!(matches!(s.create_distribution(&same_path), Err(MetadataError::Conflict(_))), "same base_path");
    let bad_version = NewDistribution { name: "d3".into(), base_path: "x".into(), version: Some(5), ..new.clone() };
    assert!(matches!(s.create_distribution(&bad_version), Err(MetadataError::NotFound(_))));
    let no_repo = NewDistribution { name: "d4".into(), base_path: "y".into(), repository: "nope".into(), ..new.clone() };
    assert!(matches!(s.create_distribution(&no_repo), Err(MetadataError::NotFound(_))));

    let pinned = s
        .update_distribution("d1", &DistributionPatch { version: Some(Some(1)), description: Some(None), ..Default::default() })
        .unwrap();
    assert_eq!((pinned.version, pinned.description), (Some(1), None));
    assert!(matches!(s.delete_version("up/app", 1), Err(MetadataError::Conflict(_))));
    let latest = s.update_distribution("d1", &DistributionPatch { version: Some(None), ..Default::default() }).unwrap();
    assert_eq!(latest.version, None);
    assert_eq!(s.distributions(PageRequest::default()).unwrap().total, 1);
    s.delete_distribution("d1").unwrap();
    assert!(matches!(s.delete_distribution("d1"), Err(MetadataError::NotFound(_))));
}

fn pushed(s: &SqlStore, change: PushChange) -> Option<u64> {
    s.push("team/app", &change).unwrap()
}

fn manifest_change(facts: ManifestFacts, tag: Option<&str>) -> PushChange {
    PushChange::Manifest { facts, tag: tag.map(str::to_owned) }
}

#[test]
fn a_push_repository_comes_with_a_distribution_named_after_it() {
    let (_d, s) = open();
    s.create_distribution(&NewDistribution {
        name: "team.app".into(),
        base_path: "elsewhere".into(),
        repository: {
            s.record(&[pulled(image("m1", &["l1"]), None)]).unwrap();
            "up/app".into()
        },
        version: None,
        private: false,
        description: None,
    })
    .unwrap();
    s.create_push_repository("team/app", "team.app").unwrap();
    s.create_push_repository("team/app", "team.app").unwrap(); // again: nothing new
    let repo = s.repository("team/app").unwrap().unwrap();
    assert_eq!((repo.kind, repo.latest_version), (RepositoryKind::Push, 0));
    let all = s.distributions(PageRequest::default()).unwrap().items;
    let d = all.iter().find(|d| d.base_path == "team/app").unwrap();
    assert_eq!((d.name.as_str(), d.repository.as_str(), d.version), ("team.app-2", "team/app", None));
    assert_eq!(all.len(), 2);
    assert!(matches!(s.create_push_repository("up/app", "up.app"), Err(MetadataError::Conflict(_))));
    assert!(matches!(s.push("up/app", &PushChange::DeleteTag { tag: "x".into() }), Err(MetadataError::Conflict(_))));
    assert_eq!(numbered(&"x".repeat(64), 12).len(), 64);
}

#[test]
fn uploaded_blobs_are_visible_in_the_latest_version_until_a_manifest_makes_them_content() {
    let (_d, s) = open();
    s.create_push_repository("team/app", "team.app").unwrap();
    let has_blob = |v: VersionRef, seed: &str| s.contains("team/app", v, ContentType::Blob, &digest(seed)).unwrap();
    s.add_uploaded_blob("team/app", &blob("m1-config")).unwrap();
    s.add_uploaded_blob("team/app", &blob("l1")).unwrap();
    s.add_uploaded_blob("team/app", &blob("stray")).unwrap();
    assert!(has_blob(None, "l1"), "uploaded: visible");
    assert!(!has_blob(None, "other"));
    assert_eq!(s.repository("team/app").unwrap().unwrap().latest_version, 0, "uploads make no version");

    assert_eq!(pushed(&s, manifest_change(image("m1", &["l1"]), Some("1"))), Some(1));
    let v1 = s.version("team/app", Some(1)).unwrap();
    assert_eq!(v1.summary.added, counts(1, 1, 2));
    assert!(has_blob(Some(1), "l1"), "now version content");
    assert!(has_blob(None, "stray"), "still an uploaded blob of the latest version");
    assert!(!has_blob(Some(0), "l1"));
    assert!(s.contains("team/app", None, ContentType::Manifest, &digest("m1")).unwrap());
    assert_eq!(pushed(&s, manifest_change(image("m1", &["l1"]), Some("1"))), None, "nothing changed");

    // Only pushed content counts: a layer of a manifest the index
    // lists is not implied in a push repository.
    let mut index = image("idx", &[]);
    index.config = None;
    index.children = vec![IndexChild { descriptor: blob("m1"), platform: None }];
    assert_eq!(pushed(&s, manifest_change(index, Some("multi"))), Some(2));
    assert!(!has_blob(None, "nope"));

    // A build's manifests and tags: one version.
    let change = PushChange::Manifests(vec![(image("m3", &["l3"]), vec!["1.4".into(), "latest".into()]), (image("m4", &["l4"]), vec![])]);
    assert_eq!(pushed(&s, change), Some(3));
    let v3 = s.version("team/app", Some(3)).unwrap();
    assert_eq!(v3.summary.added, counts(2, 2, 4));
    assert_eq!(s.tag_names("team/app", Some(3)).unwrap(), ["1", "1.4", "latest", "multi"]);
}

#[test]
fn deletes_make_versions_and_leave_older_versions_alone() {
    let (_d, s) = open();
    s.create_push_repository("team/app", "team.app").unwrap();
    pushed(&s, manifest_change(image("m1", &["l1"]), Some("a")));
    pushed(&s, manifest_change(image("m1", &["l1"]), Some("b")));
    pushed(&s, manifest_change(image("m2", &["l2"]), Some("c")));
    assert_eq!(s.tag_names("team/app", None).unwrap(), vec!["a", "b", "c"]);

    assert_eq!(pushed(&s, PushChange::DeleteTag { tag: "c".into() }), Some(4));
    assert_eq!(s.tag_names("team/app", None).unwrap(), vec!["a", "b"]);
    assert!(s.contains("team/app", None, ContentType::Manifest, &digest("m2")).unwrap(), "the manifest stays");

    assert_eq!(pushed(&s, PushChange::DeleteManifest { digest: digest("m1") }), Some(5));
    let v5 = s.version("team/app", None).unwrap();
    assert_eq!(v5.summary.removed, counts(2, 1, 0), "both tags go with the manifest");
    assert!(s.tag_names("team/app", None).unwrap().is_empty());
    assert_eq!(s.tag_names("team/app", Some(3)).unwrap(), vec!["a", "b", "c"], "old versions keep theirs");

    assert_eq!(pushed(&s, PushChange::DeleteBlob { digest: digest("l1") }), Some(6));
    assert!(!s.contains("team/app", None, ContentType::Blob, &digest("l1")).unwrap());
    assert!(s.contains("team/app", Some(5), ContentType::Blob, &digest("l1")).unwrap());

    s.add_uploaded_blob("team/app", &blob("up")).unwrap();
    assert_eq!(pushed(&s, PushChange::DeleteBlob { digest: digest("up") }), None, "uploads are outside versions");
    assert!(!s.contains("team/app", None, ContentType::Blob, &digest("up")).unwrap());

    for gone in [
        PushChange::DeleteBlob { digest: digest("up") },
        PushChange::DeleteTag { tag: "a".into() },
        PushChange::DeleteManifest { digest: digest("m1") },
        PushChange::DeleteManifest { digest: digest("never") },
    ] {
        assert!(matches!(s.push("team/app", &gone), Err(MetadataError::NotFound(_))), "{gone:?}");
    }
    assert_eq!(s.repository("team/app").unwrap().unwrap().latest_version, 6);
}

fn remote(name: &str) -> Remote {
    Remote {
        name: name.into(),
        url: "https://quay.io".into(),
        upstream_name: "team/app".into(),
        include_tags: vec!["v1.*".into(), "sha256:00".into()],
        exclude_tags: vec!["*-rc?".into()],
        policy: SyncPolicy::OnDemand,
        credentials: Some(RemoteCredentials { username: "bot".into(), password: "s3cret".into() }),
        credentials_from: None,
        tls_verify: false,
        ca_cert: Some("-----BEGIN CERTIFICATE-----".into()),
        sigstore: None,
        download_concurrency: Some(4),
        rate_limit: None,
        created_at: 0,
        updated_at: 0,
    }
}

#[test]
fn remotes_round_trip_and_change_in_one_transaction() {
    let (_d, s) = open();
    let created = s.create_remote(&remote("quay")).unwrap();
    assert!(created.created_at > 0);
    assert_eq!(s.remote("quay").unwrap().unwrap(), created, "every field comes back as stored");
    assert!(matches!(s.create_remote(&remote("quay")), Err(MetadataError::Conflict(_))));
    s.create_remote(&remote("another")).unwrap();

    let changed = s
        .update_remote("quay", &mut |r| {
            r.name = "quay2".into();
            r.credentials = None;
            r.credentials_from = Some("docker.io".into());
            Ok(())
        })
        .unwrap();
    assert_eq!((changed.name.as_str(), changed.credentials.as_ref()), ("quay2", None));
    assert!(s.remote("quay").unwrap().is_none());
    let refused = s.update_remote("quay2", &mut |r| {
        r.policy = SyncPolicy::Immediate;
        Err(MetadataError::Invalid("no".into()))
    });
    assert!(matches!(refused, Err(MetadataError::Invalid(_))));
    assert_eq!(s.remote("quay2").unwrap().unwrap().policy, SyncPolicy::OnDemand, "a refused change writes nothing");
    let taken = s.update_remote("quay2", &mut |r| {
        r.name = "another".into();
        Ok(())
    });
    assert!(matches!(taken, Err(MetadataError::Conflict(_))));
    assert!(matches!(s.update_remote("nope", &mut |_| Ok(())), Err(MetadataError::NotFound(_))));

    let page = s.remotes(PageRequest { limit: 1, offset: 1 }).unwrap();
    assert_eq!((page.total, page.items[0].name.as_str()), (2, "quay2"));
    s.delete_remote("quay2").unwrap();
    assert!(matches!(s.delete_remote("quay2"), Err(MetadataError::NotFound(_))));
    assert!(!format!("{:?}", remote("x")).contains("s3cret"), "Debug hides the password");
}

#[test]
fn a_task_is_created_waiting_then_runs_progresses_and_finishes_once() {
    let (_d, s) = open();
    let params = serde_json::json!({"remote": "quay", "mirror": true});
    let t = s.create_task("n1", "sync", Some("team/app"), &params).unwrap();
    assert_eq!((t.state, t.kind.as_str(), t.resource.as_deref()), (TaskState::Waiting, "sync", Some("team/app")));
    assert_eq!((t.params.clone(), t.progress, t.started_at, t.finished_at), (params, TaskProgress::default(), None, None));
    assert!(t.created_at > 0);
    assert!(!s.task_progress(t.id, TaskProgress { items_done: 1, ..Default::default() }, None, "").unwrap(), "not running yet");

    let running = s.start_task(t.id).unwrap().expect("nothing else on its resource");
    assert_eq!((running.state, running.node.as_deref()), (TaskState::Running, Some("n1")));
    assert!(running.started_at.is_some());
    assert!(matches!(s.start_task(t.id), Err(MetadataError::Conflict(_))), "starts once");
    let p = TaskProgress { items_done: 3, items_total: Some(10), bytes_done: 12345 };
    assert!(!s.task_progress(t.id, p, Some("STEP 1/2: FROM scratch"), "STEP 1/2: FROM scratch\n").unwrap(), "no cancel asked");
    assert_eq!(s.task(t.id).unwrap().unwrap().progress, p);
    // The step is kept when none is given; the log grows.
    assert!(!s.task_progress(t.id, p, None, "a note\n").unwrap());
    assert!(!s.task_progress(t.id, p, Some("STEP 2/2: COPY a b"), "STEP 2/2: COPY a b\n").unwrap());
    assert!(!s.task_progress(t.id, p, None, "").unwrap());
    assert_eq!(s.task(t.id).unwrap().unwrap().step.as_deref(), Some("STEP 2/2: COPY a b"));
    assert_eq!(s.task_log(t.id).unwrap().as_deref(), Some("STEP 1/2: FROM scratch\na note\nSTEP 2/2: COPY a b\n"));
    assert_eq!(s.task_log(t.id + 1000).unwrap(), None);

    let created = [CreatedResource::RepositoryVersion { repository: "team/app".into(), number: 2 }];
    let done = s.finish_task(t.id, TaskState::Completed, None, &created).unwrap();
    assert_eq!((done.state, done.created_resources.as_slice()), (TaskState::Completed, &created[..]));
    assert!(done.finished_at.is_some());
    assert_eq!(s.task(t.id).unwrap().unwrap(), done, "every field comes back as stored");

    // Finished: nothing changes it any more.
    assert!(matches!(s.finish_task(t.id, TaskState::Failed, Some("late"), &[]), Err(MetadataError::Conflict(_))));
    assert!(!s.task_progress(t.id, TaskProgress { items_done: 99, ..p }, Some("late"), "late\n").unwrap());
    assert!(matches!(s.cancel_task(t.id, "stop"), Err(MetadataError::Conflict(_))));
    assert!(matches!(s.start_task(t.id), Err(MetadataError::Conflict(_))));
    assert_eq!(s.interrupt_tasks("n1", "restart").unwrap(), 0);
    assert_eq!(s.task(t.id).unwrap().unwrap(), done);

    assert!(matches!(s.finish_task(t.id, TaskState::Running, None, &[]), Err(MetadataError::Invalid(_))));
    assert!(matches!(s.finish_task(999, TaskState::Failed, None, &[]), Err(MetadataError::NotFound(_))));
    assert!(matches!(s.start_task(999), Err(MetadataError::NotFound(_))));
    assert!(s.task(999).unwrap().is_none());
}

#[test]
fn cancel_ends_a_waiting_task_and_leaves_a_running_one_to_its_runner() {
    let (_d, s) = open();
    let waiting = s.create_task("n1", "sync", None, &serde_json::json!({})).unwrap();
    let canceled = s.cancel_task(waiting.id, "canceled by request").unwrap();
    assert_eq!((canceled.state, canceled.error.as_deref()), (TaskState::Canceled, Some("canceled by request")));
    assert!(canceled.finished_at.is_some());
    assert!(matches!(s.start_task(waiting.id), Err(MetadataError::Conflict(_))), "a canceled task never starts");
    assert!(matches!(s.cancel_task(waiting.id, "canceled by request"), Err(MetadataError::Conflict(_))));

    let running = s.create_task("n1", "sync", None, &serde_json::json!({})).unwrap();
    s.start_task(running.id).unwrap();
    assert!(!s.cancel_requested(running.id).unwrap());
    let still = s.cancel_task(running.id, "canceled by request").unwrap();
    assert_eq!((still.state, still.error), (TaskState::Running, None));
    // Whichever node runs it learns of the cancel from the store.
    assert!(s.cancel_requested(running.id).unwrap());
    assert!(s.task_progress(running.id, TaskProgress { items_done: 1, ..Default::default() }, None, "").unwrap());
    assert!(matches!(s.cancel_task(12345, "x"), Err(MetadataError::NotFound(_))));
}

#[test]
fn tasks_list_newest_first_filtered_and_paged() {
    let (_d, s) = open();
    let none = serde_json::json!({});
    let a = s.create_task("n1", "sync", Some("a"), &none).unwrap();
    let b = s.create_task("n1", "gc", None, &none).unwrap();
    let c = s.create_task("n1", "sync", Some("b"), &none).unwrap();
    let d = s.create_task("n1", "sync", Some("a"), &none).unwrap();
    s.start_task(a.id).unwrap();
    let ids = |f: TaskFilter, page: PageRequest| {
        let listed = s.tasks(&f, page).unwrap();
        (listed.total, listed.items.iter().map(|t| t.id).collect::<Vec<_>>())
    };
    let all = PageRequest::default();
    assert_eq!(ids(TaskFilter::default(), all), (4, vec![d.id, c.id, b.id, a.id]));
    assert_eq!(ids(TaskFilter::default(), PageRequest { limit: 2, offset: 1 }), (4, vec![c.id, b.id]));
    let sync = TaskFilter { kind: Some("sync".into()), ..Default::default() };
    assert_eq!(ids(sync, all), (3, vec![d.id, c.id, a.id]));
    let on_a = TaskFilter { resource: Some("a".into()), ..Default::default() };
    assert_eq!(ids(on_a, all), (2, vec![d.id, a.id]));
    let running = TaskFilter { state: Some(TaskState::Running), ..Default::default() };
    assert_eq!(ids(running, all), (1, vec![a.id]));
    let waiting_gc = TaskFilter { state: Some(TaskState::Waiting), kind: Some("gc".into()), resource: None };
    assert_eq!(ids(waiting_gc, all), (1, vec![b.id]));
    let nothing = TaskFilter { kind: Some("verify".into()), ..Default::default() };
    assert_eq!(ids(nothing, all), (0, vec![]));
}

#[test]
fn interrupting_fails_every_unfinished_task_of_the_node_and_nothing_else() {
    let db = TestDb::new();
    let none = serde_json::json!({});
    let (waiting, running, done, elsewhere) = {
        let s = db.open();
        let waiting = s.create_task("n1", "sync", Some("a"), &none).unwrap();
        let running = s.create_task("n1", "sync", Some("b"), &none).unwrap();
        s.start_task(running.id).unwrap();
        s.task_progress(running.id, TaskProgress { items_done: 2, items_total: Some(5), bytes_done: 7 }, None, "").unwrap();
        let done = s.create_task("n1", "sync", Some("c"), &none).unwrap();
        s.start_task(done.id).unwrap();
        let done = s.finish_task(done.id, TaskState::Completed, None, &[]).unwrap();
        let elsewhere = s.create_task("n2", "sync", Some("d"), &none).unwrap();
        s.start_task(elsewhere.id).unwrap();
        (waiting, running, done, elsewhere)
    };
    let s = db.open();
    assert_eq!(s.interrupt_tasks("n1", "interrupted by a restart").unwrap(), 2);
    for id in [waiting.id, running.id] {
        let t = s.task(id).unwrap().unwrap();
        assert_eq!((t.state, t.error.as_deref()), (TaskState::Failed, Some("interrupted by a restart")));
        assert!(t.finished_at.is_some());
    }
    assert_eq!(s.task(running.id).unwrap().unwrap().progress.items_done, 2, "progress made is kept");
    assert_eq!(s.task(done.id).unwrap().unwrap(), done);
    assert_eq!(s.task(elsewhere.id).unwrap().unwrap().state, TaskState::Running, "another node's task runs on");
}

#[test]
fn a_resource_runs_one_task_at_a_time_across_nodes_in_submission_order() {
    let (_d, s) = open();
    let none = serde_json::json!({});
    let first = s.create_task("n1", "sync", Some("team/app"), &none).unwrap();
    let second = s.create_task("n2", "sync", Some("team/app"), &none).unwrap();
    let other = s.create_task("n2", "sync", Some("team/other"), &none).unwrap();
    assert!(s.start_task(second.id).unwrap().is_none(), "an earlier task on the resource waits");
    assert!(s.start_task(other.id).unwrap().is_some(), "other resources are free");
    assert!(s.start_task(first.id).unwrap().is_some());
    assert!(s.start_task(second.id).unwrap().is_none(), "the first runs");
    assert_eq!(s.task(second.id).unwrap().unwrap().state, TaskState::Waiting);
    s.finish_task(first.id, TaskState::Completed, None, &[]).unwrap();
    assert!(s.start_task(second.id).unwrap().is_some(), "its turn");
    assert!(matches!(s.start_task(second.id), Err(MetadataError::Conflict(_))), "starts once");
}

#[test]
fn the_tasks_of_a_silent_node_are_failed_and_the_live_ones_run_on() {
    let (_d, s) = open();
    let none = serde_json::json!({});
    s.node_heartbeat("gone", 1).unwrap();
    let t0 = now_millis();
    s.node_heartbeat("alive", t0).unwrap();
    let orphan = s.create_task("gone", "sync", Some("a"), &none).unwrap();
    s.start_task(orphan.id).unwrap();
    let queued = s.create_task("gone", "gc", None, &none).unwrap();
    let live = s.create_task("alive", "sync", Some("b"), &none).unwrap();
    s.start_task(live.id).unwrap();
    assert_eq!(s.fail_orphaned_tasks(t0 - 60_000).unwrap(), 0, "every heartbeat is recent enough");
    // "gone" beat last before now; "alive" beats again.
    std::thread::sleep(std::time::Duration::from_millis(5));
    s.node_heartbeat("alive", t0).unwrap();
    let cutoff = now_millis() - 1;
    std::thread::sleep(std::time::Duration::from_millis(2));
    s.node_heartbeat("alive", t0).unwrap();
    assert_eq!(s.fail_orphaned_tasks(cutoff).unwrap(), 2);
    for id in [orphan.id, queued.id] {
        let t = s.task(id).unwrap().unwrap();
        assert_eq!(t.state, TaskState::Failed);
        assert_eq!(t.error.as_deref(), Some("interrupted: its node, gone, stopped answering"));
    }
    assert_eq!(s.task(live.id).unwrap().unwrap().state, TaskState::Running);
    assert_eq!(s.fail_orphaned_tasks(cutoff).unwrap(), 0, "once");
}

#[test]
fn task_states_round_trip_through_their_names() {
    for state in TaskState::ALL {
        assert_eq!(TaskState::parse(state.as_str()), Some(state));
    }
    assert_eq!(TaskState::parse("cancelled"), None);
    let finished: Vec<_> = TaskState::ALL.into_iter().filter(|s| s.is_finished()).map(TaskState::as_str).collect();
    assert_eq!(finished, ["completed", "failed", "canceled"]);
}

#[test]
fn the_store_survives_reopening() {
    let db = TestDb::new();
    {
        let s = db.open();
        s.record(&[pulled(image("m1", &["l1"]), Some("1"))]).unwrap();
        s.set_upstream_tag("up", "app", "1", Some(&digest("m1"))).unwrap();
        s.set_upstream_tag("up", "app", "1", Some(&digest("m2"))).unwrap();
        s.set_upstream_tag("up", "app", "gone", Some(&digest("m2"))).unwrap();
        s.set_upstream_tag("up", "app", "gone", None).unwrap();
    }
    let s = db.open();
    assert_eq!(tag_of(&s, None, "1"), Some(digest("m1")));
    assert_eq!(s.upstream_tag("up", "app", "1").unwrap(), Some(digest("m2")));
    assert_eq!(s.upstream_tag("up", "app", "gone").unwrap(), None);
    let filter = RepositoryFilter { name_contains: Some("p/a".into()), ..Default::default() };
    assert_eq!(s.repositories(&filter, PageRequest::default()).unwrap().total, 1);
    let filter = RepositoryFilter { name_contains: Some("%".into()), ..Default::default() };
    assert_eq!(s.repositories(&filter, PageRequest::default()).unwrap().total, 0, "LIKE wildcards are literal");
}

#[test]
fn a_due_schedule_is_claimed_by_one_node_only() {
    let (_d, s) = open();
    let new = NewRepository {
        name: "mirror".into(),
        description: None,
        retain_versions: None,
        remote: None,
        sync_mirror: false,
        sync_interval: Some(3600),
        next_sync_at: Some(1000),
    };
    s.create_repository(&new).unwrap();
    assert!(s.claim_sync_schedule("mirror", 1000, 5000).unwrap());
    assert!(!s.claim_sync_schedule("mirror", 1000, 6000).unwrap(), "another node saw the same due run");
    assert_eq!(s.repository("mirror").unwrap().unwrap().next_sync_at, Some(5000));
    assert!(!s.claim_sync_schedule("nope", 1000, 6000).unwrap());
}

#[test]
fn a_shared_upload_advances_only_from_where_it_stands() {
    let (_d, s) = open();
    let chunk = |start: u64, end: u64, key: &str| UploadChunk { start, end, key: key.into() };
    s.create_upload("u1", "team/app").unwrap();
    let got = s.upload("u1").unwrap().unwrap();
    assert_eq!((got.repository.as_str(), got.size, got.chunks.len()), ("team/app", 0, 0));
    assert!(s.append_upload("u1", &chunk(0, 5, "k0")).unwrap());
    assert!(!s.append_upload("u1", &chunk(0, 7, "k0b")).unwrap(), "another node appended at 0 first");
    assert!(s.append_upload("u1", &chunk(5, 9, "k5")).unwrap());
    assert!(!s.append_upload("nope", &chunk(0, 1, "x")).unwrap());
    let got = s.upload("u1").unwrap().unwrap();
    assert_eq!(got.size, 9);
    assert_eq!(got.chunks, vec![chunk(0, 5, "k0"), chunk(5, 9, "k5")]);
    assert_eq!(s.end_upload("u1", Some(5)).unwrap(), None, "changed since");
    assert_eq!(s.end_upload("u1", Some(9)).unwrap(), Some(vec![chunk(0, 5, "k0"), chunk(5, 9, "k5")]));
    assert_eq!(s.upload("u1").unwrap(), None);
    assert_eq!(s.end_upload("u1", None).unwrap(), None);

    s.create_upload("old", "a").unwrap();
    s.append_upload("old", &chunk(0, 1, "ko")).unwrap();
    s.create_upload("cancelled", "a").unwrap();
    assert_eq!(s.end_upload("cancelled", None).unwrap(), Some(vec![]));
    let expired = s.expire_uploads(now_millis() + 1000).unwrap();
    assert_eq!(expired, vec![("old".to_owned(), vec![chunk(0, 1, "ko")])]);
    assert!(s.expire_uploads(now_millis() + 1000).unwrap().is_empty());
}

#[test]
fn a_fill_is_claimed_by_one_node_and_taken_over_only_from_the_node_named() {
    let (_d, s) = open();
    let d = digest("blob");
    let filling = |node: &str, address: &str| FillClaim::Filling { node: node.into(), address: address.into() };
    assert_eq!(s.claim_fill(&d, "a", "a:5060", None).unwrap(), FillClaim::Claimed);
    assert_eq!(s.claim_fill(&d, "b", "b:5060", None).unwrap(), filling("a", "a:5060"));
    assert_eq!(s.claim_fill(&d, "a", "a:5060", None).unwrap(), FillClaim::Claimed, "its own claim");
    assert_eq!(s.claim_fill(&d, "b", "b:5060", Some("c")).unwrap(), filling("a", "a:5060"), "c holds nothing");
    assert_eq!(s.fills_in_flight().unwrap(), vec![d.to_string()]);
    assert_eq!(s.claim_fill(&d, "b", "b:5060", Some("a")).unwrap(), FillClaim::Claimed, "a stopped answering");
    s.release_fill(&d, "a").unwrap();
    assert_eq!(s.claim_fill(&d, "c", "c:5060", None).unwrap(), filling("b", "b:5060"), "a's release is not b's");
    assert_eq!(s.release_fills("b").unwrap(), 1);
    assert!(s.fills_in_flight().unwrap().is_empty());
    assert_eq!(s.claim_fill(&d, "c", "c:5060", None).unwrap(), FillClaim::Claimed);
}

#[test]
fn a_lease_is_held_by_one_node_until_it_expires() {
    let (_d, s) = open();
    assert!(s.take_lease("eviction", "a", 1000, 2000).unwrap());
    assert!(!s.take_lease("eviction", "b", 1500, 2500).unwrap(), "a holds it");
    assert!(s.take_lease("eviction", "a", 1800, 3000).unwrap(), "a renews it");
    assert!(!s.take_lease("eviction", "b", 2500, 3500).unwrap(), "renewed until 3000");
    assert!(s.take_lease("eviction", "b", 3001, 4000).unwrap(), "expired: b takes it");
    assert!(!s.take_lease("eviction", "a", 3500, 4500).unwrap());
    assert!(s.take_lease("other", "a", 3500, 4500).unwrap(), "leases are by name");
}

#[test]
fn exports_are_recorded_and_an_incremental_one_knows_its_chain() {
    let (_d, s) = open();
    let versions = |n: u64| vec![ExportedVersion { repository: "team/app".into(), version: n }];
    let first = s.create_export("e1", "/mnt/t/wharf-export-1", None, &versions(1)).unwrap();
    assert_eq!((first.state, first.base, first.repositories.clone()), (ExportState::Writing, None, versions(1)));
    let err = s.create_export("ex", "/mnt/t/x", Some(first.id), &versions(2)).unwrap_err();
    assert!(matches!(err, MetadataError::Conflict(_)), "an unfinished base: {err:?}");
    assert!(matches!(s.create_export("ex", "/mnt/t/x", Some(999), &versions(2)), Err(MetadataError::NotFound(_))));
    s.complete_export(first.id, 4096, 5, &["sha256:aa".into(), "sha256:bb".into()]).unwrap();
    assert!(matches!(s.complete_export(first.id, 1, 1, &[]), Err(MetadataError::Conflict(_))), "complete once");
    let second = s.create_export("e2", "/mnt/t/wharf-export-2", Some(first.id), &versions(2)).unwrap();
    s.complete_export(second.id, 1024, 2, &["sha256:cc".into()]).unwrap();
    let third = s.create_export("e3", "/mnt/t/wharf-export-3", Some(second.id), &versions(3)).unwrap();
    s.fail_export(third.id, "disk full").unwrap();
    let third = s.export(third.id).unwrap().unwrap();
    assert_eq!((third.state, third.error.as_deref()), (ExportState::Failed, Some("disk full")));
    let chain = s.export_chain_digests(second.id).unwrap();
    assert_eq!(chain.len(), 3);
    assert!(chain.contains("sha256:aa") && chain.contains("sha256:cc"));
    let listed = s.exports(PageRequest::default()).unwrap();
    assert_eq!(listed.total, 3);
    assert_eq!(listed.items.iter().map(|e| e.id).collect::<Vec<_>>(), [third.id, second.id, first.id], "newest first");
    let done = s.export(first.id).unwrap().unwrap();
    assert_eq!((done.size, done.files, done.state, done.uuid.as_deref()), (4096, 5, ExportState::Complete, Some("e1")));
    assert!(matches!(s.delete_export(first.id), Err(MetadataError::Conflict(_))), "second builds on it");
    s.delete_export(third.id).unwrap();
    s.delete_export(second.id).unwrap();
    s.delete_export(first.id).unwrap();
    assert_eq!(s.exports(PageRequest::default()).unwrap().total, 0);
}

#[test]
fn an_import_makes_one_version_per_repository_once_after_its_base_or_nothing() {
    let (_d, s) = open();
    let carried = |name: &str, kind: RepositoryKind, tags: &[(&str, &str)]| ImportedRepository {
        name: name.into(),
        kind,
        upstream: (kind == RepositoryKind::PullThrough).then(|| "hub".to_owned()),
        remote_name: (kind == RepositoryKind::PullThrough).then(|| "library/debian".to_owned()),
        content: SyncContent {
            manifests: tags.iter().map(|(_, m)| image(m, &[&format!("{m}-layer")])).collect(),
            tags: tags.iter().map(|(t, m)| ((*t).to_owned(), digest(m))).collect(),
            signatures: Vec::new(),
            signatures_listed: true,
        },
    };
    let first = [carried("team/app", RepositoryKind::Push, &[("1", "m1")]), carried("hub/library/debian", RepositoryKind::PullThrough, &[("12", "d12")])];
    let made = s.import_export("u1", 4, None, &first).unwrap();
    assert_eq!(made, vec![("team/app".to_owned(), Some(1)), ("hub/library/debian".to_owned(), Some(1))]);
    assert!(s.imported("u1").unwrap() && !s.imported("u2").unwrap());
    let debian = s.repository("hub/library/debian").unwrap().unwrap();
    assert_eq!((debian.kind, debian.upstream.as_deref()), (RepositoryKind::PullThrough, Some("hub")));
    assert_eq!(s.resolve_tag("team/app", None, "1").unwrap().map(|t| t.digest), Some(digest("m1")));
    assert!(s.contains("team/app", None, ContentType::Blob, &digest("m1-layer")).unwrap());
    assert!(matches!(s.import_export("u1", 4, None, &first), Err(MetadataError::Conflict(_))), "once");

    // Built on u1: the version holds exactly the export's content.
    let second = [carried("team/app", RepositoryKind::Push, &[("2", "m2")])];
    assert!(matches!(s.import_export("u2", 5, Some("u0"), &second), Err(MetadataError::Conflict(m)) if m.contains("u0")));
    assert_eq!(s.import_export("u2", 5, Some("u1"), &second).unwrap(), vec![("team/app".to_owned(), Some(2))]);
    let tags: Vec<String> = s.tag_names("team/app", None).unwrap();
    assert_eq!(tags, ["2"]);
    // The same content again: no new version.
    assert_eq!(s.import_export("u3", 6, None, &second).unwrap(), vec![("team/app".to_owned(), None)]);

    // A name taken by another kind: nothing of the import is written.
    let clash = [carried("fresh/one", RepositoryKind::Push, &[("1", "f1")]), carried("team/app", RepositoryKind::Sync, &[("1", "m1")])];
    assert!(matches!(s.import_export("u4", 7, None, &clash), Err(MetadataError::Conflict(_))));
    assert_eq!(s.repository("fresh/one").unwrap(), None);
    assert!(!s.imported("u4").unwrap());
}
