//! The hollow node (upstream cmd/kubemark and pkg/kubemark/hollow_kubelet.go with the fake
//! runtime of pkg/kubelet/container/testing): a [`PodSyncer`] that runs nothing. It keeps
//! an in-memory [`PodRuntimeStatus`] per pod in which the sandbox is ready with an
//! address and every container runs from the first sync, and drives it with the real
//! decisions ([`compute_pod_actions`], [`generate_api_pod_status`]) and the real status
//! writes (status/status_manager.go `syncPod`: only when [`status_changed`], with the
//! pod's resourceVersion as precondition), so that scale tests exercise the API side of
//! the agent at the cost of no containers.
//!
//! Like the real syncer, it holds the finalizer [`FINALIZER`] on each pod it synced, so a
//! deleted pod stays (with its deletionTimestamp) until the agent has cleaned up
//! (kubelet.go `SyncTerminatingPod`, `SyncTerminatedPod`; upstream gets the same from
//! graceful deletion, which CRDs do not have).
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodStatus;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use rekube_crds::Pod;
use serde_json::json;

use super::pod_workers::{BoxFuture, PodSyncer, SyncOutcome};
use crate::kubelet::pod_actions::{compute_pod_actions, is_restartable_init_container};
use crate::kubelet::prober::ProbeResults;
use crate::kubelet::runtime_status::{
    ContainerRuntimeStatus, ContainerState, PodRuntimeStatus, SandboxState, SandboxStatus,
    hash_container,
};
use crate::kubelet::status_generate::{PodStatusInputs, generate_api_pod_status, status_changed};

/// The finalizer the agent puts on the pods it runs and removes once they are cleaned up
/// (the one the chart's NodeRestriction policy lets an agent change on its pods).
pub const FINALIZER: &str = rekube_crds::NODE_AGENT_FINALIZER;

/// How often a hollow pod is re-synced when nothing happens to it.
const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("patching pod {pod}: {source}")]
    Patch { pod: String, source: kube::Error },
    #[error("reading pod {pod}: {source}")]
    Get { pod: String, source: kube::Error },
}

/// The pod's `namespace/name`, for messages.
fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The `n`th pod address of the node (n from 0): host `n + 2` of `pod_cidr` (an IPv4
/// CIDR; `.0` is the network and `.1` the gateway by convention), wrapping within the
/// range; without a CIDR, `10.88.x.y` (podman's default network) counting from
/// `10.88.0.2`.
pub fn pod_ip(pod_cidr: Option<&str>, n: u32) -> String {
    let parsed = pod_cidr.and_then(|c| {
        let (addr, bits) = c.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let bits: u32 = bits.parse().ok().filter(|b| *b <= 30)?;
        Some((u32::from(addr), bits))
    });
    let (base, bits) = parsed.unwrap_or((u32::from(Ipv4Addr::new(10, 88, 0, 0)), 16));
    let size = 1u64 << (32 - bits);
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    // Usable hosts: from .2 to the one before broadcast.
    let usable = (size - 3).max(1);
    let host = 2 + (u64::from(n) % usable) as u32;
    Ipv4Addr::from((base & mask) | host).to_string()
}

/// One hollow pod.
#[derive(Default)]
struct HollowPod {
    runtime: PodRuntimeStatus,
    next_id: u64,
}

/// The simulated runtime's syncer.
pub struct HollowSyncer {
    client: Client,
    pod_cidr: Option<String>,
    host_ips: Vec<String>,
    pods: Mutex<HashMap<String, HollowPod>>,
    next_ip: Mutex<u32>,
}

impl HollowSyncer {
    /// A syncer for the node with `pod_cidr` (spec.podCIDR) and addresses `host_ips`.
    pub fn new(client: Client, pod_cidr: Option<String>, host_ips: Vec<String>) -> Self {
        HollowSyncer {
            client,
            pod_cidr,
            host_ips,
            pods: Mutex::new(HashMap::new()),
            next_ip: Mutex::new(0),
        }
    }

    fn api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
    }

    /// Carries out the sync's decisions on the in-memory runtime (kuberuntime_manager.go
    /// `SyncPod` with every runtime call succeeding at once), and returns the runtime
    /// view to report.
    fn apply_actions(&self, pod: &Pod) -> PodRuntimeStatus {
        let uid = pod.uid().unwrap_or_default();
        let mut pods = self.pods.lock().unwrap();
        let state = pods.entry(uid.clone()).or_insert_with(|| HollowPod {
            runtime: PodRuntimeStatus {
                uid,
                name: pod.name_any(),
                namespace: pod.namespace().unwrap_or_default(),
                ..Default::default()
            },
            next_id: 0,
        });
        let actions = compute_pod_actions(pod, &state.runtime, &ProbeResults::default());
        let now = Timestamp::now();
        let exit = |c: &mut ContainerRuntimeStatus| {
            if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                c.state = ContainerState::Exited;
                c.finished_at = Some(now);
                c.exit_code = 137;
                c.reason = Some("Error".into());
            }
        };
        if actions.kill_pod {
            state.runtime.containers.iter_mut().for_each(exit);
            for s in &mut state.runtime.sandboxes {
                s.state = SandboxState::NotReady;
            }
        } else {
            for c in &mut state.runtime.containers {
                if actions.containers_to_kill.contains_key(&c.id) {
                    exit(c);
                }
            }
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network.unwrap_or(false);
        if actions.create_sandbox {
            if actions.attempt > 0 {
                // A new sandbox: the old instances go (upstream purges init containers).
                state.runtime.containers.clear();
            }
            let ips = if host_network {
                None
            } else {
                let mut next = self.next_ip.lock().unwrap();
                let ip = pod_ip(self.pod_cidr.as_deref(), *next);
                *next = next.wrapping_add(1);
                Some(vec![ip])
            };
            state.next_id += 1;
            state.runtime.sandboxes.push(SandboxStatus {
                id: format!("hollow-{}-sandbox-{}", state.runtime.uid, state.next_id),
                state: SandboxState::Ready,
                attempt: actions.attempt,
                created_at: now,
                host_network,
                network_namespace_path: None,
                ips,
            });
        }
        let sandbox_id = state
            .runtime
            .active_sandbox()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let mut start = |c: &k8s_openapi::api::core::v1::Container, run: bool| {
            let restarts = state
                .runtime
                .find_container_status_by_name(&c.name)
                .map_or(0, |s| s.restart_count + 1);
            state.next_id += 1;
            state.runtime.containers.push(ContainerRuntimeStatus {
                id: format!("hollow-{}-{}", state.runtime.uid, state.next_id),
                name: c.name.clone(),
                sandbox_id: sandbox_id.clone(),
                state: if run {
                    ContainerState::Running
                } else {
                    ContainerState::Exited
                },
                created_at: now,
                started_at: Some(now),
                finished_at: (!run).then_some(now),
                exit_code: 0,
                reason: (!run).then(|| "Completed".to_string()),
                message: None,
                image: c.image.clone().unwrap_or_default(),
                image_id: String::new(),
                image_ref: String::new(),
                restart_count: restarts,
                hash: hash_container(c),
            });
        };
        for i in &actions.ephemeral_containers_to_start {
            if let Some(e) = spec.ephemeral_containers.as_ref().and_then(|e| e.get(*i)) {
                // An ephemeral container is a container for the runtime.
                let c: k8s_openapi::api::core::v1::Container =
                    serde_json::from_value(serde_json::to_value(e).unwrap_or_default())
                        .unwrap_or_default();
                start(&c, true);
            }
        }
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        for i in &actions.init_containers_to_start {
            if let Some(c) = inits.get(*i) {
                // A regular init container completes at once; a sidecar keeps running.
                start(c, is_restartable_init_container(c));
            }
        }
        for i in &actions.containers_to_start {
            if let Some(c) = spec.containers.get(*i) {
                start(c, true);
            }
        }
        state.runtime.clone()
    }

    fn generate(&self, pod: &Pod, runtime: &PodRuntimeStatus) -> PodStatus {
        generate_api_pod_status(
            pod,
            &PodStatusInputs {
                runtime,
                probe_results: &ProbeResults::default(),
                waiting_reasons: &BTreeMap::new(),
                host_ips: &self.host_ips,
                pod_is_terminal: false,
                now: Timestamp::now(),
            },
        )
    }

    async fn sync(&self, pod: &Pod) -> Result<(), Error> {
        let pod = add_finalizer(&self.api(pod), pod).await?;
        let runtime = self.apply_actions(&pod);
        write_status(&self.api(&pod), &pod, |p| self.generate(p, &runtime))
            .await
            .map(|_| ())
    }
}

/// status_manager.go `syncPod`: writes the status `generate` makes for the pod when it
/// changed ([`status_changed`]), with the pod's resourceVersion as precondition; on a
/// conflict, reads the pod and tries once more. Returns the status generated last.
pub async fn write_status(
    api: &Api<Pod>,
    pod: &Pod,
    generate: impl Fn(&Pod) -> PodStatus,
) -> Result<PodStatus, Error> {
    let mut current = pod.clone();
    let mut status = generate(&current);
    for attempt in 0..2 {
        if !status_changed(&current.status.clone().unwrap_or_default(), &status) {
            return Ok(status);
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": status,
        });
        match api
            .patch_status(
                &current.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return Ok(status),
            Err(e) if attempt == 0 && is_conflict(&e) => {
                current = api
                    .get(&current.name_any())
                    .await
                    .map_err(|source| Error::Get {
                        pod: pod_key(pod),
                        source,
                    })?;
                status = generate(&current);
            }
            Err(source) => {
                return Err(Error::Patch {
                    pod: pod_key(pod),
                    source,
                });
            }
        }
    }
    Ok(status)
}

/// Puts [`FINALIZER`] on `pod` if it is not there (a merge patch replacing the list, with
/// the resourceVersion as precondition; on a conflict the fresh pod is patched once
/// more). Returns the pod as written.
pub async fn add_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<Pod, Error> {
    set_finalizer(api, pod, true)
        .await
        .map(|p| p.unwrap_or_else(|| pod.clone()))
}

/// Takes [`FINALIZER`] off `pod`, letting a deleted pod go; a pod already gone is fine.
pub async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    set_finalizer(api, pod, false).await.map(|_| ())
}

async fn set_finalizer(api: &Api<Pod>, pod: &Pod, present: bool) -> Result<Option<Pod>, Error> {
    let mut current = pod.clone();
    for attempt in 0..2 {
        let mut finalizers = current.finalizers().to_vec();
        if finalizers.iter().any(|f| f == FINALIZER) == present {
            return Ok(Some(current));
        }
        if present {
            finalizers.push(FINALIZER.to_string());
        } else {
            finalizers.retain(|f| f != FINALIZER);
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": current.resource_version(),
                "finalizers": finalizers,
            }
        });
        match api
            .patch(
                &current.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(p) => return Ok(Some(p)),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) if attempt == 0 && is_conflict(&e) => {
                match api.get_opt(&current.name_any()).await {
                    Ok(Some(p)) if p.uid() == pod.uid() => current = p,
                    Ok(_) => return Ok(None),
                    Err(source) => {
                        return Err(Error::Get {
                            pod: pod_key(pod),
                            source,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(Error::Patch {
                    pod: pod_key(pod),
                    source,
                });
            }
        }
    }
    Ok(None)
}

impl PodSyncer for HollowSyncer {
    fn sync_pod<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, SyncOutcome> {
        Box::pin(async move {
            match self.sync(pod).await {
                Ok(()) => SyncOutcome::RequeueAfter(RESYNC),
                Err(e) => {
                    tracing::warn!(error = %e, "hollow sync");
                    SyncOutcome::RequeueAfter(Duration::from_secs(1))
                }
            }
        })
    }

    fn sync_terminating_pod<'a>(&'a self, pod: &'a Pod, _grace: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Nothing runs: the containers are gone at once.
            self.pods
                .lock()
                .unwrap()
                .remove(&pod.uid().unwrap_or_default());
        })
    }

    fn sync_terminated_pod<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.pods
                .lock()
                .unwrap()
                .remove(&pod.uid().unwrap_or_default());
            if pod.metadata.deletion_timestamp.is_none() {
                return;
            }
            if let Err(e) = remove_finalizer(&self.api(pod), pod).await {
                tracing::warn!(error = %e, "hollow cleanup");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_come_from_the_pod_cidr_or_the_default_network() {
        assert_eq!(pod_ip(Some("10.244.3.0/24"), 0), "10.244.3.2");
        assert_eq!(pod_ip(Some("10.244.3.0/24"), 252), "10.244.3.254");
        assert_eq!(pod_ip(Some("10.244.3.0/24"), 253), "10.244.3.2", "wraps");
        assert_eq!(
            pod_ip(Some("10.244.3.7/24"), 1),
            "10.244.3.3",
            "host bits ignored"
        );
        assert_eq!(pod_ip(None, 0), "10.88.0.2");
        assert_eq!(pod_ip(None, 300), "10.88.1.46");
        assert_eq!(pod_ip(Some("fd00::/64"), 0), "10.88.0.2", "IPv4 only");
    }
}
