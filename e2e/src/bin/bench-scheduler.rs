//! bench-scheduler: scheduling throughput of upstream kube-scheduler (core/v1 Pods onto kwok
//! Nodes) and of rekube's scheduler (rekube.io/v1 Pods onto rekube Nodes), one side after the
//! other on the same apiserver with the same client limits (QPS 50, burst 100:
//! kube-scheduler's defaults). Prints pods/s, wall time, API requests, peak RSS, CPU seconds
//! and the ratios rekube / upstream.
//!
//! Each side gets N nodes (cpu 32, memory 256Gi, pods 110, tainted
//! `kwok.x-k8s.io/node=fake:NoSchedule` as kwok's docs do) and, once its scheduler answers
//! /readyz, P pods (cpu 100m, memory 128Mi, tolerating that taint and requiring the
//! benchmark's node label, as kwok's docs' pods do). The clock runs from the first pod's
//! create request until a watch has seen `spec.nodeName` on all P pods.
//!
//! - upstream: kwok (built by `just build-bench-tools`) makes the core Nodes Ready and the
//!   bound pods Running; the apiserver's TaintNodesByCondition admission gives every new Node
//!   `node.kubernetes.io/not-ready:NoSchedule`, which the node lifecycle controller removes
//!   once the node is Ready; the local cluster does not run that controller, so the
//!   benchmark removes it itself when kwok has made the node Ready. kube-scheduler runs with
//!   a KubeSchedulerConfiguration (clientConnection qps/burst) and no leader election.
//! - rekube: rekube Nodes whose Ready condition the benchmark writes through /status, and
//!   `rekube-controllers --controllers scheduler`, scoped to the benchmark's namespace and
//!   nodes (`--namespace`, `--node-selector`).
//!
//! Everything it creates (namespaces, nodes, processes) goes at the end, also after a
//! failure, a time-out or Ctrl-C. `just bench-scheduler [nodes] [pods]` builds the tools and
//! runs this; `--only upstream|rekube|both` runs one side.
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use futures::future::join_all;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use rekube_e2e::procstat::{usage, which};
use serde_json::{Value, json};

/// The label on the benchmark's nodes (value `true`); the pods require it.
const NODE_LABEL: &str = "rekube.io/bench-scheduler";
/// kwok's node annotation, and the taint its docs put on fake nodes.
const KWOK_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

#[derive(Debug, Parser)]
#[command(
    name = "bench-scheduler",
    about = "Pods scheduled per second: kube-scheduler with kwok nodes vs rekube's scheduler"
)]
struct Args {
    /// Simulated nodes per side.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pending pods per side.
    #[arg(long, default_value_t = 3000)]
    pods: usize,
    /// Which side to run.
    #[arg(long, default_value = "both", value_parser = ["upstream", "rekube", "both"])]
    only: String,
    /// The kube-scheduler binary.
    #[arg(long, default_value = "kube-scheduler")]
    kube_scheduler: String,
    /// The kwok binary.
    #[arg(long, default_value = "kwok")]
    kwok: String,
    /// kwok's config (its Stages); default: kwok-stages.yaml beside the kwok binary, as
    /// e2e/scripts/build-kubernetes.sh writes it.
    #[arg(long)]
    kwok_config: Option<PathBuf>,
    /// The rekube-controllers binary.
    #[arg(long, default_value = "rekube-controllers")]
    rekube: String,
    /// The kubeconfig both schedulers and kwok use (the benchmark itself uses KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: String,
    /// Client requests per second of both schedulers (kube-scheduler's default).
    #[arg(long, default_value_t = 50)]
    qps: u32,
    /// Client burst of both schedulers (kube-scheduler's default).
    #[arg(long, default_value_t = 100)]
    burst: u32,
    /// Give up on a side when its pods are not all bound after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Where the processes' logs go.
    #[arg(long, default_value = "/tmp/rekube-bench-scheduler")]
    log_dir: PathBuf,
}

#[derive(Debug, Default)]
struct Measured {
    wall: Duration,
    pods_per_second: f64,
    api_requests: u64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Upstream,
    Rekube,
}

#[derive(Clone)]
struct Side {
    which: Which,
    name: &'static str,
    namespace: &'static str,
    api_version: &'static str,
    node: ApiResource,
    pod: ApiResource,
}

impl Side {
    fn nodes(&self, client: &Client) -> Api<DynamicObject> {
        Api::all_with(client.clone(), &self.node)
    }
    fn pods(&self, client: &Client) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), self.namespace, &self.pod)
    }
    fn node_name(&self, i: usize) -> String {
        format!("bench-{}-node-{i:03}", self.name)
    }
}

/// A child process that is killed when dropped: on every way out of a side's run
/// (success, error, panic, Ctrl-C aborting the task).
struct Proc {
    child: Child,
    what: &'static str,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command, log: PathBuf) -> anyhow::Result<Proc> {
        let log = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let child = cmd
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc { child, what })
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.what);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of a URL, empty when it does not answer 2xx.
fn fetch(url: &str) -> String {
    Command::new("curl")
        .args(["-fsSk", "--max-time", "5", url])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn sum_metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Polls `done` every 250 ms until it holds, `limit` passes (an error) or `proc` exits.
async fn wait_for<F, Fut>(
    what: &str,
    limit: Duration,
    mut proc: Option<&mut Proc>,
    mut done: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        if let Some(p) = proc.as_deref_mut() {
            p.check_alive()?;
        }
        if start.elapsed() > limit {
            bail!("{what}: timed out after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

fn ready(node: &DynamicObject) -> bool {
    node.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn kwok_taint() -> Value {
    json!({"key": KWOK_ANNOTATION.0, "value": KWOK_ANNOTATION.1, "effect": "NoSchedule"})
}

async fn create_nodes(client: &Client, side: &Side, n: usize) -> anyhow::Result<()> {
    let api = side.nodes(client);
    let resources = json!({"cpu": "32", "memory": "256Gi", "pods": "110"});
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let results = join_all(chunk.iter().map(|&i| {
            let api = api.clone();
            let name = side.node_name(i);
            let resources = resources.clone();
            async move {
                let mut node = json!({
                    "apiVersion": side.api_version, "kind": "Node",
                    "metadata": {"name": name, "labels": {
                        NODE_LABEL: "true", "type": "kwok", "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
                    "spec": {"taints": [kwok_taint()]},
                });
                if side.which == Which::Upstream {
                    // kwok manages the nodes with its annotation and keeps the capacity it
                    // finds in the status (a core Node's create keeps its status).
                    node["metadata"]["annotations"] = json!({KWOK_ANNOTATION.0: KWOK_ANNOTATION.1});
                    node["status"] = json!({"capacity": resources, "allocatable": resources});
                }
                let node: DynamicObject = serde_json::from_value(node)?;
                api.create(&PostParams::default(), &node)
                    .await
                    .with_context(|| format!("creating node {name}"))?;
                if side.which == Which::Rekube {
                    // A custom resource's create drops the status: write it through /status,
                    // Ready as a node agent would report it.
                    let now = jiff::Timestamp::now().to_string();
                    let status = json!({"status": {
                        "capacity": resources, "allocatable": resources,
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated by bench-scheduler",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .with_context(|| format!("status of node {name}"))?;
                }
                anyhow::Ok(())
            }
        }))
        .await;
        results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    }
    Ok(())
}

/// Waits for kwok to make every node Ready, then takes off the not-ready taint that
/// admission put on them at creation (the node lifecycle controller's job, not run here).
async fn nodes_ready_untainted(
    client: &Client,
    side: &Side,
    n: usize,
    kwok: &mut Proc,
) -> anyhow::Result<()> {
    let api = side.nodes(client);
    let lp = ListParams::default().labels(NODE_LABEL);
    wait_for(
        "kwok makes the nodes Ready",
        Duration::from_secs(120),
        Some(kwok),
        || async {
            api.list(&lp)
                .await
                .map(|l| l.items.iter().filter(|n| ready(n)).count() >= n)
                .unwrap_or(false)
        },
    )
    .await?;
    for node in api.list(&lp).await?.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let taints = node.data["spec"]["taints"].as_array().cloned();
        let kept: Vec<Value> = taints
            .iter()
            .flatten()
            .filter(|t| t["key"] != "node.kubernetes.io/not-ready")
            .cloned()
            .collect();
        if taints.map(|t| t.len()) != Some(kept.len()) {
            // A JSON merge patch replaces the list; the resourceVersion guards against
            // anything else having changed the taints meanwhile.
            let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
                               "spec": {"taints": kept}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("removing the not-ready taint of {name}"))?;
        }
    }
    Ok(())
}

fn pod(side: &Side, i: usize) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": side.api_version, "kind": "Pod",
        "metadata": {"name": format!("pod-{i:05}"), "namespace": side.namespace,
                     "labels": {"app": "bench-scheduler"}},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.36",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": NODE_LABEL, "operator": "In", "values": ["true"]}]}]}}},
            "tolerations": [{"key": KWOK_ANNOTATION.0, "operator": "Exists", "effect": "NoSchedule"}],
        }
    }))
    .unwrap()
}

async fn create_pods(client: &Client, side: &Side, p: usize) -> anyhow::Result<()> {
    let api = side.pods(client);
    for chunk in (0..p).collect::<Vec<_>>().chunks(50) {
        let results = join_all(chunk.iter().map(|&i| {
            let api = api.clone();
            let pod = pod(side, i);
            async move { api.create(&PostParams::default(), &pod).await }
        }))
        .await;
        for r in results {
            r.context("creating a pod")?;
        }
    }
    Ok(())
}

/// Watches the side's pods and returns when `p` of them have been seen with a node.
async fn watch_bound(api: Api<DynamicObject>, p: usize) -> anyhow::Result<Instant> {
    let mut bound = HashSet::new();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            // The watcher retries errors itself (a new list and watch).
            _ => continue,
        };
        if pod.data["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
        {
            bound.insert(pod.metadata.name.unwrap_or_default());
            if bound.len() >= p {
                return Ok(Instant::now());
            }
        }
    }
    bail!("the pod watch ended")
}

async fn running_pods(client: &Client, side: &Side) -> usize {
    side.pods(client)
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.data["status"]["phase"] == "Running")
                .count()
        })
        .unwrap_or(0)
}

/// Starts the scheduler once the nodes are there, waits for its /readyz, creates the pods
/// and measures until all are bound.
async fn measure(
    client: &Client,
    side: &Side,
    args: &Args,
    mut scheduler: Proc,
    base_url: String,
) -> anyhow::Result<Measured> {
    wait_for(
        &format!("{} /readyz", scheduler.what),
        Duration::from_secs(120),
        Some(&mut scheduler),
        || async { fetch(&format!("{base_url}/readyz")).trim() == "ok" },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counter = match side.which {
        Which::Upstream => "rest_client_requests_total{",
        Which::Rekube => "rekube_rest_client_requests_total{",
    };
    let base_requests = sum_metric(&fetch(&format!("{base_url}/metrics")), counter);

    // The watch starts with the pods' creation and lists whatever exists by then: a pod
    // bound before the watch began is seen in that list.
    let all_bound = watch_bound(side.pods(client), args.pods);
    let start = Instant::now();
    let creating = create_pods(client, side, args.pods);
    tokio::pin!(creating);
    tokio::pin!(all_bound);
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout));
    tokio::pin!(deadline);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut created = false;
    let done = loop {
        tokio::select! {
            r = &mut creating, if !created => { r?; created = true; }
            t = &mut all_bound => break t?,
            _ = &mut deadline => {
                let bound = side.pods(client).list(&ListParams::default()).await.map(|l| l.items.iter()
                    .filter(|p| p.data["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())).count()).unwrap_or(0);
                bail!("{}: {bound} of {} pods bound after {} s", side.name, args.pods, args.timeout);
            }
            _ = check.tick() => scheduler.check_alive()?,
        }
    };
    let wall = done - start;
    let api_requests =
        sum_metric(&fetch(&format!("{base_url}/metrics")), counter).saturating_sub(base_requests);
    let (peak_rss_mib, cpu_seconds) = usage(scheduler.pid());
    drop(scheduler);
    Ok(Measured {
        wall,
        pods_per_second: args.pods as f64 / wall.as_secs_f64(),
        api_requests,
        peak_rss_mib,
        cpu_seconds,
    })
}

async fn run_upstream(client: Client, side: Side, args: &Args) -> anyhow::Result<Measured> {
    let kwok_config = args.kwok_config.clone().unwrap_or_else(|| {
        let bin = which(&args.kwok);
        bin.parent()
            .map(|d| d.join("kwok-stages.yaml"))
            .unwrap_or_else(|| "kwok-stages.yaml".into())
    });
    anyhow::ensure!(
        kwok_config.is_file(),
        "no kwok config at {} (just build-bench-tools writes it)",
        kwok_config.display()
    );
    let mut kwok = Proc::spawn(
        "kwok",
        Command::new(&args.kwok)
            .arg("--kubeconfig")
            .arg(&args.kubeconfig)
            .arg("--config")
            .arg(&kwok_config)
            .args([
                "--manage-all-nodes=false",
                &format!(
                    "--manage-nodes-with-annotation-selector={}={}",
                    KWOK_ANNOTATION.0, KWOK_ANNOTATION.1
                ),
                // Pod IPs for the Running pods; the default /24 holds 254.
                "--cidr=10.0.0.0/16",
            ]),
        args.log_dir.join("kwok.log"),
    )?;
    create_nodes(&client, &side, args.nodes).await?;
    nodes_ready_untainted(&client, &side, args.nodes, &mut kwok).await?;

    let config = args.log_dir.join("kube-scheduler.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             clientConnection:\n  kubeconfig: {}\n  qps: {}\n  burst: {}\n\
             leaderElection:\n  leaderElect: false\n",
            args.kubeconfig, args.qps, args.burst
        ),
    )?;
    let port = free_port();
    let scheduler = Proc::spawn(
        "kube-scheduler",
        Command::new(&args.kube_scheduler)
            .arg("--config")
            .arg(&config)
            .args([
                "--authentication-kubeconfig",
                &args.kubeconfig,
                "--authorization-kubeconfig",
                &args.kubeconfig,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &port.to_string(),
                "--authorization-always-allow-paths",
                "/healthz,/readyz,/livez,/metrics",
            ]),
        args.log_dir.join("kube-scheduler.log"),
    )?;
    let m = measure(
        &client,
        &side,
        args,
        scheduler,
        format!("https://127.0.0.1:{port}"),
    )
    .await?;
    // Not measured: kwok plays the kubelet's part too.
    let _ = wait_for(
        "kwok makes the pods Running",
        Duration::from_secs(120),
        Some(&mut kwok),
        || async { running_pods(&client, &side).await >= args.pods },
    )
    .await;
    println!(
        "upstream: kwok made {} of {} pods Running",
        running_pods(&client, &side).await,
        args.pods
    );
    drop(kwok);
    Ok(m)
}

async fn run_rekube(client: Client, side: Side, args: &Args) -> anyhow::Result<Measured> {
    create_nodes(&client, &side, args.nodes).await?;
    let port = free_port();
    let scheduler = Proc::spawn(
        "rekube-controllers",
        Command::new(&args.rekube)
            .args(["--controllers", "scheduler", "--leader-elect=false"])
            .args(["--namespace", side.namespace, "--node-selector", NODE_LABEL])
            .args(["--scheduler-api-qps", &args.qps.to_string()])
            .args(["--scheduler-api-burst", &args.burst.to_string()])
            .args(["--kube-api-qps", &args.qps.to_string()])
            .args(["--kube-api-burst", &args.burst.to_string()])
            .args(["--bind-address", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", &args.kubeconfig)
            .env("RUST_LOG", "warn"),
        args.log_dir.join("rekube-controllers.log"),
    )?;
    measure(
        &client,
        &side,
        args,
        scheduler,
        format!("http://127.0.0.1:{port}"),
    )
    .await
}

async fn fresh_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    delete_namespace(client, name).await;
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &ns).await?;
    // The ServiceAccount admission plugin wants the default service account for core pods.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    wait_for(
        "the default service account",
        Duration::from_secs(60),
        None,
        || async { matches!(sa.get_opt("default").await, Ok(Some(_))) },
    )
    .await
}

async fn delete_namespace(client: &Client, name: &str) {
    // Core pods bound to a node wait for its kubelet to confirm their deletion; kwok may be
    // gone, so they go at once (as kubectl delete --force), or the namespace never goes.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), name);
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let _ = pods.delete_collection(&force, &ListParams::default()).await;
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
    let _ = wait_for(
        &format!("namespace {name} deleted"),
        Duration::from_secs(180),
        None,
        || async {
            let _ = pods.delete_collection(&force, &ListParams::default()).await;
            matches!(api.get_opt(name).await, Ok(None))
        },
    )
    .await
    .map_err(|e| eprintln!("cleanup: {e}"));
}

async fn delete_nodes(client: &Client, side: &Side) {
    let _ = side
        .nodes(client)
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(NODE_LABEL),
        )
        .await
        .map_err(|e| eprintln!("cleanup: deleting {} nodes: {e}", side.name));
}

async fn cleanup(client: &Client, side: &Side) {
    delete_namespace(client, side.namespace).await;
    delete_nodes(client, side).await;
}

fn row(name: &str, m: &Measured) -> String {
    format!(
        "| {name} | {:.1} | {:.1} | {} | {:.1} | {:.1} |",
        m.pods_per_second,
        m.wall.as_secs_f64(),
        m.api_requests,
        m.peak_rss_mib,
        m.cpu_seconds
    )
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = std::sync::Arc::new(Args::parse());
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG for the benchmark cluster");
    std::fs::create_dir_all(&args.log_dir).expect("--log-dir");
    let sides = [
        Side {
            which: Which::Upstream,
            name: "upstream",
            namespace: "bench-scheduler-upstream",
            api_version: "v1",
            node: ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&()),
            pod: ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        },
        Side {
            which: Which::Rekube,
            name: "rekube",
            namespace: "bench-scheduler-rekube",
            api_version: "rekube.io/v1",
            node: ApiResource::erase::<rekube_crds::Node>(&()),
            pod: ApiResource::erase::<rekube_crds::Pod>(&()),
        },
    ];
    println!(
        "workload: {} nodes (cpu 32, memory 256Gi, pods 110), {} pods (cpu 100m, memory 128Mi); client QPS {} burst {}; logs in {}",
        args.nodes,
        args.pods,
        args.qps,
        args.burst,
        args.log_dir.display()
    );
    let mut results: Vec<(Which, Measured)> = Vec::new();
    let mut failed = false;
    for side in sides {
        if args.only != "both" && args.only != side.name {
            continue;
        }
        // Leftovers of an interrupted run first.
        cleanup(&client, &side).await;
        let task = {
            let (client, side, args) = (client.clone(), side.clone(), args.clone());
            tokio::spawn(async move {
                fresh_namespace(&client, side.namespace).await?;
                match side.which {
                    Which::Upstream => run_upstream(client, side, &args).await,
                    Which::Rekube => run_rekube(client, side, &args).await,
                }
            })
        };
        let mut task = task;
        let finished = tokio::select! {
            r = &mut task => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(outcome) = finished else {
            eprintln!("interrupted: cleaning up");
            // Aborting drops the run's state: its processes are killed (Proc's Drop).
            task.abort();
            let _ = task.await;
            cleanup(&client, &side).await;
            return std::process::ExitCode::from(130);
        };
        cleanup(&client, &side).await;
        match outcome {
            Ok(Ok(m)) => {
                println!(
                    "{}: {} pods bound in {:.1} s",
                    side.name,
                    args.pods,
                    m.wall.as_secs_f64()
                );
                results.push((side.which, m));
            }
            Ok(Err(e)) => {
                eprintln!("{}: {e:#}", side.name);
                failed = true;
            }
            Err(e) => {
                eprintln!("{}: {e}", side.name);
                failed = true;
            }
        }
    }
    println!();
    println!("| scheduler | pods/s | wall (s) | API requests | peak RSS (MiB) | CPU (s) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (which, m) in &results {
        let label = match which {
            Which::Upstream => "kube-scheduler v1.36.3 (core/v1, kwok nodes)",
            Which::Rekube => "rekube scheduler (rekube.io/v1)",
        };
        println!("{}", row(label, m));
    }
    if let [(Which::Upstream, up), (Which::Rekube, rk)] = results.as_slice() {
        println!(
            "| ratio rekube / upstream | {} | {} | {} | {} | {} |",
            ratio(rk.pods_per_second, up.pods_per_second),
            ratio(rk.wall.as_secs_f64(), up.wall.as_secs_f64()),
            ratio(rk.api_requests as f64, up.api_requests as f64),
            ratio(rk.peak_rss_mib, up.peak_rss_mib),
            ratio(rk.cpu_seconds, up.cpu_seconds)
        );
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
