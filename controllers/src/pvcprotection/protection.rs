//! The PVC protection controller's pure decision core (upstream
//! `pkg/controller/volume/pvcprotection/pvc_protection_controller.go`), with the helpers it
//! calls: `protectionutil` (`pkg/controller/util/protectionutil`), the pod-to-claim index
//! (`pkg/controller/volume/common.PodPVCIndexFunc`), the generic ephemeral volume helpers
//! (`k8s.io/component-helpers/storage/ephemeral`) and `volumeutil.IsPodTerminated`
//! (`pkg/volume/util/util.go`).
//!
//! Everything here is a function over snapshots: [`process_pvc`] decides what to do with a
//! claim given the pods in the informer cache and, when the cache alone cannot say that the
//! claim is unused, the pods of a live list; [`pod_added_deleted_updated`] and
//! [`pvc_needs_processing`] say which claims an event queues. [`add_finalizer_patch`] and
//! [`remove_finalizer_patch`] are the writes, guarded by the cached resourceVersion as
//! upstream's `Update` is.
use k8s_openapi::api::core::v1::Volume;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rekube_crds::pod_refs::{ephemeral_volume_claim_name, volume_claim_name, volume_is_for_pod};
use rekube_crds::{PersistentVolumeClaim, Pod};
use serde_json::{Value, json};

use crate::manager::informer::ObjectKey;

/// upstream `volumeutil.PVCProtectionFinalizer`.
pub use rekube_crds::storage_keys::PVC_PROTECTION_FINALIZER;

// ---------------------------------------------------------------------------------------
// protectionutil (shared with the PV protection controller)
// ---------------------------------------------------------------------------------------

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|f| f == finalizer)
}

/// The object is being deleted and still carries `finalizer` (upstream
/// `protectionutil.IsDeletionCandidate`).
pub fn is_deletion_candidate(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.deletion_timestamp.is_some() && has_finalizer(meta, finalizer)
}

/// The object is not being deleted and lacks `finalizer` (upstream
/// `protectionutil.NeedToAddFinalizer`).
pub fn need_to_add_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.deletion_timestamp.is_none() && !has_finalizer(meta, finalizer)
}

/// A JSON merge patch setting `metadata.finalizers` to `finalizers`, with the object's
/// resourceVersion as precondition: what upstream's `Update` of the cached object does, so
/// a finalizer another writer added meanwhile is never lost (the patch conflicts instead).
fn finalizers_patch(meta: &ObjectMeta, finalizers: Vec<String>) -> Value {
    let mut metadata = json!({ "finalizers": finalizers });
    if let Some(rv) = &meta.resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({ "metadata": metadata })
}

/// upstream addFinalizer: `finalizer` appended to the object's finalizers.
pub fn add_finalizer_patch(meta: &ObjectMeta, finalizer: &str) -> Value {
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    finalizers.push(finalizer.to_owned());
    finalizers_patch(meta, finalizers)
}

/// upstream removeFinalizer: every occurrence of `finalizer` removed
/// (`slice.RemoveString`), the other finalizers kept in order.
pub fn remove_finalizer_patch(meta: &ObjectMeta, finalizer: &str) -> Value {
    let finalizers = meta
        .finalizers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    finalizers_patch(meta, finalizers)
}

// ---------------------------------------------------------------------------------------
// Pods and the claims they use
// ---------------------------------------------------------------------------------------

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

fn is_scheduled(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// The keys (`namespace/name`) of the claims a pod might use, its generic ephemeral
/// volumes' included (upstream `common.PodPVCIndexFunc`, the pod informer's index).
pub fn pod_pvc_index_keys(pod: &Pod) -> Vec<ObjectKey> {
    volumes(pod)
        .iter()
        .filter_map(|v| volume_claim_name(name(&pod.metadata), v))
        .filter(|c| !c.is_empty())
        .map(|c| ObjectKey::new(Some(namespace(&pod.metadata)), &c))
        .collect()
}

/// Kubelet is done with the pod, or it was force-deleted: a deletion timestamp and a zero
/// deletion grace period (upstream `podIsShutDown`). Such a pod no longer holds its
/// ephemeral volumes' claims, which breaks a cycle between a pod finalizer waiting for the
/// claim to go and this controller waiting for the pod to go.
pub fn pod_is_shut_down(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod.metadata.deletion_grace_period_seconds == Some(0)
}

pub use crate::util::pod::is_pod_terminated;

/// Whether `pod` keeps `pvc` from being deleted (upstream `podUsesPVCForDeletion`). Only a
/// scheduled pod counts: kubelet sees pods once they are scheduled, and it does not start a
/// pod whose claim is being deleted. A scheduled pod referring to the claim by
/// `claimName` counts whatever its phase (a finished pod that is not deleted still does);
/// through a generic ephemeral volume it counts unless it is shut down
/// ([`pod_is_shut_down`]) and only if the claim was created for it.
pub fn pod_uses_pvc_for_deletion(pod: &Pod, pvc: &PersistentVolumeClaim) -> bool {
    if !is_scheduled(pod) {
        return false;
    }
    let pvc_name = name(&pvc.metadata);
    volumes(pod).iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|s| s.claim_name == pvc_name)
            || (!pod_is_shut_down(pod)
                && v.ephemeral.is_some()
                && ephemeral_volume_claim_name(name(&pod.metadata), &v.name) == pvc_name
                && volume_is_for_pod(pod, pvc).is_ok())
    })
}

/// upstream askInformer: a pod of the informer cache using `pvc`. The cache is searched by
/// the index keys ([`pod_pvc_index_keys`]), then each candidate is checked with
/// [`pod_uses_pvc_for_deletion`] (redundant for `claimName`, needed for ephemeral volumes).
pub fn ask_informer<'a>(pvc: &PersistentVolumeClaim, pods: &[&'a Pod]) -> Option<&'a Pod> {
    let key = ObjectKey::new(Some(namespace(&pvc.metadata)), name(&pvc.metadata));
    pods.iter()
        .copied()
        .filter(|p| pod_pvc_index_keys(p).contains(&key))
        .find(|p| pod_uses_pvc_for_deletion(p, pvc))
}

/// upstream askAPIServer: a pod of a live list of the claim's namespace using `pvc`.
pub fn ask_api_server<'a>(pvc: &PersistentVolumeClaim, live_pods: &'a [Pod]) -> Option<&'a Pod> {
    live_pods.iter().find(|p| pod_uses_pvc_for_deletion(p, pvc))
}

// ---------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------

/// What the controller does with a claim (upstream processPVC's outcomes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Neither being deleted with the finalizer nor lacking it.
    Nothing,
    /// Not being deleted and without the finalizer: add it (upstream adds it besides the
    /// admission plugin, for claims created before the plugin was on).
    AddFinalizer,
    /// Being deleted, but pod `pod` (`namespace/name`) uses it: keep the finalizer.
    KeepFinalizer { pod: String },
    /// Being deleted and no pod of the informer cache uses it: the cache may lag, so list
    /// the namespace's pods live before deciding (upstream's lazy live list).
    AskApiServer,
    /// Being deleted and no pod uses it, live list included: remove the finalizer.
    RemoveFinalizer,
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", namespace(&pod.metadata), name(&pod.metadata))
}

/// upstream processPVC (the PersistentVolumeClaimUnusedSinceTime gate off, its v1.36
/// default). `cached_pods` are the informer's pods (any namespace), `live_pods` a live
/// list of the claim's namespace once the controller has made one: without it a claim
/// being deleted that no cached pod uses gets [`Decision::AskApiServer`]; with it, never.
pub fn process_pvc(
    pvc: &PersistentVolumeClaim,
    cached_pods: &[&Pod],
    live_pods: Option<&[Pod]>,
) -> Decision {
    if is_deletion_candidate(&pvc.metadata, PVC_PROTECTION_FINALIZER) {
        if let Some(pod) = ask_informer(pvc, cached_pods) {
            return Decision::KeepFinalizer { pod: pod_key(pod) };
        }
        let Some(live_pods) = live_pods else {
            return Decision::AskApiServer;
        };
        return match ask_api_server(pvc, live_pods) {
            Some(pod) => Decision::KeepFinalizer { pod: pod_key(pod) },
            None => Decision::RemoveFinalizer,
        };
    }
    if need_to_add_finalizer(&pvc.metadata, PVC_PROTECTION_FINALIZER) {
        return Decision::AddFinalizer;
    }
    Decision::Nothing
}

/// upstream pvcAddedUpdated's filter: a claim added or updated is queued when it lacks the
/// finalizer or is being deleted with it.
pub fn pvc_needs_processing(pvc: &PersistentVolumeClaim) -> bool {
    need_to_add_finalizer(&pvc.metadata, PVC_PROTECTION_FINALIZER)
        || is_deletion_candidate(&pvc.metadata, PVC_PROTECTION_FINALIZER)
}

/// upstream enqueuePVCs: the claims a pod event queues. A pod that can help remove a
/// finalizer is one deleted, terminated ([`is_pod_terminated`]) or not scheduled; the
/// others queue nothing.
pub fn enqueue_pvcs(pod: &Pod, deleted: bool) -> Vec<ObjectKey> {
    if !deleted && !is_pod_terminated(pod) && is_scheduled(pod) {
        return Vec::new();
    }
    volumes(pod)
        .iter()
        .filter_map(|v| volume_claim_name(name(&pod.metadata), v))
        .map(|c| ObjectKey::new(Some(namespace(&pod.metadata)), &c))
        .collect()
}

/// upstream podAddedDeletedUpdated: the claims of the new pod ([`enqueue_pvcs`]), and,
/// when an update hides a deletion and re-creation under the same name (the UID changed),
/// those of the old pod as if deleted, which may be blocking a claim the new one does not
/// use.
pub fn pod_added_deleted_updated(old: Option<&Pod>, new: &Pod, deleted: bool) -> Vec<ObjectKey> {
    let mut keys = enqueue_pvcs(new, deleted);
    if let Some(old) = old
        && old.metadata.uid != new.metadata.uid
    {
        keys.extend(enqueue_pvcs(old, true));
    }
    keys
}

#[cfg(test)]
#[path = "protection_tests.rs"]
mod tests;
