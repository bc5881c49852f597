//! `berth completions SHELL`, `berth man --out DIR` and `berth schema spec|config`: shell
//! completions and man pages generated from the command line's own definition, and JSON Schemas
//! generated from the formats' types, so none of them drifts from what it describes.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use super::{Cli, SchemaOf, EXIT_BERTH_ERROR};

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "berth", &mut std::io::stdout());
    ExitCode::SUCCESS
}

pub fn schema(of: SchemaOf) -> ExitCode {
    let doc = match of {
        SchemaOf::Spec => crate::spec::schema::spec_schema(),
        SchemaOf::Config => crate::supervisor::config::config_schema(),
    };
    println!("{}", schema_text(&doc));
    ExitCode::SUCCESS
}

/// A schema as the files under docs/ hold it: pretty JSON.
pub fn schema_text(doc: &serde_json::Value) -> String {
    serde_json::to_string_pretty(doc).expect("a JSON value serializes")
}

/// Writes `berth.8` and `berth-SUB.8` (and `berth-SUB-SUBSUB.8`) for every subcommand into
/// `dir`; prints the files' names.
pub fn man(dir: &Path) -> ExitCode {
    match write_pages(dir) {
        Ok(files) => {
            for f in files {
                println!("{f}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: man: {e}");
            ExitCode::from(EXIT_BERTH_ERROR)
        }
    }
}

fn write_pages(dir: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Built, every subcommand knows its full name (`berth-image-pull`), which names its page.
    cmd.build();
    let mut files = Vec::new();
    write_tree(&cmd, dir, &mut files)?;
    Ok(files)
}

/// The page of `cmd`, then those of its subcommands.
fn write_tree(cmd: &clap::Command, dir: &Path, files: &mut Vec<String>) -> Result<(), String> {
    // Section 8, system administration: the daemon and most verbs need root.
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("berth")
        .source(format!("berth {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render(&mut out).map_err(|e| e.to_string())?;
    let file = man.get_filename();
    let path = dir.join(&file);
    std::fs::write(&path, out).map_err(|e| format!("writing {}: {e}", path.display()))?;
    files.push(file);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, dir, files)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pages(dir.path()).unwrap();
        for want in ["berth.8", "berth-run.8", "berth-image-push.8", "berth-cp.8"] {
            assert!(files.iter().any(|f| f == want), "{want} in {files:?}");
        }
        let run = std::fs::read_to_string(dir.path().join("berth-run.8")).unwrap();
        assert!(run.starts_with(".ie") || run.contains(".TH"), "{run}");
        assert!(run.contains("\\-\\-tty"), "{run}");
        assert!(!files.iter().any(|f| f.contains("help")), "{files:?}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut cmd = Cli::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "berth", &mut out);
            let text = String::from_utf8(out).unwrap();
            for sub in ["supervise", "validate", "image", "cp"] {
                assert!(text.contains(sub), "{shell:?}: {sub}");
            }
        }
    }
}
