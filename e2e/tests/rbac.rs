//! rekube-controllers works with the least-privilege RBAC its Helm chart grants, and that
//! RBAC grants nothing beyond what the controllers use.
use std::time::Duration;

use kube::api::{Api, PostParams};
use rekube_crds::Deployment;
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::{ControllerProcess, external};
use rekube_e2e::{TestNamespace, rbac, wait_until};
use serde_json::json;

#[tokio::test]
async fn controllers_work_with_the_charts_least_privilege_rbac() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    let ns = TestNamespace::new("rbac").await;
    let name = format!("{}-controllers", ns.name);
    let _rbac = rbac::apply_chart_rbac(&ns, "templates/controllers-rbac.yaml", "controllers");
    let path = rbac::service_account_kubeconfig(&ns, &name);

    // Every controller, the scheduler included: it binds the pods to the node of a hollow
    // agent of the test, which runs them (and, as their status writer, is not under test).
    let agent = AgentProcess::start_hollow_ready(&ns, "n").await;
    let node = agent.node_name.clone();
    let controllers = ControllerProcess::start_with_env(
        &ns.name,
        &["--controllers=*"],
        &[("KUBECONFIG", path.to_str().unwrap())],
    );
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    wait_until(
        "the deployment available under the chart's RBAC",
        Duration::from_secs(90),
        || async {
            let st = deployments
                .get("web")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            if st.available_replicas == Some(2) && st.updated_replicas == Some(2) {
                Ok(())
            } else {
                Err(format!("{st:?}\n{}", controllers.logs()))
            }
        },
    )
    .await;
    let pods: Api<rekube_crds::Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_until(
        "the pods bound by the scheduler",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&Default::default()).await.unwrap().items;
            let bound = list
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                })
                .count();
            if bound == 2 {
                Ok(())
            } else {
                Err(format!("{bound} bound\n{}", controllers.logs()))
            }
        },
    )
    .await;
    let logs = controllers.logs();
    assert!(
        !logs.contains("forbidden"),
        "the controllers hit a permission they lack:\n{logs}"
    );

    // Nothing beyond what the controllers use.
    rbac::assert_can_i(
        &ns,
        &name,
        &[
            ("create", "pods.rekube.io", "yes"),
            ("delete", "replicasets.rekube.io", "yes"),
            ("delete", "deployments.rekube.io", "no"),
            ("create", "deployments.rekube.io", "no"),
            ("list", "secrets", "no"),
            ("create", "pods", "no"),
            ("update", "nodes.rekube.io", "no"),
            ("patch", "nodes.rekube.io", "yes"),
            ("delete", "nodes.rekube.io", "no"),
            ("update", "nodes.rekube.io/status", "yes"),
            ("patch", "pods.rekube.io/status", "yes"),
            ("create", "leases", "no"),
            // The service allocator: IPAddresses, Services' spec and status, no more.
            ("create", "ipaddresses.networking.k8s.io", "yes"),
            ("delete", "ipaddresses.networking.k8s.io", "yes"),
            ("update", "ipaddresses.networking.k8s.io", "no"),
            ("create", "servicecidrs.networking.k8s.io", "no"),
            ("patch", "services.rekube.io", "yes"),
            ("create", "services.rekube.io", "no"),
            ("delete", "services.rekube.io", "no"),
            ("patch", "services.rekube.io/status", "yes"),
            ("create", "services", "no"),
        ],
    );
}
