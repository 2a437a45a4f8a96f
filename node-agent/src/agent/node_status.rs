//! The Node object the agent registers and the status it reports (upstream
//! pkg/kubelet/kubelet_node_status.go `initialNode` and pkg/kubelet/nodestatus/setters.go:
//! MachineInfo, NodeAddress, VersionInfo, ReadyCondition, MemoryPressureCondition,
//! DiskPressureCondition, PIDPressureCondition). Pure: the machine's readings come in as
//! [`MachineInfo`] and [`Usage`], `now` is a parameter.
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rekube_crds::Node;

use crate::volume::manager::attach::CONTROLLER_MANAGED_ATTACH_ANNOTATION;

/// What the machine is (read once at start).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MachineInfo {
    pub hostname: String,
    pub num_cores: u32,
    pub memory_bytes: u64,
    /// The agent's root filesystem's size (upstream: the nodefs capacity).
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub architecture: String,
    /// 1 or 2.
    pub cgroup_version: u8,
    pub internal_ips: Vec<String>,
}

/// What the machine has left (read every status update).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub memory_available_bytes: u64,
    pub nodefs_available_bytes: u64,
    pub nodefs_capacity_bytes: u64,
    pub pids_available: u64,
    pub pids_max: u64,
}

/// Resources held back from pods: kube-reserved + system-reserved + the hard eviction
/// thresholds (upstream GetNodeAllocatableReservation).
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub max_pods: u32,
    /// The hard eviction thresholds (upstream defaults: memory.available<100Mi,
    /// nodefs.available<10%; no pid threshold unless set).
    pub eviction_memory_available_bytes: u64,
    pub eviction_nodefs_available_percent: u8,
    pub eviction_pid_available_percent: Option<u8>,
}

impl Default for Reservation {
    fn default() -> Self {
        Reservation {
            cpu_milli: 0,
            memory_bytes: 0,
            ephemeral_storage_bytes: 0,
            max_pods: 110,
            eviction_memory_available_bytes: 100 * 1024 * 1024,
            eviction_nodefs_available_percent: 10,
            eviction_pid_available_percent: None,
        }
    }
}

/// The agent's own version, as kubeletVersion and containerRuntimeVersion show it.
pub const AGENT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// Annotation carrying the node's cgroup version (NodeSystemInfo has no field for it).
pub const ANNOTATION_CGROUP_VERSION: &str = "rekube.io/cgroup-version";

fn quantity(s: String) -> Quantity {
    Quantity(s)
}

fn kib(bytes: u64) -> Quantity {
    quantity(format!("{}Ki", bytes / 1024))
}

/// The Node to register (upstream initialNode): name, the well-known labels, no spec
/// beyond what the controllers fill in (podCIDR, taints).
pub fn initial_node(name: &str, machine: &MachineInfo, labels: &BTreeMap<String, String>) -> Node {
    let mut l = labels.clone();
    l.insert("kubernetes.io/hostname".into(), name.into());
    l.insert("kubernetes.io/os".into(), "linux".into());
    l.insert("kubernetes.io/arch".into(), machine.architecture.clone());
    l.insert("beta.kubernetes.io/os".into(), "linux".into());
    l.insert(
        "beta.kubernetes.io/arch".into(),
        machine.architecture.clone(),
    );
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(l),
            annotations: Some(BTreeMap::from([
                (
                    ANNOTATION_CGROUP_VERSION.to_string(),
                    format!("v{}", machine.cgroup_version),
                ),
                // The attach/detach controller attaches this node's volumes (upstream's
                // kubelet sets it with --enable-controller-attach-detach, its default).
                (
                    CONTROLLER_MANAGED_ATTACH_ANNOTATION.to_string(),
                    "true".to_string(),
                ),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: None,
    }
}

/// upstream MachineInfo setter: capacity from the machine, allocatable = capacity −
/// reservation − hard eviction thresholds, never below zero.
pub fn capacity_and_allocatable(
    machine: &MachineInfo,
    r: &Reservation,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let capacity = BTreeMap::from([
        ("cpu".to_string(), quantity(machine.num_cores.to_string())),
        ("memory".to_string(), kib(machine.memory_bytes)),
        (
            "ephemeral-storage".to_string(),
            kib(machine.ephemeral_storage_bytes),
        ),
        ("pods".to_string(), quantity(r.max_pods.to_string())),
    ]);
    let cpu = (u64::from(machine.num_cores) * 1000).saturating_sub(r.cpu_milli);
    let memory = machine
        .memory_bytes
        .saturating_sub(r.memory_bytes)
        .saturating_sub(r.eviction_memory_available_bytes);
    let nodefs_eviction =
        machine.ephemeral_storage_bytes / 100 * u64::from(r.eviction_nodefs_available_percent);
    let storage = machine
        .ephemeral_storage_bytes
        .saturating_sub(r.ephemeral_storage_bytes)
        .saturating_sub(nodefs_eviction);
    let allocatable = BTreeMap::from([
        ("cpu".to_string(), quantity(format!("{cpu}m"))),
        ("memory".to_string(), kib(memory)),
        (
            "ephemeral-storage".to_string(),
            quantity(storage.to_string()),
        ),
        ("pods".to_string(), quantity(r.max_pods.to_string())),
    ]);
    (capacity, allocatable)
}

/// One condition as the kubelet reports it: lastTransitionTime kept while the status
/// does not change, lastHeartbeatTime = now.
fn condition(
    previous: Option<&NodeStatus>,
    type_: &str,
    status: bool,
    (reason_true, message_true): (&str, &str),
    (reason_false, message_false): (&str, &str),
    now: Timestamp,
) -> NodeCondition {
    let status = if status { "True" } else { "False" };
    let (reason, message) = if status == "True" {
        (reason_true, message_true)
    } else {
        (reason_false, message_false)
    };
    let old = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match old {
        Some(o) if o.status == status => o.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: transition,
    }
}

/// Why the node is not ready, if it is not (upstream: the runtime and network errors
/// joined into the Ready condition's message).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readiness {
    pub errors: Vec<String>,
}

/// The full status the agent posts (upstream defaultNodeStatusFuncs): capacity,
/// allocatable, conditions in upstream's order (MemoryPressure, DiskPressure,
/// PIDPressure, Ready), addresses, nodeInfo.
pub fn node_status(
    machine: &MachineInfo,
    reservation: &Reservation,
    usage: &Usage,
    readiness: &Readiness,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let (capacity, allocatable) = capacity_and_allocatable(machine, reservation);
    let memory_pressure =
        usage.memory_available_bytes < reservation.eviction_memory_available_bytes;
    let disk_pressure = usage.nodefs_capacity_bytes > 0
        && usage.nodefs_available_bytes * 100
            < usage.nodefs_capacity_bytes
                * u64::from(reservation.eviction_nodefs_available_percent);
    let pid_pressure = reservation
        .eviction_pid_available_percent
        .is_some_and(|pct| {
            usage.pids_max > 0 && usage.pids_available * 100 < usage.pids_max * u64::from(pct)
        });
    let ready_message = if readiness.errors.is_empty() {
        String::new()
    } else {
        readiness.errors.join(", ")
    };
    let conditions = vec![
        condition(
            previous,
            "MemoryPressure",
            memory_pressure,
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            now,
        ),
        condition(
            previous,
            "DiskPressure",
            disk_pressure,
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            now,
        ),
        condition(
            previous,
            "PIDPressure",
            pid_pressure,
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            now,
        ),
        condition(
            previous,
            "Ready",
            readiness.errors.is_empty(),
            ("KubeletReady", "kubelet is posting ready status"),
            ("KubeletNotReady", &ready_message),
            now,
        ),
    ];
    let mut addresses: Vec<NodeAddress> = machine
        .internal_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.clone(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: machine.hostname.clone(),
    });
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(addresses),
        node_info: Some(NodeSystemInfo {
            machine_id: machine.machine_id.clone(),
            system_uuid: machine.system_uuid.clone(),
            boot_id: machine.boot_id.clone(),
            kernel_version: machine.kernel_version.clone(),
            os_image: machine.os_image.clone(),
            container_runtime_version: format!("rekube://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: AGENT_VERSION.into(),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            architecture: machine.architecture.clone(),
            ..Default::default()
        }),
        ..previous.cloned().unwrap_or_default()
    }
}

/// The status with the volume manager's `GetVolumesInUse` as `volumesInUse` (upstream's
/// `VolumesInUse` setter; none when no volume is in use).
pub fn with_volumes_in_use(mut status: NodeStatus, in_use: Vec<String>) -> NodeStatus {
    status.volumes_in_use = (!in_use.is_empty()).then_some(in_use);
    status
}

/// Whether `new` differs from `old` beyond heartbeat times (upstream: the kubelet posts
/// a changed status at once and an unchanged one every nodeStatusReportFrequency).
pub fn status_changed(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> MachineInfo {
        MachineInfo {
            hostname: "node-a".into(),
            num_cores: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            ephemeral_storage_bytes: 100 * 1000 * 1000 * 1000,
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            machine_id: "m".into(),
            system_uuid: "u".into(),
            boot_id: "b".into(),
            architecture: "amd64".into(),
            cgroup_version: 1,
            internal_ips: vec!["192.0.2.10".into()],
        }
    }

    fn ample() -> Usage {
        Usage {
            memory_available_bytes: 2 << 30,
            nodefs_available_bytes: 50,
            nodefs_capacity_bytes: 100,
            pids_available: 30000,
            pids_max: 32768,
        }
    }

    fn cond<'a>(s: &'a NodeStatus, t: &str) -> &'a NodeCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn allocatable_subtracts_reservations_and_eviction_thresholds() {
        let r = Reservation {
            cpu_milli: 100,
            memory_bytes: 256 * 1024 * 1024,
            ..Default::default()
        };
        let (cap, alloc) = capacity_and_allocatable(&machine(), &r);
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(alloc["cpu"].0, "1900m");
        // 4 GiB − 256 MiB − 100 MiB
        assert_eq!(
            alloc["memory"].0,
            format!("{}Ki", (4096 - 256 - 100) * 1024)
        );
        assert_eq!(
            alloc["ephemeral-storage"].0,
            (90u64 * 1000 * 1000 * 1000).to_string()
        );
        let greedy = Reservation {
            cpu_milli: 5000,
            memory_bytes: 8 << 30,
            ..Default::default()
        };
        let (_, alloc) = capacity_and_allocatable(&machine(), &greedy);
        assert_eq!(
            (alloc["cpu"].0.as_str(), alloc["memory"].0.as_str()),
            ("0m", "0Ki")
        );
    }

    #[test]
    fn conditions_follow_usage_with_upstreams_reasons() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let r = Reservation {
            eviction_pid_available_percent: Some(5),
            ..Default::default()
        };
        let ok = node_status(&machine(), &r, &ample(), &Readiness::default(), None, now);
        let names: Vec<&str> = ok
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            names,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(cond(&ok, "Ready").reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            cond(&ok, "MemoryPressure").reason.as_deref(),
            Some("KubeletHasSufficientMemory")
        );
        let cases = [
            (
                Usage {
                    memory_available_bytes: 50 << 20,
                    ..ample()
                },
                "MemoryPressure",
                "KubeletHasInsufficientMemory",
            ),
            (
                Usage {
                    nodefs_available_bytes: 9,
                    ..ample()
                },
                "DiskPressure",
                "KubeletHasDiskPressure",
            ),
            (
                Usage {
                    pids_available: 100,
                    ..ample()
                },
                "PIDPressure",
                "KubeletHasInsufficientPID",
            ),
        ];
        for (usage, type_, reason) in cases {
            let s = node_status(
                &machine(),
                &r,
                &usage,
                &Readiness::default(),
                Some(&ok),
                now,
            );
            assert_eq!(cond(&s, type_).status, "True", "{type_}");
            assert_eq!(cond(&s, type_).reason.as_deref(), Some(reason));
        }
        // No pid threshold configured (upstream default): never PID pressure.
        let s = node_status(
            &machine(),
            &Reservation::default(),
            &Usage {
                pids_available: 0,
                ..ample()
            },
            &Readiness::default(),
            None,
            now,
        );
        assert_eq!(cond(&s, "PIDPressure").status, "False");
        let not_ready = Readiness {
            errors: vec!["container runtime is down".into()],
        };
        let s = node_status(&machine(), &r, &ample(), &not_ready, Some(&ok), now);
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("container runtime is down")
        );
    }

    #[test]
    fn volumes_in_use_replace_the_previous_list_and_count_as_changes() {
        let previous = NodeStatus {
            volumes_in_use: Some(vec!["kubernetes.io/csi/d^old".into()]),
            ..Default::default()
        };
        let now = with_volumes_in_use(previous.clone(), vec!["kubernetes.io/csi/d^h".into()]);
        assert_eq!(
            now.volumes_in_use,
            Some(vec!["kubernetes.io/csi/d^h".to_string()])
        );
        assert!(status_changed(Some(&previous), &now));
        let none = with_volumes_in_use(previous.clone(), vec![]);
        assert_eq!(none.volumes_in_use, None);
        assert!(status_changed(Some(&previous), &none));
        assert!(!status_changed(
            Some(&now),
            &with_volumes_in_use(now.clone(), vec!["kubernetes.io/csi/d^h".into()])
        ));
    }

    #[test]
    fn transition_times_are_kept_and_heartbeats_do_not_count_as_changes() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let r = Reservation::default();
        let first = node_status(&machine(), &r, &ample(), &Readiness::default(), None, t0);
        let second = node_status(
            &machine(),
            &r,
            &ample(),
            &Readiness::default(),
            Some(&first),
            t1,
        );
        assert_eq!(cond(&second, "Ready").last_transition_time, Some(Time(t0)));
        assert_eq!(cond(&second, "Ready").last_heartbeat_time, Some(Time(t1)));
        assert!(!status_changed(Some(&first), &second));
        assert!(status_changed(None, &second));
        let down = node_status(
            &machine(),
            &r,
            &ample(),
            &Readiness {
                errors: vec!["x".into()],
            },
            Some(&second),
            t1,
        );
        assert!(status_changed(Some(&second), &down));
        assert_eq!(cond(&down, "Ready").last_transition_time, Some(Time(t1)));
    }

    #[test]
    fn the_initial_node_carries_upstreams_labels_and_the_cgroup_version() {
        let n = initial_node(
            "node-a",
            &machine(),
            &BTreeMap::from([("zone".into(), "a".into())]),
        );
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node-a");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["zone"], "a");
        assert_eq!(
            n.metadata.annotations.unwrap()[ANNOTATION_CGROUP_VERSION],
            "v1"
        );
    }
}
