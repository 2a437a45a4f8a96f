//! The attach/detach controller (upstream kube-controller-manager's
//! `persistentvolume-attach-detach-controller`, pkg/controller/volume/attachdetach, with the CSI plugin's
//! attacher of pkg/volume/csi/csi_attacher.go): attaches the CSI volumes that pods bound to
//! a node need to that node, by creating a rekube VolumeAttachment for the CSI driver's
//! attacher (rekube-csi, or any external-attacher) and waiting for `status.attached`, lists
//! them in the node's `status.volumesAttached` (the node agent mounts only those), and
//! detaches them (deletes the VolumeAttachment) once no pod on the node wants them and the
//! node no longer has them in `status.volumesInUse`, or after `--attach-detach-max-wait-for-unmount`
//! from an unhealthy node, or at once from a node with the out-of-service taint.
//!
//! Layout, named as upstream's:
//!
//! | file | upstream | what |
//! |---|---|---|
//! | [`cache`] | cache/desired_state_of_world.go, cache/actual_state_of_world.go | the desired and actual states of the world |
//! | [`util`] | util/util.go, pkg/volume/util | a pod volume → its CSI volume spec (claim → bound PV), attachability from the CSIDriver, terminated pods, `process_pod_volumes` |
//! | [`populator`] | populator/desired_state_of_world_populator.go | `find_and_remove_deleted_pods`, `find_and_add_active_pods` |
//! | [`operations`] | pkg/volume/util/nestedpendingoperations, goroutinemap/exponentialbackoff | which attach/detach runs, and the backoff after a failure (500 ms doubling to 2 m 2 s) |
//! | [`reconciler`] | reconciler/reconciler.go, operation_generator.go's messages | `reconcile`: the detaches, attaches, multi-attach errors and node status writes one pass decides |
//! | [`statusupdater`] | statusupdater/node_status_updater.go | the node status patch (`volumesAttached` only) |
//! | [`csi`] | pkg/volume/csi/csi_attacher.go | the VolumeAttachment of a volume on a node, `verify_attachment_status`, `verify_detachment_status` |
//! | [`controller`] | attach_detach_controller.go | the shell: informers' handlers, `populate_actual_state_of_world`, the loop, the operations against the apiserver |
//!
//! Only CSI PersistentVolumes are attachable (rekube has no in-tree attachable plugins and
//! no CSI migration): a pod's `persistentVolumeClaim` or generic `ephemeral` volume whose
//! Bound claim's PV has `spec.csi`, when the driver's CSIDriver object says
//! `attachRequired: true` or there is no CSIDriver object for it (upstream's default).
//! Inline `csi` volumes, hostPath and local volumes are not attachable.
//!
//! Upstream tests ported (ported / upstream tests, all passing):
//!
//! | upstream test file | ported | where |
//! |---|---|---|
//! | reconciler/reconciler_test.go | 16 / 16 | `reconciler_tests.rs`: each pass of `reconcile` run by a fake executor with upstream's fake plugin behaviour (its special node names) and a fake clock |
//! | cache/desired_state_of_world_test.go | 25 / 25 | `cache_tests.rs` (closely related Go tests merged into one Rust test; each names its Go tests) |
//! | cache/actual_state_of_world_test.go | 40 / 40 | `cache_tests.rs` (likewise) |
//! | populator/desired_state_of_world_populator_test.go | 2 / 2 | `populator.rs` |
//! | statusupdater/node_status_updater_test.go | 3 / 3 | `statusupdater.rs` |
//! | util/util_test.go | 0 / 1 | its only test, Test_CreateVolumeSpec, checks CSI migration of in-tree volumes, which rekube has not; `util.rs` has a table of its own for `create_volume_spec` (bound CSI claim, missing or unbound claim, missing PV, claimRef of another claim, non-CSI PV, inline volumes, an ephemeral claim of another owner) |
//! | attach_detach_controller_test.go | 0 / 5 | they drive the Go controller with fake informers and clients; the decisions they check (which VolumeAttachments are taken on at start, managed nodes) are unit-tested in `controller.rs`, the rest was checked by hand against the local cluster |
//!
//! pkg/volume/csi's attacher status checks (`verifyAttachmentStatus`,
//! `verifyDetachmentStatus`, the attachment name and object) are tested in `csi.rs`.
pub mod cache;
pub mod controller;
pub mod csi;
pub mod operations;
pub mod populator;
pub mod reconciler;
pub mod statusupdater;
pub mod util;

#[cfg(test)]
mod reconciler_tests;

/// The controller's name, as upstream's (`--controllers`, events' source).
pub const CONTROLLER_NAME: &str = "persistentvolume-attach-detach-controller";

/// The module's errors: lowercase, naming the object and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node:?} is not managed by the attach/detach controller")]
    NodeNotManaged { node: String },
    #[error("node {node:?} still has {volumes} volumes to attach")]
    NodeHasVolumes { node: String, volumes: usize },
    #[error("volume {volume:?} is no longer attached to node {node:?}")]
    VolumeNotAttached { volume: String, node: String },
    #[error("volume {volume:?} is not reported as attached to node {node:?}")]
    NotReportedAsAttached { volume: String, node: String },
    #[error("node {node:?} is not tracked for status updates")]
    NodeNotTracked { node: String },
    /// upstream createInTreeVolumeSpec's errors, with its text.
    #[error("error processing PVC {namespace:?}/{claim:?}: {cause}")]
    Claim {
        namespace: String,
        claim: String,
        cause: String,
    },
    #[error("{0}")]
    EphemeralClaim(String),
    #[error(
        "unique volume name {0:?} is not a CSI volume name (kubernetes.io/csi/<driver>^<handle>)"
    )]
    UniqueName(String),
    #[error("node {node}: patching status.volumesAttached: {source}")]
    NodeStatus { node: String, source: kube::Error },
    #[error("volumeattachment {name}: {action}: {source}")]
    VolumeAttachment {
        name: String,
        action: &'static str,
        source: kube::Error,
    },
    #[error("node {node}: reading it before detach: {source}")]
    NodeGet { node: String, source: kube::Error },
}
