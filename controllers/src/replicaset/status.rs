//! The ReplicaSet status (upstream: `pkg/controller/replicaset/replica_set_utils.go`
//! `calculateStatus`, the condition helpers, and the no-op check and observedGeneration of
//! `updateReplicaSetStatus`; plus the minReadySeconds requeue of `syncReplicaSet`).
//!
//! `terminatingReplicas` is counted: its feature gate `DeploymentReplicaSetTerminatingReplicas`
//! is beta and on by default since 1.35, so 1.36 reports it. Passing `None` as the terminating
//! pods of [`calculate_status`] reproduces the gate turned off (the field stays unset).
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rekube_crds::{Pod, ReplicaSet};

use crate::replicaset::manage::{
    FAILED_CREATE_REASON, FAILED_DELETE_REASON, ManageError, desired_replicas, min_ready_seconds,
};
use crate::util::labels::set_matches;
use crate::util::pod::{find_min_next_pod_availability_check, is_pod_available, is_pod_ready};

/// The condition type set when pods could not be created or deleted (upstream:
/// `apps.ReplicaSetReplicaFailure`), and the condition statuses.
pub use rekube_crds::core_v1::{
    CONDITION_FALSE, CONDITION_TRUE, CONDITION_UNKNOWN, REPLICA_FAILURE,
};

/// Go's `omitempty` for an int32 status field: zero is left out.
fn omit_zero(n: usize) -> Option<i32> {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    (n != 0).then_some(n)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The status the ReplicaSet should have (upstream: `calculateStatus`):
/// - `replicas`: the active claimed pods;
/// - `fullyLabeledReplicas`: those carrying every label of the pod template;
/// - `readyReplicas` / `availableReplicas`: those ready / ready for `minReadySeconds` at `now`;
/// - `terminatingReplicas`: the terminating claimed pods (`None` = feature gate off);
/// - a ReplicaFailure condition (`FailedCreate` when pods were missing, `FailedDelete` when in
///   excess, no reason when neither) with the error as message when `manageReplicas` failed and
///   no such condition exists; removed when it succeeded. An existing one is kept as is.
///
/// `observedGeneration` is kept from the current status: [`with_observed_generation`] sets it
/// when writing, as upstream's `updateReplicaSetStatus` does.
pub fn calculate_status(
    rs: &ReplicaSet,
    active_pods: &[&Pod],
    terminating_pods: Option<&[&Pod]>,
    manage_replicas_err: Option<&ManageError>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut new_status = rs.status.clone().unwrap_or_default();
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let min_ready = min_ready_seconds(rs);
    let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
    for pod in active_pods {
        if set_matches(template_labels, pod.metadata.labels.as_ref()) {
            fully_labeled += 1;
        }
        if is_pod_ready(pod) {
            ready += 1;
            if is_pod_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }

    let failure_cond = rs
        .status
        .as_ref()
        .and_then(|s| get_condition(s, REPLICA_FAILURE));
    match (manage_replicas_err, failure_cond) {
        (Some(err), None) => {
            let diff = i64::try_from(active_pods.len()).unwrap_or(i64::MAX)
                - i64::from(desired_replicas(rs));
            let reason = match diff.cmp(&0) {
                std::cmp::Ordering::Less => FAILED_CREATE_REASON,
                std::cmp::Ordering::Greater => FAILED_DELETE_REASON,
                std::cmp::Ordering::Equal => "",
            };
            let cond = new_replica_set_condition(
                REPLICA_FAILURE,
                CONDITION_TRUE,
                reason,
                &err.to_string(),
                now,
            );
            set_condition(&mut new_status, cond);
        }
        (None, Some(_)) => remove_condition(&mut new_status, REPLICA_FAILURE),
        _ => {}
    }

    new_status.replicas = i32::try_from(active_pods.len()).unwrap_or(i32::MAX);
    new_status.fully_labeled_replicas = omit_zero(fully_labeled);
    new_status.ready_replicas = omit_zero(ready);
    new_status.available_replicas = omit_zero(available);
    new_status.terminating_replicas =
        terminating_pods.map(|t| i32::try_from(t.len()).unwrap_or(i32::MAX));
    new_status
}

/// A new condition with `now` as its transition time (upstream: `NewReplicaSetCondition`).
pub fn new_replica_set_condition(
    condition_type: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> ReplicaSetCondition {
    ReplicaSetCondition {
        type_: condition_type.to_string(),
        status: status.to_string(),
        last_transition_time: Some(Time(now)),
        reason: non_empty(reason),
        message: non_empty(message),
    }
}

/// The condition of the given type (upstream: `GetCondition`).
pub fn get_condition<'a>(
    status: &'a ReplicaSetStatus,
    condition_type: &str,
) -> Option<&'a ReplicaSetCondition> {
    status
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == condition_type)
}

fn reason_of(c: &ReplicaSetCondition) -> &str {
    c.reason.as_deref().unwrap_or("")
}

/// Adds or replaces the condition of its type; a condition with the same status and reason is
/// left untouched, keeping its transition time and message (upstream: `SetCondition`).
pub fn set_condition(status: &mut ReplicaSetStatus, condition: ReplicaSetCondition) {
    if let Some(current) = get_condition(status, &condition.type_)
        && current.status == condition.status
        && reason_of(current) == reason_of(&condition)
    {
        return;
    }
    let mut conditions = filter_out_condition(status.conditions.take(), &condition.type_);
    conditions.push(condition);
    status.conditions = Some(conditions);
}

/// Removes the condition of the given type (upstream: `RemoveCondition`); no condition left
/// leaves the list unset, as upstream's nil slice.
pub fn remove_condition(status: &mut ReplicaSetStatus, condition_type: &str) {
    let conditions = filter_out_condition(status.conditions.take(), condition_type);
    status.conditions = (!conditions.is_empty()).then_some(conditions);
}

fn filter_out_condition(
    conditions: Option<Vec<ReplicaSetCondition>>,
    condition_type: &str,
) -> Vec<ReplicaSetCondition> {
    conditions
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != condition_type)
        .collect()
}

/// Conditions equal as Go's `reflect.DeepEqual` sees them after a JSON round trip: an unset
/// list equals an empty one, an unset reason or message equals an empty one.
fn conditions_equal(a: Option<&[ReplicaSetCondition]>, b: Option<&[ReplicaSetCondition]>) -> bool {
    let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && reason_of(x) == reason_of(y)
                && x.message.as_deref().unwrap_or("") == y.message.as_deref().unwrap_or("")
                && x.last_transition_time == y.last_transition_time
        })
}

/// Whether the status must be written (upstream: the steady-state check of
/// `updateReplicaSetStatus`): the counts, `terminatingReplicas` or the conditions changed, or
/// the current status has not observed `generation` yet. Unset counts equal zero.
pub fn status_needs_update(
    old: &ReplicaSetStatus,
    new: &ReplicaSetStatus,
    generation: Option<i64>,
) -> bool {
    let z = |v: Option<i32>| v.unwrap_or(0);
    !(old.replicas == new.replicas
        && z(old.fully_labeled_replicas) == z(new.fully_labeled_replicas)
        && z(old.ready_replicas) == z(new.ready_replicas)
        && z(old.available_replicas) == z(new.available_replicas)
        && old.terminating_replicas == new.terminating_replicas
        && generation.unwrap_or(0) == old.observed_generation.unwrap_or(0)
        && conditions_equal(old.conditions.as_deref(), new.conditions.as_deref()))
}

/// The status to write, with the generation acted on as `observedGeneration` (upstream:
/// `updateReplicaSetStatus` setting `newStatus.ObservedGeneration = rs.Generation`).
pub fn with_observed_generation(
    mut status: ReplicaSetStatus,
    generation: Option<i64>,
) -> ReplicaSetStatus {
    status.observed_generation = generation.filter(|g| *g != 0);
    status
}

/// The status to write for `rs`, or `None` when its current status is already it (upstream:
/// `updateReplicaSetStatus` up to the API call).
pub fn status_update(rs: &ReplicaSet, new_status: ReplicaSetStatus) -> Option<ReplicaSetStatus> {
    let old = rs.status.clone().unwrap_or_default();
    let generation = rs.metadata.generation;
    status_needs_update(&old, &new_status, generation)
        .then(|| with_observed_generation(new_status, generation))
}

/// When to sync the ReplicaSet again so that pods becoming available are counted (upstream:
/// the end of `syncReplicaSet`, when `manageReplicas` succeeded): with `minReadySeconds > 0`
/// and fewer available than ready replicas in the written status, after the earliest time a
/// ready pod becomes available, else after `minReadySeconds`. `status_evaluated_at` is the
/// `now` given to [`calculate_status`]; `None` means no delayed resync.
pub fn next_sync_after(
    updated_rs: &ReplicaSet,
    active_pods: &[&Pod],
    status_evaluated_at: Timestamp,
    now: Timestamp,
) -> Option<SignedDuration> {
    let min_ready = min_ready_seconds(updated_rs);
    let status = updated_rs.status.clone().unwrap_or_default();
    if min_ready <= 0
        || status.ready_replicas.unwrap_or(0) == status.available_replicas.unwrap_or(0)
    {
        return None;
    }
    Some(
        find_min_next_pod_availability_check(active_pods, min_ready, status_evaluated_at, now)
            .unwrap_or(SignedDuration::from_secs(i64::from(min_ready))),
    )
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::util::pod::tests::ready_condition;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// upstream replica_set_test.go newReplicaSet(replicas, selectorMap): the template is
    /// labelled name=foo,type=production.
    fn new_replica_set(replicas: i32, selector: BTreeMap<String, String>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("foobar".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(selector),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("name", "foo"), ("type", "production")])),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// upstream newPod(name, rs, status, nil, true): labelled with the selector, Ready=True
    /// (no transition time) when Running.
    fn new_pod(name: &str, rs: &ReplicaSet, phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.labels = rs.spec.as_ref().unwrap().selector.match_labels.clone();
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: (phase == "Running").then(|| vec![ready_condition("True", None)]),
            ..Default::default()
        });
        p
    }

    fn as_terminating(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        p
    }

    fn counts(s: &ReplicaSetStatus) -> (i32, i32, i32, i32, Option<i32>) {
        (
            s.replicas,
            s.fully_labeled_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.terminating_replicas,
        )
    }

    // Port of replica_set_utils_test.go TestCalculateStatus. Upstream's flag is
    // enableDeploymentPodReplacementPolicy; here `Some(terminating)` is the gate on.
    #[test]
    fn calculate_status_table() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let label_map = labels(&[("name", "foo")]);
        let full_label_map = labels(&[("name", "foo"), ("type", "production")]);
        let not_fully = new_replica_set(1, label_map);
        let fully = new_replica_set(2, full_label_map.clone());
        let mut long_min_ready = new_replica_set(1, full_label_map);
        long_min_ready.spec.as_mut().unwrap().min_ready_seconds = Some(3600);
        // upstream's pods have no ready transition time; with minReadySeconds the pod needs one
        let mut long_pod = new_pod("pod1", &long_min_ready, "Running");
        long_pod.status.as_mut().unwrap().conditions =
            Some(vec![ready_condition("True", Some(now))]);

        struct Case<'a> {
            name: &'a str,
            gate: bool,
            rs: &'a ReplicaSet,
            active: Vec<Pod>,
            terminating: Vec<Pod>,
            want: (i32, i32, i32, i32, Option<i32>),
        }
        let cases = vec![
            Case {
                name: "1 fully labelled pod",
                gate: false,
                rs: &fully,
                active: vec![new_pod("pod1", &fully, "Running")],
                terminating: vec![],
                want: (1, 1, 1, 1, None),
            },
            Case {
                name: "1 not fully labelled pod",
                gate: false,
                rs: &not_fully,
                active: vec![new_pod("pod1", &not_fully, "Running")],
                terminating: vec![],
                want: (1, 0, 1, 1, None),
            },
            Case {
                name: "2 fully labelled pods",
                gate: false,
                rs: &fully,
                active: vec![
                    new_pod("pod1", &fully, "Running"),
                    new_pod("pod2", &fully, "Running"),
                ],
                terminating: vec![],
                want: (2, 2, 2, 2, None),
            },
            Case {
                name: "2 fully labelled pods with DeploymentPodReplacementPolicy",
                gate: true,
                rs: &fully,
                active: vec![
                    new_pod("pod1", &fully, "Running"),
                    new_pod("pod2", &fully, "Running"),
                ],
                terminating: vec![],
                want: (2, 2, 2, 2, Some(0)),
            },
            Case {
                name: "2 not fully labelled pods",
                gate: false,
                rs: &not_fully,
                active: vec![
                    new_pod("pod1", &not_fully, "Running"),
                    new_pod("pod2", &not_fully, "Running"),
                ],
                terminating: vec![],
                want: (2, 0, 2, 2, None),
            },
            Case {
                name: "1 fully labelled pod, 1 not fully labelled pod",
                gate: false,
                rs: &not_fully,
                active: vec![
                    new_pod("pod1", &not_fully, "Running"),
                    new_pod("pod2", &fully, "Running"),
                ],
                terminating: vec![],
                want: (2, 1, 2, 2, None),
            },
            Case {
                name: "1 non-ready pod",
                gate: false,
                rs: &fully,
                active: vec![new_pod("pod1", &fully, "Pending")],
                terminating: vec![],
                want: (1, 1, 0, 0, None),
            },
            Case {
                name: "1 ready but non-available pod",
                gate: false,
                rs: &long_min_ready,
                active: vec![long_pod.clone()],
                terminating: vec![],
                want: (1, 1, 1, 0, None),
            },
            Case {
                name: "1 fully labelled pod and 1 terminating without DeploymentPodReplacementPolicy",
                gate: false,
                rs: &fully,
                active: vec![new_pod("pod1", &fully, "Running")],
                terminating: vec![as_terminating(new_pod("pod2", &fully, "Running"))],
                want: (1, 1, 1, 1, None),
            },
            Case {
                name: "1 fully labelled pods and 2 terminating with DeploymentPodReplacementPolicy",
                gate: true,
                rs: &fully,
                active: vec![new_pod("pod1", &fully, "Running")],
                terminating: vec![
                    as_terminating(new_pod("pod2", &fully, "Running")),
                    as_terminating(new_pod("pod3", &fully, "Running")),
                ],
                want: (1, 1, 1, 1, Some(2)),
            },
        ];
        for case in cases {
            let active: Vec<&Pod> = case.active.iter().collect();
            let terminating: Vec<&Pod> = case.terminating.iter().collect();
            let status = calculate_status(
                case.rs,
                &active,
                case.gate.then_some(terminating.as_slice()),
                None,
                now,
            );
            assert_eq!(counts(&status), case.want, "{}", case.name);
            assert_eq!(status.conditions, None, "{}", case.name);
        }
        // zero counts are left out, as Go's omitempty
        let status = calculate_status(&fully, &[], Some(&[]), None, now);
        assert_eq!(status.replicas, 0);
        assert_eq!(status.ready_replicas, None);
        assert_eq!(status.fully_labeled_replicas, None);
        assert_eq!(status.available_replicas, None);
        assert_eq!(status.terminating_replicas, Some(0));
    }

    // Port of replica_set_utils_test.go TestCalculateStatusConditions.
    #[test]
    fn calculate_status_conditions() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let label_map = labels(&[("name", "foo")]);
        let rs = new_replica_set(2, label_map.clone());
        let mut replica_failure_rs = new_replica_set(10, label_map);
        replica_failure_rs.status = Some(ReplicaSetStatus {
            conditions: Some(vec![ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: CONDITION_TRUE.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let err = ManageError::Create {
            replica_set: "default/foobar".into(),
            message: "fake manageReplicasErr".into(),
        };
        let cond = |reason: Option<&str>, message: Option<&str>, ltt: Option<Timestamp>| {
            ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: CONDITION_TRUE.into(),
                reason: reason.map(Into::into),
                message: message.map(Into::into),
                last_transition_time: ltt.map(Time),
            }
        };
        let pods = |rs: &ReplicaSet, n: usize| -> Vec<Pod> {
            (0..n)
                .map(|i| new_pod(&format!("pod{i}"), rs, "Running"))
                .collect()
        };
        let cases: Vec<(
            &str,
            &ReplicaSet,
            Vec<Pod>,
            Option<&ManageError>,
            Option<Vec<ReplicaSetCondition>>,
        )> = vec![
            (
                "manageReplicasErr != nil && failureCond == nil, diff < 0",
                &rs,
                pods(&rs, 1),
                Some(&err),
                Some(vec![cond(
                    Some("FailedCreate"),
                    Some("fake manageReplicasErr"),
                    Some(now),
                )]),
            ),
            (
                "manageReplicasErr != nil && failureCond == nil, diff > 0",
                &rs,
                pods(&rs, 3),
                Some(&err),
                Some(vec![cond(
                    Some("FailedDelete"),
                    Some("fake manageReplicasErr"),
                    Some(now),
                )]),
            ),
            (
                "manageReplicasErr != nil && failureCond == nil, diff == 0",
                &rs,
                pods(&rs, 2),
                Some(&err),
                Some(vec![cond(None, Some("fake manageReplicasErr"), Some(now))]),
            ),
            (
                "manageReplicasErr == nil && failureCond != nil",
                &replica_failure_rs,
                pods(&replica_failure_rs, 1),
                None,
                None,
            ),
            (
                "manageReplicasErr != nil && failureCond != nil",
                &replica_failure_rs,
                pods(&replica_failure_rs, 1),
                Some(&err),
                Some(vec![cond(None, None, None)]),
            ),
            (
                "manageReplicasErr == nil && failureCond == nil",
                &rs,
                pods(&rs, 1),
                None,
                None,
            ),
        ];
        for (name, rs, pods, err, want) in cases {
            let refs: Vec<&Pod> = pods.iter().collect();
            let status = calculate_status(rs, &refs, Some(&[]), err, now);
            assert_eq!(status.conditions, want, "{name}");
        }
        // the delete error message is upstream's
        let del = ManageError::Delete {
            replica_set: "default/foobar".into(),
            pod: "default/pod0".into(),
            message: "boom".into(),
        };
        let p = pods(&rs, 3);
        let refs: Vec<&Pod> = p.iter().collect();
        let status = calculate_status(&rs, &refs, None, Some(&del), now);
        assert_eq!(
            get_condition(&status, REPLICA_FAILURE).and_then(|c| c.message.as_deref()),
            Some("unable to delete pods: boom")
        );
    }

    // Port of replica_set_test.go TestGetCondition, TestSetCondition, TestRemoveCondition.
    #[test]
    fn condition_helpers() {
        let image_pull_back_off = "ImagePullBackOff";
        let c = |t: &str, reason: &str| ReplicaSetCondition {
            type_: t.into(),
            status: CONDITION_TRUE.into(),
            reason: Some(reason.into()),
            ..Default::default()
        };
        let cond_image = c(image_pull_back_off, "NonExistentImage");
        let cond_failure = c(REPLICA_FAILURE, "OtherFailure");
        let cond_failure2 = c(REPLICA_FAILURE, "AnotherFailure");
        let status = |conds: Vec<ReplicaSetCondition>| ReplicaSetStatus {
            conditions: (!conds.is_empty()).then_some(conds),
            ..Default::default()
        };

        // TestGetCondition
        let example = status(vec![cond_failure.clone()]);
        assert!(get_condition(&example, REPLICA_FAILURE).is_some());
        assert!(get_condition(&example, image_pull_back_off).is_none());

        // TestSetCondition
        let cases = vec![
            (
                "set for the first time",
                status(vec![]),
                cond_failure.clone(),
                status(vec![cond_failure.clone()]),
            ),
            (
                "simple set",
                status(vec![cond_image.clone()]),
                cond_failure.clone(),
                status(vec![cond_image.clone(), cond_failure.clone()]),
            ),
            (
                "overwrite",
                status(vec![cond_failure.clone()]),
                cond_failure2.clone(),
                status(vec![cond_failure2.clone()]),
            ),
        ];
        for (name, mut st, cond, want) in cases {
            set_condition(&mut st, cond);
            assert_eq!(st, want, "{name}");
        }
        // same status and reason: untouched (keeps the old message and time)
        let mut st = status(vec![ReplicaSetCondition {
            message: Some("old".into()),
            ..cond_failure.clone()
        }]);
        set_condition(
            &mut st,
            ReplicaSetCondition {
                message: Some("new".into()),
                ..cond_failure.clone()
            },
        );
        assert_eq!(st.conditions.unwrap()[0].message.as_deref(), Some("old"));

        // TestRemoveCondition
        let cases = vec![
            (
                "remove from empty status",
                status(vec![]),
                REPLICA_FAILURE,
                status(vec![]),
            ),
            (
                "simple remove",
                status(vec![cond_failure.clone()]),
                REPLICA_FAILURE,
                status(vec![]),
            ),
            (
                "doesn't remove anything",
                status(vec![cond_failure.clone()]),
                image_pull_back_off,
                status(vec![cond_failure.clone()]),
            ),
        ];
        for (name, mut st, t, want) in cases {
            remove_condition(&mut st, t);
            assert_eq!(st, want, "{name}");
        }

        let n = new_replica_set_condition(
            REPLICA_FAILURE,
            CONDITION_TRUE,
            "",
            "",
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(n.reason, None);
        assert_eq!(n.message, None);
        assert_eq!(n.last_transition_time, Some(Time(Timestamp::UNIX_EPOCH)));
    }

    #[test]
    fn needs_update_and_observed_generation() {
        let base = ReplicaSetStatus {
            replicas: 2,
            fully_labeled_replicas: Some(2),
            ready_replicas: Some(1),
            available_replicas: None,
            observed_generation: Some(3),
            terminating_replicas: Some(0),
            conditions: None,
        };
        assert!(!status_needs_update(&base, &base, Some(3)));
        // a new generation needs writing even with equal counts
        assert!(status_needs_update(&base, &base, Some(4)));
        // unset counts equal zero; an unset list equals an empty one
        let same = ReplicaSetStatus {
            available_replicas: Some(0),
            conditions: Some(vec![]),
            observed_generation: Some(99),
            ..base.clone()
        };
        assert!(!status_needs_update(&base, &same, Some(3)));
        for changed in [
            ReplicaSetStatus {
                replicas: 3,
                ..base.clone()
            },
            ReplicaSetStatus {
                fully_labeled_replicas: Some(1),
                ..base.clone()
            },
            ReplicaSetStatus {
                ready_replicas: Some(2),
                ..base.clone()
            },
            ReplicaSetStatus {
                available_replicas: Some(1),
                ..base.clone()
            },
            ReplicaSetStatus {
                terminating_replicas: None,
                ..base.clone()
            },
            ReplicaSetStatus {
                terminating_replicas: Some(1),
                ..base.clone()
            },
            ReplicaSetStatus {
                conditions: Some(vec![new_replica_set_condition(
                    REPLICA_FAILURE,
                    CONDITION_TRUE,
                    "FailedCreate",
                    "x",
                    Timestamp::UNIX_EPOCH,
                )]),
                ..base.clone()
            },
        ] {
            assert!(status_needs_update(&base, &changed, Some(3)), "{changed:?}");
        }
        // no generation and no observedGeneration: both zero
        let fresh = ReplicaSetStatus::default();
        assert!(!status_needs_update(&fresh, &fresh, None));
        assert!(status_needs_update(&fresh, &fresh, Some(1)));

        assert_eq!(
            with_observed_generation(fresh.clone(), Some(5)).observed_generation,
            Some(5)
        );
        assert_eq!(
            with_observed_generation(fresh.clone(), None).observed_generation,
            None
        );

        let mut rs = new_replica_set(1, labels(&[("a", "b")]));
        rs.metadata.generation = Some(2);
        rs.status = Some(ReplicaSetStatus {
            observed_generation: Some(2),
            replicas: 1,
            ..Default::default()
        });
        assert_eq!(status_update(&rs, rs.status.clone().unwrap()), None);
        let written = status_update(
            &rs,
            ReplicaSetStatus {
                replicas: 2,
                ..Default::default()
            },
        )
        .expect("changed");
        assert_eq!(written.observed_generation, Some(2));
        assert_eq!(written.replicas, 2);
    }

    #[test]
    fn next_sync_after_min_ready_seconds() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut rs = new_replica_set(2, labels(&[("a", "b")]));
        rs.spec.as_mut().unwrap().min_ready_seconds = Some(30);
        let ready_ago = |secs: i64| {
            let mut p = new_pod("p", &rs, "Running");
            p.status.as_mut().unwrap().conditions = Some(vec![ready_condition(
                "True",
                Some(now - SignedDuration::from_secs(secs)),
            )]);
            p
        };
        let p1 = ready_ago(10);
        let p2 = ready_ago(40);
        rs.status = Some(ReplicaSetStatus {
            replicas: 2,
            ready_replicas: Some(2),
            available_replicas: Some(1),
            ..Default::default()
        });
        assert_eq!(
            next_sync_after(&rs, &[&p1, &p2], now, now),
            Some(SignedDuration::from_secs(20))
        );
        // no pod with a pending availability: fall back to minReadySeconds
        assert_eq!(
            next_sync_after(&rs, &[&p2], now, now),
            Some(SignedDuration::from_secs(30))
        );
        // all ready pods available: no resync
        rs.status.as_mut().unwrap().available_replicas = Some(2);
        assert_eq!(next_sync_after(&rs, &[&p1, &p2], now, now), None);
        // minReadySeconds 0: no resync
        rs.status.as_mut().unwrap().available_replicas = Some(1);
        rs.spec.as_mut().unwrap().min_ready_seconds = Some(0);
        assert_eq!(next_sync_after(&rs, &[&p1, &p2], now, now), None);
    }

    #[test]
    fn available_counts_use_min_ready_seconds() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut rs = new_replica_set(3, labels(&[("name", "foo")]));
        rs.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let ready_ago = |name: &str, secs: i64| {
            let mut p = new_pod(name, &rs, "Running");
            p.status.as_mut().unwrap().conditions = Some(vec![ready_condition(
                "True",
                Some(now - SignedDuration::from_secs(secs)),
            )]);
            p
        };
        let pods = [ready_ago("a", 5), ready_ago("b", 10), ready_ago("c", 11)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let status = calculate_status(&rs, &refs, None, None, now);
        assert_eq!(counts(&status), (3, 0, 3, 2, None));
    }

    // --- Overflow: spec.replicas at int32's bounds and minReadySeconds at int32's max.

    #[test]
    fn overflow_failure_reason_and_min_ready_seconds() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let err = ManageError::Create {
            replica_set: "default/foobar".into(),
            message: "fake manageReplicasErr".into(),
        };
        let reason = |replicas: i32| {
            let rs = new_replica_set(replicas, labels(&[("name", "foo")]));
            let pod = new_pod("p", &rs, "Running");
            let status = calculate_status(&rs, &[&pod], None, Some(&err), now);
            get_condition(&status, REPLICA_FAILURE).and_then(|c| c.reason.clone())
        };
        // len(pods) − spec.replicas computed in int64.
        assert_eq!(reason(i32::MAX).as_deref(), Some(FAILED_CREATE_REASON));
        assert_eq!(reason(i32::MIN).as_deref(), Some(FAILED_DELETE_REASON));
        // minReadySeconds at int32's max: the resync waits that long, no overflow.
        let mut rs = new_replica_set(2, labels(&[("a", "b")]));
        rs.spec.as_mut().unwrap().min_ready_seconds = Some(i32::MAX);
        let mut p = new_pod("p", &rs, "Running");
        p.status.as_mut().unwrap().conditions = Some(vec![ready_condition("True", Some(now))]);
        rs.status = Some(ReplicaSetStatus {
            replicas: 1,
            ready_replicas: Some(1),
            ..Default::default()
        });
        assert_eq!(
            next_sync_after(&rs, &[&p], now, now),
            Some(SignedDuration::from_secs(i64::from(i32::MAX)))
        );
    }
}
