//! The pure core of the EndpointSlice controller: upstream k8s.io/endpointslice
//! reconciler.go (`Reconcile`, `reconcileByAddressType`, `reconcileByPortMapping`,
//! `finalize`) as a function from a Service, its pods and its existing slices to the
//! slices to create, update and delete ([`Plan`]); the reconciler
//! ([`super::controller`]) writes them.
//!
//! - Slices of an address type the Service no longer has, and slices not owned by the
//!   Service, are deleted.
//! - Pods (terminating ones too) are grouped by the ports they offer ([`get_endpoint_ports`]):
//!   each set of ports has its own slices.
//! - Existing slices keep the endpoints still wanted (updated when one changed), lose the
//!   others (deleted when none is left); slices being updated are filled up first, the
//!   fullest first; what remains goes into the unchanged slice it fills most exactly,
//!   then into new slices of at most `max_endpoints_per_slice`.
//! - A Service without endpoints keeps one placeholder slice without ports or endpoints.
//! - Hints follow the Service's `trafficDistribution` ([`super::trafficdist`]).
//! - A slice to create and one to delete become an update of the latter (`finalize`);
//!   nothing is created for a Service being deleted; every written slice gets the
//!   trigger-time annotation (or loses it).
//!
//! upstream's endpoint set is a hash map popped in random order; rekube's is ordered by
//! the endpoint's key (addresses, hostname, pod), so a sync is deterministic.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
use rekube_crds::{EndpointSlice, Node, Pod, Service};

use super::trafficdist::{can_use_traffic_distribution, reconcile_hints};
use super::utils::{
    EndpointKey, PortMapKey, add_trigger_time_annotation, endpoint_key,
    endpoints_equal_beyond_hash, get_address_types_for_service, get_endpoint_ports,
    get_slice_to_fill, new_endpoint_slice, owned_by, pod_to_endpoint, port_map_key,
    set_endpoint_slice_labels,
};
use crate::endpoint::endpoints::should_pod_be_in_endpoints;

/// upstream's default `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// upstream's bound of `--max-endpoints-per-slice` (validation's maxEndpoints).
pub const MAX_ENDPOINTS_PER_SLICE_LIMIT: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// upstream's error for a pod whose Node is not in the cache: the pod is left out
    /// and the Service retried.
    #[error("skipping Pod {pod} for Service {namespace}/{service}: Node {node} Not Found")]
    NodeNotFound {
        pod: String,
        namespace: String,
        service: String,
        node: String,
    },
}

/// What one sync of a Service does to its slices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// New slices (named by generateName).
    pub create: Vec<EndpointSlice>,
    /// Existing slices, written with their resourceVersion.
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
    /// Pods left out; the Service is retried.
    pub errors: Vec<Error>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// upstream's Reconciler, without its client: its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Reconciler {
    pub max_endpoints_per_slice: usize,
}

/// The desired endpoints of one set of ports.
type EndpointSet = BTreeMap<EndpointKey, Endpoint>;

fn name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// upstream placeholderSliceCompare: the same namespace, labels, owner references,
/// address type, and neither ports nor endpoints.
fn placeholder_equal(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let ports = |s: &EndpointSlice| s.ports.clone().unwrap_or_default();
    a.metadata.namespace == b.metadata.namespace
        && a.metadata.labels.clone().unwrap_or_default()
            == b.metadata.labels.clone().unwrap_or_default()
        && a.metadata.owner_references.clone().unwrap_or_default()
            == b.metadata.owner_references.clone().unwrap_or_default()
        && a.address_type == b.address_type
        && a.endpoints == b.endpoints
        && ports(a) == ports(b)
}

impl Reconciler {
    /// upstream Reconcile: the slices of every address type the Service has; those of a
    /// type it no longer has deleted. `node` looks a Node up by name in the cache.
    pub fn reconcile(
        &self,
        service: &Service,
        pods: &[&Pod],
        existing: &[&EndpointSlice],
        node: &dyn Fn(&str) -> Option<Arc<Node>>,
        trigger_time: Option<Timestamp>,
    ) -> Plan {
        let supported = get_address_types_for_service(service, pods);
        let mut plan = Plan::default();
        let mut unsupported = Vec::new();
        let mut by_type: BTreeMap<&str, Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in existing {
            if supported.contains(&slice.address_type) {
                by_type.entry(&slice.address_type).or_default().push(slice);
            } else {
                unsupported.push((*slice).clone());
            }
        }
        for address_type in &supported {
            let slices = by_type.remove(address_type.as_str()).unwrap_or_default();
            let p = self.reconcile_by_address_type(
                service,
                pods,
                &slices,
                node,
                trigger_time,
                address_type,
            );
            plan.create.extend(p.create);
            plan.update.extend(p.update);
            plan.delete.extend(p.delete);
            plan.errors.extend(p.errors);
        }
        plan.delete.extend(unsupported);
        plan
    }

    /// upstream reconcileByAddressType, with its finalize.
    fn reconcile_by_address_type(
        &self,
        service: &Service,
        pods: &[&Pod],
        existing: &[&EndpointSlice],
        node: &dyn Fn(&str) -> Option<Arc<Node>>,
        trigger_time: Option<Timestamp>,
        address_type: &str,
    ) -> Plan {
        let mut errors = Vec::new();
        let mut to_create = Vec::new();
        let mut to_update = Vec::new();
        let mut to_delete = Vec::new();

        let mut existing_by_port_map: BTreeMap<PortMapKey, Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in existing {
            if owned_by(slice, service) {
                existing_by_port_map
                    .entry(port_map_key(slice.ports.as_deref().unwrap_or_default()))
                    .or_default()
                    .push(slice);
            } else {
                to_delete.push((*slice).clone());
            }
        }

        let publish_not_ready = service
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let mut desired_ports: BTreeMap<PortMapKey, Vec<EndpointPort>> = BTreeMap::new();
        let mut desired: BTreeMap<PortMapKey, EndpointSet> = BTreeMap::new();
        for pod in pods {
            if !should_pod_be_in_endpoints(pod, true) {
                continue;
            }
            let ports = get_endpoint_ports(service, pod);
            let key = port_map_key(&ports);
            desired.entry(key.clone()).or_default();
            desired_ports.entry(key.clone()).or_insert(ports);
            let node_name = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let n = node(&node_name);
            if n.is_none() && !publish_not_ready {
                errors.push(Error::NodeNotFound {
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    namespace: service.metadata.namespace.clone().unwrap_or_default(),
                    service: service.metadata.name.clone().unwrap_or_default(),
                    node: node_name,
                });
                continue;
            }
            let endpoint = pod_to_endpoint(pod, n.as_deref(), service, address_type);
            if !endpoint.addresses.is_empty() {
                desired
                    .get_mut(&key)
                    .expect("inserted above")
                    .insert(endpoint_key(&endpoint), endpoint);
            }
        }

        for (key, mut set) in desired.clone() {
            let (c, u, d) = self.reconcile_by_port_mapping(
                service,
                existing_by_port_map
                    .get(&key)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                &mut set,
                &desired_ports[&key],
                address_type,
            );
            to_create.extend(c);
            to_update.extend(u);
            to_delete.extend(d);
        }
        // Sets of ports no longer wanted.
        for (key, slices) in &existing_by_port_map {
            if !desired.contains_key(key) {
                to_delete.extend(slices.iter().map(|s| (*s).clone()));
            }
        }

        // A placeholder when no slice would be left.
        if existing.len() == to_delete.len() && to_create.is_empty() {
            let placeholder = new_endpoint_slice(service, &[], address_type);
            if to_delete.len() == 1 && placeholder_equal(&to_delete[0], &placeholder) {
                to_delete.clear();
            } else {
                to_create.push(placeholder);
            }
        }

        // Hints: trafficDistribution's, or none, unchanged slices included (upstream's
        // topology-aware hints of the topology-mode annotation need the topology cache,
        // which rekube does not keep; with the annotation, hints are removed).
        let spec = service.spec.as_ref();
        let traffic_distribution =
            spec.and_then(|s| s.traffic_distribution.as_deref())
                .filter(|_| {
                    can_use_traffic_distribution(
                        spec.and_then(|s| s.traffic_distribution.as_deref()),
                        service.metadata.annotations.as_ref(),
                    )
                });
        let changed: BTreeSet<String> = to_update.iter().chain(&to_delete).map(name).collect();
        let unchanged: Vec<EndpointSlice> = existing
            .iter()
            .filter(|s| !changed.contains(&name(s)))
            .map(|s| (*s).clone())
            .collect();
        reconcile_hints(
            traffic_distribution,
            &mut to_create,
            &mut to_update,
            &unchanged,
        );

        let mut plan = finalize(service, to_create, to_update, to_delete, trigger_time);
        plan.errors = errors;
        plan
    }

    /// upstream reconcileByPortMapping: the slices of one set of ports.
    fn reconcile_by_port_mapping(
        &self,
        service: &Service,
        existing: &[&EndpointSlice],
        desired: &mut EndpointSet,
        ports: &[EndpointPort],
        address_type: &str,
    ) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>) {
        let max = self.max_endpoints_per_slice;
        let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut unchanged: BTreeSet<String> = BTreeSet::new();
        let mut to_update: BTreeSet<String> = BTreeSet::new();
        let mut to_delete: BTreeSet<String> = BTreeSet::new();

        // 1. Existing slices keep the endpoints still wanted, updated if they changed.
        for slice in existing {
            let n = name(slice);
            by_name.insert(n.clone(), (*slice).clone());
            let mut kept = Vec::new();
            let mut updated = false;
            for endpoint in &slice.endpoints {
                if let Some(got) = desired.remove(&endpoint_key(endpoint)) {
                    if !endpoints_equal_beyond_hash(&got, endpoint) {
                        updated = true;
                    }
                    kept.push(got);
                }
            }
            let (labels, labels_changed) =
                set_endpoint_slice_labels(slice.metadata.labels.as_ref(), service);
            if updated || slice.endpoints.len() != kept.len() {
                if kept.is_empty() {
                    to_delete.insert(n);
                } else {
                    let s = by_name.get_mut(&n).expect("inserted above");
                    s.endpoints = kept;
                    s.metadata.labels = Some(labels);
                    to_update.insert(n);
                }
            } else if labels_changed {
                by_name.get_mut(&n).expect("inserted above").metadata.labels = Some(labels);
                to_update.insert(n);
            } else {
                unchanged.insert(n);
            }
        }

        // 2. Slices being updated are filled up, the fullest first.
        if !desired.is_empty() && !to_update.is_empty() {
            let mut names: Vec<&String> = to_update.iter().collect();
            names.sort_by_key(|n| std::cmp::Reverse(by_name[*n].endpoints.len()));
            for n in names {
                let slice = by_name.get_mut(n).expect("a slice to update");
                while slice.endpoints.len() < max {
                    let Some((_, e)) = desired.pop_first() else {
                        break;
                    };
                    slice.endpoints.push(e);
                }
            }
        }

        // 3. The rest into the unchanged slice it fills most exactly, else new slices.
        let mut to_create = Vec::new();
        while !desired.is_empty() {
            let mut fill: Option<EndpointSlice> = None;
            if desired.len() < max && !unchanged.is_empty() {
                let candidates: Vec<&EndpointSlice> =
                    unchanged.iter().map(|n| &by_name[n]).collect();
                fill = get_slice_to_fill(&candidates, desired.len(), max).cloned();
            }
            let mut slice =
                fill.unwrap_or_else(|| new_endpoint_slice(service, ports, address_type));
            while slice.endpoints.len() < max {
                let Some((_, e)) = desired.pop_first() else {
                    break;
                };
                slice.endpoints.push(e);
            }
            match slice.metadata.name.clone() {
                Some(n) => {
                    to_update.insert(n.clone());
                    unchanged.remove(&n);
                    by_name.insert(n, slice);
                }
                None => to_create.push(slice),
            }
        }

        let update = to_update.iter().map(|n| by_name[n].clone()).collect();
        let delete = to_delete.iter().map(|n| by_name[n].clone()).collect();
        (to_create, update, delete)
    }
}

/// upstream finalize, without the writes: a slice to create and one of the same address
/// type owned by the Service to delete become an update of the latter (its name and
/// resourceVersion); nothing is created while the Service is being deleted (the garbage
/// collector would race the creates); created and updated slices get the trigger time.
pub fn finalize(
    service: &Service,
    mut create: Vec<EndpointSlice>,
    mut update: Vec<EndpointSlice>,
    mut delete: Vec<EndpointSlice>,
    trigger_time: Option<Timestamp>,
) -> Plan {
    let mut i = 0;
    while i < delete.len() && !create.is_empty() {
        let last = create.last().expect("not empty");
        if delete[i].address_type == last.address_type && owned_by(&delete[i], service) {
            let mut slice = create.pop().expect("not empty");
            let old = delete.remove(i);
            slice.metadata.name = old.metadata.name;
            slice.metadata.resource_version = old.metadata.resource_version;
            update.push(slice);
        } else {
            i += 1;
        }
    }
    if service.metadata.deletion_timestamp.is_some() {
        create.clear();
    }
    for slice in create.iter_mut().chain(update.iter_mut()) {
        add_trigger_time_annotation(slice, trigger_time);
    }
    Plan {
        create,
        update,
        delete,
        errors: Vec::new(),
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
