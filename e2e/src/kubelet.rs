//! A kubelet stand-in: it watches the Pods of one namespace and writes the status a kubelet
//! would once the containers run (phase Running, pod IP, container statuses, the Ready
//! conditions). Controller tests do not use it: they run their pods on real
//! rekube-node-agent processes ([`crate::agent`]). It stays only where an agent cannot
//! stand, each user saying why: the scheduler's tests (many nodes of test-chosen capacity,
//! labels and taints, lost by stopping their heartbeat, which an agent's Node cannot be),
//! the node lifecycle test (a pod status on such a node), and the controller benchmark
//! (it drives upstream's controllers on core/v1 Pods too, which no rekube agent runs).
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use rekube_crds::Pod;

pub type ReadyRule = Arc<dyn Fn(&Pod) -> bool + Send + Sync>;

/// Every pod becomes ready.
pub fn every_pod_ready() -> ReadyRule {
    Arc::new(|_: &Pod| true)
}

static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// The status the kubelet would report for `pod` running, ready or not.
pub fn running_status(pod: &Pod, ready: bool, now: jiff::Timestamp) -> PodStatus {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    let ip = format!("10.244.{}.{}", (n >> 8) & 0xff, n & 0xff);
    let t = Some(Time(now));
    let flag = |b: bool| if b { "True" } else { "False" }.to_string();
    let cond = |type_: &str, status: String| PodCondition {
        type_: type_.into(),
        status,
        last_transition_time: t.clone(),
        ..Default::default()
    };
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    PodStatus {
        phase: Some("Running".into()),
        host_ip: Some("192.0.2.1".into()),
        pod_ip: Some(ip.clone()),
        pod_ips: Some(vec![PodIP { ip }]),
        start_time: t.clone(),
        conditions: Some(vec![
            cond("PodReadyToStartContainers", flag(true)),
            cond("Initialized", flag(true)),
            cond("ContainersReady", flag(ready)),
            cond("Ready", flag(ready)),
            cond("PodScheduled", flag(true)),
        ]),
        container_statuses: Some(
            containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    ready,
                    started: Some(true),
                    restart_count: 0,
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: t.clone(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Runs the stand-in for the rekube Pods of `namespace` until the handle is dropped.
pub fn start(client: kube::Client, namespace: &str, ready: ReadyRule) -> KubeletHandle {
    let ar = kube::api::ApiResource::erase::<Pod>(&());
    start_for(Api::namespaced_with(client, namespace, &ar), ready)
}

/// Runs the stand-in for the pods `api` lists: rekube Pods, or built-in core/v1 Pods (the
/// benchmark drives upstream's controllers with it too). Both have the same body.
pub fn start_for(api: Api<DynamicObject>, ready: ReadyRule) -> KubeletHandle {
    start_filtered(api, ready, every_pod_ready())
}

/// As [`start_for`], acting only on the pods `acts_on` accepts: with a scheduler under
/// test, the pods bound to nodes whose kubelet is "alive" (a lost node's kubelet no longer
/// reports, so the pods it ran are left to the node lifecycle controller).
pub fn start_filtered(
    api: Api<DynamicObject>,
    ready: ReadyRule,
    acts_on: ReadyRule,
) -> KubeletHandle {
    let task = tokio::spawn(async move {
        let stream = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(obj)) = stream.next().await {
            let Ok(pod) =
                serde_json::from_value::<Pod>(serde_json::to_value(&obj).unwrap_or_default())
            else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() || !acts_on(&pod) {
                continue;
            }
            let want_ready = ready(&pod);
            let st = pod.status.clone().unwrap_or_default();
            let is_ready = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if st.phase.as_deref() == Some("Running") && is_ready == want_ready {
                continue;
            }
            let status = running_status(&pod, want_ready, jiff::Timestamp::now());
            let name = pod.metadata.name.clone().unwrap_or_default();
            let patch = serde_json::json!({ "status": status });
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing_warn(&name, &e);
            }
        }
    });
    KubeletHandle { task }
}

fn tracing_warn(name: &str, e: &kube::Error) {
    if !matches!(e, kube::Error::Api(s) if s.code == 404) {
        eprintln!("kubelet stand-in: status of pod {name}: {e}");
    }
}

/// Stops the stand-in when dropped.
pub struct KubeletHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
