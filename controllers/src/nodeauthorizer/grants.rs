//! The pure core of the node authorizer: what each node may read, and the RBAC writes
//! that make the cluster say so.
//!
//! Upstream's Node authorizer (plugin/pkg/auth/authorizer/node) keeps a graph of
//! pod → node, secret/configmap/pvc → pod and pv → pvc edges and allows
//! `system:node:<name>` to get a Secret, ConfigMap or PersistentVolumeClaim only when a
//! pod bound to that node refers to it, and a PersistentVolume only when it is bound to
//! such a claim. rekube cannot add an authorizer to the apiserver it runs on, so it writes
//! the graph down as RBAC: for each node, in each namespace with pods bound to it that
//! refer to Secrets, ConfigMaps or claims, a Role granting `get` on exactly those names
//! (`resourceNames`), and `update`/`patch` of those claims' status (upstream's
//! authorizeStatusUpdate: the kubelet records a filesystem expansion), and a RoleBinding
//! to the node's ServiceAccount; while any of those
//! claims is bound, a ClusterRole granting `get` on the PersistentVolumes they are bound
//! to, and on the VolumeAttachments of the node (upstream's volumeattachment → node
//! edge), and a ClusterRoleBinding to that ServiceAccount; and the ServiceAccount while
//! the Node exists. Upstream's authorizer also lets a node request tokens of its pods'
//! ServiceAccounts (the serviceaccount → pod edge): here the Role grants `create` on the
//! `token` subresource of exactly the ServiceAccounts of the node's pods that project a
//! `serviceAccountToken`, and `get` on those pods' token binding Secrets, which the tokens
//! are bound to ([`rekube_crds::token_binding`]). For its pods that project a
//! podCertificate, the Role grants `get` on their ServiceAccounts (whose UIDs the
//! PodCertificateRequests name) and `create` and `get` on podcertificaterequests in the
//! namespace (upstream's system:node role has create, get, list and watch everywhere,
//! narrowed by its authorizer to the node's requests; RBAC cannot name requests made
//! with generated names, and they hold public keys and certificates only), and `get` on
//! those pods by name: the node restriction policy
//! (`rekube_crds::node_restriction`) asks the authorizer whether a request's pod and
//! ServiceAccount are the node's, as upstream's NodeRestriction reads them.
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject};
use rekube_crds::node_identity::{node_cluster_role_name, node_role_name};
use rekube_crds::pod_refs::{pod_claim_names, pod_config_map_names, pod_secret_names};
use rekube_crds::token_binding::{
    pod_token_binding_secret_name, service_account_name, uses_service_account_token,
};
use rekube_crds::{GROUP, PersistentVolumeClaim, Pod, VolumeAttachment};

/// What one node may read in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
    /// PersistentVolumeClaims (rekube.io).
    pub claims: BTreeSet<String>,
    /// The ServiceAccounts whose tokens the node may request (`create` on
    /// `serviceaccounts/token`): those of its pods that project a `serviceAccountToken`
    /// (upstream's graph: the pod → serviceaccount edge, which its authorizer allows
    /// token requests along).
    pub token_service_accounts: BTreeSet<String>,
    /// The ServiceAccounts of the node's pods that project a podCertificate: `get` on
    /// them, and `create` and `get` on podcertificaterequests in the namespace.
    pub pod_certificate_service_accounts: BTreeSet<String>,
    /// The node's pods that project a podCertificate: `get` on them (rekube.io pods, by
    /// name), which the node restriction policy checks a PodCertificateRequest's pod
    /// against (the pod must be one of the node's: upstream's NodeRestriction).
    pub pod_certificate_pods: BTreeSet<String>,
}

impl Grant {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
            && self.config_maps.is_empty()
            && self.claims.is_empty()
            && self.token_service_accounts.is_empty()
            && self.pod_certificate_service_accounts.is_empty()
            && self.pod_certificate_pods.is_empty()
    }
}

/// The pods' spec.nodeName, if bound.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// What `node` may read, per namespace: the references of every pod bound to it
/// (upstream's graph keeps a pod's edges until the pod object is gone, terminal or not).
/// Namespaces whose pods refer to nothing are left out.
pub fn node_grants<'a>(
    node: &str,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> BTreeMap<String, Grant> {
    let mut out: BTreeMap<String, Grant> = BTreeMap::new();
    for pod in pods.into_iter().filter(|p| node_name(p) == Some(node)) {
        let (Some(spec), Some(ns)) = (pod.spec.as_ref(), pod.metadata.namespace.as_ref()) else {
            continue;
        };
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut grant = Grant {
            secrets: pod_secret_names(spec),
            config_maps: pod_config_map_names(spec),
            claims: pod_claim_names(name, spec),
            ..Default::default()
        };
        // A projected token: the pod's token binding Secret (the agent checks it is the
        // pod's before binding a token to it) and its ServiceAccount's tokens.
        if uses_service_account_token(spec) {
            grant.secrets.insert(pod_token_binding_secret_name(pod));
            grant
                .token_service_accounts
                .insert(service_account_name(spec));
        }
        if uses_pod_certificate(spec) {
            grant
                .pod_certificate_service_accounts
                .insert(service_account_name(spec));
            grant.pod_certificate_pods.insert(name.to_string());
        }
        if grant.is_empty() {
            continue;
        }
        let g = out.entry(ns.clone()).or_default();
        g.secrets.extend(grant.secrets);
        g.config_maps.extend(grant.config_maps);
        g.claims.extend(grant.claims);
        g.token_service_accounts
            .extend(grant.token_service_accounts);
        g.pod_certificate_service_accounts
            .extend(grant.pod_certificate_service_accounts);
        g.pod_certificate_pods.extend(grant.pod_certificate_pods);
    }
    out
}

/// Whether a pod projects a podCertificate (a projected volume source).
pub fn uses_pod_certificate(spec: &k8s_openapi::api::core::v1::PodSpec) -> bool {
    spec.volumes.iter().flatten().any(|v| {
        v.projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .any(|s| s.pod_certificate.is_some())
    })
}

/// The PersistentVolume a claim is bound to: its `spec.volumeName` once the claim is
/// `Bound` (the node agent reads no other: upstream `getPVCExtractPV`). A name a user set
/// on a claim the PV controller has not bound grants nothing.
pub fn claim_volume_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    claim
        .spec
        .as_ref()?
        .volume_name
        .as_deref()
        .filter(|n| bound && !n.is_empty())
}

/// The PersistentVolumes a node with `grants` may read: those its pods' claims are bound
/// to ([`claim_volume_name`]; upstream's pv → pvc → pod → node path). `claim` looks a
/// claim up by namespace and name; a claim not found grants nothing.
pub fn node_volume_names<C: Borrow<PersistentVolumeClaim>>(
    grants: &BTreeMap<String, Grant>,
    claim: impl Fn(&str, &str) -> Option<C>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (ns, grant) in grants {
        for name in &grant.claims {
            if let Some(c) = claim(ns, name) {
                out.extend(claim_volume_name(c.borrow()).map(str::to_string));
            }
        }
    }
    out
}

/// The nodes whose pods use claim `namespace/claim`: the ones to sync again when the
/// volume it is bound to changes.
pub fn nodes_using_claim<'a>(
    namespace: &str,
    claim: &str,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> BTreeSet<String> {
    pods.into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|p| {
            let node = node_name(p)?;
            let name = p.metadata.name.as_deref().unwrap_or_default();
            pod_claim_names(name, p.spec.as_ref()?)
                .contains(claim)
                .then(|| node.to_string())
        })
        .collect()
}

fn get_rule(api_group: &str, resource: &str, names: &BTreeSet<String>) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![api_group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        resource_names: Some(names.iter().cloned().collect()),
        verbs: vec!["get".to_string()],
        ..Default::default()
    }
}

/// The Role's rules for a grant: `get` on the named Secrets, then on the named
/// ConfigMaps, then on the named rekube.io PersistentVolumeClaims and `update`/`patch` of
/// their status; then `create` on the
/// `token` subresource of the named ServiceAccounts; then, for podCertificate pods, `get`
/// on their ServiceAccounts and `create` and `get` on podcertificaterequests, and `get`
/// on those pods by name.
pub fn role_rules(grant: &Grant) -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    if !grant.secrets.is_empty() {
        rules.push(get_rule("", "secrets", &grant.secrets));
    }
    if !grant.config_maps.is_empty() {
        rules.push(get_rule("", "configmaps", &grant.config_maps));
    }
    if !grant.claims.is_empty() {
        rules.push(get_rule(GROUP, "persistentvolumeclaims", &grant.claims));
        // Upstream's authorizeStatusUpdate: a node updates the status of its pods'
        // claims (the filesystem expansion's result; the NodeRestriction policy narrows
        // the fields).
        rules.push(PolicyRule {
            api_groups: Some(vec![GROUP.to_string()]),
            resources: Some(vec!["persistentvolumeclaims/status".into()]),
            resource_names: Some(grant.claims.iter().cloned().collect()),
            verbs: vec!["update".into(), "patch".into()],
            ..Default::default()
        });
    }
    if !grant.token_service_accounts.is_empty() {
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["serviceaccounts/token".into()]),
            resource_names: Some(grant.token_service_accounts.iter().cloned().collect()),
            verbs: vec!["create".into()],
            ..Default::default()
        });
    }
    if !grant.pod_certificate_service_accounts.is_empty() {
        rules.push(get_rule(
            "",
            "serviceaccounts",
            &grant.pod_certificate_service_accounts,
        ));
        rules.push(PolicyRule {
            api_groups: Some(vec!["certificates.k8s.io".into()]),
            resources: Some(vec!["podcertificaterequests".into()]),
            verbs: vec!["create".into(), "get".into()],
            ..Default::default()
        });
    }
    if !grant.pod_certificate_pods.is_empty() {
        rules.push(get_rule(GROUP, "pods", &grant.pod_certificate_pods));
    }
    rules
}

/// What one node may read cluster-wide.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterGrant {
    /// The PersistentVolumes of its pods' claims ([`node_volume_names`]).
    pub volumes: BTreeSet<String>,
    /// The VolumeAttachments of the node ([`node_volume_attachment_names`]).
    pub attachments: BTreeSet<String>,
}

impl ClusterGrant {
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty() && self.attachments.is_empty()
    }
}

/// The VolumeAttachments a node may read: those whose `spec.nodeName` is the node
/// (upstream's graph: the volumeattachment → node edge of `AddVolumeAttachment`).
pub fn node_volume_attachment_names<'a>(
    node: &str,
    attachments: impl IntoIterator<Item = &'a VolumeAttachment>,
) -> BTreeSet<String> {
    attachments
        .into_iter()
        .filter(|va| va.spec.as_ref().is_some_and(|s| s.node_name == node))
        .filter_map(|va| va.metadata.name.clone())
        .collect()
}

/// The ClusterRole's rules for a node's cluster-wide grant: `get` on the named rekube.io
/// PersistentVolumes, then on the named rekube.io VolumeAttachments.
pub fn cluster_role_rules(grant: &ClusterGrant) -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    if !grant.volumes.is_empty() {
        rules.push(get_rule(GROUP, "persistentvolumes", &grant.volumes));
    }
    if !grant.attachments.is_empty() {
        rules.push(get_rule(GROUP, "volumeattachments", &grant.attachments));
    }
    rules
}

fn node_subjects(node: &str, identity_namespace: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: node.to_string(),
        namespace: Some(identity_namespace.to_string()),
        ..Default::default()
    }]
}

/// The binding's role reference and subject: the node's ServiceAccount.
pub fn binding_parts(node: &str, identity_namespace: &str) -> (RoleRef, Vec<Subject>) {
    (
        RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: node_role_name(node),
        },
        node_subjects(node, identity_namespace),
    )
}

/// The ClusterRoleBinding's role reference and subject: the node's ServiceAccount.
pub fn cluster_binding_parts(node: &str, identity_namespace: &str) -> (RoleRef, Vec<Subject>) {
    (
        RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: node_cluster_role_name(node),
        },
        node_subjects(node, identity_namespace),
    )
}

/// Whether an existing binding is the one [`binding_parts`] describes.
pub fn binding_is_current(b: &RoleBinding, node: &str, identity_namespace: &str) -> bool {
    let (role_ref, subjects) = binding_parts(node, identity_namespace);
    b.role_ref == role_ref && b.subjects.as_deref().unwrap_or_default() == subjects.as_slice()
}

/// Whether an existing ClusterRoleBinding is the one [`cluster_binding_parts`] describes.
pub fn cluster_binding_is_current(
    b: &ClusterRoleBinding,
    node: &str,
    identity_namespace: &str,
) -> bool {
    let (role_ref, subjects) = cluster_binding_parts(node, identity_namespace);
    b.role_ref == role_ref && b.subjects.as_deref().unwrap_or_default() == subjects.as_slice()
}

/// What the cluster holds for one node (the node authorizer's own objects only).
#[derive(Clone, Debug, Default)]
pub struct Actual {
    pub service_account: bool,
    /// namespace → the Role's rules.
    pub roles: BTreeMap<String, Vec<PolicyRule>>,
    /// namespace → whether the binding is current ([`binding_is_current`]).
    pub bindings: BTreeMap<String, bool>,
}

/// One write of a node's sync.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    ApplyServiceAccount,
    DeleteServiceAccount,
    ApplyRole {
        namespace: String,
        rules: Vec<PolicyRule>,
    },
    DeleteRole {
        namespace: String,
    },
    ApplyBinding {
        namespace: String,
    },
    DeleteBinding {
        namespace: String,
    },
    ApplyClusterRole {
        rules: Vec<PolicyRule>,
    },
    DeleteClusterRole,
    ApplyClusterBinding,
    DeleteClusterBinding,
}

/// The writes that take one node from `actual` to what its Node and pods call for: the
/// ServiceAccount while the Node exists; per namespace the Role (before its binding, so
/// the binding never grants less than intended for long) and the binding; a grant no
/// longer needed goes binding first. A binding that is not current (its immutable role
/// reference) is deleted and applied again.
pub fn sync_actions(
    node_exists: bool,
    desired: &BTreeMap<String, Grant>,
    actual: &Actual,
) -> Vec<Action> {
    let mut out = Vec::new();
    match (node_exists, actual.service_account) {
        (true, false) => out.push(Action::ApplyServiceAccount),
        (false, true) => out.push(Action::DeleteServiceAccount),
        _ => {}
    }
    for (ns, grant) in desired {
        let rules = role_rules(grant);
        if actual.roles.get(ns) != Some(&rules) {
            out.push(Action::ApplyRole {
                namespace: ns.clone(),
                rules,
            });
        }
        match actual.bindings.get(ns) {
            Some(true) => {}
            Some(false) => {
                out.push(Action::DeleteBinding {
                    namespace: ns.clone(),
                });
                out.push(Action::ApplyBinding {
                    namespace: ns.clone(),
                });
            }
            None => out.push(Action::ApplyBinding {
                namespace: ns.clone(),
            }),
        }
    }
    for ns in actual
        .bindings
        .keys()
        .filter(|ns| !desired.contains_key(*ns))
    {
        out.push(Action::DeleteBinding {
            namespace: ns.clone(),
        });
    }
    for ns in actual.roles.keys().filter(|ns| !desired.contains_key(*ns)) {
        out.push(Action::DeleteRole {
            namespace: ns.clone(),
        });
    }
    out
}

/// What the cluster holds of one node's cluster-scoped grant.
#[derive(Clone, Debug, Default)]
pub struct ClusterActual {
    /// The ClusterRole's rules, if it exists.
    pub cluster_role: Option<Vec<PolicyRule>>,
    /// Whether the ClusterRoleBinding exists, and then whether it is current
    /// ([`cluster_binding_is_current`]).
    pub cluster_binding: Option<bool>,
}

/// The writes that take one node's ClusterRole and ClusterRoleBinding from `actual` to
/// `grant` (its volumes and attachments), in the order and with the rules of
/// [`sync_actions`]: the role before its binding, the binding gone first; both go when
/// the node's pods' claims are bound to no volume and no VolumeAttachment names the node
/// (whether or not the Node is there).
pub fn cluster_sync_actions(grant: &ClusterGrant, actual: &ClusterActual) -> Vec<Action> {
    let mut out = Vec::new();
    if grant.is_empty() {
        if actual.cluster_binding.is_some() {
            out.push(Action::DeleteClusterBinding);
        }
        if actual.cluster_role.is_some() {
            out.push(Action::DeleteClusterRole);
        }
        return out;
    }
    let rules = cluster_role_rules(grant);
    if actual.cluster_role.as_ref() != Some(&rules) {
        out.push(Action::ApplyClusterRole { rules });
    }
    match actual.cluster_binding {
        Some(true) => {}
        Some(false) => {
            out.push(Action::DeleteClusterBinding);
            out.push(Action::ApplyClusterBinding);
        }
        None => out.push(Action::ApplyClusterBinding),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, node: Option<&str>, secret: &str, cm: &str) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": format!("p-{secret}-{cm}"), "namespace": ns},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                "envFrom": [{"secretRef": {"name": secret}}, {"configMapRef": {"name": cm}}]}]},
        }))
        .unwrap()
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_gets_its_own_pods_references_per_namespace() {
        let pods = [
            pod("a", Some("n1"), "s1", "c1"),
            pod("a", Some("n1"), "s2", "c1"),
            pod("b", Some("n1"), "s3", "c3"),
            pod("a", Some("n2"), "other", "other"),
            pod("a", None, "pending", "pending"),
        ];
        let got = node_grants("n1", &pods);
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"].secrets, names(&["s1", "s2"]));
        assert_eq!(got["a"].config_maps, names(&["c1"]));
        assert_eq!(got["b"].secrets, names(&["s3"]));
        assert!(node_grants("n3", &pods).is_empty());
    }

    #[test]
    fn pods_without_references_grant_nothing() {
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        }))
        .unwrap();
        assert!(node_grants("n1", [&p]).is_empty());
    }

    #[test]
    fn a_pod_certificate_grants_its_service_account_and_requests() {
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"},
            "spec": {"nodeName": "n1", "serviceAccountName": "app",
                "containers": [{"name": "c", "image": "i"}],
                "volumes": [{"name": "cert", "projected": {"sources": [{"podCertificate": {
                    "signerName": "example.com/s", "keyType": "ED25519",
                    "credentialBundlePath": "b"}}]}}]},
        }))
        .unwrap();
        let got = node_grants("n1", [&p]);
        assert_eq!(got["a"].pod_certificate_service_accounts, names(&["app"]));
        assert_eq!(got["a"].pod_certificate_pods, names(&["p"]));
        assert!(got["a"].token_service_accounts.is_empty() && got["a"].secrets.is_empty());
        let rules = role_rules(&got["a"]);
        assert_eq!(rules.len(), 3);
        assert_eq!(
            (
                rules[2].api_groups.as_deref(),
                rules[2].resources.as_deref(),
                rules[2].resource_names.as_deref(),
                rules[2].verbs.as_slice()
            ),
            (
                Some(&[GROUP.to_string()][..]),
                Some(&["pods".to_string()][..]),
                Some(&["p".to_string()][..]),
                &["get".to_string()][..]
            )
        );
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["serviceaccounts".to_string()][..])
        );
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["app".to_string()][..])
        );
        assert_eq!(rules[0].verbs, ["get"]);
        assert_eq!(
            rules[1].api_groups.as_deref(),
            Some(&["certificates.k8s.io".to_string()][..])
        );
        assert_eq!(
            rules[1].resources.as_deref(),
            Some(&["podcertificaterequests".to_string()][..])
        );
        assert!(rules[1].resource_names.is_none());
        assert_eq!(rules[1].verbs, ["create", "get"]);
        assert!(node_grants("n2", [&p]).is_empty());
    }

    #[test]
    fn rules_name_exactly_the_references() {
        let g = Grant {
            secrets: names(&["s2", "s1"]),
            ..Default::default()
        };
        let rules = role_rules(&g);
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["secrets".to_string()][..])
        );
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["s1".to_string(), "s2".to_string()][..])
        );
        assert_eq!(rules[0].verbs, ["get"]);
        assert!(role_rules(&Grant::default()).is_empty());
    }

    #[test]
    fn sync_actions_table() {
        let grant = |s: &[&str]| Grant {
            secrets: names(s),
            ..Default::default()
        };
        let desired: BTreeMap<String, Grant> = [("a".to_string(), grant(&["s1"]))].into();
        let current = Actual {
            service_account: true,
            roles: [("a".to_string(), role_rules(&grant(&["s1"])))].into(),
            bindings: [("a".to_string(), true)].into(),
        };
        let apply_role = |ns: &str, s: &[&str]| Action::ApplyRole {
            namespace: ns.into(),
            rules: role_rules(&grant(s)),
        };
        let ns = |n: &str| n.to_string();
        // (name, node exists, desired, actual, expected)
        type Case = (
            &'static str,
            bool,
            BTreeMap<String, Grant>,
            Actual,
            Vec<Action>,
        );
        let cases: Vec<Case> = vec![
            ("in sync", true, desired.clone(), current.clone(), vec![]),
            (
                "new node, new grant",
                true,
                desired.clone(),
                Actual::default(),
                vec![
                    Action::ApplyServiceAccount,
                    apply_role("a", &["s1"]),
                    Action::ApplyBinding { namespace: ns("a") },
                ],
            ),
            (
                "a reference added",
                true,
                [("a".to_string(), grant(&["s1", "s2"]))].into(),
                current.clone(),
                vec![apply_role("a", &["s1", "s2"])],
            ),
            (
                "the last pod gone",
                true,
                BTreeMap::new(),
                current.clone(),
                vec![
                    Action::DeleteBinding { namespace: ns("a") },
                    Action::DeleteRole { namespace: ns("a") },
                ],
            ),
            (
                "node deleted",
                false,
                desired.clone(),
                current.clone(),
                vec![Action::DeleteServiceAccount],
            ),
            (
                "a binding edited by hand",
                true,
                desired.clone(),
                Actual {
                    bindings: [("a".to_string(), false)].into(),
                    ..current.clone()
                },
                vec![
                    Action::DeleteBinding { namespace: ns("a") },
                    Action::ApplyBinding { namespace: ns("a") },
                ],
            ),
            (
                "a stray binding without its role",
                true,
                BTreeMap::new(),
                Actual {
                    service_account: true,
                    roles: BTreeMap::new(),
                    bindings: [("b".to_string(), true)].into(),
                },
                vec![Action::DeleteBinding { namespace: ns("b") }],
            ),
        ];
        for (name, exists, desired, actual, want) in cases {
            assert_eq!(sync_actions(exists, &desired, &actual), want, "{name}");
        }
    }

    /// A pod bound to `node` with a `persistentVolumeClaim` volume per claim and a generic
    /// ephemeral volume `scratch` (claim `<pod>-scratch`).
    fn claim_pod(ns: &str, name: &str, node: Option<&str>, claims: &[&str]) -> Pod {
        let mut volumes: Vec<serde_json::Value> = claims
            .iter()
            .map(|c| json!({"name": format!("v-{c}"), "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        volumes.push(
            json!({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}),
        );
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}],
                     "volumes": volumes},
        }))
        .unwrap()
    }

    /// A claim `ns/name` with `spec.volumeName` and `status.phase` as given.
    fn claim(ns: &str, name: &str, volume: Option<&str>, phase: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"volumeName": volume, "accessModes": ["ReadWriteOnce"]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn a_node_gets_its_pods_claims_persistent_and_ephemeral() {
        let pods = [
            claim_pod("a", "web", Some("n1"), &["data", "shared"]),
            claim_pod("a", "db", Some("n1"), &["shared"]),
            claim_pod("b", "web", Some("n1"), &[]),
            claim_pod("a", "other", Some("n2"), &["theirs"]),
        ];
        let got = node_grants("n1", &pods);
        assert_eq!(
            got["a"].claims,
            names(&["data", "db-scratch", "shared", "web-scratch"])
        );
        assert_eq!(got["b"].claims, names(&["web-scratch"]));
        assert!(got["a"].secrets.is_empty() && got["a"].config_maps.is_empty());
        let rules = role_rules(&got["b"]);
        assert_eq!(
            rules.len(),
            2,
            "a pod with claims only: get, and update of their status"
        );
        assert_eq!(
            rules[1].resources.as_deref(),
            Some(&["persistentvolumeclaims/status".to_string()][..])
        );
        assert_eq!(rules[1].resource_names, rules[0].resource_names);
        assert_eq!(rules[1].verbs, ["update", "patch"]);
        assert_eq!(
            rules[0].api_groups.as_deref(),
            Some(&[GROUP.to_string()][..])
        );
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["persistentvolumeclaims".to_string()][..])
        );
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["web-scratch".to_string()][..])
        );
        assert_eq!(rules[0].verbs, ["get"]);
    }

    #[test]
    fn the_role_lists_secrets_config_maps_then_claims() {
        let g = Grant {
            secrets: names(&["s"]),
            config_maps: names(&["c"]),
            claims: names(&["pvc"]),
            token_service_accounts: names(&["sa"]),
            pod_certificate_service_accounts: names(&["sa"]),
            pod_certificate_pods: names(&["p"]),
        };
        let resources: Vec<_> = role_rules(&g)
            .into_iter()
            .map(|r| (r.api_groups.unwrap(), r.resources.unwrap()))
            .collect();
        let v = |s: &str| vec![s.to_string()];
        assert_eq!(
            resources,
            [
                (v(""), v("secrets")),
                (v(""), v("configmaps")),
                (v(GROUP), v("persistentvolumeclaims")),
                (v(GROUP), v("persistentvolumeclaims/status")),
                (v(""), v("serviceaccounts/token")),
                (v(""), v("serviceaccounts")),
                (v("certificates.k8s.io"), v("podcertificaterequests")),
                (v(GROUP), v("pods")),
            ]
        );
    }

    #[test]
    fn only_bound_claims_grant_their_volumes() {
        // (name, claim, volume granted)
        let cases = [
            ("bound", claim("a", "c", Some("pv1"), "Bound"), Some("pv1")),
            ("no volume yet", claim("a", "c", None, "Pending"), None),
            (
                "empty volume name",
                claim("a", "c", Some(""), "Bound"),
                None,
            ),
            (
                "pre-bound by its user, not bound yet",
                claim("a", "c", Some("pv1"), "Pending"),
                None,
            ),
            (
                "its volume lost",
                claim("a", "c", Some("pv1"), "Lost"),
                None,
            ),
        ];
        for (name, c, want) in cases {
            assert_eq!(claim_volume_name(&c), want, "{name}");
        }
    }

    #[test]
    fn a_node_gets_the_volumes_its_pods_claims_are_bound_to() {
        let claims: BTreeMap<(String, String), PersistentVolumeClaim> = [
            claim("a", "data", Some("pv-data"), "Bound"),
            claim("a", "web-scratch", Some("pv-scratch"), "Bound"),
            claim("a", "pending", None, "Pending"),
            claim("a", "theirs", Some("pv-theirs"), "Bound"),
            claim("b", "data", Some("pv-b-data"), "Bound"),
        ]
        .into_iter()
        .map(|c| {
            let key = (
                c.metadata.namespace.clone().unwrap(),
                c.metadata.name.clone().unwrap(),
            );
            (key, c)
        })
        .collect();
        let lookup = |ns: &str, n: &str| claims.get(&(ns.to_string(), n.to_string()));
        let pods = [
            claim_pod("a", "web", Some("n1"), &["data", "pending", "missing"]),
            claim_pod("a", "other", Some("n2"), &["theirs"]),
        ];
        let grants = node_grants("n1", &pods);
        assert_eq!(
            node_volume_names(&grants, lookup),
            names(&["pv-data", "pv-scratch"]),
            "not b's claim of the same name, nor another node's pod's"
        );
        assert!(node_volume_names(&node_grants("n3", &pods), lookup).is_empty());
    }

    #[test]
    fn a_claim_syncs_the_nodes_of_its_pods() {
        let pods = [
            claim_pod("a", "web", Some("n1"), &["data"]),
            claim_pod("a", "db", Some("n2"), &["data"]),
            claim_pod("a", "pending", None, &["data"]),
            claim_pod("b", "web", Some("n3"), &["data"]),
            claim_pod("a", "cache", Some("n4"), &[]),
        ];
        let nodes = |ns, c| nodes_using_claim(ns, c, &pods);
        assert_eq!(nodes("a", "data"), names(&["n1", "n2"]));
        assert_eq!(nodes("a", "cache-scratch"), names(&["n4"]));
        assert_eq!(nodes("b", "data"), names(&["n3"]));
        assert!(nodes("a", "absent").is_empty());
    }

    #[test]
    fn cluster_sync_actions_table() {
        let g = |v: &BTreeSet<String>| ClusterGrant {
            volumes: v.clone(),
            ..Default::default()
        };
        let volumes = names(&["pv1"]);
        let current = ClusterActual {
            cluster_role: Some(cluster_role_rules(&g(&volumes))),
            cluster_binding: Some(true),
        };
        let apply_role = |v: &[&str]| Action::ApplyClusterRole {
            rules: cluster_role_rules(&g(&names(v))),
        };
        // (name, desired volumes, actual, expected)
        let cases: Vec<(&str, BTreeSet<String>, ClusterActual, Vec<Action>)> = vec![
            ("in sync", volumes.clone(), current.clone(), vec![]),
            (
                "none needed, none held",
                BTreeSet::new(),
                ClusterActual::default(),
                vec![],
            ),
            (
                "a first bound claim",
                volumes.clone(),
                ClusterActual::default(),
                vec![apply_role(&["pv1"]), Action::ApplyClusterBinding],
            ),
            (
                "a second claim bound",
                names(&["pv1", "pv2"]),
                current.clone(),
                vec![apply_role(&["pv1", "pv2"])],
            ),
            (
                "the last claim's pod gone",
                BTreeSet::new(),
                current.clone(),
                vec![Action::DeleteClusterBinding, Action::DeleteClusterRole],
            ),
            (
                "a binding edited by hand",
                volumes.clone(),
                ClusterActual {
                    cluster_binding: Some(false),
                    ..current.clone()
                },
                vec![Action::DeleteClusterBinding, Action::ApplyClusterBinding],
            ),
            (
                "a role deleted by hand",
                volumes.clone(),
                ClusterActual {
                    cluster_role: None,
                    ..current.clone()
                },
                vec![apply_role(&["pv1"])],
            ),
            (
                "a stray binding without its role",
                BTreeSet::new(),
                ClusterActual {
                    cluster_role: None,
                    cluster_binding: Some(false),
                },
                vec![Action::DeleteClusterBinding],
            ),
        ];
        for (name, volumes, actual, want) in cases {
            assert_eq!(cluster_sync_actions(&g(&volumes), &actual), want, "{name}");
        }
        assert!(cluster_role_rules(&ClusterGrant::default()).is_empty());
        let rule = &cluster_role_rules(&g(&names(&["pv2", "pv1"])))[0];
        assert_eq!(rule.api_groups.as_deref(), Some(&[GROUP.to_string()][..]));
        assert_eq!(
            rule.resources.as_deref(),
            Some(&["persistentvolumes".to_string()][..])
        );
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["pv1".to_string(), "pv2".to_string()][..])
        );
        assert_eq!(rule.verbs, ["get"]);
    }

    /// upstream's node authorizer lets a node get the VolumeAttachments of its own
    /// (spec.nodeName): granted by name with the volumes, and enough on their own to keep
    /// the ClusterRole.
    #[test]
    fn volume_attachments_of_the_node_are_granted() {
        let va = |name: &str, node: &str| -> VolumeAttachment {
            serde_json::from_value(json!({
                "apiVersion": "rekube.io/v1", "kind": "VolumeAttachment", "metadata": {"name": name},
                "spec": {"attacher": "d", "nodeName": node, "source": {"persistentVolumeName": "pv"}}
            }))
            .unwrap()
        };
        let vas = [va("csi-1", "n1"), va("csi-2", "n2"), va("csi-3", "n1")];
        assert_eq!(
            node_volume_attachment_names("n1", &vas),
            names(&["csi-1", "csi-3"])
        );
        assert!(node_volume_attachment_names("n3", &vas).is_empty());
        let grant = ClusterGrant {
            volumes: names(&["pv1"]),
            attachments: names(&["csi-3", "csi-1"]),
        };
        let rules = cluster_role_rules(&grant);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[1].resources.as_deref(),
            Some(&["volumeattachments".to_string()][..])
        );
        assert_eq!(
            rules[1].resource_names.as_deref(),
            Some(&["csi-1".to_string(), "csi-3".to_string()][..])
        );
        assert_eq!(rules[1].verbs, ["get"]);
        // Attachments alone (the pods gone, the volume still attached): role and binding
        // stay; nothing left: both go.
        let only_attachments = ClusterGrant {
            volumes: BTreeSet::new(),
            attachments: names(&["csi-1"]),
        };
        assert_eq!(
            cluster_sync_actions(&only_attachments, &ClusterActual::default()),
            vec![
                Action::ApplyClusterRole {
                    rules: cluster_role_rules(&only_attachments)
                },
                Action::ApplyClusterBinding
            ]
        );
        let held = ClusterActual {
            cluster_role: Some(cluster_role_rules(&only_attachments)),
            cluster_binding: Some(true),
        };
        assert_eq!(
            cluster_sync_actions(&ClusterGrant::default(), &held),
            vec![Action::DeleteClusterBinding, Action::DeleteClusterRole]
        );
    }

    #[test]
    fn a_cluster_binding_is_current_only_with_the_nodes_subject_and_cluster_role() {
        let (role_ref, subjects) = cluster_binding_parts("n1", "ids");
        assert_eq!(role_ref.kind, "ClusterRole");
        let mut b = ClusterRoleBinding {
            role_ref,
            subjects: Some(subjects),
            ..Default::default()
        };
        assert!(cluster_binding_is_current(&b, "n1", "ids"));
        assert!(!cluster_binding_is_current(&b, "n1", "other"));
        b.role_ref.kind = "Role".into();
        assert!(!cluster_binding_is_current(&b, "n1", "ids"));
    }

    #[test]
    fn a_binding_is_current_only_with_the_nodes_subject() {
        let (role_ref, subjects) = binding_parts("n1", "ids");
        let mut b = RoleBinding {
            role_ref,
            subjects: Some(subjects),
            ..Default::default()
        };
        assert!(binding_is_current(&b, "n1", "ids"));
        assert!(!binding_is_current(&b, "n1", "other"));
        b.subjects.as_mut().unwrap()[0].name = "n2".into();
        assert!(!binding_is_current(&b, "n1", "ids"));
    }

    /// A pod projecting a token: its token binding Secret and its ServiceAccount's
    /// tokens, per namespace; the deprecated `serviceAccount` and the `default` of a pod
    /// naming none as the agent reads them; none for a pod without the source or another
    /// node's.
    #[test]
    fn a_node_gets_its_token_pods_service_accounts_and_binding_secrets() {
        let token_pod =
            |ns: &str, name: &str, uid: &str, node: &str, sa: serde_json::Value| -> Pod {
                serde_json::from_value(json!({
                    "apiVersion": "rekube.io/v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": ns, "uid": uid},
                    "spec": {"nodeName": node, "serviceAccountName": sa,
                             "containers": [{"name": "c", "image": "i"}],
                             "volumes": [{"name": "kube-api-access", "projected": {"sources": [
                                 {"serviceAccountToken": {"path": "token"}},
                                 {"configMap": {"name": "kube-root-ca.crt"}}]}}]},
                }))
                .unwrap()
            };
        let mut deprecated = token_pod("a", "old", "cccccccc-1", "n1", json!(null));
        deprecated.spec.as_mut().unwrap().service_account = Some("legacy".into());
        let pods = [
            token_pod("a", "web", "aaaaaaaa-1", "n1", json!("web-sa")),
            token_pod("a", "db", "bbbbbbbb-1", "n1", json!(null)),
            deprecated,
            token_pod("b", "web", "dddddddd-1", "n1", json!("web-sa")),
            token_pod("a", "theirs", "eeeeeeee-1", "n2", json!("their-sa")),
            pod("a", Some("n1"), "plain", "cm"),
        ];
        let got = node_grants("n1", &pods);
        assert_eq!(
            got["a"].token_service_accounts,
            names(&["default", "legacy", "web-sa"])
        );
        assert_eq!(
            got["a"].secrets,
            names(&[
                "db-token-binding-bbbbbbbb",
                "old-token-binding-cccccccc",
                "plain",
                "web-token-binding-aaaaaaaa",
            ])
        );
        assert_eq!(got["a"].config_maps, names(&["cm", "kube-root-ca.crt"]));
        assert_eq!(got["b"].token_service_accounts, names(&["web-sa"]));
        assert_eq!(got["b"].secrets, names(&["web-token-binding-dddddddd"]));
        let rule = role_rules(&got["b"]).pop().unwrap();
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(
            rule.resources.as_deref(),
            Some(&["serviceaccounts/token".to_string()][..])
        );
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["web-sa".to_string()][..])
        );
        assert_eq!(rule.verbs, ["create"]);
        let n2 = node_grants("n2", &pods);
        assert_eq!(n2["a"].token_service_accounts, names(&["their-sa"]));
        assert_eq!(n2["a"].secrets, names(&["theirs-token-binding-eeeeeeee"]));
        // No token source: no token grant.
        let plain = node_grants("n1", [&pods[5]]);
        assert!(plain["a"].token_service_accounts.is_empty());
        assert!(role_rules(&plain["a"]).iter().all(|r| r.verbs == ["get"]));
    }
}
