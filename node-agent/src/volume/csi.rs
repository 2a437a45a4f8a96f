//! The csi volume plugin's node side (upstream pkg/volume/csi: `csiAttacher.MountDevice` /
//! `UnmountDevice` in csi_attacher.go, `csiMountMgr.SetUpAt` / `TearDownAt` in
//! csi_mounter.go, the node calls of csi_client.go): a PersistentVolume with a `csi`
//! source is staged by its driver at the volume's device mount path (once per node) and
//! published at the pod's volume directory (once per pod), unpublished when the pod goes
//! and unstaged when no pod of the node uses it any more (the volume manager counts).
//!
//! The drivers are in a [`DriversStore`] ([`super::csi_registry`]): those named by the
//! agent's `--csi-driver NAME=unix:///path.sock` flags, and those registered through the
//! plugin registration directory (`crate::plugin_manager`, where node-driver-registrar or
//! `rekube-csi registrar` announces each driver's socket). Each driver's NodeGetInfo
//! becomes the Node's `csi.volume.kubernetes.io/nodeid` annotation and its topology
//! labels (upstream's nodeinfomanager).
//!
//! The decisions (paths, access modes, capabilities, messages, the Node's annotation) are
//! pure functions; [`CsiPlugin`] is the shell calling the driver.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rekube_csi::csi;
use rekube_csi::csi::node_client::NodeClient;
use rekube_csi::csi::node_service_capability::rpc::Type as NodeCapability;
use rekube_csi::csi::volume_capability::access_mode::Mode;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use rekube_crds::storage_keys::attachment_name;

use super::csi_registry::DriversStore;
use super::pod_dirs::{CSI_PLUGIN, PodDirs};

/// The file of a volume's identity beside its mount directories (upstream's
/// `volDataFileName`).
pub const VOL_DATA_FILE_NAME: &str = "vol_data.json";
/// The staging directory under a volume's device directory (`globalMountInGlobalPath`).
pub const GLOBAL_MOUNT: &str = "globalmount";
/// The Node annotation mapping each driver to its node id (upstream's
/// `annotationKeyNodeID`).
pub const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";
/// How long one call to a driver may take (upstream's `csiTimeout`); past it the call is
/// abandoned with grpc-go's DeadlineExceeded.
pub const CSI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A PersistentVolume's `csi` source, as the plugin uses it, with what of the volume's
/// spec it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiSource {
    pub driver: String,
    pub volume_handle: String,
    pub fs_type: String,
    pub volume_attributes: BTreeMap<String, String>,
    /// The source's `readOnly`.
    pub read_only: bool,
    /// The volume's first access mode (upstream uses `AccessModes[0]`).
    pub access_mode: Option<String>,
    /// The volume's `mountOptions`.
    pub mount_options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    #[error("invalid --csi-driver {value:?}: {message}")]
    Flag { value: String, message: String },
    #[error(
        "kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name {driver} not found in the list of registered CSI drivers"
    )]
    UnknownDriver { driver: String },
    #[error("kubernetes.io/csi: connecting to CSI driver {driver} at {}: {source}", socket.display())]
    Connect {
        driver: String,
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    /// What the driver answered, as a Go gRPC error prints (`status.Error`).
    #[error("{}", rpc_error_message(.0.code(), .0.message()))]
    Rpc(tonic::Status),
    #[error("kubernetes.io/csi: {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "kubernetes.io/csi: makeDeviceMountPath failed, CSIPersistentVolumeSource volume handle is empty"
    )]
    EmptyHandle,
    /// The block mapper's driver lookup failed (`csiClientGetter.Get`).
    #[error(
        "kubernetes.io/csi: blockMapper.{op} failed to get CSI client: driver name {driver} not found in the list of registered CSI drivers"
    )]
    BlockClient { op: &'static str, driver: String },
    /// A block mapper step wrapping its cause (`blockMapper.unstageVolumeForBlock
    /// failed: ...`).
    #[error("kubernetes.io/csi: blockMapper.{what}: {source}")]
    Block {
        what: &'static str,
        source: Box<CsiError>,
    },
}

/// The operation a CSI step belongs to (operation_generator.go's names), for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    MountDevice,
    SetUp,
    TearDown,
    UnmountDevice,
    /// A Block volume's steps (`GenerateMapVolumeFunc`, `GenerateUnmapVolumeFunc`,
    /// `GenerateUnmapDeviceFunc`).
    MapSetUpDevice,
    MapPodDevice,
    UnmapPodDevice,
    TearDownDevice,
}

impl Step {
    pub fn operation(self) -> &'static str {
        match self {
            Step::MountDevice => "MountVolume.MountDevice",
            Step::SetUp => "MountVolume.SetUp",
            Step::TearDown => "UnmountVolume.TearDown",
            Step::UnmountDevice => "UnmountDevice",
            Step::MapSetUpDevice => "MapVolume.SetUpDevice",
            Step::MapPodDevice => "MapVolume.MapPodDevice",
            Step::UnmapPodDevice => "UnmapVolume.UnmapPodDevice",
            Step::TearDownDevice => "UnmapDevice.TearDownDevice",
        }
    }
}

/// A failed step and why.
#[derive(Debug, thiserror::Error)]
#[error("{} failed for volume {pv:?} : {error}", step.operation())]
pub struct StepError {
    pub step: Step,
    /// The PersistentVolume's name (upstream's volume spec name).
    pub pv: String,
    pub error: CsiError,
}

/// Go's `codes.Code.String()`: the names gRPC errors print in Kubernetes' messages.
pub fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// grpc-go's `status.Error` text: `rpc error: code = NotFound desc = volume gone`.
pub fn rpc_error_message(code: tonic::Code, message: &str) -> String {
    format!("rpc error: code = {} desc = {message}", go_code_name(code))
}

/// One `--csi-driver NAME=unix:///absolute/path.sock`: the driver's name and socket.
pub fn parse_driver_flag(value: &str) -> Result<(String, PathBuf), CsiError> {
    let err = |message: &str| CsiError::Flag {
        value: value.to_string(),
        message: message.to_string(),
    };
    let (name, endpoint) = value
        .split_once('=')
        .ok_or_else(|| err("expected NAME=unix:///path/to/csi.sock"))?;
    if name.is_empty() {
        return Err(err("the driver name is empty"));
    }
    let path = endpoint
        .strip_prefix("unix://")
        .ok_or_else(|| err("the endpoint must be unix:///absolute/path"))?;
    if !path.starts_with('/') {
        return Err(err("the socket path must be absolute"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// The drivers of every `--csi-driver` flag by name; a name given twice is an error.
pub fn parse_driver_flags(values: &[String]) -> Result<BTreeMap<String, PathBuf>, CsiError> {
    let mut drivers = BTreeMap::new();
    for v in values {
        let (name, socket) = parse_driver_flag(v)?;
        if drivers.insert(name.clone(), socket).is_some() {
            return Err(CsiError::Flag {
                value: v.clone(),
                message: format!("driver {name} is named twice"),
            });
        }
    }
    Ok(drivers)
}

/// `makeDeviceMountPath`: `<plugin dir>/<driver>/<sha256 hex of the handle>/globalmount`,
/// where the driver stages the volume.
pub fn device_mount_path(plugin_dir: &Path, driver: &str, volume_handle: &str) -> PathBuf {
    let sha = hex::encode(Sha256::digest(volume_handle.as_bytes()));
    plugin_dir.join(driver).join(sha).join(GLOBAL_MOUNT)
}

/// `asCSIAccessModeV1`, or `asSingleNodeMultiWriterCapableCSIAccessModeV1` when the
/// driver has SINGLE_NODE_MULTI_WRITER; no access mode is ReadWriteOnce (upstream's
/// default).
pub fn as_csi_access_mode(access_mode: Option<&str>, single_node_multi_writer: bool) -> Mode {
    match (
        access_mode.unwrap_or("ReadWriteOnce"),
        single_node_multi_writer,
    ) {
        ("ReadWriteOnce", false) => Mode::SingleNodeWriter,
        ("ReadWriteOnce", true) => Mode::SingleNodeMultiWriter,
        ("ReadOnlyMany", _) => Mode::MultiNodeReaderOnly,
        ("ReadWriteMany", _) => Mode::MultiNodeMultiWriter,
        ("ReadWriteOncePod", false) => Mode::SingleNodeWriter,
        ("ReadWriteOncePod", true) => Mode::SingleNodeSingleWriter,
        _ => Mode::Unknown,
    }
}

/// What the node service's capabilities mean for set-up: whether to stage
/// (STAGE_UNSTAGE_VOLUME) and which access-mode mapping to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCapabilities {
    pub stage_unstage: bool,
    pub single_node_multi_writer: bool,
    /// EXPAND_VOLUME: NodeExpandVolume (`NodeSupportsNodeExpand`).
    pub expand_volume: bool,
}

impl NodeCapabilities {
    pub fn of(response: &csi::NodeGetCapabilitiesResponse) -> Self {
        let has = |wanted: NodeCapability| {
            response.capabilities.iter().any(|c| {
                matches!(
                    &c.r#type,
                    Some(csi::node_service_capability::Type::Rpc(rpc)) if rpc.r#type == wanted as i32
                )
            })
        };
        NodeCapabilities {
            stage_unstage: has(NodeCapability::StageUnstageVolume),
            single_node_multi_writer: has(NodeCapability::SingleNodeMultiWriter),
            expand_volume: has(NodeCapability::ExpandVolume),
        }
    }
}

/// The volume capability of NodeStage and NodePublish: mount access with the source's
/// fsType and the volume's mountOptions.
pub fn volume_capability(source: &CsiSource, caps: NodeCapabilities) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode {
            mode: as_csi_access_mode(source.access_mode.as_deref(), caps.single_node_multi_writer)
                as i32,
        }),
        access_type: Some(csi::volume_capability::AccessType::Mount(
            csi::volume_capability::MountVolume {
                fs_type: source.fs_type.clone(),
                mount_flags: source.mount_options.clone(),
                volume_mount_group: String::new(),
            },
        )),
    }
}

/// The `vol_data.json` beside the staging directory (MountDevice's `data`).
pub fn device_vol_data(source: &CsiSource) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("volumeHandle", source.volume_handle.clone()),
        ("driverName", source.driver.clone()),
    ])
}

/// The `vol_data.json` beside the pod's mount directory (SetUpAt's `volData`).
pub fn pod_vol_data(pv: &str, source: &CsiSource, node: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("specVolID", pv.to_string()),
        ("volumeHandle", source.volume_handle.clone()),
        ("driverName", source.driver.clone()),
        ("nodeName", node.to_string()),
        (
            "attachmentID",
            attachment_name(&source.volume_handle, &source.driver, node),
        ),
        ("volumeLifecycleMode", "Persistent".to_string()),
    ])
}

/// The Node's `csi.volume.kubernetes.io/nodeid` with `driver`'s node id added to what
/// `existing` maps (nodeinfomanager's `updateNodeIDInNode`); unreadable JSON is replaced.
pub fn node_id_annotation(existing: Option<&str>, driver: &str, node_id: &str) -> String {
    let mut ids: BTreeMap<String, String> = existing
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    ids.insert(driver.to_string(), node_id.to_string());
    serde_json::to_string(&ids).expect("a map of strings")
}

/// A driver's node: its id and its accessible topology (NodeGetInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverNodeInfo {
    pub node_id: String,
    pub topology: BTreeMap<String, String>,
}

/// The csi plugin of the node: its drivers (shared with the plugin manager, which
/// registers and deregisters drivers: [`super::csi_registry`]), its directory
/// (`<root-dir>/plugins/kubernetes.io/csi`) and the node's name.
#[derive(Debug, Clone, Default)]
pub struct CsiPlugin {
    drivers: DriversStore,
    plugin_dir: PathBuf,
    node_name: String,
}

/// One call to the driver, abandoned after [`CSI_TIMEOUT`] as grpc-go's context deadline.
pub(super) async fn rpc<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CsiError> {
    match tokio::time::timeout(CSI_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CsiError::Rpc(status)),
        Err(_) => Err(CsiError::Rpc(tonic::Status::deadline_exceeded(
            "context deadline exceeded",
        ))),
    }
}

/// A CSI volume a pod had, as its `vol_data.json` on disk says (for a tear-down the
/// actual state does not know of: after an agent restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCsiVolume {
    pub pv: String,
    /// The publish target (`.../kubernetes.io~csi/<pv>/mount`).
    pub target: PathBuf,
    pub driver: String,
    pub volume_handle: String,
}

/// The driver and volume handle of a `vol_data.json`.
pub fn parse_vol_data(json: &[u8]) -> Option<(String, String)> {
    let data: BTreeMap<String, String> = serde_json::from_slice(json).ok()?;
    let driver = data.get("driverName").filter(|d| !d.is_empty())?;
    let handle = data.get("volumeHandle").filter(|h| !h.is_empty())?;
    Some((driver.clone(), handle.clone()))
}

/// The CSI volumes of pod `uid` on disk (`pods/<uid>/volumes/kubernetes.io~csi/*/vol_data.json`).
pub fn pod_csi_volumes_on_disk(dirs: &PodDirs, uid: &str) -> Vec<PodCsiVolume> {
    let dir = dirs.pod_volume_dir(uid, CSI_PLUGIN, "");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(json) = std::fs::read(entry.path().join(VOL_DATA_FILE_NAME)) else {
            continue;
        };
        if let Some((driver, volume_handle)) = parse_vol_data(&json) {
            found.push(PodCsiVolume {
                pv: entry.file_name().to_string_lossy().into_owned(),
                target: entry.path().join("mount"),
                driver,
                volume_handle,
            });
        }
    }
    found.sort_by(|a, b| a.pv.cmp(&b.pv));
    found
}

pub(super) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CsiError {
    let path = path.to_path_buf();
    move |source| CsiError::Io {
        action,
        path,
        source,
    }
}

pub(super) fn make_dir(dir: &Path) -> Result<(), CsiError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(io_err("creating", dir))
}

pub(super) fn save_volume_data(
    dir: &Path,
    data: &BTreeMap<&'static str, String>,
) -> Result<(), CsiError> {
    let path = dir.join(VOL_DATA_FILE_NAME);
    let json = serde_json::to_vec(data).expect("a map of strings");
    std::fs::write(&path, json).map_err(io_err("saving volume data file", &path))
}

/// upstream's `removeMountDir`: the mount directory (only when empty: a mount point or a
/// non-empty directory fails), the `vol_data.json` beside it, their parent.
fn remove_mount_dir(dir: &Path) -> Result<(), CsiError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", dir)(e)),
    }
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    let data = parent.join(VOL_DATA_FILE_NAME);
    match std::fs::remove_file(&data) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &data)(e)),
    }
    match std::fs::remove_dir(parent) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", parent)(e)),
    }
}

impl CsiPlugin {
    /// `plugins_dir` is `<root-dir>/plugins`.
    pub fn new(
        drivers: BTreeMap<String, PathBuf>,
        plugins_dir: &Path,
        node_name: impl Into<String>,
    ) -> Self {
        Self::with_drivers_store(DriversStore::from_static(drivers), plugins_dir, node_name)
    }

    /// The plugin over a shared driver store (the `--csi-driver` drivers and the
    /// registered ones).
    pub fn with_drivers_store(
        drivers: DriversStore,
        plugins_dir: &Path,
        node_name: impl Into<String>,
    ) -> Self {
        CsiPlugin {
            drivers,
            plugin_dir: plugins_dir.join(CSI_PLUGIN),
            node_name: node_name.into(),
        }
    }

    /// `<root-dir>/plugins/kubernetes.io/csi`.
    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    /// The node the plugin runs on.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn drivers(&self) -> &DriversStore {
        &self.drivers
    }

    /// The staging path of the volume (`makeDeviceMountPath`).
    pub fn device_mount_path(&self, source: &CsiSource) -> PathBuf {
        device_mount_path(&self.plugin_dir, &source.driver, &source.volume_handle)
    }

    /// The pod's volume path, the publish target
    /// (`pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount`).
    pub fn target_path(dirs: &PodDirs, pod_uid: &str, pv: &str) -> PathBuf {
        dirs.pod_volume_dir(pod_uid, CSI_PLUGIN, pv).join("mount")
    }

    pub(super) async fn client(&self, driver: &str) -> Result<NodeClient<Channel>, CsiError> {
        let socket = self
            .drivers
            .endpoint(driver)
            .ok_or_else(|| CsiError::UnknownDriver {
                driver: driver.to_string(),
            })?;
        let channel =
            match tokio::time::timeout(CSI_TIMEOUT, rekube_csi::client::connect(&socket)).await {
                Ok(connected) => connected.map_err(|source| CsiError::Connect {
                    driver: driver.to_string(),
                    socket: socket.clone(),
                    source,
                })?,
                Err(_) => {
                    return Err(CsiError::Rpc(tonic::Status::deadline_exceeded(
                        "context deadline exceeded",
                    )));
                }
            };
        Ok(NodeClient::new(channel))
    }

    pub(super) async fn capabilities(
        client: &mut NodeClient<Channel>,
    ) -> Result<NodeCapabilities, CsiError> {
        let response =
            rpc(client.node_get_capabilities(csi::NodeGetCapabilitiesRequest {})).await?;
        Ok(NodeCapabilities::of(&response))
    }

    /// NodeGetInfo of `driver`.
    pub async fn node_get_info(&self, driver: &str) -> Result<DriverNodeInfo, CsiError> {
        let mut client = self.client(driver).await?;
        let info = rpc(client.node_get_info(csi::NodeGetInfoRequest::default())).await?;
        Ok(DriverNodeInfo {
            node_id: info.node_id,
            topology: info
                .accessible_topology
                .map(|t| t.segments.into_iter().collect())
                .unwrap_or_default(),
        })
    }

    /// Sets the pod's volume up: MountDevice (NodeStageVolume, when the driver stages),
    /// then SetUp (NodePublishVolume at the pod's volume directory). `read_only`: the
    /// claim's volume or the source says so. Returns the path containers mount and
    /// whether the volume was staged.
    pub async fn set_up(
        &self,
        dirs: &PodDirs,
        pod_uid: &str,
        pv: &str,
        read_only: bool,
        source: &CsiSource,
        publish_context: HashMap<String, String>,
    ) -> Result<(PathBuf, bool), StepError> {
        let step_err = |step| {
            move |error| StepError {
                step,
                pv: pv.to_string(),
                error,
            }
        };
        if source.volume_handle.is_empty() {
            return Err(step_err(Step::MountDevice)(CsiError::EmptyHandle));
        }
        let mut client = self
            .client(&source.driver)
            .await
            .map_err(step_err(Step::MountDevice))?;
        let caps = Self::capabilities(&mut client)
            .await
            .map_err(step_err(Step::MountDevice))?;
        let capability = volume_capability(source, caps);
        let staging = if caps.stage_unstage {
            let path = self.device_mount_path(source);
            self.stage(&mut client, source, &path, &capability, &publish_context)
                .await
                .map_err(step_err(Step::MountDevice))?;
            path.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let target = Self::target_path(dirs, pod_uid, pv);
        let parent = target.parent().expect("under the pod's volumes");
        let publish = async {
            make_dir(parent)?;
            save_volume_data(parent, &pod_vol_data(pv, source, &self.node_name))?;
            rpc(client.node_publish_volume(csi::NodePublishVolumeRequest {
                volume_id: source.volume_handle.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: staging,
                target_path: target.to_string_lossy().into_owned(),
                volume_capability: Some(capability),
                readonly: read_only,
                secrets: HashMap::new(),
                volume_context: source.volume_attributes.clone().into_iter().collect(),
            }))
            .await
            .map(drop)
        };
        if let Err(e) = publish.await {
            let _ = remove_mount_dir(&target);
            return Err(step_err(Step::SetUp)(e));
        }
        Ok((target, caps.stage_unstage))
    }

    /// MountDevice's part: the staging directory and its `vol_data.json`, then
    /// NodeStageVolume; on failure the directories made are removed.
    async fn stage(
        &self,
        client: &mut NodeClient<Channel>,
        source: &CsiSource,
        path: &Path,
        capability: &csi::VolumeCapability,
        publish_context: &HashMap<String, String>,
    ) -> Result<(), CsiError> {
        make_dir(path)?;
        let data_dir = path.parent().expect("under the plugin dir");
        let staged = async {
            save_volume_data(data_dir, &device_vol_data(source))?;
            rpc(client.node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id: source.volume_handle.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: path.to_string_lossy().into_owned(),
                volume_capability: Some(capability.clone()),
                secrets: HashMap::new(),
                volume_context: source.volume_attributes.clone().into_iter().collect(),
            }))
            .await
            .map(drop)
        };
        if let Err(e) = staged.await {
            let _ = remove_mount_dir(path);
            return Err(e);
        }
        Ok(())
    }

    /// TearDown: NodeUnpublishVolume at the pod's volume directory, then its directory and
    /// `vol_data.json` removed.
    pub async fn tear_down(
        &self,
        pv: &str,
        target: &Path,
        driver: &str,
        volume_handle: &str,
    ) -> Result<(), StepError> {
        let err = |error| StepError {
            step: Step::TearDown,
            pv: pv.to_string(),
            error,
        };
        let mut client = self.client(driver).await.map_err(err)?;
        rpc(
            client.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: volume_handle.to_string(),
                target_path: target.to_string_lossy().into_owned(),
            }),
        )
        .await
        .map_err(err)?;
        remove_mount_dir(target).map_err(err)
    }

    /// UnmountDevice: NodeUnstageVolume at the staging path (when the driver stages), then
    /// its directory and `vol_data.json` removed.
    pub async fn unmount_device(&self, pv: &str, source: &CsiSource) -> Result<(), StepError> {
        self.unmount_device_of(pv, &source.driver, &source.volume_handle)
            .await
    }

    /// [`Self::unmount_device`] by driver and volume handle.
    pub async fn unmount_device_of(
        &self,
        pv: &str,
        driver: &str,
        volume_handle: &str,
    ) -> Result<(), StepError> {
        let err = |error| StepError {
            step: Step::UnmountDevice,
            pv: pv.to_string(),
            error,
        };
        let mut client = self.client(driver).await.map_err(err)?;
        let caps = Self::capabilities(&mut client).await.map_err(err)?;
        if !caps.stage_unstage {
            return Ok(());
        }
        let path = device_mount_path(&self.plugin_dir, driver, volume_handle);
        rpc(client.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: volume_handle.to_string(),
            staging_target_path: path.to_string_lossy().into_owned(),
        }))
        .await
        .map_err(err)?;
        remove_mount_dir(&path).map_err(err)
    }

    /// NodeExpand (csi expander.go `nodeExpandWithClient`): NodeExpandVolume of the
    /// volume published for pod `pod_uid` at its target (`volume_path`), with its staging
    /// path when the driver stages, for `new_bytes`, the capability of its stage and
    /// publish. A driver without EXPAND_VOLUME is `NotSupported`; a driver not registered
    /// is transient, as upstream.
    pub async fn node_expand(
        &self,
        dirs: &PodDirs,
        pod_uid: &str,
        pv: &str,
        source: &CsiSource,
        new_bytes: i64,
    ) -> Result<(), super::manager::expand::NodeExpandError> {
        use super::manager::expand::NodeExpandError;
        let mut client = self
            .client(&source.driver)
            .await
            .map_err(|e| NodeExpandError::Transient(e.to_string()))?;
        let caps = Self::capabilities(&mut client).await.map_err(|e| {
            NodeExpandError::Other(format!(
                "Expander.NodeExpand failed to check if node supports expansion : {e}"
            ))
        })?;
        if !caps.expand_volume {
            return Err(NodeExpandError::NotSupported(format!(
                "NodeExpand is not supported by the CSI driver {}",
                source.driver
            )));
        }
        let staging = if caps.stage_unstage {
            self.device_mount_path(source)
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let request = csi::NodeExpandVolumeRequest {
            volume_id: source.volume_handle.clone(),
            volume_path: Self::target_path(dirs, pod_uid, pv)
                .to_string_lossy()
                .into_owned(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: new_bytes,
                limit_bytes: 0,
            }),
            staging_target_path: staging,
            volume_capability: Some(volume_capability(source, caps)),
            secrets: HashMap::new(),
        };
        match rpc(client.node_expand_volume(request)).await {
            Ok(_) => Ok(()),
            Err(CsiError::Rpc(status)) => Err(NodeExpandError::from_rpc(
                status.code(),
                &rpc_error_message(status.code(), status.message()),
            )),
            Err(e) => Err(NodeExpandError::Other(format!(
                "Expander.NodeExpand failed to expand the volume : {e}"
            ))),
        }
    }

    /// Whether the staging directory of the volume exists (it was staged and not yet
    /// unstaged).
    pub fn device_mount_path_exists(&self, driver: &str, volume_handle: &str) -> bool {
        device_mount_path(&self.plugin_dir, driver, volume_handle).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> CsiSource {
        CsiSource {
            driver: "csi.rekube.io".into(),
            volume_handle: "rk-0123456789abcdef".into(),
            fs_type: "ext4".into(),
            volume_attributes: BTreeMap::from([("type".into(), "local-disk".into())]),
            read_only: false,
            access_mode: Some("ReadWriteOnce".into()),
            mount_options: vec!["noatime".into()],
        }
    }

    #[test]
    fn paths_are_upstreams() {
        let plugin = CsiPlugin::new(BTreeMap::new(), Path::new("/var/lib/rekube/plugins"), "n1");
        // sha256("rk-0123456789abcdef")
        let sha = hex::encode(Sha256::digest(b"rk-0123456789abcdef"));
        assert_eq!(sha.len(), 64);
        assert_eq!(
            plugin.device_mount_path(&source()),
            Path::new(&format!(
                "/var/lib/rekube/plugins/kubernetes.io/csi/csi.rekube.io/{sha}/globalmount"
            ))
        );
        // A known digest: sha256("abc").
        assert_eq!(
            device_mount_path(Path::new("/p"), "d", "abc"),
            Path::new(
                "/p/d/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad/globalmount"
            )
        );
        let dirs = PodDirs::new("/var/lib/rekube/pods");
        assert_eq!(
            CsiPlugin::target_path(&dirs, "u1", "pv1"),
            Path::new("/var/lib/rekube/pods/u1/volumes/kubernetes.io~csi/pv1/mount")
        );
    }

    /// csi_client.go's two mappings (csi_client_test.go `TestAsCSIAccessModeV1`).
    #[test]
    fn access_modes_as_upstream() {
        let cases = [
            (Some("ReadWriteOnce"), false, Mode::SingleNodeWriter),
            (Some("ReadWriteOnce"), true, Mode::SingleNodeMultiWriter),
            (Some("ReadOnlyMany"), false, Mode::MultiNodeReaderOnly),
            (Some("ReadOnlyMany"), true, Mode::MultiNodeReaderOnly),
            (Some("ReadWriteMany"), false, Mode::MultiNodeMultiWriter),
            (Some("ReadWriteMany"), true, Mode::MultiNodeMultiWriter),
            (Some("ReadWriteOncePod"), false, Mode::SingleNodeWriter),
            (Some("ReadWriteOncePod"), true, Mode::SingleNodeSingleWriter),
            (Some("Bogus"), true, Mode::Unknown),
            (None, false, Mode::SingleNodeWriter),
            (None, true, Mode::SingleNodeMultiWriter),
        ];
        for (mode, multi, want) in cases {
            assert_eq!(as_csi_access_mode(mode, multi), want, "{mode:?} {multi}");
        }
    }

    #[test]
    fn capabilities_decide_staging_and_the_mapping() {
        let rpc = |t: NodeCapability| csi::NodeServiceCapability {
            r#type: Some(csi::node_service_capability::Type::Rpc(
                csi::node_service_capability::Rpc { r#type: t as i32 },
            )),
        };
        let none = csi::NodeGetCapabilitiesResponse::default();
        assert_eq!(NodeCapabilities::of(&none), NodeCapabilities::default());
        let rekube = csi::NodeGetCapabilitiesResponse {
            capabilities: vec![
                rpc(NodeCapability::StageUnstageVolume),
                rpc(NodeCapability::GetVolumeStats),
                rpc(NodeCapability::SingleNodeMultiWriter),
            ],
        };
        let caps = NodeCapabilities::of(&rekube);
        assert_eq!(
            caps,
            NodeCapabilities {
                stage_unstage: true,
                single_node_multi_writer: true,
                expand_volume: false,
            }
        );
        let cap = volume_capability(&source(), caps);
        assert_eq!(
            cap.access_mode.unwrap().mode,
            Mode::SingleNodeMultiWriter as i32
        );
        match cap.access_type {
            Some(csi::volume_capability::AccessType::Mount(m)) => {
                assert_eq!(m.fs_type, "ext4");
                assert_eq!(m.mount_flags, ["noatime"]);
            }
            other => panic!("{other:?}"),
        }
        let stage_only = csi::NodeGetCapabilitiesResponse {
            capabilities: vec![rpc(NodeCapability::StageUnstageVolume)],
        };
        let cap = volume_capability(&source(), NodeCapabilities::of(&stage_only));
        assert_eq!(cap.access_mode.unwrap().mode, Mode::SingleNodeWriter as i32);
    }

    #[test]
    fn messages_are_upstreams() {
        let e = StepError {
            step: Step::MountDevice,
            pv: "pv1".into(),
            error: CsiError::Rpc(tonic::Status::internal("mkfs failed")),
        };
        assert_eq!(
            e.to_string(),
            "MountVolume.MountDevice failed for volume \"pv1\" : rpc error: code = Internal desc = mkfs failed"
        );
        let e = StepError {
            step: Step::SetUp,
            pv: "pv1".into(),
            error: CsiError::Rpc(tonic::Status::cancelled("gone")),
        };
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"pv1\" : rpc error: code = Canceled desc = gone"
        );
        let e = StepError {
            step: Step::MountDevice,
            pv: "pv1".into(),
            error: CsiError::UnknownDriver {
                driver: "x.io".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "MountVolume.MountDevice failed for volume \"pv1\" : kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name x.io not found in the list of registered CSI drivers"
        );
        assert_eq!(Step::TearDown.operation(), "UnmountVolume.TearDown");
        assert_eq!(
            rpc_error_message(tonic::Code::FailedPrecondition, "still published"),
            "rpc error: code = FailedPrecondition desc = still published"
        );
    }

    #[test]
    fn driver_flags() {
        assert_eq!(
            parse_driver_flag("csi.rekube.io=unix:///run/csi/csi.sock").unwrap(),
            (
                "csi.rekube.io".to_string(),
                PathBuf::from("/run/csi/csi.sock")
            )
        );
        for (bad, why) in [
            ("csi.rekube.io", "expected NAME=unix:///path/to/csi.sock"),
            ("=unix:///a.sock", "the driver name is empty"),
            ("d=/a.sock", "the endpoint must be unix:///absolute/path"),
            ("d=unix://a.sock", "the socket path must be absolute"),
        ] {
            assert_eq!(
                parse_driver_flag(bad).unwrap_err().to_string(),
                format!("invalid --csi-driver {bad:?}: {why}")
            );
        }
        let twice = ["d=unix:///a".to_string(), "d=unix:///b".to_string()];
        assert_eq!(
            parse_driver_flags(&twice).unwrap_err().to_string(),
            "invalid --csi-driver \"d=unix:///b\": driver d is named twice"
        );
    }

    #[test]
    fn node_id_annotation_merges() {
        assert_eq!(
            node_id_annotation(None, "csi.rekube.io", "n1"),
            r#"{"csi.rekube.io":"n1"}"#
        );
        assert_eq!(
            node_id_annotation(Some(r#"{"other.io":"x"}"#), "csi.rekube.io", "n1"),
            r#"{"csi.rekube.io":"n1","other.io":"x"}"#
        );
        assert_eq!(
            node_id_annotation(Some("not json"), "d", "n1"),
            r#"{"d":"n1"}"#
        );
    }

    #[test]
    fn volumes_on_disk_from_their_vol_data() {
        assert_eq!(
            parse_vol_data(br#"{"driverName":"d","volumeHandle":"h","specVolID":"pv"}"#),
            Some(("d".to_string(), "h".to_string()))
        );
        assert_eq!(parse_vol_data(br#"{"driverName":"d"}"#), None);
        assert_eq!(
            parse_vol_data(br#"{"driverName":"","volumeHandle":"h"}"#),
            None
        );
        assert_eq!(parse_vol_data(b"garbage"), None);
        let tmp = tempfile::tempdir().unwrap();
        let dirs = PodDirs::new(tmp.path());
        assert!(pod_csi_volumes_on_disk(&dirs, "u1").is_empty());
        let target = CsiPlugin::target_path(&dirs, "u1", "pv1");
        make_dir(target.parent().unwrap()).unwrap();
        save_volume_data(
            target.parent().unwrap(),
            &pod_vol_data("pv1", &source(), "n1"),
        )
        .unwrap();
        // A directory without its file is not a volume the agent can name.
        make_dir(&dirs.pod_volume_dir("u1", CSI_PLUGIN, "pv2")).unwrap();
        assert_eq!(
            pod_csi_volumes_on_disk(&dirs, "u1"),
            [PodCsiVolume {
                pv: "pv1".into(),
                target,
                driver: "csi.rekube.io".into(),
                volume_handle: "rk-0123456789abcdef".into(),
            }]
        );
    }

    #[test]
    fn volume_data_files() {
        let pod = pod_vol_data("pv1", &source(), "n1");
        assert_eq!(pod["specVolID"], "pv1");
        assert_eq!(pod["volumeHandle"], "rk-0123456789abcdef");
        assert_eq!(pod["driverName"], "csi.rekube.io");
        assert_eq!(pod["nodeName"], "n1");
        assert_eq!(pod["volumeLifecycleMode"], "Persistent");
        assert!(pod["attachmentID"].starts_with("csi-"));
        assert_eq!(device_vol_data(&source()).len(), 2);

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pv1/mount");
        make_dir(&dir).unwrap();
        save_volume_data(dir.parent().unwrap(), &pod).unwrap();
        remove_mount_dir(&dir).unwrap();
        assert!(!tmp.path().join("pv1").exists());
        // Nothing there: nothing to do.
        remove_mount_dir(&dir).unwrap();
        // A mount directory that is not empty stays (it may be a mount).
        make_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        assert!(remove_mount_dir(&dir).is_err());
        assert!(dir.join("f").exists());
    }
}
