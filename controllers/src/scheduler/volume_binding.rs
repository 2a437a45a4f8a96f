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
//!   allowedTopologies match). The result is [`PodVolumes`]: PreBind (the scheduler's
//!   `pre_bind_volumes`) pre-binds each matched PV to its claim (`spec.claimRef`, upstream
//!   `bindAPIUpdate`) and sets `volume.kubernetes.io/selected-node` on the claims to
//!   provision; the PV controller completes the binding or provisions for that node.
//!
//! rekube differences: a claim counts as bound when it names a volume and is marked
//! bind-completed *or* is in phase Bound; the pod is bound without waiting for its claims'
//! binding to complete (upstream's PreBind waits; rekube's node agent waits for bound claims
//! before it mounts). Not ported: CSIStorageCapacity checks, CSI migration, scoring.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Volume;
use rekube_crds::pod_refs::{volume_claim_name, volume_is_for_pod};
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};

use super::filters::Unschedulable;
use super::nodeaffinity::match_topology_selector_terms;
use super::snapshot::{NodeInfo, Snapshot};
use crate::pvcontroller::index::{self, storage_request};

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

/// Whether the claims can be provisioned on the node (upstream `checkVolumeProvisions`):
/// their class has a provisioner and its allowedTopologies admit the node.
fn can_provision(snapshot: &Snapshot, claims: &[&PersistentVolumeClaim], node: &NodeInfo) -> bool {
    claims.iter().all(|pvc| {
        let Some(class) = snapshot.storage_class(claim_class(pvc)) else {
            return false;
        };
        !class.provisioner.is_empty()
            && class.provisioner != NOT_SUPPORTED_PROVISIONER
            && match_topology_selector_terms(
                class.allowed_topologies.as_deref().unwrap_or_default(),
                node.labels(),
            )
    })
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
        Some(PodVolumes::default())
    } else {
        find_pod_volumes(snapshot, claims, node)
    };
    let mut reasons = Vec::new();
    if !bound_ok {
        reasons.push(ERR_REASON_NODE_CONFLICT.to_string());
    }
    if volumes.is_none() {
        reasons.push(ERR_REASON_BIND_CONFLICT.to_string());
    }
    if !pvs_found {
        reasons.push(ERR_REASON_PV_NOT_EXIST.to_string());
    }
    match volumes {
        Some(volumes) if reasons.is_empty() => Ok(volumes),
        _ => Err(Unschedulable {
            plugin: VOLUME_BINDING,
            reasons,
        }),
    }
}

/// The unbound WaitForFirstConsumer claims on this node (upstream `findMatchingVolumes`
/// then `checkVolumeProvisions`): each matched to the smallest fitting volume, no volume
/// twice, the smallest claims first; the rest provisioned if their class can on the node.
/// `None` when they cannot all be satisfied here.
fn find_pod_volumes(
    snapshot: &Snapshot,
    claims: &PodVolumeClaims<'_>,
    node: &NodeInfo,
) -> Option<PodVolumes> {
    // A claim already given another node can be used there only.
    if claims.delay_binding.iter().any(|c| {
        annotation(&c.metadata, ANNOTATION_SELECTED_NODE).is_some_and(|n| n != node.name())
    }) {
        return None;
    }
    let mut to_match = claims.delay_binding.clone();
    to_match.sort_by_key(|c| storage_request(c));
    let mut chosen: BTreeSet<&str> = BTreeSet::new();
    let mut out = PodVolumes::default();
    let mut to_provision = Vec::new();
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
    if !to_provision.is_empty() && !can_provision(snapshot, &to_provision, node) {
        return None;
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
    Some(out)
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
}
