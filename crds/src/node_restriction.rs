//! Upstream's NodeRestriction admission plugin (plugin/pkg/admission/noderestriction) for
//! rekube-node-agent, as a ValidatingAdmissionPolicy keyed on the agent's identity.
//!
//! Every agent runs as the one ServiceAccount of the chart's DaemonSet, so RBAC alone lets
//! any agent write any Node, Lease and Pod. The agent's token is bound to its Pod (or, for
//! an agent outside the cluster, to a Node: `kubectl create token SA --bound-object-kind
//! Node --bound-object-name NODE`), and the apiserver then puts the node's name in the
//! user's extra info (`authentication.kubernetes.io/node-name`, GA with
//! ServiceAccountTokenPodNodeInfo and ServiceAccountTokenNodeBinding). The policy
//! reads that name as upstream reads `system:node:<name>` and allows a request of the
//! agent's ServiceAccount only on its own objects:
//! - rekube Nodes (and their status): only the one of that name; no taint changes on
//!   update; no `node-restriction.kubernetes.io` labels and no `kubernetes.io`/`k8s.io`
//!   labels but the kubelet's own (upstream's `getForbiddenLabels`);
//! - rekube Pods: the status only of pods whose `spec.nodeName` is the node, without label
//!   changes; an update (the agent's finalizer, which upstream's kubelet does not have)
//!   only of such pods and only to add or remove [`AGENT_FINALIZER`]; a delete only of
//!   such pods;
//! - Leases: only in the node lease namespace, only the one named after the node;
//! - TokenRequests (`serviceaccounts/token`): rekube's addition for the node authorizer
//!   ([`crate::node_identity`]): only for the node's own ServiceAccount (named after the
//!   node, in the node identity namespace), and only bound to the node's Node object
//!   (its name and UID as the agent's token carries them), so the token dies with it;
//! - a request without the node's name (a token bound to nothing) is refused for all of
//!   these and for events, as upstream refuses a node identity without a name.
//!
//! The messages are upstream's where upstream has the rule. The policy lives in the Helm
//! chart only (`templates/node-restriction.yaml`, see [`crate::generate`]): its match is
//! the agent's ServiceAccount, whose name and namespace are the release's.
use serde_json::{Value, json};

use crate::GROUP;
use crate::node_identity::NODE_UID_EXTRA;

/// The finalizer rekube-node-agent holds on the pods it runs (node-agent's
/// `hollow::FINALIZER`).
pub const AGENT_FINALIZER: &str = crate::NODE_AGENT_FINALIZER;

/// The user info key where a node-bound or pod-bound token carries the node's name.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// What the policy is about: its object name, the agent's user name
/// (`system:serviceaccount:NS:NAME`), the node lease namespace and the node identity
/// namespace. Strings placed in CEL literals: they must not hold a `'` or a `\`.
pub struct Identity<'a> {
    pub policy_name: &'a str,
    pub username: &'a str,
    pub lease_namespace: &'a str,
    pub identity_namespace: &'a str,
}

/// Labels a kubelet may set on its own Node (k8s.io/kubelet/pkg/apis `kubeletLabels`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// CEL: `ns` (a label key's prefix) is `domain` or a subdomain of it.
fn in_domain(ns: &str, domain: &str) -> String {
    format!("({ns} == '{domain}' || {ns}.endsWith('.{domain}'))")
}

/// CEL: label key `k` is one a node may not add, remove or change
/// (noderestriction `getForbiddenLabels` with kubelet's `IsKubeletLabel`).
fn forbidden_label(k: &str) -> String {
    // The key's prefix, `getLabelNamespace` (no cel.bind in admission policies).
    let ns = format!("({k}.indexOf('/') >= 0 ? {k}.substring(0, {k}.indexOf('/')) : '')");
    let ns = ns.as_str();
    let kubelet = KUBELET_LABELS
        .iter()
        .map(|l| format!("'{l}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{restricted} || (({kube} || {k8s}) && !({k} in [{kubelet}] || {kubelet_ns} || {node_ns}))",
        restricted = in_domain(ns, "node-restriction.kubernetes.io"),
        kube = in_domain(ns, "kubernetes.io"),
        k8s = in_domain(ns, "k8s.io"),
        kubelet_ns = in_domain(ns, "kubelet.kubernetes.io"),
        node_ns = in_domain(ns, "node.kubernetes.io"),
    )
}

/// CEL: the string `s` quoted as Go's `%q` quotes a plain name.
fn quoted(s: &str) -> String {
    format!("'\"' + {s} + '\"'")
}

fn check(expression: String, message_expression: String) -> Value {
    json!({ "expression": expression, "messageExpression": message_expression, "reason": "Forbidden" })
}

fn rule(group: &str, resources: &[&str], operations: &[&str]) -> Value {
    json!({ "apiGroups": [group], "apiVersions": ["v1"], "resources": resources, "operations": operations })
}

/// The policy and its binding, in apply order.
pub fn objects(id: &Identity) -> Vec<Value> {
    let node = quoted("variables.nodeName");
    // Each rule applies to a request with a node name (the first check reports the
    // others) on the resource it names.
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|o| format!("'{o}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let on = |resources: &[&str], operations: &[&str], cond: &str| {
        format!(
            "variables.nodeName == '' || !(variables.resource in [{}]) || \
             !(request.operation in [{}]) || ({cond})",
            list(resources),
            list(operations)
        )
    };
    let nodes: &[&str] = &["nodes", "nodes/status"];
    let labels = |o: &str| format!("(has({o}.metadata.labels) ? {o}.metadata.labels : {{}})");
    let finalizers = |o: &str| {
        format!(
            "(has({o}.metadata.finalizers) ? {o}.metadata.finalizers : []).filter(f, f != '{AGENT_FINALIZER}')"
        )
    };
    let meta_field = |o: &str, f: &str, empty: &str| {
        format!("(has({o}.metadata.{f}) ? {o}.metadata.{f} : {empty})")
    };
    let taints =
        |o: &str| format!("(has({o}.spec) && has({o}.spec.taints) ? {o}.spec.taints : [])");
    let bound = "has(oldObject.spec) && has(oldObject.spec.nodeName) && oldObject.spec.nodeName == variables.nodeName";
    let validations = vec![
        check(
            "variables.nodeName != ''".into(),
            format!(
                "'could not determine node from user ' + {}",
                quoted("request.userInfo.username")
            ),
        ),
        // admitNode
        check(
            "variables.nodeName == '' || !(variables.resource in ['nodes', 'nodes/status']) || variables.name == variables.nodeName".into(),
            format!("'node ' + {node} + ' is not allowed to modify node ' + {}", quoted("variables.name")),
        ),
        check(
            on(nodes, &["CREATE"], "size(variables.forbiddenLabels) == 0"),
            format!("'node ' + {node} + ' is not allowed to set the following labels: ' + variables.forbiddenLabels.join(', ')"),
        ),
        check(
            on(nodes, &["UPDATE"], "size(variables.forbiddenLabels) == 0"),
            "'is not allowed to modify labels: ' + variables.forbiddenLabels.join(', ')".into(),
        ),
        check(
            on(nodes, &["UPDATE"], &format!("{} == {}", taints("object"), taints("oldObject"))),
            format!("'node ' + {node} + ' is not allowed to modify taints'"),
        ),
        // admitPod: delete; update is rekube's (the agent's finalizer)
        check(
            on(&["pods"], &["DELETE"], bound),
            format!("'node ' + {node} + ' can only delete pods with spec.nodeName set to itself'"),
        ),
        check(
            on(&["pods"], &["UPDATE"], bound),
            format!("'node ' + {node} + ' can only update pods with spec.nodeName set to itself'"),
        ),
        check(
            on(
                &["pods"],
                &["UPDATE"],
                &format!(
                    "!({bound}) || ({fin_new} == {fin_old} && {lab_new} == {lab_old} && \
                     {ann_new} == {ann_old} && {own_new} == {own_old} && object.spec == oldObject.spec)",
                    fin_new = finalizers("object"),
                    fin_old = finalizers("oldObject"),
                    lab_new = labels("object"),
                    lab_old = labels("oldObject"),
                    ann_new = meta_field("object", "annotations", "{}"),
                    ann_old = meta_field("oldObject", "annotations", "{}"),
                    own_new = meta_field("object", "ownerReferences", "[]"),
                    own_old = meta_field("oldObject", "ownerReferences", "[]"),
                ),
            ),
            format!("'node ' + {node} + ' can only add or remove the finalizer \"{AGENT_FINALIZER}\" of its pods'"),
        ),
        // admitPodStatus
        check(
            on(&["pods/status"], &["UPDATE"], bound),
            format!("'node ' + {node} + ' can only update pod status for pods with spec.nodeName set to itself'"),
        ),
        check(
            on(
                &["pods/status"],
                &["UPDATE"],
                &format!("{} == {}", labels("object"), labels("oldObject")),
            ),
            format!("'node ' + {node} + ' cannot update labels through pod status'"),
        ),
        // admitLease
        check(
            on(
                &["leases"],
                &["CREATE", "UPDATE", "DELETE"],
                &format!("request.namespace == '{}'", id.lease_namespace),
            ),
            format!(
                "'can only access leases in the \"{}\" system namespace'",
                id.lease_namespace
            ),
        ),
        check(
            on(&["leases"], &["CREATE", "UPDATE", "DELETE"], "variables.name == variables.nodeName"),
            "'can only access node lease with the same name as the requesting node'".into(),
        ),
        // rekube's: the node's own identity for reading its pods' Secrets and ConfigMaps
        check(
            on(
                &["serviceaccounts/token"],
                &["CREATE"],
                &format!(
                    "request.namespace == '{ns}' && request.name == variables.nodeName",
                    ns = id.identity_namespace
                ),
            ),
            format!(
                "'node ' + {node} + ' can only request a token for its own service account ' + {}",
                quoted(&format!("'{}/' + variables.nodeName", id.identity_namespace))
            ),
        ),
        check(
            on(
                &["serviceaccounts/token"],
                &["CREATE"],
                &format!(
                    "has(object.spec.boundObjectRef) && \
                     object.spec.boundObjectRef.apiVersion == 'v1' && \
                     object.spec.boundObjectRef.kind == 'Node' && \
                     object.spec.boundObjectRef.name == variables.nodeName && \
                     has(object.spec.boundObjectRef.uid) && \
                     '{NODE_UID_EXTRA}' in request.userInfo.extra && \
                     object.spec.boundObjectRef.uid in request.userInfo.extra['{NODE_UID_EXTRA}']"
                ),
            ),
            format!("'node ' + {node} + ' requested a token not bound to its own Node'"),
        ),
    ];
    let modified = format!(
        "{new}.filter(k, !(k in {old}) || {old}[k] != {new}[k]) + {old}.filter(k, !(k in {new}))",
        new = "variables.newLabels",
        old = "variables.oldLabels",
    );
    let variables = json!([
        {"name": "nodeName", "expression": format!(
            "'{NODE_NAME_EXTRA}' in request.userInfo.extra && \
             size(request.userInfo.extra['{NODE_NAME_EXTRA}']) == 1 ? \
             request.userInfo.extra['{NODE_NAME_EXTRA}'][0] : ''")},
        {"name": "resource", "expression":
            "!has(request.subResource) || request.subResource == '' ? request.resource.resource : request.resource.resource + '/' + request.subResource"},
        // On create the name is the object's (upstream: "a.GetName() won't return the
        // name on create").
        {"name": "name", "expression":
            "request.operation == 'CREATE' && has(object.metadata.name) ? object.metadata.name : request.name"},
        {"name": "newLabels", "expression":
            format!("request.operation == 'DELETE' ? {{}} : {}", labels("object"))},
        {"name": "oldLabels", "expression":
            format!("request.operation == 'CREATE' ? {{}} : {}", labels("oldObject"))},
        {"name": "forbiddenLabels", "expression": format!(
            "!(variables.resource in ['nodes', 'nodes/status']) || request.operation == 'DELETE' ? [] : \
             ({modified}).filter(k, {}).sort()", forbidden_label("k"))},
    ]);
    let name = id.policy_name;
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [
                    rule(GROUP, &["nodes"], &["CREATE", "UPDATE", "DELETE"]),
                    rule(GROUP, &["nodes/status"], &["UPDATE"]),
                    rule(GROUP, &["pods"], &["UPDATE", "DELETE"]),
                    rule(GROUP, &["pods/status"], &["UPDATE"]),
                    rule("coordination.k8s.io", &["leases"], &["CREATE", "UPDATE", "DELETE"]),
                    rule("events.k8s.io", &["events"], &["CREATE", "UPDATE"]),
                    rule("", &["serviceaccounts/token"], &["CREATE"]),
                ]},
                "matchConditions": [{
                    "name": "node-agent",
                    "expression": format!("request.userInfo.username == '{}'", id.username),
                }],
                "variables": variables,
                "validations": validations,
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": name },
            "spec": { "policyName": name, "validationActions": ["Deny"] },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Value {
        objects(&Identity {
            policy_name: "r-node-agent-node-restriction",
            username: "system:serviceaccount:ns:r-node-agent",
            lease_namespace: "leases",
            identity_namespace: "ids",
        })
        .remove(0)
    }

    #[test]
    fn matches_only_the_agents_service_account() {
        let p = policy();
        assert_eq!(
            p["spec"]["matchConditions"][0]["expression"],
            "request.userInfo.username == 'system:serviceaccount:ns:r-node-agent'"
        );
    }

    #[test]
    fn every_check_but_the_first_lets_a_nameless_request_through_to_the_first() {
        let p = policy();
        let checks = p["spec"]["validations"].as_array().unwrap();
        assert_eq!(checks[0]["expression"], "variables.nodeName != ''");
        for c in &checks[1..] {
            assert!(
                c["expression"]
                    .as_str()
                    .unwrap()
                    .starts_with("variables.nodeName == '' || "),
                "{c}"
            );
        }
    }

    #[test]
    fn the_kubelet_labels_are_upstreams() {
        let f = forbidden_label("k");
        for l in KUBELET_LABELS {
            assert!(f.contains(&format!("'{l}'")));
        }
        assert!(f.starts_with(
            "((k.indexOf('/') >= 0 ? k.substring(0, k.indexOf('/')) : '') == 'node-restriction.kubernetes.io'"
        ));
    }
}
