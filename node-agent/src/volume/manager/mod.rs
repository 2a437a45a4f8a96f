//! The kubelet's volume manager (pkg/kubelet/volumemanager), in the seed's names: the
//! [`desired_state_of_world`] (the volumes the node's pods want), filled by the
//! [`populator`] (the seed's `populatorLoop`: `findAndAddNewPods`, then
//! `findAndRemoveDeletedPods`, every 100 ms and whenever a pod is synced), the
//! [`actual_state_of_world`] (what is set up), and the [`reconciler`] (unmount what no pod
//! wants, then attach-wait, device mount (stage), mount (publish) or map what is missing or
//! must be set up again), its loop carrying the operations out one task per pod
//! ([`operation_executor`]). [`VolumeManager::run`] runs both loops after reconstructing
//! the actual state from the disk ([`reconstruct`]: what an earlier agent left mounted is
//! set up again for the pods that still run and torn down for the others once every pod
//! source has been seen). SyncPod calls [`VolumeManager::wait_for_attach_and_mount`]
//! before it starts any container (upstream's `WaitForAttachAndMount`: each volume's
//! failure is its own `FailedMount` event from the operation), and the pod's cleanup
//! calls [`VolumeManager::unmount_pod_volumes`] (upstream's `WaitForUnmount`, then the
//! pod's directory).
//!
//! Attachable volumes (CSI volumes whose driver needs attaching) are attached by the
//! attach/detach controller: the manager reports the node's CSI volumes in use
//! ([`attach::VolumesInUse`], posted by the node status loop as `volumesInUse`), and stages
//! one only once it is reported, listed in the Node's `volumesAttached` and its
//! VolumeAttachment is attached ([`attach`]). The CSI volumes an earlier agent left set up
//! are in use from the start, until set up again or torn down.
//!
//! Block volumes (volumeMode Block, for the containers' `volumeDevices`) are mapped and
//! unmapped rather than mounted (`block.rs`: upstream's `GenerateMapVolumeFunc` and its
//! unmap twins); an earlier agent's maps are found from the pods' `volumeDevices`
//! directories and the volumes' block `vol_data.json` at the pod's cleanup, and torn down
//! the same way (reconstruction covers filesystem volumes).

pub mod actual_state_of_world;
pub mod attach;
mod block;
pub mod desired_state_of_world;
pub mod expand;
mod node_expansion;
pub mod operation_executor;
pub mod populator;
pub mod reconciler;
mod reconstruct;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::storage_keys::{attachment_name, csi_unique_volume_name};
use rekube_crds::{CSIDriver, PersistentVolume, PersistentVolumeClaim, Pod, VolumeAttachment};

use self::actual_state_of_world::DeviceMount;
use self::actual_state_of_world::{ActualStateOfWorld, MountedVolume};
use self::attach::VolumesInUse;
use self::desired_state_of_world::DesiredStateOfWorld;
pub use self::node_expansion::VolumeEvent;
use self::reconciler::{Operation, reconcile};
use super::claim;
use super::csi::CsiPlugin;
use super::plugins::{self, BlockSource, ObjectKind, PersistentSource, VolumeObjects, VolumeSpec};
use super::pod_dirs::{CSI_PLUGIN, EMPTY_DIR_PLUGIN, PodDirs};
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
    /// The CSIDriver object of a driver (whether it needs attaching).
    fn csi_driver(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<CSIDriver>, String>> + Send;
    /// A VolumeAttachment of this node.
    fn volume_attachment(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<VolumeAttachment>, String>> + Send;
    /// The unique names of the Node's `status.volumesAttached`.
    fn volumes_attached(&self) -> impl Future<Output = Result<Vec<String>, String>> + Send;
    /// A TokenRequest for ServiceAccount `namespace/name` (as the node's own identity):
    /// the request as the apiserver answered it (the kubelet token manager's `getToken`).
    fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        tr: &k8s_openapi::api::authentication::v1::TokenRequest,
    ) -> impl Future<Output = Result<k8s_openapi::api::authentication::v1::TokenRequest, String>> + Send
    {
        let _ = (namespace, name, tr);
        async { Err("this reader requests no tokens".to_string()) }
    }
    /// Creates a PodCertificateRequest in `namespace` (as the node's own identity): the
    /// request as the apiserver answered it (its generated name). The podcertificate
    /// manager's `createPodCertificateRequest`.
    fn create_pod_certificate_request(
        &self,
        namespace: &str,
        request: &k8s_openapi::api::certificates::v1beta1::PodCertificateRequest,
    ) -> impl Future<
        Output = Result<k8s_openapi::api::certificates::v1beta1::PodCertificateRequest, String>,
    > + Send {
        let _ = (namespace, request);
        async { Err("this reader creates no PodCertificateRequests".to_string()) }
    }
    /// A PodCertificateRequest the node created (as the node's own identity).
    fn pod_certificate_request(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<
        Output = Result<
            Option<k8s_openapi::api::certificates::v1beta1::PodCertificateRequest>,
            String,
        >,
    > + Send {
        let _ = (namespace, name);
        async { Err("this reader reads no PodCertificateRequests".to_string()) }
    }
    /// A ServiceAccount of the node's pods (as the node's own identity): its UID goes
    /// into a PodCertificateRequest.
    fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<k8s_openapi::api::core::v1::ServiceAccount>, String>> + Send
    {
        let _ = (namespace, name);
        async { Err("this reader reads no ServiceAccounts".to_string()) }
    }
    /// The node's name and its Node's UID.
    fn node_name_and_uid(&self) -> impl Future<Output = Result<(String, String), String>> + Send {
        async { Err("this reader knows no Node".to_string()) }
    }
    /// Every `certificates.k8s.io/v1beta1` ClusterTrustBundle (as the node's own
    /// identity; upstream's clustertrustbundle manager's informer): `Ok(None)` when the
    /// apiserver does not serve them.
    fn cluster_trust_bundles(
        &self,
    ) -> impl Future<
        Output = Result<
            Option<Vec<k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle>>,
            String,
        >,
    > + Send {
        async { Err("this reader reads no ClusterTrustBundles".to_string()) }
    }
    /// Patches the status of claim `namespace/name` (a JSON merge patch of
    /// `persistentvolumeclaims/status`, as the node's own identity): a filesystem
    /// expansion's result. The claim as the apiserver answered it.
    fn patch_claim_status(
        &self,
        namespace: &str,
        name: &str,
        patch: serde_json::Value,
    ) -> impl Future<Output = Result<PersistentVolumeClaim, String>> + Send {
        let _ = (namespace, name, patch);
        async { Err("this reader writes no claim status".to_string()) }
    }
}

/// upstream's event reasons for a volume that failed (kubelet events.go): a mount, and a
/// Block volume's map.
pub const FAILED_MOUNT_VOLUME: &str = "FailedMount";
pub const FAILED_MAP_VOLUME: &str = "FailedMapVolume";

/// One volume whose set-up failed: its name in the pod spec, the event's reason
/// ([`FAILED_MOUNT_VOLUME`], or [`FAILED_MAP_VOLUME`] for a Block volume) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedVolume {
    pub volume: String,
    pub reason: &'static str,
    pub message: String,
}

impl FailedVolume {
    fn mount(volume: String, message: String) -> Self {
        FailedVolume {
            volume,
            reason: FAILED_MOUNT_VOLUME,
            message,
        }
    }
}

/// Why a pod's volumes are not all set up (`WaitForAttachAndMount`'s error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFailure {
    /// The pod's volumes not set up (`getUnmountedVolumes`), in the pod spec's order.
    pub unmounted: Vec<String>,
    /// `(volume, error)` of the volumes the populator could not process (a claim not
    /// bound, its volume not readable, no plugin, ...): upstream's `VolumesNotInDSW` and
    /// the pod errors of the desired state.
    pub unprocessed: Vec<(String, String)>,
    /// The wait ran out (no event: each volume's failure has its own).
    pub timed_out: bool,
}

impl MountFailure {
    /// The pod-level summary (volume_manager.go's `WaitForAttachAndMount` error, the
    /// populator's errors after it).
    pub fn summary(&self) -> String {
        let mut unmounted: Vec<&str> = self.unmounted.iter().map(String::as_str).collect();
        unmounted.sort();
        let mut unprocessed: Vec<&str> = self.unprocessed.iter().map(|(v, _)| v.as_str()).collect();
        unprocessed.sort();
        unprocessed.dedup();
        let mut out = format!(
            "unmounted volumes=[{}], unattached volumes=[], failed to process volumes=[{}]",
            unmounted.join(" "),
            unprocessed.join(" ")
        );
        if !self.unprocessed.is_empty() {
            let errors: Vec<&str> = self.unprocessed.iter().map(|(_, e)| e.as_str()).collect();
            out.push_str(": ");
            out.push_str(&errors.join("; "));
        } else if self.timed_out {
            out.push_str(": timed out waiting for the condition");
        }
        out
    }
}

/// Where the volume operations' events go (the agent's event recorder).
pub type EventSink = Arc<dyn Fn(VolumeEvent) + Send + Sync>;

/// The populator's and reconciler's period (volume_manager.go
/// `reconcilerLoopSleepPeriod`, `desiredStateOfWorldPopulatorLoopSleepPeriod`).
pub const LOOP_SLEEP_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);
/// volume_manager.go `podAttachAndMountTimeout` (also `WaitForUnmount`'s).
pub const POD_ATTACH_AND_MOUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(123);
/// How long one SyncPod waits for its volumes before its worker syncs it again (upstream
/// waits the whole [`POD_ATTACH_AND_MOUNT_TIMEOUT`], its sync cancelled when the pod is
/// deleted; a rekube pod worker sees a deletion between syncs, so it waits in slices).
pub const WAIT_FOR_ATTACH_AND_MOUNT_SLICE: std::time::Duration = std::time::Duration::from_secs(2);

/// Upstream's per-volume event message (operation_generator.go `GenerateMountVolumeFunc`).
pub fn mount_failed_message(volume: &str, error: &str) -> String {
    format!("MountVolume.SetUp failed for volume \"{volume}\" : {error}")
}

pub struct VolumeManager {
    dirs: PodDirs,
    /// `<root-dir>/plugins`, beside `pods`.
    plugins_dir: PathBuf,
    sys: Arc<dyn Syscall>,
    /// The loop devices that hold mapped block volumes open.
    loops: Arc<dyn rekube_csi::kernel::Kernel>,
    node_allocatable: BTreeMap<String, Quantity>,
    state: Mutex<(DesiredStateOfWorld, ActualStateOfWorld)>,
    /// The csi plugin: its drivers.
    csi: CsiPlugin,
    /// CSI operations one at a time, so that the count of a device's users (the actual
    /// state) is current when a pod's volume is staged or unstaged.
    csi_operations: tokio::sync::Mutex<()>,
    /// The node's CSI volumes in use, shared with the node status loop.
    in_use: Arc<VolumesInUse>,
    /// The pods' service account tokens (the kubelet's token manager).
    tokens: super::token_manager::TokenManager,
    /// The pods' podCertificate credentials (the kubelet's podcertificate manager).
    pod_certificates: super::pod_certificate_manager::PodCertificateManager,
    /// Volume expansion on the node: sizes, errors, back-off, events ([`expand`]).
    expansion: node_expansion::Expansions,
    /// The node's pods as the populator reads them.
    pods: Mutex<populator::PodSource>,
    /// The reconciler's operations in flight and their back-off.
    operations: Mutex<operation_executor::Operations>,
    populator_wake: tokio::sync::Notify,
    reconciler_wake: tokio::sync::Notify,
    /// Bumped when the states or the populator's errors change (the pods' waits).
    changed: tokio::sync::watch::Sender<u64>,
    /// The operations' events, once [`Self::run`] started (before: queued).
    sink: std::sync::OnceLock<EventSink>,
    /// The orphaned pods whose cleanup runs.
    orphan_cleanups: Mutex<std::collections::HashSet<String>>,
}

/// The UIDs of the pods with a directory under `pods/`.
fn pods_on_disk(dirs: &PodDirs) -> Vec<String> {
    std::fs::read_dir(dirs.root())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// `<root-dir>/plugins` for the pods' directory `<root-dir>/pods`.
fn plugins_dir_of(dirs: &PodDirs) -> PathBuf {
    dirs.root().parent().unwrap_or(dirs.root()).join("plugins")
}

/// The CSI volumes of pod `uid` on disk, filesystem and block, by driver and handle: the
/// `vol_data.json` files under `pods/<uid>/volumes/kubernetes.io~csi`, and for each
/// `pods/<uid>/volumeDevices/kubernetes.io~csi/<pv>` the PV's block volume data.
fn pod_csi_handles_on_disk(dirs: &PodDirs, uid: &str) -> Vec<(String, String)> {
    let block_plugin = CsiPlugin::new(BTreeMap::new(), &plugins_dir_of(dirs), "");
    super::csi::pod_csi_volumes_on_disk(dirs, uid)
        .into_iter()
        .map(|v| (v.driver, v.volume_handle))
        .chain(
            super::pod_dirs::pod_block_volumes_on_disk(dirs, uid, CSI_PLUGIN)
                .iter()
                .filter_map(|pv| block_plugin.load_block_volume_data(pv)),
        )
        .collect()
}

/// The part of upstream's reconstruction (reconciler `syncStates`) that attach needs: the
/// CSI volumes an earlier agent left set up, by pod UID (their `vol_data.json` under
/// `pods/<uid>`, or for a Block volume the data its `volumeDevices` entry names), as
/// unique volume names. The agent hands them to [`VolumesInUse`] before
/// its first node status, so that they count as in use until the pod's volumes are set
/// up again or torn down: a restart never reports a mounted volume unused (upstream does
/// not report `volumesInUse` before its states are synced either).
pub fn csi_volumes_on_disk(dirs: &PodDirs) -> BTreeMap<String, Vec<String>> {
    pods_on_disk(dirs)
        .into_iter()
        .filter_map(|uid| {
            let names: Vec<String> = pod_csi_handles_on_disk(dirs, &uid)
                .iter()
                .map(|(driver, handle)| csi_unique_volume_name(driver, handle))
                .collect();
            (!names.is_empty()).then_some((uid, names))
        })
        .collect()
}

impl VolumeManager {
    pub fn new(
        dirs: PodDirs,
        sys: Arc<dyn Syscall>,
        node_allocatable: BTreeMap<String, Quantity>,
    ) -> Self {
        let plugins = plugins_dir_of(&dirs);
        VolumeManager {
            dirs,
            plugins_dir: plugins.clone(),
            sys,
            loops: Arc::new(rekube_csi::kernel::LinuxKernel),
            node_allocatable,
            state: Mutex::default(),
            csi: CsiPlugin::new(BTreeMap::new(), &plugins, ""),
            csi_operations: tokio::sync::Mutex::new(()),
            in_use: Arc::default(),
            tokens: Default::default(),
            pod_certificates: Default::default(),
            expansion: Default::default(),
            pods: Mutex::default(),
            operations: Mutex::default(),
            populator_wake: tokio::sync::Notify::new(),
            reconciler_wake: tokio::sync::Notify::new(),
            changed: tokio::sync::watch::channel(0).0,
            sink: std::sync::OnceLock::new(),
            orphan_cleanups: Mutex::default(),
        }
    }

    /// The volumes-in-use report shared with the node status loop (holding what an
    /// earlier agent left set up: [`csi_volumes_on_disk`]).
    pub fn with_volumes_in_use(mut self, in_use: Arc<VolumesInUse>) -> Self {
        self.in_use = in_use;
        self.update_volumes_in_use();
        self
    }

    /// `GetVolumesInUse`: the unique names of the CSI volumes the node's pods want or
    /// still have set up (the attachable and device-mountable ones: every CSI persistent
    /// volume), recorded for the node status loop.
    fn update_volumes_in_use(&self) {
        let in_use = {
            let state = self.state.lock().unwrap();
            let (dsw, asw) = &*state;
            let wanted = dsw.volumes_to_mount().filter_map(|v| match &v.spec {
                VolumeSpec::Persistent {
                    source: PersistentSource::Csi(source),
                    ..
                }
                | VolumeSpec::Block {
                    source: BlockSource::Csi(source),
                    ..
                } => Some(csi_unique_volume_name(
                    &source.driver,
                    &source.volume_handle,
                )),
                _ => None,
            });
            let set_up = asw.mounted_volumes().filter_map(|m| {
                m.device
                    .as_ref()
                    .map(|d| csi_unique_volume_name(&d.source.driver, &d.source.volume_handle))
            });
            wanted.chain(set_up).collect()
        };
        self.in_use.set(in_use);
    }

    /// `VerifyControllerAttachedVolume` and `WaitForAttach` for a CSI volume whose driver
    /// needs attaching: the publish context of its VolumeAttachment (empty when the
    /// driver needs no attach), or the message the pod waits with. `operation`:
    /// `MountVolume`, or `MapVolume` for a Block volume.
    async fn verify_attached<R: ObjectReader>(
        &self,
        reader: &R,
        operation: &str,
        pv: &str,
        source: &super::csi::CsiSource,
    ) -> Result<HashMap<String, String>, String> {
        let driver = reader.csi_driver(&source.driver).await.map_err(|e| {
            format!(
                "{operation}.WaitForAttach failed for volume {pv:?} : reading CSIDriver {}: {e}",
                source.driver
            )
        })?;
        if !attach::attach_required(driver.as_ref()) {
            return Ok(HashMap::new());
        }
        let unique = csi_unique_volume_name(&source.driver, &source.volume_handle);
        let reported = self.in_use.is_reported_in_use(&unique);
        let attached = if reported {
            reader.volumes_attached().await.map_err(|e| {
                format!("VerifyControllerAttachedVolume failed fetching node from API server for volume {pv:?} : {e}")
            })?
        } else {
            Vec::new()
        };
        attach::verify_controller_attached_volume(pv, &unique, reported, &attached)?;
        let id = attachment_name(&source.volume_handle, &source.driver, self.csi.node_name());
        let attachment = reader.volume_attachment(&id).await.map_err(|e| {
            format!("{operation}.WaitForAttach failed for volume {pv:?} : volume {} has GET error for volume attachment {id}: {e}", source.volume_handle)
        })?;
        attach::wait_for_attach(
            operation,
            pv,
            &source.volume_handle,
            &id,
            attachment.as_ref(),
        )
    }

    /// The csi plugin with the node's CSI drivers (`--csi-driver`).
    pub fn with_csi(mut self, csi: CsiPlugin) -> Self {
        self.csi = csi;
        self
    }

    pub fn dirs(&self) -> &PodDirs {
        &self.dirs
    }

    /// The pod as the API has it now (upstream's pod manager): known to the populator
    /// before its worker syncs it.
    pub fn observe_pod(&self, pod: &Pod) {
        self.pods.lock().unwrap().update_pod(Arc::new(pod.clone()));
    }

    /// Every pod source has been seen once (the first full list of the node's pods): the
    /// reconciler may unmount what no pod wants once the populator has added them.
    pub fn set_sources_ready(&self) {
        self.pods.lock().unwrap().sources_ready = true;
        self.populator_wake.notify_one();
    }

    /// The pod's containers are stopped and will not run again: the populator removes
    /// its volumes, the reconciler tears them down.
    pub fn pod_terminated(&self, uid: &str) {
        self.pods.lock().unwrap().pod_terminated(uid);
        self.populator_wake.notify_one();
    }

    /// The states or the populator's errors changed: the pods' waits look again.
    pub(super) fn notify_changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The actual state reconstructed from the disk (`reconstruct.rs`): called once at
    /// start, before the node's pods are watched.
    pub fn reconstruct(&self) {
        let reconstructed = self.reconstruct_volumes();
        if !reconstructed.is_empty() {
            tracing::info!(
                volumes = reconstructed.len(),
                "reconstructed the volumes an earlier run left mounted"
            );
        }
        let mut state = self.state.lock().unwrap();
        for m in reconstructed {
            state.1.mark_volume_mount_as_uncertain(m);
        }
        drop(state);
        self.update_volumes_in_use();
    }

    /// Whether a cleanup of the orphaned pod `uid` may start (none runs for it now);
    /// [`Self::unmount_pod_volumes`] ends it.
    pub fn begin_orphan_cleanup(&self, uid: &str) -> bool {
        self.orphan_cleanups.lock().unwrap().insert(uid.to_string())
    }

    /// The volume manager's loops (`Run`, after [`Self::reconstruct`]): the populator and
    /// the reconciler every 100 ms and whenever there is something to do, until `stop`.
    /// The operations' events go to `record`.
    pub async fn run<R: ObjectReader + Send + Sync + 'static>(
        self: Arc<Self>,
        reader: Arc<R>,
        record: EventSink,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let _ = self.sink.set(record);
        for e in self.take_volume_events() {
            (self.sink.get().expect("set"))(e);
        }
        let populator = async {
            loop {
                self.populator_loop_func(reader.as_ref()).await;
                tokio::select! {
                    _ = self.populator_wake.notified() => {}
                    _ = tokio::time::sleep(LOOP_SLEEP_PERIOD) => {}
                }
            }
        };
        let reconciler = async {
            loop {
                self.reconcile_pass(&reader);
                tokio::select! {
                    _ = self.reconciler_wake.notified() => {}
                    _ = tokio::time::sleep(LOOP_SLEEP_PERIOD) => {}
                }
            }
        };
        tokio::select! {
            _ = populator => {}
            _ = reconciler => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    /// `WaitForAttachAndMount`: the pod handed to the populator again (`ReprocessPod`:
    /// its remount-requiring volumes are set up again), then a wait of up to
    /// [`WAIT_FOR_ATTACH_AND_MOUNT_SLICE`] until each of its volumes is set up, or the
    /// populator's errors for it (returned at once, as upstream's
    /// `verifyVolumesMountedFunc`). The pod's mounted volumes by their name in the spec
    /// (`GetMountedVolumesForPod`). A wait that runs out is `timed_out` (the worker syncs
    /// the pod again soon; upstream's wait of 2 min 3 s records no event either).
    pub async fn wait_for_attach_and_mount(
        &self,
        pod: &Pod,
    ) -> Result<BTreeMap<String, MountedVolume>, MountFailure> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // `getExpectedVolumes`: the volumes a container mounts or maps.
        let expected: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter(|v| super::claim::mounts_and_devices(pod, &v.name) != (false, false))
            .map(|v| v.name.clone())
            .collect();
        let mut changed = self.changed.subscribe();
        self.pods
            .lock()
            .unwrap()
            .reprocess_pod(Arc::new(pod.clone()));
        self.populator_wake.notify_one();
        let deadline = tokio::time::Instant::now() + WAIT_FOR_ATTACH_AND_MOUNT_SLICE;
        loop {
            let (errors, mounted, unmounted) = {
                let mut state = self.state.lock().unwrap();
                let (dsw, asw) = &mut *state;
                let errors = dsw.pop_pod_errors(&uid);
                // `getUnmountedVolumes`: each volume of the spec through the desired state
                // (two volumes of one claim are one volume) to the actual state's entry,
                // set up and not uncertain.
                let by_name: BTreeMap<&str, &str> = dsw
                    .pod_volumes(&uid)
                    .map(|v| (v.outer_volume_spec_name.as_str(), v.volume_name.as_str()))
                    .collect();
                let mut mounted = BTreeMap::new();
                let mut unmounted = Vec::new();
                for name in &expected {
                    let found = by_name
                        .get(name.as_str())
                        .and_then(|unique| asw.get(unique))
                        .filter(|m| !asw.is_uncertain(&m.volume_name));
                    match found {
                        Some(m) => {
                            mounted.insert(name.clone(), m.clone());
                        }
                        None => unmounted.push(name.clone()),
                    }
                }
                (errors, mounted, unmounted)
            };
            if unmounted.is_empty() {
                // Every volume of the pod is set up: what an earlier agent left is in
                // the states.
                self.in_use.forget_reconstructed(&uid);
                self.update_volumes_in_use();
                return Ok(mounted);
            }
            if !errors.is_empty() {
                return Err(MountFailure {
                    unmounted,
                    unprocessed: errors,
                    timed_out: false,
                });
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(MountFailure {
                    unmounted,
                    unprocessed: Vec::new(),
                    timed_out: true,
                });
            }
        }
    }

    /// `WaitForUnmount`: until none of the pod's volumes is set up (uncertain ones
    /// included) and none is being set up, or an unmount of one failed (its error), or
    /// `timeout` (upstream's "mounted volumes=[...]" error).
    pub async fn wait_for_unmount(
        &self,
        uid: &str,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let mut changed = self.changed.subscribe();
        self.operations.lock().unwrap().set_unmount_error(uid, None);
        self.reconciler_wake.notify_one();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (wanted, mounted) = {
                let state = self.state.lock().unwrap();
                let mounted: Vec<String> = state
                    .1
                    .possibly_mounted_volumes_for_pod(uid)
                    .map(|m| m.outer_volume_spec_name.clone())
                    .collect();
                (state.0.pod_exists(uid), mounted)
            };
            // Done once the populator dropped the pod, no operation of it runs (a mount
            // started before would set something up again) and nothing is mounted.
            let pending = self.operations.lock().unwrap().is_pending(uid);
            if !wanted && !pending && mounted.is_empty() {
                return Ok(());
            }
            {
                let operations = self.operations.lock().unwrap();
                if !operations.is_pending(uid)
                    && let Some(e) = operations.unmount_error(uid)
                {
                    return Err(e.clone());
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(format!(
                    "mounted volumes=[{}]: timed out waiting for the condition",
                    mounted.join(" ")
                ));
            }
        }
    }

    /// A CSI volume of the pod set up through its driver (MountDevice, then SetUp) and
    /// recorded with its device; a failed SetUp unstages what no other pod uses, so that
    /// nothing stays staged for a pod that may never mount it. `Err`: the event's message.
    #[allow(clippy::too_many_arguments)]
    async fn set_up_csi(
        &self,
        volume: &desired_state_of_world::VolumeToMount,
        uid: &str,
        pv_name: &str,
        read_only: bool,
        source: &super::csi::CsiSource,
        publish_context: HashMap<String, String>,
        expanding: bool,
    ) -> Result<(), String> {
        let _one_at_a_time = self.csi_operations.lock().await;
        match self
            .csi
            .set_up(&self.dirs, uid, pv_name, read_only, source, publish_context)
            .await
        {
            Ok((path, staged)) => {
                let mut state = self.state.lock().unwrap();
                let mounted = MountedVolume {
                    volume_name: volume.volume_name.clone(),
                    pod_uid: uid.to_string(),
                    outer_volume_spec_name: volume.outer_volume_spec_name.clone(),
                    plugin_name: CSI_PLUGIN.to_string(),
                    path,
                    block: false,
                    read_only,
                    remount_required: false,
                    device: Some(DeviceMount {
                        source: source.clone(),
                        staged,
                    }),
                };
                // Its filesystem still to be grown at mount: not set up for the pod until
                // then (upstream expands within MountVolume, before marking it mounted).
                if expanding {
                    state.1.mark_volume_mount_as_uncertain(mounted);
                } else {
                    state.1.mark_volume_as_mounted(mounted);
                }
                Ok(())
            }
            Err(e) => {
                if e.step == super::csi::Step::SetUp {
                    let device = DeviceMount {
                        source: source.clone(),
                        staged: true,
                    };
                    let used = self
                        .state
                        .lock()
                        .unwrap()
                        .1
                        .device_used_by_others(&device, &volume.volume_name);
                    if !used && let Err(undo) = self.csi.unmount_device(pv_name, source).await {
                        tracing::warn!(pod_uid = %uid, error = %undo, "unstaging after a failed set-up");
                    }
                }
                Err(e.to_string())
            }
        }
    }

    /// A CSI volume torn down (TearDown: NodeUnpublishVolume), then its device
    /// (UnmountDevice: NodeUnstageVolume) when no other pod of the node uses it; recorded
    /// unmounted only once both succeeded, so that a failure is retried whole.
    async fn tear_down_csi(&self, m: &MountedVolume) -> Result<(), String> {
        let _one_at_a_time = self.csi_operations.lock().await;
        let Some(device) = &m.device else {
            // Nothing of a driver's to undo: forgotten, so that it is not tried again.
            self.state
                .lock()
                .unwrap()
                .1
                .mark_volume_as_unmounted(&m.volume_name);
            return Ok(());
        };
        // The target is `.../kubernetes.io~csi/<pv name>/mount`.
        let pv = m
            .path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.csi
            .tear_down(
                &pv,
                &m.path,
                &device.source.driver,
                &device.source.volume_handle,
            )
            .await
            .map_err(|e| e.to_string())?;
        let unmount_device = self
            .state
            .lock()
            .unwrap()
            .1
            .unmount_device_after(&m.volume_name);
        if unmount_device {
            self.csi
                .unmount_device(&pv, &device.source)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.state
            .lock()
            .unwrap()
            .1
            .mark_volume_as_unmounted(&m.volume_name);
        Ok(())
    }

    /// The pod's volumes gone with it (`SyncTerminatedPod`): the populator drops the pod,
    /// the reconciler tears its volumes down (`WaitForUnmount`); then what the states do
    /// not know (what an earlier agent set up and reconstruction could not name: CSI
    /// volumes known from their `vol_data.json` only, Block maps) and the pod's directory
    /// ([`Self::unmount_pod`]). Also the pods deleted while the agent was down.
    pub async fn unmount_pod_volumes(&self, uid: &str) -> Result<(), String> {
        let result = self.unmount_pod_volumes_once(uid).await;
        self.orphan_cleanups.lock().unwrap().remove(uid);
        result
    }

    async fn unmount_pod_volumes_once(&self, uid: &str) -> Result<(), String> {
        self.pod_terminated(uid);
        self.wait_for_unmount(uid, POD_ATTACH_AND_MOUNT_TIMEOUT)
            .await?;
        self.forget_pod_expansions(uid);
        for v in super::csi::pod_csi_volumes_on_disk(&self.dirs, uid) {
            self.tear_down_csi_on_disk(uid, &v).await?;
        }
        self.unmap_csi_block_volumes_on_disk(uid).await?;
        self.in_use.forget_reconstructed(uid);
        self.update_volumes_in_use();
        self.unmount_pod(uid)?;
        self.pods.lock().unwrap().remove_pod(uid);
        self.operations.lock().unwrap().set_unmount_error(uid, None);
        self.notify_changed();
        Ok(())
    }

    /// Whether the pod has CSI volumes on disk, filesystem or block (its tear-down needs
    /// the drivers).
    pub fn has_csi_volumes_on_disk(&self, uid: &str) -> bool {
        !super::csi::pod_csi_volumes_on_disk(&self.dirs, uid).is_empty()
            || !super::pod_dirs::pod_block_volumes_on_disk(&self.dirs, uid, CSI_PLUGIN).is_empty()
    }

    /// A CSI volume known from its `vol_data.json` only: NodeUnpublishVolume, then
    /// NodeUnstageVolume when it is still staged and neither the actual state nor another
    /// pod's directory on disk names the same driver volume.
    async fn tear_down_csi_on_disk(
        &self,
        uid: &str,
        v: &super::csi::PodCsiVolume,
    ) -> Result<(), String> {
        let _one_at_a_time = self.csi_operations.lock().await;
        tracing::info!(pod_uid = %uid, pv = %v.pv, driver = %v.driver,
            "tearing down a CSI volume known from its vol_data.json");
        self.csi
            .tear_down(&v.pv, &v.target, &v.driver, &v.volume_handle)
            .await
            .map_err(|e| e.to_string())?;
        if !self
            .csi
            .device_mount_path_exists(&v.driver, &v.volume_handle)
        {
            return Ok(());
        }
        let in_actual_state = self
            .state
            .lock()
            .unwrap()
            .1
            .volume_handle_in_use(&v.driver, &v.volume_handle);
        let on_disk_elsewhere = self.pods_on_disk().iter().any(|other| {
            other != uid
                && pod_csi_handles_on_disk(&self.dirs, other)
                    .iter()
                    .any(|(driver, handle)| *driver == v.driver && *handle == v.volume_handle)
        });
        if !in_actual_state && !on_disk_elsewhere {
            self.csi
                .unmount_device_of(&v.pv, &v.driver, &v.volume_handle)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The UIDs of the pods that have a directory on the node (`pods/<uid>`).
    pub fn pods_on_disk(&self) -> Vec<String> {
        pods_on_disk(&self.dirs)
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

    /// The tokens of a projected volume's serviceAccountToken sources (upstream's
    /// `collectData` through the token manager): the pod's token binding Secret read as
    /// the node (it must be the pod's: [`rekube_crds::token_binding`]), then each
    /// source's TokenRequest for the pod's ServiceAccount, bound to that Secret, from the
    /// token manager's cache or the API. Called at every set-up (every sync of a running
    /// pod), so a token the manager refreshed reaches the volume through the atomic
    /// writer then. Errors are per source, as upstream's.
    async fn service_account_tokens<R: ObjectReader>(
        &self,
        reader: &R,
        pod: &Pod,
        source: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    ) -> super::projected::Tokens {
        use rekube_crds::token_binding::{
            is_token_binding_for_pod, pod_token_binding_secret_name, service_account_name,
        };
        let requests_of = |binding: (&str, &str)| super::projected::token_requests(source, binding);
        let indices: Vec<usize> = requests_of(("", "")).into_iter().map(|(i, _)| i).collect();
        if indices.is_empty() {
            return super::projected::Tokens::new();
        }
        let all_failed = |message: String| {
            indices
                .iter()
                .map(|i| (*i, Err(format!("failed to fetch token: {message}"))))
                .collect()
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let binding = pod_token_binding_secret_name(pod);
        let secret = match reader.secret(namespace, &binding).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return all_failed(format!(
                    "secret {namespace}/{binding}, the token binding of pod {namespace}/{pod_name}, \
                     not found (rekube-controllers' pod-token-binding-controller creates it)"
                ));
            }
            Err(e) => {
                return all_failed(format!(
                    "couldn't get secret {namespace}/{binding}, the token binding of pod \
                     {namespace}/{pod_name}: {e}"
                ));
            }
        };
        if let Err(e) = is_token_binding_for_pod(pod, &secret) {
            return all_failed(e);
        }
        let secret_uid = secret.metadata.uid.clone().unwrap_or_default();
        let service_account = pod
            .spec
            .as_ref()
            .map(service_account_name)
            .unwrap_or_else(|| "default".into());
        let mut tokens = super::projected::Tokens::new();
        for (i, tr) in requests_of((&binding, &secret_uid)) {
            let got = self
                .tokens
                .get_service_account_token(pod_uid, namespace, &service_account, &tr, || {
                    reader.service_account_token(namespace, &service_account, &tr)
                })
                .await
                .and_then(|tr| match tr.status.and_then(|s| s.token) {
                    Some(token) if !token.is_empty() => Ok(token.into_bytes()),
                    _ => Err(format!(
                        "failed to fetch token: the token request for service account \
                         {namespace}/{service_account} returned no token"
                    )),
                });
            tokens.insert(i, got);
        }
        tokens
    }

    /// The pod's directory swept, at once and without the loops: its volumes dropped from
    /// the desired state and the ones the actual state knows torn down here (a CSI volume
    /// still mounted is an error: it needs its driver, [`Self::unmount_pod_volumes`]),
    /// then local Block maps an earlier agent left, then whatever is still mounted under
    /// it (subPath binds), then the directory.
    pub fn unmount_pod(&self, uid: &str) -> Result<(), String> {
        self.tokens.delete_service_account_token(uid);
        self.pod_certificates.forget_pod(uid);
        let ops: Vec<Operation> = {
            let mut state = self.state.lock().unwrap();
            let (dsw, asw) = &mut *state;
            dsw.delete_pod(uid);
            reconcile(dsw, asw, true, &Default::default())
                .into_iter()
                .filter(|op| matches!(op, Operation::Unmount(m) if m.pod_uid == uid))
                .collect()
        };
        for op in ops {
            if let Operation::Unmount(m) = op {
                if m.block {
                    self.unmap_local_volume(&m)?;
                    continue;
                }
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
        // The local Block volumes an earlier agent mapped for the pod.
        self.unmap_local_block_volumes_on_disk(uid)?;
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
) -> Result<(VolumeSpec, Option<expand::ClaimExpansion>), String> {
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
    claim::check_volume_bound_to_claim(&pv, &pvc).map_err(|e| wrap(&e))?;
    let spec = claim::volume_spec(
        &volume.name,
        &pv,
        claim_ref.read_only,
        claim::mounts_and_devices(pod, &volume.name),
    )?;
    // checkVolumeFSResize: a CSI filesystem volume's size follows its PV's.
    let expansion = matches!(
        spec,
        VolumeSpec::Persistent {
            source: PersistentSource::Csi(_),
            ..
        }
    )
    .then(|| expand::claim_expansion(&pvc, &pv, claim_ref.read_only));
    Ok((spec, expansion))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An earlier agent's CSI Block volume (the pod's `volumeDevices` entry, the PV's
    /// block volume data under the plugin's directory) is in use from the start, and
    /// the pod's tear-down needs its driver.
    #[test]
    fn block_volumes_of_an_earlier_run_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = PodDirs::new(tmp.path().join("pods"));
        let map_dir = dirs.pod_volume_device_dir("uid-1", CSI_PLUGIN);
        std::fs::create_dir_all(&map_dir).unwrap();
        std::os::unix::fs::symlink("/nowhere", map_dir.join("pv1")).unwrap();
        let data = super::super::csi_block::volume_device_data_dir(
            &tmp.path().join("plugins/kubernetes.io/csi"),
            "pv1",
        );
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join(super::super::csi::VOL_DATA_FILE_NAME),
            r#"{"driverName":"csi.rekube.io","volumeHandle":"rk-2","specVolID":"pv1"}"#,
        )
        .unwrap();
        assert_eq!(
            csi_volumes_on_disk(&dirs),
            BTreeMap::from([(
                "uid-1".to_string(),
                vec!["kubernetes.io/csi/csi.rekube.io^rk-2".to_string()]
            )])
        );
        let manager = VolumeManager::new(
            dirs,
            Arc::new(crate::runtime::syscall::LinuxSyscall),
            BTreeMap::new(),
        );
        assert!(manager.has_csi_volumes_on_disk("uid-1"));
        assert!(!manager.has_csi_volumes_on_disk("uid-2"));
    }

    /// An earlier agent's CSI volume (its `vol_data.json` under the pod's directory) is
    /// in use from the start, and stops being so once the pod's volumes are set up again
    /// (here: the pod no longer has it).
    #[tokio::test]
    async fn volumes_of_an_earlier_run_are_in_use_until_set_up_again() {
        let root = std::env::temp_dir().join(format!(
            "rekube-volume-manager-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let dirs = PodDirs::new(root.join("pods"));
        let volume_dir = dirs.pod_volume_dir("uid-1", CSI_PLUGIN, "pv1");
        std::fs::create_dir_all(&volume_dir).unwrap();
        std::fs::write(
            volume_dir.join(super::super::csi::VOL_DATA_FILE_NAME),
            r#"{"driverName":"csi.rekube.io","volumeHandle":"rk-1","specVolID":"pv1"}"#,
        )
        .unwrap();
        let in_use = Arc::new(VolumesInUse::default());
        in_use.reconstruct(csi_volumes_on_disk(&dirs));
        let manager = VolumeManager::new(
            dirs,
            Arc::new(crate::runtime::syscall::LinuxSyscall),
            BTreeMap::new(),
        )
        .with_volumes_in_use(Arc::clone(&in_use));
        assert_eq!(
            in_use.get(),
            vec!["kubernetes.io/csi/csi.rekube.io^rk-1".to_string()]
        );

        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "uid-1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        manager.wait_for_attach_and_mount(&pod).await.unwrap();
        assert_eq!(in_use.get(), Vec::<String>::new());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A volume reconstructed from the disk is an uncertain mount (upstream's
    /// `VolumeMountUncertain`): the pod's wait does not count it until it is set up again
    /// (after a reboot a memory-backed emptyDir's directory is there, its tmpfs is not).
    #[tokio::test]
    async fn a_reconstructed_volume_is_not_set_up_until_mounted_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = PodDirs::new(tmp.path().join("pods"));
        std::fs::create_dir_all(dirs.pod_volume_dir("u1", EMPTY_DIR_PLUGIN, "mem")).unwrap();
        let manager = VolumeManager::new(
            dirs,
            Arc::new(crate::runtime::syscall::LinuxSyscall),
            BTreeMap::new(),
        );
        manager.reconstruct();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                    "volumeMounts": [{"name": "mem", "mountPath": "/mem"}]}],
                "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory"}}]}
        }))
        .unwrap();
        // The populator's part, without its loop.
        manager.state.lock().unwrap().0.add_pod(
            "u1",
            vec![(
                "mem".into(),
                VolumeSpec::EmptyDir {
                    medium: Some("Memory".into()),
                    size_limit_bytes: None,
                },
            )],
        );
        let failure = manager.wait_for_attach_and_mount(&pod).await.unwrap_err();
        assert!(failure.timed_out, "{failure:?}");
        assert_eq!(failure.unmounted, ["mem"]);
        // The reconciler's mount of it (set up again).
        {
            let mut state = manager.state.lock().unwrap();
            let m = state
                .1
                .get("kubernetes.io/empty-dir/u1-mem")
                .cloned()
                .expect("reconstructed");
            assert!(m.remount_required && state.1.is_uncertain(&m.volume_name));
            state.1.mark_volume_as_mounted(MountedVolume {
                remount_required: false,
                ..m
            });
        }
        let mounted = manager.wait_for_attach_and_mount(&pod).await.unwrap();
        assert_eq!(mounted.keys().collect::<Vec<_>>(), ["mem"]);
    }
}
