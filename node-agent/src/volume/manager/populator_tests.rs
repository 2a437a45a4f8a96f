//! Ported from kubernetes v1.36.3 pkg/kubelet/volumemanager/populator/
//! desired_state_of_world_populator_test.go, the populator's decisions over rekube's
//! [`PodSource`] and the desired and actual states (upstream's fake pod manager and pod
//! state provider are the `PodSource` the pod workers feed: a pod is "terminating" when
//! deleted or finished, "removed" once its worker stopped its containers,
//! `pod_terminated`; the fake API client is [`FakeReader`]; the fake plugin's volumes are
//! local PersistentVolumes, CSI ones where the kind matters). 18 of its 36 cases:
//!
//! - `TestFindAndAddNewPods_WithDifferentConditions` (6/6; one row differs by design, see
//!   the test), `_WithReprocessPodAndVolumeRetrievalError` (1/1, retried after
//!   [`PROCESS_RETRY`] where upstream waits for the next `ReprocessPod`, as
//!   docs/volumes.md says), `_WithVolumeRetrievalError` (1/1),
//!   `TestFindAndAddNewPods_FindAndRemoveDeletedPods` (1/1),
//!   `TestFindAndRemoveDeletedPodsWithActualState` (1/1),
//!   `TestFindAndRemoveDeletedPodsWithUncertain` (1/1), `TestEphemeralVolumeOwnerCheck`
//!   (1/1), `TestFindAndAddNewPods_FindAndRemoveDeletedPods_Valid_Block_VolumeDevices`
//!   (1/1), `TestCheckVolumeFSResize` (5/6: the populator's part, the expansion facts it
//!   records; its Block row expects none, as rekube does not expand Block volumes on the
//!   node (docs/volumes.md); not: "not mounted", decided by the shell at mount).
//!
//! Not here: `TestCreateVolumeSpec_Valid_File_VolumeMounts`, `_Valid_Nil_VolumeMounts`,
//! `_Valid_Block_VolumeDevices`, `_Invalid_File_VolumeDevices`,
//! `_Invalid_Block_VolumeMounts` (5) are `volume::claim::tests`'
//! `volume_specs_of_bound_volumes`; `TestFindAndRemoveNonattachableVolumes` (1): the
//! desired state records no attachability (a CSI volume's is read from its CSIDriver at
//! each mount, `attach::attach_required`); `TestCheckVolumeSELinux` (11): no SELinux.
//!
//! And rekube's own `reprocess_pod`: the remount marks of `ReprocessPod` (upstream tests
//! them through its reconciler's fake plugin only).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};
use serde_json::{Value, json};

use super::*;
use crate::volume::manager::actual_state_of_world::MountedVolume;
use crate::volume::manager::desired_state_of_world::{VolumeToMount, unique_volume_name};
use crate::volume::manager::reconciler::{Operation, reconcile};
use crate::volume::manager::{ObjectReader, VolumeManager, expand};
use crate::volume::pod_dirs::{LOCAL_PLUGIN, PodDirs};

/// The fake API client: claims by namespace and name, volumes by name; an empty one
/// finds nothing (upstream's `pluginPVOmittingClient`).
#[derive(Default)]
pub(super) struct FakeReader {
    claims: BTreeMap<(String, String), PersistentVolumeClaim>,
    volumes: BTreeMap<String, PersistentVolume>,
}

impl FakeReader {
    fn with(pv: PersistentVolume, pvc: PersistentVolumeClaim) -> Self {
        let mut r = FakeReader::default();
        r.claims.insert(
            (
                pvc.metadata.namespace.clone().unwrap_or_default(),
                pvc.metadata.name.clone().unwrap_or_default(),
            ),
            pvc,
        );
        r.volumes
            .insert(pv.metadata.name.clone().unwrap_or_default(), pv);
        r
    }
}

impl ObjectReader for FakeReader {
    async fn config_map(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::ConfigMap>, String> {
        Ok(None)
    }
    async fn secret(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::Secret>, String> {
        Ok(None)
    }
    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, String> {
        Ok(self
            .claims
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }
    async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, String> {
        Ok(self.volumes.get(name).cloned())
    }
    async fn csi_driver(&self, _: &str) -> Result<Option<rekube_crds::CSIDriver>, String> {
        Ok(None)
    }
    async fn volume_attachment(
        &self,
        _: &str,
    ) -> Result<Option<rekube_crds::VolumeAttachment>, String> {
        Ok(None)
    }
    async fn volumes_attached(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

const NAMESPACE: &str = "dswp-test";

/// The populator with its states and pod source (`createDswpWithVolume`).
struct Dswp {
    _root: tempfile::TempDir,
    vm: VolumeManager,
    reader: FakeReader,
}

impl Dswp {
    /// `populatorLoop`: `findAndAddNewPods`, then `findAndRemoveDeletedPods`.
    async fn populator_loop(&self) {
        self.vm.populator_loop_func(&self.reader).await;
    }

    fn entry(&self, uid: &str) -> PodEntry {
        self.vm
            .pods
            .lock()
            .unwrap()
            .get(uid)
            .cloned()
            .expect("the pod is known")
    }

    /// `podPreviouslyProcessed`.
    fn pod_previously_processed(&self, uid: &str) -> bool {
        self.vm
            .pods
            .lock()
            .unwrap()
            .get(uid)
            .is_some_and(|e| e.processed)
    }

    fn dsw<T>(&self, f: impl FnOnce(&DesiredStateOfWorld) -> T) -> T {
        f(&self.vm.state.lock().unwrap().0)
    }

    /// `GetPods`: the pods with a volume in the desired state.
    fn pod_in_dsw(&self, uid: &str) -> bool {
        self.dsw(|dsw| dsw.pod_volumes(uid).next().is_some())
    }

    /// `reconcileASW`: every volume to mount recorded mounted, as the reconciler's
    /// operations record them.
    fn reconcile_asw(&self) {
        let mut state = self.vm.state.lock().unwrap();
        let (dsw, asw) = &mut *state;
        for v in dsw.volumes_to_mount() {
            asw.mark_volume_as_mounted(mounted(v));
        }
    }
}

fn mounted(v: &VolumeToMount) -> MountedVolume {
    MountedVolume {
        volume_name: v.volume_name.clone(),
        pod_uid: v.pod_uid.clone(),
        outer_volume_spec_name: v.outer_volume_spec_name.clone(),
        plugin_name: v.spec.plugin_name().to_string(),
        path: format!("/pods/{}", v.volume_name).into(),
        block: matches!(v.spec, VolumeSpec::Block { .. }),
        read_only: v.spec.read_only(),
        remount_required: false,
        device: None,
    }
}

/// A PersistentVolume bound to claim `claim`, of `spec` (its source, mode, capacity).
fn pv_of(name: &str, claim: &str, spec: Value) -> PersistentVolume {
    let mut s = json!({"claimRef": {"namespace": NAMESPACE, "name": claim,
                                    "uid": format!("{claim}-uid")}});
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": s})).unwrap()
}

/// A local PersistentVolume bound to claim `claim` (the fake plugin's volume).
fn pv(name: &str, claim: &str, mode: &str) -> PersistentVolume {
    let path = if mode == "Block" {
        "/dev/loop-dswp"
    } else {
        "/mnt/disks/dswp"
    };
    pv_of(
        name,
        claim,
        json!({"volumeMode": mode, "local": {"path": path}}),
    )
}

/// A bound claim.
fn pvc(name: &str, volume: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": format!("{name}-uid")},
        "spec": {"volumeName": volume},
        "status": {"phase": "Bound"}
    }))
    .unwrap()
}

fn create_dswp_with_volume(pv: PersistentVolume, pvc: PersistentVolumeClaim) -> Dswp {
    let root = tempfile::tempdir().unwrap();
    let vm = VolumeManager::new(
        PodDirs::new(root.path().join("pods")),
        Arc::new(crate::runtime::syscall::LinuxSyscall),
        BTreeMap::new(),
    );
    Dswp {
        _root: root,
        vm,
        reader: FakeReader::with(pv, pvc),
    }
}

/// `prepareDswpWithVolume`: a filesystem volume bound to claim `file-bound`.
fn prepare_dswp_with_volume() -> Dswp {
    create_dswp_with_volume(
        pv("dswp-test-volume-name", "file-bound", "Filesystem"),
        pvc("file-bound", "dswp-test-volume-name"),
    )
}

fn volume_mounts(volume: &str) -> Value {
    json!([{"name": "c", "volumeMounts": [{"name": volume, "mountPath": "/mnt"}]}])
}

fn volume_devices(volume: &str) -> Value {
    json!([{"name": "c", "volumeDevices": [{"name": volume, "devicePath": "/dev/sdb"}]}])
}

/// `createPodWithVolume`.
fn create_pod_with_volume(pod: &str, pv: &str, pvc: &str, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": pod, "namespace": NAMESPACE, "uid": format!("{pod}-uid")},
        "spec": {"volumes": [{"name": pv, "persistentVolumeClaim": {"claimName": pvc}}],
                 "containers": containers},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

/// `createEphemeralVolumeObjects`: the pod, its ephemeral volume's PersistentVolume and
/// claim (`<pod>-<volume>`), owned by the pod or not.
fn create_ephemeral_volume_objects(
    pod_name: &str,
    volume_name: &str,
    owned: bool,
    pv_spec: Value,
) -> (Pod, PersistentVolume, PersistentVolumeClaim) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod_name, "namespace": NAMESPACE, "uid": "dswp-test-pod-uid"},
        "spec": {"volumes": [{"name": volume_name,
                              "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}],
                 "containers": volume_mounts(volume_name)},
        "status": {"phase": "Running"}
    }))
    .unwrap();
    let claim = format!("{pod_name}-{volume_name}");
    let mut spec = json!({"capacity": {"storage": "1Gi"}});
    spec.as_object_mut()
        .unwrap()
        .extend(pv_spec.as_object().unwrap().clone());
    let pv = pv_of(volume_name, &claim, spec);
    let mut c = json!({
        "metadata": {"name": claim, "namespace": NAMESPACE, "uid": format!("{claim}-uid")},
        "spec": {"volumeName": volume_name, "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}
    });
    if owned {
        c["metadata"]["ownerReferences"] = json!([{"apiVersion": "rekube.io/v1", "kind": "Pod",
            "name": pod_name, "uid": "dswp-test-pod-uid", "controller": true}]);
    }
    (pod, pv, serde_json::from_value(c).unwrap())
}

fn terminated_phase(pod: &Pod, phase: &str) -> Pod {
    let mut p = pod.clone();
    p.status.get_or_insert_with(Default::default).phase = Some(phase.into());
    p
}

/// The volume `GetUniqueVolumeNameFromSpecWithPod` gives the pod's PersistentVolume.
fn expected_volume_name(pod: &Pod, plugin: &str, pv: &str) -> String {
    unique_volume_name(plugin, &uid_of(pod), pv)
}

fn verify_volume_exists(d: &Dswp, pod: &Pod, name: &str, exists: bool) {
    let uid = uid_of(pod);
    d.dsw(|dsw| {
        assert_eq!(dsw.volume_exists(name), exists, "VolumeExists({name:?})");
        assert_eq!(
            dsw.pod_volumes(&uid).any(|v| v.volume_name == name),
            exists,
            "PodExistsInVolume({uid:?}, {name:?})"
        );
        assert_eq!(
            dsw.volumes_to_mount().any(|v| v.volume_name == name),
            exists,
            "{name:?} in GetVolumesToMount"
        );
    });
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PodState {
    /// `ShouldPodRuntimeBeRemoved` (and so terminating): its containers are stopped.
    Removed,
    /// `ShouldPodContainersBeTerminating`: deleted, its containers may still run.
    Terminating,
    Other,
}

#[tokio::test]
async fn test_find_and_add_new_pods_with_different_conditions() {
    struct Case {
        desc: &'static str,
        has_added_pods: bool,
        pod_state: PodState,
        expected_found: bool,
    }
    let tests = [
        Case {
            desc: "HasAddedPods is false, ShouldPodRuntimeBeRemoved and ShouldPodContainerBeTerminating are both true",
            has_added_pods: false,
            pod_state: PodState::Removed,
            expected_found: false,
        },
        // Upstream: true. Upstream adds the volumes of a terminating pod before its first
        // full pass, so that its reconciler does not unmount what the pod's containers may
        // still use after a kubelet restart. rekube never adds a terminating pod's
        // volumes: its reconciler leaves alone the volumes of any pod whose containers may
        // run (`active`), checked below. Same outcome, another mechanism.
        Case {
            desc: "HasAddedPods is false, ShouldPodRuntimeBeRemoved is false, ShouldPodContainerBeTerminating is true",
            has_added_pods: false,
            pod_state: PodState::Terminating,
            expected_found: false,
        },
        Case {
            desc: "HasAddedPods is false, other condition",
            has_added_pods: false,
            pod_state: PodState::Other,
            expected_found: true,
        },
        Case {
            desc: "HasAddedPods is true, ShouldPodRuntimeBeRemoved is false, ShouldPodContainerBeTerminating is true",
            has_added_pods: true,
            pod_state: PodState::Terminating,
            expected_found: false,
        },
        Case {
            desc: "HasAddedPods is true, ShouldPodRuntimeBeRemoved and ShouldPodContainerBeTerminating are both true",
            has_added_pods: true,
            pod_state: PodState::Removed,
            expected_found: false,
        },
        Case {
            desc: "HasAddedPods is true, other condition",
            has_added_pods: true,
            pod_state: PodState::Other,
            expected_found: true,
        },
    ];
    for tc in tests {
        let d = prepare_dswp_with_volume();
        let mut pod = create_pod_with_volume(
            "dswp-test-pod",
            "dswp-test-volume-name",
            "file-bound",
            volume_mounts("dswp-test-volume-name"),
        );
        if tc.pod_state == PodState::Terminating {
            pod.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
                ));
        }
        let uid = uid_of(&pod);
        d.vm.observe_pod(&pod);
        if tc.pod_state == PodState::Removed {
            d.vm.pod_terminated(&uid);
        }
        d.vm.pods.lock().unwrap().has_added_pods = tc.has_added_pods;
        // A volume the pod had set up before (an earlier agent's, reconstructed).
        let name = expected_volume_name(&pod, LOCAL_PLUGIN, "dswp-test-volume-name");
        d.vm.state
            .lock()
            .unwrap()
            .1
            .mark_volume_mount_as_uncertain(MountedVolume {
                remount_required: true,
                ..mounted(&VolumeToMount {
                    volume_name: name.clone(),
                    pod_uid: uid.clone(),
                    outer_volume_spec_name: "dswp-test-volume-name".into(),
                    spec: VolumeSpec::Persistent {
                        pv_name: "dswp-test-volume-name".into(),
                        read_only: false,
                        source: crate::volume::plugins::PersistentSource::Local {
                            path: "/mnt/disks/dswp".into(),
                        },
                    },
                })
            });

        d.populator_loop().await;

        let found = d.pod_in_dsw(&uid);
        assert_eq!(found, tc.expected_found, "{}", tc.desc);
        // What upstream's adding protects: the volume of a pod whose containers may
        // still run is not unmounted, the desired state whole or not.
        let ops = {
            let active = d.vm.pods.lock().unwrap().active();
            let state = d.vm.state.lock().unwrap();
            reconcile(&state.0, &state.1, true, &active)
        };
        // A pod first seen terminating is not one of the source's pods: rekube's containers
        // do not survive an agent restart (they are removed at start), so nothing of it
        // runs and its volumes go.
        let unmounted = ops.iter().any(|op| matches!(op, Operation::Unmount(_)));
        assert_eq!(
            unmounted,
            tc.pod_state != PodState::Other,
            "{}: {ops:?}",
            tc.desc
        );
    }
}

#[tokio::test]
async fn test_find_and_add_new_pods_with_reprocess_pod_and_volume_retrieval_error() {
    let mut d = prepare_dswp_with_volume();
    let pod = create_pod_with_volume(
        "dswp-test-pod",
        "dswp-test-volume-name",
        "file-bound",
        volume_mounts("dswp-test-volume-name"),
    );
    d.vm.observe_pod(&pod);
    let uid = uid_of(&pod);

    d.populator_loop().await;
    assert!(
        d.pod_previously_processed(&uid),
        "failed to record that the volumes for the specified pod: {uid} have been processed by the populator"
    );

    d.reader = FakeReader::default();
    d.vm.pods
        .lock()
        .unwrap()
        .reprocess_pod(Arc::new(pod.clone()));
    d.populator_loop().await;

    // Upstream: processed (a pod seen once is not processed again before its next
    // ReprocessPod). rekube: processed again PROCESS_RETRY later (docs/volumes.md).
    let e = d.entry(&uid);
    assert!(!e.processed);
    assert!(e.retry_at.is_some());
    // What the earlier processing added stays wanted (AddPodToVolume is not undone).
    let name = expected_volume_name(&pod, LOCAL_PLUGIN, "dswp-test-volume-name");
    verify_volume_exists(&d, &pod, &name, true);
    assert_eq!(
        d.vm.state.lock().unwrap().0.pop_pod_errors(&uid),
        [(
            "dswp-test-volume-name".to_string(),
            "error processing PVC dswp-test/file-bound: failed to fetch PVC from API server: \
             persistentvolumeclaims.rekube.io \"file-bound\" not found"
                .to_string()
        )]
    );
}

#[tokio::test]
async fn test_find_and_add_new_pods_with_volume_retrieval_error() {
    let mut d = prepare_dswp_with_volume();
    d.reader = FakeReader::default();
    let pod = create_pod_with_volume(
        "dswp-test-pod",
        "dswp-test-volume-name",
        "file-bound",
        volume_mounts("dswp-test-volume-name"),
    );
    d.vm.observe_pod(&pod);
    let uid = uid_of(&pod);

    d.populator_loop().await;

    assert!(
        !d.pod_previously_processed(&uid),
        "the volumes for the specified pod: {uid} should not have been processed by the populator"
    );
    assert!(!d.pod_in_dsw(&uid));
    // Tried again at a later pass (upstream: at every pass, 100 ms).
    let retry_at = d.entry(&uid).retry_at.expect("retried");
    let source = d.vm.pods.lock().unwrap();
    assert!(source.pods_to_process(Instant::now()).is_empty());
    assert_eq!(source.pods_to_process(retry_at).len(), 1);
}

/// `prepareDSWPWithPodPV`: the pod processed, its volume in the desired state.
async fn prepare_dswp_with_pod_pv() -> (Dswp, Pod, String) {
    let d = prepare_dswp_with_volume();
    let pod = create_pod_with_volume(
        "dswp-test-pod",
        "dswp-test-volume-name",
        "file-bound",
        volume_mounts("dswp-test-volume-name"),
    );
    d.vm.observe_pod(&pod);
    d.populator_loop().await;
    assert!(d.pod_previously_processed(&uid_of(&pod)));
    let expected = expected_volume_name(&pod, LOCAL_PLUGIN, "dswp-test-volume-name");
    verify_volume_exists(&d, &pod, &expected, true);
    (d, pod, expected)
}

#[tokio::test]
async fn test_find_and_add_new_pods_find_and_remove_deleted_pods() {
    let (d, pod, expected_volume_name) = prepare_dswp_with_pod_pv().await;
    let uid = uid_of(&pod);

    // Let the pod be terminated. Upstream also removes it from the pod manager; a pod
    // leaves rekube's pod source only at its cleanup, after its containers stopped:
    // before, it is terminating.
    d.vm.observe_pod(&terminated_phase(&pod, "Failed"));
    d.populator_loop().await;
    assert!(
        d.pod_previously_processed(&uid),
        "pod should not been removed from desired state of world since pod state still thinks it exists"
    );
    verify_volume_exists(&d, &pod, &expected_volume_name, true);

    // The pod state is marked as removed: the pod and its volumes go.
    d.vm.pod_terminated(&uid);
    d.populator_loop().await;
    assert!(!d.pod_in_dsw(&uid));
    verify_volume_exists(&d, &pod, &expected_volume_name, false);

    // The pod worker may ask for the pod again (WaitForUnmount) after that: not added
    // again.
    d.vm.pods
        .lock()
        .unwrap()
        .reprocess_pod(Arc::new(pod.clone()));
    d.populator_loop().await;
    assert!(
        d.vm.pods
            .lock()
            .unwrap()
            .pods_to_process(Instant::now())
            .is_empty()
    );
    verify_volume_exists(&d, &pod, &expected_volume_name, false);
}

#[tokio::test]
async fn test_find_and_remove_deleted_pods_with_actual_state() {
    let (d, pod, expected_volume_name) = prepare_dswp_with_pod_pv().await;
    let uid = uid_of(&pod);

    // The pod terminated (Failed) but still known, its volume not in the actual state:
    // it stays.
    d.vm.observe_pod(&terminated_phase(&pod, "Failed"));
    d.populator_loop().await;
    verify_volume_exists(&d, &pod, &expected_volume_name, true);

    // In the actual state too: it still stays (rekube's removal does not look at the
    // actual state: a pod is removed once its containers are stopped, and its volumes
    // are torn down after whatever operation runs for it).
    d.reconcile_asw();
    d.populator_loop().await;
    verify_volume_exists(&d, &pod, &expected_volume_name, true);

    d.vm.pod_terminated(&uid);
    d.reconcile_asw();
    d.populator_loop().await;
    verify_volume_exists(&d, &pod, &expected_volume_name, false);
}

#[tokio::test]
async fn test_find_and_remove_deleted_pods_with_uncertain() {
    let (d, pod, expected_volume_name) = prepare_dswp_with_pod_pv().await;
    let uid = uid_of(&pod);

    d.vm.observe_pod(&terminated_phase(&pod, "Failed"));
    d.vm.pod_terminated(&uid);
    // In the actual state, and uncertain.
    d.reconcile_asw();
    {
        let mut state = d.vm.state.lock().unwrap();
        let m = state.1.get(&expected_volume_name).unwrap().clone();
        state.1.mark_volume_mount_as_uncertain(m);
    }

    d.populator_loop().await;
    assert!(!d.pod_in_dsw(&uid));
    verify_volume_exists(&d, &pod, &expected_volume_name, false);
}

#[tokio::test]
async fn test_ephemeral_volume_owner_check() {
    let (pod, pv, pvc) = create_ephemeral_volume_objects(
        "dswp-test-pod",
        "dswp-test-volume-name",
        false,
        json!({"local": {"path": "/mnt/disks/dswp"}}),
    );
    let d = create_dswp_with_volume(pv, pvc);
    d.vm.observe_pod(&pod);
    let uid = uid_of(&pod);

    d.populator_loop().await;

    assert!(
        !d.pod_previously_processed(&uid),
        "{uid} should not have been processed by the populator"
    );
    assert_eq!(
        d.vm.state.lock().unwrap().0.pop_pod_errors(&uid),
        [(
            "dswp-test-volume-name".to_string(),
            "PVC dswp-test/dswp-test-pod-dswp-test-volume-name was not created for pod \
             dswp-test/dswp-test-pod (pod is not owner)"
                .to_string()
        )]
    );
}

#[tokio::test]
async fn test_find_and_add_new_pods_find_and_remove_deleted_pods_valid_block_volume_devices() {
    let d = create_dswp_with_volume(
        pv("dswp-test-volume-name", "block-bound", "Block"),
        pvc("block-bound", "dswp-test-volume-name"),
    );
    let pod = create_pod_with_volume(
        "dswp-test-pod",
        "dswp-test-volume-name",
        "block-bound",
        volume_devices("dswp-test-volume-name"),
    );
    d.vm.observe_pod(&pod);
    let uid = uid_of(&pod);

    d.populator_loop().await;

    assert!(d.pod_previously_processed(&uid));
    let expected_volume_name = expected_volume_name(&pod, LOCAL_PLUGIN, "dswp-test-volume-name");
    verify_volume_exists(&d, &pod, &expected_volume_name, true);
    assert!(d.dsw(|dsw| {
        dsw.volumes_to_mount()
            .all(|v| matches!(v.spec, VolumeSpec::Block { .. }))
    }));

    // Let the pod be terminated, its containers stopped.
    d.vm.observe_pod(&terminated_phase(&pod, "Failed"));
    d.vm.pod_terminated(&uid);
    d.populator_loop().await;

    assert!(!d.pod_in_dsw(&uid));
    verify_volume_exists(&d, &pod, &expected_volume_name, false);
}

#[tokio::test]
async fn test_check_volume_fs_resize() {
    /// What the populator records of the volume's expansion: `(read_only, grown)`, where
    /// `grown` is `volumeNeedsExpansion` of the claim's capacity against the volume's.
    type Expansion = Option<(bool, bool)>;
    struct Case {
        name: &'static str,
        resize: bool,
        read_only_vol: bool,
        volume_mode: &'static str,
        volume_type: &'static str,
        want: Expansion,
    }
    let testcases = [
        Case {
            name: "no resize request for volume",
            resize: false,
            read_only_vol: false,
            volume_mode: "Filesystem",
            volume_type: "",
            want: Some((false, false)),
        },
        // Upstream marks nothing; rekube records the volume read-only and refuses its
        // NodeExpandVolume at mount (`expand::expand_volume_during_mount`).
        Case {
            name: "volume used as ReadOnly",
            resize: true,
            read_only_vol: true,
            volume_mode: "Filesystem",
            volume_type: "",
            want: Some((true, true)),
        },
        Case {
            name: "volume in ASW should be marked as fsResizeRequired",
            resize: true,
            read_only_vol: false,
            volume_mode: "Filesystem",
            volume_type: "",
            want: Some((false, true)),
        },
        // Upstream: marked fsResizeRequired. rekube does not expand Block volumes on the
        // node (docs/volumes.md, "Expanding a claim").
        Case {
            name: "block volume in ASW should be marked as fsResizeRequired",
            resize: true,
            read_only_vol: false,
            volume_mode: "Block",
            volume_type: "",
            want: None,
        },
        Case {
            name: "ephemeral volume in ASW should be marked as fsResizeRequired",
            resize: true,
            read_only_vol: false,
            volume_mode: "Filesystem",
            volume_type: "ephemeral",
            want: Some((false, true)),
        },
    ];
    for tc in testcases {
        let capacity = if tc.resize { "2Gi" } else { "1Gi" };
        let csi = json!({"csi": {"driver": "csi.rekube.io", "volumeHandle": "rk-1"},
                         "volumeMode": tc.volume_mode,
                         "capacity": {"storage": capacity}});
        let (pod, pv, pvc) = if tc.volume_type == "ephemeral" {
            create_ephemeral_volume_objects("dswp-test-pod", "dswp-test-volume-name", true, csi)
        } else {
            let containers = if tc.volume_mode == "Filesystem" {
                json!([{"name": "c", "volumeMounts": [{"name": "dswp-test-volume-name",
                    "mountPath": "/mnt", "readOnly": tc.read_only_vol}]}])
            } else {
                volume_devices("dswp-test-volume-name")
            };
            let mut pod = create_pod_with_volume(
                "dswp-test-pod",
                "dswp-test-volume-name",
                "file-bound",
                containers,
            );
            pod.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
                .persistent_volume_claim
                .as_mut()
                .unwrap()
                .read_only = Some(tc.read_only_vol);
            let v = pv_of("dswp-test-volume-name", "file-bound", csi);
            let mut c = pvc("file-bound", "dswp-test-volume-name");
            c.status.as_mut().unwrap().capacity =
                Some([("storage".to_string(), Quantity("1Gi".into()))].into());
            (pod, v, c)
        };
        let out = process_pod_volumes(&pod, &FakeReader::with(pv, pvc)).await;
        assert!(out.errors.is_empty(), "{}: {:?}", tc.name, out.errors);
        let got: Expansion = out.expansions.first().map(|(_, e)| {
            (
                e.read_only,
                expand::volume_needs_expansion(&expand::claim_capacity(&e.claim), &e.pv_capacity),
            )
        });
        assert_eq!(got, tc.want, "{}", tc.name);
    }
}

/// rekube's own: `ReprocessPod` (each sync) marks the pod's mounted configMap, secret,
/// downwardAPI and projected volumes to be set up again once every volume of the pod was
/// added (`MarkRemountRequired` after `processPodVolumes`), never its others; a pod
/// whose processing failed is marked nothing and keeps its errors until a processing
/// succeeds, which clears them (`PopPodErrors`).
#[tokio::test]
async fn reprocess_pod() {
    let mut d = prepare_dswp_with_volume();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "dswp-test-pod", "namespace": NAMESPACE, "uid": "dswp-test-pod-uid"},
        "spec": {"volumes": [
                    {"name": "dswp-test-volume-name", "persistentVolumeClaim": {"claimName": "file-bound"}},
                    {"name": "conf", "configMap": {"name": "conf"}},
                    {"name": "cache", "emptyDir": {}}],
                 "containers": [{"name": "c", "volumeMounts": [
                    {"name": "dswp-test-volume-name", "mountPath": "/mnt"},
                    {"name": "conf", "mountPath": "/conf"},
                    {"name": "cache", "mountPath": "/cache"}]}]},
        "status": {"phase": "Running"}
    }))
    .unwrap();
    let uid = uid_of(&pod);
    d.vm.observe_pod(&pod);
    d.populator_loop().await;
    d.reconcile_asw();
    let remount_required = |d: &Dswp| -> Vec<String> {
        d.vm.state
            .lock()
            .unwrap()
            .1
            .mounted_volumes_for_pod(&uid)
            .filter(|m| m.remount_required)
            .map(|m| m.outer_volume_spec_name.clone())
            .collect()
    };
    assert!(remount_required(&d).is_empty());

    // A sync whose processing fails (the claim unreadable): nothing marked, the error
    // kept, the claim's volume still wanted.
    let reader = std::mem::take(&mut d.reader);
    d.vm.pods
        .lock()
        .unwrap()
        .reprocess_pod(Arc::new(pod.clone()));
    d.populator_loop().await;
    assert!(remount_required(&d).is_empty());
    assert_eq!(d.dsw(|dsw| dsw.pod_volumes(&uid).count()), 3);

    // The next one succeeds: the configMap is set up again, the error forgotten.
    d.reader = reader;
    d.vm.pods
        .lock()
        .unwrap()
        .reprocess_pod(Arc::new(pod.clone()));
    d.populator_loop().await;
    assert_eq!(remount_required(&d), ["conf"]);
    assert!(d.vm.state.lock().unwrap().0.pop_pod_errors(&uid).is_empty());
    let ops = {
        let active = d.vm.pods.lock().unwrap().active();
        let state = d.vm.state.lock().unwrap();
        reconcile(&state.0, &state.1, true, &active)
    };
    assert!(
        matches!(&ops[..], [Operation::Mount { volume, remount: true }] if volume.outer_volume_spec_name == "conf"),
        "{ops:?}"
    );
}
