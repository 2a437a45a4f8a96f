//! Reconstruction of the actual state from the disk at start (pkg/kubelet/volumemanager/
//! reconciler/reconstruct.go `reconstructVolumes`): each volume directory an earlier agent
//! left under `pods/<uid>/volumes/<plugin>/<name>` becomes a mounted volume of that pod,
//! marked to be set up again (upstream's uncertain mount), so that the reconciler sets it
//! up again (idempotently: nothing a running pod wrote is lost) when the populator adds
//! the pod, or tears it down (through its driver, for a CSI volume known from its
//! `vol_data.json`) once every pod source has been seen and no pod wants it. A volume is
//! named as the populator names it (`<plugin>/<uid>-<directory name>`,
//! [`super::desired_state_of_world::unique_volume_name`]). Block volumes are found at the
//! pod's cleanup instead (`block.rs`); hostPath volumes have no directory.

use std::path::Path;

use super::VolumeManager;
use super::actual_state_of_world::{DeviceMount, MountedVolume};
use super::desired_state_of_world::unique_volume_name;
use crate::volume::csi::CsiSource;
use crate::volume::pod_dirs::{
    CONFIG_MAP_PLUGIN, CSI_PLUGIN, DOWNWARD_API_PLUGIN, EMPTY_DIR_PLUGIN, LOCAL_PLUGIN,
    PROJECTED_PLUGIN, PodDirs, SECRET_PLUGIN, unescape_qualified_name,
};

/// The plugins whose volume directories are reconstructed, with their mounter's
/// read-only attribute.
const RECONSTRUCTABLE: [(&str, bool); 6] = [
    (EMPTY_DIR_PLUGIN, false),
    (CONFIG_MAP_PLUGIN, true),
    (SECRET_PLUGIN, true),
    (DOWNWARD_API_PLUGIN, true),
    (PROJECTED_PLUGIN, true),
    (LOCAL_PLUGIN, false),
];

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The volumes of pod `uid` its directory holds, but for CSI ones (pure over the disk).
pub fn reconstruct_pod_volumes(dirs: &PodDirs, uid: &str) -> Vec<MountedVolume> {
    let mut found = Vec::new();
    for escaped in dir_names(&dirs.pod_volumes_dir(uid)) {
        let plugin = unescape_qualified_name(&escaped);
        let Some((plugin, read_only)) = RECONSTRUCTABLE.iter().find(|(p, _)| *p == plugin) else {
            continue;
        };
        for name in dir_names(&dirs.pod_volumes_dir(uid).join(&escaped)) {
            found.push(MountedVolume {
                volume_name: unique_volume_name(plugin, uid, &name),
                pod_uid: uid.to_string(),
                outer_volume_spec_name: name.clone(),
                plugin_name: plugin.to_string(),
                path: dirs.pod_volume_dir(uid, plugin, &name),
                block: false,
                read_only: *read_only,
                remount_required: true,
                device: None,
            });
        }
    }
    found
}

impl VolumeManager {
    /// Every pod directory's volumes (CSI ones from their `vol_data.json`, staged when
    /// their device mount path exists).
    pub(super) fn reconstruct_volumes(&self) -> Vec<MountedVolume> {
        let mut found = Vec::new();
        for uid in self.pods_on_disk() {
            found.extend(reconstruct_pod_volumes(&self.dirs, &uid));
            for v in crate::volume::csi::pod_csi_volumes_on_disk(&self.dirs, &uid) {
                let staged = self
                    .csi
                    .device_mount_path_exists(&v.driver, &v.volume_handle);
                found.push(MountedVolume {
                    volume_name: unique_volume_name(CSI_PLUGIN, &uid, &v.pv),
                    pod_uid: uid.clone(),
                    outer_volume_spec_name: v.pv.clone(),
                    plugin_name: CSI_PLUGIN.to_string(),
                    path: v.target.clone(),
                    block: false,
                    read_only: false,
                    remount_required: true,
                    device: Some(DeviceMount {
                        source: CsiSource {
                            driver: v.driver.clone(),
                            volume_handle: v.volume_handle.clone(),
                            fs_type: String::new(),
                            volume_attributes: Default::default(),
                            read_only: false,
                            access_mode: None,
                            mount_options: Vec::new(),
                        },
                        staged,
                    }),
                });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod directory as an earlier agent leaves it: each plugin's volume directories
    /// become mounted volumes to set up again, named as the populator names them; other
    /// directories (an unknown plugin, files) are not volumes.
    #[test]
    fn volumes_from_a_pod_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = PodDirs::new(tmp.path().join("pods"));
        for (plugin, name) in [
            (EMPTY_DIR_PLUGIN, "cache"),
            (CONFIG_MAP_PLUGIN, "conf"),
            (SECRET_PLUGIN, "creds"),
            (PROJECTED_PLUGIN, "kube-api-access-x"),
            (LOCAL_PLUGIN, "pv-1"),
            ("example.com/other", "x"),
        ] {
            std::fs::create_dir_all(dirs.pod_volume_dir("u1", plugin, name)).unwrap();
        }
        std::fs::write(
            dirs.pod_volume_dir("u1", EMPTY_DIR_PLUGIN, "")
                .join("stray-file"),
            b"",
        )
        .unwrap();
        let found = reconstruct_pod_volumes(&dirs, "u1");
        let names: Vec<(&str, &str, bool)> = found
            .iter()
            .map(|m| {
                (
                    m.volume_name.as_str(),
                    m.outer_volume_spec_name.as_str(),
                    m.read_only,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("kubernetes.io/configmap/u1-conf", "conf", true),
                ("kubernetes.io/empty-dir/u1-cache", "cache", false),
                ("kubernetes.io/local-volume/u1-pv-1", "pv-1", false),
                (
                    "kubernetes.io/projected/u1-kube-api-access-x",
                    "kube-api-access-x",
                    true
                ),
                ("kubernetes.io/secret/u1-creds", "creds", true),
            ]
        );
        assert!(found.iter().all(|m| m.remount_required && !m.block));
        assert_eq!(
            found[1].path,
            dirs.pod_volume_dir("u1", EMPTY_DIR_PLUGIN, "cache")
        );
        assert!(reconstruct_pod_volumes(&dirs, "absent").is_empty());
    }
}

#[cfg(test)]
#[path = "reconstruct_tests.rs"]
mod reconstruct_tests;
