//! A remote's tag filter: `include_tags` and `exclude_tags`, globs where
//! `*` matches any run of characters and `?` exactly one; `include_tags`
//! may also list manifest digests, synced whatever their tags. Pure: no
//! I/O.

use std::str::FromStr;

use crate::oci::Digest;

/// A tag is at most 128 characters; a pattern for one, a little more
/// (wildcards stand for nothing, or for many characters).
const MAX_PATTERN_LEN: usize = 256;

/// A checked tag glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagGlob(String);

impl FromStr for TagGlob {
    type Err = String;

    /// The characters a tag may hold (`[A-Za-z0-9_.-]`) and `*`, `?`.
    fn from_str(s: &str) -> Result<TagGlob, String> {
        if s.is_empty() {
            return Err("a tag pattern must not be empty".into());
        }
        if s.len() > MAX_PATTERN_LEN {
            return Err(format!("tag pattern {s:?} is longer than {MAX_PATTERN_LEN} characters"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?');
        if let Some(bad) = s.chars().find(|c| !allowed(*c)) {
            return Err(format!(
                "tag pattern {s:?} has {bad:?}; use letters, digits, '_', '.', '-' and the wildcards '*' and '?'"
            ));
        }
        Ok(TagGlob(s.to_owned()))
    }
}

impl TagGlob {
    /// True if the whole of `tag` matches. Linear: on a mismatch it goes
    /// back only to just after the last `*`, so no pattern is slow.
    pub(crate) fn matches(&self, tag: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), tag.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(&c) if c == b'?' || c == t[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

/// Which tags and manifests of a remote repository a sync takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TagFilter {
    include: Vec<TagGlob>,
    digests: Vec<Digest>,
    exclude: Vec<TagGlob>,
}

impl TagFilter {
    /// Parses a remote's lists; the error names the entry at fault.
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<TagFilter, String> {
        let mut filter = TagFilter::default();
        for entry in include {
            if entry.contains(':') {
                let digest = entry.parse().map_err(|e| format!("include_tags: {entry:?} is not a valid digest: {e}"))?;
                filter.digests.push(digest);
            } else {
                filter.include.push(entry.parse().map_err(|e| format!("include_tags: {e}"))?);
            }
        }
        for entry in exclude {
            filter.exclude.push(entry.parse().map_err(|e| format!("exclude_tags: {e}"))?);
        }
        Ok(filter)
    }

    /// Whether a sync takes `tag`: included (every tag, when include_tags
    /// lists no pattern and no digest) and not excluded.
    pub(crate) fn takes_tag(&self, tag: &str) -> bool {
        let included = if self.include.is_empty() {
            self.digests.is_empty()
        } else {
            self.include.iter().any(|g| g.matches(tag))
        };
        included && !self.exclude.iter().any(|g| g.matches(tag))
    }

    /// Manifests include_tags names by digest.
    pub(crate) fn digests(&self) -> &[Digest] {
        &self.digests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(s: &str) -> TagGlob {
        s.parse().unwrap()
    }

    #[test]
    fn globs_match_whole_tags_with_star_and_question_mark() {
        assert!(glob("v1.*").matches("v1.2.3"));
        assert!(glob("v1.*").matches("v1."));
        assert!(!glob("v1.*").matches("v2.0"));
        assert!(glob("*-rc?").matches("1.0-rc1"));
        assert!(!glob("*-rc?").matches("1.0-rc10"));
        assert!(glob("*").matches(""));
        assert!(glob("a*b*c").matches("aXbYbZc"));
        assert!(!glob("a*b*c").matches("aXbYbZ"));
        assert!(glob("latest").matches("latest"));
        assert!(!glob("latest").matches("latest2"));
        assert!(glob("L?TEST").matches("LATEST"), "tags are case-sensitive but may hold capitals");
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        assert!("".parse::<TagGlob>().unwrap_err().contains("empty"));
        assert!("v1/2".parse::<TagGlob>().unwrap_err().contains("'/'"));
        assert!("x".repeat(300).parse::<TagGlob>().unwrap_err().contains("longer"));
        let e = TagFilter::new(&["sha256:xyz".into()], &[]).unwrap_err();
        assert!(e.starts_with("include_tags: \"sha256:xyz\" is not a valid digest"), "{e}");
        let e = TagFilter::new(&[], &["a b".into()]).unwrap_err();
        assert!(e.starts_with("exclude_tags: "), "{e}");
    }

    #[test]
    fn the_filter_takes_included_tags_minus_excluded_ones() {
        let all = TagFilter::new(&[], &[]).unwrap();
        assert!(all.takes_tag("anything"));
        let f = TagFilter::new(&["v1.*".into(), "latest".into()], &["*-rc*".into()]).unwrap();
        assert!(f.takes_tag("v1.2"));
        assert!(f.takes_tag("latest"));
        assert!(!f.takes_tag("v1.3-rc1"));
        assert!(!f.takes_tag("v2.0"));
        let only_excluded = TagFilter::new(&[], &["dev-*".into()]).unwrap();
        assert!(only_excluded.takes_tag("1.0") && !only_excluded.takes_tag("dev-x"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let by_digest = TagFilter::new(std::slice::from_ref(&digest), &[]).unwrap();
        assert!(!by_digest.takes_tag("latest"), "a digest-only include takes no tags");
        assert_eq!(by_digest.digests()[0].to_string(), digest);
    }
}
