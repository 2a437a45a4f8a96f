//! Node selectors and node affinity matching (upstream:
//! `k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity.go` and
//! `MatchTopologySelectorTerms` of `component-helpers/scheduling/corev1/helpers.go`), used by
//! the NodeAffinity filter and score, the default topology spreading and PV node affinity.
//!
//! A term that does not parse (unknown operator, `In` without values, a non-integer `Gt`
//! value, a `matchFields` requirement without exactly one value) matches no node, as
//! upstream's lazy-error selector; upstream's score plugin instead fails the pod's cycle on
//! an unparsable preferred term, here such a term is only skipped.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, TopologySelectorTerm};
use rekube_crds::{Node, Pod};

use crate::util::labels::{Operator, Requirement, set_matches};

/// The only node field selectable by `matchFields` (upstream `metav1.ObjectNameField`).
pub const OBJECT_NAME_FIELD: &str = "metadata.name";

fn operator(op: &str) -> Option<Operator> {
    Some(match op {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        _ => return None,
    })
}

fn label_requirements(exprs: &[NodeSelectorRequirement]) -> Option<Vec<Requirement>> {
    exprs
        .iter()
        .map(|e| {
            Requirement::new(
                e.key.clone(),
                operator(&e.operator)?,
                e.values.clone().unwrap_or_default(),
            )
            .ok()
        })
        .collect()
}

/// `matchFields` as (key, value, equal) triples: `In` and `NotIn` with one value only.
fn field_requirements(exprs: &[NodeSelectorRequirement]) -> Option<Vec<(&str, &str, bool)>> {
    exprs
        .iter()
        .map(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let [value] = values else { return None };
            match e.operator.as_str() {
                "In" => Some((e.key.as_str(), value.as_str(), true)),
                "NotIn" => Some((e.key.as_str(), value.as_str(), false)),
                _ => None,
            }
        })
        .collect()
}

fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    term.match_expressions
        .as_deref()
        .unwrap_or_default()
        .is_empty()
        && term.match_fields.as_deref().unwrap_or_default().is_empty()
}

/// Whether a node with these labels and this name matches the term (upstream
/// `nodeSelectorTerm.match`); an unparsable or empty term matches nothing. An empty `name`
/// (a node known by its labels only) skips `matchFields`, as upstream's empty field set.
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: Option<&BTreeMap<String, String>>,
    name: &str,
) -> bool {
    if is_empty_term(term) {
        return false;
    }
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    let labels = labels.unwrap_or(&EMPTY);
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    let (Some(label_reqs), Some(field_reqs)) =
        (label_requirements(exprs), field_requirements(fields))
    else {
        return false;
    };
    if !label_reqs.iter().all(|r| r.matches(labels)) {
        return false;
    }
    if name.is_empty() || field_reqs.is_empty() {
        return true;
    }
    field_reqs.iter().all(|(key, value, equal)| {
        let have = if *key == OBJECT_NAME_FIELD { name } else { "" };
        (have == *value) == *equal
    })
}

/// Whether any term matches (upstream `MatchNodeSelectorTerms` / `NodeSelector.Match`):
/// terms are ORed, an empty list matches nothing.
pub fn match_node_selector_terms(
    terms: &[NodeSelectorTerm],
    labels: Option<&BTreeMap<String, String>>,
    name: &str,
) -> bool {
    terms.iter().any(|t| term_matches(t, labels, name))
}

fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

/// A pod's `nodeSelector` and required node affinity (upstream `RequiredNodeAffinity`).
#[derive(Debug, Clone, Copy)]
pub struct RequiredNodeAffinity<'a> {
    node_selector: Option<&'a BTreeMap<String, String>>,
    terms: Option<&'a [NodeSelectorTerm]>,
}

impl<'a> RequiredNodeAffinity<'a> {
    /// Upstream `GetRequiredNodeAffinity`.
    pub fn of(pod: &'a Pod) -> Self {
        let spec = pod.spec.as_ref();
        RequiredNodeAffinity {
            node_selector: spec
                .and_then(|s| s.node_selector.as_ref())
                .filter(|s| !s.is_empty()),
            terms: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|na| {
                    na.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|ns| ns.node_selector_terms.as_slice()),
        }
    }

    /// Whether the pod has neither a nodeSelector nor required node affinity.
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_none() && self.terms.is_none()
    }

    /// Upstream `RequiredNodeAffinity.Match`: the nodeSelector and the terms both hold.
    pub fn matches(&self, node: &Node) -> bool {
        let labels = node.metadata.labels.as_ref();
        if self.node_selector.is_some() && !set_matches(self.node_selector, labels) {
            return false;
        }
        match self.terms {
            Some(terms) => match_node_selector_terms(terms, labels, node_name(node)),
            None => true,
        }
    }
}

/// Upstream NodeAffinity's `errReasonConflict`.
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";

/// The node names the pod's required terms pin it to through `matchFields metadata.name In`
/// (upstream NodeAffinity `PreFilter`): `Ok(None)` when some term does not pin a name (any
/// node may do), `Ok(Some(names))` the union over the terms of each term's intersection,
/// `Err` when that is empty.
pub fn pre_filter_node_names(pod: &Pod) -> Result<Option<BTreeSet<String>>, &'static str> {
    let Some(terms) = RequiredNodeAffinity::of(pod).terms else {
        return Ok(None);
    };
    if terms.is_empty() {
        return Ok(None);
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    for t in terms {
        let mut term_names: Option<BTreeSet<String>> = None;
        for r in t.match_fields.iter().flatten() {
            if r.key == OBJECT_NAME_FIELD && r.operator == "In" {
                let s: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
                term_names = Some(match term_names {
                    None => s,
                    Some(prev) => prev.intersection(&s).cloned().collect(),
                });
            }
        }
        match term_names {
            None => return Ok(None),
            Some(s) => names.extend(s),
        }
    }
    if names.is_empty() {
        Err(ERR_REASON_CONFLICT)
    } else {
        Ok(Some(names))
    }
}

/// The sum of the weights of the pod's preferred terms the node matches (upstream
/// `PreferredSchedulingTerms.Score`); zero-weight and empty terms count for nothing.
pub fn preferred_score(pod: &Pod, node: &Node) -> i64 {
    let terms = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    terms
        .iter()
        .filter(|t| t.weight != 0)
        .filter(|t| {
            term_matches(
                &t.preference,
                node.metadata.labels.as_ref(),
                node_name(node),
            )
        })
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Whether the pod has preferred node affinity terms (upstream NodeAffinity `PreScore`
/// skips the plugin otherwise).
pub fn has_preferred_terms(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some()
}

/// Upstream `v1helper.MatchTopologySelectorTerms`: no terms match everything; otherwise
/// some non-empty term whose every expression has the label with one of its values.
pub fn match_topology_selector_terms(
    terms: &[TopologySelectorTerm],
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if terms.is_empty() {
        return true;
    }
    terms.iter().any(|t| {
        let exprs = t.match_label_expressions.as_deref().unwrap_or_default();
        !exprs.is_empty()
            && exprs.iter().all(|e| {
                !e.values.is_empty()
                    && labels
                        .and_then(|l| l.get(&e.key))
                        .is_some_and(|v| e.values.contains(v))
            })
    })
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests: one tuple per case
mod tests {
    use super::*;
    use crate::scheduler::testing::{NodeBuilder, PodBuilder, field_term, requirement, term};
    use k8s_openapi::api::core::v1::TopologySelectorLabelRequirement;

    fn node(labels: &[(&str, &str)]) -> Node {
        let mut b = NodeBuilder::new("node1").no_labels();
        for (k, v) in labels {
            b = b.label(k, v);
        }
        b.build()
    }

    /// Ported from upstream node_affinity_test.go TestNodeAffinity (the Filter cases) and
    /// nodeaffinity_test.go TestNodeSelectorMatch.
    #[test]
    fn required_node_affinity_table() {
        let foo_bar = [("foo", "bar")];
        let cases: Vec<(&str, Pod, Vec<(&str, &str)>, bool)> = vec![
            ("no selector", PodBuilder::new("p").build(), vec![], true),
            (
                "missing labels",
                PodBuilder::new("p").node_selector(&foo_bar).build(),
                vec![],
                false,
            ),
            (
                "same labels",
                PodBuilder::new("p").node_selector(&foo_bar).build(),
                vec![("foo", "bar")],
                true,
            ),
            (
                "node labels are superset",
                PodBuilder::new("p").node_selector(&foo_bar).build(),
                vec![("foo", "bar"), ("baz", "blah")],
                true,
            ),
            (
                "node labels are subset",
                PodBuilder::new("p")
                    .node_selector(&[("foo", "bar"), ("baz", "blah")])
                    .build(),
                vec![("foo", "bar")],
                false,
            ),
            (
                "In matches",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement(
                        "foo",
                        "In",
                        &["bar", "value2"],
                    )])])
                    .build(),
                vec![("foo", "bar")],
                true,
            ),
            (
                "Gt matches",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement(
                        "kernel-version",
                        "Gt",
                        &["0204"],
                    )])])
                    .build(),
                vec![("kernel-version", "0206")],
                true,
            ),
            (
                "NotIn does not match",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement(
                        "mem-type",
                        "NotIn",
                        &["DDR", "DDR2"],
                    )])])
                    .build(),
                vec![("mem-type", "DDR3")],
                true,
            ),
            (
                "NotIn with the value",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement(
                        "mem-type",
                        "NotIn",
                        &["DDR", "DDR2"],
                    )])])
                    .build(),
                vec![("mem-type", "DDR2")],
                false,
            ),
            (
                "Lt matches",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement("cores", "Lt", &["8"])])])
                    .build(),
                vec![("cores", "4")],
                true,
            ),
            (
                "Lt on a non-integer label",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement("cores", "Lt", &["8"])])])
                    .build(),
                vec![("cores", "four")],
                false,
            ),
            (
                "Exists matches",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement("GPU", "Exists", &[])])])
                    .build(),
                vec![("GPU", "NVIDIA-GRID-K1")],
                true,
            ),
            (
                "DoesNotExist",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement("GPU", "DoesNotExist", &[])])])
                    .build(),
                vec![("GPU", "NVIDIA-GRID-K1")],
                false,
            ),
            (
                "In with no values is invalid",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement("foo", "In", &[])])])
                    .build(),
                vec![("foo", "bar")],
                false,
            ),
            (
                "unknown operator is invalid",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![requirement("foo", "Equals", &["bar"])])])
                    .build(),
                vec![("foo", "bar")],
                false,
            ),
            (
                "empty term list matches nothing",
                PodBuilder::new("p").required_terms(vec![]).build(),
                vec![("foo", "bar")],
                false,
            ),
            (
                "empty term matches nothing",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![])])
                    .build(),
                vec![("foo", "bar")],
                false,
            ),
            (
                "terms are ORed",
                PodBuilder::new("p")
                    .required_terms(vec![
                        term(vec![requirement("foo", "In", &["nope"])]),
                        term(vec![requirement("foo", "In", &["bar"])]),
                    ])
                    .build(),
                vec![("foo", "bar")],
                true,
            ),
            (
                "expressions are ANDed",
                PodBuilder::new("p")
                    .required_terms(vec![term(vec![
                        requirement("foo", "In", &["bar"]),
                        requirement("baz", "Exists", &[]),
                    ])])
                    .build(),
                vec![("foo", "bar")],
                false,
            ),
            (
                "nodeSelector and affinity both hold",
                PodBuilder::new("p")
                    .node_selector(&[("zone", "a")])
                    .required_terms(vec![term(vec![requirement("foo", "In", &["bar"])])])
                    .build(),
                vec![("foo", "bar")],
                false,
            ),
            (
                "matchFields metadata.name In",
                PodBuilder::new("p")
                    .required_terms(vec![field_term(vec![requirement(
                        "metadata.name",
                        "In",
                        &["node1"],
                    )])])
                    .build(),
                vec![],
                true,
            ),
            (
                "matchFields another name",
                PodBuilder::new("p")
                    .required_terms(vec![field_term(vec![requirement(
                        "metadata.name",
                        "In",
                        &["node2"],
                    )])])
                    .build(),
                vec![],
                false,
            ),
            (
                "matchFields NotIn",
                PodBuilder::new("p")
                    .required_terms(vec![field_term(vec![requirement(
                        "metadata.name",
                        "NotIn",
                        &["node2"],
                    )])])
                    .build(),
                vec![],
                true,
            ),
            (
                "matchFields with two values is invalid",
                PodBuilder::new("p")
                    .required_terms(vec![field_term(vec![requirement(
                        "metadata.name",
                        "In",
                        &["node1", "node2"],
                    )])])
                    .build(),
                vec![],
                false,
            ),
            (
                "matchFields and matchExpressions in one term",
                PodBuilder::new("p")
                    .required_terms(vec![NodeSelectorTerm {
                        match_expressions: Some(vec![requirement("foo", "In", &["bar"])]),
                        match_fields: Some(vec![requirement("metadata.name", "In", &["node1"])]),
                    }])
                    .build(),
                vec![("foo", "bar")],
                true,
            ),
        ];
        for (name, pod, labels, want) in cases {
            let got = RequiredNodeAffinity::of(&pod).matches(&node(&labels));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn match_fields_ignored_without_a_node_name() {
        let t = field_term(vec![requirement("metadata.name", "In", &["other"])]);
        assert!(term_matches(&t, None, ""), "PV affinity sees labels only");
        assert!(!term_matches(&t, None, "node1"));
    }

    /// Upstream node_affinity_test.go TestNodeAffinityPreFilter (node names).
    #[test]
    fn pre_filter_node_names_table() {
        let names = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
        let in_names = |v: &[&str]| requirement("metadata.name", "In", v);
        let cases: Vec<(
            &str,
            Vec<NodeSelectorTerm>,
            Result<Option<BTreeSet<String>>, &str>,
        )> = vec![
            (
                "one name",
                vec![field_term(vec![in_names(&["node1"])])],
                Ok(names(&["node1"])),
            ),
            (
                "terms are unioned",
                vec![
                    field_term(vec![in_names(&["node1"])]),
                    field_term(vec![in_names(&["node2"])]),
                ],
                Ok(names(&["node1", "node2"])),
            ),
            (
                "requirements are intersected",
                vec![field_term(vec![
                    in_names(&["node1", "node2"]),
                    in_names(&["node2", "node3"]),
                ])],
                Ok(names(&["node2"])),
            ),
            (
                "a term without names allows every node",
                vec![
                    field_term(vec![in_names(&["node1"])]),
                    term(vec![requirement("foo", "Exists", &[])]),
                ],
                Ok(None),
            ),
            (
                "conflicting names",
                vec![field_term(vec![in_names(&["node1"]), in_names(&["node2"])])],
                Err(ERR_REASON_CONFLICT),
            ),
        ];
        for (name, terms, want) in cases {
            let pod = PodBuilder::new("p").required_terms(terms).build();
            assert_eq!(pre_filter_node_names(&pod), want, "{name}");
        }
        assert_eq!(
            pre_filter_node_names(&PodBuilder::new("p").build()),
            Ok(None)
        );
    }

    #[test]
    fn preferred_score_sums_matching_weights() {
        let pod = PodBuilder::new("p")
            .preferred(2, term(vec![requirement("foo", "In", &["bar"])]))
            .preferred(5, term(vec![requirement("key", "In", &["value"])]))
            .preferred(0, term(vec![requirement("foo", "Exists", &[])]))
            .preferred(9, term(vec![]))
            .build();
        assert!(has_preferred_terms(&pod));
        assert_eq!(preferred_score(&pod, &node(&[("foo", "bar")])), 2);
        assert_eq!(
            preferred_score(&pod, &node(&[("foo", "bar"), ("key", "value")])),
            7
        );
        assert_eq!(preferred_score(&pod, &node(&[])), 0);
        assert!(!has_preferred_terms(&PodBuilder::new("p").build()));
    }

    #[test]
    fn topology_selector_terms() {
        let t = |k: &str, v: &[&str]| TopologySelectorTerm {
            match_label_expressions: Some(vec![TopologySelectorLabelRequirement {
                key: k.into(),
                values: v.iter().map(|s| s.to_string()).collect(),
            }]),
        };
        let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        assert!(match_topology_selector_terms(&[], None));
        assert!(match_topology_selector_terms(
            &[t("zone", &["a", "b"])],
            Some(&labels)
        ));
        assert!(!match_topology_selector_terms(
            &[t("zone", &["b"])],
            Some(&labels)
        ));
        assert!(match_topology_selector_terms(
            &[t("zone", &["b"]), t("zone", &["a"])],
            Some(&labels)
        ));
        assert!(!match_topology_selector_terms(
            &[TopologySelectorTerm {
                match_label_expressions: None
            }],
            Some(&labels)
        ));
    }
}
