//! CSI-backed PersistentVolumes on the real apiserver, as root: the real `rekube-csi`
//! driver (its binary beside the tests', or `REKUBE_CSI_BIN`) on a socket in a temporary
//! directory, a real `rekube-node-agent run --csi-driver csi.rekube.io=unix://...` as its
//! node's kubelet, and rekube-controllers' PV binder.
//!
//! The test creates the volume itself with the driver's Controller CreateVolume (a 64 MiB
//! local-disk: a sparse image, a loop device, ext4), as the external provisioner would
//! (the static-PV case: this test is about the node side alone). Then a static
//! PersistentVolume naming
//! it, a claim bound to it, a pod that writes a file and reads the filesystem's size, a
//! second and a third pod that read it at once (staged once, published twice; the first
//! to go leaves the staging mount to the other; the last deleted while the agent is
//! killed, and torn down by the restarted agent from its `vol_data.json`), a pod whose volume the driver does not
//! have waiting with upstream's FailedMount; afterwards nothing is left: no mount under the
//! agent's root or the driver's directory (NodeUnpublish and NodeUnstage were called), no
//! loop device on the image, and after DeleteVolume no image.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use rekube_csi::csi;
use rekube_e2e::agent::{
    AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers, wait_pod_succeeded,
};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::SCOPE_LABEL;
use rekube_e2e::storage::{
    CsiDriverProcess, MIB, assert_no_storage_left, create_csi_driver, delete_test_volumes,
    files_under, loops_under, mounts_under, static_csi_volume_and_claim,
};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// upstream's device mount path component: the sha256 of the volume handle, in hex.
fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The size in KiB on busybox `df -k`'s filesystem line, from the container's CRI log
/// (`<time> stdout F /dev/loop0 56037 15 54712 0% /data`).
fn df_size_kib(log: &str) -> Option<i64> {
    log.lines()
        .find(|l| l.trim_end().ends_with(" /data"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|n| n.parse().ok())
}

#[tokio::test]
async fn a_csi_volume_is_staged_published_and_cleaned_up() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("csi-vol").await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection",
        ],
    );
    let node = ns.cluster_name("n");
    let dir = std::env::temp_dir().join(format!("rekube-e2e-csi-{}", ns.name));
    let driver_name = create_csi_driver(&ns, false).await;
    let driver = CsiDriverProcess::start(&dir, &driver_name, &node, &[]);

    // The provisioner's part, done by the test: CreateVolume of a 64 MiB local-disk.
    let handle = driver
        .create_local_disk(&format!("pvc-{}", ns.name), 64 * MIB)
        .await;

    let socket_flag = driver.agent_flag();
    let mut agent = AgentProcess::start_real(&ns, "n", &["--csi-driver", &socket_flag]);
    assert_eq!(agent.node_name, node);

    // NodeGetInfo on the Node: upstream's annotation and the topology label.
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let registered = wait_until("the driver on the Node", T, || async {
        let n = nodes.get(&node).await.map_err(|e| e.to_string())?;
        let annotations = n.metadata.annotations.clone().unwrap_or_default();
        match annotations.get("csi.volume.kubernetes.io/nodeid") {
            Some(ids) => Ok((n.metadata.labels.clone().unwrap_or_default(), ids.clone())),
            None => Err(format!("{annotations:?}\n{}", agent.logs())),
        }
    })
    .await;
    assert_eq!(registered.1, format!("{{\"{driver_name}\":\"{node}\"}}"));
    assert_eq!(
        registered.0.get("topology.csi.rekube.io/node"),
        Some(&node),
        "the driver's topology as a Node label"
    );

    // A static PersistentVolume of the driver's volume, on the agent's node, and a claim.
    let pv_name = static_csi_volume_and_claim(&ns, &driver_name, &handle, &node).await;
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let class = format!("manual-{}", ns.name);

    let pod = |name: &str, script: &str| -> Pod {
        serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
        .unwrap()
    };
    let succeeded = |name: &'static str| {
        wait_pod_succeeded(&pods, name, Duration::from_secs(90), || {
            format!("{}\n{}", agent.logs(), driver.logs())
        })
    };

    pods.create(
        &pp,
        &pod(
            "writer",
            "echo kept-across-pods > /data/file && df -k /data",
        ),
    )
    .await
    .unwrap();
    let writer = succeeded("writer").await;
    let uid = writer.metadata.uid.clone().unwrap();
    let log = agent.container_log(&ns.name, "writer", &uid, "c", 0);
    let size = df_size_kib(&log).unwrap_or_else(|| panic!("no df line in {log:?}"));
    // The ext4 of a 64 MiB device: its size less the filesystem's own metadata.
    assert!(
        (48 * 1024..=64 * 1024).contains(&size),
        "the pod sees the volume's 64 MiB filesystem: {size} KiB\n{log}"
    );
    pods.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("writer gone", T, || async {
        match pods.get_opt("writer").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|p| p.is_some()))),
        }
    })
    .await;

    // Two pods on the same volume at once: staged once, published twice; the first to go
    // leaves the staging mount to the other (NodeUnstage after the last user only).
    let staging = agent
        .root
        .join("plugins/kubernetes.io/csi")
        .join(&driver_name)
        .join(sha256_hex(&handle))
        .join("globalmount");
    let reads = "test \"$(cat /data/file)\" = kept-across-pods && echo read-ok && sleep 3600";
    let mut uids = Vec::new();
    for name in ["reader", "second"] {
        let created = pods.create(&pp, &pod(name, reads)).await.unwrap();
        uids.push(created.metadata.uid.unwrap());
    }
    for (name, uid) in ["reader", "second"].iter().zip(&uids) {
        wait_until(
            &format!("{name} read the file"),
            Duration::from_secs(90),
            || async {
                let out = agent.container_log(&ns.name, name, uid, "c", 0);
                if out.contains("read-ok") {
                    Ok(())
                } else {
                    Err(format!("{out}\n{}", agent.logs()))
                }
            },
        )
        .await;
    }
    let agent_root = agent.root.clone();
    let target = |uid: &str| {
        agent_root
            .join("pods")
            .join(uid)
            .join("volumes/kubernetes.io~csi")
            .join(&pv_name)
            .join("mount")
    };
    let mounted = |path: &Path| mounts_under(path).iter().any(|m| Path::new(m) == path);
    assert!(mounted(&staging), "staged at upstream's device mount path");
    assert!(mounted(&target(&uids[0])) && mounted(&target(&uids[1])));
    let vol_data: serde_json::Value = serde_json::from_slice(
        &std::fs::read(target(&uids[0]).parent().unwrap().join("vol_data.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(vol_data["volumeHandle"], handle.as_str());
    assert_eq!(vol_data["specVolID"], pv_name.as_str());
    pods.delete("second", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("second's volume unpublished", T, || async {
        if mounted(&target(&uids[1])) {
            Err("still published".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    assert!(mounted(&staging), "still staged: reader uses it");
    assert!(mounted(&target(&uids[0])));

    // The agent killed, reader deleted while it is down, the agent started again: it
    // knows the volume only from reader's vol_data.json (no actual state yet), and still
    // unpublishes and unstages it.
    agent.kill();
    pods.delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    agent.start_again();
    wait_until("reader's volume unpublished and unstaged", T, || async {
        if mounted(&target(&uids[0])) || mounted(&staging) {
            Err(agent.logs())
        } else {
            Ok(())
        }
    })
    .await;

    // A volume the driver does not have: upstream's FailedMount, and the pod waits.
    let missing_pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
        "metadata": {"name": ns.cluster_name("missing"), "labels": {SCOPE_LABEL: ns.name}},
        "spec": {
            "capacity": {"storage": "16Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "claimRef": {"namespace": ns.name, "name": "missing"},
            "csi": {"driver": driver_name, "volumeHandle": "rk-0000000000000000", "fsType": "ext4"},
        }
    }))
    .unwrap();
    volumes.create(&pp, &missing_pv).await.unwrap();
    let missing_claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "missing"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "resources": {"requests": {"storage": "16Mi"}}},
    }))
    .unwrap();
    claims.create(&pp, &missing_claim).await.unwrap();
    // Bound before the pod comes: a pod on a claim not yet bound gets upstream's "Unable
    // to attach or mount volumes: ... PVC is not bound" first (and the event recorder
    // keeps a pod's first FailedMount note, counting the others).
    wait_until("claim missing bound", T, || async {
        let c = claims.get("missing").await.map_err(|e| e.to_string())?;
        match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut waiting = pod("waiting", "sleep 3600");
    waiting.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
        .persistent_volume_claim
        .as_mut()
        .unwrap()
        .claim_name = "missing".into();
    pods.create(&pp, &waiting).await.unwrap();
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let note = wait_until("waiting's FailedMount", T, || async {
        events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("FailedMount")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("waiting")
            })
            .and_then(|e| e.note)
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert_eq!(
        note,
        format!(
            "MountVolume.MountDevice failed for volume \"{}\" : rpc error: code = NotFound desc = volume rk-0000000000000000: not found",
            ns.cluster_name("missing")
        )
    );
    let phase = pods
        .get("waiting")
        .await
        .unwrap()
        .status
        .and_then(|s| s.phase);
    assert_eq!(
        phase.as_deref(),
        Some("Pending"),
        "the pod waits for its volume"
    );

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;

    // Unpublished and unstaged: no mount under the agent's root or the driver's
    // directory, no loop device on the image, the staging directory gone.
    assert_eq!(mounts_under(&agent.root), Vec::<String>::new());
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
    assert_eq!(loops_under(&driver.state), Vec::new());
    let csi_dir = agent
        .root
        .join("plugins/kubernetes.io/csi")
        .join(&driver_name);
    let left: Vec<_> = std::fs::read_dir(&csi_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the staging directory went: {left:?}");

    for c in ["data", "missing"] {
        claims.delete(c, &DeleteParams::default()).await.unwrap();
        wait_until(&format!("claim {c} gone"), T, || async {
            match claims.get_opt(c).await {
                Ok(None) => Ok(()),
                other => Err(format!("{:?}", other.map(|c| c.is_some()))),
            }
        })
        .await;
    }
    delete_test_volumes(&ns).await;

    // The provisioner's part again: DeleteVolume, refused while attached, now accepted.
    driver
        .controller()
        .await
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: handle.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("DeleteVolume: {e}\n{}", driver.logs()));
    let images: Vec<_> = std::fs::read_dir(driver.state.join("images"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(images.is_empty(), "the image went: {images:?}");
    drop(driver);
    assert!(!dir.exists(), "the driver's directory went");
}

/// Dynamic provisioning end to end on a real node: a claim of a WaitForFirstConsumer class
/// of rekube-csi used by a pod is provisioned on the pod's node by the driver's
/// provisioner (a 64 MiB local-disk: an image file, a loop device, ext4), bound, staged and
/// published by the agent; the pod sees a filesystem of that size. Once the pod and the
/// claim go, the Delete policy removes the volume: no image file, no loop device, no
/// mount, no PersistentVolume.
#[tokio::test]
async fn a_provisioned_volume_is_used_and_deleted_with_its_claim() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("csi-dyn").await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=scheduler,persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection",
        ],
    );
    let node = ns.cluster_name("n");
    let dir = std::env::temp_dir().join(format!("rekube-e2e-csi-{}", ns.name));
    let driver_name = create_csi_driver(&ns, false).await;
    let mut driver = CsiDriverProcess::start(&dir, &driver_name, &node, &[]);
    driver.start_provisioner(&node, &format!("{SCOPE_LABEL}={}", ns.name));
    let socket_flag = driver.agent_flag();
    let agent = AgentProcess::start_real(&ns, "n", &["--csi-driver", &socket_flag]);
    agent.wait_node_ready(&ns.client, T).await;
    ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-disk"}, "provisioner": driver_name,
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
        "parameters": {"type": "local-disk"}}))
        .await
        .unwrap();
    let class = ns.cluster_name("local-disk");
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "resources": {"requests": {"storage": "64Mi"}}},
    }))
    .unwrap();
    let uid = claims
        .create(&pp, &claim)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let pv_name = format!("pvc-{uid}");
    let writer: Pod = serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "writer"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo provisioned > /data/file && df -k /data"],
                "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
    .unwrap();
    let pod_uid = pods
        .create(&pp, &writer)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let done = wait_pod_succeeded(&pods, "writer", Duration::from_secs(90), || {
        format!("{}\n{}", agent.logs(), driver.logs())
    })
    .await;
    assert_eq!(done.spec.unwrap().node_name.as_deref(), Some(node.as_str()));
    let pv = volumes.get(&pv_name).await.unwrap();
    let spec = pv.spec.unwrap();
    assert_eq!(
        spec.csi.as_ref().map(|c| c.driver.as_str()),
        Some(driver_name.as_str())
    );
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    let log = agent.container_log(&ns.name, "writer", &pod_uid, "c", 0);
    let kib = df_size_kib(&log).unwrap_or_else(|| panic!("no df line in {log:?}"));
    assert!(
        (48 * 1024..=64 * 1024).contains(&kib),
        "a 64 MiB volume's ext4: {kib} KiB"
    );
    let images = files_under(&driver.state.join("images"));
    assert_eq!(images.len(), 1, "one image file: {images:?}");
    assert_eq!(
        std::fs::metadata(&images[0]).unwrap().len(),
        64 * MIB as u64,
        "the image is the claim's size"
    );

    pods.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("writer gone", T, || async {
        match pods.get_opt("writer").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|p| p.map(|p| p.status)))),
        }
    })
    .await;
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the volume deleted with its claim", T, || async {
        match volumes.get_opt(&pv_name).await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}\n{}",
                other.map(|v| v.map(|v| v.status)),
                driver.logs()
            )),
        }
    })
    .await;
    assert_no_storage_left(&driver.state, &dir, &agent.root);
    delete_test_volumes(&ns).await;
}
