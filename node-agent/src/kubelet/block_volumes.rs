//! A container's block devices (kubelet_pods.go `makeBlockVolumes`): each
//! `volumeDevices` entry resolved against the pod's mapped Block volumes to a CRI
//! `Device` (the pod's device map symlink on the host, the `devicePath` in the
//! container, `mrw`, or `r` for a read-only volume). Pure: whether the symlink exists is
//! asked of the caller (upstream's `blkutil.IsSymlinkExist`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

/// A mapped Block volume as the container's devices need it (`kubecontainer.VolumeInfo`
/// with its `BlockVolumeMapper`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockVolumeInfo {
    /// The pod's device map symlink (`GetPodDeviceMapPath` joined with its name).
    pub map_path: PathBuf,
    /// The volume's `ReadOnly`.
    pub read_only: bool,
}

/// One device of the container (`kubecontainer.DeviceInfo`, the CRI `Device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub path_on_host: PathBuf,
    pub path_in_container: PathBuf,
    /// `mrw`, or `r` when the volume is read-only.
    pub permissions: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockVolumesError {
    #[error("error DevicePath `{0}` must be an absolute path")]
    RelativeDevicePath(String),
    #[error("cannot find volume {volume:?} to pass into container {container:?}")]
    MissingVolume { volume: String, container: String },
    /// `IsSymlinkExist` failed: its message.
    #[error("{0}")]
    Symlink(String),
}

/// `makeBlockVolumes`: the devices of `container`'s `volumeDevices`, in order; a volume
/// whose symlink is not there is left out, as upstream's.
pub fn make_block_volumes(
    container: &Container,
    volumes: &BTreeMap<String, BlockVolumeInfo>,
    is_symlink_exist: impl Fn(&Path) -> Result<bool, String>,
) -> Result<Vec<DeviceInfo>, BlockVolumesError> {
    let mut devices = Vec::new();
    for device in container.volume_devices.iter().flatten() {
        if !Path::new(&device.device_path).is_absolute() {
            return Err(BlockVolumesError::RelativeDevicePath(
                device.device_path.clone(),
            ));
        }
        let vol = volumes
            .get(&device.name)
            .ok_or_else(|| BlockVolumesError::MissingVolume {
                volume: device.name.clone(),
                container: container.name.clone(),
            })?;
        if is_symlink_exist(&vol.map_path).map_err(BlockVolumesError::Symlink)? {
            devices.push(DeviceInfo {
                path_on_host: vol.map_path.clone(),
                path_in_container: PathBuf::from(&device.device_path),
                permissions: if vol.read_only { "r" } else { "mrw" },
            });
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(devices: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "container1", "volumeDevices": devices
        }))
        .unwrap()
    }

    fn info(dir: &str, name: &str, read_only: bool) -> BlockVolumeInfo {
        BlockVolumeInfo {
            map_path: Path::new(dir).join(name),
            read_only,
        }
    }

    fn device(host: &str, container: &str, permissions: &'static str) -> DeviceInfo {
        DeviceInfo {
            path_on_host: host.into(),
            path_in_container: container.into(),
            permissions,
        }
    }

    /// kubelet_pods_linux_test.go `TestMakeBlockVolumes` (4/4; its stub block path
    /// handler says every symlink exists). "volume BlockVolumeMapper is nil" is a
    /// Filesystem volume: the agent keeps those apart, so it is missing here as well.
    #[test]
    fn make_block_volumes_as_upstream() {
        let always = |_: &Path| Ok(true);
        let volumes = BTreeMap::from([
            ("disk1".to_string(), info("/dev/", "sda", false)),
            (
                "disk2".to_string(),
                info("/dev/disk/by-path/", "diskPath", true),
            ),
            (
                "disk3".to_string(),
                info("/dev/disk/by-id/", "diskUuid", false),
            ),
            ("disk4".to_string(), info("/var/lib/", "rawdisk", true)),
        ]);
        let c = container(serde_json::json!([
            {"devicePath": "/dev/sda", "name": "disk1"},
            {"devicePath": "/dev/xvda", "name": "disk2"},
            {"devicePath": "/dev/xvdb", "name": "disk3"},
            {"devicePath": "/mnt/rawdisk", "name": "disk4"}
        ]));
        assert_eq!(
            make_block_volumes(&c, &volumes, always).unwrap(),
            [
                device("/dev/sda", "/dev/sda", "mrw"),
                device("/dev/disk/by-path/diskPath", "/dev/xvda", "r"),
                device("/dev/disk/by-id/diskUuid", "/dev/xvdb", "mrw"),
                device("/var/lib/rawdisk", "/mnt/rawdisk", "r"),
            ]
        );

        let disk = BTreeMap::from([("disk".to_string(), info("/dev/", "sda", false))]);
        let relative = container(serde_json::json!([
            {"devicePath": "must/be/absolute", "name": "disk"}
        ]));
        assert_eq!(
            make_block_volumes(&relative, &disk, always)
                .unwrap_err()
                .to_string(),
            "error DevicePath `must/be/absolute` must be an absolute path"
        );
        let missing = container(serde_json::json!([{"devicePath": "/dev/sdaa", "name": "disk"}]));
        assert_eq!(
            make_block_volumes(&missing, &BTreeMap::new(), always)
                .unwrap_err()
                .to_string(),
            "cannot find volume \"disk\" to pass into container \"container1\""
        );

        // The symlink not (yet) there: left out, as upstream's; a failed check is the
        // container's error.
        let c = container(serde_json::json!([{"devicePath": "/dev/xvda", "name": "disk"}]));
        assert_eq!(make_block_volumes(&c, &disk, |_| Ok(false)).unwrap(), []);
        assert_eq!(
            make_block_volumes(&c, &disk, |p| Err(format!(
                "failed to Lstat file {}: permission denied",
                p.display()
            )))
            .unwrap_err()
            .to_string(),
            "failed to Lstat file /dev/sda: permission denied"
        );
    }
}
