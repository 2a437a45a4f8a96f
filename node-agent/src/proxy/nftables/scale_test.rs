//! Scale check (ignored; a measurement, not a benchmark): the time to compute a full sync
//! of 10 000 Services × 10 endpoints, and a partial sync after one endpoint change, and
//! with root and `nft`, the time the real kernel takes to apply them in a network
//! namespace of the test's own. `cargo test --release -p rekube-node-agent --lib
//! proxy::nftables::scale_test -- --ignored --nocapture`; `REKUBE_SCALE_SERVICES=20000`
//! for another count.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Instant;

use super::proxier::{ExistingObjects, LocalDetector, NftablesProxier, ProxierConfig};
use crate::proxy::netns_test::print_apply_times;
use crate::proxy::types::{
    EndpointInfo, IpFamily, Protocol, ProxySnapshot, ServicePortInfo, ServicePortName,
};

/// CPU time of this thread (wall time means little on a shared machine).
pub(crate) fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub(crate) fn snapshot(services: u32, endpoints: u32) -> ProxySnapshot {
    let mut snapshot = ProxySnapshot::default();
    for s in 0..services {
        let name = ServicePortName::new("ns", &format!("svc-{s}"), "http", Protocol::Tcp);
        let ip = IpAddr::V4(Ipv4Addr::from(0xac1e_0000 + s)); // 172.30.x.y
        snapshot.service_ports.insert(
            name.clone(),
            ServicePortInfo::cluster_ip(ip, 80, Protocol::Tcp),
        );
        let eps = (0..endpoints)
            .map(|e| {
                EndpointInfo::ready(
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + s * endpoints + e)),
                    8080,
                    false,
                )
            })
            .collect();
        snapshot.endpoints.insert(name, eps);
    }
    snapshot
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn sync_at_ten_thousand_services() {
    let mut config = ProxierConfig::new(IpFamily::V4, "node");
    config.local_detector = LocalDetector::ByCidr("10.0.0.0/8".parse().unwrap());
    config.service_cidrs = vec!["172.30.0.0/16".parse().unwrap()];
    let mut proxier = NftablesProxier::new(config);
    // REKUBE_SCALE_SERVICES: another count of Services (one port each).
    let services: u32 = std::env::var("REKUBE_SCALE_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let mut snap = snapshot(services, 10);
    let now = Instant::now();

    let t = thread_cpu_time();
    let full = proxier.sync_proxy_rules(
        &snap,
        &BTreeSet::new(),
        Some(&ExistingObjects::default()),
        now,
    );
    let full_text = full.transaction.nft_input();
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
    // REKUBE_SCALE_PARTIALS: repeat the partial sync first (for a profiler).
    for _ in 0..std::env::var("REKUBE_SCALE_PARTIALS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0)
    {
        proxier.sync_proxy_rules(&snap, &updated, None, now);
    }
    let t = thread_cpu_time();
    let partial = proxier.sync_proxy_rules(&snap, &updated, None, now);
    let partial_text = partial.transaction.nft_input();
    let partial_compute = thread_cpu_time() - t;

    eprintln!(
        "full sync: {} operations, {} KiB, computed in {full_compute:?} of CPU; partial sync (one endpoint changed): {} operations, computed in {partial_compute:?} of CPU",
        full.transaction.num_operations(),
        full_text.len() / 1024,
        partial.transaction.num_operations()
    );

    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("no nft: kernel apply times not measured");
        return;
    }
    if let Ok(keep) = std::env::var("KEEP_NFT") {
        std::fs::write(
            format!("{keep}/full-plain.nft"),
            full.transaction.to_string(),
        )
        .unwrap();
        std::fs::write(format!("{keep}/full-block.nft"), &full_text).unwrap();
        return;
    }
    print_apply_times("nft -f", &full_text, &partial_text);
}
