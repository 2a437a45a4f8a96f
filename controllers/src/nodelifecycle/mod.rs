//! The pure decision core of the node lifecycle controller (upstream
//! kube-controller-manager's node IPAM range allocator, node lifecycle controller and
//! taint eviction controller). No client and no I/O: functions over snapshots, with
//! `now` always a parameter; the reconcilers call them.
//!
//! - [`cidr`]: pod CIDR allocation (`nodeipam/ipam/cidrset`, `range_allocator.go`).
//! - [`health`]: node health from Ready heartbeats and Leases (`tryUpdateNodeHealth`).
//! - [`taints`]: condition-driven NoSchedule and not-ready/unreachable NoExecute taints.
//! - [`eviction`]: which pods NoExecute taints evict and when (`tainteviction`).
//! - [`notready`]: a lost node's pods marked not ready (`MarkPodsNotReady`).
//!
//! The reconcilers, thin I/O shells over that core:
//! - [`ipam_controller`]: `node-ipam-controller`, writes `spec.podCIDR`.
//! - [`lifecycle_controller`]: `node-lifecycle-controller`, heartbeats → conditions, taints.
//! - [`eviction_controller`]: `taint-eviction-controller`, deletes pods on NoExecute taints.
pub mod cidr;
pub mod eviction;
pub mod eviction_controller;
pub mod health;
pub mod ipam_controller;
pub mod lifecycle_controller;
pub mod notready;
pub mod taints;
