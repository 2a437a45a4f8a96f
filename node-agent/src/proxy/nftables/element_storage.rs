//! The elements of one set or map as the proxier last wrote them (upstream's
//! `nftElementStorage`), so a partial sync adds, replaces and deletes only what changed.

use std::collections::{HashMap, HashSet};

use super::transaction::{Element, Object, Set, Transaction};

/// The elements of one set or map as the proxier last wrote them, so a partial sync adds,
/// replaces and deletes only what changed (upstream's `nftElementStorage`).
#[derive(Debug, Clone)]
pub(super) struct ElementStorage {
    name: &'static str,
    is_map: bool,
    /// key (joined with ` . `) → value (joined).
    elements: HashMap<String, String>,
    leftover_keys: HashSet<String>,
}

impl ElementStorage {
    pub(super) fn new(name: &'static str, is_map: bool) -> Self {
        ElementStorage {
            name,
            is_map,
            elements: HashMap::new(),
            leftover_keys: HashSet::new(),
        }
    }

    pub(super) fn container(&self) -> Set {
        if self.is_map {
            Set::map_named(self.name)
        } else {
            Set::named(self.name)
        }
    }

    /// Forgets everything and flushes the set or map (a full sync).
    pub(super) fn reset(&mut self, tx: &mut Transaction) {
        self.elements.clear();
        tx.flush(Object::Set(self.container()));
        self.leftover_keys.clear();
    }

    pub(super) fn ensure_elem(
        &mut self,
        tx: &mut Transaction,
        key: Vec<String>,
        value: Vec<String>,
        comment: Option<String>,
    ) {
        let joined_key = key.join(" . ");
        let joined_value = value.join(" . ");
        let element = Element {
            container: self.name.to_string(),
            is_map: self.is_map,
            key,
            value,
            comment,
        };
        match self.elements.get(&joined_key) {
            Some(existing) => {
                if *existing != joined_value {
                    tx.delete(Object::Element(element.clone()));
                    tx.add(Object::Element(element));
                    self.elements.insert(joined_key.clone(), joined_value);
                }
                self.leftover_keys.remove(&joined_key);
            }
            None => {
                tx.add(Object::Element(element));
                self.elements.insert(joined_key, joined_value);
            }
        }
    }

    /// Deletes the elements this sync did not ensure, and starts the next round.
    pub(super) fn cleanup_leftover_keys(&mut self, tx: &mut Transaction) {
        let mut leftover: Vec<&String> = self.leftover_keys.iter().collect();
        leftover.sort();
        for key in leftover {
            tx.delete(Object::Element(Element {
                container: self.name.to_string(),
                is_map: self.is_map,
                key: key.split(" . ").map(str::to_string).collect(),
                value: Vec::new(),
                comment: None,
            }));
            self.elements.remove(key);
        }
        self.leftover_keys = self.elements.keys().cloned().collect();
    }
}
