//! The scheduler's pure decision core (upstream kube-scheduler, `pkg/scheduler`): which
//! node a pod goes to, or why it fits none. No client and no I/O: functions over a
//! [`Snapshot`]; the reconciler keeps the snapshot up to date from the informers, calls
//! [`schedule_pod`], assumes the pod onto the chosen node and binds it.
//!
//! - [`snapshot`]: nodes with their pods, requests and host ports, the volume objects,
//!   assumed pods (`framework/types.go` `NodeInfo`, `backend/cache`).
//! - [`resources`]: quantities and a pod's requests, sidecars and overhead included
//!   (`component-helpers/resource/helpers.go` `PodRequests`).
//! - [`nodeaffinity`]: node selector terms (`component-helpers/scheduling/corev1/nodeaffinity`).
//! - [`filters`]: NodeUnschedulable, NodeName, NodeReady (rekube's), TaintToleration,
//!   NodeAffinity, NodePorts, NodeResourcesFit (`framework/plugins/*` Filter).
//! - [`volume_binding`]: VolumeBinding PreFilter and Filter, simplified, and what PreBind
//!   writes.
//! - [`volume_restrictions`]: VolumeRestrictions' ReadWriteOncePod check.
//! - [`scores`]: LeastAllocated, BalancedAllocation, NodeAffinity, TaintToleration and the
//!   default topology spreading, weighted as upstream's default profile.
//! - [`schedule_one`]: PreFilter → Filter → Score → select host (`schedule_one.go`).
//! - [`fit_error`]: upstream's "0/3 nodes are available: …" message (`framework/types.go`).
pub mod controller;
pub mod filters;
pub mod fit_error;
pub mod nodeaffinity;
pub mod queue;
pub mod resources;
pub mod schedule_one;
pub mod scores;
pub mod snapshot;
pub mod volume_binding;
pub mod volume_restrictions;

#[cfg(test)]
pub(crate) mod testing;

pub use fit_error::{ERR_NO_NODES_AVAILABLE, FitError};
pub use resources::{
    Resource, compute_pod_non_zero_request, compute_pod_resource_request, parse_quantity,
};
pub use schedule_one::{ScheduleResult, schedule_pod};
pub use snapshot::{HostPortInfo, NodeInfo, PodInfo, PodKey, Snapshot};
pub use volume_binding::ANNOTATION_SELECTED_NODE;
