//! The node IPAM, node lifecycle and taint eviction controllers against the real
//! apiserver, with rekube Nodes created by the test and kept alive by a test heartbeat
//! (their Lease renewed, as the node agent does). Losing a node is stopping its heartbeat.
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::{Node, Pod};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::{self, Heartbeat, NodeShape};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec.as_ref()?.pod_cidr.clone()
}

/// Each Node gets its own range of --cluster-cidr; a full range leaves a Node waiting
/// (event CIDRNotAvailable) until a deleted Node gives its range back.
#[tokio::test]
async fn pod_cidrs_are_unique_and_released_with_the_node() {
    let ns = TestNamespace::new("ipam").await;
    let _c = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers",
            "node-ipam",
            "--allocate-node-cidrs",
            "true",
            // Two /24s in all.
            "--cluster-cidr",
            "10.250.0.0/23",
            "--node-cidr-mask-size",
            "24",
        ],
    );
    let api: Api<Node> = Api::all(ns.client.clone());
    let a = nodes::create_node(&ns, "a", &NodeShape::default()).await;
    let b = nodes::create_node(&ns, "b", &NodeShape::default()).await;
    let cidrs = wait_until("both nodes have a pod CIDR", T, || async {
        let (na, nb) = (api.get(&a).await.unwrap(), api.get(&b).await.unwrap());
        match (pod_cidr(&na), pod_cidr(&nb)) {
            (Some(x), Some(y)) => Ok((x, y, na.spec.unwrap().pod_cidrs)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut got = vec![cidrs.0.clone(), cidrs.1.clone()];
    got.sort();
    assert_eq!(
        got,
        vec!["10.250.0.0/24", "10.250.1.0/24"],
        "never duplicated"
    );
    assert_eq!(
        cidrs.2,
        Some(vec![cidrs.0.clone()]),
        "podCIDRs mirrors podCIDR"
    );

    let c = nodes::create_node(&ns, "c", &NodeShape::default()).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(ns.client.clone());
    wait_until("a CIDRNotAvailable event for the third node", T, || async {
        let list = events
            .list(&kube::api::ListParams::default().fields(&format!("regarding.name={c}")))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| e.reason.as_deref() == Some("CIDRNotAvailable"))
            .map(|_| ())
            .ok_or_else(|| format!("{} events", list.items.len()))
    })
    .await;
    assert_eq!(pod_cidr(&api.get(&c).await.unwrap()), None);

    api.delete(&a, &DeleteParams::default()).await.unwrap();
    let reused = wait_until("the third node gets the released range", T, || async {
        pod_cidr(&api.get(&c).await.unwrap()).ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert_eq!(
        reused, cidrs.0,
        "the deleted node's range is handed out again"
    );
}

/// A node whose heartbeat stops: after --node-monitor-grace-period its conditions are
/// Unknown (reason NodeStatusUnknown), it is tainted unreachable (NoSchedule and
/// NoExecute) and its pods are marked not ready. When the heartbeat comes back the taints go.
#[tokio::test]
async fn a_silent_node_becomes_unknown_and_tainted_then_recovers() {
    let ns = TestNamespace::new("lifecycle").await;
    let _c = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers",
            "node-lifecycle",
            "--node-monitor-period",
            "1s",
            "--node-monitor-grace-period",
            "4s",
        ],
    );
    let api: Api<Node> = Api::all(ns.client.clone());
    let lost = nodes::create_node(&ns, "lost", &NodeShape::default()).await;
    let alive = nodes::create_node(&ns, "alive", &NodeShape::default()).await;
    let hb_lost = Heartbeat::start(ns.client.clone(), &ns.name, &lost, Duration::from_secs(1));
    let _hb_alive = Heartbeat::start(ns.client.clone(), &ns.name, &alive, Duration::from_secs(1));

    // A running, ready pod bound to the node that will be lost.
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": lost, "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // The status a kubelet would write (the stand-in's): the node is the test's, silenced by
    // stopping its heartbeat, which an agent's Node cannot be without killing the agent.
    let status = rekube_e2e::kubelet::running_status(&pod, true, jiff::Timestamp::now());
    pods.patch_status(
        "p",
        &Default::default(),
        &kube::api::Patch::Merge(&json!({"status": status})),
    )
    .await
    .unwrap();

    // Healthy for a while: no taints.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        nodes::taints_of(&api.get(&lost).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        nodes::ready_status(&api.get(&lost).await.unwrap()).as_deref(),
        Some("True")
    );

    drop(hb_lost);
    let stopped = std::time::Instant::now();
    let n = wait_until("the lost node is tainted unreachable", T, || async {
        let n = api.get(&lost).await.unwrap();
        let taints = nodes::taints_of(&n);
        if taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
            && taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string())
        {
            Ok(n)
        } else {
            Err(format!("{taints:?}"))
        }
    })
    .await;
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "not before the grace period: {took:?}"
    );
    let ready = n
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready.status, "Unknown");
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let conditions: Vec<String> = n
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c.type_, c.status))
        .collect();
    for c in [
        "MemoryPressure=Unknown",
        "DiskPressure=Unknown",
        "PIDPressure=Unknown",
    ] {
        assert!(conditions.contains(&c.to_string()), "{conditions:?}");
    }
    wait_until("the lost node's pod is marked not ready", T, || async {
        let p = pods.get("p").await.unwrap();
        let ready = p
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        if ready.status == "False" {
            Ok(())
        } else {
            Err(ready.status)
        }
    })
    .await;
    assert_eq!(
        nodes::taints_of(&api.get(&alive).await.unwrap()),
        Vec::<String>::new(),
        "the live node is untouched"
    );

    // The kubelet comes back: Ready True again, the taints go.
    let _hb_back = Heartbeat::start(ns.client.clone(), &ns.name, &lost, Duration::from_secs(1));
    wait_until("the recovered node is untainted", T, || async {
        let n = api.get(&lost).await.unwrap();
        let taints = nodes::taints_of(&n);
        if taints.is_empty() && nodes::ready_status(&n).as_deref() == Some("True") {
            Ok(())
        } else {
            Err(format!("{taints:?}"))
        }
    })
    .await;
    let _ = pods.get("p").await.map(|p| p.name_any());
}

/// Cordoning sets spec.unschedulable; the lifecycle controller adds the unschedulable
/// NoSchedule taint; uncordoning removes both.
#[tokio::test]
async fn cordon_and_uncordon_with_kubectl_rekube() {
    let ns = TestNamespace::new("cordon").await;
    let _c = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers",
            "node-lifecycle",
            "--node-monitor-period",
            "1s",
        ],
    );
    let api: Api<Node> = Api::all(ns.client.clone());
    let n = nodes::create_node(&ns, "n", &NodeShape::default()).await;
    let _hb = Heartbeat::start(ns.client.clone(), &ns.name, &n, Duration::from_secs(1));
    let out = rekube_e2e::kubectl_rekube(&["cordon", &n]);
    assert_eq!(out.trim(), format!("node/{n} cordoned"));
    let out = rekube_e2e::kubectl_rekube(&["cordon", &n]);
    assert_eq!(out.trim(), format!("node/{n} already cordoned"));
    wait_until("the unschedulable taint", T, || async {
        let node = api.get(&n).await.unwrap();
        let taints = nodes::taints_of(&node);
        if node.spec.as_ref().unwrap().unschedulable == Some(true)
            && taints == vec!["node.kubernetes.io/unschedulable:NoSchedule".to_string()]
        {
            Ok(())
        } else {
            Err(format!("{taints:?}"))
        }
    })
    .await;
    let out = rekube_e2e::kubectl_rekube(&["uncordon", &n]);
    assert_eq!(out.trim(), format!("node/{n} uncordoned"));
    wait_until("the taint removed", T, || async {
        let node = api.get(&n).await.unwrap();
        let taints = nodes::taints_of(&node);
        if taints.is_empty() && node.spec.as_ref().unwrap().unschedulable.is_none() {
            Ok(())
        } else {
            Err(format!("{taints:?}"))
        }
    })
    .await;
}
