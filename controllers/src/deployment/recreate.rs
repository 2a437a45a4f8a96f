//! Recreate decisions (upstream: pkg/controller/deployment/recreate.go): scale every old
//! ReplicaSet to 0, wait until no old pod runs, then create and scale up the new one.
//!
//! Upstream's DeploymentPodReplacementPolicy branch (`spec.podReplacementPolicy`, which
//! counts terminating replicas instead of listing pods) is not reproduced: the apps/v1
//! DeploymentSpec of k8s-openapi has no such field, so the pod-based check always applies.
use std::collections::BTreeMap;

use rekube_crds::{Deployment, Pod, ReplicaSet};

use super::util::{self, filter_active_replica_sets, name, replica_set_replicas};

/// oldPodsRunning: whether an old ReplicaSet still reports replicas, or any pod of a
/// ReplicaSet other than the new one (`pods_by_rs` is keyed by ReplicaSet UID) is not in a
/// terminal phase (Unknown counts as running).
pub fn old_pods_running(
    new_rs: Option<&ReplicaSet>,
    old_rss: &[&ReplicaSet],
    pods_by_rs: &BTreeMap<String, Vec<&Pod>>,
) -> bool {
    if util::get_actual_replica_count_for_replica_sets(old_rss) > 0 {
        return true;
    }
    let new_uid = new_rs.and_then(|rs| rs.metadata.uid.as_deref());
    pods_by_rs
        .iter()
        // Pods of the new ReplicaSet do not count.
        .filter(|(uid, _)| Some(uid.as_str()) != new_uid)
        .flat_map(|(_, pods)| pods.iter())
        .any(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            // Failed and Succeeded pods are terminal. Unknown (deprecated) might still run,
            // and so does every other phase.
            !matches!(phase, Some("Failed") | Some("Succeeded"))
        })
}

/// scaleDownOldReplicaSetsForRecreate: every old ReplicaSet with replicas, scaled to 0.
pub fn scale_down_old_replica_sets_for_recreate(old_rss: &[&ReplicaSet]) -> Vec<(String, i32)> {
    old_rss
        .iter()
        .filter(|rs| replica_set_replicas(rs) != 0)
        .map(|rs| (name(&rs.metadata).to_string(), 0))
        .collect()
}

/// scaleUpNewReplicaSetForRecreate: the new ReplicaSet's size when it must change
/// (spec.replicas), `None` when it already has it.
pub fn scale_up_new_replica_set_for_recreate(new_rs: &ReplicaSet, d: &Deployment) -> Option<i32> {
    let replicas = util::deployment_replicas(d);
    (replica_set_replicas(new_rs) != replicas).then_some(replicas)
}

/// The next action of rolloutRecreate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecreateStep {
    /// Scale these old ReplicaSets to 0, then sync the rollout status.
    ScaleDownOldReplicaSets(Vec<(String, i32)>),
    /// Old pods still run: only sync the rollout status (a pod deletion requeues).
    WaitForOldPods,
    /// Create the new ReplicaSet ([`super::sync::new_replica_set`]), then decide again.
    CreateNewReplicaSet,
    /// Scale the new ReplicaSet to `new_replicas` when `Some`; clean up old ReplicaSets
    /// when `cleanup` (the Deployment's current status says the rollout is complete); then
    /// sync the rollout status.
    ScaleUpNewReplicaSet {
        new_replicas: Option<i32>,
        cleanup: bool,
    },
}

/// rolloutRecreate: the next step given the new ReplicaSet (if it exists), the old ones,
/// and the pods by ReplicaSet UID.
pub fn rollout_recreate_step(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    old_rss: &[&ReplicaSet],
    pods_by_rs: &BTreeMap<String, Vec<&Pod>>,
) -> RecreateStep {
    // Scale down old replica sets first; never scale up before that.
    let scale_down = scale_down_old_replica_sets_for_recreate(&filter_active_replica_sets(old_rss));
    if !scale_down.is_empty() {
        return RecreateStep::ScaleDownOldReplicaSets(scale_down);
    }
    // Do not proceed while old pods run.
    if old_pods_running(new_rs, old_rss, pods_by_rs) {
        return RecreateStep::WaitForOldPods;
    }
    let Some(new_rs) = new_rs else {
        return RecreateStep::CreateNewReplicaSet;
    };
    RecreateStep::ScaleUpNewReplicaSet {
        new_replicas: scale_up_new_replica_set_for_recreate(new_rs, d),
        cleanup: util::deployment_complete(d, &util::deployment_status(d)),
    }
}

#[cfg(test)]
mod tests {
    // Table tests spell their rows as tuples.
    #![allow(clippy::type_complexity)]

    use super::*;
    use crate::deployment::util::test_helpers::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod(phase: Option<&str>) -> Pod {
        Pod {
            status: phase.map(|p| PodStatus {
                phase: Some(p.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rs_with_uid(uid: &str) -> ReplicaSet {
        let d = new_deployment("foo", 1, None, None, None, &[("foo", "bar")]);
        let mut r = owned_replica_set(&d, &format!("foo-{uid}"), 0);
        r.metadata.uid = Some(uid.to_string());
        r
    }

    // TestScaleDownOldReplicaSets
    #[test]
    fn scale_down_old_replica_sets() {
        let d = new_deployment("foo", 3, None, None, None, &[("foo", "bar")]);
        let old = owned_replica_set(&d, "foo-0", 3);
        let idle = owned_replica_set(&d, "foo-1", 0);
        assert_eq!(
            scale_down_old_replica_sets_for_recreate(&[&old, &idle]),
            vec![("foo-0".to_string(), 0)]
        );
    }

    // TestOldPodsRunning
    #[test]
    fn old_pods_running_table() {
        let (running, pending, failed, succeeded, unknown, no_phase) = (
            pod(Some("Running")),
            pod(Some("Pending")),
            pod(Some("Failed")),
            pod(Some("Succeeded")),
            pod(Some("Unknown")),
            pod(None),
        );
        let some = rs_with_uid("some-uid");
        let other = rs_with_uid("other-uid");
        let zero_status = rs_with_status("rs-1", 0, 0, 0);
        let one_status = rs_with_status("rs-1", 0, 1, 0);
        fn map<'a>(entries: Vec<(&str, Vec<&'a Pod>)>) -> BTreeMap<String, Vec<&'a Pod>> {
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        }
        let cases: Vec<(
            &str,
            Option<&ReplicaSet>,
            Vec<&ReplicaSet>,
            BTreeMap<String, Vec<&Pod>>,
            bool,
        )> = vec![
            ("no old RSs", None, vec![], map(vec![]), false),
            (
                "old RSs with running pods",
                None,
                vec![&some, &other],
                map(vec![
                    ("some-uid", vec![&no_phase, &no_phase]),
                    ("other-uid", vec![&no_phase, &no_phase]),
                ]),
                true,
            ),
            (
                "old RSs without pods but with non-zero status replicas",
                None,
                vec![&one_status],
                map(vec![]),
                true,
            ),
            (
                "old RSs without pods or non-zero status replicas",
                None,
                vec![&zero_status],
                map(vec![]),
                false,
            ),
            (
                "old RSs with zero status replicas but pods in terminal state are present",
                None,
                vec![&zero_status],
                map(vec![("uid-1", vec![&failed, &succeeded])]),
                false,
            ),
            (
                "old RSs with zero status replicas but pod in unknown phase present",
                None,
                vec![&zero_status],
                map(vec![("uid-1", vec![&unknown])]),
                true,
            ),
            (
                "old RSs with zero status replicas with pending pod present",
                None,
                vec![&zero_status],
                map(vec![("uid-1", vec![&pending])]),
                true,
            ),
            (
                "old RSs with zero status replicas with running pod present",
                None,
                vec![&zero_status],
                map(vec![("uid-1", vec![&running])]),
                true,
            ),
            (
                "old RSs with zero status replicas but pods in terminal state and pending are present",
                None,
                vec![&zero_status],
                map(vec![
                    ("uid-1", vec![&failed, &succeeded]),
                    ("uid-2", vec![]),
                    ("uid-3", vec![&pending]),
                ]),
                true,
            ),
            (
                "pods of the new RS do not count",
                Some(&some),
                vec![&zero_status],
                map(vec![("some-uid", vec![&running])]),
                false,
            ),
        ];
        for (case, new_rs, old, pods, expected) in cases {
            assert_eq!(old_pods_running(new_rs, &old, &pods), expected, "{case}");
        }
    }

    #[test]
    fn rollout_recreate_steps() {
        let d = new_deployment("foo", 3, None, None, None, &[("foo", "bar")]);
        let running = pod(Some("Running"));
        let no_pods = BTreeMap::new();

        // 1. Old RS with replicas: scale it down.
        let old = rs_with_status("foo-old", 3, 3, 3);
        assert_eq!(
            rollout_recreate_step(&d, None, &[&old], &no_pods),
            RecreateStep::ScaleDownOldReplicaSets(vec![("foo-old".to_string(), 0)])
        );
        // 2. Scaled down but pods still terminating: wait.
        let old = rs_with_status("foo-old", 0, 2, 0);
        assert_eq!(
            rollout_recreate_step(&d, None, &[&old], &no_pods),
            RecreateStep::WaitForOldPods
        );
        let old = rs_with_status("foo-old", 0, 0, 0);
        let pods: BTreeMap<String, Vec<&Pod>> =
            [("uid-foo-old".to_string(), vec![&running])].into();
        assert_eq!(
            rollout_recreate_step(&d, None, &[&old], &pods),
            RecreateStep::WaitForOldPods
        );
        // 3. No old pods: create the new RS.
        assert_eq!(
            rollout_recreate_step(&d, None, &[&old], &no_pods),
            RecreateStep::CreateNewReplicaSet
        );
        // 4. Scale up the new RS.
        let new = rs("foo-new", 0, None);
        assert_eq!(
            rollout_recreate_step(&d, Some(&new), &[&old], &no_pods),
            RecreateStep::ScaleUpNewReplicaSet {
                new_replicas: Some(3),
                cleanup: false
            }
        );
        let new = rs("foo-new", 3, None);
        assert_eq!(
            rollout_recreate_step(&d, Some(&new), &[&old], &no_pods),
            RecreateStep::ScaleUpNewReplicaSet {
                new_replicas: None,
                cleanup: false
            }
        );
        assert_eq!(scale_up_new_replica_set_for_recreate(&new, &d), None);
    }
}
