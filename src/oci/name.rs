//! Repository names and tags, validated against the distribution spec grammar.
//!
//! A valid [`RepositoryName`] is safe to use in a storage key or file path:
//! every component matches `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, so no `..`,
//! no empty component, no encoded separators survive the parser.

use std::fmt;
use std::str::FromStr;

/// The spec allows names up to 255 characters (including the registry host
/// some clients prepend); we apply the same bound to the path name.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RepositoryName(String);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("repository name component {0:?} is invalid")]
    BadComponent(String),
    #[error("tag {0:?} is invalid")]
    BadTag(String),
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub(crate) fn is_valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-"; it must be
        // followed by an alphanumeric (the last byte is alnum, checked above).
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl RepositoryName {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Splits off the first component: `docker.io/library/alpine` gives
    /// `("docker.io", Some(library/alpine))`.
    pub(crate) fn split_first(&self) -> (&str, Option<RepositoryName>) {
        match self.0.split_once('/') {
            Some((first, rest)) => (first, Some(RepositoryName(rest.to_owned()))),
            None => (&self.0, None),
        }
    }

    /// `prefix/self`; both halves are already valid, so the result is too.
    pub(crate) fn with_prefix(&self, prefix: &str) -> Result<RepositoryName, NameError> {
        format!("{prefix}/{}", self.0).parse()
    }

    pub(crate) fn component_count(&self) -> usize {
        self.components().count()
    }
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for c in s.split('/') {
            if !is_valid_component(c) {
                return Err(NameError::BadComponent(c.to_owned()));
            }
        }
        Ok(RepositoryName(s.to_owned()))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Tag(String);

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|&x| x.is_ascii_alphanumeric() || x == b'_');
        let rest_ok = b
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-');
        if !first_ok || !rest_ok || b.len() > MAX_TAG_LEN {
            return Err(NameError::BadTag(s.to_owned()));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl Tag {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for ok in ["alpine", "library/alpine", "docker.io/library/alpine", "a/b_c/d__e/f-g/h---i", "x9.y8"] {
            assert!(ok.parse::<RepositoryName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_traversal_and_odd_names() {
        for bad in [
            "", "..", "a/../b", "a//b", "/a", "a/", "A", "a..b", "a___b", "-a", "a-", "a/.b",
            "a%2fb", "a\\b", "a b", "a/./b", ".",
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad:?}");
        }
        assert_eq!("x".repeat(256).parse::<RepositoryName>(), Err(NameError::TooLong));
    }

    #[test]
    fn split_first_separates_upstream_prefix() {
        let n: RepositoryName = "docker.io/library/alpine".parse().unwrap();
        let (first, rest) = n.split_first();
        assert_eq!(first, "docker.io");
        assert_eq!(rest.unwrap().as_str(), "library/alpine");
        let single: RepositoryName = "alpine".parse().unwrap();
        assert_eq!(single.split_first(), ("alpine", None));
    }

    #[test]
    fn tags_follow_the_grammar() {
        for ok in ["latest", "3.20", "_x", "v1.0-rc_1", &"a".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }
}
