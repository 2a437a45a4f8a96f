//! UDP through a ClusterIP across nodes, and the conntrack entries of a removed UDP
//! endpoint flushed (upstream's "should be able to preserve UDP traffic when server pod
//! cycles for a ClusterIP service"): udp-echo pods on nodes b and c, the clients on
//! node a.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::{Endpoints, Pod, Service};
use rekube_e2e::agent::build_udp_echo_image;
use rekube_e2e::wait_until;
use serde_json::json;

use super::{Cluster, T, ready_endpoints};

/// Sends one datagram on `socket` to `addr`: the answering pod's name, if an answer
/// comes within `timeout`.
fn ask(socket: &UdpSocket, addr: SocketAddr, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    // Answers to earlier, timed-out questions may still be queued: skip them.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let question = format!("q{}", NEXT.fetch_add(1, Ordering::Relaxed));
    socket.send_to(question.as_bytes(), addr).ok()?;
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let n = socket.recv(&mut buf).ok()?;
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        if let Some((pod, echoed)) = answer.split_once(' ')
            && echoed == question
        {
            return Some(pod.to_string());
        }
    }
    None
}

pub async fn udp_across_nodes(c: &Cluster<'_>) {
    let (node_a, b, cc) = (&c.nodes[0], &c.agents[1], &c.agents[2]);
    let archive = std::env::temp_dir().join(format!("rekube-udp-echo-{}.tar", std::process::id()));
    build_udp_echo_image(&archive).unwrap();
    for agent in [b, cc] {
        agent.import_image(&archive).unwrap();
    }
    let _ = std::fs::remove_file(&archive);
    let pp = PostParams::default();
    for (name, agent) in [("udp-b", b), ("udp-c", cc)] {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "udp"}},
            "spec": {"nodeName": agent.node_name, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "echo", "image": "udp-echo:1", "imagePullPolicy": "Never",
                    "command": ["udp-echo", "9000"],
                    "ports": [{"name": "echo", "containerPort": 9000, "protocol": "UDP"}]}]},
        }))
        .unwrap();
        c.pods.create(&pp, &pod).await.unwrap();
    }
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Service",
        "metadata": {"name": "udp"},
        "spec": {"selector": {"app": "udp"},
            "ports": [{"name": "echo", "port": 53, "targetPort": "echo", "protocol": "UDP"}]},
    }))
    .unwrap();
    c.services.create(&pp, &svc).await.unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(c.ns.client.clone(), &c.ns.name);
    wait_until("two ready UDP endpoints", T, || async {
        let ready = ready_endpoints(&endpoints, "udp").await;
        if ready.len() == 2 {
            Ok(())
        } else {
            Err(format!("{ready:?}"))
        }
    })
    .await;
    let vip = super::cluster_addr(&c.services, "udp").await;
    let vip = SocketAddr::from((vip.ip(), 53));

    // Each question from a new socket (a new conntrack entry): both pods answer.
    let counts = wait_until("both UDP backends answer through the VIP", T, || async {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..20 {
            let answer = ask(&node_a.udp_socket(), vip, Duration::from_millis(500))
                .unwrap_or_else(|| "no answer".into());
            *counts.entry(answer).or_default() += 1;
        }
        // Every question answered: none lost on the way (a question sent just as a pod
        // starts, before it binds its port, is; the next round is clean).
        if counts.len() == 2
            && ["udp-b", "udp-c"]
                .iter()
                .all(|p| counts.get(*p).is_some_and(|n| *n >= 3))
        {
            Ok(counts)
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    eprintln!("20 UDP questions from node a to {vip}: {counts:?}");

    // One socket (one conntrack entry) keeps asking while the pod that answers it goes:
    // its entry must be flushed, or the questions follow it to the dead pod for the
    // entry's lifetime (120 s once assured).
    let socket = node_a.udp_socket();
    let first = wait_until("the fixed socket answered", T, || async {
        ask(&socket, vip, Duration::from_millis(500)).ok_or("no answer".to_string())
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            ask(&socket, vip, Duration::from_secs(1)).as_deref(),
            Some(first.as_str()),
            "one conntrack entry, one backend"
        );
    }
    let deleted = Instant::now();
    c.pods
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    let other = if first == "udp-b" { "udp-c" } else { "udp-b" };
    let moved_after = loop {
        if let Some(answer) = ask(&socket, vip, Duration::from_millis(300))
            && answer == other
        {
            break deleted.elapsed();
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(20),
            "the socket's questions still went to the deleted {first} after 20 s: its conntrack entry was not flushed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("UDP: {first} deleted; the same socket answered by {other} after {moved_after:?}");

    c.pods
        .delete(other, &DeleteParams::default())
        .await
        .unwrap();
    c.services
        .delete("udp", &DeleteParams::default())
        .await
        .unwrap();
}
