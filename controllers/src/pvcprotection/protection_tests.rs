//! Tests of [`super`]: upstream's TestPVCProtectionController table replayed against the
//! pure core (see the module doc of `pvcprotection` for what is ported), upstream's
//! protectionutil tests, and the v1.36 details of pod usage.
use crate::util::pod::{POD_FAILED, POD_SUCCEEDED};
use std::collections::VecDeque;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, EmptyDirVolumeSource, EphemeralVolumeSource, PersistentVolumeClaimCondition,
    PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use serde_json::json;

use super::*;
use crate::util::pod::{POD_PENDING, POD_RUNNING};

// upstream's fixtures (pvc_protection_controller_test.go).
const DEFAULT_NS: &str = "default";
const NAMESPACE_2: &str = "namespace-2";
const DEFAULT_PVC_NAME: &str = "pvc1";
const DEFAULT_POD_NAME: &str = "pod1";
const DEFAULT_NODE_NAME: &str = "node1";
const DEFAULT_UID: &str = "uid1";

fn pod() -> Pod {
    pod_with_config(DEFAULT_POD_NAME, DEFAULT_NS)
}

fn pod_with_config(name: &str, namespace: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(DEFAULT_UID.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(DEFAULT_NODE_NAME.into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(POD_PENDING.into()),
            ..Default::default()
        }),
    }
}

fn unscheduled(mut pod: Pod) -> Pod {
    pod.spec.as_mut().unwrap().node_name = None;
    pod
}

fn push_volume(pod: &mut Pod, volume: Volume) {
    pod.spec
        .as_mut()
        .unwrap()
        .volumes
        .get_or_insert_with(Vec::new)
        .push(volume);
}

fn with_pvc(pvc_name: &str, mut pod: Pod) -> Pod {
    push_volume(
        &mut pod,
        Volume {
            name: pvc_name.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    pod
}

fn with_empty_dir(mut pod: Pod) -> Pod {
    push_volume(
        &mut pod,
        Volume {
            name: "emptyDir".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    );
    pod
}

fn with_ephemeral(volume_name: &str, mut pod: Pod) -> Pod {
    push_volume(
        &mut pod,
        Volume {
            name: volume_name.into(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Default::default()
        },
    );
    pod
}

fn with_status(phase: &str, mut pod: Pod) -> Pod {
    pod.status.as_mut().unwrap().phase = Some(phase.into());
    pod
}

fn with_uid(uid: &str, mut pod: Pod) -> Pod {
    pod.metadata.uid = Some(uid.into());
    pod
}

fn pvc() -> PersistentVolumeClaim {
    pvc_with_config(DEFAULT_PVC_NAME, DEFAULT_NS)
}

fn pvc_with_config(name: &str, namespace: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn with_protection_finalizer(mut pvc: PersistentVolumeClaim) -> PersistentVolumeClaim {
    pvc.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(PVC_PROTECTION_FINALIZER.into());
    pvc
}

fn with_unused_condition(
    status: &str,
    at: i64,
    mut pvc: PersistentVolumeClaim,
) -> PersistentVolumeClaim {
    pvc.status
        .get_or_insert_with(PersistentVolumeClaimStatus::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(PersistentVolumeClaimCondition {
            type_: "Unused".into(),
            status: status.into(),
            last_transition_time: Some(Time(Timestamp::from_second(at).unwrap())),
            reason: Some("NoPodsUsingPVC".into()),
            message: Some("No pods are currently referencing this PVC".into()),
            ..Default::default()
        });
    pvc
}

fn zero_time() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

fn deleted(mut pvc: PersistentVolumeClaim) -> PersistentVolumeClaim {
    pvc.metadata.deletion_timestamp = Some(zero_time());
    pvc
}

fn controlled_by(uid: &str, mut pvc: PersistentVolumeClaim) -> PersistentVolumeClaim {
    pvc.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "rekube.io/v1".into(),
        kind: "Pod".into(),
        name: DEFAULT_POD_NAME.into(),
        uid: uid.into(),
        controller: Some(true),
        ..Default::default()
    }]);
    pvc
}

// ---------------------------------------------------------------------------------------
// The replay of upstream's controller test
// ---------------------------------------------------------------------------------------

/// upstream's expected kubeclient actions: a live LIST of a namespace's pods, or an
/// update of a claim's finalizers (its key, the finalizers after).
#[derive(Debug, PartialEq)]
enum Action {
    List(String),
    Update(String, Vec<String>),
}

fn list(namespace: &str) -> Action {
    Action::List(namespace.into())
}

fn added(key: &str) -> Action {
    Action::Update(key.into(), vec![PVC_PROTECTION_FINALIZER.into()])
}

fn removed(key: &str) -> Action {
    Action::Update(key.into(), vec![])
}

#[derive(Default)]
struct Case {
    name: &'static str,
    /// Objects in the API before the test starts (upstream's initialObjects).
    initial_pvcs: Vec<PersistentVolumeClaim>,
    initial_pods: Vec<Pod>,
    /// The initial objects are not in the informers yet.
    informers_are_late: bool,
    /// upstream generateUpdateErrorFunc: the first n updates fail.
    update_failures: usize,
    /// upstream generatePodListErrorFunc: the first n live lists fail.
    list_failures: usize,
    /// Claim events to simulate; these claims are in the API and the informers.
    updated_pvcs: Vec<PersistentVolumeClaim>,
    /// Pod event to simulate; this pod is in the API and the informers.
    updated_pod: Option<Pod>,
    /// Pod deletion to simulate; this pod is in neither.
    deleted_pod: Option<Pod>,
    expected_actions: Vec<Action>,
}

fn enqueue(queue: &mut VecDeque<ObjectKey>, key: ObjectKey) {
    if !queue.contains(&key) {
        queue.push_back(key);
    }
}

/// What upstream's test does: feed the events to the handlers' filters, then process the
/// queue one claim at a time (each claim its own namespace batch, so one live list per
/// claim), a failed list or update queueing the claim again.
fn replay(case: &Case) -> Vec<Action> {
    // The claims in the API are never read: the controller reads claims from its cache.
    let mut api_pods = Vec::new();
    let (mut informer_pvcs, mut informer_pods) = (case.updated_pvcs.clone(), Vec::new());
    if let Some(pod) = &case.updated_pod {
        api_pods.push(pod.clone());
        informer_pods.push(pod.clone());
    }
    api_pods.extend(case.initial_pods.iter().cloned());
    if !case.informers_are_late {
        informer_pvcs.extend(case.initial_pvcs.iter().cloned());
        informer_pods.extend(case.initial_pods.iter().cloned());
    }

    let mut queue = VecDeque::new();
    for pvc in &case.updated_pvcs {
        if pvc_needs_processing(pvc) {
            enqueue(&mut queue, ObjectKey::of(pvc));
        }
    }
    let keys = match (&case.deleted_pod, &case.updated_pod) {
        (Some(d), Some(u)) if ObjectKey::of(d) == ObjectKey::of(u) => {
            pod_added_deleted_updated(Some(d), u, false)
        }
        (_, Some(u)) => pod_added_deleted_updated(None, u, false),
        (Some(d), None) => pod_added_deleted_updated(None, d, true),
        (None, None) => Vec::new(),
    };
    keys.into_iter().for_each(|k| enqueue(&mut queue, k));

    let (mut update_failures, mut list_failures) = (case.update_failures, case.list_failures);
    let mut actions = Vec::new();
    let mut steps = 0;
    while let Some(key) = queue.pop_front() {
        steps += 1;
        assert!(steps < 100, "{}: the queue never drains", case.name);
        let Some(pvc) = informer_pvcs.iter().find(|p| ObjectKey::of(*p) == key) else {
            continue;
        };
        let cached: Vec<&Pod> = informer_pods.iter().collect();
        let mut decision = process_pvc(pvc, &cached, None);
        if decision == Decision::AskApiServer {
            let namespace = key.namespace.clone().unwrap();
            actions.push(Action::List(namespace.clone()));
            if list_failures > 0 {
                list_failures -= 1;
                queue.push_back(key);
                continue;
            }
            let live: Vec<Pod> = api_pods
                .iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
                .cloned()
                .collect();
            decision = process_pvc(pvc, &cached, Some(&live));
            assert_ne!(decision, Decision::AskApiServer, "{}", case.name);
        }
        let patch = match decision {
            Decision::AddFinalizer => add_finalizer_patch(&pvc.metadata, PVC_PROTECTION_FINALIZER),
            Decision::RemoveFinalizer => {
                remove_finalizer_patch(&pvc.metadata, PVC_PROTECTION_FINALIZER)
            }
            _ => continue,
        };
        let finalizers: Vec<String> =
            serde_json::from_value(patch["metadata"]["finalizers"].clone()).unwrap();
        actions.push(Action::Update(key.to_string(), finalizers));
        if update_failures > 0 {
            update_failures -= 1;
            queue.push_back(key);
        }
    }
    actions
}

/// upstream TestPVCProtectionController: the cases that apply with the
/// PersistentVolumeClaimUnusedSinceTime gate off (see the module doc).
#[test]
fn pvc_protection_controller() {
    let dpvc = || deleted(with_protection_finalizer(pvc()));
    let dpvc_in =
        |name: &str, ns: &str| deleted(with_protection_finalizer(pvc_with_config(name, ns)));
    let cases = vec![
        //
        // PVC events
        //
        Case {
            name: "PVC without finalizer -> finalizer is added",
            updated_pvcs: vec![pvc(), pvc_with_config("pvc2", NAMESPACE_2)],
            expected_actions: vec![added("default/pvc1"), added("namespace-2/pvc2")],
            ..Default::default()
        },
        Case {
            name: "PVC with finalizer -> no action",
            updated_pvcs: vec![
                with_protection_finalizer(pvc()),
                with_protection_finalizer(pvc_with_config("pvc2", NAMESPACE_2)),
            ],
            expected_actions: vec![],
            ..Default::default()
        },
        Case {
            name: "saving PVC finalizer fails -> controller retries",
            updated_pvcs: vec![pvc()],
            update_failures: 2,
            expected_actions: vec![
                added("default/pvc1"),
                added("default/pvc1"),
                added("default/pvc1"),
            ],
            ..Default::default()
        },
        Case {
            name: "deleted PVC with finalizers across different namespaces -> finalizer is removed",
            updated_pvcs: vec![dpvc(), dpvc_in("pvc2", NAMESPACE_2)],
            expected_actions: vec![
                list(DEFAULT_NS),
                removed("default/pvc1"),
                list(NAMESPACE_2),
                removed("namespace-2/pvc2"),
            ],
            ..Default::default()
        },
        Case {
            name: "multiple PVCs with finalizer for the same namespace; no alive pods -> finalizer is removed",
            updated_pvcs: vec![dpvc(), dpvc_in("pvc2", DEFAULT_NS)],
            expected_actions: vec![
                list(DEFAULT_NS),
                removed("default/pvc1"),
                list(DEFAULT_NS),
                removed("default/pvc2"),
            ],
            ..Default::default()
        },
        Case {
            name: "finalizer removal fails -> controller retries",
            updated_pvcs: vec![dpvc()],
            update_failures: 2,
            expected_actions: vec![
                list(DEFAULT_NS),
                removed("default/pvc1"),
                list(DEFAULT_NS),
                removed("default/pvc1"),
                list(DEFAULT_NS),
                removed("default/pvc1"),
            ],
            ..Default::default()
        },
        Case {
            name: "delete multiple PVCs of the same namespace; pod list fails for one PVC -> add failing PVC back to queue and continue to the next PVC",
            updated_pvcs: vec![dpvc(), dpvc_in("pvc2", DEFAULT_NS)],
            list_failures: 1,
            expected_actions: vec![
                list(DEFAULT_NS),
                list(DEFAULT_NS),
                removed("default/pvc2"),
                list(DEFAULT_NS),
                removed("default/pvc1"),
            ],
            ..Default::default()
        },
        Case {
            name: "deleted PVC with finalizer + pod with the PVC exists -> finalizer is not removed",
            initial_pods: vec![with_pvc(DEFAULT_PVC_NAME, pod())],
            updated_pvcs: vec![dpvc()],
            expected_actions: vec![],
            ..Default::default()
        },
        Case {
            name: "deleted PVC with finalizer + pod with unrelated PVC and EmptyDir exists -> finalizer is removed",
            initial_pods: vec![with_empty_dir(with_pvc("unrelatedPVC", pod()))],
            updated_pvcs: vec![dpvc()],
            expected_actions: vec![list(DEFAULT_NS), removed("default/pvc1")],
            ..Default::default()
        },
        Case {
            name: "deleted multiple PVCs with finalizer (same namespace) + pod with unrelated PVC and EmptyDir exists",
            initial_pods: vec![with_empty_dir(with_pvc("unrelatedPVC", pod()))],
            updated_pvcs: vec![
                dpvc(),
                dpvc_in("pvc2", DEFAULT_NS),
                dpvc_in("pvc3", DEFAULT_NS),
            ],
            expected_actions: vec![
                list(DEFAULT_NS),
                removed("default/pvc1"),
                list(DEFAULT_NS),
                removed("default/pvc2"),
                list(DEFAULT_NS),
                removed("default/pvc3"),
            ],
            ..Default::default()
        },
        Case {
            name: "deleted PVC with finalizer + pod with the PVC finished but is not deleted -> finalizer is not removed",
            initial_pods: vec![with_status(POD_FAILED, with_pvc(DEFAULT_PVC_NAME, pod()))],
            updated_pvcs: vec![dpvc()],
            expected_actions: vec![],
            ..Default::default()
        },
        Case {
            name: "deleted PVC with finalizer + pod with the PVC exists but is not in the Informer's cache yet -> finalizer is not removed",
            initial_pods: vec![with_pvc(DEFAULT_PVC_NAME, pod())],
            informers_are_late: true,
            updated_pvcs: vec![dpvc()],
            expected_actions: vec![list(DEFAULT_NS)],
            ..Default::default()
        },
        Case {
            name: "mix of deleted PVCs with some used by a pod and some unused -> finalizer is removed only for unused PVCs",
            initial_pods: vec![
                with_pvc(DEFAULT_PVC_NAME, pod()),
                with_pvc("pvc3", pod_with_config("pod2", "namespace-3")),
            ],
            informers_are_late: true,
            updated_pvcs: vec![
                dpvc(),
                dpvc_in("pvc2", DEFAULT_NS),
                dpvc_in("pvc3", "namespace-3"),
            ],
            expected_actions: vec![
                list(DEFAULT_NS),
                list(DEFAULT_NS),
                removed("default/pvc2"),
                list("namespace-3"),
            ],
            ..Default::default()
        },
        //
        // PVC UnusedSince condition: the finalizer half of the cases whose finalizer
        // behaviour does not depend on the gate.
        //
        Case {
            name: "feature enabled: deleting PVC -> condition not updated, finalizer removed",
            updated_pvcs: vec![dpvc()],
            expected_actions: vec![list(DEFAULT_NS), removed("default/pvc1")],
            ..Default::default()
        },
        Case {
            name: "feature disabled: unused PVC with no pods -> no condition action",
            updated_pvcs: vec![with_protection_finalizer(pvc())],
            expected_actions: vec![],
            ..Default::default()
        },
        Case {
            name: "feature enabled: deleting PVC that already has Unused=True condition -> condition preserved when removing finalizer",
            updated_pvcs: vec![deleted(with_unused_condition(
                "True",
                100,
                with_protection_finalizer(pvc()),
            ))],
            expected_actions: vec![list(DEFAULT_NS), removed("default/pvc1")],
            ..Default::default()
        },
        Case {
            name: "feature enabled: used PVC without finalizer -> Unused=False set then finalizer added",
            initial_pods: vec![with_pvc(DEFAULT_PVC_NAME, pod())],
            updated_pvcs: vec![pvc()],
            // upstream also expects the status update setting Unused=False first.
            expected_actions: vec![added("default/pvc1")],
            ..Default::default()
        },
        Case {
            name: "feature enabled: deleted PVC with finalizer and pod using it -> finalizer kept (existing behavior)",
            initial_pods: vec![with_pvc(DEFAULT_PVC_NAME, pod())],
            updated_pvcs: vec![dpvc()],
            expected_actions: vec![],
            ..Default::default()
        },
        //
        // Pod events
        //
        Case {
            name: "updated running Pod -> no action",
            initial_pvcs: vec![dpvc()],
            updated_pod: Some(with_status(POD_RUNNING, with_pvc(DEFAULT_PVC_NAME, pod()))),
            expected_actions: vec![],
            ..Default::default()
        },
        Case {
            name: "updated finished Pod -> finalizer is not removed",
            initial_pvcs: vec![dpvc()],
            updated_pod: Some(with_status(
                POD_SUCCEEDED,
                with_pvc(DEFAULT_PVC_NAME, pod()),
            )),
            expected_actions: vec![],
            ..Default::default()
        },
        Case {
            name: "updated unscheduled Pod -> finalizer is removed",
            initial_pvcs: vec![dpvc()],
            updated_pod: Some(unscheduled(with_pvc(DEFAULT_PVC_NAME, pod()))),
            expected_actions: vec![list(DEFAULT_NS), removed("default/pvc1")],
            ..Default::default()
        },
        Case {
            name: "deleted running Pod -> finalizer is removed",
            initial_pvcs: vec![dpvc()],
            deleted_pod: Some(with_status(POD_RUNNING, with_pvc(DEFAULT_PVC_NAME, pod()))),
            expected_actions: vec![list(DEFAULT_NS), removed("default/pvc1")],
            ..Default::default()
        },
        Case {
            name: "pod delete and create with same namespaced name seen as an update, old pod used deleted PVC -> finalizer is removed",
            initial_pvcs: vec![dpvc()],
            deleted_pod: Some(with_pvc(DEFAULT_PVC_NAME, pod())),
            updated_pod: Some(with_uid("uid2", pod())),
            expected_actions: vec![list(DEFAULT_NS), removed("default/pvc1")],
            ..Default::default()
        },
        Case {
            name: "pod delete and create with same namespaced name seen as an update, old pod used non-deleted PVC -> finalizer is not removed",
            initial_pvcs: vec![with_protection_finalizer(pvc())],
            deleted_pod: Some(with_pvc(DEFAULT_PVC_NAME, pod())),
            updated_pod: Some(with_uid("uid2", pod())),
            expected_actions: vec![],
            ..Default::default()
        },
        Case {
            name: "pod delete and create with same namespaced name seen as an update, both pods reference deleted PVC -> finalizer is not removed",
            initial_pvcs: vec![dpvc()],
            deleted_pod: Some(with_pvc(DEFAULT_PVC_NAME, pod())),
            updated_pod: Some(with_uid("uid2", with_pvc(DEFAULT_PVC_NAME, pod()))),
            expected_actions: vec![],
            ..Default::default()
        },
        Case {
            name: "pod update from unscheduled to scheduled, deleted PVC is referenced -> finalizer is not removed",
            initial_pvcs: vec![dpvc()],
            deleted_pod: Some(unscheduled(with_pvc(DEFAULT_PVC_NAME, pod()))),
            updated_pod: Some(with_pvc(DEFAULT_PVC_NAME, pod())),
            expected_actions: vec![],
            ..Default::default()
        },
    ];
    assert_eq!(cases.len(), 26);
    for case in &cases {
        assert_eq!(replay(case), case.expected_actions, "{}", case.name);
    }
}

// ---------------------------------------------------------------------------------------
// The writes
// ---------------------------------------------------------------------------------------

#[test]
fn finalizer_patches_carry_the_resource_version_and_touch_only_finalizers() {
    let mut claim = with_unused_condition("True", 100, with_protection_finalizer(pvc()));
    claim.metadata.resource_version = Some("42".into());
    claim.metadata.finalizers = Some(vec![
        "example.com/other".into(),
        PVC_PROTECTION_FINALIZER.into(),
        PVC_PROTECTION_FINALIZER.into(),
    ]);
    assert_eq!(
        remove_finalizer_patch(&claim.metadata, PVC_PROTECTION_FINALIZER),
        json!({"metadata": {"resourceVersion": "42", "finalizers": ["example.com/other"]}})
    );
    let mut fresh = pvc();
    fresh.metadata.resource_version = Some("7".into());
    assert_eq!(
        add_finalizer_patch(&fresh.metadata, PVC_PROTECTION_FINALIZER),
        json!({"metadata": {"resourceVersion": "7", "finalizers": [PVC_PROTECTION_FINALIZER]}})
    );
    fresh.metadata.finalizers = Some(vec!["example.com/other".into()]);
    assert_eq!(
        add_finalizer_patch(&fresh.metadata, PVC_PROTECTION_FINALIZER),
        json!({"metadata": {"resourceVersion": "7",
            "finalizers": ["example.com/other", PVC_PROTECTION_FINALIZER]}})
    );
}

// ---------------------------------------------------------------------------------------
// upstream pkg/controller/util/protectionutil/utils_test.go
// ---------------------------------------------------------------------------------------

const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";

/// upstream's pv() and pvc() of utils_test.go, as their metadata, with the deletion
/// timestamp and the finalizer set as each test sets them.
fn util_objects(deleted: bool, finalizer: bool) -> [(ObjectMeta, &'static str); 2] {
    let meta = |name: &str, namespace: Option<&str>, f: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        deletion_timestamp: deleted.then(zero_time),
        finalizers: finalizer.then(|| vec![f.to_owned()]),
        ..Default::default()
    };
    [
        (
            meta("pv1", None, PV_PROTECTION_FINALIZER),
            PV_PROTECTION_FINALIZER,
        ),
        (
            meta("pvc1", Some(DEFAULT_NS), PVC_PROTECTION_FINALIZER),
            PVC_PROTECTION_FINALIZER,
        ),
    ]
}

#[test]
fn protectionutil() {
    // (upstream test, deletion timestamp, finalizer, IsDeletionCandidate, NeedToAddFinalizer)
    let tests = [
        (
            "TestIsDeletionCandidateLackDeleteTimeAndFinalizer",
            false,
            false,
            Some(false),
            None,
        ),
        (
            "TestIsDeletionCandidateLackDeleteTime",
            false,
            true,
            Some(false),
            None,
        ),
        (
            "TestIsDeletionCandidateLackFinalizer",
            true,
            false,
            Some(false),
            None,
        ),
        (
            "TestIsDeletionCandidateSuccess",
            true,
            true,
            Some(true),
            None,
        ),
        (
            "TestNeedToAddFinalizerHasDeleteTimeAndFinalizer",
            true,
            true,
            None,
            Some(false),
        ),
        (
            "TestNeedToAddFinalizerHasDeleteTime",
            true,
            false,
            None,
            Some(false),
        ),
        (
            "TestNeedToAddFinalizerHasFinalizer",
            false,
            true,
            None,
            Some(false),
        ),
        (
            "TestNeedToAddFinalizerSuccess",
            false,
            false,
            None,
            Some(true),
        ),
    ];
    for (name, deleted, finalizer, candidate, need) in tests {
        for (meta, f) in util_objects(deleted, finalizer) {
            if let Some(want) = candidate {
                assert_eq!(
                    is_deletion_candidate(&meta, f),
                    want,
                    "{name} {:?}",
                    meta.name
                );
            }
            if let Some(want) = need {
                assert_eq!(
                    need_to_add_finalizer(&meta, f),
                    want,
                    "{name} {:?}",
                    meta.name
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pod usage details (not in upstream's table)
// ---------------------------------------------------------------------------------------

fn shut_down(mut pod: Pod, grace: i64) -> Pod {
    pod.metadata.deletion_timestamp = Some(zero_time());
    pod.metadata.deletion_grace_period_seconds = Some(grace);
    pod
}

/// Generic ephemeral volumes: claim `<pod>-<volume>`, used only if the claim is controlled
/// by the pod and the pod is not shut down; a `claimName` reference ignores shutdown.
#[test]
fn pod_uses_pvc_for_deletion_with_ephemeral_volumes() {
    let claim = controlled_by(DEFAULT_UID, pvc_with_config("pod1-data", DEFAULT_NS));
    let eph = with_ephemeral("data", pod());
    let cases: Vec<(&str, Pod, PersistentVolumeClaim, bool)> = vec![
        ("ephemeral, owned", eph.clone(), claim.clone(), true),
        (
            "ephemeral, claim not controlled by the pod",
            eph.clone(),
            pvc_with_config("pod1-data", DEFAULT_NS),
            false,
        ),
        (
            "ephemeral, claim controlled by another pod",
            eph.clone(),
            controlled_by("uid2", pvc_with_config("pod1-data", DEFAULT_NS)),
            false,
        ),
        (
            "ephemeral, claim of another name",
            eph.clone(),
            controlled_by(DEFAULT_UID, pvc_with_config("pod1-other", DEFAULT_NS)),
            false,
        ),
        (
            "ephemeral, pod shut down (deleted, grace 0)",
            shut_down(eph.clone(), 0),
            claim.clone(),
            false,
        ),
        (
            "ephemeral, pod deleting with grace left",
            shut_down(eph.clone(), 30),
            claim.clone(),
            true,
        ),
        ("ephemeral, pod unscheduled", unscheduled(eph), claim, false),
        (
            "claimName, pod shut down still counts",
            shut_down(with_pvc(DEFAULT_PVC_NAME, pod()), 0),
            pvc(),
            true,
        ),
        (
            "claimName, terminated pod still counts",
            with_status(POD_SUCCEEDED, with_pvc(DEFAULT_PVC_NAME, pod())),
            pvc(),
            true,
        ),
    ];
    for (name, pod, claim, want) in cases {
        assert_eq!(pod_uses_pvc_for_deletion(&pod, &claim), want, "{name}");
        let deleting = deleted(with_protection_finalizer(claim.clone()));
        let decision = process_pvc(&deleting, &[&pod], None);
        assert_eq!(
            decision,
            if want {
                Decision::KeepFinalizer {
                    pod: "default/pod1".into(),
                }
            } else {
                Decision::AskApiServer
            },
            "{name}"
        );
    }
}

#[test]
fn live_list_decides_once_the_cache_does_not() {
    let deleting = deleted(with_protection_finalizer(pvc()));
    assert_eq!(
        process_pvc(&deleting, &[], Some(&[with_pvc(DEFAULT_PVC_NAME, pod())])),
        Decision::KeepFinalizer {
            pod: "default/pod1".into()
        }
    );
    assert_eq!(
        process_pvc(&deleting, &[], Some(&[])),
        Decision::RemoveFinalizer
    );
    // A claim being deleted without the finalizer is none of this controller's business.
    assert_eq!(process_pvc(&deleted(pvc()), &[], None), Decision::Nothing);
}

#[test]
fn index_keys_and_queued_claims_include_ephemeral_claims() {
    let p = with_ephemeral("data", with_empty_dir(with_pvc(DEFAULT_PVC_NAME, pod())));
    let keys = vec![
        ObjectKey::new(Some(DEFAULT_NS), DEFAULT_PVC_NAME),
        ObjectKey::new(Some(DEFAULT_NS), "pod1-data"),
    ];
    assert_eq!(pod_pvc_index_keys(&p), keys);
    assert_eq!(enqueue_pvcs(&p, true), keys);
    assert_eq!(enqueue_pvcs(&p, false), vec![], "scheduled, not terminated");
    assert_eq!(enqueue_pvcs(&unscheduled(p.clone()), false), keys);
    assert_eq!(enqueue_pvcs(&with_status(POD_FAILED, p), false), keys);
}

fn container(state: Option<ContainerState>) -> ContainerStatus {
    ContainerStatus {
        name: "c".into(),
        state,
        ..Default::default()
    }
}

/// upstream volumeutil.IsPodTerminated.
#[test]
fn is_pod_terminated_cases() {
    let running = Some(ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    });
    let terminated = Some(ContainerState {
        terminated: Some(ContainerStateTerminated::default()),
        ..Default::default()
    });
    let waiting = Some(ContainerState {
        waiting: Some(ContainerStateWaiting::default()),
        ..Default::default()
    });
    let deleting = |statuses: Vec<ContainerStatus>, init: Vec<ContainerStatus>| {
        let mut p = shut_down(with_status(POD_RUNNING, pod()), 30);
        let status = p.status.as_mut().unwrap();
        status.container_statuses = Some(statuses);
        status.init_container_statuses = Some(init);
        p
    };
    let cases = vec![
        ("pending", pod(), false),
        ("running", with_status(POD_RUNNING, pod()), false),
        ("succeeded", with_status(POD_SUCCEEDED, pod()), true),
        ("failed", with_status(POD_FAILED, pod()), true),
        ("deleted, no statuses", deleting(vec![], vec![]), true),
        (
            "deleted, containers terminated or waiting",
            deleting(
                vec![container(terminated.clone()), container(waiting)],
                vec![],
            ),
            true,
        ),
        (
            "deleted, a container running",
            deleting(
                vec![container(terminated.clone()), container(running.clone())],
                vec![],
            ),
            false,
        ),
        (
            "deleted, an init container running",
            deleting(vec![container(terminated)], vec![container(running)]),
            false,
        ),
        (
            "deleted, a container with no state (counts as running)",
            deleting(vec![container(None)], vec![]),
            false,
        ),
    ];
    for (name, pod, want) in cases {
        assert_eq!(is_pod_terminated(&pod), want, "{name}");
    }
}
