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
//!   these and for events, as upstream refuses a node identity without a name;
//! - claims' status (`persistentvolumeclaims/status`), written by the nodes' own
//!   identities after a filesystem expansion: only the capacity, the conditions and the
//!   allocated resources and their statuses (upstream's admitPVCStatus), in a policy of
//!   its own matching those identities;
//! - TokenRequests of the nodes' own identities (for their pods' ServiceAccounts, which
//!   the node authorizer grants): only bound to one of their pods' token binding Secrets
//!   ([`crate::token_binding`]), upstream's admitServiceAccount; and none at all of
//!   rekube-controllers, which holds the permission only to grant it; a policy of its
//!   own ([`token_request_objects`]);
//! - PodCertificateRequests of the nodes' own identities: upstream's
//!   admitPodCertificateRequest as far as a policy can check it (the node, its pod, the
//!   ServiceAccount), and none at all of rekube-controllers; a policy of its own
//!   ([`pod_certificate_request_objects`]).
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
    /// rekube-controllers' user name: it holds `create` on `serviceaccounts/token` only
    /// to grant it to nodes, and may request no token ([`token_request_objects`]).
    pub controllers_username: &'a str,
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
    let mut objects = vec![
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
    ];
    objects.extend(claim_status_objects(id));
    objects.extend(token_request_objects(id));
    objects.extend(pod_certificate_request_objects(id));
    objects
}

/// upstream's admitPodCertificateRequest for the nodes' own identities, and a refusal
/// for rekube-controllers, in a policy of its own (`<policy name>-pod-certificates`)
/// matching both on podcertificaterequests creates (`certificates.k8s.io`, any version).
/// A node identity's request must name:
/// - the node (`spec.nodeName`, upstream's message); not its UID (`spec.nodeUID` is the
///   rekube Node's, which no part of the request carries: the node's token is bound to
///   the core Node);
/// - a pod of the node: one the node may `get` (the node authorizer grants a node `get`
///   by name on exactly its pods that project a podCertificate), owning the request
///   (exactly one owner reference, the rekube.io/v1 Pod `spec.podName` with UID
///   `spec.podUID`, as the agent sets it: the garbage collector deletes a request whose
///   owner UID is not the pod's);
/// - a ServiceAccount the node may `get`: the node authorizer grants that on exactly the
///   ServiceAccounts of the node's podCertificate pods.
///
/// The pod's UID itself and that the ServiceAccount is that pod's (not another
/// podCertificate pod's of the node in the namespace) are not checked: an admission
/// policy cannot read the pod.
///
/// rekube-controllers holds `create` on podcertificaterequests only so that RBAC lets it
/// write the nodes' Roles; it creates none, and any create of it is refused.
fn pod_certificate_request_objects(id: &Identity) -> Vec<Value> {
    let name = format!("{}-pod-certificates", id.policy_name);
    let prefix = format!("system:serviceaccount:{}:", id.identity_namespace);
    let controllers = format!("request.userInfo.username == '{}'", id.controllers_username);
    let node = quoted("variables.nodeName");
    let pod = quoted("request.namespace + '/' + object.spec.podName");
    let node_check = |cond: &str| format!("{controllers} || ({cond})");
    let owner = "object.metadata.?ownerReferences.orValue([])";
    let validations = vec![
        check(
            format!("!({controllers})"),
            "'rekube-controllers may not create PodCertificateRequests: it holds create on \
             podcertificaterequests only to grant it to nodes'"
                .into(),
        ),
        check(
            node_check("object.spec.nodeName == variables.nodeName"),
            format!(
                "'PodCertificateRequest.Spec.NodeName=' + {} + ', which is not the requesting node ' + {node}",
                quoted("object.spec.nodeName")
            ),
        ),
        check(
            node_check(
                "authorizer.group('rekube.io').resource('pods').namespace(request.namespace)\
                 .name(object.spec.podName).check('get').allowed()",
            ),
            format!(
                "'pod ' + {pod} + ' is not running on node ' + {node} + ' named in the PodCertificateRequest'"
            ),
        ),
        check(
            node_check(&format!(
                "size({owner}) == 1 && {owner}[0].apiVersion == '{GROUP}/v1' && \
                 {owner}[0].kind == 'Pod' && {owner}[0].name == object.spec.podName && \
                 {owner}[0].uid == object.spec.podUID"
            )),
            format!(
                "'PodCertificateRequest for pod ' + {pod} + ' must have exactly one owner reference: \
                 the {GROUP}/v1 Pod ' + {} + ' with UID ' + {}",
                quoted("object.spec.podName"),
                quoted("object.spec.podUID")
            ),
        ),
        check(
            node_check(
                "authorizer.group('').resource('serviceaccounts').namespace(request.namespace)\
                 .name(object.spec.serviceAccountName).check('get').allowed()",
            ),
            format!(
                "'PodCertificateRequest for pod ' + {pod} + ' contains serviceAccountName (' + {} + \
                 ') that is the service account of no podCertificate pod of node ' + {node}",
                quoted("object.spec.serviceAccountName")
            ),
        ),
    ];
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [{
                    "apiGroups": ["certificates.k8s.io"],
                    "apiVersions": ["*"],
                    "resources": ["podcertificaterequests"],
                    "operations": ["CREATE"],
                }]},
                "matchConditions": [{
                    "name": "node-identities-and-controllers",
                    "expression": format!(
                        "(request.userInfo.username.startsWith('{prefix}') && \
                         request.userInfo.username != '{agent}') || {controllers}",
                        agent = id.username
                    ),
                }],
                "variables": [{
                    "name": "nodeName",
                    // The ServiceAccount's name: the node's (a node name holds no ':').
                    "expression": "request.userInfo.username.substring(request.userInfo.username.lastIndexOf(':') + 1)",
                }],
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

/// The pattern of a token binding Secret's name
/// ([`crate::token_binding::token_binding_secret_name`]: a pod UID's first 8 characters
/// last).
const TOKEN_BINDING_NAME_PATTERN: &str = "-token-binding-[0-9a-f]{8}$";

/// upstream's admitServiceAccount for the nodes' own identities, and a refusal for
/// rekube-controllers, in a policy of its own (`<policy name>-tokens`) matching both on
/// `serviceaccounts/token` creates:
/// - a node identity (a ServiceAccount of the node identity namespace other than the
///   agents'), which the node authorizer lets request tokens of its pods'
///   ServiceAccounts, must bind each to a Secret (apiVersion v1, with its UID) named as
///   a token binding Secret, and one it may read: the node authorizer grants a node `get`
///   on exactly its pods' binding Secrets (and the Secrets they refer to), so the token
///   dies with one of its pods (upstream: "node requested token not bound to a pod", and
///   the pod must be on the node). Without this a node could mint unbound tokens of its
///   pods' ServiceAccounts that outlive them;
/// - rekube-controllers holds `create` on `serviceaccounts/token` only so that RBAC lets
///   it write the nodes' Roles; it requests no token, and any request of it is refused.
fn token_request_objects(id: &Identity) -> Vec<Value> {
    let name = format!("{}-tokens", id.policy_name);
    let prefix = format!("system:serviceaccount:{}:", id.identity_namespace);
    let controllers = format!("request.userInfo.username == '{}'", id.controllers_username);
    let node = quoted("variables.nodeName");
    let reference = "object.spec.boundObjectRef";
    let bound_to_named_secret = format!(
        "has({reference}) && has({reference}.apiVersion) && {reference}.apiVersion == 'v1' && \
         has({reference}.kind) && {reference}.kind == 'Secret' && \
         has({reference}.uid) && {reference}.uid != '' && \
         has({reference}.name) && {reference}.name.matches('{TOKEN_BINDING_NAME_PATTERN}')"
    );
    let readable = format!(
        "authorizer.group('').resource('secrets').namespace(request.namespace)\
         .name({reference}.name).check('get').allowed()"
    );
    let validations = vec![
        check(
            format!("!({controllers})"),
            "'rekube-controllers may not request service account tokens: it holds create on \
             serviceaccounts/token only to grant it to nodes'"
                .into(),
        ),
        check(
            format!("{controllers} || ({bound_to_named_secret})"),
            format!("'node ' + {node} + ' requested a token not bound to a token binding secret'"),
        ),
        check(
            format!("{controllers} || !({bound_to_named_secret}) || {readable}"),
            format!(
                "'node ' + {node} + ' requested a token bound to secret ' + \
                 {} + ', the token binding of none of its pods'",
                quoted(&format!("{reference}.name"))
            ),
        ),
    ];
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [
                    rule("", &["serviceaccounts/token"], &["CREATE"]),
                ]},
                "matchConditions": [{
                    "name": "node-identities-and-controllers",
                    "expression": format!(
                        "(request.userInfo.username.startsWith('{prefix}') && \
                         request.userInfo.username != '{agent}') || {controllers}",
                        agent = id.username
                    ),
                }],
                "variables": [{
                    "name": "nodeName",
                    // The ServiceAccount's name: the node's (a node name holds no ':').
                    "expression": "request.userInfo.username.substring(request.userInfo.username.lastIndexOf(':') + 1)",
                }],
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

/// The fields of a claim's status a node may write (upstream's admitPVCStatus with
/// RecoverVolumeExpansionFailure): the filesystem expansion's result.
pub const CLAIM_STATUS_FIELDS: [&str; 4] = [
    "capacity",
    "conditions",
    "allocatedResources",
    "allocatedResourceStatuses",
];

/// upstream's admitPVCStatus for the nodes' own identities (the ServiceAccounts named
/// after the nodes in the node identity namespace, which the node authorizer lets update
/// the status of their pods' claims, [`crate::node_identity`]): an update of
/// `persistentvolumeclaims/status` may change only [`CLAIM_STATUS_FIELDS`] (and the
/// resourceVersion and managedFields), with upstream's message. A policy of its own: it
/// matches the node identities, not the agents' ServiceAccount.
fn claim_status_objects(id: &Identity) -> Vec<Value> {
    let name = format!("{}-claim-status", id.policy_name);
    let prefix = format!("system:serviceaccount:{}:", id.identity_namespace);
    let fields = CLAIM_STATUS_FIELDS
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let same_except = |new: &str, old: &str, except: &str| {
        format!(
            "({new}.all(k, k in {except} || (k in {old} && {new}[k] == {old}[k])) && \
             {old}.all(k, k in {except} || k in {new}))"
        )
    };
    let changed = |new: &str, old: &str, except: &str, prefix: &str| {
        format!(
            "({new}.filter(k, !(k in {except}) && !(k in {old} && {new}[k] == {old}[k])) + \
             {old}.filter(k, !(k in {except}) && !(k in {new}))).map(k, '{prefix}.' + k)"
        )
    };
    let status = |o: &str| format!("{o}.?status.orValue({{}})");
    let metadata_except = "['resourceVersion', 'managedFields']";
    let status_except = format!("[{fields}]");
    let expression = format!(
        "{} && {} && {}.?spec.orValue({{}}) == {}.?spec.orValue({{}})",
        same_except("object.metadata", "oldObject.metadata", metadata_except),
        same_except(&status("object"), &status("oldObject"), &status_except),
        "object",
        "oldObject",
    );
    let message = format!(
        "'node ' + {node} + ' is not allowed to update fields other than status.quantity and status.conditions: ' + \
         ({} + {} + ({}.?spec.orValue({{}}) == {}.?spec.orValue({{}}) ? [] : ['spec'])).join(', ')",
        changed(
            "object.metadata",
            "oldObject.metadata",
            metadata_except,
            "metadata"
        ),
        changed(
            &status("object"),
            &status("oldObject"),
            &status_except,
            "status"
        ),
        "object",
        "oldObject",
        node = quoted("variables.nodeName"),
    );
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [
                    rule(GROUP, &["persistentvolumeclaims/status"], &["UPDATE"]),
                ]},
                "matchConditions": [{
                    "name": "node-identity",
                    "expression": format!("request.userInfo.username.startsWith('{prefix}')"),
                }],
                "variables": [{
                    "name": "nodeName",
                    // The ServiceAccount's name: the node's (a node name holds no ':').
                    "expression": "request.userInfo.username.substring(request.userInfo.username.lastIndexOf(':') + 1)",
                }],
                "validations": [check(expression, message)],
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
            controllers_username: "system:serviceaccount:ns:r-controllers",
        })
        .remove(0)
    }

    #[test]
    fn the_claim_status_policy_matches_the_node_identities() {
        let objects = objects(&Identity {
            policy_name: "r-node-agent-node-restriction",
            username: "system:serviceaccount:ns:r-node-agent",
            lease_namespace: "leases",
            identity_namespace: "ids",
            controllers_username: "system:serviceaccount:ns:r-controllers",
        });
        assert_eq!(objects.len(), 8);
        let p = &objects[2];
        assert_eq!(
            p["metadata"]["name"],
            "r-node-agent-node-restriction-claim-status"
        );
        assert_eq!(
            p["spec"]["matchConditions"][0]["expression"],
            "request.userInfo.username.startsWith('system:serviceaccount:ids:')"
        );
        assert_eq!(
            p["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
            json!(["persistentvolumeclaims/status"])
        );
        assert_eq!(objects[3]["spec"]["policyName"], p["metadata"]["name"]);
    }

    #[test]
    fn the_pod_certificate_policy_matches_node_identities_and_the_controllers() {
        let objects = objects(&Identity {
            policy_name: "r-node-agent-node-restriction",
            username: "system:serviceaccount:ns:r-node-agent",
            lease_namespace: "leases",
            identity_namespace: "ids",
            controllers_username: "system:serviceaccount:ns:r-controllers",
        });
        let p = &objects[6];
        assert_eq!(
            p["metadata"]["name"],
            "r-node-agent-node-restriction-pod-certificates"
        );
        assert_eq!(objects[7]["spec"]["policyName"], p["metadata"]["name"]);
        assert_eq!(
            p["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
            json!(["podcertificaterequests"])
        );
        let checks = p["spec"]["validations"].as_array().unwrap();
        assert_eq!(
            checks[0]["expression"],
            "!(request.userInfo.username == 'system:serviceaccount:ns:r-controllers')"
        );
        for c in &checks[1..] {
            assert!(
                c["expression"].as_str().unwrap().starts_with(
                    "request.userInfo.username == 'system:serviceaccount:ns:r-controllers' || ("
                ),
                "{c}"
            );
        }
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

    #[test]
    fn the_token_policy_matches_node_identities_and_the_controllers() {
        let objects = objects(&Identity {
            policy_name: "r-node-agent-node-restriction",
            username: "system:serviceaccount:ns:r-node-agent",
            lease_namespace: "leases",
            identity_namespace: "ids",
            controllers_username: "system:serviceaccount:ns:r-controllers",
        });
        let p = &objects[4];
        assert_eq!(
            p["metadata"]["name"],
            "r-node-agent-node-restriction-tokens"
        );
        assert_eq!(objects[5]["spec"]["policyName"], p["metadata"]["name"]);
        assert_eq!(
            p["spec"]["matchConditions"][0]["expression"],
            "(request.userInfo.username.startsWith('system:serviceaccount:ids:') && \
             request.userInfo.username != 'system:serviceaccount:ns:r-node-agent') || \
             request.userInfo.username == 'system:serviceaccount:ns:r-controllers'"
        );
        assert_eq!(
            p["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
            json!(["serviceaccounts/token"])
        );
        // The name pattern is the binding Secrets' names'.
        let name = crate::token_binding::token_binding_secret_name(
            "web-0",
            "3f1c2a9e-77aa-4c4b-9e0e-0123456789ab",
        );
        let suffix = &name[name.len() - "-token-binding-3f1c2a9e".len()..];
        assert_eq!(suffix, "-token-binding-3f1c2a9e");
        assert!(
            p["spec"]["validations"][1]["expression"]
                .as_str()
                .unwrap()
                .contains(TOKEN_BINDING_NAME_PATTERN)
        );
    }
}
