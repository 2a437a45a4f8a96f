//! Upstream's `ServiceChangeTracker` and `EndpointsChangeTracker` (pkg/proxy/
//! servicechangetracker.go, endpointschangetracker.go, endpointslicecache.go) in one: the
//! watch events of Services and EndpointSlices are converted once, when they arrive, to
//! the proxy's model for one IP family (a Service's endpoints from all its slices, found
//! by their `kubernetes.io/service-name` label), and the Services they touched are
//! remembered; a sync then applies only those to the [`ProxySnapshot`] and gets the
//! Services whose ports or endpoints really changed (`UpdatedServices`, what a partial
//! sync rewrites). Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::discovery::v1 as discovery;

use super::convert::{endpoints_from_endpoint_slices, service_of_slice, service_ports};
use super::types::{
    EndpointInfo, IpFamily, NamespacedName, ProxySnapshot, ServicePortInfo, ServicePortName,
};

type Ports = Vec<(ServicePortName, ServicePortInfo)>;
type EndpointsByPort = BTreeMap<ServicePortName, Vec<EndpointInfo>>;

/// The current state of every Service and EndpointSlice the watches delivered, per
/// Service.
#[derive(Debug, Clone)]
pub struct ChangeTracker {
    family: IpFamily,
    node_name: String,
    services: BTreeMap<NamespacedName, Ports>,
    endpoints: BTreeMap<NamespacedName, EndpointsByPort>,
    /// Each Service's EndpointSlices by name (upstream's `endpointSliceCache`).
    slices: BTreeMap<NamespacedName, BTreeMap<String, discovery::EndpointSlice>>,
    /// The Service of each slice (namespace/slice name), for its deletion.
    slice_service: BTreeMap<NamespacedName, NamespacedName>,
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
            slices: BTreeMap::new(),
            slice_service: BTreeMap::new(),
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

    /// An EndpointSlice was added or changed: its Service's endpoints are those of all
    /// its slices. A slice without a service-name label belongs to none.
    pub fn endpoint_slice_update(&mut self, slice: &rekube_crds::EndpointSlice) {
        let key = key_of(&slice.metadata);
        let Some(service) = service_of_slice(&slice.metadata) else {
            return self.endpoint_slice_delete(&key);
        };
        if self.slice_service.get(&key).is_some_and(|s| *s != service) {
            // Relabelled to another Service: it leaves the first.
            self.endpoint_slice_delete(&key);
        }
        self.slice_service.insert(key.clone(), service.clone());
        self.slices.entry(service.clone()).or_default().insert(
            key.name.clone(),
            discovery::EndpointSlice::from(slice.clone()),
        );
        self.recompute_endpoints(&service);
    }

    /// An EndpointSlice was deleted.
    pub fn endpoint_slice_delete(&mut self, key: &NamespacedName) {
        let Some(service) = self.slice_service.remove(key) else {
            return;
        };
        if let Some(slices) = self.slices.get_mut(&service) {
            slices.remove(&key.name);
            if slices.is_empty() {
                self.slices.remove(&service);
            }
        }
        self.recompute_endpoints(&service);
    }

    fn recompute_endpoints(&mut self, service: &NamespacedName) {
        let by_port = endpoints_from_endpoint_slices(
            self.slices
                .get(service)
                .into_iter()
                .flat_map(|s| s.values()),
            &self.node_name,
            self.family,
        );
        if by_port.is_empty() {
            if self.endpoints.remove(service).is_some() {
                self.pending.insert(service.clone());
            }
        } else if self.endpoints.get(service) != Some(&by_port) {
            self.endpoints.insert(service.clone(), by_port);
            self.pending.insert(service.clone());
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

    /// A relist of EndpointSlices.
    pub fn endpoint_slices_replace<'a>(
        &mut self,
        all: impl IntoIterator<Item = &'a rekube_crds::EndpointSlice>,
    ) {
        let mut seen = BTreeSet::new();
        for slice in all {
            seen.insert(key_of(&slice.metadata));
            self.endpoint_slice_update(slice);
        }
        let gone: Vec<_> = self
            .slice_service
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.endpoint_slice_delete(&key);
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

    /// An EndpointSlice `slice` of Service `service`, all `ips` ready.
    fn slice(
        ns: &str,
        service: &str,
        slice: &str,
        ips: &[&str],
        port: (&str, i32, &str),
    ) -> rekube_crds::EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rekube.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": slice,
                "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
            "ports": [{"name": port.0, "port": port.1, "protocol": port.2}],
        }))
        .unwrap()
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
        let ea = slice("ns1", "a", "a-1", &["10.0.0.1"], ("p80", 8080, "TCP"));
        let ea2 = slice(
            "ns1",
            "a",
            "a-1",
            &["10.0.0.1", "10.0.0.2"],
            ("p80", 8080, "TCP"),
        );
        let eb = slice("ns2", "b", "b-1", &["10.0.1.1"], ("p80", 8080, "TCP"));

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
            Vec<&'a rekube_crds::EndpointSlice>,
        );
        let steps: Vec<Case> = vec![
            (
                "initial list",
                Box::new(move |t| {
                    t.services_replace([&a_, &b_]);
                    t.endpoint_slices_replace([&ea_, &eb_]);
                }),
                vec![("ns1", "a"), ("ns2", "b")],
                vec![&a, &b],
                vec![&ea, &eb],
            ),
            (
                "an endpoint added to a",
                Box::new(move |t| t.endpoint_slice_update(&ea2_)),
                vec![("ns1", "a")],
                vec![&a, &b],
                vec![&ea2, &eb],
            ),
            (
                "the same object again (a resync) changes nothing",
                Box::new({
                    let ea2 = ea2.clone();
                    move |t| t.endpoint_slice_update(&ea2)
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
                    t.endpoint_slice_delete(&NamespacedName::new("ns2", "b-1"));
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
                    t.endpoint_slices_replace([]);
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
                build_snapshot(
                    services,
                    &eps.iter()
                        .map(|e| discovery::EndpointSlice::from((*e).clone()))
                        .collect::<Vec<_>>(),
                    "node-1",
                    IpFamily::V4
                ),
                "{name}"
            );
        }
    }

    /// A Service's endpoints are those of all its slices; a slice relabelled to another
    /// Service moves; a slice without the label is no one's.
    #[test]
    fn a_services_endpoints_come_from_all_its_slices() {
        let mut tracker = ChangeTracker::new(IpFamily::V4, "node-1");
        let mut snapshot = ProxySnapshot::default();
        let a = service("ns1", "a", "172.30.0.1", &[("p80", 80, "TCP")]);
        let b = service("ns1", "b", "172.30.0.2", &[("p80", 80, "TCP")]);
        let (s1, s2) = (
            slice("ns1", "a", "a-1", &["10.0.0.1"], ("p80", 8080, "TCP")),
            slice("ns1", "a", "a-2", &["10.0.0.2"], ("p80", 8080, "TCP")),
        );
        tracker.services_replace([&a, &b]);
        tracker.endpoint_slices_replace([&s1, &s2]);
        tracker.apply(&mut snapshot);
        let ips = |snapshot: &ProxySnapshot, svc: &str| -> Vec<String> {
            snapshot
                .endpoints
                .get(&ServicePortName::new(
                    "ns1",
                    svc,
                    "p80",
                    super::super::types::Protocol::Tcp,
                ))
                .map(|l| l.iter().map(|e| e.to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(ips(&snapshot, "a"), ["10.0.0.1:8080", "10.0.0.2:8080"]);
        // a-2 relabelled to b: both change.
        let moved = slice("ns1", "b", "a-2", &["10.0.0.2"], ("p80", 8080, "TCP"));
        tracker.endpoint_slice_update(&moved);
        assert_eq!(
            tracker.apply(&mut snapshot),
            names(&[("ns1", "a"), ("ns1", "b")])
        );
        assert_eq!(ips(&snapshot, "a"), ["10.0.0.1:8080"]);
        assert_eq!(ips(&snapshot, "b"), ["10.0.0.2:8080"]);
        // Its label removed: b has none.
        let mut unlabelled = moved.clone();
        unlabelled.metadata.labels = None;
        tracker.endpoint_slice_update(&unlabelled);
        assert_eq!(tracker.apply(&mut snapshot), names(&[("ns1", "b")]));
        assert!(ips(&snapshot, "b").is_empty());
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
