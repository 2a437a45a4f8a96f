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
    /// The declarations of sets and maps that elements are added to, when the transaction
    /// itself does not add them: not operations, only what [`Transaction::nft_input`]
    /// needs to write an element into its set's declaration.
    pub declarations: Vec<Set>,
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
            declarations: Vec::new(),
        }
    }

    /// Notes a set's declaration (see [`Transaction::declarations`]).
    pub fn declare(&mut self, set: Set) {
        self.declarations.push(set);
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

impl Transaction {
    /// The text `nft -f` applies: the same operations as [`Display`](fmt::Display), written
    /// so that nft 1.0.6 need not load its cache of the whole ruleset. nft loads every
    /// chain of every table before an `add rule` or `add element` (a dump the kernel
    /// restarts from the first chain for every batch): at 20 000 chains 0.16 s for any
    /// transaction that adds a rule. Here a rule is a chain body (`add chain T C { RULE ;
    /// }` appends it like `add rule`), and the elements added to a declared set or map are
    /// added, after every other operation, through one declaration per set (`add map T M {
    /// type .. ; elements = { E1 , E2 } ; }` adds to an existing map). Moving them last
    /// keeps the outcome: a transaction deletes an element before it re-adds it, never
    /// after, and never deletes what an element points to. One declaration per set also
    /// keeps the kernel's transaction short (a full sync of 20 000 Service ports applies
    /// in 48 s instead of 50 s; one declaration per element took 60 s). A rule naming a
    /// set the transaction does not declare, an element of a set it cannot declare, and
    /// every deletion keep the plain form (nft looks those up).
    pub fn nft_input(&self) -> String {
        let fam = family_keyword(self.family);
        let table = &self.table;
        let mut declared: Vec<&Set> = self.declarations.iter().collect();
        // Per declared container, in order of first appearance: its elements.
        let mut elements: Vec<(Set, Vec<String>)> = Vec::new();
        let mut out = String::new();
        for op in &self.operations {
            match (&op.verb, &op.object) {
                (Verb::Add, Object::Set(set)) => {
                    declared.push(set);
                    out.push_str(&render_operation(self.family, table, op));
                }
                (Verb::Add, Object::Rule(rule))
                    if set_references(&rule.rule)
                        .all(|name| declared.iter().any(|d| d.name == name)) =>
                {
                    let _ = write!(
                        out,
                        "add chain {fam} {table} {} {{ {}",
                        rule.chain, rule.rule
                    );
                    if let Some(c) = &rule.comment {
                        let _ = write!(out, " comment {}", quote(c));
                    }
                    out.push_str(" ; }");
                }
                (Verb::Add, Object::Element(el))
                    if declared.iter().any(|d| d.name == el.container) =>
                {
                    let mut element = el.key.join(" . ");
                    if let Some(c) = &el.comment {
                        let _ = write!(element, " comment {}", quote(c));
                    }
                    if el.is_map {
                        let _ = write!(element, " : {}", el.value.join(" . "));
                    }
                    match elements
                        .iter_mut()
                        .find(|(set, _)| set.name == el.container)
                    {
                        Some((_, list)) => list.push(element),
                        None => {
                            let set = declared
                                .iter()
                                .rev()
                                .find(|d| d.name == el.container)
                                .map(|d| (*d).clone())
                                .expect("declared");
                            elements.push((set, vec![element]));
                        }
                    }
                    continue;
                }
                _ => out.push_str(&render_operation(self.family, table, op)),
            }
            out.push('\n');
        }
        for (set, list) in elements {
            let decl = render_operation(
                self.family,
                table,
                &Operation {
                    verb: Verb::Add,
                    object: Object::Set(set),
                },
            );
            // `add map T M { type .. ; }` with ` elements = { .. } ;` before the brace.
            let open = decl.strip_suffix(" }").unwrap_or(&decl);
            let _ = writeln!(out, "{open} elements = {{ {} }} ; }}", list.join(" , "));
        }
        out
    }
}

/// The named sets a rule refers to (`@name`).
fn set_references(rule: &str) -> impl Iterator<Item = &str> {
    rule.split('@').skip(1).map(|rest| {
        rest.split(|c: char| c.is_whitespace() || c == '}' || c == ',')
            .next()
            .unwrap_or("")
    })
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

    /// What `nft -f` gets: rules as chain bodies, the elements of each declared set (by the
    /// transaction's own `add set` or its declarations) last in one declaration, and the
    /// plain form where nft must look something up (an undeclared `@set`, deletions).
    #[test]
    fn nft_input_avoids_what_makes_nft_load_its_cache() {
        let mut tx = Transaction::new(IpFamily::V4, "rekube-proxy");
        tx.declare(Set {
            key_type: "ipv4_addr . inet_proto . inet_service".into(),
            map: Some("verdict".into()),
            comment: Some("ClusterIP traffic".into()),
            ..Set::named("service-ips")
        });
        tx.add(Object::Chain(Chain::named("service-X")));
        tx.flush(Object::Chain(Chain::named("service-X")));
        tx.add(Object::Rule(Rule {
            chain: "service-X".into(),
            rule: "meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.0.0.1 . 80 , 1 : 10.0.0.2 . 80 }".into(),
            comment: Some("a \"quoted\" comment".into()),
        }));
        tx.add(Object::Set(Set {
            key_type: "ipv4_addr".into(),
            flags: vec!["dynamic", "timeout"],
            timeout: Some(10800),
            ..Set::named("affinity-Y")
        }));
        tx.add(Object::Rule(Rule {
            chain: "service-Y".into(),
            rule: "ip saddr @affinity-Y goto endpoint-Y".into(),
            comment: None,
        }));
        tx.add(Object::Rule(Rule {
            chain: "services".into(),
            rule: "ip daddr @not-declared drop".into(),
            comment: None,
        }));
        tx.delete(Object::Element(Element {
            container: "service-ips".into(),
            is_map: true,
            key: vec!["172.30.0.1".into(), "tcp".into(), "80".into()],
            value: vec![],
            comment: None,
        }));
        tx.add(Object::Element(Element {
            container: "service-ips".into(),
            is_map: true,
            key: vec!["172.30.0.1".into(), "tcp".into(), "80".into()],
            value: vec!["goto service-X".into()],
            comment: Some("ns/svc:http".into()),
        }));
        tx.add(Object::Element(Element {
            container: "affinity-Y".into(),
            is_map: false,
            key: vec!["10.1.1.1".into()],
            value: vec![],
            comment: None,
        }));
        tx.add(Object::Element(Element {
            container: "undeclared".into(),
            is_map: false,
            key: vec!["10.1.1.1".into()],
            value: vec![],
            comment: None,
        }));
        tx.add(Object::Element(Element {
            container: "service-ips".into(),
            is_map: true,
            key: vec!["172.30.0.2".into(), "tcp".into(), "80".into()],
            value: vec!["goto service-Y".into()],
            comment: None,
        }));
        assert_eq!(
            tx.nft_input(),
            "add chain ip rekube-proxy service-X\n\
             flush chain ip rekube-proxy service-X\n\
             add chain ip rekube-proxy service-X { meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.0.0.1 . 80 , 1 : 10.0.0.2 . 80 } comment \"a \\\"quoted\\\" comment\" ; }\n\
             add set ip rekube-proxy affinity-Y { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }\n\
             add chain ip rekube-proxy service-Y { ip saddr @affinity-Y goto endpoint-Y ; }\n\
             add rule ip rekube-proxy services ip daddr @not-declared drop\n\
             delete element ip rekube-proxy service-ips { 172.30.0.1 . tcp . 80 }\n\
             add element ip rekube-proxy undeclared { 10.1.1.1 }\n\
             add map ip rekube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP traffic\" ; elements = { 172.30.0.1 . tcp . 80 comment \"ns/svc:http\" : goto service-X , 172.30.0.2 . tcp . 80 : goto service-Y } ; }\n\
             add set ip rekube-proxy affinity-Y { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; elements = { 10.1.1.1 } ; }\n"
        );
        // The knftables form is unchanged.
        assert!(
            tx.to_string().contains(
                "add rule ip rekube-proxy service-Y ip saddr @affinity-Y goto endpoint-Y\n"
            )
        );
    }
}
