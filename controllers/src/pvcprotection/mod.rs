//! The PVC protection controller (upstream kube-controller-manager's
//! `persistentvolumeclaim-protection-controller`, alias `pvc-protection`;
//! pkg/controller/volume/pvcprotection): keeps the `kubernetes.io/pvc-protection`
//! finalizer on every PersistentVolumeClaim, and removes it from a claim being deleted once
//! no pod uses it. A pod uses a claim when it is scheduled and refers to it by
//! `persistentVolumeClaim.claimName` (whatever its phase: a finished pod that is not
//! deleted still holds it), or through a generic ephemeral volume (claim `<pod>-<volume>`,
//! controlled by the pod) unless the pod is shut down (deleted with a zero grace period).
//! The informer cache is asked first; only when it shows no such pod are the namespace's
//! pods listed live before the finalizer goes. [`protection`] is the pure core,
//! [`controller`] the reconciler.
//!
//! Not ported: the alpha `PersistentVolumeClaimUnusedSinceTime` gate (off by default in
//! v1.36) and its `Unused` condition in the claim's status; with the gate off, as here,
//! upstream's behaviour is the one implemented.
//!
//! Upstream tests ported (cases ported / upstream cases, all passing):
//!
//! | upstream test | file | ported |
//! |---|---|---|
//! | TestPVCProtectionController | pvc_protection_controller_test.go | 26 / 37 |
//! | TestIsDeletionCandidate* (4 functions) | protectionutil/utils_test.go | 8 / 8 checks |
//! | TestNeedToAddFinalizer* (4 functions) | protectionutil/utils_test.go | 8 / 8 checks |
//!
//! TestPVCProtectionController is replayed in `protection_tests.rs`: each case's objects
//! go to the "API" and the informers (or only the API when informers are late), its
//! events through upstream's handler filters ([`protection::pvc_needs_processing`],
//! [`protection::pod_added_deleted_updated`]), and the queue is processed with
//! [`protection::process_pvc`], one claim per namespace batch as upstream's test loop does.
//! The expected actions are upstream's, written as `List(namespace)` (a
//! [`protection::Decision::AskApiServer`] followed by the live list) and `Update(claim,
//! finalizers after)` (the patch of an `AddFinalizer` or `RemoveFinalizer`); the failing
//! reactors fail the first n updates or lists and queue the claim again.
//! - 22 cases with the gate off (13 PVC events, "feature disabled: unused PVC with no
//!   pods -> no condition action", 8 pod events): all ported.
//! - 15 cases with the gate on: 4 ported for their finalizer behaviour, which the gate
//!   does not change ("deleting PVC -> condition not updated, finalizer removed",
//!   "deleting PVC that already has Unused=True condition" (the patch touches only
//!   `metadata.finalizers`, so status conditions are kept), "used PVC without finalizer ->
//!   Unused=False set then finalizer added" (the finalizer half; the status update is
//!   not), "deleted PVC with finalizer and pod using it -> finalizer kept"); 11 not
//!   ported, as they test only the `Unused` condition (and the gate-on event filters that
//!   feed it): "unused PVC with no pods", "PVC already has Unused=True and is still
//!   unused", "running pod references PVC with Unused=True", "PVC in use by running pod
//!   without condition", "unscheduled pending pod references PVC", "terminated (Succeeded)
//!   pod", "terminated (Failed) pod", "status update fails", "pod not in informer cache but
//!   exists in API", "one of two pods deleted, remaining pod
//!   keeps PVC in use", "pod deleted, PVC becomes unused".
//!
//! The namespace batching and the lazy live list (upstream's "pod list fails for one PVC"
//! mechanism) are tested in `controller.rs`; ephemeral volumes, `podIsShutDown` and
//! `IsPodTerminated`, which upstream's table does not exercise, in `protection_tests.rs`.
pub mod controller;
pub mod protection;
