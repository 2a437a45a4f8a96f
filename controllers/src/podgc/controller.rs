//! The pod garbage collector's reconciler (upstream PodGCController): every check period
//! it reads the pod and node caches, asks [`super::gc`] which pods go, and for each marks
//! it Failed (orphans with the DisruptionTarget condition) and deletes it with no grace.
//!
//! rekube's pods carry the node agent's finalizer until the agent has removed their
//! containers. A pod whose node is gone (orphaned, or terminating on an out-of-service
//! node) or that never had one has no agent left to do that, so for those the collector
//! also takes the agent's finalizer off: what upstream's force deletion achieves for a
//! built-in pod. Terminated pods on live nodes are deleted and left to their agent.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use rekube_crds::{NODE_AGENT_FINALIZER, Node, Pod};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::gc;
use crate::manager::client::ignore_not_found;
use crate::manager::informer::{Informer, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;

pub const CONTROLLER_NAME: &str = "pod-garbage-collector-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod {namespace}/{name}: {action}: {source}")]
    Api {
        namespace: String,
        name: String,
        action: &'static str,
        source: kube::Error,
    },
}

/// `--terminated-pod-gc-threshold` and the collector's timings (upstream gcCheckPeriod
/// 20 s and quarantineTime 40 s).
#[derive(Clone, Debug)]
pub struct Config {
    pub terminated_pod_threshold: usize,
    pub check_period: Duration,
    pub quarantine_time: Duration,
}

pub struct PodGcController {
    client: Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    config: Config,
    /// upstream nodeQueue: node names missing from the cache, and when to check them.
    quarantine: Mutex<BTreeMap<String, Instant>>,
    metrics: Metrics,
}

/// Why a pod goes, and whether the node agent's finalizer goes with it.
#[derive(Clone, Copy)]
enum Reason {
    Terminated,
    TerminatingOutOfService,
    Orphaned,
    TerminatingUnscheduled,
}

impl Reason {
    fn without_agent(self) -> bool {
        !matches!(self, Reason::Terminated)
    }
}

impl PodGcController {
    pub fn new(
        client: Client,
        pods: &Arc<Informer<Pod>>,
        nodes: &Arc<Informer<Node>>,
        config: Config,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(PodGcController {
            client,
            pods: Arc::clone(pods),
            nodes: Arc::clone(nodes),
            config,
            quarantine: Mutex::new(BTreeMap::new()),
            metrics,
        })
    }

    /// Runs a pass every check period until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![self.pods.has_synced(), self.nodes.has_synced()],
        )
        .await;
        loop {
            let started = Instant::now();
            let ok = self.gc().await;
            self.metrics.sync(CONTROLLER_NAME, ok, started.elapsed());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.check_period) => {}
            }
        }
    }

    /// One pass (upstream gc); returns whether every deletion succeeded.
    pub async fn gc(&self) -> bool {
        let pods = self.pods.store().state();
        let nodes = self.nodes.store().state();
        let refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let mut doomed: Vec<(&Pod, Reason)> = Vec::new();
        doomed.extend(
            gc::terminated_to_delete(&refs, self.config.terminated_pod_threshold)
                .into_iter()
                .map(|p| (p, Reason::Terminated)),
        );
        let node = |name: &str| {
            nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(name))
                .map(|n| n.as_ref())
        };
        doomed.extend(
            gc::terminating_on_out_of_service(&refs, node)
                .into_iter()
                .map(|p| (p, Reason::TerminatingOutOfService)),
        );
        let existing: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        let deleted = self.discover_deleted_nodes(&refs, &existing).await;
        doomed.extend(
            gc::orphaned(&refs, &deleted)
                .into_iter()
                .map(|p| (p, Reason::Orphaned)),
        );
        doomed.extend(
            gc::unscheduled_terminating(&refs)
                .into_iter()
                .map(|p| (p, Reason::TerminatingUnscheduled)),
        );
        let results = futures::future::join_all(
            doomed
                .into_iter()
                .map(|(pod, reason)| self.mark_failed_and_delete_pod(pod, reason)),
        )
        .await;
        let mut ok = true;
        for r in results {
            if let Err(e) = r {
                tracing::warn!(error = %e, "pod garbage collection");
                ok = false;
            }
        }
        ok
    }

    /// upstream gcOrphaned's quarantine and discoverDeletedNodes: a node missing from the
    /// cache is checked with a GET once it has been missing for the quarantine time; the
    /// ones the apiserver does not know either are deleted.
    async fn discover_deleted_nodes(
        &self,
        pods: &[&Pod],
        existing: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let now = Instant::now();
        let due: Vec<String> = {
            let mut q = self.quarantine.lock().unwrap();
            for name in gc::nodes_to_quarantine(pods, existing) {
                q.entry(name).or_insert(now + self.config.quarantine_time);
            }
            let due: Vec<String> = q
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(n, _)| n.clone())
                .collect();
            due.iter().for_each(|n| {
                q.remove(n);
            });
            due
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let mut deleted = BTreeSet::new();
        for name in due.into_iter().filter(|n| !existing.contains(n)) {
            match api.get_opt(&name).await {
                Ok(None) => {
                    deleted.insert(name);
                }
                Ok(Some(_)) => {}
                // Quarantined again on the next pass if still needed.
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "checking whether a node exists")
                }
            }
        }
        deleted
    }

    /// upstream markFailedAndDeletePodWithCondition, plus the node agent's finalizer for
    /// pods no agent will ever finish.
    async fn mark_failed_and_delete_pod(&self, pod: &Pod, reason: Reason) -> Result<(), Error> {
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let err = |action: &'static str| {
            let (namespace, name) = (namespace.clone(), name.clone());
            move |source| Error::Api {
                namespace,
                name,
                action,
                source,
            }
        };
        tracing::info!(pod = %format!("{namespace}/{name}"), "PodGC is force deleting Pod");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let condition = matches!(reason, Reason::Orphaned).then_some((
            gc::DISRUPTION_TARGET,
            gc::ORPHANED_REASON,
            gc::ORPHANED_MESSAGE,
        ));
        if let Some(mut patch) = gc::failed_status_patch(pod, condition, Timestamp::now()) {
            // The same pod, not a namesake created since (upstream PatchPodStatus's UID).
            patch["metadata"] = json!({"uid": pod.metadata.uid});
            ignore_not_found(
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            )
            .map_err(err("marking it failed"))?;
        }
        let delete = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        ignore_not_found(api.delete(&name, &delete).await.map(|_| ()))
            .map_err(err("deleting it"))?;
        if reason.without_agent() && pod.finalizers().iter().any(|f| f == NODE_AGENT_FINALIZER) {
            let kept: Vec<&String> = pod
                .finalizers()
                .iter()
                .filter(|f| *f != NODE_AGENT_FINALIZER)
                .collect();
            // JSON patch with a test: another finalizer added meanwhile is not lost.
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/uid", "value": pod.metadata.uid},
                {"op": "test", "path": "/metadata/finalizers", "value": pod.finalizers()},
                {"op": "replace", "path": "/metadata/finalizers", "value": kept},
            ]))
            .expect("a JSON patch");
            ignore_not_found(
                api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                    .await
                    .map(|_| ()),
            )
            .map_err(err("removing the node agent's finalizer"))?;
        }
        Ok(())
    }
}
