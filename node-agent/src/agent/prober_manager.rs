//! The probe workers (upstream pkg/kubelet/prober/prober_manager.go, worker.go and
//! prober.go): one task per pod, container and probe type, following that container's
//! current instance. Each task asks its [`ProbeWorkerState`] when a probe is due, runs it
//! (exec in the container, an HTTP GET or a TCP connect through [`super::probe_net`], a
//! grpc health check through [`super::probe_grpc`]),
//! and publishes the changes to the shared [`ProbeResults`]; a change pokes the pod's
//! worker, whose sync then reads the results (Ready, started, a liveness kill).
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Probe};
use tokio::sync::watch;

use super::probe_grpc;
use super::probe_net::{self, Origin};
use crate::kubelet::prober::{
    GrpcReply, ProbeAction, ProbeResult, ProbeResults, ProbeType, ProbeWorkerState,
    exec_probe_result, grpc_probe_outcome, http_probe_outcome, resolve_probe_action,
};
use crate::runtime::{Container as RtContainer, Runtime};

/// How often a worker with nothing due looks again (a startup probe's success starts
/// liveness and readiness; upstream's ticker is the probe's period).
const IDLE_TICK: Duration = Duration::from_millis(500);

/// What one probe round found, and why (the event's message on failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub result: ProbeResult,
    pub output: String,
}

/// The container instance a worker probes, and where its network is.
#[derive(Clone)]
pub struct ProbeTarget {
    pub container: RtContainer,
    pub spec: Container,
    pub started_at: Timestamp,
    /// The pod's IP ("" until it has one: loopback inside the pod's namespace).
    pub pod_ip: String,
    /// The pod's network namespace (None: the host's).
    pub netns: Option<PathBuf>,
    pub pod_name: String,
    /// The container as an event's object ([`super::events::container_ref`]).
    pub event_ref: ObjectReference,
}

/// A failed probe, for the container's Unhealthy event: its object and the message.
pub type OnUnhealthy = Arc<dyn Fn(&ObjectReference, &str) + Send + Sync>;
/// A published change: the pod's uid.
pub type Poke = Arc<dyn Fn(&str) + Send + Sync>;

type WorkerKey = (String, String, ProbeType);

struct WorkerHandle {
    target: watch::Sender<Option<ProbeTarget>>,
    task: tokio::task::JoinHandle<()>,
}

/// upstream `prober.Manager`.
pub struct ProberManager {
    runtime: Runtime,
    results: Arc<Mutex<ProbeResults>>,
    workers: Mutex<HashMap<WorkerKey, WorkerHandle>>,
    poke: Mutex<Option<Poke>>,
    on_unhealthy: Mutex<Option<OnUnhealthy>>,
}

impl ProberManager {
    pub fn new(runtime: Runtime) -> Self {
        ProberManager {
            runtime,
            results: Arc::new(Mutex::new(ProbeResults::default())),
            workers: Mutex::new(HashMap::new()),
            poke: Mutex::new(None),
            on_unhealthy: Mutex::new(None),
        }
    }

    pub fn set_poke(&self, poke: Poke) {
        *self.poke.lock().unwrap() = Some(poke);
    }

    /// Called with (the container's object, message) for each failed probe (upstream
    /// records an `Unhealthy` event).
    pub fn set_on_unhealthy(&self, f: OnUnhealthy) {
        *self.on_unhealthy.lock().unwrap() = Some(f);
    }

    /// The results as they are now.
    pub fn results(&self) -> ProbeResults {
        self.results.lock().unwrap().clone()
    }

    /// upstream `AddPod` and `UpdatePodStatus`' worker bookkeeping: make sure each probe
    /// of `containers` has a worker following its current instance (`None`: not created
    /// yet).
    pub fn sync_pod(&self, uid: &str, containers: &[(Container, Option<ProbeTarget>)]) {
        let mut workers = self.workers.lock().unwrap();
        for (spec, target) in containers {
            for probe_type in [
                ProbeType::Startup,
                ProbeType::Readiness,
                ProbeType::Liveness,
            ] {
                let Some(probe) = probe_type.probe_of(spec).cloned() else {
                    continue;
                };
                let key = (uid.to_string(), spec.name.clone(), probe_type);
                if let Some(w) = workers.get(&key) {
                    let same = match (&*w.target.borrow(), target) {
                        (Some(a), Some(b)) => a.container.id() == b.container.id(),
                        (None, None) => true,
                        _ => false,
                    };
                    if !same {
                        w.target.send_replace(target.clone());
                    }
                    continue;
                }
                let (tx, rx) = watch::channel(target.clone());
                let task = tokio::spawn(worker_loop(WorkerContext {
                    uid: uid.to_string(),
                    probe_type,
                    probe,
                    runtime: self.runtime.clone(),
                    results: Arc::clone(&self.results),
                    poke: self.poke.lock().unwrap().clone(),
                    on_unhealthy: self.on_unhealthy.lock().unwrap().clone(),
                    target: rx,
                }));
                workers.insert(key, WorkerHandle { target: tx, task });
            }
        }
    }

    /// The pod is being deleted: liveness and startup results become Success so nothing
    /// restarts its containers during termination, and its workers stop (upstream's
    /// workers on `pod.DeletionTimestamp`).
    pub fn pod_deleting(&self, uid: &str) {
        let mut workers = self.workers.lock().unwrap();
        let keys: Vec<WorkerKey> = workers.keys().filter(|k| k.0 == uid).cloned().collect();
        let mut results = self.results.lock().unwrap();
        for key in keys {
            if let Some(w) = workers.remove(&key) {
                w.task.abort();
                if key.2 != ProbeType::Readiness
                    && let Some(t) = &*w.target.borrow()
                {
                    results.set(key.2, t.container.id(), ProbeResult::Success);
                }
            }
        }
    }

    /// The results of removed container instances go (container GC).
    pub fn forget_containers(&self, container_ids: &[String]) {
        let mut results = self.results.lock().unwrap();
        for id in container_ids {
            results.remove_container(id);
        }
    }

    /// upstream `RemovePod`: the workers stop and the results of `container_ids` go.
    pub fn remove_pod(&self, uid: &str, container_ids: &[String]) {
        let mut workers = self.workers.lock().unwrap();
        workers.retain(|k, w| {
            if k.0 == uid {
                w.task.abort();
                false
            } else {
                true
            }
        });
        let mut results = self.results.lock().unwrap();
        for id in container_ids {
            results.remove_container(id);
        }
    }
}

struct WorkerContext {
    uid: String,
    probe_type: ProbeType,
    probe: Probe,
    runtime: Runtime,
    results: Arc<Mutex<ProbeResults>>,
    poke: Option<Poke>,
    on_unhealthy: Option<OnUnhealthy>,
    target: watch::Receiver<Option<ProbeTarget>>,
}

impl WorkerContext {
    fn publish(&self, change: Option<crate::kubelet::prober::ResultChange>) {
        let Some(change) = change else { return };
        let changed = self.results.lock().unwrap().apply(&change);
        if changed && let Some(poke) = &self.poke {
            poke(&self.uid);
        }
    }

    /// The container's `started`: its startup probe succeeded, or it has none.
    fn started(&self, target: &ProbeTarget) -> bool {
        target.spec.startup_probe.is_none()
            || self
                .results
                .lock()
                .unwrap()
                .get(ProbeType::Startup, target.container.id())
                == Some(ProbeResult::Success)
    }
}

/// upstream `worker.run` and `doProbe`.
async fn worker_loop(mut cx: WorkerContext) {
    let mut state: Option<ProbeWorkerState> = None;
    loop {
        let target = cx.target.borrow_and_update().clone();
        let Some(target) = target else {
            if cx.target.changed().await.is_err() {
                return;
            }
            continue;
        };
        let id = target.container.id().to_string();
        match state.as_mut() {
            None => {
                let s = ProbeWorkerState::new(cx.probe_type, &cx.probe, &id, target.started_at);
                cx.publish(Some(s.initial_change()));
                state = Some(s);
            }
            Some(s) if s.container_id() != id => {
                let change = s.reset(&id, target.started_at);
                cx.publish(Some(change));
            }
            Some(_) => {}
        }
        let s = state.as_mut().expect("set above");
        if target.container.exit().is_some() {
            let change = s.container_not_running();
            cx.publish(change);
            if cx.target.changed().await.is_err() {
                return;
            }
            continue;
        }
        let due = s.due(cx.started(&target));
        let now = Timestamp::now();
        let wait = match due {
            None => IDLE_TICK,
            Some(t) if t > now => Duration::try_from(t.duration_since(now))
                .unwrap_or(IDLE_TICK)
                .min(IDLE_TICK),
            Some(_) => Duration::ZERO,
        };
        if !wait.is_zero() {
            tokio::select! {
                changed = cx.target.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let timeout = s.timing().timeout;
        let outcome = run_probe(&cx.runtime, &cx.probe, &target, timeout).await;
        let Some(outcome) = outcome else {
            // Unknown (the target could not be resolved): nothing recorded this round,
            // as upstream; try again next period.
            let period = s.timing().period;
            tokio::select! {
                changed = cx.target.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(period) => {}
            }
            continue;
        };
        // The container may have exited during the probe: that is not a probe failure.
        if target.container.exit().is_some() {
            continue;
        }
        if outcome.result == ProbeResult::Failure
            && let Some(f) = &cx.on_unhealthy
        {
            f(
                &target.event_ref,
                &format!(
                    "{} probe failed: {}",
                    cx.probe_type.as_str(),
                    outcome.output
                ),
            );
        }
        let change = s.observe(outcome.result, Timestamp::now());
        cx.publish(change);
    }
}

/// upstream `prober.runProbe` for one round; `None` when the probe cannot be run at all
/// (a bad port: upstream's `probe.Unknown` with an error).
pub async fn run_probe(
    runtime: &Runtime,
    probe: &Probe,
    target: &ProbeTarget,
    timeout: Duration,
) -> Option<ProbeOutcome> {
    let action = match resolve_probe_action(probe, &target.spec, &target.pod_ip, &target.pod_name) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(pod = %target.pod_name, container = %target.spec.name, error = %e, "probe");
            return None;
        }
    };
    let origin = Origin::of(target.netns.as_deref());
    let outcome = match action {
        ProbeAction::Exec { command } => {
            match runtime.exec_in(&target.container, &command, timeout).await {
                Ok(r) if r.timed_out => ProbeOutcome {
                    result: ProbeResult::Failure,
                    output: format!("command timed out after {timeout:?}"),
                },
                Ok(r) => ProbeOutcome {
                    result: exec_probe_result(r.exit_code),
                    output: String::from_utf8_lossy(&r.output).into_owned(),
                },
                Err(e) => ProbeOutcome {
                    result: ProbeResult::Failure,
                    output: e.to_string(),
                },
            }
        }
        ProbeAction::HttpGet(t) => match probe_net::http_get(&origin, &t, timeout).await {
            Ok(r) => {
                let o = http_probe_outcome(r.status, &r.body);
                ProbeOutcome {
                    result: o.result(),
                    output: match o {
                        crate::kubelet::prober::HttpProbeOutcome::Success => String::new(),
                        crate::kubelet::prober::HttpProbeOutcome::Warning(m)
                        | crate::kubelet::prober::HttpProbeOutcome::Failure(m) => m,
                    },
                }
            }
            Err(e) => ProbeOutcome {
                result: ProbeResult::Failure,
                output: e.to_string(),
            },
        },
        ProbeAction::TcpSocket { host, port } => {
            let dialled = match probe_net::resolve(&host, port).await {
                Ok(addr) => probe_net::dial(&origin, addr, timeout).await.map(drop),
                Err(e) => Err(e),
            };
            match dialled {
                Ok(()) => ProbeOutcome {
                    result: ProbeResult::Success,
                    output: String::new(),
                },
                Err(e) => ProbeOutcome {
                    result: ProbeResult::Failure,
                    output: e.to_string(),
                },
            }
        }
        ProbeAction::Grpc {
            host,
            port,
            service,
        } => {
            let addr = format!("{host}:{port}");
            let reply = match u16::try_from(port) {
                Ok(port) => match probe_net::resolve(&host, port).await {
                    Ok(sock) => probe_grpc::check(&origin, sock, &service, timeout).await,
                    Err(e) => GrpcReply::ConnectFailed {
                        cause: e.to_string(),
                    },
                },
                Err(_) => GrpcReply::ConnectFailed {
                    cause: format!("invalid port {port}"),
                },
            };
            let (result, output) = grpc_probe_outcome(&addr, timeout, &reply);
            ProbeOutcome { result, output }
        }
    };
    Some(outcome)
}
