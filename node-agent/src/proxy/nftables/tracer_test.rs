//! Upstream's `nftablesTracer` (helpers_test.go): a packet traced through the fake table's
//! rules, to the endpoints it may be DNATed to (all of a `numgen` choice), DROP or
//! REJECT, and whether nat-postrouting masqueraded it. Only the rule shapes the proxier
//! writes are understood; anything else fails the test.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::fake::FakeNftables;
use super::helpers_test::FakeProxier;
use crate::proxy::convert::{parse_cidr_sloppy, parse_ip_sloppy};

/// Upstream's `testNodeIPs`: what `fib ... type local` matches.
pub const TEST_NODE_IPS: [&str; 5] = [
    "192.168.0.2",
    "192.168.1.2",
    "192.168.99.11",
    "2001:db8::1",
    "2001:db8:1::2",
];

pub const TEST_EXTERNAL_CLIENT: &str = "203.0.113.2";
pub const TEST_EXTERNAL_CLIENT_BLOCKED: &str = "203.0.113.130";

struct Tracer<'a> {
    nft: &'a FakeNftables,
    node_ips: BTreeSet<IpAddr>,
    matches: Vec<String>,
    outputs: Vec<String>,
    mark_masq: bool,
    masquerade: bool,
    dnat: bool,
}

fn address_matches(ip: &str, want_match: bool, rule_address: &str) -> bool {
    let ip = parse_ip_sloppy(ip).unwrap_or_else(|| panic!("bad IP in test case: {ip}"));
    let matched = if rule_address.contains('/') {
        let cidr: IpNet = parse_cidr_sloppy(rule_address)
            .unwrap_or_else(|| panic!("bad CIDR in rules: {rule_address}"));
        cidr.contains(&ip)
    } else {
        parse_ip_sloppy(rule_address).unwrap_or_else(|| panic!("bad IP in rules: {rule_address}"))
            == ip
    };
    matched == want_match
}

/// `{ a , b }` against `ip`: with `!=`, none may match; without, any.
fn address_matches_set(ip: &str, want_match: bool, set: &str) -> bool {
    let mut any = false;
    for address in set.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        any |= address_matches(ip, true, address);
    }
    any == want_match
}

/// Splits `word rest` at the first space.
fn first_word(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((w, rest)) => (w, rest.trim_start()),
        None => (s, ""),
    }
}

/// `(!= )?{ a , b }` or `(!= )?ADDR` matched against `ip`; the rest of the rule, or
/// `None` when it does not match.
fn match_address<'r>(ip: &str, s: &'r str) -> Option<&'r str> {
    let (want, s) = match s.strip_prefix("!= ") {
        Some(rest) => (false, rest),
        None => (true, s),
    };
    let (matched, rest) = if let Some(rest) = s.strip_prefix('{') {
        let (set, rest) = rest.split_once('}').expect("unterminated anonymous set");
        (address_matches_set(ip, want, set), rest)
    } else {
        let (addr, rest) = first_word(s);
        (address_matches(ip, want, addr), rest)
    };
    matched.then_some(rest.trim_start())
}

impl Tracer<'_> {
    fn lookup(&self, map: &str, key: &[&str]) -> Option<Vec<String>> {
        self.nft
            .element_fields(map)
            .into_iter()
            .find(|(k, _)| k.iter().map(String::as_str).eq(key.iter().copied()))
            .map(|(_, v)| v)
    }

    /// Runs the packet through a chain; true when it reached a terminal verdict.
    fn run_chain(&mut self, chain: &str, src: &str, proto: &str, dst: &str, dport: &str) -> bool {
        let rules = self
            .nft
            .rules(chain)
            .unwrap_or_else(|| panic!("unknown chain {chain:?}"));
        for rule_obj in rules {
            let full = rule_obj.rule.clone();
            let mut rule: String = full
                .strip_prefix("ct state new")
                .unwrap_or(&full)
                .trim_start()
                .to_string();
            while !rule.is_empty() {
                let r = rule.trim_start().to_string();
                let ip_prefix = if r.starts_with("ip6 ") { "ip6 " } else { "ip " };
                let ipx = ip_prefix.trim_end();
                if let Some(rest) = r.strip_prefix("ct status dnat") {
                    // Part of the hairpin check.
                    if !self.dnat {
                        break;
                    }
                    rule = rest.to_string();
                } else if let Some(rest) = r.strip_prefix(&format!(
                    "{ipx} saddr . {ipx} daddr . meta l4proto . th dport @hairpin-connections"
                )) {
                    // As upstream's tracer, a packet DNATed back to its source is taken
                    // as a hairpin without looking the set up.
                    if src != dst {
                        break;
                    }
                    rule = rest.to_string();
                } else if let Some(rest) = r.strip_prefix(&format!("{ip_prefix}daddr @")) {
                    // Destination in a named set.
                    let (set, rest) = first_word(rest);
                    if self.lookup(set, &[dst]).is_none() {
                        break;
                    }
                    rule = rest.to_string();
                } else if let Some(rest) = r.strip_prefix(&format!(
                    "{ip_prefix}daddr . meta l4proto . th dport vmap @"
                )) {
                    match self.lookup(rest.trim(), &[dst, proto, dport]) {
                        Some(v) => rule = v[0].clone(),
                        None => break,
                    }
                } else if let Some(rest) = r.strip_prefix("meta l4proto . th dport vmap @") {
                    match self.lookup(rest.trim(), &[proto, dport]) {
                        Some(v) => rule = v[0].clone(),
                        None => break,
                    }
                } else if let Some(rest) = r.strip_prefix(&format!("{ip_prefix}daddr ")) {
                    match match_address(dst, rest) {
                        Some(rest) => rule = rest.to_string(),
                        None => break,
                    }
                } else if let Some(rest) = r.strip_prefix("fib daddr type local") {
                    if !self.node_ips.contains(&dst.parse().unwrap()) {
                        break;
                    }
                    rule = rest.to_string();
                } else if let Some(rest) = ["tcp", "udp", "sctp"].iter().find_map(|p| {
                    r.strip_prefix(&format!("{p} dport "))
                        .map(|rest| (*p, rest))
                }) {
                    let (p, rest) = rest;
                    let (port, rest) = first_word(rest);
                    if p != proto || port != dport {
                        break;
                    }
                    rule = rest.to_string();
                } else if r.starts_with(&format!("{ip_prefix}saddr @")) {
                    // A session affinity set: empty until traffic fills it.
                    break;
                } else if let Some(rest) = r.strip_prefix(&format!("{ip_prefix}saddr ")) {
                    match match_address(src, rest) {
                        Some(rest) => rule = rest.to_string(),
                        None => break,
                    }
                } else if let Some(rest) = r.strip_prefix("fib saddr type local") {
                    if !self.node_ips.contains(&src.parse().unwrap()) {
                        break;
                    }
                    rule = rest.to_string();
                } else if let Some(rest) = r.strip_prefix("mark set mark or 0x") {
                    // Marked for masquerade.
                    assert!(
                        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit()),
                        "unmatched rule: {full}"
                    );
                    self.matches.push(full.clone());
                    self.mark_masq = true;
                    rule.clear();
                } else if let Some(rest) = r.strip_prefix("mark and 0x") {
                    // Checks and clears the mark.
                    let rest = rest
                        .split_once(" != 0 mark set mark xor 0x")
                        .map(|(_, rest)| first_word(rest).1)
                        .unwrap_or_else(|| panic!("unmatched rule: {full}"));
                    if !self.mark_masq {
                        break;
                    }
                    self.mark_masq = false;
                    rule = rest.to_string();
                } else if r == "masquerade fully-random" {
                    self.matches.push(full.clone());
                    self.masquerade = true;
                    rule.clear();
                } else if let Some((action, dest)) = r
                    .split_once(' ')
                    .filter(|(a, _)| *a == "jump" || *a == "goto")
                {
                    self.matches.push(full.clone());
                    if self.run_chain(dest.trim(), src, proto, dst, dport) {
                        return true;
                    } else if action == "goto" {
                        return false;
                    }
                    rule.clear();
                } else if r == "drop" || r == "reject" {
                    self.matches.push(full.clone());
                    self.outputs.push(r.to_uppercase());
                    return true;
                } else if r == "return" {
                    self.matches.push(full.clone());
                    return false;
                } else if let Some(rest) = r.strip_prefix("meta l4proto ") {
                    let (p, rest) = first_word(rest);
                    if p != proto {
                        break;
                    }
                    if let Some(endpoint) = rest.strip_prefix("dnat to ") {
                        self.matches.push(full.clone());
                        self.outputs.push(endpoint.trim().to_string());
                        return true;
                    }
                    // `dnat ip addr . port to numgen random mod N map { i : IP . PORT , .. }`:
                    // every endpoint the random choice could pick.
                    let elements = rest
                        .strip_prefix("dnat ip addr . port to numgen random mod ")
                        .or_else(|| rest.strip_prefix("dnat ip6 addr . port to numgen random mod "))
                        .and_then(|r| r.split_once(" map {"))
                        .and_then(|(_, e)| e.strip_suffix('}'))
                        .unwrap_or_else(|| panic!("unmatched rule: {full}"));
                    for entry in elements.split(',') {
                        let (_, target) = entry.split_once(" : ").expect("map entry");
                        let (ep_ip, ep_port) = target.trim().split_once(" . ").expect("ip . port");
                        let ep_ip: IpAddr = ep_ip.parse().expect("endpoint IP");
                        self.matches.push(full.clone());
                        self.outputs.push(
                            std::net::SocketAddr::new(ep_ip, ep_port.parse().unwrap()).to_string(),
                        );
                    }
                    return true;
                } else if let Some(rest) = r.strip_prefix("numgen random mod ") {
                    // Every endpoint the random choice could pick.
                    let (_, rest) = first_word(rest);
                    let elements = rest
                        .strip_prefix("vmap {")
                        .and_then(|e| e.strip_suffix('}'))
                        .unwrap_or_else(|| panic!("unmatched rule: {full}"));
                    for entry in elements.split(',') {
                        let dest = entry.split_once(": goto ").expect("vmap entry").1.trim();
                        self.matches.push(full.clone());
                        self.run_chain(dest, src, proto, dst, dport);
                    }
                    return true;
                } else if r.starts_with("update @") {
                    // Session affinity bookkeeping.
                    rule.clear();
                } else {
                    panic!("unmatched rule: {full}");
                }
            }
        }
        false
    }
}

/// Upstream's `tracePacket`: filter-prerouting-pre-dnat, nat-prerouting (then the DNAT
/// takes effect), filter-forward, filter-input. Returns the outputs joined with `, ` and
/// whether the packet was marked for masquerade.
pub fn trace_packet(
    nft: &FakeNftables,
    src: &str,
    proto: &str,
    dst: &str,
    dport: &str,
) -> (String, bool, Vec<String>) {
    let mut tracer = Tracer {
        nft,
        node_ips: TEST_NODE_IPS.iter().map(|ip| ip.parse().unwrap()).collect(),
        matches: Vec::new(),
        outputs: Vec::new(),
        mark_masq: false,
        masquerade: false,
        dnat: false,
    };
    let done = |t: &Tracer| (t.outputs.join(", "), t.mark_masq, t.matches.clone());
    if tracer.run_chain("filter-prerouting-pre-dnat", src, proto, dst, dport) {
        return done(&tracer);
    }
    tracer.run_chain("nat-prerouting", src, proto, dst, dport);
    let mut dst = dst.to_string();
    if let Some(first) = tracer.outputs.first() {
        let addr: std::net::SocketAddr = first.parse().expect("dnat target");
        dst = addr.ip().to_string();
        tracer.dnat = true;
    }
    if tracer.run_chain("filter-forward", src, proto, &dst, dport) {
        return done(&tracer);
    }
    tracer.run_chain("filter-input", src, proto, &dst, dport);
    // The output chains are redundant with the prerouting ones; nat-postrouting
    // masquerades.
    tracer.run_chain("nat-postrouting", src, proto, &dst, dport);
    (
        tracer.outputs.join(", "),
        tracer.masquerade,
        tracer.matches.clone(),
    )
}

/// Upstream's `packetFlowTest`.
#[derive(Debug, Clone, Copy)]
pub struct PacketFlowTest<'a> {
    pub name: &'a str,
    pub source_ip: &'a str,
    /// Lowercase; empty means tcp.
    pub protocol: &'a str,
    pub dest_ip: &'a str,
    pub dest_port: u16,
    pub output: &'a str,
    pub masq: bool,
}

/// `PacketFlowTest` from (name, source, destination, port, output, masq), TCP.
pub fn flow<'a>(
    name: &'a str,
    source_ip: &'a str,
    dest_ip: &'a str,
    dest_port: u16,
    output: &'a str,
    masq: bool,
) -> PacketFlowTest<'a> {
    PacketFlowTest {
        name,
        source_ip,
        protocol: "",
        dest_ip,
        dest_port,
        output,
        masq,
    }
}

/// Upstream's `runPacketFlowTests`.
#[track_caller]
pub fn run_packet_flow_tests(context: &str, fp: &FakeProxier, tests: &[PacketFlowTest]) {
    let mut failures = Vec::new();
    for tc in tests {
        let proto = if tc.protocol.is_empty() {
            "tcp"
        } else {
            tc.protocol
        };
        let (output, masq, matches) = trace_packet(
            &fp.nft,
            tc.source_ip,
            proto,
            tc.dest_ip,
            &tc.dest_port.to_string(),
        );
        if output != tc.output || masq != tc.masq {
            failures.push(format!(
                "{context}: {:?} from {} to {}:{}: expected {:?} masq {}, got {:?} masq {}\nby matching:\n  {}",
                tc.name,
                tc.source_ip,
                tc.dest_ip,
                tc.dest_port,
                tc.output,
                tc.masq,
                output,
                masq,
                matches.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
