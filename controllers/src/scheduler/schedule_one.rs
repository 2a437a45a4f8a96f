//! One scheduling decision: PreFilter, Filter every node, Score the feasible ones, pick
//! the best (upstream: `pkg/scheduler/schedule_one.go` `schedulePod`,
//! `findNodesThatFitPod`, `findNodesThatPassFilters`, `prioritizeNodes`, `selectHost`,
//! and `framework/runtime/framework.go` `RunPreFilterPlugins`, `RunFilterPlugins`).
//!
//! Two choices differ from upstream, both for determinism and testability:
//! - Every node is filtered and every feasible node scored. Upstream stops once it found
//!   `numFeasibleNodesToFind` feasible nodes (all of them below 100 nodes; above, a
//!   percentage falling from 50% towards 5% as the cluster grows) and rotates its starting
//!   node between cycles; rekube clusters are small, and the full scan gives the same
//!   answer for the same snapshot.
//! - Among the nodes with the highest total score the lexicographically smallest name
//!   wins. Upstream picks one at random (reservoir sampling in `selectHost`) to spread
//!   ties; here spreading comes from the scores themselves (LeastAllocated and the default
//!   topology spreading change as soon as a pod is assumed), and a reproducible choice
//!   makes the decision a pure function of the snapshot.
use std::collections::{BTreeMap, BTreeSet};

use rekube_crds::Pod;

use super::filters::{
    FilterResult, NODE_AFFINITY, Unschedulable, node_affinity, node_name, node_ports, node_ready,
    node_resources_fit, node_unschedulable, taint_toleration,
};
use super::fit_error::FitError;
use super::nodeaffinity::{RequiredNodeAffinity, pre_filter_node_names};
use super::resources::{Resource, compute_pod_resource_request};
use super::scores::{NodeScore, prioritize_nodes};
use super::snapshot::{NodeInfo, Snapshot};
use super::volume_binding::{self, PodVolumeClaims, PodVolumes};
use super::volume_restrictions;

/// Where the pod goes (upstream `ScheduleResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResult {
    /// The chosen node (upstream `SuggestedHost`).
    pub node_name: String,
    /// Nodes run through the filters (upstream `EvaluatedNodes`).
    pub evaluated_nodes: usize,
    /// Nodes that passed them (upstream `FeasibleNodes`).
    pub feasible_nodes: usize,
    /// What VolumeBinding's PreBind writes before the pod is bound: the volumes matched
    /// to its unbound WaitForFirstConsumer claims pre-bound to them, the claims to provision
    /// annotated with the node.
    pub volumes: PodVolumes,
}

/// What PreFilter computed once for the pod, read by the filters of every node (upstream
/// `CycleState`).
#[derive(Debug, Clone)]
pub struct CycleState<'a> {
    pub request: Resource,
    pub affinity: RequiredNodeAffinity<'a>,
    pub volumes: Option<PodVolumeClaims<'a>>,
    /// VolumeRestrictions' state (`None`: skipped).
    pub volume_restrictions: Option<volume_restrictions::PreFilterState>,
    /// Nodes the pod is restricted to by NodeAffinity's `metadata.name` terms, if any
    /// (upstream `PreFilterResult`).
    pub node_names: Option<BTreeSet<String>>,
}

/// Upstream `RunPreFilterPlugins` for NodeAffinity, VolumeRestrictions and VolumeBinding: the
/// state, or the
/// message that makes every node unschedulable.
pub fn run_pre_filter_plugins<'a>(
    snapshot: &'a Snapshot,
    pod: &'a Pod,
) -> Result<CycleState<'a>, String> {
    let node_names = pre_filter_node_names(pod).map_err(str::to_string)?;
    let volume_restrictions = volume_restrictions::pre_filter(snapshot, pod)?;
    let volumes = volume_binding::pre_filter(snapshot, pod)?;
    Ok(CycleState {
        request: compute_pod_resource_request(pod),
        affinity: RequiredNodeAffinity::of(pod),
        volumes,
        volume_restrictions,
        node_names,
    })
}

/// Upstream `RunFilterPlugins`: the plugins in order, stopping at the first that rejects
/// the node; on success the claims to annotate with this node.
pub fn run_filter_plugins(
    snapshot: &Snapshot,
    state: &CycleState<'_>,
    pod: &Pod,
    node: &NodeInfo,
) -> Result<PodVolumes, Unschedulable> {
    let filters: [&dyn Fn() -> FilterResult; 8] = [
        &|| node_unschedulable(pod, node),
        &|| node_name(pod, node),
        &|| node_ready(pod, node),
        &|| taint_toleration(pod, node),
        &|| node_affinity(&state.affinity, node),
        &|| node_ports(pod, node),
        &|| node_resources_fit(&state.request, node),
        &|| volume_restrictions::filter(state.volume_restrictions.as_ref()),
    ];
    for f in filters {
        f()?;
    }
    match &state.volumes {
        Some(claims) => volume_binding::filter(snapshot, claims, node),
        None => Ok(PodVolumes::default()),
    }
}

/// A node that passed every filter.
#[derive(Debug, Clone)]
pub struct FeasibleNode<'s> {
    pub node: &'s NodeInfo,
    /// What PreBind writes should this node be chosen.
    pub volumes: PodVolumes,
}

/// The nodes that passed the filters, and how many nodes were filtered.
#[derive(Debug, Clone)]
pub struct FeasibleNodes<'s> {
    pub nodes: Vec<FeasibleNode<'s>>,
    pub evaluated: usize,
}

/// The feasible nodes with their claims to annotate (upstream `findNodesThatFitPod`), or
/// why none fits.
pub fn find_nodes_that_fit_pod<'s>(
    snapshot: &'s Snapshot,
    pod: &Pod,
) -> Result<FeasibleNodes<'s>, FitError> {
    let num_all_nodes = snapshot.num_nodes();
    let mut diagnosis: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let state = match run_pre_filter_plugins(snapshot, pod) {
        Ok(s) => s,
        Err(msg) => {
            for n in snapshot.nodes() {
                diagnosis.insert(n.name().to_string(), vec![msg.clone()]);
            }
            return Err(FitError {
                num_all_nodes,
                diagnosis,
                pre_filter_msg: Some(msg),
            });
        }
    };
    let mut feasible = Vec::new();
    let mut evaluated = 0;
    for n in snapshot.nodes() {
        if state
            .node_names
            .as_ref()
            .is_some_and(|names| !names.contains(n.name()))
        {
            diagnosis.insert(
                n.name().to_string(),
                vec![format!(
                    "node(s) didn't satisfy plugin(s) [{NODE_AFFINITY}]"
                )],
            );
            continue;
        }
        evaluated += 1;
        match run_filter_plugins(snapshot, &state, pod, n) {
            Ok(volumes) => feasible.push(FeasibleNode { node: n, volumes }),
            Err(u) => {
                diagnosis.insert(n.name().to_string(), u.reasons);
            }
        }
    }
    if feasible.is_empty() {
        return Err(FitError {
            num_all_nodes,
            diagnosis,
            pre_filter_msg: None,
        });
    }
    Ok(FeasibleNodes {
        nodes: feasible,
        evaluated,
    })
}

/// The node with the highest total; among equals the smallest name (upstream
/// `selectHost` picks one of them at random).
pub fn select_host(scores: &[NodeScore]) -> Option<&NodeScore> {
    scores
        .iter()
        .fold(None, |best: Option<&NodeScore>, s| match best {
            Some(b) if b.total > s.total || (b.total == s.total && b.name <= s.name) => Some(b),
            _ => Some(s),
        })
}

/// Chooses a node for the pod (upstream `schedulePod`): the best of the nodes passing every
/// filter, or a [`FitError`] saying why none does ("no nodes available to schedule pods"
/// when there are no nodes at all).
pub fn schedule_pod(snapshot: &Snapshot, pod: &Pod) -> Result<ScheduleResult, FitError> {
    if snapshot.num_nodes() == 0 {
        return Err(FitError::default());
    }
    let FeasibleNodes {
        nodes: mut feasible,
        evaluated: evaluated_nodes,
    } = find_nodes_that_fit_pod(snapshot, pod)?;
    let feasible_nodes = feasible.len();
    let chosen = if feasible_nodes == 1 {
        // Upstream skips scoring when only one node is left.
        0
    } else {
        let nodes: Vec<&NodeInfo> = feasible.iter().map(|f| f.node).collect();
        let scores = prioritize_nodes(snapshot, pod, &nodes);
        let best = select_host(&scores)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        feasible
            .iter()
            .position(|f| f.node.name() == best)
            .unwrap_or(0)
    };
    let chosen = feasible.swap_remove(chosen);
    Ok(ScheduleResult {
        node_name: chosen.node.name().to_string(),
        evaluated_nodes,
        feasible_nodes,
        volumes: chosen.volumes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{
        NodeBuilder, PodBuilder, field_term, pv, pvc, requirement, storage_class, taint, term,
        toleration,
    };
    use crate::scheduler::volume_binding::NOT_SUPPORTED_PROVISIONER;
    use rekube_crds::Node;

    fn node(name: &str, cpu: &str) -> NodeBuilder {
        NodeBuilder::new(name).capacity(cpu, "64Gi")
    }

    fn snap(nodes: Vec<Node>, pods: Vec<Pod>) -> Snapshot {
        Snapshot::new(&nodes, &pods, &[], &[], &[])
    }

    fn cpu_pod(name: &str, cpu: &str) -> PodBuilder {
        PodBuilder::new(name).req(&[("cpu", cpu), ("memory", "64Mi")])
    }

    fn message(s: &Snapshot, pod: &Pod) -> String {
        schedule_pod(s, pod).unwrap_err().to_string()
    }

    #[test]
    fn no_nodes() {
        let s = snap(vec![], vec![]);
        assert_eq!(
            message(&s, &cpu_pod("p", "1").build()),
            "no nodes available to schedule pods"
        );
    }

    /// The issue's example: "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had
    /// untolerated taint {k: v}."
    #[test]
    fn fit_error_counts_first_failing_filter_per_node() {
        let gpu = || vec![taint("dedicated", "gpu", "NoSchedule")];
        let s = snap(
            vec![
                node("small", "1").build(),
                node("tainted", "8")
                    .taints(gpu())
                    .label("disk", "ssd")
                    .build(),
                // Tainted and too small: only the taint counts (TaintToleration runs first).
                node("zone-b", "1").taints(gpu()).build(),
            ],
            vec![],
        );
        assert_eq!(
            message(&s, &cpu_pod("big", "2").build()),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}."
        );
        let nowhere = cpu_pod("p", "100m")
            .node_selector(&[("disk", "tape")])
            .build();
        assert_eq!(
            message(&s, &nowhere),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) had untolerated taint {dedicated: gpu}."
        );
        let ssd = cpu_pod("ssd", "100m")
            .node_selector(&[("disk", "ssd")])
            .tolerations(vec![toleration("dedicated", "Equal", "gpu", "NoSchedule")])
            .build();
        let r = schedule_pod(&s, &ssd).unwrap();
        assert_eq!(
            (r.node_name.as_str(), r.evaluated_nodes, r.feasible_nodes),
            ("tainted", 3, 1)
        );
    }

    #[test]
    fn every_filter_reason_reaches_the_message() {
        let mut existing_port = PodBuilder::new("port")
            .host_ports(&["TCP//8080"])
            .node("ports")
            .build();
        existing_port.metadata.uid = Some("port".into());
        let s = snap(
            vec![
                node("cordoned", "4").unschedulable().build(),
                node("down", "4").ready(Some("False")).build(),
                node("full", "1").build(),
                node("ports", "4").build(),
                node("tainted", "4")
                    .taints(vec![taint("k", "v", "NoExecute")])
                    .build(),
                node("unlabeled", "4").no_labels().build(),
            ],
            vec![existing_port],
        );
        let pod = cpu_pod("p", "2")
            .host_ports(&["TCP//8080"])
            .required_terms(vec![term(vec![requirement(
                "kubernetes.io/hostname",
                "Exists",
                &[],
            )])])
            .build();
        assert_eq!(
            message(&s, &pod),
            "0/6 nodes are available: 1 Insufficient cpu, 1 node(s) didn't have free ports for the requested pod ports, \
             1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {k: v}, \
             1 node(s) were not ready, 1 node(s) were unschedulable."
        );
        let named = cpu_pod("p", "1").node("elsewhere").build();
        assert!(message(&s, &named).contains("node(s) didn't match the requested node name"));
    }

    #[test]
    fn node_resources_fit_reports_each_resource() {
        let s = snap(
            vec![
                NodeBuilder::new("n")
                    .allocatable(&[("cpu", "1"), ("memory", "1Gi"), ("pods", "1")])
                    .build(),
            ],
            vec![cpu_pod("x", "100m").node("n").build()],
        );
        let pod = PodBuilder::new("p")
            .req(&[("cpu", "2"), ("memory", "2Gi"), ("example.com/gpu", "1")])
            .build();
        assert_eq!(
            message(&s, &pod),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient example.com/gpu, 1 Insufficient memory, 1 Too many pods."
        );
    }

    #[test]
    fn prefilter_rejections() {
        let s = Snapshot::new(
            &[node("a", "4").build(), node("b", "4").build()],
            &[],
            &[],
            &[pvc("imm", "fast", "1Gi", None)],
            &[storage_class("fast", "Immediate", "x")],
        );
        assert_eq!(
            message(&s, &cpu_pod("p", "1").pvc("missing").build()),
            "0/2 nodes are available: persistentvolumeclaim \"missing\" not found."
        );
        let err = schedule_pod(&s, &cpu_pod("p", "1").pvc("imm").build()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."
        );
        assert_eq!(
            err.diagnosis.len(),
            2,
            "every node carries the PreFilter status"
        );
        let conflict = cpu_pod("p", "1")
            .required_terms(vec![field_term(vec![
                requirement("metadata.name", "In", &["a"]),
                requirement("metadata.name", "In", &["b"]),
            ])])
            .build();
        assert_eq!(
            message(&s, &conflict),
            "0/2 nodes are available: pod affinity terms conflict."
        );
    }

    #[test]
    fn node_affinity_node_names_narrow_the_nodes() {
        let s = snap(
            vec![
                node("a", "4").build(),
                node("b", "1").build(),
                node("c", "4").build(),
            ],
            vec![],
        );
        let pinned = |names: &[&str]| {
            cpu_pod("p", "2")
                .required_terms(vec![field_term(vec![requirement(
                    "metadata.name",
                    "In",
                    names,
                )])])
                .build()
        };
        let r = schedule_pod(&s, &pinned(&["c"])).unwrap();
        assert_eq!((r.node_name.as_str(), r.evaluated_nodes), ("c", 1));
        assert_eq!(
            message(&s, &pinned(&["b"])),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]."
        );
        assert_eq!(
            message(&s, &pinned(&["gone"])),
            "0/3 nodes are available: 3 node(s) didn't satisfy plugin(s) [NodeAffinity]."
        );
    }

    #[test]
    fn terminal_pods_free_their_resources() {
        let s = snap(
            vec![node("a", "1").build()],
            vec![cpu_pod("done", "1").node("a").phase("Succeeded").build()],
        );
        assert_eq!(
            schedule_pod(&s, &cpu_pod("p", "1").build())
                .unwrap()
                .node_name,
            "a"
        );
        let s = snap(
            vec![node("a", "1").build()],
            vec![cpu_pod("running", "1").node("a").build()],
        );
        assert_eq!(
            message(&s, &cpu_pod("p", "1").build()),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
    }

    #[test]
    fn ties_go_to_the_smallest_name() {
        let s = snap(
            vec![
                node("c", "4").build(),
                node("a", "4").build(),
                node("b", "4").build(),
            ],
            vec![],
        );
        let r = schedule_pod(&s, &cpu_pod("p", "1").build()).unwrap();
        assert_eq!(
            (r.node_name.as_str(), r.evaluated_nodes, r.feasible_nodes),
            ("a", 3, 3)
        );
        let scores = vec![
            NodeScore {
                name: "b".into(),
                scores: BTreeMap::new(),
                total: 5,
            },
            NodeScore {
                name: "a".into(),
                scores: BTreeMap::new(),
                total: 5,
            },
            NodeScore {
                name: "c".into(),
                scores: BTreeMap::new(),
                total: 4,
            },
        ];
        assert_eq!(select_host(&scores).unwrap().name, "a");
        assert!(select_host(&[]).is_none());
    }

    #[test]
    fn least_allocated_node_wins() {
        let s = snap(
            vec![node("a", "4").build(), node("b", "4").build()],
            vec![cpu_pod("filler", "3").node("a").build()],
        );
        assert_eq!(
            schedule_pod(&s, &cpu_pod("p", "100m").build())
                .unwrap()
                .node_name,
            "b"
        );
    }

    #[test]
    fn preferred_affinity_outweighs_free_room() {
        let s = snap(
            vec![
                node("a", "4").build(),
                node("b", "4").label("tier", "gold").build(),
            ],
            vec![cpu_pod("filler", "3").node("b").build()],
        );
        let picky = cpu_pod("p", "100m")
            .preferred(100, term(vec![requirement("tier", "In", &["gold"])]))
            .build();
        assert_eq!(schedule_pod(&s, &picky).unwrap().node_name, "b");
    }

    /// A burst of pods scheduled one after another with assume never overcommits a node,
    /// and pods of one controller spread.
    #[test]
    fn burst_with_assume_never_overcommits() {
        let mut s = snap(
            vec![node("n1", "2").build(), node("n2", "2").build()],
            vec![],
        );
        let mut placed: BTreeMap<String, usize> = BTreeMap::new();
        let mut unschedulable = 0;
        for i in 0..100 {
            let pod = cpu_pod(&format!("p{i}"), "50m")
                .controlled_by("ReplicaSet", "rs")
                .build();
            match schedule_pod(&s, &pod) {
                Ok(r) => {
                    s.assume(&pod, &r.node_name);
                    *placed.entry(r.node_name).or_default() += 1;
                }
                Err(e) => {
                    assert_eq!(
                        e.to_string(),
                        "0/2 nodes are available: 2 Insufficient cpu."
                    );
                    unschedulable += 1;
                }
            }
        }
        assert_eq!(
            placed,
            BTreeMap::from([("n1".to_string(), 40), ("n2".to_string(), 40)])
        );
        assert_eq!(unschedulable, 20);
        for n in s.nodes() {
            assert!(n.requested.milli_cpu <= n.allocatable.milli_cpu);
        }
    }

    #[test]
    fn pods_of_one_controller_spread() {
        let mut s = snap(vec![node("c", "4").build(), node("d", "4").build()], vec![]);
        let mut on: Vec<String> = Vec::new();
        for i in 0..4 {
            let pod = PodBuilder::new(&format!("s{i}"))
                .req(&[("cpu", "10m"), ("memory", "16Mi")])
                .controlled_by("ReplicaSet", "spread")
                .build();
            let r = schedule_pod(&s, &pod).unwrap();
            s.assume(&pod, &r.node_name);
            on.push(r.node_name);
        }
        assert_eq!(on, ["c", "d", "c", "d"]);
    }

    #[test]
    fn wait_for_first_consumer_claims_pin_the_node() {
        let s = Snapshot::new(
            &[node("a", "4").build(), node("b", "4").build()],
            &[],
            &[pv("pv-b", "local", "1Gi", Some("b"))],
            &[pvc("data", "local", "1Gi", None)],
            &[storage_class(
                "local",
                "WaitForFirstConsumer",
                NOT_SUPPORTED_PROVISIONER,
            )],
        );
        let r = schedule_pod(&s, &cpu_pod("p", "100m").pvc("data").build()).unwrap();
        assert_eq!(r.node_name, "b");
        assert_eq!(
            r.volumes.static_bindings,
            [("data".to_string(), "pv-b".to_string())]
        );
        assert!(r.volumes.dynamic_provisions.is_empty());
        assert_eq!(
            message(
                &s,
                &cpu_pod("p", "100m")
                    .pvc("data")
                    .node_selector(&[("kubernetes.io/hostname", "a")])
                    .build()
            ),
            "0/2 nodes are available: 1 node(s) didn't find available persistent volumes to bind, \
             1 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn bound_claims_pin_the_node() {
        let s = Snapshot::new(
            &[node("a", "4").build(), node("b", "4").build()],
            &[],
            &[pv("pv-a", "local", "1Gi", Some("a"))],
            &[pvc("data", "local", "1Gi", Some("pv-a"))],
            &[],
        );
        let r = schedule_pod(&s, &cpu_pod("p", "100m").pvc("data").build()).unwrap();
        assert_eq!((r.node_name.as_str(), r.volumes.is_empty()), ("a", true));
        let s = Snapshot::new(
            &[node("b", "4").build()],
            &[],
            &[pv("pv-a", "local", "1Gi", Some("a"))],
            &[pvc("data", "local", "1Gi", Some("pv-a"))],
            &[],
        );
        assert_eq!(
            message(&s, &cpu_pod("p", "100m").pvc("data").build()),
            "0/1 nodes are available: 1 node(s) had volume node affinity conflict."
        );
    }
}
