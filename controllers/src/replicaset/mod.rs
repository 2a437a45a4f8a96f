//! The ReplicaSet controller (upstream: pkg/controller/replicaset).
pub mod controller;
pub mod expectations;
pub mod manage;
pub mod status;
