//! deploy/k8s as data: the files as text (so a test can break a copy), and every resource
//! the kustomization lists plus the Secret `scripts/k8s-secret.sh` prints, parsed from YAML
//! into JSON values that the checks read with JSON pointers (`/spec/template/spec`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

/// The workspace root, where deploy/ and scripts/ are.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// deploy/k8s's YAML files, name → text.
pub fn read_manifest_files() -> BTreeMap<String, String> {
    let dir = workspace_root().join("deploy/k8s");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("read deploy/k8s") {
        let path = entry.expect("a directory entry").path();
        if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            let name = path.file_name().expect("a file name").to_string_lossy();
            let text = std::fs::read_to_string(&path).expect("read a manifest");
            files.insert(name.into_owned(), text);
        }
    }
    files
}

/// What `scripts/k8s-secret.sh` prints: the Secret as a cluster would receive it.
pub fn generated_secret() -> String {
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/k8s-secret.sh"))
        .output()
        .expect("run scripts/k8s-secret.sh");
    assert!(output.status.success(), "scripts/k8s-secret.sh failed");
    String::from_utf8(output.stdout).expect("UTF-8 from scripts/k8s-secret.sh")
}

/// One Kubernetes object and the file it came from.
pub struct Resource {
    pub file: String,
    pub value: Value,
}

impl Resource {
    pub fn kind(&self) -> &str {
        self.str_at("/kind").unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.str_at("/metadata/name").unwrap_or_default()
    }

    pub fn at(&self, pointer: &str) -> Option<&Value> {
        self.value.pointer(pointer)
    }

    pub fn str_at(&self, pointer: &str) -> Option<&str> {
        self.at(pointer).and_then(Value::as_str)
    }

    /// Deployments and StatefulSets: the objects that make pods.
    pub fn is_workload(&self) -> bool {
        matches!(self.kind(), "Deployment" | "StatefulSet")
    }

    /// "Deployment/node", for messages.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }

    /// The labels its pods carry (a workload's pod template).
    pub fn pod_labels(&self) -> Option<&Value> {
        self.at("/spec/template/metadata/labels")
    }

    pub fn pod_spec(&self) -> Option<&Value> {
        self.at("/spec/template/spec")
    }

    /// The containers of its pods, init containers included.
    pub fn containers(&self) -> Vec<Container<'_>> {
        let Some(spec) = self.pod_spec() else {
            return Vec::new();
        };
        ["containers", "initContainers"]
            .iter()
            .filter_map(|list| spec.get(list).and_then(Value::as_array))
            .flatten()
            .map(|value| Container { value })
            .collect()
    }
}

/// One container of a pod template.
pub struct Container<'a> {
    pub value: &'a Value,
}

impl<'a> Container<'a> {
    pub fn name(&self) -> &'a str {
        self.value["name"].as_str().unwrap_or_default()
    }

    /// The program it runs: the first word of `command`, else of `args`.
    pub fn program(&self) -> &'a str {
        ["command", "args"]
            .iter()
            .find_map(|key| self.value.pointer(&format!("/{key}/0"))?.as_str())
            .unwrap_or_default()
    }

    pub fn image(&self) -> &'a str {
        self.value["image"].as_str().unwrap_or_default()
    }

    /// The literal value of an environment variable (`value:`, not `valueFrom:`).
    pub fn env(&self, name: &str) -> Option<&'a str> {
        self.env_entries()
            .find(|entry| entry["name"] == name)
            .and_then(|entry| entry["value"].as_str())
    }

    pub fn env_entries(&self) -> impl Iterator<Item = &'a Value> {
        self.value["env"].as_array().into_iter().flatten()
    }

    /// The container port a probe or a Service names, by name or by number.
    pub fn port_number(&self, port: &Value) -> Option<u64> {
        let ports = self.value["ports"].as_array()?;
        ports
            .iter()
            .find(|p| p["name"] == *port || p["containerPort"] == *port)
            .and_then(|p| p["containerPort"].as_u64())
    }
}

/// The parsed manifests.
pub struct Manifests {
    /// The files kustomization.yaml lists under `resources`.
    pub listed: Vec<String>,
    /// The YAML files in deploy/k8s, kustomization.yaml aside.
    pub present: Vec<String>,
    pub kustomization: Value,
    /// Every object of the listed files, then the generated Secret.
    pub resources: Vec<Resource>,
}

impl Manifests {
    /// Parses `files` (deploy/k8s's, maybe altered) and `secret` (the script's output).
    pub fn parse(files: &BTreeMap<String, String>, secret: &str) -> Result<Manifests, String> {
        let kustomization_text = files
            .get("kustomization.yaml")
            .ok_or("deploy/k8s has no kustomization.yaml")?;
        let kustomization: Value = serde_saphyr::from_str(kustomization_text)
            .map_err(|e| format!("kustomization.yaml: {e}"))?;
        let listed: Vec<String> = kustomization["resources"]
            .as_array()
            .ok_or("kustomization.yaml lists no resources")?
            .iter()
            .map(|r| r.as_str().unwrap_or_default().to_string())
            .collect();
        let mut resources = Vec::new();
        for file in &listed {
            let text = files
                .get(file)
                .ok_or_else(|| format!("kustomization.yaml lists {file}, which is not there"))?;
            resources.extend(parse_objects(file, text)?);
        }
        resources.extend(parse_objects("scripts/k8s-secret.sh", secret)?);
        let present = files
            .keys()
            .filter(|name| *name != "kustomization.yaml")
            .cloned()
            .collect();
        Ok(Manifests {
            listed,
            present,
            kustomization,
            resources,
        })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Resource> {
        self.resources.iter().filter(move |r| r.kind() == kind)
    }

    pub fn named(&self, kind: &str, name: &str) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| r.kind() == kind && r.name() == name)
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter().filter(|r| r.is_workload())
    }

    /// The workloads whose pods `selector` (a label map) selects.
    pub fn selected_by<'a>(&'a self, selector: Option<&'a Value>) -> Vec<&'a Resource> {
        self.workloads()
            .filter(|w| selects(selector, w.pod_labels()))
            .collect()
    }
}

/// Every document of one YAML text.
fn parse_objects(file: &str, text: &str) -> Result<Vec<Resource>, String> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("{file}: {e}"))?;
    Ok(documents
        .into_iter()
        .filter(|d| !d.is_null())
        .map(|value| Resource {
            file: file.to_string(),
            value,
        })
        .collect())
}

/// Whether a label selector (`matchLabels`, or a Service's `selector`) picks pods with
/// `labels`: every pair of a non-empty selector is among the labels.
pub fn selects(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let (Some(selector), Some(labels)) = (
        selector.and_then(Value::as_object),
        labels.and_then(Value::as_object),
    ) else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The keys a Secret holds, from `stringData` and `data`.
pub fn secret_keys(secret: &Resource) -> Vec<&str> {
    ["/stringData", "/data"]
        .iter()
        .filter_map(|pointer| secret.at(pointer).and_then(Value::as_object))
        .flat_map(Map::keys)
        .map(String::as_str)
        .collect()
}
