//! The pod status the agent reports: upstream kubelet_pods.go `generateAPIPodStatus`,
//! `convertStatusToAPIStatus`, `convertToAPIContainerStatuses`, `getPhase`, `sortPodIPs`;
//! status/generate.go (the kubelet's conditions); prober_manager.go `UpdatePodStatus`
//! (`ready`, `started`); and the status manager's part (status_manager.go
//! `updateStatusInternal`: condition transition times, `startTime` set once, observed
//! generation, `normalizeStatus`; `mergePodStatus`: conditions the kubelet does not own
//! are kept, a terminal pod is never ready; `isPodStatusByKubeletEqual`: write only
//! changes). qos/qos.go `ComputePodQOS` gives `qosClass`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP,
    PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rekube_crds::Pod;

use super::pod_actions::{
    container_should_restart, has_any_regular_container_created, is_restartable_init_container,
    pod_sandbox_changed, should_container_be_restarted, spec,
};
use super::prober::{ProbeResult, ProbeResults, ProbeType};
use super::quantity::{Amount, amount};
use super::runtime_status::{
    ContainerRuntimeStatus, ContainerState, PodRuntimeStatus, container_id_string,
    parse_container_id,
};

/// Pod phases, condition statuses and condition types: the one definition in
/// `rekube_crds::core_v1`, the phases under the names this module has always used.
pub use rekube_crds::core_v1::{
    CONDITION_FALSE, CONDITION_TRUE, CONTAINERS_READY, DISRUPTION_TARGET,
    POD_FAILED as PHASE_FAILED, POD_INITIALIZED, POD_PENDING as PHASE_PENDING, POD_READY,
    POD_READY_TO_START_CONTAINERS, POD_RESIZE_IN_PROGRESS, POD_RESIZE_PENDING,
    POD_RUNNING as PHASE_RUNNING, POD_SCHEDULED, POD_SUCCEEDED as PHASE_SUCCEEDED,
};
pub const ALL_CONTAINERS_RESTARTING: &str = "AllContainersRestarting";

/// Condition reasons (status/generate.go).
pub const UNKNOWN_CONTAINER_STATUSES: &str = "UnknownContainerStatuses";
pub const POD_COMPLETED: &str = "PodCompleted";
pub const POD_FAILED: &str = "PodFailed";
pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";

/// Waiting reasons: the defaults (kubelet_pods.go), and those a failed start leaves
/// (kubecontainer and images errors).
pub const POD_INITIALIZING: &str = "PodInitializing";
pub const CONTAINER_CREATING: &str = "ContainerCreating";
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";
pub const CRASH_LOOP_BACK_OFF: &str = super::backoff::REASON_CRASH_LOOP_BACK_OFF;
/// A container the runtime lost track of (`kubecontainer.ContainerReasonStatusUnknown`).
pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

/// Upstream `MaxPodTerminationMessageLogLength`: the termination messages of a pod
/// together are cut to this many bytes.
pub const MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH: usize = 1024 * 12;

/// Why a container's last start failed (upstream's reason cache entry, `ReasonItem`): it
/// is shown as the container's waiting state while the container is to be started again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingReason {
    /// `ErrImagePull`, `ImagePullBackOff`, `CreateContainerConfigError`,
    /// `CrashLoopBackOff`, ….
    pub reason: String,
    pub message: String,
}

/// The inputs of [`generate_api_pod_status`] besides the pod.
#[derive(Debug, Clone, Copy)]
pub struct PodStatusInputs<'a> {
    /// The runtime's view of the pod.
    pub runtime: &'a PodRuntimeStatus,
    /// Probe results by container ID.
    pub probe_results: &'a ProbeResults,
    /// The last failed start of each container, by container name (upstream reason
    /// cache); the entry of a container that started since must be gone.
    pub waiting_reasons: &'a BTreeMap<String, WaitingReason>,
    /// The node's addresses, primary first (`status.hostIP`, `hostIPs`, and the pod IPs of
    /// a host-network pod).
    pub host_ips: &'a [String],
    /// The pod worker has terminated the pod (it will not run again).
    pub pod_is_terminal: bool,
    pub now: Timestamp,
}

fn init_containers(spec: &PodSpec) -> &[Container] {
    spec.init_containers.as_deref().unwrap_or_default()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn observed_generation(pod: &Pod) -> Option<i64> {
    pod.metadata.generation.filter(|g| *g != 0)
}

/// Upstream `PodConditionByKubelet`: the conditions the kubelet sets and replaces.
pub fn pod_condition_by_kubelet(condition_type: &str) -> bool {
    matches!(
        condition_type,
        POD_SCHEDULED
            | POD_READY
            | POD_INITIALIZED
            | CONTAINERS_READY
            | POD_RESIZE_IN_PROGRESS
            | POD_RESIZE_PENDING
            | POD_READY_TO_START_CONTAINERS
            | ALL_CONTAINERS_RESTARTING
    )
}

/// Upstream `PodConditionSharedByKubelet`.
pub fn pod_condition_shared_by_kubelet(condition_type: &str) -> bool {
    condition_type == DISRUPTION_TARGET
}

fn condition(pod: &Pod, type_: &str, status: &str, reason: &str, message: &str) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: non_empty(reason),
        message: non_empty(message),
        observed_generation: observed_generation(pod),
        ..Default::default()
    }
}

/// `podutil.GetContainerStatus`.
fn get_container_status<'a>(
    statuses: &'a [ContainerStatus],
    name: &str,
) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn state_of(s: &ContainerStatus) -> ApiContainerState {
    s.state.clone().unwrap_or_default()
}

fn last_terminated(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.last_state.as_ref().and_then(|l| l.terminated.as_ref())
}

/// Go's `%s` of a string slice: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// Upstream `GenerateContainersReadyCondition`: True when every regular container and
/// sidecar is ready.
pub fn generate_containers_ready_condition(
    pod: &Pod,
    container_statuses: Option<&[ContainerStatus]>,
    phase: &str,
) -> PodCondition {
    let Some(statuses) = container_statuses else {
        return condition(
            pod,
            CONTAINERS_READY,
            CONDITION_FALSE,
            UNKNOWN_CONTAINER_STATUSES,
            "",
        );
    };
    let spec = spec(pod);
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = init_containers(spec)
        .iter()
        .filter(|c| is_restartable_init_container(c));
    for c in sidecars.chain(spec.containers.iter()) {
        match get_container_status(statuses, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.as_str()),
            Some(_) => {}
            None => unknown.push(c.name.as_str()),
        }
    }
    if (phase == PHASE_SUCCEEDED && unknown.is_empty()) || phase == PHASE_FAILED {
        return terminal_phase_condition(pod, CONTAINERS_READY, phase);
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        messages.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if !messages.is_empty() {
        return condition(
            pod,
            CONTAINERS_READY,
            CONDITION_FALSE,
            CONTAINERS_NOT_READY,
            &messages.join(", "),
        );
    }
    condition(pod, CONTAINERS_READY, CONDITION_TRUE, "", "")
}

/// Upstream `generateContainersReadyConditionForTerminalPhase` and
/// `generatePodReadyConditionForTerminalPhase`.
fn terminal_phase_condition(pod: &Pod, type_: &str, phase: &str) -> PodCondition {
    let reason = match phase {
        PHASE_FAILED => POD_FAILED,
        PHASE_SUCCEEDED => POD_COMPLETED,
        _ => "",
    };
    condition(pod, type_, CONDITION_FALSE, reason, "")
}

/// Upstream `GeneratePodReadyCondition`: ContainersReady, and every readiness gate's
/// condition True.
pub fn generate_pod_ready_condition(
    pod: &Pod,
    conditions: &[PodCondition],
    container_statuses: Option<&[ContainerStatus]>,
    phase: &str,
) -> PodCondition {
    let containers_ready = generate_containers_ready_condition(pod, container_statuses, phase);
    if containers_ready.status != CONDITION_TRUE {
        return PodCondition {
            type_: POD_READY.to_string(),
            ..containers_ready
        };
    }
    let mut messages = Vec::new();
    for gate in spec(pod).readiness_gates.iter().flatten() {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != CONDITION_TRUE => messages.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if !messages.is_empty() {
        return condition(
            pod,
            POD_READY,
            CONDITION_FALSE,
            READINESS_GATES_NOT_READY,
            &messages.join(", "),
        );
    }
    condition(pod, POD_READY, CONDITION_TRUE, "", "")
}

/// Upstream `isInitContainerInitialized`: a sidecar once started, an init container once
/// ready (exited 0).
fn is_init_container_initialized(c: &Container, s: &ContainerStatus) -> bool {
    if is_restartable_init_container(c) {
        s.started == Some(true)
    } else {
        s.ready
    }
}

/// Upstream `HasAnyRegularContainerStarted`: a regular container runs or ran.
pub fn has_any_regular_container_started(spec: &PodSpec, statuses: &[ContainerStatus]) -> bool {
    statuses.iter().any(|s| {
        spec.containers.iter().any(|c| c.name == s.name)
            && s.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    })
}

/// Upstream `HasAnyActiveRegularContainerStarted`: a regular container exists in the
/// active sandbox.
pub fn has_any_active_regular_container_started(
    spec: &PodSpec,
    runtime: &PodRuntimeStatus,
) -> bool {
    runtime
        .active_container_statuses()
        .iter()
        .any(|s| spec.containers.iter().any(|c| c.name == s.name))
}

/// Upstream `GeneratePodInitializedCondition`: True once every init container completed
/// and every sidecar started (and for good: once True in `old_status`, it stays True).
pub fn generate_pod_initialized_condition(
    pod: &Pod,
    old_status: &PodStatus,
    container_statuses: Option<&[ContainerStatus]>,
    phase: &str,
) -> PodCondition {
    let spec = spec(pod);
    let inits = init_containers(spec);
    let Some(statuses) = container_statuses.or(inits.is_empty().then_some(&[][..])) else {
        return condition(
            pod,
            POD_INITIALIZED,
            CONDITION_FALSE,
            UNKNOWN_CONTAINER_STATUSES,
            "",
        );
    };
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for c in inits {
        match get_container_status(statuses, &c.name) {
            None => unknown.push(c.name.as_str()),
            Some(s) if !is_init_container_initialized(c, s) => incomplete.push(c.name.as_str()),
            Some(_) => {}
        }
    }
    if phase == PHASE_SUCCEEDED && unknown.is_empty() {
        return condition(pod, POD_INITIALIZED, CONDITION_TRUE, POD_COMPLETED, "");
    }
    // A regular container ran: initialized before, even if sidecars restart now.
    if has_any_regular_container_started(spec, statuses) {
        return condition(pod, POD_INITIALIZED, CONDITION_TRUE, "", "");
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        messages.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if !messages.is_empty() {
        let was_initialized = old_status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == POD_INITIALIZED && c.status == CONDITION_TRUE);
        if was_initialized {
            return condition(pod, POD_INITIALIZED, CONDITION_TRUE, "", "");
        }
        return condition(
            pod,
            POD_INITIALIZED,
            CONDITION_FALSE,
            CONTAINERS_NOT_INITIALIZED,
            &messages.join(", "),
        );
    }
    condition(pod, POD_INITIALIZED, CONDITION_TRUE, "", "")
}

/// Upstream `GeneratePodReadyToStartContainersCondition`: True while the pod has a
/// sandbox with its network set up (no new sandbox is needed).
pub fn generate_pod_ready_to_start_containers_condition(
    pod: &Pod,
    runtime: &PodRuntimeStatus,
) -> PodCondition {
    let (new_sandbox_needed, _, _) = pod_sandbox_changed(pod, runtime);
    let status = if new_sandbox_needed {
        CONDITION_FALSE
    } else {
        CONDITION_TRUE
    };
    condition(pod, POD_READY_TO_START_CONTAINERS, status, "", "")
}

/// Upstream `getPhase` (with ContainerRestartRules, as 1.36 runs): the pod's phase from
/// its container statuses (init, sidecar and regular together in `info`).
pub fn get_phase(
    pod: &Pod,
    info: &[ContainerStatus],
    pod_is_terminal: bool,
    pod_has_initialized: bool,
) -> &'static str {
    let spec = spec(pod);
    let mut pending_restartable_init = 0;
    let mut pending_regular_init = 0;
    let mut failed_init_not_restartable = 0;

    for c in init_containers(spec)
        .iter()
        .filter(|c| !is_restartable_init_container(c))
    {
        let Some(s) = get_container_status(info, &c.name) else {
            pending_regular_init += 1;
            continue;
        };
        let state = state_of(s);
        if state.running.is_some() {
            pending_regular_init += 1;
        } else if let Some(t) = &state.terminated {
            if t.exit_code != 0 && !container_should_restart(c, spec, t.exit_code) {
                failed_init_not_restartable += 1;
            }
        } else if state.waiting.is_some() {
            match last_terminated(s) {
                Some(t) => {
                    if t.exit_code != 0 && !container_should_restart(c, spec, t.exit_code) {
                        failed_init_not_restartable += 1;
                    }
                }
                None => pending_regular_init += 1,
            }
        } else {
            pending_regular_init += 1;
        }
    }

    let (mut unknown, mut running, mut waiting, mut stopped) = (0, 0, 0, 0);
    let (mut stopped_not_restartable, mut succeeded) = (0, 0);

    for c in init_containers(spec)
        .iter()
        .filter(|c| is_restartable_init_container(c))
    {
        let Some(s) = get_container_status(info, &c.name) else {
            unknown += 1;
            continue;
        };
        let state = state_of(s);
        if state.running.is_some() {
            if s.started != Some(true) {
                pending_restartable_init += 1;
            }
            running += 1;
        } else if state.terminated.is_some() {
            // A stopped sidecar does not count for the phase.
        } else if state.waiting.is_some() {
            if last_terminated(s).is_none() {
                pending_restartable_init += 1;
                waiting += 1;
            }
        } else {
            pending_restartable_init += 1;
            unknown += 1;
        }
    }

    for c in &spec.containers {
        let Some(s) = get_container_status(info, &c.name) else {
            unknown += 1;
            continue;
        };
        let state = state_of(s);
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if !container_should_restart(c, spec, t.exit_code) {
                stopped_not_restartable += 1;
            }
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            match last_terminated(s) {
                Some(t) => {
                    stopped += 1;
                    if !container_should_restart(c, spec, t.exit_code) {
                        stopped_not_restartable += 1;
                    }
                }
                None => waiting += 1,
            }
        } else {
            unknown += 1;
        }
    }

    if failed_init_not_restartable > 0 {
        return PHASE_FAILED;
    }
    if pending_regular_init > 0
        || (pending_restartable_init > 0 && !pod_has_initialized)
        || waiting > 0
    {
        // One or more containers has not been started.
        return PHASE_PENDING;
    }
    if running > 0 && unknown == 0 {
        return PHASE_RUNNING;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if pod_is_terminal {
            // Terminal: nothing restarts, whatever the policy.
            return if stopped == succeeded {
                PHASE_SUCCEEDED
            } else {
                PHASE_FAILED
            };
        }
        if stopped != stopped_not_restartable {
            // At least one container is restarting.
            return PHASE_RUNNING;
        }
        return if stopped == succeeded {
            PHASE_SUCCEEDED
        } else {
            PHASE_FAILED
        };
    }
    PHASE_PENDING
}

fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(Time)
}

/// `convertContainerStatus` (inside `convertToAPIContainerStatuses`): one runtime
/// instance as an API status.
fn convert_container_status(
    cs: &ContainerRuntimeStatus,
    old: Option<&ContainerStatus>,
) -> ContainerStatus {
    let cid = container_id_string(&cs.id);
    let mut status = ContainerStatus {
        name: cs.name.clone(),
        restart_count: cs.restart_count,
        image: cs.image.clone(),
        // Historically the digested reference, not the image ID.
        image_id: cs.image_ref.clone(),
        container_id: Some(cid.clone()),
        last_state: Some(ApiContainerState::default()),
        ..Default::default()
    };
    let mut last = ApiContainerState::default();
    if let Some(old) = old {
        status.volume_mounts = old.volume_mounts.clone();
        // The restart count never goes down, and the last termination survives the
        // removal of the old instance.
        status.restart_count = status.restart_count.max(old.restart_count);
        let old_terminated = old.state.as_ref().and_then(|s| s.terminated.clone());
        if old.container_id != status.container_id && old_terminated.is_some() {
            last.terminated = old_terminated;
        } else if let Some(t) = last_terminated(old) {
            last.terminated = Some(t.clone());
        }
    }
    status.last_state = Some(last);
    let state = match cs.state {
        ContainerState::Running => {
            if let Some(old) = old {
                let old_terminated = old.state.as_ref().is_some_and(|s| s.terminated.is_some());
                if old_terminated && old.restart_count >= cs.restart_count {
                    status.restart_count = old.restart_count + 1;
                }
            }
            ApiContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(cs.started_at),
                }),
                ..Default::default()
            }
        }
        ContainerState::Created => ApiContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        },
        ContainerState::Exited => ApiContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: cs.exit_code,
                reason: cs.reason.clone().filter(|r| !r.is_empty()),
                message: cs.message.clone().filter(|m| !m.is_empty()),
                started_at: time(cs.started_at),
                finished_at: time(cs.finished_at),
                container_id: Some(cid),
                ..Default::default()
            }),
            ..Default::default()
        },
        ContainerState::Unknown
            if old.is_some_and(|o| o.state.as_ref().is_some_and(|s| s.running.is_some())) =>
        {
            // It ran and the runtime lost it: it terminated, not "never ran".
            status.restart_count = old.map_or(0, |o| o.restart_count) + 1;
            ApiContainerState {
                terminated: Some(ContainerStateTerminated {
                    reason: Some(CONTAINER_STATUS_UNKNOWN.to_string()),
                    message: Some(
                        "The container could not be located when the pod was terminated"
                            .to_string(),
                    ),
                    exit_code: 137,
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
        ContainerState::Unknown => ApiContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        },
    };
    status.state = Some(state);
    status
}

/// Upstream `convertToAPIContainerStatuses`: the API statuses of `containers` (the pod's
/// init, regular or ephemeral containers) from the runtime's instances, the previous
/// statuses, and the last failed starts.
pub fn convert_to_api_container_statuses(
    pod: &Pod,
    runtime: &PodRuntimeStatus,
    previous: &[ContainerStatus],
    containers: &[Container],
    has_init_containers: bool,
    is_init_container: bool,
    waiting_reasons: &BTreeMap<String, WaitingReason>,
) -> Vec<ContainerStatus> {
    let old: BTreeMap<&str, &ContainerStatus> =
        previous.iter().map(|s| (s.name.as_str(), s)).collect();
    let default_reason = if has_init_containers {
        POD_INITIALIZING
    } else {
        CONTAINER_CREATING
    };
    let waiting = |reason: &str, message: &str| ApiContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: non_empty(reason),
            message: non_empty(message),
        }),
        ..Default::default()
    };

    // Every container starts out waiting, with what the previous status knew.
    let mut statuses: BTreeMap<String, ContainerStatus> = BTreeMap::new();
    for c in containers {
        let mut status = ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: Some(waiting(default_reason, "")),
            last_state: Some(ApiContainerState::default()),
            ..Default::default()
        };
        if let Some(o) = old.get(c.name.as_str()) {
            if o.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
                status = (*o).clone();
            } else {
                status.restart_count = o.restart_count;
                status.last_state = o.last_state.clone().or(status.last_state);
            }
        }
        statuses.insert(c.name.clone(), status);
    }

    // A container that ran and has no instance any more terminated; it does not go back
    // to Pending.
    for c in containers {
        if runtime.containers.iter().any(|cs| cs.name == c.name) {
            continue;
        }
        let Some(o) = old.get(c.name.as_str()) else {
            continue;
        };
        let o_state = state_of(o);
        if o_state.terminated.is_some() || o_state.running.is_none() {
            continue;
        }
        let Some(status) = statuses.get_mut(&c.name) else {
            continue;
        };
        let is_default_waiting = status
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .is_some_and(|w| w.reason.as_deref() == Some(default_reason));
        if !is_default_waiting || last_terminated(status).is_some() {
            continue;
        }
        status.last_state = Some(ApiContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some(CONTAINER_STATUS_UNKNOWN.to_string()),
                message: Some(
                    "The container could not be located when the pod was deleted.  The container used to be Running"
                        .to_string(),
                ),
                exit_code: 137,
                ..Default::default()
            }),
            ..Default::default()
        });
        if pod.metadata.deletion_timestamp.is_none() {
            status.restart_count += 1;
        }
    }

    // The newest instance is the state; the one before it the last state.
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for cs in runtime.containers_newest_first() {
        if !statuses.contains_key(&cs.name) {
            continue;
        }
        let count = seen.entry(cs.name.as_str()).or_default();
        if *count >= 2 {
            continue;
        }
        let o = old.get(cs.name.as_str()).copied();
        let mut status = convert_container_status(cs, o);
        let old_started = o.and_then(|o| o.started);
        if let Some(started) = old_started.filter(|_| cs.state == ContainerState::Running) {
            status.started = Some(started);
        }
        if let Some(spec_c) = containers.iter().find(|c| c.name == cs.name) {
            status.resources = spec_c.resources.clone();
            status.allocated_resources = spec_c.resources.as_ref().and_then(|r| r.requests.clone());
        }
        if *count == 0 {
            statuses.insert(cs.name.clone(), status);
        } else if let Some(newest) = statuses.get_mut(&cs.name) {
            newest.last_state = status.state;
        }
        *count += 1;
    }

    // A container to be started again shows why its last start failed.
    for c in containers {
        if is_init_container {
            let s = runtime.find_container_status_by_name(&c.name);
            if s.is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0) {
                continue;
            }
            let status = statuses
                .get_mut(&c.name)
                .expect("every container has a status");
            if s.is_none()
                && has_any_regular_container_created(pod, runtime)
                && !is_restartable_init_container(c)
                && status.state.as_ref().is_some_and(|st| st.waiting.is_some())
            {
                status.state = Some(ApiContainerState {
                    terminated: Some(ContainerStateTerminated {
                        reason: Some("Completed".to_string()),
                        message: Some(
                            "Unable to get init container status from container runtime and pod has been initialized, treat it as exited normally"
                                .to_string(),
                        ),
                        exit_code: 0,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                continue;
            }
        }
        if !should_container_be_restarted(c, pod, runtime) {
            continue;
        }
        let Some(reason) = waiting_reasons.get(&c.name) else {
            continue;
        };
        let status = statuses
            .get_mut(&c.name)
            .expect("every container has a status");
        if status
            .state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some())
        {
            status.last_state = status.state.clone();
        }
        status.state = Some(waiting(&reason.reason, &reason.message));
    }

    if is_init_container {
        // In spec order.
        containers
            .iter()
            .filter_map(|c| statuses.remove(&c.name))
            .collect()
    } else {
        // By name (the map's order).
        statuses.into_values().collect()
    }
}

/// prober_manager.go `isContainerStarted`.
fn is_container_started(
    container: Option<&Container>,
    status: &ContainerStatus,
    probes: &ProbeResults,
) -> bool {
    if status.state.as_ref().is_none_or(|s| s.running.is_none()) {
        return false;
    }
    let id = parse_container_id(status.container_id.as_deref().unwrap_or_default());
    if let Some(result) = probes.get(ProbeType::Startup, id) {
        return result == ProbeResult::Success;
    }
    if status.started == Some(true) {
        return true;
    }
    // A startup probe that has not run yet: not started.
    container.is_none_or(|c| c.startup_probe.is_none())
}

/// Whether a running container is ready: its readiness probe succeeded, or it has none.
fn is_container_ready(
    container: Option<&Container>,
    status: &ContainerStatus,
    probes: &ProbeResults,
) -> bool {
    if status.state.as_ref().is_none_or(|s| s.running.is_none()) {
        return false;
    }
    let id = parse_container_id(status.container_id.as_deref().unwrap_or_default());
    if probes.get(ProbeType::Readiness, id) == Some(ProbeResult::Success) {
        return true;
    }
    container.is_none_or(|c| c.readiness_probe.is_none())
}

/// prober_manager.go `UpdatePodStatus`: sets `started` and `ready` of the regular and
/// init container statuses from the probe results.
pub fn update_pod_status_from_probes(pod: &Pod, status: &mut PodStatus, probes: &ProbeResults) {
    let spec = spec(pod);
    for s in status.container_statuses.iter_mut().flatten() {
        let c = spec.containers.iter().find(|c| c.name == s.name);
        let started = is_container_started(c, s, probes);
        s.started = Some(started);
        if started {
            s.ready = is_container_ready(c, s, probes);
        }
    }
    for s in status.init_container_statuses.iter_mut().flatten() {
        let c = init_containers(spec).iter().find(|c| c.name == s.name);
        let started = is_container_started(c, s, probes);
        s.started = Some(started);
        if !c.is_some_and(is_restartable_init_container) {
            if s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
            {
                s.ready = true;
            }
            continue;
        }
        if started {
            s.ready = is_container_ready(c, s, probes);
        }
    }
}

/// A resource list pair: requests, limits.
type RequestsAndLimits<'a> = (
    Option<&'a BTreeMap<String, Quantity>>,
    Option<&'a BTreeMap<String, Quantity>>,
);

/// qos/qos.go `ComputePodQOS`: Guaranteed, Burstable or BestEffort from the cpu and memory
/// requests and limits (a request left unset counts as its limit, as the apiserver's
/// defaulting makes it).
pub fn compute_pod_qos(pod: &Pod) -> &'static str {
    let spec = spec(pod);
    let mut requests: BTreeMap<&str, Amount> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Amount> = BTreeMap::new();
    let mut guaranteed = true;
    let supported = |name: &str| name == "cpu" || name == "memory";
    let add = |into: &mut BTreeMap<&'static str, Amount>, name: &str, q: Amount| {
        let key: &'static str = if name == "cpu" { "cpu" } else { "memory" };
        let e = into.entry(key).or_default();
        *e = e.plus(q);
    };
    let pod_level = spec.resources.as_ref().filter(|r| {
        r.requests.as_ref().is_some_and(|m| !m.is_empty())
            || r.limits.as_ref().is_some_and(|m| !m.is_empty())
    });
    let lists: Vec<RequestsAndLimits<'_>> = match pod_level {
        Some(r) => vec![(r.requests.as_ref(), r.limits.as_ref())],
        None => spec
            .containers
            .iter()
            .chain(init_containers(spec))
            .map(|c| {
                let r = c.resources.as_ref();
                (
                    r.and_then(|r| r.requests.as_ref()),
                    r.and_then(|r| r.limits.as_ref()),
                )
            })
            .collect(),
    };
    for (reqs, lims) in lists {
        let mut effective: BTreeMap<&str, Amount> = BTreeMap::new();
        for (name, q) in lims.into_iter().flatten() {
            if supported(name) && amount(q).sign() == 1 {
                effective.insert(name.as_str(), amount(q));
            }
        }
        let limits_found: Vec<&str> = effective.keys().copied().collect();
        for (name, q) in &effective {
            add(&mut limits, name, *q);
        }
        let mut req_effective: BTreeMap<&str, Amount> = effective.clone();
        for (name, q) in reqs.into_iter().flatten() {
            if supported(name) {
                req_effective.insert(name.as_str(), amount(q));
            }
        }
        for (name, q) in req_effective {
            if q.sign() == 1 {
                add(&mut requests, name, q);
            }
        }
        if !(limits_found.contains(&"cpu") && limits_found.contains(&"memory")) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed
        && requests.iter().all(|(k, v)| limits.get(k) == Some(v))
        && requests.len() == limits.len()
    {
        return "Guaranteed";
    }
    "Burstable"
}

/// Upstream `sortPodIPs`: at most one address of the node's primary family (the family of
/// `host_ips[0]`, IPv4 when unknown) first, then one of the other family.
pub fn sort_pod_ips(pod_ips: &[String], host_ips: &[String]) -> Vec<String> {
    let primary_v6 = host_ips
        .first()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_ipv6());
    let parsed: Vec<IpAddr> = pod_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    let mut out = Vec::new();
    if let Some(ip) = parsed.iter().find(|ip| ip.is_ipv6() == primary_v6) {
        out.push(ip.to_string());
    }
    if let Some(ip) = parsed.iter().find(|ip| ip.is_ipv6() != primary_v6) {
        out.push(ip.to_string());
    }
    out
}

/// An ephemeral container as a [`Container`] (the same fields, upstream's
/// `EphemeralContainerCommon`).
pub fn ephemeral_as_container(ec: &k8s_openapi::api::core::v1::EphemeralContainer) -> Container {
    serde_json::to_value(ec)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_else(|| Container {
            name: ec.name.clone(),
            image: ec.image.clone(),
            ..Default::default()
        })
}

fn is_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some(PHASE_SUCCEEDED) | Some(PHASE_FAILED))
}

/// `generateAPIPodStatus` followed by the status manager's `updateStatusInternal` and
/// `mergePodStatus`: the status to write for `pod` (whose current `status` is the one
/// last written). Conditions the kubelet does not own are kept; PodScheduled is True; a
/// terminal phase never changes; `startTime` is set once.
pub fn generate_api_pod_status(pod: &Pod, inputs: &PodStatusInputs<'_>) -> PodStatus {
    let spec = spec(pod);
    let old = pod.status.clone().unwrap_or_default();
    let runtime = inputs.runtime;
    let has_init = !init_containers(spec).is_empty();

    // convertStatusToAPIStatus.
    let mut s = PodStatus::default();
    let mut pod_ips = sort_pod_ips(&runtime.ips(), inputs.host_ips);
    s.qos_class = Some(
        old.qos_class
            .clone()
            .filter(|q| !q.is_empty())
            .unwrap_or_else(|| compute_pod_qos(pod).to_string()),
    );
    let previous = |v: &Option<Vec<ContainerStatus>>| v.clone().unwrap_or_default();
    s.container_statuses = Some(convert_to_api_container_statuses(
        pod,
        runtime,
        &previous(&old.container_statuses),
        &spec.containers,
        has_init,
        false,
        inputs.waiting_reasons,
    ));
    s.init_container_statuses = Some(convert_to_api_container_statuses(
        pod,
        runtime,
        &previous(&old.init_container_statuses),
        init_containers(spec),
        has_init,
        true,
        inputs.waiting_reasons,
    ));
    let ephemeral: Vec<Container> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(ephemeral_as_container)
        .collect();
    s.ephemeral_container_statuses = Some(convert_to_api_container_statuses(
        pod,
        runtime,
        &previous(&old.ephemeral_container_statuses),
        &ephemeral,
        has_init,
        false,
        inputs.waiting_reasons,
    ));

    // The phase; a terminal one is kept.
    let all: Vec<ContainerStatus> = s
        .container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .cloned()
        .collect();
    let mut phase = get_phase(
        pod,
        &all,
        inputs.pod_is_terminal,
        has_any_active_regular_container_started(spec, runtime),
    )
    .to_string();
    if is_terminal(old.phase.as_deref()) && old.phase.as_deref() != Some(phase.as_str()) {
        phase = old.phase.clone().unwrap_or_default();
    }
    if old.phase.as_deref() == Some(phase.as_str()) {
        s.reason = old.reason.clone();
        s.message = old.message.clone();
    }
    s.phase = Some(phase.clone());

    update_pod_status_from_probes(pod, &mut s, inputs.probe_results);

    // Conditions: those the kubelet does not own, then its own.
    let mut conditions: Vec<PodCondition> = old
        .conditions
        .iter()
        .flatten()
        .filter(|c| !pod_condition_by_kubelet(&c.type_))
        .cloned()
        .collect();
    let all: Vec<ContainerStatus> = s
        .init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .cloned()
        .collect();
    conditions.push(generate_pod_ready_to_start_containers_condition(
        pod, runtime,
    ));
    conditions.push(generate_pod_initialized_condition(
        pod,
        &old,
        Some(&all),
        &phase,
    ));
    let ready = generate_pod_ready_condition(pod, &conditions, Some(&all), &phase);
    conditions.push(ready);
    conditions.push(generate_containers_ready_condition(pod, Some(&all), &phase));
    conditions.push(condition(pod, POD_SCHEDULED, CONDITION_TRUE, "", ""));

    // Host IPs, and a host-network pod's IPs.
    if let Some(primary) = inputs.host_ips.first() {
        s.host_ip = Some(primary.clone());
        s.host_ips = Some(
            inputs
                .host_ips
                .iter()
                .take(2)
                .map(|ip| HostIP { ip: ip.clone() })
                .collect(),
        );
        if spec.host_network.unwrap_or(false) {
            if pod_ips.is_empty() {
                pod_ips.push(primary.clone());
            }
            if let Some(secondary) = inputs.host_ips.get(1) {
                let family = |ip: &str| ip.parse::<IpAddr>().map(|i| i.is_ipv6()).ok();
                if pod_ips.len() == 1 && family(&pod_ips[0]) != family(secondary) {
                    pod_ips.push(secondary.clone());
                }
            }
        }
    }
    if !pod_ips.is_empty() {
        s.pod_ip = pod_ips.first().cloned();
        s.pod_ips = Some(pod_ips.into_iter().map(|ip| PodIP { ip }).collect());
    }

    // mergePodStatus: a pod whose containers may still run does not turn terminal yet,
    // and a terminal pod is not ready.
    let could_have_running_containers = runtime
        .containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Running | ContainerState::Unknown));
    if !is_terminal(old.phase.as_deref())
        && is_terminal(s.phase.as_deref())
        && could_have_running_containers
    {
        s.phase = old.phase.clone();
        s.reason = old.reason.clone();
        s.message = old.message.clone();
    }
    if let Some(phase) = s.phase.clone().filter(|p| is_terminal(Some(p))) {
        for c in &mut conditions {
            if (c.type_ == POD_READY || c.type_ == CONTAINERS_READY) && c.status == CONDITION_TRUE {
                *c = terminal_phase_condition(pod, &c.type_.clone(), &phase);
            }
        }
    }

    // updateStatusInternal: transition times, start time, observed generation.
    for c in &mut conditions {
        if !pod_condition_by_kubelet(&c.type_) && !pod_condition_shared_by_kubelet(&c.type_) {
            continue;
        }
        let previous = old.conditions.iter().flatten().find(|o| o.type_ == c.type_);
        c.last_transition_time = match previous {
            Some(o) if o.status == c.status && o.last_transition_time.is_some() => {
                o.last_transition_time.clone()
            }
            _ => Some(Time(inputs.now)),
        };
    }
    s.conditions = Some(conditions);
    s.start_time = old.start_time.clone().or(Some(Time(inputs.now)));
    s.observed_generation = pod.metadata.generation.max(old.observed_generation);
    s.nominated_node_name = old.nominated_node_name.clone();
    s.resource_claim_statuses = old.resource_claim_statuses.clone();
    s.extended_resource_claim_status = old.extended_resource_claim_status.clone();
    s.node_allocatable_resource_claim_statuses =
        old.node_allocatable_resource_claim_statuses.clone();
    normalize_status(pod, &mut s);
    s
}

fn truncate_to_second(t: &mut Time) {
    if let Ok(ts) = Timestamp::from_second(t.0.as_second()) {
        t.0 = ts;
    }
}

fn normalize_state(state: &mut Option<ApiContainerState>, bytes_per_status: usize) {
    let Some(state) = state else {
        return;
    };
    if let Some(r) = &mut state.running {
        r.started_at.iter_mut().for_each(truncate_to_second);
    }
    if let Some(t) = &mut state.terminated {
        t.started_at.iter_mut().for_each(truncate_to_second);
        t.finished_at.iter_mut().for_each(truncate_to_second);
        if let Some(m) = t.message.as_mut().filter(|m| m.len() > bytes_per_status) {
            let mut cut = bytes_per_status;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
        }
    }
}

/// Upstream `normalizeStatus`: timestamps to whole seconds (what the API keeps),
/// termination messages cut to the pod's share of 12 KiB, statuses sorted.
pub fn normalize_status(pod: &Pod, status: &mut PodStatus) {
    let spec = spec(pod);
    let containers = spec.containers.len()
        + init_containers(spec).len()
        + spec.ephemeral_containers.as_ref().map_or(0, Vec::len);
    let bytes_per_status = MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH / containers.max(1);
    status.start_time.iter_mut().for_each(truncate_to_second);
    for c in status.conditions.iter_mut().flatten() {
        c.last_probe_time.iter_mut().for_each(truncate_to_second);
        c.last_transition_time
            .iter_mut()
            .for_each(truncate_to_second);
    }
    for list in [
        &mut status.container_statuses,
        &mut status.init_container_statuses,
        &mut status.ephemeral_container_statuses,
    ] {
        for cs in list.iter_mut().flatten() {
            normalize_state(&mut cs.state, bytes_per_status);
            normalize_state(&mut cs.last_state, bytes_per_status);
        }
    }
    status
        .container_statuses
        .iter_mut()
        .for_each(|v| v.sort_by(|a, b| a.name.cmp(&b.name)));
    status
        .ephemeral_container_statuses
        .iter_mut()
        .for_each(|v| v.sort_by(|a, b| a.name.cmp(&b.name)));
    if let Some(v) = &mut status.init_container_statuses {
        v.sort_by_key(|s| {
            init_containers(spec)
                .iter()
                .position(|c| c.name == s.name)
                .unwrap_or(usize::MAX)
        });
    }
}

/// Removes what Go's semantic equality and `omitempty` do not tell apart: nulls, empty
/// strings, lists and objects.
fn prune_empty(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Array(a) => {
            a.iter_mut().for_each(|x| {
                prune_empty(x);
            });
            a.is_empty()
        }
        serde_json::Value::Object(o) => {
            o.retain(|_, x| !prune_empty(x));
            o.is_empty()
        }
        _ => false,
    }
}

fn comparable(status: &PodStatus) -> serde_json::Value {
    let mut s = status.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_probe_time.iter_mut().for_each(truncate_to_second);
        c.last_transition_time
            .iter_mut()
            .for_each(truncate_to_second);
    }
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    prune_empty(&mut v);
    v
}

/// Upstream `isPodStatusByKubeletEqual`, negated: whether `new` differs from `old` in
/// anything the kubelet manages. The kubelet's conditions compare by type, status,
/// reason and message (not their times); conditions it does not own and resource claim
/// statuses are ignored; nulls and empty values compare equal to absent ones.
pub fn status_changed(old: &PodStatus, new: &PodStatus) -> bool {
    let owned = |s: &PodStatus| -> BTreeMap<String, (String, Option<String>, Option<String>)> {
        s.conditions
            .iter()
            .flatten()
            .filter(|c| {
                pod_condition_by_kubelet(&c.type_) || pod_condition_shared_by_kubelet(&c.type_)
            })
            .map(|c| {
                let text = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
                (
                    c.type_.clone(),
                    (c.status.clone(), text(&c.reason), text(&c.message)),
                )
            })
            .collect()
    };
    if owned(old) != owned(new) {
        return true;
    }
    let mut old_copy = old.clone();
    old_copy.conditions = new.conditions.clone();
    old_copy.resource_claim_statuses = new.resource_claim_statuses.clone();
    old_copy.extended_resource_claim_status = new.extended_resource_claim_status.clone();
    old_copy.node_allocatable_resource_claim_statuses =
        new.node_allocatable_resource_claim_statuses.clone();
    comparable(&old_copy) != comparable(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime_status::testing::{container as cstatus, sandbox, ts};
    use crate::kubelet::runtime_status::{SandboxState, hash_container};
    use k8s_openapi::api::core::v1::{PodReadinessGate, Probe, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// Spec, other conditions, statuses, phase, expected Ready condition.
    type ReadyCase = (
        PodSpec,
        Vec<PodCondition>,
        Option<Vec<ContainerStatus>>,
        &'static str,
        PodCondition,
    );
    /// Spec, statuses, phase, expected status and reason.
    type InitializedCase = (
        PodSpec,
        Option<Vec<ContainerStatus>>,
        &'static str,
        &'static str,
        &'static str,
    );

    fn named(name: &str) -> Container {
        Container {
            name: name.into(),
            ..Default::default()
        }
    }

    fn sidecar(name: &str) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..named(name)
        }
    }

    fn pod_with(spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("my-pod".into()),
                namespace: Some("ns".into()),
                uid: Some("uid".into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn st(name: &str, state: ApiContainerState) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            ..Default::default()
        }
    }

    fn running_state(name: &str) -> ContainerStatus {
        st(
            name,
            ApiContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            },
        )
    }

    fn started_state(name: &str) -> ContainerStatus {
        ContainerStatus {
            started: Some(true),
            ..running_state(name)
        }
    }

    fn terminated(name: &str, code: i32) -> ContainerStatus {
        st(
            name,
            ApiContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn stopped_state(name: &str) -> ContainerStatus {
        terminated(name, 0)
    }

    fn succeeded_state(name: &str) -> ContainerStatus {
        terminated(name, 0)
    }

    fn failed_state(name: &str) -> ContainerStatus {
        terminated(name, -1)
    }

    fn waiting_state(name: &str) -> ContainerStatus {
        st(
            name,
            ApiContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn waiting_with_last_termination(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            last_state: Some(ApiContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..waiting_state(name)
        }
    }

    fn ready(mut s: ContainerStatus) -> ContainerStatus {
        s.ready = true;
        s
    }

    fn spec_of(inits: Vec<Container>, containers: Vec<Container>, policy: &str) -> PodSpec {
        PodSpec {
            node_name: Some("machine".into()),
            init_containers: (!inits.is_empty()).then_some(inits),
            containers,
            restart_policy: Some(policy.into()),
            ..Default::default()
        }
    }

    fn phase_table(spec: PodSpec, cases: Vec<(Vec<ContainerStatus>, bool, bool, &str, &str)>) {
        let pod = pod_with(spec);
        for (info, terminal, initialized, want, desc) in cases {
            assert_eq!(
                get_phase(&pod, &info, terminal, initialized),
                want,
                "{desc}"
            );
        }
    }

    /// kubelet_pods_test.go TestPodPhaseWithRestartAlways.
    #[test]
    fn phase_restart_always() {
        let spec = spec_of(
            vec![],
            vec![named("containerA"), named("containerB")],
            "Always",
        );
        phase_table(
            spec,
            vec![
                (vec![], false, false, PHASE_PENDING, "waiting"),
                (
                    vec![running_state("containerA"), running_state("containerB")],
                    false,
                    false,
                    PHASE_RUNNING,
                    "all running",
                ),
                (
                    vec![stopped_state("containerA"), stopped_state("containerB")],
                    false,
                    false,
                    PHASE_RUNNING,
                    "all stopped with restart always",
                ),
                (
                    vec![succeeded_state("containerA"), succeeded_state("containerB")],
                    true,
                    false,
                    PHASE_SUCCEEDED,
                    "all succeeded with restart always, but the pod is terminal",
                ),
                (
                    vec![succeeded_state("containerA"), failed_state("containerB")],
                    true,
                    false,
                    PHASE_FAILED,
                    "all stopped with restart always, but the pod is terminal",
                ),
                (
                    vec![running_state("containerA"), stopped_state("containerB")],
                    false,
                    false,
                    PHASE_RUNNING,
                    "mixed state #1 with restart always",
                ),
                (
                    vec![running_state("containerA")],
                    false,
                    false,
                    PHASE_PENDING,
                    "mixed state #2 with restart always",
                ),
                (
                    vec![running_state("containerA"), waiting_state("containerB")],
                    false,
                    false,
                    PHASE_PENDING,
                    "mixed state #3 with restart always",
                ),
                (
                    vec![
                        running_state("containerA"),
                        waiting_with_last_termination("containerB", 0),
                    ],
                    false,
                    false,
                    PHASE_RUNNING,
                    "backoff crashloop container with restart always",
                ),
            ],
        );
    }

    /// TestPodPhaseWithRestartAlwaysInitContainers.
    #[test]
    fn phase_restart_always_init_containers() {
        let spec = spec_of(
            vec![named("containerX")],
            vec![named("containerA"), named("containerB")],
            "Always",
        );
        phase_table(
            spec,
            vec![
                (vec![], false, false, PHASE_PENDING, "empty, waiting"),
                (
                    vec![running_state("containerX")],
                    false,
                    false,
                    PHASE_PENDING,
                    "init container running",
                ),
                (
                    vec![failed_state("containerX")],
                    false,
                    false,
                    PHASE_PENDING,
                    "init container terminated non-zero",
                ),
                (
                    vec![waiting_with_last_termination("containerX", 0)],
                    false,
                    false,
                    PHASE_PENDING,
                    "init container waiting, terminated zero",
                ),
                (
                    vec![waiting_with_last_termination("containerX", -1)],
                    false,
                    false,
                    PHASE_PENDING,
                    "init container waiting, terminated non-zero",
                ),
                (
                    vec![waiting_state("containerX")],
                    false,
                    false,
                    PHASE_PENDING,
                    "init container waiting, not terminated",
                ),
                (
                    vec![
                        succeeded_state("containerX"),
                        running_state("containerA"),
                        running_state("containerB"),
                    ],
                    false,
                    false,
                    PHASE_RUNNING,
                    "init container succeeded",
                ),
            ],
        );
    }

    /// TestPodPhaseWithRestartAlwaysRestartableInitContainers.
    #[test]
    fn phase_restart_always_sidecars() {
        let spec = spec_of(
            vec![sidecar("containerX")],
            vec![named("containerA"), named("containerB")],
            "Always",
        );
        let a_b_running = || vec![running_state("containerA"), running_state("containerB")];
        let with = |x: ContainerStatus, mut rest: Vec<ContainerStatus>| {
            rest.insert(0, x);
            rest
        };
        phase_table(
            spec,
            vec![
                (vec![], false, false, PHASE_PENDING, "empty, waiting"),
                (
                    vec![running_state("containerX")],
                    false,
                    false,
                    PHASE_PENDING,
                    "restartable init container running",
                ),
                (
                    vec![stopped_state("containerX")],
                    false,
                    false,
                    PHASE_PENDING,
                    "restartable init container stopped",
                ),
                (
                    vec![waiting_with_last_termination("containerX", 0)],
                    false,
                    false,
                    PHASE_PENDING,
                    "restartable init container waiting, terminated zero",
                ),
                (
                    vec![waiting_with_last_termination("containerX", -1)],
                    false,
                    false,
                    PHASE_PENDING,
                    "restartable init container waiting, terminated non-zero",
                ),
                (
                    vec![waiting_state("containerX")],
                    false,
                    false,
                    PHASE_PENDING,
                    "restartable init container waiting, not terminated",
                ),
                (
                    vec![started_state("containerX"), running_state("containerA")],
                    false,
                    true,
                    PHASE_PENDING,
                    "restartable init container started, 1/2 regular container running",
                ),
                (
                    with(started_state("containerX"), a_b_running()),
                    false,
                    true,
                    PHASE_RUNNING,
                    "restartable init container started, all regular containers running",
                ),
                (
                    with(running_state("containerX"), a_b_running()),
                    false,
                    true,
                    PHASE_RUNNING,
                    "restartable init container running, all regular containers running",
                ),
                (
                    with(stopped_state("containerX"), a_b_running()),
                    false,
                    true,
                    PHASE_RUNNING,
                    "restartable init container stopped, all regular containers running",
                ),
                (
                    with(
                        waiting_with_last_termination("containerX", 0),
                        a_b_running(),
                    ),
                    false,
                    true,
                    PHASE_RUNNING,
                    "backoff crashloop restartable init container, all regular containers running",
                ),
                (
                    vec![
                        failed_state("containerX"),
                        succeeded_state("containerA"),
                        succeeded_state("containerB"),
                    ],
                    true,
                    true,
                    PHASE_SUCCEEDED,
                    "all regular containers succeeded and restartable init container failed with restart always, but the pod is terminal",
                ),
                (
                    vec![
                        succeeded_state("containerX"),
                        succeeded_state("containerA"),
                        succeeded_state("containerB"),
                    ],
                    true,
                    true,
                    PHASE_SUCCEEDED,
                    "all regular containers succeeded and restartable init container succeeded with restart always, but the pod is terminal",
                ),
                (
                    with(running_state("containerX"), a_b_running()),
                    false,
                    false,
                    PHASE_PENDING,
                    "re-initializing the pod after the sandbox is recreated",
                ),
            ],
        );
    }

    /// TestPodPhaseWithRestartNever.
    #[test]
    fn phase_restart_never() {
        let spec = spec_of(
            vec![],
            vec![named("containerA"), named("containerB")],
            "Never",
        );
        phase_table(
            spec,
            vec![
                (
                    vec![running_state("containerA"), running_state("containerB")],
                    false,
                    false,
                    PHASE_RUNNING,
                    "all running with restart never",
                ),
                (
                    vec![succeeded_state("containerA"), succeeded_state("containerB")],
                    false,
                    false,
                    PHASE_SUCCEEDED,
                    "all succeeded with restart never",
                ),
                (
                    vec![failed_state("containerA"), failed_state("containerB")],
                    false,
                    false,
                    PHASE_FAILED,
                    "all failed with restart never",
                ),
                (
                    vec![running_state("containerA"), succeeded_state("containerB")],
                    false,
                    false,
                    PHASE_RUNNING,
                    "mixed state #1 with restart never",
                ),
                (
                    vec![running_state("containerA")],
                    false,
                    false,
                    PHASE_PENDING,
                    "mixed state #2 with restart never",
                ),
                (
                    vec![running_state("containerA"), waiting_state("containerB")],
                    false,
                    false,
                    PHASE_PENDING,
                    "mixed state #3 with restart never",
                ),
            ],
        );
    }

    /// TestPodPhaseWithRestartNeverInitContainers.
    #[test]
    fn phase_restart_never_init_containers() {
        let spec = spec_of(
            vec![named("containerX")],
            vec![named("containerA"), named("containerB")],
            "Never",
        );
        phase_table(
            spec,
            vec![
                (
                    vec![running_state("containerX")],
                    false,
                    false,
                    PHASE_PENDING,
                    "init container running",
                ),
                (
                    vec![failed_state("containerX")],
                    false,
                    false,
                    PHASE_FAILED,
                    "init container terminated non-zero",
                ),
                (
                    vec![waiting_with_last_termination("containerX", 0)],
                    false,
                    false,
                    PHASE_PENDING,
                    "init container waiting, terminated zero",
                ),
                (
                    vec![waiting_with_last_termination("containerX", -1)],
                    false,
                    false,
                    PHASE_FAILED,
                    "init container waiting, terminated non-zero",
                ),
                (
                    vec![waiting_state("containerX")],
                    false,
                    false,
                    PHASE_PENDING,
                    "init container waiting, not terminated",
                ),
                (
                    vec![
                        succeeded_state("containerX"),
                        running_state("containerA"),
                        running_state("containerB"),
                    ],
                    false,
                    false,
                    PHASE_RUNNING,
                    "init container succeeded",
                ),
            ],
        );
    }

    /// TestPodPhaseWithRestartOnFailure.
    #[test]
    fn phase_restart_on_failure() {
        let spec = spec_of(
            vec![],
            vec![named("containerA"), named("containerB")],
            "OnFailure",
        );
        phase_table(
            spec,
            vec![
                (
                    vec![running_state("containerA"), running_state("containerB")],
                    false,
                    false,
                    PHASE_RUNNING,
                    "all running with restart onfailure",
                ),
                (
                    vec![succeeded_state("containerA"), succeeded_state("containerB")],
                    false,
                    false,
                    PHASE_SUCCEEDED,
                    "all succeeded with restart onfailure",
                ),
                (
                    vec![failed_state("containerA"), failed_state("containerB")],
                    false,
                    false,
                    PHASE_RUNNING,
                    "all failed with restart never",
                ),
                (
                    vec![running_state("containerA"), succeeded_state("containerB")],
                    false,
                    false,
                    PHASE_RUNNING,
                    "mixed state #1 with restart onfailure",
                ),
                (
                    vec![running_state("containerA")],
                    false,
                    false,
                    PHASE_PENDING,
                    "mixed state #2 with restart onfailure",
                ),
                (
                    vec![running_state("containerA"), waiting_state("containerB")],
                    false,
                    false,
                    PHASE_PENDING,
                    "mixed state #3 with restart onfailure",
                ),
                (
                    vec![
                        running_state("containerA"),
                        waiting_with_last_termination("containerB", 0),
                    ],
                    false,
                    false,
                    PHASE_RUNNING,
                    "backoff crashloop container with restart onfailure",
                ),
            ],
        );
    }

    /// TestPodPhaseWithContainerRestartPolicy and …InitContainers.
    #[test]
    fn phase_container_restart_policy() {
        let with_policy = |name: &str, policy: &str| Container {
            restart_policy: Some(policy.into()),
            ..named(name)
        };
        for (containers, pod_policy, statuses, want, desc) in [
            (
                vec![with_policy("f", "Never")],
                "Always",
                vec![failed_state("f")],
                PHASE_FAILED,
                "Never failed",
            ),
            (
                vec![with_policy("f", "OnFailure")],
                "Always",
                vec![failed_state("f")],
                PHASE_RUNNING,
                "OnFailure failed",
            ),
            (
                vec![with_policy("f", "Always")],
                "Always",
                vec![failed_state("f")],
                PHASE_RUNNING,
                "Always failed",
            ),
            (
                vec![with_policy("containerA", "Always"), named("containerB")],
                "Never",
                vec![succeeded_state("containerA"), failed_state("containerB")],
                PHASE_RUNNING,
                "one restartable container",
            ),
            (
                vec![
                    with_policy("containerA", "Never"),
                    with_policy("containerB", "OnFailure"),
                ],
                "Always",
                vec![failed_state("containerA"), succeeded_state("containerB")],
                PHASE_FAILED,
                "none restartable, one failed",
            ),
            (
                vec![
                    with_policy("containerA", "Never"),
                    with_policy("containerB", "OnFailure"),
                ],
                "Always",
                vec![succeeded_state("containerA"), succeeded_state("containerB")],
                PHASE_SUCCEEDED,
                "all succeeded",
            ),
        ] {
            let pod = pod_with(spec_of(vec![], containers, pod_policy));
            assert_eq!(get_phase(&pod, &statuses, false, true), want, "{desc}");
        }
        for (init, pod_policy, want, desc) in [
            (
                with_policy("f", "Never"),
                "Always",
                PHASE_FAILED,
                "init Never failed",
            ),
            (
                with_policy("f", "OnFailure"),
                "Never",
                PHASE_PENDING,
                "init OnFailure failed",
            ),
            (
                with_policy("f", "Always"),
                "Never",
                PHASE_PENDING,
                "sidecar failed",
            ),
        ] {
            let pod = pod_with(spec_of(vec![init], vec![named("container")], pod_policy));
            assert_eq!(
                get_phase(&pod, &[failed_state("f")], false, true),
                want,
                "{desc}"
            );
        }
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> PodCondition {
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason: non_empty(reason),
            message: non_empty(message),
            ..Default::default()
        }
    }

    /// status/generate_test.go TestGenerateContainersReadyCondition.
    #[test]
    fn containers_ready_condition() {
        let two = vec![named("1234"), named("5678")];
        let sidecars = vec![sidecar("restartable-init-1"), sidecar("restartable-init-2")];
        let cases: Vec<(PodSpec, Option<Vec<ContainerStatus>>, &str, PodCondition)> = vec![
            (
                PodSpec::default(),
                None,
                PHASE_RUNNING,
                cond(CONTAINERS_READY, "False", UNKNOWN_CONTAINER_STATUSES, ""),
            ),
            (
                PodSpec::default(),
                Some(vec![]),
                PHASE_RUNNING,
                cond(CONTAINERS_READY, "True", "", ""),
            ),
            (
                spec_of(vec![], vec![named("1234")], "Always"),
                Some(vec![]),
                PHASE_RUNNING,
                cond(
                    CONTAINERS_READY,
                    "False",
                    CONTAINERS_NOT_READY,
                    "containers with unknown status: [1234]",
                ),
            ),
            (
                spec_of(vec![], two.clone(), "Always"),
                Some(vec![
                    ready(running_state("1234")),
                    ready(running_state("5678")),
                ]),
                PHASE_RUNNING,
                cond(CONTAINERS_READY, "True", "", ""),
            ),
            (
                spec_of(vec![], two.clone(), "Always"),
                Some(vec![ready(running_state("1234"))]),
                PHASE_RUNNING,
                cond(
                    CONTAINERS_READY,
                    "False",
                    CONTAINERS_NOT_READY,
                    "containers with unknown status: [5678]",
                ),
            ),
            (
                spec_of(vec![], two.clone(), "Always"),
                Some(vec![ready(running_state("1234")), running_state("5678")]),
                PHASE_RUNNING,
                cond(
                    CONTAINERS_READY,
                    "False",
                    CONTAINERS_NOT_READY,
                    "containers with unready status: [5678]",
                ),
            ),
            (
                spec_of(vec![], vec![named("1234")], "Always"),
                Some(vec![running_state("1234")]),
                PHASE_SUCCEEDED,
                cond(CONTAINERS_READY, "False", POD_COMPLETED, ""),
            ),
            (
                spec_of(
                    vec![sidecar("restartable-init-1")],
                    vec![named("regular-1")],
                    "Always",
                ),
                Some(vec![ready(running_state("regular-1"))]),
                PHASE_RUNNING,
                cond(
                    CONTAINERS_READY,
                    "False",
                    CONTAINERS_NOT_READY,
                    "containers with unknown status: [restartable-init-1]",
                ),
            ),
            (
                spec_of(sidecars.clone(), vec![named("regular-1")], "Always"),
                Some(vec![
                    ready(running_state("restartable-init-1")),
                    ready(running_state("restartable-init-2")),
                    ready(running_state("regular-1")),
                ]),
                PHASE_RUNNING,
                cond(CONTAINERS_READY, "True", "", ""),
            ),
            (
                spec_of(sidecars.clone(), vec![named("regular-1")], "Always"),
                Some(vec![
                    ready(running_state("restartable-init-1")),
                    running_state("restartable-init-2"),
                    ready(running_state("regular-1")),
                ]),
                PHASE_RUNNING,
                cond(
                    CONTAINERS_READY,
                    "False",
                    CONTAINERS_NOT_READY,
                    "containers with unready status: [restartable-init-2]",
                ),
            ),
            (
                spec_of(vec![], two, "Always"),
                Some(vec![running_state("1234")]),
                PHASE_RUNNING,
                cond(
                    CONTAINERS_READY,
                    "False",
                    CONTAINERS_NOT_READY,
                    "containers with unknown status: [5678], containers with unready status: [1234]",
                ),
            ),
        ];
        for (i, (spec, statuses, phase, want)) in cases.into_iter().enumerate() {
            let pod = pod_with(spec);
            assert_eq!(
                generate_containers_ready_condition(&pod, statuses.as_deref(), phase),
                want,
                "case {i}"
            );
        }
    }

    /// TestGeneratePodReadyCondition (the readiness-gate cases).
    #[test]
    fn pod_ready_condition() {
        let gates = |names: &[&str]| PodSpec {
            readiness_gates: Some(
                names
                    .iter()
                    .map(|n| PodReadinessGate {
                        condition_type: n.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let cases: Vec<ReadyCase> = vec![
            (
                PodSpec::default(),
                vec![],
                None,
                PHASE_RUNNING,
                cond(POD_READY, "False", UNKNOWN_CONTAINER_STATUSES, ""),
            ),
            (
                PodSpec::default(),
                vec![],
                Some(vec![]),
                PHASE_RUNNING,
                cond(POD_READY, "True", "", ""),
            ),
            (
                spec_of(vec![], vec![named("1234")], "Always"),
                vec![],
                Some(vec![running_state("1234")]),
                PHASE_SUCCEEDED,
                cond(POD_READY, "False", POD_COMPLETED, ""),
            ),
            (
                gates(&["gate1"]),
                vec![],
                Some(vec![]),
                PHASE_RUNNING,
                cond(
                    POD_READY,
                    "False",
                    READINESS_GATES_NOT_READY,
                    r#"corresponding condition of pod readiness gate "gate1" does not exist."#,
                ),
            ),
            (
                gates(&["gate1"]),
                vec![cond("gate1", "False", "", "")],
                Some(vec![]),
                PHASE_RUNNING,
                cond(
                    POD_READY,
                    "False",
                    READINESS_GATES_NOT_READY,
                    r#"the status of pod readiness gate "gate1" is not "True", but False"#,
                ),
            ),
            (
                gates(&["gate1"]),
                vec![cond("gate1", "True", "", "")],
                Some(vec![]),
                PHASE_RUNNING,
                cond(POD_READY, "True", "", ""),
            ),
            (
                gates(&["gate1", "gate2"]),
                vec![cond("gate1", "True", "", "")],
                Some(vec![]),
                PHASE_RUNNING,
                cond(
                    POD_READY,
                    "False",
                    READINESS_GATES_NOT_READY,
                    r#"corresponding condition of pod readiness gate "gate2" does not exist."#,
                ),
            ),
            (
                gates(&["gate1", "gate2"]),
                vec![
                    cond("gate1", "True", "", ""),
                    cond("gate2", "False", "", ""),
                ],
                Some(vec![]),
                PHASE_RUNNING,
                cond(
                    POD_READY,
                    "False",
                    READINESS_GATES_NOT_READY,
                    r#"the status of pod readiness gate "gate2" is not "True", but False"#,
                ),
            ),
            (
                PodSpec {
                    containers: vec![named("1234")],
                    ..gates(&["gate1"])
                },
                vec![cond("gate1", "True", "", "")],
                Some(vec![running_state("1234")]),
                PHASE_RUNNING,
                cond(
                    POD_READY,
                    "False",
                    CONTAINERS_NOT_READY,
                    "containers with unready status: [1234]",
                ),
            ),
        ];
        for (i, (spec, conditions, statuses, phase, want)) in cases.into_iter().enumerate() {
            let pod = pod_with(spec);
            assert_eq!(
                generate_pod_ready_condition(&pod, &conditions, statuses.as_deref(), phase),
                want,
                "case {i}"
            );
        }
    }

    /// TestGeneratePodInitializedCondition.
    #[test]
    fn pod_initialized_condition() {
        let one = spec_of(vec![named("1234")], vec![named("regular")], "Always");
        let two = spec_of(
            vec![named("1234"), named("5678")],
            vec![named("regular")],
            "Always",
        );
        let one_sidecar = spec_of(vec![sidecar("1234")], vec![named("regular")], "Always");
        let not_started = |n: &str| ContainerStatus {
            started: Some(false),
            ..running_state(n)
        };
        let cases: Vec<InitializedCase> = vec![
            (
                two.clone(),
                None,
                PHASE_RUNNING,
                "False",
                UNKNOWN_CONTAINER_STATUSES,
            ),
            (PodSpec::default(), Some(vec![]), PHASE_RUNNING, "True", ""),
            (
                one.clone(),
                Some(vec![]),
                PHASE_RUNNING,
                "False",
                CONTAINERS_NOT_INITIALIZED,
            ),
            (
                two.clone(),
                Some(vec![
                    ready(succeeded_state("1234")),
                    ready(succeeded_state("5678")),
                ]),
                PHASE_RUNNING,
                "True",
                "",
            ),
            (
                two.clone(),
                Some(vec![ready(succeeded_state("1234"))]),
                PHASE_RUNNING,
                "False",
                CONTAINERS_NOT_INITIALIZED,
            ),
            (
                two,
                Some(vec![ready(succeeded_state("1234")), failed_state("5678")]),
                PHASE_RUNNING,
                "False",
                CONTAINERS_NOT_INITIALIZED,
            ),
            (
                one.clone(),
                Some(vec![ready(succeeded_state("1234"))]),
                PHASE_SUCCEEDED,
                "True",
                POD_COMPLETED,
            ),
            (
                one_sidecar.clone(),
                Some(vec![not_started("1234")]),
                PHASE_PENDING,
                "False",
                CONTAINERS_NOT_INITIALIZED,
            ),
            (
                one_sidecar.clone(),
                Some(vec![started_state("1234")]),
                PHASE_RUNNING,
                "True",
                "",
            ),
            (
                one_sidecar,
                Some(vec![not_started("1234"), running_state("regular")]),
                PHASE_RUNNING,
                "True",
                "",
            ),
            (
                one,
                Some(vec![waiting_state("1234"), stopped_state("regular")]),
                PHASE_RUNNING,
                "True",
                "",
            ),
        ];
        for (i, (spec, statuses, phase, want_status, want_reason)) in cases.into_iter().enumerate()
        {
            let pod = pod_with(spec);
            let c = generate_pod_initialized_condition(
                &pod,
                &PodStatus::default(),
                statuses.as_deref(),
                phase,
            );
            assert_eq!(c.type_, POD_INITIALIZED);
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref().unwrap_or_default()),
                (want_status, want_reason),
                "case {i}"
            );
        }
        // Once initialized, always initialized.
        let pod = pod_with(spec_of(
            vec![named("1234")],
            vec![named("regular")],
            "Always",
        ));
        let old = PodStatus {
            conditions: Some(vec![cond(POD_INITIALIZED, "True", "", "")]),
            ..Default::default()
        };
        let c = generate_pod_initialized_condition(
            &pod,
            &old,
            Some(&[waiting_state("1234")]),
            PHASE_PENDING,
        );
        assert_eq!(c.status, "True");
        let message = generate_pod_initialized_condition(
            &pod,
            &PodStatus::default(),
            Some(&[waiting_state("1234")]),
            PHASE_PENDING,
        )
        .message
        .unwrap();
        assert_eq!(message, "containers with incomplete status: [1234]");
    }

    /// TestGeneratePodReadyToStartContainersCondition.
    #[test]
    fn ready_to_start_containers_condition() {
        let pod = pod_with(PodSpec::default());
        let with = |s: Option<crate::kubelet::runtime_status::SandboxStatus>| PodRuntimeStatus {
            sandboxes: s.into_iter().collect(),
            ..Default::default()
        };
        let mut no_ip = sandbox("s", SandboxState::Ready);
        no_ip.ips = Some(vec![]);
        for (runtime, want) in [
            (with(None), "False"),
            (with(Some(sandbox("s", SandboxState::NotReady))), "False"),
            (with(Some(no_ip)), "False"),
            (with(Some(sandbox("s", SandboxState::Ready))), "True"),
        ] {
            let c = generate_pod_ready_to_start_containers_condition(&pod, &runtime);
            assert_eq!(
                (c.type_.as_str(), c.status.as_str()),
                (POD_READY_TO_START_CONTAINERS, want)
            );
        }
    }

    fn strip_ids(mut v: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
        for s in &mut v {
            s.container_id = None;
            s.resources = None;
            if let Some(t) = s.state.as_mut().and_then(|st| st.terminated.as_mut()) {
                t.container_id = None;
            }
        }
        v
    }

    fn waiting_with_last_termination_unknown(name: &str, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            last_state: Some(ApiContainerState {
                terminated: Some(ContainerStateTerminated {
                    reason: Some(CONTAINER_STATUS_UNKNOWN.into()),
                    message: Some(
                        "The container could not be located when the pod was deleted.  The container used to be Running"
                            .into(),
                    ),
                    exit_code: 137,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_count: restarts,
            ..waiting_state(name)
        }
    }

    /// kubelet_pods_test.go TestConvertToAPIContainerStatuses (without the
    /// RestartAllContainers cases).
    #[test]
    fn convert_container_statuses() {
        let spec = spec_of(
            vec![],
            vec![named("containerA"), named("containerB")],
            "Always",
        );
        let none = BTreeMap::new();

        // No current status, previously running, pod deleted: last state unknown.
        let mut pod = pod_with(spec.clone());
        pod.metadata.deletion_timestamp = Some(Time(ts(1)));
        let prev = vec![running_state("containerA"), running_state("containerB")];
        let got = convert_to_api_container_statuses(
            &pod,
            &PodRuntimeStatus::default(),
            &prev,
            &spec.containers,
            false,
            false,
            &none,
        );
        assert_eq!(
            strip_ids(got),
            vec![
                waiting_with_last_termination_unknown("containerA", 0),
                waiting_with_last_termination_unknown("containerB", 0)
            ]
        );

        // Not deleted: the restart count goes up.
        let pod = pod_with(spec.clone());
        let got = convert_to_api_container_statuses(
            &pod,
            &PodRuntimeStatus::default(),
            &prev,
            &spec.containers,
            false,
            false,
            &none,
        );
        assert_eq!(
            strip_ids(got),
            vec![
                waiting_with_last_termination_unknown("containerA", 1),
                waiting_with_last_termination_unknown("containerB", 1)
            ]
        );

        // No current status: a terminated previous status is kept, restart count included.
        let with_restarts = |mut s: ContainerStatus, n| {
            s.restart_count = n;
            s
        };
        let prev = vec![
            with_restarts(failed_state("containerA"), 5),
            with_restarts(failed_state("containerB"), 5),
        ];
        let got = convert_to_api_container_statuses(
            &pod,
            &PodRuntimeStatus::default(),
            &prev,
            &spec.containers,
            false,
            false,
            &none,
        );
        assert_eq!(strip_ids(got), prev);

        // Running again with a lower restart count: the count continues.
        let runtime = PodRuntimeStatus {
            containers: vec![
                cstatus("containerA", "containerA", ContainerState::Running, 0),
                cstatus("containerB", "containerB", ContainerState::Running, 0),
            ],
            ..Default::default()
        };
        let got = convert_to_api_container_statuses(
            &pod,
            &runtime,
            &prev,
            &spec.containers,
            false,
            false,
            &none,
        );
        let want = |n: &str| ContainerStatus {
            restart_count: 6,
            last_state: Some(ApiContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: -1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..running_state(n)
        };
        assert_eq!(strip_ids(got), vec![want("containerA"), want("containerB")]);
    }

    #[test]
    fn convert_init_container_statuses() {
        let none = BTreeMap::new();
        // The init container is gone but a regular container runs: it completed.
        let spec = spec_of(vec![named("init-1")], vec![named("containerA")], "Always");
        let pod = pod_with(spec.clone());
        let mut a = cstatus("foo", "containerA", ContainerState::Running, 0);
        a.started_at = Some(ts(1));
        let runtime = PodRuntimeStatus {
            containers: vec![a.clone()],
            ..Default::default()
        };
        let got = convert_to_api_container_statuses(
            &pod,
            &runtime,
            &[],
            init_containers(&spec),
            true,
            true,
            &none,
        );
        assert_eq!(
            got,
            vec![ContainerStatus {
                name: "init-1".into(),
                state: Some(ApiContainerState {
                    terminated: Some(ContainerStateTerminated {
                        reason: Some("Completed".into()),
                        message: Some("Unable to get init container status from container runtime and pod has been initialized, treat it as exited normally".into()),
                        exit_code: 0,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                last_state: Some(ApiContainerState::default()),
                ..Default::default()
            }]
        );
        // A sidecar stays waiting.
        let spec = spec_of(
            vec![sidecar("sidecar-1")],
            vec![named("containerA")],
            "Always",
        );
        let pod = pod_with(spec.clone());
        let got = convert_to_api_container_statuses(
            &pod,
            &runtime,
            &[],
            init_containers(&spec),
            true,
            true,
            &none,
        );
        assert_eq!(
            got[0].state,
            Some(ApiContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(POD_INITIALIZING.into()),
                    message: None
                }),
                ..Default::default()
            })
        );
    }

    #[test]
    fn waiting_reasons_and_last_state() {
        let spec = spec_of(vec![], vec![named("app")], "Always");
        let pod = pod_with(spec.clone());
        let mut first = cstatus("c1", "app", ContainerState::Exited, 0);
        first.created_at = ts(10);
        first.exit_code = 1;
        first.reason = Some("Error".into());
        first.started_at = Some(ts(10));
        first.finished_at = Some(ts(12));
        let mut second = first.clone();
        second.id = "c2".into();
        second.created_at = ts(20);
        second.reason = Some("OOMKilled".into());
        second.exit_code = 137;
        second.restart_count = 1;
        let runtime = PodRuntimeStatus {
            containers: vec![first, second],
            ..Default::default()
        };
        let reasons: BTreeMap<String, WaitingReason> = [(
            "app".to_string(),
            WaitingReason {
                reason: CRASH_LOOP_BACK_OFF.into(),
                message: "back-off 10s restarting failed container=app pod=my-pod_ns(uid)".into(),
            },
        )]
        .into();
        let got = convert_to_api_container_statuses(
            &pod,
            &runtime,
            &[],
            &spec.containers,
            false,
            false,
            &reasons,
        );
        let s = &got[0];
        assert_eq!(s.restart_count, 1);
        assert_eq!(s.container_id.as_deref(), Some("rekube://c2"));
        let w = s.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some(CRASH_LOOP_BACK_OFF));
        let last = s.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (last.exit_code, last.reason.as_deref()),
            (137, Some("OOMKilled"))
        );
        assert_eq!(last.container_id.as_deref(), Some("rekube://c2"));

        // Never restarts: the terminated state stays, no waiting reason.
        let never = pod_with(spec_of(vec![], vec![named("app")], "Never"));
        let got = convert_to_api_container_statuses(
            &never,
            &runtime,
            &[],
            &spec.containers,
            false,
            false,
            &reasons,
        );
        let t = got[0].state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(t.exit_code, 137);
        assert_eq!(t.finished_at, Some(Time(ts(12))));
        let last = got[0]
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(last.reason.as_deref(), Some("Error"));
    }

    fn probe() -> Option<Probe> {
        Some(Probe::default())
    }

    fn full_pod() -> (Pod, PodRuntimeStatus) {
        let app = Container {
            image: Some("busybox".into()),
            readiness_probe: probe(),
            ..named("app")
        };
        let init = Container {
            image: Some("busybox".into()),
            ..named("init")
        };
        let mut pod = pod_with(PodSpec {
            init_containers: Some(vec![init.clone()]),
            containers: vec![app.clone()],
            ..Default::default()
        });
        pod.metadata.generation = Some(3);
        pod.status = Some(PodStatus {
            phase: Some(PHASE_PENDING.into()),
            conditions: Some(vec![
                PodCondition {
                    last_transition_time: Some(Time(ts(5))),
                    ..cond(POD_SCHEDULED, "True", "", "")
                },
                cond("example.com/Custom", "True", "", ""),
            ]),
            ..Default::default()
        });
        let mut init_s = cstatus("i1", "init", ContainerState::Exited, hash_container(&init));
        init_s.started_at = Some(ts(100));
        init_s.finished_at = Some(ts(101));
        init_s.reason = Some("Completed".into());
        let mut app_s = cstatus("a1", "app", ContainerState::Running, hash_container(&app));
        app_s.created_at = ts(102);
        app_s.started_at =
            Some(Timestamp::from_second(102).unwrap() + std::time::Duration::from_millis(250));
        app_s.image = "busybox".into();
        app_s.image_ref = "docker.io/library/busybox@sha256:abc".into();
        let runtime = PodRuntimeStatus {
            uid: "uid".into(),
            name: "my-pod".into(),
            namespace: "ns".into(),
            sandboxes: vec![sandbox("sandboxID", SandboxState::Ready)],
            containers: vec![init_s, app_s],
        };
        (pod, runtime)
    }

    #[test]
    fn generate_api_pod_status_end_to_end() {
        let (pod, runtime) = full_pod();
        let mut probes = ProbeResults::default();
        let host_ips = vec!["192.168.1.10".to_string()];
        let reasons = BTreeMap::new();
        fn inputs<'a>(
            runtime: &'a PodRuntimeStatus,
            probes: &'a ProbeResults,
            reasons: &'a BTreeMap<String, WaitingReason>,
            host_ips: &'a [String],
            now: Timestamp,
        ) -> PodStatusInputs<'a> {
            PodStatusInputs {
                runtime,
                probe_results: probes,
                waiting_reasons: reasons,
                host_ips,
                pod_is_terminal: false,
                now,
            }
        }
        let s = generate_api_pod_status(
            &pod,
            &inputs(&runtime, &probes, &reasons, &host_ips, ts(200)),
        );
        assert_eq!(s.phase.as_deref(), Some(PHASE_RUNNING));
        assert_eq!(s.host_ip.as_deref(), Some("192.168.1.10"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(s.start_time, Some(Time(ts(200))));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(s.observed_generation, Some(3));
        let types: Vec<(&str, &str)> = s
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("example.com/Custom", "True"),
                (POD_READY_TO_START_CONTAINERS, "True"),
                (POD_INITIALIZED, "True"),
                (POD_READY, "False"),
                (CONTAINERS_READY, "False"),
                (POD_SCHEDULED, "True"),
            ]
        );
        let scheduled = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == POD_SCHEDULED)
            .unwrap();
        assert_eq!(scheduled.last_transition_time, Some(Time(ts(5))));
        assert_eq!(scheduled.observed_generation, Some(3));
        let ready = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == POD_READY)
            .unwrap();
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [app]")
        );
        assert_eq!(ready.last_transition_time, Some(Time(ts(200))));
        let app = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!((app.ready, app.started), (false, Some(true)));
        assert_eq!(app.container_id.as_deref(), Some("rekube://a1"));
        assert_eq!(app.image_id, "docker.io/library/busybox@sha256:abc");
        // Normalized to whole seconds.
        assert_eq!(
            app.state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at,
            Some(Time(ts(102)))
        );
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert!(init.ready);
        assert_eq!(
            init.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("Completed")
        );

        // Written once, the same inputs make no change; readiness does.
        let mut written = pod.clone();
        written.status = Some(s.clone());
        let again = generate_api_pod_status(
            &written,
            &inputs(&runtime, &probes, &reasons, &host_ips, ts(300)),
        );
        assert!(!status_changed(&s, &again));
        assert_eq!(again.start_time, Some(Time(ts(200))));
        probes.set(ProbeType::Readiness, "a1", ProbeResult::Success);
        let ready_now = generate_api_pod_status(
            &written,
            &inputs(&runtime, &probes, &reasons, &host_ips, ts(300)),
        );
        assert!(status_changed(&s, &ready_now));
        let ready = ready_now
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == POD_READY)
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("True", Some(Time(ts(300))))
        );

        // A JSON round trip (what the API returns) compares equal.
        let round_trip: PodStatus =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert!(!status_changed(&round_trip, &s));
    }

    #[test]
    fn terminal_phase_is_kept_and_never_ready() {
        let (mut pod, mut runtime) = full_pod();
        pod.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        runtime.containers[1].state = ContainerState::Exited;
        runtime.containers[1].exit_code = 0;
        runtime.containers[1].finished_at = Some(ts(150));
        let reasons = BTreeMap::new();
        let probes = ProbeResults::default();
        let host_ips: Vec<String> = vec![];
        let inputs = PodStatusInputs {
            runtime: &runtime,
            probe_results: &probes,
            waiting_reasons: &reasons,
            host_ips: &host_ips,
            pod_is_terminal: false,
            now: ts(200),
        };
        let s = generate_api_pod_status(&pod, &inputs);
        assert_eq!(s.phase.as_deref(), Some(PHASE_SUCCEEDED));
        let ready = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == POD_READY)
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some(POD_COMPLETED))
        );

        // Once Succeeded, a runtime that looks otherwise does not bring it back.
        let mut written = pod.clone();
        written.status = Some(s);
        let mut again = runtime.clone();
        again.containers.pop();
        let s2 = generate_api_pod_status(
            &written,
            &PodStatusInputs {
                runtime: &again,
                ..inputs
            },
        );
        assert_eq!(s2.phase.as_deref(), Some(PHASE_SUCCEEDED));

        // Still running containers hold back the terminal phase.
        let mut pod_running = pod.clone();
        pod_running.status.as_mut().unwrap().phase = Some(PHASE_RUNNING.into());
        let mut still = runtime.clone();
        still
            .containers
            .push(cstatus("x", "leftover", ContainerState::Running, 0));
        let s3 = generate_api_pod_status(
            &pod_running,
            &PodStatusInputs {
                runtime: &still,
                ..inputs
            },
        );
        assert_eq!(s3.phase.as_deref(), Some(PHASE_RUNNING));
    }

    #[test]
    fn status_changed_ignores_times_and_foreign_conditions() {
        let base = PodStatus {
            phase: Some(PHASE_RUNNING.into()),
            conditions: Some(vec![PodCondition {
                last_transition_time: Some(Time(ts(1))),
                last_probe_time: Some(Time(ts(1))),
                ..cond(POD_READY, "True", "", "")
            }]),
            ..Default::default()
        };
        let mut other = base.clone();
        other.conditions.as_mut().unwrap()[0].last_transition_time = Some(Time(ts(9)));
        other.conditions.as_mut().unwrap()[0].last_probe_time = None;
        other
            .conditions
            .as_mut()
            .unwrap()
            .push(cond("example.com/Gate", "True", "", ""));
        assert!(!status_changed(&base, &other));
        other.conditions.as_mut().unwrap()[0].status = "False".into();
        assert!(status_changed(&base, &other));
        let mut other = base.clone();
        other.pod_ip = Some("10.0.0.2".into());
        assert!(status_changed(&base, &other));
        let mut other = base.clone();
        other.message = Some(String::new());
        other.container_statuses = Some(vec![]);
        assert!(!status_changed(&base, &other));
    }

    #[test]
    fn qos_classes() {
        let res = |req: &[(&str, &str)], lim: &[(&str, &str)]| {
            let m = |v: &[(&str, &str)]| {
                (!v.is_empty()).then(|| {
                    v.iter()
                        .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                        .collect()
                })
            };
            Some(ResourceRequirements {
                requests: m(req),
                limits: m(lim),
                ..Default::default()
            })
        };
        let pod = |resources: Vec<Option<ResourceRequirements>>| {
            pod_with(PodSpec {
                containers: resources
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| Container {
                        resources: r,
                        ..named(&format!("c{i}"))
                    })
                    .collect(),
                ..Default::default()
            })
        };
        assert_eq!(compute_pod_qos(&pod(vec![None])), "BestEffort");
        let g = res(
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        assert_eq!(
            compute_pod_qos(&pod(vec![g.clone(), g.clone()])),
            "Guaranteed"
        );
        assert_eq!(
            compute_pod_qos(&pod(vec![res(&[], &[("cpu", "1"), ("memory", "1Gi")])])),
            "Guaranteed"
        );
        assert_eq!(
            compute_pod_qos(&pod(vec![g, res(&[("cpu", "100m")], &[])])),
            "Burstable"
        );
        assert_eq!(
            compute_pod_qos(&pod(vec![res(
                &[("cpu", "500m"), ("memory", "1Gi")],
                &[("cpu", "1"), ("memory", "1Gi")]
            )])),
            "Burstable"
        );
        assert_eq!(
            compute_pod_qos(&pod(vec![res(&[("nvidia.com/gpu", "1")], &[])])),
            "BestEffort"
        );
    }

    /// TestSortPodIPs.
    #[test]
    fn pod_ip_order() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(sort_pod_ips(&s(&["10.0.0.1"]), &[]), s(&["10.0.0.1"]));
        assert_eq!(
            sort_pod_ips(&s(&["fd00::6", "1.2.3.4"]), &s(&["10.0.0.1"])),
            s(&["1.2.3.4", "fd00::6"])
        );
        assert_eq!(
            sort_pod_ips(&s(&["1.2.3.4", "fd00::6"]), &s(&["fd00::1"])),
            s(&["fd00::6", "1.2.3.4"])
        );
        assert_eq!(
            sort_pod_ips(&s(&["1.2.3.4", "1.2.3.5", "fd00::6", "fd00::7"]), &[]),
            s(&["1.2.3.4", "fd00::6"])
        );
        assert_eq!(sort_pod_ips(&s(&["junk"]), &[]), Vec::<String>::new());
    }

    #[test]
    fn normalization_cuts_messages() {
        let pod = pod_with(spec_of(vec![], vec![named("a")], "Always"));
        let mut s = PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                state: Some(ApiContainerState {
                    terminated: Some(ContainerStateTerminated {
                        message: Some("é".repeat(MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..named_status("a")
            }]),
            ..Default::default()
        };
        normalize_status(&pod, &mut s);
        let m = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap()
            .message
            .unwrap();
        assert_eq!(m.len(), MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH);
    }

    fn named_status(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ..Default::default()
        }
    }
}
