//! One sync against the kernel, in upstream's order: delete the chains stale for a second
//! (their own transaction; a failure makes this sync full), list the table's chains and
//! sets (full syncs only: a partial sync knows what it left there), compute the sync's
//! transaction, run it, and record whether it applied.

use std::collections::BTreeSet;
use std::time::Instant;

use super::interface::{Nftables, NftablesError, ObjectKind};
use super::proxier::{ExistingObjects, NftablesProxier, SyncPlan};
use crate::proxy::types::{NamespacedName, ProxySnapshot};

fn list_or_empty(nft: &impl Nftables, kind: ObjectKind) -> Result<Vec<String>, NftablesError> {
    match nft.list(kind) {
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        other => other,
    }
}

/// Syncs the table to `snapshot`; `updated` names the Services changed since the last
/// successful sync (ignored when the proxier needs a full sync).
pub fn sync_once(
    proxier: &mut NftablesProxier,
    nft: &impl Nftables,
    snapshot: &ProxySnapshot,
    updated: &BTreeSet<NamespacedName>,
    now: Instant,
) -> Result<SyncPlan, NftablesError> {
    if let Some(tx) = proxier.stale_chains_transaction(now)
        && let Err(e) = nft.run(&tx)
    {
        // The full sync lists the table: the chains come back as stale if they still exist.
        tracing::warn!(error = %e, "unable to delete stale chains, will retry later");
        proxier.stale_chains_delete_failed();
    }
    let existing = if proxier.need_full_sync() {
        Some(
            match (
                list_or_empty(nft, ObjectKind::Chains),
                list_or_empty(nft, ObjectKind::Sets),
            ) {
                (Ok(chains), Ok(sets)) => ExistingObjects { chains, sets },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "failed to list nftables objects: stale chains and sets will not be deleted");
                    ExistingObjects::default()
                }
            },
        )
    } else {
        None
    };
    let plan = proxier.sync_proxy_rules(snapshot, updated, existing.as_ref(), now);
    match nft.run(&plan.transaction) {
        Ok(()) => {
            proxier.sync_succeeded();
            Ok(plan)
        }
        Err(e) => {
            proxier.sync_failed();
            Err(e)
        }
    }
}
