//! The image a build stage makes: its base's layers and history, the
//! config the instructions change, the layers they add; written as an OCI
//! image config and manifest (oci-spec types, checked by their builders)
//! in canonical JSON: keys sorted, no whitespace, so the same build gives
//! the same bytes whatever the process's hash seeds.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder,
};
use serde_json::Value;

use crate::oci::{media, Algorithm, Digest};

/// A gzip layer, as built images have them.
pub(crate) const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A layer of the image: one of the base's, or one a step wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerRef {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) media_type: String,
    pub(crate) diff_id: Digest,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) created_by: String,
    pub(crate) comment: Option<String>,
    pub(crate) empty_layer: bool,
}

/// What the image runs with (the OCI config's `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunConfig {
    pub(crate) user: Option<String>,
    pub(crate) exposed_ports: BTreeSet<String>,
    /// In the order they were first set; a later ENV replaces in place.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) entrypoint: Option<Vec<String>>,
    pub(crate) cmd: Option<Vec<String>>,
    pub(crate) volumes: BTreeSet<String>,
    pub(crate) working_dir: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) stop_signal: Option<String>,
}

impl RunConfig {
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.env.push((key.to_owned(), value.to_owned())),
        }
    }
}

/// `PATH` in an image built from scratch.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageState {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
    pub(crate) config: RunConfig,
    pub(crate) layers: Vec<LayerRef>,
    /// The base's history as it was, then this build's steps.
    pub(crate) base_history: Vec<Value>,
    pub(crate) steps: Vec<Step>,
    /// The base's creation time (RFC 3339), if it had one.
    pub(crate) base_created: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("the base image's config: {0}")]
    BaseConfig(String),
    #[error("the image: {0}")]
    Spec(String),
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

impl ImageState {
    /// `FROM scratch` for a platform.
    pub(crate) fn scratch(os: &str, architecture: &str, variant: Option<&str>) -> ImageState {
        // The PATH buildah and BuildKit give an image from scratch.
        let mut config = RunConfig::default();
        config.set_env("PATH", DEFAULT_PATH);
        ImageState {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
            config,
            layers: Vec::new(),
            base_history: Vec::new(),
            steps: Vec::new(),
            base_created: None,
        }
    }

    /// A base image from its config's JSON and its manifest's layers (as
    /// many as the config's `diff_ids`).
    pub(crate) fn from_base(config: &[u8], layers: Vec<(Digest, u64, String)>) -> Result<ImageState, ImageError> {
        let bad = |m: String| ImageError::BaseConfig(m);
        let v: Value = serde_json::from_slice(config).map_err(|e| bad(e.to_string()))?;
        let diff_ids: Vec<Digest> = strings(&v["rootfs"]["diff_ids"])
            .unwrap_or_default()
            .iter()
            .map(|d| d.parse().map_err(|e| bad(format!("diff_id {d}: {e}"))))
            .collect::<Result<_, _>>()?;
        if diff_ids.len() != layers.len() {
            return Err(bad(format!("{} diff_ids for {} layers", diff_ids.len(), layers.len())));
        }
        let c = &v["config"];
        let env = strings(&c["Env"])
            .unwrap_or_default()
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, val)) => (k.to_owned(), val.to_owned()),
                None => (e, String::new()),
            })
            .collect();
        let labels = c["Labels"]
            .as_object()
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(ImageState {
            os: v["os"].as_str().unwrap_or("linux").to_owned(),
            architecture: v["architecture"].as_str().unwrap_or("amd64").to_owned(),
            variant: text(&v["variant"]),
            config: RunConfig {
                user: text(&c["User"]),
                exposed_ports: keys(&c["ExposedPorts"]),
                env,
                entrypoint: strings(&c["Entrypoint"]),
                cmd: strings(&c["Cmd"]),
                volumes: keys(&c["Volumes"]),
                working_dir: text(&c["WorkingDir"]),
                labels,
                stop_signal: text(&c["StopSignal"]),
            },
            layers: layers
                .into_iter()
                .zip(diff_ids)
                .map(|((digest, size, media_type), diff_id)| LayerRef { digest, size, media_type, diff_id })
                .collect(),
            base_history: v["history"].as_array().cloned().unwrap_or_default(),
            steps: Vec::new(),
            base_created: text(&v["created"]),
        })
    }

    /// The image's config and manifest, canonical JSON, with `created` as
    /// the image's and every new step's time.
    pub(crate) fn write(&self, created: &str) -> Result<(Vec<u8>, Vec<u8>), ImageError> {
        let spec = |e: oci_spec::OciSpecError| ImageError::Spec(e.to_string());
        let c = &self.config;
        let mut run = ConfigBuilder::default();
        if let Some(u) = &c.user {
            run = run.user(u.clone());
        }
        if !c.exposed_ports.is_empty() {
            run = run.exposed_ports(c.exposed_ports.iter().cloned().collect::<Vec<_>>());
        }
        if !c.env.is_empty() {
            run = run.env(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>());
        }
        if let Some(e) = &c.entrypoint {
            run = run.entrypoint(e.clone());
        }
        if let Some(cmd) = &c.cmd {
            run = run.cmd(cmd.clone());
        }
        if !c.volumes.is_empty() {
            run = run.volumes(c.volumes.iter().cloned().collect::<Vec<_>>());
        }
        if let Some(w) = &c.working_dir {
            run = run.working_dir(w.clone());
        }
        if !c.labels.is_empty() {
            run = run.labels(c.labels.clone().into_iter().collect::<std::collections::HashMap<_, _>>());
        }
        if let Some(s) = &c.stop_signal {
            run = run.stop_signal(s.clone());
        }
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(self.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>())
            .build()
            .map_err(spec)?;
        let mut history: Vec<oci_spec::image::History> = self
            .base_history
            .iter()
            .map(|h| serde_json::from_value(h.clone()).map_err(|e| ImageError::BaseConfig(format!("history: {e}"))))
            .collect::<Result<_, _>>()?;
        for step in &self.steps {
            let mut h = HistoryBuilder::default().created(created).created_by(step.created_by.clone());
            if let Some(comment) = &step.comment {
                h = h.comment(comment.clone());
            }
            if step.empty_layer {
                h = h.empty_layer(true);
            }
            history.push(h.build().map_err(spec)?);
        }
        let mut image = ImageConfigurationBuilder::default()
            .created(created)
            .architecture(Arch::from(self.architecture.as_str()))
            .os(Os::from(self.os.as_str()))
            .config(run.build().map_err(spec)?)
            .rootfs(rootfs)
            .history(history);
        if let Some(v) = &self.variant {
            image = image.variant(v.clone());
        }
        let config = canonical(&image.build().map_err(spec)?)?;
        let descriptor = |media_type: MediaType, digest: &Digest, size: u64| {
            let digest: oci_spec::image::Digest = digest.to_string().parse().map_err(spec)?;
            DescriptorBuilder::default().media_type(media_type).digest(digest).size(size).build().map_err(spec)
        };
        let config_digest = Digest::of(Algorithm::Sha256, &config);
        let layers = self
            .layers
            .iter()
            .map(|l| descriptor(MediaType::from(l.media_type.as_str()), &l.digest, l.size))
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config_digest, config.len() as u64)?)
            .layers(layers)
            .build()
            .map_err(spec)?;
        let manifest = canonical(&manifest)?;
        debug_assert!(media::references(&manifest).is_ok());
        Ok((config, manifest))
    }
}

/// `v` as JSON with every object's keys sorted (serde_json's map is
/// ordered), no whitespace.
fn canonical(v: &impl serde::Serialize) -> Result<Vec<u8>, ImageError> {
    let value = serde_json::to_value(v).map_err(|e| ImageError::Spec(e.to_string()))?;
    serde_json::to_vec(&value).map_err(|e| ImageError::Spec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    #[test]
    fn a_base_config_carries_over_and_the_output_is_canonical() {
        let base = serde_json::json!({
            "architecture": "arm64", "os": "linux", "variant": "v8", "created": "2024-01-02T03:04:05Z",
            "config": {"Env": ["PATH=/usr/bin", "A=1"], "Cmd": ["/bin/sh"], "Labels": {"z": "1", "a": "2"},
                       "ExposedPorts": {"80/tcp": {}}, "WorkingDir": "/srv", "User": ""},
            "rootfs": {"type": "layers", "diff_ids": [digest('d').to_string()]},
            "history": [{"created": "2024-01-02T03:04:05Z", "created_by": "base step"}],
        });
        let mut image = ImageState::from_base(
            &serde_json::to_vec(&base).unwrap(),
            vec![(digest('a'), 100, LAYER_GZIP.into())],
        )
        .unwrap();
        assert_eq!((image.architecture.as_str(), image.variant.as_deref()), ("arm64", Some("v8")));
        assert_eq!(image.config.user, None, "an empty user is none");
        image.config.set_env("A", "2");
        image.config.set_env("B", "3");
        image.config.labels.insert("m".into(), "x".into());
        image.layers.push(LayerRef { digest: digest('b'), size: 7, media_type: LAYER_GZIP.into(), diff_id: digest('e') });
        image.steps.push(Step { created_by: "COPY tool /".into(), comment: None, empty_layer: false });
        image.steps.push(Step { created_by: "LABEL m=x".into(), comment: None, empty_layer: true });
        let (config, manifest) = image.write("2024-01-02T03:04:05Z").unwrap();
        // Again: byte for byte (HashMaps inside oci-spec never leak order).
        for _ in 0..5 {
            assert_eq!(image.clone().write("2024-01-02T03:04:05Z").unwrap(), (config.clone(), manifest.clone()));
        }
        let c: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["config"]["Env"], serde_json::json!(["PATH=/usr/bin", "A=2", "B=3"]));
        assert_eq!(c["config"]["Labels"], serde_json::json!({"a": "2", "m": "x", "z": "1"}));
        assert_eq!(c["rootfs"]["diff_ids"], serde_json::json!([digest('d').to_string(), digest('e').to_string()]));
        assert_eq!(c["history"].as_array().unwrap().len(), 3);
        assert_eq!(c["history"][2]["empty_layer"], true);
        let text = String::from_utf8(config.clone()).unwrap();
        assert!(text.find("\"architecture\"").unwrap() < text.find("\"config\"").unwrap(), "keys sorted: {text}");
        let m: Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["mediaType"], media::OCI_MANIFEST);
        assert_eq!(m["config"]["digest"], Digest::of(Algorithm::Sha256, &config).to_string());
        assert_eq!(m["layers"][1]["size"], 7);
        assert!(media::references(&manifest).is_ok());
    }

    #[test]
    fn a_base_whose_layers_do_not_match_its_diff_ids_is_refused() {
        let base = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
        let e = ImageState::from_base(&serde_json::to_vec(&base).unwrap(), vec![(digest('a'), 1, LAYER_GZIP.into())]);
        assert!(e.is_err());
        let scratch = ImageState::scratch("linux", "amd64", None);
        let (config, _) = scratch.write("1970-01-01T00:00:00Z").unwrap();
        let c: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["rootfs"], serde_json::json!({"type": "layers", "diff_ids": []}));
    }
}
