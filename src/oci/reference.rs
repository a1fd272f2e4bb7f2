//! A manifest reference: a tag or a digest.

use std::fmt;
use std::str::FromStr;

use super::{Digest, NameError, Tag};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ReferenceError {
    #[error(transparent)]
    Digest(#[from] super::DigestError),
    #[error(transparent)]
    Tag(#[from] NameError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// Anything with a colon is a digest (tags cannot contain one).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_means_digest() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!("3.20".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!("sha256:zz".parse::<Reference>(), Err(ReferenceError::Digest(_))));
        assert!(matches!("bad/tag".parse::<Reference>(), Err(ReferenceError::Tag(_))));
    }
}
