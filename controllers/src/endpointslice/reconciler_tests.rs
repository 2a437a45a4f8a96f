//! upstream k8s.io/endpointslice reconciler_test.go (v0.36.3), ported: the fake
//! clientset's actions are the [`Plan`]'s creates, updates and deletes, applied to an
//! in-memory store ([`Store`]) that names created slices as generateName would.
//! Deviations in the helpers: pod IPs are `10.0.x.y` (upstream's `1.2.3.<4+n>` stops
//! being an IP past pod 251, which upstream's tests write as `<nil>`), and the metrics
//! assertions are left out (rekube has no per-sync slice metrics).
use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointPort;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rekube_crds::{EndpointSlice, Node, Pod, Service};

use super::super::utils::*;
use super::*;

const NS: &str = "test";

fn new_pod(n: usize, ready: bool, terminating: bool) -> Pod {
    let ip = format!("10.0.{}.{}", n / 250, n % 250 + 1);
    Pod {
        metadata: ObjectMeta {
            namespace: Some(NS.into()),
            name: Some(format!("pod{n}")),
            labels: Some([("foo".to_string(), "bar".to_string())].into()),
            deletion_timestamp: terminating.then(|| Time(Timestamp::now())),
            resource_version: Some(n.to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "container-1".into(),
                ..Default::default()
            }],
            node_name: Some("node-1".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn new_service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            uid: Some(format!("{NS}-{name}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some(name.into()),
                target_port: Some(IntOrString::Int(80)),
                protocol: Some("TCP".into()),
                port: 80,
                ..Default::default()
            }]),
            selector: Some([("foo".to_string(), "bar".to_string())].into()),
            ip_families: Some(vec!["IPv4".into()]),
            ..Default::default()
        }),
        status: None,
    }
}

fn endpoint_meta(name: &str) -> Vec<EndpointPort> {
    vec![EndpointPort {
        name: Some(name.into()),
        port: Some(80),
        protocol: Some("TCP".into()),
        app_protocol: None,
    }]
}

/// upstream newEmptyEndpointSlice: `<service>-<n>`, owned by the Service, no labels.
fn new_empty_endpoint_slice(n: usize, svc: &Service, ports: &[EndpointPort]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{}-{n}", svc.metadata.name.as_deref().unwrap())),
            namespace: Some(NS.into()),
            owner_references: Some(vec![service_owner_reference(svc)]),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The nodes of the test's node lister.
fn nodes(list: &[Node]) -> impl Fn(&str) -> Option<Arc<Node>> {
    let map: BTreeMap<String, Arc<Node>> = list
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap(), Arc::new(n.clone())))
        .collect();
    move |name: &str| map.get(name).cloned()
}

/// The fake clientset: the slices stored and the actions done.
#[derive(Default)]
struct Store {
    slices: BTreeMap<String, EndpointSlice>,
    actions: Vec<&'static str>,
    created: usize,
}

impl Store {
    fn with(slices: &[EndpointSlice]) -> Self {
        let mut s = Store::default();
        for slice in slices {
            s.slices
                .insert(slice.metadata.name.clone().unwrap(), slice.clone());
        }
        s
    }

    fn apply(&mut self, plan: &Plan) {
        for c in &plan.create {
            let mut c = c.clone();
            assert!(
                c.metadata.name.is_none(),
                "created slices are named by generateName"
            );
            self.created += 1;
            let name = format!(
                "{}gen{}",
                c.metadata.generate_name.clone().unwrap(),
                self.created
            );
            c.metadata.name = Some(name.clone());
            c.metadata.resource_version = Some("1".into());
            self.slices.insert(name, c);
            self.actions.push("create");
        }
        for u in &plan.update {
            let name = u.metadata.name.clone().unwrap();
            assert!(
                self.slices.contains_key(&name),
                "update of a missing slice {name}"
            );
            assert!(
                u.metadata.resource_version.is_some(),
                "update without resourceVersion"
            );
            self.slices.insert(name, u.clone());
            self.actions.push("update");
        }
        for d in &plan.delete {
            let name = d.metadata.name.clone().unwrap();
            assert!(
                self.slices.remove(&name).is_some(),
                "delete of a missing slice {name}"
            );
            self.actions.push("delete");
        }
    }

    fn list(&self) -> Vec<EndpointSlice> {
        self.slices.values().cloned().collect()
    }

    fn lengths(&self) -> Vec<usize> {
        let mut l: Vec<usize> = self.slices.values().map(|s| s.endpoints.len()).collect();
        l.sort();
        l
    }
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort();
    v
}

fn reconcile_max(
    max: usize,
    store: &mut Store,
    svc: &Service,
    pods: &[Pod],
    existing: &[EndpointSlice],
    node_list: &[Node],
) -> Plan {
    let r = Reconciler {
        max_endpoints_per_slice: max,
    };
    let pods: Vec<&Pod> = pods.iter().collect();
    let existing: Vec<&EndpointSlice> = existing.iter().collect();
    let plan = r.reconcile(
        svc,
        &pods,
        &existing,
        &nodes(node_list),
        Some(Timestamp::now()),
    );
    store.apply(&plan);
    plan
}

fn reconcile(store: &mut Store, svc: &Service, pods: &[Pod], existing: &[EndpointSlice]) -> Plan {
    reconcile_max(
        DEFAULT_MAX_ENDPOINTS_PER_SLICE,
        store,
        svc,
        pods,
        existing,
        &[node("node-1")],
    )
}

fn pods(n: usize) -> Vec<Pod> {
    (0..n).map(|i| new_pod(i, i % 3 != 0, false)).collect()
}

fn endpoint_of(pod: &Pod) -> k8s_openapi::api::discovery::v1::Endpoint {
    pod_to_endpoint(pod, Some(&node("")), &Service::default(), "IPv4")
}

// Even when there are no pods, we want to have a placeholder slice for each service.
#[test]
fn test_reconcile_empty() {
    let svc = new_service("foo");
    let mut store = Store::default();
    reconcile(&mut store, &svc, &[], &[]);
    assert_eq!(store.actions, ["create"]);
    let slices = store.list();
    assert_eq!(slices.len(), 1);
    assert!(
        slices[0]
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("foo-")
    );
    let labels = slices[0].metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_SERVICE_NAME], "foo");
    assert_eq!(labels[LABEL_MANAGED_BY], CONTROLLER_NAME);
    assert_eq!(slices[0].ports, Some(vec![]));
    assert!(slices[0].endpoints.is_empty());
    // A second sync keeps the placeholder: nothing is written.
    let plan = reconcile(&mut store, &svc, &[], &slices);
    assert!(plan.is_empty(), "{plan:?}");
}

/// (name, Service, per slice its address type and addresses, the slices' labels).
type Case1Pod = (
    &'static str,
    Service,
    Vec<(&'static str, Vec<&'static str>)>,
    BTreeMap<String, String>,
);

// Given a single pod matching a service selector and no existing endpoint slices, a
// slice is created (upstream's table, its single-stack, dual-stack, label and zone
// cases).
#[test]
fn test_reconcile_1_pod() {
    let mut pod1 = new_pod(1, true, false);
    pod1.status.as_mut().unwrap().pod_ips = Some(vec![
        PodIP {
            ip: "1.2.3.4".into(),
        },
        PodIP {
            ip: "1234::5678:0000:0000:9abc:def0".into(),
        },
    ]);
    pod1.spec.as_mut().unwrap().hostname = Some("example-hostname".into());
    let mut node1 = node("node-1");
    node1.metadata.labels = Some(
        [
            (LABEL_TOPOLOGY_ZONE.to_string(), "us-central1-a".to_string()),
            (
                "topology.kubernetes.io/region".to_string(),
                "us-central1".to_string(),
            ),
        ]
        .into(),
    );

    let svc = |f: &dyn Fn(&mut Service)| {
        let mut s = new_service("foo");
        f(&mut s);
        s
    };
    let no_family = svc(&|s| {
        let spec = s.spec.as_mut().unwrap();
        spec.cluster_ip = Some("10.0.0.10".into());
        spec.ip_families = None;
    });
    let v4 = svc(&|_| {});
    let v4_labels =
        svc(&|s| s.metadata.labels = Some([("foo".to_string(), "bar".to_string())].into()));
    let v4_bad_labels = svc(&|s| {
        s.metadata.labels = Some(
            [
                (LABEL_SERVICE_NAME.to_string(), "bad".to_string()),
                (LABEL_MANAGED_BY.to_string(), "actor".to_string()),
                (
                    "service.kubernetes.io/headless".to_string(),
                    "invalid".to_string(),
                ),
            ]
            .into(),
        )
    });
    let v6 = svc(&|s| s.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]));
    let dual = svc(&|s| {
        let spec = s.spec.as_mut().unwrap();
        spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
        spec.cluster_ip = Some("10.0.0.10".into());
        spec.cluster_ips = Some(vec!["10.0.0.10".into(), "2000::1".into()]);
    });
    let headless_label = ("service.kubernetes.io/headless".to_string(), String::new());
    let base_labels = |extra: &[(&str, &str)], headless: bool| {
        let mut l: BTreeMap<String, String> = [
            (LABEL_MANAGED_BY.to_string(), CONTROLLER_NAME.to_string()),
            (LABEL_SERVICE_NAME.to_string(), "foo".to_string()),
        ]
        .into();
        if headless {
            l.insert(headless_label.0.clone(), headless_label.1.clone());
        }
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l
    };
    let cases: Vec<Case1Pod> = vec![
        (
            "no-family-service",
            no_family,
            vec![("IPv4", vec!["1.2.3.4"])],
            base_labels(&[], false),
        ),
        (
            "ipv4",
            v4,
            vec![("IPv4", vec!["1.2.3.4"])],
            base_labels(&[], true),
        ),
        (
            "ipv4-with-labels",
            v4_labels,
            vec![("IPv4", vec!["1.2.3.4"])],
            base_labels(&[("foo", "bar")], true),
        ),
        (
            "ipv4-with-bad-labels",
            v4_bad_labels,
            vec![("IPv4", vec!["1.2.3.4"])],
            base_labels(&[], true),
        ),
        (
            "ipv6",
            v6,
            vec![("IPv6", vec!["1234::5678:0:0:9abc:def0"])],
            base_labels(&[], true),
        ),
        (
            "dual-stack",
            dual,
            vec![
                ("IPv4", vec!["1.2.3.4"]),
                ("IPv6", vec!["1234::5678:0:0:9abc:def0"]),
            ],
            base_labels(&[], false),
        ),
    ];
    for (name, service, expected, labels) in cases {
        let mut store = Store::default();
        reconcile_max(
            100,
            &mut store,
            &service,
            &[pod1.clone()],
            &[],
            &[node1.clone()],
        );
        assert_eq!(store.actions.len(), expected.len(), "{name}");
        let mut slices = store.list();
        slices.sort_by(|a, b| a.address_type.cmp(&b.address_type));
        for (slice, (address_type, addresses)) in slices.iter().zip(&expected) {
            assert_eq!(slice.address_type, *address_type, "{name}");
            assert_eq!(slice.metadata.labels.as_ref().unwrap(), &labels, "{name}");
            assert!(
                slice
                    .metadata
                    .annotations
                    .as_ref()
                    .unwrap()
                    .contains_key("endpoints.kubernetes.io/last-change-trigger-time"),
                "{name}"
            );
            assert_eq!(slice.endpoints.len(), 1, "{name}");
            let e = &slice.endpoints[0];
            assert_eq!(e.addresses, *addresses, "{name}");
            let c = e.conditions.clone().unwrap();
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                (Some(true), Some(true), Some(false)),
                "{name}"
            );
            assert_eq!(e.zone.as_deref(), Some("us-central1-a"), "{name}");
            assert_eq!(e.node_name.as_deref(), Some("node-1"), "{name}");
            // The pod's subdomain is not the Service: no hostname.
            assert_eq!(e.hostname, None, "{name}");
            let r = e.target_ref.clone().unwrap();
            assert_eq!(
                (r.kind.as_deref(), r.namespace.as_deref(), r.name.as_deref()),
                (Some("Pod"), Some(NS), Some("pod1")),
                "{name}"
            );
            assert_eq!(
                slice.metadata.owner_references.clone().unwrap(),
                vec![service_owner_reference(&service)]
            );
        }
    }
}

// given an existing placeholder endpoint slice and no pods matching the service, the
// placeholder is kept (upstream TestReconcile1EndpointSlice, its "existing placeholder"
// cases).
#[test]
fn test_reconcile_1_endpoint_slice() {
    let svc = new_service("foo");
    let placeholder = {
        let mut s = new_endpoint_slice(&svc, &[], "IPv4");
        s.metadata.name = Some("foo-abc".into());
        s.metadata.resource_version = Some("1".into());
        s
    };
    // an existing placeholder that is up to date: nothing.
    let mut store = Store::with(std::slice::from_ref(&placeholder));
    assert!(reconcile(&mut store, &svc, &[], std::slice::from_ref(&placeholder)).is_empty());
    // one with the wrong labels becomes the placeholder again (create + delete → update).
    let mut wrong = placeholder.clone();
    wrong
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("foo".into(), "bar".into());
    let mut store = Store::with(std::slice::from_ref(&wrong));
    reconcile(&mut store, &svc, &[], &[wrong]);
    assert_eq!(store.actions, ["update"]);
    assert!(placeholder_equal(&store.list()[0], &placeholder));
    // a slice with endpoints whose pods are gone: updated into the placeholder.
    let mut stale = placeholder.clone();
    stale.ports = Some(endpoint_meta("foo"));
    stale.endpoints = vec![endpoint_of(&new_pod(1, true, false))];
    let mut store = Store::with(std::slice::from_ref(&stale));
    reconcile(&mut store, &svc, &[], &[stale]);
    assert_eq!(store.actions, ["update"]);
    assert!(placeholder_equal(&store.list()[0], &placeholder));
}

// upstream TestPlaceHolderSliceCompare.
#[test]
fn test_placeholder_slice_compare() {
    let svc = new_service("foo");
    let a = new_endpoint_slice(&svc, &[], "IPv4");
    let mut b = a.clone();
    b.metadata.name = Some("foo-x".into());
    b.metadata.resource_version = Some("7".into());
    b.ports = None;
    assert!(
        placeholder_equal(&a, &b),
        "name, resourceVersion and nil ports do not matter"
    );
    let mut c = a.clone();
    c.address_type = "IPv6".into();
    assert!(!placeholder_equal(&a, &c));
    let mut d = a.clone();
    d.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    assert!(!placeholder_equal(&a, &d));
    let mut e = a.clone();
    e.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("x".into(), "y".into());
    assert!(!placeholder_equal(&a, &e));
    let mut f = a.clone();
    f.endpoints = vec![endpoint_of(&new_pod(1, true, false))];
    assert!(!placeholder_equal(&a, &f));
}

// upstream TestReconcile1EndpointSlicePublishNotReadyAddresses: every endpoint ready.
#[test]
fn test_reconcile_1_endpoint_slice_publish_not_ready_addresses() {
    let mut svc = new_service("foo");
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let pods: Vec<Pod> = (0..50)
        .map(|i| new_pod(i, i % 2 == 0, i % 5 == 0))
        .collect();
    let mut store = Store::default();
    reconcile(&mut store, &svc, &pods, &[]);
    for e in store.list().iter().flat_map(|s| s.endpoints.iter()) {
        assert_eq!(e.conditions.as_ref().unwrap().ready, Some(true));
    }
    assert_eq!(store.lengths(), [50]);
}

#[test]
fn test_reconcile_many_pods() {
    let svc = new_service("foo");
    let mut store = Store::default();
    reconcile(&mut store, &svc, &pods(250), &[]);
    assert_eq!(store.actions, ["create", "create", "create"]);
    assert_eq!(store.lengths(), [50, 100, 100]);
}

fn two_quarter_slices(svc: &Service, pods: &[Pod]) -> Vec<EndpointSlice> {
    let mut s1 = new_empty_endpoint_slice(1, svc, &endpoint_meta("foo"));
    for i in (1..pods.len() - 4).step_by(4) {
        s1.endpoints.push(endpoint_of(&pods[i]));
    }
    let mut s2 = new_empty_endpoint_slice(2, svc, &endpoint_meta("foo"));
    for i in (3..pods.len() - 4).step_by(4) {
        s2.endpoints.push(endpoint_of(&pods[i]));
    }
    vec![s1, s2]
}

// 250 pods; slices of 62 and 61 exist: one new slice of 100, the 27 left into the
// first (1 update + 1 create instead of 2 updates + 1 create).
#[test]
fn test_reconcile_endpoint_slices_some_preexisting() {
    let svc = new_service("foo");
    let pods = pods(250);
    let existing = two_quarter_slices(&svc, &pods);
    assert_eq!(
        (existing[0].endpoints.len(), existing[1].endpoints.len()),
        (62, 61)
    );
    let before = existing.clone();
    let mut store = Store::with(&existing);
    reconcile(&mut store, &svc, &pods, &existing);
    assert_eq!(store.actions, ["create", "update"]);
    assert_eq!(store.lengths(), sorted(vec![89, 61, 100]));
    assert_eq!(existing, before, "the cache is not mutated");
}

// 300 pods; slices of 74 and 74 exist: 152 to add become two new slices (100, 52).
#[test]
fn test_reconcile_endpoint_slices_some_preexisting_worse_allocation() {
    let svc = new_service("foo");
    let pods = pods(300);
    let existing = two_quarter_slices(&svc, &pods);
    let mut store = Store::with(&existing);
    reconcile(&mut store, &svc, &pods, &existing);
    assert_eq!(store.actions, ["create", "create"]);
    assert_eq!(store.lengths(), sorted(vec![74, 74, 100, 52]));
}

// A port change updates every slice rather than creating and deleting.
#[test]
fn test_reconcile_endpoint_slices_updating() {
    let mut svc = new_service("foo");
    let pods = pods(250);
    let mut store = Store::default();
    reconcile(&mut store, &svc, &pods, &[]);
    let slices = store.list();
    assert_eq!(store.lengths(), [50, 100, 100]);
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(81));
    store.actions.clear();
    reconcile(&mut store, &svc, &pods, &slices);
    assert_eq!(store.actions, ["update", "update", "update"]);
    assert_eq!(store.lengths(), [50, 100, 100]);
    assert!(
        store
            .list()
            .iter()
            .all(|s| s.ports.as_ref().unwrap()[0].port == Some(81))
    );
}

// New Service labels update every slice.
#[test]
fn test_reconcile_endpoint_slices_services_labels_updating() {
    let mut svc = new_service("foo");
    let pods = pods(250);
    let mut store = Store::default();
    reconcile(&mut store, &svc, &pods, &[]);
    let slices = store.list();
    svc.metadata.labels = Some([("foo".to_string(), "bar".to_string())].into());
    store.actions.clear();
    reconcile(&mut store, &svc, &pods, &slices);
    assert_eq!(store.actions, ["update", "update", "update"]);
    assert!(
        store
            .list()
            .iter()
            .all(|s| s.metadata.labels.as_ref().unwrap()["foo"] == "bar")
    );
}

// Reserved labels on the Service change nothing.
#[test]
fn test_reconcile_endpoint_slices_services_reserved_labels() {
    let mut svc = new_service("foo");
    let pods = pods(250);
    let mut store = Store::default();
    reconcile(&mut store, &svc, &pods, &[]);
    let slices = store.list();
    svc.metadata.labels = Some(
        [
            (LABEL_SERVICE_NAME.to_string(), "bad".to_string()),
            (LABEL_MANAGED_BY.to_string(), "actor".to_string()),
            (
                "service.kubernetes.io/headless".to_string(),
                "invalid".to_string(),
            ),
        ]
        .into(),
    );
    store.actions.clear();
    assert!(reconcile(&mut store, &svc, &pods, &slices).is_empty());
}

// 10 slices of 30: no change at first; a port change repacks into 3 full slices
// (3 updates + 7 deletes).
#[test]
fn test_reconcile_endpoint_slices_recycling() {
    let mut svc = new_service("foo");
    let pods = pods(300);
    let mut existing: Vec<EndpointSlice> = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        if i % 30 == 0 {
            existing.push(new_empty_endpoint_slice(
                i / 30,
                &svc,
                &endpoint_meta("foo"),
            ));
        }
        existing[i / 30].endpoints.push(endpoint_of(pod));
    }
    let mut store = Store::with(&existing);
    assert!(reconcile(&mut store, &svc, &pods, &existing).is_empty());
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(81));
    reconcile(&mut store, &svc, &pods, &existing);
    assert_eq!(store.actions.iter().filter(|a| **a == "update").count(), 3);
    assert_eq!(store.actions.iter().filter(|a| **a == "delete").count(), 7);
    assert_eq!(store.actions.len(), 10);
    assert_eq!(store.lengths(), [100, 100, 100]);
}

// New endpoints go to the slice that will be closest to full, even among slices already
// marked for update.
#[test]
fn test_reconcile_endpoint_slices_update_packing() {
    let svc = new_service("foo");
    let mut pods = Vec::new();
    let mut s1 = new_empty_endpoint_slice(1, &svc, &endpoint_meta("foo"));
    for i in 0..80 {
        let p = new_pod(i, true, false);
        s1.endpoints.push(endpoint_of(&p));
        pods.push(p);
    }
    let mut s2 = new_empty_endpoint_slice(2, &svc, &endpoint_meta("foo"));
    for i in 100..120 {
        let p = new_pod(i, true, false);
        s2.endpoints.push(endpoint_of(&p));
        pods.push(p);
    }
    let existing = vec![s1, s2];
    for (i, p) in pods.iter_mut().enumerate() {
        if i % 10 == 0 {
            p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        }
    }
    pods.extend((200..215).map(|i| new_pod(i, true, false)));
    let mut store = Store::with(&existing);
    reconcile(&mut store, &svc, &pods, &existing);
    assert_eq!(store.actions, ["update", "update"]);
    assert_eq!(store.lengths(), [20, 95]);
}

// Slices of the deprecated "IP" address type are replaced by IPv4 ones.
#[test]
fn test_reconcile_endpoint_slices_replace_deprecated() {
    let svc = new_service("foo");
    let mut pods = Vec::new();
    let mut s1 = new_empty_endpoint_slice(1, &svc, &endpoint_meta("foo"));
    s1.address_type = "IP".into();
    for i in 0..80 {
        let p = new_pod(i, true, false);
        s1.endpoints.push(endpoint_of(&p));
        pods.push(p);
    }
    let mut s2 = new_empty_endpoint_slice(2, &svc, &endpoint_meta("foo"));
    s2.address_type = "IP".into();
    for i in 100..150 {
        let p = new_pod(i, true, false);
        s2.endpoints.push(endpoint_of(&p));
        pods.push(p);
    }
    let existing = vec![s1, s2];
    let mut store = Store::with(&existing);
    reconcile(&mut store, &svc, &pods, &existing);
    assert_eq!(store.actions, ["create", "create", "delete", "delete"]);
    assert_eq!(store.lengths(), [30, 100]);
    assert!(store.list().iter().all(|s| s.address_type == "IPv4"));
}

// A recreated Service (another UID) gets new slices; its old one goes.
#[test]
fn test_reconcile_endpoint_slices_recreation() {
    for (owned, expect_changes) in [(true, false), (false, true)] {
        let svc = new_service("foo");
        let pod = new_pod(1, true, false);
        let mut slice = new_empty_endpoint_slice(1, &svc, &endpoint_meta("foo"));
        slice.endpoints.push(endpoint_of(&pod));
        if !owned {
            slice.metadata.owner_references.as_mut().unwrap()[0].uid = "different".into();
        }
        let mut store = Store::with(std::slice::from_ref(&slice));
        reconcile(&mut store, &svc, &[pod], &[slice]);
        if expect_changes {
            assert_eq!(store.actions, ["create", "delete"]);
            assert_eq!(store.list().len(), 1);
        } else {
            assert!(store.actions.is_empty());
        }
    }
}

// Named ports mapping to different numbers on different pods: one group of slices each.
#[test]
fn test_reconcile_endpoint_slices_named_ports() {
    let mut svc = new_service("named-port-example");
    let spec = svc.spec.as_mut().unwrap();
    spec.ports = Some(vec![ServicePort {
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
        port: 80,
        ..Default::default()
    }]);
    let pods: Vec<Pod> = (0..300)
        .map(|i| {
            let mut p = new_pod(i, i % 3 != 0, false);
            p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080 + (i % 5) as i32,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]);
            p
        })
        .collect();
    let mut store = Store::default();
    reconcile(&mut store, &svc, &pods, &[]);
    assert_eq!(store.actions, ["create"; 5]);
    assert_eq!(store.lengths(), [60; 5]);
    let mut ports: Vec<i32> = store
        .list()
        .iter()
        .map(|s| {
            let p = &s.ports.as_ref().unwrap()[0];
            assert_eq!(
                (p.name.as_deref(), p.protocol.as_deref()),
                (Some(""), Some("TCP"))
            );
            p.port.unwrap()
        })
        .collect();
    ports.sort();
    assert_eq!(ports, [8080, 8081, 8082, 8083, 8084]);
}

#[test]
fn test_reconcile_max_endpoints_per_slice() {
    let svc = new_service("foo");
    let pods = pods(250);
    for (max, lengths) in [
        (50, vec![50, 50, 50, 50, 50]),
        (80, vec![80, 80, 80, 10]),
        (150, vec![150, 100]),
        (250, vec![250]),
        (500, vec![250]),
    ] {
        let mut store = Store::default();
        reconcile_max(max, &mut store, &svc, &pods, &[], &[node("node-1")]);
        assert_eq!(store.lengths(), sorted(lengths), "max {max}");
    }
}

// No slice is created for a Service being deleted; updates and deletes still happen,
// and a create recycles a slice to delete.
#[test]
fn test_reconciler_finalize_svc_deletion_timestamp() {
    for deleting in [false, true] {
        let mut svc = new_service("foo");
        if deleting {
            svc.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        }
        let create = || new_endpoint_slice(&svc, &endpoint_meta("foo"), "IPv4");
        let existing = |n| new_empty_endpoint_slice(n, &svc, &endpoint_meta("foo"));
        // create and update
        let plan = finalize(&svc, vec![create()], vec![existing(1)], vec![], None);
        assert_eq!(
            (plan.create.len(), plan.update.len()),
            (usize::from(!deleting), 1)
        );
        // create, update and delete: the create recycles the deleted slice.
        let plan = finalize(
            &svc,
            vec![create()],
            vec![existing(1)],
            vec![existing(2)],
            None,
        );
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 2, 0)
        );
        assert_eq!(plan.update[1].metadata.name.as_deref(), Some("foo-2"));
        assert_eq!(
            plan.update[1].metadata.resource_version.as_deref(),
            Some("1")
        );
        // update and delete
        let plan = finalize(&svc, vec![], vec![existing(1)], vec![existing(2)], None);
        assert_eq!((plan.update.len(), plan.delete.len()), (1, 1));
    }
}

// A pod whose Node is not cached is left out (and the sync reports it), unless the
// Service publishes not-ready addresses.
#[test]
fn test_reconciler_pod_missing_node() {
    let mut pod0 = new_pod(0, true, false);
    pod0.spec.as_mut().unwrap().node_name = Some("node-0".into());
    let pods = vec![pod0, new_pod(1, true, false)];
    for publish_not_ready in [false, true] {
        let mut svc = new_service("foo");
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(publish_not_ready);
        let mut store = Store::default();
        let plan = reconcile_max(100, &mut store, &svc, &pods, &[], &[node("node-0")]);
        if publish_not_ready {
            assert!(plan.errors.is_empty());
            assert_eq!(store.lengths(), [2]);
        } else {
            assert_eq!(
                plan.errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                ["skipping Pod pod1 for Service test/foo: Node node-1 Not Found"]
            );
            assert_eq!(store.lengths(), [1]);
        }
    }
}

// A headless Service without ports: a slice without ports, left alone by the next sync
// even when the apiserver returns its empty ports as absent.
#[test]
fn test_reconcile_headless_service_no_ports() {
    let mut svc = new_service("headless-no-ports");
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ip = Some("None".into());
    spec.ports = None;
    let pod = new_pod(1, true, false);
    let mut store = Store::default();
    reconcile(&mut store, &svc, std::slice::from_ref(&pod), &[]);
    assert_eq!(store.actions, ["create"]);
    let mut existing = store.list();
    existing[0].ports = None;
    assert!(reconcile(&mut store, &svc, &[pod], &existing).is_empty());
}

// Terminating pods: serving as their readiness says, terminating, not ready (upstream
// TestPodToEndpoint's terminating cases).
#[test]
fn test_terminating_pods() {
    let svc = new_service("foo");
    let pods = vec![new_pod(1, true, true), new_pod(2, false, true)];
    let mut store = Store::default();
    reconcile(&mut store, &svc, &pods, &[]);
    let slices = store.list();
    let conditions: Vec<_> = slices[0]
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap();
            (c.ready, c.serving, c.terminating)
        })
        .collect();
    assert_eq!(
        conditions,
        [
            (Some(false), Some(true), Some(true)),
            (Some(false), Some(false), Some(true))
        ]
    );
}

// A headless Service without ipFamilies (rekube's allocator leaves them alone): slices
// of its pods' families only, not an empty IPv6 one beside the IPv4 one.
#[test]
fn test_headless_without_families_takes_the_pods_families() {
    let mut svc = new_service("foo");
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ip = Some("None".into());
    spec.ip_families = None;
    let mut store = Store::default();
    reconcile(&mut store, &svc, &pods(3), &[]);
    let types: Vec<String> = store
        .list()
        .iter()
        .map(|s| s.address_type.clone())
        .collect();
    assert_eq!(types, ["IPv4"]);
    // no pods: an IPv4 placeholder.
    let mut store = Store::default();
    reconcile(&mut store, &svc, &[], &[]);
    assert_eq!(store.list()[0].address_type, "IPv4");
}

/// upstream TestReconcile_TrafficDistribution's topology: node-0 in zone-a {pod0}, node-1
/// in zone-b {pod1, pod2, pod3}, node-2 in zone-c {pod4, pod5}; hints by zone (and node
/// for PreferSameNode), none without a trafficDistribution or with the topology-mode
/// annotation set to Auto (upstream's topology-aware hints, which take precedence).
#[test]
fn test_reconcile_traffic_distribution() {
    let zoned: Vec<Node> = (0..3)
        .map(|i| {
            let mut n = node(&format!("node-{i}"));
            n.metadata.labels = Some(
                [(
                    LABEL_TOPOLOGY_ZONE.to_string(),
                    format!("zone-{}", (b'a' + i as u8) as char),
                )]
                .into(),
            );
            n
        })
        .collect();
    let pods: Vec<Pod> = (0..6)
        .map(|i| {
            let mut p = new_pod(i, true, false);
            p.spec.as_mut().unwrap().node_name = Some(format!("node-{}", [0, 1, 1, 1, 2, 2][i]));
            p
        })
        .collect();
    let by =
        |slices: &[EndpointSlice],
         f: &dyn Fn(&k8s_openapi::api::discovery::v1::EndpointHints) -> Vec<String>| {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for e in slices.iter().flat_map(|s| s.endpoints.iter()) {
                for h in e.hints.iter().flat_map(f) {
                    *m.entry(h).or_default() += 1;
                }
            }
            m
        };
    let zones = |h: &k8s_openapi::api::discovery::v1::EndpointHints| {
        h.for_zones
            .iter()
            .flatten()
            .map(|z| z.name.clone())
            .collect()
    };
    let nodes_of = |h: &k8s_openapi::api::discovery::v1::EndpointHints| {
        h.for_nodes
            .iter()
            .flatten()
            .map(|n| n.name.clone())
            .collect()
    };
    let counts = |v: &[(&str, usize)]| -> BTreeMap<String, usize> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    let by_zone = counts(&[("zone-a", 1), ("zone-b", 3), ("zone-c", 2)]);
    let by_node = counts(&[("node-0", 1), ("node-1", 3), ("node-2", 2)]);
    for (td, annotation, want_zones, want_nodes) in [
        (Some("PreferClose"), None, by_zone.clone(), BTreeMap::new()),
        (
            Some("PreferSameZone"),
            None,
            by_zone.clone(),
            BTreeMap::new(),
        ),
        (
            Some("PreferSameNode"),
            None,
            by_zone.clone(),
            by_node.clone(),
        ),
        (
            Some("PreferClose"),
            Some("Auto"),
            BTreeMap::new(),
            BTreeMap::new(),
        ),
        (Some("Unknown"), None, BTreeMap::new(), BTreeMap::new()),
        (None, None, BTreeMap::new(), BTreeMap::new()),
    ] {
        let mut svc = new_service("foo");
        svc.spec.as_mut().unwrap().traffic_distribution = td.map(String::from);
        if let Some(a) = annotation {
            svc.metadata.annotations = Some(
                [(
                    "service.kubernetes.io/topology-mode".to_string(),
                    a.to_string(),
                )]
                .into(),
            );
        }
        let mut store = Store::default();
        reconcile_max(100, &mut store, &svc, &pods, &[], &zoned);
        let slices = store.list();
        assert_eq!(by(&slices, &zones), want_zones, "{td:?} {annotation:?}");
        assert_eq!(by(&slices, &nodes_of), want_nodes, "{td:?} {annotation:?}");
        // The hints written, a second sync changes nothing; with the field removed, the
        // hints go (upstream "should remove hints when trafficDistribution is unset").
        assert!(reconcile_max(100, &mut store, &svc, &pods, &slices, &zoned).is_empty());
        if !want_zones.is_empty() {
            svc.spec.as_mut().unwrap().traffic_distribution = None;
            store.actions.clear();
            reconcile_max(100, &mut store, &svc, &pods, &slices, &zoned);
            assert_eq!(store.actions, ["update"]);
            assert!(by(&store.list(), &zones).is_empty());
        }
    }
}

// upstream trafficdist_test.go "should correct incorrect hints with PreferClose" and
// "unready endpoints should not trigger updates".
#[test]
fn test_reconcile_hints_heuristic() {
    use super::super::trafficdist::reconcile_hints;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointHints, ForZone};
    let endpoint =
        |zone: &str, hint: &str, ready: bool| k8s_openapi::api::discovery::v1::Endpoint {
            addresses: vec!["10.0.0.1".into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..Default::default()
            }),
            zone: Some(zone.into()),
            hints: Some(EndpointHints {
                for_zones: Some(vec![ForZone { name: hint.into() }]),
                for_nodes: None,
            }),
            ..Default::default()
        };
    let svc = new_service("foo");
    let mut wrong = new_empty_endpoint_slice(1, &svc, &endpoint_meta("foo"));
    wrong.endpoints = vec![endpoint("zone-a", "zone-b", true)];
    let mut update = Vec::new();
    reconcile_hints(
        Some("PreferClose"),
        &mut [],
        &mut update,
        std::slice::from_ref(&wrong),
    );
    assert_eq!(update.len(), 1);
    assert_eq!(
        update[0].endpoints[0]
            .hints
            .as_ref()
            .unwrap()
            .for_zones
            .as_ref()
            .unwrap()[0]
            .name,
        "zone-a"
    );
    let mut unready = new_empty_endpoint_slice(2, &svc, &endpoint_meta("foo"));
    unready.endpoints = vec![endpoint("zone-a", "zone-b", false)];
    let mut update = Vec::new();
    reconcile_hints(Some("PreferClose"), &mut [], &mut update, &[unready]);
    assert!(update.is_empty());
    // trafficDistribution unset: an unchanged slice with hints is updated without them.
    let mut update = Vec::new();
    reconcile_hints(None, &mut [], &mut update, &[wrong]);
    assert_eq!(update.len(), 1);
    assert!(update[0].endpoints[0].hints.is_none());
}
