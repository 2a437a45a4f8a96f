//! Running a component under the least-privilege RBAC of rekube's Helm chart: the chart's
//! RBAC template applied for a test release, a kubeconfig with the service account's
//! token, and `kubectl auth can-i` checks.
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
/// the node agents' Leases in the test namespace (the tests' scoping), and applies it.
/// `component` is the suffix of the objects' names (`controllers`, `node-agent`).
pub fn apply_chart_rbac(ns: &TestNamespace, template: &str, component: &str) -> ChartRbac {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/rekube");
    let rbac = run(Command::new("helm").args([
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
            "nodeLeaseNamespace={},createNodeLeaseNamespace=false",
            ns.name
        ),
    ]));
    let guard = ChartRbac {
        name: format!("{}-{component}", ns.name),
    };
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
        .write_all(rbac.as_bytes())
        .unwrap();
    assert!(
        apply.wait_with_output().unwrap().status.success(),
        "applying the chart's {template}"
    );
    guard
}

/// A kubeconfig file for the current cluster with a token of service account `sa` of
/// the test namespace.
pub fn service_account_kubeconfig(ns: &TestNamespace, sa: &str) -> PathBuf {
    let token = run(Command::new("kubectl").args([
        "create",
        "token",
        sa,
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
    let path = std::env::temp_dir().join(format!("{}-{sa}.kubeconfig", ns.name));
    std::fs::write(&path, serde_json::to_string(&kubeconfig).unwrap()).unwrap();
    path
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
