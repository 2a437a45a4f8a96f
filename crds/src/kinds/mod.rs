//! The thirteen rekube kinds, grouped as upstream groups them.
pub mod apps;
pub mod core;
pub mod discovery;
pub mod storage;
