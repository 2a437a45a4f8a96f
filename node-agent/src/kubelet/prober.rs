//! Probes, without the network: upstream pkg/kubelet/prober.
//!
//! - [`ProbeResults`]: the three results managers (prober/results): the latest liveness,
//!   readiness and startup result per container ID, read by [`super::pod_actions`] (kill
//!   on liveness/startup failure) and [`super::status_generate`] (ready, started).
//! - [`ProbeWorkerState`]: one probe worker (prober/worker.go `doProbe`) as a state
//!   machine: when the next probe is due, and what a probe outcome does to the published
//!   result (initial values, thresholds, on-hold after a liveness or startup verdict,
//!   reset for a new container instance).
//! - Targets (prober/prober.go `runProbe`, probe/http/request.go, probe/util.go): what an
//!   exec, httpGet, tcpSocket or grpc probe is to run against, and the HTTP success rule.
//!   Running it (exec in the container, the HTTP GET, the TCP connect) is the caller's I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, EnvVar, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The User-Agent of probe requests (upstream `kube-probe/<major>.<minor>`).
pub const PROBE_USER_AGENT: &str = "kube-probe/1.36";

/// Errors resolving a probe's target (upstream returns them as `probe.Unknown` plus an
/// error, which the worker throws away: no result is recorded for that round).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProberError {
    #[error("invalid port number: {0}")]
    InvalidPort(i64),
    #[error("strconv.Atoi: parsing {0:?}: invalid syntax")]
    PortNotFound(String),
    #[error("missing probe handler for {pod}:{container}")]
    MissingHandler { pod: String, container: String },
}

/// `probeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeType {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeType {
    /// Upstream `probeType.String()`, used in event messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::Liveness => "Liveness",
            ProbeType::Readiness => "Readiness",
            ProbeType::Startup => "Startup",
        }
    }

    /// The container's probe of this type.
    pub fn probe_of(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeType::Liveness => container.liveness_probe.as_ref(),
            ProbeType::Readiness => container.readiness_probe.as_ref(),
            ProbeType::Startup => container.startup_probe.as_ref(),
        }
    }

    /// The result a worker publishes for a new container before its first verdict:
    /// liveness Success, readiness Failure, startup Unknown (upstream `newWorker`).
    pub fn initial_result(self) -> ProbeResult {
        match self {
            ProbeType::Liveness => ProbeResult::Success,
            ProbeType::Readiness => ProbeResult::Failure,
            ProbeType::Startup => ProbeResult::Unknown,
        }
    }
}

/// `results.Result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

impl ProbeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeResult::Unknown => "Unknown",
            ProbeResult::Success => "Success",
            ProbeResult::Failure => "Failure",
        }
    }
}

/// A published result changed (upstream `results.Update`): the kubelet re-syncs the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultChange {
    pub probe_type: ProbeType,
    pub container_id: String,
    pub result: ProbeResult,
}

/// The three results managers: the latest published result per probe type and container
/// ID (the runtime ID, without `rekube://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeResults {
    pub liveness: BTreeMap<String, ProbeResult>,
    pub readiness: BTreeMap<String, ProbeResult>,
    pub startup: BTreeMap<String, ProbeResult>,
}

impl ProbeResults {
    fn map(&self, probe_type: ProbeType) -> &BTreeMap<String, ProbeResult> {
        match probe_type {
            ProbeType::Liveness => &self.liveness,
            ProbeType::Readiness => &self.readiness,
            ProbeType::Startup => &self.startup,
        }
    }

    fn map_mut(&mut self, probe_type: ProbeType) -> &mut BTreeMap<String, ProbeResult> {
        match probe_type {
            ProbeType::Liveness => &mut self.liveness,
            ProbeType::Readiness => &mut self.readiness,
            ProbeType::Startup => &mut self.startup,
        }
    }

    /// `Manager.Get`.
    pub fn get(&self, probe_type: ProbeType, container_id: &str) -> Option<ProbeResult> {
        self.map(probe_type).get(container_id).copied()
    }

    /// `Manager.Set`: true when the result changed (upstream sends an update then).
    pub fn set(&mut self, probe_type: ProbeType, container_id: &str, result: ProbeResult) -> bool {
        self.map_mut(probe_type)
            .insert(container_id.to_string(), result)
            != Some(result)
    }

    /// Records a worker's change.
    pub fn apply(&mut self, change: &ResultChange) -> bool {
        self.set(change.probe_type, &change.container_id, change.result)
    }

    /// `Manager.Remove`.
    pub fn remove(&mut self, probe_type: ProbeType, container_id: &str) {
        self.map_mut(probe_type).remove(container_id);
    }

    /// Forgets every result of a container instance (it was removed).
    pub fn remove_container(&mut self, container_id: &str) {
        for t in [
            ProbeType::Liveness,
            ProbeType::Readiness,
            ProbeType::Startup,
        ] {
            self.remove(t, container_id);
        }
    }
}

/// A probe's timing, with the API defaults for unset (or zero) fields:
/// initialDelaySeconds 0, periodSeconds 10, timeoutSeconds 1, successThreshold 1,
/// failureThreshold 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub fn of(probe: &Probe) -> Self {
        fn positive(v: Option<i32>, default: i32) -> i32 {
            v.filter(|v| *v > 0).unwrap_or(default)
        }
        let secs = |v: i32| Duration::from_secs(u64::try_from(v).unwrap_or(0));
        ProbeTiming {
            initial_delay: secs(probe.initial_delay_seconds.unwrap_or(0).max(0)),
            period: secs(positive(probe.period_seconds, 10)),
            timeout: secs(positive(probe.timeout_seconds, 1)),
            success_threshold: positive(probe.success_threshold, 1).unsigned_abs(),
            failure_threshold: positive(probe.failure_threshold, 3).unsigned_abs(),
        }
    }
}

/// One probe worker for one container instance (upstream `worker`, minus the goroutine
/// and the ticker): the caller runs the probe when [`Self::due`] says so, reports the
/// outcome to [`Self::observe`], and applies the returned [`ResultChange`] to its
/// [`ProbeResults`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeWorkerState {
    probe_type: ProbeType,
    timing: ProbeTiming,
    container_id: String,
    started_at: Timestamp,
    /// What the results manager holds for this container.
    result: ProbeResult,
    last_result: Option<ProbeResult>,
    result_run: u32,
    on_hold: bool,
    last_probe_at: Option<Timestamp>,
}

impl ProbeWorkerState {
    /// A worker for a container instance that started at `started_at`; its published
    /// result starts at [`ProbeType::initial_result`].
    pub fn new(
        probe_type: ProbeType,
        probe: &Probe,
        container_id: &str,
        started_at: Timestamp,
    ) -> Self {
        ProbeWorkerState {
            probe_type,
            timing: ProbeTiming::of(probe),
            container_id: container_id.to_string(),
            started_at,
            result: probe_type.initial_result(),
            last_result: None,
            result_run: 0,
            on_hold: false,
            last_probe_at: None,
        }
    }

    /// The change to publish when the worker is created (upstream sets the initial value
    /// as soon as it sees the container).
    pub fn initial_change(&self) -> ResultChange {
        self.change()
    }

    pub fn probe_type(&self) -> ProbeType {
        self.probe_type
    }

    pub fn timing(&self) -> ProbeTiming {
        self.timing
    }

    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The published result.
    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// Probing stopped until a new container instance (after a liveness failure or a
    /// startup verdict).
    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    /// How many probes in a row returned the last outcome.
    pub fn result_run(&self) -> u32 {
        self.result_run
    }

    fn change(&self) -> ResultChange {
        ResultChange {
            probe_type: self.probe_type,
            container_id: self.container_id.clone(),
            result: self.result,
        }
    }

    fn publish(&mut self, result: ProbeResult) -> Option<ResultChange> {
        let changed = self.result != result;
        self.result = result;
        changed.then(|| self.change())
    }

    /// When the next probe should run; `None` while none should. `container_started` is
    /// the container's `started` (its startup probe succeeded, or it has none): liveness
    /// and readiness wait for it, a startup probe stops once it is true. The first probe
    /// is due `initialDelaySeconds` after the container started, the next ones
    /// `periodSeconds` after the previous one. A time at or before now means "probe now".
    pub fn due(&self, container_started: bool) -> Option<Timestamp> {
        if self.on_hold {
            return None;
        }
        let gated = match self.probe_type {
            ProbeType::Startup => container_started,
            ProbeType::Liveness | ProbeType::Readiness => !container_started,
        };
        if gated {
            return None;
        }
        let first = self.started_at + self.timing.initial_delay;
        Some(match self.last_probe_at {
            Some(last) => (last + self.timing.period).max(first),
            None => first,
        })
    }

    /// Records a probe outcome observed at `now` (upstream `doProbe` after `probe`): the
    /// published result flips only after `successThreshold` / `failureThreshold`
    /// consecutive outcomes; a liveness failure or any startup verdict puts the worker on
    /// hold until the next container instance.
    pub fn observe(&mut self, result: ProbeResult, now: Timestamp) -> Option<ResultChange> {
        if self.on_hold {
            return None;
        }
        self.last_probe_at = Some(now);
        if self.last_result == Some(result) {
            self.result_run += 1;
        } else {
            self.last_result = Some(result);
            self.result_run = 1;
        }
        if (result == ProbeResult::Failure && self.result_run < self.timing.failure_threshold)
            || (result == ProbeResult::Success && self.result_run < self.timing.success_threshold)
        {
            return None;
        }
        let change = self.publish(result);
        if (self.probe_type == ProbeType::Liveness && result == ProbeResult::Failure)
            || self.probe_type == ProbeType::Startup
        {
            self.on_hold = true;
            self.result_run = 0;
        }
        change
    }

    /// A new instance of the container (a new container ID): the published result is the
    /// initial value again and probing resumes (upstream: the worker sees a new
    /// `containerID`). The consecutive-outcome count carries over, as upstream's does.
    pub fn reset(&mut self, container_id: &str, started_at: Timestamp) -> ResultChange {
        self.container_id = container_id.to_string();
        self.started_at = started_at;
        self.result = self.probe_type.initial_result();
        self.on_hold = false;
        self.last_probe_at = None;
        self.change()
    }

    /// The container is not running: its result becomes Failure (upstream
    /// "Non-running container probed").
    pub fn container_not_running(&mut self) -> Option<ResultChange> {
        self.publish(ProbeResult::Failure)
    }

    /// The pod is being deleted: liveness and startup report Success so that nothing
    /// restarts the container during its graceful termination, and the worker stops
    /// (upstream "Pod deletion requested, setting probe result to success").
    pub fn pod_deleting(&mut self) -> Option<ResultChange> {
        if self.probe_type == ProbeType::Readiness {
            return None;
        }
        self.on_hold = true;
        self.publish(ProbeResult::Success)
    }
}

/// What a probe runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Run the command in the container; exit code 0 is Success.
    Exec {
        command: Vec<String>,
    },
    HttpGet(HttpGetTarget),
    /// Connect to host:port; a connection is Success.
    TcpSocket {
        host: String,
        port: u16,
    },
    /// gRPC health checking protocol against the pod IP.
    Grpc {
        host: String,
        port: i32,
        service: String,
    },
}

/// What a gRPC health check came to (the I/O is `agent::probe_grpc::check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcReply {
    /// The server answered `Check`: the `ServingStatus` name (`SERVING`, `NOT_SERVING`,
    /// `SERVICE_UNKNOWN`, `UNKNOWN`).
    Status(String),
    /// No HTTP/2 connection within the timeout.
    ConnectTimeout { cause: String },
    /// The connection failed (refused, reset, not HTTP/2).
    ConnectFailed { cause: String },
    /// The server answered with gRPC status UNIMPLEMENTED: no `grpc.health.v1.Health`.
    Unimplemented { message: String },
    /// Connected, but `Check` did not complete within the timeout.
    RpcTimeout,
    /// Any other RPC error.
    RpcFailed { cause: String },
}

/// Upstream `grpcProber.Probe` (pkg/probe/grpc/grpc.go): only `SERVING` is Success, and
/// every failure is a probe Failure (never Unknown), with upstream's messages.
pub fn grpc_probe_outcome(
    addr: &str,
    timeout: Duration,
    reply: &GrpcReply,
) -> (ProbeResult, String) {
    let failure = |m: String| (ProbeResult::Failure, m);
    match reply {
        GrpcReply::Status(s) if s == "SERVING" => (ProbeResult::Success, "service healthy".into()),
        GrpcReply::Status(s) => failure(format!("service unhealthy (responded with {s:?})")),
        GrpcReply::ConnectTimeout { cause } => failure(format!(
            "timeout: failed to connect service {addr:?} within {timeout:?}: {cause}"
        )),
        GrpcReply::ConnectFailed { cause } => failure(format!(
            "error: failed to connect service at {addr:?}: {cause}"
        )),
        GrpcReply::Unimplemented { message } => failure(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
        )),
        GrpcReply::RpcTimeout => failure(format!(
            "timeout: health rpc did not complete within {timeout:?}"
        )),
        GrpcReply::RpcFailed { cause } => {
            failure(format!("error: health rpc probe failed: {cause}"))
        }
    }
}

/// A resolved httpGet probe (upstream `NewRequestForHTTPGetAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGetTarget {
    /// `http` or `https` (TLS without verification, as upstream).
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// The path (and query) as the spec gives it.
    pub path: String,
    /// The full URL to GET.
    pub url: String,
    /// Request headers, canonical names, with upstream's defaults (`User-Agent`,
    /// `Accept: */*`).
    pub headers: BTreeMap<String, Vec<String>>,
    /// The `Host` header's value, used as the request's host when set.
    pub host_header: Option<String>,
}

/// Resolves what `probe` runs against for `container` of the pod at `pod_ip` (upstream
/// `runProbe`). `pod` names the pod in the error for a probe without a handler.
pub fn resolve_probe_action(
    probe: &Probe,
    container: &Container,
    pod_ip: &str,
    pod: &str,
) -> Result<ProbeAction, ProberError> {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return Ok(ProbeAction::Exec {
            command: expand_container_command_only_static(
                &command,
                container.env.as_deref().unwrap_or_default(),
            ),
        });
    }
    if let Some(http) = &probe.http_get {
        let scheme = http
            .scheme
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let scheme = if scheme.is_empty() {
            "http".to_string()
        } else {
            scheme
        };
        let host = match http.host.as_deref() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => pod_ip.to_string(),
        };
        let port = resolve_container_port(&http.port, container)?;
        let path = http.path.clone().unwrap_or_default();
        let url = format_url(&scheme, &host, port, &path);
        let mut headers =
            v1_header_to_http_header(http.http_headers.as_deref().unwrap_or_default());
        headers
            .entry("User-Agent".to_string())
            .or_insert_with(|| vec![PROBE_USER_AGENT.to_string()]);
        match headers.get("Accept") {
            None => {
                headers.insert("Accept".to_string(), vec!["*/*".to_string()]);
            }
            Some(v) if v.first().is_none_or(|s| s.is_empty()) => {
                headers.remove("Accept");
            }
            Some(_) => {}
        }
        let host_header = headers
            .get("Host")
            .and_then(|v| v.first())
            .filter(|h| !h.is_empty())
            .cloned();
        return Ok(ProbeAction::HttpGet(HttpGetTarget {
            scheme,
            host,
            port,
            path,
            url,
            headers,
            host_header,
        }));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_container_port(&tcp.port, container)?;
        let host = match tcp.host.as_deref() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => pod_ip.to_string(),
        };
        return Ok(ProbeAction::TcpSocket { host, port });
    }
    if let Some(grpc) = &probe.grpc {
        return Ok(ProbeAction::Grpc {
            host: pod_ip.to_string(),
            port: grpc.port,
            service: grpc.service.clone().unwrap_or_default(),
        });
    }
    Err(ProberError::MissingHandler {
        pod: pod.to_string(),
        container: container.name.clone(),
    })
}

/// Upstream `probe.ResolveContainerPort`: a port number, or the name of one of the
/// container's ports (a name that matches no port is tried as a number).
pub fn resolve_container_port(
    param: &IntOrString,
    container: &Container,
) -> Result<u16, ProberError> {
    let port: i64 = match param {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::String(name) => match find_port_by_name(container, name) {
            Some(p) => i64::from(p),
            None => name
                .parse::<i64>()
                .map_err(|_| ProberError::PortNotFound(name.clone()))?,
        },
    };
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ProberError::InvalidPort(port))
}

/// Upstream `findPortByName`.
pub fn find_port_by_name(container: &Container, port_name: &str) -> Option<i32> {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(port_name))
        .map(|p| p.container_port)
}

/// Upstream `formatURL`: scheme://host:port followed by the path as given (a path
/// without a leading slash gets one, as Go's URL printing adds it).
pub fn format_url(scheme: &str, host: &str, port: u16, path: &str) -> String {
    let host_port = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path_end = path.find(['?', '#']).unwrap_or(path.len());
    let sep = if path_end > 0 && !path.starts_with('/') {
        "/"
    } else {
        ""
    };
    format!("{scheme}://{host_port}{sep}{path}")
}

/// Upstream `v1HeaderToHTTPHeader`: header names canonicalised (Go's
/// `CanonicalMIMEHeaderKey`), repeated names collected in order.
pub fn v1_header_to_http_header(
    headers: &[k8s_openapi::api::core::v1::HTTPHeader],
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in headers {
        out.entry(canonical_header_key(&h.name))
            .or_default()
            .push(h.value.clone());
    }
    out
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: the first letter and any letter after a
/// hyphen upper case, the rest lower case; a key with a space or a non-token byte is
/// returned unchanged.
pub fn canonical_header_key(key: &str) -> String {
    let valid = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return key.to_string();
    }
    let mut upper = true;
    key.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Upstream `ExpandContainerCommandOnlyStatic` (container/helpers.go): `$(VAR)` in an
/// exec probe's command expands to the value of an `env` entry given by `value` (an entry
/// given by `valueFrom` expands to the empty string; unknown names stay as written).
pub fn expand_container_command_only_static(command: &[String], env: &[EnvVar]) -> Vec<String> {
    use crate::runtime::expansion::{expand, mapping_func_for};
    let map: BTreeMap<String, String> = env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let contexts = [&map];
    let mapping = mapping_func_for(&contexts);
    command.iter().map(|c| expand(c, &mapping)).collect()
}

/// What an HTTP response means to a probe (upstream `DoHTTPProbe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpProbeOutcome {
    /// 200 ≤ code < 300.
    Success,
    /// 300 ≤ code < 400: a redirect the prober did not follow; counts as Success.
    Warning(String),
    /// Any other code.
    Failure(String),
}

impl HttpProbeOutcome {
    /// The worker's result: Warning counts as Success (upstream `prober.probe`).
    pub fn result(&self) -> ProbeResult {
        match self {
            HttpProbeOutcome::Success | HttpProbeOutcome::Warning(_) => ProbeResult::Success,
            HttpProbeOutcome::Failure(_) => ProbeResult::Failure,
        }
    }
}

/// Upstream's HTTP success rule: 200 ≤ code < 400, a 3xx being a Warning (the prober does
/// not follow redirects to another host). `body` is at most the first 10 KiB.
pub fn http_probe_outcome(status_code: u16, body: &str) -> HttpProbeOutcome {
    match status_code {
        200..=299 => HttpProbeOutcome::Success,
        300..=399 => {
            HttpProbeOutcome::Warning(format!("Probe terminated redirects, Response body: {body}"))
        }
        code => HttpProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// An exec probe's result: exit code 0 is Success.
pub fn exec_probe_result(exit_code: i32) -> ProbeResult {
    if exit_code == 0 {
        ProbeResult::Success
    } else {
        ProbeResult::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, ExecAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
    };

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Default::default()
        }
    }

    fn worker(t: ProbeType, p: &Probe) -> ProbeWorkerState {
        ProbeWorkerState::new(t, p, "id1", ts(1000))
    }

    /// worker_test.go TestInitialDelay: nothing is due before initialDelaySeconds, the
    /// initial values are liveness Success, readiness Failure, startup Unknown.
    #[test]
    fn initial_delay() {
        let p = Probe {
            initial_delay_seconds: Some(10),
            ..Default::default()
        };
        for (t, initial) in [
            (ProbeType::Liveness, ProbeResult::Success),
            (ProbeType::Readiness, ProbeResult::Failure),
            (ProbeType::Startup, ProbeResult::Unknown),
        ] {
            let mut w = worker(t, &p);
            assert_eq!(w.result(), initial, "{t:?}");
            let started = t != ProbeType::Startup;
            assert_eq!(w.due(started), Some(ts(1010)), "{t:?}");
            assert_eq!(
                w.observe(ProbeResult::Success, ts(1010)).map(|c| c.result),
                (initial != ProbeResult::Success).then_some(ProbeResult::Success)
            );
            assert_eq!(w.result(), ProbeResult::Success);
        }
    }

    #[test]
    fn timing_defaults() {
        let t = ProbeTiming::of(&Probe::default());
        assert_eq!(
            t,
            ProbeTiming {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
    }

    #[test]
    fn due_follows_the_period() {
        let p = Probe {
            period_seconds: Some(5),
            ..Default::default()
        };
        let mut w = worker(ProbeType::Readiness, &p);
        assert_eq!(w.due(true), Some(ts(1000)));
        w.observe(ProbeResult::Success, ts(1001));
        assert_eq!(w.due(true), Some(ts(1006)));
    }

    /// TestFailureThreshold: readiness, success 1, failure 3.
    #[test]
    fn failure_threshold() {
        let mut w = worker(ProbeType::Readiness, &probe(1, 3));
        let mut now = 1000;
        let mut step = |w: &mut ProbeWorkerState, r| {
            now += 10;
            w.observe(r, ts(now));
            w.result()
        };
        for _ in 0..2 {
            for _ in 0..3 {
                assert_eq!(step(&mut w, ProbeResult::Success), ProbeResult::Success);
            }
            for _ in 0..2 {
                assert_eq!(step(&mut w, ProbeResult::Failure), ProbeResult::Success);
            }
            for _ in 0..3 {
                assert_eq!(step(&mut w, ProbeResult::Failure), ProbeResult::Failure);
            }
        }
    }

    /// TestSuccessThreshold: readiness, success 3, failure 1.
    #[test]
    fn success_threshold() {
        let mut w = worker(ProbeType::Readiness, &probe(3, 1));
        for _ in 0..2 {
            for _ in 0..2 {
                w.observe(ProbeResult::Success, ts(1));
                assert_eq!(w.result(), ProbeResult::Failure);
            }
            for _ in 0..3 {
                w.observe(ProbeResult::Success, ts(1));
                assert_eq!(w.result(), ProbeResult::Success);
            }
            w.observe(ProbeResult::Failure, ts(1));
            assert_eq!(w.result(), ProbeResult::Failure);
        }
    }

    /// TestStartupProbeSuccessThreshold / TestStartupProbeFailureThreshold /
    /// TestResultRunOnStartupCheckFailure.
    #[test]
    fn startup_thresholds_and_hold() {
        let mut w = worker(ProbeType::Startup, &probe(1, 3));
        assert!(w.observe(ProbeResult::Failure, ts(1)).is_none());
        assert_eq!((w.result(), w.result_run()), (ProbeResult::Unknown, 1));
        assert!(w.observe(ProbeResult::Failure, ts(2)).is_none());
        assert_eq!((w.result(), w.result_run()), (ProbeResult::Unknown, 2));
        let change = w.observe(ProbeResult::Failure, ts(3)).unwrap();
        assert_eq!(change.result, ProbeResult::Failure);
        assert_eq!((w.result_run(), w.on_hold()), (0, true));
        assert_eq!(w.due(false), None);

        let mut w = worker(ProbeType::Startup, &probe(1, 3));
        assert_eq!(
            w.observe(ProbeResult::Success, ts(1)).unwrap().result,
            ProbeResult::Success
        );
        assert!(w.on_hold());
        assert_eq!(w.result_run(), 0);
    }

    /// TestOnHoldOnLivenessOrStartupCheckFailure: a failure holds the worker until a new
    /// container ID.
    #[test]
    fn on_hold_until_new_container() {
        for t in [ProbeType::Liveness, ProbeType::Startup] {
            let started = t != ProbeType::Startup;
            let mut w = worker(t, &probe(1, 1));
            assert_eq!(
                w.observe(ProbeResult::Failure, ts(1)).unwrap().result,
                ProbeResult::Failure
            );
            assert!(w.on_hold());
            assert_eq!(w.due(started), None);
            assert!(w.observe(ProbeResult::Success, ts(2)).is_none());
            assert_eq!(w.result(), ProbeResult::Failure);

            let change = w.reset("newCont_ID", ts(3));
            assert_eq!(change.container_id, "newCont_ID");
            assert_eq!(change.result, t.initial_result());
            assert!(w.due(started).is_some());
            w.observe(ProbeResult::Success, ts(4));
            assert_eq!(w.result(), ProbeResult::Success);
            assert_eq!(w.on_hold(), t == ProbeType::Startup);
        }
    }

    /// TestResultRunOnLivenessCheckFailure.
    #[test]
    fn result_run_on_liveness_failure() {
        let mut w = worker(ProbeType::Liveness, &probe(1, 3));
        w.observe(ProbeResult::Success, ts(1));
        assert_eq!((w.result(), w.result_run()), (ProbeResult::Success, 1));
        w.observe(ProbeResult::Failure, ts(2));
        assert_eq!((w.result(), w.result_run()), (ProbeResult::Success, 1));
        w.observe(ProbeResult::Failure, ts(3));
        assert_eq!((w.result(), w.result_run()), (ProbeResult::Success, 2));
        w.observe(ProbeResult::Failure, ts(4));
        assert_eq!((w.result(), w.result_run()), (ProbeResult::Failure, 0));
    }

    /// TestLivenessProbeDisabledByStarted / TestStartupProbeDisabledByStarted.
    #[test]
    fn startup_gates_the_other_probes() {
        let l = worker(ProbeType::Liveness, &probe(1, 1));
        assert_eq!(l.due(false), None);
        assert!(l.due(true).is_some());
        let r = worker(ProbeType::Readiness, &probe(1, 1));
        assert_eq!(r.due(false), None);
        let s = worker(ProbeType::Startup, &probe(1, 2));
        assert!(s.due(false).is_some());
        assert_eq!(s.due(true), None);
    }

    #[test]
    fn not_running_and_deletion() {
        let mut r = worker(ProbeType::Readiness, &probe(1, 3));
        r.observe(ProbeResult::Success, ts(1));
        assert_eq!(
            r.container_not_running().unwrap().result,
            ProbeResult::Failure
        );
        assert!(r.pod_deleting().is_none());
        let mut l = worker(ProbeType::Liveness, &probe(1, 1));
        l.observe(ProbeResult::Failure, ts(1));
        assert_eq!(l.pod_deleting().unwrap().result, ProbeResult::Success);
        assert!(l.on_hold());
    }

    #[test]
    fn results_managers() {
        let mut r = ProbeResults::default();
        assert!(r.set(ProbeType::Readiness, "a", ProbeResult::Failure));
        assert!(!r.set(ProbeType::Readiness, "a", ProbeResult::Failure));
        assert!(r.apply(&ResultChange {
            probe_type: ProbeType::Readiness,
            container_id: "a".into(),
            result: ProbeResult::Success,
        }));
        assert_eq!(r.get(ProbeType::Readiness, "a"), Some(ProbeResult::Success));
        assert_eq!(r.get(ProbeType::Liveness, "a"), None);
        r.remove_container("a");
        assert_eq!(r.get(ProbeType::Readiness, "a"), None);
    }

    fn ports(named: &[(&str, i32)]) -> Container {
        Container {
            name: "c".into(),
            ports: Some(
                named
                    .iter()
                    .map(|(n, p)| ContainerPort {
                        name: Some(n.to_string()),
                        container_port: *p,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// util_test.go TestFindPortByName and TestResolveContainerPort.
    #[test]
    fn resolve_ports() {
        let c = ports(&[("foo", 8080), ("bar", 9000)]);
        assert_eq!(find_port_by_name(&c, "foo"), Some(8080));
        assert_eq!(find_port_by_name(&c, "http"), None);
        assert_eq!(
            resolve_container_port(&IntOrString::Int(443), &Container::default()),
            Ok(443)
        );
        assert_eq!(
            resolve_container_port(&IntOrString::Int(66666), &Container::default()),
            Err(ProberError::InvalidPort(66666))
        );
        assert_eq!(
            resolve_container_port(&IntOrString::String("foo".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_container_port(&IntOrString::String("foo".into()), &ports(&[("bar", 9000)])),
            Err(ProberError::PortNotFound("foo".into()))
        );
        assert_eq!(
            resolve_container_port(&IntOrString::String("8081".into()), &c),
            Ok(8081)
        );
        assert_eq!(
            ProberError::PortNotFound("foo".into()).to_string(),
            r#"strconv.Atoi: parsing "foo": invalid syntax"#
        );
    }

    /// request_test.go TestFormatURL.
    #[test]
    fn format_urls() {
        for (scheme, host, port, path, want) in [
            ("http", "localhost", 93, "", "http://localhost:93"),
            (
                "https",
                "localhost",
                93,
                "/path",
                "https://localhost:93/path",
            ),
            ("http", "localhost", 93, "?foo", "http://localhost:93?foo"),
            (
                "https",
                "localhost",
                93,
                "/path?bar",
                "https://localhost:93/path?bar",
            ),
            (
                "http",
                "fd00::1",
                80,
                "healthz",
                "http://[fd00::1]:80/healthz",
            ),
        ] {
            assert_eq!(format_url(scheme, host, port, path), want);
        }
    }

    /// request_test.go Test_v1HeaderToHTTPHeader / TestHeaderConversion.
    #[test]
    fn header_conversion() {
        let h = |n: &str, v: &str| HTTPHeader {
            name: n.into(),
            value: v.into(),
        };
        let got = v1_header_to_http_header(&[
            h("accept", "application/json"),
            h("Accept", "*/*"),
            h("pragma", "no-cache"),
            h("X-forwarded-for", "username"),
            h("HOST", "example.com"),
            h("FOO-bAR", "value"),
        ]);
        let want: BTreeMap<String, Vec<String>> = [
            ("Accept", vec!["application/json", "*/*"]),
            ("Pragma", vec!["no-cache"]),
            ("X-Forwarded-For", vec!["username"]),
            ("Host", vec!["example.com"]),
            ("Foo-Bar", vec!["value"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn resolve_http_tcp_exec() {
        let c = Container {
            env: Some(vec![EnvVar {
                name: "FOO".into(),
                value: Some("bar".into()),
                ..Default::default()
            }]),
            ..ports(&[("http", 8080)])
        };
        let http = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("/healthz".into()),
                scheme: Some("HTTPS".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "host".into(),
                    value: "example.com".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ProbeAction::HttpGet(t) =
            resolve_probe_action(&http, &c, "10.0.0.5", "p_ns(u)").unwrap()
        else {
            panic!("not an http target");
        };
        assert_eq!(t.url, "https://10.0.0.5:8080/healthz");
        assert_eq!(t.host_header.as_deref(), Some("example.com"));
        assert_eq!(t.headers["Accept"], vec!["*/*".to_string()]);
        assert_eq!(t.headers["User-Agent"], vec![PROBE_USER_AGENT.to_string()]);

        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(5432),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            resolve_probe_action(&tcp, &c, "10.0.0.5", "p").unwrap(),
            ProbeAction::TcpSocket {
                host: "10.0.0.5".into(),
                port: 5432
            }
        );

        let exec = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["echo".into(), "$(FOO)".into(), "$(NOPE)".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            resolve_probe_action(&exec, &c, "", "p").unwrap(),
            ProbeAction::Exec {
                command: vec!["echo".into(), "bar".into(), "$(NOPE)".into()]
            }
        );
        assert_eq!(
            resolve_probe_action(&Probe::default(), &c, "", "p_ns(u)")
                .unwrap_err()
                .to_string(),
            "missing probe handler for p_ns(u):c"
        );
    }

    /// http_test.go: 2xx Success, 3xx Warning (Success), else Failure.
    #[test]
    fn http_success_rule() {
        assert_eq!(http_probe_outcome(200, "ok"), HttpProbeOutcome::Success);
        assert_eq!(http_probe_outcome(399, "").result(), ProbeResult::Success);
        assert!(matches!(
            http_probe_outcome(302, "x"),
            HttpProbeOutcome::Warning(_)
        ));
        assert_eq!(
            http_probe_outcome(400, ""),
            HttpProbeOutcome::Failure("HTTP probe failed with statuscode: 400".into())
        );
        assert_eq!(http_probe_outcome(500, "").result(), ProbeResult::Failure);
        assert_eq!(http_probe_outcome(199, "").result(), ProbeResult::Failure);
        assert_eq!(exec_probe_result(0), ProbeResult::Success);
        assert_eq!(exec_probe_result(1), ProbeResult::Failure);
    }

    /// grpc.go: SERVING is the only Success; every other reply is a Failure with
    /// upstream's message.
    #[test]
    fn grpc_success_rule_and_messages() {
        let t = Duration::from_secs(1);
        let addr = "10.244.0.5:9090";
        let cases = [
            (
                GrpcReply::Status("SERVING".into()),
                ProbeResult::Success,
                "service healthy",
            ),
            (
                GrpcReply::Status("NOT_SERVING".into()),
                ProbeResult::Failure,
                r#"service unhealthy (responded with "NOT_SERVING")"#,
            ),
            (
                GrpcReply::Status("SERVICE_UNKNOWN".into()),
                ProbeResult::Failure,
                r#"service unhealthy (responded with "SERVICE_UNKNOWN")"#,
            ),
            (
                GrpcReply::ConnectTimeout {
                    cause: "context deadline exceeded".into(),
                },
                ProbeResult::Failure,
                r#"timeout: failed to connect service "10.244.0.5:9090" within 1s: context deadline exceeded"#,
            ),
            (
                GrpcReply::ConnectFailed {
                    cause: "connection refused".into(),
                },
                ProbeResult::Failure,
                r#"error: failed to connect service at "10.244.0.5:9090": connection refused"#,
            ),
            (
                GrpcReply::Unimplemented {
                    message: "unknown service grpc.health.v1.Health".into(),
                },
                ProbeResult::Failure,
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health",
            ),
            (
                GrpcReply::RpcTimeout,
                ProbeResult::Failure,
                "timeout: health rpc did not complete within 1s",
            ),
            (
                GrpcReply::RpcFailed {
                    cause: "status: Internal".into(),
                },
                ProbeResult::Failure,
                "error: health rpc probe failed: status: Internal",
            ),
        ];
        for (reply, result, output) in cases {
            assert_eq!(
                grpc_probe_outcome(addr, t, &reply),
                (result, output.to_string()),
                "{reply:?}"
            );
        }
    }
}
