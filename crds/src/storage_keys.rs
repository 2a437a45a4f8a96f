//! The annotation and finalizer names of upstream's storage machinery (component-helpers
//! `storage/volume` pv_helpers.go, `pkg/volume/util`, external-provisioner), shared by
//! rekube-controllers (PV binder, scheduler, protection controllers), the node agent and
//! rekube-csi's provisioner, so that every side reads and writes the same keys; and the
//! names derived from a CSI volume (its unique volume name, its VolumeAttachment, the
//! attacher's finalizer), shared by the attach/detach controller, the node agent and
//! rekube-csi's attacher.

use sha2::{Digest, Sha256};

/// The node a WaitForFirstConsumer claim is to be bound or provisioned on (upstream
/// `AnnSelectedNode`), set by the scheduler.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set on a claim once its binding is complete (upstream `AnnBindCompleted`).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a volume or claim whose binding the PV controller made (upstream
/// `AnnBoundByController`).
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The plugin or external provisioner that provisioned a volume (upstream
/// `AnnDynamicallyProvisioned`).
pub const ANN_DYNAMICALLY_PROVISIONED: &str = "pv.kubernetes.io/provisioned-by";
/// The provisioner expected to provision a claim (upstream `AnnStorageProvisioner`).
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta twin of [`ANN_STORAGE_PROVISIONER`] (upstream `AnnBetaStorageProvisioner`).
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The beta storage-class annotation, read before `storageClassName` (upstream
/// `v1.BetaStorageClassAnnotation`).
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The claim protection finalizer (upstream `PVCProtectionFinalizer`).
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// The volume protection finalizer (upstream `PVProtectionFinalizer`).
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";
/// The external provisioner's deletion protection finalizer on the volumes it made
/// (upstream `PVDeletionProtectionFinalizer`).
pub const PV_DELETION_PROTECTION_FINALIZER: &str =
    "external-provisioner.volume.kubernetes.io/finalizer";

/// Volume expansion's names on a claim (core/v1's PersistentVolumeClaim condition types
/// and `ClaimResourceStatus` values, and external-resizer's annotation), shared by
/// `rekube-csi resizer` (the controller's half) and the node agent (the kubelet's half).
pub mod expansion {
    /// The resource whose size a claim requests and whose expansion is tracked.
    pub const STORAGE: &str = "storage";
    /// Condition: the controller is expanding the volume (`PersistentVolumeClaimResizing`).
    pub const RESIZING: &str = "Resizing";
    /// Condition: the volume grew, its filesystem waits for the node
    /// (`PersistentVolumeClaimFileSystemResizePending`).
    pub const FILE_SYSTEM_RESIZE_PENDING: &str = "FileSystemResizePending";
    /// Condition: the controller's expansion failed (`PersistentVolumeClaimControllerResizeError`).
    pub const CONTROLLER_RESIZE_ERROR: &str = "ControllerResizeError";
    /// Condition: the node's expansion failed (`PersistentVolumeClaimNodeResizeError`).
    pub const NODE_RESIZE_ERROR: &str = "NodeResizeError";
    /// The condition types both sides merge (upstream `knownResizeConditions`).
    pub const RESIZE_CONDITIONS: [&str; 4] = [
        RESIZING,
        FILE_SYSTEM_RESIZE_PENDING,
        CONTROLLER_RESIZE_ERROR,
        NODE_RESIZE_ERROR,
    ];
    /// `status.allocatedResourceStatuses[storage]` values (`ClaimResourceStatus`).
    pub const CONTROLLER_RESIZE_IN_PROGRESS: &str = "ControllerResizeInProgress";
    pub const CONTROLLER_RESIZE_INFEASIBLE: &str = "ControllerResizeInfeasible";
    pub const NODE_RESIZE_PENDING: &str = "NodeResizePending";
    pub const NODE_RESIZE_IN_PROGRESS: &str = "NodeResizeInProgress";
    pub const NODE_RESIZE_INFEASIBLE: &str = "NodeResizeInfeasible";
    /// The FileSystemResizePending condition's message (external-resizer's).
    pub const FILE_SYSTEM_RESIZE_PENDING_MESSAGE: &str =
        "Waiting for user to (re-)start a pod to finish file system resize of volume on node.";
    /// Set by the resizer when the controller's expansion was all (upstream
    /// `NodeExpansionNotRequired`): the kubelet of a ReadWriteMany volume's other nodes
    /// then leaves it alone.
    pub const ANN_NODE_EXPANSION_NOT_REQUIRED: &str =
        "volume.kubernetes.io/node-expansion-not-required";
}

/// The plugin name of CSI volumes in unique volume names (upstream `CSIPluginName`).
pub const CSI_PLUGIN_NAME: &str = "kubernetes.io/csi";

/// A CSI volume's unique volume name, as `volumesInUse` and `volumesAttached` list it
/// (upstream `GetUniqueVolumeName` over csiPlugin's `GetVolumeName`:
/// `kubernetes.io/csi/<driver>^<handle>`).
pub fn csi_unique_volume_name(driver: &str, volume_handle: &str) -> String {
    format!("{CSI_PLUGIN_NAME}/{driver}^{volume_handle}")
}

/// `getAttachmentName` (pkg/volume/csi/csi_attacher.go): the VolumeAttachment of a CSI
/// volume on a node, `csi-<sha256(handle + driver + node)>`.
pub fn attachment_name(volume_handle: &str, driver: &str, node: &str) -> String {
    let sha = Sha256::digest(format!("{volume_handle}{driver}{node}").as_bytes());
    format!("csi-{}", hex::encode(sha))
}

/// The finalizer external-attacher puts on the VolumeAttachments (and PersistentVolumes)
/// it attached (`GetFinalizerName`: `external-attacher/` and `SanitizeDriverName`: the
/// driver name with every character outside `[a-zA-Z0-9-]` replaced by `-`, and an `X`
/// after a trailing `-`, since a name must not end with one).
pub fn attacher_finalizer(driver: &str) -> String {
    let mut sanitized: String = driver
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if sanitized.ends_with('-') {
        sanitized.push('X');
    }
    format!("external-attacher/{sanitized}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derived_from_a_csi_volume() {
        assert_eq!(
            csi_unique_volume_name("csi.rekube.io", "vol-1"),
            "kubernetes.io/csi/csi.rekube.io^vol-1"
        );
        assert_eq!(
            attachment_name("h", "d", "n"),
            format!("csi-{}", hex::encode(Sha256::digest(b"hdn")))
        );
        // external-attacher's TestSanitizeDriverName-style cases.
        assert_eq!(
            attacher_finalizer("csi.rekube.io"),
            "external-attacher/csi-rekube-io"
        );
        assert_eq!(attacher_finalizer("a/b_c-"), "external-attacher/a-b-c-X");
        assert_eq!(attacher_finalizer("abc-"), "external-attacher/abc-X");
    }
}
