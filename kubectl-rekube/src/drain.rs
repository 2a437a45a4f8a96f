//! The I/O of cordon and drain (upstream k8s.io/kubectl/pkg/drain/cordon.go and drain.go).
//! rekube Pods have no eviction subresource (and rekube has no PodDisruptionBudgets), so
//! an eviction is a graceful DELETE with the pod's UID as precondition; the node agent
//! then runs PreStop and the grace period before the pod is gone.
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use rekube_crds::{Node, Pod};
use serde_json::json;

use crate::filters::{DrainFlags, get_pods_for_deletion};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {action}: {source}")]
    Api {
        node: String,
        action: &'static str,
        source: kube::Error,
    },
    #[error("unable to drain node {node:?} due to error: {}", .errors.join(", "))]
    Refused { node: String, errors: Vec<String> },
    #[error("node {node}: timed out after {timeout:?} waiting for pods to be deleted: {}", .pods.join(", "))]
    Timeout {
        node: String,
        timeout: Duration,
        pods: Vec<String>,
    },
}

/// upstream RunCordonOrUncordon: sets `spec.unschedulable`, printing what kubectl prints.
pub async fn cordon(client: &Client, node: &str, unschedulable: bool) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let current = api.get(node).await.map_err(|source| Error::Api {
        node: node.into(),
        action: "reading",
        source,
    })?;
    let word = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    if current
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
        == unschedulable
    {
        println!("node/{node} already {word}");
        return Ok(());
    }
    let patch =
        json!({"spec": {"unschedulable": if unschedulable { json!(true) } else { json!(null) }}});
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Api {
            node: node.into(),
            action: "updating spec.unschedulable",
            source,
        })?;
    println!("node/{node} {word}");
    Ok(())
}

/// upstream RunNodeDrain: cordon, pick the pods, evict them, wait until they are gone.
pub async fn drain(
    client: &Client,
    node: &str,
    flags: &DrainFlags,
    grace_period: i64,
    timeout: Duration,
) -> Result<(), Error> {
    cordon(client, node, true).await?;
    let all: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let pods = all
        .list(&on_node)
        .await
        .map_err(|source| Error::Api {
            node: node.into(),
            action: "listing its pods",
            source,
        })?
        .items;
    let decision = get_pods_for_deletion(&pods, flags);
    if !decision.errors.is_empty() {
        return Err(Error::Refused {
            node: node.into(),
            errors: decision.errors,
        });
    }
    for w in &decision.warnings {
        eprintln!("Warning: {w}");
    }
    let mut pending = Vec::new();
    for key in &decision.delete {
        let Some(pod) = pods
            .iter()
            .find(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()) == *key)
        else {
            continue;
        };
        println!("evicting pod {key}");
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: u32::try_from(grace_period).ok(),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => pending.push((api, pod.name_any(), pod.uid())),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                println!("pod/{} evicted", pod.name_any())
            }
            Err(source) => {
                return Err(Error::Api {
                    node: node.into(),
                    action: "evicting a pod",
                    source,
                });
            }
        }
    }
    // upstream waitForDelete: gone, or replaced by a pod of the same name and another UID.
    let started = Instant::now();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (api, name, uid) in pending {
            match api.get_opt(&name).await {
                Ok(Some(p)) if p.uid() == uid => still.push((api, name, uid)),
                Ok(_) => println!("pod/{name} evicted"),
                Err(_) => still.push((api, name, uid)),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if !timeout.is_zero() && started.elapsed() > timeout {
            return Err(Error::Timeout {
                node: node.into(),
                timeout,
                pods: pending.into_iter().map(|(_, n, _)| n).collect(),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("node/{node} drained");
    Ok(())
}
