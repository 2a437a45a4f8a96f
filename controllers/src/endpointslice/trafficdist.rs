//! upstream k8s.io/endpointslice/trafficdist: the hints of a Service's
//! `trafficDistribution`. PreferClose and PreferSameZone give each ready endpoint a
//! `forZones` hint of its own zone, PreferSameNode also a `forNodes` hint of its node;
//! without one of those, hints are removed. Unchanged slices whose hints are not what
//! the heuristic would write become updates.
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointHints, ForNode, ForZone};
use rekube_crds::EndpointSlice;

/// upstream's closeTrafficDistribution values.
const CLOSE: [&str; 3] = ["PreferClose", "PreferSameZone", "PreferSameNode"];

/// upstream's hints annotations: set to Auto they ask for the topology-aware hints of
/// the topology cache (which rekube does not have) and turn trafficDistribution off.
const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
const DEPRECATED_ANNOTATION_TOPOLOGY_AWARE_HINTS: &str =
    "service.kubernetes.io/topology-aware-hints";

/// upstream hintsEnabled.
pub fn hints_enabled(annotations: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    let a = annotations.cloned().unwrap_or_default();
    let val = a
        .get(DEPRECATED_ANNOTATION_TOPOLOGY_AWARE_HINTS)
        .or_else(|| a.get(ANNOTATION_TOPOLOGY_MODE));
    matches!(val.map(String::as_str), Some("Auto" | "auto"))
}

/// upstream validTrafficDistribution (PreferSameTrafficDistribution on, as in 1.36) and
/// `!hintsEnabled`: whether the Service's trafficDistribution decides the hints.
pub fn can_use_traffic_distribution(
    traffic_distribution: Option<&str>,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    traffic_distribution.is_some_and(|t| CLOSE.contains(&t)) && !hints_enabled(annotations)
}

fn ready(e: &Endpoint) -> bool {
    e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
}

/// The heuristic: `None` is upstream's defaultHeuristic (no hints), `Some(node_hints)`
/// its preferCloseHeuristic.
#[derive(Clone, Copy)]
struct Heuristic(Option<bool>);

impl Heuristic {
    fn wanted(&self, e: &Endpoint) -> Option<EndpointHints> {
        let node_hints = self.0?;
        let for_zones = e.zone.clone().map(|name| vec![ForZone { name }]);
        let for_nodes = e
            .node_name
            .clone()
            .filter(|_| node_hints)
            .map(|name| vec![ForNode { name }]);
        (for_zones.is_some() || for_nodes.is_some()).then_some(EndpointHints {
            for_zones,
            for_nodes,
        })
    }

    /// upstream needsUpdate: a (ready, for preferClose) endpoint's hints differ from the
    /// heuristic's.
    fn needs_update(&self, slice: &EndpointSlice) -> bool {
        slice.endpoints.iter().any(|e| match self.0 {
            None => e.hints.is_some(),
            Some(_) => ready(e) && hints_differ(e.hints.as_ref(), self.wanted(e).as_ref()),
        })
    }

    fn update(&self, slice: &mut EndpointSlice) {
        for e in &mut slice.endpoints {
            if self.0.is_none() || ready(e) {
                e.hints = self.wanted(e);
            }
        }
    }
}

/// Whether the zone and node hints differ (empty lists are absent ones).
fn hints_differ(a: Option<&EndpointHints>, b: Option<&EndpointHints>) -> bool {
    let zones = |h: Option<&EndpointHints>| h.and_then(|h| h.for_zones.clone()).unwrap_or_default();
    let nodes = |h: Option<&EndpointHints>| h.and_then(|h| h.for_nodes.clone()).unwrap_or_default();
    zones(a) != zones(b) || nodes(a) != nodes(b)
}

/// upstream ReconcileHints (and, without a trafficDistribution, RemoveHintsFromSlices,
/// which is the default heuristic): unchanged slices whose hints are off join the
/// updates, and every slice to create or update gets the heuristic's hints.
pub fn reconcile_hints(
    traffic_distribution: Option<&str>,
    create: &mut [EndpointSlice],
    update: &mut Vec<EndpointSlice>,
    unchanged: &[EndpointSlice],
) {
    let h = Heuristic(
        traffic_distribution
            .filter(|t| CLOSE.contains(t))
            .map(|t| t == "PreferSameNode"),
    );
    update.extend(unchanged.iter().filter(|s| h.needs_update(s)).cloned());
    create
        .iter_mut()
        .chain(update.iter_mut())
        .for_each(|s| h.update(s));
}
