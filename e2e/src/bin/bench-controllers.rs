//! bench-controllers: the same Deployment workload run by upstream kube-controller-manager
//! (apps/v1) and by rekube-controllers (rekube.io/v1), one after the other on the same
//! apiserver with the same client limits, pods made Running and Ready by the kubelet
//! stand-in. Prints wall times, API requests, peak RSS and CPU seconds, and the ratios.
//!
//! `just bench-controllers` builds the release binary and runs this; flags:
//! `--deployments N --replicas R --kcm PATH --rekube PATH --kubeconfig PATH`.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use rekube_e2e::kubelet;
use rekube_e2e::procstat::usage;
use serde_json::json;

struct Args {
    deployments: usize,
    replicas: i32,
    kcm: String,
    rekube: String,
    kubeconfig: String,
    qps: String,
    burst: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        deployments: 100,
        replicas: 10,
        kcm: "kube-controller-manager".into(),
        rekube: "rekube-controllers".into(),
        kubeconfig: std::env::var("KUBECONFIG").unwrap_or_default(),
        qps: "20".into(),
        burst: "30".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--deployments" => a.deployments = v.parse().expect("--deployments N"),
            "--replicas" => a.replicas = v.parse().expect("--replicas N"),
            "--kcm" => a.kcm = v,
            "--rekube" => a.rekube = v,
            "--kubeconfig" => a.kubeconfig = v,
            "--qps" => a.qps = v,
            "--burst" => a.burst = v,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[derive(Debug, Default)]
struct Measured {
    all_pods_exist: Duration,
    all_available: Duration,
    rollout_complete: Duration,
    api_requests: u64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
}

struct Side {
    name: &'static str,
    namespace: &'static str,
    deployment: ApiResource,
    pod: ApiResource,
    api_version: &'static str,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn deployment(side: &Side, i: usize, replicas: i32, image: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": side.api_version, "kind": "Deployment",
        "metadata": {"name": format!("bench-{i}"), "namespace": side.namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": format!("bench-{i}")}},
            "template": {"metadata": {"labels": {"app": format!("bench-{i}")}},
                         "spec": {"containers": [{"name": "web", "image": image}]}}
        }
    }))
    .unwrap()
}

async fn fresh_namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
    while api.get_opt(name).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
    // The ServiceAccount admission plugin wants the default service account for core pods.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    while sa.get_opt("default").await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

async fn wait<F, Fut>(what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "{what}: timed out"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    start.elapsed()
}

async fn all_complete(
    d_api: &Api<DynamicObject>,
    pod_api: &Api<DynamicObject>,
    n: usize,
    replicas: i32,
    image: &str,
) -> bool {
    let ds = d_api.list(&ListParams::default()).await.unwrap().items;
    let complete = ds.len() == n
        && ds.iter().all(|d| {
            let st = &d.data["status"];
            let generation = d.metadata.generation;
            st["observedGeneration"].as_i64() == generation
                && st["updatedReplicas"].as_i64() == Some(i64::from(replicas))
                && st["availableReplicas"].as_i64() == Some(i64::from(replicas))
                && st["replicas"].as_i64() == Some(i64::from(replicas))
        });
    if !complete {
        return false;
    }
    let pods = pod_api.list(&ListParams::default()).await.unwrap().items;
    pods.len() == n * replicas as usize
        && pods
            .iter()
            .all(|p| p.data["spec"]["containers"][0]["image"] == image)
}

async fn run(
    client: &Client,
    side: &Side,
    args: &Args,
    mut controller: Child,
    metrics_url: String,
) -> Measured {
    let d_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), side.namespace, &side.deployment);
    let pod_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), side.namespace, &side.pod);
    // The kubelet stand-in, the same for both sides: upstream's side has core/v1 Pods,
    // which no rekube-node-agent runs.
    let _kubelet = kubelet::start_for(pod_api.clone(), kubelet::every_pod_ready());
    // Ready to work: its metrics endpoint answers.
    wait("controller up", || async {
        !scrape(&metrics_url).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_requests = sum_metric(
        &scrape(&metrics_url),
        if side.name == "upstream" {
            "rest_client_requests_total{"
        } else {
            "rekube_rest_client_requests_total{"
        },
    );

    let (n, r) = (args.deployments, args.replicas);
    let start = Instant::now();
    join_all((0..n).map(|i| {
        let d_api = d_api.clone();
        let d = deployment(side, i, r, "busybox:1.36");
        async move { d_api.create(&PostParams::default(), &d).await.unwrap() }
    }))
    .await;
    wait("all pods exist", || async {
        pod_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            >= n * r as usize
    })
    .await;
    let all_pods_exist = start.elapsed();
    wait("all available", || {
        all_complete(&d_api, &pod_api, n, r, "busybox:1.36")
    })
    .await;
    let all_available = start.elapsed();

    let rollout_start = Instant::now();
    join_all((0..n).map(|i| {
        let d_api = d_api.clone();
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:1.37"}]}}}});
        async move { d_api.patch(&format!("bench-{i}"), &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap() }
    }))
    .await;
    wait("rollouts complete", || {
        all_complete(&d_api, &pod_api, n, r, "busybox:1.37")
    })
    .await;
    let rollout_complete = rollout_start.elapsed();

    let text = scrape(&metrics_url);
    let requests = sum_metric(
        &text,
        if side.name == "upstream" {
            "rest_client_requests_total{"
        } else {
            "rekube_rest_client_requests_total{"
        },
    );
    let (peak_rss_mib, cpu_seconds) = usage(controller.id());
    let _ = controller.kill();
    let _ = controller.wait();
    Measured {
        all_pods_exist,
        all_available,
        rollout_complete,
        api_requests: requests - base_requests,
        peak_rss_mib,
        cpu_seconds,
    }
}

fn row(name: &str, m: &Measured) -> String {
    format!(
        "| {name} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} |",
        m.all_pods_exist.as_secs_f64(),
        m.all_available.as_secs_f64(),
        m.rollout_complete.as_secs_f64(),
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
        namespace: "bench-upstream",
        deployment: ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        pod: ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        api_version: "apps/v1",
    };
    let rekube = Side {
        name: "rekube",
        namespace: "bench-rekube",
        deployment: ApiResource::erase::<rekube_crds::Deployment>(&()),
        pod: ApiResource::erase::<rekube_crds::Pod>(&()),
        api_version: "rekube.io/v1",
    };
    println!(
        "workload: {} Deployments x {} replicas, then a rolling update of all; client QPS {} burst {}",
        args.deployments, args.replicas, args.qps, args.burst
    );

    fresh_namespace(&client, upstream.namespace).await;
    let port = free_port();
    let kcm = Command::new(&args.kcm)
        .args([
            "--kubeconfig",
            &args.kubeconfig,
            "--authentication-kubeconfig",
            &args.kubeconfig,
            "--authorization-kubeconfig",
            &args.kubeconfig,
        ])
        .args([
            "--controllers",
            "deployment-controller,replicaset-controller",
            "--leader-elect=false",
        ])
        .args(["--kube-api-qps", &args.qps, "--kube-api-burst", &args.burst])
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
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kube-controller-manager");
    let up = run(
        &client,
        &upstream,
        &args,
        kcm,
        format!("https://127.0.0.1:{port}/metrics"),
    )
    .await;

    fresh_namespace(&client, rekube.namespace).await;
    let port = free_port();
    let rk = Command::new(&args.rekube)
        .args(["--namespace", rekube.namespace, "--leader-elect=false"])
        // The same two controllers as the upstream side (not the scheduler, which would
        // mark the node-less pods Unschedulable).
        .args(["--controllers", "deployment,replicaset"])
        .args(["--kube-api-qps", &args.qps, "--kube-api-burst", &args.burst])
        .args(["--bind-address", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rekube-controllers");
    let rk = run(
        &client,
        &rekube,
        &args,
        rk,
        format!("http://127.0.0.1:{port}/metrics"),
    )
    .await;

    println!();
    println!(
        "| controller manager | all pods exist (s) | all available (s) | rolling update (s) | API requests | peak RSS (MiB) | CPU (s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!("{}", row("kube-controller-manager v1.36.3 (apps/v1)", &up));
    println!("{}", row("rekube-controllers (rekube.io/v1)", &rk));
    println!(
        "| ratio rekube / upstream | {} | {} | {} | {} | {} | {} |",
        ratio(
            rk.all_pods_exist.as_secs_f64(),
            up.all_pods_exist.as_secs_f64()
        ),
        ratio(
            rk.all_available.as_secs_f64(),
            up.all_available.as_secs_f64()
        ),
        ratio(
            rk.rollout_complete.as_secs_f64(),
            up.rollout_complete.as_secs_f64()
        ),
        ratio(rk.api_requests as f64, up.api_requests as f64),
        ratio(rk.peak_rss_mib, up.peak_rss_mib),
        ratio(rk.cpu_seconds, up.cpu_seconds),
    );
    for ns in [upstream.namespace, rekube.namespace] {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let _ = api.delete(ns, &DeleteParams::background()).await;
    }
}
