//! Registration and the two heartbeats (upstream pkg/kubelet/kubelet_node_status.go
//! `registerWithAPIServer` / `syncNodeStatus` and pkg/kubelet/nodelease): the agent
//! creates its Node, renews a Lease named after it in the node-lease namespace every
//! renew interval (upstream: a quarter of the 40 s lease duration), and posts the Node's
//! status every `node_status_update_frequency` when it changed, or every
//! `node_status_report_frequency` regardless (upstream defaults 10 s and 5 min).
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use rekube_crds::Node;
use serde_json::json;

use super::node_status::{self, MachineInfo, Readiness, Reservation, Usage};
use crate::volume::manager::attach::VolumesInUse;

/// A stop signal: a watch channel whose change means stop.
pub type Stop = tokio::sync::watch::Receiver<bool>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {action}: {source}")]
    Api {
        node: String,
        action: &'static str,
        source: kube::Error,
    },
}

/// Timings of the heartbeats.
#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    pub lease_namespace: String,
    pub lease_duration_seconds: i32,
    pub renew_interval: Duration,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            lease_namespace: "rekube-node-lease".into(),
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
        }
    }
}

/// upstream registerWithAPIServer/tryRegisterWithAPIServer: create the Node; an existing
/// one is taken over (its labels completed). Returns the Node as stored.
pub async fn register_node(client: &Client, node: &Node) -> Result<Node, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    let err = |action| {
        let node = name.clone();
        move |source| Error::Api {
            node,
            action,
            source,
        }
    };
    match api.create(&PostParams::default(), node).await {
        Ok(n) => {
            tracing::info!(node = %name, "registered the node");
            Ok(n)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": node.metadata.labels, "annotations": node.metadata.annotations}});
            let n = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err("reconciling the existing node"))?;
            tracing::info!(node = %name, "node already registered");
            Ok(n)
        }
        Err(e) => Err(err("registering")(e)),
    }
}

/// The Lease as the agent renews it, owned by its Node so it goes with the Node.
pub fn desired_lease(node: &Node, config: &HeartbeatConfig, now: Timestamp) -> Lease {
    let name = node.name_any();
    Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(config.lease_namespace.clone()),
            owner_references: node.meta().uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: rekube_crds::API_VERSION.into(),
                    kind: "Node".into(),
                    name: name.clone(),
                    uid,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name),
            lease_duration_seconds: Some(config.lease_duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// One renewal (upstream nodelease controller sync): create or update the Lease.
pub async fn renew_lease(
    client: &Client,
    node: &Node,
    config: &HeartbeatConfig,
) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.lease_namespace);
    let desired = desired_lease(node, config, Timestamp::now());
    let name = node.name_any();
    let err = |action| {
        let node = name.clone();
        move |source| Error::Api {
            node,
            action,
            source,
        }
    };
    match api.get_opt(&name).await.map_err(err("reading the lease"))? {
        Some(mut lease) => {
            lease.spec = desired.spec;
            if lease.metadata.owner_references.is_none() {
                lease.metadata.owner_references = desired.metadata.owner_references;
            }
            api.replace(&name, &PostParams::default(), &lease)
                .await
                .map_err(err("renewing the lease"))?;
        }
        None => {
            api.create(&PostParams::default(), &desired)
                .await
                .map_err(err("creating the lease"))?;
        }
    }
    Ok(())
}

/// Renews the Lease until `stop`; failures are logged and retried at the next tick
/// (upstream retries sooner, with backoff, up to the renew interval).
pub async fn run_lease(client: Client, node: Node, config: HeartbeatConfig, mut stop: Stop) {
    loop {
        if let Err(e) = renew_lease(&client, &node, &config).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(config.renew_interval) => {}
        }
    }
}

/// What the status loop reads each time.
pub trait StatusSource: Send + Sync {
    fn usage(&self) -> Usage;
    fn readiness(&self) -> Readiness;
}

/// Posts the Node's status until `stop` (upstream syncNodeStatus / updateNodeStatus),
/// with the volume manager's volumes in use, marked reported once the Node lists them
/// (upstream's `markVolumesFromNode`); a change of them posts at once.
#[allow(clippy::too_many_arguments)]
pub async fn run_node_status(
    client: Client,
    name: String,
    machine: MachineInfo,
    reservation: Reservation,
    source: Arc<dyn StatusSource>,
    volumes_in_use: Arc<VolumesInUse>,
    config: HeartbeatConfig,
    mut stop: Stop,
) {
    let api: Api<Node> = Api::all(client);
    let mut last_posted: Option<(k8s_openapi::api::core::v1::NodeStatus, Instant)> = None;
    loop {
        let previous = match api.get_status(&name).await {
            Ok(n) => n.status,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "reading the node");
                None
            }
        };
        let status = node_status::node_status(
            &machine,
            &reservation,
            &source.usage(),
            &source.readiness(),
            previous.as_ref(),
            Timestamp::now(),
        );
        let status = node_status::with_volumes_in_use(status, volumes_in_use.get());
        let due = last_posted
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= config.node_status_report_frequency);
        if due || node_status::status_changed(previous.as_ref(), &status) {
            let mut patch = json!({"status": status});
            // A merge patch keeps what it omits: no volume in use is written as null.
            patch["status"]["volumesInUse"] = json!(status.volumes_in_use);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    volumes_in_use.mark_volumes_as_reported_in_use(
                        status.volumes_in_use.as_deref().unwrap_or_default(),
                    );
                    last_posted = Some((status, Instant::now()));
                }
                Err(e) => tracing::warn!(node = %name, error = %e, "posting node status"),
            }
        } else {
            volumes_in_use.mark_volumes_as_reported_in_use(
                previous
                    .as_ref()
                    .and_then(|s| s.volumes_in_use.as_deref())
                    .unwrap_or_default(),
            );
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = volumes_in_use.changed() => {}
            _ = tokio::time::sleep(config.node_status_update_frequency) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_owned_by_the_node_and_named_after_it() {
        let mut node =
            node_status::initial_node("n1", &MachineInfo::default(), &Default::default());
        node.metadata.uid = Some("uid-1".into());
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let lease = desired_lease(&node, &HeartbeatConfig::default(), t);
        assert_eq!(lease.metadata.name.as_deref(), Some("n1"));
        assert_eq!(
            lease.metadata.namespace.as_deref(),
            Some("rekube-node-lease")
        );
        let owner = &lease.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.api_version.as_str()
            ),
            ("Node", "uid-1", "rekube.io/v1")
        );
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(t)));
    }
}
