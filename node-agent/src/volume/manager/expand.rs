//! The kubelet's half of volume expansion, pure (pkg/volume/util/operationexecutor's
//! node_expander.go `NodeExpander` and operation_generator.go's `nodeExpandVolume`,
//! `expandVolumeDuringMount`, `legacyCallNodeExpandOnPlugin`; pkg/volume/util
//! resize_util.go's claim status markers; the volume manager's `volumeNeedsExpansion`
//! and the populator's `checkVolumeFSResize`), with RecoverVolumeExpansionFailure on
//! (GA): for a CSI filesystem volume whose PersistentVolume grew past what the node's
//! filesystem has (the claim's `status.capacity` when it was mounted), NodeExpandVolume,
//! then the claim's status: the new capacity, the storage entry of
//! `allocatedResourceStatuses` and the resize conditions gone (`MarkNodeExpansionFinishedWithRecovery`,
//! or `MarkFSResizeFinished` for a claim the resizer did not mark); a failure a
//! NodeResizeError condition (NodeResizeInfeasible when it can never work).
//!
//! The volume manager (`mod.rs`) runs it after a volume is mounted (upstream's
//! `expandVolumeDuringMount`: a failure keeps the pod from starting, `FailedMount`) and
//! at each sync of a pod whose volume is mounted already (`GenerateExpandInUseVolumeFunc`,
//! online: a failure is a `VolumeResizeFailed` event, the pod runs on), retried with
//! upstream's operation back-off.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaimCondition, PersistentVolumeClaimStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rekube_crds::quantity::{Amount, amount};
use rekube_crds::storage_keys::expansion::*;
use rekube_crds::{PersistentVolume, PersistentVolumeClaim};

/// The kubelet's event reasons (pkg/kubelet/events).
pub const FILE_SYSTEM_RESIZE_FAILED: &str = "FileSystemResizeFailed";
pub const FILE_SYSTEM_RESIZE_SUCCESS: &str = "FileSystemResizeSuccessful";
pub const VOLUME_RESIZE_FAILED: &str = "VolumeResizeFailed";

/// upstream's operation back-off (nestedpendingoperations / exponentialbackoff): 500 ms
/// doubling to 2 min 2 s.
pub const INITIAL_RETRY: Duration = Duration::from_millis(500);
pub const MAX_RETRY: Duration = Duration::from_secs(122);

/// What the populator learned of a claim-backed CSI filesystem volume
/// (`checkVolumeFSResize`): its claim, as read at this sync, and its PersistentVolume's
/// capacity, the size the node's filesystem is to have.
#[derive(Debug, Clone)]
pub struct ClaimExpansion {
    pub claim: PersistentVolumeClaim,
    pub pv_name: String,
    /// The PV's `spec.capacity.storage` (the desired state's `persistentVolumeSize`).
    pub pv_capacity: Quantity,
    /// The pod's `persistentVolumeClaim.readOnly` (upstream's `volumeSpec.ReadOnly`): no
    /// resize of a read-only volume.
    pub read_only: bool,
}

/// The populator's part: the expansion facts of a claim's volume (`None`: not a
/// claim-backed volume the kubelet resizes).
pub fn claim_expansion(
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    read_only: bool,
) -> ClaimExpansion {
    ClaimExpansion {
        claim: claim.clone(),
        pv_name: pv.metadata.name.clone().unwrap_or_default(),
        pv_capacity: pv
            .spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get(STORAGE))
            .cloned()
            .unwrap_or_else(|| Quantity("0".into())),
        read_only,
    }
}

fn storage_of<V: Clone>(map: Option<&std::collections::BTreeMap<String, V>>) -> Option<V> {
    map.and_then(|m| m.get(STORAGE)).cloned()
}

/// The claim's `status.capacity.storage` (zero when none).
pub fn claim_capacity(claim: &PersistentVolumeClaim) -> Quantity {
    storage_of(claim.status.as_ref().and_then(|s| s.capacity.as_ref()))
        .unwrap_or_else(|| Quantity("0".into()))
}

fn resize_status(claim: &PersistentVolumeClaim) -> String {
    storage_of(
        claim
            .status
            .as_ref()
            .and_then(|s| s.allocated_resource_statuses.as_ref()),
    )
    .unwrap_or_default()
}

fn allocated(claim: &PersistentVolumeClaim) -> Option<Quantity> {
    storage_of(
        claim
            .status
            .as_ref()
            .and_then(|s| s.allocated_resources.as_ref()),
    )
}

/// `volumeNeedsExpansion`: the size the node's filesystem has (`current`, the actual
/// state's) is below the desired one; zero sizes never expand.
pub fn volume_needs_expansion(current: &Quantity, desired: &Quantity) -> bool {
    let (current, desired) = (amount(current), amount(desired));
    !current.is_zero() && !desired.is_zero() && desired > current
}

/// `checkForRecoveryFromExpansion`: the resizer records `allocatedResourceStatuses` or
/// `allocatedResources` (else the legacy path, for an older resizer).
pub fn recovery_path(claim: &PersistentVolumeClaim) -> bool {
    !resize_status(claim).is_empty() || allocated(claim).is_some()
}

/// `runPreCheck`'s findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreCheck {
    /// Node expansion may proceed.
    pub allow: bool,
    /// The claim shows the new size already, with no resize status.
    pub pvc_already_updated: bool,
    /// A failure now makes the expansion infeasible (the user changed the request after
    /// a final error).
    pub mark_infeasible_on_failure: bool,
}

/// `NodeExpander.runPreCheck` for expanding to `new_size`; `final_error`: this volume's
/// expansion failed with a final error before (the actual state's record).
pub fn run_pre_check(
    claim: &PersistentVolumeClaim,
    new_size: &Quantity,
    final_error: bool,
) -> PreCheck {
    let status_cap = amount(&claim_capacity(claim));
    let status = resize_status(claim);
    let spec = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| storage_of(r.requests.as_ref()))
        .map(|q| amount(&q))
        .unwrap_or(Amount::ZERO);
    let new = amount(new_size);
    let mark_infeasible_on_failure = spec != new && final_error;
    let pvc_already_updated = status_cap >= new && status.is_empty();
    let rwx = claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .is_some_and(|m| m.iter().any(|m| m == "ReadWriteMany"));
    let not_required = claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_NODE_EXPANSION_NOT_REQUIRED));
    let allow = (pvc_already_updated && rwx && !not_required)
        || status == NODE_RESIZE_PENDING
        || status == NODE_RESIZE_IN_PROGRESS;
    PreCheck {
        allow,
        pvc_already_updated,
        mark_infeasible_on_failure,
    }
}

/// What NodeExpandVolume answered, as the csi plugin's `NodeExpand` classes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeExpandError {
    /// The driver lacks EXPAND_VOLUME (`OperationNotSupportedError`).
    NotSupported(String),
    /// The driver cannot expand it while in use (FAILED_PRECONDITION: not again while
    /// mounted, `MarkForInUseExpansionError`).
    FailedPrecondition(String),
    /// Never possible as asked (INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND).
    Infeasible(String),
    /// The driver could not be reached (`TransientOperationFailure`: not a final error).
    Transient(String),
    /// Anything else: a final error.
    Other(String),
}

impl NodeExpandError {
    /// The csi plugin's text of the failure (`Expander.NodeExpand failed to expand the
    /// volume : <rpc error>`; an infeasible one without the colon, as upstream).
    pub fn message(&self) -> &str {
        match self {
            NodeExpandError::NotSupported(m)
            | NodeExpandError::FailedPrecondition(m)
            | NodeExpandError::Infeasible(m)
            | NodeExpandError::Transient(m)
            | NodeExpandError::Other(m) => m,
        }
    }

    /// A driver's gRPC failure, classified and worded as csi expander.go's
    /// `nodeExpandWithClient`.
    pub fn from_rpc(code: tonic::Code, rpc_error: &str) -> Self {
        use tonic::Code;
        match code {
            Code::FailedPrecondition => NodeExpandError::FailedPrecondition(format!(
                "Expander.NodeExpand failed to expand the volume : {rpc_error}"
            )),
            Code::InvalidArgument | Code::OutOfRange | Code::NotFound => {
                NodeExpandError::Infeasible(format!(
                    "Expander.NodeExpand failed to expand the volume {rpc_error}"
                ))
            }
            _ => NodeExpandError::Other(format!(
                "Expander.NodeExpand failed to expand the volume : {rpc_error}"
            )),
        }
    }

    fn is_operation_finished(&self) -> bool {
        !matches!(self, NodeExpandError::Transient(_))
    }
}

/// The kubelet's `MergeResizeConditionOnPVC`: conditions that are not about resizing are
/// kept; a resize condition of a type given is the new one only when its status
/// changed; old resize conditions not given are kept when `keep_old`; new types are
/// appended.
pub fn merge_resize_conditions(
    old: &[PersistentVolumeClaimCondition],
    new: &[PersistentVolumeClaimCondition],
    keep_old: bool,
) -> Vec<PersistentVolumeClaimCondition> {
    let mut processed = vec![false; new.len()];
    let mut out = Vec::new();
    for c in old {
        if !RESIZE_CONDITIONS.contains(&c.type_.as_str()) {
            out.push(c.clone());
            continue;
        }
        if let Some(i) = new.iter().position(|n| n.type_ == c.type_) {
            out.push(if new[i].status != c.status {
                new[i].clone()
            } else {
                c.clone()
            });
            processed[i] = true;
        } else if keep_old {
            out.push(c.clone());
        }
    }
    out.extend(
        new.iter()
            .zip(processed)
            .filter(|(_, done)| !done)
            .map(|(c, _)| c.clone()),
    );
    out
}

fn status(claim: &PersistentVolumeClaim) -> PersistentVolumeClaimStatus {
    claim.status.clone().unwrap_or_default()
}

fn with_resize_status(
    mut s: PersistentVolumeClaimStatus,
    value: Option<&str>,
) -> PersistentVolumeClaimStatus {
    let mut map = s.allocated_resource_statuses.take().unwrap_or_default();
    match value {
        Some(v) => {
            map.insert(STORAGE.into(), v.into());
        }
        None => {
            map.remove(STORAGE);
        }
    }
    s.allocated_resource_statuses = (!map.is_empty()).then_some(map);
    s
}

fn with_conditions(
    mut s: PersistentVolumeClaimStatus,
    new: &[PersistentVolumeClaimCondition],
    keep_old: bool,
) -> PersistentVolumeClaimStatus {
    let merged =
        merge_resize_conditions(s.conditions.as_deref().unwrap_or_default(), new, keep_old);
    s.conditions = (!merged.is_empty()).then_some(merged);
    s
}

/// `MarkNodeExpansionInProgress`: NodeResizeInProgress.
pub fn mark_node_expansion_in_progress(
    claim: &PersistentVolumeClaim,
) -> PersistentVolumeClaimStatus {
    with_resize_status(status(claim), Some(NODE_RESIZE_IN_PROGRESS))
}

/// `MarkNodeExpansionFinishedWithRecovery` (and `MarkFSResizeFinished`, the same with
/// the gate on): the capacity is the new size, the storage resize status and the resize
/// conditions go.
pub fn mark_node_expansion_finished(
    claim: &PersistentVolumeClaim,
    new_size: &Quantity,
) -> PersistentVolumeClaimStatus {
    let mut s = with_conditions(with_resize_status(status(claim), None), &[], false);
    let mut capacity = s.capacity.take().unwrap_or_default();
    capacity.insert(STORAGE.into(), new_size.clone());
    s.capacity = Some(capacity);
    s
}

fn node_resize_error(error: &str, now: &Time) -> PersistentVolumeClaimCondition {
    PersistentVolumeClaimCondition {
        type_: NODE_RESIZE_ERROR.into(),
        status: "True".into(),
        last_transition_time: Some(now.clone()),
        message: Some(format!("failed to expand pvc with {error}")),
        ..Default::default()
    }
}

/// `MarkNodeExpansionFailedCondition`: the NodeResizeError condition.
pub fn mark_node_expansion_failed_condition(
    claim: &PersistentVolumeClaim,
    error: &str,
    now: &Time,
) -> PersistentVolumeClaimStatus {
    with_conditions(status(claim), &[node_resize_error(error, now)], true)
}

/// `MarkNodeExpansionInfeasible`: NodeResizeInfeasible and the NodeResizeError condition.
pub fn mark_node_expansion_infeasible(
    claim: &PersistentVolumeClaim,
    error: &str,
    now: &Time,
) -> PersistentVolumeClaimStatus {
    let s = with_resize_status(status(claim), Some(NODE_RESIZE_INFEASIBLE));
    with_conditions(s, &[node_resize_error(error, now)], true)
}

/// upstream's `GenerateMsg` simple message: `<prefix> for volume "<pv>" <suffix>`.
pub fn volume_message(prefix: &str, pv: &str, suffix: &str) -> String {
    format!("{prefix} for volume {pv:?} {suffix}")
}

/// upstream's `GenerateError` simple message: `<prefix> for volume "<pv>" : <error>`.
pub fn volume_error(prefix: &str, pv: &str, error: &str) -> String {
    volume_message(prefix, pv, &format!(": {error}"))
}

/// The decision before the driver is called.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    /// Nothing to do now: done, the actual state's size is `size` from now on; with
    /// the FileSystemResizeFailed events for a read-only volume.
    Done {
        size: Quantity,
        read_only_event: bool,
    },
    /// The pre-check refuses: not done, tried again later (`assumeResizeFinished` with
    /// the old size).
    Wait,
    /// Call NodeExpandVolume for `new_size`, after writing `in_progress` (with the
    /// resourceVersion check) when given.
    Call {
        new_size: Quantity,
        old_size: Quantity,
        in_progress: Option<Box<PersistentVolumeClaimStatus>>,
        pre: PreCheck,
        recovery: bool,
    },
}

/// `NodeExpander.expandOnPlugin` up to the call (the recovery path).
pub fn expand_on_plugin(
    claim: &PersistentVolumeClaim,
    new_size: &Quantity,
    old_size: &Quantity,
    final_error: bool,
) -> Before {
    let pre = run_pre_check(claim, new_size, final_error);
    if !pre.allow {
        if pre.pvc_already_updated {
            return Before::Done {
                size: new_size.clone(),
                read_only_event: false,
            };
        }
        return Before::Wait;
    }
    Before::Call {
        new_size: new_size.clone(),
        old_size: old_size.clone(),
        in_progress: (!pre.pvc_already_updated)
            .then(|| Box::new(mark_node_expansion_in_progress(claim))),
        pre,
        recovery: true,
    }
}

/// The recovery path (`allocatedResources` the size), or the legacy one (`new_size`).
fn expand(
    claim: &PersistentVolumeClaim,
    new_size: &Quantity,
    old_size: &Quantity,
    final_error: bool,
) -> Before {
    if recovery_path(claim) {
        let allocated = allocated(claim).unwrap_or_else(|| Quantity("0".into()));
        return expand_on_plugin(claim, &allocated, old_size, final_error);
    }
    Before::Call {
        new_size: new_size.clone(),
        old_size: old_size.clone(),
        in_progress: None,
        pre: PreCheck {
            allow: true,
            pvc_already_updated: false,
            mark_infeasible_on_failure: false,
        },
        recovery: false,
    }
}

/// `nodeExpandVolume` (a volume in use): to `desired` (the PV's capacity) from `actual`
/// (the actual state's size), the claim as read now.
pub fn node_expand_volume(
    claim: &PersistentVolumeClaim,
    desired: &Quantity,
    actual: &Quantity,
    read_only: bool,
    final_error: bool,
) -> Before {
    if amount(desired) <= amount(actual) {
        return Before::Done {
            size: actual.clone(),
            read_only_event: false,
        };
    }
    if read_only {
        return Before::Done {
            size: claim_capacity(claim),
            read_only_event: true,
        };
    }
    expand(claim, desired, actual, final_error)
}

/// `expandVolumeDuringMount`: the claim's capacity below the PV's (`pv_capacity`).
pub fn expand_volume_during_mount(
    claim: &PersistentVolumeClaim,
    pv_capacity: &Quantity,
    read_only: bool,
    final_error: bool,
) -> Before {
    let status_cap = claim_capacity(claim);
    if amount(&status_cap) >= amount(pv_capacity) {
        return Before::Done {
            size: status_cap,
            read_only_event: false,
        };
    }
    if read_only {
        return Before::Done {
            size: status_cap,
            read_only_event: true,
        };
    }
    expand(claim, pv_capacity, &status_cap, final_error)
}

/// What follows the driver's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct After {
    /// The node expansion is over (successfully, or assumed so): the actual state's size
    /// becomes `size`.
    pub finished: bool,
    pub size: Quantity,
    /// The claim's status to write, and whether with the resourceVersion check.
    pub status: Option<(PersistentVolumeClaimStatus, bool)>,
    /// FileSystemResizeSuccessful on the pod and the claim.
    pub success_events: bool,
    /// Some(true): record a final error for the volume.
    pub final_error: bool,
    /// The driver cannot expand it in use: not again while mounted.
    pub in_use_error: bool,
    /// The operation's error (the caller's event), if any.
    pub error: Option<String>,
}

/// `expandOnPlugin` (recovery) or `legacyCallNodeExpandOnPlugin` after NodeExpandVolume.
pub fn after(
    claim: &PersistentVolumeClaim,
    new_size: &Quantity,
    old_size: &Quantity,
    pre: PreCheck,
    recovery: bool,
    result: Result<(), NodeExpandError>,
    now: &Time,
) -> After {
    let mut out = After {
        finished: false,
        size: old_size.clone(),
        status: None,
        success_events: false,
        final_error: false,
        in_use_error: false,
        error: None,
    };
    match result {
        Ok(()) => {
            out.finished = true;
            out.size = new_size.clone();
            out.success_events = true;
            let update = if recovery {
                !pre.pvc_already_updated
            } else {
                amount(&claim_capacity(claim)) < amount(new_size)
            };
            if update {
                out.status = Some((mark_node_expansion_finished(claim, new_size), true));
            }
        }
        Err(NodeExpandError::NotSupported(_)) if !recovery || pre.pvc_already_updated => {
            out.finished = true;
            out.size = if recovery {
                new_size.clone()
            } else {
                old_size.clone()
            };
        }
        Err(e) => {
            if recovery && e.is_operation_finished() {
                out.final_error = true;
                let message = e.message();
                out.status = Some((
                    if matches!(e, NodeExpandError::Infeasible(_)) || pre.mark_infeasible_on_failure
                    {
                        mark_node_expansion_infeasible(claim, message, now)
                    } else {
                        mark_node_expansion_failed_condition(claim, message, now)
                    },
                    false,
                ));
            }
            if let NodeExpandError::FailedPrecondition(_) = e {
                // Not retried while in use, and the mount goes on.
                out.in_use_error = true;
                out.finished = !recovery;
            } else {
                out.error = Some(e.message().to_string());
            }
        }
    }
    out
}

/// The actual state's expansion facts of one volume (by its unique name): the size its
/// filesystem has (upstream's `persistentVolumeSize`, from the claim's capacity when the
/// volume was mounted), a final error, an in-use refusal, and the back-off.
#[derive(Debug, Clone, Default)]
pub struct VolumeExpansion {
    pub size: Option<Quantity>,
    pub final_error: bool,
    pub in_use_error: bool,
    failures: u32,
    not_before: Option<Instant>,
}

impl VolumeExpansion {
    /// May an operation start at `now` (the back-off has run out)?
    pub fn due(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// A failed operation: the next waits 500 ms, doubling to 2 min 2 s.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let delay = INITIAL_RETRY
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + delay);
        delay
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }
}

/// The actual state's expansion records, by unique volume name.
pub type ExpansionStates = HashMap<String, VolumeExpansion>;

#[cfg(test)]
#[path = "expand_tests.rs"]
mod tests;
