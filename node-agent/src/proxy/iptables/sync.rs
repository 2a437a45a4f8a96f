//! One sync against the kernel, in upstream's order: at a full sync the jump rules from
//! the built-in chains are ensured (`-C`, then `-I`: never a rule twice, never a rule of
//! someone else's touched), the nat table's chains are listed (`iptables-save -t nat`;
//! in large cluster mode only once per cleanup period), the restore input computed and
//! applied with `iptables-restore --noflush`; and
//! `cleanup` (kube-proxy's `CleanupLeftovers`) for rekube's chains only.

use std::collections::BTreeSet;
use std::time::Instant;

use super::interface::{Iptables, IptablesError, Table, chains_from_save};
use super::names::is_rekube_chain;
use super::proxier::{IptablesProxier, JUMP_CHAINS, LOCALNET_JUMP_CHAINS, RestorePlan};
use crate::proxy::types::{NamespacedName, ProxySnapshot};

/// Syncs the tables to `snapshot`; `updated` names the Services changed since the last
/// successful sync (ignored when the proxier needs a full sync).
pub fn sync_once(
    proxier: &mut IptablesProxier,
    ipt: &impl Iptables,
    snapshot: &ProxySnapshot,
    updated: &BTreeSet<NamespacedName>,
    now: Instant,
) -> Result<RestorePlan, IptablesError> {
    if proxier.need_full_sync() {
        for jump in proxier.jump_chains() {
            let ensured = ipt
                .ensure_chain(jump.table, jump.dst)
                .and_then(|_| ipt.ensure_rule(jump.table, jump.src, &jump.args()));
            if let Err(e) = ensured {
                proxier.sync_failed();
                return Err(e);
            }
        }
    }
    let existing = if proxier.wants_nat_chains(snapshot, now) {
        match ipt.save(Table::Nat) {
            Ok(save) => {
                proxier.nat_chains_listed(now);
                Some(chains_from_save(&save))
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to execute iptables-save: stale chains will not be deleted");
                None
            }
        }
    } else {
        None
    };
    let plan = proxier.sync_proxy_rules(snapshot, updated, existing.as_deref());
    match ipt.restore_all(&plan.data) {
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

/// Upstream's `CleanupLeftovers` on rekube's chains: the jump rules from the built-in
/// chains deleted (every copy), then every `REKUBE-` chain of the filter and nat tables
/// flushed and deleted in one restore per table. Nothing else is touched; with nothing
/// of rekube's there, nothing is written.
pub fn cleanup(ipt: &impl Iptables) -> Result<(), IptablesError> {
    for jump in JUMP_CHAINS.iter().chain(&LOCALNET_JUMP_CHAINS) {
        loop {
            match ipt.delete_rule(jump.table, jump.src, &jump.args()) {
                Ok(()) => continue,
                Err(e) if e.is_not_found() => break,
                Err(e) => return Err(e),
            }
        }
    }
    for table in [Table::Nat, Table::Filter] {
        let chains: Vec<String> = chains_from_save(&ipt.save(table)?)
            .into_iter()
            .filter(|c| is_rekube_chain(c))
            .collect();
        if chains.is_empty() {
            continue;
        }
        let mut data = format!("*{}\n", table.name());
        for c in &chains {
            data.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &chains {
            data.push_str(&format!("-X {c}\n"));
        }
        data.push_str("COMMIT\n");
        ipt.restore_all(&data)?;
    }
    Ok(())
}
