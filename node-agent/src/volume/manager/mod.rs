//! The kubelet's volume manager (pkg/kubelet/volumemanager), in the seed's names: the
//! [`desired_state_of_world`] (the volumes the node's pods want, filled by the populator
//! from each pod the agent syncs), the [`actual_state_of_world`] (what is set up), and
//! the [`reconciler`] (unmount what no pod wants, then mount what is missing or must be
//! set up again). [`VolumeManager`] is the shell: SyncPod calls
//! [`VolumeManager::wait_for_attach_and_mount`] before it starts any container (upstream's
//! `WaitForAttachAndMount`, here without blocking: the pod worker requeues the pod while a
//! volume fails, and each failure is a `FailedMount` event), and the pod's cleanup calls
//! [`VolumeManager::unmount_pod`].
//!
//! What is still upstream's alone: the populator's and reconciler's own 100 ms loops (the
//! pod syncs drive both here), reconstruction of the actual state from the disk after an
//! agent restart (a restarted agent sets every volume up again; a pod's directory is
//! swept whole at its cleanup, whatever is mounted in it), attachable volumes.

pub mod actual_state_of_world;
pub mod desired_state_of_world;
pub mod reconciler;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};

use self::actual_state_of_world::{ActualStateOfWorld, MountedVolume};
use self::desired_state_of_world::DesiredStateOfWorld;
use self::reconciler::{Operation, reconcile};
use super::claim;
use super::plugins::{self, ObjectKind, SetUpContext, VolumeObjects, VolumeSpec};
use super::pod_dirs::{EMPTY_DIR_PLUGIN, PodDirs};
use crate::kubelet::quantity::amount;
use crate::runtime::syscall::Syscall;

/// Where the projected volumes' ConfigMaps and Secrets come from (the agent's
/// `NodeReader`: as the node's own identity).
pub trait ObjectReader: Sync {
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, String>> + Send;
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, String>> + Send;
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<PersistentVolumeClaim>, String>> + Send;
    fn persistent_volume(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<PersistentVolume>, String>> + Send;
}

/// Why a pod's volumes are not all set up: per volume, upstream's `FailedMount` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFailure {
    /// `(volume, message)` of the volumes whose set-up failed, in the pod spec's order.
    pub failed: Vec<(String, String)>,
    /// `(volume, error)` of the volumes the populator could not process (a claim not
    /// bound, its volume not readable, ...): never handed to a plugin (upstream's
    /// `VolumesNotInDSW` and the pod errors of the desired state).
    pub unprocessed: Vec<(String, String)>,
}

impl MountFailure {
    /// The pod-level summary (volume_manager.go's `WaitForAttachAndMount` error, the
    /// populator's errors after it).
    pub fn summary(&self) -> String {
        let mut unmounted: Vec<&str> = self
            .failed
            .iter()
            .chain(&self.unprocessed)
            .map(|(v, _)| v.as_str())
            .collect();
        unmounted.sort();
        let mut unprocessed: Vec<&str> = self.unprocessed.iter().map(|(v, _)| v.as_str()).collect();
        unprocessed.sort();
        let mut out = format!(
            "unmounted volumes=[{}], unattached volumes=[], failed to process volumes=[{}]",
            unmounted.join(" "),
            unprocessed.join(" ")
        );
        if !self.unprocessed.is_empty() {
            let errors: Vec<&str> = self.unprocessed.iter().map(|(_, e)| e.as_str()).collect();
            out.push_str(": ");
            out.push_str(&errors.join("; "));
        }
        out
    }
}

/// Upstream's per-volume event message (operation_generator.go `GenerateMountVolumeFunc`).
pub fn mount_failed_message(volume: &str, error: &str) -> String {
    format!("MountVolume.SetUp failed for volume \"{volume}\" : {error}")
}

pub struct VolumeManager {
    dirs: PodDirs,
    sys: Arc<dyn Syscall>,
    node_allocatable: BTreeMap<String, Quantity>,
    state: Mutex<(DesiredStateOfWorld, ActualStateOfWorld)>,
}

impl VolumeManager {
    pub fn new(
        dirs: PodDirs,
        sys: Arc<dyn Syscall>,
        node_allocatable: BTreeMap<String, Quantity>,
    ) -> Self {
        VolumeManager {
            dirs,
            sys,
            node_allocatable,
            state: Mutex::default(),
        }
    }

    pub fn dirs(&self) -> &PodDirs {
        &self.dirs
    }

    /// The populator's `processPodVolumes` for `pod`, then the reconciler's operations for
    /// it, carried out: every volume set up (the remount-requiring ones again), or why not.
    /// Returns the pod's mounted volumes by their name in the spec (`GetMountedVolumesForPod`).
    pub async fn wait_for_attach_and_mount<R: ObjectReader>(
        &self,
        pod: &Pod,
        reader: &R,
    ) -> Result<BTreeMap<String, MountedVolume>, MountFailure> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut failed: Vec<(String, String)> = Vec::new();
        let mut unprocessed: Vec<(String, String)> = Vec::new();
        let mut specs = Vec::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(claim_ref) = claim::claim_ref(pod, v) {
                match claim_volume_spec(reader, pod, v, &claim_ref).await {
                    Ok(spec) => specs.push((v.name.clone(), spec)),
                    Err(e) => unprocessed.push((v.name.clone(), e)),
                }
                continue;
            }
            match VolumeSpec::of(v) {
                Ok(spec) => specs.push((v.name.clone(), spec)),
                Err(e) => failed.push((
                    v.name.clone(),
                    mount_failed_message(&v.name, &e.to_string()),
                )),
            }
        }
        let ops: Vec<Operation> = {
            let mut state = self.state.lock().unwrap();
            let (dsw, asw) = &mut *state;
            dsw.add_pod(&uid, specs);
            asw.mark_remount_required(&uid, |plugin| {
                dsw.pod_volumes(&uid)
                    .any(|v| v.spec.plugin_name() == plugin && v.spec.requires_remount())
            });
            reconcile(dsw, asw)
                .into_iter()
                .filter(|op| match op {
                    Operation::Unmount(m) => m.pod_uid == uid,
                    Operation::Mount { volume, .. } => volume.pod_uid == uid,
                })
                .collect()
        };
        let ctx = SetUpContext {
            dirs: &self.dirs,
            sys: self.sys.as_ref(),
            node_allocatable_memory: self
                .node_allocatable
                .get("memory")
                .map(|q| amount(q).value())
                .unwrap_or(0),
        };
        for op in ops {
            match op {
                Operation::Unmount(m) => {
                    if plugins::tear_down(
                        &self.dirs,
                        self.sys.as_ref(),
                        &m.pod_uid,
                        &m.plugin_name,
                        &m.outer_volume_spec_name,
                        &m.path,
                    )
                    .is_ok()
                    {
                        self.state
                            .lock()
                            .unwrap()
                            .1
                            .mark_volume_as_unmounted(&m.volume_name);
                    }
                }
                Operation::Mount { volume, .. } => {
                    let name = volume.outer_volume_spec_name.clone();
                    let objects = match fetch_objects(reader, &namespace, &volume.spec).await {
                        Ok(objects) => objects,
                        Err(e) => {
                            failed.push((name.clone(), mount_failed_message(&name, &e)));
                            continue;
                        }
                    };
                    match plugins::set_up(
                        &ctx,
                        pod,
                        &name,
                        &volume.spec,
                        &objects,
                        &self.node_allocatable,
                    ) {
                        Ok(path) => {
                            self.state
                                .lock()
                                .unwrap()
                                .1
                                .mark_volume_as_mounted(MountedVolume {
                                    volume_name: volume.volume_name.clone(),
                                    pod_uid: uid.clone(),
                                    outer_volume_spec_name: name,
                                    plugin_name: volume.spec.plugin_name().to_string(),
                                    path,
                                    read_only: volume.spec.read_only(),
                                    remount_required: false,
                                });
                        }
                        Err(e) => {
                            failed.push((name.clone(), mount_failed_message(&name, &e.to_string())))
                        }
                    }
                }
            }
        }
        if !failed.is_empty() || !unprocessed.is_empty() {
            return Err(MountFailure {
                failed,
                unprocessed,
            });
        }
        let state = self.state.lock().unwrap();
        Ok(state
            .1
            .mounted_volumes_for_pod(&uid)
            .map(|m| (m.outer_volume_spec_name.clone(), m.clone()))
            .collect())
    }

    /// The UIDs of the pods that have a directory on the node (`pods/<uid>`).
    pub fn pods_on_disk(&self) -> Vec<String> {
        std::fs::read_dir(self.dirs.root())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// The bytes used in each of the pod's emptyDir volumes named in `names` that is set
    /// up (the volume stats the eviction manager reads: du's allocated blocks).
    pub fn empty_dir_usage(&self, uid: &str, names: &[String]) -> BTreeMap<String, i64> {
        names
            .iter()
            .filter_map(|name| {
                let dir = self.dirs.pod_volume_dir(uid, EMPTY_DIR_PLUGIN, name);
                dir.is_dir().then(|| (name.clone(), disk_usage(&dir)))
            })
            .collect()
    }

    /// The pod is gone from the node (its containers removed): the populator drops its
    /// volumes, the reconciler tears them down, and the pod's directory goes, with
    /// whatever is still mounted in it (subPath binds, volumes an earlier agent set up).
    pub fn unmount_pod(&self, uid: &str) -> Result<(), String> {
        let ops: Vec<Operation> = {
            let mut state = self.state.lock().unwrap();
            let (dsw, asw) = &mut *state;
            dsw.delete_pod(uid);
            reconcile(dsw, asw)
                .into_iter()
                .filter(|op| matches!(op, Operation::Unmount(m) if m.pod_uid == uid))
                .collect()
        };
        for op in ops {
            if let Operation::Unmount(m) = op {
                plugins::tear_down(
                    &self.dirs,
                    self.sys.as_ref(),
                    uid,
                    &m.plugin_name,
                    &m.outer_volume_spec_name,
                    &m.path,
                )
                .map_err(|e| {
                    format!(
                        "UnmountVolume.TearDown failed for volume \"{}\" : {e}",
                        m.outer_volume_spec_name
                    )
                })?;
                self.state
                    .lock()
                    .unwrap()
                    .1
                    .mark_volume_as_unmounted(&m.volume_name);
            }
        }
        let dir: PathBuf = self.dirs.pod_dir(uid);
        crate::runtime::rootfs::unmount_all_under(self.sys.as_ref(), &dir)
            .map_err(|e| format!("unmounting what is left in {}: {e}", dir.display()))?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", dir.display())),
        }
    }
}

/// The populator's `createVolumeSpec` for a claim-backed pod volume: the claim and the
/// volume it is bound to, read as the node, judged by [`claim`].
async fn claim_volume_spec<R: ObjectReader>(
    reader: &R,
    pod: &Pod,
    volume: &k8s_openapi::api::core::v1::Volume,
    claim_ref: &claim::ClaimRef,
) -> Result<VolumeSpec, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = &claim_ref.claim_name;
    let wrap = |e: &str| claim::processing_error(namespace, name, e);
    let pvc = match reader.persistent_volume_claim(namespace, name).await {
        Ok(Some(pvc)) => pvc,
        Ok(None) => {
            return Err(wrap(&format!(
                "failed to fetch PVC from API server: persistentvolumeclaims.rekube.io {name:?} not found"
            )));
        }
        Err(e) => return Err(wrap(&format!("failed to fetch PVC from API server: {e}"))),
    };
    let pv_name = claim::check_claim(&pvc).map_err(|e| wrap(&e))?;
    if claim_ref.ephemeral {
        claim::volume_is_for_pod(pod, &pvc)?;
    }
    let pv = match reader.persistent_volume(&pv_name).await {
        Ok(Some(pv)) => pv,
        Ok(None) => {
            return Err(wrap(&format!(
                "failed to fetch PV {pv_name} from API server: persistentvolumes.rekube.io {pv_name:?} not found"
            )));
        }
        Err(e) => {
            return Err(wrap(&format!(
                "failed to fetch PV {pv_name} from API server: {e}"
            )));
        }
    };
    claim::volume_spec(
        &volume.name,
        &pv,
        &pvc,
        claim_ref.read_only,
        claim::mounts_and_devices(pod, &volume.name),
    )
    .map_err(|e| {
        if e.starts_with("found PV object") {
            wrap(&e)
        } else {
            e
        }
    })
}

/// The ConfigMaps and Secrets a volume projects (upstream's configmap/secret managers:
/// read at each set-up; a NotFound is left out, for the plugin to judge).
async fn fetch_objects<R: ObjectReader>(
    reader: &R,
    namespace: &str,
    spec: &VolumeSpec,
) -> Result<VolumeObjects, String> {
    let mut objects = VolumeObjects::default();
    for (kind, name) in spec.objects() {
        match kind {
            ObjectKind::ConfigMap => {
                let got = reader
                    .config_map(namespace, &name)
                    .await
                    .map_err(|e| format!("couldn't get configMap {namespace}/{name}: {e}"))?;
                if let Some(cm) = got {
                    objects.config_maps.insert(name, cm);
                }
            }
            ObjectKind::Secret => {
                let got = reader
                    .secret(namespace, &name)
                    .await
                    .map_err(|e| format!("couldn't get secret {namespace}/{name}: {e}"))?;
                if let Some(s) = got {
                    objects.secrets.insert(name, s);
                }
            }
        }
    }
    Ok(objects)
}

/// Bytes allocated to everything under `dir` (`du`: st_blocks of each file, symlinks not
/// followed).
pub fn disk_usage(dir: &std::path::Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += meta.blocks() as i64 * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}
