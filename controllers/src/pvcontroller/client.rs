//! What the PV controller's decision core needs from the world (upstream: the
//! `PersistentVolumeController`'s `kubeClient`, listers and `eventRecorder`), behind one
//! trait so that the core is the same code under the controller manager (the shell in
//! [`super::controller`], over the real apiserver and the informers' caches) and under the
//! ported upstream test tables (an in-memory store, as upstream's fake clientset with its
//! reactor, in `super::testing`).
//!
//! The API calls are async; the lister lookups and event recording are not (upstream's
//! listers read the informer caches and its event recorder never blocks).
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass};

pub use rekube_crds::events::EventType;

/// An API call's failure, as far as the controller tells them apart (upstream:
/// `apierrors.IsNotFound`, `IsConflict`, `IsAlreadyExists`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 404.
    #[error("{0} not found")]
    NotFound(String),
    /// 409 on update: the object changed since it was read.
    #[error("operation cannot be fulfilled on {0}: the object has been modified")]
    Conflict(String),
    /// 409 on create.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Anything else, with the apiserver's (or the test reactor's) message.
    #[error("{0}")]
    Other(String),
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::NotFound(_))
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApiError::Conflict(_))
    }
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ApiError::AlreadyExists(_))
    }
}

/// The apiserver, the listers and the event recorder of the PV controller.
pub trait PvClient: Send + Sync {
    // --- API calls (upstream `ctrl.kubeClient.CoreV1()...`) ---

    /// GET a volume from the apiserver (not the cache).
    fn get_volume(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<PersistentVolume, ApiError>> + Send;
    /// GET a claim from the apiserver (not the cache).
    fn get_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<PersistentVolumeClaim, ApiError>> + Send;
    /// POST a volume.
    fn create_volume(
        &self,
        volume: &PersistentVolume,
    ) -> impl Future<Output = Result<PersistentVolume, ApiError>> + Send;
    /// PUT a volume (metadata and spec), with its resourceVersion as precondition.
    fn update_volume(
        &self,
        volume: &PersistentVolume,
    ) -> impl Future<Output = Result<PersistentVolume, ApiError>> + Send;
    /// PUT a volume's status subresource, with its resourceVersion as precondition.
    fn update_volume_status(
        &self,
        volume: &PersistentVolume,
    ) -> impl Future<Output = Result<PersistentVolume, ApiError>> + Send;
    /// DELETE a volume.
    fn delete_volume(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// PUT a claim (metadata and spec), with its resourceVersion as precondition.
    fn update_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> impl Future<Output = Result<PersistentVolumeClaim, ApiError>> + Send;
    /// PUT a claim's status subresource, with its resourceVersion as precondition.
    fn update_claim_status(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> impl Future<Output = Result<PersistentVolumeClaim, ApiError>> + Send;

    // --- listers (upstream `classLister`, `podIndexer`, `NodeLister`): the caches ---

    /// A StorageClass by name.
    fn storage_class(&self, name: &str) -> Option<Arc<StorageClass>>;
    /// Every StorageClass (for the default class).
    fn storage_classes(&self) -> Vec<Arc<StorageClass>>;
    /// The pods of a namespace (upstream's `PodPVCIndex` is computed from them by the
    /// core).
    fn pods(&self, namespace: &str) -> Vec<Arc<Pod>>;
    /// A Node by name.
    fn node(&self, name: &str) -> Option<Arc<Node>>;

    // --- the claim work queue (upstream `ctrl.claimQueue.Add`) ---

    /// Queues the claim (`namespace/name`) for a sync soon: `syncVolume` does so when a
    /// volume is bound to a claim that is not bound to it yet (the claim's sync completes
    /// the binding; this mostly speeds up the binding of provisioned volumes). The shell
    /// syncs it as any queued claim (upstream `syncClaimByKey`). The default does nothing:
    /// the claim is then bound at its next update or resync.
    fn enqueue_claim(&self, key: &str) {
        let _ = key;
    }

    // --- events (upstream `ctrl.eventRecorder.Event`) ---

    /// Records an event about `object`; never blocks, never fails.
    fn event(&self, object: &ObjectReference, type_: EventType, reason: &str, message: String);
}
