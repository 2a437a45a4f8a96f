//! The seed's Attach → Mount → Unmount → Detach of a volume, end to end on the real
//! apiserver, as root: rekube-controllers' attach/detach controller, the real `rekube-csi`
//! driver with attach (its local-disk volume is attached as a loop device by
//! ControllerPublishVolume), `rekube-csi attacher` (external-attacher's part) and a real
//! node agent (the kubelet's part: `volumesInUse`, VerifyControllerAttachedVolume,
//! WaitForAttach, the publish context handed to NodeStageVolume).
//!
//! A pod on a claim of the driver's volume waits, with upstream's message, while no
//! attacher runs; once the attacher runs: the VolumeAttachment
//! `csi-<sha256(handle, driver, node)>` is attached with the loop device as its
//! `devicePath`, the Node lists the volume in `volumesAttached` and `volumesInUse`, and
//! the pod reads and writes the volume. The pod deleted: the volume is unpublished and
//! unstaged, leaves `volumesInUse`, the controller detaches it (the VolumeAttachment
//! deleted, ControllerUnpublishVolume, the loop device gone) and `volumesAttached` no
//! longer lists it. Nothing is left: no mount, no loop device, no VolumeAttachment.
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rekube_crds::storage_keys::{attachment_name, csi_unique_volume_name};
use rekube_crds::{Node, Pod, VolumeAttachment};
use rekube_csi::csi;
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::storage::{
    CsiDriverProcess, MIB, create_csi_driver, delete_test_volumes, loops_under, mounts_under,
    static_csi_volume_and_claim, wait_unmounted_and_detached,
};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// rekube-csi's flag advertising ControllerPublishVolume (attach = the loop device).
const ATTACH_FLAG: &str = "--attach-required";

#[tokio::test]
async fn a_volume_is_attached_mounted_unmounted_and_detached() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("csi-attach").await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection,attachdetach",
        ],
    );
    let node = ns.cluster_name("n");
    let dir = std::env::temp_dir().join(format!("rekube-e2e-csi-{}", ns.name));
    let driver_name = create_csi_driver(&ns, true).await;
    let mut driver = CsiDriverProcess::start(&dir, &driver_name, &node, &[ATTACH_FLAG]);

    // The provisioner's part, done by the test: CreateVolume of a 64 MiB local-disk.
    let handle = driver
        .create_local_disk(&format!("pvc-{}", ns.name), 64 * MIB)
        .await;
    assert!(
        loops_under(&driver.state).is_empty(),
        "no loop device before the attach"
    );

    let mut agent = AgentProcess::start_real(&ns, "n", &["--csi-driver", &driver.agent_flag()]);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let registered = wait_until("the node registered by its agent", T, || async {
        let n = nodes.get(&node).await.map_err(|e| e.to_string())?;
        n.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get("csi.volume.kubernetes.io/nodeid")
            .cloned()
            .map(|_| n)
            .ok_or_else(|| agent.logs())
    })
    .await;
    assert_eq!(
        registered
            .metadata
            .annotations
            .unwrap_or_default()
            .get("volumes.kubernetes.io/controller-managed-attach-detach")
            .map(String::as_str),
        Some("true"),
        "the agent leaves attaching to the controller, as the kubelet"
    );

    // A static PersistentVolume of the driver's volume on the agent's node, and a claim.
    let pv_name = static_csi_volume_and_claim(&ns, &driver_name, &handle, &node).await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let attachments: Api<VolumeAttachment> = Api::all(ns.client.clone());
    let pp = PostParams::default();

    let pod: Pod = serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "user"},
        // Always: the agent's restart below stops its container, which must start again
        // (with Never the restarted agent would find it finished and tear its volume down).
        "spec": {"nodeName": node, "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo attached > /data/file && cat /data/file && sleep 3600"],
                "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
    .unwrap();
    let uid = pods.create(&pp, &pod).await.unwrap().metadata.uid.unwrap();

    // No attacher yet: the controller made the VolumeAttachment, nobody attached it, and
    // the pod waits with the kubelet's message.
    let va_name = attachment_name(&handle, &driver_name, &node);
    let unique = csi_unique_volume_name(&driver_name, &handle);
    let va = wait_until("the VolumeAttachment made by the controller", T, || async {
        attachments
            .get_opt(&va_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let spec = va.spec.unwrap();
    assert_eq!(
        (
            spec.attacher.as_str(),
            spec.node_name.as_str(),
            spec.source.persistent_volume_name.as_deref()
        ),
        (driver_name.as_str(), node.as_str(), Some(pv_name.as_str()))
    );
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    // The first of the kubelet's reasons: not yet reported in use, or reported but not
    // attached (the event recorder keeps one FailedMount per pod and counts the rest).
    let waiting = wait_until("the pod waiting for the attach", T, || async {
        events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("FailedMount")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("user")
            })
            .and_then(|e| e.note)
            .ok_or_else(|| agent.logs())
    })
    .await;
    assert!(
        [
            format!("Volume has not been added to the list of VolumesInUse in the node's volume status for volume \"{pv_name}\" "),
            format!("Volume not attached according to node status for volume \"{pv_name}\" "),
        ]
        .contains(&waiting),
        "{waiting}"
    );
    // Reported in use by the node, and still not attached: the volume is in the Node's
    // volumesInUse, not in its volumesAttached.
    wait_until("the volume reported in use", T, || async {
        let s = nodes
            .get_status(&node)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        if s.volumes_in_use == Some(vec![unique.clone()])
            && s.volumes_attached.as_ref().is_none_or(|v| v.is_empty())
        {
            Ok(())
        } else {
            Err(format!("{:?} {:?}", s.volumes_in_use, s.volumes_attached))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let phase = pods.get("user").await.unwrap().status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Pending"));
    assert!(
        loops_under(&driver.state).is_empty(),
        "nothing attached without an attacher"
    );

    // The attacher: ControllerPublishVolume makes the loop device.
    driver.start_sidecar("attacher", &["--node-name", &node]);
    let attached = wait_until("the volume attached", T, || async {
        let va = attachments.get(&va_name).await.map_err(|e| e.to_string())?;
        match va.status {
            Some(s) if s.attached => Ok(s),
            other => Err(format!("{other:?}\n{}", driver.logs())),
        }
    })
    .await;
    let device = attached
        .attachment_metadata
        .unwrap_or_default()
        .get("devicePath")
        .cloned()
        .expect("the attach's devicePath");
    let loops = loops_under(&driver.state);
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(
        loops[0].0,
        Path::new(&device),
        "the attachment's device is the image's loop device: {loops:?}"
    );
    wait_until(
        "the pod running on the attached volume",
        Duration::from_secs(90),
        || async {
            let out = agent.container_log(&ns.name, "user", &uid, "c", 0);
            if out.contains("attached") {
                Ok(())
            } else {
                Err(format!("{out}\n{}", agent.logs()))
            }
        },
    )
    .await;
    let status = nodes.get_status(&node).await.unwrap().status.unwrap();
    assert_eq!(status.volumes_in_use, Some(vec![unique.clone()]));
    assert_eq!(
        status
            .volumes_attached
            .unwrap_or_default()
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        vec![unique.as_str()]
    );

    // The agent killed (-9) and started again: the volume its pod has mounted stays in
    // use from the restarted agent's first status on (reconstructed from the pod's
    // vol_data.json), so the attachment is kept (the same object) and the pod keeps it.
    let va_uid = attachments.get(&va_name).await.unwrap().metadata.uid;
    agent.kill();
    // Heartbeat times have whole seconds: a second after the kill, any later one is the
    // restarted agent's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started_again_at =
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("a whole second");
    agent.start_again();
    wait_until("the restarted agent's first status", T, || async {
        let n = nodes.get_status(&node).await.map_err(|e| e.to_string())?;
        let ready_since = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.clone());
        match ready_since {
            Some(t) if t.0 >= started_again_at => Ok(n),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let status = nodes.get_status(&node).await.unwrap().status.unwrap();
    assert_eq!(
        status.volumes_in_use,
        Some(vec![unique.clone()]),
        "in use across the restart"
    );
    let kept = attachments.get(&va_name).await.unwrap();
    assert_eq!(kept.metadata.uid, va_uid, "the same attachment");
    assert!(kept.status.is_some_and(|s| s.attached));
    assert_eq!(loops_under(&driver.state).len(), 1);

    // Unmount, then detach: the pod goes, the volume leaves volumesInUse, the controller
    // deletes the attachment, the attacher unpublishes (no loop device any more).
    pods.delete("user", &DeleteParams::default()).await.unwrap();
    wait_unmounted_and_detached(&ns, "the volume detached", &node, &va_name, &driver).await;
    let agent_root = agent.root.clone();
    assert_eq!(mounts_under(&agent_root), Vec::<String>::new());
    assert_eq!(mounts_under(Path::new(&driver.dir)), Vec::<String>::new());

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    driver
        .controller()
        .await
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: handle,
            ..Default::default()
        })
        .await
        .unwrap();
    delete_test_volumes(&ns).await;
}
