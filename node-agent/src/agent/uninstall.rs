//! The node's side of `helm uninstall`: when the agent's pod is stopped and its DaemonSet
//! is gone (the release uninstalled, or `kubectl delete daemonset`), the agent removes
//! everything it made on the node before it exits: every pod stopped as if deleted
//! (containers, sandboxes with their CNI attachments, volumes, logs) and released from the
//! agent's finalizer, then a sweep of what is left (processes and cgroups under its cgroup
//! parent, mounts and directories under its state and run directories, the pod network's
//! routes, masquerade table and bridge, the service proxy's tables). A rolling update stops
//! the agent but keeps the DaemonSet; an orphaning delete of the DaemonSet keeps the pods:
//! neither removes anything.
//!
//! Upstream has no counterpart (a kubelet is removed with its machine; `kube-proxy
//! --cleanup` is run by hand). The chart's pre-delete hook ([`run_uninstall`],
//! `rekube-node-agent uninstall`) deletes the DaemonSet and waits for its pods to go before
//! Helm deletes anything else, so that each agent can still read its DaemonSet and release
//! its pods when its SIGTERM comes (a Job runs on one node; every agent sees its own stop).
//! Without the hook (`helm uninstall --no-hooks`) Helm deletes the agents' Roles with the
//! DaemonSet: an agent that cannot read its DaemonSet removes nothing, as for a restart.
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::{Api, Client};

use super::pod_workers::PodWorkers;
use super::sync_pod::RealSyncer;
use crate::runtime::sandbox::PodNetwork;

/// How long the pods of the node get to stop before the sweep kills what is left.
const STOP_PODS_TIMEOUT: Duration = Duration::from_secs(30);

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
        // A failed list is tried again until the deadline: the Job is not retried (a
        // second attempt would find the DaemonSet gone and succeed at once).
        let left: Vec<String> = match pods.list(&list).await {
            Ok(l) => l
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect(),
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(UninstallError::ListPods {
                    owner: owner.to_string(),
                    source,
                });
            }
            Err(e) => {
                eprintln!("listing the agents' pods: {e}; trying again");
                vec![String::from("(unknown)")]
            }
        };
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

/// What the agent's DaemonSet is when the agent is told to stop (pure, table-tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// There: a rolling update, a node drain or a pod deleted by hand. Nothing is removed.
    Present,
    /// Gone or being deleted, read with the agent's own RBAC: the release is uninstalled.
    Deleted,
    /// Not readable (its Role gone first: `helm uninstall --no-hooks`; an apiserver
    /// error): nothing is removed, as for a restart.
    Unknown,
}

/// The owner's state from one GET of it.
fn owner_state(got: &Result<Option<DaemonSet>, kube::Error>) -> OwnerState {
    match got {
        Ok(Some(ds)) if ds.metadata.deletion_timestamp.is_none() => OwnerState::Present,
        Ok(_) => OwnerState::Deleted,
        Err(_) => OwnerState::Unknown,
    }
}

/// Checks at start that the owner exists (a pod started while its DaemonSet is being
/// deleted must not start the node's pods again).
pub async fn check_owner(client: &Client, owner: &OwnerDaemonSet) -> Result<(), UninstallError> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &owner.namespace);
    let got = api.get_opt(&owner.name).await;
    match (owner_state(&got), got) {
        (OwnerState::Present, _) => Ok(()),
        (_, Err(source)) => Err(UninstallError::ReadOwner {
            owner: owner.to_string(),
            source,
        }),
        (_, Ok(_)) => Err(UninstallError::OwnerGone(owner.to_string())),
    }
}

/// Whether the agent's stop is the release's uninstall: asked when SIGTERM comes (the
/// agent's own pod is being deleted), so that only a DaemonSet deleted together with its
/// pods removes anything (`kubectl delete ds --cascade=orphan`, which keeps the pods, and a
/// rolling update, which keeps the DaemonSet, remove nothing).
pub async fn owner_state_at_stop(client: &Client, owner: &OwnerDaemonSet) -> OwnerState {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &owner.namespace);
    let got = api.get_opt(&owner.name).await;
    if let Err(e) = &got {
        tracing::warn!(daemonset = %owner, error = %e, "reading the agent's DaemonSet at stop: removing nothing");
    }
    owner_state(&got)
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
    fn only_a_readable_deletion_is_an_uninstall() {
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let cases = [
            (
                "there: a rolling update",
                Ok(Some(ds(false))),
                OwnerState::Present,
            ),
            (
                "being deleted (foreground)",
                Ok(Some(ds(true))),
                OwnerState::Deleted,
            ),
            ("gone", Ok(None), OwnerState::Deleted),
            ("its Role gone first", Err(forbidden), OwnerState::Unknown),
        ];
        for (name, got, want) in cases {
            assert_eq!(owner_state(&got), want, "{name}");
        }
    }
}
