//! The PersistentVolume controller's decisions (upstream:
//! `pkg/controller/volume/persistentvolume/pv_controller.go` and the cache and event
//! handling of `pv_controller_base.go`): binding claims to volumes, provisioning volumes
//! for claims, and reclaiming (retaining, recycling, deleting) released volumes.
//!
//! The binding is a two-step process: `volume.spec.claimRef` is written first, then
//! `claim.spec.volumeName`; at any point either object may be changed by a user or
//! another controller, or deleted, and every sync recovers from what it finds. Both
//! objects are kept in the controller's own caches (`volumes`, `claims`), fed by the
//! informers (through [`update_volume`](PersistentVolumeController::update_volume) and
//! friends) and by the controller's own writes, so that a stale informer event does not
//! undo a write the controller already made (`storeObjectUpdate`: an object older than the
//! cached one, by its integer resourceVersion, is ignored).
//!
//! Provisioning, deletion and recycling run as operations on their own tokio tasks, named
//! as upstream (`provision-<namespace>/<claim>[<uid>]`, `delete-<volume>[<uid>]`,
//! `recycle-<volume>[<uid>]`); an operation already running is not started again, and a
//! failed one is not retried before its exponential backoff (500ms doubling up to 2m2s)
//! has passed (upstream's `goroutinemap` with `exponentialBackOffOnError`).
//!
//! Differences from upstream:
//! - CSI migration is not ported: rekube has no in-tree volume plugins to migrate, so the
//!   `pv.kubernetes.io/migrated-to` annotation is neither set, removed nor honoured
//!   (`updateClaimMigrationAnnotations`, the annotation half of
//!   `updateVolumeMigrationAnnotationsAndFinalizers`, the migrated-to checks of
//!   `reclaimVolume` and `findDeletablePlugin`, the translation of provisioner names).
//!   The finalizer half is ported as [`modify_deletion_finalizers`] with migration
//!   always off.
//! - the claim lister is not asked before the apiserver when `syncVolume` looks for a
//!   claim missing from the controller's cache: the apiserver answers alone.
//! - upstream's PodPVCIndex is computed on the fly from the namespace's pods.
//! - no metrics (`operationTimestamps`, `RecordMetric`).
//! - `claimRef`s are references to rekube.io/v1 PersistentVolumeClaims (the kind the
//!   claims are).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaimStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource as _;
use rekube_crds::quantity::{amount, parse_quantity};
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod, StorageClass};

use super::client::{ApiError, EventType, PvClient};
use super::index::{
    IndexError, PersistentVolumeOrderedIndex, check_volume_mode_mismatches,
    check_volume_satisfy_claim, claim_to_claim_key, claimref_to_claim_key,
    is_volume_bound_to_claim,
};
use super::plugins::{DeleteError, VolumePlugin, VolumePluginMgr};
use crate::scheduler::resources::RESOURCE_STORAGE;
use rekube_crds::pod_refs::volume_claim_name;

use crate::scheduler::volume_binding::claim_class;

pub use crate::scheduler::volume_binding::{
    ANNOTATION_BETA_STORAGE_CLASS as BETA_STORAGE_CLASS_ANNOTATION,
    ANNOTATION_BIND_COMPLETED as ANN_BIND_COMPLETED, ANNOTATION_SELECTED_NODE as ANN_SELECTED_NODE,
    NOT_SUPPORTED_PROVISIONER, VOLUME_BINDING_WAIT_FOR_FIRST_CONSUMER,
};

pub use rekube_crds::storage_keys::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED,
    ANN_STORAGE_PROVISIONER, PV_DELETION_PROTECTION_FINALIZER,
};
/// This controller's deletion protection finalizer on volumes its plugins provisioned
/// (upstream `PVDeletionInTreeProtectionFinalizer`).
pub const PV_DELETION_IN_TREE_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-controller";
/// A volume's size before an offline resize (upstream `util.AnnPreResizeCapacity`).
pub const ANN_PRE_RESIZE_CAPACITY: &str = "volume.alpha.kubernetes.io/pre-resize-capacity";
/// Marks the default StorageClass (upstream `util.IsDefaultStorageClassAnnotation`).
pub const IS_DEFAULT_STORAGE_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta twin of [`IS_DEFAULT_STORAGE_CLASS_ANNOTATION`].
pub const BETA_IS_DEFAULT_STORAGE_CLASS_ANNOTATION: &str =
    "storageclass.beta.kubernetes.io/is-default-class";

/// Upstream `createProvisionedPVRetryCount`.
pub const CREATE_PROVISIONED_PV_RETRY_COUNT: usize = 5;
/// Upstream `createProvisionedPVInterval`.
pub const CREATE_PROVISIONED_PV_INTERVAL: Duration = Duration::from_secs(10);

/// Volume phases (upstream `v1.PersistentVolumePhase`).
pub const VOLUME_PENDING: &str = "Pending";
pub const VOLUME_AVAILABLE: &str = "Available";
pub const VOLUME_BOUND: &str = "Bound";
pub const VOLUME_RELEASED: &str = "Released";
pub const VOLUME_FAILED: &str = "Failed";
/// Claim phases (upstream `v1.PersistentVolumeClaimPhase`).
pub const CLAIM_PENDING: &str = "Pending";
pub const CLAIM_BOUND: &str = "Bound";
pub const CLAIM_LOST: &str = "Lost";
/// Reclaim policies (upstream `v1.PersistentVolumeReclaimPolicy`).
pub const RECLAIM_RETAIN: &str = "Retain";
pub const RECLAIM_RECYCLE: &str = "Recycle";
pub const RECLAIM_DELETE: &str = "Delete";

/// Event reasons (upstream `pkg/controller/volume/events`).
pub mod events {
    pub const FAILED_BINDING: &str = "FailedBinding";
    pub const VOLUME_MISMATCH: &str = "VolumeMismatch";
    pub const VOLUME_FAILED_RECYCLE: &str = "VolumeFailedRecycle";
    pub const VOLUME_RECYCLED: &str = "VolumeRecycled";
    pub const RECYCLER_POD: &str = "RecyclerPod";
    pub const VOLUME_DELETE: &str = "VolumeDelete";
    pub const VOLUME_FAILED_DELETE: &str = "VolumeFailedDelete";
    pub const EXTERNAL_PROVISIONING: &str = "ExternalProvisioning";
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    pub const PROVISIONING_CLEANUP_FAILED: &str = "ProvisioningCleanupFailed";
    pub const PROVISIONING_SUCCEEDED: &str = "ProvisioningSucceeded";
    pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";
    pub const WAIT_FOR_POD_SCHEDULED: &str = "WaitForPodScheduled";
}

/// The PV controller's errors, with upstream's texts where they reach a status message or
/// an event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("error finding PV for claim {claim:?}: {source}")]
    FindingVolume { claim: String, source: IndexError },
    #[error("can't update PersistentVolumeClaim[{claim:?}]: {source}")]
    AssigningDefaultClass { claim: String, source: ApiError },
    #[error("volumeBindingMode not set for StorageClass {class:?}")]
    VolumeBindingModeNotSet { class: String },
    #[error(
        "invalid binding of claim {claim:?} to volume {volume:?}: volume already claimed by {claimed_by:?}"
    )]
    InvalidBinding {
        claim: String,
        volume: String,
        claimed_by: String,
    },
    #[error("PersistentVolume {volume:?} is without a storage capacity")]
    NoStorageCapacity { volume: String },
    #[error("error parsing ResourceVersion {version:?} of {kind} {name:?}")]
    ResourceVersion {
        kind: &'static str,
        name: String,
        version: String,
    },
    #[error("persistent Volume Controller can't anneal finalizer of volume {volume:?}: {source}")]
    AnnealFinalizers { volume: String, source: ApiError },
    #[error("persistent volume controller can't update finalizer of volume {volume:?}: {source}")]
    RemoveFinalizer { volume: String, source: ApiError },
    /// The StorageClass a claim asks for does not exist.
    #[error("storageclass.storage.k8s.io {class:?} not found")]
    StorageClassNotFound { class: String },
    /// No plugin can provision, delete or recycle (upstream's plugin manager's texts).
    #[error("{0}")]
    Plugin(String),
    #[error("error getting deleter volume plugin for volume {volume:?}: {message}")]
    FindingDeleter { volume: String, message: String },
    #[error("failed to create deleter for volume {volume:?}: {message}")]
    NewDeleter { volume: String, message: String },
    /// The plugin's deletion failed; the text is the plugin's (it goes into the volume's
    /// status message).
    #[error("{source}")]
    Delete { volume: String, source: DeleteError },
    /// A provisioning of a claim failed (the event has the details).
    #[error("provisioning claim {claim:?}: {message}")]
    Provisioning { claim: String, message: String },
}

impl Error {
    /// Whether the error is the apiserver's conflict on a stale resourceVersion (upstream
    /// `errors.IsConflict`): frequent and harmless, the next sync retries.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api(e) if e.is_conflict())
    }
}

/// The state of a named operation (upstream goroutinemap's `operation`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OperationState {
    pub(crate) pending: bool,
    /// When the last run failed and how long to wait after it.
    pub(crate) backoff: Option<(tokio::time::Instant, Duration)>,
}

/// Upstream's `preOperationHook`, for tests.
#[cfg(test)]
pub(crate) type PreOperationHook<C> =
    Arc<dyn Fn(&PersistentVolumeController<C>, &str) + Send + Sync>;

/// The PersistentVolume controller (upstream `PersistentVolumeController`), used as
/// `Arc<Self>`: operations run on tasks holding a reference.
pub struct PersistentVolumeController<C: PvClient + 'static> {
    pub(crate) client: C,
    /// The last known version of every volume (upstream `ctrl.volumes`).
    pub(crate) volumes: Mutex<PersistentVolumeOrderedIndex>,
    /// The last known version of every claim, by `namespace/name` (upstream `ctrl.claims`).
    pub(crate) claims: Mutex<BTreeMap<String, Arc<PersistentVolumeClaim>>>,
    pub(crate) volume_plugin_mgr: VolumePluginMgr,
    /// Scheduled and failed operations by name (upstream `runningOperations`).
    pub(crate) running_operations: Mutex<BTreeMap<String, OperationState>>,
    pub(crate) operations_changed: tokio::sync::Notify,
    pub(crate) enable_dynamic_provisioning: bool,
    pub(crate) create_provisioned_pv_retry_count: usize,
    pub(crate) create_provisioned_pv_interval: Duration,
    #[cfg(test)]
    pub(crate) pre_operation_hook: Mutex<Option<PreOperationHook<C>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// --- field access, Go's zero values for missing fields ---

pub(crate) fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

pub(crate) fn has_annotation(meta: &ObjectMeta, key: &str) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

pub(crate) fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Upstream `metav1.SetMetaDataAnnotation`.
pub(crate) fn set_annotation(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.to_string());
}

pub(crate) fn claim_ref(volume: &PersistentVolume) -> Option<&ObjectReference> {
    volume.spec.as_ref()?.claim_ref.as_ref()
}

fn claim_ref_uid(claim_ref: &ObjectReference) -> &str {
    claim_ref.uid.as_deref().unwrap_or_default()
}

fn uid_of(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or_default()
}

pub(crate) fn claim_volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

pub(crate) fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

pub(crate) fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

pub(crate) fn reclaim_policy(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or_default()
}

fn resource_version(meta: &ObjectMeta) -> &str {
    meta.resource_version.as_deref().unwrap_or_default()
}

/// Upstream `PersistentVolumeClaimHasClass`: the beta annotation or `storageClassName` is
/// set (to anything, "" included).
pub fn persistent_volume_claim_has_class(claim: &PersistentVolumeClaim) -> bool {
    has_annotation(&claim.metadata, BETA_STORAGE_CLASS_ANNOTATION)
        || claim
            .spec
            .as_ref()
            .is_some_and(|s| s.storage_class_name.is_some())
}

/// Upstream `IsDelayBindingProvisioning`: the scheduler chose a node for the claim.
pub fn is_delay_binding_provisioning(claim: &PersistentVolumeClaim) -> bool {
    has_annotation(&claim.metadata, ANN_SELECTED_NODE)
}

/// Upstream `IsDelayBindingMode`, given the claim's class as found by its name
/// ([`claim_class`]): a claim without class, or of a class that does not exist, binds
/// immediately; a class without `volumeBindingMode` is an error.
pub fn is_delay_binding_mode(
    claim: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
) -> Result<bool, Error> {
    let class_name = claim_class(claim);
    if class_name.is_empty() {
        return Ok(false);
    }
    let Some(class) = class else {
        return Ok(false);
    };
    match class.volume_binding_mode.as_deref() {
        None => Err(Error::VolumeBindingModeNotSet {
            class: class_name.to_string(),
        }),
        Some(mode) => Ok(mode == VOLUME_BINDING_WAIT_FOR_FIRST_CONSUMER),
    }
}

/// Upstream `util.IsDefaultAnnotation`.
pub fn is_default_annotation(meta: &ObjectMeta) -> bool {
    annotation(meta, IS_DEFAULT_STORAGE_CLASS_ANNOTATION) == Some("true")
        || annotation(meta, BETA_IS_DEFAULT_STORAGE_CLASS_ANNOTATION) == Some("true")
}

/// Upstream `util.GetDefaultClass`: of the classes annotated as default, the newest, the
/// first by name among equally new ones.
pub fn get_default_class(classes: &[Arc<StorageClass>]) -> Option<Arc<StorageClass>> {
    let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
    classes
        .iter()
        .filter(|c| is_default_annotation(&c.metadata))
        .min_by(|a, b| {
            created(b)
                .cmp(&created(a))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
        .cloned()
}

pub use crate::util::pod::is_pod_terminated;

/// Upstream `modifyDeletionFinalizers`, CSI migration always off: a volume provisioned by
/// an in-tree-named plugin (`kubernetes.io/...`) keeps this controller's deletion
/// protection finalizer while its reclaim policy is Delete and loses it otherwise; the
/// external provisioner's finalizer is removed from it. Returns the finalizers and whether
/// they changed.
pub fn modify_deletion_finalizers(volume: &PersistentVolume) -> (Option<Vec<String>>, bool) {
    let Some(provisioner) = annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED) else {
        // Only dynamically provisioned volumes are protected.
        return (volume.metadata.finalizers.clone(), false);
    };
    if !provisioner.starts_with("kubernetes.io/") {
        return (volume.metadata.finalizers.clone(), false);
    }
    let mut out: Vec<String> = volume.metadata.finalizers.clone().unwrap_or_default();
    let mut modified = false;
    let has = |f: &[String], name: &str| f.iter().any(|x| x == name);
    let policy = reclaim_policy(volume);
    if policy == RECLAIM_DELETE && !has(&out, PV_DELETION_IN_TREE_PROTECTION_FINALIZER) {
        out.push(PV_DELETION_IN_TREE_PROTECTION_FINALIZER.to_string());
        modified = true;
    } else if (policy == RECLAIM_RETAIN || policy == RECLAIM_RECYCLE)
        && has(&out, PV_DELETION_IN_TREE_PROTECTION_FINALIZER)
    {
        out.retain(|f| f != PV_DELETION_IN_TREE_PROTECTION_FINALIZER);
        modified = true;
    }
    if has(&out, PV_DELETION_PROTECTION_FINALIZER) {
        out.retain(|f| f != PV_DELETION_PROTECTION_FINALIZER);
        modified = true;
    }
    // Go's append to a nil slice and slice.RemoveString keep nil for "nothing".
    let out = (!out.is_empty()).then_some(out);
    (out, modified)
}

/// Upstream `storeObjectUpdate`'s decision: whether `new_version` replaces the cached
/// `old_version` (the same version passes: periodic syncs must be processed).
pub(crate) fn is_newer_or_same(
    kind: &'static str,
    name: &str,
    old_version: &str,
    new_version: &str,
) -> Result<bool, Error> {
    let parse = |version: &str| {
        version.parse::<i64>().map_err(|_| Error::ResourceVersion {
            kind,
            name: name.to_string(),
            version: version.to_string(),
        })
    };
    let new = parse(new_version)?;
    let old = parse(old_version)?;
    Ok(old <= new)
}

/// Upstream `GetBindVolumeToClaim` (component-helpers pv_helpers.go): the volume with its
/// claimRef pointing at the claim (name, namespace, UID), marked bound by the controller
/// unless it was already bound to the claim; `None` when nothing changes. Used by this
/// controller's bind and by the scheduler's PreBind.
pub fn get_bind_volume_to_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Option<PersistentVolume> {
    let should_set_bound_by_controller = !is_volume_bound_to_claim(volume, claim);
    let mut clone = volume.clone();
    let mut dirty = false;
    let same_ref = claim_ref(volume).is_some_and(|r| {
        r.name.as_deref().unwrap_or_default() == name_of(&claim.metadata)
            && r.namespace.as_deref().unwrap_or_default()
                == claim.metadata.namespace.as_deref().unwrap_or_default()
            && claim_ref_uid(r) == uid_of(&claim.metadata)
    });
    if !same_ref {
        clone.spec.get_or_insert_with(Default::default).claim_ref = Some(claim.object_ref(&()));
        dirty = true;
    }
    if should_set_bound_by_controller && !has_annotation(&clone.metadata, ANN_BOUND_BY_CONTROLLER) {
        set_annotation(&mut clone.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
        dirty = true;
    }
    dirty.then_some(clone)
}

impl<C: PvClient + 'static> PersistentVolumeController<C> {
    /// Upstream `NewController`, given the client, the volume plugins and whether claims
    /// are provisioned.
    pub fn new(
        client: C,
        plugins: Vec<Arc<dyn VolumePlugin>>,
        enable_dynamic_provisioning: bool,
    ) -> Arc<Self> {
        Arc::new(Self::new_unshared(
            client,
            plugins,
            enable_dynamic_provisioning,
        ))
    }

    pub(crate) fn new_unshared(
        client: C,
        plugins: Vec<Arc<dyn VolumePlugin>>,
        enable_dynamic_provisioning: bool,
    ) -> Self {
        Self {
            client,
            volumes: Mutex::new(PersistentVolumeOrderedIndex::new()),
            claims: Mutex::new(BTreeMap::new()),
            volume_plugin_mgr: VolumePluginMgr::new(plugins),
            running_operations: Mutex::new(BTreeMap::new()),
            operations_changed: tokio::sync::Notify::new(),
            enable_dynamic_provisioning,
            create_provisioned_pv_retry_count: CREATE_PROVISIONED_PV_RETRY_COUNT,
            create_provisioned_pv_interval: CREATE_PROVISIONED_PV_INTERVAL,
            #[cfg(test)]
            pre_operation_hook: Mutex::new(None),
        }
    }

    /// The client the controller was made with.
    pub fn client(&self) -> &C {
        &self.client
    }

    // --- caches (pv_controller_base.go) ---

    /// Upstream `initializeCaches`: fills the caches from the informers' first lists.
    pub fn initialize_caches(
        &self,
        volumes: Vec<PersistentVolume>,
        claims: Vec<PersistentVolumeClaim>,
    ) {
        for volume in volumes {
            if let Err(err) = self.store_volume_update(&volume) {
                tracing::error!(volume = name_of(&volume.metadata), %err, "error updating volume cache");
            }
        }
        for claim in claims {
            if let Err(err) = self.store_claim_update(&claim) {
                tracing::error!(claim = %claim_to_claim_key(&claim), %err, "error updating claim cache");
            }
        }
        tracing::debug!("controller initialized");
    }

    /// The cached volume of this name.
    pub fn cached_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        lock(&self.volumes).get_by_key(name).cloned()
    }

    /// The cached claim of this `namespace/name`.
    pub fn cached_claim(&self, key: &str) -> Option<Arc<PersistentVolumeClaim>> {
        lock(&self.claims).get(key).cloned()
    }

    /// The names of the cached volumes (for a resync).
    pub fn volume_names(&self) -> Vec<String> {
        lock(&self.volumes)
            .list()
            .map(|v| name_of(&v.metadata).to_string())
            .collect()
    }

    /// The `namespace/name` keys of the cached claims (for a resync).
    pub fn claim_keys(&self) -> Vec<String> {
        lock(&self.claims).keys().cloned().collect()
    }

    /// Upstream `storeVolumeUpdate` (`storeObjectUpdate` on the volume cache): stores the
    /// volume unless the cached one is newer; whether it was stored.
    pub(crate) fn store_volume_update(&self, volume: &PersistentVolume) -> Result<bool, Error> {
        let mut volumes = lock(&self.volumes);
        let name = name_of(&volume.metadata);
        if let Some(old) = volumes.get_by_key(name) {
            let newer = is_newer_or_same(
                "volume",
                name,
                resource_version(&old.metadata),
                resource_version(&volume.metadata),
            )?;
            if !newer {
                tracing::trace!(volume = name, "storeObjectUpdate: ignoring an old version");
                return Ok(false);
            }
        }
        volumes.update(volume.clone());
        Ok(true)
    }

    /// Upstream `storeClaimUpdate` (`storeObjectUpdate` on the claim cache).
    pub(crate) fn store_claim_update(&self, claim: &PersistentVolumeClaim) -> Result<bool, Error> {
        let mut claims = lock(&self.claims);
        let key = claim_to_claim_key(claim);
        if let Some(old) = claims.get(&key) {
            let newer = is_newer_or_same(
                "claim",
                &key,
                resource_version(&old.metadata),
                resource_version(&claim.metadata),
            )?;
            if !newer {
                tracing::trace!(claim = %key, "storeObjectUpdate: ignoring an old version");
                return Ok(false);
            }
        }
        claims.insert(key, Arc::new(claim.clone()));
        Ok(true)
    }

    /// Upstream `updateVolume`: a volume was added, updated or resynced.
    pub async fn update_volume(self: &Arc<Self>, volume: &PersistentVolume) -> Result<(), Error> {
        if !self.store_volume_update(volume)? {
            return Ok(());
        }
        self.sync_volume(volume).await.inspect_err(|err| {
            if err.is_conflict() {
                tracing::debug!(volume = name_of(&volume.metadata), %err, "could not sync volume");
            } else {
                tracing::error!(volume = name_of(&volume.metadata), %err, "could not sync volume");
            }
        })
    }

    /// Upstream `deleteVolume`: a volume was deleted. Returns the key of its claim, to be
    /// synced now rather than at the next resync (it becomes Lost).
    pub async fn delete_volume(self: &Arc<Self>, volume: &PersistentVolume) -> Option<String> {
        let name = name_of(&volume.metadata);
        lock(&self.volumes).delete(name);
        tracing::debug!(volume = name, "volume deleted");
        claim_ref(volume).map(claimref_to_claim_key)
    }

    /// Upstream `updateClaim`: a claim was added, updated or resynced.
    pub async fn update_claim(
        self: &Arc<Self>,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        if !self.store_claim_update(claim)? {
            return Ok(());
        }
        self.sync_claim(claim).await.inspect_err(|err| {
            let key = claim_to_claim_key(claim);
            if err.is_conflict() {
                tracing::debug!(claim = %key, %err, "could not sync claim");
            } else {
                tracing::error!(claim = %key, %err, "could not sync claim");
            }
        })
    }

    /// Upstream `deleteClaim`: a claim was deleted. Returns the name of its volume, to be
    /// synced now rather than at the next resync (it becomes Released).
    pub async fn delete_claim(self: &Arc<Self>, claim: &PersistentVolumeClaim) -> Option<String> {
        let key = claim_to_claim_key(claim);
        lock(&self.claims).remove(&key);
        tracing::debug!(claim = %key, "claim deleted");
        let volume_name = claim_volume_name(claim);
        (!volume_name.is_empty()).then(|| volume_name.to_string())
    }

    // --- events ---

    fn volume_event(
        &self,
        volume: &PersistentVolume,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        self.client
            .event(&volume.object_ref(&()), type_, reason, message);
    }

    fn claim_event(
        &self,
        claim: &PersistentVolumeClaim,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        self.client
            .event(&claim.object_ref(&()), type_, reason, message);
    }

    // --- claims ---

    /// Upstream `syncClaim`: decides what to do with a claim, bound or not.
    pub(crate) async fn sync_claim(
        self: &Arc<Self>,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        tracing::trace!(claim = %claim_to_claim_key(claim), "synchronizing PersistentVolumeClaim");
        if !has_annotation(&claim.metadata, ANN_BIND_COMPLETED) {
            self.sync_unbound_claim(claim).await
        } else {
            self.sync_bound_claim(claim).await
        }
    }

    /// Upstream `emitEventForUnboundDelayBindingClaim`.
    fn emit_event_for_unbound_delay_binding_claim(&self, claim: &PersistentVolumeClaim) {
        let pod_names = self.find_non_scheduled_pods_by_pvc(claim);
        let (reason, message) = match pod_names.as_slice() {
            [] => (
                events::WAIT_FOR_FIRST_CONSUMER,
                "waiting for first consumer to be created before binding".to_string(),
            ),
            [pod] => (
                events::WAIT_FOR_POD_SCHEDULED,
                format!("waiting for pod {pod} to be scheduled"),
            ),
            pods => (
                // Only one pod is taken into account in scheduling, but any of them may be.
                events::WAIT_FOR_POD_SCHEDULED,
                format!("waiting for pods {} to be scheduled", pods.join(",")),
            ),
        };
        self.claim_event(claim, EventType::Normal, reason, message);
    }

    /// Upstream `syncUnboundClaim`: a claim whose binding is not complete.
    pub(crate) async fn sync_unbound_claim(
        self: &Arc<Self>,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        let key = claim_to_claim_key(claim);
        let requested = claim_volume_name(claim);
        if requested.is_empty() {
            // The user did not ask for a particular volume. [Unit test set 1]
            let class = self.client.storage_class(claim_class(claim));
            let delay_binding = is_delay_binding_mode(claim, class.as_deref())?;
            let volume = lock(&self.volumes)
                .find_best_match_for_claim(claim, delay_binding)
                .map_err(|source| Error::FindingVolume {
                    claim: key.clone(),
                    source,
                })?;
            let Some(volume) = volume else {
                // No volume: provision one if possible.
                tracing::trace!(claim = %key, "no volume found");
                let updated = self
                    .assign_default_storage_class(claim)
                    .await
                    .map_err(|source| Error::AssigningDefaultClass {
                        claim: key.clone(),
                        source,
                    })?;
                if updated {
                    // The update event restarts the sync.
                    return Ok(());
                }
                if delay_binding && !is_delay_binding_provisioning(claim) {
                    // The scheduler has not seen a pod using this claim yet.
                    self.emit_event_for_unbound_delay_binding_claim(claim);
                } else if !claim_class(claim).is_empty() {
                    // The provisioning operation updates the claim; binding continues in
                    // a later sync.
                    return self.provision_claim(claim).await;
                } else {
                    self.claim_event(
                        claim,
                        EventType::Normal,
                        events::FAILED_BINDING,
                        "no persistent volumes available for this claim and no storage class is set"
                            .to_string(),
                    );
                }
                // Pending; a later sync finds a match.
                self.update_claim_status(claim, CLAIM_PENDING, None).await?;
                return Ok(());
            };
            // Found a volume: claim Pending, volume Available.
            tracing::trace!(claim = %key, volume = name_of(&volume.metadata), "volume found");
            self.bind(&volume, claim).await
        } else {
            // The user asked for a particular volume. [Unit test set 2]
            let volume = self.cached_volume(requested);
            let Some(volume) = volume else {
                // It does not exist (yet): retry later.
                tracing::trace!(claim = %key, volume = requested, "volume requested and not found");
                self.update_claim_status(claim, CLAIM_PENDING, None).await?;
                return Ok(());
            };
            let volume_name = name_of(&volume.metadata);
            match claim_ref(&volume) {
                None => {
                    // The volume is not claimed: bind it if it fits.
                    if let Err(err) = check_volume_satisfy_claim(&volume, claim) {
                        tracing::debug!(claim = %key, volume = volume_name, %err, "can't bind the claim to volume");
                        self.claim_event(
                            claim,
                            EventType::Warning,
                            events::VOLUME_MISMATCH,
                            format!("Cannot bind to requested volume {volume_name:?}: {err}"),
                        );
                        self.update_claim_status(claim, CLAIM_PENDING, None).await?;
                    } else {
                        // On any error, the next sync finishes the binding.
                        self.bind(&volume, claim).await?;
                    }
                    Ok(())
                }
                Some(_) if is_volume_bound_to_claim(&volume, claim) => {
                    // Claimed by this claim: finish the binding (adding the claim's UID).
                    self.bind(&volume, claim).await
                }
                Some(other) => {
                    // Claimed by another claim.
                    self.claim_event(
                        claim,
                        EventType::Warning,
                        events::FAILED_BINDING,
                        format!("volume {volume_name:?} already bound to a different claim."),
                    );
                    if !has_annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER) {
                        // The user asked for it: retry later.
                        self.update_claim_status(claim, CLAIM_PENDING, None).await?;
                        Ok(())
                    } else {
                        // Should never happen: someone removed the claim's
                        // bind-completed annotation.
                        Err(Error::InvalidBinding {
                            claim: key,
                            volume: requested.to_string(),
                            claimed_by: claimref_to_claim_key(other),
                        })
                    }
                }
            }
        }
    }

    /// Upstream `syncBoundClaim`: a claim that was bound before. [Unit test set 3]
    pub(crate) async fn sync_bound_claim(
        self: &Arc<Self>,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        let volume_name = claim_volume_name(claim);
        if volume_name.is_empty() {
            // Bound before, not any more.
            self.update_claim_status_with_event(
                claim,
                CLAIM_LOST,
                None,
                EventType::Warning,
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            )
            .await?;
            return Ok(());
        }
        let Some(volume) = self.cached_volume(volume_name) else {
            self.update_claim_status_with_event(
                claim,
                CLAIM_LOST,
                None,
                EventType::Warning,
                "ClaimLost",
                "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
            )
            .await?;
            return Ok(());
        };
        match claim_ref(&volume) {
            // The volume came unbound, or the controller has not seen its binding yet:
            // bind it again.
            None => self.bind(&volume, claim).await,
            // All is well; bind does nothing in most cases.
            Some(r) if claim_ref_uid(r) == uid_of(&claim.metadata) => {
                self.bind(&volume, claim).await
            }
            Some(_) => {
                // The volume has another claimant: this claim is Lost, a terminal phase.
                self.update_claim_status_with_event(
                    claim,
                    CLAIM_LOST,
                    None,
                    EventType::Warning,
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly",
                )
                .await?;
                Ok(())
            }
        }
    }

    // --- volumes ---

    /// Upstream `updateVolumeMigrationAnnotationsAndFinalizers`, finalizers only (see the
    /// module doc): saves the volume when [`modify_deletion_finalizers`] changed them.
    async fn update_volume_finalizers(
        &self,
        volume: &PersistentVolume,
    ) -> Result<PersistentVolume, Error> {
        let (finalizers, modified) = modify_deletion_finalizers(volume);
        if !modified {
            return Ok(volume.clone());
        }
        let mut clone = volume.clone();
        clone.metadata.finalizers = finalizers;
        let anneal = |source| Error::AnnealFinalizers {
            volume: name_of(&volume.metadata).to_string(),
            source,
        };
        let new_volume = self.client.update_volume(&clone).await.map_err(anneal)?;
        self.store_volume_update(&new_volume)?;
        Ok(new_volume)
    }

    /// Upstream `syncVolume`: decides what to do with a volume. [Unit test set 4]
    pub(crate) async fn sync_volume(
        self: &Arc<Self>,
        volume: &PersistentVolume,
    ) -> Result<(), Error> {
        let volume = self.update_volume_finalizers(volume).await?;
        let volume_name = name_of(&volume.metadata).to_string();
        tracing::trace!(volume = %volume_name, "synchronizing PersistentVolume");

        let Some(claim_ref) = claim_ref(&volume).cloned() else {
            // Unused.
            self.update_volume_phase(&volume, VOLUME_AVAILABLE, "")
                .await?;
            return Ok(());
        };
        if claim_ref_uid(&claim_ref).is_empty() {
            // Reserved for a claim that is not bound to it yet: the claim's sync binds it.
            self.update_volume_phase(&volume, VOLUME_AVAILABLE, "")
                .await?;
            return Ok(());
        }
        // Bound to a claim: find the claim by name.
        let claim_key = claimref_to_claim_key(&claim_ref);
        let mut claim: Option<PersistentVolumeClaim> =
            self.cached_claim(&claim_key).map(|c| (*c).clone());
        if claim.is_none() {
            let phase = volume_phase(&volume);
            if phase != VOLUME_RELEASED && phase != VOLUME_FAILED {
                // A claim created by an external provisioner, or bound by an external
                // binder (the scheduler), may not have reached the cache yet: ask the
                // apiserver before releasing the volume.
                claim = self.get_claim_of(&claim_ref).await?;
            }
        }
        if let Some(c) = &claim
            && uid_of(&c.metadata) != claim_ref_uid(&claim_ref)
        {
            // The claim was deleted and another of the same name created, or the cache
            // is behind the volume's claimRef: ask the apiserver.
            claim = self
                .get_claim_of(&claim_ref)
                .await?
                .filter(|c| uid_of(&c.metadata) == claim_ref_uid(&claim_ref));
        }

        let Some(claim) = claim else {
            // The claim is gone: release the volume (but keep a Failed phase visible while
            // the reclaim is retried), then reclaim it.
            let mut volume = volume;
            let phase = volume_phase(&volume);
            if phase != VOLUME_RELEASED && phase != VOLUME_FAILED {
                tracing::info!(volume = %volume_name, reclaim_policy = reclaim_policy(&volume), "volume is released and reclaim policy will be executed");
                volume = self
                    .update_volume_phase(&volume, VOLUME_RELEASED, "")
                    .await?;
            }
            self.reclaim_volume(&volume).await?;
            return Ok(());
        };

        let claim_volume = claim_volume_name(&claim);
        if claim_volume.is_empty() {
            if check_volume_mode_mismatches(
                claim.spec.as_ref().unwrap_or(&Default::default()),
                volume.spec.as_ref().unwrap_or(&Default::default()),
            ) {
                // syncUnboundClaim will not bind them: findBestMatchForClaim skips the
                // volume.
                self.volume_event(
                    &volume,
                    EventType::Warning,
                    events::VOLUME_MISMATCH,
                    format!(
                        "Cannot bind PersistentVolume to requested PersistentVolumeClaim {:?} due to incompatible volumeMode.",
                        name_of(&claim.metadata)
                    ),
                );
                self.claim_event(
                    &claim,
                    EventType::Warning,
                    events::VOLUME_MISMATCH,
                    format!(
                        "Cannot bind PersistentVolume {volume_name:?} to requested PersistentVolumeClaim due to incompatible volumeMode."
                    ),
                );
                return Ok(());
            }
            // Bound by the controller and not finished, or a dangling volume the user
            // bound: either way the claim's sync completes the binding; queue it now (this
            // speeds up the binding of provisioned volumes).
            self.client.enqueue_claim(&claim_to_claim_key(&claim));
            Ok(())
        } else if claim_volume == volume_name {
            // Bound properly: update the phase if needed.
            self.update_volume_phase(&volume, VOLUME_BOUND, "").await?;
            Ok(())
        } else if has_annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED)
            && reclaim_policy(&volume) == RECLAIM_DELETE
        {
            // Provisioned for this claim, which got bound elsewhere: not needed any more.
            // Mark it Released (for external deleters and the user; not over Failed) and
            // delete it.
            let mut volume = volume;
            let phase = volume_phase(&volume);
            if phase != VOLUME_RELEASED && phase != VOLUME_FAILED {
                tracing::info!(volume = %volume_name, "dynamically provisioned volume is released and it will be deleted");
                volume = self
                    .update_volume_phase(&volume, VOLUME_RELEASED, "")
                    .await?;
            }
            self.reclaim_volume(&volume).await?;
            Ok(())
        } else {
            // Bound to a claim bound elsewhere. Bound by the controller: its own try that
            // lost, undo it. Bound by the user: clear only the UID and phase, the volume
            // stays reserved for the claim.
            self.unbind_volume(&volume).await
        }
    }

    /// The claim a volume's claimRef names, from the apiserver; `None` when it does not
    /// exist.
    async fn get_claim_of(
        &self,
        claim_ref: &ObjectReference,
    ) -> Result<Option<PersistentVolumeClaim>, Error> {
        match self
            .client
            .get_claim(
                claim_ref.namespace.as_deref().unwrap_or_default(),
                claim_ref.name.as_deref().unwrap_or_default(),
            )
            .await
        {
            Ok(claim) => Ok(Some(claim)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    // --- status updates ---

    /// Upstream `updateClaimStatus`: saves the claim's phase, and its access modes,
    /// capacity and current volumeAttributesClass from the volume it is bound to (or
    /// clears them without volume). Returns the saved claim.
    pub(crate) async fn update_claim_status(
        &self,
        claim: &PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
    ) -> Result<PersistentVolumeClaim, Error> {
        let mut clone = claim.clone();
        let old = claim.status.clone().unwrap_or_default();
        let status: &mut PersistentVolumeClaimStatus =
            clone.status.get_or_insert_with(Default::default);
        let mut dirty = false;
        if old.phase.as_deref().unwrap_or_default() != phase {
            status.phase = Some(phase.to_string());
            dirty = true;
        }
        match volume {
            None => {
                if old.access_modes.is_some() {
                    status.access_modes = None;
                    dirty = true;
                }
                if old.capacity.is_some() {
                    status.capacity = None;
                    dirty = true;
                }
                if old.current_volume_attributes_class_name.is_some() {
                    status.current_volume_attributes_class_name = None;
                    dirty = true;
                }
            }
            Some(volume) => {
                let spec = volume.spec.clone().unwrap_or_default();
                if old.access_modes != spec.access_modes {
                    status.access_modes = spec.access_modes.clone();
                    dirty = true;
                }
                // The capacity is set when the claim becomes Bound, not after: a
                // difference may be intended (a filesystem smaller than its device).
                if old.phase.as_deref().unwrap_or_default() != phase {
                    let Some(volume_cap) =
                        spec.capacity.as_ref().and_then(|c| c.get(RESOURCE_STORAGE))
                    else {
                        return Err(Error::NoStorageCapacity {
                            volume: name_of(&volume.metadata).to_string(),
                        });
                    };
                    let claim_cap = old.capacity.as_ref().and_then(|c| c.get(RESOURCE_STORAGE));
                    if let Some(pre) = annotation(&volume.metadata, ANN_PRE_RESIZE_CAPACITY) {
                        // Waiting for a filesystem resize: the claim gets the size before.
                        let pre_qty = match parse_quantity(pre) {
                            Ok(_) => Quantity(pre.to_string()),
                            Err(err) => {
                                tracing::info!(volume = name_of(&volume.metadata), %err, "parsing pre-resize-capacity from PV failed");
                                volume_cap.clone()
                            }
                        };
                        status
                            .capacity
                            .get_or_insert_with(BTreeMap::new)
                            .insert(RESOURCE_STORAGE.to_string(), pre_qty);
                        dirty = true;
                    } else if claim_cap.is_none_or(|c| amount(volume_cap) != amount(c)) {
                        status.capacity = spec.capacity.clone();
                        dirty = true;
                    }
                }
                // The current volumeAttributesClass is set at binding only; afterwards it
                // is the resizer's.
                if old.phase.as_deref() == Some(CLAIM_PENDING)
                    && phase == CLAIM_BOUND
                    && old.current_volume_attributes_class_name != spec.volume_attributes_class_name
                {
                    status.current_volume_attributes_class_name =
                        spec.volume_attributes_class_name.clone();
                    dirty = true;
                }
            }
        }
        if !dirty {
            return Ok(claim.clone());
        }
        let new_claim = self.client.update_claim_status(&clone).await?;
        self.store_claim_update(&new_claim)?;
        tracing::info!(claim = %claim_to_claim_key(claim), phase, "claim entered phase");
        Ok(new_claim)
    }

    /// Upstream `updateClaimStatusWithEvent`: as [`update_claim_status`](Self::update_claim_status),
    /// recording the event only when the phase changes.
    pub(crate) async fn update_claim_status_with_event(
        &self,
        claim: &PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<PersistentVolumeClaim, Error> {
        if claim_phase(claim) == phase {
            return Ok(claim.clone());
        }
        let new_claim = self.update_claim_status(claim, phase, volume).await?;
        self.claim_event(&new_claim, type_, reason, message.to_string());
        Ok(new_claim)
    }

    /// Upstream `updateVolumePhase`: saves the volume's phase and message.
    pub(crate) async fn update_volume_phase(
        &self,
        volume: &PersistentVolume,
        phase: &str,
        message: &str,
    ) -> Result<PersistentVolume, Error> {
        if volume_phase(volume) == phase {
            return Ok(volume.clone());
        }
        let mut clone = volume.clone();
        let status = clone.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_string());
        status.message = (!message.is_empty()).then(|| message.to_string());
        let new_volume = self.client.update_volume_status(&clone).await?;
        self.store_volume_update(&new_volume)?;
        tracing::info!(
            volume = name_of(&volume.metadata),
            phase,
            "volume entered phase"
        );
        Ok(new_volume)
    }

    /// Upstream `updateVolumePhaseWithEvent`: as [`update_volume_phase`](Self::update_volume_phase),
    /// recording the event (with the message) only when the phase changes.
    pub(crate) async fn update_volume_phase_with_event(
        &self,
        volume: &PersistentVolume,
        phase: &str,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<PersistentVolume, Error> {
        if volume_phase(volume) == phase {
            return Ok(volume.clone());
        }
        let new_volume = self.update_volume_phase(volume, phase, message).await?;
        self.volume_event(&new_volume, type_, reason, message.to_string());
        Ok(new_volume)
    }

    /// Upstream `assignDefaultStorageClass`: gives a claim without class the default
    /// class, saving it; whether it did.
    pub(crate) async fn assign_default_storage_class(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<bool, ApiError> {
        if persistent_volume_claim_has_class(claim) {
            return Ok(false);
        }
        let Some(class) = get_default_class(&self.client.storage_classes()) else {
            tracing::trace!(claim = %claim_to_claim_key(claim), "default storage class not found");
            return Ok(false);
        };
        let mut clone = claim.clone();
        clone
            .spec
            .get_or_insert_with(Default::default)
            .storage_class_name = Some(name_of(&class.metadata).to_string());
        self.client.update_claim(&clone).await?;
        tracing::debug!(claim = %claim_to_claim_key(claim), class = name_of(&class.metadata), "assigned the default StorageClass");
        Ok(true)
    }

    // --- binding ---

    /// Upstream `bindVolumeToClaim`: [`get_bind_volume_to_claim`], saved if anything
    /// changed.
    pub(crate) async fn bind_volume_to_claim(
        &self,
        volume: &PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolume, Error> {
        match get_bind_volume_to_claim(volume, claim) {
            Some(clone) => self.update_bind_volume_to_claim(&clone, true).await,
            None => Ok(volume.clone()),
        }
    }

    /// Upstream `updateBindVolumeToClaim`: saves a volume bound to a claim.
    pub(crate) async fn update_bind_volume_to_claim(
        &self,
        volume: &PersistentVolume,
        update_cache: bool,
    ) -> Result<PersistentVolume, Error> {
        tracing::info!(
            volume = name_of(&volume.metadata),
            claim = %claim_ref(volume).map(claimref_to_claim_key).unwrap_or_default(),
            "claim bound to volume"
        );
        let new_volume = self.client.update_volume(volume).await?;
        if update_cache {
            self.store_volume_update(&new_volume)?;
        }
        Ok(new_volume)
    }

    /// Upstream `bindClaimToVolume`: points the claim at the volume (marking it bound by
    /// the controller when the controller chose the volume), marks the binding complete,
    /// and saves it if anything changed.
    pub(crate) async fn bind_claim_to_volume(
        &self,
        claim: &PersistentVolumeClaim,
        volume: &PersistentVolume,
    ) -> Result<PersistentVolumeClaim, Error> {
        let volume_name = name_of(&volume.metadata);
        let mut clone = claim.clone();
        let mut dirty = false;
        if volume_name != claim_volume_name(claim) {
            dirty = true;
            clone.spec.get_or_insert_with(Default::default).volume_name =
                Some(volume_name.to_string());
            if !has_annotation(&clone.metadata, ANN_BOUND_BY_CONTROLLER) {
                set_annotation(&mut clone.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
            }
        }
        if !has_annotation(&clone.metadata, ANN_BIND_COMPLETED) {
            set_annotation(&mut clone.metadata, ANN_BIND_COMPLETED, "yes");
            dirty = true;
        }
        if !dirty {
            return Ok(claim.clone());
        }
        tracing::info!(claim = %claim_to_claim_key(claim), volume = volume_name, "volume bound to claim");
        let new_claim = self.client.update_claim(&clone).await?;
        self.store_claim_update(&new_claim)?;
        Ok(new_claim)
    }

    /// Upstream `bind`: saves the binding on the volume, then the volume's phase, then the
    /// claim, then the claim's status; stops at the first error (the next sync goes on).
    pub(crate) async fn bind(
        &self,
        volume: &PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        let volume = self.bind_volume_to_claim(volume, claim).await?;
        let volume = self.update_volume_phase(&volume, VOLUME_BOUND, "").await?;
        let claim = self.bind_claim_to_volume(claim, &volume).await?;
        self.update_claim_status(&claim, CLAIM_BOUND, Some(&volume))
            .await?;
        tracing::debug!(claim = %claim_to_claim_key(&claim), volume = name_of(&volume.metadata), "volume bound to claim");
        Ok(())
    }

    /// Upstream `unbindVolume`: undoes a volume's binding. Bound by the controller: the
    /// claimRef goes; pre-bound by the user: only its UID. The volume becomes Available.
    pub(crate) async fn unbind_volume(&self, volume: &PersistentVolume) -> Result<(), Error> {
        let mut clone = volume.clone();
        if has_annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER) {
            if let Some(spec) = clone.spec.as_mut() {
                spec.claim_ref = None;
            }
            if let Some(annotations) = clone.metadata.annotations.as_mut() {
                annotations.remove(ANN_BOUND_BY_CONTROLLER);
                if annotations.is_empty() {
                    clone.metadata.annotations = None;
                }
            }
        } else if let Some(r) = clone.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
            r.uid = None;
        }
        let new_volume = self.client.update_volume(&clone).await?;
        self.store_volume_update(&new_volume)?;
        tracing::debug!(volume = name_of(&volume.metadata), "binding rolled back");
        self.update_volume_phase(&new_volume, VOLUME_AVAILABLE, "")
            .await?;
        Ok(())
    }

    // --- pods ---

    /// Upstream `findPodsByPVCKey` over the PodPVCIndex: the namespace's pods using the
    /// claim, directly or as a generic ephemeral volume's `<pod>-<volume>` claim.
    pub(crate) fn find_pods_by_pvc_key(&self, namespace: &str, claim_name: &str) -> Vec<Arc<Pod>> {
        self.client
            .pods(namespace)
            .into_iter()
            .filter(|pod| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.volumes.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|v| {
                        volume_claim_name(pod.metadata.name.as_deref().unwrap_or_default(), v)
                    })
                    .any(|name| name == claim_name)
            })
            .collect()
    }

    /// Upstream `isVolumeUsed`: the `namespace/name`s of the active pods using the volume's
    /// claim, sorted.
    pub(crate) fn is_volume_used(&self, volume: &PersistentVolume) -> (Vec<String>, bool) {
        let Some(r) = claim_ref(volume) else {
            return (Vec::new(), false);
        };
        let pods: BTreeSet<String> = self
            .find_pods_by_pvc_key(
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default(),
            )
            .iter()
            .filter(|pod| !is_pod_terminated(pod))
            .map(|pod| {
                format!(
                    "{}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    name_of(&pod.metadata)
                )
            })
            .collect();
        let used = !pods.is_empty();
        (pods.into_iter().collect(), used)
    }

    /// Upstream `findNonScheduledPodsByPVC`: the names of the active pods using the claim
    /// that are not scheduled yet.
    pub(crate) fn find_non_scheduled_pods_by_pvc(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Vec<String> {
        self.find_pods_by_pvc_key(
            claim.metadata.namespace.as_deref().unwrap_or_default(),
            name_of(&claim.metadata),
        )
        .iter()
        .filter(|pod| !is_pod_terminated(pod))
        .filter(|pod| {
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or_default()
                .is_empty()
        })
        .map(|pod| name_of(&pod.metadata).to_string())
        .collect()
    }
}
