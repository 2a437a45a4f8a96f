//! Pods run by a real `rekube-node-agent run` process (as root): the apiserver's Pods,
//! bound to the agent's node, become Linux containers on this machine. Checked through
//! the API (statuses, conditions, restart counts), the containers' CRI logs, the
//! containers' cgroups, and, after every pod is deleted, that no mount, cgroup or
//! process of theirs is left.
//!
//! Skipped (with a message) when not root or without Debian's busybox-static.
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rekube_crds::Pod;
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::{TestNamespace, rbac, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

/// A busybox pod on the agent's node; `spec` is merged over the defaults.
fn pod(name: &str, node: &str, spec: Value) -> Pod {
    let mut base = json!({
        "nodeName": node,
        "terminationGracePeriodSeconds": 2,
        "restartPolicy": "Never",
    });
    base.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": base,
    }))
    .unwrap()
}

fn container(name: &str, script: &str) -> Value {
    json!({"name": name, "image": "busybox:1.36", "imagePullPolicy": "Never",
        "command": ["sh", "-c", script]})
}

fn statuses(p: &Pod) -> Vec<ContainerStatus> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
}

fn status_of(p: &Pod, name: &str) -> Option<ContainerStatus> {
    let s = p.status.as_ref()?;
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .chain(s.ephemeral_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .cloned()
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn condition(p: &Pod, t: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
}

async fn wait_for_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    check: impl Fn(&Pod) -> bool,
) -> Pod {
    wait_until(&format!("pod {name}: {what}"), T, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        if check(&p) {
            Ok(p)
        } else {
            Err(format!("{:?}", p.status))
        }
    })
    .await
}

fn ts(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Timestamp {
    t.0
}

/// Init containers in order, exit codes and reasons, OOMKilled from a memory limit, the
/// CPU quota in the container's cgroup, the environment from a ConfigMap and a Secret
/// (and the config error for a missing one), then deletion without leftovers.
#[tokio::test]
async fn pods_run_as_real_containers() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("agent-pods").await;
    let agent = AgentProcess::start_real(
        &ns,
        "n",
        &[
            "--pod-max-pids",
            "128",
            "--container-log-max-size",
            "1Ki",
            "--container-log-max-files",
            "2",
        ],
    );
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cm"},
        "data": {"greeting": "hello from a configmap", "LEVEL": "debug"}}))
    .unwrap();
    Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
        .create(&pp, &cm)
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "sec"},
        "stringData": {"TOKEN": "s3cret"}}))
    .unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&pp, &secret)
        .await
        .unwrap();

    let specs = [
        pod(
            "init-order",
            &node,
            json!({
                "initContainers": [container("first", "echo first; sleep 1"),
                                   container("second", "echo second")],
                "containers": [container("main", "echo main")],
            }),
        ),
        pod(
            "exit-3",
            &node,
            json!({"containers": [container("c", "echo failing >&2; exit 3")]}),
        ),
        pod(
            "oom",
            &node,
            json!({"containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "tail /dev/zero"],
                "resources": {"limits": {"memory": "24Mi"}}}]}),
        ),
        pod(
            "cpu",
            &node,
            json!({"containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "250m", "memory": "32Mi"}}}]}),
        ),
        pod(
            "env",
            &node,
            json!({"containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo \"greeting=$GREETING level=$LEVEL token=$TOKEN pod=$POD cpu-limit=$CPU_LIMIT\""],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "greeting"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
                "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "sec"}}]}]}),
        ),
        // 100 lines of 100 bytes through a 1Ki log with 2 files kept.
        pod(
            "chatty",
            &node,
            json!({"containers": [container("c",
                "for i in $(seq 1 100); do printf 'line-%03d %090d\\n' $i 0; done")]}),
        ),
        // A sidecar: a restartable init container that keeps running beside the app.
        pod(
            "sidecar",
            &node,
            json!({
                "initContainers": [{"name": "side", "image": "busybox:1.36", "imagePullPolicy": "Never",
                    "restartPolicy": "Always", "command": ["sleep", "3600"]}],
                "containers": [container("main", "sleep 3600")],
            }),
        ),
        // An image that is not there with pull policy Never, and one whose registry (a
        // closed port on loopback) fails the pull.
        pod(
            "never-pull",
            &node,
            json!({"containers": [{"name": "c", "image": "rekube-absent:1", "imagePullPolicy": "Never"}]}),
        ),
        pod(
            "bad-registry",
            &node,
            json!({"containers": [{"name": "c", "image": "127.0.0.1:9/absent:1", "imagePullPolicy": "IfNotPresent"}]}),
        ),
        pod(
            "missing-cm",
            &node,
            json!({"containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["true"],
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]}]}),
        ),
        // runAsNonRoot: busybox's image has no USER (root), so the container is refused;
        // with a non-root runAsUser it runs.
        pod(
            "non-root",
            &node,
            json!({"containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["true"], "securityContext": {"runAsNonRoot": true}}]}),
        ),
        pod(
            "non-root-ok",
            &node,
            json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
                "containers": [container("c", "id -u")]}),
        ),
    ];
    for p in &specs {
        pods.create(&pp, p).await.unwrap();
    }

    // Init containers ran one after the other, before the main one.
    let p = wait_for_pod(&pods, "init-order", "Succeeded", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let term = |name: &str| {
        status_of(&p, name)
            .and_then(|s| s.state?.terminated)
            .unwrap_or_else(|| panic!("{name} not terminated: {:?}", p.status))
    };
    let (first, second, main) = (term("first"), term("second"), term("main"));
    assert!(ts(second.started_at.as_ref().unwrap()) >= ts(first.finished_at.as_ref().unwrap()));
    assert!(ts(main.started_at.as_ref().unwrap()) >= ts(second.finished_at.as_ref().unwrap()));
    for t in [&first, &second, &main] {
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    }
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("True"));
    let uid = p.metadata.uid.clone().unwrap();
    assert!(
        agent
            .container_log(&ns.name, "init-order", &uid, "first", 0)
            .contains(" stdout F first")
    );

    // A failing container: exit code, reason Error, phase Failed, stderr in the log.
    let p = wait_for_pod(&pods, "exit-3", "Failed", |p| phase(p) == "Failed").await;
    let t = statuses(&p)[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    let log = agent.container_log(&ns.name, "exit-3", &p.metadata.uid.clone().unwrap(), "c", 0);
    assert!(log.contains(" stderr F failing"), "{log:?}");

    // Over its memory limit: OOMKilled, detected from the cgroup.
    let p = wait_for_pod(&pods, "oom", "Failed", |p| phase(p) == "Failed").await;
    let t = statuses(&p)[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));

    // The CPU limit is the container cgroup's CFS quota (100 ms period), the request its
    // shares; the memory limit its memory.limit_in_bytes (cgroup v1 on this host).
    let p = wait_for_pod(&pods, "cpu", "Running", |p| phase(p) == "Running").await;
    let id = statuses(&p)[0]
        .container_id
        .clone()
        .unwrap()
        .trim_start_matches("rekube://")
        .to_string();
    let cgroup = find_cgroup_dir("cpu", &id).expect("the container's cpu cgroup");
    let read = |f: &str| {
        std::fs::read_to_string(cgroup.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpu.cfs_quota_us"), "25000");
    assert_eq!(read("cpu.shares"), "102");
    let memory = find_cgroup_dir("memory", &id).expect("the container's memory cgroup");
    assert_eq!(
        std::fs::read_to_string(memory.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        (32 << 20).to_string()
    );
    // --pod-max-pids is the pod cgroup's pids.max.
    let pod_cgroup = find_cgroup_dir("pids", &format!("pod{}", p.metadata.uid.clone().unwrap()))
        .expect("the pod's pids cgroup");
    assert_eq!(
        std::fs::read_to_string(pod_cgroup.join("pids.max"))
            .unwrap()
            .trim(),
        "128"
    );

    // The environment from the ConfigMap, the Secret and the downward API.
    let p = wait_for_pod(&pods, "env", "Succeeded", |p| phase(p) == "Succeeded").await;
    let log = agent.container_log(&ns.name, "env", &p.metadata.uid.clone().unwrap(), "c", 0);
    // limits.cpu without a limit is the node's allocatable CPU, rounded up to cores.
    let nodes: Api<rekube_crds::Node> = Api::all(ns.client.clone());
    let allocatable_cpu = nodes
        .get(&node)
        .await
        .unwrap()
        .status
        .unwrap()
        .allocatable
        .unwrap()["cpu"]
        .0
        .clone();
    let allocatable_cores = match allocatable_cpu.strip_suffix('m') {
        Some(m) => m.parse::<u64>().unwrap().div_ceil(1000),
        None => allocatable_cpu.parse::<u64>().unwrap(),
    };
    assert!(
        log.contains(&format!(
            "greeting=hello from a configmap level=debug token=s3cret pod=env cpu-limit={allocatable_cores}"
        )),
        "{log:?}"
    );

    // Log rotation: the live file stays near 1Ki and one rotated file is kept.
    let p = wait_for_pod(&pods, "chatty", "Succeeded", |p| phase(p) == "Succeeded").await;
    let dir = agent
        .pod_log_dir(&ns.name, "chatty", &p.metadata.uid.clone().unwrap())
        .join("c");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0], "0.log");
    assert!(files[1].starts_with("0.log."), "{files:?}");
    let live = std::fs::read_to_string(dir.join("0.log")).unwrap();
    assert!(live.len() <= 1024, "{} bytes", live.len());
    assert!(live.contains(" stdout F line-100 "), "{live:?}");
    assert!(!live.contains(" stdout F line-001 "), "{live:?}");

    // The sidecar runs beside the app, started, and the pod is initialized.
    let p = wait_for_pod(&pods, "sidecar", "Running with its sidecar", |p| {
        phase(p) == "Running"
            && status_of(p, "main").is_some_and(|s| s.state.and_then(|s| s.running).is_some())
    })
    .await;
    let side = status_of(&p, "side").expect("the sidecar's status");
    assert!(
        side.state.and_then(|s| s.running).is_some(),
        "{:?}",
        p.status
    );
    assert_eq!(side.started, Some(true));
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("True"));

    // Image reasons: ErrImageNeverPull; ImagePullBackOff after the failed pull, whose
    // message carries the pull's ErrImagePull (Kubernetes 1.32+).
    let waiting = |p: &Pod| {
        statuses(p)
            .first()
            .and_then(|s| s.state.clone()?.waiting)
            .map(|w| (w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
    };
    let p = wait_for_pod(&pods, "never-pull", "ErrImageNeverPull", |p| {
        waiting(p).is_some_and(|w| w.0 == "ErrImageNeverPull")
    })
    .await;
    assert_eq!(
        waiting(&p).unwrap().1,
        r#"Container image "rekube-absent:1" is not present with pull policy of Never"#
    );
    let p = wait_for_pod(&pods, "bad-registry", "ImagePullBackOff", |p| {
        waiting(p).is_some_and(|w| w.0 == "ImagePullBackOff")
    })
    .await;
    let message = waiting(&p).unwrap().1;
    assert!(
        message.starts_with(
            r#"Back-off pulling image "127.0.0.1:9/absent:1": ErrImagePull: failed to pull and unpack image"#
        ),
        "{message}"
    );

    // A missing ConfigMap: the container waits with upstream's config error.
    let p = wait_for_pod(&pods, "missing-cm", "CreateContainerConfigError", |p| {
        statuses(p)
            .first()
            .and_then(|s| s.state.clone()?.waiting?.reason)
            .as_deref()
            == Some("CreateContainerConfigError")
    })
    .await;
    let w = statuses(&p)[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(w.message.as_deref(), Some("configmap \"absent\" not found"));
    assert_eq!(phase(&p), "Pending");

    // runAsNonRoot: upstream's message as the waiting message and a Failed event.
    let p = wait_for_pod(&pods, "non-root", "CreateContainerConfigError", |p| {
        statuses(p)
            .first()
            .and_then(|s| s.state.clone()?.waiting?.reason)
            .as_deref()
            == Some("CreateContainerConfigError")
    })
    .await;
    let message = format!(
        "container has runAsNonRoot and image will run as root (pod: \"non-root_{}({})\", container: c)",
        ns.name,
        p.metadata.uid.as_deref().unwrap()
    );
    let w = statuses(&p)[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(w.message.as_deref(), Some(message.as_str()));
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ns.client.clone(), &ns.name);
    let note = format!("Error: {message}");
    wait_until("the non-root pod's Failed event", T, || async {
        let got = kubelet_events(&events).await?;
        if got.iter().any(|e| {
            e.name == "non-root"
                && e.field_path == "spec.containers{c}"
                && e.reason == "Failed"
                && e.note == note
        }) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let p = wait_for_pod(&pods, "non-root-ok", "Succeeded", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    assert_eq!(status_of(&p, "c").unwrap().restart_count, 0);

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
}

/// The cgroup directory of hierarchy `controller` whose name is the container ID.
fn find_cgroup_dir(controller: &str, id: &str) -> Option<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, id: &str, depth: usize) -> Option<std::path::PathBuf> {
        if depth > 6 {
            return None;
        }
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let path = e.path();
            if !path.is_dir() {
                continue;
            }
            if e.file_name().to_string_lossy() == id {
                return Some(path);
            }
            if let Some(found) = walk(&path, id, depth + 1) {
                return Some(found);
            }
        }
        None
    }
    walk(
        &std::path::Path::new("/sys/fs/cgroup").join(controller),
        id,
        0,
    )
}

/// Readiness (httpGet and exec) flipping Ready, a liveness failure restarting the
/// container, a startup probe gating the others, PostStart, PreStop before SIGTERM,
/// CrashLoopBackOff's 10 s then 20 s, and an ephemeral container added to a running
/// pod.
#[tokio::test]
async fn probes_hooks_backoff_and_ephemeral_containers() {
    if cannot_run_containers() {
        return;
    }
    // The node's address is loopback, so a hostNetwork pod's grpc probe reaches the
    // test's own health server; host namespaces need Pod Security's privileged level.
    let ns = TestNamespace::privileged("agent-probes").await;
    let agent = AgentProcess::start_real(&ns, "n", &["--node-ip", "127.0.0.1"]);
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let (grpc_port, grpc_health) = grpc_health_server().await;

    let specs = [
        // Ready once /www/ready exists (httpGet through httpd in the pod), not Ready once
        // it is removed; a tcpSocket liveness probe on the same port keeps passing.
        pod(
            "ready",
            &node,
            json!({"restartPolicy": "Always", "containers": [{
                "name": "web", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c",
                    "mkdir -p /www && httpd -p 8080 -h /www && sleep 3 && touch /www/ready && sleep 4 && rm /www/ready && sleep 3600"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
                // Probed from 2 s on, once httpd listens: an earlier failure would be folded
                // into the same Unhealthy event series as the readiness failures below.
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "initialDelaySeconds": 2}}]}),
        ),
        // An exec liveness probe that starts failing after 3 s: the container restarts.
        // Its startup probe passes after 2 s; until then the pod is not started. The
        // container ignores SIGTERM: the probe's 1 s grace, not the pod's 60 s, applies.
        pod(
            "liveness",
            &node,
            json!({"restartPolicy": "Always", "terminationGracePeriodSeconds": 60, "containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap '' TERM; touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 3600"],
                "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1},
                "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 2,
                    "terminationGracePeriodSeconds": 1}}]}),
        ),
        // A tcpSocket readiness probe on a closed port: never Ready.
        pod(
            "tcp-closed",
            &node,
            json!({"containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "readinessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1}}]}),
        ),
        // PreStop as an httpGet to a CGI script of busybox httpd in the pod, which writes
        // to the container's stdout; then SIGTERM's trap.
        pod(
            "http-hooks",
            &node,
            json!({"terminationGracePeriodSeconds": 10, "containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", concat!(
                    "mkdir -p /www/cgi-bin && ",
                    "printf '#!/bin/sh\\necho pre-stop-http > /proc/1/fd/1\\necho Content-Type: text/plain\\necho\\necho ok\\n' > /www/cgi-bin/pre-stop && ",
                    "chmod +x /www/cgi-bin/pre-stop && httpd -p 8081 -h /www && ",
                    "trap 'echo got-sigterm; exit 0' TERM; echo started; while true; do sleep 0.2; done")],
                "lifecycle": {"preStop": {"httpGet": {"path": "/cgi-bin/pre-stop", "port": 8081}}}}]}),
        ),
        // PostStart writes to the container's stdout; PreStop too, then SIGTERM's trap.
        pod(
            "hooks",
            &node,
            json!({"terminationGracePeriodSeconds": 10, "containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'echo got-sigterm; exit 0' TERM; echo started; while true; do sleep 0.2; done"],
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo post-start > /proc/1/fd/1"]}},
                    "preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop > /proc/1/fd/1"]}}}}]}),
        ),
        // A failing PostStart hook kills the container.
        pod(
            "bad-hook",
            &node,
            json!({"containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "lifecycle": {"postStart": {"httpGet": {"path": "/", "port": 9}}}}]}),
        ),
        pod(
            "crash",
            &node,
            json!({"restartPolicy": "Always", "containers": [container("c", "exit 1")]}),
        ),
        pod(
            "debug-me",
            &node,
            json!({"containers": [container("app", "sleep 3600")]}),
        ),
        // Ready only while the test's grpc health server says "svc" is SERVING.
        pod(
            "grpc",
            &node,
            json!({"hostNetwork": true, "containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "readinessProbe": {"grpc": {"port": grpc_port, "service": "svc"}, "periodSeconds": 1, "failureThreshold": 1}}]}),
        ),
    ];
    for p in &specs {
        pods.create(&pp, p).await.unwrap();
    }

    // CrashLoopBackOff is watched from the start (its first restart is immediate).
    let crash_watch = tokio::spawn({
        let pods = pods.clone();
        async move {
            // Each instance's start, by container ID, from the state and lastState.
            let mut starts: BTreeMap<String, Timestamp> = BTreeMap::new();
            let mut saw_backoff = None;
            let deadline = std::time::Instant::now() + T;
            while starts.len() < 4 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "three restarts of the crashing container: {starts:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                let p = pods.get("crash").await.unwrap();
                let Some(s) = statuses(&p).into_iter().next() else {
                    continue;
                };
                let state = s.state.clone().unwrap_or_default();
                let current = state
                    .terminated
                    .as_ref()
                    .and_then(|t| t.started_at.clone())
                    .or_else(|| state.running.as_ref().and_then(|r| r.started_at.clone()));
                if let (Some(id), Some(t)) = (s.container_id.clone(), current) {
                    starts.entry(id).or_insert(ts(&t));
                }
                if let Some(last) = s.last_state.as_ref().and_then(|l| l.terminated.as_ref())
                    && let (Some(id), Some(t)) =
                        (last.container_id.clone(), last.started_at.clone())
                {
                    starts.entry(id).or_insert(ts(&t));
                }
                if let Some(w) = state.waiting.as_ref()
                    && w.reason.as_deref() == Some("CrashLoopBackOff")
                    && saw_backoff.is_none()
                {
                    saw_backoff = w.message.clone();
                }
            }
            (starts, saw_backoff)
        }
    });

    // Readiness: False, then True, then False again, from the httpGet probe.
    let ready = |want: &'static str| {
        move |p: &Pod| condition(p, "Ready").as_deref() == Some(want) && phase(p) == "Running"
    };
    wait_for_pod(&pods, "ready", "Running, not Ready", ready("False")).await;
    let p = wait_for_pod(&pods, "ready", "Ready", ready("True")).await;
    assert!(statuses(&p)[0].ready);
    assert_eq!(condition(&p, "ContainersReady").as_deref(), Some("True"));
    wait_for_pod(&pods, "ready", "not Ready again", ready("False")).await;
    let p = pods.get("ready").await.unwrap();
    assert_eq!(
        statuses(&p)[0].restart_count,
        0,
        "liveness (tcp) kept passing"
    );

    // grpc: NOT_SERVING keeps the pod not Ready; SERVING makes it Ready.
    wait_for_pod(&pods, "grpc", "Running, not Ready", ready("False")).await;
    grpc_health
        .set_service_status("svc", tonic_health::ServingStatus::Serving)
        .await;
    wait_for_pod(&pods, "grpc", "Ready from its grpc probe", ready("True")).await;

    // Liveness: restarted after /tmp/alive went away.
    let p = wait_for_pod(&pods, "liveness", "restarted by its liveness probe", |p| {
        statuses(p).first().is_some_and(|s| s.restart_count >= 1)
    })
    .await;
    let last = statuses(&p)[0]
        .last_state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(last.exit_code, 137, "killed: {last:?}");
    // Ran ~5 s until the probe failed twice, then 1 s of grace (60 s with the pod's).
    let ran = ts(last.finished_at.as_ref().unwrap())
        .duration_since(ts(last.started_at.as_ref().unwrap()))
        .as_secs_f64();
    assert!(
        ran < 20.0,
        "killed after {ran} s: the probe's grace applies"
    );

    // The closed port keeps "tcp-closed" not Ready (its Unhealthy event is checked below).
    let p = wait_for_pod(&pods, "tcp-closed", "Running", |p| phase(p) == "Running").await;
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));

    // Hooks: post-start in the log while running; pre-stop before SIGTERM on deletion.
    let p = wait_for_pod(&pods, "hooks", "Running", |p| phase(p) == "Running").await;
    let uid = p.metadata.uid.clone().unwrap();
    wait_for_log(&agent, &ns.name, "hooks", &uid, " stdout F post-start").await;
    // Kept open: the agent removes the pod's logs with the pod.
    let mut hooks_log = agent.open_container_log(&ns.name, "hooks", &uid, "c", 0);

    // The failing PostStart: the container is killed, restartPolicy Never ends the pod.
    let p = wait_for_pod(&pods, "bad-hook", "Failed", |p| phase(p) == "Failed").await;
    assert!(
        statuses(&p)[0].state.clone().unwrap().terminated.is_some(),
        "{:?}",
        p.status
    );

    // CrashLoopBackOff: restarts at once, then after 10 s, then after 20 s.
    let (starts, saw_backoff) = crash_watch.await.unwrap();
    let mut t: Vec<Timestamp> = starts.values().copied().collect();
    t.sort();
    let gap = |i: usize| t[i + 1].duration_since(t[i]).as_secs_f64();
    // Start times have a resolution of one second. The first restart is immediate, so a
    // busy machine's poll may miss an instance: look for the 10 s then 20 s back-offs
    // among consecutive restarts.
    let doubled = (0..t.len() - 2)
        .any(|i| (9.0..14.0).contains(&gap(i)) && (19.0..24.0).contains(&gap(i + 1)));
    assert!(doubled, "restarts after 10 s then 20 s: {t:?}");
    let message = saw_backoff.expect("a CrashLoopBackOff waiting reason");
    assert!(
        message.starts_with("back-off 10s restarting failed container=c pod=crash_")
            || message.starts_with("back-off 20s restarting failed container=c pod=crash_"),
        "{message}"
    );

    // An ephemeral container added to the running pod runs once, beside the app.
    wait_for_pod(&pods, "debug-me", "Running", |p| phase(p) == "Running").await;
    let patch = json!({"spec": {"ephemeralContainers": [{
        "name": "debugger", "image": "busybox:1.36", "imagePullPolicy": "Never",
        "command": ["sh", "-c", "echo debugging $(hostname)"]}]}});
    pods.patch("debug-me", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let p = wait_for_pod(&pods, "debug-me", "the ephemeral container ran", |p| {
        status_of(p, "debugger")
            .and_then(|s| s.state?.terminated)
            .is_some()
    })
    .await;
    let t = status_of(&p, "debugger")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 0);
    assert_eq!(phase(&p), "Running", "the pod keeps running");
    let log = agent.container_log(
        &ns.name,
        "debug-me",
        &p.metadata.uid.clone().unwrap(),
        "debugger",
        0,
    );
    assert!(log.contains(" stdout F debugging debug-me"), "{log:?}");

    // The kubelet's events for all of the above, each about its container.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ns.client.clone(), &ns.name);
    let want: [(&str, &str, &str, &str); 7] = [
        (
            "tcp-closed",
            "spec.containers{c}",
            "Unhealthy",
            "Readiness probe failed: dial tcp ",
        ),
        (
            "ready",
            "spec.containers{web}",
            "Unhealthy",
            "Readiness probe failed: ",
        ),
        (
            "grpc",
            "spec.containers{c}",
            "Unhealthy",
            r#"Readiness probe failed: service unhealthy (responded with "NOT_SERVING")"#,
        ),
        (
            "liveness",
            "spec.containers{c}",
            "Killing",
            "Container c failed liveness probe, will be restarted",
        ),
        ("bad-hook", "spec.containers{c}", "FailedPostStartHook", ""),
        (
            "crash",
            "spec.containers{c}",
            "BackOff",
            "Back-off restarting failed container c in pod crash_",
        ),
        (
            "debug-me",
            "spec.ephemeralContainers{debugger}",
            "Started",
            "Started container debugger",
        ),
    ];
    wait_until("the kubelet's events", T, || async {
        let got = kubelet_events(&events).await?;
        let missing: Vec<_> = want
            .iter()
            .filter(|w| {
                !got.iter().any(|g| {
                    (g.name.as_str(), g.field_path.as_str(), g.reason.as_str()) == (w.0, w.1, w.2)
                        && g.note.starts_with(w.3)
                })
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?} in {got:?}"))
        }
    })
    .await;

    // The tcp probe's failure reads as upstream's (Go's net error).
    let got = kubelet_events(&events).await.unwrap();
    let tcp = got
        .iter()
        .find(|e| e.name == "tcp-closed" && e.reason == "Unhealthy")
        .unwrap();
    assert!(
        tcp.note.ends_with(":9: connect: connection refused"),
        "{}",
        tcp.note
    );

    // Graceful deletion of "hooks" (exec PreStop) and "http-hooks" (httpGet PreStop):
    // PreStop's line, then the SIGTERM trap's, then gone.
    let p = wait_for_pod(&pods, "http-hooks", "Running", |p| phase(p) == "Running").await;
    let http_uid = p.metadata.uid.clone().unwrap();
    wait_for_log(
        &agent,
        &ns.name,
        "http-hooks",
        &http_uid,
        " stdout F started",
    )
    .await;
    let mut http_hooks_log = agent.open_container_log(&ns.name, "http-hooks", &http_uid, "c", 0);
    for name in ["hooks", "http-hooks"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["hooks", "http-hooks"] {
        wait_until("the hooks pods gone", T, || async {
            match pods.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".into()),
            }
        })
        .await;
    }
    assert!(
        !agent.pod_log_dir(&ns.name, "hooks", &uid).exists(),
        "the pod's logs go with it"
    );
    for (log_file, pre_stop) in [
        (&mut hooks_log, " stdout F pre-stop"),
        (&mut http_hooks_log, " stdout F pre-stop-http"),
    ] {
        let mut log = String::new();
        std::io::Read::read_to_string(log_file, &mut log).unwrap();
        let pre = log.find(pre_stop).unwrap_or_else(|| panic!("{log}"));
        let term = log
            .find(" stdout F got-sigterm")
            .unwrap_or_else(|| panic!("{log}"));
        assert!(pre < term, "PreStop before SIGTERM: {log}");
    }

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
}

/// An event from the kubelet, flattened: what it is about and what it says.
#[derive(Debug)]
struct KubeletEvent {
    kind: String,
    name: String,
    field_path: String,
    reason: String,
    note: String,
}

/// The kubelet's events (reportingController `kubelet`) in `events`' namespace.
async fn kubelet_events(
    events: &Api<k8s_openapi::api::events::v1::Event>,
) -> Result<Vec<KubeletEvent>, String> {
    Ok(events
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("kubelet"))
        .map(|e| {
            let r = e.regarding.unwrap_or_default();
            KubeletEvent {
                kind: r.kind.unwrap_or_default(),
                name: r.name.unwrap_or_default(),
                field_path: r.field_path.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                note: e.note.unwrap_or_default(),
            }
        })
        .collect())
}

/// Waits until container "c" (its first instance) of `pod` has logged `needle`.
async fn wait_for_log(agent: &AgentProcess, namespace: &str, pod: &str, uid: &str, needle: &str) {
    wait_until(&format!("{needle:?} in {pod}'s log"), T, || async {
        let log = agent.container_log(namespace, pod, uid, "c", 0);
        if log.contains(needle) {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
}

/// A grpc health server on loopback (tonic-health) whose service "svc" starts
/// NOT_SERVING; the reporter changes it.
async fn grpc_health_server() -> (u16, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("svc", tonic_health::ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (port, reporter)
}

/// The agent restarts while a pod runs: the previous run's container is removed (its
/// process, mounts and cgroup), the pod runs again with its restart count continued, and
/// deleting it afterwards leaves nothing.
#[tokio::test]
async fn an_agent_restart_leaves_no_orphans() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("agent-restart").await;
    let mut agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &pod(
            "survivor",
            &node,
            json!({"restartPolicy": "Always", "containers": [container("c", "echo up; cat /etc/hosts; sleep 3600")]}),
        ),
    )
    .await
    .unwrap();
    let p = wait_for_pod(&pods, "survivor", "Running", |p| phase(p) == "Running").await;
    let first = statuses(&p)[0].container_id.clone().unwrap();
    let first_id = first.trim_start_matches("rekube://").to_string();
    assert!(find_cgroup_dir("memory", &first_id).is_some());
    // No podCIDR yet: loopback only, no pod IP.
    assert_eq!(p.status.as_ref().unwrap().pod_ip, None);

    // Node IPAM's part (the agent reads it at registration and follows it).
    let nodes: Api<rekube_crds::Node> = Api::all(ns.client.clone());
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"podCIDR": "10.244.7.0/24"}})),
        )
        .await
        .unwrap();
    agent.restart();

    let p = wait_for_pod(
        &pods,
        "survivor",
        "running again, in a new container",
        |p| {
            statuses(p).first().is_some_and(|s| {
                s.container_id.as_deref() != Some(first.as_str())
                    && s.state.as_ref().is_some_and(|st| st.running.is_some())
            })
        },
    )
    .await;
    assert_eq!(statuses(&p)[0].restart_count, 1);
    // The new sandbox has an address from the podCIDR (the first after the gateway), in
    // the status and the pod's /etc/hosts.
    let status = p.status.clone().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("10.244.7.2"));
    assert_eq!(
        status
            .pod_ips
            .unwrap_or_default()
            .iter()
            .map(|i| i.ip.clone())
            .collect::<Vec<_>>(),
        ["10.244.7.2"]
    );
    // The previous instance is gone: no cgroup, no process, no mount of it.
    assert_eq!(find_cgroup_dir("memory", &first_id), None);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&first_id), "{first_id} still mounted");
    let log = agent.container_log(
        &ns.name,
        "survivor",
        &p.metadata.uid.clone().unwrap(),
        "c",
        1,
    );
    assert!(log.contains(" stdout F up"), "{log:?}");
    assert!(log.contains(" stdout F 10.244.7.2\tsurvivor"), "{log:?}");

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
}

/// The agent works under the least-privilege RBAC of the chart and its NodeRestriction
/// policy (its ServiceAccount's token, bound to its node): it registers, heartbeats, runs
/// a pod whose environment comes from a ConfigMap and a Secret (read as its node's own
/// ServiceAccount, which the node authorizer of rekube-controllers grants them), records
/// its events, and releases it; nothing is forbidden, and nothing beyond that is granted:
/// its own ServiceAccount reads no Secret at all.
#[tokio::test]
async fn the_agent_works_with_the_charts_least_privilege_rbac() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("agent-rbac").await;
    let sa = format!("{}-node-agent", ns.name);
    let _rbac = rbac::apply_chart_rbac(&ns, "templates/node-agent-rbac.yaml", "node-agent");
    let _policy = rbac::apply_node_restriction(&ns);
    // The token names the agent's node, as its DaemonSet pod's does (the host's Node:
    // a plain API object here).
    ns.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}))
        .await
        .unwrap();
    let node = ns.cluster_name("n");
    let token = rbac::service_account_token(&ns, &sa, Some(("Node", &node)));
    let kubeconfig = rbac::token_kubeconfig(&ns, &sa, &token);
    rbac::node_restriction_in_force(&rbac::token_client(&ns, "probe", &token).await, &node).await;
    // The node authorizer (with the test's admin credentials: its own RBAC is
    // e2e/tests/node_authorizer.rs's).
    let _controllers = ControllerProcess::start(&ns.name, &["--controllers=node-authorizer"]);
    let agent = AgentProcess::start_real_with_env(
        &ns,
        "n",
        &["--node-identity-namespace", &ns.name],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let pp = PostParams::default();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"A": "from-cm"}}))
            .unwrap();
    Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
        .create(&pp, &cm)
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "sec"}, "stringData": {"B": "from-secret"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&pp, &secret)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(
        &pp,
        &pod(
            "env",
            &agent.node_name,
            json!({"containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo $A $B"],
                "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "sec"}}]}]}),
        ),
    )
    .await
    .unwrap();
    let p = wait_for_pod(&pods, "env", "Succeeded", |p| phase(p) == "Succeeded").await;
    let log = agent.container_log(&ns.name, "env", &p.metadata.uid.clone().unwrap(), "c", 0);
    assert!(log.contains(" stdout F from-cm from-secret"), "{log:?}");
    // Its node's "Starting kubelet." event (a cluster-scoped object's events go to
    // "default").
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ns.client.clone(), "default");
    wait_until("the node's Starting event", T, || async {
        let got = kubelet_events(&events).await?;
        got.iter()
            .any(|e| {
                (
                    e.kind.as_str(),
                    e.name.as_str(),
                    e.reason.as_str(),
                    e.note.as_str(),
                ) == (
                    "Node",
                    agent.node_name.as_str(),
                    "Starting",
                    "Starting kubelet.",
                )
            })
            .then_some(())
            .ok_or_else(|| format!("{got:?}"))
    })
    .await;
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    let logs = agent.logs();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the agent hit a permission it lacks:\n{logs}"
    );
    rbac::assert_can_i(
        &ns,
        &sa,
        &[
            ("create", "nodes.rekube.io", "yes"),
            ("watch", "nodes.rekube.io", "yes"),
            ("delete", "nodes.rekube.io", "no"),
            ("patch", "nodes.rekube.io/status", "yes"),
            ("watch", "pods.rekube.io", "yes"),
            ("create", "pods.rekube.io", "no"),
            ("delete", "pods.rekube.io", "no"),
            ("patch", "pods.rekube.io/status", "yes"),
            ("get", "secrets", "no"),
            ("get", "configmaps", "no"),
            ("list", "secrets", "no"),
            ("create", "serviceaccounts/token", "no"),
            ("create", "deployments.rekube.io", "no"),
            ("create", "pods", "no"),
            ("create", "events.events.k8s.io", "yes"),
            ("delete", "events.events.k8s.io", "no"),
        ],
    );
}
