//! The controller manager's shell under restarts and a hung apiserver: controllers never
//! sync before their caches are complete (no pod created or deleted by a restart), and a
//! leader that can no longer renew its lease stops acting before a standby takes over.
//! The pods run on a real rekube-node-agent in hollow mode (scale without containers).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use rekube_crds::{Deployment, Pod};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::stall_proxy::StallProxy;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(240);

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
        }
    }))
    .unwrap()
}

/// The timestamp of the first log line containing `needle` (tracing's text format: the
/// RFC 3339 time first, possibly wrapped in colour codes).
fn log_time(logs: &str, needle: &str) -> Option<jiff::Timestamp> {
    let line = logs.lines().find(|l| l.contains(needle))?;
    // Each colour code is ESC [ digits m: drop what follows each ESC up to its `m`.
    let plain: String = line
        .split('\u{1b}')
        .enumerate()
        .map(|(i, part)| match (i, part.split_once('m')) {
            (0, _) | (_, None) => part,
            (_, Some((_, rest))) => rest,
        })
        .collect();
    plain.split_whitespace().next()?.parse().ok()
}

/// The sum of a counter's samples whose labels contain `labels`.
fn counter(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Seen three times out of three before the controllers waited for their caches: a
/// graceful restart (the lease released, the new process leading at once, as on every
/// `helm upgrade`) beside running Deployments created extra pods, because a ReplicaSet
/// was synced against a pod cache still being listed. With 500 pods present, a restart
/// creates and deletes none.
#[tokio::test]
async fn a_graceful_restart_beside_500_pods_creates_and_deletes_none() {
    let ns = TestNamespace::new("mgr-restart").await;
    let agent = AgentProcess::start(&ns, "hollow", &["--hollow", "--max-pods", "600"]);
    let mut controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers",
            "deployment-controller,replicaset-controller,scheduler",
            "--kube-api-qps",
            "200",
            "--kube-api-burst",
            "300",
            "--scheduler-api-qps",
            "200",
            "--scheduler-api-burst",
            "300",
        ],
    );
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let names: Vec<String> = (0..5).map(|i| format!("web-{i}")).collect();
    for name in &names {
        deployments
            .create(&PostParams::default(), &deployment(name, 100))
            .await
            .unwrap();
    }
    wait_until("5 deployments of 100 available pods", T, || async {
        let mut available = 0;
        for name in &names {
            let d = deployments.get(name).await.map_err(|e| e.to_string())?;
            available += d
                .status
                .and_then(|s| s.available_replicas)
                .unwrap_or_default();
        }
        if available == 500 {
            Ok(())
        } else {
            Err(format!("{available} available\n{}", agent.logs()))
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 500);

    // Every pod addition and deletion from here on.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let rv = list.metadata.resource_version.unwrap();
    let watch = {
        let (pods, seen) = (pods.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut stream = pods
                .watch(&WatchParams::default(), &rv)
                .await
                .unwrap()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(p)) => seen
                        .lock()
                        .unwrap()
                        .push(format!("added {}", p.metadata.name.unwrap_or_default())),
                    Ok(WatchEvent::Deleted(p)) => seen
                        .lock()
                        .unwrap()
                        .push(format!("deleted {}", p.metadata.name.unwrap_or_default())),
                    Ok(WatchEvent::Error(e)) => {
                        seen.lock().unwrap().push(format!("watch error {e:?}"))
                    }
                    _ => {}
                }
            }
        })
    };

    controllers.restart_gracefully();
    // The new process has synced every ReplicaSet and Deployment at least once (each is
    // synced after its caches are), and then had time for the creations it would make.
    let metrics = wait_until(
        "every ReplicaSet and Deployment synced again",
        T,
        || async {
            let m = controllers.metrics().ok_or("no metrics yet")?;
            let rs = counter(&m, "rekube_controller_syncs_total", "replicaset-controller");
            let d = counter(&m, "rekube_controller_syncs_total", "deployment-controller");
            if rs >= 5 && d >= 5 {
                Ok(m)
            } else {
                Err(format!("{rs} replicaset and {d} deployment syncs"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    watch.abort();
    let logs = controllers.logs();
    assert!(
        logs.matches("caches are synced").count() >= 4,
        "each run's controllers waited for their caches:\n{logs}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        Vec::<String>::new(),
        "pods created or deleted by the restart"
    );
    assert_eq!(
        counter(
            &metrics,
            "rekube_rest_client_requests_total",
            "verb=\"create\""
        ),
        0,
        "the new process issued creations: {metrics}"
    );
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        500
    );
}

/// A leader whose apiserver connection hangs (no error, no reset: a proxy that stops
/// forwarding) gives up within its renew deadline and exits, before the standby's lease
/// duration lets it take over: two leaders never act at once. The standby then does the
/// work.
#[tokio::test]
async fn a_leader_behind_a_hung_apiserver_steps_down_before_a_standby_takes_over() {
    let ns = TestNamespace::new("mgr-hung").await;
    let proxy = StallProxy::start(StallProxy::apiserver_address()).await;
    let kubeconfig = proxy.kubeconfig(&ns.name);
    let flags = [
        "--controllers",
        "deployment-controller,replicaset-controller",
    ];
    // The leader's timings are short (lease 4 s, renew deadline 3 s, retry 0.5 s) so the
    // test is quick; the standby takes over once the lease duration the leader wrote into
    // the Lease has passed since the last renewal it saw.
    let leader_flags = [
        &flags[..],
        &[
            "--leader-elect-lease-duration",
            "4s",
            "--leader-elect-renew-deadline",
            "3s",
            "--leader-elect-retry-period",
            "500ms",
        ][..],
    ]
    .concat();
    let mut leader = ControllerProcess::start_with_env(
        &ns.name,
        &leader_flags,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    wait_until("the proxied process leads", T, || async {
        leader
            .logs()
            .contains("acquired lease")
            .then_some(())
            .ok_or(leader.logs())
    })
    .await;
    let standby = ControllerProcess::start(&ns.name, &flags);
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let count_pods = || async {
        pods.list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .map_err(|e| e.to_string())
    };
    wait_until("the leader creates 2 pods", T, || async {
        let n = count_pods().await?;
        if n == 2 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity);
    let leading = holder(leases.get("rekube-controllers").await.unwrap());
    assert!(leading.is_some());

    // The order of events is read from the two processes' own log timestamps (wall
    // clock, as the stall time), not from this test's polling, which a busy apiserver
    // slows down.
    let stalled = jiff::Timestamp::now();
    proxy.stall();
    let deadline = std::time::Instant::now() + T;
    let (lost, acquired) = loop {
        let lost = log_time(&leader.logs(), "leader election lost");
        let acquired = log_time(&standby.logs(), "acquired lease");
        if let (Some(l), Some(a), Some(_)) = (lost, acquired, leader.exited()) {
            break (l, a);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leader did not exit or the standby did not lead: {lost:?} {acquired:?}\nleader:\n{}\nstandby:\n{}",
            leader.logs(),
            standby.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stepped_down = lost.duration_since(stalled);
    // Renew deadline 3 s after the last renewal (at most a retry period before the stall).
    assert!(
        stepped_down < jiff::SignedDuration::from_secs(5),
        "stepped down {stepped_down:?} after the stall"
    );
    assert!(
        lost < acquired,
        "the deposed leader stopped at {lost}, after the standby took over at {acquired}"
    );
    let status = leader.exited().unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(
        holder(leases.get("rekube-controllers").await.unwrap())
            .is_some_and(|h| Some(&h) != leading.as_ref()),
        "the standby holds the lease"
    );
    // The standby leads and acts.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_until("the standby creates the third pod", T, || async {
        let n = count_pods().await?;
        if n == 3 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
    assert!(standby.logs().contains("acquired lease"));
    drop(standby);
}

#[test]
fn log_times_are_read_with_or_without_colour_codes() {
    let t: jiff::Timestamp = "2026-12-04T23:03:57.792686Z".parse().unwrap();
    let coloured = "\u{1b}[2m2026-12-04T23:03:57.792686Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m rekube_controllers: rekube-controllers stopped error=leader election lost";
    let plain =
        "2026-12-04T23:03:57.792686Z  INFO rekube_controllers::manager::leader: acquired lease";
    assert_eq!(log_time(coloured, "leader election lost"), Some(t));
    assert_eq!(log_time(plain, "acquired lease"), Some(t));
    assert_eq!(log_time(plain, "absent"), None);
}
