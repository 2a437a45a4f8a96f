//! Upstream defaults that depend on other fields, which a schema `default` cannot express,
//! as a MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA in 1.36) that the
//! apiserver applies to rekube objects on create and update:
//! - `imagePullPolicy` (SetDefaults_Container): Always when the image's tag is `latest`
//!   or absent without a digest, else IfNotPresent; in Pods and in Deployment and
//!   ReplicaSet templates.
//! - a Service port's `targetPort` (SetDefaults_Service): the port itself.
//! - a Pod's `priority` 0 and `preemptionPolicy` PreemptLowerPriority (the Priority
//!   admission plugin, for pods without a priority class).
//! - a Service update without `clusterIP`/`clusterIPs` keeps the stored ones (the service
//!   registry's patchAllocatedValues).
//!
//! Validation that compares across unbounded lists or maps, too costly for a CRD's static
//! CEL budget, is a ValidatingAdmissionPolicy ([`validating_objects`]):
//! - a Deployment's or ReplicaSet's selector must match its template's labels;
//! - container names are unique across containers, initContainers and ephemeralContainers;
//! - a Service's targetPort is a port number or an IANA service name.
//!
//! The mutating policy merges by apply configuration, so it relies on the container and port lists
//! being `listType=map` (see [`crate::validation`]).
use serde_json::{Value, json};

use crate::GROUP;
use crate::validation::QUALIFIED_NAME;

/// CEL: the pull policy upstream picks for container `c` without one.
const PULL_POLICY: &str = "c.image.contains('@') || \
    (c.image.substring(c.image.lastIndexOf('/') + 1).contains(':') && !c.image.endsWith(':latest')) \
    ? 'IfNotPresent' : 'Always'";

/// CEL building the apply configuration (absent lists stay absent) for the container lists of a PodSpec reached by
/// `obj` (`object.spec`) and typed `ty` (`Object.spec`).
fn pull_policy_patch(obj: &str, ty: &str) -> String {
    let lists = ["containers", "initContainers", "ephemeralContainers"]
        .map(|l| {
            format!(
                "?{l}: has({obj}.{l}) ? optional.of({obj}.{l}.filter(c, !has(c.imagePullPolicy)).map(c, \
                 {ty}.{l}{{name: c.name, imagePullPolicy: {PULL_POLICY}}})) : optional.none()"
            )
        })
        .join(", ");
    format!("{ty}{{{lists}}}")
}

fn match_constraints(resources: &[&str]) -> Value {
    json!({
        "resourceRules": [{
            "apiGroups": [GROUP], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"], "resources": resources,
        }],
    })
}

/// CEL: the items of the list at `list` have unique `key`s. The mutating policies merge by
/// list-map key, so they skip an object with duplicates and leave the schema validation to
/// report the "Duplicate value" itself.
fn unique_keys(list: &str, key: &str) -> String {
    format!("(!has({list}) || {list}.all(x, {list}.exists_one(y, y.{key} == x.{key})))")
}

fn unique_container_keys(spec: &str) -> String {
    ["containers", "initContainers", "ephemeralContainers"]
        .map(|l| unique_keys(&format!("{spec}.{l}"), "name"))
        .join(" && ")
}

fn policy(name: &str, resources: &[&str], unique: String, mutations: Vec<Value>) -> [Value; 2] {
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "matchConstraints": match_constraints(resources),
                "matchConditions": [{ "name": "unique-list-keys", "expression": unique }],
                "failurePolicy": "Fail",
                "reinvocationPolicy": "IfNeeded",
                "mutations": mutations,
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": { "name": name },
            "spec": { "policyName": name },
        }),
    ]
}

/// A ValidatingAdmissionPolicy and what it checks.
pub struct ValidatingPolicy {
    pub name: &'static str,
    pub resources: &'static [&'static str],
    pub operations: &'static [&'static str],
    /// `(name, expression)`: referred to as `variables.<name>` by the validations.
    pub variables: Vec<(&'static str, String)>,
    pub validations: Vec<Value>,
}

impl ValidatingPolicy {
    /// The policy and its binding.
    pub fn objects(self) -> [Value; 2] {
        let mut constraints = match_constraints(self.resources);
        constraints["resourceRules"][0]["operations"] = json!(self.operations);
        let mut spec = json!({
            "matchConstraints": constraints,
            "failurePolicy": "Fail",
            "validations": self.validations,
        });
        if !self.variables.is_empty() {
            spec["variables"] = self
                .variables
                .iter()
                .map(|(name, expression)| json!({ "name": name, "expression": expression }))
                .collect();
        }
        [
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": { "name": self.name },
                "spec": spec,
            }),
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": { "name": self.name },
                "spec": { "policyName": self.name, "validationActions": ["Deny"] },
            }),
        ]
    }
}

fn validating_policy(
    name: &'static str,
    resources: &'static [&'static str],
    validations: Vec<Value>,
) -> [Value; 2] {
    ValidatingPolicy {
        name,
        resources,
        operations: &["CREATE", "UPDATE"],
        variables: Vec::new(),
        validations,
    }
    .objects()
}

/// A validation with a fixed message.
pub fn check(expression: String, message: &str, reason: &str) -> Value {
    json!({ "expression": expression, "message": message, "reason": reason })
}

/// A validation whose message is a CEL string expression, evaluated when it fails.
pub fn check_with_message(expression: String, message_expression: String, reason: &str) -> Value {
    json!({ "expression": expression, "messageExpression": message_expression, "reason": reason })
}

/// CEL: container names of the PodSpec at `spec` are unique across its three lists.
fn unique_container_names(spec: &str) -> String {
    format!(
        "((has({spec}.initContainers) ? {spec}.initContainers.map(c, c.name) : []) + \
         (has({spec}.ephemeralContainers) ? {spec}.ephemeralContainers.map(c, c.name) : [])) \
         .all(n, !{spec}.containers.exists(c, c.name == n)) && \
         (!has({spec}.initContainers) || !has({spec}.ephemeralContainers) || \
         {spec}.initContainers.all(i, !{spec}.ephemeralContainers.exists(e, e.name == i.name)))"
    )
}

/// CEL: the selector of `object.spec` matches the labels of its template (labels.SelectorFromSet
/// semantics for matchLabels, and the four operators of matchExpressions).
const SELECTOR_MATCHES_TEMPLATE: &str = "\
    (!has(object.spec.selector.matchLabels) || object.spec.selector.matchLabels.all(k, \
      has(object.spec.template.metadata) && has(object.spec.template.metadata.labels) && \
      k in object.spec.template.metadata.labels && \
      object.spec.template.metadata.labels[k] == object.spec.selector.matchLabels[k])) && \
    (!has(object.spec.selector.matchExpressions) || object.spec.selector.matchExpressions.all(e, \
      (has(object.spec.template.metadata) && has(object.spec.template.metadata.labels) && \
       e.key in object.spec.template.metadata.labels) ? \
      (e.operator == 'In' ? e.values.exists(v, v == object.spec.template.metadata.labels[e.key]) : \
       e.operator == 'NotIn' ? !e.values.exists(v, v == object.spec.template.metadata.labels[e.key]) : \
       e.operator == 'Exists') : \
      (e.operator == 'NotIn' || e.operator == 'DoesNotExist')))";

/// ValidateLabelName's message, for a label key that is not a qualified name.
const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', \
    and must start and end with an alphanumeric character, at most 63 characters, with an optional \
    DNS subdomain prefix and '/' (e.g. 'MyName', or 'my.name', or 'example.com/123-abc')";

/// Label keys of the map at CEL `map` (optional-chained, defaulting to `{}`) must be
/// qualified names (ValidateLabels; the values are checked by the schema). `path` is the
/// map's field path.
fn label_keys(map: &str, path: &str) -> Value {
    let bad = format!("{map}.filter(k, !k.matches(r'{QUALIFIED_NAME}'))");
    check_with_message(
        format!("size({bad}) == 0"),
        format!("'{path}: Invalid value: \"' + {bad}[0] + \"\\\": {QUALIFIED_NAME_MESSAGE}\""),
        "Invalid",
    )
}

/// CEL: request `r` of container `c` (any expression) exceeds its limit.
fn over_limit(c: &str) -> String {
    format!(
        "r in {c}.resources.limits && \
         quantity(string({c}.resources.requests[r])).isGreaterThan(quantity(string({c}.resources.limits[r])))"
    )
}

/// CEL: upstream's message for the first request of container `c` above its limit, with
/// the field path `at` of its resources.
fn over_limit_message(c: &str, at: &str) -> String {
    let r = format!("{c}.resources.requests.filter(r, {})[0]", over_limit(c));
    format!(
        "{at} + '.resources.requests: Invalid value: \"' + string({c}.resources.requests[{r}]) + \
         '\": must be less than or equal to ' + {r} + ' limit of ' + string({c}.resources.limits[{r}])"
    )
}

/// ValidateResourceRequirements' requests <= limits for the containers of list `l` of the
/// PodSpec at CEL `spec`, whose field path is `path`.
fn requests_within_limits(spec: &str, path: &str, l: &str) -> Value {
    let bad = format!(
        "(has(c.resources) && has(c.resources.requests) && has(c.resources.limits) && \
         c.resources.requests.exists(r, {}))",
        over_limit("c")
    );
    let first = format!("{spec}.{l}.filter(c, {bad})[0]");
    check_with_message(
        format!("!{spec}.?{l}.orValue([]).exists(c, {bad})"),
        over_limit_message(
            &first,
            &format!(
                "'{path}.{l}[' + string({spec}.{l}.map(x, x.name).indexOf({first}.name)) + ']'"
            ),
        ),
        "Invalid",
    )
}

/// The same for the pod-level resources of the PodSpec at `spec`.
fn pod_requests_within_limits(spec: &str, path: &str) -> Value {
    check_with_message(
        format!(
            "!has({spec}.resources) || !has({spec}.resources.requests) || !has({spec}.resources.limits) || \
             !{spec}.resources.requests.exists(r, {})",
            over_limit(spec)
        ),
        over_limit_message(spec, &format!("'{path}'")),
        "Invalid",
    )
}

/// validateContainerPorts: port names are unique within each container of list `l` of the
/// PodSpec at CEL `spec`, whose field path is `path`.
fn unique_port_names(spec: &str, path: &str, l: &str) -> Value {
    let dup = "has(p.name) && c.ports.filter(q, has(q.name) && q.name == p.name).size() > 1";
    let bad = format!("(has(c.ports) && c.ports.exists(p, {dup}))");
    let first = format!("{spec}.{l}.filter(c, {bad})[0]");
    let name = format!(
        "{first}.ports.filter(p, {}).map(p, p.name)[0]",
        dup.replace("c.ports", &format!("{first}.ports"))
    );
    check_with_message(
        format!("!{spec}.?{l}.orValue([]).exists(c, {bad})"),
        format!(
            "'{path}.{l}[' + string({spec}.{l}.map(x, x.name).indexOf({first}.name)) + '].ports[' + \
             string({first}.ports.map(p, p.?name.orValue('')).lastIndexOf({name})) + '].name: Duplicate value: \"' + \
             {name} + '\"'"
        ),
        "Invalid",
    )
}

/// CEL: the matchLabels of every label selector in the pod affinity terms and topology
/// spread constraints of the PodSpec at `spec`.
fn term_selectors(spec: &str) -> String {
    let mut terms = Vec::new();
    for kind in ["podAffinity", "podAntiAffinity"] {
        let a = format!("{spec}.?affinity.?{kind}");
        terms.push(format!(
            "{a}.?requiredDuringSchedulingIgnoredDuringExecution.orValue([])"
        ));
        terms.push(format!(
            "{a}.?preferredDuringSchedulingIgnoredDuringExecution.orValue([]).map(w, w.?podAffinityTerm.orValue({{}}))"
        ));
    }
    let terms = terms.join(" + ");
    format!(
        "({terms}).map(t, t.?labelSelector.?matchLabels.orValue({{}})) + \
         ({terms}).map(t, t.?namespaceSelector.?matchLabels.orValue({{}})) + \
         {spec}.?topologySpreadConstraints.orValue([]).map(c, c.?labelSelector.?matchLabels.orValue({{}}))"
    )
}

/// ValidateLabelSelector's keys for the selectors of [`term_selectors`].
fn term_selector_keys(spec: &str, path: &str) -> Value {
    let bad = format!(
        "({}).map(m, m.filter(k, !k.matches(r'{QUALIFIED_NAME}'))).filter(l, size(l) > 0)",
        term_selectors(spec)
    );
    check_with_message(
        format!("size({bad}) == 0"),
        format!(
            "'{path}: Invalid value: \"' + {bad}[0][0] + \"\\\": a label selector key of an affinity term \
             or topology spread constraint: {QUALIFIED_NAME_MESSAGE}\""
        ),
        "Invalid",
    )
}

/// The EphemeralContainer fields upstream's allowedEphemeralContainerFields leaves out (the
/// new restart and resize fields included); an empty value (the schema's `resources: {}`)
/// counts as unset, as Go's zero value does.
const EPHEMERAL_FORBIDDEN: &str = "['ports', 'resources', 'resizePolicy', 'livenessProbe', \
    'readinessProbe', 'startupProbe', 'lifecycle', 'restartPolicy', 'restartPolicyRules']";

/// validateEphemeralContainers' checks of a Pod's ephemeral containers: no lifecycle,
/// probes, ports or resources, no subPath mounts, and a targetContainerName that names a
/// container of the pod.
fn ephemeral_container_checks() -> Vec<Value> {
    let list = "object.spec.ephemeralContainers";
    let set = format!("(k in {EPHEMERAL_FORBIDDEN} && c[k] != {{}} && c[k] != [] && c[k] != '')");
    let bad = format!("c.exists(k, {set})");
    let first = format!("{list}.filter(c, {bad})[0]");
    let index = |c: &str| format!("string({list}.map(x, x.name).indexOf({c}.name))");
    let names = "object.spec.containers.map(x, x.name) + \
                 object.spec.?initContainers.orValue([]).map(x, x.name)";
    let no_target = format!("(has(c.targetContainerName) && !(c.targetContainerName in {names}))");
    let missing = format!("{list}.filter(c, {no_target})[0]");
    let sub_path =
        "(has(c.volumeMounts) && c.volumeMounts.exists(m, has(m.subPath) || has(m.subPathExpr)))";
    let with_sub_path = format!("{list}.filter(c, {sub_path})[0]");
    vec![
        check_with_message(
            format!("!object.spec.?ephemeralContainers.orValue([]).exists(c, {bad})"),
            format!(
                "'spec.ephemeralContainers[' + {} + '].' + {first}.filter(k, {})[0] + \
                 ': Forbidden: cannot be set for an Ephemeral Container'",
                index(&first),
                set.replace("c[k]", &format!("{first}[k]"))
            ),
            "Forbidden",
        ),
        check_with_message(
            format!("!object.spec.?ephemeralContainers.orValue([]).exists(c, {no_target})"),
            format!(
                "'spec.ephemeralContainers[' + {} + '].targetContainerName: Not found: \"' + \
                 {missing}.targetContainerName + '\"'",
                index(&missing)
            ),
            "Invalid",
        ),
        check_with_message(
            format!("!object.spec.?ephemeralContainers.orValue([]).exists(c, {sub_path})"),
            format!(
                "'spec.ephemeralContainers[' + {} + '].volumeMounts: Forbidden: subPath and subPathExpr \
                 cannot be set for an Ephemeral Container'",
                index(&with_sub_path)
            ),
            "Forbidden",
        ),
    ]
}

/// Checks of a PodSpec at CEL `spec` (field path `path`) that compare across maps or lists.
fn pod_spec_checks(spec: &str, path: &str) -> Vec<Value> {
    vec![
        requests_within_limits(spec, path, "containers"),
        requests_within_limits(spec, path, "initContainers"),
        unique_port_names(spec, path, "containers"),
        unique_port_names(spec, path, "initContainers"),
        pod_requests_within_limits(spec, path),
        label_keys(
            &format!("{spec}.?nodeSelector.orValue({{}})"),
            &format!("{path}.nodeSelector"),
        ),
        term_selector_keys(spec, path),
    ]
}

/// The validating policies and their bindings, in apply order.
pub fn validating_objects() -> Vec<Value> {
    let names =
        "container names must be unique across containers, initContainers and ephemeralContainers";
    let mut pod_checks = vec![
        check(
            unique_container_names("object.spec"),
            &format!("spec: {names}"),
            "Invalid",
        ),
        check(
            "request.operation != 'CREATE' || size(object.spec.?ephemeralContainers.orValue([])) == 0"
                .into(),
            "spec.ephemeralContainers: Forbidden: cannot be set on create",
            "Forbidden",
        ),
        check(
            "object.spec.?nodeName.orValue('') == '' || size(object.spec.?schedulingGates.orValue([])) == 0 || \
             (oldObject != null && oldObject.spec.?nodeName.orValue('') == object.spec.nodeName)"
                .into(),
            "spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared",
            "Forbidden",
        ),
    ];
    pod_checks.extend(pod_spec_checks("object.spec", "spec"));
    pod_checks.extend(ephemeral_container_checks());
    let pods = validating_policy("rekube-pod-validation.rekube.io", &["pods"], pod_checks);
    let templates = validating_policy(
        "rekube-template-validation.rekube.io",
        &["deployments", "replicasets"],
        vec![
            check(
                SELECTOR_MATCHES_TEMPLATE.into(),
                "spec.template.metadata.labels: selector does not match template labels",
                "Invalid",
            ),
            check(
                unique_container_names("object.spec.template.spec"),
                &format!("spec.template.spec: {names}"),
                "Invalid",
            ),
            label_keys(
                "object.spec.selector.?matchLabels.orValue({})",
                "spec.selector.matchLabels",
            ),
            label_keys(
                "object.spec.template.?metadata.?labels.orValue({})",
                "spec.template.metadata.labels",
            ),
        ]
        .into_iter()
        .chain(pod_spec_checks(
            "object.spec.template.spec",
            "spec.template.spec",
        ))
        .collect(),
    );
    let services = validating_policy(
        "rekube-service-validation.rekube.io",
        &["services"],
        vec![check(
            "!has(object.spec.ports) || object.spec.ports.all(p, !has(p.targetPort) || \
             (type(p.targetPort) == int ? (p.targetPort >= 1 && p.targetPort <= 65535) : \
             (size(p.targetPort) <= 15 && p.targetPort.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && \
             p.targetPort.matches('[a-z]'))))"
                .into(),
            "spec.ports[].targetPort: must be a port number between 1 and 65535 or an IANA service name",
            "Invalid",
        ), label_keys("object.spec.?selector.orValue({})", "spec.selector")],
    );
    let claims = validating_policy(
        "rekube-persistentvolumeclaim-validation.rekube.io",
        &["persistentvolumeclaims"],
        vec![label_keys(
            "object.spec.?selector.?matchLabels.orValue({})",
            "spec.selector.matchLabels",
        )],
    );
    pods.into_iter()
        .chain(templates)
        .chain(services)
        .chain(claims)
        .chain(crate::updates::objects())
        .collect()
}

fn apply(expression: String) -> Value {
    json!({ "patchType": "ApplyConfiguration", "applyConfiguration": { "expression": expression } })
}

/// The policies and their bindings, in apply order.
pub fn objects() -> Vec<Value> {
    let pods = policy(
        "rekube-pod-defaults.rekube.io",
        &["pods"],
        unique_container_keys("object.spec"),
        vec![
            apply(format!("Object{{spec: {}}}", pull_policy_patch("object.spec", "Object.spec"))),
            apply(
                "Object{spec: Object.spec{\
                 priority: has(object.spec.priority) ? object.spec.priority : 0, \
                 preemptionPolicy: has(object.spec.preemptionPolicy) ? object.spec.preemptionPolicy : 'PreemptLowerPriority'}}"
                    .into(),
            ),
        ],
    );
    let templates = policy(
        "rekube-template-defaults.rekube.io",
        &["deployments", "replicasets"],
        format!(
            "!has(object.spec.template.spec) || ({})",
            unique_container_keys("object.spec.template.spec")
        ),
        vec![apply(format!(
            "Object{{spec: Object.spec{{template: Object.spec.template{{spec: {}}}}}}}",
            pull_policy_patch("object.spec.template.spec", "Object.spec.template.spec")
        ))],
    );
    let services = policy(
        "rekube-service-defaults.rekube.io",
        &["services"],
        "!has(object.spec.ports) || object.spec.ports.all(x, object.spec.ports.exists_one(y, \
         y.port == x.port && (has(y.protocol) ? y.protocol : 'TCP') == (has(x.protocol) ? x.protocol : 'TCP')))"
            .into(),
        vec![
            apply(
                "Object{spec: Object.spec{?ports: has(object.spec.ports) ? \
                 optional.of(object.spec.ports.filter(p, !has(p.targetPort)).map(p, \
                 Object.spec.ports{port: p.port, protocol: p.protocol, targetPort: p.port})) : optional.none()}}"
                    .into(),
            ),
            // An update that leaves out the allocated cluster IPs keeps them, as upstream's
            // service registry does (patchAllocatedValues); changing them is refused by
            // the update policy.
            json!({
                "patchType": "JSONPatch",
                "jsonPatch": { "expression": "oldObject == null || \
                    object.spec.?type.orValue('ClusterIP') == 'ExternalName' ? [] : \
                    (!has(object.spec.clusterIP) && has(oldObject.spec.clusterIP) ? \
                     [JSONPatch{op: 'add', path: '/spec/clusterIP', value: oldObject.spec.clusterIP}] : []) + \
                    (!has(object.spec.clusterIPs) && has(oldObject.spec.clusterIPs) ? \
                     [JSONPatch{op: 'add', path: '/spec/clusterIPs', value: oldObject.spec.clusterIPs}] : [])" },
            }),
        ],
    );
    pods.into_iter().chain(templates).chain(services).collect()
}
