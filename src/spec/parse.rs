//! Turning the text of one spec file into a `ValidatedSpec`: the key layout of the format, type
//! checks, value checks, defaults, and a diagnostic with line and column for every problem found.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diagnostic::{Diagnostic, SpecErrors};
use super::types::{
    BuildSpec, Condition, HealthSpec, IoDeviceLimit, MountSpec, NetworkMode, NetworkSpec,
    OnUnhealthy, Probe, Resources, RestartPolicy, RestartSpec, UpdateOrder, UpdateSpec,
    ValidatedSpec,
};
use super::units;
use super::ValidationContext;

/// Largest spec file accepted, in bytes.
pub const MAX_SPEC_SIZE: u64 = 1024 * 1024;

/// Smallest memory limit accepted, in bytes.
pub const MIN_MEMORY: u64 = 4 * 1024 * 1024;

/// Default `stop_signal`: SIGTERM.
pub const DEFAULT_STOP_SIGNAL: i32 = 15;
/// Default `stop_timeout`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `stop_timeout` accepted: the daemon's own stop is bounded by it (and the service
/// manager's stop timeout is derived from it, see `supervisor::LONGEST_SHUTDOWN`).
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `restart.backoff.initial`.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Default `restart.backoff.max`.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default `restart.backoff.reset_after`.
pub const DEFAULT_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

pub(super) const TOP_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "env",
    "workdir",
    "user",
    "hostname",
    "readonly_rootfs",
    "stop_signal",
    "stop_timeout",
    "cap_add",
    "cap_drop",
    "restart",
    "resources",
    "network",
    "mounts",
    "health",
    "depends_on",
    "update",
    "build",
];
pub(super) const BUILD_KEYS: &[&str] = &["context", "file", "args"];
pub(super) const RESTART_KEYS: &[&str] = &["policy", "max_retries", "backoff"];
pub(super) const BACKOFF_KEYS: &[&str] = &["initial", "max", "reset_after"];
pub(super) const RESOURCES_KEYS: &[&str] =
    &["memory", "cpus", "cpu_weight", "cpuset", "pids", "io"];
pub(super) const IO_KEYS: &[&str] = &["weight", "read_bps", "write_bps", "read_iops", "write_iops"];
pub(super) const NETWORK_KEYS: &[&str] = &["mode", "ip", "ports", "egress", "ingress"];
pub(super) const MOUNT_KEYS: &[&str] = &["source", "target", "readonly"];
pub(super) const HEALTH_KEYS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "on_unhealthy",
];
pub(super) const HTTP_KEYS: &[&str] = &["port", "path"];
pub(super) const UPDATE_KEYS: &[&str] = &["order", "check", "healthy_for", "rollback"];
pub(super) const TCP_KEYS: &[&str] = &["port"];

/// `[health]` defaults (Docker's retries; a shorter interval and timeout than Docker's 30 s,
/// as an edge supervisor acts on them).
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;

/// Sections whose keys are suggested when one of them is written at the top level.
const SECTIONS: &[(&str, &[&str])] = &[
    ("restart", RESTART_KEYS),
    ("resources", RESOURCES_KEYS),
    ("network", NETWORK_KEYS),
    ("health", HEALTH_KEYS),
    ("update", UPDATE_KEYS),
];

type Val<'i> = Spanned<DeValue<'i>>;

/// The most CPUs `resources.cpus` may ask for (cpu.max takes far more; no machine has them).
const MAX_CPUS: f64 = 1024.0;
/// The kernel's largest pid count (PID_MAX_LIMIT on 64-bit): pids.max refuses more.
const PID_MAX_LIMIT: i128 = 4_194_304;

/// Parses and validates the text of a spec file. The container's name is the file stem.
pub fn parse_str(
    file: &Path,
    text: &str,
    ctx: &ValidationContext,
) -> Result<ValidatedSpec, SpecErrors> {
    let mut c = Checker {
        file,
        text,
        diags: Vec::new(),
    };
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name_ok = match units::check_name(&name) {
        Ok(()) => true,
        Err(msg) => {
            c.diags.push(Diagnostic::whole_file(file, msg));
            false
        }
    };

    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            let span = e.span().unwrap_or(0..0);
            let mut message = format!("TOML syntax error: {}", e.message().trim_end());
            // Name the key: the parser's message does not.
            if message.ends_with("duplicate key") {
                if let Some(k) = text.get(span.clone()).filter(|k| !k.contains('\n')) {
                    message.push_str(&format!(" `{}`", k.trim()));
                }
            }
            c.diags
                .push(Diagnostic::at(file, text, span.start, None, message));
        }
        return Err(c.finish_err());
    }
    let doc = doc.get_ref();

    let spec = c.spec(doc, &name, name_ok, ctx);
    if c.diags.is_empty() {
        Ok(spec)
    } else {
        Err(c.finish_err())
    }
}

/// A diagnostic about the value at `key` (a dotted path such as `network.ip`) of the spec file
/// at `path`, at that value's line and column (1:1 when the file or the key cannot be read):
/// for problems found across files, after each file was validated on its own.
pub fn diagnostic_at_key(path: &Path, key: &str, message: String) -> Diagnostic {
    let Ok(text) = read_capped(path) else {
        return Diagnostic::whole_file(path, message);
    };
    let (doc, _) = DeTable::parse_recoverable(&text);
    let mut table = doc.get_ref();
    let mut offset = None;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some(value) = table.get(part) else {
            break;
        };
        if parts.peek().is_none() {
            offset = Some(value.span().start);
        } else if let DeValue::Table(t) = value.get_ref() {
            table = t;
        } else {
            break;
        }
    }
    match offset {
        Some(o) => Diagnostic::at(path, &text, o, Some(key.to_string()), message),
        None => Diagnostic::whole_file(path, message),
    }
}

/// Reads and validates one spec file. Files over 1 MiB, unreadable files, files that are not
/// regular files (a FIFO is never opened for blocking reads) and non-UTF-8 text are diagnostics
/// at 1:1.
pub fn load_file(path: &Path, ctx: &ValidationContext) -> Result<ValidatedSpec, SpecErrors> {
    let text =
        read_capped(path).map_err(|msg| SpecErrors::from(Diagnostic::whole_file(path, msg)))?;
    parse_str(path, &text, ctx)
}

/// Loads the spec file `path` of the spec directory open as `dir`: the file is opened once,
/// through the fd, with every component (symlinks included) resolved inside the directory
/// (openat2 RESOLVE_IN_ROOT), so a link swapped to point elsewhere between the listing and
/// the read can never make it read a file outside.
///
/// `inside` is what to open relative to the directory (the file's name, or the target a
/// symlink had when listed); `path` names the file in diagnostics.
pub fn load_in_dir(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &Path,
    inside: &Path,
    ctx: &ValidationContext,
) -> Result<ValidatedSpec, SpecErrors> {
    let whole = |msg: String| SpecErrors::from(Diagnostic::whole_file(path, msg));
    let fd = crate::sys::openat::open_in_root(
        dir,
        inside,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
        0,
    )
    .map_err(|e| whole(format!("cannot open spec file inside its directory: {e}")))?;
    let text = read_capped_from(File::from(fd)).map_err(whole)?;
    parse_str(path, &text, ctx)
}

fn read_capped(path: &Path) -> Result<String, String> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open spec file: {e}"))?;
    read_capped_from(file)
}

fn read_capped_from(file: File) -> Result<String, String> {
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat spec file: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_SPEC_SIZE {
        return Err(format!(
            "spec file is {} bytes, larger than the {MAX_SPEC_SIZE}-byte limit",
            meta.len()
        ));
    }
    let mut buf = Vec::new();
    file.take(MAX_SPEC_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read spec file: {e}"))?;
    if buf.len() as u64 > MAX_SPEC_SIZE {
        return Err(format!(
            "spec file is larger than the {MAX_SPEC_SIZE}-byte limit"
        ));
    }
    String::from_utf8(buf).map_err(|e| {
        format!(
            "spec file is not valid UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn finish_err(&mut self) -> SpecErrors {
        let mut diags = std::mem::take(&mut self.diags);
        diags.sort_by_key(|d| (d.line, d.col));
        SpecErrors::new(diags)
    }

    fn err(&mut self, span: Range<usize>, key: &str, msg: impl Into<String>) {
        let msg = msg.into();
        let (key, message) = if key.is_empty() {
            (None, msg)
        } else {
            (Some(key.to_string()), format!("{key}: {msg}"))
        };
        self.diags.push(Diagnostic::at(
            self.file, self.text, span.start, key, message,
        ));
    }

    fn type_err(&mut self, v: &Val<'_>, key: &str, expected: &str) {
        let found = v.get_ref().type_str();
        self.err(v.span(), key, format!("expected {expected}, found {found}"));
    }

    /// Reports every key of `table` not in `known`. `section` names the table for messages
    /// (empty for the top level); `prefix` is the dotted path of the table's keys.
    fn unknown_keys(&mut self, table: &DeTable<'_>, prefix: &str, section: &str, known: &[&str]) {
        for (k, _) in table.iter() {
            let name: &str = k.get_ref();
            if known.contains(&name) {
                continue;
            }
            let path = join(prefix, name);
            let place = if section.is_empty() {
                String::new()
            } else {
                format!(" in [{section}]")
            };
            let hint = if let Some(best) = closest(name, known) {
                format!("; did you mean `{best}`?")
            } else if section.is_empty() {
                match SECTIONS.iter().find(|(_, keys)| keys.contains(&name)) {
                    Some((sec, _)) => format!("; it belongs in the [{sec}] table"),
                    None => String::new(),
                }
            } else if TOP_KEYS.contains(&name) {
                "; top-level keys must come before the first [table] header".to_string()
            } else {
                String::new()
            };
            self.err(
                k.span(),
                &path,
                format!("unknown key `{name}`{place}{hint}"),
            );
        }
    }

    fn string<'v>(&mut self, v: &'v Val<'_>, key: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => {
                if s.contains('\0') {
                    self.err(v.span(), key, "must not contain a NUL character");
                    None
                } else {
                    Some(s.as_ref())
                }
            }
            _ => {
                self.type_err(v, key, "a string");
                None
            }
        }
    }

    fn nonempty_string<'v>(&mut self, v: &'v Val<'_>, key: &str) -> Option<&'v str> {
        let s = self.string(v, key)?;
        if s.is_empty() {
            self.err(v.span(), key, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn boolean(&mut self, v: &Val<'_>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_err(v, key, "a boolean (true or false)");
                None
            }
        }
    }

    /// An integer value, or None (with a diagnostic) for other types or out-of-range integers.
    fn integer(&mut self, v: &Val<'_>, key: &str) -> Option<i128> {
        match v.get_ref() {
            DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(v.span(), key, "integer is out of range");
                    None
                }
            },
            _ => {
                self.type_err(v, key, "an integer");
                None
            }
        }
    }

    fn int_in(&mut self, v: &Val<'_>, key: &str, min: i128, max: i128) -> Option<i128> {
        let n = self.integer(v, key)?;
        if n < min || n > max {
            let msg = if max == i128::from(u64::MAX) || max == i128::from(u32::MAX) {
                format!("must be at least {min}, got {n}")
            } else {
                format!("must be between {min} and {max}, got {n}")
            };
            self.err(v.span(), key, msg);
            return None;
        }
        Some(n)
    }

    fn table<'v, 'i>(&mut self, v: &'v Val<'i>, key: &str) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.type_err(v, key, "a table");
                None
            }
        }
    }

    fn array<'v, 'i>(&mut self, v: &'v Val<'i>, key: &str) -> Option<&'v [Val<'i>]> {
        match v.get_ref() {
            DeValue::Array(a) => Some(a),
            _ => {
                self.type_err(v, key, "an array");
                None
            }
        }
    }

    /// An array of strings; every element is checked.
    fn string_array(&mut self, v: &Val<'_>, key: &str) -> Option<Vec<String>> {
        let items = self.array(v, key)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &format!("{key}[{i}]")) {
                Some(s) => out.push(s.to_string()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn duration(&mut self, v: &Val<'_>, key: &str) -> Option<Duration> {
        let s = match v.get_ref() {
            DeValue::String(s) => s,
            _ => {
                self.type_err(v, key, "a duration string such as \"10s\" or \"250ms\"");
                return None;
            }
        };
        match units::parse_duration(s) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.err(v.span(), key, msg);
                None
            }
        }
    }

    /// Runs a string parser on a string value, reporting its error at the value.
    fn parsed<T>(
        &mut self,
        v: &Val<'_>,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.string(v, key)?;
        match f(s) {
            Ok(t) => Some(t),
            Err(msg) => {
                self.err(v.span(), key, msg);
                None
            }
        }
    }

    fn spec(
        &mut self,
        doc: &DeTable<'_>,
        name: &str,
        name_ok: bool,
        ctx: &ValidationContext,
    ) -> ValidatedSpec {
        self.unknown_keys(doc, "", "", TOP_KEYS);

        let build = doc.get("build").and_then(|v| self.build(v));
        let image = match (doc.get("image"), &build) {
            (Some(v), Some(_)) => {
                self.err(v.span(), "image", "set either `image` or `build`, not both");
                String::new()
            }
            (None, Some(_)) => {
                format!("localhost/berth-build/{}:latest", name.to_ascii_lowercase())
            }
            (Some(v), None) => self
                .nonempty_string(v, "image")
                .and_then(|s| match crate::image::ImageRef::parse(s) {
                    Ok(_) => Some(s.to_string()),
                    Err(msg) => {
                        self.err(v.span(), "image", format!("invalid image reference: {msg}"));
                        None
                    }
                })
                .unwrap_or_default(),
            // A `build` with errors has said so already.
            (None, None) if doc.get("build").is_some() => String::new(),
            (None, None) => {
                self.diags.push(Diagnostic {
                    key: Some("image".into()),
                    ..Diagnostic::whole_file(self.file, "missing required key `image` (or `build`)")
                });
                String::new()
            }
        };

        let command = doc.get("command").and_then(|v| self.argv(v, "command"));
        let entrypoint = doc
            .get("entrypoint")
            .and_then(|v| self.argv(v, "entrypoint"));
        let env = doc.get("env").map(|v| self.env(v)).unwrap_or_default();

        let workdir = doc.get("workdir").and_then(|v| {
            let s = self.string(v, "workdir")?;
            if !s.starts_with('/') {
                self.err(
                    v.span(),
                    "workdir",
                    format!("must be an absolute path, got {s:?}"),
                );
                return None;
            }
            Some(s.to_string())
        });

        let user = doc.get("user").and_then(|v| {
            let s = self.nonempty_string(v, "user")?;
            match check_user(s) {
                Ok(()) => Some(s.to_string()),
                Err(msg) => {
                    self.err(v.span(), "user", msg);
                    None
                }
            }
        });

        let hostname = match doc.get("hostname") {
            Some(v) => self
                .parsed(v, "hostname", |s| {
                    units::check_hostname(s).map(|()| s.to_string())
                })
                .unwrap_or_default(),
            None => {
                // The name allows '_' where a hostname does not.
                let derived = name.replace('_', "-");
                if name_ok {
                    if let Err(msg) = units::check_hostname(&derived) {
                        self.diags.push(Diagnostic::whole_file(
                            self.file,
                            format!(
                                "the container name cannot be used as the default hostname \
                                 ({msg}); set `hostname`"
                            ),
                        ));
                    }
                }
                derived
            }
        };

        let readonly_rootfs = doc
            .get("readonly_rootfs")
            .and_then(|v| self.boolean(v, "readonly_rootfs"))
            .unwrap_or(false);

        let stop_signal = doc
            .get("stop_signal")
            .and_then(|v| match v.get_ref() {
                DeValue::Integer(_) => {
                    let n = self.integer(v, "stop_signal")?;
                    match units::signal_number(n) {
                        Ok(sig) => Some(sig),
                        Err(msg) => {
                            self.err(v.span(), "stop_signal", msg);
                            None
                        }
                    }
                }
                DeValue::String(_) => self.parsed(v, "stop_signal", units::parse_signal),
                _ => {
                    self.type_err(
                        v,
                        "stop_signal",
                        "a signal name such as \"SIGTERM\" or a number",
                    );
                    None
                }
            })
            .unwrap_or(DEFAULT_STOP_SIGNAL);

        let stop_timeout = doc
            .get("stop_timeout")
            .and_then(|v| {
                let d = self.duration(v, "stop_timeout")?;
                if d > MAX_STOP_TIMEOUT {
                    self.err(
                        v.span(),
                        "stop_timeout",
                        format!(
                            "{} is longer than the {}s allowed",
                            humantime::format_duration(d),
                            MAX_STOP_TIMEOUT.as_secs()
                        ),
                    );
                    return None;
                }
                Some(d)
            })
            .unwrap_or(DEFAULT_STOP_TIMEOUT);

        let cap_add = doc
            .get("cap_add")
            .map(|v| self.caps(v, "cap_add"))
            .unwrap_or_default();
        let cap_drop = doc
            .get("cap_drop")
            .map(|v| self.caps(v, "cap_drop"))
            .unwrap_or_default();

        let restart = self.restart(doc.get("restart"));
        let resources = doc
            .get("resources")
            .map(|v| self.resources(v))
            .unwrap_or_default();
        let network = self.network(doc.get("network"), ctx);
        let mounts = doc
            .get("mounts")
            .map(|v| self.mounts(v))
            .unwrap_or_default();
        // Without [health], a built image's HEALTHCHECK is the probe.
        let health = match doc.get("health") {
            Some(v) => self.health(v),
            None => build.as_ref().and_then(|b| self.build_health(b)),
        };
        let depends_on = doc
            .get("depends_on")
            .map(|v| self.depends_on(v, name))
            .unwrap_or_default();
        let update = doc
            .get("update")
            .map(|v| self.update(v, &network, &image, build.is_some()))
            .unwrap_or_default();

        ValidatedSpec {
            name: name.to_string(),
            file: self.file.to_path_buf(),
            image,
            command,
            entrypoint,
            env,
            workdir,
            user,
            hostname,
            readonly_rootfs,
            stop_signal,
            stop_timeout,
            cap_add,
            cap_drop,
            restart,
            resources,
            network,
            mounts,
            health,
            depends_on,
            update,
            build,
        }
    }

    /// The probe a build's Containerfile sets with HEALTHCHECK (Docker's defaults: every
    /// 30s, 30s timeout, 3 retries; unhealthy is only reported, as Docker does).
    fn build_health(&mut self, b: &BuildSpec) -> Option<HealthSpec> {
        use crate::build::containerfile::{self, CommandForm};
        let text = read_capped(&b.file).ok()?;
        let all = containerfile::parse(&text).ok()?;
        let h = containerfile::final_healthcheck(&all)??;
        let command = match h.command {
            CommandForm::Shell(s) => vec!["/bin/sh".to_string(), "-c".to_string(), s],
            CommandForm::Exec(v) => v,
        };
        if command.is_empty() {
            return None;
        }
        Some(HealthSpec {
            probe: Probe::Exec { command },
            interval: h.interval.unwrap_or(Duration::from_secs(30)),
            timeout: h.timeout.unwrap_or(Duration::from_secs(30)),
            retries: h.retries.unwrap_or(3),
            start_period: h.start_period.unwrap_or_default(),
            on_unhealthy: OnUnhealthy::None,
        })
    }

    /// `build = { context = "DIR", file = "Containerfile", args = { K = "V" } }`.
    fn build(&mut self, v: &Val<'_>) -> Option<BuildSpec> {
        let table = self.table(v, "build")?;
        self.unknown_keys(table, "build", "build", BUILD_KEYS);
        let base = self.file.parent().unwrap_or(Path::new("."));
        let Some(c) = table.get("context") else {
            self.err(
                v.span(),
                "build",
                "needs `context`, the dir the build reads from",
            );
            return None;
        };
        let context = base.join(self.nonempty_string(c, "build.context")?);
        if !context.is_dir() {
            self.err(
                c.span(),
                "build.context",
                format!("{} is not a directory", context.display()),
            );
            return None;
        }
        let file = match table.get("file") {
            Some(f) => {
                let path = context.join(self.nonempty_string(f, "build.file")?);
                if !path.is_file() {
                    self.err(
                        f.span(),
                        "build.file",
                        format!("{} is not a file", path.display()),
                    );
                    return None;
                }
                path
            }
            None => match ["Containerfile", "Dockerfile"]
                .iter()
                .map(|n| context.join(n))
                .find(|p| p.is_file())
            {
                Some(p) => p,
                None => {
                    self.err(
                        c.span(),
                        "build.context",
                        format!("{} has no Containerfile or Dockerfile", context.display()),
                    );
                    return None;
                }
            },
        };
        // The Containerfile's own errors, each at its line, so `validate` finds them too.
        if let Ok(text) = read_capped(&file) {
            if let Err(errors) = crate::build::containerfile::parse(&text) {
                for e in errors {
                    let msg = format!("{}:{}: {}", file.display(), e.line, e.message);
                    self.err(v.span(), "build", msg);
                }
                return None;
            }
        }
        let mut args = BTreeMap::new();
        if let Some(a) = table.get("args") {
            if let Some(t) = self.table(a, "build.args") {
                for (k, val) in t.iter() {
                    let key = format!("build.args.{}", k.get_ref());
                    if let Some(s) = self.string(val, &key) {
                        args.insert(k.get_ref().to_string(), s.to_string());
                    }
                }
            }
        }
        Some(BuildSpec {
            context,
            file,
            args,
        })
    }

    /// `[update]`: order, check, healthy_for, rollback.
    fn update(
        &mut self,
        v: &Val<'_>,
        network: &NetworkSpec,
        image: &str,
        built: bool,
    ) -> UpdateSpec {
        let mut spec = UpdateSpec::default();
        let Some(table) = self.table(v, "update") else {
            return spec;
        };
        self.unknown_keys(table, "update", "update", UPDATE_KEYS);
        if let Some(o) = table.get("order") {
            if let Some(order) = self.parsed(o, "update.order", |s| match s {
                "stop-first" => Ok(UpdateOrder::StopFirst),
                "start-first" => Ok(UpdateOrder::StartFirst),
                _ => Err(format!(
                    "unknown order {s:?} (use \"stop-first\" or \"start-first\")"
                )),
            }) {
                if order == UpdateOrder::StartFirst
                    && (network.ip.is_some() || !network.ports.is_empty())
                {
                    self.err(
                        o.span(),
                        "update.order",
                        "start-first runs two versions at once, which a static network.ip or \
                         published ports do not allow",
                    );
                }
                spec.order = order;
            }
        }
        if let Some(d) = table.get("healthy_for") {
            if let Some(d) = self.duration(d, "update.healthy_for") {
                spec.healthy_for = d;
            }
        }
        if let Some(b) = table.get("rollback") {
            if let Some(b) = self.boolean(b, "update.rollback") {
                spec.rollback = b;
            }
        }
        if let Some(c) = table.get("check") {
            if let Some(every) = self.duration(c, "update.check") {
                match check_checkable(image, every, built) {
                    Ok(()) => spec.check = Some(every),
                    Err(msg) => self.err(c.span(), "update.check", msg),
                }
            }
        }
        spec
    }

    /// `depends_on = ["db"]` (each "started") or `depends_on = { db = "healthy" }`.
    fn depends_on(&mut self, v: &Val<'_>, own: &str) -> BTreeMap<String, Condition> {
        let mut out = BTreeMap::new();
        let mut add = |c: &mut Self, dep: &str, span: Range<usize>, key: &str, cond| {
            if let Err(msg) = units::check_name(dep) {
                c.err(span, key, format!("{dep:?} is not a container name: {msg}"));
            } else if dep == own {
                c.err(span, key, "a container cannot depend on itself");
            } else {
                out.insert(dep.to_string(), cond);
            }
        };
        match v.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let key = format!("depends_on[{i}]");
                    if let Some(dep) = self.string(item, &key) {
                        add(self, dep, item.span(), &key, Condition::Started);
                    }
                }
            }
            DeValue::Table(table) => {
                for (k, cv) in table.iter() {
                    let key = format!("depends_on.{}", k.get_ref());
                    let cond = self.parsed(cv, &key, |s| match s {
                        "started" => Ok(Condition::Started),
                        "healthy" => Ok(Condition::Healthy),
                        "completed" => Ok(Condition::Completed),
                        _ => Err(format!(
                            "unknown condition {s:?} (use \"started\", \"healthy\" or \"completed\")"
                        )),
                    });
                    if let Some(cond) = cond {
                        add(self, k.get_ref(), k.span(), &key, cond);
                    }
                }
            }
            _ => self.type_err(
                v,
                "depends_on",
                "a list of container names or a table of name = \"started\" | \"healthy\" | \"completed\"",
            ),
        }
        out
    }

    /// `[health]`: exactly one of `http`, `tcp`, `exec`, and the timing keys.
    fn health(&mut self, v: &Val<'_>) -> Option<HealthSpec> {
        let table = self.table(v, "health")?;
        self.unknown_keys(table, "health", "health", HEALTH_KEYS);
        let kinds: Vec<&str> = ["http", "tcp", "exec"]
            .into_iter()
            .filter(|k| table.contains_key(*k))
            .collect();
        let probe = match kinds.as_slice() {
            [] => {
                self.err(
                    v.span(),
                    "health",
                    "needs one probe: `http = { port, path }`, `tcp = { port }` or `exec = [...]`",
                );
                None
            }
            [kind] => {
                let pv = &table[*kind];
                match *kind {
                    "exec" => self
                        .argv(pv, "health.exec")
                        .map(|command| Probe::Exec { command }),
                    "tcp" => {
                        let t = self.table(pv, "health.tcp")?;
                        self.unknown_keys(t, "health.tcp", "health.tcp", TCP_KEYS);
                        self.probe_port(t, pv, "health.tcp")
                            .map(|port| Probe::Tcp { port })
                    }
                    _ => {
                        let t = self.table(pv, "health.http")?;
                        self.unknown_keys(t, "health.http", "health.http", HTTP_KEYS);
                        let port = self.probe_port(t, pv, "health.http");
                        let path = match t.get("path") {
                            None => Some("/".to_string()),
                            Some(p) => self.string(p, "health.http.path").and_then(|s| {
                                if s.starts_with('/') && !s.contains(char::is_whitespace) {
                                    Some(s.to_string())
                                } else {
                                    self.err(
                                        p.span(),
                                        "health.http.path",
                                        format!(
                                            "must start with '/' and have no spaces, got {s:?}"
                                        ),
                                    );
                                    None
                                }
                            }),
                        };
                        Some(Probe::Http {
                            port: port?,
                            path: path?,
                        })
                    }
                }
            }
            [_, second, ..] => {
                self.err(
                    table[*second].span(),
                    &format!("health.{second}"),
                    format!(
                        "only one probe kind per container, got {}",
                        kinds.join(" and ")
                    ),
                );
                None
            }
        };
        let positive = |p: &mut Self, key: &str, default: Duration| match table.get(key) {
            None => Some(default),
            Some(d) => {
                let full = format!("health.{key}");
                let d2 = p.duration(d, &full)?;
                if d2.is_zero() {
                    p.err(d.span(), &full, "must be greater than 0");
                    return None;
                }
                Some(d2)
            }
        };
        let interval = positive(self, "interval", DEFAULT_HEALTH_INTERVAL);
        let timeout = positive(self, "timeout", DEFAULT_HEALTH_TIMEOUT);
        let start_period = match table.get("start_period") {
            None => Some(Duration::ZERO),
            Some(d) => self.duration(d, "health.start_period"),
        };
        let retries = match table.get("retries") {
            None => Some(DEFAULT_HEALTH_RETRIES),
            Some(r) => self.int_in(r, "health.retries", 1, 1000).map(|n| n as u32),
        };
        let on_unhealthy = match table.get("on_unhealthy") {
            None => Some(OnUnhealthy::Restart),
            Some(o) => self.parsed(o, "health.on_unhealthy", |s| match s {
                "restart" => Ok(OnUnhealthy::Restart),
                "stop" => Ok(OnUnhealthy::Stop),
                "none" => Ok(OnUnhealthy::None),
                _ => Err(format!(
                    "unknown action {s:?} (use \"restart\", \"stop\" or \"none\")"
                )),
            }),
        };
        Some(HealthSpec {
            probe: probe?,
            interval: interval?,
            timeout: timeout?,
            retries: retries?,
            start_period: start_period?,
            on_unhealthy: on_unhealthy?,
        })
    }

    /// The required `port` of a probe table, 1..=65535.
    fn probe_port(&mut self, t: &DeTable<'_>, tv: &Val<'_>, key: &str) -> Option<u16> {
        match t.get("port") {
            Some(p) => self
                .int_in(p, &format!("{key}.port"), 1, 65535)
                .map(|n| n as u16),
            None => {
                self.err(
                    tv.span(),
                    &format!("{key}.port"),
                    "missing required key `port`",
                );
                None
            }
        }
    }

    /// `command` / `entrypoint`: a non-empty array of strings whose first element is non-empty.
    fn argv(&mut self, v: &Val<'_>, key: &str) -> Option<Vec<String>> {
        let argv = self.string_array(v, key)?;
        match argv.first() {
            None => {
                self.err(
                    v.span(),
                    key,
                    "must not be an empty array (omit it to use the image's)",
                );
                None
            }
            Some(first) if first.is_empty() => {
                self.err(
                    v.span(),
                    key,
                    "the program (first element) must not be empty",
                );
                None
            }
            Some(_) => Some(argv),
        }
    }

    fn env(&mut self, v: &Val<'_>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(table) = self.table(v, "env") else {
            return out;
        };
        for (k, val) in table.iter() {
            let name: &str = k.get_ref();
            let path = format!("env.{name}");
            if name.is_empty()
                || name.contains('=')
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                self.err(
                    k.span(),
                    &path,
                    format!("invalid environment variable name {name:?}: must be non-empty and contain no '=', whitespace or control characters"),
                );
                continue;
            }
            if let Some(s) = self.string(val, &path) {
                out.insert(name.to_string(), s.to_string());
            }
        }
        out
    }

    fn caps(&mut self, v: &Val<'_>, key: &str) -> Vec<String> {
        let Some(items) = self.array(v, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{key}[{i}]");
            if let Some(cap) = self.parsed(item, &path, units::parse_capability) {
                if !out.contains(&cap) {
                    out.push(cap);
                }
            }
        }
        out
    }

    fn restart(&mut self, v: Option<&Val<'_>>) -> RestartSpec {
        let mut spec = RestartSpec {
            policy: RestartPolicy::Always,
            max_retries: 0,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            backoff_reset_after: DEFAULT_BACKOFF_RESET_AFTER,
        };
        let Some(table) = v.and_then(|v| self.table(v, "restart")) else {
            return spec;
        };
        self.unknown_keys(table, "restart", "restart", RESTART_KEYS);
        if let Some(v) = table.get("policy") {
            if let Some(p) = self.parsed(v, "restart.policy", |s| match s {
                "always" => Ok(RestartPolicy::Always),
                "on-failure" => Ok(RestartPolicy::OnFailure),
                "never" => Ok(RestartPolicy::Never),
                _ => Err(format!(
                    "unknown restart policy {s:?} (use \"always\", \"on-failure\" or \"never\")"
                )),
            }) {
                spec.policy = p;
            }
        }
        if let Some(v) = table.get("max_retries") {
            if let Some(n) = self.int_in(v, "restart.max_retries", 0, i128::from(u32::MAX)) {
                spec.max_retries = n as u32;
            }
        }
        let Some(bv) = table.get("backoff") else {
            return spec;
        };
        let Some(backoff) = self.table(bv, "restart.backoff") else {
            return spec;
        };
        self.unknown_keys(backoff, "restart.backoff", "restart.backoff", BACKOFF_KEYS);
        let initial = backoff.get("initial");
        if let Some(v) = initial {
            // 0s is allowed: restart at once, every time (the user's explicit choice).
            if let Some(d) = self.duration(v, "restart.backoff.initial") {
                spec.backoff_initial = d;
            }
        }
        if let Some(v) = backoff.get("max") {
            if let Some(d) = self.duration(v, "restart.backoff.max") {
                spec.backoff_max = d;
            }
        }
        if let Some(v) = backoff.get("reset_after") {
            if let Some(d) = self.duration(v, "restart.backoff.reset_after") {
                spec.backoff_reset_after = d;
            }
        }
        if spec.backoff_initial > spec.backoff_max {
            let (span, key) = match (initial, backoff.get("max")) {
                (Some(v), _) => (v.span(), "restart.backoff.initial"),
                (None, Some(v)) => (v.span(), "restart.backoff.max"),
                (None, None) => (bv.span(), "restart.backoff"),
            };
            self.err(
                span,
                key,
                format!(
                    "backoff initial ({}) must not be greater than max ({})",
                    humantime::format_duration(spec.backoff_initial),
                    humantime::format_duration(spec.backoff_max)
                ),
            );
        }
        spec
    }

    fn resources(&mut self, v: &Val<'_>) -> Resources {
        let mut r = Resources::default();
        let Some(table) = self.table(v, "resources") else {
            return r;
        };
        self.unknown_keys(table, "resources", "resources", RESOURCES_KEYS);

        if let Some(v) = table.get("memory") {
            const KEY: &str = "resources.memory";
            let written = match v.get_ref() {
                DeValue::String(s) => Some(format!("{s:?}")),
                _ => None,
            };
            let bytes = match v.get_ref() {
                DeValue::Integer(_) => self.integer(v, KEY).and_then(|n| {
                    u64::try_from(n).ok().or_else(|| {
                        self.err(v.span(), KEY, format!("invalid size {n}"));
                        None
                    })
                }),
                DeValue::String(_) => self.parsed(v, KEY, units::parse_size),
                _ => {
                    self.type_err(v, KEY, "a size such as \"256M\" or a number of bytes");
                    None
                }
            };
            if let Some(bytes) = bytes {
                if bytes < MIN_MEMORY {
                    self.err(
                        v.span(),
                        KEY,
                        match written {
                            Some(w) => format!(
                                "must be at least 4M ({MIN_MEMORY} bytes), got {w} ({bytes} bytes)"
                            ),
                            None => format!(
                                "must be at least 4M ({MIN_MEMORY} bytes), got {bytes} bytes"
                            ),
                        },
                    );
                } else {
                    r.memory = Some(bytes);
                }
            }
        }

        if let Some(v) = table.get("cpus") {
            const KEY: &str = "resources.cpus";
            let cpus = match v.get_ref() {
                DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
                DeValue::Integer(_) => self.integer(v, KEY).map(|n| n as f64),
                _ => {
                    self.type_err(v, KEY, "a number of CPUs such as 0.5 or 2");
                    None
                }
            };
            if let Some(c) = cpus {
                if c.is_finite() && c > 0.0 && c <= MAX_CPUS {
                    r.cpus = Some(c);
                } else {
                    self.err(
                        v.span(),
                        KEY,
                        format!("must be greater than 0 and at most {MAX_CPUS}, got {c}"),
                    );
                }
            }
        }

        if let Some(v) = table.get("cpu_weight") {
            r.cpu_weight = self
                .int_in(v, "resources.cpu_weight", 1, 10000)
                .map(|n| n as u64);
        }
        if let Some(v) = table.get("cpuset") {
            r.cpuset = self.parsed(v, "resources.cpuset", |s| {
                let wanted = units::check_cpuset(s)?;
                // The host's online CPUs, when it says (else the start reports it).
                let online =
                    std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
                let online = online.trim();
                if let Ok(cpus) = units::check_cpuset(online) {
                    if let Some(cpu) = units::cpu_not_online(&wanted, &cpus) {
                        return Err(format!(
                            "CPU {cpu} is not online on this host (online: {online})"
                        ));
                    }
                }
                Ok(s.to_string())
            });
        }
        if let Some(v) = table.get("pids") {
            r.pids = self
                .int_in(v, "resources.pids", 1, PID_MAX_LIMIT)
                .map(|n| n as u64);
        }
        if let Some(io) = table.get("io").and_then(|v| self.table(v, "resources.io")) {
            self.unknown_keys(io, "resources.io", "resources.io", IO_KEYS);
            if let Some(v) = io.get("weight") {
                r.io_weight = self
                    .int_in(v, "resources.io.weight", 1, 10000)
                    .map(|n| n as u64);
            }
            r.io_devices = self.io_devices(io);
        }
        r
    }

    /// `read_bps`, `write_bps`, `read_iops` and `write_iops` of `[resources] io`: tables from a
    /// block device's path to a rate, merged per device.
    fn io_devices(&mut self, io: &DeTable<'_>) -> Vec<IoDeviceLimit> {
        let mut devices: BTreeMap<PathBuf, IoDeviceLimit> = BTreeMap::new();
        for field in ["read_bps", "write_bps", "read_iops", "write_iops"] {
            let Some(v) = io.get(field) else {
                continue;
            };
            let key = format!("resources.io.{field}");
            let Some(table) = self.table(v, &key) else {
                continue;
            };
            for (dev, rate) in table.iter() {
                let name: &str = dev.get_ref();
                let dkey = format!("{key}.{name:?}");
                let device = self.block_device(dev.span(), &dkey, name);
                let rate = if field.ends_with("_bps") {
                    self.size_or_bytes(rate, &dkey)
                } else {
                    self.int_in(rate, &dkey, 1, i128::from(u64::MAX))
                        .map(|n| n as u64)
                };
                let (Some(device), Some(rate)) = (device, rate) else {
                    continue;
                };
                let limit = devices.entry(device.clone()).or_insert(IoDeviceLimit {
                    device,
                    ..Default::default()
                });
                let slot = match field {
                    "read_bps" => &mut limit.read_bps,
                    "write_bps" => &mut limit.write_bps,
                    "read_iops" => &mut limit.read_iops,
                    _ => &mut limit.write_iops,
                };
                *slot = Some(rate);
            }
        }
        devices.into_values().collect()
    }

    /// A block device path of this host, or None (with a diagnostic at `span`).
    fn block_device(&mut self, span: Range<usize>, key: &str, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::FileTypeExt;
        let path = Path::new(name);
        if !path.is_absolute() {
            self.err(
                span,
                key,
                format!(
                    "{name:?}: a block device is named by its absolute path, such as \"/dev/sda\""
                ),
            );
            return None;
        }
        match std::fs::metadata(path) {
            Ok(m) if m.file_type().is_block_device() => Some(path.to_path_buf()),
            Ok(_) => {
                self.err(span, key, format!("{name} is not a block device"));
                None
            }
            Err(e) => {
                self.err(
                    span,
                    key,
                    format!("{name}: no such block device on this host ({e})"),
                );
                None
            }
        }
    }

    /// A positive size: a string such as "20M" or a number of bytes.
    fn size_or_bytes(&mut self, v: &Val<'_>, key: &str) -> Option<u64> {
        let bytes = match v.get_ref() {
            DeValue::Integer(_) => self
                .int_in(v, key, 1, i128::from(u64::MAX))
                .map(|n| n as u64),
            DeValue::String(_) => self.parsed(v, key, units::parse_size),
            _ => {
                self.type_err(v, key, "a size such as \"20M\" or a number of bytes");
                return None;
            }
        };
        match bytes {
            Some(0) => {
                self.err(v.span(), key, "must be greater than 0");
                None
            }
            b => b,
        }
    }

    fn network(&mut self, v: Option<&Val<'_>>, ctx: &ValidationContext) -> NetworkSpec {
        let mut n = NetworkSpec {
            mode: NetworkMode::Bridge,
            ip: None,
            ports: Vec::new(),
            egress: None,
            ingress: None,
        };
        let Some(table) = v.and_then(|v| self.table(v, "network")) else {
            return n;
        };
        self.unknown_keys(table, "network", "network", NETWORK_KEYS);

        if let Some(v) = table.get("mode") {
            if let Some(mode) = self.parsed(v, "network.mode", |s| match s {
                "bridge" => Ok(NetworkMode::Bridge),
                "host" => Ok(NetworkMode::Host),
                "none" => Ok(NetworkMode::None),
                _ => Err(format!(
                    "unknown network mode {s:?} (use \"bridge\", \"host\" or \"none\")"
                )),
            }) {
                n.mode = mode;
            }
        }

        // Keys that make no sense in the chosen mode.
        let forbidden: &[&str] = match n.mode {
            NetworkMode::Bridge => &[],
            NetworkMode::Host => &["ip", "ports", "egress", "ingress"],
            NetworkMode::None => &["ip", "ports"],
        };
        let mode_name = match n.mode {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        };
        for key in forbidden {
            if let Some((k, _)) = table.get_key_value(*key) {
                self.err(
                    k.span(),
                    &format!("network.{key}"),
                    format!("cannot be used with mode = \"{mode_name}\""),
                );
            }
        }

        if let Some(v) = table.get("ip") {
            const KEY: &str = "network.ip";
            if let Some(ip) = self.parsed(v, KEY, |s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|_| format!("invalid IPv4 address {s:?}"))
            }) {
                match check_ip_in_subnet(ip, ctx.subnet) {
                    Ok(()) => n.ip = Some(ip),
                    Err(msg) => self.err(v.span(), KEY, msg),
                }
            }
        }

        if let Some(v) = table.get("ports") {
            if let Some(items) = self.array(v, "network.ports") {
                for (i, item) in items.iter().enumerate() {
                    let key = format!("network.ports[{i}]");
                    let Some(ports) = self.parsed(item, &key, units::parse_ports) else {
                        continue;
                    };
                    for p in ports {
                        if n.ports.iter().any(|q| q.overlaps(&p)) {
                            self.err(
                                item.span(),
                                &key,
                                format!("host port {} is mapped more than once", p.host_side()),
                            );
                            break;
                        }
                        n.ports.push(p);
                    }
                }
            }
        }

        for key in ["egress", "ingress"] {
            let Some(v) = table.get(key) else { continue };
            let path = format!("network.{key}");
            let rate = match v.get_ref() {
                DeValue::Integer(_) => self.integer(v, &path).and_then(|b| {
                    if b > 0 && b <= i128::from(u64::MAX) {
                        Some(b as u64)
                    } else {
                        self.err(v.span(), &path, format!("must be greater than 0, got {b}"));
                        None
                    }
                }),
                DeValue::String(_) => self.parsed(v, &path, units::parse_rate),
                _ => {
                    self.type_err(v, &path, "a rate such as \"10mbit\"");
                    None
                }
            };
            if key == "egress" {
                n.egress = rate;
            } else {
                n.ingress = rate;
            }
        }
        n
    }

    fn mounts(&mut self, v: &Val<'_>) -> Vec<MountSpec> {
        let mut out = Vec::new();
        let items = match v.get_ref() {
            DeValue::Array(a) => a,
            _ => {
                self.type_err(v, "mounts", "an array of tables ([[mounts]])");
                return out;
            }
        };
        let mut targets = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("mounts[{i}]");
            let Some(table) = self.table(item, &prefix) else {
                continue;
            };
            self.unknown_keys(table, &prefix, "[mounts]", MOUNT_KEYS);

            let source = match table.get("source") {
                Some(v) => {
                    let key = format!("{prefix}.source");
                    self.parsed(v, &key, |s| {
                        if s.starts_with('/') {
                            Ok(Path::new(s).to_path_buf())
                        } else {
                            Err(format!("must be an absolute host path, got {s:?}"))
                        }
                    })
                }
                None => {
                    self.err(item.span(), &prefix, "missing required key `source`");
                    None
                }
            };
            let target = match table.get("target") {
                Some(v) => {
                    let key = format!("{prefix}.target");
                    let t = self.parsed(v, &key, normalize_target);
                    if let Some(t) = &t {
                        if !targets.insert(t.clone()) {
                            self.err(
                                v.span(),
                                &key,
                                format!("{t:?} is already the target of another mount"),
                            );
                        }
                    }
                    t
                }
                None => {
                    self.err(item.span(), &prefix, "missing required key `target`");
                    None
                }
            };
            let readonly = table
                .get("readonly")
                .and_then(|v| self.boolean(v, &format!("{prefix}.readonly")))
                .unwrap_or(false);
            if let (Some(source), Some(target)) = (source, target) {
                out.push(MountSpec {
                    source,
                    target,
                    readonly,
                });
            }
        }
        out
    }
}

/// A mount target: absolute, without `..`, not the root itself. Returns it normalized
/// (`/var//www/` gives `/var/www`).
fn normalize_target(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "must be an absolute path inside the container, got {s:?}"
        ));
    }
    let mut parts = Vec::new();
    for c in Path::new(s).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                return Err(format!("must not contain '..', got {s:?}"));
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if parts.is_empty() {
        return Err("cannot mount over the container's root \"/\"".into());
    }
    Ok(format!("/{}", parts.join("/")))
}

/// `update.check` asks a registry what a tag names now: only a registry image by tag has
/// one, and asking more often than every 10 s is a mistake.
fn check_checkable(image: &str, every: Duration, built: bool) -> Result<(), String> {
    use crate::image::ImageRef;
    if built {
        // How often the build context is looked at for changes.
        return if every < Duration::from_secs(1) {
            Err("must be at least 1s (each check hashes the build context)".into())
        } else {
            Ok(())
        };
    }
    match ImageRef::parse(image) {
        // The image's own error is reported at `image`.
        Err(_) => Ok(()),
        Ok(ImageRef::Registry(r)) if r.digest.is_some() => Err(format!(
            "{image:?} is pinned by digest: there is no tag to check"
        )),
        Ok(ImageRef::Registry(_)) if every < Duration::from_secs(10) => {
            Err("must be at least 10s (each check asks the registry)".into())
        }
        Ok(ImageRef::Registry(_)) => Ok(()),
        Ok(_) => Err(format!(
            "{image:?} is not a registry image: only a registry tag can move"
        )),
    }
}

/// `uid[:gid]` or `name[:group]`: one or two non-empty parts, no whitespace, ids that fit a
/// uid_t other than (uid_t)-1.
fn check_user(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "invalid user {s:?}: expected \"uid[:gid]\" or \"name[:group]\""
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid user {s:?}: must not contain whitespace"));
    }
    for p in parts {
        let digits = p.strip_prefix('-').unwrap_or(p);
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // u32::MAX is (uid_t)-1, which setresuid takes as "unchanged".
        match p.parse::<u32>() {
            Ok(id) if id < u32::MAX => {}
            _ => {
                return Err(format!(
                    "invalid user {s:?}: an id must be between 0 and 4294967294"
                ))
            }
        }
    }
    Ok(())
}

/// A static address must be a host address of the bridge subnet other than the gateway (the first
/// host).
pub fn check_ip_in_subnet(ip: Ipv4Addr, subnet: (Ipv4Addr, u8)) -> Result<(), String> {
    let (net, prefix) = subnet;
    let prefix = prefix.min(32);
    let mask: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    let network = u32::from(net) & mask;
    let broadcast = network | !mask;
    let gateway = network.wrapping_add(1);
    let addr = u32::from(ip);
    let cidr = format!("{}/{prefix}", Ipv4Addr::from(network));
    if addr & mask != network {
        return Err(format!("{ip} is outside the bridge subnet {cidr}"));
    }
    if addr == network {
        return Err(format!("{ip} is the network address of {cidr}"));
    }
    if addr == broadcast {
        return Err(format!("{ip} is the broadcast address of {cidr}"));
    }
    if addr == gateway {
        return Err(format!("{ip} is the gateway address of {cidr}"));
    }
    Ok(())
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The closest known key within a small edit distance, for "did you mean".
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let max = if name.len() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (units::edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
