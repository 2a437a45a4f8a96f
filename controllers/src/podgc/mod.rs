//! The pod garbage collector (upstream kube-controller-manager's `pod-garbage-collector-controller`):
//! [`gc`] is the pure core (which pods go and with what status), [`controller`] the
//! periodic reconciler that deletes them.
pub mod controller;
pub mod gc;
