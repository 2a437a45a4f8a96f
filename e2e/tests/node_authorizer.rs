//! The node authorizer (upstream's Node authorizer, as RBAC that rekube-controllers keeps)
//! and the token rule of the NodeRestriction policy: a node agent reads, as its node's
//! ServiceAccount, exactly the Secrets, ConfigMaps and PersistentVolumeClaims of the pods
//! bound to its node and the PersistentVolumes those claims are bound to, nothing of
//! another node's pods and nothing unreferenced; it writes the status of its pods' claims
//! only, and there only a filesystem expansion's fields (NodeRestriction's
//! admitPVCStatus); it can get a token of no other node's ServiceAccount; it requests
//! tokens of its own pods' ServiceAccounts bound to their token binding Secrets (made by
//! the pod token binding controller), and none of another node's pods' ServiceAccounts,
//! unbound, or bound to anything else (the node identities' token policy), and the
//! controllers none at all; a grant goes with the last pod that needed it (and the token
//! with its pod's binding), and the ServiceAccount with its Node. The controllers run
//! under the chart's RBAC.
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rekube_crds::node_identity::NODE_IDENTITY_NAMESPACE_LABEL;
use rekube_crds::token_binding::pod_token_binding_secret_name;
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
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

/// Answers of `client` to a GET of each `(kind, name)`: the HTTP status. Kinds: `secret`,
/// `configmap`, `pvc` (rekube's, in `ns`) and `pv` (rekube's, cluster-scoped).
async fn read_status(client: &kube::Client, ns: &str, kind: &str, name: &str) -> u16 {
    let r = match kind {
        "secret" => Api::<Secret>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .map(|_| ()),
        "configmap" => Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .map(|_| ()),
        "pvc" => Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .map(|_| ()),
        "pv" => Api::<PersistentVolume>::all(client.clone())
            .get(name)
            .await
            .map(|_| ()),
        other => panic!("no kind {other}"),
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

/// The node authorizer's ClusterRoles and ClusterRoleBindings of the test's nodes (its
/// identity namespace's), deleted on drop should the test end before the controller
/// deletes them.
struct ClusterGrants(String);

impl Drop for ClusterGrants {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "clusterrole,clusterrolebinding",
                "-l",
                &format!("{NODE_IDENTITY_NAMESPACE_LABEL}={}", self.0),
                "--ignore-not-found",
            ])
            .output();
    }
}

/// A rekube PersistentVolume `name` (renamed with the test's cluster name); its name.
async fn create_pv(ns: &TestNamespace, name: &str) -> String {
    let pv = json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": format!("/tmp/{name}")}}});
    let pv = ns.create(pv).await.unwrap();
    pv["metadata"]["name"].as_str().unwrap().to_string()
}

/// A rekube PersistentVolumeClaim `name`, bound to `volume` (`spec.volumeName` and a
/// `Bound` phase, as the PV controller would write them) if given.
async fn create_claim(ns: &TestNamespace, name: &str, volume: Option<&str>) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let c = json!({"metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}}});
    claims
        .create(&PostParams::default(), &serde_json::from_value(c).unwrap())
        .await
        .unwrap();
    if let Some(volume) = volume {
        bind_claim(&claims, name, volume).await;
    }
}

async fn bind_claim(claims: &Api<PersistentVolumeClaim>, name: &str, volume: &str) {
    let pp = PatchParams::default();
    claims
        .patch(
            name,
            &pp,
            &Patch::Merge(json!({"spec": {"volumeName": volume}})),
        )
        .await
        .unwrap();
    claims
        .patch_status(
            name,
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .unwrap();
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
async fn a_node_reads_only_its_own_pods_secrets_config_maps_and_volumes() {
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
    let _cluster_grants = ClusterGrants(ns.name.clone());
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
        &["--controllers=node-authorizer,pod-token-binding"],
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
    // Claims: pa's (bound), pa's generic ephemeral volume's `pa-scratch` (bound), pb's
    // (bound later) and one no pod uses (bound).
    let pv_a = create_pv(&ns, "pva").await;
    let pv_scratch = create_pv(&ns, "pva-scratch").await;
    let pv_b = create_pv(&ns, "pvb").await;
    let pv_x = create_pv(&ns, "pvx").await;
    create_claim(&ns, "claim-a", Some(&pv_a)).await;
    create_claim(&ns, "pa-scratch", Some(&pv_scratch)).await;
    create_claim(&ns, "claim-b", None).await;
    create_claim(&ns, "claim-x", Some(&pv_x)).await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    // Node a: an env secret, a pull secret, a configMap volume, a claim, an ephemeral
    // volume and a projected token of ServiceAccount app-a; node b: envFrom, a claim and
    // a projected token of app-b.
    for name in ["app-a", "app-b"] {
        Api::<ServiceAccount>::namespaced(ns.client.clone(), &ns.name)
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let token_volume = json!({"name": "token", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}}]}});
    let pa_volumes = json!([
        token_volume.clone(),
        {"name": "cm", "configMap": {"name": "ca1"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "claim-a"}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}}}}}},
    ]);
    let created_pa = pods.create(
        &pp,
        &pod(
            "pa",
            &a,
            json!({"imagePullSecrets": [{"name": "sa2"}], "serviceAccountName": "app-a",
                   "containers": [{"name": "c", "image": "busybox:1.36",
                       "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "sa1", "key": "k"}}}],
                       "volumeMounts": [{"name": "cm", "mountPath": "/cm"}]}],
                   "volumes": pa_volumes}),
        ),
    )
    .await
    .unwrap();
    let created_pb = pods.create(
        &pp,
        &pod(
            "pb",
            &b,
            json!({"serviceAccountName": "app-b", "containers": [{"name": "c", "image": "busybox:1.36",
                "envFrom": [{"secretRef": {"name": "sb1"}}, {"configMapRef": {"name": "cb1"}}]}],
                "volumes": [token_volume, {"name": "data", "persistentVolumeClaim": {"claimName": "claim-b"}}]}),
        ),
    )
    .await
    .unwrap();
    // Their token binding Secrets, made by the pod token binding controller.
    let (binding_a, binding_b) = (
        pod_token_binding_secret_name(&created_pa),
        pod_token_binding_secret_name(&created_pb),
    );
    let secret_uid = |name: String| {
        let secrets = secrets.clone();
        async move {
            wait_until(&format!("token binding secret {name}"), T, || async {
                match secrets.get_opt(&name).await {
                    Ok(Some(s)) => Ok(s.metadata.uid.unwrap_or_default()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    let (uid_binding_a, uid_binding_b) = (
        secret_uid(binding_a.clone()).await,
        secret_uid(binding_b.clone()).await,
    );

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

    // Node a reads exactly what pa refers to, and the volumes of its claims.
    wait_reads(
        "node a's reads",
        &node_a,
        &ns.name,
        &[
            ("secret", "sa1", 200),
            ("secret", "sa2", 200),
            ("configmap", "ca1", 200),
            ("pvc", "claim-a", 200),
            ("pvc", "pa-scratch", 200),
            ("pv", pv_a.as_str(), 200),
            ("pv", pv_scratch.as_str(), 200),
            ("secret", "sb1", 403),
            ("configmap", "cb1", 403),
            ("pvc", "claim-b", 403),
            ("pv", pv_b.as_str(), 403),
            ("secret", "unreferenced", 403),
            ("pvc", "claim-x", 403),
            ("pv", pv_x.as_str(), 403),
            ("secret", "absent", 403),
            ("pvc", "absent", 403),
            ("secret", binding_a.as_str(), 200),
            ("secret", binding_b.as_str(), 403),
        ],
    )
    .await;
    // The status of its pods' claims (upstream's authorizeStatusUpdate), and there only
    // what a filesystem expansion changes (upstream's admitPVCStatus).
    let node_a_claims: Api<PersistentVolumeClaim> = Api::namespaced(node_a.clone(), &ns.name);
    let expanded = json!({"status": {"capacity": {"storage": "2Gi"},
        "conditions": [{"type": "FileSystemResizePending", "status": "True"}]}});
    let refused_status = format!(
        "node \"{a}\" is not allowed to update fields other than status.quantity and status.conditions: status.accessModes"
    );
    // Retried while the node authorizer's grant of the status lags (an RBAC refusal).
    wait_until("node a's claim status rules", T, || async {
        let modes = node_a_claims
            .patch_status(
                "claim-a",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"accessModes": ["ReadWriteMany"]}})),
            )
            .await;
        match modes {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(&refused_status) => {
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 403 => Err(s.message),
            other => panic!("node a changing a claim's status.accessModes: {other:?}"),
        }
    })
    .await;
    let patched = node_a_claims
        .patch_status(
            "claim-a",
            &PatchParams::default(),
            &Patch::Merge(expanded.clone()),
        )
        .await
        .unwrap();
    let status = patched.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Bound"));
    assert_eq!(status.capacity.unwrap()["storage"].0, "2Gi");
    refused(
        "node a writing the status of a claim no pod of its uses",
        node_a_claims
            .patch_status(
                "claim-x",
                &PatchParams::default(),
                &Patch::Merge(expanded.clone()),
            )
            .await,
        "cannot patch resource \"persistentvolumeclaims/status\"",
    );
    refused(
        "node a writing a claim's spec",
        node_a_claims
            .patch(
                "claim-a",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "cannot patch resource \"persistentvolumeclaims\"",
    );
    // Node a requests tokens of its pod's ServiceAccount bound to its pod's token
    // binding Secret, and of no other ServiceAccount, bound to nothing else.
    let node_a_sas: Api<ServiceAccount> = Api::namespaced(node_a.clone(), &ns.name);
    let pod_token = wait_until("node a's token of its pod's service account", T, || async {
        node_a_sas
            .create_token_request(
                "app-a",
                &pp,
                &token_request("Secret", &binding_a, &uid_binding_a),
            )
            .await
            .map_err(|e| e.to_string())
            .and_then(|tr| tr.status.and_then(|s| s.token).ok_or("no token".into()))
    })
    .await;
    let review: TokenReview =
        serde_json::from_value(json!({"spec": {"token": pod_token}})).unwrap();
    let status = Api::<TokenReview>::all(ns.client.clone())
        .create(&pp, &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.and_then(|u| u.username),
        Some(format!("system:serviceaccount:{}:app-a", ns.name))
    );
    let rbac_refusal = "cannot create resource \"serviceaccounts/token\"";
    refused(
        "node a requesting a token of node b's pod's service account",
        node_a_sas
            .create_token_request(
                "app-b",
                &pp,
                &token_request("Secret", &binding_b, &uid_binding_b),
            )
            .await,
        rbac_refusal,
    );
    refused(
        "node a requesting a token of a service account none of its pods runs as",
        node_a_sas
            .create_token_request(
                "default",
                &pp,
                &token_request("Secret", &binding_a, &uid_binding_a),
            )
            .await,
        rbac_refusal,
    );
    let sa1_uid = secrets.get("sa1").await.unwrap().metadata.uid.unwrap();
    for (what, tr) in [
        (
            "bound to nothing",
            serde_json::from_value(json!({"spec": {}})).unwrap(),
        ),
        ("bound to its Node", token_request("Node", &a, &uid_a)),
        (
            "bound to another secret of its pod",
            token_request("Secret", "sa1", &sa1_uid),
        ),
    ] {
        refused(
            &format!("node a requesting its pod's service account's token {what}"),
            node_a_sas.create_token_request("app-a", &pp, &tr).await,
            &format!("node \"{a}\" requested a token not bound to a token binding secret"),
        );
    }
    refused(
        "node a requesting a token bound to node b's pod's binding",
        node_a_sas
            .create_token_request(
                "app-a",
                &pp,
                &token_request("Secret", &binding_b, &uid_binding_b),
            )
            .await,
        &format!(
            "node \"{a}\" requested a token bound to secret \"{binding_b}\", the token binding of none of its pods"
        ),
    );
    // The controllers hold create on serviceaccounts/token to grant it, and may use it
    // for nothing.
    let controllers_client = rbac::token_client(
        &ns,
        "controllers",
        &rbac::service_account_token(&ns, &controllers_sa, None),
    )
    .await;
    refused(
        "the controllers requesting a token",
        Api::<ServiceAccount>::namespaced(controllers_client, &ns.name)
            .create_token_request(
                "app-a",
                &pp,
                &token_request("Secret", &binding_a, &uid_binding_a),
            )
            .await,
        "rekube-controllers may not request service account tokens",
    );
    match Api::<Secret>::namespaced(node_a.clone(), &ns.name)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("node a listing secrets: {other:?}"),
    }
    match Api::<PersistentVolume>::all(node_a.clone())
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("node a listing persistent volumes: {other:?}"),
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
    // Its claim not bound yet: the claim, no volume.
    wait_reads(
        "node b's reads",
        &node_b,
        &ns.name,
        &[
            ("secret", "sb1", 200),
            ("configmap", "cb1", 200),
            ("pvc", "claim-b", 200),
            ("pv", pv_b.as_str(), 403),
            ("secret", "sa1", 403),
            ("configmap", "ca1", 403),
            ("pvc", "claim-a", 403),
            ("pv", pv_a.as_str(), 403),
        ],
    )
    .await;
    // The claim bound: the volume too.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    bind_claim(&claims, "claim-b", &pv_b).await;
    wait_reads(
        "node b's volume once its claim is bound",
        &node_b,
        &ns.name,
        &[("pv", pv_b.as_str(), 200), ("pv", pv_a.as_str(), 403)],
    )
    .await;

    // pa gone: node a's grant goes with it (its Role and ClusterRole deleted); b's stays.
    // Its binding goes with it (the garbage collector), and the token bound to it dies.
    pods.delete("pa", &DeleteParams::default()).await.unwrap();
    wait_until("pa's token refused", T, || async {
        let review: TokenReview =
            serde_json::from_value(json!({"spec": {"token": pod_token}})).unwrap();
        let status = Api::<TokenReview>::all(ns.client.clone())
            .create(&pp, &review)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        (status.authenticated != Some(true))
            .then_some(())
            .ok_or_else(|| format!("{status:?}"))
    })
    .await;
    wait_until("node a's token requests refused", T, || async {
        match node_a_sas
            .create_token_request(
                "app-a",
                &pp,
                &token_request("Secret", &binding_a, &uid_binding_a),
            )
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_reads(
        "node a's grant revoked",
        &node_a,
        &ns.name,
        &[
            ("secret", "sa1", 403),
            ("configmap", "ca1", 403),
            ("pvc", "claim-a", 403),
            ("pv", pv_a.as_str(), 403),
            ("pv", pv_scratch.as_str(), 403),
        ],
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
    let cluster_roles: Api<ClusterRole> = Api::all(ns.client.clone());
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(ns.client.clone());
    let cluster_grant_gone = |node: String| {
        let (roles, bindings) = (cluster_roles.clone(), cluster_bindings.clone());
        async move {
            let name = format!("rekube-node:{node}");
            wait_until(
                &format!("node {node}'s cluster role deleted"),
                T,
                || async {
                    match (roles.get_opt(&name).await, bindings.get_opt(&name).await) {
                        (Ok(None), Ok(None)) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await
        }
    };
    cluster_grant_gone(a.clone()).await;
    assert_eq!(read_status(&node_b, &ns.name, "secret", "sb1").await, 200);
    assert_eq!(read_status(&node_b, &ns.name, "pv", &pv_b).await, 200);

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
    // Its Node gone, its ClusterRole stays while pb does (as upstream's graph edges), and
    // goes with pb.
    assert!(
        cluster_roles
            .get_opt(&format!("rekube-node:{b}"))
            .await
            .unwrap()
            .is_some(),
        "node b's cluster role went with its Node, before its pod"
    );
    pods.delete("pb", &DeleteParams::default()).await.unwrap();
    cluster_grant_gone(b.clone()).await;
    // The volumes, which StorageObjectInUseProtection's finalizer would keep: no
    // protection controller runs here.
    rekube_e2e::storage::delete_test_volumes(&ns).await;
    let logs = controllers.logs();
    assert!(
        !logs.contains("forbidden"),
        "the node authorizer hit a permission it lacks:\n{logs}"
    );
}
