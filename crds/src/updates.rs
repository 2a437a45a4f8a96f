//! What an update may change (ValidatePodUpdate, ValidatePodEphemeralContainersUpdate,
//! ValidatePersistentVolumeClaimUpdate, ValidatePersistentVolumeUpdate,
//! ValidateServiceUpdate, ValidateNodeUpdate, ValidateVolumeAttachmentUpdate,
//! ValidateCSIDriverUpdate), as
//! ValidatingAdmissionPolicies on UPDATE of the main resource. Status updates go through
//! the status subresource, which these policies do not match.
//!
//! A CRD transition rule cannot compare "every field but these" of objects of unbounded
//! size within the static CEL cost budget; an admission policy sees the objects as plain
//! maps, bounded by runtime cost only, so the rules iterate over the keys.
//!
//! rekube has no binding, ephemeralcontainers or resize subresource: the scheduler binds a
//! pod by setting `spec.nodeName` once (allowed from empty to a value, never changed or
//! removed afterwards), and ephemeral containers are added to `spec.ephemeralContainers`
//! (allowed; existing ones may not be removed or changed).
use serde_json::{Value, json};

use crate::GROUP;
use crate::admission::{ValidatingPolicy, check, check_with_message};
use crate::storage_keys::ANN_BETA_STORAGE_CLASS;
use crate::validation::PV_SOURCES;

/// CEL list literal of strings.
fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// CEL: maps `new` and `old` hold the same keys with equal values, the keys in the list
/// `except` aside.
fn same_except(new: &str, old: &str, except: &str) -> String {
    format!(
        "({new}.all(k, k in {except} || (k in {old} && {new}[k] == {old}[k])) && \
         {old}.all(k, k in {except} || k in {new}))"
    )
}

/// CEL: the keys of `new` and `old` outside `except` that differ, as `prefix.key` strings.
fn changed_keys(new: &str, old: &str, except: &str, prefix: &str) -> String {
    format!(
        "({new}.filter(k, !(k in {except}) && !(k in {old} && {new}[k] == {old}[k])) + \
         {old}.filter(k, !(k in {except}) && !(k in {new}))).map(k, '{prefix}.' + k)"
    )
}

/// CEL: the optional field `f` of `obj`, or `default`.
fn opt(obj: &str, f: &str, default: &str) -> String {
    format!("{obj}.?{f}.orValue({default})")
}

const NEW: &str = "variables.new";
const OLD: &str = "variables.old";

/// The `new` and `old` variables every update policy compares: the object's spec before
/// and after. Where the kind's spec is optional (a Node an agent registers, a Service),
/// an absent spec is an empty one rather than an evaluation error.
fn spec_variables(optional: bool) -> Vec<(&'static str, String)> {
    if optional {
        vec![
            ("new", "object.?spec.orValue({})".into()),
            ("old", "oldObject.?spec.orValue({})".into()),
        ]
    } else {
        vec![
            ("new", "object.spec".into()),
            ("old", "oldObject.spec".into()),
        ]
    }
}

/// upstream's `spec.volumeMode` immutability (PersistentVolume and PersistentVolumeClaim).
fn volume_mode_immutable() -> Value {
    check(
        format!(
            "{} == {}",
            opt(NEW, "volumeMode", "''"),
            opt(OLD, "volumeMode", "''")
        ),
        "volumeMode: Invalid value: field is immutable",
        "Invalid",
    )
}

/// The spec fields ValidatePodUpdate lets change, each checked by its own rule.
const POD_MUTABLE: [&str; 8] = [
    "containers",
    "initContainers",
    "ephemeralContainers",
    "activeDeadlineSeconds",
    "tolerations",
    "schedulingGates",
    "terminationGracePeriodSeconds",
    "nodeName",
];

/// upstream's updatablePodSpecFields, as its message lists them.
const POD_UPDATABLE: &str = "pod updates may not change fields other than \
    `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,\
    `spec.tolerations` (only additions to existing tolerations),\
    `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// CEL: the containers of list `l` are the same, in the same order, but for their images.
fn containers_same_but_image(l: &str) -> String {
    let (new, old) = (opt(NEW, l, "[]"), opt(OLD, l, "[]"));
    let fields = same_except("c", "o", "['image']");
    format!(
        "({new}.map(c, c.name) == {old}.map(c, c.name) && \
         {new}.all(c, {old}.exists(o, o.name == c.name && {fields})))"
    )
}

/// CEL: terminationGracePeriodSeconds unchanged, or set to 1 from a negative value.
const GRACE_PERIOD_SAME: &str = "((has(variables.new.terminationGracePeriodSeconds) == \
    has(variables.old.terminationGracePeriodSeconds) && \
    (!has(variables.new.terminationGracePeriodSeconds) || \
    variables.new.terminationGracePeriodSeconds == variables.old.terminationGracePeriodSeconds)) || \
    (variables.old.?terminationGracePeriodSeconds.orValue(0) < 0 && \
    variables.new.?terminationGracePeriodSeconds.orValue(0) == 1))";

fn pod_update() -> ValidatingPolicy {
    let gated = format!("size({}) > 0", opt(OLD, "schedulingGates", "[]"));
    let mutable = format!("{} + ({gated} ? ['nodeSelector'] : [])", list(&POD_MUTABLE));
    let rest_same = format!(
        "{} && {} && {} && {GRACE_PERIOD_SAME}",
        same_except(NEW, OLD, "variables.mutable"),
        containers_same_but_image("containers"),
        containers_same_but_image("initContainers"),
    );
    let changed = format!(
        "{} + ({} ? [] : ['spec.containers']) + ({} ? [] : ['spec.initContainers']) + \
         ({GRACE_PERIOD_SAME} ? [] : ['spec.terminationGracePeriodSeconds'])",
        changed_keys(NEW, OLD, "variables.mutable", "spec"),
        containers_same_but_image("containers"),
        containers_same_but_image("initContainers"),
    );
    let mut validations = Vec::new();
    for l in ["containers", "initContainers"] {
        validations.push(check(
            format!("size({}) == size({})", opt(NEW, l, "[]"), opt(OLD, l, "[]")),
            &format!("spec.{l}: Forbidden: pod updates may not add or remove containers"),
            "Forbidden",
        ));
    }
    validations.extend([
        check(
            "!has(variables.old.activeDeadlineSeconds) || has(variables.new.activeDeadlineSeconds)".into(),
            "spec.activeDeadlineSeconds: Invalid value: \"null\": must not update from a positive integer to nil value",
            "Invalid",
        ),
        check_with_message(
            "!has(variables.old.activeDeadlineSeconds) || !has(variables.new.activeDeadlineSeconds) || \
             variables.new.activeDeadlineSeconds <= variables.old.activeDeadlineSeconds"
                .into(),
            "'spec.activeDeadlineSeconds: Invalid value: ' + string(variables.new.activeDeadlineSeconds) + \
             ': must be less than or equal to previous value'"
                .into(),
            "Invalid",
        ),
        check(
            format!(
                "{}.all(t, {}.exists(n, {}))",
                opt(OLD, "tolerations", "[]"),
                opt(NEW, "tolerations", "[]"),
                same_except("n", "t", "['tolerationSeconds']")
            ),
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds",
            "Forbidden",
        ),
        check_with_message(
            format!(
                "{}.all(g, {}.exists(o, o.name == g.name))",
                opt(NEW, "schedulingGates", "[]"),
                opt(OLD, "schedulingGates", "[]")
            ),
            format!(
                "'spec.schedulingGates: Forbidden: only deletion is allowed, but found new scheduling gate \\'' + \
                 {}.filter(g, !{}.exists(o, o.name == g.name))[0].name + '\\''",
                opt(NEW, "schedulingGates", "[]"),
                opt(OLD, "schedulingGates", "[]")
            ),
            "Forbidden",
        ),
        check_with_message(
            format!(
                "{} == '' || {} == variables.old.nodeName",
                opt(OLD, "nodeName", "''"),
                opt(NEW, "nodeName", "''")
            ),
            "'spec.nodeName: Forbidden: pod is already assigned to node \"' + variables.old.nodeName + '\"'"
                .into(),
            "Forbidden",
        ),
        check(
            format!(
                "!({gated}) || {}.all(k, k in {} && variables.new.nodeSelector[k] == variables.old.nodeSelector[k])",
                opt(OLD, "nodeSelector", "{}"),
                opt(NEW, "nodeSelector", "{}")
            ),
            "spec.nodeSelector: Invalid value: only additions to spec.nodeSelector are allowed (no mutations or deletions)",
            "Invalid",
        ),
        check_with_message(
            format!(
                "{}.all(o, {}.exists(n, n == o))",
                opt(OLD, "ephemeralContainers", "[]"),
                opt(NEW, "ephemeralContainers", "[]")
            ),
            format!(
                "'spec.ephemeralContainers: Forbidden: existing ephemeral containers \"' + {first}.name + \
                 '\" may not be ' + ({new}.exists(n, n.name == {first}.name) ? 'changed' : 'removed')",
                first = format!("{}.filter(o, !{}.exists(n, n == o))[0]", opt(OLD, "ephemeralContainers", "[]"), opt(NEW, "ephemeralContainers", "[]")),
                new = opt(NEW, "ephemeralContainers", "[]")
            ),
            "Forbidden",
        ),
        check_with_message(
            rest_same,
            format!("'spec: Forbidden: {POD_UPDATABLE}; changed: ' + ({changed}).join(', ')"),
            "Forbidden",
        ),
    ]);
    ValidatingPolicy {
        name: "rekube-pod-update.rekube.io",
        resources: &["pods"],
        operations: &["UPDATE"],
        variables: vec![
            ("new", "object.spec".into()),
            ("old", "oldObject.spec".into()),
            ("mutable", mutable),
        ],
        validations,
    }
}

/// The PVC spec fields ValidatePersistentVolumeClaimUpdate lets change, each checked by
/// its own rule.
const PVC_MUTABLE: [&str; 4] = [
    "resources",
    "volumeName",
    "storageClassName",
    "volumeAttributesClassName",
];

fn pvc_update() -> ValidatingPolicy {
    let new_res = opt(NEW, "resources", "{}");
    let old_res = opt(OLD, "resources", "{}");
    let new_req = format!("{new_res}.?requests.orValue({{}})");
    let old_req = format!("{old_res}.?requests.orValue({{}})");
    let storage = |req: &str| format!("quantity(string({req}.?storage.orValue(0)))");
    let capacity = "quantity(string(oldObject.?status.?capacity.?storage.orValue(0)))";
    let bound = "oldObject.?status.?phase.orValue('') == 'Bound'";
    let rest_same = format!(
        "{} && {} && {}",
        same_except(NEW, OLD, &list(&PVC_MUTABLE)),
        same_except(&new_res, &old_res, "['requests']"),
        same_except(&new_req, &old_req, "['storage']"),
    );
    let message = "spec is immutable after creation except resources.requests and \
                   volumeAttributesClassName for bound claims";
    ValidatingPolicy {
        name: "rekube-persistentvolumeclaim-update.rekube.io",
        resources: &["persistentvolumeclaims"],
        operations: &["UPDATE"],
        variables: spec_variables(false),
        validations: vec![
            check_with_message(
                rest_same,
                format!(
                    "'spec: Forbidden: {message}; changed: ' + ({} + {} + {}).join(', ')",
                    changed_keys(NEW, OLD, &list(&PVC_MUTABLE), "spec"),
                    changed_keys(&new_res, &old_res, "['requests']", "spec.resources"),
                    changed_keys(&new_req, &old_req, "['storage']", "spec.resources.requests"),
                ),
                "Forbidden",
            ),
            check(
                format!("{} == {} || {bound}", storage(&new_req), storage(&old_req)),
                &format!("spec: Forbidden: {message}; changed: spec.resources.requests.storage"),
                "Forbidden",
            ),
            check(
                format!(
                    "!({s_new}.isLessThan({s_old})) || {s_new}.isGreaterThan({capacity})",
                    s_new = storage(&new_req),
                    s_old = storage(&old_req)
                ),
                "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity",
                "Forbidden",
            ),
            check_with_message(
                format!(
                    "{} == '' || {} == variables.old.volumeName",
                    opt(OLD, "volumeName", "''"),
                    opt(NEW, "volumeName", "''")
                ),
                format!("'spec: Forbidden: {message}; changed: spec.volumeName'"),
                "Forbidden",
            ),
            check(
                "!has(variables.old.storageClassName) || (has(variables.new.storageClassName) && \
                 variables.new.storageClassName == variables.old.storageClassName)"
                    .into(),
                &format!("spec: Forbidden: {message}; changed: spec.storageClassName"),
                "Forbidden",
            ),
            volume_mode_immutable(),
        ],
    }
}

fn pv_update() -> ValidatingPolicy {
    ValidatingPolicy {
        name: "rekube-persistentvolume-update.rekube.io",
        resources: &["persistentvolumes"],
        operations: &["UPDATE"],
        variables: spec_variables(false),
        validations: vec![
            check(
                format!(
                    "{}.all(k, (k in {NEW}) == (k in {OLD}) && (!(k in {NEW}) || {NEW}[k] == {OLD}[k]))",
                    list(&PV_SOURCES)
                ),
                "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation",
                "Forbidden",
            ),
            volume_mode_immutable(),
        ],
    }
}

fn service_update() -> ValidatingPolicy {
    let external_name = "variables.old.?type.orValue('') == 'ExternalName' || \
                         variables.new.?type.orValue('') == 'ExternalName'";
    ValidatingPolicy {
        name: "rekube-service-update.rekube.io",
        resources: &["services"],
        operations: &["UPDATE"],
        variables: spec_variables(true),
        validations: vec![check_with_message(
            format!(
                "{} == '' || {external_name} || {} == variables.old.clusterIP",
                opt(OLD, "clusterIP", "''"),
                opt(NEW, "clusterIP", "''")
            ),
            format!(
                "'spec.clusterIPs[0]: Invalid value: \"' + {}  + '\": may not change once set'",
                opt(NEW, "clusterIP", "''")
            ),
            "Invalid",
        )],
    }
}

fn node_update() -> ValidatingPolicy {
    let cidr =
        "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid";
    ValidatingPolicy {
        name: "rekube-node-update.rekube.io",
        resources: &["nodes"],
        operations: &["UPDATE"],
        variables: spec_variables(true),
        validations: vec![
            check(
                format!(
                    "size({old}) == 0 || {new} == {old}",
                    old = opt(OLD, "podCIDRs", "[]"),
                    new = opt(NEW, "podCIDRs", "[]")
                ),
                cidr,
                "Forbidden",
            ),
            check(
                format!(
                    "{} == '' || {} == variables.old.podCIDR",
                    opt(OLD, "podCIDR", "''"),
                    opt(NEW, "podCIDR", "''")
                ),
                cidr,
                "Forbidden",
            ),
            check(
                format!(
                    "{} == '' || {} == variables.old.providerID",
                    opt(OLD, "providerID", "''"),
                    opt(NEW, "providerID", "''")
                ),
                "spec.providerID: Forbidden: node updates may not change providerID except from \"\" to valid",
                "Forbidden",
            ),
            check(
                format!(
                    "{} == {}",
                    opt(NEW, "externalID", "''"),
                    opt(OLD, "externalID", "''")
                ),
                "spec.externalID: Forbidden: may not be updated",
                "Forbidden",
            ),
        ],
    }
}

fn volume_attachment_update() -> ValidatingPolicy {
    ValidatingPolicy {
        name: "rekube-volumeattachment-update.rekube.io",
        resources: &["volumeattachments"],
        operations: &["UPDATE"],
        variables: vec![],
        validations: vec![check(
            "object.spec == oldObject.spec".into(),
            "spec: Invalid value: field is immutable",
            "Invalid",
        )],
    }
}

/// ValidateCSIDriverUpdate: attachRequired and volumeLifecycleModes are immutable, with
/// upstream's messages (its field path for attachRequired is `spec.attachedRequired`).
/// Both are always set (defaulted) by the time this runs.
fn csi_driver_update() -> ValidatingPolicy {
    let same = |f: &str| {
        format!("(has({NEW}.{f}) == has({OLD}.{f}) && (!has({NEW}.{f}) || {NEW}.{f} == {OLD}.{f}))")
    };
    let (attach, modes) = (same("attachRequired"), same("volumeLifecycleModes"));
    ValidatingPolicy {
        name: "rekube-csidriver-update.rekube.io",
        resources: &["csidrivers"],
        operations: &["UPDATE"],
        variables: vec![
            ("new", "object.?spec.orValue({})".into()),
            ("old", "oldObject.?spec.orValue({})".into()),
        ],
        // One validation: a policy reports only its first failing one, upstream both.
        validations: vec![check_with_message(
            format!("{attach} && {modes}"),
            format!(
                "[{attach} ? '' : 'spec.attachedRequired: Invalid value: ' + \
                 (has({NEW}.attachRequired) ? string({NEW}.attachRequired) : 'null') + ': field is immutable', \
                 {modes} ? '' : 'spec.volumeLifecycleModes: Invalid value: ' + \
                 (has({NEW}.volumeLifecycleModes) ? \
                  '[' + {NEW}.volumeLifecycleModes.map(m, '\"' + m + '\"').join(',') + ']' : 'null') + \
                 ': field is immutable'].filter(m, m != '').join(', ')"
            ),
            "Invalid",
        )],
    }
}

/// The name of the claim resize policy ([`pvc_resize`]).
pub const PVC_RESIZE_POLICY: &str = "rekube-persistentvolumeclaim-resize.rekube.io";

/// upstream's PersistentVolumeClaimResize admission plugin
/// (plugin/pkg/admission/storage/persistentvolume/resize): growing a claim's
/// `spec.resources.requests.storage` is refused unless its StorageClass (its
/// `storageClassName`, or the beta annotation, the same before and after) has
/// `allowVolumeExpansion: true`, with upstream's message.
///
/// A policy sees other objects only as parameters: the binding's `paramRef` selects every
/// rekube StorageClass (`selector: {}`), the policy is evaluated once per class, and a
/// class passes unless it is the claim's and does not allow expansion. So a claim without
/// a class is refused (while any class exists). What a policy cannot see is a class that
/// does not exist: a claim whose class is missing, or any claim while no class exists at
/// all (`parameterNotFoundAction: Allow`: the parameters are looked up before the
/// `matchConditions`, so Deny would refuse every update of every claim then), passes;
/// `rekube-csi resizer` refuses to expand such a claim (docs/csi.md). The policy matches
/// growing updates of bound claims only (`matchConditions`). (An unbound claim's growth is
/// refused before, by [`pvc_update`], as upstream's validation refuses it before
/// admission.)
fn pvc_resize() -> [Value; 2] {
    let storage =
        |o: &str| format!("quantity(string({o}.spec.?resources.?requests.?storage.orValue(0)))");
    let class = |o: &str| {
        format!(
            "({o}.metadata.?annotations[?'{ANN_BETA_STORAGE_CLASS}'].orValue('') != '' ? \
             {o}.metadata.annotations['{ANN_BETA_STORAGE_CLASS}'] : {o}.spec.?storageClassName.orValue(''))"
        )
    };
    let message = "only dynamically provisioned pvc can be resized and the storageclass that \
                   provisions the pvc must support resize";
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": PVC_RESIZE_POLICY },
            "spec": {
                "failurePolicy": "Fail",
                "paramKind": { "apiVersion": format!("{GROUP}/v1"), "kind": "StorageClass" },
                "matchConstraints": { "resourceRules": [{
                    "apiGroups": [GROUP], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["persistentvolumeclaims"],
                }]},
                "matchConditions": [
                    {
                        "name": "storage-request-grows",
                        "expression": format!("{}.isGreaterThan({})", storage("object"), storage("oldObject")),
                    },
                    // An unbound claim's growth is the update policy's (upstream's
                    // validation refuses it before admission).
                    {
                        "name": "claim-bound",
                        "expression": "oldObject.?status.?phase.orValue('') == 'Bound'",
                    },
                ],
                "variables": [
                    { "name": "class", "expression": class("object") },
                    { "name": "oldClass", "expression": class("oldObject") },
                ],
                "validations": [{
                    "expression": "variables.class != '' && variables.class == variables.oldClass && \
                        (params.metadata.name != variables.class || params.?allowVolumeExpansion.orValue(false))",
                    "message": message,
                    "reason": "Forbidden",
                }],
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": PVC_RESIZE_POLICY },
            "spec": {
                "policyName": PVC_RESIZE_POLICY,
                "validationActions": ["Deny"],
                // Allow: the apiserver looks the parameters up before it evaluates the
                // matchConditions, so Deny would refuse every update of every claim while
                // no StorageClass exists.
                "paramRef": { "selector": {}, "parameterNotFoundAction": "Allow" },
            },
        }),
    ]
}

/// The update policies and their bindings, in apply order.
pub fn objects() -> Vec<Value> {
    [
        pod_update(),
        pvc_update(),
        pv_update(),
        service_update(),
        node_update(),
        volume_attachment_update(),
        csi_driver_update(),
    ]
    .into_iter()
    .flat_map(|p| p.objects())
    .chain(pvc_resize())
    .collect()
}
