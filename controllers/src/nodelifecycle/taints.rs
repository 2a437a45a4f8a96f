//! Node taints derived from node conditions (upstream: `doNoExecuteTaintingPass`,
//! `processTaintBaseEviction`, `markNodeAsReachable` and `doNoScheduleTaintingPass` of
//! `pkg/controller/nodelifecycle/node_lifecycle_controller.go`, with
//! `controllerutil.SwapNodeControllerTaint` and `pkg/util/taints`).
//!
//! Not ported: the per-zone rate limiting of NoExecute tainting and the zone disruption
//! modes (`handleDisruption`, which stop tainting when every zone is fully disrupted).
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rekube_crds::Node;

use super::health::{
    CONDITION_FALSE, CONDITION_TRUE, CONDITION_UNKNOWN, NODE_DISK_PRESSURE, NODE_MEMORY_PRESSURE,
    NODE_NETWORK_UNAVAILABLE, NODE_PID_PRESSURE, NODE_READY, get_node_condition,
};

/// Taint keys (upstream: `v1.TaintNodeNotReady` ...).
pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NODE_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_NODE_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_NODE_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
pub const TAINT_NODE_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";

/// Taint effects (upstream: `v1.TaintEffectNoSchedule` ...).
pub const TAINT_EFFECT_NO_SCHEDULE: &str = "NoSchedule";
pub const TAINT_EFFECT_PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
pub const TAINT_EFFECT_NO_EXECUTE: &str = "NoExecute";

/// Which condition status maps to which NoSchedule taint key (upstream:
/// `nodeConditionToTaintKeyStatusMap`).
pub const NODE_CONDITION_TO_TAINT_KEY: [(&str, &str, &str); 6] = [
    (NODE_READY, CONDITION_FALSE, TAINT_NODE_NOT_READY),
    (NODE_READY, CONDITION_UNKNOWN, TAINT_NODE_UNREACHABLE),
    (
        NODE_MEMORY_PRESSURE,
        CONDITION_TRUE,
        TAINT_NODE_MEMORY_PRESSURE,
    ),
    (NODE_DISK_PRESSURE, CONDITION_TRUE, TAINT_NODE_DISK_PRESSURE),
    (
        NODE_NETWORK_UNAVAILABLE,
        CONDITION_TRUE,
        TAINT_NODE_NETWORK_UNAVAILABLE,
    ),
    (NODE_PID_PRESSURE, CONDITION_TRUE, TAINT_NODE_PID_PRESSURE),
];

/// Taint keys whose NoSchedule taint the controller manages (upstream:
/// `taintKeyToNodeConditionMap` keys plus `TaintNodeUnschedulable`).
pub const MANAGED_NO_SCHEDULE_TAINT_KEYS: [&str; 7] = [
    TAINT_NODE_NOT_READY,
    TAINT_NODE_UNREACHABLE,
    TAINT_NODE_MEMORY_PRESSURE,
    TAINT_NODE_DISK_PRESSURE,
    TAINT_NODE_NETWORK_UNAVAILABLE,
    TAINT_NODE_PID_PRESSURE,
    TAINT_NODE_UNSCHEDULABLE,
];

/// Whether two taints have the same key and effect (upstream: `Taint.MatchTaint`).
pub fn match_taint(a: &Taint, b: &Taint) -> bool {
    a.key == b.key && a.effect == b.effect
}

/// Whether the node carries a taint with the key and effect (upstream:
/// `taintutils.TaintExists`).
pub fn taint_exists(taints: &[Taint], key: &str, effect: &str) -> bool {
    taints.iter().any(|t| t.key == key && t.effect == effect)
}

fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// A controller taint; an existing one with the same key and effect keeps its timeAdded,
/// a new one gets `now` (upstream: `SwapNodeControllerTaint` sets TimeAdded on add).
fn controller_taint(node: &Node, key: &str, effect: &str, now: Timestamp) -> Taint {
    let time_added = node_taints(node)
        .iter()
        .find(|t| t.key == key && t.effect == effect)
        .map_or_else(|| Some(Time(now)), |t| t.time_added.clone());
    Taint {
        key: key.into(),
        effect: effect.into(),
        value: None,
        time_added,
    }
}

/// The NoExecute taint the Ready condition calls for: `Some(None)` none (Ready=True),
/// `None` no opinion (no Ready condition: upstream retries until there is one).
fn no_execute_decision(node: &Node) -> Option<Option<&'static str>> {
    let ready = get_node_condition(node.status.as_ref(), NODE_READY)?;
    Some(match ready.status.as_str() {
        CONDITION_FALSE => Some(TAINT_NODE_NOT_READY),
        CONDITION_UNKNOWN => Some(TAINT_NODE_UNREACHABLE),
        _ => None,
    })
}

/// The NoExecute taints the node should carry: not-ready when Ready=False, unreachable
/// when Ready=Unknown, none when Ready=True or absent; the two are mutually exclusive.
/// timeAdded is the existing taint's, else `now` (upstream: `doNoExecuteTaintingPass` and
/// `processTaintBaseEviction` with `NotReadyTaintTemplate`/`UnreachableTaintTemplate`).
pub fn desired_no_execute_taints(node: &Node, now: Timestamp) -> Vec<Taint> {
    match no_execute_decision(node) {
        Some(Some(key)) => vec![controller_taint(node, key, TAINT_EFFECT_NO_EXECUTE, now)],
        _ => Vec::new(),
    }
}

/// The NoSchedule taints the node's conditions and `spec.unschedulable` call for, in
/// condition order then unschedulable (upstream: `doNoScheduleTaintingPass`, the
/// TaintNodesByCondition behaviour). timeAdded is the existing taint's, else `now`.
pub fn desired_no_schedule_taints(node: &Node, now: Timestamp) -> Vec<Taint> {
    let mut taints = Vec::new();
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[]);
    for condition in conditions {
        for (type_, status, key) in NODE_CONDITION_TO_TAINT_KEY {
            if condition.type_ == type_
                && condition.status == status
                && !taint_exists(&taints, key, TAINT_EFFECT_NO_SCHEDULE)
            {
                taints.push(controller_taint(node, key, TAINT_EFFECT_NO_SCHEDULE, now));
            }
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        taints.push(controller_taint(
            node,
            TAINT_NODE_UNSCHEDULABLE,
            TAINT_EFFECT_NO_SCHEDULE,
            now,
        ));
    }
    taints
}

fn is_managed_no_schedule(t: &Taint) -> bool {
    t.effect == TAINT_EFFECT_NO_SCHEDULE && MANAGED_NO_SCHEDULE_TAINT_KEYS.contains(&t.key.as_str())
}

fn is_managed_no_execute(t: &Taint) -> bool {
    t.effect == TAINT_EFFECT_NO_EXECUTE
        && (t.key == TAINT_NODE_NOT_READY || t.key == TAINT_NODE_UNREACHABLE)
}

/// The node's full new taint list, or None when unchanged: managed NoSchedule taints
/// follow [`desired_no_schedule_taints`]; the not-ready/unreachable NoExecute taints
/// follow [`desired_no_execute_taints`] (both removed on Ready=True, upstream
/// `markNodeAsReachable`; left alone without a Ready condition); every other taint is
/// kept in place. Existing taints keep their position and timeAdded, new ones are
/// appended (upstream: `doNoScheduleTaintingPass` + `doNoExecuteTaintingPass` via
/// `SwapNodeControllerTaint`, `taintutils.TaintSetDiff`).
pub fn taint_changes(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let existing = node_taints(node);
    let mut desired = desired_no_schedule_taints(node, now);
    let manage_no_execute = no_execute_decision(node).is_some();
    if manage_no_execute {
        desired.extend(desired_no_execute_taints(node, now));
    }
    let mut taints: Vec<Taint> = existing
        .iter()
        .filter(|t| {
            let managed =
                is_managed_no_schedule(t) || (manage_no_execute && is_managed_no_execute(t));
            !managed || desired.iter().any(|d| match_taint(d, t))
        })
        .cloned()
        .collect();
    for d in desired {
        if !taints.iter().any(|t| match_taint(t, &d)) {
            taints.push(d);
        }
    }
    (taints.as_slice() != existing).then_some(taints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn now() -> Timestamp {
        "2015-01-01T12:00:00Z".parse().unwrap()
    }
    fn earlier() -> Timestamp {
        "2015-01-01T11:00:00Z".parse().unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<Timestamp>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(Time),
        }
    }

    fn node(conditions: &[(&str, &str)], unschedulable: bool, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node0".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: unschedulable.then_some(true),
                taints: (!taints.is_empty()).then_some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| NodeCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    const NE: &str = TAINT_EFFECT_NO_EXECUTE;
    const NS: &str = TAINT_EFFECT_NO_SCHEDULE;

    #[test]
    fn desired_no_execute_taints_table() {
        let cases = [
            ("ready", vec![(NODE_READY, CONDITION_TRUE)], vec![]),
            (
                "not ready",
                vec![(NODE_READY, CONDITION_FALSE)],
                vec![taint(TAINT_NODE_NOT_READY, NE, Some(now()))],
            ),
            (
                "unknown",
                vec![(NODE_READY, CONDITION_UNKNOWN)],
                vec![taint(TAINT_NODE_UNREACHABLE, NE, Some(now()))],
            ),
            ("no ready condition", vec![], vec![]),
        ];
        for (name, conditions, expected) in cases {
            let n = node(&conditions, false, vec![]);
            assert_eq!(desired_no_execute_taints(&n, now()), expected, "{name}");
        }
        // an existing taint keeps its timeAdded
        let n = node(
            &[(NODE_READY, CONDITION_UNKNOWN)],
            false,
            vec![taint(TAINT_NODE_UNREACHABLE, NE, Some(earlier()))],
        );
        assert_eq!(
            desired_no_execute_taints(&n, now()),
            vec![taint(TAINT_NODE_UNREACHABLE, NE, Some(earlier()))]
        );
    }

    /// upstream TestTaintsNodeByCondition (the mapping part).
    #[test]
    fn desired_no_schedule_taints_table() {
        let cases = [
            ("ready", vec![(NODE_READY, CONDITION_TRUE)], false, vec![]),
            (
                "not ready",
                vec![(NODE_READY, CONDITION_FALSE)],
                false,
                vec![TAINT_NODE_NOT_READY],
            ),
            (
                "unreachable",
                vec![(NODE_READY, CONDITION_UNKNOWN)],
                false,
                vec![TAINT_NODE_UNREACHABLE],
            ),
            (
                "pressures and network",
                vec![
                    (NODE_READY, CONDITION_TRUE),
                    (NODE_MEMORY_PRESSURE, CONDITION_TRUE),
                    (NODE_DISK_PRESSURE, CONDITION_TRUE),
                    (NODE_PID_PRESSURE, CONDITION_TRUE),
                    (NODE_NETWORK_UNAVAILABLE, CONDITION_TRUE),
                ],
                false,
                vec![
                    TAINT_NODE_MEMORY_PRESSURE,
                    TAINT_NODE_DISK_PRESSURE,
                    TAINT_NODE_PID_PRESSURE,
                    TAINT_NODE_NETWORK_UNAVAILABLE,
                ],
            ),
            (
                "pressure false or unknown is no taint",
                vec![
                    (NODE_MEMORY_PRESSURE, CONDITION_FALSE),
                    (NODE_DISK_PRESSURE, CONDITION_UNKNOWN),
                ],
                false,
                vec![],
            ),
            (
                "unschedulable",
                vec![],
                true,
                vec![TAINT_NODE_UNSCHEDULABLE],
            ),
        ];
        for (name, conditions, unschedulable, keys) in cases {
            let n = node(&conditions, unschedulable, vec![]);
            let expected: Vec<Taint> = keys.iter().map(|k| taint(k, NS, Some(now()))).collect();
            assert_eq!(desired_no_schedule_taints(&n, now()), expected, "{name}");
        }
    }

    #[test]
    fn taint_changes_table() {
        let foreign = Taint {
            key: "example.com/dedicated".into(),
            effect: NS.into(),
            value: Some("gpu".into()),
            time_added: None,
        };
        let cases: Vec<(&str, Node, Option<Vec<Taint>>)> = vec![
            (
                "ready node without taints: unchanged",
                node(&[(NODE_READY, CONDITION_TRUE)], false, vec![]),
                None,
            ),
            (
                "lost node gets unreachable NoSchedule and NoExecute, foreign kept",
                node(
                    &[(NODE_READY, CONDITION_UNKNOWN)],
                    false,
                    vec![foreign.clone()],
                ),
                Some(vec![
                    foreign.clone(),
                    taint(TAINT_NODE_UNREACHABLE, NS, Some(now())),
                    taint(TAINT_NODE_UNREACHABLE, NE, Some(now())),
                ]),
            ),
            (
                "already tainted lost node: unchanged",
                node(
                    &[(NODE_READY, CONDITION_UNKNOWN)],
                    false,
                    vec![
                        taint(TAINT_NODE_UNREACHABLE, NS, Some(earlier())),
                        taint(TAINT_NODE_UNREACHABLE, NE, Some(earlier())),
                    ],
                ),
                None,
            ),
            (
                "unreachable swapped for not-ready",
                node(
                    &[(NODE_READY, CONDITION_FALSE)],
                    false,
                    vec![
                        taint(TAINT_NODE_UNREACHABLE, NS, Some(earlier())),
                        taint(TAINT_NODE_UNREACHABLE, NE, Some(earlier())),
                    ],
                ),
                Some(vec![
                    taint(TAINT_NODE_NOT_READY, NS, Some(now())),
                    taint(TAINT_NODE_NOT_READY, NE, Some(now())),
                ]),
            ),
            (
                "recovery removes both taints",
                node(
                    &[(NODE_READY, CONDITION_TRUE)],
                    false,
                    vec![
                        foreign.clone(),
                        taint(TAINT_NODE_UNREACHABLE, NS, Some(earlier())),
                        taint(TAINT_NODE_UNREACHABLE, NE, Some(earlier())),
                        taint(TAINT_NODE_NOT_READY, NE, Some(earlier())),
                    ],
                ),
                Some(vec![foreign.clone()]),
            ),
            (
                "no Ready condition: NoExecute left alone, NoSchedule cleaned",
                node(
                    &[],
                    false,
                    vec![
                        taint(TAINT_NODE_UNREACHABLE, NE, Some(earlier())),
                        taint(TAINT_NODE_UNREACHABLE, NS, Some(earlier())),
                    ],
                ),
                Some(vec![taint(TAINT_NODE_UNREACHABLE, NE, Some(earlier()))]),
            ),
            (
                "unschedulable added, PreferNoSchedule of a managed key kept",
                node(
                    &[(NODE_READY, CONDITION_TRUE)],
                    true,
                    vec![taint(
                        TAINT_NODE_MEMORY_PRESSURE,
                        TAINT_EFFECT_PREFER_NO_SCHEDULE,
                        None,
                    )],
                ),
                Some(vec![
                    taint(
                        TAINT_NODE_MEMORY_PRESSURE,
                        TAINT_EFFECT_PREFER_NO_SCHEDULE,
                        None,
                    ),
                    taint(TAINT_NODE_UNSCHEDULABLE, NS, Some(now())),
                ]),
            ),
        ];
        for (name, n, expected) in cases {
            let got = taint_changes(&n, now());
            assert_eq!(got, expected, "{name}");
            // applying the change is a fixpoint
            if let Some(taints) = got {
                let mut applied = n.clone();
                applied.spec.as_mut().unwrap().taints = Some(taints);
                assert_eq!(
                    taint_changes(&applied, now()),
                    None,
                    "{name}: not a fixpoint"
                );
            }
        }
    }
}
