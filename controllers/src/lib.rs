//! rekube-controllers: one binary hosting rekube's controllers, as kube-controller-manager
//! hosts upstream's.
//!
//! Each controller is a pure decision core (functions over snapshots of objects, named as
//! upstream names them and table-tested) and a thin reconciler that reads from the shared
//! informers, calls the core and writes the result.
pub mod attachdetach;
pub mod deployment;
pub mod endpoint;
pub mod endpointslice;
pub mod endpointslicemirroring;
pub mod ephemeral;
pub mod manager;
pub mod nodeauthorizer;
pub mod nodelifecycle;
pub mod podgc;
pub mod podtokenbinding;
pub mod pvcontroller;
pub mod pvcprotection;
pub mod pvprotection;
pub mod replicaset;
pub mod scheduler;
pub mod serviceallocator;
pub mod util;
