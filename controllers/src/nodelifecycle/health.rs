//! Node health evaluation (upstream: `nodeHealthData` and `Controller.tryUpdateNodeHealth`
//! of `pkg/controller/nodelifecycle/node_lifecycle_controller.go`).
//!
//! The controller keeps, per node, the local time at which it last saw the node's Ready
//! condition heartbeat or its Lease renewal advance (`probe_timestamp`). When that is
//! older than the grace period, the node is lost: its Ready, MemoryPressure, DiskPressure
//! and PIDPressure conditions are set to Unknown.
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rekube_crds::Node;

/// Upstream default `--node-monitor-grace-period`.
pub const DEFAULT_NODE_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// Upstream default `--node-startup-grace-period` (used while the node never posted a
/// Ready condition).
pub const DEFAULT_NODE_STARTUP_GRACE_PERIOD: Duration = Duration::from_secs(60);
/// Upstream default `--node-monitor-period`: how often health is evaluated.
pub const DEFAULT_NODE_MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// Namespace of the node heartbeat Leases (upstream: `v1.NamespaceNodeLease`).
pub const NAMESPACE_NODE_LEASE: &str = "kube-node-lease";

/// Node condition types and condition statuses (upstream: `v1.NodeReady` ...,
/// `v1.ConditionTrue` ...).
pub use rekube_crds::core_v1::{
    CONDITION_FALSE, CONDITION_TRUE, CONDITION_UNKNOWN, NODE_DISK_PRESSURE, NODE_MEMORY_PRESSURE,
    NODE_NETWORK_UNAVAILABLE, NODE_PID_PRESSURE, NODE_READY,
};

/// Reason and message of conditions the controller sets to Unknown.
pub const REASON_NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
pub const MESSAGE_NODE_STATUS_UNKNOWN: &str = "Kubelet stopped posting node status.";
/// Reason and message of conditions the kubelet never posted.
pub const REASON_NODE_STATUS_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
pub const MESSAGE_NODE_STATUS_NEVER_UPDATED: &str = "Kubelet never posted node status.";

/// The condition types set to Unknown when a node is lost; NetworkUnavailable is left
/// alone as it is managed by the control plane.
pub const LOST_NODE_CONDITION_TYPES: [&str; 4] = [
    NODE_READY,
    NODE_MEMORY_PRESSURE,
    NODE_DISK_PRESSURE,
    NODE_PID_PRESSURE,
];

/// What the controller last observed of a node (upstream: `nodeHealthData`). Keep one
/// per node between passes and hand it back as `previous`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    /// Local time of the last observed heartbeat (Ready lastHeartbeatTime change or
    /// Lease renewal).
    pub probe_timestamp: Timestamp,
    /// Local time of the last observed Ready transition.
    pub ready_transition_timestamp: Timestamp,
    /// The node status last observed.
    pub status: Option<NodeStatus>,
    /// The Lease last observed renewed.
    pub lease: Option<Lease>,
}

/// The condition of the given type (upstream: `controllerutil.GetNodeCondition`).
pub fn get_node_condition<'a>(
    status: Option<&'a NodeStatus>,
    condition_type: &str,
) -> Option<&'a NodeCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == condition_type)
}

fn creation_time(node: &Node) -> Option<Time> {
    node.metadata.creation_timestamp.clone()
}

fn creation_timestamp(node: &Node) -> Timestamp {
    // A missing creationTimestamp is Go's zero time: long ago.
    creation_time(node).map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// The Ready condition as observed before any update: the node's own, or, when the
/// kubelet never posted one, an Unknown condition dated at the node's creation (upstream:
/// `observedReadyCondition` of `tryUpdateNodeHealth`). Feed its status to the taint logic.
pub fn observed_ready_condition(node: &Node) -> NodeCondition {
    match get_node_condition(node.status.as_ref(), NODE_READY) {
        Some(c) => c.clone(),
        None => NodeCondition {
            type_: NODE_READY.into(),
            status: CONDITION_UNKNOWN.into(),
            last_heartbeat_time: creation_time(node),
            last_transition_time: creation_time(node),
            ..Default::default()
        },
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// `MicroTime.Before`: false when either side is unset.
fn renew_time_before(saved: &Lease, observed: &Lease) -> bool {
    let t = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0)
    };
    match (t(saved), t(observed)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// Evaluates a node's health with one grace period for both the startup and the monitor
/// case; see [`try_update_node_health_with_startup_grace`] (upstream:
/// `Controller.tryUpdateNodeHealth`).
pub fn try_update_node_health(
    node: &Node,
    lease: Option<&Lease>,
    previous: Option<&NodeHealth>,
    grace_period: Duration,
    now: Timestamp,
) -> (NodeHealth, Option<Vec<NodeCondition>>) {
    try_update_node_health_with_startup_grace(
        node,
        lease,
        previous,
        grace_period,
        grace_period,
        now,
    )
}

/// Evaluates a node's health (upstream: `Controller.tryUpdateNodeHealth`).
///
/// `lease` is the node's Lease in [`NAMESPACE_NODE_LEASE`], `previous` what the last pass
/// returned for this node (None on the first pass). `grace_period` is
/// `--node-monitor-grace-period`; `startup_grace_period` (`--node-startup-grace-period`)
/// applies instead while the node has no Ready condition.
///
/// Returns the health to keep for the next pass and, when the node is lost and its Ready
/// condition changes, the node's full new condition list to write to `status.conditions`:
/// Ready/MemoryPressure/DiskPressure/PIDPressure not already Unknown become Unknown with
/// reason `NodeStatusUnknown`, message "Kubelet stopped posting node status.",
/// lastHeartbeatTime kept and lastTransitionTime = now; missing ones are added with reason
/// `NodeStatusNeverUpdated`, lastHeartbeatTime = the node's creation. The returned health
/// assumes the write succeeds; if it fails keep `previous` (upstream keeps the old entry
/// and retries).
pub fn try_update_node_health_with_startup_grace(
    node: &Node,
    lease: Option<&Lease>,
    previous: Option<&NodeHealth>,
    grace_period: Duration,
    startup_grace_period: Duration,
    now: Timestamp,
) -> (NodeHealth, Option<Vec<NodeCondition>>) {
    let status = node.status.clone().unwrap_or_default();
    let current_ready = get_node_condition(node.status.as_ref(), NODE_READY);
    let observed_ready = observed_ready_condition(node);
    let mut health = previous.cloned();

    let grace = if current_ready.is_none() {
        match health.as_mut() {
            Some(h) => h.status = Some(status.clone()),
            None => {
                health = Some(NodeHealth {
                    probe_timestamp: creation_timestamp(node),
                    ready_transition_timestamp: creation_timestamp(node),
                    status: Some(status.clone()),
                    lease: None,
                });
            }
        }
        startup_grace_period
    } else {
        grace_period
    };

    let saved_condition = health
        .as_ref()
        .and_then(|h| get_node_condition(h.status.as_ref(), NODE_READY))
        .cloned();
    let saved_lease = health.as_ref().and_then(|h| h.lease.clone());
    let fresh = |transition: Timestamp| NodeHealth {
        probe_timestamp: now,
        ready_transition_timestamp: transition,
        status: Some(status.clone()),
        lease: None,
    };

    let mut health = match (health, saved_condition.as_ref(), current_ready) {
        // first observation of this node
        (None, _, _) => fresh(now),
        // the controller restarted with the node already posting a Ready condition
        (Some(_), None, Some(_)) => fresh(now),
        // the Ready condition was removed: treated like the case above
        (Some(_), Some(_), None) => fresh(now),
        // a new heartbeat; a changed transition time is a Ready transition
        (Some(h), Some(saved), Some(current))
            if saved.last_heartbeat_time != current.last_heartbeat_time =>
        {
            let transition = if saved.last_transition_time != current.last_transition_time {
                now
            } else {
                h.ready_transition_timestamp
            };
            fresh(transition)
        }
        (Some(h), _, _) => h,
    };

    // A renewed Lease always counts as a heartbeat.
    if let Some(observed) = lease
        && saved_lease
            .as_ref()
            .is_none_or(|saved| renew_time_before(saved, observed))
    {
        health.lease = Some(observed.clone());
        health.probe_timestamp = now;
    }

    let deadline = health.probe_timestamp.saturating_add(signed(grace));
    if !deadline.is_ok_and(|d| now > d) {
        return (health, None);
    }

    // Lost: set the conditions to Unknown.
    let now_time = Time(now);
    let mut conditions = status.conditions.clone().unwrap_or_default();
    for condition_type in LOST_NODE_CONDITION_TYPES {
        match conditions.iter_mut().find(|c| c.type_ == condition_type) {
            None => conditions.push(NodeCondition {
                type_: condition_type.into(),
                status: CONDITION_UNKNOWN.into(),
                reason: Some(REASON_NODE_STATUS_NEVER_UPDATED.into()),
                message: Some(MESSAGE_NODE_STATUS_NEVER_UPDATED.into()),
                last_heartbeat_time: creation_time(node),
                last_transition_time: Some(now_time.clone()),
            }),
            Some(c) if c.status != CONDITION_UNKNOWN => {
                c.status = CONDITION_UNKNOWN.into();
                c.reason = Some(REASON_NODE_STATUS_UNKNOWN.into());
                c.message = Some(MESSAGE_NODE_STATUS_UNKNOWN.into());
                c.last_transition_time = Some(now_time.clone());
            }
            Some(_) => {}
        }
    }
    let new_ready = conditions.iter().find(|c| c.type_ == NODE_READY);
    if new_ready == Some(&observed_ready) {
        return (health, None);
    }
    let new_status = NodeStatus {
        conditions: Some(conditions.clone()),
        ..status
    };
    (
        NodeHealth {
            probe_timestamp: health.probe_timestamp,
            ready_transition_timestamp: now,
            status: Some(new_status),
            lease: lease.cloned(),
        },
        Some(conditions),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    const MONITOR: Duration = Duration::from_secs(50);
    const STARTUP: Duration = Duration::from_secs(60);
    const HOUR: SignedDuration = SignedDuration::from_hours(1);

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn fake_now() -> Timestamp {
        ts("2015-01-01T12:00:00Z")
    }
    fn creation() -> Timestamp {
        ts("2012-01-01T00:00:00Z")
    }

    fn cond(type_: &str, status: &str, hb: Timestamp, tt: Timestamp) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            last_heartbeat_time: Some(Time(hb)),
            last_transition_time: Some(Time(tt)),
            ..Default::default()
        }
    }

    fn unknown(type_: &str, never: bool, hb: Timestamp, tt: Timestamp) -> NodeCondition {
        let (reason, message) = if never {
            (
                REASON_NODE_STATUS_NEVER_UPDATED,
                MESSAGE_NODE_STATUS_NEVER_UPDATED,
            )
        } else {
            (REASON_NODE_STATUS_UNKNOWN, MESSAGE_NODE_STATUS_UNKNOWN)
        };
        NodeCondition {
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..cond(type_, CONDITION_UNKNOWN, hb, tt)
        }
    }

    fn node(created: Timestamp, conditions: Option<Vec<NodeCondition>>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node0".into()),
                creation_timestamp: Some(Time(created)),
                ..Default::default()
            },
            spec: None,
            status: conditions.map(|c| NodeStatus {
                conditions: Some(c),
                ..Default::default()
            }),
        }
    }

    fn lease(renew: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("node0".into()),
                namespace: Some(NAMESPACE_NODE_LEASE.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("node0".into()),
                renew_time: Some(MicroTime(renew)),
                ..Default::default()
            }),
        }
    }

    fn lost_all(never_ready: bool, ready_hb: Timestamp, tt: Timestamp) -> Vec<NodeCondition> {
        vec![
            unknown(NODE_READY, never_ready, ready_hb, tt),
            unknown(NODE_MEMORY_PRESSURE, true, creation(), tt),
            unknown(NODE_DISK_PRESSURE, true, creation(), tt),
            unknown(NODE_PID_PRESSURE, true, creation(), tt),
        ]
    }

    struct Case {
        name: &'static str,
        node: Node,
        lease: Option<Lease>,
        /// second pass after an hour
        later: Option<(Node, Option<Lease>)>,
        expected: Option<Vec<NodeCondition>>,
    }

    /// Runs one pass at fake_now and, if given, a second one an hour later, like
    /// upstream's tests run monitorNodeHealth twice; returns the conditions written by
    /// the last pass (upstream: UpdatedNodeStatuses).
    fn run(case: &Case) -> Option<Vec<NodeCondition>> {
        let (h, written) = try_update_node_health_with_startup_grace(
            &case.node,
            case.lease.as_ref(),
            None,
            MONITOR,
            STARTUP,
            fake_now(),
        );
        let Some((node, lease)) = &case.later else {
            return written;
        };
        assert!(
            written.is_none(),
            "{}: first pass wrote {written:?}",
            case.name
        );
        try_update_node_health_with_startup_grace(
            node,
            lease.as_ref(),
            Some(&h),
            MONITOR,
            STARTUP,
            fake_now() + HOUR,
        )
        .1
    }

    /// upstream TestMonitorNodeHealthUpdateStatus and
    /// TestMonitorNodeHealthUpdateNodeAndPodStatusWithLease (health evaluation part).
    #[test]
    fn monitor_node_health_update_status() {
        let ready_true = |hb| Some(vec![cond(NODE_READY, CONDITION_TRUE, hb, fake_now())]);
        let ready_and_disk = |hb| {
            Some(vec![
                cond(NODE_READY, CONDITION_TRUE, hb, fake_now()),
                cond(NODE_DISK_PRESSURE, CONDITION_FALSE, hb, fake_now()),
            ])
        };
        let cases = vec![
            Case {
                name: "created long ago, without status",
                node: node(creation(), None),
                lease: None,
                later: None,
                expected: Some(lost_all(true, creation(), fake_now())),
            },
            Case {
                name: "created recently, without status",
                node: node(fake_now(), None),
                lease: None,
                later: None,
                expected: None,
            },
            Case {
                name: "created long ago, status not updated for an hour",
                node: node(creation(), ready_true(fake_now())),
                lease: None,
                later: Some((node(creation(), ready_true(fake_now())), None)),
                expected: Some(lost_all(false, fake_now(), fake_now() + HOUR)),
            },
            Case {
                name: "created long ago, status updated recently",
                node: node(creation(), ready_true(fake_now())),
                lease: None,
                later: None,
                expected: None,
            },
            Case {
                name: "created recently, without status, lease renewed recently",
                node: node(fake_now(), None),
                lease: Some(lease(fake_now())),
                later: None,
                expected: None,
            },
            Case {
                name: "created long ago, without status, lease renewed recently",
                node: node(creation(), None),
                lease: Some(lease(fake_now())),
                later: Some((node(creation(), None), Some(lease(fake_now() + HOUR)))),
                expected: None,
            },
            Case {
                name: "created long ago, without status, lease expired",
                node: node(creation(), None),
                lease: Some(lease(fake_now())),
                later: Some((node(creation(), None), Some(lease(fake_now())))),
                expected: Some(lost_all(true, creation(), fake_now() + HOUR)),
            },
            Case {
                name: "status exceeds grace period, lease renewed",
                node: node(creation(), ready_and_disk(fake_now())),
                lease: Some(lease(fake_now())),
                later: Some((
                    node(creation(), ready_and_disk(fake_now())),
                    Some(lease(fake_now() + HOUR)),
                )),
                expected: None,
            },
            Case {
                name: "status updated recently, lease expired",
                node: node(creation(), ready_and_disk(fake_now())),
                lease: Some(lease(fake_now())),
                later: Some((
                    node(
                        creation(),
                        Some(vec![
                            cond(NODE_READY, CONDITION_TRUE, fake_now() + HOUR, fake_now()),
                            cond(
                                NODE_DISK_PRESSURE,
                                CONDITION_FALSE,
                                fake_now() + HOUR,
                                fake_now(),
                            ),
                        ]),
                    ),
                    Some(lease(fake_now())),
                )),
                expected: None,
            },
            Case {
                name: "status exceeds grace period, lease also expired",
                node: node(creation(), ready_true(fake_now())),
                lease: Some(lease(fake_now())),
                later: Some((
                    node(creation(), ready_true(fake_now())),
                    Some(lease(fake_now())),
                )),
                expected: Some(lost_all(false, fake_now(), fake_now() + HOUR)),
            },
        ];
        for case in &cases {
            assert_eq!(run(case), case.expected, "{}", case.name);
        }
    }

    #[test]
    fn grace_period_boundary() {
        let n = node(
            creation(),
            Some(vec![cond(
                NODE_READY,
                CONDITION_TRUE,
                fake_now(),
                fake_now(),
            )]),
        );
        let (h, w) = try_update_node_health(
            &n,
            None,
            None,
            DEFAULT_NODE_MONITOR_GRACE_PERIOD,
            fake_now(),
        );
        assert!(w.is_none());
        assert_eq!(h.probe_timestamp, fake_now());
        // exactly at probe + grace: still healthy (upstream uses now.After)
        let at = fake_now() + SignedDuration::from_secs(40);
        let (h2, w) =
            try_update_node_health(&n, None, Some(&h), DEFAULT_NODE_MONITOR_GRACE_PERIOD, at);
        assert!(w.is_none());
        assert_eq!(h2, h);
        let after = at + SignedDuration::from_secs(1);
        let (h3, w) = try_update_node_health(
            &n,
            None,
            Some(&h2),
            DEFAULT_NODE_MONITOR_GRACE_PERIOD,
            after,
        );
        let w = w.expect("lost");
        assert_eq!(w[0], unknown(NODE_READY, false, fake_now(), after));
        assert_eq!(h3.ready_transition_timestamp, after);
        assert_eq!(h3.probe_timestamp, fake_now());
        assert_eq!(
            get_node_condition(h3.status.as_ref(), NODE_READY),
            Some(&w[0])
        );
    }

    #[test]
    fn heartbeat_advances_probe_and_transition() {
        let t0 = fake_now();
        let n0 = node(
            creation(),
            Some(vec![cond(NODE_READY, CONDITION_TRUE, t0, t0)]),
        );
        let (h, _) = try_update_node_health(&n0, None, None, MONITOR, t0);
        // new heartbeat, same transition: probe moves, transition stays
        let t1 = t0 + SignedDuration::from_secs(30);
        let n1 = node(
            creation(),
            Some(vec![cond(NODE_READY, CONDITION_TRUE, t1, t0)]),
        );
        let (h, w) = try_update_node_health(&n1, None, Some(&h), MONITOR, t1);
        assert!(w.is_none());
        assert_eq!((h.probe_timestamp, h.ready_transition_timestamp), (t1, t0));
        // new heartbeat with a transition
        let t2 = t1 + SignedDuration::from_secs(30);
        let n2 = node(
            creation(),
            Some(vec![cond(NODE_READY, CONDITION_FALSE, t2, t2)]),
        );
        let (h, w) = try_update_node_health(&n2, None, Some(&h), MONITOR, t2);
        assert!(w.is_none());
        assert_eq!((h.probe_timestamp, h.ready_transition_timestamp), (t2, t2));
    }

    #[test]
    fn already_unknown_ready_is_not_rewritten() {
        let t0 = fake_now();
        let conditions = vec![
            unknown(NODE_READY, false, t0, t0),
            unknown(NODE_MEMORY_PRESSURE, false, t0, t0),
            unknown(NODE_DISK_PRESSURE, false, t0, t0),
            unknown(NODE_PID_PRESSURE, false, t0, t0),
        ];
        let n = node(creation(), Some(conditions));
        let (h, _) = try_update_node_health(&n, None, None, MONITOR, t0);
        let (_, w) = try_update_node_health(&n, None, Some(&h), MONITOR, t0 + HOUR);
        assert!(w.is_none());
    }

    #[test]
    fn lost_node_keeps_network_unavailable_and_other_conditions() {
        let t0 = fake_now();
        let n = node(
            creation(),
            Some(vec![
                cond(NODE_NETWORK_UNAVAILABLE, CONDITION_FALSE, t0, t0),
                cond(NODE_READY, CONDITION_TRUE, t0, t0),
                cond(NODE_MEMORY_PRESSURE, CONDITION_FALSE, t0, t0),
            ]),
        );
        let (h, _) = try_update_node_health(&n, None, None, MONITOR, t0);
        let (_, w) = try_update_node_health(&n, None, Some(&h), MONITOR, t0 + HOUR);
        let w = w.unwrap();
        assert_eq!(
            w,
            vec![
                cond(NODE_NETWORK_UNAVAILABLE, CONDITION_FALSE, t0, t0),
                unknown(NODE_READY, false, t0, t0 + HOUR),
                unknown(NODE_MEMORY_PRESSURE, false, t0, t0 + HOUR),
                unknown(NODE_DISK_PRESSURE, true, creation(), t0 + HOUR),
                unknown(NODE_PID_PRESSURE, true, creation(), t0 + HOUR),
            ]
        );
    }

    #[test]
    fn observed_ready_condition_defaults_to_unknown_at_creation() {
        let n = node(creation(), None);
        let c = observed_ready_condition(&n);
        assert_eq!(c.status, CONDITION_UNKNOWN);
        assert_eq!(c.last_heartbeat_time, Some(Time(creation())));
    }
}
