//! The node lifecycle reconciler (upstream pkg/controller/nodelifecycle/
//! node_lifecycle_controller.go): every `--node-monitor-period` it evaluates each Node's
//! health from its heartbeat Lease (in `--node-lease-namespace`) and Ready condition
//! ([`super::health`]); a node silent for longer than `--node-monitor-grace-period` gets
//! its conditions set to Unknown and its pods marked not ready ([`super::notready`]).
//! Then the condition-driven taints follow ([`super::taints`]): NoSchedule taints for the
//! conditions and `spec.unschedulable`, and the not-ready/unreachable NoExecute taint that
//! the taint eviction controller acts on. Recovery (Ready True again) removes them.
//!
//! Not reproduced: upstream's per-zone eviction rate limiting and "full disruption" mode
//! (taints are applied at once).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use rekube_crds::{Node, Pod};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::health::{self, NodeHealth};
use super::{notready, taints};
use crate::manager::events::EventRecorder;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;

pub const CONTROLLER_NAME: &str = "node-lifecycle-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {action}: {source}")]
    Api {
        node: String,
        action: &'static str,
        source: kube::Error,
    },
}

/// The timings of `--node-monitor-*` and `--node-startup-grace-period`.
#[derive(Clone, Debug)]
pub struct Config {
    pub monitor_period: Duration,
    pub grace_period: Duration,
    pub startup_grace_period: Duration,
    pub lease_namespace: String,
}

pub struct NodeLifecycleController {
    client: Client,
    nodes: Arc<Informer<Node>>,
    leases: Arc<Informer<Lease>>,
    pods: Arc<Informer<Pod>>,
    config: Config,
    /// upstream nodeHealthMap: what the last pass observed of each node.
    node_health: Mutex<HashMap<String, NodeHealth>>,
    /// Wakes the monitor loop early when a Node's spec or conditions change, so that
    /// cordoning or a reported condition is reflected in the taints at once.
    changed: Notify,
    recorder: EventRecorder,
    metrics: Metrics,
}

impl NodeLifecycleController {
    pub fn new(
        client: Client,
        nodes: &Arc<Informer<Node>>,
        leases: &Arc<Informer<Lease>>,
        pods: &Arc<Informer<Pod>>,
        config: Config,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(NodeLifecycleController {
            recorder: EventRecorder::new(client.clone(), CONTROLLER_NAME),
            client,
            nodes: Arc::clone(nodes),
            leases: Arc::clone(leases),
            pods: Arc::clone(pods),
            config,
            node_health: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            metrics,
        });
        let weak = Arc::downgrade(&c);
        nodes.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let relevant = match change {
                Change::Added(_) | Change::Deleted(_) => true,
                Change::Updated { old, new } => {
                    old.spec.as_ref().map(|s| (&s.unschedulable, &s.taints))
                        != new.spec.as_ref().map(|s| (&s.unschedulable, &s.taints))
                        || condition_statuses(old) != condition_statuses(new)
                }
            };
            if relevant {
                c.changed.notify_one();
            }
        });
        c
    }

    /// Runs the monitor loop until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![
                self.nodes.has_synced(),
                self.leases.has_synced(),
                self.pods.has_synced(),
            ],
        )
        .await;
        loop {
            let started = std::time::Instant::now();
            let ok = self.monitor_node_health().await;
            self.metrics.sync(CONTROLLER_NAME, ok, started.elapsed());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.monitor_period) => {}
                _ = self.changed.notified() => {}
            }
        }
    }

    /// upstream monitorNodeHealth plus the NoSchedule/NoExecute tainting passes; returns
    /// whether every write succeeded (failed ones are retried on the next pass).
    pub async fn monitor_node_health(&self) -> bool {
        let nodes = self.nodes.store().state();
        {
            let names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
            self.node_health
                .lock()
                .unwrap()
                .retain(|name, _| names.contains(name));
        }
        let mut ok = true;
        for node in nodes {
            if let Err(e) = self.sync_node(&node).await {
                tracing::warn!(node = %node.name_any(), error = %e, "node lifecycle");
                ok = false;
            }
        }
        ok
    }

    async fn sync_node(&self, node: &Node) -> Result<(), Error> {
        let name = node.name_any();
        let now = Timestamp::now();
        let lease = self
            .leases
            .get(&ObjectKey::new(Some(&self.config.lease_namespace), &name));
        let previous = self.node_health.lock().unwrap().get(&name).cloned();
        let observed_ready = health::observed_ready_condition(node);
        let (new_health, new_conditions) = health::try_update_node_health_with_startup_grace(
            node,
            lease.as_deref(),
            previous.as_ref(),
            self.config.grace_period,
            self.config.startup_grace_period,
            now,
        );
        let api: Api<Node> = Api::all(self.client.clone());
        let mut current = node.clone();
        match new_conditions {
            Some(conditions) => {
                let mut updated = node.clone();
                updated
                    .status
                    .get_or_insert_with(Default::default)
                    .conditions = Some(conditions);
                current = api
                    .replace_status(&name, &PostParams::default(), &updated)
                    .await
                    .map_err(|source| Error::Api {
                        node: name.clone(),
                        action: "setting conditions to Unknown",
                        source,
                    })?;
                self.node_health
                    .lock()
                    .unwrap()
                    .insert(name.clone(), new_health);
                tracing::info!(node = %name, "node stopped posting status: conditions set to Unknown");
            }
            None => {
                self.node_health
                    .lock()
                    .unwrap()
                    .insert(name.clone(), new_health);
            }
        }

        // upstream: the Ready transition seen in this pass is recorded as an event, and
        // pods on a node that is not ready are marked not ready (on every pass, so that
        // pods bound later are marked too, as upstream's processPod does).
        let ready = health::observed_ready_condition(&current);
        if ready.status != health::CONDITION_TRUE && observed_ready.status == health::CONDITION_TRUE
        {
            self.recorder
                .normal(
                    &current.object_ref(&()),
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
        }
        if ready.status != health::CONDITION_TRUE
            && health::get_node_condition(current.status.as_ref(), health::NODE_READY).is_some()
        {
            self.mark_pods_not_ready(&name, now).await;
        }

        if let Some(new_taints) = taints::taint_changes(&current, now) {
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "spec": {"taints": new_taints},
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| Error::Api {
                    node: name.clone(),
                    action: "updating taints",
                    source,
                })?;
            tracing::info!(node = %name, taints = ?new_taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "updated the node's taints");
        }
        Ok(())
    }

    /// upstream MarkPodsNotReady: the Ready condition of the node's pods becomes False.
    async fn mark_pods_not_ready(&self, node: &str, now: Timestamp) {
        for pod in self.pods.store().state() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                continue;
            }
            let Some(status) = notready::pod_status_not_ready(&pod, now) else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let patch = json!({
                "metadata": {"resourceVersion": pod.metadata.resource_version},
                "status": {"conditions": status.conditions},
            });
            match api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => tracing::info!(node, pod = %pod.name_any(), "marked the pod not ready"),
                Err(e) => {
                    tracing::warn!(node, pod = %pod.name_any(), error = %e, "marking the pod not ready")
                }
            }
        }
    }
}

fn condition_statuses(node: &Node) -> Vec<(String, String)> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        })
        .unwrap_or_default()
}
