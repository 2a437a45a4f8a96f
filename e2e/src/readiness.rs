//! Pods whose readiness a test decides, on a real node agent: upstream's pod readiness
//! gates. A pod whose `spec.readinessGates` names a condition type is Ready only once
//! that condition is True in its status; the agent (hollow or not) keeps conditions it
//! does not own and recomputes Ready on every sync, as the kubelet does. A gate nobody
//! sets makes a pod that runs but never becomes ready (upstream's e2e use an image that
//! never starts; a hollow agent starts every image); a gate the test sets makes a pod
//! whose readiness the test turns on and off (as a failing readiness probe would).
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use rekube_crds::Pod;
use serde_json::{Value, json};

/// A readiness gate no one sets: pods listing it run and never become ready.
pub const NEVER_READY_GATE: &str = "rekube.io/e2e-never-ready";

/// A readiness gate the test sets with [`set_gate`].
pub const TEST_READY_GATE: &str = "rekube.io/e2e-ready";

/// `spec.readinessGates` with `gate`, for a pod spec or template.
pub fn readiness_gates(gate: &str) -> Value {
    json!([{ "conditionType": gate }])
}

/// Sets condition `gate` of pod `name` to `ready` (a read, then a status patch with the
/// resourceVersion as precondition, since a merge patch replaces the whole condition
/// list; retried on a conflict with the agent's own status writes).
pub async fn set_gate(pods: &Api<Pod>, name: &str, gate: &str, ready: bool) {
    for _ in 0..20 {
        let pod = pods.get(name).await.unwrap();
        let mut conditions: Vec<Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != gate)
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        conditions.push(json!({
            "type": gate,
            "status": if ready { "True" } else { "False" },
            "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }));
        let patch = json!({
            "metadata": {"resourceVersion": pod.resource_version()},
            "status": {"conditions": conditions},
        });
        match pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("setting readiness gate {gate} of pod {name}: {e}"),
        }
    }
    panic!("setting readiness gate {gate} of pod {name}: conflicts 20 times in a row");
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod is terminating (deleted, held by a finalizer).
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}
