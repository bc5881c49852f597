//! The JSON Schema of spec files (`docs/spec.schema.json`), for editors: taplo and Even Better
//! TOML read a file's `#:schema PATH` first line and then complete and check its keys.
//!
//! The parser (`parse.rs`) walks the TOML document itself, so that every problem gets its own
//! line, column and message; the types here describe the same format for the schema generator
//! only and are never built. A test holds them to the parser's key lists and the committed
//! schema to what they generate, so neither drifts.

// Schema-only types: described, never constructed.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::transform::{transform_subschemas, Transform};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

/// The schema of `T` as a document (draft-07, which taplo understands), without `null` for
/// optional keys: TOML has no null.
pub fn document_for<T: JsonSchema>() -> serde_json::Value {
    let generator = SchemaSettings::draft07()
        .with_transform(NoNull)
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// Drops `null` from the schemas of optional keys, which the generator adds for `Option`: TOML
/// has no null, so an editor must not offer it.
#[derive(Clone)]
struct NoNull;

impl Transform for NoNull {
    fn transform(&mut self, schema: &mut Schema) {
        transform_subschemas(self, schema);
        let Some(obj) = schema.as_object_mut() else {
            return;
        };
        if let Some(Value::Array(types)) = obj.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                obj.insert("type".into(), only);
            }
        }
        if let Some(Value::Array(enumerated)) = obj.get_mut("enum") {
            enumerated.retain(|v| !v.is_null());
        }
        if let Some(Value::Array(any)) = obj.get_mut("anyOf") {
            any.retain(|s| s.get("type").and_then(Value::as_str) != Some("null"));
            if let [only] = any.as_slice() {
                // `allOf` keeps the key's own description beside the reference (a `$ref`'s
                // siblings are ignored in draft-07).
                let only = only.clone();
                obj.remove("anyOf");
                obj.insert("allOf".into(), Value::Array(vec![only]));
            }
        }
    }
}

/// The spec file schema, as committed in `docs/spec.schema.json`.
pub fn spec_schema() -> serde_json::Value {
    document_for::<SpecFile>()
}

/// One container, named by the file's stem. Either `image` or `build` names its image.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "berth spec file",
    extend("oneOf" = [{"required": ["image"]}, {"required": ["build"]}])
)]
struct SpecFile {
    /// The image: `registry/repo:tag`, `registry/repo@sha256:...`, `oci:/dir[:tag]`,
    /// `oci-archive:/f.tar`, `docker-archive:/f.tar` or `rootfs:/dir`.
    #[schemars(length(min = 1))]
    image: Option<String>,
    /// Build the image from a Containerfile instead of naming one (docs/build.md).
    build: Option<Build>,
    /// Replaces the image's Cmd.
    command: Option<Argv>,
    /// Replaces the image's Entrypoint (and drops its Cmd).
    entrypoint: Option<Argv>,
    /// Merged over the image's Env.
    env: Option<BTreeMap<String, String>>,
    /// The working directory, created when missing.
    workdir: Option<String>,
    /// `uid[:gid]`, or names from the image's /etc/passwd and /etc/group.
    #[schemars(length(min = 1))]
    user: Option<String>,
    /// Default: the container's name.
    hostname: Option<String>,
    /// Mount the container's root read-only.
    readonly_rootfs: Option<bool>,
    /// Sent to stop the container (default SIGTERM), then SIGKILL after `stop_timeout`.
    stop_signal: Option<Signal>,
    /// How long a stop waits before SIGKILL (default 10s, at most 300s).
    stop_timeout: Option<Duration>,
    /// Capabilities on top of the default set (`NET_ADMIN` or `CAP_NET_ADMIN`).
    cap_add: Option<Vec<String>>,
    /// Capabilities taken from the default set (`ALL` drops every one).
    cap_drop: Option<Vec<String>>,
    restart: Option<Restart>,
    resources: Option<Resources>,
    network: Option<Network>,
    /// Bind mounts of host paths.
    mounts: Option<Vec<Mount>>,
    health: Option<Health>,
    /// Containers this one waits for: names (each must be running), or names with a condition.
    depends_on: Option<DependsOn>,
    update: Option<Update>,
}

/// A command line: the program and its arguments.
#[derive(JsonSchema)]
#[schemars(transparent)]
struct Argv(#[schemars(length(min = 1))] Vec<String>);

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Build {
    /// The build context, relative to the spec dir.
    #[schemars(length(min = 1))]
    context: String,
    /// The Containerfile inside the context (default `Containerfile`, else `Dockerfile`).
    #[schemars(length(min = 1))]
    file: Option<String>,
    /// Build arguments (`ARG`).
    args: Option<BTreeMap<String, String>>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Restart {
    /// Default `always`.
    policy: Option<RestartPolicy>,
    /// Restarts before giving up; 0 (the default) is unlimited.
    #[schemars(range(max = 4294967295u32))]
    max_retries: Option<u32>,
    backoff: Option<Backoff>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Exponential backoff between restarts.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Backoff {
    /// The first delay (default 100ms).
    initial: Option<Duration>,
    /// The longest delay (default 30s).
    max: Option<Duration>,
    /// A run this long resets the delay (default 60s).
    reset_after: Option<Duration>,
}

/// cgroup limits the kernel enforces.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Resources {
    /// Hard limit, at least 4M; no swap beyond it.
    memory: Option<Size>,
    /// CFS quota in CPUs, greater than 0.
    #[schemars(range(max = 1024))]
    cpus: Option<f64>,
    #[schemars(range(min = 1, max = 10000))]
    cpu_weight: Option<u32>,
    /// CPUs online on this host, such as `"0-1"` or `"0,2"`.
    cpuset: Option<String>,
    /// Most processes and threads.
    #[schemars(range(min = 1, max = 4194304))]
    pids: Option<u32>,
    io: Option<Io>,
}

/// IO weight and per block device throttles (the device by path, such as `"/dev/vda"`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Io {
    #[schemars(range(min = 1, max = 10000))]
    weight: Option<u32>,
    /// Bytes per second by device.
    read_bps: Option<BTreeMap<String, Size>>,
    /// Bytes per second by device.
    write_bps: Option<BTreeMap<String, Size>>,
    /// Operations per second by device.
    read_iops: Option<BTreeMap<String, Iops>>,
    /// Operations per second by device.
    write_iops: Option<BTreeMap<String, Iops>>,
}

#[derive(JsonSchema)]
#[schemars(transparent)]
struct Iops(#[schemars(range(min = 1))] u64);

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Network {
    /// Default `bridge`.
    mode: Option<NetworkMode>,
    /// A static address inside the bridge subnet; unset, one is leased for the name.
    #[schemars(pattern(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$"))]
    ip: Option<String>,
    /// Published ports: `"HOST:CONTAINER[/tcp|udp]"`, `"ADDR:HOST:CONTAINER"`,
    /// `"8000-8010:8000-8010"`.
    ports: Option<Vec<Port>>,
    /// Outbound rate limit.
    egress: Option<Rate>,
    /// Inbound rate limit.
    ingress: Option<Rate>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum NetworkMode {
    Bridge,
    Host,
    None,
}

#[derive(JsonSchema)]
#[schemars(transparent)]
struct Port(
    #[schemars(pattern(
        r"^([0-9]{1,3}(\.[0-9]{1,3}){3}:)?[0-9]+(-[0-9]+)?:[0-9]+(-[0-9]+)?(/(tcp|udp))?$"
    ))]
    String,
);

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Mount {
    /// An absolute host path.
    #[schemars(pattern("^/"))]
    source: String,
    /// An absolute path in the container.
    #[schemars(pattern("^/"))]
    target: String,
    readonly: Option<bool>,
}

/// One probe (`http`, `tcp` or `exec`), run by berth.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["http"]}, {"required": ["tcp"]}, {"required": ["exec"]}
]))]
struct Health {
    /// GET in the container's network namespace; 2xx/3xx is healthy.
    http: Option<HttpProbe>,
    /// A TCP connect in the container's network namespace succeeds.
    tcp: Option<TcpProbe>,
    /// Run inside the container; exit 0 is healthy.
    exec: Option<Argv>,
    /// Between the end of one probe and the next (default 10s).
    interval: Option<Duration>,
    /// A slower probe fails (default 5s).
    timeout: Option<Duration>,
    /// Consecutive failures before unhealthy (default 3).
    #[schemars(range(min = 1, max = 1000))]
    retries: Option<u32>,
    /// Failures during it do not count; the first success ends it.
    start_period: Option<Duration>,
    /// Default `restart`.
    on_unhealthy: Option<OnUnhealthy>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HttpProbe {
    #[schemars(range(min = 1, max = 65535))]
    port: u16,
    /// Default `/`.
    #[schemars(pattern(r"^/\S*$"))]
    path: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct TcpProbe {
    #[schemars(range(min = 1, max = 65535))]
    port: u16,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum OnUnhealthy {
    Restart,
    Stop,
    None,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum DependsOn {
    /// Each must be running.
    Names(Vec<String>),
    /// Each must reach its condition.
    Conditions(BTreeMap<String, Condition>),
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Condition {
    /// Its container runs.
    Started,
    /// It runs and its `[health]` probe says healthy.
    Healthy,
    /// It ran and exited with code 0.
    Completed,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Update {
    /// Default `stop-first`.
    order: Option<UpdateOrder>,
    /// Ask the registry what the tag names this often (at least 10s).
    check: Option<Duration>,
    /// A new version must run this long (and be healthy, if probed).
    healthy_for: Option<Duration>,
    /// Go back to the version before when the new one does not (default true).
    rollback: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// A signal by name (`"SIGTERM"`, `"TERM"`) or number.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Signal {
    Name(String),
    Number(#[schemars(range(min = 1, max = 64))] u8),
}

/// A humantime duration: `"250ms"`, `"10s"`, `"1m 30s"`.
pub struct Duration;

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration such as \"250ms\", \"10s\", \"1m 30s\".",
            "type": "string",
            "pattern": "^\\s*([0-9]+\\s*[a-zA-Zµ]+\\s*)+$"
        })
    }
}

/// A size: `"64K"`, `"256M"`, `"2G"` (base 1024; `MB` and `MiB` the same as `M`) or bytes.
pub struct Size;

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size such as \"64K\", \"256M\", \"2G\" (base 1024), or bytes.",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]+([kKmMgGtT]([iI]?[bB])?|[bB])?\\s*$"}
            ]
        })
    }
}

/// A bandwidth rate: `kbit`, `mbit`, `gbit` (bits) or `kbps`, `mbps`, `gbps` (bytes) per
/// second, or bits per second.
struct Rate;

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A rate such as \"10mbit\" or \"2mbps\" (bytes), or bits per second.",
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?([kKmMgGtT][iI]?)?([bB][iI][tT]|[bB][pP][sS])?\\s*$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys an object schema allows, following references.
    fn keys<'a>(doc: &'a serde_json::Value, schema: &'a serde_json::Value) -> Vec<&'a str> {
        let schema = resolve(doc, schema);
        let mut keys: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("not an object schema: {schema}"))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    fn resolve<'a>(doc: &'a serde_json::Value, s: &'a serde_json::Value) -> &'a serde_json::Value {
        if let Some(r) = s["$ref"].as_str() {
            return resolve(doc, doc.pointer(r.trim_start_matches('#')).expect(r));
        }
        match s["allOf"].as_array().map(Vec::as_slice) {
            Some([only]) => resolve(doc, only),
            _ => s,
        }
    }

    fn sorted(keys: &[&'static str]) -> Vec<&'static str> {
        let mut k = keys.to_vec();
        k.sort_unstable();
        k
    }

    #[test]
    fn the_schema_has_the_parsers_keys_at_every_level() {
        use super::super::parse as p;
        let doc = spec_schema();
        let top = &doc;
        let at = |path: &[&str]| -> Vec<&str> {
            let mut s = top;
            for k in path {
                s = resolve(&doc, &resolve(&doc, s)["properties"][*k]);
                if let Some(items) = s.get("items") {
                    s = items;
                }
            }
            keys(&doc, s)
        };
        let cases: &[(&[&str], &[&'static str])] = &[
            (&[], p::TOP_KEYS),
            (&["build"], p::BUILD_KEYS),
            (&["restart"], p::RESTART_KEYS),
            (&["restart", "backoff"], p::BACKOFF_KEYS),
            (&["resources"], p::RESOURCES_KEYS),
            (&["resources", "io"], p::IO_KEYS),
            (&["network"], p::NETWORK_KEYS),
            (&["mounts"], p::MOUNT_KEYS),
            (&["health"], p::HEALTH_KEYS),
            (&["health", "http"], p::HTTP_KEYS),
            (&["health", "tcp"], p::TCP_KEYS),
            (&["update"], p::UPDATE_KEYS),
        ];
        for (path, want) in cases {
            assert_eq!(at(path), sorted(want), "keys of [{}]", path.join("."));
        }
        // Every object refuses keys it does not list, as the parser does.
        for (name, def) in doc["definitions"].as_object().unwrap() {
            if def.get("properties").is_some() {
                assert_eq!(def["additionalProperties"], false, "{name}");
            }
        }
        assert_eq!(doc["additionalProperties"], false);
    }
}
