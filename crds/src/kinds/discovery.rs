//! discovery.k8s.io/v1 twin: EndpointSlice.
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::discovery::v1 as upstream;

crate::rekube_resource! {
    /// rekube's EndpointSlice: discovery.k8s.io/v1 EndpointSlice under `rekube.io/v1`
    /// (top-level fields, no spec, like upstream).
    EndpointSlice("endpointslices"), upstream = upstream::EndpointSlice, scope = NamespaceResourceScope,
    {
        address_type: String = "addressType",
        endpoints: Vec<upstream::Endpoint> = "endpoints",
        ports: Option<Vec<upstream::EndpointPort>> = "ports",
    }
}
