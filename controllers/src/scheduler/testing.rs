//! Test builders for pods, nodes and volumes (upstream: `pkg/scheduler/testing/wrappers.go`,
//! `st.MakePod()` / `st.MakeNode()`).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, NodeAffinity, NodeCondition, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus, ObjectReference,
    PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource,
    PersistentVolumeSpec, PersistentVolumeStatus, PodSpec, PodStatus, PreferredSchedulingTerm,
    ResourceRequirements, Taint, Toleration, Volume, VolumeNodeAffinity,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass};

pub fn q(s: &str) -> Quantity {
    Quantity(s.to_string())
}

pub fn list(items: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    items.iter().map(|(k, v)| (k.to_string(), q(v))).collect()
}

/// A container requesting `requests` (none at all when empty).
pub fn container(name: &str, requests: &[(&str, &str)]) -> Container {
    Container {
        name: name.into(),
        image: Some("busybox".into()),
        resources: (!requests.is_empty()).then(|| ResourceRequirements {
            requests: Some(list(requests)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn requirement(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

pub fn term(exprs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(exprs),
        match_fields: None,
    }
}

pub fn field_term(fields: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(fields),
    }
}

pub fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Toleration {
        key: opt(key),
        operator: opt(op),
        value: opt(value),
        effect: opt(effect),
        toleration_seconds: None,
    }
}

pub fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: (!value.is_empty()).then(|| value.to_string()),
        effect: effect.into(),
        time_added: None,
    }
}

pub struct PodBuilder(Pod);

impl PodBuilder {
    pub fn new(name: &str) -> Self {
        PodBuilder(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        })
    }

    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.as_mut().unwrap()
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.into());
        self
    }

    pub fn uid(mut self, uid: &str) -> Self {
        self.0.metadata.uid = Some(uid.into());
        self
    }

    /// Adds one container requesting `requests` (upstream `st.MakePod().Req(...)`).
    pub fn req(mut self, requests: &[(&str, &str)]) -> Self {
        let n = self.spec().containers.len();
        self.spec()
            .containers
            .push(container(&format!("c{n}"), requests));
        self
    }

    pub fn containers(mut self, cs: Vec<Container>) -> Self {
        self.spec().containers = cs;
        self
    }

    pub fn init_containers(mut self, cs: Vec<Container>) -> Self {
        self.spec().init_containers = Some(cs);
        self
    }

    pub fn overhead(mut self, rl: &[(&str, &str)]) -> Self {
        self.spec().overhead = Some(list(rl));
        self
    }

    pub fn node(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.into());
        self
    }

    pub fn phase(mut self, phase: &str) -> Self {
        self.0.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        self
    }

    pub fn node_selector(mut self, sel: &[(&str, &str)]) -> Self {
        self.spec().node_selector = Some(
            sel.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    fn node_affinity(&mut self) -> &mut NodeAffinity {
        self.spec()
            .affinity
            .get_or_insert_with(Affinity::default)
            .node_affinity
            .get_or_insert_with(NodeAffinity::default)
    }

    pub fn required_terms(mut self, terms: Vec<NodeSelectorTerm>) -> Self {
        self.node_affinity()
            .required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: terms,
        });
        self
    }

    pub fn preferred(mut self, weight: i32, preference: NodeSelectorTerm) -> Self {
        self.node_affinity()
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(PreferredSchedulingTerm { preference, weight });
        self
    }

    pub fn tolerations(mut self, tolerations: Vec<Toleration>) -> Self {
        self.spec().tolerations = Some(tolerations);
        self
    }

    /// Adds a container with host ports given as `"PROTO/hostIP/hostPort"` (upstream
    /// node_ports_test.go `newPod`).
    pub fn host_ports(mut self, ports: &[&str]) -> Self {
        let ports = ports
            .iter()
            .map(|p| {
                let parts: Vec<&str> = p.split('/').collect();
                let port: i32 = parts[2].parse().unwrap();
                ContainerPort {
                    container_port: port,
                    host_port: Some(port),
                    host_ip: (!parts[1].is_empty()).then(|| parts[1].to_string()),
                    protocol: (!parts[0].is_empty()).then(|| parts[0].to_string()),
                    name: None,
                }
            })
            .collect();
        let n = self.spec().containers.len();
        let mut c = container(&format!("c{n}"), &[]);
        c.ports = Some(ports);
        self.spec().containers.push(c);
        self
    }

    pub fn pvc(mut self, claim: &str) -> Self {
        self.spec()
            .volumes
            .get_or_insert_with(Vec::new)
            .push(Volume {
                name: format!("vol-{claim}"),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: None,
                }),
                ..Default::default()
            });
        self
    }

    pub fn controlled_by(mut self, kind: &str, uid: &str) -> Self {
        self.0.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "rekube.io/v1".into(),
            kind: kind.into(),
            name: format!("{kind}-owner"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        self
    }

    pub fn build(self) -> Pod {
        self.0
    }
}

pub struct NodeBuilder(Node);

impl NodeBuilder {
    /// A node with the hostname label, Ready, with no allocatable until [`Self::allocatable`].
    pub fn new(name: &str) -> Self {
        NodeBuilder(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/hostname".to_string(),
                    name.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    /// Allocatable (and capacity) resources.
    pub fn allocatable(mut self, rl: &[(&str, &str)]) -> Self {
        let status = self.0.status.as_mut().unwrap();
        status.allocatable = Some(list(rl));
        status.capacity = Some(list(rl));
        self
    }

    /// The usual test node: cpu, memory and 110 pods.
    pub fn capacity(self, cpu: &str, memory: &str) -> Self {
        self.allocatable(&[("cpu", cpu), ("memory", memory), ("pods", "110")])
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }

    pub fn no_labels(mut self) -> Self {
        self.0.metadata.labels = None;
        self
    }

    pub fn taints(mut self, taints: Vec<Taint>) -> Self {
        self.0.spec.as_mut().unwrap().taints = Some(taints);
        self
    }

    pub fn unschedulable(mut self) -> Self {
        self.0.spec.as_mut().unwrap().unschedulable = Some(true);
        self
    }

    /// Sets the Ready condition's status; `None` removes it.
    pub fn ready(mut self, status: Option<&str>) -> Self {
        let conditions = self.0.status.as_mut().unwrap().conditions.as_mut().unwrap();
        conditions.clear();
        if let Some(s) = status {
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: s.into(),
                ..Default::default()
            });
        }
        self
    }

    pub fn build(self) -> Node {
        self.0
    }
}

/// A PV of `class` with `capacity`, access modes, optional node affinity (hostname In
/// `node`) and phase Available.
pub fn pv(name: &str, class: &str, capacity: &str, node: Option<&str>) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(list(&[("storage", capacity)])),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: (!class.is_empty()).then(|| class.to_string()),
            node_affinity: node.map(|n| VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![term(vec![requirement(
                        "kubernetes.io/hostname",
                        "In",
                        &[n],
                    )])],
                }),
            }),
            ..Default::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some("Available".into()),
            ..Default::default()
        }),
    }
}

/// A PVC in "default" of `class` requesting `request`, bound to `volume` when given.
pub fn pvc(name: &str, class: &str, request: &str, volume: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            annotations: volume.map(|_| {
                BTreeMap::from([(
                    "pv.kubernetes.io/bind-completed".to_string(),
                    "yes".to_string(),
                )])
            }),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(list(&[("storage", request)])),
                limits: None,
            }),
            storage_class_name: (!class.is_empty()).then(|| class.to_string()),
            volume_name: volume.map(str::to_string),
            ..Default::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some(if volume.is_some() { "Bound" } else { "Pending" }.into()),
            ..Default::default()
        }),
    }
}

/// Binds `pv` to `claim` through its claimRef.
pub fn claim_ref(mut pv: PersistentVolume, claim: &str) -> PersistentVolume {
    pv.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
        name: Some(claim.into()),
        namespace: Some("default".into()),
        ..Default::default()
    });
    pv
}

pub fn storage_class(name: &str, mode: &str, provisioner: &str) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        provisioner: provisioner.into(),
        volume_binding_mode: Some(mode.into()),
        ..Default::default()
    }
}
