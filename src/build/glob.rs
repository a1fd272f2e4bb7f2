//! Path patterns of `COPY` sources and of `.containerignore` /
//! `.dockerignore` files: `*` and `?` within one path segment, `[...]`
//! classes (`[!...]` or `[^...]` negated, ranges), `\` escaping, and in
//! ignore files `**` for any number of segments.

/// Whether `name` (one path segment) matches `pattern` (one segment).
pub(crate) fn segment_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches_from(&p, &n)
}

fn matches_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|skip| matches_from(&p[1..], &n[skip..])),
        Some('?') => !n.is_empty() && matches_from(&p[1..], &n[1..]),
        Some('[') => match (class(&p[1..]), n.first()) {
            (Some((matched, used)), Some(&c)) => matched(c) && matches_from(&p[1 + used..], &n[1..]),
            // An unterminated class is a literal `[`.
            (None, Some('[')) => matches_from(&p[1..], &n[1..]),
            _ => false,
        },
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && matches_from(&p[2..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && matches_from(&p[1..], &n[1..]),
    }
}

/// A class after its `[`: a test, and how many pattern characters it used
/// (through its `]`). None if it never closes.
#[allow(clippy::type_complexity)]
fn class(p: &[char]) -> Option<(Box<dyn Fn(char) -> bool>, usize)> {
    let mut at = 0;
    let negated = matches!(p.first(), Some('!' | '^'));
    if negated {
        at += 1;
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    loop {
        let c = *p.get(at)?;
        if c == ']' && !first {
            at += 1;
            break;
        }
        first = false;
        let lo = if c == '\\' {
            at += 1;
            *p.get(at)?
        } else {
            c
        };
        at += 1;
        if p.get(at) == Some(&'-') && p.get(at + 1).is_some_and(|&e| e != ']') {
            let hi = p[at + 1];
            ranges.push((lo, hi));
            at += 2;
        } else {
            ranges.push((lo, lo));
        }
    }
    Some((Box::new(move |c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != negated), at))
}

/// Whether a pattern has anything to expand.
pub(crate) fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `path` (segments joined by `/`) matches `pattern`, where a
/// `**` segment stands for any number of segments (none too).
pub(crate) fn path_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let n: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    segments_match(&p, &n)
}

fn segments_match(p: &[&str], n: &[&str]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(&"**") => (0..=n.len()).any(|skip| segments_match(&p[1..], &n[skip..])),
        Some(seg) => !n.is_empty() && segment_matches(seg, n[0]) && segments_match(&p[1..], &n[1..]),
    }
}

/// The rules of an ignore file: patterns in order, `!` re-including.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ignore {
    rules: Vec<(String, bool)>,
}

impl Ignore {
    /// Parses `.containerignore` text: one pattern a line, `#` comments,
    /// surrounding whitespace and a leading `/` dropped.
    pub(crate) fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.strip_prefix('!') {
                Some(rest) => (rest.trim().trim_start_matches('/').to_owned(), false),
                None => (l.trim_start_matches('/').to_owned(), true),
            })
            .filter(|(p, _)| !p.is_empty())
            .collect();
        Ignore { rules }
    }

    /// Whether `path` (relative, `/`-separated) is left out: the last rule
    /// that matches it, or one of its parent directories, decides.
    pub(crate) fn ignores(&self, path: &str) -> bool {
        let mut ignored = false;
        for (pattern, excludes) in &self.rules {
            let segments: Vec<&str> = path.split('/').collect();
            // A pattern naming a directory covers what is under it.
            let hit = (1..=segments.len()).any(|n| path_matches(pattern, &segments[..n].join("/")));
            if hit {
                ignored = *excludes;
            }
        }
        ignored
    }

    /// Whether a re-including rule could match something under `dir`: a
    /// directory that is ignored must still be walked then.
    pub(crate) fn may_reinclude_under(&self, dir: &str) -> bool {
        self.rules.iter().any(|(p, excludes)| !excludes && (p.starts_with(dir) || p.starts_with("**") || p.starts_with('*')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert!(segment_matches("*.go", "main.go"));
        assert!(!segment_matches("*.go", "main.rs"));
        assert!(segment_matches("file?.txt", "file1.txt"));
        assert!(segment_matches("[a-c]x", "bx"));
        assert!(!segment_matches("[!a-c]x", "bx"));
        assert!(segment_matches("[^a-c]x", "dx"));
        assert!(segment_matches("\\*", "*"));
        assert!(!segment_matches("\\*", "a"));
        assert!(segment_matches("[]]", "]"));
        assert!(segment_matches("a[", "a["));
        assert!(segment_matches("*", ""));
    }

    #[test]
    fn paths_and_double_stars() {
        assert!(path_matches("src/*.go", "src/main.go"));
        assert!(!path_matches("src/*.go", "src/cmd/main.go"));
        assert!(path_matches("**/*.go", "src/cmd/main.go"));
        assert!(path_matches("**/*.go", "main.go"));
        assert!(path_matches("src/**", "src/a/b"));
        assert!(path_matches("./src/a", "src/a"));
    }

    #[test]
    fn ignore_files_with_exceptions() {
        let ignore = Ignore::parse("# build output\n/target\n*.log\n!keep.log\nnode_modules\n**/*.tmp\n");
        assert!(ignore.ignores("target"));
        assert!(ignore.ignores("target/debug/wharf"), "under an ignored directory");
        assert!(ignore.ignores("error.log"));
        assert!(!ignore.ignores("keep.log"));
        assert!(!ignore.ignores("src/error.log"), "*.log is for the top only");
        assert!(ignore.ignores("a/b/c.tmp"));
        assert!(!ignore.ignores("src/main.rs"));
        assert!(ignore.may_reinclude_under("keep.log"));
    }
}
