//! The runtime-side view of a pod the kubelet's decisions work on: upstream's
//! `kubecontainer.PodStatus` (pkg/kubelet/container/runtime.go) with its sandbox statuses
//! (the CRI `PodSandboxStatus` fields the kubelet reads) and container statuses
//! (`kubecontainer.Status`), plus `HashContainer` (pkg/kubelet/container/helpers.go) and
//! the container ID format (`kubecontainer.ContainerID.String()`).
//!
//! The runtime fills this in (one call per sync, like `GetPodStatus`); everything in
//! [`super`] reads it and never does I/O.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;

/// The runtime's name: the scheme of every container ID in the API
/// (`containerID: rekube://<id>`), as `containerd://` is for containerd.
pub const RUNTIME_NAME: &str = "rekube";

/// `runtimeapi.PodSandboxState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// What the kubelet reads of a CRI `PodSandboxStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    pub id: String,
    pub state: SandboxState,
    /// `metadata.attempt`: how many sandboxes the pod had before this one.
    pub attempt: u32,
    pub created_at: Timestamp,
    /// The sandbox shares the node's network namespace (upstream reads this back as
    /// `linux.namespaces.options.network == NODE`).
    pub host_network: bool,
    /// The bind-mounted network namespace holding the sandbox's network (None for host
    /// network).
    pub network_namespace_path: Option<PathBuf>,
    /// The sandbox network's addresses. `None`: the runtime reports no network status
    /// (upstream's nil `Network`, what the loopback-only sandbox reports until pod
    /// networking lands); `Some(empty)`: a network that failed to get an address, which
    /// makes the kubelet recreate the sandbox (upstream `Network.Ip == ""`).
    pub ips: Option<Vec<String>>,
}

/// `kubecontainer.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    /// Upstream's string for the state, used in kill messages (`"unknown"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }
}

/// `kubecontainer.Status`: one container instance as the runtime knows it (a restarted
/// container is a new instance with a new ID; the old one stays until garbage collected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRuntimeStatus {
    /// The runtime's container ID, without the `rekube://` scheme.
    pub id: String,
    /// The container's name in the pod spec.
    pub name: String,
    /// The sandbox the container was created in.
    pub sandbox_id: String,
    pub state: ContainerState,
    pub created_at: Timestamp,
    /// Set once the runtime has tried to start the container.
    pub started_at: Option<Timestamp>,
    /// Set once the container has exited.
    pub finished_at: Option<Timestamp>,
    pub exit_code: i32,
    /// Why it is in this state: `OOMKilled`, `Error`, `Completed`, ….
    pub reason: Option<String>,
    /// The termination message.
    pub message: Option<String>,
    /// The image as the spec names it.
    pub image: String,
    /// The image's ID (its config digest).
    pub image_id: String,
    /// The digested reference of the image (`repo@sha256:…`): the API's `imageID`.
    pub image_ref: String,
    /// How many instances of this container ran before this one.
    pub restart_count: i32,
    /// [`hash_container`] of the spec the container was created from.
    pub hash: u64,
}

/// `kubecontainer.PodStatus`: everything the runtime has for one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRuntimeStatus {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Every sandbox of the pod, in any order (the functions here read them newest
    /// first, as upstream sorts them).
    pub sandboxes: Vec<SandboxStatus>,
    /// Every container instance of the pod, in any order (read newest first).
    pub containers: Vec<ContainerRuntimeStatus>,
}

impl PodRuntimeStatus {
    /// Sandboxes by creation time, newest first (upstream `SandboxStatuses` order).
    pub fn sandboxes_newest_first(&self) -> Vec<&SandboxStatus> {
        let mut v: Vec<&SandboxStatus> = self.sandboxes.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        v
    }

    /// Container instances by creation time, newest first (upstream `ContainerStatuses`
    /// order); equal creation times keep their order in [`Self::containers`].
    pub fn containers_newest_first(&self) -> Vec<&ContainerRuntimeStatus> {
        let mut v: Vec<&ContainerRuntimeStatus> = self.containers.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        v
    }

    /// Upstream `FindContainerStatusByName`: the newest instance of the named container.
    pub fn find_container_status_by_name(&self, name: &str) -> Option<&ContainerRuntimeStatus> {
        self.containers_newest_first()
            .into_iter()
            .find(|c| c.name == name)
    }

    /// The newest sandbox if it is ready: the pod's active sandbox.
    pub fn active_sandbox(&self) -> Option<&SandboxStatus> {
        self.sandboxes_newest_first()
            .into_iter()
            .next()
            .filter(|s| s.state == SandboxState::Ready)
    }

    /// Upstream `PodStatus.IPs`: the addresses of the active sandbox.
    pub fn ips(&self) -> Vec<String> {
        self.active_sandbox()
            .and_then(|s| s.ips.clone())
            .unwrap_or_default()
    }

    /// Upstream `ActiveContainerStatuses`: the instances created in the active sandbox.
    pub fn active_container_statuses(&self) -> Vec<&ContainerRuntimeStatus> {
        let Some(active) = self.active_sandbox() else {
            return Vec::new();
        };
        self.containers_newest_first()
            .into_iter()
            .filter(|c| c.sandbox_id == active.id)
            .collect()
    }

    /// Upstream `GetRunningContainerStatuses`.
    pub fn running_container_statuses(&self) -> Vec<&ContainerRuntimeStatus> {
        self.containers_newest_first()
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect()
    }
}

/// Upstream `HashContainer`: a stable hash of the container spec, recorded on the
/// container at creation and compared with the spec at every sync (a different hash means
/// the spec changed and the container is restarted). FNV-1a (32 bit, as upstream) over the
/// container's JSON. Upstream hashes only `name` and `image` because the apiserver makes
/// the rest of a pod's spec immutable; a rekube Pod is a custom resource whose spec the
/// apiserver does not freeze, so every field counts here.
pub fn hash_container<T: Serialize>(container: &T) -> u64 {
    let json = serde_json::to_vec(container).unwrap_or_default();
    u64::from(fnv1a_32(&json))
}

pub(crate) use rekube_crds::fnv::{fnv1a_32, fnv1a_64};

/// `kubecontainer.ContainerID.String()`: `rekube://<id>`, the API's `containerID`.
pub fn container_id_string(id: &str) -> String {
    format!("{RUNTIME_NAME}://{id}")
}

/// `kubecontainer.ParseContainerID`: the runtime ID of an API `containerID`
/// (`rekube://abc` → `abc`; a string without a scheme is returned as is).
pub fn parse_container_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

/// Upstream `format.PodDesc`: `name_namespace(uid)`, how the kubelet names a pod in
/// messages.
pub fn format_pod_desc(name: &str, namespace: &str, uid: &str) -> String {
    format!("{name}_{namespace}({uid})")
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for the tests of the sibling modules.
    use super::*;

    pub fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    pub fn sandbox(id: &str, state: SandboxState) -> SandboxStatus {
        SandboxStatus {
            id: id.to_string(),
            state,
            attempt: 0,
            created_at: ts(0),
            host_network: false,
            network_namespace_path: None,
            ips: Some(vec!["10.0.0.1".to_string()]),
        }
    }

    pub fn container(
        id: &str,
        name: &str,
        state: ContainerState,
        hash: u64,
    ) -> ContainerRuntimeStatus {
        ContainerRuntimeStatus {
            id: id.to_string(),
            name: name.to_string(),
            sandbox_id: "sandboxID".to_string(),
            state,
            created_at: ts(0),
            started_at: None,
            finished_at: None,
            exit_code: 0,
            reason: None,
            message: None,
            image: String::new(),
            image_id: String::new(),
            image_ref: String::new(),
            restart_count: 0,
            hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    #[test]
    fn hash_is_stable_and_changes_with_the_spec() {
        let c = Container {
            name: "foo".into(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        assert_eq!(hash_container(&c), hash_container(&c.clone()));
        let mut changed = c.clone();
        changed.image = Some("busybox:1.36".into());
        assert_ne!(hash_container(&c), hash_container(&changed));
        changed = c.clone();
        changed.args = Some(vec!["sleep".into()]);
        assert_ne!(hash_container(&c), hash_container(&changed));
        assert!(hash_container(&c) <= u64::from(u32::MAX));
    }

    #[test]
    fn container_ids() {
        assert_eq!(container_id_string("abc"), "rekube://abc");
        assert_eq!(parse_container_id("rekube://abc"), "abc");
        assert_eq!(parse_container_id("abc"), "abc");
        assert_eq!(format_pod_desc("foo", "ns", "uid"), "foo_ns(uid)");
    }

    #[test]
    fn newest_first_and_active_sandbox() {
        let mut old = sandbox("old", SandboxState::NotReady);
        old.created_at = ts(1);
        let mut new = sandbox("new", SandboxState::Ready);
        new.created_at = ts(2);
        new.ips = Some(vec!["10.1.0.5".into()]);
        let mut c_old = container("c1", "app", ContainerState::Exited, 1);
        c_old.sandbox_id = "old".into();
        c_old.created_at = ts(1);
        let mut c_new = container("c2", "app", ContainerState::Running, 1);
        c_new.sandbox_id = "new".into();
        c_new.created_at = ts(2);
        let status = PodRuntimeStatus {
            sandboxes: vec![old, new],
            containers: vec![c_old, c_new],
            ..Default::default()
        };
        assert_eq!(
            status.find_container_status_by_name("app").unwrap().id,
            "c2"
        );
        assert_eq!(status.active_sandbox().unwrap().id, "new");
        assert_eq!(status.ips(), vec!["10.1.0.5".to_string()]);
        let active: Vec<&str> = status
            .active_container_statuses()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(active, vec!["c2"]);
        assert_eq!(status.running_container_statuses().len(), 1);
    }
}
