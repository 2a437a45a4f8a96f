//! The Score plugins: how good is each feasible node? Each gives 0..=100 (upstream
//! `MaxNodeScore`) after its normalization, and the total is the sum weighted as in
//! upstream's default profile (`pkg/scheduler/apis/config/v1/default_plugins.go`):
//! TaintToleration 3, NodeAffinity 2, NodeResourcesFit 1, PodTopologySpread 2,
//! NodeResourcesBalancedAllocation 1 (upstream:
//! `plugins/noderesources/{least_allocated,balanced_allocation,resource_allocation}.go`,
//! `plugins/nodeaffinity/node_affinity.go`, `plugins/tainttoleration/taint_toleration.go`,
//! `plugins/podtopologyspread/scoring.go`, `plugins/helper/normalize_score.go`).
//!
//! Not ported: InterPodAffinity (weight 2) and ImageLocality (weight 1) scores.
//!
//! Spreading: upstream spreads a pod with no topologySpreadConstraints by the system
//! default constraints (hostname maxSkew 3, zone maxSkew 5, ScheduleAnyway) over the pods
//! its Services, ReplicaSets, StatefulSets and ReplicationControllers select. The snapshot
//! has none of those, so the pods counted are those of the same namespace with the same
//! controller (ownerReference `controller: true`, same uid); a pod without controller is
//! not spread, as upstream skips a pod no owner selects. Explicit topologySpreadConstraints
//! are not honoured: a pod that has some is not spread at all (upstream uses them instead of
//! the defaults).
//!
//! Overflow: requests and allocatable reach the int64 bounds (`8Ei`); products and ratios are
//! computed in i128 and sums saturate, so scores stay upstream's wherever upstream's int64
//! does not wrap.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use rekube_crds::Pod;

use super::filters::tolerations_tolerate_taint;
use super::nodeaffinity::{RequiredNodeAffinity, has_preferred_terms, preferred_score};
use super::resources::{RESOURCE_CPU, RESOURCE_MEMORY, pod_resource_request_for_scoring};
use super::snapshot::{NodeInfo, Snapshot};
use crate::nodelifecycle::taints::TAINT_EFFECT_PREFER_NO_SCHEDULE;
use crate::util::claim::get_controller_of;

/// Upstream `framework.MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

pub const TAINT_TOLERATION_WEIGHT: i64 = 3;
pub const NODE_AFFINITY_WEIGHT: i64 = 2;
pub const NODE_RESOURCES_FIT_WEIGHT: i64 = 1;
pub const POD_TOPOLOGY_SPREAD_WEIGHT: i64 = 2;
pub const NODE_RESOURCES_BALANCED_ALLOCATION_WEIGHT: i64 = 1;

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
/// Upstream `podtopologyspread.systemDefaultConstraints`: (topology key, maxSkew).
pub const SYSTEM_DEFAULT_CONSTRAINTS: [(&str, i64); 2] =
    [(LABEL_HOSTNAME, 3), (LABEL_TOPOLOGY_ZONE, 5)];

/// Upstream `helper.DefaultNormalizeScore`: scales `[0, max]` to `[0, max_priority]`,
/// reversed when asked; all zeros stay zero (or all `max_priority` reversed).
pub fn default_normalize_score(max_priority: i64, reverse: bool, scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0).max(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = max_priority);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = i128::from(max_priority) * i128::from(*s) / i128::from(max);
        *s = saturate_i64(if reverse {
            i128::from(max_priority) - v
        } else {
            v
        });
    }
}

fn saturate_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Upstream `leastRequestedScore`: the unused share of the capacity, 0..=100 (in i128: a
/// capacity near `i64::MAX` must not overflow the product).
pub fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    let (requested, capacity) = (i128::from(requested), i128::from(capacity));
    saturate_i64((capacity - requested) * i128::from(MAX_NODE_SCORE) / capacity)
}

/// What the pod requests, as the resource scorers count it (upstream PreScore state of
/// NodeResourcesFit and NodeResourcesBalancedAllocation): [cpu millicores, memory].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoringRequests {
    /// With the 100m / 200Mi defaults for containers requesting none (LeastAllocated).
    pub non_zero: [i64; 2],
    /// As requested (BalancedAllocation).
    pub requested: [i64; 2],
}

impl ScoringRequests {
    pub fn of(pod: &Pod) -> ScoringRequests {
        let get = |r: &str, non_zero: bool| pod_resource_request_for_scoring(pod, r, non_zero);
        ScoringRequests {
            non_zero: [get(RESOURCE_CPU, true), get(RESOURCE_MEMORY, true)],
            requested: [get(RESOURCE_CPU, false), get(RESOURCE_MEMORY, false)],
        }
    }
}

/// NodeResourcesFit's LeastAllocated strategy, cpu and memory weighing 1 each: the mean
/// of the shares left free once the pod is added, counting every pod's non-zero requests
/// (upstream `leastResourceScorer` over `NonZeroRequested`); a resource the node has none
/// of is left out.
pub fn least_allocated(requests: &ScoringRequests, node: &NodeInfo) -> i64 {
    let alloc = [node.allocatable.milli_cpu, node.allocatable.memory];
    let used = [
        node.non_zero_requested.milli_cpu,
        node.non_zero_requested.memory,
    ];
    let (mut score, mut weights) = (0, 0);
    for i in 0..2 {
        if alloc[i] == 0 {
            continue;
        }
        let requested = used[i].saturating_add(requests.non_zero[i]);
        score = least_requested_score(requested, alloc[i]).saturating_add(score);
        weights += 1;
    }
    if weights == 0 { 0 } else { score / weights }
}

/// Upstream `balancedResourceScorer`: `(1 - std) * 100` of the requested/allocatable
/// fractions (each capped at 1), std being `|f1 - f2| / 2` for two resources.
pub fn balanced_resource_scorer(requested: &[i64], allocatable: &[i64]) -> i64 {
    let fractions: Vec<f64> = requested
        .iter()
        .zip(allocatable)
        .filter(|(_, a)| **a != 0)
        .map(|(r, a)| (*r as f64 / *a as f64).min(1.0))
        .collect();
    let std = match fractions.len() {
        2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
        n if n > 2 => {
            let mean = fractions.iter().sum::<f64>() / n as f64;
            (fractions
                .iter()
                .map(|f| (f - mean) * (f - mean))
                .sum::<f64>()
                / n as f64)
                .sqrt()
        }
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// NodeResourcesBalancedAllocation: favours nodes whose cpu and memory would be used in
/// equal shares, counting requests as they are; `None` (not scored) for a pod requesting
/// neither, as upstream skips best-effort pods.
pub fn balanced_allocation(requests: &ScoringRequests, node: &NodeInfo) -> Option<i64> {
    if requests.requested.iter().all(|r| *r == 0) {
        return None;
    }
    let alloc = [node.allocatable.milli_cpu, node.allocatable.memory];
    let used = [node.requested.milli_cpu, node.requested.memory];
    let mut requested = [0; 2];
    let mut allocatable = [0; 2];
    for i in 0..2 {
        if alloc[i] != 0 {
            allocatable[i] = alloc[i];
            requested[i] = used[i].saturating_add(requests.requested[i]);
        }
    }
    Some(balanced_resource_scorer(&requested, &allocatable))
}

fn tolerations_prefer_no_schedule(pod: &Pod) -> Vec<Toleration> {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == TAINT_EFFECT_PREFER_NO_SCHEDULE)
        })
        .cloned()
        .collect()
}

/// TaintToleration's raw score: the node's PreferNoSchedule taints the pod does not
/// tolerate (upstream `countIntolerableTaintsPreferNoSchedule`); normalized reversed.
pub fn intolerable_prefer_no_schedule_taints(tolerations: &[Toleration], node: &NodeInfo) -> i64 {
    node.taints()
        .iter()
        .filter(|t| t.effect == TAINT_EFFECT_PREFER_NO_SCHEDULE)
        .filter(|t| !tolerations_tolerate_taint(tolerations, t))
        .count() as i64
}

/// TaintToleration scores of the nodes, normalized: fewer intolerable PreferNoSchedule
/// taints, higher score.
pub fn taint_toleration_scores(pod: &Pod, nodes: &[&NodeInfo]) -> Vec<i64> {
    let tolerations = tolerations_prefer_no_schedule(pod);
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| intolerable_prefer_no_schedule_taints(&tolerations, n))
        .collect();
    default_normalize_score(MAX_NODE_SCORE, true, &mut scores);
    scores
}

/// NodeAffinity scores, normalized: the matched preferred terms' weights scaled so the
/// best node gets 100; `None` when the pod has no preferred terms (upstream skips).
pub fn node_affinity_scores(pod: &Pod, nodes: &[&NodeInfo]) -> Option<Vec<i64>> {
    if !has_preferred_terms(pod) {
        return None;
    }
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| preferred_score(pod, &n.node))
        .collect();
    default_normalize_score(MAX_NODE_SCORE, false, &mut scores);
    Some(scores)
}

/// Upstream `topologyNormalizingWeight`: ln(size + 2).
fn topology_normalizing_weight(size: usize) -> f64 {
    ((size + 2) as f64).ln()
}

/// Upstream `scoreForCount`.
fn score_for_count(count: i64, max_skew: i64, weight: f64) -> f64 {
    count as f64 * weight + (max_skew - 1) as f64
}

/// The pods on the node that spread with the pod: same namespace, same controller, not
/// terminating (upstream `countPodsMatchSelector`).
fn count_spread_pods(node: &NodeInfo, namespace: &str, owner_uid: &str) -> i64 {
    node.pods
        .iter()
        .filter(|p| {
            let m = &p.pod.metadata;
            m.deletion_timestamp.is_none()
                && m.namespace.as_deref().unwrap_or_default() == namespace
                && get_controller_of(m).is_some_and(|o| o.uid == owner_uid)
        })
        .count() as i64
}

/// PodTopologySpread scores with the system default constraints, normalized so that the
/// nodes with the fewest pods of the pod's controller get 100 (upstream PreScore, Score and
/// NormalizeScore, `requireAllTopologies` false); `None` for a pod without controller.
pub fn pod_topology_spread_scores(
    snapshot: &Snapshot,
    pod: &Pod,
    nodes: &[&NodeInfo],
) -> Option<Vec<i64>> {
    let explicit = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty());
    if explicit {
        return None;
    }
    let owner_uid = get_controller_of(&pod.metadata)?.uid.as_str();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let label = |n: &NodeInfo, key: &str| n.labels().and_then(|l| l.get(key)).cloned();

    // Per non-hostname constraint: topology value → matching pods, over the values the
    // feasible nodes have.
    let mut counts: Vec<BTreeMap<String, i64>> =
        vec![BTreeMap::new(); SYSTEM_DEFAULT_CONSTRAINTS.len()];
    for n in nodes {
        for (i, (key, _)) in SYSTEM_DEFAULT_CONSTRAINTS.iter().enumerate() {
            if *key != LABEL_HOSTNAME {
                counts[i]
                    .entry(label(n, key).unwrap_or_default())
                    .or_insert(0);
            }
        }
    }
    let weights: Vec<f64> = SYSTEM_DEFAULT_CONSTRAINTS
        .iter()
        .enumerate()
        .map(|(i, (key, _))| {
            let size = if *key == LABEL_HOSTNAME {
                nodes.len()
            } else {
                counts[i].len()
            };
            topology_normalizing_weight(size)
        })
        .collect();
    let affinity = RequiredNodeAffinity::of(pod);
    for n in snapshot.nodes() {
        if !affinity.matches(&n.node) {
            continue;
        }
        for (i, (key, _)) in SYSTEM_DEFAULT_CONSTRAINTS.iter().enumerate() {
            if *key == LABEL_HOSTNAME {
                continue;
            }
            if let Some(c) = counts[i].get_mut(&label(n, key).unwrap_or_default()) {
                *c += count_spread_pods(n, namespace, owner_uid);
            }
        }
    }
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            let mut score = 0.0;
            for (i, (key, max_skew)) in SYSTEM_DEFAULT_CONSTRAINTS.iter().enumerate() {
                let Some(value) = label(n, key) else { continue };
                let count = if *key == LABEL_HOSTNAME {
                    count_spread_pods(n, namespace, owner_uid)
                } else {
                    counts[i].get(&value).copied().unwrap_or(0)
                };
                score += score_for_count(count, *max_skew, weights[i]);
            }
            score.round() as i64
        })
        .collect();
    let min = scores.iter().copied().min().unwrap_or(0);
    let max = scores.iter().copied().max().unwrap_or(0).max(0);
    for s in scores.iter_mut() {
        *s = if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE * (max + min - *s) / max
        };
    }
    Some(scores)
}

/// A node's scores: per plugin (after normalization, before weighting) and the weighted
/// total (upstream `framework.NodePluginScores`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeScore {
    pub name: String,
    pub scores: BTreeMap<&'static str, i64>,
    pub total: i64,
}

/// Scores every feasible node with every plugin and sums them weighted (upstream
/// `prioritizeNodes` / `RunScorePlugins`); a skipped plugin adds nothing.
pub fn prioritize_nodes(snapshot: &Snapshot, pod: &Pod, nodes: &[&NodeInfo]) -> Vec<NodeScore> {
    let requests = ScoringRequests::of(pod);
    let mut plugins: Vec<(&'static str, i64, Vec<i64>)> = vec![
        (
            "TaintToleration",
            TAINT_TOLERATION_WEIGHT,
            taint_toleration_scores(pod, nodes),
        ),
        (
            "NodeResourcesFit",
            NODE_RESOURCES_FIT_WEIGHT,
            nodes
                .iter()
                .map(|n| least_allocated(&requests, n))
                .collect(),
        ),
    ];
    if let Some(s) = node_affinity_scores(pod, nodes) {
        plugins.push(("NodeAffinity", NODE_AFFINITY_WEIGHT, s));
    }
    if let Some(s) = pod_topology_spread_scores(snapshot, pod, nodes) {
        plugins.push(("PodTopologySpread", POD_TOPOLOGY_SPREAD_WEIGHT, s));
    }
    let balanced: Option<Vec<i64>> = nodes
        .iter()
        .map(|n| balanced_allocation(&requests, n))
        .collect();
    if let Some(s) = balanced {
        plugins.push((
            "NodeResourcesBalancedAllocation",
            NODE_RESOURCES_BALANCED_ALLOCATION_WEIGHT,
            s,
        ));
    }
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let scores: BTreeMap<&'static str, i64> =
                plugins.iter().map(|(name, _, s)| (*name, s[i])).collect();
            let total = plugins.iter().fold(0i64, |t, (_, w, s)| {
                t.saturating_add(w.saturating_mul(s[i]))
            });
            NodeScore {
                name: n.name().to_string(),
                scores,
                total,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests: one tuple per case
mod tests {
    use super::*;
    use crate::scheduler::testing::{
        NodeBuilder, PodBuilder, container, requirement, taint, term, toleration,
    };
    use rekube_crds::Node;

    fn snap(nodes: Vec<Node>, pods: Vec<Pod>) -> Snapshot {
        Snapshot::new(&nodes, &pods, &[], &[], &[])
    }

    fn all(s: &Snapshot) -> Vec<&NodeInfo> {
        s.nodes().iter().collect()
    }

    /// Two-container pod `{cpu1, mem1}`, `{cpu2, mem2}` (upstream st.MakePod().Req().Req()).
    fn pod2(c1: (&str, &str), c2: (&str, &str)) -> PodBuilder {
        PodBuilder::new("p")
            .req(&[("cpu", c1.0), ("memory", c1.1)])
            .req(&[("cpu", c2.0), ("memory", c2.1)])
    }

    fn on(node: &str, name: &str, cpu: &str, mem: &str) -> Pod {
        PodBuilder::new(name)
            .req(&[("cpu", cpu), ("memory", mem)])
            .node(node)
            .build()
    }

    fn node(name: &str, cpu: &str, mem: &str) -> Node {
        NodeBuilder::new(name).capacity(cpu, mem).build()
    }

    #[test]
    fn normalize_score_table() {
        // Upstream normalize_score_test.go TestDefaultNormalizeScore.
        let cases: &[(bool, &[i64], &[i64])] = &[
            (false, &[10, 20, 30, 40, 50], &[20, 40, 60, 80, 100]),
            (true, &[10, 20, 30, 40, 50], &[80, 60, 40, 20, 0]),
            (false, &[1000, 10, 20, 30, 40, 50], &[100, 1, 2, 3, 4, 5]),
            (true, &[1000, 10, 20, 30, 40, 50], &[0, 99, 98, 97, 96, 95]),
            (false, &[1, 1, 1, 1], &[100, 100, 100, 100]),
            (true, &[1, 1, 1, 1], &[0, 0, 0, 0]),
            (false, &[0, 0, 0, 0], &[0, 0, 0, 0]),
            (true, &[0, 0, 0, 0], &[100, 100, 100, 100]),
        ];
        for (reverse, input, want) in cases {
            let mut s = input.to_vec();
            default_normalize_score(MAX_NODE_SCORE, *reverse, &mut s);
            assert_eq!(s, *want, "{input:?} reverse={reverse}");
        }
    }

    /// Upstream least_allocated_test.go TestLeastAllocatedScoringStrategy.
    #[test]
    fn least_allocated_table() {
        let cases: Vec<(&str, Pod, Vec<Node>, Vec<Pod>, Vec<i64>)> = vec![
            (
                "nothing scheduled, nothing requested",
                PodBuilder::new("p").build(),
                vec![
                    node("node1", "4000", "10000"),
                    node("node2", "4000", "10000"),
                ],
                vec![],
                vec![100, 100],
            ),
            (
                "nothing scheduled, resources requested, differently sized nodes",
                pod2(("1000", "2000"), ("2000", "3000")).build(),
                vec![
                    node("node1", "4000", "10000"),
                    node("node2", "6000", "10000"),
                ],
                vec![],
                vec![37, 50],
            ),
            (
                "no resources requested, pods scheduled",
                PodBuilder::new("p").build(),
                vec![
                    node("node1", "4000", "10000"),
                    node("node2", "4000", "10000"),
                ],
                vec![
                    PodBuilder::new("a").node("node1").build(),
                    PodBuilder::new("b").node("node1").build(),
                    PodBuilder::new("c").node("node2").build(),
                    PodBuilder::new("d").node("node2").build(),
                ],
                vec![100, 100],
            ),
            (
                "no resources requested, pods scheduled with resources",
                PodBuilder::new("p").build(),
                vec![
                    node("node1", "10000", "20000"),
                    node("node2", "10000", "20000"),
                ],
                vec![
                    on("node1", "a", "3000", "0"),
                    on("node1", "b", "3000", "0"),
                    on("node2", "c", "3000", "0"),
                    on("node2", "d", "3000", "5000"),
                ],
                vec![70, 57],
            ),
            (
                "resources requested, pods scheduled with resources",
                pod2(("1000", "2000"), ("2000", "3000")).build(),
                vec![
                    node("node1", "10000", "20000"),
                    node("node2", "10000", "20000"),
                ],
                vec![
                    on("node1", "a", "3000", "0"),
                    on("node2", "b", "3000", "5000"),
                ],
                vec![57, 45],
            ),
            (
                "resources requested, pods scheduled with resources, differently sized nodes",
                pod2(("1000", "2000"), ("2000", "3000")).build(),
                vec![
                    node("node1", "10000", "20000"),
                    node("node2", "10000", "50000"),
                ],
                vec![
                    on("node1", "a", "3000", "0"),
                    on("node2", "b", "3000", "5000"),
                ],
                vec![57, 60],
            ),
            (
                "requested resources exceed node capacity",
                PodBuilder::new("p")
                    .req(&[("cpu", "3000"), ("memory", "0")])
                    .build(),
                vec![
                    node("node1", "4000", "10000"),
                    node("node2", "4000", "10000"),
                ],
                vec![
                    on("node1", "a", "3000", "0"),
                    on("node2", "b", "3000", "5000"),
                ],
                vec![50, 25],
            ),
            (
                "zero node resources, pods scheduled with resources",
                PodBuilder::new("p").build(),
                vec![
                    NodeBuilder::new("node1").build(),
                    NodeBuilder::new("node2").build(),
                ],
                vec![
                    on("node1", "a", "3000", "0"),
                    on("node2", "b", "3000", "5000"),
                ],
                vec![0, 0],
            ),
            (
                "a request-less container counts 100m and 200Mi",
                PodBuilder::new("p")
                    .containers(vec![container("c", &[])])
                    .build(),
                // cpu (1000-100)/1000 = 90, memory (400-200)/400 = 50 → 70.
                vec![node("node1", "1", "400Mi")],
                vec![],
                vec![70],
            ),
        ];
        for (name, pod, nodes, pods, want) in cases {
            let s = snap(nodes, pods);
            let r = ScoringRequests::of(&pod);
            let got: Vec<i64> = s.nodes().iter().map(|n| least_allocated(&r, n)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    /// Upstream balanced_allocation_test.go TestNodeResourcesBalancedAllocation, with the
    /// current formula (std = |f1 - f2| / 2) and best-effort pods skipped.
    #[test]
    fn balanced_allocation_table() {
        let cpu_and_memory = || pod2(("1000m", "2000"), ("2000m", "3000"));
        let cpu_only = |n: &str, node: &str| {
            PodBuilder::new(n)
                .req(&[("cpu", "1000m"), ("memory", "0")])
                .req(&[("cpu", "2000m"), ("memory", "0")])
                .node(node)
                .build()
        };
        let cpu_and_memory_on = |n: &str, node: &str| {
            PodBuilder::new(n)
                .req(&[("cpu", "1000m"), ("memory", "2000")])
                .req(&[("cpu", "2000m"), ("memory", "3000")])
                .node(node)
                .build()
        };
        let cases: Vec<(&str, Pod, Vec<Node>, Vec<Pod>, Option<[i64; 2]>)> = vec![
            (
                "nothing scheduled, nothing requested: skipped",
                PodBuilder::new("p").build(),
                vec![
                    node("machine1", "4", "10000"),
                    node("machine2", "4", "10000"),
                ],
                vec![],
                None,
            ),
            (
                // cpu 3/4 = .75, mem .5 → std .125 → 87; machine2 .5, .5 → 100.
                "nothing scheduled, resources requested, differently sized machines",
                cpu_and_memory().build(),
                vec![
                    node("machine1", "4", "10000"),
                    node("machine2", "6", "10000"),
                ],
                vec![],
                Some([87, 100]),
            ),
            (
                // machine1: cpu 6/10, mem 5000/20000 → std .175 → 82; machine2: .6, .5 → 95.
                "resources requested, pods scheduled with resources",
                cpu_and_memory().build(),
                vec![
                    node("machine1", "10", "20000"),
                    node("machine2", "10", "20000"),
                ],
                vec![
                    cpu_only("a", "machine1"),
                    cpu_and_memory_on("b", "machine2"),
                ],
                Some([82, 95]),
            ),
            (
                // machine2: .6, 10000/50000 = .2 → std .2 → 80.
                "resources requested, pods scheduled with resources, differently sized machines",
                cpu_and_memory().build(),
                vec![
                    node("machine1", "10", "20000"),
                    node("machine2", "10", "50000"),
                ],
                vec![
                    cpu_only("a", "machine1"),
                    cpu_and_memory_on("b", "machine2"),
                ],
                Some([82, 80]),
            ),
            (
                // machine1: cpu 6/4 capped 1, mem 0 → 50; machine2: 1, .5 → 75.
                "requested resources exceed node capacity",
                cpu_only("p", ""),
                vec![
                    node("machine1", "4", "10000"),
                    node("machine2", "4", "10000"),
                ],
                vec![
                    cpu_only("a", "machine1"),
                    cpu_and_memory_on("b", "machine2"),
                ],
                Some([50, 75]),
            ),
            (
                "zero node resources",
                cpu_only("p", ""),
                vec![
                    NodeBuilder::new("machine1").build(),
                    NodeBuilder::new("machine2").build(),
                ],
                vec![cpu_only("a", "machine1")],
                Some([100, 100]),
            ),
        ];
        for (name, mut pod, nodes, pods, want) in cases {
            pod.spec.as_mut().unwrap().node_name = None;
            let s = snap(nodes, pods);
            let r = ScoringRequests::of(&pod);
            let got: Option<Vec<i64>> = s
                .nodes()
                .iter()
                .map(|n| balanced_allocation(&r, n))
                .collect();
            assert_eq!(got, want.map(|w| w.to_vec()), "{name}");
        }
        assert_eq!(
            balanced_resource_scorer(&[1, 2, 3], &[4, 4, 4]),
            79,
            "three resources: std of .25/.5/.75"
        );
    }

    /// Upstream taint_toleration_test.go TestTaintTolerationScore.
    #[test]
    fn taint_toleration_score_table() {
        let pns = "PreferNoSchedule";
        let cases: Vec<(
            &str,
            Vec<Toleration>,
            Vec<Vec<k8s_openapi::api::core::v1::Taint>>,
            Vec<i64>,
        )> = vec![
            (
                "node with taints tolerated by the pod, gets a higher score than those node with intolerable taints",
                vec![toleration("foo", "Equal", "bar", pns)],
                vec![
                    vec![taint("foo", "bar", pns)],
                    vec![taint("foo", "blah", pns)],
                ],
                vec![100, 0],
            ),
            (
                "the nodes that all of their taints are tolerated by the pod, get the same score, no matter how many tolerable taints a node has",
                vec![
                    toleration("cpu-type", "Equal", "arm64", pns),
                    toleration("disk-type", "Equal", "ssd", pns),
                ],
                vec![
                    vec![],
                    vec![taint("cpu-type", "arm64", pns)],
                    vec![
                        taint("cpu-type", "arm64", pns),
                        taint("disk-type", "ssd", pns),
                    ],
                ],
                vec![100, 100, 100],
            ),
            (
                "the more intolerable taints a node has, the lower score it gets.",
                vec![toleration("foo", "Equal", "bar", pns)],
                vec![
                    vec![],
                    vec![taint("cpu-type", "arm64", pns)],
                    vec![
                        taint("cpu-type", "arm64", pns),
                        taint("disk-type", "ssd", pns),
                    ],
                ],
                vec![100, 50, 0],
            ),
            (
                "only taints and tolerations that have effect PreferNoSchedule are checked by prioritize function",
                vec![
                    toleration("cpu-type", "Equal", "arm64", "NoSchedule"),
                    toleration("disk-type", "Equal", "ssd", "NoSchedule"),
                ],
                vec![
                    vec![],
                    vec![taint("cpu-type", "arm64", "NoSchedule")],
                    vec![
                        taint("cpu-type", "arm64", pns),
                        taint("disk-type", "ssd", pns),
                    ],
                ],
                vec![100, 100, 0],
            ),
            (
                "Default behaviour No taints and tolerations, lands on node with no taints",
                vec![],
                vec![vec![], vec![taint("cpu-type", "arm64", pns)]],
                vec![100, 0],
            ),
        ];
        for (name, tolerations, taints, want) in cases {
            let nodes = taints
                .into_iter()
                .enumerate()
                .map(|(i, t)| NodeBuilder::new(&format!("node{i}")).taints(t).build())
                .collect();
            let s = snap(nodes, vec![]);
            let pod = PodBuilder::new("p").tolerations(tolerations).build();
            assert_eq!(taint_toleration_scores(&pod, &all(&s)), want, "{name}");
        }
    }

    /// Upstream node_affinity_test.go TestNodeAffinityPriority.
    #[test]
    fn node_affinity_score_table() {
        let affinity1 =
            |b: PodBuilder| b.preferred(2, term(vec![requirement("foo", "In", &["bar"])]));
        let affinity2 = |b: PodBuilder| {
            b.preferred(2, term(vec![requirement("foo", "In", &["bar"])]))
                .preferred(4, term(vec![requirement("key", "In", &["value"])]))
                .preferred(
                    5,
                    term(vec![
                        requirement("foo", "In", &["bar"]),
                        requirement("key", "In", &["value"]),
                        requirement("az", "In", &["az1"]),
                    ]),
                )
        };
        let labeled = |name: &str, labels: &[(&str, &str)]| {
            let mut b = NodeBuilder::new(name).no_labels();
            for (k, v) in labels {
                b = b.label(k, v);
            }
            b.build()
        };
        let l1: &[(&str, &str)] = &[("foo", "bar")];
        let l2: &[(&str, &str)] = &[("key", "value")];
        let l3: &[(&str, &str)] = &[("az", "az1")];
        let l4: &[(&str, &str)] = &[("abc", "az11"), ("def", "az22")];
        let l5: &[(&str, &str)] = &[("foo", "bar"), ("key", "value"), ("az", "az1")];
        let cases: Vec<(&str, Pod, Vec<Node>, Option<Vec<i64>>)> = vec![
            (
                "all nodes are same priority as NodeAffinity is nil",
                PodBuilder::new("p").build(),
                vec![
                    labeled("node1", l1),
                    labeled("node2", l2),
                    labeled("node3", l3),
                ],
                None,
            ),
            (
                "no node matches preferred scheduling requirements in NodeAffinity of pod so all nodes' priority is zero",
                affinity1(PodBuilder::new("p")).build(),
                vec![
                    labeled("node1", l4),
                    labeled("node2", l2),
                    labeled("node3", l3),
                ],
                Some(vec![0, 0, 0]),
            ),
            (
                "only node1 matches the preferred scheduling requirements of pod",
                affinity1(PodBuilder::new("p")).build(),
                vec![
                    labeled("node1", l1),
                    labeled("node2", l2),
                    labeled("node3", l3),
                ],
                Some(vec![100, 0, 0]),
            ),
            (
                "all nodes matches the preferred scheduling requirements of pod but with different priorities",
                affinity2(PodBuilder::new("p")).build(),
                vec![
                    labeled("node1", l1),
                    labeled("node2", l2),
                    labeled("node5", l5),
                ],
                Some(vec![18, 36, 100]),
            ),
        ];
        for (name, pod, nodes, want) in cases {
            let s = snap(nodes, vec![]);
            assert_eq!(node_affinity_scores(&pod, &all(&s)), want, "{name}");
        }
    }

    fn owned(name: &str, node: &str, owner: &str) -> Pod {
        PodBuilder::new(name)
            .controlled_by("ReplicaSet", owner)
            .node(node)
            .build()
    }

    #[test]
    fn pod_topology_spread_table() {
        let nodes = || {
            vec![
                node("a", "4", "8Gi"),
                node("b", "4", "8Gi"),
                node("c", "4", "8Gi"),
            ]
        };
        let pod = PodBuilder::new("p")
            .controlled_by("ReplicaSet", "rs1")
            .build();
        // Hostname only (no zone labels): weight ln(3 + 2) ≈ 1.609, maxSkew 3 → +2.
        let cases: Vec<(&str, Pod, Vec<Node>, Vec<Pod>, Option<Vec<i64>>)> = vec![
            (
                "no controller: not spread",
                PodBuilder::new("p").build(),
                nodes(),
                vec![],
                None,
            ),
            (
                "explicit constraints: not spread (not honoured)",
                {
                    let mut p = pod.clone();
                    p.spec.as_mut().unwrap().topology_spread_constraints =
                        Some(vec![k8s_openapi::api::core::v1::TopologySpreadConstraint {
                            max_skew: 1,
                            topology_key: LABEL_HOSTNAME.into(),
                            when_unsatisfiable: "ScheduleAnyway".into(),
                            ..Default::default()
                        }]);
                    p
                },
                nodes(),
                vec![owned("x", "a", "rs1")],
                None,
            ),
            (
                "no pods yet: all equal",
                pod.clone(),
                nodes(),
                vec![],
                Some(vec![100, 100, 100]),
            ),
            (
                // raw a: 1.609 + 2 → 4, b, c: 2 → a 100·(4+2-4)/4 = 50.
                "one pod on a",
                pod.clone(),
                nodes(),
                vec![owned("x", "a", "rs1")],
                Some(vec![50, 100, 100]),
            ),
            (
                // a: 2·1.609+2 → 5, b: 4, c: 2 → a 100·2/5 = 40, b 60, c 100.
                "fewer pods, higher score",
                pod.clone(),
                nodes(),
                vec![
                    owned("x", "a", "rs1"),
                    owned("y", "a", "rs1"),
                    owned("z", "b", "rs1"),
                ],
                Some(vec![40, 60, 100]),
            ),
            (
                "other owners and namespaces do not count",
                pod.clone(),
                nodes(),
                vec![
                    owned("x", "a", "rs2"),
                    PodBuilder::new("y")
                        .namespace("other")
                        .controlled_by("ReplicaSet", "rs1")
                        .node("a")
                        .build(),
                    PodBuilder::new("z").node("a").build(),
                ],
                Some(vec![100, 100, 100]),
            ),
            (
                // Zones: a, b in z1, c in z2. Weights: hostname ln 5, zone ln 4 ≈ 1.386.
                // a: 1·1.609+2 + 1·1.386+4 = 8.995 → 9; b: 2 + 5.386 → 7; c: 2 + 4 = 6.
                // → a 100·(9+6-9)/9 = 66, b 88, c 100.
                "zones spread too",
                pod.clone(),
                vec![
                    NodeBuilder::new("a")
                        .capacity("4", "8Gi")
                        .label(LABEL_TOPOLOGY_ZONE, "z1")
                        .build(),
                    NodeBuilder::new("b")
                        .capacity("4", "8Gi")
                        .label(LABEL_TOPOLOGY_ZONE, "z1")
                        .build(),
                    NodeBuilder::new("c")
                        .capacity("4", "8Gi")
                        .label(LABEL_TOPOLOGY_ZONE, "z2")
                        .build(),
                ],
                vec![owned("x", "a", "rs1")],
                Some(vec![66, 88, 100]),
            ),
        ];
        for (name, pod, nodes, pods, want) in cases {
            let s = snap(nodes, pods);
            assert_eq!(
                pod_topology_spread_scores(&s, &pod, &all(&s)),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn spread_counts_only_nodes_matching_the_pods_affinity() {
        // Zone z1 has a (matching) and b (not matching, with two pods of the owner).
        let s = snap(
            vec![
                NodeBuilder::new("a")
                    .capacity("4", "8Gi")
                    .label(LABEL_TOPOLOGY_ZONE, "z1")
                    .label("pool", "x")
                    .build(),
                NodeBuilder::new("b")
                    .capacity("4", "8Gi")
                    .label(LABEL_TOPOLOGY_ZONE, "z1")
                    .build(),
                NodeBuilder::new("c")
                    .capacity("4", "8Gi")
                    .label(LABEL_TOPOLOGY_ZONE, "z2")
                    .label("pool", "x")
                    .build(),
            ],
            vec![owned("x", "b", "rs1"), owned("y", "b", "rs1")],
        );
        let pod = PodBuilder::new("p")
            .controlled_by("ReplicaSet", "rs1")
            .node_selector(&[("pool", "x")])
            .build();
        let feasible: Vec<&NodeInfo> = vec![s.node("a").unwrap(), s.node("c").unwrap()];
        assert_eq!(
            pod_topology_spread_scores(&s, &pod, &feasible),
            Some(vec![100, 100])
        );
    }

    #[test]
    fn prioritize_nodes_weights() {
        let s = snap(
            vec![
                NodeBuilder::new("a")
                    .capacity("4", "8Gi")
                    .taints(vec![taint("k", "v", "PreferNoSchedule")])
                    .build(),
                NodeBuilder::new("b")
                    .capacity("4", "8Gi")
                    .label("tier", "gold")
                    .build(),
            ],
            vec![],
        );
        let pod = PodBuilder::new("p")
            .req(&[("cpu", "1"), ("memory", "2Gi")])
            .preferred(10, term(vec![requirement("tier", "In", &["gold"])]))
            .build();
        let scores = prioritize_nodes(&s, &pod, &all(&s));
        // a: taint 0·3, fit (75+75)/2 = 75·1, affinity 0·2, balanced 100·1 → 175.
        // b: taint 100·3, fit 75, affinity 100·2, balanced 100 → 675.
        assert_eq!(scores[0].total, 175, "{scores:?}");
        assert_eq!(scores[1].total, 675, "{scores:?}");
        assert_eq!(
            scores[1].scores,
            BTreeMap::from([
                ("NodeAffinity", 100),
                ("NodeResourcesBalancedAllocation", 100),
                ("NodeResourcesFit", 75),
                ("TaintToleration", 100),
            ])
        );
    }

    // --- Overflow: capacities and totals at int64's max.

    #[test]
    fn overflow_scores_saturate() {
        assert_eq!(least_requested_score(0, i64::MAX), 100);
        assert_eq!(least_requested_score(i64::MAX / 2, i64::MAX), 50);
        assert_eq!(least_requested_score(i64::MAX, i64::MAX), 0);
        let mut s = [i64::MAX, i64::MAX / 2, 0];
        default_normalize_score(MAX_NODE_SCORE, false, &mut s);
        assert_eq!(s, [100, 49, 0]);
        let mut s = [i64::MAX, i64::MAX / 2, 0];
        default_normalize_score(MAX_NODE_SCORE, true, &mut s);
        assert_eq!(s, [0, 51, 100]);

        // A node whose memory is all requested (two 5Ei pods on 8Ei, the total saturated):
        // adding the pod's request saturates instead of wrapping to a free-looking node.
        let node = NodeBuilder::new("n")
            .allocatable(&[
                ("cpu", "9223372036854775807m"),
                ("memory", "8Ei"),
                ("pods", "110"),
            ])
            .build();
        let hog = |name: &str| {
            PodBuilder::new(name)
                .req(&[("cpu", "1"), ("memory", "5Ei")])
                .node("n")
                .build()
        };
        let s = snap(vec![node], vec![hog("h1"), hog("h2")]);
        let n = &s.nodes()[0];
        let pod = PodBuilder::new("p")
            .req(&[("cpu", "1"), ("memory", "1")])
            .build();
        let requests = ScoringRequests::of(&pod);
        // cpu: (MAX − 3000) × 100 / MAX = 99; memory: full, 0.
        assert_eq!(least_allocated(&requests, n), 49);
        // fractions ≈ 0 and 1: std 0.5.
        assert_eq!(balanced_allocation(&requests, n), Some(50));
        let scored = prioritize_nodes(&s, &pod, &[n]);
        assert_eq!(scored[0].scores.get("NodeResourcesFit"), Some(&49));
    }

    proptest::proptest! {
        /// The score arithmetic never panics on any int64 input, and stays within 0..=100
        /// where upstream's does.
        #[test]
        fn overflow_score_arithmetic_never_panics(
            requested in proptest::prelude::any::<i64>(),
            capacity in proptest::prelude::any::<i64>(),
            raw in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..6),
            reverse in proptest::prelude::any::<bool>(),
            used in proptest::prelude::any::<[i64; 2]>(),
            alloc in proptest::prelude::any::<[i64; 2]>(),
        ) {
            let s = least_requested_score(requested, capacity);
            if capacity > 0 && (0..=capacity).contains(&requested) {
                proptest::prop_assert!((0..=MAX_NODE_SCORE).contains(&s), "{}", s);
            }
            let mut scores = raw.clone();
            default_normalize_score(MAX_NODE_SCORE, reverse, &mut scores);
            if raw.iter().all(|v| *v >= 0) {
                proptest::prop_assert!(scores.iter().all(|v| (0..=MAX_NODE_SCORE).contains(v)), "{:?}", scores);
            }
            let _ = balanced_resource_scorer(&used, &alloc);
        }
    }
}
