//! Adoption and release of controllees (upstream: `pkg/controller/controller_ref_manager.go`,
//! `BaseControllerRefManager.ClaimObject`, `PodControllerRefManager.ClaimPods`,
//! `ReplicaSetControllerRefManager.ClaimReplicaSets`, and apimachinery's
//! `metav1.GetControllerOf` / `NewControllerRef`).
//!
//! [`claim_decision`] is the pure part of `ClaimObject`: what to do with one candidate. The
//! caller performs the action: for [`ClaimDecision::Adopt`] it first runs upstream's
//! `CanAdopt` check (a live GET of the controller, refusing adoption when it is gone or being
//! deleted), then sends [`adopt_patch`]; for [`ClaimDecision::Release`] it sends
//! [`release_patch`]. Claimed objects are the `Keep` ones plus the successfully adopted ones.
//!
//! ## Patch format
//!
//! Upstream sends strategic merge patches, which custom resources do not accept. Both patches
//! here are **JSON Patches** (RFC 6902, content type [`PATCH_CONTENT_TYPE`]) whose `test`
//! operations carry the preconditions, so that they touch only the one owner reference, as the
//! strategic merge patches do, and never clobber a concurrent change to the others:
//! - both start with `test /metadata/uid` (upstream puts `metadata.uid` in its patch body for
//!   the same purpose: a patch against a deleted-and-recreated object must fail);
//! - adopt appends the controller reference (`add /metadata/ownerReferences/-`), or replaces a
//!   non-controller reference to the same owner uid in place (guarded by a `test` of its uid),
//!   or, when the object has no owner references yet, creates the list guarded by a
//!   `test /metadata/resourceVersion` (nothing else can express "the list is still absent");
//! - release removes every reference to the owner uid, from the highest index down, each
//!   guarded by a `test` of the uid at that index.
//!
//! A failed `test` makes the apiserver answer 422 (reason Invalid, as for any JSON Patch that
//! does not apply); upstream ignores 404 and 422 on release ("nothing to release") and, on a
//! failed adoption, requeues and decides again on the next sync.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rekube_crds::Pod;
use serde_json::{Value, json};

use crate::util::labels::Selector;

/// Content type of the patches built here (JSON Patch).
pub const PATCH_CONTENT_TYPE: &str = "application/json-patch+json";

/// What to do with one candidate object (upstream: the branches of `ClaimObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Already controlled by us and matching: claimed, nothing to do.
    Keep,
    /// An orphan that matches: adopt it (claimed once the patch succeeds).
    Adopt,
    /// Controlled by us but no longer matching: release it (not claimed).
    Release,
    /// Not ours and not adoptable: leave it alone (not claimed).
    Ignore,
}

impl ClaimDecision {
    /// Whether the object counts as ours without any write (upstream: `ClaimObject` returning
    /// true without adopting).
    pub fn is_kept(self) -> bool {
        self == ClaimDecision::Keep
    }
}

/// The controller reference of the object: the owner reference with `controller: true`
/// (upstream: `metav1.GetControllerOf` / `GetControllerOfNoCopy`).
pub fn get_controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether the object's controller reference points at `owner_uid` (upstream:
/// `metav1.IsControlledBy`).
pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    get_controller_of(meta).is_some_and(|r| r.uid == owner_uid)
}

/// A controller reference to `owner` with `controller` and `blockOwnerDeletion` set
/// (upstream: `metav1.NewControllerRef`).
pub fn new_controller_ref(owner: &ObjectMeta, api_version: &str, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Decides what `controller` does with `obj`, given whether `obj` matches the controller's
/// selector (and any extra filters) (upstream: `BaseControllerRefManager.ClaimObject`):
/// - controlled by someone else: ignore;
/// - controlled by us: keep when it matches, else release unless we are being deleted;
/// - orphan: adopt when it matches, we are not being deleted, it is not being deleted and it
///   is in our namespace; else ignore.
pub fn claim_decision_matching(
    controller: &ObjectMeta,
    obj: &ObjectMeta,
    matches: bool,
) -> ClaimDecision {
    let controller_uid = controller.uid.as_deref().unwrap_or("");
    let controller_deleting = controller.deletion_timestamp.is_some();
    if let Some(controller_ref) = get_controller_of(obj) {
        if controller_ref.uid != controller_uid {
            return ClaimDecision::Ignore;
        }
        if matches {
            // Owned and matching: claimed even while we are being deleted (no action).
            return ClaimDecision::Keep;
        }
        if controller_deleting {
            return ClaimDecision::Ignore;
        }
        return ClaimDecision::Release;
    }
    // An orphan.
    if controller_deleting || !matches {
        return ClaimDecision::Ignore;
    }
    if obj.deletion_timestamp.is_some() {
        return ClaimDecision::Ignore;
    }
    if let Some(ns) = controller.namespace.as_deref().filter(|ns| !ns.is_empty())
        && obj.namespace.as_deref() != Some(ns)
    {
        return ClaimDecision::Ignore;
    }
    ClaimDecision::Adopt
}

/// [`claim_decision_matching`] with the match being `selector` on the object's labels
/// (upstream: the `match` function of `ClaimPods` / `ClaimReplicaSets`).
pub fn claim_decision(
    controller: &ObjectMeta,
    selector: &Selector,
    obj: &ObjectMeta,
) -> ClaimDecision {
    claim_decision_matching(controller, obj, selector.matches(obj.labels.as_ref()))
}

/// The decision for each pod, in order (upstream: `PodControllerRefManager.ClaimPods`
/// without the writes).
pub fn claim_pods<'a>(
    controller: &ObjectMeta,
    selector: &Selector,
    pods: &[&'a Pod],
) -> Vec<(&'a Pod, ClaimDecision)> {
    pods.iter()
        .map(|p| (*p, claim_decision(controller, selector, &p.metadata)))
        .collect()
}

/// The pods controlled by `controller_uid` that match `selector` (upstream:
/// `controller.FilterClaimedPods`, used for terminating pods, which are never adopted).
pub fn filter_claimed_pods<'a>(
    controller_uid: &str,
    selector: &Selector,
    pods: &[&'a Pod],
) -> Vec<&'a Pod> {
    pods.iter()
        .copied()
        .filter(|p| {
            is_controlled_by(&p.metadata, controller_uid)
                && selector.matches(p.metadata.labels.as_ref())
        })
        .collect()
}

fn owner_ref_value(owner: &OwnerReference) -> Value {
    // upstream ownerRefControllerPatch: controller and blockOwnerDeletion are always true.
    json!({
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn test_uid(obj: &ObjectMeta) -> Value {
    json!({"op": "test", "path": "/metadata/uid", "value": obj.uid.as_deref().unwrap_or("")})
}

/// The JSON Patch adopting `obj` under `owner` as its controller (upstream:
/// `ownerRefControllerPatch`, a strategic merge patch adding the reference with
/// `controller: true, blockOwnerDeletion: true` and the `metadata.uid` precondition). See the
/// module docs for the operations.
pub fn adopt_patch(owner: &OwnerReference, obj: &ObjectMeta) -> Value {
    let mut ops = vec![test_uid(obj)];
    let refs = obj.owner_references.as_deref().unwrap_or_default();
    let value = owner_ref_value(owner);
    if let Some(i) = refs.iter().position(|r| r.uid == owner.uid) {
        // Strategic merge merges by uid: turn the existing reference into the controller one.
        let path = format!("/metadata/ownerReferences/{i}");
        ops.push(json!({"op": "test", "path": format!("{path}/uid"), "value": owner.uid}));
        ops.push(json!({"op": "replace", "path": path, "value": value}));
    } else if refs.is_empty() {
        if let Some(rv) = obj.resource_version.as_deref() {
            ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
        }
        ops.push(json!({"op": "add", "path": "/metadata/ownerReferences", "value": [value]}));
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/ownerReferences/-", "value": value}));
    }
    Value::Array(ops)
}

/// The JSON Patch removing every owner reference to `owner_uid` from `obj` (upstream:
/// `GenerateDeleteOwnerRefStrategicMergeBytes`, a `$patch: delete` of the reference with the
/// `metadata.uid` precondition). See the module docs for the operations; when `obj` holds no
/// such reference the patch only tests the uid.
pub fn release_patch(owner_uid: &str, obj: &ObjectMeta) -> Value {
    let mut ops = vec![test_uid(obj)];
    let refs = obj.owner_references.as_deref().unwrap_or_default();
    for (i, _) in refs
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, r)| r.uid == owner_uid)
    {
        let path = format!("/metadata/ownerReferences/{i}");
        ops.push(json!({"op": "test", "path": format!("{path}/uid"), "value": owner_uid}));
        ops.push(json!({"op": "remove", "path": path}));
    }
    Value::Array(ops)
}

/// Applies a JSON Patch made of the operations built here (`test`, `add`, `replace`,
/// `remove`) to a JSON document, as the apiserver would; used by tests to check the patches.
/// Returns an error message naming the failing operation.
#[cfg(test)]
pub(crate) fn apply_json_patch(doc: &Value, patch: &Value) -> Result<Value, String> {
    let mut doc = doc.clone();
    let ops = patch.as_array().ok_or("patch is not an array")?;
    for op in ops {
        let kind = op["op"].as_str().ok_or("operation without op")?;
        let path = op["path"].as_str().ok_or("operation without path")?;
        let (parent_path, last) = path.rsplit_once('/').ok_or("invalid path")?;
        match kind {
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test failed at {path}"));
                }
            }
            "add" | "replace" | "remove" => {
                let parent = doc
                    .pointer_mut(parent_path)
                    .ok_or_else(|| format!("{kind}: missing parent of {path}"))?;
                match parent {
                    Value::Object(map) => match kind {
                        "add" => {
                            map.insert(last.to_string(), op["value"].clone());
                        }
                        "replace" => {
                            let slot = map
                                .get_mut(last)
                                .ok_or_else(|| format!("replace: missing {path}"))?;
                            *slot = op["value"].clone();
                        }
                        _ => {
                            map.remove(last)
                                .ok_or_else(|| format!("remove: missing {path}"))?;
                        }
                    },
                    Value::Array(list) => {
                        let index = if last == "-" {
                            list.len()
                        } else {
                            last.parse::<usize>().map_err(|e| e.to_string())?
                        };
                        match kind {
                            "add" if index <= list.len() => list.insert(index, op["value"].clone()),
                            "replace" if index < list.len() => list[index] = op["value"].clone(),
                            "remove" if index < list.len() => {
                                list.remove(index);
                            }
                            _ => return Err(format!("{kind}: index out of range at {path}")),
                        }
                    }
                    _ => return Err(format!("{kind}: parent of {path} is not a container")),
                }
            }
            other => return Err(format!("unsupported op {other}")),
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::labels::label_selector_as_selector;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn controller(uid: &str, deleting: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some("rs".into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }
    }

    fn owner(uid: &str, is_controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "rekube.io/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(is_controller),
            block_owner_deletion: Some(true),
        }
    }

    /// upstream controller_ref_manager_test.go newPod(podName, label, owner)
    fn new_pod(name: &str, l: &BTreeMap<String, String>, owner: Option<&OwnerReference>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("7".into()),
                labels: Some(l.clone()),
                owner_references: owner.map(|o| vec![o.clone()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn selector(l: &BTreeMap<String, String>) -> Selector {
        label_selector_as_selector(Some(&LabelSelector {
            match_labels: Some(l.clone()),
            ..Default::default()
        }))
        .unwrap()
    }

    fn claimed<'a>(decisions: &[(&'a Pod, ClaimDecision)]) -> Vec<&'a str> {
        // Adopt counts as claimed (upstream: successful adoption).
        decisions
            .iter()
            .filter(|(_, d)| matches!(d, ClaimDecision::Keep | ClaimDecision::Adopt))
            .map(|(p, _)| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    // Port of controller_ref_manager_test.go TestClaimPods.
    #[test]
    fn claim_pods_table() {
        let production = labels(&[("type", "production")]);
        let test = labels(&[("type", "testing")]);
        let me = owner("123", true);
        let other = owner("abc", true);
        let deleting_pod =
            |name: &str, l: &BTreeMap<String, String>, o: Option<&OwnerReference>| {
                let mut p = new_pod(name, l, o);
                p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
                p
            };
        let mut other_ns = new_pod("pod2", &production, None);
        other_ns.metadata.namespace = Some("other".into());

        struct Case {
            name: &'static str,
            deleting: bool,
            pods: Vec<Pod>,
            claimed: Vec<&'static str>,
            released: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "claim pods with correct label",
                deleting: false,
                pods: vec![
                    new_pod("pod1", &production, None),
                    new_pod("pod2", &test, None),
                ],
                claimed: vec!["pod1"],
                released: vec![],
            },
            Case {
                name: "controller marked for deletion can not claim pods",
                deleting: true,
                pods: vec![
                    new_pod("pod1", &production, None),
                    new_pod("pod2", &production, None),
                ],
                claimed: vec![],
                released: vec![],
            },
            Case {
                name: "controller marked for deletion can not claim new pods",
                deleting: true,
                pods: vec![
                    new_pod("pod1", &production, Some(&me)),
                    new_pod("pod2", &production, None),
                ],
                claimed: vec!["pod1"],
                released: vec![],
            },
            Case {
                name: "controller can not claim pods owned by another controller",
                deleting: false,
                pods: vec![
                    new_pod("pod1", &production, Some(&other)),
                    new_pod("pod2", &test, Some(&other)),
                ],
                claimed: vec![],
                released: vec![],
            },
            Case {
                name: "controller releases claimed pods when selector doesn't match",
                deleting: false,
                pods: vec![
                    new_pod("pod1", &production, Some(&me)),
                    new_pod("pod2", &test, Some(&me)),
                ],
                claimed: vec!["pod1"],
                released: vec!["pod2"],
            },
            Case {
                name: "controller does not claim orphaned pods marked for deletion",
                deleting: false,
                pods: vec![
                    deleting_pod("pod1", &production, None),
                    deleting_pod("pod2", &production, Some(&me)),
                ],
                claimed: vec!["pod2"],
                released: vec![],
            },
            Case {
                name: "controller being deleted does not release pods",
                deleting: true,
                pods: vec![new_pod("pod1", &test, Some(&me))],
                claimed: vec![],
                released: vec![],
            },
            Case {
                name: "controller does not claim pods of a different namespace",
                deleting: false,
                pods: vec![new_pod("pod1", &production, None), other_ns],
                claimed: vec!["pod1"],
                released: vec![],
            },
            Case {
                name: "a non-controller owner reference is an orphan",
                deleting: false,
                pods: vec![new_pod("pod1", &production, Some(&owner("123", false)))],
                claimed: vec!["pod1"],
                released: vec![],
            },
        ];
        let sel = selector(&production);
        for case in cases {
            let c = controller("123", case.deleting);
            let refs: Vec<&Pod> = case.pods.iter().collect();
            let decisions = claim_pods(&c, &sel, &refs);
            assert_eq!(claimed(&decisions), case.claimed, "{}", case.name);
            let released: Vec<&str> = decisions
                .iter()
                .filter(|(_, d)| *d == ClaimDecision::Release)
                .map(|(p, _)| p.metadata.name.as_deref().unwrap())
                .collect();
            assert_eq!(released, case.released, "{}", case.name);
        }
    }

    #[test]
    fn decision_branches() {
        let m = |uid: Option<&str>, deleting: bool| ObjectMeta {
            namespace: Some("default".into()),
            owner_references: uid.map(|u| vec![owner(u, true)]),
            deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        use ClaimDecision::*;
        // (controller deleting, obj controller uid, obj deleting, matches) -> decision
        let cases = [
            (false, Some("123"), false, true, Keep),
            (true, Some("123"), false, true, Keep),
            (false, Some("123"), true, true, Keep),
            (false, Some("123"), false, false, Release),
            (true, Some("123"), false, false, Ignore),
            (false, Some("999"), false, true, Ignore),
            (false, Some("999"), false, false, Ignore),
            (false, None, false, true, Adopt),
            (false, None, false, false, Ignore),
            (true, None, false, true, Ignore),
            (false, None, true, true, Ignore),
        ];
        for (cd, uid, od, matches, want) in cases {
            let got = claim_decision_matching(&controller("123", cd), &m(uid, od), matches);
            assert_eq!(got, want, "{cd} {uid:?} {od} {matches}");
        }
        assert!(Keep.is_kept() && !Adopt.is_kept());
    }

    #[test]
    fn controller_ref_helpers() {
        let mut meta = ObjectMeta {
            owner_references: Some(vec![owner("a", false), owner("b", true), owner("c", true)]),
            ..Default::default()
        };
        assert_eq!(get_controller_of(&meta).map(|r| r.uid.as_str()), Some("b"));
        assert!(is_controlled_by(&meta, "b"));
        assert!(!is_controlled_by(&meta, "a"));
        meta.owner_references = Some(vec![owner("a", false)]);
        assert!(get_controller_of(&meta).is_none());
        meta.owner_references = None;
        assert!(get_controller_of(&meta).is_none());

        let rs = controller("u1", false);
        let r = new_controller_ref(&rs, "rekube.io/v1", "ReplicaSet");
        assert_eq!(r.name, "rs");
        assert_eq!(r.uid, "u1");
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.block_owner_deletion, Some(true));
    }

    #[test]
    fn filter_claimed() {
        let production = labels(&[("type", "production")]);
        let test = labels(&[("type", "testing")]);
        let me = owner("123", true);
        let pods = [
            new_pod("mine", &production, Some(&me)),
            new_pod("mine-unmatched", &test, Some(&me)),
            new_pod("orphan", &production, None),
            new_pod("other", &production, Some(&owner("9", true))),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let got: Vec<&str> = filter_claimed_pods("123", &selector(&production), &refs)
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(got, vec!["mine"]);
    }

    fn as_json(meta: &ObjectMeta) -> Value {
        json!({ "metadata": serde_json::to_value(meta).unwrap() })
    }

    fn refs_after(doc: &Value) -> Vec<(String, Option<bool>)> {
        doc["metadata"]["ownerReferences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["uid"].as_str().unwrap().to_string(),
                            r["controller"].as_bool(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn adopt_patch_orphan_without_refs() {
        let pod = new_pod("p", &labels(&[("a", "b")]), None);
        let me = owner("123", false);
        let patch = adopt_patch(&me, &pod.metadata);
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/uid", "value": "uid-p"},
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "add", "path": "/metadata/ownerReferences", "value": [{
                    "apiVersion": "rekube.io/v1", "kind": "ReplicaSet", "name": "rs-123",
                    "uid": "123", "controller": true, "blockOwnerDeletion": true
                }]},
            ])
        );
        let after = apply_json_patch(&as_json(&pod.metadata), &patch).unwrap();
        assert_eq!(refs_after(&after), vec![("123".to_string(), Some(true))]);
        // the object was recreated: the uid test fails
        let mut recreated = pod.metadata.clone();
        recreated.uid = Some("uid-new".into());
        assert!(apply_json_patch(&as_json(&recreated), &patch).is_err());
        // the object changed meanwhile: the resourceVersion test fails
        let mut changed = pod.metadata.clone();
        changed.resource_version = Some("8".into());
        assert!(apply_json_patch(&as_json(&changed), &patch).is_err());
    }

    #[test]
    fn adopt_patch_keeps_other_owners() {
        let pod = new_pod("p", &labels(&[("a", "b")]), Some(&owner("x", false)));
        let patch = adopt_patch(&owner("123", true), &pod.metadata);
        let after = apply_json_patch(&as_json(&pod.metadata), &patch).unwrap();
        assert_eq!(
            refs_after(&after),
            vec![
                ("x".to_string(), Some(false)),
                ("123".to_string(), Some(true))
            ]
        );
        // a concurrent change of the other references does not break the append
        let mut changed = pod.metadata.clone();
        changed.owner_references = Some(vec![owner("x", false), owner("y", false)]);
        let after = apply_json_patch(&as_json(&changed), &patch).unwrap();
        assert_eq!(refs_after(&after).len(), 3);
    }

    #[test]
    fn adopt_patch_upgrades_existing_reference() {
        let pod = new_pod("p", &labels(&[("a", "b")]), Some(&owner("123", false)));
        let patch = adopt_patch(&owner("123", true), &pod.metadata);
        let after = apply_json_patch(&as_json(&pod.metadata), &patch).unwrap();
        assert_eq!(refs_after(&after), vec![("123".to_string(), Some(true))]);
        assert_eq!(
            after["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            json!(true)
        );
    }

    #[test]
    fn release_patch_removes_only_our_reference() {
        let mut pod = new_pod("p", &labels(&[("a", "b")]), None);
        pod.metadata.owner_references = Some(vec![
            owner("x", false),
            owner("123", true),
            owner("y", false),
        ]);
        let patch = release_patch("123", &pod.metadata);
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/uid", "value": "uid-p"},
                {"op": "test", "path": "/metadata/ownerReferences/1/uid", "value": "123"},
                {"op": "remove", "path": "/metadata/ownerReferences/1"},
            ])
        );
        let after = apply_json_patch(&as_json(&pod.metadata), &patch).unwrap();
        assert_eq!(
            refs_after(&after),
            vec![
                ("x".to_string(), Some(false)),
                ("y".to_string(), Some(false))
            ]
        );
        // the list changed meanwhile: the index test fails instead of removing the wrong one
        let mut changed = pod.metadata.clone();
        changed.owner_references = Some(vec![owner("123", true)]);
        assert!(apply_json_patch(&as_json(&changed), &patch).is_err());
        // duplicate references to the owner are all removed, highest index first
        pod.metadata.owner_references = Some(vec![
            owner("123", false),
            owner("x", false),
            owner("123", true),
        ]);
        let patch = release_patch("123", &pod.metadata);
        let after = apply_json_patch(&as_json(&pod.metadata), &patch).unwrap();
        assert_eq!(refs_after(&after), vec![("x".to_string(), Some(false))]);
        // nothing to release: only the uid test
        let patch = release_patch("zzz", &pod.metadata);
        assert_eq!(patch.as_array().unwrap().len(), 1);
    }
}
