//! Variable expansion and word splitting of instruction arguments, as Docker's builder does
//! it: `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME:+alternative}`; single quotes keep
//! their text, double quotes expand inside, a backslash keeps the next character. Pure.

/// Expands `text` as one word (WORKDIR, USER, FROM...): quotes are removed, whitespace kept.
pub fn word(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    Ok(lex(text, vars, false)?.join(""))
}

/// Expands `text` and splits it at unquoted whitespace (ENV and LABEL pairs, EXPOSE).
pub fn words(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    lex(text, vars, true)
}

/// `KEY=VALUE` words (ENV, LABEL); `legacy` allows ENV's old `KEY VALUE` form.
pub fn pairs(
    text: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    legacy: bool,
) -> Result<Vec<(String, String)>, String> {
    let first = text.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let rest = text.trim_start()[first.len()..].trim();
        if rest.is_empty() {
            return Err(format!("{first} has no value (KEY=VALUE)"));
        }
        return Ok(vec![(first.to_string(), word(rest, vars)?)]);
    }
    let mut out = Vec::new();
    for w in words(text, vars)? {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => return Err(format!("{w:?} is not KEY=VALUE")),
        }
    }
    Ok(out)
}

fn lex(
    text: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    split: bool,
) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if split && c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                i += 1;
            }
            '\'' => {
                in_word = true;
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or("unterminated single quote")?;
                cur.extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated double quote".into()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) => {
                            cur.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') => i = dollar(&chars, i, vars, &mut cur)?,
                        Some(&c) => {
                            cur.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.get(i + 1) {
                    Some(&n) => cur.push(n),
                    None => cur.push('\\'),
                }
                i += 2;
            }
            '$' => {
                in_word = true;
                i = dollar(&chars, i, vars, &mut cur)?;
            }
            c => {
                in_word = true;
                cur.push(c);
                i += 1;
            }
        }
    }
    if in_word || !split {
        out.push(cur);
    }
    Ok(out)
}

/// Expands the `$` at `chars[i]` into `out`; returns the index after it.
fn dollar(
    chars: &[char],
    i: usize,
    vars: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<usize, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let close = chars[i + 2..]
                .iter()
                .position(|&c| c == '}')
                .ok_or("unterminated ${")?;
            let inner: String = chars[i + 2..i + 2 + close].iter().collect();
            let name_len = inner.chars().take_while(|&c| is_name(c)).count();
            let (name, op) = inner.split_at(name_len);
            if name.is_empty() {
                return Err(format!("bad substitution ${{{inner}}}"));
            }
            let value = vars(name);
            let expanded = match op {
                "" => value.unwrap_or_default(),
                _ if op.starts_with(":-") => match value.filter(|v| !v.is_empty()) {
                    Some(v) => v,
                    None => word(&op[2..], vars)?,
                },
                _ if op.starts_with(":+") => match value.filter(|v| !v.is_empty()) {
                    Some(_) => word(&op[2..], vars)?,
                    None => String::new(),
                },
                _ if op.starts_with('-') => match value {
                    Some(v) => v,
                    None => word(&op[1..], vars)?,
                },
                _ if op.starts_with('+') => match value {
                    Some(_) => word(&op[1..], vars)?,
                    None => String::new(),
                },
                _ => return Err(format!("unsupported substitution ${{{inner}}}")),
            };
            out.push_str(&expanded);
            Ok(i + 3 + close)
        }
        Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
            let len = chars[i + 1..].iter().take_while(|&&c| is_name(c)).count();
            let name: String = chars[i + 1..i + 1 + len].iter().collect();
            out.push_str(&vars(&name).unwrap_or_default());
            Ok(i + 1 + len)
        }
        _ => {
            out.push('$');
            Ok(i + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "APP" => Some("web".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("a b".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion() {
        let cases = [
            ("/srv/$APP", "/srv/web"),
            ("/srv/${APP}x", "/srv/webx"),
            ("${NONE:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${APP:+set}", "set"),
            ("${NONE:+set}", ""),
            ("'$APP'", "$APP"),
            ("\"$APP and \\$APP\"", "web and $APP"),
            ("\\$APP", "$APP"),
            ("cost $5", "cost $5"),
            ("a b", "a b"),
            ("$SP", "a b"),
        ];
        for (text, want) in cases {
            assert_eq!(word(text, &vars).unwrap(), want, "{text}");
        }
        assert!(word("${APP", &vars).is_err());
        assert!(word("'open", &vars).is_err());
        assert!(word("${A/b/c}", &vars).is_err());
    }

    #[test]
    fn splitting_and_pairs() {
        assert_eq!(
            words("80/tcp  $APP \"x y\" ''", &vars).unwrap(),
            ["80/tcp", "web", "x y", ""]
        );
        let p = |t: &str, legacy| pairs(t, &vars, legacy);
        assert_eq!(
            p("A=1 B=\"two words\" C=$APP", true).unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "web".into())
            ]
        );
        assert_eq!(
            p("A one two", true).unwrap(),
            [("A".into(), "one two".into())]
        );
        assert_eq!(p("A", true).unwrap_err(), "A has no value (KEY=VALUE)");
        assert_eq!(
            p("A=1 junk", false).unwrap_err(),
            "\"junk\" is not KEY=VALUE"
        );
    }
}
