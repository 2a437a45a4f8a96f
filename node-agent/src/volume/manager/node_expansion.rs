//! The volume manager's expansion operations (the shell of [`super::expand`]):
//! operation_generator.go's `expandVolumeDuringMount`, run after a pod's CSI filesystem
//! volume is mounted (a failure is the pod's `FailedMount` "MountVolume.Setup failed
//! while expanding volume ..." and the pod waits, as upstream marks the mount uncertain),
//! and `GenerateExpandInUseVolumeFunc` with the reconciler's `expandVolume`, run by the
//! reconciler after each processing of a pod (each sync) whose volume is mounted already when the PersistentVolume grew past the
//! size the node's filesystem has (online: a failure is a `VolumeResizeFailed` event on
//! the pod, the pod runs on, and it is retried with upstream's back-off). Each calls
//! NodeExpandVolume through the csi plugin ([`crate::volume::csi::CsiPlugin::node_expand`],
//! one CSI operation at a time) and records the result in the claim's status, written as
//! the node ([`ObjectReader::patch_claim_status`]); `FileSystemResizeSuccessful` goes to
//! the pod and the claim. The events go to the manager's sink (the agent's recorder).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaimStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use rekube_crds::quantity::amount;
use rekube_crds::storage_keys::csi_unique_volume_name;
use rekube_crds::{PersistentVolumeClaim, Pod};
use rekube_csi::resizer::decide::status_patch;

use super::actual_state_of_world::MountedVolume;
use super::expand::{self, Before, ClaimExpansion, ExpansionStates, PreCheck};
use super::{FailedVolume, ObjectReader, VolumeManager};

/// An event of a volume operation (on the pod or on a claim), for the agent's recorder.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeEvent {
    pub object: ObjectReference,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The expansion records of the node's volumes.
#[derive(Debug, Default)]
pub struct Expansions {
    /// By unique volume name: the size its filesystem has, errors, back-off.
    states: Mutex<ExpansionStates>,
    /// `(pod uid, volume)` whose expansion at mount failed, with the message: tried
    /// again as at mount (the pod waits meanwhile).
    mount_failed: Mutex<HashMap<(String, String), String>>,
    events: Mutex<Vec<VolumeEvent>>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// What one expansion call came to.
enum Called {
    /// Done (or assumed done): the filesystem's size.
    Finished(Quantity),
    /// Not done, no error (the driver cannot now, or waits).
    NotYet,
    Failed(String),
}

impl VolumeManager {
    /// The events the volume operations produced before [`VolumeManager::run`] was given
    /// its sink (tests read them here).
    pub fn take_volume_events(&self) -> Vec<VolumeEvent> {
        std::mem::take(&mut *self.expansion.events.lock().unwrap())
    }

    pub(super) fn push_event(
        &self,
        object: ObjectReference,
        warning: bool,
        reason: &'static str,
        message: String,
    ) {
        let event = VolumeEvent {
            object,
            warning,
            reason,
            message,
        };
        match self.sink.get() {
            Some(sink) => sink(event),
            None => self.expansion.events.lock().unwrap().push(event),
        }
    }

    /// Whether the pod's volume `name` is mounted but its expansion at mount failed: it
    /// counts as not set up (upstream marks such a mount uncertain).
    pub(super) fn expansion_failed_at_mount(&self, uid: &str, name: &str) -> bool {
        self.expansion
            .mount_failed
            .lock()
            .unwrap()
            .contains_key(&(uid.to_string(), name.to_string()))
    }

    /// After the pod's mount operations: every claim-backed CSI filesystem volume of the
    /// pod that is set up is expanded at mount (`mounted_now`, or its expansion at mount
    /// failed before: `failed` gets the FailedMount) or in use.
    pub(super) async fn expand_pod_volumes<R: ObjectReader>(
        &self,
        pod: &Pod,
        claims: &[(String, ClaimExpansion)],
        mounted_now: &HashSet<String>,
        reader: &R,
        failed: &mut Vec<FailedVolume>,
    ) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for (name, e) in claims {
            let mounted = self
                .state
                .lock()
                .unwrap()
                .1
                .possibly_mounted_volumes_for_pod(&uid)
                .find(|m| &m.outer_volume_spec_name == name && !m.block && m.device.is_some())
                .cloned();
            let Some(m) = mounted else {
                continue;
            };
            let key = (uid.clone(), name.clone());
            let retry = self
                .expansion
                .mount_failed
                .lock()
                .unwrap()
                .get(&key)
                .cloned();
            if mounted_now.contains(name) || retry.is_some() {
                match self
                    .expand_during_mount(pod, e, &m, mounted_now.contains(name), retry, reader)
                    .await
                {
                    Ok(()) => {
                        self.expansion.mount_failed.lock().unwrap().remove(&key);
                    }
                    // Not tried again yet (its back-off runs): the pod still waits, with
                    // no new event.
                    Err(None) => {}
                    Err(Some(message)) => {
                        self.expansion
                            .mount_failed
                            .lock()
                            .unwrap()
                            .insert(key, message.clone());
                        failed.push(FailedVolume::mount(name.clone(), message));
                    }
                }
            } else {
                self.expand_in_use(pod, e, &m, reader).await;
            }
        }
    }

    /// Forgets the pod's failed expansions at mount (its volumes are torn down).
    pub(super) fn forget_pod_expansions(&self, uid: &str) {
        self.expansion
            .mount_failed
            .lock()
            .unwrap()
            .retain(|(pod, _), _| pod != uid);
    }

    fn unique_name(m: &MountedVolume) -> String {
        let source = &m.device.as_ref().expect("a CSI volume").source;
        csi_unique_volume_name(&source.driver, &source.volume_handle)
    }

    /// `expandVolumeDuringMount`. `fresh`: mounted in this sync (the actual state's size
    /// starts from the claim's capacity); `retry`: the message of the last failure.
    /// `Err(None)`: failed before and not tried again yet (its back-off runs);
    /// `Err(Some(message))`: this attempt failed.
    async fn expand_during_mount<R: ObjectReader>(
        &self,
        pod: &Pod,
        e: &ClaimExpansion,
        m: &MountedVolume,
        fresh: bool,
        retry: Option<String>,
        reader: &R,
    ) -> Result<(), Option<String>> {
        let unique = Self::unique_name(m);
        let (final_error, due) = {
            let mut states = self.expansion.states.lock().unwrap();
            let state = states.entry(unique.clone()).or_default();
            if fresh {
                state.size = Some(expand::claim_capacity(&e.claim));
            }
            (state.final_error, state.due(Instant::now()))
        };
        if retry.is_some() && !due {
            return Err(None);
        }
        let result = match expand::expand_volume_during_mount(
            &e.claim,
            &e.pv_capacity,
            e.read_only,
            final_error,
        ) {
            Before::Done {
                size,
                read_only_event,
            } => {
                if read_only_event {
                    let message = expand::volume_message(
                        "MountVolume.NodeExpandVolume failed",
                        &e.pv_name,
                        "requested read-only file system",
                    );
                    for object in [pod.object_ref(&()), e.claim.object_ref(&())] {
                        self.push_event(
                            object,
                            true,
                            expand::FILE_SYSTEM_RESIZE_FAILED,
                            message.clone(),
                        );
                    }
                }
                Called::Finished(size)
            }
            Before::Wait => Called::NotYet,
            Before::Call {
                new_size,
                old_size,
                in_progress,
                pre,
                recovery,
            } => {
                self.call(
                    pod,
                    e,
                    m,
                    (new_size, old_size, in_progress, pre, recovery),
                    reader,
                )
                .await
            }
        };
        let mut states = self.expansion.states.lock().unwrap();
        let state = states.entry(unique).or_default();
        match result {
            Called::Finished(size) => {
                state.size = Some(size);
                state.succeeded();
                Ok(())
            }
            Called::NotYet => Ok(()),
            Called::Failed(error) => {
                state.failed(Instant::now());
                Err(Some(expand::volume_error(
                    "MountVolume.Setup failed while expanding volume",
                    &e.pv_name,
                    &error,
                )))
            }
        }
    }

    /// The reconciler's `expandVolume` and `GenerateExpandInUseVolumeFunc` for a volume
    /// mounted already: when the PV is larger than the filesystem's size in the actual
    /// state (not read-only, no in-use refusal of the driver, the back-off run out).
    async fn expand_in_use<R: ObjectReader>(
        &self,
        pod: &Pod,
        e: &ClaimExpansion,
        m: &MountedVolume,
        reader: &R,
    ) {
        // The populator does not track the size of a read-only volume.
        if e.read_only {
            return;
        }
        let unique = Self::unique_name(m);
        let (actual, final_error) = {
            let mut states = self.expansion.states.lock().unwrap();
            let state = states.entry(unique.clone()).or_default();
            // InitializeClaimSize: the claim's capacity when nothing is known yet.
            let actual = state
                .size
                .get_or_insert_with(|| expand::claim_capacity(&e.claim))
                .clone();
            if state.in_use_error
                || !expand::volume_needs_expansion(&actual, &e.pv_capacity)
                || !state.due(Instant::now())
            {
                return;
            }
            (actual, state.final_error)
        };
        let result = match expand::node_expand_volume(
            &e.claim,
            &e.pv_capacity,
            &actual,
            false,
            final_error,
        ) {
            Before::Done { size, .. } => Called::Finished(size),
            Before::Wait => {
                tracing::info!(volume = %unique, "waiting for volume to be expandable on the node");
                Called::NotYet
            }
            Before::Call {
                new_size,
                old_size,
                in_progress,
                pre,
                recovery,
            } => {
                self.call(
                    pod,
                    e,
                    m,
                    (new_size, old_size, in_progress, pre, recovery),
                    reader,
                )
                .await
            }
        };
        let failed = {
            let mut states = self.expansion.states.lock().unwrap();
            let state = states.entry(unique).or_default();
            match result {
                Called::Finished(size) => {
                    state.size = Some(size);
                    state.succeeded();
                    None
                }
                Called::NotYet => None,
                Called::Failed(error) => {
                    let delay = state.failed(Instant::now());
                    tracing::warn!(volume = %e.pv_name, error = %error, retry_in = ?delay, "NodeExpandVolume of a volume in use failed");
                    Some(error)
                }
            }
        };
        if let Some(error) = failed {
            self.push_event(
                pod.object_ref(&()),
                true,
                expand::VOLUME_RESIZE_FAILED,
                expand::volume_error(
                    "NodeExpandVolume.NodeExpandVolume failed",
                    &e.pv_name,
                    &error,
                ),
            );
        }
    }

    /// Writes `new` as the claim's status (the difference to `claim`'s), with its
    /// resourceVersion when `check`.
    async fn write_claim_status<R: ObjectReader>(
        reader: &R,
        claim: &PersistentVolumeClaim,
        new: &PersistentVolumeClaimStatus,
        check: bool,
    ) -> Result<PersistentVolumeClaim, String> {
        let old = claim.status.clone().unwrap_or_default();
        let rv = claim.metadata.resource_version.as_deref().filter(|_| check);
        reader
            .patch_claim_status(
                claim.metadata.namespace.as_deref().unwrap_or_default(),
                claim.metadata.name.as_deref().unwrap_or_default(),
                status_patch(&old, new, rv),
            )
            .await
    }

    /// `expandOnPlugin` / `legacyCallNodeExpandOnPlugin` from the call on: the claim
    /// marked NodeResizeInProgress, NodeExpandVolume, the claim's status, the events.
    async fn call<R: ObjectReader>(
        &self,
        pod: &Pod,
        e: &ClaimExpansion,
        m: &MountedVolume,
        (new_size, old_size, in_progress, pre, recovery): (
            Quantity,
            Quantity,
            Option<Box<PersistentVolumeClaimStatus>>,
            PreCheck,
            bool,
        ),
        reader: &R,
    ) -> Called {
        let mut claim = e.claim.clone();
        if let Some(status) = in_progress {
            match Self::write_claim_status(reader, &claim, &status, true).await {
                Ok(updated) => claim = updated,
                Err(err) => {
                    return Called::Failed(format!(
                        "MountVolume.NodeExpandVolume failed to mark node expansion in progress: {err}"
                    ));
                }
            }
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let source = &m.device.as_ref().expect("a CSI volume").source;
        let result = {
            let _one_at_a_time = self.csi_operations.lock().await;
            self.csi
                .node_expand(
                    &self.dirs,
                    &uid,
                    &e.pv_name,
                    source,
                    amount(&new_size).value(),
                )
                .await
        };
        let after = expand::after(&claim, &new_size, &old_size, pre, recovery, result, &now());
        {
            let mut states = self.expansion.states.lock().unwrap();
            let state = states.entry(Self::unique_name(m)).or_default();
            state.final_error |= after.final_error;
            state.in_use_error |= after.in_use_error;
        }
        if after.success_events {
            let message = expand::volume_message(
                "MountVolume.NodeExpandVolume succeeded",
                &e.pv_name,
                self.csi.node_name(),
            );
            for object in [pod.object_ref(&()), claim.object_ref(&())] {
                self.push_event(
                    object,
                    false,
                    expand::FILE_SYSTEM_RESIZE_SUCCESS,
                    message.clone(),
                );
            }
            tracing::info!(volume = %e.pv_name, size = %new_size.0, "expanded the filesystem on the node");
        }
        if let Some((status, check)) = &after.status
            && let Err(err) = Self::write_claim_status(reader, &claim, status, *check).await
        {
            if after.error.is_none() {
                // The expansion is done but not recorded: done again (a no-op) next time.
                return Called::Failed(format!(
                    "mountVolume.NodeExpandVolume update pvc status failed: {err}"
                ));
            }
            tracing::warn!(claim = ?claim.metadata.name, error = %err, "could not mark the node expansion as failed");
        }
        match after.error {
            Some(error) => Called::Failed(error),
            None if after.finished => Called::Finished(after.size),
            None => Called::NotYet,
        }
    }
}
