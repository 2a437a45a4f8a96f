//! Ported from kubernetes v1.36.3 pkg/kubelet/volumemanager/reconciler/reconstruct_test.go:
//! which directories an earlier agent left become volumes ([`reconstruct_pod_volumes`],
//! and [`VolumeManager::reconstruct_volumes`] for CSI ones), and what the reconciler then
//! does with them ([`reconcile`]). A reconstructed volume is upstream's uncertain one: in
//! the actual state, to be set up again (`VolumeManager::reconstruct` marks it uncertain). 6 of its 7 cases: `TestReconstructVolumes`
//! (2/2, and rekube's own CSI row), `TestCleanOrphanVolumes` (2/2: rekube has no list of
//! volumes that failed reconstruction; a directory no plugin reconstructs goes with its
//! pod's directory, `unmount_pod`, once the pod is gone, and a reconstructed volume is torn
//! down exactly when its pod is not in the desired state, which is what these rows
//! check), `TestReconstructVolumesMount` (2/3; not: "reconstructed volume device map
//! fails": Block volumes are not reconstructed, an earlier agent's maps are found at the
//! pod's cleanup, `block.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::volume::manager::desired_state_of_world::DesiredStateOfWorld;
use crate::volume::manager::operation_executor::{Operations, operation_key};
use crate::volume::manager::reconciler::{Operation, reconcile};
use crate::volume::plugins::{PersistentSource, VolumeSpec};

/// `getReconciler` with the pod directories: a kubelet root with `pods/`.
fn kubelet_dir() -> (tempfile::TempDir, PodDirs) {
    let root = tempfile::tempdir().unwrap();
    let dirs = PodDirs::new(root.path().join("pods"));
    std::fs::create_dir_all(dirs.root()).unwrap();
    (root, dirs)
}

fn manager(dirs: &PodDirs) -> VolumeManager {
    VolumeManager::new(
        dirs.clone(),
        Arc::new(crate::runtime::syscall::LinuxSyscall),
        BTreeMap::new(),
    )
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

fn local_pv(pv: &str) -> VolumeSpec {
    VolumeSpec::Persistent {
        pv_name: pv.into(),
        read_only: false,
        source: PersistentSource::Local {
            path: format!("/mnt/disks/{pv}"),
        },
    }
}

#[test]
fn test_reconstruct_volumes() {
    struct Case {
        name: &'static str,
        volume_paths: Vec<(&'static str, &'static str, &'static str)>,
        /// The volumes in the actual state, `(pod, unique name)`.
        expected_volumes: Vec<(&'static str, &'static str)>,
        /// The pod directories left for the pods' cleanup (`cleanupOrphanedPodDirs`).
        expected_pods_on_disk: Vec<&'static str>,
        /// A CSI volume's `vol_data.json` (`pod`, PV) and whether it was staged.
        csi: Option<(&'static str, &'static str, bool)>,
    }
    let tests = [
        Case {
            name: "when two pods are using same volume and both are deleted",
            volume_paths: vec![
                ("pod1", LOCAL_PLUGIN, "pvc-abcdef"),
                ("pod2", LOCAL_PLUGIN, "pvc-abcdef"),
            ],
            expected_volumes: vec![
                ("pod1", "kubernetes.io/local-volume/pod1-pvc-abcdef"),
                ("pod2", "kubernetes.io/local-volume/pod2-pvc-abcdef"),
            ],
            expected_pods_on_disk: vec!["pod1", "pod2"],
            csi: None,
        },
        // Upstream: in volumesFailedReconstruction, cleaned up by cleanOrphanVolumes.
        // rekube: not a volume; the pod's directory, with whatever is mounted under it, goes
        // at the pod's cleanup.
        Case {
            name: "when reconstruction fails for a volume, volumes should be cleaned up",
            volume_paths: vec![("pod1", "missing-plugin", "pvc-abcdef")],
            expected_volumes: vec![],
            expected_pods_on_disk: vec!["pod1"],
            csi: None,
        },
        // rekube's own: a CSI volume is known from its vol_data.json, its device staged
        // when its device mount path exists.
        Case {
            name: "a CSI volume with its driver and handle",
            volume_paths: vec![],
            expected_volumes: vec![("pod1", "kubernetes.io/csi/pod1-pvc-abcdef")],
            expected_pods_on_disk: vec!["pod1"],
            csi: Some(("pod1", "pvc-abcdef", true)),
        },
    ];
    for tc in tests {
        let (_root, dirs) = kubelet_dir();
        for (pod, plugin, volume) in &tc.volume_paths {
            std::fs::create_dir_all(dirs.pod_volume_dir(pod, plugin, volume)).unwrap();
        }
        let vm = manager(&dirs);
        if let Some((pod, pv, staged)) = tc.csi {
            let dir = dirs.pod_volume_dir(pod, CSI_PLUGIN, pv);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join(crate::volume::csi::VOL_DATA_FILE_NAME),
                r#"{"driverName":"csi.rekube.io","volumeHandle":"rk-1","specVolID":"pvc-abcdef"}"#,
            )
            .unwrap();
            if staged {
                std::fs::create_dir_all(crate::volume::csi::device_mount_path(
                    vm.csi.plugin_dir(),
                    "csi.rekube.io",
                    "rk-1",
                ))
                .unwrap();
            }
        }

        vm.reconstruct();
        let asw = vm.state.lock().unwrap().1.clone();

        let mut got: Vec<(&str, &str)> = asw
            .mounted_volumes()
            .map(|m| (m.pod_uid.as_str(), m.volume_name.as_str()))
            .collect();
        got.sort();
        assert_eq!(got, tc.expected_volumes, "{}", tc.name);
        // All uncertain: none certainly mounted (`GetMountedVolumes`), each possibly
        // (`GetPossiblyMountedVolumesForPod`), to be set up again.
        for (pod, volume) in &tc.expected_volumes {
            assert_eq!(asw.mounted_volumes_for_pod(pod).count(), 0, "{}", tc.name);
            assert_eq!(
                asw.possibly_mounted_volumes_for_pod(pod).count(),
                1,
                "{}",
                tc.name
            );
            assert!(asw.is_uncertain(volume), "{}", tc.name);
            assert!(asw.get(volume).unwrap().remount_required, "{}", tc.name);
        }
        let mut on_disk = vm.pods_on_disk();
        on_disk.sort();
        assert_eq!(on_disk, tc.expected_pods_on_disk, "{}", tc.name);
        if let Some((_, _, staged)) = tc.csi {
            let device = asw
                .mounted_volumes()
                .next()
                .and_then(|m| m.device.as_ref())
                .expect("its device");
            assert_eq!(
                (
                    device.source.driver.as_str(),
                    device.source.volume_handle.as_str(),
                    device.staged
                ),
                ("csi.rekube.io", "rk-1", staged),
                "{}",
                tc.name
            );
        }

        // The pods deleted: nothing unmounted before the desired state is whole, then
        // each pod's volume.
        let dsw = DesiredStateOfWorld::default();
        let none = BTreeSet::new();
        assert!(
            reconcile(&dsw, &asw, false, &none).is_empty(),
            "{}",
            tc.name
        );
        let unmounted: Vec<String> = tc
            .expected_volumes
            .iter()
            .map(|(_, v)| format!("unmount {v}"))
            .collect();
        assert_eq!(
            names(&reconcile(&dsw, &asw, true, &none)),
            unmounted,
            "{}",
            tc.name
        );
    }
}

#[test]
fn test_clean_orphan_volumes() {
    struct Case {
        name: &'static str,
        pod_infos: Vec<(&'static str, &'static str)>,
        expected_unmounts: usize,
    }
    let tests = [
        Case {
            name: "volume is in DSW and is not cleaned",
            pod_infos: vec![("pod1uid", "volume-name")],
            expected_unmounts: 0,
        },
        Case {
            name: "volume is not in DSW and is cleaned",
            pod_infos: vec![],
            expected_unmounts: 1,
        },
    ];
    for tc in tests {
        let (_root, dirs) = kubelet_dir();
        std::fs::create_dir_all(dirs.pod_volume_dir("pod1uid", EMPTY_DIR_PLUGIN, "volume-name"))
            .unwrap();
        let vm = manager(&dirs);
        vm.reconstruct();
        let asw = vm.state.lock().unwrap().1.clone();
        let mut dsw = DesiredStateOfWorld::default();
        for (pod, volume) in &tc.pod_infos {
            dsw.add_pod(
                pod,
                vec![(
                    volume.to_string(),
                    VolumeSpec::EmptyDir {
                        medium: None,
                        size_limit_bytes: None,
                    },
                )],
            );
        }

        let ops = reconcile(&dsw, &asw, true, &BTreeSet::new());

        let unmounts = ops
            .iter()
            .filter(|op| matches!(op, Operation::Unmount(_)))
            .count();
        assert_eq!(unmounts, tc.expected_unmounts, "{}: {ops:?}", tc.name);
    }
}

#[test]
fn test_reconstruct_volumes_mount() {
    struct Case {
        name: &'static str,
        expect_mount: bool,
    }
    let tests = [
        Case {
            name: "reconstructed volume is mounted",
            expect_mount: true,
        },
        Case {
            name: "reconstructed volume fails to mount",
            expect_mount: false,
        },
    ];
    for tc in tests {
        let (_root, dirs) = kubelet_dir();
        std::fs::create_dir_all(dirs.pod_volume_dir("pod1uid", LOCAL_PLUGIN, "volumename"))
            .unwrap();

        // Act 1: reconstruction. The volume is uncertain.
        let vm = manager(&dirs);
        vm.reconstruct();
        let mut asw = vm.state.lock().unwrap().1.clone();
        let volume_name = "kubernetes.io/local-volume/pod1uid-volumename";
        assert_eq!(
            asw.mounted_volumes_for_pod("pod1uid").count(),
            0,
            "{}",
            tc.name
        );
        assert_eq!(asw.mounted_volumes().count(), 1, "{}", tc.name);
        assert!(asw.is_uncertain(volume_name), "{}", tc.name);
        assert!(
            asw.get(volume_name).unwrap().remount_required,
            "{}",
            tc.name
        );

        // The populator adds the pod (its claim's volume named as its directory).
        let mut dsw = DesiredStateOfWorld::default();
        dsw.add_pod(
            "pod1uid",
            vec![("volume-name".into(), local_pv("volumename"))],
        );
        let active = BTreeSet::from(["pod1uid".to_string()]);

        // Act 2: reconcile once: set up again (MountDevice and SetUp), never torn down.
        let t0 = Instant::now();
        let mut operations = Operations::default();
        let ops = reconcile(&dsw, &asw, true, &active);
        assert_eq!(
            names(&ops),
            [format!("mount {volume_name} again")],
            "{}",
            tc.name
        );
        let started = operations.start(ops, &BTreeSet::new(), t0);
        let Some(Operation::Mount { volume, .. }) = started["pod1uid"].first() else {
            panic!("{}: {started:?}", tc.name);
        };
        if tc.expect_mount {
            // SetUp succeeded: the volume is fully mounted.
            let mut m = asw.get(volume_name).unwrap().clone();
            m.remount_required = false;
            m.outer_volume_spec_name = volume.outer_volume_spec_name.clone();
            asw.mark_volume_as_mounted(m);
            operations.finish("pod1uid", &[operation_key(&started["pod1uid"][0])], &[], t0);
            assert_eq!(
                asw.mounted_volumes_for_pod("pod1uid").count(),
                1,
                "{}",
                tc.name
            );
            assert!(
                reconcile(&dsw, &asw, true, &active).is_empty(),
                "{}",
                tc.name
            );
        } else {
            // SetUp failed: the volume stays uncertain, set up again after its back-off,
            // still not torn down.
            operations.finish("pod1uid", &[], &[operation_key(&started["pod1uid"][0])], t0);
            assert_eq!(
                asw.mounted_volumes_for_pod("pod1uid").count(),
                0,
                "{}",
                tc.name
            );
            assert!(asw.is_uncertain(volume_name), "{}", tc.name);
            assert!(
                asw.get(volume_name).unwrap().remount_required,
                "{}",
                tc.name
            );
            let ops = reconcile(&dsw, &asw, true, &active);
            assert_eq!(
                names(&ops),
                [format!("mount {volume_name} again")],
                "{}",
                tc.name
            );
            assert!(
                operations
                    .start(ops.clone(), &BTreeSet::new(), t0)
                    .is_empty()
            );
            assert_eq!(
                operations
                    .start(
                        ops,
                        &BTreeSet::new(),
                        t0 + super::super::expand::INITIAL_RETRY
                    )
                    .len(),
                1,
                "{}",
                tc.name
            );
        }
    }
}
