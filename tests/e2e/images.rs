//! Small random OCI images for the end-to-end tests: layers of random
//! (incompressible) bytes wrapped in real tar+gzip streams so that podman can
//! unpack them, a config whose `diff_ids` match, a manifest, and optionally a
//! linux/amd64 + linux/arm64 index. Images are written as OCI image layouts
//! and pushed to a registry with `skopeo copy`.
//!
//! Every digest is computed here, so tests compare what a client pulled
//! against what was pushed without trusting the registry under test.

use std::path::{Path, PathBuf};

use rand::RngCore;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::clients::Clients;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Content-addressed bytes: a manifest, an index, a config or a layer.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob { media_type: media_type.into(), digest: sha256_digest(&bytes), bytes }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// One platform's image: manifest, config and layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// sha256 of each layer's uncompressed tar, as recorded in the config.
    pub diff_ids: Vec<String>,
    pub architecture: String,
}

impl Image {
    /// A linux image for the architecture this test runs on (so podman
    /// pulls it without a platform mismatch), one layer per size given.
    pub fn random(layer_sizes: &[usize]) -> Image {
        Image::random_for(host_architecture(), layer_sizes)
    }

    pub fn random_for(architecture: &str, layer_sizes: &[usize]) -> Image {
        Image::on_top_of(None, architecture, layer_sizes)
    }

    /// `base`'s layers (as a built image shares its base image's layers),
    /// then new random layers of `layer_sizes`.
    pub fn random_on(base: &Image, layer_sizes: &[usize]) -> Image {
        Image::on_top_of(Some(base), &base.architecture, layer_sizes)
    }

    fn on_top_of(base: Option<&Image>, architecture: &str, layer_sizes: &[usize]) -> Image {
        let mut layers: Vec<Blob> = base.map(|b| b.layers.clone()).unwrap_or_default();
        let mut diff_ids: Vec<String> = base.map(|b| b.diff_ids.clone()).unwrap_or_default();
        for size in layer_sizes {
            let tar = tar_with_one_file(&format!("random-{}.bin", layers.len()), &random_bytes(*size));
            diff_ids.push(sha256_digest(&tar));
            layers.push(Blob::new(LAYER_MEDIA_TYPE, gzip_stored(&tar)));
        }
        let config = json!({
            "architecture": architecture,
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = Blob::new(CONFIG_MEDIA_TYPE, to_json(&config));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(MANIFEST_MEDIA_TYPE, to_json(&manifest));
        Image { manifest, config, layers, diff_ids, architecture: architecture.into() }
    }

    /// Config and layers: every blob a pull must fetch besides the manifest.
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }
}

/// A multi-platform image: an index over linux/amd64 and linux/arm64 images.
#[derive(Clone, Debug)]
pub struct Index {
    pub manifest: Blob,
    pub images: Vec<Image>,
}

impl Index {
    /// linux/amd64 and linux/arm64 children, each with the given layers.
    pub fn random(layer_sizes: &[usize]) -> Index {
        let images: Vec<Image> =
            ["amd64", "arm64"].iter().map(|arch| Image::random_for(arch, layer_sizes)).collect();
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|image| {
                let mut d = image.manifest.descriptor();
                d["platform"] = json!({ "architecture": image.architecture, "os": "linux" });
                d
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests });
        Index { manifest: Blob::new(INDEX_MEDIA_TYPE, to_json(&index)), images }
    }
}

/// Something that can be pushed under a tag: an image or an index.
pub trait Pushable {
    /// The manifest the tag points at.
    fn top(&self) -> &Blob;
    /// Every other blob (child manifests, configs, layers).
    fn all_blobs(&self) -> Vec<&Blob>;
    fn is_index(&self) -> bool;
}

impl Pushable for Image {
    fn top(&self) -> &Blob {
        &self.manifest
    }
    fn all_blobs(&self) -> Vec<&Blob> {
        self.blobs()
    }
    fn is_index(&self) -> bool {
        false
    }
}

impl Pushable for Index {
    fn top(&self) -> &Blob {
        &self.manifest
    }
    fn all_blobs(&self) -> Vec<&Blob> {
        self.images.iter().flat_map(|i| std::iter::once(&i.manifest).chain(i.blobs())).collect()
    }
    fn is_index(&self) -> bool {
        true
    }
}

/// Writes an OCI image layout for `content` under `dir` with `tag` as its
/// only reference, and returns `dir`.
pub fn write_layout(dir: &Path, tag: &str, content: &dyn Pushable) -> PathBuf {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).expect("create layout blobs dir");
    for blob in content.all_blobs().into_iter().chain([content.top()]) {
        std::fs::write(blobs.join(hex_of(&blob.digest)), &blob.bytes).expect("write layout blob");
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
    let mut top = content.top().descriptor();
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let index = json!({ "schemaVersion": 2, "manifests": [top] });
    std::fs::write(dir.join("index.json"), to_json(&index)).expect("write index.json");
    dir.to_path_buf()
}

/// Pushes `content` to `host/repo:tag` with skopeo (plain HTTP), each tag in
/// `tags` in turn. `credentials` are `user:password` for an authenticated
/// registry. `--preserve-digests` makes skopeo fail rather than rewrite
/// anything, so the registry then holds exactly the digests computed here.
pub fn push(
    clients: &Clients,
    work_dir: &Path,
    content: &dyn Pushable,
    host: &str,
    repo: &str,
    tags: &[&str],
    credentials: Option<&str>,
) {
    let layout = work_dir.join(format!("layout-{}", &hex_of(&content.top().digest)[..12]));
    for tag in tags {
        write_layout(&layout, tag, content);
        let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
        if content.is_index() {
            args.push("--all");
        }
        if let Some(c) = credentials {
            args.extend(["--dest-creds", c]);
        }
        let source = format!("oci:{}:{tag}", layout.display());
        let dest = format!("docker://{host}/{repo}:{tag}");
        args.extend([source.as_str(), dest.as_str()]);
        clients.skopeo_ok(&args);
    }
}

/// Reads blob `digest` from an OCI image layout (e.g. one skopeo pulled into).
pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let path = layout.join("blobs").join("sha256").join(hex_of(digest));
    std::fs::read(&path).unwrap_or_else(|e| panic!("blob {digest} is not in layout {}: {e}", layout.display()))
}

/// The digest the layout's `index.json` names for `tag`.
pub fn layout_tag_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("no tag {tag:?} in {index}"))
        .to_owned()
}

/// Asserts that the OCI layout `layout` holds `image` under `tag`: the
/// manifest digest and every config and layer byte for byte.
pub fn assert_layout_holds_image(layout: &Path, tag: &str, image: &Image) {
    assert_eq!(layout_tag_digest(layout, tag), image.manifest.digest, "manifest digest of {tag}");
    assert_eq!(layout_blob(layout, &image.manifest.digest), image.manifest.bytes, "manifest bytes");
    for blob in image.blobs() {
        assert!(layout_blob(layout, &blob.digest) == blob.bytes, "blob {} differs from what was pushed", blob.digest);
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn sha512_digest(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

fn to_json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialise JSON")
}

/// The OCI name of the architecture these tests run on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A POSIX ustar archive holding one regular file.
fn tar_with_one_file(name: &str, data: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut header = [0u8; 512];
    fn put(header: &mut [u8; 512], at: usize, bytes: &[u8]) {
        header[at..at + bytes.len()].copy_from_slice(bytes);
    }
    put(&mut header, 0, name.as_bytes());
    put(&mut header, 100, b"0000644\0");
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(&mut header, 124, format!("{:011o}\0", data.len()).as_bytes());
    put(&mut header, 136, b"00000000000\0");
    put(&mut header, 156, b"0");
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    // The checksum is computed with its own field read as spaces.
    put(&mut header, 148, b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());

    let padding = (512 - data.len() % 512) % 512;
    let mut tar = Vec::with_capacity(512 + data.len() + padding + 1024);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(data);
    tar.extend(std::iter::repeat_n(0, padding + 1024));
    tar
}

/// A gzip stream of `data` in stored (uncompressed) deflate blocks: valid
/// for every gunzip, and random data would not compress anyway.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3), as gzip's trailer wants it.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, entry) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
        *entry = c;
    }
    let mut crc = !0u32;
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[test]
fn gzip_stored_round_trips_through_gunzip() {
    let data = random_bytes(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let gz = dir.path().join("x.gz");
    std::fs::write(&gz, gzip_stored(&data)).expect("write");
    let out = std::process::Command::new("gzip").arg("-dc").arg(&gz).output().expect("run gzip");
    assert!(out.status.success(), "gzip -d failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, data);
}

#[test]
fn tar_with_one_file_lists_and_extracts_with_tar() {
    let data = random_bytes(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("x.tar");
    std::fs::write(&archive, tar_with_one_file("d/f.bin", &data)).expect("write");
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar -x failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dir.path().join("d/f.bin")).expect("extracted file"), data);
}
