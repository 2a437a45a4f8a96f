//! The generated manifests: current in the repository, within kubectl's annotation limit,
//! structural, and faithful to the upstream types.
use std::path::Path;

use rekube_crds::catalog;
use rekube_crds::generate::{ADMISSION_FILE, LAST_APPLIED_BUDGET, drift, render_all};
use serde_json::Value;

#[test]
fn committed_manifests_match_crdgen() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let problems = drift(root);
    assert!(
        problems.is_empty(),
        "run `just crds`:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_crd_fits_the_last_applied_annotation() {
    for r in render_all().values() {
        assert!(
            r.json_bytes <= LAST_APPLIED_BUDGET,
            "{} is {} bytes as JSON",
            r.file_name,
            r.json_bytes
        );
        if r.file_name != ADMISSION_FILE {
            assert!(
                r.description_depth >= 3,
                "{} keeps descriptions only {} levels deep",
                r.file_name,
                r.description_depth
            );
        }
    }
}

fn keys_anywhere(v: &Value, key: &str) -> usize {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, c)| usize::from(k == key) + keys_anywhere(c, key))
            .sum(),
        Value::Array(a) => a.iter().map(|c| keys_anywhere(c, key)).sum(),
        _ => 0,
    }
}

#[test]
fn schemas_are_structural_and_prune_nulls() {
    for d in catalog::all() {
        let props = &d.schema["properties"];
        for key in ["$ref", "oneOf", "allOf", "nullable", "definitions"] {
            assert_eq!(keys_anywhere(props, key), 0, "{} schema has {key}", d.kind);
        }
        assert_eq!(
            d.schema["properties"]["metadata"],
            serde_json::json!({ "type": "object" }),
            "{}",
            d.kind
        );
    }
}

/// The schema is the upstream type's, property for property.
#[test]
fn top_level_properties_are_the_upstream_ones() {
    let expected: &[(&str, &[&str])] = &[
        ("Pod", &["apiVersion", "kind", "metadata", "spec", "status"]),
        (
            "Deployment",
            &["apiVersion", "kind", "metadata", "spec", "status"],
        ),
        ("Endpoints", &["apiVersion", "kind", "metadata", "subsets"]),
        (
            "CSIStorageCapacity",
            &[
                "apiVersion",
                "capacity",
                "kind",
                "maximumVolumeSize",
                "metadata",
                "nodeTopology",
                "storageClassName",
            ],
        ),
        (
            "EndpointSlice",
            &[
                "addressType",
                "apiVersion",
                "endpoints",
                "kind",
                "metadata",
                "ports",
            ],
        ),
        (
            "StorageClass",
            &[
                "allowVolumeExpansion",
                "allowedTopologies",
                "apiVersion",
                "kind",
                "metadata",
                "mountOptions",
                "parameters",
                "provisioner",
                "reclaimPolicy",
                "volumeBindingMode",
            ],
        ),
    ];
    let all = catalog::all();
    for (kind, props) in expected {
        let d = all.iter().find(|d| d.kind == *kind).unwrap();
        let mut got: Vec<&str> = d.schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        got.sort();
        assert_eq!(got, *props, "{kind}");
    }
}

/// The "exactly one volume source" rule names every source a PersistentVolumeSpec has.
#[test]
fn pv_source_list_covers_the_schema() {
    let all = catalog::all();
    let pv = all.iter().find(|d| d.kind == "PersistentVolume").unwrap();
    let spec = pv.schema["properties"]["spec"]["properties"]
        .as_object()
        .unwrap();
    let not_sources = [
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "volumeAttributesClassName",
    ];
    let mut sources: Vec<&str> = spec
        .iter()
        .filter(|(k, v)| v["type"] == "object" && !not_sources.contains(&k.as_str()))
        .map(|(k, _)| k.as_str())
        .collect();
    sources.sort();
    assert_eq!(sources, rekube_crds::validation::PV_SOURCES);
}

#[test]
fn objects_serialize_with_the_rekube_api_version() {
    let mut d = rekube_crds::Deployment::default();
    d.metadata.name = Some("web".into());
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["apiVersion"], "rekube.io/v1");
    assert_eq!(v["kind"], "Deployment");
    assert!(v.get("spec").is_none() && v.get("status").is_none(), "{v}");

    let sc: rekube_crds::StorageClass =
        serde_json::from_value(serde_json::json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast"}, "provisioner": "local.rekube.io", "reclaimPolicy": "Retain"}))
        .unwrap();
    let v = serde_json::to_value(&sc).unwrap();
    assert_eq!(v["apiVersion"], "rekube.io/v1");
    assert_eq!(v["provisioner"], "local.rekube.io");
    assert_eq!(v["reclaimPolicy"], "Retain");
    assert!(v.get("parameters").is_none(), "{v}");
}

#[test]
fn kube_resource_metadata_points_at_rekube() {
    use kube::Resource;
    assert_eq!(
        rekube_crds::Pod::url_path(&(), Some("ns")),
        "/apis/rekube.io/v1/namespaces/ns/pods"
    );
    assert_eq!(
        rekube_crds::Node::url_path(&(), None),
        "/apis/rekube.io/v1/nodes"
    );
    assert_eq!(
        rekube_crds::PersistentVolumeClaim::api_version(&()),
        "rekube.io/v1"
    );
}

/// Every int-or-string node of every schema is either a Quantity, constrained to parse,
/// or one of the known IntOrString fields (ports, maxSurge/maxUnavailable): no Quantity
/// escapes the pattern, wherever k8s-openapi puts one, and every node that still carries
/// the Quantity type's description (map values) is among the constrained ones.
#[test]
fn every_quantity_must_parse() {
    fn walk(v: &Value, path: &str, pattern: &str, out: &mut Vec<(String, bool)>) {
        let Value::Object(m) = v else { return };
        if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            let constrained = m.get("pattern").and_then(Value::as_str) == Some(pattern);
            let described = m
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.starts_with("Quantity is"));
            assert!(constrained || !described, "{path} is a Quantity");
            out.push((path.to_string(), constrained));
        }
        if let Some(Value::Object(props)) = m.get("properties") {
            for (k, p) in props {
                walk(p, &format!("{path}.{k}"), pattern, out);
            }
        }
        if let Some(items) = m.get("items") {
            walk(items, &format!("{path}[]"), pattern, out);
        }
        if let Some(values) = m.get("additionalProperties") {
            walk(values, &format!("{path}{{}}"), pattern, out);
        }
    }
    let int_or_string = rekube_crds::validation::INT_OR_STRING_FIELDS;
    let mut quantities = Vec::new();
    for d in catalog::all() {
        // A CSIStorageCapacity checks its quantities' sign itself (upstream's message for
        // capacity; maximumVolumeSize may be negative).
        let pattern = if d.kind == "CSIStorageCapacity" {
            rekube_crds::validation::SIGNED_QUANTITY
        } else {
            rekube_crds::validation::QUANTITY
        };
        let mut nodes = Vec::new();
        walk(&d.schema, "", pattern, &mut nodes);
        for (path, constrained) in nodes {
            let last = path.rsplit('.').next().unwrap();
            if int_or_string.contains(&last) {
                assert!(!constrained, "{} {path} is an IntOrString", d.kind);
            } else {
                assert!(
                    constrained,
                    "{} {path} is a Quantity without the pattern",
                    d.kind
                );
                quantities.push(format!("{} {path}", d.kind));
            }
        }
    }
    for expected in [
        "Pod .spec.containers[].resources.requests{}",
        "Pod .spec.initContainers[].resources.limits{}",
        "Pod .spec.overhead{}",
        "Pod .spec.resources.limits{}",
        "Pod .spec.volumes[].emptyDir.sizeLimit",
        "Pod .spec.containers[].env[].valueFrom.resourceFieldRef.divisor",
        "Deployment .spec.template.spec.containers[].resources.requests{}",
        "PersistentVolumeClaim .spec.resources.requests{}",
        "PersistentVolume .spec.capacity{}",
        "Node .status.capacity{}",
        "Node .status.allocatable{}",
        "CSIStorageCapacity .capacity",
        "CSIStorageCapacity .maximumVolumeSize",
    ] {
        assert!(
            quantities.iter().any(|q| q == expected),
            "{expected} not found among {quantities:#?}"
        );
    }
}

/// Every validation of every admission policy has a message (fixed or computed) and one of
/// the reasons a ValidatingAdmissionPolicy accepts; update policies match only UPDATE.
#[test]
fn validating_policies_are_well_formed() {
    let objects = rekube_crds::admission::validating_objects();
    let policies: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    assert!(policies.len() >= 10, "{} policies", policies.len());
    for p in policies {
        let name = p["metadata"]["name"].as_str().unwrap();
        let validations = p["spec"]["validations"].as_array().unwrap();
        assert!(!validations.is_empty(), "{name} validates nothing");
        for v in validations {
            assert!(
                v["message"].is_string() || v["messageExpression"].is_string(),
                "{name}: {v} has no message"
            );
            let reason = v["reason"].as_str().unwrap_or_default();
            assert!(
                ["Forbidden", "Invalid", "RequestEntityTooLarge"].contains(&reason),
                "{name}: reason {reason:?}"
            );
        }
        let operations = &p["spec"]["matchConstraints"]["resourceRules"][0]["operations"];
        if name.ends_with("-update.rekube.io") {
            assert_eq!(operations, &serde_json::json!(["UPDATE"]), "{name}");
        }
    }
}
