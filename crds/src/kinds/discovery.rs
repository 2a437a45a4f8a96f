//! discovery.k8s.io/v1 twin: EndpointSlice.
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::discovery::v1 as upstream;

crate::rekube_resource! {
    /// rekube's EndpointSlice: discovery.k8s.io/v1 EndpointSlice under `rekube.io/v1`
    /// (top-level fields, no spec, like upstream). `endpoints` is a plain list (k8s-openapi
    /// has an `Option`): Go writes the field always, and the apiserver drops a null.
    EndpointSlice("endpointslices"), upstream = upstream::EndpointSlice, scope = NamespaceResourceScope,
    {
        address_type: String = "addressType",
        endpoints: Vec<upstream::Endpoint> = "endpoints",
        ports: Option<Vec<upstream::EndpointPort>> = "ports",
    }
}

/// The same object as discovery/v1 (what the proxy's conversion takes; k8s-openapi's
/// deserializer refuses `apiVersion: rekube.io/v1`, so this converts the fields).
impl From<EndpointSlice> for upstream::EndpointSlice {
    fn from(s: EndpointSlice) -> Self {
        upstream::EndpointSlice {
            metadata: s.metadata,
            address_type: s.address_type,
            endpoints: Some(s.endpoints),
            ports: s.ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_discovery_v1_field_for_field() {
        let body = serde_json::json!({
            "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true, "terminating": false},
                           "zone": "a", "hints": {"forZones": [{"name": "a"}]}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        });
        let mut rekube = body.clone();
        rekube["apiVersion"] = "rekube.io/v1".into();
        rekube["kind"] = "EndpointSlice".into();
        let ours: EndpointSlice = serde_json::from_value(rekube).unwrap();
        let theirs: upstream::EndpointSlice = ours.into();
        let mut expected = body;
        expected["apiVersion"] = "discovery.k8s.io/v1".into();
        expected["kind"] = "EndpointSlice".into();
        assert_eq!(serde_json::to_value(theirs).unwrap(), expected);
    }
}
