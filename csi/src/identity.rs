//! The Identity service's answers: the plugin's name and version, its capabilities, and
//! readiness (Probe: the state dir was loaded, so the driver is ready once it serves).

use crate::csi::plugin_capability::service::Type as ServiceType;
use crate::csi::plugin_capability::volume_expansion::Type as ExpansionType;
use crate::csi::plugin_capability::{Service, Type, VolumeExpansion};
use crate::csi::{
    GetPluginCapabilitiesResponse, GetPluginInfoResponse, PluginCapability, ProbeResponse,
};
use crate::driver::Driver;

impl Driver {
    pub fn get_plugin_info(&self) -> GetPluginInfoResponse {
        GetPluginInfoResponse {
            name: self.config.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }
    }

    /// CONTROLLER_SERVICE, VOLUME_ACCESSIBILITY_CONSTRAINTS (volumes live on one node) and
    /// online volume expansion.
    pub fn get_plugin_capabilities(&self) -> GetPluginCapabilitiesResponse {
        let service = |t: ServiceType| PluginCapability {
            r#type: Some(Type::Service(Service { r#type: t as i32 })),
        };
        GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(ServiceType::ControllerService),
                service(ServiceType::VolumeAccessibilityConstraints),
                PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                        r#type: ExpansionType::Online as i32,
                    })),
                },
            ],
        }
    }

    pub fn probe(&self) -> ProbeResponse {
        ProbeResponse { ready: Some(true) }
    }
}
