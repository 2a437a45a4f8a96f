//! The kubelet's events (pkg/kubelet/events/event.go): their reasons, and the object
//! reference a container's event is about (kubecontainer.GenerateContainerRef: the pod,
//! with the container as `spec.containers{name}`). Published through the shared
//! [`rekube_crds::events::EventRecorder`] as the `kubelet` of this node.
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Client, Resource};
use rekube_crds::Pod;
use rekube_crds::events::EventRecorder;

pub const CREATED_CONTAINER: &str = "Created";
pub const STARTED_CONTAINER: &str = "Started";
pub const FAILED_TO_CREATE_CONTAINER: &str = "Failed";
pub const FAILED_TO_START_CONTAINER: &str = "Failed";
pub const KILLING_CONTAINER: &str = "Killing";
pub const BACK_OFF_START_CONTAINER: &str = "BackOff";
pub const CONTAINER_UNHEALTHY: &str = "Unhealthy";
pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
pub const FAILED_MOUNT: &str = "FailedMount";
pub const FAILED_UNMOUNT: &str = "FailedUnMount";
pub const STARTING_KUBELET: &str = "Starting";

/// upstream's kubelet event source (`kubelet`), reporting as its node.
pub fn recorder(client: Client, node_name: &str) -> EventRecorder {
    EventRecorder::with_instance(client, "kubelet", Some(node_name.to_string()))
}

/// The pod as an event's object.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    pod.object_ref(&())
}

/// The pod with the container's field path, as GenerateContainerRef: `spec.containers{c}`,
/// `spec.initContainers{c}` or `spec.ephemeralContainers{c}`; the pod alone for a name the
/// spec does not hold.
pub fn container_ref(pod: &Pod, container: &str) -> ObjectReference {
    let mut r = pod_ref(pod);
    r.field_path = container_field_path(pod, container);
    r
}

fn container_field_path(pod: &Pod, name: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec.containers.iter().any(|c| c.name == name) {
        return Some(format!("spec.containers{{{name}}}"));
    }
    if spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == name)
    {
        return Some(format!("spec.initContainers{{{name}}}"));
    }
    if spec
        .ephemeral_containers
        .iter()
        .flatten()
        .any(|c| c.name == name)
    {
        return Some(format!("spec.ephemeralContainers{{{name}}}"));
    }
    None
}

/// The node as an event's object (upstream's nodeRef: kind Node, name and UID).
pub fn node_ref(node: &rekube_crds::Node) -> ObjectReference {
    node.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {
                "containers": [{"name": "app"}],
                "initContainers": [{"name": "init"}],
                "ephemeralContainers": [{"name": "debug"}],
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_containers_event_names_its_field_path() {
        let p = pod();
        for (name, path) in [
            ("app", Some("spec.containers{app}")),
            ("init", Some("spec.initContainers{init}")),
            ("debug", Some("spec.ephemeralContainers{debug}")),
            ("gone", None),
        ] {
            let r = container_ref(&p, name);
            assert_eq!(r.field_path.as_deref(), path, "{name}");
            assert_eq!(r.kind.as_deref(), Some("Pod"));
            assert_eq!(r.api_version.as_deref(), Some("rekube.io/v1"));
            assert_eq!(r.uid.as_deref(), Some("u1"));
        }
    }
}
