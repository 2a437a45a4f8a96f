//! The agent's API side: its Node and the heartbeats (the pod side is
//! [`crate::kubelet`]'s decisions driving [`crate::runtime`]).
//!
//! - [`machine`]: what the machine is and has left (/proc, statvfs, os-release).
//! - [`node_status`]: pure: the Node to register and the status to post.
//! - [`heartbeat`]: registration, the Lease renewal, the status loop.
//! - [`pod_workers`]: the pods bound to the node, one worker per pod driving a
//!   [`pod_workers::PodSyncer`].
//! - [`hollow`]: the hollow node's syncer (no containers; scale tests).
//! - [`sync_pod`]: the real syncer (SyncPod over [`crate::runtime`]), with
//!   [`prober_manager`] (probe workers), [`lifecycle`] (PostStart/PreStop hooks) and
//!   [`probe_net`] (their TCP and HTTP, dialled inside the pod's network namespace).
//! - [`container_gc`]: removing dead container instances (their cgroups, rootfs, logs
//!   and records) per the kubelet's container GC policy; [`image_gc`]: unused images.
//! - [`events`]: the kubelet's event reasons and the objects they are about.
//! - [`pod_cidr`]: follows the Node's spec.podCIDR for pod IPs.
//! - [`pod_routes`]: routes to other Nodes' pod CIDRs and outbound masquerade (the cni
//!   pod network's node-side part, kindnet's job).
//! - [`uninstall`]: what the agent removes from the node when its DaemonSet is deleted.
//! - [`options`]: `rekube-node-agent run` flags; [`run`]: wiring.
pub mod container_gc;
pub mod events;
pub mod heartbeat;
pub mod hollow;
pub mod image_gc;
pub mod lifecycle;
pub mod machine;
pub mod node_identity;
pub mod node_status;
pub mod options;
pub mod pod_cidr;
pub mod pod_routes;
pub mod pod_workers;
pub mod probe_grpc;
pub mod probe_net;
pub mod prober_manager;
pub mod run;
pub mod sync_pod;
pub mod uninstall;
