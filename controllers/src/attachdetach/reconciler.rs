//! upstream reconciler/reconciler.go: one pass of the reconciliation loop as a function.
//! [`reconcile`] walks the actual state for volumes no longer desired on their node
//! (detach: first out of the node's `volumesAttached`, then, once the node has stopped
//! using the volume, or it is force-detached, the detach), then the desired state for
//! volumes to attach (with upstream's Multi-Attach errors), and ends with the node status
//! writes. It updates the caches and the operation bookkeeping as upstream's reconciler
//! does and returns what to do, in order; the controller does it.
use std::time::{Duration, Instant};

use super::cache::{
    ActualStateOfWorld, AttachState, AttachedVolume, AttachedVolumeStatus, DesiredStateOfWorld,
    NodeName, PodRef, VolumeToAttach, is_multi_attach_allowed,
};
use super::operations::{OperationKey, Operations};
use super::statusupdater::{update_node_status_for_node, update_node_statuses};

/// upstream kevents.FailedAttachVolume.
pub const FAILED_ATTACH_VOLUME: &str = "FailedAttachVolume";
/// upstream kevents.SuccessfulAttachVolume.
pub const SUCCESSFUL_ATTACH_VOLUME: &str = "SuccessfulAttachVolume";

/// The reconciler's settings (upstream NewReconciler's arguments).
#[derive(Clone, Debug)]
pub struct Config {
    /// upstream ReconcilerMaxWaitForUnmountDuration (6 minutes).
    pub max_wait_for_unmount: Duration,
    /// upstream --disable-force-detach-on-timeout.
    pub disable_force_detach_on_timeout: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_wait_for_unmount: Duration::from_secs(360),
            disable_force_detach_on_timeout: false,
        }
    }
}

/// What the reconciler reads of a Node from the cache (`None`: not found).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// upstream `nodeutil.IsNodeReady`: the Ready condition is True.
    pub ready: bool,
    /// The `node.kubernetes.io/out-of-service` taint (any effect), as `taints.TaintKeyExists`.
    pub out_of_service: bool,
}

/// Why a detach skips the safe-to-detach check (upstream's force-detach metric reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForceDetachReason {
    Timeout,
    OutOfService,
}

/// An event on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    pub pod: PodRef,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// One thing a pass decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write the node's `volumesAttached` (when `node_status` is set; on failure put the
    /// volume back in the report and drop the detach), then detach. The operation is
    /// already started in the bookkeeping under `key`.
    Detach {
        volume: AttachedVolume,
        key: OperationKey,
        node_status: Option<Vec<AttachedVolumeStatus>>,
        verify_safe_to_detach: bool,
        force: Option<ForceDetachReason>,
    },
    /// Attach; the operation is already started under `key`.
    Attach {
        volume: VolumeToAttach,
        key: OperationKey,
    },
    Event(PodEvent),
    /// upstream `UpdateNodeStatuses`: write the node's `volumesAttached`.
    UpdateNodeStatus {
        node: NodeName,
        volumes_attached: Vec<AttachedVolumeStatus>,
    },
}

/// The operation key of a volume: per node when it may be attached to several.
pub fn operation_key(volume: &str, node: &str, multi_attach_allowed: bool) -> OperationKey {
    OperationKey {
        volume: volume.to_string(),
        node: multi_attach_allowed.then(|| node.to_string()),
    }
}

/// upstream `generateVolumeMsg`'s simple message: `<prefix> for volume "<pv>" <suffix>`.
pub fn volume_message(prefix: &str, pv: &str, suffix: &str) -> String {
    format!("{prefix} for volume {pv:?} {suffix}")
}

/// upstream `GenerateError`'s event text: `<prefix> for volume "<pv>" : <error>`.
pub fn volume_error(prefix: &str, pv: &str, err: &str) -> String {
    volume_message(prefix, pv, &format!(": {err}"))
}

/// One pass of upstream's `reconcile`.
pub fn reconcile(
    dsw: &mut DesiredStateOfWorld,
    asw: &mut ActualStateOfWorld,
    ops: &mut Operations,
    node: &dyn Fn(&str) -> Option<NodeInfo>,
    now: Instant,
    config: &Config,
) -> Vec<Action> {
    let mut out = Vec::new();
    // Detaches first, so that volumes of pods moved to another node are detached first.
    for attached in asw.get_attached_volumes() {
        let (volume, node_name) = (&attached.volume_name, &attached.node_name);
        if dsw.volume_exists(volume, node_name) {
            continue;
        }
        let key = operation_key(
            volume,
            node_name,
            is_multi_attach_allowed(attached.volume_spec.as_ref()),
        );
        if !ops.is_operation_safe_to_retry(&key, now) {
            continue;
        }
        if asw.get_attach_state(volume, node_name) == AttachState::Detached {
            continue;
        }
        let Ok(elapsed) = asw.set_detach_request_time(volume, node_name, now) else {
            continue;
        };
        let timeout_expired = elapsed > config.max_wait_for_unmount;
        let info = node(node_name);
        let healthy = info.is_some_and(|n| n.ready);
        let force_detach_timeout_expired =
            timeout_expired && !config.disable_force_detach_on_timeout;
        let force_detach = !healthy && force_detach_timeout_expired;
        let out_of_service = info.is_some_and(|n| n.out_of_service);
        if attached.mounted_by_node && !force_detach && !out_of_service {
            // Still mounted: wait for the node (or the timeout).
            continue;
        }
        // Out of the node's volumesAttached before the detach, so the node stops using it.
        let _ = asw.remove_volume_from_report_as_attached(volume, node_name);
        let node_status = update_node_status_for_node(asw, node_name);
        let verify_safe_to_detach = !force_detach_timeout_expired && !out_of_service;
        let force = match (verify_safe_to_detach, force_detach_timeout_expired) {
            (true, _) => None,
            (false, true) => Some(ForceDetachReason::Timeout),
            (false, false) => Some(ForceDetachReason::OutOfService),
        };
        if !ops.start(&key, now) {
            asw.add_volume_to_report_as_attached(volume, node_name);
            continue;
        }
        out.push(Action::Detach {
            volume: attached.clone(),
            key,
            node_status,
            verify_safe_to_detach,
            force,
        });
    }
    attach_desired_volumes(dsw, asw, ops, now, &mut out);
    for (node, volumes_attached) in update_node_statuses(asw) {
        out.push(Action::UpdateNodeStatus {
            node,
            volumes_attached,
        });
    }
    out
}

fn attach_desired_volumes(
    dsw: &mut DesiredStateOfWorld,
    asw: &mut ActualStateOfWorld,
    ops: &mut Operations,
    now: Instant,
    out: &mut Vec<Action>,
) {
    for v in dsw.get_volumes_to_attach() {
        let multi = is_multi_attach_allowed(Some(&v.volume_spec));
        let key = operation_key(&v.volume_name, &v.node_name, multi);
        if ops.is_operation_pending(&key) {
            continue;
        }
        if asw.get_attach_state(&v.volume_name, &v.node_name) == AttachState::Attached {
            // Attached: stop any detach timer.
            asw.reset_detach_request_time(&v.volume_name, &v.node_name);
            continue;
        }
        if !multi {
            let nodes = asw.get_nodes_for_attached_volume(&v.volume_name);
            if !nodes.is_empty() {
                if !v.multi_attach_error_reported {
                    out.extend(report_multi_attach_error(dsw, &v, &nodes));
                    dsw.set_multi_attach_error(&v.volume_name, &v.node_name);
                }
                continue;
            }
        }
        // In backoff after a failure: upstream's AttachVolume returns an exponential
        // backoff error, silently.
        if ops.start(&key, now) {
            out.push(Action::Attach { volume: v, key });
        }
    }
}

/// upstream `reportMultiAttachError`: a warning on each pod waiting for the volume,
/// naming the pods of its own namespace that hold the volume elsewhere and counting the
/// others.
pub(crate) fn report_multi_attach_error(
    dsw: &DesiredStateOfWorld,
    v: &VolumeToAttach,
    nodes: &[NodeName],
) -> Vec<Action> {
    let other_nodes: Vec<NodeName> = nodes
        .iter()
        .filter(|n| **n != v.node_name)
        .cloned()
        .collect();
    let pods = dsw.get_volume_pods_on_nodes(&other_nodes, &v.volume_name);
    let event = |pod: &PodRef, msg: &str| {
        Action::Event(PodEvent {
            pod: pod.clone(),
            warning: true,
            reason: FAILED_ATTACH_VOLUME,
            message: volume_message("Multi-Attach error", &v.volume_spec.pv_name, msg),
        })
    };
    if pods.is_empty() {
        let msg =
            "Volume is already exclusively attached to one node and can't be attached to another";
        return v.scheduled_pods.iter().map(|p| event(p, msg)).collect();
    }
    v.scheduled_pods
        .iter()
        .map(|scheduled| {
            let local: Vec<&str> = pods
                .iter()
                .filter(|p| p.namespace == scheduled.namespace)
                .map(|p| p.name.as_str())
                .collect();
            let others = pods.len() - local.len();
            let msg = if local.is_empty() {
                format!("Volume is already used by {others} pod(s) in different namespaces")
            } else if others > 0 {
                format!(
                    "Volume is already used by pod(s) {} and {others} pod(s) in different namespaces",
                    local.join(", ")
                )
            } else {
                format!("Volume is already used by pod(s) {}", local.join(", "))
            };
            event(scheduled, &msg)
        })
        .collect()
}

/// upstream `syncStates` (`VerifyVolumesAreAttached`, every
/// `--attach-detach-reconcile-sync-period`): the confirmed attachments whose
/// VolumeAttachment is gone or no longer attached are marked detached. `attached` says,
/// from the VolumeAttachment cache, whether a (volume, node) is attached; volumes without
/// a spec are not verified, as upstream.
pub fn sync_states(
    asw: &mut ActualStateOfWorld,
    attached: &dyn Fn(&AttachedVolume) -> bool,
) -> Vec<AttachedVolume> {
    let mut detached = Vec::new();
    for volumes in asw.get_attached_volumes_per_node().into_values() {
        for v in volumes {
            if v.volume_spec.is_some() && !attached(&v) {
                detached.push(v);
            }
        }
    }
    for v in &detached {
        asw.mark_volume_as_detached(&v.volume_name, &v.node_name);
    }
    detached
}
