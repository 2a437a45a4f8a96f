//! The volumes mounted on the node (pkg/kubelet/volumemanager/cache/
//! actual_state_of_world.go): what set-up succeeded for, where, and whether a
//! remount-requiring volume must be set up again. Pure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::desired_state_of_world::UniqueVolumeName;

/// One pod's mounted volume (`MountedVolume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    pub volume_name: UniqueVolumeName,
    pub pod_uid: String,
    pub outer_volume_spec_name: String,
    pub plugin_name: String,
    /// What containers mount (`GetPath`).
    pub path: PathBuf,
    /// The mounter's read-only attribute.
    pub read_only: bool,
    /// Set up again at the next reconcile (`MarkRemountRequired`).
    pub remount_required: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ActualStateOfWorld {
    mounted: BTreeMap<UniqueVolumeName, MountedVolume>,
}

impl ActualStateOfWorld {
    /// `MarkVolumeAsMounted`.
    pub fn mark_volume_as_mounted(&mut self, volume: MountedVolume) {
        self.mounted.insert(volume.volume_name.clone(), volume);
    }

    /// `MarkVolumeAsUnmounted`.
    pub fn mark_volume_as_unmounted(&mut self, volume_name: &str) {
        self.mounted.remove(volume_name);
    }

    /// `MarkRemountRequired` for every volume of the pod that needs it (`requires`).
    pub fn mark_remount_required(&mut self, pod_uid: &str, requires: impl Fn(&str) -> bool) {
        for v in self.mounted.values_mut() {
            if v.pod_uid == pod_uid && requires(&v.plugin_name) {
                v.remount_required = true;
            }
        }
    }

    /// `GetMountedVolumes`.
    pub fn mounted_volumes(&self) -> impl Iterator<Item = &MountedVolume> {
        self.mounted.values()
    }

    /// `GetMountedVolumesForPod`.
    pub fn mounted_volumes_for_pod(&self, pod_uid: &str) -> impl Iterator<Item = &MountedVolume> {
        self.mounted.values().filter(move |v| v.pod_uid == pod_uid)
    }

    pub fn get(&self, volume_name: &str) -> Option<&MountedVolume> {
        self.mounted.get(volume_name)
    }
}
