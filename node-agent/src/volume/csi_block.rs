//! The csi plugin's block volume mapper (upstream pkg/volume/csi/csi_block.go): a
//! PersistentVolume of a CSI driver in volumeMode Block is staged by the driver at
//! `plugins/kubernetes.io/csi/volumeDevices/staging/<pv>` (SetUpDevice: NodeStageVolume,
//! once per node, when the driver stages), published for each pod as a file at
//! `.../volumeDevices/publish/<pv>/<pod uid>` (MapPodDevice: NodePublishVolume with block
//! access: the driver binds its device node there), and that file is then mapped for the
//! pod ([`super::volume_path_handler`]: bound at `.../volumeDevices/<pv>/dev/<pod uid>`,
//! symlinked from `pods/<uid>/volumeDevices/kubernetes.io~csi/<pv>`, held by a loop
//! device). Teardown is the reverse: unmap, NodeUnpublishVolume (UnmapPodDevice), and
//! after the node's last pod NodeUnstageVolume (TearDownDevice) with the volume's files.
//!
//! The volume's identity is kept in `.../volumeDevices/<pv>/data/vol_data.json` (written
//! by `NewBlockVolumeMapper`), which is how an agent restarted after a pod went finds the
//! driver and handle to tear it down with.
//!
//! The paths and requests are pure functions; [`CsiPlugin`]'s methods here call the
//! driver.
//!
//! ```text
//! /dev/loopX ............................................. the descriptor lock (holds dev/<uid>)
//! plugins/kubernetes.io/csi/volumeDevices/<pv>/dev/ ........ global map path
//! plugins/kubernetes.io/csi/volumeDevices/<pv>/dev/<uid> ... bind mount of the publish path
//! plugins/kubernetes.io/csi/volumeDevices/<pv>/data/vol_data.json
//! plugins/kubernetes.io/csi/volumeDevices/staging/<pv> ..... staging path
//! plugins/kubernetes.io/csi/volumeDevices/publish/<pv>/<uid> publish path (the driver's bind)
//! pods/<uid>/volumeDevices/kubernetes.io~csi/<pv> .......... symlink to the publish path
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rekube_crds::storage_keys::attachment_name;
use rekube_csi::csi;

use super::csi::{
    CsiError, CsiPlugin, CsiSource, NodeCapabilities, Step, StepError, VOL_DATA_FILE_NAME,
    as_csi_access_mode, io_err, make_dir, parse_vol_data, rpc, save_volume_data,
};
use super::pod_dirs::{CSI_PLUGIN, PodDirs, escape_qualified_name};

/// The directory of a plugin's block volumes under its plugin directory
/// (`DefaultKubeletVolumeDevicesDirName`).
pub const VOLUME_DEVICES: &str = "volumeDevices";

/// `getVolumePluginDir`: `<csi plugin dir>/volumeDevices/<pv>`, the volume's own files.
pub fn volume_plugin_dir(csi_dir: &Path, pv: &str) -> PathBuf {
    csi_dir.join(VOLUME_DEVICES).join(escape_qualified_name(pv))
}

/// `GetGlobalMapPath` (`getVolumeDevicePluginDir`): `.../volumeDevices/<pv>/dev`.
pub fn global_map_path(csi_dir: &Path, pv: &str) -> PathBuf {
    volume_plugin_dir(csi_dir, pv).join("dev")
}

/// `getVolumeDeviceDataDir`: `.../volumeDevices/<pv>/data`, where `vol_data.json` is.
pub fn volume_device_data_dir(csi_dir: &Path, pv: &str) -> PathBuf {
    volume_plugin_dir(csi_dir, pv).join("data")
}

/// `GetStagingPath`: `.../volumeDevices/staging/<pv>`.
pub fn staging_path(csi_dir: &Path, pv: &str) -> PathBuf {
    csi_dir.join(VOLUME_DEVICES).join("staging").join(pv)
}

/// `getPublishDir`: `.../volumeDevices/publish/<pv>`.
pub fn publish_dir(csi_dir: &Path, pv: &str) -> PathBuf {
    csi_dir.join(VOLUME_DEVICES).join("publish").join(pv)
}

/// `getPublishPath`: `.../volumeDevices/publish/<pv>/<pod uid>`, a file the driver binds
/// its device node onto.
pub fn publish_path(csi_dir: &Path, pv: &str, pod_uid: &str) -> PathBuf {
    publish_dir(csi_dir, pv).join(pod_uid)
}

/// `GetPodDeviceMapPath`: the directory (`pods/<uid>/volumeDevices/kubernetes.io~csi`)
/// and the name (the PV's) of the pod's symlink.
pub fn pod_device_map_path(dirs: &PodDirs, pod_uid: &str, pv: &str) -> (PathBuf, String) {
    (
        dirs.pod_volume_device_dir(pod_uid, CSI_PLUGIN),
        pv.to_string(),
    )
}

/// The volume capability of a block volume's NodeStageVolume and NodePublishVolume
/// (`fsTypeBlockName`: block access, no mount flags), with the access mode of the PV's
/// first access mode.
pub fn block_volume_capability(
    source: &CsiSource,
    caps: NodeCapabilities,
) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode {
            mode: as_csi_access_mode(source.access_mode.as_deref(), caps.single_node_multi_writer)
                as i32,
        }),
        access_type: Some(csi::volume_capability::AccessType::Block(
            csi::volume_capability::BlockVolume {},
        )),
    }
}

/// `NewBlockVolumeMapper`'s `vol_data.json` (no lifecycle mode, as upstream's).
pub fn block_vol_data(pv: &str, source: &CsiSource, node: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("specVolID", pv.to_string()),
        ("volumeHandle", source.volume_handle.clone()),
        ("driverName", source.driver.clone()),
        ("nodeName", node.to_string()),
        (
            "attachmentID",
            attachment_name(&source.volume_handle, &source.driver, node),
        ),
    ])
}

/// `stageVolumeForBlock`'s NodeStageVolume.
pub fn stage_request(
    source: &CsiSource,
    publish_context: &HashMap<String, String>,
    staging: &Path,
    caps: NodeCapabilities,
) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: source.volume_handle.clone(),
        publish_context: publish_context.clone(),
        staging_target_path: staging.to_string_lossy().into_owned(),
        volume_capability: Some(block_volume_capability(source, caps)),
        secrets: HashMap::new(),
        volume_context: source.volume_attributes.clone().into_iter().collect(),
    }
}

/// `publishVolumeForBlock`'s NodePublishVolume: the staging path always (upstream passes
/// it whether the driver stages or not), the publish path as the target.
pub fn publish_request(
    source: &CsiSource,
    read_only: bool,
    publish_context: &HashMap<String, String>,
    staging: &Path,
    target: &Path,
    caps: NodeCapabilities,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: source.volume_handle.clone(),
        publish_context: publish_context.clone(),
        staging_target_path: staging.to_string_lossy().into_owned(),
        target_path: target.to_string_lossy().into_owned(),
        volume_capability: Some(block_volume_capability(source, caps)),
        readonly: read_only,
        secrets: HashMap::new(),
        volume_context: source.volume_attributes.clone().into_iter().collect(),
    }
}

/// csi_client.go's `isFinalError`: a gRPC error the driver may still be working on
/// (cancelled, deadline, unavailable, exhausted, aborted) is not final; anything else is.
pub fn is_final_error(error: &CsiError) -> bool {
    use tonic::Code;
    match error {
        CsiError::Rpc(status) => !matches!(
            status.code(),
            Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Unavailable
                | Code::ResourceExhausted
                | Code::Aborted
        ),
        _ => true,
    }
}

/// `os.Remove`: an empty directory (or a file) removed; missing is fine.
fn remove_if_empty(path: &Path) -> Result<(), std::io::Error> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl CsiPlugin {
    /// The driver's client for a block mapper step, its lookup failure worded as
    /// upstream's `csiClientGetter.Get` in that step.
    async fn block_client(
        &self,
        op: &'static str,
        driver: &str,
    ) -> Result<csi::node_client::NodeClient<tonic::transport::Channel>, CsiError> {
        self.client(driver).await.map_err(|e| match e {
            CsiError::UnknownDriver { driver } => CsiError::BlockClient { op, driver },
            other => other,
        })
    }

    /// `NewBlockVolumeMapper`'s files: `.../volumeDevices/<pv>/data/vol_data.json`
    /// (the data directory 0750).
    pub fn save_block_volume_data(&self, pv: &str, source: &CsiSource) -> Result<(), CsiError> {
        let dir = volume_device_data_dir(self.plugin_dir(), pv);
        make_dir(&dir)?;
        save_volume_data(&dir, &block_vol_data(pv, source, self.node_name()))
    }

    /// `NewBlockVolumeUnmapper`'s load: the driver and volume handle of the PV's block
    /// volume, from its `vol_data.json`.
    pub fn load_block_volume_data(&self, pv: &str) -> Option<(String, String)> {
        let file = volume_device_data_dir(self.plugin_dir(), pv).join(VOL_DATA_FILE_NAME);
        parse_vol_data(&std::fs::read(file).ok()?)
    }

    /// `SetUpDevice`: with STAGE_UNSTAGE_VOLUME, the staging directory made (0750) and
    /// NodeStageVolume at it; whether the volume was staged. A final failure removes the
    /// volume's files (`cleanupOrphanDeviceFiles`).
    pub async fn set_up_device(
        &self,
        pv: &str,
        source: &CsiSource,
        publish_context: &HashMap<String, String>,
    ) -> Result<bool, StepError> {
        let err = |error| StepError {
            step: Step::MapSetUpDevice,
            pv: pv.to_string(),
            error,
        };
        let staging = staging_path(self.plugin_dir(), pv);
        let staged = async {
            let mut client = self.block_client("SetUpDevice", &source.driver).await?;
            let caps = Self::capabilities(&mut client)
                .await
                .map_err(|e| CsiError::Block {
                    what: "stageVolumeForBlock failed to check STAGE_UNSTAGE_VOLUME capability",
                    source: Box::new(e),
                })?;
            if !caps.stage_unstage {
                return Ok(false);
            }
            make_dir(&staging)?;
            rpc(client.node_stage_volume(stage_request(source, publish_context, &staging, caps)))
                .await?;
            Ok(true)
        };
        match staged.await {
            Ok(staged) => Ok(staged),
            Err(e) => {
                if is_final_error(&e) {
                    self.cleanup_orphan_device_files(pv);
                }
                Err(err(e))
            }
        }
    }

    /// `MapPodDevice`: the publish directory made (0750) and NodePublishVolume with the
    /// pod's publish path as the target; that path (what is mapped for the pod).
    pub async fn map_pod_device(
        &self,
        pv: &str,
        pod_uid: &str,
        read_only: bool,
        source: &CsiSource,
        publish_context: &HashMap<String, String>,
    ) -> Result<PathBuf, StepError> {
        let err = |error| StepError {
            step: Step::MapPodDevice,
            pv: pv.to_string(),
            error,
        };
        let target = publish_path(self.plugin_dir(), pv, pod_uid);
        let published = async {
            let mut client = self.block_client("MapPodDevice", &source.driver).await?;
            let caps = Self::capabilities(&mut client).await?;
            let dir = publish_dir(self.plugin_dir(), pv);
            make_dir(&dir)?;
            rpc(client.node_publish_volume(publish_request(
                source,
                read_only,
                publish_context,
                &staging_path(self.plugin_dir(), pv),
                &target,
                caps,
            )))
            .await
            .map(drop)
        };
        published.await.map_err(err)?;
        Ok(target)
    }

    /// `UnmapPodDevice`: NodeUnpublishVolume of the pod's publish path.
    pub async fn unmap_pod_device(
        &self,
        pv: &str,
        pod_uid: &str,
        driver: &str,
        volume_handle: &str,
    ) -> Result<(), StepError> {
        let err = |error| StepError {
            step: Step::UnmapPodDevice,
            pv: pv.to_string(),
            error,
        };
        let mut client = self
            .block_client("UnmapPodDevice", driver)
            .await
            .map_err(err)?;
        let target = publish_path(self.plugin_dir(), pv, pod_uid);
        rpc(
            client.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: volume_handle.to_string(),
                target_path: target.to_string_lossy().into_owned(),
            }),
        )
        .await
        .map(drop)
        .map_err(|e| {
            err(CsiError::Block {
                what: "unpublishVolumeForBlock failed",
                source: Box::new(e),
            })
        })
    }

    /// `TearDownDevice`: when the staging path exists, NodeUnstageVolume (if the driver
    /// stages) and the staging path removed; then the volume's files
    /// (`cleanupOrphanDeviceFiles`).
    pub async fn tear_down_device(
        &self,
        pv: &str,
        driver: &str,
        volume_handle: &str,
    ) -> Result<(), StepError> {
        let err = |error| StepError {
            step: Step::TearDownDevice,
            pv: pv.to_string(),
            error,
        };
        let mut client = self
            .block_client("TearDownDevice", driver)
            .await
            .map_err(err)?;
        let staging = staging_path(self.plugin_dir(), pv);
        if staging.exists() {
            let unstaged = async {
                let caps = Self::capabilities(&mut client).await.map_err(|e| CsiError::Block {
                    what: "unstageVolumeForBlock failed to check STAGE_UNSTAGE_VOLUME capability",
                    source: Box::new(e),
                })?;
                if !caps.stage_unstage {
                    return Ok(());
                }
                rpc(client.node_unstage_volume(csi::NodeUnstageVolumeRequest {
                    volume_id: volume_handle.to_string(),
                    staging_target_path: staging.to_string_lossy().into_owned(),
                }))
                .await
                .map_err(|e| CsiError::Block {
                    what: "unstageVolumeForBlock failed",
                    source: Box::new(e),
                })?;
                match std::fs::remove_dir_all(&staging) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err("removing the staging path", &staging)(e)),
                }
            };
            unstaged.await.map_err(err)?;
        }
        self.cleanup_orphan_device_files(pv);
        Ok(())
    }

    /// `cleanupOrphanDeviceFiles`: the publish directory and the staging path when
    /// empty, then the volume's own directory (`vol_data.json` and the global map path)
    /// on its filesystem only: a device still bound there is not crossed (its unlink
    /// fails). Failures are logged, as upstream's.
    pub fn cleanup_orphan_device_files(&self, pv: &str) {
        for dir in [
            publish_dir(self.plugin_dir(), pv),
            staging_path(self.plugin_dir(), pv),
        ] {
            if let Err(e) = remove_if_empty(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cleaning up block volume directory");
            }
        }
        let volume_dir = volume_plugin_dir(self.plugin_dir(), pv);
        match std::fs::remove_dir_all(&volume_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %volume_dir.display(), error = %e, "cleaning up block volume directory")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use rekube_csi::csi::node_server::{Node, NodeServer};
    use rekube_csi::csi::node_service_capability::rpc::Type as NodeCapability;
    use rekube_csi::csi::volume_capability::access_mode::Mode;
    use tokio_stream::wrappers::UnixListenerStream;

    const DRIVER: &str = "test-driver";
    const POD_UID: &str = "test-pod";

    fn source() -> CsiSource {
        CsiSource {
            driver: DRIVER.into(),
            volume_handle: "test-vol".into(),
            fs_type: String::new(),
            volume_attributes: BTreeMap::from([("type".into(), "local-disk".into())]),
            read_only: false,
            access_mode: Some("ReadWriteOnce".into()),
            mount_options: vec!["ignored".into()],
        }
    }

    /// csi_block_test.go's `TestBlockMapperGetGlobalMapPath`, `TestBlockMapperGetStagingPath`,
    /// `TestBlockMapperGetPublishPath` and `TestBlockMapperGetDeviceMapPath` (2 cases each:
    /// a simple name and one with dots).
    #[test]
    fn paths_are_upstreams() {
        let root = Path::new("/tmp/kubelet");
        let csi_dir = root.join("plugins/kubernetes.io/csi");
        let dirs = PodDirs::new(root.join("pods"));
        for spec in ["spec-0", "test.spec.1"] {
            assert_eq!(
                global_map_path(&csi_dir, spec),
                root.join(format!(
                    "plugins/kubernetes.io/csi/volumeDevices/{spec}/dev"
                ))
            );
            assert_eq!(
                staging_path(&csi_dir, spec),
                root.join(format!(
                    "plugins/kubernetes.io/csi/volumeDevices/staging/{spec}"
                ))
            );
            assert_eq!(
                publish_path(&csi_dir, spec, POD_UID),
                root.join(format!(
                    "plugins/kubernetes.io/csi/volumeDevices/publish/{spec}/{POD_UID}"
                ))
            );
            assert_eq!(
                pod_device_map_path(&dirs, POD_UID, spec),
                (
                    root.join(format!("pods/{POD_UID}/volumeDevices/kubernetes.io~csi")),
                    spec.to_string()
                )
            );
            assert_eq!(
                volume_device_data_dir(&csi_dir, spec),
                root.join(format!(
                    "plugins/kubernetes.io/csi/volumeDevices/{spec}/data"
                ))
            );
        }
    }

    /// What the driver is asked: block access (no fsType, no mount flags) with the PV's
    /// access mode, the attachment's publish context, the volume attributes, the staging
    /// path on publish too, read-only as the claim says; upstream's vol_data.json keys.
    #[test]
    fn stage_and_publish_requests() {
        let caps = NodeCapabilities {
            stage_unstage: true,
            single_node_multi_writer: false,
            expand_volume: false,
        };
        let ctx = HashMap::from([("devicePath".to_string(), "/dev/loop3".to_string())]);
        let staging = Path::new("/p/volumeDevices/staging/pv1");
        let stage = stage_request(&source(), &ctx, staging, caps);
        assert_eq!(stage.volume_id, "test-vol");
        assert_eq!(stage.staging_target_path, "/p/volumeDevices/staging/pv1");
        assert_eq!(stage.publish_context, ctx);
        assert_eq!(stage.volume_context["type"], "local-disk");
        let cap = stage.volume_capability.unwrap();
        assert_eq!(
            cap.access_type,
            Some(csi::volume_capability::AccessType::Block(
                csi::volume_capability::BlockVolume {}
            ))
        );
        assert_eq!(cap.access_mode.unwrap().mode, Mode::SingleNodeWriter as i32);

        let target = Path::new("/p/volumeDevices/publish/pv1/u1");
        let publish = publish_request(&source(), true, &HashMap::new(), staging, target, caps);
        assert!(publish.readonly);
        assert_eq!(publish.target_path, "/p/volumeDevices/publish/pv1/u1");
        assert_eq!(publish.staging_target_path, "/p/volumeDevices/staging/pv1");
        assert!(publish.publish_context.is_empty());
        let multi = NodeCapabilities {
            stage_unstage: true,
            single_node_multi_writer: true,
            expand_volume: false,
        };
        let publish = publish_request(&source(), false, &ctx, staging, target, multi);
        assert_eq!(
            publish.volume_capability.unwrap().access_mode.unwrap().mode,
            Mode::SingleNodeMultiWriter as i32
        );

        let data = block_vol_data("pv1", &source(), "n1");
        assert_eq!(
            data.keys().copied().collect::<Vec<_>>(),
            [
                "attachmentID",
                "driverName",
                "nodeName",
                "specVolID",
                "volumeHandle"
            ]
        );
        assert_eq!(
            data["attachmentID"],
            attachment_name("test-vol", DRIVER, "n1")
        );
        assert!(is_final_error(&CsiError::Rpc(
            tonic::Status::invalid_argument("x")
        )));
        assert!(!is_final_error(&CsiError::Rpc(
            tonic::Status::deadline_exceeded("x")
        )));
        assert!(!is_final_error(&CsiError::Rpc(tonic::Status::unavailable(
            "x"
        ))));
    }

    /// One call the fake driver got: its name and path.
    type Calls = Arc<Mutex<Vec<(&'static str, String)>>>;

    /// upstream's fake CSI node client: records NodeStage/Publish calls by volume, can
    /// fail the next call with a given status; STAGE_UNSTAGE_VOLUME when `stages`.
    struct FakeNode {
        stages: bool,
        calls: Calls,
        staged: Arc<Mutex<BTreeMap<String, String>>>,
        published: Arc<Mutex<BTreeMap<String, String>>>,
        next_error: Arc<Mutex<Option<tonic::Status>>>,
    }

    impl FakeNode {
        fn fail(&self) -> Result<(), tonic::Status> {
            match self.next_error.lock().unwrap().take() {
                Some(status) => Err(status),
                None => Ok(()),
            }
        }
    }

    #[tonic::async_trait]
    impl Node for FakeNode {
        async fn node_get_capabilities(
            &self,
            _: tonic::Request<csi::NodeGetCapabilitiesRequest>,
        ) -> Result<tonic::Response<csi::NodeGetCapabilitiesResponse>, tonic::Status> {
            let capabilities = if self.stages {
                vec![csi::NodeServiceCapability {
                    r#type: Some(csi::node_service_capability::Type::Rpc(
                        csi::node_service_capability::Rpc {
                            r#type: NodeCapability::StageUnstageVolume as i32,
                        },
                    )),
                }]
            } else {
                vec![]
            };
            Ok(tonic::Response::new(csi::NodeGetCapabilitiesResponse {
                capabilities,
            }))
        }

        async fn node_stage_volume(
            &self,
            r: tonic::Request<csi::NodeStageVolumeRequest>,
        ) -> Result<tonic::Response<csi::NodeStageVolumeResponse>, tonic::Status> {
            let r = r.into_inner();
            self.calls
                .lock()
                .unwrap()
                .push(("NodeStageVolume", r.staging_target_path.clone()));
            self.fail()?;
            self.staged
                .lock()
                .unwrap()
                .insert(r.volume_id, r.staging_target_path);
            Ok(tonic::Response::new(csi::NodeStageVolumeResponse {}))
        }

        async fn node_unstage_volume(
            &self,
            r: tonic::Request<csi::NodeUnstageVolumeRequest>,
        ) -> Result<tonic::Response<csi::NodeUnstageVolumeResponse>, tonic::Status> {
            let r = r.into_inner();
            self.calls
                .lock()
                .unwrap()
                .push(("NodeUnstageVolume", r.staging_target_path.clone()));
            self.fail()?;
            self.staged.lock().unwrap().remove(&r.volume_id);
            Ok(tonic::Response::new(csi::NodeUnstageVolumeResponse {}))
        }

        async fn node_publish_volume(
            &self,
            r: tonic::Request<csi::NodePublishVolumeRequest>,
        ) -> Result<tonic::Response<csi::NodePublishVolumeResponse>, tonic::Status> {
            let r = r.into_inner();
            self.calls
                .lock()
                .unwrap()
                .push(("NodePublishVolume", r.target_path.clone()));
            self.fail()?;
            // The driver makes the target file (its device node is bound there).
            std::fs::write(&r.target_path, b"")
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            self.published
                .lock()
                .unwrap()
                .insert(r.volume_id, r.target_path);
            Ok(tonic::Response::new(csi::NodePublishVolumeResponse {}))
        }

        async fn node_unpublish_volume(
            &self,
            r: tonic::Request<csi::NodeUnpublishVolumeRequest>,
        ) -> Result<tonic::Response<csi::NodeUnpublishVolumeResponse>, tonic::Status> {
            let r = r.into_inner();
            self.calls
                .lock()
                .unwrap()
                .push(("NodeUnpublishVolume", r.target_path.clone()));
            self.fail()?;
            let _ = std::fs::remove_file(&r.target_path);
            self.published.lock().unwrap().remove(&r.volume_id);
            Ok(tonic::Response::new(csi::NodeUnpublishVolumeResponse {}))
        }
    }

    /// A plugin under a temporary root with the fake driver served on a real socket.
    struct Harness {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        plugin: CsiPlugin,
        calls: Calls,
        staged: Arc<Mutex<BTreeMap<String, String>>>,
        published: Arc<Mutex<BTreeMap<String, String>>>,
        next_error: Arc<Mutex<Option<tonic::Status>>>,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    impl Harness {
        fn csi_dir(&self) -> PathBuf {
            self.root.join("plugins/kubernetes.io/csi")
        }
    }

    async fn harness(stages: bool) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let socket = root.join("csi.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let node = FakeNode {
            stages,
            calls: Calls::default(),
            staged: Arc::default(),
            published: Arc::default(),
            next_error: Arc::default(),
        };
        let (calls, staged, published, next_error) = (
            Arc::clone(&node.calls),
            Arc::clone(&node.staged),
            Arc::clone(&node.published),
            Arc::clone(&node.next_error),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(NodeServer::new(node))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let plugin = CsiPlugin::new(
            BTreeMap::from([(DRIVER.to_string(), socket)]),
            &root.join("plugins"),
            "node-1",
        );
        Harness {
            _tmp: tmp,
            root,
            plugin,
            calls,
            staged,
            published,
            next_error,
            _stop: stop,
        }
    }

    /// csi_block_test.go `TestBlockMapperSetupDevice`: NodeStageVolume at the staging
    /// path, which exists; `TestBlockMapperMapPodDevice` and
    /// `TestBlockMapperMapPodDeviceNotSupportAttach`: NodePublishVolume at the publish
    /// path, which MapPodDevice returns; the vol_data.json of `NewBlockVolumeMapper`.
    #[tokio::test]
    async fn set_up_device_and_map_pod_device() {
        let h = harness(true).await;
        h.plugin
            .save_block_volume_data("test-pv", &source())
            .unwrap();
        assert_eq!(
            h.plugin.load_block_volume_data("test-pv"),
            Some((DRIVER.to_string(), "test-vol".to_string()))
        );
        let ctx = HashMap::from([("devicePath".into(), "/dev/loop9".into())]);
        assert!(
            h.plugin
                .set_up_device("test-pv", &source(), &ctx)
                .await
                .unwrap()
        );
        let staging = staging_path(&h.csi_dir(), "test-pv");
        assert_eq!(
            h.staged.lock().unwrap().get("test-vol"),
            Some(&staging.to_string_lossy().into_owned())
        );
        assert!(staging.is_dir());
        for context in [ctx, HashMap::new()] {
            let path = h
                .plugin
                .map_pod_device("test-pv", POD_UID, false, &source(), &context)
                .await
                .unwrap();
            assert_eq!(path, publish_path(&h.csi_dir(), "test-pv", POD_UID));
            assert_eq!(
                h.published.lock().unwrap().get("test-vol"),
                Some(&path.to_string_lossy().into_owned())
            );
        }
    }

    /// A driver without STAGE_UNSTAGE_VOLUME: SetUpDevice stages nothing, makes nothing.
    #[tokio::test]
    async fn set_up_device_without_staging() {
        let h = harness(false).await;
        assert!(
            !h.plugin
                .set_up_device("test-pv", &source(), &HashMap::new())
                .await
                .unwrap()
        );
        assert!(h.calls.lock().unwrap().is_empty());
        assert!(!staging_path(&h.csi_dir(), "test-pv").exists());
    }

    /// `TestBlockMapperSetupDeviceError`: a final error from NodeStageVolume leaves no
    /// data, device or staging directory; the message is upstream's.
    #[tokio::test]
    async fn set_up_device_error_cleans_up() {
        let h = harness(true).await;
        h.plugin
            .save_block_volume_data("test-pv", &source())
            .unwrap();
        *h.next_error.lock().unwrap() = Some(tonic::Status::invalid_argument("mock final error"));
        let err = h
            .plugin
            .set_up_device("test-pv", &source(), &HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "MapVolume.SetUpDevice failed for volume \"test-pv\" : rpc error: code = InvalidArgument desc = mock final error"
        );
        assert!(!volume_device_data_dir(&h.csi_dir(), "test-pv").exists());
        assert!(!global_map_path(&h.csi_dir(), "test-pv").exists());
        assert!(!staging_path(&h.csi_dir(), "test-pv").exists());
    }

    /// `TestBlockMapperSetupDeviceNoClientError`, `TestBlockMapperMapPodDeviceNoClientError`,
    /// `TestBlockMapperTearDownDeviceNoClientError`, `TestUnmapPodDeviceNoClientError`:
    /// an unknown driver fails each step with upstream's wording (upstream checks the
    /// error's type, a transient failure: here the pod retries any failure).
    #[tokio::test]
    async fn unknown_driver_fails_each_step() {
        let h = harness(true).await;
        let mut unknown = source();
        unknown.driver = "unknown-driver".into();
        let no_client = |op: &str| {
            format!(
                "kubernetes.io/csi: blockMapper.{op} failed to get CSI client: driver name unknown-driver not found in the list of registered CSI drivers"
            )
        };
        let e = h
            .plugin
            .set_up_device("test-pv", &unknown, &HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "MapVolume.SetUpDevice failed for volume \"test-pv\" : {}",
                no_client("SetUpDevice")
            )
        );
        let e = h
            .plugin
            .map_pod_device("test-pv", POD_UID, false, &unknown, &HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(e.error.to_string(), no_client("MapPodDevice"));
        let e = h
            .plugin
            .unmap_pod_device("test-pv", POD_UID, "unknown-driver", "test-vol")
            .await
            .unwrap_err();
        assert_eq!(e.error.to_string(), no_client("UnmapPodDevice"));
        let e = h
            .plugin
            .tear_down_device("test-pv", "unknown-driver", "test-vol")
            .await
            .unwrap_err();
        assert_eq!(e.error.to_string(), no_client("TearDownDevice"));
        assert!(h.calls.lock().unwrap().is_empty());
    }

    /// `TestBlockMapperTearDownDevice` and `TestVolumeSetupTeardown`: set up, map,
    /// unmap (NodeUnpublishVolume), tear down (NodeUnstageVolume) in upstream's order,
    /// and nothing is left: no data, device, publish or staging directory.
    #[tokio::test]
    async fn volume_set_up_and_tear_down_leave_nothing() {
        let h = harness(true).await;
        h.plugin
            .save_block_volume_data("test-pv", &source())
            .unwrap();
        h.plugin
            .set_up_device("test-pv", &source(), &HashMap::new())
            .await
            .unwrap();
        let publish = h
            .plugin
            .map_pod_device("test-pv", POD_UID, false, &source(), &HashMap::new())
            .await
            .unwrap();
        h.plugin
            .unmap_pod_device("test-pv", POD_UID, DRIVER, "test-vol")
            .await
            .unwrap();
        assert!(h.published.lock().unwrap().is_empty(), "unpublished");
        h.plugin
            .tear_down_device("test-pv", DRIVER, "test-vol")
            .await
            .unwrap();
        assert!(h.staged.lock().unwrap().is_empty(), "unstaged");
        let staging = staging_path(&h.csi_dir(), "test-pv");
        assert_eq!(
            *h.calls.lock().unwrap(),
            [
                ("NodeStageVolume", staging.to_string_lossy().into_owned()),
                ("NodePublishVolume", publish.to_string_lossy().into_owned()),
                (
                    "NodeUnpublishVolume",
                    publish.to_string_lossy().into_owned()
                ),
                ("NodeUnstageVolume", staging.to_string_lossy().into_owned()),
            ]
        );
        for gone in [
            volume_device_data_dir(&h.csi_dir(), "test-pv"),
            global_map_path(&h.csi_dir(), "test-pv"),
            publish.clone(),
            publish.parent().unwrap().to_path_buf(),
            staging,
        ] {
            assert!(!gone.exists(), "{} left", gone.display());
        }
        let left: Vec<_> = std::fs::read_dir(h.csi_dir().join(VOLUME_DEVICES))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !["staging", "publish"].contains(&p.file_name().unwrap().to_str().unwrap()))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // Torn down already (staging path gone): NodeUnstageVolume is not called again.
        h.plugin
            .tear_down_device("test-pv", DRIVER, "test-vol")
            .await
            .unwrap();
        assert_eq!(h.calls.lock().unwrap().len(), 4);
        // A failed unstage is upstream's wrapped message.
        make_dir(&staging_path(&h.csi_dir(), "test-pv")).unwrap();
        *h.next_error.lock().unwrap() = Some(tonic::Status::internal("busy"));
        let e = h
            .plugin
            .tear_down_device("test-pv", DRIVER, "test-vol")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "UnmapDevice.TearDownDevice failed for volume \"test-pv\" : kubernetes.io/csi: blockMapper.unstageVolumeForBlock failed: rpc error: code = Internal desc = busy"
        );
    }
}
