//! Repository-name patterns in `[[auth.rule]]`: `*` matches any run of
//! characters, `/` included (`team/*` covers `team/a` and `team/a/b`), `?`
//! exactly one character, anything else itself. Matching is over the name
//! as the client writes it in the request path. Pure: no I/O.

use std::fmt;

/// Longest pattern accepted; a repository name is at most 255 characters.
const MAX_PATTERN_LEN: usize = 255;

/// A validated repository-name pattern.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RepositoryPattern(String);

impl RepositoryPattern {
    /// Accepts the characters a repository name may hold (lowercase letters,
    /// digits, `.`, `_`, `-`, `/`) plus `*` and `?`.
    pub(crate) fn parse(s: &str) -> Result<RepositoryPattern, String> {
        if s.is_empty() {
            return Err("a repository pattern must not be empty".into());
        }
        if s.len() > MAX_PATTERN_LEN {
            return Err(format!("pattern {s:?} is longer than {MAX_PATTERN_LEN} characters"));
        }
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/' | '*' | '?');
        if let Some(bad) = s.chars().find(|c| !allowed(*c)) {
            return Err(format!(
                "pattern {s:?} has {bad:?}; use lowercase letters, digits, '.', '_', '-', '/', and the wildcards '*' and '?'"
            ));
        }
        Ok(RepositoryPattern(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// True if the whole of `name` matches. Linear-time wildcard matching:
    /// on a mismatch it backtracks only to the last `*`, so no pattern can
    /// make a request slow.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let (p, n) = (self.0.as_bytes(), name.as_bytes());
        let (mut pi, mut ni) = (0, 0);
        // Where the last `*` was, and where in `name` it started matching.
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, ni));
                    pi += 1;
                }
                Some(&c) if c == b'?' || c == n[ni] => {
                    pi += 1;
                    ni += 1;
                }
                _ => match star {
                    // Let the last `*` swallow one more character.
                    Some((sp, sn)) => {
                        pi = sp + 1;
                        ni = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

impl fmt::Debug for RepositoryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for RepositoryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        RepositoryPattern::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn star_matches_any_run_including_slashes() {
        assert!(m("team/*", "team/app"));
        assert!(m("team/*", "team/app/sub"));
        assert!(m("team/*", "team/"));
        assert!(!m("team/*", "team"));
        assert!(!m("team/*", "teams/app"));
        assert!(m("*", "anything/at/all"));
        assert!(m("*/app", "a/b/app"));
        assert!(!m("*/app", "a/b/apps"));
        assert!(m("a*b*c", "a-x-b-y-c"));
        assert!(!m("a*b*c", "a-x-c-y-b"));
        assert!(m("**", ""));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(m("app?", "app1"));
        assert!(!m("app?", "app"));
        assert!(!m("app?", "app12"));
        assert!(m("a?c", "a/c"));
    }

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(m("team/app", "team/app"));
        assert!(!m("team/app", "team/app2"));
        assert!(!m("team/app", "team/ap"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(50);
        let name = "a".repeat(200) + "b";
        assert!(!m(&pattern, &name));
    }

    #[test]
    fn invalid_patterns_say_why() {
        assert!(RepositoryPattern::parse("").is_err());
        assert!(RepositoryPattern::parse("Team/*").unwrap_err().contains("'T'"));
        assert!(RepositoryPattern::parse("team/[ab]").is_err());
        assert!(RepositoryPattern::parse(&"a".repeat(256)).is_err());
    }
}
