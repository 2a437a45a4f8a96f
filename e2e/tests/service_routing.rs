//! Services that route, on three nodes (issue 12): real node agents, each in a network
//! namespace of the test's own ([`rekube_e2e::netns::TestNetwork`]), with the cni pod
//! network and the service proxy (nftables, and the same scenario again with
//! `--proxy-mode iptables`); rekube-controllers with node IPAM, the
//! scheduler, the Deployment, ReplicaSet, Endpoints and service allocator controllers.
//! A Deployment of busybox httpd pods (each answering with its own name) runs on nodes b
//! and c; the clients are a pod on node a and node a itself.
//!
//! Checked, after upstream's test/e2e/network/service.go (docs/proxy.md lists which):
//! requests to the ClusterIP spread over both backends (counted), from the node and from
//! a pod; the NodePort answers on every node's address; a backend whose readiness probe
//! fails stops receiving traffic, timed against its probe period plus one second;
//! scaling the Deployment changes the traffic; a Service without ready endpoints refuses
//! at once; ClientIP affinity sticks, and expires after its timeout; a pod reaches itself through its Service (hairpin);
//! a LoadBalancer Service with externalTrafficPolicy Local has a health check node port
//! answering 200 only on nodes with a ready backend, and every proxy's /healthz answers
//! ([`health_check`]); UDP through the VIP reaches pods on both nodes, and a socket's
//! conntrack entry follows its deleted pod no longer ([`udp`]); a Service whose only pod
//! terminates keeps serving through it until a ready pod exists ([`terminating`]);
//! a deleted Service's rules go; `rekube-node-agent cleanup` leaves no rule, route or
//! bridge of rekube's.
//!
//! Needs root, Debian's busybox-static, iproute2, nftables, iptables, conntrack and the reference
//! CNI plugins; missing, the test fails and says why (unless REKUBE_SKIP_PRIVILEGED=1).
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rekube_crds::{Deployment, Endpoints, Pod, Service};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::netns::{NodeNetns, TestNetwork};

// The scenarios beside the main flow (a test's root module finds its modules beside it).
#[path = "service_routing/health_check.rs"]
mod health_check;
#[path = "service_routing/terminating.rs"]
mod terminating;
#[path = "service_routing/udp.rs"]
mod udp;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(120);
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const SERVICE_CIDR: &str = "10.112.0.0/16";
/// The backends' readiness probe period, and how soon after it a failing backend must be
/// out of the rules (issue 12: "within its probe period plus one second").
const PROBE_PERIOD: Duration = Duration::from_secs(1);

fn skip() -> bool {
    let missing = TestNetwork::agent_prerequisites().and_then(|()| {
        Command::new("iptables-save")
            .arg("--version")
            .output()
            .map(drop)
            .map_err(|_| "iptables-save (Debian's iptables) is missing".to_string())
    });
    match missing {
        Ok(()) => false,
        Err(why) => {
            rekube_crds::testing::missing_prerequisite(&why);
            true
        }
    }
}

/// The backends: busybox httpd on 8080 answering with the pod's name; a CGI script
/// `/cgi-bin/unready` makes its readiness probe fail from then on.
fn deployment(nodes: &[&str], replicas: i32) -> Deployment {
    let script = r#"mkdir -p /www/cgi-bin && hostname > /www/index.html
printf '#!/bin/sh\ntouch /tmp/unready\nprintf "Content-Type: text/plain\\r\\n\\r\\nunready\\n"\n' > /www/cgi-bin/unready
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%%s\\n" "$REMOTE_ADDR"\n' > /www/cgi-bin/ip
chmod +x /www/cgi-bin/unready /www/cgi-bin/ip
exec httpd -f -p 8080 -h /www"#;
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}]}}},
                    "containers": [{
                        "name": "web", "image": "busybox:1.36", "imagePullPolicy": "Never",
                        "command": ["sh", "-c", script],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "resources": {"requests": {"cpu": "100m"}},
                        "readinessProbe": {
                            "exec": {"command": ["sh", "-c", "test ! -e /tmp/unready"]},
                            "periodSeconds": PROBE_PERIOD.as_secs(),
                            "failureThreshold": 1,
                        },
                    }],
                },
            },
        },
    }))
    .unwrap()
}

fn service(name: &str, selector: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "selector": {"app": selector},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// busybox httpd's `REMOTE_ADDR` (`[::ffff:10.244.0.2]` on its dual-stack socket) as a
/// plain address.
fn remote_addr(s: &str) -> String {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    s.strip_prefix("::ffff:").unwrap_or(s).to_string()
}

/// `n` GETs of `addr` from `node`: the count per answer (a pod name), and the errors.
fn spread(node: &NodeNetns, addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let answer = match node.http_get(addr, Duration::from_secs(2)) {
            Ok(body) => body.trim().to_string(),
            Err(e) => format!("error: {e}"),
        };
        *counts.entry(answer).or_default() += 1;
    }
    counts
}

/// `n` requests in a row from `node` to `addr` all answered by one of `backends` (retried
/// until they are, at most [`T`]).
async fn sticks(
    node: &NodeNetns,
    addr: SocketAddr,
    n: usize,
    backends: &[String],
) -> BTreeMap<String, usize> {
    wait_until(
        &format!("affinity: {n} requests to {addr} on one backend"),
        T,
        || async {
            let counts = spread(node, addr, n);
            if counts.len() == 1 && backends.contains(counts.keys().next().unwrap()) {
                Ok(counts)
            } else {
                Err(format!("{counts:?}"))
            }
        },
    )
    .await
}

/// The Service's ClusterIP and port 80, once the allocator has given it one.
async fn cluster_addr(services: &Api<Service>, name: &str) -> SocketAddr {
    let ip: IpAddr = wait_until(&format!("the {name} Service's IP"), T, || async {
        services
            .get(name)
            .await
            .ok()
            .and_then(|s| s.spec.and_then(|s| s.cluster_ip))
            .ok_or_else(|| "none yet".to_string())
    })
    .await
    .parse()
    .unwrap();
    SocketAddr::from((ip, 80))
}

async fn ready_endpoints(api: &Api<Endpoints>, name: &str) -> Vec<String> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|e| e.subsets)
        .into_iter()
        .flatten()
        .flat_map(|s| s.addresses.into_iter().flatten())
        .filter_map(|a| a.target_ref.and_then(|t| t.name))
        .collect()
}

/// What the scenarios of the submodules share.
struct Cluster<'a> {
    ns: &'a TestNamespace,
    nodes: &'a [NodeNetns],
    agents: &'a [AgentProcess],
    services: Api<Service>,
    pods: Api<Pod>,
}

/// The two modes' tests one at a time: their nodes would share addresses (the harness's
/// subnet) and every agent routes to every Node of the cluster.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn services_route_across_nodes_from_pods_and_from_the_node() {
    route_across_nodes("nftables").await;
}

/// The same scenario with the agents' proxies in `--proxy-mode iptables`.
#[tokio::test]
async fn services_route_across_nodes_with_the_iptables_proxy() {
    route_across_nodes("iptables").await;
}

/// The proxy's rules in a node: the nftables ruleset, or iptables-save of filter and nat.
fn proxy_rules(node: &NodeNetns, mode: &str) -> String {
    if mode == "nftables" {
        return node.nft_ruleset();
    }
    ["filter", "nat"]
        .iter()
        .map(|table| {
            let out = Command::new("ip")
                .args(["netns", "exec", &node.name, "iptables-save", "-t", table])
                .output()
                .expect("iptables-save");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

async fn route_across_nodes(mode: &'static str) {
    if skip() {
        return;
    }
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    eprintln!("--proxy-mode {mode}:");
    let ns = TestNamespace::privileged(&format!("svcroute-{mode}")).await;
    let net = TestNetwork::new(
        &format!("{:x}{}", std::process::id() & 0xffff, &mode[..1]),
        3,
    );
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers",
            "node-ipam-controller,scheduler,deployment-controller,replicaset-controller,endpoint-controller,endpointslice-controller,service-allocator-controller",
            "--allocate-node-cidrs",
            "true",
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--service-cluster-ip-range",
            SERVICE_CIDR,
        ],
    );
    let agent_flags = ["--cluster-cidr", CLUSTER_CIDR, "--proxy-mode", mode];
    let agents: Vec<AgentProcess> = ["a", "b", "c"]
        .iter()
        .zip(&net.nodes)
        .map(|(short, node)| AgentProcess::start_real_on(&ns, short, node, &agent_flags))
        .collect();
    for agent in &agents {
        agent.wait_node_ready(&ns.client, T).await;
    }
    let (a, b, c) = (&agents[0], &agents[1], &agents[2]);
    let node_a = &net.nodes[0];
    let pp = PostParams::default();

    // Two backends, one on b and one on c.
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    deployments
        .create(&pp, &deployment(&[&b.node_name, &c.node_name], 2))
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    services
        .create(&pp, &service("web", "web", json!({"type": "NodePort"})))
        .await
        .unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(ns.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let backends = wait_until("two ready backends in the Endpoints", T, || async {
        let ready = ready_endpoints(&endpoints, "web").await;
        if ready.len() == 2 {
            Ok(ready)
        } else {
            Err(format!("{ready:?}\n{}", b.logs()))
        }
    })
    .await;
    let placed: Vec<String> = {
        let list = pods.list(&ListParams::default()).await.unwrap();
        let mut n: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        placed,
        [b.node_name.clone(), c.node_name.clone()],
        "the scheduler spreads the two backends"
    );
    let svc = services.get("web").await.unwrap();
    let spec = svc.spec.clone().unwrap();
    let vip: IpAddr = spec.cluster_ip.clone().unwrap().parse().unwrap();
    let node_port = spec.ports.as_ref().unwrap()[0].node_port.unwrap() as u16;
    let vip_addr = SocketAddr::from((vip, 80));

    // From node a: the VIP spreads over both backends.
    let counts = wait_until("both backends answer through the VIP", T, || async {
        let counts = spread(node_a, vip_addr, 40);
        if backends
            .iter()
            .all(|b| counts.get(b).is_some_and(|n| *n >= 5))
            && counts.len() == 2
        {
            Ok(counts)
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    eprintln!("40 requests from node a to {vip_addr}: {counts:?}");

    // From a pod on node a: the same, counted from its log.
    let loop_script = format!(
        "for i in $(seq 1 30); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {vip} 80 | tail -n 1; done; \
         printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {vip} 80 | tail -n 1 | sed 's/^/source /'"
    );
    let client: Pod = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {"nodeName": a.node_name, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "client", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", loop_script]}]},
    }))
    .unwrap();
    pods.create(&pp, &client).await.unwrap();
    let uid = wait_until("the client pod done", T, || async {
        let p = pods.get("client").await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => Ok(p.metadata.uid.clone().unwrap()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let log = a.container_log(&ns.name, "client", &uid, "client", 0);
    let from_pod: BTreeMap<&str, usize> =
        log.lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .fold(BTreeMap::new(), |mut m, l| {
                *m.entry(l.trim()).or_default() += 1;
                m
            });
    assert!(
        backends
            .iter()
            .all(|b| from_pod.get(b.as_str()).is_some_and(|n| *n >= 3)),
        "30 requests from a pod on node a: {from_pod:?}\n{log}"
    );
    eprintln!("30 requests from a pod on node a: {from_pod:?}");
    // Upstream's "should preserve source pod IP for traffic thru service cluster IP": no
    // masquerade between pods.
    let client_ip = pods
        .get("client")
        .await
        .unwrap()
        .status
        .and_then(|s| s.pod_ip)
        .unwrap();
    let sources: Vec<String> = from_pod
        .keys()
        .filter_map(|l| l.strip_prefix("source "))
        .map(remote_addr)
        .collect();
    assert_eq!(
        sources,
        std::slice::from_ref(&client_ip),
        "the backend saw another source than the client pod's {client_ip}:\n{log}"
    );

    // The NodePort answers on every node's address (from node a).
    for node in &net.nodes {
        let addr = SocketAddr::from((node.address, node_port));
        let body = node_a
            .http_get(addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("NodePort {addr}: {e}"));
        assert!(backends.contains(&body.trim().to_string()), "{body}");
    }

    let on_b = if placed_on(&pods, &backends[0]).await == b.node_name {
        backends[0].clone()
    } else {
        backends[1].clone()
    };
    let cluster = Cluster {
        ns: &ns,
        nodes: &net.nodes,
        agents: &agents,
        services: services.clone(),
        pods: pods.clone(),
    };
    let health_check_port = health_check::health_check_node_ports(&cluster).await;
    let node_b = &net.nodes[1];
    let short = Duration::from_secs(1);

    // An ExternalIP (an address of the test network no node holds): DNATed on node a
    // before it leaves, to either backend.
    let external_ip: IpAddr = "172.31.250.250".parse().unwrap();
    services
        .create(
            &pp,
            &service(
                "ext",
                "web",
                json!({"externalIPs": [external_ip.to_string()]}),
            ),
        )
        .await
        .unwrap();
    let counts = wait_until("the ExternalIP answers from both backends", T, || async {
        let counts = spread(node_a, SocketAddr::from((external_ip, 80)), 20);
        if counts.len() == 2 && backends.iter().all(|b| counts.contains_key(b)) {
            Ok(counts)
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    eprintln!("20 requests from node a to ExternalIP {external_ip}: {counts:?}");

    // externalTrafficPolicy Local: node b's NodePort answers only with b's backend and
    // keeps the client's address (node a's, no masquerade); node a has no backend, so
    // its NodePort drops.
    services
        .create(
            &pp,
            &service(
                "etp-local",
                "web",
                json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
            ),
        )
        .await
        .unwrap();
    let local_port = wait_until("the etp-local NodePort", T, || async {
        services
            .get("etp-local")
            .await
            .ok()
            .and_then(|s| s.spec?.ports?.first()?.node_port)
            .ok_or_else(|| "none yet".to_string())
    })
    .await as u16;
    let on_b_port = SocketAddr::from((node_b.address, local_port));
    let counts = wait_until(
        "node b's Local NodePort answers with b's backend",
        T,
        || async {
            let counts = spread(node_a, on_b_port, 10);
            if counts.len() == 1 && counts.contains_key(&on_b) {
                Ok(counts)
            } else {
                Err(format!("{counts:?}"))
            }
        },
    )
    .await;
    eprintln!("10 requests from node a to {on_b_port} (externalTrafficPolicy Local): {counts:?}");
    let seen = node_a
        .http_get_path(on_b_port, "/cgi-bin/ip", Duration::from_secs(2))
        .unwrap();
    assert_eq!(
        remote_addr(&seen),
        node_a.address.to_string(),
        "externalTrafficPolicy Local keeps the client's address"
    );
    let on_a_port = SocketAddr::from((node_a.address, local_port));
    assert!(
        node_b.http_get(on_a_port, short).is_err(),
        "node a has no local backend: its Local NodePort must not answer"
    );

    // internalTrafficPolicy Local: from node b only b's backend; node a has none, so its
    // traffic to the ClusterIP is dropped.
    services
        .create(
            &pp,
            &service(
                "itp-local",
                "web",
                json!({"internalTrafficPolicy": "Local"}),
            ),
        )
        .await
        .unwrap();
    let itp = cluster_addr(&services, "itp-local").await;
    let counts = wait_until("node b reaches only its own backend", T, || async {
        let counts = spread(node_b, itp, 10);
        if counts.len() == 1 && counts.contains_key(&on_b) {
            Ok(counts)
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    eprintln!("10 requests from node b to {itp} (internalTrafficPolicy Local): {counts:?}");
    assert!(
        node_a.http_get(itp, short).is_err(),
        "node a has no local backend: internalTrafficPolicy Local must drop"
    );

    // ClientIP affinity: every request from node a to one backend.
    services
        .create(
            &pp,
            &service("sticky", "web", json!({"sessionAffinity": "ClientIP"})),
        )
        .await
        .unwrap();
    let sticky = cluster_addr(&services, "sticky").await;
    let counts = sticks(node_a, sticky, 20, &backends).await;
    eprintln!("20 requests to the ClientIP-affinity Service: {counts:?}");

    // "should have session affinity timeout work for service with type clusterIP":
    // sticky while requests come sooner than the timeout; once a whole timeout has
    // passed without one, a request may go to either backend. As upstream: up to 20
    // requests, each after waiting out the timeout, until a second backend answers
    // (two backends: a chance of 2^-19 that a correct proxy fails).
    let timeout_secs = 2;
    services
        .create(
            &pp,
            &service(
                "sticky-timeout",
                "web",
                json!({"sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout_secs}}}),
            ),
        )
        .await
        .unwrap();
    let sticky_timeout = cluster_addr(&services, "sticky-timeout").await;
    let counts = sticks(node_a, sticky_timeout, 10, &backends).await;
    let mut seen: Vec<String> = counts.into_keys().collect();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(timeout_secs * 1000 + 500)).await;
        let answer = node_a
            .http_get(sticky_timeout, Duration::from_secs(2))
            .map(|b| b.trim().to_string());
        if let Ok(name) = answer
            && !seen.contains(&name)
        {
            seen.push(name);
            break;
        }
    }
    eprintln!("affinity timeout {timeout_secs} s: backends after waiting it out {seen:?}");
    assert_eq!(
        seen.len(),
        2,
        "after {timeout_secs} s without a request the affinity must expire: 20 requests, each {timeout_secs}.5 s apart, all went to {seen:?}"
    );

    // Hairpin: a pod reaches itself through its own Service (the bridge's hairpin mode
    // and the proxy's hairpin masquerade). It is the Service's only endpoint, so every
    // answer is its own name.
    let hairpin: Pod = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "hairpin", "labels": {"app": "self"}},
        "spec": {"nodeName": b.node_name, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "self", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "ports": [{"name": "http", "containerPort": 8080}],
                "command": ["sh", "-c", "hostname > /tmp/index.html; httpd -p 8080 -h /tmp; sleep 2; for i in $(seq 1 40); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $SELF_VIP 80 | tail -n 1; sleep 0.2; done"],
                "env": [{"name": "SELF_VIP", "value": "__VIP__"}]}]},
    }))
    .unwrap();
    services
        .create(&pp, &service("self", "self", json!({})))
        .await
        .unwrap();
    let self_vip = wait_until("the self Service's IP", T, || async {
        services
            .get("self")
            .await
            .ok()
            .and_then(|s| s.spec.and_then(|s| s.cluster_ip))
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    let mut hairpin = hairpin;
    hairpin.spec.as_mut().unwrap().containers[0]
        .env
        .as_mut()
        .unwrap()[0]
        .value = Some(self_vip.clone());
    pods.create(&pp, &hairpin).await.unwrap();
    let uid = wait_until("the hairpin pod done", T, || async {
        let p = pods.get("hairpin").await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => Ok(p.metadata.uid.clone().unwrap()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let log = b.container_log(&ns.name, "hairpin", &uid, "self", 0);
    assert!(
        log.lines()
            .filter(|l| l.trim_end().ends_with(" hairpin"))
            .count()
            >= 20,
        "the pod did not reach itself through {self_vip} (40 tries):\n{log}"
    );

    udp::udp_across_nodes(&cluster).await;
    terminating::fall_back_to_terminating_endpoints(&cluster).await;

    // A backend whose readiness probe fails leaves the rules within its probe period
    // plus one second (timed from the request that makes it fail).
    let (unready_name, unready_ip) = {
        let p = pods.get(&backends[0]).await.unwrap();
        (
            backends[0].clone(),
            p.status.and_then(|s| s.pod_ip).unwrap(),
        )
    };
    let owner = if placed_on(&pods, &unready_name).await == b.node_name {
        &net.nodes[1]
    } else {
        &net.nodes[2]
    };
    let started = Instant::now();
    owner
        .http_get_path(
            SocketAddr::from((unready_ip.parse::<IpAddr>().unwrap(), 8080)),
            "/cgi-bin/unready",
            Duration::from_secs(2),
        )
        .unwrap();
    let gone_after = wait_until("the unready backend out of the rules", T, || async {
        // Ten requests in a row without it.
        let counts = spread(node_a, vip_addr, 10);
        if counts.contains_key(&unready_name) || counts.keys().any(|k| k.starts_with("error")) {
            Err(format!("{counts:?}"))
        } else {
            Ok(started.elapsed())
        }
    })
    .await;
    eprintln!(
        "a backend failing readiness (period {PROBE_PERIOD:?}) stopped getting traffic after {gone_after:?}"
    );
    assert!(
        gone_after <= PROBE_PERIOD + Duration::from_secs(1) + Duration::from_millis(500),
        "the failing backend got traffic for {gone_after:?}"
    );
    // Its node has no ready backend of lb-local left: its health check turns 503.
    let health = health_check::health_answer(
        node_a,
        SocketAddr::from((owner.address, health_check_port)),
        "/",
        503,
    )
    .await;
    assert_eq!(health["localEndpoints"], 0, "{health}");

    // Scaling changes the traffic: to 3 (a new backend answers), then to 0 (refused).
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_until("a third backend answers", T, || async {
        let counts = spread(node_a, vip_addr, 30);
        let others: Vec<&String> = counts
            .keys()
            .filter(|k| !backends.contains(k) && !k.starts_with("error"))
            .collect();
        if others.is_empty() {
            Err(format!("{counts:?}"))
        } else {
            Ok(())
        }
    })
    .await;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    // No endpoints: refused at once, never a hang.
    let refused_in = wait_until("the VIP refuses without endpoints", T, || async {
        let t = Instant::now();
        match node_a.http_get(vip_addr, Duration::from_secs(5)) {
            Err(e) if e.contains("refused") => Ok(t.elapsed()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        refused_in < Duration::from_millis(500),
        "refusal took {refused_in:?}"
    );

    // Deleting the Service removes its rules from every node.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    for node in &net.nodes {
        wait_until(&format!("{vip} gone from {}", node.name), T, || async {
            let rules = proxy_rules(node, mode);
            if rules.contains(&vip.to_string()) {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        })
        .await;
    }

    // `cleanup` on a node whose agent is gone: no table, route or bridge of rekube's.
    // Every pod deleted and released by its agent (the Deployment's, scaled to 0, may
    // still be terminating): nothing of their containers is left on any node.
    for p in pods.list(&ListParams::default()).await.unwrap() {
        let name = p.metadata.name.unwrap_or_default();
        pods.delete(&name, &DeleteParams::default()).await.unwrap();
    }
    let releasing = Instant::now();
    rekube_e2e::agent::wait_pods_released(&pods, T).await;
    for agent in &agents {
        agent.wait_no_leftovers(Duration::from_secs(10)).await;
    }
    eprintln!("every pod released in {:?}", releasing.elapsed());
    let mut agents = agents;
    let mut a = agents.remove(0);
    a.terminate();
    let out = Command::new(rekube_e2e::agent::binary())
        .args(["cleanup", "--netns"])
        .arg(node_a.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rules = node_a.nft_ruleset();
    assert!(!rules.contains("rekube"), "{rules}");
    let rules = proxy_rules(node_a, "iptables");
    assert!(!rules.contains("REKUBE-"), "{rules}");
    let routes = node_a.routes();
    assert!(!routes.iter().any(|r| r.contains("proto 82")), "{routes:?}");
    assert!(
        !node_a.links().iter().any(|l| l == "rekube0"),
        "{:?}",
        node_a.links()
    );
}

async fn placed_on(pods: &Api<Pod>, name: &str) -> String {
    pods.get(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.node_name)
        .unwrap_or_default()
}
