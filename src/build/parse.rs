//! A Containerfile, read into instructions: parser directives (`# escape=`,
//! `# syntax=` noted and ignored), comments, line continuations, heredocs,
//! flags (`--from=...`) and the JSON (exec) form. Arguments stay as
//! written: variables are expanded when the build reaches them, with the
//! arguments and environment of that point (see `words`).

/// One instruction, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instruction {
    /// Where it starts in the file (1-based).
    pub(crate) line: usize,
    /// Its logical line, continuations joined: what a build step shows.
    pub(crate) text: String,
    pub(crate) kind: Kind,
}

/// A command: exec form (`["a", "b"]`) or shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// A heredoc's body (`COPY <<EOF /dest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heredoc {
    pub(crate) name: String,
    pub(crate) body: String,
    /// Unquoted delimiters expand variables in the body.
    pub(crate) expand: bool,
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copy {
    /// Sources, then the destination last (raw words); a heredoc source is
    /// `<<NAME`.
    pub(crate) args: Vec<String>,
    pub(crate) from: Option<String>,
    pub(crate) chown: Option<String>,
    pub(crate) chmod: Option<String>,
    pub(crate) heredocs: Vec<Heredoc>,
    /// Written in the exec form (`COPY ["a b", "/x"]`): no word splitting.
    pub(crate) json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Health {
    pub(crate) test: Command,
    /// `--interval`, `--timeout`, `--start-period`, `--start-interval`,
    /// `--retries`, as written.
    pub(crate) flags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    From { image: String, alias: Option<String>, platform: Option<String> },
    /// `ARG name[=default]`, raw.
    Arg(Vec<String>),
    /// Raw `key=value` words (or the legacy `key value`, as one pair).
    Env(String),
    Label(String),
    Copy(Copy),
    Add(Copy),
    Run { command: Command, heredocs: Vec<Heredoc>, flags: Vec<(String, String)> },
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
    Workdir(String),
    User(String),
    Expose(String),
    Volume(Command),
    StopSignal(String),
    /// `HEALTHCHECK NONE` is None.
    Healthcheck(Option<Health>),
    Onbuild(String),
    Maintainer(String),
}

/// A parsed Containerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Containerfile {
    pub(crate) escape: char,
    pub(crate) instructions: Vec<Instruction>,
    /// What the parser left aside and the build log says (`# syntax=`).
    pub(crate) notes: Vec<String>,
}

/// Why a Containerfile does not parse: its line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Containerfile line {line}: {message}")]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError { line, message: message.into() }
}

/// Parses a Containerfile's text.
pub(crate) fn parse(text: &str) -> Result<Containerfile, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut notes = Vec::new();
    let mut at = 0;
    // Parser directives: `# key=value` lines at the very top only.
    while let Some((key, value)) = lines.get(at).and_then(|l| directive(l)) {
        match key.as_str() {
            "escape" => {
                escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    other => return Err(error(at + 1, format!("escape must be \\ or `, not {other:?}"))),
                }
            }
            "syntax" => notes.push(format!("# syntax={value} ignored: wharf builds with its own builder")),
            "check" => notes.push(format!("# check={value} ignored")),
            // Any other key is a comment, as in other builders.
            _ => {}
        }
        at += 1;
    }
    let mut instructions = Vec::new();
    while at < lines.len() {
        let trimmed = lines[at].trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            at += 1;
            continue;
        }
        let start = at;
        let mut logical = String::new();
        loop {
            let line = lines[at];
            at += 1;
            match continued(line, escape) {
                Some(head) => {
                    logical.push_str(head);
                    // Comment and empty lines inside a continuation are skipped.
                    while at < lines.len() && (lines[at].trim().is_empty() || lines[at].trim_start().starts_with('#')) {
                        at += 1;
                    }
                    if at >= lines.len() {
                        break;
                    }
                }
                None => {
                    logical.push_str(line);
                    break;
                }
            }
        }
        let logical = logical.trim().to_owned();
        let (name, rest) = match logical.split_once(char::is_whitespace) {
            Some((n, r)) => (n.to_ascii_uppercase(), r.trim_start().to_owned()),
            None => (logical.to_ascii_uppercase(), String::new()),
        };
        // Heredoc bodies follow the instruction's line.
        let mut heredocs = Vec::new();
        if matches!(name.as_str(), "COPY" | "ADD" | "RUN") {
            for (delimiter, expand, strip_tabs) in heredoc_markers(&rest) {
                let mut body = String::new();
                loop {
                    let Some(line) = lines.get(at) else {
                        return Err(error(start + 1, format!("heredoc <<{delimiter} has no terminating {delimiter} line")));
                    };
                    at += 1;
                    let line = if strip_tabs { line.trim_start_matches('\t') } else { line };
                    if line == delimiter {
                        break;
                    }
                    body.push_str(line);
                    body.push('\n');
                }
                heredocs.push(Heredoc { name: delimiter, body, expand });
            }
        }
        let kind = instruction(start + 1, &name, &rest, heredocs)?;
        instructions.push(Instruction { line: start + 1, text: logical, kind });
    }
    Ok(Containerfile { escape, instructions, notes })
}

/// `# key=value` as a parser directive.
fn directive(line: &str) -> Option<(String, String)> {
    let body = line.trim().strip_prefix('#')?;
    let (key, value) = body.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.trim().to_owned()))
}

/// The line without its trailing escape, if it continues on the next.
fn continued(line: &str, escape: char) -> Option<&str> {
    line.trim_end().strip_suffix(escape)
}

/// The heredocs an instruction's arguments open: (delimiter, expands,
/// strips leading tabs), in order.
fn heredoc_markers(args: &str) -> Vec<(String, bool, bool)> {
    let mut found = Vec::new();
    for word in args.split_whitespace() {
        let Some(rest) = word.strip_prefix("<<") else { continue };
        let (rest, strip) = match rest.strip_prefix('-') {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let (name, quoted) = match (rest.chars().next(), rest.chars().last()) {
            (Some(q @ ('"' | '\'')), Some(e)) if rest.len() >= 2 && q == e => (&rest[1..rest.len() - 1], true),
            _ => (rest, false),
        };
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            found.push((name.to_owned(), !quoted, strip));
        }
    }
    found
}

/// Leading `--name=value` (or `--name`) flags, and what follows them.
fn flags(rest: &str) -> (Vec<(String, String)>, &str) {
    let mut flags = Vec::new();
    let mut rest = rest.trim_start();
    while let Some(flag) = rest.strip_prefix("--") {
        let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
        let (name, value) = match flag[..end].split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => (flag[..end].to_owned(), String::new()),
        };
        flags.push((name, value));
        rest = flag[end..].trim_start();
    }
    (flags, rest)
}

/// The exec form: a JSON array of strings.
fn json_array(rest: &str) -> Option<Vec<String>> {
    let t = rest.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

fn command(rest: &str) -> Command {
    json_array(rest).map_or_else(|| Command::Shell(rest.trim().to_owned()), Command::Exec)
}

/// Refuses flags an instruction does not take.
fn only(line: usize, name: &str, flags: &[(String, String)], allowed: &[&str]) -> Result<(), ParseError> {
    match flags.iter().find(|(f, _)| !allowed.contains(&f.as_str())) {
        Some((f, _)) => Err(error(line, format!("{name} does not take --{f}"))),
        None => Ok(()),
    }
}

fn instruction(line: usize, name: &str, rest: &str, heredocs: Vec<Heredoc>) -> Result<Kind, ParseError> {
    let (flags, args) = flags(rest);
    let needs = |what: &str| -> Result<(), ParseError> {
        if args.trim().is_empty() {
            Err(error(line, format!("{name} needs {what}")))
        } else {
            Ok(())
        }
    };
    let kind = match name {
        "FROM" => {
            only(line, name, &flags, &["platform"])?;
            let words: Vec<&str> = args.split_whitespace().collect();
            let platform = flags.iter().find(|(f, _)| f == "platform").map(|(_, v)| v.clone());
            match words.as_slice() {
                [image] => Kind::From { image: (*image).to_owned(), alias: None, platform },
                [image, as_, alias] if as_.eq_ignore_ascii_case("as") => {
                    Kind::From { image: (*image).to_owned(), alias: Some(alias.to_ascii_lowercase()), platform }
                }
                _ => return Err(error(line, "FROM takes an image and an optional AS name")),
            }
        }
        "COPY" | "ADD" => {
            let allowed: &[&str] = if name == "COPY" { &["from", "chown", "chmod", "link", "parents"] } else { &["chown", "chmod", "link", "checksum", "keep-git-dir"] };
            only(line, name, &flags, allowed)?;
            let get = |f: &str| flags.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone());
            let (args, json) = match json_array(args) {
                Some(a) => (a, true),
                None => (args.split_whitespace().map(str::to_owned).collect(), false),
            };
            if args.len() < 2 {
                return Err(error(line, format!("{name} needs at least one source and a destination")));
            }
            let copy = Copy { args, from: get("from"), chown: get("chown"), chmod: get("chmod"), heredocs, json };
            if name == "COPY" {
                Kind::Copy(copy)
            } else {
                Kind::Add(copy)
            }
        }
        "RUN" => {
            needs("a command")?;
            Kind::Run { command: command(args), heredocs, flags }
        }
        "ARG" => {
            only(line, name, &flags, &[])?;
            needs("a name")?;
            Kind::Arg(args.split_whitespace().map(str::to_owned).collect())
        }
        "ENV" | "LABEL" => {
            only(line, name, &flags, &[])?;
            needs("key=value pairs")?;
            if name == "ENV" {
                Kind::Env(args.to_owned())
            } else {
                Kind::Label(args.to_owned())
            }
        }
        "CMD" => {
            only(line, name, &flags, &[])?;
            Kind::Cmd(command(args))
        }
        "ENTRYPOINT" => {
            only(line, name, &flags, &[])?;
            Kind::Entrypoint(command(args))
        }
        "SHELL" => {
            only(line, name, &flags, &[])?;
            match json_array(args) {
                Some(shell) if !shell.is_empty() => Kind::Shell(shell),
                _ => return Err(error(line, "SHELL takes a JSON array, e.g. [\"/bin/sh\", \"-c\"]")),
            }
        }
        "WORKDIR" | "USER" | "EXPOSE" | "STOPSIGNAL" | "ONBUILD" | "MAINTAINER" => {
            only(line, name, &flags, &[])?;
            needs("an argument")?;
            let a = args.trim().to_owned();
            match name {
                "WORKDIR" => Kind::Workdir(a),
                "USER" => Kind::User(a),
                "EXPOSE" => Kind::Expose(a),
                "STOPSIGNAL" => Kind::StopSignal(a),
                "ONBUILD" => {
                    let first = a.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
                    if matches!(first.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                        return Err(error(line, format!("ONBUILD cannot trigger {first}")));
                    }
                    Kind::Onbuild(a)
                }
                _ => Kind::Maintainer(a),
            }
        }
        "VOLUME" => {
            only(line, name, &flags, &[])?;
            needs("a path")?;
            Kind::Volume(command(args))
        }
        "HEALTHCHECK" => {
            only(line, name, &flags, &["interval", "timeout", "start-period", "start-interval", "retries"])?;
            let mut parts = args.splitn(2, char::is_whitespace);
            let first = parts.next().unwrap_or_default().to_ascii_uppercase();
            let tail = parts.next().unwrap_or_default();
            match first.as_str() {
                "NONE" if flags.is_empty() && tail.trim().is_empty() => Kind::Healthcheck(None),
                "CMD" if !tail.trim().is_empty() => Kind::Healthcheck(Some(Health { test: command(tail), flags })),
                _ => return Err(error(line, "HEALTHCHECK takes NONE, or [flags] CMD command")),
            }
        }
        "" => return Err(error(line, "empty instruction")),
        other => return Err(error(line, format!("unknown instruction {other}"))),
    };
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        parse(text).unwrap().instructions.into_iter().map(|i| i.kind).collect()
    }

    #[test]
    fn instructions_comments_and_continuations() {
        let file = parse(
            "# a comment\n\
             FROM docker.io/library/alpine:3 AS build\n\
             \n\
             copy --chown=1:2 --chmod=0755 a \\\n\
             # inside a continuation\n\
             \x20   b /dst/\n\
             ENV A=1 B=\"two words\"\n\
             CMD [\"/bin/tool\", \"--serve\"]\n\
             ENTRYPOINT /bin/sh -c 'echo hi'\n",
        )
        .unwrap();
        let lines: Vec<usize> = file.instructions.iter().map(|i| i.line).collect();
        assert_eq!(lines, [2, 4, 7, 8, 9]);
        assert_eq!(file.instructions[1].text, "copy --chown=1:2 --chmod=0755 a     b /dst/");
        assert_eq!(
            file.instructions[0].kind,
            Kind::From { image: "docker.io/library/alpine:3".into(), alias: Some("build".into()), platform: None }
        );
        match &file.instructions[1].kind {
            Kind::Copy(c) => {
                assert_eq!(c.args, ["a", "b", "/dst/"]);
                assert_eq!((c.chown.as_deref(), c.chmod.as_deref(), c.from.as_deref()), (Some("1:2"), Some("0755"), None));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(file.instructions[2].kind, Kind::Env("A=1 B=\"two words\"".into()));
        assert_eq!(file.instructions[3].kind, Kind::Cmd(Command::Exec(vec!["/bin/tool".into(), "--serve".into()])));
        assert_eq!(file.instructions[4].kind, Kind::Entrypoint(Command::Shell("/bin/sh -c 'echo hi'".into())));
    }

    #[test]
    fn directives_only_at_the_top() {
        let file = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch\nCOPY a `\n  /b\n# escape=\\\n").unwrap();
        assert_eq!(file.escape, '`');
        assert_eq!(file.notes.len(), 1);
        assert!(file.notes[0].contains("docker/dockerfile:1"));
        assert!(matches!(&file.instructions[1].kind, Kind::Copy(c) if c.args == ["a", "/b"]));
        // After the first instruction a directive is a comment.
        assert_eq!(parse("FROM scratch\n# escape=`\n").unwrap().escape, '\\');
        assert!(parse("# escape=x\nFROM scratch\n").is_err());
    }

    #[test]
    fn heredocs_for_copy() {
        let file = parse("FROM scratch\nCOPY <<EOF <<-'RAW' /etc/\nhello $NAME\nEOF\n\tkept $NAME\n\tRAW\nCMD x\n").unwrap();
        match &file.instructions[1].kind {
            Kind::Copy(c) => {
                assert_eq!(c.args, ["<<EOF", "<<-'RAW'", "/etc/"]);
                assert_eq!(
                    c.heredocs,
                    [
                        Heredoc { name: "EOF".into(), body: "hello $NAME\n".into(), expand: true },
                        Heredoc { name: "RAW".into(), body: "kept $NAME\n".into(), expand: false },
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(file.instructions[2].line, 7);
        let e = parse("FROM scratch\nCOPY <<EOF /x\nnever ends\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("no terminating EOF"), "{e}");
    }

    #[test]
    fn bad_instructions_name_their_line() {
        let e = parse("FROM scratch\n\nFETCH http://x /y\n").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (3, "unknown instruction FETCH"));
        assert_eq!(parse("FROM a b\n").unwrap_err().line, 1);
        assert!(parse("FROM scratch\nCOPY onlyone\n").unwrap_err().message.contains("source and a destination"));
        assert!(parse("FROM scratch\nCOPY --from=x --frobnicate a b\n").unwrap_err().message.contains("--frobnicate"));
        assert!(parse("FROM scratch\nSHELL /bin/sh\n").is_err());
        assert!(parse("FROM scratch\nONBUILD FROM x\n").is_err());
        assert!(parse("FROM scratch\nHEALTHCHECK --interval=5s NONE\n").is_err());
    }

    #[test]
    fn the_other_instructions() {
        let k = kinds(
            "FROM --platform=linux/arm64 base\nARG V=1 W\nLABEL a=b\nRUN echo hi\nSHELL [\"/bin/bash\", \"-c\"]\n\
             WORKDIR /app\nUSER 1000:1000\nEXPOSE 80/tcp 443\nVOLUME [\"/data\"]\nSTOPSIGNAL SIGTERM\n\
             HEALTHCHECK --interval=5s CMD [\"/bin/check\"]\nHEALTHCHECK NONE\nONBUILD COPY . /src\nMAINTAINER someone\n",
        );
        assert_eq!(k[0], Kind::From { image: "base".into(), alias: None, platform: Some("linux/arm64".into()) });
        assert_eq!(k[1], Kind::Arg(vec!["V=1".into(), "W".into()]));
        assert!(matches!(&k[3], Kind::Run { command: Command::Shell(s), .. } if s == "echo hi"));
        assert_eq!(k[4], Kind::Shell(vec!["/bin/bash".into(), "-c".into()]));
        assert_eq!(k[7], Kind::Expose("80/tcp 443".into()));
        assert_eq!(k[8], Kind::Volume(Command::Exec(vec!["/data".into()])));
        assert_eq!(
            k[10],
            Kind::Healthcheck(Some(Health { test: Command::Exec(vec!["/bin/check".into()]), flags: vec![("interval".into(), "5s".into())] }))
        );
        assert_eq!(k[11], Kind::Healthcheck(None));
        assert_eq!(k[12], Kind::Onbuild("COPY . /src".into()));
        assert_eq!(k[13], Kind::Maintainer("someone".into()));
    }
}
