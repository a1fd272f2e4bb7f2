//! What a stage's filesystem holds, by path: kind, mode and owner, built
//! from its layers' tar headers (whiteouts and opaque directories
//! applied) and the entries its own steps add. A step asks it whether a
//! destination is a directory, and which parent directories exist
//! already (and with which mode and owner, so a layer repeating them
//! changes nothing).

use std::collections::BTreeMap;
use std::io::Read;

use super::layer::{Body, Entry};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Dir,
    File,
    Symlink(String),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
}

/// A filesystem's paths (relative, `/`-separated, no trailing `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// A path as the tree keys it: no leading `/` or `./`, no trailing `/`,
/// `.` segments dropped, `..` resolved (never above the root).
pub(crate) fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

impl Tree {
    #[cfg(test)]
    pub(crate) fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&clean(path))
    }

    pub(crate) fn is_dir(&self, path: &str) -> bool {
        let p = clean(path);
        p.is_empty() || matches!(self.nodes.get(&p), Some(Node { kind: NodeKind::Dir, .. }))
    }

    fn remove_under(&mut self, dir: &str, itself: bool) {
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = self
            .nodes
            .range(dir.to_owned()..)
            .map(|(k, _)| k)
            .take_while(|k| k.as_str() == dir || k.starts_with(&prefix))
            .filter(|k| itself || k.as_str() != dir)
            .cloned()
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Records what a step's layer adds.
    pub(crate) fn add(&mut self, entry: &Entry) {
        let path = clean(&entry.path);
        let kind = match &entry.body {
            Body::Dir => NodeKind::Dir,
            Body::File { .. } | Body::Bytes(_) => NodeKind::File,
            Body::Symlink(t) => NodeKind::Symlink(t.clone()),
            Body::Whiteout => {
                self.remove_under(&path, true);
                return;
            }
        };
        if kind != NodeKind::Dir {
            self.remove_under(&path, true);
        }
        self.nodes.insert(path, Node { kind, mode: entry.mode, uid: entry.uid, gid: entry.gid });
    }

    /// Applies a layer (an uncompressed tar) on top.
    pub(crate) fn apply_layer(&mut self, tar: impl Read) -> std::io::Result<()> {
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries()? {
            let entry = entry?;
            let raw = entry.path()?.display().to_string();
            let path = clean(&raw);
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (d.to_owned(), n.to_owned()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                self.remove_under(&dir, false);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let hidden = if dir.is_empty() { hidden.to_owned() } else { format!("{dir}/{hidden}") };
                self.remove_under(&hidden, true);
                continue;
            }
            let h = entry.header();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Symlink => NodeKind::Symlink(entry.link_name()?.map(|l| l.display().to_string()).unwrap_or_default()),
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link => NodeKind::File,
                _ => NodeKind::Other,
            };
            if kind != NodeKind::Dir {
                self.remove_under(&path, true);
            }
            if path.is_empty() {
                continue;
            }
            // Fields some writers leave blank read as 0.
            let node = Node { kind, mode: h.mode().unwrap_or(0o755) & 0o7777, uid: h.uid().unwrap_or(0), gid: h.gid().unwrap_or(0) };
            self.nodes.insert(path, node);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_size(0);
            if kind.is_symlink() {
                b.append_link(&mut h, path, "target").unwrap();
            } else {
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType as T;

    #[test]
    fn layers_apply_with_whiteouts_and_opaque_directories() {
        let mut tree = Tree::default();
        tree.apply_layer(&layer(&[("etc/", T::Directory), ("etc/passwd", T::Regular), ("app/", T::Directory), ("app/a", T::Regular), ("app/b", T::Regular), ("bin", T::Symlink)])[..]).unwrap();
        assert!(tree.is_dir("/etc") && tree.is_dir("etc/") && tree.is_dir("/"));
        assert!(!tree.is_dir("etc/passwd"));
        assert_eq!(tree.get("bin").unwrap().kind, NodeKind::Symlink("target".into()));
        tree.apply_layer(&layer(&[("etc/.wh.passwd", T::Regular), ("app/.wh..wh..opq", T::Regular), ("app/c", T::Regular)])[..]).unwrap();
        assert!(tree.get("etc/passwd").is_none());
        assert!(tree.get("app/a").is_none() && tree.get("app/c").is_some() && tree.is_dir("app"));
        // A file replacing a directory takes what was under it.
        tree.apply_layer(&layer(&[("app", T::Regular)])[..]).unwrap();
        assert!(tree.get("app/c").is_none() && !tree.is_dir("app"));
    }

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean("/a/./b//c/"), "a/b/c");
        assert_eq!(clean("../../a/../b"), "b");
        assert_eq!(clean("/"), "");
    }
}
