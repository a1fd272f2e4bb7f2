//! Base images for a build, from wharf's own content: a name a
//! distribution serves (a repository's version), or a pull-through name
//! (fetched from its upstream through the same verified fills and
//! recorded like any pull). An index is narrowed to the build's platform;
//! every layer is stored before the build uses it. Whether the building
//! user may pull a name is asked first.

use std::io::Read;
use std::sync::Arc;

use super::exec::{Base, Bases, Platform};
use crate::oci::media::{self, Accept, ManifestKind};
use crate::oci::{Digest, Reference, RepositoryName};
use crate::pullthrough::{Manifest, PullThrough, Target};
use crate::repository::{Distributions, Hosted, Served};
use crate::storage::Storage;

/// Largest image config read (they are a few KiB).
const MAX_CONFIG: usize = 8 << 20;

/// Where a name's content comes from.
enum Source {
    Served(Arc<Served>),
    Pulled(Target),
}

/// [`Bases`] over this node's distributions and pull-through upstreams.
pub(crate) struct WharfBases {
    pub(crate) distributions: Distributions,
    pub(crate) hosted: Hosted,
    pub(crate) pull: PullThrough,
    pub(crate) storage: Storage,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Whether the building user may pull a repository name.
    pub(crate) may_pull: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// What `ADD` may fetch by URL, and how much.
    pub(crate) add_urls: super::fetch::AddUrls,
    pub(crate) max_fetch: u64,
}

/// `name[:tag][@digest]` (the digest wins), `latest` when neither.
pub(crate) fn split_reference(s: &str) -> Result<(RepositoryName, Reference), String> {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // A tag is after the last `:` that follows the last `/` (a port is not).
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    let name: RepositoryName = name.parse().map_err(|e| format!("{s}: {e}"))?;
    let reference = match (digest, tag) {
        (Some(d), _) => Reference::Digest(d.parse().map_err(|e| format!("{s}: {e}"))?),
        (None, Some(t)) => Reference::Tag(t.parse().map_err(|e| format!("{s}: {e}"))?),
        (None, None) => Reference::Tag("latest".parse().map_err(|e| format!("{s}: {e}"))?),
    };
    Ok((name, reference))
}

impl WharfBases {
    fn source(&self, name: &RepositoryName) -> Result<Source, String> {
        if !(self.may_pull)(name.as_str()) {
            return Err(format!("{name}: not found, or you may not pull it"));
        }
        if let Some(d) = self.distributions.lookup(name.as_str()) {
            return Ok(Source::Served(d));
        }
        self.pull.resolve(name, None).map(Source::Pulled).map_err(|_| format!("{name}: no distribution serves it and no upstream is configured for it"))
    }

    async fn manifest(&self, source: &Source, reference: &Reference) -> Result<Arc<Manifest>, String> {
        let accept = Accept::default();
        match source {
            Source::Served(d) => self.hosted.manifest(d, reference, &accept).await,
            Source::Pulled(t) => match reference {
                Reference::Digest(digest) => self.pull.manifest_by_digest(t, digest).await,
                _ => self.pull.manifest(t, reference, &accept).await,
            },
        }
        .map_err(|e| e.to_string())
    }

    /// Makes sure a blob's bytes are stored.
    async fn stored(&self, source: &Source, digest: &Digest) -> Result<(), String> {
        if self.storage.stat(digest).await.map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        let target = match source {
            Source::Pulled(t) => Some(t.clone()),
            Source::Served(d) => d.origin.as_ref().and_then(|(up, remote)| self.pull.target_for(up, remote)),
        };
        match target {
            Some(t) => self.pull.fetch_blob(&t, digest).await.map(|_| ()).map_err(|e| format!("{digest}: {e}")),
            None => Err(format!("{digest} is not stored here")),
        }
    }

    async fn resolve_async(&self, reference: &str, platform: &Platform) -> Result<Base, String> {
        let (name, r) = split_reference(reference)?;
        let source = self.source(&name)?;
        let mut manifest = self.manifest(&source, &r).await?;
        if matches!(manifest.info.kind, ManifestKind::OciIndex | ManifestKind::DockerManifestList) {
            let child = manifest
                .info
                .entries
                .iter()
                .find(|e| {
                    e.platform.as_ref().is_some_and(|p| {
                        p.os == platform.os
                            && p.architecture == platform.architecture
                            && (platform.variant.is_none() || p.variant == platform.variant)
                    })
                })
                .map(|e| e.digest.clone())
                .ok_or_else(|| format!("{reference} has no image for {platform}"))?;
            manifest = self.manifest(&source, &Reference::Digest(child)).await?;
        }
        if !matches!(manifest.info.kind, ManifestKind::OciManifest | ManifestKind::DockerManifest) {
            return Err(format!("{reference} is not an image ({})", manifest.info.media_type));
        }
        let refs = media::references(&manifest.bytes).map_err(|e| e.to_string())?;
        let config = refs.config.ok_or_else(|| format!("{reference}: the manifest has no config"))?;
        self.stored(&source, &config.digest).await?;
        let config_bytes = self
            .storage
            .read_small(&config.digest, MAX_CONFIG)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{}: gone", config.digest))?;
        let mut layers = Vec::new();
        for l in &refs.layers {
            self.stored(&source, &l.digest).await?;
            let size = self.storage.stat(&l.digest).await.map_err(|e| e.to_string())?.unwrap_or(0);
            layers.push((l.digest.clone(), l.size.unwrap_or(size), l.media_type.clone().unwrap_or_else(|| super::image::LAYER_GZIP.into())));
        }
        Ok(Base {
            digest: manifest.digest.clone(),
            manifest: manifest.bytes.to_vec(),
            media_type: manifest.info.media_type.clone(),
            config: config_bytes.to_vec(),
            layers,
        })
    }
}

impl Bases for WharfBases {
    fn fetch_url(&self, url: &str, into: &std::path::Path) -> Result<u64, String> {
        self.add_urls.allows(url)?;
        self.runtime.block_on(super::fetch::fetch(url, into, self.max_fetch))
    }

    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Base, String> {
        self.runtime.block_on(self.resolve_async(reference, platform))
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, String> {
        let object = self
            .runtime
            .block_on(self.storage.open_object(digest))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{digest} is not stored"))?;
        let file = object.file.try_clone().map_err(|e| e.to_string())?;
        Ok(Box::new(file.take(object.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag_or_digest() {
        let (n, r) = split_reference("docker.io/library/alpine:3.20").unwrap();
        assert_eq!((n.as_str(), r.to_string()), ("docker.io/library/alpine", "3.20".to_owned()));
        let (n, r) = split_reference("team/base").unwrap();
        assert_eq!((n.as_str(), r.to_string()), ("team/base", "latest".to_owned()));
        let d = format!("sha256:{}", "a".repeat(64));
        let (n, r) = split_reference(&format!("team/base:1@{d}")).unwrap();
        assert_eq!((n.as_str(), r.to_string()), ("team/base", d));
        assert!(split_reference("Bad Name").is_err());
    }
}
