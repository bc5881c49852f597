//! The Containerfile (Dockerfile) grammar: lines joined at the escape character, comments and
//! the `escape` parser directive, one [`Instruction`] per logical line with its flags and its
//! shell or exec (JSON) form. Pure: variables are expanded later, per stage, by
//! [`super::words`], because their values depend on build arguments and earlier `ENV`s.

use std::collections::BTreeMap;
use std::time::Duration;

/// A command as written: `RUN echo hi` (run by the stage's SHELL) or `RUN ["echo", "hi"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandForm {
    Shell(String),
    Exec(Vec<String>),
}

/// `HEALTHCHECK CMD ...` with its flags (`HEALTHCHECK NONE` is [`Kind::Healthcheck`]`(None)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub command: CommandForm,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u32>,
}

/// `COPY` and `ADD`: sources and destination as written (expanded when the step runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub sources: Vec<String>,
    pub dest: String,
    /// `--from=STAGE|IMAGE` (COPY only).
    pub from: Option<String>,
    /// `--chown=USER[:GROUP]`.
    pub chown: Option<String>,
    /// `--chmod=OCTAL`.
    pub chmod: Option<u32>,
}

/// What one instruction does. Arguments that take variables are kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    From {
        image: String,
        alias: Option<String>,
    },
    Run(CommandForm),
    Copy(Transfer),
    Add(Transfer),
    /// The rest of the line: `K=V ...` pairs, or the legacy `K V`.
    Env(String),
    Label(String),
    Arg {
        name: String,
        default: Option<String>,
    },
    Workdir(String),
    User(String),
    Cmd(CommandForm),
    Entrypoint(CommandForm),
    Expose(String),
    Volume(Vec<String>),
    StopSignal(String),
    Shell(Vec<String>),
    Healthcheck(Option<Health>),
}

/// One logical line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The line it starts on (1-based).
    pub line: usize,
    /// The keyword, upper case.
    pub keyword: &'static str,
    /// The arguments as written after the keyword (continuations joined), for history and
    /// messages.
    pub args: String,
    pub kind: Kind,
}

/// A problem at a line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "LABEL",
    "ARG",
    "WORKDIR",
    "USER",
    "CMD",
    "ENTRYPOINT",
    "EXPOSE",
    "VOLUME",
    "STOPSIGNAL",
    "SHELL",
    "HEALTHCHECK",
    "MAINTAINER",
    "ONBUILD",
];

/// Splits `text` into logical lines: (first line number, joined text). Comment lines are
/// dropped, also inside a continuation, as Docker does; an empty continuation line ends
/// nothing.
fn logical_lines(text: &str, escape: char) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if current.is_none() && trimmed.trim().is_empty() {
            continue;
        }
        let body = raw.trim_end();
        let (part, continues) = match body.strip_suffix(escape) {
            Some(p) => (p, true),
            None => (body, false),
        };
        let entry = current.get_or_insert_with(|| (line_no, String::new()));
        entry.1.push_str(part);
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current.take());
    out
}

/// The `# escape=X` directive at the top of the file, if any (`\` otherwise).
fn escape_directive(text: &str) -> Result<char, ParseError> {
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = rest.split_once('=') else {
            break;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "escape" => {
                return match value.trim() {
                    "\\" => Ok('\\'),
                    "`" => Ok('`'),
                    v => Err(ParseError {
                        line: i + 1,
                        message: format!("escape directive: {v:?} is not \\ or `"),
                    }),
                }
            }
            "syntax" | "check" => continue,
            _ => break,
        }
    }
    Ok('\\')
}

/// Parses a whole Containerfile. Every problem is reported, each at its line.
pub fn parse(text: &str) -> Result<Vec<Instruction>, Vec<ParseError>> {
    let escape = escape_directive(text).map_err(|e| vec![e])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (line, joined) in logical_lines(text, escape) {
        match instruction(line, &joined) {
            Ok(Some(i)) => out.push(i),
            Ok(None) => {}
            Err(message) => errors.push(ParseError { line, message }),
        }
    }
    if errors.is_empty() {
        match out.iter().find(|i| !matches!(i.kind, Kind::Arg { .. })) {
            Some(first) if !matches!(first.kind, Kind::From { .. }) => errors.push(ParseError {
                line: first.line,
                message: format!("{}: the first instruction must be FROM", first.keyword),
            }),
            None => errors.push(ParseError {
                line: 1,
                message: "no FROM instruction".into(),
            }),
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `--name=value` flags at the start of `rest`, and what follows them.
fn flags<'a>(
    rest: &'a str,
    allowed: &[&str],
    keyword: &str,
) -> Result<(BTreeMap<String, String>, &'a str), String> {
    let mut found = BTreeMap::new();
    let mut rest = rest.trim_start();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let flag = &after[..end];
        let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
        if !allowed.contains(&name) {
            return Err(if allowed.is_empty() {
                format!("{keyword} takes no flags (--{name})")
            } else {
                format!(
                    "{keyword}: unknown flag --{name} (known: {})",
                    allowed
                        .iter()
                        .map(|a| format!("--{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        if value.is_empty() {
            return Err(format!("{keyword}: --{name} needs a value (--{name}=...)"));
        }
        found.insert(name.to_string(), value.to_string());
        rest = after[end..].trim_start();
    }
    Ok((found, rest))
}

/// The JSON array form (`["a", "b"]`), when `rest` is one.
fn json_array(rest: &str) -> Option<Result<Vec<String>, String>> {
    let t = rest.trim();
    if !t.starts_with('[') {
        return None;
    }
    match serde_json::from_str::<Vec<String>>(t) {
        Ok(v) => Some(Ok(v)),
        // Docker runs text that only looks like JSON as a shell command.
        Err(_) if !t.ends_with(']') => None,
        Err(e) => Some(Err(format!("not a JSON array of strings: {e}"))),
    }
}

fn command_form(rest: &str, keyword: &str) -> Result<CommandForm, String> {
    match json_array(rest) {
        Some(Ok(v)) if v.is_empty() && keyword == "RUN" => Err("RUN: an empty command".into()),
        Some(Ok(v)) => Ok(CommandForm::Exec(v)),
        Some(Err(e)) => Err(format!("{keyword}: {e}")),
        None if rest.trim().is_empty() => Err(format!("{keyword} needs a command")),
        None => Ok(CommandForm::Shell(rest.trim().to_string())),
    }
}

fn need(rest: &str, keyword: &str, what: &str) -> Result<(), String> {
    if rest.trim().is_empty() {
        Err(format!("{keyword} needs {what}"))
    } else {
        Ok(())
    }
}

fn transfer(rest: &str, keyword: &'static str) -> Result<Transfer, String> {
    let allowed: &[&str] = if keyword == "COPY" {
        &["from", "chown", "chmod", "link"]
    } else {
        &["chown", "chmod", "link"]
    };
    let (f, rest) = flags(rest, allowed, keyword)?;
    if rest.trim_start().starts_with("<<") {
        return Err(format!("{keyword}: here-documents are not supported"));
    }
    let mut parts = match json_array(rest) {
        Some(r) => r.map_err(|e| format!("{keyword}: {e}"))?,
        None => rest.split_whitespace().map(str::to_string).collect(),
    };
    if parts.len() < 2 {
        return Err(format!(
            "{keyword} needs at least one source and a destination"
        ));
    }
    let dest = parts.pop().expect("two or more parts");
    for s in &parts {
        if s.contains("://") {
            return Err(format!(
                "{keyword}: {s:?}: remote sources are not supported; fetch the file into the build context"
            ));
        }
    }
    let chmod = match f.get("chmod") {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("{keyword}: --chmod={m}: not an octal mode"))?,
        ),
        None => None,
    };
    Ok(Transfer {
        sources: parts,
        dest,
        from: f.get("from").cloned(),
        chown: f.get("chown").cloned(),
        chmod,
    })
}

fn go_duration(flag: &str, v: &str) -> Result<Duration, String> {
    crate::spec::units::parse_duration(v).map_err(|e| format!("HEALTHCHECK --{flag}: {e}"))
}

fn healthcheck(rest: &str) -> Result<Option<Health>, String> {
    let (f, rest) = flags(
        rest,
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        "HEALTHCHECK",
    )?;
    let rest = rest.trim();
    let (word, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    match word.to_ascii_uppercase().as_str() {
        "NONE" if tail.trim().is_empty() && f.is_empty() => Ok(None),
        "NONE" => Err("HEALTHCHECK NONE takes no arguments".into()),
        "CMD" => {
            let retries =
                match f.get("retries") {
                    Some(r) => Some(r.parse::<u32>().ok().filter(|r| *r > 0).ok_or_else(|| {
                        format!("HEALTHCHECK --retries={r}: not a positive count")
                    })?),
                    None => None,
                };
            let dur = |k: &str| f.get(k).map(|v| go_duration(k, v)).transpose();
            Ok(Some(Health {
                command: command_form(tail, "HEALTHCHECK CMD")?,
                interval: dur("interval")?,
                timeout: dur("timeout")?,
                start_period: dur("start-period")?,
                retries,
            }))
        }
        _ => Err("HEALTHCHECK takes CMD ... or NONE".into()),
    }
}

/// One logical line: `None` for a line without an instruction.
fn instruction(line: usize, text: &str) -> Result<Option<Instruction>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let upper = word.to_ascii_uppercase();
    let Some(&keyword) = KEYWORDS.iter().find(|k| **k == upper) else {
        return Err(format!("unknown instruction {word}"));
    };
    let rest = rest.trim();
    let kind = match keyword {
        "FROM" => {
            let (_, rest) = flags(rest, &["platform"], keyword)?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                [image] => Kind::From {
                    image: image.to_string(),
                    alias: None,
                },
                [image, as_, alias] if as_.eq_ignore_ascii_case("as") => Kind::From {
                    image: image.to_string(),
                    alias: Some(alias.to_ascii_lowercase()),
                },
                _ => return Err("FROM takes IMAGE [AS NAME]".into()),
            }
        }
        "RUN" => {
            let (_, rest) = flags(rest, &["network"], keyword)?;
            if rest.trim_start().starts_with("<<") {
                return Err("RUN: here-documents are not supported".into());
            }
            Kind::Run(command_form(rest, keyword)?)
        }
        "COPY" => Kind::Copy(transfer(rest, keyword)?),
        "ADD" => Kind::Add(transfer(rest, keyword)?),
        "ENV" => {
            need(rest, keyword, "KEY=VALUE")?;
            Kind::Env(rest.to_string())
        }
        "LABEL" => {
            need(rest, keyword, "KEY=VALUE")?;
            Kind::Label(rest.to_string())
        }
        "MAINTAINER" => {
            need(rest, keyword, "a name")?;
            Kind::Label(format!(
                "maintainer={}",
                serde_json::to_string(rest).unwrap_or_default()
            ))
        }
        "ARG" => {
            need(rest, keyword, "a name")?;
            // The default may be quoted (and hold spaces); it is expanded when the step runs.
            let (name, default) = match rest.split_once('=') {
                Some((n, d)) => (n, Some(d.to_string())),
                None if rest.split_whitespace().count() > 1 => {
                    return Err("ARG takes one NAME[=DEFAULT]".into())
                }
                None => (rest, None),
            };
            if !valid_name(name) {
                return Err(format!("ARG: {name:?} is not a variable name"));
            }
            Kind::Arg {
                name: name.to_string(),
                default,
            }
        }
        "WORKDIR" => {
            need(rest, keyword, "a path")?;
            Kind::Workdir(rest.to_string())
        }
        "USER" => {
            need(rest, keyword, "a user")?;
            Kind::User(rest.to_string())
        }
        "CMD" => Kind::Cmd(command_form(rest, keyword)?),
        "ENTRYPOINT" => Kind::Entrypoint(command_form(rest, keyword)?),
        "EXPOSE" => {
            need(rest, keyword, "a port")?;
            Kind::Expose(rest.to_string())
        }
        "VOLUME" => {
            need(rest, keyword, "a path")?;
            match json_array(rest) {
                Some(r) => Kind::Volume(r.map_err(|e| format!("VOLUME: {e}"))?),
                None => Kind::Volume(rest.split_whitespace().map(str::to_string).collect()),
            }
        }
        "STOPSIGNAL" => {
            need(rest, keyword, "a signal")?;
            Kind::StopSignal(rest.to_string())
        }
        "SHELL" => match json_array(rest) {
            Some(Ok(v)) if !v.is_empty() => Kind::Shell(v),
            _ => return Err("SHELL takes a JSON array, e.g. [\"/bin/sh\", \"-c\"]".into()),
        },
        "HEALTHCHECK" => Kind::Healthcheck(healthcheck(rest)?),
        "ONBUILD" => return Err("ONBUILD is not supported".into()),
        _ => unreachable!("every keyword is matched"),
    };
    Ok(Some(Instruction {
        line,
        keyword,
        args: rest.to_string(),
        kind,
    }))
}

/// The HEALTHCHECK the image of the last stage ends up with, where the file decides it: the
/// stage's last HEALTHCHECK, else that of the earlier stage it is FROM. `None` when it comes
/// from a base image (or there is none); `Some(None)` for `HEALTHCHECK NONE`.
pub fn final_healthcheck(all: &[Instruction]) -> Option<Option<Health>> {
    let starts: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i.kind, Kind::From { .. }))
        .map(|(n, _)| n)
        .collect();
    let mut stage = starts.len().checked_sub(1)?;
    loop {
        let begin = starts[stage];
        let end = starts.get(stage + 1).copied().unwrap_or(all.len());
        if let Some(h) = all[begin..end].iter().rev().find_map(|i| match &i.kind {
            Kind::Healthcheck(h) => Some(h.clone()),
            _ => None,
        }) {
            return Some(h);
        }
        let Kind::From { image, .. } = &all[begin].kind else {
            return None;
        };
        let image = image.to_ascii_lowercase();
        stage = (0..stage).rev().find(
            |&s| matches!(&all[starts[s]].kind, Kind::From { alias: Some(a), .. } if *a == image),
        )?;
    }
}

/// A variable name as the shell and Docker accept it.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Kind {
        let all = parse(&format!("FROM scratch\n{text}\n")).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        all[1].kind.clone()
    }

    fn err(text: &str) -> String {
        let e = parse(text).unwrap_err();
        format!("{}: {}", e[0].line, e[0].message)
    }

    #[test]
    fn instructions() {
        let shell = |s: &str| CommandForm::Shell(s.into());
        let exec = |v: &[&str]| CommandForm::Exec(v.iter().map(|s| s.to_string()).collect());
        let cases: Vec<(&str, Kind)> = vec![
            ("RUN echo hi", Kind::Run(shell("echo hi"))),
            ("run [\"echo\", \"hi\"]", Kind::Run(exec(&["echo", "hi"]))),
            ("RUN [not json", Kind::Run(shell("[not json"))),
            ("RUN --network=none true", Kind::Run(shell("true"))),
            (
                "CMD [\"/httpd\", \"-f\"]",
                Kind::Cmd(exec(&["/httpd", "-f"])),
            ),
            ("CMD []", Kind::Cmd(exec(&[]))),
            (
                "ENTRYPOINT /bin/sh -c",
                Kind::Entrypoint(shell("/bin/sh -c")),
            ),
            (
                "ENV A=1 B=\"two words\"",
                Kind::Env("A=1 B=\"two words\"".into()),
            ),
            (
                "ARG V",
                Kind::Arg {
                    name: "V".into(),
                    default: None,
                },
            ),
            (
                "ARG V=1.0",
                Kind::Arg {
                    name: "V".into(),
                    default: Some("1.0".into()),
                },
            ),
            (
                "ARG G=\"two words\"",
                Kind::Arg {
                    name: "G".into(),
                    default: Some("\"two words\"".into()),
                },
            ),
            ("WORKDIR /srv/$APP", Kind::Workdir("/srv/$APP".into())),
            (
                "VOLUME [\"/data\", \"/logs\"]",
                Kind::Volume(vec!["/data".into(), "/logs".into()]),
            ),
            (
                "VOLUME /data /logs",
                Kind::Volume(vec!["/data".into(), "/logs".into()]),
            ),
            (
                "SHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]",
                Kind::Shell(vec![
                    "/bin/ash".into(),
                    "-eo".into(),
                    "pipefail".into(),
                    "-c".into(),
                ]),
            ),
            ("HEALTHCHECK NONE", Kind::Healthcheck(None)),
            (
                "HEALTHCHECK --interval=5s --retries=2 CMD nc -z 127.0.0.1 80",
                Kind::Healthcheck(Some(Health {
                    command: shell("nc -z 127.0.0.1 80"),
                    interval: Some(Duration::from_secs(5)),
                    timeout: None,
                    start_period: None,
                    retries: Some(2),
                })),
            ),
            (
                "COPY --from=build --chown=app:app /out/bin ./",
                Kind::Copy(Transfer {
                    sources: vec!["/out/bin".into()],
                    dest: "./".into(),
                    from: Some("build".into()),
                    chown: Some("app:app".into()),
                    chmod: None,
                }),
            ),
            (
                "ADD --chmod=755 a.tar b c /dst/",
                Kind::Add(Transfer {
                    sources: vec!["a.tar".into(), "b".into(), "c".into()],
                    dest: "/dst/".into(),
                    from: None,
                    chown: None,
                    chmod: Some(0o755),
                }),
            ),
            (
                "COPY [\"a b\", \"/c\"]",
                Kind::Copy(Transfer {
                    sources: vec!["a b".into()],
                    dest: "/c".into(),
                    from: None,
                    chown: None,
                    chmod: None,
                }),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(one(text), want, "{text}");
        }
    }

    #[test]
    fn lines_continuations_and_comments() {
        let text = "# escape=\\\n\nFROM busybox AS Base\n# a comment\nRUN echo a \\\n  # inside\n  && echo b\n\nCMD x\n";
        let all = parse(text).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0].kind,
            Kind::From {
                image: "busybox".into(),
                alias: Some("base".into())
            }
        );
        assert_eq!(
            (all[1].line, all[1].args.as_str()),
            (5, "echo a   && echo b")
        );
        assert_eq!(all[2].line, 9);
        let backtick = parse("# escape=`\nFROM x\nRUN a `\n b\n").unwrap();
        assert_eq!(
            backtick[1].kind,
            Kind::Run(CommandForm::Shell("a  b".into()))
        );
    }

    #[test]
    fn healthcheck_of_the_last_stage() {
        let h = |text: &str| final_healthcheck(&parse(text).unwrap());
        let cmd = |c: &str| Health {
            command: CommandForm::Shell(c.into()),
            interval: None,
            timeout: None,
            start_period: None,
            retries: None,
        };
        let cases = [
            (
                "FROM a\nHEALTHCHECK CMD one\nHEALTHCHECK CMD two\n",
                Some(Some(cmd("two"))),
            ),
            ("FROM a\nHEALTHCHECK NONE\n", Some(None)),
            ("FROM a\n", None),
            (
                "FROM a AS base\nHEALTHCHECK CMD b\nFROM base\nRUN x\n",
                Some(Some(cmd("b"))),
            ),
            (
                "FROM a AS build\nHEALTHCHECK CMD b\nFROM c\nCOPY --from=build / /\n",
                None,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(h(text), want, "{text}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("FROM a\nBOGUS x\n", "2: unknown instruction BOGUS"),
            ("RUN x\n", "1: RUN: the first instruction must be FROM"),
            ("ARG A\n", "1: no FROM instruction"),
            ("FROM a\nCOPY onlyone\n", "2: COPY needs at least one source and a destination"),
            ("FROM a\nCOPY --form=x a b\n", "2: COPY: unknown flag --form (known: --from, --chown, --chmod, --link)"),
            ("FROM a\nADD http://x/y /y\n", "2: ADD: \"http://x/y\": remote sources are not supported; fetch the file into the build context"),
            ("FROM a\nCMD [\"a\", 1]\n", "2: CMD: not a JSON array of strings: invalid type: integer `1`, expected a string at line 1 column 7"),
            ("FROM a\nHEALTHCHECK --retries=0 CMD x\n", "2: HEALTHCHECK --retries=0: not a positive count"),
            ("FROM a\nHEALTHCHECK --interval=soon CMD x\n", "2: HEALTHCHECK --interval: invalid duration \"soon\": expected number at 0 (e.g. \"250ms\", \"10s\", \"1m\")"),
            ("FROM a b c d\n", "1: FROM takes IMAGE [AS NAME]"),
            ("FROM a\nRUN <<EOF\nx\nEOF\n", "2: RUN: here-documents are not supported"),
            ("FROM a\nSHELL sh -c\n", "2: SHELL takes a JSON array, e.g. [\"/bin/sh\", \"-c\"]"),
            ("FROM a\nARG 1x\n", "2: ARG: \"1x\" is not a variable name"),
            ("# escape=x\nFROM a\n", "1: escape directive: \"x\" is not \\ or `"),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "{text:?}");
        }
        // Every bad line is reported.
        assert_eq!(parse("FROM a\nX\nY\n").unwrap_err().len(), 2);
    }
}
