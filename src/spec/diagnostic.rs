//! Spec errors as users see them: a file, a 1-based line and column, the key involved and a
//! message. `Display` gives `file:line:col: message`; `Serialize` feeds `--json`.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One problem in one spec file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// The dotted key involved, e.g. `resources.memory` or `mounts[0].target`.
    pub key: Option<String>,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about the file as a whole (reported at 1:1).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
            key: None,
            message: message.into(),
        }
    }

    /// A diagnostic at byte `offset` of `text`.
    pub fn at(
        file: &Path,
        text: &str,
        offset: usize,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, col) = line_col(text, offset);
        Diagnostic {
            file: file.to_path_buf(),
            line,
            col,
            key,
            message: message.into(),
        }
    }
}

/// `s` with every control character written as its escape (`\u{1b}`), so that a hostile key
/// or file name cannot drive the terminal or the log that shows the diagnostic.
pub fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!(
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        );
        f.write_str(&escape_controls(&text))
    }
}

/// Every problem found in one spec file, in file order. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SpecErrors {
    pub diagnostics: Vec<Diagnostic>,
}

impl SpecErrors {
    pub fn new(diagnostics: Vec<Diagnostic>) -> Self {
        SpecErrors { diagnostics }
    }
}

impl From<Diagnostic> for SpecErrors {
    fn from(d: Diagnostic) -> Self {
        SpecErrors {
            diagnostics: vec![d],
        }
    }
}

impl Deref for SpecErrors {
    type Target = [Diagnostic];
    fn deref(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
}

impl IntoIterator for SpecErrors {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.diagnostics.into_iter()
    }
}

impl<'a> IntoIterator for &'a SpecErrors {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.diagnostics.iter()
    }
}

/// One diagnostic per line.
impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(text, 10), (2, 4));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn display_and_json() {
        let d = Diagnostic::at(
            Path::new("specs/web.toml"),
            "x\n  memory = 1",
            4,
            Some("resources.memory".into()),
            "bad",
        );
        assert_eq!(d.to_string(), "specs/web.toml:2:3: bad");
        let json = serde_json::to_value(SpecErrors::from(d)).unwrap();
        assert_eq!(json[0]["line"], 2);
        assert_eq!(json[0]["key"], "resources.memory");
    }
}
