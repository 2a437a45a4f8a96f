//! The elements of one set or map as the proxier last wrote them (upstream's
//! `nftElementStorage`), with how many service ports need each, so a partial sync adds,
//! replaces and deletes only what changed.

use std::collections::HashMap;

use super::transaction::{Element, Object, Set, Transaction};

#[derive(Debug, Clone)]
struct Entry {
    /// The value, joined with ` . ` (empty for a set).
    value: String,
    /// The service ports that ensured it and have not released it.
    refs: u32,
}

/// The elements of one set or map as the proxier last wrote them (upstream's
/// `nftElementStorage`). Upstream marks every element it ensures in a sync and deletes
/// the rest at its end; rekube's partial syncs write only the ports that changed, so an
/// element instead counts the ports holding it and goes with the last one's release.
#[derive(Debug, Clone)]
pub(super) struct ElementStorage {
    name: &'static str,
    is_map: bool,
    /// key (joined with ` . `) → value and holders.
    elements: HashMap<String, Entry>,
}

impl ElementStorage {
    pub(super) fn new(name: &'static str, is_map: bool) -> Self {
        ElementStorage {
            name,
            is_map,
            elements: HashMap::new(),
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
    }

    /// One more port needs the element: added if new, replaced (delete + add, as
    /// upstream) if its value changed. Returns the joined key, for the port's release.
    pub(super) fn ensure_elem(
        &mut self,
        tx: &mut Transaction,
        key: Vec<String>,
        value: Vec<String>,
        comment: Option<String>,
    ) -> String {
        let joined_key = key.join(" . ");
        let joined_value = value.join(" . ");
        let element = Element {
            container: self.name.to_string(),
            is_map: self.is_map,
            key,
            value,
            comment,
        };
        match self.elements.get_mut(&joined_key) {
            Some(entry) => {
                if entry.value != joined_value {
                    tx.delete(Object::Element(element.clone()));
                    tx.add(Object::Element(element));
                    entry.value = joined_value;
                }
                entry.refs += 1;
            }
            None => {
                tx.add(Object::Element(element));
                self.elements.insert(
                    joined_key.clone(),
                    Entry {
                        value: joined_value,
                        refs: 1,
                    },
                );
            }
        }
        joined_key
    }

    /// One port less needs the element (by joined key): deleted with the last.
    pub(super) fn release(&mut self, tx: &mut Transaction, key: &str) {
        let Some(entry) = self.elements.get_mut(key) else {
            return;
        };
        entry.refs -= 1;
        if entry.refs == 0 {
            self.elements.remove(key);
            tx.delete(Object::Element(Element {
                container: self.name.to_string(),
                is_map: self.is_map,
                key: key.split(" . ").map(str::to_string).collect(),
                value: Vec::new(),
                comment: None,
            }));
        }
    }
}
