//! The Deployment controller (upstream: pkg/controller/deployment).
pub mod controller;
pub mod hash;
pub mod progress;
pub mod recreate;
pub mod rollback;
pub mod rolling;
pub mod sync;
pub mod util;
