//! bench-pod-startup: pod startup latency of a real node, upstream's kubelet v1.36.3 with
//! containerd (core/v1 Pods) and rekube-node-agent with its own runtime (rekube.io/v1 Pods),
//! one side after the other on the same apiserver and machine. For each pod: the time from
//! its create request returning to a watch showing phase Running and condition Ready True,
//! the image already on the node. Prints p50/p90/p99/max per side, the wall time until all
//! are Running and Ready, the time to delete them all, peak RSS and CPU seconds of the node's
//! processes, and the ratios rekube / upstream.
//!
//! The node's processes are started and stopped by `e2e/scripts/bench-pod-startup.sh`
//! (containerd + kubelet, or the agent, each with its own directories under `--dir`); this
//! binary runs the workload and measures. Each side: a fresh namespace; the node started;
//! a pod watch established; N identical pods (hostNetwork, busybox:1.36 `sleep 3600`,
//! imagePullPolicy IfNotPresent, terminationGracePeriodSeconds 1, spec.nodeName set, no
//! scheduler) created all at once; measured until all are Running and Ready; then deleted
//! and waited for; the node stopped and everything removed, also after a failure, a
//! time-out or Ctrl-C.
//!
//! `just bench-pod-startup [pods] [flags]` builds everything and runs this (as root);
//! `--only upstream|rekube|both` runs one side; `--volumes configmap:100` (or `secret:N`,
//! `emptydir:N`) gives each pod that many volumes, as upstream's storage pod-startup
//! workloads (`just bench-storage` runs them); `--claims static:N` (or `local-disk:N`,
//! `hostpath:N`) that many PersistentVolumeClaims made just before the pod, each pod's
//! latency then counted from its first claim's create returning ([`claims`]), with the PV
//! binder, the protection controllers, rekube-csi and a provisioner beside each node (the
//! script's STORAGE=1).
mod claims;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
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
use rekube_e2e::procstat::{self, proc_stat};
use serde_json::json;

use claims::{ClaimKind, Claims, StorageResources};

#[derive(Debug, Parser)]
#[command(
    name = "bench-pod-startup",
    about = "Pod startup latency: kubelet + containerd vs rekube-node-agent, side by side",
    // A flag given again (after the justfile's) wins.
    args_override_self = true
)]
struct Args {
    /// Pods per side, created at once.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Which side to run.
    #[arg(long, default_value = "both", value_parser = ["upstream", "rekube", "both"])]
    only: String,
    /// The kubelet binary (`just build-kubelet`).
    #[arg(long, default_value = "kubelet")]
    kubelet: String,
    /// The rekube-node-agent binary.
    #[arg(long, default_value = "rekube-node-agent")]
    agent: String,
    /// The kubeconfig the kubelet and the agent use (the benchmark itself uses KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: String,
    /// The node's name on both sides (a core Node, then a rekube Node).
    #[arg(long, default_value = "bench-pod-startup")]
    node_name: String,
    /// The kubelet's kubeAPIQPS (its default).
    #[arg(long, default_value_t = 50)]
    kubelet_api_qps: u32,
    /// The kubelet's kubeAPIBurst (its default).
    #[arg(long, default_value_t = 100)]
    kubelet_api_burst: u32,
    /// The node's state (removed after each side) and the logs (kept, in `logs/`);
    /// default `$REKUBE_CACHE/bench/pod-startup`.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The script that starts and stops the nodes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-pod-startup.sh"))]
    script: PathBuf,
    /// Give up on a side when its pods are not all Running and Ready after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Volumes each pod mounts: `configmap:N`, `secret:N` or `emptydir:N` (upstream's
    /// clusterloader2 storage pod-startup workloads); the ConfigMaps and Secrets are made in
    /// the side's namespace before the node starts.
    #[arg(long, value_parser = parse_volumes, conflicts_with = "claims")]
    volumes: Option<Volumes>,
    /// Claims each pod mounts, made just before it: `static:N` (hostPath PVs bound by the PV
    /// binder), `local-disk:N` or `hostpath:N` (provisioned by rekube-csi).
    #[arg(long, value_parser = claims::parse_claims)]
    claims: Option<Claims>,
    /// rekube-csi (both sides' driver and registrar, rekube's provisioner), with --claims.
    #[arg(long, default_value = "rekube-csi")]
    csi: String,
    /// rekube-controllers (rekube's PV binder and protection controllers), with --claims.
    #[arg(long, default_value = "rekube-controllers")]
    controllers: String,
    /// kube-controller-manager (upstream's PV binder and protection controllers), with
    /// --claims.
    #[arg(long, default_value = "kube-controller-manager")]
    kube_controller_manager: String,
    /// external-provisioner's csi-provisioner (upstream's provisioner), with --claims.
    #[arg(long, default_value = "csi-provisioner")]
    csi_provisioner: String,
}

/// `--volumes`: the kind and how many per pod.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Volumes {
    kind: VolumeKind,
    count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum VolumeKind {
    ConfigMap,
    Secret,
    EmptyDir,
}

fn parse_volumes(s: &str) -> Result<Volumes, String> {
    let (kind, count) = s
        .split_once(':')
        .ok_or_else(|| format!("--volumes {s:?}: want KIND:N"))?;
    let kind = match kind {
        "configmap" => VolumeKind::ConfigMap,
        "secret" => VolumeKind::Secret,
        "emptydir" => VolumeKind::EmptyDir,
        other => {
            return Err(format!(
                "--volumes {s:?}: unknown kind {other:?} (configmap, secret, emptydir)"
            ));
        }
    };
    let count = count
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("--volumes {s:?}: N must be a positive number"))?;
    Ok(Volumes { kind, count })
}

impl Volumes {
    /// The pod's `volumes` and the container's `volumeMounts`.
    fn pod_parts(&self) -> (serde_json::Value, serde_json::Value) {
        let volumes: Vec<serde_json::Value> = (0..self.count)
            .map(|i| {
                let name = format!("vol-{i}");
                match self.kind {
                    VolumeKind::ConfigMap => json!({"name": name, "configMap": {"name": name}}),
                    VolumeKind::Secret => json!({"name": name, "secret": {"secretName": name}}),
                    VolumeKind::EmptyDir => json!({"name": name, "emptyDir": {}}),
                }
            })
            .collect();
        let mounts: Vec<serde_json::Value> = (0..self.count)
            .map(|i| json!({"name": format!("vol-{i}"), "mountPath": format!("/vol/{i}")}))
            .collect();
        (json!(volumes), json!(mounts))
    }

    /// The ConfigMaps or Secrets the pods' volumes name, in `namespace`.
    async fn create_objects(&self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        let pp = PostParams::default();
        for i in 0..self.count {
            let name = format!("vol-{i}");
            match self.kind {
                VolumeKind::ConfigMap => {
                    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
                        Api::namespaced(client.clone(), namespace);
                    let cm = serde_json::from_value(
                        json!({"metadata": {"name": name}, "data": {"key": "value"}}),
                    )?;
                    api.create(&pp, &cm)
                        .await
                        .with_context(|| format!("creating configmap {namespace}/{name}"))?;
                }
                VolumeKind::Secret => {
                    let api: Api<k8s_openapi::api::core::v1::Secret> =
                        Api::namespaced(client.clone(), namespace);
                    let secret = serde_json::from_value(
                        json!({"metadata": {"name": name}, "stringData": {"key": "value"}}),
                    )?;
                    api.create(&pp, &secret)
                        .await
                        .with_context(|| format!("creating secret {namespace}/{name}"))?;
                }
                VolumeKind::EmptyDir => {}
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
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
    pod: ApiResource,
    storage: StorageResources,
}

impl Side {
    fn pods(&self, client: &Client) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), self.namespace, &self.pod)
    }
    fn claims(&self, client: &Client) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), self.namespace, &self.storage.claim)
    }
    fn volumes(&self, client: &Client) -> Api<DynamicObject> {
        Api::all_with(client.clone(), &self.storage.volume)
    }
    /// The processes beside the node that claims need (the script's pid files).
    fn storage_processes(&self) -> &'static [&'static str] {
        match self.which {
            Which::Upstream => &[
                "kube-controller-manager",
                "csi-provisioner",
                "rekube-csi",
                "registrar",
            ],
            Which::Rekube => &[
                "rekube-controllers",
                "rekube-csi-provisioner",
                "rekube-csi",
                "registrar",
            ],
        }
    }
}

/// What one process (or group of processes) used.
#[derive(Debug, Default, Clone)]
struct Usage {
    label: String,
    peak_rss_mib: f64,
    cpu_seconds: f64,
}

#[derive(Debug, Default)]
struct Measured {
    /// Create request returned → Running and Ready, per pod, sorted.
    latencies: Vec<Duration>,
    /// First create request sent → last pod Running and Ready.
    all_ready: Duration,
    /// Delete requests sent → no pod left.
    all_deleted: Duration,
    /// With claims: their delete requests sent (after the pods are gone) → no claim left,
    /// and for the dynamic kinds no provisioned PersistentVolume either.
    claims_deleted: Option<Duration>,
    /// The node's processes; the first is the kubelet or the agent.
    usage: Vec<Usage>,
}

impl Measured {
    fn percentile(&self, q: f64) -> Duration {
        // Nearest rank.
        let n = self.latencies.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1]
    }
    fn total(&self) -> (f64, f64) {
        self.usage.iter().fold((0.0, 0.0), |(r, c), u| {
            (r + u.peak_rss_mib, c + u.cpu_seconds)
        })
    }
}

/// containerd's shims for our containerd: their command line names its socket.
fn shim_pids(socket: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.first()
                    .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                    && args.contains(&socket.as_bytes())
                    && !args.contains(&b"start".as_slice())
            })
        })
        .collect()
}

/// The node's processes, started by the script: stopped (and everything removed) when
/// dropped, on every way out of a side's run.
struct Node {
    script: PathBuf,
    dir: PathBuf,
    which: Which,
    node_name: String,
}

impl Node {
    fn script(&self, verb: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(&self.script)
            .arg(format!("{verb}-{}", side_name(self.which)))
            .arg(&self.dir)
            .arg(&self.node_name);
        cmd
    }

    fn start(args: &Args, which: Which, dir: &Path) -> anyhow::Result<Node> {
        let node = Node {
            script: args.script.clone(),
            dir: dir.to_path_buf(),
            which,
            node_name: args.node_name.clone(),
        };
        let mut cmd = node.script("start");
        match which {
            Which::Rekube => cmd.arg(procstat::which(&args.agent)),
            Which::Upstream => cmd
                .arg(procstat::which(&args.kubelet))
                .arg(args.kubelet_api_qps.to_string())
                .arg(args.kubelet_api_burst.to_string()),
        };
        if args.claims.is_some() {
            cmd.env("STORAGE", "1")
                .env("CSI_BIN", procstat::which(&args.csi))
                .env("CONTROLLERS_BIN", procstat::which(&args.controllers))
                .env("KCM_BIN", procstat::which(&args.kube_controller_manager))
                .env(
                    "CSI_PROVISIONER_BIN",
                    procstat::which(&args.csi_provisioner),
                );
        }
        let status = cmd
            .env("KUBECONFIG", &args.kubeconfig)
            .status()
            .with_context(|| format!("running {}", args.script.display()))?;
        if !status.success() {
            // The script has stopped what it had started.
            bail!("starting the {} node: {status}", side_name(which));
        }
        Ok(node)
    }

    fn pid(&self, process: &str) -> anyhow::Result<u32> {
        let file = self
            .dir
            .join(side_name(self.which))
            .join("pids")
            .join(format!("{process}.pid"));
        std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {}", file.display()))
    }

    fn containerd_socket(&self) -> String {
        self.dir
            .join("upstream/containerd/containerd.sock")
            .display()
            .to_string()
    }

    fn stop(&self) {
        match self.script("stop").status() {
            Ok(s) if s.success() => {}
            other => eprintln!(
                "cleanup: stopping the {} node: {other:?}",
                side_name(self.which)
            ),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn side_name(which: Which) -> &'static str {
    match which {
        Which::Upstream => "upstream",
        Which::Rekube => "rekube",
    }
}

fn pod(side: &Side, node: &str, name: &str, args: &Args) -> DynamicObject {
    let mut pod = json!({
        "apiVersion": side.api_version, "kind": "Pod",
        "metadata": {"name": name, "namespace": side.namespace,
                     "labels": {"app": "bench-pod-startup"}},
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "sleep", "image": "busybox:1.36",
                "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}],
        }
    });
    let parts = match (args.volumes, args.claims) {
        (Some(v), _) => Some(v.pod_parts()),
        (_, Some(c)) => Some(c.pod_parts(name)),
        _ => None,
    };
    if let Some((vols, mounts)) = parts {
        pod["spec"]["volumes"] = vols;
        pod["spec"]["containers"][0]["volumeMounts"] = mounts;
    }
    serde_json::from_value(pod).unwrap()
}

fn running_and_ready(pod: &DynamicObject) -> bool {
    let status = &pod.data["status"];
    status["phase"] == "Running"
        && status["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The shims of our containerd, once every pod is Running and Ready (each pod's sandbox
/// has one; none has exited yet): summed RSS and PSS (MiB, PSS counting their shared pages
/// once) and CPU seconds since they started, with their runc children's. The short-lived
/// `containerd-shim-runc-v2 … start` processes that launch them are containerd's children,
/// in its CPU figure. Shims from before the pods' creation (the warm-up pod's sandbox, until
/// the kubelet's garbage collection removes it) are left out.
fn shims(socket: &str, before: &[u32]) -> Usage {
    let pids: Vec<u32> = shim_pids(socket)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let (mut rss, mut pss, mut cpu) = (0.0, 0.0, 0.0);
    for pid in &pids {
        if let Some(st) = proc_stat(*pid) {
            rss += st.rss_mib;
            cpu += st.cpu_with_children();
        }
        pss += std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
            / 1024.0;
    }
    Usage {
        label: format!(
            "containerd-shim-runc-v2 ×{} (summed PSS; summed RSS {rss:.1})",
            pids.len()
        ),
        peak_rss_mib: pss,
        cpu_seconds: cpu,
    }
}

/// Creates the pods at once and measures until all are Running and Ready.
async fn measure(
    client: &Client,
    side: &Side,
    args: &Args,
    node: &Node,
) -> anyhow::Result<Measured> {
    let main_process = match side.which {
        Which::Upstream => "kubelet",
        Which::Rekube => "rekube-node-agent",
    };
    let mut processes = vec![(main_process, node.pid(main_process)?)];
    if side.which == Which::Upstream {
        processes.push(("containerd", node.pid("containerd")?));
    }
    if args.claims.is_some() {
        for p in side.storage_processes() {
            processes.push((p, node.pid(p)?));
        }
    }
    let before: Vec<f64> = processes
        .iter()
        .map(|(_, pid)| {
            proc_stat(*pid)
                .map(|s| s.cpu_with_children())
                .unwrap_or(0.0)
        })
        .collect();

    let shims_before = shim_pids(&node.containerd_socket());

    // The watch is established (its initial list done) before the first create.
    let api = side.pods(client);
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        match events.next().await {
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Err(e)) => bail!("watching the {} pods: {e}", side.name),
            None => bail!("the {} pod watch ended", side.name),
            _ => {}
        }
    }
    let n = args.pods;
    let watch = async {
        let mut ready: HashMap<String, Instant> = HashMap::new();
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                // The watcher retries errors itself (a new list and watch).
                _ => continue,
            };
            if running_and_ready(&pod) {
                let now = Instant::now();
                ready
                    .entry(pod.metadata.name.unwrap_or_default())
                    .or_insert(now);
                if ready.len() >= n {
                    return Ok(ready);
                }
            }
        }
        bail!("the {} pod watch ended", side.name)
    };
    let start = Instant::now();
    let create = join_all((0..n).map(|i| {
        let name = format!("pod-{i:03}");
        create_pod(client, side, args, name)
    }));
    tokio::pin!(watch);
    tokio::pin!(create);
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout));
    tokio::pin!(deadline);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut created: Option<HashMap<String, Instant>> = None;
    let ready = loop {
        tokio::select! {
            r = &mut create, if created.is_none() => {
                created = Some(r.into_iter().collect::<anyhow::Result<_>>()?);
            }
            r = &mut watch => break r?,
            _ = &mut deadline => {
                let ready = api.list(&ListParams::default()).await
                    .map(|l| l.items.iter().filter(|p| running_and_ready(p)).count()).unwrap_or(0);
                bail!("{}: {ready} of {n} pods Running and Ready after {} s", side.name, args.timeout);
            }
            _ = check.tick() => {
                for (what, pid) in &processes {
                    if proc_stat(*pid).is_none() {
                        bail!("{what} (pid {pid}) exited");
                    }
                }
            }
        }
    };
    // A pod cannot be Ready before its create returned, but both sides of the race are
    // taken as they come: the watch may see the pod before this task saw the response.
    let created = match created {
        Some(c) => c,
        None => create.await.into_iter().collect::<anyhow::Result<_>>()?,
    };
    let mut latencies = created
        .iter()
        .map(|(name, returned)| {
            ready
                .get(name)
                .map(|r| r.saturating_duration_since(*returned))
                .with_context(|| format!("pod {name} not seen Ready"))
        })
        .collect::<anyhow::Result<Vec<Duration>>>()?;
    latencies.sort();
    let last = ready.values().max().copied().unwrap_or(start);

    let mut usage: Vec<Usage> = processes
        .iter()
        .zip(&before)
        .map(|((what, pid), before)| {
            let s = proc_stat(*pid).unwrap_or_default();
            Usage {
                label: what.to_string(),
                peak_rss_mib: s.hwm_mib,
                cpu_seconds: s.cpu_with_children() - before,
            }
        })
        .collect();
    if side.which == Which::Upstream {
        usage.push(shims(&node.containerd_socket(), &shims_before));
    }
    Ok(Measured {
        latencies,
        all_ready: last - start,
        usage,
        ..Default::default()
    })
}

/// Creates a pod, after its claims (with --claims); returns when its first create
/// request returned (the claim's, or the pod's).
async fn create_pod(
    client: &Client,
    side: &Side,
    args: &Args,
    name: String,
) -> anyhow::Result<(String, Instant)> {
    let mut first = None;
    if let Some(c) = args.claims {
        let claims = side.claims(client);
        let created = join_all((0..c.count).map(|i| {
            let claims = claims.clone();
            let claim = c.claim(&side.storage, side.namespace, &name, i, &args.node_name);
            let claim_name = Claims::claim_name(&name, i);
            async move {
                claims
                    .create(&PostParams::default(), &claim)
                    .await
                    .with_context(|| format!("creating claim {claim_name}"))?;
                anyhow::Ok(Instant::now())
            }
        }))
        .await;
        first = created
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .min();
    }
    let pod = pod(side, &args.node_name, &name, args);
    side.pods(client)
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {name}"))?;
    Ok((name, first.unwrap_or_else(Instant::now)))
}

/// Deletes the side's claims once their pods are gone and waits until none is left, nor
/// (dynamic kinds) a PersistentVolume provisioned for them: their reclaim (Delete)
/// done by the provisioner.
async fn delete_claims(
    client: &Client,
    side: &Side,
    claims: Claims,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let api = side.claims(client);
    let volumes = side.volumes(client);
    let start = Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .with_context(|| format!("deleting the {} claims", side.name))?;
    loop {
        let left = api.list(&ListParams::default()).await?.items.len();
        let provisioned = if claims.kind == ClaimKind::Static {
            0
        } else {
            volumes
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|pv| pv.data["spec"]["storageClassName"] == claims.class_name())
                .count()
        };
        if left == 0 && provisioned == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!(
                "{left} {} claims and {provisioned} provisioned volumes left after {limit:?}",
                side.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the side's pods (their own grace period) and waits until none is left.
async fn delete_pods(client: &Client, side: &Side, limit: Duration) -> anyhow::Result<Duration> {
    let api = side.pods(client);
    let start = Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .with_context(|| format!("deleting the {} pods", side.name))?;
    loop {
        let left = api.list(&ListParams::default()).await?.items.len();
        if left == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("{left} {} pods left after {limit:?}", side.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One pod started and deleted before the measurement: the node is then fully up (a kubelet
/// registers its Node before its pod source is watching) and one-time costs are paid.
async fn warm_up(client: &Client, side: &Side, args: &Args) -> anyhow::Result<()> {
    let api = side.pods(client);
    create_pod(client, side, args, "warm-up".into()).await?;
    let start = Instant::now();
    while !api
        .get_opt("warm-up")
        .await?
        .is_some_and(|p| running_and_ready(&p))
    {
        if start.elapsed() > Duration::from_secs(120) {
            bail!(
                "the {} warm-up pod not Running and Ready after 120 s",
                side.name
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delete_pods(client, side, Duration::from_secs(120)).await?;
    if let Some(c) = args.claims {
        delete_claims(client, side, c, Duration::from_secs(120)).await?;
    }
    Ok(())
}

/// One side: the node up, a warm-up pod, the pods measured, deleted while the node still runs, the node
/// stopped (the Node's Drop, also when this future is dropped).
async fn run_side(
    client: Client,
    side: Side,
    args: Arc<Args>,
    dir: PathBuf,
) -> anyhow::Result<Measured> {
    fresh_namespace(&client, side.namespace).await?;
    if let Some(v) = args.volumes {
        v.create_objects(&client, side.namespace).await?;
    }
    if let Some(c) = args.claims {
        // Static volumes for the measured pods and the warm-up pod.
        let volumes = (args.pods + 1) * c.count;
        c.create_objects(&client, &side.storage, &dir.join(side.name), volumes)
            .await?;
    }
    let node = tokio::task::block_in_place(|| Node::start(&args, side.which, &dir))?;
    let measured = match warm_up(&client, &side, &args).await {
        Ok(()) => measure(&client, &side, &args, &node).await,
        Err(e) => Err(e),
    };
    let deleted = delete_pods(&client, &side, Duration::from_secs(120)).await;
    let claims_deleted = match (args.claims, &deleted) {
        (Some(c), Ok(_)) => Some(delete_claims(&client, &side, c, Duration::from_secs(300)).await),
        _ => None,
    };
    tokio::task::block_in_place(|| drop(node));
    let mut m = measured?;
    m.all_deleted = deleted?;
    m.claims_deleted = claims_deleted.transpose()?;
    Ok(m)
}

async fn fresh_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    // The pods are hostNetwork: Pod Security's privileged level (rekube's default is baseline).
    let ns = serde_json::from_value(json!({"metadata": {"name": name,
        "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}))?;
    api.create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    // The ServiceAccount admission plugin wants the default service account for core pods.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    let start = Instant::now();
    while !matches!(sa.get_opt("default").await, Ok(Some(_))) {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("no default service account in namespace {name} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Removes what a run left in the API: the namespace with its pods. A pod whose node is gone
/// never finishes deleting by itself (a core pod waits for its kubelet, a rekube pod for the
/// agent's finalizer), so they go at once and lose the finalizer.
async fn cleanup(client: &Client, side: &Side) {
    let api = side.pods(client);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let start = Instant::now();
    loop {
        // Pods, then claims (kubernetes.io/pvc-protection with no controller left to lift it).
        for api in [&api, &side.claims(client)] {
            force_delete_all(api, &ListParams::default(), &force).await;
        }
        match namespaces.get_opt(side.namespace).await {
            Ok(None) => break,
            Ok(Some(ns)) if ns.metadata.deletion_timestamp.is_none() => {
                let _ = namespaces
                    .delete(side.namespace, &DeleteParams::background())
                    .await;
            }
            _ => {}
        }
        if start.elapsed() > Duration::from_secs(180) {
            eprintln!(
                "cleanup: namespace {} still there after 180 s",
                side.namespace
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The run's PersistentVolumes (kubernetes.io/pv-protection) and StorageClasses.
    let labelled =
        ListParams::default().labels(&format!("{}={}", claims::LABEL.0, claims::LABEL.1));
    force_delete_all(&side.volumes(client), &labelled, &force).await;
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &side.storage.class);
    force_delete_all(&classes, &labelled, &force).await;
}

/// Deletes every listed object at once, without waiting for its finalizers.
async fn force_delete_all(api: &Api<DynamicObject>, lp: &ListParams, force: &DeleteParams) {
    let Ok(list) = api.list(lp).await else {
        return;
    };
    for o in list.items {
        let name = o.metadata.name.clone().unwrap_or_default();
        if o.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
        {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
        let _ = api.delete(&name, force).await;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

fn label(which: Which) -> &'static str {
    match which {
        Which::Upstream => "kubelet v1.36.3 + containerd 1.6 (runc), core/v1",
        Which::Rekube => "rekube-node-agent, rekube.io/v1",
    }
}

fn print_results(results: &[(Which, Measured)], pods: usize) {
    println!();
    println!(
        "| node ({pods} pods) | p50 (s) | p90 (s) | p99 (s) | max (s) | all Running+Ready (s) | all deleted (s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (which, m) in results {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            label(*which),
            secs(m.percentile(0.50)),
            secs(m.percentile(0.90)),
            secs(m.percentile(0.99)),
            secs(m.percentile(1.0)),
            secs(m.all_ready),
            secs(m.all_deleted)
        );
    }
    let pair = match results {
        [(Which::Upstream, up), (Which::Rekube, rk)] => Some((up, rk)),
        _ => None,
    };
    if let Some((up, rk)) = pair {
        let r = |f: &dyn Fn(&Measured) -> Duration| ratio(f(rk).as_secs_f64(), f(up).as_secs_f64());
        println!(
            "| ratio rekube / upstream | {} | {} | {} | {} | {} | {} |",
            r(&|m| m.percentile(0.50)),
            r(&|m| m.percentile(0.90)),
            r(&|m| m.percentile(0.99)),
            r(&|m| m.percentile(1.0)),
            r(&|m| m.all_ready),
            r(&|m| m.all_deleted)
        );
    }
    if let Some((Some(up), Some(rk))) = pair.map(|(u, r)| (u.claims_deleted, r.claims_deleted)) {
        println!();
        println!(
            "claims deleted after their pods (with provisioned volumes): upstream {} s, rekube {} s, ratio {}",
            secs(up),
            secs(rk),
            ratio(rk.as_secs_f64(), up.as_secs_f64())
        );
    }
    println!();
    println!("| process | peak RSS (MiB) | CPU (s), creates until all Ready |");
    println!("| --- | --- | --- |");
    for (which, m) in results {
        for u in &m.usage {
            println!(
                "| {} | {:.1} | {:.2} |",
                u.label, u.peak_rss_mib, u.cpu_seconds
            );
        }
        if *which == Which::Upstream {
            let (rss, cpu) = m.total();
            println!(
                "| upstream total (kubelet + containerd + shims, and what claims need) | {rss:.1} | {cpu:.2} |"
            );
        }
    }
    if let Some((up, rk)) = pair {
        let (up_rss, up_cpu) = up.total();
        let (rk_rss, rk_cpu) = rk.total();
        println!(
            "| ratio rekube / upstream total | {} | {} |",
            ratio(rk_rss, up_rss),
            ratio(rk_cpu, up_cpu)
        );
        if let Some(kubelet) = up.usage.first() {
            println!(
                "| ratio rekube / kubelet alone | {} | {} |",
                ratio(rk_rss, kubelet.peak_rss_mib),
                ratio(rk_cpu, kubelet.cpu_seconds)
            );
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Arc::new(Args::parse());
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG for the benchmark cluster");
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| rekube_crds::testing::cache_dir().join("bench/pod-startup"));
    std::fs::create_dir_all(dir.join("logs")).expect("--dir");
    let sides = [
        Side {
            which: Which::Upstream,
            name: "upstream",
            namespace: "bench-pod-startup-upstream",
            api_version: "v1",
            pod: ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
            storage: StorageResources::upstream(),
        },
        Side {
            which: Which::Rekube,
            name: "rekube",
            namespace: "bench-pod-startup-rekube",
            api_version: "rekube.io/v1",
            pod: ApiResource::erase::<rekube_crds::Pod>(&()),
            storage: StorageResources::rekube(),
        },
    ];
    let volumes = match (args.volumes, args.claims) {
        (Some(v), _) => format!(", {} {:?} volumes each", v.count, v.kind),
        (_, Some(c)) => format!(
            ", {} {:?} claims each, latency from the first claim's create",
            c.count, c.kind
        ),
        _ => String::new(),
    };
    println!(
        "workload: {} pods per side created at once on node {} (hostNetwork, busybox:1.36 `sleep 3600`, image present{volumes}); logs in {}",
        args.pods,
        args.node_name,
        dir.join("logs").display()
    );
    let mut results: Vec<(Which, Measured)> = Vec::new();
    let mut failed = false;
    for side in sides {
        if args.only != "both" && args.only != side.name {
            continue;
        }
        // Leftovers of an interrupted run first: the node's processes and state, then the
        // namespace.
        drop(Node {
            script: args.script.clone(),
            dir: dir.clone(),
            which: side.which,
            node_name: args.node_name.clone(),
        });
        cleanup(&client, &side).await;
        let mut task = tokio::spawn(run_side(
            client.clone(),
            side.clone(),
            args.clone(),
            dir.clone(),
        ));
        let finished = tokio::select! {
            r = &mut task => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(outcome) = finished else {
            eprintln!("interrupted: cleaning up");
            // Aborting drops the run's state: the node is stopped (Node's Drop).
            task.abort();
            let _ = task.await;
            cleanup(&client, &side).await;
            return std::process::ExitCode::from(130);
        };
        cleanup(&client, &side).await;
        match outcome {
            Ok(Ok(m)) => {
                println!(
                    "{}: {} pods Running and Ready in {:.2} s, min {} s, p50 {} s, p99 {} s; deleted in {:.2} s",
                    side.name,
                    args.pods,
                    m.all_ready.as_secs_f64(),
                    secs(m.latencies[0]),
                    secs(m.percentile(0.5)),
                    secs(m.percentile(0.99)),
                    m.all_deleted.as_secs_f64()
                );
                if let Some(d) = m.claims_deleted {
                    println!(
                        "{}: claims (and provisioned volumes) deleted in {:.2} s after the pods",
                        side.name,
                        d.as_secs_f64()
                    );
                }
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
    print_results(&results, args.pods);
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
