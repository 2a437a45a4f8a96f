//! The pure core of the node authorizer: what each node may read, and the RBAC writes
//! that make the cluster say so.
//!
//! Upstream's Node authorizer (plugin/pkg/auth/authorizer/node) keeps a graph of
//! pod → node edges and allows `system:node:<name>` to get a Secret or ConfigMap only
//! when a pod bound to that node refers to it. rekube cannot add an authorizer to the
//! apiserver it runs on, so it writes the graph down as RBAC: for each node, in each
//! namespace with pods bound to it that refer to Secrets or ConfigMaps, a Role granting
//! `get` on exactly those names (`resourceNames`) and a RoleBinding to the node's
//! ServiceAccount; and that ServiceAccount while the Node exists.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleBinding, RoleRef, Subject};
use rekube_crds::Pod;
use rekube_crds::node_identity::node_role_name;
use rekube_crds::pod_refs::{pod_config_map_names, pod_secret_names};

/// What one node may read in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
}

impl Grant {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.config_maps.is_empty()
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
        let (secrets, config_maps) = (pod_secret_names(spec), pod_config_map_names(spec));
        if secrets.is_empty() && config_maps.is_empty() {
            continue;
        }
        let g = out.entry(ns.clone()).or_default();
        g.secrets.extend(secrets);
        g.config_maps.extend(config_maps);
    }
    out
}

/// The Role's rules for a grant: `get` on the named Secrets, then on the named ConfigMaps.
pub fn role_rules(grant: &Grant) -> Vec<PolicyRule> {
    let rule = |resource: &str, names: &BTreeSet<String>| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.to_string()]),
        resource_names: Some(names.iter().cloned().collect()),
        verbs: vec!["get".to_string()],
        ..Default::default()
    };
    let mut rules = Vec::new();
    if !grant.secrets.is_empty() {
        rules.push(rule("secrets", &grant.secrets));
    }
    if !grant.config_maps.is_empty() {
        rules.push(rule("configmaps", &grant.config_maps));
    }
    rules
}

/// The binding's role reference and subject: the node's ServiceAccount.
pub fn binding_parts(node: &str, identity_namespace: &str) -> (RoleRef, Vec<Subject>) {
    (
        RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: node_role_name(node),
        },
        vec![Subject {
            kind: "ServiceAccount".into(),
            name: node.to_string(),
            namespace: Some(identity_namespace.to_string()),
            ..Default::default()
        }],
    )
}

/// Whether an existing binding is the one [`binding_parts`] describes.
pub fn binding_is_current(b: &RoleBinding, node: &str, identity_namespace: &str) -> bool {
    let (role_ref, subjects) = binding_parts(node, identity_namespace);
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
    fn rules_name_exactly_the_references() {
        let g = Grant {
            secrets: names(&["s2", "s1"]),
            config_maps: BTreeSet::new(),
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
            config_maps: BTreeSet::new(),
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
}
