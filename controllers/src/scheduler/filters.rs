//! The Filter plugins: can this node take this pod? Each returns `Ok` or the reasons, in
//! upstream's words, that the fit error counts (upstream:
//! `pkg/scheduler/framework/plugins/nodeunschedulable/node_unschedulable.go`,
//! `nodename/node_name.go`, `tainttoleration/taint_toleration.go`,
//! `nodeaffinity/node_affinity.go`, `nodeports/node_ports.go`, `noderesources/fit.go`).
//! VolumeBinding is in [`super::volume_binding`].
//!
//! They run in upstream's default plugin order (`pkg/scheduler/apis/config/v1/default_plugins.go`)
//! and a node's first failing plugin is its only diagnosis, as upstream's
//! `RunFilterPlugins` stops there: NodeUnschedulable, NodeName, NodeReady (rekube's, see
//! [`node_ready`]), TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
//! VolumeBinding. Not ported: VolumeRestrictions, NodeVolumeLimits, VolumeZone,
//! PodTopologySpread's and InterPodAffinity's filters (no topology spread constraints or
//! pod affinity are honoured), DynamicResources.
use k8s_openapi::api::core::v1::{Taint, Toleration};
use rekube_crds::Pod;

use super::nodeaffinity::RequiredNodeAffinity;
use super::resources::Resource;
use super::snapshot::{NodeInfo, host_ports};
use crate::nodelifecycle::eviction::tolerates_taint;
use crate::nodelifecycle::health::{
    CONDITION_FALSE, CONDITION_TRUE, NODE_READY, get_node_condition,
};
use crate::nodelifecycle::taints::{
    TAINT_EFFECT_NO_EXECUTE, TAINT_EFFECT_NO_SCHEDULE, TAINT_NODE_NOT_READY,
    TAINT_NODE_UNREACHABLE, TAINT_NODE_UNSCHEDULABLE,
};

pub const NODE_UNSCHEDULABLE: &str = "NodeUnschedulable";
pub const NODE_NAME: &str = "NodeName";
pub const NODE_READY_PLUGIN: &str = "NodeReady";
pub const TAINT_TOLERATION: &str = "TaintToleration";
pub const NODE_AFFINITY: &str = "NodeAffinity";
pub const NODE_PORTS: &str = "NodePorts";
pub const NODE_RESOURCES_FIT: &str = "NodeResourcesFit";

/// Upstream nodeunschedulable `ErrReasonUnschedulable`.
pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// rekube's NodeReady reason (upstream has no such filter).
pub const ERR_REASON_NOT_READY: &str = "node(s) were not ready";
/// Upstream nodename `ErrReason`.
pub const ERR_REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
/// Upstream nodeaffinity `ErrReasonPod`.
pub const ERR_REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// Upstream nodeports `ErrReason`.
pub const ERR_REASON_NODE_PORTS: &str =
    "node(s) didn't have free ports for the requested pod ports";
/// Upstream noderesources' reason for the pod count.
pub const ERR_REASON_TOO_MANY_PODS: &str = "Too many pods";

/// Why a node cannot take the pod: the plugin and its reasons (upstream: a `Status` with
/// code Unschedulable or UnschedulableAndUnresolvable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub plugin: &'static str,
    pub reasons: Vec<String>,
}

impl Unschedulable {
    pub fn new(plugin: &'static str, reason: impl Into<String>) -> Self {
        Unschedulable {
            plugin,
            reasons: vec![reason.into()],
        }
    }
}

pub type FilterResult = Result<(), Unschedulable>;

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// Whether some toleration tolerates the taint (upstream `TolerationsTolerateTaint`).
pub fn tolerations_tolerate_taint(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates_taint(t, taint))
}

fn tolerates_no_schedule(pod: &Pod, key: &str) -> bool {
    tolerations_tolerate_taint(
        tolerations(pod),
        &Taint {
            key: key.into(),
            effect: TAINT_EFFECT_NO_SCHEDULE.into(),
            value: None,
            time_added: None,
        },
    )
}

/// NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods tolerating
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub fn node_unschedulable(pod: &Pod, node: &NodeInfo) -> FilterResult {
    let cordoned = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if cordoned && !tolerates_no_schedule(pod, TAINT_NODE_UNSCHEDULABLE) {
        return Err(Unschedulable::new(
            NODE_UNSCHEDULABLE,
            ERR_REASON_UNSCHEDULABLE,
        ));
    }
    Ok(())
}

/// NodeName: a pod naming a node (`spec.nodeName`) fits that node only.
pub fn node_name(pod: &Pod, node: &NodeInfo) -> FilterResult {
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(n) if !n.is_empty() && n != node.name() => {
            Err(Unschedulable::new(NODE_NAME, ERR_REASON_NODE_NAME))
        }
        _ => Ok(()),
    }
}

/// NodeReady (rekube's; upstream has no such filter): a node whose Ready condition is not
/// True takes only pods tolerating the NoSchedule taint the node lifecycle controller puts
/// on such a node: `node.kubernetes.io/not-ready` for Ready=False,
/// `node.kubernetes.io/unreachable` for Ready=Unknown or no Ready condition.
///
/// Upstream relies on those taints alone (TaintToleration then reports "untolerated
/// taint"); rekube also checks the condition so that a node is skipped as soon as it is
/// not ready, without waiting for the node lifecycle controller (which may not run).
pub fn node_ready(pod: &Pod, node: &NodeInfo) -> FilterResult {
    let status =
        get_node_condition(node.node.status.as_ref(), NODE_READY).map(|c| c.status.as_str());
    let key = match status {
        Some(CONDITION_TRUE) => return Ok(()),
        Some(CONDITION_FALSE) => TAINT_NODE_NOT_READY,
        _ => TAINT_NODE_UNREACHABLE,
    };
    if tolerates_no_schedule(pod, key) {
        Ok(())
    } else {
        Err(Unschedulable::new(NODE_READY_PLUGIN, ERR_REASON_NOT_READY))
    }
}

/// The first taint passing `filter` that no toleration tolerates (upstream
/// `v1helper.FindMatchingUntoleratedTaint`).
pub fn find_matching_untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|t| !tolerations_tolerate_taint(tolerations, t))
}

/// Upstream `helper.DoNotScheduleTaintsFilterFunc`: NoSchedule and NoExecute taints.
pub fn do_not_schedule_taint(t: &Taint) -> bool {
    t.effect == TAINT_EFFECT_NO_SCHEDULE || t.effect == TAINT_EFFECT_NO_EXECUTE
}

/// The TaintToleration reason for an untolerated taint.
///
/// Upstream up to v1.34 prints `node(s) had untolerated taint {key: value}`; later releases
/// print `node(s) had untolerated taint(s)` and log the taint instead. rekube keeps the
/// informative form.
pub fn untolerated_taint_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or_default()
    )
}

/// TaintToleration: every NoSchedule and NoExecute taint must be tolerated;
/// PreferNoSchedule only lowers the score.
pub fn taint_toleration(pod: &Pod, node: &NodeInfo) -> FilterResult {
    match find_matching_untolerated_taint(node.taints(), tolerations(pod), do_not_schedule_taint) {
        Some(t) => Err(Unschedulable::new(
            TAINT_TOLERATION,
            untolerated_taint_reason(t),
        )),
        None => Ok(()),
    }
}

/// NodeAffinity: the pod's nodeSelector and required node affinity must match the node.
pub fn node_affinity(affinity: &RequiredNodeAffinity<'_>, node: &NodeInfo) -> FilterResult {
    if affinity.matches(&node.node) {
        Ok(())
    } else {
        Err(Unschedulable::new(NODE_AFFINITY, ERR_REASON_NODE_AFFINITY))
    }
}

/// NodePorts: none of the pod's host ports (protocol, host IP, port) may be in use on the
/// node; a port on 0.0.0.0 conflicts with that port on any IP.
pub fn node_ports(pod: &Pod, node: &NodeInfo) -> FilterResult {
    let conflict = host_ports(pod).iter().any(|p| {
        node.used_ports.check_conflict(
            p.host_ip.as_deref().unwrap_or_default(),
            p.protocol.as_deref().unwrap_or_default(),
            p.host_port.unwrap_or(0),
        )
    });
    if conflict {
        Err(Unschedulable::new(NODE_PORTS, ERR_REASON_NODE_PORTS))
    } else {
        Ok(())
    }
}

/// A resource the node lacks (upstream `noderesources.InsufficientResource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsufficientResource {
    pub resource_name: String,
    pub reason: String,
    pub requested: i64,
    pub used: i64,
    pub capacity: i64,
}

fn insufficient(
    name: &str,
    reason: String,
    requested: i64,
    used: i64,
    capacity: i64,
) -> InsufficientResource {
    InsufficientResource {
        resource_name: name.to_string(),
        reason,
        requested,
        used,
        capacity,
    }
}

/// What the node lacks for the pod's request, one entry per resource, the pod count first
/// then cpu, memory, ephemeral-storage and the scalar resources by name (upstream
/// `fitsRequest`; its scalar order is Go's random map order).
pub fn fits_request(request: &Resource, node: &NodeInfo) -> Vec<InsufficientResource> {
    let mut out = Vec::new();
    let alloc = &node.allocatable;
    let used = &node.requested;
    let pods = i64::try_from(node.pods.len()).unwrap_or(i64::MAX);
    if pods.saturating_add(1) > alloc.allowed_pod_number {
        out.push(insufficient(
            "pods",
            ERR_REASON_TOO_MANY_PODS.into(),
            1,
            pods,
            alloc.allowed_pod_number,
        ));
    }
    if request.is_empty_request() {
        return out;
    }
    let mut check = |name: &str, want: i64, have: i64, in_use: i64| {
        // Saturating: an allocatable or a total at the int64 bounds must not wrap.
        if want > 0 && want > have.saturating_sub(in_use) {
            out.push(insufficient(
                name,
                format!("Insufficient {name}"),
                want,
                in_use,
                have,
            ));
        }
    };
    check("cpu", request.milli_cpu, alloc.milli_cpu, used.milli_cpu);
    check("memory", request.memory, alloc.memory, used.memory);
    check(
        "ephemeral-storage",
        request.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
    );
    for (name, want) in &request.scalar {
        let have = alloc.scalar.get(name).copied().unwrap_or(0);
        let in_use = used.scalar.get(name).copied().unwrap_or(0);
        check(name, *want, have, in_use);
    }
    out
}

/// NodeResourcesFit: the node's allocatable minus what its pods request must cover the
/// pod's request, and one more pod must be allowed; one reason per lacking resource.
pub fn node_resources_fit(request: &Resource, node: &NodeInfo) -> FilterResult {
    let lacking = fits_request(request, node);
    if lacking.is_empty() {
        Ok(())
    } else {
        Err(Unschedulable {
            plugin: NODE_RESOURCES_FIT,
            reasons: lacking.into_iter().map(|r| r.reason).collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests: one tuple per case
mod tests {
    use super::*;
    use crate::scheduler::resources::compute_pod_resource_request;
    use crate::scheduler::testing::{NodeBuilder, PodBuilder, container, taint, toleration};
    use k8s_openapi::api::core::v1::Container;
    use rekube_crds::Node;

    fn info(node: Node, pods: &[Pod]) -> NodeInfo {
        let mut s = crate::scheduler::Snapshot::new(&[node], pods, &[], &[], &[]);
        s.set_node(s.nodes()[0].node.clone());
        s.nodes()[0].clone()
    }

    fn reasons(r: FilterResult) -> Vec<String> {
        r.err().map(|u| u.reasons).unwrap_or_default()
    }

    #[test]
    fn node_unschedulable_table() {
        let unschedulable = NodeBuilder::new("n").unschedulable().build();
        let cases = [
            (
                "schedulable node",
                PodBuilder::new("p").build(),
                NodeBuilder::new("n").build(),
                true,
            ),
            (
                "cordoned node",
                PodBuilder::new("p").build(),
                unschedulable.clone(),
                false,
            ),
            (
                "pod tolerates unschedulable",
                PodBuilder::new("p")
                    .tolerations(vec![toleration(
                        TAINT_NODE_UNSCHEDULABLE,
                        "Exists",
                        "",
                        "NoSchedule",
                    )])
                    .build(),
                unschedulable.clone(),
                true,
            ),
            (
                "toleration of another effect",
                PodBuilder::new("p")
                    .tolerations(vec![toleration(
                        TAINT_NODE_UNSCHEDULABLE,
                        "Exists",
                        "",
                        "NoExecute",
                    )])
                    .build(),
                unschedulable,
                false,
            ),
        ];
        for (name, pod, node, fits) in cases {
            let r = node_unschedulable(&pod, &info(node, &[]));
            assert_eq!(r.is_ok(), fits, "{name}");
            if !fits {
                assert_eq!(reasons(r), [ERR_REASON_UNSCHEDULABLE], "{name}");
            }
        }
    }

    #[test]
    fn node_name_table() {
        let n = info(NodeBuilder::new("foo").build(), &[]);
        assert!(node_name(&PodBuilder::new("p").build(), &n).is_ok());
        assert!(node_name(&PodBuilder::new("p").node("foo").build(), &n).is_ok());
        assert_eq!(
            reasons(node_name(&PodBuilder::new("p").node("bar").build(), &n)),
            [ERR_REASON_NODE_NAME]
        );
    }

    #[test]
    fn node_ready_table() {
        let tol = |key: &str, effect: &str| {
            PodBuilder::new("p")
                .tolerations(vec![toleration(key, "Exists", "", effect)])
                .build()
        };
        let plain = PodBuilder::new("p").build();
        let cases = [
            ("ready", plain.clone(), Some("True"), true),
            ("not ready", plain.clone(), Some("False"), false),
            ("unknown", plain.clone(), Some("Unknown"), false),
            ("no condition", plain.clone(), None, false),
            (
                "tolerates not-ready",
                tol(TAINT_NODE_NOT_READY, "NoSchedule"),
                Some("False"),
                true,
            ),
            (
                "not-ready toleration on unknown",
                tol(TAINT_NODE_NOT_READY, "NoSchedule"),
                Some("Unknown"),
                false,
            ),
            (
                "tolerates unreachable",
                tol(TAINT_NODE_UNREACHABLE, ""),
                Some("Unknown"),
                true,
            ),
            (
                "NoExecute toleration only",
                tol(TAINT_NODE_NOT_READY, "NoExecute"),
                Some("False"),
                false,
            ),
            ("tolerates everything", tol("", ""), None, true),
        ];
        for (name, pod, ready, fits) in cases {
            let n = info(NodeBuilder::new("n").ready(ready).build(), &[]);
            let r = node_ready(&pod, &n);
            assert_eq!(r.is_ok(), fits, "{name}");
            if !fits {
                assert_eq!(reasons(r), [ERR_REASON_NOT_READY], "{name}");
            }
        }
    }

    /// Upstream taint_toleration_test.go TestTaintTolerationFilter.
    #[test]
    fn taint_toleration_filter_table() {
        let cases = [
            (
                "a pod having no tolerations can't be scheduled onto a node with nonempty taints",
                vec![],
                vec![taint("dedicated", "user1", "NoSchedule")],
                Some("node(s) had untolerated taint {dedicated: user1}"),
            ),
            (
                "a pod which can be scheduled on a dedicated node assigned to user1 with effect NoSchedule",
                vec![toleration("dedicated", "Equal", "user1", "NoSchedule")],
                vec![taint("dedicated", "user1", "NoSchedule")],
                None,
            ),
            (
                "a pod which can't be scheduled on a dedicated node assigned to user2 with effect NoSchedule",
                vec![toleration("dedicated", "Equal", "user2", "NoSchedule")],
                vec![taint("dedicated", "user1", "NoSchedule")],
                Some("node(s) had untolerated taint {dedicated: user1}"),
            ),
            (
                "a pod can be scheduled onto the node, with a toleration uses operator Exists that tolerates the taints on the node",
                vec![toleration("foo", "Exists", "", "NoSchedule")],
                vec![taint("foo", "bar", "NoSchedule")],
                None,
            ),
            (
                "a pod has multiple tolerations, node has multiple taints, all the taints are tolerated, pod can be scheduled onto the node",
                vec![
                    toleration("dedicated", "Equal", "user2", "NoSchedule"),
                    toleration("foo", "Exists", "", "NoSchedule"),
                ],
                vec![
                    taint("dedicated", "user2", "NoSchedule"),
                    taint("foo", "bar", "NoSchedule"),
                ],
                None,
            ),
            (
                "a pod has a toleration that keys and values match the taint on the node, but (non-empty) effect doesn't match, can't be scheduled onto the node",
                vec![toleration("foo", "Equal", "bar", "PreferNoSchedule")],
                vec![taint("foo", "bar", "NoSchedule")],
                Some("node(s) had untolerated taint {foo: bar}"),
            ),
            (
                "The pod has a toleration that keys and values match the taint on the node, the effect of toleration is empty, and the effect of taint is NoSchedule. Pod can be scheduled onto the node",
                vec![toleration("foo", "Equal", "bar", "")],
                vec![taint("foo", "bar", "NoSchedule")],
                None,
            ),
            (
                "The pod has a toleration that key and value don't match the taint on the node, but the effect of taint on node is PreferNoSchedule. Pod can be scheduled onto the node",
                vec![toleration("dedicated", "Equal", "user2", "NoSchedule")],
                vec![taint("dedicated", "user1", "PreferNoSchedule")],
                None,
            ),
            (
                "The pod has no toleration, but the effect of taint on node is PreferNoSchedule. Pod can be scheduled onto the node",
                vec![],
                vec![taint("dedicated", "user1", "PreferNoSchedule")],
                None,
            ),
            (
                "NoExecute taints are filtered too",
                vec![],
                vec![taint("node.kubernetes.io/unreachable", "", "NoExecute")],
                Some("node(s) had untolerated taint {node.kubernetes.io/unreachable: }"),
            ),
            (
                "the first untolerated taint is reported",
                vec![toleration("a", "Exists", "", "")],
                vec![
                    taint("a", "1", "NoSchedule"),
                    taint("b", "2", "NoSchedule"),
                    taint("c", "3", "NoSchedule"),
                ],
                Some("node(s) had untolerated taint {b: 2}"),
            ),
        ];
        for (name, tolerations, taints, want) in cases {
            let pod = PodBuilder::new("p").tolerations(tolerations).build();
            let n = info(NodeBuilder::new("n").taints(taints).build(), &[]);
            let r = taint_toleration(&pod, &n);
            match want {
                None => assert!(r.is_ok(), "{name}: {r:?}"),
                Some(reason) => assert_eq!(
                    r,
                    Err(Unschedulable::new(TAINT_TOLERATION, reason)),
                    "{name}"
                ),
            }
        }
    }

    #[test]
    fn node_affinity_filter_reason() {
        let pod = PodBuilder::new("p")
            .node_selector(&[("disk", "ssd")])
            .build();
        let aff = RequiredNodeAffinity::of(&pod);
        let yes = info(NodeBuilder::new("n").label("disk", "ssd").build(), &[]);
        let no = info(NodeBuilder::new("n").build(), &[]);
        assert!(node_affinity(&aff, &yes).is_ok());
        assert_eq!(
            reasons(node_affinity(&aff, &no)),
            [ERR_REASON_NODE_AFFINITY]
        );
    }

    /// Upstream node_ports_test.go TestNodePorts.
    #[test]
    fn node_ports_table() {
        let cases: &[(&str, &[&str], &[&str], bool)] = &[
            ("nothing running", &[], &[], true),
            (
                "other port",
                &["UDP/127.0.0.1/8080"],
                &["UDP/127.0.0.1/9090"],
                true,
            ),
            (
                "same udp port",
                &["UDP/127.0.0.1/8080"],
                &["UDP/127.0.0.1/8080"],
                false,
            ),
            (
                "same tcp port",
                &["TCP/127.0.0.1/8080"],
                &["TCP/127.0.0.1/8080"],
                false,
            ),
            (
                "different host ip",
                &["TCP/127.0.0.1/8080"],
                &["TCP/127.0.0.2/8080"],
                true,
            ),
            (
                "different protocol",
                &["UDP/127.0.0.1/8080"],
                &["TCP/127.0.0.1/8080"],
                true,
            ),
            (
                "second udp port conflict",
                &["UDP/127.0.0.1/8000", "UDP/127.0.0.1/8080"],
                &["UDP/127.0.0.1/8080"],
                false,
            ),
            (
                "first tcp port conflict",
                &["TCP/127.0.0.1/8001", "UDP/127.0.0.1/8080"],
                &["TCP/127.0.0.1/8001", "UDP/127.0.0.1/8081"],
                false,
            ),
            (
                "first tcp port conflict due to 0.0.0.0 hostIP",
                &["TCP/0.0.0.0/8001"],
                &["TCP/127.0.0.1/8001"],
                false,
            ),
            (
                "TCP hostPort conflict due to 0.0.0.0 hostIP",
                &["TCP/10.0.10.10/8001", "TCP/0.0.0.0/8001"],
                &["TCP/127.0.0.1/8001"],
                false,
            ),
            (
                "second tcp port conflict to 0.0.0.0 hostIP",
                &["TCP/127.0.0.1/8001"],
                &["TCP/0.0.0.0/8001"],
                false,
            ),
            (
                "second different protocol",
                &["UDP/127.0.0.1/8001"],
                &["TCP/0.0.0.0/8001"],
                true,
            ),
            (
                "UDP hostPort conflict due to 0.0.0.0 hostIP",
                &["UDP/0.0.0.0/8001", "TCP/0.0.0.0/8001"],
                &["UDP/127.0.0.1/8001"],
                false,
            ),
            (
                "empty ip and protocol mean 0.0.0.0 and TCP",
                &["/0.0.0.0/80"],
                &["TCP//80"],
                false,
            ),
        ];
        for (name, pod_ports, used, fits) in cases {
            let existing = PodBuilder::new("existing")
                .host_ports(used)
                .node("n")
                .build();
            let n = info(NodeBuilder::new("n").build(), &[existing]);
            let pod = PodBuilder::new("p").host_ports(pod_ports).build();
            let r = node_ports(&pod, &n);
            assert_eq!(r.is_ok(), *fits, "{name}");
            if !fits {
                assert_eq!(reasons(r), [ERR_REASON_NODE_PORTS], "{name}");
            }
        }
        // A sidecar's host port counts, a plain init container's does not.
        let mut sidecar: Container = container("s", &[]);
        sidecar.restart_policy = Some("Always".into());
        sidecar.ports = PodBuilder::new("x")
            .host_ports(&["TCP/0.0.0.0/80"])
            .build()
            .spec
            .unwrap()
            .containers[0]
            .ports
            .clone();
        let mut init = sidecar.clone();
        init.restart_policy = None;
        let n = info(
            NodeBuilder::new("n").build(),
            &[PodBuilder::new("e")
                .host_ports(&["TCP//80"])
                .node("n")
                .build()],
        );
        assert!(
            node_ports(
                &PodBuilder::new("p").init_containers(vec![sidecar]).build(),
                &n
            )
            .is_err()
        );
        assert!(
            node_ports(
                &PodBuilder::new("p").init_containers(vec![init]).build(),
                &n
            )
            .is_ok()
        );
    }

    fn fit_node(pods: &[Pod]) -> NodeInfo {
        // Upstream fit_test.go: makeAllocatableResources(10, 20, 32, 5, 20, 5).
        let node = NodeBuilder::new("n")
            .allocatable(&[
                ("cpu", "10m"),
                ("memory", "20"),
                ("pods", "32"),
                ("example.com/aaa", "5"),
                ("ephemeral-storage", "20"),
                ("hugepages-2Mi", "5"),
            ])
            .build();
        let pods: Vec<Pod> = pods
            .iter()
            .cloned()
            .map(|mut p| {
                p.spec.as_mut().unwrap().node_name = Some("n".into());
                p
            })
            .collect();
        info(node, &pods)
    }

    /// A pod of one container per `(milli cpu, memory, scalar)` (upstream `newResourcePod`).
    fn res_pod(name: &str, containers: &[(i64, i64, &[(&str, i64)])]) -> Pod {
        let cs = containers
            .iter()
            .enumerate()
            .map(|(i, (cpu, mem, scalar))| {
                let cpu = format!("{cpu}m");
                let mem = mem.to_string();
                let mut reqs: Vec<(String, String)> =
                    vec![("cpu".into(), cpu), ("memory".into(), mem)];
                reqs.extend(scalar.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                let refs: Vec<(&str, &str)> =
                    reqs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                container(&format!("c{i}"), &refs)
            })
            .collect();
        PodBuilder::new(name).containers(cs).build()
    }

    fn with_init(mut pod: Pod, init: &[(i64, i64, &[(&str, i64)])]) -> Pod {
        pod.spec.as_mut().unwrap().init_containers =
            Some(res_pod("x", init).spec.unwrap().containers);
        pod
    }

    /// Upstream fit_test.go TestEnoughRequests.
    #[test]
    fn enough_requests_table() {
        let ext_a = "example.com/aaa";
        let ext_b = "example.com/bbb";
        let k8s_a = "kubernetes.io/something";
        let k8s_b = "subdomain.kubernetes.io/something";
        let huge = "hugepages-2Mi";
        let none: &[(&str, i64)] = &[];
        let cases: Vec<(&str, Pod, Pod, Vec<InsufficientResource>)> = vec![
            (
                "no resources requested always fits",
                PodBuilder::new("p").build(),
                res_pod("e", &[(10, 20, none)]),
                vec![],
            ),
            (
                "too many resources fails",
                res_pod("p", &[(1, 1, none)]),
                res_pod("e", &[(10, 20, none)]),
                vec![
                    insufficient("cpu", "Insufficient cpu".into(), 1, 10, 10),
                    insufficient("memory", "Insufficient memory".into(), 1, 20, 20),
                ],
            ),
            (
                "too many resources fails due to init container cpu",
                with_init(res_pod("p", &[(1, 1, none)]), &[(3, 1, none)]),
                res_pod("e", &[(8, 19, none)]),
                vec![insufficient("cpu", "Insufficient cpu".into(), 3, 8, 10)],
            ),
            (
                "too many resources fails due to highest init container cpu",
                with_init(res_pod("p", &[(1, 1, none)]), &[(3, 1, none), (2, 1, none)]),
                res_pod("e", &[(8, 19, none)]),
                vec![insufficient("cpu", "Insufficient cpu".into(), 3, 8, 10)],
            ),
            (
                "too many resources fails due to init container memory",
                with_init(res_pod("p", &[(1, 1, none)]), &[(1, 3, none)]),
                res_pod("e", &[(9, 19, none)]),
                vec![insufficient(
                    "memory",
                    "Insufficient memory".into(),
                    3,
                    19,
                    20,
                )],
            ),
            (
                "init container fits because it's the max, not sum, of containers and init containers",
                with_init(res_pod("p", &[(1, 1, none)]), &[(1, 1, none)]),
                res_pod("e", &[(9, 19, none)]),
                vec![],
            ),
            (
                "multiple init containers fit because it's the max, not sum, of containers and init containers",
                with_init(res_pod("p", &[(1, 1, none)]), &[(1, 1, none), (1, 1, none)]),
                res_pod("e", &[(9, 19, none)]),
                vec![],
            ),
            (
                "both resources fit",
                res_pod("p", &[(1, 1, none)]),
                res_pod("e", &[(5, 5, none)]),
                vec![],
            ),
            (
                "one resource memory fits",
                res_pod("p", &[(2, 1, none)]),
                res_pod("e", &[(9, 5, none)]),
                vec![insufficient("cpu", "Insufficient cpu".into(), 2, 9, 10)],
            ),
            (
                "one resource cpu fits",
                res_pod("p", &[(1, 2, none)]),
                res_pod("e", &[(5, 19, none)]),
                vec![insufficient(
                    "memory",
                    "Insufficient memory".into(),
                    2,
                    19,
                    20,
                )],
            ),
            (
                "equal edge case",
                res_pod("p", &[(5, 1, none)]),
                res_pod("e", &[(5, 19, none)]),
                vec![],
            ),
            (
                "equal edge case for init container",
                with_init(res_pod("p", &[(4, 1, none)]), &[(5, 1, none)]),
                res_pod("e", &[(5, 19, none)]),
                vec![],
            ),
            (
                "extended resource fits",
                res_pod("p", &[(0, 0, &[(ext_a, 1)])]),
                res_pod("e", &[(0, 0, none)]),
                vec![],
            ),
            (
                "extended resource capacity enforced",
                res_pod("p", &[(1, 1, &[(ext_a, 10)])]),
                res_pod("e", &[(0, 0, &[(ext_a, 0)])]),
                vec![insufficient(
                    ext_a,
                    format!("Insufficient {ext_a}"),
                    10,
                    0,
                    5,
                )],
            ),
            (
                "extended resource allocatable enforced",
                res_pod("p", &[(1, 1, &[(ext_a, 1)])]),
                res_pod("e", &[(0, 0, &[(ext_a, 5)])]),
                vec![insufficient(
                    ext_a,
                    format!("Insufficient {ext_a}"),
                    1,
                    5,
                    5,
                )],
            ),
            (
                "extended resource allocatable enforced for multiple containers",
                res_pod("p", &[(1, 1, &[(ext_a, 3)]), (1, 1, &[(ext_a, 3)])]),
                res_pod("e", &[(0, 0, &[(ext_a, 2)])]),
                vec![insufficient(
                    ext_a,
                    format!("Insufficient {ext_a}"),
                    6,
                    2,
                    5,
                )],
            ),
            (
                "extended resource allocatable admits multiple init containers",
                with_init(
                    res_pod("p", &[]),
                    &[(1, 1, &[(ext_a, 3)]), (1, 1, &[(ext_a, 3)])],
                ),
                res_pod("e", &[(0, 0, &[(ext_a, 2)])]),
                vec![],
            ),
            (
                "extended resource allocatable enforced for multiple init containers",
                with_init(
                    res_pod("p", &[]),
                    &[(1, 1, &[(ext_a, 6)]), (1, 1, &[(ext_a, 3)])],
                ),
                res_pod("e", &[(0, 0, &[(ext_a, 2)])]),
                vec![insufficient(
                    ext_a,
                    format!("Insufficient {ext_a}"),
                    6,
                    2,
                    5,
                )],
            ),
            (
                "extended resource allocatable enforced for unknown resource",
                res_pod("p", &[(1, 1, &[(ext_b, 1)])]),
                res_pod("e", &[(0, 0, none)]),
                vec![insufficient(
                    ext_b,
                    format!("Insufficient {ext_b}"),
                    1,
                    0,
                    0,
                )],
            ),
            (
                "kubernetes.io resource capacity enforced",
                res_pod("p", &[(1, 1, &[(k8s_a, 10)])]),
                res_pod("e", &[(0, 0, none)]),
                vec![insufficient(
                    k8s_a,
                    format!("Insufficient {k8s_a}"),
                    10,
                    0,
                    0,
                )],
            ),
            (
                "kubernetes.io resource capacity enforced for init container",
                with_init(res_pod("p", &[]), &[(1, 1, &[(k8s_b, 10)])]),
                res_pod("e", &[(0, 0, none)]),
                vec![insufficient(
                    k8s_b,
                    format!("Insufficient {k8s_b}"),
                    10,
                    0,
                    0,
                )],
            ),
            (
                "hugepages resource capacity enforced",
                res_pod("p", &[(1, 1, &[(huge, 10)])]),
                res_pod("e", &[(0, 0, &[(huge, 0)])]),
                vec![insufficient(huge, format!("Insufficient {huge}"), 10, 0, 5)],
            ),
            (
                "hugepages resource allocatable enforced for multiple containers",
                res_pod("p", &[(1, 1, &[(huge, 3)]), (1, 1, &[(huge, 3)])]),
                res_pod("e", &[(0, 0, &[(huge, 2)])]),
                vec![insufficient(huge, format!("Insufficient {huge}"), 6, 2, 5)],
            ),
            (
                "skip checking resource request with quantity zero",
                res_pod("p", &[(0, 0, &[(ext_a, 0)])]),
                res_pod("e", &[(0, 0, &[(ext_a, 6)])]),
                vec![],
            ),
            (
                "ephemeral local storage request exceeds allocatable",
                PodBuilder::new("p")
                    .containers(vec![container("c", &[("ephemeral-storage", "25")])])
                    .build(),
                res_pod("e", &[(2, 2, none)]),
                vec![insufficient(
                    "ephemeral-storage",
                    "Insufficient ephemeral-storage".into(),
                    25,
                    0,
                    20,
                )],
            ),
            (
                "ephemeral local storage is sufficient",
                PodBuilder::new("p")
                    .containers(vec![container("c", &[("ephemeral-storage", "10")])])
                    .build(),
                PodBuilder::new("e")
                    .containers(vec![container("c", &[("ephemeral-storage", "10")])])
                    .build(),
                vec![],
            ),
        ];
        for (name, pod, existing, want) in cases {
            let n = fit_node(&[existing]);
            let request = compute_pod_resource_request(&pod);
            assert_eq!(fits_request(&request, &n), want, "{name}");
            let r = node_resources_fit(&request, &n);
            assert_eq!(
                reasons(r),
                want.iter().map(|w| w.reason.clone()).collect::<Vec<_>>(),
                "{name}"
            );
        }
    }

    #[test]
    fn resources_plus_overhead() {
        let n = fit_node(&[res_pod("e", &[(5, 5, &[])])]);
        let fits = PodBuilder::new("p")
            .containers(res_pod("x", &[(1, 1, &[])]).spec.unwrap().containers)
            .overhead(&[("cpu", "3m"), ("memory", "13")])
            .build();
        assert!(node_resources_fit(&compute_pod_resource_request(&fits), &n).is_ok());
        let too_big = PodBuilder::new("p")
            .containers(res_pod("x", &[(1, 1, &[])]).spec.unwrap().containers)
            .overhead(&[("cpu", "1m"), ("memory", "15")])
            .build();
        assert_eq!(
            fits_request(&compute_pod_resource_request(&too_big), &n),
            [insufficient(
                "memory",
                "Insufficient memory".into(),
                16,
                5,
                20
            )]
        );
    }

    /// Upstream fit_test.go TestNotEnoughRequests: allocatable pods 1, one pod there.
    #[test]
    fn not_enough_pods() {
        let node = NodeBuilder::new("n")
            .allocatable(&[("cpu", "10m"), ("memory", "20"), ("pods", "1")])
            .build();
        let mut existing = res_pod("e", &[(10, 20, &[])]);
        existing.spec.as_mut().unwrap().node_name = Some("n".into());
        let n = info(node, &[existing]);
        let cases = [
            (
                "even without specified resources",
                PodBuilder::new("p").build(),
                vec![ERR_REASON_TOO_MANY_PODS],
            ),
            (
                "even if a resource also lacks, too many pods comes first",
                res_pod("p", &[(1, 1, &[])]),
                vec![
                    ERR_REASON_TOO_MANY_PODS,
                    "Insufficient cpu",
                    "Insufficient memory",
                ],
            ),
        ];
        for (name, pod, want) in cases {
            assert_eq!(
                reasons(node_resources_fit(&compute_pod_resource_request(&pod), &n)),
                want,
                "{name}"
            );
        }
        // A node without a pods allocatable takes no pod, as upstream.
        let bare = info(
            NodeBuilder::new("n").allocatable(&[("cpu", "1")]).build(),
            &[],
        );
        assert_eq!(
            reasons(node_resources_fit(&Resource::default(), &bare)),
            [ERR_REASON_TOO_MANY_PODS]
        );
    }

    // --- Overflow: allocatable − requested at the int64 bounds.

    #[test]
    fn overflow_fits_request_saturates() {
        // A negative allocatable (never valid, but node status is anyone's to write) minus
        // an 8Ei request is below int64's min: saturated, the pod does not fit.
        let node = NodeBuilder::new("n")
            .allocatable(&[
                ("cpu", "9223372036854775807"),
                ("memory", "-2"),
                ("pods", "9223372036854775807"),
            ])
            .build();
        let hog = PodBuilder::new("hog")
            .req(&[("cpu", "1"), ("memory", "8Ei")])
            .node("n")
            .build();
        let ni = info(node, &[hog]);
        assert_eq!(ni.requested.memory, i64::MAX);
        let want = compute_pod_resource_request(
            &PodBuilder::new("p")
                .req(&[("cpu", "1"), ("memory", "1")])
                .build(),
        );
        let lacking: Vec<String> = fits_request(&want, &ni)
            .into_iter()
            .map(|r| r.resource_name)
            .collect();
        assert_eq!(lacking, ["memory"]);
    }
}
