//! The annotation and finalizer names of upstream's storage machinery (component-helpers
//! `storage/volume` pv_helpers.go, `pkg/volume/util`, external-provisioner), shared by
//! rekube-controllers (PV binder, scheduler, protection controllers), the node agent and
//! rekube-csi's provisioner, so that every side reads and writes the same keys.

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
