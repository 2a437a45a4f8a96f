//! The ephemeral volume controller (upstream kube-controller-manager's
//! `ephemeral-volume-controller`; pkg/controller/volume/ephemeral): for each pod with
//! generic ephemeral volumes (`spec.volumes[].ephemeral.volumeClaimTemplate`), the
//! PersistentVolumeClaim `<pod>-<volume>` is created in the pod's namespace from the
//! template (its labels, annotations and spec), controlled by the pod (so the garbage
//! collector deletes it with the pod), unless it exists. An existing claim of that name
//! that the pod does not control is left alone: the sync fails with upstream's
//! FailedBinding event on the pod ("ephemeral volume scratch: PVC ns/web-scratch was not
//! created for pod ns/web (pod is not owner)") and is retried after a backoff. Pods being
//! deleted are skipped. The claim then binds through the PV binder as any claim.
//!
//! A pod added or updated queues itself when it has an ephemeral volume and is not being
//! deleted (upstream watches additions only, as the pod spec is immutable: rekube's spec
//! immutability is an admission policy of its own, and an update costs a cache lookup);
//! a claim deleted queues the pods using it by name (upstream's PVC-to-pod index), so the
//! claim of a live pod is made again. [`ephemeral`] is the pure core, [`controller`] the
//! reconciler.
//!
//! Upstream tests ported (cases ported / upstream cases, all passing):
//!
//! | upstream test | file | ported |
//! |---|---|---|
//! | TestSyncHandler | controller_test.go | 7 / 7 |
//!
//! TestSyncHandler is replayed in `ephemeral.rs` against [`ephemeral::sync_handler`],
//! with a fake API holding the claims of every namespace and failing creates for
//! "create-conflict"; its `expectedMetrics` (create attempts, failures) are counted by
//! that fake. Not ported: upstream's two metrics themselves
//! (`ephemeral_volume_controller_create_total` and `create_failures_total`); the
//! manager's per-controller sync and queue metrics cover the controller. Also tested
//! there, beyond upstream's table: the claim made from a full template, several volumes
//! in order up to the first conflict, the enqueue filter and the deleted-claim mapping.
pub mod controller;
#[allow(clippy::module_inception)]
pub mod ephemeral;
