//! Where a pod's volumes live on the node (kubelet_getters.go): under the agent's
//! `--root-dir`, `pods/<uid>/volumes/<escaped plugin name>/<volume name>`, and each
//! plugin's own per-volume state under `pods/<uid>/plugins/<escaped plugin name>/<volume
//! name>`. Pure but for [`pod_block_volumes_on_disk`], which reads a pod's directory.

use std::path::{Path, PathBuf};

/// The plugins' names, as upstream's.
pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io/empty-dir";
pub const HOST_PATH_PLUGIN: &str = "kubernetes.io/host-path";
pub const CONFIG_MAP_PLUGIN: &str = "kubernetes.io/configmap";
pub const SECRET_PLUGIN: &str = "kubernetes.io/secret";
pub const DOWNWARD_API_PLUGIN: &str = "kubernetes.io/downward-api";
pub const PROJECTED_PLUGIN: &str = "kubernetes.io/projected";
pub const LOCAL_PLUGIN: &str = "kubernetes.io/local-volume";
pub const CSI_PLUGIN: &str = "kubernetes.io/csi";

/// upstream's `EscapeQualifiedName`: `/` becomes `~` (a plugin name as a directory name).
pub fn escape_qualified_name(name: &str) -> String {
    name.replace('/', "~")
}

/// The inverse of [`escape_qualified_name`].
pub fn unescape_qualified_name(name: &str) -> String {
    name.replace('~', "/")
}

/// The pods' directories under one root (`<root-dir>/pods`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDirs {
    pods: PathBuf,
}

impl PodDirs {
    /// `pods` is the directory holding one directory per pod UID.
    pub fn new(pods: impl Into<PathBuf>) -> Self {
        PodDirs { pods: pods.into() }
    }

    /// `<root>/pods`.
    pub fn root(&self) -> &Path {
        &self.pods
    }

    /// `getPodDir`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods.join(uid)
    }

    /// `getPodVolumesDir`.
    pub fn pod_volumes_dir(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("volumes")
    }

    /// `getPodVolumeDir`: where the volume's content is (what containers mount).
    pub fn pod_volume_dir(&self, uid: &str, plugin: &str, volume: &str) -> PathBuf {
        self.pod_volumes_dir(uid)
            .join(escape_qualified_name(plugin))
            .join(volume)
    }

    /// `getPodVolumeDeviceDir`: where a plugin's block volumes of the pod are mapped
    /// (`pods/<uid>/volumeDevices/<escaped plugin>`, its `GetPodDeviceMapPath`), one
    /// symlink per volume, named after its PersistentVolume.
    pub fn pod_volume_device_dir(&self, uid: &str, plugin: &str) -> PathBuf {
        self.pod_dir(uid)
            .join("volumeDevices")
            .join(escape_qualified_name(plugin))
    }

    /// `getPodPluginDir` for one volume: the plugin's own state for it (emptyDir's `ready`
    /// marker).
    pub fn pod_plugin_dir(&self, uid: &str, plugin: &str, volume: &str) -> PathBuf {
        self.pod_dir(uid)
            .join("plugins")
            .join(escape_qualified_name(plugin))
            .join(volume)
    }
}

/// The PVs of pod `uid` that `plugin` maps, as the pod's directory says
/// (`pods/<uid>/volumeDevices/<escaped plugin>/<pv>`, whatever the entry is), sorted.
pub fn pod_block_volumes_on_disk(dirs: &PodDirs, uid: &str, plugin: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dirs.pod_volume_device_dir(uid, plugin))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_block_volumes_from_the_pods_directory_by_plugin() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = PodDirs::new(tmp.path());
        assert!(pod_block_volumes_on_disk(&dirs, "u1", CSI_PLUGIN).is_empty());
        let csi = dirs.pod_volume_device_dir("u1", CSI_PLUGIN);
        std::fs::create_dir_all(&csi).unwrap();
        std::os::unix::fs::symlink("/x", csi.join("pv-b")).unwrap();
        std::os::unix::fs::symlink("/y", csi.join("pv-a")).unwrap();
        let local = dirs.pod_volume_device_dir("u1", LOCAL_PLUGIN);
        std::fs::create_dir_all(local.join("pv-l")).unwrap();
        assert_eq!(
            pod_block_volumes_on_disk(&dirs, "u1", CSI_PLUGIN),
            ["pv-a", "pv-b"]
        );
        assert_eq!(
            pod_block_volumes_on_disk(&dirs, "u1", LOCAL_PLUGIN),
            ["pv-l"]
        );
        assert!(pod_block_volumes_on_disk(&dirs, "u2", LOCAL_PLUGIN).is_empty());
    }

    #[test]
    fn layout_is_upstreams() {
        let dirs = PodDirs::new("/var/lib/rekube/pods");
        assert_eq!(
            dirs.pod_volume_dir("u1", EMPTY_DIR_PLUGIN, "cache"),
            Path::new("/var/lib/rekube/pods/u1/volumes/kubernetes.io~empty-dir/cache")
        );
        assert_eq!(
            dirs.pod_plugin_dir("u1", EMPTY_DIR_PLUGIN, "cache"),
            Path::new("/var/lib/rekube/pods/u1/plugins/kubernetes.io~empty-dir/cache")
        );
        assert_eq!(
            dirs.pod_volume_device_dir("u1", CSI_PLUGIN),
            Path::new("/var/lib/rekube/pods/u1/volumeDevices/kubernetes.io~csi")
        );
        assert_eq!(
            unescape_qualified_name(&escape_qualified_name(CONFIG_MAP_PLUGIN)),
            CONFIG_MAP_PLUGIN
        );
    }
}
