//! The pure core of the Endpoints controller (upstream pkg/controller/endpoint/
//! endpoints_controller.go `syncService`, with the helpers it uses from
//! k8s.io/endpointslice and its util package): from a Service, the pods it selects and
//! the Endpoints that exist, the Endpoints that should exist and whether writing is needed.
//!
//! - [`receives_endpoints`]: ExternalName Services and Services without a selector are
//!   left alone (their Endpoints are the user's).
//! - [`should_pod_be_in_endpoints`]: pods with an IP, not Succeeded or Failed, not
//!   terminating unless the Service publishes not-ready addresses.
//! - [`pod_to_endpoint_address_for_service`]: the pod's IP of the Service's family, its
//!   node and a targetRef; [`should_set_hostname`] for the hostname.
//! - [`find_port`]: the container port a targetPort names, per pod (sidecars included).
//! - [`desired_subsets`]: ready pods (or all, with publishNotReadyAddresses) in
//!   `addresses`, the others in `notReadyAddresses`, repacked ([`super::repack`]).
//! - [`sync_endpoints`]: labels (the Service's, `service.kubernetes.io/headless` without a
//!   cluster IP, `endpoints.kubernetes.io/managed-by: endpoint-controller`), the
//!   trigger-time annotation, truncation to 1000 addresses with
//!   `endpoints.kubernetes.io/over-capacity: truncated`, and no write when nothing changed.
//! - [`services_to_update`]: which Services a pod event concerns.
use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rekube_crds::net::{is_ipv6_string as is_ipv6, parse_ip_sloppy};
use rekube_crds::{Endpoints, Pod, Service};

use super::repack::repack_subsets;
use crate::util::labels::set_matches;
use crate::util::pod as podutil;

/// upstream maxCapacity: the most addresses one Endpoints holds.
pub const MAX_CAPACITY: usize = 1000;
/// upstream v1.EndpointsOverCapacity.
pub const ENDPOINTS_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// upstream `truncated`, the over-capacity annotation's value.
pub const TRUNCATED: &str = "truncated";
/// upstream v1.EndpointsLastChangeTriggerTime.
pub const ENDPOINTS_LAST_CHANGE_TRIGGER_TIME: &str =
    "endpoints.kubernetes.io/last-change-trigger-time";
/// upstream v1.IsHeadlessService.
pub const IS_HEADLESS_SERVICE: &str = "service.kubernetes.io/headless";
/// upstream LabelManagedBy: the label on every Endpoints this controller writes.
pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// upstream ControllerName, the managed-by label's value.
pub const CONTROLLER_NAME: &str = "endpoint-controller";
/// upstream resourcelock.LeaderElectionRecordAnnotationKey: Endpoints used as a leader
/// election lock, never deleted as leftovers.
pub const LEADER_ELECTION_RECORD_ANNOTATION_KEY: &str = "control-plane.alpha.kubernetes.io/leader";

const CLUSTER_IP_NONE: &str = "None";
const SERVICE_TYPE_EXTERNAL_NAME: &str = "ExternalName";

/// Errors of the pure core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// upstream FindPort's error.
    #[error("no suitable port for manifest: {uid}")]
    NoSuitablePort { uid: String },
    /// upstream podToEndpointAddressForService's error.
    #[error("failed to find a matching endpoint for service {service}")]
    NoMatchingIp { service: String },
}

fn spec(service: &Service) -> k8s_openapi::api::core::v1::ServiceSpec {
    service.spec.clone().unwrap_or_default()
}

/// Whether the controller keeps this Service's Endpoints: not ExternalName, and with a
/// selector (an empty selector selects every pod; a missing one, none).
pub fn receives_endpoints(service: &Service) -> bool {
    let s = service.spec.as_ref();
    s.and_then(|s| s.type_.as_deref()) != Some(SERVICE_TYPE_EXTERNAL_NAME)
        && s.and_then(|s| s.selector.as_ref()).is_some()
}

/// Whether the Service's selector selects the pod (same namespace; a missing selector
/// selects nothing, upstream getServicesForPod and the pod lister of syncService).
pub fn service_selects(
    service: &Service,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    service.metadata.namespace.as_deref() == Some(namespace) && set_matches(Some(selector), labels)
}

/// The pods the Service selects.
pub fn pods_for_service<'a>(service: &Service, pods: &[&'a Pod]) -> Vec<&'a Pod> {
    pods.iter()
        .copied()
        .filter(|p| {
            service_selects(
                service,
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.labels.as_ref(),
            )
        })
        .collect()
}

fn pod_ips(pod: &Pod) -> Vec<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.as_str()).collect())
        .unwrap_or_default()
}

fn pod_ip(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or_default()
}

/// upstream ShouldPodBeInEndpoints: not terminal, with an IP, and not terminating unless
/// `include_terminating`.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if podutil::is_pod_terminal(pod) {
        return false;
    }
    if pod_ip(pod).is_empty() && pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// upstream ShouldSetHostname: the pod has a hostname and its subdomain is the Service,
/// in the Service's namespace.
pub fn should_set_hostname(pod: &Pod, service: &Service) -> bool {
    let ps = pod.spec.as_ref();
    let hostname = ps.and_then(|s| s.hostname.as_deref()).unwrap_or_default();
    let subdomain = ps.and_then(|s| s.subdomain.as_deref()).unwrap_or_default();
    !hostname.is_empty()
        && Some(subdomain) == service.metadata.name.as_deref()
        && service.metadata.namespace == pod.metadata.namespace
}

/// upstream podToEndpointAddressForService: the pod's IP of the Service's IP family (its
/// first ipFamily; without one, the family of its cluster IP, or for a headless Service
/// of the pod's IP), in its canonical form, its node and a reference to it. (A pod IP
/// that does not parse is skipped; upstream would write `<nil>`, which validation
/// refuses.)
pub fn pod_to_endpoint_address_for_service(
    service: &Service,
    pod: &Pod,
) -> Result<EndpointAddress, Error> {
    let s = spec(service);
    let ipv6 = match s.ip_families.as_deref() {
        Some([first, ..]) => first == "IPv6",
        _ => match s.cluster_ip.as_deref() {
            Some(ip) if !ip.is_empty() && ip != CLUSTER_IP_NONE => is_ipv6(ip),
            _ => is_ipv6(pod_ip(pod)),
        },
    };
    let ip = pod_ips(pod)
        .into_iter()
        .filter_map(parse_ip_sloppy)
        .find(|ip| ip.is_ipv6() == ipv6)
        .ok_or_else(|| Error::NoMatchingIp {
            service: service.metadata.name.clone().unwrap_or_default(),
        })?;
    Ok(EndpointAddress {
        ip: ip.to_string(),
        node_name: Some(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
        ),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        hostname: None,
    })
}

/// upstream endpointslice.FindPort: a numeric targetPort as it is (none is 0); a named one is
/// the first port of that name and the Service port's protocol among the containers, then
/// among the sidecars (init containers with restartPolicy Always).
pub fn find_port(pod: &Pod, svc_port: &ServicePort) -> Result<i32, Error> {
    match &svc_port.target_port {
        None => Ok(0),
        Some(IntOrString::Int(p)) => Ok(*p),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref();
            let containers = spec.into_iter().flat_map(|s| s.containers.iter());
            let sidecars = spec
                .into_iter()
                .flat_map(|s| s.init_containers.iter().flatten())
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            containers
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name) && p.protocol == svc_port.protocol)
                .map(|p| p.container_port)
                .ok_or_else(|| Error::NoSuitablePort {
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                })
        }
    }
}

/// upstream endpointPortFromServicePort.
pub fn endpoint_port_from_service_port(svc_port: &ServicePort, port_num: i32) -> EndpointPort {
    EndpointPort {
        name: svc_port.name.clone(),
        port: port_num,
        protocol: svc_port.protocol.clone(),
        app_protocol: svc_port.app_protocol.clone(),
    }
}

/// upstream addEndpointSubset: one subset for the address and port, ready when the
/// Service tolerates unready endpoints or the pod is ready.
fn add_endpoint_subset(
    subsets: &mut Vec<EndpointSubset>,
    pod: &Pod,
    epa: &EndpointAddress,
    epp: Option<EndpointPort>,
    tolerate_unready_endpoints: bool,
) {
    let ports = Some(epp.into_iter().collect());
    if tolerate_unready_endpoints || podutil::is_pod_ready(pod) {
        subsets.push(EndpointSubset {
            addresses: Some(vec![epa.clone()]),
            ports,
            ..Default::default()
        });
    } else {
        subsets.push(EndpointSubset {
            not_ready_addresses: Some(vec![epa.clone()]),
            ports,
            ..Default::default()
        });
    }
}

/// The subsets of the Service's Endpoints (the loop of upstream syncService and
/// RepackSubsets). `pods` are the pods the Service selects.
pub fn desired_subsets(service: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let s = spec(service);
    let tolerate = s.publish_not_ready_addresses.unwrap_or(false);
    let ports = s.ports.clone().unwrap_or_default();
    let mut subsets = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate) {
            continue;
        }
        let Ok(mut epa) = pod_to_endpoint_address_for_service(service, pod) else {
            // A pod without an IP of the Service's family (a dual-stack upgrade).
            continue;
        };
        if should_set_hostname(pod, service) {
            epa.hostname = pod.spec.as_ref().and_then(|s| s.hostname.clone());
        }
        if ports.is_empty() {
            // A headless Service may have no ports.
            if s.cluster_ip.as_deref() == Some(CLUSTER_IP_NONE) {
                add_endpoint_subset(&mut subsets, pod, &epa, None, tolerate);
            }
        } else {
            for svc_port in &ports {
                // A pod without the named port is left out for that port only.
                let Ok(port_num) = find_port(pod, svc_port) else {
                    continue;
                };
                let epp = endpoint_port_from_service_port(svc_port, port_num);
                add_endpoint_subset(&mut subsets, pod, &epa, Some(epp), tolerate);
            }
        }
    }
    repack_subsets(&subsets)
}

/// The subsets with every targetRef's resourceVersion cleared and empty lists as absent
/// (Go's semantic equality: nil and empty are equal).
fn normalized(subsets: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let addrs = |a: &Option<Vec<EndpointAddress>>| -> Option<Vec<EndpointAddress>> {
        let v: Vec<EndpointAddress> = a
            .iter()
            .flatten()
            .cloned()
            .map(|mut a| {
                if let Some(r) = a.target_ref.as_mut() {
                    r.resource_version = None;
                }
                a
            })
            .collect();
        (!v.is_empty()).then_some(v)
    };
    subsets
        .into_iter()
        .flatten()
        .map(|s| EndpointSubset {
            addresses: addrs(&s.addresses),
            not_ready_addresses: addrs(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()),
        })
        .collect()
}

/// upstream endpointSubsetsEqualIgnoreResourceVersion: equal but for the pods'
/// resourceVersions in the targetRefs.
pub fn endpoint_subsets_equal_ignore_resource_version(
    a: Option<&Vec<EndpointSubset>>,
    b: Option<&Vec<EndpointSubset>>,
) -> bool {
    normalized(a) == normalized(b)
}

fn count_addresses(subsets: &[EndpointSubset]) -> (usize, usize) {
    subsets.iter().fold((0, 0), |(r, n), s| {
        (
            r + s.addresses.as_ref().map_or(0, Vec::len),
            n + s.not_ready_addresses.as_ref().map_or(0, Vec::len),
        )
    })
}

/// upstream capacityAnnotationSetCorrectly: false when over capacity (the addresses must
/// be truncated), else whether the over-capacity annotation is absent.
pub fn capacity_annotation_set_correctly(
    annotations: Option<&BTreeMap<String, String>>,
    subsets: Option<&Vec<EndpointSubset>>,
) -> bool {
    let (ready, not_ready) = count_addresses(subsets.map(Vec::as_slice).unwrap_or_default());
    if ready + not_ready > MAX_CAPACITY {
        return false;
    }
    !annotations.is_some_and(|a| a.contains_key(ENDPOINTS_OVER_CAPACITY))
}

/// upstream truncateEndpoints: above [`MAX_CAPACITY`] addresses, keep ready ones first and
/// share the room among the subsets in proportion to their size (rounded up, the last
/// subsets getting what is left). Returns whether it truncated.
pub fn truncate_endpoints(subsets: &mut [EndpointSubset]) -> bool {
    let (total_ready, total_not_ready) = count_addresses(subsets);
    if total_ready + total_not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_CAPACITY;
    let (max, num_total) = if truncate_ready {
        (MAX_CAPACITY, total_ready)
    } else {
        (MAX_CAPACITY - total_ready, total_not_ready)
    };
    let mut can_be_added = max;
    for subset in subsets.iter_mut() {
        let num_in_subset = if truncate_ready {
            subset.addresses.as_ref().map_or(0, Vec::len)
        } else {
            subset.not_ready_addresses.as_ref().map_or(0, Vec::len)
        };
        let proportional = (num_in_subset as f64 / num_total as f64 * max as f64).ceil() as usize;
        let to_be_added = proportional.min(can_be_added);
        if truncate_ready {
            if let Some(a) = subset.addresses.as_mut() {
                a.truncate(to_be_added);
            }
            subset.not_ready_addresses = Some(Vec::new());
            can_be_added -= subset.addresses.as_ref().map_or(0, Vec::len);
        } else {
            if let Some(a) = subset.not_ready_addresses.as_mut() {
                a.truncate(to_be_added);
            }
            can_be_added -= subset.not_ready_addresses.as_ref().map_or(0, Vec::len);
        }
    }
    true
}

/// upstream labelsCorrectForEndpoints: the Endpoints carry the managed-by label, and
/// otherwise exactly the Service's labels (the headless label aside).
pub fn labels_correct_for_endpoints(
    ep_labels: &BTreeMap<String, String>,
    svc_labels: &BTreeMap<String, String>,
) -> bool {
    if ep_labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
        return false;
    }
    let mut skipped = 0;
    for (k, v) in ep_labels {
        if k == IS_HEADLESS_SERVICE || k == LABEL_MANAGED_BY {
            skipped += 1;
        } else if svc_labels.get(k) != Some(v) {
            return false;
        }
    }
    svc_labels.len() == ep_labels.len() - skipped
}

/// Whether the Service has a cluster IP (upstream helper.IsServiceIPSet).
pub fn is_service_ip_set(service: &Service) -> bool {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or_default();
    !ip.is_empty() && ip != CLUSTER_IP_NONE
}

/// What one sync of a Service does to its Endpoints.
#[derive(Clone, Debug, PartialEq)]
pub enum Sync {
    /// ExternalName, or no selector: the Endpoints are not the controller's.
    Skip,
    /// The Endpoints already say what they should (no write).
    UpToDate,
    Create(Endpoints),
    Update(Endpoints),
}

/// upstream syncService for a Service that exists: the Endpoints it should have, from the
/// pods it selects (`pods`, see [`pods_for_service`]) and the Endpoints in the cache
/// (`current`), with `trigger_time` from the [`super::trigger_time::TriggerTimeTracker`].
pub fn sync_endpoints(
    service: &Service,
    pods: &[&Pod],
    current: Option<&Endpoints>,
    trigger_time: Option<Timestamp>,
) -> Sync {
    if !receives_endpoints(service) {
        return Sync::Skip;
    }
    let subsets = desired_subsets(service, pods);
    let service_labels = service.metadata.labels.clone().unwrap_or_default();
    let current = match current {
        Some(c) => c.clone(),
        None => Endpoints {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: service.metadata.name.clone(),
                namespace: service.metadata.namespace.clone(),
                labels: service.metadata.labels.clone(),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let create = current
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or_default()
        .is_empty();
    let wanted = Some(subsets.clone());
    // Compared as they are, and again repacked: Endpoints written in another order
    // (another hash, kubernetes#129652) are not rewritten for that alone.
    let subsets_equal = || {
        endpoint_subsets_equal_ignore_resource_version(current.subsets.as_ref(), wanted.as_ref())
            || endpoint_subsets_equal_ignore_resource_version(
                Some(&repack_subsets(
                    current.subsets.as_deref().unwrap_or_default(),
                )),
                wanted.as_ref(),
            )
    };
    if !create
        && subsets_equal()
        && labels_correct_for_endpoints(
            &current.metadata.labels.clone().unwrap_or_default(),
            &service_labels,
        )
        && capacity_annotation_set_correctly(
            current.metadata.annotations.as_ref(),
            current.subsets.as_ref(),
        )
    {
        return Sync::UpToDate;
    }
    let mut new = current;
    new.subsets = Some(subsets);
    let mut labels = service_labels;
    let mut annotations = new.metadata.annotations.take().unwrap_or_default();
    match trigger_time {
        Some(t) => {
            annotations.insert(ENDPOINTS_LAST_CHANGE_TRIGGER_TIME.into(), t.to_string());
        }
        None => {
            annotations.remove(ENDPOINTS_LAST_CHANGE_TRIGGER_TIME);
        }
    }
    if truncate_endpoints(new.subsets.as_mut().expect("set above")) {
        annotations.insert(ENDPOINTS_OVER_CAPACITY.into(), TRUNCATED.into());
    } else {
        annotations.remove(ENDPOINTS_OVER_CAPACITY);
    }
    if is_service_ip_set(service) {
        labels.remove(IS_HEADLESS_SERVICE);
    } else {
        labels.insert(IS_HEADLESS_SERVICE.into(), String::new());
    }
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    new.metadata.annotations = Some(annotations);
    new.metadata.labels = Some(labels);
    if create {
        Sync::Create(new)
    } else {
        Sync::Update(new)
    }
}

/// upstream podEndpointsChanged: (whether the pod changed in a way its addresses show:
/// deletion, readiness, IPs; whether it changed in a way that changes which Services
/// select it: labels, hostname, subdomain). NodeName is left out: it is set before the
/// pod has an IP.
pub fn pod_endpoints_changed(old: &Pod, new: &Pod) -> (bool, bool) {
    let host = |p: &Pod| {
        p.spec
            .as_ref()
            .map(|s| (s.hostname.clone(), s.subdomain.clone()))
            .unwrap_or_default()
    };
    let labels = |p: &Pod| p.metadata.labels.clone().unwrap_or_default();
    let labels_changed = labels(old) != labels(new) || host(old) != host(new);
    // upstream compares the deletionTimestamp pointers: two decoded pods never share one,
    // so any pod with a deletionTimestamp counts as changed.
    let pod_changed = old.metadata.deletion_timestamp.is_some()
        || new.metadata.deletion_timestamp.is_some()
        || podutil::is_pod_ready(old) != podutil::is_pod_ready(new)
        || pod_ips(old) != pod_ips(new);
    (pod_changed, labels_changed)
}

/// upstream determineNeededServiceUpdates: when a pod's labels changed, every Service of
/// either set if the pod itself changed too, else only those that gained or lost it.
pub fn determine_needed_service_updates(
    old_services: &BTreeSet<String>,
    services: &BTreeSet<String>,
    pod_changed: bool,
) -> BTreeSet<String> {
    if pod_changed {
        services.union(old_services).cloned().collect()
    } else {
        services
            .symmetric_difference(old_services)
            .cloned()
            .collect()
    }
}

/// The names of the Services (of `services`, all cached) that select a pod of `namespace`
/// with `labels` (upstream getServicesForPod).
pub fn services_for_pod(
    services: &[&Service],
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> BTreeSet<String> {
    services
        .iter()
        .filter(|s| service_selects(s, namespace, labels))
        .filter_map(|s| s.metadata.name.clone())
        .collect()
}

/// upstream GetServicesToUpdateOnPodChange: the Services a pod update concerns. None when
/// the update is a resync (same resourceVersion) or changes nothing the Endpoints show.
pub fn services_to_update(services: &[&Service], old: &Pod, new: &Pod) -> BTreeSet<String> {
    if old.metadata.resource_version == new.metadata.resource_version {
        return BTreeSet::new();
    }
    let (pod_changed, labels_changed) = pod_endpoints_changed(old, new);
    if !pod_changed && !labels_changed {
        return BTreeSet::new();
    }
    let namespace = new.metadata.namespace.as_deref().unwrap_or_default();
    let current = services_for_pod(services, namespace, new.metadata.labels.as_ref());
    if !labels_changed {
        return current;
    }
    let old_services = services_for_pod(services, namespace, old.metadata.labels.as_ref());
    determine_needed_service_updates(&old_services, &current, pod_changed)
}

/// The namespace and names of the Services a pod's add, update or delete concerns: the
/// pod handlers of upstream's endpoints and EndpointSlice controllers, both over
/// getServicesForPod (add, delete) and GetServicesToUpdateOnPodChange (update).
pub fn services_for_pod_change(
    services: &[&Service],
    change: &crate::manager::informer::Change<'_, Pod>,
) -> (String, BTreeSet<String>) {
    use crate::manager::informer::Change;
    match change {
        Change::Added(p) | Change::Deleted(p) => {
            let namespace = p.metadata.namespace.clone().unwrap_or_default();
            let names = services_for_pod(services, &namespace, p.metadata.labels.as_ref());
            (namespace, names)
        }
        Change::Updated { old, new } => (
            new.metadata.namespace.clone().unwrap_or_default(),
            services_to_update(services, old, new),
        ),
    }
}

/// upstream checkLeftoverEndpoints: the (namespace, name) of every Endpoints, synced once
/// at start so that an Endpoints whose Service went while the controller was down is
/// deleted; Endpoints used as a leader-election lock are left out.
pub fn leftover_endpoints_to_check(endpoints: &[&Endpoints]) -> Vec<(String, String)> {
    endpoints
        .iter()
        .filter(|e| {
            !e.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ELECTION_RECORD_ANNOTATION_KEY))
        })
        .map(|e| {
            (
                e.metadata.namespace.clone().unwrap_or_default(),
                e.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
