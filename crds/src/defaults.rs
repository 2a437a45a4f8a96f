//! Upstream defaults (pkg/apis/core/v1/defaults.go, pkg/apis/apps/v1/defaults.go,
//! pkg/apis/storage/v1/defaults.go) written into the schemas as OpenAPI `default`s, so the
//! apiserver fills them in and a minimal manifest reads back like its upstream twin.
//!
//! Defaults that upstream computes from other fields (imagePullPolicy from the image tag, a
//! Service's targetPort from its port, requests from limits) cannot be schema defaults;
//! the controllers and the node agent apply those rules where they read the field.
use serde_json::{Value, json};

use crate::schema;

fn set(schema: &mut Value, path: &str, default: Value) {
    schema::node(schema, path)
        .as_object_mut()
        .unwrap_or_else(|| panic!("schema node {path:?} is not an object"))
        .insert("default".into(), default);
}

/// Probe and HTTPGetAction defaults, at every place a probe or handler sits in a container.
fn container(schema: &mut Value, at: &str) {
    set(
        schema,
        &format!("{at}.terminationMessagePath"),
        json!("/dev/termination-log"),
    );
    set(
        schema,
        &format!("{at}.terminationMessagePolicy"),
        json!("File"),
    );
    // Go's non-pointer struct, always serialized.
    set(schema, &format!("{at}.resources"), json!({}));
    set(schema, &format!("{at}.ports[].protocol"), json!("TCP"));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let p = format!("{at}.{probe}");
        set(schema, &format!("{p}.timeoutSeconds"), json!(1));
        set(schema, &format!("{p}.periodSeconds"), json!(10));
        set(schema, &format!("{p}.successThreshold"), json!(1));
        set(schema, &format!("{p}.failureThreshold"), json!(3));
        http_get(schema, &format!("{p}.httpGet"));
    }
    for hook in ["postStart", "preStop"] {
        http_get(schema, &format!("{at}.lifecycle.{hook}.httpGet"));
    }
    set(
        schema,
        &format!("{at}.env[].valueFrom.fieldRef.apiVersion"),
        json!("v1"),
    );
}

fn http_get(schema: &mut Value, at: &str) {
    set(schema, &format!("{at}.path"), json!("/"));
    set(schema, &format!("{at}.scheme"), json!("HTTP"));
}

/// SetDefaults_PodSpec and friends, for a PodSpec at `at` (a Pod's `spec` or a template's).
pub fn pod_spec(schema: &mut Value, at: &str) {
    set(schema, &format!("{at}.restartPolicy"), json!("Always"));
    set(
        schema,
        &format!("{at}.terminationGracePeriodSeconds"),
        json!(30),
    );
    set(schema, &format!("{at}.dnsPolicy"), json!("ClusterFirst"));
    set(
        schema,
        &format!("{at}.schedulerName"),
        json!("default-scheduler"),
    );
    set(schema, &format!("{at}.securityContext"), json!({}));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        container(schema, &format!("{at}.{list}[]"));
    }
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        set(
            schema,
            &format!("{at}.volumes[].{source}.defaultMode"),
            json!(0o644),
        );
    }
    set(schema, &format!("{at}.volumes[].hostPath.type"), json!(""));
    // SetDefaults_ServiceAccountTokenProjection.
    set(
        schema,
        &format!("{at}.volumes[].projected.sources[].serviceAccountToken.expirationSeconds"),
        json!(3600),
    );
}

pub fn pod(schema: &mut Value) {
    pod_spec(schema, "spec");
    set(schema, "spec.enableServiceLinks", json!(true));
    set(schema, "status", json!({ "phase": "Pending" }));
}

fn replicas(schema: &mut Value) {
    set(schema, "spec.replicas", json!(1));
    pod_spec(schema, "spec.template.spec");
}

pub fn deployment(schema: &mut Value) {
    replicas(schema);
    set(schema, "spec.revisionHistoryLimit", json!(10));
    set(schema, "spec.progressDeadlineSeconds", json!(600));
    set(
        schema,
        "spec.strategy",
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" } }),
    );
    set(schema, "spec.strategy.type", json!("RollingUpdate"));
    set(
        schema,
        "spec.strategy.rollingUpdate.maxUnavailable",
        json!("25%"),
    );
    set(schema, "spec.strategy.rollingUpdate.maxSurge", json!("25%"));
    set(schema, "status", json!({}));
}

pub fn replica_set(schema: &mut Value) {
    replicas(schema);
    set(schema, "status", json!({ "replicas": 0 }));
}

pub fn service(schema: &mut Value) {
    set(schema, "spec.type", json!("ClusterIP"));
    set(schema, "spec.sessionAffinity", json!("None"));
    set(schema, "spec.internalTrafficPolicy", json!("Cluster"));
    set(schema, "spec.ports[].protocol", json!("TCP"));
    set(schema, "status", json!({ "loadBalancer": {} }));
}

pub fn endpoints(schema: &mut Value) {
    set(schema, "subsets[].ports[].protocol", json!("TCP"));
}

/// discovery/v1 SetDefaults_EndpointPort: name "" and protocol TCP; an endpoint's
/// `conditions`, a struct Go always serializes, `{}`.
pub fn endpoint_slice(schema: &mut Value) {
    set(schema, "endpoints[].conditions", json!({}));
    set(schema, "ports[].name", json!(""));
    set(schema, "ports[].protocol", json!("TCP"));
}

pub fn persistent_volume(schema: &mut Value) {
    set(
        schema,
        "spec.persistentVolumeReclaimPolicy",
        json!("Retain"),
    );
    set(schema, "spec.volumeMode", json!("Filesystem"));
    set(schema, "spec.hostPath.type", json!(""));
    set(schema, "status", json!({ "phase": "Pending" }));
}

pub fn persistent_volume_claim(schema: &mut Value) {
    set(schema, "spec.volumeMode", json!("Filesystem"));
    set(schema, "status", json!({ "phase": "Pending" }));
}

pub fn storage_class(schema: &mut Value) {
    set(schema, "reclaimPolicy", json!("Delete"));
    set(schema, "volumeBindingMode", json!("Immediate"));
}

/// NodeStatus' non-pointer structs, always serialized by upstream.
pub fn node(schema: &mut Value) {
    let info = [
        "architecture",
        "bootID",
        "containerRuntimeVersion",
        "kernelVersion",
        "kubeProxyVersion",
        "kubeletVersion",
        "machineID",
        "operatingSystem",
        "osImage",
        "systemUUID",
    ];
    let node_info: serde_json::Map<String, Value> =
        info.iter().map(|k| (k.to_string(), json!(""))).collect();
    set(
        schema,
        "status",
        json!({ "daemonEndpoints": { "kubeletEndpoint": { "Port": 0 } }, "nodeInfo": node_info }),
    );
}

/// SetDefaults_CSIDriver (pkg/apis/storage/v1/defaults.go), with the feature gates of
/// v1.36.3: seLinuxMount defaulted (SELinuxMountReadWriteOncePod, GA), not
/// preventPodSchedulingIfMissing (VolumeLimitScaling, alpha, off). An empty
/// volumeLifecycleModes list is defaulted by [`crate::admission`]'s policy (a schema
/// default fills only an absent field); an absent spec is an empty one, then defaulted;
/// a token request's audience is "" when absent (a Go string, always serialized).
pub fn csi_driver(schema: &mut Value) {
    set(schema, "spec", json!({}));
    set(schema, "spec.tokenRequests[].audience", json!(""));
    set(schema, "spec.attachRequired", json!(true));
    set(schema, "spec.podInfoOnMount", json!(false));
    set(schema, "spec.storageCapacity", json!(false));
    set(
        schema,
        "spec.fsGroupPolicy",
        json!("ReadWriteOnceWithFSType"),
    );
    set(schema, "spec.requiresRepublish", json!(false));
    set(schema, "spec.volumeLifecycleModes", json!(["Persistent"]));
    set(schema, "spec.seLinuxMount", json!(false));
}

pub fn volume_attachment(schema: &mut Value) {
    set(schema, "status", json!({ "attached": false }));
}
