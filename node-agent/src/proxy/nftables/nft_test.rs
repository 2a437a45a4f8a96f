//! The transactions against the real `nft` and kernel: every transaction of a sequence of
//! syncs (full, partial, stale chain deletion) applied with `nft -f` in a network namespace
//! of the test's own, so the host's rulesets are never touched. Needs root and the `nft`
//! binary (Debian's nftables, which e2e/scripts/bootstrap.sh installs).

use std::process::Command;

use super::helpers_test::*;
use super::proxier::{REKUBE_PROXY_TABLE, cleanup_transaction};
use crate::proxy::netns_test::sh_in_new_netns;
use crate::proxy::types::IpFamily;

/// Runs `script` (transactions separated by lines `---`) in a new network namespace, each
/// part with `nft -f`, and returns `nft list ruleset` at the end.
fn apply_in_new_netns(transactions: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut script = String::from("set -e\n");
    for (i, tx) in transactions.iter().enumerate() {
        let path = dir.path().join(format!("tx-{i}.nft"));
        std::fs::write(&path, tx).unwrap();
        script.push_str(&format!(
            "nft -f {} || {{ echo \"transaction {i} failed\" >&2; exit 1; }}\n",
            path.display()
        ));
    }
    script.push_str("nft list ruleset\n");
    let out = sh_in_new_netns(&script);
    assert!(
        out.status.success(),
        "nft refused a transaction: {}\ntransactions:\n{}",
        String::from_utf8_lossy(&out.stderr),
        transactions.join("---\n")
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Root and `nft` (the project's rule: missing, the test fails with why, unless
/// REKUBE_SKIP_PRIVILEGED=1).
fn prerequisites() -> bool {
    if !nix::unistd::geteuid().is_root() {
        rekube_crds::testing::missing_prerequisite("the nft tests need root (unshare --net)");
        return false;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        rekube_crds::testing::missing_prerequisite(
            "nft is not installed (apt-get install nftables; e2e/scripts/bootstrap.sh does)",
        );
        return false;
    }
    true
}

#[test]
fn nft_applies_full_and_partial_syncs() {
    if !prerequisites() {
        return;
    }
    let mut fp = FakeProxier::new();
    for (i, ip) in ["172.30.0.41", "172.30.0.42"].iter().enumerate() {
        let ns = format!("ns{}", i + 1);
        fp.add_service(make_test_service(&ns, "svc", |svc| {
            let s = spec(svc);
            s.type_ = Some("LoadBalancer".into());
            s.cluster_ip = Some(ip.to_string());
            s.external_ips = Some(vec![format!("192.168.99.{}", 20 + i)]);
            s.ports = Some(vec![service_port("p80", 80, "TCP", 3001 + i as i32)]);
            s.load_balancer_source_ranges = Some(vec!["203.0.113.0/25".into()]);
            s.session_affinity = Some("ClientIP".into());
            if i == 1 {
                s.external_traffic_policy = Some("Local".into());
            }
            set_lb_ingress(svc, &[&format!("1.2.3.{}", 4 + i)]);
        }));
        fp.add_slice(make_test_endpoint_slice(&ns, "svc", 1, |eps| {
            eps.endpoints = Some(vec![
                endpoint(&format!("10.180.{i}.1"), Some(TEST_NODE_NAME), None),
                endpoint(&format!("10.180.{i}.2"), None, None),
            ]);
            eps.ports = Some(vec![endpoint_port("p80", 80, "TCP")]);
        }));
    }
    fp.add_service(make_test_service("ns3", "empty", |svc| {
        let s = spec(svc);
        s.cluster_ip = Some("172.30.0.43".into());
        s.ports = Some(vec![service_port("p53", 53, "UDP", 0)]);
    }));
    fp.sync_proxy_rules();
    // Partial: an endpoint goes, a Service goes, stale chains deleted later.
    fp.add_slice(make_test_endpoint_slice("ns1", "svc", 1, |eps| {
        eps.endpoints = Some(vec![endpoint("10.180.0.2", None, None)]);
        eps.ports = Some(vec![endpoint_port("p80", 80, "TCP")]);
    }));
    fp.sync_proxy_rules();
    fp.delete_service("ns2", "svc");
    fp.sync_proxy_rules();
    fp.age_stale_chains();
    fp.sync_proxy_rules();

    // A restarted agent's first (full) sync over the table the previous run left.
    let mut restarted = FakeProxier::new();
    restarted.services = fp.services.clone();
    restarted.slices = fp.slices.clone();
    restarted.sync_proxy_rules();

    let mut transactions: Vec<String> = fp
        .nft
        .transactions()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert!(
        transactions.len() >= 5,
        "full, partial, partial, stale deletion, partial"
    );
    transactions.extend(restarted.nft.transactions().iter().map(|t| t.to_string()));
    let ruleset = apply_in_new_netns(&transactions);
    // The kernel's table has the chains the fake has.
    let fake_chains = fp
        .nft
        .dump()
        .lines()
        .filter(|l| l.starts_with("add chain"))
        .count();
    let kernel_chains = ruleset
        .lines()
        .filter(|l| l.trim_start().starts_with("chain "))
        .count();
    assert_eq!(kernel_chains, fake_chains, "ruleset:\n{ruleset}");
    assert!(ruleset.contains("table ip rekube-proxy"), "{ruleset}");

    // Cleanup removes the table, and does not fail when it is already gone.
    let cleanup = cleanup_transaction(IpFamily::V4, REKUBE_PROXY_TABLE).to_string();
    transactions.push(cleanup.clone());
    transactions.push(cleanup);
    assert_eq!(apply_in_new_netns(&transactions).trim(), "");
}
