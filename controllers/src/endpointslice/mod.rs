//! The EndpointSlice controller (upstream kube-controller-manager's
//! `endpointslice-controller`, pkg/controller/endpointslice with k8s.io/endpointslice's
//! reconciler): [`reconciler`] is the pure core (the slices a Service should have and the
//! writes to get there), [`utils`] its helpers, [`tracker`] upstream's
//! EndpointSliceTracker, [`trafficdist`] the hints of `trafficDistribution`,
//! [`controller`] the reconciler. The pod rules, `FindPort`,
//! hostnames and the trigger-time tracker are the Endpoints controller's
//! ([`crate::endpoint`]).
pub mod controller;
pub mod reconciler;
pub mod tracker;
pub mod trafficdist;
pub mod utils;
