//! The pure decision core of the node lifecycle controller (upstream
//! kube-controller-manager's node IPAM range allocator, node lifecycle controller and
//! taint eviction controller). No client and no I/O: functions over snapshots, with
//! `now` always a parameter; the reconcilers call them.
//!
//! - [`cidr`]: pod CIDR allocation (`nodeipam/ipam/cidrset`, `range_allocator.go`).
//! - [`health`]: node health from Ready heartbeats and Leases (`tryUpdateNodeHealth`).
//! - [`taints`]: condition-driven NoSchedule and not-ready/unreachable NoExecute taints.
//! - [`eviction`]: which pods NoExecute taints evict and when (`tainteviction`).
pub mod cidr;
pub mod eviction;
pub mod health;
pub mod taints;
