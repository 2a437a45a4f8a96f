//! `FakeIptables`: pkg/util/iptables/testing's fake, tables in memory. A restore with
//! `--noflush` semantics, each `*table ... COMMIT` section applied atomically: a chain
//! line creates or flushes the chain, `-A`/`-I` add a rule (its chain and its `-j` chain
//! must exist), `-X` deletes a chain (refused while a rule jumps to it). `dump` is an
//! `iptables-save` of both tables.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::interface::{Iptables, IptablesError, Table};
use crate::proxy::types::IpFamily;

/// Targets that are not chains.
const TARGETS: [&str; 8] = [
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "MARK",
    "MASQUERADE",
    "DNAT",
    "SNAT",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FakeTable {
    /// Chains in creation order, with their rules (the text after `-A CHAIN `).
    chains: Vec<(String, Vec<String>)>,
}

impl FakeTable {
    fn builtin(table: Table) -> Self {
        let names: &[&str] = match table {
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        };
        FakeTable {
            chains: names.iter().map(|n| (n.to_string(), Vec::new())).collect(),
        }
    }

    fn chain_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.chains
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
    }

    fn has(&self, name: &str) -> bool {
        self.chains.iter().any(|(n, _)| n == name)
    }

    fn check_target(&self, rule: &str) -> Result<(), String> {
        let words: Vec<&str> = rule.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "-j") {
            let target = words.get(i + 1).copied().unwrap_or("");
            if !TARGETS.contains(&target) && !self.has(target) {
                return Err(format!("Couldn't load target `{target}'"));
            }
        }
        Ok(())
    }

    fn referenced(&self, chain: &str) -> bool {
        self.chains.iter().any(|(_, rules)| {
            rules.iter().any(|r| {
                let words: Vec<&str> = r.split_whitespace().collect();
                words.windows(2).any(|w| w[0] == "-j" && w[1] == chain)
            })
        })
    }
}

fn builtin(name: &str) -> bool {
    matches!(
        name,
        "INPUT" | "FORWARD" | "OUTPUT" | "PREROUTING" | "POSTROUTING"
    )
}

/// In-memory iptables of one family.
#[derive(Debug)]
pub struct FakeIptables {
    family: IpFamily,
    tables: RefCell<BTreeMap<Table, FakeTable>>,
    /// The data of the last restore.
    last_restore: RefCell<Option<String>>,
}

fn failed(op: &str, message: String) -> IptablesError {
    IptablesError::Failed {
        op: op.to_string(),
        message,
    }
}

impl FakeIptables {
    pub fn new(family: IpFamily) -> Self {
        FakeIptables {
            family,
            tables: RefCell::new(
                [Table::Filter, Table::Nat]
                    .into_iter()
                    .map(|t| (t, FakeTable::builtin(t)))
                    .collect(),
            ),
            last_restore: RefCell::new(None),
        }
    }

    pub fn last_restore(&self) -> Option<String> {
        self.last_restore.borrow().clone()
    }

    /// `iptables-save` of both tables (filter, then nat).
    pub fn dump(&self) -> String {
        [Table::Filter, Table::Nat]
            .iter()
            .map(|t| self.save(*t).unwrap())
            .collect()
    }

    /// The rules of one chain.
    pub fn rules(&self, table: Table, chain: &str) -> Option<Vec<String>> {
        self.tables
            .borrow_mut()
            .get_mut(&table)
            .and_then(|t| t.chain_mut(chain).cloned())
    }

    fn apply_section(t: &mut FakeTable, lines: &[&str]) -> Result<(), String> {
        for line in lines {
            if let Some(rest) = line.strip_prefix(':') {
                let name = rest.split_whitespace().next().unwrap_or("");
                match t.chain_mut(name) {
                    Some(rules) => rules.clear(),
                    None => t.chains.push((name.to_string(), Vec::new())),
                }
                continue;
            }
            let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
            let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            match op {
                "-A" | "-I" => {
                    t.check_target(rule)?;
                    let rules = t
                        .chain_mut(chain)
                        .ok_or_else(|| format!("chain `{chain}' does not exist"))?;
                    if op == "-A" {
                        rules.push(rule.to_string());
                    } else {
                        rules.insert(0, rule.to_string());
                    }
                }
                "-X" => {
                    if !t.has(chain) {
                        return Err(format!("chain `{chain}' does not exist"));
                    }
                    if builtin(chain) || t.referenced(chain) {
                        return Err(format!("chain `{chain}' is in use"));
                    }
                    t.chains.retain(|(n, _)| n != chain);
                }
                _ => return Err(format!("unknown line {line:?}")),
            }
        }
        Ok(())
    }
}

impl Iptables for FakeIptables {
    fn family(&self) -> IpFamily {
        self.family
    }

    fn ensure_chain(&self, table: Table, chain: &str) -> Result<bool, IptablesError> {
        let mut tables = self.tables.borrow_mut();
        let t = tables.get_mut(&table).unwrap();
        if t.has(chain) {
            return Ok(true);
        }
        t.chains.push((chain.to_string(), Vec::new()));
        Ok(false)
    }

    fn ensure_rule(&self, table: Table, chain: &str, args: &[&str]) -> Result<bool, IptablesError> {
        let rule = args.join(" ");
        let mut tables = self.tables.borrow_mut();
        let t = tables.get_mut(&table).unwrap();
        t.check_target(&rule)
            .map_err(|m| failed("ensure rule", m))?;
        let rules = t
            .chain_mut(chain)
            .ok_or_else(|| failed("ensure rule", format!("no chain {chain}")))?;
        if rules.contains(&rule) {
            return Ok(true);
        }
        rules.insert(0, rule);
        Ok(false)
    }

    fn delete_rule(&self, table: Table, chain: &str, args: &[&str]) -> Result<(), IptablesError> {
        let rule = args.join(" ");
        let mut tables = self.tables.borrow_mut();
        let not_found = || IptablesError::NotFound {
            op: "delete rule".to_string(),
            object: format!("rule {rule:?} in {chain}"),
        };
        let rules = tables
            .get_mut(&table)
            .unwrap()
            .chain_mut(chain)
            .ok_or_else(not_found)?;
        let i = rules
            .iter()
            .position(|r| *r == rule)
            .ok_or_else(not_found)?;
        rules.remove(i);
        Ok(())
    }

    fn save(&self, table: Table) -> Result<String, IptablesError> {
        let tables = self.tables.borrow();
        let t = &tables[&table];
        let mut out = format!("*{}\n", table.name());
        for (name, _) in &t.chains {
            let policy = if builtin(name) { "ACCEPT" } else { "-" };
            out.push_str(&format!(":{name} {policy} [0:0]\n"));
        }
        for (name, rules) in &t.chains {
            for r in rules {
                out.push_str(&format!("-A {name} {r}\n"));
            }
        }
        out.push_str("COMMIT\n");
        Ok(out)
    }

    fn restore_all(&self, data: &str) -> Result<(), IptablesError> {
        *self.last_restore.borrow_mut() = Some(data.to_string());
        // Every section is checked on a copy first: all or nothing, as iptables-restore.
        let mut tables = self.tables.borrow().clone();
        let mut current: Option<(Table, Vec<&str>)> = None;
        for line in data.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                let table = match name {
                    "filter" => Table::Filter,
                    "nat" => Table::Nat,
                    other => return Err(failed("restore", format!("unknown table {other}"))),
                };
                current = Some((table, Vec::new()));
            } else if line == "COMMIT" {
                let (table, lines) = current
                    .take()
                    .ok_or_else(|| failed("restore", "COMMIT outside a table".into()))?;
                Self::apply_section(tables.get_mut(&table).unwrap(), &lines)
                    .map_err(|m| failed("restore", m))?;
            } else {
                current
                    .as_mut()
                    .ok_or_else(|| failed("restore", format!("line outside a table: {line}")))?
                    .1
                    .push(line);
            }
        }
        if current.is_some() {
            return Err(failed("restore", "no COMMIT at the end".into()));
        }
        *self.tables.borrow_mut() = tables;
        Ok(())
    }
}
