//! The JSON Schemas under docs/: generated from berth's types (a stale file fails here; run
//! with BERTH_WRITE_SCHEMAS=1 to regenerate), named by the shipped files' `#:schema` lines, and
//! passing every example spec and the shipped config while refusing what berth refuses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/specs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "examples/specs holds {files:?}");
    files
}

#[test]
fn committed_schemas_are_what_the_types_generate() {
    for of in ["spec", "config"] {
        let out = Command::new(common::berth_bin())
            .args(["schema", of])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "berth schema {of}: {}",
            common::stderr(&out)
        );
        let generated = String::from_utf8(out.stdout).unwrap();
        let file = repo().join(format!("docs/{of}.schema.json"));
        if std::env::var_os("BERTH_WRITE_SCHEMAS").is_some() {
            std::fs::write(&file, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale: regenerate it with BERTH_WRITE_SCHEMAS=1 cargo test --test schema",
            file.display()
        );
        let doc: serde_json::Value = serde_json::from_str(&committed).unwrap();
        assert_eq!(doc["$schema"], "http://json-schema.org/draft-07/schema#");
        assert!(
            doc["properties"].as_object().unwrap().len() >= 8,
            "{of}: {doc}"
        );
    }
}

#[test]
fn shipped_files_name_their_schema_on_the_first_line() {
    let mut files: Vec<(PathBuf, &str)> = examples()
        .into_iter()
        .map(|f| (f, "#:schema ../../docs/spec.schema.json"))
        .collect();
    files.push((
        repo().join("configs/berth.toml"),
        "#:schema ../docs/config.schema.json",
    ));
    for (file, want) in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().next(), Some(want), "{}", file.display());
        // The directive's path resolves from the file, as taplo resolves it.
        let target = file
            .parent()
            .unwrap()
            .join(want.trim_start_matches("#:schema "));
        assert!(
            target.is_file(),
            "{}: {} is missing",
            file.display(),
            target.display()
        );
    }
}

#[test]
fn every_example_spec_and_the_shipped_config_pass_their_schema() {
    let spec = common::schema::validator("spec");
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        let found = common::schema::violations(&spec, &text);
        assert!(
            found.is_empty(),
            "{}:\n{}",
            file.display(),
            found.join("\n")
        );
        // And berth itself accepts it, so the schema is checked against a good file.
        common::schema::check_spec(&file, &text);
    }
    let config = common::schema::validator("config");
    let text = std::fs::read_to_string(repo().join("configs/berth.toml")).unwrap();
    let found = common::schema::violations(&config, &text);
    assert!(
        found.is_empty(),
        "configs/berth.toml:\n{}",
        found.join("\n")
    );
    // Every key the shipped config only mentions in a comment passes too.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let uncommented = uncommented.replace("# [metrics]", "[metrics]");
    assert!(uncommented.contains("dns = [") && uncommented.contains("[metrics]\n"));
    let found = common::schema::violations(&config, &uncommented);
    assert!(found.is_empty(), "{uncommented}\n{}", found.join("\n"));
}

/// Refusals where berth refuses: an editor flags the same mistakes `berth validate` would.
#[test]
fn the_schemas_refuse_unknown_keys_wrong_types_and_bad_values() {
    let spec = common::schema::validator("spec");
    let good = "image = \"oci:/img:latest\"\n";
    assert!(common::schema::violations(&spec, good).is_empty());
    let bad = [
        ("imagee = \"x\"\n", "an unknown key"),
        ("command = [\"sh\"]\n", "neither image nor build"),
        (
            "image = \"x\"\nbuild = { context = \".\" }\n",
            "both image and build",
        ),
        ("image = \"x\"\ncommand = []\n", "an empty command"),
        (
            "image = \"x\"\ncommand = \"sh -c\"\n",
            "a string for an array",
        ),
        (
            "image = \"x\"\n[restart]\npolicy = \"sometimes\"\n",
            "an unknown policy",
        ),
        (
            "image = \"x\"\n[restart]\nbackoff = { initial = 5 }\n",
            "a number for a duration",
        ),
        (
            "image = \"x\"\n[resources]\nmemory = \"256 megs\"\n",
            "a malformed size",
        ),
        (
            "image = \"x\"\n[resources]\ncpu_weight = 0\n",
            "a weight below 1",
        ),
        (
            "image = \"x\"\n[resources]\nswap = \"1G\"\n",
            "an unknown resource",
        ),
        (
            "image = \"x\"\n[network]\nports = [\"80\"]\n",
            "a port without a host side",
        ),
        (
            "image = \"x\"\n[network]\nmode = \"nat\"\n",
            "an unknown mode",
        ),
        (
            "image = \"x\"\n[[mounts]]\nsource = \"rel\"\ntarget = \"/t\"\n",
            "a relative source",
        ),
        (
            "image = \"x\"\n[health]\ninterval = \"1s\"\n",
            "a health check without a probe",
        ),
        (
            "image = \"x\"\n[health]\ntcp = { port = 1 }\nexec = [\"true\"]\n",
            "two probes",
        ),
        (
            "image = \"x\"\n[health]\nhttp = { port = 70000 }\n",
            "a port above 65535",
        ),
        (
            "image = \"x\"\ndepends_on = { db = \"ready\" }\n",
            "an unknown condition",
        ),
        (
            "image = \"x\"\n[update]\norder = \"blue-green\"\n",
            "an unknown order",
        ),
        ("image = \"x\"\nstop_signal = 65\n", "a signal above 64"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let ctx = berth::spec::ValidationContext::default();
    for (text, what) in bad {
        assert!(
            !common::schema::violations(&spec, text).is_empty(),
            "the spec schema accepts {what}:\n{text}"
        );
        let file = dir.path().join("c.toml");
        assert!(
            berth::spec::parse_str(&file, text, &ctx).is_err(),
            "berth accepts {what}, which the schema refuses:\n{text}"
        );
    }
    let config = common::schema::validator("config");
    for (text, what) in [
        ("spec = \"/x\"\n", "an unknown key"),
        ("device_control = \"off\"\n", "an unknown device control"),
        ("[network]\nmtu = 100\n", "an MTU below 576"),
        (
            "[network]\nbridge = \"a-very-long-bridge-name\"\n",
            "a bridge name over 15",
        ),
        ("[init]\nshutdown = \"sleep\"\n", "an unknown shutdown"),
        ("[logs]\nmax_size = \"ten\"\n", "a malformed size"),
    ] {
        assert!(
            !common::schema::violations(&config, text).is_empty(),
            "the config schema accepts {what}:\n{text}"
        );
        assert!(
            berth::supervisor::config::Config::parse(Path::new("berth.toml"), text).is_err(),
            "berth accepts {what}, which the schema refuses:\n{text}"
        );
    }
}
