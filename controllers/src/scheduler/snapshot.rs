//! The scheduler's view of the cluster: nodes with the pods on them and what those pods
//! request, and the volume objects (upstream: `pkg/scheduler/framework/types.go` `NodeInfo`,
//! `HostPortInfo`, `PodInfo`; `pkg/scheduler/backend/cache/cache.go` `AssumePod`,
//! `ForgetPod`, `AddPod`, `RemovePod`, `AddNode`, `RemoveNode`; `backend/cache/snapshot.go`).
//!
//! Upstream keeps a mutable cache and takes an immutable snapshot per scheduling cycle; here
//! one [`Snapshot`] is both: the reconciler mutates it from informer events and hands it,
//! borrowed, to [`super::schedule_pod`].
//!
//! Pods in a terminal phase (Succeeded, Failed) hold no resources and are not counted, as
//! upstream's scheduler never sees them (its assigned-pod informer excludes them).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{ContainerPort, Taint};
use rekube_crds::storage_keys::ANN_SELECTED_NODE;
use rekube_crds::{
    CSIDriver, CSIStorageCapacity, Node, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass,
};

use super::resources::{Resource, ResourceTotal, compute_pod_non_zero_request, pod_requests};
use crate::util::pod::is_pod_terminal;

/// Upstream `framework.DefaultBindAllHostIP`.
pub const DEFAULT_BIND_ALL_HOST_IP: &str = "0.0.0.0";
const DEFAULT_PROTOCOL: &str = "TCP";

/// Identity of a pod: namespace, name and uid (upstream keys its cache by uid).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodKey {
    pub fn of(pod: &Pod) -> PodKey {
        let m = &pod.metadata;
        PodKey {
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod on a node, with what it requests computed once (upstream: `framework.PodInfo` and
/// `PodInfo.CalculateResource`).
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub key: PodKey,
    pub pod: Pod,
    /// The pod's requests (upstream `PodResource.Resource`).
    pub requested: Resource,
    /// cpu (millicores) and memory with the non-zero defaults (upstream `Non0CPU`, `Non0Mem`).
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
}

impl PodInfo {
    pub fn new(pod: &Pod) -> PodInfo {
        let mut requested = Resource::default();
        requested.add_list(&pod_requests(pod, &Default::default()));
        requested.allowed_pod_number = 0;
        let (cpu, memory) = compute_pod_non_zero_request(pod);
        PodInfo {
            key: PodKey::of(pod),
            pod: pod.clone(),
            requested,
            non_zero_milli_cpu: cpu,
            non_zero_memory: memory,
        }
    }
}

/// The host ports a pod uses: its containers' and its sidecars' ports with a hostPort
/// (upstream: `schedutil.GetHostPorts`).
pub fn host_ports(pod: &Pod) -> Vec<&ContainerPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    sidecars
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .collect()
}

/// Host ports in use on a node, by host IP then (protocol, port) (upstream:
/// `framework.HostPortInfo`). Counted, so that two pods sharing a port (possible only when
/// bound around the scheduler) release it once both are gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPortInfo(BTreeMap<String, BTreeMap<(String, i32), usize>>);

fn sanitize(ip: &str, protocol: &str) -> (String, String) {
    let ip = if ip.is_empty() {
        DEFAULT_BIND_ALL_HOST_IP
    } else {
        ip
    };
    let protocol = if protocol.is_empty() {
        DEFAULT_PROTOCOL
    } else {
        protocol
    };
    (ip.to_string(), protocol.to_string())
}

impl HostPortInfo {
    /// Upstream `HostPortInfo.Add`; empty ip is 0.0.0.0, empty protocol TCP.
    pub fn add(&mut self, ip: &str, protocol: &str, port: i32) {
        if port <= 0 {
            return;
        }
        let (ip, protocol) = sanitize(ip, protocol);
        *self
            .0
            .entry(ip)
            .or_default()
            .entry((protocol, port))
            .or_default() += 1;
    }

    /// Upstream `HostPortInfo.Remove`.
    pub fn remove(&mut self, ip: &str, protocol: &str, port: i32) {
        if port <= 0 {
            return;
        }
        let (ip, protocol) = sanitize(ip, protocol);
        if let Some(ports) = self.0.get_mut(&ip) {
            let key = (protocol, port);
            if let Some(n) = ports.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    ports.remove(&key);
                }
            }
            if ports.is_empty() {
                self.0.remove(&ip);
            }
        }
    }

    /// Upstream `HostPortInfo.CheckConflict`: 0.0.0.0 conflicts with the port on any IP,
    /// and any IP with the port on 0.0.0.0.
    pub fn check_conflict(&self, ip: &str, protocol: &str, port: i32) -> bool {
        if port <= 0 {
            return false;
        }
        let (ip, protocol) = sanitize(ip, protocol);
        let key = (protocol, port);
        if ip == DEFAULT_BIND_ALL_HOST_IP {
            return self.0.values().any(|m| m.contains_key(&key));
        }
        [DEFAULT_BIND_ALL_HOST_IP, ip.as_str()]
            .iter()
            .any(|i| self.0.get(*i).is_some_and(|m| m.contains_key(&key)))
    }

    /// Upstream `HostPortInfo.Len`: the distinct (ip, protocol, port) in use.
    pub fn len(&self) -> usize {
        self.0.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A node and the pods on it (upstream: `framework.NodeInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub node: Node,
    pub pods: Vec<PodInfo>,
    /// Sum of the pods' requests, assumed pods included (upstream `Requested`).
    pub requested: Resource,
    /// Sum of the pods' cpu and memory with the non-zero defaults (upstream
    /// `NonZeroRequested`), for scoring.
    pub non_zero_requested: Resource,
    /// The node's `status.allocatable` (upstream `Allocatable`).
    pub allocatable: Resource,
    pub used_ports: HostPortInfo,
    /// The exact sums behind `requested` and `non_zero_requested` (which saturate at the
    /// int64 bounds), so that removing a pod undoes adding it.
    requested_total: ResourceTotal,
    non_zero_requested_total: ResourceTotal,
}

impl NodeInfo {
    pub fn new(node: Node) -> NodeInfo {
        let allocatable = allocatable_of(&node);
        NodeInfo {
            node,
            pods: Vec::new(),
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            allocatable,
            used_ports: HostPortInfo::default(),
            requested_total: ResourceTotal::default(),
            non_zero_requested_total: ResourceTotal::default(),
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.metadata.labels.as_ref()
    }

    pub fn taints(&self) -> &[Taint] {
        self.node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[])
    }

    /// Upstream `NodeInfo.SetNode`: the node object and its allocatable; pods stay.
    pub fn set_node(&mut self, node: Node) {
        self.allocatable = allocatable_of(&node);
        self.node = node;
    }

    fn update(&mut self, info: &PodInfo, sign: i64) {
        self.requested_total.accumulate(&info.requested, sign);
        self.requested = self.requested_total.to_resource();
        let non_zero = Resource {
            milli_cpu: info.non_zero_milli_cpu,
            memory: info.non_zero_memory,
            ..Resource::default()
        };
        self.non_zero_requested_total.accumulate(&non_zero, sign);
        self.non_zero_requested = self.non_zero_requested_total.to_resource();
        for p in host_ports(&info.pod) {
            let ip = p.host_ip.as_deref().unwrap_or_default();
            let protocol = p.protocol.as_deref().unwrap_or_default();
            let port = p.host_port.unwrap_or(0);
            if sign > 0 {
                self.used_ports.add(ip, protocol, port);
            } else {
                self.used_ports.remove(ip, protocol, port);
            }
        }
    }

    /// Upstream `NodeInfo.AddPodInfo`.
    pub fn add_pod_info(&mut self, info: PodInfo) {
        self.update(&info, 1);
        self.pods.push(info);
    }

    /// Upstream `NodeInfo.RemovePod`; the pod's info if it was here.
    pub fn remove_pod(&mut self, key: &PodKey) -> Option<PodInfo> {
        let i = self.pods.iter().position(|p| &p.key == key)?;
        let info = self.pods.remove(i);
        self.update(&info, -1);
        Some(info)
    }
}

fn allocatable_of(node: &Node) -> Resource {
    Resource::from_quantities(node.status.as_ref().and_then(|s| s.allocatable.as_ref()))
}

fn node_name_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// The cluster as the scheduler sees it: nodes sorted by name with their pods (bound and
/// assumed), pods on nodes not (yet) known, the PVs, PVCs and StorageClasses, the
/// CSIDrivers and CSIStorageCapacities, and the claims assumed handed to a node.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    /// Pods bound to a node the snapshot does not know; they join it when it is added
    /// (upstream keeps a NodeInfo without a node for them).
    orphans: BTreeMap<String, Vec<PodInfo>>,
    /// The node each pod is on.
    pod_nodes: BTreeMap<PodKey, String>,
    /// Pods assumed onto a node and not yet seen bound (upstream `assumedPods`).
    assumed: BTreeSet<PodKey>,
    pvs: BTreeMap<String, PersistentVolume>,
    pvcs: BTreeMap<(String, String), PersistentVolumeClaim>,
    storage_classes: BTreeMap<String, StorageClass>,
    csi_drivers: BTreeMap<String, CSIDriver>,
    /// Every CSIStorageCapacity, of every namespace (upstream lists them all).
    capacities: Vec<CSIStorageCapacity>,
    /// Claims to provision that an assumed pod hands to a node, by (namespace, name):
    /// the node and the pod, until the claim is seen annotated with its selected node
    /// (upstream's assumed PVCs in the binder's AssumeCache).
    assumed_provisions: BTreeMap<(String, String), (String, PodKey)>,
}

impl Snapshot {
    /// A snapshot of these nodes with the pods bound to them (`spec.nodeName`; terminal
    /// pods left out) and the volume objects.
    pub fn new(
        nodes: &[Node],
        pods: &[Pod],
        pvs: &[PersistentVolume],
        pvcs: &[PersistentVolumeClaim],
        classes: &[StorageClass],
    ) -> Snapshot {
        let mut s = Snapshot::default();
        for n in nodes {
            s.set_node(n.clone());
        }
        for p in pods {
            s.add_pod(p);
        }
        s.set_volumes(pvs, pvcs, classes);
        s
    }

    /// The nodes, sorted by name.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    fn index(&self, name: &str) -> Result<usize, usize> {
        self.nodes.binary_search_by(|n| n.name().cmp(name))
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index(name).ok().map(|i| &self.nodes[i])
    }

    /// Adds or updates a node (upstream `cache.AddNode` / `UpdateNode`); pods already
    /// bound to it join it.
    pub fn set_node(&mut self, node: Node) {
        let name = name_of(&node.metadata);
        match self.index(&name) {
            Ok(i) => self.nodes[i].set_node(node),
            Err(i) => {
                let mut info = NodeInfo::new(node);
                for p in self.orphans.remove(&name).unwrap_or_default() {
                    info.add_pod_info(p);
                }
                self.nodes.insert(i, info);
            }
        }
    }

    /// Removes a node (upstream `cache.RemoveNode`); its pods are kept aside until they are
    /// deleted or the node comes back.
    pub fn remove_node(&mut self, name: &str) {
        if let Ok(i) = self.index(name) {
            let info = self.nodes.remove(i);
            if !info.pods.is_empty() {
                self.orphans.insert(name.to_string(), info.pods);
            }
        }
    }

    fn insert_pod(&mut self, pod: &Pod, node: &str) {
        let info = PodInfo::new(pod);
        self.pod_nodes.insert(info.key.clone(), node.to_string());
        match self.index(node) {
            Ok(i) => self.nodes[i].add_pod_info(info),
            Err(_) => self.orphans.entry(node.to_string()).or_default().push(info),
        }
    }

    fn take_pod(&mut self, key: &PodKey) -> bool {
        let Some(node) = self.pod_nodes.remove(key) else {
            return false;
        };
        match self.index(&node) {
            Ok(i) => {
                self.nodes[i].remove_pod(key);
            }
            Err(_) => {
                if let Some(pods) = self.orphans.get_mut(&node) {
                    pods.retain(|p| &p.key != key);
                    if pods.is_empty() {
                        self.orphans.remove(&node);
                    }
                }
            }
        }
        true
    }

    /// Adds or updates a pod seen bound to a node (upstream `cache.AddPod` / `UpdatePod`):
    /// an assumed pod is confirmed; a terminal pod is removed; a pod without nodeName is
    /// ignored.
    pub fn add_pod(&mut self, pod: &Pod) {
        let Some(node) = node_name_of(pod) else {
            return;
        };
        let key = PodKey::of(pod);
        self.take_pod(&key);
        self.assumed.remove(&key);
        if !is_pod_terminal(pod) {
            self.insert_pod(pod, node);
        }
    }

    /// Removes a pod (upstream `cache.RemovePod`); whether it was in the snapshot.
    pub fn remove_pod(&mut self, pod: &Pod) -> bool {
        let key = PodKey::of(pod);
        self.assumed.remove(&key);
        self.take_pod(&key)
    }

    /// Puts the pod on `node_name` before its binding is observed, so that the next pods
    /// see its requests and ports (upstream `cache.AssumePod`).
    pub fn assume(&mut self, pod: &Pod, node_name: &str) {
        let key = PodKey::of(pod);
        self.take_pod(&key);
        let mut assumed = pod.clone();
        assumed.spec.get_or_insert_with(Default::default).node_name = Some(node_name.to_string());
        self.insert_pod(&assumed, node_name);
        self.assumed.insert(key);
    }

    /// Takes an assumed pod back off its node, when binding failed (upstream
    /// `cache.ForgetPod`); a pod not assumed is left alone.
    pub fn forget(&mut self, pod: &Pod) {
        let key = PodKey::of(pod);
        if self.assumed.remove(&key) {
            self.take_pod(&key);
        }
        self.assumed_provisions.retain(|_, (_, p)| *p != key);
    }

    /// Records that the assumed `pod` hands its claims `claims` (of its namespace) to
    /// `node` for provisioning, before its PreBind annotates them (upstream
    /// `AssumePodVolumes`' `pvcCache.Assume`): the next pods see them as taken from the
    /// node's capacity.
    pub fn assume_provisions(&mut self, pod: &Pod, node: &str, claims: &[String]) {
        let key = PodKey::of(pod);
        for claim in claims {
            self.assumed_provisions.insert(
                (key.namespace.clone(), claim.clone()),
                (node.to_string(), key.clone()),
            );
        }
    }

    /// The node a claim is handed to for provisioning: its
    /// `volume.kubernetes.io/selected-node`, or the node an assumed pod hands it to.
    pub fn selected_node<'a>(&'a self, pvc: &'a PersistentVolumeClaim) -> Option<&'a str> {
        pvc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_SELECTED_NODE))
            .map(String::as_str)
            .or_else(|| {
                let key = (
                    pvc.metadata.namespace.clone().unwrap_or_default(),
                    name_of(&pvc.metadata),
                );
                self.assumed_provisions.get(&key).map(|(n, _)| n.as_str())
            })
    }

    pub fn is_assumed(&self, pod: &Pod) -> bool {
        self.assumed.contains(&PodKey::of(pod))
    }

    /// Replaces the volume objects.
    pub fn set_volumes(
        &mut self,
        pvs: &[PersistentVolume],
        pvcs: &[PersistentVolumeClaim],
        classes: &[StorageClass],
    ) {
        self.pvs = pvs
            .iter()
            .map(|pv| (name_of(&pv.metadata), pv.clone()))
            .collect();
        self.pvcs = pvcs
            .iter()
            .map(|c| {
                let ns = c.metadata.namespace.clone().unwrap_or_default();
                ((ns, name_of(&c.metadata)), c.clone())
            })
            .collect();
        self.storage_classes = classes
            .iter()
            .map(|c| (name_of(&c.metadata), c.clone()))
            .collect();
        // An assumed hand-over ends when the claim carries its selected node (written by
        // PreBind), is bound, or is gone.
        let pvcs = &self.pvcs;
        self.assumed_provisions.retain(|key, _| {
            pvcs.get(key).is_some_and(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .is_none_or(|a| !a.contains_key(ANN_SELECTED_NODE))
                    && c.spec
                        .as_ref()
                        .and_then(|s| s.volume_name.as_deref())
                        .is_none_or(str::is_empty)
            })
        });
    }

    /// Replaces the CSIDrivers and CSIStorageCapacities (upstream's `csiDriverLister` and
    /// `csiStorageCapacityLister`).
    pub fn set_storage_capacity(
        &mut self,
        drivers: &[CSIDriver],
        capacities: &[CSIStorageCapacity],
    ) {
        self.csi_drivers = drivers
            .iter()
            .map(|d| (name_of(&d.metadata), d.clone()))
            .collect();
        self.capacities = capacities.to_vec();
    }

    pub fn csi_driver(&self, name: &str) -> Option<&CSIDriver> {
        self.csi_drivers.get(name)
    }

    pub fn capacities(&self) -> &[CSIStorageCapacity] {
        &self.capacities
    }

    pub fn pvcs(&self) -> impl Iterator<Item = &PersistentVolumeClaim> {
        self.pvcs.values()
    }

    pub fn pv(&self, name: &str) -> Option<&PersistentVolume> {
        self.pvs.get(name)
    }

    pub fn pvs(&self) -> impl Iterator<Item = &PersistentVolume> {
        self.pvs.values()
    }

    pub fn pvc(&self, namespace: &str, name: &str) -> Option<&PersistentVolumeClaim> {
        self.pvcs.get(&(namespace.to_string(), name.to_string()))
    }

    pub fn storage_class(&self, name: &str) -> Option<&StorageClass> {
        self.storage_classes.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{NodeBuilder, PodBuilder};

    fn node(name: &str) -> Node {
        NodeBuilder::new(name).capacity("4", "8Gi").build()
    }

    fn pod(name: &str, cpu: &str) -> PodBuilder {
        PodBuilder::new(name).req(&[("cpu", cpu), ("memory", "1Gi")])
    }

    fn cpu_on(s: &Snapshot, node: &str) -> (i64, usize) {
        let n = s.node(node).unwrap();
        (n.requested.milli_cpu, n.pods.len())
    }

    #[test]
    fn new_assigns_bound_pods_and_skips_terminal_and_unbound() {
        let s = Snapshot::new(
            &[node("b"), node("a")],
            &[
                pod("p1", "1").node("a").build(),
                pod("p2", "500m").node("a").phase("Running").build(),
                pod("done", "2").node("a").phase("Succeeded").build(),
                pod("failed", "2").node("b").phase("Failed").build(),
                pod("pending", "2").build(),
                pod("p3", "250m").node("b").build(),
            ],
            &[],
            &[],
            &[],
        );
        let names: Vec<&str> = s.nodes().iter().map(NodeInfo::name).collect();
        assert_eq!(names, ["a", "b"], "sorted by name");
        assert_eq!(cpu_on(&s, "a"), (1500, 2));
        assert_eq!(cpu_on(&s, "b"), (250, 1));
        let a = s.node("a").unwrap();
        assert_eq!(a.requested.memory, 2 << 30);
        assert_eq!(a.non_zero_requested.milli_cpu, 1500);
        assert_eq!(a.allocatable.milli_cpu, 4000);
        assert_eq!(a.allocatable.allowed_pod_number, 110);
    }

    #[test]
    fn non_zero_requested_counts_defaults() {
        let s = Snapshot::new(
            &[node("a")],
            &[PodBuilder::new("empty").req(&[]).node("a").build()],
            &[],
            &[],
            &[],
        );
        let a = s.node("a").unwrap();
        assert_eq!(a.requested.milli_cpu, 0);
        assert_eq!(a.non_zero_requested.milli_cpu, 100);
        assert_eq!(a.non_zero_requested.memory, 200 * 1024 * 1024);
    }

    #[test]
    fn assume_then_confirm_or_forget() {
        let mut s = Snapshot::new(&[node("a"), node("b")], &[], &[], &[], &[]);
        let p = pod("p", "1").build();
        s.assume(&p, "a");
        assert!(s.is_assumed(&p));
        assert_eq!(cpu_on(&s, "a"), (1000, 1));
        assert_eq!(
            s.node("a").unwrap().pods[0]
                .pod
                .spec
                .as_ref()
                .unwrap()
                .node_name
                .as_deref(),
            Some("a")
        );

        // A burst: the second assumed pod sees the first.
        let p2 = pod("p2", "2").build();
        s.assume(&p2, "a");
        assert_eq!(cpu_on(&s, "a"), (3000, 2));

        // Binding failed: forget takes it back off.
        s.forget(&p2);
        assert!(!s.is_assumed(&p2));
        assert_eq!(cpu_on(&s, "a"), (1000, 1));

        // The informer sees p bound: confirmed, counted once.
        let bound = pod("p", "1").node("a").build();
        s.add_pod(&bound);
        assert!(!s.is_assumed(&p));
        assert_eq!(cpu_on(&s, "a"), (1000, 1));

        // forget of a pod that is no longer assumed does nothing.
        s.forget(&bound);
        assert_eq!(cpu_on(&s, "a"), (1000, 1));

        // The pod finishes: it no longer counts.
        s.add_pod(&pod("p", "1").node("a").phase("Succeeded").build());
        assert_eq!(cpu_on(&s, "a"), (0, 0));
    }

    #[test]
    fn update_moves_and_remove_releases() {
        let mut s = Snapshot::new(&[node("a"), node("b")], &[], &[], &[], &[]);
        s.add_pod(&pod("p", "1").node("a").build());
        s.add_pod(&pod("p", "2").node("a").build());
        assert_eq!(cpu_on(&s, "a"), (2000, 1), "an update replaces");
        s.add_pod(&pod("p", "2").node("b").build());
        assert_eq!(cpu_on(&s, "a"), (0, 0));
        assert_eq!(cpu_on(&s, "b"), (2000, 1));
        assert!(s.remove_pod(&pod("p", "2").build()));
        assert!(!s.remove_pod(&pod("p", "2").build()));
        assert_eq!(cpu_on(&s, "b"), (0, 0));
        // Another pod with the same name but a new uid is a different pod.
        s.add_pod(&pod("q", "1").node("b").build());
        assert!(!s.remove_pod(&pod("q", "1").uid("other").build()));
        assert_eq!(cpu_on(&s, "b"), (1000, 1));
    }

    #[test]
    fn pods_on_unknown_nodes_wait_for_the_node() {
        let mut s = Snapshot::new(&[], &[pod("p", "1").node("late").build()], &[], &[], &[]);
        assert_eq!(s.num_nodes(), 0);
        s.set_node(node("late"));
        assert_eq!(cpu_on(&s, "late"), (1000, 1));
        s.remove_node("late");
        assert!(s.node("late").is_none());
        s.set_node(node("late"));
        assert_eq!(cpu_on(&s, "late"), (1000, 1), "kept across remove/add");
        // Updating the node keeps its pods and refreshes allocatable.
        s.set_node(NodeBuilder::new("late").capacity("8", "8Gi").build());
        let n = s.node("late").unwrap();
        assert_eq!((n.allocatable.milli_cpu, n.pods.len()), (8000, 1));
    }

    #[test]
    fn used_ports_follow_pods() {
        let mut s = Snapshot::new(&[node("a")], &[], &[], &[], &[]);
        let p = PodBuilder::new("p")
            .host_ports(&["TCP/127.0.0.1/8080", "/0.0.0.0/9090"])
            .build();
        s.assume(&p, "a");
        let ports = &s.node("a").unwrap().used_ports;
        assert_eq!(ports.len(), 2);
        assert!(ports.check_conflict("127.0.0.1", "TCP", 8080));
        assert!(ports.check_conflict("", "", 9090));
        s.forget(&p);
        assert!(s.node("a").unwrap().used_ports.is_empty());
    }

    /// Upstream types_test.go TestHostPortInfo_AddRemove / _Check.
    #[test]
    fn host_port_info_table() {
        // (added (ip, proto, port), check (ip, proto, port), want conflict)
        type Port = (&'static str, &'static str, i32);
        let cases: &[(&[Port], Port, bool)] = &[
            (&[("127.0.0.1", "TCP", 80)], ("127.0.0.1", "TCP", 80), true),
            (&[("127.0.0.1", "TCP", 80)], ("127.0.0.1", "UDP", 80), false),
            (&[("127.0.0.1", "TCP", 80)], ("127.0.0.2", "TCP", 80), false),
            (&[("127.0.0.1", "TCP", 80)], ("0.0.0.0", "TCP", 80), true),
            (&[("0.0.0.0", "TCP", 80)], ("127.0.0.1", "TCP", 80), true),
            (&[("", "", 80)], ("127.0.0.1", "TCP", 80), true),
            (&[("127.0.0.1", "TCP", 80)], ("127.0.0.1", "TCP", 81), false),
            (&[("127.0.0.1", "TCP", 0)], ("127.0.0.1", "TCP", 0), false),
        ];
        for (added, check, want) in cases {
            let mut h = HostPortInfo::default();
            for (ip, proto, port) in *added {
                h.add(ip, proto, *port);
            }
            assert_eq!(
                h.check_conflict(check.0, check.1, check.2),
                *want,
                "{added:?} vs {check:?}"
            );
        }
        let mut h = HostPortInfo::default();
        h.add("", "", 80);
        h.add("0.0.0.0", "TCP", 80);
        assert_eq!(h.len(), 1);
        h.remove("0.0.0.0", "TCP", 80);
        assert!(h.check_conflict("", "", 80), "still held by the other user");
        h.remove("", "", 80);
        assert!(h.is_empty());
    }

    #[test]
    fn volumes_are_indexed() {
        use crate::scheduler::testing::{pv, pvc, storage_class};
        let s = Snapshot::new(
            &[],
            &[],
            &[pv("pv1", "fast", "1Gi", None)],
            &[pvc("data", "fast", "1Gi", None)],
            &[storage_class("fast", "Immediate", "x")],
        );
        assert!(s.pv("pv1").is_some());
        assert_eq!(s.pvs().count(), 1);
        assert!(s.pvc("default", "data").is_some());
        assert!(s.pvc("other", "data").is_none());
        assert!(s.storage_class("fast").is_some());
    }

    // --- Overflow: a node's totals saturate at int64 and stay exact underneath.

    #[test]
    fn overflow_requested_totals_saturate_and_stay_exact() {
        const FIVE_EI: i64 = 5 << 60;
        let hog = |name: &str| {
            PodBuilder::new(name)
                .req(&[("cpu", "9223372036854775807m"), ("memory", "5Ei")])
                .node("a")
                .build()
        };
        let mut s = Snapshot::new(&[node("a")], &[], &[], &[], &[]);
        s.add_pod(&hog("p1"));
        s.add_pod(&hog("p2"));
        let a = s.node("a").unwrap();
        assert_eq!(
            (a.requested.milli_cpu, a.requested.memory),
            (i64::MAX, i64::MAX)
        );
        assert_eq!(
            (a.non_zero_requested.milli_cpu, a.non_zero_requested.memory),
            (i64::MAX, i64::MAX)
        );
        // Removing one pod leaves exactly the other's requests (a saturated int64 total
        // would read i64::MAX − 5Ei).
        assert!(s.remove_pod(&hog("p1")));
        let a = s.node("a").unwrap();
        assert_eq!(
            (a.requested.milli_cpu, a.requested.memory),
            (i64::MAX, FIVE_EI)
        );
        assert_eq!(a.non_zero_requested.memory, FIVE_EI);
        assert!(s.remove_pod(&hog("p2")));
        let a = s.node("a").unwrap();
        assert_eq!((a.requested.milli_cpu, a.requested.memory), (0, 0));
        assert_eq!(a.non_zero_requested.memory, 0);
    }
}
