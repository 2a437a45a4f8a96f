//! Upstream's `iptablesTracer` (pkg/proxy/iptables/proxier_test.go): a packet traced
//! through the fake kernel's rules, to the endpoints it may be DNATed to (every endpoint
//! of a `-m statistic` choice), DROP, REJECT or ACCEPT, and whether it was marked for
//! masquerade. `-m recent --rcheck` never matches (no affinity state yet); only the rule
//! shapes the proxier writes are understood, anything else fails the test.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::fake::FakeIptables;
use super::interface::Table;
use super::names::{
    EXTERNAL_SERVICES_CHAIN, MARK_MASQ_CHAIN, NODE_PORTS_CHAIN, PROXY_FIREWALL_CHAIN,
    SERVICES_CHAIN,
};
use crate::proxy::convert::{parse_cidr_sloppy, parse_ip_sloppy};
use crate::proxy::nftables::tracer_test::{PacketFlowTest, TEST_NODE_IPS};

/// Splits a rule into words, a double-quoted comment being one word.
fn words(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn address_matches(ip: &str, rule_address: &str) -> bool {
    let ip = parse_ip_sloppy(ip).unwrap_or_else(|| panic!("bad IP in test case: {ip}"));
    if rule_address.contains('/') {
        parse_cidr_sloppy(rule_address)
            .unwrap_or_else(|| panic!("bad CIDR in rules: {rule_address}"))
            .contains(&ip)
    } else {
        parse_ip_sloppy(rule_address).unwrap_or_else(|| panic!("bad IP in rules: {rule_address}"))
            == ip
    }
}

/// A parsed rule: whether it matches the packet, its target and what the target needs.
struct Parsed {
    matches: bool,
    probabilistic: bool,
    target: String,
    to_destination: Option<String>,
}

struct Tracer<'a> {
    ipt: &'a FakeIptables,
    local_ips: BTreeSet<IpAddr>,
    matches: Vec<String>,
    outputs: Vec<String>,
    mark_masq: bool,
}

impl Tracer<'_> {
    fn is_local(&self, ip: &str) -> bool {
        self.local_ips.contains(&ip.parse().unwrap())
    }

    /// Upstream's `ruleMatches`, over the rule's words.
    fn parse(&self, rule: &str, src: &str, proto: &str, dst: &str, dport: &str) -> Parsed {
        let w = words(rule);
        let mut p = Parsed {
            matches: true,
            probabilistic: false,
            target: String::new(),
            to_destination: None,
        };
        let mut i = 0;
        let mut negate = false;
        while i < w.len() {
            let word = w[i].as_str();
            let arg = w.get(i + 1).map(String::as_str).unwrap_or("");
            let mut ok = true;
            match word {
                "!" => {
                    negate = true;
                    i += 1;
                    continue;
                }
                "-s" => ok = address_matches(src, arg) != negate,
                "-d" => ok = address_matches(dst, arg) != negate,
                "-p" => ok = (arg == proto) != negate,
                "--dport" => ok = (arg == dport) != negate,
                "--src-type" => ok = (arg == "LOCAL" && self.is_local(src)) != negate,
                "--dst-type" => ok = (arg == "LOCAL" && self.is_local(dst)) != negate,
                "--probability" => p.probabilistic = true,
                // `-m recent --rcheck`: no client is in the list yet.
                "--rcheck" => {
                    p.matches = false;
                    i += 1;
                    continue;
                }
                "--set" | "--reap" => {
                    i += 1;
                    continue;
                }
                "-j" => p.target = arg.to_string(),
                "--to-destination" => p.to_destination = Some(arg.to_string()),
                "-m" | "--comment" | "--mode" | "--name" | "--seconds" | "--nfacct-name"
                | "--or-mark" | "--xor-mark" => {}
                "--random-fully" => {
                    i += 1;
                    continue;
                }
                other => panic!("unmatched word {other:?} in rule: {rule}"),
            }
            negate = false;
            if !ok {
                p.matches = false;
            }
            i += 2;
        }
        p
    }

    /// Upstream's `runChain`: true when the packet reached a terminal target.
    fn run_chain(
        &mut self,
        table: Table,
        chain: &str,
        src: &str,
        proto: &str,
        dst: &str,
        dport: &str,
    ) -> bool {
        let Some(rules) = self.ipt.rules(table, chain) else {
            return false;
        };
        for rule in rules {
            let p = self.parse(&rule, src, proto, dst, dport);
            if p.target.is_empty() || !p.matches {
                continue;
            }
            self.matches.push(format!("-A {chain} {rule}"));
            match p.target.as_str() {
                t if t == MARK_MASQ_CHAIN => self.mark_masq = true,
                "ACCEPT" | "REJECT" | "DROP" => {
                    self.outputs.push(p.target.clone());
                    return true;
                }
                "DNAT" => {
                    self.outputs
                        .push(p.to_destination.expect("DNAT without --to-destination"));
                    return true;
                }
                next => {
                    let terminated = self.run_chain(table, next, src, proto, dst, dport);
                    // After a probabilistic jump the chain goes on (every endpoint).
                    if terminated && !p.probabilistic {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// Upstream's `tracePacket`: nat `REKUBE-SERVICES` (then the DNAT takes effect), then the
/// filter chains that matter: `REKUBE-SERVICES`, `REKUBE-EXTERNAL-SERVICES`,
/// `REKUBE-NODEPORTS`, `REKUBE-PROXY-FIREWALL`.
pub fn trace_packet(
    ipt: &FakeIptables,
    src: &str,
    proto: &str,
    dst: &str,
    dport: &str,
) -> (String, bool, Vec<String>) {
    let mut local_ips: BTreeSet<IpAddr> =
        TEST_NODE_IPS.iter().map(|ip| ip.parse().unwrap()).collect();
    local_ips.insert("127.0.0.1".parse().unwrap());
    local_ips.insert("::1".parse().unwrap());
    let mut t = Tracer {
        ipt,
        local_ips,
        matches: Vec::new(),
        outputs: Vec::new(),
        mark_masq: false,
    };
    t.run_chain(Table::Nat, SERVICES_CHAIN, src, proto, dst, dport);
    let mut dst = dst.to_string();
    if let Some(first) = t.outputs.first() {
        let addr: std::net::SocketAddr = first.parse().expect("dnat target");
        dst = addr.ip().to_string();
    }
    for chain in [
        SERVICES_CHAIN,
        EXTERNAL_SERVICES_CHAIN,
        NODE_PORTS_CHAIN,
        PROXY_FIREWALL_CHAIN,
    ] {
        t.run_chain(Table::Filter, chain, src, proto, &dst, dport);
    }
    (t.outputs.join(", "), t.mark_masq, t.matches)
}

/// Upstream's `runPacketFlowTests`.
#[track_caller]
pub fn run_packet_flow_tests(context: &str, ipt: &FakeIptables, tests: &[PacketFlowTest]) {
    let mut failures = Vec::new();
    for tc in tests {
        let proto = if tc.protocol.is_empty() {
            "tcp"
        } else {
            tc.protocol
        };
        let (output, masq, matches) = trace_packet(
            ipt,
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
