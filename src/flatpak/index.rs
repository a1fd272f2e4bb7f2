//! The registry index's answer from a snapshot of what the node serves:
//! each repository's tagged images and image lists, with what the index
//! shows of each image (its config's platform and labels, its manifest's
//! annotations), recorded with the content so that answering reads no
//! blob. Repositories the asker may not pull are left out entirely.

use std::collections::BTreeMap;

use serde::Serialize;

use super::query::{Query, Subject};
use crate::metadata::{IndexedManifest, IndexedRepository};

/// An image as the index shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Image {
    pub(crate) digest: String,
    pub(crate) media_type: String,
    #[serde(rename = "OS")]
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) labels: BTreeMap<String, String>,
}

/// An image list (an OCI index or Docker manifest list): its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct List {
    pub(crate) digest: String,
    pub(crate) media_type: String,
    pub(crate) images: Vec<Image>,
}

/// One repository's tagged content, every tag of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Repository {
    pub(crate) name: String,
    pub(crate) images: Vec<(Image, Vec<String>)>,
    pub(crate) lists: Vec<(List, Vec<String>)>,
}

/// A JSON object of strings, from its text (anything else: empty).
fn string_map(text: Option<&str>) -> BTreeMap<String, String> {
    let Some(v) = text.and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()) else { return BTreeMap::new() };
    v.as_object().map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect()).unwrap_or_default()
}

fn image_of(m: &IndexedManifest) -> Image {
    let config = m.config.as_ref();
    Image {
        digest: m.digest.to_string(),
        media_type: m.media_type.clone(),
        os: config.and_then(|c| c.os.clone()).unwrap_or_default(),
        architecture: config.and_then(|c| c.architecture.clone()).unwrap_or_default(),
        annotations: string_map(m.annotations.as_deref()),
        labels: string_map(config.and_then(|c| c.labels.as_deref())),
    }
}

/// The index's repositories from what the metadata recorded: each
/// distribution by its base path, its tags grouped by manifest (an image,
/// or a list of images), every tag of each.
pub(crate) fn from_snapshot(snapshot: &[IndexedRepository]) -> Vec<Repository> {
    snapshot
        .iter()
        .map(|served| {
            let mut repo = Repository { name: served.base_path.clone(), ..Repository::default() };
            for (tag, m) in &served.tags {
                let digest = m.digest.to_string();
                if m.children.is_empty() {
                    match repo.images.iter_mut().find(|(i, _)| i.digest == digest) {
                        Some((_, tags)) => tags.push(tag.clone()),
                        None => repo.images.push((image_of(m), vec![tag.clone()])),
                    }
                } else {
                    match repo.lists.iter_mut().find(|(l, _)| l.digest == digest) {
                        Some((_, tags)) => tags.push(tag.clone()),
                        None => {
                            let images = m.children.iter().filter(|c| c.children.is_empty()).map(image_of).collect();
                            repo.lists.push((List { digest, media_type: m.media_type.clone(), images }, vec![tag.clone()]));
                        }
                    }
                }
            }
            repo
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TaggedImage<'a> {
    tags: &'a [String],
    #[serde(flatten)]
    image: &'a Image,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListAnswer<'a> {
    tags: &'a [String],
    digest: &'a str,
    media_type: &'a str,
    images: Vec<&'a Image>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RepositoryAnswer<'a> {
    name: &'a str,
    images: Vec<TaggedImage<'a>>,
    lists: Vec<ListAnswer<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Answer<'a> {
    registry: &'a str,
    results: Vec<RepositoryAnswer<'a>>,
}

/// The index's JSON for `query` over `repositories`, those `visible`
/// (may the asker pull this name?) only. `Registry` is `/`: the images
/// are on the server that answers.
pub(crate) fn answer(repositories: &[Repository], query: &Query, visible: &(dyn Fn(&str) -> bool + Sync)) -> Vec<u8> {
    let subject = |repo: &Repository, tags: &'_ [String], image: &'_ Image| -> bool {
        query.matches(&Subject {
            repository: &repo.name,
            tags,
            os: &image.os,
            architecture: &image.architecture,
            labels: &image.labels,
            annotations: &image.annotations,
        })
    };
    let mut results = Vec::new();
    for repo in repositories.iter().filter(|r| visible(&r.name)) {
        let images: Vec<TaggedImage<'_>> =
            repo.images.iter().filter(|(image, tags)| subject(repo, tags, image)).map(|(image, tags)| TaggedImage { tags, image }).collect();
        let lists: Vec<ListAnswer<'_>> = repo
            .lists
            .iter()
            .filter_map(|(list, tags)| {
                let images: Vec<&Image> = list.images.iter().filter(|image| subject(repo, tags, image)).collect();
                (!images.is_empty()).then_some(ListAnswer { tags, digest: &list.digest, media_type: &list.media_type, images })
            })
            .collect();
        if !images.is_empty() || !lists.is_empty() {
            results.push(RepositoryAnswer { name: &repo.name, images, lists });
        }
    }
    serde_json::to_vec(&Answer { registry: "/", results }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn image(digest: &str, architecture: &str, labels: &[(&str, &str)]) -> Image {
        Image {
            digest: digest.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            os: "linux".into(),
            architecture: architecture.into(),
            annotations: BTreeMap::new(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn snapshot() -> Vec<Repository> {
        let app = [("org.flatpak.ref", "app/org.example.Hello/x86_64/stable")];
        vec![
            Repository { name: "apps/hello".into(), images: vec![(image("sha256:a1", "amd64", &app), vec!["latest".into(), "1.0".into()])], lists: vec![] },
            Repository { name: "tools/plain".into(), images: vec![(image("sha256:b1", "amd64", &[]), vec!["latest".into()])], lists: vec![] },
            Repository {
                name: "apps/multi".into(),
                images: vec![],
                lists: vec![(
                    List {
                        digest: "sha256:c0".into(),
                        media_type: "application/vnd.oci.image.index.v1+json".into(),
                        images: vec![image("sha256:c1", "amd64", &app), image("sha256:c2", "arm64", &app)],
                    },
                    vec!["latest".into()],
                )],
            },
            Repository { name: "private/app".into(), images: vec![(image("sha256:d1", "amd64", &app), vec!["latest".into()])], lists: vec![] },
        ]
    }

    #[test]
    fn flatpaks_query_answers_the_protocols_json_for_what_the_asker_may_pull() {
        let q = Query::parse("label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest").unwrap();
        let visible = |name: &str| !name.starts_with("private/");
        let v: Value = serde_json::from_slice(&answer(&snapshot(), &q, &visible)).unwrap();
        assert_eq!(v["Registry"], "/");
        let names: Vec<&str> = v["Results"].as_array().unwrap().iter().map(|r| r["Name"].as_str().unwrap()).collect();
        assert_eq!(names, ["apps/hello", "apps/multi"], "no plain image, nothing private");
        let hello = &v["Results"][0]["Images"][0];
        assert_eq!(hello["Tags"], json!(["latest", "1.0"]), "every tag, not only the one asked");
        assert_eq!((hello["Digest"].as_str(), hello["OS"].as_str(), hello["Architecture"].as_str()), (Some("sha256:a1"), Some("linux"), Some("amd64")));
        assert_eq!(hello["Labels"]["org.flatpak.ref"], "app/org.example.Hello/x86_64/stable");
        assert_eq!(hello["Annotations"], json!({}));
        assert_eq!(v["Results"][0]["Lists"], json!([]));
        let list = &v["Results"][1]["Lists"][0];
        assert_eq!((list["Digest"].as_str(), &list["Tags"]), (Some("sha256:c0"), &json!(["latest"])));
        let in_list: Vec<&str> = list["Images"].as_array().unwrap().iter().map(|i| i["Digest"].as_str().unwrap()).collect();
        assert_eq!(in_list, ["sha256:c1"], "only the list's matching images");
        assert!(list["Images"][0].get("Tags").is_none(), "images in a list carry no tags");
    }

    #[test]
    fn the_metadatas_snapshot_groups_tags_by_manifest() {
        use crate::metadata::ImageConfig;
        use crate::oci::{Algorithm, Digest};
        let d = |s: &str| Digest::of(Algorithm::Sha256, s.as_bytes());
        let config = |arch: &str| ImageConfig {
            digest: d(arch),
            os: Some("linux".into()),
            architecture: Some(arch.into()),
            variant: None,
            labels: Some(r#"{"org.flatpak.ref":"app/a/x86_64/stable"}"#.into()),
        };
        let image = |seed: &str, arch: Option<&str>| IndexedManifest {
            digest: d(seed),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            annotations: Some(r#"{"org.example":"1"}"#.into()),
            config: arch.map(config),
            children: vec![],
        };
        let list = IndexedManifest {
            digest: d("list"),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            annotations: None,
            config: None,
            children: vec![image("amd", Some("amd64")), image("arm", Some("arm64"))],
        };
        let snapshot = vec![IndexedRepository {
            base_path: "apps/a".into(),
            tags: vec![
                ("1.0".into(), image("one", Some("amd64"))),
                ("latest".into(), image("one", Some("amd64"))),
                ("multi".into(), list),
                ("unread".into(), image("two", None)),
            ],
        }];
        let repos = from_snapshot(&snapshot);
        assert_eq!(repos.len(), 1);
        let r = &repos[0];
        assert_eq!(r.name, "apps/a");
        assert_eq!(r.images.len(), 2);
        assert_eq!(r.images[0].1, ["1.0", "latest"], "one image, both its tags");
        assert_eq!((r.images[0].0.architecture.as_str(), r.images[0].0.labels["org.flatpak.ref"].as_str()), ("amd64", "app/a/x86_64/stable"));
        assert_eq!(r.images[0].0.annotations["org.example"], "1");
        assert_eq!((r.images[1].0.os.as_str(), r.images[1].0.labels.len()), ("", 0), "a config not read yet shows nothing");
        assert_eq!(r.lists[0].0.images.iter().map(|i| i.architecture.as_str()).collect::<Vec<_>>(), ["amd64", "arm64"]);
        assert_eq!(r.lists[0].1, ["multi"]);
    }

    #[test]
    fn nothing_matches_an_empty_answer() {
        let q = Query::parse("repository=nothing").unwrap();
        assert_eq!(answer(&snapshot(), &q, &|_| true), br#"{"Registry":"/","Results":[]}"#);
    }
}
