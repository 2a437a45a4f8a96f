//! The VolumeRestrictions plugin's ReadWriteOncePod part (upstream:
//! `pkg/scheduler/framework/plugins/volumerestrictions/volume_restrictions.go`): a claim
//! with the ReadWriteOncePod access mode is used by one pod at most. PreFilter finds the
//! pod's RWOP claims and counts those already used by a scheduled (or assumed) pod; Filter
//! then refuses every node with upstream's reason.
//!
//! Not ported: the disk conflicts of GCE PD, AWS EBS, RBD and iSCSI inline volumes (rekube
//! mounts none of them), and preemption (`AddPod`/`RemovePod`).
use std::collections::BTreeSet;

use rekube_crds::Pod;

use super::filters::Unschedulable;
use super::snapshot::Snapshot;
use crate::pvcontroller::index::{READ_WRITE_ONCE_POD, contains_access_mode};

pub const VOLUME_RESTRICTIONS: &str = "VolumeRestrictions";

/// Upstream `ErrReasonReadWriteOncePodConflict`.
pub const ERR_REASON_READ_WRITE_ONCE_POD_CONFLICT: &str = "node(s) unavailable due to PersistentVolumeClaim with ReadWriteOncePod access mode already in-use by another pod";

/// Upstream `preFilterState`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreFilterState {
    /// Names of the pod's claims with the ReadWriteOncePod access mode.
    pub read_write_once_pod_pvcs: BTreeSet<String>,
    /// How many of them a scheduled pod already uses.
    pub conflicting_pvc_ref_count: usize,
}

fn claim_names(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// Whether a pod on a node of the snapshot (assumed ones included) uses the claim
/// (upstream `StorageInfos().IsPVCUsedByPods`: persistentVolumeClaim volumes only).
fn is_pvc_used_by_pods(snapshot: &Snapshot, namespace: &str, claim: &str) -> bool {
    snapshot.nodes().iter().flat_map(|n| &n.pods).any(|p| {
        p.pod.metadata.namespace.as_deref() == Some(namespace)
            && claim_names(&p.pod).any(|c| c == claim)
    })
}

/// PreFilter: `Ok(None)` when the plugin has nothing to check (upstream's Skip), the state,
/// or the message of a claim that does not exist (UnschedulableAndUnresolvable).
pub fn pre_filter(snapshot: &Snapshot, pod: &Pod) -> Result<Option<PreFilterState>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut state = PreFilterState::default();
    for name in claim_names(pod) {
        let Some(pvc) = snapshot.pvc(namespace, name) else {
            return Err(format!("persistentvolumeclaim {name:?} not found"));
        };
        let modes = pvc
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.as_deref())
            .unwrap_or_default();
        if contains_access_mode(modes, READ_WRITE_ONCE_POD) {
            state.read_write_once_pod_pvcs.insert(name.to_string());
        }
    }
    state.conflicting_pvc_ref_count = state
        .read_write_once_pod_pvcs
        .iter()
        .filter(|c| is_pvc_used_by_pods(snapshot, namespace, c))
        .count();
    if state.conflicting_pvc_ref_count == 0 {
        return Ok(None);
    }
    Ok(Some(state))
}

/// Filter (upstream `satisfyReadWriteOncePod`).
pub fn filter(state: Option<&PreFilterState>) -> Result<(), Unschedulable> {
    match state {
        Some(s) if s.conflicting_pvc_ref_count > 0 => Err(Unschedulable::new(
            VOLUME_RESTRICTIONS,
            ERR_REASON_READ_WRITE_ONCE_POD_CONFLICT,
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{NodeBuilder, PodBuilder, pvc};
    use rekube_crds::PersistentVolumeClaim;

    fn claim(name: &str, mode: &str) -> PersistentVolumeClaim {
        let mut c = pvc(name, "", "1Gi", None);
        c.spec.as_mut().unwrap().access_modes = Some(vec![mode.to_string()]);
        c
    }

    /// upstream `TestAccessModeConflicts`: (name, pod, existing pods, claims, PreFilter
    /// result, Filter result when PreFilter succeeded).
    #[test]
    #[allow(clippy::type_complexity)]
    fn access_mode_conflicts() {
        let on_node = |b: PodBuilder| b.node("node-1").build();
        let with_one_pvc = on_node(PodBuilder::new("pod-with-one-pvc").pvc("claim-with-rwop-1"));
        let with_two_pvcs = on_node(
            PodBuilder::new("pod-with-two-pvcs")
                .pvc("claim-with-rwop-1")
                .pvc("claim-with-rwop-2"),
        );
        let with_one_conflict =
            on_node(PodBuilder::new("pod-with-one-conflict").pvc("claim-with-rwop-1"));
        let with_two_conflicts = on_node(
            PodBuilder::new("pod-with-two-conflicts")
                .pvc("claim-with-rwop-1")
                .pvc("claim-with-rwop-2"),
        );
        let with_rwx = on_node(PodBuilder::new("pod-with-rwx").pvc("claim-with-rwx"));
        let rwop1 = claim("claim-with-rwop-1", READ_WRITE_ONCE_POD);
        let rwop2 = claim("claim-with-rwop-2", READ_WRITE_ONCE_POD);
        let rwx = claim("claim-with-rwx", "ReadWriteMany");
        let unschedulable = Err(vec![ERR_REASON_READ_WRITE_ONCE_POD_CONFLICT.to_string()]);
        let cases: Vec<(
            &str,
            Pod,
            Vec<Pod>,
            Vec<PersistentVolumeClaim>,
            Result<bool, String>,
            Result<(), Vec<String>>,
        )> = vec![
            (
                "nothing",
                PodBuilder::new("p").build(),
                vec![],
                vec![],
                Ok(false),
                Ok(()),
            ),
            (
                "failed to get PVC",
                with_one_pvc.clone(),
                vec![],
                vec![],
                Err("persistentvolumeclaim \"claim-with-rwop-1\" not found".into()),
                Ok(()),
            ),
            (
                "no access mode conflict",
                with_one_pvc.clone(),
                vec![with_rwx.clone()],
                vec![rwop1.clone(), rwx.clone()],
                Ok(false),
                Ok(()),
            ),
            (
                "access mode conflict, unschedulable",
                with_one_conflict,
                vec![with_one_pvc.clone(), with_rwx.clone()],
                vec![rwop1.clone(), rwx.clone()],
                Ok(true),
                unschedulable.clone(),
            ),
            (
                "two conflicts, unschedulable",
                with_two_conflicts,
                vec![with_two_pvcs, with_rwx],
                vec![rwop1, rwop2, rwx],
                Ok(true),
                unschedulable,
            ),
        ];
        for (name, pod, existing, claims, want_pre, want_filter) in cases {
            let s = Snapshot::new(
                &[NodeBuilder::new("node-1").capacity("4", "8Gi").build()],
                &existing,
                &[],
                &claims,
                &[],
            );
            let got = pre_filter(&s, &pod);
            assert_eq!(
                got.as_ref().map(|s| s.is_some()).map_err(|e| e.clone()),
                want_pre,
                "{name}: PreFilter"
            );
            if let Ok(state) = got {
                assert_eq!(
                    filter(state.as_ref()).map_err(|u| u.reasons),
                    want_filter,
                    "{name}: Filter"
                );
            }
        }
    }
}
