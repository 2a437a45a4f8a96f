//! The PV controller's shell (upstream `pv_controller_base.go`: `NewController`, `Run`,
//! `volumeWorker`, `claimWorker`, `resync`): the informers' changes queue volume names and
//! claim keys; one worker per queue (upstream: `syncClaim` is not reentrant) takes a key,
//! reads the object from the informer and hands it to the decision core
//! ([`super::pv_controller`]: `update_volume` / `update_claim`), or, when the informer no
//! longer has it, tells the core it was deleted and queues what it was bound to. Every
//! `--pvclaimbinder-sync-period` every volume and claim is queued again.
//!
//! [`KubePvClient`] is the core's [`PvClient`] over the real apiserver (PUTs with the
//! object's resourceVersion, as upstream's `Update`) and the shared informers' caches.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass};
use tokio_util::sync::CancellationToken;

use super::client::{ApiError, EventType, PvClient};
use super::plugins::VolumePlugin;
use super::pv_controller::PersistentVolumeController;
use crate::manager::events::EventRecorder;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

/// The `--controllers` name (upstream `PersistentVolumeBinderController`).
pub const CONTROLLER_NAME: &str = "persistentvolume-binder-controller";
/// The events' source (upstream's recorder component).
pub const EVENT_SOURCE: &str = "persistentvolume-controller";
const VOLUME_QUEUE: &str = "volumes";
const CLAIM_QUEUE: &str = "claims";

/// The informers it reads (shared with the other controllers).
pub struct Informers {
    pub volumes: Arc<Informer<PersistentVolume>>,
    pub claims: Arc<Informer<PersistentVolumeClaim>>,
    pub classes: Arc<Informer<StorageClass>>,
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
}

/// The decision core's client: the apiserver, the informers' caches, the event recorder.
pub struct KubePvClient {
    client: Client,
    classes: Arc<Informer<StorageClass>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    recorder: EventRecorder,
    /// The binder's claim queue (`enqueue_claim`).
    claim_queue: Arc<WorkQueue<ObjectKey>>,
}

fn api_error(what: String, e: kube::Error) -> ApiError {
    match e {
        kube::Error::Api(s) if s.code == 404 => ApiError::NotFound(what),
        kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists" => {
            ApiError::AlreadyExists(what)
        }
        kube::Error::Api(s) if s.code == 409 => ApiError::Conflict(what),
        other => ApiError::Other(format!("{what}: {other}")),
    }
}

fn volume_what(name: &str) -> String {
    format!("persistentvolumes.rekube.io {name:?}")
}

fn claim_what(claim: &PersistentVolumeClaim) -> String {
    format!(
        "persistentvolumeclaims.rekube.io \"{}/{}\"",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

impl KubePvClient {
    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn claims(&self, namespace: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

impl PvClient for KubePvClient {
    async fn get_volume(&self, name: &str) -> Result<PersistentVolume, ApiError> {
        self.volumes()
            .get(name)
            .await
            .map_err(|e| api_error(volume_what(name), e))
    }

    async fn get_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        self.claims(namespace).get(name).await.map_err(|e| {
            api_error(
                format!("persistentvolumeclaims.rekube.io \"{namespace}/{name}\""),
                e,
            )
        })
    }

    async fn create_volume(&self, volume: &PersistentVolume) -> Result<PersistentVolume, ApiError> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        self.volumes()
            .create(&PostParams::default(), volume)
            .await
            .map_err(|e| api_error(volume_what(&name), e))
    }

    async fn update_volume(&self, volume: &PersistentVolume) -> Result<PersistentVolume, ApiError> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        self.volumes()
            .replace(&name, &PostParams::default(), volume)
            .await
            .map_err(|e| api_error(volume_what(&name), e))
    }

    async fn update_volume_status(
        &self,
        volume: &PersistentVolume,
    ) -> Result<PersistentVolume, ApiError> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        self.volumes()
            .replace_status(&name, &PostParams::default(), volume)
            .await
            .map_err(|e| api_error(volume_what(&name), e))
    }

    async fn delete_volume(&self, name: &str) -> Result<(), ApiError> {
        self.volumes()
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| api_error(volume_what(name), e))
    }

    async fn update_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        let namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let name = claim.metadata.name.clone().unwrap_or_default();
        self.claims(&namespace)
            .replace(&name, &PostParams::default(), claim)
            .await
            .map_err(|e| api_error(claim_what(claim), e))
    }

    async fn update_claim_status(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        let namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let name = claim.metadata.name.clone().unwrap_or_default();
        self.claims(&namespace)
            .replace_status(&name, &PostParams::default(), claim)
            .await
            .map_err(|e| api_error(claim_what(claim), e))
    }

    fn storage_class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.classes.get(&ObjectKey::new(None, name))
    }

    fn storage_classes(&self) -> Vec<Arc<StorageClass>> {
        self.classes.store().state()
    }

    fn pods(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods
            .store()
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .collect()
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectKey::new(None, name))
    }

    fn enqueue_claim(&self, key: &str) {
        self.claim_queue.add(claim_key(key));
    }

    fn event(&self, object: &ObjectReference, type_: EventType, reason: &str, message: String) {
        self.recorder.record(object, type_, reason, message);
    }
}

/// The controller: the core, its two queues and the informers.
pub struct PersistentVolumeBinder {
    core: Arc<PersistentVolumeController<KubePvClient>>,
    informers: Informers,
    volume_queue: Arc<WorkQueue<ObjectKey>>,
    claim_queue: Arc<WorkQueue<ObjectKey>>,
    resync_period: Duration,
    metrics: Metrics,
}

impl PersistentVolumeBinder {
    pub fn new(
        client: Client,
        plugins: Vec<Arc<dyn VolumePlugin>>,
        informers: Informers,
        resync_period: Duration,
        enable_dynamic_provisioning: bool,
        metrics: Metrics,
    ) -> Arc<Self> {
        let claim_queue = WorkQueue::new(CLAIM_QUEUE);
        let kube = KubePvClient {
            recorder: EventRecorder::new(client.clone(), EVENT_SOURCE),
            claim_queue: Arc::clone(&claim_queue),
            client,
            classes: Arc::clone(&informers.classes),
            pods: Arc::clone(&informers.pods),
            nodes: Arc::clone(&informers.nodes),
        };
        let core = PersistentVolumeController::new(kube, plugins, enable_dynamic_provisioning);
        let c = Arc::new(PersistentVolumeBinder {
            core,
            informers,
            volume_queue: WorkQueue::new(VOLUME_QUEUE),
            claim_queue,
            resync_period,
            metrics,
        });
        // upstream's volume and claim event handlers: enqueueWork.
        let weak = Arc::downgrade(&c);
        c.informers.volumes.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let (Change::Added(v) | Change::Updated { new: v, .. } | Change::Deleted(v)) = change;
            c.volume_queue.add(ObjectKey::of(v.as_ref()));
        });
        let weak = Arc::downgrade(&c);
        c.informers.claims.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let (Change::Added(v) | Change::Updated { new: v, .. } | Change::Deleted(v)) = change;
            c.claim_queue.add(ObjectKey::of(v.as_ref()));
        });
        c
    }

    /// Both queues (for the manager's shutdown).
    pub fn queues(&self) -> [Arc<WorkQueue<ObjectKey>>; 2] {
        [
            Arc::clone(&self.volume_queue),
            Arc::clone(&self.claim_queue),
        ]
    }

    /// upstream `Run`: waits for the caches, fills the core's caches from them, then runs
    /// one worker per queue and the resync until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let i = &self.informers;
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![
                i.volumes.has_synced(),
                i.claims.has_synced(),
                i.classes.has_synced(),
                i.pods.has_synced(),
                i.nodes.has_synced(),
            ],
        )
        .await;
        self.core.initialize_caches(
            i.volumes
                .store()
                .state()
                .iter()
                .map(|v| (**v).clone())
                .collect(),
            i.claims
                .store()
                .state()
                .iter()
                .map(|c| (**c).clone())
                .collect(),
        );
        let this = Arc::clone(&self);
        let volumes = run_workers(
            Arc::clone(&self.volume_queue),
            1,
            self.metrics.clone(),
            move |key| {
                let this = Arc::clone(&this);
                async move { this.sync_volume_by_key(&key).await.map(|()| None) }
            },
        );
        let this = Arc::clone(&self);
        let claims = run_workers(
            Arc::clone(&self.claim_queue),
            1,
            self.metrics.clone(),
            move |key| {
                let this = Arc::clone(&this);
                async move { this.sync_claim_by_key(&key).await.map(|()| None) }
            },
        );
        let this = Arc::clone(&self);
        let resync = async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(this.resync_period) => this.resync(),
                }
            }
        };
        tokio::join!(volumes, claims, resync);
    }

    /// upstream `syncVolumeByKey` (volumeWorker): the informer's volume to the core, or
    /// its deletion when the informer no longer has it.
    async fn sync_volume_by_key(&self, key: &ObjectKey) -> Result<(), String> {
        if let Some(volume) = self.informers.volumes.get(key) {
            return self
                .core
                .update_volume(&volume)
                .await
                .map_err(|e| e.to_string());
        }
        let Some(cached) = self.core.cached_volume(&key.name) else {
            return Ok(());
        };
        if let Some(claim) = self.core.delete_volume(&cached).await {
            self.claim_queue.add(claim_key(&claim));
        }
        Ok(())
    }

    /// upstream `syncClaimByKey` (claimWorker).
    async fn sync_claim_by_key(&self, key: &ObjectKey) -> Result<(), String> {
        if let Some(claim) = self.informers.claims.get(key) {
            return self
                .core
                .update_claim(&claim)
                .await
                .map_err(|e| e.to_string());
        }
        let Some(cached) = self.core.cached_claim(&key.to_string()) else {
            return Ok(());
        };
        if let Some(volume) = self.core.delete_claim(&cached).await {
            self.volume_queue.add(ObjectKey::new(None, &volume));
        }
        Ok(())
    }

    /// upstream `resync`: every claim and volume of the informers queued again.
    fn resync(&self) {
        for c in self.informers.claims.store().state() {
            self.claim_queue.add(ObjectKey::of(c.as_ref()));
        }
        for v in self.informers.volumes.store().state() {
            self.volume_queue.add(ObjectKey::of(v.as_ref()));
        }
    }
}

/// A `namespace/name` claim key as an [`ObjectKey`].
fn claim_key(key: &str) -> ObjectKey {
    match key.split_once('/') {
        Some((ns, name)) => ObjectKey::new(Some(ns), name),
        None => ObjectKey::new(None, key),
    }
}
