//! What the reconciler does next (pkg/kubelet/volumemanager/reconciler/
//! reconciler_common.go): unmount the volumes no pod wants any more first, then mount the
//! wanted ones that are not mounted or must be set up again. Pure: the operations are
//! carried out by the volume manager's shell (`operation_executor.rs`).
//!
//! Unmounts wait until the desired state is whole (upstream's `readyToUnmount`: every pod
//! source has been seen and the populator has added its pods), so that a volume an earlier
//! agent left for a running pod is not torn down before the populator adds that pod; and
//! a volume of a pod that still runs (`active`: its containers are not known stopped) is
//! never unmounted, even when the populator could not add it (its claim unreadable for a
//! moment): a pod's volumes cannot change while it runs.

use std::collections::BTreeSet;

use super::actual_state_of_world::{ActualStateOfWorld, MountedVolume};
use super::desired_state_of_world::{DesiredStateOfWorld, VolumeToMount};

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `UnmountVolume` (`unmountVolumes`).
    Unmount(MountedVolume),
    /// `MountVolume` (`mountOrAttachVolumes`); `remount`: it is mounted and set up again.
    Mount {
        volume: VolumeToMount,
        remount: bool,
    },
}

/// The operations one reconcile pass carries out, unmounts first (upstream's order).
/// `ready_to_unmount`: the desired state is whole; `active`: the pods whose containers
/// may run.
pub fn reconcile(
    dsw: &DesiredStateOfWorld,
    asw: &ActualStateOfWorld,
    ready_to_unmount: bool,
    active: &BTreeSet<String>,
) -> Vec<Operation> {
    let mut ops: Vec<Operation> = asw
        .mounted_volumes()
        .filter(|_| ready_to_unmount)
        .filter(|m| !dsw.volume_exists(&m.volume_name) && !active.contains(&m.pod_uid))
        .cloned()
        .map(Operation::Unmount)
        .collect();
    // A volume the pod names twice (one claim in two pod volumes) is one volume, mounted
    // once (upstream's one `VolumeToMount` with two outer names).
    let mut seen = BTreeSet::new();
    for v in dsw.volumes_to_mount() {
        if !seen.insert(v.volume_name.as_str()) {
            continue;
        }
        match asw.get(&v.volume_name) {
            None => ops.push(Operation::Mount {
                volume: v.clone(),
                remount: false,
            }),
            Some(m) if m.remount_required => ops.push(Operation::Mount {
                volume: v.clone(),
                remount: true,
            }),
            Some(_) => {}
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::plugins::VolumeSpec;

    fn empty_dir() -> VolumeSpec {
        VolumeSpec::EmptyDir {
            medium: None,
            size_limit_bytes: None,
        }
    }

    fn config_map() -> VolumeSpec {
        VolumeSpec::ConfigMap(Default::default())
    }

    fn mounted(v: &VolumeToMount) -> MountedVolume {
        MountedVolume {
            volume_name: v.volume_name.clone(),
            pod_uid: v.pod_uid.clone(),
            outer_volume_spec_name: v.outer_volume_spec_name.clone(),
            plugin_name: v.spec.plugin_name().to_string(),
            path: format!("/pods/{}", v.volume_name).into(),
            block: false,
            read_only: v.spec.read_only(),
            remount_required: false,
            device: None,
        }
    }

    fn names(ops: &[Operation]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                Operation::Unmount(m) => format!("unmount {}", m.volume_name),
                Operation::Mount { volume, remount } => {
                    format!(
                        "mount {}{}",
                        volume.volume_name,
                        if *remount { " again" } else { "" }
                    )
                }
            })
            .collect()
    }

    #[test]
    fn mounts_what_is_wanted_and_unmounts_the_rest_first() {
        let none = BTreeSet::new();
        let mut dsw = DesiredStateOfWorld::default();
        let mut asw = ActualStateOfWorld::default();
        dsw.add_pod(
            "u1",
            vec![("cache".into(), empty_dir()), ("conf".into(), config_map())],
        );
        assert_eq!(
            names(&reconcile(&dsw, &asw, true, &none)),
            [
                "mount kubernetes.io/empty-dir/u1-cache",
                "mount kubernetes.io/configmap/u1-conf"
            ]
        );
        let wanted: Vec<VolumeToMount> = dsw.volumes_to_mount().cloned().collect();
        for v in &wanted {
            asw.mark_volume_as_mounted(mounted(v));
        }
        assert!(
            reconcile(&dsw, &asw, true, &none).is_empty(),
            "all mounted: nothing to do"
        );
        // The pod synced again: its configMap is set up again, its emptyDir is not.
        asw.mark_remount_required("u1", |plugin| plugin == "kubernetes.io/configmap");
        assert_eq!(
            names(&reconcile(&dsw, &asw, true, &none)),
            ["mount kubernetes.io/configmap/u1-conf again"]
        );
        asw.mark_volume_as_mounted(mounted(&wanted[1]));
        // A second pod arrives as the first goes: unmounts come first.
        dsw.delete_pod("u1");
        dsw.add_pod("u2", vec![("cache".into(), empty_dir())]);
        assert_eq!(
            names(&reconcile(&dsw, &asw, false, &none)),
            ["mount kubernetes.io/empty-dir/u2-cache"],
            "no unmount before the desired state is whole"
        );
        let u1 = BTreeSet::from(["u1".to_string()]);
        assert_eq!(
            names(&reconcile(&dsw, &asw, true, &u1)),
            ["mount kubernetes.io/empty-dir/u2-cache"],
            "no unmount of a pod that may still run"
        );
        assert_eq!(
            names(&reconcile(&dsw, &asw, true, &none)),
            [
                "unmount kubernetes.io/configmap/u1-conf",
                "unmount kubernetes.io/empty-dir/u1-cache",
                "mount kubernetes.io/empty-dir/u2-cache"
            ]
        );
        assert!(!dsw.pod_exists("u1") && dsw.pod_exists("u2"));
    }

    /// A claim-backed volume is named after its PersistentVolume, as its directory is, so
    /// that the volume an earlier agent left (reconstructed, to be set up again) is the
    /// one the populator adds: set up again while its pod runs, torn down once it is gone.
    #[test]
    fn reconstructed_volumes_are_set_up_again_or_torn_down() {
        let local = VolumeSpec::Persistent {
            pv_name: "pv-1".into(),
            read_only: false,
            source: crate::volume::plugins::PersistentSource::Local {
                path: "/mnt/disk".into(),
            },
        };
        let mut dsw = DesiredStateOfWorld::default();
        dsw.add_pod("u1", vec![("data".into(), local.clone())]);
        let v = dsw.volumes_to_mount().next().unwrap().clone();
        assert_eq!(v.volume_name, "kubernetes.io/local-volume/u1-pv-1");
        assert_eq!(v.outer_volume_spec_name, "data");
        let mut asw = ActualStateOfWorld::default();
        let reconstructed = |pod: &str| MountedVolume {
            volume_name: format!("kubernetes.io/local-volume/{pod}-pv-1"),
            pod_uid: pod.into(),
            outer_volume_spec_name: "pv-1".into(),
            plugin_name: "kubernetes.io/local-volume".into(),
            path: format!("/pods/{pod}/volumes/kubernetes.io~local-volume/pv-1").into(),
            block: false,
            read_only: false,
            remount_required: true,
            device: None,
        };
        asw.mark_volume_as_mounted(reconstructed("u1"));
        asw.mark_volume_as_mounted(reconstructed("gone"));
        let none = BTreeSet::new();
        assert_eq!(
            names(&reconcile(&dsw, &asw, true, &none)),
            [
                "unmount kubernetes.io/local-volume/gone-pv-1",
                "mount kubernetes.io/local-volume/u1-pv-1 again"
            ]
        );
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod reconciler_tests;
