//! The kernel behind a trait (knftables' `Interface`, youki's `Syscall` style): list the
//! names of one kind of object in rekube's table, run a transaction. The real
//! implementation (`nft -f -` or netlink) comes with the proxy's I/O shell;
//! [`super::fake::FakeNftables`] keeps a table in memory for tests.

use super::transaction::Transaction;

/// What [`Nftables::list`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Chains,
    Sets,
    Maps,
}

/// A failed nftables call: the operation and the cause.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NftablesError {
    /// The table (or the object an operation names) does not exist.
    #[error("{op}: {object} not found")]
    NotFound { op: String, object: String },
    #[error("{op}: {message}")]
    Failed { op: String, message: String },
}

impl NftablesError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, NftablesError::NotFound { .. })
    }
}

/// nftables operations on the proxier's own table, and nothing else.
pub trait Nftables {
    /// The names of the chains, sets or maps in the table.
    fn list(&self, kind: ObjectKind) -> Result<Vec<String>, NftablesError>;
    /// Runs the transaction atomically.
    fn run(&self, tx: &Transaction) -> Result<(), NftablesError>;
}
