//! Running a component under the least-privilege RBAC of rekube's Helm chart: the chart's
//! RBAC template (and the node agents' NodeRestriction policy) applied for a test release,
//! a kubeconfig with the service account's token (bound to a node or pod if asked), and
//! `kubectl auth can-i` checks. For the controllers, the permissions the chart grants
//! compared with the ones their request metrics show they used ([`rbac_differences`]).
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::Command;

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
    /// The template as rendered and applied.
    pub rendered: String,
}

impl Drop for ChartRbac {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "clusterrole,clusterrolebinding",
                &self.name,
                // The node agent's grant to every node's identity (ClusterTrustBundles).
                &format!("{}-node-identity", self.name),
                "--ignore-not-found",
            ])
            .output();
    }
}

/// Renders `template` of the chart for a release named after its namespace `release`, with
/// the node agents' Leases and the nodes' ServiceAccounts in `node_lease_namespace` (the
/// tests' scoping).
pub fn render_chart_template(release: &str, node_lease_namespace: &str, template: &str) -> String {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/rekube");
    run(Command::new("helm").args([
        "template",
        release,
        chart,
        "--namespace",
        release,
        "--kube-version",
        "1.36.3",
        "--show-only",
        template,
        "--set",
        &format!(
            "nodeLeaseNamespace={node_lease_namespace},createNodeLeaseNamespace=false,\
             nodeIdentityNamespace={node_lease_namespace},createNodeIdentityNamespace=false"
        ),
    ]))
}

fn apply(rendered: &str, template: &str) {
    crate::kubectl_apply(rendered, &format!("the chart's {template}"));
}

/// Renders `template` for a release named after the test namespace, with the node agents'
/// Leases in it too, and applies it.
fn apply_chart_template(ns: &TestNamespace, template: &str) {
    apply(
        &render_chart_template(&ns.name, &ns.name, template),
        template,
    );
}

/// Applies the chart's RBAC `template` for a release named after the test namespace, with
/// the node agents' Leases in it too. `component` is the suffix of the objects' names
/// (`controllers`, `node-agent`).
pub fn apply_chart_rbac(ns: &TestNamespace, template: &str, component: &str) -> ChartRbac {
    apply_chart_rbac_in(ns, &ns.name, template, component)
}

/// As [`apply_chart_rbac`], for a release in namespace `release` whose node agents' Leases
/// are in `node_lease_namespace`.
pub fn apply_chart_rbac_in(
    release: &TestNamespace,
    node_lease_namespace: &str,
    template: &str,
    component: &str,
) -> ChartRbac {
    let mut guard = ChartRbac {
        name: format!("{}-{component}", release.name),
        rendered: String::new(),
    };
    guard.rendered = render_chart_template(&release.name, node_lease_namespace, template);
    apply(&guard.rendered, template);
    guard
}

/// The chart's NodeRestriction policies of a test release (the agents', the node
/// identities' claim status one, `<name>-claim-status`, and the token requests one,
/// `<name>-tokens`), deleted on drop.
pub struct ChartNodeRestriction {
    /// The agents' policy's and its binding's name.
    pub name: String,
}

impl Drop for ChartNodeRestriction {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "validatingadmissionpolicy,validatingadmissionpolicybinding",
                &self.name,
                &format!("{}-claim-status", self.name),
                &format!("{}-tokens", self.name),
                &format!("{}-pod-certificates", self.name),
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

/// Asserts a request was refused by admission or RBAC: a 403 with `message` in the reason.
pub fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>, message: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(message) => {}
        other => panic!("{what}: expected a 403 with {message:?}, got {other:?}"),
    }
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

/// An authorization verb on a resource, written as rekube-controllers' request metrics
/// write it: `resource[.group][/subresource]` (`pods.rekube.io/status`,
/// `leases.coordination.k8s.io`), or a non-resource URL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub verb: String,
    pub resource: String,
}

impl Permission {
    pub fn new(verb: &str, resource: &str) -> Self {
        Permission {
            verb: verb.into(),
            resource: resource.into(),
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)
    }
}

/// Every permission the ClusterRoles and Roles in `rendered` (a chart template's YAML)
/// grant, each rule's verbs × apiGroups × resources (and nonResourceURLs), with the roles
/// granting it (`ClusterRole <name>`, `Role <namespace>/<name>`). Wildcards stay `*`:
/// a wildcard is never what a request uses, so it shows as a grant never used.
pub fn granted_permissions(rendered: &str) -> BTreeMap<Permission, Vec<String>> {
    use serde::Deserialize;
    let mut granted: BTreeMap<Permission, Vec<String>> = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(rendered) {
        let doc = serde_json::Value::deserialize(doc).expect("the rendered chart is YAML");
        let kind = doc["kind"].as_str().unwrap_or_default();
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let role = match doc["metadata"]["namespace"].as_str() {
            Some(ns) if kind == "Role" => format!("Role {ns}/{name}"),
            _ => format!("{kind} {name}"),
        };
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let mut resources = Vec::new();
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    // resource/subresource in the rule, resource.group/subresource here.
                    let (resource, sub) = match resource.split_once('/') {
                        Some((r, s)) => (r.to_string(), format!("/{s}")),
                        None => (resource, String::new()),
                    };
                    let dot_group = if group.is_empty() {
                        String::new()
                    } else {
                        format!(".{group}")
                    };
                    resources.push(format!("{resource}{dot_group}{sub}"));
                }
            }
            resources.extend(strings(&rule["nonResourceURLs"]));
            for verb in strings(&rule["verbs"]) {
                for resource in &resources {
                    granted
                        .entry(Permission::new(&verb, resource))
                        .or_default()
                        .push(role.clone());
                }
            }
        }
    }
    granted
}

/// The permissions a rekube-controllers process used, from the
/// `rekube_rest_client_requests_total{verb,resource,code}` series of its `/metrics`: each
/// with the status codes it was answered with and how many times.
pub fn used_permissions(metrics: &str) -> BTreeMap<Permission, BTreeMap<String, u64>> {
    let mut used: BTreeMap<Permission, BTreeMap<String, u64>> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("rekube_rest_client_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let count = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *used
            .entry(Permission::new(&label("verb"), &label("resource")))
            .or_default()
            .entry(label("code"))
            .or_default() += count;
    }
    used
}

/// `k="v",k2="v2"` of an OpenMetrics sample, with `\"`, `\\` and `\n` unescaped.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => {}
                },
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
    }
}

/// What keeps the granted permissions from being exactly the used ones, one sentence each
/// (none when they are): a use not granted, a use refused (403: granted, but not where it
/// was used), a grant never used unless `not_exercised` lists it (verb, resource, why no
/// test can make the controllers use it), a listed grant that is not granted, and a
/// permission two roles grant (the metrics cannot tell which of them was used).
/// Whether two of `roles` (`ClusterRole NAME` / `Role NS/NAME`) grant the same thing in
/// the same place: a ClusterRole covers every namespace, a Role its own. Roles of
/// different namespaces granting one pair are not a duplicate (RBAC has no other way to
/// grant it in both); the metrics cannot tell their uses apart, so one of them being used
/// is what the test sees.
fn granted_twice(roles: &[String]) -> bool {
    if roles.len() < 2 {
        return false;
    }
    let mut namespaces = Vec::new();
    for r in roles {
        match r.strip_prefix("Role ").and_then(|r| r.split_once('/')) {
            Some((ns, _)) => namespaces.push(ns),
            None => return true,
        }
    }
    namespaces.sort();
    namespaces.windows(2).any(|w| w[0] == w[1])
}

pub fn rbac_differences(
    granted: &BTreeMap<Permission, Vec<String>>,
    used: &BTreeMap<Permission, BTreeMap<String, u64>>,
    not_exercised: &[(&str, &str, &str)],
) -> Vec<String> {
    let listed = |p: &Permission| {
        not_exercised
            .iter()
            .any(|(verb, resource, _)| p.verb == *verb && p.resource == *resource)
    };
    let mut differences = Vec::new();
    for (p, codes) in used {
        if !granted.contains_key(p) {
            differences.push(format!("used but not granted: {p} (answered {codes:?})"));
        } else if let Some(n) = codes.get("403") {
            differences.push(format!(
                "refused {n} times though granted (in another namespace?): {p}"
            ));
        }
    }
    for (p, roles) in granted {
        if !used.contains_key(p) && !listed(p) {
            differences.push(format!(
                "granted but never used: {p} (by {})",
                roles.join(", ")
            ));
        }
        if granted_twice(roles) {
            differences.push(format!("granted twice: {p} (by {})", roles.join(" and ")));
        }
    }
    for (verb, resource, _) in not_exercised {
        let p = Permission::new(verb, resource);
        if !granted.contains_key(&p) {
            differences.push(format!("listed as not exercised but not granted: {p}"));
        }
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: r-controllers, namespace: r}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: r-controllers}
rules:
- apiGroups: [rekube.io]
  resources: [pods]
  verbs: [list, watch, patch]
- apiGroups: [rekube.io]
  resources: [pods/status]
  verbs: [patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r-controllers-leader-election, namespace: r}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, update]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
"#;

    fn metrics(samples: &[(&str, &str, &str, u64)]) -> String {
        let mut text = String::from(
            "# HELP rekube_rest_client_requests API requests\n# TYPE rekube_rest_client_requests counter\n",
        );
        for (verb, resource, code, n) in samples {
            text.push_str(&format!(
                "rekube_rest_client_requests_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}\n"
            ));
        }
        text.push_str("rekube_leader_election_master_status 1\n# EOF\n");
        text
    }

    /// Every grant of [`RENDERED`] used once.
    const ALL_USED: [(&str, &str, &str, u64); 7] = [
        ("list", "pods.rekube.io", "200", 2),
        ("watch", "pods.rekube.io", "200", 3),
        ("patch", "pods.rekube.io", "200", 1),
        ("patch", "pods.rekube.io/status", "409", 1),
        ("create", "events.events.k8s.io", "201", 4),
        ("get", "leases.coordination.k8s.io", "404", 1),
        ("update", "leases.coordination.k8s.io", "200", 9),
    ];

    #[test]
    fn rules_become_verb_resource_pairs() {
        let granted = granted_permissions(RENDERED);
        let pairs: Vec<String> = granted.keys().map(|p| p.to_string()).collect();
        assert_eq!(
            pairs,
            [
                "create events.events.k8s.io",
                "get configmaps",
                "get leases.coordination.k8s.io",
                "list pods.rekube.io",
                "patch pods.rekube.io",
                "patch pods.rekube.io/status",
                "update leases.coordination.k8s.io",
                "watch pods.rekube.io",
            ]
        );
        assert_eq!(
            granted[&Permission::new("get", "configmaps")],
            ["Role r/r-controllers-leader-election"]
        );
    }

    #[test]
    fn metrics_become_used_pairs_with_their_codes() {
        let used = used_permissions(&metrics(&[
            ("get", "nodes.rekube.io", "404", 2),
            ("get", "nodes.rekube.io", "200", 1),
            ("get", "/version", "200", 1),
        ]));
        assert_eq!(used.len(), 2);
        assert_eq!(
            used[&Permission::new("get", "nodes.rekube.io")],
            BTreeMap::from([("200".to_string(), 1), ("404".to_string(), 2)])
        );
        assert!(used.contains_key(&Permission::new("get", "/version")));
        assert_eq!(
            parse_labels(r#"a="x\"y",b="c,d=e""#),
            BTreeMap::from([
                ("a".to_string(), "x\"y".to_string()),
                ("b".to_string(), "c,d=e".to_string())
            ])
        );
    }

    #[test]
    fn exactly_what_is_used_passes() {
        let granted = granted_permissions(RENDERED);
        let mut used = ALL_USED.to_vec();
        used.push(("get", "configmaps", "200", 1));
        assert_eq!(
            rbac_differences(&granted, &used_permissions(&metrics(&used)), &[]),
            Vec::<String>::new()
        );
    }

    /// The check can fail: a grant nobody uses is named.
    #[test]
    fn an_extra_grant_fails() {
        let granted = granted_permissions(RENDERED);
        let used = used_permissions(&metrics(&ALL_USED));
        assert_eq!(
            rbac_differences(&granted, &used, &[]),
            ["granted but never used: get configmaps (by Role r/r-controllers-leader-election)"]
        );
        // Unless listed, with a reason, as one no test can exercise.
        assert_eq!(
            rbac_differences(&granted, &used, &[("get", "configmaps", "a reason")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_use_not_granted_or_refused_fails() {
        let granted = granted_permissions(RENDERED);
        let mut samples = ALL_USED.to_vec();
        samples.push(("get", "configmaps", "200", 1));
        samples.push(("delete", "pods.rekube.io", "403", 1));
        samples.push(("update", "leases.coordination.k8s.io", "403", 2));
        let used = used_permissions(&metrics(&samples));
        assert_eq!(
            rbac_differences(&granted, &used, &[]),
            [
                r#"used but not granted: delete pods.rekube.io (answered {"403": 1})"#,
                "refused 2 times though granted (in another namespace?): update leases.coordination.k8s.io",
            ]
        );
    }

    #[test]
    fn twice_means_in_the_same_place() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!granted_twice(&roles(&["Role a/x"])));
        assert!(!granted_twice(&roles(&["Role a/x", "Role b/y"])));
        assert!(granted_twice(&roles(&["Role a/x", "Role a/y"])));
        assert!(granted_twice(&roles(&["ClusterRole c", "Role a/y"])));
    }

    #[test]
    fn stale_lists_and_double_grants_fail() {
        let twice = format!(
            "{RENDERED}---\nkind: Role\nmetadata: {{name: other, namespace: r}}\nrules:\n- apiGroups: [coordination.k8s.io]\n  resources: [leases]\n  verbs: [get]\n"
        );
        let granted = granted_permissions(&twice);
        let mut samples = ALL_USED.to_vec();
        samples.push(("get", "configmaps", "200", 1));
        let used = used_permissions(&metrics(&samples));
        assert_eq!(
            rbac_differences(&granted, &used, &[("delete", "pods.rekube.io", "gone")]),
            [
                "granted twice: get leases.coordination.k8s.io (by Role r/r-controllers-leader-election and Role r/other)",
                "listed as not exercised but not granted: delete pods.rekube.io",
            ]
        );
    }
}
