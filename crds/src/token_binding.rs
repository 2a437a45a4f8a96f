//! The token binding Secret of a rekube Pod: what a projected `serviceAccountToken` is
//! bound to in place of the Pod itself.
//!
//! Upstream's kubelet requests each projected token with `boundObjectRef` the Pod (kind
//! Pod, apiVersion v1), so that the apiserver stops accepting the token once the pod is
//! gone. The apiserver binds tokens to core Pods, Secrets and Nodes only
//! (pkg/registry/core/serviceaccount/storage/token.go), and a rekube Pod is a custom
//! resource. So rekube-controllers' `pod-token-binding-controller` creates for each
//! scheduled rekube Pod with such a source an empty, immutable Secret of type
//! [`TOKEN_BINDING_SECRET_TYPE`] named [`token_binding_secret_name`], controlled by the
//! Pod (the garbage collector deletes it with the pod), and the node agent requests the
//! pod's tokens bound to that Secret (its name and UID). The apiserver checks the bound
//! Secret's UID whenever it authenticates the token: the token dies with the Secret, that
//! is with the pod.
//!
//! Shared by the controller, the node authorizer (which grants a node `get` on the
//! binding Secrets of its pods and `create` on `serviceaccounts/token` of its pods'
//! ServiceAccounts) and the node agent.
use k8s_openapi::api::core::v1::{PodSpec, Secret};

use crate::Pod;

/// The type of every token binding Secret.
pub const TOKEN_BINDING_SECRET_TYPE: &str = "rekube.io/token-binding";

/// What comes between the pod's name and its UID's first characters.
const NAME_INFIX: &str = "-token-binding-";

/// How many characters of the pod's UID end the name.
const UID_CHARS: usize = 8;

/// The longest object name (a DNS subdomain, 253 characters).
const MAX_NAME_LENGTH: usize = 253;

/// The ServiceAccount a pod runs as: `spec.serviceAccountName`, else the deprecated
/// `spec.serviceAccount`, else `default` (upstream's ServiceAccount admission sets
/// `default` on a pod that names none; rekube Pods get no such admission, so every reader
/// applies it here).
pub fn service_account_name(spec: &PodSpec) -> String {
    [&spec.service_account_name, &spec.service_account]
        .into_iter()
        .flatten()
        .find(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| "default".to_string())
}

/// Whether a volume of the pod projects a `serviceAccountToken`.
pub fn uses_service_account_token(spec: &PodSpec) -> bool {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .any(|s| s.service_account_token.is_some())
}

/// The name of the token binding Secret of the pod `pod_name` with UID `pod_uid`:
/// `<pod name>-token-binding-<first 8 characters of the UID>`, the pod's name cut (and any
/// `-` or `.` it then ends with dropped) so that the whole fits 253 characters.
///
/// Deterministic, so that the controller and the agent find it without looking it up,
/// and per pod incarnation: a pod deleted and made again under the same name has another
/// UID, so its Secret is not the old one that the garbage collector may not have deleted
/// yet (two UIDs sharing their first 8 hex digits, a chance of 2^-32, only delay the new
/// pod: both sides check the Secret's controller UID, [`is_token_binding_for_pod`]).
pub fn token_binding_secret_name(pod_name: &str, pod_uid: &str) -> String {
    let uid: String = pod_uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(UID_CHARS)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let tail = format!("{NAME_INFIX}{uid}");
    let room = MAX_NAME_LENGTH - tail.len();
    let mut cut = pod_name.len().min(room);
    while !pod_name.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = pod_name[..cut].trim_end_matches(['-', '.']);
    format!("{prefix}{tail}")
}

/// The name of `pod`'s token binding Secret ([`token_binding_secret_name`]).
pub fn pod_token_binding_secret_name(pod: &Pod) -> String {
    token_binding_secret_name(
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// Whether `secret` is `pod`'s token binding Secret: in the pod's namespace, of type
/// [`TOKEN_BINDING_SECRET_TYPE`], controlled by the pod (its UID), and not being deleted.
/// Else why not, naming both (upstream `ephemeral.VolumeIsForPod`'s words for a claim).
pub fn is_token_binding_for_pod(pod: &Pod, secret: &Secret) -> Result<(), String> {
    let ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.clone().unwrap_or_default()
    };
    let secret_key = format!(
        "{}/{}",
        ns(&secret.metadata),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    let pod_key = format!(
        "{}/{}",
        ns(&pod.metadata),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let controlled = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == pod.metadata.uid.as_ref());
    if ns(&secret.metadata) != ns(&pod.metadata) || !controlled {
        return Err(format!(
            "secret {secret_key} was not created for pod {pod_key} (pod is not owner)"
        ));
    }
    let kind = secret.type_.as_deref().unwrap_or_default();
    if kind != TOKEN_BINDING_SECRET_TYPE {
        return Err(format!(
            "secret {secret_key} of pod {pod_key} is of type {kind:?}, not {TOKEN_BINDING_SECRET_TYPE}"
        ));
    }
    if secret.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "secret {secret_key} of pod {pod_key} is being deleted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_service_account_defaults_as_upstreams_admission_does() {
        let cases = [
            (json!({"containers": []}), "default"),
            (
                json!({"containers": [], "serviceAccountName": ""}),
                "default",
            ),
            (json!({"containers": [], "serviceAccount": "old"}), "old"),
            (
                json!({"containers": [], "serviceAccountName": "new", "serviceAccount": "old"}),
                "new",
            ),
        ];
        for (s, want) in cases {
            assert_eq!(service_account_name(&spec(s.clone())), want, "{s}");
        }
    }

    #[test]
    fn only_a_projected_token_source_counts() {
        let with = |sources: serde_json::Value| {
            spec(json!({"containers": [], "volumes": [
                {"name": "e", "emptyDir": {}},
                {"name": "p", "projected": {"sources": sources}},
            ]}))
        };
        assert!(uses_service_account_token(&with(json!([
            {"configMap": {"name": "kube-root-ca.crt"}},
            {"serviceAccountToken": {"path": "token"}},
        ]))));
        assert!(!uses_service_account_token(&with(json!([
            {"configMap": {"name": "c"}}, {"downwardAPI": {"items": []}},
        ]))));
        assert!(!uses_service_account_token(&with(json!([]))));
        assert!(!uses_service_account_token(&spec(
            json!({"containers": []})
        )));
    }

    #[test]
    fn the_name_is_the_pods_and_its_uids_and_fits_253_characters() {
        let uid = "3F1C2A9E-77aa-4c4b-9e0e-0123456789ab";
        assert_eq!(
            token_binding_secret_name("web-0", uid),
            "web-0-token-binding-3f1c2a9e"
        );
        let long = "a".repeat(253);
        let name = token_binding_secret_name(&long, uid);
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("a-token-binding-3f1c2a9e"), "{name}");
        // A cut that would end in `-` or `.` drops them: still a DNS subdomain.
        let dotted = format!("{}.-b", "a".repeat(229));
        let name = token_binding_secret_name(&dotted, uid);
        assert_eq!(name, format!("{}-token-binding-3f1c2a9e", "a".repeat(229)));
        // Another incarnation of the same pod: another Secret.
        assert_ne!(
            token_binding_secret_name("web-0", "0a1b2c3d-0000-4000-8000-000000000000"),
            token_binding_secret_name("web-0", uid)
        );
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "uid-1"}, "spec": {"containers": []}}))
        .unwrap()
    }

    fn secret(ns: &str, owner_uid: &str, controller: bool, type_: &str) -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": ns,
            "ownerReferences": [{"apiVersion": "rekube.io/v1", "kind": "Pod", "name": "p",
                                 "uid": owner_uid, "controller": controller}]},
            "type": type_}))
        .unwrap()
    }

    #[test]
    fn a_binding_is_the_pods_only_when_it_controls_it() {
        let t = TOKEN_BINDING_SECRET_TYPE;
        assert_eq!(
            is_token_binding_for_pod(&pod(), &secret("ns", "uid-1", true, t)),
            Ok(())
        );
        let not_owner = Err("secret ns/s was not created for pod ns/p (pod is not owner)".into());
        assert_eq!(
            is_token_binding_for_pod(&pod(), &secret("ns", "uid-0", true, t)),
            not_owner
        );
        assert_eq!(
            is_token_binding_for_pod(&pod(), &secret("ns", "uid-1", false, t)),
            not_owner
        );
        assert!(is_token_binding_for_pod(&pod(), &secret("other", "uid-1", true, t)).is_err());
        assert_eq!(
            is_token_binding_for_pod(&pod(), &secret("ns", "uid-1", true, "Opaque")),
            Err(
                "secret ns/s of pod ns/p is of type \"Opaque\", not rekube.io/token-binding".into()
            )
        );
        let mut deleting = secret("ns", "uid-1", true, t);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        assert_eq!(
            is_token_binding_for_pod(&pod(), &deleting),
            Err("secret ns/s of pod ns/p is being deleted".into())
        );
    }
}
