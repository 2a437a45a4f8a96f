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
//! - a CSIDriver's empty `volumeLifecycleModes` is `[Persistent]`, and its
//!   `preventPodSchedulingIfMissing` is dropped (feature gate VolumeLimitScaling off).
//! - a new PersistentVolumeClaim gets the `kubernetes.io/pvc-protection` finalizer and a
//!   new PersistentVolume `kubernetes.io/pv-protection` (upstream's
//!   StorageObjectInUseProtection admission plugin, on create only), so no controller
//!   has to write a fresh claim or volume just to protect it.
//!
//! Validation that compares across unbounded lists or maps, too costly for a CRD's static
//! CEL budget, is a ValidatingAdmissionPolicy ([`validating_objects`]):
//! - a Deployment's or ReplicaSet's selector must match its template's labels;
//! - container names are unique across containers, initContainers and ephemeralContainers;
//! - a Bidirectional volumeMount only in a privileged container (validateMountPropagation);
//! - a Service's targetPort is a port number or an IANA service name;
//! - an EndpointSlice's addresses are of its addressType (validateEndpoints: IPv4 or IPv6
//!   in strict, for IPv6 canonical, form and not unspecified, loopback or link-local;
//!   FQDN a domain of at least two labels);
//! - a CSIDriver's token requests have distinct audiences (and a warning, as upstream's,
//!   for token requests without `serviceAccountTokenInSecrets`).
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

/// validateMountPropagation's privileged check for the containers of list `l` of the
/// PodSpec at CEL `spec`, whose field path is `path`: a Bidirectional volumeMount only in
/// a privileged container, upstream's message for the first container that has one (its
/// field path, as upstream's, names the volumeMounts list without an index).
fn bidirectional_only_privileged(spec: &str, path: &str, l: &str) -> Value {
    let bad = "(c.?volumeMounts.orValue([]).exists(m, m.?mountPropagation.orValue('') == 'Bidirectional') && \
               !c.?securityContext.?privileged.orValue(false))";
    let first = format!("{spec}.{l}.filter(c, {bad})[0]");
    check_with_message(
        format!("!{spec}.?{l}.orValue([]).exists(c, {bad})"),
        format!(
            "'{path}.{l}[' + string({spec}.{l}.map(x, x.name).indexOf({first}.name)) + \
             '].volumeMounts.mountPropagation: Forbidden: {BIDIRECTIONAL_MESSAGE}'"
        ),
        "Forbidden",
    )
}

/// validateMountPropagation's message.
pub const BIDIRECTIONAL_MESSAGE: &str =
    "Bidirectional mount propagation is available only to privileged containers";

/// Checks of a PodSpec at CEL `spec` (field path `path`) that compare across maps or lists.
fn pod_spec_checks(spec: &str, path: &str) -> Vec<Value> {
    vec![
        bidirectional_only_privileged(spec, path, "containers"),
        bidirectional_only_privileged(spec, path, "initContainers"),
        bidirectional_only_privileged(spec, path, "ephemeralContainers"),
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
    let capacities = csi_storage_capacity_validation();
    let endpoint_slices = ValidatingPolicy {
        name: "rekube-endpointslice-validation.rekube.io",
        resources: &["endpointslices"],
        operations: &["CREATE", "UPDATE"],
        variables: endpoint_slice_variables(),
        validations: vec![endpoint_slice_addresses(), endpoint_topology_keys()],
    }
    .objects();
    pods.into_iter()
        .chain(templates)
        .chain(services)
        .chain(claims)
        .chain(capacities)
        .chain(endpoint_slices)
        .chain(csi_driver_validation())
        .chain(csi_driver_token_warning())
        .chain(crate::updates::objects())
        .collect()
}

/// ValidateLabelSelector of a CSIStorageCapacity's nodeTopology, the part a CRD's static
/// cost budget cannot hold: each matchExpressions operator one of the four (upstream's
/// `not a valid selector operator`) and the matchLabels keys qualified names, in one
/// validation so that every error is reported, as upstream reports them (a policy stops at
/// its first failing validation). The values, the expression keys and the values'
/// presence are the schema's ([`crate::validation::csi_storage_capacity`]).
fn csi_storage_capacity_validation() -> [Value; 2] {
    ValidatingPolicy {
        name: "rekube-csistoragecapacity-validation.rekube.io",
        resources: &["csistoragecapacities"],
        operations: &["CREATE", "UPDATE"],
        variables: vec![
            (
                "labels",
                format!(
                    "object.?nodeTopology.?matchLabels.orValue({{}}).filter(k, !k.matches(r'{QUALIFIED_NAME}')) \
                     .map(k, 'nodeTopology.matchLabels: Invalid value: \"' + k + \"\\\": {QUALIFIED_NAME_MESSAGE}\")"
                ),
            ),
            (
                "operators",
                "object.?nodeTopology.?matchExpressions.orValue([]).transformList(i, e, \
                 !(e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist']), \
                 'nodeTopology.matchExpressions[' + string(i) + '].operator: Invalid value: \"' + \
                 e.operator + '\": not a valid selector operator')"
                    .into(),
            ),
        ],
        validations: vec![check_with_message(
            "size(variables.labels) + size(variables.operators) == 0".into(),
            "(variables.labels + variables.operators).join(', ')".into(),
            "Invalid",
        )],
    }
    .objects()
}

/// The CSIDriver policies' `audiences` (every token request's) and `duplicates` (the
/// indexes of those whose audience an earlier one has).
fn csi_audience_variables() -> Vec<(&'static str, String)> {
    vec![
        (
            "audiences",
            "object.?spec.?tokenRequests.orValue([]).map(t, t.?audience.orValue(''))".into(),
        ),
        (
            "duplicates",
            "variables.audiences.transformList(i, a, variables.audiences.indexOf(a) < i, i)".into(),
        ),
    ]
}

/// validateTokenRequests' duplicate audiences (a CSIDriver's tokenRequests, a list of
/// unbounded size upstream): `spec.tokenRequests[i].audience: Duplicate value: "a"` for
/// each request whose audience an earlier one has (an absent audience is ""), joined.
/// Their expirationSeconds are the schema's ([`crate::validation::csi_driver`]).
fn csi_driver_validation() -> [Value; 2] {
    ValidatingPolicy {
        name: "rekube-csidriver-validation.rekube.io",
        resources: &["csidrivers"],
        operations: &["CREATE", "UPDATE"],
        variables: csi_audience_variables(),
        validations: vec![check_with_message(
            "size(variables.duplicates) == 0".into(),
            "variables.duplicates.map(i, 'spec.tokenRequests[' + string(i) + '].audience: Duplicate value: \"' + \
             variables.audiences[i] + '\"').join(', ')"
                .into(),
            "Invalid",
        )],
    }
    .objects()
}

/// upstream's CSIDriver WarningsOnCreate and WarningsOnUpdate: token requests (new or
/// changed) without serviceAccountTokenInSecrets (CSIServiceAccountTokenSecrets, GA).
pub const CSI_TOKEN_WARNING: &str = "spec.serviceAccountTokenInSecrets is unset; if supported by this CSI driver, \
    set to true to prevent possible logging of tokens in volume attributes";

/// The warning, as a policy bound with the Warn action. Upstream warns only about what it
/// admits: none when the policies refuse the request (duplicate audiences, or an update
/// of attachRequired or volumeLifecycleModes); a request the schema refuses never gets here.
fn csi_driver_token_warning() -> [Value; 2] {
    let same = |f: &str| {
        format!(
            "(has(object.spec.{f}) == has(oldObject.spec.{f}) && \
             (!has(object.spec.{f}) || object.spec.{f} == oldObject.spec.{f}))"
        )
    };
    let mut policy = ValidatingPolicy {
        name: "rekube-csidriver-warnings.rekube.io",
        resources: &["csidrivers"],
        operations: &["CREATE", "UPDATE"],
        variables: csi_audience_variables(),
        validations: vec![check(
            format!(
                "size(variables.audiences) == 0 || has(object.spec.serviceAccountTokenInSecrets) || \
                 size(variables.duplicates) > 0 || \
                 (oldObject != null && (!has(oldObject.spec) || \
                  oldObject.spec.?tokenRequests.orValue([]) == object.spec.tokenRequests || \
                  !{} || !{}))",
                same("attachRequired"),
                same("volumeLifecycleModes")
            ),
            CSI_TOKEN_WARNING,
            "Invalid",
        )],
    }
    .objects();
    policy[1]["spec"]["validationActions"] = json!(["Warn"]);
    policy
}

/// CEL: why address `a` is not a valid address of an EndpointSlice of `family` (4 or 6),
/// with upstream's message (IsValidIPForLegacyField/IsValidIP under StrictIPCIDRValidation,
/// then ValidateEndpointIP); `''` when it is valid.
fn endpoint_ip_problem(family: u8) -> String {
    let canonical = if family == 6 {
        "string(ip(a)) != a ? 'must be in canonical form (\"' + string(ip(a)) + '\")' : "
    } else {
        ""
    };
    format!(
        "(!isIP(a) ? 'must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)' : \
         ip(a).family() != {family} ? 'must be an IPv{family} address' : {canonical}\
         ip(a).isUnspecified() ? 'may not be unspecified (' + a + ')' : \
         ip(a).isLoopback() ? 'may not be in the loopback range (127.0.0.0/8, ::1/128)' : \
         ip(a).isLinkLocalUnicast() ? 'may not be in the link-local range (169.254.0.0/16, fe80::/10)' : \
         ip(a).isLinkLocalMulticast() ? 'may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)' : '')"
    )
}

/// CEL: why address `a` is not a fully qualified domain name (IsFullyQualifiedDomainName);
/// `''` when it is one.
const FQDN_PROBLEM: &str = "(size(a) == 0 ? 'Required value' : \
    !a.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*[.]?$') || size(a) > 254 ? \
    \"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')\" : \
    !a.matches('^[^.]+[.][^.]') ? 'should be a domain with at least two segments separated by dots' : \
    a.split('.').exists(l, size(l) > 63) ? 'must be no more than 63 characters' : '')";

/// CEL variables of the EndpointSlice policy: `problems`, per endpoint and address, why
/// the address is not one of the slice's addressType (`''` when it is); `bad`, the
/// endpoints' lists with a problem. An update that leaves the endpoints as they were is
/// not revalidated (upstream: "apparently older versions of Kubernetes considered the
/// data valid").
fn endpoint_slice_variables() -> Vec<(&'static str, String)> {
    let (v4, v6) = (endpoint_ip_problem(4), endpoint_ip_problem(6));
    let all = |ok: &str| format!("object.endpoints.all(e, e.addresses.all(a, {ok}))");
    vec![
        // The fast path: every address valid by checks cheap enough for upstream's
        // largest slice (1000 endpoints of 100 addresses; the per-address messages below
        // cost ten times more, beyond a policy's runtime budget at that size). Variables
        // are evaluated lazily: `problems` only when this is false.
        (
            "valid",
            format!(
                "!has(object.endpoints) || \
                 (oldObject != null && has(oldObject.endpoints) && oldObject.endpoints == object.endpoints) || \
                 (object.addressType == 'IPv4' ? {} : object.addressType == 'IPv6' ? {} : \
                 object.addressType == 'FQDN' ? {} : true)",
                all(VALID_IPV4),
                all(VALID_IPV6),
                all(VALID_FQDN)
            ),
        ),
        (
            "problems",
            format!(
                "!has(object.endpoints) || \
                 (oldObject != null && has(oldObject.endpoints) && oldObject.endpoints == object.endpoints) ? [] : \
                 object.endpoints.map(e, e.addresses.map(a, \
                 object.addressType == 'IPv4' ? {v4} : object.addressType == 'IPv6' ? {v6} : \
                 object.addressType == 'FQDN' ? {FQDN_PROBLEM} : ''))"
            ),
        ),
        (
            "bad",
            "variables.problems.filter(l, l.exists(p, p != ''))".into(),
        ),
    ]
}

/// CEL: address `a` is an IPv4 address in canonical form (no leading zeros), not
/// unspecified, loopback, link-local or link-local multicast: what
/// [`endpoint_ip_problem`] accepts, checked without `ip()` (CEL's `isIP` is strict: no
/// leading zeros, no IPv4-mapped IPv6).
const VALID_IPV4: &str = "(isIP(a) && !a.contains(':') \
    && a != '0.0.0.0' && !a.startsWith('127.') && !a.startsWith('169.254.') && !a.startsWith('224.0.0.'))";

/// CEL: address `a` is an IPv6 address in canonical form, not unspecified (`::`),
/// loopback (`::1`), link-local (fe80::/10: a canonical first group fe8x to febx) or
/// link-local multicast (ffx2::/16).
const VALID_IPV6: &str = "(isIP(a) && ip(a).family() == 6 && string(ip(a)) == a && a != '::' && a != '::1' \
    && !a.matches('^fe[89ab]') && !a.matches('^ff[0-9a-f]2:'))";

/// CEL: address `a` is a fully qualified domain name (two or more DNS labels of at
/// most 63 characters, an optional trailing dot, 253 characters without it).
const VALID_FQDN: &str = "(a.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+[.]?$') && size(a) <= 254)";

/// validateEndpoints' address checks, naming the first bad address by its index as
/// upstream does (`endpoints[0].addresses[1]: Invalid value: "x": ...`). The first list
/// with a problem is found again by `indexOf` (an equal list before it would have the
/// same problem), and so is its first problem.
fn endpoint_slice_addresses() -> Value {
    let i = "variables.problems.indexOf(variables.bad[0])";
    let j = "variables.bad[0].indexOf(variables.bad[0].filter(p, p != '')[0])";
    check_with_message(
        "variables.valid || size(variables.bad) == 0".into(),
        format!(
            "'endpoints[' + string({i}) + '].addresses[' + string({j}) + ']: Invalid value: \"' + \
             object.endpoints[{i}].addresses[{j}] + '\": ' + variables.bad[0].filter(p, p != '')[0]"
        ),
        "Invalid",
    )
}

/// ValidateLabels' key check of each endpoint's deprecatedTopology (the values and the
/// count are the schema's).
fn endpoint_topology_keys() -> Value {
    let bad_key = format!("!k.matches(r'{QUALIFIED_NAME}')");
    let bad = format!("e.?deprecatedTopology.orValue({{}}).exists(k, {bad_key})");
    let first = format!("object.endpoints.filter(e, {bad})[0]");
    check_with_message(
        format!("!has(object.endpoints) || !object.endpoints.exists(e, {bad})"),
        format!(
            "'endpoints[' + string(object.endpoints.indexOf({first})) + '].deprecatedTopology: Invalid value: \"' + \
             {first}.deprecatedTopology.filter(k, {bad_key})[0] + \"\\\": {QUALIFIED_NAME_MESSAGE}\""
        ),
        "Invalid",
    )
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
    // SetDefaults_CSIDriver's empty volumeLifecycleModes (a schema default fills only an
    // absent list) and the registry's PrepareForCreate/PrepareForUpdate:
    // preventPodSchedulingIfMissing is dropped while VolumeLimitScaling (alpha in v1.36.3)
    // is off. Upstream keeps none on an update either (an old object never has one).
    let csi_drivers = policy(
        "rekube-csidriver-defaults.rekube.io",
        &["csidrivers"],
        "true".into(),
        vec![json!({
            "patchType": "JSONPatch",
            "jsonPatch": { "expression": "\
                (object.?spec.?preventPodSchedulingIfMissing.hasValue() ? \
                 [JSONPatch{op: 'remove', path: '/spec/preventPodSchedulingIfMissing'}] : []) + \
                (object.?spec.?volumeLifecycleModes.hasValue() && size(object.spec.volumeLifecycleModes) == 0 ? \
                 [JSONPatch{op: 'replace', path: '/spec/volumeLifecycleModes', value: ['Persistent']}] : [])" },
        })],
    );
    pods.into_iter()
        .chain(templates)
        .chain(services)
        .chain(csi_drivers)
        .chain(protection(
            "rekube-pvc-protection.rekube.io",
            "persistentvolumeclaims",
            crate::storage_keys::PVC_PROTECTION_FINALIZER,
        ))
        .chain(protection(
            "rekube-pv-protection.rekube.io",
            "persistentvolumes",
            crate::storage_keys::PV_PROTECTION_FINALIZER,
        ))
        .collect()
}

/// StorageObjectInUseProtection (plugin/pkg/admission/storage/storageobjectinuseprotection):
/// `finalizer` added to every new object of `resource` that lacks it.
fn protection(name: &str, resource: &str, finalizer: &str) -> [Value; 2] {
    let mut objects = policy(
        name,
        &[resource],
        format!("!object.?metadata.?finalizers.orValue([]).exists(f, f == '{finalizer}')"),
        vec![json!({
            "patchType": "JSONPatch",
            "jsonPatch": { "expression": format!("\
                object.?metadata.?finalizers.hasValue() ? \
                [JSONPatch{{op: 'add', path: '/metadata/finalizers/-', value: '{finalizer}'}}] : \
                [JSONPatch{{op: 'add', path: '/metadata/finalizers', value: ['{finalizer}']}}]") },
        })],
    );
    objects[0]["spec"]["matchConstraints"]["resourceRules"][0]["operations"] = json!(["CREATE"]);
    objects
}
