//! The Endpoints controller (upstream kube-controller-manager's `endpoint-controller`,
//! pkg/controller/endpoint): [`endpoints`] is the pure core (the Endpoints a Service
//! should have), [`repack`] upstream's RepackSubsets, [`trigger_time`] the
//! last-change-trigger-time tracker, [`controller`] the reconciler.
pub mod controller;
pub mod endpoints;
pub mod repack;
pub mod trigger_time;
