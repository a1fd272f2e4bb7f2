//! The token signing keys: one current ES256 (P-256) key that signs, and
//! the public halves of earlier keys, kept only until every token they
//! signed has expired. Persisted in `<storage.path>/auth/keys.json`
//! (directory 0700, file 0600, replaced atomically), generated on first
//! start; or, for nodes sharing a metadata database, as one document in
//! it, replaced by compare-and-set (so two nodes never lose a key) and
//! read again when another node rotates ([`KeyRing::reload`]): a token
//! one node signed verifies on every node. Rotation makes a new current
//! key; the old one keeps verifying for `token_ttl` plus a minute, then
//! is dropped.
//!
//! Owns the key file and the signature primitives; knows nothing of JWT
//! claims or HTTP.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::metadata::{MetadataError, Store};

/// The file's name under the auth directory.
pub(crate) const KEY_FILE: &str = "keys.json";
const FORMAT_VERSION: u32 = 1;
/// A retired key verifies this much longer than the longest token it can
/// have signed, for clocks that disagree a little.
const RETIRE_MARGIN: Duration = Duration::from_secs(60);

/// The key file cannot be read, written or understood.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct KeyError(String);

struct Current {
    kid: String,
    created_at: u64,
    pair: EcdsaKeyPair,
    /// The private key as stored; written to the key file, never logged.
    pkcs8: Vec<u8>,
}

#[derive(Clone)]
struct Previous {
    kid: String,
    created_at: u64,
    retired_at: u64,
    expires_at: u64,
    public_key: Vec<u8>,
}

struct Keys {
    current: Current,
    previous: Vec<Previous>,
}

/// One key as the admin API lists it; never any private material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyInfo {
    pub(crate) kid: String,
    /// True for the key that signs new tokens.
    pub(crate) current: bool,
    pub(crate) created_at: u64,
    /// When it stopped signing (previous keys only).
    pub(crate) retired_at: Option<u64>,
    /// When it stops verifying (previous keys only).
    pub(crate) expires_at: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    current: StoredPrivate,
    #[serde(default)]
    previous: Vec<StoredPublic>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredPrivate {
    kid: String,
    created_at: u64,
    /// PKCS#8 v1 (as ring generates it), standard base64.
    pkcs8: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredPublic {
    kid: String,
    created_at: u64,
    retired_at: u64,
    expires_at: u64,
    /// The uncompressed P-256 point, standard base64.
    public_key: String,
}

/// Where the keys are kept.
enum Persist {
    /// The key file of a single node.
    File(PathBuf),
    /// The metadata store shared by a cluster's nodes. `loaded` is the
    /// document as last read or written: what a rotation must replace.
    Shared { store: Arc<dyn Store>, loaded: Mutex<String> },
}

/// The shared document's name.
const SHARED: &str = "token";

/// The signing keys. Cheap to share behind an `Arc`.
pub(crate) struct KeyRing {
    persist: Persist,
    rng: SystemRandom,
    // Read on every token check, written on rotation: readers clone the
    // Arc and drop the lock at once (never held across an await).
    keys: RwLock<Arc<Keys>>,
    // Serialises rotations, so two at once cannot lose a key; held only
    // around the file write, which is small and synchronous.
    rotating: Mutex<()>,
}

impl KeyRing {
    /// Loads the key file in `dir`, or makes a key and the file on first
    /// start. Retired keys past their expiry are dropped.
    pub(crate) fn open(dir: &Path, now: u64) -> Result<KeyRing, KeyError> {
        let io = |what: &str, p: &Path, e: std::io::Error| KeyError(format!("{what} {}: {e}", p.display()));
        fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io("cannot restrict", dir, e))?;
        let file = dir.join(KEY_FILE);
        let rng = SystemRandom::new();
        let (keys, changed) = match fs::read(&file) {
            Ok(bytes) => {
                let mode = fs::metadata(&file).map_err(|e| io("cannot stat", &file, e))?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(file = %file.display(), mode = format!("{:o}", mode & 0o777), "the signing key file was readable by others; restricting it to 0600");
                    fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                        .map_err(|e| io("cannot restrict", &file, e))?;
                }
                let mut keys = parse(&bytes).map_err(|e| KeyError(format!("{}: {e}", file.display())))?;
                let before = keys.previous.len();
                keys.previous.retain(|p| p.expires_at > now);
                let pruned = keys.previous.len() != before;
                (keys, pruned)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (Keys { current: generate(&rng, now)?, previous: Vec::new() }, true)
            }
            Err(e) => return Err(io("cannot read", &file, e)),
        };
        if changed {
            write_atomically(&file, &serialise(&keys)?)?;
        }
        Ok(KeyRing { persist: Persist::File(file), rng, keys: RwLock::new(Arc::new(keys)), rotating: Mutex::new(()) })
    }

    /// Loads the keys the nodes sharing `store` keep, or makes them if no
    /// node has yet (the first node to store them wins; the others load
    /// its). Blocks: call it off the async runtime.
    pub(crate) fn open_shared(store: Arc<dyn Store>, now: u64) -> Result<KeyRing, KeyError> {
        let rng = SystemRandom::new();
        let failed = |e: MetadataError| KeyError(format!("the shared signing keys: {e}"));
        for _ in 0..5 {
            let (keys, document) = match store.signing_keys(SHARED).map_err(failed)? {
                None => {
                    let keys = Keys { current: generate(&rng, now)?, previous: Vec::new() };
                    let document = to_text(&keys)?;
                    if !store.swap_signing_keys(SHARED, None, &document).map_err(failed)? {
                        continue; // Another node stored its keys first.
                    }
                    (keys, document)
                }
                Some(document) => {
                    let mut keys = parse(document.as_bytes()).map_err(|e| KeyError(format!("the shared signing keys: {e}")))?;
                    keys.previous.retain(|p| p.expires_at > now);
                    (keys, document)
                }
            };
            return Ok(KeyRing {
                persist: Persist::Shared { store, loaded: Mutex::new(document) },
                rng,
                keys: RwLock::new(Arc::new(keys)),
                rotating: Mutex::new(()),
            });
        }
        Err(KeyError("the shared signing keys kept changing while they were read".into()))
    }

    /// Reads the shared keys again (after another node rotated them); a
    /// key file is only ever changed by this process, so nothing to do.
    /// Blocks: call it off the async runtime.
    pub(crate) fn reload(&self, now: u64) -> Result<(), KeyError> {
        let Persist::Shared { store, loaded } = &self.persist else { return Ok(()) };
        let document = store
            .signing_keys(SHARED)
            .map_err(|e| KeyError(format!("the shared signing keys: {e}")))?
            .ok_or_else(|| KeyError("the shared signing keys are gone from the database".into()))?;
        let mut keys = parse(document.as_bytes()).map_err(|e| KeyError(format!("the shared signing keys: {e}")))?;
        keys.previous.retain(|p| p.expires_at > now);
        *loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = document;
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(())
    }

    fn snapshot(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Signs `message` with the current key: its kid and the fixed-size
    /// (r || s) ES256 signature.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<(String, Vec<u8>), KeyError> {
        let keys = self.snapshot();
        let signature = keys
            .current
            .pair
            .sign(&self.rng, message)
            .map_err(|_| KeyError("ES256 signing failed".into()))?;
        Ok((keys.current.kid.clone(), signature.as_ref().to_vec()))
    }

    /// The kid of the key that signs now.
    pub(crate) fn current_kid(&self) -> String {
        self.snapshot().current.kid.clone()
    }

    /// True if the key `kid` (current, or previous and not yet expired at
    /// `now`) signed `message`.
    pub(crate) fn verify(&self, kid: &str, message: &[u8], signature: &[u8], now: u64) -> bool {
        let keys = self.snapshot();
        let public: &[u8] = if keys.current.kid == kid {
            keys.current.pair.public_key().as_ref()
        } else {
            match keys.previous.iter().find(|p| p.kid == kid && p.expires_at > now) {
                Some(p) => &p.public_key,
                None => return false,
            }
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public).verify(message, signature).is_ok()
    }

    /// Makes a new current key. The old one verifies tokens for
    /// `token_ttl` (plus a margin) more, then is forgotten; retired keys
    /// already expired are dropped. Persists before the switch, so a crash
    /// never leaves a signing key that is not on disk.
    pub(crate) fn rotate(&self, token_ttl: Duration, now: u64) -> Result<Vec<KeyInfo>, KeyError> {
        let _one_at_a_time = match self.rotating.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let old = self.snapshot();
        let retired = Previous {
            kid: old.current.kid.clone(),
            created_at: old.current.created_at,
            retired_at: now,
            expires_at: now + (token_ttl + RETIRE_MARGIN).as_secs(),
            public_key: old.current.pair.public_key().as_ref().to_vec(),
        };
        let mut previous: Vec<Previous> = old.previous.iter().filter(|p| p.expires_at > now).cloned().collect();
        previous.push(retired);
        let keys = Keys { current: generate(&self.rng, now)?, previous };
        match &self.persist {
            Persist::File(file) => write_atomically(file, &serialise(&keys)?)?,
            Persist::Shared { store, loaded } => {
                let document = to_text(&keys)?;
                let old = loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let swapped = store
                    .swap_signing_keys(SHARED, Some(&old), &document)
                    .map_err(|e| KeyError(format!("the shared signing keys: {e}")))?;
                if !swapped {
                    self.reload(now)?;
                    return Err(KeyError(
                        "another node rotated the signing key at the same moment; its keys are in use now".into(),
                    ));
                }
                *loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = document;
            }
        }
        let mut slot = match self.keys.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(keys);
        drop(slot);
        Ok(self.list())
    }

    /// The current key first, then previous keys, newest first.
    pub(crate) fn list(&self) -> Vec<KeyInfo> {
        let keys = self.snapshot();
        let mut out = vec![KeyInfo {
            kid: keys.current.kid.clone(),
            current: true,
            created_at: keys.current.created_at,
            retired_at: None,
            expires_at: None,
        }];
        let mut previous = keys.previous.clone();
        previous.sort_by_key(|p| std::cmp::Reverse(p.retired_at));
        out.extend(previous.into_iter().map(|p| KeyInfo {
            kid: p.kid,
            current: false,
            created_at: p.created_at,
            retired_at: Some(p.retired_at),
            expires_at: Some(p.expires_at),
        }));
        out
    }
}

/// A key id: the first 16 hex digits of the public key's SHA-256.
fn kid_of(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

fn generate(rng: &SystemRandom, now: u64) -> Result<Current, KeyError> {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
        .map_err(|_| KeyError("cannot generate a P-256 key".into()))?;
    current_from(pkcs8.as_ref().to_vec(), now, rng)
}

fn current_from(pkcs8: Vec<u8>, created_at: u64, rng: &SystemRandom) -> Result<Current, KeyError> {
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, rng)
        .map_err(|e| KeyError(format!("the signing key is not a P-256 PKCS#8 key: {e}")))?;
    Ok(Current { kid: kid_of(pair.public_key().as_ref()), created_at, pair, pkcs8 })
}

fn parse(bytes: &[u8]) -> Result<Keys, String> {
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| format!("not a wharf key file: {e}"))?;
    if file.version != FORMAT_VERSION {
        return Err(format!("key file version {} is not {FORMAT_VERSION}", file.version));
    }
    let pkcs8 = STANDARD.decode(&file.current.pkcs8).map_err(|e| format!("current.pkcs8: {e}"))?;
    let current = current_from(pkcs8, file.current.created_at, &SystemRandom::new()).map_err(|e| e.0)?;
    let previous = file
        .previous
        .into_iter()
        .map(|p| {
            let public_key = STANDARD.decode(&p.public_key).map_err(|e| format!("previous {}: {e}", p.kid))?;
            Ok(Previous {
                kid: p.kid,
                created_at: p.created_at,
                retired_at: p.retired_at,
                expires_at: p.expires_at,
                public_key,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Keys { current, previous })
}

fn serialise(keys: &Keys) -> Result<Vec<u8>, KeyError> {
    let file = KeyFile {
        version: FORMAT_VERSION,
        current: StoredPrivate {
            kid: keys.current.kid.clone(),
            created_at: keys.current.created_at,
            pkcs8: STANDARD.encode(&keys.current.pkcs8),
        },
        previous: keys
            .previous
            .iter()
            .map(|p| StoredPublic {
                kid: p.kid.clone(),
                created_at: p.created_at,
                retired_at: p.retired_at,
                expires_at: p.expires_at,
                public_key: STANDARD.encode(&p.public_key),
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&file).map_err(|e| KeyError(format!("cannot serialise the key file: {e}")))
}

fn to_text(keys: &Keys) -> Result<String, KeyError> {
    String::from_utf8(serialise(keys)?).map_err(|_| KeyError("the key document is not UTF-8".into()))
}

/// Writes `bytes` to a 0600 temporary file beside `path`, syncs it, and
/// renames it over `path`: readers see the old file or the new, never a
/// part, and the private key is never world-readable, not even briefly.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("json.tmp");
    let fail = |what: &str, e: std::io::Error| KeyError(format!("cannot {what} {}: {e}", tmp.display()));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("remove", e)),
    }
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(|e| fail("create", e))?;
    f.write_all(bytes).map_err(|e| fail("write", e))?;
    f.sync_all().map_err(|e| fail("sync", e))?;
    fs::rename(&tmp, path).map_err(|e| KeyError(format!("cannot rename {} to {}: {e}", tmp.display(), path.display())))?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; a failure here loses nothing already read.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    #[test]
    fn nodes_sharing_a_store_share_the_keys_and_read_a_rotation_again() {
        let db = crate::metadata::TestDb::new();
        let a = KeyRing::open_shared(Arc::new(db.open()), 1000).unwrap();
        let b = KeyRing::open_shared(Arc::new(db.open()), 1000).unwrap();
        assert_eq!(a.current_kid(), b.current_kid(), "the second node loads the first one's key");
        let (kid, signature) = a.sign(b"issued by a").unwrap();
        assert!(b.verify(&kid, b"issued by a", &signature, 1001));

        a.rotate(TTL, 1100).unwrap();
        let (new_kid, new_signature) = a.sign(b"after the rotation").unwrap();
        assert!(!b.verify(&new_kid, b"after the rotation", &new_signature, 1101), "b has not read it yet");
        b.reload(1101).unwrap();
        assert!(b.verify(&new_kid, b"after the rotation", &new_signature, 1101));
        assert!(b.verify(&kid, b"issued by a", &signature, 1101), "the retired key still verifies");

        // Two rotations at once: the later one loses, says so, and takes
        // the winner's keys; no key is lost.
        a.rotate(TTL, 1200).unwrap();
        let e = b.rotate(TTL, 1201).expect_err("the second rotation loses").to_string();
        assert!(e.contains("another node rotated"), "{e}");
        assert_eq!(a.current_kid(), b.current_kid());
        assert_eq!(a.list(), b.list());
        let restarted = KeyRing::open_shared(Arc::new(db.open()), 1300).unwrap();
        assert_eq!(restarted.list(), a.list());
    }

    #[test]
    fn first_start_makes_a_private_key_file_and_restart_reads_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("auth");
        let ring = KeyRing::open(&dir, 1000).unwrap();
        let mode = fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let (kid, sig) = ring.sign(b"hello").unwrap();
        let again = KeyRing::open(&dir, 2000).unwrap();
        assert_eq!(again.current_kid(), kid);
        assert!(again.verify(&kid, b"hello", &sig, 2000));
        assert!(!again.verify(&kid, b"hellp", &sig, 2000));
    }

    #[test]
    fn a_rotated_key_verifies_until_its_tokens_expired_then_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("auth");
        let ring = KeyRing::open(&dir, 1000).unwrap();
        let (old_kid, sig) = ring.sign(b"m").unwrap();
        let listed = ring.rotate(TTL, 1100).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].current && listed[0].kid != old_kid);
        assert_eq!(listed[1].kid, old_kid);
        assert_eq!(listed[1].expires_at, Some(1100 + 360));
        assert!(ring.verify(&old_kid, b"m", &sig, 1200), "old tokens still verify");
        assert!(!ring.verify(&old_kid, b"m", &sig, 1460), "not after the retired key expired");
        let (new_kid, _) = ring.sign(b"m").unwrap();
        assert_ne!(new_kid, old_kid);
        // A restart after the expiry forgets the old key altogether.
        let restarted = KeyRing::open(&dir, 5000).unwrap();
        assert_eq!(restarted.list().len(), 1);
        assert_eq!(restarted.current_kid(), new_kid);
    }

    #[test]
    fn a_loose_key_file_is_restricted_and_garbage_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("auth");
        drop(KeyRing::open(&dir, 1).unwrap());
        let file = dir.join(KEY_FILE);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        KeyRing::open(&dir, 2).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&file, b"{}").unwrap();
        let e = KeyRing::open(&dir, 3).err().expect("garbage refused").to_string();
        assert!(e.contains("keys.json"), "{e}");
    }
}
