//! The resizer's decisions, pure functions over the objects the shell watches
//! (kubernetes-csi/external-resizer v2.2.1: pkg/controller/controller.go `syncPVC`,
//! `pvcNeedResize`, expand_and_recover.go `expandAndRecover`, `callResizeOnPlugin`,
//! `pvCanBeExpanded`, resize_status.go's status markers, inuse_pvc_store.go, pkg/util's
//! condition merge and error classes, pkg/resizer's capability choice and
//! `GetVolumeCapabilities`), with RecoverVolumeExpansionFailure on (GA): whether a claim
//! needs expanding, to what size, the claim's status before and after ControllerExpandVolume
//! (`allocatedResources`, `allocatedResourceStatuses`: ControllerResizeInProgress, then
//! NodeResizePending or done), the events and what an error means.
//!
//! A claim's status is computed whole here; the shell writes the difference
//! ([`status_patch`]) as a JSON merge patch of `persistentvolumeclaims/status` with the
//! resourceVersion it was computed from (upstream's strategic merge patch with
//! `addResourceVersionCheck`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaimCondition, PersistentVolumeClaimStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rekube_crds::quantity::amount;
use rekube_crds::storage_keys::expansion::*;
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};
use serde_json::{Map, Value, json};
use tonic::Code;

use crate::csi::{CapacityRange, ControllerExpandVolumeRequest};
use crate::provisioner::decide::{bytes_to_quantity, volume_is_on_node};

/// Event reasons (external-resizer pkg/util/events.go).
pub const VOLUME_RESIZING: &str = "Resizing";
pub const VOLUME_RESIZE_FAILED: &str = "VolumeResizeFailed";
pub const VOLUME_RESIZE_SUCCESS: &str = "VolumeResizeSuccessful";
pub const FILE_SYSTEM_RESIZE_REQUIRED: &str = "FileSystemResizeRequired";

/// How the driver expands (upstream `NewResizerFromClient`): ControllerExpandVolume
/// (`csiResizer`), or nothing in the controller and everything on the node
/// (`trivialResizer`, for a driver with node expansion only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizerKind {
    Csi,
    Trivial,
}

/// upstream's refusals of a driver it cannot resize for.
pub const CONTROLLER_SERVICE_NOT_SUPPORTED: &str = "CSI driver does not support controller service";
pub const RESIZE_NOT_SUPPORTED: &str =
    "CSI driver neither supports controller resize nor node resize";

/// `NewResizerFromClient`: the resizer for a driver's capabilities (the plugin's
/// CONTROLLER_SERVICE, the controller's and the node's EXPAND_VOLUME).
pub fn resizer_kind(
    controller_service: bool,
    controller_expand: bool,
    node_expand: bool,
) -> Result<ResizerKind, &'static str> {
    if !controller_service {
        return Err(CONTROLLER_SERVICE_NOT_SUPPORTED);
    }
    match (controller_expand, node_expand) {
        (true, _) => Ok(ResizerKind::Csi),
        (false, true) => Ok(ResizerKind::Trivial),
        (false, false) => Err(RESIZE_NOT_SUPPORTED),
    }
}

/// The resizer of one driver on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resizer {
    /// The driver's name (GetPluginInfo), the PVs' `csi.driver`; also the controller's
    /// name in upstream's messages (`--csi-address`'s driver).
    pub name: String,
    /// This node (the driver's `--node-id`): the volumes whose node affinity names it.
    pub node_id: String,
    pub kind: ResizerKind,
    /// SINGLE_NODE_MULTI_WRITER: how ReadWriteOnce maps (GetVolumeCapabilities).
    pub single_node_multi_writer: bool,
}

impl Resizer {
    /// upstream `DriverSupportsControlPlaneExpansion`.
    pub fn control_plane_expansion(&self) -> bool {
        self.kind == ResizerKind::Csi
    }
}

/// `namespace/name`, the work queue's key and upstream's `klog.KObj`.
pub fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

fn status(claim: &PersistentVolumeClaim) -> PersistentVolumeClaimStatus {
    claim.status.clone().unwrap_or_default()
}

/// The claim's `spec.resources.requests.storage`.
pub fn requested(claim: &PersistentVolumeClaim) -> Quantity {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(STORAGE))
        .cloned()
        .unwrap_or_else(|| Quantity("0".into()))
}

/// The claim's `status.capacity.storage`.
pub fn status_capacity(claim: &PersistentVolumeClaim) -> Quantity {
    claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get(STORAGE))
        .cloned()
        .unwrap_or_else(|| Quantity("0".into()))
}

/// The claim's `status.allocatedResources.storage`.
pub fn allocated(claim: &PersistentVolumeClaim) -> Option<Quantity> {
    claim
        .status
        .as_ref()
        .and_then(|s| s.allocated_resources.as_ref())
        .and_then(|c| c.get(STORAGE))
        .cloned()
}

/// The claim's `status.allocatedResourceStatuses.storage` ("" when none).
pub fn resize_status(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.allocated_resource_statuses.as_ref())
        .and_then(|c| c.get(STORAGE))
        .map(String::as_str)
        .unwrap_or_default()
}

/// The PV's `spec.capacity.storage`.
pub fn pv_capacity(pv: &PersistentVolume) -> Quantity {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get(STORAGE))
        .cloned()
        .unwrap_or_else(|| Quantity("0".into()))
}

/// `HasFileSystemResizePendingCondition`.
pub fn has_file_system_resize_pending(claim: &PersistentVolumeClaim) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == FILE_SYSTEM_RESIZE_PENDING && c.status == "True")
        })
}

/// `pvcNeedResize`: a Bound claim with a volume whose request exceeds its capacity.
pub fn pvc_need_resize(claim: &PersistentVolumeClaim) -> bool {
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    bound && volume && amount(&requested(claim)) > amount(&status_capacity(claim))
}

/// `CanSupport` (no in-tree migration): the PV is a CSI volume of this driver. And, for a
/// node-local driver, the PV's node affinity names this node: the resizer beside the
/// driver that holds the volume expands it (as the provisioner deletes only its own).
pub fn can_support(resizer: &Resizer, pv: &PersistentVolume) -> bool {
    let driver = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .map(|c| c.driver.as_str());
    driver == Some(resizer.name.as_str()) && volume_is_on_node(pv, &resizer.node_id)
}

/// The rest of `pvCanBeExpanded`: the PV's claimRef is this claim (namespace and UID).
pub fn pv_bound_to(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.namespace == claim.metadata.namespace
                && r.uid.is_some()
                && r.uid == claim.metadata.uid
        })
}

/// The claim annotation naming its resizer (upstream `VolumeResizerKey`, set by the
/// in-tree resizer for migrated volumes).
pub const ANN_STORAGE_RESIZER: &str = "volume.kubernetes.io/storage-resizer";

/// upstream `updatePVC` (with RecoverVolumeExpansionFailure): whether an update of a
/// claim is worth a sync: its request changed (either way) or its resizer annotation;
/// or, the request unchanged, a resync (same resourceVersion), a larger capacity, or
/// another `allocatedResourceStatuses` entry. A change of conditions alone (the
/// resizer's own ControllerResizeError) is not, so the back-off holds.
pub fn should_enqueue_update(old: &PersistentVolumeClaim, new: &PersistentVolumeClaim) -> bool {
    let resizer = |c: &PersistentVolumeClaim| {
        c.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_STORAGE_RESIZER))
            .cloned()
    };
    if amount(&requested(new)) != amount(&requested(old)) || resizer(new) != resizer(old) {
        return true;
    }
    new.metadata.resource_version == old.metadata.resource_version
        || amount(&status_capacity(new)) > amount(&status_capacity(old))
        || resize_status(new) != resize_status(old)
}

/// What a sync of a claim does (upstream `syncPVC` then `expandAndRecover` up to the
/// driver call).
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing: not bound, no growth asked, not this resizer's, or the node's turn.
    Skip,
    /// The claim's volume is not in the store yet (upstream retries: "PV %q bound to pvc
    /// %q not found").
    VolumeMissing(String),
    /// Expansion failed as infeasible lately: try again after `after` (upstream's slow
    /// set and DelayRetryError).
    DelayRetry { message: String, after: Duration },
    /// Expand to `new_size`: write `in_progress` (markControllerResizeInProgress), then
    /// ControllerExpandVolume.
    Resize {
        new_size: Quantity,
        in_progress: Box<PersistentVolumeClaimStatus>,
    },
}

/// The resizer's memory of a claim (upstream's `finalErrorPVCs` and slow set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracking {
    /// The last expansion failed with a final error.
    pub final_error: bool,
    /// The time left before an infeasible expansion may be tried again (in the slow set).
    pub slow_remaining: Option<Duration>,
}

/// `expandAndRecover`'s size: what to expand the volume to, or `None` when it must not be
/// called now (the node's expansion is pending, or a spurious event).
pub fn expansion_size(
    resizer: &Resizer,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    final_error: bool,
) -> Option<Quantity> {
    let spec = requested(claim);
    let pv_size = pv_capacity(pv);
    let allocated = allocated(claim);
    let mut new_size = spec.clone();
    if amount(&pv_size) < amount(&spec) {
        // The PV is smaller than asked: the controller expands, but a previous expansion
        // finishes first.
        match resize_status(claim) {
            NODE_RESIZE_INFEASIBLE => {
                if let Some(a) = allocated {
                    new_size = a;
                }
            }
            NODE_RESIZE_PENDING | NODE_RESIZE_IN_PROGRESS => {
                if let Some(a) = allocated {
                    new_size = a;
                }
                if amount(&pv_size) >= amount(&new_size) {
                    return None;
                }
            }
            CONTROLLER_RESIZE_IN_PROGRESS => {
                if final_error {
                    new_size = spec;
                } else if let Some(a) = allocated {
                    new_size = a;
                }
            }
            _ => {}
        }
    } else {
        // The PV is expanded already.
        match resize_status(claim) {
            NODE_RESIZE_IN_PROGRESS | NODE_RESIZE_PENDING => return None,
            NODE_RESIZE_INFEASIBLE => {
                if resizer.control_plane_expansion()
                    && let Some(a) = allocated
                {
                    new_size = a;
                }
            }
            CONTROLLER_RESIZE_IN_PROGRESS | CONTROLLER_RESIZE_INFEASIBLE => {
                if let Some(a) = allocated {
                    new_size = a;
                }
            }
            "" if allocated.is_some() => new_size = allocated.unwrap_or(spec),
            _ => {
                // An apiserver without allocatedResourceStatuses (before 1.32).
                if has_file_system_resize_pending(claim) {
                    return None;
                }
            }
        }
    }
    Some(new_size)
}

/// `syncPVC` and `expandAndRecover` up to the driver call.
pub fn plan(
    resizer: &Resizer,
    claim: &PersistentVolumeClaim,
    pv: Option<&PersistentVolume>,
    tracking: Tracking,
    now: &Time,
) -> Plan {
    let Some(volume) = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty())
    else {
        return Plan::Skip;
    };
    let Some(pv) = pv else {
        return Plan::VolumeMissing(format!(
            "persistentvolume {volume:?} bound to persistentvolumeclaim {:?} not found",
            claim_key(claim)
        ));
    };
    if !pvc_need_resize(claim) {
        return Plan::Skip;
    }
    expand_and_recover(resizer, claim, pv, tracking, now)
}

/// `expandAndRecover` up to the driver call: nothing for a volume this resizer does not
/// expand or that is not bound to the claim; else the size and the claim's status marked
/// in progress, or a wait when the same expansion was infeasible lately.
pub fn expand_and_recover(
    resizer: &Resizer,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    tracking: Tracking,
    now: &Time,
) -> Plan {
    if !can_support(resizer, pv) || !pv_bound_to(pv, claim) {
        return Plan::Skip;
    }
    let Some(new_size) = expansion_size(resizer, claim, pv, tracking.final_error) else {
        return Plan::Skip;
    };
    let mut update_status = true;
    if allocated(claim).is_some_and(|a| amount(&a) == amount(&new_size)) {
        if let Some(after) = tracking.slow_remaining {
            return Plan::DelayRetry {
                message: format!(
                    "skipping volume expansion for pvc {}, because expansion previously failed with infeasible error",
                    claim_key(claim)
                ),
                after,
            };
        }
        update_status = false;
    }
    Plan::Resize {
        in_progress: Box::new(mark_controller_resize_in_progress(
            claim,
            &new_size,
            update_status,
            now,
        )),
        new_size,
    }
}

fn condition(type_: &str, message: Option<String>, now: &Time) -> PersistentVolumeClaimCondition {
    PersistentVolumeClaimCondition {
        type_: type_.to_string(),
        status: "True".into(),
        last_transition_time: Some(now.clone()),
        message,
        ..Default::default()
    }
}

/// `MergeResizeConditionsOfPVC`: conditions that are not about resizing are kept; a
/// resize condition is replaced by a new one of its type, else kept only when
/// `keep_old`; the new ones not yet placed are appended.
pub fn merge_resize_conditions(
    old: &[PersistentVolumeClaimCondition],
    new: &[PersistentVolumeClaimCondition],
    keep_old: bool,
) -> Vec<PersistentVolumeClaimCondition> {
    let mut pending: Vec<&PersistentVolumeClaimCondition> = new.iter().collect();
    let mut out = Vec::new();
    for c in old {
        if !RESIZE_CONDITIONS.contains(&c.type_.as_str()) {
            out.push(c.clone());
            continue;
        }
        if let Some(i) = pending.iter().position(|n| n.type_ == c.type_) {
            out.push(pending.remove(i).clone());
        } else if keep_old {
            out.push(c.clone());
        }
    }
    out.extend(pending.into_iter().cloned());
    out
}

fn with_conditions(
    mut status: PersistentVolumeClaimStatus,
    new: &[PersistentVolumeClaimCondition],
    keep_old: bool,
) -> PersistentVolumeClaimStatus {
    let merged = merge_resize_conditions(
        status.conditions.as_deref().unwrap_or_default(),
        new,
        keep_old,
    );
    status.conditions = (!merged.is_empty()).then_some(merged);
    status
}

/// `mergeStorageResourceStatus` (`None`: the storage entry removed, and the map with it
/// when empty).
fn with_resize_status(
    mut status: PersistentVolumeClaimStatus,
    value: Option<&str>,
) -> PersistentVolumeClaimStatus {
    let mut map = status
        .allocated_resource_statuses
        .take()
        .unwrap_or_default();
    match value {
        Some(v) => {
            map.insert(STORAGE.into(), v.into());
        }
        None => {
            map.remove(STORAGE);
        }
    }
    status.allocated_resource_statuses = (!map.is_empty()).then_some(map);
    status
}

/// `markControllerResizeInProgress`: the Resizing condition (the other resize conditions
/// kept only when the status is not updated), ControllerResizeInProgress when it is, and
/// `allocatedResources` the new size.
pub fn mark_controller_resize_in_progress(
    claim: &PersistentVolumeClaim,
    new_size: &Quantity,
    update_status: bool,
    now: &Time,
) -> PersistentVolumeClaimStatus {
    let mut s = with_conditions(
        status(claim),
        &[condition(RESIZING, None, now)],
        !update_status,
    );
    if update_status {
        s = with_resize_status(s, Some(CONTROLLER_RESIZE_IN_PROGRESS));
    }
    let mut allocated = s.allocated_resources.take().unwrap_or_default();
    allocated.insert(STORAGE.into(), new_size.clone());
    s.allocated_resources = Some(allocated);
    s
}

/// `markForPendingNodeExpansion`: FileSystemResizePending (other resize conditions kept)
/// and NodeResizePending.
pub fn mark_for_pending_node_expansion(
    claim: &PersistentVolumeClaim,
    now: &Time,
) -> PersistentVolumeClaimStatus {
    let pending = condition(
        FILE_SYSTEM_RESIZE_PENDING,
        Some(FILE_SYSTEM_RESIZE_PENDING_MESSAGE.into()),
        now,
    );
    with_resize_status(
        with_conditions(status(claim), &[pending], true),
        Some(NODE_RESIZE_PENDING),
    )
}

/// `markOverallExpansionAsFinished`: the capacity is the new size, the resize conditions
/// and the storage entry of `allocatedResourceStatuses` go (the shell adds the
/// node-expansion-not-required annotation).
pub fn mark_overall_expansion_as_finished(
    claim: &PersistentVolumeClaim,
    new_size: &Quantity,
) -> PersistentVolumeClaimStatus {
    let mut s = with_resize_status(with_conditions(status(claim), &[], false), None);
    let mut capacity = s.capacity.take().unwrap_or_default();
    capacity.insert(STORAGE.into(), new_size.clone());
    s.capacity = Some(capacity);
    s
}

/// `markControllerExpansionInfeasible`: ControllerResizeInfeasible and the
/// ControllerResizeError condition.
pub fn mark_controller_expansion_infeasible(
    claim: &PersistentVolumeClaim,
    error: &str,
    now: &Time,
) -> PersistentVolumeClaimStatus {
    let s = with_resize_status(status(claim), Some(CONTROLLER_RESIZE_INFEASIBLE));
    let c = condition(
        CONTROLLER_RESIZE_ERROR,
        Some(format!("failed to expand pvc with {error}")),
        now,
    );
    with_conditions(s, &[c], true)
}

/// `markControllerExpansionFailedCondition`: the ControllerResizeError condition only.
pub fn mark_controller_expansion_failed_condition(
    claim: &PersistentVolumeClaim,
    error: &str,
    now: &Time,
) -> PersistentVolumeClaimStatus {
    let c = condition(
        CONTROLLER_RESIZE_ERROR,
        Some(format!("failed to expand pvc with {error}")),
        now,
    );
    with_conditions(status(claim), &[c], true)
}

/// `IsFinalError`: the codes that say the operation is over (not those that may still be
/// in progress).
pub fn is_final_error(code: Code) -> bool {
    !matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// `IsInfeasibleError`: a request that can never succeed as it is.
pub fn is_infeasible_error(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::OutOfRange | Code::NotFound
    )
}

/// `inUseError`: the driver cannot expand the volume while it is in use.
pub fn in_use_error(code: Code) -> bool {
    code == Code::FailedPrecondition
}

/// The ControllerExpandVolume request (upstream csiResizer `Resize`): the volume handle,
/// the new size as `required_bytes`, the capability from the PV (`GetVolumeCapabilities`:
/// no default fsType).
pub fn expand_request(
    resizer: &Resizer,
    pv: &PersistentVolume,
    new_size: &Quantity,
) -> Result<ControllerExpandVolumeRequest, String> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    let handle = spec
        .csi
        .as_ref()
        .map(|c| c.volume_handle.clone())
        .unwrap_or_default();
    if handle.is_empty() {
        return Err("empty volume handle".into());
    }
    let capability =
        crate::attacher::decide::volume_capability(&spec, resizer.single_node_multi_writer, "")
            .map_err(|e| format!("failed to get capabilities of volume {name} with {e}"))?;
    Ok(ControllerExpandVolumeRequest {
        volume_id: handle,
        capacity_range: Some(CapacityRange {
            required_bytes: amount(new_size).value(),
            limit_bytes: 0,
        }),
        secrets: HashMap::new(),
        volume_capability: Some(capability),
    })
}

/// What the driver answered ControllerExpandVolume (or the trivial resizer decided).
#[derive(Debug, Clone, PartialEq)]
pub enum Expanded {
    Ok {
        capacity_bytes: i64,
        node_expansion_required: bool,
    },
    Failed {
        code: Code,
        /// The error as upstream prints it (`rpc error: code = ... desc = ...`).
        error: String,
    },
}

/// An event on the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Event {
    fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Event {
            warning: false,
            reason,
            message: message.into(),
        }
    }

    fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Event {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// upstream's event before the call: `External resizer is resizing volume <pv>`.
pub fn resizing_event(pv: &str) -> Event {
    Event::normal(
        VOLUME_RESIZING,
        format!("External resizer is resizing volume {pv}"),
    )
}

/// upstream's refusal of an in-use expansion of a driver that said it cannot.
pub fn in_use_event(resizer: &Resizer, claim: &PersistentVolumeClaim) -> Event {
    Event::warning(
        VOLUME_RESIZE_FAILED,
        format!(
            "Unable to expand {} because CSI driver {} only supports offline expansion and volume is currently in-use",
            claim_key(claim),
            resizer.name
        ),
    )
}

/// The message of upstream's PersistentVolumeClaimResize admission plugin, which the
/// resizer repeats for a claim whose StorageClass does not exist (the one case the
/// admission policy, which sees every class as a parameter but not their absence,
/// cannot refuse).
pub const RESIZE_NOT_ALLOWED: &str = "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";

/// The claim's StorageClass name (`storageClassName`, else the beta annotation).
pub fn claim_class(claim: &PersistentVolumeClaim) -> String {
    crate::provisioner::decide::claim_class(claim)
}

/// What to do after the driver answered (upstream `callResizeOnPlugin` and the markers
/// it calls).
#[derive(Debug, Clone, PartialEq)]
pub struct AfterExpand {
    /// The PV's new `spec.capacity.storage` (updatePVCapacity), on success.
    pub pv_capacity: Option<Quantity>,
    /// The claim's status to write, and whether with the resourceVersion check.
    pub status: Option<(PersistentVolumeClaimStatus, bool)>,
    /// The node-expansion-not-required annotation is added (expansion all done).
    pub node_expansion_not_required: bool,
    /// The event once the writes are done.
    pub event: Option<Event>,
    /// The failure the sync ends with (the shell also makes it a VolumeResizeFailed
    /// event), or none.
    pub error: Option<String>,
    /// The tracking after this attempt.
    pub tracking: TrackingChange,
}

/// How the resizer's memory of the claim changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackingChange {
    /// Some(true): a final error now; Some(false): none any more.
    pub final_error: Option<bool>,
    /// Removed from the slow set.
    pub leave_slow_set: bool,
    /// The driver said it cannot expand the volume while in use.
    pub in_use_error: bool,
}

/// `callResizeOnPlugin` after the driver's answer, for the claim as marked in progress.
pub fn after_expand(
    resizer: &Resizer,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    result: &Expanded,
    now: &Time,
) -> AfterExpand {
    let pv_name = pv.metadata.name.as_deref().unwrap_or_default();
    match result {
        Expanded::Ok {
            capacity_bytes,
            node_expansion_required,
        } => {
            let size = bytes_to_quantity(*capacity_bytes);
            let (status, event, not_required) = if *node_expansion_required {
                (
                    mark_for_pending_node_expansion(claim, now),
                    Event::normal(
                        FILE_SYSTEM_RESIZE_REQUIRED,
                        "Require file system resize of volume on node",
                    ),
                    false,
                )
            } else {
                (
                    mark_overall_expansion_as_finished(claim, &size),
                    Event::normal(VOLUME_RESIZE_SUCCESS, "Resize volume succeeded"),
                    true,
                )
            };
            AfterExpand {
                pv_capacity: Some(size),
                status: Some((status, true)),
                node_expansion_not_required: not_required,
                event: Some(event),
                error: None,
                tracking: TrackingChange {
                    final_error: Some(false),
                    leave_slow_set: true,
                    in_use_error: false,
                },
            }
        }
        Expanded::Failed { code, error } => {
            let mut tracking = TrackingChange {
                in_use_error: in_use_error(*code),
                ..Default::default()
            };
            let status = if is_final_error(*code) {
                tracking.final_error = Some(true);
                if is_infeasible_error(*code) {
                    Some(mark_controller_expansion_infeasible(claim, error, now))
                } else {
                    tracking.leave_slow_set = true;
                    Some(mark_controller_expansion_failed_condition(
                        claim, error, now,
                    ))
                }
            } else {
                tracking.final_error = Some(false);
                tracking.leave_slow_set = true;
                None
            };
            AfterExpand {
                pv_capacity: None,
                // Written without the resourceVersion check (upstream: the status must
                // land even from a slightly old copy).
                status: status.map(|s| (s, false)),
                node_expansion_not_required: false,
                event: None,
                error: Some(format!(
                    "resize volume {pv_name:?} by resizer {:?} failed: {error}",
                    resizer.name
                )),
                tracking,
            }
        }
    }
}

/// The JSON merge patch of `persistentvolumeclaims/status` turning `old` into `new`:
/// the conditions whole (a merge patch replaces lists), the entries of `capacity`,
/// `allocatedResources` and `allocatedResourceStatuses` that changed or went (`null`),
/// and `metadata.resourceVersion` when `resource_version` is given (a conflict if the
/// claim changed since).
pub fn status_patch(
    old: &PersistentVolumeClaimStatus,
    new: &PersistentVolumeClaimStatus,
    resource_version: Option<&str>,
) -> Value {
    fn map_diff<V: serde::Serialize + PartialEq>(
        old: Option<&BTreeMap<String, V>>,
        new: Option<&BTreeMap<String, V>>,
    ) -> Option<Value> {
        let empty = BTreeMap::new();
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        let mut out = Map::new();
        for (k, v) in new {
            if old.get(k) != Some(v) {
                out.insert(k.clone(), serde_json::to_value(v).expect("serializable"));
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            out.insert(k.clone(), Value::Null);
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }
    let mut status = Map::new();
    if old.conditions != new.conditions {
        status.insert(
            "conditions".into(),
            match &new.conditions {
                Some(c) => serde_json::to_value(c).expect("serializable"),
                None => Value::Null,
            },
        );
    }
    for (field, diff) in [
        (
            "capacity",
            map_diff(old.capacity.as_ref(), new.capacity.as_ref()),
        ),
        (
            "allocatedResources",
            map_diff(
                old.allocated_resources.as_ref(),
                new.allocated_resources.as_ref(),
            ),
        ),
        (
            "allocatedResourceStatuses",
            map_diff(
                old.allocated_resource_statuses.as_ref(),
                new.allocated_resource_statuses.as_ref(),
            ),
        ),
    ] {
        if let Some(d) = diff {
            status.insert(field.into(), d);
        }
    }
    let mut patch = json!({ "status": status });
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

/// The claims in use, as `namespace/name` (upstream's inUsePVCStore): the
/// `persistentVolumeClaim` volumes of pods that have not terminated.
pub fn claims_in_use<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> BTreeSet<String> {
    pods.into_iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .flat_map(|p| {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(move |c| format!("{ns}/{}", c.claim_name))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// upstream's slow set (csi-lib-utils slowset): claims whose expansion was infeasible
/// wait `retention` before the same expansion is tried again.
#[derive(Debug, Clone)]
pub struct SlowSet {
    retention: Duration,
    added: HashMap<String, Instant>,
}

impl SlowSet {
    pub fn new(retention: Duration) -> Self {
        SlowSet {
            retention,
            added: HashMap::new(),
        }
    }

    /// Adds `key` unless present.
    pub fn add(&mut self, key: &str, now: Instant) {
        self.added.entry(key.to_string()).or_insert(now);
    }

    pub fn remove(&mut self, key: &str) {
        self.added.remove(key);
    }

    /// The time left for `key`, if it is in the set and its time has not run out.
    pub fn remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        let added = self.added.get(key)?;
        let elapsed = now.saturating_duration_since(*added);
        (elapsed < self.retention).then(|| self.retention - elapsed)
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
