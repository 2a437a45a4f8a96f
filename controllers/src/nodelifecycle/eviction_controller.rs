//! The taint eviction reconciler (upstream pkg/controller/tainteviction/
//! taint_eviction.go): pods bound to a Node with NoExecute taints they do not tolerate
//! are deleted, at once or when their tolerationSeconds run out ([`super::eviction`]
//! decides which and when). Before deleting, the pod gets the DisruptionTarget condition
//! with reason DeletionByTaintManager, as upstream. Its ReplicaSet then replaces it and
//! the scheduler places the replacement on a healthy node.
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use rekube_crds::{Node, Pod};
use serde_json::json;

use super::eviction;
use crate::manager::events::EventRecorder;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

pub const CONTROLLER_NAME: &str = "taint-eviction-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod {pod} on node {node}: {action}: {source}")]
    Api {
        node: String,
        pod: String,
        action: &'static str,
        source: kube::Error,
    },
}

pub struct TaintEvictionController {
    client: Client,
    nodes: Arc<Informer<Node>>,
    pods: Arc<Informer<Pod>>,
    default_toleration_seconds: i64,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
}

fn no_execute_taints(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.effect == "NoExecute")
                .map(|t| {
                    format!(
                        "{}={}:{}",
                        t.key,
                        t.value.as_deref().unwrap_or(""),
                        t.effect
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

impl TaintEvictionController {
    pub fn new(
        client: Client,
        nodes: &Arc<Informer<Node>>,
        pods: &Arc<Informer<Pod>>,
        default_toleration_seconds: i64,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(TaintEvictionController {
            recorder: EventRecorder::new(client.clone(), CONTROLLER_NAME),
            client,
            nodes: Arc::clone(nodes),
            pods: Arc::clone(pods),
            default_toleration_seconds,
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
        });
        let weak = Arc::downgrade(&c);
        nodes.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            // upstream handleNodeUpdate: only a change of NoExecute taints matters.
            let node = match change {
                Change::Added(n) => n,
                Change::Updated { old, new }
                    if no_execute_taints(old) != no_execute_taints(new) =>
                {
                    new
                }
                Change::Updated { .. } | Change::Deleted(_) => return,
            };
            if !no_execute_taints(node).is_empty() {
                c.enqueue(ObjectKey::of(node.as_ref()));
            }
        });
        let weak = Arc::downgrade(&c);
        pods.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            // upstream handlePodUpdate: a pod bound (or its tolerations changed) on a
            // tainted node is looked at again.
            let pod = match change {
                Change::Added(p) => p,
                Change::Updated { old, new }
                    if node_of(old) != node_of(new)
                        || old.spec.as_ref().map(|s| &s.tolerations)
                            != new.spec.as_ref().map(|s| &s.tolerations) =>
                {
                    new
                }
                _ => return,
            };
            if let Some(node) = node_of(pod)
                && c.nodes
                    .get(&ObjectKey::new(None, node))
                    .is_some_and(|n| !no_execute_taints(&n).is_empty())
            {
                c.enqueue(ObjectKey::new(None, node));
            }
        });
        c
    }

    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    fn enqueue(&self, key: ObjectKey) {
        self.metrics.queue_add(CONTROLLER_NAME);
        self.queue.add(key);
    }

    pub async fn run(self: Arc<Self>, workers: usize) {
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![self.nodes.has_synced(), self.pods.has_synced()],
        )
        .await;
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_node(&key).await }
        })
        .await
    }

    /// Evicts the node's pods whose time is up; returns when to look again for the rest.
    pub async fn sync_node(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(node) = self.nodes.get(key) else {
            return Ok(None);
        };
        let pods: Vec<Pod> = self
            .pods
            .store()
            .state()
            .iter()
            .filter(|p| node_of(p) == Some(&key.name))
            .map(|p| (**p).clone())
            .collect();
        let now = Timestamp::now();
        let decisions = eviction::pods_to_evict(&node, &pods, self.default_toleration_seconds, now);
        let mut next: Option<Duration> = None;
        let mut first_error = None;
        for (pod_key, delay) in decisions {
            if let Some(d) = delay {
                next = Some(next.map_or(d, |n| n.min(d)));
                continue;
            }
            let Some(pod) = pods
                .iter()
                .find(|p| crate::util::pod::pod_key(p) == pod_key)
            else {
                continue;
            };
            if let Err(e) = self.evict(&node, pod, now).await {
                tracing::warn!(error = %e, "evicting");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            // Come back just after the earliest tolerationSeconds runs out.
            None => Ok(next.map(|d| d + Duration::from_millis(100))),
        }
    }

    /// upstream deletePodHandler with addConditionAndDeletePod.
    async fn evict(&self, node: &Node, pod: &Pod, now: Timestamp) -> Result<(), Error> {
        let name = pod.name_any();
        let err = |action: &'static str| {
            let (node, pod) = (node.name_any(), name.clone());
            move |source| Error::Api {
                node,
                pod,
                action,
                source,
            }
        };
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        self.recorder
            .normal(
                &pod.object_ref(&()),
                "TaintManagerEviction",
                format!(
                    "Marking for deletion Pod {}",
                    crate::util::pod::pod_key(pod)
                ),
            )
            .await;
        let mut conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.retain(|c| c.type_ != eviction::DISRUPTION_TARGET);
        conditions.push(PodCondition {
            type_: eviction::DISRUPTION_TARGET.into(),
            status: "True".into(),
            reason: Some(eviction::REASON_DELETION_BY_TAINT_MANAGER.into()),
            message: Some(eviction::MESSAGE_DELETION_BY_TAINT_MANAGER.into()),
            last_transition_time: Some(Time(now)),
            ..Default::default()
        });
        let patch = json!({"status": {"conditions": conditions}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(err("adding the DisruptionTarget condition")(e)),
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!(node = %node.name_any(), pod = %name, "evicted the pod: untolerated NoExecute taint");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(err("deleting")(e)),
        }
    }
}
