//! The VolumeBinding plugin, simplified: can the pod's PersistentVolumeClaims be used on
//! this node? (upstream: `pkg/scheduler/framework/plugins/volumebinding/volume_binding.go`
//! PreFilter and Filter, `binder.go` `GetPodVolumeClaims`, `FindPodVolumes`,
//! `checkBoundClaims`, `findMatchingVolumes`, `checkVolumeProvisions`, and
//! `component-helpers/storage/volume/pv_helpers.go` `FindMatchingVolume`,
//! `CheckNodeAffinity`, `IsDelayBindingMode`.)
//!
//! - PreFilter (all nodes at once): a missing, lost or terminating claim, or an unbound
//!   claim in Immediate binding mode, makes the pod unschedulable everywhere.
//! - Filter (per node): a bound claim's PV must exist and its node affinity match the node;
//!   an unbound WaitForFirstConsumer claim needs an Available PV of its class, big enough,
//!   with the access modes, volume mode and node affinity (the PV controller's
//!   `FindMatchingVolume`, [`index::find_matching_volume`]: the smallest is taken, no PV
//!   twice), or else a class whose provisioner can provision on the node (its
//!   allowedTopologies match) and, for a CSI driver whose CSIDriver says
//!   `storageCapacity: true`, a CSIStorageCapacity of the class that covers the node and
//!   holds the claim (upstream `hasEnoughCapacity`, [`has_enough_capacity`]). The result is
//!   [`PodVolumes`]: PreBind (the scheduler's
//!   `pre_bind_volumes`) pre-binds each matched PV to its claim (`spec.claimRef`, upstream
//!   `bindAPIUpdate`) and sets `volume.kubernetes.io/selected-node` on the claims to
//!   provision; the PV controller completes the binding or provisions for that node.
//!
//! rekube differences: a claim counts as bound when it names a volume and is marked
//! bind-completed *or* is in phase Bound; the pod is bound without waiting for its claims'
//! binding to complete (upstream's PreBind waits; rekube's node agent waits for bound claims
//! before it mounts). Beyond upstream, the capacity check counts what is already handed
//! out and not yet provisioned: a CSIStorageCapacity's figure is what its driver had when
//! it was published, so the requests of the unbound claims of the class already handed to
//! a node it covers (`volume.kubernetes.io/selected-node`, or assumed by this scheduler
//! for a pod not yet bound), and of the pod's own earlier claims, are taken off its
//! `capacity` (the pool; `maximumVolumeSize` bounds each claim alone, as upstream): pods
//! scheduled at once, between two refreshes of the object, never both land on a node that
//! holds only one of their volumes (topolvm#117). The requests count as asked; a driver
//! that rounds sizes up (rekube-csi: whole MiB, at least 16 MiB) may need a little more
//! than they say, which its own refusal and the next refresh settle. Not ported: CSI
//! migration, scoring.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Volume;
use rekube_crds::pod_refs::{volume_claim_name, volume_is_for_pod};
use rekube_crds::quantity::amount;
use rekube_crds::{CSIStorageCapacity, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass};

use super::filters::Unschedulable;
use super::nodeaffinity::match_topology_selector_terms;
use super::snapshot::{NodeInfo, Snapshot};
use crate::pvcontroller::index::{self, storage_request};
use crate::util::labels::selector_matches;

pub const VOLUME_BINDING: &str = "VolumeBinding";

/// Upstream `ErrReasonBindConflict`.
pub const ERR_REASON_BIND_CONFLICT: &str =
    "node(s) didn't find available persistent volumes to bind";
/// Upstream `ErrReasonNodeConflict` (v1.33+ words it "node(s) didn't match
/// PersistentVolume's node affinity").
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Upstream `ErrReasonPVNotExist`.
pub const ERR_REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// Upstream `ErrReasonNotEnoughSpace`.
pub const ERR_REASON_NOT_ENOUGH_SPACE: &str = "node(s) did not have enough free storage";
/// Upstream's PreFilter reason for unbound Immediate claims.
pub const ERR_REASON_UNBOUND_IMMEDIATE_PVC: &str =
    "pod has unbound immediate PersistentVolumeClaims";

pub use rekube_crds::storage_keys::{
    ANN_BETA_STORAGE_CLASS as ANNOTATION_BETA_STORAGE_CLASS,
    ANN_BIND_COMPLETED as ANNOTATION_BIND_COMPLETED, ANN_SELECTED_NODE as ANNOTATION_SELECTED_NODE,
};
/// A class with this provisioner only binds pre-created PVs (upstream
/// `NotSupportedProvisioner`).
pub const NOT_SUPPORTED_PROVISIONER: &str = "kubernetes.io/no-provisioner";
pub const VOLUME_BINDING_WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

/// The pod's claims, sorted out by PreFilter (upstream `PodVolumeClaims`).
#[derive(Debug, Clone, Default)]
pub struct PodVolumeClaims<'a> {
    /// Claims bound to a PV.
    pub bound: Vec<&'a PersistentVolumeClaim>,
    /// Unbound claims of a WaitForFirstConsumer class.
    pub delay_binding: Vec<&'a PersistentVolumeClaim>,
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn claim_name(pvc: &PersistentVolumeClaim) -> &str {
    pvc.metadata.name.as_deref().unwrap_or_default()
}

/// The claim's class: the beta annotation, else `storageClassName` (upstream
/// `GetPersistentVolumeClaimClass`).
pub fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    annotation(&pvc.metadata, ANNOTATION_BETA_STORAGE_CLASS)
        .or_else(|| pvc.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or_default()
}

/// The PV's class (upstream `GetPersistentVolumeClass`).
pub fn volume_class(pv: &PersistentVolume) -> &str {
    annotation(&pv.metadata, ANNOTATION_BETA_STORAGE_CLASS)
        .or_else(|| pv.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or_default()
}

fn volume_name(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

fn claim_phase(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Whether the claim is bound (upstream `isPVCFullyBound`, plus phase Bound).
pub fn is_claim_bound(pvc: &PersistentVolumeClaim) -> bool {
    !volume_name(pvc).is_empty()
        && (annotation(&pvc.metadata, ANNOTATION_BIND_COMPLETED).is_some()
            || claim_phase(pvc) == "Bound")
}

/// Whether the claim's class binds on first consumer (upstream `IsDelayBindingMode`,
/// [`pvcontroller::pv_controller::is_delay_binding_mode`](crate::pvcontroller::pv_controller::is_delay_binding_mode)
/// over the snapshot): a claim without class, or of a class that does not exist, binds
/// immediately; so does a class without `volumeBindingMode` (upstream's error), which the
/// apiserver defaults.
pub fn is_delay_binding_mode(snapshot: &Snapshot, pvc: &PersistentVolumeClaim) -> bool {
    crate::pvcontroller::pv_controller::is_delay_binding_mode(
        pvc,
        snapshot.storage_class(claim_class(pvc)),
    )
    .unwrap_or(false)
}

/// The claim a volume uses ([`volume_claim_name`]), and whether it is a generic ephemeral
/// volume's.
fn pod_volume_claim(pod: &Pod, vol: &Volume) -> Option<(String, bool)> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    volume_claim_name(pod_name, vol).map(|c| (c, vol.persistent_volume_claim.is_none()))
}

/// PreFilter: `Ok(None)` when the pod uses no claim (upstream skips the plugin), the
/// claims sorted out, or the message that makes the pod unschedulable on every node
/// (upstream `podHasPVCs` and `GetPodVolumeClaims`).
pub fn pre_filter<'a>(
    snapshot: &'a Snapshot,
    pod: &Pod,
) -> Result<Option<PodVolumeClaims<'a>>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let mut claims = PodVolumeClaims::default();
    let mut any = false;
    let mut unbound_immediate = false;
    for vol in volumes {
        let Some((name, ephemeral)) = pod_volume_claim(pod, vol) else {
            continue;
        };
        any = true;
        let Some(pvc) = snapshot.pvc(namespace, &name) else {
            return Err(if ephemeral {
                format!(
                    "waiting for ephemeral volume controller to create the persistentvolumeclaim {name:?}"
                )
            } else {
                format!("persistentvolumeclaim {name:?} not found")
            });
        };
        if claim_phase(pvc) == "Lost" {
            return Err(format!(
                "persistentvolumeclaim {name:?} bound to non-existent persistentvolume {:?}",
                volume_name(pvc)
            ));
        }
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim {name:?} is being deleted"));
        }
        if ephemeral {
            volume_is_for_pod(pod, pvc)?;
        }
        if is_claim_bound(pvc) {
            claims.bound.push(pvc);
        } else if is_delay_binding_mode(snapshot, pvc) && volume_name(pvc).is_empty() {
            claims.delay_binding.push(pvc);
        } else {
            // Immediate claims, and claims pre-bound to a PV by name, wait for the binder.
            unbound_immediate = true;
        }
    }
    if !any {
        return Ok(None);
    }
    if unbound_immediate {
        return Err(ERR_REASON_UNBOUND_IMMEDIATE_PVC.to_string());
    }
    Ok(Some(claims))
}

/// Whether the PV's node affinity admits the node (upstream `CheckNodeAffinity`, which
/// sees the node's labels only).
pub fn check_node_affinity(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    index::check_node_affinity(pv, node.labels()).is_ok()
}

/// The volume to bind the claim to on this node: upstream `FindMatchingVolume` on the
/// scheduler's path ([`index::find_matching_volume`] with the node, `delayBinding` set): a
/// volume pre-bound to the claim if its node affinity fits, else the smallest Available
/// volume of the claim's class that is big enough and matches the claim's selector, access
/// modes, volume mode and the node, not in `excluded`. An invalid selector matches nothing.
pub fn find_matching_volume<'a>(
    pvc: &PersistentVolumeClaim,
    pvs: &[&'a PersistentVolume],
    node: &NodeInfo,
    excluded: &BTreeSet<&str>,
) -> Option<&'a PersistentVolume> {
    index::find_matching_volume(pvc, pvs, Some(&node.node), excluded, true)
        .ok()
        .flatten()
        .copied()
}

/// upstream `checkVolumeProvisions`' answer for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provisions {
    /// Every claim can be provisioned here.
    Satisfied,
    /// A claim's class cannot provision here (no provisioner, allowedTopologies):
    /// upstream's `provisionSatisfied` false.
    NotProvisionable,
    /// A claim does not fit in the driver's published capacity: `sufficientStorage` false.
    NotEnoughSpace,
}

/// Whether the claims can be provisioned on the node (upstream `checkVolumeProvisions`),
/// claim by claim, the first that cannot deciding: its class has a provisioner, its
/// allowedTopologies admit the node, and it fits in the capacity the driver publishes
/// ([`has_enough_capacity`]; the pod's earlier claims of the same class counted first).
/// `own` are the pod's claims (never counted as another pod's).
fn check_volume_provisions(
    snapshot: &Snapshot,
    claims: &[&PersistentVolumeClaim],
    own: &BTreeSet<&str>,
    node: &NodeInfo,
) -> Provisions {
    for (i, pvc) in claims.iter().enumerate() {
        let Some(class) = snapshot.storage_class(claim_class(pvc)) else {
            return Provisions::NotProvisionable;
        };
        if class.provisioner.is_empty()
            || class.provisioner == NOT_SUPPORTED_PROVISIONER
            || !match_topology_selector_terms(
                class.allowed_topologies.as_deref().unwrap_or_default(),
                node.labels(),
            )
        {
            return Provisions::NotProvisionable;
        }
        let earlier: i64 = claims[..i]
            .iter()
            .filter(|c| claim_class(c) == claim_class(pvc))
            .map(|c| storage_request(c).value())
            .sum();
        if !has_enough_capacity(snapshot, pvc, class, node, own, earlier) {
            return Provisions::NotEnoughSpace;
        }
    }
    Provisions::Satisfied
}

/// upstream `hasEnoughCapacity`: a claim without a storage request, or of a class whose
/// provisioner has no CSIDriver or one without `storageCapacity: true`, needs no check;
/// else some CSIStorageCapacity of the class (any namespace) must cover the node
/// ([`node_has_access`]) and hold the request ([`capacity_sufficient`]). Beyond upstream:
/// what that object covers and is handed out but not yet provisioned ([`in_flight_bytes`])
/// and `earlier` bytes of the pod's own claims are taken off the object's figure first.
pub fn has_enough_capacity(
    snapshot: &Snapshot,
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &NodeInfo,
    own: &BTreeSet<&str>,
    earlier: i64,
) -> bool {
    let requested = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    let Some(requested) = requested else {
        return true;
    };
    let opted_in = snapshot
        .csi_driver(&class.provisioner)
        .is_some_and(|d| d.spec.storage_capacity == Some(true));
    if !opted_in {
        return true;
    }
    let class_name = class.metadata.name.as_deref().unwrap_or_default();
    let size = amount(requested).value();
    snapshot.capacities().iter().any(|capacity| {
        capacity.storage_class_name == class_name
            && node_has_access(node, capacity)
            && capacity_sufficient(capacity, size)
            && pool_sufficient(
                capacity,
                size.saturating_add(earlier)
                    .saturating_add(in_flight_bytes(snapshot, capacity, own)),
            )
    })
}

/// rekube's addition: the object's `capacity` (the pool, when published) holds `total`
/// bytes: this claim, the pod's earlier claims and what is handed out. Only the pool: the
/// object's `maximumVolumeSize` bounds one volume, which [`capacity_sufficient`] checks
/// for the claim alone, as upstream.
fn pool_sufficient(capacity: &CSIStorageCapacity, total: i64) -> bool {
    capacity
        .capacity
        .as_ref()
        .is_none_or(|pool| amount(pool).value() >= total)
}

/// upstream `capacitySufficient`: the object's maximumVolumeSize, else its capacity
/// (`volumeLimit`), is at least `size` bytes; an object with neither holds nothing.
pub fn capacity_sufficient(capacity: &CSIStorageCapacity, size: i64) -> bool {
    capacity
        .maximum_volume_size
        .as_ref()
        .or(capacity.capacity.as_ref())
        .is_some_and(|limit| amount(limit).value() >= size)
}

/// upstream `nodeHasAccess`: the object's nodeTopology selects the node's labels (no
/// nodeTopology: no node; an invalid selector: none).
pub fn node_has_access(node: &NodeInfo, capacity: &CSIStorageCapacity) -> bool {
    capacity.node_topology.is_some()
        && selector_matches(capacity.node_topology.as_ref(), node.labels())
}

/// rekube's addition to the capacity check: the bytes requested by the claims of the
/// object's class that are handed to a node the object covers ([`Snapshot::selected_node`]:
/// annotated, or assumed by this scheduler) and not yet bound nor being deleted, but for
/// the pod's own (`own`, as `namespace/name`): the object's figure does not count them yet.
pub fn in_flight_bytes(
    snapshot: &Snapshot,
    capacity: &CSIStorageCapacity,
    own: &BTreeSet<&str>,
) -> i64 {
    snapshot
        .pvcs()
        .filter(|c| claim_class(c) == capacity.storage_class_name)
        .filter(|c| !is_claim_bound(c) && c.metadata.deletion_timestamp.is_none())
        .filter(|c| !own.contains(claim_key(c).as_str()))
        .filter(|c| {
            snapshot
                .selected_node(c)
                .and_then(|n| snapshot.node(n))
                .is_some_and(|n| node_has_access(n, capacity))
        })
        .map(|c| storage_request(c).value())
        .sum()
}

/// `namespace/name` of a claim.
fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        claim_name(pvc)
    )
}

/// What the VolumeBinding PreBind writes for the pod's WaitForFirstConsumer claims should
/// the node be chosen (upstream `PodVolumes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    /// `(claim, volume)`: a matching volume, pre-bound to the claim in PreBind (its
    /// `spec.claimRef`, upstream `bindAPIUpdate`); the PV controller completes the binding.
    pub static_bindings: Vec<(String, String)>,
    /// Claims to provision on the node that do not carry it yet in
    /// `volume.kubernetes.io/selected-node` (annotated in PreBind).
    pub dynamic_provisions: Vec<String>,
}

impl PodVolumes {
    pub fn is_empty(&self) -> bool {
        self.static_bindings.is_empty() && self.dynamic_provisions.is_empty()
    }
}

/// Filter: `Ok` with what PreBind is to write for the pod's WaitForFirstConsumer claims on
/// this node, or the reasons (upstream `FindPodVolumes`, its reasons in its order).
pub fn filter(
    snapshot: &Snapshot,
    claims: &PodVolumeClaims<'_>,
    node: &NodeInfo,
) -> Result<PodVolumes, Unschedulable> {
    let mut bound_ok = true;
    let mut pvs_found = true;
    for pvc in &claims.bound {
        match snapshot.pv(volume_name(pvc)) {
            None => {
                pvs_found = false;
                break;
            }
            Some(pv) if !check_node_affinity(pv, node) => {
                bound_ok = false;
                break;
            }
            Some(_) => {}
        }
    }
    let volumes = if claims.delay_binding.is_empty() {
        Ok(PodVolumes::default())
    } else {
        find_pod_volumes(snapshot, claims, node)
    };
    let mut reasons = Vec::new();
    if !bound_ok {
        reasons.push(ERR_REASON_NODE_CONFLICT.to_string());
    }
    if let Err(reason) = &volumes {
        reasons.push(reason.to_string());
    }
    if !pvs_found {
        reasons.push(ERR_REASON_PV_NOT_EXIST.to_string());
    }
    match volumes {
        Ok(volumes) if reasons.is_empty() => Ok(volumes),
        _ => Err(Unschedulable {
            plugin: VOLUME_BINDING,
            reasons,
        }),
    }
}

/// The unbound WaitForFirstConsumer claims on this node (upstream `findMatchingVolumes`
/// then `checkVolumeProvisions`): each matched to the smallest fitting volume, no volume
/// twice, the smallest claims first (one already handed to this node too, should a volume
/// have come meanwhile); the rest provisioned if their class can on the node and they fit
/// in its published capacity. The reason when they cannot all be satisfied here:
/// [`ERR_REASON_BIND_CONFLICT`] or [`ERR_REASON_NOT_ENOUGH_SPACE`].
fn find_pod_volumes(
    snapshot: &Snapshot,
    claims: &PodVolumeClaims<'_>,
    node: &NodeInfo,
) -> Result<PodVolumes, &'static str> {
    // A claim already given another node can be used there only.
    if claims.delay_binding.iter().any(|c| {
        annotation(&c.metadata, ANNOTATION_SELECTED_NODE).is_some_and(|n| n != node.name())
    }) {
        return Err(ERR_REASON_BIND_CONFLICT);
    }
    let mut to_match = claims.delay_binding.clone();
    to_match.sort_by_key(|c| storage_request(c));
    let mut to_provision = Vec::new();
    let mut chosen: BTreeSet<&str> = BTreeSet::new();
    let mut out = PodVolumes::default();
    for pvc in to_match {
        let class = claim_class(pvc);
        let pvs: Vec<&PersistentVolume> = snapshot
            .pvs()
            .filter(|pv| volume_class(pv) == class)
            .collect();
        match find_matching_volume(pvc, &pvs, node, &chosen) {
            Some(pv) => {
                let pv_name = pv.metadata.name.as_deref().unwrap_or_default();
                chosen.insert(pv_name);
                out.static_bindings
                    .push((claim_name(pvc).to_string(), pv_name.to_string()));
            }
            None => to_provision.push(pvc),
        }
    }
    if !to_provision.is_empty() {
        let own_keys: Vec<String> = claims.delay_binding.iter().map(|c| claim_key(c)).collect();
        let own: BTreeSet<&str> = own_keys.iter().map(String::as_str).collect();
        match check_volume_provisions(snapshot, &to_provision, &own, node) {
            Provisions::Satisfied => {}
            Provisions::NotProvisionable => return Err(ERR_REASON_BIND_CONFLICT),
            Provisions::NotEnoughSpace => return Err(ERR_REASON_NOT_ENOUGH_SPACE),
        }
    }
    // In the pod's volume order, as the claims came.
    let order = |name: &str| {
        claims
            .delay_binding
            .iter()
            .position(|c| claim_name(c) == name)
    };
    out.static_bindings.sort_by_key(|(c, _)| order(c));
    out.dynamic_provisions = claims
        .delay_binding
        .iter()
        .filter(|c| to_provision.iter().any(|p| claim_name(p) == claim_name(c)))
        .filter(|c| annotation(&c.metadata, ANNOTATION_SELECTED_NODE) != Some(node.name()))
        .map(|c| claim_name(c).to_string())
        .collect();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests: one tuple per case
mod tests {
    use super::*;
    use crate::scheduler::testing::{NodeBuilder, PodBuilder, claim_ref, pv, pvc, storage_class};
    use k8s_openapi::api::core::v1::{
        EphemeralVolumeSource, TopologySelectorLabelRequirement, TopologySelectorTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use rekube_crds::{Node, StorageClass};
    use std::collections::BTreeMap;

    fn nodes() -> Vec<Node> {
        vec![
            NodeBuilder::new("a").capacity("4", "8Gi").build(),
            NodeBuilder::new("b").capacity("4", "8Gi").build(),
        ]
    }

    fn wffc() -> StorageClass {
        storage_class("local", "WaitForFirstConsumer", NOT_SUPPORTED_PROVISIONER)
    }

    fn snap(
        pvs: Vec<PersistentVolume>,
        pvcs: Vec<PersistentVolumeClaim>,
        classes: Vec<StorageClass>,
    ) -> Snapshot {
        Snapshot::new(&nodes(), &[], &pvs, &pvcs, &classes)
    }

    fn run(s: &Snapshot, pod: &Pod, node: &str) -> Result<Vec<String>, Vec<String>> {
        let claims = pre_filter(s, pod).map_err(|e| vec![format!("prefilter: {e}")])?;
        let Some(claims) = claims else {
            return Ok(vec![]);
        };
        filter(s, &claims, s.node(node).unwrap())
            .map(|v| {
                v.static_bindings
                    .iter()
                    .map(|(c, pv)| format!("bind {c} {pv}"))
                    .chain(
                        v.dynamic_provisions
                            .iter()
                            .map(|c| format!("provision {c}")),
                    )
                    .collect()
            })
            .map_err(|u| u.reasons)
    }

    fn annotated(mut c: PersistentVolumeClaim, k: &str, v: &str) -> PersistentVolumeClaim {
        c.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        c
    }

    #[test]
    fn pre_filter_table() {
        let pod = PodBuilder::new("p").pvc("data").build();
        let mut lost = pvc("data", "local", "1Gi", Some("pv1"));
        lost.status.as_mut().unwrap().phase = Some("Lost".into());
        let mut deleting = pvc("data", "local", "1Gi", None);
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let mut prebound = pvc("data", "local", "1Gi", Some("pv1"));
        prebound.metadata.annotations = None;
        prebound.status = None;
        let cases: Vec<(
            &str,
            Vec<PersistentVolumeClaim>,
            Vec<StorageClass>,
            Result<(usize, usize), String>,
        )> = vec![
            (
                "missing claim",
                vec![],
                vec![],
                Err("persistentvolumeclaim \"data\" not found".into()),
            ),
            (
                "lost claim",
                vec![lost],
                vec![],
                Err(
                    "persistentvolumeclaim \"data\" bound to non-existent persistentvolume \"pv1\""
                        .into(),
                ),
            ),
            (
                "deleting claim",
                vec![deleting],
                vec![],
                Err("persistentvolumeclaim \"data\" is being deleted".into()),
            ),
            (
                "unbound immediate claim",
                vec![pvc("data", "fast", "1Gi", None)],
                vec![storage_class("fast", "Immediate", "x")],
                Err(ERR_REASON_UNBOUND_IMMEDIATE_PVC.into()),
            ),
            (
                "unbound claim of a missing class is immediate",
                vec![pvc("data", "nope", "1Gi", None)],
                vec![],
                Err(ERR_REASON_UNBOUND_IMMEDIATE_PVC.into()),
            ),
            (
                "claim pre-bound by name waits for the binder",
                vec![prebound],
                vec![wffc()],
                Err(ERR_REASON_UNBOUND_IMMEDIATE_PVC.into()),
            ),
            (
                "bound claim",
                vec![pvc("data", "local", "1Gi", Some("pv1"))],
                vec![],
                Ok((1, 0)),
            ),
            (
                "wffc claim",
                vec![pvc("data", "local", "1Gi", None)],
                vec![wffc()],
                Ok((0, 1)),
            ),
        ];
        for (name, pvcs, classes, want) in cases {
            let s = snap(vec![], pvcs, classes);
            let got = pre_filter(&s, &pod).map(|c| {
                let c = c.unwrap();
                (c.bound.len(), c.delay_binding.len())
            });
            assert_eq!(got, want, "{name}");
        }
        let s = snap(vec![], vec![], vec![]);
        assert!(
            pre_filter(&s, &PodBuilder::new("p").build())
                .unwrap()
                .is_none(),
            "no claims: skip"
        );
    }

    #[test]
    fn ephemeral_volumes() {
        let mut pod = PodBuilder::new("p").build();
        pod.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "scratch".into(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Default::default()
        }]);
        let s = snap(vec![], vec![], vec![]);
        assert_eq!(
            pre_filter(&s, &pod).unwrap_err(),
            "waiting for ephemeral volume controller to create the persistentvolumeclaim \"p-scratch\""
        );
        let claim = pvc("p-scratch", "local", "1Gi", Some("pv1"));
        let s = snap(vec![], vec![claim.clone()], vec![]);
        assert_eq!(
            pre_filter(&s, &pod).unwrap_err(),
            "PVC default/p-scratch was not created for pod default/p (pod is not owner)"
        );
        let mut owned = claim;
        owned.metadata.owner_references = PodBuilder::new("x")
            .controlled_by("Pod", "uid-p")
            .build()
            .metadata
            .owner_references;
        let s = snap(vec![], vec![owned], vec![]);
        assert_eq!(pre_filter(&s, &pod).unwrap().unwrap().bound.len(), 1);
    }

    #[test]
    fn bound_claims() {
        let pod = PodBuilder::new("p").pvc("data").build();
        let s = snap(
            vec![pv("pv1", "local", "1Gi", Some("b"))],
            vec![pvc("data", "local", "1Gi", Some("pv1"))],
            vec![],
        );
        assert_eq!(run(&s, &pod, "b"), Ok(vec![]));
        assert_eq!(
            run(&s, &pod, "a"),
            Err(vec![ERR_REASON_NODE_CONFLICT.to_string()])
        );
        let s = snap(
            vec![pv("pv1", "local", "1Gi", None)],
            vec![pvc("data", "local", "1Gi", Some("pv1"))],
            vec![],
        );
        assert_eq!(run(&s, &pod, "a"), Ok(vec![]), "no node affinity: any node");
        let s = snap(
            vec![],
            vec![pvc("data", "local", "1Gi", Some("pv1"))],
            vec![],
        );
        assert_eq!(
            run(&s, &pod, "a"),
            Err(vec![ERR_REASON_PV_NOT_EXIST.to_string()])
        );
        // Bound by phase only (rekube's binder may not set bind-completed).
        let mut by_phase = pvc("data", "local", "1Gi", Some("pv1"));
        by_phase.metadata.annotations = None;
        let s = snap(
            vec![pv("pv1", "local", "1Gi", Some("b"))],
            vec![by_phase],
            vec![],
        );
        assert_eq!(
            run(&s, &pod, "a"),
            Err(vec![ERR_REASON_NODE_CONFLICT.to_string()])
        );
    }

    #[test]
    fn wait_for_first_consumer_static_matching() {
        let pod = PodBuilder::new("p").pvc("data").build();
        let claim = || pvc("data", "local", "5Gi", None);
        let bind = Err(vec![ERR_REASON_BIND_CONFLICT.to_string()]);
        let ok = Ok(vec!["bind data pv".to_string()]);
        let mut pending = pv("pending", "local", "5Gi", Some("a"));
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        let mut released = pv("released", "local", "5Gi", Some("a"));
        released.status.as_mut().unwrap().phase = Some("Released".into());
        let mut rwx = pv("rwx", "local", "5Gi", Some("a"));
        rwx.spec.as_mut().unwrap().access_modes = Some(vec!["ReadWriteMany".into()]);
        let mut block = pv("block", "local", "5Gi", Some("a"));
        block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        let cases: Vec<(
            &str,
            Vec<PersistentVolume>,
            Result<Vec<String>, Vec<String>>,
        )> = vec![
            ("no PV", vec![], bind.clone()),
            (
                "a PV on the node",
                vec![pv("pv", "local", "5Gi", Some("a"))],
                ok.clone(),
            ),
            (
                "a PV on another node",
                vec![pv("pv", "local", "5Gi", Some("b"))],
                bind.clone(),
            ),
            (
                "a PV without node affinity",
                vec![pv("pv", "local", "5Gi", None)],
                ok.clone(),
            ),
            (
                "too small",
                vec![pv("pv", "local", "4Gi", Some("a"))],
                bind.clone(),
            ),
            (
                "bigger is fine",
                vec![pv("pv", "local", "10Gi", Some("a"))],
                ok.clone(),
            ),
            (
                "another class",
                vec![pv("pv", "other", "5Gi", Some("a"))],
                bind.clone(),
            ),
            (
                "taken by another claim",
                vec![claim_ref(pv("pv", "local", "5Gi", Some("a")), "other")],
                bind.clone(),
            ),
            (
                "pre-bound to this claim",
                vec![claim_ref(pv("pv", "local", "5Gi", Some("a")), "data")],
                ok.clone(),
            ),
            (
                "pre-bound to this claim, other node",
                vec![claim_ref(pv("pv", "local", "5Gi", Some("b")), "data")],
                bind.clone(),
            ),
            (
                "Pending does not count as Available",
                vec![pending],
                bind.clone(),
            ),
            ("Released does not", vec![released], bind.clone()),
            ("access modes must be offered", vec![rwx], bind.clone()),
            ("volume modes must agree", vec![block], bind.clone()),
        ];
        for (name, pvs, want) in cases {
            let s = snap(pvs, vec![claim()], vec![wffc()]);
            assert_eq!(run(&s, &pod, "a"), want, "{name}");
        }
        // Annotated with this node (an earlier attempt provisioning): a volume that has
        // come meanwhile is still bound; with another node: only there.
        let s = snap(
            vec![pv("pv", "local", "5Gi", None)],
            vec![annotated(claim(), ANNOTATION_SELECTED_NODE, "a")],
            vec![wffc()],
        );
        assert_eq!(run(&s, &pod, "a"), ok);
        assert_eq!(run(&s, &pod, "b"), bind);
    }

    #[test]
    fn smallest_pv_and_no_pv_twice() {
        let pvs = [
            pv("big", "local", "10Gi", None),
            pv("small", "local", "5Gi", None),
            pv("tiny", "local", "1Gi", None),
        ];
        let s = snap(
            pvs.to_vec(),
            vec![pvc("data", "local", "2Gi", None)],
            vec![wffc()],
        );
        let refs: Vec<&PersistentVolume> = s.pvs().collect();
        let claim = s.pvc("default", "data").unwrap();
        let got = find_matching_volume(claim, &refs, s.node("a").unwrap(), &BTreeSet::new());
        assert_eq!(got.and_then(|p| p.metadata.name.as_deref()), Some("small"));
        let excluded = BTreeSet::from(["small"]);
        let got = find_matching_volume(claim, &refs, s.node("a").unwrap(), &excluded);
        assert_eq!(got.and_then(|p| p.metadata.name.as_deref()), Some("big"));

        // Two claims, one PV: the second has none left.
        let pod = PodBuilder::new("p").pvc("one").pvc("two").build();
        let s = snap(
            vec![pv("only", "local", "5Gi", None)],
            vec![
                pvc("one", "local", "1Gi", None),
                pvc("two", "local", "1Gi", None),
            ],
            vec![wffc()],
        );
        assert_eq!(
            run(&s, &pod, "a"),
            Err(vec![ERR_REASON_BIND_CONFLICT.to_string()])
        );
        let s = snap(
            vec![
                pv("p1", "local", "5Gi", None),
                pv("p2", "local", "5Gi", None),
            ],
            vec![
                pvc("one", "local", "1Gi", None),
                pvc("two", "local", "1Gi", None),
            ],
            vec![wffc()],
        );
        assert_eq!(
            run(&s, &pod, "a"),
            Ok(vec!["bind one p1".to_string(), "bind two p2".to_string()])
        );
    }

    #[test]
    fn dynamic_provisioning() {
        let pod = PodBuilder::new("p").pvc("data").build();
        let claim = || vec![pvc("data", "dyn", "5Gi", None)];
        let class = storage_class("dyn", "WaitForFirstConsumer", "example.com/csi");
        let s = snap(vec![], claim(), vec![class.clone()]);
        assert_eq!(run(&s, &pod, "a"), Ok(vec!["provision data".to_string()]));
        let mut zoned = class;
        zoned.allowed_topologies = Some(vec![TopologySelectorTerm {
            match_label_expressions: Some(vec![TopologySelectorLabelRequirement {
                key: "kubernetes.io/hostname".into(),
                values: vec!["b".into()],
            }]),
        }]);
        let s = snap(vec![], claim(), vec![zoned]);
        assert_eq!(
            run(&s, &pod, "a"),
            Err(vec![ERR_REASON_BIND_CONFLICT.to_string()])
        );
        assert_eq!(run(&s, &pod, "b"), Ok(vec!["provision data".to_string()]));
        // Already annotated with this node: nothing left to write.
        let s = snap(
            vec![],
            vec![annotated(
                pvc("data", "dyn", "5Gi", None),
                ANNOTATION_SELECTED_NODE,
                "a",
            )],
            vec![storage_class(
                "dyn",
                "WaitForFirstConsumer",
                "example.com/csi",
            )],
        );
        assert_eq!(run(&s, &pod, "a"), Ok(vec![]));
    }

    #[test]
    fn bound_and_unbound_reasons_together() {
        let pod = PodBuilder::new("p").pvc("bound").pvc("wffc").build();
        let s = snap(
            vec![pv("pv1", "local", "1Gi", Some("b"))],
            vec![
                pvc("bound", "local", "1Gi", Some("pv1")),
                pvc("wffc", "local", "1Gi", None),
            ],
            vec![wffc()],
        );
        assert_eq!(
            run(&s, &pod, "a"),
            Err(vec![
                ERR_REASON_NODE_CONFLICT.to_string(),
                ERR_REASON_BIND_CONFLICT.to_string()
            ])
        );
    }

    // --- Capacity (upstream binder_test.go TestCapacity and
    // TestFindPodVolumesWithProvisioning, v1.36.3), then rekube's in-flight accounting. ---

    const PROVISIONER: &str = "test-provisioner";
    const NODE_KEY: &str = "nodeKey";
    const WAIT_CLASS: &str = "waitClass";
    const IMMEDIATE_CLASS: &str = "immediateClass";
    const WAIT_PROVISIONER: &str = "waitClassWithProvisioner";
    const TOPO_MISMATCH: &str = "topoMismatchClass";

    /// upstream's node1 and node2 (label `nodeKey`), with room for pods.
    fn capacity_nodes() -> Vec<Node> {
        ["node1", "node2"]
            .iter()
            .map(|n| {
                NodeBuilder::new(n)
                    .capacity("4", "8Gi")
                    .label(NODE_KEY, n)
                    .build()
            })
            .collect()
    }

    /// upstream newTestBinder's four classes.
    fn capacity_classes() -> Vec<StorageClass> {
        let topology = |values: &[&str]| {
            Some(vec![TopologySelectorTerm {
                match_label_expressions: Some(vec![TopologySelectorLabelRequirement {
                    key: NODE_KEY.into(),
                    values: values.iter().map(|v| v.to_string()).collect(),
                }]),
            }])
        };
        let mut with_provisioner =
            storage_class(WAIT_PROVISIONER, "WaitForFirstConsumer", PROVISIONER);
        with_provisioner.allowed_topologies = topology(&["node1", "reference-value"]);
        let mut mismatch = storage_class(TOPO_MISMATCH, "WaitForFirstConsumer", PROVISIONER);
        mismatch.allowed_topologies = topology(&["reference-value"]);
        vec![
            with_provisioner,
            storage_class(IMMEDIATE_CLASS, "Immediate", ""),
            storage_class(
                WAIT_CLASS,
                "WaitForFirstConsumer",
                NOT_SUPPORTED_PROVISIONER,
            ),
            mismatch,
        ]
    }

    /// upstream makeCSIDriver.
    fn csi_driver(name: &str, storage_capacity: bool) -> rekube_crds::CSIDriver {
        rekube_crds::CSIDriver {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: k8s_openapi::api::storage::v1::CSIDriverSpec {
                storage_capacity: Some(storage_capacity),
                ..Default::default()
            },
        }
    }

    /// upstream makeCapacity: an empty nodeTopology (every node), or the node's `nodeKey`.
    fn csc(class: &str, node: Option<&str>, capacity: &str, max: &str) -> CSIStorageCapacity {
        use crate::scheduler::testing::q;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        CSIStorageCapacity {
            storage_class_name: class.into(),
            node_topology: Some(LabelSelector {
                match_labels: node.map(|n| BTreeMap::from([(NODE_KEY.to_string(), n.to_string())])),
                match_expressions: None,
            }),
            capacity: (!capacity.is_empty()).then(|| q(capacity)),
            maximum_volume_size: (!max.is_empty()).then(|| q(max)),
            ..Default::default()
        }
    }

    fn capacity_snap(
        pvs: Vec<PersistentVolume>,
        pvcs: Vec<PersistentVolumeClaim>,
        driver: Option<rekube_crds::CSIDriver>,
        capacities: Vec<CSIStorageCapacity>,
    ) -> Snapshot {
        let mut s = Snapshot::new(&capacity_nodes(), &[], &pvs, &pvcs, &capacity_classes());
        s.set_storage_capacity(&driver.into_iter().collect::<Vec<_>>(), &capacities);
        s
    }

    fn pod_of(claims: &[&PersistentVolumeClaim]) -> Pod {
        claims
            .iter()
            .fold(PodBuilder::new("test-pod"), |p, c| p.pvc(claim_name(c)))
            .build()
    }

    /// upstream's provisionedPVC: 1Gi of waitClassWithProvisioner, unbound.
    fn provisioned_pvc() -> PersistentVolumeClaim {
        pvc("provisioned-pvc", WAIT_PROVISIONER, "1Gi", None)
    }

    /// TestCapacity: eleven scenarios, each with the driver opted in (the reasons as
    /// upstream's) and not (every claim provisioned, no check).
    #[test]
    fn upstream_test_capacity() {
        let net = || csc(WAIT_PROVISIONER, None, "1Gi", "");
        let node1 = || csc(WAIT_PROVISIONER, Some("node1"), "1Gi", "");
        let node2 = || csc(WAIT_PROVISIONER, Some("node2"), "1Gi", "");
        let enough = ERR_REASON_NOT_ENOUGH_SPACE;
        let cases: Vec<(&str, Vec<CSIStorageCapacity>, Option<&str>)> = vec![
            ("network-attached", vec![net()], None),
            ("local-storage", vec![node1()], None),
            ("multiple", vec![net(), node2(), node1()], None),
            ("no-storage", vec![], Some(enough)),
            ("wrong-node", vec![node2()], Some(enough)),
            (
                "wrong-storage-class",
                vec![csc(WAIT_CLASS, Some("node1"), "1Gi", "")],
                Some(enough),
            ),
            (
                "insufficient-storage",
                vec![csc(WAIT_PROVISIONER, Some("node1"), "1Mi", "")],
                Some(enough),
            ),
            (
                "insufficient-volume-size",
                vec![csc(WAIT_PROVISIONER, Some("node1"), "1Gi", "1Mi")],
                Some(enough),
            ),
            (
                "zero-storage",
                vec![csc(WAIT_PROVISIONER, Some("node1"), "0Mi", "")],
                Some(enough),
            ),
            (
                "zero-volume-size",
                vec![csc(WAIT_PROVISIONER, Some("node1"), "", "0Mi")],
                Some(enough),
            ),
            (
                "nil-storage",
                vec![csc(WAIT_PROVISIONER, Some("node1"), "", "")],
                Some(enough),
            ),
        ];
        let claim = provisioned_pvc();
        let pod = pod_of(&[&claim]);
        let mut runs = 0;
        for (name, capacities, reason) in cases {
            for opt_in in [true, false] {
                let s = capacity_snap(
                    vec![],
                    vec![claim.clone()],
                    Some(csi_driver(PROVISIONER, opt_in)),
                    capacities.clone(),
                );
                let want = match reason {
                    Some(r) if opt_in => Err(vec![r.to_string()]),
                    _ => Ok(vec!["provision provisioned-pvc".to_string()]),
                };
                assert_eq!(
                    run(&s, &pod, "node1"),
                    want,
                    "{name}, StorageCapacity={opt_in}"
                );
                runs += 1;
            }
        }
        assert_eq!(runs, 22);
    }

    /// TestFindPodVolumesWithProvisioning: eight scenarios under no CSIDriver, one with
    /// capacity tracking (no CSIStorageCapacity: the claims that need capacity are refused
    /// with upstream's reason) and one without.
    #[test]
    fn upstream_find_pod_volumes_with_provisioning() {
        let unbound = pvc("unbound-pvc", WAIT_CLASS, "1G", None);
        let bound = pvc("bound-pvc", WAIT_CLASS, "1G", Some("pv-bound"));
        let immediate_unbound = pvc("immediate-unbound-pvc", IMMEDIATE_CLASS, "1G", None);
        let immediate_bound = pvc(
            "immediate-bound-pvc",
            IMMEDIATE_CLASS,
            "1G",
            Some("pv-bound-immediate"),
        );
        let provisioned = provisioned_pvc();
        let selected = annotated(provisioned_pvc(), ANNOTATION_SELECTED_NODE, "node1");
        let no_provisioner = pvc("no-provisioner-pvc", WAIT_CLASS, "1Gi", None);
        let topo_mismatch = pvc("topo-mismatch-pvc", TOPO_MISMATCH, "1Gi", None);
        let pv_node1a = pv("pv-node1a", WAIT_CLASS, "5G", Some("node1"));
        let pv_bound = claim_ref(pv("pv-bound", WAIT_CLASS, "1G", Some("node1")), "bound-pvc");
        let pv_bound_immediate = claim_ref(
            pv("pv-bound-immediate", IMMEDIATE_CLASS, "1G", Some("node1")),
            "immediate-bound-pvc",
        );
        let provision = |c: &str| format!("provision {c}");
        // (name, pvs, claims, expected without capacity, needs capacity)
        let cases: Vec<(
            &str,
            Vec<PersistentVolume>,
            Vec<&PersistentVolumeClaim>,
            Result<Vec<String>, Vec<String>>,
            bool,
        )> = vec![
            (
                "one-provisioned",
                vec![],
                vec![&provisioned],
                Ok(vec![provision("provisioned-pvc")]),
                true,
            ),
            (
                "two-unbound-pvcs,one-matched,one-provisioned",
                vec![pv_node1a.clone()],
                vec![&unbound, &provisioned],
                Ok(vec![
                    "bind unbound-pvc pv-node1a".into(),
                    provision("provisioned-pvc"),
                ]),
                true,
            ),
            (
                "one-bound,one-provisioned",
                vec![pv_bound.clone()],
                vec![&bound, &provisioned],
                Ok(vec![provision("provisioned-pvc")]),
                true,
            ),
            // upstream lists the annotated claim among its DynamicProvisions; rekube's
            // PreBind has nothing left to write for it.
            (
                "one-binding,one-selected-node",
                vec![pv_bound.clone()],
                vec![&bound, &selected],
                Ok(vec![]),
                true,
            ),
            (
                "immediate-unbound-pvc",
                vec![],
                vec![&immediate_unbound],
                Err(vec![format!(
                    "prefilter: {ERR_REASON_UNBOUND_IMMEDIATE_PVC}"
                )]),
                false,
            ),
            (
                "one-immediate-bound,one-provisioned",
                vec![pv_bound_immediate.clone()],
                vec![&immediate_bound, &provisioned],
                Ok(vec![provision("provisioned-pvc")]),
                true,
            ),
            (
                "invalid-provisioner",
                vec![],
                vec![&no_provisioner],
                Err(vec![ERR_REASON_BIND_CONFLICT.into()]),
                false,
            ),
            (
                "volume-topology-unsatisfied",
                vec![],
                vec![&topo_mismatch],
                Err(vec![ERR_REASON_BIND_CONFLICT.into()]),
                false,
            ),
        ];
        let mut runs = 0;
        for (driver, tracking) in [
            ("no CSIDriver", None),
            ("CSIDriver with capacity tracking", Some(true)),
            ("CSIDriver without capacity tracking", Some(false)),
        ] {
            for (name, pvs, claims, want, needs_capacity) in &cases {
                let s = capacity_snap(
                    pvs.clone(),
                    claims.iter().map(|c| (*c).clone()).collect(),
                    tracking.map(|t| csi_driver(PROVISIONER, t)),
                    vec![],
                );
                let want = if *needs_capacity && tracking == Some(true) {
                    // Without CSIStorageCapacity objects, provisioning is blocked.
                    Err(vec![ERR_REASON_NOT_ENOUGH_SPACE.to_string()])
                } else {
                    want.clone()
                };
                assert_eq!(run(&s, &pod_of(claims), "node1"), want, "{driver}: {name}");
                runs += 1;
            }
        }
        assert_eq!(runs, 24);
    }

    /// A CSIDriver with capacity tracking, node1 and node2 with 100Mi each of
    /// waitClassWithProvisioner (its allowedTopologies widened to both nodes).
    fn in_flight_snap(pvcs: Vec<PersistentVolumeClaim>) -> Snapshot {
        let mut s = capacity_snap(
            vec![],
            pvcs.clone(),
            Some(csi_driver(PROVISIONER, true)),
            vec![
                csc(WAIT_PROVISIONER, Some("node1"), "100Mi", "100Mi"),
                csc(WAIT_PROVISIONER, Some("node2"), "100Mi", "100Mi"),
            ],
        );
        let mut classes = capacity_classes();
        classes[0].allowed_topologies = None;
        s.set_volumes(&[], &pvcs, &classes);
        s
    }

    fn claim(name: &str, size: &str) -> PersistentVolumeClaim {
        pvc(name, WAIT_PROVISIONER, size, None)
    }

    /// Beyond upstream: the unbound claims already handed to a node (annotated, or assumed
    /// by this scheduler) come off its published capacity; bound claims, claims being
    /// deleted, of another class or handed to another node do not; the pod's own claims
    /// count once.
    #[test]
    fn claims_handed_out_come_off_the_published_capacity() {
        let pod = PodBuilder::new("p").pvc("new").build();
        let fits = |others: Vec<PersistentVolumeClaim>| {
            let mut all = others;
            all.push(claim("new", "40Mi"));
            let s = in_flight_snap(all);
            (run(&s, &pod, "node1"), run(&s, &pod, "node2"))
        };
        let ok = || Ok(vec!["provision new".to_string()]);
        let full = || Err(vec![ERR_REASON_NOT_ENOUGH_SPACE.to_string()]);
        let on = |name: &str, size: &str, node: &str| {
            annotated(claim(name, size), ANNOTATION_SELECTED_NODE, node)
        };
        // Nothing handed out: both nodes hold 40Mi.
        assert_eq!(fits(vec![]), (ok(), ok()));
        // 60Mi handed to node1: 40Mi still fit; 61Mi do not.
        assert_eq!(fits(vec![on("a", "60Mi", "node1")]), (ok(), ok()));
        assert_eq!(fits(vec![on("a", "61Mi", "node1")]), (full(), ok()));
        assert_eq!(
            fits(vec![on("a", "30Mi", "node1"), on("b", "31Mi", "node1")]),
            (full(), ok())
        );
        // Bound (its volume is in the published figure), being deleted, of another class:
        // not counted.
        let mut bound = on("a", "90Mi", "node1");
        bound.spec.as_mut().unwrap().volume_name = Some("pv-a".into());
        bound.status.as_mut().unwrap().phase = Some("Bound".into());
        let mut deleting = on("b", "90Mi", "node1");
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let mut other_class = on("c", "90Mi", "node1");
        other_class.spec.as_mut().unwrap().storage_class_name = Some(WAIT_CLASS.into());
        assert_eq!(fits(vec![bound, deleting, other_class]), (ok(), ok()));
        // The pod's own claim, already handed to node1 by an earlier attempt, counts once.
        let s = in_flight_snap(vec![on("new", "100Mi", "node1")]);
        assert_eq!(run(&s, &pod, "node1"), Ok(vec![]));
        // Two claims of the pod: together they must fit.
        let two = PodBuilder::new("p").pvc("x").pvc("y").build();
        let s = in_flight_snap(vec![claim("x", "60Mi"), claim("y", "40Mi")]);
        assert_eq!(
            run(&s, &two, "node1"),
            Ok(vec!["provision x".to_string(), "provision y".to_string()])
        );
        let s = in_flight_snap(vec![claim("x", "60Mi"), claim("y", "41Mi")]);
        assert_eq!(run(&s, &two, "node1"), full());
    }

    /// maximumVolumeSize bounds one volume, the capacity the pool: what is handed out
    /// comes off the pool only. 1Gi capacity, 100Mi largest volume, 60Mi handed out: a
    /// 50Mi claim fits, a 101Mi one does not (upstream's check), nor 50Mi once 980Mi are
    /// handed out; an object with only a maximumVolumeSize is upstream's check alone.
    #[test]
    fn handed_out_claims_come_off_the_capacity_not_the_largest_volume() {
        let pod = PodBuilder::new("p").pvc("new").build();
        let with = |max: &str, cap: &str, handed: &str, size: &str| {
            let pvcs = vec![
                annotated(claim("a", handed), ANNOTATION_SELECTED_NODE, "node1"),
                claim("new", size),
            ];
            let mut s = capacity_snap(
                vec![],
                pvcs.clone(),
                Some(csi_driver(PROVISIONER, true)),
                vec![csc(WAIT_PROVISIONER, Some("node1"), cap, max)],
            );
            let mut classes = capacity_classes();
            classes[0].allowed_topologies = None;
            s.set_volumes(&[], &pvcs, &classes);
            run(&s, &pod, "node1")
        };
        let ok = Ok(vec!["provision new".to_string()]);
        let full = Err(vec![ERR_REASON_NOT_ENOUGH_SPACE.to_string()]);
        assert_eq!(with("100Mi", "1Gi", "60Mi", "50Mi"), ok);
        assert_eq!(with("100Mi", "1Gi", "60Mi", "101Mi"), full);
        assert_eq!(with("100Mi", "1Gi", "980Mi", "50Mi"), full);
        assert_eq!(with("100Mi", "", "980Mi", "50Mi"), ok);
    }

    /// The topolvm#117 race: pods scheduled one after another, each assumed before its
    /// claims carry the selected node, never hand a node more than its capacity; the
    /// claims an assumed pod hands out are released when the pod is forgotten.
    #[test]
    fn assumed_pods_claims_count_until_annotated_or_forgotten() {
        let claims: Vec<_> = (0..5).map(|i| claim(&format!("c{i}"), "40Mi")).collect();
        let mut s = in_flight_snap(claims.clone());
        let mut placed = BTreeMap::<String, usize>::new();
        let mut unschedulable = 0;
        let mut pods = Vec::new();
        for i in 0..5 {
            let pod = PodBuilder::new(&format!("p{i}"))
                .pvc(&format!("c{i}"))
                .build();
            match crate::scheduler::schedule_pod(&s, &pod) {
                Ok(r) => {
                    s.assume(&pod, &r.node_name);
                    s.assume_provisions(&pod, &r.node_name, &r.volumes.dynamic_provisions);
                    *placed.entry(r.node_name.clone()).or_default() += 1;
                    pods.push(pod);
                }
                Err(fit) => {
                    assert!(
                        fit.to_string().contains(ERR_REASON_NOT_ENOUGH_SPACE),
                        "{fit}"
                    );
                    unschedulable += 1;
                }
            }
        }
        // 100Mi a node: two 40Mi claims each, the fifth fits nowhere.
        assert_eq!(
            placed,
            BTreeMap::from([("node1".into(), 2), ("node2".into(), 2)])
        );
        assert_eq!(unschedulable, 1);
        // The PreBind annotations arrive: the hand-over is now the claims' own.
        let annotated_claims: Vec<_> = claims
            .iter()
            .map(|c| {
                let name = claim_name(c);
                match s.selected_node(c) {
                    Some(n) => annotated(c.clone(), ANNOTATION_SELECTED_NODE, n),
                    None => {
                        assert_eq!(name, "c4");
                        c.clone()
                    }
                }
            })
            .collect();
        let mut classes = capacity_classes();
        classes[0].allowed_topologies = None;
        s.set_volumes(&[], &annotated_claims, &classes);
        let last = PodBuilder::new("p4").pvc("c4").build();
        assert!(crate::scheduler::schedule_pod(&s, &last).is_err());
        // A pod forgotten before PreBind gives its claim back.
        let mut s = in_flight_snap(claims.clone());
        let first = PodBuilder::new("p0").pvc("c0").build();
        let r = crate::scheduler::schedule_pod(&s, &first).unwrap();
        s.assume(&first, &r.node_name);
        s.assume_provisions(&first, &r.node_name, &r.volumes.dynamic_provisions);
        assert_eq!(s.selected_node(&claims[0]), Some(r.node_name.as_str()));
        s.forget(&first);
        assert_eq!(s.selected_node(&claims[0]), None);
    }
}
