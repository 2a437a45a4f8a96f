//! The pods of this node and one worker per pod (upstream pkg/kubelet/config (the
//! apiserver pod source, a watch with `fieldSelector=spec.nodeName=<node>`) and
//! pkg/kubelet/pod_workers.go): each pod's updates are handled in order by its own task,
//! only the latest spec matters (updates arriving during a sync coalesce), and a pod goes
//! through upstream's three phases: synced while it should run (`sync_pod`), terminated
//! once deleted or finished (`sync_terminating_pod`, with the grace period), then cleaned
//! up (`sync_terminated_pod`). Between updates a worker re-syncs on the delay its last
//! sync asked for (probes, backoffs) or every `resync_interval`.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Container;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use rekube_crds::Pod;
use tokio::sync::watch;

use crate::kubelet::pod_actions::ContainerKillReason;

/// What a sync asks of its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Sync again after this long (or sooner, on an update).
    RequeueAfter(Duration),
    /// The pod reached a terminal phase: terminate it (upstream: a terminal pod's
    /// containers are stopped and it is never restarted).
    Terminal,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The three phases of a pod's life on the node (upstream podSyncer).
pub trait PodSyncer: Send + Sync + 'static {
    /// Make the pod's containers match its spec; report its status.
    fn sync_pod<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, SyncOutcome>;
    /// Stop every container, giving each up to `grace` to exit.
    fn sync_terminating_pod<'a>(&'a self, pod: &'a Pod, grace: Duration) -> BoxFuture<'a, ()>;
    /// Remove every trace of the pod (containers, sandbox, cgroups, mounts, volumes), then
    /// let the API object go.
    fn sync_terminated_pod<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, ()>;
    /// The pod as the API has it now, before its worker syncs it (upstream's pod manager,
    /// which the volume manager's populator reads).
    fn observe_pod(&self, _pod: &Pod) {}
    /// After a full relist: remove what is left on the node of pods that are neither in
    /// the API nor worked on (`is_known` says which are), such as the volumes of a pod
    /// deleted while the agent was down (upstream's `cleanupOrphanedPodDirs`).
    fn cleanup_orphaned_pods(&self, _is_known: &dyn Fn(&str) -> bool) {}
}

/// The grace period for stopping a pod: the deletion's, else the spec's (upstream
/// default 30 s).
pub fn termination_grace(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .filter(|s| *s > 0)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// The grace period for killing one container (upstream kuberuntime
/// `setTerminationGracePeriod`): the deletion's; else, for a startup or liveness probe
/// failure, that probe's `terminationGracePeriodSeconds` when set; else the pod's.
pub fn kill_grace(
    pod: &Pod,
    container: Option<&Container>,
    reason: Option<ContainerKillReason>,
) -> Duration {
    if pod.metadata.deletion_grace_period_seconds.is_some() {
        return termination_grace(pod);
    }
    let probe = container.and_then(|c| match reason {
        Some(ContainerKillReason::StartupProbe) => c.startup_probe.as_ref(),
        Some(ContainerKillReason::LivenessProbe) => c.liveness_probe.as_ref(),
        _ => None,
    });
    match probe.and_then(|p| p.termination_grace_period_seconds) {
        Some(secs) => Duration::from_secs(secs.max(0) as u64),
        None => termination_grace(pod),
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The latest word about one pod: its object, or None once deleted from the API.
type PodSlot = watch::Sender<Option<Arc<Pod>>>;

pub struct PodWorkers<S: PodSyncer> {
    syncer: Arc<S>,
    workers: Mutex<HashMap<String, PodSlot>>,
    resync_interval: Duration,
    /// Set by [`Self::delete_all`]: no pod gets a worker any more.
    closed: std::sync::atomic::AtomicBool,
}

impl<S: PodSyncer> PodWorkers<S> {
    pub fn new(syncer: Arc<S>, resync_interval: Duration) -> Arc<Self> {
        Arc::new(PodWorkers {
            syncer,
            workers: Mutex::new(HashMap::new()),
            resync_interval,
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// After a relist (`known`: the pods in the API by UID): the syncer removes what is
    /// left of pods with neither an API object nor a worker.
    pub fn cleanup_orphaned_pods(&self, known: &HashMap<String, Pod>) {
        let workers = self.workers.lock().unwrap();
        self.syncer
            .cleanup_orphaned_pods(&|uid| known.contains_key(uid) || workers.contains_key(uid));
    }

    /// upstream UpdatePod: hand the latest object to the pod's worker, starting it.
    pub fn update_pod(self: &Arc<Self>, pod: Pod) {
        self.syncer.observe_pod(&pod);
        let uid = pod.uid().unwrap_or_default();
        let mut workers = self.workers.lock().unwrap();
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(slot) = workers.get(&uid) {
            slot.send_replace(Some(Arc::new(pod)));
            return;
        }
        let (tx, rx) = watch::channel(Some(Arc::new(pod)));
        workers.insert(uid.clone(), tx);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.pod_worker_loop(rx).await;
            this.workers.lock().unwrap().remove(&uid);
        });
    }

    /// The pod is gone from the API (force-deleted, or its finalizer removed elsewhere).
    pub fn delete_pod(&self, pod: &Pod) {
        if let Some(slot) = self
            .workers
            .lock()
            .unwrap()
            .get(&pod.uid().unwrap_or_default())
        {
            slot.send_replace(None);
        }
    }

    /// The latest object of every pod with a worker.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.workers
            .lock()
            .unwrap()
            .values()
            .filter_map(|slot| slot.borrow().clone())
            .collect()
    }

    /// Every pod treated as deleted from the API: each worker stops its pod and cleans it
    /// up, then ends; no worker starts after it (the agent's uninstall,
    /// [`super::uninstall`]).
    pub fn delete_all(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        for slot in self.workers.lock().unwrap().values() {
            slot.send_replace(None);
        }
    }

    /// Wakes the pod's worker to sync its latest object now (upstream: the PLEG event
    /// of a container that exited); no-op for a pod without a worker.
    pub fn resync(&self, uid: &str) {
        if let Some(slot) = self.workers.lock().unwrap().get(uid) {
            slot.send_modify(|_| {});
        }
    }

    pub fn len(&self) -> usize {
        self.workers.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn pod_worker_loop(&self, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
        let mut last: Option<Arc<Pod>> = None;
        loop {
            let current = rx.borrow_and_update().clone();
            let pod = match current {
                Some(p) => {
                    last = Some(Arc::clone(&p));
                    p
                }
                // Deleted from the API without passing through terminating: stop and
                // clean up what ran.
                None => {
                    if let Some(p) = last {
                        self.syncer.sync_terminating_pod(&p, Duration::ZERO).await;
                        self.syncer.sync_terminated_pod(&p).await;
                    }
                    return;
                }
            };
            if pod.metadata.deletion_timestamp.is_some() {
                self.syncer
                    .sync_terminating_pod(&pod, termination_grace(&pod))
                    .await;
                self.syncer.sync_terminated_pod(&pod).await;
                return;
            }
            let wait = if is_terminal(&pod) {
                // Finished: stop what is left; the object stays until it is deleted.
                self.syncer.sync_terminating_pod(&pod, Duration::ZERO).await;
                None
            } else {
                match self.syncer.sync_pod(&pod).await {
                    SyncOutcome::RequeueAfter(d) => Some(d.min(self.resync_interval)),
                    SyncOutcome::Terminal => {
                        self.syncer.sync_terminating_pod(&pod, Duration::ZERO).await;
                        None
                    }
                }
            };
            match wait {
                Some(d) => {
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return },
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// upstream's apiserver pod source: watches the Pods bound to `node` (the Pod CRD's
/// selectable field spec.nodeName) and feeds the workers until the stream ends.
pub async fn watch_pods<S: PodSyncer>(client: Client, node: &str, workers: Arc<PodWorkers<S>>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = watcher::watcher(api, config).default_backoff();
    futures_util::pin_mut!(stream);
    // Pods seen during a relist, to learn which disappeared meanwhile.
    let mut known: HashMap<String, Pod> = HashMap::new();
    let mut relisted: HashMap<String, Pod> = HashMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(pod)) => {
                known.insert(pod.uid().unwrap_or_default(), pod.clone());
                workers.update_pod(pod);
            }
            Ok(Event::Delete(pod)) => {
                known.remove(&pod.uid().unwrap_or_default());
                workers.delete_pod(&pod);
            }
            Ok(Event::Init) => relisted.clear(),
            Ok(Event::InitApply(pod)) => {
                relisted.insert(pod.uid().unwrap_or_default(), pod);
            }
            Ok(Event::InitDone) => {
                for (uid, pod) in known.drain() {
                    if !relisted.contains_key(&uid) {
                        workers.delete_pod(&pod);
                    }
                }
                for (uid, pod) in relisted.drain() {
                    known.insert(uid, pod.clone());
                    workers.update_pod(pod);
                }
                workers.cleanup_orphaned_pods(&known);
            }
            Err(e) => tracing::warn!(node, error = %e, "watching pods; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Records the phases it is driven through.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        syncs: std::sync::atomic::AtomicUsize,
    }

    impl PodSyncer for Recorder {
        fn sync_pod<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, SyncOutcome> {
            Box::pin(async move {
                let n = self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let image = pod.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap();
                self.calls.lock().unwrap().push(format!("sync {image}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                if image == "done" {
                    SyncOutcome::Terminal
                } else {
                    SyncOutcome::RequeueAfter(Duration::from_secs(if n == 0 { 3600 } else { 1 }))
                }
            })
        }
        fn sync_terminating_pod<'a>(&'a self, _pod: &'a Pod, grace: Duration) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                self.calls
                    .lock()
                    .unwrap()
                    .push(format!("terminating {}s", grace.as_secs()));
            })
        }
        fn sync_terminated_pod<'a>(&'a self, _pod: &'a Pod) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                self.calls.lock().unwrap().push("terminated".into());
            })
        }
    }

    fn pod(image: &str, deleting: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"terminationGracePeriodSeconds": 7, "containers": [{"name": "c", "image": image}]}
        }))
        .unwrap();
        if deleting {
            p.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
            );
        }
        p
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    #[tokio::test]
    async fn updates_coalesce_and_deletion_terminates_with_the_grace_period() {
        let r = Arc::new(Recorder::default());
        let w = PodWorkers::new(Arc::clone(&r), Duration::from_secs(60));
        w.update_pod(pod("a", false));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Two updates during the first sync: only the latest is synced next.
        w.update_pod(pod("b", false));
        w.update_pod(pod("c", false));
        settle().await;
        w.update_pod(pod("c", true));
        settle().await;
        assert_eq!(
            *r.calls.lock().unwrap(),
            vec!["sync a", "sync c", "terminating 7s", "terminated"]
        );
        assert!(w.is_empty(), "the worker ends after cleanup");
    }

    #[tokio::test]
    async fn terminal_pods_stop_and_vanished_pods_are_cleaned_up() {
        let r = Arc::new(Recorder::default());
        let w = PodWorkers::new(Arc::clone(&r), Duration::from_secs(60));
        w.update_pod(pod("done", false));
        settle().await;
        assert_eq!(
            *r.calls.lock().unwrap(),
            vec!["sync done", "terminating 0s"]
        );
        w.delete_pod(&pod("done", false));
        settle().await;
        assert_eq!(
            *r.calls.lock().unwrap(),
            vec![
                "sync done",
                "terminating 0s",
                "terminating 0s",
                "terminated"
            ]
        );
        assert!(w.is_empty());
    }

    /// The agent's uninstall: every running pod stopped with no grace and cleaned up, and
    /// every worker gone.
    #[tokio::test]
    async fn delete_all_stops_and_cleans_up_every_pod() {
        let r = Arc::new(Recorder::default());
        let w = PodWorkers::new(Arc::clone(&r), Duration::from_secs(60));
        w.update_pod(pod("a", false));
        settle().await;
        assert_eq!(w.pods().len(), 1);
        w.delete_all();
        settle().await;
        assert_eq!(
            *r.calls.lock().unwrap(),
            vec!["sync a", "terminating 0s", "terminated"]
        );
        assert!(w.is_empty());
        assert!(w.pods().is_empty());
        // A pod seen after it gets no worker.
        w.update_pod(pod("b", false));
        settle().await;
        assert!(w.is_empty());
        assert_eq!(r.calls.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn resync_wakes_the_worker_before_its_requeue() {
        let r = Arc::new(Recorder::default());
        let w = PodWorkers::new(Arc::clone(&r), Duration::from_secs(3600));
        w.update_pod(pod("a", false));
        settle().await;
        // The first sync asked for an hour; a poke syncs now.
        w.resync("u1");
        w.resync("unknown");
        settle().await;
        assert_eq!(*r.calls.lock().unwrap(), vec!["sync a", "sync a"]);
    }

    #[test]
    fn grace_comes_from_the_deletion_then_the_spec() {
        let mut p = pod("a", true);
        assert_eq!(termination_grace(&p), Duration::from_secs(7));
        p.metadata.deletion_grace_period_seconds = Some(2);
        assert_eq!(termination_grace(&p), Duration::from_secs(2));
        p.spec.as_mut().unwrap().termination_grace_period_seconds = None;
        p.metadata.deletion_grace_period_seconds = None;
        assert_eq!(termination_grace(&p), Duration::from_secs(30));
    }

    /// kuberuntime_container_test.go TestSetTerminationGracePeriod's cases.
    #[test]
    fn a_probe_failure_kill_uses_the_probes_grace() {
        use k8s_openapi::api::core::v1::Probe;
        let probe = |g: Option<i64>| Probe {
            termination_grace_period_seconds: g,
            ..Default::default()
        };
        let c = Container {
            name: "c".into(),
            liveness_probe: Some(probe(Some(5))),
            startup_probe: Some(probe(Some(9))),
            ..Default::default()
        };
        let unset = Container {
            liveness_probe: Some(probe(None)),
            ..c.clone()
        };
        let mut p = pod("a", false);
        p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(60);
        let secs = Duration::from_secs;
        let cases = [
            (Some(&c), Some(ContainerKillReason::LivenessProbe), secs(5)),
            (Some(&c), Some(ContainerKillReason::StartupProbe), secs(9)),
            (Some(&c), Some(ContainerKillReason::Unknown), secs(60)),
            (Some(&c), None, secs(60)),
            (
                Some(&unset),
                Some(ContainerKillReason::LivenessProbe),
                secs(60),
            ),
            (None, Some(ContainerKillReason::LivenessProbe), secs(60)),
        ];
        for (container, reason, want) in cases {
            assert_eq!(kill_grace(&p, container, reason), want, "{reason:?}");
        }
        // A deletion's grace wins over the probe's.
        p.metadata.deletion_grace_period_seconds = Some(3);
        assert_eq!(
            kill_grace(&p, Some(&c), Some(ContainerKillReason::LivenessProbe)),
            secs(3)
        );
    }
}
