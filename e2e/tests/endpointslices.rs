//! The EndpointSlice controller against the real apiserver: upstream's
//! test/e2e/network/endpointslice.go scenarios ("should create and delete Endpoints and
//! EndpointSlices for a Service with a selector specified", "should create Endpoints and
//! EndpointSlices for Pods matching a Service", "should support creating EndpointSlice
//! API operations") and the controller's own behaviour: conditions of ready, not-ready
//! and terminating pods, named ports per pod, publishNotReadyAddresses, zones, a headless
//! Service with hostnames, slices split at `--max-endpoints-per-slice`, selectorless and
//! ExternalName Services left alone, a slice deleted or taken over by someone else
//! restored. The pods run on a hollow rekube-node-agent of the test, which gives them IPs
//! and readiness; only `endpointslice-controller` runs. trafficDistribution's hints are
//! checked too.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use rekube_crds::{EndpointSlice, Node, Pod, Service};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::readiness::{self, NEVER_READY_GATE, TEST_READY_GATE};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const CONTROLLER: &str = "endpointslice-controller.rekube.io";
const HEADLESS: &str = "service.kubernetes.io/headless";
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const ZONE: &str = "topology.kubernetes.io/zone";
const HOLD: &str = "rekube.io/e2e-hold";

/// An endpoint as the tests compare it: pod, (ready, serving, terminating), ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    pod: String,
    conditions: (bool, bool, bool),
    ports: Vec<i32>,
}

fn seen(slices: &[EndpointSlice]) -> Vec<Seen> {
    let mut out: Vec<Seen> = slices
        .iter()
        .flat_map(|s| {
            let mut ports: Vec<i32> = s.ports.iter().flatten().filter_map(|p| p.port).collect();
            ports.sort();
            s.endpoints.iter().map(move |e| {
                let c = e.conditions.clone().unwrap_or_default();
                Seen {
                    pod: e
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .unwrap_or_default(),
                    conditions: (
                        c.ready.unwrap_or(false),
                        c.serving.unwrap_or(false),
                        c.terminating.unwrap_or(false),
                    ),
                    ports: ports.clone(),
                }
            })
        })
        .collect();
    out.sort();
    out
}

fn ep(pod: &str, conditions: (bool, bool, bool), ports: &[i32]) -> Seen {
    Seen {
        pod: pod.into(),
        conditions,
        ports: ports.to_vec(),
    }
}

const READY: (bool, bool, bool) = (true, true, false);
const NOT_READY: (bool, bool, bool) = (false, false, false);

struct Env {
    ns: TestNamespace,
    pods: Api<Pod>,
    services: Api<Service>,
    slices: Api<EndpointSlice>,
    controllers: ControllerProcess,
    agent: AgentProcess,
}

async fn env(prefix: &str) -> Env {
    env_with(prefix, &[]).await
}

async fn env_with(prefix: &str, flags: &[&str]) -> Env {
    let ns = TestNamespace::new(prefix).await;
    let agent = AgentProcess::start(&ns, "node", &["--hollow"]);
    agent.wait_node_ready(&ns.client, T).await;
    let mut args = vec!["--controllers", "endpointslice"];
    args.extend_from_slice(flags);
    let controllers = ControllerProcess::start(&ns.name, &args);
    Env {
        pods: Api::namespaced(ns.client.clone(), &ns.name),
        services: Api::namespaced(ns.client.clone(), &ns.name),
        slices: Api::namespaced(ns.client.clone(), &ns.name),
        ns,
        controllers,
        agent,
    }
}

impl Env {
    async fn create_pod(&self, name: &str, labels: Value, ports: Value, gate: Option<&str>) {
        let mut spec = json!({
            "nodeName": self.agent.node_name,
            "containers": [{"name": "web", "image": "busybox:1.36", "ports": ports}],
        });
        if let Some(g) = gate {
            spec["readinessGates"] = readiness::readiness_gates(g);
        }
        self.create_pod_spec(name, labels, spec).await;
    }

    async fn create_pod_spec(&self, name: &str, labels: Value, spec: Value) {
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

    /// The slices of `service` (by the service-name label, as upstream's e2e lists them).
    async fn slices_of(&self, service: &str) -> Result<Vec<EndpointSlice>, String> {
        self.slices
            .list(&ListParams::default().labels(&format!("{SERVICE_NAME}={service}")))
            .await
            .map(|l| l.items)
            .map_err(|e| e.to_string())
    }

    /// Waits until the slices of `service` hold exactly `want` (in any slices).
    async fn wait_endpoints(&self, service: &str, want: &[Seen]) -> Vec<EndpointSlice> {
        let mut want = want.to_vec();
        want.sort();
        wait_until(&format!("slices of {service}: {want:?}"), T, || async {
            let slices = self.slices_of(service).await?;
            let got = seen(&slices);
            if got == want && !slices.is_empty() {
                Ok(slices)
            } else {
                Err(format!("{got:?}\n{}", self.controllers.logs()))
            }
        })
        .await
    }

    async fn delete_pod(&self, name: &str) {
        self.pods
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// Changes a pod's finalizers with its resourceVersion as precondition, retrying on a
/// conflict (the agent adds and removes its own meanwhile).
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

/// upstream "should create Endpoints and EndpointSlices for Pods matching a Service"
/// [Conformance], with the multiport Service of "should serve multiport endpoints from
/// pods": each pod's named targetPorts, ready and not-ready conditions, the Service's
/// labels, the controller's labels, the owner reference, the trigger time, node and zone;
/// a pod turning ready; publishNotReadyAddresses.
#[tokio::test]
async fn slices_follow_the_pods_of_a_service() {
    let e = env("eps-pods").await;
    // The node's zone, as a cloud would label it, before the pods exist.
    Api::<Node>::all(e.ns.client.clone())
        .patch(
            &e.agent.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {ZONE: "zone-a"}}})),
        )
        .await
        .unwrap();
    let sel = json!({"app": "multi"});
    let svc = e
        .create_service(json!({
            "metadata": {"name": "multi", "labels": {"team": "net"}},
            "spec": {"selector": sel, "ports": [
                {"name": "portname1", "port": 80, "targetPort": "svc1"},
                {"name": "portname2", "port": 81, "targetPort": "svc2", "appProtocol": "http"}]},
        }))
        .await;
    e.create_service(json!({
        "metadata": {"name": "tolerant"},
        "spec": {"selector": sel, "publishNotReadyAddresses": true,
                 "ports": [{"name": "portname1", "port": 80, "targetPort": "svc1"}]},
    }))
    .await;
    // trafficDistribution: each ready endpoint hinted to its zone and node.
    e.create_service(json!({
        "metadata": {"name": "close"},
        "spec": {"selector": sel, "trafficDistribution": "PreferSameNode",
                 "ports": [{"name": "portname1", "port": 80, "targetPort": "svc1"}]},
    }))
    .await;
    // Only the placeholder: a slice without ports or endpoints.
    let slices = e.wait_endpoints("multi", &[]).await;
    assert_eq!(slices.len(), 1, "{slices:?}");
    assert_eq!(slices[0].ports, Some(vec![]));
    e.create_pod(
        "pod1",
        sel.clone(),
        json!([{"name": "svc1", "containerPort": 100}]),
        None,
    )
    .await;
    e.create_pod(
        "pod2",
        sel.clone(),
        json!([{"name": "svc1", "containerPort": 101}, {"name": "svc2", "containerPort": 102}]),
        Some(TEST_READY_GATE),
    )
    .await;
    e.create_pod(
        "never",
        sel.clone(),
        json!([{"name": "svc1", "containerPort": 100}]),
        Some(NEVER_READY_GATE),
    )
    .await;
    let slices = e
        .wait_endpoints(
            "multi",
            &[
                ep("pod1", READY, &[100]),
                ep("pod2", NOT_READY, &[101, 102]),
                ep("never", NOT_READY, &[100]),
            ],
        )
        .await;
    // Pods offering different ports are in different slices.
    assert_eq!(slices.len(), 2, "{slices:?}");
    for s in &slices {
        assert_eq!(s.address_type, "IPv4");
        let labels = s.labels();
        assert_eq!(labels.get("team").map(String::as_str), Some("net"));
        assert_eq!(labels.get(SERVICE_NAME).map(String::as_str), Some("multi"));
        assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some(CONTROLLER));
        // No cluster IP (no service allocator runs here): headless, as upstream labels it.
        assert_eq!(labels.get(HEADLESS).map(String::as_str), Some(""));
        assert!(s.annotations().contains_key(TRIGGER_TIME), "{s:?}");
        assert!(s.name_any().starts_with("multi-"), "{}", s.name_any());
        let owner = &s.owner_references()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str()
            ),
            ("rekube.io/v1", "Service", "multi")
        );
        assert_eq!(Some(&owner.uid), svc.metadata.uid.as_ref());
        assert_eq!(owner.controller, Some(true));
        for p in s.ports.iter().flatten() {
            assert_eq!(p.protocol.as_deref(), Some("TCP"));
            let (name, app) = match p.port {
                Some(100 | 101) => ("portname1", None),
                _ => ("portname2", Some("http")),
            };
            assert_eq!(
                (p.name.as_deref(), p.app_protocol.as_deref()),
                (Some(name), app)
            );
        }
        for endpoint in &s.endpoints {
            assert_eq!(
                endpoint.node_name.as_deref(),
                Some(e.agent.node_name.as_str())
            );
            assert_eq!(endpoint.zone.as_deref(), Some("zone-a"));
            let pod = e
                .pods
                .get(&endpoint.target_ref.as_ref().unwrap().name.clone().unwrap())
                .await
                .unwrap();
            assert_eq!(endpoint.target_ref.as_ref().unwrap().uid, pod.metadata.uid);
            assert_eq!(
                endpoint.addresses,
                vec![pod.status.unwrap().pod_ip.unwrap()]
            );
        }
    }
    // publishNotReadyAddresses: every pod ready (serving still says what the pod is).
    e.wait_endpoints(
        "tolerant",
        &[
            ep("pod1", READY, &[100]),
            ep("pod2", (true, false, false), &[101]),
            ep("never", (true, false, false), &[100]),
        ],
    )
    .await;
    let close = e
        .wait_endpoints(
            "close",
            &[
                ep("pod1", READY, &[100]),
                ep("pod2", NOT_READY, &[101]),
                ep("never", NOT_READY, &[100]),
            ],
        )
        .await;
    for endpoint in close.iter().flat_map(|s| s.endpoints.iter()) {
        let pod = endpoint.target_ref.as_ref().unwrap().name.clone().unwrap();
        let hints = endpoint.hints.as_ref().map(|h| {
            (
                h.for_zones
                    .iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect::<Vec<_>>(),
                h.for_nodes
                    .iter()
                    .flatten()
                    .map(|n| n.name.clone())
                    .collect::<Vec<_>>(),
            )
        });
        let want =
            (pod == "pod1").then(|| (vec!["zone-a".to_string()], vec![e.agent.node_name.clone()]));
        assert_eq!(hints, want, "{pod}");
    }
    readiness::set_gate(&e.pods, "pod2", TEST_READY_GATE, true).await;
    e.wait_endpoints(
        "multi",
        &[
            ep("pod1", READY, &[100]),
            ep("pod2", READY, &[101, 102]),
            ep("never", NOT_READY, &[100]),
        ],
    )
    .await;
    e.delete_pod("pod1").await;
    e.wait_endpoints(
        "multi",
        &[
            ep("pod2", READY, &[101, 102]),
            ep("never", NOT_READY, &[100]),
        ],
    )
    .await;
}

/// A terminating pod stays in the slices, terminating and not ready, serving while its
/// readiness says so (what Endpoints cannot express), until it is gone.
#[tokio::test]
async fn terminating_pods_are_terminating_endpoints() {
    let e = env("eps-terminating").await;
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
    e.wait_endpoints("web", &[ep("a", READY, &[80]), ep("b", READY, &[80])])
        .await;
    set_finalizers(&e.pods, "a", |f| f.push(HOLD.to_string())).await;
    e.delete_pod("a").await;
    // Held Terminating by the test's finalizer; the hollow agent keeps it ready.
    e.wait_endpoints(
        "web",
        &[ep("a", (false, true, true), &[80]), ep("b", READY, &[80])],
    )
    .await;
    e.wait_endpoints(
        "web-all",
        &[ep("a", (true, true, true), &[80]), ep("b", READY, &[80])],
    )
    .await;
    set_finalizers(&e.pods, "a", |f| f.retain(|x| x != HOLD)).await;
    e.wait_endpoints("web", &[ep("b", READY, &[80])]).await;
    e.wait_endpoints("web-all", &[ep("b", READY, &[80])]).await;
}

/// More endpoints than `--max-endpoints-per-slice` (upstream's 100) split into slices of
/// at most 100; scaling down empties and deletes slices rather than leaving them.
#[tokio::test]
async fn slices_split_at_max_endpoints_per_slice() {
    let e = env("eps-scale").await;
    let sel = json!({"app": "many"});
    e.create_service(json!({
        "metadata": {"name": "many"},
        "spec": {"selector": sel, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .await;
    let n = 130;
    for i in 0..n {
        e.create_pod(&format!("p{i:03}"), sel.clone(), json!([]), None)
            .await;
    }
    let lengths = |slices: &[EndpointSlice]| {
        let mut l: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        l.sort();
        l
    };
    let slices = wait_until(
        &format!("{n} endpoints in slices of at most 100"),
        T * 2,
        || async {
            let slices = e.slices_of("many").await?;
            let all = seen(&slices);
            let ready = all.iter().filter(|s| s.conditions == READY).count();
            if ready == n && lengths(&slices) == [30, 100] {
                Ok(slices)
            } else {
                Err(format!("{ready} ready, lengths {:?}", lengths(&slices)))
            }
        },
    )
    .await;
    // Every pod once.
    let pods: std::collections::BTreeSet<String> =
        seen(&slices).into_iter().map(|s| s.pod).collect();
    assert_eq!(pods.len(), n);
    for i in 0..120 {
        e.delete_pod(&format!("p{i:03}")).await;
    }
    wait_until("10 endpoints left, in one slice", T * 2, || async {
        let slices = e.slices_of("many").await?;
        (lengths(&slices) == [10])
            .then_some(())
            .ok_or_else(|| format!("lengths {:?}", lengths(&slices)))
    })
    .await;
}

/// A headless Service without ports: a slice without ports, the headless label, and the
/// hostname of pods whose subdomain is the Service.
#[tokio::test]
async fn headless_service_slices_carry_hostnames() {
    let e = env("eps-headless").await;
    e.create_service(json!({
        "metadata": {"name": "db"},
        "spec": {"selector": {"app": "db"}, "clusterIP": "None"},
    }))
    .await;
    e.create_pod_spec(
        "db-0",
        json!({"app": "db"}),
        json!({"nodeName": e.agent.node_name, "hostname": "db-0", "subdomain": "db",
               "containers": [{"name": "db", "image": "busybox:1.36"}]}),
    )
    .await;
    e.create_pod("db-1", json!({"app": "db"}), json!([]), None)
        .await;
    let slices = e
        .wait_endpoints("db", &[ep("db-0", READY, &[]), ep("db-1", READY, &[])])
        .await;
    assert_eq!(slices.len(), 1, "{slices:?}");
    let s = &slices[0];
    assert_eq!(s.labels().get(HEADLESS).map(String::as_str), Some(""));
    assert!(s.ports.as_ref().is_none_or(Vec::is_empty), "{s:?}");
    let hostnames: BTreeMap<String, Option<String>> = s
        .endpoints
        .iter()
        .map(|e| {
            (
                e.target_ref.as_ref().unwrap().name.clone().unwrap(),
                e.hostname.clone(),
            )
        })
        .collect();
    assert_eq!(
        hostnames,
        BTreeMap::from([
            ("db-0".to_string(), Some("db-0".to_string())),
            ("db-1".to_string(), None)
        ])
    );
}

/// Selectorless and ExternalName Services get no slices from this controller (their
/// endpoints are the user's; the mirroring controller, endpointslicemirroring.rs, copies
/// a selectorless Service's Endpoints), while a Service with a selector created after
/// them, in the same controller, gets its slice.
#[tokio::test]
async fn selectorless_and_external_name_services_get_no_slices() {
    let e = env("eps-selectorless").await;
    e.create_service(json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}}))
        .await;
    e.create_service(json!({
        "metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.com", "selector": {"app": "x"}},
    }))
    .await;
    e.create_service(json!({
        "metadata": {"name": "control"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
    }))
    .await;
    e.wait_endpoints("control", &[]).await;
    // The control Service was synced after the others: theirs would be there by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["manual", "ext"] {
        assert_eq!(e.slices_of(name).await.unwrap(), vec![], "{name}");
    }
}

/// upstream "should create and delete Endpoints and EndpointSlices for a Service with a
/// selector specified" [Conformance]: the slices go with their Service (the garbage
/// collector, through the owner reference); and a slice deleted by someone else, or
/// whose managed-by label someone changed, is replaced, while a user's own slice naming
/// the Service is left alone.
#[tokio::test]
async fn slices_go_with_their_service_and_are_restored() {
    let e = env("eps-lifecycle").await;
    let sel = json!({"app": "web"});
    e.create_service(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": sel, "ports": [{"port": 80, "targetPort": 80}]},
    }))
    .await;
    e.create_pod("a", sel.clone(), json!([]), None).await;
    let slices = e.wait_endpoints("web", &[ep("a", READY, &[80])]).await;
    // A user's slice for the Service, managed by someone else: left alone.
    let user: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-user", "labels": {SERVICE_NAME: "web", MANAGED_BY: "someone"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.9.9.9"]}],
        "ports": [{"port": 9}],
    }))
    .unwrap();
    e.slices
        .create(&PostParams::default(), &user)
        .await
        .unwrap();
    // Deleted by someone else: replaced.
    let first = slices[0].name_any();
    e.slices
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    let ours = |slices: Vec<EndpointSlice>| -> Vec<EndpointSlice> {
        slices
            .into_iter()
            .filter(|s| s.labels().get(MANAGED_BY).map(String::as_str) == Some(CONTROLLER))
            .collect()
    };
    let replaced = wait_until("the deleted slice replaced", T, || async {
        let mine = ours(e.slices_of("web").await?);
        match mine.as_slice() {
            [s] if s.name_any() != first && seen(&mine) == [ep("a", READY, &[80])] => Ok(s.clone()),
            other => Err(format!("{:?}\n{}", seen(other), e.controllers.logs())),
        }
    })
    .await;
    // Taken over (managed-by changed): the controller makes a slice of its own again.
    e.slices
        .patch(
            &replaced.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {MANAGED_BY: "someone"}}})),
        )
        .await
        .unwrap();
    wait_until("a slice of the controller's own again", T, || async {
        let mine = ours(e.slices_of("web").await?);
        match mine.as_slice() {
            [s] if s.name_any() != replaced.name_any() => Ok(()),
            other => Err(format!(
                "{:?}",
                other.iter().map(|s| s.name_any()).collect::<Vec<_>>()
            )),
        }
    })
    .await;
    assert!(e.slices.get_opt("web-user").await.unwrap().is_some());
    // The Service deleted: its slices go (the user's has no owner reference and stays).
    e.services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the service's slices deleted", T, || async {
        let mine = ours(e.slices_of("web").await?);
        mine.is_empty()
            .then_some(())
            .ok_or_else(|| format!("{} left", mine.len()))
    })
    .await;
    assert!(e.slices.get_opt("web-user").await.unwrap().is_some());
}

/// upstream "should support creating EndpointSlice API operations" [Conformance], on
/// rekube's kind: create, get, list, watch, patch, update, delete and deletecollection.
#[tokio::test]
async fn endpoint_slice_api_operations() {
    let ns = TestNamespace::new("eps-api").await;
    let api: Api<EndpointSlice> = Api::namespaced(ns.client.clone(), &ns.name);
    let template = |name: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"special-label": ns.name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["1.2.3.4", "5.6.7.8"]}],
            "ports": [{"name": "http", "port": 80}],
        }))
        .unwrap()
    };
    let selector = ListParams::default().labels(&format!("special-label={}", ns.name));
    let mut watch = api
        .watch(
            &WatchParams::default().labels(&format!("special-label={}", ns.name)),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    for name in ["e2e-example-ing", "e2e-example-ing1", "e2e-example-ing2"] {
        api.create(&PostParams::default(), &template(name))
            .await
            .unwrap();
    }
    let got = api.get("e2e-example-ing").await.unwrap();
    assert_eq!(got.endpoints[0].addresses, ["1.2.3.4", "5.6.7.8"]);
    // Defaults: protocol TCP.
    assert_eq!(
        got.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    assert_eq!(api.list(&selector).await.unwrap().items.len(), 3);
    let mut added = 0;
    while added < 3 {
        match tokio::time::timeout(T, watch.next()).await {
            Ok(Some(Ok(WatchEvent::Added(_)))) => added += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("watch: {other:?}"),
        }
    }
    let patched = api
        .patch(
            "e2e-example-ing",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.annotations().get("patched").map(String::as_str),
        Some("true")
    );
    let mut updated = patched.clone();
    updated
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("updated".into(), "true".into());
    let updated = api
        .replace("e2e-example-ing", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(
        updated.annotations().get("updated").map(String::as_str),
        Some("true")
    );
    api.delete("e2e-example-ing", &DeleteParams::default())
        .await
        .unwrap();
    assert!(api.get_opt("e2e-example-ing").await.unwrap().is_none());
    assert_eq!(api.list(&selector).await.unwrap().items.len(), 2);
    api.delete_collection(&DeleteParams::default(), &selector)
        .await
        .unwrap();
    assert_eq!(api.list(&selector).await.unwrap().items.len(), 0);
}

/// upstream "should create and delete EndpointSlices for a Service with a selector that
/// matches no pods" [Conformance]: a placeholder slice without endpoints, managed by the
/// controller (rekube's value), gone with the Service.
#[tokio::test]
async fn a_service_selecting_no_pods_gets_a_placeholder_slice() {
    let e = env("eps-empty").await;
    e.create_service(json!({
        "metadata": {"name": "example-empty-selector"},
        "spec": {"selector": {"does-not-match-anything": "endpoints-and-endpoint-slices-should-still-be-created"},
                 "ports": [{"name": "example", "port": 80, "protocol": "TCP"}]},
    }))
    .await;
    let slices = e.wait_endpoints("example-empty-selector", &[]).await;
    assert_eq!(slices.len(), 1);
    assert_eq!(
        slices[0].labels().get(MANAGED_BY).map(String::as_str),
        Some(CONTROLLER)
    );
    assert!(slices[0].endpoints.is_empty());
    e.services
        .delete("example-empty-selector", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the placeholder deleted with its service", T, || async {
        let left = e.slices_of("example-empty-selector").await?;
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("{} left", left.len()))
    })
    .await;
}
