//! What the API schemas cannot check in deploy/k8s, one function per rule. Each returns the
//! problems it finds as sentences (empty: the rule holds), so one test can list them all and
//! another can show that each rule catches the mistake it is there for.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

use crate::manifests::{secret_keys, selects, Container, Manifests, Resource};

/// The variables a node or the balancer listens on, as in `cluster-app --help` and
/// `cluster-lb --help`: a probe must reach one of them.
pub const LISTEN_VARIABLES: [&str; 3] = ["LISTEN_ADDR", "LB_LISTEN", "LB_ADMIN_LISTEN"];

/// kustomization.yaml applies every manifest of the directory, and only those.
pub fn every_manifest_is_listed(m: &Manifests) -> Vec<String> {
    let listed: BTreeSet<&String> = m.listed.iter().collect();
    let present: BTreeSet<&String> = m.present.iter().collect();
    let mut problems: Vec<String> = present
        .difference(&listed)
        .map(|f| format!("{f} is not listed in kustomization.yaml's resources"))
        .collect();
    problems.extend(
        listed
            .difference(&present)
            .map(|f| format!("kustomization.yaml lists {f}, which is not in deploy/k8s")),
    );
    problems
}

/// One Namespace, and every other object (the generated Secret included) in it.
pub fn one_namespace(m: &Manifests) -> Vec<String> {
    let namespaces: Vec<&str> = m.of_kind("Namespace").map(Resource::name).collect();
    let [namespace] = namespaces.as_slice() else {
        return vec![format!("one Namespace expected, found {namespaces:?}")];
    };
    m.resources
        .iter()
        .filter(|r| r.kind() != "Namespace")
        .filter(|r| r.str_at("/metadata/namespace") != Some(namespace))
        .map(|r| {
            format!(
                "{} ({}) is not in namespace {namespace}: {:?}",
                r.id(),
                r.file,
                r.str_at("/metadata/namespace")
            )
        })
        .collect()
}

/// Every selector picks pods that exist: a workload's its own template, a Service's, a
/// PodDisruptionBudget's and a NetworkPolicy's some workload's; an HPA scales a workload of
/// this directory, a StatefulSet is governed by a headless Service that selects it.
pub fn selectors_match_their_pods(m: &Manifests) -> Vec<String> {
    let selects_nothing = |what: String, selector: Option<&Value>| {
        m.selected_by(selector)
            .is_empty()
            .then(|| format!("{what} selects no pod of any workload: {selector:?}"))
    };
    let mut problems = Vec::new();
    for workload in m.workloads() {
        if !selects(
            workload.at("/spec/selector/matchLabels"),
            workload.pod_labels(),
        ) {
            problems.push(format!(
                "{}: spec.selector.matchLabels does not select its own pod template",
                workload.id()
            ));
        }
    }
    for service in m.of_kind("Service") {
        problems.extend(selects_nothing(service.id(), service.at("/spec/selector")));
    }
    for pdb in m.of_kind("PodDisruptionBudget") {
        problems.extend(selects_nothing(
            pdb.id(),
            pdb.at("/spec/selector/matchLabels"),
        ));
    }
    for policy in m.of_kind("NetworkPolicy") {
        problems.extend(selects_nothing(
            policy.id(),
            policy.at("/spec/podSelector/matchLabels"),
        ));
        for (i, peer) in peers(policy).enumerate() {
            problems.extend(selects_nothing(
                format!("{} ingress peer {i}", policy.id()),
                peer.pointer("/podSelector/matchLabels"),
            ));
        }
    }
    for hpa in m.of_kind("HorizontalPodAutoscaler") {
        let kind = hpa.str_at("/spec/scaleTargetRef/kind").unwrap_or_default();
        let name = hpa.str_at("/spec/scaleTargetRef/name").unwrap_or_default();
        if m.named(kind, name).is_none() {
            problems.push(format!(
                "{} scales {kind}/{name}, which is not here",
                hpa.id()
            ));
        }
    }
    for set in m.of_kind("StatefulSet") {
        let governing = set.str_at("/spec/serviceName").unwrap_or_default();
        let headless = m
            .named("Service", governing)
            .filter(|s| s.str_at("/spec/clusterIP") == Some("None"))
            .filter(|s| selects(s.at("/spec/selector"), set.pod_labels()));
        if headless.is_none() {
            problems.push(format!(
                "{}: serviceName {governing:?} is no headless Service selecting its pods",
                set.id()
            ));
        }
    }
    problems
}

/// Redis is reached by exactly the pods that need it: a NetworkPolicy selects the pods behind
/// the host of REDIS_URL and lets in the workloads that set REDIS_URL, and no other.
pub fn only_redis_clients_reach_redis(m: &Manifests) -> Vec<String> {
    let clients: BTreeSet<String> = m
        .workloads()
        .filter(|w| w.containers().iter().any(|c| c.env("REDIS_URL").is_some()))
        .map(Resource::id)
        .collect();
    let mut redis_hosts = BTreeSet::new();
    for workload in m.workloads() {
        for url in workload
            .containers()
            .iter()
            .filter_map(|c| c.env("REDIS_URL"))
        {
            redis_hosts.insert(url_host(url).to_string());
        }
    }
    if clients.is_empty() {
        return vec!["no workload sets REDIS_URL".to_string()];
    }
    let mut problems = Vec::new();
    for host in &redis_hosts {
        let Some(service) = m.named("Service", host) else {
            problems.push(format!("REDIS_URL's host {host} is no Service here"));
            continue;
        };
        let redis_pods = m.selected_by(service.at("/spec/selector"));
        for redis in redis_pods {
            let policies: Vec<&Resource> = m
                .of_kind("NetworkPolicy")
                .filter(|p| selects(p.at("/spec/podSelector/matchLabels"), redis.pod_labels()))
                .filter(|p| {
                    p.at("/spec/policyTypes")
                        .and_then(Value::as_array)
                        .is_some_and(|types| types.iter().any(|t| t == "Ingress"))
                })
                .collect();
            if policies.is_empty() {
                problems.push(format!(
                    "no NetworkPolicy restricts who reaches {}",
                    redis.id()
                ));
            }
            for policy in policies {
                let mut admitted = BTreeSet::new();
                for peer in peers(policy) {
                    if peer.get("podSelector").is_none()
                        || peer.as_object().map(|p| p.len()) != Some(1)
                    {
                        problems.push(format!(
                            "{} admits a peer that is not only a pod selector: {peer}",
                            policy.id()
                        ));
                    }
                    admitted.extend(
                        m.selected_by(peer.pointer("/podSelector/matchLabels"))
                            .into_iter()
                            .map(Resource::id),
                    );
                }
                if admitted != clients {
                    problems.push(format!(
                        "{} lets {admitted:?} reach {}, but the pods that use Redis are {clients:?}",
                        policy.id(),
                        redis.id()
                    ));
                }
            }
        }
    }
    problems
}

/// The balancer's `LB_BACKEND_DNS` names resolve to the node pods: each NAME:PORT is a
/// headless Service (one DNS answer per pod, not a virtual IP) with that port, leading to a
/// port the selected pods' containers listen on.
pub fn the_balancer_resolves_the_nodes(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let mut found = 0;
    for workload in m.workloads() {
        for container in workload.containers() {
            let Some(names) = container.env("LB_BACKEND_DNS") else {
                continue;
            };
            for entry in names.split(',') {
                found += 1;
                let (name, port) = entry.rsplit_once(':').unwrap_or((entry, ""));
                let port: u64 = port.parse().unwrap_or_default();
                let Some(service) = m.named("Service", name) else {
                    problems.push(format!("LB_BACKEND_DNS {entry}: no Service {name}"));
                    continue;
                };
                if service.str_at("/spec/clusterIP") != Some("None") {
                    problems.push(format!(
                        "LB_BACKEND_DNS {entry}: Service {name} is not headless, so its name \
                         resolves to one virtual IP, not to the pods"
                    ));
                }
                let service_port = service
                    .at("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|p| p["port"].as_u64() == Some(port));
                let Some(service_port) = service_port else {
                    problems.push(format!("LB_BACKEND_DNS {entry}: {name} has no port {port}"));
                    continue;
                };
                let target = service_port
                    .get("targetPort")
                    .unwrap_or(&service_port["port"]);
                let reaches_a_listener = m
                    .selected_by(service.at("/spec/selector"))
                    .iter()
                    .flat_map(|pod| pod.containers())
                    .any(|c| c.port_number(target).is_some_and(|p| listens_on(&c, p)));
                if !reaches_a_listener {
                    problems.push(format!(
                        "LB_BACKEND_DNS {entry}: port {port} of {name} leads to no port its pods listen on"
                    ));
                }
            }
        }
    }
    if found == 0 {
        problems.push("no container sets LB_BACKEND_DNS".to_string());
    }
    problems
}

/// A probe the kubelet sends over HTTP, and the listener of the container it reaches.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// "Deployment/node cluster-app readinessProbe", for messages.
    pub what: String,
    /// The program the container runs (`cluster-app`, `cluster-lb`).
    pub program: String,
    /// The variable that sets the listener the probe's port leads to (`LISTEN_ADDR`, ...).
    pub listener: String,
    pub path: String,
}

/// Every HTTP probe, with the listener it reaches; a probe whose port is no port the
/// container listens on is a problem.
pub fn http_probes(m: &Manifests) -> (Vec<HttpProbe>, Vec<String>) {
    let mut probes = Vec::new();
    let mut problems = Vec::new();
    for workload in m.workloads() {
        for container in workload.containers() {
            for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let Some(get) = container.value.pointer(&format!("/{kind}/httpGet")) else {
                    continue;
                };
                let what = format!("{} {} {kind}", workload.id(), container.name());
                let port = container.port_number(&get["port"]);
                let listener = LISTEN_VARIABLES.iter().find(|variable| {
                    port.is_some_and(|port| listen_port(&container, variable) == Some(port))
                });
                match listener {
                    Some(listener) => probes.push(HttpProbe {
                        what,
                        program: container.program().to_string(),
                        listener: listener.to_string(),
                        path: get["path"].as_str().unwrap_or("/").to_string(),
                    }),
                    None => problems.push(format!(
                        "{what}: port {} is no port the container listens on ({})",
                        get["port"],
                        LISTEN_VARIABLES.join(", ")
                    )),
                }
            }
        }
    }
    (probes, problems)
}

/// [`http_probes`]'s problems alone.
pub fn probes_reach_a_listener(m: &Manifests) -> Vec<String> {
    http_probes(m).1
}

/// A pod told to stop gets SIGKILLed at `terminationGracePeriodSeconds`; by then the preStop
/// sleep and the program's own stop must be over: a node's drain (`DRAIN_MS`), the balancer's
/// wait for requests in flight (`LB_SHUTDOWN_TIMEOUT_MS`). Both must be set, so the rule is
/// checked against what the pod really does.
pub fn grace_outlasts_the_stop(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for workload in m.workloads() {
        let grace_ms = workload
            .at("/spec/template/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30)
            * 1000;
        for container in workload.containers() {
            let stop_variable = match container.program() {
                "cluster-app" => "DRAIN_MS",
                "cluster-lb" => "LB_SHUTDOWN_TIMEOUT_MS",
                _ => continue,
            };
            let what = format!("{} {}", workload.id(), container.name());
            let Some(stop_ms) = container
                .env(stop_variable)
                .and_then(|v| v.parse::<u64>().ok())
            else {
                problems.push(format!("{what}: {stop_variable} is not set to a number"));
                continue;
            };
            let pre_stop_ms = container
                .value
                .pointer("/lifecycle/preStop/sleep/seconds")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                * 1000;
            if grace_ms <= pre_stop_ms + stop_ms {
                problems.push(format!(
                    "{what}: terminationGracePeriodSeconds ({} s) does not outlast preStop \
                     ({} s) + {stop_variable} ({stop_ms} ms)",
                    grace_ms / 1000,
                    pre_stop_ms / 1000
                ));
            }
        }
    }
    problems
}

/// Every Secret key a pod reads exists in a Secret of the namespace (the generated one):
/// environment variables from `secretKeyRef`, files from secret volumes; and
/// `SESSION_KEY_FILE` is a file such a volume mounts.
pub fn secret_keys_exist(m: &Manifests) -> Vec<String> {
    let has_key = |secret: &str, key: &str| {
        m.named("Secret", secret)
            .is_some_and(|s| secret_keys(s).contains(&key))
    };
    let mut problems = Vec::new();
    for workload in m.workloads() {
        let volumes: Vec<&Value> = workload
            .at("/spec/template/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        for volume in &volumes {
            let Some(secret) = volume.pointer("/secret/secretName").and_then(Value::as_str) else {
                continue;
            };
            for item in volume
                .pointer("/secret/items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = item["key"].as_str().unwrap_or_default();
                if !has_key(secret, key) {
                    problems.push(format!(
                        "{} mounts key {key:?} of Secret {secret}, which the secret script does not make",
                        workload.id()
                    ));
                }
            }
        }
        for container in workload.containers() {
            for entry in container.env_entries() {
                let Some(reference) = entry.pointer("/valueFrom/secretKeyRef") else {
                    continue;
                };
                let secret = reference["name"].as_str().unwrap_or_default();
                let key = reference["key"].as_str().unwrap_or_default();
                if !has_key(secret, key) {
                    problems.push(format!(
                        "{} {}: {} reads key {key:?} of Secret {secret}, which the secret script does not make",
                        workload.id(),
                        container.name(),
                        entry["name"]
                    ));
                }
            }
            for variable in ["SESSION_KEY_FILE", "LB_ADMIN_TOKEN_FILE"] {
                let Some(file) = container.env(variable) else {
                    continue;
                };
                if !mounted_secret_file(&container, &volumes, file, &has_key) {
                    problems.push(format!(
                        "{} {}: {variable} {file} is no file of a mounted Secret",
                        workload.id(),
                        container.name()
                    ));
                }
            }
        }
    }
    problems
}

/// Every image has a pinned tag (or a digest): never `latest`, never none (which means latest).
pub fn images_are_pinned(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for workload in m.workloads() {
        for container in workload.containers() {
            let image = container.image();
            let (name, digest) = image.split_once('@').unwrap_or((image, ""));
            let last = name.rsplit('/').next().unwrap_or_default();
            let tag = last.split_once(':').map(|(_, tag)| tag);
            if digest.is_empty() && matches!(tag, None | Some("latest") | Some("")) {
                problems.push(format!(
                    "{} {}: image {image:?} is not pinned to a tag other than latest",
                    workload.id(),
                    container.name()
                ));
            }
        }
    }
    for image in m.kustomization["images"].as_array().into_iter().flatten() {
        if image["newTag"] == "latest" {
            problems.push(format!(
                "kustomization.yaml sets {} to latest",
                image["name"]
            ));
        }
    }
    problems
}

/// The ingress peers of a NetworkPolicy, every rule's `from` entries.
fn peers(policy: &Resource) -> impl Iterator<Item = &Value> {
    policy
        .at("/spec/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|rule| rule["from"].as_array())
        .flatten()
}

/// `redis://user:pass@host:6379/0` → `host`.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
}

/// The port a listener variable of the container sets, if it is set to an address.
fn listen_port(container: &Container, variable: &str) -> Option<u64> {
    let address: SocketAddr = container.env(variable)?.parse().ok()?;
    Some(u64::from(address.port()))
}

fn listens_on(container: &Container, port: u64) -> bool {
    LISTEN_VARIABLES
        .iter()
        .any(|variable| listen_port(container, variable) == Some(port))
}

/// Whether `file` is where one of `volumes` (a Secret's) puts a key that the Secret has.
fn mounted_secret_file(
    container: &Container,
    volumes: &[&Value],
    file: &str,
    has_key: &dyn Fn(&str, &str) -> bool,
) -> bool {
    let file = Path::new(file);
    let mounts = container.value["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten();
    mounts.into_iter().any(|mount| {
        let Some(relative) = mount["mountPath"]
            .as_str()
            .and_then(|dir| file.strip_prefix(dir).ok())
        else {
            return false;
        };
        let Some(volume) = volumes.iter().find(|v| v["name"] == mount["name"]) else {
            return false;
        };
        let Some(secret) = volume.pointer("/secret/secretName").and_then(Value::as_str) else {
            return false;
        };
        let relative = relative.to_string_lossy();
        match volume.pointer("/secret/items").and_then(Value::as_array) {
            Some(items) => items.iter().any(|item| {
                item["path"] == *relative
                    && has_key(secret, item["key"].as_str().unwrap_or_default())
            }),
            None => has_key(secret, &relative),
        }
    })
}
