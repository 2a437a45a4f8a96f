//! Scale check (ignored; a measurement, not a benchmark), the iptables twin of
//! `nftables::scale_test`: the time to compute a full sync of `REKUBE_SCALE_SERVICES`
//! (default 2 000) ClusterIP Service ports × 10 endpoints and a partial sync after one
//! endpoint change, and with root and Debian's iptables, the time `iptables-restore`
//! takes to apply them in a network namespace of the test's own. `cargo test --release -p
//! rekube-node-agent --lib proxy::iptables::scale_test -- --ignored --nocapture`.

use std::collections::BTreeSet;
use std::process::Command;

use super::proxier::{IptablesOptions, IptablesProxier};
use crate::proxy::netns_test::print_apply_times;
use crate::proxy::nftables::config::{LocalDetector, ProxierConfig};
use crate::proxy::nftables::scale_test::{snapshot, thread_cpu_time};
use crate::proxy::types::IpFamily;

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn iptables_sync_at_scale() {
    let services: u32 = std::env::var("REKUBE_SCALE_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let mut config = ProxierConfig::new(IpFamily::V4, "node");
    config.local_detector = LocalDetector::ByCidr("10.0.0.0/8".parse().unwrap());
    let mut proxier = IptablesProxier::new(config, IptablesOptions::default());
    let mut snap = snapshot(services, 10);

    let t = thread_cpu_time();
    let full = proxier.sync_proxy_rules(&snap, &BTreeSet::new(), None);
    let full_compute = thread_cpu_time() - t;
    proxier.sync_succeeded();

    let changed = snap
        .service_ports
        .keys()
        .nth(services as usize / 2)
        .unwrap()
        .clone();
    let before = snap.clone();
    snap.endpoints.get_mut(&changed).unwrap()[0].ip = "10.255.0.1".parse().unwrap();
    let updated = before.updated_services(&snap);
    let t = thread_cpu_time();
    let partial = proxier.sync_proxy_rules(&snap, &updated, None);
    let partial_compute = thread_cpu_time() - t;
    eprintln!(
        "full sync: {} lines, {} KiB, computed in {full_compute:?} of CPU; partial sync (one endpoint changed): {} lines, computed in {partial_compute:?} of CPU",
        full.data.lines().count(),
        full.data.len() / 1024,
        partial.data.lines().count(),
    );

    if Command::new("iptables-restore")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no iptables-restore: kernel apply times not measured");
        return;
    }
    print_apply_times(
        "iptables-restore -w 5 --noflush --counters <",
        &full.data,
        &partial.data,
    );
}
