//! The scheduler's reconciler (upstream pkg/scheduler/schedule_one.go, eventhandlers.go
//! and backend/cache): it keeps a [`Snapshot`] of nodes and the pods on them up to date
//! from the informers, takes unscheduled pods one at a time from its queue, asks the pure
//! core ([`schedule_pod`]) for a node, *assumes* the pod onto that node in the snapshot
//! (so the next pods see its requests before the binding is observed: a burst never
//! overcommits a node) and binds it in the background.
//!
//! Binding: rekube Pods have no `binding` subresource, so the scheduler patches
//! `spec.nodeName` with the pod's resourceVersion as precondition (a pod changed or bound
//! meanwhile makes the patch fail with a conflict, never a second node), then writes the
//! PodScheduled condition through /status: two requests where upstream needs one.
//!
//! A pod that fits nowhere gets PodScheduled False (reason Unschedulable, the fit error's
//! message), a FailedScheduling event, and waits in [`UnschedulablePods`] until a node,
//! pod or volume changes.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use rekube_crds::{
    CSIDriver, CSIStorageCapacity, Node, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::queue::{Parking, UnschedulablePods};
use super::volume_binding::PodVolumes;
use super::{ANNOTATION_SELECTED_NODE, Snapshot, schedule_pod};
use crate::manager::events::EventRecorder;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;
use crate::pvcontroller::pv_controller::get_bind_volume_to_claim;
use crate::util::pod::is_pod_terminal;

pub const CONTROLLER_NAME: &str = "scheduler";
/// The schedulerName of pods this scheduler places (besides the default one).
pub const SCHEDULER_NAME: &str = "rekube-scheduler";
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod {pod}: {action}: {source}")]
    Api {
        pod: ObjectKey,
        action: &'static str,
        source: kube::Error,
    },
    /// An object the scheduling decision rests on left the cache before PreBind.
    #[error("pod {pod}: {what} is gone")]
    Gone { pod: ObjectKey, what: String },
}

/// The informers the scheduler reads.
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub pvs: Arc<Informer<PersistentVolume>>,
    pub pvcs: Arc<Informer<PersistentVolumeClaim>>,
    pub classes: Arc<Informer<StorageClass>>,
    /// VolumeBinding's capacity check: the CSIDrivers (which drivers opted in with
    /// `storageCapacity: true`) and every namespace's CSIStorageCapacities.
    pub csi_drivers: Arc<Informer<CSIDriver>>,
    pub capacities: Arc<Informer<CSIStorageCapacity>>,
}

pub struct Scheduler {
    client: Client,
    informers: Informers,
    /// upstream's scheduler cache: the nodes, their pods and the assumed pods.
    cache: Mutex<Snapshot>,
    queue: Arc<WorkQueue<ObjectKey>>,
    unschedulable: UnschedulablePods,
    max_unschedulable_wait: Duration,
    recorder: EventRecorder,
    metrics: Metrics,
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Pods this scheduler is responsible for (upstream responsibleForPod), unbound and live.
fn wants_scheduling(pod: &Pod) -> bool {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(DEFAULT_SCHEDULER_NAME);
    (name == DEFAULT_SCHEDULER_NAME || name == SCHEDULER_NAME)
        && node_name(pod).is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && !is_pod_terminal(pod)
}

/// Whether a node update can make a waiting pod schedulable (upstream
/// nodeSchedulingPropertiesChange): not a mere heartbeat.
fn node_scheduling_properties_changed(old: &Node, new: &Node) -> bool {
    let conditions = |n: &Node| -> Vec<(String, String)> {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| (c.type_.clone(), c.status.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.status.as_ref().map(|s| &s.allocatable)
            != new.status.as_ref().map(|s| &s.allocatable)
        || conditions(old) != conditions(new)
}

impl Scheduler {
    pub fn new(
        client: Client,
        event_client: Client,
        informers: Informers,
        max_unschedulable_wait: Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(Scheduler {
            recorder: EventRecorder::new(event_client, DEFAULT_SCHEDULER_NAME),
            client,
            cache: Mutex::new(Snapshot::new(&[], &[], &[], &[], &[])),
            queue: WorkQueue::new(CONTROLLER_NAME),
            unschedulable: UnschedulablePods::default(),
            max_unschedulable_wait,
            metrics,
            informers,
        });
        let weak = Arc::downgrade(&c);
        c.informers.pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.on_pod_change(change);
            }
        });
        let weak = Arc::downgrade(&c);
        c.informers.nodes.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let moved = {
                let mut cache = c.cache.lock().unwrap();
                match change {
                    Change::Added(n) => {
                        cache.set_node((**n).clone());
                        true
                    }
                    Change::Updated { old, new } => {
                        cache.set_node((**new).clone());
                        node_scheduling_properties_changed(old, new)
                    }
                    Change::Deleted(n) => {
                        cache.remove_node(&n.name_any());
                        false
                    }
                }
            };
            if moved {
                c.move_all_to_active();
            }
        });
        macro_rules! on_volume_change {
            ($informer:ident) => {
                let weak = Arc::downgrade(&c);
                c.informers.$informer.add_handler(move |_| {
                    let Some(c) = weak.upgrade() else { return };
                    c.refresh_volumes();
                    c.move_all_to_active();
                });
            };
        }
        on_volume_change!(pvs);
        on_volume_change!(pvcs);
        on_volume_change!(classes);
        on_volume_change!(csi_drivers);
        on_volume_change!(capacities);
        c
    }

    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    fn enqueue(&self, key: ObjectKey) {
        self.metrics.queue_add(CONTROLLER_NAME);
        self.queue.add(key);
    }

    fn move_all_to_active(&self) {
        for key in self.unschedulable.move_all() {
            self.enqueue(key);
        }
    }

    fn refresh_volumes(&self) {
        let pvs: Vec<PersistentVolume> = self
            .informers
            .pvs
            .store()
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let pvcs: Vec<PersistentVolumeClaim> = self
            .informers
            .pvcs
            .store()
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let classes: Vec<StorageClass> = self
            .informers
            .classes
            .store()
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let drivers: Vec<CSIDriver> = self
            .informers
            .csi_drivers
            .store()
            .state()
            .iter()
            .map(|d| (**d).clone())
            .collect();
        let capacities: Vec<CSIStorageCapacity> = self
            .informers
            .capacities
            .store()
            .state()
            .iter()
            .map(|c| (**c).clone())
            .collect();
        let mut cache = self.cache.lock().unwrap();
        cache.set_volumes(&pvs, &pvcs, &classes);
        cache.set_storage_capacity(&drivers, &capacities);
    }

    /// upstream addPodToCache / updatePodInCache / deletePodFromCache and the scheduling
    /// queue's add / update / delete.
    fn on_pod_change(&self, change: Change<'_, Pod>) {
        match change {
            Change::Added(pod) => {
                if node_name(pod).is_some() && !is_pod_terminal(pod) {
                    self.cache.lock().unwrap().add_pod(pod);
                } else if wants_scheduling(pod) {
                    self.enqueue(ObjectKey::of(pod.as_ref()));
                }
            }
            Change::Updated { old, new } => {
                let key = ObjectKey::of(new.as_ref());
                if node_name(new).is_some() {
                    self.unschedulable.remove(&key);
                    let freed = {
                        let mut cache = self.cache.lock().unwrap();
                        if is_pod_terminal(new) || new.metadata.deletion_timestamp.is_some() {
                            // A finished pod no longer holds its resources.
                            cache.remove_pod(new);
                            !is_pod_terminal(old)
                        } else {
                            cache.add_pod(new);
                            false
                        }
                    };
                    if freed {
                        self.move_all_to_active();
                    }
                } else if wants_scheduling(new) {
                    // Our own status writes (PodScheduled False) come back as updates:
                    // a parked pod moves only when something that matters changed.
                    let changed = old.spec != new.spec
                        || old.metadata.labels != new.metadata.labels
                        || old.metadata.annotations != new.metadata.annotations;
                    if !self.unschedulable.contains(&key) || changed {
                        self.unschedulable.remove(&key);
                        self.enqueue(key);
                    }
                }
            }
            Change::Deleted(pod) => {
                let key = ObjectKey::of(pod.as_ref());
                self.unschedulable.remove(&key);
                if node_name(pod).is_some() || self.cache.lock().unwrap().is_assumed(pod) {
                    self.cache.lock().unwrap().remove_pod(pod);
                    self.move_all_to_active();
                }
            }
        }
    }

    /// Runs the scheduling loop (one pod at a time, as upstream's scheduleOne) until the
    /// queue shuts down, and the flush of long-parked pods until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![
                self.informers.pods.has_synced(),
                self.informers.nodes.has_synced(),
                self.informers.pvs.has_synced(),
                self.informers.pvcs.has_synced(),
                self.informers.classes.has_synced(),
                self.informers.csi_drivers.has_synced(),
                self.informers.capacities.has_synced(),
            ],
        )
        .await;
        self.refresh_volumes();
        let flusher = {
            let this = Arc::clone(&self);
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                    for key in this
                        .unschedulable
                        .flush_leftover(this.max_unschedulable_wait, Instant::now())
                    {
                        this.enqueue(key);
                    }
                }
            }
        };
        let this = Arc::clone(&self);
        let workers = run_workers(self.queue(), 1, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.schedule_one(&key).await }
        });
        tokio::join!(workers, flusher);
    }

    /// upstream scheduleOne: one pod through filter, score, assume and (asynchronously) bind.
    pub async fn schedule_one(
        self: &Arc<Self>,
        key: &ObjectKey,
    ) -> Result<Option<Duration>, Error> {
        let Some(pod) = self.informers.pods.get(key) else {
            return Ok(None);
        };
        if !wants_scheduling(&pod) {
            return Ok(None);
        }
        let cycle = self.unschedulable.cycle();
        let decision = {
            let mut cache = self.cache.lock().unwrap();
            if cache.is_assumed(&pod) {
                return Ok(None); // being bound
            }
            match schedule_pod(&cache, &pod) {
                Ok(result) => {
                    cache.assume(&pod, &result.node_name);
                    cache.assume_provisions(
                        &pod,
                        &result.node_name,
                        &result.volumes.dynamic_provisions,
                    );
                    Ok(result)
                }
                Err(fit) => Err(fit),
            }
        };
        match decision {
            Ok(result) => {
                let this = Arc::clone(self);
                let key = key.clone();
                // upstream's binding cycle runs in its own goroutine.
                tokio::spawn(async move {
                    if let Err(e) = this.bind(&pod, &result.node_name, &result.volumes).await {
                        tracing::warn!(pod = %key, node = %result.node_name, error = %e, "binding failed; retrying");
                        this.cache.lock().unwrap().forget(&pod);
                        this.queue.add_rate_limited(key);
                    } else {
                        this.queue.forget(&key);
                    }
                });
                Ok(None)
            }
            Err(fit) => {
                let message = fit.to_string();
                tracing::info!(pod = %key, %message, "unschedulable");
                self.record_unschedulable(&pod, &message).await?;
                match self.unschedulable.park(key.clone(), cycle, Instant::now()) {
                    Parking::Parked => Ok(None),
                    // Something changed during the attempt: try again soon.
                    Parking::RetryAfterBackoff => Ok(Some(Duration::ZERO)),
                }
            }
        }
    }

    fn pod_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    /// upstream VolumeBinding PreBind (`BindPodVolumes`' `bindAPIUpdate`): each matched
    /// volume pre-bound to its claim (its `claimRef` with the claim's UID, annotated as
    /// bound by the controller: a PUT with the cached resourceVersion, so that a volume
    /// taken meanwhile is a conflict and the pod is scheduled again), then each claim to
    /// provision annotated with the node. The PV controller completes both. Unlike
    /// upstream, the pod is bound without waiting for that: the node agent waits for its
    /// claims to be bound before it mounts them.
    async fn pre_bind_volumes(
        &self,
        pod: &Pod,
        node: &str,
        volumes: &PodVolumes,
    ) -> Result<(), Error> {
        let key = ObjectKey::of(pod);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api_err = |action: &'static str| {
            let key = key.clone();
            move |source| Error::Api {
                pod: key,
                action,
                source,
            }
        };
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        for (claim, volume) in &volumes.static_bindings {
            let pvc = self
                .informers
                .pvcs
                .get(&ObjectKey::new(Some(&namespace), claim));
            let pv = self.informers.pvs.get(&ObjectKey::new(None, volume));
            let (Some(pvc), Some(pv)) = (pvc, pv) else {
                return Err(Error::Gone {
                    pod: key.clone(),
                    what: format!("persistentvolume {volume:?} or its claim {claim:?}"),
                });
            };
            if let Some(bound) = get_bind_volume_to_claim(&pv, &pvc) {
                pvs.replace(volume, &PostParams::default(), &bound)
                    .await
                    .map_err(api_err("pre-binding a persistentvolume to its claim"))?;
            }
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        for claim in &volumes.dynamic_provisions {
            let patch = json!({"metadata": {"annotations": {ANNOTATION_SELECTED_NODE: node}}});
            pvcs.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err("annotating its claim with the selected node"))?;
        }
        Ok(())
    }

    /// upstream bind (DefaultBinder), after VolumeBinding's PreBind.
    async fn bind(&self, pod: &Pod, node: &str, volumes: &PodVolumes) -> Result<(), Error> {
        let key = ObjectKey::of(pod);
        self.pre_bind_volumes(pod, node, volumes).await?;
        let api = self.pod_api(pod);
        let name = pod.name_any();
        let patch = json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "spec": {"nodeName": node},
        });
        let bound = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Api {
                pod: key.clone(),
                action: "binding",
                source,
            })?;
        let condition = PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        };
        self.set_condition(&api, bound, condition, "setting PodScheduled")
            .await?;
        self.recorder
            .normal(
                &pod.object_ref(&()),
                "Scheduled",
                format!("Successfully assigned {key} to {node}"),
            )
            .await;
        Ok(())
    }

    /// upstream handleSchedulingFailure: PodScheduled False with the fit error, and a
    /// FailedScheduling event; the status is written only when it changes.
    async fn record_unschedulable(&self, pod: &Pod, message: &str) -> Result<(), Error> {
        self.recorder
            .warning(
                &pod.object_ref(&()),
                "FailedScheduling",
                message.to_string(),
            )
            .await;
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        }) {
            return Ok(());
        }
        let condition = PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(message.into()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        };
        self.set_condition(
            &self.pod_api(pod),
            pod.clone(),
            condition,
            "setting PodScheduled False",
        )
        .await
    }

    /// Writes `condition` into the pod's status with its resourceVersion as precondition,
    /// so that a concurrent writer (the node agent) is never overwritten: on a conflict the
    /// pod is read again and the write retried. A pod gone meanwhile is not an error.
    async fn set_condition(
        &self,
        api: &Api<Pod>,
        mut pod: Pod,
        condition: PodCondition,
        action: &'static str,
    ) -> Result<(), Error> {
        let name = pod.name_any();
        for attempt in 0..3 {
            let patch = json!({
                "metadata": {"resourceVersion": pod.metadata.resource_version},
                "status": {"conditions": merge_condition(&pod, condition.clone())},
            });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 2 => {
                    match api.get_opt(&name).await {
                        Ok(Some(fresh)) => pod = fresh,
                        Ok(None) => return Ok(()),
                        Err(source) => {
                            return Err(Error::Api {
                                pod: ObjectKey::of(&pod),
                                action,
                                source,
                            });
                        }
                    }
                }
                Err(source) => {
                    return Err(Error::Api {
                        pod: ObjectKey::of(&pod),
                        action,
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The pod's conditions with `condition` replacing the one of its type (the transition
/// time kept when the status does not change).
fn merge_condition(pod: &Pod, mut condition: PodCondition) -> Vec<PodCondition> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(c) => {
            if c.status == condition.status {
                condition.last_transition_time = c.last_transition_time.clone();
            }
            *c = condition;
        }
        None => conditions.push(condition),
    }
    conditions
}
