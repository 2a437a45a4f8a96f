//! The node's side of `helm uninstall`: when the agent's DaemonSet is deleted (the
//! release uninstalled, or `kubectl delete daemonset`), the agent removes everything it
//! made on the node before its pod goes: every pod stopped as if deleted (containers,
//! sandboxes with their CNI attachments, volumes, logs), then a sweep of what is left
//! (processes and cgroups under its cgroup parent, mounts and directories under its
//! state and run directories, the pod network's routes, masquerade table and bridge, the
//! service proxy's tables). A rolling update replaces the agent's pod but keeps the
//! DaemonSet, so an upgrade removes nothing.
//!
//! Upstream has no counterpart (a kubelet is removed with its machine; `kube-proxy
//! --cleanup` is run by hand). The deletion is learnt from a watch opened at start. The
//! chart's pre-delete hook ([`run_uninstall`], `rekube-node-agent uninstall`) deletes the
//! DaemonSet and waits for its pods to go before Helm deletes anything else, so each agent
//! still has its RBAC to release its pods (a Job runs on one node; every agent sees its
//! DaemonSet go). Without the hook (`helm uninstall --no-hooks`) the agents still clean
//! their nodes, but Helm deletes their Roles within milliseconds of the DaemonSet.
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use super::pod_workers::PodWorkers;
use super::sync_pod::RealSyncer;
use crate::runtime::sandbox::PodNetwork;

/// How long the pods of the node get to stop before the sweep kills what is left.
const STOP_PODS_TIMEOUT: Duration = Duration::from_secs(40);

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("invalid --owner-daemonset {0:?}: want NAMESPACE/NAME")]
    InvalidOwner(String),
    #[error(
        "the agent's DaemonSet {0} does not exist: it is being uninstalled, so the agent does not start"
    )]
    OwnerGone(String),
    #[error("reading the agent's DaemonSet {owner}: {source}")]
    ReadOwner {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("connecting to the apiserver: {0}")]
    Client(#[source] kube::Error),
    #[error("deleting the DaemonSet {owner}: {source}")]
    Delete {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the pods of the DaemonSet {owner}: {source}")]
    ListPods {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("the DaemonSet {owner} has no label selector")]
    NoSelector { owner: String },
    #[error("the agents' pods of {owner} did not go within {timeout:?}: {pods:?} (see their logs)")]
    Timeout {
        owner: String,
        timeout: Duration,
        pods: Vec<String>,
    },
}

/// `rekube-node-agent uninstall`: what the chart's pre-delete hook runs.
#[derive(clap::Args, Debug, Clone)]
pub struct UninstallCommand {
    /// The agents' DaemonSet, NAMESPACE/NAME.
    #[arg(long)]
    pub daemonset: String,
    /// How long to wait for the agents' pods to go.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The chart's pre-delete hook: deletes the agents' DaemonSet and waits until its pods are
/// gone. Each agent, seeing the DaemonSet go, stops its node's pods, removes what it made
/// on the node and releases its pods while the release's RBAC is still there (Helm
/// deletes the release's objects, its Roles with them, only after its hooks are done).
pub async fn run_uninstall(cmd: UninstallCommand) -> Result<(), UninstallError> {
    let owner: OwnerDaemonSet = cmd.daemonset.parse()?;
    let client = Client::try_default()
        .await
        .map_err(UninstallError::Client)?;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &owner.namespace);
    let Some(ds) =
        daemonsets
            .get_opt(&owner.name)
            .await
            .map_err(|source| UninstallError::ReadOwner {
                owner: owner.to_string(),
                source,
            })?
    else {
        println!("the DaemonSet {owner} is already gone");
        return Ok(());
    };
    let selector = ds
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .filter(|l| !l.is_empty())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .ok_or_else(|| UninstallError::NoSelector {
            owner: owner.to_string(),
        })?;
    daemonsets
        .delete(&owner.name, &kube::api::DeleteParams::background())
        .await
        .map_err(|source| UninstallError::Delete {
            owner: owner.to_string(),
            source,
        })?;
    println!(
        "deleted the DaemonSet {owner}: its agents are removing what they made on their nodes"
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, &owner.namespace);
    let list = kube::api::ListParams::default().labels(&selector);
    let deadline = tokio::time::Instant::now() + cmd.timeout;
    loop {
        let left: Vec<String> = pods
            .list(&list)
            .await
            .map_err(|source| UninstallError::ListPods {
                owner: owner.to_string(),
                source,
            })?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        if left.is_empty() {
            println!("the agents' pods are gone");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(UninstallError::Timeout {
                owner: owner.to_string(),
                timeout: cmd.timeout,
                pods: left,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The DaemonSet that runs this agent (`--owner-daemonset NAMESPACE/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerDaemonSet {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for OwnerDaemonSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for OwnerDaemonSet {
    type Err = UninstallError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(OwnerDaemonSet {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(UninstallError::InvalidOwner(s.into())),
        }
    }
}

/// What one event of the owner's watch says (pure, table-tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    Present,
    Deleted,
}

/// Follows the watch of one DaemonSet: deleted once it is deleted, being deleted
/// (deletionTimestamp set), or missing from a relist after it was seen.
#[derive(Debug, Default)]
struct OwnerTracker {
    seen: bool,
    in_this_list: bool,
}

impl OwnerTracker {
    fn observe(&mut self, event: &Event<DaemonSet>) -> Option<OwnerState> {
        let state = |ds: &DaemonSet| {
            if ds.metadata.deletion_timestamp.is_some() {
                OwnerState::Deleted
            } else {
                OwnerState::Present
            }
        };
        match event {
            Event::Apply(ds) => {
                self.seen = true;
                Some(state(ds))
            }
            Event::Delete(_) => Some(OwnerState::Deleted),
            Event::Init => {
                self.in_this_list = false;
                None
            }
            Event::InitApply(ds) => {
                self.in_this_list = true;
                self.seen = true;
                Some(state(ds))
            }
            Event::InitDone => (self.seen && !self.in_this_list).then_some(OwnerState::Deleted),
        }
    }
}

/// Checks at start that the owner exists (a pod started while its DaemonSet is being
/// deleted must not start the node's pods again).
pub async fn check_owner(client: &Client, owner: &OwnerDaemonSet) -> Result<(), UninstallError> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &owner.namespace);
    match api.get_opt(&owner.name).await {
        Ok(Some(ds)) if ds.metadata.deletion_timestamp.is_none() => Ok(()),
        Ok(_) => Err(UninstallError::OwnerGone(owner.to_string())),
        Err(source) => Err(UninstallError::ReadOwner {
            owner: owner.to_string(),
            source,
        }),
    }
}

/// Resolves once the owner DaemonSet is deleted; never while it stays.
pub async fn owner_deleted(client: Client, owner: OwnerDaemonSet) {
    let api: Api<DaemonSet> = Api::namespaced(client, &owner.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", owner.name));
    let stream = watcher::watcher(api, config).default_backoff();
    futures_util::pin_mut!(stream);
    let mut tracker = OwnerTracker::default();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if tracker.observe(&event) == Some(OwnerState::Deleted) {
                    tracing::info!(daemonset = %owner, "the agent's DaemonSet was deleted");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(daemonset = %owner, error = %e, "watching the agent's DaemonSet; retrying")
            }
        }
    }
    std::future::pending::<()>().await
}

/// What the agent removes from the node when it is uninstalled.
pub struct NodeTeardown {
    pub workers: Arc<PodWorkers<RealSyncer>>,
    pub syncer: Arc<RealSyncer>,
    pub network: Arc<dyn PodNetwork>,
    /// The agent ran the service proxy: its tables go.
    pub proxy: bool,
    /// The agent kept routes to other nodes' pods and the masquerade table (cni).
    pub pod_routes: bool,
}

impl NodeTeardown {
    /// Every pod of the node stopped as if deleted from the API (its containers killed,
    /// its sandbox, volumes and logs removed) and released (the agent's finalizer taken
    /// off, so that deleting it later does not wait for an agent that is gone; the
    /// objects are otherwise left alone), then the volumes of pods known only from the
    /// disk. Runs while the volume manager's loops still run, since they tear the
    /// volumes down.
    pub async fn stop_pods(&self) {
        let pods = self.workers.pods();
        tracing::info!(
            pods = pods.len(),
            "uninstalling: stopping every pod of the node"
        );
        self.workers.delete_all();
        let deadline = tokio::time::Instant::now() + STOP_PODS_TIMEOUT;
        while !self.workers.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !self.workers.is_empty() {
            tracing::warn!(
                left = self.workers.len(),
                "uninstalling: pods still stopping after {STOP_PODS_TIMEOUT:?}; the sweep kills them"
            );
        }
        for pod in &pods {
            self.syncer.release_pod(pod).await;
        }
        self.syncer.unmount_all_pod_volumes().await;
    }

    /// After the agent's loops stopped: what is left of the runtime, the pod network and
    /// the proxy. Each step runs even if one before failed; the failures are returned.
    pub async fn remove_node_state(self) -> Vec<String> {
        let mut failures = Vec::new();
        let runtime = self.syncer.runtime.clone();
        match tokio::task::spawn_blocking(move || runtime.remove_leftovers()).await {
            Ok(Ok(l)) => tracing::info!(
                cgroups = l.cgroups,
                mounts = l.mounts,
                entries = l.entries,
                "uninstalling: removed the runtime's cgroups, mounts and directories"
            ),
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(format!("removing the runtime's leftovers: {e}")),
        }
        let network = Arc::clone(&self.network);
        match tokio::task::spawn_blocking(move || network.garbage_collect(&[])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("releasing the pod network attachments: {e}")),
            Err(e) => failures.push(format!("releasing the pod network attachments: {e}")),
        }
        if self.proxy
            && let Err(e) = crate::proxy::server::cleanup_leftovers(None)
        {
            failures.push(format!("removing the service proxy's rules: {e}"));
        }
        if self.pod_routes
            && let Err(e) = super::pod_routes::cleanup(None)
        {
            failures.push(format!("removing the pod network's routes: {e}"));
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(deleting: bool) -> DaemonSet {
        let mut v =
            json!({"metadata": {"name": "rekube-node-agent", "namespace": "rekube-system"}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-12-06T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn owner_flag_is_namespace_slash_name() {
        let cases = [
            ("rekube-system/rekube-node-agent", true),
            ("rekube-node-agent", false),
            ("/x", false),
            ("ns/", false),
            ("a/b/c", false),
        ];
        for (flag, ok) in cases {
            assert_eq!(flag.parse::<OwnerDaemonSet>().is_ok(), ok, "{flag}");
        }
        assert_eq!(
            "ns/ds".parse::<OwnerDaemonSet>().unwrap().to_string(),
            "ns/ds"
        );
    }

    #[test]
    fn the_owner_is_deleted_by_a_delete_a_deletion_timestamp_or_a_relist_without_it() {
        use Event::*;
        type Case = (&'static str, Vec<Event<DaemonSet>>, Option<OwnerState>);
        let cases: Vec<Case> = vec![
            (
                "listed, then updated",
                vec![Init, InitApply(ds(false)), InitDone, Apply(ds(false))],
                Some(OwnerState::Present),
            ),
            (
                "listed, then deleted",
                vec![Init, InitApply(ds(false)), InitDone, Delete(ds(false))],
                Some(OwnerState::Deleted),
            ),
            (
                "a foreground deletion sets deletionTimestamp first",
                vec![Init, InitApply(ds(false)), InitDone, Apply(ds(true))],
                Some(OwnerState::Deleted),
            ),
            (
                "gone from a relist after it was seen (the deletion missed)",
                vec![Init, InitApply(ds(false)), InitDone, Init, InitDone],
                Some(OwnerState::Deleted),
            ),
            (
                "never seen: not a deletion (check_owner refuses to start)",
                vec![Init, InitDone],
                None,
            ),
            (
                "still there after a relist",
                vec![
                    Init,
                    InitApply(ds(false)),
                    InitDone,
                    Init,
                    InitApply(ds(false)),
                    InitDone,
                ],
                None,
            ),
        ];
        for (name, events, want) in cases {
            let mut t = OwnerTracker::default();
            let mut last = None;
            for e in &events {
                let got = t.observe(e);
                if got == Some(OwnerState::Deleted) {
                    last = got;
                    break;
                }
                last = got;
            }
            assert_eq!(last, want, "{name}");
        }
    }
}
