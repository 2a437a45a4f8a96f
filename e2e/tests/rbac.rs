//! rekube-controllers works with the least-privilege RBAC its Helm chart grants, and that
//! RBAC grants nothing beyond what the controllers use.
use std::process::Command;
use std::time::Duration;

use kube::api::{Api, PostParams};
use rekube_crds::Deployment;
use rekube_e2e::controllers::{ControllerProcess, external};
use rekube_e2e::{TestNamespace, kubelet, wait_until};
use serde_json::json;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Deletes the chart's cluster-scoped RBAC objects of the test release.
struct ClusterRbac(String);

impl Drop for ClusterRbac {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "clusterrole,clusterrolebinding",
                &self.0,
                "--ignore-not-found",
            ])
            .output();
    }
}

#[tokio::test]
async fn controllers_work_with_the_charts_least_privilege_rbac() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("rbac").await;
    let release = ns.name.clone();
    let name = format!("{release}-controllers");
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/rekube");
    let rbac = run(Command::new("helm").args([
        "template",
        &release,
        chart,
        "--namespace",
        &ns.name,
        "--kube-version",
        "1.36.3",
        "--show-only",
        "templates/controllers-rbac.yaml",
        // The node agents' Leases are read from the test namespace (the controllers'
        // scoping defaults), so the chart's lease Role goes there.
        "--set",
        &format!(
            "nodeLeaseNamespace={},createNodeLeaseNamespace=false",
            ns.name
        ),
    ]));
    let _cleanup = ClusterRbac(name.clone());
    let mut apply = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(rbac.as_bytes())
        .unwrap();
    assert!(
        apply.wait_with_output().unwrap().status.success(),
        "applying the chart's RBAC"
    );

    // A kubeconfig with the service account's token and the current cluster.
    let token = run(Command::new("kubectl").args([
        "create",
        "token",
        &name,
        "-n",
        &ns.name,
        "--duration",
        "1h",
    ]));
    let current: serde_json::Value = serde_json::from_str(&run(
        Command::new("kubectl").args(["config", "view", "--raw", "--minify", "-o", "json"])
    ))
    .unwrap();
    let mut cluster = current["clusters"][0]["cluster"].clone();
    if let Some(path) = cluster["certificate-authority"].as_str() {
        use base64::Engine;
        let ca = std::fs::read(path).unwrap();
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca));
        cluster
            .as_object_mut()
            .unwrap()
            .remove("certificate-authority");
    }
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "c",
    });
    let path = std::env::temp_dir().join(format!("{name}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&kubeconfig).unwrap()).unwrap();

    // Every controller, the scheduler included: it binds the pods to a node of the test.
    let node = rekube_e2e::nodes::create_node(&ns, "n", &Default::default()).await;
    let controllers = ControllerProcess::start_with_env(
        &ns.name,
        &["--controllers=*"],
        &[("KUBECONFIG", path.to_str().unwrap())],
    );
    let _kubelet = kubelet::start(
        ns.client.clone(),
        &ns.name,
        kubelet::ready_unless_never_ready_image(),
    );
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    wait_until(
        "the deployment available under the chart's RBAC",
        Duration::from_secs(90),
        || async {
            let st = deployments
                .get("web")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            if st.available_replicas == Some(2) && st.updated_replicas == Some(2) {
                Ok(())
            } else {
                Err(format!("{st:?}\n{}", controllers.logs()))
            }
        },
    )
    .await;
    let pods: Api<rekube_crds::Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_until(
        "the pods bound by the scheduler",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&Default::default()).await.unwrap().items;
            let bound = list
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                })
                .count();
            if bound == 2 {
                Ok(())
            } else {
                Err(format!("{bound} bound\n{}", controllers.logs()))
            }
        },
    )
    .await;
    let logs = controllers.logs();
    assert!(
        !logs.contains("forbidden"),
        "the controllers hit a permission they lack:\n{logs}"
    );

    // Nothing beyond what the controllers use.
    let sa = format!("system:serviceaccount:{}:{name}", ns.name);
    for (verb, resource, allowed) in [
        ("create", "pods.rekube.io", "yes"),
        ("delete", "replicasets.rekube.io", "yes"),
        ("delete", "deployments.rekube.io", "no"),
        ("create", "deployments.rekube.io", "no"),
        ("list", "secrets", "no"),
        ("create", "pods", "no"),
        ("update", "nodes.rekube.io", "no"),
        ("patch", "nodes.rekube.io", "yes"),
        ("delete", "nodes.rekube.io", "no"),
        ("update", "nodes.rekube.io/status", "yes"),
        ("patch", "pods.rekube.io/status", "yes"),
        ("create", "leases", "no"),
    ] {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let out = Command::new("kubectl")
            .args(["auth", "can-i", verb, resource, "--as", &sa, "-A"])
            .args((!subresource.is_empty()).then(|| format!("--subresource={subresource}")))
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(answer, allowed, "can {sa} {verb} {resource}?");
    }
}
