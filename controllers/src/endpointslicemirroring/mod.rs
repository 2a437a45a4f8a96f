//! The EndpointSlice mirroring controller (upstream kube-controller-manager's
//! `endpointslice-mirroring-controller`, pkg/controller/endpointslicemirroring): the
//! Endpoints users write for selectorless Services, mirrored into EndpointSlices so that
//! what reads only slices (the proxy) sees them. [`reconciler`] is the pure core,
//! [`controller`] the reconciler; the slice helpers and the tracker are the EndpointSlice
//! controller's ([`crate::endpointslice`]).
pub mod controller;
pub mod reconciler;
