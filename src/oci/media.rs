//! Manifest media types, how a stored manifest's type is recognised, what a
//! pushed manifest must satisfy, and the `Accept` negotiation a registry
//! performs when serving one.
//!
//! Every parse of manifest bytes here first bounds their JSON nesting
//! ([`MAX_DEPTH`]), whoever sent them: a client's push, an upstream, or
//! storage.

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
    check_depth(bytes)?;
    parse(bytes)
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
    #[error("manifest JSON nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// JSON, but not of the shape its media type requires.
    #[error("{0}")]
    Invalid(String),
    #[error("schema 1 manifests are not supported")]
    SchemaOne,
    #[error("manifest has no recognisable media type")]
    UnknownType,
}

/// Parses manifest JSON into `T`. Syntax errors are NotJson; well-formed
/// JSON of the wrong shape (a bad digest, a negative size, a missing field)
/// is Invalid, saying where (`layers[0].size: ...`).
fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ManifestError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| match e.inner().classify() {
        serde_json::error::Category::Data => ManifestError::Invalid(e.to_string()),
        _ => ManifestError::NotJson(e.into_inner().to_string()),
    })?;
    // As serde_json::from_slice: nothing but whitespace may follow.
    de.end().map_err(|e| ManifestError::NotJson(e.to_string()))?;
    Ok(value)
}

/// The deepest JSON nesting a manifest may have. The image spec's deepest
/// is 5 (index, `manifests`, descriptor, `platform`, `os.features`); this
/// leaves room for artifacts' own fields and stays below serde_json's
/// recursion limit (128). That limit does not cover an unknown field,
/// which serde_json skips without recursing: unbounded, a manifest with a
/// 200,000-deep array under an unknown key was accepted and stored.
pub(crate) const MAX_DEPTH: usize = 64;

/// Refuses JSON nested deeper than [`MAX_DEPTH`], in one pass over the
/// bytes before any parse. Exact for valid JSON: brackets are counted
/// outside strings only (`"` and `\` never occur inside a UTF-8
/// multi-byte sequence). For invalid JSON the count may be off, and the
/// parse that follows refuses it anyway.
pub(crate) fn check_depth(bytes: &[u8]) -> Result<(), ManifestError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ManifestError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a manifest of a known type against the image spec, with
/// oci-spec's types: an image manifest (OCI, or Docker schema 2, which has
/// the same shape) needs `schemaVersion` 2, a `config` and `layers`; an
/// index (OCI, or a Docker manifest list) needs `schemaVersion` 2 and
/// `manifests`; every descriptor needs a `mediaType`, a parsable `digest`
/// and a non-negative integer `size`. Other media types (artifacts) are
/// accepted as the distribution spec allows. `bytes` passed [`inspect`],
/// which bounded their depth.
///
/// Any manifest must be UTF-8, as JSON is (RFC 8259): serde_json reading
/// bytes skips a field it does not know without checking its strings.
pub(crate) fn validate(bytes: &[u8], kind: ManifestKind) -> Result<(), ManifestError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ManifestError::Invalid(format!("manifest is not UTF-8: {e}")));
    }
    let (what, schema_version) = match kind {
        ManifestKind::OciManifest | ManifestKind::DockerManifest => {
            ("image manifest", parse::<oci_spec::image::ImageManifest>(bytes).map(|m| m.schema_version()))
        }
        ManifestKind::OciIndex | ManifestKind::DockerManifestList => {
            ("image index", parse::<oci_spec::image::ImageIndex>(bytes).map(|i| i.schema_version()))
        }
        ManifestKind::Other => return Ok(()),
    };
    match schema_version {
        Ok(2) => Ok(()),
        Ok(v) => Err(ManifestError::Invalid(format!("an {what} must have schemaVersion 2, not {v}"))),
        Err(ManifestError::Invalid(e)) => Err(ManifestError::Invalid(format!("not a valid {what}: {e}"))),
        Err(e) => Err(e),
    }
}

/// Recognises a manifest from its bytes. The declared `mediaType` wins; OCI
/// manifests may omit it, in which case the shape decides (as registries do).
pub(crate) fn inspect(bytes: &[u8]) -> Result<ManifestInfo, ManifestError> {
    check_depth(bytes)?;
    let probe: ManifestProbe = parse(bytes)?;
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

    fn digest_of(s: &str) -> String {
        Digest::of(crate::oci::Algorithm::Sha256, s.as_bytes()).to_string()
    }

    fn descriptor(media_type: &str, content: &str) -> serde_json::Value {
        serde_json::json!({ "mediaType": media_type, "digest": digest_of(content), "size": content.len() })
    }

    fn image(media_type: &str) -> serde_json::Value {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor("application/vnd.oci.image.config.v1+json", "{}"),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "layer")],
        })
    }

    fn index(media_type: &str) -> serde_json::Value {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [descriptor(OCI_MANIFEST, "child")],
        })
    }

    /// inspect, then validate, as a push does.
    fn check(json: &serde_json::Value) -> Result<ManifestKind, ManifestError> {
        let bytes = serde_json::to_vec(json).unwrap();
        let info = inspect(&bytes)?;
        validate(&bytes, info.kind).map(|()| info.kind)
    }

    fn invalid_saying(json: &serde_json::Value, words: &str) {
        match check(json) {
            Err(ManifestError::Invalid(m)) => assert!(m.contains(words), "{m:?} does not say {words:?}"),
            other => panic!("{json}: want Invalid({words:?}), got {other:?}"),
        }
    }

    #[test]
    fn known_types_that_follow_the_image_spec_are_valid() {
        assert_eq!(check(&image(OCI_MANIFEST)).unwrap(), ManifestKind::OciManifest);
        assert_eq!(check(&image(DOCKER_MANIFEST)).unwrap(), ManifestKind::DockerManifest);
        assert_eq!(check(&index(OCI_INDEX)).unwrap(), ManifestKind::OciIndex);
        assert_eq!(check(&index(DOCKER_MANIFEST_LIST)).unwrap(), ManifestKind::DockerManifestList);
        // No layers at all is allowed (only the field is required), and so
        // is an image manifest without a mediaType (recognised by shape).
        let mut m = image(OCI_MANIFEST);
        m["layers"] = serde_json::json!([]);
        m.as_object_mut().unwrap().remove("mediaType");
        assert_eq!(check(&m).unwrap(), ManifestKind::OciManifest);
        // An artifact as the image spec describes it: artifactType, the
        // empty config, a subject; what the conformance suite pushes.
        let mut artifact = image(OCI_MANIFEST);
        artifact["artifactType"] = "application/vnd.example.sbom".into();
        artifact["config"] = descriptor("application/vnd.oci.empty.v1+json", "{}");
        artifact["subject"] = descriptor(OCI_MANIFEST, "subject");
        artifact["annotations"] = serde_json::json!({ "org.example": "x" });
        assert_eq!(check(&artifact).unwrap(), ManifestKind::OciManifest);
        // Unknown media types are not second-guessed.
        let other = serde_json::json!({ "mediaType": "application/vnd.example+json", "anything": [1, {}] });
        assert_eq!(check(&other).unwrap(), ManifestKind::Other);
    }

    #[test]
    fn image_manifests_missing_required_fields_are_invalid() {
        for media_type in [OCI_MANIFEST, DOCKER_MANIFEST] {
            for field in ["config", "layers", "schemaVersion"] {
                let mut m = image(media_type);
                m.as_object_mut().unwrap().remove(field);
                invalid_saying(&m, &format!("missing field `{field}`"));
            }
            let mut m = image(media_type);
            m["schemaVersion"] = 3.into();
            invalid_saying(&m, "schemaVersion 2, not 3");
        }
        let mut idx = index(OCI_INDEX);
        idx.as_object_mut().unwrap().remove("manifests");
        invalid_saying(&idx, "missing field `manifests`");
        // A declared type wins over the shape: an index body under an image
        // manifest type is no image manifest.
        invalid_saying(&index(OCI_MANIFEST), "missing field `config`");
    }

    #[test]
    fn descriptors_need_a_media_type_a_digest_and_a_whole_size() {
        let layer = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut m = image(OCI_MANIFEST);
            change(&mut m["layers"][0]);
            m
        };
        invalid_saying(&layer(&|d| d["digest"] = "sha256:xyz".into()), "layers[0].digest: Invalid digest length 3");
        invalid_saying(&layer(&|d| d["digest"] = "no-colon".into()), "layers[0].digest: missing ':' in digest");
        invalid_saying(&layer(&|d| d["size"] = (-5).into()), "layers[0].size: invalid value: integer `-5`");
        invalid_saying(&layer(&|d| d["size"] = 1.5.into()), "layers[0].size: invalid type: floating point `1.5`");
        invalid_saying(&layer(&|d| d["size"] = "5".into()), "layers[0].size: invalid type: string");
        invalid_saying(&layer(&|d| { d.as_object_mut().unwrap().remove("mediaType"); }), "layers[0]: missing field `mediaType`");
        invalid_saying(&layer(&|d| { d.as_object_mut().unwrap().remove("size"); }), "layers[0]: missing field `size`");
        let mut m = image(OCI_MANIFEST);
        m["config"]["digest"] = "sha256:".into();
        invalid_saying(&m, "config.digest: Empty algorithm value");
        let mut idx = index(DOCKER_MANIFEST_LIST);
        idx["manifests"][0]["size"] = (-1).into();
        invalid_saying(&idx, "not a valid image index: manifests[0].size: invalid value: integer `-1`");
    }

    #[test]
    fn a_manifest_that_is_not_utf8_is_invalid_whatever_its_type() {
        for json in [image(OCI_MANIFEST), serde_json::json!({ "mediaType": "application/vnd.example+json" })] {
            let mut bytes = serde_json::to_vec(&json).unwrap();
            bytes.pop();
            bytes.extend_from_slice(b",\"x\":\"\xae\"}");
            let info = inspect(&bytes).unwrap();
            match validate(&bytes, info.kind) {
                Err(ManifestError::Invalid(m)) => assert!(m.starts_with("manifest is not UTF-8"), "{m}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    fn nested(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    #[test]
    fn nesting_is_bounded_before_any_parse() {
        let at_limit = format!(r#"{{"mediaType":"application/vnd.example","x":{}}}"#, nested(MAX_DEPTH - 1));
        assert!(check_depth(at_limit.as_bytes()).is_ok());
        assert_eq!(inspect(at_limit.as_bytes()).unwrap().kind, ManifestKind::Other);
        let over = format!(r#"{{"mediaType":"application/vnd.example","x":{}}}"#, nested(MAX_DEPTH));
        assert_eq!(check_depth(over.as_bytes()), Err(ManifestError::TooDeep));
        // What a push once got stored: a 200,000-deep array under a key
        // serde skips without its recursion limit.
        let mut deep = serde_json::to_string(&image(OCI_MANIFEST)).unwrap();
        deep.pop();
        deep.push_str(&format!(r#","x":{}}}"#, nested(200_000)));
        assert_eq!(inspect(deep.as_bytes()).unwrap_err(), ManifestError::TooDeep);
        assert_eq!(references(deep.as_bytes()).unwrap_err(), ManifestError::TooDeep);
        // Brackets in strings, escaped quotes included, are not nesting.
        let in_strings = format!(r#"{{"a":"{}","b":"\"[[","c":"\\","d":[]}}"#, "[".repeat(1000));
        assert!(check_depth(in_strings.as_bytes()).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&in_strings).is_ok());
        // After an escaped backslash the string ends, and what follows counts.
        let after = format!(r#"{{"c":"\\",{}}}"#, r#""d":"#.to_owned() + &nested(MAX_DEPTH));
        assert_eq!(check_depth(after.as_bytes()), Err(ManifestError::TooDeep));
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
