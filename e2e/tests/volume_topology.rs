//! WaitForFirstConsumer end to end (issue 13): a claim of a WaitForFirstConsumer class stays
//! Pending until a pod uses it; the scheduler picks the node that has a matching local
//! volume (a real `rekube-node-agent run`) over another ready node that has none, pre-binds
//! the volume; the PV binder binds the claim; the agent mounts it and the pod writes to the
//! node's disk. As root.
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rekube_crds::{PersistentVolumeClaim, Pod};
use rekube_e2e::agent::{
    AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers, wait_pod_succeeded,
};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::{self, NodeShape};
use rekube_e2e::storage::delete_test_volumes;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

#[tokio::test]
async fn a_wait_for_first_consumer_claim_binds_on_the_pods_node() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("wffc").await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=scheduler,persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection",
        ],
    );
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    agent.wait_node_ready(&ns.client, T).await;
    // Another ready node, listed before the agent's, with room but no volume: the
    // claim must send the pod to the agent's node.
    nodes::create_node(&ns, "a-empty", &NodeShape::default()).await;
    let node = agent.node_name.clone();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"}))
        .await
        .unwrap();
    let class = ns.cluster_name("local");
    let disk = std::env::temp_dir().join(format!("rekube-e2e-wffc-{}", ns.name));
    std::fs::create_dir_all(&disk).unwrap();
    ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume", "metadata": {"name": "disk"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "persistentVolumeReclaimPolicy": "Retain", "local": {"path": disk.to_str().unwrap()},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}}))
        .await
        .unwrap();
    let pv = ns.cluster_name("disk");
    claims
        .create(
            &pp,
            &serde_json::from_value(
                json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                    "resources": {"requests": {"storage": "1Gi"}}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    // The binder waits for a consumer (upstream's event) and binds nothing meanwhile.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ns.client.clone(), &ns.name);
    wait_until("the WaitForFirstConsumer event", T, || async {
        let found = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .any(|e| {
                e.reason.as_deref() == Some("WaitForFirstConsumer")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("data")
            });
        found
            .then_some(())
            .ok_or_else(|| "no event yet".to_string())
    })
    .await;
    let c = claims.get("data").await.unwrap();
    assert_eq!(
        c.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "not bound before a pod uses it"
    );

    pods.create(
        &pp,
        &serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "writer"},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo on-the-node > /data/file"],
                    "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let done = wait_pod_succeeded(&pods, "writer", T, String::new).await;
    assert_eq!(
        done.spec.unwrap().node_name.as_deref(),
        Some(node.as_str()),
        "scheduled where the volume is"
    );
    let bound = claims.get("data").await.unwrap();
    assert_eq!(
        bound.spec.unwrap().volume_name.as_deref(),
        Some(pv.as_str())
    );
    assert_eq!(bound.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    assert_eq!(
        std::fs::read_to_string(disk.join("file")).unwrap(),
        "on-the-node\n"
    );

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("claim data gone", T, || async {
        match claims.get_opt("data").await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|c| c.map(|c| c.metadata.finalizers))
            )),
        }
    })
    .await;
    // The volume has the protection finalizer; the controllers go with the test.
    delete_test_volumes(&ns).await;
    std::fs::remove_dir_all(&disk).unwrap();
}
