//! `berth image ...`: the image store from the command line. Progress goes to stderr, results
//! to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{Cli, EXIT_BERTH_ERROR};
use crate::image::{ImageRecord, ImageRef, ImageStore, Progress, RegistryOptions, RegistryRef};

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// Pull an image from a registry (asks the registry even when the tag is known).
    Pull {
        /// e.g. `registry.example:5000/team/app:1.4` or `app@sha256:...`.
        reference: String,
        /// Print only the manifest digest.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Push an image to a registry: its blobs (those the repository lacks) and its manifest,
    /// byte for byte, so the registry serves it under the same digest.
    Push {
        /// The recorded image (as `image ls` names it).
        reference: String,
        /// Where to push it (default: the reference itself), e.g. `127.0.0.1:5000/team/app:1`.
        destination: Option<String>,
        /// Print only the manifest digest.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Import an OCI layout dir, oci-archive or docker-archive (detected by content; a
    /// `oci:`/`oci-archive:`/`docker-archive:` reference selects a tag).
    Import {
        path: String,
        /// The name to record it under (default: the name it carries, else localhost/<file>).
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show an image's record as JSON.
    Inspect { reference: String },
    /// Show how an image's layers were made.
    History {
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// Record an image under another name.
    Tag { source: String, target: String },
    /// Remove image names (blobs and layers stay until `prune`).
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Remove blobs and layers no image references.
    Prune,
    /// Write images to a tar file that is both an oci-archive and a docker-archive (as
    /// `docker save` writes since Docker 25): `skopeo`, `podman load`, `docker load` and
    /// `berth image import` read it.
    Save {
        #[arg(required = true)]
        references: Vec<String>,
        /// The file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// `berth login`: the password from the flag or stdin.
pub fn login(registry: &str, user: &str, password: Option<&str>, stdin: bool) -> ExitCode {
    let password = match (password, stdin) {
        (Some(_), true) => return fail("give --password or --password-stdin, not both"),
        (Some(p), false) => p.to_string(),
        (None, true) => {
            let mut s = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
                return fail(format!("reading the password from stdin: {e}"));
            }
            s.trim_end_matches(['\r', '\n']).to_string()
        }
        (None, false) => return fail("give --password-stdin (or --password)"),
    };
    match crate::image::login(&RegistryOptions::default(), registry, user, &password) {
        Ok(path) => {
            println!("Login Succeeded ({})", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn logout(registry: &str) -> ExitCode {
    match crate::image::logout(&RegistryOptions::default(), registry) {
        Ok(true) => {
            println!("Removed login credentials for {registry}");
            ExitCode::SUCCESS
        }
        Ok(false) => fail(format!("not logged in to {registry}")),
        Err(e) => fail(e),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(EXIT_BERTH_ERROR)
}

fn registry_ref(s: &str) -> Result<RegistryRef, String> {
    match ImageRef::parse(s) {
        Ok(ImageRef::Registry(r)) => Ok(r),
        Ok(_) => Err(format!("{s:?} is not a registry reference")),
        Err(e) => Err(e),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn print_json(v: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn image(cli: &Cli, cmd: &ImageCommand) -> ExitCode {
    let store = match ImageStore::open(&cli.root()) {
        Ok(s) => s.with_progress(Progress::new(|line| eprintln!("{line}"))),
        Err(e) => return fail(e),
    };
    match cmd {
        ImageCommand::Pull { reference, quiet } => {
            let r = match registry_ref(reference) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            match store.pull(&r) {
                Ok((rec, _)) => {
                    if *quiet {
                        println!("{}", rec.digest);
                    } else {
                        println!("{} {}", rec.name, rec.digest);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        ImageCommand::Push {
            reference,
            destination,
            quiet,
        } => {
            let dest = match registry_ref(destination.as_deref().unwrap_or(reference)) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            match store.push(reference, &dest) {
                Ok(r) => {
                    eprintln!(
                        "{dest}: {} blobs uploaded ({}), {} already there",
                        r.uploaded,
                        human(r.bytes),
                        r.skipped
                    );
                    if *quiet {
                        println!("{}", r.digest);
                    } else {
                        println!("{dest} {}", r.digest);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        ImageCommand::Import { path, name } => {
            let name = match name.as_deref().map(registry_ref).transpose() {
                Ok(n) => n,
                Err(e) => return fail(e),
            };
            match store.import(path, name.as_ref()) {
                Ok((rec, stats)) => {
                    eprintln!(
                        "{}: {} layers unpacked, {} reused",
                        rec.name, stats.unpacked, stats.reused
                    );
                    println!("{} {}", rec.name, rec.digest);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        ImageCommand::Ls { json } => {
            let recs = match store.images() {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if *json {
                return print_json(&recs);
            }
            println!(
                "{:<50} {:<12} {:>9} {:>9} {:>6}  CREATED",
                "NAME", "DIGEST", "SIZE", "UNPACKED", "LAYERS"
            );
            for r in &recs {
                println!(
                    "{:<50} {:<12} {:>9} {:>9} {:>6}  {}",
                    r.name,
                    short(&r.digest),
                    human(r.size()),
                    human(store.unpacked_size(r)),
                    r.layers.len(),
                    r.created.as_deref().unwrap_or("-")
                );
            }
            ExitCode::SUCCESS
        }
        ImageCommand::Inspect { reference } => match store.find(reference) {
            Ok(rec) => print_json(&rec),
            Err(e) => fail(e),
        },
        ImageCommand::History { reference, json } => {
            let rec: ImageRecord = match store.find(reference) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if *json {
                return print_json(&rec.history);
            }
            // Newest first, as docker prints it; non-empty entries map to layers in order.
            let mut layer_sizes = rec.layers.iter().map(|l| l.size);
            let rows: Vec<(String, String, String)> = rec
                .history
                .iter()
                .map(|h| {
                    let size = if h.empty_layer {
                        "0B".to_string()
                    } else {
                        layer_sizes.next().map(human).unwrap_or_else(|| "-".into())
                    };
                    (
                        h.created.clone().unwrap_or_else(|| "-".into()),
                        size,
                        h.created_by.clone().unwrap_or_default(),
                    )
                })
                .collect();
            println!("{:<30} {:>9}  CREATED BY", "CREATED", "SIZE");
            for (created, size, by) in rows.iter().rev() {
                println!("{created:<30} {size:>9}  {by}");
            }
            ExitCode::SUCCESS
        }
        ImageCommand::Tag { source, target } => {
            let dst = match registry_ref(target) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            match store.tag(source, &dst) {
                Ok(rec) => {
                    println!("{} {}", rec.name, rec.digest);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        ImageCommand::Rm { references } => {
            let mut code = ExitCode::SUCCESS;
            for r in references {
                match store.remove(r) {
                    Ok(names) => names.iter().for_each(|n| println!("untagged {n}")),
                    Err(e) => code = fail(e),
                }
            }
            code
        }
        ImageCommand::Prune => {
            // Layers mounted by containers that still run are kept, whatever their image.
            let in_use: Vec<PathBuf> = store.layers_in_use();
            match store.prune(&in_use) {
                Ok(r) => {
                    println!(
                        "removed {} blobs ({}) and {} layers",
                        r.blobs,
                        human(r.blob_bytes),
                        r.layers
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        ImageCommand::Save { references, output } => match store.save(references, output) {
            Ok(r) => {
                eprintln!(
                    "{}: {} images, {} blobs ({})",
                    output.display(),
                    r.images,
                    r.blobs,
                    human(r.bytes)
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}
