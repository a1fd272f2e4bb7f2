//! The client's side of a build context: a directory walked in name order
//! with `.containerignore` (or `.dockerignore`) applied, written as a tar
//! as it is read (never whole in memory), with modes and symlinks kept,
//! owners and times left out (the builder sets its own), and the
//! Containerfile added under a name of its own when it lies outside the
//! context.

use std::io::{self, Write};
use std::path::Path;

use super::glob::Ignore;

/// Where the Containerfile goes in the tar when it is not in the context.
pub(crate) const CONTAINERFILE_ENTRY: &str = ".wharf-build/Containerfile";

/// What a packed context held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Packed {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// The ignore rules of `dir`: `.containerignore`, else `.dockerignore`.
pub(crate) fn ignore_rules(dir: &Path) -> io::Result<Ignore> {
    for name in [".containerignore", ".dockerignore"] {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => return Ok(Ignore::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Ignore::default())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes the context `dir` (its ignore rules applied) as a tar into
/// `out`; `containerfile` (its text) is added as [`CONTAINERFILE_ENTRY`]
/// when given. Stops with an error past `max_bytes` of file contents.
pub(crate) fn pack(dir: &Path, containerfile: Option<&str>, max_bytes: u64, out: impl Write) -> io::Result<Packed> {
    let ignore = ignore_rules(dir)?;
    let mut tar = tar::Builder::new(out);
    let mut packed = Packed::default();
    walk(dir, "", &ignore, &mut tar, &mut packed, max_bytes)?;
    if let Some(text) = containerfile {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, ".wharf-build/", io::empty())?;
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        tar.append_data(&mut h, CONTAINERFILE_ENTRY, text.as_bytes())?;
    }
    tar.into_inner()?.flush()?;
    Ok(packed)
}

fn walk<W: Write>(dir: &Path, rel: &str, ignore: &Ignore, tar: &mut tar::Builder<W>, packed: &mut Packed, max_bytes: u64) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let meta = entry.path().symlink_metadata()?;
        let ignored = ignore.ignores(&path);
        if ignored && !(meta.is_dir() && ignore.may_reinclude_under(&path)) {
            continue;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            tar.append_link(&mut h, &path, &target)?;
        } else if meta.is_dir() {
            if !ignored {
                let mut h = header(tar::EntryType::Directory, mode, 0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())?;
            }
            walk(&entry.path(), &path, ignore, tar, packed, max_bytes)?;
        } else if meta.is_file() {
            packed.files += 1;
            packed.bytes += meta.len();
            if packed.bytes > max_bytes {
                return Err(io::Error::other(format!("the build context is larger than {max_bytes} bytes (at {path})")));
            }
            let mut h = header(tar::EntryType::Regular, mode, meta.len());
            let file = std::fs::File::open(entry.path())?;
            tar.append_data(&mut h, &path, io::Read::take(file, meta.len()))?;
        }
        // Sockets, fifos and devices are not build input: left out.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(tar: &[u8]) -> Vec<String> {
        tar::Archive::new(tar).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
    }

    #[test]
    fn a_context_packs_in_name_order_without_what_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::create_dir_all(d.join("target/debug")).unwrap();
        std::fs::write(d.join("src/main.rs"), b"fn main() {}").unwrap();
        std::fs::write(d.join("target/debug/big"), vec![0u8; 1000]).unwrap();
        std::fs::write(d.join("b.log"), b"x").unwrap();
        std::fs::write(d.join("keep.log"), b"y").unwrap();
        std::fs::write(d.join(".containerignore"), "target\n*.log\n!keep.log\n").unwrap();
        std::os::unix::fs::symlink("src/main.rs", d.join("link")).unwrap();
        let mut out = Vec::new();
        let packed = pack(d, Some("FROM scratch\n"), 1 << 20, &mut out).unwrap();
        assert_eq!(
            listed(&out),
            [".containerignore", "keep.log", "link", "src/", "src/main.rs", ".wharf-build/", CONTAINERFILE_ENTRY]
        );
        // .containerignore (23 bytes), keep.log (1), src/main.rs (12).
        assert_eq!(packed, Packed { files: 3, bytes: 23 + 1 + 12 });
        // Twice: the same bytes.
        let mut again = Vec::new();
        pack(d, Some("FROM scratch\n"), 1 << 20, &mut again).unwrap();
        assert!(again == out);
        // The builder's side unpacks it as it was.
        let into = tempfile::tempdir().unwrap();
        let limits = super::super::context::Limits { max_bytes: 1 << 20, max_files: 100 };
        super::super::context::unpack(&out[..], into.path(), limits).unwrap();
        assert_eq!(std::fs::read(into.path().join("src/main.rs")).unwrap(), b"fn main() {}");
        assert_eq!(std::fs::read_link(into.path().join("link")).unwrap(), Path::new("src/main.rs"));
        assert_eq!(std::fs::read_to_string(into.path().join(CONTAINERFILE_ENTRY)).unwrap(), "FROM scratch\n");
        assert!(!into.path().join("target").exists() && !into.path().join("b.log").exists());
        // Too large: an error naming the file it stopped at.
        let e = pack(d, None, 5, io::sink()).unwrap_err();
        assert!(e.to_string().contains("larger than 5 bytes"), "{e}");
    }
}
