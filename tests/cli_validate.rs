//! `berth validate` (no root needed).

mod common;

use common::*;

#[test]
fn valid_and_invalid_files_and_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("web.toml");
    std::fs::write(
        &good,
        "image = \"oci:/img:v1\"\ncommand = [\"true\"]\n[resources]\nmemory = \"64M\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(berth_bin())
        .args(["validate"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let bad = dir.path().join("db.toml");
    std::fs::write(
        &bad,
        "image = \"oci:/img:v1\"\n[resources]\ncpus = 0\nmemroy = \"1G\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".hidden.toml"), "garbage").unwrap();
    std::fs::write(dir.path().join("web.toml~"), "garbage").unwrap();
    let out = std::process::Command::new(berth_bin())
        .args(["validate"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{}:3:", bad.display()))),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{}:4:1:", bad.display())) && l.contains("memroy")),
        "{err}"
    );

    let out = std::process::Command::new(berth_bin())
        .args(["validate", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = report.as_array().unwrap();
    assert_eq!(files.len(), 2);
    let db = files
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with("db.toml"))
        .unwrap();
    assert_eq!(db["ok"], false);
    assert_eq!(db["errors"].as_array().unwrap().len(), 2);
    assert_eq!(db["errors"][0]["line"], 3);
}

/// What one container may hold and no other (a static IP, a host port): two files claiming it
/// are an error in both, at the key; a third claiming something else is fine.
#[test]
fn a_claim_two_files_share_is_an_error_in_both() {
    let cases = [
        (
            "[network]\nip = \"10.89.0.7\"\n",
            "[network]\nip = \"10.89.0.8\"\n",
            "3:6: network.ip: 10.89.0.7 is used by more than one spec",
        ),
        (
            "[network]\nports = [\"8080:80\"]\n",
            "[network]\nports = [\"8080:80/udp\"]\n",
            "3:9: network.ports: host port 8080/tcp is published by more than one spec",
        ),
    ];
    for (shared, other, at) in cases {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [("a", shared), ("b", shared), ("c", other)] {
            std::fs::write(
                dir.path().join(format!("{name}.toml")),
                format!("image = \"oci:/img:v1\"\n{body}"),
            )
            .unwrap();
        }
        let out = std::process::Command::new(berth_bin())
            .arg("validate")
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        for name in ["a", "b"] {
            let file = dir.path().join(format!("{name}.toml"));
            assert!(
                err.lines()
                    .any(|l| l.starts_with(&format!("{}:{at}", file.display()))),
                "{err}"
            );
        }
        assert!(!err.contains("c.toml"), "{err}");
    }
}

#[test]
fn addresses_are_checked_against_the_configs_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("db.toml");
    std::fs::write(
        &spec,
        "image = \"oci:/img:v1\"\n[network]\nip = \"10.50.0.7\"\n",
    )
    .unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "[network]\nsubnet = \"10.50.0.0/24\"\n").unwrap();
    let validate = |config: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(berth_bin());
        c.arg("validate");
        if let Some(f) = config {
            c.arg("--config").arg(f);
        }
        c.arg(&spec).output().unwrap()
    };
    let out = validate(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "db.toml:3:6: network.ip: 10.50.0.7 is outside the bridge subnet 10.89.0.0/24"
        ),
        "{}",
        stderr(&out)
    );
    let out = validate(Some(&config));
    assert!(out.status.success(), "{}", stderr(&out));
    // A broken config is berth's error, not the spec's.
    std::fs::write(&config, "[network]\nsubnet = \"10.50.0.0\"\n").unwrap();
    let out = validate(Some(&config));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("berth.toml:2:"), "{}", stderr(&out));
}

#[test]
fn a_dependency_cycle_and_a_missing_dependency_name_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, deps: &str| {
        std::fs::write(
            dir.path().join(format!("{name}.toml")),
            format!("image = \"oci:/img:v1\"\ndepends_on = {deps}\n"),
        )
        .unwrap();
    };
    write("app", "{ db = \"started\" }");
    write("db", "[\"app\"]");
    write("web", "[\"nothere\"]");
    let out = std::process::Command::new(berth_bin())
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let app = err.lines().find(|l| l.contains("app.toml:2:")).expect(&err);
    assert!(app.contains("cycle") && app.contains("db.toml"), "{app}");
    assert!(
        err.lines()
            .any(|l| l.contains("db.toml:2:") && l.contains("cycle")),
        "{err}"
    );
    let web = err.lines().find(|l| l.contains("web.toml:2:")).expect(&err);
    assert!(web.contains("nothere.toml"), "{web}");
}
