//! The syncs against the real `iptables-restore`/`iptables-save` and kernel: a full
//! sync, partial syncs (a Service added, an endpoint changed, a Service deleted), a
//! restarted proxier's full sync over what the previous one left, and cleanup, all in a
//! network namespace of the test's own (`ip netns add`), so the host's tables are never
//! touched. After each sync the kernel holds exactly the chains the fake holds, with as
//! many rules in each. Needs root and Debian's iptables (e2e/scripts/bootstrap.sh).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use super::exec::IptablesExec;
use super::helpers_test::*;
use super::interface::{Iptables, Table, chains_from_save};
use super::names::is_rekube_chain;
use super::proxier::{IptablesOptions, IptablesProxier};
use super::sync::{cleanup, sync_once};
use crate::proxy::nftables::helpers_test::TEST_NODE_NAME;
use crate::proxy::nftables::helpers_test::{
    endpoint, endpoint_port, make_test_endpoint_slice, make_test_service, service_port,
    set_lb_ingress, spec,
};
use crate::proxy::types::IpFamily;

/// A network namespace of the test's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("rekube-ipt-test-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(ok.success(), "ip netns add {name}");
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn prerequisites() -> bool {
    if !nix::unistd::geteuid().is_root() {
        rekube_crds::testing::missing_prerequisite("the iptables tests need root (ip netns add)");
        return false;
    }
    if Command::new("iptables-restore")
        .arg("--version")
        .output()
        .is_err()
    {
        rekube_crds::testing::missing_prerequisite(
            "iptables is not installed (apt-get install iptables; e2e/scripts/bootstrap.sh does)",
        );
        return false;
    }
    true
}

/// rekube's chains of a table and how many rules each holds.
fn shape(ipt: &impl Iptables, table: Table) -> BTreeMap<String, usize> {
    let save = ipt.save(table).unwrap();
    let mut shape: BTreeMap<String, usize> = chains_from_save(&save)
        .into_iter()
        .filter(|c| is_rekube_chain(c))
        .map(|c| (c, 0))
        .collect();
    for line in save.lines() {
        if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest.split_whitespace().next().unwrap();
            let key = if is_rekube_chain(chain) {
                chain.to_string()
            } else if rest.contains("-j REKUBE-") {
                // rekube's jump rules in the built-in chains.
                format!("{chain} (jumps to rekube)")
            } else {
                continue;
            };
            *shape.entry(key).or_default() += 1;
        }
    }
    shape
}

#[track_caller]
fn assert_same_shape(kernel: &IptablesExec, fp: &FakeProxier) {
    for table in [Table::Filter, Table::Nat] {
        assert_eq!(
            shape(kernel, table),
            shape(&fp.ipt, table),
            "{} table: kernel vs fake\nkernel:\n{}",
            table.name(),
            kernel.save(table).unwrap()
        );
    }
}

#[test]
fn iptables_restore_applies_full_and_partial_syncs() {
    if !prerequisites() {
        return;
    }
    let netns = Netns::new();
    let kernel = IptablesExec::new(IpFamily::V4, Some(&netns.path()));
    // Someone else's chain and jump (a real kube-proxy's) that rekube must leave alone.
    kernel.ensure_chain(Table::Nat, "KUBE-SERVICES").unwrap();
    kernel
        .ensure_rule(Table::Nat, "PREROUTING", &["-j", "KUBE-SERVICES"])
        .unwrap();

    // rekube's options (no nfacct counters exist in the namespace) and upstream's fake
    // configuration otherwise.
    let rekube = |_: &mut _, o: &mut IptablesOptions| *o = IptablesOptions::default();
    let mut fp = FakeProxier::new_with(rekube);
    let mut real = IptablesProxier::new(fp.proxier.config().clone(), IptablesOptions::default());
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
            set_lb_ingress(svc, &[&format!("1.2.3.{}", 4 + i)]);
        }));
        fp.add_slice(make_test_endpoint_slice(&ns, "svc", 1, |eps| {
            eps.endpoints = Some(vec![
                endpoint(&format!("10.0.{i}.1"), Some(TEST_NODE_NAME), None),
                endpoint(&format!("10.0.{i}.2"), None, None),
            ]);
            eps.ports = Some(vec![endpoint_port("p80", 80, "TCP")]);
        }));
    }
    // One without endpoints (REJECT) and one with a Local policy.
    fp.add_service(make_test_service("ns3", "none", |svc| {
        let s = spec(svc);
        s.cluster_ip = Some("172.30.0.43".into());
        s.ports = Some(vec![service_port("p53", 53, "UDP", 0)]);
    }));

    let mut last = crate::proxy::types::ProxySnapshot::default();
    let mut sync = |fp: &mut FakeProxier, real: &mut IptablesProxier| {
        let snapshot = fp.snapshot();
        let updated = last.updated_services(&snapshot);
        let plan = sync_once(
            real,
            &kernel,
            &snapshot,
            &updated,
            std::time::Instant::now(),
        )
        .unwrap_or_else(|e| panic!("iptables-restore refused the sync: {e}"));
        fp.sync_proxy_rules();
        last = snapshot;
        plan
    };

    let plan = sync(&mut fp, &mut real);
    assert!(plan.full_sync);
    assert_same_shape(&kernel, &fp);

    // Partial: a Service added.
    fp.add_service(make_test_service("ns4", "svc", |svc| {
        let s = spec(svc);
        s.cluster_ip = Some("172.30.0.44".into());
        s.ports = Some(vec![service_port("p80", 80, "TCP", 0)]);
    }));
    fp.add_slice(make_test_endpoint_slice("ns4", "svc", 1, |eps| {
        eps.endpoints = Some(vec![endpoint("10.0.4.1", None, None)]);
        eps.ports = Some(vec![endpoint_port("p80", 80, "TCP")]);
    }));
    let plan = sync(&mut fp, &mut real);
    assert!(!plan.full_sync);
    assert_same_shape(&kernel, &fp);

    // Partial: an endpoint replaced (old SEP chain deleted), a Service deleted.
    fp.add_slice(make_test_endpoint_slice("ns4", "svc", 1, |eps| {
        eps.endpoints = Some(vec![endpoint("10.0.4.2", None, None)]);
        eps.ports = Some(vec![endpoint_port("p80", 80, "TCP")]);
    }));
    fp.delete_service("ns2", "svc");
    let plan = sync(&mut fp, &mut real);
    assert!(!plan.full_sync && plan.deleted_chains > 0, "{}", plan.data);
    assert_same_shape(&kernel, &fp);

    // A restarted proxier: a full sync over the existing chains, jump rules not doubled.
    let mut restarted =
        IptablesProxier::new(fp.proxier.config().clone(), IptablesOptions::default());
    let snapshot = fp.snapshot();
    let plan = sync_once(
        &mut restarted,
        &kernel,
        &snapshot,
        &Default::default(),
        std::time::Instant::now(),
    )
    .unwrap();
    assert!(plan.full_sync);
    assert_same_shape(&kernel, &fp);

    // Cleanup, twice: nothing of rekube's left, the foreign chain and jump kept.
    cleanup(&kernel).unwrap();
    cleanup(&kernel).unwrap();
    for table in [Table::Filter, Table::Nat] {
        let save = kernel.save(table).unwrap();
        assert!(!save.contains("REKUBE-"), "{save}");
    }
    let nat = kernel.save(Table::Nat).unwrap();
    assert!(
        nat.contains(":KUBE-SERVICES - [0:0]") && nat.contains("-A PREROUTING -j KUBE-SERVICES"),
        "{nat}"
    );
    // ip6tables cleanup with nothing there succeeds.
    cleanup(&IptablesExec::new(IpFamily::V6, Some(&netns.path()))).unwrap();
}
