//! An nftables transaction as data, in knftables' model (sigs.k8s.io/knftables): operations
//! (`add`, `flush`, `delete`) on the objects of one table (the table, chains, rules, sets,
//! maps, elements), rendered as the text `nft -f` reads. The whole transaction is one
//! netlink batch: it applies completely or not at all.

use std::fmt::{self, Write as _};

use crate::proxy::types::IpFamily;

/// A base chain's hook point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter` or `nat`.
    pub chain_type: &'static str,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: &'static str,
    /// Numeric priority (dstnat is -100, filter 0, srcnat 100).
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub comment: Option<String>,
}

impl Chain {
    pub fn named(name: &str) -> Chain {
        Chain {
            name: name.to_string(),
            base: None,
            comment: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub rule: String,
    pub comment: Option<String>,
}

/// A set (`map: None`) or a map (`map: Some(value type)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    /// The key type, e.g. `ipv4_addr . inet_proto . inet_service`.
    pub key_type: String,
    /// For a map: the value type (`verdict`).
    pub map: Option<String>,
    pub flags: Vec<&'static str>,
    /// Element timeout in seconds.
    pub timeout: Option<u32>,
    pub comment: Option<String>,
}

impl Set {
    pub fn named(name: &str) -> Set {
        Set {
            name: name.to_string(),
            key_type: String::new(),
            map: None,
            flags: Vec::new(),
            timeout: None,
            comment: None,
        }
    }

    pub fn map_named(name: &str) -> Set {
        Set {
            map: Some(String::new()),
            ..Set::named(name)
        }
    }

    fn kind(&self) -> &'static str {
        if self.map.is_some() { "map" } else { "set" }
    }
}

/// An element of a set (no value) or a map (value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub container: String,
    pub is_map: bool,
    pub key: Vec<String>,
    pub value: Vec<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Table { comment: Option<String> },
    Chain(Chain),
    Rule(Rule),
    Set(Set),
    Element(Element),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Flush,
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "add",
            Verb::Flush => "flush",
            Verb::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub verb: Verb,
    pub object: Object,
}

/// One `nft -f` transaction on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub family: IpFamily,
    pub table: String,
    pub operations: Vec<Operation>,
}

/// nftables' family keyword (`ip`, `ip6`).
pub fn family_keyword(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

impl Transaction {
    pub fn new(family: IpFamily, table: &str) -> Self {
        Transaction {
            family,
            table: table.to_string(),
            operations: Vec::new(),
        }
    }

    pub fn add(&mut self, object: Object) {
        self.operations.push(Operation {
            verb: Verb::Add,
            object,
        });
    }

    pub fn flush(&mut self, object: Object) {
        self.operations.push(Operation {
            verb: Verb::Flush,
            object,
        });
    }

    pub fn delete(&mut self, object: Object) {
        self.operations.push(Operation {
            verb: Verb::Delete,
            object,
        });
    }

    pub fn num_operations(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// Quotes a comment as nft (and Go's `%q` for the ASCII we write) does.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One operation as `nft -f` text, without the trailing newline.
pub fn render_operation(family: IpFamily, table: &str, op: &Operation) -> String {
    let verb = op.verb.as_str();
    let fam = family_keyword(family);
    let mut out = String::new();
    match &op.object {
        Object::Table { comment } => {
            let _ = write!(out, "{verb} table {fam} {table}");
            if let (Verb::Add, Some(c)) = (op.verb, comment) {
                let _ = write!(out, " {{ comment {} ; }}", quote(c));
            }
        }
        Object::Chain(chain) => {
            let _ = write!(out, "{verb} chain {fam} {table} {}", chain.name);
            if op.verb == Verb::Add && (chain.base.is_some() || chain.comment.is_some()) {
                out.push_str(" {");
                if let Some(base) = &chain.base {
                    let _ = write!(
                        out,
                        " type {} hook {} priority {} ;",
                        base.chain_type, base.hook, base.priority
                    );
                }
                if let Some(c) = &chain.comment {
                    let _ = write!(out, " comment {} ;", quote(c));
                }
                out.push_str(" }");
            }
        }
        Object::Rule(rule) => {
            let _ = write!(
                out,
                "{verb} rule {fam} {table} {} {}",
                rule.chain, rule.rule
            );
            if let Some(c) = &rule.comment {
                let _ = write!(out, " comment {}", quote(c));
            }
        }
        Object::Set(set) => {
            let _ = write!(out, "{verb} {} {fam} {table} {}", set.kind(), set.name);
            if op.verb == Verb::Add {
                out.push_str(" { type ");
                out.push_str(&set.key_type);
                if let Some(value) = &set.map {
                    let _ = write!(out, " : {value}");
                }
                out.push_str(" ;");
                if !set.flags.is_empty() {
                    let _ = write!(out, " flags {} ;", set.flags.join(","));
                }
                if let Some(t) = set.timeout {
                    let _ = write!(out, " timeout {t}s ;");
                }
                if let Some(c) = &set.comment {
                    let _ = write!(out, " comment {} ;", quote(c));
                }
                out.push_str(" }");
            }
        }
        Object::Element(el) => {
            let _ = write!(
                out,
                "{verb} element {fam} {table} {} {{ {}",
                el.container,
                el.key.join(" . ")
            );
            if op.verb == Verb::Add {
                if let Some(c) = &el.comment {
                    let _ = write!(out, " comment {}", quote(c));
                }
                if el.is_map {
                    let _ = write!(out, " : {}", el.value.join(" . "));
                }
            }
            out.push_str(" }");
        }
    }
    out
}

/// The transaction as `nft -f` input, one operation a line.
impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.operations {
            writeln!(f, "{}", render_operation(self.family, &self.table, op))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_knftables_syntax() {
        let mut tx = Transaction::new(IpFamily::V4, "rekube-proxy");
        tx.add(Object::Table {
            comment: Some("rules for rekube-proxy".into()),
        });
        tx.add(Object::Chain(Chain {
            name: "nat-output".into(),
            base: Some(BaseChain {
                chain_type: "nat",
                hook: "output",
                priority: -100,
            }),
            comment: None,
        }));
        tx.flush(Object::Chain(Chain::named("nat-output")));
        tx.add(Object::Set(Set {
            name: "affinity-X".into(),
            key_type: "ipv4_addr".into(),
            map: None,
            flags: vec!["dynamic", "timeout"],
            timeout: Some(10800),
            comment: None,
        }));
        tx.add(Object::Element(Element {
            container: "no-endpoint-services".into(),
            is_map: true,
            key: vec!["172.30.0.46".into(), "tcp".into(), "80".into()],
            value: vec!["goto reject-chain".into()],
            comment: Some("ns6/svc6:p80".into()),
        }));
        tx.delete(Object::Element(Element {
            container: "service-ips".into(),
            is_map: true,
            key: vec!["172.30.0.46".into(), "tcp".into(), "80".into()],
            value: vec![],
            comment: None,
        }));
        assert_eq!(
            tx.to_string(),
            "add table ip rekube-proxy { comment \"rules for rekube-proxy\" ; }\n\
             add chain ip rekube-proxy nat-output { type nat hook output priority -100 ; }\n\
             flush chain ip rekube-proxy nat-output\n\
             add set ip rekube-proxy affinity-X { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }\n\
             add element ip rekube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment \"ns6/svc6:p80\" : goto reject-chain }\n\
             delete element ip rekube-proxy service-ips { 172.30.0.46 . tcp . 80 }\n"
        );
    }
}
