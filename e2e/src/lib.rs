//! Helpers for rekube's end-to-end tests. The tests run against whatever `KUBECONFIG`
//! points at (the local control plane from `just cluster-up`, or kind), with rekube's CRDs
//! and admission policies applied (`kubectl apply -f crds/`).
//!
//! Each test works in a namespace of its own ([`TestNamespace`]) and names cluster-scoped
//! objects after it, so tests run in parallel and clean up after themselves.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde::Deserialize;
use serde_json::Value;

pub mod agent;
pub mod compare;
pub mod controllers;
pub mod kubelet;
pub mod netns;
pub mod nodes;
pub mod procstat;
pub mod rbac;
pub mod readiness;
pub mod stall_proxy;
pub mod storage;
pub mod sweep;

/// A client for the cluster `KUBECONFIG` names.
pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("a kubeconfig for the test cluster (run `just cluster-up`)")
}

/// The apiserver's audit log: `REKUBE_AUDIT_LOG`, or the local cluster's
/// (`$REKUBE_CACHE/cluster/logs/audit.log`, which `e2e/scripts/cluster-up.sh` makes).
/// `None` when there is none to read (on kind: set REKUBE_AUDIT_LOG to a log the
/// apiserver writes where the tests can read it).
pub fn audit_log() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("REKUBE_AUDIT_LOG") {
        return Some(PathBuf::from(path));
    }
    Some(rekube_crds::testing::cache_dir().join("cluster/logs/audit.log")).filter(|p| p.exists())
}

/// `kubectl apply -f -` of `manifests` (YAML or JSON) to the cluster KUBECONFIG names;
/// panics naming `what` if it is refused.
pub fn kubectl_apply(manifests: &str, what: &str) {
    use std::io::Write;
    let mut apply = std::process::Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on the PATH");
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    assert!(
        apply.wait_with_output().unwrap().status.success(),
        "applying {what}"
    );
}

/// The path of a file under `e2e/manifests`.
pub fn manifest_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(name)
}

/// Every YAML document of a manifest file under `e2e/manifests`, as JSON.
pub fn manifests(name: &str) -> Vec<Value> {
    let path = manifest_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(doc).unwrap()).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The same object as a rekube object: only `apiVersion` changes.
pub fn to_rekube(mut obj: Value) -> Value {
    obj["apiVersion"] = Value::from(rekube_crds::API_VERSION);
    obj
}

/// The API resource of a kind, rekube's (`rekube.io/v1`) or upstream's (its own group).
pub fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, storage::v1 as storage};
    use rekube_crds as rk;
    let rekube = api_version == rekube_crds::API_VERSION;
    macro_rules! pick {
        ($($kind:literal => $rk:ty, $up:ty;)*) => {
            match kind {
                $($kind => if rekube { ApiResource::erase::<$rk>(&()) } else { ApiResource::erase::<$up>(&()) },)*
                other => panic!("no API resource known for kind {other}"),
            }
        };
    }
    pick! {
        "Pod" => rk::Pod, core::Pod;
        "Deployment" => rk::Deployment, apps::Deployment;
        "ReplicaSet" => rk::ReplicaSet, apps::ReplicaSet;
        "Service" => rk::Service, core::Service;
        "Endpoints" => rk::Endpoints, core::Endpoints;
        "EndpointSlice" => rk::EndpointSlice, k8s_openapi::api::discovery::v1::EndpointSlice;
        "PersistentVolume" => rk::PersistentVolume, core::PersistentVolume;
        "PersistentVolumeClaim" => rk::PersistentVolumeClaim, core::PersistentVolumeClaim;
        "StorageClass" => rk::StorageClass, storage::StorageClass;
        "Node" => rk::Node, core::Node;
        "VolumeAttachment" => rk::VolumeAttachment, storage::VolumeAttachment;
        "CSIDriver" => rk::CSIDriver, storage::CSIDriver;
        "CSIStorageCapacity" => rk::CSIStorageCapacity, storage::CSIStorageCapacity;
    }
}

const CLUSTER_SCOPED: [&str; 5] = [
    "PersistentVolume",
    "StorageClass",
    "Node",
    "VolumeAttachment",
    "CSIDriver",
];

/// Pod Security's enforce label (upstream's, read by rekube's policies too).
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// A namespace for one test, deleted (with everything the test made, cluster-scoped
/// objects included) when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
    cluster_objects: std::sync::Mutex<Vec<(ApiResource, String)>>,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        Self::with_labels(prefix, &[]).await
    }

    /// A namespace whose rekube pods may be privileged: Pod Security's enforce level
    /// `privileged` (rekube's default is baseline, docs/pod-security.md), for tests whose
    /// pods use host namespaces, hostPath volumes, hostPorts or the like on purpose.
    pub async fn privileged(prefix: &str) -> Self {
        Self::with_labels(prefix, &[(POD_SECURITY_ENFORCE, "privileged")]).await
    }

    /// A namespace with these labels besides rekube's own.
    pub async fn with_labels(prefix: &str, labels: &[(&str, &str)]) -> Self {
        let client = client().await;
        let suffix: u32 = rand_suffix();
        let name = format!("e2e-{prefix}-{suffix:05x}");
        let mut all = serde_json::Map::new();
        all.insert("rekube.io/e2e".into(), "true".into());
        for (k, v) in labels {
            all.insert((*k).into(), (*v).into());
        }
        let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(
            serde_json::json!({ "metadata": { "name": name, "labels": all } }),
        )
        .unwrap();
        Api::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        TestNamespace {
            name,
            client,
            cluster_objects: Default::default(),
        }
    }

    /// The API for a kind in this namespace (or cluster-wide for cluster-scoped kinds).
    pub fn api(&self, api_version: &str, kind: &str) -> Api<DynamicObject> {
        let ar = api_resource(api_version, kind);
        if CLUSTER_SCOPED.contains(&kind) {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), &self.name, &ar)
        }
    }

    /// A unique name for a cluster-scoped object of this test.
    pub fn cluster_name(&self, name: &str) -> String {
        format!("{}-{name}", self.name)
    }

    /// Creates `obj` (any kind, rekube's or upstream's) in this test's namespace. A
    /// cluster-scoped object is renamed with [`Self::cluster_name`] and deleted on drop; a
    /// PersistentVolume or StorageClass is labelled as the test's ([`nodes::SCOPE_LABEL`]).
    pub async fn create(&self, mut obj: Value) -> Result<Value> {
        let (api_version, kind) = type_of(&obj)?;
        let ar = api_resource(&api_version, &kind);
        if CLUSTER_SCOPED.contains(&kind.as_str()) {
            let name = self.cluster_name(
                obj["metadata"]["name"]
                    .as_str()
                    .context("object without a name")?,
            );
            obj["metadata"]["name"] = Value::from(name.clone());
            // The controllers of this test watch only its own volumes and classes
            // (`--storage-selector`, as `--node-selector` for its Nodes).
            if matches!(kind.as_str(), "PersistentVolume" | "StorageClass") {
                obj["metadata"]["labels"][nodes::SCOPE_LABEL] = Value::from(self.name.clone());
            }
            self.cluster_objects.lock().unwrap().push((ar, name));
        } else {
            obj["metadata"]["namespace"] = Value::from(self.name.clone());
        }
        let dynamic: DynamicObject = serde_json::from_value(obj)?;
        let created = self
            .api(&api_version, &kind)
            .create(&PostParams::default(), &dynamic)
            .await?;
        Ok(serde_json::to_value(created)?)
    }
}

/// `(apiVersion, kind)` of an object.
pub fn type_of(obj: &Value) -> Result<(String, String)> {
    match (obj["apiVersion"].as_str(), obj["kind"].as_str()) {
        (Some(a), Some(k)) => Ok((a.to_string(), k.to_string())),
        _ => bail!("object without apiVersion or kind: {obj}"),
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    (h.finish() & 0xfffff) as u32
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // The test's files in the temporary directory (kubeconfigs with its tokens,
        // `rbac::token_kubeconfig`): named `<namespace>-...`.
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            let prefix = format!("{}-", self.name);
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if file.starts_with(&prefix) && file.ends_with(".kubeconfig") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // Drop cannot await: delete from a thread with a runtime of its own.
        let name = self.name.clone();
        let cluster_objects = std::mem::take(&mut *self.cluster_objects.lock().unwrap());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = client().await;
                for (ar, obj) in cluster_objects {
                    let _ = Api::<DynamicObject>::all_with(client.clone(), &ar)
                        .delete(&obj, &DeleteParams::default())
                        .await;
                }
                // The claims' protection finalizer (added at creation, as upstream's
                // admission plugin does) is taken off by the test's controllers, which are
                // gone by now: the namespace would stay Terminating.
                release_claims(&client, &name).await;
                let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            });
        })
        .join();
    }
}

/// Polls `check` every 100 ms until it yields a value, or panics after `timeout` with
/// `what` and the last value seen by `describe`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// The kubectl-rekube binary: REKUBE_KUBECTL_PLUGIN_BIN, or the one built beside the test.
pub fn kubectl_rekube_binary() -> PathBuf {
    if let Ok(path) = std::env::var("REKUBE_KUBECTL_PLUGIN_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target folder")
        .join("kubectl-rekube")
}

/// Runs `kubectl-rekube ARGS` (as `kubectl rekube ARGS` would) and returns its stdout;
/// panics with its stderr when it fails.
pub fn kubectl_rekube(args: &[&str]) -> String {
    let bin = kubectl_rekube_binary();
    let out = std::process::Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} (cargo build -p kubectl-rekube): {e}",
                bin.display()
            )
        });
    assert!(
        out.status.success(),
        "kubectl rekube {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes `kubernetes.io/pvc-protection` from the rekube claims of `namespace`.
async fn release_claims(client: &Client, namespace: &str) {
    use rekube_crds::storage_keys::PVC_PROTECTION_FINALIZER;
    let claims: Api<rekube_crds::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), namespace);
    let Ok(list) = claims.list(&Default::default()).await else {
        return;
    };
    for claim in list {
        let finalizers = claim.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == PVC_PROTECTION_FINALIZER) {
            continue;
        }
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != PVC_PROTECTION_FINALIZER)
            .collect();
        let patch = serde_json::json!({"metadata": {"finalizers": kept}});
        let _ = claims
            .patch(
                claim.metadata.name.as_deref().unwrap_or_default(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await;
    }
}
