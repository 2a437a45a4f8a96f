//! The ten rekube kinds, grouped as upstream groups them.
pub mod apps;
pub mod core;
pub mod storage;
