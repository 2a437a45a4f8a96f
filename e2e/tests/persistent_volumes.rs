//! PersistentVolumes and claims on the real apiserver (issue 13): rekube-controllers' PV
//! binder and the protection controllers, and a real `rekube-node-agent run` mounting a
//! claim (as root).
//!
//! - binding: the smallest matching volume, both sides written as upstream (claimRef with
//!   the claim's UID, phases, `pv.kubernetes.io/bind-completed` and `bound-by-controller`,
//!   the claim's capacity and access modes from the volume), a claim pre-bound by
//!   `volumeName`, a claim with no match Pending with upstream's FailedBinding event, a
//!   deleted claim's Retain volume Released with its claimRef;
//! - protection: a claim used by a pod and a bound volume stay (Terminating) until
//!   released, then go;
//! - data: a pod writes to its claim (a local volume on the node), is deleted, a second
//!   pod reads the data; a read-only claim refuses writes; after the claim goes the volume
//!   is Released and the data still on the node; no mount left behind.
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};
use rekube_e2e::agent::{
    AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers, wait_pod_succeeded,
};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::SCOPE_LABEL;
use rekube_e2e::storage::{delete_test_volumes, event_notes};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const STORAGE_CONTROLLERS: &str = "--controllers=persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller";

fn volume(
    ns: &TestNamespace,
    name: &str,
    size: &str,
    policy: &str,
    source: Value,
) -> PersistentVolume {
    let mut spec = json!({
        "capacity": {"storage": size},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": policy,
        "storageClassName": format!("manual-{}", ns.name),
    });
    spec.as_object_mut()
        .unwrap()
        .extend(source.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
        "metadata": {"name": ns.cluster_name(name), "labels": {SCOPE_LABEL: ns.name}},
        "spec": spec,
    }))
    .unwrap()
}

fn claim(ns: &TestNamespace, name: &str, size: &str, extra: Value) -> PersistentVolumeClaim {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
        "storageClassName": format!("manual-{}", ns.name),
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> String {
    c.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn phase_of_volume(v: &PersistentVolume) -> String {
    v.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn claim_bound(claims: &Api<PersistentVolumeClaim>, name: &str) -> PersistentVolumeClaim {
    wait_until(&format!("claim {name} bound"), T, || async {
        let c = claims.get(name).await.map_err(|e| e.to_string())?;
        if phase_of_claim(&c) == "Bound" {
            Ok(c)
        } else {
            Err(format!("{:?} {:?}", c.spec, c.status))
        }
    })
    .await
}

async fn volume_phase(
    volumes: &Api<PersistentVolume>,
    name: &str,
    phase: &str,
) -> PersistentVolume {
    wait_until(&format!("volume {name} {phase}"), T, || async {
        let v = volumes.get(name).await.map_err(|e| e.to_string())?;
        if phase_of_volume(&v) == phase {
            Ok(v)
        } else {
            Err(format!("{:?} {:?}", v.spec, v.status))
        }
    })
    .await
}

async fn gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_until(&format!("{name} gone"), T, || async {
        match api.get_opt(name).await {
            Ok(None) => Ok(()),
            Ok(Some(o)) => Err(format!("still there: {:?}", o.meta().finalizers)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

fn annotation<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn finalizers(meta: &kube::api::ObjectMeta) -> Vec<String> {
    meta.finalizers.clone().unwrap_or_default()
}

/// A Retain local volume `disk` on `node` (a directory under the temporary directory, its
/// path returned) and the claim `data` bound to it.
async fn local_volume_and_claim(ns: &TestNamespace, node: &str) -> std::path::PathBuf {
    let disk = std::env::temp_dir().join(format!("rekube-e2e-local-{}", ns.name));
    std::fs::create_dir_all(&disk).unwrap();
    let local = json!({
        "local": {"path": disk.to_str().unwrap()},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
    });
    let pp = PostParams::default();
    Api::<PersistentVolume>::all(ns.client.clone())
        .create(&pp, &volume(ns, "disk", "1Gi", "Retain", local))
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    claims
        .create(&pp, &claim(ns, "data", "1Gi", json!({})))
        .await
        .unwrap();
    claim_bound(&claims, "data").await;
    disk
}

#[tokio::test]
async fn volumes_bind_release_and_are_protected() {
    let ns = TestNamespace::new("pv-binder").await;
    let _controllers = ControllerProcess::start(&ns.name, &[STORAGE_CONTROLLERS]);
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let events_api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let host = json!({"hostPath": {"path": "/tmp/rekube-e2e-unused"}});
    for (name, size) in [("small", "1Gi"), ("big", "5Gi"), ("huge", "10Gi")] {
        volumes
            .create(&pp, &volume(&ns, name, size, "Retain", host.clone()))
            .await
            .unwrap();
    }
    let (small, big, huge) = (
        ns.cluster_name("small"),
        ns.cluster_name("big"),
        ns.cluster_name("huge"),
    );
    for v in [&small, &big, &huge] {
        let got = volume_phase(&volumes, v, "Available").await;
        assert_eq!(
            finalizers(&got.metadata),
            ["kubernetes.io/pv-protection"],
            "{v}: the pv-protection finalizer"
        );
    }

    // The smallest volume that fits: 2Gi goes to the 5Gi volume, not the 10Gi one.
    claims
        .create(&pp, &claim(&ns, "data", "2Gi", json!({})))
        .await
        .unwrap();
    let data = claim_bound(&claims, "data").await;
    let spec = data.spec.clone().unwrap();
    assert_eq!(spec.volume_name.as_deref(), Some(big.as_str()));
    assert_eq!(
        annotation(&data.metadata, "pv.kubernetes.io/bind-completed"),
        Some("yes")
    );
    assert_eq!(
        annotation(&data.metadata, "pv.kubernetes.io/bound-by-controller"),
        Some("yes")
    );
    let status = data.status.clone().unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "5Gi");
    assert_eq!(status.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(finalizers(&data.metadata), ["kubernetes.io/pvc-protection"]);
    let v = volume_phase(&volumes, &big, "Bound").await;
    let claim_ref = v.spec.clone().unwrap().claim_ref.unwrap();
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(claim_ref.namespace.as_deref(), Some(ns.name.as_str()));
    assert_eq!(claim_ref.uid, data.metadata.uid);
    assert_eq!(
        annotation(&v.metadata, "pv.kubernetes.io/bound-by-controller"),
        Some("yes")
    );
    assert_eq!(
        phase_of_volume(&volumes.get(&huge).await.unwrap()),
        "Available"
    );

    // Pre-bound by the claim: the named volume, though bigger than needed.
    claims
        .create(&pp, &claim(&ns, "pre", "1Gi", json!({"volumeName": huge})))
        .await
        .unwrap();
    let pre = claim_bound(&claims, "pre").await;
    assert_eq!(
        pre.spec.unwrap().volume_name.as_deref(),
        Some(huge.as_str())
    );
    assert_eq!(
        annotation(&pre.metadata, "pv.kubernetes.io/bound-by-controller"),
        None,
        "the user bound the claim, not the controller"
    );
    volume_phase(&volumes, &huge, "Bound").await;

    // No volume and no class: Pending, with upstream's event.
    claims
        .create(
            &pp,
            &claim(&ns, "nothing", "1Gi", json!({"storageClassName": ""})),
        )
        .await
        .unwrap();
    let notes = wait_until("FailedBinding of claim nothing", T, || async {
        let notes = event_notes(&events_api, None, "nothing", "FailedBinding").await;
        if notes.is_empty() {
            Err("no event yet".to_string())
        } else {
            Ok(notes)
        }
    })
    .await;
    assert_eq!(
        notes[0],
        "no persistent volumes available for this claim and no storage class is set"
    );
    assert_eq!(
        phase_of_claim(&claims.get("nothing").await.unwrap()),
        "Pending"
    );

    // Claim protection: "pre" is used by a scheduled pod (upstream counts only those: a
    // kubelet could be using the claim), so its deletion waits for the pod. No agent runs
    // on the node named.
    pods.create(
        &pp,
        &serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "user"},
            "spec": {"nodeName": ns.cluster_name("nowhere"),
                     "containers": [{"name": "c", "image": "busybox:1.36"}],
                     "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "pre"}}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    // Volume protection: "huge" is bound to "pre", so its deletion waits for the claim.
    volumes
        .delete(&huge, &DeleteParams::default())
        .await
        .unwrap();
    claims
        .delete("pre", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pre = claims.get("pre").await.expect("a claim in use stays");
    assert!(pre.metadata.deletion_timestamp.is_some());
    let h = volumes.get(&huge).await.expect("a bound volume stays");
    assert!(h.metadata.deletion_timestamp.is_some());
    pods.delete("user", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    gone(&pods, "user").await;
    gone(&claims, "pre").await;
    gone(&volumes, &huge).await;

    // Retain: the claim goes, the volume is Released and keeps its claimRef.
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    gone(&claims, "data").await;
    let released = volume_phase(&volumes, &big, "Released").await;
    assert_eq!(
        released.spec.unwrap().claim_ref.unwrap().uid,
        data.metadata.uid,
        "a Released volume keeps the claim it had"
    );
    // Not bound, so not protected: deleting it removes it.
    volumes
        .delete(&big, &DeleteParams::default())
        .await
        .unwrap();
    gone(&volumes, &big).await;
    delete_test_volumes(&ns).await;
}

/// A local volume on the agent's node, written by one pod and read by the next.
#[tokio::test]
async fn a_claim_keeps_its_data_across_pods() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("pv-data").await;
    let _controllers = ControllerProcess::start(&ns.name, &[STORAGE_CONTROLLERS]);
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let disk = local_volume_and_claim(&ns, &node).await;

    let pod = |name: &str, script: &str, read_only: bool| -> Pod {
        serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data", "readOnly": read_only}}]}}))
        .unwrap()
    };
    let succeeded = |name: &'static str| {
        let pods = pods.clone();
        async move { wait_pod_succeeded(&pods, name, Duration::from_secs(90), String::new).await }
    };
    pods.create(
        &pp,
        &pod("writer", "echo kept-across-pods > /data/file", false),
    )
    .await
    .unwrap();
    succeeded("writer").await;
    assert_eq!(
        std::fs::read_to_string(disk.join("file")).unwrap(),
        "kept-across-pods\n",
        "the pod wrote to the node's disk through the claim"
    );
    pods.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    gone(&pods, "writer").await;

    let script = "test \"$(cat /data/file)\" = kept-across-pods && ! touch /data/other 2>/dev/null";
    pods.create(&pp, &pod("reader", script, true))
        .await
        .unwrap();
    let reader = succeeded("reader").await;
    assert!(
        !disk.join("other").exists(),
        "a read-only claim is mounted read-only"
    );
    let uid = reader.metadata.uid.clone().unwrap();
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    assert!(
        !agent.root.join("pods").join(&uid).exists(),
        "the pod's directory went with the pod"
    );

    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    gone(&claims, "data").await;
    volume_phase(&volumes, &ns.cluster_name("disk"), "Released").await;
    assert_eq!(
        std::fs::read_to_string(disk.join("file")).unwrap(),
        "kept-across-pods\n",
        "Retain keeps the data"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(disk.to_str().unwrap()),
        "no mount of the volume left"
    );
    delete_test_volumes(&ns).await;
    std::fs::remove_dir_all(&disk).unwrap();
}

/// The agent killed with -9 while a pod with a claim runs, and restarted: the pod runs
/// again on the same data, the volume mounted once (not stacked), and nothing is left once
/// the pod goes.
#[tokio::test]
async fn an_agent_restart_keeps_a_claims_mount() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("pv-restart").await;
    let _controllers = ControllerProcess::start(&ns.name, &[STORAGE_CONTROLLERS]);
    let mut agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let disk = local_volume_and_claim(&ns, &node).await;
    let script = "if [ -e /data/marker ]; then echo marker found; else echo first run; touch /data/marker; fi; sleep 3600";
    let p: Pod = serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "stays"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
    .unwrap();
    let uid = pods.create(&pp, &p).await.unwrap().metadata.uid.unwrap();
    let log = |agent: &AgentProcess, instance: u32| {
        agent.container_log(&ns.name, "stays", &uid, "c", instance)
    };
    wait_until("the first run", T, || async {
        let out = log(&agent, 0);
        if out.contains("first run") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    assert!(disk.join("marker").exists(), "written through the claim");
    let mount_point = agent
        .root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~local-volume")
        .join(ns.cluster_name("disk"));
    let mounts_of = |path: &std::path::Path| {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let p = path.to_str().unwrap().to_string();
        info.lines()
            .filter(|l| l.split(' ').nth(4) == Some(p.as_str()))
            .count()
    };
    assert_eq!(
        mounts_of(&mount_point),
        1,
        "the claim's volume mounted once"
    );

    agent.kill_and_restart();
    wait_until("the pod running again on its data", T, || async {
        let out = log(&agent, 1);
        if out.contains("marker found") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    assert_eq!(
        mounts_of(&mount_point),
        1,
        "after the restart the volume is still mounted, once"
    );

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    assert_eq!(mounts_of(&mount_point), 0);
    assert!(disk.join("marker").exists(), "the data stays");
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    gone(&claims, "data").await;
    delete_test_volumes(&ns).await;
    std::fs::remove_dir_all(&disk).unwrap();
}

/// Recycle: a released hostPath volume is scrubbed by a recycler pod the PV binder runs
/// (scheduled onto the volume's node, run by the real agent), then Available again and
/// bound by the next claim; the pod is gone afterwards.
#[tokio::test]
async fn a_recycled_volume_is_scrubbed_and_available_again() {
    if cannot_run_containers() {
        return;
    }
    // The recycler pod mounts a hostPath: Pod Security's privileged level.
    let ns = TestNamespace::privileged("pv-recycle").await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection,scheduler",
        ],
    );
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    agent.wait_node_ready(&ns.client, T).await;
    let node = agent.node_name.clone();
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let events_api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let dir = std::env::temp_dir().join(format!("rekube-e2e-recycle-{}", ns.name));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("old-data"), b"x").unwrap();
    std::fs::write(dir.join("sub/deeper"), b"y").unwrap();
    let source = json!({
        "hostPath": {"path": dir.to_str().unwrap()},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
    });
    volumes
        .create(&pp, &volume(&ns, "scratch", "1Gi", "Recycle", source))
        .await
        .unwrap();
    let pv = ns.cluster_name("scratch");
    claims
        .create(&pp, &claim(&ns, "first", "1Gi", json!({})))
        .await
        .unwrap();
    claim_bound(&claims, "first").await;
    claims
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    gone(&claims, "first").await;

    let v = volume_phase(&volumes, &pv, "Available").await;
    assert_eq!(
        v.spec.unwrap().claim_ref,
        None,
        "a recycled volume is unbound"
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "scrubbed: {left:?}");
    let notes = event_notes(&events_api, None, &pv, "VolumeRecycled").await;
    let cluster_events: Api<Event> = Api::all(ns.client.clone());
    let cluster_notes = event_notes(&cluster_events, None, &pv, "VolumeRecycled").await;
    assert!(
        notes
            .iter()
            .chain(&cluster_notes)
            .any(|n| n == "Volume recycled"),
        "the VolumeRecycled event: {notes:?} {cluster_notes:?}"
    );
    wait_until("the recycler pod gone", T, || async {
        match pods.get_opt(&format!("recycler-for-{pv}")).await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|p| p.map(|p| p.status)))),
        }
    })
    .await;

    // Available again: the next claim gets it.
    claims
        .create(&pp, &claim(&ns, "second", "1Gi", json!({})))
        .await
        .unwrap();
    let second = claim_bound(&claims, "second").await;
    assert_eq!(
        second.spec.unwrap().volume_name.as_deref(),
        Some(pv.as_str())
    );
    claims
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();
    gone(&claims, "second").await;
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    delete_test_volumes(&ns).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
