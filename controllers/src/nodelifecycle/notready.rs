//! Marking a lost node's pods not ready (upstream `MarkPodsNotReady`,
//! pkg/controller/util/node/controller_utils.go): when a node's Ready condition stops
//! being True, every pod bound to it gets its Ready condition set to False, so that
//! Endpoints stop sending traffic there before the pods are evicted.
use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rekube_crds::Pod;

use crate::util::pod::is_pod_terminal;

/// The pod's status with its Ready condition False, or None when it is already not ready
/// (or has no Ready condition, or is terminal: upstream skips those too). The transition
/// time is `now`.
pub fn pod_status_not_ready(pod: &Pod, now: Timestamp) -> Option<PodStatus> {
    if is_pod_terminal(pod) {
        return None;
    }
    let mut status = pod.status.clone()?;
    let ready = status
        .conditions
        .as_mut()?
        .iter_mut()
        .find(|c| c.type_ == "Ready")?;
    if ready.status == "False" {
        return None;
    }
    ready.status = "False".into();
    ready.last_transition_time = Some(Time(now));
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodCondition;
    use serde_json::json;

    fn pod(phase: &str, ready: Option<&str>) -> Pod {
        let conditions: Vec<PodCondition> = ready
            .map(|s| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: s.into(),
                    ..Default::default()
                }]
            })
            .unwrap_or_default();
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "p"},
            "status": {"phase": phase, "conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn only_ready_running_pods_change() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let cases = [
            ("Running", Some("True"), true),
            ("Running", Some("Unknown"), true),
            ("Running", Some("False"), false),
            ("Running", None, false),
            ("Succeeded", Some("True"), false),
            ("Failed", Some("True"), false),
        ];
        for (phase, ready, changes) in cases {
            let got = pod_status_not_ready(&pod(phase, ready), now);
            assert_eq!(got.is_some(), changes, "{phase} {ready:?}");
            if let Some(st) = got {
                let c = &st.conditions.unwrap()[0];
                assert_eq!(c.status, "False");
                assert_eq!(c.last_transition_time, Some(Time(now)));
            }
        }
    }
}
