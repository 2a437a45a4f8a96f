//! The ephemeral volume controller's pure decision core (upstream
//! `pkg/controller/volume/ephemeral/controller.go`: `enqueuePod`, `onPVCDelete`,
//! `syncHandler` and `handleVolume`), over snapshots of the informer caches.
//!
//! - [`pod_needs_sync`]: which pods an event queues (upstream `enqueuePod`'s filter);
//! - [`pods_for_deleted_claim`]: the pods a deleted claim queues (upstream `onPVCDelete`
//!   over the pod informer's `PodPVCIndex`, here
//!   [`crate::pvcprotection::protection::pod_pvc_index_keys`]);
//! - [`handle_volume`]: what one volume of a pod needs, given its claim in the cache;
//! - [`volume_claim`]: the claim made from a volume's template;
//! - [`sync_handler`]: upstream's loop over a pod's volumes as a list of [`Step`]s, which
//!   the shell carries out in order, stopping at the first failure as upstream does.
use std::borrow::Borrow;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimTemplate, Volume};
use kube::Resource;
use rekube_crds::pod_refs::{ephemeral_volume_claim_name, volume_is_for_pod};
use rekube_crds::{PersistentVolumeClaim, Pod};

use crate::manager::informer::ObjectKey;
use crate::pvcprotection::protection::pod_pvc_index_keys;
use crate::util::claim::new_controller_ref;

/// The controller's name (upstream's `--controllers` name): its queue, metrics and logs.
pub const CONTROLLER_NAME: &str = "ephemeral-volume-controller";

/// upstream's event source (`v1.EventSource{Component: "ephemeral_volume"}`).
pub const EVENT_SOURCE: &str = "ephemeral_volume";

/// upstream `events.FailedBinding` (pkg/controller/volume/events), the reason of every
/// event this controller records.
pub const FAILED_BINDING: &str = crate::pvcontroller::pv_controller::events::FAILED_BINDING;

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// Whether an event about `pod` queues it (upstream `enqueuePod`): not being deleted, and
/// with at least one generic ephemeral volume.
pub fn pod_needs_sync(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && volumes(pod).iter().any(|v| v.ephemeral.is_some())
}

/// The pods to queue when `claim` is deleted (upstream `onPVCDelete`): those of the
/// informer cache that use it by name, through the pod-to-claim index keys, and that
/// [`pod_needs_sync`]. A deleted claim of a live pod's ephemeral volume is made again.
pub fn pods_for_deleted_claim(claim: &PersistentVolumeClaim, pods: &[&Pod]) -> Vec<ObjectKey> {
    let key = ObjectKey::of(claim);
    pods.iter()
        .copied()
        .filter(|p| pod_pvc_index_keys(p).contains(&key))
        .filter(|p| pod_needs_sync(p))
        .map(ObjectKey::of)
        .collect()
}

/// The claim of `pod`'s generic ephemeral volume `volume` (upstream `handleVolume`'s
/// PersistentVolumeClaim): named `<pod>-<volume>`, in the pod's namespace, controlled by
/// the pod (apiVersion rekube.io/v1, kind Pod, `controller` and `blockOwnerDeletion`
/// set, so that the garbage collector deletes it with the pod), with the template's labels,
/// annotations and spec. `None` for a volume that is not ephemeral. A template left out
/// (the API requires it) is an empty one.
pub fn volume_claim(pod: &Pod, volume: &Volume) -> Option<PersistentVolumeClaim> {
    let ephemeral = volume.ephemeral.as_ref()?;
    let template = ephemeral
        .volume_claim_template
        .clone()
        .unwrap_or_else(PersistentVolumeClaimTemplate::default);
    let template_meta = template.metadata.unwrap_or_default();
    let owner = new_controller_ref(&pod.metadata, &Pod::api_version(&()), &Pod::kind(&()));
    let mut claim = PersistentVolumeClaim::default();
    claim.metadata.name = Some(ephemeral_volume_claim_name(pod_name(pod), &volume.name));
    claim.metadata.namespace = pod.metadata.namespace.clone();
    claim.metadata.owner_references = Some(vec![owner]);
    claim.metadata.labels = template_meta.labels;
    claim.metadata.annotations = template_meta.annotations;
    claim.spec = Some(template.spec);
    Some(claim)
}

/// What one volume of a pod needs (upstream `handleVolume`).
#[derive(Clone, Debug, PartialEq)]
pub enum VolumeAction {
    /// Not a generic ephemeral volume: nothing.
    NotEphemeral,
    /// Its claim exists and was created for the pod: nothing more to do.
    AlreadyCreated,
    /// Its claim is missing: create this one.
    Create(Box<PersistentVolumeClaim>),
    /// A claim of its name exists and is not the pod's (upstream `VolumeIsForPod`'s
    /// error): the pod cannot use it, and it is left alone.
    NotForPod(String),
}

/// upstream `handleVolume`: `existing` is the cached claim named
/// [`ephemeral_volume_claim_name`] in the pod's namespace, if any.
pub fn handle_volume(
    pod: &Pod,
    volume: &Volume,
    existing: Option<&PersistentVolumeClaim>,
) -> VolumeAction {
    let Some(claim) = volume_claim(pod, volume) else {
        return VolumeAction::NotEphemeral;
    };
    match existing {
        Some(existing) => match volume_is_for_pod(pod, existing) {
            Ok(()) => VolumeAction::AlreadyCreated,
            Err(message) => VolumeAction::NotForPod(message),
        },
        None => VolumeAction::Create(Box::new(claim)),
    }
}

/// One write, or the failure, of a pod's sync.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Create the claim of ephemeral volume `volume`.
    Create {
        volume: String,
        claim: Box<PersistentVolumeClaim>,
    },
    /// The claim of ephemeral volume `volume` is not the pod's: the sync fails with this
    /// message (and records it as an event), the volumes after it are not looked at.
    NotForPod { volume: String, message: String },
}

/// upstream `syncHandler` over the caches: nothing for a pod gone or being deleted; else
/// each volume in order ([`handle_volume`], its claim looked up with `cached_claim` by
/// name in the pod's namespace), the claims to create, up to the first volume whose claim
/// is not the pod's. The shell creates them in order and stops at the first failure: the
/// pod is synced again after a backoff, and the claims already made are then found.
pub fn sync_handler<C, F>(pod: Option<&Pod>, cached_claim: F) -> Vec<Step>
where
    C: Borrow<PersistentVolumeClaim>,
    F: Fn(&str) -> Option<C>,
{
    let Some(pod) = pod else { return Vec::new() };
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let mut steps = Vec::new();
    for volume in volumes(pod) {
        if volume.ephemeral.is_none() {
            continue;
        }
        let existing = cached_claim(&ephemeral_volume_claim_name(pod_name(pod), &volume.name));
        match handle_volume(pod, volume, existing.as_ref().map(Borrow::borrow)) {
            VolumeAction::NotEphemeral | VolumeAction::AlreadyCreated => {}
            VolumeAction::Create(claim) => steps.push(Step::Create {
                volume: volume.name.clone(),
                claim,
            }),
            VolumeAction::NotForPod(message) => {
                steps.push(Step::NotForPod {
                    volume: volume.name.clone(),
                    message,
                });
                break;
            }
        }
    }
    steps
}

/// The note of the FailedBinding event about the pod (upstream's `"ephemeral volume %s:
/// %v"`).
pub fn event_message(volume: &str, cause: &str) -> String {
    format!("ephemeral volume {volume}: {cause}")
}

/// upstream handleVolume's create error (`"create PVC %s: %v"`).
pub fn create_failed_message(claim: &str, cause: &str) -> String {
    format!("create PVC {claim}: {cause}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        EmptyDirVolumeSource, EphemeralVolumeSource, PersistentVolumeClaimSpec,
        PersistentVolumeClaimVolumeSource, PodSpec, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    use super::*;

    // upstream's fixtures (controller_test.go).
    const TEST_POD_NAME: &str = "test-pod";
    const TEST_NAMESPACE: &str = "my-namespace";
    const TEST_POD_UID: &str = "uidpod1";
    const OTHER_NAMESPACE: &str = "not-my-namespace";
    const EPHEMERAL_VOLUME_NAME: &str = "ephemeral-volume";

    fn make_pod(name: &str, namespace: &str, uid: &str, volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: (!volumes.is_empty()).then_some(volumes),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn make_ephemeral_volume(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ephemeral: Some(EphemeralVolumeSource {
                volume_claim_template: Some(PersistentVolumeClaimTemplate::default()),
            }),
            ..Default::default()
        }
    }

    fn make_owner_reference(pod: &Pod, is_controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "rekube.io/v1".into(),
            kind: "Pod".into(),
            name: pod.metadata.name.clone().unwrap(),
            uid: pod.metadata.uid.clone().unwrap(),
            controller: Some(is_controller),
            block_owner_deletion: Some(true),
        }
    }

    fn make_pvc(
        name: &str,
        namespace: &str,
        owner: Option<OwnerReference>,
    ) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec::default()),
            status: None,
        }
    }

    fn test_pod() -> Pod {
        make_pod(TEST_POD_NAME, TEST_NAMESPACE, TEST_POD_UID, vec![])
    }

    fn test_pod_with_ephemeral() -> Pod {
        make_pod(
            TEST_POD_NAME,
            TEST_NAMESPACE,
            TEST_POD_UID,
            vec![make_ephemeral_volume(EPHEMERAL_VOLUME_NAME)],
        )
    }

    fn claim_name() -> String {
        format!("{TEST_POD_NAME}-{EPHEMERAL_VOLUME_NAME}")
    }

    fn test_pod_ephemeral_claim() -> PersistentVolumeClaim {
        make_pvc(
            &claim_name(),
            TEST_NAMESPACE,
            Some(make_owner_reference(&test_pod_with_ephemeral(), true)),
        )
    }

    fn conflicting_claim() -> PersistentVolumeClaim {
        make_pvc(&claim_name(), TEST_NAMESPACE, None)
    }

    fn other_namespace_claim() -> PersistentVolumeClaim {
        make_pvc(&claim_name(), OTHER_NAMESPACE, None)
    }

    fn deleted(mut pod: Pod) -> Pod {
        pod.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        pod
    }

    /// upstream's expectedMetrics: `ephemeral_volume_controller_create_total` and
    /// `create_failures_total`.
    #[derive(Debug, Default, PartialEq)]
    struct ExpectedMetrics {
        num_created: usize,
        num_failures: usize,
    }

    /// The fake clientset of upstream's test: the claims of every namespace, and a
    /// reactor failing every create (upstream's "fake conflict").
    struct FakeApi {
        pvcs: Vec<PersistentVolumeClaim>,
        fail_creates: bool,
        metrics: ExpectedMetrics,
    }

    impl FakeApi {
        fn get(&self, namespace: &str, name: &str) -> Option<PersistentVolumeClaim> {
            self.pvcs
                .iter()
                .find(|c| {
                    c.metadata.namespace.as_deref() == Some(namespace)
                        && c.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }

        /// What the shell does with the steps: the creates in order (each counted as an
        /// attempt, a failed one as a failure), stopping at the first failure.
        fn sync(&mut self, pods: &[Pod], pod_key: &ObjectKey) -> Result<(), String> {
            let pod = pods.iter().find(|p| ObjectKey::of(*p) == *pod_key);
            let namespace = pod_key.namespace.clone().unwrap_or_default();
            let steps = sync_handler(pod, |name| self.get(&namespace, name));
            for step in steps {
                match step {
                    Step::Create { volume, claim } => {
                        self.metrics.num_created += 1;
                        if self.fail_creates {
                            self.metrics.num_failures += 1;
                            let name = claim.metadata.name.unwrap_or_default();
                            return Err(event_message(
                                &volume,
                                &create_failed_message(&name, "fake conflict"),
                            ));
                        }
                        self.pvcs.push(*claim);
                    }
                    Step::NotForPod { volume, message } => {
                        return Err(event_message(&volume, &message));
                    }
                }
            }
            Ok(())
        }
    }

    fn sorted(mut pvcs: Vec<PersistentVolumeClaim>) -> Vec<PersistentVolumeClaim> {
        pvcs.sort_by_key(|c| (c.metadata.namespace.clone(), c.metadata.name.clone()));
        pvcs
    }

    /// upstream TestSyncHandler, all 7 cases: the pod key synced against informers and a
    /// fake clientset holding `pods` and `pvcs`; the claims afterwards, the error and the
    /// create metrics compared.
    #[test]
    fn sync_handler_table() {
        struct Case {
            name: &'static str,
            pvcs: Vec<PersistentVolumeClaim>,
            pods: Vec<Pod>,
            expected_pvcs: Vec<PersistentVolumeClaim>,
            expected_error: bool,
            expected_metrics: ExpectedMetrics,
        }
        let metrics = |num_created, num_failures| ExpectedMetrics {
            num_created,
            num_failures,
        };
        let cases = vec![
            Case {
                name: "create",
                pods: vec![test_pod_with_ephemeral()],
                pvcs: vec![],
                expected_pvcs: vec![test_pod_ephemeral_claim()],
                expected_error: false,
                expected_metrics: metrics(1, 0),
            },
            Case {
                name: "no-such-pod",
                pods: vec![],
                pvcs: vec![],
                expected_pvcs: vec![],
                expected_error: false,
                expected_metrics: metrics(0, 0),
            },
            Case {
                name: "pod-deleted",
                pods: vec![deleted(test_pod_with_ephemeral())],
                pvcs: vec![],
                expected_pvcs: vec![],
                expected_error: false,
                expected_metrics: metrics(0, 0),
            },
            Case {
                name: "no-volumes",
                pods: vec![test_pod()],
                pvcs: vec![],
                expected_pvcs: vec![],
                expected_error: false,
                expected_metrics: metrics(0, 0),
            },
            Case {
                name: "create-with-other-PVC",
                pods: vec![test_pod_with_ephemeral()],
                pvcs: vec![other_namespace_claim()],
                expected_pvcs: vec![other_namespace_claim(), test_pod_ephemeral_claim()],
                expected_error: false,
                expected_metrics: metrics(1, 0),
            },
            Case {
                name: "wrong-PVC-owner",
                pods: vec![test_pod_with_ephemeral()],
                pvcs: vec![conflicting_claim()],
                expected_pvcs: vec![conflicting_claim()],
                expected_error: true,
                expected_metrics: metrics(0, 0),
            },
            Case {
                name: "create-conflict",
                pods: vec![test_pod_with_ephemeral()],
                pvcs: vec![],
                expected_pvcs: vec![],
                expected_error: true,
                expected_metrics: metrics(1, 1),
            },
        ];
        // upstream's podKey() always keys testPodWithEphemeral.
        let pod_key = ObjectKey::of(&test_pod_with_ephemeral());
        for tc in cases {
            let mut api = FakeApi {
                pvcs: tc.pvcs.clone(),
                fail_creates: tc.expected_metrics.num_failures > 0,
                metrics: ExpectedMetrics::default(),
            };
            let result = api.sync(&tc.pods, &pod_key);
            assert_eq!(
                result.is_err(),
                tc.expected_error,
                "{}: {result:?}",
                tc.name
            );
            assert_eq!(
                sorted(api.pvcs),
                sorted(tc.expected_pvcs),
                "{}: the claims",
                tc.name
            );
            assert_eq!(api.metrics, tc.expected_metrics, "{}: metrics", tc.name);
        }
    }

    /// The event of upstream's wrong-PVC-owner case: `VolumeIsForPod`'s message behind the
    /// volume's name.
    #[test]
    fn wrong_owner_names_the_claim_and_the_pod() {
        let mut api = FakeApi {
            pvcs: vec![conflicting_claim()],
            fail_creates: false,
            metrics: ExpectedMetrics::default(),
        };
        let pod = test_pod_with_ephemeral();
        assert_eq!(
            api.sync(std::slice::from_ref(&pod), &ObjectKey::of(&pod)),
            Err(
                "ephemeral volume ephemeral-volume: PVC my-namespace/test-pod-ephemeral-volume \
                 was not created for pod my-namespace/test-pod (pod is not owner)"
                    .into()
            )
        );
        // Owned by the pod but not as its controller: not the pod's either.
        let mut not_controller = conflicting_claim();
        not_controller.metadata.owner_references = Some(vec![make_owner_reference(&pod, false)]);
        assert!(matches!(
            handle_volume(&pod, &volumes(&pod)[0], Some(&not_controller)),
            VolumeAction::NotForPod(_)
        ));
        // Controlled by another pod of the same name (a pod deleted and made again).
        let mut other_uid = test_pod_ephemeral_claim();
        other_uid.metadata.owner_references.as_mut().unwrap()[0].uid = "uidpod0".into();
        assert!(matches!(
            handle_volume(&pod, &volumes(&pod)[0], Some(&other_uid)),
            VolumeAction::NotForPod(_)
        ));
        assert_eq!(
            handle_volume(&pod, &volumes(&pod)[0], Some(&test_pod_ephemeral_claim())),
            VolumeAction::AlreadyCreated
        );
    }

    /// The claim made from the template: its labels, annotations and spec, the pod's
    /// namespace, `<pod>-<volume>`, the pod as controller; nothing else.
    #[test]
    fn claim_from_template() {
        let spec = PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some("fast".into()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity("1Gi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let volume = Volume {
            name: "scratch".into(),
            ephemeral: Some(EphemeralVolumeSource {
                volume_claim_template: Some(PersistentVolumeClaimTemplate {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "db".into())])),
                        annotations: Some(BTreeMap::from([("note".into(), "x".into())])),
                        // Not copied: upstream takes only labels and annotations.
                        name: Some("ignored".into()),
                        finalizers: Some(vec!["example.com/ignored".into()]),
                        ..Default::default()
                    }),
                    spec: spec.clone(),
                }),
            }),
            ..Default::default()
        };
        let pod = make_pod("web-0", "ns", "uid-web-0", vec![volume.clone()]);
        let claim = volume_claim(&pod, &volume).unwrap();
        let want = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("web-0-scratch".into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([("app".into(), "db".into())])),
                annotations: Some(BTreeMap::from([("note".into(), "x".into())])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "rekube.io/v1".into(),
                    kind: "Pod".into(),
                    name: "web-0".into(),
                    uid: "uid-web-0".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        };
        assert_eq!(claim, want);
        // The claim made is one the pod accepts as its own.
        assert_eq!(
            handle_volume(&pod, &volume, Some(&claim)),
            VolumeAction::AlreadyCreated
        );
        // A template left out: an empty claim spec.
        let bare = Volume {
            name: "bare".into(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Default::default()
        };
        assert_eq!(
            volume_claim(&pod, &bare).unwrap().spec,
            Some(PersistentVolumeClaimSpec::default())
        );
        assert_eq!(volume_claim(&pod, &empty_dir("cache")), None);
    }

    fn empty_dir(name: &str) -> Volume {
        Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }
    }

    fn claim_volume(name: &str, claim: &str) -> Volume {
        Volume {
            name: name.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Several volumes: the others skipped, claims already there kept, the missing ones
    /// created in the pod's order, and the loop stopping at the first claim that is not
    /// the pod's (the volumes after it wait for the next sync), as upstream's loop does.
    #[test]
    fn volumes_in_order_up_to_the_first_conflict() {
        let pod = make_pod(
            "p",
            "ns",
            "uid-p",
            vec![
                empty_dir("cache"),
                make_ephemeral_volume("a"),
                claim_volume("data", "data"),
                make_ephemeral_volume("b"),
                make_ephemeral_volume("c"),
                make_ephemeral_volume("d"),
            ],
        );
        let owned_b = volume_claim(&pod, &volumes(&pod)[3]).unwrap();
        let foreign_c = make_pvc("p-c", "ns", None);
        let cache = [owned_b, foreign_c];
        let lookup = |name: &str| {
            cache
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
        };
        let steps = sync_handler(Some(&pod), lookup);
        let summary: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Create { volume, claim } => {
                    format!(
                        "create {volume} {}",
                        claim.metadata.name.as_deref().unwrap()
                    )
                }
                Step::NotForPod { volume, .. } => format!("not for pod {volume}"),
            })
            .collect();
        assert_eq!(summary, ["create a p-a", "not for pod c"]);
        // Only the claim names of ephemeral volumes are looked up.
        let asked = std::cell::RefCell::new(Vec::new());
        sync_handler(Some(&pod), |name: &str| {
            asked.borrow_mut().push(name.to_string());
            None::<PersistentVolumeClaim>
        });
        assert_eq!(asked.into_inner(), ["p-a", "p-b", "p-c", "p-d"]);
    }

    /// upstream enqueuePod's filter.
    #[test]
    fn pods_queued() {
        assert!(pod_needs_sync(&test_pod_with_ephemeral()));
        assert!(!pod_needs_sync(&test_pod()));
        assert!(!pod_needs_sync(&deleted(test_pod_with_ephemeral())));
        let only_claims = make_pod("p", "ns", "u", vec![claim_volume("data", "data")]);
        assert!(!pod_needs_sync(&only_claims));
        let no_spec = Pod {
            spec: None,
            ..test_pod()
        };
        assert!(!pod_needs_sync(&no_spec));
    }

    /// upstream onPVCDelete: the pods whose index keys hold the claim's, filtered by
    /// enqueuePod.
    #[test]
    fn deleted_claim_queues_its_pods() {
        let owner = test_pod_with_ephemeral();
        let same_name_elsewhere = make_pod(
            TEST_POD_NAME,
            OTHER_NAMESPACE,
            "uid-other",
            vec![make_ephemeral_volume(EPHEMERAL_VOLUME_NAME)],
        );
        // Refers to the claim by name and has an ephemeral volume of its own.
        let by_name = make_pod(
            "by-name",
            TEST_NAMESPACE,
            "uid-by-name",
            vec![
                claim_volume("data", &claim_name()),
                make_ephemeral_volume("scratch"),
            ],
        );
        // Refers to it by name, no ephemeral volume: enqueuePod drops it.
        let by_name_only = make_pod(
            "by-name-only",
            TEST_NAMESPACE,
            "uid-by-name-only",
            vec![claim_volume("data", &claim_name())],
        );
        let deleting = Pod {
            metadata: ObjectMeta {
                name: Some("deleting".into()),
                ..deleted(by_name.clone()).metadata
            },
            ..by_name.clone()
        };
        let pods = [
            &owner,
            &same_name_elsewhere,
            &by_name,
            &by_name_only,
            &deleting,
        ];
        assert_eq!(
            pods_for_deleted_claim(&test_pod_ephemeral_claim(), &pods),
            vec![
                ObjectKey::new(Some(TEST_NAMESPACE), TEST_POD_NAME),
                ObjectKey::new(Some(TEST_NAMESPACE), "by-name"),
            ]
        );
        assert_eq!(
            pods_for_deleted_claim(&make_pvc("unused", TEST_NAMESPACE, None), &pods),
            Vec::<ObjectKey>::new()
        );
    }
}
