//! The real pod sync (`agent::sync_pod::RealSyncer`) as root against the real apiserver:
//! pods bound to a test node name are run by PodWorkers + RealSyncer in this process, with
//! their image pulled from a docker-registry on loopback (the harness in `support/`).
//! A pod running `echo hello; sleep 1` reaches Succeeded with its output in the CRI log,
//! and a deleted running pod is stopped, cleaned up (no mounts, cgroups, processes left)
//! and released (the agent's finalizer removed).
//!
//! A second test drives the node-wide container GC pass under
//! `--maximum-dead-containers 1` over two crash-looping pods.
//!
//! Without root, busybox, docker-registry or a cluster (KUBECONFIG) the tests fail saying
//! which is missing, unless `REKUBE_SKIP_PRIVILEGED=1`.
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::Pod;
use rekube_node_agent::agent::image_gc::collect_once;
use rekube_node_agent::agent::pod_workers::{PodWorkers, watch_pods};
use rekube_node_agent::agent::sync_pod::{RealSyncer, SyncerConfig};
use rekube_node_agent::image::gc::{GcError, GcPolicy};
use rekube_node_agent::image::manager::{ImageManager, RealClock};
use rekube_node_agent::image::pull::pull_image;
use rekube_node_agent::image::{Reference, Store};
use rekube_node_agent::kubelet::container_gc::ContainerGcPolicy;
use rekube_node_agent::runtime::leaks::{LeakScope, Snapshot, assert_no_leaks};
use rekube_node_agent::runtime::{Runtime, RuntimeConfig};
use serde_json::json;
use support::*;

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() > timeout => panic!("timed out waiting for {what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The pod sync tests' prerequisites: root, docker-registry and busybox, and a cluster.
/// `None` once `missing_prerequisite` has said which is missing (it panics unless
/// `REKUBE_SKIP_PRIVILEGED=1`).
async fn prerequisites() -> Option<kube::Client> {
    if !nix::unistd::geteuid().is_root() {
        rekube_crds::testing::missing_prerequisite("the pod sync tests need root");
        return None;
    }
    if !std::path::Path::new(REGISTRY_BIN).exists() || !std::path::Path::new(BUSYBOX).exists() {
        rekube_crds::testing::missing_prerequisite(
            "docker-registry or busybox is not installed (e2e/scripts/bootstrap.sh installs them)",
        );
        return None;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    match kube::Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) => {
            rekube_crds::testing::missing_prerequisite(&format!("no cluster: {e}"));
            None
        }
    }
}

/// A docker-registry on loopback holding busybox:1.36, and that image's reference.
async fn busybox_registry() -> (Registry, String) {
    let reg = Registry::start();
    reg.push_image(
        "busybox",
        "1.36",
        busybox(Layering::Gzip),
        ManifestKind::Oci,
    )
    .await;
    let image = format!("{}/busybox:1.36", reg.domain());
    (reg, image)
}

/// What `run` wires around a syncer: pod workers whose resyncs the syncer can ask for, and
/// the watch of the pods bound to `node`; plus the test's namespace `ns_name`.
async fn start_node(
    client: &kube::Client,
    syncer: &Arc<RealSyncer>,
    node: &str,
    ns_name: &str,
) -> (
    Arc<PodWorkers<RealSyncer>>,
    tokio::task::JoinHandle<()>,
    Api<Pod>,
) {
    let workers = PodWorkers::new(Arc::clone(syncer), Duration::from_secs(10));
    let weak = Arc::downgrade(&workers);
    syncer.set_resync(Arc::new(move |uid: &str| {
        if let Some(w) = weak.upgrade() {
            w.resync(uid)
        }
    }));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ns_name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let watcher = tokio::spawn({
        let (client, node, workers) = (client.clone(), node.to_string(), Arc::clone(&workers));
        async move { watch_pods(client, &node, workers).await }
    });
    (workers, watcher, Api::namespaced(client.clone(), ns_name))
}

/// The tests run one at a time: each checks that it leaves no child process, and the
/// other's registry is one.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pod(name: &str, node: &str, image: &str, script: &str, restart: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "nodeName": node, "restartPolicy": restart, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script]}]
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_to_completion_and_leave_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let Some(client) = prerequisites().await else {
        return;
    };
    let (reg, image) = busybox_registry().await;

    let dir = tempfile::Builder::new()
        .prefix("rekube-sync-pod-")
        .tempdir()
        .unwrap();
    let config = RuntimeConfig {
        state_dir: dir.path().join("state"),
        run_dir: dir.path().join("run"),
        cgroup_parent: format!("rekube-sync-test-{}", std::process::id()),
    };
    let runtime = Runtime::new(config).unwrap();
    let scope = || LeakScope {
        dirs: vec![dir.path().join("state"), dir.path().join("run")],
        cgroups: runtime.cgroups().as_ref(),
    };
    let before = Snapshot::take(&scope());
    let images = ImageManager::new(
        Store::open(dir.path().join("images")).unwrap(),
        Arc::new(RealClock),
    );
    let logs = dir.path().join("logs");
    let node = format!("sync-pod-node-{}", std::process::id());
    let syncer = Arc::new(RealSyncer::new(
        client.clone(),
        runtime.clone(),
        images,
        SyncerConfig::new(vec!["127.0.0.1".into()], logs.clone()),
        rekube_node_agent::agent::events::recorder(client.clone(), &node),
    ));
    let ns_name = format!("sync-pod-{}", std::process::id());
    let (workers, watcher, pods) = start_node(&client, &syncer, &node, &ns_name).await;
    let t = Duration::from_secs(60);

    // A pod runs to completion; its output is in the CRI log.
    pods.create(
        &PostParams::default(),
        &pod("hello", &node, &image, "echo hello; sleep 1", "Never"),
    )
    .await
    .unwrap();
    let done = wait_for("the pod Succeeded", t, || async {
        let p = pods.get("hello").await.map_err(|e| e.to_string())?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        (phase.as_deref() == Some("Succeeded"))
            .then(|| p.clone())
            .ok_or(format!("{:?}", p.status))
    })
    .await;
    assert!(
        done.finalizers()
            .iter()
            .any(|f| f == "rekube.io/node-agent"),
        "{:?}",
        done.metadata.finalizers
    );
    let cs = &done
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let terminated = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert!(cs.container_id.as_deref().unwrap().starts_with("rekube://"));
    let uid = done.metadata.uid.clone().unwrap();
    let log = logs
        .join(format!("{ns_name}_hello_{uid}"))
        .join("c")
        .join("0.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.ends_with(" stdout F hello")),
        "{}: {text:?}",
        log.display()
    );

    // The kubelet's events, about the container, from this node's kubelet.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &ns_name);
    wait_for("the hello pod's events", t, || async {
        let got = pod_events(&events, "hello").await?;
        let notes: Vec<(&str, &str)> = got
            .iter()
            .map(|e| {
                (
                    e.reason.as_deref().unwrap_or(""),
                    e.note.as_deref().unwrap_or(""),
                )
            })
            .collect();
        let pulled = notes
            .iter()
            .any(|(r, n)| *r == "Pulled" && n.contains(&image));
        let created = notes.contains(&("Created", "Created container: c"));
        let started = notes.contains(&("Started", "Started container c"));
        let from_the_kubelet = got.iter().all(|e| {
            e.regarding.as_ref().and_then(|r| r.field_path.as_deref()) == Some("spec.containers{c}")
                && e.reporting_controller.as_deref() == Some("kubelet")
                && e.reporting_instance.as_deref() == Some(node.as_str())
        });
        (pulled && created && started && from_the_kubelet)
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;

    // Image GC (one pass of the agent's loop): the finished pod's container still holds
    // busybox, so only the unused image goes. Thresholds of 1 % and 0 % make every unused
    // image a candidate; 0 % cannot be reached, which the pass reports.
    reg.push_image("tiny", "1", &tiny_image(b"unused"), ManifestKind::Oci)
        .await;
    let store = syncer.image_store();
    let tiny_ref = Reference::parse(&format!("{}/tiny:1", reg.domain())).unwrap();
    let tiny = pull_image(store, &tiny_ref, &[]).await.unwrap();
    let busybox_id = store.find(&image).unwrap().unwrap().id;
    let in_use = syncer.images_in_use().await;
    assert_eq!(in_use, HashSet::from([busybox_id]));
    // GC spares images used in the second it starts (upstream compares at 1 s too).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let policy = GcPolicy {
        high_threshold_percent: 1,
        low_threshold_percent: 0,
        min_age: Duration::ZERO,
    };
    let err = collect_once(store, policy, in_use).await.unwrap_err();
    assert!(
        matches!(err, GcError::NotEnoughFreed { freed, .. } if freed > 0),
        "{err}"
    );
    assert!(store.find(&tiny.id.to_string()).unwrap().is_none());
    assert!(store.find(&image).unwrap().is_some());

    // A running pod, deleted: stopped, cleaned up and released.
    pods.create(
        &PostParams::default(),
        &pod("sleeper", &node, &image, "sleep 1000", "Always"),
    )
    .await
    .unwrap();
    let running = wait_for("the pod Running and Ready", t, || async {
        let p = pods.get("sleeper").await.map_err(|e| e.to_string())?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        (phase.as_deref() == Some("Running") && ready)
            .then_some(p.clone())
            .ok_or(format!("{:?}", p.status))
    })
    .await;
    // Syncs that change nothing write nothing: once the status has settled (no write
    // for a second), three more syncs leave the resourceVersion as it is.
    let mut running = running;
    for attempt in 0.. {
        assert!(
            attempt < 10,
            "the status keeps changing: {:#?}",
            running.status
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = pods.get("sleeper").await.unwrap();
        if now.resource_version() == running.resource_version() {
            break;
        }
        running = now;
    }
    for _ in 0..3 {
        workers.resync(&running.uid().unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = pods.get("sleeper").await.unwrap();
    assert_eq!(
        after.resource_version(),
        running.resource_version(),
        "a status write without a change: {:#?}\nthen {:#?}",
        running.status,
        after.status
    );
    for name in ["sleeper", "hello"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_for("the Killing event", t, || async {
        let got = pod_events(&events, "sleeper").await?;
        got.iter()
            .any(|e| {
                e.reason.as_deref() == Some("Killing")
                    && e.note.as_deref() == Some("Stopping container c")
            })
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    wait_for("the pods deleted", t, || async {
        let left = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    })
    .await;
    watcher.abort();
    // The workers finish their cleanup before the pods go; give the exit watchers a beat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(workers.is_empty());
    assert_no_leaks(&before, &scope());
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns_name, &DeleteParams::default())
        .await;
    let _ = runtime.cgroups().remove("");
}

/// The node-wide pass (the agent's every-minute container GC) with
/// `--maximum-dead-containers-per-container -1 --maximum-dead-containers 1`: the pod syncs
/// keep every dead instance of two crash-looping pods, then one pass leaves one dead
/// instance on the node (one per container first, then the oldest of those), removing the
/// others' state directories and log files; deleting the pods leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_wide_pass_keeps_maximum_dead_containers() {
    let _serial = SERIAL.lock().await;
    let Some(client) = prerequisites().await else {
        return;
    };
    let (_reg, image) = busybox_registry().await;
    let dir = tempfile::Builder::new()
        .prefix("rekube-container-gc-")
        .tempdir()
        .unwrap();
    let state = dir.path().join("state");
    let runtime = Runtime::new(RuntimeConfig {
        state_dir: state.clone(),
        run_dir: dir.path().join("run"),
        cgroup_parent: format!("rekube-gc-test-{}", std::process::id()),
    })
    .unwrap();
    let scope = || LeakScope {
        dirs: vec![dir.path().join("state"), dir.path().join("run")],
        cgroups: runtime.cgroups().as_ref(),
    };
    let before = Snapshot::take(&scope());
    let logs = dir.path().join("logs");
    let node = format!("container-gc-node-{}", std::process::id());
    let syncer = Arc::new(RealSyncer::new(
        client.clone(),
        runtime.clone(),
        ImageManager::new(
            Store::open(dir.path().join("images")).unwrap(),
            Arc::new(RealClock),
        ),
        SyncerConfig {
            container_gc: ContainerGcPolicy {
                min_age: Duration::ZERO,
                max_per_pod_container: -1,
                max_containers: 1,
            },
            crash_loop_max_container_restart_period: Duration::from_secs(1),
            ..SyncerConfig::new(vec!["127.0.0.1".into()], logs.clone())
        },
        rekube_node_agent::agent::events::recorder(client.clone(), &node),
    ));
    let ns_name = format!("container-gc-{}", std::process::id());
    let (workers, watcher, pods) = start_node(&client, &syncer, &node, &ns_name).await;
    for name in ["crash-a", "crash-b"] {
        pods.create(
            &PostParams::default(),
            &pod(name, &node, &image, "echo crashing; exit 1", "Always"),
        )
        .await
        .unwrap();
    }
    let instances = || std::fs::read_dir(&state).map_or(0, |d| d.count());
    let log_files = || {
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| std::fs::read_dir(d.path().join("c")).map_or(0, |f| f.count()))
            .sum::<usize>()
    };
    wait_for(
        "5 restarts of each pod",
        Duration::from_secs(120),
        || async {
            let mut counts = Vec::new();
            for name in ["crash-a", "crash-b"] {
                let p = pods.get(name).await.map_err(|e| e.to_string())?;
                counts.push(
                    p.status
                        .and_then(|s| s.container_statuses)
                        .and_then(|c| c.first().map(|c| c.restart_count))
                        .unwrap_or(0),
                );
            }
            counts
                .iter()
                .all(|n| *n >= 5)
                .then_some(())
                .ok_or(format!("{counts:?}"))
        },
    )
    .await;
    // The pod syncs collected nothing (no per-container limit).
    let (dirs, files) = (instances(), log_files());
    assert!(
        dirs >= 12 && files >= 12,
        "{dirs} state directories, {files} log files"
    );
    let report = syncer.garbage_collect_containers().await;
    let (after_dirs, after_files) = (instances(), log_files());
    eprintln!(
        "before the pass: {dirs} state directories, {files} log files; {report:?}; after: {after_dirs}, {after_files}"
    );
    // One dead instance kept on the node, the two newest instances (running, or started or
    // exited during the pass) beside it.
    assert!(report.containers >= dirs - 5, "{report:?} of {dirs}");
    assert!(
        after_dirs <= 5 && after_files <= 5,
        "{after_dirs} state directories, {after_files} log files left of {dirs}"
    );
    for name in ["crash-a", "crash-b"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_for("the pods deleted", Duration::from_secs(60), || async {
        let left = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    })
    .await;
    watcher.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(workers.is_empty());
    assert_no_leaks(&before, &scope());
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns_name, &DeleteParams::default())
        .await;
    let _ = runtime.cgroups().remove("");
}

/// The events about the pod `name`.
async fn pod_events(
    events: &Api<k8s_openapi::api::events::v1::Event>,
    name: &str,
) -> Result<Vec<k8s_openapi::api::events::v1::Event>, String> {
    Ok(events
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}
