//! The registry index's query (`/index/static?...`, `/index/dynamic?...`):
//! `repository`, `tag`, `os`, `architecture`, `label:<l>=<v>`,
//! `label:<l>:exists=1`, `annotation:<a>=<v>`, `annotation:<a>:exists=1`.
//! An image matches when, for every key the query names, one of that
//! key's values matches it: repeated keys OR'ed, different keys AND'ed
//! (flatpak-oci-specs, registry-index.md). Unknown keys are refused
//! rather than ignored, so a misspelt filter never widens an answer.

use std::collections::BTreeMap;

/// One key of the query.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Repository,
    Tag,
    Os,
    Architecture,
    Label(String),
    LabelExists(String),
    Annotation(String),
    AnnotationExists(String),
}

/// What the query asks of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query {
    /// Each key, with the values any one of which matches.
    keys: BTreeMap<Key, Vec<String>>,
}

/// What a query is matched against: an image, as the index records it.
pub(crate) struct Subject<'a> {
    pub(crate) repository: &'a str,
    /// The image's tags, or for an image in a list the list's.
    pub(crate) tags: &'a [String],
    pub(crate) os: &'a str,
    pub(crate) architecture: &'a str,
    pub(crate) labels: &'a BTreeMap<String, String>,
    pub(crate) annotations: &'a BTreeMap<String, String>,
}

impl Query {
    /// Parses the URL's query string.
    pub(crate) fn parse(raw: &str) -> Result<Query, String> {
        let mut keys: BTreeMap<Key, Vec<String>> = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let key = match k.as_ref() {
                "repository" => Key::Repository,
                "tag" => Key::Tag,
                "os" => Key::Os,
                "architecture" => Key::Architecture,
                other => {
                    let (kind, rest) = other.split_once(':').ok_or_else(|| format!("unknown query parameter {other:?}"))?;
                    let (name, exists) = match rest.strip_suffix(":exists") {
                        Some(name) => (name, true),
                        None => (rest, false),
                    };
                    if name.is_empty() {
                        return Err(format!("query parameter {other:?} names no {kind}"));
                    }
                    if exists && v != "1" {
                        return Err(format!("{other}={v}: the :exists form takes 1"));
                    }
                    match (kind, exists) {
                        ("label", false) => Key::Label(name.to_owned()),
                        ("label", true) => Key::LabelExists(name.to_owned()),
                        ("annotation", false) => Key::Annotation(name.to_owned()),
                        ("annotation", true) => Key::AnnotationExists(name.to_owned()),
                        _ => return Err(format!("unknown query parameter {other:?}")),
                    }
                }
            };
            keys.entry(key).or_default().push(v.into_owned());
        }
        Ok(Query { keys })
    }

    /// Whether `s` matches every key of the query.
    pub(crate) fn matches(&self, s: &Subject<'_>) -> bool {
        self.keys.iter().all(|(key, values)| {
            values.iter().any(|v| match key {
                Key::Repository => s.repository == v,
                Key::Tag => s.tags.iter().any(|t| t == v),
                Key::Os => s.os == v,
                Key::Architecture => s.architecture == v,
                Key::Label(l) => s.labels.get(l) == Some(v),
                Key::LabelExists(l) => s.labels.contains_key(l),
                Key::Annotation(a) => s.annotations.get(a) == Some(v),
                Key::AnnotationExists(a) => s.annotations.contains_key(a),
            })
        })
    }

    /// The query in one canonical spelling (keys and values sorted), for
    /// caching answers: two spellings of one question share one answer.
    pub(crate) fn canonical(&self) -> String {
        let mut pairs: Vec<String> = self
            .keys
            .iter()
            .flat_map(|(k, vs)| {
                let name = match k {
                    Key::Repository => "repository".to_owned(),
                    Key::Tag => "tag".to_owned(),
                    Key::Os => "os".to_owned(),
                    Key::Architecture => "architecture".to_owned(),
                    Key::Label(l) => format!("label:{l}"),
                    Key::LabelExists(l) => format!("label:{l}:exists"),
                    Key::Annotation(a) => format!("annotation:{a}"),
                    Key::AnnotationExists(a) => format!("annotation:{a}:exists"),
                };
                vs.iter().map(move |v| form_urlencoded::Serializer::new(String::new()).append_pair(&name, v).finish())
            })
            .collect();
        pairs.sort();
        pairs.dedup();
        pairs.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_query_flatpak_sends_matches_flatpak_images_only() {
        // Exactly what flatpak 1.14's `remote-ls` asks.
        let q = Query::parse("label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest").unwrap();
        let tags = vec!["latest".to_owned()];
        let (flatpak, plain, none) = (labels(&[("org.flatpak.ref", "app/org.example.Hello/x86_64/stable")]), labels(&[("maintainer", "x")]), BTreeMap::new());
        let s = |labels, architecture, tags| Subject { repository: "apps/hello", tags, os: "linux", architecture, labels, annotations: &none };
        assert!(q.matches(&s(&flatpak, "amd64", &tags)));
        assert!(!q.matches(&s(&plain, "amd64", &tags)), "no org.flatpak.ref label");
        assert!(!q.matches(&s(&flatpak, "arm64", &tags)), "another architecture");
        assert!(!q.matches(&s(&flatpak, "amd64", &["1.0".to_owned()])), "another tag");
    }

    #[test]
    fn repeated_keys_are_ored_and_different_keys_anded() {
        let q = Query::parse("label:org.example.a:exists=1&label:org.example.b=X&label:org.example.b=Y").unwrap();
        let none = BTreeMap::new();
        let check = |l: &BTreeMap<String, String>| q.matches(&Subject { repository: "r", tags: &[], os: "linux", architecture: "amd64", labels: l, annotations: &none });
        assert!(check(&labels(&[("org.example.a", ""), ("org.example.b", "X")])));
        assert!(check(&labels(&[("org.example.a", "1"), ("org.example.b", "Y")])));
        assert!(!check(&labels(&[("org.example.a", "1"), ("org.example.b", "Z")])));
        assert!(!check(&labels(&[("org.example.b", "X")])), "no org.example.a");
        let q = Query::parse("repository=a&repository=b&annotation:x=1").unwrap();
        let ann = labels(&[("x", "1")]);
        for (repo, want) in [("a", true), ("b", true), ("c", false)] {
            let s = Subject { repository: repo, tags: &[], os: "linux", architecture: "amd64", labels: &none, annotations: &ann };
            assert_eq!(q.matches(&s), want, "{repo}");
        }
        assert!(Query::parse("").unwrap().matches(&Subject { repository: "r", tags: &[], os: "", architecture: "", labels: &none, annotations: &none }));
    }

    #[test]
    fn unknown_or_malformed_keys_are_refused() {
        for bad in ["arch=amd64", "label:=x", "label:a:exists=yes", "labels:a=1", "annotation"] {
            assert!(Query::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spellings_of_one_question_share_a_canonical_form() {
        let a = Query::parse("tag=latest&os=linux&label%3Aorg.flatpak.ref%3Aexists=1").unwrap();
        let b = Query::parse("label:org.flatpak.ref:exists=1&os=linux&tag=latest&tag=latest").unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.canonical(), Query::parse("tag=latest").unwrap().canonical());
    }
}
