//! The pod garbage collector (upstream's podgc; test/integration/podgc and the unit
//! tests' scenarios):
//! pods bound to a Node that no longer exists are marked Failed with DisruptionTarget and
//! force-deleted (the dead node's agent finalizer taken off), terminated pods above the
//! threshold are deleted oldest first, and terminating pods bound to no node go.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use rekube_crds::{NODE_AGENT_FINALIZER, Node, Pod};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(90);
/// The collector's pass every second and a two-second quarantine (upstream's integration
/// tests shorten them the same way).
const FAST: [&str; 4] = [
    "--pod-gc-check-period",
    "1s",
    "--pod-gc-quarantine-time",
    "2s",
];

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    let mut base = json!({"containers": [{"name": "c", "image": "busybox:1.36"}]});
    base.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": name}, "spec": base,
    }))
    .unwrap()
}

fn phase(p: &Pod) -> Option<String> {
    p.status.as_ref().and_then(|s| s.phase.clone())
}

/// upstream TestPodGcOrphanedPodsWithFinalizer: a pod running on a hollow node agent whose
/// machine died (the agent killed, so its
/// finalizer stays) and whose Node was then deleted: after the quarantine the collector
/// marks it Failed with DisruptionTarget (DeletionByPodGC) and removes it.
#[tokio::test]
async fn pods_of_a_deleted_node_are_failed_and_force_deleted() {
    let ns = TestNamespace::new("podgc-orphan").await;
    let mut agent = AgentProcess::start(&ns, "doomed", &["--hollow"]);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &pod("web", json!({"nodeName": agent.node_name})),
    )
    .await
    .unwrap();
    wait_until("the hollow agent runs the pod", T, || async {
        let p = pods.get("web").await.map_err(|e| e.to_string())?;
        let held = p.finalizers().iter().any(|f| f == NODE_AGENT_FINALIZER);
        (held && phase(&p).as_deref() == Some("Running"))
            .then_some(())
            .ok_or(format!("{:?}\n{}", p.status, agent.logs()))
    })
    .await;
    agent.kill();
    let seen: Arc<Mutex<Vec<Pod>>> = Arc::default();
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let watch = {
        let (pods, seen) = (pods.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut s = pods
                .watch(&WatchParams::default(), &rv)
                .await
                .unwrap()
                .boxed();
            while let Some(Ok(e)) = s.next().await {
                if let WatchEvent::Modified(p) | WatchEvent::Deleted(p) = e {
                    seen.lock().unwrap().push(p);
                }
            }
        })
    };
    let _gc = ControllerProcess::start(
        &ns.name,
        &[
            &["--controllers", "pod-garbage-collector-controller"][..],
            &FAST[..],
        ]
        .concat(),
    );
    // Still there while its node exists.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(pods.get_opt("web").await.unwrap().is_some());
    Api::<Node>::all(ns.client.clone())
        .delete(&agent.node_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the orphaned pod deleted", T, || async {
        match pods.get_opt("web").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("{:?} {:?}", p.metadata.finalizers, p.status)),
        }
    })
    .await;
    watch.abort();
    let seen = seen.lock().unwrap();
    let failed = seen
        .iter()
        .find(|p| phase(p).as_deref() == Some("Failed"))
        .expect("the pod was marked Failed before its deletion");
    let condition = failed
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"))
        .expect("a DisruptionTarget condition");
    assert_eq!(
        (
            condition.status.as_str(),
            condition.reason.as_deref(),
            condition.message.as_deref()
        ),
        (
            "True",
            Some("DeletionByPodGC"),
            Some("PodGC: node no longer exists")
        )
    );
}

/// upstream TestGCTerminated against the real apiserver: with
/// `--terminated-pod-gc-threshold 2`, of four terminated pods the two oldest go; running
/// and pending pods are never counted.
#[tokio::test]
async fn terminated_pods_above_the_threshold_are_deleted_oldest_first() {
    let ns = TestNamespace::new("podgc-threshold").await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    // Creation times a second apart: the order the collector goes by.
    for (name, status) in [
        ("t1", "Succeeded"),
        ("running", "Running"),
        ("t2", "Failed"),
        ("t3", "Succeeded"),
        ("t4", "Failed"),
        ("pending", ""),
    ] {
        pods.create(&PostParams::default(), &pod(name, json!({})))
            .await
            .unwrap();
        if !status.is_empty() {
            pods.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": status}})),
            )
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let _gc = ControllerProcess::start(
        &ns.name,
        &[
            &["--controllers", "pod-garbage-collector-controller"][..],
            &["--terminated-pod-gc-threshold", "2"][..],
            &FAST[..],
        ]
        .concat(),
    );
    let names = || async {
        let mut n: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect();
        n.sort();
        n
    };
    wait_until("the two oldest terminated pods deleted", T, || async {
        let n = names().await;
        if n.len() == 4 {
            Ok(())
        } else {
            Err(format!("{n:?}"))
        }
    })
    .await;
    // A few more passes change nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(names().await, vec!["pending", "running", "t3", "t4"]);
}

/// upstream TestGCUnscheduledTerminating against the real apiserver: a terminating pod bound to no node has no agent to finish it; the collector takes the
/// agent's finalizer off (and only that one) and force-deletes it.
#[tokio::test]
async fn unscheduled_terminating_pods_lose_only_the_agents_finalizer() {
    let ns = TestNamespace::new("podgc-unscheduled").await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    for (name, finalizers) in [
        ("agent-only", json!([NODE_AGENT_FINALIZER])),
        (
            "also-kept",
            json!([NODE_AGENT_FINALIZER, "example.com/keep"]),
        ),
    ] {
        let mut p = pod(name, json!({}));
        p.metadata.finalizers = serde_json::from_value(finalizers).unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let _gc = ControllerProcess::start(
        &ns.name,
        &[
            &["--controllers", "pod-garbage-collector-controller"][..],
            &FAST[..],
        ]
        .concat(),
    );
    wait_until("the agent's finalizer removed from both", T, || async {
        let gone = pods
            .get_opt("agent-only")
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        let kept = pods.get("also-kept").await.map_err(|e| e.to_string())?;
        let finalizers = kept.metadata.finalizers.clone().unwrap_or_default();
        (gone && finalizers == vec!["example.com/keep".to_string()])
            .then_some(())
            .ok_or(format!(
                "agent-only gone: {gone}; also-kept: {finalizers:?}"
            ))
    })
    .await;
    // Let the test namespace go.
    pods.patch(
        "also-kept",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}
