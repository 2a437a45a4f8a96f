//! The ReplicaSet controller against the real apiserver: upstream's test/e2e/apps/replica_set.go
//! scenarios plus expectations, deletion ranking, availability and terminating pods. The
//! pods run on a hollow rekube-node-agent of the test (bound to its node by the scheduler):
//! their status is the agent's, and a deleted pod stays Terminating, held by the agent's
//! finalizer, until the agent has cleaned it up.
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rekube_crds::{Pod, ReplicaSet};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::readiness::{self, TEST_READY_GATE};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn replica_set(name: &str, replicas: i32, labels: serde_json::Value) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "ReplicaSet", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]}}
        }
    }))
    .unwrap()
}

struct Env {
    ns: TestNamespace,
    rs: Api<ReplicaSet>,
    pods: Api<Pod>,
    controllers: ControllerProcess,
    agent: AgentProcess,
}

async fn env(prefix: &str) -> Env {
    let ns = TestNamespace::new(prefix).await;
    let agent = AgentProcess::start_hollow_ready(&ns, "node").await;
    let controllers =
        ControllerProcess::start(&ns.name, &["--controllers", "scheduler,replicaset"]);
    Env {
        rs: Api::namespaced(ns.client.clone(), &ns.name),
        pods: Api::namespaced(ns.client.clone(), &ns.name),
        ns,
        controllers,
        agent,
    }
}

impl Env {
    async fn create(&self, rs: &ReplicaSet) {
        self.rs.create(&PostParams::default(), rs).await.unwrap();
    }

    async fn pods_of(&self, rs: &str) -> Vec<Pod> {
        let uid = self.rs.get(rs).await.unwrap().metadata.uid;
        self.pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref() && o.controller == Some(true))
            })
            .collect()
    }

    /// The pods of `rs` that are not terminating.
    async fn active_pods_of(&self, rs: &str) -> Vec<Pod> {
        let mut pods = self.pods_of(rs).await;
        pods.retain(|p| !readiness::is_terminating(p));
        pods
    }

    /// Waits until `rs` reports `replicas` pods, all ready and available.
    async fn wait_available(&self, rs: &str, replicas: i32) -> ReplicaSet {
        wait_until(
            &format!("replicaset {rs} with {replicas} available"),
            T,
            || async {
                let r = self.rs.get(rs).await.map_err(|e| e.to_string())?;
                let st = r.status.clone().unwrap_or_default();
                let ok = st.replicas == replicas
                    && st.ready_replicas.unwrap_or(0) == replicas
                    && st.available_replicas.unwrap_or(0) == replicas
                    && st.observed_generation == r.metadata.generation;
                if ok {
                    Ok(r)
                } else {
                    Err(format!("{st:?}\n{}", self.agent.logs()))
                }
            },
        )
        .await
    }
}

/// upstream "should serve a basic image on each replica": pods are created from the
/// template, owned by the ReplicaSet, named after it, and counted in the status.
#[tokio::test]
async fn runs_the_desired_pods_from_the_template() {
    let e = env("rs-basic").await;
    e.create(&replica_set("web", 3, json!({"app": "web"})))
        .await;
    let rs = e.wait_available("web", 3).await;
    let pods = e.pods_of("web").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert!(
            p.name_any().starts_with("web-") && p.name_any().len() == "web-".len() + 5,
            "{}",
            p.name_any()
        );
        assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
        let owner = &p.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.api_version.as_str()),
            ("ReplicaSet", "rekube.io/v1")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert_eq!(Some(&owner.uid), rs.metadata.uid.as_ref());
    }
    let st = rs.status.unwrap();
    assert_eq!(st.fully_labeled_replicas, Some(3));
}

/// A deleted pod is replaced, and the ReplicaSet never runs more than it wants.
#[tokio::test]
async fn replaces_deleted_pods_without_overshooting() {
    let e = env("rs-replace").await;
    e.create(&replica_set("web", 2, json!({"app": "web"})))
        .await;
    e.wait_available("web", 2).await;
    let victim = e.pods_of("web").await.remove(0).name_any();
    e.pods
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    // The victim is Terminating until the agent has cleaned it up; the replacement does
    // not wait for that (upstream counts terminating pods apart, never as replicas).
    wait_until("a replacement pod and the victim gone", T, || async {
        let pods = e.pods_of("web").await;
        if pods.len() == 2 && pods.iter().all(|p| p.name_any() != victim) {
            Ok(())
        } else {
            Err(format!("{}", pods.len()))
        }
    })
    .await;
    e.wait_available("web", 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        e.pods_of("web").await.len(),
        2,
        "no extra pod after a resync"
    );
}

/// A finalizer of the test's own holds deleted pods Terminating (upstream's integration
/// tests of DeploymentReplicaSetTerminatingReplicas do the same): the ReplicaSet replaces
/// them at once, counts them in terminatingReplicas and never as replicas, ready or
/// available, and once they are gone reports none terminating.
#[tokio::test]
async fn terminating_pods_are_replaced_and_counted_apart() {
    const HOLD: &str = "rekube.io/e2e-hold";
    let e = env("rs-terminating").await;
    let mut rs = replica_set("web", 3, json!({"app": "web"}));
    let template = rs.spec.as_mut().unwrap().template.as_mut().unwrap();
    template.metadata.as_mut().unwrap().finalizers = Some(vec![HOLD.into()]);
    e.create(&rs).await;
    e.wait_available("web", 3).await;
    let victims: Vec<String> = e.pods_of("web").await[..2]
        .iter()
        .map(|p| p.name_any())
        .collect();
    for v in &victims {
        e.pods.delete(v, &DeleteParams::default()).await.unwrap();
    }
    // The agent cleans them up and lets go; the test's finalizer keeps them.
    let st = wait_until("2 terminating, 3 replicas", T, || async {
        let r = e.rs.get("web").await.unwrap();
        let st = r.status.clone().unwrap_or_default();
        let held = e.pods_of("web").await;
        let agent_done = held
            .iter()
            .filter(|p| victims.contains(&p.name_any()))
            .all(|p| p.finalizers() == [HOLD.to_string()]);
        let active = e.active_pods_of("web").await;
        if st.terminating_replicas == Some(2)
            && st.replicas == 3
            && st.available_replicas == Some(3)
            && active.len() == 3
            && held.len() == 5
            && agent_done
        {
            Ok(st)
        } else {
            Err(format!(
                "{st:?}, {} pods, agent done {agent_done}",
                held.len()
            ))
        }
    })
    .await;
    assert_eq!(st.ready_replicas, Some(3), "{st:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        e.pods_of("web").await.len(),
        5,
        "no more pods while 2 terminate"
    );
    for v in &victims {
        e.pods
            .patch(
                v,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
    }
    wait_until("none terminating", T, || async {
        let st = e.rs.get("web").await.unwrap().status.unwrap_or_default();
        let n = e.pods_of("web").await.len();
        if st.terminating_replicas.unwrap_or(0) == 0 && n == 3 {
            Ok(())
        } else {
            Err(format!("{st:?}, {n} pods"))
        }
    })
    .await;
    // The survivors keep the test's finalizer: scale to zero and release them, so the
    // namespace can go.
    e.rs.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    wait_until("the pods released", T, || async {
        let pods = e.pods_of("web").await;
        for p in &pods {
            if readiness::is_terminating(p) && p.finalizers() == [HOLD.to_string()] {
                let _ = e
                    .pods
                    .patch(
                        &p.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
                    )
                    .await;
            }
        }
        if pods.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left", pods.len()))
        }
    })
    .await;
}

/// upstream "should adopt matching pods on creation and release no longer matching pods".
#[tokio::test]
async fn adopts_matching_orphans_and_releases_pods_that_stop_matching() {
    let e = env("rs-adopt").await;
    let orphan: Pod = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "pod-adoption-release", "labels": {"name": "pod-adoption-release"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    }))
    .unwrap();
    e.pods
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    // As upstream (CreateSync): the orphan runs before the ReplicaSet exists, so the
    // controller has seen it and adopts it instead of racing it with a new pod.
    wait_until("the orphan running and ready", T, || async {
        let p = e
            .pods
            .get("pod-adoption-release")
            .await
            .map_err(|e| e.to_string())?;
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            Ok(())
        } else {
            Err("not ready".into())
        }
    })
    .await;
    e.create(&replica_set(
        "pod-adoption-release",
        1,
        json!({"name": "pod-adoption-release"}),
    ))
    .await;
    let rs_uid =
        e.rs.get("pod-adoption-release")
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap();
    wait_until("the orphan adopted", T, || async {
        let p = e
            .pods
            .get("pod-adoption-release")
            .await
            .map_err(|e| e.to_string())?;
        match p
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
        {
            Some(o) if o.uid == rs_uid => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    e.wait_available("pod-adoption-release", 1).await;
    assert_eq!(
        e.pods_of("pod-adoption-release").await.len(),
        1,
        "the adopted pod counts; no new pod"
    );

    // Change its labels: released, and replaced.
    let patch = json!({"metadata": {"labels": {"name": "not-matching"}}});
    e.pods
        .patch(
            "pod-adoption-release",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    wait_until("the pod released", T, || async {
        let p = e
            .pods
            .get("pod-adoption-release")
            .await
            .map_err(|e| e.to_string())?;
        if p.owner_references().iter().all(|o| o.uid != rs_uid) {
            Ok(())
        } else {
            Err("still owned".into())
        }
    })
    .await;
    wait_until("a replacement", T, || async {
        let pods = e.pods_of("pod-adoption-release").await;
        if pods.len() == 1 && pods[0].name_any() != "pod-adoption-release" {
            Ok(())
        } else {
            Err(format!("{}", pods.len()))
        }
    })
    .await;
}

/// upstream "Replicaset should have a working scale subresource": update 1→2, patch →4.
#[tokio::test]
async fn scale_subresource_drives_the_pod_count() {
    let e = env("rs-scale").await;
    e.create(&replica_set("web", 1, json!({"app": "web"})))
        .await;
    e.wait_available("web", 1).await;
    let mut scale = e.rs.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
    scale.spec.as_mut().unwrap().replicas = Some(2);
    e.rs.replace_scale("web", &PostParams::default(), &scale)
        .await
        .unwrap();
    e.wait_available("web", 2).await;
    e.rs.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    e.wait_available("web", 4).await;
    e.rs.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    e.wait_available("web", 1).await;
    wait_until("surplus pods deleted", T, || async {
        let n = e.pods_of("web").await.len();
        if n == 1 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
}

/// Scaling down deletes not-ready pods before ready ones (ActivePodsWithRanks). The pods
/// have a readiness gate the test sets: one is turned not ready, as a failing readiness
/// probe would, and the agent reports it so.
#[tokio::test]
async fn scale_down_removes_unready_pods_first() {
    let e = env("rs-rank").await;
    let mut rs = replica_set("web", 3, json!({"app": "web"}));
    let template = rs.spec.as_mut().unwrap().template.as_mut().unwrap();
    template.spec.as_mut().unwrap().readiness_gates =
        serde_json::from_value(readiness::readiness_gates(TEST_READY_GATE)).unwrap();
    e.create(&rs).await;
    wait_until("3 pods running, not ready before their gate", T, || async {
        let pods = e.pods_of("web").await;
        let running = pods
            .iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && !readiness::is_ready(p)
            })
            .count();
        if running == 3 {
            Ok(())
        } else {
            Err(format!("{running}\n{}", e.agent.logs()))
        }
    })
    .await;
    for p in e.pods_of("web").await {
        readiness::set_gate(&e.pods, &p.name_any(), TEST_READY_GATE, true).await;
    }
    e.wait_available("web", 3).await;
    let unready = e.pods_of("web").await.remove(1);
    readiness::set_gate(&e.pods, &unready.name_any(), TEST_READY_GATE, false).await;
    wait_until("the status to count 2 ready", T, || async {
        let st = e.rs.get("web").await.unwrap().status.unwrap_or_default();
        if st.ready_replicas == Some(2) {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    e.rs.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    wait_until("the unready pod deleted", T, || async {
        let pods = e.active_pods_of("web").await;
        if pods.len() == 2 && pods.iter().all(|p| p.name_any() != unready.name_any()) {
            Ok(())
        } else {
            Err(format!("{}", pods.len()))
        }
    })
    .await;
}

/// Availability waits minReadySeconds after readiness.
#[tokio::test]
async fn pods_become_available_after_min_ready_seconds() {
    let e = env("rs-minready").await;
    let mut rs = replica_set("web", 2, json!({"app": "web"}));
    rs.spec.as_mut().unwrap().min_ready_seconds = Some(3);
    e.create(&rs).await;
    wait_until("2 ready, 0 available", T, || async {
        let st = e.rs.get("web").await.unwrap().status.unwrap_or_default();
        if st.ready_replicas == Some(2) && st.available_replicas.unwrap_or(0) == 0 {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    e.wait_available("web", 2).await;
}

/// upstream "should surface a failure condition on a common issue like exceeded quota":
/// ReplicaFailure with FailedCreate, cleared once the ReplicaSet fits.
#[tokio::test]
async fn exceeded_quota_surfaces_replica_failure_until_it_fits() {
    let e = env("rs-quota").await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "condition-test"}, "spec": {"hard": {"count/pods.rekube.io": "2"}}})).unwrap();
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(e.ns.client.clone(), &e.ns.name);
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // kube-controller-manager discovers new resource types every 30 s, then syncs a quota
    // monitor for them: on a fresh cluster this takes a minute or more.
    wait_until(
        "the quota to be counted",
        Duration::from_secs(180),
        || async {
            let q = quotas.get("condition-test").await.unwrap();
            if q.status.and_then(|s| s.hard).is_some() {
                Ok(())
            } else {
                Err("no status".into())
            }
        },
    )
    .await;
    e.create(&replica_set(
        "condition-test",
        3,
        json!({"name": "condition-test"}),
    ))
    .await;
    wait_until("ReplicaFailure True", T, || async {
        let st =
            e.rs.get("condition-test")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
        match st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure")
        {
            Some(c) if c.status == "True" && c.reason.as_deref() == Some("FailedCreate") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    e.rs.patch_scale(
        "condition-test",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    wait_until("ReplicaFailure cleared", T, || async {
        let st =
            e.rs.get("condition-test")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
        if st
            .conditions
            .iter()
            .flatten()
            .all(|c| c.type_ != "ReplicaFailure")
        {
            Ok(())
        } else {
            Err(format!("{:?}", st.conditions))
        }
    })
    .await;
}

/// upstream "Replicaset should validate Replicaset status endpoints": a condition a user
/// adds through /status survives the controller's status updates.
#[tokio::test]
async fn user_status_conditions_persist() {
    let e = env("rs-status").await;
    e.create(&replica_set("web", 1, json!({"app": "web"})))
        .await;
    e.wait_available("web", 1).await;
    let mut rs = e.rs.get("web").await.unwrap();
    let cond = json!({"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from e2e test"});
    let mut st = serde_json::to_value(rs.status.take().unwrap()).unwrap();
    st["conditions"] = json!([cond]);
    e.rs.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": st})),
    )
    .await
    .unwrap();
    // Make the controller write status again: scale.
    e.rs.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let rs = e.wait_available("web", 2).await;
    let conds = rs.status.unwrap().conditions.unwrap_or_default();
    assert!(conds.iter().any(|c| c.type_ == "StatusUpdate" && c.message.as_deref() == Some("Set from e2e test")), "{conds:?}");
}

/// Expectations: a controller killed and restarted while creating never double-creates.
#[tokio::test]
async fn restart_while_creating_never_double_creates() {
    let mut e = env("rs-restart").await;
    e.create(&replica_set("web", 30, json!({"app": "web"})))
        .await;
    wait_until("some pods created", T, || async {
        let n = e.pods_of("web").await.len();
        if n >= 3 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
    e.controllers.kill();
    e.controllers.restart();
    e.wait_available("web", 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        e.pods_of("web").await.len(),
        30,
        "exactly the desired pods after a kill -9 and restart"
    );
    let logs = e.controllers.logs();
    assert!(logs.contains("acquired lease"), "{logs}");
}

/// [Conformance] Replicaset should list and delete a collection of ReplicaSets; the garbage
/// collector then removes their pods.
#[tokio::test]
async fn list_and_delete_collection() {
    let e = env("rs-collection").await;
    for name in ["one", "two"] {
        let mut rs = replica_set(name, 1, json!({"app": name}));
        rs.labels_mut().insert("e2e".into(), "collection".into());
        e.create(&rs).await;
        e.wait_available(name, 1).await;
    }
    let lp = ListParams::default().labels("e2e=collection");
    assert_eq!(e.rs.list(&lp).await.unwrap().items.len(), 2);
    e.rs.delete_collection(&DeleteParams::background(), &lp)
        .await
        .unwrap();
    wait_until("replica sets and pods gone", T, || async {
        let rss = e.rs.list(&ListParams::default()).await.unwrap().items.len();
        let pods = e
            .pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        if rss + pods == 0 {
            Ok(())
        } else {
            Err(format!("{rss} {pods}"))
        }
    })
    .await;
}
