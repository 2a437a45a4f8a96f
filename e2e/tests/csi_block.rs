//! CSI volumes in volumeMode Block on the real apiserver, as root: the real `rekube-csi`
//! driver on a socket in a temporary directory, a real `rekube-node-agent run
//! --csi-driver ...` as its node's kubelet, and rekube-controllers' PV binder.
//!
//! The test creates a 64 MiB local-disk volume with the driver's CreateVolume (block
//! access: the provisioner's part), a static PersistentVolume of it in volumeMode Block and
//! a Block claim. A pod with `volumeDevices: [{name, devicePath: /dev/xvda}]` writes a
//! known pattern to the raw device with dd; a second pod reads it back and, while it runs,
//! the node is as the kubelet leaves it (upstream's csi_block.go layout): staged at
//! `plugins/kubernetes.io/csi/volumeDevices/staging/<pv>`, published as a file at
//! `.../volumeDevices/publish/<pv>/<pod uid>`, that file bound at
//! `.../volumeDevices/<pv>/dev/<pod uid>` and held by a loop device, the pod's
//! `pods/<uid>/volumeDevices/kubernetes.io~csi/<pv>` a symlink to it, `vol_data.json`
//! beside, and the container's `/dev/xvda` the driver's loop device itself, 64 MiB. A pod
//! on the claim read-only reads and cannot write (its device cgroup allows `r`). A pod
//! naming the Block claim in `volumeMounts`, and one naming a Filesystem claim in
//! `volumeDevices`, get upstream's FailedMount and never run. A pod is deleted while the
//! agent is killed: the restarted agent unmaps, unpublishes and unstages it from what it
//! left on disk. Afterwards nothing is left: no mount or bind under the agent's root or
//! the driver's directory, no loop device on the image or holding a map, no staging,
//! publish or volume directory, no pod directory.
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use rekube_csi::csi;
use rekube_e2e::agent::{
    AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers, wait_pod_succeeded,
};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::SCOPE_LABEL;
use rekube_e2e::storage::{
    CsiDriverProcess, MIB, create_csi_driver, delete_claim_and_volume, delete_test_volumes,
    event_notes, loops_under, mounts_under, wait_unmounted_and_detached,
};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// The pattern the writer puts at block 10 (4 KiB blocks) and the others read back.
const PATTERN: &str = "yes rekube-block | head -c 4096";

/// A static PersistentVolume `<ns>-<name>` of `driver`'s volume `handle` on `node` in
/// `mode`, and the claim `claim` of that mode bound to it (waited for). Its PV's name.
async fn volume_and_claim(
    ns: &TestNamespace,
    name: &str,
    claim: &str,
    mode: &str,
    (driver, handle): (&str, &str),
    node: &str,
) -> String {
    let pv_name = ns.cluster_name(name);
    let class = format!("block-{}", ns.name);
    let pp = PostParams::default();
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {SCOPE_LABEL: ns.name}},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": mode,
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "claimRef": {"namespace": ns.name, "name": claim},
            "csi": {"driver": driver, "volumeHandle": handle,
                "volumeAttributes": {"type": "local-disk"}},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        }
    }))
    .unwrap();
    Api::<PersistentVolume>::all(ns.client.clone())
        .create(&pp, &pv)
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "volumeMode": mode, "resources": {"requests": {"storage": "64Mi"}}},
    }))
    .unwrap();
    claims.create(&pp, &pvc).await.unwrap();
    wait_until(&format!("claim {claim} bound"), T, || async {
        let c = claims.get(claim).await.map_err(|e| e.to_string())?;
        match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    pv_name
}

/// A pod of one busybox container running `script`, with the claim `claim` as volume
/// `v` (read-only when asked) in `volumeDevices` at /dev/xvda, or in `volumeMounts` at
/// /data when `mounted`.
fn pod(node: &str, name: &str, claim: &str, read_only: bool, mounted: bool, script: &str) -> Pod {
    let mut container = json!({"name": "c", "image": "busybox:1.36",
        "imagePullPolicy": "Never", "command": ["sh", "-c", script]});
    if mounted {
        container["volumeMounts"] = json!([{"name": "v", "mountPath": "/data"}]);
    } else {
        container["volumeDevices"] = json!([{"name": "v", "devicePath": "/dev/xvda"}]);
    }
    serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [container],
            "volumes": [{"name": "v",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}]}}))
    .unwrap()
}

/// Whether `path` is a mount point (its own entry in mountinfo).
fn mounted(path: &Path) -> bool {
    mounts_under(path).iter().any(|m| Path::new(m) == path)
}

/// The entries of a directory (none when it is missing).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn block_volumes_are_mapped_into_containers_and_cleaned_up() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("csi-block").await;
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
    let handle = driver
        .create_local_block_disk(&format!("pvc-{}", ns.name), 64 * MIB)
        .await;

    let mut agent = AgentProcess::start_real(&ns, "n", &["--csi-driver", &driver.agent_flag()]);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    wait_until("the driver on the Node", T, || async {
        let n = nodes.get(&node).await.map_err(|e| e.to_string())?;
        n.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("csi.volume.kubernetes.io/nodeid")
            .then_some(())
            .ok_or_else(|| agent.logs())
    })
    .await;

    let pv_name =
        volume_and_claim(&ns, "disk", "data", "Block", (&driver_name, &handle), &node).await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let logs = || format!("{}\n{}", agent.logs(), driver.logs());

    // The writer: a known pattern at block 10 of the raw device.
    let write = format!(
        "test -b /dev/xvda && {PATTERN} > /tmp/p && \
         dd if=/tmp/p of=/dev/xvda bs=4096 seek=10 count=1 conv=fsync && echo wrote"
    );
    let writer = pods
        .create(&pp, &pod(&node, "writer", "data", false, false, &write))
        .await
        .unwrap();
    wait_pod_succeeded(&pods, "writer", Duration::from_secs(90), logs).await;
    let writer_uid = writer.metadata.uid.unwrap();
    let log = agent.container_log(&ns.name, "writer", &writer_uid, "c", 0);
    assert!(log.contains("wrote"), "{log}");

    // The reader: the pattern back, and what /dev/xvda is; it stays while the node's
    // state is looked at.
    let read = format!(
        "dd if=/dev/xvda bs=4096 skip=10 count=1 > /tmp/r && {PATTERN} | cmp - /tmp/r && \
         echo read-ok; stat -c 'node=%F %t:%T' /dev/xvda; \
         echo size=$(blockdev --getsize64 /dev/xvda); sleep 3600"
    );
    let reader = pods
        .create(&pp, &pod(&node, "reader", "data", false, false, &read))
        .await
        .unwrap();
    let uid = reader.metadata.uid.unwrap();
    let log = wait_until(
        "reader read the pattern",
        Duration::from_secs(90),
        || async {
            let out = agent.container_log(&ns.name, "reader", &uid, "c", 0);
            if out.contains("size=") {
                Ok(out)
            } else {
                Err(format!("{out}\n{}", logs()))
            }
        },
    )
    .await;
    assert!(log.contains("read-ok"), "{log}");
    assert!(log.contains("size=67108864"), "the device is 64 MiB: {log}");
    // The container's /dev/xvda is the driver's loop device for the image.
    let image_loops = loops_under(&driver.state);
    assert_eq!(image_loops.len(), 1, "staged once: {image_loops:?}");
    // sysfs' "major:minor" in decimal; stat's %t:%T in hex.
    let numbers = std::fs::read_to_string(
        Path::new("/sys/class/block")
            .join(image_loops[0].0.file_name().unwrap())
            .join("dev"),
    )
    .unwrap();
    let (major, minor) = numbers.trim().split_once(':').unwrap();
    let want = format!(
        "node=block special file {:x}:{:x}",
        major.parse::<u64>().unwrap(),
        minor.parse::<u64>().unwrap()
    );
    assert!(log.contains(&want), "{want} in {log}");

    // The node as the kubelet leaves it (csi_block.go's layout).
    let devices = agent.root.join("plugins/kubernetes.io/csi/volumeDevices");
    let staging = devices.join("staging").join(&pv_name);
    let publish = devices.join("publish").join(&pv_name).join(&uid);
    let global = devices.join(&pv_name).join("dev");
    let link = agent
        .root
        .join("pods")
        .join(&uid)
        .join("volumeDevices/kubernetes.io~csi")
        .join(&pv_name);
    assert!(staging.is_dir(), "staged at {}", staging.display());
    assert!(mounted(&publish), "published at {}", publish.display());
    assert!(
        std::fs::metadata(&publish)
            .unwrap()
            .file_type()
            .is_block_device(),
        "the publish path is the device"
    );
    assert!(mounted(&global.join(&uid)), "bound at the global map path");
    assert_eq!(std::fs::read_link(&link).unwrap(), publish);
    let holders = loops_under(&agent.root);
    assert_eq!(
        holders.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
        [global.join(&uid)],
        "one loop device holds the map"
    );
    let vol_data: serde_json::Value = serde_json::from_slice(
        &std::fs::read(devices.join(&pv_name).join("data/vol_data.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(vol_data["volumeHandle"], handle.as_str());
    assert_eq!(vol_data["driverName"], driver_name.as_str());
    assert_eq!(vol_data["specVolID"], pv_name.as_str());
    pods.delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("reader unmapped, unpublished, unstaged", T, || async {
        if mounted(&publish) || staging.exists() || !loops_under(&driver.state).is_empty() {
            Err(logs())
        } else {
            Ok(())
        }
    })
    .await;

    // Read-only: the claim's readOnly makes the device "r" in the container's cgroup.
    let read_only = format!(
        "dd if=/dev/xvda bs=4096 skip=10 count=1 > /tmp/r && {PATTERN} | cmp - /tmp/r && \
         echo read-ok; if dd if=/dev/zero of=/dev/xvda bs=4096 seek=10 count=1; \
         then echo write-ok; else echo write-refused; fi"
    );
    let ro = pods
        .create(
            &pp,
            &pod(&node, "readonly", "data", true, false, &read_only),
        )
        .await
        .unwrap();
    wait_pod_succeeded(&pods, "readonly", Duration::from_secs(90), logs).await;
    let log = agent.container_log(&ns.name, "readonly", &ro.metadata.uid.unwrap(), "c", 0);
    assert!(
        log.contains("read-ok") && log.contains("write-refused") && !log.contains("write-ok"),
        "{log}"
    );
    assert!(log.contains("Operation not permitted"), "{log}");

    // The Block claim in volumeMounts, a Filesystem claim in volumeDevices: upstream's
    // FailedMount, and the pods never run.
    volume_and_claim(
        &ns,
        "fs",
        "fs",
        "Filesystem",
        (&driver_name, "rk-0000000000000000"),
        &node,
    )
    .await;
    pods.create(&pp, &pod(&node, "mounted", "data", false, true, "true"))
        .await
        .unwrap();
    pods.create(&pp, &pod(&node, "fsdevice", "fs", false, false, "true"))
        .await
        .unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ns.client.clone(), &ns.name);
    for (name, cause) in [
        (
            "mounted",
            "volume v has volumeMode Block, but is specified in volumeMounts",
        ),
        (
            "fsdevice",
            "volume v has volumeMode Filesystem, but is specified in volumeDevices",
        ),
    ] {
        let notes = wait_until(&format!("{name}'s FailedMount"), T, || async {
            let notes = event_notes(&events, Some("Pod"), name, "FailedMount").await;
            if notes.is_empty() {
                Err(agent.logs())
            } else {
                Ok(notes)
            }
        })
        .await;
        assert_eq!(
            notes,
            [format!(
                "Unable to attach or mount volumes: unmounted volumes=[v], unattached volumes=[], failed to process volumes=[v]: {cause}"
            )]
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["mounted", "fsdevice"] {
        let p = pods.get(name).await.unwrap();
        let status = p.status.unwrap_or_default();
        assert_eq!(status.phase.as_deref(), Some("Pending"), "{name}");
        assert!(
            status.container_statuses.iter().flatten().all(|c| c
                .state
                .as_ref()
                .is_none_or(|s| s.running.is_none() && s.terminated.is_none())),
            "{name} never ran: {:?}",
            status.container_statuses
        );
    }

    // Deleted while the agent is down: the restarted agent knows the volume only from
    // the pod's directory and the volume's vol_data.json, and still cleans up.
    let held = pods
        .create(
            &pp,
            &pod(&node, "held", "data", false, false, "echo up; sleep 3600"),
        )
        .await
        .unwrap();
    let held_uid = held.metadata.uid.unwrap();
    wait_until("held runs", Duration::from_secs(90), || async {
        let out = agent.container_log(&ns.name, "held", &held_uid, "c", 0);
        out.contains("up").then_some(()).ok_or_else(logs)
    })
    .await;
    let held_publish = devices.join("publish").join(&pv_name).join(&held_uid);
    assert!(mounted(&held_publish));
    agent.kill();
    pods.delete("held", &DeleteParams::default()).await.unwrap();
    agent.start_again();
    wait_until("held's volume unmapped after the restart", T, || async {
        if mounted(&held_publish)
            || mounted(&global.join(&held_uid))
            || staging.exists()
            || !loops_under(&driver.state).is_empty()
            || !loops_under(&agent.root).is_empty()
        {
            Err(agent.logs())
        } else {
            Ok(())
        }
    })
    .await;

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    assert_eq!(mounts_under(&agent.root), Vec::<String>::new());
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
    assert_eq!(loops_under(&driver.state), Vec::new(), "unstaged");
    assert_eq!(
        loops_under(&agent.root),
        Vec::new(),
        "no loop device holds a map"
    );
    for d in ["staging", "publish"] {
        assert_eq!(entries(&devices.join(d)), Vec::<PathBuf>::new(), "{d}");
    }
    assert!(
        !devices.join(&pv_name).exists(),
        "the volume's data and map path went: {:?}",
        entries(&devices.join(&pv_name))
    );

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    for c in ["data", "fs"] {
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
    driver
        .controller()
        .await
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: handle.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("DeleteVolume: {e}\n{}", driver.logs()));
    drop(driver);
    assert!(!dir.exists(), "the driver's directory went");
}

/// Controller-managed attach of a Block volume, as of a Filesystem one (csi_attach.rs):
/// rekube-controllers' attach/detach controller, `rekube-csi --attach-required` (its
/// ControllerPublishVolume attaches the image to a loop device) with `rekube-csi
/// attacher`, and the agent: the volume in the Node's `volumesInUse`, attached, its
/// `devicePath` handed to NodeStageVolume; the pod writes and reads the raw device; the
/// pod deleted: unmapped, unpublished, unstaged, out of `volumesInUse`, detached, and
/// nothing is left.
#[tokio::test]
async fn an_attached_block_volume_is_mapped_and_detached() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("csi-block-attach").await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection,attachdetach",
        ],
    );
    let node = ns.cluster_name("n");
    let dir = std::env::temp_dir().join(format!("rekube-e2e-csi-{}", ns.name));
    let driver_name = create_csi_driver(&ns, true).await;
    let mut driver = CsiDriverProcess::start(&dir, &driver_name, &node, &["--attach-required"]);
    driver.start_sidecar("attacher", &["--node-name", &node]);
    let handle = driver
        .create_local_block_disk(&format!("pvc-{}", ns.name), 64 * MIB)
        .await;
    let agent = AgentProcess::start_real(&ns, "n", &["--csi-driver", &driver.agent_flag()]);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    wait_until("the driver on the Node", T, || async {
        let n = nodes.get(&node).await.map_err(|e| e.to_string())?;
        n.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("csi.volume.kubernetes.io/nodeid")
            .then_some(())
            .ok_or_else(|| agent.logs())
    })
    .await;
    volume_and_claim(&ns, "disk", "data", "Block", (&driver_name, &handle), &node).await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let script = format!(
        "{PATTERN} > /tmp/p && dd if=/tmp/p of=/dev/xvda bs=4096 seek=3 count=1 conv=fsync && \
         dd if=/dev/xvda bs=4096 skip=3 count=1 > /tmp/r && cmp /tmp/p /tmp/r && \
         echo attached-rw; sleep 3600"
    );
    let user = pods
        .create(
            &PostParams::default(),
            &pod(&node, "user", "data", false, false, &script),
        )
        .await
        .unwrap();
    let uid = user.metadata.uid.unwrap();
    wait_until(
        "the pod on the attached device",
        Duration::from_secs(90),
        || async {
            let out = agent.container_log(&ns.name, "user", &uid, "c", 0);
            if out.contains("attached-rw") {
                Ok(())
            } else {
                Err(format!("{out}\n{}\n{}", agent.logs(), driver.logs()))
            }
        },
    )
    .await;
    let unique = rekube_crds::storage_keys::csi_unique_volume_name(&driver_name, &handle);
    let va_name = rekube_crds::storage_keys::attachment_name(&handle, &driver_name, &node);
    let attachments: Api<rekube_crds::VolumeAttachment> = Api::all(ns.client.clone());
    let va = attachments.get(&va_name).await.unwrap();
    let device = va
        .status
        .and_then(|s| s.attachment_metadata)
        .unwrap_or_default()
        .get("devicePath")
        .cloned()
        .expect("the attach's devicePath");
    let loops = loops_under(&driver.state);
    assert_eq!(
        loops.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        [PathBuf::from(&device)],
        "the attachment's device is the image's loop device"
    );
    let status = nodes.get_status(&node).await.unwrap().status.unwrap();
    assert_eq!(status.volumes_in_use, Some(vec![unique.clone()]));
    assert_eq!(
        status
            .volumes_attached
            .unwrap_or_default()
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>(),
        [unique]
    );

    pods.delete("user", &DeleteParams::default()).await.unwrap();
    wait_unmounted_and_detached(
        &ns,
        "the volume unmapped and detached",
        &node,
        &va_name,
        &driver,
    )
    .await;
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    assert_eq!(mounts_under(&agent.root), Vec::<String>::new());
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
    assert_eq!(loops_under(&agent.root), Vec::new());
    let devices = agent.root.join("plugins/kubernetes.io/csi/volumeDevices");
    assert!(
        !devices.join(ns.cluster_name("disk")).exists(),
        "{:?}",
        entries(&devices)
    );

    delete_claim_and_volume(&ns, &driver, "data", handle, T).await;
}
