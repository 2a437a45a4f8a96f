//! `service-allocator-controller`: cluster IPs (through the host cluster's IPAddress
//! objects) and NodePorts for rekube Services. Pure core: `ipallocator` (the IP range and
//! its candidate order), `portallocator` (the NodePort range), `alloc` (what a Service
//! needs and holds, upstream's alloc.go); `controller` is the reconciler.
pub mod alloc;
pub mod controller;
pub mod ipallocator;
pub mod portallocator;
