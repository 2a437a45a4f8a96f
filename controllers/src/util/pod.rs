//! Pod helpers (upstream: `pkg/api/v1/pod/util.go` and the pod helpers of
//! `pkg/controller/controller_utils.go`).
//!
//! All time-dependent helpers take `now` as a parameter.
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use rekube_crds::Pod;

/// Pod phases, the Ready condition type and `True` (upstream: `v1.PodPhase`,
/// `v1.PodReady`, `v1.ConditionTrue`), defined once for every component.
pub use rekube_crds::core_v1::{
    CONDITION_TRUE, POD_FAILED, POD_PENDING, POD_READY, POD_RUNNING, POD_SUCCEEDED, POD_UNKNOWN,
};

/// Annotation holding a pod's deletion cost (upstream: `core.PodDeletionCost`).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Errors of the pod helpers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    #[error("pod deletion cost annotation value {value:?} is invalid: {reason}")]
    InvalidDeletionCost { value: String, reason: String },
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The pod's phase, `""` when unset.
pub fn pod_phase(pod: &Pod) -> &str {
    phase(pod)
}

/// Whether the pod is neither Succeeded nor Failed and not being deleted (upstream:
/// `controller.IsPodActive`).
pub fn is_pod_active(pod: &Pod) -> bool {
    let p = phase(pod);
    p != POD_SUCCEEDED && p != POD_FAILED && pod.metadata.deletion_timestamp.is_none()
}

/// Whether the phase is terminal (upstream: `podutil.IsPodPhaseTerminal`).
pub fn is_pod_phase_terminal(phase: &str) -> bool {
    phase == POD_FAILED || phase == POD_SUCCEEDED
}

/// Whether the pod reached a terminal phase (upstream: `podutil.IsPodTerminal`).
pub fn is_pod_terminal(pod: &Pod) -> bool {
    is_pod_phase_terminal(phase(pod))
}

/// Whether the pod is being deleted but has not reached a terminal phase (upstream:
/// `controller.IsPodTerminating`).
pub fn is_pod_terminating(pod: &Pod) -> bool {
    !is_pod_terminal(pod) && pod.metadata.deletion_timestamp.is_some()
}

/// The first condition of the given type and its index (upstream: `podutil.GetPodCondition`
/// / `GetPodConditionFromList`).
pub fn get_pod_condition<'a>(
    status: Option<&'a PodStatus>,
    condition_type: &str,
) -> Option<(usize, &'a PodCondition)> {
    status?
        .conditions
        .as_deref()?
        .iter()
        .enumerate()
        .find(|(_, c)| c.type_ == condition_type)
}

/// The pod's Ready condition (upstream: `podutil.GetPodReadyCondition`).
pub fn get_pod_ready_condition(status: Option<&PodStatus>) -> Option<&PodCondition> {
    get_pod_condition(status, POD_READY).map(|(_, c)| c)
}

/// Whether the Ready condition is True (upstream: `podutil.IsPodReadyConditionTrue`).
pub fn is_pod_ready_condition_true(status: Option<&PodStatus>) -> bool {
    get_pod_ready_condition(status).is_some_and(|c| c.status == CONDITION_TRUE)
}

/// Whether the pod is ready (upstream: `podutil.IsPodReady`).
pub fn is_pod_ready(pod: &Pod) -> bool {
    is_pod_ready_condition_true(pod.status.as_ref())
}

/// When the pod became ready: the lastTransitionTime of its True Ready condition; `None` when
/// not ready or the time is unset (upstream: `podReadyTime`, where the zero time is `None`).
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = get_pod_ready_condition(pod.status.as_ref())?;
    if c.status != CONDITION_TRUE {
        return None;
    }
    c.last_transition_time.as_ref().map(|t| t.0)
}

/// Whether the pod has been ready for at least `min_ready_seconds` (upstream:
/// `podutil.IsPodAvailable`): ready, and either `min_ready_seconds == 0` or its Ready
/// condition has a lastTransitionTime with `lastTransitionTime + minReadySeconds <= now`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds == 0 {
        return true;
    }
    let Some(since) = pod_ready_since(pod) else {
        return false;
    };
    since
        .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
        .is_ok_and(|t| t <= now)
}

/// How long until a ready pod becomes available; `None` when it is not ready, already
/// available, `min_ready_seconds <= 0` or the ready time is unset (upstream:
/// `controller.nextPodAvailabilityCheck`).
pub fn next_pod_availability_check(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<SignedDuration> {
    if !is_pod_ready(pod) || min_ready_seconds <= 0 {
        return None;
    }
    let since = pod_ready_since(pod)?;
    let available_at = since
        .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
        .ok()?;
    let next = available_at.duration_since(now);
    (next > SignedDuration::ZERO).then_some(next)
}

/// The earliest [`next_pod_availability_check`] among `pods`, evaluated at
/// `last_owner_status_evaluation` and then refreshed at `now` for the chosen pod; zero when
/// that pod became available in between (upstream: `controller.FindMinNextPodAvailabilityCheck`).
pub fn find_min_next_pod_availability_check(
    pods: &[&Pod],
    min_ready_seconds: i32,
    last_owner_status_evaluation: Timestamp,
    now: Timestamp,
) -> Option<SignedDuration> {
    let mut min: Option<(SignedDuration, &Pod)> = None;
    for pod in pods {
        if let Some(next) =
            next_pod_availability_check(pod, min_ready_seconds, last_owner_status_evaluation)
            && min.is_none_or(|(m, _)| next < m)
        {
            min = Some((next, pod));
        }
    }
    let (_, pod) = min?;
    Some(next_pod_availability_check(pod, min_ready_seconds, now).unwrap_or(SignedDuration::ZERO))
}

/// The active pods (upstream: `controller.FilterActivePods`).
pub fn filter_active_pods<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    pods.iter().copied().filter(|p| is_pod_active(p)).collect()
}

/// The terminating pods (upstream: `controller.FilterTerminatingPods`).
pub fn filter_terminating_pods<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    pods.iter()
        .copied()
        .filter(|p| is_pod_terminating(p))
        .collect()
}

/// How many pods are terminating (upstream: `controller.CountTerminatingPods`).
pub fn count_terminating_pods(pods: &[&Pod]) -> i32 {
    i32::try_from(pods.iter().filter(|p| is_pod_terminating(p)).count()).unwrap_or(i32::MAX)
}

/// The pod's `namespace/name` key used by expectations (upstream: `controller.PodKey`).
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The keys of the pods (upstream: replicaset `getPodKeys`).
pub fn pod_keys(pods: &[&Pod]) -> Vec<String> {
    pods.iter().map(|p| pod_key(p)).collect()
}

/// The pod-deletion-cost annotation as an int32; 0 when absent (upstream:
/// `helper.GetDeletionCostFromPodAnnotations`). Values with a leading `+` or leading zeros
/// are invalid.
pub fn get_deletion_cost_from_pod_annotations(pod: &Pod) -> Result<i32, PodError> {
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
    else {
        return Ok(0);
    };
    let invalid = |reason: &str| PodError::InvalidDeletionCost {
        value: value.clone(),
        reason: reason.to_string(),
    };
    let first = value.as_bytes().first().copied();
    let valid_first = match first {
        None => false,
        Some(b'-') => true,
        Some(b'0') => value == "0",
        Some(c) => c.is_ascii_digit(),
    };
    if !valid_first {
        return Err(invalid(
            "must be an int32 without a leading '+' or leading zeros",
        ));
    }
    value
        .parse::<i32>()
        .map_err(|e| invalid(&e.to_string().to_lowercase()))
}

/// The deletion cost, 0 when absent or invalid (how `ActivePodsWithRanks.Less` reads it).
pub fn pod_deletion_cost(pod: &Pod) -> i32 {
    get_deletion_cost_from_pod_annotations(pod).unwrap_or(0)
}

/// The highest restart count among the regular containers and among the sidecars
/// (restartable init containers) (upstream: `controller.maxContainerRestarts`).
pub fn max_container_restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .fold(0, i32::max);
    let sidecars: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(&c.name.as_str()))
        .map(|c| c.restart_count)
        .fold(0, i32::max);
    (regular, sidecar)
}

/// Every status is terminated or waiting, or there is none (upstream `notRunning`).
fn not_running(statuses: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>) -> bool {
    statuses.into_iter().flatten().all(|s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.terminated.is_some() || st.waiting.is_some())
    })
}

/// upstream `volumeutil.IsPodTerminated`: phase Failed or Succeeded, or deleted with no
/// container running.
pub fn is_pod_terminated(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    is_pod_phase_terminal(pod_phase(pod))
        || (pod.metadata.deletion_timestamp.is_some()
            && not_running(status.and_then(|s| s.init_container_statuses.as_ref()))
            && not_running(status.and_then(|s| s.container_statuses.as_ref()))
            && not_running(status.and_then(|s| s.ephemeral_container_statuses.as_ref())))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    pub(crate) fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    pub(crate) fn ready_condition(status: &str, ltt: Option<Timestamp>) -> PodCondition {
        PodCondition {
            type_: POD_READY.into(),
            status: status.into(),
            last_transition_time: ltt.map(Time),
            ..Default::default()
        }
    }

    pub(crate) fn pod_with(phase: &str, conditions: Vec<PodCondition>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(conditions),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// upstream util_test.go newPod(now, ready, beforeSec)
    fn new_pod(now: Timestamp, ready: bool, before_sec: i64) -> Pod {
        pod_with(
            POD_RUNNING,
            vec![ready_condition(
                if ready { "True" } else { "False" },
                Some(now - SignedDuration::from_secs(before_sec)),
            )],
        )
    }

    // Port of util_test.go TestIsPodAvailable (1.34+: ltt + minReadySeconds <= now).
    #[test]
    fn is_pod_available_table() {
        let now = ts(1_700_000_000);
        let mut zero_ltt = new_pod(now, true, 0);
        zero_ltt
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .last_transition_time = None;
        let cases = vec![
            (new_pod(now, false, 0), 0, false),
            (new_pod(now, true, 0), 1, false),
            (zero_ltt, 1, false),
            (new_pod(now, true, 0), 0, true),
            (new_pod(now, true, 51), 50, true),
            (new_pod(now, true, 51), 51, true),
            (new_pod(now, true, 51), 52, false),
        ];
        for (i, (pod, min_ready, want)) in cases.into_iter().enumerate() {
            assert_eq!(is_pod_available(&pod, min_ready, now), want, "case {i}");
        }
    }

    #[test]
    fn readiness_helpers() {
        let now = ts(100);
        let ready = pod_with(POD_RUNNING, vec![ready_condition("True", Some(now))]);
        let not_ready = pod_with(POD_RUNNING, vec![ready_condition("False", Some(now))]);
        let unknown = pod_with(POD_RUNNING, vec![ready_condition("Unknown", None)]);
        let none = Pod::default();
        assert!(is_pod_ready(&ready));
        assert!(!is_pod_ready(&not_ready));
        assert!(!is_pod_ready(&unknown));
        assert!(!is_pod_ready(&none));
        assert_eq!(pod_ready_since(&ready), Some(now));
        assert_eq!(pod_ready_since(&not_ready), None);
        assert_eq!(
            get_pod_ready_condition(ready.status.as_ref()).map(|c| c.status.as_str()),
            Some("True")
        );
        // the first Ready condition wins
        let two = pod_with(
            POD_RUNNING,
            vec![
                PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    ..Default::default()
                },
                ready_condition("False", None),
                ready_condition("True", None),
            ],
        );
        assert_eq!(
            get_pod_condition(two.status.as_ref(), POD_READY).unwrap().0,
            1
        );
        assert!(!is_pod_ready(&two));
    }

    // Port of controller_utils_test.go TestActivePodFiltering and TestCountTerminatingPods.
    #[test]
    fn active_and_terminating_filtering() {
        let deleted = Some(Time(ts(1)));
        let mk = |name: &str, phase: &str, deleting: bool| {
            let mut p = pod_with(phase, vec![]);
            p.metadata.name = Some(name.into());
            if deleting {
                p.metadata.deletion_timestamp = deleted.clone();
            }
            p
        };
        let pods = [
            mk("pod-1", POD_SUCCEEDED, false),
            mk("pod-2", POD_FAILED, false),
            mk("pod-3", POD_PENDING, true),
            mk("pod-4", POD_RUNNING, true),
            mk("pod-5", POD_RUNNING, false),
            mk("pod-6", POD_RUNNING, false),
            mk("pod-7", POD_SUCCEEDED, true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let active: Vec<&str> = filter_active_pods(&refs)
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(active, vec!["pod-5", "pod-6"]);
        assert_eq!(count_terminating_pods(&refs), 2);
        let terminating: Vec<&str> = filter_terminating_pods(&refs)
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(terminating, vec!["pod-3", "pod-4"]);
        assert!(is_pod_terminal(&pods[0]));
        assert!(!is_pod_terminating(&pods[6]));
        // upstream TestActivePodFiltering: phase "" counts as active
        assert!(is_pod_active(&Pod::default()));
    }

    #[test]
    fn deletion_cost_parsing() {
        let with = |v: &str| {
            let mut p = Pod::default();
            p.metadata.annotations = Some(BTreeMap::from([(POD_DELETION_COST.into(), v.into())]));
            p
        };
        assert_eq!(
            get_deletion_cost_from_pod_annotations(&Pod::default()),
            Ok(0)
        );
        assert_eq!(get_deletion_cost_from_pod_annotations(&with("10")), Ok(10));
        assert_eq!(
            get_deletion_cost_from_pod_annotations(&with("-10")),
            Ok(-10)
        );
        assert_eq!(get_deletion_cost_from_pod_annotations(&with("0")), Ok(0));
        assert_eq!(
            get_deletion_cost_from_pod_annotations(&with("2147483647")),
            Ok(i32::MAX)
        );
        for bad in ["+10", "008", "", "abc", "2147483648", "1.5", " 1"] {
            assert!(
                get_deletion_cost_from_pod_annotations(&with(bad)).is_err(),
                "{bad:?}"
            );
            assert_eq!(pod_deletion_cost(&with(bad)), 0, "{bad:?}");
        }
    }

    #[test]
    fn max_container_restarts_counts_sidecars_separately() {
        let status = |name: &str, restarts: i32| ContainerStatus {
            name: name.into(),
            restart_count: restarts,
            ..Default::default()
        };
        let mut pod = Pod {
            spec: Some(PodSpec {
                init_containers: Some(vec![
                    Container {
                        name: "sidecar".into(),
                        restart_policy: Some("Always".into()),
                        ..Default::default()
                    },
                    Container {
                        name: "init".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![status("a", 3), status("b", 7)]),
                init_container_statuses: Some(vec![status("sidecar", 4), status("init", 9)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(max_container_restarts(&pod), (7, 4));
        pod.status = None;
        assert_eq!(max_container_restarts(&pod), (0, 0));
    }

    #[test]
    fn next_availability_check() {
        let now = ts(1000);
        let ready_at = |secs_ago: i64| {
            pod_with(
                POD_RUNNING,
                vec![ready_condition(
                    "True",
                    Some(now - SignedDuration::from_secs(secs_ago)),
                )],
            )
        };
        let p10 = ready_at(10);
        let p25 = ready_at(25);
        let p40 = ready_at(40);
        let not_ready = pod_with(POD_RUNNING, vec![ready_condition("False", Some(now))]);
        assert_eq!(
            next_pod_availability_check(&p10, 30, now),
            Some(SignedDuration::from_secs(20))
        );
        assert_eq!(next_pod_availability_check(&p40, 30, now), None);
        assert_eq!(next_pod_availability_check(&p10, 0, now), None);
        assert_eq!(next_pod_availability_check(&not_ready, 30, now), None);
        let pods = [&p10, &p25, &p40, &not_ready];
        assert_eq!(
            find_min_next_pod_availability_check(&pods, 30, now, now),
            Some(SignedDuration::from_secs(5))
        );
        // evaluated earlier; refreshed at now
        let later = now + SignedDuration::from_secs(2);
        assert_eq!(
            find_min_next_pod_availability_check(&pods, 30, now, later),
            Some(SignedDuration::from_secs(3))
        );
        // the chosen pod became available in between: 0
        let much_later = now + SignedDuration::from_secs(6);
        assert_eq!(
            find_min_next_pod_availability_check(&pods, 30, now, much_later),
            Some(SignedDuration::ZERO)
        );
        assert_eq!(
            find_min_next_pod_availability_check(&[&p40], 30, now, now),
            None
        );
    }

    #[test]
    fn keys() {
        let mut p = Pod::default();
        p.metadata.namespace = Some("default".into());
        p.metadata.name = Some("pod1".into());
        assert_eq!(pod_key(&p), "default/pod1");
        assert_eq!(pod_keys(&[]), Vec::<String>::new());
        assert_eq!(pod_keys(&[&p, &p]), vec!["default/pod1", "default/pod1"]);
    }

    // --- Overflow: readiness time + minReadySeconds past the representable time.

    #[test]
    fn overflow_min_ready_seconds_past_the_end_of_time() {
        let late = Timestamp::MAX - SignedDuration::from_secs(1);
        let pod = pod_with(POD_RUNNING, vec![ready_condition("True", Some(late))]);
        assert!(!is_pod_available(&pod, i32::MAX, Timestamp::MAX));
        assert_eq!(next_pod_availability_check(&pod, i32::MAX, late), None);
        // Ready long ago: available even with int32's max minReadySeconds.
        let early = ts(0);
        let pod = pod_with(POD_RUNNING, vec![ready_condition("True", Some(early))]);
        assert!(is_pod_available(&pod, i32::MAX, ts(i64::from(i32::MAX))));
        assert_eq!(
            next_pod_availability_check(&pod, i32::MAX, early),
            Some(SignedDuration::from_secs(i64::from(i32::MAX)))
        );
    }
}
