//! The pod token binding controller's pure decision core, over a rekube Pod from the
//! informer cache and its token binding Secret as the apiserver has it.
//!
//! - [`pod_needs_binding`]: which pods get a token binding Secret (and which pod events
//!   queue the pod);
//! - [`token_binding_secret`]: the Secret made for a pod;
//! - [`sync_pod`]: what one sync does, given the Secret of the pod's binding name.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use rekube_crds::Pod;
use rekube_crds::core_v1::{POD_FAILED, POD_SUCCEEDED};
use rekube_crds::token_binding::{
    TOKEN_BINDING_SECRET_TYPE, is_token_binding_for_pod, pod_token_binding_secret_name,
    uses_service_account_token,
};

use crate::util::claim::new_controller_ref;

/// The controller's name (its `--controllers` name, queue, metrics and logs).
pub const CONTROLLER_NAME: &str = "pod-token-binding-controller";

/// Its event source.
pub const EVENT_SOURCE: &str = "pod-token-binding-controller";

/// The reason of the Warning event on a pod whose binding Secret cannot be made.
pub const FAILED_TOKEN_BINDING: &str = "FailedTokenBinding";

/// Whether `pod` gets a token binding Secret: a volume projects a `serviceAccountToken`,
/// it is bound to a node (before that no agent requests its tokens), it is not being
/// deleted, and it has not finished (a Succeeded or Failed pod runs nothing again; the
/// Secret it has stays until the pod goes).
pub fn pod_needs_binding(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let scheduled = spec.node_name.as_deref().is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some(p) if p == POD_SUCCEEDED || p == POD_FAILED);
    pod.metadata.deletion_timestamp.is_none()
        && scheduled
        && !finished
        && uses_service_account_token(spec)
}

/// The token binding Secret of `pod`: named [`pod_token_binding_secret_name`] in the
/// pod's namespace, of type [`TOKEN_BINDING_SECRET_TYPE`], empty and immutable, controlled
/// by the pod (apiVersion rekube.io/v1, kind Pod, `controller` and `blockOwnerDeletion`),
/// so that the garbage collector deletes it with the pod, and the tokens bound to it die
/// then.
pub fn token_binding_secret(pod: &Pod) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(pod_token_binding_secret_name(pod));
    secret.metadata.namespace = pod.metadata.namespace.clone();
    secret.metadata.owner_references = Some(vec![new_controller_ref(
        &pod.metadata,
        &Pod::api_version(&()),
        &Pod::kind(&()),
    )]);
    secret.type_ = Some(TOKEN_BINDING_SECRET_TYPE.into());
    secret.immutable = Some(true);
    secret.data = Some(BTreeMap::new());
    secret
}

/// What a sync of a pod does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The pod is gone or needs no binding ([`pod_needs_binding`]): nothing, and nothing
    /// to check again.
    Ignore,
    /// Its binding Secret exists and is the pod's: check again after the resync period
    /// (someone may delete it).
    InSync,
    /// Its binding Secret is missing: create this one.
    Create(Box<Secret>),
    /// A Secret of the binding's name exists and is not (or no longer) the pod's: the
    /// message (an event on the pod), and a retry after a backoff (the garbage collector
    /// may be about to delete a former pod's).
    Conflict(String),
}

/// One sync of `pod` (from the cache), `existing` the Secret of its binding name as the
/// apiserver has it.
pub fn sync_pod(pod: Option<&Pod>, existing: Option<&Secret>) -> Action {
    let Some(pod) = pod.filter(|p| pod_needs_binding(p)) else {
        return Action::Ignore;
    };
    match existing {
        None => Action::Create(Box::new(token_binding_secret(pod))),
        Some(secret) => match is_token_binding_for_pod(pod, secret) {
            Ok(()) => Action::InSync,
            Err(message) => Action::Conflict(message),
        },
    }
}

/// Whether a pod event queues the pod: it needs a binding and did not before (added,
/// just scheduled, ...). A pod that needed one already is checked by its resync.
pub fn pod_changed_needs_sync(old: Option<&Pod>, new: &Pod) -> bool {
    pod_needs_binding(new) && !old.is_some_and(pod_needs_binding)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use serde_json::json;

    use super::*;

    fn pod(node: Option<&str>, sources: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "ns", "uid": "0a1b2c3d-0000-4000-8000-000000000001"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}],
                     "volumes": [{"name": "kube-api-access", "projected": {"sources": sources}}]},
        }))
        .unwrap()
    }

    fn token_pod() -> Pod {
        pod(
            Some("n1"),
            json!([{"serviceAccountToken": {"path": "token"}},
                   {"configMap": {"name": "kube-root-ca.crt"}}]),
        )
    }

    fn with_phase(mut p: Pod, phase: &str) -> Pod {
        p.status.get_or_insert_default().phase = Some(phase.into());
        p
    }

    fn deleted(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        p
    }

    fn owner(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "rekube.io/v1".into(),
            kind: "Pod".into(),
            name: "web".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn the_secret_is_empty_immutable_typed_and_controlled_by_the_pod() {
        let p = token_pod();
        let s = token_binding_secret(&p);
        let want: Secret = serde_json::from_value(json!({
            "metadata": {"name": "web-token-binding-0a1b2c3d", "namespace": "ns",
                "ownerReferences": [{"apiVersion": "rekube.io/v1", "kind": "Pod", "name": "web",
                    "uid": "0a1b2c3d-0000-4000-8000-000000000001",
                    "controller": true, "blockOwnerDeletion": true}]},
            "type": "rekube.io/token-binding", "immutable": true, "data": {},
        }))
        .unwrap();
        assert_eq!(s, want);
        // What it makes is what it and the agent take for the pod's.
        assert_eq!(is_token_binding_for_pod(&p, &s), Ok(()));
    }

    /// Every sync outcome: (name, pod, existing Secret, expected).
    #[test]
    fn sync_pod_table() {
        let p = token_pod();
        let ours = token_binding_secret(&p);
        let mut former = ours.clone();
        former.metadata.owner_references = Some(vec![owner("0a1b2c3d-9999", true)]);
        let mut squatter = ours.clone();
        squatter.metadata.owner_references = None;
        squatter.type_ = Some("Opaque".into());
        let mut not_controller = ours.clone();
        not_controller.metadata.owner_references =
            Some(vec![owner("0a1b2c3d-0000-4000-8000-000000000001", false)]);
        let mut going = ours.clone();
        going.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        let not_owner = "secret ns/web-token-binding-0a1b2c3d was not created for pod ns/web \
                         (pod is not owner)";
        let cases: Vec<(&str, Option<Pod>, Option<&Secret>, Action)> = vec![
            ("no such pod", None, None, Action::Ignore),
            (
                "missing: created",
                Some(p.clone()),
                None,
                Action::Create(Box::new(ours.clone())),
            ),
            (
                "the pod's: in sync",
                Some(p.clone()),
                Some(&ours),
                Action::InSync,
            ),
            (
                "a former pod's of the same name",
                Some(p.clone()),
                Some(&former),
                Action::Conflict(not_owner.into()),
            ),
            (
                "someone else's Secret of the name",
                Some(p.clone()),
                Some(&squatter),
                Action::Conflict(not_owner.into()),
            ),
            (
                "owned by the pod but not as controller",
                Some(p.clone()),
                Some(&not_controller),
                Action::Conflict(not_owner.into()),
            ),
            (
                "the pod's, being deleted: wait for it to go",
                Some(p.clone()),
                Some(&going),
                Action::Conflict(
                    "secret ns/web-token-binding-0a1b2c3d of pod ns/web is being deleted".into(),
                ),
            ),
            (
                "not scheduled yet",
                Some(pod(None, json!([{"serviceAccountToken": {"path": "t"}}]))),
                None,
                Action::Ignore,
            ),
            (
                "no token source",
                Some(pod(Some("n1"), json!([{"configMap": {"name": "c"}}]))),
                None,
                Action::Ignore,
            ),
            (
                "being deleted",
                Some(deleted(p.clone())),
                None,
                Action::Ignore,
            ),
            (
                "succeeded",
                Some(with_phase(p.clone(), "Succeeded")),
                None,
                Action::Ignore,
            ),
            (
                "failed",
                Some(with_phase(p.clone(), "Failed")),
                None,
                Action::Ignore,
            ),
            (
                "running",
                Some(with_phase(p.clone(), "Running")),
                None,
                Action::Create(Box::new(ours.clone())),
            ),
        ];
        for (name, pod, existing, want) in cases {
            assert_eq!(sync_pod(pod.as_ref(), existing), want, "{name}");
        }
    }

    #[test]
    fn a_pod_event_queues_the_pod_when_it_starts_needing_a_binding() {
        let unscheduled = pod(None, json!([{"serviceAccountToken": {"path": "t"}}]));
        let p = token_pod();
        assert!(pod_changed_needs_sync(None, &p), "added");
        assert!(pod_changed_needs_sync(Some(&unscheduled), &p), "scheduled");
        assert!(!pod_changed_needs_sync(Some(&p), &p), "a status update");
        assert!(!pod_changed_needs_sync(None, &unscheduled));
        assert!(!pod_changed_needs_sync(Some(&p), &deleted(p.clone())));
    }
}
