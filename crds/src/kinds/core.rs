//! core/v1 twins: Pod, Service, Endpoints, Node, PersistentVolume, PersistentVolumeClaim.
use k8s_openapi::api::core::v1 as upstream;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};

crate::rekube_resource! {
    /// rekube's Pod: core/v1 Pod under `rekube.io/v1`.
    Pod("pods"), upstream = upstream::Pod, scope = NamespaceResourceScope,
    { spec: Option<upstream::PodSpec> = "spec", status: Option<upstream::PodStatus> = "status" }
}

crate::rekube_resource! {
    /// rekube's Service: core/v1 Service under `rekube.io/v1`.
    Service("services"), upstream = upstream::Service, scope = NamespaceResourceScope,
    { spec: Option<upstream::ServiceSpec> = "spec", status: Option<upstream::ServiceStatus> = "status" }
}

crate::rekube_resource! {
    /// rekube's Endpoints: core/v1 Endpoints under `rekube.io/v1` (no spec, like upstream).
    Endpoints("endpoints"), upstream = upstream::Endpoints, scope = NamespaceResourceScope,
    { subsets: Option<Vec<upstream::EndpointSubset>> = "subsets" }
}

crate::rekube_resource! {
    /// rekube's Node: core/v1 Node under `rekube.io/v1`.
    Node("nodes"), upstream = upstream::Node, scope = ClusterResourceScope,
    { spec: Option<upstream::NodeSpec> = "spec", status: Option<upstream::NodeStatus> = "status" }
}

crate::rekube_resource! {
    /// rekube's PersistentVolume: core/v1 PersistentVolume under `rekube.io/v1`.
    PersistentVolume("persistentvolumes"), upstream = upstream::PersistentVolume, scope = ClusterResourceScope,
    {
        spec: Option<upstream::PersistentVolumeSpec> = "spec",
        status: Option<upstream::PersistentVolumeStatus> = "status",
    }
}

crate::rekube_resource! {
    /// rekube's PersistentVolumeClaim: core/v1 PersistentVolumeClaim under `rekube.io/v1`.
    PersistentVolumeClaim("persistentvolumeclaims"), upstream = upstream::PersistentVolumeClaim,
    scope = NamespaceResourceScope,
    {
        spec: Option<upstream::PersistentVolumeClaimSpec> = "spec",
        status: Option<upstream::PersistentVolumeClaimStatus> = "status",
    }
}
