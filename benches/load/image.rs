//! Random OCI images for the load benchmark: layers of random
//! (incompressible) bytes, each wrapped in a valid gzip stream of stored
//! deflate blocks so that skopeo copies it as it is, a config whose
//! `diff_ids` match, and a manifest.
//!
//! Large images are written as OCI image layouts, streamed to disk so a
//! 256 MiB layer never sits in memory, and pushed by `run.sh` with skopeo.
//! Small images (and Flatpak apps for the registry index) are built in
//! memory and pushed by `http::push_image`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub(crate) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The largest payload of one stored deflate block.
const STORED_BLOCK: usize = 65_535;

/// What a manifest says about one piece of content.
#[derive(Clone, Debug)]
pub(crate) struct Descriptor {
    pub(crate) media_type: &'static str,
    pub(crate) digest: String,
    pub(crate) size: u64,
}

impl Descriptor {
    fn to_json(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// Content-addressed bytes held in memory (small images only).
pub(crate) struct Blob {
    pub(crate) descriptor: Descriptor,
    pub(crate) bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        let descriptor = Descriptor { media_type, digest: sha256_digest(&bytes), size: bytes.len() as u64 };
        Blob { descriptor, bytes }
    }
}

/// A small image: its manifest, and the config and layer it names.
pub(crate) struct SmallImage {
    pub(crate) manifest: Blob,
    pub(crate) blobs: Vec<Blob>,
}

/// An image written as an OCI layout.
pub(crate) struct Layout {
    pub(crate) manifest: Descriptor,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

/// Writes an OCI image layout under `dir` holding one random image with a
/// layer of each size in `layer_sizes` (bytes before gzip framing), tagged
/// `tag`.
pub(crate) fn write_layout(dir: &Path, tag: &str, layer_sizes: &[u64]) -> io::Result<Layout> {
    let blobs_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs_dir)?;
    let mut rng = StdRng::from_entropy();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let partial = blobs_dir.join(format!(".layer-{i}.partial"));
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(&partial)?));
        let diff_id = write_random_gzip(&mut out, *size, &mut rng)?;
        let (digest, written, inner) = out.finish();
        inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&partial, blobs_dir.join(hex_of(&digest)))?;
        layers.push(Descriptor { media_type: LAYER_MEDIA_TYPE, digest, size: written });
        diff_ids.push(diff_id);
    }
    let config = Blob::new(CONFIG_MEDIA_TYPE, config_json(oci_architecture(), &json!({}), &diff_ids));
    let manifest = Blob::new(MANIFEST_MEDIA_TYPE, manifest_json(&config.descriptor, &layers));
    for blob in [&config, &manifest] {
        std::fs::write(blobs_dir.join(hex_of(&blob.descriptor.digest)), &blob.bytes)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut top = manifest.descriptor.to_json();
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let index = json!({ "schemaVersion": 2, "manifests": [top] });
    std::fs::write(dir.join("index.json"), to_bytes(&index))?;
    Ok(Layout { manifest: manifest.descriptor, config: config.descriptor, layers })
}

/// A random image with one layer of `layer_size` bytes, built in memory.
pub(crate) fn small_image(layer_size: u64, rng: &mut impl RngCore) -> io::Result<SmallImage> {
    let mut layer = Vec::with_capacity(layer_size as usize + 64);
    let diff_id = write_random_gzip(&mut layer, layer_size, rng)?;
    let layer = Blob::new(LAYER_MEDIA_TYPE, layer);
    let config = Blob::new(CONFIG_MEDIA_TYPE, config_json(oci_architecture(), &json!({}), &[diff_id]));
    Ok(with_manifest(config, layer))
}

/// A Flatpak application as an OCI image: a linux/amd64 config whose
/// `org.flatpak.*` labels say which ref it is, what its metadata file
/// holds and how large it is (what a registry index shows), and one random
/// layer of `layer_size` bytes standing for the ostree commit. App `n` is
/// `org.example.App<n>`.
pub(crate) fn flatpak_image(n: usize, layer_size: u64, rng: &mut impl RngCore) -> io::Result<SmallImage> {
    let mut layer = Vec::with_capacity(layer_size as usize + 64);
    let diff_id = write_random_gzip(&mut layer, layer_size, rng)?;
    let layer = Blob::new(LAYER_MEDIA_TYPE, layer);
    let labels = json!({
        "org.flatpak.ref": flatpak_ref(n),
        "org.flatpak.metadata": format!(
            "[Application]\nname=org.example.App{n}\nruntime=org.freedesktop.Platform/x86_64/23.08\n\
             sdk=org.freedesktop.Sdk/x86_64/23.08\ncommand=app{n}\n\n[Context]\nshared=network;ipc;\n\
             sockets=x11;wayland;pulseaudio;fallback-x11;\ndevices=dri;\nfilesystems=xdg-documents;xdg-download;\n\n\
             [Session Bus Policy]\norg.freedesktop.Notifications=talk\n"
        ),
        "org.flatpak.subject": format!("Build of org.example.App{n}"),
        "org.flatpak.download-size": (layer.bytes.len() as u64).to_string(),
        "org.flatpak.installed-size": (layer_size * 3).to_string(),
        "org.flatpak.timestamp": "1718000000",
    });
    let config = Blob::new(CONFIG_MEDIA_TYPE, config_json("amd64", &json!({ "Labels": labels }), &[diff_id]));
    Ok(with_manifest(config, layer))
}

/// The `org.flatpak.ref` label of app `n` of [`flatpak_image`].
pub(crate) fn flatpak_ref(n: usize) -> String {
    format!("app/org.example.App{n}/x86_64/stable")
}

/// The image of one config and one layer.
fn with_manifest(config: Blob, layer: Blob) -> SmallImage {
    let manifest =
        Blob::new(MANIFEST_MEDIA_TYPE, manifest_json(&config.descriptor, std::slice::from_ref(&layer.descriptor)));
    SmallImage { manifest, blobs: vec![config, layer] }
}

fn config_json(architecture: &str, config: &serde_json::Value, diff_ids: &[String]) -> Vec<u8> {
    to_bytes(&json!({
        "architecture": architecture,
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
}

fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.to_json(),
        "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    }))
}

fn to_bytes(value: &serde_json::Value) -> Vec<u8> {
    // A `Value` always serialises: its keys are strings.
    serde_json::to_vec(value).unwrap_or_default()
}

fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes `size` random bytes as a gzip member made of stored (uncompressed)
/// deflate blocks, and returns the sha256 digest of the uncompressed bytes
/// (the layer's diff_id).
fn write_random_gzip(out: &mut impl Write, size: u64, rng: &mut impl RngCore) -> io::Result<String> {
    // Magic, deflate, no flags, no mtime, no extra flags, unknown OS.
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
    let mut crc = Crc32::new();
    let mut diff_id = Sha256::new();
    let mut block = vec![0u8; STORED_BLOCK];
    let mut left = size;
    loop {
        let len = left.min(STORED_BLOCK as u64) as usize;
        left -= len as u64;
        let data = &mut block[..len];
        rng.fill_bytes(data);
        let last = left == 0;
        let len16 = len as u16;
        out.write_all(&[u8::from(last)])?;
        out.write_all(&len16.to_le_bytes())?;
        out.write_all(&(!len16).to_le_bytes())?;
        out.write_all(data)?;
        crc.update(data);
        diff_id.update(&*data);
        if last {
            break;
        }
    }
    out.write_all(&crc.value().to_le_bytes())?;
    out.write_all(&(size as u32).to_le_bytes())?;
    Ok(format!("sha256:{}", hex::encode(diff_id.finalize())))
}

/// Passes writes through while hashing and counting them.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter { inner, hash: Sha256::new(), written: 0 }
    }

    /// The digest and length of everything written, and the inner writer.
    fn finish(self) -> (String, u64, W) {
        (format!("sha256:{}", hex::encode(self.hash.finalize())), self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// CRC-32 (IEEE 802.3, reflected), as gzip's trailer wants it.
struct Crc32 {
    table: [u32; 256],
    state: u32,
}

impl Crc32 {
    fn new() -> Crc32 {
        let mut table = [0u32; 256];
        for (n, entry) in table.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *entry = c;
        }
        Crc32 { table, state: 0xffff_ffff }
    }

    fn update(&mut self, data: &[u8]) {
        let mut c = self.state;
        for byte in data {
            c = self.table[((c ^ u32::from(*byte)) & 0xff) as usize] ^ (c >> 8);
        }
        self.state = c;
    }

    fn value(&self) -> u32 {
        self.state ^ 0xffff_ffff
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha256:abcd…` → `abcd…`
pub(crate) fn hex_of(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| hex)
}
