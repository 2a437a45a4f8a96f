//! The thirteen rekube CRDs: names, scope, subresources and `kubectl get` columns as upstream
//! prints them (pkg/printers/internalversion/printers.go), schema from the upstream type.
use serde_json::Value;

use crate::crd::CrdDescriptor;
use crate::resource::Upstream;
use crate::schema::upstream_root_schema;
use crate::{defaults, kinds, validation};

fn schema_of<K: Upstream>(patches: &[fn(&mut Value)]) -> Value {
    let mut schema = upstream_root_schema::<K::Upstream>();
    patches.iter().for_each(|p| p(&mut schema));
    validation::quantities_and_selectors(&mut schema);
    schema
}

/// Every rekube CRD, in a stable order.
pub fn all() -> Vec<CrdDescriptor> {
    vec![
        CrdDescriptor {
            kind: "Pod",
            plural: "pods",
            short_name: "rpod",
            namespaced: true,
            schema: schema_of::<kinds::core::Pod>(&[defaults::pod, validation::pod]),
            status_subresource: true,
            scale: false,
            columns: &[
                (
                    "Ready",
                    "string",
                    ".status.conditions[?(@.type==\"Ready\")].status",
                    0,
                ),
                ("Status", "string", ".status.phase", 0),
                (
                    "Restarts",
                    "string",
                    ".status.containerStatuses[*].restartCount",
                    0,
                ),
                ("IP", "string", ".status.podIP", 1),
                ("Node", "string", ".spec.nodeName", 1),
                ("Nominated Node", "string", ".status.nominatedNodeName", 1),
            ],
            selectable_fields: &["spec.nodeName", "status.phase"],
        },
        CrdDescriptor {
            kind: "Deployment",
            plural: "deployments",
            short_name: "rdeploy",
            namespaced: true,
            schema: schema_of::<kinds::apps::Deployment>(&[
                defaults::deployment,
                validation::deployment,
            ]),
            status_subresource: true,
            scale: true,
            columns: &[
                ("Ready", "integer", ".status.readyReplicas", 0),
                ("Up-to-date", "integer", ".status.updatedReplicas", 0),
                ("Available", "integer", ".status.availableReplicas", 0),
                (
                    "Containers",
                    "string",
                    ".spec.template.spec.containers[*].name",
                    1,
                ),
                (
                    "Images",
                    "string",
                    ".spec.template.spec.containers[*].image",
                    1,
                ),
                ("Selector", "string", ".spec.selector.matchLabels", 1),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "ReplicaSet",
            plural: "replicasets",
            short_name: "rrs",
            namespaced: true,
            schema: schema_of::<kinds::apps::ReplicaSet>(&[
                defaults::replica_set,
                validation::replica_set,
            ]),
            status_subresource: true,
            scale: true,
            columns: &[
                ("Desired", "integer", ".spec.replicas", 0),
                ("Current", "integer", ".status.replicas", 0),
                ("Ready", "integer", ".status.readyReplicas", 0),
                (
                    "Containers",
                    "string",
                    ".spec.template.spec.containers[*].name",
                    1,
                ),
                (
                    "Images",
                    "string",
                    ".spec.template.spec.containers[*].image",
                    1,
                ),
                ("Selector", "string", ".spec.selector.matchLabels", 1),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "Service",
            plural: "services",
            short_name: "rsvc",
            namespaced: true,
            schema: schema_of::<kinds::core::Service>(&[defaults::service, validation::service]),
            status_subresource: true,
            scale: false,
            columns: &[
                ("Type", "string", ".spec.type", 0),
                ("Cluster-IP", "string", ".spec.clusterIP", 0),
                (
                    "External-IP",
                    "string",
                    ".status.loadBalancer.ingress[*].ip",
                    0,
                ),
                ("Port(s)", "string", ".spec.ports[*].port", 0),
                ("Selector", "string", ".spec.selector", 1),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "Endpoints",
            plural: "endpoints",
            short_name: "rep",
            namespaced: true,
            schema: schema_of::<kinds::core::Endpoints>(&[defaults::endpoints]),
            status_subresource: false,
            scale: false,
            columns: &[("Endpoints", "string", ".subsets[*].addresses[*].ip", 0)],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "EndpointSlice",
            plural: "endpointslices",
            short_name: "reps",
            namespaced: true,
            schema: schema_of::<kinds::discovery::EndpointSlice>(&[
                defaults::endpoint_slice,
                validation::endpoint_slice,
            ]),
            status_subresource: false,
            scale: false,
            // kubectl's printEndpointSlice prints the ports and endpoints abbreviated
            // ("80,443", "10.0.0.1,10.0.0.2 + 3 more..."); a column shows the lists.
            columns: &[
                ("AddressType", "string", ".addressType", 0),
                ("Ports", "string", ".ports[*].port", 0),
                ("Endpoints", "string", ".endpoints[*].addresses[*]", 0),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "PersistentVolume",
            plural: "persistentvolumes",
            short_name: "rpv",
            namespaced: false,
            schema: schema_of::<kinds::core::PersistentVolume>(&[
                defaults::persistent_volume,
                validation::persistent_volume,
            ]),
            status_subresource: true,
            scale: false,
            columns: &[
                ("Capacity", "string", ".spec.capacity.storage", 0),
                ("Access Modes", "string", ".spec.accessModes", 0),
                (
                    "Reclaim Policy",
                    "string",
                    ".spec.persistentVolumeReclaimPolicy",
                    0,
                ),
                ("Status", "string", ".status.phase", 0),
                ("Claim", "string", ".spec.claimRef.name", 0),
                ("StorageClass", "string", ".spec.storageClassName", 0),
                (
                    "VolumeAttributesClass",
                    "string",
                    ".spec.volumeAttributesClassName",
                    0,
                ),
                ("Reason", "string", ".status.reason", 0),
                ("VolumeMode", "string", ".spec.volumeMode", 1),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "PersistentVolumeClaim",
            plural: "persistentvolumeclaims",
            short_name: "rpvc",
            namespaced: true,
            schema: schema_of::<kinds::core::PersistentVolumeClaim>(&[
                defaults::persistent_volume_claim,
                validation::persistent_volume_claim,
            ]),
            status_subresource: true,
            scale: false,
            columns: &[
                ("Status", "string", ".status.phase", 0),
                ("Volume", "string", ".spec.volumeName", 0),
                ("Capacity", "string", ".status.capacity.storage", 0),
                ("Access Modes", "string", ".status.accessModes", 0),
                ("StorageClass", "string", ".spec.storageClassName", 0),
                (
                    "VolumeAttributesClass",
                    "string",
                    ".spec.volumeAttributesClassName",
                    0,
                ),
                ("VolumeMode", "string", ".spec.volumeMode", 1),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "StorageClass",
            plural: "storageclasses",
            short_name: "rsc",
            namespaced: false,
            schema: schema_of::<kinds::storage::StorageClass>(&[
                defaults::storage_class,
                validation::storage_class,
            ]),
            status_subresource: false,
            scale: false,
            columns: &[
                ("Provisioner", "string", ".provisioner", 0),
                ("ReclaimPolicy", "string", ".reclaimPolicy", 0),
                ("VolumeBindingMode", "string", ".volumeBindingMode", 0),
                (
                    "AllowVolumeExpansion",
                    "boolean",
                    ".allowVolumeExpansion",
                    0,
                ),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "Node",
            plural: "nodes",
            short_name: "rnode",
            namespaced: false,
            schema: schema_of::<kinds::core::Node>(&[defaults::node]),
            status_subresource: true,
            scale: false,
            columns: &[
                (
                    "Status",
                    "string",
                    ".status.conditions[?(@.type==\"Ready\")].status",
                    0,
                ),
                ("Version", "string", ".status.nodeInfo.kubeletVersion", 0),
                (
                    "Internal-IP",
                    "string",
                    ".status.addresses[?(@.type==\"InternalIP\")].address",
                    1,
                ),
                ("OS-Image", "string", ".status.nodeInfo.osImage", 1),
                (
                    "Kernel-Version",
                    "string",
                    ".status.nodeInfo.kernelVersion",
                    1,
                ),
                (
                    "Container-Runtime",
                    "string",
                    ".status.nodeInfo.containerRuntimeVersion",
                    1,
                ),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "VolumeAttachment",
            plural: "volumeattachments",
            short_name: "rva",
            namespaced: false,
            schema: schema_of::<kinds::storage::VolumeAttachment>(&[
                defaults::volume_attachment,
                validation::volume_attachment,
            ]),
            status_subresource: true,
            scale: false,
            columns: &[
                ("Attacher", "string", ".spec.attacher", 0),
                ("PV", "string", ".spec.source.persistentVolumeName", 0),
                ("Node", "string", ".spec.nodeName", 0),
                ("Attached", "boolean", ".status.attached", 0),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "CSIDriver",
            plural: "csidrivers",
            short_name: "rcsidriver",
            namespaced: false,
            schema: schema_of::<kinds::storage::CSIDriver>(&[
                defaults::csi_driver,
                validation::csi_driver,
            ]),
            status_subresource: false,
            scale: false,
            columns: &[
                ("AttachRequired", "boolean", ".spec.attachRequired", 0),
                ("PodInfoOnMount", "boolean", ".spec.podInfoOnMount", 0),
                ("StorageCapacity", "boolean", ".spec.storageCapacity", 0),
                (
                    "TokenRequests",
                    "string",
                    ".spec.tokenRequests[*].audience",
                    0,
                ),
                ("RequiresRepublish", "boolean", ".spec.requiresRepublish", 0),
                ("Modes", "string", ".spec.volumeLifecycleModes", 0),
            ],
            selectable_fields: &[],
        },
        CrdDescriptor {
            kind: "CSIStorageCapacity",
            plural: "csistoragecapacities",
            short_name: "rcsisc",
            namespaced: true,
            schema: schema_of::<kinds::storage::CSIStorageCapacity>(&[
                validation::csi_storage_capacity,
            ]),
            status_subresource: false,
            scale: false,
            // printers.go's columns (printCSIStorageCapacity; it prints `<unset>` for no
            // capacity, a column nothing). upstream's registry does not wire them (its
            // default table: NAME, CREATED AT); rekube prints them.
            columns: &[
                ("StorageClassName", "string", ".storageClassName", 0),
                ("Capacity", "string", ".capacity", 0),
            ],
            selectable_fields: &[],
        },
    ]
}
