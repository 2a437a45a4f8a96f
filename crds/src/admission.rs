//! Upstream defaults that depend on other fields, which a schema `default` cannot express,
//! as a MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA in 1.36) that the
//! apiserver applies to rekube objects on create and update:
//! - `imagePullPolicy` (SetDefaults_Container): Always when the image's tag is `latest`
//!   or absent without a digest, else IfNotPresent; in Pods and in Deployment and
//!   ReplicaSet templates.
//! - a Service port's `targetPort` (SetDefaults_Service): the port itself.
//! - a Pod's `priority` 0 and `preemptionPolicy` PreemptLowerPriority (the Priority
//!   admission plugin, for pods without a priority class).
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

fn validating_policy(name: &str, resources: &[&str], validations: Vec<Value>) -> [Value; 2] {
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "matchConstraints": match_constraints(resources),
                "failurePolicy": "Fail",
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

fn check(expression: String, message: &str, reason: &str) -> Value {
    json!({ "expression": expression, "message": message, "reason": reason })
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

/// The validating policies and their bindings, in apply order.
pub fn validating_objects() -> Vec<Value> {
    let names =
        "container names must be unique across containers, initContainers and ephemeralContainers";
    let pods = validating_policy(
        "rekube-pod-validation.rekube.io",
        &["pods"],
        vec![check(
            unique_container_names("object.spec"),
            &format!("spec: {names}"),
            "Invalid",
        )],
    );
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
        ],
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
        )],
    );
    pods.into_iter().chain(templates).chain(services).collect()
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
        vec![apply(
            "Object{spec: Object.spec{?ports: has(object.spec.ports) ? \
             optional.of(object.spec.ports.filter(p, !has(p.targetPort)).map(p, \
             Object.spec.ports{port: p.port, protocol: p.protocol, targetPort: p.port})) : optional.none()}}"
                .into(),
        )],
    );
    pods.into_iter().chain(templates).chain(services).collect()
}
