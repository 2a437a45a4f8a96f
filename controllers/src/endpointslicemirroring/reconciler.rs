//! The pure core of the EndpointSlice mirroring controller: upstream
//! pkg/controller/endpointslicemirroring reconciler.go, reconciler_helpers.go and
//! utils.go. From an Endpoints written by a user for a selectorless Service and the slices
//! mirrored from it before, the slices to create, update and delete ([`MirrorPlan`]).
//!
//! - The subsets are repacked (RepackSubsets); each set of ports gets one slice per
//!   address family, holding at most `max_endpoints_per_subset` of its addresses (ready
//!   ones first, then the not-ready ones; addresses that are not IPs are skipped and
//!   counted).
//! - An endpoint is the address in canonical form, `ready` as the list it was in, the
//!   address's hostname, nodeName and targetRef.
//! - A slice carries the Endpoints' labels and annotations (the trigger time and
//!   kubectl's last-applied configuration aside), `kubernetes.io/service-name` and
//!   `endpointslice.kubernetes.io/managed-by: endpointslicemirroring-controller.rekube.io`,
//!   and a controller reference to the rekube Endpoints.
//! - The first existing slice of a set of ports is rewritten when anything differs
//!   (endpoints, labels, annotations, the owner's UID); the others are deleted. Creates
//!   and deletes of one address type become updates (`recycleSlices`); nothing is created
//!   for Endpoints being deleted.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort as CorePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rekube_crds::net::parse_ip_sloppy;
use rekube_crds::{EndpointSlice, Endpoints};

use crate::endpoint::endpoints::ENDPOINTS_LAST_CHANGE_TRIGGER_TIME;
use crate::endpoint::repack::repack_subsets;
use crate::endpointslice::utils::{
    ADDRESS_TYPE_IPV4, ADDRESS_TYPE_IPV6, EndpointKey, LABEL_MANAGED_BY, LABEL_SERVICE_NAME,
    PortMapKey, endpoint_key, endpoints_equal_beyond_hash, get_endpoint_slice_prefix, port_map_key,
};

/// The managed-by value of mirrored slices (upstream's is
/// `endpointslicemirroring-controller.k8s.io`).
pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.rekube.io";
/// upstream discovery.LabelSkipMirror: Endpoints labelled `true` are not mirrored.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// upstream v1.LastAppliedConfigAnnotation, never mirrored.
pub const LAST_APPLIED_CONFIG_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// upstream's default `--mirroring-max-endpoints-per-subset`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SUBSET: usize = 1000;

/// An address type and a set of ports (upstream addrTypePortMapKey).
type Key = (String, PortMapKey);
type EndpointSet = BTreeMap<EndpointKey, Endpoint>;

/// What one sync of an Endpoints does to its mirrored slices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MirrorPlan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
    /// Slices already right (upstream makes sure the tracker knows them).
    pub unchanged: Vec<EndpointSlice>,
    /// Addresses that are not IPs (event `InvalidIPAddress`).
    pub invalid_addresses: usize,
    /// Addresses not mirrored, invalid ones included (above the invalid ones: event
    /// `TooManyAddressesToMirror`).
    pub addresses_skipped: usize,
}

impl MirrorPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// upstream shouldMirror: not labelled skip-mirror, not a leader-election lock.
pub fn should_mirror(endpoints: &Endpoints) -> bool {
    let skip = endpoints
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SKIP_MIRROR))
        .is_some_and(|v| v == "true");
    let lock = endpoints.metadata.annotations.as_ref().is_some_and(|a| {
        a.contains_key(crate::endpoint::endpoints::LEADER_ELECTION_RECORD_ANNOTATION_KEY)
    });
    !skip && !lock
}

/// upstream managedByController.
pub fn managed_by_controller(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == CONTROLLER_NAME)
}

/// upstream addressToEndpoint: the endpoint and its address type; none for an address
/// that is not an IP.
pub fn address_to_endpoint(
    address: &EndpointAddress,
    ready: bool,
) -> Option<(Endpoint, &'static str)> {
    let ip = parse_ip_sloppy(&address.ip)?;
    let address_type = if ip.is_ipv6() {
        ADDRESS_TYPE_IPV6
    } else {
        ADDRESS_TYPE_IPV4
    };
    Some((
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..Default::default()
            }),
            target_ref: address.target_ref.clone(),
            node_name: address.node_name.clone(),
            hostname: address.hostname.clone().filter(|h| !h.is_empty()),
            ..Default::default()
        },
        address_type,
    ))
}

/// upstream epPortsToEpsPorts.
fn ep_ports_to_eps_ports(ports: &[CorePort]) -> Vec<EndpointPort> {
    ports
        .iter()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

/// The Endpoints' annotations without the trigger time and the last-applied
/// configuration (upstream cloneAndRemoveKeys).
fn mirrored_annotations(endpoints: &Endpoints) -> BTreeMap<String, String> {
    let mut a = endpoints.metadata.annotations.clone().unwrap_or_default();
    a.remove(ENDPOINTS_LAST_CHANGE_TRIGGER_TIME);
    a.remove(LAST_APPLIED_CONFIG_ANNOTATION);
    a
}

/// upstream's controller reference to the Endpoints, with rekube's apiVersion.
fn endpoints_owner_reference(endpoints: &Endpoints) -> OwnerReference {
    OwnerReference {
        api_version: rekube_crds::API_VERSION.into(),
        kind: "Endpoints".into(),
        name: endpoints.metadata.name.clone().unwrap_or_default(),
        uid: endpoints.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// upstream newEndpointSlice (mirroring's): named `slice_name` (an update) or by
/// generateName `<endpoints>-` (a create).
pub fn new_endpoint_slice(
    endpoints: &Endpoints,
    ports: &[EndpointPort],
    address_type: &str,
    slice_name: Option<String>,
) -> EndpointSlice {
    let name = endpoints.metadata.name.clone().unwrap_or_default();
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.into(), name.clone());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: slice_name
                .is_none()
                .then(|| get_endpoint_slice_prefix(&name)),
            name: slice_name,
            namespace: endpoints.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(mirrored_annotations(endpoints)),
            owner_references: Some(vec![endpoints_owner_reference(endpoints)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

/// upstream totalChanges: whether the slice's endpoints are exactly the desired ones.
fn no_changes(slice: &EndpointSlice, desired: &EndpointSet) -> bool {
    let mut matches = 0;
    for e in &slice.endpoints {
        match desired.get(&endpoint_key(e)) {
            None => return false,
            Some(got) if !endpoints_equal_beyond_hash(got, e) => return false,
            Some(_) => matches += 1,
        }
    }
    matches == desired.len()
}

/// upstream needRebuildExistingSlices: the slice belongs to an earlier Endpoints of the
/// same name (another UID).
fn need_rebuild(endpoints: &Endpoints, slice: &EndpointSlice) -> bool {
    slice.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "Endpoints"
            && Some(&o.name) == endpoints.metadata.name.as_ref()
            && Some(&o.uid) != endpoints.metadata.uid.as_ref()
    })
}

/// upstream's reconciler, without its client: its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Reconciler {
    pub max_endpoints_per_subset: usize,
}

impl Reconciler {
    /// upstream reconcile: `existing` are the slices this controller mirrored from the
    /// Endpoints before.
    pub fn reconcile(&self, endpoints: &Endpoints, existing: &[&EndpointSlice]) -> MirrorPlan {
        let max = self.max_endpoints_per_subset;
        let mut plan = MirrorPlan::default();
        let mut ports_by_key: BTreeMap<Key, Vec<EndpointPort>> = BTreeMap::new();
        let mut desired: BTreeMap<Key, EndpointSet> = BTreeMap::new();
        for subset in repack_subsets(endpoints.subsets.as_deref().unwrap_or_default()) {
            let ports = ep_ports_to_eps_ports(subset.ports.as_deref().unwrap_or_default());
            let pm = port_map_key(&ports);
            for t in [ADDRESS_TYPE_IPV4, ADDRESS_TYPE_IPV6] {
                desired.entry((t.into(), pm.clone())).or_default();
                ports_by_key.insert((t.into(), pm.clone()), ports.clone());
            }
            let ready = subset.addresses.iter().flatten().map(|a| (a, true));
            let not_ready = subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false));
            let total = subset.addresses.as_ref().map_or(0, Vec::len)
                + subset.not_ready_addresses.as_ref().map_or(0, Vec::len);
            let mut added = 0;
            for (address, is_ready) in ready.chain(not_ready) {
                if added >= max {
                    break;
                }
                match address_to_endpoint(address, is_ready) {
                    Some((e, t)) => {
                        desired
                            .get_mut(&(t.to_string(), pm.clone()))
                            .expect("inserted above")
                            .insert(endpoint_key(&e), e);
                        added += 1;
                    }
                    None => plan.invalid_addresses += 1,
                }
            }
            plan.addresses_skipped += total - added;
        }

        let mut existing_by_key: BTreeMap<Key, Vec<&EndpointSlice>> = BTreeMap::new();
        for s in existing {
            existing_by_key
                .entry((
                    s.address_type.clone(),
                    port_map_key(s.ports.as_deref().unwrap_or_default()),
                ))
                .or_default()
                .push(s);
        }
        for (key, set) in &desired {
            let slices = existing_by_key
                .get(key)
                .map(Vec::as_slice)
                .unwrap_or_default();
            self.reconcile_by_port_mapping(
                endpoints,
                slices,
                set.clone(),
                &ports_by_key[key],
                &key.0,
                &mut plan,
            );
        }
        for (key, slices) in &existing_by_key {
            if !desired.contains_key(key) {
                plan.delete.extend(slices.iter().map(|s| (*s).clone()));
            }
        }
        recycle_slices(&mut plan);
        if endpoints.metadata.deletion_timestamp.is_some() {
            plan.create.clear();
        }
        plan
    }

    /// upstream reconcileByPortMapping: one slice per address type and set of ports.
    fn reconcile_by_port_mapping(
        &self,
        endpoints: &Endpoints,
        existing: &[&EndpointSlice],
        mut desired: EndpointSet,
        ports: &[EndpointPort],
        address_type: &str,
        plan: &mut MirrorPlan,
    ) {
        if desired.is_empty() {
            plan.delete.extend(existing.iter().map(|s| (*s).clone()));
            return;
        }
        let mut name = None;
        let mut resource_version = None;
        if let Some((first, rest)) = existing.split_first() {
            plan.delete.extend(rest.iter().map(|s| (*s).clone()));
            let mut labels = first.metadata.labels.clone().unwrap_or_default();
            labels.remove(LABEL_MANAGED_BY);
            labels.remove(LABEL_SERVICE_NAME);
            if no_changes(first, &desired)
                && endpoints.metadata.labels.clone().unwrap_or_default() == labels
                && mirrored_annotations(endpoints)
                    == first.metadata.annotations.clone().unwrap_or_default()
                && !need_rebuild(endpoints, first)
            {
                plan.unchanged.push((*first).clone());
                return;
            }
            name = first.metadata.name.clone();
            resource_version = first.metadata.resource_version.clone();
        }
        let mut slice = new_endpoint_slice(endpoints, ports, address_type, name);
        slice.metadata.resource_version = resource_version;
        while slice.endpoints.len() < self.max_endpoints_per_subset {
            let Some((_, e)) = desired.pop_first() else {
                break;
            };
            slice.endpoints.push(e);
        }
        if slice.metadata.name.is_some() {
            plan.update.push(slice);
        } else {
            plan.create.push(slice);
        }
    }
}

/// upstream recycleSlices: per address type, the i-th slice to create takes the name of
/// the i-th slice to delete and becomes an update.
fn recycle_slices(plan: &mut MirrorPlan) {
    for t in [ADDRESS_TYPE_IPV4, ADDRESS_TYPE_IPV6] {
        loop {
            let c = plan.create.iter().position(|s| s.address_type == t);
            let d = plan.delete.iter().position(|s| s.address_type == t);
            let (Some(c), Some(d)) = (c, d) else { break };
            let mut slice = plan.create.remove(c);
            let old = plan.delete.remove(d);
            slice.metadata.generate_name = None;
            slice.metadata.name = old.metadata.name;
            slice.metadata.resource_version = old.metadata.resource_version;
            plan.update.push(slice);
        }
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
