//! The Endpoints controller against the real apiserver: upstream's test/e2e/network
//! scenarios (service.go "should serve a basic endpoint from pods" and "should serve
//! multiport endpoints from pods" [Conformance], "should create endpoints for unready
//! pods", headless Services, selectorless Services, Service deletion) plus readiness
//! changes, terminating pods, scale and no-op writes. The pods run on a hollow
//! rekube-node-agent of the test, which gives them IPs and readiness; pods whose readiness
//! the test decides carry a readiness gate ([`readiness`]). Pods are bound to the agent's
//! node at creation, so only `endpoint-controller` runs.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use rekube_crds::{Endpoints, Pod, Service};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::readiness::{self, NEVER_READY_GATE, TEST_READY_GATE};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const HEADLESS: &str = "service.kubernetes.io/headless";
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// Pod name → ports, of the ready addresses or of the not-ready ones (upstream's
/// portsByPodName, as validateEndpointsPortsOrFail reads it).
type PortsByPod = BTreeMap<String, BTreeSet<i32>>;

fn ports_by_pod(ep: &Endpoints, ready: bool) -> PortsByPod {
    let mut out = PortsByPod::new();
    for s in ep.subsets.iter().flatten() {
        let addrs = if ready {
            &s.addresses
        } else {
            &s.not_ready_addresses
        };
        for a in addrs.iter().flatten() {
            let name = a
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| a.ip.clone());
            let ports = out.entry(name).or_default();
            ports.extend(s.ports.iter().flatten().map(|p| p.port));
        }
    }
    out
}

fn expect(entries: &[(&str, &[i32])]) -> PortsByPod {
    entries
        .iter()
        .map(|(n, p)| (n.to_string(), p.iter().copied().collect()))
        .collect()
}

struct Env {
    ns: TestNamespace,
    pods: Api<Pod>,
    services: Api<Service>,
    endpoints: Api<Endpoints>,
    controllers: ControllerProcess,
    agent: AgentProcess,
}

async fn env(prefix: &str) -> Env {
    env_with(prefix, &[]).await
}

/// [`env`] with more flags for the controller.
async fn env_with(prefix: &str, flags: &[&str]) -> Env {
    env_on(prefix, &[], flags).await
}

/// [`env`] with more flags for the hollow agent and for the controller.
async fn env_on(prefix: &str, agent_flags: &[&str], flags: &[&str]) -> Env {
    let ns = TestNamespace::new(prefix).await;
    let mut a = vec!["--hollow"];
    a.extend_from_slice(agent_flags);
    let agent = AgentProcess::start(&ns, "node", &a);
    agent.wait_node_ready(&ns.client, T).await;
    let mut args = vec!["--controllers", "endpoint"];
    args.extend_from_slice(flags);
    let controllers = ControllerProcess::start(&ns.name, &args);
    Env {
        pods: Api::namespaced(ns.client.clone(), &ns.name),
        services: Api::namespaced(ns.client.clone(), &ns.name),
        endpoints: Api::namespaced(ns.client.clone(), &ns.name),
        ns,
        controllers,
        agent,
    }
}

impl Env {
    /// A pod on the agent's node with `labels` and container `ports` (`[name, port]`),
    /// and a readiness gate when given.
    async fn create_pod(&self, name: &str, labels: Value, ports: Value, gate: Option<&str>) {
        let mut spec = json!({
            "nodeName": self.agent.node_name,
            "containers": [{"name": "web", "image": "busybox:1.36", "ports": ports}],
        });
        if let Some(g) = gate {
            spec["readinessGates"] = readiness::readiness_gates(g);
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels}, "spec": spec,
        }))
        .unwrap();
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
    }

    async fn create_service(&self, svc: Value) -> Service {
        let mut svc = svc;
        svc["apiVersion"] = json!("rekube.io/v1");
        svc["kind"] = json!("Service");
        let s: Service = serde_json::from_value(svc).unwrap();
        self.services
            .create(&PostParams::default(), &s)
            .await
            .unwrap()
    }

    async fn wait_pod_ip(&self, name: &str) -> String {
        wait_until(&format!("pod {name} with an IP"), T, || async {
            let p = self.pods.get(name).await.map_err(|e| e.to_string())?;
            p.status
                .and_then(|s| s.pod_ip)
                .ok_or_else(|| self.agent.logs())
        })
        .await
    }

    /// Waits until the Endpoints of `service` list exactly `ready` and `not_ready`
    /// (upstream validateEndpointsPortsOrFail, for both lists).
    async fn wait_endpoints(
        &self,
        service: &str,
        ready: PortsByPod,
        not_ready: PortsByPod,
    ) -> Endpoints {
        wait_until(
            &format!("endpoints {service}: ready {ready:?}, not ready {not_ready:?}"),
            T,
            || async {
                let ep = self
                    .endpoints
                    .get_opt(service)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no endpoints\n{}", self.controllers.logs()))?;
                let (r, n) = (ports_by_pod(&ep, true), ports_by_pod(&ep, false));
                if r == ready && n == not_ready {
                    Ok(ep)
                } else {
                    Err(format!("ready {r:?}, not ready {n:?}"))
                }
            },
        )
        .await
    }

    async fn delete_pod(&self, name: &str) {
        self.pods
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// upstream "[sig-network] Services should serve a basic endpoint from pods
/// [Conformance]": the Endpoints follow pods created and deleted; plus the labels and the
/// trigger-time annotation the controller writes.
#[tokio::test]
async fn serves_a_basic_endpoint_from_pods() {
    let e = env("ep-basic").await;
    let sel = json!({"name": "endpoint-test2"});
    e.create_service(json!({
        "metadata": {"name": "endpoint-test2", "labels": {"team": "net"}},
        "spec": {"selector": sel, "ports": [{"port": 80, "targetPort": 80}]},
    }))
    .await;
    let ep = e
        .wait_endpoints("endpoint-test2", expect(&[]), expect(&[]))
        .await;
    // The Service's labels, and headless until a cluster IP is allocated.
    assert_eq!(ep.labels().get("team").map(String::as_str), Some("net"));
    assert_eq!(ep.labels().get(HEADLESS).map(String::as_str), Some(""));
    assert_eq!(
        ep.labels().get(MANAGED_BY).map(String::as_str),
        Some("endpoint-controller")
    );
    assert!(ep.annotations().contains_key(TRIGGER_TIME), "{ep:?}");

    let port80 = json!([{"containerPort": 80}]);
    e.create_pod("pod1", sel.clone(), port80.clone(), None)
        .await;
    let ep = e
        .wait_endpoints("endpoint-test2", expect(&[("pod1", &[80])]), expect(&[]))
        .await;
    let ip1 = e.wait_pod_ip("pod1").await;
    let a = &ep.subsets.as_ref().unwrap()[0].addresses.as_ref().unwrap()[0];
    assert_eq!(a.ip, ip1);
    assert_eq!(a.node_name.as_deref(), Some(e.agent.node_name.as_str()));
    let r = a.target_ref.as_ref().unwrap();
    assert_eq!(r.kind.as_deref(), Some("Pod"));
    assert_eq!(r.namespace.as_deref(), Some(e.ns.name.as_str()));
    assert_eq!(r.uid, e.pods.get("pod1").await.unwrap().metadata.uid);
    // The trigger time is the pod's Ready transition (RFC 3339, UTC).
    let trigger = ep.annotations().get(TRIGGER_TIME).cloned().unwrap();
    assert!(trigger.ends_with('Z'), "{trigger}");

    e.create_pod("pod2", sel.clone(), port80.clone(), None)
        .await;
    e.wait_endpoints(
        "endpoint-test2",
        expect(&[("pod1", &[80]), ("pod2", &[80])]),
        expect(&[]),
    )
    .await;
    e.delete_pod("pod1").await;
    e.wait_endpoints("endpoint-test2", expect(&[("pod2", &[80])]), expect(&[]))
        .await;
    e.delete_pod("pod2").await;
    e.wait_endpoints("endpoint-test2", expect(&[]), expect(&[]))
        .await;
}

/// upstream "[sig-network] Services should serve multiport endpoints from pods
/// [Conformance]": named targetPorts resolved per pod; a pod without the name is left out
/// of that port.
#[tokio::test]
async fn serves_multiport_endpoints_from_pods() {
    let e = env("ep-multiport").await;
    let sel = json!({"name": "multi-endpoint-test"});
    e.create_service(json!({
        "metadata": {"name": "multi-endpoint-test"},
        "spec": {"selector": sel, "ports": [
            {"name": "portname1", "port": 80, "targetPort": "svc1"},
            {"name": "portname2", "port": 81, "targetPort": "svc2"},
        ]},
    }))
    .await;
    e.wait_endpoints("multi-endpoint-test", expect(&[]), expect(&[]))
        .await;
    e.create_pod(
        "pod1",
        sel.clone(),
        json!([{"name": "svc1", "containerPort": 100}]),
        None,
    )
    .await;
    e.wait_endpoints(
        "multi-endpoint-test",
        expect(&[("pod1", &[100])]),
        expect(&[]),
    )
    .await;
    e.create_pod(
        "pod2",
        sel.clone(),
        json!([{"name": "svc2", "containerPort": 101}]),
        None,
    )
    .await;
    let ep = e
        .wait_endpoints(
            "multi-endpoint-test",
            expect(&[("pod1", &[100]), ("pod2", &[101])]),
            expect(&[]),
        )
        .await;
    // One subset per port: each carries the Service port's name and protocol.
    let mut ports: Vec<(String, i32, String)> = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        vec![
            ("portname1".into(), 100, "TCP".into()),
            ("portname2".into(), 101, "TCP".into())
        ]
    );
    // A pod naming both ports is in both subsets.
    e.create_pod(
        "pod3",
        sel.clone(),
        json!([{"name": "svc1", "containerPort": 200}, {"name": "svc2", "containerPort": 201}]),
        None,
    )
    .await;
    e.wait_endpoints(
        "multi-endpoint-test",
        expect(&[("pod1", &[100]), ("pod2", &[101]), ("pod3", &[200, 201])]),
        expect(&[]),
    )
    .await;
    e.delete_pod("pod1").await;
    e.delete_pod("pod3").await;
    e.wait_endpoints(
        "multi-endpoint-test",
        expect(&[("pod2", &[101])]),
        expect(&[]),
    )
    .await;
    e.delete_pod("pod2").await;
    e.wait_endpoints("multi-endpoint-test", expect(&[]), expect(&[]))
        .await;
}

/// upstream "should create endpoints for unready pods" (publishNotReadyAddresses), beside
/// a Service without it; readiness turned off and on moves a pod between the lists.
#[tokio::test]
async fn publishes_not_ready_addresses_and_follows_readiness() {
    let e = env("ep-unready").await;
    let sel = json!({"app": "slow"});
    let ports = json!([{"port": 80, "targetPort": 8080}]);
    e.create_service(json!({
        "metadata": {"name": "tolerant"},
        "spec": {"selector": sel, "ports": ports, "publishNotReadyAddresses": true},
    }))
    .await;
    e.create_service(json!({
        "metadata": {"name": "strict"},
        "spec": {"selector": sel, "ports": ports},
    }))
    .await;
    let p = json!([{"containerPort": 8080}]);
    e.create_pod("never", sel.clone(), p.clone(), Some(NEVER_READY_GATE))
        .await;
    e.create_pod("gated", sel.clone(), p.clone(), Some(TEST_READY_GATE))
        .await;
    e.wait_pod_ip("never").await;
    e.wait_pod_ip("gated").await;
    e.wait_endpoints(
        "tolerant",
        expect(&[("gated", &[8080]), ("never", &[8080])]),
        expect(&[]),
    )
    .await;
    e.wait_endpoints(
        "strict",
        expect(&[]),
        expect(&[("gated", &[8080]), ("never", &[8080])]),
    )
    .await;
    readiness::set_gate(&e.pods, "gated", TEST_READY_GATE, true).await;
    e.wait_endpoints(
        "strict",
        expect(&[("gated", &[8080])]),
        expect(&[("never", &[8080])]),
    )
    .await;
    readiness::set_gate(&e.pods, "gated", TEST_READY_GATE, false).await;
    e.wait_endpoints(
        "strict",
        expect(&[]),
        expect(&[("gated", &[8080]), ("never", &[8080])]),
    )
    .await;
    // The tolerant Service never changed.
    e.wait_endpoints(
        "tolerant",
        expect(&[("gated", &[8080]), ("never", &[8080])]),
        expect(&[]),
    )
    .await;
}

const HOLD: &str = "rekube.io/e2e-hold";

/// Changes a pod's finalizers with its resourceVersion as precondition (the agent adds
/// and removes its own meanwhile), retrying on a conflict.
async fn set_finalizers(pods: &Api<Pod>, name: &str, change: impl Fn(&mut Vec<String>)) {
    for _ in 0..20 {
        let pod = pods.get(name).await.unwrap();
        let mut f = pod.finalizers().to_vec();
        change(&mut f);
        let patch =
            json!({"metadata": {"resourceVersion": pod.resource_version(), "finalizers": f}});
        match pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("finalizers of pod {name}: {e}"),
        }
    }
    panic!("finalizers of pod {name}: 20 conflicts in a row");
}

/// A terminating pod leaves the Endpoints at once (not even as not ready), but stays in
/// those of a Service publishing not-ready addresses until it is gone.
#[tokio::test]
async fn terminating_pods_leave_the_endpoints() {
    let e = env("ep-terminating").await;
    let sel = json!({"app": "web"});
    let ports = json!([{"port": 80, "targetPort": 80}]);
    e.create_service(
        json!({"metadata": {"name": "web"}, "spec": {"selector": sel, "ports": ports}}),
    )
    .await;
    e.create_service(json!({
        "metadata": {"name": "web-all"},
        "spec": {"selector": sel, "ports": ports, "publishNotReadyAddresses": true},
    }))
    .await;
    e.create_pod("a", sel.clone(), json!([]), None).await;
    e.create_pod("b", sel.clone(), json!([]), None).await;
    e.wait_endpoints("web", expect(&[("a", &[80]), ("b", &[80])]), expect(&[]))
        .await;
    // A finalizer of the test holds "a" Terminating (beside the agent's).
    set_finalizers(&e.pods, "a", |f| f.push(HOLD.to_string())).await;
    e.delete_pod("a").await;
    e.wait_endpoints("web", expect(&[("b", &[80])]), expect(&[]))
        .await;
    e.wait_endpoints(
        "web-all",
        expect(&[("a", &[80]), ("b", &[80])]),
        expect(&[]),
    )
    .await;
    // Released: the agent finishes it and it goes from both.
    set_finalizers(&e.pods, "a", |f| f.retain(|x| x != HOLD)).await;
    e.wait_endpoints("web-all", expect(&[("b", &[80])]), expect(&[]))
        .await;
}

/// A headless Service without ports: addresses without ports, the headless label, and the
/// hostname of pods whose subdomain is the Service.
#[tokio::test]
async fn headless_service_lists_addresses_and_hostnames() {
    let e = env("ep-headless").await;
    e.create_service(json!({
        "metadata": {"name": "db"},
        "spec": {"selector": {"app": "db"}, "clusterIP": "None"},
    }))
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "db-0", "labels": {"app": "db"}},
        "spec": {"nodeName": e.agent.node_name, "hostname": "db-0", "subdomain": "db",
                 "containers": [{"name": "db", "image": "busybox:1.36"}]},
    }))
    .unwrap();
    e.pods.create(&PostParams::default(), &pod).await.unwrap();
    e.create_pod("db-1", json!({"app": "db"}), json!([]), None)
        .await;
    let ep = e
        .wait_endpoints("db", expect(&[("db-0", &[]), ("db-1", &[])]), expect(&[]))
        .await;
    assert_eq!(ep.labels().get(HEADLESS).map(String::as_str), Some(""));
    let subsets = ep.subsets.unwrap();
    assert_eq!(subsets.len(), 1);
    assert!(subsets[0].ports.as_ref().is_none_or(|p| p.is_empty()));
    let hostnames: BTreeMap<String, Option<String>> = subsets[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| {
            (
                a.target_ref.as_ref().unwrap().name.clone().unwrap(),
                a.hostname.clone(),
            )
        })
        .collect();
    assert_eq!(hostnames["db-0"].as_deref(), Some("db-0"));
    assert_eq!(hostnames["db-1"], None);
}

/// Services without a selector keep the Endpoints their user wrote; ExternalName
/// Services get none.
#[tokio::test]
async fn selectorless_and_external_name_services_are_left_alone() {
    let e = env("ep-selectorless").await;
    e.create_service(json!({
        "metadata": {"name": "external-db"},
        "spec": {"ports": [{"port": 5432}]},
    }))
    .await;
    let manual: Endpoints = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Endpoints",
        "metadata": {"name": "external-db"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}],
    }))
    .unwrap();
    let created = e
        .endpoints
        .create(&PostParams::default(), &manual)
        .await
        .unwrap();
    e.create_service(json!({
        "metadata": {"name": "alias"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com", "selector": {"app": "x"}},
    }))
    .await;
    e.create_pod("x", json!({"app": "x"}), json!([]), None)
        .await;
    // A control Service shows the controller has synced this namespace.
    e.create_service(json!({
        "metadata": {"name": "control"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
    }))
    .await;
    e.wait_endpoints("control", expect(&[("x", &[80])]), expect(&[]))
        .await;
    // An update of the selectorless Service syncs it: still nothing written.
    e.services
        .patch(
            "external-db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = e.endpoints.get("external-db").await.unwrap();
    assert_eq!(now.resource_version(), created.resource_version());
    assert_eq!(now.subsets, created.subsets);
    assert!(e.endpoints.get_opt("alias").await.unwrap().is_none());
}

/// Deleting a Service deletes its Endpoints; an Endpoints deleted by someone else comes
/// back; one left over from a Service deleted while the controller was down is deleted at
/// its start (upstream checkLeftoverEndpoints).
#[tokio::test]
async fn endpoints_go_with_their_service() {
    let mut e = env("ep-delete").await;
    let sel = json!({"app": "web"});
    e.create_service(
        json!({"metadata": {"name": "web"}, "spec": {"selector": sel, "ports": [{"port": 80}]}}),
    )
    .await;
    e.create_pod("p", sel.clone(), json!([]), None).await;
    e.wait_endpoints("web", expect(&[("p", &[80])]), expect(&[]))
        .await;
    e.endpoints
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    e.wait_endpoints("web", expect(&[("p", &[80])]), expect(&[]))
        .await;
    e.services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the endpoints of the deleted service gone", T, || async {
        match e.endpoints.get_opt("web").await.unwrap() {
            None => Ok(()),
            Some(_) => Err(e.controllers.logs()),
        }
    })
    .await;

    // Leftovers: a Service deleted while the controller is down.
    e.create_service(
        json!({"metadata": {"name": "gone"}, "spec": {"selector": sel, "ports": [{"port": 80}]}}),
    )
    .await;
    e.wait_endpoints("gone", expect(&[("p", &[80])]), expect(&[]))
        .await;
    e.controllers.kill();
    e.services
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(e.endpoints.get_opt("gone").await.unwrap().is_some());
    e.controllers.restart();
    wait_until("the leftover endpoints deleted at start", T, || async {
        match e.endpoints.get_opt("gone").await.unwrap() {
            None => Ok(()),
            Some(_) => Err(e.controllers.logs()),
        }
    })
    .await;
}

/// Scale: 40 pods come and 30 go; the Endpoints follow, and a steady state makes no
/// writes (pod updates that change nothing the Endpoints show, a Service update, and a
/// controller restart all leave the resourceVersion alone).
#[tokio::test]
async fn follows_scale_and_skips_no_op_writes() {
    let mut e = env("ep-scale").await;
    let sel = json!({"app": "many"});
    e.create_service(json!({"metadata": {"name": "many"}, "spec": {"selector": sel, "ports": [{"port": 80, "targetPort": 8080}]}}))
        .await;
    let names: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
    futures::future::join_all(
        names
            .iter()
            .map(|n| e.create_pod(n, sel.clone(), json!([]), None)),
    )
    .await;
    let all: Vec<(&str, &[i32])> = names.iter().map(|n| (n.as_str(), &[8080][..])).collect();
    let ep = e.wait_endpoints("many", expect(&all), expect(&[])).await;
    // Every address distinct and sorted by IP (upstream's SortSubsets).
    let ips: Vec<String> = ep.subsets.as_ref().unwrap()[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.ip.clone())
        .collect();
    let mut sorted = ips.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ips, sorted);

    futures::future::join_all(names[10..].iter().map(|n| e.delete_pod(n))).await;
    let ep = e
        .wait_endpoints("many", expect(&all[..10]), expect(&[]))
        .await;
    // Steady: give the agent time to finish the deleted pods, then nothing changes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ep = e.endpoints.get("many").await.unwrap_or(ep);
    let rv = ep.resource_version();
    for n in &names[..10] {
        e.pods
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {"touched": "yes"}}})),
            )
            .await
            .unwrap();
    }
    e.services
        .patch(
            "many",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    e.controllers.restart_gracefully();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = e.endpoints.get("many").await.unwrap();
    assert_eq!(
        now.resource_version(),
        rv,
        "a no-op write happened\n{}",
        e.controllers.logs()
    );
}

/// upstream TestPodUpdatesBatching: three pods turning ready at about the same time make
/// one write with `--endpoint-updates-batch-period` ("three updates in one batch"), one
/// each without ("three updates with no batching"; here at least two, as two may land in
/// one sync).
#[tokio::test]
async fn pod_changes_within_the_batch_period_make_one_write() {
    let writes = three_pods_turning_ready("ep-batch", "3s").await;
    assert_eq!(writes.len(), 1, "one write for the batch: {writes:?}");
}

#[tokio::test]
async fn pod_changes_without_batching_make_a_write_each() {
    let writes = three_pods_turning_ready("ep-nobatch", "0s").await;
    assert!(writes.len() > 1, "a write per change: {writes:?}");
}

/// The Endpoints writes (resourceVersion, ready pods) while three not-ready pods turn
/// ready together, with `batch` as `--endpoint-updates-batch-period`.
async fn three_pods_turning_ready(prefix: &str, batch: &str) -> Vec<(String, PortsByPod)> {
    let e = env_with(prefix, &["--endpoint-updates-batch-period", batch]).await;
    let sel = json!({"app": "batched"});
    e.create_service(json!({"metadata": {"name": "batched"}, "spec": {"selector": sel, "ports": [{"port": 80}]}}))
        .await;
    let names = ["b0", "b1", "b2"];
    for n in names {
        e.create_pod(n, sel.clone(), json!([]), Some(TEST_READY_GATE))
            .await;
    }
    e.wait_endpoints(
        "batched",
        expect(&[]),
        expect(&[("b0", &[80]), ("b1", &[80]), ("b2", &[80])]),
    )
    .await;
    // Settled: no batched sync still pending.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rv = e
        .endpoints
        .get("batched")
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let watch = {
        let endpoints = e.endpoints.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut writes = Vec::new();
            let params = WatchParams::default().fields("metadata.name=batched");
            let mut events = endpoints.watch(&params, &rv).await.unwrap().boxed();
            let deadline = tokio::time::sleep(Duration::from_secs(9));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => return writes,
                    ev = events.next() => match ev {
                        Some(Ok(WatchEvent::Modified(ep))) => writes.push(ep),
                        Some(Ok(_)) => {}
                        _ => return writes,
                    },
                }
            }
        })
    };
    futures::future::join_all(
        names
            .iter()
            .map(|n| readiness::set_gate(&e.pods, n, TEST_READY_GATE, true)),
    )
    .await;
    e.wait_endpoints(
        "batched",
        expect(&[("b0", &[80]), ("b1", &[80]), ("b2", &[80])]),
        expect(&[]),
    )
    .await;
    watch
        .await
        .unwrap()
        .iter()
        .map(|w| {
            (
                w.resource_version().unwrap_or_default(),
                ports_by_pod(w, true),
            )
        })
        .collect()
}

/// Over capacity (upstream maxCapacity; its unit test is TestSyncServiceOverCapacity): 1001
/// ready pods make 1000 addresses and `endpoints.kubernetes.io/over-capacity: truncated`;
/// one pod fewer, all 1000 and no annotation.
#[tokio::test]
async fn endpoints_over_capacity_are_truncated() {
    use futures::StreamExt;
    let e = env_on(
        "ep-capacity",
        &["--max-pods", "1100"],
        &[
            "--endpoint-updates-batch-period",
            "2s",
            "--kube-api-qps",
            "200",
            "--kube-api-burst",
            "300",
        ],
    )
    .await;
    let sel = json!({"app": "big"});
    e.create_service(
        json!({"metadata": {"name": "big"}, "spec": {"selector": sel, "ports": [{"port": 80}]}}),
    )
    .await;
    let names: Vec<String> = (0..1001).map(|i| format!("p{i:04}")).collect();
    futures::stream::iter(
        names
            .iter()
            .map(|n| e.create_pod(n, sel.clone(), json!([]), None)),
    )
    .buffer_unordered(50)
    .collect::<Vec<()>>()
    .await;
    let state = |ep: &Endpoints| {
        let ready: usize = ep
            .subsets
            .iter()
            .flatten()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        (ready, ep.annotations().get(OVER_CAPACITY).cloned())
    };
    let wait = |want: (usize, Option<String>)| {
        let (endpoints, state) = (&e.endpoints, &state);
        async move {
            wait_until(
                &format!("endpoints big at {want:?}"),
                Duration::from_secs(180),
                || {
                    let want = want.clone();
                    async move {
                        let ep = endpoints.get("big").await.map_err(|e| e.to_string())?;
                        let got = state(&ep);
                        if got == want {
                            Ok(())
                        } else {
                            Err(format!("{got:?}"))
                        }
                    }
                },
            )
            .await
        }
    };
    wait((1000, Some("truncated".to_string()))).await;
    e.delete_pod("p0000").await;
    wait((1000, None)).await;
}

/// A pod whose labels change leaves the Endpoints of the Service that selected it and joins
/// those of the one that now does (the pod update queues the Services of its old and new
/// labels); a Service whose selector changes follows it.
#[tokio::test]
async fn label_and_selector_changes_move_pods_between_services() {
    let e = env("ep-labels").await;
    for (name, app) in [("svc-a", "a"), ("svc-b", "b")] {
        e.create_service(json!({"metadata": {"name": name}, "spec": {"selector": {"app": app}, "ports": [{"port": 80}]}}))
            .await;
    }
    e.create_pod("mover", json!({"app": "a"}), json!([]), None)
        .await;
    e.wait_endpoints("svc-a", expect(&[("mover", &[80])]), expect(&[]))
        .await;
    e.wait_endpoints("svc-b", expect(&[]), expect(&[])).await;
    e.pods
        .patch(
            "mover",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"app": "b"}}})),
        )
        .await
        .unwrap();
    e.wait_endpoints("svc-a", expect(&[]), expect(&[])).await;
    e.wait_endpoints("svc-b", expect(&[("mover", &[80])]), expect(&[]))
        .await;
    e.services
        .patch(
            "svc-b",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"selector": {"app": "c"}}})),
        )
        .await
        .unwrap();
    e.wait_endpoints("svc-b", expect(&[]), expect(&[])).await;
    e.services
        .patch(
            "svc-a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"selector": {"app": "b"}}})),
        )
        .await
        .unwrap();
    e.wait_endpoints("svc-a", expect(&[("mover", &[80])]), expect(&[]))
        .await;
}
