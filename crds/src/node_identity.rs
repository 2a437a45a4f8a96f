//! The per-node identity of rekube-node-agent: what stands in for upstream's
//! `system:node:<name>` user and its Node authorizer.
//!
//! Every node agent runs as the one ServiceAccount of the chart's DaemonSet. For what
//! only its own node's pods may see (their Secrets and ConfigMaps) it uses a second
//! identity: the ServiceAccount named after its node in the node identity namespace,
//! whose token it requests (TokenRequest, bound to its Node) and which the NodeRestriction
//! policy lets it request for its own node only. The node-authorizer controller of
//! rekube-controllers keeps that ServiceAccount for every Node and, in each namespace
//! with pods bound to the node, a Role and RoleBinding [`node_role_name`] granting `get`
//! on exactly the Secrets, ConfigMaps and PersistentVolumeClaims those pods refer to
//! ([`crate::pod_refs`]); and, while those claims are bound, a ClusterRole and
//! ClusterRoleBinding [`node_cluster_role_name`] granting `get` on their PersistentVolumes.

/// The namespace of the per-node ServiceAccounts (the chart's `nodeIdentityNamespace`).
pub const DEFAULT_NODE_IDENTITY_NAMESPACE: &str = "rekube-node-identity";

/// The user info key where a node-bound or pod-bound token carries the node's UID.
pub const NODE_UID_EXTRA: &str = "authentication.kubernetes.io/node-uid";

/// The label on every object the node authorizer owns, and its value.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_NODE_AUTHORIZER: &str = "rekube-node-authorizer";

/// The label on the node authorizer's cluster-scoped objects (ClusterRoles and
/// ClusterRoleBindings): the node identity namespace of the ServiceAccount they bind, so
/// that a node authorizer finds its own only (one per identity namespace; the e2e tests
/// run several side by side).
pub const NODE_IDENTITY_NAMESPACE_LABEL: &str = "rekube.io/node-identity-namespace";

const ROLE_PREFIX: &str = "rekube-node:";

/// The name of the Role and RoleBinding that grant `node` its pods' references in one
/// namespace (RBAC names are path segments: the node name fits as is).
pub fn node_role_name(node: &str) -> String {
    format!("{ROLE_PREFIX}{node}")
}

/// The name of the ClusterRole and ClusterRoleBinding that grant `node` the
/// PersistentVolumes of its pods' claims: the same as its Roles' ([`node_role_name`];
/// cluster-scoped names never meet namespaced ones), so [`node_of_role`] reads both.
pub fn node_cluster_role_name(node: &str) -> String {
    node_role_name(node)
}

/// The node a Role, RoleBinding, ClusterRole or ClusterRoleBinding of [`node_role_name`]
/// or [`node_cluster_role_name`] is for.
pub fn node_of_role(name: &str) -> Option<&str> {
    name.strip_prefix(ROLE_PREFIX).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for node in ["a", "node-1.example.com"] {
            assert_eq!(node_of_role(&node_role_name(node)), Some(node));
        }
        assert_eq!(
            node_of_role(&node_cluster_role_name("node-1")),
            Some("node-1")
        );
        assert_eq!(node_of_role("rekube-node:"), None);
        assert_eq!(node_of_role("other"), None);
    }
}
