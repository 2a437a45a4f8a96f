//! Pod volumes on a real `rekube-node-agent run` (issue 13, as root): emptyDir on disk
//! and in memory, hostPath with its type checks, configMap and secret (items, modes,
//! optional, the secret on tmpfs, an update reaching the running pod), downwardAPI
//! (labels updated live), subPath (and its escapes refused), read-only mounts; failed
//! mounts as upstream's FailedMount events with the pod waiting; after deletion no mount
//! and no pod directory left, the hostPath's files kept.
//!
//! Skipped (with a message) when not root or without Debian's busybox-static.
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rekube_crds::Pod;
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers};
use rekube_e2e::storage::event_notes;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

fn pod(name: &str, node: &str, spec: Value) -> Pod {
    let mut base = json!({"nodeName": node, "terminationGracePeriodSeconds": 1});
    base.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "vol", "tier": "one"}},
        "spec": base,
    }))
    .unwrap()
}

fn container(name: &str, script: &str, mounts: Value) -> Value {
    json!({"name": name, "image": "busybox:1.36", "imagePullPolicy": "Never",
        "command": ["sh", "-c", script], "volumeMounts": mounts,
        "resources": {"limits": {"memory": "64Mi"}}})
}

/// The log of the pod's container (first instance), or "".
fn log(agent: &AgentProcess, p: &Pod, container: &str) -> String {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let uid = p.metadata.uid.clone().unwrap_or_default();
    agent.container_log(&ns, &name, &uid, container, 0)
}

async fn running(pods: &Api<Pod>, name: &str) -> Pod {
    wait_until(&format!("pod {name} running"), T, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => Ok(p),
            other => Err(format!("{other:?} {:?}", p.status)),
        }
    })
    .await
}

#[tokio::test]
async fn volumes_are_set_up_mounted_updated_and_torn_down() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::privileged("pod-volumes").await;
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    config_maps
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "conf"},
                "data": {"a": "first", "b": "bee"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "sec"},
                "stringData": {"password": "s3cret"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let host_dir = std::env::temp_dir().join(format!("rekube-e2e-hostpath-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&host_dir);

    let script = r#"
set -e
echo "conf-a=$(cat /conf/dir/a.txt)"
echo "conf-a-mode=$(stat -L -c %a /conf/dir/a.txt)"
echo "conf-keys=$(ls /conf-all | tr '\n' ,)"
echo "secret=$(cat /sec/password)"
echo "secret-fs=$(awk '$2 == "/sec" {print $3}' /proc/mounts)"
echo "mem-fs=$(awk '$2 == "/mem" {print $3}' /proc/mounts)"
echo "scratch-fs-is-tmpfs=$(awk '$2 == "/scratch" && $3 == "tmpfs" {print "yes"}' /proc/mounts)"
echo "name=$(cat /info/name)"
echo "mem-limit=$(cat /info/mem)"
echo hi > /scratch/x && echo "scratch=$(cat /scratch/x)"
echo from-pod > /host/from-pod
echo "sub=$(cat /sub/hello)"
echo "proj=$(cat /proj/b.txt)/$(cat /proj/password)/$(cat /proj/ns)"
if touch /conf/nope 2>/dev/null; then echo conf=writable; else echo conf=read-only; fi
if touch /ro/nope 2>/dev/null; then echo ro=writable; else echo ro=read-only; fi
echo ready
while true; do echo "live a=$(cat /conf/dir/a.txt) labels=$(cat /info/labels | tr '\n' ' ')"; sleep 1; done
"#;
    let spec = json!({
        "initContainers": [container("init", "mkdir -p /scratch/data && echo inside > /scratch/data/hello",
            json!([{"name": "scratch", "mountPath": "/scratch"}]))],
        "containers": [container("main", script, json!([
            {"name": "conf", "mountPath": "/conf"},
            {"name": "conf-all", "mountPath": "/conf-all"},
            {"name": "sec", "mountPath": "/sec"},
            {"name": "mem", "mountPath": "/mem"},
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "scratch", "mountPath": "/sub", "subPath": "data"},
            {"name": "scratch", "mountPath": "/ro", "readOnly": true},
            {"name": "host", "mountPath": "/host"},
            {"name": "info", "mountPath": "/info"},
            {"name": "proj", "mountPath": "/proj"},
        ]))],
        "volumes": [
            {"name": "conf", "configMap": {"name": "conf", "items": [{"key": "a", "path": "dir/a.txt", "mode": 0o600}]}},
            {"name": "conf-all", "configMap": {"name": "conf"}},
            {"name": "sec", "secret": {"secretName": "sec"}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": host_dir.to_str().unwrap(), "type": "DirectoryOrCreate"}},
            {"name": "proj", "projected": {"sources": [
                {"configMap": {"name": "conf", "items": [{"key": "b", "path": "b.txt"}]}},
                {"secret": {"name": "sec"}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory"}},
            ]}},
        ],
    });
    pods.create(&pp, &pod("vols", &node, spec)).await.unwrap();
    let p = running(&pods, "vols").await;
    let out = wait_until("the pod's report", T, || async {
        let out = log(&agent, &p, "main");
        if out.contains("ready") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    for want in [
        "conf-a=first",
        "conf-a-mode=600",
        "conf-keys=a,b,",
        "secret=s3cret",
        "secret-fs=tmpfs",
        "mem-fs=tmpfs",
        "scratch=hi",
        "name=vols",
        &format!("mem-limit={}", 64 << 20),
        "sub=inside",
        &format!("proj=bee/s3cret/{}", ns.name),
        "conf=read-only",
        "ro=read-only",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing from the pod's report:\n{out}"
        );
    }
    assert!(
        !out.contains("scratch-fs-is-tmpfs=yes"),
        "a disk emptyDir is not tmpfs:\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("from-pod"))
            .unwrap()
            .trim(),
        "from-pod",
        "the hostPath directory was made (DirectoryOrCreate) and is the node's"
    );

    // A ConfigMap change and a label change reach the running pod (its volumes are set up
    // again at each of its syncs).
    config_maps
        .patch(
            "conf",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "second"}})),
        )
        .await
        .unwrap();
    pods.patch(
        "vols",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "two"}}})),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    wait_until(
        "the update seen inside the pod",
        Duration::from_secs(70),
        || async {
            let out = log(&agent, &p, "main");
            let last = out
                .lines()
                .rev()
                .find(|l| l.contains("live "))
                .unwrap_or("")
                .to_string();
            if last.contains("a=second") && last.contains("tier=\"two\"") {
                Ok(())
            } else {
                Err(last)
            }
        },
    )
    .await;
    eprintln!(
        "configMap and label updates seen in the pod after {:?}",
        started.elapsed()
    );

    // Deleted: the volumes go (tmpfs unmounted, the pod's directory removed); the
    // hostPath's files stay on the node.
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    assert!(
        host_dir.join("from-pod").exists(),
        "hostPath content is the node's: kept"
    );
    let _ = std::fs::remove_dir_all(&host_dir);
}

#[tokio::test]
async fn failed_mounts_and_sub_path_escapes() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::privileged("pod-volumes-bad").await;
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let events_api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let missing = std::env::temp_dir().join(format!("rekube-e2e-missing-{}", std::process::id()));
    let _ = std::fs::remove_file(&missing);

    // hostPath of type File on a missing path: FailedMount with upstream's message, the
    // pod waits; once the file exists the pod runs.
    pods.create(
        &pp,
        &pod("hostfile", &node, json!({
            "containers": [container("c", "cat /f; sleep 3600", json!([{"name": "f", "mountPath": "/f"}]))],
            "volumes": [{"name": "f", "hostPath": {"path": missing.to_str().unwrap(), "type": "File"}}],
        })),
    )
    .await
    .unwrap();
    // A configMap that does not exist (not optional), and one that is optional.
    pods.create(
        &pp,
        &pod("nocm", &node, json!({
            "containers": [container("c", "sleep 3600", json!([{"name": "cm", "mountPath": "/cm"}]))],
            "volumes": [{"name": "cm", "configMap": {"name": "nope"}}],
        })),
    )
    .await
    .unwrap();
    pods.create(
        &pp,
        &pod("optcm", &node, json!({
            "containers": [container("c", "ls -A /cm | wc -l; sleep 3600", json!([{"name": "cm", "mountPath": "/cm"}]))],
            "volumes": [{"name": "cm", "configMap": {"name": "nope", "optional": true}}],
        })),
    )
    .await
    .unwrap();
    let note = wait_until("hostfile's FailedMount", T, || async {
        event_notes(&events_api, None, "hostfile", "FailedMount")
            .await
            .into_iter()
            .next()
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert_eq!(
        note,
        format!(
            "MountVolume.SetUp failed for volume \"f\" : hostPath type check failed: {} is not a file",
            missing.display()
        )
    );
    let note = wait_until("nocm's FailedMount", T, || async {
        event_notes(&events_api, None, "nocm", "FailedMount")
            .await
            .into_iter()
            .next()
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert_eq!(
        note,
        "MountVolume.SetUp failed for volume \"cm\" : configmap \"nope\" not found"
    );
    for name in ["hostfile", "nocm"] {
        let p = pods.get(name).await.unwrap();
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        assert_eq!(
            phase.as_deref(),
            Some("Pending"),
            "{name} waits for its volume"
        );
    }
    running(&pods, "optcm").await;
    std::fs::write(&missing, "now here\n").unwrap();
    let p = running(&pods, "hostfile").await;
    wait_until("hostfile reads its file", T, || async {
        let out = log(&agent, &p, "c");
        if out.contains("now here") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;

    // subPath through a symlink the pod planted: refused (CVE-2017-1002101); the same
    // volume through a plain subPath works.
    pods.create(
        &pp,
        &pod("escape", &node, json!({
            "initContainers": [container("plant", "mkdir -p /v/ok && echo fine > /v/ok/f && ln -s /etc /v/evil && ln -s ../../../../../../.. /v/up",
                json!([{"name": "v", "mountPath": "/v"}]))],
            "containers": [
                container("good", "cat /ok/f; sleep 3600", json!([{"name": "v", "mountPath": "/ok", "subPath": "ok"}])),
                container("evil", "ls /x; sleep 3600", json!([{"name": "v", "mountPath": "/x", "subPath": "evil"}])),
                container("up", "ls /x; sleep 3600", json!([{"name": "v", "mountPath": "/x", "subPath": "up"}])),
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
        })),
    )
    .await
    .unwrap();
    let p = wait_until("escape's containers decided", T, || async {
        let p = pods.get("escape").await.map_err(|e| e.to_string())?;
        let statuses = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        let waiting = |n: &str| {
            statuses
                .iter()
                .find(|s| s.name == n)
                .and_then(|s| s.state.as_ref()?.waiting.clone())
        };
        let good_running = statuses
            .iter()
            .any(|s| s.name == "good" && s.state.as_ref().is_some_and(|st| st.running.is_some()));
        match (good_running, waiting("evil"), waiting("up")) {
            (true, Some(e), Some(u))
                if e.reason.as_deref() == Some("CreateContainerConfigError")
                    && u.reason.as_deref() == Some("CreateContainerConfigError") =>
            {
                Ok((
                    p.clone(),
                    e.message.unwrap_or_default(),
                    u.message.unwrap_or_default(),
                ))
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        p.1,
        "failed to prepare subPath for volumeMount \"v\" of container \"evil\""
    );
    assert_eq!(
        p.2,
        "failed to prepare subPath for volumeMount \"v\" of container \"up\""
    );
    wait_until("good reads through its subPath", T, || async {
        let out = log(&agent, &p.0, "good");
        if out.contains("fine") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    let _ = std::fs::remove_file(&missing);
}

/// An emptyDir filled past its sizeLimit: the pod is evicted (upstream's eviction
/// manager: Failed, reason Evicted, its message, an Evicted event) and its volume goes
/// from the node while the pod object stays.
#[tokio::test]
async fn an_empty_dir_over_its_size_limit_evicts_the_pod() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("pod-volumes-evict").await;
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let events_api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &pod(
            "fill",
            &node,
            json!({
                "containers": [container("c", "dd if=/dev/zero of=/data/big bs=1M count=3 && echo filled && sleep 3600",
                    json!([{"name": "data", "mountPath": "/data"}]))],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Mi"}}],
            }),
        ),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let p = wait_until("the pod evicted", T, || async {
        let p = pods.get("fill").await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Failed") => Ok(p),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("evicted {:?} after creation", started.elapsed());
    let status = p.status.clone().unwrap();
    let message = "Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". ";
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert_eq!(status.message.as_deref(), Some(message));
    let notes = event_notes(&events_api, None, "fill", "Evicted").await;
    assert_eq!(notes, [message]);
    // Its volume torn down while the pod object stays (the pod's directory, now without
    // volumes, goes with the pod, as upstream's cleanupOrphanedPodDirs keeps a known pod's).
    let dir = agent
        .root
        .join("pods")
        .join(p.metadata.uid.clone().unwrap())
        .join("volumes/kubernetes.io~empty-dir/data");
    wait_until("the evicted pod's volume gone", T, || async {
        if dir.exists() {
            Err(format!("{} still there", dir.display()))
        } else {
            Ok(())
        }
    })
    .await;
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
}

/// The agent killed with -9 while pods with volumes run, and one of them deleted while it
/// is down: after the restart the remaining pod runs again with its emptyDir's data (no
/// volume lost) and its memory-backed emptyDir, unmounted meanwhile as a reboot would, a
/// tmpfs again in its restarted container (the reconstructed volume set up again; that it
/// is not handed to a container before is the unit test
/// `a_reconstructed_volume_is_not_set_up_until_mounted_again`),
/// and the deleted pod's volumes (a tmpfs and a configMap) are gone from the node (no
/// mount leaked).
#[tokio::test]
async fn an_agent_killed_and_restarted_loses_and_leaks_no_volume() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("pod-volumes-restart").await;
    let mut agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "conf"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let script = "if [ -e /data/marker ]; then echo marker found; else echo first run; touch /data/marker; fi; \
        grep -q ' /mem tmpfs ' /proc/mounts && echo mem is tmpfs; sleep 3600";
    pods.create(
        &pp,
        &pod("stays", &node, json!({
            "containers": [container("c", script, json!([
                {"name": "data", "mountPath": "/data"}, {"name": "mem", "mountPath": "/mem"}]))],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "mem", "emptyDir": {"medium": "Memory"}}],
        })),
    )
    .await
    .unwrap();
    pods.create(
        &pp,
        &pod("goes", &node, json!({
            "containers": [container("c", "sleep 3600", json!([
                {"name": "mem", "mountPath": "/mem"}, {"name": "conf", "mountPath": "/conf"}]))],
            "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory"}},
                        {"name": "conf", "configMap": {"name": "conf"}}],
        })),
    )
    .await
    .unwrap();
    let stays = running(&pods, "stays").await;
    let goes = running(&pods, "goes").await;
    wait_until("stays' first run", T, || async {
        let out = log(&agent, &stays, "c");
        if out.contains("first run") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    let goes_dir = agent
        .root
        .join("pods")
        .join(goes.metadata.uid.clone().unwrap());
    assert!(goes_dir.exists(), "goes' volumes are on the node");

    // Killed (-9: nothing cleaned up); "goes" deleted while it is down, its finalizer
    // released by hand, so that the restarted agent never sees the object.
    agent.kill();
    pods.patch(
        "goes",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    pods.delete("goes", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_until("goes gone from the API", T, || async {
        match pods.get_opt("goes").await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|p| p.map(|p| p.metadata.finalizers))
            )),
        }
    })
    .await;
    // As a reboot would: stays' memory-backed emptyDir is no longer mounted (its directory
    // and ready marker are on the disk). The restarted agent reconstructs the volume as an
    // uncertain mount and mounts the tmpfs again for the restarted container.
    let uid = stays.metadata.uid.clone().unwrap();
    let mem = agent
        .root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/mem");
    let umount = std::process::Command::new("umount")
        .arg(&mem)
        .status()
        .unwrap();
    assert!(umount.success(), "umount {}", mem.display());
    agent.kill_and_restart();

    wait_until(
        "stays running again with its emptyDir's data and its tmpfs",
        T,
        || async {
            let out = agent.container_log(&ns.name, "stays", &uid, "c", 1);
            if out.contains("marker found") && out.contains("mem is tmpfs") {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    wait_until("goes' volumes removed from the node", T, || async {
        if goes_dir.exists() {
            Err(format!("{} still there", goes_dir.display()))
        } else {
            Ok(())
        }
    })
    .await;
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
}
