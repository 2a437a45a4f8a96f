//! The gRPC services: thin adapters from tonic's traits to [`Driver`]'s operations. Each
//! Controller and Node call runs on a blocking thread (the operations call into the
//! kernel and e2fsprogs); errors become a `Status` with the code the operation's error
//! enum gives and its message. Requests are never logged (they may carry secrets).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::controller::ControllerError;
use crate::csi::controller_server::Controller;
use crate::csi::identity_server::Identity;
use crate::csi::node_server::Node;
use crate::csi::*;
use crate::driver::Driver;
use crate::node::NodeError;

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// The three CSI services over one driver.
#[derive(Debug, Clone)]
pub struct CsiService {
    driver: Arc<Driver>,
}

impl CsiService {
    pub fn new(driver: Arc<Driver>) -> Self {
        CsiService { driver }
    }

    /// Runs `op` on a blocking thread and maps its error.
    async fn run<T, E>(
        &self,
        method: &'static str,
        op: impl FnOnce(&Driver) -> Result<T, E> + Send + 'static,
    ) -> Result<Response<T>, Status>
    where
        T: Send + 'static,
        E: Into<Status> + Send + 'static,
    {
        let driver = self.driver.clone();
        let result = tokio::task::spawn_blocking(move || op(&driver))
            .await
            .map_err(|e| Status::internal(format!("{method}: {e}")))?;
        match result {
            Ok(v) => Ok(Response::new(v)),
            Err(e) => {
                let status: Status = e.into();
                tracing::warn!(method, code = ?status.code(), message = status.message(), "failed");
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl Identity for CsiService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(self.driver.get_plugin_info()))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(self.driver.get_plugin_capabilities()))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(self.driver.probe()))
    }
}

#[tonic::async_trait]
impl Controller for CsiService {
    async fn create_volume(
        &self,
        r: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        self.run("CreateVolume", move |d| d.create_volume(r.into_inner()))
            .await
    }

    async fn delete_volume(
        &self,
        r: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        self.run("DeleteVolume", move |d| {
            d.delete_volume(r.into_inner())
                .map(|()| DeleteVolumeResponse {})
        })
        .await
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        self.run("ValidateVolumeCapabilities", move |d| {
            d.validate_volume_capabilities(r.into_inner())
        })
        .await
    }

    async fn list_volumes(
        &self,
        r: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        self.run("ListVolumes", move |d| d.list_volumes(r.into_inner()))
            .await
    }

    async fn get_capacity(
        &self,
        r: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        self.run("GetCapacity", move |d| d.get_capacity(r.into_inner()))
            .await
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(self.driver.controller_get_capabilities()))
    }

    async fn controller_publish_volume(
        &self,
        r: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        self.run("ControllerPublishVolume", move |d| {
            d.controller_publish_volume(r.into_inner())
        })
        .await
    }

    async fn controller_unpublish_volume(
        &self,
        r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        self.run("ControllerUnpublishVolume", move |d| {
            d.controller_unpublish_volume(r.into_inner())
                .map(|()| ControllerUnpublishVolumeResponse {})
        })
        .await
    }

    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        self.run("ControllerExpandVolume", move |d| {
            d.controller_expand_volume(r.into_inner())
        })
        .await
    }
}

#[tonic::async_trait]
impl Node for CsiService {
    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        self.run("NodeStageVolume", move |d| {
            d.node_stage_volume(r.into_inner())
                .map(|()| NodeStageVolumeResponse {})
        })
        .await
    }

    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        self.run("NodeUnstageVolume", move |d| {
            d.node_unstage_volume(r.into_inner())
                .map(|()| NodeUnstageVolumeResponse {})
        })
        .await
    }

    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        self.run("NodePublishVolume", move |d| {
            d.node_publish_volume(r.into_inner())
                .map(|()| NodePublishVolumeResponse {})
        })
        .await
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        self.run("NodeUnpublishVolume", move |d| {
            d.node_unpublish_volume(r.into_inner())
                .map(|()| NodeUnpublishVolumeResponse {})
        })
        .await
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        self.run("NodeGetVolumeStats", move |d| {
            d.node_get_volume_stats(r.into_inner())
        })
        .await
    }

    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        self.run("NodeExpandVolume", move |d| {
            d.node_expand_volume(r.into_inner())
        })
        .await
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(self.driver.node_get_capabilities()))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(self.driver.node_get_info()))
    }
}
