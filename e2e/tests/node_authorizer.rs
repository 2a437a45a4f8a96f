//! The node authorizer (upstream's Node authorizer, as RBAC that rekube-controllers keeps)
//! and the token rule of the NodeRestriction policy: a node agent reads, as its node's
//! ServiceAccount, exactly the Secrets and ConfigMaps of the pods bound to its node,
//! nothing of another node's pods and nothing unreferenced; it can get a token of no other
//! node's ServiceAccount; a grant goes with the last pod that needed it, and the
//! ServiceAccount with its Node. The controller runs under the chart's RBAC.
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::{Node, Pod};
use rekube_e2e::controllers::{ControllerProcess, external};
use rekube_e2e::nodes::{NodeShape, create_node};
use rekube_e2e::rbac::refused;
use rekube_e2e::{TestNamespace, rbac, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn token_request(kind: &str, name: &str, uid: &str) -> TokenRequest {
    serde_json::from_value(json!({
        "spec": {"expirationSeconds": 3600,
                 "boundObjectRef": {"apiVersion": "v1", "kind": kind, "name": name, "uid": uid}},
    }))
    .unwrap()
}

/// Answers of `client` to a GET of each `(kind, name)`: the HTTP status.
async fn read_status(client: &kube::Client, ns: &str, kind: &str, name: &str) -> u16 {
    let r = match kind {
        "secret" => Api::<Secret>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .map(|_| ()),
        _ => Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("reading {kind} {name}: {e}"),
    }
}

/// Waits until `client` gets exactly `want` for each `(kind, name, status)`.
async fn wait_reads(what: &str, client: &kube::Client, ns: &str, want: &[(&str, &str, u16)]) {
    wait_until(what, T, || async {
        let mut got = Vec::new();
        for (kind, name, _) in want {
            got.push((*kind, *name, read_status(client, ns, kind, name).await));
        }
        if got.as_slice() == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await
}

fn pod(name: &str, node: &str, spec: Value) -> Pod {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn a_node_reads_only_its_own_pods_secrets_and_config_maps() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("nodeauthz").await;
    let agent_sa = format!("{}-node-agent", ns.name);
    let controllers_sa = format!("{}-controllers", ns.name);
    let _agent_rbac = rbac::apply_chart_rbac(&ns, "templates/node-agent-rbac.yaml", "node-agent");
    let _controllers_rbac =
        rbac::apply_chart_rbac(&ns, "templates/controllers-rbac.yaml", "controllers");
    let _policy = rbac::apply_node_restriction(&ns);
    let pp = PostParams::default();

    // The hosts' Nodes (the agents' tokens are bound to them) and the rekube Nodes.
    let mut uids = Vec::new();
    for n in ["a", "b"] {
        let host = ns
            .create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}))
            .await
            .unwrap();
        uids.push(host["metadata"]["uid"].as_str().unwrap().to_string());
        create_node(&ns, n, &NodeShape::default()).await;
    }
    let (a, b) = (ns.cluster_name("a"), ns.cluster_name("b"));
    let (uid_a, uid_b) = (uids[0].clone(), uids[1].clone());

    // Only the node authorizer, under the chart's controllers RBAC.
    let kubeconfig = rbac::service_account_kubeconfig(&ns, &controllers_sa);
    let controllers = ControllerProcess::start_with_env(
        &ns.name,
        &["--controllers=node-authorizer"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );

    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    for name in ["sa1", "sa2", "sb1", "unreferenced"] {
        let s = json!({"metadata": {"name": name}, "stringData": {"k": "v"}});
        secrets
            .create(&pp, &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    for name in ["ca1", "cb1"] {
        let c = json!({"metadata": {"name": name}, "data": {"k": "v"}});
        config_maps
            .create(&pp, &serde_json::from_value(c).unwrap())
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    // Node a: an env secret, a pull secret and a configMap volume; node b: envFrom.
    pods.create(
        &pp,
        &pod(
            "pa",
            &a,
            json!({"imagePullSecrets": [{"name": "sa2"}],
                   "containers": [{"name": "c", "image": "busybox:1.36",
                       "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "sa1", "key": "k"}}}],
                       "volumeMounts": [{"name": "cm", "mountPath": "/cm"}]}],
                   "volumes": [{"name": "cm", "configMap": {"name": "ca1"}}]}),
        ),
    )
    .await
    .unwrap();
    pods.create(
        &pp,
        &pod(
            "pb",
            &b,
            json!({"containers": [{"name": "c", "image": "busybox:1.36",
                "envFrom": [{"secretRef": {"name": "sb1"}}, {"configMapRef": {"name": "cb1"}}]}]}),
        ),
    )
    .await
    .unwrap();

    // Each Node gets its ServiceAccount.
    let sas: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_until("the nodes' service accounts", T, || async {
        match (sas.get_opt(&a).await, sas.get_opt(&b).await) {
            (Ok(Some(_)), Ok(Some(_))) => Ok(()),
            other => Err(format!("{other:?}\n{}", controllers.logs())),
        }
    })
    .await;

    // Agent a, with its DaemonSet token (bound to host Node a), asks for node tokens.
    let agent_token = rbac::service_account_token(&ns, &agent_sa, Some(("Node", &a)));
    let agent_a = rbac::token_client(&ns, "agent-a", &agent_token).await;
    rbac::node_restriction_in_force(&agent_a, &a).await;
    let agent_sas: Api<ServiceAccount> = Api::namespaced(agent_a.clone(), &ns.name);
    refused(
        "agent a requesting node b's token",
        agent_sas
            .create_token_request(&b, &pp, &token_request("Node", &b, &uid_b))
            .await,
        &format!(
            "node \"{a}\" can only request a token for its own service account \"{}/{a}\"",
            ns.name
        ),
    );
    for (what, tr) in [
        ("bound to node b", token_request("Node", &b, &uid_b)),
        (
            "bound to node a with b's uid",
            token_request("Node", &a, &uid_b),
        ),
        (
            "bound to nothing",
            serde_json::from_value(json!({"spec": {}})).unwrap(),
        ),
    ] {
        refused(
            &format!("agent a requesting its own node's token {what}"),
            agent_sas.create_token_request(&a, &pp, &tr).await,
            &format!("node \"{a}\" requested a token not bound to its own Node"),
        );
    }
    let token_a = agent_sas
        .create_token_request(&a, &pp, &token_request("Node", &a, &uid_a))
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .unwrap();
    let node_a = rbac::token_client(&ns, "node-a", &token_a).await;

    // Node a reads exactly what pa refers to.
    wait_reads(
        "node a's reads",
        &node_a,
        &ns.name,
        &[
            ("secret", "sa1", 200),
            ("secret", "sa2", 200),
            ("configmap", "ca1", 200),
            ("secret", "sb1", 403),
            ("configmap", "cb1", 403),
            ("secret", "unreferenced", 403),
            ("secret", "absent", 403),
        ],
    )
    .await;
    match Api::<Secret>::namespaced(node_a.clone(), &ns.name)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("node a listing secrets: {other:?}"),
    }
    // Node b's identity, from an agent whose token is bound to host Node b.
    let agent_b_token = rbac::service_account_token(&ns, &agent_sa, Some(("Node", &b)));
    let agent_b = rbac::token_client(&ns, "agent-b", &agent_b_token).await;
    let token_b = Api::<ServiceAccount>::namespaced(agent_b, &ns.name)
        .create_token_request(&b, &pp, &token_request("Node", &b, &uid_b))
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .unwrap();
    let node_b = rbac::token_client(&ns, "node-b", &token_b).await;
    wait_reads(
        "node b's reads",
        &node_b,
        &ns.name,
        &[
            ("secret", "sb1", 200),
            ("configmap", "cb1", 200),
            ("secret", "sa1", 403),
            ("configmap", "ca1", 403),
        ],
    )
    .await;

    // pa gone: node a's grant goes with it (its Role deleted); b's stays.
    pods.delete("pa", &DeleteParams::default()).await.unwrap();
    wait_reads(
        "node a's grant revoked",
        &node_a,
        &ns.name,
        &[("secret", "sa1", 403), ("configmap", "ca1", 403)],
    )
    .await;
    let roles: Api<Role> = Api::namespaced(ns.client.clone(), &ns.name);
    assert!(
        roles
            .get_opt(&format!("rekube-node:{a}"))
            .await
            .unwrap()
            .is_none(),
        "node a's role outlived its last pod"
    );
    assert_eq!(read_status(&node_b, &ns.name, "secret", "sb1").await, 200);

    // Node b's rekube Node deleted: its ServiceAccount goes, and its token with it.
    Api::<Node>::all(ns.client.clone())
        .delete(&b, &DeleteParams::default())
        .await
        .unwrap();
    wait_until("node b's service account deleted", T, || async {
        match sas.get_opt(&b).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_until("node b's token no longer accepted", T, || async {
        match read_status(&node_b, &ns.name, "secret", "sb1").await {
            401 => Ok(()),
            other => Err(format!("{other}")),
        }
    })
    .await;
    let logs = controllers.logs();
    assert!(
        !logs.contains("forbidden"),
        "the node authorizer hit a permission it lacks:\n{logs}"
    );
}
