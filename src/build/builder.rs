//! Runs a parsed Containerfile, stage by stage, step by step.
//!
//! A stage is its image config (JSON, as it will be written) and its layers. FROM starts one
//! from an image the store resolves, an earlier stage or `scratch`. RUN runs the command as a
//! berth container (same isolation as any other, network `none` unless asked) whose upper dir
//! becomes the layer. COPY, ADD and a WORKDIR that must be created write into an overlay of
//! the stage's layers mounted in this process's private mount namespace; its upper dir becomes
//! the layer. Every other instruction edits the config and adds a history entry. Steps that
//! make layers are looked up in the build cache first.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::{json, Map, Value};

use super::cache::{self, Cache, Entry};
use super::containerfile::{self, CommandForm, Instruction, Kind, Transfer};
use super::context::{self, Owner, SourceRoot};
use super::words;
use super::BuildError;
use crate::image::{
    ImageConfig, ImageRecord, ImageRef, ImageStore, LayerRecord, RegistryRef, ResolvedImage,
    MAX_LAYER_SIZE,
};
use crate::runtime::container::{Mode, Runtime};
use crate::runtime::launch::{self, Stdin};
use crate::spec::NetworkMode;
use crate::sys::openat;

/// What `berth build` was asked.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub root: PathBuf,
    pub cgroup_parent: String,
    /// The Containerfile.
    pub file: PathBuf,
    pub context: PathBuf,
    /// Names the result is recorded as.
    pub tags: Vec<RegistryRef>,
    pub build_args: BTreeMap<String, String>,
    /// For RUN steps: `none` (the default) or `host`.
    pub network: NetworkMode,
    pub no_cache: bool,
    /// Build up to this stage (by name or index) instead of the last one.
    pub target: Option<String>,
}

/// What a build did.
#[derive(Debug)]
pub struct BuildReport {
    pub records: Vec<ImageRecord>,
    pub steps: usize,
    pub cached: usize,
}

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// One stage's image as it grows.
#[derive(Debug, Clone)]
struct Stage {
    name: Option<String>,
    /// The whole image config, as it will be written.
    config: Value,
    layers: Vec<LayerRecord>,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, String>,
    /// Whether Cmd came from the base image (an ENTRYPOINT then clears it, as Docker does).
    cmd_inherited: bool,
    /// The time of the newest history entry: steps without a layer take it, so an unchanged
    /// rebuild writes the same config (and so the same image digest).
    created: Option<String>,
}

impl Stage {
    fn new(name: Option<String>, config: Value, layers: Vec<LayerRecord>) -> Stage {
        Stage {
            name,
            layers,
            args: BTreeMap::new(),
            cmd_inherited: true,
            created: config_created(&config),
            config,
        }
    }

    /// The `config` object of the image config.
    fn run_config(&mut self) -> &mut Map<String, Value> {
        let obj = self
            .config
            .as_object_mut()
            .expect("the config is an object");
        object_at(obj, "config")
    }

    /// The object `key` of the `config` object (`Labels`, `ExposedPorts`, `Volumes`).
    fn config_map(&mut self, key: &str) -> &mut Map<String, Value> {
        object_at(self.run_config(), key)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.config.get("config").and_then(|c| c.get(key))
    }

    fn env(&self) -> Vec<(String, String)> {
        self.get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value.to_string(),
            None => env.push((key.to_string(), value.to_string())),
        }
        let list: Vec<Value> = env.iter().map(|(k, v)| format!("{k}={v}").into()).collect();
        self.run_config().insert("Env".into(), list.into());
    }

    /// A variable as instruction arguments see it: ENV first, then this stage's ARGs.
    fn lookup(&self, name: &str) -> Option<String> {
        self.env()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .or_else(|| self.args.get(name).cloned())
    }

    fn str_field(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    fn workdir(&self) -> String {
        self.str_field("WorkingDir").unwrap_or_else(|| "/".into())
    }

    fn shell(&self) -> Vec<String> {
        self.get("Shell")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SHELL.map(String::from).to_vec())
    }

    fn argv(&self, form: &CommandForm) -> Vec<String> {
        match form {
            CommandForm::Exec(v) => v.clone(),
            CommandForm::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    fn parent_key(&self) -> String {
        top_chain(&self.layers)
    }

    fn layer_dirs(&self, store: &ImageStore) -> Vec<PathBuf> {
        layer_dirs(&self.layers, store)
    }

    /// Adds a history entry (and the layer, if any). A layer's entry is dated `created`
    /// (when the step first ran); one without a layer takes the stage's newest date.
    fn history(&mut self, created_by: &str, layer: Option<LayerRecord>, created: Option<String>) {
        if created.is_some() {
            self.created = created;
        }
        let mut entry = json!({"created_by": created_by, "comment": "berth build"});
        if let Some(c) = &self.created {
            entry["created"] = c.clone().into();
        }
        let obj = self
            .config
            .as_object_mut()
            .expect("the config is an object");
        if let Some(l) = &layer {
            let rootfs = obj
                .entry("rootfs")
                .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
            if let Some(ids) = rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
                ids.push(l.diff_id.clone().into());
            }
        } else {
            entry["empty_layer"] = true.into();
        }
        match obj.get_mut("history").and_then(Value::as_array_mut) {
            Some(h) => h.push(entry),
            None => {
                obj.insert("history".into(), json!([entry]));
            }
        }
        self.layers.extend(layer);
    }
}

/// The object at `key` of `obj`, made (or made over) as an empty one when it is not.
fn object_at<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = obj.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

/// The chain ID of the top of `layers`, or "scratch": what a step builds on.
fn top_chain(layers: &[LayerRecord]) -> String {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    crate::image::chain_ids(&diff_ids)
        .pop()
        .unwrap_or_else(|| "scratch".into())
}

/// The unpacked dirs of `layers`, bottom first.
fn layer_dirs(layers: &[LayerRecord], store: &ImageStore) -> Vec<PathBuf> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    crate::image::chain_ids(&diff_ids)
        .iter()
        .map(|c| store.layer_dir(c))
        .collect()
}

/// An empty stage (`FROM scratch`).
fn scratch(alias: Option<String>) -> Stage {
    let config = json!({
        "architecture": crate::image::host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    });
    let mut s = Stage::new(alias, config, Vec::new());
    s.cmd_inherited = false;
    s
}

/// The `created` time of an image config.
fn config_created(config: &Value) -> Option<String> {
    config
        .get("created")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A scratch dir under `<root>/tmp` with an overlay of a stage's layers mounted on it,
/// unmounted and removed on drop.
struct Overlay {
    dir: PathBuf,
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mounts the layers `lowers` (bottom first) with a writable upper dir, or read-only.
    fn mount(
        root: &Path,
        n: usize,
        lowers: &[PathBuf],
        writable: bool,
    ) -> Result<Overlay, BuildError> {
        let dir = root
            .join("tmp")
            .join(format!("build-{}-{n}", std::process::id()));
        let io = |step: &'static str| {
            let path = dir.clone();
            move |source| BuildError::Io { step, path, source }
        };
        let _ = fs::remove_dir_all(&dir);
        for d in ["upper", "work", "merged", "empty"] {
            fs::create_dir_all(dir.join(d)).map_err(io("creating"))?;
        }
        let mut o = Overlay {
            merged: dir.join("merged"),
            dir: dir.clone(),
            mounted: false,
        };
        // The empty dir at the bottom: an overlay needs a lower dir, and two without an upper.
        let mut all = vec![dir.join("empty")];
        all.extend_from_slice(lowers);
        let options = if writable {
            crate::runtime::plan::overlay_options(&all, &dir.join("upper"), &dir.join("work"))
        } else {
            let lowers: Vec<String> = all.iter().rev().map(|p| p.display().to_string()).collect();
            format!("lowerdir={}", lowers.join(":"))
        };
        let flags = if writable {
            MsFlags::MS_NODEV
        } else {
            MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        };
        mount(
            Some("overlay"),
            &o.merged,
            Some("overlay"),
            flags,
            Some(options.as_str()),
        )
        .map_err(|e| io("mounting an overlay on")(std::io::Error::from(e)))?;
        o.mounted = true;
        Ok(o)
    }

    fn root(&self) -> Result<OwnedFd, BuildError> {
        openat::open_dir(&self.merged).map_err(|source| BuildError::Io {
            step: "opening",
            path: self.merged.clone(),
            source,
        })
    }

    fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    fn unmount(&mut self) -> Result<(), BuildError> {
        if self.mounted {
            umount2(&self.merged, MntFlags::empty()).map_err(|e| BuildError::Io {
                step: "unmounting",
                path: self.merged.clone(),
                source: e.into(),
            })?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.merged, MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes `build-<pid>-*` scratch dirs of builds that are gone.
fn sweep_scratch(root: &Path) {
    let Ok(entries) = fs::read_dir(root.join("tmp")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("build-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Reads a small text file below `root` (e.g. `etc/passwd`), if there.
fn read_in_root(root: &OwnedFd, rel: &str) -> Option<String> {
    let f = openat::open_in_root(root.as_fd(), Path::new(rel), OFlag::O_RDONLY, 0).ok()?;
    let mut s = String::new();
    fs::File::from(f)
        .take(4 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// `user[:group]` (names or numbers) as the image at `root` resolves it.
fn resolve_owner(root: &OwnedFd, user: &str) -> Result<(u32, u32), BuildError> {
    let passwd = read_in_root(root, "etc/passwd");
    let group = read_in_root(root, "etc/group");
    let u = crate::runtime::user::resolve(Some(user), passwd.as_deref(), group.as_deref())
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
    Ok((u.uid, u.gid))
}

/// The instruction for messages and history: keyword and arguments, shortened.
fn describe(i: &Instruction) -> String {
    let text = format!("{} {}", i.keyword, i.args);
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

struct Run<'a> {
    opts: &'a BuildOptions,
    store: ImageStore,
    rt: Runtime,
    cache: Cache,
    context: SourceRoot,
    /// ARGs before the first FROM.
    global_args: BTreeMap<String, String>,
    used_args: BTreeSet<String>,
    stages: Vec<Stage>,
    scratch_n: usize,
    cached: usize,
    say: &'a dyn Fn(&str),
}

/// Builds the Containerfile `opts.file` with the context `opts.context` and records the
/// result under every tag. Progress lines go to `say`.
pub fn build(opts: &BuildOptions, say: &dyn Fn(&str)) -> Result<BuildReport, BuildError> {
    let text = fs::read_to_string(&opts.file).map_err(|source| BuildError::Io {
        step: "reading",
        path: opts.file.clone(),
        source,
    })?;
    let instructions = containerfile::parse(&text).map_err(|errs| {
        BuildError::Parse(
            errs.into_iter()
                .map(|e| (opts.file.clone(), e.line, e.message))
                .collect(),
        )
    })?;
    // COPY/ADD mounts live in a mount namespace of our own: they vanish with this process.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
        BuildError::Runtime(format!("a private mount namespace for the build: {e}"))
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| BuildError::Runtime(format!("making the build's mounts private: {e}")))?;
    let store = ImageStore::open(&opts.root)?;
    let rt = Runtime::open(&opts.root, &opts.cgroup_parent)
        .map_err(|e| BuildError::Runtime(e.to_string()))?;
    rt.sweep_dead_runs();
    sweep_scratch(&opts.root);
    let context = SourceRoot::open(&opts.context, true)?;
    let mut run = Run {
        opts,
        store,
        rt,
        cache: Cache::new(&opts.root, !opts.no_cache),
        context,
        global_args: BTreeMap::new(),
        used_args: BTreeSet::new(),
        stages: Vec::new(),
        scratch_n: 0,
        cached: 0,
        say,
    };
    let _lock = run.store.shared_lock()?;
    let last = target_index(&instructions, opts.target.as_deref()).map_err(BuildError::Invalid)?;
    let total = instructions.iter().take(last).count();
    for (n, i) in instructions.iter().take(last).enumerate() {
        say(&format!("STEP {}/{total}: {}", n + 1, describe(i)));
        run.step(i).map_err(|e| BuildError::Step {
            file: opts.file.clone(),
            line: i.line,
            instruction: describe(i),
            source: Box::new(e),
        })?;
    }
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !run.used_args.contains(*k))
        .collect();
    if !unused.is_empty() {
        say(&format!(
            "warning: build arguments not consumed by any ARG: {}",
            unused
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut stage = run
        .stages
        .pop()
        .ok_or_else(|| BuildError::Invalid("no stage".into()))?;
    stage.config["created"] = stage
        .created
        .clone()
        .unwrap_or_else(crate::image::now_rfc3339)
        .into();
    let mut records = Vec::new();
    for tag in &opts.tags {
        records.push(run.store.record_image(
            &tag.to_string(),
            &stage.config,
            stage.layers.clone(),
        )?);
    }
    Ok(BuildReport {
        records,
        steps: total,
        cached: run.cached,
    })
}

/// How many instructions to run: all, or up to the end of the `target` stage.
fn target_index(all: &[Instruction], target: Option<&str>) -> Result<usize, String> {
    let Some(t) = target else {
        return Ok(all.len());
    };
    let t = t.to_ascii_lowercase();
    let starts: Vec<(usize, Option<&String>)> = all
        .iter()
        .enumerate()
        .filter_map(|(n, i)| match &i.kind {
            Kind::From { alias, .. } => Some((n, alias.as_ref())),
            _ => None,
        })
        .collect();
    let found = starts
        .iter()
        .enumerate()
        .position(|(idx, (_, alias))| {
            alias.map(|a| *a == t).unwrap_or(false) || idx.to_string() == t
        })
        .ok_or_else(|| format!("--target {t}: no such stage"))?;
    Ok(starts.get(found + 1).map(|(n, _)| *n).unwrap_or(all.len()))
}

impl Run<'_> {
    fn stage(&mut self) -> &mut Stage {
        self.stages.last_mut().expect("FROM comes first")
    }

    fn expand(&self, text: &str) -> Result<String, BuildError> {
        let vars = |n: &str| match self.stages.last() {
            Some(s) => s.lookup(n),
            None => self.global_args.get(n).cloned(),
        };
        words::word(text, &vars).map_err(BuildError::Invalid)
    }

    fn expand_words(&self, text: &str) -> Result<Vec<String>, BuildError> {
        let stage = self.stages.last().expect("FROM comes first");
        words::words(text, &|n| stage.lookup(n)).map_err(BuildError::Invalid)
    }

    fn step(&mut self, i: &Instruction) -> Result<(), BuildError> {
        let created_by = format!("{} {}", i.keyword, i.args);
        match &i.kind {
            Kind::Arg { name, default } => {
                let value = match self.opts.build_args.get(name) {
                    Some(v) => {
                        self.used_args.insert(name.clone());
                        Some(v.clone())
                    }
                    None => match default {
                        Some(d) => Some(self.expand(d)?),
                        None => self.global_args.get(name).cloned(),
                    },
                };
                match self.stages.last_mut() {
                    None => {
                        if let Some(v) = value {
                            self.global_args.insert(name.clone(), v);
                        }
                    }
                    Some(s) => {
                        s.args.insert(name.clone(), value.unwrap_or_default());
                    }
                }
                Ok(())
            }
            Kind::From { image, alias } => self.from(image, alias.clone()),
            Kind::Run(form) => self.run(form),
            Kind::Copy(t) => self.transfer(t, false, &created_by),
            Kind::Add(t) => self.transfer(t, true, &created_by),
            Kind::Workdir(w) => self.workdir(w, &created_by),
            Kind::Env(text) => {
                let stage = self.stages.last().expect("FROM comes first");
                let pairs =
                    words::pairs(text, &|n| stage.lookup(n), true).map_err(BuildError::Invalid)?;
                let s = self.stage();
                for (k, v) in pairs {
                    if !containerfile::valid_name(&k) {
                        return Err(BuildError::Invalid(format!("{k:?} is not a variable name")));
                    }
                    s.set_env(&k, &v);
                }
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::Label(text) => {
                let stage = self.stages.last().expect("FROM comes first");
                let pairs =
                    words::pairs(text, &|n| stage.lookup(n), false).map_err(BuildError::Invalid)?;
                let s = self.stage();
                let labels = s.config_map("Labels");
                for (k, v) in pairs {
                    labels.insert(k, v.into());
                }
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::User(u) => {
                let u = self.expand(u)?;
                let s = self.stage();
                s.run_config().insert("User".into(), u.into());
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::Cmd(form) => {
                let s = self.stage();
                let argv = s.argv(form);
                s.run_config().insert("Cmd".into(), json!(argv));
                s.cmd_inherited = false;
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::Entrypoint(form) => {
                let s = self.stage();
                let argv = s.argv(form);
                s.run_config().insert("Entrypoint".into(), json!(argv));
                if s.cmd_inherited {
                    s.run_config().remove("Cmd");
                }
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::Expose(text) => {
                let ports = self.expand_words(text)?;
                let s = self.stage();
                let map = s.config_map("ExposedPorts");
                for p in ports {
                    let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    if num.parse::<u16>().ok().filter(|n| *n > 0).is_none()
                        || !matches!(proto.as_str(), "tcp" | "udp" | "sctp")
                    {
                        return Err(BuildError::Invalid(format!(
                            "{p:?} is not PORT[/tcp|udp|sctp]"
                        )));
                    }
                    map.insert(format!("{num}/{proto}"), json!({}));
                }
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::Volume(paths) => {
                let paths: Vec<String> = paths
                    .iter()
                    .map(|p| self.expand(p))
                    .collect::<Result<_, _>>()?;
                let s = self.stage();
                let map = s.config_map("Volumes");
                for p in paths {
                    if !p.starts_with('/') {
                        return Err(BuildError::Invalid(format!(
                            "{p:?} is not an absolute path"
                        )));
                    }
                    map.insert(p, json!({}));
                }
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::StopSignal(sig) => {
                let sig = self.expand(sig)?;
                crate::spec::units::parse_signal(&sig).map_err(BuildError::Invalid)?;
                let s = self.stage();
                s.run_config().insert("StopSignal".into(), sig.into());
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::Shell(v) => {
                let s = self.stage();
                s.run_config().insert("Shell".into(), json!(v));
                s.history(&created_by, None, None);
                Ok(())
            }
            Kind::Healthcheck(h) => {
                let s = self.stage();
                let value = match h {
                    None => json!({"Test": ["NONE"]}),
                    Some(h) => {
                        let test = match &h.command {
                            CommandForm::Shell(c) => json!(["CMD-SHELL", c]),
                            CommandForm::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                json!(t)
                            }
                        };
                        let mut o = json!({"Test": test});
                        for (k, d) in [
                            ("Interval", h.interval),
                            ("Timeout", h.timeout),
                            ("StartPeriod", h.start_period),
                        ] {
                            if let Some(d) = d {
                                o[k] = (d.as_nanos() as u64).into();
                            }
                        }
                        if let Some(r) = h.retries {
                            o["Retries"] = r.into();
                        }
                        o
                    }
                };
                s.run_config().insert("Healthcheck".into(), value);
                s.history(&created_by, None, None);
                Ok(())
            }
        }
    }

    /// A stage's image: an earlier stage, `scratch`, or an image the store resolves.
    fn from(&mut self, image: &str, alias: Option<String>) -> Result<(), BuildError> {
        let image = self.expand_global(image)?;
        let lowered = image.to_ascii_lowercase();
        let mut stage = if let Some(s) = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lowered.as_str()))
        {
            Stage::new(alias.clone(), s.config.clone(), s.layers.clone())
        } else if lowered == "scratch" {
            scratch(alias.clone())
        } else if let Some(dir) = image.strip_prefix("rootfs:") {
            // A plain dir has no config and no layers: it becomes the first layer.
            if !dir.starts_with('/') {
                return Err(BuildError::Invalid(format!(
                    "{image}: the path must be absolute"
                )));
            }
            let mut s = scratch(alias.clone());
            let (layer, _) = self.store.store_layer(Path::new(dir))?;
            self.store.ensure_layer(&image, &[], &layer)?;
            s.history(
                &format!("FROM {image}"),
                Some(layer),
                Some(crate::image::now_rfc3339()),
            );
            s
        } else {
            let rec = self.image_record(&image)?;
            let config = self.store.config_json(&rec, &image)?;
            if !config.is_object() {
                return Err(BuildError::Invalid(format!(
                    "{image}: the image config is not an object"
                )));
            }
            Stage::new(alias.clone(), config, rec.layers.clone())
        };
        stage.args.clear();
        self.stages.push(stage);
        Ok(())
    }

    fn expand_global(&self, text: &str) -> Result<String, BuildError> {
        words::word(text, &|n| self.global_args.get(n).cloned()).map_err(BuildError::Invalid)
    }

    /// The record of an image named in FROM or `COPY --from`, resolved (pulled, imported,
    /// unpacked) as a spec's image would be.
    fn image_record(&self, image: &str) -> Result<ImageRecord, BuildError> {
        let r = ImageRef::parse(image).map_err(|e| BuildError::Invalid(format!("{image}: {e}")))?;
        Ok(self.store.base_record(&r)?)
    }

    /// Looks `key` up in the cache; a hit whose layer is still stored is added to the stage.
    fn cached(&mut self, key: &str, created_by: &str) -> Result<bool, BuildError> {
        let Some(entry) = self.cache.get(key) else {
            return Ok(false);
        };
        if let Some(l) = &entry.layer {
            if !self.store.has_layer_blob(l) {
                return Ok(false);
            }
            let parents = self.stage().diff_ids();
            self.store.ensure_layer("build cache", &parents, l)?;
        }
        self.stage().history(created_by, entry.layer, entry.created);
        self.cached += 1;
        (self.say)(" --> cached");
        Ok(true)
    }

    /// Stores the upper dir `upper` as the stage's next layer and caches it under `key`.
    fn add_layer(&mut self, upper: &Path, key: &str, created_by: &str) -> Result<(), BuildError> {
        let (layer, _) = self.store.store_layer(upper)?;
        let created = crate::image::now_rfc3339();
        let parents = self.stage().diff_ids();
        self.store.ensure_layer("build", &parents, &layer)?;
        self.cache.put(
            key,
            &Entry {
                layer: Some(layer.clone()),
                created: Some(created.clone()),
            },
        );
        (self.say)(&format!(
            " --> {}",
            &layer.diff_id[..19.min(layer.diff_id.len())]
        ));
        self.stage().history(created_by, Some(layer), Some(created));
        Ok(())
    }

    fn overlay(&mut self, lowers: &[PathBuf], writable: bool) -> Result<Overlay, BuildError> {
        self.scratch_n += 1;
        Overlay::mount(&self.opts.root, self.scratch_n, lowers, writable)
    }

    fn run(&mut self, form: &CommandForm) -> Result<(), BuildError> {
        let stage = self.stages.last().expect("FROM comes first").clone();
        let argv = stage.argv(form);
        let env = stage.env();
        // ARGs reach RUN as environment, where no ENV of the same name is set.
        let args: BTreeMap<String, String> = stage
            .args
            .iter()
            .filter(|(k, _)| !env.iter().any(|(e, _)| e == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let user = stage.str_field("User");
        let workdir = stage.workdir();
        let network = match self.opts.network {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Bridge => "bridge",
        };
        let key = cache::key(&[
            &stage.parent_key(),
            "RUN",
            &serde_json::to_string(&argv).unwrap_or_default(),
            &serde_json::to_string(&env).unwrap_or_default(),
            &serde_json::to_string(&args).unwrap_or_default(),
            user.as_deref().unwrap_or(""),
            &workdir,
            network,
        ]);
        let history = format!("RUN {}", argv.join(" "));
        if self.cached(&key, &history)? {
            return Ok(());
        }
        let name = format!("build-{}", std::process::id());
        let text = format!("image = \"localhost/berth-build\"\n[network]\nmode = \"{network}\"\n");
        let mut spec = crate::spec::parse_str(
            Path::new(&format!("{name}.toml")),
            &text,
            &crate::spec::ValidationContext::default(),
        )
        .map_err(|e| BuildError::Runtime(e.to_string()))?;
        spec.command = Some(argv);
        spec.entrypoint = Some(Vec::new());
        spec.env = args;
        let image = ResolvedImage {
            layers: stage.layer_dirs(&self.store),
            config: ImageConfig {
                env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                working_dir: Some(workdir),
                user,
                ..ImageConfig::default()
            },
            digest: None,
        };
        // As `berth run`: the helper is spawned from this (main) thread, then the container
        // is prepared while the helper loads.
        let helper = launch::start_helper(&self.opts.root, Stdin::Null)
            .map_err(|e| BuildError::Runtime(e.to_string()))?;
        let prepared = self
            .rt
            .prepare_with(&spec, &image, &Mode::Foreground)
            .map_err(|e| BuildError::Runtime(e.to_string()))?;
        let status = self
            .rt
            .start(&prepared, helper)
            .map_err(|e| e.to_string())
            .and_then(|r| r.wait().map_err(|e| e.to_string()));
        let upper = prepared.plan.paths.upper.clone();
        let result = match status {
            Ok(s) if s.as_code() == 0 => self.add_layer(&upper, &key, &history),
            Ok(s) => Err(BuildError::Exited(s.as_code())),
            Err(e) => Err(BuildError::Runtime(e)),
        };
        if let Err(e) = self.rt.teardown(prepared, false) {
            (self.say)(&format!("warning: cleaning up the RUN container: {e}"));
        }
        result
    }

    /// WORKDIR: the config, and the dir itself when the image does not have it.
    fn workdir(&mut self, w: &str, created_by: &str) -> Result<(), BuildError> {
        let w = self.expand(w)?;
        let s = self.stage();
        let path = if w.starts_with('/') {
            w
        } else {
            format!("{}/{w}", s.workdir().trim_end_matches('/'))
        };
        let path = format!("/{}", context::clean(&path));
        s.run_config()
            .insert("WorkingDir".into(), path.clone().into());
        let key = cache::key(&[&s.parent_key(), "WORKDIR", &path]);
        if self.cached(&key, created_by)? {
            return Ok(());
        }
        let lowers = self
            .stages
            .last()
            .expect("FROM comes first")
            .layer_dirs(&self.store);
        let mut o = self.overlay(&lowers, true)?;
        let root = o.root()?;
        if context::is_dir(root.as_fd(), &path) {
            drop(root);
            drop(o);
            let entry = Entry {
                layer: None,
                created: None,
            };
            self.cache.put(&key, &entry);
            self.stage().history(created_by, None, None);
            return Ok(());
        }
        // As BuildKit: a WORKDIR made here belongs to the stage's USER.
        let user = self.stages.last().and_then(|s| s.str_field("User"));
        let owner = match &user {
            Some(u) => resolve_owner(&root, u)?,
            None => (0, 0),
        };
        context::mkdir_all(root.as_fd(), &path, owner).map_err(|source| BuildError::Io {
            step: "creating",
            path: PathBuf::from(&path),
            source,
        })?;
        drop(root);
        o.unmount()?;
        self.add_layer(&o.upper(), &key, created_by)
    }

    /// COPY and ADD.
    fn transfer(&mut self, t: &Transfer, add: bool, created_by: &str) -> Result<(), BuildError> {
        let sources: Vec<String> = t
            .sources
            .iter()
            .map(|s| self.expand(s))
            .collect::<Result<_, _>>()?;
        let dest_raw = self.expand(&t.dest)?;
        let stage = self.stages.last().expect("FROM comes first").clone();
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", stage.workdir().trim_end_matches('/'))
        };
        let dest_is_dir = dest_raw.ends_with('/') || dest_raw == "." || sources.len() > 1;
        let dest = context::clean(&dest);
        let chown = t.chown.as_ref().map(|c| self.expand(c)).transpose()?;

        // Where the files come from: the context, an earlier stage or an image. An earlier
        // stage or an image is keyed by its layers and mounted only when the step runs.
        let from_layers = match &t.from {
            None => None,
            Some(f) => {
                let f = self.expand(f)?.to_ascii_lowercase();
                let by_name = self
                    .stages
                    .iter()
                    .enumerate()
                    .rev()
                    .skip(1)
                    .find(|(n, s)| s.name.as_deref() == Some(f.as_str()) || n.to_string() == f)
                    .map(|(_, s)| s.layers.clone());
                Some(match by_name {
                    Some(layers) => layers,
                    None => self.image_record(&f)?.layers,
                })
            }
        };
        let context_sets = match &from_layers {
            None => Some(self.context.expand(&sources)?),
            Some(_) => None,
        };
        let content = match (&context_sets, &from_layers) {
            (Some(sets), _) => self.context.hash(sets)?,
            (None, layers) => top_chain(layers.as_deref().unwrap_or(&[])),
        };
        let key = cache::key(&[
            &stage.parent_key(),
            if add { "ADD" } else { "COPY" },
            &serde_json::to_string(&sources).unwrap_or_default(),
            &dest,
            &dest_is_dir.to_string(),
            chown.as_deref().unwrap_or(""),
            &t.chmod.map(|m| m.to_string()).unwrap_or_default(),
            &content,
        ]);
        if self.cached(&key, created_by)? {
            return Ok(());
        }
        let lowers = stage.layer_dirs(&self.store);
        let mut o = self.overlay(&lowers, true)?;
        let root = o.root()?;
        let (from_overlay, src) = match &from_layers {
            Some(layers) => {
                let o = self.overlay(&layer_dirs(layers, &self.store), false)?;
                let root = SourceRoot::open(&o.merged, false)?;
                (Some(o), Some(root))
            }
            None => (None, None),
        };
        let src_root = src.as_ref().unwrap_or(&self.context);
        let sets = match context_sets {
            Some(sets) => sets,
            None => src_root.expand(&sources)?,
        };
        let (uid, gid) = match &chown {
            None => (0, 0),
            Some(c) => resolve_owner(&root, c)
                .map_err(|e| BuildError::Invalid(format!("--chown={c}: {e}")))?,
        };
        let owner = Owner {
            uid,
            gid,
            chmod: t.chmod,
            keep_ids: false,
        };
        let single_file = sets.len() == 1
            && sets[0].1.len() == 1
            && !dest_is_dir
            && !context::is_dir(root.as_fd(), &dest);
        for (source, items) in &sets {
            let is_file = items.len() == 1 && items[0].st.st_mode & libc::S_IFMT == libc::S_IFREG;
            if add && is_file {
                if let Some(reader) = context::archive_reader(src_root, source)? {
                    let dir =
                        context::mkdir_all(root.as_fd(), &dest, (0, 0)).map_err(|source| {
                            BuildError::Io {
                                step: "creating",
                                path: PathBuf::from("/").join(&dest),
                                source,
                            }
                        })?;
                    crate::image::unpack_layer_at(reader, dir, MAX_LAYER_SIZE)?;
                    continue;
                }
            }
            if single_file {
                let (dir, file) = match dest.rsplit_once('/') {
                    Some((d, f)) => (d.to_string(), f.to_string()),
                    None => (String::new(), dest.clone()),
                };
                context::copy_items(src_root, items, root.as_fd(), &dir, Some(&file), owner)?;
            } else {
                context::copy_items(src_root, items, root.as_fd(), &dest, None, owner)?;
            }
        }
        drop(root);
        drop(sets);
        drop(src);
        drop(from_overlay);
        o.unmount()?;
        self.add_layer(&o.upper(), &key, created_by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let all = containerfile::parse(
            "FROM a AS build\nRUN x\nFROM b\nCOPY --from=build / /\nFROM c AS last\n",
        )
        .unwrap();
        assert_eq!(target_index(&all, None), Ok(5));
        assert_eq!(target_index(&all, Some("build")), Ok(2));
        assert_eq!(target_index(&all, Some("1")), Ok(4));
        assert_eq!(target_index(&all, Some("LAST")), Ok(5));
        assert!(target_index(&all, Some("nope")).is_err());
    }

    #[test]
    fn stage_config_edits() {
        let mut s = Stage::new(
            None,
            json!({"config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]}}),
            Vec::new(),
        );
        s.set_env("A", "1");
        s.set_env("PATH", "/usr/bin");
        assert_eq!(
            s.env(),
            [("PATH".into(), "/usr/bin".into()), ("A".into(), "1".into())]
        );
        s.args.insert("A".into(), "from-arg".into());
        s.args.insert("B".into(), "2".into());
        assert_eq!(s.lookup("A").as_deref(), Some("1"), "ENV wins over ARG");
        assert_eq!(s.lookup("B").as_deref(), Some("2"));
        assert_eq!(
            s.argv(&CommandForm::Shell("echo".into())),
            ["/bin/sh", "-c", "echo"]
        );
        s.run_config()
            .insert("Shell".into(), json!(["/bin/ash", "-c"]));
        assert_eq!(
            s.argv(&CommandForm::Shell("echo".into())),
            ["/bin/ash", "-c", "echo"]
        );
        s.history("ENV A=1", None, None);
        assert_eq!(s.config["history"][0]["empty_layer"], json!(true));
        assert_eq!(s.parent_key(), "scratch");
    }
}
