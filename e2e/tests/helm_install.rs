//! rekube installed with Helm as a user installs it, running as real pods on a real node
//! (issue 14): a kubelet v1.36.3 node with Debian's containerd and runc, a pause image built
//! here and the reference CNI plugins, in a network namespace of its own
//! (e2e/scripts/kubelet-node-up.sh); `helm install` of helm/rekube with the images of `just
//! images` (e2e/scripts/helm-install.sh); rekube-controllers' two replicas and the
//! rekube-node-agent DaemonSet pod Running on it, the agent registering its rekube Node
//! from inside its pod; then a rekube Deployment and Service run by those pods: three
//! rekube pods Ready on the node and the Service answered by them through the agent's
//! nftables proxy, from inside the node's network namespace; the chart's `helm test` smoke
//! pod passes. Then `helm uninstall`, with the workload still running, leaves nothing the
//! agent made on the node (its pods stopped and released by the agent when its DaemonSet
//! goes), and the node's teardown nothing of the node: no process, mount, network
//! namespace or cgroup. Needs root, containerd, the Go-built kubelet (built when missing).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use rekube_crds::testing::{cache_dir, missing_prerequisite};
use rekube_crds::{Node, Pod, Service};
use rekube_e2e::{TestNamespace, wait_until};

const NODE: &str = "kubelet-node-0";
const NODE_IP: &str = "172.31.251.1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a script of e2e/scripts with `args`; panics with its output when it fails.
fn script(name: &str, args: &[&str]) -> String {
    let path = repo().join("e2e/scripts").join(name);
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} {args:?} failed:\n{text}");
    println!("{name} {args:?}:\n{text}");
    text
}

/// What the test made goes even when it fails: the release, the node, and the CRDs'
/// companions `helm uninstall` removed with the release (the chart adopted what `just
/// install` had applied: admission policies, the node lease and identity namespaces), which
/// the next suites need; `just install` applies them again.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        for (name, args) in [
            ("helm-install.sh", &["uninstall"][..]),
            ("kubelet-node-up.sh", &["down"][..]),
        ] {
            let path = repo().join("e2e/scripts").join(name);
            match Command::new(&path).args(args).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "teardown: {name} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("teardown: {name}: {e}"),
            }
        }
        match Command::new("just")
            .arg("install")
            .current_dir(repo())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "teardown: just install: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("teardown: just install: {e}"),
        }
    }
}

/// The mount points under `dir` (mountinfo's fifth field).
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// The sample's three web pods Ready on the kubelet node; their names.
async fn wait_web_ready(pods: &Api<Pod>) -> Vec<String> {
    wait_until(
        "3 web pods Ready on the kubelet node",
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE)
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if ready.len() == 3 {
                Ok(ready)
            } else {
                Err(format!("{} of 3 Ready: {ready:?}", ready.len()))
            }
        },
    )
    .await
}

#[tokio::test]
async fn helm_install_runs_rekube_as_pods_on_a_kubelet_node() {
    if !nix::unistd::geteuid().is_root() {
        missing_prerequisite("the kubelet node needs root (network namespace, cgroups, mounts)");
        return;
    }
    let node_dir = cache_dir().join("kubelet-nodes").join(NODE);
    let teardown = Teardown;
    script("images.sh", &[]);
    script("kubelet-node-up.sh", &[]);
    let installed = script("helm-install.sh", &[]);
    assert!(
        installed.contains("rekube runs as pods on kubelet-node-0"),
        "{installed}"
    );

    // The agent registered its rekube Node from inside its pod, with the node's address.
    let ns = TestNamespace::new("helm").await;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let node = nodes.get(NODE).await.unwrap();
    let addresses: Vec<String> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|a| format!("{}={}", a.type_, a.address))
        .collect();
    assert!(
        addresses.contains(&format!("InternalIP={NODE_IP}")),
        "{addresses:?}"
    );

    // A rekube workload in a namespace of the test's: the chart's controllers (every
    // namespace) make and schedule its pods, the agent in its pod runs them.
    for doc in rekube_e2e::manifests("sample/web.yaml") {
        if doc["kind"] == "Namespace" {
            continue;
        }
        ns.create(doc).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_web_ready(&pods).await;
    let services: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    let ip = services
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let answered = wait_until(
        "the Service answered by two pods from the node",
        Duration::from_secs(60),
        || async {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..12 {
                let out = Command::new("nsenter")
                    .args([
                        &format!("--net=/run/netns/rk-{NODE}"),
                        "curl",
                        "-fsS",
                        "--max-time",
                        "2",
                    ])
                    .arg(format!("http://{ip}/hostname"))
                    .output()
                    .map_err(|e| e.to_string())?;
                if out.status.success() {
                    seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_string());
                }
            }
            if seen.len() >= 2 {
                Ok(seen)
            } else {
                Err(format!("answered by {seen:?}"))
            }
        },
    )
    .await;
    assert!(
        answered.iter().all(|p| p.starts_with("web-")),
        "{answered:?}"
    );

    // The chart's own smoke test (`helm test`): its pod makes a rekube Deployment, waits
    // for it to be Available and for its Service to answer. (No --logs: the apiserver
    // cannot reach a kubelet inside the node's network namespace.)
    let chart = repo().join("helm/rekube");
    let helm = |args: &[&str]| {
        let out = Command::new("helm")
            .args(args)
            .output()
            .expect("helm on the PATH");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "helm {args:?}:\n{text}");
        text
    };
    let upgrade = |set: &[&str]| {
        let mut args = vec![
            "upgrade",
            "rekube",
            chart.to_str().unwrap(),
            "-n",
            "rekube-system",
            "--reuse-values",
        ];
        args.extend_from_slice(set);
        helm(&args)
    };
    upgrade(&["--set", "tests.enabled=true"]);
    let tested = helm(&["test", "rekube", "-n", "rekube-system", "--timeout", "3m"]);
    assert!(
        tested.contains("Phase:          Succeeded") && !tested.contains("Phase:          Failed"),
        "{tested}"
    );

    // A `helm upgrade` that changes the agents' pod template rolls them: the stopped
    // agent finds its DaemonSet there and removes nothing (the workload's pods keep the
    // agent's finalizer and run again under the new agent).
    upgrade(&[
        "--set",
        "nodeAgent.logLevel=debug",
        "--wait",
        "--timeout",
        "3m",
    ]);
    let after_upgrade = wait_web_ready(&pods).await;
    for name in &after_upgrade {
        let p = pods.get(name).await.unwrap();
        assert!(
            p.finalizers().iter().any(|f| f == "rekube.io/node-agent"),
            "{name} was released by an agent that was only rolled: {:?}",
            p.finalizers()
        );
    }

    // `helm uninstall` while the workload runs: the hook deletes the DaemonSet; each
    // agent, stopped and finding it gone, stops its node's pods and removes what it made
    // there. Nothing of it is left on the node (checked before the node's own teardown),
    // and the workload's pods are released (no agent finalizer), so deleting them does
    // not hang.
    script("helm-install.sh", &["uninstall"]);
    let left = script("helm-install.sh", &["leftovers"]);
    assert!(left.contains("nothing of the agent is left"), "{left}");
    let held: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| !p.finalizers().is_empty())
        .map(|p| format!("{} {:?}", p.name_any(), p.finalizers()))
        .collect();
    assert!(held.is_empty(), "pods still held: {held:?}");
    drop(ns);

    // The node's teardown leaves nothing of it.
    drop(teardown);
    assert!(
        mounts_under(&node_dir).is_empty(),
        "{:?}",
        mounts_under(&node_dir)
    );
    assert!(!node_dir.exists(), "{} left", node_dir.display());
    assert!(
        !Path::new(&format!("/run/netns/rk-{NODE}")).exists(),
        "network namespace left"
    );
    for hierarchy in ["", "memory", "pids", "cpu"] {
        for cgroup in [format!("kubelet-{NODE}"), format!("rekube-{NODE}")] {
            let path = Path::new("/sys/fs/cgroup").join(hierarchy).join(&cgroup);
            assert!(!path.exists(), "{} left", path.display());
        }
    }
    let left = Command::new("pgrep")
        .args(["-f", &format!("kubelet-nodes/{NODE}")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(
        nodes.get_opt(NODE).await.unwrap().is_none(),
        "the rekube Node {NODE} is left"
    );
}
