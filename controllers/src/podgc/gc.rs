//! The pure core of the pod garbage collector (upstream pkg/controller/podgc/
//! gc_controller.go): which pods each pass deletes, over snapshots of pods and nodes.
//!
//! - [`terminated_to_delete`]: terminated pods above `--terminated-pod-gc-threshold`,
//!   evicted first, then oldest (`gcTerminated`).
//! - [`terminating_on_out_of_service`]: terminating pods on a not-ready node tainted
//!   `node.kubernetes.io/out-of-service` (`gcTerminating`).
//! - [`nodes_to_quarantine`] and [`orphaned`]: pods bound to a node that no longer exists,
//!   once the node stayed missing for the quarantine time and a GET confirmed it
//!   (`gcOrphaned`).
//! - [`unscheduled_terminating`]: terminating pods bound to no node (`gcUnscheduledTerminating`).
//! - [`failed_status_patch`]: the status each pod is given before its deletion (phase
//!   Failed, and for orphans the DisruptionTarget condition).
use std::collections::BTreeSet;

use jiff::Timestamp;
use rekube_crds::{Node, Pod};
use serde_json::{Value, json};

use crate::util::pod::{self as podutil, POD_FAILED, POD_PENDING, POD_RUNNING, POD_UNKNOWN};

pub use rekube_crds::core_v1::{DISRUPTION_TARGET, TAINT_NODE_OUT_OF_SERVICE};
/// The DisruptionTarget condition of a pod deleted because its node is gone.
pub const ORPHANED_REASON: &str = "DeletionByPodGC";
pub const ORPHANED_MESSAGE: &str = "PodGC: node no longer exists";

/// upstream isPodTerminated: any phase but Pending, Running and Unknown. A rekube Pod
/// that no agent has reported on yet has no phase at all, where the apiserver would have
/// written Pending; it counts as Pending, not as terminated.
pub fn is_pod_terminated(pod: &Pod) -> bool {
    let phase = podutil::pod_phase(pod);
    !(phase.is_empty() || phase == POD_PENDING || phase == POD_RUNNING || phase == POD_UNKNOWN)
}

/// upstream eviction.PodIsEvicted: Failed with reason Evicted.
pub fn pod_is_evicted(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    podutil::pod_phase(pod) == POD_FAILED
        && status.and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// upstream byEvictionAndCreationTimestamp: evicted pods first, then by creation time,
/// names breaking ties.
fn by_eviction_and_creation_timestamp(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    pod_is_evicted(b)
        .cmp(&pod_is_evicted(a))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// upstream gcTerminated: with a positive threshold, the terminated pods beyond it, in the
/// order they go (evicted first, then oldest).
pub fn terminated_to_delete<'a>(pods: &[&'a Pod], threshold: usize) -> Vec<&'a Pod> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| is_pod_terminated(p))
        .collect();
    let excess = terminated.len().saturating_sub(threshold);
    if excess == 0 {
        return Vec::new();
    }
    terminated.sort_by(|a, b| by_eviction_and_creation_timestamp(a, b));
    terminated.truncate(excess);
    terminated
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

/// upstream gcTerminating: terminating pods whose node is not ready and tainted
/// out-of-service (the operator said the node is gone for good), in deletion order.
/// `node` looks a node up by name in the cache; a pod whose node is not cached is left.
pub fn terminating_on_out_of_service<'a, 'n>(
    pods: &[&'a Pod],
    node: impl Fn(&str) -> Option<&'n Node>,
) -> Vec<&'a Pod> {
    let mut out: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter(|p| {
            node(node_name(p))
                .is_some_and(|n| !node_ready(n) && has_taint(n, TAINT_NODE_OUT_OF_SERVICE))
        })
        .collect();
    out.sort_by(|a, b| by_eviction_and_creation_timestamp(a, b));
    out
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// upstream gcOrphaned, first half: the node names pods are bound to that the node cache
/// does not have. Each goes into quarantine (checked again after the quarantine time).
pub fn nodes_to_quarantine(pods: &[&Pod], existing: &BTreeSet<String>) -> BTreeSet<String> {
    pods.iter()
        .map(|p| node_name(p))
        .filter(|n| !n.is_empty() && !existing.contains(*n))
        .map(str::to_owned)
        .collect()
}

/// upstream gcOrphaned, second half: the pods bound to a node confirmed deleted.
pub fn orphaned<'a>(pods: &[&'a Pod], deleted_nodes: &BTreeSet<String>) -> Vec<&'a Pod> {
    pods.iter()
        .copied()
        .filter(|p| deleted_nodes.contains(node_name(p)))
        .collect()
}

/// upstream gcUnscheduledTerminating: terminating pods bound to no node.
pub fn unscheduled_terminating<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    pods.iter()
        .copied()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && node_name(p).is_empty())
        .collect()
}

/// upstream markFailedAndDeletePodWithCondition's status: `None` for a pod already
/// Succeeded or Failed (it is deleted as it is); else a merge patch of the status to
/// phase Failed, with `condition` (type, reason, message) set as upstream's
/// UpdatePodCondition does (lastTransitionTime moves only when the status changes).
pub fn failed_status_patch(
    pod: &Pod,
    condition: Option<(&str, &str, &str)>,
    now: Timestamp,
) -> Option<Value> {
    if podutil::is_pod_terminal(pod) {
        return None;
    }
    let mut status = json!({"phase": POD_FAILED});
    if let Some((type_, reason, message)) = condition {
        let mut conditions: Vec<Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        let now = now.to_string();
        match conditions.iter_mut().find(|c| c["type"] == type_) {
            Some(c) => {
                if c["status"] != "True" {
                    c["lastTransitionTime"] = json!(now);
                }
                c["status"] = json!("True");
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            None => conditions.push(json!({
                "type": type_, "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": now,
            })),
        }
        status["conditions"] = json!(conditions);
    }
    Some(json!({ "status": status }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, created: i64) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        if !phase.is_empty() {
            p.status = Some(serde_json::from_value(json!({"phase": phase})).unwrap());
        }
        p
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    /// upstream TestGCTerminated's table.
    #[test]
    fn terminated_pods_above_the_threshold_go_evicted_first_then_oldest() {
        struct Case {
            name: &'static str,
            pods: Vec<(&'static str, &'static str, i64, bool)>,
            threshold: usize,
            deleted: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "delete pod a which is PodFailed and pod b which is PodSucceeded",
                pods: vec![
                    ("a", "Failed", 0, false),
                    ("b", "Succeeded", 1, false),
                    ("c", "Failed", 2, false),
                ],
                threshold: 1,
                deleted: vec!["a", "b"],
            },
            Case {
                name: "threshold = 0, disables terminated pod deletion",
                pods: vec![("a", "Failed", 0, false), ("b", "Succeeded", 1, false)],
                threshold: 0,
                deleted: vec![],
            },
            Case {
                name: "threshold = 1, delete pod b which is PodFailed",
                pods: vec![
                    ("a", "Running", 0, false),
                    ("b", "Failed", 1, false),
                    ("c", "Failed", 2, false),
                ],
                threshold: 1,
                deleted: vec!["b"],
            },
            Case {
                name: "threshold = 5, don't delete pod",
                pods: vec![("a", "Failed", 0, false), ("b", "Succeeded", 1, false)],
                threshold: 5,
                deleted: vec![],
            },
            Case {
                name: "evicted pods go first",
                pods: vec![
                    ("a", "Failed", 0, false),
                    ("b", "Failed", 1, true),
                    ("c", "Failed", 2, true),
                    ("d", "Failed", 3, false),
                ],
                threshold: 1,
                deleted: vec!["b", "c", "a"],
            },
            Case {
                name: "a pod no agent reported on yet (no phase) is not terminated",
                pods: vec![("a", "", 0, false), ("b", "", 1, false)],
                threshold: 1,
                deleted: vec![],
            },
        ];
        for c in cases {
            let pods: Vec<Pod> = c
                .pods
                .iter()
                .map(|(n, phase, t, evicted)| {
                    let mut p = pod(n, phase, *t);
                    if *evicted {
                        p.status.as_mut().unwrap().reason = Some("Evicted".into());
                    }
                    p
                })
                .collect();
            let refs: Vec<&Pod> = pods.iter().collect();
            assert_eq!(
                names(&terminated_to_delete(&refs, c.threshold)),
                c.deleted,
                "{}",
                c.name
            );
        }
    }

    fn bound(name: &str, node: &str, terminating: bool) -> Pod {
        let mut p = pod(name, "Running", 0);
        p.spec.as_mut().unwrap().node_name = (!node.is_empty()).then(|| node.to_string());
        if terminating {
            p.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
            );
        }
        p
    }

    fn node(name: &str, ready: bool, out_of_service: bool) -> Node {
        let taints = if out_of_service {
            json!([{"key": TAINT_NODE_OUT_OF_SERVICE, "effect": "NoExecute"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    /// upstream TestGCOrphaned's essentials: pods on a node the cache lacks are
    /// quarantined; after the check, those on deleted nodes go, others stay.
    #[test]
    fn orphaned_pods_are_those_on_nodes_confirmed_deleted() {
        let pods = [
            bound("a", "deleted", false),
            bound("b", "existing", false),
            bound("c", "", false),
            bound("d", "not-in-cache-but-exists", true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let existing = BTreeSet::from(["existing".to_string()]);
        assert_eq!(
            nodes_to_quarantine(&refs, &existing),
            BTreeSet::from(["deleted".to_string(), "not-in-cache-but-exists".to_string()])
        );
        let confirmed = BTreeSet::from(["deleted".to_string()]);
        assert_eq!(names(&orphaned(&refs, &confirmed)), vec!["a"]);
    }

    /// upstream TestGCUnscheduledTerminating.
    #[test]
    fn unscheduled_terminating_pods_go() {
        let pods = [
            bound("a", "", true),
            bound("b", "", false),
            bound("c", "node", true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(names(&unscheduled_terminating(&refs)), vec!["a"]);
    }

    /// upstream TestGCTerminating: only terminating pods on a not-ready, out-of-service node.
    #[test]
    fn terminating_pods_on_out_of_service_nodes_go() {
        let nodes = [
            node("ready-oos", true, true),
            node("notready-oos", false, true),
            node("notready", false, false),
        ];
        let pods = [
            bound("a", "ready-oos", true),
            bound("b", "notready-oos", true),
            bound("c", "notready-oos", false),
            bound("d", "notready", true),
            bound("e", "unknown", true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let lookup = |n: &str| nodes.iter().find(|x| x.metadata.name.as_deref() == Some(n));
        assert_eq!(
            names(&terminating_on_out_of_service(&refs, lookup)),
            vec!["b"]
        );
    }

    #[test]
    fn a_deleted_pod_is_failed_first_with_the_disruption_target_condition() {
        let now = Timestamp::from_second(100).unwrap();
        let running = bound("a", "gone", false);
        let patch = failed_status_patch(
            &running,
            Some((DISRUPTION_TARGET, ORPHANED_REASON, ORPHANED_MESSAGE)),
            now,
        )
        .unwrap();
        assert_eq!(
            patch,
            json!({"status": {"phase": "Failed", "conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists", "lastTransitionTime": now.to_string(),
            }]}})
        );
        assert_eq!(
            failed_status_patch(&running, None, now),
            Some(json!({"status": {"phase": "Failed"}}))
        );
        let done = pod("b", "Succeeded", 0);
        assert_eq!(failed_status_patch(&done, None, now), None);
    }
}
