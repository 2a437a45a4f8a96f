//! Why a pod fits no node, in upstream's words (upstream: `pkg/scheduler/framework/types.go`
//! `FitError.Error`, `NoNodeAvailableMsg`; `pkg/scheduler/schedule_one.go`
//! `ErrNoNodesAvailable`).
//!
//! The message counts each reason over the nodes, sorts the "count reason" strings as
//! strings, and joins them: `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had
//! untolerated taint {k: v}.`; a PreFilter rejection replaces the counts with its message.
//! Upstream appends the PostFilter (preemption) message, e.g. `preemption: 0/3 nodes are
//! available: ...`, only when PostFilter plugins are registered; rekube has no preemption
//! and so prints what upstream prints without PostFilter plugins: nothing more.
use std::collections::BTreeMap;
use std::fmt;

/// Upstream `ErrNoNodesAvailable`.
pub const ERR_NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

/// The pod fits no node (upstream `framework.FitError` with its `Diagnosis`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FitError {
    /// The nodes in the snapshot; 0 means there were none to try.
    pub num_all_nodes: usize,
    /// Each node's reasons: its first failing filter's, or the PreFilter message for all.
    pub diagnosis: BTreeMap<String, Vec<String>>,
    /// The message of a PreFilter that rejected the pod on every node (upstream
    /// `Diagnosis.PreFilterMsg`).
    pub pre_filter_msg: Option<String>,
}

impl FitError {
    /// Each reason and on how many nodes it was given.
    pub fn reason_counts(&self) -> BTreeMap<&str, usize> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in self.diagnosis.values().flatten() {
            *counts.entry(r.as_str()).or_default() += 1;
        }
        counts
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_all_nodes == 0 {
            return f.write_str(ERR_NO_NODES_AVAILABLE);
        }
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(msg) = self.pre_filter_msg.as_deref().filter(|m| !m.is_empty()) {
            return write!(f, " {msg}.");
        }
        let mut histogram: Vec<String> = self
            .reason_counts()
            .into_iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        histogram.sort();
        if !histogram.is_empty() {
            write!(f, " {}.", histogram.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(n, rs)| (n.to_string(), rs.iter().map(|r| r.to_string()).collect()))
            .collect()
    }

    /// Upstream types_test.go TestFitError_Error, and the messages of the issue.
    #[test]
    fn fit_error_messages() {
        let f1 = "Node(s) failed Filter plugin FalseFilter-1";
        let f2 = "Node(s) failed Filter plugin FalseFilter-2";
        let cases: Vec<(&str, FitError, &str)> = vec![
            (
                "nodes failed Prefilter plugin",
                FitError {
                    num_all_nodes: 3,
                    diagnosis: diag(&[("node1", &[]), ("node2", &[])]),
                    pre_filter_msg: Some("Node(s) failed PreFilter plugin FalsePreFilter".into()),
                },
                "0/3 nodes are available: Node(s) failed PreFilter plugin FalsePreFilter.",
            ),
            (
                "nodes failed one Filter plugin",
                FitError {
                    num_all_nodes: 3,
                    diagnosis: diag(&[("node1", &[f1]), ("node2", &[f1]), ("node3", &[f1])]),
                    pre_filter_msg: None,
                },
                "0/3 nodes are available: 3 Node(s) failed Filter plugin FalseFilter-1.",
            ),
            (
                "nodes failed two Filter plugins",
                FitError {
                    num_all_nodes: 3,
                    diagnosis: diag(&[("node1", &[f1]), ("node2", &[f1]), ("node3", &[f2])]),
                    pre_filter_msg: None,
                },
                "0/3 nodes are available: 1 Node(s) failed Filter plugin FalseFilter-2, 2 Node(s) failed Filter plugin FalseFilter-1.",
            ),
            (
                "failed to Permit on node",
                FitError {
                    num_all_nodes: 1,
                    diagnosis: diag(&[("node1", &["Node failed Permit plugin Permit-1"])]),
                    pre_filter_msg: None,
                },
                "0/1 nodes are available: 1 Node failed Permit plugin Permit-1.",
            ),
            (
                "a node with several reasons counts each",
                FitError {
                    num_all_nodes: 3,
                    diagnosis: diag(&[
                        ("a", &["Insufficient cpu", "Insufficient memory"]),
                        ("b", &["node(s) had untolerated taint {k: v}"]),
                        ("c", &["node(s) had untolerated taint {k: v}"]),
                    ]),
                    pre_filter_msg: None,
                },
                "0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 2 node(s) had untolerated taint {k: v}.",
            ),
            (
                "counts sort as strings",
                FitError {
                    num_all_nodes: 12,
                    diagnosis: (0..12)
                        .map(|i| {
                            (
                                format!("n{i:02}"),
                                vec![if i < 10 { "b" } else { "a" }.to_string()],
                            )
                        })
                        .collect(),
                    pre_filter_msg: None,
                },
                "0/12 nodes are available: 10 b, 2 a.",
            ),
            (
                "no reasons at all",
                FitError {
                    num_all_nodes: 2,
                    diagnosis: BTreeMap::new(),
                    pre_filter_msg: None,
                },
                "0/2 nodes are available:",
            ),
            (
                "no nodes",
                FitError::default(),
                "no nodes available to schedule pods",
            ),
        ];
        for (name, err, want) in cases {
            assert_eq!(err.to_string(), want, "{name}");
        }
    }
}
