//! Test helpers ported from upstream's pkg/proxy/iptables/proxier_test.go: the fake
//! proxier (`NewFakeProxier`: pods in 10.0.0.0/8, node 192.168.0.2, localhost NodePorts
//! and nfacct counters on, NodePorts on every local address) and the comparison of rule
//! dumps (`assertIPTablesRulesEqual`), which reads upstream's expected text with its
//! `KUBE-` chains renamed to rekube's `REKUBE-` and its "kubernetes ..." jump and
//! masquerade comments as rekube's "rekube ...". The Service and EndpointSlice builders
//! are the nftables tests' (`makeTestService`, `makeTestEndpointSlice`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use super::fake::FakeIptables;
use super::proxier::{IptablesOptions, IptablesProxier, RestorePlan};
use super::sync::sync_once;
use crate::proxy::convert::{endpoints_from_endpoint_slices, service_ports};
use crate::proxy::nftables::helpers_test::{TEST_NODE_IP, TEST_NODE_NAME};
use crate::proxy::nftables::{LocalDetector, NodePortAddresses, ProxierConfig};
use crate::proxy::types::{IpFamily, ProxySnapshot};

/// Upstream's text as rekube writes it.
pub fn rename(upstream: &str) -> String {
    upstream
        .replace("KUBE-", "REKUBE-")
        .replace("\"kubernetes ", "\"rekube ")
}

/// Chains whose rules come from iterating a Go map upstream (their order is the
/// services' order, which upstream's tests do not fix): compared as sets, except that
/// the NodePorts jump must stay the last rule of the services chain.
const UNORDERED_CHAINS: [&str; 4] = [
    "REKUBE-SERVICES",
    "REKUBE-NODEPORTS",
    "REKUBE-EXTERNAL-SERVICES",
    "REKUBE-PROXY-FIREWALL",
];

/// Each table's chains (sorted) and each chain's rules.
type Parsed = BTreeMap<String, (BTreeSet<String>, BTreeMap<String, Vec<String>>)>;

fn parse(dump: &str) -> Parsed {
    let mut tables: Parsed = BTreeMap::new();
    let mut current = String::new();
    for line in dump.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            current = t.to_string();
            tables.entry(current.clone()).or_default();
        } else if let Some(c) = line.strip_prefix(':') {
            let name = c.split_whitespace().next().unwrap().to_string();
            // Built-in chains (iptables-save lists them) are not the proxier's.
            if !name.starts_with("REKUBE-") {
                continue;
            }
            tables.get_mut(&current).unwrap().0.insert(name);
        } else {
            let rest = line.strip_prefix("-A ").unwrap_or(line);
            let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            if !chain.starts_with("REKUBE-") {
                continue;
            }
            let entry = tables.get_mut(&current).unwrap();
            let rules = entry.1.entry(chain.to_string()).or_default();
            rules.push(rule.to_string());
        }
    }
    for (_, (_, chains)) in tables.iter_mut() {
        for (name, rules) in chains.iter_mut() {
            if UNORDERED_CHAINS.contains(&name.as_str()) {
                let last = rules
                    .last()
                    .filter(|r| r.contains("-j REKUBE-NODEPORTS"))
                    .cloned();
                if let Some(last) = &last {
                    rules.pop();
                    rules.sort();
                    rules.push(last.clone());
                } else {
                    rules.sort();
                }
            }
        }
    }
    tables
}

/// Upstream's `assertIPTablesRulesEqual`: `expected` is upstream's text (`KUBE-`
/// chains), `result` a restore input or an iptables-save of rekube's chains.
#[track_caller]
pub fn assert_iptables_rules_equal(expected: &str, result: &str) {
    let want = parse(&rename(expected));
    let got = parse(result);
    if want != got {
        panic!(
            "iptables rules do not match\nexpected (renamed):\n{}\nresult:\n{result}",
            rename(expected)
        );
    }
}

/// Upstream's `NewFakeProxier` with the objects it syncs.
pub struct FakeProxier {
    pub proxier: IptablesProxier,
    pub ipt: FakeIptables,
    pub services: BTreeMap<(String, String), core::Service>,
    pub slices: BTreeMap<(String, String), discovery::EndpointSlice>,
    last_synced: ProxySnapshot,
    /// The clock the syncs see (tests move it).
    pub now: std::time::Instant,
}

impl FakeProxier {
    pub fn new() -> Self {
        Self::new_with(|_, _| {})
    }

    pub fn new_with(f: impl FnOnce(&mut ProxierConfig, &mut IptablesOptions)) -> Self {
        let mut config = ProxierConfig::new(IpFamily::V4, TEST_NODE_NAME);
        config.node_ip = Some(TEST_NODE_IP.parse().unwrap());
        config.local_detector = LocalDetector::ByCidr("10.0.0.0/8".parse().unwrap());
        config.node_port_addresses = NodePortAddresses::All;
        config.masquerade_mark = 0x4000;
        let mut options = IptablesOptions {
            localhost_node_ports: true,
            nfacct: true,
            conntrack_tcp_liberal: false,
            // The fake's HasRandomFully is false.
            random_fully: false,
            // Upstream's tests set syncPeriod 30 s.
            stale_chain_cleanup_period: std::time::Duration::from_secs(30),
        };
        f(&mut config, &mut options);
        FakeProxier {
            proxier: IptablesProxier::new(config, options),
            ipt: FakeIptables::new(IpFamily::V4),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            last_synced: ProxySnapshot::default(),
            now: std::time::Instant::now(),
        }
    }

    pub fn add_service(&mut self, svc: core::Service) {
        let key = (
            svc.metadata.namespace.clone().unwrap(),
            svc.metadata.name.clone().unwrap(),
        );
        self.services.insert(key, svc);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.services
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn add_slice(&mut self, slice: discovery::EndpointSlice) {
        let key = (
            slice.metadata.namespace.clone().unwrap(),
            slice.metadata.name.clone().unwrap(),
        );
        self.slices.insert(key, slice);
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        self.slices
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn snapshot(&self) -> ProxySnapshot {
        let mut snapshot = ProxySnapshot::default();
        for svc in self.services.values() {
            let rekube = rekube_crds::Service {
                metadata: svc.metadata.clone(),
                spec: svc.spec.clone(),
                status: svc.status.clone(),
            };
            snapshot
                .service_ports
                .extend(service_ports(&rekube, IpFamily::V4));
        }
        snapshot.endpoints =
            endpoints_from_endpoint_slices(self.slices.values(), TEST_NODE_NAME, IpFamily::V4);
        snapshot
    }

    /// `fp.syncProxyRules()` through the fake kernel; the Services changed since the
    /// last sync are the partial sync's.
    pub fn sync_proxy_rules(&mut self) -> RestorePlan {
        let snapshot = self.snapshot();
        let updated = self.last_synced.updated_services(&snapshot);
        let plan =
            sync_once(&mut self.proxier, &self.ipt, &snapshot, &updated, self.now).expect("sync");
        self.last_synced = snapshot;
        plan
    }
}

#[test]
#[should_panic(expected = "iptables rules do not match")]
fn comparison_detects_a_changed_rule() {
    let upstream =
        "*filter\n:KUBE-FORWARD - [0:0]\n-A KUBE-FORWARD -j ACCEPT\nCOMMIT\n*nat\nCOMMIT\n";
    assert_iptables_rules_equal(
        upstream,
        "*filter\n:REKUBE-FORWARD - [0:0]\n-A REKUBE-FORWARD -j DROP\nCOMMIT\n*nat\nCOMMIT\n",
    );
}

#[test]
fn comparison_renames_and_ignores_service_order() {
    let upstream = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 1.1.1.1 -j KUBE-SVC-A\n-A KUBE-SERVICES -d 2.2.2.2 -j KUBE-SVC-B\n-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -j KUBE-NODEPORTS\nCOMMIT\n";
    assert_iptables_rules_equal(
        upstream,
        "*nat\n:REKUBE-SERVICES - [0:0]\n-A REKUBE-SERVICES -d 2.2.2.2 -j REKUBE-SVC-B\n-A REKUBE-SERVICES -d 1.1.1.1 -j REKUBE-SVC-A\n-A REKUBE-SERVICES -m comment --comment \"rekube service nodeports\" -j REKUBE-NODEPORTS\nCOMMIT\n",
    );
}
