//! Ported from kubernetes v1.36.3: the decisions of pkg/kubelet/volumemanager/reconciler/
//! reconciler_test.go over rekube's pure [`reconcile`] (which operations, in which order)
//! and of pkg/volume/util/nestedpendingoperations/nestedpendingoperations_test.go over
//! [`Operations`] (which of them may start: one task per pod, each operation's
//! exponential back-off, pkg/util/goroutinemap/exponentialbackoff's rules). Upstream's fake plugin
//! call counts become the operations decided: "attach" is the attach/detach controller's
//! in rekube (controller-managed attach only), so an attachable volume's mount is a
//! `Mount` whose `VerifyControllerAttachedVolume` (`attach::verify_controller_attached_volume`)
//! must pass first; "MountDevice"/"UnmountDevice" are a CSI volume's stage and its
//! unstage after the node's last user (`unmount_device_after`); "detach" is the
//! controller's.
//!
//! reconciler_test.go, 12 of its 40 cases: `Test_Run_Positive_DoNothing`,
//! `_VolumeAttachAndMount`, `_VolumeMountControllerAttachEnabled`,
//! `Test_Run_Negative_VolumeMountControllerAttachEnabled` (see there: upstream starts no
//! operation before the volume is reported in use), `_VolumeAttachMountUnmountDetach`,
//! `_VolumeUnmountControllerAttachEnabled`, `_VolumeAttachAndMap`,
//! `_BlockVolumeMapControllerAttachEnabled`, `_BlockVolumeAttachMapUnmapDetach`,
//! `_VolumeUnmapControllerAttachEnabled`, `_VolumeMountControllerAttachEnabledRace`,
//! `TestReconstructedVolumeShouldUnmountSucceedAfterSetupFailed`. Not: `_VolumeAttachAndMountMigrationEnabled`
//! (no CSI migration), the three `Test_Generate*Func_Plugin_Not_Found` (the plugin is the
//! populator's choice, `VolumeSpec`, never looked up again), `_VolumeFSResizeControllerAttachEnabled`
//! (`volume::manager::expand::tests`), `Test_UncertainDeviceGlobalMounts` (10) and
//! `Test_UncertainVolumeMountState` (12: the operation executor's timeouts and fake
//! plugin outcomes; a failed set-up records nothing, a reconstructed volume stays
//! uncertain, see reconstruct_tests.rs),
//! `TestReconcileWithUpdateReconstructedFromAPIServer` (no device paths kept: the publish
//! context is read from the VolumeAttachment at each mount).
//!
//! nestedpendingoperations_test.go, 14 of its 34 cases (one operation at a time per pod,
//! one back-off per operation kind and unique volume name, which names the pod too,
//! `operation_key`): `_Positive_SingleOp`,
//! `_Positive_TwoOps`, `_Positive_TwoSubOps`, `_Positive_SingleOpWithExpBackoff`,
//! `_Positive_SecondOpAfterFirstCompletes`(`WithExpBackoff`), `_Negative_SecondOpBeforeFirstCompletes`,
//! `_Negative_SecondSubOpBeforeFirstCompletes`(`2`), `_Negative_SecondOpBeforeFirstCompletesWithExpBackoff`,
//! `_Positive_ThirdOpAfterFirstCompletes`(`WithExpBackoff`), `_OperationExists_ExactMatchFirstNoPending`,
//! `_Negative_SecondThirdOpWithDifferentNames`. Not: `_Positive_SecondOpAfterFirstPanics`
//! (`WithExpBackoff`, 2: the shell's, `reconcile_pass` counts a panicking task's operations
//! failed), the four `Wait` tests (no `Wait`), `_SecondOpBeforeFirstCompletes`
//! (12 key shapes with empty volume, pod or node names: every rekube operation is one pod's
//! volume's), `_Positive_Issue_88355` and `_OperationExists_PendingFirst` (node-keyed and
//! empty-pod operations). exponential_backoff.go has no test; its rules are
//! `exponential_backoff_update` here. And rekube's own `volume_of_two_outer_names_mounted_once`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rekube_crds::storage_keys::csi_unique_volume_name;

use super::*;
use crate::volume::csi::CsiSource;
use crate::volume::manager::actual_state_of_world::DeviceMount;
use crate::volume::manager::attach::verify_controller_attached_volume;
use crate::volume::manager::desired_state_of_world::unique_volume_name;
use crate::volume::manager::expand::{INITIAL_RETRY, MAX_RETRY};
use crate::volume::manager::operation_executor::{Operations, operation_key};
use crate::volume::plugins::{BlockSource, PersistentSource, VolumeSpec};

const DRIVER: &str = "csi.rekube.io";

fn source(handle: &str) -> CsiSource {
    CsiSource {
        driver: DRIVER.into(),
        volume_handle: handle.into(),
        fs_type: "ext4".into(),
        volume_attributes: Default::default(),
        read_only: false,
        access_mode: Some("ReadWriteOnce".into()),
        mount_options: vec![],
    }
}

/// A claim's CSI PersistentVolume `pv` (the fake plugin's attachable volume).
fn csi_pv(pv: &str, handle: &str) -> VolumeSpec {
    VolumeSpec::Persistent {
        pv_name: pv.into(),
        read_only: false,
        source: PersistentSource::Csi(source(handle)),
    }
}

/// The same in volumeMode Block.
fn csi_block(pv: &str, handle: &str) -> VolumeSpec {
    VolumeSpec::Block {
        pv_name: pv.into(),
        read_only: false,
        source: BlockSource::Csi(source(handle)),
    }
}

fn empty_dir() -> VolumeSpec {
    VolumeSpec::EmptyDir {
        medium: None,
        size_limit_bytes: None,
    }
}

/// The volume as the operation executor records it once set up (a CSI one staged, a
/// Block one mapped).
fn mounted(v: &VolumeToMount) -> MountedVolume {
    let (block, device) = match &v.spec {
        VolumeSpec::Persistent {
            source: PersistentSource::Csi(s),
            ..
        } => (false, Some(s.clone())),
        VolumeSpec::Block {
            source: BlockSource::Csi(s),
            ..
        } => (true, Some(s.clone())),
        VolumeSpec::Block { .. } => (true, None),
        _ => (false, None),
    };
    MountedVolume {
        volume_name: v.volume_name.clone(),
        pod_uid: v.pod_uid.clone(),
        outer_volume_spec_name: v.outer_volume_spec_name.clone(),
        plugin_name: v.spec.plugin_name().to_string(),
        path: format!("/pods/{}", v.volume_name).into(),
        block,
        read_only: v.spec.read_only(),
        remount_required: false,
        device: device.map(|source| DeviceMount {
            source,
            staged: true,
        }),
    }
}

fn names(ops: &[Operation]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            Operation::Unmount(m) => format!("unmount {}", m.volume_name),
            Operation::Mount { volume, remount } => format!(
                "mount {}{}",
                volume.volume_name,
                if *remount { " again" } else { "" }
            ),
        })
        .collect()
}

/// A reconciler over its states: `hasAddedPods` true, no pod running (upstream's
/// fixture; `active` is rekube's).
#[derive(Default)]
struct Reconciler {
    dsw: DesiredStateOfWorld,
    asw: ActualStateOfWorld,
    active: BTreeSet<String>,
}

impl Reconciler {
    fn reconcile(&self) -> Vec<Operation> {
        reconcile(&self.dsw, &self.asw, true, &self.active)
    }

    /// The operations carried out, each succeeding (`waitForMount` / `waitForDetach`).
    fn run(&mut self) -> Vec<String> {
        let ops = self.reconcile();
        for op in &ops {
            match op {
                Operation::Unmount(m) => self.asw.mark_volume_as_unmounted(&m.volume_name),
                Operation::Mount { volume, .. } => self.asw.mark_volume_as_mounted(mounted(volume)),
            }
        }
        names(&ops)
    }
}

/// pod1 with `volume-name` of `spec` in the desired state.
fn with_pod1(spec: VolumeSpec) -> (Reconciler, String) {
    let mut rc = Reconciler::default();
    rc.dsw
        .add_pod("pod1uid", vec![("volume-name".into(), spec)]);
    let name = rc
        .dsw
        .volumes_to_mount()
        .next()
        .unwrap()
        .volume_name
        .clone();
    (rc, name)
}

#[test]
fn test_run_positive_do_nothing() {
    let mut rc = Reconciler::default();
    assert!(rc.run().is_empty());
}

/// Mounted once (its stage and publish; the attach is the controller's), then nothing.
#[test]
fn test_run_positive_volume_attach_and_mount() {
    let (mut rc, generated_volume_name) = with_pod1(csi_pv("pv1", "fake-device1"));

    assert_eq!(rc.run(), [format!("mount {generated_volume_name}")]);
    assert!(rc.run().is_empty(), "mounted once, nothing torn down");
    assert!(rc.asw.get(&generated_volume_name).is_some());
}

/// Reported in use and in the Node's `volumesAttached`: mounted.
#[test]
fn test_run_positive_volume_mount_controller_attach_enabled() {
    let (mut rc, generated_volume_name) = with_pod1(csi_pv("pv1", "fake-device1"));
    let attached = csi_unique_volume_name(DRIVER, "fake-device1");

    assert_eq!(rc.run(), [format!("mount {generated_volume_name}")]);
    assert_eq!(
        verify_controller_attached_volume("pv1", &attached, true, std::slice::from_ref(&attached)),
        Ok(())
    );
    assert!(rc.run().is_empty());
}

/// Not reported in use: no WaitForAttach, no MountDevice. Upstream's reconciler starts no
/// operation for it (and so no back-off); rekube's pure decision is the mount, and its
/// operation executor starts nothing for it while the volume is not reported in use
/// (`awaits_in_use_report`: no event, no back-off), as `VerifyControllerAttachedVolume`
/// would refuse it.
#[test]
fn test_run_negative_volume_mount_controller_attach_enabled() {
    let (rc, generated_volume_name) = with_pod1(csi_pv("pv1", "fake-device1"));
    let attached = csi_unique_volume_name(DRIVER, "fake-device1");

    assert_eq!(
        names(&rc.reconcile()),
        [format!("mount {generated_volume_name}")]
    );
    assert!(
        verify_controller_attached_volume("pv1", &attached, false, std::slice::from_ref(&attached))
            .is_err()
    );
}

/// Mounted, then the pod gone from the desired state: unmounted, then its device (the
/// node's last user); detaching is the controller's.
fn mount_unmount(spec: VolumeSpec) {
    let (mut rc, generated_volume_name) = with_pod1(spec);
    assert_eq!(rc.run(), [format!("mount {generated_volume_name}")]);
    assert!(rc.run().is_empty());
    let device = rc
        .asw
        .get(&generated_volume_name)
        .unwrap()
        .device
        .clone()
        .unwrap();
    assert!(rc.asw.unmount_device_after(&generated_volume_name));

    rc.dsw.delete_pod("pod1uid");

    assert_eq!(rc.run(), [format!("unmount {generated_volume_name}")]);
    assert!(
        !rc.asw
            .device_used_by_others(&device, &generated_volume_name)
    );
    assert!(rc.run().is_empty());
}

#[test]
fn test_run_positive_volume_attach_mount_unmount_detach() {
    mount_unmount(csi_pv("pv1", "fake-device1"));
}

#[test]
fn test_run_positive_volume_unmount_controller_attach_enabled() {
    let attached = csi_unique_volume_name(DRIVER, "fake-device1");
    assert_eq!(
        verify_controller_attached_volume("pv1", &attached, true, std::slice::from_ref(&attached)),
        Ok(())
    );
    mount_unmount(csi_pv("pv1", "fake-device1"));
}

/// A Block volume's map is its `Mount` (the executor maps what is `VolumeSpec::Block`).
#[test]
fn test_run_positive_volume_attach_and_map() {
    let (mut rc, generated_volume_name) = with_pod1(csi_block("pv1", "fake-device1"));

    assert_eq!(rc.run(), [format!("mount {generated_volume_name}")]);
    assert!(rc.asw.get(&generated_volume_name).unwrap().block);
    assert!(rc.run().is_empty());
}

#[test]
fn test_run_positive_block_volume_map_controller_attach_enabled() {
    let (mut rc, generated_volume_name) = with_pod1(csi_block("pv1", "fake-device1"));
    let attached = csi_unique_volume_name(DRIVER, "fake-device1");

    assert_eq!(rc.run(), [format!("mount {generated_volume_name}")]);
    assert_eq!(
        verify_controller_attached_volume("pv1", &attached, true, std::slice::from_ref(&attached)),
        Ok(())
    );
    assert!(rc.run().is_empty());
}

/// Its unmap is its `Unmount` (the executor unmaps what is recorded `block`), then its
/// device (TearDownDevice) after the node's last user.
#[test]
fn test_run_positive_block_volume_attach_map_unmap_detach() {
    mount_unmount(csi_block("pv1", "fake-device1"));
}

#[test]
fn test_run_positive_volume_unmap_controller_attach_enabled() {
    let attached = csi_unique_volume_name(DRIVER, "fake-device1");
    assert_eq!(
        verify_controller_attached_volume("pv1", &attached, true, std::slice::from_ref(&attached)),
        Ok(())
    );
    mount_unmount(csi_block("pv1", "fake-device1"));
}

/// The pod's volume added back while its unmount runs: nothing starts for the pod until
/// the unmount is done, then it is mounted again (upstream checks the device path kept
/// for it; rekube keeps none).
#[test]
fn test_run_positive_volume_mount_controller_attach_enabled_race() {
    let t0 = Instant::now();
    let none = BTreeSet::new();
    let mut ops = Operations::default();
    let (mut rc, generated_volume_name) = with_pod1(csi_pv("pv1", "fake-device1"));
    // 1. Mounted.
    assert_eq!(rc.run(), [format!("mount {generated_volume_name}")]);

    // 2. Deleted from the desired state: the unmount starts.
    rc.dsw.delete_pod("pod1uid");
    let started = ops.start(rc.reconcile(), &none, t0);
    assert_eq!(
        names(&started["pod1uid"]),
        [format!("unmount {generated_volume_name}")]
    );
    let unmount_key = operation_key(&started["pod1uid"][0]);

    // 3. While it runs, the volume is added back: nothing to do while it is mounted, and
    // nothing starts for the pod while its task runs.
    rc.dsw.add_pod(
        "pod1uid",
        vec![("volume-name".into(), csi_pv("pv1", "fake-device1"))],
    );
    assert!(rc.reconcile().is_empty());
    rc.asw.mark_volume_as_unmounted(&generated_volume_name);
    assert!(ops.start(rc.reconcile(), &none, t0).is_empty());

    // 4. The unmount done: mounted again.
    ops.finish("pod1uid", &[unmount_key], &[], t0);
    let started = ops.start(rc.reconcile(), &none, t0);
    assert_eq!(
        names(&started["pod1uid"]),
        [format!("mount {generated_volume_name}")]
    );
}

/// A reconstructed volume whose set-up fails stays recorded (uncertain, to be set up
/// again), so that it is unmounted once its pod goes, at once: the failed mount's
/// back-off is the mount's.
#[test]
fn test_reconstructed_volume_should_unmount_succeed_after_setup_failed() {
    let t0 = Instant::now();
    let none = BTreeSet::new();
    let mut ops = Operations::default();
    let (mut rc, generated_volume_name) = with_pod1(csi_pv("pv", "fake-device1"));
    // Reconstructed: uncertain, to be set up again.
    rc.asw.mark_volume_mount_as_uncertain(MountedVolume {
        remount_required: true,
        ..mounted(rc.dsw.volumes_to_mount().next().unwrap())
    });

    // The first reconcile sets it up again; SetUp fails: nothing recorded.
    let started = ops.start(rc.reconcile(), &none, t0);
    assert_eq!(
        names(&started["pod1uid"]),
        [format!("mount {generated_volume_name} again")]
    );
    ops.finish("pod1uid", &[], &[operation_key(&started["pod1uid"][0])], t0);
    assert!(rc.asw.is_uncertain(&generated_volume_name));
    assert!(rc.asw.get(&generated_volume_name).unwrap().remount_required);

    // The pod removed: the second reconcile unmounts it.
    rc.dsw.delete_pod("pod1uid");
    assert_eq!(
        names(&rc.reconcile()),
        [format!("unmount {generated_volume_name}")]
    );
    let started = ops.start(rc.reconcile(), &none, t0);
    assert_eq!(
        names(&started["pod1uid"]),
        [format!("unmount {generated_volume_name}")]
    );
}

/// The pod's volume `volume` (nestedpendingoperations' volume name; its pod name is the
/// operation's pod, `pod` when upstream's is empty).
fn op(pod: &str, volume: &str) -> Operation {
    Operation::Mount {
        volume: VolumeToMount {
            volume_name: volume_name(pod, volume),
            pod_uid: pod.into(),
            outer_volume_spec_name: volume.into(),
            spec: empty_dir(),
        },
        remount: false,
    }
}

fn volume_name(pod: &str, volume: &str) -> String {
    unique_volume_name("kubernetes.io/empty-dir", pod, volume)
}

/// `grm.Run`: whether the operations start now.
fn run(ops: &mut Operations, wanted: Vec<Operation>, now: Instant) -> bool {
    let n = wanted.len();
    let started = ops.start(wanted, &BTreeSet::new(), now);
    let count: usize = started.values().map(Vec::len).sum();
    assert!(count == 0 || count == n, "{count} of {n} started");
    count == n
}

/// The pod's task ended, the mount of `volume` succeeded (`noopFunc`) or failed
/// (`errorFunc`).
fn complete(ops: &mut Operations, pod: &str, volume: &str, ok: bool, now: Instant) {
    let v = [operation_key(&op(pod, volume))];
    if ok {
        ops.finish(pod, &v, &[], now);
    } else {
        ops.finish(pod, &[], &v, now);
    }
}

#[test]
fn test_nested_pending_operations_positive_single_op() {
    let mut grm = Operations::default();
    assert!(run(
        &mut grm,
        vec![op("pod", "volume-name")],
        Instant::now()
    ));
}

/// Two volumes: of one pod, one task; of two pods, two.
#[test]
fn test_nested_pending_operations_positive_two_ops() {
    let t0 = Instant::now();
    let mut grm = Operations::default();
    assert!(run(
        &mut grm,
        vec![op("pod", "volume1-name"), op("pod", "volume2-name")],
        t0
    ));
    let mut grm = Operations::default();
    assert!(run(&mut grm, vec![op("pod1", "volume1-name")], t0));
    assert!(run(&mut grm, vec![op("pod2", "volume2-name")], t0));
}

/// One volume (PersistentVolume) of two pods: each pod's operation starts.
#[test]
fn test_nested_pending_operations_positive_two_sub_ops() {
    let t0 = Instant::now();
    let mut grm = Operations::default();
    assert!(run(
        &mut grm,
        vec![op("operation1-podname", "volume-name")],
        t0
    ));
    assert!(run(
        &mut grm,
        vec![op("operation2-podname", "volume-name")],
        t0
    ));
}

#[test]
fn test_nested_pending_operations_positive_single_op_with_exp_backoff() {
    test_nested_pending_operations_positive_single_op();
}

#[test]
fn test_nested_pending_operations_positive_second_op_after_first_completes() {
    let t0 = Instant::now();
    let mut grm = Operations::default();
    assert!(run(&mut grm, vec![op("pod", "volume-name")], t0));
    complete(&mut grm, "pod", "volume-name", true, t0);
    assert!(run(&mut grm, vec![op("pod", "volume-name")], t0));
}

#[test]
fn test_nested_pending_operations_positive_second_op_after_first_completes_with_exp_backoff() {
    test_nested_pending_operations_positive_second_op_after_first_completes();
}

#[test]
fn test_nested_pending_operations_negative_second_op_before_first_completes() {
    let t0 = Instant::now();
    let mut grm = Operations::default();
    assert!(run(&mut grm, vec![op("pod", "volume-name")], t0));
    assert!(
        !run(&mut grm, vec![op("pod", "volume-name")], t0),
        "already exists"
    );
    assert!(grm.is_pending("pod"));
}

/// The back-off is the operation's: a failed `mount_volume` does not hold back the
/// volume's `unmount_volume`.
#[test]
fn test_nested_pending_operations_negative_second_third_op_with_different_names() {
    let t0 = Instant::now();
    let mut grm = Operations::default();
    let mounted = MountedVolume {
        volume_name: volume_name("pod", "volume-name"),
        pod_uid: "pod".into(),
        outer_volume_spec_name: "volume-name".into(),
        plugin_name: "kubernetes.io/empty-dir".into(),
        path: "/pods/pod/volume-name".into(),
        block: false,
        read_only: false,
        remount_required: true,
        device: None,
    };
    // mount_volume fails: in back-off for mount_volume.
    assert!(run(&mut grm, vec![op("pod", "volume-name")], t0));
    complete(&mut grm, "pod", "volume-name", false, t0);
    assert!(!run(&mut grm, vec![op("pod", "volume-name")], t0));
    // unmount_volume of the same volume starts.
    assert!(run(&mut grm, vec![Operation::Unmount(mounted)], t0));
}

#[test]
fn test_nested_pending_operations_negative_second_sub_op_before_first_completes2() {
    let t0 = Instant::now();
    let mut grm = Operations::default();
    assert!(run(
        &mut grm,
        vec![op("operation-podname", "volume-name")],
        t0
    ));
    assert!(!run(
        &mut grm,
        vec![op("operation-podname", "volume-name")],
        t0
    ));
}

#[test]
fn test_nested_pending_operations_negative_second_sub_op_before_first_completes() {
    test_nested_pending_operations_negative_second_sub_op_before_first_completes2();
}

#[test]
fn test_nested_pending_operations_negative_second_op_before_first_completes_with_exp_backoff() {
    test_nested_pending_operations_negative_second_op_before_first_completes();
}

#[test]
fn test_nested_pending_operations_positive_third_op_after_first_completes() {
    let t0 = Instant::now();
    let mut grm = Operations::default();
    assert!(run(&mut grm, vec![op("pod", "volume-name")], t0));
    assert!(
        !run(&mut grm, vec![op("pod", "volume-name")], t0),
        "already exists"
    );
    complete(&mut grm, "pod", "volume-name", true, t0);
    assert!(run(&mut grm, vec![op("pod", "volume-name")], t0));
}

#[test]
fn test_nested_pending_operations_positive_third_op_after_first_completes_with_exp_backoff() {
    test_nested_pending_operations_positive_third_op_after_first_completes();
}

/// Three pods' operations on one volume fail; another pod's runs meanwhile; after its
/// 500 ms back-off, pod2's starts again and, done, leaves nothing behind.
#[test]
fn test_nested_pending_operations_operation_exists_exact_match_first_no_pending() {
    let t0 = Instant::now();
    let mut grm = Operations::default();
    for pod in ["pod1", "pod2", "pod3"] {
        assert!(run(&mut grm, vec![op(pod, "test-volume")], t0));
    }
    for pod in ["pod1", "pod2", "pod3"] {
        complete(&mut grm, pod, "test-volume", false, t0);
    }
    assert!(run(&mut grm, vec![op("pod4", "test-volume")], t0));
    complete(&mut grm, "pod4", "test-volume", false, t0);

    assert!(!run(
        &mut grm,
        vec![op("pod2", "test-volume")],
        t0 + INITIAL_RETRY / 2
    ));
    assert!(run(
        &mut grm,
        vec![op("pod2", "test-volume")],
        t0 + INITIAL_RETRY
    ));
    complete(&mut grm, "pod2", "test-volume", true, t0 + INITIAL_RETRY);
    assert!(!grm.is_pending("pod2"));
    assert!(run(
        &mut grm,
        vec![op("pod2", "test-volume")],
        t0 + INITIAL_RETRY
    ));
}

/// exponential_backoff.go: no retry within `durationBeforeRetry` of the last error, which
/// starts at 500 ms and doubles with each error up to 2 min 2 s; a success forgets it.
/// (Upstream refuses a retry at exactly the duration, rekube allows it.)
#[test]
fn exponential_backoff_update() {
    assert_eq!(
        (INITIAL_RETRY, MAX_RETRY),
        (Duration::from_millis(500), Duration::from_secs(122))
    );
    let mut grm = Operations::default();
    let mut now = Instant::now();
    let mut durations = Vec::new();
    for _ in 0..10 {
        assert!(run(&mut grm, vec![op("pod", "volume-name")], now));
        complete(&mut grm, "pod", "volume-name", false, now);
        let mut wait = Duration::ZERO;
        while !run(&mut grm, vec![op("pod", "volume-name")], now + wait) {
            wait += Duration::from_millis(250);
        }
        grm.finish("pod", &[], &[], now + wait);
        durations.push(wait.as_millis());
        now += wait;
    }
    assert_eq!(
        durations,
        [
            500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 122000, 122000
        ]
    );
    complete(&mut grm, "pod", "volume-name", true, now);
    complete(&mut grm, "pod", "volume-name", false, now);
    assert!(!run(
        &mut grm,
        vec![op("pod", "volume-name")],
        now + INITIAL_RETRY / 2
    ));
    assert!(run(
        &mut grm,
        vec![op("pod", "volume-name")],
        now + INITIAL_RETRY
    ));
}

/// rekube's own, after desired_state_of_world_test.go's `_MultiOuterNames`: a volume the
/// pod names twice (one claim in two pod volumes) is mounted once, as upstream's one
/// `VolumeToMount` with two outer names is.
#[test]
fn volume_of_two_outer_names_mounted_once() {
    let mut rc = Reconciler::default();
    rc.dsw.add_pod(
        "pod5uid",
        vec![
            ("volume-name-1".into(), csi_pv("fake-device1", "h1")),
            ("volume-name-2".into(), csi_pv("fake-device1", "h1")),
        ],
    );
    assert_eq!(rc.run(), ["mount kubernetes.io/csi/pod5uid-fake-device1"]);
    assert!(rc.run().is_empty());
}
