//! Manifest media types, how a stored manifest's type is recognised, and the
//! `Accept` negotiation a registry performs when serving one.

use serde::Deserialize;

use super::Digest;

pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What wharf asks an upstream for: every manifest type it can store, so the
/// upstream returns the manifest as pushed (an index stays an index).
pub(crate) const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.artifact.manifest.v1+json";

/// The manifests wharf stores and serves (schema 1 is long retired and its
/// signed payload cannot be verified by digest, so it is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ManifestKind {
    DockerManifest,
    DockerManifestList,
    OciManifest,
    OciIndex,
    /// A manifest whose declared `mediaType` is none of the above (for
    /// instance an artifact manifest); served with that type.
    Other,
}

/// The parts of any manifest JSON that decide its type and what it points at.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestProbe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<Vec<IndexEntry>>,
    config: Option<serde_json::Value>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexEntry {
    pub(crate) digest: Digest,
    pub(crate) platform: Option<Platform>,
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
    pub(crate) variant: Option<String>,
}

/// A descriptor as a manifest carries it.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) digest: Digest,
    pub(crate) media_type: Option<String>,
    pub(crate) size: Option<u64>,
    pub(crate) platform: Option<Platform>,
}

/// What a manifest points at.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct References {
    pub(crate) artifact_type: Option<String>,
    pub(crate) config: Option<Descriptor>,
    #[serde(default)]
    pub(crate) layers: Vec<Descriptor>,
    /// Artifact manifests list their content as `blobs`.
    #[serde(default)]
    pub(crate) blobs: Vec<Descriptor>,
    #[serde(default)]
    pub(crate) manifests: Vec<Descriptor>,
    pub(crate) subject: Option<Descriptor>,
    /// The manifest's own annotations, as the referrers API lists them.
    pub(crate) annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Config media types of ordinary images: a manifest with one of these and
/// no `artifactType` is an image, not an artifact.
const IMAGE_CONFIGS: &[&str] =
    &["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

impl References {
    /// The artifact type the referrers API reports: `artifactType`, else a
    /// config media type that is not an image config's.
    pub(crate) fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type.clone().or_else(|| {
            self.config
                .as_ref()
                .and_then(|c| c.media_type.clone())
                .filter(|m| !IMAGE_CONFIGS.contains(&m.as_str()) && m != "application/vnd.oci.empty.v1+json")
        })
    }
}

/// The platform an image config declares (`os`, `architecture`,
/// `variant` at its top level), if it is an image config at all.
pub(crate) fn config_platform(bytes: &[u8]) -> Option<Platform> {
    serde_json::from_slice::<Platform>(bytes).ok()
}

/// Reads the descriptors a manifest of any type points at.
pub(crate) fn references(bytes: &[u8]) -> Result<References, ManifestError> {
    serde_json::from_slice(bytes).map_err(|e| ManifestError::NotJson(e.to_string()))
}

/// A manifest's bytes recognised: its media type and, for an index, its entries.
#[derive(Clone, Debug)]
pub(crate) struct ManifestInfo {
    pub(crate) kind: ManifestKind,
    pub(crate) media_type: String,
    pub(crate) entries: Vec<IndexEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    NotJson(String),
    #[error("schema 1 manifests are not supported")]
    SchemaOne,
    #[error("manifest has no recognisable media type")]
    UnknownType,
}

/// Recognises a manifest from its bytes. The declared `mediaType` wins; OCI
/// manifests may omit it, in which case the shape decides (as registries do).
pub(crate) fn inspect(bytes: &[u8]) -> Result<ManifestInfo, ManifestError> {
    let probe: ManifestProbe =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::NotJson(e.to_string()))?;
    if probe.schema_version == Some(1) {
        return Err(ManifestError::SchemaOne);
    }
    let media_type = match probe.media_type {
        Some(m) => m,
        None if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        None if probe.config.is_some() => OCI_MANIFEST.to_owned(),
        None => return Err(ManifestError::UnknownType),
    };
    let kind = match media_type.as_str() {
        DOCKER_MANIFEST => ManifestKind::DockerManifest,
        DOCKER_MANIFEST_LIST => ManifestKind::DockerManifestList,
        OCI_MANIFEST => ManifestKind::OciManifest,
        OCI_INDEX => ManifestKind::OciIndex,
        _ => ManifestKind::Other,
    };
    Ok(ManifestInfo { kind, media_type, entries: probe.manifests.unwrap_or_default() })
}

/// What a client's `Accept` header allows.
#[derive(Debug, Default)]
pub(crate) struct Accept {
    types: Vec<String>,
}

impl Accept {
    /// Parses every `Accept` header value (clients send several headers or
    /// one comma-separated list; parameters such as `q=` are ignored, as
    /// registries ignore them).
    pub(crate) fn parse<'a>(values: impl Iterator<Item = &'a str>) -> Accept {
        let types = values
            .flat_map(|v| v.split(','))
            .filter_map(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        Accept { types }
    }

    /// An absent header, or a wildcard, accepts anything.
    pub(crate) fn allows(&self, media_type: &str) -> bool {
        self.types.is_empty()
            || self.types.iter().any(|t| t == "*/*" || t.eq_ignore_ascii_case(media_type))
    }
}

/// How to answer a manifest request whose stored manifest is `info`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Negotiated {
    /// Serve the stored manifest as it is.
    AsStored,
    /// The client cannot read an index: serve this child (linux/amd64), as
    /// the reference registry does for clients that predate manifest lists.
    Child(Digest),
    /// The client accepts no representation we have.
    NotAcceptable,
}

/// Negotiation as the reference registry does it. Requests by digest always
/// get the stored bytes (the digest names exactly those bytes); by tag, an
/// index goes only to clients that accept index types, and an OCI manifest
/// only to clients that accept OCI (Docker schema 2 is always served).
pub(crate) fn negotiate(info: &ManifestInfo, accept: &Accept, by_digest: bool) -> Negotiated {
    if by_digest || accept.allows(&info.media_type) {
        return Negotiated::AsStored;
    }
    match info.kind {
        ManifestKind::DockerManifestList | ManifestKind::OciIndex => info
            .entries
            .iter()
            .find(|e| {
                e.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .map(|e| Negotiated::Child(e.digest.clone()))
            .unwrap_or(Negotiated::NotAcceptable),
        ManifestKind::DockerManifest => Negotiated::AsStored,
        ManifestKind::OciManifest | ManifestKind::Other => Negotiated::NotAcceptable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with_amd64() -> Vec<u8> {
        let d = "sha256:".to_owned() + &"a".repeat(64);
        let e = "sha256:".to_owned() + &"b".repeat(64);
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{e}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{d}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn an_image_config_names_its_platform() {
        let p = config_platform(br#"{"architecture":"arm64","os":"linux","variant":"v8","rootfs":{}}"#).unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()), ("linux", "arm64", Some("v8")));
        assert!(config_platform(br#"{"some":"artifact"}"#).is_none());
    }

    #[test]
    fn recognises_types_declared_and_implied() {
        let oci_no_type = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(inspect(oci_no_type).unwrap().kind, ManifestKind::OciManifest);
        let idx_no_type = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(inspect(idx_no_type).unwrap().kind, ManifestKind::OciIndex);
        let list = inspect(&index_with_amd64()).unwrap();
        assert_eq!(list.kind, ManifestKind::DockerManifestList);
        assert_eq!(list.entries.len(), 2);
        let artifact = br#"{"mediaType":"application/vnd.example+json","blobs":[]}"#;
        let info = inspect(artifact).unwrap();
        assert_eq!((info.kind, info.media_type.as_str()), (ManifestKind::Other, "application/vnd.example+json"));
        assert_eq!(inspect(br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err(), ManifestError::SchemaOne);
        assert!(matches!(inspect(b"not json"), Err(ManifestError::NotJson(_))));
    }

    #[test]
    fn accept_parsing_handles_lists_parameters_and_wildcards() {
        let a = Accept::parse(["application/json; q=0.5, Application/VND.OCI.image.index.v1+json", OCI_MANIFEST].into_iter());
        assert!(a.allows(OCI_INDEX));
        assert!(a.allows(OCI_MANIFEST));
        assert!(!a.allows(DOCKER_MANIFEST_LIST));
        assert!(Accept::parse(std::iter::empty()).allows(DOCKER_MANIFEST_LIST));
        assert!(Accept::parse(["*/*"].into_iter()).allows(OCI_INDEX));
    }

    #[test]
    fn negotiation_matches_the_reference_registry() {
        let list = inspect(&index_with_amd64()).unwrap();
        let old_client = Accept::parse([DOCKER_MANIFEST].into_iter());
        let child = "sha256:".to_owned() + &"a".repeat(64);
        assert_eq!(negotiate(&list, &old_client, false), Negotiated::Child(child.parse().unwrap()));
        assert_eq!(negotiate(&list, &old_client, true), Negotiated::AsStored);
        let modern = Accept::parse([DOCKER_MANIFEST_LIST, DOCKER_MANIFEST].into_iter());
        assert_eq!(negotiate(&list, &modern, false), Negotiated::AsStored);

        let oci = inspect(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).unwrap();
        assert_eq!(negotiate(&oci, &old_client, false), Negotiated::NotAcceptable);
        assert_eq!(negotiate(&oci, &old_client, true), Negotiated::AsStored);
        let docker = inspect(format!(r#"{{"mediaType":"{DOCKER_MANIFEST}"}}"#).as_bytes()).unwrap();
        let oci_only = Accept::parse([OCI_MANIFEST].into_iter());
        assert_eq!(negotiate(&docker, &oci_only, false), Negotiated::AsStored);
    }
}
