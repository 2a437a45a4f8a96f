//! Ported from kubernetes v1.36.3 pkg/kubelet/volumemanager/cache: the operations rekube's
//! [`DesiredStateOfWorld`] and [`ActualStateOfWorld`] have. Upstream's GCE PD fake volumes
//! are local PersistentVolumes where a claim names them, CSI ones where the device
//! matters, emptyDirs where neither does.
//!
//! desired_state_of_world_test.go, 10 of its 46 cases: `Test_AddPodToVolume_Positive_NewPodNewVolume`
//! (1/1), `_ExistingPodExistingVolume` (1/1), `_NamesForDifferentPodsAndDifferentVolumes`
//! (3/3: rekube names every volume per pod, upstream's non-attachable naming, so the
//! desired-state names always differ; the name upstream gives an attachable or
//! device-mountable volume is rekube's CSI volume-in-use name, the same for both pods),
//! `_MultiOuterNames` (1/1), `Test_DeletePodFromVolume_Positive_PodExistsVolumeExists`
//! (1/1), `Test_MarkVolumesReportedInUse_Positive_NewPodNewVolume` (1/1, on
//! [`VolumesInUse`], where rekube keeps `ReportedInUse`), `TestGetVolumeNamesForPod`
//! (2/2). Not: `Test_AddPodToVolume_WithEmptyDirSizeLimit` (1: no `DesiredSizeLimit`;
//! the emptyDir limit is the eviction manager's, the tmpfs size `emptydir`'s),
//! `Test_AddPodToVolume_SELinuxSinglePod` (15) and `_SELinux_MultiplePods` (20): no
//! SELinux.
//!
//! actual_state_of_world_test.go, 7 of its 19 cases: `Test_AddPodToVolume_Positive_ExistingVolumeNewNode`
//! (1/1), `_ExistingVolumeExistingNode` (1/1), `Test_AddTwoPodsToVolume_Positive` (1/1,
//! "mounted elsewhere" is the shared CSI device), `TestActualStateOfWorld_FoundDuringReconstruction`
//! (3/7: a reconstructed volume is an uncertain one to set up again; not: the 4
//! attachability rows, rekube records none), `TestUncertainVolumeMounts` (1/1). Not:
//! `Test_MarkVolumeAsAttached_*` (3), `Test_MarkVolumeAsDetached_Negative_PodInVolume`,
//! `Test_AddPodToVolume_Negative_VolumeDoesntExist`, `Test_MarkDeviceAsMounted_Positive_NewVolume`
//! (the attached-volume layer: attach is the controller's, a device is known through its
//! pods' volumes), `_SELinux` (2: no SELinux).
//!
//! And rekube's own: `pop_pod_errors`, `mark_remount_required` (no cache test upstream),
//! `get_mounted_volumes_for_pod_multi_outer_names` (volume_manager.go's
//! `getMountedVolumes`: the pod's volumes by their names in the spec through
//! `GetVolumeNamesForPod`).

use std::collections::{BTreeMap, BTreeSet};

use rekube_crds::storage_keys::csi_unique_volume_name;

use super::*;
use crate::volume::csi::CsiSource;
use crate::volume::manager::actual_state_of_world::{
    ActualStateOfWorld, DeviceMount, MountedVolume,
};
use crate::volume::manager::attach::VolumesInUse;
use crate::volume::plugins::PersistentSource;
use crate::volume::pod_dirs::{CONFIG_MAP_PLUGIN, CSI_PLUGIN, EMPTY_DIR_PLUGIN};

fn empty_dir() -> VolumeSpec {
    VolumeSpec::EmptyDir {
        medium: None,
        size_limit_bytes: None,
    }
}

/// A claim's local PersistentVolume `pv`.
fn local_pv(pv: &str) -> VolumeSpec {
    VolumeSpec::Persistent {
        pv_name: pv.into(),
        read_only: false,
        source: PersistentSource::Local {
            path: format!("/mnt/disks/{pv}"),
        },
    }
}

fn source(handle: &str) -> CsiSource {
    CsiSource {
        driver: "csi.rekube.io".into(),
        volume_handle: handle.into(),
        fs_type: "ext4".into(),
        volume_attributes: Default::default(),
        read_only: false,
        access_mode: Some("ReadWriteOnce".into()),
        mount_options: vec![],
    }
}

/// A claim's CSI PersistentVolume `pv`, the driver's volume `handle`.
fn csi_pv(pv: &str, handle: &str) -> VolumeSpec {
    VolumeSpec::Persistent {
        pv_name: pv.into(),
        read_only: false,
        source: PersistentSource::Csi(source(handle)),
    }
}

fn add(dsw: &mut DesiredStateOfWorld, pod: &str, volumes: &[(&str, VolumeSpec)]) {
    dsw.add_pod(
        pod,
        volumes
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
    );
}

fn verify_volume_exists_dsw(dsw: &DesiredStateOfWorld, name: &str) {
    assert!(dsw.volume_exists(name), "VolumeExists({name:?})");
}

fn verify_volume_doesnt_exist(dsw: &DesiredStateOfWorld, name: &str) {
    assert!(!dsw.volume_exists(name), "VolumeExists({name:?})");
}

/// The volume is to mount, under these names in the pod spec.
fn verify_volume_exists_in_volumes_to_mount(
    dsw: &DesiredStateOfWorld,
    name: &str,
    expected_outer_names: &[&str],
) {
    let mut names: Vec<&str> = dsw
        .volumes_to_mount()
        .filter(|v| v.volume_name == name)
        .map(|v| v.outer_volume_spec_name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, expected_outer_names, "{name:?} in GetVolumesToMount");
}

fn verify_volume_doesnt_exist_in_volumes_to_mount(dsw: &DesiredStateOfWorld, name: &str) {
    assert!(
        dsw.volumes_to_mount().all(|v| v.volume_name != name),
        "{name:?} in GetVolumesToMount"
    );
}

/// `PodExistsInVolume`.
fn pod_exists_in_volume(dsw: &DesiredStateOfWorld, pod: &str, name: &str) -> bool {
    dsw.pod_volumes(pod).any(|v| v.volume_name == name)
}

/// `VolumeExistsWithSpecName`: `volumeSpec.Name()`, the volume's own name (its
/// PersistentVolume's for a claim).
fn volume_exists_with_spec_name(dsw: &DesiredStateOfWorld, pod: &str, spec_name: &str) -> bool {
    dsw.pod_volumes(pod)
        .any(|v| v.spec.dir_name(&v.outer_volume_spec_name) == spec_name)
}

#[test]
fn test_add_pod_to_volume_positive_new_pod_new_volume() {
    let mut dsw = DesiredStateOfWorld::default();

    add(&mut dsw, "pod3uid", &[("volume-name", empty_dir())]);

    let generated_volume_name = "kubernetes.io/empty-dir/pod3uid-volume-name";
    verify_volume_exists_dsw(&dsw, generated_volume_name);
    verify_volume_exists_in_volumes_to_mount(&dsw, generated_volume_name, &["volume-name"]);
    assert!(pod_exists_in_volume(&dsw, "pod3uid", generated_volume_name));
    assert!(volume_exists_with_spec_name(&dsw, "pod3uid", "volume-name"));
}

#[test]
fn test_add_pod_to_volume_positive_existing_pod_existing_volume() {
    let mut dsw = DesiredStateOfWorld::default();

    add(&mut dsw, "pod4uid", &[("volume-name", empty_dir())]);
    let generated_volume_name = dsw.volumes_to_mount().next().unwrap().volume_name.clone();
    add(&mut dsw, "pod4uid", &[("volume-name", empty_dir())]);
    let generated_volume_name2 = dsw.volumes_to_mount().next().unwrap().volume_name.clone();

    assert_eq!(
        generated_volume_name, generated_volume_name2,
        "AddPodToVolume should generate same names"
    );
    assert_eq!(dsw.volumes_to_mount().count(), 1);
    verify_volume_exists_dsw(&dsw, &generated_volume_name);
    verify_volume_exists_in_volumes_to_mount(&dsw, &generated_volume_name, &["volume-name"]);
    assert!(pod_exists_in_volume(
        &dsw,
        "pod4uid",
        &generated_volume_name
    ));
    assert!(volume_exists_with_spec_name(&dsw, "pod4uid", "volume-name"));
}

/// The name upstream's `GetUniqueVolumeNameFromSpec` gives a volume: for an attachable or
/// device-mountable plugin the device's, whatever pod uses it (rekube's volume-in-use name
/// of a CSI volume, the one the attach/detach controller knows it by), else the pod's own
/// (the desired state's name).
fn upstream_unique_name(v: &VolumeToMount) -> String {
    match &v.spec {
        VolumeSpec::Persistent {
            source: PersistentSource::Csi(s),
            ..
        } => csi_unique_volume_name(&s.driver, &s.volume_handle),
        _ => v.volume_name.clone(),
    }
}

#[test]
fn test_add_pod_to_volume_positive_names_for_different_pods_and_different_volumes() {
    let testcases = [
        ("basic", empty_dir(), false),
        // A CSI driver that stages (device-mountable) and one that attaches too: which
        // it is, is read from its CSIDriver at mount, not recorded here.
        (
            "device-mountable",
            csi_pv("pv-device-mountable", "h1"),
            true,
        ),
        ("attachable", csi_pv("pv-attachable", "h2"), true),
    ];
    for (name, spec, same) in testcases {
        let mut dsw = DesiredStateOfWorld::default();
        add(&mut dsw, "pod1uid", &[(name, spec.clone())]);
        add(&mut dsw, "pod2uid", &[(name, spec)]);
        let v1 = dsw.pod_volumes("pod1uid").next().unwrap().clone();
        let v2 = dsw.pod_volumes("pod2uid").next().unwrap().clone();
        assert_ne!(v1.volume_name, v2.volume_name, "test {name:?}");
        assert_eq!(
            upstream_unique_name(&v1) == upstream_unique_name(&v2),
            same,
            "test {name:?}: {:?} {:?}",
            upstream_unique_name(&v1),
            upstream_unique_name(&v2)
        );
    }
}

/// Two volumes of the pod naming one claim: one volume, under both names.
#[test]
fn test_add_pod_to_volume_positive_multi_outer_names() {
    let mut dsw = DesiredStateOfWorld::default();

    add(
        &mut dsw,
        "pod5uid",
        &[
            ("volume-name-1", local_pv("fake-device1")),
            ("volume-name-2", local_pv("fake-device1")),
        ],
    );

    let generated_volume_name = "kubernetes.io/local-volume/pod5uid-fake-device1";
    verify_volume_exists_in_volumes_to_mount(
        &dsw,
        generated_volume_name,
        &["volume-name-1", "volume-name-2"],
    );
}

#[test]
fn test_delete_pod_from_volume_positive_pod_exists_volume_exists() {
    let mut dsw = DesiredStateOfWorld::default();
    add(&mut dsw, "pod3uid", &[("volume-name", empty_dir())]);
    let generated_volume_name = "kubernetes.io/empty-dir/pod3uid-volume-name";
    verify_volume_exists_dsw(&dsw, generated_volume_name);
    verify_volume_exists_in_volumes_to_mount(&dsw, generated_volume_name, &["volume-name"]);
    assert!(pod_exists_in_volume(&dsw, "pod3uid", generated_volume_name));

    dsw.delete_pod("pod3uid");

    verify_volume_doesnt_exist(&dsw, generated_volume_name);
    verify_volume_doesnt_exist_in_volumes_to_mount(&dsw, generated_volume_name);
    assert!(!pod_exists_in_volume(
        &dsw,
        "pod3uid",
        generated_volume_name
    ));
    assert!(!volume_exists_with_spec_name(
        &dsw,
        "pod3uid",
        "volume-name"
    ));
}

/// `ReportedInUse` is [`VolumesInUse`]'s: what the Node's status last listed.
#[test]
fn test_mark_volumes_reported_in_use_positive_new_pod_new_volume() {
    let mut dsw = DesiredStateOfWorld::default();
    add(
        &mut dsw,
        "pod1uid",
        &[("volume1-name", csi_pv("pv1", "fake-device1"))],
    );
    add(
        &mut dsw,
        "pod2uid",
        &[("volume2-name", csi_pv("pv2", "fake-device2"))],
    );
    add(
        &mut dsw,
        "pod3uid",
        &[("volume3-name", csi_pv("pv3", "fake-device3"))],
    );
    let in_use = VolumesInUse::default();
    in_use.set(dsw.volumes_to_mount().map(upstream_unique_name).collect());
    let [v1, v2, v3] = ["fake-device1", "fake-device2", "fake-device3"]
        .map(|h| csi_unique_volume_name("csi.rekube.io", h));
    let reported = |expected: [bool; 3]| {
        for (v, want) in [&v1, &v2, &v3].into_iter().zip(expected) {
            assert_eq!(in_use.is_reported_in_use(v), want, "{v}");
        }
    };

    in_use.mark_volumes_as_reported_in_use(std::slice::from_ref(&v2));
    reported([false, true, false]);
    for (pod, name) in [
        ("pod1uid", "kubernetes.io/csi/pod1uid-pv1"),
        ("pod2uid", "kubernetes.io/csi/pod2uid-pv2"),
        ("pod3uid", "kubernetes.io/csi/pod3uid-pv3"),
    ] {
        verify_volume_exists_dsw(&dsw, name);
        assert!(pod_exists_in_volume(&dsw, pod, name));
    }

    in_use.mark_volumes_as_reported_in_use(std::slice::from_ref(&v3));
    reported([false, false, true]);
}

#[test]
fn test_get_volume_names_for_pod() {
    let mut dsw = DesiredStateOfWorld::default();
    add(
        &mut dsw,
        "pod1-uid",
        &[
            ("volume1-name", local_pv("fake-device1")),
            ("volume1-dup", local_pv("fake-device1")),
            ("volume3-name", local_pv("fake-device3")),
        ],
    );
    add(
        &mut dsw,
        "pod2-uid",
        &[("volume2-name", local_pv("fake-device2"))],
    );

    let names = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(o, v)| (o.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        dsw.volume_names_for_pod("pod1-uid"),
        names(&[
            (
                "volume1-name",
                "kubernetes.io/local-volume/pod1-uid-fake-device1"
            ),
            (
                "volume1-dup",
                "kubernetes.io/local-volume/pod1-uid-fake-device1"
            ),
            (
                "volume3-name",
                "kubernetes.io/local-volume/pod1-uid-fake-device3"
            ),
        ]),
        "pod1"
    );
    assert_eq!(
        dsw.volume_names_for_pod("pod2-uid"),
        names(&[(
            "volume2-name",
            "kubernetes.io/local-volume/pod2-uid-fake-device2"
        )]),
        "pod2"
    );
}

/// rekube's own: `AddErrorToPod` / `PopPodErrors`: a pod's errors, each once, handed out
/// once; gone with the pod.
#[test]
fn pop_pod_errors() {
    let mut dsw = DesiredStateOfWorld::default();
    dsw.add_error_to_pod("pod1uid", "data", "PVC is not bound");
    dsw.add_error_to_pod("pod1uid", "data", "PVC is not bound");
    dsw.add_error_to_pod("pod1uid", "share", "no volume plugin matched");
    dsw.add_error_to_pod("pod2uid", "data", "PVC is being deleted");
    assert_eq!(
        dsw.pop_pod_errors("pod1uid"),
        [
            ("data".to_string(), "PVC is not bound".to_string()),
            ("share".to_string(), "no volume plugin matched".to_string()),
        ]
    );
    assert!(dsw.pop_pod_errors("pod1uid").is_empty());
    dsw.delete_pod("pod2uid");
    assert!(dsw.pop_pod_errors("pod2uid").is_empty());
}

/// A pod's CSI volume as the operation executor records it once set up (staged).
fn csi_mounted(pod: &str, outer: &str, pv: &str, handle: &str) -> MountedVolume {
    MountedVolume {
        volume_name: unique_volume_name(CSI_PLUGIN, pod, pv),
        pod_uid: pod.into(),
        outer_volume_spec_name: outer.into(),
        plugin_name: CSI_PLUGIN.into(),
        path: format!("/pods/{pod}/volumes/kubernetes.io~csi/{pv}/mount").into(),
        block: false,
        read_only: false,
        remount_required: false,
        device: Some(DeviceMount {
            source: source(handle),
            staged: true,
        }),
    }
}

/// `MountedElsewhere`: another pod's volume uses the same device.
fn mounted_elsewhere(asw: &ActualStateOfWorld, volume_name: &str) -> bool {
    let m = asw.get(volume_name).expect("mounted");
    asw.device_used_by_others(m.device.as_ref().unwrap(), volume_name)
}

fn verify_pod_exists_in_volume_asw(asw: &ActualStateOfWorld, pod: &str, volume_name: &str) {
    assert!(
        asw.mounted_volumes_for_pod(pod)
            .any(|m| m.volume_name == volume_name && !m.remount_required),
        "PodExistsInVolume({pod:?}, {volume_name:?})"
    );
}

#[test]
fn test_add_pod_to_volume_positive_existing_volume_new_node() {
    let mut asw = ActualStateOfWorld::default();
    let m = csi_mounted("pod1uid", "volume-name", "pv1", "fake-device1");
    let generated_volume_name = m.volume_name.clone();

    asw.mark_volume_as_mounted(m);

    verify_pod_exists_in_volume_asw(&asw, "pod1uid", &generated_volume_name);
    assert!(
        asw.mounted_volumes_for_pod("pod1uid")
            .any(|m| m.outer_volume_spec_name == "volume-name")
    );
    assert!(!mounted_elsewhere(&asw, &generated_volume_name));
}

#[test]
fn test_add_pod_to_volume_positive_existing_volume_existing_node() {
    let mut asw = ActualStateOfWorld::default();
    let m = csi_mounted("pod1uid", "volume-name", "pv1", "fake-device1");
    let generated_volume_name = m.volume_name.clone();
    asw.mark_volume_as_mounted(m.clone());

    asw.mark_volume_as_mounted(m);

    assert_eq!(asw.mounted_volumes().count(), 1);
    verify_pod_exists_in_volume_asw(&asw, "pod1uid", &generated_volume_name);
    assert!(!mounted_elsewhere(&asw, &generated_volume_name));
}

#[test]
fn test_add_two_pods_to_volume_positive() {
    let mut asw = ActualStateOfWorld::default();
    let m1 = csi_mounted("pod1uid", "volume-name-1", "pv1", "fake-device1");
    let m2 = csi_mounted("pod2uid", "volume-name-2", "pv1", "fake-device1");
    let (name1, name2) = (m1.volume_name.clone(), m2.volume_name.clone());

    asw.mark_volume_as_mounted(m1);
    asw.mark_volume_as_mounted(m2);

    verify_pod_exists_in_volume_asw(&asw, "pod1uid", &name1);
    verify_pod_exists_in_volume_asw(&asw, "pod2uid", &name2);
    assert!(mounted_elsewhere(&asw, &name1));
    assert!(mounted_elsewhere(&asw, &name2));
    // Upstream's one attached volume with two pods: the device stays for either.
    assert!(!asw.unmount_device_after(&name1) && !asw.unmount_device_after(&name2));
}

#[test]
fn test_actual_state_of_world_found_during_reconstruction() {
    type Op = fn(&mut ActualStateOfWorld, &MountedVolume);
    let tests: [(&str, Op, Option<bool>); 3] = [
        (
            "marking volume mounted should remove volume from found during reconstruction",
            |asw, m| {
                asw.mark_volume_as_mounted(MountedVolume {
                    remount_required: false,
                    ..m.clone()
                })
            },
            Some(false),
        ),
        (
            "removing volume from pod should remove volume from found during reconstruction",
            |asw, m| asw.mark_volume_as_unmounted(&m.volume_name),
            None,
        ),
        // No attached-volume layer: unmounted is gone entirely.
        (
            "removing volume entirely from ASOW should remove volume from found during reconstruction",
            |asw, m| asw.mark_volume_as_unmounted(&m.volume_name),
            None,
        ),
    ];
    for (name, op, want) in tests {
        let mut asw = ActualStateOfWorld::default();
        // What reconstruction records: uncertain, to be set up again.
        let m = MountedVolume {
            remount_required: true,
            ..csi_mounted("pod1uid", "fake-device1", "fake-device1", "fake-device1")
        };
        asw.mark_volume_mount_as_uncertain(m.clone());
        assert_eq!(
            asw.get(&m.volume_name).map(|m| m.remount_required),
            Some(true),
            "{name}: reconstructed"
        );
        assert!(asw.is_uncertain(&m.volume_name), "{name}");
        assert_eq!(
            asw.possibly_mounted_volumes_for_pod("pod1uid").count(),
            1,
            "{name}"
        );
        assert_eq!(asw.mounted_volumes_for_pod("pod1uid").count(), 0, "{name}");

        op(&mut asw, &m);

        assert_eq!(
            asw.get(&m.volume_name).map(|m| m.remount_required),
            want,
            "{name}"
        );
        assert!(!asw.is_uncertain(&m.volume_name), "{name}");
        if want.is_none() {
            assert_eq!(asw.mounted_volumes().count(), 0, "{name}");
        }
    }
}

#[test]
fn test_uncertain_volume_mounts() {
    let mut asw = ActualStateOfWorld::default();
    let m = csi_mounted("pod1uid", "volume-name-1", "pv1", "fake-device1");
    let generated_volume_name1 = m.volume_name.clone();

    asw.mark_volume_mount_as_uncertain(m);

    assert!(
        asw.mounted_volumes_for_pod("pod1uid")
            .all(|v| v.volume_name != generated_volume_name1),
        "expected the volume not to be found in GetMountedVolumesForPod"
    );
    assert!(
        asw.possibly_mounted_volumes_for_pod("pod1uid")
            .any(|v| v.volume_name == generated_volume_name1),
        "expected the volume to be found in GetPossiblyMountedVolumesForPod"
    );
    // PodExistsInVolume: not mounted; PodRemovedFromVolume: not removed either.
    assert!(asw.is_uncertain(&generated_volume_name1));
    assert!(asw.get(&generated_volume_name1).is_some());
}

/// rekube's own: `MarkRemountRequired` marks the pod's mounted volumes whose plugin
/// requires it, no other pod's.
#[test]
fn mark_remount_required() {
    let mut asw = ActualStateOfWorld::default();
    let volume = |pod: &str, plugin: &str, name: &str| MountedVolume {
        volume_name: unique_volume_name(plugin, pod, name),
        pod_uid: pod.into(),
        outer_volume_spec_name: name.into(),
        plugin_name: plugin.into(),
        path: format!("/pods/{pod}/{name}").into(),
        block: false,
        read_only: false,
        remount_required: false,
        device: None,
    };
    asw.mark_volume_as_mounted(volume("a", CONFIG_MAP_PLUGIN, "conf"));
    asw.mark_volume_as_mounted(volume("a", EMPTY_DIR_PLUGIN, "cache"));
    asw.mark_volume_as_mounted(volume("b", CONFIG_MAP_PLUGIN, "conf"));

    asw.mark_remount_required("a", |plugin| plugin == CONFIG_MAP_PLUGIN);

    let marked: BTreeSet<String> = asw
        .mounted_volumes()
        .filter(|m| m.remount_required)
        .map(|m| m.volume_name.clone())
        .collect();
    assert_eq!(
        marked,
        BTreeSet::from(["kubernetes.io/configmap/a-conf".to_string()])
    );
}

/// volume_manager.go's `getMountedVolumes` finds a pod's mounted volumes by their names
/// in the pod spec through the desired state (`GetVolumeNamesForPod`), so that two
/// volumes of a pod naming one claim are both set up once their one volume is (the
/// actual state records one name of the two).
#[tokio::test]
async fn get_mounted_volumes_for_pod_multi_outer_names() {
    let root = tempfile::tempdir().unwrap();
    let vm = super::super::VolumeManager::new(
        crate::volume::pod_dirs::PodDirs::new(root.path().join("pods")),
        std::sync::Arc::new(crate::runtime::syscall::LinuxSyscall),
        BTreeMap::new(),
    );
    let pod: rekube_crds::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod5", "namespace": "ns", "uid": "pod5uid"},
        "spec": {"volumes": [
                    {"name": "volume-name-1", "persistentVolumeClaim": {"claimName": "c"}},
                    {"name": "volume-name-2", "persistentVolumeClaim": {"claimName": "c"}}],
                 "containers": [{"name": "c", "volumeMounts": [
                    {"name": "volume-name-1", "mountPath": "/1"},
                    {"name": "volume-name-2", "mountPath": "/2"}]}]}
    }))
    .unwrap();
    {
        let mut state = vm.state.lock().unwrap();
        let (dsw, asw) = &mut *state;
        add(
            dsw,
            "pod5uid",
            &[
                ("volume-name-1", local_pv("fake-device1")),
                ("volume-name-2", local_pv("fake-device1")),
            ],
        );
        // The reconciler's mount, recorded as the operation executor records it.
        for v in dsw.volumes_to_mount() {
            asw.mark_volume_as_mounted(MountedVolume {
                volume_name: v.volume_name.clone(),
                pod_uid: v.pod_uid.clone(),
                outer_volume_spec_name: v.outer_volume_spec_name.clone(),
                plugin_name: v.spec.plugin_name().into(),
                path: "/mnt/disks/fake-device1".into(),
                block: false,
                read_only: false,
                remount_required: false,
                device: None,
            });
        }
    }

    let mounted = vm
        .wait_for_attach_and_mount(&pod)
        .await
        .expect("both volumes set up");

    assert_eq!(
        mounted.keys().collect::<Vec<_>>(),
        ["volume-name-1", "volume-name-2"]
    );
}
