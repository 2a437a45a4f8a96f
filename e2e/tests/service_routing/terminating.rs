//! Terminating endpoints across nodes (upstream's "should fallback to terminating
//! endpoints when there are no ready endpoints with internalTrafficPolicy=Cluster" and
//! "should fail health check node port if there are only terminating endpoints"): a
//! LoadBalancer Service's (externalTrafficPolicy Local) only pod, on node c, is deleted
//! with a long grace period and keeps serving while it terminates; the proxy on node a
//! falls back to it while node c's health check node port turns 503, and the proxy
//! leaves it as soon as a ready pod (on node b) exists.

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rekube_crds::{EndpointSlice, Pod};
use rekube_e2e::wait_until;
use serde_json::json;

use super::health_check::health_answer;
use super::{Cluster, T, service, spread};

/// A busybox httpd answering with the pod's name; httpd is PID 1 and ignores SIGTERM, so
/// a deleted pod serves until its grace period ends.
fn server(name: &str, node: &str, grace: i64) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "term"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "web", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]},
    }))
    .unwrap()
}

pub async fn fall_back_to_terminating_endpoints(c: &Cluster<'_>) {
    let (node_a, b, cc) = (&c.nodes[0], &c.agents[1], &c.agents[2]);
    let pp = PostParams::default();
    c.pods
        .create(&pp, &server("term-0", &cc.node_name, 30))
        .await
        .unwrap();
    c.services
        .create(
            &pp,
            &service(
                "term",
                "term",
                json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
            ),
        )
        .await
        .unwrap();
    let vip = super::cluster_addr(&c.services, "term").await;
    let health_port = c
        .services
        .get("term")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.health_check_node_port)
        .expect("a health check node port") as u16;
    let on_c = std::net::SocketAddr::from((c.nodes[2].address, health_port));
    let health = health_answer(node_a, on_c, "/healthz", 200).await;
    assert_eq!(health["localEndpoints"], 1, "{health}");
    wait_until("term-0 answers through the VIP", T, || async {
        let counts = spread(node_a, vip, 5);
        if counts.len() == 1 && counts.contains_key("term-0") {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;

    // Deleted: terminating, still serving (its readiness probe passes).
    c.pods
        .delete("term-0", &DeleteParams::default())
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(c.ns.client.clone(), &c.ns.name);
    let conditions = wait_until("term-0's endpoint terminating and serving", T, || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=term"))
            .await
            .map_err(|e| e.to_string())?;
        let conditions: Vec<_> = list
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter_map(|e| e.conditions.clone())
            .collect();
        match conditions.as_slice() {
            [one] if one.terminating == Some(true) && one.serving == Some(true) => Ok(one.clone()),
            _ => Err(format!("{conditions:?}")),
        }
    })
    .await;
    assert_eq!(
        conditions.ready,
        Some(false),
        "a terminating endpoint is not ready"
    );
    // Only a terminating endpoint on node c: its health check fails, so that a load
    // balancer stops sending new traffic there.
    let health = health_answer(node_a, on_c, "/healthz", 503).await;
    assert_eq!(health["localEndpoints"], 0, "{health}");
    let counts = spread(node_a, vip, 10);
    assert_eq!(
        counts.get("term-0"),
        Some(&10),
        "no ready endpoint: the proxy must fall back to the terminating one: {counts:?}"
    );
    eprintln!("terminating term-0 (serving) still answers through the VIP: {counts:?}");

    // A ready pod on node b: it takes every request.
    c.pods
        .create(&pp, &server("term-1", &b.node_name, 1))
        .await
        .unwrap();
    let counts = wait_until("only the ready term-1 answers", T, || async {
        let counts = spread(node_a, vip, 10);
        if counts.len() == 1 && counts.contains_key("term-1") {
            Ok(counts)
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    eprintln!("with term-1 ready: {counts:?}");

    c.pods
        .delete("term-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    c.pods
        .delete("term-1", &DeleteParams::default())
        .await
        .unwrap();
    c.services
        .delete("term", &DeleteParams::default())
        .await
        .unwrap();
}
