//! A build context: the tar a client sent, unpacked into a directory of
//! this node with every entry checked as it comes (a relative path inside
//! the context, a regular file, directory or link, within the size and
//! file-count limits), and paths in it resolved the way `COPY` reads them
//! (symlinks followed, never out of the context).
//!
//! Blocking: for the blocking pool.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Bounds on what a context may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_bytes: u64,
    pub(crate) max_files: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ContextError {
    #[error("build context: {path}: {reason}")]
    Refused { path: String, reason: String },
    #[error("build context larger than {limit} bytes (build.max_context_size)")]
    TooLarge { limit: u64 },
    #[error("build context has more than {limit} files (build.max_context_files)")]
    TooMany { limit: u64 },
    #[error("build context: {0}")]
    Io(String),
}

fn refused(path: &str, reason: &str) -> ContextError {
    ContextError::Refused { path: path.to_owned(), reason: reason.to_owned() }
}

/// What an unpacked context holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Unpacked {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// The entry's path as relative segments, or why it cannot be one.
fn segments(raw: &Path) -> Result<Vec<String>, ContextError> {
    let shown = raw.display().to_string();
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => out.push(s.to_str().ok_or_else(|| refused(&shown, "not UTF-8"))?.to_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(refused(&shown, "an absolute path")),
            Component::ParentDir => return Err(refused(&shown, "a path out of the context (..)")),
        }
    }
    Ok(out)
}

/// Makes `dir/segments[..-1]` exist as real directories (never through a
/// symlink an earlier entry made); the path to create.
fn prepare(dir: &Path, segments: &[String], shown: &str) -> Result<PathBuf, ContextError> {
    let mut at = dir.to_path_buf();
    let io = |e: io::Error| ContextError::Io(format!("{shown}: {e}"));
    for s in &segments[..segments.len().saturating_sub(1)] {
        at.push(s);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Err(refused(shown, "a path through a symlink")),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(refused(shown, "a path through a file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&at).map_err(io)?,
            Err(e) => return Err(io(e)),
        }
    }
    if let Some(last) = segments.last() {
        at.push(last);
    }
    Ok(at)
}

/// Unpacks a context tar into `dir` (existing, empty).
pub(crate) fn unpack(tar: impl Read, dir: &Path, limits: Limits) -> Result<Unpacked, ContextError> {
    let mut archive = tar::Archive::new(tar);
    let mut got = Unpacked::default();
    let io = |e: io::Error| ContextError::Io(e.to_string());
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let raw = entry.path().map_err(io)?.into_owned();
        let shown = raw.display().to_string();
        let segments = segments(&raw)?;
        if segments.is_empty() {
            continue;
        }
        got.files += 1;
        if got.files > limits.max_files {
            return Err(ContextError::TooMany { limit: limits.max_files });
        }
        let size = entry.header().size().map_err(io)?;
        got.bytes = got.bytes.saturating_add(size);
        if got.bytes > limits.max_bytes {
            return Err(ContextError::TooLarge { limit: limits.max_bytes });
        }
        let target = prepare(dir, &segments, &shown)?;
        let mode = entry.header().mode().map_err(io)? & 0o7777;
        let kind = entry.header().entry_type();
        let at_io = |e: io::Error| ContextError::Io(format!("{shown}: {e}"));
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            // A later entry replaces an earlier one, as tar does; a
            // directory stays and takes what follows.
            if !(m.is_dir() && kind.is_dir()) {
                if m.is_dir() {
                    std::fs::remove_dir_all(&target).map_err(at_io)?;
                } else {
                    std::fs::remove_file(&target).map_err(at_io)?;
                }
            }
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(at_io)?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut file).map_err(at_io)?;
                if copied != size {
                    return Err(refused(&shown, "cut short"));
                }
                set_mode(&target, mode).map_err(at_io)?;
            }
            tar::EntryType::Directory => {
                if !target.is_dir() {
                    std::fs::create_dir(&target).map_err(at_io)?;
                }
                set_mode(&target, mode | 0o700).map_err(at_io)?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name().map_err(io)?.ok_or_else(|| refused(&shown, "a symlink without a target"))?;
                std::os::unix::fs::symlink(link.as_ref(), &target).map_err(at_io)?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name().map_err(io)?.ok_or_else(|| refused(&shown, "a hard link without a target"))?;
                let from = segments_path(dir, &self::segments(&link)?);
                match std::fs::symlink_metadata(&from) {
                    Ok(m) if m.is_file() => std::fs::hard_link(&from, &target).map_err(at_io)?,
                    _ => return Err(refused(&shown, "a hard link to nothing earlier in the context")),
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => return Err(refused(&shown, "a device file")),
            tar::EntryType::Fifo => return Err(refused(&shown, "a named pipe")),
            _ => return Err(refused(&shown, "not a regular file, directory or link")),
        }
    }
    Ok(got)
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn segments_path(dir: &Path, segments: &[String]) -> PathBuf {
    let mut p = dir.to_path_buf();
    p.extend(segments);
    p
}

/// Symlinks followed at most this many times resolving one path.
const MAX_LINKS: usize = 40;

/// `rel` (a path in the context, `/`-separated) as a path on this node,
/// every symlink on the way followed inside the context: a link that
/// leads out of it (absolute, or `..` above its root) is refused.
pub(crate) fn resolve(root: &Path, rel: &str) -> Result<PathBuf, ContextError> {
    let mut pending: Vec<String> = rel.split('/').filter(|s| !s.is_empty() && *s != ".").rev().map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(next) = pending.pop() {
        if next == ".." {
            if done.pop().is_none() {
                return Err(refused(rel, "a path out of the context (..)"));
            }
            continue;
        }
        done.push(next);
        let here = segments_path(root, &done);
        let Ok(meta) = std::fs::symlink_metadata(&here) else { continue };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(refused(rel, "too many levels of symlinks"));
        }
        let target = std::fs::read_link(&here).map_err(|e| ContextError::Io(format!("{rel}: {e}")))?;
        let target = target.to_str().ok_or_else(|| refused(rel, "a symlink target that is not UTF-8"))?.to_owned();
        if target.starts_with('/') {
            return Err(refused(rel, &format!("a symlink out of the context ({target})")));
        }
        done.pop();
        for s in target.split('/').filter(|s| !s.is_empty() && *s != ".").rev() {
            pending.push(s.to_owned());
        }
        // What the symlink's target climbs out of is checked by `..` above.
        if target.split('/').filter(|s| *s == "..").count() > done.len() {
            return Err(refused(rel, &format!("a symlink out of the context ({target})")));
        }
    }
    Ok(segments_path(root, &done))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_bytes: 1 << 20, max_files: 100 };

    /// A tar of (path, kind, body/link) entries, written raw so bad paths
    /// survive.
    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o640);
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name(std::str::from_utf8(body).unwrap()).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            } else {
                h.set_size(body.len() as u64);
                h.set_cksum();
                b.append(&h, *body).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType as T;

    #[test]
    fn files_directories_and_links_unpack_with_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("src/", T::Directory, b""),
            ("src/main.rs", T::Regular, b"fn main() {}"),
            ("link", T::Symlink, b"src/main.rs"),
            ("hard", T::Link, b"src/main.rs"),
            ("deep/er/file", T::Regular, b"x"),
        ]);
        let got = unpack(&tar[..], dir.path(), LIMITS).unwrap();
        assert_eq!(got, Unpacked { files: 5, bytes: 13 });
        assert_eq!(std::fs::read(dir.path().join("hard")).unwrap(), b"fn main() {}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path().join("src/main.rs")).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(resolve(dir.path(), "link").unwrap(), dir.path().join("src/main.rs"));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for (entries, reason) in [
            (vec![("/etc/passwd", T::Regular, &b"x"[..])], "an absolute path"),
            (vec![("../out", T::Regular, &b"x"[..])], "out of the context"),
            (vec![("dev/null", T::Char, &b""[..])], "a device file"),
            (vec![("p", T::Fifo, &b""[..])], "a named pipe"),
            (vec![("l", T::Symlink, &b"/etc"[..]), ("l/passwd", T::Regular, &b"x"[..])], "through a symlink"),
            (vec![("h", T::Link, &b"/etc/passwd"[..])], "an absolute path"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let e = unpack(&tar_of(&entries)[..], dir.path(), LIMITS).unwrap_err();
            assert!(e.to_string().contains(reason), "{entries:?}: {e}");
        }
    }

    #[test]
    fn limits_stop_the_unpacking() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![0u8; 2 << 20];
        let e = unpack(&tar_of(&[("big", T::Regular, &big)])[..], dir.path(), LIMITS).unwrap_err();
        assert_eq!(e, ContextError::TooLarge { limit: 1 << 20 });
        let dir = tempfile::tempdir().unwrap();
        let many: Vec<(String, T, &[u8])> = (0..101).map(|i| (format!("f{i}"), T::Regular, &b""[..])).collect();
        let many: Vec<(&str, T, &[u8])> = many.iter().map(|(p, k, b)| (p.as_str(), *k, *b)).collect();
        assert_eq!(unpack(&tar_of(&many)[..], dir.path(), LIMITS).unwrap_err(), ContextError::TooMany { limit: 100 });
    }

    #[test]
    fn symlinks_resolve_inside_the_context_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("b", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink("../a/b/f", root.join("a/rel")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", root.join("a/climb")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve(root, "a/up/f").unwrap(), root.join("a/b/f"));
        assert_eq!(resolve(root, "a/rel").unwrap(), root.join("a/b/f"));
        assert_eq!(resolve(root, "./a/b/../b/f").unwrap(), root.join("a/b/f"));
        assert!(resolve(root, "abs").unwrap_err().to_string().contains("out of the context"));
        assert!(resolve(root, "a/climb").unwrap_err().to_string().contains("out of the context"));
        assert!(resolve(root, "../x").is_err());
        assert!(resolve(root, "loop").unwrap_err().to_string().contains("too many levels"));
    }
}
