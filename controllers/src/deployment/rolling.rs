//! RollingUpdate decisions (upstream: pkg/controller/deployment/rolling.go).
//!
//! One scaling direction per sync: first the new ReplicaSet may grow within
//! spec.replicas + maxSurge ([`reconcile_new_replica_set`]); if it did not, old ReplicaSets
//! may shrink: their unhealthy replicas first, then available ones as long as
//! spec.replicas − maxUnavailable pods stay available ([`reconcile_old_replica_sets`]).
//! Every `(name, replicas)` returned is one ReplicaSet update (see [`super::sync`]).
//!
//! Arithmetic saturates at int32's bounds (see [`super::util`]'s module docs).
use rekube_crds::{Deployment, ReplicaSet};

use super::util::{
    self, clamp_i32, deployment_replicas, filter_active_replica_sets, name, replica_set_replicas,
    rs_available_replicas,
};

/// Errors of the rolling-update decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The Deployment's rolling-update parameters or strategy are invalid.
    #[error("deployment {deployment}: {source}")]
    Deployment {
        deployment: String,
        #[source]
        source: util::Error,
    },
    /// A computed scale-down would grow the ReplicaSet (its available replicas exceed its
    /// spec.replicas).
    #[error("when {phase}, got invalid request to scale down {replica_set} {from} -> {to}")]
    InvalidScaleDown {
        phase: &'static str,
        replica_set: String,
        from: i32,
        to: i32,
    },
}

/// reconcileNewReplicaSet: the new size of the new ReplicaSet when it must change (down to
/// spec.replicas, or up as far as NewRSNewReplicas allows), `None` otherwise.
pub fn reconcile_new_replica_set(
    all_rss: &[&ReplicaSet],
    new_rs: &ReplicaSet,
    d: &Deployment,
) -> Result<Option<i32>, Error> {
    let replicas = deployment_replicas(d);
    let current = replica_set_replicas(new_rs);
    if current == replicas {
        // Scaling not required.
        return Ok(None);
    }
    if current > replicas {
        // Scale down.
        return Ok(Some(replicas));
    }
    let new_replicas_count =
        util::new_rs_new_replicas(d, all_rss, new_rs).map_err(|source| Error::Deployment {
            deployment: util::key(&d.metadata),
            source,
        })?;
    Ok((new_replicas_count != current).then_some(new_replicas_count))
}

/// The old ReplicaSets being worked on, with the sizes decided so far.
struct Working<'a> {
    rss: Vec<(&'a ReplicaSet, i32)>,
    updates: Vec<(String, i32)>,
}

impl<'a> Working<'a> {
    fn new(old_rss: &[&'a ReplicaSet]) -> Self {
        let mut sorted = old_rss.to_vec();
        util::sort_by_creation_timestamp(&mut sorted);
        Self {
            rss: sorted
                .into_iter()
                .map(|rs| (rs, replica_set_replicas(rs)))
                .collect(),
            updates: Vec::new(),
        }
    }

    fn scale(&mut self, i: usize, to: i32) {
        let (rs, size) = &mut self.rss[i];
        if *size == to {
            return;
        }
        *size = to;
        let rs_name = name(&rs.metadata).to_string();
        match self.updates.iter_mut().find(|(n, _)| *n == rs_name) {
            Some(entry) => entry.1 = to,
            None => self.updates.push((rs_name, to)),
        }
    }

    /// cleanupUnhealthyReplicas on the working set: scales down unhealthy replicas, oldest
    /// ReplicaSet first, at most `max_cleanup_count` in total.
    fn cleanup_unhealthy(&mut self, max_cleanup_count: i32) -> Result<i32, Error> {
        let mut total_scaled_down = 0;
        for i in 0..self.rss.len() {
            if total_scaled_down >= max_cleanup_count {
                break;
            }
            let (rs, size) = self.rss[i];
            if size == 0 {
                // Cannot scale down this replica set.
                continue;
            }
            let available = rs_available_replicas(rs);
            if size == available {
                // No unhealthy replicas found, no scaling required.
                continue;
            }
            let scaled_down_count = max_cleanup_count
                .saturating_sub(total_scaled_down)
                .min(size.saturating_sub(available));
            let new_replicas_count = size.saturating_sub(scaled_down_count);
            if new_replicas_count > size {
                return Err(Error::InvalidScaleDown {
                    phase: "cleaning up unhealthy replicas",
                    replica_set: util::key(&rs.metadata),
                    from: size,
                    to: new_replicas_count,
                });
            }
            self.scale(i, new_replicas_count);
            total_scaled_down = total_scaled_down.saturating_add(scaled_down_count);
        }
        Ok(total_scaled_down)
    }

    /// scaleDownOldReplicaSetsForRollingUpdate on the working set: scales down old replica
    /// sets, oldest first, by at most (available pods − minAvailable).
    fn scale_down_for_rolling_update(
        &mut self,
        available_pod_count: i32,
        d: &Deployment,
    ) -> Result<i32, Error> {
        let min_available = deployment_replicas(d).saturating_sub(util::max_unavailable(d));
        if available_pod_count <= min_available {
            // Cannot scale down.
            return Ok(0);
        }
        let total_scale_down_count = available_pod_count.saturating_sub(min_available);
        let mut total_scaled_down = 0;
        for i in 0..self.rss.len() {
            if total_scaled_down >= total_scale_down_count {
                // No further scaling required.
                break;
            }
            let (rs, size) = self.rss[i];
            if size == 0 {
                // Cannot scale down this replica set.
                continue;
            }
            let scale_down_count =
                size.min(total_scale_down_count.saturating_sub(total_scaled_down));
            let new_replicas_count = size.saturating_sub(scale_down_count);
            if new_replicas_count > size {
                return Err(Error::InvalidScaleDown {
                    phase: "scaling down old RS",
                    replica_set: util::key(&rs.metadata),
                    from: size,
                    to: new_replicas_count,
                });
            }
            self.scale(i, new_replicas_count);
            total_scaled_down = total_scaled_down.saturating_add(scale_down_count);
        }
        Ok(total_scaled_down)
    }
}

/// reconcileOldReplicaSets: the old ReplicaSets to scale down, as `(name, new replicas)`
/// (one entry per ReplicaSet, with its final size): unhealthy replicas first, then
/// available ones, both oldest ReplicaSet first, within
/// `Σspec(all) − (spec.replicas − maxUnavailable) − (new RS's unavailable pods)`.
///
/// Like upstream, which swallows the errors of its two phases, an inconsistent ReplicaSet
/// (more available than desired) stops the scale-down with the updates decided before it.
pub fn reconcile_old_replica_sets(
    all_rss: &[&ReplicaSet],
    old_rss: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
) -> Vec<(String, i32)> {
    // Upstream's caller passes only the active old replica sets.
    let old_rss = filter_active_replica_sets(old_rss);
    let old_pods_count = util::get_replica_count_for_replica_sets(&old_rss);
    if old_pods_count == 0 {
        // Can't scale down further.
        return Vec::new();
    }
    let all_pods_count = util::get_replica_count_for_replica_sets(all_rss);
    let max_unavailable = util::max_unavailable(d);

    // maxScaledDown = allPodsCount − minAvailable − newReplicaSetPodsUnavailable: take
    // into account not only maxUnavailable and any surge pods that have been created, but
    // also unavailable pods of the new RS, so that they never make us scale down old RSs
    // further (which would increase unavailability).
    //
    // Concrete example: 10 replicas, maxUnavailable 2, maxSurge 3. The new RS is created
    // with 3 replicas, the old RS scaled down to 8, the new RS up to 5, and its pods
    // crashloop. allPodsCount 13, minAvailable 8, newRSPodsUnavailable 5: 13 − 8 − 5 = 0,
    // so a node failure making an old pod unavailable does not scale the old RS down. On a
    // rollback, newRSPodsUnavailable is 1 and 4 of the crashlooping pods are scaled down;
    // on a rollover, the new RS starts at 0 replicas and the old ones may lose 5.
    let min_available = deployment_replicas(d).saturating_sub(max_unavailable);
    let new_rs_unavailable_pod_count = new_rs
        .map(|rs| replica_set_replicas(rs).saturating_sub(rs_available_replicas(rs)))
        .unwrap_or(0);
    let max_scaled_down = clamp_i32(
        i64::from(all_pods_count)
            - i64::from(min_available)
            - i64::from(new_rs_unavailable_pod_count),
    );
    if max_scaled_down <= 0 {
        return Vec::new();
    }

    let mut working = Working::new(&old_rss);
    // Clean up unhealthy replicas first, otherwise they block the rollout until it times
    // out (kubernetes#16737).
    if working.cleanup_unhealthy(max_scaled_down).is_err() {
        return working.updates;
    }
    // Then scale down old replica sets, keeping minAvailable pods available. Available
    // counts are those of the active old replica sets and the new one.
    let available_pod_count = util::get_available_replica_count_for_replica_sets(&old_rss)
        .saturating_add(new_rs.map(rs_available_replicas).unwrap_or(0));
    let _ = working.scale_down_for_rolling_update(available_pod_count, d);
    working.updates
}

/// cleanupUnhealthyReplicas: scales down the unhealthy replicas of old ReplicaSets, oldest
/// first, at most `max_cleanup_count`; returns the updates and the count scaled down.
pub fn cleanup_unhealthy_replicas(
    old_rss: &[&ReplicaSet],
    _d: &Deployment,
    max_cleanup_count: i32,
) -> Result<(Vec<(String, i32)>, i32), Error> {
    let mut working = Working::new(old_rss);
    let total = working.cleanup_unhealthy(max_cleanup_count)?;
    Ok((working.updates, total))
}

/// scaleDownOldReplicaSetsForRollingUpdate: scales down old ReplicaSets, oldest first, as
/// long as spec.replicas − maxUnavailable pods of `all_rss` stay available; returns the
/// updates and the count scaled down.
pub fn scale_down_old_replica_sets_for_rolling_update(
    all_rss: &[&ReplicaSet],
    old_rss: &[&ReplicaSet],
    d: &Deployment,
) -> Result<(Vec<(String, i32)>, i32), Error> {
    let mut working = Working::new(old_rss);
    let available = util::get_available_replica_count_for_replica_sets(all_rss);
    let total = working.scale_down_for_rolling_update(available, d)?;
    Ok((working.updates, total))
}

/// The next action of rolloutRolling, once the new ReplicaSet exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollingStep {
    /// Scale the new ReplicaSet to this size, then sync the rollout status.
    ScaleNewReplicaSet(i32),
    /// Scale these old ReplicaSets down, then sync the rollout status.
    ScaleDownOldReplicaSets(Vec<(String, i32)>),
    /// Nothing to scale: sync the rollout status, after cleaning up old ReplicaSets
    /// ([`super::sync::cleanup_deployment`]) when `cleanup` (the Deployment's current
    /// status says the rollout is complete).
    Idle { cleanup: bool },
}

/// rolloutRolling: scale up the new ReplicaSet if possible, else scale down old ones, else
/// clean up when complete. `all_rss` are the old ReplicaSets and the new one.
pub fn rollout_rolling_step(
    all_rss: &[&ReplicaSet],
    old_rss: &[&ReplicaSet],
    new_rs: &ReplicaSet,
    d: &Deployment,
) -> Result<RollingStep, Error> {
    if let Some(size) = reconcile_new_replica_set(all_rss, new_rs, d)? {
        return Ok(RollingStep::ScaleNewReplicaSet(size));
    }
    let scaled_down = reconcile_old_replica_sets(all_rss, old_rss, Some(new_rs), d);
    if !scaled_down.is_empty() {
        return Ok(RollingStep::ScaleDownOldReplicaSets(scaled_down));
    }
    Ok(RollingStep::Idle {
        cleanup: util::deployment_complete(d, &util::deployment_status(d)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::util::test_helpers::*;
    use crate::deployment::util::{max_surge, max_unavailable, opt_i32};
    use k8s_openapi::api::apps::v1::{DeploymentStatus, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use proptest::prelude::*;

    fn with_available(mut r: ReplicaSet, available: i32) -> ReplicaSet {
        r.status = Some(ReplicaSetStatus {
            replicas: replica_set_replicas(&r),
            available_replicas: opt_i32(available),
            ..Default::default()
        });
        r
    }

    // TestDeploymentController_reconcileNewReplicaSet
    #[test]
    fn reconcile_new_replica_set_table() {
        // (deploymentReplicas, maxSurge, oldReplicas, newReplicas, expected)
        let cases = [
            // Should not scale up.
            (10, 0, 10, 0, None),
            (10, 2, 10, 0, Some(2)),
            (10, 2, 5, 0, Some(7)),
            (10, 2, 10, 2, None),
            // Should scale down.
            (10, 2, 2, 11, Some(10)),
        ];
        for (i, (replicas, surge, old, new, expected)) in cases.into_iter().enumerate() {
            let new_rs = rs("foo-v2", new, None);
            let old_rs = rs("foo-v2", old, None);
            let d = new_deployment(
                "foo",
                replicas,
                None,
                Some(int(surge)),
                Some(int(0)),
                &[("foo", "bar")],
            );
            let got = reconcile_new_replica_set(&[&new_rs, &old_rs], &new_rs, &d).unwrap();
            assert_eq!(got, expected, "scenario {i}");
        }
    }

    #[test]
    fn reconcile_new_replica_set_rejects_invalid_surge() {
        let new_rs = rs("foo-v2", 0, None);
        let d = new_deployment("foo", 3, None, Some(pct("x%")), Some(int(1)), &[]);
        let err = reconcile_new_replica_set(&[&new_rs], &new_rs, &d).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("deployment default/foo: invalid maxSurge value \"x%\""),
            "{err}"
        );
    }

    // TestDeploymentController_reconcileOldReplicaSets
    #[test]
    fn reconcile_old_replica_sets_table() {
        // (deploymentReplicas, maxUnavailable, oldReplicas, newReplicas, readyOld,
        //  readyNew, expected old replicas or None when no scaling)
        let cases = [
            (10, 0, 10, 0, 10, 0, Some(9)),
            (10, 2, 10, 0, 10, 0, Some(8)),
            // Expect unhealthy replicas from old replica sets been cleaned up.
            (10, 2, 10, 0, 8, 0, Some(8)),
            // Expect 1 unhealthy replica from old replica sets been cleaned up, and 1 ready
            // pod been scaled down.
            (10, 2, 10, 0, 9, 0, Some(8)),
            // The unavailable pods from the newRS would not make us scale down old RSs in
            // a further step.
            (10, 2, 8, 2, 8, 0, None),
        ];
        for (i, (replicas, max_unavail, old, new, ready_old, ready_new, expected)) in
            cases.into_iter().enumerate()
        {
            let mut new_rs = with_available(rs("foo-new", new, None), ready_new);
            set_annotation(
                &mut new_rs.metadata,
                util::DESIRED_REPLICAS_ANNOTATION,
                "10",
            );
            let mut old_rs = with_available(rs("foo-old", old, None), ready_old);
            set_annotation(
                &mut old_rs.metadata,
                util::DESIRED_REPLICAS_ANNOTATION,
                "10",
            );
            let d = new_deployment(
                "foo",
                replicas,
                None,
                Some(int(0)),
                Some(int(max_unavail)),
                &[("foo", "new")],
            );
            let got =
                reconcile_old_replica_sets(&[&old_rs, &new_rs], &[&old_rs], Some(&new_rs), &d);
            match expected {
                Some(size) => assert_eq!(got, vec![("foo-old".to_string(), size)], "scenario {i}"),
                None => assert!(got.is_empty(), "scenario {i}: {got:?}"),
            }
        }
    }

    // TestDeploymentController_cleanupUnhealthyReplicas
    #[test]
    fn cleanup_unhealthy_replicas_table() {
        // (oldReplicas, readyPods, unHealthyPods, maxCleanupCount, cleanupCountExpected)
        let cases = [
            (10, 8, 2, 1, 1),
            (10, 8, 2, 3, 2),
            (10, 8, 2, 0, 0),
            (10, 10, 0, 3, 0),
        ];
        for (i, (old, ready, _unhealthy, max_cleanup, expected)) in cases.into_iter().enumerate() {
            let old_rs = with_available(rs("foo-v2", old, None), ready);
            let d = new_deployment("foo", 10, None, Some(int(2)), Some(int(2)), &[]);
            let (updates, count) = cleanup_unhealthy_replicas(&[&old_rs], &d, max_cleanup).unwrap();
            assert_eq!(count, expected, "scenario {i}");
            if expected > 0 {
                assert_eq!(
                    updates,
                    vec![("foo-v2".to_string(), old - expected)],
                    "scenario {i}"
                );
            } else {
                assert!(updates.is_empty(), "scenario {i}");
            }
        }
    }

    #[test]
    fn cleanup_unhealthy_replicas_reports_inconsistent_replica_sets() {
        // More available than desired (status lagging a scale-down): upstream errors.
        let old_rs = with_available(rs("foo-v2", 3, None), 5);
        let d = new_deployment("foo", 10, None, Some(int(2)), Some(int(2)), &[]);
        let err = cleanup_unhealthy_replicas(&[&old_rs], &d, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "when cleaning up unhealthy replicas, got invalid request to scale down default/foo-v2 3 -> 5"
        );
    }

    // TestDeploymentController_scaleDownOldReplicaSetsForRollingUpdate
    #[test]
    fn scale_down_old_replica_sets_for_rolling_update_table() {
        // (deploymentReplicas, maxUnavailable, readyPods, oldReplicas, expected)
        let cases = [
            (10, 0, 10, 10, Some(9)),
            (10, 2, 10, 10, Some(8)),
            (10, 2, 8, 10, None),
            (10, 2, 10, 0, None),
            (10, 2, 1, 10, None),
        ];
        for (i, (replicas, max_unavail, ready, old, expected)) in cases.into_iter().enumerate() {
            let old_rs = with_available(rs("foo-v2", old, None), ready);
            let d = new_deployment(
                "foo",
                replicas,
                None,
                Some(int(0)),
                Some(int(max_unavail)),
                &[("foo", "bar")],
            );
            let (updates, count) =
                scale_down_old_replica_sets_for_rolling_update(&[&old_rs], &[&old_rs], &d).unwrap();
            match expected {
                Some(size) => {
                    assert_eq!(updates, vec![("foo-v2".to_string(), size)], "scenario {i}");
                    assert_eq!(count, old - size, "scenario {i}");
                }
                None => assert_eq!((updates.len(), count), (0, 0), "scenario {i}"),
            }
        }
    }

    // --- Overflow: replicas near int32's max saturate instead of panicking or wrapping.

    const MAX: i32 = i32::MAX;

    #[test]
    fn overflow_reconcile_new_replica_set_saturates() {
        let old_rs = rs("foo-v1", 10, None);
        let new_rs = rs("foo-v2", 0, None);
        for surge in [int(0), int(1), pct("25%")] {
            let d = new_deployment("foo", MAX, None, Some(surge.clone()), Some(int(1)), &[]);
            assert_eq!(
                reconcile_new_replica_set(&[&old_rs, &new_rs], &new_rs, &d),
                Ok(Some(MAX - 10)),
                "maxSurge {surge:?}"
            );
        }
    }

    #[test]
    fn overflow_cleanup_unhealthy_replicas_saturates() {
        // size − available with a negative available count (refused by validation).
        let old_rs = with_available(rs("foo-v1", MAX, None), -1);
        let d = new_deployment("foo", MAX, None, Some(int(1)), Some(int(0)), &[]);
        let (updates, count) = cleanup_unhealthy_replicas(&[&old_rs], &d, MAX).unwrap();
        assert_eq!(updates, vec![("foo-v1".to_string(), 0)]);
        assert_eq!(count, MAX);
    }

    #[test]
    fn overflow_scale_down_for_rolling_update_saturates() {
        let t = |m: i8| Some(ts(2020, 1, 1, 0, m, 0));
        let a = with_available(rs("foo-v1", MAX, t(0)), MAX);
        let b = with_available(rs("foo-v2", MAX, t(1)), MAX);
        // Available pods saturate at int32's max; minAvailable 10.
        let d = new_deployment("foo", 10, None, Some(int(1)), Some(int(0)), &[]);
        let (updates, count) =
            scale_down_old_replica_sets_for_rolling_update(&[&a, &b], &[&a, &b], &d).unwrap();
        assert_eq!(updates, vec![("foo-v1".to_string(), 10)]);
        assert_eq!(count, MAX - 10);
        // spec.replicas − (negative maxUnavailable) saturates: nothing may go.
        let d = new_deployment("foo", MAX, None, Some(int(0)), Some(int(-1)), &[]);
        let (updates, count) =
            scale_down_old_replica_sets_for_rolling_update(&[&a, &b], &[&a, &b], &d).unwrap();
        assert_eq!((updates.len(), count), (0, 0));
    }

    #[test]
    fn overflow_reconcile_old_replica_sets_saturates() {
        let t = |m: i8| Some(ts(2020, 1, 1, 0, m, 0));
        let a = with_available(rs("foo-v1", MAX, t(0)), MAX);
        let b = with_available(rs("foo-v2", MAX, t(1)), MAX);
        let new = with_available(rs("foo-v3", 0, t(2)), 0);
        // int32's max replicas, 25%/25%: minAvailable 2147483647 − 536870911 = 1610612736;
        // the pod counts saturate, so 536870911 old pods go, oldest RS first.
        let d = new_deployment("foo", MAX, None, Some(pct("25%")), Some(pct("25%")), &[]);
        let got = reconcile_old_replica_sets(&[&a, &b, &new], &[&a, &b], Some(&new), &d);
        assert_eq!(got, vec![("foo-v1".to_string(), 1_610_612_736)]);
        // A new RS whose unavailable count saturates blocks every scale-down.
        let old = with_available(rs("foo-v1", 5, t(0)), 5);
        let broken = with_available(rs("foo-v3", MAX, t(2)), -1);
        let d = new_deployment("foo", 10, None, Some(int(0)), Some(int(2)), &[]);
        let got = reconcile_old_replica_sets(&[&old, &broken], &[&old], Some(&broken), &d);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn reconcile_old_scales_oldest_first_and_merges_phases() {
        let t = |m: i8| Some(ts(2020, 1, 1, 0, m, 0));
        // 10 replicas, maxUnavailable 3, maxSurge 0. Two old RSs: the oldest has 2
        // unhealthy pods. New RS 2/2 available.
        let older = with_available(rs("foo-v1", 5, t(0)), 3);
        let old = with_available(rs("foo-v2", 3, t(1)), 3);
        let new = with_available(rs("foo-v3", 2, t(2)), 2);
        let d = new_deployment("foo", 10, None, Some(int(0)), Some(int(3)), &[]);
        // maxScaledDown = 10 − 7 − 0 = 3: cleanup takes 2 unhealthy from foo-v1 (→ 3);
        // available 8 − minAvailable 7 = 1 more from foo-v1 (→ 2).
        let got =
            reconcile_old_replica_sets(&[&older, &old, &new], &[&old, &older], Some(&new), &d);
        assert_eq!(got, vec![("foo-v1".to_string(), 2)]);
    }

    #[test]
    fn reconcile_old_stops_at_an_inconsistent_replica_set() {
        let t = |m: i8| Some(ts(2020, 1, 1, 0, m, 0));
        let unhealthy = with_available(rs("foo-v1", 4, t(0)), 2);
        let lagging = with_available(rs("foo-v2", 3, t(1)), 5);
        let new = with_available(rs("foo-v3", 0, t(2)), 0);
        let d = new_deployment("foo", 5, None, Some(int(0)), Some(int(1)), &[]);
        // Cleanup scales foo-v1 down by its 2 unhealthy pods, then fails on foo-v2.
        let got = reconcile_old_replica_sets(
            &[&unhealthy, &lagging, &new],
            &[&unhealthy, &lagging],
            Some(&new),
            &d,
        );
        assert_eq!(got, vec![("foo-v1".to_string(), 2)]);
    }

    #[test]
    fn rollout_rolling_step_sequence() {
        let mut d = new_deployment("foo", 2, None, Some(int(1)), Some(int(0)), &[]);
        let old = with_available(rs("foo-v1", 2, Some(ts(2020, 1, 1, 0, 0, 0))), 2);
        let new = with_available(rs("foo-v2", 0, Some(ts(2020, 1, 1, 0, 1, 0))), 0);
        assert_eq!(
            rollout_rolling_step(&[&old, &new], &[&old], &new, &d),
            Ok(RollingStep::ScaleNewReplicaSet(1))
        );
        let new = with_available(rs("foo-v2", 1, Some(ts(2020, 1, 1, 0, 1, 0))), 1);
        assert_eq!(
            rollout_rolling_step(&[&old, &new], &[&old], &new, &d),
            Ok(RollingStep::ScaleDownOldReplicaSets(vec![(
                "foo-v1".to_string(),
                1
            )]))
        );
        let old = with_available(rs("foo-v1", 0, Some(ts(2020, 1, 1, 0, 0, 0))), 0);
        let new = with_available(rs("foo-v2", 2, Some(ts(2020, 1, 1, 0, 1, 0))), 2);
        assert_eq!(
            rollout_rolling_step(&[&old, &new], &[&old], &new, &d),
            Ok(RollingStep::Idle { cleanup: false })
        );
        d.status = Some(DeploymentStatus {
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..Default::default()
        });
        assert_eq!(
            rollout_rolling_step(&[&old, &new], &[&old], &new, &d),
            Ok(RollingStep::Idle { cleanup: true })
        );
    }

    // ---- Property tests: a tiny simulated world -------------------------------------

    /// The simulated cluster: old ReplicaSets then the new one (last). The ReplicaSet
    /// controller is instantaneous for deletions (unavailable pods go first) and pods it
    /// creates become available at the next tick (when `new_pods_become_available`).
    struct World {
        rss: Vec<ReplicaSet>,
    }

    impl World {
        fn set_spec(&mut self, rs_name: &str, size: i32) {
            let rs = self
                .rss
                .iter_mut()
                .find(|r| name(&r.metadata) == rs_name)
                .expect("decision names an existing ReplicaSet");
            let available = rs_available_replicas(rs).min(size);
            rs.spec.as_mut().unwrap().replicas = Some(size);
            rs.status = Some(ReplicaSetStatus {
                replicas: size,
                available_replicas: opt_i32(available),
                ..Default::default()
            });
        }

        fn tick(&mut self, new_pods_become_available: bool) {
            let last = self.rss.len() - 1;
            for (i, rs) in self.rss.iter_mut().enumerate() {
                if i == last && !new_pods_become_available {
                    continue;
                }
                let size = replica_set_replicas(rs);
                rs.status = Some(ReplicaSetStatus {
                    replicas: size,
                    available_replicas: opt_i32(size),
                    ..Default::default()
                });
            }
        }

        fn total_spec(&self) -> i32 {
            self.rss.iter().map(replica_set_replicas).sum()
        }

        fn total_available(&self) -> i32 {
            self.rss.iter().map(rs_available_replicas).sum()
        }

        fn converged(&self, replicas: i32) -> bool {
            let (new, old) = self.rss.split_last().unwrap();
            replica_set_replicas(new) == replicas
                && old.iter().all(|r| replica_set_replicas(r) == 0)
        }
    }

    fn is_zero(v: &IntOrString) -> bool {
        matches!(v, IntOrString::Int(0)) || matches!(v, IntOrString::String(s) if s == "0%")
    }

    fn arb_int_or_percent() -> impl Strategy<Value = IntOrString> {
        prop_oneof![
            (0..=10i32).prop_map(IntOrString::Int),
            (0..=100i32).prop_map(|p| IntOrString::String(format!("{p}%"))),
        ]
    }

    /// Runs a rollout from `old_sizes` (with `old_available` of their pods available) to
    /// a new ReplicaSet, checking the rolling-update invariants at every step. Returns
    /// whether it converged within the step bound.
    fn simulate(
        replicas: i32,
        surge: IntOrString,
        unavailable: IntOrString,
        old_sizes: &[i32],
        old_available: &[i32],
        new_pods_become_available: bool,
    ) -> Result<bool, TestCaseError> {
        let d = new_deployment(
            "sim",
            replicas,
            None,
            Some(surge),
            Some(unavailable),
            &[("app", "sim")],
        );
        let max_total = replicas + max_surge(&d);
        let min_available = replicas - max_unavailable(&d);
        let mut world = World { rss: Vec::new() };
        for (i, (size, available)) in old_sizes.iter().zip(old_available).enumerate() {
            let r = rs(
                &format!("sim-old{i}"),
                *size,
                Some(ts(2020, 1, 1, 0, i as i8, 0)),
            );
            world.rss.push(with_available(r, (*available).min(*size)));
        }
        // getNewReplicaSet: the new ReplicaSet starts at NewRSNewReplicas.
        let mut new_rs = rs("sim-new", 0, Some(ts(2020, 1, 1, 1, 0, 0)));
        {
            let mut all: Vec<&ReplicaSet> = world.rss.iter().collect();
            all.push(&new_rs);
            let size = util::new_rs_new_replicas(&d, &all, &new_rs).unwrap();
            new_rs.spec.as_mut().unwrap().replicas = Some(size);
        }
        world.rss.push(with_available(new_rs, 0));
        prop_assert!(world.total_spec() <= max_total.max(old_sizes.iter().sum()));

        let mut availability_held = world.total_available() >= min_available;
        let max_steps = 4 * (replicas + 1) + 10;
        for step in 0..max_steps {
            if world.converged(replicas) {
                return Ok(true);
            }
            let decision = {
                let all: Vec<&ReplicaSet> = world.rss.iter().collect();
                let (new, old) = all.split_last().unwrap();
                rollout_rolling_step(&all, old, new, &d).unwrap()
            };
            match decision {
                RollingStep::ScaleNewReplicaSet(size) => {
                    prop_assert!(
                        size >= 0 && size <= replicas,
                        "step {step}: new RS to {size}"
                    );
                    world.set_spec("sim-new", size);
                }
                RollingStep::ScaleDownOldReplicaSets(updates) => {
                    for (n, size) in updates {
                        let current = world
                            .rss
                            .iter()
                            .find(|r| name(&r.metadata) == n)
                            .map(replica_set_replicas)
                            .unwrap();
                        prop_assert!(n != "sim-new", "step {step}: scaled the new RS down");
                        prop_assert!(
                            size >= 0 && size < current,
                            "step {step}: {n} {current} -> {size}"
                        );
                        world.set_spec(&n, size);
                    }
                }
                RollingStep::Idle { .. } => {}
            }
            prop_assert!(
                world.total_spec() <= max_total,
                "step {step}: {} replicas over the limit {max_total}",
                world.total_spec()
            );
            if availability_held {
                prop_assert!(
                    world.total_available() >= min_available,
                    "step {step}: {} available, below {min_available}",
                    world.total_available()
                );
            }
            world.tick(new_pods_become_available);
            availability_held |= world.total_available() >= min_available;
        }
        Ok(world.converged(replicas))
    }

    /// Splits `total` into `parts` non-negative sizes using `cuts` as proportions.
    fn split(total: i32, cuts: &[u8]) -> Vec<i32> {
        let weights: i32 = cuts.iter().map(|c| i32::from(*c) + 1).sum();
        let mut sizes: Vec<i32> = cuts
            .iter()
            .map(|c| total * (i32::from(*c) + 1) / weights)
            .collect();
        let rest = total - sizes.iter().sum::<i32>();
        sizes[0] += rest;
        sizes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// A rollout from fully available old ReplicaSets stays within spec.replicas +
        /// maxSurge, never drops below spec.replicas − maxUnavailable available pods, and
        /// converges (new = spec.replicas, old = 0) in a bounded number of steps.
        #[test]
        fn rolling_update_invariants(
            replicas in 0..50i32,
            surge in arb_int_or_percent(),
            unavailable in arb_int_or_percent(),
            cuts in prop::collection::vec(any::<u8>(), 1..4),
        ) {
            prop_assume!(!(is_zero(&surge) && is_zero(&unavailable)));
            let old = split(replicas, &cuts);
            let converged = simulate(replicas, surge, unavailable, &old, &old, true)?;
            prop_assert!(converged, "rollout did not converge");
        }

        /// Same, starting with unhealthy old pods: availability is checked from the first
        /// moment it holds, and the rollout still converges.
        #[test]
        fn rolling_update_with_unhealthy_old_pods(
            replicas in 1..50i32,
            surge in arb_int_or_percent(),
            unavailable in arb_int_or_percent(),
            cuts in prop::collection::vec(any::<u8>(), 1..4),
            healthy in prop::collection::vec(0..=100i32, 3),
        ) {
            prop_assume!(!(is_zero(&surge) && is_zero(&unavailable)));
            let old = split(replicas, &cuts);
            let available: Vec<i32> = old.iter().zip(&healthy).map(|(s, h)| s * h / 100).collect();
            let converged = simulate(replicas, surge, unavailable, &old, &available, true)?;
            prop_assert!(converged, "rollout did not converge");
        }

        /// New pods that never become available (crashloop): the limits still hold at every
        /// step, so the old pods keep serving.
        #[test]
        fn rolling_update_with_broken_new_pods(
            replicas in 0..50i32,
            surge in arb_int_or_percent(),
            unavailable in arb_int_or_percent(),
            cuts in prop::collection::vec(any::<u8>(), 1..4),
        ) {
            prop_assume!(!(is_zero(&surge) && is_zero(&unavailable)));
            let old = split(replicas, &cuts);
            simulate(replicas, surge, unavailable, &old, &old, false)?;
        }
    }
}
