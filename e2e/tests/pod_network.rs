//! The pod network through CNI on several nodes (issue 12): two real node agents, each in
//! a network namespace of the test's own ([`rekube_e2e::netns::TestNetwork`]), with the
//! cni pod network: each installs its default network (the reference bridge, host-local
//! and portmap plugins) over the pod CIDR node IPAM gave its Node, keeps a route to the
//! other Node's pods and masquerades what leaves the cluster CIDR. Checked: a pod on one
//! node fetches a page from a pod on the other by its pod IP, a hostPort answers on its
//! node's address, the routes follow the Nodes, a CNI failure is the pod's
//! FailedCreatePodSandBox event and the pod waits, and after the pods are gone no veth,
//! IPAM reservation or CNI cache entry is left.
//!
//! Needs root, Debian's busybox-static, iproute2, nftables and the reference plugins
//! (`e2e/scripts/build-kubernetes.sh cni-plugins`); missing, the test fails and says why
//! (unless REKUBE_SKIP_PRIVILEGED=1).
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rekube_crds::{Node, Pod};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::netns::TestNetwork;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);
const CLUSTER_CIDR: &str = "10.244.0.0/16";

fn skip() -> bool {
    match TestNetwork::agent_prerequisites() {
        Ok(()) => false,
        Err(why) => {
            rekube_crds::testing::missing_prerequisite(&why);
            true
        }
    }
}

fn pod(name: &str, node: &str, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never",
            "containers": containers,
        },
    }))
    .unwrap()
}

/// busybox httpd serving `body` on port 8080 (hostPort `host_port` when set).
fn web(body: &str, host_port: Option<i32>) -> Value {
    let mut port = json!({"containerPort": 8080});
    if let Some(h) = host_port {
        port["hostPort"] = json!(h);
    }
    json!([{
        "name": "web", "image": "busybox:1.36", "imagePullPolicy": "Never",
        "command": ["sh", "-c", format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www")],
        "ports": [port],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }])
}

fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref().and_then(|s| s.pod_ip.clone())
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn wait_ready(pods: &Api<Pod>, name: &str, agent: &AgentProcess) -> Pod {
    wait_until(&format!("pod {name} ready with an IP"), T, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        match (ready(&p), pod_ip(&p)) {
            (true, Some(_)) => Ok(p),
            _ => Err(format!("{:?}\n{}", p.status, agent.logs())),
        }
    })
    .await
}

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec.as_ref().and_then(|s| s.pod_cidr.clone())
}

/// The address files host-local keeps for the default network under an agent's root.
fn reservations(agent: &AgentProcess) -> Vec<String> {
    let dir = agent.root.join("cni/state/networks/rekube");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// The CNI cache entries (libcni's results/) under an agent's root.
fn cached_attachments(agent: &AgentProcess) -> Vec<String> {
    let dir = agent.root.join("cni/state/results");
    std::fs::read_dir(Path::new(&dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn pods_on_two_nodes_reach_each_other_and_leave_nothing_behind() {
    if skip() {
        return;
    }
    let ns = TestNamespace::privileged("podnet").await;
    let net = TestNetwork::new(&format!("{:x}", std::process::id() & 0xffff), 2);
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers",
            "node-ipam",
            "--allocate-node-cidrs",
            "true",
            "--cluster-cidr",
            CLUSTER_CIDR,
        ],
    );
    let a = AgentProcess::start_real_on(&ns, "a", &net.nodes[0], &["--cluster-cidr", CLUSTER_CIDR]);
    let mut b =
        AgentProcess::start_real_on(&ns, "b", &net.nodes[1], &["--cluster-cidr", CLUSTER_CIDR]);
    a.wait_node_ready(&ns.client, T).await;
    b.wait_node_ready(&ns.client, T).await;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let (cidr_a, cidr_b) = wait_until("both nodes have a pod CIDR", T, || async {
        let na = nodes.get(&a.node_name).await.map_err(|e| e.to_string())?;
        let nb = nodes.get(&b.node_name).await.map_err(|e| e.to_string())?;
        match (pod_cidr(&na), pod_cidr(&nb)) {
            (Some(x), Some(y)) => Ok((x, y)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Each node routes the other's pod CIDR via the other's address, with the agent's
    // protocol number, and masquerades what leaves the cluster CIDR.
    for (node, cidr, via) in [
        (&net.nodes[0], &cidr_b, net.nodes[1].address),
        (&net.nodes[1], &cidr_a, net.nodes[0].address),
    ] {
        let want = format!("{cidr} via {via} dev eth0 proto 82");
        wait_until(&format!("route {want} in {}", node.name), T, || async {
            let routes = node.routes();
            if routes.iter().any(|r| r.starts_with(&want)) {
                Ok(())
            } else {
                Err(format!("{routes:?}"))
            }
        })
        .await;
        let rules = node.nft_ruleset();
        assert!(
            rules.contains("table ip rekube-masquerade")
                && rules.contains(&format!(
                    "ip saddr {CLUSTER_CIDR} ip daddr != {CLUSTER_CIDR} masquerade"
                )),
            "{rules}"
        );
    }

    // A web server on b (with a hostPort), a client on a fetching it by pod IP.
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    pods.create(
        &pp,
        &pod("server", &b.node_name, web("hello-from-b", Some(30080))),
    )
    .await
    .unwrap();
    let server = wait_ready(&pods, "server", &b).await;
    let server_ip = pod_ip(&server).unwrap();
    let cidr: ipnet::IpNet = cidr_b.parse().unwrap();
    assert!(
        cidr.contains(&server_ip.parse::<std::net::IpAddr>().unwrap()),
        "the server's IP {server_ip} is not from its node's pod CIDR {cidr_b}"
    );
    // busybox nc (Debian's busybox-static wget crashes on this machine).
    let script = format!(
        "for i in $(seq 1 30); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {server_ip} 8080 | grep hello && exit 0; sleep 1; done; exit 1"
    );
    pods.create(
        &pp,
        &pod(
            "client",
            &a.node_name,
            json!([{"name": "client", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", script]}]),
        ),
    )
    .await
    .unwrap();
    let client = wait_until("the client fetched the page", T, || async {
        let p = pods.get("client").await.map_err(|e| e.to_string())?;
        let terminated = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.clone());
        match terminated {
            Some(t) => Ok((p, t.exit_code)),
            None => Err(format!("{:?}", p.status)),
        }
    })
    .await;
    let uid = client.0.metadata.uid.clone().unwrap();
    let log = a.container_log(&ns.name, "client", &uid, "client", 0);
    assert_eq!(
        client.1,
        0,
        "the client failed; its log:\n{log}\n{}",
        a.logs()
    );
    assert!(log.contains("hello-from-b"), "{log}");

    // The hostPort answers on b's address, from node a's namespace.
    let host_port = SocketAddr::from((net.nodes[1].address, 30080));
    let body = net.nodes[0]
        .http_get(host_port, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("hostPort {host_port}: {e}\n{}", b.logs()));
    assert_eq!(body.trim(), "hello-from-b");

    // A hostNetwork pod on a is in a's own namespace: its IP is a's address, and b
    // reaches its server there. No veth for it.
    let mut host = pod(
        "host",
        &a.node_name,
        json!([{
            "name": "web", "image": "busybox:1.36", "imagePullPolicy": "Never",
            "command": ["sh", "-c", "mkdir -p /www && echo on-the-node > /www/index.html && exec httpd -f -p 8081 -h /www"],
            "readinessProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1},
        }]),
    );
    host.spec.as_mut().unwrap().host_network = Some(true);
    pods.create(&pp, &host).await.unwrap();
    let host = wait_ready(&pods, "host", &a).await;
    assert_eq!(pod_ip(&host), Some(net.nodes[0].address.to_string()));
    let body = net.nodes[1]
        .http_get(
            SocketAddr::from((net.nodes[0].address, 8081)),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("the hostNetwork pod: {e}\n{}", a.logs()));
    assert_eq!(body.trim(), "on-the-node");

    // A veth for the running server on b; the client's went when it finished (the
    // sandbox of a terminated pod is stopped, as the kubelet does).
    let veths = |n: &rekube_e2e::netns::NodeNetns| {
        n.links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .count()
    };
    wait_until("the finished client's veth gone", T, || async {
        match (veths(&net.nodes[0]), veths(&net.nodes[1])) {
            (0, 1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Agent b restarts: the previous run's sandbox goes (its attachment released by CNI
    // GC, from the cache), the server starts again in a new one, and the hostPort
    // answers again. One address and one veth on b, not two.
    let first_ip = server_ip.clone();
    b.restart();
    wait_until(
        "the server restarted by the new agent answers",
        T,
        || async {
            net.nodes[0]
                .http_get(host_port, Duration::from_secs(2))
                .map_err(|e| e.to_string())
                .and_then(|body| (body.trim() == "hello-from-b").then_some(()).ok_or(body))
        },
    )
    .await;
    let restarted = wait_ready(&pods, "server", &b).await;
    assert_eq!(
        (veths(&net.nodes[1]), reservations(&b).len()),
        (1, 1),
        "after the restart: reservations {:?} (the first run's address was {first_ip}), cache {:?}",
        reservations(&b),
        cached_attachments(&b)
    );
    assert_eq!(
        reservations(&b),
        [pod_ip(&restarted).unwrap()],
        "the address reserved is the running server's"
    );

    // The pods go: their veths, addresses, cache entries and port mappings with them.
    for name in ["client", "server", "host"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_until("both pods gone", T, || async {
        let left = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left", left.items.len()))
        }
    })
    .await;
    for (agent, node) in [(&a, &net.nodes[0]), (&b, &net.nodes[1])] {
        wait_until(
            &format!("nothing of the pods left on {}", node.name),
            T,
            || async {
                let left = (
                    veths(node),
                    reservations(agent),
                    cached_attachments(agent),
                    agent.leftovers(),
                );
                if left.0 == 0 && left.1.is_empty() && left.2.is_empty() && left.3.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            },
        )
        .await;
    }
    let rules = net.nodes[1].nft_ruleset();
    assert!(!rules.contains("30080"), "portmap's rules stayed:\n{rules}");

    // Node b goes: node a's route to its pods goes with it.
    b.kill();
    nodes
        .delete(&b.node_name, &DeleteParams::default())
        .await
        .unwrap();
    let gone = format!("{cidr_b} via");
    wait_until("the route to b's pods removed", T, || async {
        let routes = net.nodes[0].routes();
        if routes.iter().any(|r| r.starts_with(&gone)) {
            Err(format!("{routes:?}"))
        } else {
            Ok(())
        }
    })
    .await;
}

/// A plugin that fails: the pod's sandbox is not created, the event carries the
/// plugin's message, the pod waits in ContainerCreating, and nothing of the failed ADD
/// is left.
#[tokio::test]
async fn a_failing_cni_plugin_is_the_pods_event_and_the_pod_waits() {
    if skip() {
        return;
    }
    let ns = TestNamespace::privileged("cnifail").await;
    let net = TestNetwork::new(&format!("{:x}f", std::process::id() & 0xffff), 1);
    // A user's config (so the agent installs none) whose IPAM range is exhausted at
    // once: a /32 host-local range has no address to give.
    let agent_root = std::env::temp_dir().join(format!("rekube-agent-{}", ns.cluster_name("a")));
    let conf = agent_root.join("cni/net.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("20-user.conflist"),
        json!({"cniVersion": "1.1.0", "name": "user-net", "plugins": [
            {"type": "bridge", "bridge": "user0", "isGateway": true,
             "ipam": {"type": "host-local", "dataDir": agent_root.join("cni/state/networks").display().to_string(),
                      "ranges": [[{"subnet": "10.99.0.0/32"}]]}}]})
        .to_string(),
    )
    .unwrap();
    let a = AgentProcess::start_real_on(&ns, "a", &net.nodes[0], &[]);
    a.wait_node_ready(&ns.client, T).await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &pod("web", &a.node_name, web("x", None)),
    )
    .await
    .unwrap();
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let message = wait_until("a FailedCreatePodSandBox event", T, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| e.reason.as_deref() == Some("FailedCreatePodSandBox"))
            .and_then(|e| e.message.clone())
            .ok_or_else(|| {
                format!(
                    "{:?}",
                    list.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
                )
            })
    })
    .await;
    assert!(
        message.starts_with("Failed to create pod sandbox: ")
            && message.contains("failed to setup network for sandbox")
            && message.contains("type=\"bridge\" network=\"user-net\""),
        "{message}"
    );
    // The event is recorded before the sync writes the status: wait for that too.
    let p = wait_until(
        "the pod's container waiting in ContainerCreating",
        T,
        || async {
            let p = pods.get("web").await.map_err(|e| e.to_string())?;
            let waiting = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone());
            if waiting.as_deref() == Some("ContainerCreating") {
                Ok(p)
            } else {
                Err(format!("{:?}", p.status))
            }
        },
    )
    .await;
    assert!(pod_ip(&p).is_none());
    // The pod goes while its ADDs keep failing: no veth, cache entry or address of any
    // attempt is left (a failed ADD is undone at once; the agent retries it meanwhile,
    // so the node is checked once the pod is gone).
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    wait_until("the pod gone", T, || async {
        match pods.get_opt("web").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    wait_until("nothing of the failed ADDs left", T, || async {
        let veths: Vec<String> = net.nodes[0]
            .links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect();
        let cached = cached_attachments(&a);
        if veths.is_empty() && cached.is_empty() {
            Ok(())
        } else {
            Err(format!("veths {veths:?}, cni cache {cached:?}"))
        }
    })
    .await;
    a.wait_no_leftovers(T).await;
}

/// No config and no pod CIDR to make the default network from: the Node is NotReady with
/// the kubelet's "container runtime network not ready" message; once node IPAM gives it
/// a range, the agent writes its default network and the Node turns Ready.
#[tokio::test]
async fn a_node_is_not_ready_until_its_pod_network_is() {
    if skip() {
        return;
    }
    let ns = TestNamespace::privileged("netready").await;
    let net = TestNetwork::new(&format!("{:x}r", std::process::id() & 0xffff), 1);
    let a = AgentProcess::start_real_on(&ns, "a", &net.nodes[0], &[]);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
    };
    let message = wait_until("the node NotReady for its network", T, || async {
        let n = nodes.get(&a.node_name).await.map_err(|e| e.to_string())?;
        match ready(&n) {
            Some((s, m)) if s == "False" => Ok(m),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        message.contains(
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: network plugin not ready: cni plugin not initialized"
        ) && message.contains("no podCIDR"),
        "{message}"
    );
    let conf = a.root.join("cni/net.d/10-rekube.conflist");
    assert!(!conf.exists());
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers",
            "node-ipam",
            "--allocate-node-cidrs",
            "true",
            "--cluster-cidr",
            CLUSTER_CIDR,
        ],
    );
    a.wait_node_ready(&ns.client, T).await;
    let written = std::fs::read_to_string(&conf).unwrap();
    let cidr = pod_cidr(&nodes.get(&a.node_name).await.unwrap()).unwrap();
    assert!(written.contains(&cidr), "{written}");
}
