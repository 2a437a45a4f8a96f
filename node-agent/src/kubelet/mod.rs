//! The kubelet's decisions, pure: functions over snapshots (the Pod, the runtime's view of
//! it, probe results, `now`) that say what to do and what to report. No I/O and no async
//! here; the pod workers ([`crate::agent`]) read state, call these, and act through
//! [`crate::runtime`].
//!
//! | file | upstream (kubernetes v1.36, pkg/kubelet/…) |
//! | --- | --- |
//! | [`runtime_status`] | container/runtime.go `PodStatus`, `Status`; container/helpers.go `HashContainer` |
//! | [`pod_actions`] | kuberuntime/kuberuntime_manager.go `computePodActions`; kuberuntime/util `PodSandboxChanged`; kuberuntime/kuberuntime_container.go `computeInitContainerActions`; container/helpers.go `ShouldContainerBeRestarted`; api/v1/pod/util.go `ContainerShouldRestart` |
//! | [`backoff`] | client-go util/flowcontrol/backoff.go as kubelet.go configures it; kuberuntime_manager.go `doBackOff`; kuberuntime/helpers.go `GetBackoffKey` |
//! | [`container_gc`] | kuberuntime/kuberuntime_gc.go `evictContainers`, `evictSandboxes`; container/container_gc.go `ContainerGCPolicy` |
//! | [`status_generate`] | kubelet_pods.go `generateAPIPodStatus`, `convertToAPIContainerStatuses`, `getPhase`; status/generate.go; prober/prober_manager.go `UpdatePodStatus`; status/status_manager.go `updateStatusInternal`, `mergePodStatus`, `isPodStatusByKubeletEqual`, `normalizeStatus` |
//! | [`prober`] | prober/worker.go, prober/results, prober/prober.go; pkg/probe/http, pkg/probe/util.go |
//! | [`env`] | kubelet_pods.go `makeEnvironmentVariables`, `podFieldSelectorRuntimeValue`; pkg/fieldpath; api/v1/resource `ExtractContainerResourceValue`; kubelet_resources.go `defaultPodLimitsForDownwardAPI` |
//! | [`quantity`] | apimachinery api/resource (parsing, `Value`, `MilliValue`) |
//! | [`mounts`] | kubelet_pods.go `makeMounts`, `translateMountPropagation`; kubecontainer `ExpandContainerVolumeMounts` |
//! | [`block_volumes`] | kubelet_pods.go `makeBlockVolumes` |
//! | [`eviction`] | eviction/eviction_manager.go `emptyDirLimitEviction`; eviction/helpers.go's messages |
//! | [`security_context`] | kuberuntime/security_context_others.go `verifyRunAsNonRoot`; kuberuntime_container.go `getImageUser`; util/format `Pod` |
//!
//! SyncPod (kuberuntime_manager.go `SyncPod`), in the seed's order, and where each step's
//! decision comes from:
//!
//! 1. Compute sandbox and container changes: [`pod_actions::compute_pod_actions`].
//! 2. Kill the sandbox if needed: [`pod_actions::PodActions::kill_pod`] (every container,
//!    then the sandbox; with `create_sandbox`, init containers are purged too).
//! 3. Kill containers that should not run: [`pod_actions::PodActions::containers_to_kill`]
//!    (only when the pod is not killed).
//! 4. Create the sandbox: [`pod_actions::PodActions::create_sandbox`], attempt
//!    [`pod_actions::PodActions::attempt`].
//! 5. Ephemeral containers: [`pod_actions::PodActions::ephemeral_containers_to_start`].
//! 6. Init containers: [`pod_actions::PodActions::init_containers_to_start`], in order; a
//!    regular init container that fails to start ends the step, a sidecar does not.
//! 7. Normal containers: [`pod_actions::PodActions::containers_to_start`].
//!
//! Each start first asks [`backoff::do_back_off`] (CrashLoopBackOff), then builds the
//! environment with [`env::make_environment_variables`]; a failure becomes the
//! container's waiting reason ([`status_generate::WaitingReason`], upstream's reason
//! cache). After the sync, [`status_generate::generate_api_pod_status`] makes the status
//! and [`status_generate::status_changed`] says whether to write it.
//!
//! The module is Linux-only because the `$(VAR)` expansion it uses
//! ([`crate::runtime::expansion`], a pure port) lives in the Linux-only runtime module.
#![cfg(target_os = "linux")]

pub mod backoff;
pub mod block_volumes;
pub mod container_gc;
pub mod env;
pub mod eviction;
pub mod mounts;
pub mod pod_actions;
pub mod prober;
pub mod quantity;
pub mod runtime_status;
pub mod security_context;
pub mod status_generate;
