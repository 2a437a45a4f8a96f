//! bench-scheduler: scheduling throughput of upstream kube-scheduler (core/v1 Pods and
//! Nodes) and of rekube's scheduler (rekube.io/v1), one after the other on the same
//! apiserver with the same client limits (QPS 50, burst 100: kube-scheduler's defaults).
//! Each side gets N simulated nodes (Node objects with capacity and a Ready status, as kwok
//! fakes them; no kubelet is needed to measure scheduling) and P pending pods created
//! before the scheduler starts; the clock runs from the scheduler's start until every pod
//! has `spec.nodeName`. Prints pods/s, wall time, API requests, peak RSS, CPU seconds and
//! the ratios.
//!
//! `just bench-scheduler` builds kube-scheduler (Go module proxy) and this; flags:
//! `--nodes N --pods P --kube-scheduler PATH --rekube PATH --kubeconfig PATH --only upstream|rekube|both`.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::json;

const QPS: &str = "50";
const BURST: &str = "100";
const NODE_LABEL: &str = "rekube.io/bench-scheduler";

struct Args {
    nodes: usize,
    pods: usize,
    kube_scheduler: String,
    rekube: String,
    kubeconfig: String,
    only: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        nodes: 100,
        pods: 3000,
        kube_scheduler: "kube-scheduler".into(),
        rekube: "rekube-controllers".into(),
        kubeconfig: std::env::var("KUBECONFIG").unwrap_or_default(),
        only: "both".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--nodes" => a.nodes = v.parse().expect("--nodes N"),
            "--pods" => a.pods = v.parse().expect("--pods N"),
            "--kube-scheduler" => a.kube_scheduler = v,
            "--rekube" => a.rekube = v,
            "--kubeconfig" => a.kubeconfig = v,
            "--only" => a.only = v,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[derive(Debug, Default)]
struct Measured {
    wall: Duration,
    pods_per_second: f64,
    api_requests: u64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
}

struct Side {
    name: &'static str,
    namespace: &'static str,
    api_version: &'static str,
    node: ApiResource,
    pod: ApiResource,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn fresh_namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    delete_namespace(client, name).await;
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
    // The ServiceAccount admission plugin wants the default service account for core pods.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    while sa.get_opt("default").await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
    while api.get_opt(name).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn delete_nodes(client: &Client, side: &Side) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &side.node);
    let _ = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(NODE_LABEL),
        )
        .await;
}

/// N nodes with room for the pods, Ready, untainted (the apiserver's TaintNodesByCondition
/// admission puts not-ready:NoSchedule on a new core Node; kwok's node controller, like a
/// kubelet, would have it removed by the node lifecycle controller, which this cluster does
/// not run, so the benchmark removes it).
async fn create_nodes(client: &Client, side: &Side, n: usize) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &side.node);
    let resources = json!({"cpu": "32", "memory": "256Gi", "pods": "110"});
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        join_all(chunk.iter().map(|i| {
            let api = api.clone();
            let name = format!("bench-{}-node-{i:03}", side.name);
            let resources = resources.clone();
            let api_version = side.api_version;
            async move {
                let node: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": if api_version == "v1" { "v1" } else { api_version },
                    "kind": "Node",
                    "metadata": {"name": name, "labels": {NODE_LABEL: "true", "kubernetes.io/hostname": name}},
                }))
                .unwrap();
                api.create(&PostParams::default(), &node).await.unwrap();
                let now = jiff::Timestamp::now().to_string();
                let status = json!({"status": {"capacity": resources, "allocatable": resources,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "simulated", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"taints": null}})))
                    .await
                    .unwrap();
            }
        }))
        .await;
    }
}

async fn create_pods(client: &Client, side: &Side, p: usize) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), side.namespace, &side.pod);
    for chunk in (0..p).collect::<Vec<_>>().chunks(100) {
        join_all(chunk.iter().map(|i| {
            let api = api.clone();
            let pod: DynamicObject = serde_json::from_value(json!({
                "apiVersion": side.api_version, "kind": "Pod",
                "metadata": {"name": format!("pod-{i:05}"), "namespace": side.namespace},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
            }))
            .unwrap();
            async move { api.create(&PostParams::default(), &pod).await.unwrap() }
        }))
        .await;
    }
}

async fn bound_pods(client: &Client, side: &Side) -> usize {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), side.namespace, &side.pod);
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| {
                    p.data["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| !n.is_empty())
                })
                .count()
        })
        .unwrap_or(0)
}

/// peak RSS (MiB) and CPU seconds of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    (hwm_kib / 1024.0, ticks / 100.0)
}

fn scrape(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-fsSk", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sum_metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn measure(
    client: &Client,
    side: &Side,
    args: &Args,
    mut scheduler: Child,
    metrics_url: String,
) -> Measured {
    let started = Instant::now();
    let mut last_bound = 0;
    loop {
        let bound = bound_pods(client, side).await;
        if bound >= args.pods {
            break;
        }
        if bound != last_bound {
            last_bound = bound;
        }
        if started.elapsed() > Duration::from_secs(900) {
            let _ = scheduler.kill();
            panic!(
                "{}: only {bound} of {} pods bound after 900 s",
                side.name, args.pods
            );
        }
        if let Ok(Some(status)) = scheduler.try_wait() {
            panic!("{}: the scheduler exited: {status}", side.name);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = started.elapsed();
    let prefix = if side.name == "upstream" {
        "rest_client_requests_total{"
    } else {
        "rekube_rest_client_requests_total{"
    };
    let api_requests = sum_metric(&scrape(&metrics_url), prefix);
    let (peak_rss_mib, cpu_seconds) = usage(scheduler.id());
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    Measured {
        wall,
        pods_per_second: args.pods as f64 / wall.as_secs_f64(),
        api_requests,
        peak_rss_mib,
        cpu_seconds,
    }
}

async fn run_upstream(client: &Client, side: &Side, args: &Args) -> Measured {
    let dir = std::env::temp_dir().join("rekube-bench-scheduler");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("kube-scheduler.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nclientConnection:\n  kubeconfig: {}\n  qps: {QPS}\n  burst: {BURST}\nleaderElection:\n  leaderElect: false\n",
            args.kubeconfig
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(&args.kube_scheduler)
        .arg("--config")
        .arg(&config)
        .args([
            "--authentication-kubeconfig",
            &args.kubeconfig,
            "--authorization-kubeconfig",
            &args.kubeconfig,
        ])
        .args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
        ])
        .args([
            "--authorization-always-allow-paths",
            "/healthz,/readyz,/livez,/metrics",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("kube-scheduler.log")).unwrap(),
        ))
        .spawn()
        .expect("starting kube-scheduler");
    measure(
        client,
        side,
        args,
        child,
        format!("https://127.0.0.1:{port}/metrics"),
    )
    .await
}

async fn run_rekube(client: &Client, side: &Side, args: &Args) -> Measured {
    let port = free_port();
    let child = Command::new(&args.rekube)
        .args(["--controllers", "scheduler", "--leader-elect=false"])
        .args(["--namespace", side.namespace, "--node-selector", NODE_LABEL])
        .args(["--scheduler-api-qps", QPS, "--scheduler-api-burst", BURST])
        .args(["--bind-address", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rekube-controllers");
    measure(
        client,
        side,
        args,
        child,
        format!("http://127.0.0.1:{port}/metrics"),
    )
    .await
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
async fn main() {
    let args = parse_args();
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG for the benchmark cluster");
    let upstream = Side {
        name: "upstream",
        namespace: "bench-scheduler-upstream",
        api_version: "v1",
        node: ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&()),
        pod: ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
    };
    let rekube = Side {
        name: "rekube",
        namespace: "bench-scheduler-rekube",
        api_version: "rekube.io/v1",
        node: ApiResource::erase::<rekube_crds::Node>(&()),
        pod: ApiResource::erase::<rekube_crds::Pod>(&()),
    };
    println!(
        "workload: {} simulated nodes, {} pending pods (100m cpu, 128Mi each); client QPS {QPS} burst {BURST}",
        args.nodes, args.pods
    );
    let mut results = Vec::new();
    for side in [&upstream, &rekube] {
        if args.only != "both" && args.only != side.name {
            continue;
        }
        delete_nodes(&client, side).await;
        fresh_namespace(&client, side.namespace).await;
        create_nodes(&client, side, args.nodes).await;
        create_pods(&client, side, args.pods).await;
        let m = if side.name == "upstream" {
            run_upstream(&client, side, &args).await
        } else {
            run_rekube(&client, side, &args).await
        };
        println!(
            "{}: {} pods bound in {:.1} s",
            side.name,
            args.pods,
            m.wall.as_secs_f64()
        );
        delete_namespace(&client, side.namespace).await;
        delete_nodes(&client, side).await;
        results.push((side.name, m));
    }
    println!();
    println!("| scheduler | pods/s | wall (s) | API requests | peak RSS (MiB) | CPU (s) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, m) in &results {
        let label = if *name == "upstream" {
            "kube-scheduler v1.36.3 (core/v1)"
        } else {
            "rekube scheduler (rekube.io/v1)"
        };
        println!("{}", row(label, m));
    }
    if let [(_, up), (_, rk)] = results.as_slice() {
        println!(
            "| ratio rekube / upstream | {} | {} | {} | {} | {} |",
            ratio(rk.pods_per_second, up.pods_per_second),
            ratio(rk.wall.as_secs_f64(), up.wall.as_secs_f64()),
            ratio(rk.api_requests as f64, up.api_requests as f64),
            ratio(rk.peak_rss_mib, up.peak_rss_mib),
            ratio(rk.cpu_seconds, up.cpu_seconds)
        );
    }
}
