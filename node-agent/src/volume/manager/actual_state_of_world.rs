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
    /// What containers mount (`GetPath`); for a Block volume, the pod's device map
    /// symlink (`pods/<uid>/volumeDevices/<plugin>/<pv>`), what their devices name.
    pub path: PathBuf,
    /// A volumeMode Block volume, mapped rather than mounted (upstream's
    /// `BlockVolumeMapper` set, `Mounter` nil).
    pub block: bool,
    /// The mounter's read-only attribute.
    pub read_only: bool,
    /// Set up again at the next reconcile (`MarkRemountRequired`).
    pub remount_required: bool,
    /// A CSI volume: the driver's volume and whether it was staged (its device mount,
    /// upstream's `attachedVolume.deviceMountPath`), shared by the node's pods using it.
    pub device: Option<DeviceMount>,
}

/// A CSI volume as the node's device mount knows it (upstream's attached volume of a
/// device-mountable plugin): one per driver and volume handle, whatever pods use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMount {
    pub source: crate::volume::csi::CsiSource,
    /// NodeStageVolume was called (the driver has STAGE_UNSTAGE_VOLUME).
    pub staged: bool,
}

impl DeviceMount {
    fn same_volume(&self, other: &DeviceMount) -> bool {
        self.source.driver == other.source.driver
            && self.source.volume_handle == other.source.volume_handle
    }
}

#[derive(Debug, Clone, Default)]
pub struct ActualStateOfWorld {
    mounted: BTreeMap<UniqueVolumeName, MountedVolume>,
    /// The mounted volumes that may not be set up (upstream's `VolumeMountUncertain`): a
    /// volume reconstructed from the disk until it is set up again, a CSI volume until
    /// its expansion at mount is done. Torn down as mounted ones, never handed to
    /// containers.
    uncertain: std::collections::BTreeSet<UniqueVolumeName>,
}

impl ActualStateOfWorld {
    /// `MarkVolumeAsMounted`.
    pub fn mark_volume_as_mounted(&mut self, volume: MountedVolume) {
        self.uncertain.remove(&volume.volume_name);
        self.mounted.insert(volume.volume_name.clone(), volume);
    }

    /// `MarkVolumeMountAsUncertain`: the volume may be mounted (it is torn down as a
    /// mounted one) but is not set up for its pod.
    pub fn mark_volume_mount_as_uncertain(&mut self, volume: MountedVolume) {
        self.uncertain.insert(volume.volume_name.clone());
        self.mounted.insert(volume.volume_name.clone(), volume);
    }

    /// A volume marked uncertain is set up after all (its expansion at mount is done).
    pub fn mark_volume_mount_as_certain(&mut self, volume_name: &str) {
        self.uncertain.remove(volume_name);
    }

    pub fn is_uncertain(&self, volume_name: &str) -> bool {
        self.uncertain.contains(volume_name)
    }

    /// `MarkVolumeAsUnmounted`.
    pub fn mark_volume_as_unmounted(&mut self, volume_name: &str) {
        self.uncertain.remove(volume_name);
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

    /// `GetMountedVolumesForPod`: the pod's volumes set up (not uncertain).
    pub fn mounted_volumes_for_pod(&self, pod_uid: &str) -> impl Iterator<Item = &MountedVolume> {
        self.possibly_mounted_volumes_for_pod(pod_uid)
            .filter(|v| !self.uncertain.contains(&v.volume_name))
    }

    /// `GetPossiblyMountedVolumesForPod`: uncertain ones too (what a tear-down waits for).
    pub fn possibly_mounted_volumes_for_pod(
        &self,
        pod_uid: &str,
    ) -> impl Iterator<Item = &MountedVolume> {
        self.mounted.values().filter(move |v| v.pod_uid == pod_uid)
    }

    pub fn get(&self, volume_name: &str) -> Option<&MountedVolume> {
        self.mounted.get(volume_name)
    }

    /// Whether the device of `volume_name` must be unmounted (NodeUnstageVolume) once that
    /// volume is torn down: it was staged and no other mounted volume of the node uses the
    /// same driver volume (upstream's UnmountDevice after the last UnmountVolume).
    pub fn unmount_device_after(&self, volume_name: &str) -> bool {
        let Some(device) = self.get(volume_name).and_then(|m| m.device.as_ref()) else {
            return false;
        };
        device.staged && !self.device_used_by_others(device, volume_name)
    }

    /// Whether any mounted volume is `driver`'s volume `volume_handle`.
    pub fn volume_handle_in_use(&self, driver: &str, volume_handle: &str) -> bool {
        self.mounted.values().any(|m| {
            m.device.as_ref().is_some_and(|d| {
                d.source.driver == driver && d.source.volume_handle == volume_handle
            })
        })
    }

    /// Whether the node has `source`'s driver volume set up for some pod already, and if so
    /// whether it was staged (upstream's `GetDeviceMountState` is `DeviceGloballyMounted`:
    /// SetUpDevice is not called again).
    pub fn device_staged(&self, source: &crate::volume::csi::CsiSource) -> Option<bool> {
        self.mounted.values().find_map(|m| {
            m.device
                .as_ref()
                .filter(|d| {
                    d.source.driver == source.driver
                        && d.source.volume_handle == source.volume_handle
                })
                .map(|d| d.staged)
        })
    }

    /// Whether a mounted volume other than `volume_name` is `plugin`'s Block volume of the
    /// same PersistentVolume (the local plugin's global map path is per PV).
    pub fn block_volume_used_by_others(&self, volume_name: &str) -> bool {
        let Some(this) = self.get(volume_name) else {
            return false;
        };
        self.mounted.values().any(|m| {
            m.volume_name != volume_name
                && m.block
                && m.plugin_name == this.plugin_name
                && m.path.file_name() == this.path.file_name()
        })
    }

    /// Whether a mounted volume other than `volume_name` uses `device`'s driver volume.
    pub fn device_used_by_others(&self, device: &DeviceMount, volume_name: &str) -> bool {
        self.mounted.values().any(|m| {
            m.volume_name != volume_name && m.device.as_ref().is_some_and(|d| d.same_volume(device))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::csi::CsiSource;

    fn csi_volume(pod: &str, handle: &str, staged: bool) -> MountedVolume {
        MountedVolume {
            volume_name: format!("kubernetes.io/csi/{pod}-data"),
            pod_uid: pod.into(),
            outer_volume_spec_name: "data".into(),
            plugin_name: "kubernetes.io/csi".into(),
            path: format!("/pods/{pod}/mount").into(),
            block: false,
            read_only: false,
            remount_required: false,
            device: Some(DeviceMount {
                source: CsiSource {
                    driver: "csi.rekube.io".into(),
                    volume_handle: handle.into(),
                    fs_type: "ext4".into(),
                    volume_attributes: Default::default(),
                    read_only: false,
                    access_mode: None,
                    mount_options: vec![],
                },
                staged,
            }),
        }
    }

    /// The device is unstaged after the last pod's volume using it is torn down, never
    /// before; a driver that does not stage has nothing to unstage.
    #[test]
    fn device_unmounted_after_its_last_user() {
        let mut asw = ActualStateOfWorld::default();
        asw.mark_volume_as_mounted(csi_volume("a", "rk-1", true));
        asw.mark_volume_as_mounted(csi_volume("b", "rk-1", true));
        asw.mark_volume_as_mounted(csi_volume("c", "rk-2", true));
        asw.mark_volume_as_mounted(csi_volume("d", "rk-3", false));
        assert!(
            !asw.unmount_device_after("kubernetes.io/csi/a-data"),
            "b uses rk-1"
        );
        assert!(asw.unmount_device_after("kubernetes.io/csi/c-data"));
        assert!(
            !asw.unmount_device_after("kubernetes.io/csi/d-data"),
            "not staged"
        );
        assert!(
            !asw.unmount_device_after("kubernetes.io/csi/x-data"),
            "not mounted"
        );
        asw.mark_volume_as_unmounted("kubernetes.io/csi/a-data");
        assert!(
            asw.unmount_device_after("kubernetes.io/csi/b-data"),
            "the last user"
        );
        let other_driver = {
            let mut v = csi_volume("e", "rk-2", true);
            v.device.as_mut().unwrap().source.driver = "other.io".into();
            v
        };
        asw.mark_volume_as_mounted(other_driver);
        assert!(
            asw.unmount_device_after("kubernetes.io/csi/c-data"),
            "another driver's handle is another volume"
        );
        let source = |driver: &str, handle: &str| CsiSource {
            driver: driver.into(),
            volume_handle: handle.into(),
            fs_type: String::new(),
            volume_attributes: Default::default(),
            read_only: false,
            access_mode: None,
            mount_options: vec![],
        };
        assert_eq!(
            asw.device_staged(&source("csi.rekube.io", "rk-2")),
            Some(true)
        );
        assert_eq!(
            asw.device_staged(&source("csi.rekube.io", "rk-3")),
            Some(false)
        );
        assert_eq!(asw.device_staged(&source("csi.rekube.io", "rk-9")), None);
    }

    /// A Block volume's global map path goes after the node's last pod mapping the same
    /// PersistentVolume through the same plugin.
    #[test]
    fn block_volume_users() {
        let local = |pod: &str, pv: &str| MountedVolume {
            volume_name: format!("kubernetes.io/local-volume/{pod}-raw"),
            pod_uid: pod.into(),
            outer_volume_spec_name: "raw".into(),
            plugin_name: "kubernetes.io/local-volume".into(),
            path: format!("/pods/{pod}/volumeDevices/kubernetes.io~local-volume/{pv}").into(),
            block: true,
            read_only: false,
            remount_required: false,
            device: None,
        };
        let mut asw = ActualStateOfWorld::default();
        asw.mark_volume_as_mounted(local("a", "pv1"));
        asw.mark_volume_as_mounted(local("b", "pv1"));
        asw.mark_volume_as_mounted(local("c", "pv2"));
        let mut filesystem = local("d", "pv2");
        filesystem.block = false;
        asw.mark_volume_as_mounted(filesystem);
        assert!(asw.block_volume_used_by_others("kubernetes.io/local-volume/a-raw"));
        assert!(!asw.block_volume_used_by_others("kubernetes.io/local-volume/c-raw"));
        assert!(!asw.block_volume_used_by_others("kubernetes.io/local-volume/x-raw"));
        asw.mark_volume_as_unmounted("kubernetes.io/local-volume/b-raw");
        assert!(!asw.block_volume_used_by_others("kubernetes.io/local-volume/a-raw"));
    }
}
