//! OCI image layouts between wharf and a runner: the bases a build needs
//! written out from wharf's storage (so the runner never pulls), and the
//! runner's result read back, every blob through verified ingest.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::exec::{Base, Bases};
use crate::oci::media;
use crate::oci::{Algorithm, Digest};
use crate::storage::{Partial, Storage};

/// Largest index.json, manifest or config read from a runner's layout.
const MAX_SMALL: u64 = 8 << 20;

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join(digest.algorithm().as_str()).join(digest.hex())
}

fn io_err(what: &Path) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

fn write_bytes(dir: &Path, digest: &Digest, bytes: &[u8]) -> Result<(), String> {
    let path = blob_path(dir, digest);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::write(&path, bytes).map_err(io_err(&path))
}

/// Adds `base` to the layout in `dir` under the reference `name`
/// (`oci:<dir>:<name>` to a runner): its manifest, config and layers,
/// the layers copied from storage as they are stored.
pub(crate) fn add_base(dir: &Path, base: &Base, bases: &dyn Bases, name: &str) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err(dir))?;
    write_bytes(dir, &base.digest, &base.manifest)?;
    let config = media::references(&base.manifest).map_err(|e| e.to_string())?.config.ok_or("the base's manifest has no config")?;
    write_bytes(dir, &config.digest, &base.config)?;
    for (digest, _, _) in &base.layers {
        let path = blob_path(dir, digest);
        if path.exists() {
            continue;
        }
        let mut reader = bases.open_blob(digest)?;
        let partial = path.with_extension("partial");
        let mut out = File::create(&partial).map_err(io_err(&partial))?;
        io::copy(&mut reader, &mut out).map_err(io_err(&partial))?;
        fs::rename(&partial, &path).map_err(io_err(&path))?;
    }
    let index_path = dir.join("index.json");
    let mut index: Value = match fs::read(&index_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", index_path.display()))?,
        Err(_) => json!({ "schemaVersion": 2, "manifests": [] }),
    };
    let entry = json!({
        "mediaType": base.media_type,
        "digest": base.digest.to_string(),
        "size": base.manifest.len(),
        "annotations": { "org.opencontainers.image.ref.name": name },
    });
    if let Some(list) = index["manifests"].as_array_mut() {
        list.push(entry);
    }
    fs::write(&index_path, serde_json::to_vec(&index).map_err(|e| e.to_string())?).map_err(io_err(&index_path))
}

/// Reads a small file of the layout, at most [`MAX_SMALL`] bytes.
fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    File::open(path).map_err(io_err(path))?.take(MAX_SMALL + 1).read_to_end(&mut bytes).map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_SMALL {
        return Err(format!("{}: larger than {MAX_SMALL} bytes", path.display()));
    }
    Ok(bytes)
}

/// A blob of the layout read whole (a manifest or config), checked
/// against its digest.
fn read_verified(dir: &Path, digest: &Digest) -> Result<Vec<u8>, String> {
    let bytes = read_small(&blob_path(dir, digest))?;
    let actual = Digest::of(digest.algorithm(), &bytes);
    if actual != *digest {
        return Err(format!("{digest}: the runner's file holds {actual}"));
    }
    Ok(bytes)
}

/// The one image in the layout at `dir`: its manifest and config; every
/// layer is stored through verified ingest (through `spool`, a directory
/// on the objects' filesystem). Refused when its layers add up to more
/// than `max_bytes`.
pub(crate) fn import(dir: &Path, storage: &Storage, spool: &Path, max_bytes: u64) -> Result<(Vec<u8>, Vec<u8>), String> {
    let index: Value = serde_json::from_slice(&read_small(&dir.join("index.json"))?).map_err(|e| format!("the runner's index.json: {e}"))?;
    let [entry] = index["manifests"].as_array().map(Vec::as_slice).unwrap_or_default() else {
        return Err("the runner's layout does not hold exactly one image".into());
    };
    let digest: Digest = entry["digest"].as_str().unwrap_or_default().parse().map_err(|e| format!("the runner's index.json: {e}"))?;
    let manifest = read_verified(dir, &digest)?;
    let refs = media::references(&manifest).map_err(|e| format!("the runner's manifest: {e}"))?;
    let config = refs.config.ok_or("the runner's manifest has no config")?;
    let config_bytes = read_verified(dir, &config.digest)?;
    let total: u64 = refs.layers.iter().map(|l| l.size.unwrap_or(0)).sum();
    if total > max_bytes {
        return Err(format!("the image has {total} bytes of layers, more than [build] max_output_size ({max_bytes})"));
    }
    for layer in &refs.layers {
        if layer.digest.algorithm() != Algorithm::Sha256 {
            return Err(format!("{}: a runner's layers are sha256", layer.digest));
        }
        let source = blob_path(dir, &layer.digest);
        let mut file = File::open(&source).map_err(io_err(&source))?;
        let at = spool.join(format!("import-{}", layer.digest.hex()));
        let mut partial = Partial::create(&at).map_err(|e| format!("{}: {e}", at.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io_err(&source))?;
            if n == 0 {
                break;
            }
            partial.write_blocking(&buf[..n]).map_err(|e| format!("{}: {e}", at.display()))?;
        }
        let committed = partial.commit_blocking(storage, &layer.digest, None);
        let _ = fs::remove_file(&at);
        committed.map_err(|e| format!("layer {}: {e}", layer.digest))?;
    }
    Ok((manifest, config_bytes))
}
