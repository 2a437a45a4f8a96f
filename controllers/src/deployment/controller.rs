//! The Deployment reconciler (upstream DeploymentController, pkg/controller/deployment):
//! handlers that enqueue Deployments when they or their ReplicaSets and pods change, and
//! `sync_deployment`, which reads the caches, asks the pure core ([`super::util`],
//! [`super::rolling`], [`super::recreate`], [`super::sync`], [`super::progress`],
//! [`super::rollback`]) what to do, and writes ReplicaSets, status and events.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DeploymentStatus, ReplicaSetSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use rekube_crds::{Deployment, Pod, ReplicaSet};

use super::{hash, progress, recreate, rollback, rolling, sync, util};
use crate::manager::claim::claim_objects;
use crate::manager::events::EventRecorder;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;
use crate::util::claim;
use crate::util::labels;

pub const CONTROLLER_NAME: &str = "deployment-controller";
/// upstream maxRevHistoryLengthInChars.
const MAX_REV_HISTORY_LENGTH_IN_CHARS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deployment {key}: {action}: {source}")]
    Api {
        key: ObjectKey,
        action: &'static str,
        source: kube::Error,
    },
    #[error("deployment {key}: {message}")]
    Decide { key: ObjectKey, message: String },
    #[error(
        "deployment {key}: replica set {name} exists with another template (hash collision); collisionCount is now {count}"
    )]
    HashCollision {
        key: ObjectKey,
        name: String,
        count: i32,
    },
}

fn decide<E: std::fmt::Display>(key: &ObjectKey) -> impl FnOnce(E) -> Error + use<'_, E> {
    move |e| Error::Decide {
        key: key.clone(),
        message: e.to_string(),
    }
}

fn api_err<'a>(key: &'a ObjectKey, action: &'static str) -> impl FnOnce(kube::Error) -> Error + 'a {
    move |source| Error::Api {
        key: key.clone(),
        action,
        source,
    }
}

pub struct DeploymentController {
    client: Client,
    deployments: Arc<Informer<Deployment>>,
    replica_sets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
}

/// The rekube Deployment controlling `meta`.
fn controller_key(meta: &ObjectMeta, kind: &str) -> Option<ObjectKey> {
    let owner = claim::get_controller_of(meta)?;
    (owner.kind == kind && owner.api_version == rekube_crds::API_VERSION)
        .then(|| ObjectKey::new(meta.namespace.as_deref(), &owner.name))
}

/// Everything one sync works from: the Deployment and the ReplicaSets it owns.
struct Snapshot {
    key: ObjectKey,
    d: Deployment,
    rs_list: Vec<ReplicaSet>,
}

impl DeploymentController {
    pub fn new(
        client: Client,
        deployments: &Arc<Informer<Deployment>>,
        replica_sets: &Arc<Informer<ReplicaSet>>,
        pods: &Arc<Informer<Pod>>,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(DeploymentController {
            recorder: EventRecorder::new(client.clone(), CONTROLLER_NAME),
            client,
            deployments: Arc::clone(deployments),
            replica_sets: Arc::clone(replica_sets),
            pods: Arc::clone(pods),
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
        });
        let weak = Arc::downgrade(&c);
        deployments.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            match change {
                Change::Added(d) | Change::Updated { new: d, .. } | Change::Deleted(d) => {
                    c.enqueue(ObjectKey::of(d.as_ref()))
                }
            }
        });
        let weak = Arc::downgrade(&c);
        replica_sets.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.on_replica_set_change(change);
            }
        });
        let weak = Arc::downgrade(&c);
        pods.add_handler(move |change| {
            // upstream deletePod: a Recreate rollout waits for old pods to be gone.
            let (Some(c), Change::Deleted(pod)) = (weak.upgrade(), change) else {
                return;
            };
            let Some(rs_key) = controller_key(&pod.metadata, "ReplicaSet") else {
                return;
            };
            let Some(rs) = c.replica_sets.get(&rs_key) else {
                return;
            };
            let Some(d_key) = controller_key(&rs.metadata, "Deployment") else {
                return;
            };
            let recreate = c.deployments.get(&d_key).is_some_and(|d| {
                d.spec
                    .as_ref()
                    .and_then(|s| s.strategy.as_ref())
                    .and_then(|s| s.type_.as_deref())
                    == Some("Recreate")
            });
            if recreate {
                c.enqueue(d_key);
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

    /// Deployments whose selector matches an orphan ReplicaSet (getDeploymentsForReplicaSet).
    fn deployments_matching(&self, rs: &ReplicaSet) -> Vec<ObjectKey> {
        let rs_labels = rs.metadata.labels.clone().unwrap_or_default();
        self.deployments
            .store()
            .state()
            .iter()
            .filter(|d| d.metadata.namespace == rs.metadata.namespace)
            .filter(|d| {
                d.spec
                    .as_ref()
                    .is_some_and(|s| labels::selector_matches(Some(&s.selector), Some(&rs_labels)))
            })
            .map(|d| ObjectKey::of(d.as_ref()))
            .collect()
    }

    /// upstream addReplicaSet / updateReplicaSet / deleteReplicaSet.
    fn on_replica_set_change(&self, change: Change<'_, ReplicaSet>) {
        match change {
            Change::Added(rs) => match controller_key(&rs.metadata, "Deployment") {
                Some(d) => self.enqueue(d),
                None => self
                    .deployments_matching(rs)
                    .into_iter()
                    .for_each(|k| self.enqueue(k)),
            },
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let old_c = controller_key(&old.metadata, "Deployment");
                let new_c = controller_key(&new.metadata, "Deployment");
                if old_c != new_c {
                    old_c.clone().into_iter().for_each(|k| self.enqueue(k));
                }
                match new_c {
                    Some(d) => self.enqueue(d),
                    None if old.metadata.labels != new.metadata.labels || old_c.is_some() => self
                        .deployments_matching(new)
                        .into_iter()
                        .for_each(|k| self.enqueue(k)),
                    None => {}
                }
            }
            Change::Deleted(rs) => controller_key(&rs.metadata, "Deployment")
                .into_iter()
                .for_each(|k| self.enqueue(k)),
        }
    }

    pub async fn run(self: Arc<Self>, workers: usize) {
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![
                self.deployments.has_synced(),
                self.replica_sets.has_synced(),
                self.pods.has_synced(),
            ],
        )
        .await;
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_deployment(&key).await }
        })
        .await
    }

    fn d_api(&self, key: &ObjectKey) -> Api<Deployment> {
        Api::namespaced(
            self.client.clone(),
            key.namespace.as_deref().unwrap_or_default(),
        )
    }

    fn rs_api(&self, key: &ObjectKey) -> Api<ReplicaSet> {
        Api::namespaced(
            self.client.clone(),
            key.namespace.as_deref().unwrap_or_default(),
        )
    }

    fn object_ref(d: &Deployment) -> ObjectReference {
        d.object_ref(&())
    }

    /// upstream syncDeployment.
    pub async fn sync_deployment(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(d) = self.deployments.get(key) else {
            tracing::debug!(deployment = %key, "deleted");
            return Ok(None);
        };
        let mut d = (*d).clone();
        let selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(|m| m.is_empty());
        if empty {
            self.recorder
                .warning(
                    &Self::object_ref(&d),
                    "SelectingAll",
                    "This deployment is selecting all pods. A non-empty selector is required."
                        .into(),
                )
                .await;
            let st = d.status.clone().unwrap_or_default();
            if st.observed_generation < d.metadata.generation {
                let mut st = st;
                st.observed_generation = d.metadata.generation;
                self.update_status(&mut d, st, key).await?;
            }
            return Ok(None);
        }

        let rs_list = self.claim_replica_sets(&d, key).await?;
        let mut snap = Snapshot {
            key: key.clone(),
            d,
            rs_list,
        };

        if snap.d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only(&mut snap).await;
        }
        // Paused/resumed conditions first, as upstream's checkPausedConditions.
        let now = jiff::Timestamp::now();
        if let Some(st) = progress::sync_status_only_conditions(&snap.d, now) {
            self.update_status(&mut snap.d, st, key).await?;
        }
        let paused = snap.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused {
            return self.sync(&mut snap).await;
        }
        if rollback::get_rollback_to(&snap.d).is_some() {
            return self.rollback(&mut snap).await;
        }
        let rs_refs: Vec<&ReplicaSet> = snap.rs_list.iter().collect();
        if sync::is_scaling_event(&snap.d, &rs_refs) {
            return self.sync(&mut snap).await;
        }
        match snap
            .d
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.type_.as_deref())
        {
            Some("Recreate") => self.rollout_recreate(&mut snap).await,
            _ => self.rollout_rolling(&mut snap).await,
        }
    }

    /// upstream getReplicaSetsForDeployment: adopt and release ReplicaSets by selector and
    /// controllerRef, returning the owned ones.
    async fn claim_replica_sets(
        &self,
        d: &Deployment,
        key: &ObjectKey,
    ) -> Result<Vec<ReplicaSet>, Error> {
        let selector = labels::label_selector_as_selector(d.spec.as_ref().map(|s| &s.selector))
            .map_err(decide(key))?;
        let owner = d.controller_owner_ref(&()).map(|o| OwnerReference {
            block_owner_deletion: Some(true),
            ..o
        });
        let candidates = self.replica_sets.store().state();
        let in_namespace: Vec<&ReplicaSet> = candidates
            .iter()
            .map(|r| r.as_ref())
            .filter(|rs| rs.metadata.namespace.as_deref() == key.namespace.as_deref())
            .collect();
        claim_objects(
            &self.rs_api(key),
            &d.metadata,
            owner.as_ref(),
            &selector,
            &in_namespace,
        )
        .await
        .map_err(api_err(key, "claiming replica sets"))
    }

    /// upstream getAllReplicaSetsAndSyncRevision: the new ReplicaSet (created when asked
    /// and missing) and all old ones, with revision annotations brought up to date.
    async fn get_all_replica_sets_and_sync_revision(
        &self,
        snap: &mut Snapshot,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let rs_refs: Vec<&ReplicaSet> = snap.rs_list.iter().collect();
        let new_rs_name = util::find_new_replica_set(&snap.d, &snap.rs_list).map(|r| r.name_any());
        let new_rs_ref = new_rs_name
            .as_ref()
            .and_then(|n| snap.rs_list.iter().find(|r| &r.name_any() == n));
        let (_, all_old) = util::find_old_replica_sets(&snap.d, &snap.rs_list, new_rs_ref);
        let old: Vec<ReplicaSet> = all_old.into_iter().cloned().collect();
        drop(rs_refs);
        let new_rs = self.get_new_replica_set(snap, &old, create).await?;
        Ok((new_rs, old))
    }

    /// upstream getNewReplicaSet.
    async fn get_new_replica_set(
        &self,
        snap: &mut Snapshot,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, Error> {
        let key = snap.key.clone();
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        let new_revision = util::next_revision(&old_refs).to_string();
        let now = jiff::Timestamp::now();
        let existing = util::find_new_replica_set(&snap.d, &snap.rs_list).cloned();
        if let Some(existing) = existing {
            let mut rs = existing.clone();
            let annotations_updated = util::set_new_replica_set_annotations(
                &snap.d,
                &mut rs,
                &new_revision,
                true,
                MAX_REV_HISTORY_LENGTH_IN_CHARS,
            );
            let d_min_ready = snap.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = rs.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds != d_min_ready;
            if annotations_updated || min_ready_changed {
                spec.min_ready_seconds = d_min_ready;
                let patch = serde_json::json!({
                    "metadata": { "annotations": rs.metadata.annotations },
                    "spec": { "minReadySeconds": d_min_ready },
                });
                rs = self
                    .rs_api(&key)
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(api_err(&key, "updating the new replica set"))?;
                self.replace_cached_rs(snap, &rs);
            }
            let rs_revision = rs
                .annotations()
                .get(util::REVISION_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let mut needs_update = util::set_deployment_revision(&mut snap.d, &rs_revision);
            let mut st = snap.d.status.clone().unwrap_or_default();
            if util::has_progress_deadline(&snap.d)
                && util::get_deployment_condition(&st, "Progressing").is_none()
            {
                let msg = format!("Found new replica set \"{}\"", rs.name_any());
                util::set_deployment_condition(
                    &mut st,
                    util::new_deployment_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        &msg,
                        now,
                    ),
                );
                needs_update = true;
            }
            if needs_update {
                self.update_deployment_annotations_and_status(snap, st)
                    .await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }

        let d_spec = snap.d.spec.clone().unwrap_or_default();
        let collision_count = snap.d.status.as_ref().and_then(|s| s.collision_count);
        let template = d_spec.template.clone();
        let hash = hash::compute_hash(&template, collision_count);
        let mut new_template = template.clone();
        new_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(
                util::DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY.into(),
                hash.clone(),
            );
        let mut selector = d_spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(
                util::DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY.into(),
                hash.clone(),
            );
        let owner = snap.d.controller_owner_ref(&()).map(|o| OwnerReference {
            block_owner_deletion: Some(true),
            ..o
        });
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", snap.d.name_any())),
                namespace: snap.d.metadata.namespace.clone(),
                owner_references: owner.map(|o| vec![o]),
                labels: new_template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d_spec.min_ready_seconds,
                selector,
                template: Some(new_template),
            }),
            status: None,
        };
        let mut all: Vec<&ReplicaSet> = old.iter().collect();
        all.push(&new_rs);
        let new_replicas =
            util::new_rs_new_replicas(&snap.d, &all, &new_rs).map_err(decide(&key))?;
        new_rs.spec.as_mut().unwrap().replicas = Some(new_replicas);
        util::set_new_replica_set_annotations(
            &snap.d,
            &mut new_rs,
            &new_revision,
            false,
            MAX_REV_HISTORY_LENGTH_IN_CHARS,
        );

        let api = self.rs_api(&key);
        let (created, already_existed) = match api.create(&PostParams::default(), &new_rs).await {
            Ok(created) => (created, false),
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                let name = new_rs.name_any();
                let existing = match self
                    .replica_sets
                    .get(&ObjectKey::new(key.namespace.as_deref(), &name))
                {
                    Some(rs) => (*rs).clone(),
                    None => api
                        .get(&name)
                        .await
                        .map_err(api_err(&key, "reading the colliding replica set"))?,
                };
                let controlled = claim::get_controller_of(&existing.metadata)
                    .map(|o| o.uid.clone())
                    == snap.d.metadata.uid;
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(t, &d_spec.template));
                if controlled && same {
                    (existing, true)
                } else {
                    // A hash collision: bump collisionCount so the next hash differs.
                    let mut st = snap.d.status.clone().unwrap_or_default();
                    let count = sync::bump_collision_count(&mut st);
                    self.update_status(&mut snap.d, st, &key).await?;
                    return Err(Error::HashCollision { key, name, count });
                }
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{}\": {e}",
                    new_rs.name_any()
                );
                if util::has_progress_deadline(&snap.d) {
                    let mut st = snap.d.status.clone().unwrap_or_default();
                    util::set_deployment_condition(
                        &mut st,
                        util::new_deployment_condition(
                            "Progressing",
                            "False",
                            "ReplicaSetCreateError",
                            &msg,
                            now,
                        ),
                    );
                    self.update_status(&mut snap.d, st, &key).await?;
                }
                self.recorder
                    .warning(&Self::object_ref(&snap.d), "FailedCreate", msg)
                    .await;
                return Err(api_err(&key, "creating the new replica set")(e));
            }
        };
        if !already_existed && new_replicas > 0 {
            self.recorder
                .normal(
                    &Self::object_ref(&snap.d),
                    "ScalingReplicaSet",
                    util::scaling_replica_set_message(&created.name_any(), 0, new_replicas),
                )
                .await;
        }
        self.replace_cached_rs(snap, &created);
        let mut needs_update = util::set_deployment_revision(&mut snap.d, &new_revision);
        let mut st = snap.d.status.clone().unwrap_or_default();
        if !already_existed && util::has_progress_deadline(&snap.d) {
            let msg = format!("Created new replica set \"{}\"", created.name_any());
            util::set_deployment_condition(
                &mut st,
                util::new_deployment_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    &msg,
                    now,
                ),
            );
            needs_update = true;
        }
        if needs_update {
            self.update_deployment_annotations_and_status(snap, st)
                .await?;
        }
        Ok(Some(created))
    }

    /// Keeps the snapshot's ReplicaSet list current after a write.
    fn replace_cached_rs(&self, snap: &mut Snapshot, rs: &ReplicaSet) {
        match snap
            .rs_list
            .iter_mut()
            .find(|r| r.metadata.uid == rs.metadata.uid)
        {
            Some(slot) => *slot = rs.clone(),
            None => snap.rs_list.push(rs.clone()),
        }
    }

    /// upstream rolloutRolling.
    async fn rollout_rolling(&self, snap: &mut Snapshot) -> Result<Option<Duration>, Error> {
        let key = snap.key.clone();
        let (new_rs, old) = self
            .get_all_replica_sets_and_sync_revision(snap, true)
            .await?;
        let Some(new_rs) = new_rs else {
            return Ok(None);
        };
        let mut all: Vec<ReplicaSet> = old.clone();
        all.push(new_rs.clone());
        let all_refs: Vec<&ReplicaSet> = all.iter().collect();
        if let Some(size) =
            rolling::reconcile_new_replica_set(&all_refs, &new_rs, &snap.d).map_err(decide(&key))?
        {
            let scaled = self
                .scale_replica_set_and_record_event(&new_rs, size, snap)
                .await?;
            return self
                .sync_rollout_status_after(snap, old, Some(scaled))
                .await;
        }
        let active_old: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
            .collect();
        let scale_downs =
            rolling::reconcile_old_replica_sets(&all_refs, &active_old, Some(&new_rs), &snap.d);
        if !scale_downs.is_empty() {
            let mut old = old.clone();
            for (name, size) in scale_downs {
                if let Some(rs) = old.iter_mut().find(|r| r.name_any() == name) {
                    *rs = self
                        .scale_replica_set_and_record_event(rs, size, snap)
                        .await?;
                }
            }
            return self
                .sync_rollout_status_after(snap, old, Some(new_rs))
                .await;
        }
        if util::deployment_complete(&snap.d, &snap.d.status.clone().unwrap_or_default()) {
            self.cleanup_deployment(&old, snap).await?;
        }
        self.sync_rollout_status_after(snap, old, Some(new_rs))
            .await
    }

    /// upstream rolloutRecreate.
    async fn rollout_recreate(&self, snap: &mut Snapshot) -> Result<Option<Duration>, Error> {
        let (new_rs, mut old) = self
            .get_all_replica_sets_and_sync_revision(snap, false)
            .await?;
        let active_old: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
            .collect();
        let scale_downs = recreate::scale_down_old_replica_sets_for_recreate(&active_old);
        if !scale_downs.is_empty() {
            for (name, size) in scale_downs {
                if let Some(rs) = old.iter_mut().find(|r| r.name_any() == name) {
                    *rs = self
                        .scale_replica_set_and_record_event(rs, size, snap)
                        .await?;
                }
            }
            return self.sync_rollout_status_after(snap, old, new_rs).await;
        }
        let pods_by_rs = self.pods_by_replica_set(snap);
        let pods_by_rs_refs: BTreeMap<String, Vec<&Pod>> = pods_by_rs
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|p| p.as_ref()).collect()))
            .collect();
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        if recreate::old_pods_running(new_rs.as_ref(), &old_refs, &pods_by_rs_refs) {
            return self.sync_rollout_status_after(snap, old, new_rs).await;
        }
        let (new_rs, old) = match new_rs {
            Some(rs) => (rs, old),
            None => {
                let (rs, old) = self
                    .get_all_replica_sets_and_sync_revision(snap, true)
                    .await?;
                match rs {
                    Some(rs) => (rs, old),
                    None => return Ok(None),
                }
            }
        };
        // upstream scaleUpNewReplicaSetForRecreate.
        let want = snap.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let new_rs = self
            .scale_replica_set_and_record_event(&new_rs, want, snap)
            .await?;
        if util::deployment_complete(&snap.d, &snap.d.status.clone().unwrap_or_default()) {
            self.cleanup_deployment(&old, snap).await?;
        }
        self.sync_rollout_status_after(snap, old, Some(new_rs))
            .await
    }

    /// Pods of the Deployment's ReplicaSets, by ReplicaSet UID (getPodMapForDeployment).
    fn pods_by_replica_set(&self, snap: &Snapshot) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let uids: Vec<String> = snap
            .rs_list
            .iter()
            .filter_map(|r| r.metadata.uid.clone())
            .collect();
        let selector = snap.d.spec.as_ref().map(|s| s.selector.clone());
        let mut map: BTreeMap<String, Vec<Arc<Pod>>> =
            uids.iter().map(|u| (u.clone(), Vec::new())).collect();
        for pod in self.pods.store().state() {
            if pod.metadata.namespace.as_deref() != snap.key.namespace.as_deref() {
                continue;
            }
            if !labels::selector_matches(selector.as_ref(), pod.metadata.labels.as_ref()) {
                continue;
            }
            if let Some(owner) = claim::get_controller_of(&pod.metadata)
                && let Some(list) = map.get_mut(&owner.uid)
            {
                list.push(Arc::clone(&pod));
            }
        }
        map
    }

    /// upstream sync: scale (proportionally when a rollout is in progress), clean up when
    /// paused, and update the status. For paused Deployments and scaling events.
    async fn sync(&self, snap: &mut Snapshot) -> Result<Option<Duration>, Error> {
        let key = snap.key.clone();
        let (new_rs, mut old) = self
            .get_all_replica_sets_and_sync_revision(snap, false)
            .await?;
        let mut new_rs = new_rs;
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        let changes = sync::scale(&snap.d, new_rs.as_ref(), &old_refs).map_err(decide(&key))?;
        for (name, size) in changes {
            if let Some(rs) = new_rs.as_mut().filter(|r| r.name_any() == name) {
                *rs = self
                    .scale_replica_set_and_record_event(rs, size, snap)
                    .await?;
            } else if let Some(rs) = old.iter_mut().find(|r| r.name_any() == name) {
                *rs = self
                    .scale_replica_set_and_record_event(rs, size, snap)
                    .await?;
            }
        }
        let paused = snap.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused && rollback::get_rollback_to(&snap.d).is_none() {
            self.cleanup_deployment(&old, snap).await?;
        }
        self.sync_deployment_status(snap, old, new_rs).await
    }

    /// upstream syncStatusOnly (a Deployment being deleted).
    async fn sync_status_only(&self, snap: &mut Snapshot) -> Result<Option<Duration>, Error> {
        let (new_rs, old) = self
            .get_all_replica_sets_and_sync_revision(snap, false)
            .await?;
        self.sync_deployment_status(snap, old, new_rs).await
    }

    /// upstream syncDeploymentStatus: counts and the Available condition over all the
    /// Deployment's ReplicaSets, written when they changed.
    async fn sync_deployment_status(
        &self,
        snap: &mut Snapshot,
        old: Vec<ReplicaSet>,
        new_rs: Option<ReplicaSet>,
    ) -> Result<Option<Duration>, Error> {
        let mut all = old;
        all.extend(new_rs.clone());
        let all_refs: Vec<&ReplicaSet> = all.iter().collect();
        let st =
            sync::calculate_status(&all_refs, new_rs.as_ref(), &snap.d, jiff::Timestamp::now());
        self.update_status_if_changed(snap, st).await?;
        Ok(None)
    }

    /// upstream rollback.
    async fn rollback(&self, snap: &mut Snapshot) -> Result<Option<Duration>, Error> {
        let key = snap.key.clone();
        let (new_rs, old) = self
            .get_all_replica_sets_and_sync_revision(snap, true)
            .await?;
        let mut all = old;
        all.extend(new_rs);
        let all_refs: Vec<&ReplicaSet> = all.iter().collect();
        let object = Self::object_ref(&snap.d);
        let mut d = snap.d.clone();
        let decision = rollback::rollback_target(&d, &all_refs);
        if matches!(decision, rollback::RollbackDecision::NotRequested) {
            return Ok(None);
        }
        let event = decision.event(&d);
        // Copies the template and annotations when rolling back, and always clears the
        // rollback request (updateDeploymentAndClearRollbackTo).
        rollback::apply_rollback(&mut d, &decision);
        self.d_api(&key)
            .replace(&key.name, &PostParams::default(), &d)
            .await
            .map_err(api_err(&key, "rolling back"))?;
        if let Some(ev) = event {
            match ev.type_ {
                "Warning" => self.recorder.warning(&object, ev.reason, ev.message).await,
                _ => self.recorder.normal(&object, ev.reason, ev.message).await,
            }
        }
        Ok(None)
    }
    /// upstream scaleReplicaSetAndRecordEvent / scaleReplicaSet: sets the size and the
    /// desired/max replicas annotations, and records ScalingReplicaSet.
    async fn scale_replica_set_and_record_event(
        &self,
        rs: &ReplicaSet,
        new_scale: i32,
        snap: &mut Snapshot,
    ) -> Result<ReplicaSet, Error> {
        let key = snap.key.clone();
        let current = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let desired = snap.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let max = util::max_replicas(&snap.d);
        let size_needs_update = current != new_scale;
        let annotations_need_update = util::replicas_annotations_need_update(rs, desired, max);
        if !size_needs_update && !annotations_need_update {
            return Ok(rs.clone());
        }
        let mut updated = rs.clone();
        updated.spec.get_or_insert_with(Default::default).replicas = Some(new_scale);
        util::set_replicas_annotations(&mut updated, desired, max);
        // A merge patch of just the size and the two annotations: the ReplicaSet
        // controller keeps writing the status, so an update would often conflict.
        let patch = serde_json::json!({
            "metadata": { "annotations": {
                util::DESIRED_REPLICAS_ANNOTATION: updated.annotations().get(util::DESIRED_REPLICAS_ANNOTATION),
                util::MAX_REPLICAS_ANNOTATION: updated.annotations().get(util::MAX_REPLICAS_ANNOTATION),
            }},
            "spec": { "replicas": new_scale },
        });
        let updated = self
            .rs_api(&key)
            .patch(
                &updated.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(api_err(&key, "scaling a replica set"))?;
        if size_needs_update {
            self.recorder
                .normal(
                    &Self::object_ref(&snap.d),
                    "ScalingReplicaSet",
                    util::scaling_replica_set_message(&updated.name_any(), current, new_scale),
                )
                .await;
        }
        self.replace_cached_rs(snap, &updated);
        Ok(updated)
    }

    /// upstream cleanupDeployment: deletes the oldest old ReplicaSets beyond
    /// revisionHistoryLimit.
    async fn cleanup_deployment(&self, old: &[ReplicaSet], snap: &Snapshot) -> Result<(), Error> {
        let key = &snap.key;
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        for name in sync::cleanup_deployment(&old_refs, &snap.d) {
            let uid = old
                .iter()
                .find(|r| r.name_any() == name)
                .and_then(|r| r.metadata.uid.clone());
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.rs_api(key).delete(&name, &dp).await {
                Ok(_) => {
                    tracing::info!(deployment = %key, replicaset = %name, "deleted old replica set beyond revisionHistoryLimit")
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(api_err(key, "deleting an old replica set")(e)),
            }
        }
        Ok(())
    }

    /// upstream syncRolloutStatus: conditions and counts; asks to be synced again when the
    /// progress deadline is due.
    async fn sync_rollout_status_after(
        &self,
        snap: &mut Snapshot,
        old: Vec<ReplicaSet>,
        new_rs: Option<ReplicaSet>,
    ) -> Result<Option<Duration>, Error> {
        let mut all = old;
        all.extend(new_rs.clone());
        let all_refs: Vec<&ReplicaSet> = all.iter().collect();
        let (st, requeue) = progress::sync_rollout_status(
            &all_refs,
            new_rs.as_ref(),
            &snap.d,
            jiff::Timestamp::now(),
        );
        self.update_status_if_changed(snap, st).await?;
        Ok(requeue)
    }

    async fn update_status_if_changed(
        &self,
        snap: &mut Snapshot,
        st: DeploymentStatus,
    ) -> Result<(), Error> {
        if snap.d.status.as_ref() == Some(&st) {
            return Ok(());
        }
        let key = snap.key.clone();
        self.update_status(&mut snap.d, st, &key).await
    }

    async fn update_status(
        &self,
        d: &mut Deployment,
        st: DeploymentStatus,
        key: &ObjectKey,
    ) -> Result<(), Error> {
        let mut updated = d.clone();
        updated.status = Some(st);
        *d = self
            .d_api(key)
            .replace_status(&key.name, &PostParams::default(), &updated)
            .await
            .map_err(api_err(key, "updating status"))?;
        Ok(())
    }

    /// Writes the revision annotations on the Deployment (a main-resource update) and then
    /// its status, as upstream's dc.client.AppsV1().Deployments().UpdateStatus carries both.
    async fn update_deployment_annotations_and_status(
        &self,
        snap: &mut Snapshot,
        st: DeploymentStatus,
    ) -> Result<(), Error> {
        let key = snap.key.clone();
        let annotations = snap.d.metadata.annotations.clone().unwrap_or_default();
        // The resourceVersion makes the patch conditional, as upstream's UpdateStatus of
        // the cached Deployment is: the status written next is computed from the snapshot,
        // so a snapshot older than the stored object must conflict (and be synced again)
        // rather than overwrite what was written since, such as a user's own condition.
        let patch = serde_json::json!({ "metadata": {
            "annotations": annotations,
            "resourceVersion": snap.d.metadata.resource_version,
        } });
        let patched = self
            .d_api(&key)
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(&key, "updating revision annotations"))?;
        snap.d.metadata = patched.metadata;
        self.update_status(&mut snap.d, st, &key).await
    }
}
