//! The ReplicaSet reconciler (upstream ReplicaSetController): event handlers that enqueue
//! ReplicaSets and record observed pod creations and deletions in the expectations, and
//! `sync_replica_set`, which reads the caches, claims pods, asks the pure core
//! ([`super::manage`], [`super::status`]) what to do, and writes.
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use rekube_crds::{Pod, ReplicaSet};

use super::expectations::Expectations;
use super::manage::{self, ManageError, ReplicaDiff};
use super::status;
use crate::manager::claim::claim_objects;
use crate::manager::events::EventRecorder;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;
use crate::util::claim;
use crate::util::{labels, pod as podutil};

pub const CONTROLLER_NAME: &str = "replicaset-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("replicaset {key}: {action}: {source}")]
    Api {
        key: ObjectKey,
        action: &'static str,
        source: kube::Error,
    },
    #[error("replicaset {key}: {message}")]
    Manage { key: ObjectKey, message: String },
}

impl Error {
    fn api<'a>(key: &'a ObjectKey, action: &'static str) -> impl FnOnce(kube::Error) -> Error + 'a {
        move |source| Error::Api {
            key: key.clone(),
            action,
            source,
        }
    }
}

pub struct ReplicaSetController {
    client: Client,
    replica_sets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    expectations: Arc<Expectations>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
}

/// The ReplicaSet that controls `meta`, if it is a rekube ReplicaSet.
fn controller_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ObjectKey> {
    let owner = claim::get_controller_of(meta)?;
    (owner.kind == "ReplicaSet" && owner.api_version == rekube_crds::API_VERSION)
        .then(|| ObjectKey::new(meta.namespace.as_deref(), &owner.name))
}

impl ReplicaSetController {
    pub fn new(
        client: Client,
        replica_sets: &Arc<Informer<ReplicaSet>>,
        pods: &Arc<Informer<Pod>>,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(ReplicaSetController {
            recorder: EventRecorder::new(client.clone(), CONTROLLER_NAME),
            client,
            replica_sets: Arc::clone(replica_sets),
            pods: Arc::clone(pods),
            expectations: Arc::new(Expectations::new()),
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
        });
        let weak = Arc::downgrade(&c);
        replica_sets.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            match change {
                Change::Added(rs) | Change::Updated { new: rs, .. } => {
                    c.enqueue(ObjectKey::of(rs.as_ref()))
                }
                Change::Deleted(rs) => {
                    let key = ObjectKey::of(rs.as_ref());
                    c.expectations.delete_expectations(&key.to_string());
                    c.enqueue(key);
                }
            }
        });
        let weak = Arc::downgrade(&c);
        pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.on_pod_change(change);
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

    /// Every ReplicaSet whose selector matches an orphan pod (upstream getPodReplicaSets).
    fn replica_sets_matching(&self, pod: &Pod) -> Vec<ObjectKey> {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        self.replica_sets
            .store()
            .state()
            .iter()
            .filter(|rs| rs.metadata.namespace == pod.metadata.namespace)
            .filter(|rs| {
                rs.spec
                    .as_ref()
                    .is_some_and(|s| labels::selector_matches(Some(&s.selector), Some(&labels)))
            })
            .map(|rs| ObjectKey::of(rs.as_ref()))
            .collect()
    }

    /// upstream addPod / updatePod / deletePod.
    fn on_pod_change(&self, change: Change<'_, Pod>) {
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    // A pod that shows up already deleting counts as a deletion.
                    return self.on_pod_change(Change::Deleted(pod));
                }
                match controller_key(&pod.metadata) {
                    Some(rs) => {
                        if self.replica_sets.get(&rs).is_some() {
                            self.expectations.creation_observed(&rs.to_string());
                            self.enqueue(rs);
                        }
                    }
                    None => self
                        .replica_sets_matching(pod)
                        .into_iter()
                        .for_each(|k| self.enqueue(k)),
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return; // a relist's resync: nothing changed
                }
                let labels_changed = old.metadata.labels != new.metadata.labels;
                if new.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none()
                {
                    // Graceful deletion began: the pod no longer counts, expect no more of it.
                    if let Some(rs) = controller_key(&new.metadata) {
                        self.expectations
                            .deletion_observed(&rs.to_string(), &podutil::pod_key(new));
                    }
                }
                let old_controller = controller_key(&old.metadata);
                let new_controller = controller_key(&new.metadata);
                if old_controller != new_controller {
                    old_controller.iter().cloned().for_each(|k| self.enqueue(k));
                }
                match new_controller {
                    Some(rs) => {
                        // Became ready: availability follows after minReadySeconds.
                        let min_ready = self
                            .replica_sets
                            .get(&rs)
                            .and_then(|r| r.spec.as_ref().and_then(|s| s.min_ready_seconds))
                            .unwrap_or(0);
                        if min_ready > 0
                            && !podutil::is_pod_ready(old)
                            && podutil::is_pod_ready(new)
                        {
                            self.queue
                                .add_after(rs.clone(), Duration::from_secs(min_ready as u64 + 1));
                        }
                        self.enqueue(rs);
                    }
                    None if labels_changed || old_controller.is_some() => self
                        .replica_sets_matching(new)
                        .into_iter()
                        .for_each(|k| self.enqueue(k)),
                    None => {}
                }
            }
            Change::Deleted(pod) => {
                if let Some(rs) = controller_key(&pod.metadata) {
                    self.expectations
                        .deletion_observed(&rs.to_string(), &podutil::pod_key(pod));
                    self.enqueue(rs);
                }
            }
        }
    }

    pub async fn run(self: Arc<Self>, workers: usize) {
        // Before the first sync: a ReplicaSet synced against a pod cache still being
        // listed would create a second full set of pods (after every restart or failover).
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![self.replica_sets.has_synced(), self.pods.has_synced()],
        )
        .await;
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_replica_set(&key).await }
        })
        .await
    }

    /// upstream syncReplicaSet: returns when to sync again, if the status needs a later look.
    pub async fn sync_replica_set(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(rs) = self.replica_sets.get(key) else {
            tracing::debug!(replicaset = %key, "deleted");
            self.expectations.delete_expectations(&key.to_string());
            return Ok(None);
        };
        let rs_needs_sync = self
            .expectations
            .satisfied_expectations(&key.to_string(), Instant::now())
            && rs.metadata.deletion_timestamp.is_none();
        let namespace = key.namespace.clone().unwrap_or_default();
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);

        // upstream: claim the active pods; count the claimed terminating ones.
        let all: Vec<Arc<Pod>> = self
            .pods
            .store()
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(&namespace))
            .collect();
        let all_refs: Vec<&Pod> = all.iter().map(|p| p.as_ref()).collect();
        let selector = labels::label_selector_as_selector(rs.spec.as_ref().map(|s| &s.selector))
            .map_err(|e| Error::Manage {
                key: key.clone(),
                message: format!("invalid selector: {e}"),
            })?;
        let active = podutil::filter_active_pods(&all_refs);
        let filtered = self
            .claim_pods(&rs, &selector, &active, &pod_api, key)
            .await?;
        let terminating = podutil::filter_terminating_pods(&all_refs);
        let terminating = claim::filter_claimed_pods(
            rs.metadata.uid.as_deref().unwrap_or_default(),
            &selector,
            &terminating,
        );

        let manage_result = if rs_needs_sync {
            self.manage_replicas(&rs, &filtered, &pod_api, key).await
        } else {
            Ok(())
        };

        let evaluated_at = jiff::Timestamp::now();
        let refs: Vec<&Pod> = filtered.iter().map(|p| p.as_ref()).collect();
        let new_status = status::calculate_status(
            &rs,
            &refs,
            Some(&terminating),
            manage_result.as_ref().err(),
            evaluated_at,
        );
        let updated = match status::status_update(&rs, new_status) {
            Some(st) => self.update_status(&rs, st, key).await?,
            None => (*rs).clone(),
        };
        manage_result.map_err(|e| Error::Manage {
            key: key.clone(),
            message: e.to_string(),
        })?;
        // Availability needs another look once minReadySeconds have passed.
        let next = status::next_sync_after(&updated, &refs, evaluated_at, jiff::Timestamp::now());
        Ok(next.map(|d| Duration::from_millis(d.as_millis().max(0) as u64)))
    }

    fn object_ref(rs: &ReplicaSet) -> ObjectReference {
        rs.object_ref(&())
    }

    /// upstream claimPods: the pods this ReplicaSet owns after adopting and releasing.
    async fn claim_pods(
        &self,
        rs: &ReplicaSet,
        selector: &labels::Selector,
        active: &[&Pod],
        api: &Api<Pod>,
        key: &ObjectKey,
    ) -> Result<Vec<Arc<Pod>>, Error> {
        let owner = rs.controller_owner_ref(&()).map(|o| OwnerReference {
            block_owner_deletion: Some(true),
            ..o
        });
        let owned = claim_objects(api, &rs.metadata, owner.as_ref(), selector, active)
            .await
            .map_err(Error::api(key, "claiming pods"))?;
        Ok(owned.into_iter().map(Arc::new).collect())
    }

    /// upstream manageReplicas: create or delete pods to match spec.replicas, in slow-start
    /// batches, recording expectations first so that a resync never acts twice.
    async fn manage_replicas(
        &self,
        rs: &ReplicaSet,
        filtered: &[Arc<Pod>],
        api: &Api<Pod>,
        key: &ObjectKey,
    ) -> Result<(), ManageError> {
        let rs_key = key.to_string();
        match manage::replica_diff(rs, filtered.len()) {
            ReplicaDiff::None => Ok(()),
            ReplicaDiff::Create(diff) => {
                let owner = rs.controller_owner_ref(&()).map(|o| OwnerReference {
                    block_owner_deletion: Some(true),
                    ..o
                });
                let Some(owner) = owner else { return Ok(()) };
                let pod = manage::pod_for_create(rs, owner)?;
                self.expectations
                    .expect_creations(&rs_key, diff, Instant::now());
                let mut created = 0;
                let pp = PostParams::default();
                for batch in manage::slow_start_batches(diff, 1) {
                    let results = join_all((0..batch).map(|_| api.create(&pp, &pod))).await;
                    let mut failure = None;
                    for r in results {
                        match r {
                            Ok(p) => {
                                created += 1;
                                self.recorder
                                    .normal(
                                        &Self::object_ref(rs),
                                        "SuccessfulCreate",
                                        format!("Created pod: {}", p.name_any()),
                                    )
                                    .await;
                            }
                            Err(e) => {
                                // This creation will never be observed.
                                self.expectations.creation_observed(&rs_key);
                                if matches!(&e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
                                {
                                    continue;
                                }
                                self.recorder
                                    .warning(
                                        &Self::object_ref(rs),
                                        "FailedCreate",
                                        format!("Error creating: {e}"),
                                    )
                                    .await;
                                failure.get_or_insert(api_message(&e));
                            }
                        }
                    }
                    if let Some(message) = failure {
                        // The batches not tried will not be observed either.
                        for _ in created..diff {
                            self.expectations.creation_observed(&rs_key);
                        }
                        return Err(ManageError::Create {
                            replica_set: rs_key.clone(),
                            message,
                        });
                    }
                }
                Ok(())
            }
            ReplicaDiff::Delete(diff) => {
                let related = self.related_pods(rs);
                let refs: Vec<&Pod> = filtered.iter().map(|p| p.as_ref()).collect();
                let related_refs: Vec<&Pod> = related.iter().map(|p| p.as_ref()).collect();
                let victims =
                    manage::get_pods_to_delete(&refs, &related_refs, diff, jiff::Timestamp::now());
                let keys: Vec<String> = victims.iter().map(|p| podutil::pod_key(p)).collect();
                self.expectations
                    .expect_deletions(&rs_key, &keys, Instant::now());
                let results = join_all(victims.iter().map(|p| {
                    let uid = p.metadata.uid.clone();
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid,
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    let name = p.name_any();
                    async move { (name.clone(), api.delete(&name, &dp).await) }
                }))
                .await;
                let mut failure: Option<(String, String)> = None;
                for ((name, result), victim) in results.into_iter().zip(&victims) {
                    match result {
                        Ok(_) => {
                            self.recorder
                                .normal(
                                    &Self::object_ref(rs),
                                    "SuccessfulDelete",
                                    format!("Deleted pod: {name}"),
                                )
                                .await
                        }
                        Err(kube::Error::Api(s)) if s.code == 404 => self
                            .expectations
                            .deletion_observed(&rs_key, &podutil::pod_key(victim)),
                        Err(e) => {
                            self.expectations
                                .deletion_observed(&rs_key, &podutil::pod_key(victim));
                            self.recorder
                                .warning(
                                    &Self::object_ref(rs),
                                    "FailedDelete",
                                    format!("Error deleting: {e}"),
                                )
                                .await;
                            failure.get_or_insert((name.clone(), api_message(&e)));
                        }
                    }
                }
                match failure {
                    Some((pod, message)) => Err(ManageError::Delete {
                        replica_set: rs_key.clone(),
                        pod,
                        message,
                    }),
                    None => Ok(()),
                }
            }
        }
    }

    /// Pods of the ReplicaSets that share this one's controller (upstream
    /// getIndirectlyRelatedPods), for spreading deletions across nodes.
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let owner_uid = claim::get_controller_of(&rs.metadata).map(|o| o.uid.clone());
        let siblings: Vec<String> = self
            .replica_sets
            .store()
            .state()
            .iter()
            .filter(|r| r.metadata.namespace == rs.metadata.namespace)
            .filter(|r| match &owner_uid {
                Some(uid) => claim::get_controller_of(&r.metadata).is_some_and(|o| &o.uid == uid),
                None => r.metadata.uid == rs.metadata.uid,
            })
            .filter_map(|r| r.metadata.uid.clone())
            .collect();
        self.pods
            .store()
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace == rs.metadata.namespace && podutil::is_pod_active(p))
            .filter(|p| {
                claim::get_controller_of(&p.metadata).is_some_and(|o| siblings.contains(&o.uid))
            })
            .collect()
    }

    /// upstream updateReplicaSetStatus: writes the new status; on a conflict (the cache was
    /// behind) reads the ReplicaSet afresh and tries once more, as upstream does.
    async fn update_status(
        &self,
        rs: &ReplicaSet,
        new_status: k8s_openapi::api::apps::v1::ReplicaSetStatus,
        key: &ObjectKey,
    ) -> Result<ReplicaSet, Error> {
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            key.namespace.as_deref().unwrap_or_default(),
        );
        let mut updated = rs.clone();
        updated.status = Some(new_status.clone());
        match api
            .replace_status(&key.name, &PostParams::default(), &updated)
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let mut fresh = api
                    .get(&key.name)
                    .await
                    .map_err(Error::api(key, "reading for a status retry"))?;
                fresh.status = Some(new_status);
                api.replace_status(&key.name, &PostParams::default(), &fresh)
                    .await
                    .map_err(Error::api(key, "updating status"))
            }
            other => other.map_err(Error::api(key, "updating status")),
        }
    }
}

/// The apiserver's message of a failed request (what upstream puts in conditions).
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}
