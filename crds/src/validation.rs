//! Upstream validation (pkg/apis/apps/validation, pkg/apis/core/validation,
//! pkg/apis/storage/validation) as schema constraints and CEL rules, each with a message
//! that says what is wrong. The apiserver prefixes the field path, so a message reads
//! `spec.strategy.rollingUpdate.maxUnavailable: Invalid value: ...: may not be 0 when maxSurge is 0`.
//!
//! Rules that compare across lists or maps of unbounded size (selector against template
//! labels, container names across lists, a Service's named targetPort) exceed the static
//! cost budget of CRD rules; they live in a ValidatingAdmissionPolicy
//! ([`crate::admission`]), which is bounded by runtime cost instead.
use serde_json::{Map, Value, json};

use crate::schema::node;

fn object<'a>(schema: &'a mut Value, path: &str) -> &'a mut Map<String, Value> {
    node(schema, path)
        .as_object_mut()
        .unwrap_or_else(|| panic!("schema node {path:?} is not an object"))
}

fn constrain(schema: &mut Value, path: &str, constraints: Value) {
    let target = object(schema, path);
    for (k, v) in constraints.as_object().expect("constraints are an object") {
        target.insert(k.clone(), v.clone());
    }
}

/// A CEL rule (`x-kubernetes-validations`) on the node at `path`.
struct Rule<'a> {
    rule: &'a str,
    message: &'a str,
    field_path: Option<&'a str>,
    reason: &'a str,
}

fn rule(schema: &mut Value, path: &str, r: Rule<'_>) {
    let mut v = json!({ "rule": r.rule, "message": r.message, "reason": r.reason });
    if let Some(fp) = r.field_path {
        v["fieldPath"] = json!(fp);
    }
    object(schema, path)
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("x-kubernetes-validations is a list")
        .push(v);
}

fn invalid<'a>(rule: &'a str, message: &'a str) -> Rule<'a> {
    Rule {
        rule,
        message,
        field_path: None,
        reason: "FieldValueInvalid",
    }
}

pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A list whose items are keyed like upstream's `+listType=map +listMapKey=...`; the
/// apiserver then rejects duplicate keys.
fn list_map(schema: &mut Value, path: &str, keys: &[&str]) {
    constrain(
        schema,
        path,
        json!({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys }),
    );
}

/// resource.Quantity's grammar (ParseQuantity), without a minus sign: every Quantity of
/// these kinds must be non-negative (ValidateResourceQuantityValue, ValidateNodeResources,
/// the PV and PVC capacity checks), so `-1` is refused like `lots`.
pub const QUANTITY: &str =
    "^\\+?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$";

/// IsValidLabelValue: at most 63 characters, alphanumerics, `-`, `_` and `.`, starting and
/// ending with an alphanumeric; empty is allowed.
pub const LABEL_VALUE: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// IsQualifiedName (a label key): an optional DNS-subdomain prefix and `/`, then a name of
/// at most 63 alphanumerics, `-`, `_` and `.`, starting and ending with an alphanumeric.
pub const QUALIFIED_NAME: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$";

/// IsValidPortName (IANA_SVC_NAME): lowercase alphanumerics and single inner hyphens, at
/// least one letter (with `maxLength` 15).
pub const PORT_NAME: &str = "^([a-z0-9]+-)*[a-z0-9]*[a-z][a-z0-9]*(-[a-z0-9]+)*$";

/// Calls `f` on every schema node below `v` (properties, list items, map values) with the
/// name of the field it sits under (list items and map values keep their field's name).
fn walk(v: &mut Value, field: &str, f: &mut dyn FnMut(&str, &mut Value)) {
    f(field, v);
    let Value::Object(map) = v else { return };
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.iter_mut().for_each(|(k, p)| walk(p, k, f));
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child @ Value::Object(_)) = map.get_mut(key) {
            walk(child, field, f);
        }
    }
}

/// The fields of these kinds typed IntOrString; every other int-or-string node is a
/// resource.Quantity (k8s-openapi replaces a Quantity field's description with the
/// field's own, so the description cannot tell them apart).
pub const INT_OR_STRING_FIELDS: [&str; 4] = ["port", "targetPort", "maxSurge", "maxUnavailable"];

fn is_quantity(field: &str, node: &Value) -> bool {
    node["x-kubernetes-int-or-string"] == json!(true) && !INT_OR_STRING_FIELDS.contains(&field)
}

/// resource.Quantity's grammar with its optional sign, for the Quantities a kind checks
/// by itself (a CSIStorageCapacity's: [`csi_storage_capacity`]).
pub const SIGNED_QUANTITY: &str =
    "^[+-]?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$";

/// A metav1.LabelSelector: an object whose properties are exactly matchExpressions and
/// matchLabels.
fn is_label_selector(node: &Value) -> bool {
    node["properties"].as_object().is_some_and(|p| {
        p.len() == 2 && p.contains_key("matchLabels") && p.contains_key("matchExpressions")
    })
}

fn label_value(node: &mut Value) {
    let obj = node
        .as_object_mut()
        .expect("a label value is a schema object");
    obj.insert("maxLength".into(), json!(63));
    obj.insert("pattern".into(), json!(LABEL_VALUE));
}

/// Every Quantity must parse (`lots` is refused) and be non-negative, but for those a
/// kind's own rules constrained already (a pattern set); every label selector's values
/// must be label values and its expression keys qualified names (ValidateLabelSelector).
/// Found by shape, so no Quantity or selector of any kind is missed.
pub fn quantities_and_selectors(schema: &mut Value) {
    walk(schema, "", &mut |field, node| {
        if is_quantity(field, node) && node.get("pattern").is_none() {
            let obj = node.as_object_mut().expect("checked");
            obj.insert("pattern".into(), json!(QUANTITY));
            obj.insert("minimum".into(), json!(0));
        }
        if is_label_selector(node) {
            if let Some(v) = node.pointer_mut("/properties/matchLabels/additionalProperties") {
                label_value(v);
            }
            if let Some(e) = node.pointer_mut("/properties/matchExpressions/items/properties") {
                if let Some(v) = e.pointer_mut("/values/items") {
                    label_value(v);
                }
                if let Some(k) = e.get_mut("key").and_then(Value::as_object_mut) {
                    k.insert("maxLength".into(), json!(317));
                    k.insert("pattern".into(), json!(QUALIFIED_NAME));
                }
            }
        }
    });
}

/// Label maps' values (ValidateLabels); their keys are checked by the admission policies.
pub fn labels(schema: &mut Value, at: &str) {
    label_value(node(schema, &format!("{at}{{}}")));
}

fn container_list(schema: &mut Value, at: &str) {
    list_map(schema, at, &["name"]);
    constrain(
        schema,
        &format!("{at}[].name"),
        json!({ "maxLength": 63, "pattern": DNS_LABEL }),
    );
    constrain(
        schema,
        &format!("{at}[].ports[].containerPort"),
        json!({ "minimum": 1, "maximum": 65535 }),
    );
    constrain(
        schema,
        &format!("{at}[].ports[].hostPort"),
        json!({ "minimum": 0, "maximum": 65535 }),
    );
    constrain(
        schema,
        &format!("{at}[].ports[].name"),
        json!({ "maxLength": 15, "pattern": PORT_NAME }),
    );
    constrain(
        schema,
        &format!("{at}[].ports[].protocol"),
        json!({ "enum": ["TCP", "UDP", "SCTP"] }),
    );
    // validateMountPropagation's supported values, sorted as its message lists them;
    // Bidirectional only in a privileged container is [`crate::admission`]'s.
    constrain(
        schema,
        &format!("{at}[].volumeMounts[].mountPropagation"),
        json!({ "enum": MOUNT_PROPAGATION_MODES }),
    );
}

/// core.MountPropagationMode's values, sorted (validateMountPropagation's NotSupported).
pub const MOUNT_PROPAGATION_MODES: [&str; 3] = ["Bidirectional", "HostToContainer", "None"];

/// ValidatePodSpec's checks that a schema can state. `restart_policies` is what
/// restartPolicy may be: any of the three for a Pod, only Always for a Deployment's or a
/// ReplicaSet's template.
pub fn pod_spec(schema: &mut Value, at: &str, restart_policies: &[&str]) {
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        container_list(schema, &format!("{at}.{list}"));
    }
    constrain(
        schema,
        &format!("{at}.containers"),
        json!({ "minItems": 1 }),
    );
    constrain(
        schema,
        &format!("{at}.restartPolicy"),
        json!({ "enum": restart_policies }),
    );
    constrain(
        schema,
        &format!("{at}.initContainers[].restartPolicy"),
        json!({ "enum": ["Always"] }),
    );
    constrain(
        schema,
        &format!("{at}.terminationGracePeriodSeconds"),
        json!({ "minimum": 0 }),
    );
    constrain(
        schema,
        &format!("{at}.dnsPolicy"),
        json!({ "enum": ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"] }),
    );
    labels(schema, &format!("{at}.nodeSelector"));
    constrain(
        schema,
        &format!("{at}.activeDeadlineSeconds"),
        json!({ "minimum": 1, "maximum": 2147483647 }),
    );
    constrain(
        schema,
        &format!("{at}.nodeName"),
        json!({ "maxLength": 253, "pattern": DNS_SUBDOMAIN }),
    );
    for label in ["hostname", "subdomain"] {
        constrain(
            schema,
            &format!("{at}.{label}"),
            json!({ "maxLength": 63, "pattern": DNS_LABEL }),
        );
    }
}

pub fn pod(schema: &mut Value) {
    pod_spec(schema, "spec", &["Always", "OnFailure", "Never"]);
}

/// Selector rules shared by Deployment and ReplicaSet (ValidateDeploymentSpec,
/// ValidateReplicaSetSpec): a non-empty selector that matches the template's labels and
/// never changes.
fn selector_and_template(schema: &mut Value, kind: &str) {
    constrain(schema, "spec.replicas", json!({ "minimum": 0 }));
    constrain(schema, "spec.minReadySeconds", json!({ "minimum": 0 }));
    pod_spec(schema, "spec.template.spec", &["Always"]);
    labels(schema, "spec.template.metadata.labels");
    let empty = format!("empty selector is invalid for {kind}");
    rule(
        schema,
        "spec",
        Rule {
            rule: "(has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || \
                   (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)",
            message: &empty,
            field_path: Some(".selector"),
            reason: "FieldValueInvalid",
        },
    );
    constrain(
        schema,
        "spec.selector.matchExpressions[].operator",
        json!({ "enum": ["In", "NotIn", "Exists", "DoesNotExist"] }),
    );
    rule(
        schema,
        "spec.selector",
        invalid("self == oldSelf", "field is immutable"),
    );
}

/// An int-or-string like maxSurge: a non-negative integer or a percentage.
fn int_or_percent(schema: &mut Value, path: &str, max_percent: Option<u32>) {
    let (rule_text, message) = match max_percent {
        Some(max) => (
            format!(
                "type(self) == int ? self >= 0 : (self.matches('^[0-9]+%$') && int(self.substring(0, size(self) - 1)) <= {max})"
            ),
            format!(
                "must be a non-negative integer or a percentage like '25%' no greater than {max}%"
            ),
        ),
        None => (
            "type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')".to_string(),
            "must be a non-negative integer or a percentage like '25%'".to_string(),
        ),
    };
    rule(schema, path, invalid(&rule_text, &message));
}

pub fn deployment(schema: &mut Value) {
    selector_and_template(schema, "deployment");
    constrain(schema, "spec.revisionHistoryLimit", json!({ "minimum": 0 }));
    constrain(
        schema,
        "spec.strategy.type",
        json!({ "enum": ["Recreate", "RollingUpdate"] }),
    );
    let ru = "spec.strategy.rollingUpdate";
    int_or_percent(schema, &format!("{ru}.maxSurge"), None);
    int_or_percent(schema, &format!("{ru}.maxUnavailable"), Some(100));
    rule(
        schema,
        ru,
        Rule {
            rule: "!(has(self.maxSurge) && has(self.maxUnavailable) && \
                   string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])",
            message: "may not be 0 when maxSurge is 0",
            field_path: Some(".maxUnavailable"),
            reason: "FieldValueInvalid",
        },
    );
    rule(
        schema,
        "spec.strategy",
        Rule {
            rule: "!(has(self.type) && self.type == 'Recreate' && has(self.rollingUpdate))",
            message: "may not be specified when strategy type is 'Recreate'",
            field_path: Some(".rollingUpdate"),
            reason: "FieldValueForbidden",
        },
    );
    rule(
        schema,
        "spec",
        Rule {
            rule: "!has(self.progressDeadlineSeconds) || \
                   self.progressDeadlineSeconds > (has(self.minReadySeconds) ? self.minReadySeconds : 0)",
            message: "must be greater than minReadySeconds",
            field_path: Some(".progressDeadlineSeconds"),
            reason: "FieldValueInvalid",
        },
    );
}

pub fn replica_set(schema: &mut Value) {
    selector_and_template(schema, "replicaset");
}

pub fn service(schema: &mut Value) {
    labels(schema, "spec.selector");
    constrain(
        schema,
        "spec.type",
        json!({ "enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] }),
    );
    constrain(
        schema,
        "spec.sessionAffinity",
        json!({ "enum": ["ClientIP", "None"] }),
    );
    list_map(schema, "spec.ports", &["port", "protocol"]);
    constrain(
        schema,
        "spec.ports[].port",
        json!({ "minimum": 1, "maximum": 65535 }),
    );
    constrain(
        schema,
        "spec.ports[].nodePort",
        json!({ "minimum": 0, "maximum": 65535 }),
    );
    constrain(
        schema,
        "spec.ports[].protocol",
        json!({ "enum": ["TCP", "UDP", "SCTP"] }),
    );
    rule(
        schema,
        "spec.ports",
        Rule {
            rule: "size(self) <= 1 || self.all(p, has(p.name) && p.name != '')",
            message: "port names are required when a service has more than one port",
            field_path: None,
            reason: "FieldValueRequired",
        },
    );
}

const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn access_modes(schema: &mut Value) {
    constrain(
        schema,
        "spec.accessModes[]",
        json!({ "enum": ACCESS_MODES }),
    );
    rule(
        schema,
        "spec",
        Rule {
            rule: "has(self.accessModes) && size(self.accessModes) > 0",
            message: "at least 1 access mode is required",
            field_path: Some(".accessModes"),
            reason: "FieldValueRequired",
        },
    );
}

/// Every volume source a PersistentVolumeSpec can hold (ValidatePersistentVolumeSpec
/// counts them); a unit test checks the list against the schema.
pub const PV_SOURCES: [&str; 22] = [
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

pub fn persistent_volume(schema: &mut Value) {
    access_modes(schema);
    constrain(
        schema,
        "spec.persistentVolumeReclaimPolicy",
        json!({ "enum": ["Retain", "Recycle", "Delete"] }),
    );
    constrain(
        schema,
        "spec.volumeMode",
        json!({ "enum": ["Block", "Filesystem"] }),
    );
    let count = format!(
        "[{}].filter(x, x).size()",
        PV_SOURCES
            .iter()
            .map(|s| format!("has(self.{s})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let none = format!("{count} > 0");
    let many = format!("{count} <= 1");
    rule(
        schema,
        "spec",
        Rule {
            rule: &none,
            message: "must specify a volume type",
            field_path: None,
            reason: "FieldValueRequired",
        },
    );
    rule(
        schema,
        "spec",
        Rule {
            rule: &many,
            message: "may not specify more than 1 volume type",
            field_path: None,
            reason: "FieldValueForbidden",
        },
    );
    rule(
        schema,
        "spec",
        Rule {
            rule: "has(self.capacity) && 'storage' in self.capacity",
            message: "capacity.storage is required",
            field_path: Some(".capacity"),
            reason: "FieldValueRequired",
        },
    );
}

pub fn persistent_volume_claim(schema: &mut Value) {
    access_modes(schema);
    constrain(
        schema,
        "spec.volumeMode",
        json!({ "enum": ["Block", "Filesystem"] }),
    );
    rule(
        schema,
        "spec",
        Rule {
            rule: "has(self.resources) && has(self.resources.requests) && 'storage' in self.resources.requests",
            message: "resources.requests.storage is required",
            field_path: Some(".resources"),
            reason: "FieldValueRequired",
        },
    );
}

/// IsDNS1123Subdomain, as ValidateVolumeAttachment checks the attacher (a CSI driver name).
pub const DNS_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

pub fn volume_attachment(schema: &mut Value) {
    constrain(
        schema,
        "spec.attacher",
        json!({ "maxLength": 253, "pattern": DNS_SUBDOMAIN }),
    );
    constrain(schema, "spec.nodeName", json!({ "minLength": 1 }));
}

/// The fsGroupPolicy values ValidateCSIDriver supports, sorted as its message lists them.
pub const FS_GROUP_POLICIES: [&str; 3] = ["File", "None", "ReadWriteOnceWithFSType"];

/// The volumeLifecycleModes values, in the order of upstream's message.
pub const VOLUME_LIFECYCLE_MODES: [&str; 2] = ["Persistent", "Ephemeral"];

/// Removes `field` from the `required` list of the object schema at `path`.
fn not_required(schema: &mut Value, path: &str, field: &str) {
    let obj = object(schema, path);
    if let Some(Value::Array(required)) = obj.get_mut("required") {
        required.retain(|r| r != field);
        if required.is_empty() {
            obj.remove("required");
        }
    }
}

/// ValidateCSIDriver and validateCSIDriverSpec (pkg/apis/storage/validation, v1.36.3),
/// with upstream's messages. The name is a DNS subdomain of at most 253 characters
/// (NameIsDNSSubdomain), what the apiserver checks of every custom resource's name.
/// attachRequired, podInfoOnMount, storageCapacity and seLinuxMount are required but
/// always defaulted ([`crate::defaults::csi_driver`]); so is an empty
/// volumeLifecycleModes, and preventPodSchedulingIfMissing (its feature gate off) is
/// dropped ([`crate::admission`]). Duplicate token audiences compare across the list:
/// [`crate::admission`]'s policy; what an update may change: [`crate::updates`].
pub fn csi_driver(schema: &mut Value) {
    // A manifest without a spec is accepted and defaulted, as upstream's (a Go struct).
    not_required(schema, "", "spec");
    constrain(
        schema,
        "spec.fsGroupPolicy",
        json!({ "enum": FS_GROUP_POLICIES }),
    );
    constrain(
        schema,
        "spec.volumeLifecycleModes[]",
        json!({ "enum": VOLUME_LIFECYCLE_MODES }),
    );
    // A token request without an audience is one for "" (a Go string), not refused.
    not_required(schema, "spec.tokenRequests[]", "audience");
    let expiration = "spec.tokenRequests[].expirationSeconds";
    rule(
        schema,
        expiration,
        invalid(
            "self >= 600",
            "may not specify a duration less than 10 minutes",
        ),
    );
    rule(
        schema,
        expiration,
        invalid(
            "self <= 4294967296",
            "may not specify a duration larger than 2^32 seconds",
        ),
    );
    rule(
        schema,
        "spec.nodeAllocatableUpdatePeriodSeconds",
        invalid("self >= 10", "must be greater than or equal to 10 seconds"),
    );
    // The rules sit on spec (they read tokenRequests); the message names the value as
    // upstream's field.Invalid does (a messageExpression's estimated cost on this
    // unbounded list exceeds the CRD budget; one rule per value needs none).
    for value in [true, false] {
        rule(
            schema,
            "spec",
            Rule {
                rule: &format!(
                    "!has(self.serviceAccountTokenInSecrets) || self.serviceAccountTokenInSecrets != {value} || \
                     (has(self.tokenRequests) && size(self.tokenRequests) > 0)"
                ),
                message: &format!(
                    "{value}: serviceAccountTokenInSecrets is set but no tokenRequests are specified"
                ),
                field_path: Some(".serviceAccountTokenInSecrets"),
                reason: "FieldValueInvalid",
            },
        );
    }
}

/// IsDNS1123Subdomain's message for a value its regex refuses (RegexError).
pub const DNS_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
    (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// ValidateCSIStorageCapacity (pkg/apis/storage/validation, v1.36.3), with upstream's
/// messages: storageClassName a DNS subdomain (ValidateClassName; at most 253 characters,
/// the schema's bound, which also bounds the rule's cost), capacity a Quantity
/// (`SIGNED_QUANTITY`) not below 0 (ValidateNonnegativeQuantity's message; `-0` is 0),
/// maximumVolumeSize any Quantity (upstream does not check it), nodeTopology a valid label selector (ValidateLabelSelector:
/// values required for In and NotIn and forbidden for Exists and DoesNotExist here, label
/// values and expression keys by [`quantities_and_selectors`]; the operators and the
/// matchLabels keys, over lists and maps too costly for a CRD rule, by
/// [`crate::admission`]'s policy). ValidateCSIStorageCapacityUpdate:
/// nodeTopology and storageClassName are immutable (transition rules).
pub fn csi_storage_capacity(schema: &mut Value) {
    for quantity in ["capacity", "maximumVolumeSize"] {
        constrain(schema, quantity, json!({ "pattern": SIGNED_QUANTITY }));
    }
    rule(
        schema,
        "capacity",
        invalid(
            "type(self) == int ? self >= 0 : \
             (!isQuantity(self) || !quantity(self).isLessThan(quantity('0')))",
            "must be greater than or equal to 0",
        ),
    );
    constrain(schema, "storageClassName", json!({ "maxLength": 253 }));
    rule(
        schema,
        "storageClassName",
        invalid(
            &format!("self.matches('{}')", DNS_SUBDOMAIN.replace('\\', "\\\\")),
            DNS_SUBDOMAIN_MESSAGE,
        ),
    );
    let expression = "nodeTopology.matchExpressions[]";
    rule(
        schema,
        expression,
        Rule {
            rule: "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
            message: "must be specified when `operator` is 'In' or 'NotIn'",
            field_path: Some(".values"),
            reason: "FieldValueRequired",
        },
    );
    rule(
        schema,
        expression,
        Rule {
            rule: "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
            message: "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            field_path: Some(".values"),
            reason: "FieldValueForbidden",
        },
    );
    // On the field itself, so the error shows the new value as upstream's does (a
    // required field: the rule always runs on update).
    rule(
        schema,
        "storageClassName",
        invalid("self == oldSelf", "field is immutable"),
    );
    // Added, removed or changed; upstream's error also prints the new selector, an
    // object's rule prints no value.
    rule(
        schema,
        "",
        Rule {
            rule: "has(self.nodeTopology) == has(oldSelf.nodeTopology) && \
                   (!has(self.nodeTopology) || self.nodeTopology == oldSelf.nodeTopology)",
            message: "field is immutable",
            field_path: Some(".nodeTopology"),
            reason: "FieldValueInvalid",
        },
    );
}

pub fn storage_class(schema: &mut Value) {
    constrain(
        schema,
        "reclaimPolicy",
        json!({ "enum": ["Delete", "Retain"] }),
    );
    constrain(
        schema,
        "volumeBindingMode",
        json!({ "enum": ["Immediate", "WaitForFirstConsumer"] }),
    );
    constrain(schema, "provisioner", json!({ "minLength": 1 }));
    for field in ["provisioner", "reclaimPolicy", "volumeBindingMode"] {
        rule(
            schema,
            "",
            Rule {
                rule: &format!(
                    "has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"
                ),
                message: &format!("updates to {field} are forbidden"),
                field_path: Some(&format!(".{field}")),
                reason: "FieldValueForbidden",
            },
        );
    }
    rule(
        schema,
        "",
        Rule {
            rule: "has(self.parameters) == has(oldSelf.parameters) && (!has(self.parameters) || self.parameters == oldSelf.parameters)",
            message: "updates to parameters are forbidden",
            field_path: Some(".parameters"),
            reason: "FieldValueForbidden",
        },
    );
}

/// pkg/apis/discovery/validation's limits (v1.36.3).
pub const MAX_ENDPOINTS: u32 = 1000;
pub const MAX_ADDRESSES: u32 = 100;
pub const MAX_PORTS: u32 = 20000;
pub const MAX_TOPOLOGY_LABELS: u32 = 16;
pub const MAX_ZONE_HINTS: u32 = 8;
pub const MAX_NODE_HINTS: u32 = 8;

/// ValidateEndpointSlice (pkg/apis/discovery/validation): addressType one of IPv4, IPv6
/// and FQDN and immutable; at most 1000 endpoints of 1 to 100 addresses each (their
/// format for the address type is [`crate::admission`]'s: a rule over every address of
/// every endpoint exceeds a CRD's static CEL budget many times); hostname a DNS label, nodeName a DNS subdomain;
/// deprecatedTopology at most 16 labels; hints at most 8 zones (label values) and 8 nodes,
/// each named once; at most 20000 ports, their names DNS labels and unique, protocols
/// TCP, UDP or SCTP, appProtocol a qualified name.
pub fn endpoint_slice(schema: &mut Value) {
    // Sorted, as upstream lists supported values.
    constrain(
        schema,
        "addressType",
        json!({ "enum": ["FQDN", "IPv4", "IPv6"] }),
    );
    rule(
        schema,
        "addressType",
        invalid("self == oldSelf", "field is immutable"),
    );
    constrain(schema, "endpoints", json!({ "maxItems": MAX_ENDPOINTS }));
    constrain(
        schema,
        "endpoints[].addresses",
        json!({ "maxItems": MAX_ADDRESSES }),
    );
    rule(
        schema,
        "endpoints[].addresses",
        Rule {
            rule: "size(self) > 0",
            message: "must contain at least 1 address",
            field_path: None,
            reason: "FieldValueRequired",
        },
    );
    // No address of any type is longer than a DNS subdomain (it also bounds CEL's cost).
    constrain(
        schema,
        "endpoints[].addresses[]",
        json!({ "maxLength": 253 }),
    );
    constrain(
        schema,
        "endpoints[].hostname",
        json!({ "maxLength": 63, "pattern": DNS_LABEL }),
    );
    constrain(
        schema,
        "endpoints[].nodeName",
        json!({ "maxLength": 253, "pattern": DNS_SUBDOMAIN }),
    );
    constrain(
        schema,
        "endpoints[].deprecatedTopology",
        json!({ "maxProperties": MAX_TOPOLOGY_LABELS }),
    );
    labels(schema, "endpoints[].deprecatedTopology");
    constrain(
        schema,
        "endpoints[].hints.forZones",
        json!({ "maxItems": MAX_ZONE_HINTS }),
    );
    list_map(schema, "endpoints[].hints.forZones", &["name"]);
    label_value(node(schema, "endpoints[].hints.forZones[].name"));
    constrain(
        schema,
        "endpoints[].hints.forNodes",
        json!({ "maxItems": MAX_NODE_HINTS }),
    );
    list_map(schema, "endpoints[].hints.forNodes", &["name"]);
    constrain(
        schema,
        "endpoints[].hints.forNodes[].name",
        json!({ "maxLength": 253, "pattern": DNS_SUBDOMAIN }),
    );
    constrain(schema, "ports", json!({ "maxItems": MAX_PORTS }));
    list_map(schema, "ports", &["name"]);
    constrain(
        schema,
        "ports[].name",
        json!({ "maxLength": 63, "pattern": format!("^$|{DNS_LABEL}") }),
    );
    constrain(
        schema,
        "ports[].protocol",
        json!({ "enum": ["SCTP", "TCP", "UDP"] }),
    );
    constrain(
        schema,
        "ports[].appProtocol",
        json!({ "maxLength": 317, "pattern": QUALIFIED_NAME }),
    );
}
