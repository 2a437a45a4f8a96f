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
//!   an unbound WaitForFirstConsumer claim needs an available PV of its class, big enough,
//!   with the access modes, volume mode and node affinity (the smallest is taken, no PV
//!   twice), or else a class whose provisioner can provision on the node (its
//!   allowedTopologies match). Such claims are returned: the scheduler sets
//!   `volume.kubernetes.io/selected-node` on them when it binds the pod, and the PV binder
//!   binds or provisions for that node. Upstream binds matched PVs itself in PreBind and
//!   annotates only the claims to provision.
//!
//! rekube differences, each because rekube's PV binder is not upstream's PV controller:
//! a claim counts as bound when it names a volume and is marked bind-completed *or* is in
//! phase Bound; a PV in phase Pending (the apiserver default, before any controller saw it)
//! counts as Available; a claim already annotated with the node being tried is first
//! matched against PVs again before being treated as one to provision. Not ported:
//! CSIStorageCapacity checks, CSI migration, VolumeAttributesClass, scoring.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Volume;
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};

use super::filters::Unschedulable;
use super::nodeaffinity::match_topology_selector_terms;
use super::snapshot::{NodeInfo, Snapshot};
use crate::pvcontroller::index::{
    self, check_access_modes, is_volume_bound_to_claim, storage_capacity, storage_request,
};
use crate::util::claim::get_controller_of;
use crate::util::labels::label_selector_as_selector;

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

/// The node a WaitForFirstConsumer claim is to be bound or provisioned on (upstream
/// `volume.AnnSelectedNode`).
pub const ANNOTATION_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set by the PV controller once it completed a claim's binding (upstream `AnnBindCompleted`).
pub const ANNOTATION_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// The beta storage-class annotation, read before `storageClassName` (upstream
/// `v1.BetaStorageClassAnnotation`).
pub const ANNOTATION_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
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

/// Whether the claim's class binds on first consumer (upstream `IsDelayBindingMode`): a
/// claim without class, or of a class that does not exist, binds immediately.
pub fn is_delay_binding_mode(snapshot: &Snapshot, pvc: &PersistentVolumeClaim) -> bool {
    let class = claim_class(pvc);
    !class.is_empty()
        && snapshot
            .storage_class(class)
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some(VOLUME_BINDING_WAIT_FOR_FIRST_CONSUMER)
}

/// The claim a volume uses: a persistentVolumeClaim's, or `<pod>-<volume>` for a generic
/// ephemeral volume (upstream `ephemeral.VolumeClaimName`).
fn volume_claim_name(pod: &Pod, vol: &Volume) -> Option<(String, bool)> {
    if let Some(c) = &vol.persistent_volume_claim {
        return Some((c.claim_name.clone(), false));
    }
    vol.ephemeral.as_ref().map(|_| {
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        (format!("{pod_name}-{}", vol.name), true)
    })
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
        let Some((name, ephemeral)) = volume_claim_name(pod, vol) else {
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
            let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
            if get_controller_of(&pvc.metadata).is_none_or(|o| o.uid != pod_uid) {
                return Err(format!(
                    "PVC {namespace}/{name} was not created for pod {namespace}/{} (pod is not owner)",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ));
            }
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

fn volume_mode(mode: Option<&String>) -> &str {
    mode.map_or("Filesystem", String::as_str)
}

/// The PV's phase allows binding: Available, or Pending/unset (see the module doc).
fn is_available(pv: &PersistentVolume) -> bool {
    matches!(
        pv.status.as_ref().and_then(|s| s.phase.as_deref()),
        None | Some("") | Some("Available") | Some("Pending")
    )
}

/// The PV to bind the claim to on this node (upstream `FindMatchingVolume` on the
/// scheduler path): one pre-bound to the claim if its node affinity fits, else the smallest
/// available PV of the claim's class that is big enough, matches the claim's selector,
/// access modes, volume mode and the node, and is not in `excluded`.
pub fn find_matching_volume<'a>(
    pvc: &PersistentVolumeClaim,
    pvs: &[&'a PersistentVolume],
    node: &NodeInfo,
    excluded: &BTreeSet<&str>,
) -> Option<&'a PersistentVolume> {
    let requested = storage_request(pvc);
    let class = claim_class(pvc);
    let spec = pvc.spec.as_ref();
    let selector = match spec.and_then(|s| s.selector.as_ref()) {
        Some(sel) => Some(label_selector_as_selector(Some(sel)).ok()?),
        None => None,
    };
    let claim_mode = volume_mode(spec.and_then(|s| s.volume_mode.as_ref()));
    let mut smallest: Option<&PersistentVolume> = None;
    for &pv in pvs {
        let pv_name = pv.metadata.name.as_deref().unwrap_or_default();
        if excluded.contains(pv_name) {
            continue;
        }
        let pv_spec = pv.spec.as_ref();
        if pv_spec.and_then(|s| s.claim_ref.as_ref()).is_some()
            && !is_volume_bound_to_claim(pv, pvc)
        {
            continue;
        }
        if storage_capacity(pv) < requested
            || volume_mode(pv_spec.and_then(|s| s.volume_mode.as_ref())) != claim_mode
            || pv.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let affinity_ok = check_node_affinity(pv, node);
        if is_volume_bound_to_claim(pv, pvc) {
            return affinity_ok.then_some(pv);
        }
        if !is_available(pv)
            || selector
                .as_ref()
                .is_some_and(|s| !s.matches(pv.metadata.labels.as_ref()))
            || volume_class(pv) != class
            || !affinity_ok
            || !check_access_modes(pvc, pv)
        {
            continue;
        }
        if smallest.is_none_or(|s| storage_capacity(s) > storage_capacity(pv)) {
            smallest = Some(pv);
        }
    }
    smallest
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

/// Filter: `Ok` with the WaitForFirstConsumer claims that still need the node in their
/// `volume.kubernetes.io/selected-node`, or the reasons (upstream `FindPodVolumes`, its
/// reasons in its order).
pub fn filter(
    snapshot: &Snapshot,
    claims: &PodVolumeClaims<'_>,
    node: &NodeInfo,
) -> Result<Vec<String>, Unschedulable> {
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
    let unbound_ok = claims.delay_binding.is_empty() || delay_binding_fits(snapshot, claims, node);
    let mut reasons = Vec::new();
    if !bound_ok {
        reasons.push(ERR_REASON_NODE_CONFLICT.to_string());
    }
    if !unbound_ok {
        reasons.push(ERR_REASON_BIND_CONFLICT.to_string());
    }
    if !pvs_found {
        reasons.push(ERR_REASON_PV_NOT_EXIST.to_string());
    }
    if !reasons.is_empty() {
        return Err(Unschedulable {
            plugin: VOLUME_BINDING,
            reasons,
        });
    }
    Ok(claims
        .delay_binding
        .iter()
        .filter(|c| annotation(&c.metadata, ANNOTATION_SELECTED_NODE) != Some(node.name()))
        .map(|c| claim_name(c).to_string())
        .collect())
}

fn delay_binding_fits(snapshot: &Snapshot, claims: &PodVolumeClaims<'_>, node: &NodeInfo) -> bool {
    // A claim already given another node can be used there only.
    if claims.delay_binding.iter().any(|c| {
        annotation(&c.metadata, ANNOTATION_SELECTED_NODE).is_some_and(|n| n != node.name())
    }) {
        return false;
    }
    let mut to_match = claims.delay_binding.clone();
    to_match.sort_by_key(|c| storage_request(c));
    let mut chosen: BTreeSet<&str> = BTreeSet::new();
    let mut to_provision = Vec::new();
    for pvc in to_match {
        let class = claim_class(pvc);
        let pvs: Vec<&PersistentVolume> = snapshot
            .pvs()
            .filter(|pv| volume_class(pv) == class)
            .collect();
        match find_matching_volume(pvc, &pvs, node, &chosen) {
            Some(pv) => {
                chosen.insert(pv.metadata.name.as_deref().unwrap_or_default());
            }
            None => to_provision.push(pvc),
        }
    }
    to_provision.is_empty() || can_provision(snapshot, &to_provision, node)
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
        filter(s, &claims, s.node(node).unwrap()).map_err(|u| u.reasons)
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
        let ok = Ok(vec!["data".to_string()]);
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
            ("Pending counts as Available", vec![pending], ok.clone()),
            ("Released does not", vec![released], bind.clone()),
            ("access modes must be offered", vec![rwx], bind.clone()),
            ("volume modes must agree", vec![block], bind.clone()),
        ];
        for (name, pvs, want) in cases {
            let s = snap(pvs, vec![claim()], vec![wffc()]);
            assert_eq!(run(&s, &pod, "a"), want, "{name}");
        }
        // Already annotated with this node: nothing to set; with another node: only there.
        let s = snap(
            vec![pv("pv", "local", "5Gi", None)],
            vec![annotated(claim(), ANNOTATION_SELECTED_NODE, "a")],
            vec![wffc()],
        );
        assert_eq!(run(&s, &pod, "a"), Ok(vec![]));
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
            Ok(vec!["one".to_string(), "two".to_string()])
        );
    }

    #[test]
    fn dynamic_provisioning() {
        let pod = PodBuilder::new("p").pvc("data").build();
        let claim = || vec![pvc("data", "dyn", "5Gi", None)];
        let class = storage_class("dyn", "WaitForFirstConsumer", "example.com/csi");
        let s = snap(vec![], claim(), vec![class.clone()]);
        assert_eq!(run(&s, &pod, "a"), Ok(vec!["data".to_string()]));
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
        assert_eq!(run(&s, &pod, "b"), Ok(vec!["data".to_string()]));
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
