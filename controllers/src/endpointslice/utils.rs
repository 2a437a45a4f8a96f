//! Pure helpers of the EndpointSlice reconciler, named as upstream's
//! k8s.io/endpointslice utils.go and util/controller_utils.go: a pod as an endpoint, a
//! Service port as an endpoint port, a new slice, the slice labels, ownership, which slice
//! to fill, the address types of a Service. What the Endpoints controller shares
//! (`FindPort`, `ShouldPodBeInEndpoints`, `ShouldSetHostname`, the trigger-time tracker)
//! comes from [`crate::endpoint`].
use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rekube_crds::net::parse_ip_sloppy;
use rekube_crds::{EndpointSlice, Node, Pod, Service};

use crate::endpoint::endpoints::{
    ENDPOINTS_LAST_CHANGE_TRIGGER_TIME, IS_HEADLESS_SERVICE, find_port, is_service_ip_set,
    should_pod_be_in_endpoints, should_set_hostname,
};
use crate::util::pod as podutil;

/// upstream discovery.LabelServiceName.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// upstream discovery.LabelManagedBy.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The managed-by value of rekube's slices. Upstream's controller writes
/// `endpointslice-controller.k8s.io`; rekube's is its own, so neither controller ever
/// takes the other's slices for its own.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.rekube.io";
/// upstream v1.LabelTopologyZone: a Node's zone, copied to its endpoints.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
pub const ADDRESS_TYPE_IPV4: &str = "IPv4";
pub const ADDRESS_TYPE_IPV6: &str = "IPv6";
const CLUSTER_IP_NONE: &str = "None";

/// upstream's endpointHashObj: what identifies an endpoint across syncs (its sorted
/// addresses, hostname and pod). A key of an ordered map stands for upstream's FNV hash.
pub type EndpointKey = (Vec<String>, String, String, String);

pub fn endpoint_key(e: &Endpoint) -> EndpointKey {
    let mut addresses = e.addresses.clone();
    addresses.sort();
    let r = e.target_ref.as_ref();
    (
        addresses,
        e.hostname.clone().unwrap_or_default(),
        r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
    )
}

/// upstream PortMapKey: a set of ports, whatever their order (a sorted canonical form
/// stands for upstream's hash of the sorted list).
pub type PortMapKey = Vec<(String, i32, String, String)>;

pub fn port_map_key(ports: &[EndpointPort]) -> PortMapKey {
    let mut key: PortMapKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_default(),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    key.sort();
    key
}

fn spec(service: &Service) -> k8s_openapi::api::core::v1::ServiceSpec {
    service.spec.clone().unwrap_or_default()
}

/// upstream getEndpointAddresses: the pod's IPs of the address type, in canonical form.
pub fn get_endpoint_addresses(pod: &Pod, address_type: &str) -> Vec<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| parse_ip_sloppy(&ip.ip))
        .filter(|ip| ip.is_ipv6() == (address_type == ADDRESS_TYPE_IPV6))
        .map(|ip| ip.to_string())
        .collect()
}

/// upstream podToEndpoint: the pod's addresses of the type; serving when ready,
/// terminating when deleted, ready when serving and not terminating (or always, with
/// publishNotReadyAddresses); a reference to the pod, its node, the node's zone label,
/// and the hostname when [`should_set_hostname`].
pub fn pod_to_endpoint(
    pod: &Pod,
    node: Option<&Node>,
    service: &Service,
    address_type: &str,
) -> Endpoint {
    let serving = podutil::is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready =
        spec(service).publish_not_ready_addresses.unwrap_or(false) || (serving && !terminating);
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(LABEL_TOPOLOGY_ZONE))
        .filter(|z| !z.is_empty())
        .cloned();
    let hostname = should_set_hostname(pod, service)
        .then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone()))
        .flatten();
    Endpoint {
        addresses: get_endpoint_addresses(pod, address_type),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        node_name,
        zone,
        hostname,
        ..Default::default()
    }
}

/// upstream getEndpointPorts: per Service port, the pod's port it targets ([`find_port`];
/// a port the pod lacks is left out); none for a headless Service without ports.
pub fn get_endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let s = spec(service);
    let ports = s.ports.unwrap_or_default();
    if ports.is_empty() && s.cluster_ip.as_deref() == Some(CLUSTER_IP_NONE) {
        return Vec::new();
    }
    ports
        .iter()
        .filter_map(|sp| {
            let port = find_port(pod, sp).ok()?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

fn is_reserved_label_key(key: &str) -> bool {
    key == LABEL_SERVICE_NAME || key == LABEL_MANAGED_BY || key == IS_HEADLESS_SERVICE
}

/// upstream setEndpointSliceLabels: the Service's labels (reserved keys aside), the
/// headless label when the Service has no cluster IP, the service-name and managed-by
/// labels; and whether the slice's non-reserved labels differed from the Service's.
pub fn set_endpoint_slice_labels(
    slice_labels: Option<&BTreeMap<String, String>>,
    service: &Service,
) -> (BTreeMap<String, String>, bool) {
    let not_reserved = |m: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
        m.into_iter()
            .flatten()
            .filter(|(k, _)| !is_reserved_label_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut labels = not_reserved(service.metadata.labels.as_ref());
    let updated = not_reserved(slice_labels) != labels;
    if !is_service_ip_set(service) {
        labels.insert(IS_HEADLESS_SERVICE.into(), String::new());
    }
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    (labels, updated)
}

/// upstream's controller reference to the Service (metav1.NewControllerRef), with
/// rekube's apiVersion.
pub fn service_owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: rekube_crds::API_VERSION.into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// upstream newEndpointSlice: an empty slice of the Service (generateName
/// `<service>-`, its labels, a controller reference) with the ports and address type.
pub fn new_endpoint_slice(
    service: &Service,
    ports: &[EndpointPort],
    address_type: &str,
) -> EndpointSlice {
    let (labels, _) = set_endpoint_slice_labels(None, service);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(get_endpoint_slice_prefix(
                service.metadata.name.as_deref().unwrap_or_default(),
            )),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![service_owner_reference(service)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

/// upstream getEndpointSlicePrefix: `<service>-` (a Service name, at most 63
/// characters, always leaves room for the dash and generateName's 5 random characters).
pub fn get_endpoint_slice_prefix(service_name: &str) -> String {
    format!("{service_name}-")
}

/// upstream ownedBy: the slice has an owner reference to this Service (by UID, kind and
/// rekube's apiVersion).
pub fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    slice.metadata.owner_references.iter().flatten().any(|o| {
        Some(&o.uid) == service.metadata.uid.as_ref()
            && o.kind == "Service"
            && o.api_version == rekube_crds::API_VERSION
    })
}

/// upstream getSliceToFill: of `slices`, the one closest to full once `num_endpoints`
/// are added without going over `max_endpoints`; none if none has room.
pub fn get_slice_to_fill<'a>(
    slices: &[&'a EndpointSlice],
    num_endpoints: usize,
    max_endpoints: usize,
) -> Option<&'a EndpointSlice> {
    let mut closest_diff = max_endpoints;
    let mut closest = None;
    for slice in slices {
        let Some(diff) = max_endpoints.checked_sub(num_endpoints + slice.endpoints.len()) else {
            continue;
        };
        if diff < closest_diff {
            closest_diff = diff;
            closest = Some(*slice);
            if diff == 0 {
                return closest;
            }
        }
    }
    closest
}

/// upstream addTriggerTimeAnnotation: the trigger time, or no annotation without one.
pub fn add_trigger_time_annotation(slice: &mut EndpointSlice, trigger_time: Option<Timestamp>) {
    let annotations = slice.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger_time {
        Some(t) => {
            annotations.insert(ENDPOINTS_LAST_CHANGE_TRIGGER_TIME.into(), t.to_string());
        }
        None => {
            annotations.remove(ENDPOINTS_LAST_CHANGE_TRIGGER_TIME);
        }
    }
}

/// upstream ServiceControllerKey: the (namespace, Service name) a slice's service-name
/// label names; none without the label.
pub fn service_controller_key(slice: &EndpointSlice) -> Option<(String, String)> {
    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    (!name.is_empty()).then(|| {
        (
            slice.metadata.namespace.clone().unwrap_or_default(),
            name.clone(),
        )
    })
}

/// upstream ManagedByController.
pub fn managed_by_controller(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .map(String::as_str)
        == Some(CONTROLLER_NAME)
}

/// upstream getAddressTypesForService: the Service's ipFamilies; without them, the
/// family of its cluster IP. A Service with neither (upstream: one from an apiserver
/// older than dual-stack, assumed to be both) is in rekube one the service allocator has
/// not reached yet, or a headless one (the allocator leaves those alone): its slices take
/// the families of its pods' addresses, IPv4 when it has none, so a headless Service does
/// not get an empty IPv6 slice beside its IPv4 one. (A deviation: upstream's apiserver
/// always sets ipFamilies.)
pub fn get_address_types_for_service(service: &Service, pods: &[&Pod]) -> BTreeSet<String> {
    let s = spec(service);
    let mut types: BTreeSet<String> = s
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(ADDRESS_TYPE_IPV4.to_string()),
            "IPv6" => Some(ADDRESS_TYPE_IPV6.to_string()),
            _ => None,
        })
        .collect();
    if !types.is_empty() {
        return types;
    }
    if is_service_ip_set(service) {
        let ip = s.cluster_ip.unwrap_or_default();
        let ipv6 = parse_ip_sloppy(&ip).is_some_and(|ip| ip.is_ipv6());
        types.insert(
            if ipv6 {
                ADDRESS_TYPE_IPV6
            } else {
                ADDRESS_TYPE_IPV4
            }
            .into(),
        );
        return types;
    }
    let include_terminating = s.publish_not_ready_addresses.unwrap_or(false);
    for pod in pods
        .iter()
        .filter(|p| should_pod_be_in_endpoints(p, include_terminating))
    {
        for t in [ADDRESS_TYPE_IPV4, ADDRESS_TYPE_IPV6] {
            if !get_endpoint_addresses(pod, t).is_empty() {
                types.insert(t.into());
            }
        }
    }
    if types.is_empty() {
        types.insert(ADDRESS_TYPE_IPV4.into());
    }
    types
}

fn target_ref_ignoring_resource_version(e: &Endpoint) -> Option<ObjectReference> {
    e.target_ref.clone().map(|mut r| {
        r.resource_version = None;
        r
    })
}

/// upstream EndpointsEqualBeyondHash: two endpoints of the same key
/// ([`endpoint_key`]) are equal when node, zone, conditions and target (its
/// resourceVersion aside) are.
pub fn endpoints_equal_beyond_hash(a: &Endpoint, b: &Endpoint) -> bool {
    let c = |e: &Endpoint| e.conditions.clone().unwrap_or_default();
    let (ca, cb) = (c(a), c(b));
    a.node_name == b.node_name
        && a.zone == b.zone
        && ca.ready == cb.ready
        && ca.serving == cb.serving
        && ca.terminating == cb.terminating
        && target_ref_ignoring_resource_version(a) == target_ref_ignoring_resource_version(b)
}
