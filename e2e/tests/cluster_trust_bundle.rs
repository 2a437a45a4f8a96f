//! Projected clusterTrustBundle volumes on a real `rekube-node-agent run` (as root),
//! under the chart's RBAC and NodeRestriction policy with the node authorizer of
//! rekube-controllers, against the apiserver's own `certificates.k8s.io/v1beta1`
//! ClusterTrustBundles (the local cluster serves them: e2e/scripts/cluster-up.sh).
//!
//! Three bundles of signer `example.com/signer` (two picked by the pod's label selector,
//! one of them repeating the other's certificate, and one left out by it) and one bundle
//! without a signer, of self-signed certificates made here with the openssl CLI. A pod
//! projects the unsigned bundle by name, the signer's by selector and an optional missing
//! bundle: the container reads exactly upstream's normalized PEM (the certificates
//! deduplicated, in the order of their DER bytes), and an empty file for the optional
//! one (upstream writes the empty anchors too). The named bundle edited while the pod
//! runs: the new certificate is in the running pod within a sync. A pod naming a
//! bundle that does not exist waits with upstream's FailedMount, and runs once it exists.
//! Nothing is left on the node.
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rekube_crds::Pod;
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers};
use rekube_e2e::controllers::{ControllerProcess, external};
use rekube_e2e::storage::event_notes;
use rekube_e2e::{TestNamespace, rbac, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const SIGNER: &str = "example.com/signer";
/// The label of this run's bundles (ClusterTrustBundles are cluster-wide).
const RUN_LABEL: &str = "rekube.io/e2e-run";
const MOUNT: &str = "/etc/ctb";

/// A self-signed certificate of common name `cn`, PEM (the openssl CLI).
fn self_signed(dir: &std::path::Path, cn: &str) -> String {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1"])
        .arg("-keyout")
        .arg(dir.join(format!("{cn}.key")))
        .args(["-subj", &format!("/CN={cn}")])
        .output()
        .expect("the openssl CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The DER bytes of a one-certificate PEM.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// upstream's normalized anchors of `pems` (one certificate each): deduplicated, in the
/// order of their DER bytes; openssl's PEM is Go's encoding already (64 columns).
fn normalized(pems: &[&str]) -> String {
    let mut v: Vec<&str> = pems.to_vec();
    v.sort_by_key(|p| der(p));
    v.dedup();
    v.concat()
}

/// Deletes this run's ClusterTrustBundles on drop.
struct Bundles(String);

impl Drop for Bundles {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "clustertrustbundles.certificates.k8s.io",
                "-l",
                &format!("{RUN_LABEL}={}", self.0),
                "--ignore-not-found",
            ])
            .output();
    }
}

fn bundle(
    run: &str,
    name: &str,
    signer: Option<&str>,
    pick: &str,
    pems: &[&str],
) -> ClusterTrustBundle {
    serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1beta1", "kind": "ClusterTrustBundle",
        "metadata": {"name": name, "labels": {RUN_LABEL: run, "pick": pick}},
        "spec": {"signerName": signer, "trustBundle": pems.concat()},
    }))
    .unwrap()
}

fn pod(node: &str, name: &str, sources: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo ready; sleep 3600"],
                "volumeMounts": [{"name": "ctb", "mountPath": MOUNT, "readOnly": true}]}],
            "volumes": [{"name": "ctb", "projected": {"defaultMode": 0o644, "sources": sources}}],
        },
    }))
    .unwrap()
}

/// A file of the volume as the container reads it, byte for byte (`None`: no such file;
/// the exec's output is trimmed, so the file is framed by markers).
fn file_in_pod(agent: &AgentProcess, pod: &Pod, file: &str) -> Option<String> {
    let (out, _, ok) = agent.exec_shell(
        pod,
        "c",
        &format!("echo '<'; cat {MOUNT}/{file} && echo '>'"),
    );
    let framed = out.strip_prefix("<\n")?.strip_suffix(">")?;
    ok.then(|| framed.to_string())
}

#[tokio::test]
async fn a_pod_reads_cluster_trust_bundles_by_name_and_by_signer() {
    if cannot_run_containers() {
        return;
    }
    if external() {
        println!("skipped: needs controller processes of its own");
        return;
    }
    let ns = TestNamespace::new("ctb").await;
    let run = ns.name.clone();
    let pp = PostParams::default();
    let _agent_rbac = rbac::apply_chart_rbac(&ns, "templates/node-agent-rbac.yaml", "node-agent");
    let _controllers_rbac =
        rbac::apply_chart_rbac(&ns, "templates/controllers-rbac.yaml", "controllers");
    let _policy = rbac::apply_node_restriction(&ns);

    // The certificates and the bundles: a signer's names are `<signer with :>:<suffix>`.
    let dir = tempfile::tempdir().unwrap();
    let (c1, c2, c3, c4) = (
        self_signed(dir.path(), "one"),
        self_signed(dir.path(), "two"),
        self_signed(dir.path(), "three"),
        self_signed(dir.path(), "four"),
    );
    let bundles: Api<ClusterTrustBundle> = Api::all(ns.client.clone());
    let _cleanup = Bundles(run.clone());
    let signed = |suffix: &str| format!("example.com:signer:{run}-{suffix}");
    let plain = format!("{run}-plain");
    for b in [
        bundle(&run, &signed("a"), Some(SIGNER), "yes", &[&c1]),
        bundle(&run, &signed("b"), Some(SIGNER), "yes", &[&c2, &c1]),
        bundle(&run, &signed("c"), Some(SIGNER), "no", &[&c3]),
        bundle(&run, &plain, None, "yes", &[&c3]),
    ] {
        bundles.create(&pp, &b).await.unwrap();
    }

    // The agent as the chart runs it (its node's own identity reads the bundles), and
    // the node authorizer that keeps that identity.
    ns.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}))
        .await
        .unwrap();
    let node = ns.cluster_name("n");
    let agent_sa = format!("{}-node-agent", ns.name);
    let token = rbac::service_account_token(&ns, &agent_sa, Some(("Node", &node)));
    let agent_kubeconfig = rbac::token_kubeconfig(&ns, &agent_sa, &token);
    let controllers_kubeconfig =
        rbac::service_account_kubeconfig(&ns, &format!("{}-controllers", ns.name));
    let controllers = ControllerProcess::start_with_env(
        &ns.name,
        &["--controllers=node-authorizer"],
        &[("KUBECONFIG", controllers_kubeconfig.to_str().unwrap())],
    );
    let agent = AgentProcess::start_real_with_env(
        &ns,
        "n",
        &["--node-identity-namespace", &ns.name],
        &[("KUBECONFIG", agent_kubeconfig.to_str().unwrap())],
    );

    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let reader = pods
        .create(
            &pp,
            &pod(
                &node,
                "reader",
                json!([
                    {"clusterTrustBundle": {"name": plain, "path": "plain.pem"}},
                    {"clusterTrustBundle": {"signerName": SIGNER, "path": "signer.pem",
                        "labelSelector": {"matchLabels": {RUN_LABEL: run, "pick": "yes"}}}},
                    {"clusterTrustBundle": {"name": format!("{run}-absent"), "path": "optional.pem",
                        "optional": true}},
                ]),
            ),
        )
        .await
        .unwrap();
    wait_until("the reader running", T, || async {
        let p = pods.get("reader").await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => Ok(()),
            other => Err(format!(
                "{other:?}\n{}\n{}",
                agent.logs(),
                controllers.logs()
            )),
        }
    })
    .await;
    let reader = pods
        .get(reader.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(file_in_pod(&agent, &reader, "plain.pem"), Some(c3.clone()));
    assert_eq!(
        file_in_pod(&agent, &reader, "signer.pem"),
        Some(normalized(&[&c1, &c2, &c1])),
        "the signer's bundles picked by the selector, deduplicated and sorted"
    );
    assert_eq!(
        file_in_pod(&agent, &reader, "optional.pem"),
        Some(String::new()),
        "an optional missing bundle: an empty file, as upstream's"
    );

    // The named bundle edited: the running pod sees it within a sync.
    bundles
        .patch(
            &plain,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"trustBundle": c4.clone() + &c3}})),
        )
        .await
        .unwrap();
    let want = normalized(&[&c4, &c3]);
    wait_until("the edited bundle in the running pod", T, || async {
        match file_in_pod(&agent, &reader, "plain.pem") {
            Some(got) if got == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A bundle that does not exist and is not optional: upstream's FailedMount, the pod
    // waits; it runs once the bundle is made.
    let late = format!("{run}-late");
    pods.create(
        &pp,
        &pod(
            &node,
            "waiter",
            json!([{"clusterTrustBundle": {"name": late, "path": "late.pem"}}]),
        ),
    )
    .await
    .unwrap();
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let want = format!(
        "MountVolume.SetUp failed for volume \"ctb\" : while getting ClusterTrustBundle: \
         clustertrustbundle.certificates.k8s.io \"{late}\" not found"
    );
    wait_until("the FailedMount naming the missing bundle", T, || async {
        let notes = event_notes(&events, Some("Pod"), "waiter", "FailedMount").await;
        notes
            .contains(&want)
            .then_some(())
            .ok_or_else(|| format!("{notes:?}\n{}", agent.logs()))
    })
    .await;
    let waiting = pods.get("waiter").await.unwrap();
    assert_eq!(
        waiting.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "the pod ran without its bundle"
    );
    bundles
        .create(&pp, &bundle(&run, &late, None, "no", &[&c2]))
        .await
        .unwrap();
    let waiter = wait_until("the waiter running", T, || async {
        let p = pods.get("waiter").await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => Ok(p),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(file_in_pod(&agent, &waiter, "late.pem"), Some(c2.clone()));

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    for (what, logs) in [("agent", agent.logs()), ("controllers", controllers.logs())] {
        assert!(
            !logs.to_lowercase().contains("forbidden"),
            "the {what} hit a permission it lacks:\n{logs}"
        );
    }
}
