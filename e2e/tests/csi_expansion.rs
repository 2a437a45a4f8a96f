//! PersistentVolumeClaim expansion end to end on the real apiserver, as root: the real
//! `rekube-csi` driver with its provisioner and its resizer (`rekube-csi resizer`,
//! external-resizer's role) on a socket in a temporary directory, a real
//! `rekube-node-agent` as the node's kubelet (NodeExpandVolume, the claim's status),
//! rekube-controllers' scheduler, PV binder and protection controllers, and the
//! PersistentVolumeClaimResize admission policy.
//!
//! - Offline: a 64Mi claim of a local-disk class with `allowVolumeExpansion`, used by a
//!   pod that writes a file and goes; the claim grown to 128Mi: ControllerExpandVolume
//!   (the image is 128 MiB), the PV's capacity 128Mi, the claim `FileSystemResizePending`
//!   with `allocatedResources` 128Mi and NodeResizePending, upstream's `Resizing` and
//!   `FileSystemResizeRequired` events; a new pod finds its file on a filesystem of about
//!   128 MiB (`df`, the offline growth at NodeStageVolume), and the claim's capacity is
//!   128Mi, its resize conditions and status gone, `FileSystemResizeSuccessful`.
//! - Online: a claim grown while its pod runs. With CAP_SYS_RESOURCE (read from
//!   /proc/self/status; the driver is this process's child) the running pod's `df` shows
//!   the new size and the claim is done. Without it (this machine's root) the kubelet's
//!   NodeExpandVolume fails: upstream's `VolumeResizeFailed` event on the pod naming the
//!   driver's error (CAP_SYS_RESOURCE), the claim's NodeResizeError condition, the
//!   filesystem untouched (`df` in the running pod); once the pod goes, the next pod's
//!   NodeStageVolume grows it offline and the claim ends right, the file kept.
//! - A claim of a class without `allowVolumeExpansion` cannot grow: upstream's message;
//!   one whose class does not exist (which the policy cannot see) grows, but the resizer
//!   refuses to expand it, with that message.
//! - Afterwards nothing is left: no PV, image, record, loop device or mount.
//!
//! [`an_xfs_claim_grows_online_in_its_running_pod`]: the same machinery with a class of
//! `csi.storage.k8s.io/fstype: xfs`. xfs grows online with `xfs_growfs`, which needs
//! CAP_SYS_ADMIN only, so here, on every machine, a 320Mi claim grown to 640Mi under its
//! running pod is seen by that pod's `df` without a restart, and the claim ends as
//! upstream's kubelet leaves it.
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};
use rekube_csi::kernel::has_cap_sys_resource;
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, wait_pod_succeeded};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::SCOPE_LABEL;
use rekube_e2e::storage::{
    CsiDriverProcess, MIB, assert_no_storage_left, create_csi_driver, delete_test_volumes,
    event_notes, files_under,
};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// The size in KiB of the last busybox `df -k /data` line of a container's CRI log
/// (`<time> stdout F /dev/loop0 56037 15 54712 0% /data`).
fn last_df_kib(log: &str) -> Option<i64> {
    log.lines()
        .rev()
        .find(|l| l.trim_end().ends_with(" /data"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|n| n.parse().ok())
}

/// The size in KiB of the first `df -k /data` line of a container's CRI log.
fn first_df_kib(log: &str) -> Option<i64> {
    log.lines()
        .find(|l| l.trim_end().ends_with(" /data"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|n| n.parse().ok())
}

/// The ext4 of a 64 MiB volume, and of a 128 MiB one (the size less the filesystem's
/// own metadata).
const SIZE_64: std::ops::RangeInclusive<i64> = 48 * 1024..=64 * 1024;
const SIZE_128: std::ops::RangeInclusive<i64> = 112 * 1024..=128 * 1024;

fn condition_types(claim: &PersistentVolumeClaim) -> Vec<String> {
    claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().map(|c| c.type_.clone()).collect())
        .unwrap_or_default()
}

/// The claim's `status.capacity.storage`, `allocatedResources.storage` and
/// `allocatedResourceStatuses.storage`.
fn sizes(claim: &PersistentVolumeClaim) -> (Option<String>, Option<String>, Option<String>) {
    let s = claim.status.clone().unwrap_or_default();
    (
        s.capacity
            .and_then(|c| c.get("storage").map(|q| q.0.clone())),
        s.allocated_resources
            .and_then(|c| c.get("storage").map(|q| q.0.clone())),
        s.allocated_resource_statuses
            .and_then(|c| c.get("storage").cloned()),
    )
}

/// `df -k` of an xfs of 320 MiB and of 640 MiB: the size less its 64 MiB internal log and
/// a little metadata.
const XFS_320: std::ops::RangeInclusive<i64> = 240 * 1024..=320 * 1024;
const XFS_640: std::ops::RangeInclusive<i64> = 560 * 1024..=640 * 1024;

fn pv_capacity(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
}

/// What each test runs: the controllers that bind claims, rekube-csi (`--capacity`) with
/// its provisioner and resizer, and a real agent using the driver, its node Ready. The
/// bindings are declared in this order so that they drop in the reverse one (the agent
/// first, the namespace last).
struct Stack {
    ns: TestNamespace,
    dir: std::path::PathBuf,
    node: String,
    driver_name: String,
    _controllers: ControllerProcess,
    driver: CsiDriverProcess,
    agent: AgentProcess,
}

async fn start_stack(prefix: &str, capacity: &str) -> Stack {
    let ns = TestNamespace::new(prefix).await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=scheduler,persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection",
        ],
    );
    let node = ns.cluster_name("n");
    let dir = std::env::temp_dir().join(format!("rekube-e2e-csi-{}", ns.name));
    let driver_name = create_csi_driver(&ns, false).await;
    let mut driver = CsiDriverProcess::start(&dir, &driver_name, &node, &["--capacity", capacity]);
    driver.start_provisioner(&node, &format!("{SCOPE_LABEL}={}", ns.name));
    driver.start_sidecar("resizer", &["--node-id", &node]);
    let agent = AgentProcess::start_real(&ns, "n", &["--csi-driver", &driver.agent_flag()]);
    agent.wait_node_ready(&ns.client, T).await;
    Stack {
        ns,
        dir,
        node,
        driver_name,
        _controllers,
        driver,
        agent,
    }
}

#[tokio::test]
async fn claims_grow_offline_and_online_and_only_where_the_class_allows() {
    if cannot_run_containers() {
        return;
    }
    // Three 64 MiB volumes, two of them grown to 128 MiB.
    let Stack {
        ns,
        dir,
        node,
        driver_name,
        _controllers,
        driver,
        agent,
    } = start_stack("csi-exp", "512Mi").await;
    for (name, expand) in [("grows", true), ("fixed", false)] {
        ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": driver_name,
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
            "allowVolumeExpansion": expand, "parameters": {"type": "local-disk"}}))
            .await
            .unwrap();
    }
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let logs = || format!("{}\n{}", agent.logs(), driver.logs());

    let claim = |name: &str, class: &str| -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": ns.cluster_name(class),
                "resources": {"requests": {"storage": "64Mi"}}},
        }))
        .unwrap()
    };
    let pod = |name: &str, claim: &str, script: &str| -> Pod {
        serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}))
        .unwrap()
    };
    let grow = |name: &'static str| {
        let claims = claims.clone();
        async move {
            claims
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"spec": {"resources": {"requests": {"storage": "128Mi"}}}}),
                    ),
                )
                .await
        }
    };
    let delete_pod = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.delete(name, &DeleteParams::default()).await.unwrap();
            wait_until(&format!("pod {name} gone"), T, || async {
                match pods.get_opt(name).await {
                    Ok(None) => Ok(()),
                    other => Err(format!("{:?}", other.map(|p| p.is_some()))),
                }
            })
            .await;
        }
    };
    let uid_of = |p: &Pod| p.metadata.uid.clone().unwrap();

    // Three claims, each used by a first pod (provisioned, bound, written).
    let mut pv_names = std::collections::BTreeMap::new();
    for (c, class) in [
        ("offline", "grows"),
        ("online", "grows"),
        ("fixed", "fixed"),
    ] {
        let created = claims.create(&pp, &claim(c, class)).await.unwrap();
        pv_names.insert(c, format!("pvc-{}", created.metadata.uid.unwrap()));
    }
    let writes = "echo kept > /data/file && df -k /data";
    pods.create(&pp, &pod("offline-1", "offline", writes))
        .await
        .unwrap();
    pods.create(&pp, &pod("fixed-1", "fixed", writes))
        .await
        .unwrap();
    pods.create(
        &pp,
        &pod(
            "online-1",
            "online",
            "echo kept > /data/file; while true; do df -k /data; sleep 1; done",
        ),
    )
    .await
    .unwrap();
    let offline_1 = wait_pod_succeeded(&pods, "offline-1", Duration::from_secs(90), logs).await;
    let log = agent.container_log(&ns.name, "offline-1", &uid_of(&offline_1), "c", 0);
    let kib = last_df_kib(&log).unwrap_or_else(|| panic!("no df line in {log:?}"));
    assert!(SIZE_64.contains(&kib), "a 64 MiB volume: {kib} KiB");
    wait_pod_succeeded(&pods, "fixed-1", Duration::from_secs(90), logs).await;

    // (c) A class without allowVolumeExpansion: refused, as upstream's admission plugin.
    wait_until("claim fixed bound", T, || async {
        let c = claims.get("fixed").await.map_err(|e| e.to_string())?;
        match c.status.and_then(|s| s.phase) {
            Some(p) if p == "Bound" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    match grow("fixed").await {
        Err(kube::Error::Api(s)) if s.code == 403
            && s.message.ends_with(
                "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
            ) => {}
        other => panic!("growing a claim of a class without allowVolumeExpansion: {other:?}"),
    }

    // A claim whose class does not exist: the admission policy cannot see the class, so
    // the growth is admitted; the resizer refuses to expand it, with the admission
    // plugin's message.
    let handle = driver
        .create_local_disk(&format!("static-{}", ns.name), 32 * MIB)
        .await;
    let static_pv = ns.cluster_name("static");
    let missing = ns.cluster_name("missing");
    let static_volume = json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
        "metadata": {"name": static_pv, "labels": {SCOPE_LABEL: ns.name}},
        "spec": {"capacity": {"storage": "32Mi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": missing,
            "csi": {"driver": driver_name, "volumeHandle": handle, "fsType": "ext4"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.csi.rekube.io/node", "operator": "In", "values": [node]}]}]}}}});
    volumes
        .create(&pp, &serde_json::from_value(static_volume).unwrap())
        .await
        .unwrap();
    let orphan: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "orphan"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": missing,
            "resources": {"requests": {"storage": "32Mi"}}},
    }))
    .unwrap();
    claims.create(&pp, &orphan).await.unwrap();
    wait_until("claim orphan bound", T, || async {
        let c = claims.get("orphan").await.map_err(|e| e.to_string())?;
        match c.status.and_then(|s| s.phase) {
            Some(p) if p == "Bound" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    claims
        .patch(
            "orphan",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "64Mi"}}}})),
        )
        .await
        .unwrap();
    let refusal = format!(
        "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize (storageclass \"{missing}\" not found)"
    );
    wait_until(
        "the resizer's refusal of a claim without its class",
        T,
        || async {
            let notes = event_notes(
                &events,
                Some("PersistentVolumeClaim"),
                "orphan",
                "VolumeResizeFailed",
            )
            .await;
            if notes == [refusal.clone()] {
                Ok(())
            } else {
                Err(format!("{notes:?}\n{}", driver.logs()))
            }
        },
    )
    .await;
    assert_eq!(
        pv_capacity(&volumes.get(&static_pv).await.unwrap()).as_deref(),
        Some("32Mi"),
        "not expanded"
    );
    claims
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();

    // (a) Offline: grown while no pod uses it.

    delete_pod("offline-1").await;
    let offline_pv = pv_names["offline"].clone();
    grow("offline").await.unwrap();
    let pv = wait_until("the offline volume expanded by the resizer", T, || async {
        let pv = volumes.get(&offline_pv).await.map_err(|e| e.to_string())?;
        let c = claims.get("offline").await.map_err(|e| e.to_string())?;
        let pending = condition_types(&c).contains(&"FileSystemResizePending".to_string());
        if pv_capacity(&pv).as_deref() == Some("128Mi") && pending {
            Ok((pv, c))
        } else {
            Err(format!(
                "{:?} {:?}\n{}",
                pv_capacity(&pv),
                c.status,
                driver.logs()
            ))
        }
    })
    .await;
    let (_, pending) = pv;
    assert_eq!(
        sizes(&pending),
        (
            Some("64Mi".into()),
            Some("128Mi".into()),
            Some("NodeResizePending".into())
        ),
        "the claim's capacity, allocatedResources and allocatedResourceStatuses"
    );
    let fs_pending = pending
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "FileSystemResizePending"))
        .cloned()
        .unwrap();
    assert_eq!(fs_pending.status, "True");
    assert_eq!(
        fs_pending.message.as_deref(),
        Some(
            "Waiting for user to (re-)start a pod to finish file system resize of volume on node."
        )
    );
    let image = files_under(&driver.state.join("images"))
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == 128 * MIB as u64));
    assert!(
        image.is_some(),
        "a 128 MiB image: {:?}",
        files_under(&driver.state)
    );
    wait_until("the resizer's events", T, || async {
        let resizing = event_notes(
            &events,
            Some("PersistentVolumeClaim"),
            "offline",
            "Resizing",
        )
        .await;
        let required = event_notes(
            &events,
            Some("PersistentVolumeClaim"),
            "offline",
            "FileSystemResizeRequired",
        )
        .await;
        if resizing == [format!("External resizer is resizing volume {offline_pv}")]
            && required == ["Require file system resize of volume on node"]
        {
            Ok(())
        } else {
            Err(format!("{resizing:?} {required:?}"))
        }
    })
    .await;
    pods.create(
        &pp,
        &pod(
            "offline-2",
            "offline",
            "test \"$(cat /data/file)\" = kept && df -k /data",
        ),
    )
    .await
    .unwrap();
    let offline_2 = wait_pod_succeeded(&pods, "offline-2", Duration::from_secs(90), logs).await;
    let log = agent.container_log(&ns.name, "offline-2", &uid_of(&offline_2), "c", 0);
    let kib = last_df_kib(&log).unwrap_or_else(|| panic!("no df line in {log:?}"));
    assert!(
        SIZE_128.contains(&kib),
        "grown offline to 128 MiB: {kib} KiB\n{log}"
    );
    let done = wait_until("the offline claim's node expansion recorded", T, || async {
        let c = claims.get("offline").await.map_err(|e| e.to_string())?;
        if sizes(&c).0.as_deref() == Some("128Mi") {
            Ok(c)
        } else {
            Err(format!("{:?}", c.status))
        }
    })
    .await;
    assert_eq!(
        sizes(&done),
        (Some("128Mi".into()), Some("128Mi".into()), None)
    );
    assert_eq!(
        condition_types(&done),
        Vec::<String>::new(),
        "the resize conditions are gone"
    );
    let succeeded =
        format!("MountVolume.NodeExpandVolume succeeded for volume \"{offline_pv}\" {node}");
    wait_until(
        "FileSystemResizeSuccessful on the claim and the pod",
        T,
        || async {
            let claim_notes = event_notes(
                &events,
                Some("PersistentVolumeClaim"),
                "offline",
                "FileSystemResizeSuccessful",
            )
            .await;
            let pod_notes = event_notes(
                &events,
                Some("Pod"),
                "offline-2",
                "FileSystemResizeSuccessful",
            )
            .await;
            if claim_notes == [succeeded.clone()] && pod_notes == [succeeded.clone()] {
                Ok(())
            } else {
                Err(format!("{claim_notes:?} {pod_notes:?}"))
            }
        },
    )
    .await;
    delete_pod("offline-2").await;

    // (b) Online: grown while online-1 runs on it.
    let online_pv = pv_names["online"].clone();
    let online_1 = wait_until("online-1 running", Duration::from_secs(90), || async {
        let p = pods.get("online-1").await.map_err(|e| e.to_string())?;
        let log = agent.container_log(&ns.name, "online-1", &uid_of(&p), "c", 0);
        match last_df_kib(&log) {
            Some(kib) => Ok((p, kib)),
            None => Err(format!("{log}\n{}", logs())),
        }
    })
    .await;
    let (online_1, kib) = online_1;
    assert!(SIZE_64.contains(&kib), "{kib} KiB");
    let online_uid = uid_of(&online_1);
    let online_df = || agent.container_log(&ns.name, "online-1", &online_uid, "c", 0);
    grow("online").await.unwrap();
    if has_cap_sys_resource() {
        // The kubelet's online expansion, seen by the running pod.
        wait_until(
            "the running pod sees 128 MiB",
            Duration::from_secs(90),
            || async {
                match last_df_kib(&online_df()) {
                    Some(kib) if SIZE_128.contains(&kib) => Ok(()),
                    other => Err(format!("{other:?}\n{}", logs())),
                }
            },
        )
        .await;
        let c = wait_until("the online claim done", T, || async {
            let c = claims.get("online").await.map_err(|e| e.to_string())?;
            if sizes(&c).0.as_deref() == Some("128Mi") {
                Ok(c)
            } else {
                Err(format!("{:?}", c.status))
            }
        })
        .await;
        assert_eq!(
            sizes(&c),
            (Some("128Mi".into()), Some("128Mi".into()), None)
        );
        assert_eq!(condition_types(&c), Vec::<String>::new());
        let succeeded =
            format!("MountVolume.NodeExpandVolume succeeded for volume \"{online_pv}\" {node}");
        wait_until(
            "FileSystemResizeSuccessful on the running pod",
            T,
            || async {
                let notes = event_notes(
                    &events,
                    Some("Pod"),
                    "online-1",
                    "FileSystemResizeSuccessful",
                )
                .await;
                if notes == [succeeded.clone()] {
                    Ok(())
                } else {
                    Err(format!("{notes:?}"))
                }
            },
        )
        .await;
        delete_pod("online-1").await;
    } else {
        eprintln!(
            "no CAP_SYS_RESOURCE here: the online resize must fail with the driver's error, and the next pod grow it offline"
        );
        let prefix = format!(
            "NodeExpandVolume.NodeExpandVolume failed for volume \"{online_pv}\" : Expander.NodeExpand failed to expand the volume : rpc error: code = Internal desc = resize2fs /dev/loop"
        );
        let failure = wait_until(
            "upstream's VolumeResizeFailed on the running pod",
            Duration::from_secs(90),
            || async {
                let notes =
                    event_notes(&events, Some("Pod"), "online-1", "VolumeResizeFailed").await;
                match notes.iter().find(|n| n.starts_with(&prefix)) {
                    Some(n) => Ok(n.clone()),
                    None => Err(format!("{notes:?}\n{}", logs())),
                }
            },
        )
        .await;
        assert!(
            failure.ends_with(
                ": online resize needs CAP_SYS_RESOURCE, which rekube-csi lacks (run it privileged)"
            ),
            "{failure}"
        );
        let c = claims.get("online").await.unwrap();
        assert_eq!(
            sizes(&c),
            (
                Some("64Mi".into()),
                Some("128Mi".into()),
                Some("NodeResizeInProgress".into())
            )
        );
        let node_error = c
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "NodeResizeError"))
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        assert!(
            node_error.starts_with("failed to expand pvc with Expander.NodeExpand failed to expand the volume : rpc error: code = Internal desc = resize2fs")
                && node_error.contains("CAP_SYS_RESOURCE"),
            "{:?}",
            c.status
        );
        assert!(condition_types(&c).contains(&"FileSystemResizePending".to_string()));
        // The filesystem untouched: the running pod still sees 64 MiB.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let kib = last_df_kib(&online_df()).unwrap();
        assert!(SIZE_64.contains(&kib), "untouched: {kib} KiB");
        // The pod gone, the next one's stage grows it offline; the claim ends right.
        delete_pod("online-1").await;
        pods.create(
            &pp,
            &pod(
                "online-2",
                "online",
                "test \"$(cat /data/file)\" = kept && df -k /data",
            ),
        )
        .await
        .unwrap();
        let online_2 = wait_pod_succeeded(&pods, "online-2", Duration::from_secs(90), logs).await;
        let log = agent.container_log(&ns.name, "online-2", &uid_of(&online_2), "c", 0);
        let kib = last_df_kib(&log).unwrap_or_else(|| panic!("no df line in {log:?}"));
        assert!(
            SIZE_128.contains(&kib),
            "grown offline after all: {kib} KiB"
        );
        let c = wait_until("the online claim done after all", T, || async {
            let c = claims.get("online").await.map_err(|e| e.to_string())?;
            if sizes(&c).0.as_deref() == Some("128Mi") {
                Ok(c)
            } else {
                Err(format!("{:?}", c.status))
            }
        })
        .await;
        assert_eq!(
            sizes(&c),
            (Some("128Mi".into()), Some("128Mi".into()), None)
        );
        assert_eq!(condition_types(&c), Vec::<String>::new());
        delete_pod("online-2").await;
    }

    // (d) Nothing left.
    delete_pod("fixed-1").await;
    for c in ["offline", "online", "fixed"] {
        claims.delete(c, &DeleteParams::default()).await.unwrap();
    }
    for pv in pv_names.values() {
        wait_until(&format!("{pv} deleted with its claim"), T, || async {
            match volumes.get_opt(pv).await {
                Ok(None) => Ok(()),
                other => Err(format!(
                    "{:?}\n{}",
                    other.map(|v| v.map(|v| v.status)),
                    driver.logs()
                )),
            }
        })
        .await;
    }
    delete_test_volumes(&ns).await;
    driver
        .controller()
        .await
        .delete_volume(rekube_csi::csi::DeleteVolumeRequest {
            volume_id: handle.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("DeleteVolume of the static volume: {e}"));
    assert_no_storage_left(&driver.state, &dir, &agent.root);
    delete_test_volumes(&ns).await;
}

/// An xfs claim grown while its pod runs: a StorageClass of local-disk volumes with
/// `csi.storage.k8s.io/fstype: xfs` and `allowVolumeExpansion`; a 320Mi claim (the PV's
/// fsType xfs) used by a pod printing `df -k /data` every second; the claim grown to
/// 640Mi: the resizer's ControllerExpandVolume, then the agent's NodeExpandVolume
/// (`xfs_growfs` on the published path) while the pod runs: its `df` shows about 640 MiB
/// with no restart and its file kept, the claim's capacity is 640Mi with its resize conditions and status
/// gone, FileSystemResizeSuccessful on the claim and the pod. Nothing left after.
#[tokio::test]
async fn an_xfs_claim_grows_online_in_its_running_pod() {
    if cannot_run_containers() {
        return;
    }
    let Stack {
        ns,
        dir,
        node,
        driver_name,
        _controllers,
        driver,
        agent,
    } = start_stack("csi-xfs", "1Gi").await;
    ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass",
        "metadata": {"name": "xfs"}, "provisioner": driver_name,
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true,
        "parameters": {"type": "local-disk", "csi.storage.k8s.io/fstype": "xfs"}}))
        .await
        .unwrap();
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let logs = || format!("{}\n{}", agent.logs(), driver.logs());

    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": ns.cluster_name("xfs"),
            "resources": {"requests": {"storage": "320Mi"}}},
    }))
    .unwrap();
    let created = claims.create(&pp, &claim).await.unwrap();
    let pv_name = format!("pvc-{}", created.metadata.uid.unwrap());
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "grows"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c",
                    "echo kept > /data/file; while true; do echo \"file: $(cat /data/file)\"; df -k /data; sleep 1; done"],
                "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
    .unwrap();
    pods.create(&pp, &pod).await.unwrap();

    // Running on a 320 MiB xfs, as the PV says.
    let (running, kib) = wait_until(
        "pod grows running on its xfs",
        Duration::from_secs(90),
        || async {
            let p = pods.get("grows").await.map_err(|e| e.to_string())?;
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let log = agent.container_log(&ns.name, "grows", &uid, "c", 0);
            match last_df_kib(&log) {
                Some(kib) => Ok((p, kib)),
                None => Err(format!("{log}\n{}", logs())),
            }
        },
    )
    .await;
    assert!(XFS_320.contains(&kib), "a 320 MiB xfs: {kib} KiB");
    let uid = running.metadata.uid.clone().unwrap();
    let pv = volumes.get(&pv_name).await.unwrap();
    let csi = pv.spec.as_ref().and_then(|s| s.csi.clone()).unwrap();
    assert_eq!(csi.fs_type.as_deref(), Some("xfs"), "the PV's fsType");
    assert_eq!(pv_capacity(&pv).as_deref(), Some("320Mi"));

    // Grown while the pod runs.
    let grown_at = std::time::Instant::now();
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "640Mi"}}}})),
        )
        .await
        .unwrap();
    let df = || agent.container_log(&ns.name, "grows", &uid, "c", 0);
    let kib = wait_until(
        "the running pod's df shows 640 MiB",
        Duration::from_secs(90),
        || async {
            match last_df_kib(&df()) {
                Some(kib) if XFS_640.contains(&kib) => Ok(kib),
                other => Err(format!("{other:?}\n{}", logs())),
            }
        },
    )
    .await;
    eprintln!(
        "xfs seen by the running pod: the 320Mi claim {} KiB, grown to 640Mi {kib} KiB, {:.1}s after the claim's update",
        first_df_kib(&df()).unwrap_or_default(),
        grown_at.elapsed().as_secs_f64()
    );
    let log = df();
    let last_file = log
        .lines()
        .rev()
        .find_map(|l| l.split_once("file: ").map(|(_, f)| f));
    assert_eq!(
        last_file,
        Some("kept"),
        "the file kept through the growth\n{log}"
    );
    let done = wait_until("the claim's node expansion recorded", T, || async {
        let c = claims.get("data").await.map_err(|e| e.to_string())?;
        if sizes(&c).0.as_deref() == Some("640Mi") {
            Ok(c)
        } else {
            Err(format!("{:?}", c.status))
        }
    })
    .await;
    assert_eq!(
        sizes(&done),
        (Some("640Mi".into()), Some("640Mi".into()), None),
        "capacity, allocatedResources and allocatedResourceStatuses as the kubelet leaves them"
    );
    assert_eq!(
        condition_types(&done),
        Vec::<String>::new(),
        "the resize conditions are gone"
    );
    assert_eq!(
        pv_capacity(&volumes.get(&pv_name).await.unwrap()).as_deref(),
        Some("640Mi")
    );
    let succeeded =
        format!("MountVolume.NodeExpandVolume succeeded for volume \"{pv_name}\" {node}");
    wait_until(
        "the resizer's events and FileSystemResizeSuccessful on the claim and the running pod",
        T,
        || async {
            let claim_event = |reason: &'static str| {
                event_notes(&events, Some("PersistentVolumeClaim"), "data", reason)
            };
            let resizing = claim_event("Resizing").await;
            let required = claim_event("FileSystemResizeRequired").await;
            let claim_done = claim_event("FileSystemResizeSuccessful").await;
            let pod_done =
                event_notes(&events, Some("Pod"), "grows", "FileSystemResizeSuccessful").await;
            if resizing == [format!("External resizer is resizing volume {pv_name}")]
                && required == ["Require file system resize of volume on node"]
                && claim_done == [succeeded.clone()]
                && pod_done == [succeeded.clone()]
            {
                Ok(())
            } else {
                Err(format!(
                    "{resizing:?} {required:?} {claim_done:?} {pod_done:?}"
                ))
            }
        },
    )
    .await;
    assert!(
        event_notes(&events, Some("Pod"), "grows", "VolumeResizeFailed")
            .await
            .is_empty(),
        "no failed resize"
    );
    // The same pod, never restarted, still running.
    let p = pods.get("grows").await.unwrap();
    assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
    let status = p.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let restarts: Vec<i32> = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .collect();
    assert_eq!(restarts, [0], "no restart");
    let image = files_under(&driver.state.join("images"));
    assert_eq!(
        image
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect::<Vec<_>>(),
        [640 * MIB as u64],
        "one 640 MiB image"
    );

    // Nothing left.
    pods.delete("grows", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("pod grows gone", T, || async {
        match pods.get_opt("grows").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|p| p.is_some()))),
        }
    })
    .await;
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(&format!("{pv_name} deleted with its claim"), T, || async {
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
    delete_test_volumes(&ns).await;
    assert_no_storage_left(&driver.state, &dir, &agent.root);
}
