//! The controller-manager shell, as kube-controller-manager's: flags, one shared API client
//! with QPS/burst limits, leader election, one informer per resource type shared by all
//! controllers, work queues with per-object backoff, metrics and health endpoints, and a
//! graceful shutdown that releases the lease.
pub mod claim;
pub mod client;
pub use rekube_crds::events;
pub mod health;
pub mod informer;
pub mod leader;
pub mod metrics;
pub mod options;
pub mod request_info;
pub mod run;
pub mod supervisor;
pub mod worker;
pub mod workqueue;
