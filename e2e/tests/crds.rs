//! The CRDs as a user meets them: installed from the committed YAML with
//! `kubectl apply -f crds/`, served by a v1.36.3 apiserver, and usable through kubectl
//! (api-resources, explain, get by category and short name, scale).
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use rekube_e2e::{TestNamespace, client, manifest_path};
use serde_json::json;

fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl on PATH");
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn apiserver_is_the_pinned_kubernetes() {
    let info = client().await.apiserver_version().await.unwrap();
    assert_eq!(
        (info.major.as_str(), info.minor.as_str()),
        ("1", "36"),
        "{info:?}"
    );
    assert!(
        info.git_version.starts_with("v1.36."),
        "{}",
        info.git_version
    );
}

/// What the cluster serves is exactly what `crdgen` generates now: the committed YAML was
/// applied and is current.
#[tokio::test]
async fn installed_crds_are_the_generated_ones_and_established() {
    let api: Api<CustomResourceDefinition> = Api::all(client().await);
    for descriptor in rekube_crds::catalog::all() {
        let rendered = rekube_crds::generate::render(&descriptor);
        let generated: CustomResourceDefinition = serde_yaml::from_str(&rendered.yaml).unwrap();
        let served = api
            .get(&descriptor.name())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", descriptor.name()));
        // The apiserver adds `conversion: None`; everything crdgen writes must match.
        let authored = |spec: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionSpec| {
            json!({ "group": spec.group, "names": spec.names, "scope": spec.scope, "versions": spec.versions })
        };
        assert_eq!(
            authored(&served.spec),
            authored(&generated.spec),
            "{} on the cluster differs from crdgen's output: run `just crds` and apply crds/",
            descriptor.name()
        );
        let established = served
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{} is not Established", descriptor.name());
    }
}

#[test]
fn kubectl_lists_the_rekube_resources_with_short_names() {
    let out = kubectl(&["api-resources", "--api-group=rekube.io", "--no-headers"]);
    let expected = [
        ("csidrivers", "rcsidriver", false, "CSIDriver"),
        ("csistoragecapacities", "rcsisc", true, "CSIStorageCapacity"),
        ("deployments", "rdeploy", true, "Deployment"),
        ("endpoints", "rep", true, "Endpoints"),
        ("endpointslices", "reps", true, "EndpointSlice"),
        ("nodes", "rnode", false, "Node"),
        (
            "persistentvolumeclaims",
            "rpvc",
            true,
            "PersistentVolumeClaim",
        ),
        ("persistentvolumes", "rpv", false, "PersistentVolume"),
        ("pods", "rpod", true, "Pod"),
        ("replicasets", "rrs", true, "ReplicaSet"),
        ("services", "rsvc", true, "Service"),
        ("storageclasses", "rsc", false, "StorageClass"),
        ("volumeattachments", "rva", false, "VolumeAttachment"),
    ];
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), expected.len(), "{out}");
    for (plural, short, namespaced, kind) in expected {
        let row = rows
            .iter()
            .find(|r| r[0] == plural)
            .unwrap_or_else(|| panic!("{plural} missing: {out}"));
        assert_eq!(
            row[1..],
            [
                short,
                "rekube.io/v1",
                if namespaced { "true" } else { "false" },
                kind
            ],
            "{out}"
        );
    }
}

#[test]
fn kubectl_explain_shows_the_upstream_fields() {
    let out = kubectl(&["explain", "rdeploy.spec.strategy"]);
    assert!(out.contains("GROUP:      rekube.io"), "{out}");
    assert!(out.contains("rollingUpdate\t<Object>"), "{out}");
    assert!(out.contains("type\t<string>"), "{out}");
    assert!(
        out.contains("The deployment strategy to use to replace existing pods with new ones."),
        "{out}"
    );
    assert!(out.contains("enum: Recreate, RollingUpdate"), "{out}");
    let out = kubectl(&["explain", "rpod.spec.containers.livenessProbe.httpGet"]);
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("port\t<Object> -required-"), "{out}");
}

#[tokio::test]
async fn kubectl_scale_get_and_columns_work() {
    let ns = TestNamespace::new("kubectl").await;
    let deployment = json!({
        "apiVersion": "rekube.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]}}
        }
    });
    ns.create(deployment).await.unwrap();
    let rs_manifest = std::fs::read_to_string(manifest_path("minimal/replicaset.json")).unwrap();
    let rs = ns
        .create(serde_json::from_str(&rs_manifest).unwrap())
        .await
        .expect("replicaset");
    let rs_name = rs["metadata"]["name"].as_str().unwrap();

    let out = kubectl(&["scale", "-n", &ns.name, "rdeploy/web", "--replicas=5"]);
    assert!(out.contains("deployment.rekube.io/web scaled"), "{out}");
    kubectl(&[
        "scale",
        "-n",
        &ns.name,
        &format!("rrs/{rs_name}"),
        "--replicas=4",
    ]);
    let replicas = kubectl(&[
        "get",
        "-n",
        &ns.name,
        "rdeploy/web",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "5");
    let replicas = kubectl(&[
        "get",
        "-n",
        &ns.name,
        &format!("rrs/{rs_name}"),
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "4");

    // The scale subresource reads back what kubectl wrote.
    let scale = kubectl(&[
        "get",
        "--raw",
        &format!(
            "/apis/rekube.io/v1/namespaces/{}/deployments/web/scale",
            ns.name
        ),
    ]);
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["spec"]["replicas"], 5, "{scale}");

    let out = kubectl(&["get", "rekube", "-n", &ns.name]);
    assert!(out.contains("deployment.rekube.io/web"), "{out}");
    assert!(
        out.contains(&format!("replicaset.rekube.io/{rs_name}")),
        "{out}"
    );
    let header = kubectl(&["get", "rdeploy", "-n", &ns.name, "-o", "wide"]);
    let header = header
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );

    // kubectl get endpointslices' columns (upstream printEndpointSlice): a CRD column
    // shows the first value of a list.
    ns.create(json!({
        "apiVersion": "rekube.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-x"},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
        "ports": [{"name": "http", "port": 80}]
    }))
    .await
    .unwrap();
    let out = kubectl(&["get", "reps", "-n", &ns.name]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        "{out}"
    );
    assert_eq!(rows[1][..4], ["web-x", "IPv4", "80", "10.0.0.1"], "{out}");

    // kubectl get csistoragecapacities' columns (upstream printCSIStorageCapacity).
    ns.create(json!({
        "apiVersion": "rekube.io/v1", "kind": "CSIStorageCapacity", "metadata": {"name": "csisc-x"},
        "storageClassName": "fast", "capacity": "10Gi",
        "nodeTopology": {"matchLabels": {"topology.csi.rekube.io/node": "n1"}}
    }))
    .await
    .unwrap();
    let out = kubectl(&["get", "rcsisc", "-n", &ns.name]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "STORAGECLASSNAME", "CAPACITY", "AGE"],
        "{out}"
    );
    assert_eq!(rows[1][..3], ["csisc-x", "fast", "10Gi"], "{out}");
}

/// The node agent watches only its own pods: spec.nodeName and status.phase are
/// selectable fields.
#[tokio::test]
async fn pods_are_selectable_by_node_and_phase() {
    let ns = TestNamespace::new("fields").await;
    for (name, node) in [("a", "node-1"), ("b", "node-2"), ("c", "node-1")] {
        let pod = json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]}
        });
        ns.create(pod).await.unwrap();
    }
    let out = kubectl(&[
        "get",
        "rpod",
        "-n",
        &ns.name,
        "--field-selector",
        "spec.nodeName=node-1",
        "-o",
        "name",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["pod.rekube.io/a", "pod.rekube.io/c"]
    );
    let out = kubectl(&[
        "get",
        "rpod",
        "-n",
        &ns.name,
        "--field-selector",
        "status.phase=Pending",
        "-o",
        "name",
    ]);
    assert_eq!(out.lines().count(), 3, "{out}");
}
