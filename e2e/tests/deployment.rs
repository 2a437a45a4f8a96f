//! The Deployment controller against the real apiserver: upstream's test/e2e/apps/deployment.go
//! and test/integration/deployment scenarios. The pods run on a hollow rekube-node-agent of
//! the test (bound to its node by the scheduler, which runs with the other controllers):
//! their status is the agent's, a deleted pod stays Terminating until the agent has
//! cleaned it up, and rollouts that must not finish use a readiness gate no one sets
//! ([`NEVER_READY_GATE`]).
use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rekube_crds::{Deployment, Pod, ReplicaSet};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::readiness::{self, NEVER_READY_GATE};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);
const REVISION: &str = "deployment.kubernetes.io/revision";

fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "web", "image": image}]}}
        }
    }))
    .unwrap()
}

/// [`deployment`] whose pods run and never become ready.
fn never_ready_deployment(name: &str, replicas: i32, strategy: Value) -> Deployment {
    let mut d = deployment(name, replicas, "busybox:1.36", strategy);
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .readiness_gates =
        serde_json::from_value(readiness::readiness_gates(NEVER_READY_GATE)).unwrap();
    d
}

/// All controllers, the scheduler included (it binds the pods to the test's agent).
const CONTROLLERS: [&str; 2] = ["--controllers", "*"];

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

struct Env {
    ns: TestNamespace,
    d: Api<Deployment>,
    rs: Api<ReplicaSet>,
    pods: Api<Pod>,
    controllers: ControllerProcess,
    agent: AgentProcess,
}

async fn env(prefix: &str) -> Env {
    let ns = TestNamespace::new(prefix).await;
    let agent = AgentProcess::start_hollow_ready(&ns, "node").await;
    env_with(ns, agent)
}

fn env_with(ns: TestNamespace, agent: AgentProcess) -> Env {
    let controllers = ControllerProcess::start(&ns.name, &CONTROLLERS);
    Env {
        d: Api::namespaced(ns.client.clone(), &ns.name),
        rs: Api::namespaced(ns.client.clone(), &ns.name),
        pods: Api::namespaced(ns.client.clone(), &ns.name),
        ns,
        controllers,
        agent,
    }
}

impl Env {
    async fn create(&self, d: &Deployment) {
        self.d.create(&PostParams::default(), d).await.unwrap();
    }

    /// Creates `d` and waits until its rollout completes.
    async fn create_complete(&self, d: &Deployment) -> Deployment {
        self.create(d).await;
        self.wait_complete(&d.metadata.name.clone().unwrap()).await
    }

    async fn replica_sets_of(&self, d: &str) -> Vec<ReplicaSet> {
        let uid = self.d.get(d).await.unwrap().metadata.uid;
        let mut rss: Vec<ReplicaSet> = self
            .rs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|r| {
                r.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref() && o.controller == Some(true))
            })
            .collect();
        rss.sort_by_key(revision);
        rss
    }

    /// Waits for a complete rollout: observed, all replicas updated, available, none old.
    async fn wait_complete(&self, name: &str) -> Deployment {
        wait_until(&format!("deployment {name} complete"), T, || async {
            let d = self.d.get(name).await.map_err(|e| e.to_string())?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            let progressing = st
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Progressing");
            let ok = st.observed_generation == d.metadata.generation
                && st.updated_replicas == Some(want)
                && st.replicas == Some(want)
                && st.available_replicas == Some(want)
                && progressing
                    .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
            if ok {
                Ok(d)
            } else {
                Err(format!("{st:?}\n{}", self.agent.logs()))
            }
        })
        .await
    }

    /// A new template: `image`, and pods that get ready (no readiness gate).
    async fn set_image(&self, name: &str, image: &str) {
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "web", "image": image}],
            "readinessGates": null,
        }}}});
        self.d
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// A new template whose pods run and never become ready: a rollout that cannot finish.
    async fn set_never_ready(&self, name: &str) {
        let patch = json!({"spec": {"template": {"spec": {
            "readinessGates": readiness::readiness_gates(NEVER_READY_GATE),
        }}}});
        self.d
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn events(&self) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.ns.client.clone(), &self.ns.name);
        let mut evs: Vec<_> = api.list(&ListParams::default()).await.unwrap().items;
        evs.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        evs.into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// integration NewDeployment: the new RS carries the hash in its name, label, selector and
/// template; annotations are copied except last-applied-configuration; revision 1; events.
#[tokio::test]
async fn new_deployment_creates_a_hashed_replica_set() {
    let e = env("d-new").await;
    let mut d = deployment(
        "web",
        3,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    );
    d.annotations_mut()
        .insert("test".into(), "should-copy-to-replica-set".into());
    d.annotations_mut().insert(
        "kubectl.kubernetes.io/last-applied-configuration".into(),
        "should-not-copy".into(),
    );
    e.create(&d).await;
    let d = e.wait_complete("web").await;
    let rss = e.replica_sets_of("web").await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    let spec = rs.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector
            .match_labels
            .as_ref()
            .unwrap()
            .get("pod-template-hash"),
        Some(&hash)
    );
    assert_eq!(
        spec.template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()
            .get("pod-template-hash"),
        Some(&hash)
    );
    assert_eq!(
        rs.annotations().get("test").map(String::as_str),
        Some("should-copy-to-replica-set")
    );
    assert!(
        !rs.annotations()
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );
    assert_eq!(
        rs.annotations().get(REVISION).map(String::as_str),
        Some("1")
    );
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("1"));
    assert_eq!(
        rs.annotations()
            .get("deployment.kubernetes.io/desired-replicas")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        rs.annotations()
            .get("deployment.kubernetes.io/max-replicas")
            .map(String::as_str),
        Some("4")
    );
    let available = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("True", Some("MinimumReplicasAvailable"))
    );
    assert_eq!(
        available.message.as_deref(),
        Some("Deployment has minimum availability.")
    );
    let events = e.events().await;
    assert!(
        events.contains(&(
            "ScalingReplicaSet".into(),
            format!("Scaled up replica set web-{hash} from 0 to 3")
        )),
        "{events:?}"
    );
}

/// [Conformance] RollingUpdateDeployment should delete old pods and create new ones,
/// adopting an orphan ReplicaSet with a large revision.
#[tokio::test]
async fn rolling_update_adopts_an_orphan_and_replaces_its_pods() {
    let e = env("d-rolling").await;
    let orphan: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": "test-rolling-update-controller",
            "labels": {"name": "sample-pod", "pod": "httpd"},
            "annotations": {REVISION: "3546343826724305832"}
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"name": "sample-pod", "pod": "httpd"}},
            "template": {"metadata": {"labels": {"name": "sample-pod", "pod": "httpd"}},
                         "spec": {"containers": [{"name": "httpd", "image": "httpd:2.4"}]}}
        }
    }))
    .unwrap();
    e.rs.create(&PostParams::default(), &orphan).await.unwrap();
    let mut d = deployment(
        "test-rolling-update-deployment",
        1,
        "agnhost:2.4",
        rolling(json!("25%"), json!("25%")),
    );
    let labels = json!({"name": "sample-pod"});
    d.spec.as_mut().unwrap().selector =
        serde_json::from_value(json!({"matchLabels": labels})).unwrap();
    d.spec.as_mut().unwrap().template.metadata =
        serde_json::from_value(json!({"labels": labels})).unwrap();
    e.create(&d).await;
    let d = e.wait_complete("test-rolling-update-deployment").await;
    assert_eq!(
        d.annotations().get(REVISION).map(String::as_str),
        Some("3546343826724305833")
    );
    let rss = e.replica_sets_of("test-rolling-update-deployment").await;
    assert_eq!(rss.len(), 2, "the adopted old RS and the new one");
    let old: Vec<_> = rss
        .iter()
        .filter(|r| r.name_any() == "test-rolling-update-controller")
        .collect();
    assert_eq!(old.len(), 1, "exactly one old RS");
    assert_eq!(spec_replicas(old[0]), 0);
}

/// [Conformance] RecreateDeployment: no moment with new pods while old ones remain, and
/// old pods that are Terminating still count as remaining (upstream `oldPodsRunning`): a
/// finalizer of the test holds them after the agent let go, and no new pod comes until
/// they are gone.
#[tokio::test]
async fn recreate_never_mixes_old_and_new_pods() {
    const HOLD: &str = "rekube.io/e2e-hold";
    let e = env("d-recreate").await;
    let mut d = deployment("web", 3, "busybox:1.36", json!({"type": "Recreate"}));
    d.spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .finalizers = Some(vec![HOLD.into()]);
    e.create_complete(&d).await;
    // The pods themselves, not the controller's own status: every pod event from here on,
    // with the set of pods that exist and have not terminated.
    let rv = e
        .pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let watcher = {
        let pods = e.pods.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            use kube::api::{WatchEvent, WatchParams};
            let image = |p: &Pod| {
                p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default()
            };
            let mut live: BTreeMap<String, String> = BTreeMap::new();
            for p in pods.list(&ListParams::default()).await.unwrap().items {
                live.insert(p.name_any(), image(&p));
            }
            let (mut violations, mut new_seen) = (Vec::new(), 0);
            let mut events = pods
                .watch(&WatchParams::default(), &rv)
                .await
                .unwrap()
                .boxed();
            while let Some(Ok(event)) = events.next().await {
                match event {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                        let terminal = matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        );
                        if terminal {
                            live.remove(&p.name_any());
                        } else {
                            live.insert(p.name_any(), image(&p));
                        }
                    }
                    WatchEvent::Deleted(p) => {
                        live.remove(&p.name_any());
                    }
                    _ => continue,
                }
                let new = live.values().filter(|i| *i == "busybox:1.37").count();
                let old = live.len() - new;
                if new > 0 && old > 0 {
                    violations.push(format!("{new} new pods beside {old} old: {live:?}"));
                }
                new_seen = new_seen.max(new);
                if new == 3 && old == 0 {
                    break;
                }
            }
            (violations, new_seen)
        })
    };
    let patch = json!({"spec": {"template": {
        "metadata": {"finalizers": null},
        "spec": {"containers": [{"name": "web", "image": "busybox:1.37"}]},
    }}});
    e.d.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let held = wait_until("the old pods terminating, held by the test", T, || async {
        let pods = e.pods.list(&ListParams::default()).await.unwrap().items;
        let held: Vec<String> = pods
            .iter()
            .filter(|p| readiness::is_terminating(p) && p.finalizers() == [HOLD.to_string()])
            .map(|p| p.name_any())
            .collect();
        let st = e.d.get("web").await.unwrap().status.unwrap_or_default();
        if held.len() == 3 && st.terminating_replicas == Some(3) {
            Ok(held)
        } else {
            Err(format!("{} pods, {held:?} held, {st:?}", pods.len()))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Upstream skips old pods in a terminal phase (a kubelet may report a deleted pod
    // Failed before its last finalizer goes); the hollow agent keeps them Running.
    let pods = e.pods.list(&ListParams::default()).await.unwrap().items;
    let old_running = pods
        .iter()
        .filter(|p| {
            held.contains(&p.name_any())
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
        .count();
    let scaled: i32 = e
        .replica_sets_of("web")
        .await
        .iter()
        .map(spec_replicas)
        .sum();
    assert!(
        old_running > 0 && pods.len() == 3 && scaled == 0,
        "no new pod while {old_running} old ones run terminating: {} pods, {scaled} wanted",
        pods.len()
    );
    for name in &held {
        e.pods
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
    }
    e.wait_complete("web").await;
    let (violations, new_seen) = tokio::time::timeout(T, watcher).await.unwrap().unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(new_seen, 3, "the watch saw the new pods come up");
    let rss = e.replica_sets_of("web").await;
    assert_eq!(
        rss.iter().map(spec_replicas).collect::<Vec<_>>(),
        vec![0, 3]
    );
}

/// [Conformance] deployment should delete old replica sets (revisionHistoryLimit 0).
#[tokio::test]
async fn revision_history_limit_zero_deletes_old_replica_sets() {
    let e = env("d-history").await;
    let mut d = deployment("web", 1, "busybox:1.36", rolling(json!(1), json!(0)));
    d.spec.as_mut().unwrap().revision_history_limit = Some(0);
    e.create(&d).await;
    e.wait_complete("web").await;
    e.set_image("web", "busybox:1.37").await;
    e.wait_complete("web").await;
    wait_until("only the new RS left", T, || async {
        let n = e.replica_sets_of("web").await.len();
        if n == 1 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
}

/// [Conformance] proportional scaling: 10 replicas, surge 3, unavailable 2, a rollout stuck
/// on an image that never gets ready (old RS 8, new RS 5); scaling to 30 gives 20 and 13.
#[tokio::test]
async fn proportional_scaling_during_a_stuck_rollout() {
    let e = env("d-proportional").await;
    e.create_complete(&deployment(
        "web",
        10,
        "busybox:1.36",
        rolling(json!(3), json!(2)),
    ))
    .await;
    e.set_never_ready("web").await;
    wait_until("the rollout stuck at 8 old and 5 new", T, || async {
        let rss = e.replica_sets_of("web").await;
        let sizes: Vec<i32> = rss.iter().map(spec_replicas).collect();
        if sizes == vec![8, 5] {
            Ok(())
        } else {
            Err(format!("{sizes:?}"))
        }
    })
    .await;
    e.d.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 30}})),
    )
    .await
    .unwrap();
    wait_until("20 old and 13 new", T, || async {
        let rss = e.replica_sets_of("web").await;
        let sizes: Vec<i32> = rss.iter().map(spec_replicas).collect();
        if sizes == vec![20, 13] {
            Ok(())
        } else {
            Err(format!("{sizes:?}"))
        }
    })
    .await;
    for rs in e.replica_sets_of("web").await {
        assert_eq!(
            rs.annotations()
                .get("deployment.kubernetes.io/desired-replicas")
                .map(String::as_str),
            Some("30")
        );
        assert_eq!(
            rs.annotations()
                .get("deployment.kubernetes.io/max-replicas")
                .map(String::as_str),
            Some("33")
        );
    }
}

/// integration FailedDeployment: an unready rollout times out with ProgressDeadlineExceeded
/// and recovers with NewReplicaSetAvailable once pods get ready.
#[tokio::test]
async fn progress_deadline_times_out_and_recovers() {
    let e = env("d-deadline").await;
    let mut d = never_ready_deployment("web", 2, rolling(json!("25%"), json!("25%")));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(3);
    e.create(&d).await;
    wait_until("ProgressDeadlineExceeded", T, || async {
        let st = e.d.get("web").await.unwrap().status.unwrap_or_default();
        let c = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .cloned();
        match c {
            Some(c)
                if c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded") =>
            {
                assert!(c.message.unwrap().ends_with("has timed out progressing."));
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    e.set_image("web", "busybox:1.36").await;
    e.wait_complete("web").await;
}

/// integration PausedDeployment: a paused Deployment makes no RS; resumed, revision 1; a
/// template change while paused makes no new RS; scaling a paused Deployment scales its RS.
#[tokio::test]
async fn paused_deployments_do_not_roll_out_but_scale() {
    let e = env("d-paused").await;
    let mut d = deployment(
        "web",
        2,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    );
    d.spec.as_mut().unwrap().paused = Some(true);
    e.create(&d).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        e.replica_sets_of("web").await.is_empty(),
        "no RS while paused"
    );
    e.d.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    let d = e.wait_complete("web").await;
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("1"));
    e.d.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    e.set_image("web", "busybox:1.37").await;
    e.d.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    wait_until("the paused RS scaled to 4", T, || async {
        let rss = e.replica_sets_of("web").await;
        let sizes: Vec<i32> = rss.iter().map(spec_replicas).collect();
        if sizes == vec![4] {
            Ok(())
        } else {
            Err(format!("{sizes:?}"))
        }
    })
    .await;
    let st = e.d.get("web").await.unwrap().status.unwrap();
    let progressing = st
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("Unknown", Some("DeploymentPaused"))
    );
}

/// Rollback through the deprecated.deployment.rollback.to annotation (0 = previous
/// revision): the template returns, the revision moves on, the annotation is cleared.
#[tokio::test]
async fn rollback_annotation_restores_the_previous_template() {
    let e = env("d-rollback").await;
    e.create_complete(&deployment(
        "web",
        2,
        "busybox:1.36",
        rolling(json!(1), json!(0)),
    ))
    .await;
    e.set_image("web", "busybox:1.37").await;
    e.wait_complete("web").await;
    let patch = json!({"metadata": {"annotations": {"deprecated.deployment.rollback.to": "0"}}});
    e.d.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let d = wait_until("rolled back", T, || async {
        let d = e.d.get("web").await.unwrap();
        let image = d
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone();
        if image.as_deref() == Some("busybox:1.36")
            && !d
                .annotations()
                .contains_key("deprecated.deployment.rollback.to")
        {
            Ok(d)
        } else {
            Err(format!("{image:?}"))
        }
    })
    .await;
    drop(d);
    let d = e.wait_complete("web").await;
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("3"));
    let events = e.events().await;
    assert!(
        events.iter().any(|(r, m)| r == "DeploymentRollback"
            && m == "Rolled back deployment \"web\" to revision 1"),
        "{events:?}"
    );
}

/// integration HashCollision: a ReplicaSet whose template was changed under the controller
/// makes it bump collisionCount and create a new ReplicaSet.
#[tokio::test]
async fn hash_collision_bumps_collision_count() {
    let e = env("d-collision").await;
    e.create_complete(&deployment(
        "web",
        1,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    let rs = e.replica_sets_of("web").await.remove(0);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"foo": "bar"}}}}});
    e.rs.patch(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    wait_until("collisionCount 1 and a second RS", T, || async {
        let d = e.d.get("web").await.unwrap();
        let count = d.status.as_ref().and_then(|s| s.collision_count);
        let n = e.replica_sets_of("web").await.len();
        if count == Some(1) && n == 2 {
            Ok(())
        } else {
            Err(format!("{count:?} {n}"))
        }
    })
    .await;
    e.wait_complete("web").await;
}

/// [Conformance] orphaning and adoption regarding controllerRef: deleted with orphan
/// propagation, the ReplicaSet survives and a new Deployment with the same selector adopts it.
#[tokio::test]
async fn orphaned_replica_sets_are_adopted_by_a_new_deployment() {
    let e = env("d-orphan").await;
    e.create_complete(&deployment(
        "web",
        2,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    let rs = e.replica_sets_of("web").await.remove(0);
    e.d.delete("web", &DeleteParams::orphan()).await.unwrap();
    wait_until("the RS orphaned", T, || async {
        let r = e.rs.get(&rs.name_any()).await.map_err(|e| e.to_string())?;
        if r.owner_references().is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", r.owner_references()))
        }
    })
    .await;
    // The garbage collector removes the orphan finalizer after releasing the dependents.
    wait_until("the old deployment gone", T, || async {
        match e.d.get_opt("web").await.unwrap() {
            None => Ok(()),
            Some(d) => Err(format!("finalizers {:?}", d.metadata.finalizers)),
        }
    })
    .await;
    // As upstream's testDeploymentsControllerRef: a Deployment of another name with the
    // same selector and template. (Under the same name, a controller whose cache still
    // shows the old owner meets the orphan as a hash collision: upstream's getNewReplicaSet
    // does the same.)
    let mut adopter = deployment(
        "web",
        2,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    );
    adopter.metadata.name = Some("web-adopt".into());
    e.create_complete(&adopter).await;
    let uid = e.d.get("web-adopt").await.unwrap().metadata.uid;
    wait_until(
        "the orphan adopted, every RS of the selector controlled by the adopter",
        T,
        || async {
            let all =
                e.rs.list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items;
            let controlled = |r: &ReplicaSet| {
                r.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref() && o.controller == Some(true))
            };
            let adopted = all
                .iter()
                .any(|r| r.metadata.uid == rs.metadata.uid && controlled(r));
            if adopted && all.iter().all(controlled) {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    all.iter()
                        .map(|r| (
                            r.name_any(),
                            r.metadata.uid.clone(),
                            r.owner_references().to_vec()
                        ))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;
}

/// [Conformance] deployment reaping cascades to its replica sets and pods (the garbage
/// collector follows the ownerReferences the controllers set).
#[tokio::test]
async fn deleting_a_deployment_deletes_its_replica_sets_and_pods() {
    let e = env("d-cascade").await;
    e.create_complete(&deployment(
        "web",
        2,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    e.d.delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_until("deployment, replica sets and pods gone", T, || async {
        let d = e.d.get_opt("web").await.unwrap();
        let rss = e.rs.list(&ListParams::default()).await.unwrap().items.len();
        let pods = e
            .pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        if d.is_none() && rss == 0 && pods == 0 {
            Ok(())
        } else {
            Err(format!("{} {rss} {pods}", d.is_some()))
        }
    })
    .await;
}

/// integration ScaledRollout: surge 3, unavailable 2, template and size changed together;
/// availability never drops below replicas − maxUnavailable, and every RS's desired-replicas
/// annotation ends equal to spec.replicas.
#[tokio::test]
async fn scaled_rollout_keeps_minimum_availability() {
    let e = env("d-scaled").await;
    e.create_complete(&deployment(
        "web",
        10,
        "busybox:1.36",
        rolling(json!(3), json!(2)),
    ))
    .await;
    let watcher = {
        let d = e.d.clone();
        tokio::spawn(async move {
            let mut low = Vec::new();
            for _ in 0..200 {
                let d = d.get("web").await.unwrap();
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let available = d
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0);
                if d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
                    && available < want.min(10) - 2
                {
                    low.push(format!("{available} available of {want}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            low
        })
    };
    let patch = json!({"spec": {"replicas": 20, "template": {"spec": {"containers": [{"name": "web", "image": "busybox:1.37"}]}}}});
    e.d.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    e.wait_complete("web").await;
    let low = watcher.await.unwrap();
    assert!(low.is_empty(), "{low:?}");
    for rs in e.replica_sets_of("web").await {
        assert_eq!(
            rs.annotations()
                .get("deployment.kubernetes.io/desired-replicas")
                .map(String::as_str),
            Some("20")
        );
    }
}

/// integration AvailableCondition: minReadySeconds 3600 keeps MinimumReplicasUnavailable
/// with (replicas, updated, ready, available, unavailable) = (10, 10, 10, 0, 10).
#[tokio::test]
async fn min_ready_seconds_keeps_the_deployment_unavailable() {
    let e = env("d-available").await;
    let mut d = deployment(
        "web",
        10,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    );
    d.spec.as_mut().unwrap().min_ready_seconds = Some(3600);
    // Validation wants progressDeadlineSeconds above minReadySeconds.
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(7200);
    e.create(&d).await;
    wait_until("10 ready, none available", T, || async {
        let st = e.d.get("web").await.unwrap().status.unwrap_or_default();
        let counts = (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas,
            st.unavailable_replicas,
        );
        let available = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Available")
            .cloned();
        let ok = counts == (Some(10), Some(10), Some(10), None, Some(10))
            || counts == (Some(10), Some(10), Some(10), Some(0), Some(10));
        match available {
            Some(c)
                if ok
                    && c.status == "False"
                    && c.reason.as_deref() == Some("MinimumReplicasUnavailable") =>
            {
                Ok(())
            }
            other => Err(format!("{counts:?} {other:?}")),
        }
    })
    .await;
}

/// A controller killed mid-rollout and started again finishes it without extra pods.
#[tokio::test]
async fn restart_mid_rollout_finishes_without_extra_pods() {
    let mut e = env("d-restart").await;
    e.create_complete(&deployment(
        "web",
        6,
        "busybox:1.36",
        rolling(json!(1), json!(1)),
    ))
    .await;
    e.set_image("web", "busybox:1.37").await;
    wait_until("the rollout under way", T, || async {
        let n = e.replica_sets_of("web").await.len();
        if n == 2 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
    e.controllers.kill();
    e.controllers.restart();
    e.wait_complete("web").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Old pods the agent is still cleaning up are Terminating, not extra.
    let mut pods = e.pods.list(&ListParams::default()).await.unwrap().items;
    pods.retain(|p| !readiness::is_terminating(p));
    let by_image: BTreeMap<String, usize> = pods.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(
            p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap_or_default(),
        )
        .or_default() += 1;
        m
    });
    assert_eq!(
        by_image,
        BTreeMap::from([("busybox:1.37".to_string(), 6)]),
        "exactly the desired new pods"
    );
}

/// Two replicas of the controller manager: only the leader acts; when it is killed, the
/// standby takes over within the lease duration and finishes the work.
#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let mut e = env("d-leader").await;
    let mut standby = ControllerProcess::start(&e.ns.name, &CONTROLLERS);
    e.create_complete(&deployment(
        "web",
        2,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e.ns.client.clone(), &e.ns.name);
    let holder = leases
        .get("rekube-controllers")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    // Exactly one process leads.
    let leading = [&e.controllers, &standby]
        .iter()
        .filter(|p| p.logs().contains("acquired lease"))
        .count();
    assert_eq!(leading, 1, "one leader: {holder}");
    if e.controllers.logs().contains("acquired lease") {
        e.controllers.kill();
    } else {
        standby.kill();
    }
    e.set_image("web", "busybox:1.37").await;
    let started = std::time::Instant::now();
    e.wait_complete("web").await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took over and rolled out in {:?}",
        started.elapsed()
    );
    let new_holder = leases
        .get("rekube-controllers")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert_ne!(new_holder, holder);
    drop(standby);
}

/// SIGTERM: the controller exits cleanly and releases its lease.
#[tokio::test]
async fn graceful_shutdown_releases_the_lease() {
    let mut e = env("d-shutdown").await;
    e.create_complete(&deployment(
        "web",
        1,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    let status = e.controllers.terminate().expect("the process exits");
    assert!(status.success(), "{status:?}: {}", e.controllers.logs());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(e.ns.client.clone(), &e.ns.name);
    let spec = leases
        .get("rekube-controllers")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.holder_identity, None, "{spec:?}");
}

/// The metrics endpoint reports syncs, queue depth and API requests by authorization verb
/// and resource.
#[tokio::test]
async fn metrics_report_syncs_and_api_requests() {
    let e = env("d-metrics").await;
    e.create_complete(&deployment(
        "web",
        1,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    let text = wait_until("metrics", T, || async {
        e.controllers
            .metrics()
            .ok_or_else(|| "no answer".to_string())
    })
    .await;
    for needle in [
        "rekube_controller_syncs_total{controller=\"deployment-controller\",result=\"success\"}",
        "rekube_controller_sync_duration_seconds_count{controller=\"replicaset-controller\"}",
        "rekube_workqueue_depth{name=\"deployment-controller\"}",
        "rekube_rest_client_requests_total{verb=\"create\",resource=\"replicasets.rekube.io\",code=\"201\"}",
        "rekube_rest_client_requests_total{verb=\"watch\",resource=\"pods.rekube.io\",code=\"200\"}",
        "rekube_rest_client_requests_total{verb=\"update\",resource=\"deployments.rekube.io/status\",code=\"200\"}",
        "rekube_leader_election_master_status 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// [Conformance] deployment should support rollover: a rollout stuck on an image that never
/// gets ready (maxUnavailable 0, maxSurge 1, minReadySeconds) is rolled over by a new
/// template; the Deployment reaches revision 2... then 3 and completes, older RSs at 0.
#[tokio::test]
async fn rollover_replaces_an_unfinished_rollout() {
    let e = env("d-rollover").await;
    let mut d = deployment("web", 1, "busybox:1.36", rolling(json!(1), json!(0)));
    d.spec.as_mut().unwrap().min_ready_seconds = Some(1);
    e.create(&d).await;
    e.wait_complete("web").await;
    e.set_never_ready("web").await;
    wait_until("the stuck rollout's RS", T, || async {
        let rss = e.replica_sets_of("web").await;
        if rss.len() == 2 && spec_replicas(&rss[1]) == 1 {
            Ok(())
        } else {
            Err(format!("{}", rss.len()))
        }
    })
    .await;
    e.set_image("web", "busybox:1.37").await;
    let d = e.wait_complete("web").await;
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("3"));
    let rss = e.replica_sets_of("web").await;
    assert_eq!(
        rss.iter().map(spec_replicas).collect::<Vec<_>>(),
        vec![0, 0, 1],
        "older RSs at 0"
    );
}

/// integration OverlappingDeployments: identical selectors get separate ReplicaSets.
#[tokio::test]
async fn overlapping_deployments_get_their_own_replica_sets() {
    let e = env("d-overlap").await;
    let mut second = deployment(
        "second",
        1,
        "busybox:1.37",
        rolling(json!("25%"), json!("25%")),
    );
    let labels = json!({"app": "first"});
    second.spec.as_mut().unwrap().selector =
        serde_json::from_value(json!({"matchLabels": labels})).unwrap();
    second.spec.as_mut().unwrap().template.metadata =
        serde_json::from_value(json!({"labels": labels})).unwrap();
    e.create(&deployment(
        "first",
        1,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    e.d.create(&PostParams::default(), &second).await.unwrap();
    e.wait_complete("first").await;
    e.wait_complete("second").await;
    let (a, b) = (
        e.replica_sets_of("first").await,
        e.replica_sets_of("second").await,
    );
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0].metadata.uid, b[0].metadata.uid);
}

/// integration SpecReplicasChange: a Recreate Deployment scaled 2 → 0 → 1 follows, and
/// observedGeneration advances with every change.
#[tokio::test]
async fn recreate_deployment_follows_replica_changes() {
    let e = env("d-replicas").await;
    e.create_complete(&deployment(
        "web",
        2,
        "busybox:1.36",
        json!({"type": "Recreate"}),
    ))
    .await;
    for want in [0, 1] {
        e.d.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": want}})),
        )
        .await
        .unwrap();
        let d = wait_until(&format!("{want} replicas observed"), T, || async {
            let d = e.d.get("web").await.unwrap();
            let st = d.status.clone().unwrap_or_default();
            let ok =
                st.observed_generation == d.metadata.generation && st.replicas.unwrap_or(0) == want;
            if ok { Ok(d) } else { Err(format!("{st:?}")) }
        })
        .await;
        assert_eq!(d.status.unwrap().observed_generation, d.metadata.generation);
    }
}

/// [Conformance] Deployment status endpoints: a condition a user adds through /status is
/// kept by the controller's later status updates.
#[tokio::test]
async fn user_status_conditions_persist_on_deployments() {
    let e = env("d-status").await;
    e.create(&deployment(
        "web",
        1,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    let d = e.wait_complete("web").await;
    let mut st = serde_json::to_value(d.status.unwrap()).unwrap();
    st["conditions"].as_array_mut().unwrap().push(json!({"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from e2e test"}));
    e.d.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": st})),
    )
    .await
    .unwrap();
    e.d.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let d = e.wait_complete("web").await;
    let conds = d.status.unwrap().conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "StatusUpdate" && c.message.as_deref() == Some("Set from e2e test")), "{conds:?}");
}

/// iterative rollouts should eventually progress: 6 replicas, 20 random steps (template
/// change, rollback, scale, pause/resume, pod deletion); the Deployment then completes with
/// NewReplicaSetAvailable. The steps come from a fixed seed, printed for reproduction.
#[tokio::test]
async fn iterative_rollouts_eventually_progress() {
    let e = env("d-iterative").await;
    e.create_complete(&deployment(
        "web",
        6,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    let mut seed: u64 = 0x5eed_2026;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for step in 0..20 {
        let choice = next(6);
        let patch = match choice {
            0 => {
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:1.36", "env": [{"name": "STEP", "value": step.to_string()}]}]}}}})
            }
            1 => json!({"metadata": {"annotations": {"deprecated.deployment.rollback.to": "0"}}}),
            2 => json!({"spec": {"replicas": next(10) as i32}}),
            3 => json!({"spec": {"paused": true}}),
            4 => json!({"spec": {"paused": false}}),
            _ => {
                let pods = e.pods.list(&ListParams::default()).await.unwrap().items;
                if let Some(p) = pods.get(next(pods.len().max(1) as u64) as usize) {
                    let _ = e.pods.delete(&p.name_any(), &DeleteParams::default()).await;
                }
                continue;
            }
        };
        println!("step {step}: {patch}");
        e.d.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300 + next(700))).await;
    }
    e.d.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    e.wait_complete("web").await;
}

/// [Conformance] lifecycle of a Deployment: created with 2 → ready 2; patched (replicas 1,
/// new image, a label) → ready = updated = 1; updated (image, replicas 2) → 2; status read
/// and patched through /status; DeleteCollection removes it and, through the garbage
/// collector, its ReplicaSets and pods.
#[tokio::test]
async fn lifecycle_of_a_deployment() {
    let e = env("d-lifecycle").await;
    let mut d = deployment(
        "test-deployment",
        2,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    );
    d.labels_mut()
        .insert("test-deployment-static".into(), "true".into());
    e.create_complete(&d).await;
    let patch = json!({
        "metadata": {"labels": {"test-deployment": "patched"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "web", "image": "busybox:1.37"}]}}}
    });
    e.d.patch(
        "test-deployment",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let d = e.wait_complete("test-deployment").await;
    assert_eq!(
        d.labels().get("test-deployment").map(String::as_str),
        Some("patched")
    );
    let st = d.status.clone().unwrap();
    assert_eq!((st.ready_replicas, st.updated_replicas), (Some(1), Some(1)));

    // An update of the object as read: the controller may write the status meanwhile
    // (terminatingReplicas falls to 0 once the agent has cleaned up the old pod), so read,
    // change and update again on a conflict, as client-go's RetryOnConflict.
    let mut attempts = 0;
    loop {
        let mut d = e.d.get("test-deployment").await.unwrap();
        d.spec.as_mut().unwrap().replicas = Some(2);
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("busybox:1.38".into());
        match e
            .d
            .replace("test-deployment", &PostParams::default(), &d)
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 409 && attempts < 10 => attempts += 1,
            Err(err) => panic!("updating deployment test-deployment: {err}"),
        }
    }
    let d = e.wait_complete("test-deployment").await;
    assert_eq!(d.status.as_ref().unwrap().ready_replicas, Some(2));

    let status = e.d.get_status("test-deployment").await.unwrap();
    assert_eq!(status.status.as_ref().unwrap().replicas, Some(2));
    let patch = json!({"metadata": {"annotations": {"patchedstatus": "true"}}, "status": {"readyReplicas": 2}});
    e.d.patch_status(
        "test-deployment",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();

    let lp = ListParams::default().labels("test-deployment-static=true");
    e.d.delete_collection(&DeleteParams::foreground(), &lp)
        .await
        .unwrap();
    wait_until("deployment, replica sets and pods gone", T, || async {
        let ds = e.d.list(&ListParams::default()).await.unwrap().items.len();
        let rss = e.rs.list(&ListParams::default()).await.unwrap().items.len();
        let pods = e
            .pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        if ds + rss + pods == 0 {
            Ok(())
        } else {
            Err(format!("{ds} {rss} {pods}"))
        }
    })
    .await;
}

/// integration RollingUpdate: revisions 1 → 4 with 25%/25%, one template change made while
/// the previous rollout is unfinished; every old ReplicaSet ends at 0.
#[tokio::test]
async fn rolling_update_through_four_revisions() {
    let e = env("d-revisions").await;
    e.create_complete(&deployment(
        "web",
        4,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    e.set_image("web", "busybox:1.37").await;
    e.wait_complete("web").await;
    // Revision 3 never gets ready; revision 4 rolls over it.
    e.set_never_ready("web").await;
    wait_until("revision 3 started", T, || async {
        let n = e.replica_sets_of("web").await.len();
        if n == 3 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
    e.set_image("web", "busybox:1.38").await;
    let d = e.wait_complete("web").await;
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("4"));
    let rss = e.replica_sets_of("web").await;
    assert_eq!(
        rss.iter().map(spec_replicas).collect::<Vec<_>>(),
        vec![0, 0, 0, 4]
    );
    assert_eq!(
        rss.iter().map(revision).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

/// integration OrphaningAndAdoptionWhenLabelsChange: a ReplicaSet whose labels stop matching
/// is released (and replaced); given matching labels again it is adopted back.
#[tokio::test]
async fn replica_sets_are_released_and_readopted_when_labels_change() {
    let e = env("d-relabel").await;
    let d = e
        .create_complete(&deployment(
            "web",
            1,
            "busybox:1.36",
            rolling(json!("25%"), json!("25%")),
        ))
        .await;
    let d_uid = d.metadata.uid.clone().unwrap();
    let rs = e.replica_sets_of("web").await.remove(0);
    let name = rs.name_any();
    let original = rs.labels().clone();
    e.rs.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "released"}}})),
    )
    .await
    .unwrap();
    wait_until("the replica set released", T, || async {
        let r = e.rs.get(&name).await.unwrap();
        if r.owner_references().iter().all(|o| o.uid != d_uid) {
            Ok(())
        } else {
            Err("still owned".into())
        }
    })
    .await;
    e.rs.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": original}})),
    )
    .await
    .unwrap();
    wait_until("the replica set adopted again", T, || async {
        let r = e.rs.get(&name).await.unwrap();
        if r.owner_references()
            .iter()
            .any(|o| o.uid == d_uid && o.controller == Some(true))
        {
            Ok(())
        } else {
            Err("orphan".into())
        }
    })
    .await;
}

/// The web container of [`real_containers_stall_on_a_failing_readiness_probe`]: `sleep` as
/// PID 1 (which ignores SIGTERM, so a deleted pod lasts its grace period), ready while
/// the exec readiness probe `probe` (`true` or `false`) passes.
fn real_web(seconds: u32, probe: &str) -> Value {
    json!({"name": "web", "image": "busybox:1.36", "imagePullPolicy": "Never",
        "command": ["sleep", seconds.to_string()],
        "readinessProbe": {"exec": {"command": [probe]}, "periodSeconds": 1}})
}

/// Real containers on a real agent (root, busybox): a rollout whose new pods' readiness
/// probe fails (`exec: false`) stalls with maxUnavailable 0, the old pods serving, until
/// the progress deadline (ProgressDeadlineExceeded); a template whose probe passes then
/// completes it, the old pods Terminating (counted apart) for their 2 s grace period
/// since their process ignores SIGTERM. Nothing of the containers is left afterwards.
#[tokio::test]
async fn real_containers_stall_on_a_failing_readiness_probe() {
    if let Err(why) = AgentProcess::can_run_containers() {
        rekube_crds::testing::missing_prerequisite(&why);
        return;
    }
    let ns = TestNamespace::new("d-real").await;
    let agent = AgentProcess::start_real(&ns, "real", &[]);
    agent.wait_node_ready(&ns.client, T).await;
    let e = env_with(ns, agent);
    let mut d = deployment("web", 2, "busybox:1.36", rolling(json!(1), json!(0)));
    let spec = d.spec.as_mut().unwrap();
    spec.progress_deadline_seconds = Some(8);
    let pod_spec = spec.template.spec.as_mut().unwrap();
    pod_spec.termination_grace_period_seconds = Some(2);
    pod_spec.containers = vec![serde_json::from_value(real_web(3600, "true")).unwrap()];
    e.create_complete(&d).await;
    let old: Vec<String> = e
        .pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();

    let template = |c: Value| json!({"spec": {"template": {"spec": {"containers": [c]}}}});
    e.d.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&template(real_web(3601, "false"))),
    )
    .await
    .unwrap();
    wait_until(
        "ProgressDeadlineExceeded, the old pods serving",
        T,
        || async {
            let st = e.d.get("web").await.unwrap().status.unwrap_or_default();
            let pods = e.pods.list(&ListParams::default()).await.unwrap().items;
            let unready_new = pods
                .iter()
                .filter(|p| {
                    !old.contains(&p.name_any())
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && !readiness::is_ready(p)
                })
                .count();
            let deadline = st.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            });
            if deadline && unready_new == 1 && st.available_replicas == Some(2) {
                Ok(())
            } else {
                Err(format!(
                    "{unready_new} new running unready, {st:?}\n{}",
                    e.agent.logs()
                ))
            }
        },
    )
    .await;

    e.d.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&template(real_web(3602, "true"))),
    )
    .await
    .unwrap();
    wait_until("an old pod Terminating, counted apart", T, || async {
        let st = e.d.get("web").await.unwrap().status.unwrap_or_default();
        let pods = e.pods.list(&ListParams::default()).await.unwrap().items;
        let terminating = pods
            .iter()
            .filter(|p| old.contains(&p.name_any()) && readiness::is_terminating(p))
            .count();
        if terminating >= 1 && st.terminating_replicas.unwrap_or(0) >= 1 {
            Ok(())
        } else {
            Err(format!("{terminating} terminating, {st:?}"))
        }
    })
    .await;
    let d = e.wait_complete("web").await;
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("3"));

    // Everything goes through the agent, which must leave nothing behind.
    e.d.delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_until("the pods gone", T, || async {
        let n = e
            .pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} left"))
        }
    })
    .await;
    e.agent.wait_no_leftovers(Duration::from_secs(20)).await;
}

/// `kubectl rekube tree deployment/NAME` shows the Deployment, its ReplicaSet and each of
/// its pods with their status, down the ownerReferences the controllers wrote; an
/// unknown name is a clear error.
#[tokio::test]
async fn kubectl_rekube_tree_shows_what_a_deployment_owns() {
    let e = env("d-tree").await;
    e.create_complete(&deployment(
        "web",
        2,
        "busybox:1.36",
        rolling(json!("25%"), json!("25%")),
    ))
    .await;
    let rs = e.replica_sets_of("web").await;
    assert_eq!(rs.len(), 1);
    let pods = e.pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pods.len(), 2);
    let out = rekube_e2e::kubectl_rekube(&["tree", "rdeploy/web", "-n", &e.ns.name]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].ends_with("STATUS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("Deployment/web ")
            && lines[1].ends_with("2/2 ready, 2 up-to-date, 2 available"),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!("└─ReplicaSet/{} ", rs[0].name_any()))
            && lines[2].ends_with("2/2 ready"),
        "{out}"
    );
    let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    for (line, name) in lines[3..].iter().zip(&names) {
        assert!(line.contains(&format!("─Pod/{name} ")), "{out}");
        assert!(line.contains("Running, Ready"), "{out}");
    }
    let bin = rekube_e2e::kubectl_rekube_binary();
    let missing = std::process::Command::new(&bin)
        .args(["tree", "deployment/nope", "-n", &e.ns.name])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        format!(
            "error: Deployment.rekube.io \"nope\" not found in namespace {}",
            e.ns.name
        )
    );
}
