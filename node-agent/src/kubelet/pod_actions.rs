//! What a sync must do to a pod: upstream kuberuntime_manager.go `computePodActions`
//! (step 1 of SyncPod), with `PodSandboxChanged` (kuberuntime/util), the init-container
//! half `computeInitContainerActions` and `HasAnyRegularContainerCreated`
//! (kuberuntime_container.go), and the restart rules `ShouldContainerBeRestarted`
//! (container/helpers.go), `ContainerShouldRestart` and `FindMatchingContainerRestartRule`
//! (api/v1/pod/util.go).
//!
//! As Kubernetes 1.36 runs by default: sidecar containers (restartable init containers)
//! are GA, and container-level `restartPolicy` / `restartPolicyRules`
//! (ContainerRestartRules, beta) are honoured. In-place resize and the
//! RestartAllContainers action are not implemented (see [`container_should_restart`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use rekube_crds::Pod;

use super::prober::{ProbeResult, ProbeResults, ProbeType};
use super::runtime_status::{
    ContainerRuntimeStatus, ContainerState, PodRuntimeStatus, SandboxState, hash_container,
};

pub const RESTART_POLICY_ALWAYS: &str = "Always";
pub const RESTART_POLICY_ON_FAILURE: &str = "OnFailure";
pub const RESTART_POLICY_NEVER: &str = "Never";
/// A container restart rule action: restart this container.
pub const RULE_ACTION_RESTART: &str = "Restart";
/// A container restart rule action: restart every container of the pod in place.
pub const RULE_ACTION_RESTART_ALL_CONTAINERS: &str = "RestartAllContainers";

/// `containerKillReason`: what killed a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKillReason {
    StartupProbe,
    LivenessProbe,
    FailedPostStartHook,
    Unknown,
}

impl ContainerKillReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKillReason::StartupProbe => "StartupProbe",
            ContainerKillReason::LivenessProbe => "LivenessProbe",
            ContainerKillReason::FailedPostStartHook => "FailedPostStartHook",
            ContainerKillReason::Unknown => "Unknown",
        }
    }
}

/// `containerToKillInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerToKill {
    /// The container's name.
    pub name: String,
    /// Why, for the Killing event ("Container foo definition changed, will be
    /// restarted").
    pub message: String,
    pub reason: Option<ContainerKillReason>,
}

/// `podActions`: what SyncPod does, in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and the sandbox.
    pub kill_pod: bool,
    /// Create a new sandbox (after killing the pod; init containers start over).
    pub create_sandbox: bool,
    /// The existing sandbox, to start containers in (empty when there is none).
    pub sandbox_id: String,
    /// The attempt number of the sandbox to create.
    pub attempt: u32,
    /// Indexes into `spec.initContainers` to start, in order.
    pub init_containers_to_start: Vec<usize>,
    /// Indexes into `spec.containers` to start.
    pub containers_to_start: Vec<usize>,
    /// Container instances to kill, by runtime container ID.
    pub containers_to_kill: BTreeMap<String, ContainerToKill>,
    /// Indexes into `spec.ephemeralContainers` to start.
    pub ephemeral_containers_to_start: Vec<usize>,
}

/// The pod's spec (an empty one when unset).
pub(crate) fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

/// The pod's restartPolicy, defaulted to Always.
pub fn pod_restart_policy(spec: &PodSpec) -> &str {
    spec.restart_policy
        .as_deref()
        .unwrap_or(RESTART_POLICY_ALWAYS)
}

/// Upstream `shouldRestartOnFailure`.
fn should_restart_on_failure(spec: &PodSpec) -> bool {
    pod_restart_policy(spec) != RESTART_POLICY_NEVER
}

/// Upstream `IsRestartableInitContainer`: an init container with restartPolicy Always (a
/// sidecar).
pub fn is_restartable_init_container(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some(RESTART_POLICY_ALWAYS)
}

/// Upstream `containerChanged`: the expected hash, the instance's hash, and whether they
/// differ.
pub fn container_changed(
    container: &Container,
    status: &ContainerRuntimeStatus,
) -> (u64, u64, bool) {
    let expected = hash_container(container);
    (expected, status.hash, expected != status.hash)
}

/// Upstream `containerSucceeded`: the newest instance exited with code 0.
fn container_succeeded(c: &Container, status: &PodRuntimeStatus) -> bool {
    status
        .find_container_status_by_name(&c.name)
        .is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0)
}

/// Upstream `FindMatchingContainerRestartRule`: the first of the container's
/// `restartPolicyRules` whose exit-code condition matches.
pub fn find_matching_container_restart_rule(
    container: &Container,
    exit_code: i32,
) -> Option<&k8s_openapi::api::core::v1::ContainerRestartRule> {
    container
        .restart_policy_rules
        .iter()
        .flatten()
        .find(|rule| {
            let Some(codes) = &rule.exit_codes else {
                return false;
            };
            let matched = codes.values.iter().flatten().any(|v| *v == exit_code);
            match codes.operator.as_str() {
                "In" => matched,
                "NotIn" => !matched,
                _ => false,
            }
        })
}

/// Upstream `ContainerShouldRestart`: whether a container that exited with `exit_code`
/// is to run again: its matching restart rule, else its own restartPolicy, else the
/// pod's. A RestartAllContainers rule restarts the container (upstream restarts every
/// container of the pod; rekube does not implement that action yet and restarts only
/// this one).
pub fn container_should_restart(container: &Container, spec: &PodSpec, exit_code: i32) -> bool {
    if let Some(policy) = container.restart_policy.as_deref() {
        let rule = find_matching_container_restart_rule(container, exit_code);
        if rule.is_some_and(|r| {
            r.action == RULE_ACTION_RESTART || r.action == RULE_ACTION_RESTART_ALL_CONTAINERS
        }) {
            return true;
        }
        match policy {
            RESTART_POLICY_ALWAYS => return true,
            RESTART_POLICY_ON_FAILURE => return exit_code != 0,
            RESTART_POLICY_NEVER => return false,
            _ => {}
        }
    }
    match pod_restart_policy(spec) {
        RESTART_POLICY_ON_FAILURE => exit_code != 0,
        RESTART_POLICY_NEVER => false,
        _ => true,
    }
}

/// Upstream `ShouldContainerBeRestarted`: a container never started, created but not
/// started, or in an unknown state is (re)started; a running one is not; an exited one as
/// its restart policy says. Nothing restarts once the pod is being deleted.
pub fn should_container_be_restarted(
    container: &Container,
    pod: &Pod,
    status: &PodRuntimeStatus,
) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(s) = status.find_container_status_by_name(&container.name) else {
        return true;
    };
    match s.state {
        ContainerState::Running => false,
        ContainerState::Unknown | ContainerState::Created => true,
        ContainerState::Exited => container_should_restart(container, spec(pod), s.exit_code),
    }
}

/// Upstream `PodSandboxChanged`: whether a new sandbox is needed, the attempt number for
/// it, and the current sandbox's ID.
pub fn pod_sandbox_changed(pod: &Pod, status: &PodRuntimeStatus) -> (bool, u32, String) {
    let sandboxes = status.sandboxes_newest_first();
    let Some(latest) = sandboxes.first() else {
        return (true, 0, String::new());
    };
    let ready = sandboxes
        .iter()
        .filter(|s| s.state == SandboxState::Ready)
        .count();
    if ready > 1 || latest.state != SandboxState::Ready {
        return (true, latest.attempt + 1, latest.id.clone());
    }
    let host_network = spec(pod).host_network.unwrap_or(false);
    if latest.host_network != host_network {
        return (true, latest.attempt + 1, String::new());
    }
    if !host_network && latest.ips.as_ref().is_some_and(|ips| ips.is_empty()) {
        return (true, latest.attempt + 1, latest.id.clone());
    }
    (false, latest.attempt, latest.id.clone())
}

/// Upstream `HasAnyRegularContainerCreated`: a regular container was created (so the init
/// containers completed at some point).
pub fn has_any_regular_container_created(pod: &Pod, status: &PodRuntimeStatus) -> bool {
    spec(pod).containers.iter().any(|c| {
        status
            .find_container_status_by_name(&c.name)
            .is_some_and(|s| {
                matches!(
                    s.state,
                    ContainerState::Created | ContainerState::Running | ContainerState::Exited
                )
            })
    })
}

/// Upstream `isInitContainerFailed`.
fn is_init_container_failed(s: &ContainerRuntimeStatus) -> bool {
    s.reason.as_deref() == Some("OOMKilled")
        || (s.state == ContainerState::Exited && s.exit_code != 0)
        || s.state == ContainerState::Unknown
}

/// Upstream `computePodActions`: compares the pod's spec with what runs and decides what
/// the sync does.
pub fn compute_pod_actions(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &ProbeResults,
) -> PodActions {
    let spec = spec(pod);
    let (create_sandbox, attempt, sandbox_id) = pod_sandbox_changed(pod, status);
    let mut changes = PodActions {
        kill_pod: create_sandbox,
        create_sandbox,
        sandbox_id,
        attempt,
        ..Default::default()
    };

    // A new sandbox means everything is killed and recreated, init containers first.
    if create_sandbox {
        if !should_restart_on_failure(spec) && attempt != 0 && !status.containers.is_empty() {
            // Never restarts and containers ran: the pod is done, only kill it.
            changes.create_sandbox = false;
            return changes;
        }
        // The containers to start, without those that succeeded and run once.
        let containers_to_start: Vec<usize> = spec
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let run_once = match c.restart_policy.as_deref() {
                    Some(policy) => policy == RESTART_POLICY_ON_FAILURE,
                    None => pod_restart_policy(spec) == RESTART_POLICY_ON_FAILURE,
                };
                !(run_once && container_succeeded(c, status))
            })
            .map(|(i, _)| i)
            .collect();
        // Nothing to start and initialization done: no sandbox either.
        if containers_to_start.is_empty() && has_any_regular_container_created(pod, status) {
            changes.create_sandbox = false;
            return changes;
        }
        if !spec
            .init_containers
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            changes.init_containers_to_start = vec![0];
            return changes;
        }
        changes.containers_to_start = containers_to_start;
        return changes;
    }

    // Ephemeral containers start even before initialization completes; never restarted.
    for (i, ec) in spec.ephemeral_containers.iter().flatten().enumerate() {
        if status.find_container_status_by_name(&ec.name).is_none() {
            changes.ephemeral_containers_to_start.push(i);
        }
    }

    let has_initialized = compute_init_container_actions(pod, status, probes, &mut changes);
    if changes.kill_pod || !has_initialized {
        // Initialization failed or is in progress: regular containers wait.
        return changes;
    }

    let mut keep_count = 0;
    for (idx, container) in spec.containers.iter().enumerate() {
        let cs = status.find_container_status_by_name(&container.name);

        // Not running: start it if it should run.
        let Some(cs) = cs.filter(|s| s.state == ContainerState::Running) else {
            if should_container_be_restarted(container, pod, status) {
                changes.containers_to_start.push(idx);
                if let Some(s) = cs.filter(|s| s.state == ContainerState::Unknown) {
                    // It may still run: kill it before starting another.
                    changes.containers_to_kill.insert(
                        s.id.clone(),
                        ContainerToKill {
                            name: s.name.clone(),
                            message: format!(
                                "Container is in {:?} state, try killing it before restart",
                                s.state.as_str()
                            ),
                            reason: Some(ContainerKillReason::Unknown),
                        },
                    );
                }
            }
            continue;
        };

        // Running: kill it if its spec changed or a probe failed.
        let mut restart = match container.restart_policy.as_deref() {
            // Probe failures follow the container's own policy, not its rules (it has no
            // exit code yet).
            Some(policy) => policy != RESTART_POLICY_NEVER,
            None => should_restart_on_failure(spec),
        };
        let (message, reason) = if container_changed(container, cs).2 {
            // A new spec always runs, whatever the restart policy.
            restart = true;
            (
                format!("Container {} definition changed", container.name),
                None,
            )
        } else if probes.get(ProbeType::Liveness, &cs.id) == Some(ProbeResult::Failure) {
            (
                format!("Container {} failed liveness probe", container.name),
                Some(ContainerKillReason::LivenessProbe),
            )
        } else if probes.get(ProbeType::Startup, &cs.id) == Some(ProbeResult::Failure) {
            (
                format!("Container {} failed startup probe", container.name),
                Some(ContainerKillReason::StartupProbe),
            )
        } else {
            keep_count += 1;
            continue;
        };
        let message = if restart {
            changes.containers_to_start.push(idx);
            format!("{message}, will be restarted")
        } else {
            message
        };
        changes.containers_to_kill.insert(
            cs.id.clone(),
            ContainerToKill {
                name: cs.name.clone(),
                message,
                reason,
            },
        );
    }

    if keep_count == 0 && changes.containers_to_start.is_empty() {
        changes.kill_pod = true;
        // Sidecars alone do not keep a pod alive.
        changes.init_containers_to_start.clear();
    }
    changes
}

/// Upstream `computeInitContainerActions`: starts the next init container, keeps the
/// restartable ones (sidecars) running (restarting those that exited, failed a probe or
/// changed), and kills the pod when an init container failed for good. Returns whether
/// the pod is initialized.
pub fn compute_init_container_actions(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &ProbeResults,
    changes: &mut PodActions,
) -> bool {
    let spec = spec(pod);
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    if init_containers.is_empty() {
        return true;
    }

    // A created or running regular container means the init containers ran, even if
    // their instances are gone. (An exited one does not: after a node reboot every
    // container has exited and the new sandbox is not initialized.)
    let mut pod_has_initialized = spec.containers.iter().any(|c| {
        status
            .find_container_status_by_name(&c.name)
            .is_some_and(|s| matches!(s.state, ContainerState::Created | ContainerState::Running))
    });
    let mut is_previously_initialized = pod_has_initialized;
    let restart_on_failure = should_restart_on_failure(spec);
    let last = init_containers.len() - 1;

    // Walk backwards: completed init containers may have been removed, so the last one
    // with a status decides; then keep the sidecars before it running.
    for i in (0..init_containers.len()).rev() {
        let container = &init_containers[i];
        let restartable = is_restartable_init_container(container);
        let Some(s) = status.find_container_status_by_name(&container.name) else {
            if is_previously_initialized && restartable {
                changes.init_containers_to_start.push(i);
            }
            continue;
        };
        if is_previously_initialized && !restartable {
            // After initialization only sidecars need to keep running.
            continue;
        }

        match s.state {
            ContainerState::Created => {
                // Created but never started: the runtime failed to start it; again.
                changes.init_containers_to_start.push(i);
            }
            ContainerState::Running if !restartable => {}
            ContainerState::Running => {
                'sidecar: {
                    if container.startup_probe.is_some() {
                        match probes.get(ProbeType::Startup, &s.id) {
                            // Not probed yet: wait.
                            None => break 'sidecar,
                            Some(ProbeResult::Success) => {}
                            Some(ProbeResult::Failure) => {
                                changes.containers_to_kill.insert(
                                    s.id.clone(),
                                    ContainerToKill {
                                        name: container.name.clone(),
                                        message: format!(
                                            "Init container {} failed startup probe",
                                            container.name
                                        ),
                                        reason: Some(ContainerKillReason::StartupProbe),
                                    },
                                );
                                changes.init_containers_to_start.push(i);
                                break 'sidecar;
                            }
                            Some(ProbeResult::Unknown) => break 'sidecar,
                        }
                    }
                    // Started: initialized.
                    if i == last {
                        pod_has_initialized = true;
                    } else if !is_previously_initialized {
                        // Started for the first time: on to the next one.
                        changes.init_containers_to_start.push(i + 1);
                    }
                    if container_changed(container, s).2 {
                        changes.containers_to_kill.insert(
                            s.id.clone(),
                            ContainerToKill {
                                name: container.name.clone(),
                                message: format!(
                                    "Init container {} definition changed",
                                    container.name
                                ),
                                reason: None,
                            },
                        );
                        changes.init_containers_to_start.push(i);
                        break 'sidecar;
                    }
                    // A sidecar's liveness does not hold back the next init container.
                    if container.liveness_probe.is_some() {
                        match probes.get(ProbeType::Liveness, &s.id) {
                            None => break 'sidecar,
                            Some(ProbeResult::Failure) => {
                                changes.containers_to_kill.insert(
                                    s.id.clone(),
                                    ContainerToKill {
                                        name: container.name.clone(),
                                        message: format!(
                                            "Init container {} failed liveness probe",
                                            container.name
                                        ),
                                        reason: Some(ContainerKillReason::LivenessProbe),
                                    },
                                );
                                changes.init_containers_to_start.push(i);
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
            ContainerState::Exited => {
                if restartable {
                    changes.init_containers_to_start.push(i);
                } else if is_init_container_failed(s) {
                    if !should_container_be_restarted(container, pod, status) {
                        changes.kill_pod = true;
                        changes.init_containers_to_start.clear();
                        return false;
                    }
                    changes.init_containers_to_start.push(i);
                } else if i == last {
                    pod_has_initialized = true;
                } else {
                    // Completed: start the next one.
                    changes.init_containers_to_start.push(i + 1);
                }
            }
            ContainerState::Unknown => {
                let restart = if restartable {
                    true
                } else {
                    // Only the container's own policy: there is no exit code for rules.
                    match container.restart_policy.as_deref() {
                        Some(policy) => policy != RESTART_POLICY_NEVER,
                        None => restart_on_failure,
                    }
                };
                if !restart {
                    changes.kill_pod = true;
                    changes.init_containers_to_start.clear();
                    return false;
                }
                changes.containers_to_kill.insert(
                    s.id.clone(),
                    ContainerToKill {
                        name: container.name.clone(),
                        message: format!(
                            "Init container is in {:?} state, try killing it before restart",
                            s.state.as_str()
                        ),
                        reason: Some(ContainerKillReason::Unknown),
                    },
                );
                changes.init_containers_to_start.push(i);
            }
        }

        // Everything before this init container has been initialized.
        is_previously_initialized = true;
    }

    // No init container has started: start the first.
    if !is_previously_initialized {
        changes.init_containers_to_start.push(0);
    }
    // The walk was backwards; start them in spec order.
    changes.init_containers_to_start.reverse();
    pod_has_initialized
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime_status::SandboxStatus;
    use crate::kubelet::runtime_status::testing::{container as cstatus, sandbox};
    use k8s_openapi::api::core::v1::{
        ContainerRestartRule, ContainerRestartRuleOnExitCodes, EphemeralContainer, Probe,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn c(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    /// makeBasePodAndStatus: three running containers in a ready sandbox.
    fn base() -> (Pod, PodRuntimeStatus) {
        let pod = Pod {
            metadata: ObjectMeta {
                uid: Some("12345678".into()),
                name: Some("foo".into()),
                namespace: Some("foo-ns".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    c("foo1", "busybox"),
                    c("foo2", "busybox"),
                    c("foo3", "busybox"),
                ],
                ..Default::default()
            }),
            status: None,
        };
        let containers = pod
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .enumerate()
            .map(|(i, ct)| {
                cstatus(
                    &format!("id{}", i + 1),
                    &ct.name,
                    ContainerState::Running,
                    hash_container(ct),
                )
            })
            .collect();
        let status = PodRuntimeStatus {
            uid: "12345678".into(),
            name: "foo".into(),
            namespace: "foo-ns".into(),
            sandboxes: vec![sandbox("sandboxID", SandboxState::Ready)],
            containers,
        };
        (pod, status)
    }

    fn spec_mut(pod: &mut Pod) -> &mut PodSpec {
        pod.spec.as_mut().unwrap()
    }

    fn set_policy(pod: &mut Pod, policy: &str) {
        spec_mut(pod).restart_policy = Some(policy.into());
    }

    fn kill(ids_names: &[(&str, &str)]) -> BTreeMap<String, String> {
        ids_names
            .iter()
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect()
    }

    /// The fields the upstream tests compare (messages and reasons are cleared there too).
    #[derive(Debug, PartialEq, Eq)]
    struct Expect {
        kill_pod: bool,
        create_sandbox: bool,
        sandbox_id: String,
        attempt: u32,
        init: Vec<usize>,
        start: Vec<usize>,
        kill: BTreeMap<String, String>,
        ephemeral: Vec<usize>,
    }

    fn no_action() -> Expect {
        Expect {
            kill_pod: false,
            create_sandbox: false,
            sandbox_id: "sandboxID".into(),
            attempt: 0,
            init: vec![],
            start: vec![],
            kill: BTreeMap::new(),
            ephemeral: vec![],
        }
    }

    fn actual(a: &PodActions) -> Expect {
        Expect {
            kill_pod: a.kill_pod,
            create_sandbox: a.create_sandbox,
            sandbox_id: a.sandbox_id.clone(),
            attempt: a.attempt,
            init: a.init_containers_to_start.clone(),
            start: a.containers_to_start.clone(),
            kill: a
                .containers_to_kill
                .iter()
                .map(|(id, k)| (id.clone(), k.name.clone()))
                .collect(),
            ephemeral: a.ephemeral_containers_to_start.clone(),
        }
    }

    fn sb(status: &mut PodRuntimeStatus) -> &mut SandboxStatus {
        &mut status.sandboxes[0]
    }

    fn exited(status: &mut PodRuntimeStatus, i: usize, code: i32) {
        status.containers[i].state = ContainerState::Exited;
        status.containers[i].exit_code = code;
    }

    type Mutate = fn(&mut Pod, &mut PodRuntimeStatus, &mut ProbeResults);

    fn run(
        base: fn() -> (Pod, PodRuntimeStatus),
        probes0: fn(&PodRuntimeStatus) -> ProbeResults,
        cases: Vec<(&str, Mutate, Expect)>,
    ) {
        for (desc, mutate, want) in cases {
            let (mut pod, mut status) = base();
            let mut probes = probes0(&status);
            mutate(&mut pod, &mut status, &mut probes);
            let got = compute_pod_actions(&pod, &status, &probes);
            assert_eq!(actual(&got), want, "{desc}");
        }
    }

    /// kuberuntime_manager_test.go TestComputePodActions.
    #[test]
    fn compute_pod_actions_table() {
        let cases: Vec<(&str, Mutate, Expect)> = vec![
            ("everything is good; do nothing", |_, _, _| {}, no_action()),
            (
                "start pod sandbox and all containers for a new pod",
                |_, s, _| {
                    s.sandboxes.clear();
                    s.containers.clear();
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    sandbox_id: String::new(),
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
            (
                "restart exited containers if RestartPolicy == Always",
                |p, s, _| {
                    set_policy(p, "Always");
                    exited(s, 0, 0);
                    exited(s, 1, 111);
                },
                Expect {
                    start: vec![0, 1],
                    ..no_action()
                },
            ),
            (
                "restart failed containers if RestartPolicy == OnFailure",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    exited(s, 0, 0);
                    exited(s, 1, 111);
                },
                Expect {
                    start: vec![1],
                    ..no_action()
                },
            ),
            (
                "restart created but not started containers if RestartPolicy == OnFailure",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    exited(s, 0, 0);
                    s.containers[1].state = ContainerState::Created;
                },
                Expect {
                    start: vec![1],
                    ..no_action()
                },
            ),
            (
                "don't restart containers if RestartPolicy == Never",
                |p, s, _| {
                    set_policy(p, "Never");
                    exited(s, 0, 0);
                    exited(s, 1, 111);
                },
                no_action(),
            ),
            (
                "Kill pod and recreate everything if the pod sandbox is dead, and RestartPolicy == Always",
                |p, s, _| {
                    set_policy(p, "Always");
                    sb(s).state = SandboxState::NotReady;
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
            (
                "Kill pod and recreate all containers (except for the succeeded one) if the pod sandbox is dead, and RestartPolicy == OnFailure",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    sb(s).state = SandboxState::NotReady;
                    exited(s, 1, 0);
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    start: vec![0, 2],
                    ..no_action()
                },
            ),
            (
                "Kill pod and recreate all containers if the PodSandbox does not have an IP",
                |_, s, _| sb(s).ips = Some(vec![]),
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
            (
                "Kill and recreate the container if the container's spec changed",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[1].hash = 432_423_432;
                },
                Expect {
                    start: vec![1],
                    kill: kill(&[("id2", "foo2")]),
                    ..no_action()
                },
            ),
            (
                "Kill and recreate the container if the liveness check has failed",
                |p, _, r| {
                    set_policy(p, "Always");
                    r.set(ProbeType::Liveness, "id2", ProbeResult::Failure);
                },
                Expect {
                    start: vec![1],
                    kill: kill(&[("id2", "foo2")]),
                    ..no_action()
                },
            ),
            (
                "Kill and recreate the container if the startup check has failed",
                |p, _, r| {
                    set_policy(p, "Always");
                    r.set(ProbeType::Startup, "id2", ProbeResult::Failure);
                },
                Expect {
                    start: vec![1],
                    kill: kill(&[("id2", "foo2")]),
                    ..no_action()
                },
            ),
            (
                "Verify we do not create a pod sandbox if no ready sandbox for pod with RestartPolicy=Never and all containers exited",
                |p, s, _| {
                    set_policy(p, "Never");
                    sb(s).state = SandboxState::NotReady;
                    sb(s).attempt = 1;
                    for i in 0..3 {
                        exited(s, i, 0);
                    }
                },
                Expect {
                    kill_pod: true,
                    attempt: 2,
                    ..no_action()
                },
            ),
            (
                "Verify we do not create a pod sandbox if no ready sandbox for pod with RestartPolicy=OnFailure and all containers succeeded",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    sb(s).state = SandboxState::NotReady;
                    sb(s).attempt = 1;
                    for i in 0..3 {
                        exited(s, i, 0);
                    }
                },
                Expect {
                    kill_pod: true,
                    attempt: 2,
                    ..no_action()
                },
            ),
            (
                "Verify we create a pod sandbox if no ready sandbox for pod with RestartPolicy=Never and no containers have ever been created",
                |p, s, _| {
                    set_policy(p, "Never");
                    sb(s).state = SandboxState::NotReady;
                    sb(s).attempt = 2;
                    s.containers.clear();
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 3,
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
            (
                "Kill and recreate the container if the container is in unknown state",
                |p, s, _| {
                    set_policy(p, "Never");
                    s.containers[1].state = ContainerState::Unknown;
                },
                Expect {
                    start: vec![1],
                    kill: kill(&[("id2", "foo2")]),
                    ..no_action()
                },
            ),
            (
                "Restart the container if the container is in created state",
                |p, s, _| {
                    set_policy(p, "Never");
                    s.containers[1].state = ContainerState::Created;
                },
                Expect {
                    start: vec![1],
                    ..no_action()
                },
            ),
            (
                "(rekube) a deleted pod restarts nothing; all exited means kill",
                |p, s, _| {
                    p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
                    for i in 0..3 {
                        exited(s, i, 1);
                    }
                },
                Expect {
                    kill_pod: true,
                    ..no_action()
                },
            ),
            (
                "(rekube) a changed network mode recreates the sandbox without its ID",
                |p, _, _| spec_mut(p).host_network = Some(true),
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    sandbox_id: String::new(),
                    attempt: 1,
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
            (
                "(rekube) no network status (loopback-only sandbox) is not a missing IP",
                |_, s, _| sb(s).ips = None,
                no_action(),
            ),
        ];
        run(base, |_| ProbeResults::default(), cases);
    }

    #[test]
    fn kill_messages_and_reasons() {
        let (mut pod, mut status) = base();
        set_policy(&mut pod, "Never");
        status.containers[0].hash = 1;
        status.containers[2].state = ContainerState::Unknown;
        let mut probes = ProbeResults::default();
        probes.set(ProbeType::Liveness, "id2", ProbeResult::Failure);
        let a = compute_pod_actions(&pod, &status, &probes);
        assert_eq!(
            a.containers_to_kill["id1"].message,
            "Container foo1 definition changed, will be restarted"
        );
        assert_eq!(a.containers_to_kill["id1"].reason, None);
        assert_eq!(
            a.containers_to_kill["id2"].message,
            "Container foo2 failed liveness probe"
        );
        assert_eq!(
            a.containers_to_kill["id2"].reason,
            Some(ContainerKillReason::LivenessProbe)
        );
        assert_eq!(
            a.containers_to_kill["id3"].message,
            r#"Container is in "unknown" state, try killing it before restart"#
        );
        assert_eq!(a.containers_to_start, vec![0, 2]);
    }

    /// makeBasePodAndStatusWithInitContainers: three exited init containers.
    fn base_init() -> (Pod, PodRuntimeStatus) {
        let (mut pod, mut status) = base();
        let inits = vec![
            c("init1", "bar-image"),
            c("init2", "bar-image"),
            c("init3", "bar-image"),
        ];
        status.containers = inits
            .iter()
            .enumerate()
            .map(|(i, ct)| {
                cstatus(
                    &format!("initid{}", i + 1),
                    &ct.name,
                    ContainerState::Exited,
                    hash_container(ct),
                )
            })
            .collect();
        spec_mut(&mut pod).init_containers = Some(inits);
        (pod, status)
    }

    /// TestComputePodActionsWithInitContainers (without the resize cases).
    #[test]
    fn compute_pod_actions_with_init_containers() {
        let cases: Vec<(&str, Mutate, Expect)> = vec![
            (
                "initialization completed; start all containers",
                |_, _, _| {},
                Expect {
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
            (
                "no init containers have been started; start the first one",
                |_, s, _| s.containers.clear(),
                Expect {
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "initialization in progress; do nothing",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[2].state = ContainerState::Running;
                },
                no_action(),
            ),
            (
                "Kill pod and restart the first init container if the pod sandbox is dead",
                |p, s, _| {
                    set_policy(p, "Always");
                    sb(s).state = SandboxState::NotReady;
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "initialization failed; restart the last init container if RestartPolicy == Always",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[2].exit_code = 137;
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "initialization failed; restart the last init container if RestartPolicy == OnFailure",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    s.containers[2].exit_code = 137;
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "initialization failed; kill pod if RestartPolicy == Never",
                |p, s, _| {
                    set_policy(p, "Never");
                    s.containers[2].exit_code = 137;
                },
                Expect {
                    kill_pod: true,
                    ..no_action()
                },
            ),
            (
                "init container state unknown; kill and recreate the last init container if RestartPolicy == Always",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[2].state = ContainerState::Unknown;
                },
                Expect {
                    init: vec![2],
                    kill: kill(&[("initid3", "init3")]),
                    ..no_action()
                },
            ),
            (
                "init container state unknown; kill and recreate the last init container if RestartPolicy == OnFailure",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    s.containers[2].state = ContainerState::Unknown;
                },
                Expect {
                    init: vec![2],
                    kill: kill(&[("initid3", "init3")]),
                    ..no_action()
                },
            ),
            (
                "init container state unknown; kill pod if RestartPolicy == Never",
                |p, s, _| {
                    set_policy(p, "Never");
                    s.containers[2].state = ContainerState::Unknown;
                },
                Expect {
                    kill_pod: true,
                    ..no_action()
                },
            ),
            (
                "Pod sandbox not ready, init container failed, but RestartPolicy == Never; kill pod only",
                |p, s, _| {
                    set_policy(p, "Never");
                    sb(s).state = SandboxState::NotReady;
                },
                Expect {
                    kill_pod: true,
                    attempt: 1,
                    ..no_action()
                },
            ),
            (
                "Pod sandbox not ready, and RestartPolicy == Never, but no visible init containers;  create a new pod sandbox",
                |p, s, _| {
                    set_policy(p, "Never");
                    sb(s).state = SandboxState::NotReady;
                    s.containers.clear();
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "Pod sandbox not ready, init container failed, and RestartPolicy == OnFailure; create a new pod sandbox",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    sb(s).state = SandboxState::NotReady;
                    s.containers[2].exit_code = 137;
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "some of the init container statuses are missing but the last init container is running, don't restart preceding ones",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[2].state = ContainerState::Running;
                    s.containers.drain(..2);
                },
                no_action(),
            ),
            (
                "an init container is in the created state due to an unknown error when starting container; restart it",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[2].state = ContainerState::Created;
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "(rekube) an OOMKilled init container failed even with exit code 0",
                |p, s, _| {
                    set_policy(p, "Never");
                    s.containers[2].reason = Some("OOMKilled".into());
                },
                Expect {
                    kill_pod: true,
                    ..no_action()
                },
            ),
        ];
        run(base_init, |_| ProbeResults::default(), cases);
    }

    /// makeBasePodAndStatusWithRestartableInitContainers: three running sidecars, the
    /// last two with liveness and startup probes.
    fn base_sidecars() -> (Pod, PodRuntimeStatus) {
        let (mut pod, mut status) = base();
        let sidecar = |name: &str, probes: bool| Container {
            restart_policy: Some("Always".into()),
            liveness_probe: probes.then(Probe::default),
            startup_probe: probes.then(Probe::default),
            ..c(name, "bar-image")
        };
        let inits = vec![
            sidecar("restartable-init-1", false),
            sidecar("restartable-init-2", true),
            sidecar("restartable-init-3", true),
        ];
        status.containers = inits
            .iter()
            .enumerate()
            .map(|(i, ct)| {
                cstatus(
                    &format!("initid{}", i + 1),
                    &ct.name,
                    ContainerState::Running,
                    hash_container(ct),
                )
            })
            .collect();
        spec_mut(&mut pod).init_containers = Some(inits);
        (pod, status)
    }

    fn sidecar_probes(_: &PodRuntimeStatus) -> ProbeResults {
        let mut r = ProbeResults::default();
        for id in ["initid2", "initid3"] {
            r.set(ProbeType::Liveness, id, ProbeResult::Success);
            r.set(ProbeType::Startup, id, ProbeResult::Success);
        }
        r
    }

    fn add_regular(p: &Pod, s: &mut PodRuntimeStatus, state: ContainerState, code: i32) {
        for (i, ct) in p.spec.as_ref().unwrap().containers.iter().enumerate() {
            let mut st = cstatus(&format!("id{}", i + 1), &ct.name, state, hash_container(ct));
            st.exit_code = code;
            s.containers.push(st);
        }
    }

    /// TestComputePodActionsWithRestartableInitContainers.
    #[test]
    fn compute_pod_actions_with_restartable_init_containers() {
        let cases: Vec<(&str, Mutate, Expect)> = vec![
            (
                "initialization completed; start all containers",
                |_, _, _| {},
                Expect {
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
            (
                "no init containers have been started; start the first one",
                |_, s, _| s.containers.clear(),
                Expect {
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "an init container is stuck in the created state; restart it",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[2].state = ContainerState::Created;
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "restartable init container has started; start the next",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers.truncate(1);
                },
                Expect {
                    init: vec![1],
                    ..no_action()
                },
            ),
            (
                "livenessProbe has not been run; start the nothing",
                |p, s, r| {
                    set_policy(p, "Always");
                    r.remove(ProbeType::Liveness, "initid2");
                    s.containers.truncate(2);
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "livenessProbe in progress; start the next",
                |p, s, r| {
                    set_policy(p, "Always");
                    r.set(ProbeType::Liveness, "initid2", ProbeResult::Unknown);
                    s.containers.truncate(2);
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "livenessProbe has completed; start the next",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers.truncate(2);
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "kill and recreate the restartable init container if the liveness check has failed",
                |p, _, r| {
                    set_policy(p, "Always");
                    r.set(ProbeType::Liveness, "initid3", ProbeResult::Failure);
                },
                Expect {
                    init: vec![2],
                    start: vec![0, 1, 2],
                    kill: kill(&[("initid3", "restartable-init-3")]),
                    ..no_action()
                },
            ),
            (
                "startupProbe has not been run; do nothing",
                |p, s, r| {
                    set_policy(p, "Always");
                    r.remove(ProbeType::Startup, "initid2");
                    s.containers.truncate(2);
                },
                no_action(),
            ),
            (
                "startupProbe in progress; do nothing",
                |p, s, r| {
                    set_policy(p, "Always");
                    r.set(ProbeType::Startup, "initid2", ProbeResult::Unknown);
                    s.containers.truncate(2);
                },
                no_action(),
            ),
            (
                "startupProbe has completed; start the next",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers.truncate(2);
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "kill and recreate the restartable init container if the startup check has failed",
                |p, _, r| {
                    set_policy(p, "Always");
                    r.set(ProbeType::Startup, "initid3", ProbeResult::Failure);
                },
                Expect {
                    init: vec![2],
                    kill: kill(&[("initid3", "restartable-init-3")]),
                    ..no_action()
                },
            ),
            (
                "kill and recreate the restartable init container if the container definition changes",
                |p, _, _| {
                    set_policy(p, "Always");
                    spec_mut(p).init_containers.as_mut().unwrap()[2].image =
                        Some("foo-image".into());
                },
                Expect {
                    init: vec![2],
                    start: vec![0, 1, 2],
                    kill: kill(&[("initid3", "restartable-init-3")]),
                    ..no_action()
                },
            ),
            (
                "restart terminated restartable init container and next init container",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[0].state = ContainerState::Exited;
                    s.containers[2].state = ContainerState::Exited;
                },
                Expect {
                    init: vec![0, 2],
                    ..no_action()
                },
            ),
            (
                "restart terminated restartable init container and regular containers",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[0].state = ContainerState::Exited;
                },
                Expect {
                    init: vec![0],
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
            (
                "Pod sandbox not ready, restartable init container failed, but RestartPolicy == Never; kill pod only",
                |p, s, _| {
                    set_policy(p, "Never");
                    sb(s).state = SandboxState::NotReady;
                    exited(s, 2, 137);
                },
                Expect {
                    kill_pod: true,
                    attempt: 1,
                    ..no_action()
                },
            ),
            (
                "Pod sandbox not ready, and RestartPolicy == Never, but no visible restartable init containers;  create a new pod sandbox",
                |p, s, _| {
                    set_policy(p, "Never");
                    sb(s).state = SandboxState::NotReady;
                    s.containers.clear();
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "Pod sandbox not ready, restartable init container failed, and RestartPolicy == OnFailure; create a new pod sandbox",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    sb(s).state = SandboxState::NotReady;
                    exited(s, 2, 137);
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "Pod sandbox not ready, restartable init container failed, and RestartPolicy == Always; create a new pod sandbox",
                |p, s, _| {
                    set_policy(p, "Always");
                    sb(s).state = SandboxState::NotReady;
                    exited(s, 2, 137);
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "initialization failed; restart the last restartable init container even if pod's RestartPolicy == Never",
                |p, s, _| {
                    set_policy(p, "Never");
                    exited(s, 2, 137);
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "restartable init container state unknown; kill and recreate the last restartable init container even if pod's RestartPolicy == Never",
                |p, s, _| {
                    set_policy(p, "Never");
                    s.containers[2].state = ContainerState::Unknown;
                },
                Expect {
                    init: vec![2],
                    kill: kill(&[("initid3", "restartable-init-3")]),
                    ..no_action()
                },
            ),
            (
                "restart restartable init container if regular containers are running even if pod's RestartPolicy == Never",
                |p, s, _| {
                    set_policy(p, "Never");
                    exited(s, 2, 137);
                    add_regular(p, s, ContainerState::Running, 0);
                },
                Expect {
                    init: vec![2],
                    ..no_action()
                },
            ),
            (
                "kill the pod if all main containers succeeded if pod's RestartPolicy == Never",
                |p, s, _| {
                    set_policy(p, "Never");
                    add_regular(p, s, ContainerState::Exited, 0);
                },
                Expect {
                    kill_pod: true,
                    ..no_action()
                },
            ),
            (
                "some of the init container statuses are missing but the last init container is running, restart restartable init and regular containers",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers.drain(..2);
                },
                Expect {
                    init: vec![0, 1],
                    start: vec![0, 1, 2],
                    ..no_action()
                },
            ),
        ];
        run(base_sidecars, sidecar_probes, cases);
    }

    /// makeBasePodAndStatusWithInitAndEphemeralContainers.
    fn base_ephemeral() -> (Pod, PodRuntimeStatus) {
        let (mut pod, mut status) = base();
        let init = c("init1", "bar-image");
        let debug = EphemeralContainer {
            name: "debug".into(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        status.containers.push(cstatus(
            "initid1",
            "init1",
            ContainerState::Exited,
            hash_container(&init),
        ));
        status.containers.push(cstatus(
            "debug1",
            "debug",
            ContainerState::Running,
            hash_container(&debug),
        ));
        spec_mut(&mut pod).init_containers = Some(vec![init]);
        spec_mut(&mut pod).ephemeral_containers = Some(vec![debug]);
        (pod, status)
    }

    /// TestComputePodActionsWithInitAndEphemeralContainers.
    #[test]
    fn compute_pod_actions_with_ephemeral_containers() {
        let cases: Vec<(&str, Mutate, Expect)> = vec![
            (
                "steady state; do nothing; ignore ephemeral container",
                |_, _, _| {},
                no_action(),
            ),
            (
                "No ephemeral containers running; start one",
                |_, s, _| s.containers.truncate(4),
                Expect {
                    ephemeral: vec![0],
                    ..no_action()
                },
            ),
            (
                "Start second ephemeral container",
                |p, _, _| {
                    spec_mut(p)
                        .ephemeral_containers
                        .as_mut()
                        .unwrap()
                        .push(EphemeralContainer {
                            name: "debug2".into(),
                            image: Some("busybox".into()),
                            ..Default::default()
                        })
                },
                Expect {
                    ephemeral: vec![1],
                    ..no_action()
                },
            ),
            (
                "Ephemeral container exited; do not restart",
                |p, s, _| {
                    set_policy(p, "Always");
                    s.containers[4].state = ContainerState::Exited;
                },
                no_action(),
            ),
            (
                "initialization in progress; start ephemeral container",
                |_, s, _| {
                    s.containers[3].state = ContainerState::Running;
                    s.containers.truncate(4);
                },
                Expect {
                    ephemeral: vec![0],
                    ..no_action()
                },
            ),
            (
                "Create a new pod sandbox if the pod sandbox is dead, init container failed and RestartPolicy == OnFailure",
                |p, s, _| {
                    set_policy(p, "OnFailure");
                    sb(s).state = SandboxState::NotReady;
                    s.containers.drain(..3);
                    s.containers[0].exit_code = 137;
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "Kill pod and do not restart ephemeral container if the pod sandbox is dead",
                |p, s, _| {
                    set_policy(p, "Always");
                    sb(s).state = SandboxState::NotReady;
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    init: vec![0],
                    ..no_action()
                },
            ),
            (
                "Kill pod if all containers exited except ephemeral container",
                |p, s, _| {
                    set_policy(p, "Never");
                    for i in 0..3 {
                        exited(s, i, 0);
                    }
                },
                Expect {
                    kill_pod: true,
                    ..no_action()
                },
            ),
            (
                "Ephemeral container is in unknown state; leave it alone",
                |p, s, _| {
                    set_policy(p, "Never");
                    s.containers[4].state = ContainerState::Unknown;
                },
                no_action(),
            ),
        ];
        run(base_ephemeral, |_| ProbeResults::default(), cases);
    }

    /// TestComputePodActionsWithContainerRestartRules.
    #[test]
    fn compute_pod_actions_with_container_restart_policy() {
        fn cpol(p: &mut Pod, i: usize, policy: &str) {
            spec_mut(p).containers[i].restart_policy = Some(policy.into());
        }
        let cases: Vec<(&str, Mutate, Expect)> = vec![
            (
                "restart exited containers if RestartPolicy == Always",
                |p, s, _| {
                    cpol(p, 0, "Always");
                    cpol(p, 1, "Always");
                    set_policy(p, "Never");
                    exited(s, 0, 0);
                    exited(s, 1, 111);
                },
                Expect {
                    start: vec![0, 1],
                    ..no_action()
                },
            ),
            (
                "restart failed containers if RestartPolicy == OnFailure",
                |p, s, _| {
                    cpol(p, 0, "OnFailure");
                    cpol(p, 1, "OnFailure");
                    set_policy(p, "Never");
                    exited(s, 0, 0);
                    exited(s, 1, 111);
                },
                Expect {
                    start: vec![1],
                    ..no_action()
                },
            ),
            (
                "restart created but not started containers if RestartPolicy == OnFailure",
                |p, s, _| {
                    cpol(p, 0, "OnFailure");
                    cpol(p, 1, "OnFailure");
                    set_policy(p, "Never");
                    exited(s, 0, 0);
                    s.containers[1].state = ContainerState::Created;
                },
                Expect {
                    start: vec![1],
                    ..no_action()
                },
            ),
            (
                "don't restart containers if RestartPolicy == Never",
                |p, s, _| {
                    cpol(p, 0, "Never");
                    cpol(p, 1, "Never");
                    set_policy(p, "Always");
                    exited(s, 0, 0);
                    exited(s, 1, 111);
                },
                no_action(),
            ),
            (
                "Kill pod and recreate all containers (except for the succeeded one) if the pod sandbox is dead",
                |p, s, _| {
                    cpol(p, 1, "OnFailure");
                    set_policy(p, "Always");
                    sb(s).state = SandboxState::NotReady;
                    exited(s, 1, 0);
                },
                Expect {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    start: vec![0, 2],
                    ..no_action()
                },
            ),
            (
                "(rekube) a restart rule on exit code 42 restarts a Never container",
                |p, s, _| {
                    cpol(p, 0, "Never");
                    spec_mut(p).containers[0].restart_policy_rules =
                        Some(vec![ContainerRestartRule {
                            action: "Restart".into(),
                            exit_codes: Some(ContainerRestartRuleOnExitCodes {
                                operator: "In".into(),
                                values: Some(vec![42]),
                            }),
                        }]);
                    exited(s, 0, 42);
                    exited(s, 1, 42);
                },
                Expect {
                    start: vec![0, 1],
                    ..no_action()
                },
            ),
        ];
        run(base, |_| ProbeResults::default(), cases);
    }

    #[test]
    fn restart_rules() {
        let rule = |op: &str, codes: Vec<i32>| ContainerRestartRule {
            action: "Restart".into(),
            exit_codes: Some(ContainerRestartRuleOnExitCodes {
                operator: op.into(),
                values: Some(codes),
            }),
        };
        let ctr = Container {
            restart_policy: Some("Never".into()),
            restart_policy_rules: Some(vec![rule("NotIn", vec![0, 1])]),
            ..Default::default()
        };
        let spec = PodSpec::default();
        assert!(container_should_restart(&ctr, &spec, 2));
        assert!(!container_should_restart(&ctr, &spec, 1));
        assert!(find_matching_container_restart_rule(&ctr, 0).is_none());
        // Rules only apply with a container-level policy.
        let no_policy = Container {
            restart_policy_rules: Some(vec![rule("In", vec![3])]),
            ..Default::default()
        };
        let never = PodSpec {
            restart_policy: Some("Never".into()),
            ..Default::default()
        };
        assert!(!container_should_restart(&no_policy, &never, 3));
        let on_failure = PodSpec {
            restart_policy: Some("OnFailure".into()),
            ..Default::default()
        };
        assert!(container_should_restart(
            &Container::default(),
            &on_failure,
            1
        ));
        assert!(!container_should_restart(
            &Container::default(),
            &on_failure,
            0
        ));
        assert!(container_should_restart(&Container::default(), &spec, 0));
    }
}
