//! upstream pkg/controller/endpointslicemirroring reconciler_test.go's TestReconcile
//! (v1.36.3), ported: the number of slices and of writes, and upstream's
//! expectEndpointSlices checks (names, labels, annotations, each subset's addresses in
//! the slices of its ports, ready as the list says).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort as CorePort, EndpointSubset};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;

fn port(name: &str, port: i32, protocol: &str) -> CorePort {
    CorePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        app_protocol: None,
    }
}

fn address(ip: &str, hostname: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.into(),
        hostname: Some(hostname.into()),
        node_name: Some("node-1".into()),
        target_ref: None,
    }
}

fn subset(
    ports: Vec<CorePort>,
    ready: Vec<EndpointAddress>,
    not_ready: Vec<EndpointAddress>,
) -> EndpointSubset {
    EndpointSubset {
        ports: Some(ports),
        addresses: (!ready.is_empty()).then_some(ready),
        not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
    }
}

fn endpoints(subsets: Vec<EndpointSubset>) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            name: Some("test-ep".into()),
            namespace: Some("test".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        subsets: Some(subsets),
    }
}

/// upstream expectEndpointSlices.
fn expect_endpoint_slices(num: usize, max: usize, ep: &Endpoints, slices: &[EndpointSlice]) {
    assert_eq!(slices.len(), num, "{slices:#?}");
    for s in slices {
        let labels = s.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_SERVICE_NAME], "test-ep");
        assert_eq!(labels[LABEL_MANAGED_BY], CONTROLLER_NAME);
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key(LAST_APPLIED_CONFIG_ANNOTATION));
        assert!(!annotations.contains_key(ENDPOINTS_LAST_CHANGE_TRIGGER_TIME));
        for (k, v) in ep.metadata.annotations.iter().flatten() {
            if k != LAST_APPLIED_CONFIG_ANNOTATION && k != ENDPOINTS_LAST_CHANGE_TRIGGER_TIME {
                assert_eq!(annotations.get(k), Some(v), "annotation {k}");
            }
        }
    }
    for sub in repack_subsets(ep.subsets.as_deref().unwrap_or_default()) {
        let ports = ep_ports_to_eps_ports(sub.ports.as_deref().unwrap_or_default());
        let mut want: Vec<(String, bool)> = sub
            .addresses
            .iter()
            .flatten()
            .map(|a| (a, true))
            .chain(sub.not_ready_addresses.iter().flatten().map(|a| (a, false)))
            .filter_map(|(a, r)| parse_ip_sloppy(&a.ip).map(|ip| (ip.to_string(), r)))
            .collect();
        if want.is_empty() {
            continue;
        }
        let mut got: Vec<(String, bool)> = slices
            .iter()
            .filter(|s| {
                port_map_key(s.ports.as_deref().unwrap_or_default()) == port_map_key(&ports)
            })
            .flat_map(|s| {
                s.endpoints.iter().map(|e| {
                    (
                        e.addresses[0].clone(),
                        e.conditions.as_ref().unwrap().ready.unwrap(),
                    )
                })
            })
            .collect();
        assert!(!got.is_empty(), "no slice for the ports {ports:?}");
        want.truncate(max.max(1) * 2);
        got.sort();
        let mut all = want.clone();
        all.sort();
        for g in &got {
            assert!(all.contains(g), "{g:?} not in the subset {all:?}");
        }
    }
}

fn run(max: usize, ep: &Endpoints, existing: &[EndpointSlice]) -> (MirrorPlan, Vec<EndpointSlice>) {
    let r = Reconciler {
        max_endpoints_per_subset: max,
    };
    let refs: Vec<&EndpointSlice> = existing.iter().collect();
    let plan = r.reconcile(ep, &refs);
    let mut store: BTreeMap<String, EndpointSlice> = existing
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
        .collect();
    for (i, c) in plan.create.iter().enumerate() {
        let mut c = c.clone();
        let name = format!("{}gen{i}", c.metadata.generate_name.clone().unwrap());
        c.metadata.name = Some(name.clone());
        store.insert(name, c);
    }
    for u in &plan.update {
        assert!(
            u.metadata.resource_version.is_some(),
            "update without resourceVersion"
        );
        assert!(
            store
                .insert(u.metadata.name.clone().unwrap(), u.clone())
                .is_some()
        );
    }
    for d in &plan.delete {
        assert!(store.remove(d.metadata.name.as_ref().unwrap()).is_some());
    }
    (plan, store.into_values().collect())
}

fn writes(plan: &MirrorPlan) -> usize {
    plan.create.len() + plan.update.len() + plan.delete.len()
}

fn http() -> Vec<CorePort> {
    vec![port("http", 80, "TCP")]
}

fn existing_slice(ep: &Endpoints, name: &str, e: Vec<Endpoint>) -> EndpointSlice {
    let mut s = new_endpoint_slice(
        ep,
        &ep_ports_to_eps_ports(&http()),
        "IPv4",
        Some(name.into()),
    );
    s.metadata.resource_version = Some("1".into());
    s.endpoints = e;
    s
}

fn ready_endpoint(ip: &str, hostname: &str) -> Endpoint {
    address_to_endpoint(&address(ip, hostname), true).unwrap().0
}

#[test]
fn test_reconcile() {
    let max = DEFAULT_MAX_ENDPOINTS_PER_SUBSET;
    // Endpoints with no subsets / no addresses: nothing.
    for ep in [
        endpoints(vec![]),
        endpoints(vec![subset(http(), vec![], vec![])]),
    ] {
        let (plan, slices) = run(max, &ep, &[]);
        assert_eq!((writes(&plan), slices.len()), (0, 0));
    }
    // 1 subset, port and address: 1 create.
    let ep1 = endpoints(vec![subset(
        http(),
        vec![address("10.0.0.1", "pod-1")],
        vec![],
    )]);
    let (plan, slices) = run(max, &ep1, &[]);
    assert_eq!(writes(&plan), 1);
    expect_endpoint_slices(1, max, &ep1, &slices);
    let e = &slices[0].endpoints[0];
    assert_eq!(
        (e.hostname.as_deref(), e.node_name.as_deref()),
        (Some("pod-1"), Some("node-1"))
    );
    assert!(
        slices[0]
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("test-ep-")
    );
    // 2 subsets, different port and address: 2 creates.
    let ep = endpoints(vec![
        subset(http(), vec![address("10.0.0.1", "pod-1")], vec![]),
        subset(
            vec![port("https", 443, "TCP")],
            vec![address("10.0.0.2", "pod-2")],
            vec![],
        ),
    ]);
    let (plan, slices) = run(max, &ep, &[]);
    assert_eq!(writes(&plan), 2);
    expect_endpoint_slices(2, max, &ep, &slices);
    // 2 subsets, different address and same port: repacked into one slice.
    let ep = endpoints(vec![
        subset(http(), vec![address("10.0.0.1", "pod-1")], vec![]),
        subset(http(), vec![address("10.0.0.2", "pod-2")], vec![]),
    ]);
    let (plan, slices) = run(max, &ep, &[]);
    assert_eq!(writes(&plan), 1);
    expect_endpoint_slices(1, max, &ep, &slices);
    // Pending deletion: nothing created.
    let mut deleting = ep1.clone();
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    let (plan, slices) = run(max, &deleting, &[]);
    assert_eq!((writes(&plan), slices.len()), (0, 0));
    // An existing slice with the same fields: nothing.
    let same = existing_slice(&ep1, "test-ep-1", vec![ready_endpoint("10.0.0.1", "pod-1")]);
    let (plan, slices) = run(max, &ep1, std::slice::from_ref(&same));
    assert_eq!(writes(&plan), 0);
    assert_eq!(plan.unchanged.len(), 1);
    expect_endpoint_slices(1, max, &ep1, &slices);
    // ... but owned by an earlier Endpoints of the name (another UID): rewritten.
    let mut other_owner = same.clone();
    other_owner.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-0".into();
    let (plan, slices) = run(max, &ep1, &[other_owner]);
    assert_eq!(plan.update.len(), 1);
    assert_eq!(
        slices[0].metadata.owner_references.as_ref().unwrap()[0].uid,
        "uid-1"
    );
    // ... with an additional annotation: rewritten without it.
    let mut annotated = same.clone();
    annotated.metadata.annotations = Some([("foo".to_string(), "bar".to_string())].into());
    let (plan, slices) = run(max, &ep1, &[annotated]);
    assert_eq!(plan.update.len(), 1);
    assert!(
        slices[0]
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .is_empty()
    );
    // ... and the Endpoints with a label the slice lacks: rewritten with it.
    let mut labelled = ep1.clone();
    labelled.metadata.labels = Some([("foo".to_string(), "bar".to_string())].into());
    let (plan, slices) = run(max, &labelled, std::slice::from_ref(&same));
    assert_eq!(plan.update.len(), 1);
    assert_eq!(slices[0].metadata.labels.as_ref().unwrap()["foo"], "bar");
    // 1 subset, 2 ports, 2 ready and 2 not ready addresses: one slice, ready as listed.
    let ports = vec![port("http", 80, "TCP"), port("https", 443, "UDP")];
    let ep = endpoints(vec![subset(
        ports,
        vec![address("10.0.0.1", "pod-1"), address("10.0.0.2", "pod-2")],
        vec![
            address("10.0.0.11", "pod-11"),
            address("10.0.0.12", "pod-12"),
        ],
    )]);
    let (plan, slices) = run(max, &ep, &[]);
    assert_eq!(writes(&plan), 1);
    expect_endpoint_slices(1, max, &ep, &slices);
    let ready: BTreeMap<String, bool> = slices[0]
        .endpoints
        .iter()
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.conditions.as_ref().unwrap().ready.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ready,
        BTreeMap::from([
            ("10.0.0.1".into(), true),
            ("10.0.0.11".into(), false),
            ("10.0.0.12".into(), false),
            ("10.0.0.2".into(), true)
        ])
    );
    // 2 subsets, multiple ports, dual-stack addresses: a slice per port set and family.
    let ep = endpoints(vec![
        subset(
            http(),
            vec![
                address("10.0.0.1", "pod-1"),
                address("2001:db8::1", "pod-2"),
            ],
            vec![],
        ),
        subset(
            vec![port("https", 443, "TCP")],
            vec![
                address("10.0.0.3", "pod-3"),
                address("2001:db8::4", "pod-4"),
            ],
            vec![],
        ),
    ]);
    let (plan, slices) = run(max, &ep, &[]);
    assert_eq!(writes(&plan), 4);
    expect_endpoint_slices(4, max, &ep, &slices);
    // Some invalid addresses: skipped and counted.
    let ep = endpoints(vec![subset(
        http(),
        vec![
            address("10.0.0.1", "pod-1"),
            address("foo", "pod-2"),
            address("bar", "pod-3"),
        ],
        vec![],
    )]);
    let (plan, slices) = run(max, &ep, &[]);
    assert_eq!((plan.invalid_addresses, plan.addresses_skipped), (2, 2));
    assert_eq!(slices[0].endpoints.len(), 1);
    // All invalid: no slice.
    let ep = endpoints(vec![subset(http(), vec![address("foo", "pod-1")], vec![])]);
    let (plan, slices) = run(max, &ep, &[]);
    assert_eq!((plan.invalid_addresses, slices.len()), (1, 0));
    // 1 subset exceeding maxEndpointsPerSubset: the first ones, the rest skipped.
    let ep = endpoints(vec![subset(
        http(),
        (1..=4)
            .map(|i| address(&format!("10.0.0.{i}"), "p"))
            .collect(),
        (5..=6)
            .map(|i| address(&format!("10.0.0.{i}"), "p"))
            .collect(),
    )]);
    let (plan, slices) = run(2, &ep, &[]);
    assert_eq!((plan.addresses_skipped, plan.invalid_addresses), (4, 0));
    assert_eq!(slices[0].endpoints.len(), 2);
    // The last-applied configuration is not mirrored; other annotations are.
    let mut annotated = ep1.clone();
    annotated.metadata.annotations = Some(
        [
            (LAST_APPLIED_CONFIG_ANNOTATION.to_string(), "{}".to_string()),
            ("foo".to_string(), "bar".to_string()),
        ]
        .into(),
    );
    let (_, slices) = run(max, &annotated, &[]);
    expect_endpoint_slices(1, max, &annotated, &slices);
    // An existing slice carrying the last-applied configuration loses it.
    let mut with_last_applied = same.clone();
    with_last_applied.metadata.annotations =
        Some([(LAST_APPLIED_CONFIG_ANNOTATION.to_string(), "{}".to_string())].into());
    let (plan, slices) = run(max, &ep1, &[with_last_applied]);
    assert_eq!(plan.update.len(), 1);
    expect_endpoint_slices(1, max, &ep1, &slices);
}

// upstream TestRecycleSlices (reconciler_helpers_test.go): creates and deletes of one
// address type become updates; others stay.
#[test]
fn test_recycle_slices() {
    let ep = endpoints(vec![]);
    let slice = |name: Option<&str>, t: &str| {
        let mut s = new_endpoint_slice(&ep, &[], t, name.map(String::from));
        s.metadata.resource_version = name.map(|_| "1".to_string());
        s
    };
    let mut plan = MirrorPlan {
        create: vec![
            slice(None, "IPv4"),
            slice(None, "IPv6"),
            slice(None, "IPv4"),
        ],
        delete: vec![
            slice(Some("old-4"), "IPv4"),
            slice(Some("old-6a"), "IPv6"),
            slice(Some("old-6b"), "IPv6"),
        ],
        ..Default::default()
    };
    recycle_slices(&mut plan);
    let names = |v: &[EndpointSlice]| -> Vec<String> {
        v.iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(names(&plan.update), ["old-4", "old-6a"]);
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].address_type, "IPv4");
    assert_eq!(names(&plan.delete), ["old-6b"]);
}

// upstream TestShouldMirror (utils_test.go).
#[test]
fn test_should_mirror() {
    let mut ep = endpoints(vec![]);
    assert!(should_mirror(&ep));
    ep.metadata.labels = Some([(LABEL_SKIP_MIRROR.to_string(), "true".to_string())].into());
    assert!(!should_mirror(&ep));
    ep.metadata.labels = Some([(LABEL_SKIP_MIRROR.to_string(), "false".to_string())].into());
    assert!(should_mirror(&ep));
    ep.metadata.annotations = Some(
        [(
            crate::endpoint::endpoints::LEADER_ELECTION_RECORD_ANNOTATION_KEY.to_string(),
            String::new(),
        )]
        .into(),
    );
    assert!(!should_mirror(&ep));
}
