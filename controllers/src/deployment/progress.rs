//! Progress conditions, deadlines and requeues (upstream:
//! pkg/controller/deployment/progress.go, plus the Progressing-condition decisions of
//! sync.go: checkPausedConditions and getNewReplicaSet's conditions).
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use rekube_crds::{Deployment, ReplicaSet};

use super::sync::calculate_status;
use super::util::{
    self, CONDITION_FALSE, CONDITION_TRUE, CONDITION_UNKNOWN, DEPLOYMENT_PROGRESSING,
    DEPLOYMENT_REPLICA_FAILURE, REPLICA_SET_REPLICA_FAILURE,
};

/// syncRolloutStatus + requeueStuckDeployment: the status to write during a rollout
/// (Progressing: NewReplicaSetAvailable, ReplicaSetUpdated, ProgressDeadlineExceeded;
/// ReplicaFailure copied from the ReplicaSets) and, when that status equals the current
/// one, when to requeue for a progress check: `Some(Duration::ZERO)` means now
/// (rate-limited), `Some(d)` after `d` (lastUpdateTime + deadline − now + 1s).
/// `all_rss` includes `new_rs`.
pub fn sync_rollout_status(
    all_rss: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let mut new_status = calculate_status(all_rss, new_rs, d, now);

    // Without progressDeadlineSeconds, no Progressing condition.
    if !util::has_progress_deadline(d) {
        util::remove_deployment_condition(&mut new_status, DEPLOYMENT_PROGRESSING);
    }

    // A single active replica set and a previously completed rollout: this is a resync, not
    // a new rollout, so do not estimate any progress.
    let current_status = util::deployment_status(d);
    let current_cond = util::get_deployment_condition(&current_status, DEPLOYMENT_PROGRESSING);
    let is_complete_deployment = util::status::replicas(&new_status)
        == util::status::updated(&new_status)
        && current_cond.is_some_and(|c| c.reason.as_deref() == Some(util::NEW_RS_AVAILABLE_REASON));
    // Check for progress only with a deadline and while the latest rollout is incomplete.
    if util::has_progress_deadline(d) && !is_complete_deployment {
        if util::deployment_complete(d, &new_status) {
            // The new replica set was successfully deployed; a no-op if already reported.
            let condition = util::new_deployment_condition(
                DEPLOYMENT_PROGRESSING,
                CONDITION_TRUE,
                util::NEW_RS_AVAILABLE_REASON,
                &util::successfully_progressed_message(d, new_rs),
                now,
            );
            util::set_deployment_condition(&mut new_status, condition);
        } else if util::deployment_progressing(d, &new_status) {
            // Progress was made: do not check for a timeout. Unlike other conditions, a
            // Progressing=True condition with the same reason is updated too (everything
            // but lastTransitionTime), so that lastUpdateTime records the progress.
            let mut condition = util::new_deployment_condition(
                DEPLOYMENT_PROGRESSING,
                CONDITION_TRUE,
                util::REPLICA_SET_UPDATED_REASON,
                &util::is_progressing_message(d, new_rs),
                now,
            );
            if let Some(current) = current_cond {
                if current.status == CONDITION_TRUE {
                    condition.last_transition_time = current.last_transition_time.clone();
                }
                util::remove_deployment_condition(&mut new_status, DEPLOYMENT_PROGRESSING);
            }
            util::set_deployment_condition(&mut new_status, condition);
        } else if util::deployment_time_out(d, &new_status, now) {
            // A no-op if the timeout was already reported.
            let condition = util::new_deployment_condition(
                DEPLOYMENT_PROGRESSING,
                CONDITION_FALSE,
                util::TIMED_OUT_REASON,
                &util::timed_out_message(d, new_rs),
                now,
            );
            util::set_deployment_condition(&mut new_status, condition);
        }
    }

    // Move the failure condition of the replica sets into the deployment conditions.
    match get_replica_failures(all_rss, new_rs).into_iter().next() {
        Some(failure) => util::set_deployment_condition(&mut new_status, failure),
        None => util::remove_deployment_condition(&mut new_status, DEPLOYMENT_REPLICA_FAILURE),
    }

    // Nothing new to write: requeue if the deployment may be stuck.
    if current_status == new_status {
        let requeue = requeue_stuck_deployment(d, &new_status, now).map(|after| {
            if after.is_zero() {
                after
            } else {
                // A second more avoids milliseconds skew in AddAfter.
                after + Duration::from_secs(1)
            }
        });
        return (new_status, requeue);
    }
    (new_status, None)
}

/// getReplicaFailures: the ReplicaFailure conditions of the new ReplicaSet, else of all
/// ReplicaSets, as Deployment conditions.
pub fn get_replica_failures(
    all_rss: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Vec<DeploymentCondition> {
    let failures = |rs: &ReplicaSet| -> Vec<DeploymentCondition> {
        rs.status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .filter(|c| c.type_ == REPLICA_SET_REPLICA_FAILURE)
            .map(util::replica_set_to_deployment_condition)
            .collect()
    };
    // Failures of the new replica set come first.
    if let Some(new_rs) = new_rs {
        let conditions = failures(new_rs);
        if !conditions.is_empty() {
            return conditions;
        }
    }
    all_rss.iter().flat_map(|rs| failures(rs)).collect()
}

/// requeueStuckDeployment: when a Deployment without visible progress must be checked
/// again for its deadline. `None`: never (no deadline, no Progressing condition, complete,
/// or already timed out); `Some(ZERO)`: now (less than a second left); else the time
/// left until lastUpdateTime + progressDeadlineSeconds (upstream adds 1s when enqueuing).
pub fn requeue_stuck_deployment(
    d: &Deployment,
    new_status: &DeploymentStatus,
    now: Timestamp,
) -> Option<Duration> {
    let current_status = util::deployment_status(d);
    let current_cond = util::get_deployment_condition(&current_status, DEPLOYMENT_PROGRESSING)?;
    // Can't estimate progress without a deadline in the spec.
    if !util::has_progress_deadline(d) {
        return None;
    }
    // No need to estimate progress if the rollout is complete or already timed out.
    if util::deployment_complete(d, new_status)
        || current_cond.reason.as_deref() == Some(util::TIMED_OUT_REASON)
    {
        return None;
    }
    // No sign of progress: the deployment may be stuck; resync it when the deadline
    // passes (lastUpdateTime + progressDeadlineSeconds − now), otherwise we would depend on
    // the resync interval (kubernetes#34458).
    let last_update = current_cond
        .last_update_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::MIN);
    let deadline =
        SignedDuration::from_secs(i64::from(util::progress_deadline_seconds(d).unwrap_or(0)));
    // A deadline past the representable time saturates there (jiff's range ends in 9999).
    let after = last_update
        .saturating_add(deadline)
        .unwrap_or(Timestamp::MAX)
        .duration_since(now);
    // Less than a second left: requeue now (rate-limited), the deployment should soon turn
    // either complete or timed out.
    if after < SignedDuration::from_secs(1) {
        return Some(Duration::ZERO);
    }
    Duration::try_from(after).ok()
}

/// checkPausedConditions: the status with a Progressing=Unknown DeploymentPaused (when
/// paused) or DeploymentResumed (when resumed) condition, `None` when nothing changes:
/// without a progress deadline, when already reported, or over a ProgressDeadlineExceeded
/// condition (lack of progress is never overwritten).
pub fn sync_status_only_conditions(d: &Deployment, now: Timestamp) -> Option<DeploymentStatus> {
    if !util::has_progress_deadline(d) {
        return None;
    }
    let mut status = util::deployment_status(d);
    let cond = util::get_deployment_condition(&status, DEPLOYMENT_PROGRESSING);
    let reason = cond.and_then(|c| c.reason.as_deref());
    if reason == Some(util::TIMED_OUT_REASON) {
        // Lack of progress was reported: do not overwrite it with a paused condition.
        return None;
    }
    let paused_cond_exists = reason == Some(util::PAUSED_DEPLOY_REASON);
    let paused = util::is_paused(d);
    let condition = if paused && !paused_cond_exists {
        util::new_deployment_condition(
            DEPLOYMENT_PROGRESSING,
            CONDITION_UNKNOWN,
            util::PAUSED_DEPLOY_REASON,
            util::PAUSED_MESSAGE,
            now,
        )
    } else if !paused && paused_cond_exists {
        util::new_deployment_condition(
            DEPLOYMENT_PROGRESSING,
            CONDITION_UNKNOWN,
            util::RESUMED_DEPLOY_REASON,
            util::RESUMED_MESSAGE,
            now,
        )
    } else {
        return None;
    };
    util::set_deployment_condition(&mut status, condition);
    Some(status)
}

/// getNewReplicaSet after creating the new ReplicaSet: Progressing=True
/// NewReplicaSetCreated ("Created new replica set \"x\""), when the Deployment has a
/// progress deadline.
pub fn new_replica_set_created_condition(
    d: &Deployment,
    rs_name: &str,
    now: Timestamp,
) -> Option<DeploymentCondition> {
    util::has_progress_deadline(d).then(|| {
        util::new_deployment_condition(
            DEPLOYMENT_PROGRESSING,
            CONDITION_TRUE,
            util::NEW_REPLICA_SET_REASON,
            &util::created_new_replica_set_message(rs_name),
            now,
        )
    })
}

/// getNewReplicaSet on an existing new ReplicaSet: Progressing=True FoundNewReplicaSet
/// ("Found new replica set \"x\""), when the Deployment has a progress deadline and no
/// Progressing condition yet.
pub fn found_new_replica_set_condition(
    d: &Deployment,
    rs_name: &str,
    now: Timestamp,
) -> Option<DeploymentCondition> {
    let status = util::deployment_status(d);
    let has_cond = util::get_deployment_condition(&status, DEPLOYMENT_PROGRESSING).is_some();
    (util::has_progress_deadline(d) && !has_cond).then(|| {
        util::new_deployment_condition(
            DEPLOYMENT_PROGRESSING,
            CONDITION_TRUE,
            util::FOUND_NEW_RS_REASON,
            &util::found_new_replica_set_message(rs_name),
            now,
        )
    })
}

/// getNewReplicaSet when creating the new ReplicaSet failed: Progressing=False
/// ReplicaSetCreateError ("Failed to create new replica set \"x\": err"), when the
/// Deployment has a progress deadline. The Warning event (reason ReplicaSetCreateError,
/// same message) is recorded in any case.
pub fn failed_rs_create_condition(
    d: &Deployment,
    rs_name: &str,
    error: &str,
    now: Timestamp,
) -> Option<DeploymentCondition> {
    util::has_progress_deadline(d).then(|| {
        util::new_deployment_condition(
            DEPLOYMENT_PROGRESSING,
            CONDITION_FALSE,
            util::FAILED_RS_CREATE_REASON,
            &util::failed_rs_create_message(rs_name, error),
            now,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::util::test_helpers::*;
    use crate::deployment::util::{
        NEW_RS_AVAILABLE_REASON, REPLICA_SET_UPDATED_REASON, TIMED_OUT_REASON, opt_i32,
    };
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetCondition, ReplicaSetStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn new_deployment_status(replicas: i32, updated: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            replicas: opt_i32(replicas),
            updated_replicas: opt_i32(updated),
            available_replicas: opt_i32(available),
            ..Default::default()
        }
    }

    /// upstream currentDeployment: a Recreate deployment "progress-test".
    fn current_deployment(
        pds: Option<i32>,
        replicas: i32,
        status_replicas: i32,
        updated: i32,
        available: i32,
        conditions: Vec<DeploymentCondition>,
    ) -> Deployment {
        let mut status = new_deployment_status(status_replicas, updated, available);
        status.conditions = Some(conditions).filter(|c| !c.is_empty());
        Deployment {
            metadata: ObjectMeta {
                name: Some("progress-test".to_string()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                progress_deadline_seconds: pds,
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some(util::RECREATE_DEPLOYMENT_STRATEGY_TYPE.to_string()),
                    rolling_update: None,
                }),
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    fn new_rs_with_available(name: &str, spec: i32, status: i32, available: i32) -> ReplicaSet {
        rs_with_status(name, spec, status, available)
    }

    fn progressing(status: &str, reason: &str, at: Option<Timestamp>) -> DeploymentCondition {
        DeploymentCondition {
            type_: DEPLOYMENT_PROGRESSING.to_string(),
            status: status.to_string(),
            reason: Some(reason.to_string()),
            last_update_time: at.map(Time),
            last_transition_time: at.map(Time),
            ..Default::default()
        }
    }

    // TestRequeueStuckDeployment
    #[test]
    fn requeue_stuck_deployment_table() {
        let pds = Some(60);
        let failed = vec![progressing(CONDITION_FALSE, TIMED_OUT_REASON, None)];
        let stuck = vec![DeploymentCondition {
            type_: DEPLOYMENT_PROGRESSING.to_string(),
            status: CONDITION_TRUE.to_string(),
            last_update_time: Some(Time(ts(2017, 2, 15, 18, 49, 0))),
            ..Default::default()
        }];
        let at = |m: i8, s: i8| ts(2017, 2, 15, 18, m, s);
        let cases: Vec<(
            &str,
            Deployment,
            DeploymentStatus,
            Timestamp,
            Option<Duration>,
        )> = vec![
            (
                "nil progressDeadlineSeconds specified",
                current_deployment(None, 4, 3, 3, 2, vec![]),
                new_deployment_status(3, 3, 2),
                at(49, 0),
                None,
            ),
            (
                "infinite progressDeadlineSeconds specified",
                current_deployment(Some(i32::MAX), 4, 3, 3, 2, vec![]),
                new_deployment_status(3, 3, 2),
                at(49, 0),
                None,
            ),
            (
                "no progressing condition found",
                current_deployment(pds, 4, 3, 3, 2, vec![]),
                new_deployment_status(3, 3, 2),
                at(49, 0),
                None,
            ),
            (
                "complete deployment does not need to be requeued",
                current_deployment(pds, 3, 3, 3, 3, vec![]),
                new_deployment_status(3, 3, 3),
                at(49, 0),
                None,
            ),
            (
                "already failed deployment does not need to be requeued",
                current_deployment(pds, 3, 3, 3, 0, failed),
                new_deployment_status(3, 3, 0),
                at(49, 0),
                None,
            ),
            (
                "stuck deployment - 30s",
                current_deployment(pds, 3, 3, 3, 1, stuck.clone()),
                new_deployment_status(3, 3, 1),
                at(49, 30),
                Some(Duration::from_secs(30)),
            ),
            (
                "stuck deployment - 1s",
                current_deployment(pds, 3, 3, 3, 1, stuck.clone()),
                new_deployment_status(3, 3, 1),
                at(49, 59),
                Some(Duration::from_secs(1)),
            ),
            (
                "failed deployment - less than a second => now",
                current_deployment(pds, 3, 3, 3, 1, stuck.clone()),
                new_deployment_status(3, 3, 1),
                at(49, 59) + SignedDuration::from_nanos(1),
                Some(Duration::ZERO),
            ),
            (
                "failed deployment - now",
                current_deployment(pds, 3, 3, 3, 1, stuck.clone()),
                new_deployment_status(3, 3, 1),
                at(50, 0),
                Some(Duration::ZERO),
            ),
            (
                "failed deployment - 1s after deadline",
                current_deployment(pds, 3, 3, 3, 1, stuck.clone()),
                new_deployment_status(3, 3, 1),
                at(50, 1),
                Some(Duration::ZERO),
            ),
            (
                "failed deployment - 60s after deadline",
                current_deployment(pds, 3, 3, 3, 1, stuck.clone()),
                new_deployment_status(3, 3, 1),
                at(51, 0),
                Some(Duration::ZERO),
            ),
        ];
        for (case, d, status, now, expected) in cases {
            assert_eq!(
                requeue_stuck_deployment(&d, &status, now),
                expected,
                "{case}"
            );
        }
    }

    // TestSyncRolloutStatus
    #[test]
    fn sync_rollout_status_table() {
        let pds = Some(60);
        let test_time = ts(2017, 2, 15, 18, 49, 0);
        let now = ts(2017, 2, 15, 18, 55, 0);
        let failed_timed_out = progressing(CONDITION_FALSE, TIMED_OUT_REASON, None);
        let new_rs_available =
            progressing(CONDITION_TRUE, NEW_RS_AVAILABLE_REASON, Some(test_time));
        let replica_set_updated =
            progressing(CONDITION_TRUE, REPLICA_SET_UPDATED_REASON, Some(test_time));

        struct Case {
            name: &'static str,
            d: Deployment,
            all_rss: Vec<ReplicaSet>,
            new_rs: Option<ReplicaSet>,
            // (status, reason, lastUpdate kept, lastTransition kept); None = no condition.
            expected: Option<(&'static str, &'static str, bool, bool)>,
        }
        let cases = vec![
            Case {
                name: "General: remove Progressing condition and do not estimate progress if deployment has no Progress Deadline",
                d: current_deployment(None, 3, 2, 2, 2, vec![replica_set_updated.clone()]),
                all_rss: vec![new_rs_with_available("bar", 0, 1, 1)],
                new_rs: Some(new_rs_with_available("foo", 3, 2, 2)),
                expected: None,
            },
            Case {
                name: "General: do not estimate progress of deployment with only one active ReplicaSet",
                d: current_deployment(pds, 3, 3, 3, 3, vec![new_rs_available.clone()]),
                all_rss: vec![new_rs_with_available("bar", 3, 3, 3)],
                new_rs: None,
                expected: Some((CONDITION_TRUE, NEW_RS_AVAILABLE_REASON, true, true)),
            },
            Case {
                name: "DeploymentProgressing: dont update lastTransitionTime if deployment already has Progressing=True",
                d: current_deployment(pds, 3, 2, 2, 2, vec![replica_set_updated.clone()]),
                all_rss: vec![new_rs_with_available("bar", 0, 1, 1)],
                new_rs: Some(new_rs_with_available("foo", 3, 2, 2)),
                expected: Some((CONDITION_TRUE, REPLICA_SET_UPDATED_REASON, false, true)),
            },
            Case {
                name: "DeploymentProgressing: update everything if deployment has Progressing=False",
                d: current_deployment(pds, 3, 2, 2, 2, vec![failed_timed_out.clone()]),
                all_rss: vec![new_rs_with_available("bar", 0, 1, 1)],
                new_rs: Some(new_rs_with_available("foo", 3, 2, 2)),
                expected: Some((CONDITION_TRUE, REPLICA_SET_UPDATED_REASON, false, false)),
            },
            Case {
                name: "DeploymentProgressing: create Progressing condition if it does not exist",
                d: current_deployment(pds, 3, 2, 2, 2, vec![]),
                all_rss: vec![new_rs_with_available("bar", 0, 1, 1)],
                new_rs: Some(new_rs_with_available("foo", 3, 2, 2)),
                expected: Some((CONDITION_TRUE, REPLICA_SET_UPDATED_REASON, false, false)),
            },
            Case {
                name: "DeploymentComplete: dont update lastTransitionTime if deployment already has Progressing=True",
                d: current_deployment(pds, 3, 3, 3, 3, vec![replica_set_updated.clone()]),
                all_rss: vec![],
                new_rs: Some(new_rs_with_available("foo", 3, 3, 3)),
                expected: Some((CONDITION_TRUE, NEW_RS_AVAILABLE_REASON, false, true)),
            },
            Case {
                name: "DeploymentComplete: update everything if deployment has Progressing=False",
                d: current_deployment(pds, 3, 3, 3, 3, vec![failed_timed_out.clone()]),
                all_rss: vec![],
                new_rs: Some(new_rs_with_available("foo", 3, 3, 3)),
                expected: Some((CONDITION_TRUE, NEW_RS_AVAILABLE_REASON, false, false)),
            },
            Case {
                name: "DeploymentComplete: create Progressing condition if it does not exist",
                d: current_deployment(pds, 3, 3, 3, 3, vec![]),
                all_rss: vec![],
                new_rs: Some(new_rs_with_available("foo", 3, 3, 3)),
                expected: Some((CONDITION_TRUE, NEW_RS_AVAILABLE_REASON, false, false)),
            },
            Case {
                name: "DeploymentComplete: defend against NPE when newRS=nil",
                d: current_deployment(pds, 0, 3, 3, 3, vec![replica_set_updated.clone()]),
                all_rss: vec![new_rs_with_available("foo", 0, 0, 0)],
                new_rs: None,
                expected: Some((CONDITION_TRUE, NEW_RS_AVAILABLE_REASON, false, true)),
            },
            Case {
                name: "DeploymentTimedOut: update status if rollout exceeds Progress Deadline",
                d: current_deployment(pds, 3, 2, 2, 2, vec![replica_set_updated.clone()]),
                all_rss: vec![],
                new_rs: Some(new_rs_with_available("foo", 3, 2, 2)),
                expected: Some((CONDITION_FALSE, TIMED_OUT_REASON, false, false)),
            },
            Case {
                name: "DeploymentTimedOut: do not update status if deployment has existing timedOut condition",
                d: current_deployment(
                    pds,
                    3,
                    2,
                    2,
                    2,
                    vec![progressing(
                        CONDITION_FALSE,
                        TIMED_OUT_REASON,
                        Some(test_time),
                    )],
                ),
                all_rss: vec![],
                new_rs: Some(new_rs_with_available("foo", 3, 2, 2)),
                expected: Some((CONDITION_FALSE, TIMED_OUT_REASON, true, true)),
            },
        ];
        for case in cases {
            let mut all: Vec<&ReplicaSet> = case.all_rss.iter().collect();
            all.extend(case.new_rs.as_ref());
            let (status, _) = sync_rollout_status(&all, case.new_rs.as_ref(), &case.d, now);
            let cond = util::get_deployment_condition(&status, DEPLOYMENT_PROGRESSING);
            match (cond, case.expected) {
                (None, None) => {}
                (Some(c), Some((s, reason, update_kept, transition_kept))) => {
                    assert_eq!(
                        (c.status.as_str(), c.reason.as_deref()),
                        (s, Some(reason)),
                        "{}",
                        case.name
                    );
                    if update_kept {
                        assert_eq!(
                            c.last_update_time,
                            Some(Time(test_time)),
                            "{}: lastUpdateTime",
                            case.name
                        );
                    } else {
                        assert_eq!(
                            c.last_update_time,
                            Some(Time(now)),
                            "{}: lastUpdateTime",
                            case.name
                        );
                    }
                    if transition_kept {
                        assert_eq!(
                            c.last_transition_time,
                            Some(Time(test_time)),
                            "{}: lastTransitionTime",
                            case.name
                        );
                    } else {
                        assert_eq!(
                            c.last_transition_time,
                            Some(Time(now)),
                            "{}: lastTransitionTime",
                            case.name
                        );
                    }
                }
                (c, e) => panic!("{}: got {c:?}, expected {e:?}", case.name),
            }
        }
    }

    #[test]
    fn sync_rollout_status_messages() {
        let now = ts(2017, 2, 15, 18, 55, 0);
        let d = current_deployment(Some(60), 3, 3, 3, 3, vec![]);
        let new = new_rs_with_available("foo-abc", 3, 3, 3);
        let (status, requeue) = sync_rollout_status(&[&new], Some(&new), &d, now);
        let c = util::get_deployment_condition(&status, DEPLOYMENT_PROGRESSING).unwrap();
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"foo-abc\" has successfully progressed.")
        );
        assert_eq!(requeue, None, "status changed: written, not requeued");
        let d = current_deployment(Some(60), 3, 0, 0, 0, vec![]);
        let new = new_rs_with_available("foo-abc", 3, 2, 1);
        let (status, _) = sync_rollout_status(&[&new], Some(&new), &d, now);
        let c = util::get_deployment_condition(&status, DEPLOYMENT_PROGRESSING).unwrap();
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"foo-abc\" is progressing.")
        );
    }

    #[test]
    fn sync_rollout_status_requeues_an_unchanged_stuck_deployment() {
        let last = ts(2017, 2, 15, 18, 49, 0);
        let now = ts(2017, 2, 15, 18, 49, 30);
        let new = new_rs_with_available("foo", 3, 3, 1);
        let mut d = current_deployment(
            Some(60),
            3,
            3,
            3,
            1,
            vec![progressing(
                CONDITION_TRUE,
                REPLICA_SET_UPDATED_REASON,
                Some(last),
            )],
        );
        // First pass computes the steady status; store it and pass again.
        let (status, _) = sync_rollout_status(&[&new], Some(&new), &d, last);
        d.status = Some(status);
        let (status2, requeue) = sync_rollout_status(&[&new], Some(&new), &d, now);
        assert_eq!(Some(status2), d.status);
        // Progressing was set at `last`: 60s − 30s + 1s.
        assert_eq!(requeue, Some(Duration::from_secs(31)));
        // Past the deadline: the timeout is written (no requeue).
        let (status3, requeue) =
            sync_rollout_status(&[&new], Some(&new), &d, ts(2017, 2, 15, 18, 50, 1));
        let c = util::get_deployment_condition(&status3, DEPLOYMENT_PROGRESSING).unwrap();
        assert_eq!(c.reason.as_deref(), Some(TIMED_OUT_REASON));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"foo\" has timed out progressing.")
        );
        assert_eq!(requeue, None);
    }

    // --- Overflow: progressDeadlineSeconds at int32's max − 1 (max is "no deadline").

    #[test]
    fn overflow_progress_deadline_near_int32_max() {
        let last = ts(2017, 2, 15, 18, 49, 0);
        let pds = Some(i32::MAX - 1);
        let stuck = vec![progressing(
            CONDITION_TRUE,
            REPLICA_SET_UPDATED_REASON,
            Some(last),
        )];
        let d = current_deployment(pds, 4, 3, 3, 2, stuck);
        let status = new_deployment_status(3, 3, 2);
        // ~68 years left: requeue then (the extra second is added by the caller).
        assert_eq!(
            requeue_stuck_deployment(&d, &status, last),
            Some(Duration::from_secs(2_147_483_646))
        );
        // A lastUpdateTime so late that adding the deadline leaves the representable
        // time: never timed out; the deadline saturates at the end of time, 10 s away.
        let late = Timestamp::MAX - SignedDuration::from_secs(10);
        let d = current_deployment(
            pds,
            4,
            3,
            3,
            2,
            vec![progressing(
                CONDITION_TRUE,
                REPLICA_SET_UPDATED_REASON,
                Some(late),
            )],
        );
        assert!(!util::deployment_time_out(&d, &status, Timestamp::MAX));
        assert_eq!(
            requeue_stuck_deployment(&d, &status, late),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn replica_failures_are_copied_and_removed() {
        let now = ts(2020, 1, 1, 0, 0, 0);
        let failure = ReplicaSetCondition {
            type_: REPLICA_SET_REPLICA_FAILURE.to_string(),
            status: CONDITION_TRUE.to_string(),
            reason: Some("FailedCreate".to_string()),
            message: Some("quota".to_string()),
            last_transition_time: Some(Time(now)),
        };
        let mut old = new_rs_with_available("old", 1, 1, 1);
        old.status.as_mut().unwrap().conditions = Some(vec![ReplicaSetCondition {
            reason: Some("FailedDelete".to_string()),
            ..failure.clone()
        }]);
        let mut new = new_rs_with_available("new", 2, 0, 0);
        new.status = Some(ReplicaSetStatus {
            conditions: Some(vec![failure.clone()]),
            ..Default::default()
        });
        let d = current_deployment(None, 3, 1, 0, 1, vec![]);
        // The new RS's failure wins over the old RS's.
        let failures = get_replica_failures(&[&old, &new], Some(&new));
        assert_eq!(failures[0].reason.as_deref(), Some("FailedCreate"));
        let (status, _) = sync_rollout_status(&[&old, &new], Some(&new), &d, now);
        let c = util::get_deployment_condition(&status, DEPLOYMENT_REPLICA_FAILURE).unwrap();
        assert_eq!(c.message.as_deref(), Some("quota"));
        assert_eq!(c.last_update_time, Some(Time(now)));
        // Cleared once no ReplicaSet reports a failure.
        let mut d2 = d.clone();
        d2.status = Some(status);
        new.status = None;
        old.status.as_mut().unwrap().conditions = None;
        let (status, _) = sync_rollout_status(&[&old, &new], Some(&new), &d2, now);
        assert!(util::get_deployment_condition(&status, DEPLOYMENT_REPLICA_FAILURE).is_none());
    }

    #[test]
    fn paused_and_resumed_conditions() {
        let now = ts(2020, 1, 1, 0, 0, 0);
        let mut d = current_deployment(Some(600), 3, 3, 3, 3, vec![]);
        assert_eq!(
            sync_status_only_conditions(&d, now),
            None,
            "not paused, nothing to say"
        );
        d.spec.as_mut().unwrap().paused = Some(true);
        let status = sync_status_only_conditions(&d, now).unwrap();
        let c = util::get_deployment_condition(&status, DEPLOYMENT_PROGRESSING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            (
                CONDITION_UNKNOWN,
                Some(util::PAUSED_DEPLOY_REASON),
                Some("Deployment is paused")
            )
        );
        d.status = Some(status);
        assert_eq!(
            sync_status_only_conditions(&d, now),
            None,
            "already reported"
        );
        d.spec.as_mut().unwrap().paused = Some(false);
        let status = sync_status_only_conditions(&d, now).unwrap();
        let c = util::get_deployment_condition(&status, DEPLOYMENT_PROGRESSING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            (
                CONDITION_UNKNOWN,
                Some(util::RESUMED_DEPLOY_REASON),
                Some("Deployment is resumed")
            )
        );
        // Never overwrite a timeout; nothing without a deadline.
        let mut timed_out = current_deployment(
            Some(600),
            3,
            3,
            3,
            0,
            vec![progressing(CONDITION_FALSE, TIMED_OUT_REASON, None)],
        );
        timed_out.spec.as_mut().unwrap().paused = Some(true);
        assert_eq!(sync_status_only_conditions(&timed_out, now), None);
        let mut no_deadline = current_deployment(None, 3, 3, 3, 3, vec![]);
        no_deadline.spec.as_mut().unwrap().paused = Some(true);
        assert_eq!(sync_status_only_conditions(&no_deadline, now), None);
    }

    #[test]
    fn new_replica_set_conditions() {
        let now = ts(2020, 1, 1, 0, 0, 0);
        let d = current_deployment(Some(600), 3, 0, 0, 0, vec![]);
        let c = new_replica_set_created_condition(&d, "foo-abc", now).unwrap();
        assert_eq!(c.reason.as_deref(), Some(util::NEW_REPLICA_SET_REASON));
        assert_eq!(
            c.message.as_deref(),
            Some("Created new replica set \"foo-abc\"")
        );
        let c = found_new_replica_set_condition(&d, "foo-abc", now).unwrap();
        assert_eq!(c.reason.as_deref(), Some(util::FOUND_NEW_RS_REASON));
        assert_eq!(
            c.message.as_deref(),
            Some("Found new replica set \"foo-abc\"")
        );
        let c = failed_rs_create_condition(&d, "foo-abc", "quota exceeded", now).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            (CONDITION_FALSE, Some(util::FAILED_RS_CREATE_REASON))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("Failed to create new replica set \"foo-abc\": quota exceeded")
        );
        // FoundNewReplicaSet only when no Progressing condition exists yet.
        let with_cond = current_deployment(
            Some(600),
            3,
            0,
            0,
            0,
            vec![progressing(CONDITION_TRUE, "X", None)],
        );
        assert!(found_new_replica_set_condition(&with_cond, "foo-abc", now).is_none());
        let no_deadline = current_deployment(None, 3, 0, 0, 0, vec![]);
        assert!(new_replica_set_created_condition(&no_deadline, "foo-abc", now).is_none());
        assert!(failed_rs_create_condition(&no_deadline, "foo-abc", "e", now).is_none());
    }
}
