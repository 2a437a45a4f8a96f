//! The string constants of `k8s.io/api/core/v1` (and apps/v1's condition types) that more
//! than one rekube component compares against: pod phases, condition types and statuses,
//! node conditions, the well-known taints. One definition each, named after upstream's Go
//! constants, so the scheduler, the controllers and the node agent can never disagree
//! about a spelling.

/// `v1.PodPhase`.
pub const POD_PENDING: &str = "Pending";
pub const POD_RUNNING: &str = "Running";
pub const POD_SUCCEEDED: &str = "Succeeded";
pub const POD_FAILED: &str = "Failed";
pub const POD_UNKNOWN: &str = "Unknown";

/// `v1.ConditionStatus`.
pub const CONDITION_TRUE: &str = "True";
pub const CONDITION_FALSE: &str = "False";
pub const CONDITION_UNKNOWN: &str = "Unknown";

/// `v1.PodConditionType`.
pub const POD_SCHEDULED: &str = "PodScheduled";
pub const POD_READY: &str = "Ready";
pub const POD_INITIALIZED: &str = "Initialized";
pub const CONTAINERS_READY: &str = "ContainersReady";
pub const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
pub const POD_RESIZE_PENDING: &str = "PodResizePending";
pub const POD_RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";

/// `v1.NodeConditionType`.
pub const NODE_READY: &str = "Ready";
pub const NODE_MEMORY_PRESSURE: &str = "MemoryPressure";
pub const NODE_DISK_PRESSURE: &str = "DiskPressure";
pub const NODE_PID_PRESSURE: &str = "PIDPressure";
pub const NODE_NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";

/// `v1.TaintNodeOutOfService`.
pub const TAINT_NODE_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// `apps.ReplicaSetReplicaFailure` / `apps.DeploymentReplicaFailure`.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
