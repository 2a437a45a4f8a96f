//! The Node's `spec.podCIDR`, followed with a watch on the agent's own Node (node IPAM
//! sets it after registration), for [`crate::runtime::network::PodCidrNetwork`].
use futures_util::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use rekube_crds::Node;

use crate::runtime::network::SharedPodCidr;

/// Keeps `target` equal to the Node's spec.podCIDR until the stream ends.
pub async fn watch_pod_cidr(client: Client, node: String, target: SharedPodCidr) {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let stream = watcher(api, config).default_backoff().applied_objects();
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(n) => {
                let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                let mut current = target.write().unwrap();
                if *current != cidr {
                    tracing::info!(node = %node, pod_cidr = ?cidr, "pod CIDR");
                    *current = cidr;
                }
            }
            Err(e) => tracing::warn!(node = %node, error = %e, "watching the node"),
        }
    }
}
