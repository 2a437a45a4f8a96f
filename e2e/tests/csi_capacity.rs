//! Storage capacity tracking end to end (KEP-1472; issue 13, topolvm#117): two fake ready
//! nodes, each with a real rekube-csi (`--capacity 100Mi`) on a socket of its own and its
//! provisioner with `--enable-capacity`, the test's CSIDriver saying
//! `storageCapacity: true`, and rekube-controllers' scheduler and PV binder.
//!
//! - The provisioners publish one CSIStorageCapacity per (WaitForFirstConsumer class of the
//!   driver, node), with upstream's labels, the node's segment as nodeTopology, the
//!   driver's GetCapacity figures and the owner upstream's `--capacity-ownerref-level 1`
//!   finds (the DaemonSet of the provisioner's pod); an Immediate class gets none.
//! - A provision is followed at once (well before the poll interval): the node's capacity
//!   drops by the volume.
//! - A pod preferring node A whose claim no longer fits there lands on B.
//! - Four pods created at once, all preferring A, whose claims together exceed what A has
//!   left, are spread by the scheduler (claims handed out but not yet provisioned count),
//!   so the provisioners refuse none: no ProvisioningFailed event.
//! - A pod whose claim fits nowhere stays Pending with upstream's FailedScheduling reason
//!   "node(s) did not have enough free storage".
//! - Deleting the claims gives the capacity back; deleting a class deletes its objects;
//!   once the provisioners are gone, deleting their DaemonSet garbage-collects the rest.
//!   Nothing is left: no image, no loop device, no PV, no CSIStorageCapacity.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod as CorePod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rekube_crds::{CSIStorageCapacity, PersistentVolume, PersistentVolumeClaim, Pod};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::{self, NodeShape, SCOPE_LABEL};
use rekube_e2e::storage::{
    CsiDriverProcess, create_csi_driver_with_capacity, delete_test_volumes, event_notes,
    loops_under,
};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const TOPOLOGY_KEY: &str = "topology.csi.rekube.io/node";
const MIB: i64 = 1 << 20;
/// upstream's `--capacity-poll-interval` default, which the provisioners run with: every
/// figure this test waits for comes from the refresh after CreateVolume or DeleteVolume.
const POLL: Duration = Duration::from_secs(60);

fn claim(name: &str, class: &str, size: &str) -> PersistentVolumeClaim {
    serde_json::from_value(
        json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "resources": {"requests": {"storage": size}}}}),
    )
    .unwrap()
}

/// A pod using claim `claim`, preferring node `prefer` (weight 100) when given: without
/// the capacity check the scheduler would put it there.
fn pod(name: &str, claim: &str, prefer: Option<&str>) -> Pod {
    let mut spec = json!({"terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "busybox:1.36"}],
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]});
    if let Some(node) = prefer {
        spec["affinity"] = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}}]}});
    }
    serde_json::from_value(
        json!({"apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

/// The test's CSIStorageCapacities by (node, class): (capacity, maximumVolumeSize) bytes.
async fn figures(
    api: &Api<CSIStorageCapacity>,
    driver: &str,
) -> Result<BTreeMap<(String, String), (i64, Option<i64>)>, String> {
    let lp = ListParams::default().labels(&format!("csi.storage.k8s.io/drivername={driver}"));
    let list = api.list(&lp).await.map_err(|e| e.to_string())?.items;
    let bytes = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        rekube_crds::quantity::amount(q).value()
    };
    let mut out = BTreeMap::new();
    for c in list {
        let node = c
            .node_topology
            .as_ref()
            .and_then(|t| t.match_labels.as_ref())
            .and_then(|l| l.get(TOPOLOGY_KEY))
            .cloned()
            .unwrap_or_default();
        let key = (node, c.storage_class_name.clone());
        let value = (
            c.capacity.as_ref().map(bytes).unwrap_or(-1),
            c.maximum_volume_size.as_ref().map(bytes),
        );
        if out.insert(key.clone(), value).is_some() {
            return Err(format!("two objects for {key:?}"));
        }
    }
    Ok(out)
}

async fn wait_figures(
    what: &str,
    api: &Api<CSIStorageCapacity>,
    driver: &str,
    want: &BTreeMap<(String, String), (i64, Option<i64>)>,
    logs: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    wait_until(what, T, || async {
        let got = figures(api, driver).await?;
        (&got == want)
            .then_some(())
            .ok_or_else(|| format!("{got:?}, want {want:?}\n{}", logs()))
    })
    .await;
    started.elapsed()
}

async fn node_of(pods: &Api<Pod>, name: &str) -> String {
    wait_until(&format!("pod {name} bound"), T, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        p.spec
            .and_then(|s| s.node_name)
            .ok_or_else(|| format!("{:?}", p.status.and_then(|s| s.conditions)))
    })
    .await
}

/// The claim Bound to its provisioned PV; the node its volume is on.
async fn bound_on(
    claims: &Api<PersistentVolumeClaim>,
    volumes: &Api<PersistentVolume>,
    name: &str,
) -> String {
    let volume = wait_until(&format!("claim {name} Bound"), T, || async {
        let c = claims.get(name).await.map_err(|e| e.to_string())?;
        let phase = c.status.and_then(|s| s.phase);
        match (phase.as_deref(), c.spec.and_then(|s| s.volume_name)) {
            (Some("Bound"), Some(v)) => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let pv = volumes.get(&volume).await.unwrap();
    let term = &pv
        .spec
        .unwrap()
        .node_affinity
        .unwrap()
        .required
        .unwrap()
        .node_selector_terms[0];
    let expr = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(expr.key, TOPOLOGY_KEY);
    expr.values.as_ref().unwrap()[0].clone()
}

#[tokio::test]
async fn the_scheduler_respects_published_capacity() {
    let ns = TestNamespace::new("csi-cap").await;
    let driver = create_csi_driver_with_capacity(&ns, false, true).await;
    let mut node = Vec::new();
    for n in ["a", "b"] {
        let mut shape = NodeShape::default();
        shape.labels.insert(TOPOLOGY_KEY.into(), ns.cluster_name(n));
        node.push(nodes::create_node(&ns, n, &shape).await);
    }
    let (a, b) = (node[0].clone(), node[1].clone());

    // The provisioners' owner, as in a DaemonSet: its pods (never scheduled: nothing runs
    // them) are the POD_NAMEs.
    let daemon_sets: Api<DaemonSet> = Api::namespaced(ns.client.clone(), &ns.name);
    let daemon_set: DaemonSet =
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "rekube-csi"},
        "spec": {"selector": {"matchLabels": {"app": "rekube-csi"}},
            "template": {"metadata": {"labels": {"app": "rekube-csi"}},
                "spec": {"containers": [{"name": "csi", "image": "rekube-csi"}]}}}}))
        .unwrap();
    let daemon_set = daemon_sets
        .create(&PostParams::default(), &daemon_set)
        .await
        .unwrap();
    let ds_uid = daemon_set.metadata.uid.clone().unwrap();
    let core_pods: Api<CorePod> = Api::namespaced(ns.client.clone(), &ns.name);
    for n in &node {
        let p: CorePod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("rekube-csi-{n}"), "labels": {"app": "rekube-csi"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "rekube-csi",
                    "uid": ds_uid, "controller": true}]},
            "spec": {"containers": [{"name": "csi", "image": "rekube-csi"}]}}))
        .unwrap();
        core_pods.create(&PostParams::default(), &p).await.unwrap();
    }

    // Removed when the test ends, pass or fail (each driver's directory with its driver).
    let tmp = tempfile::Builder::new()
        .prefix(&format!("rekube-e2e-{}-", ns.name))
        .tempdir()
        .unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let mut drivers = Vec::new();
    for n in &node {
        let mut d = CsiDriverProcess::start(&root.join(n), &driver, n, &["--capacity", "100Mi"]);
        let pod_name = format!("rekube-csi-{n}");
        d.start_sidecar_with_env(
            "provisioner",
            &[
                "--node-id",
                n,
                "--pv-label",
                &format!("{SCOPE_LABEL}={}", ns.name),
                "--enable-capacity",
            ],
            &[("NAMESPACE", &ns.name), ("POD_NAME", &pod_name)],
        );
        drivers.push(d);
    }
    let logs = || {
        drivers
            .iter()
            .map(CsiDriverProcess::logs)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=scheduler,persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection",
        ],
    );
    for (name, mode) in [
        ("local", "WaitForFirstConsumer"),
        ("spare", "WaitForFirstConsumer"),
        ("now", "Immediate"),
    ] {
        ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": driver, "volumeBindingMode": mode,
            "reclaimPolicy": "Delete", "parameters": {"type": "local-disk"}}))
            .await
            .unwrap();
    }
    let (local, spare) = (ns.cluster_name("local"), ns.cluster_name("spare"));
    let capacities: Api<CSIStorageCapacity> = Api::namespaced(ns.client.clone(), &ns.name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();

    // One object per (WaitForFirstConsumer class, node): 100Mi each; none for "now".
    let mut want = BTreeMap::new();
    for n in &node {
        for class in [&local, &spare] {
            want.insert((n.clone(), class.clone()), (100 * MIB, Some(100 * MIB)));
        }
    }
    wait_figures(
        "the published capacities",
        &capacities,
        &driver,
        &want,
        logs,
    )
    .await;
    let lp = ListParams::default().labels(&format!("csi.storage.k8s.io/drivername={driver}"));
    for c in capacities.list(&lp).await.unwrap().items {
        let name = c.metadata.name.clone().unwrap();
        assert!(name.starts_with("csisc-"), "{name}");
        let labels = c.metadata.labels.clone().unwrap();
        let n = &c
            .node_topology
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()[TOPOLOGY_KEY];
        assert_eq!(
            labels,
            BTreeMap::from([
                ("csi.storage.k8s.io/drivername".to_string(), driver.clone()),
                (
                    "csi.storage.k8s.io/managed-by".to_string(),
                    format!("external-provisioner-{n}")
                ),
            ]),
            "{name}"
        );
        assert_eq!(
            c.node_topology.as_ref().unwrap().match_expressions,
            None,
            "{name}"
        );
        let owners = c.metadata.owner_references.clone().unwrap();
        assert_eq!(owners.len(), 1, "{name}: {owners:?}");
        assert_eq!(
            (
                owners[0].api_version.as_str(),
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str(),
                owners[0].controller
            ),
            (
                "apps/v1",
                "DaemonSet",
                "rekube-csi",
                ds_uid.as_str(),
                Some(true)
            ),
            "{name}"
        );
    }

    // A 60Mi claim on node A (the pod prefers it; both nodes fit it): A drops to 40Mi at
    // once, not at the next poll.
    claims
        .create(&pp, &claim("first", &local, "60Mi"))
        .await
        .unwrap();
    pods.create(&pp, &pod("first", "first", Some(&a)))
        .await
        .unwrap();
    assert_eq!(node_of(&pods, "first").await, a);
    assert_eq!(bound_on(&claims, &volumes, "first").await, a);
    let left = |n: &str, class: &str, bytes: i64| {
        ((n.to_string(), class.to_string()), (bytes, Some(bytes)))
    };
    want.extend([left(&a, &local, 40 * MIB), left(&a, &spare, 40 * MIB)]);
    let followed = wait_figures(
        "A's capacity after the provision",
        &capacities,
        &driver,
        &want,
        logs,
    )
    .await;
    assert!(
        followed < POLL / 2,
        "the capacity followed only after {followed:?}"
    );
    println!("capacity followed the provision within {followed:?} of the claim's binding");

    // 50Mi prefer A but no longer fit there: B.
    claims
        .create(&pp, &claim("second", &local, "50Mi"))
        .await
        .unwrap();
    pods.create(&pp, &pod("second", "second", Some(&a)))
        .await
        .unwrap();
    assert_eq!(
        node_of(&pods, "second").await,
        b,
        "a claim that does not fit on A"
    );
    assert_eq!(bound_on(&claims, &volumes, "second").await, b);
    want.extend([left(&b, &local, 50 * MIB), left(&b, &spare, 50 * MIB)]);
    wait_figures(
        "B's capacity after the provision",
        &capacities,
        &driver,
        &want,
        logs,
    )
    .await;

    // Four pods at once, 20Mi each, all preferring A, which has 40Mi left: two there, two
    // on B (50Mi left), none refused by a provisioner.
    let burst: Vec<String> = (0..4).map(|i| format!("burst-{i}")).collect();
    for name in &burst {
        claims
            .create(&pp, &claim(name, &local, "20Mi"))
            .await
            .unwrap();
    }
    let burst_pods: Vec<Pod> = burst.iter().map(|name| pod(name, name, Some(&a))).collect();
    let created = futures::future::join_all(burst_pods.iter().map(|p| pods.create(&pp, p))).await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let mut placed = BTreeMap::<String, Vec<String>>::new();
    for name in &burst {
        let on = node_of(&pods, name).await;
        assert_eq!(bound_on(&claims, &volumes, name).await, on, "{name}");
        placed.entry(on).or_default().push(name.clone());
    }
    assert_eq!(
        placed.values().map(Vec::len).collect::<Vec<_>>(),
        [2, 2],
        "two on each node: {placed:?}"
    );
    // B keeps 10Mi, less than the smallest volume rekube-csi makes (16Mi): its
    // maximumVolumeSize, which the scheduler compares, is 0.
    let tail = |n: &str, class: &str| ((n.to_string(), class.to_string()), (10 * MIB, Some(0)));
    want.extend([
        left(&a, &local, 0),
        left(&a, &spare, 0),
        tail(&b, &local),
        tail(&b, &spare),
    ]);
    wait_figures(
        "the capacities after the burst",
        &capacities,
        &driver,
        &want,
        logs,
    )
    .await;

    // 60Mi fit nowhere: Pending, with upstream's reason.
    claims
        .create(&pp, &claim("big", &local, "60Mi"))
        .await
        .unwrap();
    pods.create(&pp, &pod("big", "big", None)).await.unwrap();
    let reason = "node(s) did not have enough free storage";
    let notes = wait_until("FailedScheduling of pod big", T, || async {
        let notes = event_notes(&events, Some("Pod"), "big", "FailedScheduling").await;
        notes
            .iter()
            .any(|n| n.contains(reason))
            .then(|| notes.clone())
            .ok_or_else(|| format!("{notes:?}"))
    })
    .await;
    println!("FailedScheduling: {notes:?}");
    let big = pods.get("big").await.unwrap();
    assert_eq!(big.spec.as_ref().unwrap().node_name, None);
    let scheduled = big
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(
        (scheduled.status.as_str(), scheduled.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert!(
        scheduled
            .message
            .as_deref()
            .unwrap_or_default()
            .contains(reason),
        "{scheduled:?}"
    );
    let c = claims.get("big").await.unwrap();
    assert_eq!(
        c.metadata
            .annotations
            .unwrap_or_default()
            .get("volume.kubernetes.io/selected-node"),
        None
    );

    // No provisioner refused a claim the scheduler placed.
    let mut refused = Vec::new();
    for name in burst
        .iter()
        .map(String::as_str)
        .chain(["first", "second", "big"])
    {
        refused.extend(event_notes(&events, None, name, "ProvisioningFailed").await);
    }
    assert_eq!(refused, Vec::<String>::new(), "ProvisioningFailed events");

    // Released: the capacity comes back as each DeleteVolume is followed.
    for name in burst
        .iter()
        .map(String::as_str)
        .chain(["first", "second", "big"])
    {
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
        claims.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for n in &node {
        for class in [&local, &spare] {
            want.insert((n.clone(), class.clone()), (100 * MIB, Some(100 * MIB)));
        }
    }
    wait_figures(
        "the capacities after the deletions",
        &capacities,
        &driver,
        &want,
        logs,
    )
    .await;
    wait_until("the PVs gone", T, || async {
        let lp = ListParams::default().labels(&format!("{SCOPE_LABEL}={}", ns.name));
        let left = volumes
            .list(&lp)
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (left == 0)
            .then_some(())
            .ok_or_else(|| format!("{left} left"))
    })
    .await;

    // A class gone: its objects deleted by the provisioners.
    Api::<rekube_crds::StorageClass>::all(ns.client.clone())
        .delete(&spare, &DeleteParams::default())
        .await
        .unwrap();
    want.retain(|(_, class), _| class != &spare);
    wait_figures(
        "the objects of the deleted class gone",
        &capacities,
        &driver,
        &want,
        logs,
    )
    .await;

    // The provisioners stop (upstream leaves its objects); their owner's deletion
    // garbage-collects what is left.
    for d in &mut drivers {
        d.stop();
    }
    assert_eq!(figures(&capacities, &driver).await.unwrap().len(), 2);
    daemon_sets
        .delete("rekube-csi", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the CSIStorageCapacities garbage-collected", T, || async {
        let left = figures(&capacities, &driver).await?;
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("{left:?}"))
    })
    .await;

    // Nothing left on the nodes' disks.
    for d in &drivers {
        assert_eq!(loops_under(&d.dir), Vec::new(), "loop devices left");
        for sub in ["volumes", "images", "hostpath"] {
            let left: Vec<_> = std::fs::read_dir(d.state.join(sub))
                .map(|r| r.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert_eq!(
                left,
                Vec::<std::path::PathBuf>::new(),
                "{sub} left in {}",
                d.state.display()
            );
        }
    }
    drop(drivers);
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "the drivers' directories left"
    );
    delete_test_volumes(&ns).await;
}
