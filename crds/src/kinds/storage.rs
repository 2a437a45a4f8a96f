//! storage.k8s.io/v1 twins: StorageClass, VolumeAttachment and CSIDriver.
use std::collections::BTreeMap;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::api::core::v1::TopologySelectorTerm;
use k8s_openapi::api::storage::v1 as upstream;

crate::rekube_resource! {
    /// rekube's StorageClass: storage.k8s.io/v1 StorageClass under `rekube.io/v1`
    /// (top-level fields, no spec, like upstream).
    StorageClass("storageclasses"), upstream = upstream::StorageClass, scope = ClusterResourceScope,
    {
        allow_volume_expansion: Option<bool> = "allowVolumeExpansion",
        allowed_topologies: Option<Vec<TopologySelectorTerm>> = "allowedTopologies",
        mount_options: Option<Vec<String>> = "mountOptions",
        parameters: Option<BTreeMap<String, String>> = "parameters",
        provisioner: String = "provisioner",
        reclaim_policy: Option<String> = "reclaimPolicy",
        volume_binding_mode: Option<String> = "volumeBindingMode",
    }
}

crate::rekube_resource! {
    /// rekube's VolumeAttachment: storage.k8s.io/v1 VolumeAttachment under `rekube.io/v1`.
    VolumeAttachment("volumeattachments"), upstream = upstream::VolumeAttachment, scope = ClusterResourceScope,
    {
        spec: Option<upstream::VolumeAttachmentSpec> = "spec",
        status: Option<upstream::VolumeAttachmentStatus> = "status",
    }
}

crate::rekube_resource! {
    /// rekube's CSIDriver: storage.k8s.io/v1 CSIDriver under `rekube.io/v1`: what a CSI
    /// driver needs of the control plane and the node agent (attach, pod info on mount,
    /// fsGroup policy, storage capacity), read by the attach/detach controller and the
    /// agent's csi plugin. Without an object for a driver, upstream's defaults hold
    /// (attach required).
    CSIDriver("csidrivers"), upstream = upstream::CSIDriver, scope = ClusterResourceScope,
    {
        spec: upstream::CSIDriverSpec = "spec",
    }
}
