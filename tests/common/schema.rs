//! The published JSON Schemas (docs/*.schema.json) held to the parser: every spec file a test
//! writes that berth accepts must pass the schema too, or editors would flag a good file.

use std::path::Path;
use std::sync::OnceLock;

/// The schema's validator for `docs/NAME.schema.json`.
pub fn validator(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft7::new(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// TOML text as the JSON document a schema checks (as taplo does).
pub fn as_json(text: &str) -> Result<serde_json::Value, toml::de::Error> {
    toml::from_str(text)
}

/// The schema's complaints about `text`, one line each; empty when it passes.
pub fn violations(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    match as_json(text) {
        Ok(doc) => v
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect(),
        Err(e) => vec![format!("not TOML: {e}")],
    }
}

/// Panics when berth's parser accepts `text` as the spec file `path` but the spec schema does
/// not. Specs the parser refuses (tests write those on purpose) are not the schema's business.
pub fn check_spec(path: &Path, text: &str) {
    static SPEC: OnceLock<jsonschema::Validator> = OnceLock::new();
    let ctx = berth::spec::ValidationContext::default();
    if berth::spec::parse_str(path, text, &ctx).is_err() {
        return;
    }
    let found = violations(SPEC.get_or_init(|| validator("spec")), text);
    assert!(
        found.is_empty(),
        "{} is a valid spec that docs/spec.schema.json refuses:\n{}\n--- the file:\n{text}",
        path.display(),
        found.join("\n")
    );
}
