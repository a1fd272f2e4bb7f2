//! Image builds from a Containerfile: parsed (`parse`, `words`), the
//! context checked (`context`, `glob`), run without a runtime (`exec`:
//! `copy`, `tree`, `layer`, `image`) or, for `RUN`, by buildah (`buildah`,
//! `layout`), bases from wharf's own content (`bases`), and the result
//! stored as one version of a push repository (`store`).

pub(crate) mod bases;
pub(crate) mod buildah;
pub(crate) mod context;
pub(crate) mod copy;
pub(crate) mod exec;
pub(crate) mod fetch;
pub(crate) mod glob;
pub(crate) mod image;
pub(crate) mod layer;
pub(crate) mod layout;
pub(crate) mod pack;
pub(crate) mod parse;
pub(crate) mod pgzip;
pub(crate) mod tree;
pub(crate) mod words;

use crate::repository::{PushError, Pushes};

/// Stores built images into the push repository `name` (created, with
/// its distribution, if the name is free; refused for any other kind) as
/// one version, tagged `tags`: one image as itself, several (one per
/// platform) under an index. The version made.
pub(crate) async fn store(pushes: &Pushes, name: &crate::oci::RepositoryName, images: &[exec::Built], tags: &[String]) -> Result<Option<u64>, PushError> {
    let repo = pushes.writable(name).await?;
    let mut manifests: Vec<(bytes::Bytes, Vec<String>)> = Vec::new();
    for image in images {
        pushes.put_config(&image.config).await?;
    }
    if let [one] = images {
        manifests.push((bytes::Bytes::from(one.manifest.clone()), tags.to_vec()));
    } else {
        let children: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                let mut platform = serde_json::json!({ "os": i.platform.os, "architecture": i.platform.architecture });
                if let Some(v) = &i.platform.variant {
                    platform["variant"] = serde_json::Value::String(v.clone());
                }
                serde_json::json!({
                    "mediaType": crate::oci::media::OCI_MANIFEST,
                    "digest": crate::oci::Digest::of(crate::oci::Algorithm::Sha256, &i.manifest).to_string(),
                    "size": i.manifest.len(),
                    "platform": platform,
                })
            })
            .collect();
        for i in images {
            manifests.push((bytes::Bytes::from(i.manifest.clone()), Vec::new()));
        }
        let index = serde_json::json!({ "schemaVersion": 2, "mediaType": crate::oci::media::OCI_INDEX, "manifests": children });
        manifests.push((bytes::Bytes::from(serde_json::to_vec(&index).unwrap_or_default()), tags.to_vec()));
    }
    pushes.put_built(&repo, manifests).await
}
