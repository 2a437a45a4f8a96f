//! The canonical layout of an Endpoints' subsets (upstream pkg/api/v1/endpoints/util.go):
//! [`repack_subsets`] expands subsets to (address, port, ready) and packs them again, one
//! subset per set of addresses offering the same ports; [`sort_subsets`] orders them.
//!
//! Upstream orders addresses by IP then pod UID (`LessEndpointAddress`), and ports and
//! subsets by the md5 of their `DeepHashObject` printing (go-spew's `%#v` as
//! k8s.io/utils/dump.ForHash configures it): an arbitrary but fixed order. [`for_hash_port`]
//! and [`for_hash_subset`] print the same text, so rekube's Endpoints list their ports and
//! subsets in upstream's order (checked against Go's output in the tests).
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ObjectReference};
use md5::{Digest, Md5};

/// An EndpointPort as a map key (upstream keys a Go map by the struct itself).
type PortKey = (Option<String>, i32, Option<String>, Option<String>);

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone(),
        p.port,
        p.protocol.clone(),
        p.app_protocol.clone(),
    )
}

fn port_of(k: &PortKey) -> EndpointPort {
    EndpointPort {
        name: k.0.clone(),
        port: k.1,
        protocol: k.2.clone(),
        app_protocol: k.3.clone(),
    }
}

/// upstream's sentinel for subsets without ports, so their addresses are not discarded.
fn sentinel() -> PortKey {
    (None, -1, None, None)
}

fn uid(a: &EndpointAddress) -> Option<&str> {
    a.target_ref
        .as_ref()
        .map(|r| r.uid.as_deref().unwrap_or(""))
}

/// upstream LessEndpointAddress: by IP (bytes), then an address without a targetRef
/// first, then by the targetRef's UID.
pub fn cmp_endpoint_address(a: &EndpointAddress, b: &EndpointAddress) -> Ordering {
    a.ip.as_bytes()
        .cmp(b.ip.as_bytes())
        .then_with(|| uid(a).cmp(&uid(b)))
}

/// upstream RepackSubsets: every (address, port) pair regrouped so that each subset holds
/// the addresses offering exactly its ports. Addresses are de-duplicated by (IP, UID), the
/// first one seen kept; an address both ready and not ready for a port is not ready. Ports
/// numbered 0 or below are dropped; addresses of subsets without ports are kept, in a
/// subset without ports. The result is sorted ([`sort_subsets`]).
pub fn repack_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut all_addrs: Vec<EndpointAddress> = Vec::new();
    let mut index: HashMap<(String, Option<String>), usize> = HashMap::new();
    // port → address index → ready
    let mut port_to_addr_ready: BTreeMap<PortKey, BTreeMap<usize, bool>> = BTreeMap::new();
    let mut map_address_by_port = |addr: &EndpointAddress, port: &PortKey, ready: bool| {
        let key = (addr.ip.clone(), uid(addr).map(str::to_owned));
        let i = *index.entry(key).or_insert_with(|| {
            all_addrs.push(addr.clone());
            all_addrs.len() - 1
        });
        let set = port_to_addr_ready.entry(port.clone()).or_default();
        // Not ready always trumps ready.
        match set.get(&i) {
            Some(false) => {}
            _ => {
                set.insert(i, ready);
            }
        }
    };
    for subset in subsets {
        let ports: Vec<PortKey> = match subset.ports.as_deref() {
            None | Some([]) => vec![sentinel()],
            Some(ports) => ports.iter().map(port_key).collect(),
        };
        for port in &ports {
            for a in subset.addresses.iter().flatten() {
                map_address_by_port(a, port, true);
            }
            for a in subset.not_ready_addresses.iter().flatten() {
                map_address_by_port(a, port, false);
            }
        }
    }
    // The sets of addresses, each with the ports they offer.
    let mut addrs_to_ports: BTreeMap<Vec<(usize, bool)>, Vec<PortKey>> = BTreeMap::new();
    for (port, addrs) in port_to_addr_ready {
        let key: Vec<(usize, bool)> = addrs.into_iter().collect();
        let ports = addrs_to_ports.entry(key).or_default();
        // Sentinels (and ports numbered 0 or below) only make the set present.
        if port.1 > 0 {
            ports.push(port);
        }
    }
    let mut out: Vec<EndpointSubset> = addrs_to_ports
        .into_iter()
        .map(|(addrs, ports)| {
            let pick = |ready: bool| -> Option<Vec<EndpointAddress>> {
                let v: Vec<EndpointAddress> = addrs
                    .iter()
                    .filter(|(_, r)| *r == ready)
                    .map(|(i, _)| all_addrs[*i].clone())
                    .collect();
                (!v.is_empty()).then_some(v)
            };
            EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: (!ports.is_empty()).then(|| ports.iter().map(port_of).collect()),
            }
        })
        .collect();
    sort_subsets(&mut out);
    out
}

/// upstream SortSubsets: each subset's addresses by IP and UID and its ports by hash, then
/// the subsets by hash (`portsByHash`, `subsetsByHash`).
pub fn sort_subsets(subsets: &mut [EndpointSubset]) {
    for s in subsets.iter_mut() {
        if let Some(a) = s.addresses.as_mut() {
            a.sort_by(cmp_endpoint_address);
        }
        if let Some(a) = s.not_ready_addresses.as_mut() {
            a.sort_by(cmp_endpoint_address);
        }
        if let Some(p) = s.ports.as_mut() {
            p.sort_by_cached_key(|p| md5_of(&format!("(v1.EndpointPort){}", for_hash_port(p))));
        }
    }
    subsets.sort_by_cached_key(|s| md5_of(&for_hash_subset(s)));
}

fn md5_of(s: &str) -> [u8; 16] {
    Md5::digest(s.as_bytes()).into()
}

/// go-spew's printing of a Go string field (unquoted) and of a `*string` (its value, or
/// `<nil>`).
fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or_default()
}

fn ptr(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("<nil>")
}

/// A v1.EndpointPort as dump.ForHash prints it inside a slice (no type prefix).
pub fn for_hash_port(p: &EndpointPort) -> String {
    format!(
        "{{Name:(string){} Port:(int32){} Protocol:(v1.Protocol){} AppProtocol:(*string){}}}",
        opt(&p.name),
        p.port,
        opt(&p.protocol),
        ptr(&p.app_protocol)
    )
}

fn for_hash_object_reference(r: &Option<ObjectReference>) -> String {
    match r {
        None => "<nil>".into(),
        Some(r) => format!(
            "{{Kind:(string){} Namespace:(string){} Name:(string){} UID:(types.UID){} APIVersion:(string){} ResourceVersion:(string){} FieldPath:(string){}}}",
            opt(&r.kind),
            opt(&r.namespace),
            opt(&r.name),
            opt(&r.uid),
            opt(&r.api_version),
            opt(&r.resource_version),
            opt(&r.field_path)
        ),
    }
}

fn for_hash_address(a: &EndpointAddress) -> String {
    format!(
        "{{IP:(string){} Hostname:(string){} NodeName:(*string){} TargetRef:(*v1.ObjectReference){}}}",
        a.ip,
        opt(&a.hostname),
        ptr(&a.node_name),
        for_hash_object_reference(&a.target_ref)
    )
}

/// A Go slice as go-spew prints it: `<nil>` when nil (rekube: `None`), else its elements
/// space-separated in brackets.
fn for_hash_slice<T>(items: &Option<Vec<T>>, each: impl Fn(&T) -> String) -> String {
    match items {
        None => "<nil>".into(),
        Some(v) => format!("[{}]", v.iter().map(each).collect::<Vec<_>>().join(" ")),
    }
}

/// A v1.EndpointSubset as dump.ForHash prints it (what upstream's subsetsByHash hashes).
pub fn for_hash_subset(s: &EndpointSubset) -> String {
    format!(
        "(v1.EndpointSubset){{Addresses:([]v1.EndpointAddress){} NotReadyAddresses:([]v1.EndpointAddress){} Ports:([]v1.EndpointPort){}}}",
        for_hash_slice(&s.addresses, for_hash_address),
        for_hash_slice(&s.not_ready_addresses, for_hash_address),
        for_hash_slice(&s.ports, for_hash_port)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;

    fn addr(ip: &str) -> EndpointAddress {
        EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        }
    }

    fn addr_ref(ip: &str, r: ObjectReference) -> EndpointAddress {
        EndpointAddress {
            ip: ip.into(),
            target_ref: Some(r),
            ..Default::default()
        }
    }

    /// upstream podRef(uid)
    fn pod_ref(uid: &str) -> ObjectReference {
        ObjectReference {
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    fn named(name: &str) -> ObjectReference {
        ObjectReference {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn port(p: i32) -> EndpointPort {
        EndpointPort {
            port: p,
            ..Default::default()
        }
    }

    fn ss(
        ready: Vec<EndpointAddress>,
        not_ready: Vec<EndpointAddress>,
        ports: Vec<EndpointPort>,
    ) -> EndpointSubset {
        EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        }
    }

    fn r(a: Vec<EndpointAddress>, p: Vec<EndpointPort>) -> EndpointSubset {
        ss(a, vec![], p)
    }

    fn nr(a: Vec<EndpointAddress>, p: Vec<EndpointPort>) -> EndpointSubset {
        ss(vec![], a, p)
    }

    // Port of util_test.go TestPackSubsets (v1.36: subsets without ports keep their
    // addresses, in a subset without ports).
    #[test]
    fn pack_subsets() {
        let cases: Vec<(&str, Vec<EndpointSubset>, Vec<EndpointSubset>)> = vec![
            (
                "empty everything",
                vec![EndpointSubset {
                    addresses: Some(vec![]),
                    ports: Some(vec![]),
                    ..Default::default()
                }],
                vec![],
            ),
            (
                "empty addresses",
                vec![EndpointSubset {
                    addresses: Some(vec![]),
                    ports: Some(vec![port(111)]),
                    ..Default::default()
                }],
                vec![],
            ),
            (
                "empty ports",
                vec![EndpointSubset {
                    addresses: Some(vec![addr("1.2.3.4")]),
                    ports: Some(vec![]),
                    ..Default::default()
                }],
                vec![r(vec![addr("1.2.3.4")], vec![])],
            ),
            (
                "empty ports (not ready)",
                vec![EndpointSubset {
                    not_ready_addresses: Some(vec![addr("1.2.3.4")]),
                    ports: Some(vec![]),
                    ..Default::default()
                }],
                vec![nr(vec![addr("1.2.3.4")], vec![])],
            ),
            (
                "one set, one ip, one port",
                vec![r(vec![addr("1.2.3.4")], vec![port(111)])],
                vec![r(vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "one set, one ip, one port (IPv6)",
                vec![r(vec![addr("beef::1:2:3:4")], vec![port(111)])],
                vec![r(vec![addr("beef::1:2:3:4")], vec![port(111)])],
            ),
            (
                "one set, one notReady ip, one port",
                vec![nr(vec![addr("1.2.3.4")], vec![port(111)])],
                vec![nr(vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "one set, one ip, one UID, one port",
                vec![r(
                    vec![addr_ref("1.2.3.4", pod_ref("uid-1"))],
                    vec![port(111)],
                )],
                vec![r(
                    vec![addr_ref("1.2.3.4", pod_ref("uid-1"))],
                    vec![port(111)],
                )],
            ),
            (
                "one set, one notReady ip, one UID, one port",
                vec![nr(
                    vec![addr_ref("1.2.3.4", pod_ref("uid-1"))],
                    vec![port(111)],
                )],
                vec![nr(
                    vec![addr_ref("1.2.3.4", pod_ref("uid-1"))],
                    vec![port(111)],
                )],
            ),
            (
                "one set, one ip, empty UID, one port",
                vec![r(vec![addr_ref("1.2.3.4", pod_ref(""))], vec![port(111)])],
                vec![r(vec![addr_ref("1.2.3.4", pod_ref(""))], vec![port(111)])],
            ),
            (
                "one set, one notReady ip, empty UID, one port",
                vec![nr(vec![addr_ref("1.2.3.4", pod_ref(""))], vec![port(111)])],
                vec![nr(vec![addr_ref("1.2.3.4", pod_ref(""))], vec![port(111)])],
            ),
            (
                "one set, two ips, one port",
                vec![r(vec![addr("1.2.3.4"), addr("5.6.7.8")], vec![port(111)])],
                vec![r(vec![addr("1.2.3.4"), addr("5.6.7.8")], vec![port(111)])],
            ),
            (
                "one set, two mixed ips, one port",
                vec![ss(
                    vec![addr("1.2.3.4")],
                    vec![addr("5.6.7.8")],
                    vec![port(111)],
                )],
                vec![ss(
                    vec![addr("1.2.3.4")],
                    vec![addr("5.6.7.8")],
                    vec![port(111)],
                )],
            ),
            (
                "one set, two duplicate ips, one port, notReady is covered by ready",
                vec![ss(
                    vec![addr("1.2.3.4")],
                    vec![addr("1.2.3.4")],
                    vec![port(111)],
                )],
                vec![nr(vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "one set, one ip, two ports",
                vec![r(vec![addr("1.2.3.4")], vec![port(111), port(222)])],
                vec![r(vec![addr("1.2.3.4")], vec![port(111), port(222)])],
            ),
            (
                "one set, dup ips, one port",
                vec![r(vec![addr("1.2.3.4"), addr("1.2.3.4")], vec![port(111)])],
                vec![r(vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "one set, dup ips, one port (IPv6)",
                vec![r(vec![addr("beef::1"), addr("beef::1")], vec![port(111)])],
                vec![r(vec![addr("beef::1")], vec![port(111)])],
            ),
            (
                "one set, dup ips with target-refs, one port",
                vec![r(
                    vec![
                        addr_ref("1.2.3.4", named("foo")),
                        addr_ref("1.2.3.4", named("bar")),
                    ],
                    vec![port(111)],
                )],
                vec![r(vec![addr_ref("1.2.3.4", named("foo"))], vec![port(111)])],
            ),
            (
                "one set, dup mixed ips with target-refs, one port",
                vec![ss(
                    vec![addr_ref("1.2.3.4", named("foo"))],
                    vec![addr_ref("1.2.3.4", named("bar"))],
                    vec![port(111)],
                )],
                // The first address seen is kept, with the not-ready state.
                vec![nr(vec![addr_ref("1.2.3.4", named("foo"))], vec![port(111)])],
            ),
            (
                "one set, one ip, dup ports",
                vec![r(vec![addr("1.2.3.4")], vec![port(111), port(111)])],
                vec![r(vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "two sets, dup ip, dup port",
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                ],
                vec![r(vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "two sets, dup mixed ip, dup port",
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    nr(vec![addr("1.2.3.4")], vec![port(111)]),
                ],
                vec![nr(vec![addr("1.2.3.4")], vec![port(111)])],
            ),
            (
                "two sets, dup ip, two ports",
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    r(vec![addr("1.2.3.4")], vec![port(222)]),
                ],
                vec![r(vec![addr("1.2.3.4")], vec![port(111), port(222)])],
            ),
            (
                "two sets, dup ip, dup uids, two ports",
                vec![
                    r(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(111)]),
                    r(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(222)]),
                ],
                vec![r(
                    vec![addr_ref("1.2.3.4", pod_ref("uid-1"))],
                    vec![port(111), port(222)],
                )],
            ),
            (
                "two sets, dup mixed ip, dup uids, two ports",
                vec![
                    r(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(111)]),
                    nr(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(222)]),
                ],
                vec![
                    r(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(111)]),
                    nr(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(222)]),
                ],
            ),
            (
                "two sets, two ips, dup port",
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    r(vec![addr("5.6.7.8")], vec![port(111)]),
                ],
                vec![r(vec![addr("1.2.3.4"), addr("5.6.7.8")], vec![port(111)])],
            ),
            (
                "two set, dup ip, two uids, dup ports",
                vec![
                    r(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(111)]),
                    r(vec![addr_ref("1.2.3.4", pod_ref("uid-2"))], vec![port(111)]),
                ],
                vec![r(
                    vec![
                        addr_ref("1.2.3.4", pod_ref("uid-1")),
                        addr_ref("1.2.3.4", pod_ref("uid-2")),
                    ],
                    vec![port(111)],
                )],
            ),
            (
                "two set, dup ip, with and without uid, dup ports",
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    r(vec![addr_ref("1.2.3.4", pod_ref("uid-2"))], vec![port(111)]),
                ],
                vec![r(
                    vec![addr("1.2.3.4"), addr_ref("1.2.3.4", pod_ref("uid-2"))],
                    vec![port(111)],
                )],
            ),
            (
                "two sets, two ips, two dup ip with uid, dup port, wrong order",
                vec![
                    r(vec![addr("5.6.7.8")], vec![port(111)]),
                    r(vec![addr_ref("5.6.7.8", pod_ref("uid-1"))], vec![port(111)]),
                    r(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(111)]),
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                ],
                vec![r(
                    vec![
                        addr("1.2.3.4"),
                        addr_ref("1.2.3.4", pod_ref("uid-1")),
                        addr("5.6.7.8"),
                        addr_ref("5.6.7.8", pod_ref("uid-1")),
                    ],
                    vec![port(111)],
                )],
            ),
            (
                "two sets, two mixed ips, two dup ip with uid, dup port, wrong order, ends up with split addresses",
                vec![
                    r(vec![addr("5.6.7.8")], vec![port(111)]),
                    nr(vec![addr_ref("5.6.7.8", pod_ref("uid-1"))], vec![port(111)]),
                    nr(vec![addr_ref("1.2.3.4", pod_ref("uid-1"))], vec![port(111)]),
                    nr(vec![addr("1.2.3.4")], vec![port(111)]),
                ],
                vec![ss(
                    vec![addr("5.6.7.8")],
                    vec![
                        addr("1.2.3.4"),
                        addr_ref("1.2.3.4", pod_ref("uid-1")),
                        addr_ref("5.6.7.8", pod_ref("uid-1")),
                    ],
                    vec![port(111)],
                )],
            ),
            (
                "two sets, two ips, two ports",
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    r(vec![addr("5.6.7.8")], vec![port(222)]),
                ],
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    r(vec![addr("5.6.7.8")], vec![port(222)]),
                ],
            ),
            (
                "four sets, three ips, three ports, jumbled",
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    r(vec![addr("1.2.3.5")], vec![port(222)]),
                    r(vec![addr("1.2.3.6")], vec![port(111)]),
                    r(vec![addr("1.2.3.5")], vec![port(333)]),
                ],
                vec![
                    r(vec![addr("1.2.3.4"), addr("1.2.3.6")], vec![port(111)]),
                    r(vec![addr("1.2.3.5")], vec![port(222), port(333)]),
                ],
            ),
            (
                "four sets, three mixed ips, three ports, jumbled",
                vec![
                    r(vec![addr("1.2.3.4")], vec![port(111)]),
                    nr(vec![addr("1.2.3.5")], vec![port(222)]),
                    r(vec![addr("1.2.3.6")], vec![port(111)]),
                    nr(vec![addr("1.2.3.5")], vec![port(333)]),
                ],
                vec![
                    r(vec![addr("1.2.3.4"), addr("1.2.3.6")], vec![port(111)]),
                    nr(vec![addr("1.2.3.5")], vec![port(222), port(333)]),
                ],
            ),
            (
                "ports numbered 0 are dropped",
                vec![r(vec![addr("1.2.3.4")], vec![port(0)])],
                vec![r(vec![addr("1.2.3.4")], vec![])],
            ),
        ];
        for (name, given, mut expect) in cases {
            sort_subsets(&mut expect);
            assert_eq!(repack_subsets(&given), expect, "{name}");
        }
    }

    fn hex(b: [u8; 16]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// dump.ForHash and md5 as Go prints them (a Go program over k8s.io/api v0.36.3 and
    /// k8s.io/utils/dump, the versions kube-controller-manager v1.36.3 is built with).
    #[test]
    fn for_hash_prints_like_go_spew() {
        let port0 = EndpointPort {
            name: Some("port0".into()),
            port: 8080,
            protocol: Some("TCP".into()),
            app_protocol: None,
        };
        let s = format!("(v1.EndpointPort){}", for_hash_port(&port0));
        assert_eq!(
            s,
            "(v1.EndpointPort){Name:(string)port0 Port:(int32)8080 Protocol:(v1.Protocol)TCP AppProtocol:(*string)<nil>}"
        );
        assert_eq!(hex(md5_of(&s)), "5e554ba40e2caf16971e32c750a131fd");
        let http = EndpointPort {
            port: 111,
            app_protocol: Some("http".into()),
            ..Default::default()
        };
        let s = format!("(v1.EndpointPort){}", for_hash_port(&http));
        assert_eq!(hex(md5_of(&s)), "f6fdd87adcb679f98808590121e84349");

        let pod = |name: &str, uid: Option<&str>| ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: uid.map(str::to_owned),
            ..Default::default()
        };
        let subset = EndpointSubset {
            addresses: Some(vec![
                EndpointAddress {
                    ip: "1.2.3.4".into(),
                    node_name: Some(String::new()),
                    hostname: Some("web-0".into()),
                    target_ref: Some(pod("pod0", Some("uid-0"))),
                },
                EndpointAddress {
                    ip: "1.2.3.6".into(),
                    node_name: Some(String::new()),
                    hostname: None,
                    target_ref: Some(pod("pod2", None)),
                },
            ]),
            not_ready_addresses: None,
            ports: Some(vec![EndpointPort {
                name: Some("web".into()),
                port: 8080,
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        };
        let s = for_hash_subset(&subset);
        assert_eq!(
            s,
            "(v1.EndpointSubset){Addresses:([]v1.EndpointAddress)[{IP:(string)1.2.3.4 Hostname:(string)web-0 NodeName:(*string) TargetRef:(*v1.ObjectReference){Kind:(string)Pod Namespace:(string)ns Name:(string)pod0 UID:(types.UID)uid-0 APIVersion:(string) ResourceVersion:(string) FieldPath:(string)}} {IP:(string)1.2.3.6 Hostname:(string) NodeName:(*string) TargetRef:(*v1.ObjectReference){Kind:(string)Pod Namespace:(string)ns Name:(string)pod2 UID:(types.UID) APIVersion:(string) ResourceVersion:(string) FieldPath:(string)}}] NotReadyAddresses:([]v1.EndpointAddress)<nil> Ports:([]v1.EndpointPort)[{Name:(string)web Port:(int32)8080 Protocol:(v1.Protocol)TCP AppProtocol:(*string)<nil>}]}"
        );
        assert_eq!(hex(md5_of(&s)), "c946d557ebbdad06c9022b6576d8def1");
        let not_ready = EndpointSubset {
            not_ready_addresses: Some(vec![addr("1.2.3.5")]),
            ..Default::default()
        };
        assert_eq!(
            hex(md5_of(&for_hash_subset(&not_ready))),
            "8beaec2a8c09cf606a23869032c2a734"
        );

        // Upstream's order follows: port0 (5e55…) before the http port (f6fd…), the
        // not-ready subset (8bea…) before the other (c946…).
        let mut ports = vec![http.clone(), port0.clone()];
        let mut two = [EndpointSubset {
            addresses: Some(vec![addr("9.9.9.9")]),
            ports: Some(ports.clone()),
            ..Default::default()
        }];
        sort_subsets(&mut two);
        ports.reverse();
        assert_eq!(two[0].ports.as_ref().unwrap(), &ports);
        let mut subsets = [subset.clone(), not_ready.clone()];
        sort_subsets(&mut subsets);
        assert_eq!(subsets, [not_ready, subset]);
    }

    #[test]
    fn addresses_sort_by_ip_then_uid() {
        let mut v = [
            addr_ref("1.2.3.5", pod_ref("a")),
            addr_ref("1.2.3.4", pod_ref("b")),
            addr("1.2.3.4"),
            addr_ref("1.2.3.4", pod_ref("a")),
        ];
        v.sort_by(cmp_endpoint_address);
        let got: Vec<(&str, Option<&str>)> = v.iter().map(|a| (a.ip.as_str(), uid(a))).collect();
        assert_eq!(
            got,
            vec![
                ("1.2.3.4", None),
                ("1.2.3.4", Some("a")),
                ("1.2.3.4", Some("b")),
                ("1.2.3.5", Some("a")),
            ]
        );
    }

    #[test]
    fn repacking_is_stable() {
        let given = vec![
            r(vec![addr("1.2.3.5")], vec![port(333)]),
            r(vec![addr("1.2.3.4")], vec![port(111)]),
            r(vec![addr("1.2.3.5")], vec![port(222)]),
        ];
        let once = repack_subsets(&given);
        assert_eq!(repack_subsets(&once), once);
        let mut reversed = given.clone();
        reversed.reverse();
        assert_eq!(repack_subsets(&reversed), once);
    }
}
