//! knftables' `Fake`: one table kept in memory, transactions applied atomically with nft's
//! semantics (adding what exists is a no-op, flushing or deleting what does not exist is an
//! error), and `dump` printing the table as the `add ...` lines upstream's tests compare.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::interface::{Nftables, NftablesError, ObjectKind};
use super::transaction::{
    Chain, Element, Object, Operation, Rule, Set, Transaction, Verb, render_operation,
};
use crate::proxy::types::IpFamily;

#[derive(Debug, Clone, Default)]
struct FakeTable {
    comment: Option<String>,
    chains: BTreeMap<String, (Chain, Vec<Rule>)>,
    sets: BTreeMap<String, (Set, BTreeMap<String, Element>)>,
}

/// An in-memory nftables table.
#[derive(Debug)]
pub struct FakeNftables {
    family: IpFamily,
    table: String,
    state: Mutex<Option<FakeTable>>,
    last_transaction: Mutex<Option<Transaction>>,
    transactions: Mutex<Vec<Transaction>>,
    /// How many times names were listed (a partial sync lists nothing).
    lists: std::sync::atomic::AtomicUsize,
}

fn not_found(op: &Operation, what: &str) -> NftablesError {
    NftablesError::NotFound {
        op: format!("{:?}", op.verb).to_lowercase(),
        object: what.to_string(),
    }
}

impl FakeNftables {
    pub fn new(family: IpFamily, table: &str) -> Self {
        FakeNftables {
            family,
            table: table.to_string(),
            state: Mutex::new(None),
            last_transaction: Mutex::new(None),
            transactions: Mutex::new(Vec::new()),
            lists: Default::default(),
        }
    }

    /// Every transaction run, in order (successful or not).
    pub fn transactions(&self) -> Vec<Transaction> {
        self.transactions.lock().unwrap().clone()
    }

    /// The last transaction run (successful or not).
    /// How many times object names were listed.
    pub fn list_count(&self) -> usize {
        self.lists.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn last_transaction(&self) -> Option<Transaction> {
        self.last_transaction.lock().unwrap().clone()
    }

    /// The elements of a set or map, as `key` or `key : value` strings.
    pub fn elements(&self, set: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let Some(table) = state.as_ref() else {
            return Vec::new();
        };
        table
            .sets
            .get(set)
            .map(|(_, els)| {
                els.values()
                    .map(|e| {
                        if e.is_map {
                            format!("{} : {}", e.key.join(" . "), e.value.join(" . "))
                        } else {
                            e.key.join(" . ")
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The elements of a set or map as (key, value) fields.
    pub fn element_fields(&self, set: &str) -> Vec<(Vec<String>, Vec<String>)> {
        let state = self.state.lock().unwrap();
        let Some(table) = state.as_ref() else {
            return Vec::new();
        };
        table
            .sets
            .get(set)
            .map(|(_, els)| {
                els.values()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rules of a chain, in order.
    pub fn rules(&self, chain: &str) -> Option<Vec<Rule>> {
        let state = self.state.lock().unwrap();
        state
            .as_ref()?
            .chains
            .get(chain)
            .map(|(_, rules)| rules.clone())
    }

    /// The table as `add` lines: table, chains, sets and maps, rules, elements.
    pub fn dump(&self) -> String {
        let state = self.state.lock().unwrap();
        let Some(table) = state.as_ref() else {
            return String::new();
        };
        let mut ops = vec![Operation {
            verb: Verb::Add,
            object: Object::Table {
                comment: table.comment.clone(),
            },
        }];
        let add = |object| Operation {
            verb: Verb::Add,
            object,
        };
        ops.extend(
            table
                .chains
                .values()
                .map(|(c, _)| add(Object::Chain(c.clone()))),
        );
        ops.extend(
            table
                .sets
                .values()
                .map(|(s, _)| add(Object::Set(s.clone()))),
        );
        for (_, rules) in table.chains.values() {
            ops.extend(rules.iter().map(|r| add(Object::Rule(r.clone()))));
        }
        for (_, elements) in table.sets.values() {
            ops.extend(elements.values().map(|e| add(Object::Element(e.clone()))));
        }
        ops.iter()
            .map(|op| render_operation(self.family, &self.table, op) + "\n")
            .collect()
    }

    fn apply(table: &mut Option<FakeTable>, op: &Operation) -> Result<(), NftablesError> {
        if let Object::Table { comment } = &op.object {
            match op.verb {
                Verb::Add => {
                    let t = table.get_or_insert_with(FakeTable::default);
                    if comment.is_some() {
                        t.comment = comment.clone();
                    }
                }
                Verb::Flush => {
                    let t = table.as_mut().ok_or_else(|| not_found(op, "table"))?;
                    t.chains.values_mut().for_each(|(_, rules)| rules.clear());
                    t.sets.values_mut().for_each(|(_, els)| els.clear());
                }
                Verb::Delete => {
                    table.take().ok_or_else(|| not_found(op, "table"))?;
                }
            }
            return Ok(());
        }
        let t = table.as_mut().ok_or_else(|| not_found(op, "table"))?;
        match (&op.object, op.verb) {
            (Object::Chain(c), Verb::Add) => {
                t.chains
                    .entry(c.name.clone())
                    .or_insert_with(|| (c.clone(), Vec::new()));
            }
            (Object::Chain(c), Verb::Flush) => {
                t.chains
                    .get_mut(&c.name)
                    .ok_or_else(|| not_found(op, &c.name))?
                    .1
                    .clear();
            }
            (Object::Chain(c), Verb::Delete) => {
                t.chains
                    .remove(&c.name)
                    .ok_or_else(|| not_found(op, &c.name))?;
            }
            (Object::Rule(r), Verb::Add) => {
                t.chains
                    .get_mut(&r.chain)
                    .ok_or_else(|| not_found(op, &r.chain))?
                    .1
                    .push(r.clone());
            }
            (Object::Set(s), Verb::Add) => {
                t.sets
                    .entry(s.name.clone())
                    .or_insert_with(|| (s.clone(), BTreeMap::new()));
            }
            (Object::Set(s), Verb::Flush) => {
                t.sets
                    .get_mut(&s.name)
                    .ok_or_else(|| not_found(op, &s.name))?
                    .1
                    .clear();
            }
            (Object::Set(s), Verb::Delete) => {
                t.sets
                    .remove(&s.name)
                    .ok_or_else(|| not_found(op, &s.name))?;
            }
            (Object::Element(e), Verb::Add) => {
                let (_, els) = t
                    .sets
                    .get_mut(&e.container)
                    .ok_or_else(|| not_found(op, &e.container))?;
                els.insert(e.key.join(" . "), e.clone());
            }
            (Object::Element(e), Verb::Delete) => {
                let (_, els) = t
                    .sets
                    .get_mut(&e.container)
                    .ok_or_else(|| not_found(op, &e.container))?;
                els.remove(&e.key.join(" . "))
                    .ok_or_else(|| not_found(op, &e.key.join(" . ")))?;
            }
            (object, verb) => {
                return Err(NftablesError::Failed {
                    op: format!("{verb:?}"),
                    message: format!("unsupported on {object:?}"),
                });
            }
        }
        Ok(())
    }
}

impl Nftables for FakeNftables {
    fn list(&self, kind: ObjectKind) -> Result<Vec<String>, NftablesError> {
        self.lists
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = self.state.lock().unwrap();
        let table = state.as_ref().ok_or_else(|| NftablesError::NotFound {
            op: "list".into(),
            object: format!("table {}", self.table),
        })?;
        Ok(match kind {
            ObjectKind::Chains => table.chains.keys().cloned().collect(),
            ObjectKind::Sets => table
                .sets
                .values()
                .filter(|(s, _)| s.map.is_none())
                .map(|(s, _)| s.name.clone())
                .collect(),
            ObjectKind::Maps => table
                .sets
                .values()
                .filter(|(s, _)| s.map.is_some())
                .map(|(s, _)| s.name.clone())
                .collect(),
        })
    }

    fn run(&self, tx: &Transaction) -> Result<(), NftablesError> {
        *self.last_transaction.lock().unwrap() = Some(tx.clone());
        self.transactions.lock().unwrap().push(tx.clone());
        let mut state = self.state.lock().unwrap();
        let mut next = state.clone();
        for op in &tx.operations {
            Self::apply(&mut next, op)?;
        }
        *state = next;
        Ok(())
    }
}
