//! The service allocator (`service-allocator-controller`) against the real apiserver: cluster
//! IPs are the host cluster's own IPAddress objects, NodePorts are Leases. 200 Services
//! created at once get 200 distinct IPs (and the create → IP visible latency is measured);
//! two controller processes racing without leader election never hand out an IP or a port
//! twice; a requested IP or port is honoured, or refused with upstream's message when taken
//! or out of range, and a rekube Service and a core Service can never share an IP either
//! way; headless Services are left alone; a deleted Service's IP is reused; NodePorts are
//! shared by the TCP and UDP of one port number, as upstream; a restarted controller
//! repairs what was lost while it was down.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service as CoreService;
use k8s_openapi::api::networking::v1::IPAddress;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rekube_crds::Service;
use rekube_e2e::controllers::{ControllerProcess, external};
use rekube_e2e::{TestNamespace, rbac, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const NS_LABEL: &str = "service-allocator.rekube.io/service-namespace";

/// Deletes the test's IPAddresses on drop (they are cluster-scoped; the controller, killed
/// first, cannot release them when the namespace goes).
struct IpAddressCleanup(String);

impl Drop for IpAddressCleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args([
                "delete",
                "ipaddresses",
                "-l",
                &format!("{NS_LABEL}={}", self.0),
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
    }
}

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Service",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn cluster_ip(s: &Service) -> Option<String> {
    s.spec
        .as_ref()?
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty())
}

fn node_ports(s: &Service) -> Vec<i32> {
    s.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.node_port)
        .collect()
}

fn start(ns: &TestNamespace, args: &[&str]) -> ControllerProcess {
    let mut all = vec!["--controllers=service-allocator"];
    all.extend_from_slice(args);
    ControllerProcess::start(&ns.name, &all)
}

async fn wait_ip(api: &Api<Service>, name: &str, c: &ControllerProcess) -> String {
    wait_until(&format!("a cluster IP for {name}"), T, || async {
        match api.get(name).await.ok().as_ref().and_then(cluster_ip) {
            Some(ip) => Ok(ip),
            None => Err(c.logs()),
        }
    })
    .await
}

/// Waits for the `Allocated` condition False of `name`, and returns its message.
async fn wait_refused(api: &Api<Service>, name: &str, c: &ControllerProcess) -> String {
    wait_until(&format!("{name} refused"), T, || async {
        let s = api.get(name).await.map_err(|e| e.to_string())?;
        s.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| {
                c.iter()
                    .find(|c| c.type_ == "Allocated" && c.status == "False")
            })
            .map(|c| c.message.clone())
            .ok_or_else(|| format!("{:?}\n{}", s.status, c.logs()))
    })
    .await
}

/// The IPAddresses of the test's Services: IP → parent name.
async fn ip_addresses(ns: &TestNamespace) -> BTreeMap<String, String> {
    Api::<IPAddress>::all(ns.client.clone())
        .list(&ListParams::default().labels(&format!("{NS_LABEL}={}", ns.name)))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|ip| (ip.metadata.name.clone().unwrap(), ip.spec.parent_ref.name))
        .collect()
}

/// Waits until `ip` is reserved for the Service `name` (a requested IP is in the spec from
/// the start; its IPAddress says whether it got it).
async fn wait_reserved(ns: &TestNamespace, ip: &str, name: &str, c: &ControllerProcess) {
    wait_until(&format!("{ip} reserved for {name}"), T, || async {
        let r = ip_addresses(ns).await;
        if r.get(ip).map(String::as_str) == Some(name) {
            Ok(())
        } else {
            Err(format!("{r:?}\n{}", c.logs()))
        }
    })
    .await
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Creates `count` Services named `prefix-N` at once and returns, per Service, the time
/// from just before its create call to the first watch event showing its cluster IP.
async fn create_and_time(
    api: &Api<Service>,
    prefix: &str,
    count: usize,
    spec: Value,
) -> Vec<Duration> {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let (api, seen) = (api.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(s)) = events.next().await {
                if cluster_ip(&s).is_some() {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    seen.lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The watch holds a connection of its own: a read first leaves a warm one in the
    // client's pool, so no create below pays a TLS handshake (~45 ms here) that is the
    // test's, not the allocator's. 16 creates in flight at a time: each on a connection
    // of its own (HTTP/1.1), made once.
    api.get_opt("warm-up").await.unwrap();
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let started: Vec<(String, Instant)> = futures::stream::iter(names.iter().map(|n| {
        let (api, spec) = (api.clone(), spec.clone());
        async move {
            let t0 = Instant::now();
            api.create(&PostParams::default(), &service(n, spec))
                .await
                .unwrap();
            (n.clone(), t0)
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    if count > 1 {
        println!(
            "({count} creates issued in {:?})",
            started
                .iter()
                .map(|(_, t0)| t0.elapsed())
                .max()
                .unwrap_or_default()
                - started
                    .iter()
                    .map(|(_, t0)| t0.elapsed())
                    .min()
                    .unwrap_or_default()
        );
    }
    wait_until(
        &format!("{count} cluster IPs"),
        Duration::from_secs(180),
        || async {
            let n = seen.lock().unwrap().len();
            if started
                .iter()
                .all(|(name, _)| seen.lock().unwrap().contains_key(name))
            {
                Ok(())
            } else {
                Err(format!("{n} seen"))
            }
        },
    )
    .await;
    watch.abort();
    let seen = seen.lock().unwrap();
    let mut latencies: Vec<Duration> = started
        .iter()
        .map(|(n, t0)| seen[n].saturating_duration_since(*t0))
        .collect();
    latencies.sort();
    latencies
}

fn report(what: &str, l: &[Duration]) {
    println!(
        "create → cluster IP visible, {what}: n={} p50={:?} p99={:?} max={:?}",
        l.len(),
        percentile(l, 50),
        percentile(l, 99),
        l[l.len() - 1]
    );
}

#[tokio::test]
async fn two_hundred_services_at_once_get_distinct_ips_and_the_latency_is_measured() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    for (label, qps) in [
        (
            "--service-allocator-api-qps 20 (kube-controller-manager's default)",
            Some(("20", "30")),
        ),
        ("default --service-allocator-api-qps 200", None),
    ] {
        let ns = TestNamespace::new("svcalloc-burst").await;
        let _cleanup = IpAddressCleanup(ns.name.clone());
        let range = "10.120.0.0/16";
        let mut args = vec!["--service-cluster-ip-range", range];
        if let Some((q, b)) = qps {
            args.extend([
                "--service-allocator-api-qps",
                q,
                "--service-allocator-api-burst",
                b,
            ]);
        }
        let c = start(&ns, &args);
        let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
        let spec = json!({"selector": {"app": "x"}, "ports": [{"port": 80}]});
        // One at a time first: the latency of a single create on an idle controller.
        let mut singles = Vec::new();
        for i in 0..20 {
            singles.extend(create_and_time(&api, &format!("one{i}"), 1, spec.clone()).await);
        }
        singles.sort();
        report(&format!("one at a time, {label}"), &singles);
        let burst = create_and_time(&api, "burst", 200, spec.clone()).await;
        report(&format!("200 at once, {label}"), &burst);

        if qps.is_none() {
            // The anchor: a core Service on the same apiserver, whose IP the apiserver
            // allocates inside the create call (its IPAddress written before it returns).
            let core: Api<CoreService> = Api::namespaced(ns.client.clone(), &ns.name);
            let mut upstream = Vec::new();
            core.get_opt("warm-up").await.unwrap();
            for i in 0..20 {
                let s: CoreService = serde_json::from_value(json!({
                    "metadata": {"name": format!("core{i}")}, "spec": spec.clone()}))
                .unwrap();
                let t0 = Instant::now();
                let created = core.create(&PostParams::default(), &s).await.unwrap();
                upstream.push(t0.elapsed());
                assert!(created.spec.unwrap().cluster_ip.is_some());
            }
            upstream.sort();
            report(
                "core Service (allocated in the apiserver), one at a time",
                &upstream,
            );
            for i in 0..20 {
                core.delete(&format!("core{i}"), &DeleteParams::default())
                    .await
                    .unwrap();
            }
        }
        let all = api.list(&ListParams::default()).await.unwrap().items;
        let ips: Vec<String> = all.iter().filter_map(cluster_ip).collect();
        let distinct: BTreeSet<&String> = ips.iter().collect();
        assert_eq!(ips.len(), 220, "{}", c.logs());
        assert_eq!(distinct.len(), 220, "a cluster IP twice");
        let net: IpAddr = "10.120.0.0".parse().unwrap();
        for ip in &ips {
            let IpAddr::V4(v4) = ip.parse::<IpAddr>().unwrap() else {
                panic!("{ip}")
            };
            let IpAddr::V4(base) = net else { panic!() };
            assert_eq!(
                v4.octets()[..2],
                base.octets()[..2],
                "{ip} is outside {range}"
            );
        }
        // Each IP is the host cluster's IPAddress, naming its Service as parent.
        let reserved = ip_addresses(&ns).await;
        for s in &all {
            let ip = cluster_ip(s).unwrap();
            assert_eq!(
                reserved.get(&ip),
                s.metadata.name.as_ref(),
                "the IPAddress of {ip}"
            );
            let spec = s.spec.as_ref().unwrap();
            assert_eq!(spec.cluster_ips.as_deref(), Some(&[ip][..]));
            assert_eq!(spec.ip_families.as_deref(), Some(&["IPv4".to_string()][..]));
            assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
        }
        assert_eq!(reserved.len(), 220);
    }
}

#[tokio::test]
async fn two_racing_controllers_never_hand_out_an_ip_or_a_port_twice() {
    if external() {
        println!("skipped: needs controller processes of its own");
        return;
    }
    let ns = TestNamespace::new("svcalloc-race").await;
    let _cleanup = IpAddressCleanup(ns.name.clone());
    // A tight range (126 addresses, 110 of them in the dynamic band) and 120 NodePorts
    // for 100 Services: both replicas keep hitting each other's reservations.
    let args = [
        "--service-cluster-ip-range",
        "10.121.0.0/25",
        "--service-node-port-range",
        "31000-31119",
        "--leader-elect=false",
    ];
    let a = start(&ns, &args);
    let b = start(&ns, &args);
    let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    let spec = json!({"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]});
    let latencies = create_and_time(&api, "race", 100, spec).await;
    report(
        "100 NodePort Services at once, two racing replicas",
        &latencies,
    );
    let all = wait_until("every Service with its NodePort", T, || async {
        let all = api.list(&ListParams::default()).await.unwrap().items;
        if all.iter().all(|s| node_ports(s).len() == 1) {
            Ok(all)
        } else {
            Err(format!("{}\n{}", a.logs(), b.logs()))
        }
    })
    .await;
    let ips: BTreeSet<String> = all.iter().filter_map(cluster_ip).collect();
    let ports: BTreeSet<i32> = all.iter().flat_map(node_ports).collect();
    assert_eq!(ips.len(), 100, "a cluster IP twice");
    assert_eq!(ports.len(), 100, "a NodePort twice");
    assert!(ports.iter().all(|p| (31000..=31119).contains(p)));
    // The losers released what they had reserved: one reservation per Service, each
    // naming the Service that holds it.
    let by_ip: BTreeMap<String, String> = all
        .iter()
        .map(|s| (cluster_ip(s).unwrap(), s.metadata.name.clone().unwrap()))
        .collect();
    wait_until("no reservation left over", T, || async {
        let reserved = ip_addresses(&ns).await;
        let leases: BTreeSet<String> = Api::<Lease>::namespaced(ns.client.clone(), &ns.name)
            .list(
                &ListParams::default()
                    .labels("app.kubernetes.io/managed-by=rekube-service-allocator"),
            )
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect();
        let want_leases: BTreeSet<String> = ports
            .iter()
            .map(|p| format!("rekube-nodeport-{p}"))
            .collect();
        if reserved == by_ip && leases == want_leases {
            Ok(())
        } else {
            Err(format!(
                "{} IPAddresses, {} Leases",
                reserved.len(),
                leases.len()
            ))
        }
    })
    .await;
    let conflicts = a.logs().matches("patching its spec").count()
        + b.logs().matches("patching its spec").count();
    println!("lost patch races (released and retried): {conflicts}");
}

#[tokio::test]
async fn requested_ips_and_ports_are_honoured_or_refused_under_the_charts_rbac() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("svcalloc-req").await;
    let _cleanup = IpAddressCleanup(ns.name.clone());
    let _rbac = rbac::apply_chart_rbac(&ns, "templates/controllers-rbac.yaml", "controllers");
    let kubeconfig = rbac::service_account_kubeconfig(&ns, &format!("{}-controllers", ns.name));
    // A range inside the host's own ServiceCIDR (10.96.0.0/16): rekube and core Services
    // draw from the same addresses, and the IPAddress objects keep them apart.
    let c = ControllerProcess::start_with_env(
        &ns.name,
        &[
            "--controllers=service-allocator",
            "--service-cluster-ip-range",
            "10.96.200.0/24",
            "--service-node-port-range",
            "31500-31599",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    let core: Api<CoreService> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let create = |name: &str, spec: Value| {
        let api = api.clone();
        let s = service(name, spec);
        async move { api.create(&PostParams::default(), &s).await.unwrap() }
    };

    // Honoured when free.
    create(
        "a",
        json!({"clusterIP": "10.96.200.10", "ports": [{"port": 80}]}),
    )
    .await;
    wait_reserved(&ns, "10.96.200.10", "a", &c).await;
    // Taken by another rekube Service: refused, with upstream's message.
    create(
        "b",
        json!({"clusterIP": "10.96.200.10", "ports": [{"port": 80}]}),
    )
    .await;
    assert_eq!(
        wait_refused(&api, "b", &c).await,
        "spec.clusterIPs: Invalid value: [\"10.96.200.10\"]: failed to allocate IP 10.96.200.10: provided IP is already allocated"
    );
    // Out of range.
    create(
        "c",
        json!({"clusterIP": "10.1.2.3", "ports": [{"port": 80}]}),
    )
    .await;
    assert_eq!(
        wait_refused(&api, "c", &c).await,
        "spec.clusterIPs: Invalid value: [\"10.1.2.3\"]: failed to allocate IP 10.1.2.3: the provided IP (10.1.2.3) is not in the valid range. The range of valid IPs is 10.96.200.0/24"
    );
    // The events say it too.
    wait_until("the refusal events", T, || async {
        let out = std::process::Command::new("kubectl")
            .args([
                "get",
                "events",
                "-n",
                &ns.name,
                "-o",
                "jsonpath={.items[*].reason}",
            ])
            .output()
            .unwrap();
        let reasons = String::from_utf8_lossy(&out.stdout).to_string();
        if reasons.contains("ClusterIPAlreadyAllocated") && reasons.contains("ClusterIPOutOfRange")
        {
            Ok(())
        } else {
            Err(reasons)
        }
    })
    .await;

    // A core Service cannot take a rekube Service's IP: the apiserver's own allocator
    // finds its IPAddress.
    let core_svc = |name: &str, ip: &str| -> CoreService {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}))
        .unwrap()
    };
    match core.create(&pp, &core_svc("core-a", "10.96.200.10")).await {
        Err(kube::Error::Api(s)) if s.code == 422 => assert!(
            s.message
                .contains("failed to allocate IP 10.96.200.10: provided IP is already allocated"),
            "{}",
            s.message
        ),
        other => panic!("a core Service took a rekube Service's IP: {other:?}"),
    }
    // Nor a rekube Service a core Service's.
    core.create(&pp, &core_svc("core-b", "10.96.200.20"))
        .await
        .unwrap();
    create(
        "d",
        json!({"clusterIP": "10.96.200.20", "ports": [{"port": 80}]}),
    )
    .await;
    assert!(
        wait_refused(&api, "d", &c)
            .await
            .ends_with("failed to allocate IP 10.96.200.20: provided IP is already allocated")
    );

    // Headless: left alone.
    create(
        "headless",
        json!({"clusterIP": "None", "ports": [{"port": 80}]}),
    )
    .await;
    // NodePorts: a requested one held, taken, or out of range.
    create(
        "np",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31555}]}),
    )
    .await;
    wait_until("np's IP and NodePort", T, || async {
        let s = api.get("np").await.map_err(|e| e.to_string())?;
        match (cluster_ip(&s), node_ports(&s).as_slice()) {
            (Some(_), [31555]) => Ok(()),
            other => Err(format!("{other:?}\n{}", c.logs())),
        }
    })
    .await;
    create(
        "np-taken",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31555}]}),
    )
    .await;
    assert_eq!(
        wait_refused(&api, "np-taken", &c).await,
        "spec.ports[0].nodePort: Invalid value: 31555: provided port is already allocated"
    );
    create(
        "np-out",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]}),
    )
    .await;
    assert_eq!(
        wait_refused(&api, "np-out", &c).await,
        "spec.ports[0].nodePort: Invalid value: 30000: provided port is not in the valid range. The range of valid ports is 31500-31599"
    );
    let h = api.get("headless").await.unwrap();
    let spec = h.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.ip_families, None, "headless Service touched");
    assert!(!ip_addresses(&ns).await.values().any(|p| p == "headless"));

    // Once a goes, b (waiting for its IP) gets it, and its condition turns True.
    api.delete("a", &DeleteParams::default()).await.unwrap();
    wait_until("b holding 10.96.200.10", T, || async {
        let reserved = ip_addresses(&ns).await;
        let s = api.get("b").await.map_err(|e| e.to_string())?;
        let ok = s
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Allocated" && c.status == "True")
            });
        if reserved.get("10.96.200.10").map(String::as_str) == Some("b") && ok {
            Ok(())
        } else {
            Err(format!("{reserved:?} {:?}\n{}", s.status, c.logs()))
        }
    })
    .await;
    core.delete("core-b", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deleted_services_ip_is_released_and_reused() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("svcalloc-reuse").await;
    let _cleanup = IpAddressCleanup(ns.name.clone());
    // Two addresses: 10.123.0.1 and 10.123.0.2.
    let c = start(&ns, &["--service-cluster-ip-range", "10.123.0.0/30"]);
    let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    let spec = json!({"ports": [{"port": 80}]});
    for n in ["s1", "s2"] {
        api.create(&PostParams::default(), &service(n, spec.clone()))
            .await
            .unwrap();
    }
    let ip1 = wait_ip(&api, "s1", &c).await;
    let ip2 = wait_ip(&api, "s2", &c).await;
    assert_ne!(ip1, ip2);
    api.create(&PostParams::default(), &service("s3", spec.clone()))
        .await
        .unwrap();
    assert_eq!(
        wait_refused(&api, "s3", &c).await,
        "failed to allocate a serviceIP: range is full (IPv4)"
    );
    let deleted = Instant::now();
    api.delete("s1", &DeleteParams::default()).await.unwrap();
    assert_eq!(wait_ip(&api, "s3", &c).await, ip1, "s1's IP reused");
    println!(
        "delete → IP reused by a waiting Service: {:?}",
        deleted.elapsed()
    );
    assert_eq!(
        ip_addresses(&ns).await,
        [(ip1, "s3".to_string()), (ip2, "s2".to_string())]
            .into_iter()
            .collect()
    );
}

#[tokio::test]
async fn node_ports_are_shared_per_port_number_and_health_checks_get_one() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("svcalloc-np").await;
    let _cleanup = IpAddressCleanup(ns.name.clone());
    let c = start(
        &ns,
        &[
            "--service-cluster-ip-range",
            "10.124.0.0/24",
            "--service-node-port-range",
            "32000-32099",
        ],
    );
    let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &service(
            "dns",
            json!({"type": "NodePort", "ports": [
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"},
                {"name": "metrics", "port": 9153, "protocol": "TCP"}]}),
        ),
    )
    .await
    .unwrap();
    let ports = wait_until("dns's NodePorts", T, || async {
        let s = api.get("dns").await.map_err(|e| e.to_string())?;
        let p = node_ports(&s);
        if p.len() == 3 { Ok(p) } else { Err(c.logs()) }
    })
    .await;
    assert_eq!(
        ports[0], ports[1],
        "TCP and UDP of port 53 share one NodePort"
    );
    assert_ne!(ports[0], ports[2]);
    assert!(ports.iter().all(|p| (32000..=32099).contains(p)));
    // A LoadBalancer with externalTrafficPolicy Local also gets a healthCheckNodePort;
    // one with allocateLoadBalancerNodePorts false gets none.
    api.create(
        &PostParams::default(),
        &service(
            "lb",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                   "ports": [{"port": 80}]}),
        ),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &service(
            "lb-no-np",
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                   "ports": [{"port": 80}]}),
        ),
    )
    .await
    .unwrap();
    let lb = wait_until("lb's ports", T, || async {
        let s = api.get("lb").await.map_err(|e| e.to_string())?;
        let spec = s.spec.clone().unwrap();
        match (node_ports(&s).as_slice(), spec.health_check_node_port) {
            ([np], Some(hc)) => Ok((*np, hc)),
            other => Err(format!("{other:?}\n{}", c.logs())),
        }
    })
    .await;
    assert_ne!(lb.0, lb.1);
    let no_np = wait_ip(&api, "lb-no-np", &c).await;
    assert!(!no_np.is_empty());
    assert!(node_ports(&api.get("lb-no-np").await.unwrap()).is_empty());
    // Every NodePort is a Lease naming its Service.
    let leases: BTreeMap<String, String> = Api::<Lease>::namespaced(ns.client.clone(), &ns.name)
        .list(
            &ListParams::default().labels("app.kubernetes.io/managed-by=rekube-service-allocator"),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|l| {
            (
                l.metadata.name.unwrap(),
                l.spec.unwrap().holder_identity.unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        (ports[0], "dns"),
        (ports[2], "dns"),
        (lb.0, "lb"),
        (lb.1, "lb"),
    ]
    .into_iter()
    .map(|(p, s)| {
        (
            format!("rekube-nodeport-{p}"),
            format!("services.rekube.io/{}/{s}", ns.name),
        )
    })
    .collect();
    assert_eq!(leases, want);
}

#[tokio::test]
async fn a_restarted_controller_repairs_what_was_lost() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("svcalloc-repair").await;
    let _cleanup = IpAddressCleanup(ns.name.clone());
    let mut c = start(&ns, &["--service-cluster-ip-range", "10.125.0.0/24"]);
    let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    for n in ["kept", "gone"] {
        api.create(
            &PostParams::default(),
            &service(n, json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    }
    let kept = wait_ip(&api, "kept", &c).await;
    let gone = wait_ip(&api, "gone", &c).await;
    // While the controller is down: kept's IPAddress is lost, gone is deleted.
    c.kill();
    let ips: Api<IPAddress> = Api::all(ns.client.clone());
    ips.delete(&kept, &DeleteParams::default()).await.unwrap();
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    let stopped = Instant::now();
    c.restart();
    // kept's IPAddress is recreated at once; gone's is released after the grace period
    // for allocations in flight (the controller did not see the deletion).
    wait_until("kept's IPAddress back", T, || async {
        let r = ip_addresses(&ns).await;
        if r.get(&kept).map(String::as_str) == Some("kept") {
            Ok(())
        } else {
            Err(format!("{r:?}\n{}", c.logs()))
        }
    })
    .await;
    wait_until(
        "gone's IPAddress released",
        Duration::from_secs(120),
        || async {
            let r = ip_addresses(&ns).await;
            if r.contains_key(&gone) {
                Err(format!("{r:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    println!("orphan released {:?} after the restart", stopped.elapsed());
}

/// The chart's Service range policy of a test release, bound to the test namespace only
/// (the chart's binds every namespace), deleted on drop.
struct RangePolicy(String);

impl Drop for RangePolicy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args([
                "delete",
                "validatingadmissionpolicy,validatingadmissionpolicybinding",
                &self.0,
                "--ignore-not-found",
            ])
            .output();
    }
}

fn apply_range_policy(ns: &TestNamespace, ip_range: &str, port_range: &str) -> RangePolicy {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/rekube");
    let out = std::process::Command::new("helm")
        .args([
            "template",
            &ns.name,
            chart,
            "--namespace",
            &ns.name,
            "--kube-version",
            "1.36.3",
            "--show-only",
            "templates/service-ranges.yaml",
            "--set-string",
            &format!(
                "controllers.args.serviceClusterIpRange={},controllers.args.serviceNodePortRange={port_range}",
                ip_range.replace(',', "\\,")
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap().replace(
        "\n  policyName:",
        &format!(
            "\n  matchResources: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {}}}}}}}\n  policyName:",
            ns.name
        ),
    );
    rekube_e2e::kubectl_apply(&rendered, "the chart's service range policy");
    RangePolicy(format!("{}-controllers-service-ranges", ns.name))
}

/// A Service refused at create: the apiserver's message.
async fn refused_at_create(api: &Api<Service>, name: &str, spec: Value) -> String {
    match api
        .create(&PostParams::default(), &service(name, spec))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 422 => s.message,
        other => panic!("{name} was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn the_charts_range_policy_refuses_out_of_range_requests_at_create() {
    let ns = TestNamespace::new("svcalloc-policy").await;
    let _policy = apply_range_policy(&ns, "10.126.0.0/16,fd00:126::/112", "31000-31999");
    let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    // The policy takes a moment to be in force.
    let first = wait_until("the range policy in force", T, || async {
        match api
            .create(
                &PostParams::default(),
                &service(
                    "probe",
                    json!({"clusterIP": "10.1.2.3", "ports": [{"port": 80}]}),
                ),
            )
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 422 => Ok(s.message),
            Ok(_) => {
                let _ = api.delete("probe", &DeleteParams::default()).await;
                Err("created".to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert!(
        first.ends_with(
            "spec.clusterIPs: Invalid value: [\"10.1.2.3\"]: failed to allocate IP 10.1.2.3: the provided IP (10.1.2.3) is not in the valid range. The range of valid IPs is 10.126.0.0/16"
        ),
        "{first}"
    );
    for (name, spec, want) in [
        (
            "network-address",
            json!({"clusterIP": "10.126.0.0", "ports": [{"port": 80}]}),
            "failed to allocate IP 10.126.0.0: the provided IP (10.126.0.0) is not in the valid range. The range of valid IPs is 10.126.0.0/16",
        ),
        (
            "ipv6-outside",
            json!({"clusterIP": "fd00:1::1", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
            "the provided IP (fd00:1::1) is not in the valid range. The range of valid IPs is fd00:126::/112",
        ),
        (
            "node-port",
            json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30000}]}),
            "spec.ports[1].nodePort: Invalid value: 30000: provided port is not in the valid range. The range of valid ports is 31000-31999",
        ),
        (
            "health-check",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000, "ports": [{"port": 80}]}),
            "failed to allocate requested HealthCheck NodePort 32000: provided port is not in the valid range. The range of valid ports is 31000-31999",
        ),
    ] {
        let message = refused_at_create(&api, name, spec).await;
        assert!(message.ends_with(want), "{name}: {message}");
    }
    // In range, headless and ExternalName pass (the allocator decides the rest).
    for (name, spec) in [
        (
            "in-range",
            json!({"clusterIP": "10.126.1.1", "type": "NodePort", "ports": [{"port": 80, "nodePort": 31080}]}),
        ),
        (
            "in-range-v6",
            json!({"clusterIP": "fd00:126::5", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
        ),
        (
            "headless",
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        ),
        (
            "external",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
    ] {
        api.create(&PostParams::default(), &service(name, spec))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test]
async fn dual_stack_services_get_an_address_of_each_family() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("svcalloc-dual").await;
    let _cleanup = IpAddressCleanup(ns.name.clone());
    let c = start(
        &ns,
        &["--service-cluster-ip-range", "10.127.0.0/24,fd00:127::/112"],
    );
    let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    for (name, spec) in [
        (
            "prefer",
            json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}),
        ),
        (
            "require-v6-first",
            json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"], "ports": [{"port": 80}]}),
        ),
        (
            "single-v6",
            json!({"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
        ),
        ("single-default", json!({"ports": [{"port": 80}]})),
    ] {
        api.create(&PostParams::default(), &service(name, spec))
            .await
            .unwrap();
    }
    let families = |ips: &[String]| -> Vec<&'static str> {
        ips.iter()
            .map(|ip| match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(_) => "IPv4",
                IpAddr::V6(_) => "IPv6",
            })
            .collect()
    };
    for (name, want) in [
        ("prefer", vec!["IPv4", "IPv6"]),
        ("require-v6-first", vec!["IPv6", "IPv4"]),
        ("single-v6", vec!["IPv6"]),
        ("single-default", vec!["IPv4"]),
    ] {
        let ip = wait_ip(&api, name, &c).await;
        let s = api.get(name).await.unwrap();
        let spec = s.spec.unwrap();
        let ips = spec.cluster_ips.clone().unwrap();
        assert_eq!(ips[0], ip);
        assert_eq!(families(&ips), want, "{name}");
        assert_eq!(
            spec.ip_families.unwrap(),
            want.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            "{name}"
        );
        for ip in &ips {
            let parsed: IpAddr = ip.parse().unwrap();
            let in_range = match parsed {
                IpAddr::V4(v4) => v4.octets()[..3] == [10, 127, 0],
                IpAddr::V6(v6) => v6.segments()[..7] == [0xfd00, 0x127, 0, 0, 0, 0, 0],
            };
            assert!(in_range, "{name}: {ip}");
        }
    }
    let reserved = ip_addresses(&ns).await;
    assert_eq!(reserved.len(), 6, "{reserved:?}");
    let ipaddrs: Api<IPAddress> = Api::all(ns.client.clone());
    for (ip, _) in reserved.iter().filter(|(ip, _)| ip.contains(':')) {
        let obj = ipaddrs.get(ip).await.unwrap();
        assert_eq!(
            obj.metadata.labels.unwrap()["ipaddress.kubernetes.io/ip-family"],
            "IPv6"
        );
    }
}

#[tokio::test]
async fn a_requested_ip_is_not_handed_to_another_service_before_its_first_sync() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("svcalloc-early").await;
    let _cleanup = IpAddressCleanup(ns.name.clone());
    let api: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    // Two addresses, 10.128.0.1 and 10.128.0.2; both Services exist before the controller
    // starts, so either may be synced first. Ten rounds: without the requested address
    // kept out of dynamic allocation, "dynamic" would take .1 about half the time.
    for round in 0..10 {
        let (requested, dynamic) = (format!("requested-{round}"), format!("dynamic-{round}"));
        for (name, spec) in [
            (
                &requested,
                json!({"clusterIP": "10.128.0.1", "ports": [{"port": 80}]}),
            ),
            (&dynamic, json!({"ports": [{"port": 80}]})),
        ] {
            api.create(&PostParams::default(), &service(name, spec))
                .await
                .unwrap();
        }
        let c = start(
            &ns,
            &[
                "--service-cluster-ip-range",
                "10.128.0.0/30",
                "--leader-elect=false",
            ],
        );
        assert_eq!(
            wait_ip(&api, &dynamic, &c).await,
            "10.128.0.2",
            "round {round}"
        );
        wait_reserved(&ns, "10.128.0.1", &requested, &c).await;
        drop(c);
        for name in [&requested, &dynamic] {
            api.delete(name, &DeleteParams::default()).await.unwrap();
        }
        // Released by hand (the controller is gone): the next round starts empty.
        let ips: Api<IPAddress> = Api::all(ns.client.clone());
        for ip in ["10.128.0.1", "10.128.0.2"] {
            let _ = ips.delete(ip, &DeleteParams::default()).await;
        }
        wait_until("the addresses free", T, || async {
            let r = ip_addresses(&ns).await;
            if r.is_empty() {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;
    }
}
