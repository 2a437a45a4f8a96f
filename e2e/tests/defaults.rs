//! A minimal manifest reads back like `kubectl get -o yaml` of its upstream twin: each
//! manifest is created twice on the same apiserver, as the built-in kind and as rekube's,
//! and everything but metadata must be equal, except for the differences listed here,
//! each of which an upstream component other than defaulting produces.
use std::collections::BTreeSet;

use kube::api::{Api, DynamicObject};
use rekube_e2e::compare::differences;
use rekube_e2e::{TestNamespace, manifests, to_rekube, type_of};
use serde_json::Value;

/// Paths where the upstream twin legitimately differs, and why.
fn known_differences(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        // Admission plugins of the built-in Pod: ServiceAccount mounts the token volume,
        // DefaultTolerationSeconds adds the not-ready/unreachable tolerations; the
        // built-in registry computes qosClass. rekube's node lifecycle applies the same
        // 300 s toleration default when it evicts.
        "Pod" => &[
            (".spec.serviceAccount", "ServiceAccount admission"),
            (".spec.serviceAccountName", "ServiceAccount admission"),
            (
                ".spec.volumes",
                "ServiceAccount admission (kube-api-access token volume)",
            ),
            (
                ".spec.containers[0].volumeMounts",
                "ServiceAccount admission",
            ),
            (
                ".spec.containers[1].volumeMounts",
                "ServiceAccount admission",
            ),
            (".spec.tolerations", "DefaultTolerationSeconds admission"),
            (".status.qosClass", "computed by the built-in pod registry"),
        ],
        // The built-in Service registry allocates the cluster IP; rekube's service IP
        // allocation controller does that for rekube Services.
        "Service" => &[
            (".spec.clusterIP", "allocated by the service IP allocator"),
            (".spec.clusterIPs", "allocated by the service IP allocator"),
            (".spec.ipFamilies", "allocated by the service IP allocator"),
            (
                ".spec.ipFamilyPolicy",
                "allocated by the service IP allocator",
            ),
        ],
        // The built-in registry stamps the phase transition time; rekube's PV binder
        // stamps it when it moves a PV between phases.
        "PersistentVolume" => &[(
            ".status.lastPhaseTransitionTime",
            "set by the built-in PV registry",
        )],
        // The TaintNodesByCondition admission plugin taints a new Node not-ready; for
        // rekube Nodes the node agent registers Ready and the node lifecycle controller
        // owns the not-ready/unreachable taints.
        "Node" => &[(".spec", "TaintNodesByCondition admission (not-ready taint)")],
        _ => &[],
    }
}

fn body(obj: &Value) -> Value {
    let mut v = obj.clone();
    let map = v.as_object_mut().unwrap();
    map.remove("metadata");
    map.remove("apiVersion");
    v
}

#[tokio::test]
async fn minimal_manifests_read_back_like_their_upstream_twins() {
    let ns = TestNamespace::new("defaults").await;
    // The ServiceAccount admission plugin needs the namespace's default service account,
    // which kube-controller-manager creates shortly after the namespace.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(ns.client.clone(), &ns.name);
    for _ in 0..100 {
        if sa.get_opt("default").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut failures = Vec::new();
    for upstream in manifests("minimal/all.yaml") {
        let (api_version, kind) = type_of(&upstream).unwrap();
        let twin = ns
            .create(upstream.clone())
            .await
            .unwrap_or_else(|e| panic!("upstream {kind}: {e}"));
        let ours = ns
            .create(to_rekube(upstream))
            .await
            .unwrap_or_else(|e| panic!("rekube {kind}: {e}"));
        let get = |api: Api<DynamicObject>, name: String| async move {
            serde_json::to_value(api.get(&name).await.unwrap()).unwrap()
        };
        let twin = get(
            ns.api(&api_version, &kind),
            twin["metadata"]["name"].as_str().unwrap().into(),
        )
        .await;
        let ours = get(
            ns.api(rekube_crds::API_VERSION, &kind),
            ours["metadata"]["name"].as_str().unwrap().into(),
        )
        .await;
        let allowed: BTreeSet<&str> = known_differences(&kind).iter().map(|(p, _)| *p).collect();
        let found: Vec<String> = differences(&body(&twin), &body(&ours));
        let unexpected: Vec<&String> = found
            .iter()
            .filter(|p| !allowed.contains(p.as_str()))
            .collect();
        if !unexpected.is_empty() {
            failures.push(format!(
                "{kind}: differs from its upstream twin at {unexpected:?}\nupstream: {}\nrekube:   {}",
                body(&twin),
                body(&ours)
            ));
        }
        // Every listed difference must really occur, or the list has gone stale.
        let stale: Vec<&&str> = allowed
            .iter()
            .filter(|p| !found.iter().any(|f| f == **p))
            .collect();
        if !stale.is_empty() {
            failures.push(format!(
                "{kind}: listed differences no longer occur: {stale:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
