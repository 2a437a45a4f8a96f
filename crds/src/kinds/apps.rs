//! apps/v1 twins: Deployment and ReplicaSet.
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1 as upstream;

crate::rekube_resource! {
    /// rekube's Deployment: `apps/v1` Deployment under `rekube.io/v1`.
    Deployment("deployments"), upstream = upstream::Deployment, scope = NamespaceResourceScope,
    { spec: Option<upstream::DeploymentSpec> = "spec", status: Option<upstream::DeploymentStatus> = "status" }
}

crate::rekube_resource! {
    /// rekube's ReplicaSet: `apps/v1` ReplicaSet under `rekube.io/v1`.
    ReplicaSet("replicasets"), upstream = upstream::ReplicaSet, scope = NamespaceResourceScope,
    { spec: Option<upstream::ReplicaSetSpec> = "spec", status: Option<upstream::ReplicaSetStatus> = "status" }
}
