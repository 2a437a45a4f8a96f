//! The scheduler against the real apiserver, with rekube Nodes made by the test: resource
//! fit under a burst, each filter and score, upstream's unschedulable message, retry when
//! the cluster changes, volume topology, and (with the node lifecycle and taint eviction
//! controllers) a lost node's pods replaced on a healthy node; `kubectl rekube drain`.
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use rekube_crds::{Node, PersistentVolumeClaim, Pod, ReplicaSet};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::kubelet::{self, KubeletHandle};
use rekube_e2e::nodes::{self, Heartbeat, NodeShape};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

struct Env {
    ns: TestNamespace,
    pods: Api<Pod>,
    controllers: ControllerProcess,
    /// Nodes whose kubelet is gone: the stand-in no longer reports their pods.
    dead: Arc<Mutex<HashSet<String>>>,
    _kubelet: KubeletHandle,
}

async fn env(prefix: &str, controllers: &[&str]) -> Env {
    env_in(TestNamespace::new(prefix).await, controllers).await
}

async fn env_in(ns: TestNamespace, controllers: &[&str]) -> Env {
    let controllers = ControllerProcess::start(&ns.name, controllers);
    let dead: Arc<Mutex<HashSet<String>>> = Arc::default();
    let d = Arc::clone(&dead);
    let ar = kube::api::ApiResource::erase::<Pod>(&());
    // The kubelet stand-in, not node agents: the nodes are the test's own (capacity,
    // labels, taints chosen per test, lost by stopping a heartbeat), which an agent's Node
    // cannot be. It runs bound pods only, as kubelets do, and not on dead nodes.
    let kubelet = kubelet::start_filtered(
        Api::namespaced_with(ns.client.clone(), &ns.name, &ar),
        kubelet::every_pod_ready(),
        Arc::new(move |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !d.lock().unwrap().contains(n))
        }),
    );
    Env {
        pods: Api::namespaced(ns.client.clone(), &ns.name),
        ns,
        controllers,
        dead,
        _kubelet: kubelet,
    }
}

fn pod(name: &str, cpu: &str, memory: &str, extra_spec: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox:1.36",
        "resources": {"requests": {"cpu": cpu, "memory": memory}}}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}}, "spec": spec
    }))
    .unwrap()
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

fn pod_scheduled(p: &Pod) -> Option<(String, Option<String>, Option<String>)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

impl Env {
    async fn create(&self, p: &Pod) {
        self.pods.create(&PostParams::default(), p).await.unwrap();
    }

    async fn wait_bound(&self, name: &str) -> String {
        wait_until(&format!("pod {name} bound"), T, || async {
            let p = self.pods.get(name).await.map_err(|e| e.to_string())?;
            node_of(&p)
                .ok_or_else(|| format!("{:?}\n{}", pod_scheduled(&p), self.controllers.logs()))
        })
        .await
    }

    /// Waits for the pod's PodScheduled False condition and returns its message.
    async fn wait_unschedulable(&self, name: &str) -> String {
        wait_until(&format!("pod {name} unschedulable"), T, || async {
            let p = self.pods.get(name).await.map_err(|e| e.to_string())?;
            match pod_scheduled(&p) {
                Some((s, Some(r), Some(m))) if s == "False" && r == "Unschedulable" => Ok(m),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    fn node(&self, short: &str) -> String {
        self.ns.cluster_name(short)
    }
}

/// 200 pods at once onto 4 nodes with room for 160: never more than a node's allocatable
/// CPU, the 40 left over Unschedulable with upstream's message; a fifth node takes them
/// (the scheduler retries on the node event, not by polling).
#[tokio::test]
async fn a_burst_of_200_pods_never_overcommits_and_waits_for_room() {
    let e = env("sched-burst", &["--controllers", "scheduler"]).await;
    let shape = NodeShape {
        cpu: "2",
        memory: "64Gi",
        ..Default::default()
    };
    for n in ["n1", "n2", "n3", "n4"] {
        nodes::create_node(&e.ns, n, &shape).await;
    }
    let all: Vec<Pod> = (0..200)
        .map(|i| pod(&format!("p{i:03}"), "50m", "64Mi", json!({})))
        .collect();
    for chunk in all.chunks(50) {
        join_all(chunk.iter().map(|p| e.create(p))).await;
    }
    let (bound, pending) = wait_until("160 pods bound, 40 unschedulable", T, || async {
        let list = e.pods.list(&ListParams::default()).await.unwrap().items;
        let bound: Vec<&Pod> = list.iter().filter(|p| node_of(p).is_some()).collect();
        let unschedulable: Vec<&Pod> = list
            .iter()
            .filter(|p| pod_scheduled(p).is_some_and(|c| c.0 == "False"))
            .collect();
        if bound.len() == 160 && unschedulable.len() == 40 {
            Ok((
                bound.into_iter().cloned().collect::<Vec<_>>(),
                unschedulable.into_iter().cloned().collect::<Vec<_>>(),
            ))
        } else {
            Err(format!(
                "{} bound, {} unschedulable",
                bound.len(),
                unschedulable.len()
            ))
        }
    })
    .await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &bound {
        *per_node.entry(node_of(p).unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![40, 40, 40, 40],
        "2 cpu / 50m = 40 per node"
    );
    let (_, reason, message) = pod_scheduled(&pending[0]).unwrap();
    assert_eq!(reason.as_deref(), Some("Unschedulable"));
    assert!(
        message
            .as_deref()
            .unwrap()
            .starts_with("0/4 nodes are available: 4 Insufficient cpu."),
        "{message:?}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(e.ns.client.clone(), &e.ns.name);
    let name = pending[0].name_any();
    wait_until("a FailedScheduling event", T, || async {
        let list = events
            .list(&ListParams::default().fields(&format!("regarding.name={name}")))
            .await
            .unwrap();
        list.items
            .iter()
            .find(|ev| {
                ev.reason.as_deref() == Some("FailedScheduling")
                    && ev.type_.as_deref() == Some("Warning")
            })
            .map(|_| ())
            .ok_or_else(|| {
                format!(
                    "{:?}",
                    list.items
                        .iter()
                        .map(|e| e.reason.clone())
                        .collect::<Vec<_>>()
                )
            })
    })
    .await;

    nodes::create_node(&e.ns, "n5", &shape).await;
    let started = Instant::now();
    wait_until("the 40 waiting pods bound to the new node", T, || async {
        let list = e.pods.list(&ListParams::default()).await.unwrap().items;
        let on_n5 = list
            .iter()
            .filter(|p| node_of(p).as_deref() == Some(e.node("n5").as_str()))
            .count();
        if on_n5 == 40 {
            Ok(())
        } else {
            Err(format!("{on_n5} on n5"))
        }
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "moved by the node event, not the 5 min flush"
    );
    // PodScheduled True follows each binding (its own request, queued behind the
    // bindings at the client's rate limit).
    wait_until("every pod PodScheduled True", T, || async {
        let list = e.pods.list(&ListParams::default()).await.unwrap().items;
        let not_yet: Vec<String> = list
            .iter()
            .filter(|p| pod_scheduled(p).map(|c| c.0).as_deref() != Some("True"))
            .map(|p| p.name_any())
            .collect();
        if not_yet.is_empty() {
            Ok(())
        } else {
            Err(format!("{not_yet:?}"))
        }
    })
    .await;
}

/// Each filter keeps a pod off the nodes it rules out, and the message counts the reasons
/// as upstream does ("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had
/// untolerated taint {k: v}.").
#[tokio::test]
async fn filters_rule_out_nodes_with_upstreams_reasons() {
    // The hostPort pods need Pod Security's privileged level (rekube's default is baseline).
    let e = env_in(
        TestNamespace::privileged("sched-filters").await,
        &["--controllers", "scheduler"],
    )
    .await;
    let small = NodeShape {
        cpu: "1",
        memory: "2Gi",
        ..Default::default()
    };
    let tainted = NodeShape {
        taints: vec![json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"})],
        labels: [("disk".to_string(), "ssd".to_string())].into(),
        ..Default::default()
    };
    let zone_b = NodeShape {
        labels: [("zone".to_string(), "b".to_string())].into(),
        taints: vec![json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"})],
        ..Default::default()
    };
    nodes::create_node(&e.ns, "small", &small).await;
    nodes::create_node(&e.ns, "tainted", &tainted).await;
    nodes::create_node(&e.ns, "zone-b", &zone_b).await;

    // Too big for "small", and the others are tainted.
    e.create(&pod("big", "2", "1Gi", json!({}))).await;
    let m = e.wait_unschedulable("big").await;
    assert!(
        m.starts_with("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}."),
        "{m}"
    );

    // Tolerating the taint and selecting disk=ssd: only "tainted".
    let toleration =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    e.create(&pod(
        "ssd",
        "100m",
        "64Mi",
        json!({"nodeSelector": {"disk": "ssd"}, "tolerations": toleration}),
    ))
    .await;
    assert_eq!(e.wait_bound("ssd").await, e.node("tainted"));

    // Required node affinity zone In [b], tolerating: only "zone-b".
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}});
    e.create(&pod(
        "zoned",
        "100m",
        "64Mi",
        json!({"affinity": affinity, "tolerations": toleration}),
    ))
    .await;
    assert_eq!(e.wait_bound("zoned").await, e.node("zone-b"));

    // nodeSelector that no node has.
    e.create(&pod(
        "nowhere",
        "100m",
        "64Mi",
        json!({"nodeSelector": {"disk": "tape"}}),
    ))
    .await;
    let m = e.wait_unschedulable("nowhere").await;
    assert!(
        m.starts_with("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) had untolerated taint {dedicated: gpu}."),
        "{m}"
    );

    // hostPort: two pods on "small" cannot share port 8080.
    let port = json!([{"name": "c", "image": "busybox:1.36", "ports": [{"containerPort": 80, "hostPort": 8080}]}]);
    e.create(&pod("port-1", "100m", "64Mi", json!({"containers": port})))
        .await;
    assert_eq!(e.wait_bound("port-1").await, e.node("small"));
    e.create(&pod("port-2", "100m", "64Mi", json!({"containers": port})))
        .await;
    let m = e.wait_unschedulable("port-2").await;
    assert!(
        m.starts_with("0/3 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 2 node(s) had untolerated taint {dedicated: gpu}."),
        "{m}"
    );
}

/// Not-ready and cordoned nodes take no pods; uncordoning lets the waiting pod in.
#[tokio::test]
async fn not_ready_and_cordoned_nodes_are_skipped() {
    let e = env("sched-ready", &["--controllers", "scheduler"]).await;
    nodes::create_node(
        &e.ns,
        "down",
        &NodeShape {
            ready: false,
            ..Default::default()
        },
    )
    .await;
    // Cordoned when created: cordoned after, the scheduler's Node watch may deliver the
    // change after the pod's, and the pod is bound to the node it still sees open (a
    // race upstream's scheduler has too; `kubectl rekube cordon` is tested in
    // nodelifecycle.rs).
    let cordoned = nodes::create_node(
        &e.ns,
        "cordoned",
        &NodeShape {
            unschedulable: true,
            ..Default::default()
        },
    )
    .await;
    e.create(&pod("p", "100m", "64Mi", json!({}))).await;
    let m = e.wait_unschedulable("p").await;
    assert!(
        m.starts_with(
            "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
        ),
        "{m}"
    );
    rekube_e2e::kubectl_rekube(&["uncordon", &cordoned]);
    assert_eq!(e.wait_bound("p").await, cordoned);
}

/// Scores: the least allocated node wins; pods of one ReplicaSet spread over the nodes;
/// a preferred node affinity outweighs both.
#[tokio::test]
async fn scores_prefer_free_nodes_spread_owners_and_honour_preferences() {
    let e = env("sched-scores", &["--controllers", "scheduler,replicaset"]).await;
    let a = nodes::create_node(&e.ns, "a", &NodeShape::default()).await;
    let b = nodes::create_node(
        &e.ns,
        "b",
        &NodeShape {
            labels: [("tier".to_string(), "gold".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    // Fill "b": the next pod goes to "a".
    e.create(&pod("filler", "3", "6Gi", json!({"nodeName": b})))
        .await;
    e.create(&pod("light", "100m", "64Mi", json!({}))).await;
    assert_eq!(e.wait_bound("light").await, a, "least allocated");

    // A preferred affinity for tier=gold beats the free room of "a".
    let prefer = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}}]}});
    e.create(&pod("picky", "100m", "64Mi", json!({"affinity": prefer})))
        .await;
    assert_eq!(e.wait_bound("picky").await, b, "preferred node affinity");

    // A ReplicaSet of 4 tiny pods on two nodes: spread 2 and 2 despite the imbalance in
    // free CPU being small for such pods.
    let c = nodes::create_node(&e.ns, "c", &NodeShape::default()).await;
    let d = nodes::create_node(&e.ns, "d", &NodeShape::default()).await;
    let sel = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [c, d]}]}]}}});
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "ReplicaSet", "metadata": {"name": "spread"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "spread"}},
            "template": {"metadata": {"labels": {"app": "spread"}}, "spec": {"affinity": sel,
                "containers": [{"name": "c", "image": "busybox:1.36", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    }))
    .unwrap();
    Api::<ReplicaSet>::namespaced(e.ns.client.clone(), &e.ns.name)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let counts = wait_until("4 spread pods bound", T, || async {
        let list = e
            .pods
            .list(&ListParams::default().labels("app=spread"))
            .await
            .unwrap()
            .items;
        let nodes: Vec<String> = list.iter().filter_map(node_of).collect();
        if nodes.len() == 4 {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            nodes
                .into_iter()
                .for_each(|n| *m.entry(n).or_default() += 1);
            Ok(m)
        } else {
            Err(format!("{} bound", nodes.len()))
        }
    })
    .await;
    assert_eq!(counts, BTreeMap::from([(c, 2), (d, 2)]), "spread by owner");
}

/// Volume topology: a bound claim's PV node affinity decides the node; a
/// WaitForFirstConsumer claim is matched to a PV on the chosen node, which the scheduler
/// pre-binds and the PV binder binds; a claim to provision gets the chosen node in
/// volume.kubernetes.io/selected-node and is handed to its external provisioner.
#[tokio::test]
async fn volumes_pin_pods_to_their_nodes() {
    let e = env(
        "sched-volumes",
        &["--controllers", "scheduler,persistentvolume-binder"],
    )
    .await;
    let a = nodes::create_node(&e.ns, "a", &NodeShape::default()).await;
    let b = nodes::create_node(&e.ns, "b", &NodeShape::default()).await;
    let class = e.ns.cluster_name("local");
    e.ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"}))
        .await
        .unwrap();
    let on = |node: &str| {
        json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}})
    };
    e.ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume", "metadata": {"name": "pv-b"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "local": {"path": "/mnt/b"}, "nodeAffinity": on(&b)}}))
        .await
        .unwrap();
    let pv_b = e.ns.cluster_name("pv-b");
    e.ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class, "resources": {"requests": {"storage": "1Gi"}}}}))
        .await
        .unwrap();
    let claims = Api::<PersistentVolumeClaim>::namespaced(e.ns.client.clone(), &e.ns.name);
    let pending = claims.get("data").await.unwrap();
    assert_ne!(
        pending.status.and_then(|s| s.phase).as_deref(),
        Some("Bound"),
        "WaitForFirstConsumer: not bound before a pod uses it"
    );
    let vol = json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]);
    e.create(&pod("wffc", "100m", "64Mi", json!({"volumes": vol})))
        .await;
    assert_eq!(e.wait_bound("wffc").await, b, "only b has a PV that fits");
    let pvc = wait_until("claim data bound", Duration::from_secs(30), || async {
        let c = claims.get("data").await.map_err(|e| e.to_string())?;
        match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
        Some(pv_b.as_str()),
        "bound to the PV the scheduler chose"
    );
    assert_eq!(
        pvc.annotations().get("volume.kubernetes.io/selected-node"),
        None,
        "a matched PV is pre-bound, not provisioned for the node"
    );

    // To provision: the chosen node goes to the claim, the claim to its provisioner.
    let dynamic = e.ns.cluster_name("dynamic");
    e.ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass", "metadata": {"name": "dynamic"},
        "provisioner": "e2e.rekube.io/none", "volumeBindingMode": "WaitForFirstConsumer"}))
        .await
        .unwrap();
    e.ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "dyn"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": dynamic, "resources": {"requests": {"storage": "1Gi"}}}}))
        .await
        .unwrap();
    let vol = json!([{"name": "dyn", "persistentVolumeClaim": {"claimName": "dyn"}}]);
    e.create(&pod(
        "dyn",
        "100m",
        "64Mi",
        json!({"volumes": vol, "nodeSelector": {"kubernetes.io/hostname": a}}),
    ))
    .await;
    assert_eq!(e.wait_bound("dyn").await, a);
    wait_until(
        "claim dyn handed to its provisioner for node a",
        Duration::from_secs(30),
        || async {
            let c = claims.get("dyn").await.map_err(|e| e.to_string())?;
            let ann = c.annotations();
            let got = (
                ann.get("volume.kubernetes.io/selected-node").cloned(),
                ann.get("volume.kubernetes.io/storage-provisioner").cloned(),
            );
            if got == (Some(a.clone()), Some("e2e.rekube.io/none".to_string())) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;

    // A claim that does not exist: unschedulable with upstream's message.
    let missing = json!([{"name": "x", "persistentVolumeClaim": {"claimName": "missing"}}]);
    e.create(&pod(
        "no-claim",
        "100m",
        "64Mi",
        json!({"volumes": missing}),
    ))
    .await;
    let m = e.wait_unschedulable("no-claim").await;
    assert!(
        m.contains("persistentvolumeclaim \"missing\" not found"),
        "{m}"
    );
}

/// ReadWriteOncePod: a claim with that access mode is used by one pod at most; a second
/// pod stays unschedulable with upstream's reason until the first goes.
#[tokio::test]
async fn a_read_write_once_pod_claim_admits_one_pod() {
    let e = env(
        "sched-rwop",
        &["--controllers", "scheduler,persistentvolume-binder"],
    )
    .await;
    nodes::create_node(&e.ns, "a", &NodeShape::default()).await;
    nodes::create_node(&e.ns, "b", &NodeShape::default()).await;
    let class = format!("manual-{}", e.ns.name);
    e.ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume", "metadata": {"name": "solo"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOncePod"], "storageClassName": class,
            "hostPath": {"path": "/tmp/rekube-e2e-rwop"}}}))
        .await
        .unwrap();
    e.ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "solo"},
        "spec": {"accessModes": ["ReadWriteOncePod"], "storageClassName": class, "resources": {"requests": {"storage": "1Gi"}}}}))
        .await
        .unwrap();
    let claims = Api::<PersistentVolumeClaim>::namespaced(e.ns.client.clone(), &e.ns.name);
    wait_until("claim solo bound", T, || async {
        let c = claims.get("solo").await.map_err(|e| e.to_string())?;
        match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let vol = json!([{"name": "data", "persistentVolumeClaim": {"claimName": "solo"}}]);
    e.create(&pod("first", "100m", "64Mi", json!({"volumes": vol})))
        .await;
    e.wait_bound("first").await;
    e.create(&pod("second", "100m", "64Mi", json!({"volumes": vol})))
        .await;
    let m = e.wait_unschedulable("second").await;
    assert_eq!(
        m,
        "0/2 nodes are available: 2 node(s) unavailable due to PersistentVolumeClaim with \
         ReadWriteOncePod access mode already in-use by another pod."
    );
    e.pods
        .delete("first", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    e.wait_bound("second").await;
}

/// A node that stops heartbeating: after the grace period it is tainted unreachable, its
/// pods are evicted after their tolerationSeconds, and the ReplicaSet's replacements are
/// scheduled on the healthy node, within grace + toleration (plus the monitor period and
/// the apiserver round trips).
#[tokio::test]
async fn a_lost_nodes_pods_come_back_on_a_healthy_node() {
    let e = env(
        "sched-lost",
        &[
            "--controllers",
            "scheduler,replicaset,node-lifecycle,taint-eviction",
            "--node-monitor-period",
            "1s",
            "--node-monitor-grace-period",
            "4s",
            "--default-toleration-seconds",
            "3",
        ],
    )
    .await;
    let lost = nodes::create_node(&e.ns, "lost", &NodeShape::default()).await;
    let hb_lost = Heartbeat::start(
        e.ns.client.clone(),
        &e.ns.name,
        &lost,
        Duration::from_secs(1),
    );
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "c", "image": "busybox:1.36", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
    }))
    .unwrap();
    Api::<ReplicaSet>::namespaced(e.ns.client.clone(), &e.ns.name)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    wait_until("3 pods running on the soon-lost node", T, || async {
        let list = e.pods.list(&ListParams::default()).await.unwrap().items;
        let n = list
            .iter()
            .filter(|p| node_of(p).as_deref() == Some(lost.as_str()))
            .filter(|p| rekube_e2e_ready(p))
            .count();
        if n == 3 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let healthy = nodes::create_node(&e.ns, "healthy", &NodeShape::default()).await;
    let _hb = Heartbeat::start(
        e.ns.client.clone(),
        &e.ns.name,
        &healthy,
        Duration::from_secs(1),
    );

    drop(hb_lost);
    e.dead.lock().unwrap().insert(lost.clone());
    let started = Instant::now();
    wait_until(
        "3 replacement pods running on the healthy node",
        T,
        || async {
            let list = e.pods.list(&ListParams::default()).await.unwrap().items;
            let on_lost = list
                .iter()
                .filter(|p| node_of(p).as_deref() == Some(lost.as_str()))
                .count();
            let ready = list
                .iter()
                .filter(|p| node_of(p).as_deref() == Some(healthy.as_str()))
                .filter(|p| rekube_e2e_ready(p))
                .count();
            if on_lost == 0 && ready == 3 {
                Ok(())
            } else {
                Err(format!(
                    "{on_lost} left on the lost node, {ready} ready on the healthy one"
                ))
            }
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(6),
        "not before grace (4 s) + toleration (3 s): {took:?}"
    );
    assert!(
        took <= Duration::from_secs(4 + 3 + 15),
        "within grace + toleration: {took:?}"
    );
    let node: Node = Api::all(e.ns.client.clone()).get(&lost).await.unwrap();
    assert!(
        nodes::taints_of(&node).contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
    );
}

fn rekube_e2e_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `kubectl rekube drain`: the node is cordoned, its ReplicaSet pods go (their
/// replacements land elsewhere), and an unmanaged pod stops the drain unless --force.
#[tokio::test]
async fn drain_moves_pods_off_a_node() {
    let e = env(
        "sched-drain",
        &[
            "--controllers",
            "scheduler,replicaset,node-lifecycle",
            "--node-monitor-period",
            "1s",
        ],
    )
    .await;
    let a = nodes::create_node(&e.ns, "a", &NodeShape::default()).await;
    let _hb = Heartbeat::start(e.ns.client.clone(), &e.ns.name, &a, Duration::from_secs(1));
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}
    }))
    .unwrap();
    Api::<ReplicaSet>::namespaced(e.ns.client.clone(), &e.ns.name)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    e.create(&pod("bare", "10m", "16Mi", json!({}))).await;
    wait_until("3 pods on a", T, || async {
        let list = e.pods.list(&ListParams::default()).await.unwrap().items;
        let n = list
            .iter()
            .filter(|p| node_of(p).as_deref() == Some(a.as_str()))
            .count();
        if n == 3 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let b = nodes::create_node(&e.ns, "b", &NodeShape::default()).await;
    let _hb_b = Heartbeat::start(e.ns.client.clone(), &e.ns.name, &b, Duration::from_secs(1));

    let refused = std::process::Command::new(rekube_e2e::kubectl_rekube_binary())
        .args(["drain", &a])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot delete Pods that declare no controller (use --force to override): {}/bare",
            e.ns.name
        )),
        "{stderr}"
    );
    let out = rekube_e2e::kubectl_rekube(&["drain", &a, "--force", "--timeout", "60s"]);
    assert!(
        out.contains(&format!("node/{a} cordoned"))
            || out.contains(&format!("node/{a} already cordoned")),
        "{out}"
    );
    assert!(
        out.contains(&format!("evicting pod {}/bare", e.ns.name)),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(&format!("node/{a} drained")),
        "{out}"
    );
    wait_until("the ReplicaSet's pods replaced on b", T, || async {
        let list = e
            .pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        let on_b = list
            .iter()
            .filter(|p| node_of(p).as_deref() == Some(b.as_str()))
            .count();
        let on_a = list
            .iter()
            .filter(|p| node_of(p).as_deref() == Some(a.as_str()))
            .count();
        if on_b == 2 && on_a == 0 {
            Ok(())
        } else {
            Err(format!("{on_a} on a, {on_b} on b"))
        }
    })
    .await;
    assert!(
        e.pods.get_opt("bare").await.unwrap().is_none(),
        "the unmanaged pod is gone"
    );
}
