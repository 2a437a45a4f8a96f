//! The chart's NodeRestriction policy (upstream's NodeRestriction admission, keyed on the
//! node name a pod-bound or node-bound token carries): a node agent, under the chart's
//! RBAC, writes its own Node, Lease and pods, and is refused on another node's.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rekube_crds::{Node, Pod};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::rbac::refused;
use rekube_e2e::{TestNamespace, rbac, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn merge(v: Value) -> Patch<Value> {
    Patch::Merge(v)
}

fn rekube_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]},
    }))
    .unwrap()
}

fn rekube_node(name: &str, labels: Value) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap()
}

fn lease(name: &str) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40},
    }))
    .unwrap()
}

#[tokio::test]
async fn an_agent_writes_only_its_own_nodes_objects() {
    let ns = TestNamespace::new("noderestr").await;
    let sa = format!("{}-node-agent", ns.name);
    let _rbac = rbac::apply_chart_rbac(&ns, "templates/node-agent-rbac.yaml", "node-agent");
    let _policy = rbac::apply_node_restriction(&ns);
    let pp = PostParams::default();
    let patch = PatchParams::default();

    // The hosts' Nodes (plain API objects: no kubelet) of the agents' DaemonSet pods.
    for n in ["a", "b"] {
        ns.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}))
            .await
            .unwrap();
    }
    let (a, b, c) = (
        ns.cluster_name("a"),
        ns.cluster_name("b"),
        ns.cluster_name("c"),
    );
    // Agent a's token is bound to its DaemonSet pod on node a, as the kubelet mounts it;
    // agent b's to node b itself (an agent outside the cluster).
    ns.create(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent-a"},
        // No kubelet ends it: a grace period of 0 lets the namespace delete it at once.
        "spec": {"nodeName": a, "serviceAccountName": sa, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "node-agent", "image": "rekube/rekube-node-agent"}]},
    }))
    .await
    .unwrap();
    let token_a = rbac::service_account_token(&ns, &sa, Some(("Pod", "agent-a")));
    let token_b = rbac::service_account_token(&ns, &sa, Some(("Node", &b)));
    let unbound = rbac::service_account_token(&ns, &sa, None);
    let client_a = rbac::token_client(&ns, "a", &token_a).await;
    let client_b = rbac::token_client(&ns, "b", &token_b).await;
    let client_unbound = rbac::token_client(&ns, "unbound", &unbound).await;

    let admin_pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    admin_pods.create(&pp, &rekube_pod("pa", &a)).await.unwrap();
    admin_pods.create(&pp, &rekube_pod("pb", &b)).await.unwrap();

    // A token bound to nothing names no node: refused, once the policy is in force.
    let user = format!("system:serviceaccount:{}:{sa}", ns.name);
    let pods_unbound: Api<Pod> = Api::namespaced(client_unbound.clone(), &ns.name);
    // (A dry run: admission runs, nothing is written before the policy is in force.)
    let dry_run = PatchParams::default().dry_run();
    wait_until("the policy in force", T, || async {
        match pods_unbound
            .patch(
                "pa",
                &dry_run,
                &merge(json!({"metadata": {"finalizers": ["rekube.io/node-agent"]}})),
            )
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(s.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    refused(
        "an unbound token patching a pod",
        pods_unbound
            .patch(
                "pa",
                &patch,
                &merge(json!({"metadata": {"finalizers": ["rekube.io/node-agent"]}})),
            )
            .await,
        &format!("could not determine node from user \"{user}\""),
    );
    let nodes_unbound: Api<Node> = Api::all(client_unbound);
    refused(
        "an unbound token creating a node",
        nodes_unbound.create(&pp, &rekube_node(&c, json!({}))).await,
        &format!("could not determine node from user \"{user}\""),
    );

    rbac::node_restriction_in_force(&client_a, &a).await;

    // Agent b registers its Node (not with a node-restriction label) and its Lease.
    let nodes_b: Api<Node> = Api::all(client_b.clone());
    refused(
        "node b registering with a node-restriction label",
        nodes_b
            .create(&pp, &rekube_node(&b, json!({"node-restriction.kubernetes.io/pool": "x", "kubernetes.io/role": "x", "node.kubernetes.io/pool": "x"})))
            .await,
        &format!("node \"{b}\" is not allowed to set the following labels: kubernetes.io/role, node-restriction.kubernetes.io/pool"),
    );
    nodes_b
        .create(
            &pp,
            &rekube_node(
                &b,
                json!({"node.kubernetes.io/pool": "x", "kubernetes.io/hostname": b}),
            ),
        )
        .await
        .unwrap();
    Api::<Lease>::namespaced(client_b, &ns.name)
        .create(&pp, &lease(&b))
        .await
        .unwrap();

    // A real agent with a's token: it registers node a, renews a's Lease, holds its
    // finalizer on pod pa and writes pa's status (hollow: no containers), forbidden nothing.
    let kubeconfig = rbac::token_kubeconfig(&ns, "agent-a", &token_a);
    let agent = AgentProcess::start_with_env(
        &ns,
        "a",
        &["--hollow"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    assert_eq!(agent.node_name, a);
    wait_until("pod pa running on node a, held by its agent", T, || async {
        let p = admin_pods.get("pa").await.map_err(|e| e.to_string())?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        let held = p
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "rekube.io/node-agent"));
        if phase.as_deref() == Some("Running") && held {
            Ok(())
        } else {
            Err(format!(
                "{phase:?} {:?}\n{}",
                p.metadata.finalizers,
                agent.logs()
            ))
        }
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_until("node a's lease", T, || async {
        leases.get(&a).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    let admin_nodes: Api<Node> = Api::all(ns.client.clone());
    wait_until("node a's status posted", T, || async {
        let n = admin_nodes.get(&a).await.map_err(|e| e.to_string())?;
        n.status
            .and_then(|s| s.conditions)
            .filter(|c| c.iter().any(|c| c.type_ == "Ready"))
            .map(|_| ())
            .ok_or_else(|| "no Ready condition yet".to_string())
    })
    .await;

    // With a's token, everything of node b's is refused.
    let pods_a: Api<Pod> = Api::namespaced(client_a.clone(), &ns.name);
    refused(
        "a patching pod pb",
        pods_a
            .patch(
                "pb",
                &patch,
                &merge(json!({"metadata": {"finalizers": ["rekube.io/node-agent"]}})),
            )
            .await,
        &format!("node \"{a}\" can only update pods with spec.nodeName set to itself"),
    );
    refused(
        "a patching pod pb's status",
        pods_a
            .patch_status("pb", &patch, &merge(json!({"status": {"phase": "Failed"}})))
            .await,
        &format!(
            "node \"{a}\" can only update pod status for pods with spec.nodeName set to itself"
        ),
    );
    let nodes_a: Api<Node> = Api::all(client_a.clone());
    let other_node = format!("node \"{a}\" is not allowed to modify node \"{b}\"");
    refused(
        "a patching node b",
        nodes_a
            .patch(
                &b,
                &patch,
                &merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        &other_node,
    );
    refused(
        "a patching node b's status",
        nodes_a
            .patch_status(
                &b,
                &patch,
                &merge(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
            )
            .await,
        &other_node,
    );
    refused(
        "a registering node c",
        nodes_a.create(&pp, &rekube_node(&c, json!({}))).await,
        &format!("node \"{a}\" is not allowed to modify node \"{c}\""),
    );
    let leases_a: Api<Lease> = Api::namespaced(client_a.clone(), &ns.name);
    let mut lb = leases.get(&b).await.unwrap();
    lb.spec.as_mut().unwrap().holder_identity = Some(a.clone());
    refused(
        "a renewing node b's lease",
        leases_a.replace(&b, &pp, &lb).await,
        "can only access node lease with the same name as the requesting node",
    );
    refused(
        "a creating node c's lease",
        leases_a.create(&pp, &lease(&c)).await,
        "can only access node lease with the same name as the requesting node",
    );

    // On its own objects, a writes only what a kubelet may.
    let only_finalizer = format!(
        "node \"{a}\" can only add or remove the finalizer \"rekube.io/node-agent\" of its pods"
    );
    refused(
        "a relabelling its pod",
        pods_a
            .patch(
                "pa",
                &patch,
                &merge(json!({"metadata": {"labels": {"app": "x"}}})),
            )
            .await,
        &only_finalizer,
    );
    refused(
        "a adding another finalizer to its pod",
        pods_a
            .patch("pa", &patch, &merge(json!({"metadata": {"finalizers": ["rekube.io/node-agent", "example.com/keep"]}})))
            .await,
        &only_finalizer,
    );
    refused(
        "a untainting itself",
        nodes_a
            .patch(
                &a,
                &patch,
                &merge(json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})),
            )
            .await,
        &format!("node \"{a}\" is not allowed to modify taints"),
    );
    refused(
        "a labelling itself for restricted workloads",
        nodes_a
            .patch(&a, &patch, &merge(json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "secure"}}})))
            .await,
        "is not allowed to modify labels: node-restriction.kubernetes.io/pool",
    );
    nodes_a
        .patch(&a, &patch, &merge(json!({"metadata": {"labels": {"node.kubernetes.io/pool": "x", "example.com/disk": "ssd"}}})))
        .await
        .expect("a kubelet label and a label of its own");

    // Nothing of node b's was written by a; a's agent was refused nothing.
    let pb = admin_pods.get("pb").await.unwrap();
    assert!(pb.metadata.finalizers.is_none(), "{:?}", pb.metadata);
    assert!(
        pb.status
            .as_ref()
            .and_then(|s| s.phase.as_ref())
            .is_none_or(|p| p == "Pending"),
        "{:?}",
        pb.status
    );
    assert_eq!(
        leases
            .get(&b)
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some(b.as_str())
    );
    let logs = agent.logs();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the agent hit the policy on its own objects:\n{logs}"
    );
    // The agent's rekube Node and the pods' finalizer go with the test.
    drop(agent);
    let _ = pods_a
        .patch(
            "pa",
            &patch,
            &merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
    for n in [&a, &b] {
        let _ = admin_nodes.delete(n, &Default::default()).await;
    }
}
