//! The PV controller's reclaim and provisioning operations (upstream: the second half of
//! `pv_controller.go`: `reclaimVolume`, `recycleVolumeOperation`, `deleteVolumeOperation`,
//! `doDeleteVolume`, `provisionClaim`, `provisionClaimOperation`,
//! `provisionClaimOperationExternal`, `scheduleOperation`, the plugin lookups; and
//! `setClaimProvisioner` of `pv_controller_base.go`).
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Resource as _;
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, StorageClass};

use super::client::{EventType, PvClient};
use super::index::claim_to_claim_key;
use super::plugins::{DeleteError, RecycleEventRecorder, VolumeOptions, VolumePlugin};
use super::pv_controller::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BOUND_BY_CONTROLLER, ANN_DYNAMICALLY_PROVISIONED,
    ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, Error, OperationState,
    PV_DELETION_IN_TREE_PROTECTION_FINALIZER, PersistentVolumeController, RECLAIM_DELETE,
    RECLAIM_RECYCLE, RECLAIM_RETAIN, VOLUME_BOUND, VOLUME_FAILED, annotation, claim_ref, events,
    has_annotation, name_of, reclaim_policy, set_annotation,
};
use crate::scheduler::volume_binding::{claim_class, volume_class};

/// The plugin provisioning a claim (none for an external provisioner) and the claim's
/// StorageClass.
pub type ProvisionablePlugin = (Option<Arc<dyn VolumePlugin>>, Arc<StorageClass>);

/// Upstream exponentialbackoff's `initialDurationBeforeRetry`.
const INITIAL_DURATION_BEFORE_RETRY: Duration = Duration::from_millis(500);
/// Upstream exponentialbackoff's `maxDurationBeforeRetry`.
const MAX_DURATION_BEFORE_RETRY: Duration = Duration::from_secs(122);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C: PvClient + 'static> PersistentVolumeController<C> {
    // --- operations (upstream goroutinemap) ---

    /// Upstream `scheduleOperation`: runs the operation on its own task unless one of the
    /// same name is running or failed too recently.
    pub(crate) fn schedule_operation<F>(self: &Arc<Self>, operation_name: String, operation: F)
    where
        F: Future<Output = Result<(), Error>> + Send + 'static,
    {
        #[cfg(test)]
        {
            let hook = lock(&self.pre_operation_hook).clone();
            if let Some(hook) = hook {
                hook(self, &operation_name);
            }
        }
        {
            let mut operations = lock(&self.running_operations);
            let existing = operations.get(&operation_name).copied().unwrap_or_default();
            if existing.pending {
                tracing::debug!(operation = %operation_name, "operation is already running, skipping");
                return;
            }
            if let Some((last_error, duration)) = existing.backoff
                && last_error.elapsed() <= duration
            {
                tracing::debug!(operation = %operation_name, "operation postponed due to exponential backoff");
                return;
            }
            operations.insert(
                operation_name.clone(),
                OperationState {
                    pending: true,
                    backoff: existing.backoff,
                },
            );
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // The operation runs on a task of its own so that a panic is an error here.
            let result = match tokio::spawn(operation).await {
                Ok(result) => result,
                Err(err) => Err(Error::Plugin(format!("operation panicked: {err}"))),
            };
            this.operation_complete(&operation_name, result);
        });
    }

    /// Upstream goroutinemap's `operationComplete`: forgets a successful operation, backs a
    /// failed one off.
    fn operation_complete(&self, operation_name: &str, result: Result<(), Error>) {
        {
            let mut operations = lock(&self.running_operations);
            match result {
                Ok(()) => {
                    operations.remove(operation_name);
                }
                Err(err) => {
                    let state = operations.entry(operation_name.to_string()).or_default();
                    let duration = match state.backoff {
                        None => INITIAL_DURATION_BEFORE_RETRY,
                        Some((_, d)) => (d * 2).min(MAX_DURATION_BEFORE_RETRY),
                    };
                    state.pending = false;
                    state.backoff = Some((tokio::time::Instant::now(), duration));
                    tracing::error!(operation = operation_name, %err, ?duration, "operation failed, no retries permitted before the backoff");
                }
            }
        }
        self.operations_changed.notify_waiters();
    }

    /// Waits until no operation is running (upstream goroutinemap's `WaitForCompletion`).
    pub async fn wait_for_operations(&self) {
        loop {
            let changed = self.operations_changed.notified();
            if lock(&self.running_operations).values().all(|o| !o.pending) {
                return;
            }
            changed.await;
        }
    }

    // --- reclaim ---

    /// Upstream `reclaimVolume`: applies the released volume's reclaim policy.
    pub(crate) async fn reclaim_volume(
        self: &Arc<Self>,
        volume: &PersistentVolume,
    ) -> Result<(), Error> {
        let volume_name = name_of(&volume.metadata);
        let uid = volume.metadata.uid.as_deref().unwrap_or_default();
        match reclaim_policy(volume) {
            RECLAIM_RETAIN => {
                tracing::debug!(
                    volume = volume_name,
                    "reclaimVolume: policy is Retain, nothing to do"
                );
            }
            RECLAIM_RECYCLE => {
                let this = Arc::clone(self);
                let volume = volume.clone();
                self.schedule_operation(format!("recycle-{volume_name}[{uid}]"), async move {
                    this.recycle_volume_operation(&volume).await;
                    Ok(())
                });
            }
            RECLAIM_DELETE => {
                let this = Arc::clone(self);
                let volume = volume.clone();
                self.schedule_operation(format!("delete-{volume_name}[{uid}]"), async move {
                    this.delete_volume_operation(&volume).await.map(|_| ())
                });
            }
            _ => {
                self.update_volume_phase_with_event(
                    volume,
                    VOLUME_FAILED,
                    EventType::Warning,
                    "VolumeUnknownReclaimPolicy",
                    "Volume has unrecognized PersistentVolumeReclaimPolicy",
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Upstream `recycleVolumeOperation`: scrubs a released volume and makes it Available.
    pub(crate) async fn recycle_volume_operation(self: &Arc<Self>, volume: &PersistentVolume) {
        let volume_name = name_of(&volume.metadata);
        // An earlier operation may have just saved a newer version: read it.
        let new_volume = match self.client.get_volume(volume_name).await {
            Ok(v) => v,
            Err(err) => {
                tracing::debug!(volume = volume_name, %err, "error reading persistent volume");
                return;
            }
        };
        if !self.is_volume_released(&new_volume) {
            tracing::debug!(
                volume = volume_name,
                "volume no longer needs recycling, skipping"
            );
            return;
        }
        let (pods, used) = self.is_volume_used(&new_volume);
        // A cached claim of the same name is another claim (the volume is released): it
        // uses another volume, so its pods do not use this one.
        let claim_cached = claim_ref(volume)
            .map(super::index::claimref_to_claim_key)
            .is_some_and(|key| self.cached_claim(&key).is_some());
        if used && !claim_cached {
            let msg = format!("Volume is used by pods: {}", pods.join(","));
            tracing::debug!(volume = volume_name, %msg, "can't recycle volume");
            self.client.event(
                &volume.object_ref(&()),
                EventType::Normal,
                events::VOLUME_FAILED_RECYCLE,
                msg,
            );
            return;
        }
        // The newest version spares version conflicts.
        let volume = new_volume;
        let plugin = match self
            .volume_plugin_mgr
            .find_recyclable_plugin_by_spec(&volume)
        {
            Ok(plugin) => plugin,
            Err(_) => {
                // Failed, and retried at every sync.
                if let Err(err) = self
                    .update_volume_phase_with_event(
                        &volume,
                        VOLUME_FAILED,
                        EventType::Warning,
                        events::VOLUME_FAILED_RECYCLE,
                        "No recycler plugin found for the volume!",
                    )
                    .await
                {
                    tracing::debug!(volume = volume_name, %err, "failed to mark volume as failed");
                }
                return;
            }
        };
        let recorder = self.new_recycler_event_recorder(&volume);
        if let Err(err) = plugin.recycle(volume_name, &volume, recorder).await {
            let message = format!("Recycle failed: {err}");
            if let Err(err) = self
                .update_volume_phase_with_event(
                    &volume,
                    VOLUME_FAILED,
                    EventType::Warning,
                    events::VOLUME_FAILED_RECYCLE,
                    &message,
                )
                .await
            {
                tracing::debug!(volume = volume_name, %err, "failed to mark volume as failed");
            }
            return;
        }
        tracing::info!(volume = volume_name, "volume recycled");
        self.client.event(
            &volume.object_ref(&()),
            EventType::Normal,
            events::VOLUME_RECYCLED,
            "Volume recycled".to_string(),
        );
        // Available again; on a failed save the volume is recycled again at the next sync.
        if let Err(err) = self.unbind_volume(&volume).await {
            tracing::debug!(volume = volume_name, %err, "failed to make recycled volume 'Available', we will recycle the volume again");
        }
    }

    /// Upstream `newRecyclerEventRecorder`: the recycler's events go to the volume.
    fn new_recycler_event_recorder(
        self: &Arc<Self>,
        volume: &PersistentVolume,
    ) -> RecycleEventRecorder {
        let this = Arc::clone(self);
        let object = volume.object_ref(&());
        Arc::new(move |type_, message: &str| {
            this.client.event(
                &object,
                type_,
                events::RECYCLER_POD,
                format!("Recycler pod: {message}"),
            );
        })
    }

    /// Upstream `deleteVolumeOperation`: deletes a released volume's storage and object.
    /// Returns the deleting plugin's name.
    pub(crate) async fn delete_volume_operation(
        &self,
        volume: &PersistentVolume,
    ) -> Result<String, Error> {
        let volume_name = name_of(&volume.metadata);
        let plugin = match self.find_deletable_plugin(volume) {
            Ok(plugin) => plugin,
            Err(err) => {
                self.update_volume_phase_with_event(
                    volume,
                    VOLUME_FAILED,
                    EventType::Warning,
                    events::VOLUME_FAILED_DELETE,
                    &err.to_string(),
                )
                .await?;
                None
            }
        };
        let Some(plugin) = plugin else {
            // An external deleter's job.
            tracing::debug!(
                volume = volume_name,
                "external deleter for volume requested, ignoring"
            );
            return Ok(String::new());
        };
        let plugin_name = plugin.name().to_string();
        // An earlier operation may have just saved a newer version: read it.
        let new_volume = match self.client.get_volume(volume_name).await {
            Ok(v) => v,
            Err(err) => {
                tracing::debug!(volume = volume_name, %err, "error reading persistent volume");
                return Ok(String::new());
            }
        };
        if !self.is_volume_released(&new_volume) {
            tracing::debug!(
                volume = volume_name,
                "volume no longer needs deletion, skipping"
            );
            return Ok(String::new());
        }
        if let Err(err) = self.do_delete_volume(plugin.as_ref(), volume).await {
            tracing::debug!(volume = volume_name, %err, "deletion of volume failed");
            if matches!(
                &err,
                Error::Delete {
                    source: DeleteError::DeletedVolumeInUse(_),
                    ..
                }
            ) {
                // The plugin needs more time: not Failed, a Normal event.
                self.client.event(
                    &volume.object_ref(&()),
                    EventType::Normal,
                    events::VOLUME_DELETE,
                    err.to_string(),
                );
            } else {
                // Failed, and retried at every sync.
                self.update_volume_phase_with_event(
                    volume,
                    VOLUME_FAILED,
                    EventType::Warning,
                    events::VOLUME_FAILED_DELETE,
                    &err.to_string(),
                )
                .await?;
            }
            return Err(err);
        }
        tracing::debug!(volume = volume_name, "deleteVolumeOperation: success");
        if let Err(err) = self.client.delete_volume(volume_name).await {
            // Deleted again at the next sync.
            tracing::debug!(volume = volume_name, %err, "failed to delete volume from database");
        }
        Ok(plugin_name)
    }

    /// Upstream `isVolumeReleased`: the volume is bound (with a UID) to a claim that no
    /// longer exists, or that is bound to another volume.
    pub(crate) fn is_volume_released(&self, volume: &PersistentVolume) -> bool {
        let Some(r) = claim_ref(volume) else {
            return false;
        };
        let ref_uid = r.uid.as_deref().unwrap_or_default();
        if ref_uid.is_empty() {
            // Pre-bound by the user, the binding is not finished.
            return false;
        }
        let key = super::index::claimref_to_claim_key(r);
        if let Some(claim) = self.cached_claim(&key)
            && claim.metadata.uid.as_deref().unwrap_or_default() == ref_uid
        {
            let bound_to = super::pv_controller::claim_volume_name(&claim);
            // Released only if the claim is bound to another volume.
            return !bound_to.is_empty() && bound_to != name_of(&volume.metadata);
        }
        true
    }

    /// Upstream `doDeleteVolume`: deletes the volume's storage with the plugin, then
    /// removes the deletion protection finalizer.
    pub(crate) async fn do_delete_volume(
        &self,
        plugin: &dyn VolumePlugin,
        volume: &PersistentVolume,
    ) -> Result<(), Error> {
        let volume_name = name_of(&volume.metadata);
        let mut deleter = plugin
            .new_deleter(volume)
            .map_err(|message| Error::NewDeleter {
                volume: volume_name.to_string(),
                message,
            })?;
        deleter.delete().await.map_err(|source| Error::Delete {
            volume: volume_name.to_string(),
            source,
        })?;
        drop(deleter);
        tracing::info!(volume = volume_name, "volume deleted");
        self.remove_deletion_protection_finalizer(volume).await
    }

    /// Upstream `removeDeletionProtectionFinalizer`: removes this controller's finalizer
    /// from the volume's newest version.
    pub(crate) async fn remove_deletion_protection_finalizer(
        &self,
        volume: &PersistentVolume,
    ) -> Result<(), Error> {
        let volume_name = name_of(&volume.metadata);
        let newest = self.client.get_volume(volume_name).await?;
        let mut clone = newest.clone();
        if let Some(finalizers) = clone.metadata.finalizers.as_mut()
            && finalizers
                .iter()
                .any(|f| f == PV_DELETION_IN_TREE_PROTECTION_FINALIZER)
        {
            finalizers.retain(|f| f != PV_DELETION_IN_TREE_PROTECTION_FINALIZER);
            self.client
                .update_volume(&clone)
                .await
                .map_err(|source| Error::RemoveFinalizer {
                    volume: volume_name.to_string(),
                    source,
                })?;
            self.store_volume_update(&clone)?;
            tracing::info!(
                volume = volume_name,
                "PV in-tree protection finalizer removed from volume"
            );
        }
        Ok(())
    }

    // --- provisioning ---

    /// Upstream `provisionClaim`: starts the provisioning of a volume for the claim, when
    /// dynamic provisioning is enabled.
    pub(crate) async fn provision_claim(
        self: &Arc<Self>,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        if !self.enable_dynamic_provisioning {
            return Ok(());
        }
        let key = claim_to_claim_key(claim);
        let uid = claim.metadata.uid.as_deref().unwrap_or_default();
        let operation_name = format!("provision-{key}[{uid}]");
        let (plugin, class) = match self.find_provisionable_plugin(claim) {
            Ok(found) => found,
            Err(err) => {
                // Retried at every syncUnboundClaim.
                self.client.event(
                    &claim.object_ref(&()),
                    EventType::Warning,
                    events::PROVISIONING_FAILED,
                    err.to_string(),
                );
                tracing::error!(claim = %key, %err, "error finding provisioning plugin for claim");
                return Ok(());
            }
        };
        let this = Arc::clone(self);
        let claim = claim.clone();
        self.schedule_operation(operation_name, async move {
            match plugin {
                None => this
                    .provision_claim_operation_external(&claim, &class)
                    .await
                    .map(|_| ()),
                Some(plugin) => this
                    .provision_claim_operation(&claim, plugin.as_ref(), &class)
                    .await
                    .map(|_| ()),
            }
        });
        Ok(())
    }

    /// Upstream `provisionClaimOperation`: provisions a volume with an internal plugin and
    /// saves its PersistentVolume, bound to the claim. Returns the plugin's name.
    pub(crate) async fn provision_claim_operation(
        &self,
        claim: &PersistentVolumeClaim,
        plugin: &dyn VolumePlugin,
        storage_class: &StorageClass,
    ) -> Result<String, Error> {
        let claim_class = claim_class(claim).to_string();
        let key = claim_to_claim_key(claim);
        let plugin_name = plugin.name().to_string();
        let class_name = name_of(&storage_class.metadata);
        let failed = |message: String| Error::Provisioning {
            claim: key.clone(),
            message,
        };
        if plugin_name != "kubernetes.io/csi"
            && claim.spec.as_ref().is_some_and(|s| s.data_source.is_some())
        {
            // Only CSI plugins provision from a data source.
            let message = format!(
                "plugin {plugin_name:?} is not a CSI plugin. Only CSI plugin can provision a claim with a datasource"
            );
            self.claim_warning(claim, events::PROVISIONING_FAILED, message.clone());
            return Err(failed(message));
        }
        let provisioner_name = storage_class.provisioner.clone();

        // As the external provisioners' workflow.
        let claim = self.set_claim_provisioner(claim, &provisioner_name).await?;

        // A previous operation may have just provisioned the volume (its name is
        // deterministic).
        let pv_name = get_provisioned_volume_name_for_claim(&claim);
        match self.client.get_volume(&pv_name).await {
            Ok(_) => {
                tracing::debug!(claim = %key, "provisionClaimOperation: volume already exists, skipping");
                return Ok(plugin_name);
            }
            Err(err) if !err.is_not_found() => return Err(err.into()),
            Err(_) => {}
        }

        let claim_ref = claim.object_ref(&());
        let options = VolumeOptions {
            persistent_volume_reclaim_policy: storage_class
                .reclaim_policy
                .clone()
                .unwrap_or_else(|| RECLAIM_DELETE.to_string()),
            mount_options: storage_class.mount_options.clone(),
            pv_name: pv_name.clone(),
            pvc: claim.clone(),
            parameters: storage_class.parameters.clone(),
        };
        // The PV would fail validation anyway.
        if !plugin.supports_mount_option()
            && options
                .mount_options
                .as_ref()
                .is_some_and(|m| !m.is_empty())
        {
            self.claim_warning(
                &claim,
                events::PROVISIONING_FAILED,
                format!(
                    "Mount options are not supported by the provisioner but StorageClass {class_name:?} has mount options {:?}",
                    options.mount_options.as_deref().unwrap_or_default()
                ),
            );
            return Err(failed(format!(
                "provisioner {plugin_name:?} doesn't support mount options"
            )));
        }

        let mut provisioner = match plugin.new_provisioner(options) {
            Ok(p) => p,
            Err(err) => {
                self.claim_warning(
                    &claim,
                    events::PROVISIONING_FAILED,
                    format!("Failed to create provisioner: {err}"),
                );
                return Err(failed(err));
            }
        };
        let selected_node = match annotation(&claim.metadata, ANN_SELECTED_NODE) {
            None => None,
            Some(node_name) => match self.client.node(node_name) {
                Some(node) => Some(node),
                None => {
                    let err = format!("node {node_name:?} not found");
                    self.claim_warning(
                        &claim,
                        events::PROVISIONING_FAILED,
                        format!("Failed to get target node: {err}"),
                    );
                    return Err(failed(err));
                }
            },
        };
        let allowed_topologies = storage_class.allowed_topologies.as_deref();
        let provisioned = provisioner
            .provision(selected_node.as_deref(), allowed_topologies)
            .await;
        drop(provisioner);
        let mut volume = match provisioned {
            Ok(v) => v,
            Err(err) => {
                // Only a failed provisioning sends the claim back to the scheduler.
                self.reschedule_provisioning(&claim).await;
                self.claim_warning(
                    &claim,
                    events::PROVISIONING_FAILED,
                    format!("Failed to provision volume with StorageClass {class_name:?}: {err}"),
                );
                return Err(failed(err));
            }
        };
        tracing::debug!(claim = %key, volume = name_of(&volume.metadata), "volume for claim created");

        // The PersistentVolume, bound to the claim.
        if name_of(&volume.metadata).is_empty() {
            volume.metadata.name = Some(pv_name);
        }
        let spec = volume.spec.get_or_insert_with(Default::default);
        spec.claim_ref = Some(claim_ref);
        spec.storage_class_name = (!claim_class.is_empty()).then(|| claim_class.clone());
        volume.status.get_or_insert_with(Default::default).phase = Some(VOLUME_BOUND.to_string());
        set_annotation(&mut volume.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
        set_annotation(
            &mut volume.metadata,
            ANN_DYNAMICALLY_PROVISIONED,
            &plugin_name,
        );
        if reclaim_policy(&volume) == RECLAIM_DELETE {
            volume.metadata.finalizers =
                Some(vec![PV_DELETION_IN_TREE_PROTECTION_FINALIZER.to_string()]);
        }
        let volume_name = name_of(&volume.metadata).to_string();

        // Saved in a few tries.
        let mut save_error = None;
        for _ in 0..self.create_provisioned_pv_retry_count {
            match self.client.create_volume(&volume).await {
                Ok(new_volume) => {
                    save_error = None;
                    tracing::debug!(claim = %key, volume = %volume_name, "volume for claim saved");
                    if let Err(err) = self.store_volume_update(&new_volume) {
                        // A "volume added" event comes soon.
                        tracing::debug!(volume = %volume_name, %err, "cannot update internal cache");
                    }
                    break;
                }
                Err(err) if err.is_already_exists() => {
                    save_error = None;
                    tracing::debug!(claim = %key, volume = %volume_name, "volume for claim already exists, reusing");
                    break;
                }
                Err(err) => {
                    tracing::debug!(claim = %key, volume = %volume_name, %err, "failed to save volume for claim");
                    save_error = Some(err);
                    tokio::time::sleep(self.create_provisioned_pv_interval).await;
                }
            }
        }

        if let Some(err) = save_error {
            // A storage asset without its PV: delete it, in a few tries.
            self.claim_warning(
                &claim,
                events::PROVISIONING_FAILED,
                format!("Error creating provisioned PV object for claim {key}: {err}. Deleting the volume."),
            );
            let delete_error = match self.find_deletable_plugin(&volume) {
                Err(err) => Some(err),
                Ok(None) => {
                    // Unreachable: an internal plugin provisioned it, one deletes it.
                    tracing::error!(plugin = %plugin_name, "error finding internal deleter for volume plugin");
                    return Ok(plugin_name);
                }
                Ok(Some(delete_plugin)) => {
                    let mut delete_error = None;
                    for _ in 0..self.create_provisioned_pv_retry_count {
                        match self.do_delete_volume(delete_plugin.as_ref(), &volume).await {
                            Ok(()) => {
                                delete_error = None;
                                tracing::debug!(claim = %key, volume = %volume_name, "provisionClaimOperation: cleaning volume succeeded");
                                break;
                            }
                            Err(err) => {
                                tracing::debug!(volume = %volume_name, %err, "failed to delete volume");
                                delete_error = Some(err);
                                tokio::time::sleep(self.create_provisioned_pv_interval).await;
                            }
                        }
                    }
                    delete_error
                }
            };
            if let Some(err) = delete_error {
                // An orphaned storage asset: nothing more to do.
                self.claim_warning(
                    &claim,
                    events::PROVISIONING_CLEANUP_FAILED,
                    format!("Error cleaning provisioned volume for claim {key}: {err}. Please delete manually."),
                );
            }
        } else {
            tracing::info!(claim = %key, volume = %volume_name, "volume provisioned for claim");
            self.client.event(
                &claim.object_ref(&()),
                EventType::Normal,
                events::PROVISIONING_SUCCEEDED,
                format!("Successfully provisioned volume {volume_name} using {plugin_name}"),
            );
        }
        Ok(plugin_name)
    }

    /// Upstream `provisionClaimOperationExternal`: hands the claim to an external
    /// provisioner by annotating it. Returns the provisioner's name.
    pub(crate) async fn provision_claim_operation_external(
        &self,
        claim: &PersistentVolumeClaim,
        storage_class: &StorageClass,
    ) -> Result<String, Error> {
        let provisioner_name = storage_class.provisioner.clone();
        let claim = match self.set_claim_provisioner(claim, &provisioner_name).await {
            Ok(claim) => claim,
            Err(err) => {
                // Retried at the next sync.
                self.claim_warning(
                    claim,
                    events::PROVISIONING_FAILED,
                    format!("Error saving claim: {err}"),
                );
                return Err(err);
            }
        };
        let message = format!(
            "Waiting for a volume to be created either by the external provisioner '{provisioner_name}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
        );
        self.client.event(
            &claim.object_ref(&()),
            EventType::Normal,
            events::EXTERNAL_PROVISIONING,
            message,
        );
        Ok(provisioner_name)
    }

    /// Upstream `rescheduleProvisioning`: asks the scheduler to choose a node again, by
    /// removing the selected-node annotation.
    pub(crate) async fn reschedule_provisioning(&self, claim: &PersistentVolumeClaim) {
        if !has_annotation(&claim.metadata, ANN_SELECTED_NODE) {
            // Not the scheduler's provisioning.
            return;
        }
        let mut new_claim = claim.clone();
        if let Some(annotations) = new_claim.metadata.annotations.as_mut() {
            annotations.remove(ANN_SELECTED_NODE);
        }
        if let Err(err) = self.client.update_claim(&new_claim).await {
            tracing::debug!(claim = %claim_to_claim_key(claim), %err, "failed to delete annotation 'volume.kubernetes.io/selected-node'");
            return;
        }
        if let Err(err) = self.store_claim_update(&new_claim) {
            // A "claim updated" event comes soon.
            tracing::debug!(claim = %claim_to_claim_key(claim), %err, "cannot update internal cache");
        }
    }

    /// Upstream `setClaimProvisioner`: annotates the claim with the provisioner expected to
    /// provision it.
    pub(crate) async fn set_claim_provisioner(
        &self,
        claim: &PersistentVolumeClaim,
        provisioner_name: &str,
    ) -> Result<PersistentVolumeClaim, Error> {
        if annotation(&claim.metadata, ANN_STORAGE_PROVISIONER) == Some(provisioner_name) {
            return Ok(claim.clone());
        }
        let mut clone = claim.clone();
        set_annotation(
            &mut clone.metadata,
            ANN_BETA_STORAGE_PROVISIONER,
            provisioner_name,
        );
        set_annotation(
            &mut clone.metadata,
            ANN_STORAGE_PROVISIONER,
            provisioner_name,
        );
        let new_claim = self.client.update_claim(&clone).await?;
        self.store_claim_update(&new_claim)?;
        Ok(new_claim)
    }

    fn claim_warning(&self, claim: &PersistentVolumeClaim, reason: &str, message: String) {
        self.client
            .event(&claim.object_ref(&()), EventType::Warning, reason, message);
    }

    // --- plugins ---

    /// Upstream `findProvisionablePlugin`: the claim's class, and the internal plugin that
    /// provisions it, or none when an external provisioner is to (any provisioner not named
    /// `kubernetes.io/...`).
    pub(crate) fn find_provisionable_plugin(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<ProvisionablePlugin, Error> {
        let class_name = claim_class(claim);
        let class =
            self.client
                .storage_class(class_name)
                .ok_or_else(|| Error::StorageClassNotFound {
                    class: class_name.to_string(),
                })?;
        match self
            .volume_plugin_mgr
            .find_provisionable_plugin_by_name(&class.provisioner)
        {
            Ok(plugin) => Ok((Some(plugin), class)),
            Err(_) if !class.provisioner.starts_with("kubernetes.io/") => Ok((None, class)),
            Err(err) => Err(Error::Plugin(err)),
        }
    }

    /// Upstream `findDeletablePlugin`: the plugin that provisioned the volume if it is
    /// internal, else none when an external deleter is to delete it (a provisioner not
    /// named `kubernetes.io/...`, or a CSI volume), else a plugin supporting the volume.
    pub(crate) fn find_deletable_plugin(
        &self,
        volume: &PersistentVolume,
    ) -> Result<Option<Arc<dyn VolumePlugin>>, Error> {
        if let Some(provisioned_by) = annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED)
            && !provisioned_by.is_empty()
        {
            return match self
                .volume_plugin_mgr
                .find_deletable_plugin_by_name(provisioned_by)
            {
                Ok(plugin) => Ok(Some(plugin)),
                Err(_) if !provisioned_by.starts_with("kubernetes.io/") => Ok(None),
                Err(err) => Err(Error::Plugin(err)),
            };
        }
        if volume.spec.as_ref().is_some_and(|s| s.csi.is_some()) {
            // An external provisioner's.
            return Ok(None);
        }
        self.volume_plugin_mgr
            .find_deletable_plugin_by_spec(volume)
            .map(Some)
            .map_err(|message| Error::FindingDeleter {
                volume: name_of(&volume.metadata).to_string(),
                message,
            })
    }

    /// Upstream `getProvisionerNameFromVolume`: the plugin or external provisioner that
    /// deletes the volume ("N/A" when unknown), as upstream labels its metrics.
    pub fn get_provisioner_name_from_volume(&self, volume: &PersistentVolume) -> String {
        match self.find_deletable_plugin(volume) {
            Err(_) => "N/A".to_string(),
            Ok(Some(plugin)) => plugin.name().to_string(),
            // An external provisioner: the class' provisioner rather than the annotation,
            // whose values are unbounded.
            Ok(None) => self
                .client
                .storage_class(volume_class(volume))
                .map(|c| c.provisioner.clone())
                .unwrap_or_else(|| "N/A".to_string()),
        }
    }
}

/// Upstream `getProvisionedVolumeNameForClaim`: `pvc-<claim uid>`.
pub fn get_provisioned_volume_name_for_claim(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}
