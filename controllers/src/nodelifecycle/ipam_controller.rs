//! The node IPAM reconciler (upstream `nodeipam`'s range allocator,
//! pkg/controller/nodeipam/ipam/range_allocator.go): once the Node cache has synced, the
//! CIDRs that Nodes already hold are occupied; then every Node without `spec.podCIDR` gets
//! the next free range of `--cluster-cidr`, and a deleted Node's range is released. The
//! arithmetic is [`super::cidr`]; this file reads, decides and writes.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use rekube_crds::Node;
use serde_json::json;

use super::cidr::{self, CidrSet, IpNet};
use crate::manager::events::EventRecorder;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

pub const CONTROLLER_NAME: &str = "node-ipam-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: setting spec.podCIDR to {cidr}: {source}")]
    Patch {
        node: String,
        cidr: String,
        source: kube::Error,
    },
    #[error("node {node}: {source}")]
    Cidr {
        node: String,
        source: cidr::CidrError,
    },
}

/// The allocator's state: the ranges in use and which node holds which.
struct Allocations {
    set: CidrSet,
    by_node: HashMap<String, IpNet>,
    /// Whether the ranges held by the Nodes in the synced cache were occupied.
    initialised: bool,
}

pub struct NodeIpamController {
    client: Client,
    nodes: Arc<Informer<Node>>,
    allocations: Mutex<Allocations>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
}

impl NodeIpamController {
    pub fn new(
        client: Client,
        nodes: &Arc<Informer<Node>>,
        set: CidrSet,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(NodeIpamController {
            recorder: EventRecorder::new(client.clone(), "cidrAllocator"),
            client,
            nodes: Arc::clone(nodes),
            allocations: Mutex::new(Allocations {
                set,
                by_node: HashMap::new(),
                initialised: false,
            }),
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
        });
        let weak = Arc::downgrade(&c);
        nodes.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let node = match change {
                Change::Added(n) | Change::Deleted(n) => n,
                Change::Updated { old, new } => {
                    if cidr::node_pod_cidrs(old) == cidr::node_pod_cidrs(new) {
                        return;
                    }
                    new
                }
            };
            c.metrics.queue_add(CONTROLLER_NAME);
            c.queue.add(ObjectKey::of(node.as_ref()));
        });
        c
    }

    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    pub async fn run(self: Arc<Self>) {
        wait_for_named_cache_sync(CONTROLLER_NAME, vec![self.nodes.has_synced()]).await;
        self.occupy_existing();
        let this = Arc::clone(&self);
        // One worker: allocation is a short critical section and upstream runs one
        // goroutine per node update at most; order does not matter.
        run_workers(self.queue(), 1, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_node(&key).await }
        })
        .await
    }

    /// upstream NewCIDRRangeAllocator: occupy what the synced Nodes already hold, so no
    /// range is handed out twice.
    fn occupy_existing(&self) {
        let mut a = self.allocations.lock().unwrap();
        for node in self.nodes.store().state() {
            let name = node.metadata.name.clone().unwrap_or_default();
            match cidr::occupy_node_cidrs(&node, &mut a.set) {
                Ok(()) => {
                    if let Some(net) = first_cidr(&node) {
                        a.by_node.insert(name, net);
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "cannot occupy the node's pod CIDR")
                }
            }
        }
        a.initialised = true;
    }

    /// upstream AllocateOrOccupyCIDR / ReleaseCIDR for one node.
    pub async fn sync_node(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let node = self.nodes.get(key);
        let allocated = {
            let mut a = self.allocations.lock().unwrap();
            debug_assert!(a.initialised);
            match node.as_deref() {
                None => {
                    if let Some(net) = a.by_node.remove(&key.name) {
                        let _ = a.set.release(&net);
                        tracing::info!(node = %key.name, cidr = %net, "released the deleted node's pod CIDR");
                    }
                    return Ok(None);
                }
                Some(n) if !cidr::node_pod_cidrs(n).is_empty() => {
                    // Set (by us or by hand): make sure it is occupied.
                    if !a.by_node.contains_key(&key.name) {
                        cidr::occupy_node_cidrs(n, &mut a.set).map_err(|source| Error::Cidr {
                            node: key.name.clone(),
                            source,
                        })?;
                        if let Some(net) = first_cidr(n) {
                            a.by_node.insert(key.name.clone(), net);
                        }
                    }
                    return Ok(None);
                }
                Some(_) => match a.by_node.get(&key.name) {
                    // Allocated earlier, the write not yet seen (or it failed): reuse it.
                    Some(net) => Ok(*net),
                    None => match a.set.allocate_next() {
                        Ok(net) => {
                            a.by_node.insert(key.name.clone(), net);
                            Ok(net)
                        }
                        Err(source) => Err(source),
                    },
                },
            }
        };
        let allocated = match allocated {
            Ok(net) => net,
            Err(source) => {
                if let Some(n) = node.as_deref() {
                    self.recorder
                        .warning(
                            &n.object_ref(&()),
                            "CIDRNotAvailable",
                            format!("Node {} status is now: CIDRNotAvailable", key.name),
                        )
                        .await;
                }
                return Err(Error::Cidr {
                    node: key.name.clone(),
                    source,
                });
            }
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let cidr = allocated.to_string();
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %key.name, cidr = %cidr, "set the node's pod CIDR");
                Ok(None)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let mut a = self.allocations.lock().unwrap();
                a.by_node.remove(&key.name);
                let _ = a.set.release(&allocated);
                Ok(None)
            }
            // Keep the range for this node; the retry writes the same one.
            Err(source) => Err(Error::Patch {
                node: key.name.clone(),
                cidr,
                source,
            }),
        }
    }
}

fn first_cidr(node: &Node) -> Option<IpNet> {
    cidr::node_pod_cidrs(node).first()?.parse().ok()
}
