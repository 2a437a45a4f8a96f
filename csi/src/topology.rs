//! Topology: every volume is reachable from the one node whose driver made it, under the
//! segment `topology.csi.rekube.io/node = <node id>`.

use std::collections::HashMap;

use crate::csi::{Topology, TopologyRequirement};

/// The topology key rekube-csi reports (NodeGetInfo) and provisions to (CreateVolume).
pub const TOPOLOGY_KEY: &str = "topology.csi.rekube.io/node";

/// The node's topology: `{topology.csi.rekube.io/node: node_id}`.
pub fn node_topology(node_id: &str) -> Topology {
    Topology {
        segments: HashMap::from([(TOPOLOGY_KEY.to_string(), node_id.to_string())]),
    }
}

/// Whether `topology` names this node (or does not constrain the node at all).
pub fn is_this_node(topology: &Topology, node_id: &str) -> bool {
    topology
        .segments
        .get(TOPOLOGY_KEY)
        .is_none_or(|node| node == node_id)
}

/// Whether CreateVolume's requirement lets the volume be on this node: with a `requisite`
/// list, one of its topologies must be this node; `preferred` alone only orders choices.
pub fn requirement_allows(requirement: Option<&TopologyRequirement>, node_id: &str) -> bool {
    match requirement {
        Some(r) if !r.requisite.is_empty() => r.requisite.iter().any(|t| is_this_node(t, node_id)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(node: &str) -> Topology {
        node_topology(node)
    }

    #[test]
    fn requirements_allow_this_node_only_when_requisite_names_it() {
        let cases = [
            (None, true),
            (Some(TopologyRequirement::default()), true),
            (
                Some(TopologyRequirement {
                    requisite: vec![on("n1")],
                    preferred: vec![],
                }),
                true,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![on("n2"), on("n1")],
                    preferred: vec![on("n2")],
                }),
                true,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![on("n2")],
                    preferred: vec![],
                }),
                false,
            ),
            (
                Some(TopologyRequirement {
                    requisite: vec![],
                    preferred: vec![on("n2")],
                }),
                true,
            ),
        ];
        for (i, (requirement, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                requirement_allows(requirement.as_ref(), "n1"),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn a_topology_without_our_key_does_not_constrain_the_node() {
        assert!(is_this_node(&Topology::default(), "n1"));
        assert!(!is_this_node(&on("n2"), "n1"));
    }
}
