//! Words of a Containerfile's arguments as a shell would read them:
//! quotes, the escape character and `$VAR` / `${VAR}` expansion
//! (`${VAR:-word}`, `${VAR:+word}`, `${VAR-word}`, `${VAR+word}`), from the
//! build's arguments and environment. No command substitution, no globbing:
//! a Containerfile's words are data.

/// Why a string is not words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WordError {
    #[error("unterminated {0} quote")]
    Quote(char),
    #[error("unterminated ${{...}}")]
    Brace,
    #[error("bad substitution ${{{0}}}")]
    Substitution(String),
}

/// A variable's value, when it has one.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `s` as one word: quotes removed, escapes applied, variables expanded;
/// whitespace kept.
pub(crate) fn word(s: &str, escape: char, vars: Lookup<'_>) -> Result<String, WordError> {
    let mut lexer = Lexer { chars: s.chars().collect(), at: 0, escape, vars };
    let mut out = String::new();
    while lexer.at < lexer.chars.len() {
        lexer.one(&mut out, false)?;
    }
    Ok(out)
}

/// `s` with its variables expanded and nothing else changed (quotes and
/// escapes stay, but for an escaped `$`): a heredoc's body.
pub(crate) fn expand(s: &str, escape: char, vars: Lookup<'_>) -> Result<String, WordError> {
    let mut lexer = Lexer { chars: s.chars().collect(), at: 0, escape, vars };
    let mut out = String::new();
    while let Some(c) = lexer.next() {
        match c {
            c if c == escape && lexer.peek() == Some('$') => {
                out.push('$');
                lexer.at += 1;
            }
            '$' => lexer.dollar(&mut out)?,
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `s` split at unquoted whitespace into words, each processed as by
/// [`word`]. `""` is a word, empty.
pub(crate) fn words(s: &str, escape: char, vars: Lookup<'_>) -> Result<Vec<String>, WordError> {
    let mut lexer = Lexer { chars: s.chars().collect(), at: 0, escape, vars };
    let mut out = Vec::new();
    loop {
        while lexer.peek().is_some_and(char::is_whitespace) {
            lexer.at += 1;
        }
        if lexer.peek().is_none() {
            return Ok(out);
        }
        let mut w = String::new();
        while lexer.peek().is_some_and(|c| !c.is_whitespace()) {
            lexer.one(&mut w, false)?;
        }
        out.push(w);
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    at: usize,
    escape: char,
    vars: Lookup<'a>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += 1;
        c
    }

    /// Reads one unit (a character, an escape, a quoted run, a
    /// substitution) onto `out`. `in_braces`: inside `${...:-word}`,
    /// where `}` ends the word.
    fn one(&mut self, out: &mut String, in_braces: bool) -> Result<(), WordError> {
        let Some(c) = self.next() else { return Ok(()) };
        match c {
            c if c == self.escape => match self.next() {
                Some(n) => out.push(n),
                // A trailing escape stays.
                None => out.push(c),
            },
            '\'' => loop {
                match self.next() {
                    Some('\'') => break,
                    Some(n) => out.push(n),
                    None => return Err(WordError::Quote('\'')),
                }
            },
            '"' => loop {
                match self.next() {
                    Some('"') => break,
                    Some(n) if n == self.escape => match self.peek() {
                        Some(m) if m == '"' || m == '$' || m == self.escape => {
                            out.push(m);
                            self.at += 1;
                        }
                        _ => out.push(n),
                    },
                    Some('$') => self.dollar(out)?,
                    Some(n) => out.push(n),
                    None => return Err(WordError::Quote('"')),
                }
            },
            '$' => self.dollar(out)?,
            '}' if in_braces => {
                self.at -= 1;
            }
            c => out.push(c),
        }
        Ok(())
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
            self.at += 1;
        }
        name
    }

    /// After a `$`: a variable's value, or a `$` kept as it is.
    fn dollar(&mut self, out: &mut String) -> Result<(), WordError> {
        match self.peek() {
            Some('{') => {
                self.at += 1;
                let name = self.name();
                if name.is_empty() {
                    return Err(WordError::Substitution(self.rest_of_braces()));
                }
                let value = (self.vars)(&name);
                match self.next() {
                    Some('}') => out.push_str(&value.unwrap_or_default()),
                    Some(':') => {
                        let op = self.next().ok_or(WordError::Brace)?;
                        let word = self.brace_word()?;
                        let set = value.as_deref().is_some_and(|v| !v.is_empty());
                        match op {
                            '-' => out.push_str(&if set { value.unwrap_or_default() } else { word }),
                            '+' => out.push_str(if set { &word } else { "" }),
                            _ => return Err(WordError::Substitution(format!("{name}:{op}{word}"))),
                        }
                    }
                    Some(op @ ('-' | '+')) => {
                        let word = self.brace_word()?;
                        match (op, value) {
                            ('-', Some(v)) => out.push_str(&v),
                            ('-', None) => out.push_str(&word),
                            (_, Some(_)) => out.push_str(&word),
                            (_, None) => {}
                        }
                    }
                    Some(other) => return Err(WordError::Substitution(format!("{name}{other}{}", self.rest_of_braces()))),
                    None => return Err(WordError::Brace),
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                out.push_str(&(self.vars)(&name).unwrap_or_default());
            }
            _ => out.push('$'),
        }
        Ok(())
    }

    /// The word of `${VAR:-word}` up to its `}` (consumed).
    fn brace_word(&mut self) -> Result<String, WordError> {
        let mut word = String::new();
        loop {
            match self.peek() {
                None => return Err(WordError::Brace),
                Some('}') => {
                    self.at += 1;
                    return Ok(word);
                }
                Some(_) => self.one(&mut word, true)?,
            }
        }
    }

    /// For an error message: what is left up to the closing brace.
    fn rest_of_braces(&mut self) -> String {
        let mut rest = String::new();
        while let Some(c) = self.next() {
            if c == '}' {
                break;
            }
            rest.push(c);
        }
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "V" => Some("1.4".into()),
            "EMPTY" => Some(String::new()),
            "SPACED" => Some("a b".into()),
            _ => None,
        }
    }

    fn w(s: &str) -> Result<String, WordError> {
        word(s, '\\', &vars)
    }

    fn ws(s: &str) -> Vec<String> {
        words(s, '\\', &vars).unwrap()
    }

    #[test]
    fn variables_expand_outside_single_quotes() {
        assert_eq!(w("tool-$V.tar").unwrap(), "tool-1.4.tar");
        assert_eq!(w("tool-${V}x").unwrap(), "tool-1.4x");
        assert_eq!(w("'$V'").unwrap(), "$V");
        assert_eq!(w("\"$V and ${V}\"").unwrap(), "1.4 and 1.4");
        assert_eq!(w("$NOPE-").unwrap(), "-");
        assert_eq!(w("\\$V").unwrap(), "$V");
        assert_eq!(w("cost: 5$ $1").unwrap(), "cost: 5$ $1");
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(w("${NOPE:-fallback}").unwrap(), "fallback");
        assert_eq!(w("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(w("${EMPTY-fallback}").unwrap(), "");
        assert_eq!(w("${V:-fallback}").unwrap(), "1.4");
        assert_eq!(w("${V:+set}").unwrap(), "set");
        assert_eq!(w("${NOPE:+set}").unwrap(), "");
        assert_eq!(w("${NOPE:-$V/x}").unwrap(), "1.4/x");
        assert_eq!(w("${NOPE:-'}'}").unwrap(), "}");
    }

    #[test]
    fn words_split_on_unquoted_whitespace_only() {
        assert_eq!(ws("a  b\t\"c d\" 'e f' g\\ h"), ["a", "b", "c d", "e f", "g h"]);
        assert_eq!(ws("k=\"v w\" x=$SPACED"), ["k=v w", "x=a b"]);
        assert_eq!(ws("\"\" x"), ["", "x"]);
        assert!(ws("   ").is_empty());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(w("'open"), Err(WordError::Quote('\'')));
        assert_eq!(w("\"open"), Err(WordError::Quote('"')));
        assert_eq!(w("${V"), Err(WordError::Brace));
        assert_eq!(w("${V:-x"), Err(WordError::Brace));
        assert!(matches!(w("${}"), Err(WordError::Substitution(_))));
        assert!(matches!(w("${V:=x}"), Err(WordError::Substitution(_))));
    }

    #[test]
    fn expanding_alone_keeps_quotes() {
        assert_eq!(expand("it's $V \"x\" \\$V\n", '\\', &vars).unwrap(), "it's 1.4 \"x\" $V\n");
    }

    #[test]
    fn a_backtick_escape_leaves_backslashes_alone() {
        assert_eq!(word("C:\\dir `$V", '`', &vars).unwrap(), "C:\\dir $V");
    }
}
