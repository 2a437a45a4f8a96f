//! Dynamic provisioning with rekube-csi (docs/csi.md, "Provisioning"): the real driver on a
//! socket in a temporary directory and its provisioner (`rekube-csi provisioner`, the
//! external-provisioner's distributed mode) for one fake ready node, with the scheduler,
//! the PV binder and the protection controllers. A WaitForFirstConsumer claim used by a
//! pod gets the scheduler's selected node, the provisioner makes the image file and the
//! PV `pvc-<claim uid>`, the binder binds the claim; deleting the pod and the claim
//! releases the PV, and the provisioner deletes the image and the PV. A claim of an
//! Immediate class of the driver stays Pending with an event saying why; a claim larger
//! than the node's capacity gets ProvisioningFailed (RESOURCE_EXHAUSTED) and loses its
//! selected node. Nothing is left: no process, no file.
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};
use rekube_e2e::agent::terminate_child;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::{self, NodeShape, SCOPE_LABEL};
use rekube_e2e::storage::{csi_binary, event_notes};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const DRIVER: &str = "csi.rekube.io";
const TOPOLOGY_KEY: &str = "topology.csi.rekube.io/node";
const MIB: u64 = 1 << 20;

/// A process stopped with SIGTERM (then SIGKILL) when the test ends, pass or fail.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(args: &[String], log: PathBuf) -> Self {
        let child = Command::new(csi_binary())
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start rekube-csi");
        Process { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process; returns whether it exited by itself after SIGTERM.
    fn stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let status = terminate_child(&mut self.child, Duration::from_secs(10));
        status.is_some_and(|s| s.signal() != Some(nix::libc::SIGKILL))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_claim_is_provisioned_on_its_selected_node_and_deleted_when_released() {
    let ns = TestNamespace::new("csi-prov").await;
    let node_id = ns.cluster_name("n");
    let mut shape = NodeShape::default();
    shape.labels.insert(TOPOLOGY_KEY.into(), node_id.clone());
    assert_eq!(nodes::create_node(&ns, "n", &shape).await, node_id);

    let tmp = tempfile::Builder::new()
        .prefix("rekube-e2e-csi-prov-")
        .tempdir()
        .unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let socket = dir.join("csi.sock");
    let state = dir.join("state");
    let endpoint = format!("unix://{}", socket.display());
    let mut driver = Process::start(
        &[
            format!("--endpoint={endpoint}"),
            format!("--node-id={node_id}"),
            format!("--state-dir={}", state.display()),
            "--capacity=1Gi".into(),
        ],
        dir.join("driver.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "rekube-csi did not listen: {}",
            driver.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut provisioner = Process::start(
        &[
            "provisioner".into(),
            format!("--endpoint={endpoint}"),
            format!("--node-id={node_id}"),
            format!("--pv-label={SCOPE_LABEL}={}", ns.name),
        ],
        dir.join("provisioner.log"),
    );
    let controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=scheduler,persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection",
        ],
    );

    for (name, mode) in [("local", "WaitForFirstConsumer"), ("now", "Immediate")] {
        ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": DRIVER, "volumeBindingMode": mode,
            "reclaimPolicy": "Delete", "parameters": {"type": "local-disk"}}))
            .await
            .unwrap();
    }
    let class = ns.cluster_name("local");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let claim = |name: &str, class: &str| -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                "resources": {"requests": {"storage": "64Mi"}}}}),
        )
        .unwrap()
    };
    let started = Instant::now();
    let data = claims.create(&pp, &claim("data", &class)).await.unwrap();
    let uid = data.metadata.uid.clone().unwrap();
    let pv_name = format!("pvc-{uid}");
    pods.create(
        &pp,
        &serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "user"},
            "spec": {"terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox:1.36",
                    "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
        .unwrap(),
    )
    .await
    .unwrap();

    // The scheduler selects the node; the provisioner makes the volume and the PV.
    wait_until("the claim's selected node", T, || async {
        let c = claims.get("data").await.map_err(|e| e.to_string())?;
        let selected = c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("volume.kubernetes.io/selected-node").cloned());
        (selected.as_deref() == Some(node_id.as_str()))
            .then_some(())
            .ok_or_else(|| format!("{selected:?}"))
    })
    .await;
    let pv = wait_until("the provisioned PV", T, || async {
        volumes
            .get_opt(&pv_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no {pv_name}; provisioner: {}", provisioner.log()))
    })
    .await;
    let annotations = pv.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("pv.kubernetes.io/provisioned-by")
            .map(String::as_str),
        Some(DRIVER)
    );
    assert!(
        pv.metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .contains(&"external-provisioner.volume.kubernetes.io/finalizer".to_string()),
        "{:?}",
        pv.metadata.finalizers
    );
    assert_eq!(
        pv.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SCOPE_LABEL))
            .map(String::as_str),
        Some(ns.name.as_str())
    );
    let spec = pv.spec.clone().unwrap();
    let csi = spec.csi.clone().expect("a csi source");
    assert_eq!(csi.driver, DRIVER);
    assert!(
        csi.volume_handle.starts_with("rk-"),
        "{}",
        csi.volume_handle
    );
    assert_eq!(spec.capacity.unwrap()["storage"].0, "64Mi");
    assert_eq!(spec.access_modes.unwrap(), vec!["ReadWriteOnce"]);
    assert_eq!(spec.storage_class_name.as_deref(), Some(class.as_str()));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    let term = &spec
        .node_affinity
        .unwrap()
        .required
        .unwrap()
        .node_selector_terms[0];
    let expr = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(
        (
            expr.key.as_str(),
            expr.operator.as_str(),
            expr.values.clone()
        ),
        (TOPOLOGY_KEY, "In", Some(vec![node_id.clone()]))
    );
    let claim_ref = spec.claim_ref.unwrap();
    assert_eq!(
        (claim_ref.name.as_deref(), claim_ref.uid.as_deref()),
        (Some("data"), Some(uid.as_str()))
    );
    let provisioned = started.elapsed();
    let image = state.join(format!("images/{}.img", csi.volume_handle));
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 64 * MIB);

    // The binder binds the claim to it; the pod lands on the node.
    wait_until("claim data Bound", T, || async {
        let c = claims.get("data").await.map_err(|e| e.to_string())?;
        let phase = c.status.and_then(|s| s.phase);
        let volume = c.spec.and_then(|s| s.volume_name);
        (phase.as_deref() == Some("Bound") && volume.as_deref() == Some(pv_name.as_str()))
            .then_some(())
            .ok_or_else(|| format!("{phase:?} {volume:?}"))
    })
    .await;
    wait_until("pod user on the node", T, || async {
        let p = pods.get("user").await.map_err(|e| e.to_string())?;
        let node = p.spec.and_then(|s| s.node_name);
        (node.as_deref() == Some(node_id.as_str()))
            .then_some(())
            .ok_or_else(|| format!("{node:?}"))
    })
    .await;
    for (reason, note) in [
        (
            "Provisioning",
            format!(
                "External provisioner is provisioning volume for claim \"{}/data\"",
                ns.name
            ),
        ),
        (
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {pv_name}"),
        ),
    ] {
        wait_until(&format!("event {reason}"), T, || async {
            let notes = event_notes(&events, None, "data", reason).await;
            notes
                .contains(&note)
                .then_some(())
                .ok_or_else(|| format!("{notes:?}"))
        })
        .await;
    }

    // An Immediate class of the driver: nobody can pick a node; the claim says why.
    claims
        .create(&pp, &claim("instant", &ns.cluster_name("now")))
        .await
        .unwrap();
    wait_until(
        "the ProvisioningFailed event of claim instant",
        T,
        || async {
            let notes = event_notes(&events, None, "instant", "ProvisioningFailed").await;
            notes
                .iter()
                .any(|n| n.contains("volumeBindingMode: WaitForFirstConsumer"))
                .then_some(())
                .ok_or_else(|| format!("{notes:?}"))
        },
    )
    .await;
    let instant = claims.get("instant").await.unwrap();
    assert_eq!(
        instant.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    assert_eq!(instant.spec.and_then(|s| s.volume_name), None);

    // Larger than the node's --capacity: CreateVolume answers RESOURCE_EXHAUSTED, the
    // claim gets ProvisioningFailed and loses its selected node (upstream's reschedule).
    let mut big = claim("big", &class);
    big.spec.as_mut().unwrap().resources =
        Some(serde_json::from_value(json!({"requests": {"storage": "2Gi"}})).unwrap());
    claims.create(&pp, &big).await.unwrap();
    pods.create(
        &pp,
        &serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "big-user"},
            "spec": {"terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox:1.36"}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "big"}}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    wait_until("the ProvisioningFailed event of claim big", T, || async {
        let notes = event_notes(&events, None, "big", "ProvisioningFailed").await;
        notes
            .iter()
            .any(|n| {
                n.starts_with(&format!(
                    "failed to provision volume with StorageClass \"{class}\": rpc error: code = ResourceExhausted desc = "
                ))
            })
            .then_some(())
            .ok_or_else(|| format!("{notes:?}"))
    })
    .await;
    wait_until("claim big without a selected node", T, || async {
        let c = claims.get("big").await.map_err(|e| e.to_string())?;
        let selected = c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("volume.kubernetes.io/selected-node").cloned());
        selected
            .is_none()
            .then_some(())
            .ok_or_else(|| format!("{selected:?}"))
    })
    .await;
    assert_eq!(
        files_in(&state.join("images")),
        vec![image.clone()],
        "no image for claim big"
    );

    // Released: the provisioner deletes the volume, then the PV.
    let released = Instant::now();
    for name in ["user", "big-user"] {
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }
    for name in ["data", "instant", "big"] {
        claims.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_until("the image deleted", T, || async {
        (!image.exists())
            .then_some(())
            .ok_or_else(|| format!("provisioner: {}", provisioner.log()))
    })
    .await;
    wait_until("the PV deleted", T, || async {
        match volumes.get_opt(&pv_name).await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|v| v.map(|v| (v.metadata.finalizers, v.status)))
            )),
        }
    })
    .await;
    wait_until("the claims gone", T, || async {
        let left = claims
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (left == 0)
            .then_some(())
            .ok_or_else(|| format!("{left} left"))
    })
    .await;
    println!(
        "claim to PV {pv_name}: {:.2}s; claim deleted to PV gone: {:.2}s",
        provisioned.as_secs_f64(),
        released.elapsed().as_secs_f64()
    );
    let failed = event_notes(&events, None, &pv_name, "VolumeFailedDelete").await;
    assert_eq!(failed, Vec::<String>::new());

    // The controllers' log is kept only when the test fails.
    let controllers_log = controllers.log.clone();
    drop(controllers);
    let _ = std::fs::remove_file(controllers_log);
    let stopping = Instant::now();
    assert!(provisioner.stop(), "provisioner did not stop on SIGTERM");
    assert!(driver.stop(), "driver did not stop on SIGTERM");
    println!(
        "whole test {:.2}s, stopping {:.2}s",
        started.elapsed().as_secs_f64(),
        stopping.elapsed().as_secs_f64()
    );
    assert!(!socket.exists(), "socket left");
    for sub in ["volumes", "images", "hostpath"] {
        assert_eq!(
            files_in(&state.join(sub)),
            Vec::<PathBuf>::new(),
            "{sub} left in the state dir"
        );
    }
}
