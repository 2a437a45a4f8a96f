//! Running a component under the least-privilege RBAC of rekube's Helm chart: the chart's
//! RBAC template (and the node agents' NodeRestriction policy) applied for a test release,
//! a kubeconfig with the service account's token (bound to a node or pod if asked), and
//! `kubectl auth can-i` checks.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::TestNamespace;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The chart's cluster-scoped RBAC objects of a test release, deleted on drop (the
/// namespaced ones go with the test namespace).
pub struct ChartRbac {
    /// The release's object name (`<release>-controllers`, `<release>-node-agent`).
    pub name: String,
}

impl Drop for ChartRbac {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "clusterrole,clusterrolebinding",
                &self.name,
                "--ignore-not-found",
            ])
            .output();
    }
}

/// Renders `template` of the chart for a release named after the test namespace, with
/// the node agents' Leases and the nodes' ServiceAccounts in the test namespace (the
/// tests' scoping), and applies it.
fn apply_chart_template(ns: &TestNamespace, template: &str) {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/rekube");
    let rendered = run(Command::new("helm").args([
        "template",
        &ns.name,
        chart,
        "--namespace",
        &ns.name,
        "--kube-version",
        "1.36.3",
        "--show-only",
        template,
        "--set",
        &format!(
            "nodeLeaseNamespace={0},createNodeLeaseNamespace=false,\
             nodeIdentityNamespace={0},createNodeIdentityNamespace=false",
            ns.name
        ),
    ]));
    let mut apply = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(rendered.as_bytes())
        .unwrap();
    assert!(
        apply.wait_with_output().unwrap().status.success(),
        "applying the chart's {template}"
    );
}

/// Applies the chart's RBAC `template` for a test release ([`apply_chart_template`]).
/// `component` is the suffix of the objects' names (`controllers`, `node-agent`).
pub fn apply_chart_rbac(ns: &TestNamespace, template: &str, component: &str) -> ChartRbac {
    let guard = ChartRbac {
        name: format!("{}-{component}", ns.name),
    };
    apply_chart_template(ns, template);
    guard
}

/// The chart's NodeRestriction policy of a test release, deleted on drop.
pub struct ChartNodeRestriction {
    /// The policy's and its binding's name.
    pub name: String,
}

impl Drop for ChartNodeRestriction {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "validatingadmissionpolicy,validatingadmissionpolicybinding",
                &self.name,
                "--ignore-not-found",
            ])
            .output();
    }
}

/// Applies the chart's NodeRestriction policy for the node agents of a test release
/// (`templates/node-restriction.yaml`). The apiserver enforces it a moment later: tests
/// wait for their first refusal.
pub fn apply_node_restriction(ns: &TestNamespace) -> ChartNodeRestriction {
    let guard = ChartNodeRestriction {
        name: format!("{}-node-agent-node-restriction", ns.name),
    };
    apply_chart_template(ns, "templates/node-restriction.yaml");
    guard
}

/// Waits until the NodeRestriction policy refuses `client` (an agent's, of node `node`)
/// another node's Node (a dry run: nothing is written meanwhile).
pub async fn node_restriction_in_force(client: &kube::Client, node: &str) {
    let nodes: kube::Api<rekube_crds::Node> = kube::Api::all(client.clone());
    let other: rekube_crds::Node = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Node", "metadata": {"name": format!("{node}-other")},
    }))
    .unwrap();
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    crate::wait_until(
        "the node restriction policy in force",
        std::time::Duration::from_secs(60),
        || async {
            match nodes.create(&dry_run, &other).await {
                Err(kube::Error::Api(s))
                    if s.code == 403 && s.message.contains("is not allowed to modify node") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// A token of service account `sa` of the test namespace, for an hour; bound to
/// `bound = (kind, name)` (`Pod` of the test namespace, or `Node`) when given: a
/// pod-bound or node-bound token carries the node's name in the user's extra info.
pub fn service_account_token(ns: &TestNamespace, sa: &str, bound: Option<(&str, &str)>) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.args(["create", "token", sa, "-n", &ns.name, "--duration", "1h"]);
    if let Some((kind, name)) = bound {
        cmd.args(["--bound-object-kind", kind, "--bound-object-name", name]);
    }
    run(&mut cmd).trim().to_string()
}

/// A kubeconfig file for the current cluster with a token of service account `sa` of
/// the test namespace.
pub fn service_account_kubeconfig(ns: &TestNamespace, sa: &str) -> PathBuf {
    token_kubeconfig(ns, sa, &service_account_token(ns, sa, None))
}

/// A kubeconfig file named after `name` for the current cluster with `token`.
pub fn token_kubeconfig(ns: &TestNamespace, name: &str, token: &str) -> PathBuf {
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
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "c",
    });
    let path = std::env::temp_dir().join(format!("{}-{name}.kubeconfig", ns.name));
    std::fs::write(&path, serde_json::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

/// A client of the current cluster with `token`.
pub async fn token_client(ns: &TestNamespace, name: &str, token: &str) -> kube::Client {
    let path = token_kubeconfig(ns, name, token);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Asserts `kubectl auth can-i` for service account `sa` of the test namespace:
/// `(verb, resource[/subresource], "yes"|"no")`.
pub fn assert_can_i(ns: &TestNamespace, sa: &str, checks: &[(&str, &str, &str)]) {
    let user = format!("system:serviceaccount:{}:{sa}", ns.name);
    for (verb, resource, allowed) in checks {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let out = Command::new("kubectl")
            .args(["auth", "can-i", verb, resource, "--as", &user, "-A"])
            .args((!subresource.is_empty()).then(|| format!("--subresource={subresource}")))
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(&answer, allowed, "can {user} {verb} {resource}?");
    }
}
