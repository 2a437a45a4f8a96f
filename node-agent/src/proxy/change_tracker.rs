//! Upstream's `ServiceChangeTracker` and `EndpointsChangeTracker` (pkg/proxy/
//! servicechangetracker.go, endpointschangetracker.go) in one: the watch events of
//! Services and Endpoints are converted once, when they arrive, to the proxy's model for
//! one IP family, and the Services they touched are remembered; a sync then applies only
//! those to the [`ProxySnapshot`] and gets the Services whose ports or endpoints really
//! changed (`UpdatedServices`, what a partial sync rewrites). Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::convert::{endpoints_from_endpoints, service_ports};
use super::types::{
    EndpointInfo, IpFamily, NamespacedName, ProxySnapshot, ServicePortInfo, ServicePortName,
};

type Ports = Vec<(ServicePortName, ServicePortInfo)>;
type EndpointsByPort = BTreeMap<ServicePortName, Vec<EndpointInfo>>;

/// The current state of every Service and Endpoints the watches delivered, per Service.
#[derive(Debug, Clone)]
pub struct ChangeTracker {
    family: IpFamily,
    node_name: String,
    services: BTreeMap<NamespacedName, Ports>,
    endpoints: BTreeMap<NamespacedName, EndpointsByPort>,
    /// Services touched since the last [`ChangeTracker::apply`].
    pending: BTreeSet<NamespacedName>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> NamespacedName {
    NamespacedName::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or(""),
    )
}

impl ChangeTracker {
    pub fn new(family: IpFamily, node_name: &str) -> Self {
        ChangeTracker {
            family,
            node_name: node_name.to_string(),
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            pending: BTreeSet::new(),
        }
    }

    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// A Service was added or changed (`OnServiceAdd`/`OnServiceUpdate`).
    pub fn service_update(&mut self, svc: &rekube_crds::Service) {
        let key = key_of(&svc.metadata);
        let ports = service_ports(svc, self.family);
        if ports.is_empty() {
            return self.service_delete(&key);
        }
        if self.services.get(&key) != Some(&ports) {
            self.services.insert(key.clone(), ports);
            self.pending.insert(key);
        }
    }

    /// A Service was deleted.
    pub fn service_delete(&mut self, key: &NamespacedName) {
        if self.services.remove(key).is_some() {
            self.pending.insert(key.clone());
        }
    }

    /// Endpoints were added or changed.
    pub fn endpoints_update(&mut self, eps: &rekube_crds::Endpoints) {
        let key = key_of(&eps.metadata);
        let by_port = endpoints_from_endpoints(eps, &self.node_name, self.family);
        if by_port.is_empty() {
            return self.endpoints_delete(&key);
        }
        if self.endpoints.get(&key) != Some(&by_port) {
            self.endpoints.insert(key.clone(), by_port);
            self.pending.insert(key);
        }
    }

    /// Endpoints were deleted.
    pub fn endpoints_delete(&mut self, key: &NamespacedName) {
        if self.endpoints.remove(key).is_some() {
            self.pending.insert(key.clone());
        }
    }

    /// A relist: every Service is one of `all` (those not in it were deleted).
    pub fn services_replace<'a>(
        &mut self,
        all: impl IntoIterator<Item = &'a rekube_crds::Service>,
    ) {
        let mut seen = BTreeSet::new();
        for svc in all {
            seen.insert(key_of(&svc.metadata));
            self.service_update(svc);
        }
        let gone: Vec<_> = self
            .services
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.service_delete(&key);
        }
    }

    /// A relist of Endpoints.
    pub fn endpoints_replace<'a>(
        &mut self,
        all: impl IntoIterator<Item = &'a rekube_crds::Endpoints>,
    ) {
        let mut seen = BTreeSet::new();
        for eps in all {
            seen.insert(key_of(&eps.metadata));
            self.endpoints_update(eps);
        }
        let gone: Vec<_> = self
            .endpoints
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.endpoints_delete(&key);
        }
    }

    /// Something changed since the last [`ChangeTracker::apply`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Brings `snapshot` up to date with the pending changes and returns the Services whose
    /// ports or endpoints differ from before (a Service changed and changed back is not in
    /// it).
    pub fn apply(&mut self, snapshot: &mut ProxySnapshot) -> BTreeSet<NamespacedName> {
        let mut updated = BTreeSet::new();
        for key in std::mem::take(&mut self.pending) {
            let old_ports = remove_service(&mut snapshot.service_ports, &key);
            let old_endpoints = remove_service(&mut snapshot.endpoints, &key);
            let new_ports: BTreeMap<_, _> = self
                .services
                .get(&key)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let new_endpoints = self.endpoints.get(&key).cloned().unwrap_or_default();
            if old_ports != new_ports || old_endpoints != new_endpoints {
                updated.insert(key);
            }
            snapshot.service_ports.extend(new_ports);
            snapshot.endpoints.extend(new_endpoints);
        }
        updated
    }
}

/// Removes and returns the entries of one Service (its ports are adjacent in the map).
fn remove_service<V>(
    map: &mut BTreeMap<ServicePortName, V>,
    service: &NamespacedName,
) -> BTreeMap<ServicePortName, V> {
    let keys: Vec<ServicePortName> = map
        .range(
            ServicePortName {
                service: service.clone(),
                port: String::new(),
                protocol: super::types::Protocol::Tcp,
            }..,
        )
        .map(|(k, _)| k)
        .take_while(|k| &k.service == service)
        .cloned()
        .collect();
    keys.into_iter()
        .filter_map(|k| map.remove_entry(&k))
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::proxy::convert::build_snapshot;

    fn service(
        ns: &str,
        name: &str,
        ip: &str,
        ports: &[(&str, i32, &str)],
    ) -> rekube_crds::Service {
        rekube_crds::Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(core::ServiceSpec {
                cluster_ip: Some(ip.into()),
                cluster_ips: Some(vec![ip.into()]),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| core::ServicePort {
                            name: Some(n.to_string()),
                            port: *p,
                            protocol: Some(proto.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn endpoints(
        ns: &str,
        name: &str,
        ips: &[&str],
        port: (&str, i32, &str),
    ) -> rekube_crds::Endpoints {
        rekube_crds::Endpoints {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            subsets: Some(vec![core::EndpointSubset {
                addresses: Some(
                    ips.iter()
                        .map(|ip| core::EndpointAddress {
                            ip: ip.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ports: Some(vec![core::EndpointPort {
                    name: Some(port.0.into()),
                    port: port.1,
                    protocol: Some(port.2.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
        }
    }

    fn names(list: &[(&str, &str)]) -> BTreeSet<NamespacedName> {
        list.iter()
            .map(|(ns, n)| NamespacedName::new(ns, n))
            .collect()
    }

    /// Each step's events, the Services the sync after them must rewrite, and the snapshot
    /// equal to one built from scratch from the same objects.
    #[test]
    fn updated_services_follow_the_events() {
        let a = service("ns1", "a", "172.30.0.1", &[("p80", 80, "TCP")]);
        let a2 = service(
            "ns1",
            "a",
            "172.30.0.1",
            &[("p80", 80, "TCP"), ("p53", 53, "UDP")],
        );
        let b = service("ns2", "b", "172.30.0.2", &[("p80", 80, "TCP")]);
        let ea = endpoints("ns1", "a", &["10.0.0.1"], ("p80", 8080, "TCP"));
        let ea2 = endpoints("ns1", "a", &["10.0.0.1", "10.0.0.2"], ("p80", 8080, "TCP"));
        let eb = endpoints("ns2", "b", &["10.0.1.1"], ("p80", 8080, "TCP"));

        type Step = Box<dyn Fn(&mut ChangeTracker)>;
        let (a_, a2_, b_, ea_, ea2_, eb_) = (
            a.clone(),
            a2.clone(),
            b.clone(),
            ea.clone(),
            ea2.clone(),
            eb.clone(),
        );
        type Case<'a> = (
            &'a str,
            Step,
            Vec<(&'a str, &'a str)>,
            Vec<&'a rekube_crds::Service>,
            Vec<&'a rekube_crds::Endpoints>,
        );
        let steps: Vec<Case> = vec![
            (
                "initial list",
                Box::new(move |t| {
                    t.services_replace([&a_, &b_]);
                    t.endpoints_replace([&ea_, &eb_]);
                }),
                vec![("ns1", "a"), ("ns2", "b")],
                vec![&a, &b],
                vec![&ea, &eb],
            ),
            (
                "an endpoint added to a",
                Box::new(move |t| t.endpoints_update(&ea2_)),
                vec![("ns1", "a")],
                vec![&a, &b],
                vec![&ea2, &eb],
            ),
            (
                "the same object again (a resync) changes nothing",
                Box::new({
                    let ea2 = ea2.clone();
                    move |t| t.endpoints_update(&ea2)
                }),
                vec![],
                vec![&a, &b],
                vec![&ea2, &eb],
            ),
            (
                "a port added to a",
                Box::new(move |t| t.service_update(&a2_)),
                vec![("ns1", "a")],
                vec![&a2, &b],
                vec![&ea2, &eb],
            ),
            (
                "b deleted, its endpoints too",
                Box::new(|t| {
                    t.service_delete(&NamespacedName::new("ns2", "b"));
                    t.endpoints_delete(&NamespacedName::new("ns2", "b"));
                }),
                vec![("ns2", "b")],
                vec![&a2],
                vec![&ea2],
            ),
            (
                "a changed and changed back before the sync",
                Box::new({
                    let (a, a2) = (a.clone(), a2.clone());
                    move |t| {
                        t.service_update(&a);
                        t.service_update(&a2);
                    }
                }),
                vec![],
                vec![&a2],
                vec![&ea2],
            ),
            (
                "a relist without a",
                Box::new(|t| {
                    t.services_replace([]);
                    t.endpoints_replace([]);
                }),
                vec![("ns1", "a")],
                vec![],
                vec![],
            ),
        ];
        let mut tracker = ChangeTracker::new(IpFamily::V4, "node-1");
        let mut snapshot = ProxySnapshot::default();
        for (name, step, want, services, eps) in steps {
            step(&mut tracker);
            let got = tracker.apply(&mut snapshot);
            assert_eq!(got, names(&want), "{name}");
            assert!(!tracker.has_pending(), "{name}");
            assert_eq!(
                snapshot,
                build_snapshot(services, eps, "node-1", IpFamily::V4),
                "{name}"
            );
        }
    }

    #[test]
    fn other_family_and_headless_services_have_no_ports() {
        let mut tracker = ChangeTracker::new(IpFamily::V6, "node-1");
        let mut snapshot = ProxySnapshot::default();
        tracker.service_update(&service("ns", "v4", "172.30.0.1", &[("p", 80, "TCP")]));
        tracker.service_update(&service("ns", "headless", "None", &[("p", 80, "TCP")]));
        assert!(!tracker.has_pending(), "nothing of this family");
        assert!(tracker.apply(&mut snapshot).is_empty());
        assert_eq!(snapshot, ProxySnapshot::default());
    }
}
