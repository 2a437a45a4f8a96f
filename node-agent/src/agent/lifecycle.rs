//! Lifecycle hooks (upstream pkg/kubelet/lifecycle/handlers.go `handlerRunner.Run`):
//! PostStart and PreStop as exec (in the container), httpGet (through
//! [`super::probe_net`], from the pod's network namespace) or sleep. The error messages
//! are upstream's, naming the hook, the container and the pod.
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use super::probe_net::{self, Origin};
use crate::kubelet::prober::{ProbeAction, resolve_probe_action};
use crate::runtime::{Container as RtContainer, Runtime};

/// upstream `ErrPostStartHook`: the waiting reason of a container whose PostStart failed.
pub const REASON_POST_START_HOOK_ERROR: &str = "PostStartHookError";

/// Where a hook runs.
pub struct HookTarget<'a> {
    pub runtime: &'a Runtime,
    pub container: &'a RtContainer,
    pub spec: &'a Container,
    /// `name_namespace(uid)` (upstream `format.Pod`).
    pub pod_desc: &'a str,
    pub pod_ip: &'a str,
    pub netns: Option<PathBuf>,
}

/// Runs `handler`; `Err` is upstream's message. `timeout` bounds an exec or an HTTP
/// request (PreStop: the grace period).
pub async fn run_handler(
    target: &HookTarget<'_>,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    let (name, pod) = (&target.spec.name, target.pod_desc);
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        let shown = format!("[{}]", command.join(" "));
        let failed = |error: String, output: &[u8]| {
            format!(
                "Exec lifecycle hook ({shown}) for Container {name:?} in Pod {pod:?} failed - error: {error}, message: {:?}",
                String::from_utf8_lossy(output)
            )
        };
        return match target
            .runtime
            .exec_in(target.container, &command, timeout)
            .await
        {
            Ok(r) if r.timed_out => Err(failed(
                format!(
                    "command '{}' timed out after {timeout:?}",
                    command.join(" ")
                ),
                &r.output,
            )),
            Ok(r) if r.exit_code != 0 => Err(failed(
                format!(
                    "command '{}' exited with {}: {}",
                    command.join(" "),
                    r.exit_code,
                    String::from_utf8_lossy(&r.output)
                ),
                &r.output,
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(failed(e.to_string(), &[])),
        };
    }
    if let Some(http) = &handler.http_get {
        let path = http.path.clone().unwrap_or_default();
        let failed = |error: String| {
            format!(
                "HTTP lifecycle hook ({path}) for Container {name:?} in Pod {pod:?} failed - error: {error}"
            )
        };
        let probe = Probe {
            http_get: Some(http.clone()),
            ..Default::default()
        };
        let action = resolve_probe_action(&probe, target.spec, target.pod_ip, pod)
            .map_err(|e| failed(e.to_string()))?;
        let ProbeAction::HttpGet(t) = action else {
            return Err(failed("not an httpGet action".into()));
        };
        // upstream discards the response: any answer is success.
        return probe_net::http_get(&Origin::of(target.netns.as_deref()), &t, timeout)
            .await
            .map(drop)
            .map_err(|e| failed(e.to_string()));
    }
    if let Some(sleep) = &handler.sleep {
        let secs = u64::try_from(sleep.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(secs).min(timeout)).await;
        return Ok(());
    }
    Err(format!(
        "Cannot run handler: invalid handler: {handler:?} for Container {name:?} in Pod {pod:?}"
    ))
}
