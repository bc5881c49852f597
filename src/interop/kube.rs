//! `berth export kube`: a validated spec as Kubernetes objects, built from k8s-openapi's typed
//! API structs: a Deployment (restart `always`) or a Pod (`on-failure`, `never`) with its
//! image, command, env, resources, probes, security settings and hostPath mounts, and a
//! Service for its published ports. Pure; every spec key that has no Kubernetes equivalent is
//! named in `unmapped`, with what was done instead.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, ExecAction, HTTPGetAction,
    HostPathVolumeSource, Lifecycle, Pod, PodOS, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::spec::{
    NetworkMode, OnUnhealthy, Probe as SpecProbe, RestartPolicy, UpdateOrder, ValidatedSpec,
    DEFAULT_STOP_SIGNAL,
};

/// One Kubernetes object of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Manifest {
    Deployment(Box<Deployment>),
    Pod(Box<Pod>),
    Service(Box<Service>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The object's name (the spec's, made a DNS label).
    pub name: String,
    pub manifests: Vec<Manifest>,
    /// `key: why`, for each spec key set that has no equivalent.
    pub unmapped: Vec<String>,
}

impl Export {
    /// The manifests as one YAML stream (`---` between objects), as kubectl applies it.
    pub fn to_yaml(&self) -> Result<String, String> {
        let mut out = String::new();
        for m in &self.manifests {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(m).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }
}

/// `name` as a DNS-1035 label (lower case, `-` for `_` and `.`, a letter first).
fn dns_label(name: &str) -> String {
    let mut s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert_str(0, "c-");
    }
    s.truncate(63);
    s.trim_end_matches('-').to_string()
}

fn secs(d: std::time::Duration) -> i32 {
    d.as_secs().min(i32::MAX as u64) as i32
}

pub fn export(spec: &ValidatedSpec) -> Export {
    let name = dns_label(&spec.name);
    let mut unmapped = Vec::new();
    let mut note = |key: &str, why: &str| unmapped.push(format!("{key}: {why}"));
    if name != spec.name {
        note(
            "name",
            &format!("{:?} is not a DNS label: named {name:?}", spec.name),
        );
    }
    let labels = BTreeMap::from([("app.kubernetes.io/name".to_string(), name.clone())]);

    if spec.build.is_some() {
        note(
            "build",
            "build the image and push it to a registry: the image is named as berth records it",
        );
    } else if ["oci:", "oci-archive:", "docker-archive:", "rootfs:"]
        .iter()
        .any(|p| spec.image.starts_with(p))
    {
        note(
            "image",
            "a local image: push it to a registry (`berth image push`) and put that name here",
        );
    }

    let mut container = Container {
        name: name.clone(),
        image: Some(spec.image.clone()),
        // berth's entrypoint is the image's Entrypoint, Kubernetes' command; its command the
        // Cmd, Kubernetes' args.
        command: spec.entrypoint.clone(),
        args: spec.command.clone(),
        working_dir: spec.workdir.clone(),
        ..Default::default()
    };
    if !spec.env.is_empty() {
        container.env = Some(
            spec.env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..Default::default()
                })
                .collect(),
        );
    }

    let r = &spec.resources;
    let mut limits = BTreeMap::new();
    if let Some(m) = r.memory {
        limits.insert("memory".to_string(), Quantity(m.to_string()));
    }
    if let Some(c) = r.cpus {
        limits.insert(
            "cpu".to_string(),
            Quantity(format!("{}m", (c * 1000.0).round() as u64)),
        );
    }
    if !limits.is_empty() {
        container.resources = Some(ResourceRequirements {
            limits: Some(limits),
            ..Default::default()
        });
    }
    if r.pids.is_some() {
        note(
            "resources.pids",
            "a node-wide kubelet setting (podPidsLimit), not per pod",
        );
    }
    if r.cpu_weight.is_some() {
        note(
            "resources.cpu_weight",
            "no equivalent (requests.cpu sets weight and scheduling together)",
        );
    }
    if r.cpuset.is_some() {
        note(
            "resources.cpuset",
            "the kubelet's CPU manager decides placement",
        );
    }
    if r.io_weight.is_some() || !r.io_devices.is_empty() {
        note("resources.io", "no equivalent");
    }

    let mut sc = SecurityContext::default();
    let mut sc_set = false;
    if let Some(user) = &spec.user {
        let mut parts = user.splitn(2, ':');
        let uid = parts.next().and_then(|u| u.parse::<i64>().ok());
        let gid = parts.next().map(|g| g.parse::<i64>().ok());
        match (uid, gid) {
            (Some(u), None) => sc.run_as_user = Some(u),
            (Some(u), Some(Some(g))) => {
                sc.run_as_user = Some(u);
                sc.run_as_group = Some(g);
            }
            _ => note(
                "user",
                "names need numeric ids in Kubernetes (runAsUser/runAsGroup)",
            ),
        }
        sc_set |= sc.run_as_user.is_some();
    }
    if spec.readonly_rootfs {
        sc.read_only_root_filesystem = Some(true);
        sc_set = true;
    }
    if !spec.cap_add.is_empty() || !spec.cap_drop.is_empty() {
        let caps = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
        sc.capabilities = Some(Capabilities {
            add: caps(&spec.cap_add),
            drop: caps(&spec.cap_drop),
        });
        sc_set = true;
    }
    if sc_set {
        container.security_context = Some(sc);
    }

    let mut pod_os = None;
    if spec.stop_signal != DEFAULT_STOP_SIGNAL {
        match nix::sys::signal::Signal::try_from(spec.stop_signal) {
            Ok(sig) => {
                container.lifecycle = Some(Lifecycle {
                    stop_signal: Some(sig.as_str().to_string()),
                    ..Default::default()
                });
                // The stop signal needs the pod's OS.
                pod_os = Some(PodOS {
                    name: "linux".into(),
                });
            }
            Err(_) => note(
                "stop_signal",
                "a real-time signal has no name Kubernetes takes",
            ),
        }
    }

    let mut service_ports = Vec::new();
    if !spec.network.ports.is_empty() {
        let mut ports = Vec::new();
        for p in &spec.network.ports {
            let proto = p.protocol.as_str().to_ascii_uppercase();
            ports.push(ContainerPort {
                container_port: p.container_port.into(),
                protocol: Some(proto.clone()),
                ..Default::default()
            });
            service_ports.push(ServicePort {
                name: Some(format!("{}-{}", p.protocol.as_str(), p.host_port)),
                port: p.host_port.into(),
                target_port: Some(IntOrString::Int(p.container_port.into())),
                protocol: Some(proto),
                ..Default::default()
            });
            if p.host_ip.is_some() {
                note(
                    "network.ports",
                    "a host address: the Service listens on its cluster IP",
                );
            }
        }
        container.ports = Some(ports);
    }

    if let Some(h) = &spec.health {
        let mut probe = Probe {
            period_seconds: Some(secs(h.interval).max(1)),
            timeout_seconds: Some(secs(h.timeout).max(1)),
            failure_threshold: Some(h.retries as i32),
            initial_delay_seconds: (!h.start_period.is_zero()).then(|| secs(h.start_period)),
            ..Default::default()
        };
        match &h.probe {
            SpecProbe::Http { port, path } => {
                probe.http_get = Some(HTTPGetAction {
                    port: IntOrString::Int((*port).into()),
                    path: Some(path.clone()),
                    ..Default::default()
                })
            }
            SpecProbe::Tcp { port } => {
                probe.tcp_socket = Some(TCPSocketAction {
                    port: IntOrString::Int((*port).into()),
                    ..Default::default()
                })
            }
            SpecProbe::Exec { command } => {
                probe.exec = Some(ExecAction {
                    command: Some(command.clone()),
                })
            }
        }
        if !h.start_period.is_zero() {
            note(
                "health.start_period",
                "initialDelaySeconds: failures after it count, successes before it are not seen",
            );
        }
        match h.on_unhealthy {
            OnUnhealthy::Restart => container.liveness_probe = Some(probe),
            OnUnhealthy::None => container.readiness_probe = Some(probe),
            OnUnhealthy::Stop => {
                note("health.on_unhealthy", "\"stop\" has no equivalent: a readiness probe (out of the Service while unhealthy)");
                container.readiness_probe = Some(probe);
            }
        }
    }

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        let vname = format!("mount-{i}");
        volumes.push(Volume {
            name: vname.clone(),
            host_path: Some(HostPathVolumeSource {
                path: m.source.to_string_lossy().into_owned(),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: vname,
            mount_path: m.target.clone(),
            read_only: m.readonly.then_some(true),
            ..Default::default()
        });
    }
    if !mounts.is_empty() {
        container.volume_mounts = Some(mounts);
    }

    let mut pod = PodSpec {
        containers: vec![container],
        termination_grace_period_seconds: Some(spec.stop_timeout.as_secs() as i64),
        volumes: (!volumes.is_empty()).then_some(volumes),
        os: pod_os,
        hostname: (spec.hostname != spec.name).then(|| spec.hostname.clone()),
        ..Default::default()
    };
    match spec.network.mode {
        NetworkMode::Bridge => {}
        NetworkMode::Host => pod.host_network = Some(true),
        NetworkMode::None => note(
            "network.mode",
            "\"none\": every pod has a network; not isolated",
        ),
    }
    if spec.network.ip.is_some() {
        note(
            "network.ip",
            "pod addresses are the cluster's; reach it through its Service",
        );
    }
    if spec.network.egress.is_some() || spec.network.ingress.is_some() {
        note(
            "network.egress/ingress",
            "the bandwidth annotations of the CNI plugin, if it has them",
        );
    }
    if !spec.depends_on.is_empty() {
        note(
            "depends_on",
            "no start order between pods: wait in an init container",
        );
    }
    let rs = &spec.restart;
    if rs.max_retries > 0 {
        note("restart.max_retries", "the kubelet retries without a limit");
    }
    if rs.backoff_initial != crate::spec::DEFAULT_BACKOFF_INITIAL
        || rs.backoff_max != crate::spec::DEFAULT_BACKOFF_MAX
    {
        note("restart.backoff", "the kubelet's own (10s doubling to 5m)");
    }
    if spec.update.check.is_some() {
        note(
            "update.check",
            "an image updater (e.g. Keel, Flux image automation)",
        );
    }

    let meta = ObjectMeta {
        name: Some(name.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let mut manifests = Vec::new();
    match rs.policy {
        RestartPolicy::Always => {
            let strategy = match spec.update.order {
                UpdateOrder::StopFirst => DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..Default::default()
                },
                UpdateOrder::StartFirst => DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                },
            };
            manifests.push(Manifest::Deployment(Box::new(Deployment {
                metadata: meta.clone(),
                spec: DeploymentSpec {
                    replicas: Some(1),
                    selector: LabelSelector {
                        match_labels: Some(labels.clone()),
                        ..Default::default()
                    },
                    strategy: Some(strategy),
                    min_ready_seconds: spec.update.rollback.then(|| secs(spec.update.healthy_for)),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels.clone()),
                            ..Default::default()
                        }),
                        spec: Some(pod),
                    },
                    ..Default::default()
                },
                ..Default::default()
            })));
        }
        policy => {
            pod.restart_policy = Some(
                match policy {
                    RestartPolicy::OnFailure => "OnFailure",
                    _ => "Never",
                }
                .into(),
            );
            manifests.push(Manifest::Pod(Box::new(Pod {
                metadata: meta.clone(),
                spec: Some(pod),
                ..Default::default()
            })));
        }
    }
    if !service_ports.is_empty() {
        manifests.push(Manifest::Service(Box::new(Service {
            metadata: meta,
            spec: Some(ServiceSpec {
                selector: Some(labels),
                ports: Some(service_ports),
                ..Default::default()
            }),
            ..Default::default()
        })));
    }
    Export {
        name,
        manifests,
        unmapped,
    }
}

/// Reads back a YAML stream `to_yaml` wrote, each object as its own type.
pub fn from_yaml(text: &str) -> Result<Vec<Manifest>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = serde_yaml_ng::Value::deserialize(doc).map_err(|e| e.to_string())?;
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let m = match kind.as_str() {
            "Deployment" => Manifest::Deployment(Box::new(
                serde_yaml_ng::from_value(v).map_err(|e| e.to_string())?,
            )),
            "Pod" => Manifest::Pod(Box::new(
                serde_yaml_ng::from_value(v).map_err(|e| e.to_string())?,
            )),
            "Service" => Manifest::Service(Box::new(
                serde_yaml_ng::from_value(v).map_err(|e| e.to_string())?,
            )),
            other => return Err(format!("unexpected kind {other:?}")),
        };
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_str, ValidationContext};
    use std::path::Path;

    fn spec(name: &str, text: &str) -> ValidatedSpec {
        parse_str(
            Path::new(&format!("/specs/{name}.toml")),
            text,
            &ValidationContext::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_deployment_and_its_service_survive_a_round_trip() {
        let s = spec(
            "web_1",
            r#"
image = "registry.example/web:1.4"
entrypoint = ["/entry.sh"]
command = ["httpd", "-f"]
env = { TZ = "UTC" }
user = "1000:1000"
readonly_rootfs = true
cap_drop = ["NET_RAW"]
stop_timeout = "20s"
stop_signal = "SIGQUIT"
depends_on = ["db"]
[resources]
memory = "64M"
cpus = 0.5
pids = 64
[network]
ports = ["8080:80", "127.0.0.1:5353:53/udp"]
[[mounts]]
source = "/srv/www"
target = "/www"
readonly = true
[health]
http = { port = 80, path = "/healthz" }
interval = "5s"
retries = 2
"#,
        );
        let e = export(&s);
        assert_eq!(e.name, "web-1");
        let back = from_yaml(&e.to_yaml().unwrap()).unwrap();
        assert_eq!(back, e.manifests);
        let [Manifest::Deployment(d), Manifest::Service(svc)] = back.as_slice() else {
            panic!("{back:?}")
        };
        let dspec = &d.spec;
        assert_eq!(dspec.replicas, Some(1));
        assert_eq!(
            dspec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let pod = dspec.template.spec.as_ref().unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(20));
        assert_eq!(
            pod.volumes.as_ref().unwrap()[0]
                .host_path
                .as_ref()
                .unwrap()
                .path,
            "/srv/www"
        );
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.example/web:1.4"));
        assert_eq!(c.command.as_deref(), Some(&["/entry.sh".to_string()][..]));
        assert_eq!(c.args.as_ref().unwrap(), &["httpd", "-f"]);
        assert_eq!(c.env.as_ref().unwrap()[0].name, "TZ");
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"], Quantity((64u64 << 20).to_string()));
        assert_eq!(limits["cpu"], Quantity("500m".into()));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1000), Some(1000)));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            c.lifecycle.as_ref().unwrap().stop_signal.as_deref(),
            Some("SIGQUIT")
        );
        let live = c.liveness_probe.as_ref().unwrap();
        assert_eq!(
            live.http_get.as_ref().unwrap().path.as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            (live.period_seconds, live.failure_threshold),
            (Some(5), Some(2))
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
        let ports = svc.spec.as_ref().unwrap().ports.as_ref().unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].port, 8080);
        assert_eq!(ports[0].target_port, Some(IntOrString::Int(80)));
        assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
        let joined = e.unmapped.join("\n");
        for key in [
            "name:",
            "resources.pids",
            "depends_on",
            "network.ports: a host address",
        ] {
            assert!(joined.contains(key), "{key} in {joined}");
        }
    }

    #[test]
    fn restart_policies_other_than_always_are_pods() {
        let s = spec(
            "job",
            "image = \"busybox\"\n[restart]\npolicy = \"on-failure\"\nmax_retries = 3\n[network]\nmode = \"host\"\n[health]\nexec = [\"true\"]\non_unhealthy = \"none\"\n",
        );
        let e = export(&s);
        let back = from_yaml(&e.to_yaml().unwrap()).unwrap();
        let [Manifest::Pod(p)] = back.as_slice() else {
            panic!("{back:?}")
        };
        let pod = p.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        assert_eq!(pod.host_network, Some(true));
        assert!(pod.containers[0]
            .readiness_probe
            .as_ref()
            .unwrap()
            .exec
            .is_some());
        assert!(e
            .unmapped
            .iter()
            .any(|u| u.starts_with("restart.max_retries")));
    }
}
