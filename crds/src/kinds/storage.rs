//! storage.k8s.io/v1 twins: StorageClass, VolumeAttachment, CSIDriver and
//! CSIStorageCapacity.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::TopologySelectorTerm;
use k8s_openapi::api::storage::v1 as upstream;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};

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

crate::rekube_resource! {
    /// rekube's CSIStorageCapacity: storage.k8s.io/v1 CSIStorageCapacity under
    /// `rekube.io/v1` (top-level fields, no spec, like upstream): the capacity a CSI driver
    /// has for one StorageClass in one topology segment, published by the driver's
    /// provisioner (`rekube-csi provisioner --enable-capacity`) and read by the scheduler's
    /// VolumeBinding plugin for drivers whose CSIDriver says `storageCapacity: true`.
    CSIStorageCapacity("csistoragecapacities"), upstream = upstream::CSIStorageCapacity, scope = NamespaceResourceScope,
    {
        capacity: Option<Quantity> = "capacity",
        maximum_volume_size: Option<Quantity> = "maximumVolumeSize",
        node_topology: Option<LabelSelector> = "nodeTopology",
        storage_class_name: String = "storageClassName",
    }
}
