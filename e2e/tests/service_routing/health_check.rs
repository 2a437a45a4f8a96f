//! Health check node ports and the proxy's /healthz (the health check node port part of
//! upstream's LoadBalancer tests, which need a cloud load balancer, and "should check
//! kube-proxy urls"): a LoadBalancer Service with externalTrafficPolicy Local over the
//! web backends (on nodes b and c, none on a).

use std::net::SocketAddr;
use std::time::Duration;

use rekube_e2e::netns::NodeNetns;
use rekube_e2e::wait_until;
use serde_json::json;

use kube::api::PostParams;

use super::{Cluster, T, service};

/// GET `http://addr/` from `from` until it answers `status`: the body, as JSON.
pub async fn health_answer(
    from: &NodeNetns,
    addr: SocketAddr,
    path: &str,
    status: u16,
) -> serde_json::Value {
    wait_until(&format!("{addr}{path} answers {status}"), T, || async {
        match from.http_request(addr, path, Duration::from_secs(2)) {
            Ok((got, head, body)) if got == status => {
                serde_json::from_str(&body).map_err(|e| format!("{head}\r\n\r\n{body}: {e}"))
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Creates the Service; checks each node's health check node port and /healthz; returns
/// the health check node port.
pub async fn health_check_node_ports(c: &Cluster<'_>) -> u16 {
    let (node_a, node_b) = (&c.nodes[0], &c.nodes[1]);
    c.services
        .create(
            &PostParams::default(),
            &service(
                "lb-local",
                "web",
                json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
            ),
        )
        .await
        .unwrap();
    let port = wait_until("the lb-local health check node port", T, || async {
        c.services
            .get("lb-local")
            .await
            .ok()
            .and_then(|s| s.spec?.health_check_node_port)
            .ok_or_else(|| "none yet".to_string())
    })
    .await as u16;
    // Node b has one ready backend: 200.
    let on_b = health_answer(node_a, SocketAddr::from((node_b.address, port)), "/", 200).await;
    assert_eq!(
        on_b,
        json!({"service": {"namespace": c.ns.name, "name": "lb-local"},
            "localEndpoints": 1, "serviceProxyHealthy": true})
    );
    // Node a has none: 503, so that a load balancer leaves it out.
    let on_a = health_answer(node_b, SocketAddr::from((node_a.address, port)), "/", 503).await;
    assert_eq!(on_a["localEndpoints"], 0, "{on_a}");
    eprintln!("health check node port {port}: node b {on_b}, node a {on_a}");
    // kube-proxy's /healthz on every node.
    for node in c.nodes {
        let health = health_answer(
            node_a,
            SocketAddr::from((node.address, 10256)),
            "/healthz",
            200,
        )
        .await;
        assert_eq!(health["nodeEligible"], true, "{health}");
        assert_eq!(health["healthy"], true, "{health}");
        assert!(health["lastUpdated"].is_string(), "{health}");
    }
    port
}
