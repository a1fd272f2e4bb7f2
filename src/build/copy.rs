//! What a `COPY` (or `ADD` of plain files) puts in its layer: sources
//! from the build context or another stage's files, globs expanded,
//! directories copied by their contents, the destination a directory when
//! it ends in `/`, names several sources or is one already, parents that
//! do not exist yet created; modes kept unless `--chmod`, owners root
//! unless `--chown`. Blocking: it reads the source tree.

use std::path::{Path, PathBuf};

use super::context::{self, ContextError};
use super::glob;
use super::layer::{Body, Entry};
use super::tree::{clean, Tree};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CopyError {
    #[error("no source files match {0}")]
    NoMatch(String),
    #[error("{0}: no such file in the build context")]
    Missing(String),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("{path}: {error}")]
    Io { path: String, error: String },
}

/// A copy to plan.
pub(crate) struct Request<'a> {
    /// Where the sources are: the context, or a stage's files.
    pub(crate) root: &'a Path,
    /// Sources as the instruction names them (variables expanded).
    pub(crate) sources: &'a [String],
    pub(crate) dest: &'a str,
    pub(crate) workdir: &'a str,
    pub(crate) owner: Option<(u64, u64)>,
    pub(crate) chmod: Option<u32>,
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> CopyError + '_ {
    move |e| CopyError::Io { path: path.display().to_string(), error: e.to_string() }
}

/// The relative paths under `root` matching `pattern`, sorted.
fn expand(root: &Path, pattern: &str) -> Result<Vec<String>, CopyError> {
    let wanted: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let mut found = vec![String::new()];
    for (depth, segment) in wanted.iter().enumerate() {
        let mut next = Vec::new();
        for dir in &found {
            if !glob::is_pattern(segment) {
                next.push(join(dir, segment));
                continue;
            }
            let at = context::resolve(root, dir)?;
            let Ok(read) = std::fs::read_dir(&at) else { continue };
            for entry in read {
                let entry = entry.map_err(io_at(&at))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if glob::segment_matches(segment, &name) {
                    next.push(join(dir, &name));
                }
            }
        }
        next.sort();
        // Only the last segment may name a file.
        if depth + 1 < wanted.len() {
            next.retain(|p| context::resolve(root, p).is_ok_and(|r| r.is_dir()));
        }
        found = next;
    }
    found.retain(|p| context::resolve(root, p).is_ok_and(|r| std::fs::symlink_metadata(r).is_ok()));
    if found.is_empty() {
        return Err(CopyError::NoMatch(pattern.to_owned()));
    }
    Ok(found)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// The layer entries of a copy. `tree` is the stage's filesystem as it
/// is before the copy.
pub(crate) fn plan(req: &Request<'_>, tree: &Tree) -> Result<Vec<Entry>, CopyError> {
    let mut sources = Vec::new();
    for s in req.sources {
        if glob::is_pattern(s) {
            sources.extend(expand(req.root, s)?);
        } else {
            let resolved = context::resolve(req.root, s)?;
            if std::fs::symlink_metadata(&resolved).is_err() {
                return Err(CopyError::Missing(s.clone()));
            }
            sources.push(clean(s));
        }
    }
    let dest_text = if req.dest.starts_with('/') { req.dest.to_owned() } else { format!("{}/{}", req.workdir, req.dest) };
    let dest = clean(&dest_text);
    let into_dir = req.dest.ends_with('/') || req.dest == "." || req.dest.ends_with("/.") || sources.len() > 1 || tree.is_dir(&dest);
    let (uid, gid) = req.owner.unwrap_or((0, 0));
    let mut entries: Vec<Entry> = Vec::new();
    for source in &sources {
        let resolved = context::resolve(req.root, source)?;
        let meta = std::fs::metadata(&resolved).map_err(io_at(&resolved))?;
        if meta.is_dir() {
            // A directory's contents, into the destination directory.
            entries.push(Entry { path: dest.clone(), body: Body::Dir, mode: req.chmod.unwrap_or(0o755), uid, gid });
            walk(&resolved, &dest, req, &mut entries)?;
        } else {
            let name = source.rsplit('/').next().unwrap_or(source);
            let target = if into_dir { join(&dest, name) } else { dest.clone() };
            entries.push(Entry {
                path: target,
                body: Body::File { path: resolved.clone(), size: meta.len() },
                mode: req.chmod.unwrap_or_else(|| mode_of(&meta)),
                uid,
                gid,
            });
        }
    }
    if into_dir && !entries.iter().any(|e| e.path == dest) && !dest.is_empty() && !tree.is_dir(&dest) {
        entries.push(Entry { path: dest.clone(), body: Body::Dir, mode: 0o755, uid, gid });
    }
    // Parents that do not exist yet: root's, 0755.
    let mut parents = Vec::new();
    for e in &entries {
        let mut at = e.path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if !tree.is_dir(parent) && !entries.iter().any(|x| x.path == parent) && !parents.iter().any(|p: &Entry| p.path == parent) {
                parents.push(Entry { path: parent.to_owned(), body: Body::Dir, mode: 0o755, uid: 0, gid: 0 });
            }
            at = parent;
        }
    }
    entries.extend(parents);
    entries.retain(|e| !e.path.is_empty());
    Ok(entries)
}

/// Every entry under `dir` (not following symlinks), at `dest/...`.
fn walk(dir: &PathBuf, dest: &str, req: &Request<'_>, out: &mut Vec<Entry>) -> Result<(), CopyError> {
    let mut names: Vec<_> = std::fs::read_dir(dir).map_err(io_at(dir))?.collect::<Result<_, _>>().map_err(io_at(dir))?;
    names.sort_by_key(|e| e.file_name());
    let (uid, gid) = req.owner.unwrap_or((0, 0));
    for entry in names {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let target = join(dest, &name);
        let meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
        let mode = req.chmod.unwrap_or_else(|| mode_of(&meta));
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&path).map_err(io_at(&path))?;
            out.push(Entry { path: target, body: Body::Symlink(link.display().to_string()), mode: 0o777, uid, gid });
        } else if meta.is_dir() {
            out.push(Entry { path: target.clone(), body: Body::Dir, mode, uid, gid });
            walk(&path, &target, req, out)?;
        } else if meta.is_file() {
            out.push(Entry { path: target, body: Body::File { path: path.clone(), size: meta.len() }, mode, uid, gid });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("src/sub")).unwrap();
        std::fs::write(r.join("src/a.go"), b"a").unwrap();
        std::fs::write(r.join("src/b.go"), b"bb").unwrap();
        std::fs::write(r.join("src/sub/c.txt"), b"ccc").unwrap();
        std::fs::write(r.join("tool"), b"#!").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(r.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a.go", r.join("src/link")).unwrap();
        dir
    }

    fn paths(entries: &[Entry]) -> Vec<String> {
        let mut p: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
        p.sort();
        p
    }

    fn run(root: &Path, sources: &[&str], dest: &str, tree: &Tree) -> Result<Vec<Entry>, CopyError> {
        let sources: Vec<String> = sources.iter().map(|s| (*s).to_owned()).collect();
        plan(&Request { root, sources: &sources, dest, workdir: "/app", owner: None, chmod: None }, tree)
    }

    #[test]
    fn a_file_to_a_path_or_into_a_directory() {
        let ctx = context();
        let tree = Tree::default();
        let e = run(ctx.path(), &["tool"], "/usr/local/bin/tool", &tree).unwrap();
        assert_eq!(paths(&e), ["usr", "usr/local", "usr/local/bin", "usr/local/bin/tool"]);
        let tool = e.iter().find(|e| e.path == "usr/local/bin/tool").unwrap();
        assert_eq!((tool.mode, tool.uid), (0o755, 0));
        let e = run(ctx.path(), &["tool"], "bin/", &tree).unwrap();
        assert_eq!(paths(&e), ["app", "app/bin", "app/bin/tool"], "relative to the workdir");
        let e = run(ctx.path(), &["tool"], ".", &tree).unwrap();
        assert_eq!(paths(&e), ["app", "app/tool"]);
    }

    #[test]
    fn directories_by_contents_globs_and_symlinks() {
        let ctx = context();
        let mut tree = Tree::default();
        tree.add(&Entry { path: "srv".into(), body: Body::Dir, mode: 0o755, uid: 0, gid: 0 });
        let e = run(ctx.path(), &["src"], "/srv", &tree).unwrap();
        assert_eq!(paths(&e), ["srv", "srv/a.go", "srv/b.go", "srv/link", "srv/sub", "srv/sub/c.txt"]);
        assert!(matches!(&e.iter().find(|e| e.path == "srv/link").unwrap().body, Body::Symlink(t) if t == "a.go"));
        let e = run(ctx.path(), &["src/*.go"], "/srv/", &tree).unwrap();
        assert_eq!(paths(&e), ["srv/a.go", "srv/b.go"], "/srv exists: not repeated");
        let e = run(ctx.path(), &["src/*/c.txt", "tool"], "/x", &tree).unwrap();
        assert_eq!(paths(&e), ["x", "x/c.txt", "x/tool"], "two sources: into a directory");
        // A top-level symlink is followed (inside the context).
        let e = run(ctx.path(), &["src/link"], "/f", &tree).unwrap();
        assert!(matches!(&e[0].body, Body::File { size: 1, .. }));
    }

    #[test]
    fn owners_modes_and_errors() {
        let ctx = context();
        let tree = Tree::default();
        let sources = vec!["src/a.go".to_owned()];
        let e = plan(
            &Request { root: ctx.path(), sources: &sources, dest: "/d/", workdir: "/", owner: Some((1000, 100)), chmod: Some(0o600) },
            &tree,
        )
        .unwrap();
        let f = e.iter().find(|e| e.path == "d/a.go").unwrap();
        assert_eq!((f.mode, f.uid, f.gid), (0o600, 1000, 100));
        assert_eq!(run(ctx.path(), &["*.rs"], "/x", &tree).unwrap_err(), CopyError::NoMatch("*.rs".into()));
        assert_eq!(run(ctx.path(), &["nope"], "/x", &tree).unwrap_err(), CopyError::Missing("nope".into()));
        assert!(matches!(run(ctx.path(), &["../etc/passwd"], "/x", &tree), Err(CopyError::Context(_))));
        std::os::unix::fs::symlink("/etc/passwd", ctx.path().join("escape")).unwrap();
        assert!(run(ctx.path(), &["escape"], "/x", &tree).unwrap_err().to_string().contains("out of the context"));
    }
}
