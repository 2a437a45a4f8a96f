//! The PV protection controller's pure decision core (upstream
//! `pkg/controller/volume/pvprotection/pv_protection_controller.go`): whether a volume's
//! finalizer is added, kept or removed. The `protectionutil` helpers and the finalizer
//! patches are shared with the PVC protection controller
//! ([`crate::pvcprotection::protection`]).
use rekube_crds::PersistentVolume;
use serde_json::Value;

use crate::pvcprotection::protection::{
    add_finalizer_patch as add_patch, is_deletion_candidate, need_to_add_finalizer,
    remove_finalizer_patch as remove_patch,
};

/// upstream `volumeutil.PVProtectionFinalizer`.
pub use rekube_crds::storage_keys::PV_PROTECTION_FINALIZER;

/// upstream `v1.VolumeBound`.
pub const VOLUME_BOUND: &str = "Bound";

/// What the controller does with a volume (upstream processPV's outcomes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Neither being deleted with the finalizer nor lacking it.
    Nothing,
    /// Not being deleted and without the finalizer: add it (upstream adds it besides the
    /// admission plugin, for volumes created before the plugin was on).
    AddFinalizer,
    /// Being deleted but bound to a claim: keep the finalizer.
    KeepFinalizer,
    /// Being deleted and not bound: remove the finalizer.
    RemoveFinalizer,
}

/// upstream isBeingUsed: the PV controller has the volume in phase Bound. Only the phase
/// counts, not `spec.claimRef`: a volume Released (its claim deleted) or Available with a
/// claimRef does not hold the finalizer.
pub fn is_being_used(pv: &PersistentVolume) -> bool {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == VOLUME_BOUND)
}

/// upstream processPV.
pub fn process_pv(pv: &PersistentVolume) -> Decision {
    if is_deletion_candidate(&pv.metadata, PV_PROTECTION_FINALIZER) {
        return if is_being_used(pv) {
            Decision::KeepFinalizer
        } else {
            Decision::RemoveFinalizer
        };
    }
    if need_to_add_finalizer(&pv.metadata, PV_PROTECTION_FINALIZER) {
        return Decision::AddFinalizer;
    }
    Decision::Nothing
}

/// upstream pvAddedUpdated's filter: a volume added or updated is queued when it lacks the
/// finalizer or is being deleted with it.
pub fn pv_needs_processing(pv: &PersistentVolume) -> bool {
    need_to_add_finalizer(&pv.metadata, PV_PROTECTION_FINALIZER)
        || is_deletion_candidate(&pv.metadata, PV_PROTECTION_FINALIZER)
}

/// upstream addFinalizer, as a merge patch guarded by the cached resourceVersion.
pub fn add_finalizer_patch(pv: &PersistentVolume) -> Value {
    add_patch(&pv.metadata, PV_PROTECTION_FINALIZER)
}

/// upstream removeFinalizer, as a merge patch guarded by the cached resourceVersion.
pub fn remove_finalizer_patch(pv: &PersistentVolume) -> Value {
    remove_patch(&pv.metadata, PV_PROTECTION_FINALIZER)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use jiff::Timestamp;
    use k8s_openapi::api::core::v1::PersistentVolumeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use serde_json::json;

    use super::*;

    // upstream's fixtures (pv_protection_controller_test.go).
    const DEFAULT_PV_NAME: &str = "default-pv";

    fn pv() -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(DEFAULT_PV_NAME.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn bound_pv() -> PersistentVolume {
        PersistentVolume {
            status: Some(PersistentVolumeStatus {
                phase: Some(VOLUME_BOUND.into()),
                ..Default::default()
            }),
            ..pv()
        }
    }

    fn with_protection_finalizer(mut pv: PersistentVolume) -> PersistentVolume {
        pv.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(PV_PROTECTION_FINALIZER.into());
        pv
    }

    fn deleted(mut pv: PersistentVolume) -> PersistentVolume {
        pv.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        pv
    }

    /// upstream's expected kubeclient actions: an update of the volume's finalizers (the
    /// finalizers after).
    #[derive(Debug, PartialEq)]
    struct Update(Vec<String>);

    fn added() -> Update {
        Update(vec![PV_PROTECTION_FINALIZER.into()])
    }

    fn removed() -> Update {
        Update(vec![])
    }

    /// What upstream's test does: the PV event through pvAddedUpdated's filter, then the
    /// queue processed, a failed update queueing the volume again.
    fn replay(updated_pv: &PersistentVolume, update_failures: usize) -> Vec<Update> {
        let mut failures = update_failures;
        let mut queue = VecDeque::new();
        if pv_needs_processing(updated_pv) {
            queue.push_back(());
        }
        let mut actions = Vec::new();
        while queue.pop_front().is_some() {
            assert!(actions.len() < 100, "the queue never drains");
            let patch = match process_pv(updated_pv) {
                Decision::AddFinalizer => add_finalizer_patch(updated_pv),
                Decision::RemoveFinalizer => remove_finalizer_patch(updated_pv),
                Decision::Nothing | Decision::KeepFinalizer => continue,
            };
            let finalizers: Vec<String> =
                serde_json::from_value(patch["metadata"]["finalizers"].clone()).unwrap();
            actions.push(Update(finalizers));
            if failures > 0 {
                failures -= 1;
                queue.push_back(());
            }
        }
        actions
    }

    /// upstream TestPVProtectionController.
    #[test]
    fn pv_protection_controller() {
        // (name, updated PV, update failures, expected actions)
        let cases = vec![
            (
                "PV without finalizer -> finalizer is added",
                pv(),
                0,
                vec![added()],
            ),
            (
                "PVC with finalizer -> no action",
                with_protection_finalizer(pv()),
                0,
                vec![],
            ),
            (
                "saving PVC finalizer fails -> controller retries",
                pv(),
                2,
                vec![added(), added(), added()],
            ),
            (
                "deleted PV with finalizer -> finalizer is removed",
                deleted(with_protection_finalizer(pv())),
                0,
                vec![removed()],
            ),
            (
                "finalizer removal fails -> controller retries",
                deleted(with_protection_finalizer(pv())),
                2,
                vec![removed(), removed(), removed()],
            ),
            (
                "deleted PVC with finalizer + PV is bound -> finalizer is not removed",
                deleted(with_protection_finalizer(bound_pv())),
                0,
                vec![],
            ),
        ];
        assert_eq!(cases.len(), 6);
        for (name, updated_pv, failures, expected) in cases {
            assert_eq!(replay(&updated_pv, failures), expected, "{name}");
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(process_pv(&pv()), Decision::AddFinalizer);
        assert_eq!(
            process_pv(&with_protection_finalizer(bound_pv())),
            Decision::Nothing
        );
        assert_eq!(
            process_pv(&deleted(with_protection_finalizer(bound_pv()))),
            Decision::KeepFinalizer
        );
        // Deleted without the finalizer: none of this controller's business.
        assert_eq!(process_pv(&deleted(pv())), Decision::Nothing);
        assert!(!pv_needs_processing(&deleted(pv())));
        // Only phase Bound holds the finalizer.
        for phase in ["Released", "Available", "Pending", "Failed"] {
            let mut v = deleted(with_protection_finalizer(bound_pv()));
            v.status.as_mut().unwrap().phase = Some(phase.into());
            assert_eq!(process_pv(&v), Decision::RemoveFinalizer, "{phase}");
        }
    }

    #[test]
    fn patches_carry_the_resource_version() {
        let mut v = deleted(with_protection_finalizer(pv()));
        v.metadata.resource_version = Some("9".into());
        assert_eq!(
            remove_finalizer_patch(&v),
            json!({"metadata": {"resourceVersion": "9", "finalizers": []}})
        );
        let mut v = pv();
        v.metadata.resource_version = Some("3".into());
        assert_eq!(
            add_finalizer_patch(&v),
            json!({"metadata": {"resourceVersion": "3", "finalizers": [PV_PROTECTION_FINALIZER]}})
        );
    }
}
