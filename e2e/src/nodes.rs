//! rekube Nodes for tests that need nodes but no node agent: created with a capacity,
//! labels and taints, their status (Ready, allocatable) written through /status, and a
//! heartbeat task that renews the node's Lease and re-posts Ready, as a kubelet does.
//! Stopping the heartbeat is how a test loses a node.
//!
//! Nodes are cluster-scoped, so each test's nodes carry the label [`SCOPE_LABEL`] with
//! the test namespace, and the controllers under test watch only those
//! (`--node-selector`).
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rekube_crds::Node;
use serde_json::{Value, json};

use crate::TestNamespace;

/// The label that scopes a test's nodes to it.
pub const SCOPE_LABEL: &str = "rekube.io/e2e-nodes";

/// What a test node offers.
#[derive(Clone, Debug)]
pub struct NodeShape {
    pub cpu: &'static str,
    pub memory: &'static str,
    pub pods: u32,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Value>,
    pub ready: bool,
    /// Cordoned from the start (`spec.unschedulable`): no scheduler ever sees it open.
    pub unschedulable: bool,
}

impl Default for NodeShape {
    fn default() -> Self {
        NodeShape {
            cpu: "4",
            memory: "8Gi",
            pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            ready: true,
            unschedulable: false,
        }
    }
}

/// The `--node-selector` that picks this test's nodes.
pub fn node_selector(ns: &TestNamespace) -> String {
    format!("{SCOPE_LABEL}={}", ns.name)
}

/// Creates node `name` (renamed by [`TestNamespace::cluster_name`], deleted with the
/// namespace) and posts its status; returns its full name.
pub async fn create_node(ns: &TestNamespace, name: &str, shape: &NodeShape) -> String {
    let mut labels = shape.labels.clone();
    labels.insert(SCOPE_LABEL.into(), ns.name.clone());
    let full = ns.cluster_name(name);
    labels.insert("kubernetes.io/hostname".into(), full.clone());
    ns.create(json!({
        "apiVersion": "rekube.io/v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": shape.taints, "unschedulable": shape.unschedulable},
    }))
    .await
    .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
    let resources =
        json!({"cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods.to_string()});
    let now = jiff::Timestamp::now().to_string();
    let status = if shape.ready { "True" } else { "False" };
    let patch = json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": status, "reason": "KubeletReady",
            "message": "test node", "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }});
    Api::<Node>::all(ns.client.clone())
        .patch_status(&full, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("posting node {full}'s status: {e}"));
    full
}

/// A kubelet's heartbeat for one node: renews its Lease in `lease_namespace` every
/// `period` and sets Ready back to True when something else changed it. Stops on drop.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Heartbeat {
    pub fn start(
        client: kube::Client,
        lease_namespace: &str,
        node: &str,
        period: Duration,
    ) -> Self {
        let leases: Api<Lease> = Api::namespaced(client.clone(), lease_namespace);
        let nodes: Api<Node> = Api::all(client);
        let node = node.to_string();
        let task = tokio::spawn(async move {
            loop {
                let now = MicroTime(jiff::Timestamp::now());
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": {"name": node},
                    "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now},
                }))
                .unwrap();
                match leases.get_opt(&node).await {
                    Ok(Some(mut l)) => {
                        l.spec = lease.spec;
                        let _ = leases.replace(&node, &PostParams::default(), &l).await;
                    }
                    Ok(None) => {
                        let _ = leases.create(&PostParams::default(), &lease).await;
                    }
                    Err(_) => {}
                }
                if let Ok(n) = nodes.get(&node).await {
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                        .is_some_and(|c| c.status == "True");
                    if !ready {
                        let t = jiff::Timestamp::now().to_string();
                        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                            "reason": "KubeletReady", "message": "test node",
                            "lastHeartbeatTime": t, "lastTransitionTime": t}]}});
                        let _ = nodes
                            .patch_status(&node, &PatchParams::default(), &Patch::Merge(&patch))
                            .await;
                    }
                }
                tokio::time::sleep(period).await;
            }
        });
        Heartbeat { task }
    }
}

/// The node's taints as `key:effect`.
pub fn taints_of(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default()
}

/// The node's Ready condition status ("True", "False", "Unknown"), if any.
pub fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}
