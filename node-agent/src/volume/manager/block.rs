//! The volume manager's operations for volumeMode Block volumes (operation_generator.go's
//! `GenerateMapVolumeFunc`, `GenerateUnmapVolumeFunc` and `GenerateUnmapDeviceFunc`), over
//! the block volume mappers of the csi plugin ([`crate::volume::csi_block`]) and the local
//! plugin ([`crate::volume::local`]) and the mapping of the device for the pod
//! ([`crate::volume::volume_path_handler`]).
//!
//! Map: (WaitForAttach,) SetUpDevice unless the node's device is set up already,
//! MapPodDevice, the device path's symlinks resolved, MapBlockVolume; a failure after the
//! device was set up undoes what was done, so nothing is left for a pod that may never
//! start. Unmap: UnmapBlockVolume, UnmapPodDevice, and after the node's last user of the
//! volume UnmapDevice (no pod's bind left under the global map path, TearDownDevice, the
//! global map path removed). The volume is recorded unmounted once all of it succeeded.
//!
//! The block volume path handler's work (mounts, loop device ioctls, DetachFileDevice's
//! wait of up to 2 s) runs on tokio's blocking pool ([`VolumeManager::with_path_handler`]),
//! so that an unmap holding the CSI operations lock blocks no worker of the runtime; the
//! synchronous [`VolumeManager::unmount_pod`] still unmaps an earlier agent's local Block
//! volumes on its caller's thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::VolumeManager;
use super::actual_state_of_world::{DeviceMount, MountedVolume};
use super::desired_state_of_world::VolumeToMount;
use super::{ObjectReader, pod_csi_handles_on_disk};
use crate::volume::csi::CsiSource;
use crate::volume::csi_block;
use crate::volume::local;
use crate::volume::plugins::{BlockSource, VolumeSpec};
use crate::volume::pod_dirs::{CSI_PLUGIN, LOCAL_PLUGIN, pod_block_volumes_on_disk};
use crate::volume::volume_path_handler::{
    BlockVolumePathHandler, get_device_bind_mount_refs, remove_map_path,
};

/// operation_generator.go's `GenerateError` text: `<prefix> for volume "<pv>" : <cause>`.
fn error(prefix: &str, pv: &str, cause: impl std::fmt::Display) -> String {
    format!("{prefix} for volume {pv:?} : {cause}")
}

/// The PV name of a Block volume's pod device map path (the symlink is named after it).
fn pv_of(m: &MountedVolume) -> String {
    m.path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl VolumeManager {
    fn path_handler(&self) -> BlockVolumePathHandler<'_> {
        BlockVolumePathHandler {
            sys: self.sys.as_ref(),
            loops: self.loops.as_ref(),
        }
    }

    /// `f` with the block volume path handler, on tokio's blocking pool (see the module's
    /// doc); a panic in `f` is resumed here.
    async fn with_path_handler<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BlockVolumePathHandler<'_>) -> T + Send + 'static,
    ) -> T {
        let (sys, loops) = (Arc::clone(&self.sys), Arc::clone(&self.loops));
        let task = tokio::task::spawn_blocking(move || {
            f(&BlockVolumePathHandler {
                sys: sys.as_ref(),
                loops: loops.as_ref(),
            })
        });
        match task.await {
            Ok(value) => value,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("the block volume path handler's task: {e}"),
            },
        }
    }

    /// `GenerateMapVolumeFunc` for one pod's Block volume; `Err`: the FailedMapVolume
    /// event's message.
    pub(super) async fn map_volume<R: ObjectReader>(
        &self,
        volume: &VolumeToMount,
        reader: &R,
    ) -> Result<(), String> {
        let VolumeSpec::Block {
            pv_name, source, ..
        } = &volume.spec
        else {
            return Err(format!(
                "volume {:?} is not a block volume",
                volume.outer_volume_spec_name
            ));
        };
        let read_only = volume.spec.read_only();
        let (path, device) = match source {
            BlockSource::Csi(source) => {
                let publish_context = self
                    .verify_attached(reader, "MapVolume", pv_name, source)
                    .await?;
                self.map_csi_volume(volume, pv_name, read_only, source, publish_context)
                    .await?
            }
            BlockSource::Local { path } => {
                (self.map_local_volume(volume, pv_name, path).await?, None)
            }
        };
        self.state
            .lock()
            .unwrap()
            .1
            .mark_volume_as_mounted(MountedVolume {
                volume_name: volume.volume_name.clone(),
                pod_uid: volume.pod_uid.clone(),
                outer_volume_spec_name: volume.outer_volume_spec_name.clone(),
                plugin_name: volume.spec.plugin_name().to_string(),
                path,
                block: true,
                read_only,
                remount_required: false,
                device,
            });
        Ok(())
    }

    /// The csi plugin's part of the map: the volume's data, SetUpDevice (NodeStageVolume)
    /// unless another pod's volume has the device set up, MapPodDevice
    /// (NodePublishVolume), the device mapped for the pod. The pod's device map path and
    /// the device, or the event's message.
    async fn map_csi_volume(
        &self,
        volume: &VolumeToMount,
        pv: &str,
        read_only: bool,
        source: &CsiSource,
        publish_context: std::collections::HashMap<String, String>,
    ) -> Result<(PathBuf, Option<DeviceMount>), String> {
        let _one_at_a_time = self.csi_operations.lock().await;
        let uid = volume.pod_uid.as_str();
        self.csi.save_block_volume_data(pv, source).map_err(|e| {
            error(
                "MapVolume.NewBlockVolumeMapper initialization failed",
                pv,
                format!("kubernetes.io/csi: csi.NewBlockVolumeMapper failed to save volume info data: {e}"),
            )
        })?;
        let set_up = self.state.lock().unwrap().1.device_staged(source);
        let staged = match set_up {
            Some(staged) => staged,
            None => self
                .csi
                .set_up_device(pv, source, &publish_context)
                .await
                .map_err(|e| e.to_string())?,
        };
        let global = csi_block::global_map_path(self.csi.plugin_dir(), pv);
        let (map_dir, name) = csi_block::pod_device_map_path(&self.dirs, uid, pv);
        let mapped = async {
            let publish = self
                .csi
                .map_pod_device(pv, uid, read_only, source, &publish_context)
                .await
                .map_err(|e| e.to_string())?;
            let device = std::fs::canonicalize(&publish)
                .map_err(|e| error("MapVolume.EvalHostSymlinks failed", pv, e))?;
            let (global, map_dir, name, uid) = (
                global.clone(),
                map_dir.clone(),
                name.clone(),
                uid.to_string(),
            );
            self.with_path_handler(move |h| {
                h.map_block_volume(&device, &global, &map_dir, &name, &uid)
            })
            .await
            .map_err(|e| error("MapVolume.MapBlockVolume failed", pv, e))
        };
        if let Err(message) = mapped.await {
            // Nothing left half-mapped: unmapped, unpublished, and unstaged when no other
            // pod of the node has the volume.
            let used = set_up.is_some();
            if let Err(e) = self
                .unmap_csi(
                    pv,
                    uid,
                    &map_dir,
                    &source.driver,
                    &source.volume_handle,
                    !used,
                )
                .await
            {
                tracing::warn!(pod_uid = %uid, pv, error = %e, "undoing a failed map");
            }
            return Err(message);
        }
        Ok((
            map_dir.join(name),
            Some(DeviceMount {
                source: source.clone(),
                staged,
            }),
        ))
    }

    /// The local plugin's part of the map: MapPodDevice (the PV's path, resolved), the
    /// device mapped for the pod. The pod's device map path, or the event's message.
    async fn map_local_volume(
        &self,
        volume: &VolumeToMount,
        pv: &str,
        path: &str,
    ) -> Result<PathBuf, String> {
        let uid = volume.pod_uid.clone();
        let device = local::map_pod_device(pv, path)
            .map_err(|e| error("MapVolume.MapPodDevice failed", pv, e))?;
        let global = local::block_global_map_path(&self.plugins_dir, pv);
        let map_dir = self.dirs.pod_volume_device_dir(&uid, LOCAL_PLUGIN);
        let link = map_dir.join(pv);
        let pv = pv.to_string();
        self.with_path_handler(move |h| {
            h.map_block_volume(&device, &global, &map_dir, &pv, &uid)
                .map_err(|e| {
                    if let Err(undo) = h.unmap_block_volume(&global, &map_dir, &pv, &uid) {
                        tracing::warn!(pod_uid = %uid, pv, error = %undo, "undoing a failed map");
                    }
                    error("MapVolume.MapBlockVolume failed", &pv, e)
                })
        })
        .await?;
        Ok(link)
    }

    /// `GenerateUnmapVolumeFunc` for a mapped Block volume, then `GenerateUnmapDeviceFunc`
    /// when no other pod of the node has it; recorded unmounted only once all succeeded.
    pub(super) async fn unmap_volume(&self, m: &MountedVolume) -> Result<(), String> {
        if m.plugin_name != CSI_PLUGIN {
            let (pv, map_dir, last) = self.local_unmap_of(m)?;
            let global = local::block_global_map_path(&self.plugins_dir, &pv);
            let uid = m.pod_uid.clone();
            self.with_path_handler(move |h| unmap_local(h, &global, &pv, &uid, &map_dir, last))
                .await?;
            self.state
                .lock()
                .unwrap()
                .1
                .mark_volume_as_unmounted(&m.volume_name);
            return Ok(());
        }
        let Some(device) = &m.device else {
            return Err(format!(
                "volume {:?} of pod {} has no CSI device recorded",
                m.outer_volume_spec_name, m.pod_uid
            ));
        };
        let _one_at_a_time = self.csi_operations.lock().await;
        let pv = pv_of(m);
        let last = !self
            .state
            .lock()
            .unwrap()
            .1
            .device_used_by_others(device, &m.volume_name);
        let map_dir = m.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        self.unmap_csi(
            &pv,
            &m.pod_uid,
            &map_dir,
            &device.source.driver,
            &device.source.volume_handle,
            last,
        )
        .await?;
        self.state
            .lock()
            .unwrap()
            .1
            .mark_volume_as_unmounted(&m.volume_name);
        Ok(())
    }

    /// UnmapBlockVolume, UnmapPodDevice (NodeUnpublishVolume), and with `unmap_device`
    /// UnmapDevice (NodeUnstageVolume, the volume's files): a CSI Block volume of pod
    /// `uid` whose symlink is in `map_dir`.
    async fn unmap_csi(
        &self,
        pv: &str,
        uid: &str,
        map_dir: &Path,
        driver: &str,
        volume_handle: &str,
        unmap_device: bool,
    ) -> Result<(), String> {
        let global = csi_block::global_map_path(self.csi.plugin_dir(), pv);
        let (map_dir, name, pod) = (map_dir.to_path_buf(), pv.to_string(), uid.to_string());
        self.with_path_handler(move |h| h.unmap_block_volume(&global, &map_dir, &name, &pod))
            .await
            .map_err(|e| error("UnmapVolume.UnmapBlockVolume failed", pv, e))?;
        self.csi
            .unmap_pod_device(pv, uid, driver, volume_handle)
            .await
            .map_err(|e| e.to_string())?;
        if unmap_device {
            self.unmap_csi_device(pv, driver, volume_handle).await?;
        }
        Ok(())
    }

    /// `GenerateUnmapDeviceFunc` for a CSI Block volume: refused while a pod's bind is
    /// left under the global map path; TearDownDevice; the global map path removed.
    async fn unmap_csi_device(
        &self,
        pv: &str,
        driver: &str,
        volume_handle: &str,
    ) -> Result<(), String> {
        let global = csi_block::global_map_path(self.csi.plugin_dir(), pv);
        check_no_device_refs(pv, &global)?;
        self.csi
            .tear_down_device(pv, driver, volume_handle)
            .await
            .map_err(|e| e.to_string())?;
        remove_map_path(&global).map_err(|e| error("UnmapDevice.RemoveMapPath failed", pv, e))
    }

    /// A local Block volume's unmap: its PV, the pod's device map directory, and whether
    /// the pod is the node's last user of the PV.
    fn local_unmap_of(&self, m: &MountedVolume) -> Result<(String, PathBuf, bool), String> {
        if m.plugin_name != LOCAL_PLUGIN {
            return Err(format!(
                "volume {:?} of pod {} is a {} block volume: it is unmapped through its driver",
                m.outer_volume_spec_name, m.pod_uid, m.plugin_name
            ));
        }
        let last = !self
            .state
            .lock()
            .unwrap()
            .1
            .block_volume_used_by_others(&m.volume_name);
        let map_dir = m.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        Ok((pv_of(m), map_dir, last))
    }

    /// The local plugin's unmap ([`unmap_local`]) on the caller's thread, for the
    /// synchronous [`VolumeManager::unmount_pod`]; [`Self::unmap_volume`] is the same on the
    /// blocking pool.
    pub(super) fn unmap_local_volume(&self, m: &MountedVolume) -> Result<(), String> {
        let (pv, map_dir, last) = self.local_unmap_of(m)?;
        let global = local::block_global_map_path(&self.plugins_dir, &pv);
        unmap_local(
            &self.path_handler(),
            &global,
            &pv,
            &m.pod_uid,
            &map_dir,
            last,
        )?;
        self.state
            .lock()
            .unwrap()
            .1
            .mark_volume_as_unmounted(&m.volume_name);
        Ok(())
    }

    /// The CSI Block volumes the pod's directory maps that the actual state does not
    /// know (an earlier agent mapped them): unmapped and unpublished with the driver and
    /// handle of the PV's block volume data, and unstaged when neither the actual state
    /// nor another pod's directory has the volume.
    pub(super) async fn unmap_csi_block_volumes_on_disk(&self, uid: &str) -> Result<(), String> {
        for pv in pod_block_volumes_on_disk(&self.dirs, uid, CSI_PLUGIN) {
            let _one_at_a_time = self.csi_operations.lock().await;
            let map_dir = self.dirs.pod_volume_device_dir(uid, CSI_PLUGIN);
            let Some((driver, handle)) = self.csi.load_block_volume_data(&pv) else {
                // Its data is gone (its device was torn down): only the pod's map is left.
                tracing::warn!(pod_uid = %uid, pv, "a block volume's map without its vol_data.json: unmapped only");
                let global = csi_block::global_map_path(self.csi.plugin_dir(), &pv);
                let (name, pod) = (pv.clone(), uid.to_string());
                self.with_path_handler(move |h| {
                    h.unmap_block_volume(&global, &map_dir, &name, &pod)
                })
                .await
                .map_err(|e| error("UnmapVolume.UnmapBlockVolume failed", &pv, e))?;
                continue;
            };
            tracing::info!(pod_uid = %uid, pv, driver, "unmapping a CSI block volume known from its vol_data.json");
            let in_actual_state = self
                .state
                .lock()
                .unwrap()
                .1
                .volume_handle_in_use(&driver, &handle);
            let on_disk_elsewhere = self.pods_on_disk().iter().any(|other| {
                other != uid
                    && pod_csi_handles_on_disk(&self.dirs, other)
                        .iter()
                        .any(|(d, h)| *d == driver && *h == handle)
            });
            self.unmap_csi(
                &pv,
                uid,
                &map_dir,
                &driver,
                &handle,
                !in_actual_state && !on_disk_elsewhere,
            )
            .await?;
        }
        Ok(())
    }

    /// The local Block volumes the pod's directory maps that the actual state does not
    /// know: unmapped, the global map path removed after the node's last user.
    pub(super) fn unmap_local_block_volumes_on_disk(&self, uid: &str) -> Result<(), String> {
        let map_dir = self.dirs.pod_volume_device_dir(uid, LOCAL_PLUGIN);
        for pv in pod_block_volumes_on_disk(&self.dirs, uid, LOCAL_PLUGIN) {
            let used_elsewhere = {
                let state = self.state.lock().unwrap();
                state
                    .1
                    .mounted_volumes()
                    .any(|m| m.block && m.plugin_name == LOCAL_PLUGIN && pv_of(m) == pv)
            } || self.pods_on_disk().iter().any(|other| {
                other != uid
                    && pod_block_volumes_on_disk(&self.dirs, other, LOCAL_PLUGIN).contains(&pv)
            });
            let global = local::block_global_map_path(&self.plugins_dir, &pv);
            unmap_local(
                &self.path_handler(),
                &global,
                &pv,
                uid,
                &map_dir,
                !used_elsewhere,
            )?;
        }
        Ok(())
    }
}

/// The local plugin's unmap: UnmapBlockVolume, then with `unmap_device` (after the node's
/// last pod mapping the PV) UnmapDevice (the global map path removed: there is nothing to
/// tear down).
fn unmap_local(
    h: &BlockVolumePathHandler<'_>,
    global: &Path,
    pv: &str,
    uid: &str,
    map_dir: &Path,
    unmap_device: bool,
) -> Result<(), String> {
    h.unmap_block_volume(global, map_dir, pv, uid)
        .map_err(|e| error("UnmapVolume.UnmapBlockVolume failed", pv, e))?;
    if unmap_device {
        check_no_device_refs(pv, global)?;
        remove_map_path(global).map_err(|e| error("UnmapDevice.RemoveMapPath failed", pv, e))?;
    }
    Ok(())
}

/// `GetDeviceBindMountRefs` before UnmapDevice: a pod's bind left under the global map
/// path means a pod still uses the device (a missing map path: SetUpDevice did not
/// complete, nothing refers to it).
fn check_no_device_refs(pv: &str, global: &Path) -> Result<(), String> {
    match get_device_bind_mount_refs(global) {
        Ok(refs) if !refs.is_empty() => {
            let refs: Vec<String> = refs.iter().map(|r| r.display().to_string()).collect();
            Err(error(
                "UnmapDevice failed",
                pv,
                format!(
                    "the device {:?} is still referenced from other Pods [{}]",
                    global.display().to_string(),
                    refs.join(" ")
                ),
            ))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(error(
            "UnmapDevice.GetDeviceBindMountRefs check failed",
            pv,
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use rekube_crds::{CSIDriver, PersistentVolume, PersistentVolumeClaim, Pod, VolumeAttachment};
    use rekube_csi::kernel::{Kernel, LinuxKernel};
    use serde_json::json;

    use super::*;
    use crate::volume::pod_dirs::PodDirs;

    /// The API of these tests: one claim `raw` bound to the local Block volume `pv-raw`.
    struct OneLocalBlockVolume {
        device: PathBuf,
    }

    impl ObjectReader for OneLocalBlockVolume {
        async fn config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, String> {
            Ok(None)
        }
        async fn secret(&self, _: &str, _: &str) -> Result<Option<Secret>, String> {
            Ok(None)
        }
        async fn persistent_volume_claim(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<PersistentVolumeClaim>, String> {
            Ok((name == "raw").then(|| {
                serde_json::from_value(json!({
                    "metadata": {"name": "raw", "namespace": "ns", "uid": "claim-uid"},
                    "spec": {"volumeName": "pv-raw", "volumeMode": "Block"},
                    "status": {"phase": "Bound"}
                }))
                .unwrap()
            }))
        }
        async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, String> {
            Ok((name == "pv-raw").then(|| {
                serde_json::from_value(json!({
                    "metadata": {"name": "pv-raw"},
                    "spec": {"volumeMode": "Block",
                        "claimRef": {"namespace": "ns", "name": "raw", "uid": "claim-uid"},
                        "local": {"path": self.device}}
                }))
                .unwrap()
            }))
        }
        async fn csi_driver(&self, _: &str) -> Result<Option<CSIDriver>, String> {
            Ok(None)
        }
        async fn volume_attachment(&self, _: &str) -> Result<Option<VolumeAttachment>, String> {
            Ok(None)
        }
        async fn volumes_attached(&self) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
    }

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                    "volumeDevices": [{"name": "v", "devicePath": "/dev/xvda"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "raw"}}]}
        }))
        .unwrap()
    }

    /// As root, a local PV whose path is a real block device (a loop device over an
    /// image), in two pods: each mapped (the pod's symlink to the device, a bind at the
    /// global map path, a loop device holding it), recorded as a Block volume; the
    /// first pod's unmap keeps the other's and the global map path; the second's removes
    /// it; an earlier agent's map (known from the pod's directory only) is unmapped too.
    #[tokio::test]
    async fn local_block_volumes_are_mapped_and_unmapped() {
        if !nix::unistd::geteuid().is_root() {
            rekube_crds::testing::missing_prerequisite(
                "mapping a local block volume needs root (loop devices, bind mounts)",
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let device = LinuxKernel.loop_attach(&image, false).unwrap();
        let reader = Arc::new(OneLocalBlockVolume {
            device: device.clone(),
        });
        let dirs = PodDirs::new(tmp.path().join("root/pods"));
        let global = local::block_global_map_path(&tmp.path().join("root/plugins"), "pv-raw");
        let manager = Arc::new(VolumeManager::new(
            dirs.clone(),
            Arc::new(crate::runtime::syscall::LinuxSyscall),
            BTreeMap::new(),
        ));
        // The volume manager's loops, as the agent runs them.
        let (_stop, stop) = tokio::sync::watch::channel(false);
        let loops = tokio::spawn(Arc::clone(&manager).run(reader, Arc::new(|_| {}), stop));
        manager.set_sources_ready();
        let checks = async {
            for uid in ["u1", "u2"] {
                manager.observe_pod(&pod(uid));
                let mounted = manager.wait_for_attach_and_mount(&pod(uid)).await.unwrap();
                let m = &mounted["v"];
                assert!(m.block, "{m:?}");
                assert_eq!(
                    m.path,
                    dirs.pod_volume_device_dir(uid, LOCAL_PLUGIN).join("pv-raw")
                );
                assert_eq!(std::fs::read_link(&m.path).unwrap(), device);
                let h = BlockVolumePathHandler {
                    sys: &crate::runtime::syscall::LinuxSyscall,
                    loops: &LinuxKernel,
                };
                assert!(h.get_loop_device(&global.join(uid)).unwrap().is_some());
            }
            assert_eq!(
                get_device_bind_mount_refs(&global).unwrap(),
                [global.join("u1"), global.join("u2")]
            );
            manager.unmount_pod_volumes("u1").await.unwrap();
            assert!(!dirs.pod_dir("u1").exists());
            assert_eq!(
                get_device_bind_mount_refs(&global).unwrap(),
                [global.join("u2")],
                "the other pod's map kept"
            );
            // u2 as an earlier agent left it: only its directory knows the volume.
            let fresh = VolumeManager::new(
                dirs.clone(),
                Arc::new(crate::runtime::syscall::LinuxSyscall),
                BTreeMap::new(),
            );
            fresh.unmount_pod("u2").unwrap();
            assert!(
                !global.exists(),
                "the global map path went with its last user"
            );
            assert!(crate::runtime::rootfs::mounts_under(tmp.path()).is_empty());
            assert!(loops_backing_under(tmp.path()).iter().all(|b| *b == image));
        };
        let result =
            futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(checks)).await;
        loops.abort();
        for uid in ["u1", "u2"] {
            let _ = BlockVolumePathHandler {
                sys: &crate::runtime::syscall::LinuxSyscall,
                loops: &LinuxKernel,
            }
            .unmap_block_volume(
                &global,
                &dirs.pod_volume_device_dir(uid, LOCAL_PLUGIN),
                "pv-raw",
                uid,
            );
        }
        LinuxKernel.loop_detach(&device).unwrap();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    /// The unmap runs on the blocking pool: a loop device that stays busy (a mount holds
    /// it, on rekube-csi's fake kernel) keeps DetachFileDevice waiting its 2 s, and
    /// meanwhile the runtime's only worker (a current-thread runtime) runs another task.
    #[tokio::test]
    async fn an_unmap_waiting_for_its_loop_device_blocks_no_worker() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let tmp = tempfile::tempdir().unwrap();
        let dirs = PodDirs::new(tmp.path().join("root/pods"));
        let global = local::block_global_map_path(&tmp.path().join("root/plugins"), "pv-raw");
        std::fs::create_dir_all(&global).unwrap();
        let bind = global.join("u1");
        std::fs::write(&bind, b"").unwrap();
        let kernel = Arc::new(rekube_csi::kernel::FakeKernel::default());
        let holder = kernel.loop_attach(&bind, false).unwrap();
        let busy = tmp.path().join("busy");
        std::fs::write(&busy, b"").unwrap();
        kernel
            .mount(&holder, &busy, None, nix::mount::MsFlags::MS_BIND, None)
            .unwrap();
        let mut manager = VolumeManager::new(
            dirs.clone(),
            Arc::new(crate::runtime::syscall::LinuxSyscall),
            BTreeMap::new(),
        );
        manager.loops = kernel;
        let m = MountedVolume {
            volume_name: "kubernetes.io/local-volume/pv-raw".into(),
            pod_uid: "u1".into(),
            outer_volume_spec_name: "v".into(),
            plugin_name: LOCAL_PLUGIN.into(),
            path: dirs
                .pod_volume_device_dir("u1", LOCAL_PLUGIN)
                .join("pv-raw"),
            block: true,
            read_only: false,
            remount_required: false,
            device: None,
        };
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = Arc::clone(&ticks);
            async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let err = manager.unmap_volume(&m).await.unwrap_err();
        ticker.abort();
        assert!(err.contains("still holds the file after 2s"), "{err}");
        let ticks = ticks.load(Ordering::Relaxed);
        assert!(ticks >= 50, "the worker ran {ticks} ticks in 2 s");
    }

    /// The backing files of the loop devices whose backing file is under `dir`.
    fn loops_backing_under(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir("/sys/block")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
            .map(|b| PathBuf::from(b.trim_end()))
            .filter(|b| b.starts_with(dir))
            .collect()
    }
}
