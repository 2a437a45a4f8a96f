//! rekube-node-agent against the real apiserver: registration, node status, the heartbeat
//! Lease, and the node lifecycle and scheduler treating it as a node.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rekube_crds::{Node, Pod, ReplicaSet};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::{TestNamespace, nodes, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn condition(n: &Node, t: &str) -> Option<(String, Option<String>)> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The agent registers its Node with upstream's labels, capacity from the machine,
/// conditions and nodeInfo, renews its Lease (owned by the Node), and stops on SIGTERM.
#[tokio::test]
async fn registers_the_node_and_keeps_its_lease_fresh() {
    let ns = TestNamespace::new("agent-register").await;
    let mut agent = AgentProcess::start(
        &ns,
        "n",
        &[
            "--node-lease-duration-seconds",
            "4",
            "--node-status-update-frequency",
            "1s",
            "--kube-reserved",
            "cpu=500m",
            "--node-ip",
            "127.0.0.2",
        ],
    );
    let nodes_api: Api<Node> = Api::all(ns.client.clone());
    let node = wait_until("the node registered and ready", T, || async {
        let n = nodes_api
            .get_opt(&agent.node_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or(agent.logs())?;
        match condition(&n, "Ready") {
            Some((s, Some(r))) if s == "True" && r == "KubeletReady" => Ok(n),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], agent.node_name);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels[nodes::SCOPE_LABEL], ns.name);
    let status = node.status.clone().unwrap();
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(
        status.capacity.as_ref().unwrap()["cpu"].0,
        cores.to_string()
    );
    assert_eq!(
        status.allocatable.as_ref().unwrap()["cpu"].0,
        format!("{}m", cores * 1000 - 500)
    );
    assert_eq!(status.allocatable.as_ref().unwrap()["pods"].0, "110");
    for (t, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        assert_eq!(
            condition(&node, t),
            Some(("False".into(), Some(reason.into()))),
            "{t}"
        );
    }
    let info = status.node_info.unwrap();
    assert_eq!(
        info.kernel_version,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    assert_eq!(info.operating_system, "linux");
    // The agent's own version (the workspace's, as this crate's).
    assert_eq!(
        info.kubelet_version,
        concat!("v", env!("CARGO_PKG_VERSION"))
    );
    let addresses: Vec<(String, String)> = status
        .addresses
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        [
            ("InternalIP".to_string(), "127.0.0.2".to_string()),
            ("Hostname".to_string(), agent.node_name.clone())
        ]
    );
    assert!(info.container_runtime_version.starts_with("rekube://"));
    assert!(node.metadata.annotations.unwrap()["rekube.io/cgroup-version"].starts_with('v'));

    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let first = wait_until("the lease", T, || async {
        leases
            .get_opt(&agent.node_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("none".to_string())
    })
    .await;
    let owner = &first.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("Node", node.metadata.uid.as_ref())
    );
    let renewed = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.renew_time.clone())
            .map(|t| t.0)
    };
    let t0 = renewed(&first).unwrap();
    wait_until(
        "the lease renewed (every duration/4 = 1 s)",
        Duration::from_secs(10),
        || async {
            let l = leases
                .get(&agent.node_name)
                .await
                .map_err(|e| e.to_string())?;
            if renewed(&l).unwrap() > t0 {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;

    let exit = agent.terminate().expect("the agent was running");
    assert!(
        exit.success(),
        "graceful exit on SIGTERM: {exit:?}\n{}",
        agent.logs()
    );
}

/// The scheduler binds a pod to an agent's node; the node stays untainted while the agent
/// heartbeats, and once the agent is killed the node lifecycle controller finds the node
/// lost (unreachable taint) and the pod bound there is evicted.
#[tokio::test]
async fn the_scheduler_and_node_lifecycle_use_agent_nodes() {
    let ns = TestNamespace::new("agent-lifecycle").await;
    let fast = [
        "--node-lease-duration-seconds",
        "4",
        "--node-status-update-frequency",
        "1s",
    ];
    // Hollow: the pod is not run for real, so killing the agent leaves nothing behind.
    let mut doomed = AgentProcess::start(&ns, "doomed", &[&fast[..], &["--hollow"]].concat());
    let _c = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers",
            "scheduler,node-lifecycle,taint-eviction",
            "--node-monitor-period",
            "1s",
            "--node-monitor-grace-period",
            "5s",
            "--default-toleration-seconds",
            "2",
        ],
    );
    let nodes_api: Api<Node> = Api::all(ns.client.clone());
    wait_until("the agent's node ready", T, || async {
        let n = nodes_api
            .get_opt(&doomed.node_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or(doomed.logs())?;
        (condition(&n, "Ready").map(|c| c.0).as_deref() == Some("True"))
            .then_some(())
            .ok_or("not ready".to_string())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_until("the pod bound to the agent's node", T, || async {
        let p = pods.get("p").await.map_err(|e| e.to_string())?;
        (p.spec.unwrap().node_name.as_deref() == Some(doomed.node_name.as_str()))
            .then_some(())
            .ok_or("unbound".to_string())
    })
    .await;
    // Healthy for longer than the grace period: no taint.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let n = nodes_api.get(&doomed.node_name).await.unwrap();
    assert!(
        nodes::taints_of(&n).is_empty(),
        "{:?}",
        nodes::taints_of(&n)
    );

    doomed.kill();
    // Evicted: deleted, and (the agent's finalizer being on it, as upstream's graceful
    // deletion waits for the kubelet) terminating until the agent cleans it up.
    wait_until("the node unreachable and the pod evicted", T, || async {
        let n = nodes_api.get(&doomed.node_name).await.unwrap();
        let unreachable =
            nodes::taints_of(&n).contains(&"node.kubernetes.io/unreachable:NoExecute".to_string());
        let evicted = pods
            .get_opt("p")
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        if unreachable && evicted {
            Ok(())
        } else {
            Err(format!("tainted {unreachable}, evicted {evicted}"))
        }
    })
    .await;
    // The agent is gone for good: release the pod so the namespace can go.
    let _ = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
}

/// A hollow agent (`run --hollow`, upstream's kubemark) runs a ReplicaSet's pods without
/// containers: the scheduler binds them to its node, and the agent reports each one
/// Running and Ready with a pod IP, upstream's conditions, and running containers with
/// rekube:// IDs. Its finalizer holds a deleted pod until the agent has cleaned it up, so
/// scaling to zero removes the pods only through the agent.
#[tokio::test]
async fn a_hollow_agent_runs_a_replica_set() {
    let ns = TestNamespace::new("agent-hollow").await;
    let agent = AgentProcess::start(&ns, "hollow", &["--hollow"]);
    let _c = ControllerProcess::start(&ns.name, &["--controllers", "scheduler,replicaset"]);
    let nodes_api: Api<Node> = Api::all(ns.client.clone());
    wait_until("the hollow node ready", T, || async {
        let n = nodes_api
            .get_opt(&agent.node_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or(agent.logs())?;
        (condition(&n, "Ready").map(|c| c.0).as_deref() == Some("True"))
            .then_some(())
            .ok_or("not ready".to_string())
    })
    .await;
    let rs_api: Api<ReplicaSet> = Api::namespaced(ns.client.clone(), &ns.name);
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
        }
    }))
    .unwrap();
    rs_api.create(&PostParams::default(), &rs).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let running = wait_until("3 pods running and ready on the hollow node", T, || async {
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| {
                let st = p.status.clone().unwrap_or_default();
                st.phase.as_deref() == Some("Running")
                    && st
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .collect();
        if ready.len() == 3 {
            Ok(ready)
        } else {
            Err(format!("{} ready\n{}", ready.len(), agent.logs()))
        }
    })
    .await;
    let mut ips = std::collections::BTreeSet::new();
    for p in &running {
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some(agent.node_name.as_str())
        );
        assert!(
            p.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "rekube.io/node-agent"),
            "{:?}",
            p.metadata.finalizers
        );
        let st = p.status.clone().unwrap();
        let ip = st.pod_ip.clone().expect("a pod IP");
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");
        ips.insert(ip);
        assert!(st.host_ip.is_some());
        assert!(st.start_time.is_some());
        for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert!(
                st.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == t && c.status == "True"),
                "{t}: {:?}",
                st.conditions
            );
        }
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.name, "c");
        assert!(cs.ready && cs.started == Some(true));
        assert!(cs.state.as_ref().unwrap().running.is_some(), "{cs:?}");
        assert!(
            cs.container_id
                .as_deref()
                .unwrap_or_default()
                .starts_with("rekube://"),
            "{cs:?}"
        );
    }
    assert_eq!(ips.len(), 3, "distinct pod IPs: {ips:?}");

    rs_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    wait_until(
        "the pods deleted through the agent's cleanup",
        T,
        || async {
            let left = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            (left == 0)
                .then_some(())
                .ok_or(format!("{left} left\n{}", agent.logs()))
        },
    )
    .await;
}
