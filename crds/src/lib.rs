//! rekube's CustomResourceDefinitions: Kubernetes' own object types served under
//! `rekube.io/v1`.
//!
//! Each kind ([`kinds`]) is the upstream object with its apiVersion changed; its CRD schema
//! ([`catalog`]) is generated from the k8s-openapi type, with upstream's defaults
//! ([`defaults`]) and validation ([`validation`]) written into it. `crdgen` writes the YAML.
pub mod admission;
pub mod catalog;
pub mod core_v1;
pub mod crd;
pub mod defaults;
/// The event recorder every component publishes through (feature `events`).
#[cfg(feature = "events")]
pub mod events;
pub mod fnv;
pub mod generate;
pub mod kinds;
pub mod net;
pub mod node_identity;
pub mod node_restriction;
pub mod pod_refs;
pub mod pod_security;
pub mod quantity;
pub mod resource;
pub mod schema;
pub mod service_ranges;
pub mod storage_keys;
pub mod testing;
pub mod token_binding;
pub mod updates;
pub mod validation;

pub use kinds::apps::{Deployment, ReplicaSet};
pub use kinds::core::{Endpoints, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
pub use kinds::discovery::EndpointSlice;
pub use kinds::storage::{CSIDriver, CSIStorageCapacity, StorageClass, VolumeAttachment};

pub const GROUP: &str = "rekube.io";
pub const VERSION: &str = "v1";
pub const API_VERSION: &str = "rekube.io/v1";
/// The finalizer a node agent keeps on each pod it runs until it has removed the pod's
/// containers, mounts and cgroups (what a kubelet's confirmation of deletion is upstream).
pub const NODE_AGENT_FINALIZER: &str = "rekube.io/node-agent";
/// `kubectl get rekube` lists every rekube object.
pub const CATEGORY: &str = "rekube";
