//! The `endpoints.kubernetes.io/last-change-trigger-time` annotation (upstream
//! k8s.io/endpointslice/util/trigger_time_tracker.go): the time of the earliest change, of
//! a pod's readiness or of the Service's creation, that the coming write reflects.
//!
//! Like upstream's, the value may be wrong when the same object changes several times
//! between two syncs of its Service; upstream accepts this and so does rekube.
use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;
use rekube_crds::{Pod, Service};

use crate::util::pod as podutil;

/// What the tracker remembers of a Service from its last sync (upstream ServiceState).
#[derive(Clone, Debug, Default)]
struct ServiceState {
    last_service_trigger_time: Option<Timestamp>,
    last_pod_trigger_times: HashMap<String, Timestamp>,
}

/// upstream TriggerTimeTracker: per Service (namespace, name), the trigger times seen at
/// its last sync. Safe to share between workers; one Service is never synced by two at
/// once (the work queue guarantees it).
#[derive(Debug, Default)]
pub struct TriggerTimeTracker {
    service_states: Mutex<HashMap<(String, String), ServiceState>>,
}

/// A pod's trigger time: the last transition of its Ready condition (upstream
/// getPodTriggerTime).
fn pod_trigger_time(pod: &Pod) -> Option<Timestamp> {
    podutil::get_pod_ready_condition(pod.status.as_ref())?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// A Service's trigger time: its creation (upstream getServiceTriggerTime; updates of a
/// Service have no time of their own).
fn service_trigger_time(service: &Service) -> Option<Timestamp> {
    service.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn min_time(current: Option<Timestamp>, new: Timestamp) -> Option<Timestamp> {
    Some(current.map_or(new, |c| c.min(new)))
}

impl TriggerTimeTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// upstream ComputeEndpointLastChangeTriggerTime: records the Service's and its pods'
    /// trigger times and returns the value to export, `None` when the annotation should
    /// be removed. A Service seen for the first time gets its creation time.
    pub fn compute_endpoint_last_change_trigger_time(
        &self,
        namespace: &str,
        service: &Service,
        pods: &[&Pod],
    ) -> Option<Timestamp> {
        let key = (
            namespace.to_string(),
            service.metadata.name.clone().unwrap_or_default(),
        );
        let (mut state, was_known) = match self.service_states.lock().unwrap().get(&key) {
            Some(s) => (s.clone(), true),
            None => (ServiceState::default(), false),
        };
        let mut min_changed: Option<Timestamp> = None;
        let mut pod_trigger_times = HashMap::new();
        for pod in pods {
            let Some(t) = pod_trigger_time(pod) else {
                continue;
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            if state
                .last_pod_trigger_times
                .get(&name)
                .is_none_or(|last| t > *last)
            {
                min_changed = min_time(min_changed, t);
            }
            pod_trigger_times.insert(name, t);
        }
        let service_time = service_trigger_time(service);
        if let Some(t) = service_time
            && state.last_service_trigger_time.is_none_or(|last| t > last)
        {
            min_changed = min_time(min_changed, t);
        }
        state.last_pod_trigger_times = pod_trigger_times;
        state.last_service_trigger_time = service_time;
        self.service_states.lock().unwrap().insert(key, state);
        if !was_known {
            return service_time;
        }
        min_changed
    }

    /// upstream DeleteService: forgets a deleted Service.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.service_states
            .lock()
            .unwrap()
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    const NS: &str = "ttNamespace1";
    const SVC: &str = "my-service";

    /// upstream t0..t5: 2019-01-01 and one second apart.
    fn t(n: i64) -> Timestamp {
        "2019-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_secs(n)
    }

    fn create_pod(name: &str, ready_time: Timestamp) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(NS.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(ready_time)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn create_service(created: Timestamp) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(NS.into()),
                name: Some(SVC.into()),
                creation_timestamp: Some(Time(created)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn when(tracker: &TriggerTimeTracker, svc: &Service, pods: &[&Pod]) -> Option<Timestamp> {
        tracker.compute_endpoint_last_change_trigger_time(NS, svc, pods)
    }

    // Ports of trigger_time_tracker_test.go.
    #[test]
    fn new_service_no_pods() {
        let tr = TriggerTimeTracker::new();
        assert_eq!(when(&tr, &create_service(t(2)), &[]), Some(t(2)));
    }

    #[test]
    fn new_service_existing_pods() {
        let tr = TriggerTimeTracker::new();
        let (p1, p2, p3) = (
            create_pod("pod1", t(0)),
            create_pod("pod2", t(1)),
            create_pod("pod3", t(5)),
        );
        // Pods were created before the service: the trigger time is the service's creation.
        assert_eq!(
            when(&tr, &create_service(t(3)), &[&p1, &p2, &p3]),
            Some(t(3))
        );
    }

    #[test]
    fn pods_added() {
        let tr = TriggerTimeTracker::new();
        let svc = create_service(t(0));
        assert_eq!(when(&tr, &svc, &[]), Some(t(0)));
        let (p1, p2) = (create_pod("pod1", t(2)), create_pod("pod2", t(1)));
        assert_eq!(when(&tr, &svc, &[&p1, &p2]), Some(t(1)));
    }

    #[test]
    fn pods_updated() {
        let tr = TriggerTimeTracker::new();
        let svc = create_service(t(0));
        let (p1, p2, p3) = (
            create_pod("pod1", t(1)),
            create_pod("pod2", t(2)),
            create_pod("pod3", t(3)),
        );
        assert_eq!(when(&tr, &svc, &[&p1, &p2, &p3]), Some(t(0)));
        let (p1, p2) = (create_pod("pod1", t(5)), create_pod("pod2", t(4)));
        // pod3 doesn't change.
        assert_eq!(when(&tr, &svc, &[&p1, &p2, &p3]), Some(t(4)));
    }

    #[test]
    fn pods_updated_no_op() {
        let tr = TriggerTimeTracker::new();
        let svc = create_service(t(0));
        let (p1, p2, p3) = (
            create_pod("pod1", t(1)),
            create_pod("pod2", t(2)),
            create_pod("pod3", t(3)),
        );
        assert_eq!(when(&tr, &svc, &[&p1, &p2, &p3]), Some(t(0)));
        assert_eq!(when(&tr, &svc, &[&p1, &p2, &p3]), None);
    }

    #[test]
    fn pod_deleted_then_added() {
        let tr = TriggerTimeTracker::new();
        let svc = create_service(t(0));
        let (p1, p2) = (create_pod("pod1", t(1)), create_pod("pod2", t(2)));
        assert_eq!(when(&tr, &svc, &[&p1, &p2]), Some(t(0)));
        assert_eq!(when(&tr, &svc, &[&p1]), None);
        let p2 = create_pod("pod2", t(4));
        assert_eq!(when(&tr, &svc, &[&p1, &p2]), Some(t(4)));
    }

    #[test]
    fn service_deleted_then_added() {
        let tr = TriggerTimeTracker::new();
        let (p1, p2) = (create_pod("pod1", t(1)), create_pod("pod2", t(2)));
        assert_eq!(when(&tr, &create_service(t(0)), &[&p1, &p2]), Some(t(0)));
        tr.delete_service(NS, SVC);
        assert_eq!(when(&tr, &create_service(t(3)), &[&p1, &p2]), Some(t(3)));
    }

    #[test]
    fn service_updated_no_pod_change() {
        let tr = TriggerTimeTracker::new();
        let mut svc = create_service(t(0));
        let (p1, p2) = (create_pod("pod1", t(1)), create_pod("pod2", t(2)));
        assert_eq!(when(&tr, &svc, &[&p1, &p2]), Some(t(0)));
        // The service's ports change: an update has no trigger time of its own.
        svc.spec = Some(ServiceSpec {
            selector: Some(Default::default()),
            ports: Some(vec![ServicePort {
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(when(&tr, &svc, &[&p1, &p2]), None);
    }
}
