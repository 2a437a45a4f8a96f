//! Ports of upstream's endpoints_controller_test.go (the syncService tables, as calls of
//! [`sync_endpoints`]: "no request" is `Skip` or `UpToDate`, a PUT is `Update`, a POST is
//! `Create`), k8s.io/endpointslice/util controller_utils_test.go and k8s.io/endpointslice
//! utils_test.go (TestFindPort), all as of v1.36.3. The controller-level tests (batching, informer sync,
//! stale caches, deletion events, a missing Service) are the e2e tests' and
//! controller.rs's.
use super::super::trigger_time::TriggerTimeTracker;
use super::*;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

const IPV4ONLY: &[&str] = &["IPv4"];
const IPV6ONLY: &[&str] = &["IPv6"];
const IPV4IPV6: &[&str] = &["IPv4", "IPv6"];
const IPV6IPV4: &[&str] = &["IPv6", "IPv4"];

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// upstream testPod(namespace, id, nPorts, isReady, ipFamilies)
fn test_pod(namespace: &str, id: usize, n_ports: usize, is_ready: bool, families: &[&str]) -> Pod {
    let ips: Vec<PodIP> = families
        .iter()
        .map(|f| PodIP {
            ip: if *f == "IPv4" {
                // id 0: 1.2.3.4, id 1: 1.2.3.5, id 999: 1.2.6.235
                format!("1.2.{}.{}", 3 + (4 + id) / 256, (4 + id) % 256)
            } else {
                format!("2000::{:x}", 4 + id)
            },
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(format!("pod{id}")),
            labels: Some(labels(&[("foo", "bar")])),
            resource_version: Some(id.to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                ports: Some(
                    (0..n_ports)
                        .map(|j| ContainerPort {
                            name: Some(format!("port{j}")),
                            container_port: 8080 + j as i32,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if is_ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            pod_ip: ips.first().map(|i| i.ip.clone()),
            pod_ips: Some(ips),
            ..Default::default()
        }),
    }
}

/// upstream addPods: `n_pods` ready pods, then `n_not_ready` not ready ones.
fn add_pods(
    store: &mut Vec<Pod>,
    namespace: &str,
    n_pods: usize,
    n_ports: usize,
    n_not_ready: usize,
    families: &[&str],
) {
    for i in 0..n_pods + n_not_ready {
        store.push(test_pod(namespace, i, n_ports, i < n_pods, families));
    }
}

/// upstream addNotReadyPodsWithSpecifiedRestartPolicyAndPhase
fn add_not_ready_pods_with_restart_policy_and_phase(
    store: &mut Vec<Pod>,
    namespace: &str,
    n_pods: usize,
    n_ports: usize,
    restart_policy: &str,
    phase: &str,
) {
    for i in 0..n_pods {
        let mut p = test_pod(namespace, i, n_ports, false, IPV4ONLY);
        p.metadata.resource_version = None;
        let spec = p.spec.as_mut().unwrap();
        spec.restart_policy = Some(restart_policy.into());
        let st = p.status.as_mut().unwrap();
        st.phase = Some(phase.into());
        st.pod_ips = None;
        p.status.as_mut().unwrap().pod_ip = Some(format!("1.2.3.{}", 4 + i));
        store.push(p);
    }
}

/// A Service; IPv4 when the spec names no family (upstream's tests set
/// `IPFamilies: [IPv4]` as the apiserver would; with IPv4-only pods it changes nothing).
fn svc(ns: &str, name: &str, mut spec: ServiceSpec) -> Service {
    spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The Endpoints with upstream's managed-by label (and `more`).
fn managed(mut e: Endpoints, more: &[(&str, &str)]) -> Endpoints {
    let l = e.metadata.labels.get_or_insert_with(Default::default);
    l.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    l.extend(labels(more));
    e
}

fn tcp(port: i32, target: i32) -> ServicePort {
    sport(port, target, "TCP")
}

fn sport(port: i32, target: i32, protocol: &str) -> ServicePort {
    ServicePort {
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

fn selector(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(labels(kv))
}

fn existing(ns: &str, subsets: Vec<EndpointSubset>) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some("foo".into()),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        subsets: Some(subsets),
    }
}

/// upstream's `{IP, NodeName: &emptyNodeName}` (no targetRef).
fn bare(ip: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.into(),
        node_name: Some(String::new()),
        ..Default::default()
    }
}

/// upstream's `{IP, NodeName: &emptyNodeName, TargetRef: {Kind: Pod, Name, Namespace}}`.
fn addr(ip: &str, pod: &str, ns: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.into(),
        node_name: Some(String::new()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        }),
        hostname: None,
    }
}

fn eport(port: i32, protocol: Option<&str>) -> EndpointPort {
    EndpointPort {
        port,
        protocol: protocol.map(str::to_owned),
        ..Default::default()
    }
}

fn subset(
    ready: Vec<EndpointAddress>,
    not_ready: Vec<EndpointAddress>,
    ports: Vec<EndpointPort>,
) -> EndpointSubset {
    EndpointSubset {
        addresses: Some(ready),
        not_ready_addresses: Some(not_ready),
        ports: Some(ports),
    }
}

/// One syncService of upstream's tests: a fresh trigger-time tracker, the pods of the
/// store the Service selects, the Endpoints of the cache.
fn sync(service: &Service, store: &[Pod], current: Option<&Endpoints>) -> Sync {
    let all: Vec<&Pod> = store.iter().collect();
    let pods = pods_for_service(service, &all);
    let trigger = if receives_endpoints(service) {
        TriggerTimeTracker::new().compute_endpoint_last_change_trigger_time(
            service.metadata.namespace.as_deref().unwrap(),
            service,
            &pods,
        )
    } else {
        None
    };
    sync_endpoints(service, &pods, current, trigger)
}

/// What a write sends, in the terms upstream's tests check: resourceVersion, labels,
/// annotations and subsets (empty lists as absent, as Go's encoder omits them).
#[derive(Debug, PartialEq)]
struct Sent {
    resource_version: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    subsets: Vec<EndpointSubset>,
}

fn sent_of(e: &Endpoints) -> Sent {
    Sent {
        resource_version: e.metadata.resource_version.clone(),
        labels: e.metadata.labels.clone().unwrap_or_default(),
        annotations: e.metadata.annotations.clone().unwrap_or_default(),
        subsets: normalized(e.subsets.as_ref()),
    }
}

/// What upstream's test expects sent: the labels given plus the managed-by label, the
/// subsets in the order given (upstream compares the bodies as strings).
fn expect_sent(
    resource_version: Option<&str>,
    labels_: &[(&str, &str)],
    annotations: &[(&str, &str)],
    subsets: Vec<EndpointSubset>,
) -> Sent {
    let mut l = labels(labels_);
    l.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    Sent {
        resource_version: resource_version.map(str::to_owned),
        labels: l,
        annotations: labels(annotations),
        subsets: normalized(Some(&subsets)),
    }
}

/// upstream endptspkg.SortSubsets
fn sorted(mut subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    super::super::repack::sort_subsets(&mut subsets);
    subsets
}

#[track_caller]
fn assert_update(got: Sync, want: Sent) {
    match got {
        Sync::Update(e) => assert_eq!(sent_of(&e), want),
        other => panic!("want an update (PUT), got {other:?}"),
    }
}

#[track_caller]
fn assert_create(got: Sync, want: Sent) {
    match got {
        Sync::Create(e) => assert_eq!(sent_of(&e), want),
        other => panic!("want a create (POST), got {other:?}"),
    }
}

const HEADLESS: (&str, &str) = (IS_HEADLESS_SERVICE, "");

#[test]
fn sync_endpoints_items_preserve_no_selector() {
    let ep = existing(
        "default",
        vec![subset(
            vec![bare("6.7.8.9")],
            vec![],
            vec![eport(1000, None)],
        )],
    );
    let s = svc(
        "default",
        "foo",
        ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    assert_eq!(sync(&s, &[], Some(&ep)), Sync::Skip);
}

#[test]
fn sync_endpoints_existing_nil_subsets() {
    let mut ep = managed(existing("default", vec![]), &[]);
    ep.subsets = None;
    let s = svc(
        "default",
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    assert_eq!(sync(&s, &[], Some(&ep)), Sync::UpToDate);
}

#[test]
fn sync_endpoints_existing_empty_subsets() {
    let ep = managed(existing("default", vec![]), &[]);
    let s = svc(
        "default",
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    assert_eq!(sync(&s, &[], Some(&ep)), Sync::UpToDate);
}

#[test]
fn sync_endpoints_with_pod_resource_version_update_only() {
    let ns = "default";
    let mut pod0 = test_pod(ns, 0, 1, true, IPV4ONLY);
    let mut pod1 = test_pod(ns, 1, 1, false, IPV4ONLY);
    let with_rv = |mut a: EndpointAddress, rv: &str| {
        a.target_ref.as_mut().unwrap().resource_version = Some(rv.into());
        a
    };
    let ep = managed(
        existing(
            ns,
            vec![subset(
                vec![with_rv(addr("1.2.3.4", "pod0", ns), "1")],
                vec![with_rv(addr("1.2.3.5", "pod1", ns), "2")],
                vec![eport(8080, Some("TCP"))],
            )],
        ),
        &[],
    );
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    pod0.metadata.resource_version = Some("3".into());
    pod1.metadata.resource_version = Some("4".into());
    assert_eq!(sync(&s, &[pod0, pod1], Some(&ep)), Sync::UpToDate);
}

#[test]
fn sync_endpoints_new_no_subsets() {
    let s = svc(
        "default",
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    assert!(matches!(sync(&s, &[], None), Sync::Create(_)));
}

#[test]
fn check_leftover_endpoints() {
    let ep = existing(
        "default",
        vec![subset(
            vec![bare("6.7.8.9")],
            vec![],
            vec![eport(1000, None)],
        )],
    );
    let mut lock = existing("default", vec![]);
    lock.metadata.name = Some("lock".into());
    lock.metadata.annotations = Some(labels(&[(LEADER_ELECTION_RECORD_ANNOTATION_KEY, "{}")]));
    assert_eq!(
        leftover_endpoints_to_check(&[&ep, &lock]),
        vec![("default".to_string(), "foo".to_string())]
    );
}

fn sync_protocol(protocol: &str) {
    let ns = "other";
    let ep = existing(
        ns,
        vec![subset(
            vec![bare("6.7.8.9")],
            vec![],
            vec![eport(1000, Some(protocol))],
        )],
    );
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[]),
            ports: Some(vec![sport(80, 8080, protocol)]),
            ..Default::default()
        },
    );
    assert_update(
        sync(&s, &store, Some(&ep)),
        expect_sent(
            Some("1"),
            &[HEADLESS],
            &[],
            vec![subset(
                vec![addr("1.2.3.4", "pod0", ns)],
                vec![],
                vec![eport(8080, Some(protocol))],
            )],
        ),
    );
}

#[test]
fn sync_endpoints_protocol_tcp() {
    sync_protocol("TCP");
}

#[test]
fn sync_endpoints_protocol_udp() {
    sync_protocol("UDP");
}

#[test]
fn sync_endpoints_protocol_sctp() {
    sync_protocol("SCTP");
}

#[test]
fn sync_endpoints_headless_service_label() {
    let ep = managed(existing("default", vec![]), &[HEADLESS]);
    let s = svc(
        "default",
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    assert_eq!(sync(&s, &[], Some(&ep)), Sync::UpToDate);
}

#[test]
fn sync_service_external_name_type() {
    let port80 = || {
        Some(vec![ServicePort {
            port: 80,
            ..Default::default()
        }])
    };
    let ext = |selector_: Option<BTreeMap<String, String>>, ports| ServiceSpec {
        selector: selector_,
        ports,
        type_: Some("ExternalName".into()),
        ..Default::default()
    };
    let cases = [
        (
            "External name with selector and ports should not receive endpoints",
            ext(selector(&[("foo", "bar")]), port80()),
        ),
        (
            "External name with ports should not receive endpoints",
            ext(None, port80()),
        ),
        (
            "External name with selector should not receive endpoints",
            ext(selector(&[("foo", "bar")]), None),
        ),
        (
            "External name without selector and ports should not receive endpoints",
            ext(None, None),
        ),
    ];
    for (name, spec) in cases {
        assert_eq!(
            sync(&svc("default", "testing-1", spec), &[], None),
            Sync::Skip,
            "{name}"
        );
    }
}

#[test]
fn sync_endpoints_items_empty_selector_selects_all() {
    let ns = "other";
    let ep = existing(ns, vec![]);
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    assert_update(
        sync(&s, &store, Some(&ep)),
        expect_sent(
            Some("1"),
            &[HEADLESS],
            &[],
            vec![subset(
                vec![addr("1.2.3.4", "pod0", ns)],
                vec![],
                vec![eport(8080, Some("TCP"))],
            )],
        ),
    );
}

#[test]
fn sync_endpoints_items_empty_selector_selects_all_not_ready() {
    let ns = "other";
    let ep = existing(ns, vec![]);
    let mut store = vec![];
    add_pods(&mut store, ns, 0, 1, 1, IPV4ONLY);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    assert_update(
        sync(&s, &store, Some(&ep)),
        expect_sent(
            Some("1"),
            &[HEADLESS],
            &[],
            vec![subset(
                vec![],
                vec![addr("1.2.3.4", "pod0", ns)],
                vec![eport(8080, Some("TCP"))],
            )],
        ),
    );
}

#[test]
fn sync_endpoints_items_empty_selector_selects_all_mixed() {
    let ns = "other";
    let ep = existing(ns, vec![]);
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 1, IPV4ONLY);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    assert_update(
        sync(&s, &store, Some(&ep)),
        expect_sent(
            Some("1"),
            &[HEADLESS],
            &[],
            vec![subset(
                vec![addr("1.2.3.4", "pod0", ns)],
                vec![addr("1.2.3.5", "pod1", ns)],
                vec![eport(8080, Some("TCP"))],
            )],
        ),
    );
}

#[test]
fn sync_endpoints_items_preexisting() {
    let ns = "bar";
    let ep = managed(
        existing(
            ns,
            vec![subset(
                vec![bare("6.7.8.9")],
                vec![],
                vec![eport(1000, None)],
            )],
        ),
        &[],
    );
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    assert_update(
        sync(&s, &store, Some(&ep)),
        expect_sent(
            Some("1"),
            &[HEADLESS],
            &[],
            vec![subset(
                vec![addr("1.2.3.4", "pod0", ns)],
                vec![],
                vec![eport(8080, Some("TCP"))],
            )],
        ),
    );
}

#[test]
fn sync_endpoints_items_preexisting_identical() {
    let ns = "default";
    let ep = managed(
        existing(
            ns,
            vec![subset(
                vec![addr("1.2.3.4", "pod0", ns)],
                vec![],
                vec![eport(8080, Some("TCP"))],
            )],
        ),
        &[],
    );
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    assert_eq!(sync(&s, &store, Some(&ep)), Sync::UpToDate);
}

fn two_named_ports() -> Option<Vec<ServicePort>> {
    Some(vec![
        ServicePort {
            name: Some("port0".into()),
            ..tcp(80, 8080)
        },
        ServicePort {
            name: Some("port1".into()),
            ..tcp(88, 8088)
        },
    ])
}

fn three_pods_two_ports(ns: &str) -> EndpointSubset {
    EndpointSubset {
        addresses: Some(vec![
            addr("1.2.3.4", "pod0", ns),
            addr("1.2.3.5", "pod1", ns),
            addr("1.2.3.6", "pod2", ns),
        ]),
        not_ready_addresses: None,
        ports: Some(vec![
            EndpointPort {
                name: Some("port0".into()),
                ..eport(8080, Some("TCP"))
            },
            EndpointPort {
                name: Some("port1".into()),
                ..eport(8088, Some("TCP"))
            },
        ]),
    }
}

#[test]
fn sync_endpoints_items() {
    let ns = "other";
    let mut store = vec![];
    add_pods(&mut store, ns, 3, 2, 0, IPV4ONLY);
    add_pods(&mut store, "blah", 5, 2, 0, IPV4ONLY); // make sure these aren't found!
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: two_named_ports(),
            ..Default::default()
        },
    );
    assert_create(
        sync(&s, &store, None),
        expect_sent(
            None,
            &[HEADLESS],
            &[],
            sorted(vec![three_pods_two_ports(ns)]),
        ),
    );
}

#[test]
fn sync_endpoints_items_with_labels() {
    let ns = "other";
    let mut store = vec![];
    add_pods(&mut store, ns, 3, 2, 0, IPV4ONLY);
    let mut s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: two_named_ports(),
            ..Default::default()
        },
    );
    s.metadata.labels = Some(labels(&[("foo", "bar")]));
    assert_create(
        sync(&s, &store, None),
        expect_sent(
            None,
            &[("foo", "bar"), HEADLESS],
            &[],
            sorted(vec![three_pods_two_ports(ns)]),
        ),
    );
}

#[test]
fn sync_endpoints_items_preexisting_labels_change() {
    let ns = "bar";
    let mut ep = existing(
        ns,
        vec![subset(
            vec![bare("6.7.8.9")],
            vec![],
            vec![eport(1000, None)],
        )],
    );
    ep.metadata.labels = Some(labels(&[("foo", "bar")]));
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let mut s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    s.metadata.labels = Some(labels(&[("baz", "blah")]));
    assert_update(
        sync(&s, &store, Some(&ep)),
        expect_sent(
            Some("1"),
            &[("baz", "blah"), HEADLESS],
            &[],
            vec![subset(
                vec![addr("1.2.3.4", "pod0", ns)],
                vec![],
                vec![eport(8080, Some("TCP"))],
            )],
        ),
    );
}

#[test]
fn sync_endpoints_headless_service() {
    let ns = "headless";
    let ep = existing(
        ns,
        vec![subset(
            vec![bare("6.7.8.9")],
            vec![],
            vec![eport(1000, Some("TCP"))],
        )],
    );
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let mut s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[]),
            cluster_ip: Some("None".into()),
            ports: Some(vec![]),
            ..Default::default()
        },
    );
    s.metadata.labels = Some(labels(&[("a", "b")]));
    let original = s.clone();
    let got = sync(&s, &store, Some(&ep));
    assert_eq!(s, original, "syncing endpoints changed the service");
    assert_update(
        got,
        expect_sent(
            Some("1"),
            &[("a", "b"), HEADLESS],
            &[],
            vec![subset(vec![addr("1.2.3.4", "pod0", ns)], vec![], vec![])],
        ),
    );
}

/// `managed`: upstream's Failed case starts from an Endpoints with the managed-by label and
/// foo=bar, the Succeeded ones from one labelled foo=bar only.
fn exclude_terminal(restart_policy: &str, phase: &str, managed_: bool) {
    let ns = "other";
    let mut ep = existing(ns, vec![]);
    ep.metadata.labels = Some(labels(&[("foo", "bar")]));
    if managed_ {
        ep = managed(ep, &[]);
    }
    let mut store = vec![];
    add_not_ready_pods_with_restart_policy_and_phase(&mut store, ns, 1, 1, restart_policy, phase);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    assert_update(
        sync(&s, &store, Some(&ep)),
        expect_sent(Some("1"), &[HEADLESS], &[], vec![]),
    );
}

#[test]
fn sync_endpoints_items_exclude_not_ready_pods_with_restart_policy_never_and_phase_failed() {
    exclude_terminal("Never", "Failed", true);
}

#[test]
fn sync_endpoints_items_exclude_not_ready_pods_with_restart_policy_never_and_phase_succeeded() {
    exclude_terminal("Never", "Succeeded", false);
}

#[test]
fn sync_endpoints_items_exclude_not_ready_pods_with_restart_policy_on_failure_and_phase_succeeded()
{
    exclude_terminal("OnFailure", "Succeeded", false);
}

#[test]
fn sync_endpoints_headless_without_port() {
    let ns = "default";
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            cluster_ip: Some("None".into()),
            ports: None,
            ..Default::default()
        },
    );
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    assert_create(
        sync(&s, &store, None),
        expect_sent(
            None,
            &[HEADLESS],
            &[],
            vec![EndpointSubset {
                addresses: Some(vec![addr("1.2.3.4", "pod0", ns)]),
                ..Default::default()
            }],
        ),
    );
}

#[test]
fn pod_to_endpoint_address_for_service_table() {
    let with = |cluster_ip: &str, families: Option<&[&str]>| {
        svc(
            "test",
            "svc",
            ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ip_families: families.map(|f| f.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
    };
    // (name, pod families, service, expected family (v6?), expect an error)
    let v4 = Some(&["IPv4"][..]);
    let v6 = Some(&["IPv6"][..]);
    let cases: Vec<(&str, &[&str], Service, bool, bool)> = vec![
        (
            "v4 service, in a single stack cluster",
            IPV4ONLY,
            with("10.0.0.1", v4),
            false,
            false,
        ),
        (
            "v4 service, in a dual stack cluster",
            IPV4IPV6,
            with("10.0.0.1", v4),
            false,
            false,
        ),
        (
            "v4 service, in a dual stack ipv6-primary cluster",
            IPV6IPV4,
            with("10.0.0.1", v4),
            false,
            false,
        ),
        (
            "v4 headless service, in a single stack cluster",
            IPV4ONLY,
            with("None", v4),
            false,
            false,
        ),
        (
            "v4 headless service, in a dual stack cluster",
            IPV4IPV6,
            with("None", v4),
            false,
            false,
        ),
        (
            "v6 service, in a dual stack cluster",
            IPV4IPV6,
            with("3000::1", v6),
            true,
            false,
        ),
        (
            "v6 headless service, in a single stack cluster",
            IPV6ONLY,
            with("None", v6),
            true,
            false,
        ),
        (
            "v6 headless service, in a dual stack cluster",
            IPV4IPV6,
            with("None", v6),
            true,
            false,
        ),
        (
            "v6 service, in a v4 only cluster",
            IPV4ONLY,
            with("3000::1", v6),
            false,
            true,
        ),
    ];
    for (name, families, service, want_v6, want_err) in cases {
        let mut store = vec![];
        add_pods(&mut store, "test", 1, 1, 0, families);
        let pod = &store[0];
        match pod_to_endpoint_address_for_service(&service, pod) {
            Err(e) => {
                assert!(want_err, "{name}: unexpected error {e}");
                assert_eq!(
                    e.to_string(),
                    "failed to find a matching endpoint for service svc"
                );
            }
            Ok(epa) => {
                assert!(!want_err, "{name}: want an error");
                assert_eq!(is_ipv6(&epa.ip), want_v6, "{name}: {}", epa.ip);
                assert_eq!(epa.node_name.as_deref(), Some(""), "{name}");
                let r = epa.target_ref.unwrap();
                assert_eq!(r.kind.as_deref(), Some("Pod"), "{name}");
                assert_eq!(r.namespace, pod.metadata.namespace, "{name}");
                assert_eq!(r.name, pod.metadata.name, "{name}");
                assert_eq!(r.uid, pod.metadata.uid, "{name}");
                assert_eq!(r.resource_version, None, "{name}");
            }
        }
    }
}

fn trigger_time() -> Timestamp {
    "2018-01-01T00:00:00Z".parse().unwrap()
}

fn trigger_service(ns: &str, created: Option<Timestamp>) -> Service {
    let mut s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    s.metadata.creation_timestamp = created.map(Time);
    s
}

fn trigger_expected(ns: &str, annotations: &[(&str, &str)]) -> Sent {
    expect_sent(
        Some("1"),
        &[HEADLESS],
        annotations,
        vec![subset(
            vec![addr("1.2.3.4", "pod0", ns)],
            vec![],
            vec![eport(8080, Some("TCP"))],
        )],
    )
}

#[test]
fn last_trigger_change_time_annotation() {
    let ns = "other";
    let ep = existing(
        ns,
        vec![subset(
            vec![bare("6.7.8.9")],
            vec![],
            vec![eport(1000, Some("TCP"))],
        )],
    );
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let s = trigger_service(ns, Some(trigger_time()));
    assert_update(
        sync(&s, &store, Some(&ep)),
        trigger_expected(
            ns,
            &[(ENDPOINTS_LAST_CHANGE_TRIGGER_TIME, "2018-01-01T00:00:00Z")],
        ),
    );
}

#[test]
fn last_trigger_change_time_annotation_annotation_overridden() {
    let ns = "other";
    let mut ep = existing(
        ns,
        vec![subset(
            vec![bare("6.7.8.9")],
            vec![],
            vec![eport(1000, Some("TCP"))],
        )],
    );
    ep.metadata.annotations = Some(labels(&[(
        ENDPOINTS_LAST_CHANGE_TRIGGER_TIME,
        "2017-12-31T23:00:00Z",
    )]));
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let s = trigger_service(ns, Some(trigger_time()));
    assert_update(
        sync(&s, &store, Some(&ep)),
        trigger_expected(
            ns,
            &[(ENDPOINTS_LAST_CHANGE_TRIGGER_TIME, "2018-01-01T00:00:00Z")],
        ),
    );
}

#[test]
fn last_trigger_change_time_annotation_annotation_cleared() {
    let ns = "other";
    let mut ep = existing(
        ns,
        vec![subset(
            vec![bare("6.7.8.9")],
            vec![],
            vec![eport(1000, Some("TCP"))],
        )],
    );
    ep.metadata.annotations = Some(labels(&[(
        ENDPOINTS_LAST_CHANGE_TRIGGER_TIME,
        "2018-01-01T00:00:00Z",
    )]));
    // Neither pod nor service has a trigger time: the annotation goes.
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let s = trigger_service(ns, None);
    assert_update(sync(&s, &store, Some(&ep)), trigger_expected(ns, &[]));
}

#[test]
fn trigger_time_prints_like_rfc3339nano() {
    let t: Timestamp = "2018-01-01T00:00:00.250Z".parse().unwrap();
    assert_eq!(t.to_string(), "2018-01-01T00:00:00.25Z");
    assert_eq!(trigger_time().to_string(), "2018-01-01T00:00:00Z");
}

#[test]
fn sync_service_over_capacity() {
    struct Case {
        name: &'static str,
        starting_annotation: Option<&'static str>,
        num_existing: usize,
        num_desired: usize,
        num_desired_not_ready: usize,
        num_expected_ready: usize,
        num_expected_not_ready: usize,
        expected_annotation: bool,
    }
    let m = MAX_CAPACITY;
    let cases = [
        Case {
            name: "empty",
            starting_annotation: None,
            num_existing: 0,
            num_desired: 0,
            num_desired_not_ready: 0,
            num_expected_ready: 0,
            num_expected_not_ready: 0,
            expected_annotation: false,
        },
        Case {
            name: "annotation added past capacity, < than maxCapacity of Ready Addresses",
            starting_annotation: None,
            num_existing: m - 1,
            num_desired: m - 3,
            num_desired_not_ready: 4,
            num_expected_ready: m - 3,
            num_expected_not_ready: 3,
            expected_annotation: true,
        },
        Case {
            name: "annotation added past capacity, maxCapacity of Ready Addresses ",
            starting_annotation: None,
            num_existing: m - 1,
            num_desired: m,
            num_desired_not_ready: 10,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: true,
        },
        Case {
            name: "annotation removed below capacity",
            starting_annotation: Some("truncated"),
            num_existing: m - 1,
            num_desired: m - 1,
            num_desired_not_ready: 0,
            num_expected_ready: m - 1,
            num_expected_not_ready: 0,
            expected_annotation: false,
        },
        Case {
            name: "annotation was set to warning previously, annotation removed at capacity",
            starting_annotation: Some("warning"),
            num_existing: m,
            num_desired: m,
            num_desired_not_ready: 0,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: false,
        },
        Case {
            name: "annotation was set to warning previously but still over capacity",
            starting_annotation: Some("warning"),
            num_existing: m + 1,
            num_desired: m + 1,
            num_desired_not_ready: 0,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: true,
        },
        Case {
            name: "annotation removed at capacity",
            starting_annotation: Some("truncated"),
            num_existing: m,
            num_desired: m,
            num_desired_not_ready: 0,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: false,
        },
        Case {
            name: "no endpoints change, annotation value corrected",
            starting_annotation: Some("invalid"),
            num_existing: m + 1,
            num_desired: m + 1,
            num_desired_not_ready: 0,
            num_expected_ready: m,
            num_expected_not_ready: 0,
            expected_annotation: true,
        },
    ];
    for tc in cases {
        let ns = "test";
        let mut store = vec![];
        add_pods(
            &mut store,
            ns,
            tc.num_desired,
            1,
            tc.num_desired_not_ready,
            IPV4ONLY,
        );
        let s = svc(
            ns,
            "foo",
            ServiceSpec {
                selector: selector(&[("foo", "bar")]),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            },
        );
        let addresses: Vec<EndpointAddress> = store
            .iter()
            .take(tc.num_existing)
            .map(|p| pod_to_endpoint_address_for_service(&s, p).unwrap())
            .collect();
        let mut ep = existing(
            ns,
            vec![EndpointSubset {
                addresses: Some(addresses),
                ..Default::default()
            }],
        );
        ep.metadata.annotations = Some(
            tc.starting_annotation
                .map(|a| labels(&[(ENDPOINTS_OVER_CAPACITY, a)]))
                .unwrap_or_default(),
        );
        let actual = match sync(&s, &store, Some(&ep)) {
            Sync::Update(e) => e,
            Sync::UpToDate => ep.clone(),
            other => panic!("{}: {other:?}", tc.name),
        };
        let annotation = actual
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ENDPOINTS_OVER_CAPACITY));
        if tc.expected_annotation {
            assert_eq!(
                annotation.map(String::as_str),
                Some("truncated"),
                "{}",
                tc.name
            );
        } else {
            assert_eq!(annotation, None, "{}", tc.name);
        }
        let (ready, not_ready) = count_addresses(actual.subsets.as_deref().unwrap_or_default());
        assert_eq!(
            (ready, not_ready),
            (tc.num_expected_ready, tc.num_expected_not_ready),
            "{}",
            tc.name
        );
    }
}

#[test]
fn truncate_endpoints_table() {
    // (desc, subsetsReady, subsetsNotReady, expectedReady, expectedNotReady)
    type Case = (&'static str, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>);
    let cases: Vec<Case> = vec![
        ("empty", vec![], vec![], vec![], vec![]),
        (
            "total endpoints < max capacity",
            vec![50, 100, 100, 100, 100],
            vec![50, 100, 100, 100, 100],
            vec![50, 100, 100, 100, 100],
            vec![50, 100, 100, 100, 100],
        ),
        (
            "total endpoints = max capacity",
            vec![100, 100, 100, 100, 100],
            vec![100, 100, 100, 100, 100],
            vec![100, 100, 100, 100, 100],
            vec![100, 100, 100, 100, 100],
        ),
        (
            "total ready endpoints < max capacity, but total endpoints > max capacity",
            vec![90, 110, 50, 10, 20],
            vec![101, 200, 200, 201, 298],
            vec![90, 110, 50, 10, 20],
            vec![73, 144, 144, 145, 214],
        ),
        (
            "total ready endpoints > max capacity",
            vec![205, 400, 402, 400, 693],
            vec![100, 200, 200, 200, 300],
            vec![98, 191, 192, 191, 328],
            vec![0, 0, 0, 0, 0],
        ),
    ];
    for (desc, ready, not_ready, want_ready, want_not_ready) in cases {
        let mut subsets: Vec<EndpointSubset> = ready
            .iter()
            .zip(&not_ready)
            .map(|(r, n)| EndpointSubset {
                addresses: Some(vec![EndpointAddress::default(); *r]),
                not_ready_addresses: Some(vec![EndpointAddress::default(); *n]),
                ports: None,
            })
            .collect();
        truncate_endpoints(&mut subsets);
        let got_ready: Vec<usize> = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .collect();
        let got_not_ready: Vec<usize> = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .collect();
        assert_eq!(got_ready, want_ready, "{desc}");
        assert_eq!(got_not_ready, want_not_ready, "{desc}");
    }
}

#[test]
fn endpoint_port_from_service_port_table() {
    for (name, app_protocol) in [
        ("empty app protocol", None),
        ("http app protocol", Some("http")),
    ] {
        let sp = ServicePort {
            name: Some("test".into()),
            app_protocol: app_protocol.map(str::to_owned),
            ..Default::default()
        };
        let epp = endpoint_port_from_service_port(&sp, 80);
        assert_eq!(epp.app_protocol.as_deref(), app_protocol, "{name}");
        assert_eq!(
            (epp.name.as_deref(), epp.port),
            (Some("test"), 80),
            "{name}"
        );
    }
}

#[test]
fn sync_service_addresses() {
    let make_service = |tolerate_unready: bool| {
        svc(
            "ns",
            "foo",
            ServiceSpec {
                selector: selector(&[("foo", "bar")]),
                publish_not_ready_addresses: Some(tolerate_unready),
                type_: Some("ClusterIP".into()),
                cluster_ip: Some("1.1.1.1".into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            },
        )
    };
    let make_pod = |phase: &str, is_ready: bool, terminating: bool| Pod {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("fakepod".into()),
            deletion_timestamp: terminating.then(|| Time(Timestamp::now())),
            labels: Some(labels(&[("foo", "bar")])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                ports: Some(vec![ContainerPort {
                    name: Some("port1".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if is_ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            pod_ip: Some("10.1.1.1".into()),
            pod_ips: Some(vec![PodIP {
                ip: "10.1.1.1".into(),
            }]),
            ..Default::default()
        }),
    };
    let cases = [
        (
            "pod running phase",
            make_pod("Running", true, false),
            false,
            1,
            0,
        ),
        (
            "pod running phase being deleted",
            make_pod("Running", true, true),
            false,
            0,
            0,
        ),
        (
            "pod unknown phase container ready",
            make_pod("Unknown", true, false),
            false,
            1,
            0,
        ),
        (
            "pod unknown phase container ready being deleted",
            make_pod("Unknown", true, true),
            false,
            0,
            0,
        ),
        (
            "pod pending phase container ready",
            make_pod("Pending", true, false),
            false,
            1,
            0,
        ),
        (
            "pod pending phase container ready being deleted",
            make_pod("Pending", true, true),
            false,
            0,
            0,
        ),
        (
            "pod unknown phase container not ready",
            make_pod("Unknown", false, false),
            false,
            0,
            1,
        ),
        (
            "pod pending phase container not ready",
            make_pod("Pending", false, false),
            false,
            0,
            1,
        ),
        (
            "pod failed phase",
            make_pod("Failed", false, false),
            false,
            0,
            0,
        ),
        (
            "pod succeeded phase",
            make_pod("Succeeded", false, false),
            false,
            0,
            0,
        ),
        (
            "pod running phase and tolerate unready",
            make_pod("Running", false, false),
            true,
            1,
            0,
        ),
        (
            "pod running phase and tolerate unready being deleted",
            make_pod("Running", false, true),
            true,
            1,
            0,
        ),
        (
            "pod unknown phase and tolerate unready",
            make_pod("Unknown", false, false),
            true,
            1,
            0,
        ),
        (
            "pod unknown phase and tolerate unready being deleted",
            make_pod("Unknown", false, true),
            true,
            1,
            0,
        ),
        (
            "pod pending phase and tolerate unready",
            make_pod("Pending", false, false),
            true,
            1,
            0,
        ),
        (
            "pod pending phase and tolerate unready being deleted",
            make_pod("Pending", false, true),
            true,
            1,
            0,
        ),
        (
            "pod failed phase and tolerate unready",
            make_pod("Failed", false, false),
            true,
            0,
            0,
        ),
        (
            "pod succeeded phase and tolerate unready endpoints",
            make_pod("Succeeded", false, false),
            true,
            0,
            0,
        ),
    ];
    for (name, pod, tolerate, want_ready, want_unready) in cases {
        let s = make_service(tolerate);
        let e = match sync(&s, &[pod], None) {
            Sync::Create(e) => e,
            other => panic!("{name}: want a create, got {other:?}"),
        };
        let (ready, unready) = count_addresses(e.subsets.as_deref().unwrap_or_default());
        assert_eq!((ready, unready), (want_ready, want_unready), "{name}");
        // A Service with a cluster IP is not headless.
        assert!(
            !e.metadata.labels.unwrap().contains_key(IS_HEADLESS_SERVICE),
            "{name}"
        );
    }
}

#[test]
fn endpoint_subsets_equal_ignore_resource_version_table() {
    let a = |ip: &str, pod: &str, ns: &str, rv: &str| EndpointAddress {
        ip: ip.into(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some(ns.into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let es1 = subset(
        vec![a("1.1.1.1", "pod1-1", "ns", "1")],
        vec![a("1.1.1.2", "pod1-2", "ns2", "2")],
        vec![eport(8081, Some("TCP"))],
    );
    let es2 = subset(
        vec![a("2.2.2.1", "pod2-1", "ns", "3")],
        vec![a("2.2.2.2", "pod2-2", "ns2", "4")],
        vec![eport(8082, Some("TCP"))],
    );
    let mutate = |s: &EndpointSubset, f: &dyn Fn(&mut EndpointSubset)| {
        let mut s = s.clone();
        f(&mut s);
        s
    };
    let cases = [
        (
            "Subsets removed",
            vec![es1.clone(), es2.clone()],
            vec![es1.clone()],
            false,
        ),
        (
            "Ready Pod IP changed",
            vec![es1.clone(), es2.clone()],
            vec![
                mutate(&es1, &|s| {
                    s.addresses.as_mut().unwrap()[0].ip = "1.1.1.10".into()
                }),
                es2.clone(),
            ],
            false,
        ),
        (
            "NotReady Pod IP changed",
            vec![es1.clone(), es2.clone()],
            vec![
                es1.clone(),
                mutate(&es2, &|s| {
                    s.not_ready_addresses.as_mut().unwrap()[0].ip = "2.2.2.10".into()
                }),
            ],
            false,
        ),
        (
            "Pod ResourceVersion changed",
            vec![es1.clone(), es2.clone()],
            vec![
                es1.clone(),
                mutate(&es2, &|s| {
                    s.addresses.as_mut().unwrap()[0]
                        .target_ref
                        .as_mut()
                        .unwrap()
                        .resource_version = Some("100".into())
                }),
            ],
            true,
        ),
        (
            "Pod ResourceVersion removed",
            vec![es1.clone(), es2.clone()],
            vec![
                es1.clone(),
                mutate(&es2, &|s| {
                    s.addresses.as_mut().unwrap()[0]
                        .target_ref
                        .as_mut()
                        .unwrap()
                        .resource_version = None
                }),
            ],
            true,
        ),
        (
            "Ports changed",
            vec![es1.clone(), es2.clone()],
            vec![
                es1.clone(),
                mutate(&es1, &|s| s.ports.as_mut().unwrap()[0].port = 8082),
            ],
            false,
        ),
    ];
    for (name, s1, s2, want) in cases {
        assert_eq!(
            endpoint_subsets_equal_ignore_resource_version(Some(&s1), Some(&s2)),
            want,
            "{name}"
        );
    }
    // Go's semantic equality: nil and empty are equal.
    assert!(endpoint_subsets_equal_ignore_resource_version(
        None,
        Some(&vec![])
    ));
}

// --- k8s.io/endpointslice/util controller_utils_test.go ---

#[test]
fn determine_needed_service_updates_table() {
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    let cases = [
        (
            "no services changed",
            set(&["a", "b", "c"]),
            set(&["a", "b", "c"]),
            set(&[]),
            set(&["a", "b", "c"]),
        ),
        (
            "all old services removed, new services added",
            set(&["a", "b", "c"]),
            set(&["d", "e", "f"]),
            set(&["a", "b", "c", "d", "e", "f"]),
            set(&["a", "b", "c", "d", "e", "f"]),
        ),
        (
            "all old services removed, no new services added",
            set(&["a", "b", "c"]),
            set(&[]),
            set(&["a", "b", "c"]),
            set(&["a", "b", "c"]),
        ),
        (
            "no old services, but new services added",
            set(&[]),
            set(&["a", "b", "c"]),
            set(&["a", "b", "c"]),
            set(&["a", "b", "c"]),
        ),
        (
            "one service removed, one service added, two unchanged",
            set(&["a", "b", "c"]),
            set(&["b", "c", "d"]),
            set(&["a", "d"]),
            set(&["a", "b", "c", "d"]),
        ),
        ("no services", set(&[]), set(&[]), set(&[]), set(&[])),
    ];
    for (name, a, b, xor, union) in cases {
        assert_eq!(
            determine_needed_service_updates(&a, &b, false),
            xor,
            "{name} (podChanged=false)"
        );
        assert_eq!(
            determine_needed_service_updates(&a, &b, true),
            union,
            "{name} (podChanged=true)"
        );
    }
}

#[test]
fn should_pod_be_in_endpoints_table() {
    let pod =
        |restart: Option<&str>, phase: &str, ip: &str, ips: Option<Vec<&str>>, deleting: bool| {
            Pod {
                metadata: ObjectMeta {
                    deletion_timestamp: deleting.then(|| Time(Timestamp::now())),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    restart_policy: restart.map(str::to_owned),
                    ..Default::default()
                }),
                status: Some(PodStatus {
                    phase: Some(phase.into()),
                    pod_ip: Some(ip.into()),
                    pod_ips: ips.map(|v| v.into_iter().map(|ip| PodIP { ip: ip.into() }).collect()),
                    ..Default::default()
                }),
            }
        };
    let cases = [
        // Pod should not be in endpoints:
        (
            "Failed pod with Never RestartPolicy",
            pod(Some("Never"), "Failed", "1.2.3.4", None, false),
            false,
            false,
        ),
        (
            "Succeeded pod with Never RestartPolicy",
            pod(Some("Never"), "Succeeded", "1.2.3.4", None, false),
            false,
            false,
        ),
        (
            "Succeeded pod with OnFailure RestartPolicy",
            pod(Some("OnFailure"), "Succeeded", "1.2.3.4", None, false),
            false,
            false,
        ),
        (
            "Empty Pod IPs, Running pod with OnFailure RestartPolicy",
            pod(Some("Never"), "Running", "", Some(vec![]), false),
            false,
            false,
        ),
        (
            "Terminating Pod with includeTerminating=false",
            pod(None, "Running", "1.2.3.4", None, true),
            false,
            false,
        ),
        (
            "Failed pod with Always RestartPolicy",
            pod(Some("Always"), "Failed", "1.2.3.4", None, false),
            false,
            false,
        ),
        // Pod should be in endpoints:
        (
            "Pending pod with Never RestartPolicy",
            pod(Some("Never"), "Pending", "1.2.3.4", None, false),
            false,
            true,
        ),
        (
            "Unknown pod with OnFailure RestartPolicy",
            pod(Some("OnFailure"), "Unknown", "1.2.3.4", None, false),
            false,
            true,
        ),
        (
            "Running pod with Never RestartPolicy",
            pod(Some("Never"), "Running", "1.2.3.4", None, false),
            false,
            true,
        ),
        (
            "Multiple Pod IPs, Running pod with OnFailure RestartPolicy",
            pod(
                Some("Never"),
                "Running",
                "",
                Some(vec!["1.2.3.4", "1234::5678:0000:0000:9abc:def0"]),
                false,
            ),
            false,
            true,
        ),
        (
            "Terminating Pod with includeTerminating=true",
            pod(None, "Running", "1.2.3.4", None, true),
            true,
            true,
        ),
    ];
    for (name, p, include_terminating, want) in cases {
        assert_eq!(
            should_pod_be_in_endpoints(&p, include_terminating),
            want,
            "{name}"
        );
    }
}

#[test]
fn should_set_hostname_table() {
    let gen_pod = |ns: &str, hostname: &str, subdomain: &str| Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            hostname: Some(hostname.into()),
            subdomain: Some(subdomain.into()),
            ..Default::default()
        }),
        status: None,
    };
    let gen_svc = |ns: &str, name: &str| svc(ns, name, ServiceSpec::default());
    let cases = [
        (
            "all matching",
            gen_pod("ns", "foo", "svc-name"),
            gen_svc("ns", "svc-name"),
            true,
        ),
        (
            "all matching, hostname not set",
            gen_pod("ns", "", "svc-name"),
            gen_svc("ns", "svc-name"),
            false,
        ),
        (
            "all set, different name/subdomain",
            gen_pod("ns", "hostname", "subdomain"),
            gen_svc("ns", "name"),
            false,
        ),
        (
            "all set, different namespace",
            gen_pod("ns1", "hostname", "svc-name"),
            gen_svc("ns2", "svc-name"),
            false,
        ),
    ];
    for (name, p, s, want) in cases {
        assert_eq!(should_set_hostname(&p, &s), want, "{name}");
    }
}

#[test]
fn get_pod_services_to_update() {
    let services: Vec<Service> = (0..3)
        .map(|i| {
            svc(
                "test",
                &format!("service-{i}"),
                ServiceSpec {
                    selector: selector(&[("app", &format!("test-{i}"))]),
                    ..Default::default()
                },
            )
        })
        .collect();
    let refs: Vec<&Service> = services.iter().collect();
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    let expect = [
        set(&["service-0"]),
        set(&["service-1"]),
        set(&["service-2"]),
        set(&[]),
        set(&[]),
    ];
    for (i, want) in expect.into_iter().enumerate() {
        let l = labels(&[
            ("app", &format!("test-{i}")),
            ("label", &format!("label-{i}")),
        ]);
        assert_eq!(
            services_for_pod(&refs, "test", Some(&l)),
            want,
            "get servicesMemberships for pod-{i}"
        );
    }
    // Another namespace's pod is no member; a Service without a selector has none.
    let l = labels(&[("app", "test-0")]);
    assert_eq!(services_for_pod(&refs, "other", Some(&l)), set(&[]));
    let no_selector = svc("test", "none", ServiceSpec::default());
    assert_eq!(
        services_for_pod(&[&no_selector], "test", Some(&l)),
        set(&[])
    );
}

#[test]
fn pod_changed() {
    let orig = Pod {
        metadata: ObjectMeta {
            namespace: Some("test".into()),
            name: Some("pod".into()),
            labels: Some(labels(&[("foo", "bar")])),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "False".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };
    let ips = |p: &mut Pod, v: &[&str]| {
        let st = p.status.as_mut().unwrap();
        st.pod_ip = v.first().map(|s| s.to_string());
        st.pod_ips = Some(v.iter().map(|ip| PodIP { ip: ip.to_string() }).collect());
    };
    type Modifier = Box<dyn Fn(&mut Pod, &mut Pod)>;
    let cases: Vec<(&str, Modifier, bool, bool)> = vec![
        ("no changes", Box::new(|_, _| {}), false, false),
        (
            "change NodeName",
            Box::new(|_, n| n.spec.as_mut().unwrap().node_name = Some("changed".into())),
            false,
            false,
        ),
        (
            "change ResourceVersion",
            Box::new(|_, n| n.metadata.resource_version = Some("changed".into())),
            false,
            false,
        ),
        (
            "add primary IPv4",
            Box::new(move |_, n| ips(n, &["1.2.3.4"])),
            true,
            false,
        ),
        (
            "modify primary IPv4",
            Box::new(move |o, n| {
                ips(o, &["1.2.3.4"]);
                ips(n, &["2.3.4.5"])
            }),
            true,
            false,
        ),
        (
            "add primary IPv6",
            Box::new(move |_, n| ips(n, &["fd00:10:96::1"])),
            true,
            false,
        ),
        (
            "modify primary IPv6",
            Box::new(move |o, n| {
                ips(o, &["fd00:10:96::1"]);
                ips(n, &["fd00:10:96::2"])
            }),
            true,
            false,
        ),
        (
            "add secondary IP",
            Box::new(move |o, n| {
                ips(o, &["1.2.3.4"]);
                ips(n, &["1.2.3.4", "fd00:10:96::1"])
            }),
            true,
            false,
        ),
        (
            "modify secondary IP",
            Box::new(move |o, n| {
                ips(o, &["1.2.3.4", "fd00:10:96::1"]);
                ips(n, &["1.2.3.4", "fd00:10:96::2"])
            }),
            true,
            false,
        ),
        (
            "remove secondary IP",
            Box::new(move |o, n| {
                ips(o, &["1.2.3.4", "fd00:10:96::1"]);
                ips(n, &["1.2.3.4"])
            }),
            true,
            false,
        ),
        (
            "change readiness",
            Box::new(|_, n| {
                n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into()
            }),
            true,
            false,
        ),
        (
            "mark for deletion",
            Box::new(|_, n| n.metadata.deletion_timestamp = Some(Time(Timestamp::now()))),
            true,
            false,
        ),
        (
            "add label",
            Box::new(|_, n| {
                n.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("label".into(), "new".into());
            }),
            false,
            true,
        ),
        (
            "modify label",
            Box::new(|o, n| {
                o.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("label".into(), "old".into());
                n.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("label".into(), "new".into());
            }),
            false,
            true,
        ),
        (
            "remove label",
            Box::new(|o, _| {
                o.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("label".into(), "old".into());
            }),
            false,
            true,
        ),
        (
            "change hostname (rekube: upstream counts it with the labels)",
            Box::new(|_, n| n.spec.as_mut().unwrap().hostname = Some("web-0".into())),
            false,
            true,
        ),
    ];
    for (name, modifier, want_pod, want_labels) in cases {
        let mut old = orig.clone();
        let mut new = old.clone();
        modifier(&mut old, &mut new);
        assert_eq!(
            pod_endpoints_changed(&old, &new),
            (want_pod, want_labels),
            "{name}"
        );
    }
}

#[test]
fn services_to_update_on_pod_change() {
    let s0 = svc(
        "test",
        "s0",
        ServiceSpec {
            selector: selector(&[("app", "a")]),
            ..Default::default()
        },
    );
    let s1 = svc(
        "test",
        "s1",
        ServiceSpec {
            selector: selector(&[("app", "b")]),
            ..Default::default()
        },
    );
    let all = [&s0, &s1];
    let mut old = test_pod("test", 0, 0, false, IPV4ONLY);
    old.metadata.labels = Some(labels(&[("app", "a")]));
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    // A resync (same resourceVersion) concerns nobody.
    assert_eq!(services_to_update(&all, &old, &old.clone()), set(&[]));
    // Readiness: the Services selecting it.
    let mut ready = old.clone();
    ready.metadata.resource_version = Some("2".into());
    ready.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
    assert_eq!(services_to_update(&all, &old, &ready), set(&["s0"]));
    // Labels moved it from s0 to s1: both.
    let mut moved = old.clone();
    moved.metadata.resource_version = Some("3".into());
    moved.metadata.labels = Some(labels(&[("app", "b")]));
    assert_eq!(services_to_update(&all, &old, &moved), set(&["s0", "s1"]));
    // An annotation only: nobody.
    let mut annotated = old.clone();
    annotated.metadata.resource_version = Some("4".into());
    annotated.metadata.annotations = Some(labels(&[("x", "y")]));
    assert_eq!(services_to_update(&all, &old, &annotated), set(&[]));
}

// --- k8s.io/endpointslice utils_test.go ---

#[test]
fn find_port_table() {
    let cp = |name: &str, port: i32, protocol: &str| ContainerPort {
        name: (!name.is_empty()).then(|| name.to_string()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let ctr = |ports: Vec<ContainerPort>| Container {
        ports: Some(ports),
        ..Default::default()
    };
    let mut host_port = cp("a", 11, "TCP");
    host_port.host_port = Some(81);
    let mut bad_host_port = cp("a", 11, "TCP");
    bad_host_port.host_port = Some(-1);
    let mut host_ip = cp("a", 11, "TCP");
    host_ip.host_ip = Some("192.168.1.1".into());
    let three = || vec![cp("", 11, "UDP"), cp("p", 22, "TCP"), cp("q", 33, "TCP")];
    let cases: Vec<(&str, Vec<Container>, IntOrString, i32, bool)> = vec![
        (
            "valid int, no ports",
            vec![Container::default()],
            IntOrString::Int(93),
            93,
            true,
        ),
        (
            "valid int, with ports",
            vec![ctr(vec![cp("", 11, "TCP"), cp("p", 22, "TCP")])],
            IntOrString::Int(93),
            93,
            true,
        ),
        (
            "valid str, no ports",
            vec![Container::default()],
            IntOrString::String("p".into()),
            0,
            false,
        ),
        (
            "valid str, one ctr with ports",
            vec![ctr(three())],
            IntOrString::String("q".into()),
            33,
            true,
        ),
        (
            "valid str, two ctr with ports",
            vec![Container::default(), ctr(three())],
            IntOrString::String("q".into()),
            33,
            true,
        ),
        (
            "valid str, two ctr with same port",
            vec![
                Container::default(),
                ctr(vec![
                    cp("", 11, "UDP"),
                    cp("p", 22, "TCP"),
                    cp("q", 22, "TCP"),
                ]),
            ],
            IntOrString::String("q".into()),
            22,
            true,
        ),
        (
            "valid str, invalid protocol",
            vec![Container::default(), ctr(vec![cp("a", 11, "snmp")])],
            IntOrString::String("a".into()),
            0,
            false,
        ),
        (
            "valid hostPort",
            vec![Container::default(), ctr(vec![host_port])],
            IntOrString::String("a".into()),
            11,
            true,
        ),
        // "this should fail but passes" (upstream)
        (
            "invalid hostPort",
            vec![Container::default(), ctr(vec![bad_host_port])],
            IntOrString::String("a".into()),
            11,
            true,
        ),
        (
            "invalid ContainerPort",
            vec![Container::default(), ctr(vec![cp("a", -1, "TCP")])],
            IntOrString::String("a".into()),
            -1,
            true,
        ),
        (
            "HostIP Address",
            vec![Container::default(), ctr(vec![host_ip])],
            IntOrString::String("a".into()),
            11,
            true,
        ),
    ];
    for (name, containers, port, want, pass) in cases {
        let pod = Pod {
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        };
        let sp = ServicePort {
            protocol: Some("TCP".into()),
            target_port: Some(port),
            ..Default::default()
        };
        let got = find_port(&pod, &sp);
        assert_eq!(got.is_ok(), pass, "{name}: {got:?}");
        assert_eq!(got.unwrap_or(0), want, "{name}");
    }
}

#[test]
fn find_port_sidecars() {
    // The rest of upstream's TestFindPort (k8s.io/endpointslice v0.36.3): named ports of
    // sidecars (restartable init containers), after the containers.
    let port = |p: i32| ContainerPort {
        name: Some("a".into()),
        container_port: p,
        host_port: Some(-1),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let init = |restart: Option<&str>, p: i32| Container {
        restart_policy: restart.map(str::to_owned),
        ports: Some(vec![port(p)]),
        ..Default::default()
    };
    let ctr = |p: i32| Container {
        ports: Some(vec![port(p)]),
        ..Default::default()
    };
    type Case = (&'static str, Vec<Container>, Vec<Container>, i32, bool);
    let cases: Vec<Case> = vec![
        (
            "Sidecar initContainer named port",
            vec![init(Some("Always"), 80)],
            vec![],
            80,
            true,
        ),
        (
            "Invalid(restartPolicy != Always) initContainer named port",
            vec![init(None, 80)],
            vec![],
            0,
            false,
        ),
        (
            "App and sidecar containers have the same named port, first app container port will be used",
            vec![init(Some("Always"), 80)],
            vec![ctr(81), ctr(82)],
            81,
            true,
        ),
    ];
    for (name, init_containers, containers, want, pass) in cases {
        let pod = Pod {
            spec: Some(PodSpec {
                init_containers: Some(init_containers),
                containers,
                ..Default::default()
            }),
            ..Default::default()
        };
        let sp = ServicePort {
            protocol: Some("TCP".into()),
            target_port: Some(IntOrString::String("a".into())),
            ..Default::default()
        };
        let got = find_port(&pod, &sp);
        assert_eq!(got.is_ok(), pass, "{name}: {got:?}");
        assert_eq!(got.unwrap_or(0), want, "{name}");
    }
    let pod = Pod::default();
    let sp = ServicePort {
        target_port: Some(IntOrString::String("a".into())),
        ..Default::default()
    };
    assert_eq!(
        find_port(&pod, &sp).unwrap_err().to_string(),
        "no suitable port for manifest: "
    );
}

#[test]
fn sync_endpoints_protocol_multi_protocol_same_port() {
    let ns = "other";
    let mut ep = existing(ns, vec![]);
    ep.subsets = None;
    let mut store = vec![];
    add_pods(&mut store, ns, 1, 1, 0, IPV4ONLY);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[]),
            ports: Some(vec![sport(80, 8080, "TCP"), sport(80, 8080, "UDP")]),
            ..Default::default()
        },
    );
    // Upstream's body, in its order: UDP before TCP (the md5 order of SortSubsets).
    let got = sync(&s, &store, Some(&ep));
    let Sync::Update(e) = &got else {
        panic!("want an update, got {got:?}")
    };
    assert_eq!(
        e.subsets.as_ref().unwrap()[0].ports,
        Some(vec![eport(8080, Some("UDP")), eport(8080, Some("TCP"))])
    );
    assert_update(
        got,
        expect_sent(
            Some("1"),
            &[HEADLESS],
            &[],
            vec![subset(
                vec![addr("1.2.3.4", "pod0", ns)],
                vec![],
                vec![eport(8080, Some("UDP")), eport(8080, Some("TCP"))],
            )],
        ),
    );
}

#[test]
fn sync_endpoints_items_preexisting_identical_unsorted() {
    let ns = "default";
    let pod0 = test_pod(ns, 0, 1, true, IPV4ONLY);
    let pod1 = test_pod(ns, 1, 1, true, IPV4ONLY);
    // Known not to be packed as the current hash would pack them.
    let subsets = vec![subset(
        vec![addr("1.2.3.5", "pod1", ns), addr("1.2.3.4", "pod0", ns)],
        vec![],
        vec![eport(8080, Some("TCP"))],
    )];
    assert_ne!(
        super::super::repack::repack_subsets(&subsets),
        subsets,
        "subsets were already in sorted order"
    );
    let ep = managed(existing(ns, subsets), &[]);
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    // Syncing is a no-op.
    assert_eq!(sync(&s, &[pod0, pod1], Some(&ep)), Sync::UpToDate);
}

#[test]
fn sync_endpoints_add_delete_ports() {
    let mut s = svc(
        "ns",
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            type_: Some("ClusterIP".into()),
            cluster_ip: Some("1.1.1.1".into()),
            ports: Some(vec![ServicePort {
                name: Some("portname1".into()),
                port: 80,
                target_port: Some(IntOrString::String("svc1".into())),
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    let pod = |name: &str, ip: &str, port_name: &str, port: i32| Pod {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            labels: Some(labels(&[("foo", "bar")])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                ports: Some(vec![ContainerPort {
                    name: Some(port_name.into()),
                    container_port: port,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            ..Default::default()
        }),
    };
    let mut ep = managed(existing("ns", vec![]), &[]);
    ep.metadata.annotations = Some(BTreeMap::new());
    let address = |ip: &str, name: &str| EndpointAddress {
        ip: ip.into(),
        node_name: Some(String::new()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            ..Default::default()
        }),
        hostname: None,
    };
    let named_port = |name: &str, p: i32| EndpointPort {
        name: Some(name.into()),
        port: p,
        ..Default::default()
    };
    // The fake client: what was written is what the next sync finds.
    let write = |got: Sync, ep: &mut Endpoints| match got {
        Sync::Update(e) => *ep = e,
        other => panic!("want an update, got {other:?}"),
    };
    let mut store = vec![pod("pod1", "10.1.1.1", "svc1", 100)];
    write(sync(&s, &store, Some(&ep)), &mut ep);
    let first = EndpointSubset {
        addresses: Some(vec![address("10.1.1.1", "pod1")]),
        not_ready_addresses: None,
        ports: Some(vec![named_port("portname1", 100)]),
    };
    assert_eq!(
        ep.subsets,
        Some(vec![first.clone()]),
        "after adding first pod"
    );

    // Another port, and another pod offering it.
    s.spec
        .as_mut()
        .unwrap()
        .ports
        .as_mut()
        .unwrap()
        .push(ServicePort {
            name: Some("portname2".into()),
            port: 81,
            target_port: Some(IntOrString::String("svc2".into())),
            ..Default::default()
        });
    store.push(pod("pod2", "10.1.1.2", "svc2", 101));
    write(sync(&s, &store, Some(&ep)), &mut ep);
    let second = EndpointSubset {
        addresses: Some(vec![address("10.1.1.2", "pod2")]),
        not_ready_addresses: None,
        ports: Some(vec![named_port("portname2", 101)]),
    };
    let both = super::super::repack::repack_subsets(&[first.clone(), second.clone()]);
    assert_eq!(ep.subsets.as_ref(), Some(&both), "after adding second pod");

    // The first port deleted: what is left is the second pod's subset (upstream keeps
    // `Subsets[:1]` of the repacked pair, which is that one).
    s.spec.as_mut().unwrap().ports.as_mut().unwrap().remove(0);
    write(sync(&s, &store, Some(&ep)), &mut ep);
    assert_eq!(
        ep.subsets,
        Some(vec![both[0].clone()]),
        "after deleting first port"
    );
    assert_eq!(both[0], second);
    assert_eq!(
        ep.metadata.labels,
        Some(labels(&[(LABEL_MANAGED_BY, CONTROLLER_NAME)]))
    );
}

#[test]
fn pod_to_endpoint_address_for_service_empty_ip_families() {
    // (name, clusterIP, podIPs, podIP, want an error, want IPv6)
    let cases = [
        (
            "headful IPv4, IPv4 pod",
            "10.0.0.1",
            vec!["10.244.0.1"],
            "",
            false,
            false,
        ),
        (
            "headful IPv6, IPv6 pod",
            "fd00::1",
            vec!["fd00::10"],
            "",
            false,
            true,
        ),
        (
            "headful IPv4, no matching pod IP",
            "10.0.0.1",
            vec!["fd00::10"],
            "",
            true,
            false,
        ),
        (
            "headless, IPv4 pod",
            "None",
            vec!["10.244.0.1"],
            "10.244.0.1",
            false,
            false,
        ),
        (
            "headless, IPv6 pod",
            "None",
            vec!["fd00::10"],
            "fd00::10",
            false,
            true,
        ),
    ];
    for (name, cluster_ip, pod_ips_, pod_ip_, want_err, want_v6) in cases {
        // Intentionally no IPFamilies.
        let service = Service {
            metadata: ObjectMeta {
                name: Some("foo".into()),
                namespace: Some("bar".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ..Default::default()
            }),
            status: None,
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("foo-pod".into()),
                namespace: Some("bar".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(pod_ip_.into()),
                pod_ips: Some(
                    pod_ips_
                        .iter()
                        .map(|ip| PodIP { ip: ip.to_string() })
                        .collect(),
                ),
                ..Default::default()
            }),
        };
        match pod_to_endpoint_address_for_service(&service, &pod) {
            Err(e) => assert!(want_err, "{name}: unexpected error {e}"),
            Ok(a) => {
                assert!(!want_err, "{name}: want an error, got {a:?}");
                assert_eq!(is_ipv6(&a.ip), want_v6, "{name}: {}", a.ip);
            }
        }
    }
}

#[test]
fn pod_ips_are_written_in_canonical_form() {
    // upstream parses pod IPs sloppily (leading zeros) and writes them as Go prints them.
    let cases = [
        ("010.001.002.003", Some("10.1.2.3")),
        ("2000:0:0::0a", Some("2000::a")),
        ("::ffff:1.2.3.4", Some("1.2.3.4")),
        ("1.2.3", None),
        ("not-an-ip", None),
    ];
    for (given, want) in cases {
        assert_eq!(
            parse_ip_sloppy(given).map(|ip| ip.to_string()).as_deref(),
            want,
            "{given}"
        );
    }
}

#[test]
fn labels_correct_for_endpoints_table() {
    let m = (LABEL_MANAGED_BY, CONTROLLER_NAME);
    let cases = [
        (
            "no managed-by label",
            labels(&[("a", "b")]),
            labels(&[("a", "b")]),
            false,
        ),
        (
            "another manager",
            labels(&[(LABEL_MANAGED_BY, "someone"), ("a", "b")]),
            labels(&[("a", "b")]),
            false,
        ),
        (
            "the service's labels",
            labels(&[m, ("a", "b")]),
            labels(&[("a", "b")]),
            true,
        ),
        (
            "headless label aside",
            labels(&[m, HEADLESS, ("a", "b")]),
            labels(&[("a", "b")]),
            true,
        ),
        (
            "a label the service lacks",
            labels(&[m, ("a", "b"), ("c", "d")]),
            labels(&[("a", "b")]),
            false,
        ),
        (
            "a service label missing",
            labels(&[m]),
            labels(&[("a", "b")]),
            false,
        ),
        (
            "a different value",
            labels(&[m, ("a", "x")]),
            labels(&[("a", "b")]),
            false,
        ),
    ];
    for (name, ep, svc_labels, want) in cases {
        assert_eq!(
            labels_correct_for_endpoints(&ep, &svc_labels),
            want,
            "{name}"
        );
    }
}

#[test]
fn named_ports_resolve_per_pod() {
    // Two pods naming "http" differently: one subset per port number, each pod in its own;
    // a pod without the name is left out.
    let ns = "default";
    let mk = |id: usize, name: &str, port: i32| {
        let mut p = test_pod(ns, id, 0, true, IPV4ONLY);
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
            name: Some(name.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
        p
    };
    let store = vec![
        mk(0, "http", 8080),
        mk(1, "http", 9090),
        mk(2, "other", 7070),
    ];
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: Some(vec![ServicePort {
                name: Some("web".into()),
                port: 80,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    let web = |p: i32| EndpointPort {
        name: Some("web".into()),
        ..eport(p, Some("TCP"))
    };
    assert_create(
        sync(&s, &store, None),
        expect_sent(
            None,
            &[HEADLESS],
            &[],
            sorted(vec![
                subset(vec![addr("1.2.3.4", "pod0", ns)], vec![], vec![web(8080)]),
                subset(vec![addr("1.2.3.5", "pod1", ns)], vec![], vec![web(9090)]),
            ]),
        ),
    );
}

#[test]
fn hostname_is_set_for_the_pods_subdomain() {
    let ns = "default";
    let mut p = test_pod(ns, 0, 1, true, IPV4ONLY);
    let spec = p.spec.as_mut().unwrap();
    spec.hostname = Some("web-0".into());
    spec.subdomain = Some("foo".into());
    let s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            cluster_ip: Some("None".into()),
            ports: Some(vec![tcp(80, 8080)]),
            ..Default::default()
        },
    );
    let Sync::Create(e) = sync(&s, &[p], None) else {
        panic!("want a create")
    };
    let a = &e.subsets.unwrap()[0].addresses.clone().unwrap()[0];
    assert_eq!(a.hostname.as_deref(), Some("web-0"));
}

#[test]
fn no_op_after_own_write() {
    // What the controller wrote, read back, is up to date: no second write.
    let ns = "other";
    let mut store = vec![];
    add_pods(&mut store, ns, 3, 2, 2, IPV4ONLY);
    let mut s = svc(
        ns,
        "foo",
        ServiceSpec {
            selector: selector(&[("foo", "bar")]),
            ports: two_named_ports(),
            ..Default::default()
        },
    );
    s.metadata.creation_timestamp = Some(Time(trigger_time()));
    let Sync::Create(mut e) = sync(&s, &store, None) else {
        panic!("want a create")
    };
    e.metadata.resource_version = Some("7".into());
    assert_eq!(sync(&s, &store, Some(&e)), Sync::UpToDate);
}
