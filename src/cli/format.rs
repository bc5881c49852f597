//! `--format` templates over JSON answers, in the docker style: `{{.name}}`,
//! `{{.status.state}}`, `{{json .spec.network}}`, with `\t` and `\n` as tab and newline. Keys
//! match case-insensitively and without `_`, so docker's `{{.Name}}` or `{{.LastExit}}` work
//! on berth's `name` and `last_exit`. Pure.

use serde_json::Value;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// A path of keys (empty: the value itself), printed as text or as JSON.
    Field {
        path: Vec<String>,
        json: bool,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
            let inner = rest[start + 2..start + end].trim();
            let (json, expr) = match inner.strip_prefix("json ") {
                Some(e) => (true, e.trim()),
                None => (false, inner),
            };
            let Some(path) = expr.strip_prefix('.') else {
                return Err(format!(
                    "{{{{{inner}}}}}: expected a field such as {{{{.name}}}} or {{{{json .spec}}}}"
                ));
            };
            let path = path
                .split('.')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            parts.push(Part::Field { path, json });
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts))
    }

    /// The template filled in from `v`; a missing field prints as `<no value>`, as docker's.
    pub fn render(&self, v: &Value) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, json } => match lookup(v, path) {
                    Some(x) if *json => out.push_str(&x.to_string()),
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => out.push_str("<no value>"),
                    Some(x) => out.push_str(&x.to_string()),
                },
            }
        }
        out
    }
}

fn simple(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        let obj = cur.as_object()?;
        cur = match obj.get(key) {
            Some(x) => x,
            None => {
                let want = simple(key);
                obj.iter().find(|(k, _)| simple(k) == want)?.1
            }
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates() {
        let v = json!({"name": "web", "last_exit": null, "restarts": 2,
            "status": {"state": "running"}, "ports": ["8080:80/tcp"]});
        let cases = [
            ("{{.name}}", "web"),
            ("{{.Name}}\\t{{.Restarts}}", "web\t2"),
            ("{{.status.state}}", "running"),
            ("{{.Status.State}}!", "running!"),
            ("{{json .ports}}", "[\"8080:80/tcp\"]"),
            ("{{.LastExit}}", "<no value>"),
            ("{{.nope.deeper}}", "<no value>"),
            ("plain", "plain"),
            ("{{json .}}", &v.to_string()),
        ];
        for (t, want) in cases {
            assert_eq!(Template::parse(t).unwrap().render(&v), want, "{t}");
        }
        assert!(Template::parse("{{.name").is_err());
        assert!(Template::parse("{{name}}").is_err());
    }
}
